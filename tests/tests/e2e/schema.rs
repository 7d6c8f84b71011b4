//! DMTF schema support over HTTP, with `schema.dir` on the DSP8010 bundle read in place from
//! `../shared/redfish` beside the checkout (each test prints a reason and passes when it is
//! absent): `$metadata`, the OData service document, `JsonSchemas`, write validation and
//! `excerpt`.

use std::path::PathBuf;

use reqwest::{Method, StatusCode};
use serde_json::json;
use sunfish_tests::{assert_collection_consistent, assert_redfish_error, config_for, Backend, TestServer};

const SYSTEM: &str = "#ComputerSystem.v1_20_0.ComputerSystem";

/// The bundle directory, or `None` after printing why the test is skipped.
fn bundle() -> Option<PathBuf> {
    let dir = sunfish_tests::workspace_root().join("../shared/redfish");
    if dir.join("csdl").is_dir() && dir.join("json-schema").is_dir() {
        Some(dir)
    } else {
        eprintln!("SKIP: no DMTF schema bundle at {}", dir.display());
        None
    }
}

/// A memory-backed server with `schema.dir` set to `dir` (or unset).
async fn server(dir: Option<&PathBuf>) -> TestServer {
    let (mut cfg, tmp) = config_for(Backend::Memory);
    cfg.schema.dir = dir.map(|d| d.to_string_lossy().into_owned().into());
    TestServer::start_with(cfg, tmp).await
}

/// The values of attribute `name` in `xml`, in document order.
fn attributes<'a>(xml: &'a str, name: &str) -> Vec<&'a str> {
    let pat = format!(" {name}=\"");
    xml.match_indices(&pat)
        .filter_map(|(at, _)| {
            let rest = &xml[at + pat.len()..];
            rest.find('"').map(|end| &rest[..end])
        })
        .collect()
}

/// `$metadata` is CSDL served as `application/xml`; every reference names a file of the bundle
/// by its DMTF URL (what DMTF's service validator resolves offline), every included namespace
/// is defined in that file, the service's types are there, and the entity container extends a
/// `ServiceContainer` the bundle defines.
#[tokio::test]
async fn metadata_document() {
    let Some(dir) = bundle() else { return };
    let s = server(Some(&dir)).await;
    let r = s.send(Method::GET, "/redfish/v1/$metadata", None, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), "application/xml");
    assert_eq!(r.header("odata-version"), "4.0");
    let resp = s.http.get(format!("{}/redfish/v1/$metadata", s.base)).send().await.unwrap();
    let xml = resp.text().await.unwrap();
    assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<edmx:Edmx "), "{xml}");

    for block in xml.split("<edmx:Reference").skip(1) {
        let block = &block[..block.find("</edmx:Reference>").unwrap_or(block.len())];
        let uri = attributes(block, "Uri")[0];
        let file = uri.strip_prefix("http://redfish.dmtf.org/schemas/v1/").unwrap_or_else(|| panic!("{uri}"));
        let csdl = std::fs::read_to_string(dir.join("csdl").join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        for ns in attributes(block, "Namespace") {
            assert!(csdl.contains(&format!("Namespace=\"{ns}\"")), "{ns} is not defined in {file}");
        }
    }
    let included = attributes(&xml, "Namespace");
    for ns in ["ServiceRoot", "ServiceRoot.v1_20_0", "ComputerSystemCollection", "RedfishExtensions.v1_0_0", "Service"]
    {
        assert!(included.contains(&ns), "{ns} missing: {xml}");
    }
    let extends = attributes(&xml, "Extends");
    assert_eq!(extends.len(), 1, "{xml}");
    let container = extends[0].strip_suffix(".ServiceContainer").unwrap_or_else(|| panic!("{}", extends[0]));
    let root_csdl = std::fs::read_to_string(dir.join("csdl/ServiceRoot_v1.xml")).unwrap();
    let at = root_csdl.find(&format!("Namespace=\"{container}\"")).unwrap_or_else(|| panic!("{container}"));
    let schema = &root_csdl[at..at + root_csdl[at..].find("</Schema>").unwrap()];
    assert!(schema.contains("<EntityContainer Name=\"ServiceContainer\""), "{container} has no ServiceContainer");

    // A type the service starts holding appears.
    let sys = json!({"@odata.type": SYSTEM, "Id": "m1", "Name": "m1"});
    assert_eq!(s.post("/redfish/v1/Systems", &sys).await.status, 201);
    let xml = s.http.get(format!("{}/redfish/v1/$metadata", s.base)).send().await.unwrap().text().await.unwrap();
    assert!(xml.contains("<edmx:Include Namespace=\"ComputerSystem.v1_20_0\"/>"), "{xml}");

    let head = s.send(Method::HEAD, "/redfish/v1/$metadata", None, &[]).await;
    assert_eq!(head.status, StatusCode::OK);
    let post = s.post("/redfish/v1/$metadata", &json!({})).await;
    assert_redfish_error(&post, 405, "OperationNotAllowed");
    s.stop().await;
}

