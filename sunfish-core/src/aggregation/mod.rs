//! Aggregation: agents register, upload their inventories into our tree, are kept in sync and
//! watched, and writes on what they own are forwarded to them. This is what makes Sunfish a
//! fabric manager; docs/AGGREGATION.md is the wire contract agents follow.
//!
//! Lifecycle of an agent:
//! 1. `AggregationSourceDiscovered` on `/EventListener` → [`Aggregator::discovered`]: fetch its
//!    ConnectionMethod, create (or, for the same host and method, reuse) its AggregationSource,
//!    PATCH its `SunfishServer` subscription with `Context` = that Id (and a credential).
//! 2. `ResourceCreated` with that Context → crawl from the origin and place every object in our
//!    tree ([`sync`]): collisions renamed with links rewritten ([`alias`]), fabrics with the same
//!    UUID merged, boundary ports of different agents matched ([`boundary`]).
//! 3. `ResourceChanged`/`ResourceRemoved` keep our copy current; every event counts as a sign of
//!    life, and a silent agent is probed, then marked offline ([`Aggregator::start`]).
//! 4. Client writes on agent-owned resources go to the agent first ([`forward`]).
//! 5. DELETE of the AggregationSource removes everything the agent owns.
//!
//! Private state per agent (aliases, owned paths, boundary ports) is a storage-backend record
//! (`kv` namespace `aggregation`), so it survives restarts with the tree it describes.

pub mod agentconfig;
pub mod alias;
pub mod boundary;
pub mod client;
pub mod forward;
mod sync;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::eventservice::NewEvent;
use crate::metrics::AggregationMetrics;
use crate::outbound::OutboundPolicy;
use crate::resource::{collection_template, link, type_name};
use crate::{
    Core, Error, EventEnvelope, EventHandler, EventRecord, ObjectHandler, Operation, Resource, ResourcePath, Result,
    StorageBackend, WriteOp,
};
use alias::Aliases;
use boundary::BoundaryPort;
use client::{AgentClient, AgentFailure, AgentReply, AgentRequest};

/// Where AggregationSources live.
pub const AGGREGATION_SOURCES: &str = "/redfish/v1/AggregationService/AggregationSources";
/// Where agents' ConnectionMethods are kept.
pub const CONNECTION_METHODS: &str = "/redfish/v1/AggregationService/ConnectionMethods";
/// The agent-side subscription Sunfish patches at registration (reference contract).
const AGENT_SUBSCRIPTION: &str = "/redfish/v1/EventService/Subscriptions/SunfishServer";
/// The `kv` namespace of agent records.
const KV: &str = "aggregation";
/// The `@odata.type` of our Oem extension object.
const SUNFISH_RM_TYPE: &str = "#SunfishExtensions.v1_0_0.ResourceExtensions";
/// The MessageId prefix of the events the aggregator emits.
const RESOURCE_EVENT: &str = "ResourceEvent.1.4";

/// Tuning of the aggregation service (config section `[aggregation]`).
#[derive(Debug, Clone)]
pub struct AggregationConfig {
    /// Every request to an agent gives up after this long (504 for forwarded writes).
    pub request_timeout: Duration,
    /// Agent GETs in flight during a crawl.
    pub crawl_concurrency: usize,
    /// An agent silent this long gets a GET of its service root.
    pub liveness_interval: Duration,
    /// An agent silent this long is marked `UnavailableOffline`.
    pub liveness_timeout: Duration,
    /// AggregationSource Ids or HostNames (`*`: all) whose resources are re-read on GET.
    pub read_through: Vec<String>,
    /// Give each agent an account and send it the credential at registration (auth on).
    pub credentials: bool,
    /// Which agent URLs may be contacted.
    pub outbound: OutboundPolicy,
    /// (agent URL prefix, user, password): Basic credentials for agents that require them.
    pub agent_credentials: Vec<(String, String, String)>,
}

impl Default for AggregationConfig {
    fn default() -> Self {
        AggregationConfig {
            request_timeout: Duration::from_secs(5),
            crawl_concurrency: 16,
            liveness_interval: Duration::from_secs(10),
            liveness_timeout: Duration::from_secs(30),
            read_through: Vec::new(),
            credentials: false,
            outbound: OutboundPolicy::loopback(),
            agent_credentials: Vec::new(),
        }
    }
}

impl AggregationConfig {
    /// The `Authorization` header for requests to the agent at `host`, if configured: the
    /// first entry whose URL is `host` or a prefix of it ending at a `/` or `:` boundary.
    pub fn authorization(&self, host: &str) -> Option<(String, String)> {
        use base64::Engine as _;
        let (_, user, password) = self.agent_credentials.iter().find(|(url, _, _)| {
            host.strip_prefix(url.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with(['/', ':']))
        })?;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Some(("Authorization".to_string(), format!("Basic {token}")))
    }
}

/// What Sunfish remembers about one agent (a `kv` record, JSON).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct AgentRecord {
    /// The AggregationSource Id.
    id: String,
    /// `HostName`: the agent's base URL, no trailing slash.
    host: String,
    /// The agent's ConnectionMethod URI (its namespace).
    connection_method: String,
    /// Our copy of it.
    our_connection_method: String,
    /// Renamed subtrees.
    aliases: Aliases,
    /// Our URI → agent URI of every non-collection resource the agent owns here.
    owned: BTreeMap<String, String>,
    /// Announced roots (agent URIs) → our URIs reached from each, for re-upload diffs.
    roots: BTreeMap<String, BTreeSet<String>>,
    /// Fabrics owned by another agent that this agent shares (merged by UUID).
    shared: BTreeSet<String>,
    /// This agent's boundary ports.
    ports: Vec<BoundaryPort>,
    /// The account created for the agent, if any.
    account: Option<String>,
}

