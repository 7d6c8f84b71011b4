//! Transport security and limits of `[server]`: HTTPS with a certificate made at test time,
//! plain HTTP refused on the TLS port, bad TLS settings stopping the start, `header_timeout_ms`,
//! `request_timeout_ms` (SSE streams exempt), `max_header_bytes` and `max_connections`.
//! This binary registers the object handler `test-held`: a ComputerSystem create waits on a
//! gate the test holds, so a request can be made as slow as a test needs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::json;
use sunfish_core::{Core, ObjectHandler, ObjectHandlerRegistration, Operation, PluginOptions, StartupError, WriteOp};
use sunfish_server::tls::TlsConfig;
use sunfish_server::ServerConfig;
use sunfish_tests::{
    assert_error_body, assert_redfish_error, config_for, eventually, free_port, raw_head, raw_request, server_command,
    Backend, TestServer,
};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// A slow handler: `test-held`.

/// Gates by the path of the ComputerSystem being created; `before` takes the receiving end.
static GATES: LazyLock<Mutex<HashMap<String, oneshot::Receiver<()>>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

fn gates() -> std::sync::MutexGuard<'static, HashMap<String, oneshot::Receiver<()>>> {
    GATES.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Holds the create of `path` in `before` until the returned sender is used or dropped.
fn hold(path: &str) -> oneshot::Sender<()> {
    let (tx, rx) = oneshot::channel();
    gates().insert(path.to_string(), rx);
    tx
}

/// Makes gated ComputerSystem creates wait in `before`; others pass at once.
struct Held;

#[async_trait]
impl ObjectHandler for Held {
    fn resource_types(&self) -> &[&str] {
        &["ComputerSystem"]
    }

    async fn before(&self, _core: &Core, op: &mut WriteOp) -> sunfish_core::Result<()> {
        if op.operation == Operation::Create {
            let gate = gates().remove(op.path.as_str());
            if let Some(gate) = gate {
                let _ = gate.await;
            }
        }
        Ok(())
    }
}

fn build_held(_: PluginOptions) -> Result<Arc<dyn ObjectHandler>, StartupError> {
    Ok(Arc::new(Held))
}

sunfish_core::register_object_handler!(ObjectHandlerRegistration {
    name: "test-held",
    description: "e2e tests: ComputerSystem creates wait on a gate the test holds",
    build: build_held,
});

// ---------------------------------------------------------------------------------------------
// Certificates and HTTPS servers.

/// A test CA and a server certificate it issued for `127.0.0.1` and `localhost`, as PEM files.
struct Pki {
    dir: TempDir,
    /// The CA certificate (what clients trust).
    ca_pem: String,
}

impl Pki {
    fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let made = || -> Result<Self, Box<dyn std::error::Error>> {
            let dir = tempfile::tempdir()?;
            let ca_key = KeyPair::generate()?;
            let mut ca = CertificateParams::new(Vec::<String>::new())?;
            ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            ca.distinguished_name.push(DnType::CommonName, "sunfish test CA");
            let ca = ca.self_signed(&ca_key)?;
            let key = KeyPair::generate()?;
            let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
            leaf.distinguished_name.push(DnType::CommonName, "127.0.0.1");
            let leaf = leaf.signed_by(&key, &ca, &ca_key)?;
            std::fs::write(dir.path().join("cert.pem"), leaf.pem())?;
            std::fs::write(dir.path().join("key.pem"), key.serialize_pem())?;
            Ok(Pki { dir, ca_pem: ca.pem() })
        };
        made().unwrap_or_else(|e| panic!("making test certificates: {e}"))
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    fn tls(&self) -> TlsConfig {
        TlsConfig { cert: Some(self.cert()), key: Some(self.key()) }
    }

    /// A client that trusts the test CA.
    fn client(&self) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap_or_else(|e| panic!("CA: {e}"));
        let client = reqwest::Client::builder().no_proxy().add_root_certificate(ca).timeout(WAIT).build();
        client.unwrap_or_else(|e| panic!("client: {e}"))
    }
}

