//! PATCH and PUT semantics, identity protection, and writes refused on collections (issue 4).

use serde_json::{json, Value};
use sunfish_tests::{assert_redfish_error, Client, TestServer, BACKENDS};

const SYSTEM: &str = "#ComputerSystem.v1_20_0.ComputerSystem";
const URI: &str = "/redfish/v1/Systems/p1";

async fn seed_system(c: &Client) -> Value {
    let body = json!({
        "@odata.type": SYSTEM, "Id": "p1", "Name": "patch me",
        "Status": {"State": "Enabled", "Health": "OK"},
        "Boot": {"BootSourceOverrideTarget": "Pxe", "Modes": {"A": 1, "B": 2}},
        "HostingRoles": ["ApplicationServer", "StorageServer"],
        "Links": {"Chassis": [{"@odata.id": "/redfish/v1/Chassis/c1"}]}
    });
    let r = c.post("/redfish/v1/Systems", &body).await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body
}

/// PATCH merges nested objects key by key (`{"Status":{"State":"Disabled"}}` keeps
/// `Status.Health`; the reference replaced the whole `Status`), replaces arrays, and answers
/// 200 with the merged resource, which GET then returns.
#[tokio::test]
async fn patch_merges_objects_and_replaces_arrays() {
    for b in BACKENDS {
        let s = TestServer::start(b).await;
        let mut expected = seed_system(&s).await;

        let r = s.patch(URI, &json!({"Status": {"State": "Disabled"}, "Boot": {"Modes": {"B": 3}}})).await;
        assert_eq!(r.status, 200, "{b:?}: {}", r.body);
        expected["Status"] = json!({"State": "Disabled", "Health": "OK"});
        expected["Boot"] = json!({"BootSourceOverrideTarget": "Pxe", "Modes": {"A": 1, "B": 3}});
        assert_eq!(r.body, expected, "{b:?}");

        let r = s.patch(URI, &json!({"HostingRoles": ["Switch"], "Links": {"Chassis": []}, "AssetTag": "t"})).await;
        assert_eq!(r.status, 200, "{b:?}: {}", r.body);
        expected["HostingRoles"] = json!(["Switch"]);
        expected["Links"] = json!({"Chassis": []});
        expected["AssetTag"] = json!("t");
        assert_eq!(r.body, expected, "{b:?}");
        assert_eq!(s.get(URI).await.body, expected, "{b:?}: GET after PATCH");
        s.stop().await;
    }
}

/// PATCH or PUT changing `@odata.id`, `@odata.type` or `Id` is 400 `PropertyNotWritable` and
/// changes nothing (the reference wrote over another resource's file).
#[tokio::test]
async fn identity_properties_are_not_writable() {
    for b in BACKENDS {
        let s = TestServer::start(b).await;
        let before = seed_system(&s).await;
        // A second resource that a changed @odata.id could clobber.
        let other = json!({"@odata.type": SYSTEM, "Id": "p2", "Name": "other"});
        assert_eq!(s.post("/redfish/v1/Systems", &other).await.status, 201);
        let other_before = s.get("/redfish/v1/Systems/p2").await.body;
        for delta in [
            json!({"@odata.id": "/redfish/v1/Systems/p2", "Name": "x"}),
            json!({"@odata.type": "#Chassis.v1_25_0.Chassis"}),
            json!({"Id": "p2"}),
        ] {
            let r = s.patch(URI, &delta).await;
            assert_redfish_error(&r, 400, "PropertyNotWritable");
            let mut full = before.clone();
            if let (Some(o), Some(d)) = (full.as_object_mut(), delta.as_object()) {
                o.extend(d.clone());
            }
            let r = s.put(URI, &full).await;
            assert_redfish_error(&r, 400, "PropertyNotWritable");
        }
        assert_eq!(s.get(URI).await.body, before, "{b:?}: a refused write changed the resource");
        assert_eq!(s.get("/redfish/v1/Systems/p2").await.body, other_before, "{b:?}: another resource changed");
        s.stop().await;
    }
}

/// Echoing the current `@odata.id`, `@odata.type` and `Id` in a PATCH (as reference agents do)
/// is accepted.
#[tokio::test]
async fn patch_echoing_identity_is_accepted() {
    for b in BACKENDS {
        let s = TestServer::start(b).await;
        let before = seed_system(&s).await;
        let delta = json!({"@odata.id": URI, "@odata.type": SYSTEM, "Id": "p1", "Name": "renamed"});
        let r = s.patch(URI, &delta).await;
        assert_eq!(r.status, 200, "{b:?}: {}", r.body);
        let mut expected = before.clone();
        expected["Name"] = json!("renamed");
        assert_eq!(r.body, expected, "{b:?}");
        // The whole current body patched onto itself is a no-op that succeeds.
        let r = s.patch(URI, &expected).await;
        assert_eq!(r.status, 200, "{b:?}: {}", r.body);
        assert_eq!(r.body, expected, "{b:?}");
        s.stop().await;
    }
}

