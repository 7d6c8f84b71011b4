//! Conditional requests: ETag on GET, If-Match on writes, If-None-Match on reads (issue 8).

use serde_json::json;
use sunfish_tests::{assert_redfish_error, TestServer, BACKENDS};

const URI: &str = "/redfish/v1/Systems/e1";

/// GET carries a quoted ETag; PATCH with `If-Match` of the current ETag is 200 (and moves the
/// ETag on), with a stale one 412 `PreconditionFailed` and no change; PUT and DELETE follow the
/// same rule.
#[tokio::test]
async fn if_match_guards_writes() {
    for b in BACKENDS {
        let s = TestServer::start(b).await;
        let body = json!({"@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem", "Id": "e1", "Name": "a"});
        assert_eq!(s.post("/redfish/v1/Systems", &body).await.status, 201);
        let g = s.get(URI).await;
        let etag = g.header("etag").to_string();
        assert!(etag.len() > 2 && etag.starts_with('"') && etag.ends_with('"'), "{b:?}: ETag {etag:?}");
        assert_eq!(s.get(URI).await.header("etag"), etag, "{b:?}: ETag changed without a write");

        let ok = s.send(reqwest::Method::PATCH, URI, Some(&json!({"Name": "b"})), &[("If-Match", &etag)]).await;
        assert_eq!(ok.status, 200, "{b:?}: {}", ok.body);
        let fresh = ok.header("etag").to_string();
        assert!(!fresh.is_empty() && fresh != etag, "{b:?}: ETag after PATCH {fresh:?} (was {etag:?})");
        assert_eq!(s.get(URI).await.header("etag"), fresh, "{b:?}");

        let stale = s.send(reqwest::Method::PATCH, URI, Some(&json!({"Name": "c"})), &[("If-Match", &etag)]).await;
        assert_redfish_error(&stale, 412, "PreconditionFailed");
        let put = json!({"@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem", "Name": "d"});
        let stale = s.send(reqwest::Method::PUT, URI, Some(&put), &[("If-Match", &etag)]).await;
        assert_redfish_error(&stale, 412, "PreconditionFailed");
        let stale = s.send(reqwest::Method::DELETE, URI, None, &[("If-Match", &etag)]).await;
        assert_redfish_error(&stale, 412, "PreconditionFailed");
        let garbage = s.send(reqwest::Method::PATCH, URI, Some(&json!({"Name": "e"})), &[("If-Match", "\"zz\"")]).await;
        assert_redfish_error(&garbage, 412, "PreconditionFailed");
        assert_eq!(s.get(URI).await.body["Name"], "b", "{b:?}: a refused write changed the resource");

        let ok = s.send(reqwest::Method::PUT, URI, Some(&put), &[("If-Match", &fresh)]).await;
        assert_eq!(ok.status, 200, "{b:?}: {}", ok.body);
        let latest = ok.header("etag").to_string();
        let wildcard = s.send(reqwest::Method::PATCH, URI, Some(&json!({"Name": "w"})), &[("If-Match", "*")]).await;
        assert_eq!(wildcard.status, 200, "{b:?}: If-Match * must match any current resource");
        let latest_after = wildcard.header("etag").to_string();
        assert_ne!(latest, latest_after, "{b:?}");
        let ok = s.send(reqwest::Method::DELETE, URI, None, &[("If-Match", &latest_after)]).await;
        assert_eq!(ok.status, 204, "{b:?}: {}", ok.body);
        s.stop().await;
    }
}

/// `If-None-Match` with the current ETag is 304 with no body; with another ETag, 200 with the
/// resource.
#[tokio::test]
async fn if_none_match_current_is_304() {
    for b in BACKENDS {
        let s = TestServer::start(b).await;
        let g = s.get("/redfish/v1").await;
        let etag = g.header("etag").to_string();
        assert!(!etag.is_empty(), "{b:?}: no ETag on the service root");
        let r = s.send(reqwest::Method::GET, "/redfish/v1", None, &[("If-None-Match", &etag)]).await;
        assert_eq!(r.status, 304, "{b:?}");
        assert!(r.body.is_null(), "{b:?}: 304 with a body");
        assert_eq!(r.header("etag"), etag, "{b:?}");
        let r = s
            .send(reqwest::Method::GET, "/redfish/v1", None, &[("If-None-Match", "\"no-such-tag\", W/\"other\"")])
            .await;
        assert_eq!(r.status, 200, "{b:?}");
        assert_eq!(r.body, g.body, "{b:?}");

        // After a change the old ETag no longer matches (the root is read-only: use a service).
        let etag = s.get("/redfish/v1/EventService").await.header("etag").to_string();
        assert_eq!(s.patch("/redfish/v1/EventService", &json!({"Name": "renamed"})).await.status, 200, "{b:?}");
        let r = s.send(reqwest::Method::GET, "/redfish/v1/EventService", None, &[("If-None-Match", &etag)]).await;
        assert_eq!(r.status, 200, "{b:?}");
        assert_eq!(r.body["Name"], "renamed", "{b:?}");
        s.stop().await;
    }
}

/// Two concurrent PATCHes carrying the same ETag: exactly one wins, the other gets 412 (the
/// check is a compare-and-swap inside storage, not a read before the write), on both backends.
#[tokio::test]
async fn if_match_race_has_one_winner() {
    for b in BACKENDS {
        let s = TestServer::start(b).await;
        let r = s
            .post(
                "/redfish/v1/Systems",
                &json!({"@odata.type": "#ComputerSystem.v1_22_0.ComputerSystem", "Id": "race"}),
            )
            .await;
        assert_eq!(r.status, 201, "{b:?}");
        for round in 0..20 {
            let etag = s.get("/redfish/v1/Systems/race").await.header("etag").to_string();
            let (c1, c2) = (s.client.clone(), s.client.clone());
            let (e1, e2) = (etag.clone(), etag.clone());
            let a = tokio::spawn(async move {
                c1.send(
                    reqwest::Method::PATCH,
                    "/redfish/v1/Systems/race",
                    Some(&json!({"Name": format!("a{round}")})),
                    &[("If-Match", e1.as_str())],
                )
                .await
            });
            let bb = tokio::spawn(async move {
                c2.send(
                    reqwest::Method::PATCH,
                    "/redfish/v1/Systems/race",
                    Some(&json!({"Name": format!("b{round}")})),
                    &[("If-Match", e2.as_str())],
                )
                .await
            });
            let (ra, rb) = (a.await.unwrap_or_else(|e| panic!("{e}")), bb.await.unwrap_or_else(|e| panic!("{e}")));
            let mut statuses = [ra.status.as_u16(), rb.status.as_u16()];
            statuses.sort_unstable();
            assert_eq!(statuses, [200, 412], "{b:?} round {round}");
        }
        s.stop().await;
    }
}