/// A memory-backed configuration (authentication off, as every e2e area but auth).
fn memory() -> ServerConfig {
    config_for(Backend::Memory).0
}

/// GETs `url`; status and body text.
async fn get(client: &reqwest::Client, url: &str) -> Result<(u16, String), reqwest::Error> {
    let r = client.get(url).send().await?;
    let status = r.status().as_u16();
    Ok((status, r.text().await?))
}

/// Reads one HTTP/1.1 response (head and `Content-Length` body) from `s`; `None` when the
/// connection closes first.
async fn read_response(s: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Some(String::from_utf8_lossy(&buf[..end + 4 + len]).into_owned());
            }
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads `s` until the server closes it (within `WAIT`); what it sent before closing.
async fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let read = tokio::time::timeout(WAIT, s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server did not close the connection within {WAIT:?}");
    buf
}

/// The service root answers 200 over plain HTTP: the server is still healthy.
async fn assert_healthy(s: &TestServer) {
    let r = s.get("/redfish/v1").await;
    assert_eq!(r.status, 200, "{}", r.body);
}

// ---------------------------------------------------------------------------------------------
// TLS.

/// With `server.tls.cert` and `server.tls.key` set, the port speaks HTTPS with that certificate:
/// a client trusting the issuing CA gets the service root, one that does not fails the
/// handshake.
#[tokio::test]
async fn https_with_the_configured_certificate() {
    let pki = Pki::new();
    let mut cfg = memory();
    cfg.server.tls = pki.tls();
    let s = TestServer::start_with(cfg, None).await;
    let url = format!("https://{}/redfish/v1", s.addr());
    let (status, body) = get(&pki.client(), &url).await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["@odata.id"], "/redfish/v1");
    let localhost = format!("https://localhost:{}/redfish", s.addr().rsplit(':').next().unwrap_or_default());
    assert_eq!(get(&pki.client(), &localhost).await.map(|r| r.0).ok(), Some(200), "by host name");
    let untrusting = reqwest::Client::builder().no_proxy().timeout(WAIT).build().unwrap();
    assert!(get(&untrusting, &url).await.is_err(), "a client that does not trust the CA got an answer");
    s.stop().await;
}

/// Plain HTTP on the TLS port gets no HTTP answer: the handshake fails and the connection is
/// closed. The server keeps serving HTTPS.
#[tokio::test]
async fn plain_http_is_refused_on_the_tls_port() {
    let pki = Pki::new();
    let mut cfg = memory();
    cfg.server.tls = pki.tls();
    let s = TestServer::start_with(cfg, None).await;
    let mut tcp = TcpStream::connect(s.addr()).await.unwrap();
    tcp.write_all(&raw_head("GET", "/redfish/v1", b"")).await.unwrap();
    let answer = read_until_closed(&mut tcp).await;
    assert!(!answer.starts_with(b"HTTP/"), "plain HTTP was answered: {:?}", String::from_utf8_lossy(&answer));
    let plain = format!("http://{}/redfish/v1", s.addr());
    assert!(get(&pki.client(), &plain).await.is_err(), "an http:// request on the TLS port succeeded");
    let url = format!("https://{}/redfish/v1", s.addr());
    assert_eq!(get(&pki.client(), &url).await.map(|r| r.0).ok(), Some(200), "HTTPS after the plain attempt");
    s.stop().await;
}

/// A client that connects to the TLS port and never says hello is disconnected after
/// `header_timeout_ms`.
#[tokio::test]
async fn a_stalled_tls_handshake_is_closed() {
    let pki = Pki::new();
    let mut cfg = memory();
    cfg.server.tls = pki.tls();
    cfg.server.header_timeout_ms = 300;
    let s = TestServer::start_with(cfg, None).await;
    let mut tcp = TcpStream::connect(s.addr()).await.unwrap();
    let start = Instant::now();
    let answer = read_until_closed(&mut tcp).await;
    assert!(answer.is_empty(), "{answer:?}");
    assert!(start.elapsed() >= Duration::from_millis(250), "closed before the timeout: {:?}", start.elapsed());
    let url = format!("https://{}/redfish", s.addr());
    assert_eq!(get(&pki.client(), &url).await.map(|r| r.0).ok(), Some(200));
    s.stop().await;
}

