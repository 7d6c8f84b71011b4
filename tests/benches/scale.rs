//! Scale and soak benchmark (issue 7; a load run, not a test): `cargo bench -p sunfish-tests --bench scale`.
//!
//! Layout: the release `sunfish-server` binary (built on demand, as for the e2e tests) runs as a
//! child process on 127.0.0.1 with authentication on; this process generates the data, times
//! the server's start, reads its memory from `/proc/<pid>/status`, and drives the load with the
//! in-tree hyper generator ([`sunfish_tests::load`]), sharing the machine's cores with it.
//!
//! **The data.** A seed tree in the `index.json` layout (under `target/tmp`, not a tmpfs): the
//! builtin seed (`conf/seed`) plus Fabric `Scale` with `switches` switches, each with a `Ports`
//! collection of `ports` ports and one `PortMetrics` per port, shaped and sized after the
//! reference's CXL mockups (a port ~2.5 KB of pretty JSON): `2 + switches × (2 + 2 × ports)`
//! resources, 100,002 by default. Servers load it through `storage.seed` (a directory), which is
//! how an empty store is filled at start: the memory backend imports it at every start; the fs
//! backend imports it once into its store (written by the backend itself, so in its own format
//! and through its own journal), and later starts load that store from disk.
//!
//! **Scale.** 1. memory: start on the seed, time exec → first 200 on `GET /redfish/v1`, RSS
//! (`VmRSS`) once loaded and the peak (`VmHWM`), then GET every generated resource once (32
//! connections; each resource keeps its serialized JSON once read) and RSS again. 2. fs (fsync
//! on): the first start imports the seed; then `BENCH_STARTS` (default 3) starts from disk with
//! the store's files evicted from the page cache first (`posix_fadvise(DONTNEED)` on every file;
//! directory entries and inodes stay cached, which needs root and would disturb others), the
//! same number with a warm cache; start-up time best and median, RSS once loaded, and after a
//! GET of everything on the last start.
//!
//! **Soak.** Per backend of `BENCH_SOAK_BACKENDS` (default `memory,fs`; fs with fsync on, on the
//! store above), one server, a phase at 32 and then at 256 connections. Each phase runs a
//! warm-up (`BENCH_SOAK_WARMUP`, default 60 s) and then `BENCH_SOAK_SECONDS` (default 600) of a
//! mixed workload that keeps the store's size constant; each connection repeats a cycle of 200
//! operations, interleaved: 120 GETs of a leaf (ports and metrics in turn across the tree), 40
//! GETs of a 49-member `Ports` collection, 24 PATCHes of the connection's own port with
//! `If-Match` (the ETag of its previous answer), 14 POSTs of a Fabric each followed by the
//! DELETE of what was posted, and 2 session churns (login, a GET with the new token, logout).
//! Every request but the logins carries one shared session token. The server's RSS is read
//! every `BENCH_SOAK_SAMPLE` seconds (default 10). Per phase: errors (wrong status, transport
//! failure) and timeouts (10 s) over the whole phase, warm-up included; req/s, p50 and p99 after
//! the warm-up; RSS at the end of the warm-up, last, min and max, and the drift (last against
//! the end-of-warm-up sample; max against min); the `Fabrics` and `Sessions` member counts
//! before and after (they must not change).
//!
//! Then the issue-7 checks and the results as Markdown. `BENCH_QUICK=1` is a few-second smoke
//! pass (402 generated resources, 1 s phases at 4 and 16 connections): it proves the code
//! works; its numbers mean little. `BENCH_ONLY=scale` or `BENCH_ONLY=soak` runs one part.

// A benchmark program: a failed setup step should stop it loudly.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST, IF_MATCH};
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};
use sunfish_tests::agent::collection;
use sunfish_tests::load::{
    connect, cpu_seconds, exchange, machine_cpu_seconds, percentile_ms, rss_mib, status_kib, Answer, Failure, Sender,
};
use sunfish_tests::{free_port, server_command, workspace_root, Client};

/// The bootstrap administrator.
const ADMIN: (&str, &str) = ("admin", "bench-password-1");
/// The generated fabric.
const FABRIC: &str = "/redfish/v1/Fabrics/Scale";
/// Targets of issue 7.
const RSS_TARGET_MIB: f64 = 300.0;
const STARTUP_TARGET: Duration = Duration::from_secs(5);
const DRIFT_TARGET_PERCENT: f64 = 10.0;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(run(Settings::from_env()));
}

/// What the environment asks for.
#[derive(Debug, Clone)]
struct Settings {
    quick: bool,
    /// Switches of Fabric `Scale`.
    switches: usize,
    /// Ports per switch (each with its metrics).
    ports: usize,
    /// Timed fs starts from disk, cold and warm each.
    starts: usize,
    /// Backends soaked.
    soak_backends: Vec<String>,
    /// Connections of each soak phase, in order.
    connections: Vec<usize>,
    soak_warmup: Duration,
    soak: Duration,
    /// RSS sampling period.
    sample: Duration,
    scale: bool,
    soak_on: bool,
}

fn env_f64(name: &str) -> Option<f64> {
    std::env::var(name).ok().and_then(|s| s.parse::<f64>().ok()).filter(|v| *v >= 0.0)
}