/// Without a bundle `$metadata` is still served, naming files by the DMTF convention.
#[tokio::test]
async fn metadata_without_bundle() {
    let s = server(None).await;
    let resp = s.http.get(format!("{}/redfish/v1/$metadata", s.base)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let xml = resp.text().await.unwrap();
    assert!(xml.contains("Uri=\"http://redfish.dmtf.org/schemas/v1/ServiceRoot_v1.xml\""), "{xml}");
    assert!(xml.contains("Extends=\"ServiceRoot.v1_20_0.ServiceContainer\""), "{xml}");
    s.stop().await;
}

/// The OData service document lists the service root and each of its top-level links, and
/// every URL it gives answers.
#[tokio::test]
async fn odata_service_document() {
    let s = server(bundle().as_ref()).await;
    let r = s.get("/redfish/v1/odata").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.header("content-type").starts_with("application/json"));
    assert_eq!(r.body["@odata.context"], "/redfish/v1/$metadata");
    let value = r.body["value"].as_array().unwrap();
    assert_eq!(value[0], json!({"name": "Service", "kind": "Singleton", "url": "/redfish/v1/"}));
    assert!(
        value.contains(&json!({"name": "Systems", "kind": "Singleton", "url": "/redfish/v1/Systems"})),
        "{value:?}"
    );
    for entry in value {
        let url = entry["url"].as_str().unwrap();
        assert_eq!(s.get(url).await.status, StatusCode::OK, "{url}");
    }
    s.stop().await;
}

/// `$metadata` and the service document stay open when authentication is on; `JsonSchemas`
/// does not.
#[tokio::test]
async fn metadata_needs_no_credentials() {
    let (mut cfg, tmp) = config_for(Backend::Memory);
    cfg.auth.enabled = true;
    cfg.auth.admin_password = Some("schema-admin-password-1".into());
    cfg.schema.dir = bundle().map(|d| d.to_string_lossy().into_owned().into());
    let s = TestServer::start_with(cfg, tmp).await;
    assert_eq!(s.get("/redfish/v1/$metadata").await.status, StatusCode::OK);
    assert_eq!(s.get("/redfish/v1/odata").await.status, StatusCode::OK);
    assert_eq!(s.get("/redfish/v1/JsonSchemas").await.status, StatusCode::UNAUTHORIZED);
    s.stop().await;
}

