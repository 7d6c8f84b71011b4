//! The documents a Redfish service generates instead of storing: the OData `$metadata`
//! document, the OData service document (`/redfish/v1/odata`) and the `JsonSchemas` collection.
//! All are built per request from the types the store holds ([`types_in_store`]) and, when
//! `schema.dir` names a DSP8010 bundle, from its [`SchemaSet`]. [`respond`] is the one entry
//! the dispatcher calls; the builders are public for tests and other front ends.
//!
//! Choices:
//! - `$metadata` references the DMTF URLs (`http://redfish.dmtf.org/schemas/v1/X_v1.xml`), as
//!   DMTF's mockups do. DMTF's service validator, run offline with `--schema_directory` on the
//!   bundle's `csdl/`, finds those files by name locally; a `/redfish/v1/...` URI would make it
//!   fetch each file from the service instead. With a bundle, only files and namespaces the
//!   bundle defines are referenced (OEM types are left out); without one, every type is
//!   referenced by the DMTF naming convention.
//! - `JsonSchemas` has one member per schema the store holds (`/redfish/v1/JsonSchemas/Chassis`),
//!   plus `JsonSchemaFile` and `JsonSchemaFileCollection`, which this module serves. Each
//!   names the newest version held as `Schema` and its DMTF `PublicationUri`; with a bundle, its
//!   `Uri` points at the bundle's JSON file for that version, served read-only below the member
//!   (`/redfish/v1/JsonSchemas/Chassis/Chassis.v1_28_0.json`).

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use sunfish_core::schema::{types_in_store, OdataType, SchemaSet, Version, DMTF_SCHEMA_BASE};
use sunfish_core::{Core, Error, Operation, ResourcePath};

use crate::error::ApiError;

/// `$metadata`.
pub const METADATA_PATH: &str = "/redfish/v1/$metadata";
/// The OData service document.
pub const ODATA_PATH: &str = "/redfish/v1/odata";
/// The `JsonSchemaFileCollection`.
pub const JSON_SCHEMAS_PATH: &str = "/redfish/v1/JsonSchemas";

/// The `@odata.type` of the members of `JsonSchemas` (the version in DSP8010 2025.4).
pub const JSON_SCHEMA_FILE_TYPE: &str = "#JsonSchemaFile.v1_1_5.JsonSchemaFile";
/// The `@odata.type` of `JsonSchemas` itself.
pub const JSON_SCHEMA_COLLECTION_TYPE: &str = "#JsonSchemaFileCollection.JsonSchemaFileCollection";

/// Types this module serves without storing them; `$metadata` and `JsonSchemas` list them too.
const GENERATED_TYPES: [&str; 2] = [JSON_SCHEMA_COLLECTION_TYPE, JSON_SCHEMA_FILE_TYPE];

/// The `RedfishExtensions` namespace every Redfish `$metadata` includes (alias `Redfish`).
const REDFISH_EXTENSIONS: &str = "RedfishExtensions.v1_0_0";

/// Answers the generated documents: `GET`/`HEAD` of [`METADATA_PATH`], [`ODATA_PATH`],
/// [`JSON_SCHEMAS_PATH`], its members and their schema files. `None` for any other path, so
/// the dispatcher goes on; other methods on these paths are 405 with `Allow: GET, HEAD`.
pub async fn respond(
    core: &Core,
    schemas: Option<&SchemaSet>,
    path: &ResourcePath,
    method: &Method,
) -> Option<Result<Response, ApiError>> {
    let segments: Vec<&str> = path.segments().collect();
    let known = matches!(segments.as_slice(), ["$metadata"] | ["odata"] | ["JsonSchemas", ..] if segments.len() <= 3);
    if !known {
        return None;
    }
    if method != Method::GET && method != Method::HEAD {
        return Some(Err(ApiError::MethodNotAllowed(vec![Operation::Get])));
    }
    let not_found = || Err(ApiError::Core(Error::not_found(path)));
    Some(match segments.as_slice() {
        ["$metadata"] => {
            let types = types_in_store(core.storage().as_ref()).await;
            Ok(body_response("application/xml", metadata_xml(&types, schemas).into_bytes(), method))
        }
        ["odata"] => match core.get(&ResourcePath::root()).await {
            Ok(root) => Ok(json_response(&odata_service_document(&root.value()), method)),
            Err(e) => Err(e.into()),
        },
        ["JsonSchemas"] => {
            let types = types_in_store(core.storage().as_ref()).await;
            Ok(json_response(&json_schemas_collection(&types), method))
        }
        ["JsonSchemas", name] => {
            let types = types_in_store(core.storage().as_ref()).await;
            match json_schema_file(name, &types, schemas) {
                Some(v) => Ok(json_response(&v, method)),
                None => not_found(),
            }
        }
        ["JsonSchemas", name, file] => match schemas.and_then(|s| json_schema_raw(s, name, file)) {
            Some(bytes) => Ok(body_response("application/json", bytes, method)),
            None => not_found(),
        },
        _ => not_found(),
    })
}

