//! The `redfish` hardware manager: the hardware is another Redfish service (a BMC, or another
//! manager) at `url`. The agent mirrors it:
//! - at start, the device's top-level collections of the service are crawled and stored as they
//!   are (same paths, same bodies), replacing what an earlier run stored under them;
//! - reads go through to the service (`read_through`, on by default): a client sees the live
//!   resource, and the stored copy is refreshed when it changed;
//! - writes are sent to the service first (POST to the collection, PATCH, PUT, DELETE) and what
//!   the service then holds is stored and answered; a refusal comes back with the service's
//!   status and message and nothing is stored;
//! - the service's own changes reach the agent through its Server-Sent Events stream
//!   (`events = "sse"`), become hardware changes, and so ResourceEvents upstream.
//!
//! Options (`[hardware.options]`, see conf/agent-redfish.toml):
//! - `url` (required): base URL of the service (`http://127.0.0.1:8443`); it must be allowed by
//!   `[outbound] allow` like every URL the agent connects to;
//! - `auth`: `none` (default), `basic` (credentials on every request) or `session` (one Redfish
//!   session, created at start, re-created on a 401, deleted when the agent stops), with
//!   `user` and `password`;
//! - `roots`: top-level collections to mirror (`/redfish/v1/Chassis`); default: every
//!   collection the service root links except the services (EventService, SessionService,
//!   AccountService, AggregationService, TaskService), `Managers`, `JsonSchemas`, `Registries`;
//! - `read_through` (true), `events` (`sse` or `off`), `timeout_ms` (10,000: one request),
//!   `reconnect_max_ms` (30,000: longest wait between SSE reconnects), `max_resources`
//!   (100,000: a crawl that finds more stops with an error), `insecure` (false: accept any TLS
//!   certificate of the service; for lab BMCs with self-signed certificates only).
//!
//! Paths are not translated: the agent serves the service's resources under the same URIs.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde_json::{json, Value};
use sunfish_core::hardware::{
    is_service_path, ChangeSink, HardwareChange, HardwareManager, HardwareManagerRegistration,
};
use sunfish_core::{Core, Error, Operation, PluginOptions, ResourcePath, Result, StartupError, WriteOp};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// The registered name.
pub const NAME: &str = "redfish";

/// Where the SSE stream of a Redfish service is (DSP0266's `ServerSentEventUri` default).
const SSE_PATH: &str = "/redfish/v1/EventService/SSE";
/// Where sessions are created.
const SESSIONS_PATH: &str = "/redfish/v1/SessionService/Sessions";
/// Top-level collections that describe the service rather than the device.
const NOT_MIRRORED: [&str; 3] = ["Managers", "JsonSchemas", "Registries"];

/// How the agent authenticates to the service.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No credentials.
    #[default]
    None,
    /// HTTP Basic on every request.
    Basic,
    /// One Redfish session (`X-Auth-Token`).
    Session,
}

/// Whether the service's events are followed.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum EventsMode {
    /// Follow the SSE stream.
    #[default]
    Sse,
    /// Do not: the mirror is only refreshed by reads and writes.
    Off,
}

/// Options of the `redfish` manager.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RedfishOptions {
    /// Base URL of the service.
    pub url: String,
    /// Authentication mode.
    pub auth: AuthMode,
    /// User name for `basic` and `session`.
    pub user: Option<String>,
    /// Its password (prefer `SUNFISH_AGENT__HARDWARE__OPTIONS__PASSWORD`).
    pub password: Option<String>,
    /// Top-level collections to mirror; empty: every device collection the root links.
    pub roots: Vec<String>,
    /// Whether client reads go to the service.
    pub read_through: bool,
    /// Whether the service's events are followed.
    pub events: EventsMode,
    /// Timeout of one request, in milliseconds.
    pub timeout_ms: u64,
    /// Longest wait between reconnects of the event stream, in milliseconds.
    pub reconnect_max_ms: u64,
    /// Most resources a crawl may find.
    pub max_resources: usize,
    /// Accept any TLS certificate of the service.
    pub insecure: bool,
}

