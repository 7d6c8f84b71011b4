//! Prometheus metrics of one service (issue 9): requests, event deliveries, agents, storage.
//!
//! Every [`Core`] owns one [`Metrics`] with its own [`Registry`], never the process-global
//! one: tests and embedders run several services in one process, and each must count only its
//! own work. The parts that produce the numbers own their families and the core registers them
//! when it is built: [`DeliveryMetrics`] (the EventService), [`AggregationMetrics`] (the
//! aggregator), [`StorageMetrics`] (every storage call, through [`TimedStorage`], which
//! [`Core::builder`] puts in front of the backend so the EventService, the aggregator and the
//! core are all timed in one place). Numbers that are states rather than events (queue depth,
//! agents by state) are read when scraped, so they cannot drift from the truth.
//!
//! Labels are bounded on purpose: methods, route classes, outcomes, operation names and
//! states; never paths or ids, whose number grows with the fabric.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use serde_json::Value;
use tokio::sync::{broadcast, watch};

use crate::tree::Loaded;
use crate::{Core, Notification, Resource, ResourcePath, Result, StorageBackend};

/// Latency buckets in seconds, from a cached GET (tens of µs) to a slow agent (seconds).
const LATENCY_BUCKETS: [f64; 14] =
    [0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

/// Crawl buckets in seconds: a small agent takes milliseconds, 10,000 resources seconds.
const CRAWL_BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0];

/// A family known to be valid: names and labels here are constants, so a failure is a bug in
/// this file, caught by its tests.
fn valid<T>(r: prometheus::Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("metric definition: {e}"),
    }
}

/// The metrics of one service: its registry and the families the front end records into.
pub struct Metrics {
    registry: Registry,
    http: HttpMetrics,
    queue_depth: IntGauge,
    agents: IntGaugeVec,
}

impl Metrics {
    /// A registry with the HTTP, queue and agent families, plus `storage`'s (created by the
    /// builder before the core exists, since the backend is wrapped first).
    pub(crate) fn new(storage: &StorageMetrics) -> Self {
        let registry = Registry::new();
        let http = HttpMetrics::new();
        let queue_depth =
            valid(IntGauge::new("sunfish_event_queue_depth", "Events queued for delivery, summed over subscriptions."));
        let agents = valid(IntGaugeVec::new(
            Opts::new("sunfish_agents", "Registered agents (AggregationSources) by state."),
            &["state"],
        ));
        for c in [
            Box::new(http.requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http.duration.clone()),
            Box::new(queue_depth.clone()),
            Box::new(agents.clone()),
            Box::new(storage.duration.clone()),
        ] {
            valid(registry.register(c));
        }
        Metrics { registry, http, queue_depth, agents }
    }

    /// Adds a component's families (the EventService's, the aggregator's).
    pub(crate) fn register(&self, collectors: Vec<Box<dyn prometheus::core::Collector>>) {
        for c in collectors {
            valid(self.registry.register(c));
        }
    }

    /// The HTTP families, for the front end's request layer.
    pub fn http(&self) -> &HttpMetrics {
        &self.http
    }

