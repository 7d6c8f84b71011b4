//! Link-time plugin registries, one general mechanism for every plugin kind.
//!
//! A plugin crate calls a `register_*!` macro with a `...Registration` constant; `inventory`
//! collects them when the crate is linked into a binary (the binary must name the crate once,
//! e.g. `use sunfish_storage_fs as _;`, or the linker drops it). [`entries`] lists one kind
//! sorted by name and refuses duplicates; [`lookup`] names the registered ones when a name is
//! unknown; [`list_all`] is what `sunfish-server --list-plugins` prints.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::StartupError;

/// A registration of some plugin kind. Implemented by every `...Registration` type.
pub trait Registration: Sync + Sized + 'static {
    /// The kind's name as shown by `--list-plugins` (`storage`, `event-handler`, ...).
    const KIND: &'static str;
    /// The plugin's name, chosen in configuration.
    fn name(&self) -> &'static str;
    /// One line saying what the plugin does.
    fn description(&self) -> &'static str;
    /// Every registration of this kind linked into the binary, in link order.
    fn linked() -> Vec<&'static Self>;
}

/// All registrations of kind `R`, sorted by name.
///
/// # Errors
/// [`StartupError::DuplicatePlugin`] when two linked crates used the same name.
pub fn entries<R: Registration>() -> Result<Vec<&'static R>, StartupError> {
    let mut all = R::linked();
    all.sort_by_key(|r| r.name());
    for pair in all.windows(2) {
        if pair[0].name() == pair[1].name() {
            return Err(StartupError::DuplicatePlugin { kind: R::KIND, name: pair[0].name().into() });
        }
    }
    Ok(all)
}

/// The registration of kind `R` called `name`.
///
/// # Errors
/// [`StartupError::UnknownPlugin`] listing the registered names, or a duplicate error.
pub fn lookup<R: Registration>(name: &str) -> Result<&'static R, StartupError> {
    let all = entries::<R>()?;
    all.iter().find(|r| r.name() == name).copied().ok_or_else(|| StartupError::UnknownPlugin {
        kind: R::KIND,
        name: name.to_string(),
        registered: all.iter().map(|r| r.name()).collect::<Vec<_>>().join(", "),
    })
}

/// One line of `--list-plugins`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PluginInfo {
    /// Plugin kind.
    pub kind: &'static str,
    /// Registered name.
    pub name: &'static str,
    /// One-line description.
    pub description: &'static str,
}

/// Every registered plugin of every kind known to the core, sorted by kind then name.
///
/// # Errors
/// A duplicate registration of any kind.
pub fn list_all() -> Result<Vec<PluginInfo>, StartupError> {
    fn add<R: Registration>(out: &mut Vec<PluginInfo>) -> Result<(), StartupError> {
        for r in entries::<R>()? {
            out.push(PluginInfo { kind: R::KIND, name: r.name(), description: r.description() });
        }
        Ok(())
    }
    let mut out = Vec::new();
    add::<crate::StorageBackendRegistration>(&mut out)?;
    add::<crate::EventHandlerRegistration>(&mut out)?;
    add::<crate::ObjectHandlerRegistration>(&mut out)?;
    add::<crate::AgentForwarderRegistration>(&mut out)?;
    out.sort();
    Ok(out)
}

/// A plugin's options table from configuration, handed to its `build` function. Plugins parse it
/// into their own `#[serde(deny_unknown_fields)]` struct with [`PluginOptions::parse`], so a
/// misspelt key fails at start naming the plugin.
#[derive(Debug, Clone)]
pub struct PluginOptions {
    kind: &'static str,
    name: String,
    value: Value,
}

impl PluginOptions {
    /// Options for plugin `name` of `kind`; `Value::Null` means none were configured.
    pub fn new(kind: &'static str, name: impl Into<String>, value: Value) -> Self {
        PluginOptions { kind, name: name.into(), value }
    }

    /// The raw options (an object, or null when none were given).
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// Deserializes the options; absent options parse as an empty table.
    ///
    /// # Errors
    /// [`StartupError::Options`] with serde's message.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, StartupError> {
        let v = if self.value.is_null() { Value::Object(Default::default()) } else { self.value.clone() };
        serde_json::from_value(v).map_err(|e| self.error(e))
    }

    /// An options error for this plugin, for checks serde cannot express.
    pub fn error(&self, reason: impl std::fmt::Display) -> StartupError {
        StartupError::Options { kind: self.kind, name: self.name.clone(), reason: reason.to_string() }
    }
}

/// Implements [`Registration`] for a registration type with `name`/`description` fields.
macro_rules! impl_registration {
    ($ty:ty, $kind:literal) => {
        ::inventory::collect!($ty);
        impl ::std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                write!(f, "{} {}", $kind, self.name)
            }
        }
        impl $crate::registry::Registration for $ty {
            const KIND: &'static str = $kind;
            fn name(&self) -> &'static str {
                self.name
            }
            fn description(&self) -> &'static str {
                self.description
            }
            fn linked() -> Vec<&'static Self> {
                ::inventory::iter::<$ty>.into_iter().collect()
            }
        }
    };
}
pub(crate) use impl_registration;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AgentForwarderRegistration;

    /// An unknown name fails with the list of registered ones.
    #[test]
    fn unknown_names_list_registered() {
        let err = lookup::<AgentForwarderRegistration>("s3").unwrap_err().to_string();
        assert_eq!(err, "unknown forwarder \"s3\" (registered: agents, none)");
    }

    /// Two registrations under one name stop start-up, naming kind and name; lists are sorted.
    #[test]
    fn duplicates_refused_and_lists_sorted() {
        #[derive(Debug)]
        struct Fake(&'static str);
        static TWICE: [Fake; 3] = [Fake("b"), Fake("a"), Fake("b")];
        static ONCE: [Fake; 2] = [Fake("b"), Fake("a")];
        static USE_TWICE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);
        impl Registration for Fake {
            const KIND: &'static str = "fake";
            fn name(&self) -> &'static str {
                self.0
            }
            fn description(&self) -> &'static str {
                "fake"
            }
            fn linked() -> Vec<&'static Self> {
                if USE_TWICE.load(std::sync::atomic::Ordering::SeqCst) {
                    TWICE.iter().collect()
                } else {
                    ONCE.iter().collect()
                }
            }
        }
        let err = entries::<Fake>().unwrap_err().to_string();
        assert_eq!(err, "fake \"b\" is registered twice");
        USE_TWICE.store(false, std::sync::atomic::Ordering::SeqCst);
        let names: Vec<_> = entries::<Fake>().unwrap().iter().map(|r| r.name()).collect();
        assert_eq!(names, ["a", "b"]);
    }

    /// Options are typed and unknown keys are refused with the plugin named.
    #[test]
    fn options_parse() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct O {
            #[serde(default)]
            root: String,
        }
        let ok = PluginOptions::new("storage", "fs", Value::Null).parse::<O>();
        assert!(ok.is_ok());
        let bad = PluginOptions::new("storage", "fs", serde_json::json!({"rot": "x"}));
        let msg = bad.parse::<O>().unwrap_err().to_string();
        assert!(msg.starts_with("options of storage \"fs\": unknown field `rot`"), "{msg}");
    }
}
