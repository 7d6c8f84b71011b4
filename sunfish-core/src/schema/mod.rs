//! DMTF schema knowledge read at run time from a DSP8010 bundle directory (`csdl/`,
//! `json-schema/`): write validation, `excerpt` hints, and what `$metadata` and `JsonSchemas`
//! need. The repository ships no DMTF file; the service reads the directory `schema.dir` names.
//!
//! Layout: this file holds [`SchemaSet`] (the file index, the lazy JSON cache, `@odata.type`
//! parsing) and [`types_in_store`]; `validate` checks write bodies ([`SchemaSet::validate`]);
//! `excerpt` implements [`crate::query::SchemaHints`]; `csdl` indexes the CSDL namespaces;
//! `handler` is the [`SchemaValidator`] object handler.
//!
//! # Lifecycle and cost
//! [`SchemaSet::load`] lists `json-schema/` and scans every `csdl/*.xml` for its `Schema`
//! namespaces (tens of milliseconds for the whole bundle). JSON schema files are parsed on first
//! use and kept for the life of the set, so the first write of a type pays for parsing its files
//! (a few milliseconds) and later writes do not.
//!
//! # Versions
//! A bundle holds one versioned JSON file per type (`ComputerSystem.v1_27_0.json`), the newest.
//! A resource of an older version of the same major (`#ComputerSystem.v1_20_0.ComputerSystem`) is
//! checked against that file with the properties and enum values added after its version
//! (`versionAdded`, `enumVersionAdded`) treated as unknown, which is what the older schema says,
//! since Redfish only adds within a major version. A version newer than the bundle's, another
//! major version, or a type the bundle lacks (OEM types) is not validated (logged at debug).
//! `$ref`s to versioned files the bundle does not hold (`Resource.v1_1_18.json#/...`) resolve to
//! the bundle's newest file of that schema and major version.

mod csdl;
mod excerpt;
mod handler;
mod validate;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use regex::Regex;
use serde_json::Value;
use tracing::{debug, info, warn};

use crate::{ResourcePath, StartupError, StorageBackend};

pub use handler::SchemaValidator;

/// Where DMTF publishes the schemas; `$ref`s and `PublicationUri`s use this prefix.
pub const DMTF_SCHEMA_BASE: &str = "http://redfish.dmtf.org/schemas/v1/";

/// A schema version, `v1_20_0`. Ordered by major, minor, errata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Major version (1 for every current Redfish schema).
    pub major: u32,
    /// Minor version: adds properties and enum values.
    pub minor: u32,
    /// Errata version: text fixes only.
    pub errata: u32,
}

impl Version {
    /// Parses `v1_20_0` (the leading `v` is required).
    pub fn parse(s: &str) -> Option<Version> {
        let mut parts = s.strip_prefix('v')?.split('_');
        let mut next = || -> Option<u32> {
            let p = parts.next()?;
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            p.parse().ok()
        };
        let v = Version { major: next()?, minor: next()?, errata: next()? };
        parts.next().is_none().then_some(v)
    }

    /// Whether a schema of this version has everything `other` has (same major, minor at least
    /// as high; errata do not matter).
    pub fn covers(&self, other: &Version) -> bool {
        self.major == other.major && self.minor >= other.minor
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v{}_{}_{}", self.major, self.minor, self.errata)
    }
}

/// A parsed `@odata.type`: `#ComputerSystem.v1_20_0.ComputerSystem` has namespace
/// `ComputerSystem.v1_20_0`, schema `ComputerSystem`, version `v1_20_0` and name
/// `ComputerSystem`; `#ComputerSystemCollection.ComputerSystemCollection` has no version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OdataType<'a> {
    /// Everything between `#` and the last dot.
    pub namespace: &'a str,
    /// The namespace without its version: the schema (and file) name.
    pub schema: &'a str,
    /// The namespace's version, if it has one.
    pub version: Option<Version>,
    /// The entity type, after the last dot.
    pub name: &'a str,
}

