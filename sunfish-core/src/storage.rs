//! The storage backend plugin kind.
//!
//! A backend stores resources by path, gives each write a new revision, and performs each
//! operation atomically: a create adds the member and updates the collection's `Members`
//! together, a delete removes the subtree, the parent's member entry and every link to it
//! together, and `if_match` is compared with the current revision inside the same critical
//! section (compare-and-swap), never by a separate read. Backends that keep the tree in memory
//! get all of this from [`crate::tree::ResourceTree`] and only add persistence.
//!
//! Besides resources, a backend keeps small private records (`kv_*`: sessions, alias maps, event
//! queues) that are never served as resources.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use tokio::sync::{broadcast, watch};

use crate::tree::Loaded;
use crate::{BoxFuture, PluginOptions, Resource, ResourcePath, Result, StartupError};

/// Where resources live. Object-safe; the server holds one as `Arc<dyn StorageBackend>`.
#[async_trait]
pub trait StorageBackend: Send + Sync + 'static {
    /// The resource at `path`.
    ///
    /// # Errors
    /// [`crate::Error::NotFound`].
    async fn get(&self, path: &ResourcePath) -> Result<Resource>;

    /// Adds `member` (whose `@odata.id` is a direct child of `collection`) to `collection` and
    /// to its `Members`. When the collection does not exist and `new_collection` is given, it is
    /// created first (its parent must exist and gains a link to it unless it has that property
    /// already). Returns the stored member.
    ///
    /// # Errors
    /// `NotFound` (collection, or its parent, missing), `AlreadyExists`, `NotAllowed` (target is
    /// not a collection), `InvalidPath`.
    async fn create(&self, collection: &ResourcePath, member: Value, new_collection: Option<Value>)
        -> Result<Resource>;

    /// Replaces the resource at `path` with `body`, if it exists and (with `if_match`) is still
    /// at that revision.
    ///
    /// # Errors
    /// `NotFound`, `PreconditionFailed`.
    async fn replace(&self, path: &ResourcePath, body: Value, if_match: Option<u64>) -> Result<Resource>;

    /// Merges `delta` into the resource at `path` ([`crate::merge_patch`]), with the same
    /// `if_match` rule as [`StorageBackend::replace`].
    ///
    /// # Errors
    /// `NotFound`, `PreconditionFailed`.
    async fn patch(&self, path: &ResourcePath, delta: Value, if_match: Option<u64>) -> Result<Resource>;

    /// Deletes the resource at `path` and everything below it, its entry in the parent (a
    /// collection member, or a navigation property naming it), and every link to the deleted
    /// resources in the rest of the store. Returns the deleted paths, `path` first.
    ///
    /// # Errors
    /// `NotFound`, `PreconditionFailed`, `NotAllowed` for the root.
    async fn delete(&self, path: &ResourcePath, if_match: Option<u64>) -> Result<Vec<ResourcePath>>;

    /// Paths of the stored resources directly below `path`, sorted.
    ///
    /// # Errors
    /// Backend failures only; an unknown path has no children.
    async fn children(&self, path: &ResourcePath) -> Result<Vec<ResourcePath>>;

    /// Every stored path, sorted (export, migration, seeding checks).
    ///
    /// # Errors
    /// Backend failures.
    async fn paths(&self) -> Result<Vec<ResourcePath>>;

    /// Stores each resource as given, creating or overwriting, with no collection bookkeeping.
    /// For seeding an empty store and for migrations; never reached by client requests.
    ///
    /// # Errors
    /// Backend failures.
    async fn import(&self, resources: Vec<(ResourcePath, Value)>) -> Result<()>;

    /// [`StorageBackend::import`] of resources wrapped already, by the threads that read them
    /// ([`crate::layout::read_tree_with`]): a backend that keeps a [`crate::tree::ResourceTree`]
    /// takes them as they are, so a large seed never exists as parsed values all at once. By
    /// default, the values are handed to `import`.
    ///
    /// # Errors
    /// Backend failures.
    async fn import_loaded(&self, resources: Vec<Loaded>) -> Result<()> {
        self.import(resources.into_iter().map(Loaded::into_value).collect()).await
    }

    /// A private record of namespace `ns` (`sessions`, `aliases`, ...).
    ///
    /// # Errors
    /// Backend failures; `InvalidPath` for unsafe names.
    async fn kv_get(&self, ns: &str, key: &str) -> Result<Option<Value>>;

    /// Creates or replaces a private record.
    ///
    /// # Errors
    /// As [`StorageBackend::kv_get`].
    async fn kv_put(&self, ns: &str, key: &str, value: Value) -> Result<()>;

    /// Deletes a private record; returns whether it existed.
    ///
    /// # Errors
    /// As [`StorageBackend::kv_get`].
    async fn kv_delete(&self, ns: &str, key: &str) -> Result<bool>;

    /// Every record of namespace `ns`, sorted by key.
    ///
    /// # Errors
    /// As [`StorageBackend::kv_get`].
    async fn kv_list(&self, ns: &str) -> Result<Vec<(String, Value)>>;

    /// Whether other processes share this store (several servers on one database). Services
    /// that cache private records (sessions) then check the store on use, so what one instance
    /// ends or refreshes holds on all. Default: not shared.
    fn shared(&self) -> bool {
        false
    }

    /// The first of `count` consecutive numbers from the store-wide counter `name`, never
    /// below `floor`; `None` when the store has no shared counters (the caller counts in
    /// process). Event ids come from here so instances sharing a store never hand out the
    /// same `EventId`.
    ///
    /// # Errors
    /// Backend failures.
    async fn allocate(&self, name: &str, count: u64, floor: u64) -> Result<Option<u64>> {
        let _ = (name, count, floor);
        Ok(None)
    }

    /// Tells the other processes sharing the store about a change (`topic` names the kind,
    /// `payload` what changed). Default: nobody to tell.
    ///
    /// # Errors
    /// Backend failures.
    async fn notify(&self, topic: &str, payload: &str) -> Result<()> {
        let _ = (topic, payload);
        Ok(())
    }

    /// Changes other processes announced with [`StorageBackend::notify`] (never this
    /// process's own). `None` when the store is not shared.
    fn notifications(&self) -> Option<broadcast::Receiver<Notification>> {
        None
    }

    /// Whether this process is the leader among those sharing the store: the one that
    /// delivers subscriptions' events and runs agent liveness checks. The value changes when
    /// leadership moves (lease expiry, a lost connection). Default: always leader, since a
    /// store nobody else shares has nobody else to lead.
    fn leadership(&self) -> watch::Receiver<bool> {
        watch::channel(true).1
    }

    /// Makes every acknowledged write durable and stops background work; called at shutdown.
    ///
    /// # Errors
    /// Backend failures.
    async fn close(&self) -> Result<()> {
        Ok(())
    }
}

/// A change another process made to a shared store ([`StorageBackend::notify`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// What kind of change (`eventlog`, `subscription`, ...).
    pub topic: String,
    /// What changed (a key, a path).
    pub payload: String,
}

/// Registers a storage backend under a short lowercase name (`"fs"`), chosen by
/// `storage.backend`. Submit it with [`crate::register_storage_backend!`].
pub struct StorageBackendRegistration {
    /// Name used in configuration.
    pub name: &'static str,
    /// One line for `--list-plugins`.
    pub description: &'static str,
    /// Opens the backend from its `storage.options` table.
    pub build: fn(PluginOptions) -> BoxFuture<'static, Result<Arc<dyn StorageBackend>, StartupError>>,
}

crate::registry::impl_registration!(StorageBackendRegistration, "storage");

/// Registers a [`StorageBackendRegistration`] at link time.
///
/// ```ignore
/// sunfish_core::register_storage_backend!(StorageBackendRegistration {
///     name: "memory",
///     description: "in-process memory",
///     build: |opts| Box::pin(async move { ... }),
/// });
/// ```
#[macro_export]
macro_rules! register_storage_backend {
    ($registration:expr) => {
        $crate::__private::inventory::submit! { $registration }
    };
}