impl Default for RedfishOptions {
    fn default() -> Self {
        RedfishOptions {
            url: String::new(),
            auth: AuthMode::None,
            user: None,
            password: None,
            roots: Vec::new(),
            read_through: true,
            events: EventsMode::Sse,
            timeout_ms: 10_000,
            reconnect_max_ms: 30_000,
            max_resources: 100_000,
            insecure: false,
        }
    }
}

/// An answer of the service.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Option<Value>,
}

impl Reply {
    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body when it is a resource (an object with `@odata.id` or `@odata.type`).
    fn resource(&self) -> Option<Value> {
        self.body.clone().filter(|b| b.get("@odata.id").is_some() || b.get("@odata.type").is_some())
    }

    /// The Redfish error message, else the status line.
    fn message(&self) -> String {
        let msg = self.body.as_ref().and_then(|b| {
            let e = b.get("error")?;
            e.pointer("/@Message.ExtendedInfo/0/Message").or_else(|| e.get("message")).and_then(Value::as_str)
        });
        match msg {
            Some(m) => m.to_string(),
            None => format!("the service answered {}", self.status),
        }
    }
}

/// Which resources the agent mirrors: the chosen top-level collections and everything below.
#[derive(Debug, Clone, Default)]
struct Scope(Vec<ResourcePath>);

impl Scope {
    fn contains(&self, p: &ResourcePath) -> bool {
        self.0.iter().any(|root| p.is_within(root))
    }
}

/// State shared by the manager and its event task.
struct Inner {
    base: String,
    client: reqwest::Client,
    options: RedfishOptions,
    timeout: Duration,
    /// The session token and the session's URI, once logged in.
    session: tokio::sync::Mutex<Option<(String, Option<String>)>>,
    scope: parking_lot::RwLock<Scope>,
    stop: CancellationToken,
}

/// The `redfish` hardware manager.
pub struct Redfish(Arc<Inner>);

impl Redfish {
    /// A manager with `options`; connects to nothing until [`HardwareManager::start`].
    ///
    /// # Errors
    /// A missing or non-http(s) `url`, credentials missing for `basic`/`session`, roots that are
    /// not top-level collections, an HTTP client that cannot be built.
    pub fn new(options: RedfishOptions) -> std::result::Result<Self, String> {
        let base = options.url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(format!("url: {:?} must be an http or https URL", options.url));
        }
        if options.auth != AuthMode::None && (options.user.is_none() || options.password.is_none()) {
            return Err("user and password are needed with auth = \"basic\" or \"session\"".into());
        }
        let mut roots = Vec::new();
        for r in &options.roots {
            let p = ResourcePath::parse(r).map_err(|e| format!("roots: {r}: {e}"))?;
            if p.depth() != 1 || is_service_path(&p) {
                return Err(format!("roots: {r} is not a top-level device collection (/redfish/v1/<Name>)"));
            }
            roots.push(p);
        }
        let client = reqwest::Client::builder()
            .danger_accept_invalid_certs(options.insecure)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Redfish(Arc::new(Inner {
            base,
            client,
            timeout: Duration::from_millis(options.timeout_ms.max(1)),
            options,
            session: tokio::sync::Mutex::new(None),
            scope: parking_lot::RwLock::new(Scope(roots)),
            stop: CancellationToken::new(),
        })))
    }
}

impl Inner {
    fn agent_error(&self, status: Option<u16>, timed_out: bool, message: String) -> Error {
        Error::Agent { agent: self.base.clone(), status, timed_out, message }
    }

    /// Credentials for the next request (logging in first in `session` mode).
    async fn auth_header(&self) -> Result<Option<(&'static str, String)>> {
        let (Some(user), Some(password)) = (&self.options.user, &self.options.password) else { return Ok(None) };
        match self.options.auth {
            AuthMode::None => Ok(None),
            AuthMode::Basic => {
                let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                Ok(Some(("Authorization", format!("Basic {token}"))))
            }
            AuthMode::Session => {
                let mut session = self.session.lock().await;
                if session.is_none() {
                    *session = Some(self.login(user, password).await?);
                }
                Ok(session.as_ref().map(|(token, _)| ("X-Auth-Token", token.clone())))
            }
        }
    }