impl Settings {
    fn from_env() -> Self {
        let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let secs = |name: &str, full: f64, smoke: f64| {
            Duration::from_secs_f64(env_f64(name).unwrap_or(if quick { smoke } else { full }))
        };
        let only = std::env::var("BENCH_ONLY").unwrap_or_default();
        let soak_backends = std::env::var("BENCH_SOAK_BACKENDS")
            .unwrap_or_else(|_| "memory,fs".into())
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>();
        for b in &soak_backends {
            assert!(b == "memory" || b == "fs", "BENCH_SOAK_BACKENDS: unknown backend {b:?} (known: memory, fs)");
        }
        Settings {
            quick,
            switches: if quick { 4 } else { 1_000 },
            ports: 49,
            starts: env_f64("BENCH_STARTS").map_or(if quick { 1 } else { 3 }, |n| (n as usize).max(1)),
            soak_backends,
            connections: if quick { vec![4, 16] } else { vec![32, 256] },
            soak_warmup: secs("BENCH_SOAK_WARMUP", 60.0, 0.5),
            soak: secs("BENCH_SOAK_SECONDS", 600.0, 1.0).max(Duration::from_millis(100)),
            sample: secs("BENCH_SOAK_SAMPLE", 10.0, 0.25).max(Duration::from_millis(100)),
            scale: only.is_empty() || only == "scale",
            soak_on: only.is_empty() || only == "soak",
        }
    }

    /// Resources generated on top of the builtin seed.
    fn generated(&self) -> usize {
        2 + self.switches * (2 + 2 * self.ports)
    }
}

// ---------------------------------------------------------------------------------------------
// The data.

fn link(uri: &str) -> Value {
    json!({"@odata.id": uri})
}

fn switch_uri(s: usize) -> String {
    format!("{FABRIC}/Switches/S{s}")
}

fn port_uri(s: usize, p: usize) -> String {
    format!("{FABRIC}/Switches/S{s}/Ports/P{p}")
}

/// A CXL switch, after the reference mockup's `CXL2`.
fn switch(s: usize) -> Value {
    let uri = switch_uri(s);
    json!({
        "@odata.id": uri,
        "@odata.type": "#Switch.v1_9_1.Switch",
        "Id": format!("S{s}"),
        "Name": format!("CXL Expansion Switch {s}"),
        "CXL": {"MaxVCSsSupported": 4, "TotalNumbervPPBs": 4, "VCS": {"HDMDecoders": 12}},
        "Ports": link(&format!("{uri}/Ports")),
        "Status": {"Health": "OK", "HealthRollup": "OK", "State": "Enabled"},
        "SwitchType": "CXL",
        "UUID": format!("ac14c5f1-0fea-42dd-8a19-{s:012x}")
    })
}

/// A CXL port linked to the same port of the next switch, after the reference mockup's
/// `CXL2/Ports/F4` (about 2.5 KB of pretty JSON).
fn port(switches: usize, s: usize, p: usize) -> Value {
    let uri = port_uri(s, p);
    let peer = (s + 1) % switches;
    json!({
        "@odata.id": uri,
        "@odata.type": "#Port.v1_10_0.Port",
        "Actions": {"#Port.ResetPPB": {"target": format!("{uri}/Actions/Port.ResetPPB")}},
        "ActiveWidth": 16,
        "CXL": {
            "Congestion": {
                "BackpressureSampleInterval": 3,
                "CompletionCollectionInterval": 2,
                "CongestionTelemetryEnabled": true,
                "EgressModeratePercentage": 20,
                "EgressSeverePercentage": 3,
                "MaxSustainedRequestCmpBias": 30
            },
            "ConnectedDeviceMode": "PBR",
            "ConnectedDeviceType": "CXLSwitch (reserved)",
            "CurrentPortConfigurationState": "FabricLink (reserved)",
            "LinkPartnerTransmit": {"LinkPartnerId": format!("ac14c5f1-0fea-42dd-8a19-{s:012x}"), "PortId": p.to_string()},
            "LinkPartnerReceive": {"LinkPartnerId": format!("ac14c5f1-0fea-42dd-8a19-{peer:012x}"), "PortId": p.to_string()},
            "MaxLogicalDeviceCount": 8,
            "QoSTelemetryCapabilities": {"EgressPortBackpressureSupported": true, "TemporaryThroughputReductionSupported": true},
            "TemporaryThroughputReductionEnabled": true
        },
        "CapableProtocolVersions": ["1.1", "2.0"],
        "CurrentProtocolVersion": "2.0",
        "CurrentSpeedGbps": 256,
        "Description": format!("CXL Fabric Port {p} in switch S{s}"),
        "Id": format!("P{p}"),
        "InterfaceEnabled": true,
        "LinkNetworkTechnology": "PCIe",
        "LinkState": "Enabled",
        "LinkStatus": "LinkUp",
        "Links": {
            "ConnectedSwitches": [link(&switch_uri(peer))],
            "ConnectedSwitchPorts": [link(&port_uri(peer, p))]
        },
        "MaxSpeedGbps": 512,
        "Metrics": link(&format!("{uri}/Metrics")),
        "Name": format!("CXL Port P{p}"),
        "PortId": p.to_string(),
        "PortMedium": "Optical",
        "PortProtocol": "CXL",
        "PortType": "InterswitchPort",
        "RemotePortId": p.to_string(),
        "Status": {"Health": "OK", "HealthRollup": "OK", "State": "Enabled"},
        "Width": 8
    })
}

/// A port's metrics, after the reference mockup's `Ports/F4/Metrics`.
fn port_metrics(s: usize, p: usize) -> Value {
    json!({
        "@odata.id": format!("{}/Metrics", port_uri(s, p)),
        "@odata.type": "#PortMetrics.v1_5_0.PortMetrics",
        "CXL": {"BackpressureAveragePercentage": 17},
        "Description": format!("CXL Port {p} Metrics of switch S{s}"),
        "Id": "Metrics",
        "Name": format!("CXL Port {p} Metrics")
    })
}

