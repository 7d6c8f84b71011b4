//! High availability (issue 8): two real `sunfish-server` processes on one PostgreSQL schema.
//! Resources written through A are read through B; a subscriber registered through A gets the
//! events of writes made through B; after a SIGKILL of the leader the other instance delivers
//! the events (none lost: every EventId arrives, a repeat only ever with the same event) and
//! runs agent liveness, within the configured lease. Skips, saying so, without a PostgreSQL
//! server (`SUNFISH_TEST_POSTGRES_URL`, default `host=127.0.0.1 user=postgres dbname=test`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sunfish_tests::agent::StubAgent;
use sunfish_tests::{eventually, BinaryServer, Client};

use crate::receiver::{event, message_id, post_events, subscribe, Mode, Receiver};

/// The lease the instances run with.
const LEASE: Duration = Duration::from_millis(1500);
/// Slack on top of the lease for a loaded machine (process start, probes, HTTP).
const SLACK: Duration = Duration::from_secs(10);
const SOURCES: &str = "/redfish/v1/AggregationService/AggregationSources";

fn url() -> String {
    std::env::var("SUNFISH_TEST_POSTGRES_URL").unwrap_or_else(|_| "host=127.0.0.1 user=postgres dbname=test".into())
}

async fn admin_connection(test: &str) -> Option<tokio_postgres::Client> {
    match tokio_postgres::connect(&url(), tokio_postgres::NoTls).await {
        Ok((client, conn)) => {
            tokio::spawn(conn);
            Some(client)
        }
        Err(e) => {
            eprintln!("SKIP {test}: no PostgreSQL at {:?} ({e})", url());
            None
        }
    }
}

