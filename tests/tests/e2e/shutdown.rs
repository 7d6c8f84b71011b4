//! Graceful shutdown of the real binary on SIGTERM (issue 15).

use std::time::Duration;

use serde_json::json;
use sunfish_tests::{assert_collection_consistent, fs_env, BinaryServer};

const SYSTEM: &str = "#ComputerSystem.v1_20_0.ComputerSystem";

/// On SIGTERM the binary exits 0; on fs (fsync off, so only the shutdown flush makes them
/// durable) every write acknowledged before the signal is present after a restart.
#[tokio::test]
async fn sigterm_exits_zero_and_keeps_acknowledged_writes() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let root = dir.path().join("store");
    let env = fs_env(&root, false);
    let s = BinaryServer::start_env(&[], &env).await;
    for i in 0..20 {
        let r = s.post("/redfish/v1/Systems", &json!({"@odata.type": SYSTEM, "Id": format!("s{i}"), "N": i})).await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    assert_eq!(s.patch("/redfish/v1/Systems/s3", &json!({"N": 300})).await.status, 200);
    assert_eq!(s.delete("/redfish/v1/Systems/s4").await.status, 204);
    let mem = json!({"@odata.type": "#Memory.v1_20_0.Memory", "Id": "m"});
    assert_eq!(s.post("/redfish/v1/Systems/s5/Memory", &mem).await.status, 201);
    let status = s.terminate(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM: {status:?}");

    let s = BinaryServer::start_env(&[], &env).await;
    let members = assert_collection_consistent(&s, "/redfish/v1/Systems").await;
    assert_eq!(members.len(), 19, "{members:?}");
    for i in (0..20).filter(|i| *i != 4) {
        let r = s.get(&format!("/redfish/v1/Systems/s{i}")).await;
        assert_eq!(r.status, 200, "s{i} lost");
        assert_eq!(r.body["N"], if i == 3 { 300 } else { i }, "s{i}");
    }
    assert_eq!(s.get("/redfish/v1/Systems/s4").await.status, 404);
    assert_eq!(assert_collection_consistent(&s, "/redfish/v1/Systems/s5/Memory").await.len(), 1);
    let status = s.terminate(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0), "second SIGTERM: {status:?}");
}

/// On memory too, SIGTERM ends the process with exit status 0.
#[tokio::test]
async fn sigterm_exits_zero_on_memory() {
    let env = [("SUNFISH__STORAGE__BACKEND".to_string(), "memory".to_string())];
    let s = BinaryServer::start_env(&[], &env).await;
    assert_eq!(s.get("/redfish/v1").await.status, 200);
    let status = s.terminate(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM: {status:?}");
}