impl<'a> OdataType<'a> {
    /// Parses an `@odata.type` value (the `#` is optional). Only identifier characters are
    /// accepted in the schema and type names, so a parsed type can name files and appear in XML.
    pub fn parse(s: &'a str) -> Option<OdataType<'a>> {
        let s = s.strip_prefix('#').unwrap_or(s);
        let (namespace, name) = s.rsplit_once('.')?;
        let (schema, version) = match namespace.split_once('.') {
            Some((schema, v)) => (schema, Some(Version::parse(v)?)),
            None => (namespace, None),
        };
        (is_identifier(schema) && is_identifier(name)).then_some(OdataType { namespace, schema, version, name })
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`.
pub(crate) fn is_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Whether something marked `added` (a `versionAdded` value) in a file of schema `doc_schema`
/// came after `version` of `schema`. Marks in other schemas' files count against those
/// schemas' versions, which a resource does not name, so they never exclude anything.
pub(crate) fn added_after(doc_schema: &str, added: Option<&Value>, schema: &str, version: Option<Version>) -> bool {
    let (Some(have), Some(added)) = (version, added.and_then(Value::as_str).and_then(Version::parse)) else {
        return false;
    };
    doc_schema == schema && added.major == have.major && added.minor > have.minor
}

/// What a type's schema lets clients do to its resources (CSDL's `Capabilities` restrictions,
/// carried in the unversioned JSON file as `insertable`, `updatable`, `deletable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// POST of new members (collections).
    pub insertable: bool,
    /// PATCH and PUT.
    pub updatable: bool,
    /// DELETE.
    pub deletable: bool,
}

/// One parsed JSON schema file.
pub(crate) struct Doc {
    /// File name (`Resource.json`).
    pub(crate) file: String,
    /// Schema name: the file name before its first dot (`Resource`).
    pub(crate) schema: String,
    /// The parsed file.
    pub(crate) value: Value,
}

/// The schemas of one DSP8010 bundle directory. Created once at start by [`SchemaSet::load`]
/// and shared (`Arc`) by the validator, the query engine and the HTTP front end; every method
/// takes `&self` and is safe to call concurrently.
pub struct SchemaSet {
    /// The bundle directory (holding `json-schema/` and `csdl/`).
    dir: PathBuf,
    /// Every `json-schema/*.json` file name.
    json_files: BTreeSet<String>,
    /// Schema name → its versioned files, by version.
    versioned: HashMap<String, BTreeMap<Version, String>>,
    /// Parsed files, by file name; `None` for a file that failed to parse (warned once).
    docs: RwLock<HashMap<String, Option<Arc<Doc>>>>,
    /// Compiled `pattern`/`patternProperties` expressions; `None` when the Rust engine cannot
    /// compile one (it is then not checked).
    regexes: Mutex<HashMap<String, Option<Regex>>>,
    /// `excerpt` answers, by `@odata.type`.
    excerpts: RwLock<HashMap<String, Option<Vec<String>>>>,
    /// The CSDL namespaces, for `$metadata`.
    csdl: csdl::CsdlIndex,
}

impl std::fmt::Debug for SchemaSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaSet")
            .field("dir", &self.dir)
            .field("json_files", &self.json_files.len())
            .field("csdl_schemas", &self.csdl.len())
            .finish()
    }
}

