//! # sunfish-storage-memory
//!
//! Storage backend `memory`: the whole Redfish tree in process memory, gone at exit. For tests,
//! demos and agents whose tree is rebuilt from hardware at every start. All semantics come from
//! [`sunfish_core::tree::ResourceTree`]; this crate only adds the lock.

use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::RwLock;
use serde::Deserialize;
use serde_json::Value;
use sunfish_core::tree::{check_kv_name, Loaded, ResourceTree};
use sunfish_core::{
    register_storage_backend, Resource, ResourcePath, Result, StorageBackend, StorageBackendRegistration,
};

/// The in-memory backend. One lock over the tree: every operation is short and never awaits
/// while holding it, so a plain `RwLock` is the fastest correct choice.
#[derive(Debug)]
pub struct MemoryBackend {
    tree: RwLock<ResourceTree>,
}

/// Options of `[storage.options]` for `memory`: none.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryOptions {}

impl MemoryBackend {
    /// An empty store.
    pub fn new() -> Self {
        MemoryBackend { tree: RwLock::new(ResourceTree::new(1)) }
    }
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl StorageBackend for MemoryBackend {
    async fn get(&self, path: &ResourcePath) -> Result<Resource> {
        self.tree.read().get(path)
    }

    async fn create(
        &self,
        collection: &ResourcePath,
        member: Value,
        new_collection: Option<Value>,
    ) -> Result<Resource> {
        self.tree.write().create(collection, member, new_collection).map(|(r, _)| r)
    }

    async fn replace(&self, path: &ResourcePath, body: Value, if_match: Option<u64>) -> Result<Resource> {
        self.tree.write().replace(path, body, if_match).map(|(r, _)| r)
    }

    async fn patch(&self, path: &ResourcePath, delta: Value, if_match: Option<u64>) -> Result<Resource> {
        self.tree.write().patch(path, &delta, if_match).map(|(r, _)| r)
    }

    async fn delete(&self, path: &ResourcePath, if_match: Option<u64>) -> Result<Vec<ResourcePath>> {
        self.tree.write().delete(path, if_match).map(|(r, _)| r)
    }

    async fn children(&self, path: &ResourcePath) -> Result<Vec<ResourcePath>> {
        Ok(self.tree.read().children(path))
    }

    async fn paths(&self) -> Result<Vec<ResourcePath>> {
        Ok(self.tree.read().paths())
    }

    async fn import(&self, resources: Vec<(ResourcePath, Value)>) -> Result<()> {
        self.tree.write().import(resources);
        Ok(())
    }

    async fn import_loaded(&self, resources: Vec<Loaded>) -> Result<()> {
        self.tree.write().import_loaded(resources);
        Ok(())
    }

    async fn kv_get(&self, ns: &str, key: &str) -> Result<Option<Value>> {
        check_kv_name(ns)?;
        check_kv_name(key)?;
        Ok(self.tree.read().kv_get(ns, key))
    }

    async fn kv_put(&self, ns: &str, key: &str, value: Value) -> Result<()> {
        check_kv_name(ns)?;
        check_kv_name(key)?;
        self.tree.write().kv_put(ns, key, value);
        Ok(())
    }

    async fn kv_delete(&self, ns: &str, key: &str) -> Result<bool> {
        check_kv_name(ns)?;
        check_kv_name(key)?;
        Ok(self.tree.write().kv_delete(ns, key).0)
    }

    async fn kv_list(&self, ns: &str) -> Result<Vec<(String, Value)>> {
        check_kv_name(ns)?;
        Ok(self.tree.read().kv_list(ns))
    }
}

register_storage_backend!(StorageBackendRegistration {
    name: "memory",
    description: "the tree in process memory, lost at exit",
    build: |opts| {
        Box::pin(async move {
            opts.parse::<MemoryOptions>()?;
            Ok(Arc::new(MemoryBackend::new()) as Arc<dyn StorageBackend>)
        })
    },
});
