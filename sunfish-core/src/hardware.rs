//! Hardware managers: the plugin kind of agents. An agent serves its device's Redfish tree with
//! the same [`Core`] as the server; writes to that tree (forwarded by the upstream Sunfish, or
//! from local clients) are applied to the hardware first, by the [`HardwareManager`] chosen in
//! configuration, and what the hardware reports back is stored. Changes the hardware makes by
//! itself come in through a [`ChangeSink`] and become ResourceEvents, which the agent's
//! `SunfishServer` subscription carries upstream.
//!
//! The mechanism is the agent forwarder's ([`crate::forward`]): [`HardwareForwarder`] owns
//! every resource, so each write goes through [`HardwareManager::apply`].

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::forward::Forwarded;
use crate::{AgentForwarder, Core, PluginOptions, ResourcePath, Result, StartupError, WriteOp};

/// A change the hardware made by itself (a link went down, a module was inserted).
#[derive(Debug, Clone, PartialEq)]
pub enum HardwareChange {
    /// A new resource (its collection is created when missing).
    Created(ResourcePath, Value),
    /// The resource now looks like this (whole object).
    Changed(ResourcePath, Value),
    /// The resource and its subtree are gone.
    Removed(ResourcePath),
}

/// Where a hardware manager reports [`HardwareChange`]s; cheap to clone.
#[derive(Debug, Clone)]
pub struct ChangeSink(mpsc::UnboundedSender<HardwareChange>);

impl ChangeSink {
    /// A sink and the receiving end the agent drains.
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<HardwareChange>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (ChangeSink(tx), rx)
    }

    /// Reports a change; returns false when the agent has stopped listening.
    pub fn report(&self, change: HardwareChange) -> bool {
        self.0.send(change).is_ok()
    }

    /// Whether the agent has stopped listening (a manager's own tasks can end then).
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

/// Applies writes to a device and reports what the device does on its own.
#[async_trait]
pub trait HardwareManager: Send + Sync + 'static {
    /// Applies `op` to the hardware. `Ok(Some(resource))`: the resulting resource, which is
    /// stored (identity is kept); `Ok(None)`: the payload was applied as sent.
    ///
    /// # Errors
    /// Whatever the hardware refused; nothing is stored and the error is answered (an
    /// [`crate::Error::Agent`] with a status passes that status on).
    async fn apply(&self, core: &Core, op: &WriteOp) -> Result<Option<Value>>;

    /// Live state of the resource at `path`, when the manager can read it (`None`: serve the
    /// stored copy).
    ///
    /// # Errors
    /// The hardware could not be read.
    async fn read(&self, _core: &Core, _path: &ResourcePath) -> Result<Option<Value>> {
        Ok(None)
    }

    /// Called once when the agent starts, after its tree is loaded: begin reporting changes
    /// (and, for managers that mirror another service, bring the tree up to date through
    /// `changes`).
    ///
    /// # Errors
    /// The manager cannot start; the agent refuses to start.
    async fn start(&self, _core: &Core, _changes: ChangeSink) -> Result<()> {
        Ok(())
    }

    /// Called once when the agent stops, before its storage is closed: end the tasks `start`
    /// began and release what the manager holds on the hardware (a session, a subscription).
    async fn stop(&self) {}
}

/// Registers a hardware manager by name, chosen by the agent's `hardware.manager`. Submit it
/// with [`crate::register_hardware_manager!`].
pub struct HardwareManagerRegistration {
    /// Name used in configuration.
    pub name: &'static str,
    /// One line for `--list-plugins`.
    pub description: &'static str,
    /// Builds the manager from `[hardware.options]`.
    pub build: fn(PluginOptions) -> Result<Arc<dyn HardwareManager>, StartupError>,
}

crate::registry::impl_registration!(HardwareManagerRegistration, "hardware-manager");

/// Registers a [`HardwareManagerRegistration`] at link time.
#[macro_export]
macro_rules! register_hardware_manager {
    ($registration:expr) => {
        $crate::__private::inventory::submit! { $registration }
    };
}

/// The agent's forwarder: every write goes to the hardware manager first.
pub struct HardwareForwarder(pub Arc<dyn HardwareManager>);

/// The agent's own services: their resources describe the agent, not the device.
const SERVICE_TREES: [&str; 5] =
    ["EventService", "SessionService", "AccountService", "AggregationService", "TaskService"];

/// Whether `path` belongs to the agent's own services rather than the device.
pub fn is_service_path(path: &ResourcePath) -> bool {
    path.segments().next().is_some_and(|top| SERVICE_TREES.contains(&top))
}

#[async_trait]
impl AgentForwarder for HardwareForwarder {
    async fn forward(&self, core: &Core, op: &WriteOp) -> Result<Forwarded> {
        if is_service_path(&op.path) {
            return Ok(Forwarded::NotOwned);
        }
        Ok(Forwarded::Applied(self.0.apply(core, op).await?))
    }
}
