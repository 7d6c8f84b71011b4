//! Uploads: crawling an agent and placing what it serves into our tree.
//!
//! The crawl only reads (bounded concurrency, per-request timeouts); placement then decides,
//! under the aggregator's placement lock, where each object goes: its own URI, a renamed one on
//! a collision, or nowhere (a fabric merged into another agent's). All resulting writes reach
//! storage as one batch, so an upload of 10,000 resources is one journal commit, and only what
//! changed is written and announced.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::alias::{links, rewrite_links};
use super::boundary::{self, BoundaryPort};
use super::{managing_agent, mark_owned, now_ms, rfc3339, source_path, Agent, Aggregator};
use crate::eventservice::NewEvent;
use crate::resource::{collection_template, is_collection, link, type_name};
use crate::{Core, Error, ResourcePath, Result};

/// Top-level services of an agent that are its own business, never imported.
const AGENT_PRIVATE: [&str; 9] = [
    "AccountService",
    "SessionService",
    "EventService",
    "AggregationService",
    "TaskService",
    "JsonSchemas",
    "Registries",
    "$metadata",
    "odata",
];

/// The normalised agent URI a link names, if the crawl should follow it: below a top-level
/// collection (depth ≥ 2) and not in the agent's own services.
fn followable(raw: &str) -> Option<ResourcePath> {
    let p = ResourcePath::parse_link(raw).ok()?;
    let top = p.segments().next()?;
    (p.depth() >= 2 && !AGENT_PRIVATE.contains(&top)).then_some(p)
}

/// Whether `path` is in an agent's own services (its subscription, accounts...), which are
/// never imported, whatever the agent announces.
pub(super) fn is_agent_private(path: &ResourcePath) -> bool {
    path.depth() < 1 || path.segments().next().is_some_and(|top| AGENT_PRIVATE.contains(&top))
}

/// Whether `a` and `b` are fabrics with the same UUID (the agents share the fabric).
fn same_fabric(a: &Value, b: &Value) -> bool {
    let uuid = |v: &Value| v.get("UUID").and_then(Value::as_str).filter(|u| !u.is_empty()).map(str::to_ascii_lowercase);
    type_name(a) == Some("Fabric") && type_name(b) == Some("Fabric") && uuid(a).is_some() && uuid(a) == uuid(b)
}

/// How often a running crawl's progress is written to its AggregationSource and logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// One crawl's progress, shown on the agent's AggregationSource as
/// `Oem.Sunfish_RM.Sync` = `{State: Running|Completed|Failed, ResourcesFetched, Errors,
/// StartedAt, FinishedAt}`, so an operator (and the console's agents view) sees a long upload
/// move and learns how the last one ended. Written straight to storage, like `LastSeen`:
/// bookkeeping, not a change of the agent's inventory, so no ResourceChanged event.
pub(super) struct SyncProgress {
    agent: String,
    root: String,
    fetched: AtomicU64,
    errors: AtomicU64,
    started_ms: u64,
    clock: Instant,
    /// When progress was last written; `None` while a write is under way.
    last: parking_lot::Mutex<Option<Instant>>,
}

impl SyncProgress {
    /// Marks the crawl Running on the source.
    async fn start(agg: &Aggregator, agent: &Agent, root: &str) -> Self {
        let p = SyncProgress {
            agent: agent.id(),
            root: root.to_string(),
            fetched: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            started_ms: now_ms(),
            clock: Instant::now(),
            last: parking_lot::Mutex::new(Some(Instant::now())),
        };
        info!(agent = %p.agent, root = %p.root, "crawl started");
        p.store(agg, "Running", None).await;
        p
    }

    /// Writes and logs the counts when [`PROGRESS_EVERY`] has passed since the last time.
    async fn tick(&self, agg: &Aggregator) {
        {
            let mut last = self.last.lock();
            match *last {
                Some(t) if t.elapsed() >= PROGRESS_EVERY => *last = None,
                _ => return,
            }
        }
        info!(agent = %self.agent, root = %self.root, fetched = self.fetched.load(Ordering::Relaxed),
              errors = self.errors.load(Ordering::Relaxed), "crawl in progress");
        self.store(agg, "Running", None).await;
        *self.last.lock() = Some(Instant::now());
    }

