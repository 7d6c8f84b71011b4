//! Object handlers: hooks per resource type and operation around every write that goes through
//! [`crate::Core`]. `before` runs first and may reject the write or rewrite its payload; `after`
//! runs once the write is stored (its errors are logged, since the write already happened).

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use crate::{Core, PluginOptions, Resource, ResourcePath, Result, StartupError};

/// What a request does to a resource. Closed set: the server maps HTTP methods onto it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Operation {
    /// GET/HEAD.
    Get,
    /// POST into a collection.
    Create,
    /// PUT.
    Replace,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
}

impl Operation {
    /// What a plain (non-collection) resource allows.
    pub const RESOURCE: [Operation; 4] = [Operation::Get, Operation::Replace, Operation::Patch, Operation::Delete];
    /// What a collection allows.
    pub const COLLECTION: [Operation; 2] = [Operation::Get, Operation::Create];
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Operation::Get => "GET",
            Operation::Create => "POST",
            Operation::Replace => "PUT",
            Operation::Patch => "PATCH",
            Operation::Delete => "DELETE",
        })
    }
}

/// A write on its way to storage, as object handlers and agent forwarders see it.
#[derive(Debug, Clone)]
pub struct WriteOp {
    /// What is done.
    pub operation: Operation,
    /// The resource written: for a create, the new member's path.
    pub path: ResourcePath,
    /// For a create, the collection posted to.
    pub collection: Option<ResourcePath>,
    /// Type name of the resource (`ComputerSystem`).
    pub resource_type: String,
    /// The body: the new member (create), the whole resource (replace), the delta (patch);
    /// `None` for delete. Handlers may rewrite it in `before`.
    pub payload: Option<Value>,
    /// The `If-Match` revision, if the client sent one.
    pub if_match: Option<u64>,
    /// Set by an object handler's `before` when the write completes later: the client gets a
    /// task, and the work's output is stored when it finishes.
    pub pending: Option<crate::tasks::Pending>,
}

/// Hooks around writes. One handler may serve several types; `resource_types` lists them, or
/// contains `"*"` for all.
#[async_trait]
pub trait ObjectHandler: Send + Sync + 'static {
    /// The type names (`EventDestination`) this handler is called for, or `["*"]`.
    fn resource_types(&self) -> &[&str];

    /// Before the write: reject it with an error, or rewrite `op.payload`.
    ///
    /// # Errors
    /// Any error rejects the write and is answered to the client.
    async fn before(&self, _core: &Core, _op: &mut WriteOp) -> Result<()> {
        Ok(())
    }

    /// After the write was stored; `result` is the stored resource (`None` after a delete).
    ///
    /// # Errors
    /// Logged only: the write has already happened.
    async fn after(&self, _core: &Core, _op: &WriteOp, _result: Option<&Resource>) -> Result<()> {
        Ok(())
    }
}

/// Registers an object handler by name; `objects.handlers` in configuration lists the active
/// ones in call order. Submit it with [`crate::register_object_handler!`].
pub struct ObjectHandlerRegistration {
    /// Name used in configuration.
    pub name: &'static str,
    /// One line for `--list-plugins`.
    pub description: &'static str,
    /// Builds the handler from `[objects.options.<name>]`.
    pub build: fn(PluginOptions) -> Result<Arc<dyn ObjectHandler>, StartupError>,
}

crate::registry::impl_registration!(ObjectHandlerRegistration, "object-handler");

/// Registers an [`ObjectHandlerRegistration`] at link time.
#[macro_export]
macro_rules! register_object_handler {
    ($registration:expr) => {
        $crate::__private::inventory::submit! { $registration }
    };
}
