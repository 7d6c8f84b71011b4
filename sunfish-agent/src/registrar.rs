//! The registrar: the agent side of the wire contract (docs/AGGREGATION.md), as one background
//! task per agent.
//!
//! Before the agent serves, [`prepare_tree`] makes sure its tree holds what the upstream asks
//! for: `AggregationService/ConnectionMethods/<name>` (`ConnectionMethodType: "Redfish"`) and
//! `EventService/Subscriptions/SunfishServer` with `Destination = <upstream>/EventListener`.
//! Both are written through the [`Core`], so the agent's EventService runs the subscription:
//! every ResourceEvent of the agent (a forwarded write, a change reported by the hardware) is
//! delivered upstream by it, with the `Context` and `HttpHeaders` the upstream PATCHed in. The
//! subscription is limited to the device's top-level collections (`OriginResources`,
//! `SubordinateResources`), so writes to the agent's own services (the upstream's PATCH of the
//! subscription, sessions, tasks) are not echoed upstream, where they would be imported as
//! inventory. It retries forever with backoff (`events.max_backoff_ms` caps the wait), so an
//! upstream outage delays events instead of deleting the subscription.
//!
//! [`Registrar::run`] then loops until cancelled:
//! 1. **Register**: POST `AggregationSourceDiscovered` to `<upstream>/EventListener` (backoff
//!    from 200 ms, doubling, capped at `agent.retry_max_ms`) until it is answered 2xx. The
//!    upstream GETs the ConnectionMethod and PATCHes the subscription while the POST is pending;
//!    the agent's HTTP front end serves those concurrently.
//! 2. **Upload**: one `ResourceCreated` per inventory root, with the subscription's `Context`
//!    and `HttpHeaders`.
//! 3. **Watch**: every `agent.heartbeat_ms`, a `HeartbeatEvent.1.0.RedfishServiceFunctional` and
//!    a GET of `<upstream>/redfish/v1/AggregationService/AggregationSources/<Context>`. A 404
//!    (or 401: the upstream forgot the agent's account too) means the upstream lost the agent
//!    (restarted on an empty store, or an operator unregistered it): back to 1. No answer means
//!    the upstream is down: the GET is retried with backoff until it answers, then checked as
//!    above.
//!
//! Credentials: the registration POST carries `agent.upstream_user`/`upstream_password` as
//! Basic when configured, else the subscription's `HttpHeaders` (from an earlier registration);
//! everything else carries the subscription's `HttpHeaders`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::{json, Map, Value};
use sunfish_core::aggregation::client::{AgentClient, AgentReply, AgentRequest};
use sunfish_core::aggregation::{AGGREGATION_SOURCES, CONNECTION_METHODS};
use sunfish_core::hardware::is_service_path;
use sunfish_core::resource::collection_template;
use sunfish_core::{Core, Error, Operation, ResourcePath, Result};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// The agent's subscription the upstream PATCHes at registration.
pub const SUBSCRIPTION: &str = "/redfish/v1/EventService/Subscriptions/SunfishServer";

/// The EventService's private record namespace of subscription `HttpHeaders` (they are kept out
/// of the resource). Read here, never written.
const HEADERS_NS: &str = "eventsecret";

/// Top-level collections whose members are not announced as inventory by default: the agent's
/// own manager and the schema and registry files.
const NOT_INVENTORY: [&str; 3] = ["Managers", "JsonSchemas", "Registries"];

/// First wait after a failed attempt.
const FIRST_RETRY: Duration = Duration::from_millis(200);

/// The URI of ConnectionMethod `name`.
pub fn connection_method_uri(name: &str) -> String {
    format!("{CONNECTION_METHODS}/{name}")
}

