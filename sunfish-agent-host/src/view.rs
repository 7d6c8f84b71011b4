//! The supervisor's Redfish view of itself, served by the same agent machinery as any device
//! (so it registers upstream like an agent, and operators control every host from there):
//!
//! - `/redfish/v1/Managers/<host>`: a `Manager` for the supervisor; PATCH of
//!   `Oem.Sunfish_RM.TargetState` (`up`/`down`) sets every instance's target at once;
//! - `/redfish/v1/Managers/<host>/Oem/Sunfish_RM/AgentInstances/<name>`: one resource per
//!   instance (`TargetState`, `State`, `Pid`, `Restarts`, `Stability`, `Unstable`,
//!   `LastExitStatus`, ...); PATCH of `TargetState` is the only write.
//!
//! [`HostView`] is the view's [`HardwareManager`]: the "hardware" it applies writes to is the
//! supervisor, and every status change of an instance is reported as a resource change.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::{json, Map, Value};
use sunfish_core::hardware::{ChangeSink, HardwareChange, HardwareManager};
use sunfish_core::{Core, Error, Operation, ResourcePath, Result, WriteOp};
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::warn;

use crate::config::Target;
use crate::supervisor::Supervisor;

/// The view's paths for host `name`.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `/redfish/v1/Managers/<host>`.
    pub manager: ResourcePath,
    /// Its instances collection.
    pub instances: ResourcePath,
}

impl Paths {
    /// The paths of host `name` (the supervisor's `agent.name`).
    ///
    /// # Errors
    /// A name that is not a path segment.
    pub fn new(name: &str) -> Result<Self> {
        let manager = ResourcePath::parse("/redfish/v1/Managers")?.child(name)?;
        let instances = manager.child("Oem")?.child("Sunfish_RM")?.child("AgentInstances")?;
        Ok(Paths { manager, instances })
    }
}

/// The view's hardware manager.
pub struct HostView {
    supervisor: Arc<Supervisor>,
    paths: Paths,
    host: String,
    changes: Mutex<Option<UnboundedReceiver<String>>>,
}

impl HostView {
    /// The view of `supervisor` for host `host`, taking its change announcements.
    ///
    /// # Errors
    /// A host name that is not a path segment.
    pub fn new(supervisor: Arc<Supervisor>, host: &str, changes: UnboundedReceiver<String>) -> Result<Self> {
        Ok(HostView {
            supervisor,
            paths: Paths::new(host)?,
            host: host.to_string(),
            changes: Mutex::new(Some(changes)),
        })
    }

    fn manager(&self) -> Value {
        json!({
            "@odata.id": self.paths.manager.as_str(),
            "@odata.type": "#Manager.v1_19_0.Manager",
            "Id": self.host,
            "Name": format!("Agent host {}", self.host),
            "Description": "The agent host supervisor: starts, restarts and stops this host's agent instances",
            "ManagerType": "Service",
            "Status": {"State": "Enabled", "Health": "OK"},
            "Oem": {"Sunfish_RM": {
                "@odata.type": "#SunfishAgentHost.v1_0_0.AgentHost",
                "AgentInstances": {"@odata.id": self.paths.instances.as_str()},
            }},
        })
    }

    fn collection(&self, names: &[String]) -> Value {
        let members: Vec<Value> = names
            .iter()
            .filter_map(|n| self.paths.instances.child(n).ok())
            .map(|p| json!({"@odata.id": p.as_str()}))
            .collect();
        json!({
            "@odata.id": self.paths.instances.as_str(),
            "@odata.type": "#SunfishAgentInstanceCollection.SunfishAgentInstanceCollection",
            "Name": "Agent instances",
            "Members@odata.count": members.len(),
            "Members": members,
        })
    }

    fn instance(&self, name: &str) -> Option<(ResourcePath, Value)> {
        let snap = self.supervisor.snapshot(name)?;
        let path = self.paths.instances.child(name).ok()?;
        let mut v = json!({
            "@odata.id": path.as_str(),
            "@odata.type": "#SunfishAgentInstance.v1_0_0.SunfishAgentInstance",
            "Id": name,
            "Name": format!("Agent instance {name}"),
        });
        if let (Some(o), Value::Object(props)) = (v.as_object_mut(), snap.properties()) {
            o.extend(props);
        }
        Some((path, v))
    }

