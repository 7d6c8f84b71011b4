//! A stub Redfish agent for the aggregation tests: a small axum app on `127.0.0.1:0` that serves
//! a map of URI → JSON the way an agent does (§5.9 of the reference behaviour), records every
//! request it receives, and plays the agent side of the wire contract (registration, uploads,
//! events).
//!
//! Lifecycle: [`StubAgent::start`] binds a loopback port and serves until [`StubAgent::stop`] (or
//! drop). Resource keys are normalised (no trailing slash, a leading `//` collapsed), so the tree
//! answers `GET //redfish/v1/...` like the reference's Flask agents. Writes follow plain Redfish
//! rules (PATCH merges, POST creates, PUT replaces, DELETE removes) unless a per-method
//! [`Behaviour`] or the offline switch says otherwise. The stub always serves a service root and
//! its `SunfishServer` subscription, and creates the ConnectionMethod it announces on
//! [`StubAgent::register`], so any tree can register.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use serde_json::{json, Map, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::Client;

/// The agent's own subscription that Sunfish PATCHes at registration (Context, HttpHeaders).
pub const SUBSCRIPTION: &str = "/redfish/v1/EventService/Subscriptions/SunfishServer";

/// The URI of ConnectionMethod `name` (in the agent's tree and, once registered, in Sunfish's).
pub fn connection_method_uri(name: &str) -> String {
    format!("/redfish/v1/AggregationService/ConnectionMethods/{name}")
}

/// How the stub answers requests of one method (see [`StubAgent::set_behaviour`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Behaviour {
    /// Plain Redfish semantics over the tree (the default).
    Normal,
    /// Answers this status and JSON body; the tree is left untouched.
    Reply(u16, Value),
    /// Applies the request as [`Behaviour::Normal`] would, but answers `204 No Content`.
    NoContent,
    /// Waits this long, then answers as [`Behaviour::Normal`] (to provoke timeouts).
    Delay(Duration),
    /// Applies the request as [`Behaviour::Normal`] would, then, before answering, sends the
    /// matching ResourceEvent (`ResourceCreated` for the new member, `ResourceRemoved`,
    /// `ResourceChanged`) to the registered Sunfish and waits for its answer: the agent's echo
    /// of a forwarded write overtakes the reply.
    EchoFirst,
}

/// One request as the stub received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// HTTP method.
    pub method: Method,
    /// The request path as received (not normalised; no query).
    pub path: String,
    /// The body parsed as JSON (`Null` when empty or not JSON).
    pub body: Value,
    /// Request headers.
    pub headers: HeaderMap,
}

