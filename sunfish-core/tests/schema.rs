//! The schema module against the real DSP8010 bundle, read in place from `../shared/redfish`
//! beside the checkout (or `SUNFISH_SCHEMA_DIR`). Every test prints a reason and passes when the
//! bundle is absent: the repository ships no DMTF file.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{json, Value};
use sunfish_core::query::SchemaHints;
use sunfish_core::schema::{types_in_store, SchemaSet};
use sunfish_core::tree::ResourceTree;
use sunfish_core::{Error, Operation, Resource, ResourcePath, Result, StorageBackend};

const SYSTEM: &str = "#ComputerSystem.v1_20_0.ComputerSystem";

/// The bundle directory, or `None` after printing why the test is skipped.
fn bundle_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("SUNFISH_SCHEMA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/redfish"));
    if dir.join("json-schema").is_dir() && dir.join("csdl").is_dir() {
        Some(dir)
    } else {
        eprintln!("SKIP: no DMTF schema bundle at {} (set SUNFISH_SCHEMA_DIR)", dir.display());
        None
    }
}

/// One loaded set shared by the tests of this binary.
fn schemas() -> Option<&'static SchemaSet> {
    static SET: OnceLock<Option<SchemaSet>> = OnceLock::new();
    SET.get_or_init(|| bundle_dir().map(|d| SchemaSet::load(&d).unwrap_or_else(|e| panic!("load: {e}")))).as_ref()
}

fn patch(set: &SchemaSet, body: Value, current: &Value) -> Result<()> {
    set.validate(SYSTEM, &body, Operation::Patch, Some(current))
}

fn create(set: &SchemaSet, body: Value) -> Result<()> {
    set.validate(SYSTEM, &body, Operation::Create, None)
}

