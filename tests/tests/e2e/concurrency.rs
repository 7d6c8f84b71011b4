//! Concurrent writes into one collection lose nothing (issue 9; the reference lost Members).

use std::collections::BTreeSet;

use futures::stream::{self, StreamExt};
use serde_json::json;
use sunfish_tests::{assert_collection_consistent, config_for_root, Backend, TestServer, BACKENDS};

const POSTS: usize = 1_000;
const PARALLEL: usize = 32;

async fn storm(s: &TestServer, b: Backend) {
    let before = assert_collection_consistent(s, "/redfish/v1/Systems").await.len();
    let statuses: Vec<(usize, u16, String)> = stream::iter(0..POSTS)
        .map(|i| {
            let c = s.client.clone();
            async move {
                let body = json!({"@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem", "Name": format!("n{i}")});
                let r = c.post("/redfish/v1/Systems", &body).await;
                (i, r.status.as_u16(), r.header("location").to_string())
            }
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let failed: Vec<_> = statuses.iter().filter(|(_, st, _)| *st != 201).collect();
    assert!(failed.is_empty(), "{b:?}: {} POSTs failed, e.g. {:?}", failed.len(), failed.first());
    let locations: BTreeSet<&str> = statuses.iter().map(|(_, _, l)| l.as_str()).collect();
    assert_eq!(locations.len(), POSTS, "{b:?}: Locations are not distinct");

    let members = assert_collection_consistent(s, "/redfish/v1/Systems").await;
    assert_eq!(members.len(), before + POSTS, "{b:?}: members lost or duplicated");
    let listed: BTreeSet<&str> = members.iter().map(String::as_str).collect();
    assert!(locations.is_subset(&listed), "{b:?}: a created member is missing from Members");
}

/// 1,000 POSTs, 32 at a time, into one collection: every one is 201 with its own Location, and
/// the collection then lists exactly 1,000 new members with `Members@odata.count` equal to the
/// total; on fs the same holds after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_posts_into_one_collection_lose_nothing() {
    for b in BACKENDS {
        let s = TestServer::start(b).await;
        storm(&s, b).await;
        if let Some(dir) = s.stop().await {
            let s = TestServer::start_with(config_for_root(&dir.path().join("store"), false), Some(dir)).await;
            let r = s.get("/redfish/v1/Systems").await;
            assert_eq!(r.body["Members@odata.count"], POSTS, "{b:?}: after restart");
            assert_eq!(r.body["Members"].as_array().map(Vec::len), Some(POSTS), "{b:?}: after restart");
            s.stop().await;
        }
    }
}
