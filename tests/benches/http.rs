//! HTTP load benchmark (issue 7; a load run, not a test): `cargo bench -p sunfish-tests --bench http`.
//!
//! Layout: three processes on 127.0.0.1. The release `sunfish-server` binary (built on demand,
//! as [`sunfish_tests::server_binary`] does for the e2e tests) is the system under test; this
//! same executable, re-run with `SUNFISH_BENCH_BASELINE=1`, is the baseline (a minimal axum
//! endpoint answering every request with a fixed ~3 KB JSON body: the ceiling for axum/hyper on
//! this machine); this process is the load generator: a bare hyper HTTP/1.1 client, one task
//! per keep-alive connection sending requests back to back, every latency (request sent to last
//! body byte read) kept and sorted for exact percentiles. Both servers run tokio's default
//! runtime (a worker per core), the generator two workers; all three share the machine's cores,
//! so the numbers are for the whole box, and the baseline carries the same handicap.
//!
//! Per server (memory backend; fs backend with fsync on, in a temporary directory under
//! `target/`), auth off and auth on: populate over HTTP (a 1,000-member `Systems` collection of
//! ~3 KB systems, a 100-member `Chassis` collection), then run each scenario for a warm-up and
//! a measured window: GET the service root, a leaf, the 1,000-member collection,
//! `$expand=.($levels=1)` of the 100-member collection, POST into `Fabrics`, PATCH a leaf with
//! `If-Match` (one leaf per connection, each PATCH sending the ETag of the previous answer).
//! With auth on, the GETs run with a session token (one login) and with HTTP Basic. The four
//! servers are up at once and each request shape runs on every server in a row, so the pairs
//! the issues compare (fs against memory, session against no auth) are neighbours in time.
//!
//! Each scenario prints req/s (requests started in the window / window), p50 and p99, errors
//! (wrong status, transport failure or a 10 s timeout, warm-up included), the ratio to the
//! same-run baseline at the same number of connections (the baseline runs first and last; the
//! better run is the ceiling), the server's CPU time per request (from `/proc/<pid>/stat`:
//! steadier than req/s when the box is shared) and the CPU other processes used meanwhile (a
//! build next door shows there). Then the issue-3 and issue-7 checks, and the whole table as
//! Markdown.
//!
//! `BENCH_SECONDS` sets the measured window (default 5 s); `BENCH_QUICK=1` runs 1 s windows on
//! small data (a smoke pass: it proves the code works, its numbers mean little);
//! `BENCH_ONLY=text` runs only the scenarios whose line contains `text` (the baseline always
//! runs), and the server pids are printed, for attaching a profiler to one scenario.

// A benchmark program: a failed setup step should stop it loudly.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use futures::stream::{self, StreamExt};
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST, IF_MATCH};
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};
use sunfish_tests::load::{connect, cpu_seconds, exchange, machine_cpu_seconds, percentile_ms, Sender};
use sunfish_tests::{free_port, server_command, workspace_root, Client};

/// Set in the environment of the child that serves the baseline.
const BASELINE_ENV: &str = "SUNFISH_BENCH_BASELINE";
/// The bootstrap administrator of the auth-on servers.
const ADMIN: (&str, &str) = ("admin", "bench-password-1");
/// Cores' worth of CPU other processes may use during a window before its line is flagged.
const DISTURBED_CORES: f64 = 0.1;

fn main() {
    if std::env::var_os(BASELINE_ENV).is_some() {
        baseline::serve();
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(run(Settings::from_env()));
}

/// What the environment asks for.
#[derive(Debug, Clone, Copy)]
struct Settings {
    /// Measured window of each scenario.
    window: Duration,
    /// Unmeasured run before it (connections open, caches and the Basic cache warm).
    warmup: Duration,
    /// Members of the large `Systems` collection.
    systems: usize,
    /// Members of the `Chassis` collection that is expanded.
    chassis: usize,
    quick: bool,
}

impl Settings {
    fn from_env() -> Self {
        let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let default = if quick { 1.0 } else { 5.0 };
        let seconds = std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse::<f64>().ok()).unwrap_or(default);
        let window = Duration::from_secs_f64(seconds.max(0.1));
        Settings {
            window,
            warmup: (window / 5).clamp(Duration::from_millis(200), Duration::from_secs(1)),
            systems: if quick { 100 } else { 1_000 },
            chassis: if quick { 20 } else { 100 },
            quick,
        }
    }
}