/// A 200 response with `content_type` (no body for HEAD) and `OData-Version: 4.0`.
fn body_response(content_type: &'static str, body: Vec<u8>, method: &Method) -> Response {
    let body = if method == Method::HEAD { Body::empty() } else { Body::from(body) };
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut().insert("OData-Version", HeaderValue::from_static("4.0"));
    r
}

fn json_response(v: &Value, method: &Method) -> Response {
    body_response("application/json; charset=utf-8", v.to_string().into_bytes(), method)
}

/// The `$metadata` document (OData CSDL 4.0) for a store holding `types_in_store` (full
/// `@odata.type` values): one `edmx:Reference` per CSDL file, including each type's
/// unversioned namespace and every version held, plus `RedfishExtensions`, and the `Service`
/// entity container extending the service root's `ServiceContainer`. Values that are not
/// well-formed Redfish types are left out.
pub fn metadata_xml(types_in_store: &[String], schemas: Option<&SchemaSet>) -> String {
    // CSDL file → namespaces to include from it.
    let mut refs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut include = |namespace: &str| {
        let file = match schemas {
            Some(s) => match s.csdl_file(namespace) {
                Some(f) if s.csdl_has_namespace(namespace) => f.to_string(),
                // Not in the bundle (OEM types, versions newer than the bundle): a reference
                // the client cannot resolve helps no one.
                _ => return,
            },
            None => format!("{}_v1.xml", namespace.split('.').next().unwrap_or(namespace)),
        };
        refs.entry(file).or_default().insert(namespace.to_string());
    };
    let mut root_version: Option<Version> = None;
    for t in types_in_store.iter().map(String::as_str).chain(GENERATED_TYPES) {
        let Some(t) = OdataType::parse(t) else { continue };
        include(t.schema);
        if t.version.is_some() {
            include(t.namespace);
        }
        if t.schema == "ServiceRoot" && t.version > root_version {
            root_version = t.version;
        }
    }
    let root_version = root_version.unwrap_or(Version { major: 1, minor: 0, errata: 0 });
    let container = schemas
        .and_then(|s| s.container_namespace("ServiceRoot", root_version))
        .unwrap_or_else(|| format!("ServiceRoot.{root_version}"));
    include("ServiceRoot");
    include(&container);

    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <edmx:Edmx xmlns:edmx=\"http://docs.oasis-open.org/odata/ns/edmx\" Version=\"4.0\">\n",
    );
    for (file, namespaces) in &refs {
        xml.push_str(&format!("  <edmx:Reference Uri=\"{}\">\n", escape(&format!("{DMTF_SCHEMA_BASE}{file}"))));
        for ns in namespaces {
            xml.push_str(&format!("    <edmx:Include Namespace=\"{}\"/>\n", escape(ns)));
        }
        xml.push_str("  </edmx:Reference>\n");
    }
    xml.push_str(&format!(
        "  <edmx:Reference Uri=\"{DMTF_SCHEMA_BASE}RedfishExtensions_v1.xml\">\n    \
         <edmx:Include Namespace=\"{REDFISH_EXTENSIONS}\" Alias=\"Redfish\"/>\n  </edmx:Reference>\n"
    ));
    xml.push_str(&format!(
        "  <edmx:DataServices>\n    \
         <Schema xmlns=\"http://docs.oasis-open.org/odata/ns/edm\" Namespace=\"Service\">\n      \
         <EntityContainer Name=\"Service\" Extends=\"{}.ServiceContainer\"/>\n    \
         </Schema>\n  </edmx:DataServices>\n</edmx:Edmx>\n",
        escape(&container)
    ));
    xml
}