/// Every generated resource, in a stable order: the fabric, its `Switches`, then per switch the
/// switch, its `Ports`, and each port followed by its metrics.
fn generated(settings: &Settings) -> impl Iterator<Item = (String, Value)> + '_ {
    let n = settings.switches;
    let switches: Vec<String> = (0..n).map(switch_uri).collect();
    let head = vec![
        (
            FABRIC.to_string(),
            json!({"@odata.id": FABRIC, "@odata.type": "#Fabric.v1_3_0.Fabric", "Id": "Scale",
                "Name": "Scale benchmark fabric", "FabricType": "CXL",
                "Status": {"State": "Enabled", "Health": "OK"}, "Switches": link(&format!("{FABRIC}/Switches"))}),
        ),
        (format!("{FABRIC}/Switches"), collection(&format!("{FABRIC}/Switches"), "SwitchCollection", &switches)),
    ];
    head.into_iter().chain((0..n).flat_map(move |s| {
        let ports: Vec<String> = (0..settings.ports).map(|p| port_uri(s, p)).collect();
        let coll = format!("{}/Ports", switch_uri(s));
        [(switch_uri(s), switch(s)), (coll.clone(), collection(&coll, "PortCollection", &ports))].into_iter().chain(
            (0..settings.ports).flat_map(move |p| {
                [(port_uri(s, p), port(n, s, p)), (format!("{}/Metrics", port_uri(s, p)), port_metrics(s, p))]
            }),
        )
    }))
}

/// Writes `value` as the fs backend does: pretty JSON with 4-space indentation.
fn write_index(file: &Path, value: &Value) {
    let mut out = Vec::with_capacity(4096);
    let mut ser =
        serde_json::Serializer::with_formatter(&mut out, serde_json::ser::PrettyFormatter::with_indent(b"    "));
    serde::Serialize::serialize(value, &mut ser).expect("json");
    std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
    std::fs::write(file, out).expect("write");
}

/// The `index.json` of `uri` below a tree's `root`.
fn index_of(root: &Path, uri: &str) -> PathBuf {
    let rel = uri.trim_start_matches("/redfish/v1").trim_start_matches('/');
    root.join(rel).join("index.json")
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read seed").flatten() {
        let target = to.join(e.file_name());
        if e.file_type().expect("file type").is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).expect("copy");
        }
    }
}

/// The seed tree (`<dir>/seed`) and the place of the fs store (`<dir>/fs`).
/// `BENCH_STORE=DIR` keeps both in `DIR` and reuses what is there (to profile a server on
/// them afterwards); otherwise they are in a temporary folder removed at the end.
struct Store {
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl Store {
    fn generate(settings: &Settings) -> Self {
        let store = match std::env::var_os("BENCH_STORE") {
            Some(dir) => Store { dir: PathBuf::from(dir), _temp: None },
            None => {
                // Under target/ rather than /tmp: a tmpfs /tmp would make disk reads and fsync free.
                let parent = workspace_root().join("target/tmp");
                std::fs::create_dir_all(&parent).expect("target/tmp");
                let temp = tempfile::tempdir_in(parent).expect("tempdir");
                Store { dir: temp.path().to_path_buf(), _temp: Some(temp) }
            }
        };
        let seed = store.seed();
        if seed.exists() {
            println!("scale: reusing the seed tree in {}", seed.display());
            return store;
        }
        copy_tree(&workspace_root().join("conf/seed"), &seed);
        let fabrics = index_of(&seed, "/redfish/v1/Fabrics");
        let mut coll: Value = serde_json::from_slice(&std::fs::read(&fabrics).expect("Fabrics")).expect("json");
        coll["Members"] = json!([link(FABRIC)]);
        coll["Members@odata.count"] = json!(1);
        write_index(&fabrics, &coll);
        for (uri, value) in generated(settings) {
            write_index(&index_of(&seed, &uri), &value);
        }
        store
    }

    fn seed(&self) -> PathBuf {
        self.dir.join("seed")
    }

    fn fs_root(&self) -> PathBuf {
        self.dir.join("fs")
    }

    /// Whether the fs store was imported already (a reused `BENCH_STORE`).
    fn fs_imported(&self) -> bool {
        self.fs_root().join("index.json").exists()
    }
}

/// Drops the page-cache pages of every file below `root` (after writing back what is dirty),
/// so that the next start reads them from the disk. Directory entries and inodes stay cached.
fn evict(root: &Path) -> usize {
    rustix::fs::sync();
    let mut files = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read store").flatten() {
            let ft = e.file_type().expect("file type");
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                let f = std::fs::File::open(e.path()).expect("open");
                rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed)
                    .unwrap_or_else(|err| panic!("posix_fadvise on {}: {err}", e.path().display()));
                files += 1;
            }
        }
    }
    files
}

// ---------------------------------------------------------------------------------------------
// The server.

/// A `sunfish-server` child process (killed when dropped; [`Server::stop`] ends it gently).
struct Server {
    backend: &'static str,
    addr: SocketAddr,
    child: Child,
    /// When it was spawned, and the CPU seconds the machine and this process had used then.
    spawned: Instant,
    cpu_at_spawn: (f64, f64),
    /// Cores' worth of CPU other processes used between the spawn and the first answer (a build
    /// next door slows a start down).
    others: f64,
}

impl Server {
    /// Spawns the release server, auth on, on `backend` (fs: fsync on at `root`), seeding an
    /// empty store from `seed`.
    fn spawn(backend: &'static str, seed: &Path, root: Option<&Path>) -> Self {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut cmd = server_command();
        cmd.args(["--listen", &addr.to_string()]).stdout(Stdio::null()).stderr(Stdio::null());
        cmd.env("SUNFISH__STORAGE__BACKEND", backend).env("SUNFISH__STORAGE__SEED", seed);
        cmd.env("SUNFISH__AUTH__ENABLED", "true");
        cmd.env("SUNFISH__AUTH__ADMIN_USER", ADMIN.0).env("SUNFISH__AUTH__ADMIN_PASSWORD", ADMIN.1);
        if let Some(root) = root {
            cmd.env("SUNFISH__STORAGE__OPTIONS__ROOT", root).env("SUNFISH__STORAGE__OPTIONS__FSYNC", "true");
        }
        let cpu_at_spawn = (machine_cpu_seconds(), cpu_seconds("self"));
        let spawned = Instant::now();
        let child = cmd.spawn().expect("spawn sunfish-server");
        Server { backend, addr, child, spawned, cpu_at_spawn, others: 0.0 }
    }

