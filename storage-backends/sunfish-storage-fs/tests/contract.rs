//! The shared storage contract (`sunfish_core::test_util`), run against `fs` with a fresh
//! temporary root per check and `fsync` on, as in production.

// Test helpers outside #[test] functions panic on purpose too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use sunfish_core::{Resource, ResourcePath, Result, StorageBackend};
use sunfish_storage_fs::{FsBackend, FsOptions};
use tempfile::TempDir;

/// An [`FsBackend`] that owns its temporary root. Fields drop in order: the backend first
/// (which waits for its writer), then the folder.
struct TempFs {
    fs: FsBackend,
    _dir: TempDir,
}

async fn fresh() -> Arc<dyn StorageBackend> {
    let dir = tempfile::tempdir().unwrap();
    let fs = FsBackend::open(FsOptions { root: dir.path().join("store"), fsync: true, ..FsOptions::default() })
        .await
        .unwrap();
    Arc::new(TempFs { fs, _dir: dir })
}

#[async_trait]
impl StorageBackend for TempFs {
    async fn get(&self, path: &ResourcePath) -> Result<Resource> {
        self.fs.get(path).await
    }
    async fn create(
        &self,
        collection: &ResourcePath,
        member: Value,
        new_collection: Option<Value>,
    ) -> Result<Resource> {
        self.fs.create(collection, member, new_collection).await
    }
    async fn replace(&self, path: &ResourcePath, body: Value, if_match: Option<u64>) -> Result<Resource> {
        self.fs.replace(path, body, if_match).await
    }
    async fn patch(&self, path: &ResourcePath, delta: Value, if_match: Option<u64>) -> Result<Resource> {
        self.fs.patch(path, delta, if_match).await
    }
    async fn delete(&self, path: &ResourcePath, if_match: Option<u64>) -> Result<Vec<ResourcePath>> {
        self.fs.delete(path, if_match).await
    }
    async fn children(&self, path: &ResourcePath) -> Result<Vec<ResourcePath>> {
        self.fs.children(path).await
    }
    async fn paths(&self) -> Result<Vec<ResourcePath>> {
        self.fs.paths().await
    }
    async fn import(&self, resources: Vec<(ResourcePath, Value)>) -> Result<()> {
        self.fs.import(resources).await
    }
    async fn kv_get(&self, ns: &str, key: &str) -> Result<Option<Value>> {
        self.fs.kv_get(ns, key).await
    }
    async fn kv_put(&self, ns: &str, key: &str, value: Value) -> Result<()> {
        self.fs.kv_put(ns, key, value).await
    }
    async fn kv_delete(&self, ns: &str, key: &str) -> Result<bool> {
        self.fs.kv_delete(ns, key).await
    }
    async fn kv_list(&self, ns: &str) -> Result<Vec<(String, Value)>> {
        self.fs.kv_list(ns).await
    }
    async fn close(&self) -> Result<()> {
        self.fs.close().await
    }
}

sunfish_core::storage_contract_tests!(fresh());