impl Recorded {
    /// A header as a string ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

#[derive(Debug, Default)]
struct Shared {
    resources: Mutex<BTreeMap<String, Value>>,
    behaviours: Mutex<HashMap<Method, Behaviour>>,
    offline: AtomicBool,
    requests: Mutex<Vec<Recorded>>,
    /// Member names handed out to POSTs without `Id`.
    next_id: AtomicU64,
    /// The Sunfish base URL of the last [`StubAgent::register`].
    sunfish: Mutex<Option<String>>,
    /// Events sent so far (their `EventId`s).
    events_sent: AtomicU64,
}

/// A running stub agent on `127.0.0.1`; stops when dropped.
#[derive(Debug)]
pub struct StubAgent {
    base: String,
    shared: Arc<Shared>,
    shutdown: Mutex<Option<oneshot::Sender<()>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// `uri` as a map key: no query or fragment, no trailing slash, leading slashes collapsed.
pub fn normalise(uri: &str) -> String {
    let uri = uri.split(['?', '#']).next().unwrap_or_default();
    let trimmed = uri.trim_start_matches('/').trim_end_matches('/');
    format!("/{trimmed}")
}

fn parent_of(key: &str) -> Option<&str> {
    key.rsplit_once('/').map(|(p, _)| p).filter(|p| !p.is_empty())
}

fn link(uri: &str) -> Value {
    json!({"@odata.id": uri})
}

/// RFC 7396 JSON merge patch of `patch` into `target`.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Some(t) = target.as_object_mut() {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

fn is_collection(v: &Value) -> bool {
    v.get("Members").is_some_and(Value::is_array)
}

/// Stores `value` at `key` and lists it in its parent collection's `Members` (if the parent is a
/// collection that does not list it yet).
fn insert(map: &mut BTreeMap<String, Value>, key: &str, value: Value) {
    map.insert(key.to_string(), value);
    let Some(parent) = parent_of(key).and_then(|p| map.get_mut(p)) else { return };
    let Some(members) = parent.get_mut("Members").and_then(Value::as_array_mut) else { return };
    if !members.iter().any(|m| m["@odata.id"].as_str().map(normalise).as_deref() == Some(key)) {
        members.push(link(key));
        let n = members.len();
        parent["Members@odata.count"] = Value::from(n);
    }
}

/// Removes `key` and everything below it, and unlists it from its parent collection.
fn remove(map: &mut BTreeMap<String, Value>, key: &str) -> Option<Value> {
    let below = format!("{key}/");
    map.retain(|k, _| !k.starts_with(&below));
    let old = map.remove(key)?;
    if let Some(parent) = parent_of(key).and_then(|p| map.get_mut(p)) {
        if let Some(members) = parent.get_mut("Members").and_then(Value::as_array_mut) {
            members.retain(|m| m["@odata.id"].as_str().map(normalise).as_deref() != Some(key));
            let n = members.len();
            parent["Members@odata.count"] = Value::from(n);
        }
    }
    Some(old)
}

/// A Redfish error body with a Base registry MessageId.
pub fn error_body(message_id: &str, message: &str) -> Value {
    json!({"error": {"code": format!("Base.1.18.{message_id}"), "message": message,
        "@Message.ExtendedInfo": [{"MessageId": format!("Base.1.18.{message_id}"), "Message": message,
            "Severity": "Warning"}]}})
}

fn json_response(status: StatusCode, body: &Value, location: Option<&str>) -> Response {
    let mut resp = (status, serde_json::to_vec(body).unwrap_or_default()).into_response();
    resp.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
    if let Some(loc) = location.and_then(|l| HeaderValue::from_str(l).ok()) {
        resp.headers_mut().insert("location", loc);
    }
    resp
}

fn error(status: StatusCode, message_id: &str, message: &str) -> Response {
    json_response(status, &error_body(message_id, message), None)
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 64 << 20).await.unwrap_or_default();
    let parsed: Option<Value> = if bytes.is_empty() { Some(Value::Null) } else { serde_json::from_slice(&bytes).ok() };
    shared.requests.lock().push(Recorded {
        method: parts.method.clone(),
        path: parts.uri.path().to_string(),
        body: parsed.clone().unwrap_or(Value::Null),
        headers: parts.headers.clone(),
    });
    if shared.offline.load(Ordering::SeqCst) {
        return error(StatusCode::SERVICE_UNAVAILABLE, "ServiceTemporarilyUnavailable", "the agent is offline");
    }
    let behaviour = shared.behaviours.lock().get(&parts.method).cloned().unwrap_or(Behaviour::Normal);
    let echo = behaviour == Behaviour::EchoFirst;
    let no_content = match behaviour {
        Behaviour::Normal | Behaviour::EchoFirst => false,
        Behaviour::NoContent => true,
        Behaviour::Reply(status, body) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return json_response(status, &body, None);
        }
        Behaviour::Delay(d) => {
            tokio::time::sleep(d).await;
            false
        }
    };
    let Some(body) = parsed else {
        return error(StatusCode::BAD_REQUEST, "MalformedJSON", "the body is not JSON");
    };
    let key = normalise(parts.uri.path());
    let resp = apply(&shared, &parts.method, &key, body);
    if echo && resp.status().is_success() {
        let (message_id, origin) = match parts.method {
            Method::POST => {
                let loc = resp.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or(&key);
                ("ResourceEvent.1.0.ResourceCreated", loc.to_string())
            }
            Method::DELETE => ("ResourceEvent.1.0.ResourceRemoved", key.clone()),
            _ => ("ResourceEvent.1.0.ResourceChanged", key.clone()),
        };
        let sunfish = shared.sunfish.lock().clone();
        if let Some(base) = sunfish {
            shared.send_event(&base, message_id, &origin).await;
        }
    }
    if no_content && resp.status().is_success() {
        StatusCode::NO_CONTENT.into_response()
    } else {
        resp
    }
}

