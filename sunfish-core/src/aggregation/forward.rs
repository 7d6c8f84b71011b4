//! Forwarding: a client write on a resource an agent owns goes to that agent first, in the
//! agent's namespace; what the agent answers is what we store (translated back, still owned).
//! The `agents` forwarder registered here does this through the core's [`Aggregator`]; `none`
//! (in [`crate::forward`]) turns it off.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::alias::rewrite_links;
use super::{managing_agent, mark_owned, Aggregator};
use crate::forward::{AgentForwarderRegistration, Forwarded};
use crate::{AgentForwarder, Core, Error, Operation, Resource, ResourcePath, Result, WriteOp};

/// Who owns the target of `op`: for a create, the nearest non-collection above the collection
/// (`POST .../Fabrics/CXL/Connections` belongs to whoever owns `.../Fabrics/CXL`); otherwise
/// the resource itself. Top-level resources are never agent-owned.
async fn owner_of(core: &Core, op: &WriteOp) -> Option<String> {
    let mut at = match op.operation {
        Operation::Create => op.collection.clone()?,
        _ => op.path.clone(),
    };
    loop {
        if at.depth() < 2 {
            return None;
        }
        match core.storage().get(&at).await {
            Ok(r) if !r.is_collection() => return managing_agent(&r.value()).map(str::to_string),
            _ => at = at.parent()?,
        }
    }
}

/// Our `Oem.Sunfish_RM` bookkeeping is not the agent's business.
fn strip_ours(v: &mut Value) {
    if let Some(rm) = v.pointer_mut("/Oem/Sunfish_RM").and_then(Value::as_object_mut) {
        for k in ["ManagingAgent", "FabricSharedWith", "LastSeen"] {
            rm.remove(k);
        }
    }
}

/// Our boundary redirections and bookkeeping stay on a resource as an agent answers it:
/// `Oem.Sunfish_RM` as we keep it and, on a redirected boundary port, our `Links` (the agent
/// still links its dummy peer; we link the real one). Without this a PATCH of a boundary port
/// stored the agent's dummy links until its next crawl.
fn keep_ours(current: &Value, v: &mut Value) {
    let Value::Object(m) = v else { return };
    if let Some(rm) = current.pointer("/Oem/Sunfish_RM") {
        let oem = m.entry("Oem").or_insert_with(|| serde_json::json!({}));
        if let Some(o) = oem.as_object_mut() {
            o.insert("Sunfish_RM".into(), rm.clone());
        }
    }
    if let Some(links) = current.get("Links").filter(|_| current.pointer("/Oem/Sunfish_RM/AgentPeerPortURI").is_some())
    {
        m.insert("Links".into(), links.clone());
    }
}

impl Aggregator {
    /// Forwards `op` to the agent that owns its target, if any.
    ///
    /// # Errors
    /// `Agent`: the agent refused (its status and message), could not be reached (502) or did
    /// not answer in time (504). Nothing is stored then.
    pub async fn forward(&self, core: &Core, op: &WriteOp) -> Result<Forwarded> {
        let result = self.forward_to_owner(core, op).await;
        match &result {
            Ok(Forwarded::NotOwned) => {}
            Ok(_) => self.metrics.forwarded(true),
            Err(_) => self.metrics.forwarded(false),
        }
        result
    }

