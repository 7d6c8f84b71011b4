//! # sunfish-storage-fs
//!
//! Storage backend `fs`: the Redfish tree on disk in the reference's layout, served from memory.
//!
//! Layout of a store (`root` option):
//! ```text
//! <root>/index.json                          the service root /redfish/v1
//! <root>/Systems/index.json                  /redfish/v1/Systems
//! <root>/Systems/1/index.json                /redfish/v1/Systems/1
//! <root>/.sunfish/records/<ns>.json          private records (kv_*) of a namespace, never resources
//! <root>/.sunfish/kv/<ns>/<key>.json         the same, as earlier versions wrote them (read)
//! <root>/.sunfish/wal-<n>.jsonl              write-ahead log files since the last checkpoint
//! ```
//! Resource files are pretty JSON with 4-space indentation, keys in stored order. A reference
//! tree is served as it is: opening writes nothing (unless it must finish a commit a crash
//! interrupted), and files it cannot read are skipped with a warning.
//!
//! Code map:
//! - [`FsBackend`] (this file): the [`ResourceTree`] in memory behind one lock; every read is
//!   answered from memory; every mutation changes memory, queues its log entries to the writer
//!   while still holding the lock (so the log sees changes in memory order), then waits for
//!   the writer's acknowledgement, which comes once the change is durable in the log.
//! - `writer`: the writer thread: group commit through the write-ahead log, and checkpoints
//!   that write the changed files (`checkpoint_ms` after a change at the latest).
//! - `journal`: the log's format; `disk`: file operations and the symlink checks that keep
//!   every write below the root; `load`: loading and log replay at open.

mod disk;
mod journal;
mod load;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sunfish_core::tree::{check_kv_name, Change, Loaded, ResourceTree};
use sunfish_core::{
    BoxFuture, Error, PluginOptions, Resource, ResourcePath, Result, StartupError, StorageBackend,
    StorageBackendRegistration,
};
use tokio::sync::oneshot;

use crate::disk::Disk;
use crate::journal::Entry;
use crate::writer::{Msg, Writer};

sunfish_core::register_storage_backend!(StorageBackendRegistration {
    name: "fs",
    description: "index.json tree on disk (the reference's layout), served from memory",
    build,
});

/// The registration's build function: parses the options table and opens the store.
fn build(options: PluginOptions) -> BoxFuture<'static, Result<Arc<dyn StorageBackend>, StartupError>> {
    Box::pin(async move {
        let parsed: FsOptions = options.parse()?;
        let backend = FsBackend::open(parsed).await?;
        Ok(Arc::new(backend) as Arc<dyn StorageBackend>)
    })
}

/// Options of the `fs` backend (`storage.options` in configuration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FsOptions {
    /// The tree's folder; created (with its parents) when missing. Default `sunfish-data`,
    /// relative to the working directory.
    pub root: PathBuf,
    /// Whether an acknowledged write is on stable storage (`fsync`/`syncfs`). Default `true`.
    /// `false` keeps the journal, so a crash still never leaves half a change, but recent
    /// acknowledged changes may be lost on power failure; meant for tests and benchmarks.
    pub fsync: bool,
    /// Longest time, in milliseconds, between a change (durable in the write-ahead log at once)
    /// and the rewrite of its `index.json` (a checkpoint). Default 1000. Larger values write a
    /// busy collection less often; 0 writes the files after every group commit.
    pub checkpoint_ms: u64,
}

impl Default for FsOptions {
    fn default() -> Self {
        FsOptions { root: PathBuf::from("sunfish-data"), fsync: true, checkpoint_ms: 1000 }
    }
}

/// The `fs` storage backend. Open it with [`FsBackend::open`]; call
/// [`StorageBackend::close`] at shutdown (dropping it also flushes, but blocks while doing so).
#[derive(Debug)]
pub struct FsBackend {
    /// The tree and the writer's queue under one lock: a change set is queued while the lock
    /// that made it is held, so the writer sees change sets in the order memory applied them.
    /// `queue` is `None` once the backend is closed; writes then fail before touching memory.
    /// The writer thread holds a weak handle, to read the tree at checkpoints.
    state: Arc<RwLock<State>>,
    /// The canonical root, resolved once at open.
    root: PathBuf,
    /// Checks change sets against the files (symbolic links, name limits) before they are
    /// accepted; the writer checks again when it applies them.
    checker: Disk,
    /// The writer thread, joined by `close` (or drop) so that nothing touches the files after.
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// What the backend's lock guards.
#[derive(Debug)]
pub(crate) struct State {
    /// The whole store.
    pub(crate) tree: ResourceTree,
    /// The writer's queue; `None` once closed.
    queue: Option<mpsc::Sender<Msg>>,
}

impl FsBackend {
    /// Opens the store at `options.root`: creates the folder if missing, finishes a commit an
    /// earlier version's crash interrupted, loads the tree and the private records, replays
    /// the write-ahead log onto them (writing the files it names, then emptying it), and starts
    /// the writer thread.
    ///
    /// # Errors
    /// [`StartupError::Io`] when the root cannot be created or read, or an interrupted commit
    /// cannot be replayed.
    pub async fn open(options: FsOptions) -> Result<FsBackend, StartupError> {
        let what = format!("fs storage at {}", options.root.display());
        tokio::task::spawn_blocking(move || Self::open_blocking(options))
            .await
            .map_err(|e| StartupError::Io { what: what.clone(), reason: e.to_string() })?
            .map_err(|e| StartupError::Io { what, reason: e.to_string() })
    }

