//! DELETE: subtree, parent entry and every link to the deleted resource go; the root stays
//! (issue 5).

use serde_json::{json, Value};
use sunfish_tests::{assert_collection_consistent, assert_redfish_error, config_for_root, TestServer, BACKENDS};

const SYSTEM: &str = "#ComputerSystem.v1_20_0.ComputerSystem";
const GONE: &str = "/redfish/v1/Systems/gone";
const KEPT: &str = "/redfish/v1/Systems/kept";

/// Every string in `v` (keys and values) that names `uri` or something below it.
fn mentions(v: &Value, uri: &str) -> Vec<String> {
    let hit = |s: &str| s == uri || s.starts_with(&format!("{uri}/")) || s.starts_with(&format!("{uri}#"));
    let mut out = Vec::new();
    match v {
        Value::String(s) if hit(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| out.extend(mentions(x, uri))),
        Value::Object(o) => o.values().for_each(|x| out.extend(mentions(x, uri))),
        _ => {}
    }
    out
}

/// Builds: two systems, a Memory subtree under the doomed one, and a chassis linking to both
/// systems in `Links` arrays, single-valued links inside and outside `Links`, and arrays outside.
async fn build_tree(s: &TestServer) {
    for id in ["gone", "kept"] {
        let r = s.post("/redfish/v1/Systems", &json!({"@odata.type": SYSTEM, "Id": id})).await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let mem = json!({"@odata.type": "#Memory.v1_20_0.Memory", "Id": "m1"});
    assert_eq!(s.post(&format!("{GONE}/Memory"), &mem).await.status, 201);
    let chassis = json!({
        "@odata.type": "#Chassis.v1_25_0.Chassis", "Id": "c1", "Name": "chassis",
        "Links": {
            "ComputerSystems": [{"@odata.id": GONE}, {"@odata.id": KEPT}],
            "ComputerSystems@odata.count": 2,
            "ManagedBy": {"@odata.id": GONE},
            "PoweredBy": [GONE, KEPT],
            "Memory": [{"@odata.id": format!("{GONE}/Memory/m1")}]
        },
        "PrimarySystem": {"@odata.id": GONE},
        "KeptSystem": {"@odata.id": KEPT},
        "Related": [{"@odata.id": GONE}, {"@odata.id": KEPT}],
        "Oem": {"Vendor": {"Host": {"@odata.id": GONE}, "Dimm": {"@odata.id": format!("{GONE}/Memory/m1")}}}
    });
    assert_eq!(s.post("/redfish/v1/Chassis", &chassis).await.status, 201);
    // The kept system links back to the doomed one as well.
    assert_eq!(s.patch(KEPT, &json!({"Links": {"Peers": [{"@odata.id": GONE}]}})).await.status, 200);
}

/// Checks the state after `DELETE GONE`.
async fn assert_deleted(s: &TestServer, b: sunfish_tests::Backend) {
    for p in [GONE, &format!("{GONE}/Memory"), &format!("{GONE}/Memory/m1")] {
        assert_redfish_error(&s.get(p).await, 404, "ResourceNotFound");
    }
    assert_eq!(assert_collection_consistent(s, "/redfish/v1/Systems").await, [KEPT], "{b:?}");
    let chassis = s.get("/redfish/v1/Chassis/c1").await.body;
    assert!(mentions(&chassis, GONE).is_empty(), "{b:?}: links to the deleted system remain: {chassis:#}");
    assert_eq!(chassis["Links"]["ComputerSystems"], json!([{"@odata.id": KEPT}]), "{b:?}");
    assert_eq!(chassis["Links"]["ComputerSystems@odata.count"], 1, "{b:?}");
    assert_eq!(chassis["Links"]["PoweredBy"], json!([KEPT]), "{b:?}");
    assert_eq!(chassis["KeptSystem"], json!({"@odata.id": KEPT}), "{b:?}");
    assert_eq!(chassis["Related"], json!([{"@odata.id": KEPT}]), "{b:?}");
    assert_eq!(chassis["Name"], "chassis", "{b:?}");
    let kept = s.get(KEPT).await.body;
    assert!(mentions(&kept, GONE).is_empty(), "{b:?}: {kept:#}");
}

/// DELETE answers 204 and removes the subtree, the parent's member entry (count updated) and
/// every link to the deleted resources elsewhere: array entries and single-valued
/// `{"@odata.id"}` links, inside `Links` and outside (the reference kept the last two). On fs
/// the result survives a restart.
#[tokio::test]
async fn delete_removes_subtree_member_entry_and_every_link() {
    for b in BACKENDS {
        let s = TestServer::start(b).await;
        build_tree(&s).await;
        let r = s.delete(GONE).await;
        assert_eq!(r.status, 204, "{b:?}: {}", r.body);
        assert_deleted(&s, b).await;
        let r = s.delete(GONE).await;
        assert_redfish_error(&r, 404, "ResourceNotFound");

        if let Some(dir) = s.stop().await {
            let s = TestServer::start_with(config_for_root(&dir.path().join("store"), false), Some(dir)).await;
            assert_deleted(&s, b).await;
            s.stop().await;
        }
    }
}

/// Deleting a member of a collection created by POST leaves the (now empty) collection
/// consistent.
#[tokio::test]
async fn delete_last_member_leaves_empty_consistent_collection() {
    for b in BACKENDS {
        let s = TestServer::start(b).await;
        build_tree(&s).await;
        assert_eq!(s.delete(&format!("{KEPT}/Nothing")).await.status, 404, "{b:?}");
        let mem = json!({"@odata.type": "#Memory.v1_20_0.Memory", "Id": "m9"});
        assert_eq!(s.post(&format!("{KEPT}/Memory"), &mem).await.status, 201, "{b:?}");
        assert_eq!(s.delete(&format!("{KEPT}/Memory/m9")).await.status, 204, "{b:?}");
        assert!(assert_collection_consistent(&s, &format!("{KEPT}/Memory")).await.is_empty(), "{b:?}");
        assert_eq!(s.get(KEPT).await.body["Memory"], json!({"@odata.id": format!("{KEPT}/Memory")}), "{b:?}");
        s.stop().await;
    }
}

/// Deleting the service root (either slash form) is 405 and it stays.
#[tokio::test]
async fn delete_service_root_is_405() {
    for b in BACKENDS {
        let s = TestServer::start(b).await;
        let before = s.get("/redfish/v1").await.body;
        for p in ["/redfish/v1", "/redfish/v1/"] {
            let r = s.delete(p).await;
            assert_redfish_error(&r, 405, "OperationNotAllowed");
            assert!(r.header("allow").contains("GET"), "{b:?}: Allow {}", r.header("allow"));
            assert!(!r.header("allow").contains("DELETE"), "{b:?}: Allow {}", r.header("allow"));
        }
        assert_eq!(s.get("/redfish/v1").await.body, before, "{b:?}");
        assert_eq!(s.get("/redfish/v1/Systems").await.status, 200, "{b:?}");
        s.stop().await;
    }
}