    /// Waits for the first 200 on `GET /redfish/v1` (polled every 5 ms); returns the time since
    /// the spawn.
    async fn ready(&mut self, limit: Duration) -> Duration {
        let client = Client::new(format!("http://{}", self.addr));
        let url = format!("{}/redfish/v1", client.base);
        loop {
            if client.http.get(&url).send().await.is_ok_and(|r| r.status() == StatusCode::OK) {
                let t = self.spawned.elapsed();
                let (machine, me) = (machine_cpu_seconds(), cpu_seconds("self"));
                let server = cpu_seconds(&self.pid().to_string());
                let others = (machine - self.cpu_at_spawn.0) - (me - self.cpu_at_spawn.1) - server;
                self.others = others.max(0.0) / t.as_secs_f64();
                return t;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("sunfish-server ({}) exited before answering: {status}", self.backend);
            }
            assert!(
                self.spawned.elapsed() < limit,
                "sunfish-server ({}) did not answer within {limit:?}",
                self.backend
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn rss(&self) -> f64 {
        rss_mib(self.pid()).expect("server gone")
    }

    /// Peak resident size so far (`VmHWM`), MiB.
    fn peak(&self) -> f64 {
        status_kib(self.pid(), "VmHWM").expect("server gone") as f64 / 1024.0
    }

    /// SIGTERM, then waits for the exit (the fs backend flushes and closes its store).
    async fn stop(mut self) {
        // Our own child, not reaped yet: the pid is still its own.
        rustix::process::kill_process(rustix::process::Pid::from_child(&self.child), rustix::process::Signal::TERM)
            .expect("SIGTERM");
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.child.try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "sunfish-server ({}) did not stop within 60 s", self.backend);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Logs in as the administrator; returns the token and the session's URI.
async fn login(addr: SocketAddr) -> (String, String) {
    let mut sender = connect(addr).await.expect("connect");
    let a = exchange(&mut sender, login_request(addr)).await.expect("login");
    assert_eq!(a.status, StatusCode::CREATED, "login");
    (a.header("x-auth-token").expect("token").to_string(), a.header("location").expect("location").to_string())
}

/// Ends a session from [`login`] (sessions are stored: one left behind shows on the next start).
async fn logout(addr: SocketAddr, token: &str, session: &str) {
    let mut sender = connect(addr).await.expect("connect");
    let a =
        exchange(&mut sender, request(Method::DELETE, session, addr, Some(token), None, None)).await.expect("logout");
    assert!(a.status.is_success(), "logout: {}", a.status);
}

fn login_request(addr: SocketAddr) -> Request<Full<Bytes>> {
    let body = Bytes::from(json!({"UserName": ADMIN.0, "Password": ADMIN.1}).to_string());
    request(Method::POST, "/redfish/v1/SessionService/Sessions", addr, None, Some(body), None)
}

fn request(
    method: Method,
    path: &str,
    addr: SocketAddr,
    token: Option<&str>,
    body: Option<Bytes>,
    if_match: Option<&HeaderValue>,
) -> Request<Full<Bytes>> {
    let mut b = Request::builder().method(method).uri(path).header(HOST, addr.to_string());
    if let Some(t) = token {
        b = b.header("x-auth-token", t);
    }
    if let Some(tag) = if_match {
        b = b.header(IF_MATCH, tag);
    }
    if body.is_some() {
        b = b.header(CONTENT_TYPE, "application/json");
    }
    b.body(Full::new(body.unwrap_or_default())).expect("request")
}

/// GETs every URI once over `connections` connections; returns the failures.
async fn read_all(addr: SocketAddr, token: &str, uris: Arc<Vec<String>>, connections: usize) -> usize {
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (uris, next, token) = (uris.clone(), next.clone(), token.to_string());
            tokio::spawn(async move {
                let mut failures = 0;
                let mut sender = connect(addr).await.expect("connect");
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(uri) = uris.get(i) else { return failures };
                    match exchange(&mut sender, request(Method::GET, uri, addr, Some(&token), None, None)).await {
                        Ok(a) if a.status == StatusCode::OK => {}
                        Ok(_) => failures += 1,
                        Err(_) => {
                            failures += 1;
                            sender = connect(addr).await.expect("reconnect");
                        }
                    }
                }
            })
        })
        .collect();
    let mut failures = 0;
    for t in tasks {
        failures += t.await.expect("reader");
    }
    failures
}

/// `Members@odata.count` of a collection.
async fn member_count(addr: SocketAddr, token: &str, path: &str) -> u64 {
    let client = Client::new(format!("http://{addr}"));
    let r = client.send(reqwest::Method::GET, path, None, &[("x-auth-token", token)]).await;
    assert_eq!(r.status, 200, "GET {path}: {}", r.body);
    r.body["Members@odata.count"].as_u64().expect("count")
}

// ---------------------------------------------------------------------------------------------
// Scale.

/// What the scale part measured.
#[derive(Debug, Default)]
struct ScaleResults {
    memory_start: Option<Duration>,
    memory_rss: Option<f64>,
    memory_peak: Option<f64>,
    memory_rss_read: Option<f64>,
    fs_import: Option<Duration>,
    fs_cold: Vec<Duration>,
    fs_warm: Vec<Duration>,
    fs_rss: Option<f64>,
    fs_peak: Option<f64>,
    fs_rss_read: Option<f64>,
    read_failures: usize,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Best and median.
fn best_median(v: &[Duration]) -> (Duration, Duration) {
    let mut s = v.to_vec();
    s.sort();
    (s.first().copied().unwrap_or_default(), s.get(s.len() / 2).copied().unwrap_or_default())
}

/// Lets the server finish what start-up left running (the first sweeps), then reads its RSS.
async fn settled_rss(server: &Server) -> (f64, f64) {
    tokio::time::sleep(Duration::from_secs(1)).await;
    (server.rss(), server.peak())
}

async fn scale(settings: &Settings, store: &Store) -> ScaleResults {
    let mut out = ScaleResults::default();
    let uris: Arc<Vec<String>> = Arc::new(generated(settings).map(|(u, _)| u).collect());

    let mut memory = Server::spawn("memory", &store.seed(), None);
    let t = memory.ready(Duration::from_secs(300)).await;
    let (rss, peak) = settled_rss(&memory).await;
    println!(
        "scale: memory: pid {}, answering {:.0} ms after exec (seeding {} resources; others used {:.2} cores); RSS {rss:.1} MiB, peak {peak:.1} MiB",
        memory.pid(),
        ms(t),
        uris.len(),
        memory.others
    );
    let (token, session) = login(memory.addr).await;
    let started = Instant::now();
    out.read_failures += read_all(memory.addr, &token, uris.clone(), 32).await;
    logout(memory.addr, &token, &session).await;
    let read = memory.rss();
    println!(
        "scale: memory: GET of all {} generated resources in {:.1} s; RSS {read:.1} MiB, peak {:.1} MiB",
        uris.len(),
        started.elapsed().as_secs_f64(),
        memory.peak()
    );
    (out.memory_start, out.memory_rss, out.memory_peak, out.memory_rss_read) =
        (Some(t), Some(rss), Some(peak), Some(read));
    memory.stop().await;

    let root = store.fs_root();
    if store.fs_imported() {
        println!("scale: fs: reusing the store in {}", root.display());
    } else {
        let mut fs = Server::spawn("fs", &store.seed(), Some(&root));
        let t = fs.ready(Duration::from_secs(900)).await;
        println!(
            "scale: fs: first start imported the seed ({} resources) into an empty store in {:.2} s",
            uris.len(),
            t.as_secs_f64()
        );
        out.fs_import = Some(t);
        let stopping = Instant::now();
        fs.stop().await;
        println!("scale: fs: stopped in {:.2} s", stopping.elapsed().as_secs_f64());
    }

    for cold in [true, false] {
        for i in 0..settings.starts {
            let evicted = if cold { evict(&root) } else { 0 };
            let mut fs = Server::spawn("fs", &store.seed(), Some(&root));
            let t = fs.ready(Duration::from_secs(300)).await;
            let (rss, peak) = settled_rss(&fs).await;
            println!(
                "scale: fs: start {} ({}): answering {:.0} ms after exec (others used {:.2} cores); RSS {rss:.1} MiB, peak {peak:.1} MiB",
                i + 1,
                if cold { format!("page cache of {evicted} files evicted") } else { "warm cache".to_string() },
                ms(t),
                fs.others
            );
            if cold {
                out.fs_cold.push(t);
                if i == 0 {
                    (out.fs_rss, out.fs_peak) = (Some(rss), Some(peak));
                }
            } else {
                out.fs_warm.push(t);
            }
            if !cold && i + 1 == settings.starts {
                let (token, session) = login(fs.addr).await;
                out.read_failures += read_all(fs.addr, &token, uris.clone(), 32).await;
                logout(fs.addr, &token, &session).await;
                let read = fs.rss();
                println!("scale: fs: GET of all generated resources; RSS {read:.1} MiB, peak {:.1} MiB", fs.peak());
                out.fs_rss_read = Some(read);
            }
            fs.stop().await;
        }
    }
    let (best, median) = best_median(&out.fs_cold);
    let (wbest, wmedian) = best_median(&out.fs_warm);
    println!(
        "scale: fs start-up from disk: cold cache best {:.0} ms, median {:.0} ms; warm cache best {:.0} ms, median {:.0} ms",
        ms(best),
        ms(median),
        ms(wbest),
        ms(wmedian)
    );
    assert_eq!(out.read_failures, 0, "reading every generated resource failed {} times", out.read_failures);
    out
}

// ---------------------------------------------------------------------------------------------
// Soak.

/// One step of a connection's cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    GetLeaf,
    GetCollection,
    Patch,
    PostDelete,
    Session,
}

/// Operations per cycle of 200 (see the header).
const MIX: [(Op, u32); 5] =
    [(Op::GetLeaf, 120), (Op::GetCollection, 40), (Op::Patch, 24), (Op::PostDelete, 14), (Op::Session, 2)];

/// The cycle: the mix's operations spread evenly (smooth weighted round robin).
fn cycle() -> Vec<Op> {
    let total: i64 = MIX.iter().map(|(_, w)| i64::from(*w)).sum();
    let mut current = [0i64; MIX.len()];
    let mut out = Vec::new();
    for _ in 0..total {
        for (c, (_, w)) in current.iter_mut().zip(MIX) {
            *c += i64::from(w);
        }
        let (i, _) = current.iter().enumerate().max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i))).expect("mix");
        current[i] -= total;
        out.push(MIX[i].0);
    }
    out
}

