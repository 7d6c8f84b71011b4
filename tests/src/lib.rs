//! # sunfish-tests
//!
//! Harness for the end-to-end tests in `tests/e2e` (one binary, a module per area): servers on
//! `127.0.0.1:0`, either in-process through [`sunfish_server::run`] ([`TestServer`]) or as the
//! real binary ([`BinaryServer`], for signals and crashes), and small HTTP helpers.
//! Everything stays on loopback.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;
use sunfish_server::ServerConfig;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

// Link the plugins so their registrations exist in this binary.
use sunfish_handler_audit as _;
use sunfish_storage_fs as _;
use sunfish_storage_memory as _;

pub mod agent;
pub mod fleet;
pub mod load;

/// Storage backends the semantics tests run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `memory`.
    Memory,
    /// `fs`, in a fresh temporary directory (fsync off: durability has its own tests).
    Fs,
}

/// Both backends, for tests that must hold on each.
pub const BACKENDS: [Backend; 2] = [Backend::Memory, Backend::Fs];

/// A response: status, headers, and the body parsed as JSON (`Value::Null` when empty or not
/// JSON).
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
    /// Parsed body.
    pub body: Value,
}

impl Reply {
    /// A header as a string ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// The first `@Message.ExtendedInfo` MessageId without its registry prefix.
    pub fn message_id(&self) -> &str {
        self.body["error"]["@Message.ExtendedInfo"][0]["MessageId"]
            .as_str()
            .and_then(|s| s.rsplit('.').next())
            .unwrap_or("")
    }
}

/// An HTTP client bound to one base URL.
#[derive(Debug, Clone)]
pub struct Client {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The underlying client.
    pub http: reqwest::Client,
}

impl Client {
    /// A client for `base`.
    pub fn new(base: String) -> Self {
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().unwrap_or_default();
        Client { base, http }
    }

    /// A client for `base` that sends HTTP Basic credentials with every request.
    pub fn with_basic(base: &str, user: &str, password: &str) -> Self {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let mut headers = reqwest::header::HeaderMap::new();
        let value = reqwest::header::HeaderValue::from_str(&format!("Basic {token}")).unwrap_or_else(|e| panic!("{e}"));
        headers.insert(reqwest::header::AUTHORIZATION, value);
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .default_headers(headers)
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        Client { base: base.to_string(), http }
    }

    /// Sends `method path` with an optional JSON body and extra headers.
    pub async fn send(&self, method: Method, path: &str, body: Option<&Value>, headers: &[(&str, &str)]) -> Reply {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(b) = body {
            req = req.header("Content-Type", "application/json").body(serde_json::to_vec(b).unwrap_or_default());
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("request to {path} failed: {e}"));
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap_or_default();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply { status, headers, body }
    }

    /// GET.
    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None, &[]).await
    }

    /// POST a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(Method::POST, path, Some(body), &[]).await
    }

    /// PATCH a JSON body.
    pub async fn patch(&self, path: &str, body: &Value) -> Reply {
        self.send(Method::PATCH, path, Some(body), &[]).await
    }

    /// PUT a JSON body.
    pub async fn put(&self, path: &str, body: &Value) -> Reply {
        self.send(Method::PUT, path, Some(body), &[]).await
    }

    /// DELETE.
    pub async fn delete(&self, path: &str) -> Reply {
        self.send(Method::DELETE, path, None, &[]).await
    }
}

/// A server running in this process on `127.0.0.1:0`.
pub struct TestServer {
    /// Client for it.
    pub client: Client,
    /// The fs root, when the backend is fs (kept alive as long as the server).
    pub dir: Option<TempDir>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<std::io::Result<()>>>,
}

/// A configuration for `backend` (fs in a new temporary directory, returned alongside).
///
/// Authentication is off: tests of other areas are not about credentials. Auth tests turn it on
/// (`cfg.auth.enabled = true`).
pub fn config_for(backend: Backend) -> (ServerConfig, Option<TempDir>) {
    let mut cfg = ServerConfig::default();
    cfg.server.listen = ([127, 0, 0, 1], 0).into();
    cfg.auth.enabled = false;
    match backend {
        Backend::Memory => {
            cfg.storage.backend = "memory".into();
            (cfg, None)
        }
        Backend::Fs => {
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
            cfg.storage.backend = "fs".into();
            cfg.storage.options = serde_json::json!({"root": dir.path().join("store"), "fsync": false});
            (cfg, Some(dir))
        }
    }
}

