//! The `mockup` hardware manager: the agent's tree is the hardware. Every write is applied to
//! the tree as sent (`apply` answers `Ok(None)`), after an optional delay, unless a configured
//! failure matches: then the write is refused with [`sunfish_core::Error::Agent`] and the
//! configured status, and nothing is stored (here or, for a forwarded write, upstream).
//!
//! Options (`[hardware.options]`):
//! - `latency_ms`: wait this long before answering each write (default 0);
//! - `fail_operations`: `POST`, `PATCH`, `PUT`, `DELETE` writes that fail;
//! - `fail_paths`: resource path prefixes (on segment boundaries) whose writes fail;
//! - `fail_status`: the status of an injected failure (default 500).
//!
//! A write fails when at least one of `fail_operations`/`fail_paths` is set and the write
//! matches every one that is set.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;
use sunfish_core::hardware::{HardwareManager, HardwareManagerRegistration};
use sunfish_core::{Core, Error, Operation, PluginOptions, ResourcePath, Result, StartupError, WriteOp};

/// The registered name.
pub const NAME: &str = "mockup";

/// Options of the `mockup` manager.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MockupOptions {
    /// Delay before each write is answered, in milliseconds.
    pub latency_ms: u64,
    /// Methods whose writes fail (`POST`, `PATCH`, `PUT`, `DELETE`).
    pub fail_operations: Vec<String>,
    /// Path prefixes whose writes fail.
    pub fail_paths: Vec<String>,
    /// HTTP status of an injected failure (400-599).
    pub fail_status: u16,
}

impl Default for MockupOptions {
    fn default() -> Self {
        MockupOptions { latency_ms: 0, fail_operations: Vec::new(), fail_paths: Vec::new(), fail_status: 500 }
    }
}

/// The `mockup` hardware manager.
#[derive(Debug, Clone)]
pub struct Mockup {
    latency: Duration,
    fail_operations: Vec<Operation>,
    fail_paths: Vec<ResourcePath>,
    fail_status: u16,
}

