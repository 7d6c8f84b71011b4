//! [`Core`]: the Redfish semantics every front end (server, agent) shares. It validates a
//! request, runs object handlers, offers writes to the agent forwarder, then stores through the
//! storage backend; events go to the event handlers.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};
use tracing::warn;

use crate::action::{split_action_path, ActionHandler, ActionResult};
use crate::aggregation::Aggregator;
use crate::auth::{AuthHooks, AuthService};
use crate::eventservice::{
    EventService, NewEvent, ResumeSubscription, SubmitTestEvent, SubscriptionHooks, SuspendSubscription,
};
use crate::forward::NoForwarder;
use crate::hardware::{HardwareChange, HardwareManager};
use crate::metrics::{Metrics, StorageMetrics, TimedStorage};
use crate::registry::{entries, lookup};
use crate::resource::{check_immutable, collection_template, is_collection, type_name};
use crate::schema::{SchemaSet, SchemaValidator};
use crate::tasks::{task_event, FinalResponse, MonitorState, TaskRef, TaskService};
use crate::tree::Loaded;
use crate::{
    AgentForwarder, AgentForwarderRegistration, Error, EventEnvelope, EventHandler, EventHandlerRegistration,
    Forwarded, ObjectHandler, ObjectHandlerRegistration, Operation, PluginOptions, Resource, ResourcePath, Result,
    StartupError, StorageBackend, StorageBackendRegistration, WriteOp,
};

/// The service's shared state. Cheap to clone; every clone is the same service.
#[derive(Clone)]
pub struct Core {
    inner: Arc<Inner>,
}

struct Inner {
    storage: Arc<dyn StorageBackend>,
    /// Dispatch key (or `*`) → handlers, in name order.
    event_handlers: BTreeMap<String, Vec<(String, Arc<dyn EventHandler>)>>,
    object_handlers: Vec<(String, Arc<dyn ObjectHandler>)>,
    forwarder: Arc<dyn AgentForwarder>,
    /// Action name (`EventService.SubmitTestEvent`) → handler.
    actions: BTreeMap<String, Arc<dyn ActionHandler>>,
    /// The EventService, when the front end configured one (resource events, subscriptions).
    events: Option<Arc<EventService>>,
    /// Tasks for writes that complete later.
    tasks: TaskService,
    /// Accounts, sessions and privileges, when the front end configured them.
    auth: Option<Arc<AuthService>>,
    /// The DMTF schema bundle, when configured.
    schemas: Option<Arc<SchemaSet>>,
    /// Agents and their inventories, when the front end configured aggregation.
    aggregation: Option<Arc<Aggregator>>,
    /// The device behind an agent's tree (agent mode).
    hardware: Option<Arc<dyn HardwareManager>>,
    /// This service's Prometheus metrics.
    metrics: Metrics,
}

/// Which plugins to build, by name, with their options tables. The server fills this from
/// configuration; tests build one by hand.
#[derive(Debug, Clone)]
pub struct PluginSelection {
    /// Storage backend name and options.
    pub storage: (String, Value),
    /// Options per event handler name; every linked handler is built, those absent here with
    /// no options.
    pub event_handlers: BTreeMap<String, Value>,
    /// Active object handlers in call order, with options.
    pub object_handlers: Vec<(String, Value)>,
    /// Forwarder name and options.
    pub forwarder: (String, Value),
}

impl Default for PluginSelection {
    fn default() -> Self {
        PluginSelection {
            storage: ("memory".into(), Value::Null),
            event_handlers: BTreeMap::new(),
            object_handlers: Vec::new(),
            forwarder: ("none".into(), Value::Null),
        }
    }
}

/// Builds a [`Core`] from plugin instances (for tests and embedders that do not go through the
/// registries).
pub struct CoreBuilder {
    storage: Arc<dyn StorageBackend>,
    event_handlers: BTreeMap<String, Vec<(String, Arc<dyn EventHandler>)>>,
    object_handlers: Vec<(String, Arc<dyn ObjectHandler>)>,
    forwarder: Arc<dyn AgentForwarder>,
    actions: BTreeMap<String, Arc<dyn ActionHandler>>,
    events: Option<Arc<EventService>>,
    auth: Option<Arc<AuthService>>,
    schemas: Option<Arc<SchemaSet>>,
    aggregation: Option<Arc<Aggregator>>,
    hardware: Option<Arc<dyn HardwareManager>>,
    /// Timings of the wrapped backend, registered with the core's metrics at build.
    storage_metrics: StorageMetrics,
}

impl CoreBuilder {
    /// Adds an event handler called `name` for the given dispatch keys.
    pub fn event_handler(mut self, name: &str, keys: &[&str], handler: Arc<dyn EventHandler>) -> Self {
        for k in keys {
            self.event_handlers.entry((*k).to_string()).or_default().push((name.to_string(), handler.clone()));
        }
        self
    }

    /// Appends an object handler.
    pub fn object_handler(mut self, name: &str, handler: Arc<dyn ObjectHandler>) -> Self {
        self.object_handlers.push((name.to_string(), handler));
        self
    }

    /// Sets the agent forwarder.
    pub fn forwarder(mut self, forwarder: Arc<dyn AgentForwarder>) -> Self {
        self.forwarder = forwarder;
        self
    }

    /// Registers an action by name (`EventService.SubmitTestEvent`).
    pub fn action(mut self, name: &str, handler: Arc<dyn ActionHandler>) -> Self {
        self.actions.insert(name.to_string(), handler);
        self
    }

    /// The storage backend the core will use (to build services that share it).
    pub fn storage(&self) -> &Arc<dyn StorageBackend> {
        &self.storage
    }