impl SchemaSet {
    /// Indexes the bundle at `dir`: lists `json-schema/` and scans `csdl/*.xml` for namespaces.
    /// JSON files are parsed later, on first use. A bundle without `csdl/` loads (with a
    /// warning); `$metadata` then names files by the DMTF convention.
    ///
    /// # Errors
    /// [`StartupError::Io`] naming the directory when it or its `json-schema/` folder cannot be
    /// read or holds no schema.
    pub fn load(dir: &Path) -> Result<SchemaSet, StartupError> {
        let started = Instant::now();
        let io = |reason: String| StartupError::Io { what: format!("schema directory {}", dir.display()), reason };
        let json_dir = dir.join("json-schema");
        let entries = std::fs::read_dir(&json_dir).map_err(|e| io(format!("{}: {e}", json_dir.display())))?;
        let mut json_files = BTreeSet::new();
        let mut versioned: HashMap<String, BTreeMap<Version, String>> = HashMap::new();
        for entry in entries {
            let entry = entry.map_err(|e| io(format!("{}: {e}", json_dir.display())))?;
            let Ok(name) = entry.file_name().into_string() else { continue };
            let Some(stem) = name.strip_suffix(".json") else { continue };
            if let Some((schema, v)) = stem.split_once('.') {
                if let Some(v) = Version::parse(v).filter(|_| is_identifier(schema)) {
                    versioned.entry(schema.to_string()).or_default().insert(v, name.clone());
                }
            }
            json_files.insert(name);
        }
        if json_files.is_empty() {
            return Err(io(format!("{} holds no .json schema", json_dir.display())));
        }
        let csdl_dir = dir.join("csdl");
        let csdl = match csdl::CsdlIndex::scan(&csdl_dir) {
            Ok(index) => index,
            Err(e) => {
                warn!(dir = %csdl_dir.display(), error = %e, "no CSDL; $metadata names schema files by convention");
                csdl::CsdlIndex::default()
            }
        };
        let set = SchemaSet {
            dir: dir.to_path_buf(),
            json_files,
            versioned,
            docs: RwLock::new(HashMap::new()),
            regexes: Mutex::new(HashMap::new()),
            excerpts: RwLock::new(HashMap::new()),
            csdl,
        };
        info!(
            dir = %dir.display(),
            json_files = set.json_files.len(),
            csdl_schemas = set.csdl.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "schema bundle indexed"
        );
        Ok(set)
    }

    /// The bundle directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The bundle's JSON schema file that describes `odata_type`: the exact file for an
    /// unversioned type (`ComputerSystemCollection.json`), else the bundle's versioned file of
    /// that schema and major version when it covers the type's version. `None` for types the
    /// bundle does not describe.
    pub fn json_file_for(&self, odata_type: &str) -> Option<String> {
        let t = OdataType::parse(odata_type)?;
        match t.version {
            None => {
                let file = format!("{}.json", t.schema);
                self.json_files.contains(&file).then_some(file)
            }
            Some(want) => {
                self.versioned.get(t.schema)?.iter().find(|(have, _)| have.covers(&want)).map(|(_, file)| file.clone())
            }
        }
    }

    /// The raw bytes of `json-schema/<file>`, for serving; only names the index holds are read,
    /// so `file` cannot reach outside the folder.
    pub fn json_file_bytes(&self, file: &str) -> Option<Vec<u8>> {
        if !self.json_files.contains(file) {
            return None;
        }
        let path = self.dir.join("json-schema").join(file);
        match std::fs::read(&path) {
            Ok(b) => Some(b),
            Err(e) => {
                warn!(file = %path.display(), error = %e, "schema file unreadable");
                None
            }
        }
    }

    /// The CSDL file (`ComputerSystem_v1.xml`) that defines namespace `schema`
    /// (`ComputerSystem`, or a versioned `ComputerSystem.v1_20_0`), if the bundle has one.
    pub fn csdl_file(&self, namespace: &str) -> Option<&str> {
        let schema = namespace.split('.').next().unwrap_or(namespace);
        self.csdl.file(schema)
    }

    /// Whether the bundle's CSDL defines `namespace` (`ComputerSystem.v1_20_0`).
    pub fn csdl_has_namespace(&self, namespace: &str) -> bool {
        self.csdl.has(namespace)
    }

    /// Whether the CSDL was indexed (the bundle had a readable `csdl/`).
    pub fn has_csdl(&self) -> bool {
        self.csdl.len() > 0
    }