    /// The requested target state in a PATCH body at `pointer`; other keys are refused.
    fn target_in(body: &Value, allowed: &[&str], pointer: &str) -> Result<Target> {
        let Some(obj) = body.as_object() else { return Err(Error::property_value("body", "must be an object")) };
        for k in flatten_keys(obj, "") {
            if !allowed.contains(&k.as_str()) {
                return Err(Error::property_value(k, "is read-only; only TargetState may be written"));
            }
        }
        let v = body.pointer(pointer).ok_or_else(|| Error::PropertyMissing { property: "TargetState".into() })?;
        v.as_str()
            .and_then(Target::parse)
            .ok_or_else(|| Error::property_value("TargetState", "must be \"up\" or \"down\""))
    }
}

/// `a/b/c` keys of the leaves of `obj` (identity properties skipped).
fn flatten_keys(obj: &Map<String, Value>, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in obj {
        if prefix.is_empty() && (k == "@odata.id" || k == "@odata.type" || k == "Id") {
            continue;
        }
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}/{k}") };
        match v {
            Value::Object(m) if !m.is_empty() => out.extend(flatten_keys(m, &key)),
            _ => out.push(key),
        }
    }
    out
}

/// Stores `value` at `path` whether or not it is there already (a restarted supervisor with a
/// kept store).
async fn upsert(core: &Core, path: &ResourcePath, value: Value) -> Result<()> {
    match core.storage().get(path).await {
        Ok(_) => core.apply_change(HardwareChange::Changed(path.clone(), value)).await,
        Err(Error::NotFound { .. }) => core.apply_change(HardwareChange::Created(path.clone(), value)).await,
        Err(e) => Err(e),
    }
}

#[async_trait]
impl HardwareManager for HostView {
    async fn apply(&self, _core: &Core, op: &WriteOp) -> Result<Option<Value>> {
        let in_view = op.path.is_within(&self.paths.manager);
        if !in_view {
            return Ok(None);
        }
        let refuse =
            |allowed: Vec<Operation>| Error::NotAllowed { path: op.path.to_string(), operation: op.operation, allowed };
        let body = op.payload.clone().unwrap_or(Value::Null);
        if op.path == self.paths.manager {
            if op.operation != Operation::Patch {
                return Err(refuse(vec![Operation::Get, Operation::Patch]));
            }
            let target = Self::target_in(&body, &["Oem/Sunfish_RM/TargetState"], "/Oem/Sunfish_RM/TargetState")?;
            for name in self.supervisor.names() {
                self.supervisor.set_target(&name, target);
            }
            return Ok(Some(self.manager()));
        }
        if op.path.parent().as_ref() == Some(&self.paths.instances) {
            let name = op.path.last().unwrap_or_default();
            if op.operation != Operation::Patch {
                return Err(refuse(vec![Operation::Get, Operation::Patch]));
            }
            let target = Self::target_in(&body, &["TargetState"], "/TargetState")?;
            if !self.supervisor.set_target(name, target) {
                return Err(Error::not_found(&op.path));
            }
            return self.instance(name).map(|(_, v)| Some(v)).ok_or_else(|| Error::not_found(&op.path));
        }
        Err(refuse(vec![Operation::Get]))
    }

    async fn start(&self, core: &Core, changes: ChangeSink) -> Result<()> {
        upsert(core, &self.paths.manager, self.manager()).await?;
        let names = self.supervisor.names();
        if core.storage().get(&self.paths.instances).await.is_err() {
            core.storage().import(vec![(self.paths.instances.clone(), self.collection(&[]))]).await?;
        }
        for name in &names {
            if let Some((path, v)) = self.instance(name) {
                upsert(core, &path, v).await?;
            }
        }
        // Instances a kept store still lists but the host file no longer has.
        for path in core.storage().children(&self.paths.instances).await? {
            if path.last().is_some_and(|n| !names.iter().any(|m| m == n)) {
                core.apply_change(HardwareChange::Removed(path)).await?;
            }
        }
        let Some(mut rx) = self.changes.lock().take() else { return Ok(()) };
        let mut known: BTreeSet<String> = names.into_iter().collect();
        let supervisor = self.supervisor.clone();
        let paths = self.paths.clone();
        let view = HostView {
            supervisor: supervisor.clone(),
            paths: paths.clone(),
            host: self.host.clone(),
            changes: Mutex::new(None),
        };
        tokio::spawn(async move {
            while let Some(name) = rx.recv().await {
                let change = match view.instance(&name) {
                    Some((path, v)) if known.contains(&name) => HardwareChange::Changed(path, v),
                    Some((path, v)) => {
                        known.insert(name);
                        HardwareChange::Created(path, v)
                    }
                    None if known.remove(&name) => match paths.instances.child(&name) {
                        Ok(p) => HardwareChange::Removed(p),
                        Err(_) => continue,
                    },
                    None => continue,
                };
                if !changes.report(change) {
                    warn!("the agent stopped listening to the supervisor's changes");
                    return;
                }
            }
        });
        Ok(())
    }
}