    /// Adds the EventService: its subscription hooks run before any configured object handler,
    /// its actions are registered, and every write through the core publishes a ResourceEvent.
    pub fn event_service(mut self, service: Arc<EventService>) -> Self {
        self.object_handlers
            .insert(0, ("eventservice".into(), Arc::new(SubscriptionHooks { service: service.clone() })));
        self = self
            .action("EventService.SubmitTestEvent", Arc::new(SubmitTestEvent { service: service.clone() }))
            .action("EventDestination.SuspendSubscription", Arc::new(SuspendSubscription { service: service.clone() }))
            .action("EventDestination.ResumeSubscription", Arc::new(ResumeSubscription { service: service.clone() }));
        self.events = Some(service);
        self
    }

    /// Adds accounts, sessions and roles: their hooks run first, before any other object
    /// handler, so a password never reaches another handler or storage.
    pub fn auth(mut self, auth: Arc<AuthService>) -> Self {
        self.object_handlers.insert(0, ("auth".into(), Arc::new(AuthHooks::new(auth.clone()))));
        self.auth = Some(auth);
        self
    }

    /// Adds the aggregation service: its handlers receive agent registrations, uploads and
    /// sync events, deleting an AggregationSource unregisters the agent, and the `agents`
    /// forwarder (the default) forwards through it.
    pub fn aggregation(mut self, aggregator: Arc<Aggregator>) -> Self {
        self = self.event_handler(
            "aggregation",
            &crate::aggregation::AGENT_EVENT_KEYS,
            Arc::new(crate::aggregation::AgentEvents(aggregator.clone())),
        );
        self = self.object_handler("aggregation", Arc::new(crate::aggregation::SourceHooks(aggregator.clone())));
        self = self.object_handler("agentconfig", Arc::new(crate::aggregation::agentconfig::AgentConfigHooks));
        self.aggregation = Some(aggregator);
        self
    }

    /// Agent mode: every write on the device's resources is applied by `manager` first (as the
    /// forwarder), and GETs read live state where the manager can.
    pub fn hardware(mut self, manager: Arc<dyn HardwareManager>) -> Self {
        self.forwarder = Arc::new(crate::hardware::HardwareForwarder(manager.clone()));
        self.hardware = Some(manager);
        self
    }

    /// Puts an object handler before every other one (also before the EventService's and auth's
    /// hooks when called after them): for checks of the client's own body.
    pub fn first_object_handler(mut self, name: &str, handler: Arc<dyn ObjectHandler>) -> Self {
        self.object_handlers.insert(0, (name.to_string(), handler));
        self
    }

    /// Adds a DMTF schema bundle: write bodies are validated against it (before any other
    /// hook), and what clients may do to a resource follows its capabilities (insertable,
    /// updatable, deletable). Call after the other services.
    pub fn schemas(mut self, schemas: Arc<SchemaSet>) -> Self {
        self = self.first_object_handler("schema", Arc::new(SchemaValidator::new(schemas.clone())));
        self.schemas = Some(schemas);
        self
    }

    /// The finished core.
    pub fn build(self) -> Core {
        let metrics = Metrics::new(&self.storage_metrics);
        if let Some(e) = &self.events {
            metrics.register(e.metrics().collectors());
        }
        if let Some(a) = &self.aggregation {
            metrics.register(a.metrics().collectors());
        }
        Core {
            inner: Arc::new(Inner {
                storage: self.storage.clone(),
                event_handlers: self.event_handlers,
                object_handlers: self.object_handlers,
                forwarder: self.forwarder,
                actions: self.actions,
                events: self.events,
                tasks: TaskService::new(self.storage.clone()),
                auth: self.auth,
                schemas: self.schemas,
                aggregation: self.aggregation,
                hardware: self.hardware,
                metrics,
            }),
        }
    }
}

/// A JSON body that must be an object.
fn into_object(v: Value) -> Result<Map<String, Value>> {
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(Error::MalformedJson { reason: "the request body must be a JSON object".into() }),
    }
}

impl Core {
    /// Starts a [`CoreBuilder`] over `storage`, with no handlers and the `none` forwarder.
    /// The backend is wrapped in a [`TimedStorage`] so that every service built on the
    /// builder's [`CoreBuilder::storage`] is timed in one place.
    pub fn builder(storage: Arc<dyn StorageBackend>) -> CoreBuilder {
        let storage_metrics = StorageMetrics::default();
        CoreBuilder {
            storage: Arc::new(TimedStorage::new(storage, storage_metrics.clone())),
            storage_metrics,
            event_handlers: BTreeMap::new(),
            object_handlers: Vec::new(),
            forwarder: Arc::new(NoForwarder),
            actions: BTreeMap::new(),
            events: None,
            auth: None,
            schemas: None,
            aggregation: None,
            hardware: None,
        }
    }

    /// This service's Prometheus metrics (`/metrics`).
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Builds every selected plugin through the link-time registries.
    ///
    /// # Errors
    /// Unknown or duplicate plugin names, bad options, a backend that cannot open.
    pub async fn from_plugins(selection: PluginSelection) -> Result<Core, StartupError> {
        Ok(Self::builder_from_plugins(selection).await?.build())
    }