/// The ~3 KB ComputerSystem every `Systems` member is (and the baseline's fixed answer).
fn system(id: &str) -> Value {
    json!({
        "@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem",
        "Id": id,
        "Name": format!("Compute node {id}"),
        "Description": "A two-socket compute node attached to the fabric, as an agent would report it",
        "SystemType": "Physical",
        "AssetTag": "rack-12-u07",
        "Manufacturer": "Contoso",
        "Model": "CN-2200",
        "SKU": "CN-2200-A",
        "SerialNumber": format!("SN{id}0000XYZ"),
        "PartNumber": "224-0012-07",
        "UUID": "38947555-7742-3448-3784-823347823834",
        "HostName": format!("node-{id}.cluster.example"),
        "IndicatorLED": "Off",
        "PowerState": "On",
        "BiosVersion": "P79 v1.45 (12/06/2017)",
        "Status": {"State": "Enabled", "Health": "OK", "HealthRollup": "OK"},
        "Boot": {
            "BootSourceOverrideEnabled": "Disabled",
            "BootSourceOverrideTarget": "None",
            "BootSourceOverrideTarget@Redfish.AllowableValues": ["None", "Pxe", "Cd", "Usb", "Hdd", "BiosSetup", "Utilities", "Diags", "UefiShell", "UefiTarget"],
            "BootSourceOverrideMode": "UEFI",
            "UefiTargetBootSourceOverride": "/0x31/0x33/0x01/0x01"
        },
        "ProcessorSummary": {"Count": 2, "CoreCount": 48, "LogicalProcessorCount": 96, "Model": "Multi-Core Processor 7 Series", "Status": {"State": "Enabled", "Health": "OK", "HealthRollup": "OK"}},
        "MemorySummary": {"TotalSystemMemoryGiB": 512, "TotalSystemPersistentMemoryGiB": 0, "MemoryMirroring": "None", "Status": {"State": "Enabled", "Health": "OK", "HealthRollup": "OK"}},
        "TrustedModules": [{"FirmwareVersion": "1.13b", "InterfaceType": "TPM2_0", "Status": {"State": "Enabled", "Health": "OK"}}],
        "HostWatchdogTimer": {"FunctionEnabled": false, "WarningAction": "None", "TimeoutAction": "None", "Status": {"State": "Disabled"}},
        "PowerRestorePolicy": "AlwaysOn",
        "PowerOnDelaySeconds": 0,
        "PowerOffDelaySeconds": 0,
        "LastResetTime": "2026-11-01T08:00:00+00:00",
        "Links": {
            "Chassis": [{"@odata.id": "/redfish/v1/Chassis/c000"}],
            "ManagedBy": [{"@odata.id": "/redfish/v1/Managers/Sunfish"}],
            "Endpoints": [
                {"@odata.id": format!("/redfish/v1/Fabrics/CXL/Endpoints/{id}-ep0")},
                {"@odata.id": format!("/redfish/v1/Fabrics/CXL/Endpoints/{id}-ep1")}
            ]
        },
        "Actions": {"#ComputerSystem.Reset": {
            "target": format!("/redfish/v1/Systems/{id}/Actions/ComputerSystem.Reset"),
            "ResetType@Redfish.AllowableValues": ["On", "ForceOff", "GracefulShutdown", "GracefulRestart", "ForceRestart", "Nmi", "ForceOn", "PushPowerButton", "PowerCycle"]
        }},
        "Oem": {"Contoso": {
            "RackLocation": {"Row": "B", "Rack": 12, "Unit": 7},
            "FabricAttachment": {"Switch": "cxl-sw-3", "Port": 17, "LinkSpeedGTps": 32, "Width": 16},
            "FirmwareInventory": [
                {"Component": "BMC", "Version": "2.14.7", "Updateable": true},
                {"Component": "BIOS", "Version": "P79 v1.45", "Updateable": true},
                {"Component": "CPLD", "Version": "0x1f", "Updateable": false},
                {"Component": "NIC", "Version": "22.31.1014", "Updateable": true},
                {"Component": "CXL retimer", "Version": "1.8.2", "Updateable": true}
            ],
            "Notes": "Populated by the HTTP benchmark; the body is sized to about three kilobytes so that the leaf GET and the baseline answer carry the same payload, and the comparison is about the service rather than the size of the document it sends back to the client."
        }}
    })
}

/// A `Chassis` member (the engine bench's member size: a few hundred bytes).
fn chassis(id: &str) -> Value {
    json!({
        "@odata.type": "#Chassis.v1_25_0.Chassis",
        "Id": id,
        "Name": format!("Enclosure {id}"),
        "ChassisType": "RackMount",
        "Manufacturer": "Contoso",
        "SerialNumber": format!("CH{id}"),
        "Status": {"State": "Enabled", "Health": "OK"},
        "PowerState": "On",
        "Links": {"ManagedBy": [{"@odata.id": "/redfish/v1/Managers/Sunfish"}]}
    })
}