    async fn login(&self, user: &str, password: &str) -> Result<(String, Option<String>)> {
        let url = format!("{}{SESSIONS_PATH}", self.base);
        let body = json!({"UserName": user, "Password": password});
        let reply = self.send_raw(reqwest::Method::POST, &url, Some(&body), None, Some(self.timeout)).await?;
        let token = reply.headers.get("X-Auth-Token").and_then(|v| v.to_str().ok()).map(str::to_string);
        match token {
            Some(t) if reply.ok() => {
                let uri = reply
                    .headers
                    .get("Location")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
                    .or_else(|| reply.body.as_ref()?.get("@odata.id")?.as_str().map(str::to_string));
                debug!(service = %self.base, "session created");
                Ok((t, uri))
            }
            _ => Err(self.agent_error(Some(reply.status), false, format!("login refused: {}", reply.message()))),
        }
    }

    /// Deletes the session, if one was created.
    async fn logout(&self) {
        let Some((token, Some(uri))) = self.session.lock().await.take() else { return };
        let url = if uri.starts_with("http") { uri } else { format!("{}{uri}", self.base) };
        let auth = Some(("X-Auth-Token", token));
        if let Err(e) = self.send_raw(reqwest::Method::DELETE, &url, None, auth, Some(self.timeout)).await {
            debug!(error = %e, "session not deleted");
        }
    }