/// `JsonSchemas` is a consistent collection with a member per schema held; a member names the
/// newest version held and where to get it, and its `Uri` serves the bundle's file.
#[tokio::test]
async fn json_schemas() {
    let Some(dir) = bundle() else { return };
    let s = server(Some(&dir)).await;
    let members = assert_collection_consistent(&s, "/redfish/v1/JsonSchemas").await;
    for m in ["ServiceRoot", "ComputerSystemCollection", "JsonSchemaFile", "JsonSchemaFileCollection"] {
        assert!(members.contains(&format!("/redfish/v1/JsonSchemas/{m}")), "{m} missing: {members:?}");
    }
    let f = s.get("/redfish/v1/JsonSchemas/ServiceRoot").await.body;
    assert_eq!(f["@odata.type"], "#JsonSchemaFile.v1_1_5.JsonSchemaFile");
    assert_eq!(f["Schema"], "#ServiceRoot.v1_20_0.ServiceRoot");
    assert_eq!(f["Languages"], json!(["en"]));
    let loc = &f["Location"][0];
    assert_eq!(loc["Language"], "en");
    assert_eq!(loc["PublicationUri"], "http://redfish.dmtf.org/schemas/v1/ServiceRoot.v1_20_0.json");
    let uri = loc["Uri"].as_str().unwrap();
    let file = s.get(uri).await;
    assert_eq!(file.status, StatusCode::OK, "{uri}");
    let name = uri.rsplit('/').next().unwrap();
    assert_eq!(file.body["$id"], format!("http://redfish.dmtf.org/schemas/v1/{name}"));

    assert_redfish_error(&s.get("/redfish/v1/JsonSchemas/Nope").await, 404, "ResourceNotFound");
    assert_redfish_error(&s.get("/redfish/v1/JsonSchemas/ServiceRoot/Chassis.json").await, 404, "ResourceNotFound");
    assert_redfish_error(
        &s.get("/redfish/v1/JsonSchemas/ServiceRoot/ServiceRoot.v1_99_0.json").await,
        404,
        "ResourceNotFound",
    );
    assert_redfish_error(&s.delete("/redfish/v1/JsonSchemas/ServiceRoot").await, 405, "OperationNotAllowed");
    s.stop().await;
}

/// With a bundle, PATCH/PUT/POST bodies are checked against the resource's versioned schema:
/// read-only, unknown, wrongly typed and out-of-enum properties are refused with the Base
/// message naming the property, and nothing changes; unchanged read-only values pass.
#[tokio::test]
async fn writes_are_validated() {
    let Some(dir) = bundle() else { return };
    let s = server(Some(&dir)).await;
    let uri = "/redfish/v1/Systems/v1";
    let sys = json!({
        "@odata.type": SYSTEM, "Id": "v1", "Name": "validated", "PowerState": "On", "AssetTag": "a",
        "Status": {"State": "Enabled", "Health": "OK"}, "Boot": {"BootSourceOverrideTarget": "Pxe"}
    });
    let created = s.post("/redfish/v1/Systems", &sys).await;
    assert_eq!(created.status, 201, "read-only properties may be set on create: {}", created.body);

    let cases = [
        (json!({"PowerState": "Off"}), "PropertyNotWritable", "PowerState"),
        (json!({"Status": {"State": "Disabled"}}), "PropertyNotWritable", "Status/State"),
        (json!({"Bogus": 1}), "PropertyUnknown", "Bogus"),
        (json!({"Boot": {"Bogus": 1}}), "PropertyUnknown", "Boot/Bogus"),
        (json!({"AssetTag": 5}), "PropertyValueTypeError", "AssetTag"),
        (json!({"Boot": {"BootSourceOverrideTarget": "Nope"}}), "PropertyValueError", "Boot/BootSourceOverrideTarget"),
    ];
    for (delta, id, property) in cases {
        let r = s.patch(uri, &delta).await;
        assert_redfish_error(&r, 400, id);
        let args = &r.body["error"]["@Message.ExtendedInfo"][0]["MessageArgs"];
        assert!(args.as_array().unwrap().iter().any(|a| a == property), "{delta}: {}", r.body);
    }
    assert_eq!(s.get(uri).await.body, created.body, "refused writes changed nothing");

    let r = s.patch(uri, &json!({"PowerState": "On", "Name": "validated", "AssetTag": "b"})).await;
    assert_eq!(r.status, 200, "unchanged read-only values pass: {}", r.body);
    let mut put = r.body.clone();
    put["AssetTag"] = json!("c");
    let r = s.put(uri, &put).await;
    assert_eq!(r.status, 200, "GET-modify-PUT passes: {}", r.body);
    assert_eq!(r.body["AssetTag"], "c");

    let bad = json!({"@odata.type": SYSTEM, "Id": "v2", "Name": "bad", "Bogus": true});
    assert_redfish_error(&s.post("/redfish/v1/Systems", &bad).await, 400, "PropertyUnknown");
    assert_eq!(s.get("/redfish/v1/Systems/v2").await.status, 404);
    s.stop().await;
}