/// XML attribute escaping (the values are checked identifiers already; this is a second line).
fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The OData service document for the service root `root`: the root itself as `Service`, then
/// one `Singleton` per top-level link of the root (`Systems`, `Chassis`, ...), in its order.
pub fn odata_service_document(root: &Value) -> Value {
    let mut value = vec![json!({"name": "Service", "kind": "Singleton", "url": "/redfish/v1/"})];
    if let Some(map) = root.as_object() {
        for (name, v) in map {
            if name.starts_with('@') {
                continue;
            }
            if let Some(url) = v.get("@odata.id").and_then(Value::as_str) {
                value.push(json!({"name": name, "kind": "Singleton", "url": url}));
            }
        }
    }
    json!({"@odata.context": "/redfish/v1/$metadata", "value": value})
}

/// Schema name → the newest full `@odata.type` held of it, over the store's types and the
/// generated ones.
fn held_schemas(types_in_store: &[String]) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, (Option<Version>, String)> = BTreeMap::new();
    for t in types_in_store.iter().map(String::as_str).chain(GENERATED_TYPES) {
        let Some(parsed) = OdataType::parse(t) else { continue };
        let entry = out.entry(parsed.schema.to_string()).or_insert((parsed.version, t.to_string()));
        if parsed.version > entry.0 {
            *entry = (parsed.version, t.to_string());
        }
    }
    out.into_iter().map(|(k, (_, t))| (k, t)).collect()
}

/// The `JsonSchemaFileCollection` at [`JSON_SCHEMAS_PATH`]: one member per schema held.
pub fn json_schemas_collection(types_in_store: &[String]) -> Value {
    let members: Vec<Value> = held_schemas(types_in_store)
        .keys()
        .map(|name| json!({"@odata.id": format!("{JSON_SCHEMAS_PATH}/{name}")}))
        .collect();
    json!({
        "@odata.id": JSON_SCHEMAS_PATH,
        "@odata.type": JSON_SCHEMA_COLLECTION_TYPE,
        "Name": "JSON Schema File Collection",
        "Members@odata.count": members.len(),
        "Members": members,
    })
}

/// The `JsonSchemaFile` member `name` (a schema name such as `Chassis`), or `None` when the
/// service holds no resource of that schema. `Schema` is the newest version held; `Location`
/// gives the DMTF `PublicationUri` of that version and, with a bundle, the `Uri` of the bundle
/// file that describes it ([`respond`] serves it).
pub fn json_schema_file(name: &str, types_in_store: &[String], schemas: Option<&SchemaSet>) -> Option<Value> {
    let held = held_schemas(types_in_store);
    let odata_type = held.get(name)?;
    let t = OdataType::parse(odata_type)?;
    let mut location = Map::new();
    location.insert("Language".into(), json!("en"));
    let published = if t.version.is_some() { t.namespace } else { t.schema };
    location.insert("PublicationUri".into(), json!(format!("{DMTF_SCHEMA_BASE}{published}.json")));
    if let Some(file) = schemas.and_then(|s| s.json_file_for(odata_type)) {
        location.insert("Uri".into(), json!(format!("{JSON_SCHEMAS_PATH}/{name}/{file}")));
    }
    Some(json!({
        "@odata.id": format!("{JSON_SCHEMAS_PATH}/{name}"),
        "@odata.type": JSON_SCHEMA_FILE_TYPE,
        "Id": name,
        "Name": format!("{name} Schema File"),
        "Description": format!("The JSON schema of {name} resources"),
        "Languages": ["en"],
        "Schema": odata_type,
        "Location": [Value::Object(location)],
    }))
}

