//! Service discovery: `/redfish` and the service root in both slash forms (issue 1).

use serde_json::json;
use sunfish_tests::{TestServer, BACKENDS};

/// `GET /redfish` answers exactly `{"v1":"/redfish/v1/"}` as JSON.
#[tokio::test]
async fn redfish_lists_version_v1() {
    for b in BACKENDS {
        let s = TestServer::start(b).await;
        let r = s.get("/redfish").await;
        assert_eq!(r.status, 200, "{b:?}");
        assert_eq!(r.body, json!({"v1": "/redfish/v1/"}), "{b:?}");
        assert!(r.header("content-type").starts_with("application/json"), "{b:?}: {}", r.header("content-type"));
        s.stop().await;
    }
}

/// `/redfish/v1` and `/redfish/v1/` both serve the same service root (the reference answered
/// 404 without the slash).
#[tokio::test]
async fn service_root_with_and_without_trailing_slash() {
    for b in BACKENDS {
        let s = TestServer::start(b).await;
        let bare = s.get("/redfish/v1").await;
        let slash = s.get("/redfish/v1/").await;
        assert_eq!(bare.status, 200, "{b:?}");
        assert_eq!(slash.status, 200, "{b:?}");
        assert_eq!(bare.body, slash.body, "{b:?}");
        assert_eq!(bare.body["@odata.id"], "/redfish/v1", "{b:?}");
        assert!(bare.body["@odata.type"].as_str().is_some_and(|t| t.starts_with("#ServiceRoot.")), "{b:?}");
        assert_eq!(bare.header("OData-Version"), "4.0", "{b:?}");
        s.stop().await;
    }
}