/// What one connection saw.
#[derive(Debug, Default)]
struct Tally {
    /// Microseconds of every request started after the warm-up.
    latencies: Vec<u32>,
    errors: u64,
    timeouts: u64,
    first_error: Option<String>,
}

/// One soak connection: its requests and its state.
struct Conn {
    addr: SocketAddr,
    token: Arc<str>,
    sender: Option<Sender>,
    /// The connection's own port (PATCHed) and its last ETag.
    own: String,
    etag: Option<HeaderValue>,
    interface: bool,
    /// The next leaf and collection to read.
    leaf: usize,
    coll: usize,
    measured_from: Instant,
    tally: Tally,
}

impl Conn {
    fn fail(&mut self, what: String) {
        self.tally.errors += 1;
        self.tally.first_error.get_or_insert(what);
    }

    /// Sends one request; counts it (latency after the warm-up, or a failure). `None` when it
    /// failed, including a status other than `expect`.
    async fn send(&mut self, req: Request<Full<Bytes>>, expect: &[StatusCode]) -> Option<Answer> {
        let what = format!("{} {}", req.method(), req.uri());
        let mut sender = match self.sender.take() {
            Some(s) => s,
            None => match connect(self.addr).await {
                Ok(s) => s,
                Err(e) => {
                    self.fail(format!("{what}: {e}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    return None;
                }
            },
        };
        let sent = Instant::now();
        match exchange(&mut sender, req).await {
            Ok(a) => {
                self.sender = Some(sender);
                if !expect.contains(&a.status) {
                    self.fail(format!("{what}: status {}", a.status));
                    return None;
                }
                if sent >= self.measured_from {
                    let us = sent.elapsed().as_micros();
                    self.tally.latencies.push(u32::try_from(us).unwrap_or(u32::MAX));
                }
                Some(a)
            }
            Err(Failure::Timeout) => {
                self.tally.timeouts += 1;
                self.tally.first_error.get_or_insert(format!("{what}: timeout"));
                None
            }
            Err(Failure::Transport(e)) => {
                self.fail(format!("{what}: {e}"));
                None
            }
        }
    }

    async fn step(&mut self, op: Op, plan: &SoakPlan) {
        let (addr, token) = (self.addr, self.token.clone());
        let ok = [StatusCode::OK];
        let done = [StatusCode::OK, StatusCode::NO_CONTENT];
        match op {
            Op::GetLeaf => {
                self.leaf = (self.leaf + 7919) % plan.leaves.len();
                let req = request(Method::GET, &plan.leaves[self.leaf], addr, Some(&token), None, None);
                self.send(req, &ok).await;
            }
            Op::GetCollection => {
                self.coll = (self.coll + 1) % plan.collections.len();
                let req = request(Method::GET, &plan.collections[self.coll], addr, Some(&token), None, None);
                self.send(req, &ok).await;
            }
            Op::Patch => {
                let own = self.own.clone();
                if self.etag.is_none() {
                    let req = request(Method::GET, &own, addr, Some(&token), None, None);
                    self.etag = self.send(req, &ok).await.and_then(|a| a.etag());
                    return;
                }
                self.interface = !self.interface;
                let body = Bytes::from(json!({"InterfaceEnabled": self.interface}).to_string());
                let req = request(Method::PATCH, &own, addr, Some(&token), Some(body), self.etag.as_ref());
                // A failure (a 412 included) re-reads the ETag next time.
                self.etag = self.send(req, &ok).await.and_then(|a| a.etag());
            }
            Op::PostDelete => {
                let body = Bytes::from(plan.fabric_body.clone());
                let req = request(Method::POST, "/redfish/v1/Fabrics", addr, Some(&token), Some(body), None);
                let Some(created) = self.send(req, &[StatusCode::CREATED]).await else { return };
                let Some(location) = created.header("location").map(str::to_string) else {
                    self.fail("POST /redfish/v1/Fabrics: no Location".into());
                    return;
                };
                let req = request(Method::DELETE, &location, addr, Some(&token), None, None);
                self.send(req, &done).await;
            }
            Op::Session => {
                let Some(a) = self.send(login_request(addr), &[StatusCode::CREATED]).await else { return };
                let (Some(t), Some(loc)) = (a.header("x-auth-token"), a.header("location")) else {
                    self.fail("login: no token or Location".into());
                    return;
                };
                let (t, loc) = (t.to_string(), loc.to_string());
                let req = request(Method::GET, "/redfish/v1/SessionService", addr, Some(&t), None, None);
                self.send(req, &ok).await;
                let req = request(Method::DELETE, &loc, addr, Some(&t), None, None);
                self.send(req, &done).await;
            }
        }
    }
}

/// What the soak connections read and write.
struct SoakPlan {
    /// Ports and port metrics.
    leaves: Vec<String>,
    /// The `Ports` collections.
    collections: Vec<String>,
    fabric_body: String,
    cycle: Vec<Op>,
}

impl SoakPlan {
    fn new(settings: &Settings) -> Self {
        let mut leaves = Vec::new();
        for s in 0..settings.switches {
            for p in 0..settings.ports {
                leaves.push(port_uri(s, p));
                leaves.push(format!("{}/Metrics", port_uri(s, p)));
            }
        }
        SoakPlan {
            leaves,
            collections: (0..settings.switches).map(|s| format!("{}/Ports", switch_uri(s))).collect(),
            fabric_body: json!({"@odata.type": "#Fabric.v1_3_0.Fabric", "Name": "soak fabric", "FabricType": "CXL"})
                .to_string(),
            cycle: cycle(),
        }
    }

    /// The port connection `i` PATCHes (its own: no two connections share one).
    fn own_port(&self, settings: &Settings, i: usize) -> String {
        port_uri(i % settings.switches, (i / settings.switches) % settings.ports)
    }
}

/// The outcome of one soak phase.
#[derive(Debug, Clone)]
struct Phase {
    backend: &'static str,
    connections: usize,
    requests: usize,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    timeouts: u64,
    first_error: Option<String>,
    /// Server CPU per request after the warm-up, µs.
    cpu_us: f64,
    /// RSS samples (seconds since the phase start, MiB).
    samples: Vec<(f64, f64)>,
    /// RSS at the end of the warm-up.
    rss_warm: f64,
    /// Member counts of Fabrics and Sessions before and after.
    counts: [(u64, u64); 2],
}

impl Phase {
    fn after_warmup(&self, warmup: Duration) -> impl Iterator<Item = f64> + '_ {
        let w = warmup.as_secs_f64();
        self.samples.iter().filter(move |(t, _)| *t >= w - 1e-3).map(|(_, r)| *r)
    }

    fn rss_stats(&self, warmup: Duration) -> (f64, f64, f64) {
        let last = self.samples.last().map_or(0.0, |s| s.1);
        let min = self.after_warmup(warmup).fold(f64::INFINITY, f64::min);
        let max = self.after_warmup(warmup).fold(0.0, f64::max);
        (last, min, max)
    }

    /// Last against the end-of-warm-up sample, and max against min, in percent.
    fn drift(&self, warmup: Duration) -> (f64, f64) {
        let (last, min, max) = self.rss_stats(warmup);
        ((last / self.rss_warm - 1.0) * 100.0, (max / min - 1.0) * 100.0)
    }

    /// RSS flat: every sample after the warm-up within ±10% of the end-of-warm-up sample.
    fn flat(&self, warmup: Duration) -> bool {
        self.after_warmup(warmup).all(|r| ((r / self.rss_warm - 1.0) * 100.0).abs() <= DRIFT_TARGET_PERCENT)
    }
}

async fn soak_phase(
    settings: &Settings,
    server: &Server,
    token: &str,
    plan: &Arc<SoakPlan>,
    connections: usize,
) -> Phase {
    let addr = server.addr;
    let counts_before = [
        member_count(addr, token, "/redfish/v1/Fabrics").await,
        member_count(addr, token, "/redfish/v1/SessionService/Sessions").await,
    ];
    let start = Instant::now();
    let measured_from = start + settings.soak_warmup;
    let end = measured_from + settings.soak;
    let pid = server.pid();
    let sample = settings.sample;
    let sampler = tokio::spawn(async move {
        let mut samples = Vec::new();
        let mut next = start;
        let mut cpu_at_warm = 0.0;
        loop {
            tokio::time::sleep_until(next.into()).await;
            let t = next.duration_since(start);
            samples.push((t.as_secs_f64(), rss_mib(pid).unwrap_or(0.0)));
            if next == measured_from {
                cpu_at_warm = cpu_seconds(&pid.to_string());
            }
            if next >= end {
                return (samples, cpu_seconds(&pid.to_string()) - cpu_at_warm);
            }
            // Samples every period from the start, plus one exactly at the end of the warm-up
            // and one at the end.
            let following = next + sample;
            next = if next < measured_from && following > measured_from { measured_from } else { following.min(end) };
        }
    });
    let token: Arc<str> = Arc::from(token);
    let tasks: Vec<_> = (0..connections)
        .map(|i| {
            let plan = plan.clone();
            let mut conn = Conn {
                addr,
                token: token.clone(),
                sender: None,
                own: plan.own_port(settings, i),
                etag: None,
                interface: true,
                leaf: i * 131,
                coll: i,
                measured_from,
                tally: Tally::default(),
            };
            tokio::spawn(async move {
                // Connections start at different places of the cycle.
                let mut k = i * 37;
                while Instant::now() < end {
                    let op = plan.cycle[k % plan.cycle.len()];
                    conn.step(op, &plan).await;
                    k += 1;
                }
                conn.tally
            })
        })
        .collect();
    let mut all = Tally::default();
    for t in tasks {
        let c = t.await.expect("connection task");
        all.latencies.extend(c.latencies);
        all.errors += c.errors;
        all.timeouts += c.timeouts;
        all.first_error = all.first_error.or(c.first_error);
    }
    let (samples, cpu) = sampler.await.expect("sampler");
    // Late answers of the last requests may still be arriving; counts are read after them.
    let counts_after = [
        member_count(addr, &token, "/redfish/v1/Fabrics").await,
        member_count(addr, &token, "/redfish/v1/SessionService/Sessions").await,
    ];
    all.latencies.sort_unstable();
    let measured = end.duration_since(measured_from).as_secs_f64();
    let rss_warm =
        samples.iter().find(|(t, _)| (*t - settings.soak_warmup.as_secs_f64()).abs() < 1e-3).map_or(0.0, |s| s.1);
    let n = all.latencies.len();
    Phase {
        backend: server.backend,
        connections,
        requests: n,
        rps: n as f64 / measured,
        p50_ms: percentile_ms(&all.latencies, 0.5),
        p99_ms: percentile_ms(&all.latencies, 0.99),
        errors: all.errors,
        timeouts: all.timeouts,
        first_error: all.first_error,
        cpu_us: if n > 0 { cpu * 1e6 / n as f64 } else { 0.0 },
        samples,
        rss_warm,
        counts: [(counts_before[0], counts_after[0]), (counts_before[1], counts_after[1])],
    }
}

fn print_phase(settings: &Settings, p: &Phase) {
    let (last, min, max) = p.rss_stats(settings.soak_warmup);
    let (drift, spread) = p.drift(settings.soak_warmup);
    println!(
        "soak: {:<6} {:>3} conns: {} requests after warm-up, {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, errors {}, timeouts {}, server CPU {:.0} µs/req{}",
        p.backend,
        p.connections,
        p.requests,
        p.rps,
        p.p50_ms,
        p.p99_ms,
        p.errors,
        p.timeouts,
        p.cpu_us,
        p.first_error.as_deref().map(|e| format!(" (first: {e})")).unwrap_or_default()
    );
    println!(
        "soak: {:<6} {:>3} conns: RSS MiB at end of warm-up {:.1}, last {last:.1}, min {min:.1}, max {max:.1}; drift last/warm {drift:+.1}%, max/min {spread:+.1}%; Fabrics {} → {}, Sessions {} → {}",
        p.backend, p.connections, p.rss_warm, p.counts[0].0, p.counts[0].1, p.counts[1].0, p.counts[1].1
    );
    let series: Vec<String> = p.samples.iter().map(|(t, r)| format!("{t:.1}s {r:.1}")).collect();
    println!("soak: {:<6} {:>3} conns: RSS samples (MiB): {}", p.backend, p.connections, series.join(", "));
}

async fn soak(settings: &Settings, store: &Store) -> Vec<Phase> {
    let plan = Arc::new(SoakPlan::new(settings));
    let mut out = Vec::new();
    for backend in &settings.soak_backends {
        let (backend, root) = if backend == "fs" { ("fs", Some(store.fs_root())) } else { ("memory", None) };
        let mut server = Server::spawn(backend, &store.seed(), root.as_deref());
        let t = server.ready(Duration::from_secs(900)).await;
        let (token, session) = login(server.addr).await;
        println!(
            "soak: {backend}: pid {}, up in {:.2} s, {} s warm-up then {} s per phase, RSS every {} s",
            server.pid(),
            t.as_secs_f64(),
            settings.soak_warmup.as_secs_f64(),
            settings.soak.as_secs_f64(),
            settings.sample.as_secs_f64()
        );
        for &connections in &settings.connections {
            let p = soak_phase(settings, &server, &token, &plan, connections).await;
            print_phase(settings, &p);
            out.push(p);
        }
        logout(server.addr, &token, &session).await;
        server.stop().await;
    }
    out
}

// ---------------------------------------------------------------------------------------------

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

async fn run(settings: Settings) {
    let today = std::process::Command::new("date").arg("-u").arg("+%F").output().map(|o| o.stdout).unwrap_or_default();
    let today = String::from_utf8_lossy(&today).trim().to_string();
    println!(
        "scale: {} generated resources ({} switches × (switch, Ports, {} ports + metrics)); {} timed fs starts; soak {:?} at {:?} connections{}",
        settings.generated(),
        settings.switches,
        settings.ports,
        settings.starts,
        settings.soak_backends,
        settings.connections,
        if settings.quick { " (BENCH_QUICK: smoke pass)" } else { "" }
    );
    // Build (or confirm) the release server before anything is timed.
    let _ = sunfish_tests::server_binary();
    let started = Instant::now();
    let store = Store::generate(&settings);
    println!("scale: seed tree written to {} in {:.1} s", store.seed().display(), started.elapsed().as_secs_f64());

    let scaled = if settings.scale { Some(scale(&settings, &store).await) } else { None };
    let phases = if settings.soak_on {
        if settings.soak_backends.iter().any(|b| b == "fs") && !store.fs_imported() {
            // The fs soak runs on the imported store: import it now.
            let mut fs = Server::spawn("fs", &store.seed(), Some(&store.fs_root()));
            fs.ready(Duration::from_secs(900)).await;
            fs.stop().await;
        }
        soak(&settings, &store).await
    } else {
        Vec::new()
    };

    let mut rows: Vec<(String, String, String, bool)> = Vec::new();
    let n = settings.generated();
    if let Some(s) = &scaled {
        for (backend, rss, peak, read) in
            [("memory", s.memory_rss, s.memory_peak, s.memory_rss_read), ("fs", s.fs_rss, s.fs_peak, s.fs_rss_read)]
        {
            let (Some(rss), Some(peak), Some(read)) = (rss, peak, read) else { continue };
            rows.push((
                format!("RSS with {n} generated resources loaded, {backend}"),
                format!("≤ {RSS_TARGET_MIB:.0} MB"),
                format!("{rss:.0} MiB once loaded (peak during load {peak:.0} MiB); {read:.0} MiB after a GET of each"),
                rss.max(read) <= RSS_TARGET_MIB,
            ));
        }
        let (best, median) = best_median(&s.fs_cold);
        let (wbest, wmedian) = best_median(&s.fs_warm);
        rows.push((
            format!(
                "fs start-up from disk, {n} generated resources (exec → 200 on /redfish/v1), {} runs",
                s.fs_cold.len()
            ),
            format!("≤ {} s", STARTUP_TARGET.as_secs()),
            format!(
                "cold cache best {:.2} s, median {:.2} s; warm cache best {:.2} s, median {:.2} s",
                best.as_secs_f64(),
                median.as_secs_f64(),
                wbest.as_secs_f64(),
                wmedian.as_secs_f64()
            ),
            median <= STARTUP_TARGET,
        ));
        if let Some(t) = s.memory_start {
            rows.push((
                format!("memory start-up seeding {n} resources from a directory"),
                "—".into(),
                format!("{:.2} s", t.as_secs_f64()),
                true,
            ));
        }
        if let Some(t) = s.fs_import {
            rows.push((
                format!("fs first start importing {n} resources (fsync on)"),
                "—".into(),
                format!("{:.2} s", t.as_secs_f64()),
                true,
            ));
        }
    }
    for p in &phases {
        let (last, min, max) = p.rss_stats(settings.soak_warmup);
        let (drift, spread) = p.drift(settings.soak_warmup);
        let stable = p.counts.iter().all(|(a, b)| a == b);
        rows.push((
            format!(
                "soak {}, {} conns, {} s after {} s warm-up: errors, timeouts",
                p.backend,
                p.connections,
                settings.soak.as_secs_f64(),
                settings.soak_warmup.as_secs_f64()
            ),
            "0 and 0".into(),
            format!(
                "{} errors, {} timeouts; {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms{}",
                p.errors,
                p.timeouts,
                p.rps,
                p.p50_ms,
                p.p99_ms,
                if stable { String::new() } else { format!("; store size changed: {:?}", p.counts) }
            ),
            p.errors == 0 && p.timeouts == 0 && stable,
        ));
        rows.push((
            format!("soak {}, {} conns: RSS flat", p.backend, p.connections),
            format!("±{DRIFT_TARGET_PERCENT:.0}%"),
            format!(
                "{:.0} MiB at end of warm-up, last {last:.0}, min {min:.0}, max {max:.0}: last {drift:+.1}%, max/min {spread:+.1}%",
                p.rss_warm
            ),
            p.flat(settings.soak_warmup),
        ));
    }
    println!();
    for (what, target, measured, ok) in &rows {
        println!("scale: issue 7: {what}: target {target}: {measured}: {}", verdict(*ok));
    }
    println!();
    println!("| measure | target | measured ({today}) | |");
    println!("| --- | --- | --- | --- |");
    for (what, target, measured, ok) in &rows {
        println!("| {what} | {target} | {measured} | {} |", verdict(*ok));
    }
}