impl TestServer {
    /// Starts a server on `backend` with the builtin seed.
    pub async fn start(backend: Backend) -> Self {
        let (cfg, dir) = config_for(backend);
        Self::start_with(cfg, dir).await
    }

    /// Starts a server with `cfg` (its listen address is replaced by `127.0.0.1:0`).
    pub async fn start_with(mut cfg: ServerConfig, dir: Option<TempDir>) -> Self {
        cfg.server.listen = ([127, 0, 0, 1], 0).into();
        let state = sunfish_server::build(&cfg).await.unwrap_or_else(|e| panic!("build: {e}"));
        let listener = tokio::net::TcpListener::bind(cfg.server.listen).await.unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("addr: {e}"));
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(sunfish_server::run(listener, state, async {
            let _ = rx.await;
        }));
        TestServer { client: Client::new(format!("http://{addr}")), dir, shutdown: Some(tx), handle: Some(handle) }
    }

    /// Stops the server gracefully and waits for storage to close.
    pub async fn stop(mut self) -> Option<TempDir> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
        self.dir.take()
    }
}

impl std::ops::Deref for TestServer {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

/// The workspace root (the folder holding this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// `../shared` beside the checkout, or `None` (with a printed reason) so the caller can skip.
pub fn shared_dir() -> Option<PathBuf> {
    let dir = workspace_root().join("../shared");
    if dir.join("mockups/sunfish").is_dir() {
        Some(dir)
    } else {
        eprintln!("SKIP: {} not found; tests that read the shared mockups are skipped", dir.display());
        None
    }
}

/// The `sunfish-server` binary of this build (built on demand when cargo has not yet built it).
pub fn server_binary() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| built_binary("sunfish-server")).clone()
}

/// The `sunfish-agent` binary of this build (built on demand, as [`server_binary`]).
pub fn agent_binary() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| built_binary("sunfish-agent")).clone()
}

/// The `sunfish-agent-host` binary of this build (built on demand, as [`server_binary`]).
pub fn host_binary() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| built_binary("sunfish-agent-host")).clone()
}

/// The binary `name` of package `name`, in this test build's profile directory. Always asks
/// cargo: it is a no-op when the binary is fresh, and a stale one would test old code.
fn built_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/e2e-hash → target/<profile>/<name>
    let profile_dir = exe.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default();
    let bin = profile_dir.join(name);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-q", "-p", name, "--bin", name]);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd.current_dir(workspace_root()).status();
    assert!(status.is_ok_and(|s| s.success()), "building {name} failed");
    assert!(bin.is_file(), "{} missing after build", bin.display());
    bin
}

/// A free loopback port (bound then released; fine for tests that start one binary at a time).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

/// The real `sunfish-server` binary as a child process.
pub struct BinaryServer {
    /// Client for it.
    pub client: Client,
    child: Child,
}

impl BinaryServer {
    /// Starts the binary with `args` and `env` on a free loopback port; waits until it answers.
    pub async fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(server_binary());
        cmd.args(args).args(["--listen", &listen]).stdout(Stdio::null()).stderr(Stdio::null());
        // Authentication off unless the test's own environment turns it on.
        cmd.env("SUNFISH__AUTH__ENABLED", "false");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn: {e}"));
        let client = Client::new(format!("http://{listen}"));
        let server = BinaryServer { client, child };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = self.client.http.get(format!("{}/redfish", self.client.base)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "server did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL, no cleanup.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit (after a signal sent by the test); returns its status.
    pub fn wait(mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap_or_else(|e| panic!("wait: {e}"))
    }
}

impl Drop for BinaryServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl std::ops::Deref for BinaryServer {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

/// Polls `f` until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers added for the e2e areas (raw requests, restarts, signals, error bodies).

impl Client {
    /// Like [`Client::send`], but a transport failure (refused or dropped connection) is
    /// returned instead of panicking: for storms that run into a killed server.
    ///
    /// # Errors
    /// The request could not be sent or its answer not read.
    pub async fn try_send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<Reply, reqwest::Error> {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(b) = body {
            req = req.header("Content-Type", "application/json").body(serde_json::to_vec(b).unwrap_or_default());
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Reply { status, headers, body })
    }