    /// Like [`Core::from_plugins`], but returns the builder so the front end can add services
    /// (the EventService, actions) before building.
    ///
    /// # Errors
    /// As [`Core::from_plugins`].
    pub async fn builder_from_plugins(selection: PluginSelection) -> Result<CoreBuilder, StartupError> {
        let (sname, sopts) = selection.storage;
        let reg = lookup::<StorageBackendRegistration>(&sname)?;
        let storage = (reg.build)(PluginOptions::new("storage", &sname, sopts)).await?;
        let mut builder = Core::builder(storage);

        let handlers = entries::<EventHandlerRegistration>()?;
        for name in selection.event_handlers.keys() {
            lookup::<EventHandlerRegistration>(name)?;
        }
        for reg in handlers {
            let opts = selection.event_handlers.get(reg.name).cloned().unwrap_or(Value::Null);
            match (reg.build)(PluginOptions::new("event-handler", reg.name, opts))? {
                Some(h) => builder = builder.event_handler(reg.name, reg.message_ids, h),
                None => tracing::info!(handler = reg.name, "event handler idle (not configured)"),
            }
        }
        for (name, opts) in selection.object_handlers {
            let reg = lookup::<ObjectHandlerRegistration>(&name)?;
            builder = builder.object_handler(&name, (reg.build)(PluginOptions::new("object-handler", &name, opts))?);
        }
        let (fname, fopts) = selection.forwarder;
        let reg = lookup::<AgentForwarderRegistration>(&fname)?;
        builder = builder.forwarder((reg.build)(PluginOptions::new("forwarder", &fname, fopts))?);
        Ok(builder)
    }

    /// Starts background services (the EventService's delivery workers). Call once, inside
    /// the runtime, after seeding.
    ///
    /// # Errors
    /// Storage failures while loading subscriptions and the event log.
    pub async fn start(&self) -> Result<()> {
        self.inner.tasks.recover().await?;
        if let Some(auth) = &self.inner.auth {
            auth.load().await?;
            auth.start_sweeper(self);
            auth.follow_changes();
        }
        if let Some(ev) = &self.inner.events {
            ev.start().await?;
        }
        if let Some(agg) = &self.inner.aggregation {
            agg.start(self).await?;
        }
        Ok(())
    }

    /// Stops background services.
    pub fn stop(&self) {
        if let Some(ev) = &self.inner.events {
            ev.stop();
        }
        if let Some(agg) = &self.inner.aggregation {
            agg.stop();
        }
    }

    /// The aggregation service, if configured.
    pub fn aggregation(&self) -> Option<&Arc<Aggregator>> {
        self.inner.aggregation.as_ref()
    }

    /// The resource at `path` as a client reads it: the stored copy, or, for resources of an
    /// agent configured for read-through, what the agent has now.
    ///
    /// # Errors
    /// `NotFound`; `Agent` when a read-through agent cannot answer.
    pub async fn read(&self, path: &ResourcePath) -> Result<Resource> {
        let current = match self.inner.storage.get(path).await {
            Err(Error::NotFound { .. }) if self.inner.aggregation.is_some() => {
                return crate::aggregation::agentconfig::service_collection(path)
                    .ok_or_else(|| Error::NotFound { path: path.to_string() });
            }
            other => other?,
        };
        if let Some(hw) = self.inner.hardware.as_ref().filter(|_| !crate::hardware::is_service_path(path)) {
            if let Some(live) = hw.read(self, path).await? {
                if live != *current.value() && !current.is_collection() {
                    return self.inner.storage.replace(path, live, None).await;
                }
            }
        }
        if let Some(agg) = &self.inner.aggregation {
            if let Some(fresh) = agg.read_through(&current, path).await? {
                return Ok(fresh);
            }
        }
        Ok(current)
    }

    /// The DMTF schema bundle, if configured.
    pub fn schemas(&self) -> Option<&Arc<SchemaSet>> {
        self.inner.schemas.as_ref()
    }

    /// What clients may do to the resource at `path`: the service root is read-only, a
    /// collection takes GET and POST, anything else GET, PUT, PATCH and DELETE; with a schema
    /// bundle, minus what the type's schema says is not insertable, updatable or deletable.
    /// The server's `Allow` headers and the 405s of client requests both come from here.
    pub fn allowed(&self, path: &ResourcePath, res: &Resource) -> Vec<Operation> {
        let mut ops = if path.is_root() {
            vec![Operation::Get]
        } else if res.is_collection() {
            Operation::COLLECTION.to_vec()
        } else {
            Operation::RESOURCE.to_vec()
        };
        let caps = self.inner.schemas.as_ref().and_then(|s| res.odata_type().and_then(|t| s.capabilities(t)));
        if let Some(c) = caps {
            ops.retain(|op| match op {
                Operation::Get => true,
                Operation::Create => c.insertable,
                Operation::Replace | Operation::Patch => c.updatable,
                Operation::Delete => c.deletable,
            });
        }
        ops
    }

    /// The authentication service, if configured.
    pub fn auth(&self) -> Option<&Arc<AuthService>> {
        self.inner.auth.as_ref()
    }

    /// The EventService, if configured.
    pub fn events(&self) -> Option<&Arc<EventService>> {
        self.inner.events.as_ref()
    }

    /// Publishes a ResourceEvent about a write that went through the core. A failure to store
    /// the event is logged: the write itself already happened.
    async fn resource_event(&self, key: &str, message: &str, path: &ResourcePath, rtype: &str) {
        if let Some(ev) = &self.inner.events {
            let t = (!rtype.is_empty()).then_some(rtype);
            if let Err(e) = ev.publish(vec![NewEvent::resource(key, message, path, t)]).await {
                warn!(path = %path, error = %e, "resource event not published");
            }
        }
    }

    /// Runs the action at `path` (`<resource>/Actions/<Name>`).
    ///
    /// # Errors
    /// `NotFound` for an unknown action or target; the action's own errors.
    pub async fn action(&self, path: &ResourcePath, payload: Value) -> Result<ActionResult> {
        let (target, name) = split_action_path(path).ok_or_else(|| Error::not_found(path))?;
        let handler = self.inner.actions.get(&name).ok_or_else(|| Error::not_found(path))?;
        self.inner.storage.get(&target).await?;
        handler.invoke(self, &target, payload).await
    }