    /// Records the outcome, its duration as a metric, and logs it.
    async fn finish(&self, agg: &Aggregator, result: &Result<()>) {
        let took = self.clock.elapsed();
        agg.metrics.crawl(took.as_secs_f64(), result.is_ok());
        let (fetched, errors) = (self.fetched.load(Ordering::Relaxed), self.errors.load(Ordering::Relaxed));
        match result {
            Ok(()) => {
                info!(agent = %self.agent, root = %self.root, fetched, errors, ms = took.as_millis() as u64, "crawl completed")
            }
            Err(e) => {
                warn!(agent = %self.agent, root = %self.root, fetched, errors, ms = took.as_millis() as u64, error = %e, "crawl failed")
            }
        }
        let state = if result.is_ok() { "Completed" } else { "Failed" };
        self.store(agg, state, Some(now_ms())).await;
    }

    async fn store(&self, agg: &Aggregator, state: &str, finished: Option<u64>) {
        let Ok(path) = ResourcePath::parse(&source_path(&self.agent)) else { return };
        let sync = json!({
            "State": state,
            "ResourcesFetched": self.fetched.load(Ordering::Relaxed),
            "Errors": self.errors.load(Ordering::Relaxed),
            "StartedAt": rfc3339(self.started_ms),
            "FinishedAt": finished.map(rfc3339),
        });
        let delta = json!({"Oem": {"Sunfish_RM": {"Sync": sync}}});
        if let Err(e) = agg.storage.patch(&path, delta, None).await {
            debug!(agent = %self.agent, error = %e, "sync progress not stored");
        }
    }
}

impl Aggregator {
    /// Crawls `root` on the agent and places the result, under the agent's sync lock.
    /// Its progress is shown on the agent's AggregationSource as `Oem.Sunfish_RM.Sync`
    /// ([`SyncProgress`]) and in the log, and its duration is a metric.
    pub(super) async fn sync_root(self: &Arc<Self>, core: &Core, agent: &Arc<Agent>, root: &str) -> Result<()> {
        let _g = agent.sync.lock().await;
        let host = agent.host();
        let since = self.writes.load(std::sync::atomic::Ordering::SeqCst);
        let progress = SyncProgress::start(self, agent, root).await;
        let result = match self.crawl(&host, root, Some(&progress)).await {
            Ok(fetched) => self.place(core, agent, fetched, Some(root), since).await,
            Err(e) => Err(e),
        };
        progress.finish(self, &result).await;
        result
    }

