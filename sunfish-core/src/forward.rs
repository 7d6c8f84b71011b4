//! Agent forwarding (the reference's "objects manager"): before a write is stored, the active
//! forwarder decides whether an agent owns the resource and, if so, sends the operation there.
//! The agent's reply (if any) is what gets stored. The built-in `none` forwarder owns nothing.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use crate::{Core, PluginOptions, Result, StartupError, WriteOp};

/// What became of a write offered to the forwarder.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Forwarded {
    /// No agent owns the resource: Sunfish applies the write itself.
    NotOwned,
    /// The owning agent applied the write. `Some(reply)` is the resulting resource to store
    /// (already translated to Sunfish URIs); `None` means "apply the original payload locally"
    /// (an agent that answered 204).
    Applied(Option<Value>),
    /// The agent accepted the write and is still working on it: the client gets a task; the
    /// work's output is stored as with `Applied` when it completes.
    Running(crate::tasks::Pending),
}

/// Decides ownership and forwards writes to agents.
#[async_trait]
pub trait AgentForwarder: Send + Sync + 'static {
    /// Offers a write (after object handlers accepted it, before it is stored).
    ///
    /// # Errors
    /// [`crate::Error::Agent`] when the agent refused, failed or timed out; nothing is stored.
    async fn forward(&self, core: &Core, op: &WriteOp) -> Result<Forwarded>;
}

/// Registers a forwarder by name, chosen by `aggregation.forwarder`. Submit it with
/// [`crate::register_agent_forwarder!`].
pub struct AgentForwarderRegistration {
    /// Name used in configuration.
    pub name: &'static str,
    /// One line for `--list-plugins`.
    pub description: &'static str,
    /// Builds the forwarder from `aggregation.options`.
    pub build: fn(PluginOptions) -> Result<Arc<dyn AgentForwarder>, StartupError>,
}

crate::registry::impl_registration!(AgentForwarderRegistration, "forwarder");

/// Registers an [`AgentForwarderRegistration`] at link time.
#[macro_export]
macro_rules! register_agent_forwarder {
    ($registration:expr) => {
        $crate::__private::inventory::submit! { $registration }
    };
}

/// The default forwarder: no resource is agent-owned.
#[derive(Debug, Default)]
pub struct NoForwarder;

#[async_trait]
impl AgentForwarder for NoForwarder {
    async fn forward(&self, _core: &Core, _op: &WriteOp) -> Result<Forwarded> {
        Ok(Forwarded::NotOwned)
    }
}

crate::register_agent_forwarder!(AgentForwarderRegistration {
    name: "none",
    description: "owns nothing: every write is applied by Sunfish itself",
    build: |_| Ok(Arc::new(NoForwarder)),
});