/// PUT replaces the whole resource (properties not sent are gone; identity is kept) and answers
/// 200 with it; PUT on a missing resource is 404 `ResourceNotFound` and creates nothing.
#[tokio::test]
async fn put_replaces_whole_resource_and_404s_when_missing() {
    for b in BACKENDS {
        let s = TestServer::start(b).await;
        seed_system(&s).await;
        let r = s.put(URI, &json!({"@odata.type": SYSTEM, "Name": "replaced", "PowerState": "Off"})).await;
        assert_eq!(r.status, 200, "{b:?}: {}", r.body);
        let expected =
            json!({"@odata.id": URI, "@odata.type": SYSTEM, "Id": "p1", "Name": "replaced", "PowerState": "Off"});
        assert_eq!(r.body, expected, "{b:?}");
        assert_eq!(s.get(URI).await.body, expected, "{b:?}");
        // Full body with identity echoed is fine too.
        let full = json!({"@odata.id": URI, "@odata.type": SYSTEM, "Id": "p1", "Name": "again"});
        let r = s.put(URI, &full).await;
        assert_eq!(r.status, 200, "{b:?}: {}", r.body);
        assert_eq!(s.get(URI).await.body, full, "{b:?}");

        let r = s.put("/redfish/v1/Systems/missing", &json!({"@odata.type": SYSTEM, "Name": "x"})).await;
        assert_redfish_error(&r, 404, "ResourceNotFound");
        assert_eq!(s.get("/redfish/v1/Systems/missing").await.status, 404, "{b:?}");
        let r = s.patch("/redfish/v1/Systems/missing", &json!({"Name": "x"})).await;
        assert_redfish_error(&r, 404, "ResourceNotFound");
        s.stop().await;
    }
}

/// PATCH, PUT and DELETE on a collection are 405 `OperationNotAllowed` with an `Allow` header
/// that lists GET and POST but not PATCH; the collection is unchanged.
#[tokio::test]
async fn writes_on_collection_are_405_with_allow() {
    for b in BACKENDS {
        let s = TestServer::start(b).await;
        seed_system(&s).await;
        let before = s.get("/redfish/v1/Systems").await.body;
        let body = json!({"Name": "renamed collection"});
        for (method, reply) in [
            ("PATCH", s.patch("/redfish/v1/Systems", &body).await),
            ("PUT", s.put("/redfish/v1/Systems", &body).await),
            ("DELETE", s.delete("/redfish/v1/Systems").await),
        ] {
            assert_redfish_error(&reply, 405, "OperationNotAllowed");
            let allow: Vec<&str> = reply.header("allow").split(',').map(str::trim).collect();
            assert!(allow.contains(&"GET") && allow.contains(&"POST"), "{b:?} {method}: Allow {allow:?}");
            assert!(!allow.contains(&"PATCH") && !allow.contains(&"DELETE"), "{b:?} {method}: Allow {allow:?}");
        }
        assert_eq!(s.get("/redfish/v1/Systems").await.body, before, "{b:?}");
        assert_eq!(s.get(URI).await.status, 200, "{b:?}");
        s.stop().await;
    }
}

/// The service root is read-only (405 with `Allow: GET, HEAD`); a PATCH of annotations that
/// restate the resource is 400 `NoOperation`; `POST <collection>/Members` creates in the
/// collection; a request for another OData version is 412.
#[tokio::test]
async fn protocol_details() {
    let s = sunfish_tests::TestServer::start(sunfish_tests::Backend::Memory).await;
    for m in [reqwest::Method::PATCH, reqwest::Method::PUT, reqwest::Method::POST, reqwest::Method::DELETE] {
        let r = s.send(m.clone(), "/redfish/v1", Some(&serde_json::json!({"Name": "x"})), &[]).await;
        assert_eq!(r.status, 405, "{m}");
        assert_eq!(r.header("Allow"), "GET, HEAD", "{m}");
    }
    let sys = s
        .post("/redfish/v1/Systems", &serde_json::json!({"@odata.type": "#ComputerSystem.v1_22_0.ComputerSystem"}))
        .await;
    let uri = sys.body["@odata.id"].as_str().unwrap_or_default().to_string();
    let r = s.patch(&uri, &serde_json::json!({"@odata.id": format!("{uri}/")})).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.message_id(), "NoOperation");
    let r = s
        .post(
            "/redfish/v1/Systems/Members",
            &serde_json::json!({"@odata.type": "#ComputerSystem.v1_22_0.ComputerSystem", "Id": "viaMembers"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["@odata.id"], "/redfish/v1/Systems/viaMembers");
    let r = s.send(reqwest::Method::GET, "/redfish/v1", None, &[("OData-Version", "4.1")]).await;
    assert_eq!(r.status, 412);
    assert_eq!(s.send(reqwest::Method::GET, "/redfish/v1", None, &[("OData-Version", "4.0")]).await.status, 200);
    s.stop().await;
}