/// One registered agent.
struct Agent {
    /// Changed only under the aggregator's placement lock (or at registration).
    record: Mutex<AgentRecord>,
    /// Serialises this agent's uploads and syncs.
    sync: tokio::sync::Mutex<()>,
    /// Unix ms of the last sign of life.
    last_seen: AtomicU64,
    /// Unix ms last written to `Oem.Sunfish_RM.LastSeen`.
    flushed_seen: AtomicU64,
    /// Whether the AggregationSource shows the agent as available.
    online: AtomicBool,
    /// A liveness probe is in flight.
    probing: AtomicBool,
    /// Our paths of recent forwarded writes with their [`Aggregator::writes`] sequence numbers
    /// (the newest [`FORWARDED_KEPT`]): a crawl that began before one of them read the agent
    /// before that write, so its copy of the path is stale and not stored.
    forwarded: Mutex<std::collections::VecDeque<(String, u64)>>,
}

/// How many forwarded writes per agent are remembered for [`Agent::forwarded`].
const FORWARDED_KEPT: usize = 1024;

impl Agent {
    fn new(record: AgentRecord) -> Arc<Self> {
        Arc::new(Agent {
            record: Mutex::new(record),
            sync: tokio::sync::Mutex::new(()),
            last_seen: AtomicU64::new(now_ms()),
            flushed_seen: AtomicU64::new(0),
            online: AtomicBool::new(true),
            probing: AtomicBool::new(false),
            forwarded: Mutex::new(std::collections::VecDeque::new()),
        })
    }

    /// Records a forwarded write of `path` (ours) with sequence number `seq`.
    fn forwarded_write(&self, path: &str, seq: u64) {
        let mut f = self.forwarded.lock();
        if f.len() >= FORWARDED_KEPT {
            f.pop_front();
        }
        f.push_back((path.to_string(), seq));
    }

    /// Whether a write forwarded after sequence number `since` touched `path` or a resource
    /// above it (a DELETE of a parent).
    fn written_since(&self, path: &str, since: u64) -> bool {
        self.forwarded
            .lock()
            .iter()
            .rev()
            .take_while(|(_, s)| *s > since)
            .any(|(p, _)| path == p || path.strip_prefix(p.as_str()).is_some_and(|rest| rest.starts_with('/')))
    }

    fn id(&self) -> String {
        self.record.lock().id.clone()
    }

    fn host(&self) -> String {
        self.record.lock().host.clone()
    }

    fn seen(&self) {
        self.last_seen.store(now_ms(), Ordering::Relaxed);
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string().replace('Z', "+00:00")
}

/// Our path of AggregationSource `id`.
pub fn source_path(id: &str) -> String {
    format!("{AGGREGATION_SOURCES}/{id}")
}

/// The AggregationSource path that owns `value` (`Oem.Sunfish_RM.ManagingAgent`), if any.
pub fn managing_agent(value: &Value) -> Option<&str> {
    value.pointer("/Oem/Sunfish_RM/ManagingAgent/@odata.id").and_then(Value::as_str)
}

/// Marks `value` as owned by AggregationSource `source`; an agent's own `BoundaryComponent` is
/// kept (default `owned`), its `ManagingAgent` is not.
fn mark_owned(value: &mut Value, source: &str) {
    let Value::Object(obj) = value else { return };
    let oem = obj.entry("Oem").or_insert_with(|| json!({}));
    if !oem.is_object() {
        *oem = json!({});
    }
    let Value::Object(oem) = oem else { return };
    let rm = oem.entry("Sunfish_RM").or_insert_with(|| json!({}));
    if !rm.is_object() {
        *rm = json!({});
    }
    let Value::Object(rm) = rm else { return };
    rm.insert("@odata.type".into(), Value::String(SUNFISH_RM_TYPE.into()));
    rm.insert("ManagingAgent".into(), link(source));
    rm.entry("BoundaryComponent").or_insert_with(|| Value::String("owned".into()));
}

/// The aggregation service. One per [`Core`]; see the module docs.
pub struct Aggregator {
    storage: Arc<dyn StorageBackend>,
    client: Arc<dyn AgentClient>,
    config: AggregationConfig,
    /// AggregationSource Id → agent.
    agents: RwLock<BTreeMap<String, Arc<Agent>>>,
    /// Serialises placement (collision decisions, boundary matching) across agents; crawls
    /// run outside it.
    place: tokio::sync::Mutex<()>,
    /// Sequence of forwarded writes: a crawl notes it when it starts (see [`Agent::forwarded`]).
    writes: AtomicU64,
    stop: CancellationToken,
    /// Whether this instance runs the liveness checks ([`StorageBackend::leadership`]).
    leader: tokio::sync::watch::Receiver<bool>,
    /// Crawl durations and forwarding outcomes (`/metrics`).
    metrics: AggregationMetrics,
}

impl Aggregator {
    /// A new service over `storage`, reaching agents through `client`.
    pub fn new(storage: Arc<dyn StorageBackend>, client: Arc<dyn AgentClient>, config: AggregationConfig) -> Arc<Self> {
        Arc::new(Aggregator {
            leader: storage.leadership(),
            storage,
            client,
            config,
            agents: RwLock::new(BTreeMap::new()),
            place: tokio::sync::Mutex::new(()),
            writes: AtomicU64::new(0),
            stop: CancellationToken::new(),
            metrics: AggregationMetrics::default(),
        })
    }