    /// The exposition text (Prometheus text format 0.0.4), with the scrape-time gauges of
    /// `core` read first.
    pub fn render(&self, core: &Core) -> String {
        if let Some(events) = core.events() {
            self.queue_depth.set(events.queued() as i64);
        }
        if let Some(agg) = core.aggregation() {
            let (online, offline) = agg.agent_states();
            self.agents.with_label_values(&["Enabled"]).set(online as i64);
            self.agents.with_label_values(&["UnavailableOffline"]).set(offline as i64);
        }
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for valid families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Requests by method, route class and status, and their latency.
pub struct HttpMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl HttpMetrics {
    fn new() -> Self {
        HttpMetrics {
            requests: valid(IntCounterVec::new(
                Opts::new("sunfish_http_requests_total", "HTTP requests answered, by method, route class and status."),
                &["method", "route", "status"],
            )),
            duration: valid(HistogramVec::new(
                HistogramOpts::new(
                    "sunfish_http_request_duration_seconds",
                    "Time from request to response head, by method and route class.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["method", "route"],
            )),
        }
    }

    /// Records one answered request. `method` should be one of the HTTP methods (others are
    /// counted as `OTHER`, so a client cannot grow the label set); `route` a route class.
    pub fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        const KNOWN: [&str; 7] = ["GET", "HEAD", "POST", "PATCH", "PUT", "DELETE", "OPTIONS"];
        let method = if KNOWN.contains(&method) { method } else { "OTHER" };
        let code = status.to_string();
        self.requests.with_label_values(&[method, route, code.as_str()]).inc();
        self.duration.with_label_values(&[method, route]).observe(seconds);
    }
}

/// Event deliveries by outcome, owned by the EventService.
#[derive(Clone)]
pub struct DeliveryMetrics {
    deliveries: IntCounterVec,
    delivered: IntCounter,
    retried: IntCounter,
    dropped: IntCounter,
    given_up: IntCounter,
}

impl Default for DeliveryMetrics {
    fn default() -> Self {
        let deliveries = valid(IntCounterVec::new(
            Opts::new(
                "sunfish_event_deliveries_total",
                "Event delivery outcomes: delivered (2xx), failed (an attempt failed and will be retried), \
                 dropped (queue full), given_up (retries exhausted, subscription suspended or removed).",
            ),
            &["outcome"],
        ));
        let with = |o: &str| deliveries.with_label_values(&[o]);
        DeliveryMetrics {
            delivered: with("delivered"),
            retried: with("failed"),
            dropped: with("dropped"),
            given_up: with("given_up"),
            deliveries,
        }
    }
}

impl DeliveryMetrics {
    /// One envelope delivered.
    pub fn delivered(&self) {
        self.delivered.inc();
    }
    /// One attempt failed.
    pub fn failed(&self) {
        self.retried.inc();
    }
    /// `n` events not queued (queue full).
    pub fn dropped(&self, n: u64) {
        self.dropped.inc_by(n);
    }
    /// A subscription's retries ran out.
    pub fn given_up(&self) {
        self.given_up.inc();
    }
    pub(crate) fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![Box::new(self.deliveries.clone())]
    }
}

/// Agent crawls and forwarded writes, owned by the aggregator.
#[derive(Clone)]
pub struct AggregationMetrics {
    crawl: HistogramVec,
    crawl_ok: Histogram,
    crawl_failed: Histogram,
    forward_errors: IntCounter,
    forwards: IntCounter,
}

impl Default for AggregationMetrics {
    fn default() -> Self {
        let crawl = valid(HistogramVec::new(
            HistogramOpts::new(
                "sunfish_agent_crawl_duration_seconds",
                "Duration of agent crawls (uploads and resyncs), by result.",
            )
            .buckets(CRAWL_BUCKETS.to_vec()),
            &["result"],
        ));
        AggregationMetrics {
            crawl_ok: crawl.with_label_values(&["ok"]),
            crawl_failed: crawl.with_label_values(&["failed"]),
            crawl,
            forward_errors: valid(IntCounter::new(
                "sunfish_agent_forward_errors_total",
                "Writes forwarded to an agent that failed (refused, unreachable or timed out).",
            )),
            forwards: valid(IntCounter::new("sunfish_agent_forwards_total", "Writes forwarded to agents.")),
        }
    }
}

impl AggregationMetrics {
    /// One crawl took `seconds`.
    pub fn crawl(&self, seconds: f64, ok: bool) {
        if ok { &self.crawl_ok } else { &self.crawl_failed }.observe(seconds);
    }
    /// One forwarded write, failed or not.
    pub fn forwarded(&self, ok: bool) {
        self.forwards.inc();
        if !ok {
            self.forward_errors.inc();
        }
    }
    pub(crate) fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![Box::new(self.crawl.clone()), Box::new(self.forward_errors.clone()), Box::new(self.forwards.clone())]
    }
}

/// Storage operation latency by operation name.
#[derive(Clone)]
pub struct StorageMetrics {
    duration: HistogramVec,
    ops: Arc<[Histogram; OPS.len()]>,
}

/// The operations timed, in [`Op`] order.
const OPS: [&str; 12] = [
    "get",
    "create",
    "replace",
    "patch",
    "delete",
    "children",
    "paths",
    "import",
    "kv_get",
    "kv_put",
    "kv_delete",
    "kv_list",
];

