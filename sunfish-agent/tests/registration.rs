//! The agent library in process against an in-process upstream `sunfish-server` on loopback:
//! registration, upload, hardware changes reaching the upstream, re-registration after the
//! upstream lost the agent, and an agent started before its upstream.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::{json, Value};
use sunfish_agent::{AgentConfig, Phase};
use sunfish_core::hardware::{ChangeSink, HardwareChange, HardwareManager};
use sunfish_core::{Core, ResourcePath, WriteOp};
use sunfish_server::ServerConfig;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use sunfish_storage_memory as _;

const WAIT: Duration = Duration::from_secs(10);
const SOURCES: &str = "/redfish/v1/AggregationService/AggregationSources";

/// A server or agent running in this process until dropped.
struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Running {
    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Starts an upstream (memory store, auth off, forwarder `agents`) on `addr`.
async fn upstream(addr: SocketAddr) -> Running {
    upstream_with(addr, |_| {}).await
}

/// [`upstream`] with `tweak` applied to its configuration.
async fn upstream_with(addr: SocketAddr, tweak: impl FnOnce(&mut ServerConfig)) -> Running {
    let mut cfg = ServerConfig::default();
    cfg.storage.backend = "memory".into();
    cfg.auth.enabled = false;
    tweak(&mut cfg);
    cfg.aggregation.forwarder = "agents".into();
    let state = sunfish_server::build(&cfg).await.unwrap();
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(sunfish_server::run(listener, state, async {
        let _ = rx.await;
    }));
    Running { addr, stop: Some(tx), task: Some(task) }
}

/// A tree with one fabric and one switch, as a seed directory.
fn seed_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let files = [
        (
            "",
            json!({"@odata.id": "/redfish/v1", "@odata.type": "#ServiceRoot.v1_16_0.ServiceRoot", "Id": "RootService",
            "Fabrics": {"@odata.id": "/redfish/v1/Fabrics"}, "EventService": {"@odata.id": "/redfish/v1/EventService"}}),
        ),
        (
            "EventService",
            json!({"@odata.id": "/redfish/v1/EventService", "@odata.type": "#EventService.v1_10_0.EventService",
            "Id": "EventService", "Subscriptions": {"@odata.id": "/redfish/v1/EventService/Subscriptions"}}),
        ),
        (
            "EventService/Subscriptions",
            json!({"@odata.id": "/redfish/v1/EventService/Subscriptions",
            "@odata.type": "#EventDestinationCollection.EventDestinationCollection", "Members": [], "Members@odata.count": 0}),
        ),
        (
            "Fabrics",
            json!({"@odata.id": "/redfish/v1/Fabrics", "@odata.type": "#FabricCollection.FabricCollection",
            "Members": [{"@odata.id": "/redfish/v1/Fabrics/F"}], "Members@odata.count": 1}),
        ),
        (
            "Fabrics/F",
            json!({"@odata.id": "/redfish/v1/Fabrics/F", "@odata.type": "#Fabric.v1_3_0.Fabric", "Id": "F",
            "Switches": {"@odata.id": "/redfish/v1/Fabrics/F/Switches"}}),
        ),
        (
            "Fabrics/F/Switches",
            json!({"@odata.id": "/redfish/v1/Fabrics/F/Switches",
            "@odata.type": "#SwitchCollection.SwitchCollection",
            "Members": [{"@odata.id": "/redfish/v1/Fabrics/F/Switches/S"}], "Members@odata.count": 1}),
        ),
        (
            "Fabrics/F/Switches/S",
            json!({"@odata.id": "/redfish/v1/Fabrics/F/Switches/S",
            "@odata.type": "#Switch.v1_9_0.Switch", "Id": "S", "Name": "switch S"}),
        ),
    ];
    for (rel, v) in files {
        let d = dir.path().join(rel);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("index.json"), serde_json::to_vec(&v).unwrap()).unwrap();
    }
    dir
}

/// A hardware manager that applies writes as sent and hands out its change sink.
#[derive(Default)]
struct Device {
    sink: Mutex<Option<ChangeSink>>,
}

#[async_trait]
impl HardwareManager for Device {
    async fn apply(&self, _core: &Core, _op: &WriteOp) -> sunfish_core::Result<Option<Value>> {
        Ok(None)
    }

    async fn start(&self, _core: &Core, changes: ChangeSink) -> sunfish_core::Result<()> {
        *self.sink.lock() = Some(changes);
        Ok(())
    }
}

/// Starts an agent over `seed` registering with `upstream` as `name`; returns it, its phase and
/// its hardware.
async fn agent(seed: &std::path::Path, upstream: &str, name: &str) -> (Running, watch::Receiver<Phase>, Arc<Device>) {
    agent_with(seed, upstream, name, |_| {}).await
}

