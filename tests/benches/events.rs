//! Event delivery benchmark (a load run, not a test): `cargo bench -p sunfish-tests --bench events`.
//!
//! Starts a release server in-process on 127.0.0.1 (memory backend), 20 receivers, 20
//! subscriptions, then measures:
//! 1. deliveries per second: N envelopes posted to /EventListener, time until every receiver
//!    has every envelope;
//! 2. latency from intake to receipt (p50, p99), one envelope at a time;
//! 3. memory with one dead subscriber (accepts, never answers) and 100,000 queued events.
//!
//! `BENCH_QUICK=1` runs a small smoke pass (CI uses it to prove the code works).

// A benchmark program: a failed setup step should stop it loudly.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use serde_json::json;
use sunfish_tests::{config_for, Backend, Client, TestServer};
use tokio::net::TcpListener;

/// A receiver counting envelopes and recording receipt times (µs since `epoch`) of probes.
#[derive(Clone)]
struct Receiver {
    count: Arc<AtomicU64>,
    probe_received: Arc<parking_lot::Mutex<Vec<(u64, Instant)>>>,
}

async fn receive(State(r): State<Receiver>, body: axum::body::Bytes) -> StatusCode {
    r.count.fetch_add(1, Ordering::Relaxed);
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
        if let Some(p) = v["Events"][0]["MessageArgs"][0].as_str().and_then(|s| s.strip_prefix("probe-")) {
            if let Ok(n) = p.parse::<u64>() {
                r.probe_received.lock().push((n, Instant::now()));
            }
        }
    }
    StatusCode::NO_CONTENT
}

async fn start_receiver() -> (String, Receiver) {
    let r = Receiver { count: Arc::default(), probe_received: Arc::default() };
    let app = Router::new().route("/ev", post(receive)).with_state(r.clone());
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(l, app).await });
    (format!("http://{addr}/ev"), r)
}

/// A destination that accepts connections and never answers.
async fn start_dead() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    format!("http://{addr}/ev")
}

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn envelope(marker: &str) -> serde_json::Value {
    json!({"Events": [{"MessageId": "ResourceEvent.1.4.ResourceChanged", "MessageArgs": [marker],
        "OriginOfCondition": {"@odata.id": "/redfish/v1/Systems"}}]})
}

async fn post_all(client: &Client, n: u64, prefix: &str, concurrency: usize) {
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = Vec::new();
    for i in 0..n {
        let permit = sem.clone().acquire_owned().await.expect("semaphore");
        let c = client.clone();
        let body = envelope(&format!("{prefix}{i}"));
        tasks.push(tokio::spawn(async move {
            let r = c.post("/EventListener", &body).await;
            assert_eq!(r.status, 200);
            drop(permit);
        }));
    }
    for t in tasks {
        t.await.expect("join");
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::var("BENCH_QUICK").is_ok();
    let (envelopes, probes, queued): (u64, u64, u64) = if quick { (200, 20, 2_000) } else { (5_000, 500, 100_000) };
    let (mut cfg, dir) = config_for(Backend::Memory);
    cfg.events.queue_limit = usize::try_from(queued).unwrap_or(usize::MAX) + 10;
    cfg.events.attempt_timeout_ms = 600_000;
    let server = TestServer::start_with(cfg, dir).await;
    let client = server.client.clone();

    // 1. Throughput to 20 subscribers.
    let mut receivers = Vec::new();
    for _ in 0..20 {
        let (url, r) = start_receiver().await;
        let resp = client
            .post(
                "/redfish/v1/EventService/Subscriptions",
                &json!({"Destination": url, "Protocol": "Redfish",
            "MessageIds": ["ResourceEvent.ResourceChanged"]}),
            )
            .await;
        assert_eq!(resp.status, 201, "{:?}", resp.body);
        receivers.push(r);
    }
    let start = Instant::now();
    post_all(&client, envelopes, "load-", 32).await;
    let posted = start.elapsed();
    let total = envelopes * 20;
    loop {
        let got: u64 = receivers.iter().map(|r| r.count.load(Ordering::Relaxed)).sum();
        if got >= total {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(300), "deliveries stalled at {got}/{total}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed();
    println!(
        "events: deliveries to 20 subscribers: {total} in {:.2} s = {:.0} deliveries/s (intake of {envelopes} envelopes took {:.2} s)",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        posted.as_secs_f64()
    );

    // 2. Latency, one envelope at a time, measured at the first receiver.
    let first = receivers[0].clone();
    let mut latencies = Vec::new();
    for i in 0..probes {
        let sent = Instant::now();
        let r = client.post("/EventListener", &envelope(&format!("probe-{i}"))).await;
        assert_eq!(r.status, 200);
        loop {
            if let Some(t) = first.probe_received.lock().iter().find(|(n, _)| *n == i).map(|(_, t)| *t) {
                latencies.push(t.duration_since(sent).as_secs_f64() * 1000.0);
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    latencies.sort_by(f64::total_cmp);
    println!(
        "events: intake-to-receipt latency over {probes} events: p50 {:.2} ms, p99 {:.2} ms",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );

    // 3. Memory with one dead subscriber and `queued` events waiting for it.
    let subs = client.get("/redfish/v1/EventService/Subscriptions").await;
    for m in subs.body["Members"].as_array().cloned().unwrap_or_default() {
        let p = m["@odata.id"].as_str().unwrap_or_default().to_string();
        client.delete(&p).await;
    }
    let dead = start_dead().await;
    let resp = client
        .post(
            "/redfish/v1/EventService/Subscriptions",
            &json!({"Destination": dead, "Protocol": "Redfish",
        "DeliveryRetryPolicy": "RetryForever"}),
        )
        .await;
    assert_eq!(resp.status, 201);
    let before = rss_mb();
    let t = Instant::now();
    post_all(&client, queued, "q-", 32).await;
    let after = rss_mb();
    println!(
        "events: one dead subscriber, {queued} queued events: RSS {before:.0} MB -> {after:.0} MB (+{:.0} MB, {:.2} KB/event), intake {:.0} envelopes/s",
        after - before,
        (after - before) * 1024.0 / queued as f64,
        queued as f64 / t.elapsed().as_secs_f64()
    );
    server.stop().await;
}