    /// Whether `path` names a registered action (`.../Actions/<Name>`).
    pub fn is_action(&self, path: &ResourcePath) -> bool {
        split_action_path(path).is_some_and(|(_, name)| self.inner.actions.contains_key(&name))
    }

    /// The storage backend.
    pub fn storage(&self) -> &Arc<dyn StorageBackend> {
        &self.inner.storage
    }

    /// Names of the active event handlers per dispatch key, for logs and diagnostics.
    pub fn event_handler_names(&self) -> Vec<(String, String)> {
        self.inner
            .event_handlers
            .iter()
            .flat_map(|(k, hs)| hs.iter().map(move |(n, _)| (k.clone(), n.clone())))
            .collect()
    }

    /// Stores `resources` when the store is empty; returns whether it did. This is how a new
    /// service gets its initial tree.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn seed_if_empty(&self, resources: Vec<Loaded>) -> Result<bool> {
        if !self.inner.storage.paths().await?.is_empty() {
            return Ok(false);
        }
        self.inner.storage.import_loaded(resources).await?;
        Ok(true)
    }

    /// Stores a change the hardware made by itself (agent mode), without asking the hardware
    /// manager again, and publishes the matching ResourceEvent.
    ///
    /// # Errors
    /// Storage failures; `NotFound` for a change to a resource that does not exist.
    pub async fn apply_change(&self, change: HardwareChange) -> Result<()> {
        let storage = &self.inner.storage;
        match change {
            HardwareChange::Created(path, mut value) => {
                let collection = path.parent().ok_or_else(|| Error::not_found(&path))?;
                let rtype = type_name(&value).unwrap_or_default().to_string();
                if let Value::Object(m) = &mut value {
                    m.insert("@odata.id".into(), Value::String(path.to_string()));
                    m.entry("Id").or_insert_with(|| Value::String(path.last().unwrap_or_default().to_string()));
                }
                let template = match storage.get(&collection).await {
                    Ok(_) => None,
                    Err(Error::NotFound { .. }) => Some(collection_template(&collection, &rtype)),
                    Err(e) => return Err(e),
                };
                storage.create(&collection, value, template).await?;
                self.resource_event("ResourceCreated", "The resource was created successfully.", &path, &rtype).await;
            }
            HardwareChange::Changed(path, value) => {
                let rtype = type_name(&value).unwrap_or_default().to_string();
                storage.replace(&path, value, None).await?;
                self.resource_event("ResourceChanged", "One or more resource properties have changed.", &path, &rtype)
                    .await;
            }
            HardwareChange::Removed(path) => {
                storage.delete(&path, None).await?;
                self.resource_event("ResourceRemoved", "The resource was removed successfully.", &path, "").await;
            }
        }
        Ok(())
    }

    /// The resource at `path`, from the store (reads are never forwarded here).
    ///
    /// # Errors
    /// `NotFound`.
    pub async fn get(&self, path: &ResourcePath) -> Result<Resource> {
        self.inner.storage.get(path).await
    }

    async fn before(&self, op: &mut WriteOp) -> Result<()> {
        for (_, h) in &self.inner.object_handlers {
            if h.resource_types().iter().any(|t| *t == "*" || *t == op.resource_type) {
                h.before(self, op).await?;
            }
        }
        Ok(())
    }

    async fn after(&self, op: &WriteOp, result: Option<&Resource>) {
        for (name, h) in &self.inner.object_handlers {
            if h.resource_types().iter().any(|t| *t == "*" || *t == op.resource_type) {
                if let Err(e) = h.after(self, op, result).await {
                    warn!(handler = %name, path = %op.path, error = %e, "object handler failed after write");
                }
            }
        }
    }

    /// Runs handlers and the forwarder.
    async fn prepare(&self, op: &mut WriteOp) -> Result<Prepared> {
        self.before(op).await?;
        if let Some(p) = op.pending.take() {
            return Ok(Prepared { to_store: op.payload.clone(), forwarded: false, pending: Some(p) });
        }
        Ok(match self.inner.forwarder.forward(self, op).await? {
            Forwarded::NotOwned => Prepared { to_store: op.payload.clone(), forwarded: false, pending: None },
            Forwarded::Applied(None) => Prepared { to_store: op.payload.clone(), forwarded: true, pending: None },
            Forwarded::Applied(Some(reply)) => Prepared { to_store: Some(reply), forwarded: true, pending: None },
            Forwarded::Running(p) => Prepared { to_store: op.payload.clone(), forwarded: true, pending: Some(p) },
        })
    }

    /// Runs a prepared write to the end: at once, or (when work is pending and the caller is a
    /// client, who can poll a task) as a task whose monitor is returned. Internal callers
    /// (`client == false`) wait for pending work instead, and are not held to the schema's
    /// capabilities, which describe what clients may do.
    async fn execute(
        &self,
        op: WriteOp,
        new_collection: Option<Value>,
        prepared: Prepared,
        client: bool,
    ) -> Result<Outcome> {
        let Some(pending) = prepared.pending else {
            let written = self.commit(&op, new_collection, prepared.to_store, prepared.forwarded).await?;
            self.finish(&op, &written).await;
            return Ok(Outcome::Done(written));
        };
        let Some(work) = pending.take() else {
            return Err(Error::Internal { message: "pending work already taken".into() });
        };
        if !client {
            let to_store = work.await?.or(prepared.to_store);
            let written = self.commit(&op, new_collection, to_store, true).await?;
            self.finish(&op, &written).await;
            return Ok(Outcome::Done(written));
        }
        let task = self.inner.tasks.create(op.operation, &op.path, op.payload.as_ref(), &pending).await?;
        self.task_event(&task, "TaskStarted", format!("The task with Id '{}' has started.", task.id), "OK", Vec::new())
            .await;
        let core = self.clone();
        let t = task.clone();
        let mut progress = pending.progress();
        tokio::spawn(async move {
            let mut work = work;
            let result = loop {
                tokio::select! {
                    r = &mut work => break r,
                    changed = progress.changed() => {
                        if changed.is_err() { break (&mut work).await; }
                        let pct = *progress.borrow_and_update();
                        if let Err(e) = core.inner.tasks.set_progress(&t, pct).await {
                            warn!(task = %t.id, error = %e, "task progress not stored");
                        }
                        core.task_event(&t, "TaskProgressChanged",
                            format!("The task with Id '{}' has changed to progress {pct} percent complete.", t.id),
                            "OK", vec![Value::String(t.id.clone()), Value::from(pct)]).await;
                    }
                }
            };
            let outcome = match result {
                Ok(reply) => {
                    let to_store = reply.or(prepared.to_store);
                    match core.commit(&op, new_collection, to_store, true).await {
                        Ok(written) => {
                            core.finish(&op, &written).await;
                            written.final_response()
                        }
                        Err(e) => FinalResponse::Failure(e),
                    }
                }
                Err(e) => FinalResponse::Failure(e),
            };
            match core.inner.tasks.finish(&t, outcome).await {
                Ok(key) => {
                    let text = if key == "TaskCompletedOK" {
                        format!("The task with Id '{}' has completed.", t.id)
                    } else {
                        format!("The task with Id '{}' has completed with errors.", t.id)
                    };
                    let sev = if key == "TaskCompletedOK" { "OK" } else { "Critical" };
                    core.task_event(&t, key, text, sev, Vec::new()).await;
                }
                Err(e) => warn!(task = %t.id, error = %e, "task completion not stored"),
            }
        });
        Ok(Outcome::Accepted(task))
    }

    async fn task_event(&self, task: &TaskRef, key: &str, text: String, severity: &str, args: Vec<Value>) {
        if let Some(ev) = &self.inner.events {
            if let Err(e) = ev.publish(vec![task_event(key, &task.id, text, severity, args)]).await {
                warn!(task = %task.id, error = %e, "task event not published");
            }
        }
    }

    /// The storage part of a write.
    async fn commit(
        &self,
        op: &WriteOp,
        new_collection: Option<Value>,
        to_store: Option<Value>,
        forwarded: bool,
    ) -> Result<Written> {
        let storage = &self.inner.storage;
        let if_match = if forwarded { None } else { op.if_match };
        match op.operation {
            Operation::Create => {
                let collection = op
                    .collection
                    .as_ref()
                    .ok_or_else(|| Error::Internal { message: "create without collection".into() })?;
                let mut obj = into_object(to_store.unwrap_or_default())?;
                // An agent reply keeps the identity Sunfish assigned.
                obj.insert("@odata.id".into(), Value::String(op.path.to_string()));
                obj.entry("Id").or_insert_with(|| Value::String(op.path.last().unwrap_or_default().to_string()));
                let value = Value::Object(obj);
                match storage.create(collection, value.clone(), new_collection).await {
                    // The agent's own ResourceCreated for this write can be synced before its
                    // reply arrives: the member that same agent now owns takes the reply.
                    Err(Error::AlreadyExists { .. })
                        if forwarded && self.owned_by_same_agent(&op.path, &value).await =>
                    {
                        Ok(Written::Created(storage.replace(&op.path, value, None).await?))
                    }
                    created => Ok(Written::Created(created?)),
                }
            }
            Operation::Replace => {
                Ok(Written::Updated(storage.replace(&op.path, to_store.unwrap_or_default(), if_match).await?))
            }
            Operation::Patch => {
                let stored = match to_store {
                    // A full object from the agent replaces ours.
                    Some(reply) if forwarded && Some(&reply) != op.payload.as_ref() => {
                        storage.replace(&op.path, reply, None).await?
                    }
                    delta => storage.patch(&op.path, delta.unwrap_or_default(), if_match).await?,
                };
                Ok(Written::Updated(stored))
            }
            Operation::Delete => match storage.delete(&op.path, if_match).await {
                // Gone already (the agent's own ResourceRemoved was synced first): the agent
                // deleted it, which is what the client asked for.
                Err(Error::NotFound { .. }) if forwarded => Ok(Written::Deleted(vec![op.path.clone()])),
                deleted => Ok(Written::Deleted(deleted?)),
            },
            Operation::Get => Err(Error::Internal { message: "GET is not a write".into() }),
        }
    }

    /// Whether the stored resource at `path` and `reply` name the same managing agent
    /// (`Oem.Sunfish_RM.ManagingAgent`), so a forwarded create's reply may replace it.
    async fn owned_by_same_agent(&self, path: &ResourcePath, reply: &Value) -> bool {
        let Some(agent) = crate::aggregation::managing_agent(reply) else { return false };
        match self.inner.storage.get(path).await {
            Ok(current) => crate::aggregation::managing_agent(&current.value()) == Some(agent),
            Err(_) => false,
        }
    }

    /// After a committed write: object handlers' `after`, then the ResourceEvent.
    async fn finish(&self, op: &WriteOp, written: &Written) {
        let (key, text) = match op.operation {
            Operation::Create => ("ResourceCreated", "The resource was created successfully."),
            Operation::Delete => ("ResourceRemoved", "The resource was removed successfully."),
            _ => ("ResourceChanged", "One or more resource properties have changed."),
        };
        self.after(op, written.resource()).await;
        self.resource_event(key, text, &op.path, &op.resource_type).await;
    }

    /// POST `payload` into the collection at `collection`; returns the stored member (waiting
    /// for any pending work).
    ///
    /// # Errors
    /// As [`Core::create_request`].
    pub async fn create(&self, collection: &ResourcePath, payload: Value) -> Result<Resource> {
        self.create_inner(collection, payload, false).await?.into_resource()
    }

    /// POST `payload` into the collection at `collection`, as a client request: a write that
    /// handlers or the forwarder report as still running becomes a task.
    ///
    /// Ids: with neither `Id` nor `@odata.id` the member gets a UUID v4 Id; a given `@odata.id`
    /// must be a direct member of `collection` and agree with a given `Id`. A collection that
    /// does not exist yet below an existing resource is created with the member's collection
    /// type and linked from its parent.
    ///
    /// # Errors
    /// `PropertyMissing` (`@odata.type`), `NotAllowed` (collection payload, non-collection
    /// target), `PropertyValue` (bad identity), `AlreadyExists`, `NotFound`, handler and agent
    /// errors.
    pub async fn create_request(&self, collection: &ResourcePath, payload: Value) -> Result<Outcome> {
        self.create_inner(collection, payload, true).await
    }

    async fn create_inner(&self, posted: &ResourcePath, payload: Value, client: bool) -> Result<Outcome> {
        let Value::Object(mut obj) = payload else {
            return Err(Error::MalformedJson { reason: "the request body must be a JSON object".into() });
        };
        let mut collection = posted.clone();
        if self.inner.aggregation.is_some() {
            crate::aggregation::agentconfig::ensure_collection(&*self.inner.storage, posted).await?;
        }
        let mut target = match self.inner.storage.get(posted).await {
            Ok(r) => Some(r),
            Err(Error::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        // The reference's form (its agents and its server forward creates this way): a POST at
        // the new member's own URI, inside an existing collection.
        if target.is_none() {
            if let (Some(parent), Some(id)) = (posted.parent(), posted.last()) {
                if let Ok(p) = self.inner.storage.get(&parent).await {
                    if p.is_collection() {
                        obj.entry("Id").or_insert_with(|| Value::String(id.to_string()));
                        obj.entry("@odata.id").or_insert_with(|| Value::String(posted.to_string()));
                        collection = parent;
                        target = Some(p);
                    }
                }
            }
        }
        let collection = &collection;
        if let Some(r) = &target {
            let allowed = self.allowed(collection, r);
            if !r.is_collection() || (client && !allowed.contains(&Operation::Create)) {
                return Err(Error::NotAllowed { path: collection.to_string(), operation: Operation::Create, allowed });
            }
        }
        // Clients of service-managed collections (subscriptions, sessions, accounts) do not send
        // `@odata.type`; anywhere else it is required.
        if !obj.contains_key("@odata.type") {
            if let Some(t) = target.as_ref().and_then(|c| c.type_name()).and_then(implied_member_type) {
                obj.insert("@odata.type".into(), Value::String(t.to_string()));
            }
        }
        let payload = Value::Object(obj);
        let Some(rtype) = type_name(&payload).map(str::to_string) else {
            return Err(Error::PropertyMissing { property: "@odata.type".into() });
        };
        // A collection cannot be POSTed; collections are made by posting their first member.
        if is_collection(&payload) {
            return Err(Error::NotAllowed {
                path: collection.to_string(),
                operation: Operation::Create,
                allowed: Operation::COLLECTION.to_vec(),
            });
        }
        let mut obj = into_object(payload)?;
        let new_collection = match target {
            Some(r) if r.is_collection() => None,
            Some(_) => {
                return Err(Error::NotAllowed {
                    path: collection.to_string(),
                    operation: Operation::Create,
                    allowed: if collection.is_root() {
                        vec![Operation::Get, Operation::Patch]
                    } else {
                        Operation::RESOURCE.to_vec()
                    },
                })
            }
            None => Some(collection_template(collection, &rtype)),
        };
        let member = member_identity(collection, &mut obj)?;
        let mut op = WriteOp {
            operation: Operation::Create,
            path: member,
            collection: Some(collection.clone()),
            resource_type: rtype,
            payload: Some(Value::Object(obj)),
            if_match: None,
            pending: None,
        };
        let prepared = self.prepare(&mut op).await?;
        self.execute(op, new_collection, prepared, client).await
    }

    /// The stored resource at `path`, refusing collections for `operation`.
    async fn writable(
        &self,
        path: &ResourcePath,
        operation: Operation,
        if_match: Option<u64>,
        client: bool,
    ) -> Result<Resource> {
        let current = self.inner.storage.get(path).await?;
        // The service root describes the service; clients read it only. Clients may do only
        // what the resource's schema allows.
        let allowed = self.allowed(path, &current);
        if path.is_root() || (client && !current.is_collection() && !allowed.contains(&operation)) {
            return Err(Error::NotAllowed { path: path.to_string(), operation, allowed });
        }
        if current.is_collection() {
            return Err(Error::NotAllowed {
                path: path.to_string(),
                operation,
                allowed: Operation::COLLECTION.to_vec(),
            });
        }
        // Checked early too, so a stale write is never forwarded to an agent; storage checks
        // again atomically.
        if if_match.is_some_and(|rev| rev != current.revision()) {
            return Err(Error::PreconditionFailed { path: path.to_string() });
        }
        Ok(current)
    }

    /// PUT: replaces the resource at `path` with `payload` (identity and type may be omitted,
    /// they are kept; changing them is refused). `if_match` is checked atomically by storage.
    ///
    /// # Errors
    /// As [`Core::replace_request`].
    pub async fn replace(&self, path: &ResourcePath, payload: Value, if_match: Option<u64>) -> Result<Resource> {
        self.replace_inner(path, payload, if_match, false).await?.into_resource()
    }

    /// PUT as a client request (may become a task).
    ///
    /// # Errors
    /// `NotFound`, `NotAllowed` (collection), `PropertyNotWritable`, `PreconditionFailed`,
    /// handler and agent errors.
    pub async fn replace_request(&self, path: &ResourcePath, payload: Value, if_match: Option<u64>) -> Result<Outcome> {
        self.replace_inner(path, payload, if_match, true).await
    }

    async fn replace_inner(
        &self,
        path: &ResourcePath,
        payload: Value,
        if_match: Option<u64>,
        client: bool,
    ) -> Result<Outcome> {
        let current = self.writable(path, Operation::Replace, if_match, client).await?;
        let incoming = Value::Object(into_object(payload)?);
        let stored = current.value_for_write();
        check_immutable(stored, &incoming)?;
        let mut obj = into_object(incoming)?;
        for prop in crate::resource::IMMUTABLE_PROPERTIES {
            if let Some(v) = stored.get(prop) {
                obj.entry(prop).or_insert_with(|| v.clone());
            }
        }
        obj.entry("@odata.id").or_insert_with(|| Value::String(path.to_string()));
        let mut op = WriteOp {
            operation: Operation::Replace,
            path: path.clone(),
            collection: None,
            resource_type: current.type_name().unwrap_or_default().to_string(),
            payload: Some(Value::Object(obj)),
            if_match,
            pending: None,
        };
        let prepared = self.prepare(&mut op).await?;
        self.execute(op, None, prepared, client).await
    }

    /// PATCH: merges `delta` into the resource at `path` (objects merge, arrays replace).
    ///
    /// # Errors
    /// As [`Core::replace_request`].
    pub async fn patch(&self, path: &ResourcePath, delta: Value, if_match: Option<u64>) -> Result<Resource> {
        self.patch_inner(path, delta, if_match, false).await?.into_resource()
    }

    /// PATCH as a client request (may become a task).
    ///
    /// # Errors
    /// As [`Core::replace_request`].
    pub async fn patch_request(&self, path: &ResourcePath, delta: Value, if_match: Option<u64>) -> Result<Outcome> {
        self.patch_inner(path, delta, if_match, true).await
    }

    async fn patch_inner(
        &self,
        path: &ResourcePath,
        delta: Value,
        if_match: Option<u64>,
        client: bool,
    ) -> Result<Outcome> {
        let current = self.writable(path, Operation::Patch, if_match, client).await?;
        let mut delta = into_object(delta)?;
        let stored = current.value_for_write();
        // Annotations that restate the resource (`@odata.id` with or without a trailing slash,
        // the same `@odata.type`) are dropped; a PATCH of nothing else changes nothing.
        delta.retain(|k, v| {
            if k == "@odata.id" {
                let same = v.as_str().and_then(|s| ResourcePath::parse(s).ok()).is_some_and(|p| &p == path);
                return !same;
            }
            !(k.starts_with("@odata.") && stored.get(k.as_str()) == Some(v))
        });
        if delta.is_empty() {
            return Err(Error::NoOperation);
        }
        let delta = Value::Object(delta);
        check_immutable(stored, &delta)?;
        let mut op = WriteOp {
            operation: Operation::Patch,
            path: path.clone(),
            collection: None,
            resource_type: current.type_name().unwrap_or_default().to_string(),
            payload: Some(delta),
            if_match,
            pending: None,
        };
        let prepared = self.prepare(&mut op).await?;
        self.execute(op, None, prepared, client).await
    }

    /// DELETE: removes the resource, its subtree, its parent entry and every link to it.
    /// Returns the deleted paths.
    ///
    /// # Errors
    /// As [`Core::delete_request`].
    pub async fn delete(&self, path: &ResourcePath, if_match: Option<u64>) -> Result<Vec<ResourcePath>> {
        match self.delete_inner(path, if_match, false).await? {
            Outcome::Done(Written::Deleted(p)) => Ok(p),
            _ => Err(Error::Internal { message: "delete did not delete".into() }),
        }
    }

    /// DELETE as a client request (may become a task).
    ///
    /// # Errors
    /// `NotFound`, `NotAllowed` (root, collections), `PreconditionFailed`, handler and agent
    /// errors.
    pub async fn delete_request(&self, path: &ResourcePath, if_match: Option<u64>) -> Result<Outcome> {
        self.delete_inner(path, if_match, true).await
    }

    async fn delete_inner(&self, path: &ResourcePath, if_match: Option<u64>, client: bool) -> Result<Outcome> {
        if path.is_root() {
            return Err(Error::NotAllowed {
                path: path.to_string(),
                operation: Operation::Delete,
                allowed: vec![Operation::Get],
            });
        }
        let current = self.writable(path, Operation::Delete, if_match, client).await?;
        let mut op = WriteOp {
            operation: Operation::Delete,
            path: path.clone(),
            collection: None,
            resource_type: current.type_name().unwrap_or_default().to_string(),
            payload: None,
            if_match,
            pending: None,
        };
        let prepared = self.prepare(&mut op).await?;
        self.execute(op, None, prepared, client).await
    }

    /// What the task monitor of task `id` answers.
    ///
    /// # Errors
    /// `NotFound` for an unknown task.
    pub async fn task_monitor(&self, id: &str) -> Result<MonitorState> {
        self.inner.tasks.monitor(id).await
    }

    /// Handles an event envelope from `/EventListener`: validates it and dispatches **every**
    /// event to the handlers registered for its key (and to `*` handlers). Unknown MessageIds
    /// are accepted. Then the envelope is routed to subscribers; returns the subscription Ids
    /// it was queued for.
    ///
    /// # Errors
    /// Envelope validation errors; the first handler error.
    pub async fn handle_event(&self, envelope: Value) -> Result<Vec<String>> {
        let env = EventEnvelope::parse(envelope)?;
        for ev in &env.events {
            for key in [ev.key(), "*"] {
                if let Some(hs) = self.inner.event_handlers.get(key) {
                    for (_, h) in hs {
                        h.handle(self, &env, ev).await?;
                    }
                }
            }
        }
        let Some(service) = &self.inner.events else { return Ok(Vec::new()) };
        // An agent's events are about its resources: their origins are translated to ours, and
        // the resource events the aggregator acted on were re-published by it already.
        let agent = self.inner.aggregation.as_ref().and_then(|a| a.sender(&env).map(|id| (a, id)));
        let events = env
            .events
            .iter()
            .filter(|ev| {
                agent.is_none() || !matches!(ev.key(), "ResourceCreated" | "ResourceChanged" | "ResourceRemoved")
            })
            .map(|ev| NewEvent {
                message_id: ev.message_id.clone(),
                message: ev.raw.get("Message").and_then(Value::as_str).map(str::to_string),
                message_args: ev.message_args.clone(),
                severity: String::new(),
                origin: ev
                    .origin
                    .as_deref()
                    .map(|o| agent.as_ref().map_or_else(|| o.to_string(), |(a, id)| a.to_ours(id, o)))
                    .and_then(|o| ResourcePath::parse_link(&o).ok()),
                origin_type: None,
                raw: Some(ev.raw.clone()),
            })
            .collect();
        service.publish(events).await
    }
}

/// Member types implied by the collections the service manages itself, for POST bodies
/// without `@odata.type` (as Redfish clients send them).
const IMPLIED_MEMBER_TYPES: [(&str, &str); 5] = [
    ("EventDestinationCollection", "#EventDestination.v1_16_0.EventDestination"),
    ("SessionCollection", "#Session.v1_8_0.Session"),
    ("ManagerAccountCollection", "#ManagerAccount.v1_14_1.ManagerAccount"),
    ("AggregationSourceCollection", "#AggregationSource.v1_5_0.AggregationSource"),
    ("SunfishAgentConfigurationCollection", crate::aggregation::agentconfig::MEMBER_TYPE),
];

fn implied_member_type(collection_type: &str) -> Option<&'static str> {
    IMPLIED_MEMBER_TYPES.iter().find(|(c, _)| *c == collection_type).map(|(_, t)| *t)
}

