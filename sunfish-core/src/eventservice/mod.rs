//! The EventService: routes events to subscribers and delivers them, durably and asynchronously.
//!
//! Design. Every published envelope becomes one entry of an **event log** (private records
//! `eventlog/<seq>` in the storage backend, mirrored in memory), stamped with the Ids of the
//! subscriptions whose filters accepted at least one of its events ("targets"). Each
//! subscription has a **cursor** (`eventcursor/<id>`): the last sequence number delivered to it.
//! So each subscription sees one ordered queue (the log entries naming it after its cursor)
//! while each event is stored once; the same log, bounded, serves SSE replay (`Last-Event-ID`).
//! One worker task per subscription delivers in order with a per-attempt timeout and the
//! subscription's `DeliveryRetryPolicy`; a slow or dead destination only holds up its own
//! worker. Publishing is answered once the entry is stored, so accepted events survive a
//! restart; cursors are stored after each delivery (at-least-once; receivers drop duplicates
//! by `EventId`).
//!
//! Publishers overlap: EventIds are allocated under a short lock, entries are stored
//! concurrently (one group commit for many on the fs backend), and a sequencer
//! ([`sequencer`]) lets each entry into the in-memory log (hence to workers and SSE) only once
//! it is durable and in EventId order; an entry whose store failed is skipped. So a subscriber
//! never gets an event a crash could lose or whose EventId a restart could reuse.
//!
//! Filters are evaluated when an event is published, so a PATCH of a subscription's filters
//! applies to every later event; DELETE cancels the worker at once.

pub mod filter;
mod sequencer;
mod subscriptions;

use crate::metrics::DeliveryMetrics;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use tokio::sync::{broadcast, oneshot, watch, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use self::filter::{EventFacts, SubscriptionFilter};
use self::sequencer::Sequencer;
pub use self::subscriptions::{ResumeSubscription, SubmitTestEvent, SubscriptionHooks, SuspendSubscription};
use crate::outbound::OutboundPolicy;
use crate::{Notification, ResourcePath, Result, StorageBackend};

/// Where subscriptions live.
pub const SUBSCRIPTIONS: &str = "/redfish/v1/EventService/Subscriptions";
/// The EventService resource.
pub const EVENT_SERVICE: &str = "/redfish/v1/EventService";
/// `@odata.type` of delivered envelopes.
pub const EVENT_TYPE: &str = "#Event.v1_11_0.Event";
/// The ResourceEvent registry version used for events the service produces.
pub const RESOURCE_EVENT: &str = "ResourceEvent.1.4";

const NS_LOG: &str = "eventlog";
const NS_CURSOR: &str = "eventcursor";
const NS_SECRET: &str = "eventsecret";
/// Notification topic of a stored log entry (payload: its key).
const TOPIC_LOG: &str = "eventlog";
/// Notification topic of a created, changed or deleted subscription (payload: its Id).
const TOPIC_SUB: &str = "subscription";
/// Notification topic of a change to the EventService resource's settings.
const TOPIC_SETTINGS: &str = "eventservice";
/// The store-wide counter event ids come from.
const EVENT_IDS: &str = "eventid";
/// Log entries beyond `replay_limit` that make a publish trim the log: a log no worker drains
/// (no subscribers, only SSE) stays bounded, and is trimmed in batches, not per publish.
const TRIM_BATCH: usize = 64;

/// Delivers one envelope over HTTP. The server implements it with its HTTP client; tests use
/// fakes. Implementations must not follow redirects off the allowed hosts.
#[async_trait]
pub trait EventTransport: Send + Sync + 'static {
    /// POSTs `body` (JSON) to `destination` with extra `headers`; returns the HTTP status, or
    /// an error text when no answer came within `timeout`.
    async fn post(
        &self,
        destination: &str,
        headers: &[(String, String)],
        body: Bytes,
        timeout: Duration,
    ) -> std::result::Result<u16, String>;
}

/// Tuning of the EventService (config section `[events]`).
#[derive(Debug, Clone)]
pub struct EventServiceConfig {
    /// Events waiting per subscription before new ones are dropped for it (counted).
    pub queue_limit: usize,
    /// Log entries kept for SSE replay after every subscriber has them.
    pub replay_limit: usize,
    /// Timeout of one delivery attempt.
    pub attempt_timeout: Duration,
    /// Longest wait between attempts under `RetryForeverWithBackoff`.
    pub max_backoff: Duration,
    /// How often delivery counters are written to the subscription resources.
    pub counters_interval: Duration,
    /// Most subscriptions the service accepts.
    pub max_subscriptions: usize,
    /// Hosts event destinations may point at.
    pub outbound: OutboundPolicy,
}

impl Default for EventServiceConfig {
    fn default() -> Self {
        EventServiceConfig {
            queue_limit: 100_000,
            replay_limit: 1_000,
            attempt_timeout: Duration::from_secs(10),
            max_backoff: Duration::from_secs(300),
            counters_interval: Duration::from_secs(1),
            max_subscriptions: 1_000,
            outbound: OutboundPolicy::default(),
        }
    }
}

/// An event to publish.
#[derive(Debug, Clone, Default)]
pub struct NewEvent {
    /// Full MessageId (`ResourceEvent.1.4.ResourceCreated`).
    pub message_id: String,
    /// Message text, if known.
    pub message: Option<String>,
    /// `MessageArgs`.
    pub message_args: Vec<Value>,
    /// `MessageSeverity` (`OK`, `Warning`, `Critical`).
    pub severity: String,
    /// `OriginOfCondition`.
    pub origin: Option<ResourcePath>,
    /// Type name of the origin (looked up in storage when `None`).
    pub origin_type: Option<String>,
    /// The event as received (for `/EventListener` intake); its members are kept, identity
    /// members (`EventId`, `EventTimestamp`) are ours.
    pub raw: Option<Value>,
}

impl NewEvent {
    /// A ResourceEvent (`ResourceCreated`, `ResourceChanged`, `ResourceRemoved`, ...) about
    /// `origin`.
    pub fn resource(key: &str, message: &str, origin: &ResourcePath, origin_type: Option<&str>) -> Self {
        NewEvent {
            message_id: format!("{RESOURCE_EVENT}.{key}"),
            message: Some(message.to_string()),
            severity: "OK".into(),
            origin: Some(origin.clone()),
            origin_type: origin_type.map(str::to_string),
            ..Default::default()
        }
    }
}

/// One stored log entry: an envelope's events, stamped, with the subscriptions it is for.
/// Events are kept as compact JSON text (not `Value` trees) and subscription Ids are shared
/// with the registry, so a queued event costs about its own size in memory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogEntry {
    /// Sequence number of the first event; events get `first_seq + index` as `EventId`.
    pub first_seq: u64,
    /// The events as delivered (with `EventId`, `EventTimestamp`), as JSON text.
    pub events: Vec<Box<RawValue>>,
    /// Filter facts per event (MessageId, origin, origin type), for SSE filtering.
    pub facts: Vec<Facts>,
    /// The subscriptions the entry is for, sorted by Id.
    pub targets: Vec<Target>,
}

/// One subscription an entry is for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    /// Subscription Id.
    pub id: Arc<str>,
    /// Indexes of its matching events; `None` when every event of the entry matches.
    pub events: Option<Vec<u16>>,
}

/// What filters look at, stored with the entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Facts {
    /// MessageId.
    pub message_id: String,
    /// OriginOfCondition.
    pub origin: Option<String>,
    /// Type name of the origin.
    pub origin_type: Option<String>,
}