/// What the registrar needs to know; built from `[agent]` and the bound address.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Base URL of the upstream, no trailing slash.
    pub upstream: String,
    /// ConnectionMethod name.
    pub name: String,
    /// The agent's own base URL, as the upstream reaches it (no trailing slash).
    pub base_url: String,
    /// Explicit inventory roots; empty: [`inventory_roots`] picks them.
    pub roots: Vec<String>,
    /// Interval of heartbeats and AggregationSource checks.
    pub heartbeat: Duration,
    /// Longest wait between attempts.
    pub retry_max: Duration,
    /// Timeout of one request to the upstream.
    pub request_timeout: Duration,
    /// User and password for the registration POST.
    pub credentials: Option<(String, String)>,
}

/// What the registrar is doing (see [`Registrar::phase`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Posting `AggregationSourceDiscovered` until the upstream accepts it.
    Registering,
    /// Registered as AggregationSource `context`, inventory announced.
    Registered {
        /// The AggregationSource Id (the subscription's `Context`).
        context: String,
    },
    /// Registered as `context`, but the upstream does not answer.
    UpstreamDown {
        /// The AggregationSource Id.
        context: String,
    },
    /// Cancelled.
    Stopped,
}

/// How a watch period ended.
enum Watch {
    /// The upstream lost the agent: register again.
    Lost,
    /// Cancelled.
    Cancelled,
}

/// The registration task of one agent.
pub struct Registrar {
    core: Core,
    settings: Settings,
    client: Arc<dyn AgentClient>,
    phase: watch::Sender<Phase>,
    next_event: AtomicU64,
}

impl Registrar {
    /// A registrar for the agent served by `core`, talking to the upstream through `client`.
    pub fn new(core: Core, settings: Settings, client: Arc<dyn AgentClient>) -> Arc<Self> {
        let first = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(1);
        Arc::new(Registrar {
            core,
            settings,
            client,
            phase: watch::channel(Phase::Registering).0,
            next_event: AtomicU64::new(first),
        })
    }

