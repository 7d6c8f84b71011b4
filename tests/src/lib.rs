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
pub fn config_for(backend: Backend) -> (ServerConfig, Option<TempDir>) {
    let mut cfg = ServerConfig::default();
    cfg.server.listen = ([127, 0, 0, 1], 0).into();
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
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().unwrap_or_default();
        // target/<profile>/deps/e2e-hash → target/<profile>/sunfish-server
        let profile_dir = exe.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default();
        let bin = profile_dir.join("sunfish-server");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q", "-p", "sunfish-server", "--bin", "sunfish-server"]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        // Always ask cargo: it is a no-op when the binary is fresh, and a stale one would test
        // old code.
        let status = cmd.current_dir(workspace_root()).status();
        assert!(status.is_ok_and(|s| s.success()), "building sunfish-server failed");
        assert!(bin.is_file(), "{} missing after build", bin.display());
        bin
    })
    .clone()
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