    /// Crawl and forwarding metrics (registered with the core's metrics).
    pub fn metrics(&self) -> &AggregationMetrics {
        &self.metrics
    }

    /// How many registered agents are shown available and how many `UnavailableOffline`.
    pub fn agent_states(&self) -> (usize, usize) {
        let agents = self.agents.read();
        let online = agents.values().filter(|a| a.online.load(Ordering::Relaxed)).count();
        (online, agents.len() - online)
    }

    /// Loads the agent records and starts the liveness watch. Loaded agents count as seen now.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn start(self: &Arc<Self>, core: &Core) -> Result<()> {
        for (id, v) in self.storage.kv_list(KV).await? {
            match serde_json::from_value::<AgentRecord>(v) {
                Ok(rec) => {
                    self.agents.write().insert(id, Agent::new(rec));
                }
                Err(e) => warn!(agent = %id, error = %e, "unreadable agent record ignored"),
            }
        }
        let me = self.clone();
        let core = core.clone();
        let tick = (self.config.liveness_interval / 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
        tokio::spawn(async move {
            let mut every = tokio::time::interval(tick);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut leading = *me.leader.borrow();
            loop {
                tokio::select! {
                    _ = me.stop.cancelled() => break,
                    _ = every.tick() => {}
                }
                let now = *me.leader.borrow();
                if now && !leading {
                    me.take_over().await;
                }
                leading = now;
                if leading {
                    me.watch(&core).await;
                }
            }
        });
        Ok(())
    }

    /// On becoming leader: loads the agents other instances registered, counting each as seen
    /// now, so the checks start from a full list without declaring anyone dead at once.
    async fn take_over(&self) {
        info!("this instance now runs agent liveness checks");
        match self.storage.kv_list(KV).await {
            Ok(records) => {
                let mut agents = self.agents.write();
                for (id, v) in records {
                    if let Some(a) = agents.get(&id) {
                        a.seen();
                        continue;
                    }
                    if let Ok(rec) = serde_json::from_value::<AgentRecord>(v) {
                        agents.insert(id, Agent::new(rec));
                    }
                }
            }
            Err(e) => warn!(error = %e, "agent records not read at takeover"),
        }
    }

    /// Stops the liveness watch.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// The registered AggregationSource Ids.
    pub fn agent_ids(&self) -> Vec<String> {
        self.agents.read().keys().cloned().collect()
    }

    fn agent(&self, id: &str) -> Option<Arc<Agent>> {
        self.agents.read().get(id).cloned()
    }

    /// The agent an envelope comes from (by `Context`), noting it as alive.
    pub(crate) fn sender(&self, env: &EventEnvelope) -> Option<String> {
        let id = env.context.as_deref().filter(|c| !c.is_empty())?;
        let agent = self.agent(id)?;
        agent.seen();
        Some(id.to_string())
    }

    /// An agent URI in our namespace (for routing an agent's events to our subscribers).
    pub(crate) fn to_ours(&self, agent_id: &str, uri: &str) -> String {
        match self.agent(agent_id) {
            Some(a) => a.record.lock().aliases.to_ours(uri),
            None => uri.to_string(),
        }
    }

    async fn save(&self, agent: &Agent) -> Result<()> {
        let rec = agent.record.lock().clone();
        let v = serde_json::to_value(&rec).map_err(|e| Error::Internal { message: e.to_string() })?;
        self.storage.kv_put(KV, &rec.id, v).await
    }

    /// Sends one request to an agent.
    async fn send(
        &self,
        host: &str,
        method: Operation,
        uri: &str,
        headers: Vec<(String, String)>,
        body: Option<Value>,
    ) -> Result<AgentReply> {
        let url = format!("{host}{uri}");
        let mut headers = headers;
        if let Some(h) = self.config.authorization(host) {
            headers.push(h);
        }
        self.config.outbound.check(&url).map_err(|reason| Error::Agent {
            agent: host.to_string(),
            status: None,
            timed_out: false,
            message: reason,
        })?;
        let req = AgentRequest { method, url, headers, body, timeout: self.config.request_timeout };
        self.client.send(req).await.map_err(|f| match f {
            AgentFailure::TimedOut => Error::Agent {
                agent: host.to_string(),
                status: None,
                timed_out: true,
                message: format!("no answer to {method} {uri} within {:?}", self.config.request_timeout),
            },
            AgentFailure::Unreachable(e) => Error::Agent {
                agent: host.to_string(),
                status: None,
                timed_out: false,
                message: format!("{method} {uri}: {e}"),
            },
        })
    }