    /// Follows the registrar's phase.
    pub fn phase(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    /// Registers, uploads and watches until `cancel` fires (see the module docs).
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            if !self.register(&cancel).await {
                break;
            }
            self.upload().await;
            match self.watch(&cancel).await {
                Watch::Lost => continue,
                Watch::Cancelled => break,
            }
        }
        self.phase.send_replace(Phase::Stopped);
        debug!("registrar stopped");
    }

    fn set_phase(&self, p: Phase) {
        self.phase.send_if_modified(|cur| {
            if *cur == p {
                return false;
            }
            *cur = p;
            true
        });
    }

    /// Posts `AggregationSourceDiscovered` until it is accepted; false when cancelled first.
    async fn register(&self, cancel: &CancellationToken) -> bool {
        self.set_phase(Phase::Registering);
        let s = &self.settings;
        let mut delay = FIRST_RETRY;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            if let Err(e) = prepare_tree(&self.core, &s.upstream, &s.name, &s.roots).await {
                warn!(error = %e, "agent tree not prepared for registration");
            }
            let headers = match &s.credentials {
                Some((user, password)) => vec![basic(user, password)],
                None => self.headers().await,
            };
            let event = json!({"MessageId": "ResourceEvent.1.0.AggregationSourceDiscovered",
                "Message": "A aggregation source of connection method Redfish located at the agent has been discovered.",
                "MessageArgs": ["Redfish", s.base_url],
                "OriginOfCondition": {"@odata.id": connection_method_uri(&s.name)}});
            let failure = match self.post_event("Agent registration", "", event, headers).await {
                Ok(r) if (200..300).contains(&r.status) => match self.context().await {
                    Some(context) => {
                        info!(upstream = %s.upstream, aggregation_source = %context, "registered with the upstream");
                        return true;
                    }
                    None => "the upstream accepted the registration but set no Context".to_string(),
                },
                Ok(r) => r.error_text().replacen("the agent", "the upstream", 1),
                Err(e) => e,
            };
            if attempt == 1 {
                warn!(upstream = %s.upstream, error = %failure, "registration failed; retrying with backoff");
            } else {
                debug!(upstream = %s.upstream, attempt, error = %failure, "registration failed");
            }
            if !sleep(cancel, delay).await {
                return false;
            }
            delay = (delay * 2).min(s.retry_max);
        }
    }

    /// Announces every inventory root with `ResourceCreated`.
    async fn upload(&self) {
        let Some(context) = self.context().await else { return };
        let roots = match inventory_roots(&self.core, &self.settings.roots).await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "inventory roots not read; nothing announced");
                return;
            }
        };
        let headers = self.headers().await;
        for root in &roots {
            let event = json!({"MessageId": "ResourceEvent.1.0.ResourceCreated",
                "Message": "The resource was created successfully.",
                "OriginOfCondition": {"@odata.id": root}});
            match self.post_event("Inventory", &context, event, headers.clone()).await {
                Ok(r) if (200..300).contains(&r.status) => debug!(root = %root, "inventory root announced"),
                // Answered while the crawl goes on in the background.
                Ok(r) if r.status == 503 => info!(root = %root, "upload still running upstream"),
                Ok(r) => warn!(root = %root, status = r.status, error = %r.error_text(), "upload refused"),
                Err(e) => {
                    warn!(root = %root, error = %e, "upload failed: upstream unreachable");
                    break;
                }
            }
        }
        info!(roots = roots.len(), aggregation_source = %context, "inventory announced");
        self.set_phase(Phase::Registered { context });
    }

    /// Heartbeats and AggregationSource checks until the upstream loses the agent.
    async fn watch(&self, cancel: &CancellationToken) -> Watch {
        let mut down = false;
        let mut delay = FIRST_RETRY;
        loop {
            let wait = if down { delay } else { self.settings.heartbeat };
            if !sleep(cancel, wait).await {
                return Watch::Cancelled;
            }
            let Some(context) = self.context().await else { return Watch::Lost };
            let headers = self.headers().await;
            if !down {
                let event = json!({"MessageId": "HeartbeatEvent.1.0.RedfishServiceFunctional",
                    "Message": "Redfish service is functional."});
                if let Err(e) = self.post_event("Heartbeat", &context, event, headers.clone()).await {
                    debug!(error = %e, "heartbeat not delivered");
                }
            }
            let url = format!("{}{AGGREGATION_SOURCES}/{context}", self.settings.upstream);
            match self.send(Operation::Get, url, headers, None).await {
                Ok(r) if r.status == 404 || r.status == 401 => {
                    info!(aggregation_source = %context, status = r.status, "the upstream lost this agent; registering again");
                    return Watch::Lost;
                }
                Ok(r) => {
                    if down {
                        info!(upstream = %self.settings.upstream, "upstream answers again");
                        down = false;
                        self.set_phase(Phase::Registered { context });
                    }
                    if !(200..300).contains(&r.status) {
                        debug!(status = r.status, "AggregationSource check answered");
                    }
                }
                Err(e) => {
                    if down {
                        delay = (delay * 2).min(self.settings.retry_max);
                    } else {
                        warn!(upstream = %self.settings.upstream, error = %e, "upstream unreachable; retrying");
                        down = true;
                        delay = FIRST_RETRY;
                        self.set_phase(Phase::UpstreamDown { context });
                    }
                }
            }
        }
    }

    /// The subscription's `Context` (the AggregationSource Id), when set.
    async fn context(&self) -> Option<String> {
        let path = ResourcePath::parse(SUBSCRIPTION).ok()?;
        let sub = self.core.get(&path).await.ok()?;
        sub.value().get("Context").and_then(Value::as_str).filter(|c| !c.is_empty()).map(str::to_string)
    }

    /// The subscription's `HttpHeaders` as the upstream PATCHed them.
    async fn headers(&self) -> Vec<(String, String)> {
        match self.core.storage().kv_get(HEADERS_NS, "SunfishServer").await {
            Ok(Some(v)) => serde_json::from_value(v).unwrap_or_default(),
            Ok(None) => Vec::new(),
            Err(e) => {
                warn!(error = %e, "subscription headers not read");
                Vec::new()
            }
        }
    }

    /// POSTs an envelope holding `event` to `<upstream>/EventListener`.
    async fn post_event(
        &self,
        name: &str,
        context: &str,
        mut event: Value,
        headers: Vec<(String, String)>,
    ) -> std::result::Result<AgentReply, String> {
        let id = self.next_event.fetch_add(1, Ordering::Relaxed).to_string();
        if let Value::Object(m) = &mut event {
            m.insert("EventId".into(), Value::String(id.clone()));
            m.entry("Severity").or_insert_with(|| json!("OK"));
            m.entry("MessageSeverity").or_insert_with(|| json!("OK"));
        }
        let envelope = json!({"@odata.type": "#Event.v1_7_0.Event", "Id": id, "Name": name,
            "Context": context, "Events": [event]});
        let url = format!("{}/EventListener", self.settings.upstream);
        self.send(Operation::Create, url, headers, Some(envelope)).await
    }

    async fn send(
        &self,
        method: Operation,
        url: String,
        headers: Vec<(String, String)>,
        body: Option<Value>,
    ) -> std::result::Result<AgentReply, String> {
        let req = AgentRequest { method, url, headers, body, timeout: self.settings.request_timeout };
        self.client.send(req).await.map_err(|e| format!("{e:?}"))
    }
}

