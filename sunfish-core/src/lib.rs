//! # sunfish-core
//!
//! The Redfish fabric-manager core shared by `sunfish-server` and `sunfish-agent`: the resource
//! model, the four plugin kinds and their link-time registries, and the [`Core`] API.
//! No HTTP, no configuration files: front ends translate those into calls here.
//!
//! Layout:
//! - [`path`]: [`ResourcePath`], the only way a request path reaches storage (escape-proof).
//! - [`resource`]: [`Resource`] (JSON + revision), type and collection rules, PATCH merge, links.
//! - [`error`]: [`Error`] per request (each variant names its HTTP status), [`StartupError`].
//! - [`storage`]: the [`StorageBackend`] trait; [`tree`]: its semantics over an in-memory map,
//!   shared by the memory and fs backends; [`layout`]: the reference's `index.json` layout.
//! - [`event`]: envelopes and [`EventHandler`]; [`object`]: [`ObjectHandler`] and [`WriteOp`];
//!   [`forward`]: [`AgentForwarder`]; [`hardware`]: the agents' [`hardware::HardwareManager`].
//! - [`registry`]: listing and looking up registrations; the `register_*!` macros.
//! - [`core`]: [`Core`], which runs a request through handlers, forwarder and storage.
//! - [`eventservice`]: subscriptions, filters, the durable event log and delivery workers;
//!   [`aggregation`]: agents registering, uploading, kept in sync, forwarded to;
//!   [`action`]: Redfish actions; [`outbound`]: which hosts the service may connect to.
//! - [`query`]: Redfish query parameters (`$expand`, `$select`, `$filter`, `$top`/`$skip`,
//!   `only`, `excerpt`) over a resource fetcher; [`tasks`]: tasks for writes that finish later.
//! - `test_util` (feature `test-util`): the storage contract suite every backend runs.

pub mod action;
pub mod aggregation;
pub mod auth;
pub mod core;
pub mod error;
pub mod event;
pub mod eventservice;
pub mod forward;
pub mod hardware;
pub mod layout;
pub mod metrics;
pub mod migrate;
pub mod object;
pub mod outbound;
pub mod path;
pub mod query;
pub mod registry;
pub mod resource;
pub mod schema;
pub mod storage;
pub mod tasks;
pub mod tree;

#[cfg(feature = "test-util")]
pub mod test_util;

use std::future::Future;
use std::pin::Pin;

pub use crate::core::{Core, CoreBuilder, Outcome, PluginSelection, Written};
pub use error::{Error, Result, StartupError};
pub use event::{EventEnvelope, EventHandler, EventHandlerRegistration, EventRecord};
pub use forward::{AgentForwarder, AgentForwarderRegistration, Forwarded};
pub use object::{ObjectHandler, ObjectHandlerRegistration, Operation, WriteOp};
pub use path::{ResourcePath, REDFISH_ROOT};
pub use registry::{PluginInfo, PluginOptions, Registration};
pub use resource::{link, merge_patch, Resource};
pub use storage::{Notification, StorageBackend, StorageBackendRegistration};

/// A boxed, sendable future (what registration `build` functions return).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Re-exports for the `register_*!` macros, so plugin crates need not depend on `inventory`.
#[doc(hidden)]
pub mod __private {
    pub use inventory;
}