    fn open_blocking(options: FsOptions) -> std::io::Result<FsBackend> {
        std::fs::create_dir_all(&options.root)?;
        // Every later check compares against this symlink-free form of the root.
        let root = std::fs::canonicalize(&options.root)?;
        let mut disk = Disk::new(root.clone(), options.fsync);
        load::recover(&mut disk)?;
        let mut tree = load::load(&disk, first_revision())?;
        load::replay(&mut disk, &mut tree)?;
        let (tx, rx) = mpsc::channel();
        let state = Arc::new(RwLock::new(State { tree, queue: Some(tx) }));
        let files = Disk::new(root.clone(), options.fsync);
        let writer = Writer {
            rx,
            disk,
            files,
            state: Arc::downgrade(&state),
            interval: Duration::from_millis(options.checkpoint_ms),
        };
        let thread = std::thread::Builder::new().name("sunfish-fs-writer".into()).spawn(move || writer.run())?;
        let checker = Disk::new(root.clone(), options.fsync);
        Ok(FsBackend { state, root, checker, thread: Mutex::new(Some(thread)) })
    }

    /// The store's canonical root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Runs a mutation on the tree and waits until its changes are durable (logged). The log
    /// entries are queued under the tree lock; the wait happens after the lock is released.
    async fn commit<T>(&self, mutate: impl FnOnce(&mut ResourceTree) -> Result<(T, Vec<Change>)>) -> Result<T> {
        let (out, ack) = {
            let mut state = self.state.write();
            let State { tree, queue } = &mut *state;
            let queue = queue.as_ref().ok_or_else(|| Error::storage("fs storage is closed"))?;
            // Refused writes (a symbolic link on the way, a name the file system cannot take)
            // are found here, under the lock, and undone before anyone can read them.
            tree.begin();
            let (out, changes) = match mutate(tree) {
                Ok(r) => r,
                Err(e) => {
                    tree.rollback();
                    return Err(e);
                }
            };
            // Entries hold no collection a create appended to (only its path), so the next
            // create can move that collection out of the tree again instead of copying it.
            let entries: Vec<Entry> = changes.into_iter().map(Entry::from).collect();
            if let Err(e) = entries.iter().try_for_each(|e| self.checker.check_target(&e.target(), e.is_removal())) {
                tree.rollback();
                tracing::error!(error = %e, "fs storage refused a write");
                return Err(Error::storage(e));
            }
            tree.commit();
            if entries.is_empty() {
                return Ok(out);
            }
            let (tx, rx) = oneshot::channel();
            queue
                .send(Msg::Commit { entries, ack: tx })
                .map_err(|_| Error::storage("fs storage writer has stopped"))?;
            (out, rx)
        };
        match ack.await {
            Ok(Ok(())) => Ok(out),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::storage("fs storage writer stopped before the write was durable")),
        }
    }
}

/// Microseconds since the epoch: revisions start there, so ETags from before a restart never
/// come back after it.
fn first_revision() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2))
        .unwrap_or(1)
}

/// Checks a record namespace and key before anything changes: valid path segments, and a key
/// short enough that `<key>.json` is a valid file name.
fn check_names(ns: &str, key: Option<&str>) -> Result<()> {
    check_kv_name(ns)?;
    let Some(key) = key else { return Ok(()) };
    check_kv_name(key)?;
    if key.len() + disk::KV_SUFFIX.len() > disk::MAX_NAME {
        return Err(Error::InvalidPath {
            path: format!("{ns}/{}", key.chars().take(64).collect::<String>()),
            reason: format!("record keys are limited to {} bytes", disk::MAX_NAME - disk::KV_SUFFIX.len()),
        });
    }
    Ok(())
}

#[async_trait]
impl StorageBackend for FsBackend {
    async fn get(&self, path: &ResourcePath) -> Result<Resource> {
        self.state.read().tree.get(path)
    }