/// What the baseline child serves.
mod baseline {
    use axum::http::header::{CONTENT_TYPE, ETAG};
    use axum::Router;
    use bytes::Bytes;
    use std::io::Write;

    /// Serves `system("s0000")` with the headers of a resource answer on `127.0.0.1:0`, prints
    /// the port on stdout, and runs until killed. The runtime is tokio's default, as in
    /// `sunfish-server`'s `main`.
    pub fn serve() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let mut v = super::system("s0000");
            v["@odata.id"] = "/redfish/v1/Systems/s0000".into();
            let body = Bytes::from(serde_json::to_vec(&v).expect("json"));
            let app = Router::new().fallback(move || {
                let body = body.clone();
                async move {
                    (
                        [
                            (CONTENT_TYPE, "application/json; charset=utf-8"),
                            (ETAG, "\"1\""),
                            (axum::http::HeaderName::from_static("odata-version"), "4.0"),
                        ],
                        body,
                    )
                }
            });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let port = listener.local_addr().expect("addr").port();
            let mut out = std::io::stdout();
            writeln!(out, "{port}").expect("stdout");
            out.flush().expect("stdout");
            axum::serve(listener, app).await.expect("serve");
        });
    }
}

/// A server process under load (killed when dropped).
struct Target {
    addr: SocketAddr,
    child: Child,
    /// The fs store, removed after the process.
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Target {
    /// Starts the baseline child and reads its port.
    fn baseline() -> Self {
        let exe = std::env::current_exe().expect("current exe");
        let mut child = std::process::Command::new(exe)
            .env(BASELINE_ENV, "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn baseline");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("baseline port");
        let port: u16 = line.trim().parse().expect("baseline printed no port");
        Target { addr: SocketAddr::from(([127, 0, 0, 1], port)), child, _dir: None }
    }

    /// Starts the release `sunfish-server` on `backend` (fs: fsync on, under `target/`) and
    /// waits until it answers.
    async fn sunfish(backend: &str, auth: bool) -> Self {
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut cmd = server_command();
        cmd.args(["--listen", &addr.to_string()]).stdout(Stdio::null()).stderr(Stdio::null());
        cmd.env("SUNFISH__STORAGE__BACKEND", backend);
        cmd.env("SUNFISH__AUTH__ENABLED", auth.to_string());
        cmd.env("SUNFISH__AUTH__ADMIN_USER", ADMIN.0).env("SUNFISH__AUTH__ADMIN_PASSWORD", ADMIN.1);
        let dir = (backend == "fs").then(|| {
            // Under target/ rather than /tmp: a tmpfs /tmp would make fsync free.
            let parent = workspace_root().join("target/tmp");
            std::fs::create_dir_all(&parent).expect("target/tmp");
            tempfile::tempdir_in(parent).expect("tempdir")
        });
        if let Some(d) = &dir {
            cmd.env("SUNFISH__STORAGE__OPTIONS__ROOT", d.path().join("store"));
            cmd.env("SUNFISH__STORAGE__OPTIONS__FSYNC", "true");
        }
        if backend == "postgres" {
            // Auth on and off get a schema each: each server seeds and populates its own tree.
            let schema = format!("{}_{}", postgres_schema(), if auth { "auth" } else { "open" });
            cmd.env("SUNFISH__STORAGE__OPTIONS__URL", postgres_url()).env("SUNFISH__STORAGE__OPTIONS__SCHEMA", schema);
        }
        let child = cmd.spawn().expect("spawn sunfish-server");
        let target = Target { addr, child, _dir: dir };
        let client = Client::new(format!("http://{addr}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if client.http.get(format!("{}/redfish", client.base)).send().await.is_ok_and(|r| r.status().is_success()) {
                return target;
            }
            assert!(Instant::now() < deadline, "sunfish-server ({backend}) did not come up on {addr}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// CPU seconds used so far: by the server, by this process (the generator), and by the whole
/// machine (all processes, `/proc/stat`).
#[derive(Debug, Clone, Copy)]
struct CpuSample {
    server: f64,
    generator: f64,
    machine: f64,
}

impl CpuSample {
    fn take(server_pid: &str) -> Self {
        // Interrupt time is not in the machine's figure, and heavy loopback traffic makes plenty.
        CpuSample { server: cpu_seconds(server_pid), generator: cpu_seconds("self"), machine: machine_cpu_seconds() }
    }
}

/// Credentials a scenario sends.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Auth {
    Off,
    Session(String),
    Basic(String),
}

impl Auth {
    fn name(&self) -> &'static str {
        match self {
            Auth::Off => "off",
            Auth::Session(_) => "session",
            Auth::Basic(_) => "basic",
        }
    }

    fn header(&self) -> Option<(&'static str, &str)> {
        match self {
            Auth::Off => None,
            Auth::Session(t) => Some(("x-auth-token", t)),
            Auth::Basic(b) => Some(("authorization", b)),
        }
    }
}

/// What each connection of a scenario sends.
#[derive(Debug, Clone)]
enum Work {
    /// GET `path`, expecting 200.
    Get(String),
    /// POST `body` into `path`, expecting 201.
    Post(String, Bytes),
    /// PATCH `paths[connection]` with `If-Match`, expecting 200.
    Patch(Vec<String>),
}

/// One measured run.
#[derive(Debug, Clone)]
struct Scenario {
    name: String,
    work: Work,
    auth: Auth,
    connections: usize,
}

/// What one connection saw.
#[derive(Debug, Default)]
struct ConnectionStats {
    /// Microseconds of every request that started inside the window.
    latencies: Vec<u32>,
    /// Completion of the last measured request.
    last: Option<Instant>,
    errors: u64,
    first_error: Option<String>,
}

impl ConnectionStats {
    fn error(&mut self, what: String) {
        self.errors += 1;
        self.first_error.get_or_insert(what);
    }
}

/// The outcome of a scenario.
#[derive(Debug, Clone)]
struct Outcome {
    target: String,
    name: String,
    auth: &'static str,
    connections: usize,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    first_error: Option<String>,
    /// Server CPU per request (µs), from /proc over the window.
    server_cpu_us: f64,
    /// CPU the rest of the machine used over the window, in cores: other people's builds
    /// disturb a run, and this says when.
    other_load: f64,
    /// Same-run baseline req/s at the same number of connections (none for the baseline).
    ratio: Option<f64>,
}

impl Outcome {
    fn line(&self) -> String {
        let ratio = self.ratio.map_or_else(|| "    -".to_string(), |r| format!("{r:5.2}"));
        format!(
            "http: {:<8} {:<26} auth {:<7} {:>3} conns  {:>8.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  errors {:>3}  ratio {ratio}  server CPU {:>4.0} µs/req  others {:.2} cores{}",
            self.target,
            self.name,
            self.auth,
            self.connections,
            self.rps,
            self.p50_ms,
            self.p99_ms,
            self.errors,
            self.server_cpu_us,
            self.other_load,
            self.first_error.as_deref().map(|e| format!("  (first error: {e})")).unwrap_or_default()
        )
    }
}

fn request(
    method: Method,
    path: &str,
    host: &str,
    auth: &Auth,
    body: Option<Bytes>,
    if_match: Option<&HeaderValue>,
) -> Request<Full<Bytes>> {
    let mut b = Request::builder().method(method).uri(path).header(HOST, host);
    if let Some((name, value)) = auth.header() {
        b = b.header(name, value);
    }
    if let Some(tag) = if_match {
        b = b.header(IF_MATCH, tag);
    }
    if body.is_some() {
        b = b.header(CONTENT_TYPE, "application/json");
    }
    b.body(Full::new(body.unwrap_or_default())).expect("request")
}

/// One connection of a scenario: requests back to back until `end`, latencies kept for those
/// started at or after `start`. A failed connection is replaced.
async fn drive(addr: SocketAddr, s: Arc<Scenario>, index: usize, start: Instant, end: Instant) -> ConnectionStats {
    let host = addr.to_string();
    let mut stats = ConnectionStats::default();
    let mut sender: Option<Sender> = None;
    let mut etag: Option<HeaderValue> = None;
    let mut n: u64 = 0;
    while Instant::now() < end {
        let mut conn = match sender.take() {
            Some(c) => c,
            None => match connect(addr).await {
                Ok(c) => c,
                Err(e) => {
                    stats.error(e);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let (req, expect) = match &s.work {
            Work::Get(path) => (request(Method::GET, path, &host, &s.auth, None, None), StatusCode::OK),
            Work::Post(path, body) => {
                (request(Method::POST, path, &host, &s.auth, Some(body.clone()), None), StatusCode::CREATED)
            }
            Work::Patch(paths) => {
                let path = &paths[index % paths.len()];
                if etag.is_none() {
                    // Unmeasured: the leaf's current ETag, once per connection (and after a 412).
                    match exchange(&mut conn, request(Method::GET, path, &host, &s.auth, None, None)).await {
                        Ok(a) if a.status == StatusCode::OK => etag = a.etag(),
                        Ok(a) => stats.error(format!("GET {path} for its ETag: {}", a.status)),
                        Err(e) => {
                            stats.error(e.to_string());
                            continue;
                        }
                    }
                    sender = Some(conn);
                    continue;
                }
                n += 1;
                let body = Bytes::from(json!({"AssetTag": format!("c{index}-{n}")}).to_string());
                (request(Method::PATCH, path, &host, &s.auth, Some(body), etag.as_ref()), StatusCode::OK)
            }
        };
        let sent = Instant::now();
        match exchange(&mut conn, req).await {
            Ok(a) => {
                let done = Instant::now();
                if a.status == expect {
                    if sent >= start {
                        let us = done.duration_since(sent).as_micros();
                        stats.latencies.push(u32::try_from(us).unwrap_or(u32::MAX));
                        stats.last = Some(done);
                    }
                    if matches!(s.work, Work::Patch(_)) {
                        etag = a.etag();
                    }
                } else {
                    stats.error(format!("status {} (expected {expect})", a.status));
                    if a.status == StatusCode::PRECONDITION_FAILED {
                        etag = None;
                    }
                }
                sender = Some(conn);
            }
            Err(e) => stats.error(e.to_string()),
        }
    }
    stats
}

/// Runs `s` against `target` for a warm-up and the measured window.
async fn measure(settings: &Settings, target_name: &str, target: &Target, s: Scenario) -> Outcome {
    let s = Arc::new(s);
    let start = Instant::now() + settings.warmup;
    let end = start + settings.window;
    let pid = target.pid().to_string();
    let cpu_probe = tokio::spawn(async move {
        tokio::time::sleep_until(start.into()).await;
        let before = CpuSample::take(&pid);
        tokio::time::sleep_until(end.into()).await;
        let after = CpuSample::take(&pid);
        let server = after.server - before.server;
        let others = (after.machine - before.machine) - server - (after.generator - before.generator);
        (server, others.max(0.0))
    });
    let tasks: Vec<_> =
        (0..s.connections).map(|i| tokio::spawn(drive(target.addr, s.clone(), i, start, end))).collect();
    let mut latencies = Vec::new();
    let mut last = start;
    let mut errors = 0;
    let mut first_error = None;
    for t in tasks {
        let c = t.await.expect("connection task");
        latencies.extend(c.latencies);
        last = last.max(c.last.unwrap_or(start));
        errors += c.errors;
        first_error = first_error.or(c.first_error);
    }
    let (cpu, others) = cpu_probe.await.unwrap_or((0.0, 0.0));
    latencies.sort_unstable();
    let elapsed = last.duration_since(start).as_secs_f64().max(settings.window.as_secs_f64());
    let count = latencies.len() as f64;
    let outcome = Outcome {
        target: target_name.to_string(),
        name: s.name.clone(),
        auth: s.auth.name(),
        connections: s.connections,
        rps: count / elapsed,
        p50_ms: percentile_ms(&latencies, 0.5),
        p99_ms: percentile_ms(&latencies, 0.99),
        errors,
        first_error,
        server_cpu_us: if count > 0.0 { cpu * 1e6 / count } else { 0.0 },
        other_load: others / settings.window.as_secs_f64(),
        ratio: None,
    };
    // A short pause: connections of this scenario close before the next one opens its own.
    tokio::time::sleep(Duration::from_millis(200)).await;
    outcome
}

/// Creates the benchmark's resources over HTTP (32 requests in flight).
async fn populate(client: &Client, auth: &Auth, settings: &Settings) {
    let header: Vec<(&str, &str)> = auth.header().into_iter().collect();
    let mut bodies: Vec<(&str, Value)> = Vec::new();
    for i in 0..settings.systems {
        bodies.push(("/redfish/v1/Systems", system(&format!("s{i:04}"))));
    }
    for i in 0..settings.chassis {
        bodies.push(("/redfish/v1/Chassis", chassis(&format!("c{i:03}"))));
    }
    let failures: Vec<String> = stream::iter(bodies)
        .map(|(path, body)| {
            let header = header.clone();
            async move {
                let r = client.send(reqwest::Method::POST, path, Some(&body), &header).await;
                (r.status != 201).then(|| format!("POST {path} {}: {} {}", body["Id"], r.status, r.body))
            }
        })
        .buffer_unordered(32)
        .filter_map(|f| async move { f })
        .collect()
        .await;
    assert!(failures.is_empty(), "populating failed: {} errors, first {:?}", failures.len(), failures.first());
    let r = client.send(reqwest::Method::GET, "/redfish/v1/Systems", None, &header).await;
    assert_eq!(r.body["Members@odata.count"], settings.systems, "Systems not populated");
}

/// Logs in once; the token is shared by every connection of the session scenarios.
async fn login(client: &Client) -> String {
    let r =
        client.post("/redfish/v1/SessionService/Sessions", &json!({"UserName": ADMIN.0, "Password": ADMIN.1})).await;
    assert_eq!(r.status, 201, "login: {}", r.body);
    r.header("x-auth-token").to_string()
}

fn basic() -> String {
    let raw = format!("{}:{}", ADMIN.0, ADMIN.1);
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
}

const ROOT: &str = "/redfish/v1";
const LEAF: &str = "/redfish/v1/Systems/s0000";
const COLLECTION: &str = "/redfish/v1/Systems";
const EXPAND: &str = "/redfish/v1/Chassis?$expand=.($levels=1)";

fn get(name: &str, path: &str, auth: &Auth, connections: usize) -> Scenario {
    Scenario { name: name.into(), work: Work::Get(path.into()), auth: auth.clone(), connections }
}

/// The scenarios of one server, in the order they run: the GETs, then the writes (which
/// change data the GETs do not read: `Fabrics` grows, `Systems/s0001..s0032` change). Auth off:
/// every scenario; auth on: the GETs with a session token, then with Basic.
fn scenarios(settings: &Settings, creds: Option<&(String, String)>) -> Vec<Scenario> {
    let systems = format!("GET collection ({})", settings.systems);
    let expand = format!("GET $expand ({})", settings.chassis);
    let Some((token, basic)) = creds else {
        let off = Auth::Off;
        let fabric = json!({"@odata.type": "#Fabric.v1_3_0.Fabric", "Name": "bench fabric", "FabricType": "CXL"});
        return vec![
            get("GET service root", ROOT, &off, 32),
            get("GET leaf", LEAF, &off, 32),
            get("GET leaf", LEAF, &off, 256),
            get(&systems, COLLECTION, &off, 32),
            get(&expand, EXPAND, &off, 32),
            get(&expand, EXPAND, &off, 1),
            Scenario {
                name: "POST create".into(),
                work: Work::Post("/redfish/v1/Fabrics".into(), Bytes::from(fabric.to_string())),
                auth: off.clone(),
                connections: 32,
            },
            Scenario {
                name: "PATCH leaf If-Match".into(),
                work: Work::Patch((1..=32).map(|i| format!("/redfish/v1/Systems/s{i:04}")).collect()),
                auth: off,
                connections: 32,
            },
        ];
    };
    let mut out = Vec::new();
    for auth in [Auth::Session(token.clone()), Auth::Basic(basic.clone())] {
        out.push(get("GET service root", ROOT, &auth, 32));
        out.push(get("GET leaf", LEAF, &auth, 32));
        if matches!(auth, Auth::Session(_)) {
            out.push(get("GET leaf", LEAF, &auth, 256));
        }
        out.push(get(&systems, COLLECTION, &auth, 32));
        out.push(get(&expand, EXPAND, &auth, 32));
    }
    out
}

/// A populated `sunfish-server` and the credentials its scenarios use.
struct Server {
    backend: &'static str,
    target: Target,
    /// Session token and Basic header value, when auth is on.
    creds: Option<(String, String)>,
}

/// The prefix of the postgres servers' schemas (one per bench process and auth setting,
/// dropped at the end).
fn postgres_schema() -> String {
    format!("bench_{}", std::process::id())
}

/// `SUNFISH_TEST_POSTGRES_URL`, as the postgres tests (default: the machine's server).
fn postgres_url() -> String {
    std::env::var("SUNFISH_TEST_POSTGRES_URL").unwrap_or_else(|_| "host=127.0.0.1 user=postgres dbname=test".into())
}

/// The backends measured: memory and fs, and postgres when a PostgreSQL server answers.
async fn backends() -> Vec<&'static str> {
    match tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls).await {
        Ok(_) => vec!["memory", "fs", "postgres"],
        Err(e) => {
            println!("http: no PostgreSQL at {:?} ({e}): postgres not measured", postgres_url());
            vec!["memory", "fs"]
        }
    }
}

async fn drop_postgres_schema() {
    if let Ok((client, conn)) = tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls).await {
        tokio::spawn(conn);
        for suffix in ["auth", "open"] {
            let _ =
                client.batch_execute(&format!("DROP SCHEMA IF EXISTS {}_{suffix} CASCADE", postgres_schema())).await;
        }
    }
}

async fn start_server(settings: &Settings, backend: &'static str, auth_on: bool) -> Server {
    let target = Target::sunfish(backend, auth_on).await;
    let client = Client::new(format!("http://{}", target.addr));
    let creds = if auth_on { Some((login(&client).await, basic())) } else { None };
    let setup = creds.as_ref().map_or(Auth::Off, |(t, _)| Auth::Session(t.clone()));
    let t = Instant::now();
    populate(&client, &setup, settings).await;
    println!(
        "http: {backend} auth {}: pid {} on {}, populated in {:.2} s",
        if auth_on { "on" } else { "off" },
        target.pid(),
        target.addr,
        t.elapsed().as_secs_f64()
    );
    Server { backend, target, creds }
}

async fn run(settings: Settings) {
    println!(
        "http: {} s windows after {:.1} s warm-up; Systems {} members, Chassis {} members{}",
        settings.window.as_secs_f64(),
        settings.warmup.as_secs_f64(),
        settings.systems,
        settings.chassis,
        if settings.quick { " (BENCH_QUICK: smoke pass)" } else { "" }
    );
    // `BENCH_ONLY=text`: only scenarios whose "<server> <scenario> auth <auth> <n> conns"
    // contains it (the baseline always runs), e.g. to profile one of them.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    // Build (or confirm) the release server before anything is timed.
    let _ = sunfish_tests::server_binary();
    let mut results: Vec<Outcome> = Vec::new();

    // The baseline runs first and again last; the better of the two is the ceiling, so a
    // disturbed baseline run cannot flatter the ratios.
    let base = Target::baseline();
    let mut ceiling: BTreeMap<usize, f64> = BTreeMap::new();
    measure_baseline(&settings, &base, &mut ceiling, &mut results).await;

    // Every server is up (idle) at once, so each scenario runs on memory and then right away
    // on fs (and postgres): the group shares the machine's conditions of that moment.
    let backends = backends().await;
    let mut servers = Vec::new();
    for auth_on in [false, true] {
        for backend in backends.iter().copied() {
            servers.push(start_server(&settings, backend, auth_on).await);
        }
    }
    let mut plan: Vec<(&Server, Scenario)> = Vec::new();
    for server in &servers {
        for s in scenarios(&settings, server.creds.as_ref()) {
            plan.push((server, s));
        }
    }
    // Reads first, then the writes; each request shape on every server and credential in a
    // row (leaf GET: memory off, fs off, memory session, ...), so the comparisons the issues
    // ask for are between neighbours in time.
    let mut shapes: Vec<(String, usize)> = Vec::new();
    for (_, s) in &plan {
        if !shapes.contains(&(s.name.clone(), s.connections)) {
            shapes.push((s.name.clone(), s.connections));
        }
    }
    plan.sort_by_key(|(_, s)| {
        let shape = shapes.iter().position(|k| k.0 == s.name && k.1 == s.connections);
        (!matches!(s.work, Work::Get(_)), shape)
    });
    for (server, s) in plan {
        let label = format!("{} {} auth {} {} conns", server.backend, s.name, s.auth.name(), s.connections);
        if !label.contains(&only) {
            continue;
        }
        let mut o = measure(&settings, server.backend, &server.target, s).await;
        // Against the first baseline run while going; against the better of both at the end.
        o.ratio = ceiling.get(&o.connections).filter(|c| **c > 0.0).map(|c| o.rps / c);
        println!("{}", o.line());
        results.push(o);
    }
    drop(servers);
    drop_postgres_schema().await;
    measure_baseline(&settings, &base, &mut ceiling, &mut results).await;
    drop(base);
    for o in &mut results {
        o.ratio = ceiling.get(&o.connections).filter(|c| **c > 0.0).map(|c| o.rps / c);
    }
    report(&settings, &results);
}

/// Runs the baseline at 1, 32 and 256 connections; keeps the best req/s per count in `ceiling`.
async fn measure_baseline(
    settings: &Settings,
    base: &Target,
    ceiling: &mut BTreeMap<usize, f64>,
    results: &mut Vec<Outcome>,
) {
    for connections in [1, 32, 256] {
        let o = measure(settings, "baseline", base, get("GET fixed 3 KB JSON", "/", &Auth::Off, connections)).await;
        let best = ceiling.entry(connections).or_insert(0.0);
        *best = best.max(o.rps);
        println!("{}", o.line());
        results.push(o);
    }
}

fn find<'a>(results: &'a [Outcome], target: &str, prefix: &str, auth: &str, connections: usize) -> Option<&'a Outcome> {
    results
        .iter()
        .find(|o| o.target == target && o.name.starts_with(prefix) && o.auth == auth && o.connections == connections)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

/// The issue-3 and issue-7 checks, then the table as Markdown (for docs/PERFORMANCE.md).
fn report(settings: &Settings, results: &[Outcome]) {
    println!();
    for backend in ["memory", "fs"] {
        let (Some(off), Some(session)) =
            (find(results, backend, "GET leaf", "off", 32), find(results, backend, "GET leaf", "session", 32))
        else {
            continue;
        };
        if off.rps > 0.0 {
            let cost = 1.0 - session.rps / off.rps;
            println!(
                "http: issue 3 ({backend}): auth + ETag + query layers cost = 1 - {:.0}/{:.0} = {:.1}% ({} 20%); server CPU per leaf GET {:.0} µs with session auth, {:.0} µs without",
                session.rps,
                off.rps,
                cost * 100.0,
                if cost < 0.20 { "<" } else { "NOT <" },
                session.server_cpu_us,
                off.server_cpu_us
            );
        }
    }
    let mut checks: Vec<(String, String, bool)> = Vec::new();
    if let Some(o) = find(results, "memory", "GET leaf", "off", 32) {
        let ratio = o.ratio.unwrap_or(0.0);
        checks.push((
            "leaf GET, memory, auth off: ≥ 0.5 × baseline, p99 ≤ 5 ms".into(),
            format!("{ratio:.2} ×, p99 {:.2} ms", o.p99_ms),
            ratio >= 0.5 && o.p99_ms <= 5.0,
        ));
    }
    if let Some(o) = find(results, "memory", "GET leaf", "session", 32) {
        let ratio = o.ratio.unwrap_or(0.0);
        checks.push(("leaf GET, memory, session auth: ≥ 0.4 × baseline".into(), format!("{ratio:.2} ×"), ratio >= 0.4));
    }
    for o in results.iter().filter(|o| o.target == "fs" && o.name.starts_with("GET")) {
        let Some(mem) = find(results, "memory", &o.name, o.auth, o.connections).filter(|m| m.rps > 0.0) else {
            continue;
        };
        let r = o.rps / mem.rps;
        // Server CPU per request too: steadier than req/s on a shared box.
        let cpu = if mem.server_cpu_us > 0.0 { o.server_cpu_us / mem.server_cpu_us } else { 0.0 };
        checks.push((
            format!("fs within 10% of memory: {}, auth {}, {} conns", o.name, o.auth, o.connections),
            format!("{r:.2} × memory req/s (server CPU per request {cpu:.2} × memory's)"),
            r >= 0.9,
        ));
    }
    if let Some(o) = find(results, "fs", "POST create", "off", 32) {
        checks.push(("POST create on fs (fsync on): ≥ 5,000/s".into(), format!("{:.0}/s", o.rps), o.rps >= 5_000.0));
    }
    for backend in ["memory", "fs"] {
        if let Some(o) = find(results, backend, "GET $expand", "off", 1) {
            checks.push((
                format!("$expand {} members, {backend}, 1 connection: p50 ≤ 10 ms", settings.chassis),
                format!("p50 {:.2} ms", o.p50_ms),
                o.p50_ms <= 10.0,
            ));
        }
    }
    let servers: Vec<&Outcome> = results.iter().filter(|o| o.target != "baseline").collect();
    let errors: u64 = servers.iter().map(|o| o.errors).sum();
    let at_256 = servers.iter().filter(|o| o.connections == 256).map(|o| o.errors).sum::<u64>();
    checks.push((
        "0 errors at 32 and 256 connections".into(),
        format!("{errors} errors in all scenarios ({at_256} at 256)"),
        errors == 0,
    ));
    println!();
    for (what, measured, ok) in &checks {
        println!("http: issue 7: {what}: {measured}: {}", verdict(*ok));
    }

    // Other processes busy during a window (someone's build) make that line unreliable.
    let disturbed: Vec<String> = results
        .iter()
        .filter(|o| o.other_load > DISTURBED_CORES)
        .map(|o| format!("{} {} auth {} {} conns ({:.2} cores)", o.target, o.name, o.auth, o.connections, o.other_load))
        .collect();
    if !disturbed.is_empty() {
        println!();
        println!(
            "http: WARNING: other processes used more than {DISTURBED_CORES} core during: {}",
            disturbed.join("; ")
        );
    }

    println!();
    println!(
        "| server | scenario | auth | conns | req/s | p50 ms | p99 ms | errors | × baseline | server CPU µs/req | others (cores) |"
    );
    println!("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for o in results {
        println!(
            "| {} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {} | {} | {:.0} | {:.2} |",
            o.target,
            o.name,
            o.auth,
            o.connections,
            o.rps,
            o.p50_ms,
            o.p99_ms,
            o.errors,
            o.ratio.map_or_else(|| "-".into(), |r| format!("{r:.2}")),
            o.server_cpu_us,
            o.other_load
        );
    }
}