    /// GET of a JSON resource from an agent: `Ok(None)` for a non-2xx answer or a body that is
    /// not a resource (no `@odata.id`/`@odata.type`).
    async fn fetch(&self, host: &str, uri: &str) -> Result<Option<Value>> {
        let reply = self.send(host, Operation::Get, uri, Vec::new(), None).await?;
        if !(200..300).contains(&reply.status) {
            return Ok(None);
        }
        Ok(reply.json_object().filter(|v| v.get("@odata.id").is_some() && v.get("@odata.type").is_some()))
    }

    /// Creates or replaces a collection member at `path` (the collection is made if missing).
    async fn upsert(&self, path: &ResourcePath, value: Value) -> Result<Resource> {
        match self.storage.get(path).await {
            Ok(_) => self.storage.replace(path, value, None).await,
            Err(Error::NotFound { .. }) => {
                let parent = path.parent().ok_or_else(|| Error::not_found(path))?;
                let template = match self.storage.get(&parent).await {
                    Ok(_) => None,
                    Err(Error::NotFound { .. }) => {
                        Some(collection_template(&parent, type_name(&value).unwrap_or_default()))
                    }
                    Err(e) => return Err(e),
                };
                self.storage.create(&parent, value, template).await
            }
            Err(e) => Err(e),
        }
    }

    async fn publish(&self, core: &Core, events: Vec<NewEvent>) {
        if let Some(ev) = core.events() {
            if let Err(e) = ev.publish(events).await {
                warn!(error = %e, "aggregation events not published");
            }
        }
    }

    /// `AggregationSourceDiscovered`: registers (or re-registers) the agent named by the event.
    ///
    /// # Errors
    /// `PropertyValue`/`PropertyMissing` for a malformed event or a refused URL, `Agent` when
    /// the agent cannot be reached or refuses the subscription PATCH.
    pub async fn discovered(self: &Arc<Self>, core: &Core, ev: &EventRecord) -> Result<()> {
        let host = ev
            .message_args
            .get(1)
            .and_then(Value::as_str)
            .ok_or_else(|| Error::property_value("MessageArgs", "must be [\"Redfish\", \"<agent base URL>\"]"))?
            .trim_end_matches('/')
            .to_string();
        self.config.outbound.check(&host).map_err(|r| Error::property_value("MessageArgs/1", r))?;
        let origin =
            ev.origin.as_deref().ok_or_else(|| Error::PropertyMissing { property: "OriginOfCondition".into() })?;
        let cm =
            ResourcePath::parse_link(origin).map_err(|e| Error::property_value("OriginOfCondition", e.to_string()))?;
        let methods = ResourcePath::parse(CONNECTION_METHODS)?;
        let name = match (cm.parent(), cm.last()) {
            (Some(p), Some(n)) if p == methods => n.to_string(),
            _ => {
                return Err(Error::property_value(
                    "OriginOfCondition",
                    format!("must be a ConnectionMethod in {CONNECTION_METHODS}"),
                ))
            }
        };
        let reply = self.send(&host, Operation::Get, cm.as_str(), Vec::new(), None).await?;
        if !(200..300).contains(&reply.status) {
            return Err(Error::Agent {
                agent: host,
                status: Some(reply.status),
                timed_out: false,
                message: reply.error_text(),
            });
        }
        let method =
            reply.json_object().filter(|v| type_name(v) == Some("ConnectionMethod")).ok_or_else(|| Error::Agent {
                agent: host.clone(),
                status: None,
                timed_out: false,
                message: format!("{cm} is not a ConnectionMethod"),
            })?;

        let _placing = self.place.lock().await;
        let existing = self
            .agents
            .read()
            .values()
            .find(|a| {
                let r = a.record.lock();
                r.host == host && r.connection_method == cm.as_str()
            })
            .cloned();
        let (id, our_cm) = match &existing {
            Some(a) => {
                let r = a.record.lock();
                (r.id.clone(), r.our_connection_method.clone())
            }
            None => {
                let id = uuid::Uuid::new_v4().to_string();
                let plain = methods.child(&name)?;
                let taken = self.storage.get(&plain).await.is_ok();
                let ours = if taken { methods.child(&format!("Sunfish_{}_{name}", &id[..4]))? } else { plain };
                (id, ours.to_string())
            }
        };
        let source = source_path(&id);
        let our_cm_path = ResourcePath::parse(&our_cm)?;
        let mut cm_value = method;
        if let Value::Object(m) = &mut cm_value {
            m.insert("@odata.id".into(), Value::String(our_cm.clone()));
            m.insert("Id".into(), Value::String(our_cm_path.last().unwrap_or_default().to_string()));
            m.insert("Links".into(), json!({"AggregationSources": [link(&source)]}));
        }
        self.upsert(&our_cm_path, cm_value).await?;

        let source_res = ResourcePath::parse(&source)?;
        let accessed = match self.storage.get(&source_res).await {
            Ok(r) => r.value().pointer("/Links/ResourcesAccessed").cloned().unwrap_or_else(|| json!([])),
            Err(_) => json!([]),
        };
        let now = now_ms();
        let body = json!({
            "@odata.id": source, "@odata.type": "#AggregationSource.v1_5_0.AggregationSource",
            "Id": id, "Name": format!("Agent at {host}"), "HostName": host,
            "Links": {"ConnectionMethod": link(&our_cm), "ResourcesAccessed": accessed},
            "Status": {"State": "Enabled", "Health": "OK"},
            "Oem": {"Sunfish_RM": {"@odata.type": SUNFISH_RM_TYPE, "LastSeen": rfc3339(now)}}
        });
        self.upsert(&source_res, body).await?;

        let mut patch = json!({"Context": id});
        let mut account = existing.as_ref().and_then(|a| a.record.lock().account.clone());
        if self.config.credentials && core.auth().is_some() {
            let (path, header) = agent_credential(core, &id).await?;
            account = Some(path);
            patch["HttpHeaders"] = json!([{"Authorization": header}]);
        }
        let agent = match existing {
            Some(a) => a,
            None => Agent::new(AgentRecord {
                id: id.clone(),
                host: host.clone(),
                connection_method: cm.to_string(),
                our_connection_method: our_cm.clone(),
                ..AgentRecord::default()
            }),
        };
        agent.record.lock().account = account;
        agent.seen();
        agent.flushed_seen.store(now, Ordering::Relaxed);
        agent.online.store(true, Ordering::Relaxed);
        self.agents.write().insert(id.clone(), agent.clone());
        self.save(&agent).await?;
        drop(_placing);

        let reply = self.send(&host, Operation::Patch, AGENT_SUBSCRIPTION, Vec::new(), Some(patch)).await?;
        if !(200..300).contains(&reply.status) {
            return Err(Error::Agent {
                agent: host,
                status: Some(reply.status),
                timed_out: false,
                message: reply.error_text(),
            });
        }
        info!(agent = %id, host = %host, "agent registered");
        // A known agent that registers again gets what it announced before re-read.
        self.resync_later(core, &agent);
        Ok(())
    }

