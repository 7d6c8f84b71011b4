//! Opening a store: finish an interrupted commit, then read the tree and the private records.
//! Apart from replaying a journal, opening writes nothing, so a reference tree is served exactly
//! as it is on disk.

use std::fs;
use std::io;

use serde_json::Value;
use sunfish_core::layout::read_tree_with;
use sunfish_core::tree::{check_kv_name, Loaded, ResourceTree};
use tracing::{info, warn};

use crate::disk::{Disk, KV_SUFFIX};
use crate::journal::{self, Entry};
use crate::writer;

/// Replays `<root>/.sunfish/journal.json` if it is complete, discards it if it is torn, and
/// removes temporary files a crash left in the private folder.
///
/// # Errors
/// The private folder or journal is not a real directory or file, or replaying fails (the
/// journal then stays for the next attempt).
pub(crate) fn recover(disk: &mut Disk) -> io::Result<()> {
    let private = disk.private_dir();
    match fs::symlink_metadata(&private) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(io::Error::other(format!("{} is not a directory", private.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    for entry in fs::read_dir(&private)?.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.contains(".tmp-") && entry.file_type().is_ok_and(|t| t.is_file()) {
            if let Err(e) = fs::remove_file(entry.path()) {
                warn!(file = %entry.path().display(), error = %e, "cannot remove a leftover temporary file");
            }
        }
    }
    let path = disk.journal_path();
    match fs::symlink_metadata(&path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Err(io::Error::other(format!("{} is not a regular file", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    match journal::decode(&fs::read(&path)?) {
        Ok(ops) => {
            info!(journal = %path.display(), entries = ops.len(), "replaying the fs storage journal");
            writer::apply(disk, &ops)?;
        }
        // The journal is renamed into place whole and requests are acknowledged only after
        // that, so one that does not parse was never acknowledged: dropping it loses nothing
        // anyone was promised.
        Err(reason) => warn!(journal = %path.display(), %reason, "discarding an unfinished fs storage journal"),
    }
    disk.remove_journal()
}

/// Replays the write-ahead log's files onto the tree read from the files, in order, then
/// writes the files they name from the result (a checkpoint) and removes the log files. A torn
/// last line (never acknowledged) is dropped with a warning.
///
/// # Errors
/// A log file cannot be read, or the checkpoint fails (the log then stays for the next attempt).
pub(crate) fn replay(disk: &mut Disk, tree: &mut ResourceTree) -> io::Result<()> {
    let files = disk.log_files()?;
    let Some(&(last, _)) = files.last() else { return Ok(()) };
    let mut targets = std::collections::BTreeSet::new();
    let mut count = 0usize;
    for (_, path) in &files {
        if !fs::symlink_metadata(path)?.is_file() {
            return Err(io::Error::other(format!("{} is not a regular file", path.display())));
        }
        let (entries, stop) = journal::decode_log(&fs::read(path)?);
        if let Some(reason) = stop {
            warn!(log = %path.display(), %reason, "an fs storage log file ends early; the rest was never acknowledged");
        }
        count += entries.len();
        for entry in entries {
            targets.insert(entry.target());
            match entry {
                Entry::Put(p, body) => tree.restore(p, Some(body.into_value())),
                Entry::Append(collection, member) => {
                    tree.restore_append(&collection, &member);
                }
                Entry::Unlist(collection, member) => {
                    tree.restore_unlist(&collection, &member);
                }
                Entry::Remove(p) => tree.restore(p, None),
                Entry::KvPut(ns, key, value) => {
                    let _ = tree.kv_put(&ns, &key, value);
                }
                Entry::KvRemove(ns, key) => {
                    let _ = tree.kv_delete(&ns, &key);
                }
            }
        }
    }
    info!(files = files.len(), entries = count, "replayed the fs storage log");
    let ops = writer::snapshot(tree, targets);
    writer::apply(disk, &ops)?;
    disk.remove_logs(last)?;
    disk.continue_logs_after(last);
    Ok(())
}

/// Reads the resources (warning about files it skips) and the private records into a new tree
/// whose revisions start at `first_revision`.
///
/// # Errors
/// The root cannot be read.
pub(crate) fn load(disk: &Disk, first_revision: u64) -> io::Result<ResourceTree> {
    let (resources, warnings) = read_tree_with(disk.root(), &|p, v| Loaded::new(p.clone(), v))?;
    for w in &warnings {
        warn!(file = %w.file.display(), reason = %w.reason, "skipping a file of the fs storage tree");
    }
    let mut tree = ResourceTree::new(first_revision);
    // Loading is not a change: the returned change set is dropped, nothing is written back.
    let count = resources.len();
    let _ = tree.import_loaded(resources.into_iter().map(|(_, loaded)| loaded).collect());
    let mut records = 0usize;
    for (ns, key, value) in read_records(disk)? {
        let _ = tree.kv_put(&ns, &key, value);
        records += 1;
    }
    info!(root = %disk.root().display(), resources = count, records, "fs storage loaded");
    Ok(tree)
}

/// Whether `dir` is a real folder (`false` when missing).
///
/// # Errors
/// It is something else, or cannot be examined.
fn real_dir(dir: &std::path::Path) -> io::Result<bool> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => Ok(true),
        Ok(_) => Err(io::Error::other(format!("{} is not a directory", dir.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Every private record: each `<root>/.sunfish/records/<ns>.json` (an object, key → value),
/// then, for namespaces without one, the earlier versions' `<root>/.sunfish/kv/<ns>/<key>.json`.
/// Links, temporary files (names starting with a dot), invalid names and unparsable files are
/// skipped, the last two with a warning.
fn read_records(disk: &Disk) -> io::Result<Vec<(String, String, Value)>> {
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let records_root = disk.records_root();
    if real_dir(&records_root)? {
        for file in fs::read_dir(&records_root)?.flatten() {
            let file_name = file.file_name();
            let Some(name) = file_name.to_str() else { continue };
            if name.starts_with('.') || !file.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let Some(ns) = valid_name(&file.path(), name.strip_suffix(KV_SUFFIX)) else { continue };
            let parsed = fs::read(file.path())
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<serde_json::Map<String, Value>>(&b).map_err(|e| e.to_string()));
            match parsed {
                Ok(records) => {
                    for (key, value) in records {
                        if let Some(key) = valid_name(&file.path(), Some(&key)) {
                            out.push((ns.clone(), key, value));
                        }
                    }
                    seen.insert(ns);
                }
                Err(reason) => warn!(file = %file.path().display(), %reason, "skipping a records file"),
            }
        }
    }
    let kv_root = disk.kv_root();
    if !real_dir(&kv_root)? {
        return Ok(out);
    }
    for ns_entry in fs::read_dir(&kv_root)?.flatten() {
        if !ns_entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let Some(ns) = valid_name(&ns_entry.path(), ns_entry.file_name().to_str()) else { continue };
        if seen.contains(&ns) {
            // A records file is written before its namespace's folder is removed: it wins.
            continue;
        }
        let files = match fs::read_dir(ns_entry.path()) {
            Ok(files) => files,
            Err(e) => {
                warn!(dir = %ns_entry.path().display(), error = %e, "cannot read a record namespace");
                continue;
            }
        };
        for file in files.flatten() {
            let file_name = file.file_name();
            let Some(name) = file_name.to_str() else { continue };
            if name.starts_with('.') || !file.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let Some(key) = valid_name(&file.path(), name.strip_suffix(KV_SUFFIX)) else { continue };
            let parsed = fs::read(file.path())
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Value>(&b).map_err(|e| e.to_string()));
            match parsed {
                Ok(value) => out.push((ns.clone(), key, value)),
                Err(reason) => warn!(file = %file.path().display(), %reason, "skipping a private record"),
            }
        }
    }
    Ok(out)
}

/// `name` if it is a valid record namespace or key, else a warning and `None`.
fn valid_name(path: &std::path::Path, name: Option<&str>) -> Option<String> {
    match name.map(|n| check_kv_name(n).map(|()| n)) {
        Some(Ok(n)) => Some(n.to_string()),
        Some(Err(e)) => {
            warn!(file = %path.display(), error = %e, "skipping a private record with an invalid name");
            None
        }
        None => {
            warn!(file = %path.display(), "skipping a private record with an invalid name");
            None
        }
    }
}