/// `TlsConfig::load` errors of one settings value, as text.
fn tls_error(tls: TlsConfig) -> String {
    match tls.load() {
        Ok(_) => panic!("{tls:?} loaded"),
        Err(e) => e.to_string(),
    }
}

/// Bad TLS settings are refused with the key and file named: one of cert and key without the
/// other, a missing file, a file that is not PEM, a key that does not belong to the
/// certificate. `run` refuses such a state rather than serving plain HTTP.
#[tokio::test]
async fn bad_tls_settings_are_refused_naming_the_file() {
    let pki = Pki::new();
    let other = Pki::new();
    let missing = pki.dir.path().join("nope.pem");
    let junk = pki.dir.path().join("junk.pem");
    std::fs::write(&junk, "-----BEGIN NONSENSE-----\nabc\n-----END NONSENSE-----\n").unwrap();
    let shown = |p: &Path| p.display().to_string();

    let e = tls_error(TlsConfig { cert: Some(pki.cert()), key: None });
    assert!(e.contains("server.tls.key is not"), "{e}");
    let e = tls_error(TlsConfig { cert: None, key: Some(pki.key()) });
    assert!(e.contains("server.tls.cert is not"), "{e}");
    let e = tls_error(TlsConfig { cert: Some(missing.clone()), key: Some(pki.key()) });
    assert!(e.contains("server.tls.cert") && e.contains(&shown(&missing)), "{e}");
    let e = tls_error(TlsConfig { cert: Some(pki.cert()), key: Some(missing.clone()) });
    assert!(e.contains("server.tls.key") && e.contains(&shown(&missing)), "{e}");
    let e = tls_error(TlsConfig { cert: Some(junk.clone()), key: Some(pki.key()) });
    assert!(e.contains("server.tls.cert") && e.contains(&shown(&junk)), "{e}");
    let e = tls_error(TlsConfig { cert: Some(pki.cert()), key: Some(junk.clone()) });
    assert!(e.contains("server.tls.key") && e.contains(&shown(&junk)), "{e}");
    let e = tls_error(TlsConfig { cert: Some(pki.cert()), key: Some(other.key()) });
    assert!(e.contains(&shown(&other.key())) && e.contains(&shown(&pki.cert())), "{e}");

    let mut cfg = memory();
    cfg.server.tls = TlsConfig { cert: Some(pki.cert()), key: None };
    let state = sunfish_server::build(&cfg).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let run = tokio::time::timeout(WAIT, sunfish_server::run(listener, state, std::future::pending())).await;
    let e = run.expect("run did not return").expect_err("run served with half a TLS setting").to_string();
    assert!(e.contains("server.tls.key"), "{e}");
}

/// Kills the child process when dropped (a failed assertion must not leave a server running).
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The binary with TLS environment variables: memory storage, a free loopback port; stderr
/// piped when the test reads it (only for a run that ends at once: nobody drains the pipe).
fn binary(port: u16, tls: &[(&str, &Path)], read_stderr: bool) -> Reaped {
    let mut cmd = server_command();
    cmd.args(["--listen", &format!("127.0.0.1:{port}")])
        .env("SUNFISH__STORAGE__BACKEND", "memory")
        .stdout(Stdio::null())
        .stderr(if read_stderr { Stdio::piped() } else { Stdio::null() });
    for (k, v) in tls {
        cmd.env(k, v);
    }
    Reaped(cmd.spawn().unwrap_or_else(|e| panic!("spawn: {e}")))
}