    /// Re-crawls every root the agent announced, in the background.
    fn resync_later(self: &Arc<Self>, core: &Core, agent: &Arc<Agent>) {
        let roots: Vec<String> = agent.record.lock().roots.keys().cloned().collect();
        if roots.is_empty() {
            return;
        }
        let me = self.clone();
        let core = core.clone();
        let agent = agent.clone();
        tokio::spawn(async move {
            for root in roots {
                if let Err(e) = me.sync_root(&core, &agent, &root).await {
                    warn!(agent = %agent.id(), root = %root, error = %e, "resync failed");
                }
            }
        });
    }

    /// `ResourceCreated` from an agent: crawls and stores the subtree at the origin.
    ///
    /// # Errors
    /// `PropertyMissing` without an origin; `Agent` when the origin cannot be fetched.
    pub async fn created(self: &Arc<Self>, core: &Core, agent_id: &str, ev: &EventRecord) -> Result<()> {
        let Some(agent) = self.agent(agent_id) else { return Ok(()) };
        let Some(origin) = origin_of(ev)? else { return Ok(()) };
        self.sync_root(core, &agent, origin.as_str()).await
    }

    /// `ResourceChanged` from an agent: refetches the origin and stores it (crawling it as a new
    /// subtree when we do not have it).
    ///
    /// # Errors
    /// As [`Aggregator::created`].
    pub async fn changed(self: &Arc<Self>, core: &Core, agent_id: &str, ev: &EventRecord) -> Result<()> {
        let Some(agent) = self.agent(agent_id) else { return Ok(()) };
        let Some(origin) = origin_of(ev)? else { return Ok(()) };
        let ours = agent.record.lock().aliases.to_ours(origin.as_str());
        let known = agent.record.lock().owned.contains_key(&ours);
        if !known {
            return self.sync_root(core, &agent, origin.as_str()).await;
        }
        let _g = agent.sync.lock().await;
        let host = agent.host();
        let since = self.writes.load(Ordering::SeqCst);
        match self.fetch(&host, origin.as_str()).await? {
            Some(v) => {
                let one = BTreeMap::from([(origin.to_string(), v)]);
                self.place(core, &agent, one, None, since).await
            }
            None => Ok(()),
        }
    }

    /// `ResourceRemoved` from an agent: deletes our copy of the origin and its subtree.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn removed(self: &Arc<Self>, core: &Core, agent_id: &str, ev: &EventRecord) -> Result<()> {
        let Some(agent) = self.agent(agent_id) else { return Ok(()) };
        let Some(origin) = origin_of(ev)? else { return Ok(()) };
        let _g = agent.sync.lock().await;
        let _placing = self.place.lock().await;
        let ours = agent.record.lock().aliases.to_ours(origin.as_str());
        let deleted = self.delete_owned(&agent, &[ours]).await?;
        self.refresh_accessed(&agent).await?;
        self.save(&agent).await?;
        drop(_placing);
        self.publish(core, removal_events(&deleted)).await;
        Ok(())
    }

    /// Deletes `paths` (ours) where this agent owns them; forgets them in its record. Returns
    /// the topmost deleted paths.
    async fn delete_owned(&self, agent: &Agent, paths: &[String]) -> Result<Vec<ResourcePath>> {
        let me = source_path(&agent.id());
        let mut sorted: Vec<&String> = paths.iter().collect();
        sorted.sort();
        let mut done: Vec<ResourcePath> = Vec::new();
        for p in sorted {
            let Ok(path) = ResourcePath::parse(p) else { continue };
            if done.iter().any(|d| path.is_within(d)) {
                continue;
            }
            match self.storage.get(&path).await {
                Ok(r) if managing_agent(&r.value()) == Some(me.as_str()) => {}
                _ => continue,
            }
            match self.storage.delete(&path, None).await {
                Ok(_) | Err(Error::NotFound { .. }) => done.push(path),
                Err(e) => return Err(e),
            }
        }
        let mut rec = agent.record.lock();
        for d in &done {
            let prefix = format!("{d}/");
            rec.owned.retain(|k, _| k != d.as_str() && !k.starts_with(&prefix));
            for set in rec.roots.values_mut() {
                set.retain(|k| k != d.as_str() && !k.starts_with(&prefix));
            }
            rec.ports.retain(|p| p.path != d.as_str() && !p.path.starts_with(&prefix));
            rec.aliases.remove_below(d.as_str());
        }
        Ok(done)
    }