/// What a prepared write still needs.
struct Prepared {
    to_store: Option<Value>,
    forwarded: bool,
    pending: Option<crate::tasks::Pending>,
}

/// The result of a committed write.
#[derive(Debug, Clone)]
pub enum Written {
    /// A new member (201).
    Created(Resource),
    /// A replaced or patched resource (200).
    Updated(Resource),
    /// Deleted paths (204).
    Deleted(Vec<ResourcePath>),
}

impl Written {
    /// The stored resource, if the write left one.
    pub fn resource(&self) -> Option<&Resource> {
        match self {
            Written::Created(r) | Written::Updated(r) => Some(r),
            Written::Deleted(_) => None,
        }
    }

    fn final_response(&self) -> FinalResponse {
        match self {
            Written::Created(r) => FinalResponse::Success {
                status: 201,
                location: r.value().get("@odata.id").and_then(Value::as_str).map(str::to_string),
                body: Some(r.value().into_owned()),
            },
            Written::Updated(r) => {
                FinalResponse::Success { status: 200, location: None, body: Some(r.value().into_owned()) }
            }
            Written::Deleted(_) => FinalResponse::Success { status: 204, location: None, body: None },
        }
    }
}

/// How a client write ended: done now, or accepted as a task.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Completed.
    Done(Written),
    /// Still running; the client polls the task monitor.
    Accepted(TaskRef),
}

