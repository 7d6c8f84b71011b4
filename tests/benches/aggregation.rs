//! Aggregation benchmark (a load run, not a test): `cargo bench -p sunfish-tests --bench aggregation`.
//!
//! A release server in-process on 127.0.0.1 (memory, then fs with fsync on), stub agents on
//! 127.0.0.1, and the time from the agent's registration POST to the answer of its upload POST
//! (the upload is synchronous: when it answers, every resource is stored):
//! 1. the two CXL agents of ../shared/mockups/sunfish (fabric manager, then appliance manager),
//!    skipped with a printed reason when ../shared is absent;
//! 2. a synthetic agent with 10,000 resources (100 switches × 98 ports), then its re-upload
//!    (nothing changed: the crawl and the comparison only).
//!
//! `BENCH_QUICK=1` uses 1,000 resources (a smoke pass).

// A benchmark program: a failed setup step should stop it loudly.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use sunfish_tests::agent::StubAgent;
use sunfish_tests::{config_for, shared_dir, Backend, TestServer};

/// Registers `agent` and uploads `root`; returns (registration, upload) durations.
async fn register_and_upload(server: &TestServer, agent: &StubAgent, method: &str, root: &str) -> (Duration, Duration) {
    let base = server.client.base.clone();
    let t0 = Instant::now();
    let (status, body) = agent.register(&base, method).await;
    assert_eq!(status, 200, "registration: {body}");
    let t1 = Instant::now();
    let (status, body) = agent.upload(root).await;
    assert_eq!(status, 200, "upload: {body}");
    (t1 - t0, t1.elapsed())
}

async fn start(backend: Backend) -> TestServer {
    let (mut cfg, dir) = config_for(backend);
    if backend == Backend::Fs {
        cfg.storage.options["fsync"] = serde_json::Value::Bool(true);
    }
    TestServer::start_with(cfg, dir).await
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| v == "1");
    let (switches, ports) = if quick { (10, 98) } else { (100, 98) };
    let resources = 3 + switches * (2 + ports);
    println!("| backend | agent | resources | registration ms | upload ms | total ms |");
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    for backend in [Backend::Memory, Backend::Fs] {
        let name = if backend == Backend::Memory { "memory" } else { "fs (fsync on)" };
        match shared_dir() {
            Some(shared) => {
                let server = start(backend).await;
                let mock = shared.join("mockups/sunfish");
                for (dir, method) in [("fm_agent_Resources", "CXL"), ("am_agent_Resources", "CXL2")] {
                    let agent = StubAgent::from_mockup(&mock.join(dir)).await;
                    let count = agent.uris().len();
                    let (r, u) = register_and_upload(&server, &agent, method, "/redfish/v1/Fabrics/CXL").await;
                    println!(
                        "| {name} | CXL {dir} | {count} served | {:.1} | {:.1} | {:.1} |",
                        ms(r),
                        ms(u),
                        ms(r + u)
                    );
                }
                let fabric = server.get("/redfish/v1/Fabrics/CXL").await;
                assert!(fabric.body["Oem"]["Sunfish_RM"]["FabricSharedWith"].is_array(), "fabric not merged");
                server.stop().await;
            }
            None => println!("| {name} | CXL mockups | skipped: ../shared not found | | | |"),
        }
        let server = start(backend).await;
        let agent = StubAgent::synthetic("Synth", switches, ports).await;
        let (r, u) = register_and_upload(&server, &agent, "Synth", "/redfish/v1/Fabrics/Synth").await;
        println!("| {name} | synthetic | {resources} | {:.1} | {:.1} | {:.1} |", ms(r), ms(u), ms(r + u));
        let t = Instant::now();
        let (status, _) = agent.upload("/redfish/v1/Fabrics/Synth").await;
        assert_eq!(status, 200);
        println!("| {name} | synthetic, re-upload unchanged | {resources} | | {:.1} | |", ms(t.elapsed()));
        let last = format!("/redfish/v1/Fabrics/Synth/Switches/S{}/Ports/P{}", switches - 1, ports - 1);
        assert_eq!(server.get(&last).await.status, 200, "last port not stored");
        server.stop().await;
        agent.stop().await;
    }
}