    /// The newest namespace of `schema` at or below `at` that declares an `EntityContainer`
    /// (for `ServiceRoot`: the `ServiceContainer` a `$metadata` document extends).
    pub fn container_namespace(&self, schema: &str, at: Version) -> Option<String> {
        self.csdl.container_at(schema, at)
    }

    /// The newest versioned namespace of `schema` in the CSDL (`Resource.v1_23_0`).
    pub fn newest_namespace(&self, schema: &str) -> Option<String> {
        self.csdl.newest(schema)
    }

    /// The [`Capabilities`] the schema of `odata_type` declares, or `None` when the bundle has no
    /// such type or the type declares none (for an `Allow` header that follows the schema).
    pub fn capabilities(&self, odata_type: &str) -> Option<Capabilities> {
        let t = OdataType::parse(odata_type)?;
        let doc = self.doc(&format!("{}.json", t.schema))?;
        let d = doc.value.get("definitions")?.get(t.name)?;
        let flag = |k: &str| d.get(k).and_then(Value::as_bool);
        Some(Capabilities {
            insertable: flag("insertable")?,
            updatable: flag("updatable")?,
            deletable: flag("deletable")?,
        })
    }

    /// The file name a `json-schema` reference resolves to: the name itself when the bundle has
    /// it, else for `Schema.vM_m_e.json` the bundle's newest file of that schema and major.
    fn resolve_file(&self, file: &str) -> Option<String> {
        if self.json_files.contains(file) {
            return Some(file.to_string());
        }
        let (schema, v) = file.strip_suffix(".json")?.split_once('.')?;
        let want = Version::parse(v)?;
        let (_, newest) = self.versioned.get(schema)?.iter().rev().find(|(have, _)| have.major == want.major)?;
        Some(newest.clone())
    }

    /// The parsed file `file` (after [`Self::resolve_file`]); parsed once, then cached.
    pub(crate) fn doc(&self, file: &str) -> Option<Arc<Doc>> {
        let file = self.resolve_file(file)?;
        if let Some(cached) = self.docs.read().get(&file) {
            return cached.clone();
        }
        let path = self.dir.join("json-schema").join(&file);
        let parsed = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Value>(&b).map_err(|e| e.to_string()));
        let doc = match parsed {
            Ok(value) => {
                let schema = file.split('.').next().unwrap_or_default().to_string();
                Some(Arc::new(Doc { file: file.clone(), schema, value }))
            }
            Err(e) => {
                warn!(file = %path.display(), error = %e, "schema file unusable; not validating against it");
                None
            }
        };
        self.docs.write().entry(file).or_insert(doc).clone()
    }

    /// Resolves a `$ref` found in `from`: the target file (same file for `#/...`) and the JSON
    /// pointer inside it. `None` for references outside the bundle (other publishers).
    pub(crate) fn resolve_ref(&self, from: &Arc<Doc>, reference: &str) -> Option<(Arc<Doc>, String)> {
        let (uri, fragment) = reference.split_once('#').unwrap_or((reference, ""));
        let doc = if uri.is_empty() {
            from.clone()
        } else {
            let file = uri
                .strip_prefix(DMTF_SCHEMA_BASE)
                .or_else(|| uri.strip_prefix("https://redfish.dmtf.org/schemas/v1/"))?;
            if file.contains('/') {
                return None;
            }
            self.doc(file)?
        };
        Some((doc, fragment.to_string()))
    }

    /// The compiled expression for a schema `pattern` (cached), or `None` when it does not
    /// compile with the Rust engine (ECMAScript features such as look-around).
    pub(crate) fn regex(&self, pattern: &str) -> Option<Regex> {
        let mut cache = self.regexes.lock();
        if let Some(r) = cache.get(pattern) {
            return r.clone();
        }
        let compiled = Regex::new(pattern).ok();
        if compiled.is_none() {
            debug!(pattern, "schema pattern not supported by the regex engine; not checked");
        }
        cache.insert(pattern.to_string(), compiled.clone());
        compiled
    }

    /// The document and definition describing a resource of type `t`, with the version whose
    /// additions are visible. `None` (logged at debug) when the bundle cannot validate it.
    pub(crate) fn resource_schema(&self, t: &OdataType<'_>) -> Option<Arc<Doc>> {
        let file = match t.version {
            None => format!("{}.json", t.schema),
            Some(want) => {
                let Some(versions) = self.versioned.get(t.schema) else {
                    debug!(schema = t.schema, "type not in the schema bundle; not validated");
                    return None;
                };
                match versions.iter().find(|(have, _)| have.covers(&want)) {
                    Some((_, file)) => file.clone(),
                    None => {
                        debug!(namespace = t.namespace, "version not in the schema bundle; not validated");
                        return None;
                    }
                }
            }
        };
        if !self.json_files.contains(&file) {
            debug!(schema = t.schema, "type not in the schema bundle; not validated");
            return None;
        }
        self.doc(&file)
    }
}

