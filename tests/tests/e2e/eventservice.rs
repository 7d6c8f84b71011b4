//! The EventService (issue "EventService"): the service resource, subscription validation,
//! filters, Context and secret HttpHeaders, `/EventListener` answers, retry policies, PATCH and
//! DELETE of subscriptions, delivery counters, restarts and crashes, and isolation of a dead
//! subscriber. Every delivery goes to a real HTTP receiver on loopback ([`crate::receiver`]).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sunfish_tests::{assert_error_body, fs_env, BinaryServer, Client, TestServer, BACKENDS};

use crate::receiver::{
    closed_port, event, fast_config, get_until, marker, post_events, set_retry, subscribe, Mode, Receiver,
};

const SUBS: &str = "/redfish/v1/EventService/Subscriptions";
const WAIT: Duration = Duration::from_secs(15);

/// The markers of every delivered test event at `path` (events the service raised itself, which
/// carry no MessageArgs, are left out).
fn marks(rx: &Receiver, path: &str) -> Vec<String> {
    rx.events_at(path).iter().map(marker).filter(|m| !m.is_empty()).collect()
}

/// Creates a member `id` of `collection` with `odata_type`; asserts 201.
async fn create(c: &Client, collection: &str, odata_type: &str, id: &str) {
    let r = c.post(collection, &json!({"@odata.type": odata_type, "Id": id, "Name": id})).await;
    assert_eq!(r.status, 201, "create {collection}/{id}: {}", r.body);
}

async fn create_system(c: &Client, id: &str) {
    create(c, "/redfish/v1/Systems", "#ComputerSystem.v1_20_0.ComputerSystem", id).await;
}