    /// Sets the AggregationSource's `Links.ResourcesAccessed` to the topmost resources the agent
    /// owns (what is lost when it goes), if that changed.
    async fn refresh_accessed(&self, agent: &Agent) -> Result<()> {
        let (id, top) = {
            let rec = agent.record.lock();
            let top: Vec<Value> = topmost(rec.owned.keys().map(String::as_str)).into_iter().map(link).collect();
            (rec.id.clone(), top)
        };
        let path = ResourcePath::parse(&source_path(&id))?;
        let current = self.storage.get(&path).await?;
        if current.value().pointer("/Links/ResourcesAccessed") == Some(&Value::Array(top.clone())) {
            return Ok(());
        }
        self.storage.patch(&path, json!({"Links": {"ResourcesAccessed": top}}), None).await?;
        Ok(())
    }

    /// Unregisters agent `id` (its AggregationSource is being deleted): removes what it owns,
    /// hands fabrics it shares over, restores peers' boundary links, deletes its ConnectionMethod,
    /// account and record.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn unregister(&self, core: &Core, id: &str) -> Result<()> {
        let Some(agent) = self.agent(id) else { return Ok(()) };
        let _g = agent.sync.lock().await;
        let _placing = self.place.lock().await;
        let me = source_path(id);
        let (owned, shared, account, our_cm) = {
            let r = agent.record.lock();
            (
                r.owned.keys().cloned().collect::<Vec<_>>(),
                r.shared.clone(),
                r.account.clone(),
                r.our_connection_method.clone(),
            )
        };
        // Fabrics this agent merely shares: leave them, minus this agent.
        for f in &shared {
            if let Ok(p) = ResourcePath::parse(f) {
                if let Ok(r) = self.storage.get(&p).await {
                    let mut v = r.value().into_owned();
                    if remove_sharer(&mut v, &me) {
                        self.storage.replace(&p, v, None).await?;
                    }
                }
            }
        }
        // Fabrics it owns that others share: hand over to the first sharer.
        let mut keep = Vec::new();
        for o in &owned {
            let Ok(p) = ResourcePath::parse(o) else { continue };
            let Ok(r) = self.storage.get(&p).await else { continue };
            let heir = r
                .value()
                .pointer("/Oem/Sunfish_RM/FabricSharedWith")
                .and_then(Value::as_array)
                .and_then(|a| a.iter().filter_map(|l| l.get("@odata.id").and_then(Value::as_str)).find(|s| *s != me))
                .map(str::to_string);
            let Some(heir) = heir else { continue };
            let heir_id = heir.rsplit('/').next().unwrap_or_default().to_string();
            let Some(heir_agent) = self.agent(&heir_id) else { continue };
            let mut v = r.value().into_owned();
            remove_sharer(&mut v, &heir);
            if let Some(rm) = v.pointer_mut("/Oem/Sunfish_RM").and_then(Value::as_object_mut) {
                rm.insert("ManagingAgent".into(), link(&heir));
            }
            self.storage.replace(&p, v, None).await?;
            {
                let mut hr = heir_agent.record.lock();
                let agent_uri = agent.record.lock().owned.get(o).cloned().unwrap_or_else(|| o.clone());
                hr.shared.remove(o);
                hr.owned.insert(o.clone(), agent_uri);
                if let Some(set) = hr.roots.values_mut().next() {
                    set.insert(o.clone());
                }
            }
            self.save(&heir_agent).await?;
            keep.push(o.clone());
        }
        let to_delete: Vec<String> = owned.into_iter().filter(|o| !keep.contains(o)).collect();
        let deleted = self.delete_owned(&agent, &to_delete).await?;
        // Its boundary ports are gone: peers get their placeholders back.
        agent.record.lock().ports.clear();
        self.rematch_ports().await?;
        if let Ok(p) = ResourcePath::parse(&our_cm) {
            let _ = self.storage.delete(&p, None).await;
        }
        self.storage.kv_delete(KV, id).await?;
        self.agents.write().remove(id);
        drop(_placing);
        if let Some(acc) = account.and_then(|a| ResourcePath::parse(&a).ok()) {
            if let Err(e) = core.delete(&acc, None).await {
                warn!(agent = %id, error = %e, "agent account not deleted");
            }
        }
        info!(agent = %id, resources = deleted.len(), "agent unregistered");
        self.publish(core, removal_events(&deleted)).await;
        Ok(())
    }

    /// Re-matches every agent's boundary ports and rewrites the stored ports whose links
    /// change. Call with the placement lock held.
    async fn rematch_ports(&self) -> Result<()> {
        let mut staged = BTreeMap::new();
        self.match_boundaries(&mut staged).await?;
        let writes: Vec<(ResourcePath, Value)> =
            staged.into_iter().filter_map(|(p, v)| ResourcePath::parse(&p).ok().map(|p| (p, v))).collect();
        if !writes.is_empty() {
            self.storage.import(writes).await?;
        }
        Ok(())
    }

    /// One liveness round: probe the quiet, mark the silent offline, bring back the returned,
    /// and write `LastSeen` at most once per interval.
    async fn watch(self: &Arc<Self>, core: &Core) {
        let agents: Vec<Arc<Agent>> = self.agents.read().values().cloned().collect();
        let interval = self.config.liveness_interval.as_millis() as u64;
        let timeout = self.config.liveness_timeout.as_millis() as u64;
        for agent in agents {
            let now = now_ms();
            let silent = now.saturating_sub(agent.last_seen.load(Ordering::Relaxed));
            let online = agent.online.load(Ordering::Relaxed);
            if silent >= interval && !agent.probing.swap(true, Ordering::Relaxed) {
                let me = self.clone();
                let a = agent.clone();
                tokio::spawn(async move {
                    let host = a.host();
                    // An answer below 500 is a sign of life: a 503 says the service is down,
                    // a 404 only that the agent (the reference's) has no root at that spelling.
                    if let Ok(r) = me.send(&host, Operation::Get, "/redfish/v1/", Vec::new(), None).await {
                        if r.status < 500 {
                            a.seen();
                        }
                    }
                    a.probing.store(false, Ordering::Relaxed);
                });
            }
            if online && silent >= timeout {
                agent.online.store(false, Ordering::Relaxed);
                self.set_status(core, &agent, false).await;
            } else if !online && silent < timeout {
                agent.online.store(true, Ordering::Relaxed);
                self.set_status(core, &agent, true).await;
                self.resync_later(core, &agent);
            } else {
                let seen = agent.last_seen.load(Ordering::Relaxed);
                let flushed = agent.flushed_seen.load(Ordering::Relaxed);
                if seen > flushed && now.saturating_sub(flushed) >= interval {
                    agent.flushed_seen.store(seen, Ordering::Relaxed);
                    if let Ok(p) = ResourcePath::parse(&source_path(&agent.id())) {
                        let delta = json!({"Oem": {"Sunfish_RM": {"LastSeen": rfc3339(seen)}}});
                        if let Err(e) = self.storage.patch(&p, delta, None).await {
                            warn!(agent = %agent.id(), error = %e, "LastSeen not stored");
                        }
                    }
                }
            }
        }
    }

    /// Shows the agent as available or not on its AggregationSource, with an event.
    async fn set_status(&self, core: &Core, agent: &Agent, up: bool) {
        let id = agent.id();
        let Ok(path) = ResourcePath::parse(&source_path(&id)) else { return };
        let seen = agent.last_seen.load(Ordering::Relaxed);
        let (status, key, severity) = if up {
            (json!({"State": "Enabled", "Health": "OK"}), "ResourceStatusChangedOK", "OK")
        } else {
            (json!({"State": "UnavailableOffline", "Health": "Critical"}), "ResourceStatusChangedCritical", "Critical")
        };
        let delta = json!({"Status": status, "Oem": {"Sunfish_RM": {"LastSeen": rfc3339(seen)}}});
        if let Err(e) = self.storage.patch(&path, delta, None).await {
            warn!(agent = %id, error = %e, "agent status not stored");
        }
        if up {
            info!(agent = %id, "agent is back");
        } else {
            warn!(agent = %id, "agent is silent: marked UnavailableOffline");
        }
        let health = if up { "OK" } else { "Critical" };
        let ev = NewEvent {
            message_id: format!("{RESOURCE_EVENT}.{key}"),
            message: Some(format!("The health of resource '{path}' has changed to {health}.")),
            message_args: vec![Value::String(path.to_string()), Value::String(health.into())],
            severity: severity.into(),
            origin: Some(path.clone()),
            origin_type: Some("AggregationSource".into()),
            raw: None,
        };
        self.publish(core, vec![ev]).await;
    }

    /// Whether GETs of resources owned by `agent_id` are read through to the agent.
    fn reads_through(&self, agent_id: &str, host: &str) -> bool {
        self.config.read_through.iter().any(|r| r == "*" || r == agent_id || r.trim_end_matches('/') == host)
    }
}