impl LogEntry {
    /// The target entry of subscription `id`.
    pub fn target(&self, id: &str) -> Option<&Target> {
        self.targets.binary_search_by(|t| (*t.id).cmp(id)).ok().map(|i| &self.targets[i])
    }

    /// Whether the entry is for subscription `id`.
    pub fn is_for(&self, id: &str) -> bool {
        self.target(id).is_some()
    }

    /// Sequence number of the last event.
    pub fn last_seq(&self) -> u64 {
        self.first_seq + self.events.len().saturating_sub(1) as u64
    }
}

/// How a subscription reacts to failed deliveries (`DeliveryRetryPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryPolicy {
    /// Delete the subscription after `DeliveryRetryAttempts` retries.
    TerminateAfterRetries,
    /// Suspend it (keeping its queue) until resumed.
    SuspendRetries,
    /// Retry at the interval forever.
    RetryForever,
    /// Retry forever, doubling the wait up to the configured maximum.
    RetryForeverWithBackoff,
}

impl RetryPolicy {
    /// Parses the schema's enum value.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "TerminateAfterRetries" => RetryPolicy::TerminateAfterRetries,
            "SuspendRetries" => RetryPolicy::SuspendRetries,
            "RetryForever" => RetryPolicy::RetryForever,
            "RetryForeverWithBackoff" => RetryPolicy::RetryForeverWithBackoff,
            _ => return None,
        })
    }
}

/// Delivery counters of one subscription, shown as `Oem.Sunfish.Delivery`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Envelopes delivered (2xx).
    pub delivered: AtomicU64,
    /// Failed attempts that were retried or ended the subscription.
    pub retried: AtomicU64,
    /// Events not queued because the queue was full.
    pub dropped: AtomicU64,
    /// Envelopes waiting.
    pub pending: AtomicUsize,
}

/// Settings of one subscription, replaced as a whole when it is PATCHed.
#[derive(Debug, Clone)]
struct SubSettings {
    destination: String,
    context: Option<String>,
    headers: Vec<(String, String)>,
    filter: SubscriptionFilter,
    policy: RetryPolicy,
}

/// A registered subscription.
struct Subscription {
    id: Arc<str>,
    path: ResourcePath,
    settings: RwLock<SubSettings>,
    counters: Counters,
    /// Last delivered sequence number.
    cursor: AtomicU64,
    /// Entries for this subscription at or below the cursor that reached this process after
    /// the cursor passed them (published by another instance while this one delivered newer
    /// ones); delivered next, out of order, so none is lost.
    late: Mutex<BTreeSet<u64>>,
    /// Enabled (true) or Suspended (false).
    enabled: watch::Sender<bool>,
    wake: Notify,
    cancel: CancellationToken,
    /// Counter values last written to the resource.
    flushed: Mutex<(u64, u64, u64, usize)>,
}

/// EventService settings from its resource (`ServiceEnabled`, retry attempts and interval).
#[derive(Debug, Clone, Copy)]
struct ServiceSettings {
    enabled: bool,
    retry_attempts: u32,
    retry_interval: Duration,
}

/// The EventService. Shared (`Arc`) by the core, the subscription hooks and the HTTP layer.
pub struct EventService {
    storage: Arc<dyn StorageBackend>,
    transport: Arc<dyn EventTransport>,
    config: EventServiceConfig,
    settings: RwLock<ServiceSettings>,
    subs: RwLock<HashMap<String, Arc<Subscription>>>,
    log: RwLock<BTreeMap<u64, Arc<LogEntry>>>,
    /// Held by a publisher only while it allocates its EventIds and reserves them in
    /// `sequencer` (and, on a shared store, syncs the subscriptions), so reservations come in
    /// EventId order; storing the entries runs outside it, concurrently.
    publish_lock: tokio::sync::Mutex<()>,
    /// EventIds allocated here whose entries are not in `log` yet. Entries are put into `log`,
    /// queued for subscribers and sent to SSE while this lock is held, so they enter in EventId
    /// order, each once it is durable. Lock order: `sequencer` before `log`, `subs`, `late`.
    sequencer: Mutex<Sequencer<Arc<LogEntry>>>,
    /// The next EventId this process would hand out (the floor of store-wide allocation).
    next_seq: AtomicU64,
    sse: broadcast::Sender<Arc<LogEntry>>,
    shutdown: CancellationToken,
    /// HttpHeaders of subscriptions being created, until their resource exists.
    pending_secrets: Mutex<HashMap<ResourcePath, Vec<(String, String)>>>,
    /// Whether this instance delivers (see [`StorageBackend::leadership`]).
    leader: watch::Receiver<bool>,
    /// This service, for tasks started from `&self` methods.
    me: Weak<EventService>,
    /// Delivery outcomes, service-wide (`/metrics`).
    metrics: DeliveryMetrics,
}

fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(1)
}

/// RFC 3339 time of now, for `EventTimestamp`.
fn timestamp() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string().replace('Z', "+00:00")
}

fn seq_key(seq: u64) -> String {
    format!("{seq:020}")
}

impl EventService {
    /// Creates the service; call [`EventService::start`] inside the runtime before use.
    pub fn new(
        storage: Arc<dyn StorageBackend>,
        transport: Arc<dyn EventTransport>,
        config: EventServiceConfig,
    ) -> Arc<Self> {
        let (sse, _) = broadcast::channel(1024);
        let leader = storage.leadership();
        Arc::new_cyclic(|me| EventService {
            storage,
            transport,
            config,
            settings: RwLock::new(ServiceSettings {
                enabled: true,
                retry_attempts: 3,
                retry_interval: Duration::from_secs(60),
            }),
            subs: RwLock::new(HashMap::new()),
            log: RwLock::new(BTreeMap::new()),
            publish_lock: tokio::sync::Mutex::new(()),
            sequencer: Mutex::new(Sequencer::default()),
            next_seq: AtomicU64::new(now_micros()),
            sse,
            shutdown: CancellationToken::new(),
            pending_secrets: Mutex::new(HashMap::new()),
            leader,
            me: me.clone(),
            metrics: DeliveryMetrics::default(),
        })
    }

    /// Delivery outcome counters (registered with the core's metrics).
    pub fn metrics(&self) -> &DeliveryMetrics {
        &self.metrics
    }

    /// Events waiting for delivery, summed over subscriptions.
    pub fn queued(&self) -> usize {
        self.subs.read().values().map(|s| s.counters.pending.load(Ordering::Relaxed)).sum()
    }

    /// The configuration.
    pub fn config(&self) -> &EventServiceConfig {
        &self.config
    }