impl Outcome {
    /// The stored resource of a completed create/replace/patch.
    ///
    /// # Errors
    /// `Internal` for a task or a delete (callers that cannot take tasks never get one).
    pub fn into_resource(self) -> Result<Resource> {
        match self {
            Outcome::Done(Written::Created(r) | Written::Updated(r)) => Ok(r),
            _ => Err(Error::Internal { message: "the write left no resource".into() }),
        }
    }
}

/// Completes the identity of a new member of `collection` in `obj` and returns its path.
fn member_identity(collection: &ResourcePath, obj: &mut Map<String, Value>) -> Result<ResourcePath> {
    let id = match obj.get("Id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(Error::property_value("Id", "must be a string")),
    };
    let odata_id = match obj.get("@odata.id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            Some(ResourcePath::parse(s).map_err(|e| Error::property_value("@odata.id", e.to_string()))?)
        }
        Some(_) => return Err(Error::property_value("@odata.id", "must be a string")),
    };
    let path = match (id, odata_id) {
        (None, None) => collection.child(&uuid::Uuid::new_v4().to_string())?,
        (Some(id), None) => collection.child(&id).map_err(|e| Error::property_value("Id", e.to_string()))?,
        (id, Some(p)) => {
            if p.parent().as_ref() != Some(collection) {
                return Err(Error::property_value("@odata.id", format!("must be a direct member of {collection}")));
            }
            if id.is_some_and(|id| Some(id.as_str()) != p.last()) {
                return Err(Error::property_value("Id", "must equal the last segment of @odata.id"));
            }
            p
        }
    };
    obj.insert("@odata.id".into(), Value::String(path.to_string()));
    obj.insert("Id".into(), Value::String(path.last().unwrap_or_default().to_string()));
    Ok(path)
}