/// `Authorization: Basic ...`.
pub(crate) fn basic(user: &str, password: &str) -> (String, String) {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    ("Authorization".into(), format!("Basic {token}"))
}

/// Sleeps `d`; false when cancelled first.
async fn sleep(cancel: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

/// The inventory roots to announce: `explicit` when given, else every member of the device's
/// top-level collections (not the agent's own services, `Managers`, `JsonSchemas`,
/// `Registries`), sorted.
///
/// # Errors
/// Storage failures.
pub async fn inventory_roots(core: &Core, explicit: &[String]) -> Result<Vec<String>> {
    if !explicit.is_empty() {
        return Ok(explicit.to_vec());
    }
    let mut roots = Vec::new();
    for coll in device_collections(core).await? {
        for member in core.storage().children(&coll).await? {
            roots.push(member.to_string());
        }
    }
    roots.sort();
    Ok(roots)
}

/// The device's top-level collections (`/redfish/v1/Fabrics`, ...), sorted.
async fn device_collections(core: &Core) -> Result<Vec<ResourcePath>> {
    let mut out = Vec::new();
    for p in core.storage().children(&ResourcePath::root()).await? {
        if is_service_path(&p) || p.last().is_some_and(|n| NOT_INVENTORY.contains(&n)) {
            continue;
        }
        if core.get(&p).await.is_ok_and(|r| r.is_collection()) {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// Makes sure the agent's tree has its ConnectionMethod and a `SunfishServer` subscription
/// pointing at `upstream` (see the module docs). Writes go through the core, and only what
/// differs is written; an existing subscription keeps its `Context` and `HttpHeaders`.
///
/// # Errors
/// Storage failures; a subscription the EventService refuses (a Destination outside
/// `outbound.allow`).
pub async fn prepare_tree(core: &Core, upstream: &str, name: &str, roots: &[String]) -> Result<()> {
    let methods = ResourcePath::parse(CONNECTION_METHODS)?;
    let cm = methods.child(name)?;
    match core.get(&cm).await {
        Ok(r) => {
            if r.value().get("ConnectionMethodType").and_then(Value::as_str) != Some("Redfish") {
                core.patch(&cm, json!({"ConnectionMethodType": "Redfish"}), None).await?;
            }
        }
        Err(Error::NotFound { .. }) => {
            ensure_collection(core, &methods, "#AggregationService.v1_0_1.AggregationService", "ConnectionMethod")
                .await?;
            core.create(
                &methods,
                json!({"@odata.type": "#ConnectionMethod.v1_1_0.ConnectionMethod", "Id": name,
                    "Name": format!("ConnectionMethod for agent {name}"), "ConnectionMethodType": "Redfish",
                    "Links": {"AggregationSources": []}}),
            )
            .await?;
        }
        Err(e) => return Err(e),
    }

    // Events about the device only: its top-level collections and everything below them.
    let mut tops: Vec<String> = Vec::new();
    if roots.is_empty() {
        tops.extend(device_collections(core).await?.iter().map(ToString::to_string));
    } else {
        for r in roots {
            let p = ResourcePath::parse(r)?;
            let top = p.segments().next().map(str::to_string);
            if let Some(top) = top {
                tops.push(ResourcePath::root().child(&top)?.to_string());
            }
        }
    }
    if tops.is_empty() {
        tops = ["Chassis", "Fabrics", "Systems"].iter().map(|t| format!("/redfish/v1/{t}")).collect();
    }
    tops.sort();
    tops.dedup();
    let origins: Vec<Value> = tops.iter().map(|t| json!({"@odata.id": t})).collect();
    let destination = format!("{upstream}/EventListener");

    let subs_path = ResourcePath::parse(SUBSCRIPTION)?;
    let subs = subs_path.parent().ok_or_else(|| Error::not_found(&subs_path))?;
    match core.get(&subs_path).await {
        Ok(r) => {
            let mut want: Map<String, Value> = r.value().as_object().cloned().unwrap_or_default();
            for k in ["RegistryPrefixes", "ExcludeRegistryPrefixes", "MessageIds", "ExcludeMessageIds", "ResourceTypes"]
            {
                want.remove(k);
            }
            want.insert("Destination".into(), Value::String(destination));
            want.insert("Protocol".into(), json!("Redfish"));
            want.insert("EventFormatType".into(), json!("Event"));
            want.insert("DeliveryRetryPolicy".into(), json!("RetryForeverWithBackoff"));
            want.insert("OriginResources".into(), Value::Array(origins));
            want.insert("SubordinateResources".into(), json!(true));
            want.entry("Context").or_insert_with(|| json!(""));
            let want = Value::Object(want);
            if want != *r.value() {
                core.replace(&subs_path, want, None).await?;
            }
        }
        Err(Error::NotFound { .. }) => {
            ensure_collection(core, &subs, "#EventService.v1_10_0.EventService", "EventDestination").await?;
            core.create(
                &subs,
                json!({"@odata.type": "#EventDestination.v1_16_0.EventDestination", "Id": "SunfishServer",
                    "Name": "Sunfish upstream", "Destination": destination, "Context": "", "Protocol": "Redfish",
                    "EventFormatType": "Event", "DeliveryRetryPolicy": "RetryForeverWithBackoff",
                    "OriginResources": origins, "SubordinateResources": true}),
            )
            .await?;
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

/// Makes the collection at `coll` exist (with its parent service, typed `service_type`, when
/// that is missing too), so that a member can be created in it. Reference mockups ship some of
/// these files as invalid JSON, so the seed may lack them.
async fn ensure_collection(core: &Core, coll: &ResourcePath, service_type: &str, member_type: &str) -> Result<()> {
    if core.get(coll).await.is_ok() {
        return Ok(());
    }
    let mut missing = Vec::new();
    if let Some(service) = coll.parent().filter(|p| !p.is_root()) {
        if core.get(&service).await.is_err() {
            let id = service.last().unwrap_or_default().to_string();
            let coll_name = coll.last().unwrap_or_default().to_string();
            missing.push((
                service.clone(),
                json!({"@odata.id": service.as_str(), "@odata.type": service_type, "Id": id, "Name": id,
                    coll_name: {"@odata.id": coll.as_str()}}),
            ));
        }
    }
    missing.push((coll.clone(), collection_template(coll, member_type)));
    core.storage().import(missing).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Basic header is `user:password` in base64.
    #[test]
    fn basic_header() {
        assert_eq!(basic("agent", "pw"), ("Authorization".to_string(), "Basic YWdlbnQ6cHc=".to_string()));
    }

    /// ConnectionMethod URIs live in the AggregationService.
    #[test]
    fn connection_method() {
        assert_eq!(connection_method_uri("CXL"), "/redfish/v1/AggregationService/ConnectionMethods/CXL");
    }
}
