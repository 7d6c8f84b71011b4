//! The initial tree of a new store: `builtin` is `conf/seed` compiled into the binary, so the
//! server runs with no files beside it; a directory in the `index.json` layout can replace it.

use std::path::Path;

use include_dir::{include_dir, Dir};
use serde_json::Value;
use sunfish_core::layout::{read_tree_with, resources_from_files};
use sunfish_core::tree::Loaded;
use sunfish_core::{Core, ResourcePath, StartupError};

static BUILTIN: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../conf/seed");

/// The built-in seed tree.
///
/// # Errors
/// A broken file in `conf/seed` (caught by tests, so only in a broken build).
pub fn builtin() -> Result<Vec<(ResourcePath, Value)>, StartupError> {
    let mut files = Vec::new();
    collect(&BUILTIN, &mut files);
    resources_from_files(files.iter().map(|(p, b)| (p.as_str(), *b)))
        .map_err(|e| StartupError::Config(format!("builtin seed: {e}")))
}

fn collect<'a>(dir: &'a Dir<'a>, out: &mut Vec<(String, &'a [u8])>) {
    for f in dir.files() {
        out.push((f.path().to_string_lossy().into_owned(), f.contents()));
    }
    for d in dir.dirs() {
        collect(d, out);
    }
}

/// Seeds an empty store per `storage.seed` (`builtin`, `none`, or a directory).
///
/// # Errors
/// An unreadable seed directory or a storage failure.
pub async fn apply(core: &Core, seed: &str) -> Result<(), StartupError> {
    if seed == "none" {
        return Ok(());
    }
    // A store that has resources takes no seed: do not read one. A seed directory can be a
    // whole tree (issue 7 benchmarks 100,000 resources), whose reading would cost seconds at
    // every start and its size in memory, which the allocator keeps after it is dropped.
    let paths = core
        .storage()
        .paths()
        .await
        .map_err(|e| StartupError::Io { what: "reading the store".into(), reason: e.to_string() })?;
    if !paths.is_empty() {
        return Ok(());
    }
    drop(paths);
    let resources: Vec<Loaded> = match seed {
        "builtin" => {
            let mut res = builtin()?;
            // Each service gets its own identity (its root and its Manager share it); the seed
            // files' UUIDs are only placeholders.
            let id = Value::String(uuid::Uuid::new_v4().to_string());
            for (path, v) in res.iter_mut() {
                if path.is_root() || path.as_str() == "/redfish/v1/Managers/Sunfish" {
                    if let Some(obj) = v.as_object_mut() {
                        obj.insert("UUID".into(), id.clone());
                    }
                }
            }
            res.into_iter().map(|(p, v)| Loaded::new(p, v)).collect()
        }
        dir => {
            let (res, warnings) = read_tree_with(Path::new(dir), &|p, v| Loaded::new(p.clone(), v))
                .map_err(|e| StartupError::Io { what: format!("seed tree {dir}"), reason: e.to_string() })?;
            for w in warnings {
                tracing::warn!(file = %w.file.display(), reason = %w.reason, "seed file skipped");
            }
            res.into_iter().map(|(_, loaded)| loaded).collect()
        }
    };
    let n = resources.len();
    let seeded = core
        .seed_if_empty(resources)
        .await
        .map_err(|e| StartupError::Io { what: "seeding the store".into(), reason: e.to_string() })?;
    if seeded {
        tracing::info!(resources = n, seed, "seeded an empty store");
    }
    Ok(())
}

/// Keeps the service root's `ProtocolFeaturesSupported` true to this configuration (`$expand`
/// levels). Only a root that already advertises features is updated, so a tree the service
/// did not seed (a reference tree served as it is) is never written at start.
///
/// # Errors
/// A storage failure while updating the root.
pub async fn advertise_features(core: &Core, budget: &sunfish_core::query::Budget) -> Result<(), StartupError> {
    let root = ResourcePath::root();
    let Ok(current) = core.storage().get(&root).await else { return Ok(()) };
    let current = current.value();
    let Some(advertised) = current.get("ProtocolFeaturesSupported") else { return Ok(()) };
    let mut wanted = advertised.clone();
    sunfish_core::merge_patch(
        &mut wanted,
        &serde_json::json!({
            "ExpandQuery": sunfish_core::query::supported_features(budget.max_levels)["ExpandQuery"].clone(),
            "SelectQuery": true, "FilterQuery": true, "OnlyMemberQuery": true, "ExcerptQuery": true, "TopSkipQuery": true
        }),
    );
    if &wanted != advertised {
        core.storage().patch(&root, serde_json::json!({"ProtocolFeaturesSupported": wanted}), None).await.map_err(
            |e| StartupError::Io { what: "updating ProtocolFeaturesSupported".into(), reason: e.to_string() },
        )?;
    }
    Ok(())
}