/// Index into [`OPS`].
#[derive(Clone, Copy)]
enum Op {
    Get,
    Create,
    Replace,
    Patch,
    Delete,
    Children,
    Paths,
    Import,
    KvGet,
    KvPut,
    KvDelete,
    KvList,
}

impl Default for StorageMetrics {
    fn default() -> Self {
        let duration = valid(HistogramVec::new(
            HistogramOpts::new(
                "sunfish_storage_operation_duration_seconds",
                "Storage backend operations, by operation.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["op"],
        ));
        let ops = Arc::new(OPS.map(|o| duration.with_label_values(&[o])));
        StorageMetrics { duration, ops }
    }
}

/// A storage backend that times every operation of the one it wraps into [`StorageMetrics`].
pub struct TimedStorage {
    inner: Arc<dyn StorageBackend>,
    metrics: StorageMetrics,
}

impl TimedStorage {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn StorageBackend>, metrics: StorageMetrics) -> Self {
        TimedStorage { inner, metrics }
    }

    async fn timed<T>(&self, op: Op, f: impl std::future::Future<Output = T>) -> T {
        let start = Instant::now();
        let out = f.await;
        self.metrics.ops[op as usize].observe(start.elapsed().as_secs_f64());
        out
    }
}

#[async_trait]
impl StorageBackend for TimedStorage {
    async fn get(&self, path: &ResourcePath) -> Result<Resource> {
        self.timed(Op::Get, self.inner.get(path)).await
    }
    async fn create(
        &self,
        collection: &ResourcePath,
        member: Value,
        new_collection: Option<Value>,
    ) -> Result<Resource> {
        self.timed(Op::Create, self.inner.create(collection, member, new_collection)).await
    }
    async fn replace(&self, path: &ResourcePath, body: Value, if_match: Option<u64>) -> Result<Resource> {
        self.timed(Op::Replace, self.inner.replace(path, body, if_match)).await
    }
    async fn patch(&self, path: &ResourcePath, delta: Value, if_match: Option<u64>) -> Result<Resource> {
        self.timed(Op::Patch, self.inner.patch(path, delta, if_match)).await
    }
    async fn delete(&self, path: &ResourcePath, if_match: Option<u64>) -> Result<Vec<ResourcePath>> {
        self.timed(Op::Delete, self.inner.delete(path, if_match)).await
    }
    async fn children(&self, path: &ResourcePath) -> Result<Vec<ResourcePath>> {
        self.timed(Op::Children, self.inner.children(path)).await
    }
    async fn paths(&self) -> Result<Vec<ResourcePath>> {
        self.timed(Op::Paths, self.inner.paths()).await
    }
    async fn import(&self, resources: Vec<(ResourcePath, Value)>) -> Result<()> {
        self.timed(Op::Import, self.inner.import(resources)).await
    }
    async fn import_loaded(&self, resources: Vec<Loaded>) -> Result<()> {
        self.timed(Op::Import, self.inner.import_loaded(resources)).await
    }
    async fn kv_get(&self, ns: &str, key: &str) -> Result<Option<Value>> {
        self.timed(Op::KvGet, self.inner.kv_get(ns, key)).await
    }
    async fn kv_put(&self, ns: &str, key: &str, value: Value) -> Result<()> {
        self.timed(Op::KvPut, self.inner.kv_put(ns, key, value)).await
    }
    async fn kv_delete(&self, ns: &str, key: &str) -> Result<bool> {
        self.timed(Op::KvDelete, self.inner.kv_delete(ns, key)).await
    }
    async fn kv_list(&self, ns: &str) -> Result<Vec<(String, Value)>> {
        self.timed(Op::KvList, self.inner.kv_list(ns)).await
    }
    fn shared(&self) -> bool {
        self.inner.shared()
    }
    async fn allocate(&self, name: &str, count: u64, floor: u64) -> Result<Option<u64>> {
        self.inner.allocate(name, count, floor).await
    }
    async fn notify(&self, topic: &str, payload: &str) -> Result<()> {
        self.inner.notify(topic, payload).await
    }
    fn notifications(&self) -> Option<broadcast::Receiver<Notification>> {
        self.inner.notifications()
    }
    fn leadership(&self) -> watch::Receiver<bool> {
        self.inner.leadership()
    }
    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}
