//! A real HTTP event receiver for the EventService tests: a small axum app on `127.0.0.1` that
//! records every POST (time, path, headers, JSON body) and answers according to its [`Mode`]:
//! 200, 500, or never (the connection is accepted and the request left hanging). A port with
//! nothing listening ([`closed_port`]) stands for a receiver that is down; [`Receiver::start_on`]
//! brings one up there later. Also the helpers the event tests share: a fast event
//! configuration, subscribing, envelopes, and polling a resource.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use sunfish_server::ServerConfig;
use sunfish_tests::{config_for, eventually, Backend, Client, Reply};
use tempfile::TempDir;
use tokio::task::JoinHandle;

/// How the receiver answers a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 200 OK.
    Ok,
    /// 500 Internal Server Error.
    Fail,
    /// Never answers (the request is read and recorded, then left hanging).
    Hang,
}

/// One delivery attempt as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// When the request (head and body) had arrived.
    pub at: Instant,
    /// Request path (`/sub-a`).
    pub path: String,
    /// Request headers, names lowercase.
    pub headers: Vec<(String, String)>,
    /// The body as JSON (`Null` when not JSON).
    pub body: Value,
    /// What was answered: `Some(200)`, `Some(500)`, or `None` for a hanging request.
    pub answered: Option<u16>,
}

impl Attempt {
    /// A header value by (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    /// The `Events` of the delivered envelope.
    pub fn events(&self) -> Vec<Value> {
        self.body["Events"].as_array().cloned().unwrap_or_default()
    }
}