/// [`agent`] with `tweak` applied to its configuration.
async fn agent_with(
    seed: &std::path::Path,
    upstream: &str,
    name: &str,
    tweak: impl FnOnce(&mut AgentConfig),
) -> (Running, watch::Receiver<Phase>, Arc<Device>) {
    let mut cfg = AgentConfig::default();
    cfg.storage.seed = seed.to_string_lossy().into_owned();
    cfg.agent.upstream = Some(upstream.to_string());
    cfg.agent.name = name.into();
    cfg.agent.heartbeat_ms = 100;
    cfg.agent.retry_max_ms = 400;
    cfg.agent.request_timeout_ms = 5_000;
    tweak(&mut cfg);
    let device = Arc::new(Device::default());
    let built = sunfish_agent::build_with_manager(&cfg, device.clone()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    let (ptx, prx) = oneshot::channel();
    let task = tokio::spawn(sunfish_agent::run_with_phase(
        listener,
        built,
        async {
            let _ = rx.await;
        },
        move |p| {
            let _ = ptx.send(p);
        },
    ));
    let phase = prx.await.unwrap();
    (Running { addr, stop: Some(tx), task: Some(task) }, phase, device)
}

async fn get(url: &str) -> (u16, Value) {
    get_as(url, None).await
}

async fn get_as(url: &str, user: Option<(&str, &str)>) -> (u16, Value) {
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut req = c.get(url);
    if let Some((u, p)) = user {
        req = req.basic_auth(u, Some(p));
    }
    match req.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

/// Polls `f` until it returns `Some`, or panics after [`WAIT`] naming `what`.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn registered(phase: &watch::Receiver<Phase>) -> String {
    eventually("registration", || {
        let p = phase.borrow().clone();
        async move {
            match p {
                Phase::Registered { context } => Some(context),
                _ => None,
            }
        }
    })
    .await
}

/// The agent prepares its tree (ConnectionMethod, subscription aimed at the upstream and
/// limited to the device), registers, and its inventory appears upstream owned by its
/// AggregationSource; a change its hardware reports reaches the upstream's copy.
#[tokio::test]
async fn registers_uploads_and_relays_hardware_changes() {
    let up = upstream("127.0.0.1:0".parse().unwrap()).await;
    let seed = seed_tree();
    let (a, phase, device) = agent(seed.path(), &up.url(), "Dev").await;
    let context = registered(&phase).await;

    let (s, cm) = get(&format!("{}/redfish/v1/AggregationService/ConnectionMethods/Dev", a.url())).await;
    assert_eq!(s, 200, "{cm}");
    assert_eq!(cm["ConnectionMethodType"], "Redfish");
    let (_, sub) = get(&format!("{}/redfish/v1/EventService/Subscriptions/SunfishServer", a.url())).await;
    assert_eq!(sub["Destination"], format!("{}/EventListener", up.url()), "{sub}");
    assert_eq!(sub["Context"], context.as_str(), "{sub}");
    assert_eq!(sub["OriginResources"], json!([{"@odata.id": "/redfish/v1/Fabrics"}]), "{sub}");
    assert_eq!(sub["DeliveryRetryPolicy"], "RetryForeverWithBackoff", "{sub}");

    let source = format!("{SOURCES}/{context}");
    let (_, src) = get(&format!("{}{source}", up.url())).await;
    assert_eq!(src["HostName"], a.url(), "{src}");
    let (_, sw) = get(&format!("{}/redfish/v1/Fabrics/F/Switches/S", up.url())).await;
    assert_eq!(sw["Oem"]["Sunfish_RM"]["ManagingAgent"]["@odata.id"], source.as_str(), "{sw}");
    // The agent's own subscription is not inventory.
    let (s, _) = get(&format!("{}/redfish/v1/EventService/Subscriptions/SunfishServer", up.url())).await;
    assert_eq!(s, 404);

    let sink = device.sink.lock().clone().unwrap();
    let path = ResourcePath::parse("/redfish/v1/Fabrics/F/Switches/S").unwrap();
    sink.report(HardwareChange::Changed(
        path,
        json!({"@odata.id": "/redfish/v1/Fabrics/F/Switches/S", "@odata.type": "#Switch.v1_9_0.Switch", "Id": "S",
            "Name": "switch S, renamed by the hardware"}),
    ));
    let url = format!("{}/redfish/v1/Fabrics/F/Switches/S", up.url());
    eventually("the hardware change upstream", || {
        let url = url.clone();
        async move { (get(&url).await.1["Name"] == "switch S, renamed by the hardware").then_some(()) }
    })
    .await;
    a.stop().await;
    up.stop().await;
}

/// An upstream restarted on an empty store has lost the agent: the agent notices (404 on its
/// AggregationSource), registers again and uploads again.
#[tokio::test]
async fn registers_again_when_the_upstream_lost_it() {
    let up = upstream("127.0.0.1:0".parse().unwrap()).await;
    let addr = up.addr;
    let seed = seed_tree();
    let (a, phase, _) = agent(seed.path(), &up.url(), "Dev").await;
    let first = registered(&phase).await;
    up.stop().await;
    let up = upstream(addr).await;
    let second = eventually("a new registration", || {
        let p = phase.borrow().clone();
        let first = first.clone();
        async move {
            match p {
                Phase::Registered { context } if context != first => Some(context),
                _ => None,
            }
        }
    })
    .await;
    let (s, src) = get(&format!("{}{SOURCES}/{second}", up.url())).await;
    assert_eq!(s, 200, "{src}");
    let url = format!("{}/redfish/v1/Fabrics/F/Switches/S", up.url());
    eventually("the inventory uploaded again", || {
        let url = url.clone();
        async move { (get(&url).await.0 == 200).then_some(()) }
    })
    .await;
    a.stop().await;
    up.stop().await;
}

/// An agent started before its upstream retries until the upstream answers, then registers.
#[tokio::test]
async fn starts_before_the_upstream() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let seed = seed_tree();
    let (a, phase, _) = agent(seed.path(), &format!("http://{port}"), "Early").await;
    eventually("a failed attempt or two", || {
        let p = phase.borrow().clone();
        async move { (p == Phase::Registering).then_some(()) }
    })
    .await;
    let up = upstream(port).await;
    let context = registered(&phase).await;
    let (s, _) = get(&format!("{}{SOURCES}/{context}", up.url())).await;
    assert_eq!(s, 200);
    a.stop().await;
    up.stop().await;
}

