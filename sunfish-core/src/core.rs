//! [`Core`]: the Redfish semantics every front end (server, agent) shares. It validates a
//! request, runs object handlers, offers writes to the agent forwarder, then stores through the
//! storage backend; events go to the event handlers.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};
use tracing::warn;

use crate::action::{split_action_path, ActionHandler, ActionResult};
use crate::eventservice::{EventService, NewEvent, ResumeSubscription, SubmitTestEvent, SubscriptionHooks, SuspendSubscription};
use crate::forward::NoForwarder;
use crate::registry::{entries, lookup};
use crate::resource::{check_immutable, collection_template, is_collection, type_name};
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
        self.object_handlers.insert(0, ("eventservice".into(), Arc::new(SubscriptionHooks { service: service.clone() })));
        self = self
            .action("EventService.SubmitTestEvent", Arc::new(SubmitTestEvent { service: service.clone() }))
            .action("EventDestination.SuspendSubscription", Arc::new(SuspendSubscription { service: service.clone() }))
            .action("EventDestination.ResumeSubscription", Arc::new(ResumeSubscription { service: service.clone() }));
        self.events = Some(service);
        self
    }

    /// The finished core.
    pub fn build(self) -> Core {
        Core {
            inner: Arc::new(Inner {
                storage: self.storage,
                event_handlers: self.event_handlers,
                object_handlers: self.object_handlers,
                forwarder: self.forwarder,
                actions: self.actions,
                events: self.events,
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
    pub fn builder(storage: Arc<dyn StorageBackend>) -> CoreBuilder {
        CoreBuilder {
            storage,
            event_handlers: BTreeMap::new(),
            object_handlers: Vec::new(),
            forwarder: Arc::new(NoForwarder),
            actions: BTreeMap::new(),
            events: None,
        }
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
        if let Some(ev) = &self.inner.events {
            ev.start().await?;
        }
        Ok(())
    }

    /// Stops background services.
    pub fn stop(&self) {
        if let Some(ev) = &self.inner.events {
            ev.stop();
        }
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
    pub async fn seed_if_empty(&self, resources: Vec<(ResourcePath, Value)>) -> Result<bool> {
        if !self.inner.storage.paths().await?.is_empty() {
            return Ok(false);
        }
        self.inner.storage.import(resources).await?;
        Ok(true)
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

    /// Runs handlers and the forwarder; returns what to store (`None`: nothing, the agent
    /// answered without a body and the payload is applied as sent) and whether an agent took it.
    async fn prepare(&self, op: &mut WriteOp) -> Result<(Option<Value>, bool)> {
        self.before(op).await?;
        match self.inner.forwarder.forward(self, op).await? {
            Forwarded::NotOwned => Ok((op.payload.clone(), false)),
            Forwarded::Applied(None) => Ok((op.payload.clone(), true)),
            Forwarded::Applied(Some(reply)) => Ok((Some(reply), true)),
        }
    }

    /// POST `payload` into the collection at `collection`; returns the stored member.
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
    pub async fn create(&self, collection: &ResourcePath, payload: Value) -> Result<Resource> {
        if !payload.is_object() {
            return Err(Error::MalformedJson { reason: "the request body must be a JSON object".into() });
        }
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
        let new_collection = match self.inner.storage.get(collection).await {
            Ok(r) if r.is_collection() => None,
            Ok(_) => {
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
            Err(Error::NotFound { .. }) => Some(collection_template(collection, &rtype)),
            Err(e) => return Err(e),
        };
        let member = member_identity(collection, &mut obj)?;
        let mut op = WriteOp {
            operation: Operation::Create,
            path: member,
            collection: Some(collection.clone()),
            resource_type: rtype,
            payload: Some(Value::Object(obj)),
            if_match: None,
        };
        let (to_store, _) = self.prepare(&mut op).await?;
        let mut to_store = into_object(to_store.unwrap_or_default())?;
        // An agent reply keeps the identity Sunfish assigned.
        to_store.insert("@odata.id".into(), Value::String(op.path.to_string()));
        to_store.entry("Id").or_insert_with(|| Value::String(op.path.last().unwrap_or_default().to_string()));
        let stored = self.inner.storage.create(collection, Value::Object(to_store), new_collection).await?;
        self.after(&op, Some(&stored)).await;
        self.resource_event("ResourceCreated", "The resource was created successfully.", &op.path, &op.resource_type).await;
        Ok(stored)
    }

    /// The stored resource at `path`, refusing collections for `operation`.
    async fn writable(&self, path: &ResourcePath, operation: Operation) -> Result<Resource> {
        let current = self.inner.storage.get(path).await?;
        if current.is_collection() {
            return Err(Error::NotAllowed {
                path: path.to_string(),
                operation,
                allowed: Operation::COLLECTION.to_vec(),
            });
        }
        Ok(current)
    }

    /// PUT: replaces the resource at `path` with `payload` (identity and type may be omitted,
    /// they are kept; changing them is refused). `if_match` is checked atomically by storage.
    ///
    /// # Errors
    /// `NotFound`, `NotAllowed` (collection), `PropertyNotWritable`, `PreconditionFailed`,
    /// handler and agent errors.
    pub async fn replace(&self, path: &ResourcePath, payload: Value, if_match: Option<u64>) -> Result<Resource> {
        let current = self.writable(path, Operation::Replace).await?;
        let incoming = Value::Object(into_object(payload)?);
        check_immutable(current.value(), &incoming)?;
        let mut obj = into_object(incoming)?;
        for prop in crate::resource::IMMUTABLE_PROPERTIES {
            if let Some(v) = current.value().get(prop) {
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
        };
        let (to_store, forwarded) = self.prepare(&mut op).await?;
        let if_match = if forwarded { None } else { if_match };
        let stored = self.inner.storage.replace(path, to_store.unwrap_or_default(), if_match).await?;
        self.after(&op, Some(&stored)).await;
        self.resource_event("ResourceChanged", "One or more resource properties have changed.", path, &op.resource_type).await;
        Ok(stored)
    }

    /// PATCH: merges `delta` into the resource at `path` (objects merge, arrays replace).
    ///
    /// # Errors
    /// As [`Core::replace`].
    pub async fn patch(&self, path: &ResourcePath, delta: Value, if_match: Option<u64>) -> Result<Resource> {
        let current = self.writable(path, Operation::Patch).await?;
        let delta = Value::Object(into_object(delta)?);
        check_immutable(current.value(), &delta)?;
        let mut op = WriteOp {
            operation: Operation::Patch,
            path: path.clone(),
            collection: None,
            resource_type: current.type_name().unwrap_or_default().to_string(),
            payload: Some(delta),
            if_match,
        };
        if let Some(rev) = if_match {
            if rev != current.revision() {
                return Err(Error::PreconditionFailed { path: path.to_string() });
            }
        }
        let (to_store, forwarded) = self.prepare(&mut op).await?;
        let stored = match (forwarded, to_store) {
            // A full object from the agent replaces ours.
            (true, Some(reply)) if Some(&reply) != op.payload.as_ref() => {
                self.inner.storage.replace(path, reply, None).await?
            }
            (true, delta) => self.inner.storage.patch(path, delta.unwrap_or_default(), None).await?,
            (false, delta) => self.inner.storage.patch(path, delta.unwrap_or_default(), if_match).await?,
        };
        self.after(&op, Some(&stored)).await;
        self.resource_event("ResourceChanged", "One or more resource properties have changed.", path, &op.resource_type).await;
        Ok(stored)
    }

    /// DELETE: removes the resource, its subtree, its parent entry and every link to it.
    /// Returns the deleted paths.
    ///
    /// # Errors
    /// `NotFound`, `NotAllowed` (root, collections), `PreconditionFailed`, handler and agent
    /// errors.
    pub async fn delete(&self, path: &ResourcePath, if_match: Option<u64>) -> Result<Vec<ResourcePath>> {
        if path.is_root() {
            return Err(Error::NotAllowed {
                path: path.to_string(),
                operation: Operation::Delete,
                allowed: vec![Operation::Get, Operation::Patch],
            });
        }
        let current = self.writable(path, Operation::Delete).await?;
        if let Some(rev) = if_match {
            if rev != current.revision() {
                return Err(Error::PreconditionFailed { path: path.to_string() });
            }
        }
        let mut op = WriteOp {
            operation: Operation::Delete,
            path: path.clone(),
            collection: None,
            resource_type: current.type_name().unwrap_or_default().to_string(),
            payload: None,
            if_match,
        };
        let (_, forwarded) = self.prepare(&mut op).await?;
        let removed = self.inner.storage.delete(path, if forwarded { None } else { if_match }).await?;
        self.after(&op, None).await;
        self.resource_event("ResourceRemoved", "The resource was removed successfully.", path, &op.resource_type).await;
        Ok(removed)
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
        let events = env
            .events
            .iter()
            .map(|ev| NewEvent {
                message_id: ev.message_id.clone(),
                message: ev.raw.get("Message").and_then(Value::as_str).map(str::to_string),
                message_args: ev.message_args.clone(),
                severity: String::new(),
                origin: ev.origin.as_deref().and_then(|o| ResourcePath::parse_link(o).ok()),
                origin_type: None,
                raw: Some(ev.raw.clone()),
            })
            .collect();
        service.publish(events).await
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