#[derive(Debug)]
struct Inner {
    mode: Mutex<Mode>,
    attempts: Mutex<Vec<Attempt>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A running receiver; stops when dropped.
#[derive(Debug)]
pub struct Receiver {
    /// Its loopback port.
    pub port: u16,
    inner: Arc<Inner>,
    task: JoinHandle<()>,
}

/// A loopback port with nothing listening (bound, then released): deliveries to it are refused
/// until a receiver is started there with [`Receiver::start_on`].
pub fn closed_port() -> u16 {
    sunfish_tests::free_port()
}

async fn record(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 64 << 20).await.unwrap_or_default();
    let mode = *lock(&inner.mode);
    let answered = match mode {
        Mode::Ok => Some(200),
        Mode::Fail => Some(500),
        Mode::Hang => None,
    };
    lock(&inner.attempts).push(Attempt {
        at: Instant::now(),
        path: parts.uri.path().to_string(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_ascii_lowercase(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        answered,
    });
    match mode {
        Mode::Ok => (StatusCode::OK, Body::empty()).into_response(),
        Mode::Fail => (StatusCode::INTERNAL_SERVER_ERROR, Body::empty()).into_response(),
        Mode::Hang => std::future::pending::<Response>().await,
    }
}

impl Receiver {
    /// A receiver on a new loopback port.
    pub async fn start(mode: Mode) -> Self {
        Self::start_on(0, mode).await
    }

    /// A receiver on `port` (0: any free one).
    pub async fn start_on(port: u16, mode: Mode) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("receiver bind 127.0.0.1:{port}: {e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_else(|e| panic!("receiver addr: {e}"));
        let inner = Arc::new(Inner { mode: Mutex::new(mode), attempts: Mutex::new(Vec::new()) });
        let app = axum::Router::new().fallback(record).with_state(inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { port, inner, task }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Changes how later requests are answered (a request already hanging keeps hanging).
    pub fn set_mode(&self, mode: Mode) {
        *lock(&self.inner.mode) = mode;
    }

    /// Every attempt so far, in arrival order.
    pub fn attempts(&self) -> Vec<Attempt> {
        lock(&self.inner.attempts).clone()
    }

    /// The attempts at `path` so far.
    pub fn attempts_at(&self, path: &str) -> Vec<Attempt> {
        self.attempts().into_iter().filter(|a| a.path == path).collect()
    }

    /// The attempts at `path` that were answered 200 (the deliveries).
    pub fn delivered_at(&self, path: &str) -> Vec<Attempt> {
        self.attempts_at(path).into_iter().filter(|a| a.answered == Some(200)).collect()
    }

    /// Every event delivered at `path`, envelope after envelope, in order.
    pub fn events_at(&self, path: &str) -> Vec<Value> {
        self.delivered_at(path).iter().flat_map(Attempt::events).collect()
    }

    /// The first `MessageArgs` entry of every event delivered at `path` whose MessageId starts
    /// with `prefix` (the tests' markers), in order.
    pub fn markers_at(&self, path: &str, prefix: &str) -> Vec<String> {
        self.events_at(path).iter().filter(|e| message_id(e).starts_with(prefix)).map(marker).collect()
    }

    /// Waits until at least `n` marked events (see [`Receiver::markers_at`]) were delivered at
    /// `path`; returns the markers.
    pub async fn wait_markers(&self, path: &str, prefix: &str, n: usize, timeout: Duration) -> Vec<String> {
        let what = format!("{n} events {prefix}* delivered at {path}");
        eventually(&what, timeout, || {
            let m = self.markers_at(path, prefix);
            async move { (m.len() >= n).then_some(m) }
        })
        .await
    }

    /// Waits until at least `n` attempts arrived at `path`; returns them.
    pub async fn wait_attempts(&self, path: &str, n: usize, timeout: Duration) -> Vec<Attempt> {
        let what = format!("{n} delivery attempts at {path}");
        eventually(&what, timeout, || {
            let a = self.attempts_at(path);
            async move { (a.len() >= n).then_some(a) }
        })
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An event's `MessageId` ("" when absent).
pub fn message_id(e: &Value) -> &str {
    e["MessageId"].as_str().unwrap_or_default()
}

/// An event's first `MessageArgs` entry, the tests' marker ("" when absent).
pub fn marker(e: &Value) -> String {
    e["MessageArgs"][0].as_str().unwrap_or_default().to_string()
}

/// A configuration for `backend` with event timings small enough for tests: 300 ms per
/// delivery attempt, counters written every 50 ms, SSE keep-alives every 100 ms, backoff capped
/// at 2 s.
pub fn fast_config(backend: Backend) -> (ServerConfig, Option<TempDir>) {
    let (mut cfg, dir) = config_for(backend);
    cfg.events.attempt_timeout_ms = 300;
    cfg.events.counters_interval_ms = 50;
    cfg.events.sse_keepalive_ms = 100;
    cfg.events.max_backoff_ms = 2_000;
    (cfg, dir)
}

/// PATCHes the EventService's `DeliveryRetryAttempts` and `DeliveryRetryIntervalSeconds`.
pub async fn set_retry(c: &Client, attempts: u64, interval_seconds: u64) {
    let r = c
        .patch(
            "/redfish/v1/EventService",
            &json!({"DeliveryRetryAttempts": attempts, "DeliveryRetryIntervalSeconds": interval_seconds}),
        )
        .await;
    assert_eq!(r.status, 200, "PATCH EventService retry settings: {}", r.body);
}

/// POSTs a subscription to `destination` with the extra members of `extra` (an object) and
/// asserts 201; returns its URI and Id.
pub async fn subscribe(c: &Client, destination: &str, extra: Value) -> (String, String) {
    let mut body = json!({"Destination": destination, "Protocol": "Redfish"});
    if let (Some(b), Value::Object(x)) = (body.as_object_mut(), extra) {
        b.extend(x);
    }
    let r = c.post("/redfish/v1/EventService/Subscriptions", &body).await;
    assert_eq!(r.status, 201, "creating subscription {body}: {}", r.body);
    let uri = r.body["@odata.id"].as_str().unwrap_or_else(|| panic!("no @odata.id in {}", r.body)).to_string();
    assert_eq!(r.header("location"), uri, "Location of the new subscription");
    let id = uri.rsplit('/').next().unwrap_or_default().to_string();
    (uri, id)
}

/// One event for an `/EventListener` envelope: `message_id`, the marker as `MessageArgs[0]`,
/// and an optional `OriginOfCondition`.
pub fn event(message_id: &str, marker: &str, origin: Option<&str>) -> Value {
    let mut e = json!({"MessageId": message_id, "MessageArgs": [marker], "MessageSeverity": "OK",
        "Message": format!("test event {marker}")});
    if let Some(o) = origin {
        e["OriginOfCondition"] = json!({"@odata.id": o});
    }
    e
}

/// An envelope as a sender (an agent) posts it to `/EventListener`, with the sender's Context.
pub fn envelope(events: Vec<Value>) -> Value {
    json!({"@odata.type": "#Event.v1_11_0.Event", "Id": "sender-envelope", "Name": "Events",
        "Context": "sender-context", "Events": events})
}

/// POSTs `events` as one envelope to `/EventListener`, asserts 200, and returns the answer
/// (the subscription Ids it was queued for).
pub async fn post_events(c: &Client, events: Vec<Value>) -> Vec<String> {
    let r = c.post("/EventListener", &envelope(events)).await;
    assert_eq!(r.status, 200, "POST /EventListener: {}", r.body);
    let ids = r.body.as_array().unwrap_or_else(|| panic!("/EventListener answer is not an array: {}", r.body));
    ids.iter().map(|v| v.as_str().unwrap_or_else(|| panic!("non-string Id in {}", r.body)).to_string()).collect()
}

/// GETs `path` until `ok` holds for the reply (panics after `timeout` naming `what`).
pub async fn get_until(c: &Client, path: &str, what: &str, timeout: Duration, ok: impl Fn(&Reply) -> bool) -> Reply {
    let ok = &ok;
    eventually(what, timeout, || async move {
        let r = c.get(path).await;
        ok(&r).then_some(r)
    })
    .await
}