/// The paths of `paths` that have no ancestor among them (O(n × depth)).
pub(crate) fn topmost<'a>(paths: impl Iterator<Item = &'a str> + Clone) -> Vec<&'a str> {
    let all: std::collections::HashSet<&str> = paths.clone().collect();
    paths
        .filter(|p| {
            let mut cut = p.len();
            while let Some(i) = p[..cut].rfind('/') {
                if i == 0 {
                    break;
                }
                if all.contains(&p[..i]) {
                    return false;
                }
                cut = i;
            }
            true
        })
        .collect()
}

/// The origin of an agent event, parsed; `None` for the agent's own services, which are not
/// part of its inventory (an agent whose subscription reports its own changes).
fn origin_of(ev: &EventRecord) -> Result<Option<ResourcePath>> {
    let o = ev.origin.as_deref().ok_or_else(|| Error::PropertyMissing { property: "OriginOfCondition".into() })?;
    let p = ResourcePath::parse_link(o).map_err(|e| Error::property_value("OriginOfCondition", e.to_string()))?;
    Ok((!sync::is_agent_private(&p)).then_some(p))
}

/// Removes `source` from a fabric's `FabricSharedWith`; returns whether it was there.
fn remove_sharer(v: &mut Value, source: &str) -> bool {
    let Some(list) = v.pointer_mut("/Oem/Sunfish_RM/FabricSharedWith").and_then(Value::as_array_mut) else {
        return false;
    };
    let before = list.len();
    list.retain(|l| l.get("@odata.id").and_then(Value::as_str) != Some(source));
    before != list.len()
}