/// With authentication on upstream (and `open_event_listener` off), the agent registers with
/// the configured account, then uses the account the upstream handed it in the subscription's
/// `HttpHeaders`: its upload is accepted and its heartbeats find its AggregationSource (no
/// re-registration).
#[tokio::test]
async fn registers_with_credentials_then_uses_its_own_account() {
    const ADMIN: (&str, &str) = ("admin", "admin-password-1");
    let up = upstream_with("127.0.0.1:0".parse().unwrap(), |c| {
        c.auth.enabled = true;
        c.auth.admin_password = Some(ADMIN.1.into());
        c.aggregation.liveness_interval_ms = 100;
    })
    .await;
    let seed = seed_tree();
    let (a, phase, _) = agent_with(seed.path(), &up.url(), "Dev", |c| {
        c.agent.upstream_user = Some(ADMIN.0.into());
        c.agent.upstream_password = Some(ADMIN.1.into());
    })
    .await;
    let context = registered(&phase).await;
    let (s, src) = get_as(&format!("{}{SOURCES}/{context}", up.url()), Some(ADMIN)).await;
    assert_eq!(s, 200, "{src}");
    let url = format!("{}/redfish/v1/Fabrics/F/Switches/S", up.url());
    eventually("the inventory upstream", || {
        let url = url.clone();
        async move { (get_as(&url, Some(ADMIN)).await.0 == 200).then_some(()) }
    })
    .await;
    // Heartbeats and AggregationSource checks pass with the agent's own account: LastSeen moves
    // on and the registrar never goes back to registering.
    let mut follow = phase.clone();
    follow.borrow_and_update();
    let seen_phases = Arc::new(Mutex::new(Vec::new()));
    let log = seen_phases.clone();
    let watcher = tokio::spawn(async move {
        while follow.changed().await.is_ok() {
            log.lock().push(follow.borrow().clone());
        }
    });
    let source = format!("{}{SOURCES}/{context}", up.url());
    // Three moves of LastSeen (written at most every 100 ms) span several 100 ms heartbeats.
    for _ in 0..3 {
        let (_, before) = get_as(&source, Some(ADMIN)).await;
        let seen = before["Oem"]["Sunfish_RM"]["LastSeen"].clone();
        eventually("LastSeen to move on", || {
            let source = source.clone();
            let seen = seen.clone();
            async move { (get_as(&source, Some(ADMIN)).await.1["Oem"]["Sunfish_RM"]["LastSeen"] != seen).then_some(()) }
        })
        .await;
    }
    watcher.abort();
    assert_eq!(*seen_phases.lock(), Vec::<Phase>::new(), "the registrar left Registered");
    assert_eq!(*phase.borrow(), Phase::Registered { context });
    a.stop().await;
    up.stop().await;
}