/// Plain Redfish semantics of one request over the tree.
fn apply(shared: &Shared, method: &Method, key: &str, body: Value) -> Response {
    let mut map = shared.resources.lock();
    if *method != Method::GET && *method != Method::DELETE && !body.is_object() {
        return error(StatusCode::BAD_REQUEST, "MalformedJSON", "the body must be a JSON object");
    }
    match *method {
        Method::GET => match map.get(key) {
            Some(v) => json_response(StatusCode::OK, v, None),
            None => error(StatusCode::NOT_FOUND, "ResourceNotFound", &format!("{key} not found")),
        },
        Method::PATCH => match map.get_mut(key) {
            Some(v) => {
                merge_patch(v, &body);
                json_response(StatusCode::OK, v, None)
            }
            None => error(StatusCode::NOT_FOUND, "ResourceNotFound", &format!("{key} not found")),
        },
        Method::PUT => match map.get_mut(key) {
            Some(v) => {
                let mut body = body;
                body["@odata.id"] = Value::from(key);
                *v = body;
                json_response(StatusCode::OK, v, None)
            }
            None => error(StatusCode::NOT_FOUND, "ResourceNotFound", &format!("{key} not found")),
        },
        Method::DELETE => match remove(&mut map, key) {
            Some(_) => StatusCode::NO_CONTENT.into_response(),
            None => error(StatusCode::NOT_FOUND, "ResourceNotFound", &format!("{key} not found")),
        },
        Method::POST => {
            let member = match map.get(key) {
                Some(coll) if is_collection(coll) => {
                    let named = body["@odata.id"].as_str().map(normalise).filter(|u| parent_of(u) == Some(key));
                    let by_id = body["Id"].as_str().map(|id| format!("{key}/{id}"));
                    named.or(by_id).unwrap_or_else(|| {
                        let n = shared.next_id.fetch_add(1, Ordering::SeqCst) + 1;
                        format!("{key}/stub{n}")
                    })
                }
                Some(_) => return error(StatusCode::METHOD_NOT_ALLOWED, "OperationNotAllowed", "not a collection"),
                // The reference's form: POST at the new member's own URI.
                None => key.to_string(),
            };
            if map.contains_key(&member) {
                return error(StatusCode::CONFLICT, "ResourceAlreadyExists", &format!("{member} exists"));
            }
            let mut obj = body;
            obj["@odata.id"] = Value::from(member.as_str());
            if obj.get("Id").is_none() {
                obj["Id"] = Value::from(member.rsplit('/').next().unwrap_or_default());
            }
            insert(&mut map, &member, obj.clone());
            json_response(StatusCode::CREATED, &obj, Some(&member))
        }
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "OperationNotAllowed", "method not supported"),
    }
}