fn stored_system() -> Value {
    json!({
        "@odata.id": "/redfish/v1/Systems/1", "@odata.type": SYSTEM, "Id": "1", "Name": "one",
        "PowerState": "On", "AssetTag": "a",
        "Status": {"State": "Enabled", "Health": "OK"},
        "Boot": {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Disabled"},
        "Links": {"Chassis": [{"@odata.id": "/redfish/v1/Chassis/1"}]}
    })
}

/// Loading indexes the whole bundle quickly (JSON files are parsed lazily); the time is printed.
#[test]
fn load_is_fast() {
    let Some(dir) = bundle_dir() else { return };
    let started = Instant::now();
    let set = SchemaSet::load(&dir).unwrap();
    let elapsed = started.elapsed();
    eprintln!("SchemaSet::load took {elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "load took {elapsed:?}");
    assert!(set.has_csdl());
    // The first validation of a type parses its files; it too stays well below a second.
    let started = Instant::now();
    set.validate(SYSTEM, &json!({"AssetTag": "x"}), Operation::Create, None).unwrap();
    eprintln!("first ComputerSystem validation took {:?}", started.elapsed());
}

/// A directory that is not a bundle fails with the directory named.
#[test]
fn load_errors_name_the_directory() {
    let err = SchemaSet::load(std::path::Path::new("/nonexistent/redfish-bundle")).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/redfish-bundle"), "{err}");
}

/// A complete, valid resource is accepted on create, with read-only properties, links,
/// annotations and nulls where the schema allows them.
#[test]
fn valid_create() {
    let Some(set) = schemas() else { return };
    let mut body = stored_system();
    body["AssetTag@Redfish.AllowableValues"] = json!(["a"]);
    body["Links"]["Chassis@odata.count"] = json!(1);
    body["HostName"] = Value::Null;
    body["Boot"]["BootOrder"] = json!(["Boot0001", null]);
    create(set, body).unwrap();
}

/// PATCH of a read-only property is `PropertyNotWritable` naming its path, also nested; the
/// same value as stored is accepted (DMTF's protocol validator PATCHes identical values).
#[test]
fn read_only() {
    let Some(set) = schemas() else { return };
    let cur = stored_system();
    assert_eq!(
        patch(set, json!({"PowerState": "Off"}), &cur),
        Err(Error::PropertyNotWritable { property: "PowerState".into() })
    );
    assert_eq!(
        patch(set, json!({"Status": {"State": "Disabled"}}), &cur),
        Err(Error::PropertyNotWritable { property: "Status/State".into() })
    );
    assert_eq!(
        set.validate(SYSTEM, &json!({"Name": "other"}), Operation::Replace, Some(&cur)),
        Err(Error::PropertyNotWritable { property: "Name".into() })
    );
    patch(set, json!({"PowerState": "On", "Status": {"State": "Enabled"}, "Name": "one", "AssetTag": "b"}), &cur)
        .unwrap();
    // A full PUT of what GET returned, with one writable change.
    let mut put = cur.clone();
    put["AssetTag"] = json!("changed");
    set.validate(SYSTEM, &put, Operation::Replace, Some(&cur)).unwrap();
}

/// A value of the wrong JSON type is `PropertyValueType` with the path and the value.
#[test]
fn wrong_type() {
    let Some(set) = schemas() else { return };
    let cur = stored_system();
    assert_eq!(
        patch(set, json!({"AssetTag": 5}), &cur),
        Err(Error::PropertyValueType { property: "AssetTag".into(), value: "5".into() })
    );
    assert_eq!(
        patch(set, json!({"Boot": {"BootSourceOverrideTarget": true}}), &cur),
        Err(Error::PropertyValueType { property: "Boot/BootSourceOverrideTarget".into(), value: "true".into() })
    );
    assert_eq!(
        patch(set, json!({"Boot": "Pxe"}), &cur),
        Err(Error::PropertyValueType { property: "Boot".into(), value: "\"Pxe\"".into() })
    );
}

/// Properties the schema does not have are `PropertyUnknown`, at any depth; so are properties
/// added after the resource's version.
#[test]
fn unknown() {
    let Some(set) = schemas() else { return };
    let cur = stored_system();
    assert_eq!(patch(set, json!({"Bogus": 1}), &cur), Err(Error::PropertyUnknown { property: "Bogus".into() }));
    assert_eq!(
        patch(set, json!({"Boot": {"Bogus": 1}}), &cur),
        Err(Error::PropertyUnknown { property: "Boot/Bogus".into() })
    );
    assert_eq!(
        create(set, json!({"Name@Contoso.Note": "x"})),
        Err(Error::PropertyUnknown { property: "Name@Contoso.Note".into() })
    );
    // IPMIHostInterface came with ComputerSystem v1_25_0.
    let ipmi = json!({"IPMIHostInterface": {"ServiceEnabled": true}});
    assert_eq!(create(set, ipmi.clone()), Err(Error::PropertyUnknown { property: "IPMIHostInterface".into() }));
    set.validate("#ComputerSystem.v1_25_0.ComputerSystem", &ipmi, Operation::Create, None).unwrap();
}

/// Enumerations: a value outside the enum is `PropertyValue` naming the nested path; enum
/// values added after the resource's version are refused too.
#[test]
fn enums() {
    let Some(set) = schemas() else { return };
    let cur = stored_system();
    assert!(matches!(
        create(set, json!({"Status": {"State": "Bogus"}})),
        Err(Error::PropertyValue { property, .. }) if property == "Status/State"
    ));
    assert!(matches!(
        patch(set, json!({"Boot": {"BootSourceOverrideTarget": "Nope"}}), &cur),
        Err(Error::PropertyValue { property, .. }) if property == "Boot/BootSourceOverrideTarget"
    ));
    patch(set, json!({"Boot": {"BootSourceOverrideTarget": "Hdd"}}), &cur).unwrap();
    // `Recovery` was added to BootSource in ComputerSystem v1_19_0.
    let recovery = json!({"Boot": {"BootSourceOverrideTarget": "Recovery"}});
    patch(set, recovery.clone(), &cur).unwrap();
    assert!(matches!(
        set.validate("#ComputerSystem.v1_18_0.ComputerSystem", &recovery, Operation::Patch, Some(&cur)),
        Err(Error::PropertyValue { property, .. }) if property == "Boot/BootSourceOverrideTarget"
    ));
}

/// `Oem` is free-form below the object level, but must be an object.
#[test]
fn oem_is_free_form() {
    let Some(set) = schemas() else { return };
    let cur = stored_system();
    patch(set, json!({"Oem": {"Contoso": {"Anything": [1, {"x": null}], "Deep": {"Er": true}}}}), &cur).unwrap();
    patch(set, json!({"Status": {"Oem": {"Contoso": 1}}}), &cur).unwrap();
    assert_eq!(
        patch(set, json!({"Oem": 5}), &cur),
        Err(Error::PropertyValueType { property: "Oem".into(), value: "5".into() })
    );
}

/// Null is accepted where the schema allows it (type lists, `anyOf` with null) and refused
/// elsewhere.
#[test]
fn nullable() {
    let Some(set) = schemas() else { return };
    let cur = stored_system();
    patch(set, json!({"AssetTag": null, "Boot": {"BootSourceOverrideTarget": null}}), &cur).unwrap();
    assert_eq!(
        create(set, json!({"Name": null})),
        Err(Error::PropertyValueType { property: "Name".into(), value: "null".into() })
    );
}

/// Arrays: items are checked with their index in the path, arrays of objects member by member.
#[test]
fn arrays() {
    let Some(set) = schemas() else { return };
    let cur = stored_system();
    assert_eq!(
        patch(set, json!({"Boot": {"BootOrder": ["Boot0001", 7]}}), &cur),
        Err(Error::PropertyValueType { property: "Boot/BootOrder/1".into(), value: "7".into() })
    );
    assert_eq!(
        patch(set, json!({"KeyManagement": {"KMIPServers": [{"Address": "10.0.0.1", "Port": "x"}]}}), &cur),
        Err(Error::PropertyValueType { property: "KeyManagement/KMIPServers/0/Port".into(), value: "\"x\"".into() })
    );
    patch(set, json!({"KeyManagement": {"KMIPServers": [{"Address": "10.0.0.1", "Port": 5696}]}}), &cur).unwrap();
    assert_eq!(
        create(set, json!({"Links": {"Chassis": [{"@odata.id": "/redfish/v1/Chassis/1", "Bogus": 1}]}})),
        Err(Error::PropertyUnknown { property: "Links/Chassis/0/Bogus".into() })
    );
    assert_eq!(
        patch(set, json!({"Links": {"Chassis": []}}), &cur),
        Err(Error::PropertyNotWritable { property: "Links/Chassis".into() })
    );
}

/// Types and versions the bundle does not describe are not validated.
#[test]
fn unknown_types_pass() {
    let Some(set) = schemas() else { return };
    let junk = json!({"Bogus": 1, "Status": 7});
    for t in [
        "#ContosoWidget.v1_0_0.ContosoWidget",
        "#ComputerSystem.v1_99_0.ComputerSystem",
        "#ComputerSystem.v2_0_0.ComputerSystem",
        "not a type",
    ] {
        set.validate(t, &junk, Operation::Create, None).unwrap_or_else(|e| panic!("{t}: {e}"));
    }
    // An unversioned type the bundle has is validated.
    assert!(set.validate("#ChassisCollection.ChassisCollection", &junk, Operation::Create, None).is_err());
}

/// Other resource types: a subscription as a client posts it, and a Sensor's fields.
#[test]
fn other_types() {
    let Some(set) = schemas() else { return };
    let sub = json!({
        "@odata.type": "#EventDestination.v1_16_0.EventDestination",
        "Destination": "http://127.0.0.1:9/events", "Protocol": "Redfish", "Context": "c",
        "RegistryPrefixes": ["Base"], "HttpHeaders": [{"X-Token": "t"}]
    });
    set.validate("#EventDestination.v1_16_0.EventDestination", &sub, Operation::Create, None).unwrap();
    let bad = json!({"Protocol": "Carrier pigeon"});
    assert!(matches!(
        set.validate("#EventDestination.v1_16_0.EventDestination", &bad, Operation::Create, None),
        Err(Error::PropertyValue { property, .. }) if property == "Protocol"
    ));
    let sensor = json!({"Reading": 21.5, "ReadingUnits": "Cel", "Status": {"State": "Enabled"}});
    set.validate("#Sensor.v1_2_0.Sensor", &sensor, Operation::Create, None).unwrap();
    assert_eq!(
        set.validate("#Sensor.v1_2_0.Sensor", &json!({"Reading": "warm"}), Operation::Create, None),
        Err(Error::PropertyValueType { property: "Reading".into(), value: "\"warm\"".into() })
    );
}

/// Excerpt hints come from the `excerpt` annotations, limited to the resource's version;
/// types without any have no excerpt.
#[test]
fn excerpt_hints() {
    let Some(set) = schemas() else { return };
    let props = set.excerpt_properties("#Sensor.v1_12_0.Sensor").unwrap();
    for p in ["Reading", "PhysicalContext", "SpeedRPM"] {
        assert!(props.contains(&p.to_string()), "{p} missing from {props:?}");
    }
    assert!(!props.contains(&"ReadingUnits".to_string()), "{props:?}");
    // Nothing added after the version asked for.
    let old = set.excerpt_properties("#Sensor.v1_0_0.Sensor").unwrap();
    assert!(old.len() < props.len(), "{old:?}");
    assert!(!old.contains(&"SpeedRPM".to_string()), "{old:?}");
    let control = set.excerpt_properties("#Control.v1_7_0.Control").unwrap_or_default();
    assert!(control.contains(&"ControlLoop".to_string()), "{control:?}");
    assert_eq!(set.excerpt_properties(SYSTEM), None);
    assert_eq!(set.excerpt_properties("#Nope.v1_0_0.Nope"), None);
}

/// `$metadata` support: CSDL files and namespaces, and the service container.
#[test]
fn csdl_index() {
    let Some(set) = schemas() else { return };
    assert_eq!(set.csdl_file("ComputerSystem.v1_20_0"), Some("ComputerSystem_v1.xml"));
    assert!(set.csdl_has_namespace("ComputerSystem.v1_20_0"));
    assert!(set.csdl_has_namespace("ComputerSystemCollection"));
    assert!(!set.csdl_has_namespace("ComputerSystem.v1_99_0"));
    assert_eq!(set.csdl_file("Validation"), Some("RedfishExtensions_v1.xml"));
    let container = set.container_namespace("ServiceRoot", sunfish_core::schema::Version::parse("v1_20_0").unwrap());
    assert!(container.as_deref().is_some_and(|c| c.starts_with("ServiceRoot.v1_")), "{container:?}");
    assert_eq!(set.json_file_for(SYSTEM).as_deref(), Some("ComputerSystem.v1_27_0.json"));
    assert!(set.json_file_bytes("ComputerSystem.v1_27_0.json").is_some());
    assert!(set.json_file_bytes("../csdl/ComputerSystem_v1.xml").is_none());
}

/// Capabilities come from the unversioned schema of the type.
#[test]
fn capabilities() {
    let Some(set) = schemas() else { return };
    let caps = |t: &str| set.capabilities(t).map(|c| (c.insertable, c.updatable, c.deletable));
    assert_eq!(caps(SYSTEM), Some((false, true, true)));
    assert_eq!(caps("#ServiceRoot.v1_20_0.ServiceRoot"), Some((false, false, false)));
    assert_eq!(caps("#EventService.v1_12_0.EventService"), Some((false, true, false)));
    assert_eq!(caps("#ChassisCollection.ChassisCollection"), Some((true, false, false)));
    assert_eq!(caps("#Session.v1_8_0.Session"), Some((false, false, true)));
    assert_eq!(caps("#ContosoWidget.v1_0_0.ContosoWidget"), None);
}

/// A store over [`ResourceTree`], for [`types_in_store`].
struct TreeStore(parking_lot::Mutex<ResourceTree>);

#[async_trait]
impl StorageBackend for TreeStore {
    async fn get(&self, path: &ResourcePath) -> Result<Resource> {
        self.0.lock().get(path)
    }
    async fn create(&self, _: &ResourcePath, _: Value, _: Option<Value>) -> Result<Resource> {
        Err(Error::Internal { message: "read-only test store".into() })
    }
    async fn replace(&self, _: &ResourcePath, _: Value, _: Option<u64>) -> Result<Resource> {
        Err(Error::Internal { message: "read-only test store".into() })
    }
    async fn patch(&self, _: &ResourcePath, _: Value, _: Option<u64>) -> Result<Resource> {
        Err(Error::Internal { message: "read-only test store".into() })
    }
    async fn delete(&self, _: &ResourcePath, _: Option<u64>) -> Result<Vec<ResourcePath>> {
        Err(Error::Internal { message: "read-only test store".into() })
    }
    async fn children(&self, path: &ResourcePath) -> Result<Vec<ResourcePath>> {
        Ok(self.0.lock().children(path))
    }
    async fn paths(&self) -> Result<Vec<ResourcePath>> {
        Ok(self.0.lock().paths())
    }
    async fn import(&self, resources: Vec<(ResourcePath, Value)>) -> Result<()> {
        self.0.lock().import(resources);
        Ok(())
    }
    async fn kv_get(&self, _: &str, _: &str) -> Result<Option<Value>> {
        Ok(None)
    }
    async fn kv_put(&self, _: &str, _: &str, _: Value) -> Result<()> {
        Ok(())
    }
    async fn kv_delete(&self, _: &str, _: &str) -> Result<bool> {
        Ok(false)
    }
    async fn kv_list(&self, _: &str) -> Result<Vec<(String, Value)>> {
        Ok(Vec::new())
    }
}

/// `types_in_store` lists each stored `@odata.type` once, sorted; untyped resources add none.
#[tokio::test]
async fn store_types() {
    let store = Arc::new(TreeStore(parking_lot::Mutex::new(ResourceTree::new(1))));
    let p = |s: &str| ResourcePath::parse(s).unwrap();
    store
        .import(vec![
            (p("/redfish/v1"), json!({"@odata.type": "#ServiceRoot.v1_20_0.ServiceRoot"})),
            (p("/redfish/v1/Systems"), json!({"@odata.type": "#ComputerSystemCollection.ComputerSystemCollection"})),
            (p("/redfish/v1/Systems/1"), json!({"@odata.type": SYSTEM})),
            (p("/redfish/v1/Systems/2"), json!({"@odata.type": SYSTEM})),
            (p("/redfish/v1/Untyped"), json!({"Name": "x"})),
        ])
        .await
        .unwrap();
    assert_eq!(
        types_in_store(store.as_ref()).await,
        vec![
            "#ComputerSystem.v1_20_0.ComputerSystem".to_string(),
            "#ComputerSystemCollection.ComputerSystemCollection".to_string(),
            "#ServiceRoot.v1_20_0.ServiceRoot".to_string(),
        ]
    );
}