fn removal_events(paths: &[ResourcePath]) -> Vec<NewEvent> {
    paths
        .iter()
        .map(|p| NewEvent::resource("ResourceRemoved", "The resource was removed successfully.", p, None))
        .collect()
}

/// Creates (or re-keys) the agent's Operator account; returns its path and the `Authorization`
/// header value the agent is to send.
async fn agent_credential(core: &Core, id: &str) -> Result<(String, String)> {
    use base64::Engine as _;
    let user = format!("agent-{}", &id[..8.min(id.len())]);
    let password = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let password = &password[..48];
    let accounts = ResourcePath::parse(crate::auth::ACCOUNTS)?;
    let path = accounts.child(&user)?;
    match core.get(&path).await {
        Ok(_) => {
            core.patch(&path, json!({"Password": password}), None).await?;
        }
        Err(Error::NotFound { .. }) => {
            let body = json!({"@odata.type": "#ManagerAccount.v1_14_1.ManagerAccount", "Id": user, "UserName": user,
                "Password": password, "RoleId": "Operator", "Enabled": true,
                "Description": format!("Account of the agent registered as AggregationSource {id}")});
            core.create(&accounts, body).await?;
        }
        Err(e) => return Err(e),
    }
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    Ok((path.to_string(), format!("Basic {token}")))
}

/// The event handler that feeds agent events to the aggregator (dispatch keys
/// `AggregationSourceDiscovered`, `ResourceCreated`, `ResourceChanged`, `ResourceRemoved`).
pub(crate) struct AgentEvents(pub(crate) Arc<Aggregator>);

/// The MessageId keys [`AgentEvents`] handles.
pub(crate) const AGENT_EVENT_KEYS: [&str; 4] =
    ["AggregationSourceDiscovered", "ResourceCreated", "ResourceChanged", "ResourceRemoved"];

#[async_trait]
impl EventHandler for AgentEvents {
    async fn handle(&self, core: &Core, envelope: &EventEnvelope, event: &EventRecord) -> Result<()> {
        if event.key() == "AggregationSourceDiscovered" {
            return self.0.discovered(core, event).await;
        }
        // Events from anyone but a registered agent are plain events: routed only.
        let Some(agent) = self.0.sender(envelope) else { return Ok(()) };
        match event.key() {
            "ResourceCreated" => self.0.created(core, &agent, event).await,
            "ResourceChanged" => self.0.changed(core, &agent, event).await,
            "ResourceRemoved" => self.0.removed(core, &agent, event).await,
            _ => Ok(()),
        }
    }
}

/// Unregisters an agent when a client deletes its AggregationSource.
pub(crate) struct SourceHooks(pub(crate) Arc<Aggregator>);

#[async_trait]
impl ObjectHandler for SourceHooks {
    fn resource_types(&self) -> &[&str] {
        &["AggregationSource"]
    }

    async fn before(&self, core: &Core, op: &mut WriteOp) -> Result<()> {
        if op.operation == Operation::Delete {
            if let Some(id) = op.path.last() {
                self.0.unregister(core, id).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Topmost keeps paths without an ancestor in the set, on segment boundaries.
    #[test]
    fn topmost_paths() {
        let paths = ["/r/v1/F/CXL", "/r/v1/F/CXL/S/1", "/r/v1/F/CXL-2", "/r/v1/Sys/A", "/r/v1/Sys/A/M/1"];
        assert_eq!(topmost(paths.iter().copied()), vec!["/r/v1/F/CXL", "/r/v1/F/CXL-2", "/r/v1/Sys/A"]);
    }

    /// A crawl sees the forwarded writes made after it began, on the path or above it, and
    /// only those; the memory of writes is bounded.
    #[test]
    fn forwarded_writes_since_a_crawl_began() {
        let a = Agent::new(AgentRecord::default());
        a.forwarded_write("/redfish/v1/Fabrics/CXL/Connections/1", 1);
        a.forwarded_write("/redfish/v1/Fabrics/CXL/Zones/Z", 2);
        assert!(a.written_since("/redfish/v1/Fabrics/CXL/Connections/1", 0));
        assert!(!a.written_since("/redfish/v1/Fabrics/CXL/Connections/1", 1), "the crawl began after it");
        assert!(a.written_since("/redfish/v1/Fabrics/CXL/Zones/Z/Endpoints/E", 1), "below a written path");
        assert!(!a.written_since("/redfish/v1/Fabrics/CXL/Zones/Z2", 0), "segment boundaries");
        for seq in 3..3 + FORWARDED_KEPT as u64 {
            a.forwarded_write("/redfish/v1/Systems/S", seq);
        }
        assert_eq!(a.forwarded.lock().len(), FORWARDED_KEPT);
        assert!(!a.written_since("/redfish/v1/Fabrics/CXL/Zones/Z", 0), "the oldest were forgotten");
    }
}
