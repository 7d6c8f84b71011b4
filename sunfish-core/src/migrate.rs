//! Moving a whole store between backends (`sunfish-server --migrate-from`, `--export-to`):
//! every resource, as stored, and every private record of the services
//! ([`SERVICE_NAMESPACES`]: accounts' password hashes, sessions, subscriptions' secrets and
//! cursors, the event log, task results, agent records). Revisions are the target's own (ETags
//! change); everything else is copied as it is.

use std::sync::Arc;

use crate::registry::lookup;
use crate::{PluginOptions, Result, StartupError, StorageBackend, StorageBackendRegistration};

/// The `kv` namespaces the built-in services keep. A plugin that keeps records of its own in
/// other namespaces must copy them itself.
pub const SERVICE_NAMESPACES: [&str; 8] =
    ["credentials", "sessions", "accountlocks", "aggregation", "taskresult", "eventlog", "eventcursor", "eventsecret"];

/// Resources imported per batch (one backend transaction or journal batch each).
const BATCH: usize = 500;

/// What a copy moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Copied {
    /// Resources.
    pub resources: usize,
    /// Private records.
    pub records: usize,
}

/// A store named on the command line: `fs:DIR`, `postgres:URL` or `memory:` — the backend's
/// name and the value of its main option (`root`, `url`).
///
/// # Errors
/// [`StartupError::Config`] for another form; [`StartupError::UnknownPlugin`] for a backend
/// this binary does not link.
pub fn parse_store(spec: &str) -> std::result::Result<(String, serde_json::Value), StartupError> {
    let (name, location) = spec.split_once(':').ok_or_else(|| {
        StartupError::Config(format!("store {spec:?}: expected BACKEND:LOCATION (fs:DIR, postgres:URL)"))
    })?;
    lookup::<StorageBackendRegistration>(name)?;
    let options = match name {
        "fs" => serde_json::json!({"root": location}),
        "postgres" => serde_json::json!({"url": location}),
        _ if location.is_empty() => serde_json::Value::Null,
        _ => return Err(StartupError::Config(format!("store {spec:?}: backend {name} takes no location"))),
    };
    Ok((name.to_string(), options))
}

/// Opens the backend `name` with `options`, as the server would.
///
/// # Errors
/// Unknown backends, bad options, a store that cannot be opened.
pub async fn open(
    name: &str,
    options: serde_json::Value,
) -> std::result::Result<Arc<dyn StorageBackend>, StartupError> {
    let reg = lookup::<StorageBackendRegistration>(name)?;
    (reg.build)(PluginOptions::new("storage", name, options)).await
}

/// Copies everything in `from` into `to`, which must hold nothing yet (a half-copied or
/// seeded store would mix two trees). `progress(done, total)` is called after every batch of
/// resources and once after the records.
///
/// # Errors
/// `Conflict`-like [`crate::Error::Storage`] when `to` is not empty; storage failures.
pub async fn copy_store(
    from: &dyn StorageBackend,
    to: &dyn StorageBackend,
    mut progress: impl FnMut(usize, usize),
) -> Result<Copied> {
    let existing = to.paths().await?;
    if !existing.is_empty() {
        return Err(crate::Error::Storage {
            message: format!("the target store is not empty ({} resources): copy into an empty one", existing.len()),
        });
    }
    let paths = from.paths().await?;
    let total = paths.len();
    let mut done = 0;
    for chunk in paths.chunks(BATCH) {
        let mut batch = Vec::with_capacity(chunk.len());
        for p in chunk {
            let r = from.get(p).await?;
            batch.push((p.clone(), r.value().into_owned()));
        }
        to.import(batch).await?;
        done += chunk.len();
        progress(done, total);
    }
    let mut records = 0;
    for ns in SERVICE_NAMESPACES {
        for (key, value) in from.kv_list(ns).await? {
            to.kv_put(ns, &key, value).await?;
            records += 1;
        }
    }
    progress(done, total);
    Ok(Copied { resources: done, records })
}