/// Every distinct `@odata.type` in `storage`, sorted: what `$metadata` and `JsonSchemas` list.
/// Scans every stored resource (one `get` per path), so callers that serve it often may cache
/// it. Storage failures are logged and the types found so far returned.
pub async fn types_in_store(storage: &dyn StorageBackend) -> Vec<String> {
    let mut types = BTreeSet::new();
    let paths: Vec<ResourcePath> = match storage.paths().await {
        Ok(p) => p,
        Err(e) => {
            warn!(error = %e, "listing resources for $metadata failed");
            return Vec::new();
        }
    };
    for path in paths {
        match storage.get(&path).await {
            Ok(r) => {
                if let Some(t) = r.value().get("@odata.type").and_then(Value::as_str) {
                    if !types.contains(t) {
                        types.insert(t.to_string());
                    }
                }
            }
            // Deleted between listing and reading: not a type the store holds any more.
            Err(crate::Error::NotFound { .. }) => {}
            Err(e) => warn!(path = %path, error = %e, "reading a resource for $metadata failed"),
        }
    }
    types.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Versions parse strictly and order numerically.
    #[test]
    fn versions() {
        let v = Version::parse("v1_20_0").unwrap();
        assert_eq!((v.major, v.minor, v.errata), (1, 20, 0));
        assert_eq!(v.to_string(), "v1_20_0");
        assert!(Version::parse("v1_3_10").unwrap() > Version::parse("v1_3_9").unwrap());
        for bad in ["1_2_3", "v1_2", "v1_2_3_4", "v1__3", "v1_x_3", "v1_2_+3"] {
            assert_eq!(Version::parse(bad), None, "{bad}");
        }
        assert!(Version::parse("v1_27_0").unwrap().covers(&Version::parse("v1_20_3").unwrap()));
        assert!(!Version::parse("v1_27_0").unwrap().covers(&Version::parse("v1_28_0").unwrap()));
        assert!(!Version::parse("v2_0_0").unwrap().covers(&Version::parse("v1_0_0").unwrap()));
    }

    /// `@odata.type` parsing, and refusal of names that are not identifiers.
    #[test]
    fn odata_types() {
        let t = OdataType::parse("#ComputerSystem.v1_20_0.ComputerSystem").unwrap();
        assert_eq!((t.namespace, t.schema, t.name), ("ComputerSystem.v1_20_0", "ComputerSystem", "ComputerSystem"));
        assert_eq!(t.version, Version::parse("v1_20_0"));
        let c = OdataType::parse("#ChassisCollection.ChassisCollection").unwrap();
        assert_eq!((c.namespace, c.schema, c.version), ("ChassisCollection", "ChassisCollection", None));
        for bad in ["", "#", "#A", "#A.vX.A", "#../x.v1_0_0.A", "#A\"b.A", "#A.v1_0_0.<x>"] {
            assert_eq!(OdataType::parse(bad), None, "{bad}");
        }
    }
}