    /// Fetches `root` and everything it links to (and their ancestors), agent URI → object.
    ///
    /// # Errors
    /// `Agent` when the root itself cannot be fetched.
    pub(super) async fn crawl(
        self: &Arc<Self>,
        host: &str,
        root: &str,
        progress: Option<&SyncProgress>,
    ) -> Result<BTreeMap<String, Value>> {
        let root =
            ResourcePath::parse_link(root).map_err(|e| Error::property_value("OriginOfCondition", e.to_string()))?;
        let mut seen: HashSet<String> = HashSet::from([root.to_string()]);
        let mut queue: VecDeque<String> = VecDeque::from([root.to_string()]);
        let mut fetched = BTreeMap::new();
        let mut inflight: JoinSet<(String, Result<Option<Value>>)> = JoinSet::new();
        let limit = self.config.crawl_concurrency.max(1);
        loop {
            while inflight.len() < limit {
                let Some(uri) = queue.pop_front() else { break };
                let me = self.clone();
                let host = host.to_string();
                inflight.spawn(async move {
                    let r = me.fetch(&host, &uri).await;
                    (uri, r)
                });
            }
            let Some(done) = inflight.join_next().await else { break };
            let (uri, result) = done.map_err(|e| Error::Internal { message: format!("crawl task: {e}") })?;
            let obj = match result {
                Ok(Some(obj)) => obj,
                Ok(None) if uri == root.as_str() => {
                    return Err(Error::Agent {
                        agent: host.to_string(),
                        status: None,
                        timed_out: false,
                        message: format!("{uri} is not a resource the agent serves"),
                    })
                }
                Err(e) if uri == root.as_str() => return Err(e),
                Ok(None) => continue,
                Err(e) => {
                    debug!(uri = %uri, error = %e, "crawl: not fetched");
                    if let Some(p) = progress {
                        p.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    continue;
                }
            };
            if let Some(p) = progress {
                p.fetched.fetch_add(1, Ordering::Relaxed);
                p.tick(self).await;
            }
            let path = ResourcePath::parse(&uri)?;
            let mut next: Vec<ResourcePath> = links(&obj).iter().filter_map(|l| followable(l)).collect();
            // Ancestors first: a child needs its parent (and the parent's type) placed.
            let mut up = path.parent();
            while let Some(p) = up {
                if p.depth() < 2 {
                    break;
                }
                up = p.parent();
                next.push(p);
            }
            for n in next {
                if seen.insert(n.to_string()) {
                    queue.push_back(n.to_string());
                }
            }
            fetched.insert(uri, obj);
        }
        Ok(fetched)
    }

    /// Our copy of `path`: staged in this batch, else stored.
    async fn lookup(&self, path: &str, staged: &BTreeMap<String, Value>) -> Option<Value> {
        if let Some(v) = staged.get(path) {
            return Some(v.clone());
        }
        let p = ResourcePath::parse(path).ok()?;
        self.storage.get(&p).await.ok().map(|r| r.value().into_owned())
    }

    /// Places `fetched` (agent URI → object) for `agent`; with `root`, objects reached from
    /// that root before and not now are removed. Writes, deletes, boundary matching, the
    /// record, ResourcesAccessed and events.
    pub(super) async fn place(
        self: &Arc<Self>,
        core: &Core,
        agent: &Arc<Agent>,
        fetched: BTreeMap<String, Value>,
        root: Option<&str>,
        since: u64,
    ) -> Result<()> {
        let _placing = self.place.lock().await;
        let mut rec = agent.record.lock().clone();
        let me = source_path(&rec.id);
        let mut order: Vec<(ResourcePath, Value)> =
            fetched.into_iter().filter_map(|(u, v)| ResourcePath::parse(&u).ok().map(|p| (p, v))).collect();
        order.sort_by(|a, b| a.0.depth().cmp(&b.0.depth()).then_with(|| a.0.cmp(&b.0)));

        // Every write of this batch, ours → value.
        let mut staged: BTreeMap<String, Value> = BTreeMap::new();
        // Agent objects placed (ours), whose links are still in the agent's namespace.
        let mut from_agent: BTreeSet<String> = BTreeSet::new();
        let mut reached: BTreeSet<String> = BTreeSet::new();
        for (auri, obj) in order {
            let ours = rec.aliases.to_ours(auri.as_str());
            let Ok(op) = ResourcePath::parse(&ours) else { continue };
            let coll = is_collection(&obj);
            let current = self.lookup(&ours, &staged).await;
            if op.depth() < 2 || coll {
                // Collections are shared: ours if we have one, the agent's otherwise.
                if coll && op.depth() >= 1 && current.is_none() {
                    let mut v = obj.clone();
                    v["@odata.id"] = Value::String(ours.clone());
                    v["Members"] = json!([]);
                    v["Members@odata.count"] = json!(0);
                    staged.insert(ours.clone(), v);
                    from_agent.insert(ours);
                }
                continue;
            }
            if agent.written_since(&ours, since) {
                // A write forwarded after the crawl began: the agent's answer to it is what we
                // store, never this older read (nor a resurrection of what it deleted).
                if current.is_some() {
                    rec.owned.insert(ours.clone(), auri.to_string());
                    reached.insert(ours);
                }
                continue;
            }
            let mut kept_sharers = None;
            let target = match current {
                None => op,
                Some(c) if managing_agent(&c) == Some(me.as_str()) => {
                    // Our bookkeeping on the agent's object survives its refresh.
                    kept_sharers = c.pointer("/Oem/Sunfish_RM/FabricSharedWith").cloned();
                    op
                }
                Some(c) if same_fabric(&c, &obj) => {
                    let mut v = c.clone();
                    if add_sharer(&mut v, &me) {
                        staged.insert(ours.clone(), v);
                    }
                    rec.shared.insert(ours);
                    continue;
                }
                Some(_) => {
                    let name = op.last().unwrap_or_default().to_string();
                    let parent = op.parent().unwrap_or_else(ResourcePath::root);
                    let short = parent.child(&format!("Sunfish_{}_{name}", &rec.id[..4.min(rec.id.len())]))?;
                    let taken = match self.lookup(short.as_str(), &staged).await {
                        Some(c) => managing_agent(&c) != Some(me.as_str()),
                        None => false,
                    };
                    let renamed = if taken { parent.child(&format!("Sunfish_{}_{name}", rec.id))? } else { short };
                    rec.aliases.insert(auri.as_str(), renamed.as_str());
                    renamed
                }
            };
            let mut v = obj;
            if let Value::Object(m) = &mut v {
                if m.get("Id").and_then(Value::as_str) == auri.last() {
                    m.insert("Id".into(), Value::String(target.last().unwrap_or_default().to_string()));
                }
                m.insert("@odata.id".into(), Value::String(target.to_string()));
            }
            mark_owned(&mut v, &me);
            if let (Some(sharers), Some(rm)) =
                (kept_sharers, v.pointer_mut("/Oem/Sunfish_RM").and_then(Value::as_object_mut))
            {
                rm.insert("FabricSharedWith".into(), sharers);
            }
            rec.owned.insert(target.to_string(), auri.to_string());
            reached.insert(target.to_string());
            from_agent.insert(target.to_string());
            staged.insert(target.to_string(), v);
        }

        // Links: every agent URI the agent's objects name, in our namespace (now that every
        // rename of this batch is known).
        for p in &from_agent {
            if let Some(v) = staged.get_mut(p) {
                let aliases = &rec.aliases;
                rewrite_links(v, &|s| aliases.to_ours(s));
            }
        }

        // Parents: each new object joins its collection's Members; missing parents are made.
        let placed: Vec<String> = from_agent.iter().cloned().collect();
        for p in placed {
            self.attach(&p, &mut staged, &mut reached, &mut rec.owned).await?;
        }

        // Removals: what this root reached before and no root reaches now.
        let mut removed = Vec::new();
        if let Some(root) = root {
            let root = ResourcePath::parse_link(root).map(|p| p.to_string()).unwrap_or_else(|_| root.to_string());
            let before = rec.roots.insert(root.clone(), reached.clone()).unwrap_or_default();
            let elsewhere: BTreeSet<&String> =
                rec.roots.iter().filter(|(r, _)| **r != root).flat_map(|(_, s)| s.iter()).collect();
            removed = before.iter().filter(|p| !reached.contains(*p) && !elsewhere.contains(p)).cloned().collect();
        }

        // Boundary ports of this agent, as now staged. A port reached but not staged (a write
        // forwarded since this read began: the agent's answer stands) keeps its entry; dropping
        // it unlinked its peer until the next crawl.
        let mut ports: Vec<BoundaryPort> = rec
            .ports
            .iter()
            .filter(|p| (!reached.contains(&p.path) || !staged.contains_key(&p.path)) && !removed.contains(&p.path))
            .cloned()
            .collect();
        for p in &reached {
            if let Some(port) = staged.get(p).and_then(|v| boundary::track(p, &rec.id, v)) {
                ports.push(port);
            }
        }
        rec.ports = ports;
        *agent.record.lock() = rec;
        self.match_boundaries(&mut staged).await?;

        // Write what changed, in one batch.
        let mut writes = Vec::new();
        let mut created = Vec::new();
        let mut changed = Vec::new();
        for (p, v) in staged {
            let Ok(path) = ResourcePath::parse(&p) else { continue };
            match self.storage.get(&path).await {
                Ok(c) if *c.value() == v => continue,
                Ok(_) => {
                    if !is_collection(&v) {
                        changed.push((path.clone(), type_name(&v).map(str::to_string)));
                    }
                }
                Err(_) => created.push((path.clone(), type_name(&v).map(str::to_string))),
            }
            writes.push((path, v));
        }
        let count = writes.len();
        if !writes.is_empty() {
            self.storage.import(writes).await?;
        }
        let deleted = self.delete_owned(agent, &removed).await?;
        self.refresh_accessed(agent).await?;
        self.save(agent).await?;
        // Other agents' records: their ports' peers may have changed.
        let others: Vec<Arc<Agent>> = self.agents.read().values().filter(|a| !Arc::ptr_eq(a, agent)).cloned().collect();
        for o in others {
            self.save(&o).await?;
        }
        drop(_placing);
        debug!(agent = %agent.id(), written = count, removed = deleted.len(), "agent inventory placed");

        // Events: the topmost new resources, every changed one, the topmost removed.
        let mut events = Vec::new();
        let top: BTreeSet<&str> = super::topmost(created.iter().map(|(p, _)| p.as_str())).into_iter().collect();
        for (p, t) in &created {
            if top.contains(p.as_str()) {
                events.push(NewEvent::resource(
                    "ResourceCreated",
                    "The resource was created successfully.",
                    p,
                    t.as_deref(),
                ));
            }
        }
        for (p, t) in &changed {
            events.push(NewEvent::resource(
                "ResourceChanged",
                "One or more resource properties have changed.",
                p,
                t.as_deref(),
            ));
        }
        events.extend(super::removal_events(&deleted));
        self.publish(core, events).await;
        Ok(())
    }

    /// Puts the staged object at `p` into its parent: a member of a collection (made when
    /// missing, and linked from its own parent), or dropped when no parent can exist.
    async fn attach(
        &self,
        p: &str,
        staged: &mut BTreeMap<String, Value>,
        reached: &mut BTreeSet<String>,
        owned: &mut BTreeMap<String, String>,
    ) -> Result<()> {
        let Ok(path) = ResourcePath::parse(p) else { return Ok(()) };
        let Some(parent) = path.parent() else { return Ok(()) };
        let mut chain = Vec::new();
        let mut cur = parent.clone();
        // Walk up to the first existing ancestor, collecting missing ones.
        loop {
            if self.lookup(cur.as_str(), staged).await.is_some() {
                break;
            }
            if cur.depth() == 0 {
                break;
            }
            chain.push(cur.clone());
            match cur.parent() {
                Some(up) => cur = up,
                None => break,
            }
        }
        let member_type = staged.get(p).and_then(|v| type_name(v)).unwrap_or_default().to_string();
        // Missing ancestors become collections (the agent did not serve them).
        for missing in chain.iter().rev() {
            let tmpl = collection_template(missing, &member_type);
            staged.insert(missing.to_string(), tmpl);
            self.link_from_parent(missing, staged).await;
            if let Some(up) = missing.parent() {
                self.add_member(&up, missing.as_str(), staged).await;
            }
        }
        let Some(parent_value) = self.lookup(parent.as_str(), staged).await else {
            warn!(path = %p, "no parent: not placed");
            staged.remove(p);
            reached.remove(p);
            owned.remove(p);
            return Ok(());
        };
        if is_collection(&parent_value) {
            self.add_member(&parent, p, staged).await;
        } else if is_collection(staged.get(p).unwrap_or(&Value::Null)) && managing_agent(&parent_value).is_none() {
            // A new agent collection below a resource of ours (the service root): link it.
            self.link_from_parent(&path, staged).await;
        }
        Ok(())
    }

    /// Adds `member` to the Members of the collection at `collection` (staging the change).
    async fn add_member(&self, collection: &ResourcePath, member: &str, staged: &mut BTreeMap<String, Value>) {
        let Some(mut c) = self.lookup(collection.as_str(), staged).await else { return };
        if !is_collection(&c) {
            return;
        }
        let members = c.get("Members").and_then(Value::as_array).cloned().unwrap_or_default();
        if members.iter().any(|m| m.get("@odata.id").and_then(Value::as_str) == Some(member)) {
            return;
        }
        let mut members = members;
        members.push(link(member));
        c["Members@odata.count"] = json!(members.len());
        c["Members"] = Value::Array(members);
        staged.insert(collection.to_string(), c);
    }

    /// Gives the parent of `path` a navigation link to it, unless it has that property.
    async fn link_from_parent(&self, path: &ResourcePath, staged: &mut BTreeMap<String, Value>) {
        let (Some(parent), Some(name)) = (path.parent(), path.last()) else { return };
        let Some(mut v) = self.lookup(parent.as_str(), staged).await else { return };
        if is_collection(&v) || v.get(name).is_some() {
            return;
        }
        if let Value::Object(m) = &mut v {
            m.insert(name.to_string(), link(path.as_str()));
        }
        staged.insert(parent.to_string(), v);
    }

    /// Matches every agent's boundary ports and stages the port resources whose links change
    /// (redirected at a new peer, or restored when the peer went away). Placement lock held.
    pub(super) async fn match_boundaries(&self, staged: &mut BTreeMap<String, Value>) -> Result<()> {
        let agents: Vec<Arc<Agent>> = self.agents.read().values().cloned().collect();
        let mut all: Vec<BoundaryPort> = agents.iter().flat_map(|a| a.record.lock().ports.clone()).collect();
        boundary::match_ports(&mut all);
        for port in &all {
            let Some(current) = self.lookup(&port.path, staged).await else { continue };
            let new = match &port.peer {
                Some(peer) => {
                    let host = match boundary::owner_of_port(peer) {
                        Some(h) => self.lookup(&h, staged).await,
                        None => None,
                    };
                    boundary::redirect(port, &current, host.as_ref())
                }
                None => boundary::restore(&current),
            };
            if let Some(v) = new {
                staged.insert(port.path.clone(), v);
            }
        }
        // Remember the peers in each agent's record.
        for a in &agents {
            let mut rec = a.record.lock();
            for p in rec.ports.iter_mut() {
                if let Some(m) = all.iter().find(|x| x.path == p.path && x.agent == p.agent) {
                    p.peer = m.peer.clone();
                }
            }
        }
        Ok(())
    }
}

/// Adds `source` to a fabric's `Oem.Sunfish_RM.FabricSharedWith` unless it is there or owns
/// the fabric; returns whether it changed.
fn add_sharer(v: &mut Value, source: &str) -> bool {
    if managing_agent(v) == Some(source) {
        return false;
    }
    let Some(rm) = v.pointer_mut("/Oem/Sunfish_RM").and_then(Value::as_object_mut) else { return false };
    let list = rm.entry("FabricSharedWith").or_insert_with(|| json!([]));
    let Some(list) = list.as_array_mut() else { return false };
    if list.iter().any(|l| l.get("@odata.id").and_then(Value::as_str) == Some(source)) {
        return false;
    }
    list.push(link(source));
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The crawl follows links below top-level collections, never the agent's own services.
    #[test]
    fn what_the_crawl_follows() {
        assert!(followable("/redfish/v1/Systems/S1#/x").is_some());
        assert!(followable("/redfish/v1/Systems").is_none());
        assert!(followable("/redfish/v1/EventService/Subscriptions/SunfishServer").is_none());
        assert!(followable("http://elsewhere/x").is_none());
    }

    /// Fabrics merge only on an equal, non-empty UUID; a sharer is listed once.
    #[test]
    fn fabric_sharing() {
        let a = json!({"@odata.type": "#Fabric.v1_3_0.Fabric", "UUID": "ABC",
            "Oem": {"Sunfish_RM": {"ManagingAgent": {"@odata.id": "/x/A"}}}});
        let b = json!({"@odata.type": "#Fabric.v1_3_0.Fabric", "UUID": "abc"});
        assert!(same_fabric(&a, &b));
        assert!(!same_fabric(&a, &json!({"@odata.type": "#Fabric.v1_3_0.Fabric"})));
        let mut v = a.clone();
        assert!(add_sharer(&mut v, "/x/B"));
        assert!(!add_sharer(&mut v, "/x/B"));
        assert!(!add_sharer(&mut v, "/x/A"));
        assert_eq!(v["Oem"]["Sunfish_RM"]["FabricSharedWith"], json!([{"@odata.id": "/x/B"}]));
    }
}