/// Without `schema.dir` nothing is validated (the behaviour before schema support).
#[tokio::test]
async fn no_bundle_no_validation() {
    let s = server(None).await;
    let sys = json!({"@odata.type": SYSTEM, "Id": "n1", "Name": "n", "Bogus": 1});
    assert_eq!(s.post("/redfish/v1/Systems", &sys).await.status, 201);
    assert_eq!(s.patch("/redfish/v1/Systems/n1", &json!({"PowerState": 7})).await.status, 200);
    s.stop().await;
}

/// The service's own hooks still work under validation: subscriptions and accounts are created
/// and changed with the bodies clients send (the validator sees the client's body, not what
/// the hooks add).
#[tokio::test]
async fn service_resources_under_validation() {
    let Some(dir) = bundle() else { return };
    let s = server(Some(&dir)).await;
    let sub = json!({"Destination": "http://127.0.0.1:9/events", "Protocol": "Redfish", "Context": "c1"});
    let r = s.post("/redfish/v1/EventService/Subscriptions", &sub).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let sub_uri = r.body["@odata.id"].as_str().unwrap().to_string();
    assert_eq!(s.patch(&sub_uri, &json!({"Context": "c2"})).await.status, 200);
    assert_redfish_error(&s.patch(&sub_uri, &json!({"Context": 5})).await, 400, "PropertyValueTypeError");
    // Destination is read-only in the EventDestination schema.
    assert_redfish_error(
        &s.patch(&sub_uri, &json!({"Destination": "http://127.0.0.1:9/x"})).await,
        400,
        "PropertyNotWritable",
    );

    let account = json!({"UserName": "schema-user", "Password": "schema-user-password-1", "RoleId": "Operator"});
    let r = s.post("/redfish/v1/AccountService/Accounts", &account).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let acc_uri = r.body["@odata.id"].as_str().unwrap().to_string();
    let r = s.patch(&acc_uri, &json!({"Password": "schema-user-password-2", "RoleId": "ReadOnly"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_redfish_error(&s.patch(&acc_uri, &json!({"Bogus": 1})).await, 400, "PropertyUnknown");
    s.stop().await;
}

/// `excerpt` keeps the properties the bundle annotates as excerpt (plus identity).
#[tokio::test]
async fn excerpt_uses_the_bundle() {
    let Some(dir) = bundle() else { return };
    let s = server(Some(&dir)).await;
    let chassis =
        json!({"@odata.type": "#Chassis.v1_28_0.Chassis", "Id": "c1", "Name": "c1", "ChassisType": "RackMount"});
    assert_eq!(s.post("/redfish/v1/Chassis", &chassis).await.status, 201);
    let sensor = json!({
        "@odata.type": "#Sensor.v1_12_0.Sensor", "Id": "t1", "Name": "Inlet",
        "Reading": 21.5, "ReadingUnits": "Cel", "ReadingType": "Temperature"
    });
    let r = s.post("/redfish/v1/Chassis/c1/Sensors", &sensor).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = s.get("/redfish/v1/Chassis/c1/Sensors/t1?excerpt").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body,
        json!({
            "@odata.id": "/redfish/v1/Chassis/c1/Sensors/t1",
            "@odata.type": "#Sensor.v1_12_0.Sensor",
            "Reading": 21.5
        })
    );
    s.stop().await;
}
