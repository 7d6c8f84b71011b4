//! The service root answers on both backends.

use sunfish_tests::{TestServer, BACKENDS};

/// `GET /redfish/v1` serves the seeded service root.
#[tokio::test]
async fn service_root() {
    for b in BACKENDS {
        let s = TestServer::start(b).await;
        let r = s.get("/redfish/v1").await;
        assert_eq!(r.status, 200, "{b:?}");
        assert_eq!(r.body["@odata.id"], "/redfish/v1");
        s.stop().await;
    }
}