    /// Loads the log, the service settings and every stored subscription, and starts their
    /// workers and the counter flusher.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn start(self: &Arc<Self>) -> Result<()> {
        self.reload_settings().await;
        let mut max_seq = 0;
        for (_, v) in self.storage.kv_list(NS_LOG).await? {
            let parsed = match &v {
                Value::String(text) => serde_json::from_str::<LogEntry>(text),
                other => serde_json::from_value::<LogEntry>(other.clone()),
            };
            match parsed {
                Ok(e) => {
                    max_seq = max_seq.max(e.last_seq());
                    self.log.write().insert(e.first_seq, Arc::new(e));
                }
                Err(e) => warn!(error = %e, "dropping unreadable event log entry"),
            }
        }
        self.next_seq.fetch_max(max_seq + 1, Ordering::SeqCst);
        let subs = ResourcePath::parse(SUBSCRIPTIONS)?;
        for p in self.storage.children(&subs).await? {
            match self.storage.get(&p).await {
                Ok(r) if r.type_name() == Some("EventDestination") => {
                    if let Err(e) = self.register(&p, &r.value()).await {
                        warn!(subscription = %p, error = %e, "stored subscription not loaded");
                    }
                }
                _ => {}
            }
        }
        let me = self.clone();
        tokio::spawn(async move { me.flush_counters_loop().await });
        if let Some(rx) = self.storage.notifications() {
            let me = self.clone();
            tokio::spawn(async move { me.follow(rx).await });
        }
        let me = self.clone();
        tokio::spawn(async move { me.follow_leadership().await });
        info!(subscriptions = self.subs.read().len(), log = self.log.read().len(), "event service started");
        Ok(())
    }

    /// Stops every worker (at shutdown).
    pub fn stop(&self) {
        self.shutdown.cancel();
    }

    /// Re-reads `ServiceEnabled`, `DeliveryRetryAttempts` and `DeliveryRetryIntervalSeconds`.
    pub async fn reload_settings(&self) {
        let Ok(path) = ResourcePath::parse(EVENT_SERVICE) else { return };
        if let Ok(r) = self.storage.get(&path).await {
            let v = r.value();
            let mut s = self.settings.write();
            s.enabled = v.get("ServiceEnabled").and_then(Value::as_bool).unwrap_or(true);
            if let Some(n) = v.get("DeliveryRetryAttempts").and_then(Value::as_u64) {
                s.retry_attempts = n.min(u64::from(u32::MAX)) as u32;
            }
            if let Some(n) = v.get("DeliveryRetryIntervalSeconds").and_then(Value::as_u64) {
                s.retry_interval = Duration::from_secs(n);
            }
        }
    }

    /// Publishes the events of one envelope: stamps them, stores the log entry, and wakes the
    /// workers of the subscriptions they are for. Returns those subscription Ids (sorted).
    ///
    /// Answered once the entry is durable and in the log. Publishers overlap: only the EventId
    /// allocation is serialized (`publish_lock`); the entries are stored concurrently (the fs
    /// backend makes concurrent writes durable with one fsync) and the sequencer lets each into
    /// the log, the subscribers' queues and SSE in EventId order, once it and every smaller one
    /// allocated here are stored (or failed). Once its store has started, a dropped call still
    /// completes it, so a cancelled request never holds up later events.
    ///
    /// # Errors
    /// Storage failures while allocating EventIds or storing the entry.
    pub async fn publish(&self, events: Vec<NewEvent>) -> Result<Vec<String>> {
        if events.is_empty() || events.len() > usize::from(u16::MAX) || !self.settings.read().enabled {
            return Ok(Vec::new());
        }
        let Some(me) = self.me.upgrade() else {
            return Err(crate::Error::Internal { message: "event service dropped".into() });
        };
        let count = events.len() as u64;
        let (reservation, released) = {
            let _guard = self.publish_lock.lock().await;
            let first_seq = match self.storage.allocate(EVENT_IDS, count, self.next_seq.load(Ordering::SeqCst)).await? {
                Some(first) => {
                    self.next_seq.fetch_max(first + count, Ordering::SeqCst);
                    first
                }
                None => self.next_seq.fetch_add(count, Ordering::SeqCst),
            };
            let released = self.sequencer.lock().reserve(first_seq);
            // Whatever happens to this call from here on, the id is completed (or skipped).
            let reservation = Reservation { service: me, seq: first_seq, done: false };
            if self.storage.shared() {
                self.sync_subscriptions().await;
            }
            (reservation, released)
        };
        let entry = self.build_entry(reservation.seq, events).await?;
        let ids: Vec<String> = entry.targets.iter().map(|t| t.id.to_string()).collect();
        // Stored as one JSON string: a single allocation in memory-backed stores.
        let text = serde_json::to_string(&entry).map_err(|e| crate::Error::Internal { message: e.to_string() })?;
        let stored = tokio::spawn(reservation.store(Arc::new(entry), text, released)).await;
        match stored {
            Ok(result) => result.map(|()| ids),
            Err(e) => Err(crate::Error::Internal { message: format!("storing an event log entry failed: {e}") }),
        }
    }

    /// Stamps `events` with EventIds from `first_seq` and finds the subscriptions they are for.
    async fn build_entry(&self, first_seq: u64, events: Vec<NewEvent>) -> Result<LogEntry> {
        let ts = timestamp();
        let mut facts = Vec::with_capacity(events.len());
        let mut records = Vec::with_capacity(events.len());
        for (i, e) in events.into_iter().enumerate() {
            let origin_type = match (&e.origin_type, &e.origin) {
                (Some(t), _) => Some(t.clone()),
                (None, Some(o)) => self.storage.get(o).await.ok().and_then(|r| r.type_name().map(str::to_string)),
                _ => None,
            };
            let mut rec = match e.raw {
                Some(Value::Object(m)) => m,
                _ => Map::new(),
            };
            rec.insert("EventId".into(), Value::String((first_seq + i as u64).to_string()));
            rec.insert("EventTimestamp".into(), Value::String(ts.clone()));
            rec.insert("MessageId".into(), Value::String(e.message_id.clone()));
            if let Some(m) = &e.message {
                rec.entry("Message").or_insert_with(|| Value::String(m.clone()));
            }
            if !e.message_args.is_empty() {
                rec.insert("MessageArgs".into(), Value::Array(e.message_args.clone()));
            }
            if !e.severity.is_empty() {
                rec.entry("MessageSeverity").or_insert_with(|| Value::String(e.severity.clone()));
            }
            if let Some(o) = &e.origin {
                rec.insert("OriginOfCondition".into(), json!({"@odata.id": o.as_str()}));
            }
            let text = serde_json::to_string(&rec).map_err(|e| crate::Error::Internal { message: e.to_string() })?;
            records.push(RawValue::from_string(text).map_err(|e| crate::Error::Internal { message: e.to_string() })?);
            facts.push(Facts { message_id: e.message_id, origin: e.origin.map(|o| o.to_string()), origin_type });
        }
        let mut targets = Vec::new();
        let subs: Vec<Arc<Subscription>> = self.subs.read().values().cloned().collect();
        for sub in &subs {
            let filter = sub.settings.read().filter.clone();
            let idx: Vec<usize> = facts
                .iter()
                .enumerate()
                .filter(|(_, f)| {
                    let origin = f.origin.as_deref().and_then(|o| ResourcePath::parse(o).ok());
                    filter.matches(&EventFacts {
                        message_id: &f.message_id,
                        origin: origin.as_ref(),
                        origin_type: f.origin_type.as_deref(),
                    })
                })
                .map(|(i, _)| i)
                .collect();
            if idx.is_empty() {
                continue;
            }
            if sub.counters.pending.load(Ordering::SeqCst) >= self.config.queue_limit {
                sub.counters.dropped.fetch_add(idx.len() as u64, Ordering::Relaxed);
                self.metrics.dropped(idx.len() as u64);
                continue;
            }
            let events = if idx.len() == facts.len() {
                None
            } else {
                Some(idx.iter().map(|i| u16::try_from(*i).unwrap_or(u16::MAX)).collect())
            };
            targets.push(Target { id: sub.id.clone(), events });
        }
        targets.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(LogEntry { first_seq, events: records, facts, targets })
    }

    /// Records the outcome of storing the entry of `seq` (`None`: not stored) and puts every
    /// entry whose turn came into the log, the subscribers' queues and SSE, in EventId order.
    fn finish(&self, seq: u64, entry: Option<Arc<LogEntry>>) {
        // Held while releasing, so two finishing publishers cannot interleave their releases.
        let mut sequencer = self.sequencer.lock();
        for r in sequencer.complete(seq, entry) {
            if self.enqueue(&r.item) {
                let _ = self.sse.send(r.item.clone());
            }
            r.signal();
        }
    }

    /// Puts a durable entry into the log and queues it for the subscriptions it is for, unless
    /// the log has it already; returns whether it was new. For a subscriber whose cursor is
    /// already past it (another instance's entry that arrived late), it goes to the `late` set
    /// and is delivered next.
    fn enqueue(&self, entry: &Arc<LogEntry>) -> bool {
        {
            let mut log = self.log.write();
            if log.contains_key(&entry.first_seq) {
                return false;
            }
            log.insert(entry.first_seq, entry.clone());
        }
        self.next_seq.fetch_max(entry.last_seq() + 1, Ordering::SeqCst);
        let subs = self.subs.read();
        for target in &entry.targets {
            if let Some(sub) = subs.get(&*target.id) {
                sub.counters.pending.fetch_add(1, Ordering::SeqCst);
                if entry.first_seq <= sub.cursor.load(Ordering::SeqCst) {
                    sub.late.lock().insert(entry.first_seq);
                }
                sub.wake.notify_one();
            }
        }
        true
    }

    /// The EventId up to which every entry allocated here is in the log (or failed): a new
    /// subscription's cursor, so it also gets the entries still being stored that are for it.
    fn last_released(&self) -> u64 {
        // next_seq first: an id allocated after this read is larger; one allocated before is
        // either still held by the sequencer below or already in the log.
        let next = self.next_seq.load(Ordering::SeqCst);
        let held = self.sequencer.lock().oldest().unwrap_or(u64::MAX);
        next.min(held).saturating_sub(1)
    }

    /// For SSE: a receiver of new entries, then the stored entries after `after` (replay).
    /// Subscribe first, replay second, and skip duplicates by sequence number.
    pub fn sse_subscribe(&self, after: Option<u64>) -> (broadcast::Receiver<Arc<LogEntry>>, Vec<Arc<LogEntry>>) {
        let rx = self.sse.subscribe();
        let replay = match after {
            Some(seq) => self.log.read().values().filter(|e| e.last_seq() > seq).cloned().collect(),
            None => Vec::new(),
        };
        (rx, replay)
    }

    /// Ids of the registered subscriptions, sorted.
    pub fn subscription_ids(&self) -> Vec<String> {
        let mut v: Vec<String> = self.subs.read().keys().cloned().collect();
        v.sort();
        v
    }

    /// `(delivered, retried, dropped, pending)` of a subscription.
    pub fn counters(&self, id: &str) -> Option<(u64, u64, u64, usize)> {
        self.subs.read().get(id).map(|s| {
            (
                s.counters.delivered.load(Ordering::Relaxed),
                s.counters.retried.load(Ordering::Relaxed),
                s.counters.dropped.load(Ordering::Relaxed),
                s.counters.pending.load(Ordering::SeqCst),
            )
        })
    }

    /// Reads the settings of a subscription from its resource and stored secret.
    async fn settings_of(&self, path: &ResourcePath, v: &Value) -> Result<SubSettings> {
        let id = path.last().unwrap_or_default();
        let headers = match self.storage.kv_get(NS_SECRET, id).await? {
            Some(h) => serde_json::from_value(h).unwrap_or_default(),
            None => Vec::new(),
        };
        let policy = v
            .get("DeliveryRetryPolicy")
            .and_then(Value::as_str)
            .and_then(RetryPolicy::parse)
            .unwrap_or(RetryPolicy::TerminateAfterRetries);
        Ok(SubSettings {
            destination: v.get("Destination").and_then(Value::as_str).unwrap_or_default().to_string(),
            context: v.get("Context").and_then(Value::as_str).map(str::to_string),
            headers,
            filter: SubscriptionFilter::from_destination(v)?,
            policy,
        })
    }

    /// Registers (or re-reads) the subscription stored at `path` and starts its worker.
    async fn register(self: &Arc<Self>, path: &ResourcePath, v: &Value) -> Result<()> {
        let id = path.last().unwrap_or_default().to_string();
        let settings = self.settings_of(path, v).await?;
        if let Some(existing) = self.subs.read().get(&id).cloned() {
            *existing.settings.write() = settings;
            let enabled = v.pointer("/Status/State").and_then(Value::as_str) != Some("Suspended");
            existing.enabled.send_if_modified(|e| std::mem::replace(e, enabled) != enabled);
            existing.wake.notify_one();
            return Ok(());
        }
        let cursor = match self.storage.kv_get(NS_CURSOR, &id).await? {
            Some(c) => c.as_u64().unwrap_or(0),
            None => {
                let c = self.last_released();
                self.storage.kv_put(NS_CURSOR, &id, json!(c)).await?;
                c
            }
        };
        let enabled = v.pointer("/Status/State").and_then(Value::as_str) != Some("Suspended");
        let pending = self.log.read().values().filter(|e| e.first_seq > cursor && e.is_for(&id)).count();
        let sub = Arc::new(Subscription {
            id: Arc::from(id.as_str()),
            path: path.clone(),
            settings: RwLock::new(settings),
            counters: Counters { pending: AtomicUsize::new(pending), ..Default::default() },
            cursor: AtomicU64::new(cursor),
            late: Mutex::new(BTreeSet::new()),
            enabled: watch::channel(enabled).0,
            wake: Notify::new(),
            cancel: self.shutdown.child_token(),
            flushed: Mutex::new((0, 0, 0, usize::MAX)),
        });
        self.subs.write().insert(id, sub.clone());
        let me = self.clone();
        tokio::spawn(async move { me.worker(sub).await });
        Ok(())
    }

    /// Removes a subscription: stops its worker at once and forgets its cursor and secret.
    async fn unregister(&self, id: &str) {
        self.forget(id);
        let _ = self.storage.kv_delete(NS_CURSOR, id).await;
        let _ = self.storage.kv_delete(NS_SECRET, id).await;
        self.trim();
    }

    /// Stops a subscription's worker and drops it from this process only (another instance
    /// deleted it and its records).
    fn forget(&self, id: &str) {
        if let Some(sub) = self.subs.write().remove(id) {
            sub.cancel.cancel();
        }
    }

    /// Tells the other instances that the EventService settings changed.
    pub(crate) async fn announce_settings(&self) {
        if self.storage.shared() {
            if let Err(e) = self.storage.notify(TOPIC_SETTINGS, "").await {
                warn!(error = %e, "EventService settings notification not sent");
            }
        }
    }

    /// Tells the other instances that subscription `id` changed.
    pub(crate) async fn announce(&self, id: &str) {
        if self.storage.shared() {
            if let Err(e) = self.storage.notify(TOPIC_SUB, id).await {
                warn!(subscription = %id, error = %e, "subscription change notification not sent");
            }
        }
    }

    /// Registers the stored subscriptions this process does not know yet (created through
    /// another instance whose notification has not arrived), so an entry published here is
    /// for every subscriber.
    ///
    /// Boxed: registering starts workers whose terminations publish, which syncs again.
    fn sync_subscriptions(&self) -> crate::BoxFuture<'_, ()> {
        Box::pin(self.sync_subscriptions_inner())
    }

    async fn sync_subscriptions_inner(&self) {
        let Some(me) = self.me.upgrade() else { return };
        let Ok(subs) = ResourcePath::parse(SUBSCRIPTIONS) else { return };
        let Ok(paths) = self.storage.children(&subs).await else { return };
        for p in paths {
            let id = p.last().unwrap_or_default();
            if self.subs.read().contains_key(id) {
                continue;
            }
            if let Ok(r) = self.storage.get(&p).await {
                if r.type_name() == Some("EventDestination") {
                    if let Err(e) = me.register(&p, &r.value()).await {
                        warn!(subscription = %p, error = %e, "stored subscription not loaded");
                    }
                }
            }
        }
    }

    /// Takes in what other instances announce: their log entries (delivered from here when
    /// this instance leads, streamed to SSE clients here either way) and subscription changes.
    async fn follow(self: Arc<Self>, mut rx: broadcast::Receiver<Notification>) {
        loop {
            let n = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                n = rx.recv() => n,
            };
            match n {
                Ok(n) if n.topic == TOPIC_LOG => self.take_entry(&n.payload).await,
                Ok(n) if n.topic == TOPIC_SUB => self.take_subscription(&n.payload).await,
                Ok(n) if n.topic == TOPIC_SETTINGS => self.reload_settings().await,
                Ok(n) if n.topic == "*" => {
                    // The store's notification channel was re-established: changes may be missed.
                    self.reload_settings().await;
                    self.catch_up().await;
                    self.sync_subscriptions().await;
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    warn!(missed, "notifications missed; catching up from the store");
                    self.catch_up().await;
                    self.sync_subscriptions().await;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Loads the stored log entry `key` and queues it like a local one.
    async fn take_entry(&self, key: &str) {
        let entry = match self.storage.kv_get(NS_LOG, key).await {
            Ok(Some(Value::String(text))) => serde_json::from_str::<LogEntry>(&text),
            Ok(Some(other)) => serde_json::from_value::<LogEntry>(other),
            Ok(None) => return, // already trimmed: every subscriber had it
            Err(e) => {
                warn!(entry = key, error = %e, "announced event log entry not read");
                return;
            }
        };
        match entry {
            Ok(e) => {
                if let Some(e) = self.insert_remote(e) {
                    let _ = self.sse.send(e);
                }
            }
            Err(e) => warn!(entry = key, error = %e, "announced event log entry unreadable"),
        }
    }

    /// Adds an entry another instance published to the log, unless it is there already;
    /// returns it when it was new. An entry of this process read back from the store (a
    /// catch-up) while the sequencer still holds it is left to the sequencer, which releases it
    /// in order.
    fn insert_remote(&self, entry: LogEntry) -> Option<Arc<LogEntry>> {
        let sequencer = self.sequencer.lock();
        if sequencer.holds(entry.first_seq) {
            return None;
        }
        let entry = Arc::new(entry);
        let new = self.enqueue(&entry);
        drop(sequencer);
        new.then_some(entry)
    }

    /// Reads every stored log entry this process lacks.
    async fn catch_up(&self) {
        match self.storage.kv_list(NS_LOG).await {
            Ok(entries) => {
                for (key, v) in entries {
                    let Some(seq) = key.parse::<u64>().ok() else { continue };
                    if self.log.read().contains_key(&seq) {
                        continue;
                    }
                    let parsed = match v {
                        Value::String(text) => serde_json::from_str::<LogEntry>(&text),
                        other => serde_json::from_value::<LogEntry>(other),
                    };
                    if let Ok(e) = parsed {
                        self.insert_remote(e);
                    }
                }
            }
            Err(e) => warn!(error = %e, "event log not read from the store"),
        }
    }

    /// Follows a subscription another instance created, changed or deleted.
    async fn take_subscription(&self, id: &str) {
        let Some(me) = self.me.upgrade() else { return };
        let Ok(path) = ResourcePath::parse(&format!("{SUBSCRIPTIONS}/{id}")) else { return };
        match self.storage.get(&path).await {
            Ok(r) if r.type_name() == Some("EventDestination") => {
                if let Err(e) = me.register(&path, &r.value()).await {
                    warn!(subscription = %id, error = %e, "announced subscription not loaded");
                }
            }
            Ok(_) => {}
            Err(_) => self.forget(id),
        }
    }

    /// On becoming leader: reads what the previous leader left (entries, cursors) so delivery
    /// resumes after the last event it confirmed; an event it sent but did not confirm is
    /// sent again with the same EventId (at least once).
    async fn follow_leadership(self: Arc<Self>) {
        let mut rx = self.leader.clone();
        let mut was = *rx.borrow_and_update();
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                changed = rx.changed() => if changed.is_err() { return },
            }
            let now = *rx.borrow_and_update();
            if now && !was {
                info!("this instance now delivers events");
                self.catch_up().await;
                self.sync_subscriptions().await;
                let subs: Vec<Arc<Subscription>> = self.subs.read().values().cloned().collect();
                for sub in subs {
                    if let Ok(Some(c)) = self.storage.kv_get(NS_CURSOR, &sub.id).await {
                        let c = c.as_u64().unwrap_or(0);
                        sub.cursor.store(c, Ordering::SeqCst);
                        sub.late.lock().retain(|s| *s > c);
                        let pending = self.log.read().values().filter(|e| e.first_seq > c && e.is_for(&sub.id)).count();
                        sub.counters.pending.store(pending, Ordering::SeqCst);
                    }
                    sub.wake.notify_one();
                }
            } else if !now && was {
                warn!("this instance no longer delivers events (leadership lost)");
            }
            was = now;
        }
    }

    /// Sets a subscription's state (Suspend/Resume actions, SuspendRetries), in memory and on
    /// its resource.
    async fn set_enabled(&self, id: &str, enabled: bool) -> Result<bool> {
        let Some(sub) = self.subs.read().get(id).cloned() else { return Ok(false) };
        sub.enabled.send_replace(enabled);
        sub.wake.notify_one();
        let state = if enabled { "Enabled" } else { "Suspended" };
        self.storage.patch(&sub.path, json!({"Status": {"State": state}}), None).await?;
        self.announce(id).await;
        Ok(true)
    }

    /// The next log entry for `sub` after its cursor.
    fn next_for(&self, sub: &Subscription) -> Option<Arc<LogEntry>> {
        loop {
            let late = sub.late.lock().first().copied();
            let Some(seq) = late else { break };
            if let Some(e) = self.log.read().get(&seq).cloned() {
                return Some(e);
            }
            sub.late.lock().remove(&seq);
        }
        let cursor = sub.cursor.load(Ordering::SeqCst);
        self.log.read().range(cursor + 1..).map(|(_, e)| e).find(|e| e.is_for(&sub.id)).cloned()
    }

    /// Delivers `sub`'s queue in order until it is cancelled.
    async fn worker(self: Arc<Self>, sub: Arc<Subscription>) {
        let mut enabled_rx = sub.enabled.subscribe();
        let mut leader_rx = self.leader.clone();
        loop {
            if sub.cancel.is_cancelled() {
                return;
            }
            if !*leader_rx.borrow_and_update() {
                tokio::select! {
                    _ = sub.cancel.cancelled() => return,
                    changed = leader_rx.changed() => if changed.is_err() { return },
                }
                continue;
            }
            if !*enabled_rx.borrow_and_update() {
                tokio::select! {
                    _ = sub.cancel.cancelled() => return,
                    _ = enabled_rx.changed() => continue,
                }
            }
            let Some(entry) = self.next_for(&sub) else {
                tokio::select! {
                    _ = sub.cancel.cancelled() => return,
                    _ = sub.wake.notified() => continue,
                }
            };
            if !self.deliver_with_retries(&sub, &entry).await {
                return;
            }
        }
    }

    /// Delivers one entry, retrying per policy. Returns false when the worker must stop
    /// (cancelled or the subscription was terminated).
    async fn deliver_with_retries(&self, sub: &Arc<Subscription>, entry: &LogEntry) -> bool {
        let mut failures: u32 = 0;
        loop {
            let settings = sub.settings.read().clone();
            let body = envelope(entry, &sub.id, settings.context.as_deref());
            let result = tokio::select! {
                _ = sub.cancel.cancelled() => return false,
                r = self.transport.post(&settings.destination, &settings.headers, body, self.config.attempt_timeout) => r,
            };
            match result {
                Ok(status) if (200..300).contains(&status) => {
                    sub.counters.delivered.fetch_add(1, Ordering::Relaxed);
                    self.metrics.delivered();
                    let _ = sub.counters.pending.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |p| p.checked_sub(1));
                    if sub.late.lock().remove(&entry.first_seq) {
                        return true; // a late entry: the cursor is already past it
                    }
                    sub.cursor.store(entry.last_seq(), Ordering::SeqCst);
                    if let Err(e) = self.storage.kv_put(NS_CURSOR, &sub.id, json!(entry.last_seq())).await {
                        warn!(subscription = %sub.id, error = %e, "cursor not stored");
                    }
                    self.trim();
                    return true;
                }
                other => {
                    failures += 1;
                    sub.counters.retried.fetch_add(1, Ordering::Relaxed);
                    self.metrics.failed();
                    let service = *self.settings.read();
                    debug!(subscription = %sub.id, attempt = failures, result = ?other, "delivery failed");
                    let exhausted = failures > service.retry_attempts;
                    let wait = match settings.policy {
                        RetryPolicy::TerminateAfterRetries if exhausted => {
                            warn!(subscription = %sub.id, "delivery retries exhausted; deleting subscription");
                            self.metrics.given_up();
                            self.terminate(sub).await;
                            return false;
                        }
                        RetryPolicy::SuspendRetries if exhausted => {
                            warn!(subscription = %sub.id, "delivery retries exhausted; suspending subscription");
                            self.metrics.given_up();
                            if let Err(e) = self.set_enabled(&sub.id, false).await {
                                warn!(subscription = %sub.id, error = %e, "suspend not stored");
                            }
                            return true; // the worker loop waits for a resume, then retries
                        }
                        RetryPolicy::RetryForeverWithBackoff => {
                            let factor = 1u32.checked_shl(failures.saturating_sub(1).min(16)).unwrap_or(u32::MAX);
                            service.retry_interval.saturating_mul(factor).min(self.config.max_backoff)
                        }
                        _ => service.retry_interval,
                    };
                    tokio::select! {
                        _ = sub.cancel.cancelled() => return false,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    /// Deletes a subscription whose retries ran out, and tells the other subscribers.
    async fn terminate(&self, sub: &Arc<Subscription>) {
        self.unregister(&sub.id).await;
        let deleted = self.storage.delete(&sub.path, None).await;
        self.announce(&sub.id).await;
        match deleted {
            Ok(_) => {
                let ev = NewEvent::resource(
                    "ResourceRemoved",
                    "The resource was removed successfully.",
                    &sub.path,
                    Some("EventDestination"),
                );
                if let Err(e) = self.publish(vec![ev]).await {
                    warn!(error = %e, "ResourceRemoved for a terminated subscription not published");
                }
            }
            Err(e) => warn!(subscription = %sub.id, error = %e, "terminated subscription not deleted"),
        }
    }

    /// Drops log entries every subscriber has received, keeping the newest `replay_limit`.
    fn trim(&self) {
        // Per subscriber: its cursor and the late entries it still has to get (usually none).
        let subs: Vec<(Arc<str>, u64, BTreeSet<u64>)> = self
            .subs
            .read()
            .values()
            .map(|s| (s.id.clone(), s.cursor.load(Ordering::SeqCst), s.late.lock().clone()))
            .collect();
        let mut removed = Vec::new();
        {
            let mut log = self.log.write();
            while log.len() > self.config.replay_limit {
                let Some((&seq, e)) = log.iter().next() else { break };
                let needed = e.targets.iter().any(|t| {
                    subs.iter().any(|(id, c, late)| *id == t.id && (*c < e.last_seq() || late.contains(&seq)))
                });
                if needed {
                    break;
                }
                log.remove(&seq);
                removed.push(seq);
            }
        }
        if !removed.is_empty() {
            let storage = self.storage.clone();
            tokio::spawn(async move {
                for seq in removed {
                    let _ = storage.kv_delete(NS_LOG, &seq_key(seq)).await;
                }
            });
        }
    }

    /// Writes changed delivery counters to the subscription resources, periodically.
    async fn flush_counters_loop(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.config.counters_interval) => {}
            }
            if !*self.leader.borrow() {
                continue; // the leader's counters are the ones that count
            }
            let subs: Vec<Arc<Subscription>> = self.subs.read().values().cloned().collect();
            for sub in subs {
                let now = (
                    sub.counters.delivered.load(Ordering::Relaxed),
                    sub.counters.retried.load(Ordering::Relaxed),
                    sub.counters.dropped.load(Ordering::Relaxed),
                    sub.counters.pending.load(Ordering::SeqCst),
                );
                if *sub.flushed.lock() == now || sub.cancel.is_cancelled() {
                    continue;
                }
                let delta = json!({"Oem": {"Sunfish": {"Delivery": {
                    "Delivered": now.0, "Retried": now.1, "Dropped": now.2, "Pending": now.3
                }}}});
                if self.storage.patch(&sub.path, delta, None).await.is_ok() {
                    *sub.flushed.lock() = now;
                }
            }
        }
    }
}

/// An EventId allocated by [`EventService::publish`] and reserved in its sequencer, owned by
/// whoever must report its outcome: the publisher until the store starts, then the store task.
/// Dropped without an outcome (a cancelled publish, a failure while building the entry, a
/// panicking backend), it reports a failure, so the id is skipped and later entries go on.
struct Reservation {
    service: Arc<EventService>,
    seq: u64,
    done: bool,
}

impl Reservation {
    /// Stores the entry, releases it (and whatever waited for it) through the sequencer, then
    /// waits until the entries with smaller EventIds allocated here are released too.
    async fn store(mut self, entry: Arc<LogEntry>, text: String, released: oneshot::Receiver<()>) -> Result<()> {
        let service = self.service.clone();
        let key = seq_key(self.seq);
        let stored = service.storage.kv_put(NS_LOG, &key, Value::String(text)).await;
        self.done = true;
        match stored {
            Ok(()) => service.finish(self.seq, Some(entry)),
            Err(e) => {
                service.finish(self.seq, None);
                return Err(e);
            }
        }
        if service.log.read().len() > service.config.replay_limit + TRIM_BATCH {
            service.trim();
        }
        if let Err(e) = service.storage.notify(TOPIC_LOG, &key).await {
            // The others still find the entry when they next catch up from the store.
            warn!(error = %e, "event log notification not sent");
        }
        // Fails only if the id was skipped, which a durable entry never is.
        let _ = released.await;
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.done {
            self.service.finish(self.seq, None);
        }
    }
}

/// Writes `{"@odata.type":..,"Id":..,"Name":"Event",["Context":..,]"Events":[..]}` from raw
/// event texts, without building `Value` trees.
fn write_envelope<'a>(first_seq: u64, context: Option<&str>, events: impl Iterator<Item = &'a RawValue>) -> String {
    let mut out = String::with_capacity(256);
    out.push_str(r#"{"@odata.type":""#);
    out.push_str(EVENT_TYPE);
    out.push_str(r#"","Id":""#);
    out.push_str(&first_seq.to_string());
    out.push_str(r#"","Name":"Event","#);
    if let Some(c) = context {
        out.push_str(r#""Context":"#);
        out.push_str(&Value::String(c.to_string()).to_string());
        out.push(',');
    }
    out.push_str(r#""Events":["#);
    for (i, e) in events.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(e.get());
    }
    out.push_str("]}");
    out
}

/// The envelope delivered to one subscription: its matching events and its own `Context`.
fn envelope(entry: &LogEntry, sub_id: &str, context: Option<&str>) -> Bytes {
    let events: Vec<&RawValue> = match entry.target(sub_id).map(|t| &t.events) {
        Some(Some(idx)) => idx.iter().filter_map(|i| entry.events.get(usize::from(*i)).map(|b| &**b)).collect(),
        Some(None) => entry.events.iter().map(|b| &**b).collect(),
        None => Vec::new(),
    };
    Bytes::from(write_envelope(entry.first_seq, context, events.into_iter()))
}

/// The envelope for SSE clients: all events of the entry accepted by `keep`, as JSON text.
pub fn sse_envelope(entry: &LogEntry, keep: impl Fn(&Facts) -> bool) -> Option<String> {
    let events: Vec<&RawValue> =
        entry.events.iter().zip(&entry.facts).filter(|(_, f)| keep(f)).map(|(e, _)| &**e).collect();
    if events.is_empty() {
        return None;
    }
    Some(write_envelope(entry.first_seq, None, events.into_iter()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tokio::sync::mpsc;

    use super::*;
    use crate::{Error, Resource};

    /// A kv-only store whose event log writes wait for the test: each `kv_put` of a log entry
    /// is sent to the test (key, answer) and completes (true) or fails (false) when answered.
    /// `get` of [`HANG`] never returns; every other resource is missing.
    struct GatedStore {
        kv: Mutex<BTreeMap<(String, String), Value>>,
        calls: mpsc::UnboundedSender<(String, oneshot::Sender<bool>)>,
    }

    const HANG: &str = "/redfish/v1/Hang";

    #[async_trait]
    impl StorageBackend for GatedStore {
        async fn get(&self, path: &ResourcePath) -> Result<Resource> {
            if path.as_str() == HANG {
                std::future::pending::<()>().await;
            }
            Err(Error::not_found(path))
        }
        async fn create(&self, _: &ResourcePath, _: Value, _: Option<Value>) -> Result<Resource> {
            Err(Error::Internal { message: "kv-only test store".into() })
        }
        async fn replace(&self, _: &ResourcePath, _: Value, _: Option<u64>) -> Result<Resource> {
            Err(Error::Internal { message: "kv-only test store".into() })
        }
        async fn patch(&self, _: &ResourcePath, _: Value, _: Option<u64>) -> Result<Resource> {
            Err(Error::Internal { message: "kv-only test store".into() })
        }
        async fn delete(&self, _: &ResourcePath, _: Option<u64>) -> Result<Vec<ResourcePath>> {
            Err(Error::Internal { message: "kv-only test store".into() })
        }
        async fn children(&self, _: &ResourcePath) -> Result<Vec<ResourcePath>> {
            Ok(Vec::new())
        }
        async fn paths(&self) -> Result<Vec<ResourcePath>> {
            Ok(Vec::new())
        }
        async fn import(&self, _: Vec<(ResourcePath, Value)>) -> Result<()> {
            Ok(())
        }
        async fn kv_get(&self, ns: &str, key: &str) -> Result<Option<Value>> {
            Ok(self.kv.lock().get(&(ns.to_string(), key.to_string())).cloned())
        }
        async fn kv_put(&self, ns: &str, key: &str, value: Value) -> Result<()> {
            if ns == NS_LOG {
                let (tx, rx) = oneshot::channel();
                let _ = self.calls.send((key.to_string(), tx));
                if !rx.await.unwrap_or(false) {
                    return Err(Error::storage("disk full"));
                }
            }
            self.kv.lock().insert((ns.to_string(), key.to_string()), value);
            Ok(())
        }
        async fn kv_delete(&self, ns: &str, key: &str) -> Result<bool> {
            Ok(self.kv.lock().remove(&(ns.to_string(), key.to_string())).is_some())
        }
        async fn kv_list(&self, ns: &str) -> Result<Vec<(String, Value)>> {
            let kv = self.kv.lock();
            Ok(kv.iter().filter(|((n, _), _)| n == ns).map(|((_, k), v)| (k.clone(), v.clone())).collect())
        }
    }

    /// Records every delivery: destination and the EventIds of the envelope.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<(String, Vec<u64>)>>);

    #[async_trait]
    impl EventTransport for Arc<Recorder> {
        async fn post(
            &self,
            destination: &str,
            _: &[(String, String)],
            body: Bytes,
            _: Duration,
        ) -> std::result::Result<u16, String> {
            let v: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
            let ids = v["Events"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["EventId"].as_str().and_then(|s| s.parse().ok()))
                .collect();
            self.0.lock().push((destination.to_string(), ids));
            Ok(200)
        }
    }

    struct Fixture {
        service: Arc<EventService>,
        store: Arc<GatedStore>,
        calls: mpsc::UnboundedReceiver<(String, oneshot::Sender<bool>)>,
        recorder: Arc<Recorder>,
    }

    fn fixture() -> Fixture {
        fixture_with(EventServiceConfig::default())
    }

    fn fixture_with(config: EventServiceConfig) -> Fixture {
        let (tx, calls) = mpsc::unbounded_channel();
        let store = Arc::new(GatedStore { kv: Mutex::new(BTreeMap::new()), calls: tx });
        let recorder = Arc::new(Recorder::default());
        let service = EventService::new(store.clone(), Arc::new(recorder.clone()), config);
        Fixture { service, store, calls, recorder }
    }

    fn event(n: usize) -> Vec<NewEvent> {
        vec![NewEvent { message_id: format!("Test.1.0.Event{n}"), severity: "OK".into(), ..Default::default() }]
    }

    /// Starts a publish; returns its task once its entry's store was reached (so publishes
    /// started one after the other get increasing EventIds), with the store's pending answer.
    async fn start_publish(
        f: &mut Fixture,
        events: Vec<NewEvent>,
    ) -> (tokio::task::JoinHandle<Result<Vec<String>>>, String, oneshot::Sender<bool>) {
        let service = f.service.clone();
        let task = tokio::spawn(async move { service.publish(events).await });
        let (key, answer) = f.calls.recv().await.unwrap_or_else(|| panic!("no store call"));
        (task, key, answer)
    }

    /// Waits (polling with a deadline) until the store holds log entry `key`; on this
    /// current-thread runtime the publisher has then also reported the outcome.
    async fn stored(f: &Fixture, key: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !f.store.kv.lock().contains_key(&(NS_LOG.to_string(), key.to_string())) {
            assert!(tokio::time::Instant::now() < deadline, "entry {key} never stored");
            tokio::task::yield_now().await;
        }
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    fn first_seqs(rx: &mut broadcast::Receiver<Arc<LogEntry>>) -> Vec<u64> {
        std::iter::from_fn(|| rx.try_recv().ok()).map(|e| e.first_seq).collect()
    }

    fn seq_of(key: &str) -> u64 {
        key.parse().unwrap_or_else(|e| panic!("log key {key}: {e}"))
    }

    /// Entries stored out of order reach the log and SSE in EventId order, each only after it is
    /// durable; each publish is answered once its entry is in the log.
    #[tokio::test]
    async fn entries_stored_out_of_order_are_released_in_order() {
        let mut f = fixture();
        let (mut rx, _) = f.service.sse_subscribe(None);
        let (a, ka, answer_a) = start_publish(&mut f, event(1)).await;
        let (b, kb, answer_b) = start_publish(&mut f, event(2)).await;
        let (c, kc, answer_c) = start_publish(&mut f, event(3)).await;
        assert!(seq_of(&ka) < seq_of(&kb) && seq_of(&kb) < seq_of(&kc), "{ka} {kb} {kc}");

        let _ = answer_c.send(true);
        let _ = answer_b.send(true);
        stored(&f, &kc).await;
        stored(&f, &kb).await;
        assert!(first_seqs(&mut rx).is_empty(), "released before the smaller EventId was stored");
        assert!(f.service.log.read().is_empty());
        assert!(!b.is_finished() && !c.is_finished(), "answered before being in the log");

        let _ = answer_a.send(true);
        for t in [a, b, c] {
            assert!(t.await.is_ok_and(|r| r.is_ok()));
        }
        assert_eq!(first_seqs(&mut rx), vec![seq_of(&ka), seq_of(&kb), seq_of(&kc)]);
        assert_eq!(
            f.service.log.read().keys().copied().collect::<Vec<_>>(),
            vec![seq_of(&ka), seq_of(&kb), seq_of(&kc)]
        );
    }

    /// An entry whose store failed is skipped: its publish fails, the later ones are released.
    #[tokio::test]
    async fn a_failed_store_is_skipped() {
        let mut f = fixture();
        let (mut rx, _) = f.service.sse_subscribe(None);
        let (a, _, answer_a) = start_publish(&mut f, event(1)).await;
        let (b, kb, answer_b) = start_publish(&mut f, event(2)).await;
        let _ = answer_b.send(true);
        stored(&f, &kb).await;
        assert!(first_seqs(&mut rx).is_empty());
        let _ = answer_a.send(false);
        assert!(a.await.is_ok_and(|r| r.is_err()), "the failed publish reports the failure");
        assert!(b.await.is_ok_and(|r| r.is_ok()));
        assert_eq!(first_seqs(&mut rx), vec![seq_of(&kb)]);
        assert_eq!(f.service.log.read().keys().copied().collect::<Vec<_>>(), vec![seq_of(&kb)]);
    }

    /// A publish cancelled before its store started gives its EventId up (later entries go
    /// on); one cancelled while storing still completes, in order.
    #[tokio::test]
    async fn cancelled_publishes_hold_up_nobody() {
        let mut f = fixture();
        let (mut rx, _) = f.service.sse_subscribe(None);
        // Stuck looking up its origin's type, after its EventId was allocated.
        let service = f.service.clone();
        let origin = ResourcePath::parse(HANG).unwrap_or_else(|e| panic!("{e}"));
        let stuck = tokio::spawn(async move {
            service
                .publish(vec![NewEvent {
                    message_id: "Test.1.0.Stuck".into(),
                    origin: Some(origin),
                    ..Default::default()
                }])
                .await
        });
        tokio::task::yield_now().await;
        assert!(f.service.sequencer.lock().oldest().is_some(), "the stuck publish holds an EventId");
        let (a, ka, answer_a) = start_publish(&mut f, event(1)).await;
        let (b, kb, answer_b) = start_publish(&mut f, event(2)).await;
        let _ = answer_b.send(true);
        stored(&f, &kb).await;
        assert!(first_seqs(&mut rx).is_empty());
        stuck.abort();
        assert!(stuck.await.is_err_and(|e| e.is_cancelled()));
        // `a` is cancelled while its entry is being stored: the store goes on without it.
        a.abort();
        let _ = answer_a.send(true);
        assert!(b.await.is_ok_and(|r| r.is_ok()));
        assert_eq!(first_seqs(&mut rx), vec![seq_of(&ka), seq_of(&kb)]);
        assert_eq!(f.service.sequencer.lock().oldest(), None);
    }

    /// A catch-up from the store (HA) finds an entry of ours that is durable but waiting for a
    /// smaller EventId: it leaves it to the sequencer, so the order holds.
    #[tokio::test]
    async fn catch_up_leaves_waiting_entries_to_the_sequencer() {
        let mut f = fixture();
        let (mut rx, _) = f.service.sse_subscribe(None);
        let (a, ka, answer_a) = start_publish(&mut f, event(1)).await;
        let (b, kb, answer_b) = start_publish(&mut f, event(2)).await;
        let _ = answer_b.send(true);
        stored(&f, &kb).await;
        f.service.catch_up().await;
        assert!(f.service.log.read().is_empty(), "caught up past the sequencer");
        let _ = answer_a.send(true);
        assert!(a.await.is_ok_and(|r| r.is_ok()) && b.await.is_ok_and(|r| r.is_ok()));
        assert_eq!(first_seqs(&mut rx), vec![seq_of(&ka), seq_of(&kb)]);
    }

    /// Many concurrent publishes whose stores finish in a scrambled order reach each
    /// subscriber complete, once each, in EventId order; one registered while entries were being
    /// stored gets every entry published after it.
    #[tokio::test]
    async fn subscribers_get_concurrent_publishes_in_order() {
        const N: usize = 24;
        let mut f = fixture();
        let service = f.service.clone();
        let register = |id: &str| {
            let service = service.clone();
            let path = ResourcePath::parse(&format!("{SUBSCRIPTIONS}/{id}")).unwrap_or_else(|e| panic!("{e}"));
            let dest = json!({"Destination": format!("http://127.0.0.1:9/{id}"), "Protocol": "Redfish"});
            async move { service.register(&path, &dest).await.unwrap_or_else(|e| panic!("{e}")) }
        };
        register("early").await;
        let mut tasks = Vec::new();
        let mut answers = Vec::new();
        let mut keys = Vec::new();
        for n in 0..N {
            let (task, key, answer) = start_publish(&mut f, event(n)).await;
            tasks.push(task);
            answers.push(Some(answer));
            keys.push(seq_of(&key));
            if n == N / 2 {
                register("late").await;
            }
        }
        for i in (0..N).map(|i| (i * 7 + 3) % N) {
            if let Some(a) = answers[i].take() {
                let _ = a.send(true);
            }
            tokio::task::yield_now().await;
        }
        for t in tasks {
            assert!(t.await.is_ok_and(|r| r.is_ok()));
        }
        let received = |dest: &str| -> Vec<u64> {
            f.recorder.0.lock().iter().filter(|(d, _)| d.ends_with(dest)).flat_map(|(_, ids)| ids.clone()).collect()
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while received("/early").len() < N || received("/late").len() < N - N / 2 - 1 {
            assert!(tokio::time::Instant::now() < deadline, "{:?}", f.recorder.0.lock());
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(received("/early"), keys);
        assert_eq!(received("/late"), keys[N / 2 + 1..].to_vec());
        f.service.stop();
    }

    /// With nobody draining it (no subscribers), the log is trimmed by publishing, in batches:
    /// it never holds more than `replay_limit + TRIM_BATCH` entries, in memory or in the store.
    #[tokio::test]
    async fn publishing_keeps_an_undrained_log_bounded() {
        let mut f = fixture_with(EventServiceConfig { replay_limit: 4, ..Default::default() });
        let mut calls = std::mem::replace(&mut f.calls, mpsc::unbounded_channel().1);
        tokio::spawn(async move {
            while let Some((_, answer)) = calls.recv().await {
                let _ = answer.send(true);
            }
        });
        let logged = |f: &Fixture| f.store.kv.lock().keys().filter(|(ns, _)| ns == NS_LOG).count();
        for n in 0..3 * TRIM_BATCH {
            assert!(f.service.publish(event(n)).await.is_ok());
            assert!(f.service.log.read().len() <= 4 + TRIM_BATCH, "log of {}", f.service.log.read().len());
        }
        assert!(f.service.log.read().len() < 3 * TRIM_BATCH);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while logged(&f) > 4 + TRIM_BATCH {
            assert!(tokio::time::Instant::now() < deadline, "{} entries left in the store", logged(&f));
            tokio::task::yield_now().await;
        }
    }
}