impl StubAgent {
    /// Starts an agent serving `resources` (keys normalised). A service root and the
    /// [`SUBSCRIPTION`] (with `Context` "") are added when missing.
    pub async fn start(resources: BTreeMap<String, Value>) -> Self {
        let mut map = BTreeMap::new();
        for (k, v) in resources {
            map.insert(normalise(&k), v);
        }
        map.entry("/redfish/v1".into()).or_insert_with(|| {
            json!({"@odata.id": "/redfish/v1", "@odata.type": "#ServiceRoot.v1_16_0.ServiceRoot",
                "Id": "RootService", "Name": "Stub agent root"})
        });
        if !map.contains_key(SUBSCRIPTION) {
            let v = json!({"@odata.id": SUBSCRIPTION, "@odata.type": "#EventDestination.v1_13_0.EventDestination",
                "Id": "SunfishServer", "Name": "Sunfish", "Context": "", "Destination": "",
                "Protocol": "Redfish", "EventFormatType": "Event"});
            insert(&mut map, SUBSCRIPTION, v);
        }
        let shared = Arc::new(Shared { resources: Mutex::new(map), ..Shared::default() });
        let listener =
            tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap_or_else(|e| panic!("stub agent bind: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("stub agent addr: {e}"));
        let app = axum::Router::new().fallback(handle).with_state(shared.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        StubAgent {
            base: format!("http://{addr}"),
            shared,
            shutdown: Mutex::new(Some(tx)),
            task: Mutex::new(Some(task)),
        }
    }

    /// Starts an agent over a reference-layout tree (`index.json` per folder), read in place with
    /// [`sunfish_core::layout::read_tree`]; files that do not parse are skipped (the reference's
    /// own mockups contain some).
    pub async fn from_mockup(dir: &Path) -> Self {
        let (resources, _warnings) =
            sunfish_core::layout::read_tree(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        Self::start(resources.into_iter().map(|(p, v)| (p.as_str().to_string(), v)).collect()).await
    }

    /// Starts an agent over [`synthetic_tree`]`(fabric, switches, ports)`.
    pub async fn synthetic(fabric: &str, switches: usize, ports: usize) -> Self {
        Self::start(synthetic_tree(fabric, switches, ports)).await
    }

    /// `http://127.0.0.1:PORT` (the agent's HostName).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Stops serving: in-flight requests finish, idle connections close, the port is released,
    /// so later requests to it are refused (an unreachable agent). Idempotent.
    pub async fn stop(&self) {
        if let Some(tx) = self.shutdown.lock().take() {
            let _ = tx.send(());
        }
        let task = self.task.lock().take();
        if let Some(t) = task {
            let _ = t.await;
        }
    }

    // --- the tree -------------------------------------------------------------------------

    /// The resource at `uri`, if any.
    pub fn resource(&self, uri: &str) -> Option<Value> {
        self.shared.resources.lock().get(&normalise(uri)).cloned()
    }

    /// Every URI the agent serves, sorted.
    pub fn uris(&self) -> Vec<String> {
        self.shared.resources.lock().keys().cloned().collect()
    }

    /// Stores `value` at `uri` (replacing what was there) and lists it in its parent collection.
    pub fn set_resource(&self, uri: &str, value: Value) {
        insert(&mut self.shared.resources.lock(), &normalise(uri), value);
    }

    /// Merges `patch` (RFC 7396) into the resource at `uri`; panics when there is none.
    pub fn patch_resource(&self, uri: &str, patch: &Value) {
        let mut map = self.shared.resources.lock();
        let v = map.get_mut(&normalise(uri)).unwrap_or_else(|| panic!("stub agent has no {uri}"));
        merge_patch(v, patch);
    }

    /// Removes `uri` and everything below it (and its entry in the parent's `Members`); returns
    /// the removed resource.
    pub fn remove_resource(&self, uri: &str) -> Option<Value> {
        remove(&mut self.shared.resources.lock(), &normalise(uri))
    }

    // --- behaviour and recording ----------------------------------------------------------

    /// How requests with `method` are answered from now on.
    pub fn set_behaviour(&self, method: Method, behaviour: Behaviour) {
        self.shared.behaviours.lock().insert(method, behaviour);
    }

    /// Every method back to [`Behaviour::Normal`].
    pub fn reset_behaviours(&self) {
        self.shared.behaviours.lock().clear();
    }

    /// Offline: every request is answered `503` (and still recorded); online: as configured.
    pub fn set_offline(&self, offline: bool) {
        self.shared.offline.store(offline, Ordering::SeqCst);
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().clone()
    }

    /// The requests with `method` received so far whose normalised path is `uri`.
    pub fn requests_to(&self, method: &Method, uri: &str) -> Vec<Recorded> {
        let key = normalise(uri);
        self.requests().into_iter().filter(|r| r.method == *method && normalise(&r.path) == key).collect()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.shared.requests.lock().clear();
    }

    // --- the agent side of the wire contract ----------------------------------------------

    /// The [`SUBSCRIPTION`]'s current `Context` (the AggregationSource Id once registered).
    pub fn context(&self) -> String {
        self.shared.context()
    }

    /// The headers the [`SUBSCRIPTION`]'s `HttpHeaders` tell the agent to send with events
    /// (`[{"Authorization": "Basic ..."}]`).
    pub fn event_headers(&self) -> Vec<(String, String)> {
        self.shared.event_headers()
    }

    /// Registers with the Sunfish at `sunfish_base`: makes sure ConnectionMethod
    /// `connection_method` exists in the tree, points the [`SUBSCRIPTION`]'s `Destination` at
    /// `<sunfish_base>/EventListener`, and POSTs the `AggregationSourceDiscovered` envelope there
    /// (with the subscription's `HttpHeaders`, if any). Sunfish GETs the ConnectionMethod and
    /// PATCHes the subscription while this POST is pending. Returns Sunfish's status and body.
    pub async fn register(&self, sunfish_base: &str, connection_method: &str) -> (u16, Value) {
        let cm = connection_method_uri(connection_method);
        {
            let mut map = self.shared.resources.lock();
            if !map.contains_key(&cm) {
                let v = json!({"@odata.id": cm, "@odata.type": "#ConnectionMethod.v1_1_0.ConnectionMethod",
                    "Id": connection_method, "Name": format!("ConnectionMethod for agent {connection_method}"),
                    "ConnectionMethodType": "Redfish", "ConnectionMethodVariant": "Sunfish-rs stub"});
                insert(&mut map, &cm, v);
            }
            if let Some(sub) = map.get_mut(SUBSCRIPTION) {
                sub["Destination"] = Value::from(format!("{sunfish_base}/EventListener"));
            }
        }
        *self.shared.sunfish.lock() = Some(sunfish_base.to_string());
        let event = json!({"MessageId": "ResourceEvent.1.0.AggregationSourceDiscovered", "EventId": self.shared.event_id(),
            "Severity": "OK", "Message": "A aggregation source has been discovered.",
            "MessageArgs": ["Redfish", self.base], "OriginOfCondition": link(&cm)});
        self.shared.post_envelope(sunfish_base, "", event).await
    }

    /// POSTs an event envelope with one event (`message_id`, `OriginOfCondition` = `origin`) to
    /// `<sunfish_base>/EventListener`, with `Context` = [`StubAgent::context`] and the headers of
    /// [`StubAgent::event_headers`]. Returns Sunfish's status and body.
    pub async fn send_event(&self, sunfish_base: &str, message_id: &str, origin: &str) -> (u16, Value) {
        self.shared.send_event(sunfish_base, message_id, origin).await
    }

    /// Uploads the inventory below `root`: [`StubAgent::send_event`] `ResourceCreated` to the
    /// Sunfish of the last [`StubAgent::register`] (panics when the agent never registered).
    pub async fn upload(&self, root: &str) -> (u16, Value) {
        let base = self.shared.sunfish.lock().clone().unwrap_or_else(|| panic!("upload before register"));
        self.send_event(&base, "ResourceEvent.1.0.ResourceCreated", root).await
    }
}

impl Shared {
    fn context(&self) -> String {
        let map = self.resources.lock();
        map.get(SUBSCRIPTION).and_then(|s| s["Context"].as_str().map(str::to_string)).unwrap_or_default()
    }

    fn event_headers(&self) -> Vec<(String, String)> {
        let sub = self.resources.lock().get(SUBSCRIPTION).cloned().unwrap_or_default();
        let mut out = Vec::new();
        for h in sub["HttpHeaders"].as_array().into_iter().flatten() {
            for (k, v) in h.as_object().into_iter().flatten() {
                out.push((k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())));
            }
        }
        out
    }

    async fn send_event(&self, sunfish_base: &str, message_id: &str, origin: &str) -> (u16, Value) {
        let event = json!({"MessageId": message_id, "EventId": self.event_id(), "Severity": "OK",
            "Message": format!("{message_id} on {origin}"), "OriginOfCondition": link(origin)});
        let context = self.context();
        self.post_envelope(sunfish_base, &context, event).await
    }

    fn event_id(&self) -> String {
        (self.events_sent.fetch_add(1, Ordering::SeqCst) + 1).to_string()
    }

    async fn post_envelope(&self, sunfish_base: &str, context: &str, event: Value) -> (u16, Value) {
        let envelope = json!({"@odata.type": "#Event.v1_7_0.Event", "Id": event["EventId"].clone(),
            "Name": "Stub agent event", "Context": context, "Events": [event]});
        let headers = self.event_headers();
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let r = Client::new(sunfish_base.to_string())
            .send(reqwest::Method::POST, "/EventListener", Some(&envelope), &headers)
            .await;
        (r.status.as_u16(), r.body)
    }
}

impl Drop for StubAgent {
    fn drop(&mut self) {
        if let Some(t) = self.task.lock().take() {
            t.abort();
        }
    }
}

/// A synthetic agent inventory: service root, the `Fabrics` collection, Fabric `fabric`
/// (`FabricType` CXL, no `UUID`), its empty `Endpoints` collection and a `Switches` collection
/// with `switches` switches `S0..`, each with a `Ports` collection of `ports` ports `P0..`.
/// Below the Fabrics collection that is `3 + switches × (2 + ports)` resources.
pub fn synthetic_tree(fabric: &str, switches: usize, ports: usize) -> BTreeMap<String, Value> {
    let mut m = BTreeMap::new();
    let f = format!("/redfish/v1/Fabrics/{fabric}");
    m.insert(
        "/redfish/v1".to_string(),
        json!({"@odata.id": "/redfish/v1",
        "@odata.type": "#ServiceRoot.v1_16_0.ServiceRoot", "Id": "RootService", "Name": "Stub agent root",
        "Fabrics": link("/redfish/v1/Fabrics")}),
    );
    m.insert(
        "/redfish/v1/Fabrics".to_string(),
        collection("/redfish/v1/Fabrics", "FabricCollection", std::slice::from_ref(&f)),
    );
    m.insert(
        f.clone(),
        json!({"@odata.id": f, "@odata.type": "#Fabric.v1_3_0.Fabric", "Id": fabric,
        "Name": format!("Fabric {fabric}"), "FabricType": "CXL", "Status": {"State": "Enabled", "Health": "OK"},
        "Switches": link(&format!("{f}/Switches")), "Endpoints": link(&format!("{f}/Endpoints"))}),
    );
    m.insert(format!("{f}/Endpoints"), collection(&format!("{f}/Endpoints"), "EndpointCollection", &[]));
    let switch_uris: Vec<String> = (0..switches).map(|i| format!("{f}/Switches/S{i}")).collect();
    m.insert(format!("{f}/Switches"), collection(&format!("{f}/Switches"), "SwitchCollection", &switch_uris));
    for (i, s) in switch_uris.iter().enumerate() {
        m.insert(
            s.clone(),
            json!({"@odata.id": s, "@odata.type": "#Switch.v1_9_0.Switch", "Id": format!("S{i}"),
            "Name": format!("Switch S{i}"), "SwitchType": "CXL", "Ports": link(&format!("{s}/Ports"))}),
        );
        let port_uris: Vec<String> = (0..ports).map(|j| format!("{s}/Ports/P{j}")).collect();
        m.insert(format!("{s}/Ports"), collection(&format!("{s}/Ports"), "PortCollection", &port_uris));
        for (j, p) in port_uris.iter().enumerate() {
            m.insert(
                p.clone(),
                json!({"@odata.id": p, "@odata.type": "#Port.v1_10_0.Port", "Id": format!("P{j}"),
                "Name": format!("Port P{j}"), "PortProtocol": "CXL", "PortType": "DownstreamPort",
                "Links": {"ConnectedSwitches": [link(s)]}}),
            );
        }
    }
    m
}

/// A Redfish collection resource (`#<type>.<type>`) at `uri` listing `members`.
pub fn collection(uri: &str, odata_type: &str, members: &[String]) -> Value {
    let members: Vec<Value> = members.iter().map(|m| link(m)).collect();
    json!({"@odata.id": uri, "@odata.type": format!("#{odata_type}.{odata_type}"),
        "Name": odata_type, "Members@odata.count": members.len(), "Members": members})
}