    /// Sends `method path` with a raw body and content type (`None`: no Content-Type header).
    pub async fn send_bytes(&self, method: Method, path: &str, body: Vec<u8>, content_type: Option<&str>) -> Reply {
        let mut req = self.http.request(method, format!("{}{}", self.base, path)).body(body);
        if let Some(ct) = content_type {
            req = req.header("Content-Type", ct);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("request to {path} failed: {e}"));
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap_or_default();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply { status, headers, body }
    }

    /// `127.0.0.1:PORT` of the server.
    pub fn addr(&self) -> &str {
        self.base.trim_start_matches("http://")
    }
}

/// The answer to a hand-written request: status code and the whole response as text.
#[derive(Debug)]
pub struct RawReply {
    /// Status code from the status line.
    pub status: u16,
    /// Status line, headers and body, lossily decoded.
    pub text: String,
}

/// Writes `request` (a complete HTTP/1.1 request, which should say `Connection: close`) to
/// `addr` over a fresh TCP connection and reads the answer to the end. For request targets that
/// HTTP clients would normalize (`..`) or refuse. Panics when no status line comes back (a
/// dropped connection is a failure for every caller).
pub async fn raw_request(addr: &str, request: &[u8]) -> RawReply {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(request).await?;
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let shown = String::from_utf8_lossy(request.get(..request.len().min(120)).unwrap_or_default()).into_owned();
    let buf = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .unwrap_or_else(|_| panic!("no answer within 30 s to {shown:?}"))
        .unwrap_or_else(|e| panic!("raw request {shown:?} failed: {e}"));
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in the answer to {shown:?} (connection dropped?): {text:?}"));
    RawReply { status, text }
}

/// A request head for [`raw_request`]: `METHOD target HTTP/1.1` with Host, `Connection: close`
/// and, with a body, Content-Type JSON and Content-Length.
pub fn raw_head(method: &str, target: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if !body.is_empty() {
        out.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// A configuration for the fs backend at an existing or new `root` (for restarts on the same
/// store).
pub fn config_for_root(root: &Path, fsync: bool) -> ServerConfig {
    let mut cfg = ServerConfig::default();
    cfg.server.listen = ([127, 0, 0, 1], 0).into();
    cfg.auth.enabled = false;
    cfg.storage.backend = "fs".into();
    cfg.storage.options = serde_json::json!({"root": root, "fsync": fsync});
    cfg
}

/// The environment that makes the real binary use the fs backend at `root`.
pub fn fs_env(root: &Path, fsync: bool) -> Vec<(String, String)> {
    vec![
        ("SUNFISH__STORAGE__BACKEND".into(), "fs".into()),
        ("SUNFISH__STORAGE__OPTIONS__ROOT".into(), root.display().to_string()),
        ("SUNFISH__STORAGE__OPTIONS__FSYNC".into(), fsync.to_string()),
    ]
}

/// A `Command` for the server binary with every inherited `SUNFISH__*` variable removed, so the
/// test's own environment cannot change what it checks.
pub fn server_command() -> Command {
    let mut cmd = Command::new(server_binary());
    for (k, _) in std::env::vars() {
        if k.starts_with("SUNFISH__") {
            cmd.env_remove(k);
        }
    }
    cmd
}

impl BinaryServer {
    /// [`BinaryServer::start`] with owned environment pairs.
    pub async fn start_env(args: &[&str], env: &[(String, String)]) -> Self {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Self::start(args, &env).await
    }

    /// Sends SIGTERM (through `kill -TERM`) and waits up to `timeout` for the process to exit;
    /// returns its exit status. Panics when it does not exit in time.
    pub async fn terminate(mut self, timeout: Duration) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid} failed");
        let child = &mut self.child;
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) => {}
                Err(e) => panic!("waiting for {pid}: {e}"),
            }
            assert!(Instant::now() < deadline, "server {pid} did not exit within {timeout:?} of SIGTERM");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// Asserts that `r` is a Redfish error with `status` and Base registry MessageId `message_id`:
/// `error.code` and `error.message` are non-empty strings and
/// `error.@Message.ExtendedInfo[0].MessageId` is `Base.<version>.<message_id>`.
#[track_caller]
pub fn assert_redfish_error(r: &Reply, status: u16, message_id: &str) {
    assert_eq!(r.status.as_u16(), status, "status; body {}", r.body);
    assert_error_body(r);
    assert_eq!(r.message_id(), message_id, "MessageId; body {}", r.body);
}

/// Asserts that `r` carries a Redfish error body (whatever its MessageId).
#[track_caller]
pub fn assert_error_body(r: &Reply) {
    let e = &r.body["error"];
    assert!(e["code"].as_str().is_some_and(|s| !s.is_empty()), "error.code missing: {}", r.body);
    assert!(e["message"].as_str().is_some_and(|s| !s.is_empty()), "error.message missing: {}", r.body);
    let id = e["@Message.ExtendedInfo"][0]["MessageId"].as_str().unwrap_or_default();
    assert!(id.starts_with("Base."), "ExtendedInfo[0].MessageId not from the Base registry: {}", r.body);
}

/// Every `index.json` below `root` (not following symbolic links), sorted.
pub fn index_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() && e.file_name() == "index.json" {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// The resource URI of `<root>/<rel>/index.json`: `/redfish/v1/<rel>` (`/redfish/v1` for the
/// root's own file).
pub fn uri_of_index(root: &Path, file: &Path) -> String {
    let rel = file.parent().and_then(|d| d.strip_prefix(root).ok()).map(Path::to_path_buf).unwrap_or_default();
    let rel = rel.to_string_lossy().replace('\\', "/");
    if rel.is_empty() {
        "/redfish/v1".into()
    } else {
        format!("/redfish/v1/{rel}")
    }
}

/// GETs the collection at `path` and asserts that it is consistent: `Members` is an array of
/// distinct `{"@odata.id": ...}` links, each a direct child of `path` that answers 200, and
/// `Members@odata.count` equals its length. Returns the member URIs in order.
pub async fn assert_collection_consistent(c: &Client, path: &str) -> Vec<String> {
    let r = c.get(path).await;
    assert_eq!(r.status, StatusCode::OK, "GET {path}: {}", r.body);
    let members = r.body["Members"].as_array().unwrap_or_else(|| panic!("{path} has no Members array: {}", r.body));
    let mut uris = Vec::with_capacity(members.len());
    for m in members {
        let obj = m.as_object().unwrap_or_else(|| panic!("{path}: member {m} is not a link object"));
        assert_eq!(obj.len(), 1, "{path}: member {m} is not a plain link");
        let uri = obj["@odata.id"].as_str().unwrap_or_else(|| panic!("{path}: member {m} has no @odata.id"));
        let parent = uri.rsplit_once('/').map(|(p, _)| p).unwrap_or_default();
        assert_eq!(parent, path.trim_end_matches('/'), "{path}: member {uri} is not a direct child");
        uris.push(uri.to_string());
    }
    let distinct: std::collections::BTreeSet<&String> = uris.iter().collect();
    assert_eq!(distinct.len(), uris.len(), "{path}: duplicate Members entries");
    assert_eq!(r.body["Members@odata.count"], Value::from(uris.len()), "{path}: Members@odata.count is wrong");
    for uri in &uris {
        let m = c.get(uri).await;
        assert_eq!(m.status, StatusCode::OK, "{path}: member {uri} does not answer");
        assert_eq!(m.body["@odata.id"].as_str(), Some(uri.as_str()), "{uri}: @odata.id differs from its URI");
    }
    uris
}

/// Every shipped `conf/*.toml`, sorted, as absolute paths (panics when there are none).
pub fn shipped_configs() -> Vec<PathBuf> {
    let dir = workspace_root().join("conf");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        // Agent configurations (`agent*.toml`) are sunfish-agent's: its own tests load them.
        .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("agent")))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no conf/*.toml in {}", dir.display());
    out
}