    /// [`Aggregator::forward`] without the counting.
    async fn forward_to_owner(&self, core: &Core, op: &WriteOp) -> Result<Forwarded> {
        let Some(source) = owner_of(core, op).await else { return Ok(Forwarded::NotOwned) };
        let id = source.rsplit('/').next().unwrap_or_default();
        let Some(agent) = self.agent(id) else { return Ok(Forwarded::NotOwned) };
        let (host, aliases) = {
            let r = agent.record.lock();
            (r.host.clone(), r.aliases.clone())
        };
        let to_agent = |s: &str| aliases.to_agent(s);
        let mut body = op.payload.clone();
        if let Some(b) = &mut body {
            rewrite_links(b, &to_agent);
            strip_ours(b);
        }
        let uri = match op.operation {
            Operation::Create => to_agent(op.collection.as_ref().map_or("", |c| c.as_str())),
            _ => to_agent(op.path.as_str()),
        };
        let reply = self.send(&host, op.operation, &uri, Vec::new(), body).await?;
        if !(200..300).contains(&reply.status) {
            return Err(Error::Agent {
                agent: host,
                status: Some(reply.status),
                timed_out: false,
                message: reply.error_text(),
            });
        }
        agent.seen();
        agent.forwarded_write(op.path.as_str(), self.writes.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1);
        // What the agent now holds, in our namespace and owned by it.
        let ours = |mut v: Value| {
            rewrite_links(&mut v, &|s| aliases.to_ours(s));
            if let Value::Object(m) = &mut v {
                m.insert("@odata.id".into(), Value::String(op.path.to_string()));
                if let Some(last) = op.path.last() {
                    if m.get("Id").is_some() || op.operation == Operation::Create {
                        m.insert("Id".into(), Value::String(last.to_string()));
                    }
                }
            }
            mark_owned(&mut v, &source);
            v
        };
        let before = match op.operation {
            Operation::Patch | Operation::Replace => core.storage().get(&op.path).await.ok(),
            _ => None,
        };
        let ours = |v: Value| {
            let mut v = ours(v);
            if let Some(current) = &before {
                keep_ours(&current.value(), &mut v);
            }
            v
        };
        let stored = match op.operation {
            Operation::Delete => None,
            _ => {
                match reply.json_object().filter(|v| v.get("@odata.type").is_some() || op.operation == Operation::Patch)
                {
                    Some(v) if op.operation == Operation::Patch && v.get("@odata.type").is_none() => None,
                    Some(v) => Some(ours(v)),
                    // 204 or no resource in the body: our payload is what the agent applied. A
                    // PATCH delta keeps our bookkeeping by itself; whole objects need it restored.
                    None if op.operation == Operation::Patch => None,
                    None => op.payload.clone().map(ours),
                }
            }
        };
        {
            let mut r = agent.record.lock();
            match op.operation {
                Operation::Create => {
                    r.owned.insert(op.path.to_string(), to_agent(op.path.as_str()));
                }
                Operation::Delete => {
                    let prefix = format!("{}/", op.path);
                    r.owned.retain(|k, _| k != op.path.as_str() && !k.starts_with(&prefix));
                }
                _ => {}
            }
        }
        if matches!(op.operation, Operation::Create | Operation::Delete) {
            if let Err(e) = self.save(&agent).await {
                tracing::warn!(agent = %id, error = %e, "agent record not saved after forwarding");
            }
        }
        Ok(Forwarded::Applied(stored))
    }

    /// With read-through on for the owning agent: the resource at `path` as the agent has it now
    /// (stored when it changed). `Ok(None)`: not read through, serve the stored copy.
    ///
    /// # Errors
    /// `Agent` when the agent cannot answer.
    pub async fn read_through(&self, current: &Resource, path: &ResourcePath) -> Result<Option<Resource>> {
        if self.config.read_through.is_empty() || current.is_collection() {
            return Ok(None);
        }
        let Some(source) = managing_agent(&current.value()).map(str::to_string) else { return Ok(None) };
        let id = source.rsplit('/').next().unwrap_or_default();
        let Some(agent) = self.agent(id) else { return Ok(None) };
        let (host, aliases) = {
            let r = agent.record.lock();
            (r.host.clone(), r.aliases.clone())
        };
        if !self.reads_through(id, &host) {
            return Ok(None);
        }
        let Some(mut v) = self.fetch(&host, &aliases.to_agent(path.as_str())).await? else {
            return Ok(None);
        };
        agent.seen();
        rewrite_links(&mut v, &|s| aliases.to_ours(s));
        if let Value::Object(m) = &mut v {
            m.insert("@odata.id".into(), Value::String(path.to_string()));
            if let (Some(Value::String(_)), Some(last)) = (m.get("Id"), path.last()) {
                m.insert("Id".into(), Value::String(last.to_string()));
            }
        }
        keep_ours(&current.value(), &mut v);
        mark_owned(&mut v, &source);
        if v == *current.value() {
            return Ok(None);
        }
        Ok(Some(self.storage.replace(path, v, None).await?))
    }
}

/// The `agents` forwarder: asks the core's aggregation service (a no-op without one).
#[derive(Debug, Default)]
pub struct AgentsForwarder;

#[async_trait]
impl AgentForwarder for AgentsForwarder {
    async fn forward(&self, core: &Core, op: &WriteOp) -> Result<Forwarded> {
        match core.aggregation() {
            Some(a) => a.forward(core, op).await,
            None => Ok(Forwarded::NotOwned),
        }
    }
}

crate::register_agent_forwarder!(AgentForwarderRegistration {
    name: "agents",
    description: "forwards writes on agent-owned resources to the owning agent (aggregation)",
    build: |_| Ok(Arc::new(AgentsForwarder)),
});