impl Mockup {
    /// A manager with `options`.
    ///
    /// # Errors
    /// An unknown method, a path that is not a resource path, a status outside 400-599 (the
    /// message names the option).
    pub fn new(options: MockupOptions) -> std::result::Result<Self, String> {
        let fail_operations = options
            .fail_operations
            .iter()
            .map(|m| match m.to_ascii_uppercase().as_str() {
                "POST" => Ok(Operation::Create),
                "PATCH" => Ok(Operation::Patch),
                "PUT" => Ok(Operation::Replace),
                "DELETE" => Ok(Operation::Delete),
                _ => Err(format!("fail_operations: {m:?} is not one of POST, PATCH, PUT, DELETE")),
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let fail_paths = options
            .fail_paths
            .iter()
            .map(|p| ResourcePath::parse(p).map_err(|e| format!("fail_paths: {p}: {e}")))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        if !(400..=599).contains(&options.fail_status) {
            return Err(format!("fail_status: {} is not an error status (400-599)", options.fail_status));
        }
        Ok(Mockup {
            latency: Duration::from_millis(options.latency_ms),
            fail_operations,
            fail_paths,
            fail_status: options.fail_status,
        })
    }

    /// Whether `op` is one of the configured failures.
    pub fn fails(&self, op: &WriteOp) -> bool {
        if self.fail_operations.is_empty() && self.fail_paths.is_empty() {
            return false;
        }
        let by_op = self.fail_operations.is_empty() || self.fail_operations.contains(&op.operation);
        let by_path = self.fail_paths.is_empty() || self.fail_paths.iter().any(|p| op.path.is_within(p));
        by_op && by_path
    }
}

#[async_trait]
impl HardwareManager for Mockup {
    async fn apply(&self, _core: &Core, op: &WriteOp) -> Result<Option<Value>> {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        if self.fails(op) {
            return Err(Error::Agent {
                agent: NAME.into(),
                status: Some(self.fail_status),
                timed_out: false,
                message: format!("injected failure of {} {}", op.operation, op.path),
            });
        }
        Ok(None)
    }
}

fn build(options: PluginOptions) -> std::result::Result<Arc<dyn HardwareManager>, StartupError> {
    let parsed: MockupOptions = options.parse()?;
    Ok(Arc::new(Mockup::new(parsed).map_err(|e| options.error(e))?))
}

sunfish_core::register_hardware_manager!(HardwareManagerRegistration {
    name: NAME,
    description: "the agent's tree is the hardware: writes are applied as sent (latency and failures can be injected)",
    build,
});

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn op(operation: Operation, path: &str) -> WriteOp {
        WriteOp {
            operation,
            path: ResourcePath::parse(path).unwrap(),
            collection: None,
            resource_type: "Port".into(),
            payload: None,
            if_match: None,
            pending: None,
        }
    }

    fn mockup(options: Value) -> std::result::Result<Arc<dyn HardwareManager>, StartupError> {
        build(PluginOptions::new("hardware-manager", NAME, options))
    }

    /// Without failure options nothing fails; operations and paths combine with AND, paths on
    /// segment boundaries.
    #[test]
    fn failure_matching() {
        let none = Mockup::new(MockupOptions::default()).unwrap();
        assert!(!none.fails(&op(Operation::Create, "/redfish/v1/Fabrics/CXL/Connections/1")));
        let posts = Mockup::new(MockupOptions { fail_operations: vec!["post".into()], ..Default::default() }).unwrap();
        assert!(posts.fails(&op(Operation::Create, "/redfish/v1/Fabrics/CXL/Connections/1")));
        assert!(!posts.fails(&op(Operation::Patch, "/redfish/v1/Fabrics/CXL")));
        let both = Mockup::new(MockupOptions {
            fail_operations: vec!["PATCH".into()],
            fail_paths: vec!["/redfish/v1/Fabrics/CXL/Switches".into()],
            ..Default::default()
        })
        .unwrap();
        assert!(both.fails(&op(Operation::Patch, "/redfish/v1/Fabrics/CXL/Switches/CXL1")));
        assert!(!both.fails(&op(Operation::Patch, "/redfish/v1/Fabrics/CXL/SwitchesX")));
        assert!(!both.fails(&op(Operation::Delete, "/redfish/v1/Fabrics/CXL/Switches/CXL1")));
    }

    /// Options are typed: unknown keys, methods, paths and statuses are refused with the plugin
    /// named.
    #[test]
    fn bad_options() {
        for (options, want) in [
            (json!({"latency": 1}), "unknown field `latency`"),
            (json!({"fail_operations": ["GET"]}), "fail_operations"),
            (json!({"fail_paths": ["/elsewhere"]}), "fail_paths"),
            (json!({"fail_status": 200}), "fail_status"),
        ] {
            let err = mockup(options).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.starts_with("options of hardware-manager \"mockup\""), "{err}");
            assert!(err.contains(want), "{err}");
        }
        assert!(mockup(Value::Null).is_ok());
    }

    /// An injected failure is an agent error with the configured status; a plain write is
    /// applied as sent, after the configured latency.
    #[tokio::test]
    async fn apply_answers() {
        let core = Core::builder(Arc::new(sunfish_storage_memory::MemoryBackend::new())).build();
        let m = Mockup::new(MockupOptions {
            fail_operations: vec!["DELETE".into()],
            fail_status: 503,
            latency_ms: 1,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(m.apply(&core, &op(Operation::Patch, "/redfish/v1/Fabrics/CXL")).await, Ok(None));
        match m.apply(&core, &op(Operation::Delete, "/redfish/v1/Fabrics/CXL")).await {
            Err(Error::Agent { agent, status, timed_out, message }) => {
                assert_eq!((agent.as_str(), status, timed_out), ("mockup", Some(503), false));
                assert!(message.contains("DELETE /redfish/v1/Fabrics/CXL"), "{message}");
            }
            other => panic!("expected an agent error, got {other:?}"),
        }
    }

    /// The registration is linked and listed under its kind.
    #[test]
    fn registered() {
        let names: Vec<&str> =
            sunfish_core::registry::entries::<HardwareManagerRegistration>().unwrap().iter().map(|r| r.name).collect();
        assert!(names.contains(&NAME), "{names:?}");
    }
}