/// `Oem.Sunfish.Delivery` of a subscription resource.
fn delivery(r: &sunfish_tests::Reply) -> &Value {
    &r.body["Oem"]["Sunfish"]["Delivery"]
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// The EventService resource shows `ServiceEnabled`, `DeliveryRetryAttempts`,
/// `DeliveryRetryIntervalSeconds`, `EventFormatTypes`, `RegistryPrefixes`, `ResourceTypes`,
/// `SubordinateResourcesSupported`, `ServerSentEventUri` and the `SubmitTestEvent` action; a
/// PATCH of `DeliveryRetryAttempts` (and of the interval, 0 included) is stored.
#[tokio::test]
async fn event_service_resource_shows_its_capabilities_and_takes_retry_settings() {
    for b in BACKENDS {
        let (cfg, dir) = fast_config(b);
        let s = TestServer::start_with(cfg, dir).await;
        let r = s.get("/redfish/v1/EventService").await;
        assert_eq!(r.status, 200, "{b:?}: {}", r.body);
        let v = &r.body;
        assert_eq!(v["ServiceEnabled"], true, "{b:?}: {v}");
        assert!(v["DeliveryRetryAttempts"].is_u64(), "{b:?}: {v}");
        assert!(v["DeliveryRetryIntervalSeconds"].is_u64(), "{b:?}: {v}");
        assert!(v["EventFormatTypes"].as_array().is_some_and(|a| a.contains(&json!("Event"))), "{b:?}: {v}");
        let prefixes = v["RegistryPrefixes"].as_array().cloned().unwrap_or_default();
        for p in ["ResourceEvent", "TaskEvent"] {
            assert!(prefixes.contains(&json!(p)), "{b:?}: RegistryPrefixes lacks {p}: {v}");
        }
        assert!(v["ResourceTypes"].is_array(), "{b:?}: {v}");
        assert_eq!(v["SubordinateResourcesSupported"], true, "{b:?}: {v}");
        assert_eq!(v["ServerSentEventUri"], "/redfish/v1/EventService/SSE", "{b:?}: {v}");
        assert_eq!(
            v["Actions"]["#EventService.SubmitTestEvent"]["target"],
            "/redfish/v1/EventService/Actions/EventService.SubmitTestEvent",
            "{b:?}: {v}"
        );

        let r = s.patch("/redfish/v1/EventService", &json!({"DeliveryRetryAttempts": 7})).await;
        assert_eq!(r.status, 200, "{b:?}: {}", r.body);
        assert_eq!(r.body["DeliveryRetryAttempts"], 7, "{b:?}");
        let r = s.patch("/redfish/v1/EventService", &json!({"DeliveryRetryIntervalSeconds": 0})).await;
        assert_eq!(r.status, 200, "{b:?}: {}", r.body);
        let r = s.get("/redfish/v1/EventService").await;
        assert_eq!(r.body["DeliveryRetryAttempts"], 7, "{b:?}");
        assert_eq!(r.body["DeliveryRetryIntervalSeconds"], 0, "{b:?}");
        s.stop().await;
    }
}

/// A subscription POST without `@odata.type` is 201; a `Destination` that is not http(s) or
/// not allowed by the outbound policy (10.x under the loopback-only default), a `Protocol`
/// other than Redfish, and include/exclude lists that contradict each other are 400, with
/// `MessageArgs[0]` naming the property; nothing refused is created.
#[tokio::test]
async fn subscription_creation_is_validated() {
    for b in BACKENDS {
        let (cfg, dir) = fast_config(b);
        let s = TestServer::start_with(cfg, dir).await;
        let rx = Receiver::start(Mode::Ok).await;

        let bad = [
            (json!({"Destination": "http://10.1.2.3:8080/events", "Protocol": "Redfish"}), "Destination"),
            (json!({"Destination": "ftp://127.0.0.1/events", "Protocol": "Redfish"}), "Destination"),
            (json!({"Destination": "not a url", "Protocol": "Redfish"}), "Destination"),
            (json!({"Destination": rx.url("/p"), "Protocol": "SNMPv2c"}), "Protocol"),
            (
                json!({"Destination": rx.url("/c"), "Protocol": "Redfish",
                    "RegistryPrefixes": ["Alpha"], "ExcludeRegistryPrefixes": ["Alpha"]}),
                "ExcludeRegistryPrefixes",
            ),
            (
                json!({"Destination": rx.url("/c"), "Protocol": "Redfish",
                    "MessageIds": ["Alpha.1.0.Ping"], "ExcludeMessageIds": ["Alpha.Ping"]}),
                "ExcludeMessageIds",
            ),
            (
                json!({"Destination": rx.url("/c"), "Protocol": "Redfish",
                    "MessageIds": ["Alpha.1.0.Ping"], "RegistryPrefixes": ["Beta"]}),
                "MessageIds",
            ),
            (
                json!({"Destination": rx.url("/c"), "Protocol": "Redfish",
                    "MessageIds": ["Alpha.1.0.Ping"], "ExcludeRegistryPrefixes": ["Alpha"]}),
                "MessageIds",
            ),
        ];
        for (body, prop) in &bad {
            let r = s.post(SUBS, body).await;
            assert_eq!(r.status, 400, "{b:?}: {body} → {}", r.body);
            assert_error_body(&r);
            assert_eq!(
                r.body["error"]["@Message.ExtendedInfo"][0]["MessageArgs"][0], *prop,
                "{b:?}: {body}: the error must name {prop}: {}",
                r.body
            );
        }
        let r = s.get(SUBS).await;
        assert_eq!(r.body["Members"], json!([]), "{b:?}: a refused subscription was created: {}", r.body);

        // No @odata.type: the collection implies EventDestination.
        let body = json!({"Destination": rx.url("/ok"), "Protocol": "Redfish", "Context": "c"});
        let r = s.post(SUBS, &body).await;
        assert_eq!(r.status, 201, "{b:?}: {}", r.body);
        let uri = r.header("location").to_string();
        let g = s.get(&uri).await;
        assert_eq!(g.status, 200, "{b:?}");
        assert!(g.body["@odata.type"].as_str().is_some_and(|t| t.contains("EventDestination")), "{b:?}: {}", g.body);
        assert_eq!(g.body["Destination"], rx.url("/ok"), "{b:?}");

        // A PATCH that makes the lists contradict is refused the same way.
        let r = s.patch(&uri, &json!({"RegistryPrefixes": ["A"], "ExcludeRegistryPrefixes": ["A"]})).await;
        assert_eq!(r.status, 400, "{b:?}: {}", r.body);
        assert_eq!(r.body["error"]["@Message.ExtendedInfo"][0]["MessageArgs"][0], "ExcludeRegistryPrefixes");
        let r = s.patch(&uri, &json!({"Destination": "http://10.9.9.9/x"})).await;
        assert_eq!(r.status, 400, "{b:?}: {}", r.body);
        assert_eq!(r.body["error"]["@Message.ExtendedInfo"][0]["MessageArgs"][0], "Destination");
        assert_eq!(s.get(&uri).await.body["Destination"], rx.url("/ok"), "{b:?}: a refused PATCH was stored");
        s.stop().await;
    }
}

/// Filters AND across properties (RegistryPrefixes/ExcludeRegistryPrefixes, MessageIds/
/// ExcludeMessageIds, ResourceTypes, OriginResources with and without SubordinateResources)
/// and OR within a list; a subscription without filters gets every event. Every event of an
/// envelope is routed (not just the first), each subscriber gets exactly its matching events,
/// and `/EventListener` answers the Ids of the subscriptions the envelope was queued for.
#[tokio::test]
async fn filters_and_across_properties_or_within_lists() {
    let (cfg, dir) = fast_config(sunfish_tests::Backend::Memory);
    let s = TestServer::start_with(cfg, dir).await;
    create_system(&s, "1").await;
    create_system(&s, "10").await;
    create(&s, "/redfish/v1/Chassis", "#Chassis.v1_23_0.Chassis", "1").await;
    let rx = Receiver::start(Mode::Ok).await;

    let filters = [
        ("/a", json!({})),
        ("/b", json!({"RegistryPrefixes": ["Alpha"], "ExcludeMessageIds": ["Alpha.1.0.Noise"]})),
        ("/c", json!({"MessageIds": ["Alpha.1.0.Ping", "Beta.1.0.Pong"]})),
        ("/d", json!({"ExcludeRegistryPrefixes": ["Alpha"]})),
        ("/e", json!({"ResourceTypes": ["ComputerSystem"], "RegistryPrefixes": ["Alpha"]})),
        ("/f", json!({"OriginResources": [{"@odata.id": "/redfish/v1/Systems/1"}], "SubordinateResources": true})),
        ("/g", json!({"OriginResources": [{"@odata.id": "/redfish/v1/Systems/1"}]})),
        ("/h", json!({"ResourceTypes": ["#Chassis.v1_0_0.Chassis"], "MessageIds": ["Gamma.1.0.Other"]})),
    ];
    let mut ids = std::collections::BTreeMap::new();
    for (path, f) in &filters {
        let (_, id) = subscribe(&s, &rx.url(path), f.clone()).await;
        ids.insert(*path, id);
    }
    let id = |paths: &[&str]| sorted(paths.iter().map(|p| ids[p].clone()).collect());
    let all: Vec<&str> = filters.iter().map(|(p, _)| *p).collect();

    let s1 = Some("/redfish/v1/Systems/1");
    let s10 = Some("/redfish/v1/Systems/10");
    let ch1 = Some("/redfish/v1/Chassis/1");
    let answer = post_events(
        &s,
        vec![
            event("Alpha.1.0.Ping", "e1", s1),
            event("Alpha.1.0.Noise", "e2", s1),
            event("Beta.1.0.Pong", "e3", s10),
            event("Gamma.1.0.Other", "e4", ch1),
            event("Alpha.1.0.Ping", "e5", Some("/redfish/v1/Systems/1/Bios")),
            event("Alpha.1.0.Ping", "e6", s10),
        ],
    )
    .await;
    assert_eq!(sorted(answer), id(&all), "envelope 1 is for every subscription");
    let answer = post_events(&s, vec![event("Gamma.1.0.Other", "e7", ch1)]).await;
    assert_eq!(sorted(answer), id(&["/a", "/d", "/h"]), "envelope 2");
    let answer = post_events(&s, vec![event("Delta.1.0.Nothing", "e8", s10)]).await;
    assert_eq!(sorted(answer), id(&["/a", "/d"]), "envelope 3");
    // A last envelope every subscription matches, so that once each has it, everything before
    // has been delivered (delivery is in order per subscription).
    let answer = post_events(&s, vec![event("Alpha.1.0.Ping", "z1", s1), event("Gamma.1.0.Other", "z2", ch1)]).await;
    assert_eq!(sorted(answer), id(&all), "envelope 4");

    let expected: [(&str, &[&str]); 8] = [
        ("/a", &["e1", "e2", "e3", "e4", "e5", "e6", "e7", "e8", "z1", "z2"]),
        ("/b", &["e1", "e5", "e6", "z1"]),
        ("/c", &["e1", "e3", "e5", "e6", "z1"]),
        ("/d", &["e3", "e4", "e7", "e8", "z2"]),
        ("/e", &["e1", "e2", "e6", "z1"]),
        ("/f", &["e1", "e2", "e5", "z1"]),
        ("/g", &["e1", "e2", "z1"]),
        ("/h", &["e4", "e7", "z2"]),
    ];
    for (path, want) in expected {
        let last = *want.last().unwrap_or(&"");
        eventually_marker(&rx, path, last).await;
        assert_eq!(marks(&rx, path), want, "events delivered to the subscription at {path}");
    }
    // The first envelope reached each subscriber as one delivery holding only its events.
    let first = rx.delivered_at("/c").into_iter().find(|a| a.events().iter().any(|e| marker(e) == "e1"));
    let first = first.unwrap_or_else(|| panic!("no delivery with e1 at /c"));
    let m: Vec<String> = first.events().iter().map(marker).collect();
    assert_eq!(m, ["e1", "e3", "e5", "e6"], "one envelope, the matching events in order");
    s.stop().await;
}

async fn eventually_marker(rx: &Receiver, path: &str, m: &str) {
    let what = format!("event {m} at {path}");
    sunfish_tests::eventually(&what, WAIT, || {
        let seen = marks(rx, path).iter().any(|x| x == m);
        async move { seen.then_some(()) }
    })
    .await;
}

/// Writes through the service raise ResourceCreated, ResourceChanged and ResourceRemoved with
/// `OriginOfCondition`, and subscription filters select them by type, MessageId (any registry
/// version) and origin.
#[tokio::test]
async fn resource_writes_raise_filtered_resource_events() {
    let (cfg, dir) = fast_config(sunfish_tests::Backend::Memory);
    let s = TestServer::start_with(cfg, dir).await;
    let rx = Receiver::start(Mode::Ok).await;
    subscribe(
        &s,
        &rx.url("/systems"),
        json!({"RegistryPrefixes": ["ResourceEvent"], "ResourceTypes": ["ComputerSystem"]}),
    )
    .await;
    subscribe(
        &s,
        &rx.url("/removed"),
        json!({"MessageIds": ["ResourceEvent.1.0.ResourceRemoved"],
            "OriginResources": [{"@odata.id": "/redfish/v1/Systems/7"}]}),
    )
    .await;

    create_system(&s, "7").await;
    let r = s.patch("/redfish/v1/Systems/7", &json!({"AssetTag": "rack-3"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    create(&s, "/redfish/v1/Chassis", "#Chassis.v1_23_0.Chassis", "c7").await;
    let r = s.delete("/redfish/v1/Systems/7").await;
    assert_eq!(r.status, 204, "{}", r.body);

    let got = sunfish_tests::eventually("three events at /systems", WAIT, || {
        let e = rx.events_at("/systems");
        async move { (e.len() >= 3).then_some(e) }
    })
    .await;
    let keys: Vec<&str> = got.iter().map(|e| e["MessageId"].as_str().unwrap_or_default()).collect();
    assert_eq!(keys.len(), 3, "{got:#?}");
    for (k, want) in keys.iter().zip(["ResourceCreated", "ResourceChanged", "ResourceRemoved"]) {
        assert!(k.starts_with("ResourceEvent.") && k.ends_with(want), "{k} is not {want}: {got:#?}");
    }
    for e in &got {
        assert_eq!(e["OriginOfCondition"]["@odata.id"], "/redfish/v1/Systems/7", "{e}");
        assert!(e["EventId"].is_string() && e["EventTimestamp"].is_string(), "{e}");
    }
    let removed = sunfish_tests::eventually("the removal at /removed", WAIT, || {
        let e = rx.events_at("/removed");
        async move { (!e.is_empty()).then_some(e) }
    })
    .await;
    assert_eq!(removed.len(), 1, "{removed:#?}");
    assert!(removed[0]["MessageId"].as_str().is_some_and(|m| m.ends_with(".ResourceRemoved")), "{removed:#?}");
    s.stop().await;
}

/// Each delivered envelope carries the subscriber's `Context` (not the sender's), and the
/// `HttpHeaders` given at creation are sent with every delivery (also after a PATCH) but never
/// shown: GET of the subscription has no secret value anywhere in its body.
#[tokio::test]
async fn context_is_the_subscribers_and_http_headers_stay_secret() {
    const SECRET: &str = "tok-9f8e7d6c5b4a-secret";
    let (cfg, dir) = fast_config(sunfish_tests::Backend::Memory);
    let s = TestServer::start_with(cfg, dir).await;
    let rx = Receiver::start(Mode::Ok).await;
    let (uri, _) = subscribe(
        &s,
        &rx.url("/ctx"),
        json!({"Context": "subscriber-context", "RegistryPrefixes": ["Ctx"],
            "HttpHeaders": [{"X-Auth-Token": SECRET}, {"X-Tenant": "tenant-blue"}]}),
    )
    .await;
    let g = s.get(&uri).await;
    assert_eq!(g.body["Context"], "subscriber-context");
    assert!(!g.body.to_string().contains(SECRET), "the secret header value is shown: {}", g.body);
    let c = s.get(SUBS).await;
    assert!(!c.body.to_string().contains(SECRET), "{}", c.body);

    post_events(&s, vec![event("Ctx.1.0.One", "c1", None)]).await;
    post_events(&s, vec![event("Ctx.1.0.Two", "c2", None)]).await;
    rx.wait_markers("/ctx", "Ctx.", 2, WAIT).await;
    let r = s.patch(&uri, &json!({"Context": "renamed-context"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!r.body.to_string().contains(SECRET), "{}", r.body);
    post_events(&s, vec![event("Ctx.1.0.Three", "c3", None)]).await;
    rx.wait_markers("/ctx", "Ctx.", 3, WAIT).await;

    let deliveries = rx.delivered_at("/ctx");
    assert_eq!(deliveries.len(), 3, "{deliveries:#?}");
    for (d, ctx) in deliveries.iter().zip(["subscriber-context", "subscriber-context", "renamed-context"]) {
        assert_eq!(d.body["Context"], ctx, "envelope Context: {}", d.body);
        assert_eq!(d.header("X-Auth-Token"), Some(SECRET), "headers sent: {:?}", d.headers);
        assert_eq!(d.header("X-Tenant"), Some("tenant-blue"), "headers sent: {:?}", d.headers);
        assert!(d.body["@odata.type"].as_str().is_some_and(|t| t.starts_with("#Event.")), "{}", d.body);
    }
    let g = s.get(&uri).await;
    assert!(!g.body.to_string().contains(SECRET), "{}", g.body);
    s.stop().await;
}

/// `/EventListener` answers the JSON array of the subscription Ids an envelope was queued for
/// (empty when no filter matches); a bad envelope is 400 and queues nothing.
#[tokio::test]
async fn event_listener_answers_queued_ids_and_refuses_bad_envelopes() {
    let (cfg, dir) = fast_config(sunfish_tests::Backend::Memory);
    let s = TestServer::start_with(cfg, dir).await;
    let rx = Receiver::start(Mode::Ok).await;
    let (_, a) = subscribe(&s, &rx.url("/a"), json!({"RegistryPrefixes": ["Ans"]})).await;
    let (_, b) = subscribe(&s, &rx.url("/b"), json!({"MessageIds": ["Ans.1.0.B"]})).await;
    assert_eq!(sorted(post_events(&s, vec![event("Ans.1.0.B", "1", None)]).await), sorted(vec![a.clone(), b]));
    assert_eq!(post_events(&s, vec![event("Ans.1.0.A", "2", None)]).await, vec![a]);
    assert_eq!(post_events(&s, vec![event("Other.1.0.X", "3", None)]).await, Vec::<String>::new());
    for bad in [json!({"Context": "no events"}), json!({"Events": [{"MessageArgs": ["x"]}]}), json!(["Ans.1.0.A"])] {
        let r = s.post("/EventListener", &bad).await;
        assert_eq!(r.status, 400, "{bad} → {}", r.body);
        assert_error_body(&r);
    }
    post_events(&s, vec![event("Ans.1.0.A", "4", None)]).await;
    let m = rx.wait_markers("/a", "Ans.", 3, WAIT).await;
    assert_eq!(m, ["1", "2", "4"]);
    s.stop().await;
}

/// TerminateAfterRetries: a receiver that answers 500 gets the first attempt and
/// `DeliveryRetryAttempts` retries, then the subscription is deleted (GET → 404).
#[tokio::test]
async fn terminate_after_retries_deletes_the_subscription() {
    let (cfg, dir) = fast_config(sunfish_tests::Backend::Memory);
    let s = TestServer::start_with(cfg, dir).await;
    set_retry(&s, 2, 0).await;
    let rx = Receiver::start(Mode::Fail).await;
    let (uri, _) = subscribe(
        &s,
        &rx.url("/t"),
        json!({"DeliveryRetryPolicy": "TerminateAfterRetries", "RegistryPrefixes": ["Term"]}),
    )
    .await;
    post_events(&s, vec![event("Term.1.0.X", "t1", None)]).await;
    get_until(&s, &uri, "the subscription to be deleted", WAIT, |r| r.status == 404).await;
    let attempts = rx.attempts_at("/t");
    assert_eq!(attempts.len(), 3, "one attempt and DeliveryRetryAttempts (2) retries: {attempts:#?}");
    let members = s.get(SUBS).await.body["Members"].clone();
    assert_eq!(members, json!([]), "the terminated subscription is still listed");
    s.stop().await;
}

/// SuspendRetries: after the retries the subscription is `Suspended` and keeps its event;
/// `ResumeSubscription` with the receiver healthy delivers the held event and the state is
/// `Enabled` again.
#[tokio::test]
async fn suspend_retries_holds_the_event_until_resumed() {
    let (cfg, dir) = fast_config(sunfish_tests::Backend::Memory);
    let s = TestServer::start_with(cfg, dir).await;
    set_retry(&s, 1, 0).await;
    let rx = Receiver::start(Mode::Fail).await;
    let (uri, _) =
        subscribe(&s, &rx.url("/s"), json!({"DeliveryRetryPolicy": "SuspendRetries", "RegistryPrefixes": ["Susp"]}))
            .await;
    post_events(&s, vec![event("Susp.1.0.X", "held", None)]).await;
    get_until(&s, &uri, "Status.State Suspended", WAIT, |r| r.body["Status"]["State"] == "Suspended").await;
    let tried = rx.attempts_at("/s").len();
    assert_eq!(tried, 2, "one attempt and one retry before suspending");

    rx.set_mode(Mode::Ok);
    let action = format!("{uri}/Actions/EventDestination.ResumeSubscription");
    let r = s.post(&action, &json!({})).await;
    assert!(r.status.is_success(), "ResumeSubscription: {} {}", r.status, r.body);
    let m = rx.wait_markers("/s", "Susp.", 1, WAIT).await;
    assert_eq!(m, ["held"]);
    get_until(&s, &uri, "Status.State Enabled", WAIT, |r| r.body["Status"]["State"] == "Enabled").await;
    s.stop().await;
}

/// RetryForever: retries go on past `DeliveryRetryAttempts` without deleting or suspending;
/// once the receiver is healthy the event is delivered.
#[tokio::test]
async fn retry_forever_delivers_once_the_receiver_recovers() {
    let (cfg, dir) = fast_config(sunfish_tests::Backend::Memory);
    let s = TestServer::start_with(cfg, dir).await;
    set_retry(&s, 1, 0).await;
    let rx = Receiver::start(Mode::Fail).await;
    let (uri, _) =
        subscribe(&s, &rx.url("/f"), json!({"DeliveryRetryPolicy": "RetryForever", "RegistryPrefixes": ["Forever"]}))
            .await;
    post_events(&s, vec![event("Forever.1.0.X", "f1", None)]).await;
    rx.wait_attempts("/f", 5, WAIT).await;
    let g = s.get(&uri).await;
    assert_eq!(g.status, 200, "RetryForever deleted the subscription");
    assert_eq!(g.body["Status"]["State"], "Enabled", "{}", g.body);
    rx.set_mode(Mode::Ok);
    assert_eq!(rx.wait_markers("/f", "Forever.", 1, WAIT).await, ["f1"]);
    s.stop().await;
}

/// RetryForeverWithBackoff: like RetryForever, and the gaps between attempts grow (measured
/// loosely at the receiver: interval 1 s, then about 2 s).
#[tokio::test]
async fn retry_forever_with_backoff_waits_longer_each_time() {
    let (cfg, dir) = fast_config(sunfish_tests::Backend::Memory);
    let s = TestServer::start_with(cfg, dir).await;
    set_retry(&s, 1, 1).await;
    let rx = Receiver::start(Mode::Fail).await;
    subscribe(
        &s,
        &rx.url("/bo"),
        json!({"DeliveryRetryPolicy": "RetryForeverWithBackoff", "RegistryPrefixes": ["Backoff"]}),
    )
    .await;
    post_events(&s, vec![event("Backoff.1.0.X", "b1", None)]).await;
    let a = rx.wait_attempts("/bo", 3, WAIT).await;
    rx.set_mode(Mode::Ok);
    let g1 = a[1].at.duration_since(a[0].at);
    let g2 = a[2].at.duration_since(a[1].at);
    assert!(g1 >= Duration::from_millis(800), "first gap {g1:?} is shorter than the 1 s interval");
    assert!(g2 >= g1 + Duration::from_millis(500), "gaps do not grow: {g1:?} then {g2:?}");
    assert_eq!(rx.wait_markers("/bo", "Backoff.", 1, WAIT).await, ["b1"]);
    s.stop().await;
}

/// A PATCH of a subscription's filters applies to the next event.
#[tokio::test]
async fn patched_filters_apply_to_the_next_event() {
    let (cfg, dir) = fast_config(sunfish_tests::Backend::Memory);
    let s = TestServer::start_with(cfg, dir).await;
    let rx = Receiver::start(Mode::Ok).await;
    let (uri, _) = subscribe(&s, &rx.url("/p"), json!({"MessageIds": ["Patch.1.0.A"]})).await;
    post_events(&s, vec![event("Patch.1.0.A", "a1", None), event("Patch.1.0.B", "b1", None)]).await;
    assert_eq!(rx.wait_markers("/p", "Patch.", 1, WAIT).await, ["a1"]);
    let r = s.patch(&uri, &json!({"MessageIds": ["Patch.1.0.B"]})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    post_events(&s, vec![event("Patch.1.0.A", "a2", None)]).await;
    post_events(&s, vec![event("Patch.1.0.B", "b2", None)]).await;
    // Delivery is in order, so once b2 is there, a2 would have been too.
    rx.wait_markers("/p", "Patch.", 2, WAIT).await;
    assert_eq!(rx.markers_at("/p", "Patch."), ["a1", "b2"]);
    s.stop().await;
}

/// DELETE of a subscription stops its delivery at once: with events queued behind an attempt
/// that hangs, nothing reaches the receiver after the 204, even once it answers again.
#[tokio::test]
async fn delete_stops_delivery_at_once() {
    let (cfg, dir) = fast_config(sunfish_tests::Backend::Memory);
    let s = TestServer::start_with(cfg, dir).await;
    set_retry(&s, 5, 0).await;
    let rx = Receiver::start(Mode::Hang).await;
    let (uri, _) =
        subscribe(&s, &rx.url("/d"), json!({"DeliveryRetryPolicy": "RetryForever", "RegistryPrefixes": ["Del"]})).await;
    for i in 0..3 {
        post_events(&s, vec![event("Del.1.0.X", &format!("d{i}"), None)]).await;
    }
    rx.wait_attempts("/d", 1, WAIT).await;
    let r = s.delete(&uri).await;
    assert_eq!(r.status, 204, "{}", r.body);
    let deleted = Instant::now();
    rx.set_mode(Mode::Ok);
    assert_eq!(s.get(&uri).await.status, 404);
    // Observe a window of several attempt timeouts (300 ms each, retry interval 0): a worker
    // that was not cancelled would retry, and now be answered, within it.
    let window = Duration::from_millis(1_500);
    while deleted.elapsed() < window {
        let late: Vec<_> = rx.attempts_at("/d").into_iter().filter(|a| a.at > deleted).collect();
        assert!(late.is_empty(), "delivery after DELETE answered 204: {late:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(rx.delivered_at("/d").is_empty(), "an event was delivered to a deleted subscription");
    s.stop().await;
}

/// `Oem.Sunfish.Delivery` on the subscription shows Delivered, Retried, Dropped (queue full)
/// and Pending, and they move as deliveries fail, overflow and succeed.
#[tokio::test]
async fn delivery_counters_move() {
    let (mut cfg, dir) = fast_config(sunfish_tests::Backend::Memory);
    cfg.events.queue_limit = 3;
    let s = TestServer::start_with(cfg, dir).await;
    set_retry(&s, 5, 0).await;
    let rx = Receiver::start(Mode::Hang).await;
    let (uri, id) =
        subscribe(&s, &rx.url("/n"), json!({"DeliveryRetryPolicy": "RetryForever", "RegistryPrefixes": ["Count"]}))
            .await;
    let mut answers = Vec::new();
    for i in 0..5 {
        answers.push(post_events(&s, vec![event("Count.1.0.X", &format!("n{i}"), None)]).await);
    }
    let queued: Vec<bool> = answers.iter().map(|a| a.contains(&id)).collect();
    assert_eq!(queued, [true, true, true, false, false], "queue_limit 3: the 4th and 5th are dropped: {answers:?}");
    let r = get_until(&s, &uri, "Pending 3, Dropped 2, Retried ≥ 1", WAIT, |r| {
        let d = delivery(r);
        d["Pending"] == 3 && d["Dropped"] == 2 && d["Retried"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    assert_eq!(delivery(&r)["Delivered"], 0, "{}", r.body);

    rx.set_mode(Mode::Ok);
    assert_eq!(rx.wait_markers("/n", "Count.", 3, WAIT).await, ["n0", "n1", "n2"]);
    let r = get_until(&s, &uri, "Delivered 3, Pending 0", WAIT, |r| {
        let d = delivery(r);
        d["Delivered"] == 3 && d["Pending"] == 0
    })
    .await;
    assert_eq!(delivery(&r)["Dropped"], 2, "{}", r.body);
    s.stop().await;
}

/// Subscriptions survive a restart (fs): after stopping and starting on the same root the
/// subscription is still there and still delivers, with its secret headers, and what was
/// delivered before is not delivered again.
#[tokio::test]
async fn subscriptions_survive_a_restart() {
    let (cfg, dir) = fast_config(sunfish_tests::Backend::Fs);
    let s = TestServer::start_with(cfg.clone(), dir).await;
    let rx = Receiver::start(Mode::Ok).await;
    let (uri, _) = subscribe(
        &s,
        &rx.url("/r"),
        json!({"RegistryPrefixes": ["Restart"], "Context": "kept", "HttpHeaders": [{"X-Key": "k-123"}]}),
    )
    .await;
    post_events(&s, vec![event("Restart.1.0.X", "before", None)]).await;
    rx.wait_markers("/r", "Restart.", 1, WAIT).await;
    let dir = s.stop().await;

    let s = TestServer::start_with(cfg, dir).await;
    let g = s.get(&uri).await;
    assert_eq!(g.status, 200, "the subscription is gone after a restart");
    assert_eq!(g.body["Destination"], rx.url("/r"));
    post_events(&s, vec![event("Restart.1.0.X", "after", None)]).await;
    assert_eq!(rx.wait_markers("/r", "Restart.", 2, WAIT).await, ["before", "after"]);
    let last = rx.delivered_at("/r").pop().unwrap_or_else(|| panic!("no delivery"));
    assert_eq!(last.header("X-Key"), Some("k-123"), "secret headers lost in the restart");
    assert_eq!(last.body["Context"], "kept");
    s.stop().await;
}

/// Durability (real binary, fs, fsync on): with the receiver down, 100 accepted events for a
/// RetryForever subscription survive SIGKILL; after a restart the receiver, once up on that
/// port, gets all 100 in order, each EventId once.
#[tokio::test]
async fn accepted_events_survive_sigkill() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let mut env = fs_env(&tmp.path().join("store"), true);
    env.push(("SUNFISH__EVENTS__ATTEMPT_TIMEOUT_MS".into(), "200".into()));
    let port = closed_port();
    let server = BinaryServer::start_env(&[], &env).await;
    set_retry(&server, 3, 1).await;
    let dest = format!("http://127.0.0.1:{port}/durable");
    subscribe(&server, &dest, json!({"DeliveryRetryPolicy": "RetryForever", "RegistryPrefixes": ["Durable"]})).await;
    for i in 0..100 {
        let ids = post_events(&server, vec![event("Durable.1.0.Marker", &format!("m{i:03}"), None)]).await;
        assert_eq!(ids.len(), 1, "event {i} was not queued");
    }
    server.kill();

    let server = BinaryServer::start_env(&[], &env).await;
    let rx = Receiver::start_on(port, Mode::Ok).await;
    let got = rx.wait_markers("/durable", "Durable.", 100, Duration::from_secs(30)).await;
    let want: Vec<String> = (0..100).map(|i| format!("m{i:03}")).collect();
    assert_eq!(got, want, "all 100 events, in order, once each");
    let ids: Vec<String> =
        rx.events_at("/durable").iter().map(|e| e["EventId"].as_str().unwrap_or_default().to_string()).collect();
    let distinct: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "an EventId was delivered twice: {ids:?}");
    drop(server);
}

/// Isolation: a subscriber that never answers holds up only itself. With it and 10 healthy
/// subscribers, 1,000 events (100 envelopes of 10) all reach every healthy one, and every POST
/// to `/EventListener` is answered well within the attempt timeout (nobody waits for delivery).
#[tokio::test]
async fn a_hanging_subscriber_holds_up_nobody() {
    let (mut cfg, dir) = fast_config(sunfish_tests::Backend::Memory);
    cfg.events.attempt_timeout_ms = 4_000;
    let s = TestServer::start_with(cfg, dir).await;
    set_retry(&s, 3, 0).await;
    let hang = Receiver::start(Mode::Hang).await;
    let ok = Receiver::start(Mode::Ok).await;
    subscribe(&s, &hang.url("/hang"), json!({"DeliveryRetryPolicy": "RetryForever", "RegistryPrefixes": ["Load"]}))
        .await;
    for i in 0..10 {
        subscribe(&s, &ok.url(&format!("/h{i}")), json!({"RegistryPrefixes": ["Load"]})).await;
    }
    let mut slowest = Duration::ZERO;
    for env in 0..100 {
        let events: Vec<Value> = (0..10).map(|i| event("Load.1.0.X", &format!("{:04}", env * 10 + i), None)).collect();
        let t = Instant::now();
        let ids = post_events(&s, events).await;
        slowest = slowest.max(t.elapsed());
        assert_eq!(ids.len(), 11, "envelope {env} not queued for every subscriber");
    }
    assert!(slowest < Duration::from_millis(2_000), "a POST /EventListener took {slowest:?} (attempt timeout 4 s)");
    let want: Vec<String> = (0..1000).map(|i| format!("{i:04}")).collect();
    for i in 0..10 {
        let got = ok.wait_markers(&format!("/h{i}"), "Load.", 1000, Duration::from_secs(40)).await;
        assert_eq!(got, want, "healthy subscriber {i}");
    }
    assert!(!hang.attempts_at("/hang").is_empty(), "the hanging subscriber was never tried");
    assert!(hang.delivered_at("/hang").is_empty());
    s.stop().await;
}

/// Issue 7 (publishes overlap): 128 systems created by 16 concurrent clients on the fs backend
/// (fsync on) raise 128 ResourceCreated events that reach a subscriber once each, every one, in strictly
/// increasing EventId order, although their log entries were stored concurrently.
#[tokio::test]
async fn concurrent_writes_reach_a_subscriber_in_event_id_order() {
    let (mut cfg, dir) = fast_config(sunfish_tests::Backend::Fs);
    cfg.storage.options["fsync"] = json!(true);
    let s = TestServer::start_with(cfg, dir).await;
    let rx = Receiver::start(Mode::Ok).await;
    subscribe(
        &s,
        &rx.url("/created"),
        json!({"MessageIds": ["ResourceEvent.ResourceCreated"], "ResourceTypes": ["ComputerSystem"]}),
    )
    .await;
    let writers = (0..16).map(|w| {
        let s = &s;
        async move {
            for i in 0..8 {
                create_system(s, &format!("c{w:02}-{i}")).await;
            }
        }
    });
    futures::future::join_all(writers).await;

    let got = sunfish_tests::eventually("128 events at /created", WAIT, || {
        let e = rx.events_at("/created");
        async move { (e.len() >= 128).then_some(e) }
    })
    .await;
    let ids: Vec<u64> = got.iter().map(|e| e["EventId"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0)).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "EventIds out of order: {ids:?}");
    let origins: BTreeSet<&str> = got.iter().filter_map(|e| e["OriginOfCondition"]["@odata.id"].as_str()).collect();
    assert_eq!((got.len(), origins.len()), (128, 128), "every system once: {origins:?}");
    s.stop().await;
}