    /// One request without retries.
    async fn send_raw(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
        auth: Option<(&'static str, String)>,
        timeout: Option<Duration>,
    ) -> Result<Reply> {
        let mut req = self.client.request(method, url).header("Accept", "application/json");
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        if let Some((name, value)) = auth {
            req = req.header(name, value);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| self.transport_error(&e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.map_err(|e| self.transport_error(&e))?;
        let body = if bytes.is_empty() { None } else { serde_json::from_slice(&bytes).ok() };
        Ok(Reply { status, headers, body })
    }

    fn transport_error(&self, e: &reqwest::Error) -> Error {
        if e.is_timeout() {
            self.agent_error(None, true, format!("the service did not answer in time: {e}"))
        } else {
            self.agent_error(None, false, format!("the service cannot be reached: {e}"))
        }
    }

    /// A request to `path` with credentials; in `session` mode a 401 logs in again once.
    async fn request(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Result<Reply> {
        let url = format!("{}{path}", self.base);
        let auth = self.auth_header().await?;
        let reply = self.send_raw(method.clone(), &url, body, auth, Some(self.timeout)).await?;
        if reply.status == 401 && self.options.auth == AuthMode::Session {
            *self.session.lock().await = None;
            let auth = self.auth_header().await?;
            return self.send_raw(method, &url, body, auth, Some(self.timeout)).await;
        }
        Ok(reply)
    }

    /// GET of a resource: `Ok(None)` when the service answers 404.
    async fn fetch(&self, path: &str) -> Result<Option<Value>> {
        let reply = self.request(reqwest::Method::GET, path, None).await?;
        match reply.status {
            404 => Ok(None),
            _ if reply.ok() => Ok(reply.body),
            s => Err(self.agent_error(Some(s), false, reply.message())),
        }
    }

    /// The collections to mirror: the configured roots, else what the service root links.
    async fn discover_scope(&self) -> Result<Scope> {
        let configured = self.scope.read().clone();
        if !configured.0.is_empty() {
            return Ok(configured);
        }
        let root = self
            .fetch(ResourcePath::root().as_str())
            .await?
            .ok_or_else(|| self.agent_error(Some(404), false, "the service has no /redfish/v1".into()))?;
        let mut roots = Vec::new();
        if let Value::Object(m) = &root {
            for v in m.values() {
                let Some(Ok(p)) = v.get("@odata.id").and_then(Value::as_str).map(ResourcePath::parse_link) else {
                    continue;
                };
                if p.depth() == 1 && !is_service_path(&p) && !p.last().is_some_and(|n| NOT_MIRRORED.contains(&n)) {
                    roots.push(p);
                }
            }
        }
        roots.sort();
        roots.dedup();
        Ok(Scope(roots))
    }

    /// Every resource below the mirrored collections, parents before children.
    async fn crawl(&self, scope: &Scope) -> Result<Vec<(ResourcePath, Value)>> {
        let mut out = Vec::new();
        let mut seen: BTreeSet<ResourcePath> = scope.0.iter().cloned().collect();
        let mut queue: VecDeque<ResourcePath> = scope.0.iter().cloned().collect();
        while let Some(path) = queue.pop_front() {
            let Some(body) = self.fetch(path.as_str()).await? else { continue };
            let mut below = Vec::new();
            links_below(&body, &path, &mut below);
            for p in below {
                if seen.insert(p.clone()) {
                    queue.push_back(p);
                }
            }
            out.push((path, body));
            if out.len() > self.options.max_resources {
                return Err(self.agent_error(
                    None,
                    false,
                    format!("the service has more than max_resources = {} resources", self.options.max_resources),
                ));
            }
        }
        Ok(out)
    }

    /// Crawls the service and makes the agent's tree under the mirrored collections equal to
    /// it (no events: the upstream crawls the agent after registration).
    async fn mirror(&self, core: &Core) -> Result<usize> {
        let scope = self.discover_scope().await?;
        let resources = self.crawl(&scope).await?;
        let found: BTreeSet<&ResourcePath> = resources.iter().map(|(p, _)| p).collect();
        let storage = core.storage();
        let stale: Vec<ResourcePath> = storage
            .paths()
            .await?
            .into_iter()
            .filter(|p| scope.contains(p) && !found.contains(p) && p.parent().is_some_and(|q| found.contains(&q)))
            .collect();
        for p in stale {
            match storage.delete(&p, None).await {
                Ok(_) | Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let count = resources.len();
        let mut links = serde_json::Map::new();
        for root in &scope.0 {
            if let Some(name) = root.last() {
                links.insert(name.to_string(), json!({"@odata.id": root.as_str()}));
            }
        }
        storage.import(resources).await?;
        // The agent's service root links what it mirrors, as the service's does.
        storage.patch(&ResourcePath::root(), Value::Object(links), None).await?;
        *self.scope.write() = scope;
        Ok(count)
    }

    /// Follows the service's SSE stream until stopped, reconnecting with backoff.
    async fn follow_events(self: Arc<Self>, core: Core, changes: ChangeSink) {
        let first = Duration::from_millis(200);
        let max = Duration::from_millis(self.options.reconnect_max_ms.max(200));
        let mut delay = first;
        let mut last_id: Option<String> = None;
        loop {
            match self.stream_once(&core, &changes, &mut last_id).await {
                Ok(()) => delay = first,
                Err(e) => debug!(service = %self.base, error = %e, "event stream failed"),
            }
            if changes.is_closed() {
                return;
            }
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(max);
        }
    }

    /// One connection to the SSE stream; returns when it ends or the agent stops.
    async fn stream_once(&self, core: &Core, changes: &ChangeSink, last_id: &mut Option<String>) -> Result<()> {
        let url = format!("{}{SSE_PATH}", self.base);
        let mut req = self.client.get(&url).header("Accept", "text/event-stream");
        if let Some((name, value)) = self.auth_header().await? {
            req = req.header(name, value);
        }
        if let Some(id) = last_id.as_ref() {
            req = req.header("Last-Event-ID", id.clone());
        }
        let mut resp = req.send().await.map_err(|e| self.transport_error(&e))?;
        if resp.status().as_u16() == 401 && self.options.auth == AuthMode::Session {
            *self.session.lock().await = None;
        }
        if !resp.status().is_success() {
            return Err(self.agent_error(Some(resp.status().as_u16()), false, "event stream refused".into()));
        }
        info!(service = %self.base, "following the service's events");
        let mut parser = SseParser::default();
        loop {
            let chunk = tokio::select! {
                _ = self.stop.cancelled() => return Ok(()),
                c = resp.chunk() => c.map_err(|e| self.transport_error(&e))?,
            };
            let Some(chunk) = chunk else { return Ok(()) };
            for message in parser.push(&chunk) {
                if let Some(id) = message.id {
                    *last_id = Some(id);
                }
                let Ok(envelope) = serde_json::from_str::<Value>(&message.data) else { continue };
                for (kind, path) in resource_events(&envelope) {
                    if let Err(e) = self.relay(core, changes, kind, &path).await {
                        warn!(service = %self.base, path = %path, error = %e, "service event not relayed");
                    }
                }
            }
        }
    }

    /// Turns one of the service's resource events into a hardware change.
    async fn relay(&self, core: &Core, changes: &ChangeSink, kind: EventKind, path: &ResourcePath) -> Result<()> {
        if !self.scope.read().contains(path) || self.scope.read().0.contains(path) {
            return Ok(());
        }
        let here = core.storage().get(path).await.is_ok();
        let change = match kind {
            EventKind::Removed if here => HardwareChange::Removed(path.clone()),
            EventKind::Removed => return Ok(()),
            EventKind::Created | EventKind::Changed => match self.fetch(path.as_str()).await? {
                Some(v) if here => HardwareChange::Changed(path.clone(), v),
                Some(v) => HardwareChange::Created(path.clone(), v),
                None if here => HardwareChange::Removed(path.clone()),
                None => return Ok(()),
            },
        };
        changes.report(change);
        Ok(())
    }
}

/// The links in `body` to resources strictly below `path` (members, sub-collections,
/// sub-resources), fragments (`#/...`) left out.
fn links_below(body: &Value, path: &ResourcePath, out: &mut Vec<ResourcePath>) {
    match body {
        Value::Object(m) => {
            if let Some(Value::String(link)) = m.get("@odata.id") {
                if !link.contains('#') {
                    if let Ok(p) = ResourcePath::parse_link(link) {
                        if p != *path && p.is_within(path) {
                            out.push(p);
                        }
                    }
                }
            }
            for (k, v) in m {
                if k != "@odata.id" {
                    links_below(v, path, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| links_below(v, path, out)),
        _ => {}
    }
}

/// A resource event of the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventKind {
    Created,
    Changed,
    Removed,
}

/// The resource events of an event envelope (`Events[]` with `MessageId` `...ResourceCreated`,
/// `...ResourceChanged`, `...ResourceRemoved` and an `OriginOfCondition`).
fn resource_events(envelope: &Value) -> Vec<(EventKind, ResourcePath)> {
    let Some(events) = envelope.get("Events").and_then(Value::as_array) else { return Vec::new() };
    events
        .iter()
        .filter_map(|e| {
            let id = e.get("MessageId")?.as_str()?;
            let kind = match id.rsplit('.').next()? {
                "ResourceCreated" => EventKind::Created,
                "ResourceChanged" => EventKind::Changed,
                "ResourceRemoved" => EventKind::Removed,
                _ => return None,
            };
            let origin = e.pointer("/OriginOfCondition/@odata.id")?.as_str()?;
            Some((kind, ResourcePath::parse_link(origin).ok()?))
        })
        .collect()
}

/// One Server-Sent Events message.
#[derive(Debug, Default, PartialEq)]
struct SseMessage {
    id: Option<String>,
    data: String,
}

/// Splits an SSE byte stream into messages (the WHATWG event-stream format: `field: value`
/// lines, a blank line ends a message, `:` lines are comments).
#[derive(Debug, Default)]
struct SseParser {
    buffer: Vec<u8>,
    current: SseMessage,
    has_data: bool,
}

impl SseParser {
    fn push(&mut self, bytes: &[u8]) -> Vec<SseMessage> {
        self.buffer.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if self.has_data {
                    out.push(std::mem::take(&mut self.current));
                }
                self.current = SseMessage::default();
                self.has_data = false;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "data" => {
                    if self.has_data {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                    self.has_data = true;
                }
                "id" => self.current.id = Some(value.to_string()),
                _ => {}
            }
        }
        out
    }
}

#[async_trait]
impl HardwareManager for Redfish {
    async fn apply(&self, _core: &Core, op: &WriteOp) -> Result<Option<Value>> {
        let inner = &self.0;
        let (method, uri) = match op.operation {
            Operation::Create => {
                (reqwest::Method::POST, op.collection.as_ref().unwrap_or(&op.path).as_str().to_string())
            }
            Operation::Patch => (reqwest::Method::PATCH, op.path.to_string()),
            Operation::Replace => (reqwest::Method::PUT, op.path.to_string()),
            Operation::Delete => (reqwest::Method::DELETE, op.path.to_string()),
            _ => return Ok(None),
        };
        let mut body = op.payload.clone();
        if op.operation == Operation::Create {
            // Ask for the member URI the agent chose; services that pick their own are caught below.
            if let (Some(Value::Object(m)), Some(id)) = (&mut body, op.path.last()) {
                m.entry("Id").or_insert_with(|| Value::String(id.to_string()));
                m.remove("@odata.id");
            }
        }
        let reply = inner.request(method, &uri, body.as_ref()).await?;
        if !reply.ok() {
            return Err(inner.agent_error(Some(reply.status), false, reply.message()));
        }
        if op.operation == Operation::Delete {
            return Ok(None);
        }
        // The resource as the service now has it: the body, else a fresh GET.
        let at = match op.operation {
            Operation::Create => reply
                .resource()
                .and_then(|r| r.get("@odata.id").and_then(Value::as_str).map(str::to_string))
                .or_else(|| reply.headers.get("Location").and_then(|v| v.to_str().ok()).map(str::to_string))
                .unwrap_or_else(|| op.path.to_string()),
            _ => op.path.to_string(),
        };
        let at = at.find("/redfish/").map_or(at.clone(), |i| at[i..].to_string());
        if at.trim_end_matches('/') != op.path.as_str() {
            return Err(inner.agent_error(
                Some(502),
                false,
                format!("the service created {at}, not {} as asked: its URI would not match ours", op.path),
            ));
        }
        let mut resource = match reply.resource() {
            Some(r) => r,
            None => inner.fetch(op.path.as_str()).await?.ok_or_else(|| Error::not_found(&op.path))?,
        };
        if let Value::Object(m) = &mut resource {
            m.insert("@odata.id".into(), Value::String(op.path.to_string()));
        }
        Ok(Some(resource))
    }

    async fn read(&self, _core: &Core, path: &ResourcePath) -> Result<Option<Value>> {
        let inner = &self.0;
        if !inner.options.read_through || !inner.scope.read().contains(path) {
            return Ok(None);
        }
        match inner.fetch(path.as_str()).await {
            Ok(Some(v)) if v.is_object() => Ok(Some(v)),
            Ok(_) => Ok(None),
            Err(e) => {
                debug!(path = %path, error = %e, "read-through failed; serving the stored copy");
                Ok(None)
            }
        }
    }

    async fn start(&self, core: &Core, changes: ChangeSink) -> Result<()> {
        let inner = self.0.clone();
        let count = inner.mirror(core).await?;
        info!(service = %inner.base, resources = count, "mirrored the service");
        if inner.options.events == EventsMode::Sse {
            tokio::spawn(inner.clone().follow_events(core.clone(), changes));
        }
        Ok(())
    }

    async fn stop(&self) {
        self.0.stop.cancel();
        self.0.logout().await;
    }
}

fn build(options: PluginOptions) -> std::result::Result<Arc<dyn HardwareManager>, StartupError> {
    let parsed: RedfishOptions = options.parse()?;
    Ok(Arc::new(Redfish::new(parsed).map_err(|e| options.error(e))?))
}

sunfish_core::register_hardware_manager!(HardwareManagerRegistration {
    name: NAME,
    description: "proxies another Redfish service (a BMC): mirrors its tree, reads through, forwards writes, relays its SSE events",
    build,
});

#[cfg(test)]
mod tests {
    use super::*;

    fn manager(options: Value) -> std::result::Result<Arc<dyn HardwareManager>, StartupError> {
        build(PluginOptions::new("hardware-manager", NAME, options))
    }

    #[test]
    fn options_are_checked() {
        assert!(manager(json!({"url": "http://127.0.0.1:1"})).is_ok());
        let e = manager(json!({})).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("url"), "{e}");
        let e = manager(json!({"url": "ftp://x"})).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("http"), "{e}");
        let e = manager(json!({"url": "http://127.0.0.1:1", "auth": "session"})).err().map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("password"));
        assert!(manager(json!({"url": "http://127.0.0.1:1", "auth": "kerberos"})).is_err());
        assert!(manager(json!({"url": "http://127.0.0.1:1", "colour": 1})).is_err(), "unknown keys are refused");
        let e = manager(json!({"url": "http://127.0.0.1:1", "roots": ["/redfish/v1/Chassis/1"]})).err();
        assert!(e.map(|e| e.to_string()).unwrap_or_default().contains("top-level"));
        let e = manager(json!({"url": "http://127.0.0.1:1", "roots": ["/redfish/v1/EventService"]})).err();
        assert!(e.is_some(), "the services are never mirrored");
    }

    #[test]
    fn links_below_finds_members_and_subresources_only() {
        let path = ResourcePath::parse("/redfish/v1/Chassis/1").unwrap();
        let body = json!({"@odata.id": "/redfish/v1/Chassis/1",
            "Sensors": {"@odata.id": "/redfish/v1/Chassis/1/Sensors"},
            "Links": {"ComputerSystems": [{"@odata.id": "/redfish/v1/Systems/1"}],
                "Drives": [{"@odata.id": "/redfish/v1/Chassis/1/Drives/0"}]},
            "Thermal": {"@odata.id": "/redfish/v1/Chassis/1#/Thermal"}});
        let mut out = Vec::new();
        links_below(&body, &path, &mut out);
        let got: Vec<&str> = out.iter().map(ResourcePath::as_str).collect();
        assert_eq!(got, ["/redfish/v1/Chassis/1/Sensors", "/redfish/v1/Chassis/1/Drives/0"]);
    }

    #[test]
    fn resource_events_are_read_from_envelopes() {
        let envelope = json!({"Events": [
            {"MessageId": "ResourceEvent.1.0.ResourceChanged", "OriginOfCondition": {"@odata.id": "/redfish/v1/Chassis/1"}},
            {"MessageId": "ResourceEvent.1.3.ResourceCreated", "OriginOfCondition": {"@odata.id": "/redfish/v1/Chassis/2"}},
            {"MessageId": "ResourceEvent.1.0.ResourceRemoved", "OriginOfCondition": {"@odata.id": "/redfish/v1/Chassis/3"}},
            {"MessageId": "HeartbeatEvent.1.0.RedfishServiceFunctional"},
            {"MessageId": "ResourceEvent.1.0.ResourceChanged"}]});
        let got: Vec<(EventKind, String)> =
            resource_events(&envelope).into_iter().map(|(k, p)| (k, p.to_string())).collect();
        assert_eq!(
            got,
            [
                (EventKind::Changed, "/redfish/v1/Chassis/1".to_string()),
                (EventKind::Created, "/redfish/v1/Chassis/2".to_string()),
                (EventKind::Removed, "/redfish/v1/Chassis/3".to_string()),
            ]
        );
        assert!(resource_events(&json!({"no": "events"})).is_empty());
    }

    #[test]
    fn sse_parser_splits_messages_across_chunks() {
        let mut p = SseParser::default();
        assert!(p.push(b": keep-alive\n\nid: 7\nda").is_empty());
        let got = p.push(b"ta: {\"a\":\r\ndata: 1}\n\nevent: x\n");
        assert_eq!(got, [SseMessage { id: Some("7".into()), data: "{\"a\":\n1}".into() }]);
        assert!(p.push(b"\n").is_empty(), "a message without data is not one");
    }

    #[test]
    fn error_messages_come_from_redfish_errors() {
        let reply = Reply {
            status: 400,
            headers: HeaderMap::new(),
            body: Some(json!({"error": {"code": "Base.1.0.GeneralError", "message": "general",
                "@Message.ExtendedInfo": [{"Message": "The property Foo is read-only."}]}})),
        };
        assert_eq!(reply.message(), "The property Foo is read-only.");
        let bare = Reply { status: 503, headers: HeaderMap::new(), body: None };
        assert_eq!(bare.message(), "the service answered 503");
    }
}