/// The bundle's JSON schema `file` served below member `name`: only files of that schema
/// (`Chassis.json`, `Chassis.v1_28_0.json` for `Chassis`) that the bundle holds.
pub fn json_schema_raw(schemas: &SchemaSet, name: &str, file: &str) -> Option<Vec<u8>> {
    let stem = file.strip_suffix(".json")?;
    if stem.split('.').next() != Some(name) {
        return None;
    }
    schemas.json_file_bytes(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types() -> Vec<String> {
        [
            "#ServiceRoot.v1_20_0.ServiceRoot",
            "#ComputerSystemCollection.ComputerSystemCollection",
            "#ComputerSystem.v1_20_0.ComputerSystem",
            "#ComputerSystem.v1_22_0.ComputerSystem",
            "#Contoso\"><x.v1_0_0.Contoso",
        ]
        .map(String::from)
        .to_vec()
    }

    /// Without a bundle, every well-formed type is referenced by the DMTF convention, with its
    /// unversioned and versioned namespaces; malformed types are left out.
    #[test]
    fn metadata_by_convention() {
        let xml = metadata_xml(&types(), None);
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<edmx:Edmx"), "{xml}");
        let cs = "  <edmx:Reference Uri=\"http://redfish.dmtf.org/schemas/v1/ComputerSystem_v1.xml\">\n    \
                  <edmx:Include Namespace=\"ComputerSystem\"/>\n    \
                  <edmx:Include Namespace=\"ComputerSystem.v1_20_0\"/>\n    \
                  <edmx:Include Namespace=\"ComputerSystem.v1_22_0\"/>\n  </edmx:Reference>\n";
        assert!(xml.contains(cs), "{xml}");
        assert!(xml.contains("<edmx:Include Namespace=\"ComputerSystemCollection\"/>"), "{xml}");
        assert!(xml.contains("<edmx:Include Namespace=\"RedfishExtensions.v1_0_0\" Alias=\"Redfish\"/>"), "{xml}");
        assert!(xml.contains("<edmx:Include Namespace=\"JsonSchemaFile.v1_1_5\"/>"), "{xml}");
        assert!(xml.contains("<EntityContainer Name=\"Service\" Extends=\"ServiceRoot.v1_20_0.ServiceContainer\"/>"));
        assert!(!xml.contains("Contoso"), "{xml}");
        assert_eq!(xml.matches("<edmx:Reference ").count(), xml.matches("</edmx:Reference>").count());
    }

    /// The service document lists the root and each of its top-level links, nothing else.
    #[test]
    fn service_document() {
        let root = json!({
            "@odata.id": "/redfish/v1", "Id": "RootService", "Name": "Root",
            "Systems": {"@odata.id": "/redfish/v1/Systems"},
            "Tasks": {"@odata.id": "/redfish/v1/TaskService"},
            "Links": {"Sessions": {"@odata.id": "/redfish/v1/SessionService/Sessions"}}
        });
        assert_eq!(
            odata_service_document(&root),
            json!({"@odata.context": "/redfish/v1/$metadata", "value": [
                {"name": "Service", "kind": "Singleton", "url": "/redfish/v1/"},
                {"name": "Systems", "kind": "Singleton", "url": "/redfish/v1/Systems"},
                {"name": "Tasks", "kind": "Singleton", "url": "/redfish/v1/TaskService"}
            ]})
        );
    }

    /// `JsonSchemas`: a member per schema held (newest version as `Schema`), the generated
    /// types included; unknown names have no member.
    #[test]
    fn json_schemas() {
        let c = json_schemas_collection(&types());
        let ids: Vec<&str> =
            c["Members"].as_array().unwrap().iter().map(|m| m["@odata.id"].as_str().unwrap()).collect();
        assert_eq!(
            ids,
            [
                "/redfish/v1/JsonSchemas/ComputerSystem",
                "/redfish/v1/JsonSchemas/ComputerSystemCollection",
                "/redfish/v1/JsonSchemas/JsonSchemaFile",
                "/redfish/v1/JsonSchemas/JsonSchemaFileCollection",
                "/redfish/v1/JsonSchemas/ServiceRoot",
            ]
        );
        assert_eq!(c["Members@odata.count"], 5);
        let f = json_schema_file("ComputerSystem", &types(), None).unwrap();
        assert_eq!(f["Schema"], "#ComputerSystem.v1_22_0.ComputerSystem");
        assert_eq!(
            f["Location"],
            json!([{"Language": "en", "PublicationUri": "http://redfish.dmtf.org/schemas/v1/ComputerSystem.v1_22_0.json"}])
        );
        let coll = json_schema_file("ComputerSystemCollection", &types(), None).unwrap();
        assert_eq!(
            coll["Location"][0]["PublicationUri"],
            "http://redfish.dmtf.org/schemas/v1/ComputerSystemCollection.json"
        );
        assert!(json_schema_file("Chassis", &types(), None).is_none());
    }
}