/// The test's marked events delivered at `/events`, as (EventId, marker).
fn marked(rx: &Receiver) -> Vec<(String, String)> {
    rx.events_at("/events")
        .iter()
        .filter(|e| message_id(e).starts_with("HaTest."))
        .map(|e| {
            (
                e["EventId"].as_str().unwrap_or_default().to_string(),
                e["MessageArgs"][0].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Posts one marked event through `c`; returns its EventId.
async fn mark(c: &Client, m: &str) -> String {
    let ids = post_events(c, vec![event("HaTest.1.0.Marker", m, None)]).await;
    assert_eq!(ids.len(), 1, "event {m} was not queued: {ids:?}");
    m.to_string()
}

async fn created_event_for(rx: &Receiver, path: &str) -> Option<Value> {
    rx.events_at("/events")
        .into_iter()
        .find(|e| message_id(e).ends_with(".ResourceCreated") && e["OriginOfCondition"]["@odata.id"] == path)
}

async fn source_state(c: &Client, src: &str) -> Option<String> {
    let v = c.get(src).await.body;
    v["Status"]["State"].as_str().map(str::to_string)
}

#[tokio::test]
async fn two_instances_fail_over_without_losing_events() {
    let test = "two_instances_fail_over_without_losing_events";
    let Some(db) = admin_connection(test).await else { return };
    let schema = format!("sfha_{}", std::process::id());
    let _ = db.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
    let env: Vec<(String, String)> = [
        ("SUNFISH__STORAGE__BACKEND", "postgres".to_string()),
        ("SUNFISH__STORAGE__OPTIONS__URL", url()),
        ("SUNFISH__STORAGE__OPTIONS__SCHEMA", schema.clone()),
        ("SUNFISH__STORAGE__OPTIONS__LEASE_MS", LEASE.as_millis().to_string()),
        ("SUNFISH__EVENTS__ATTEMPT_TIMEOUT_MS", "1000".to_string()),
        ("SUNFISH__AGGREGATION__LIVENESS_INTERVAL_MS", "200".to_string()),
        ("SUNFISH__AGGREGATION__LIVENESS_TIMEOUT_MS", "1000".to_string()),
        ("SUNFISH__AGGREGATION__REQUEST_TIMEOUT_MS", "300".to_string()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.clone()))
    .collect();

    // A starts alone, so it takes the lock and leads; its first delivery shows it.
    let a = BinaryServer::start_env(&[], &env).await;
    let rx = Receiver::start(Mode::Ok).await;
    subscribe(&a, &rx.url("/events"), json!({})).await;
    let mut sent = vec![mark(&a, "a-0").await];
    eventually("A (the leader) delivers", SLACK, || {
        let got = marked(&rx).iter().any(|(_, m)| m == "a-0");
        async move { got.then_some(()) }
    })
    .await;

    let b = BinaryServer::start_env(&[], &env).await;

    // Resources written through A are read through B, and the other way round.
    let sys = json!({"@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem", "Id": "ha-a", "Name": "via A"});
    assert_eq!(a.post("/redfish/v1/Systems", &sys).await.status, 201);
    let on_b = b.get("/redfish/v1/Systems/ha-a").await;
    assert_eq!((on_b.status.as_u16(), on_b.body["Name"].clone()), (200, json!("via A")), "A's write on B");
    let sys = json!({"@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem", "Id": "ha-b", "Name": "via B"});
    assert_eq!(b.post("/redfish/v1/Systems", &sys).await.status, 201);
    assert_eq!(a.get("/redfish/v1/Systems/ha-b").await.body["Name"], "via B", "B's write on A");

    // The subscriber registered through A gets the events of writes through B.
    eventually("ResourceCreated for B's write, at A's subscriber", SLACK, || {
        created_event_for(&rx, "/redfish/v1/Systems/ha-b")
    })
    .await;
    for i in 0..5 {
        sent.push(mark(&b, &format!("b-{i}")).await);
    }

    // Settings cached per instance follow a change made through the other: EventService
    // switched off through B stops A from accepting events, switched on again, A accepts.
    let off = b.patch("/redfish/v1/EventService", &json!({"ServiceEnabled": false})).await;
    assert!(off.status.is_success(), "{} {}", off.status, off.body);
    // Probes A accepts before it hears of the change are real events and must arrive too.
    let deadline = Instant::now() + SLACK;
    let mut i = 0;
    loop {
        let m = format!("probe-{i}");
        i += 1;
        if post_events(&a, vec![event("HaTest.1.0.Marker", &m, None)]).await.is_empty() {
            break;
        }
        sent.push(m);
        assert!(Instant::now() < deadline, "A never saw ServiceEnabled false set through B");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(b.patch("/redfish/v1/EventService", &json!({"ServiceEnabled": true})).await.status.is_success());
    let deadline = Instant::now() + SLACK;
    while post_events(&a, vec![event("HaTest.1.0.Marker", "a-1", None)]).await.is_empty() {
        assert!(Instant::now() < deadline, "A never saw ServiceEnabled true set through B");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sent.push("a-1".to_string());

    // An agent registered through A, watched by the leader.
    let agent = StubAgent::synthetic("HAF", 1, 1).await;
    let (status, body) = agent.register(&a.base, "HaStub").await;
    assert_eq!(status, 200, "registering the agent: {body}");
    let src = format!("{SOURCES}/{}", agent.context());
    assert_eq!(source_state(&b, &src).await.as_deref(), Some("Enabled"), "the agent's source, seen through B");

    // Events B accepts while A still leads, then A dies without warning.
    for i in 5..10 {
        sent.push(mark(&b, &format!("b-{i}")).await);
    }
    a.kill();
    let killed = Instant::now();
    for i in 10..20 {
        sent.push(mark(&b, &format!("b-{i}")).await);
    }

    // B takes over delivery: every event arrives.
    let got = eventually("every event at the subscriber after the failover", LEASE + SLACK, || {
        let got = marked(&rx);
        let all = sent.iter().all(|m| got.iter().any(|(_, g)| g == m));
        async move { all.then_some(got) }
    })
    .await;
    let took = killed.elapsed();
    assert!(took <= LEASE + SLACK, "delivery resumed {took:?} after the kill");
    // Duplicates only as repeats of one event under one EventId; distinct events, distinct ids.
    let mut by_id: BTreeMap<String, String> = BTreeMap::new();
    for (id, m) in &got {
        assert!(!id.is_empty(), "an event without EventId");
        if let Some(prev) = by_id.insert(id.clone(), m.clone()) {
            assert_eq!(&prev, m, "EventId {id} carried two different events");
        }
    }
    let mut markers: Vec<&String> = by_id.values().collect();
    markers.sort();
    markers.dedup();
    assert_eq!(markers.len(), by_id.len(), "one event delivered under two EventIds: {got:?}");
    assert_eq!(markers.len(), sent.len(), "sent {sent:?}, got {got:?}");

    // B runs agent liveness now: the agent goes silent and B marks it offline.
    agent.set_offline(true);
    eventually("the silent agent marked offline by B", LEASE + SLACK, || {
        let b = &b;
        let src = src.clone();
        async move { (source_state(b, &src).await.as_deref() == Some("UnavailableOffline")).then_some(()) }
    })
    .await;
    agent.set_offline(false);
    eventually("the agent back online through B", LEASE + SLACK, || {
        let b = &b;
        let src = src.clone();
        async move { (source_state(b, &src).await.as_deref() == Some("Enabled")).then_some(()) }
    })
    .await;

    drop(b);
    agent.stop().await;
    let _ = db.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
}