/// The real binary: `server.tls.cert` without a key exits 1 at start naming the missing key;
/// with both it serves HTTPS.
#[tokio::test]
async fn the_binary_refuses_half_a_tls_setting_and_serves_https_with_both() {
    let pki = Pki::new();
    let cert = pki.cert();
    let key = pki.key();
    let mut half = binary(free_port(), &[("SUNFISH__SERVER__TLS__CERT", &cert)], true);
    let status = eventually("the binary to exit", WAIT, || {
        let s = half.0.try_wait().ok().flatten();
        async move { s }
    })
    .await;
    assert!(!status.success(), "{status}");
    let mut stderr = String::new();
    if let Some(mut e) = half.0.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    assert!(stderr.contains("server.tls.key"), "{stderr}");

    let port = free_port();
    let _server = binary(port, &[("SUNFISH__SERVER__TLS__CERT", &cert), ("SUNFISH__SERVER__TLS__KEY", &key)], false);
    let client = pki.client();
    let url = format!("https://127.0.0.1:{port}/redfish");
    eventually("the binary to answer over HTTPS", WAIT, || {
        let (client, url) = (client.clone(), url.clone());
        async move { get(&client, &url).await.ok().filter(|r| r.0 == 200) }
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// header_timeout_ms.

/// A client that sends part of a request head and stops has its connection closed after
/// `header_timeout_ms`, without a response or with hyper's 408; an idle connection is closed
/// the same way. Other clients are served throughout.
#[tokio::test]
async fn an_unfinished_request_head_is_closed_after_header_timeout() {
    let mut cfg = memory();
    cfg.server.header_timeout_ms = 300;
    let s = TestServer::start_with(cfg, None).await;

    let mut half = TcpStream::connect(s.addr()).await.unwrap();
    let start = Instant::now();
    half.write_all(b"GET /redfish/v1 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: 1").await.unwrap();
    assert_healthy(&s).await;
    let answer = read_until_closed(&mut half).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(answer.is_empty() || text.starts_with("HTTP/1.1 408"), "{text:?}");
    assert!(start.elapsed() >= Duration::from_millis(250), "closed before the timeout: {:?}", start.elapsed());

    let mut idle = TcpStream::connect(s.addr()).await.unwrap();
    assert!(read_until_closed(&mut idle).await.is_empty());

    // A complete request is served, and its keep-alive connection is then closed when idle.
    let mut kept = TcpStream::connect(s.addr()).await.unwrap();
    kept.write_all(b"GET /redfish HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.unwrap();
    let r = tokio::time::timeout(WAIT, read_response(&mut kept)).await.unwrap().unwrap_or_default();
    assert!(r.starts_with("HTTP/1.1 200"), "{r:?}");
    assert!(read_until_closed(&mut kept).await.is_empty());
    assert_healthy(&s).await;
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// request_timeout_ms.

/// A request whose handler takes longer than `request_timeout_ms` is answered 503 with Base
/// `OperationTimeout`; the handler is not cancelled (the create is stored once it is let go),
/// and other requests are served meanwhile.
#[tokio::test]
async fn a_slow_request_is_answered_503_and_its_work_completes() {
    let mut cfg = memory();
    cfg.objects.handlers = vec!["test-held".into()];
    cfg.server.request_timeout_ms = 300;
    let s = TestServer::start_with(cfg, None).await;
    let system = |id: &str| json!({"@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem", "Id": id, "Name": id});

    let gate = hold("/redfish/v1/Systems/held-1");
    let start = Instant::now();
    let r = s.post("/redfish/v1/Systems", &system("held-1")).await;
    assert_redfish_error(&r, 503, "OperationTimeout");
    assert!(start.elapsed() >= Duration::from_millis(250), "answered before the timeout: {:?}", start.elapsed());
    assert_healthy(&s).await;
    assert_eq!(s.get("/redfish/v1/Systems/held-1").await.status, 404, "stored while still held");

    let _ = gate.send(());
    eventually("the held create to be stored", WAIT, || async {
        (s.get("/redfish/v1/Systems/held-1").await.status == 200).then_some(())
    })
    .await;
    let r = s.post("/redfish/v1/Systems", &system("quick")).await;
    assert_eq!(r.status, 201, "{}", r.body);
    s.stop().await;
}

/// The request timeout covers the response head only: an SSE stream stays open and keeps
/// delivering keep-alives well past `request_timeout_ms`.
#[tokio::test]
async fn sse_streams_outlive_the_request_timeout() {
    let mut cfg = memory();
    cfg.server.request_timeout_ms = 200;
    cfg.events.sse_keepalive_ms = 100;
    let s = TestServer::start_with(cfg, None).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut resp = http
        .get(format!("{}/redfish/v1/EventService/SSE", s.base))
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let start = Instant::now();
    let mut late = 0;
    while start.elapsed() < Duration::from_millis(800) {
        let chunk = tokio::time::timeout(WAIT, resp.chunk()).await.expect("nothing on the stream");
        let chunk = chunk.unwrap_or_else(|e| panic!("the stream failed: {e}"));
        assert!(chunk.is_some(), "the stream ended after {:?}", start.elapsed());
        if start.elapsed() > Duration::from_millis(400) {
            late += 1;
        }
    }
    assert!(late > 0, "no keep-alive after twice the request timeout");
    drop(resp);
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// max_header_bytes.

/// Request headers over `max_header_bytes` in total get 431 with a Redfish error body; headers
/// under it are served; a head over four times the limit gets hyper's bare 431. The server
/// stays healthy.
#[tokio::test]
async fn oversized_headers_get_431() {
    let mut cfg = memory();
    cfg.server.max_header_bytes = 4096;
    let s = TestServer::start_with(cfg, None).await;
    let pad = |n: usize| "a".repeat(n);

    let r = s.send(reqwest::Method::GET, "/redfish/v1", None, &[("X-Pad", &pad(3000))]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s.send(reqwest::Method::GET, "/redfish/v1", None, &[("X-Pad", &pad(2500)), ("X-Pad-2", &pad(2500))]).await;
    assert_eq!(r.status, 431, "{}", r.body);
    assert_error_body(&r);
    let message = r.body["error"]["@Message.ExtendedInfo"][0]["Message"].as_str().unwrap_or_default();
    assert!(message.contains("4096"), "{message}");

    let mut huge = b"GET /redfish/v1 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nX-Pad: ".to_vec();
    huge.extend_from_slice(pad(20_000).as_bytes());
    huge.extend_from_slice(b"\r\n\r\n");
    let raw = raw_request(s.addr(), &huge).await;
    assert_eq!(raw.status, 431, "{}", raw.text);
    assert_healthy(&s).await;
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// max_connections.

/// Opens a connection and completes one keep-alive request on it, so the server has accepted
/// it and holds it.
async fn held_connection(addr: &str) -> TcpStream {
    let mut c = TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("connect: {e}"));
    let sent = c.write_all(b"GET /redfish HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await;
    assert!(sent.is_ok(), "{sent:?}");
    let r = tokio::time::timeout(WAIT, read_response(&mut c)).await.ok().flatten().unwrap_or_default();
    assert!(r.starts_with("HTTP/1.1 200"), "{r:?}");
    c
}

/// With `max_connections` connections open, further ones connect but get no answer; once the
/// held ones close, the waiting ones are served, and the server stays healthy.
#[tokio::test]
async fn connections_past_max_connections_wait_until_others_close() {
    let mut cfg = memory();
    cfg.server.max_connections = 2;
    cfg.server.header_timeout_ms = 60_000;
    let s = TestServer::start_with(cfg, None).await;
    let first = held_connection(s.addr()).await;
    let second = held_connection(s.addr()).await;

    let mut waiting = Vec::new();
    for _ in 0..3 {
        let mut c = TcpStream::connect(s.addr()).await.unwrap();
        c.write_all(&raw_head("GET", "/redfish", b"")).await.unwrap();
        waiting.push(tokio::spawn(async move {
            let mut buf = Vec::new();
            let _ = c.read_to_end(&mut buf).await;
            String::from_utf8_lossy(&buf).into_owned()
        }));
    }
    // Absence can only be shown by waiting: nothing comes back while both slots are taken.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(waiting.iter().all(|w| !w.is_finished()), "a connection past max_connections was served");

    drop(first);
    drop(second);
    for w in waiting {
        let answer = tokio::time::timeout(WAIT, w).await.expect("a waiting connection was never served").unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    }
    assert_healthy(&s).await;
    s.stop().await;
}