    async fn create(
        &self,
        collection: &ResourcePath,
        member: Value,
        new_collection: Option<Value>,
    ) -> Result<Resource> {
        self.commit(|tree| tree.create(collection, member, new_collection)).await
    }

    async fn replace(&self, path: &ResourcePath, body: Value, if_match: Option<u64>) -> Result<Resource> {
        self.commit(|tree| tree.replace(path, body, if_match)).await
    }

    async fn patch(&self, path: &ResourcePath, delta: Value, if_match: Option<u64>) -> Result<Resource> {
        self.commit(|tree| tree.patch(path, &delta, if_match)).await
    }

    async fn delete(&self, path: &ResourcePath, if_match: Option<u64>) -> Result<Vec<ResourcePath>> {
        self.commit(|tree| tree.delete(path, if_match)).await
    }

    async fn children(&self, path: &ResourcePath) -> Result<Vec<ResourcePath>> {
        Ok(self.state.read().tree.children(path))
    }

    async fn paths(&self) -> Result<Vec<ResourcePath>> {
        Ok(self.state.read().tree.paths())
    }

    async fn import(&self, resources: Vec<(ResourcePath, Value)>) -> Result<()> {
        self.commit(|tree| Ok(((), tree.import(resources)))).await
    }

    async fn import_loaded(&self, resources: Vec<Loaded>) -> Result<()> {
        self.commit(|tree| Ok(((), tree.import_loaded(resources)))).await
    }

    async fn kv_get(&self, ns: &str, key: &str) -> Result<Option<Value>> {
        check_names(ns, Some(key))?;
        Ok(self.state.read().tree.kv_get(ns, key))
    }

    async fn kv_put(&self, ns: &str, key: &str, value: Value) -> Result<()> {
        check_names(ns, Some(key))?;
        self.commit(|tree| Ok(((), tree.kv_put(ns, key, value)))).await
    }

    async fn kv_delete(&self, ns: &str, key: &str) -> Result<bool> {
        check_names(ns, Some(key))?;
        self.commit(|tree| Ok(tree.kv_delete(ns, key))).await
    }

    async fn kv_list(&self, ns: &str) -> Result<Vec<(String, Value)>> {
        check_names(ns, None)?;
        Ok(self.state.read().tree.kv_list(ns))
    }

    /// Logs everything queued, writes the files (a checkpoint), and stops the writer; later writes fail
    /// with [`Error::Storage`], reads keep working. Calling it again does nothing.
    async fn close(&self) -> Result<()> {
        let Some(queue) = self.state.write().queue.take() else { return Ok(()) };
        let (tx, rx) = oneshot::channel();
        let sent = queue.send(Msg::Flush { ack: tx });
        // The writer stops once this last sender is gone and its queue is empty.
        drop(queue);
        let flushed = match sent {
            Ok(()) => rx.await.unwrap_or_else(|_| Err(Error::storage("fs storage writer stopped"))),
            Err(_) => Err(Error::storage("fs storage writer stopped")),
        };
        let handle = self.thread.lock().take();
        if let Some(handle) = handle {
            let joined = tokio::task::spawn_blocking(move || handle.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                return Err(Error::storage("fs storage writer panicked"));
            }
        }
        flushed
    }
}

impl Drop for FsBackend {
    /// Without `close`, still write out what was acknowledged: closing the queue lets the
    /// writer drain it, and joining waits for that (blocking the dropping thread meanwhile).
    fn drop(&mut self) {
        self.state.write().queue.take();
        if let Some(handle) = self.thread.get_mut().take() {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Absent options give the documented defaults; unknown keys are refused by name.
    #[test]
    fn options() {
        let o: FsOptions = PluginOptions::new("storage", "fs", Value::Null).parse().unwrap();
        assert_eq!(o, FsOptions { root: "sunfish-data".into(), fsync: true, checkpoint_ms: 1000 });
        let o: FsOptions =
            PluginOptions::new("storage", "fs", json!({"root": "/x", "fsync": false, "checkpoint_ms": 0}))
                .parse()
                .unwrap();
        assert_eq!(o, FsOptions { root: "/x".into(), fsync: false, checkpoint_ms: 0 });
        let err = PluginOptions::new("storage", "fs", json!({"path": "/x"})).parse::<FsOptions>().unwrap_err();
        assert!(err.to_string().contains("unknown field `path`"), "{err}");
    }

    /// The backend is registered as `fs`.
    #[test]
    fn registered() {
        let r = sunfish_core::registry::lookup::<StorageBackendRegistration>("fs").unwrap();
        assert_eq!(r.name, "fs");
    }
}
