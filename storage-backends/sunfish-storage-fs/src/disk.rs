//! Every file operation below the root, and the checks that keep them there.
//!
//! Request paths cannot name anything outside the root ([`ResourcePath`] refuses `..`,
//! separators and dot-segments), but the tree on disk may contain symbolic links put there by
//! hand. [`Disk`] never writes or deletes through one: before touching `<root>/a/b/index.json`
//! it checks with `lstat` that `a` and `a/b` are real directories (or do not exist yet, in which
//! case it creates them). A symbolic link as the last component is harmless: `rename` replaces
//! the link itself and `remove_dir_all` unlinks it without following it.
//!
//! Files are replaced atomically: the new content goes to a temporary file in the same
//! directory, whose name starts with a dot so that no reader ever takes it for a resource, and
//! is then renamed over the target.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};

use serde_json::ser::{PrettyFormatter, Serializer};
use sunfish_core::ResourcePath;

use crate::journal::{Op, Target};

/// The backend's private folder below the root. Resource path segments never start with a dot,
/// so no resource can collide with it.
pub(crate) const PRIVATE_DIR: &str = ".sunfish";
/// The journal of earlier versions, inside [`PRIVATE_DIR`] (read at open only).
pub(crate) const JOURNAL_FILE: &str = "journal.json";
/// The write-ahead log's files inside [`PRIVATE_DIR`]: `wal-<number>.jsonl`, a new number at
/// each checkpoint, so that the log grows on while a checkpoint writes the files.
const LOG_PREFIX: &str = "wal-";
/// See [`LOG_PREFIX`].
const LOG_SUFFIX: &str = ".jsonl";
/// The private records' folder of earlier versions inside [`PRIVATE_DIR`]: `kv/<ns>/<key>.json`,
/// one file per record. Read at open; a namespace's folder is removed once its records file
/// is written.
pub(crate) const KV_DIR: &str = "kv";
/// The private records' folder inside [`PRIVATE_DIR`]: `records/<ns>.json`, one JSON object
/// per namespace (key → value). One file per namespace, because some namespaces are queues
/// (the event log) whose records live for seconds: a file each cost an inode created and
/// deleted per event.
pub(crate) const RECORDS_DIR: &str = "records";
/// The file holding a resource inside its folder.
const INDEX_FILE: &str = "index.json";
/// Suffix of private record files.
pub(crate) const KV_SUFFIX: &str = ".json";
/// Longest file name (NAME_MAX on Linux file systems).
pub(crate) const MAX_NAME: usize = 255;
/// Longest path handed to a system call, temp file name included (PATH_MAX is 4096 with the
/// final NUL; keep a margin for the temporary name).
const MAX_PATH: usize = 4000;

/// File operations below one canonical root. Owned by the writer thread once the backend is
/// open (and by the opening code before that), so no two threads ever write through it.
#[derive(Debug)]
pub(crate) struct Disk {
    /// Canonical (symlink-free) root, made by [`crate::FsBackend::open`].
    root: PathBuf,
    /// Whether to make writes durable (`fsync`, `syncfs`); off only for tests and benchmarks.
    fsync: bool,
    /// Makes temporary file names unique within this process.
    tmp_seq: u64,
    /// Whether the private folder is known to exist (it is made on the first write, so that
    /// merely serving a reference tree adds nothing to it).
    private_ready: bool,
    /// The write-ahead log's current file, opened for appending on the first write.
    log: Option<File>,
    /// The number of the current log file.
    log_seq: u64,
    /// The current log file's length in bytes.
    log_len: u64,
}

impl Disk {
    /// File operations below `root`, which must already be canonical.
    pub(crate) fn new(root: PathBuf, fsync: bool) -> Self {
        Disk { root, fsync, tmp_seq: 0, private_ready: false, log: None, log_seq: 1, log_len: 0 }
    }

    /// The canonical root.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/.sunfish`.
    pub(crate) fn private_dir(&self) -> PathBuf {
        self.root.join(PRIVATE_DIR)
    }

    /// `<root>/.sunfish/journal.json`.
    pub(crate) fn journal_path(&self) -> PathBuf {
        self.private_dir().join(JOURNAL_FILE)
    }

    /// `<root>/.sunfish/wal-<seq>.jsonl`.
    pub(crate) fn log_path(&self, seq: u64) -> PathBuf {
        self.private_dir().join(format!("{LOG_PREFIX}{seq:016}{LOG_SUFFIX}"))
    }

    /// `<root>/.sunfish/records`.
    pub(crate) fn records_root(&self) -> PathBuf {
        self.private_dir().join(RECORDS_DIR)
    }

    /// `<root>/.sunfish/kv`.
    pub(crate) fn kv_root(&self) -> PathBuf {
        self.private_dir().join(KV_DIR)
    }

    /// The folder of a resource: `<root>/<segments>`.
    fn resource_dir(&self, path: &ResourcePath) -> PathBuf {
        let mut dir = self.root.clone();
        dir.extend(path.segments());
        dir
    }

    /// The folder and file name a target is stored in.
    fn location(&self, target: &Target) -> (PathBuf, String) {
        match target {
            Target::Resource(path) => (self.resource_dir(path), INDEX_FILE.to_string()),
            Target::Namespace(ns) => (self.records_root(), format!("{ns}{KV_SUFFIX}")),
            Target::Kv { ns, key } => (self.kv_root().join(ns), format!("{key}{KV_SUFFIX}")),
        }
    }

    /// Refuses an operation that would go through a symbolic link or a non-directory below the
    /// root. Called by the writer on each change set before it is journaled, so that a refused
    /// write fails its own request instead of failing every later replay. A removal behind a link
    /// is not refused but skipped: nothing this backend wrote can be there. Removing the root
    /// (which only a hand-edited journal could ask for) is refused.
    ///
    /// # Errors
    /// An explanation of the refusal, or the `lstat` failure.
    pub(crate) fn check(&self, op: &Op) -> io::Result<()> {
        self.check_target(&op.target, op.content.is_none())
    }

    /// [`Disk::check`] for a target that is written, or removed when `removal`.
    ///
    /// # Errors
    /// As there.
    pub(crate) fn check_target(&self, target: &Target, removal: bool) -> io::Result<()> {
        let (dir, name) = self.location(target);
        match (target, removal) {
            (Target::Resource(path), true) if path.is_root() => {
                Err(io::Error::other("refusing to remove the service root"))
            }
            (_, true) => self.removal_dir(target).map(|_| ()),
            (_, false) => {
                let file = dir.join(&name);
                // Found here, before journaling, a name the file system refuses fails only its
                // request; found when applying, it would fail every replay.
                if name.len() > MAX_NAME || file.as_os_str().len() > MAX_PATH {
                    return Err(io::Error::other(format!("path too long for the file system: {}", file.display())));
                }
                if let Some(reason) = self.blocked(&dir)? {
                    return Err(io::Error::other(reason));
                }
                match fs::symlink_metadata(&file) {
                    Ok(m) if m.is_dir() => Err(io::Error::other(format!("{} is a directory", file.display()))),
                    Ok(_) => Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// For a removal: the folder whose entries are removed, or `None` when the way there is
    /// blocked by a link or a file (then nothing of ours is there).
    fn removal_dir(&self, target: &Target) -> io::Result<Option<PathBuf>> {
        let (dir, _) = self.location(target);
        // A resource's own folder is removed (a link there is unlinked, not followed), so only
        // the folders leading to it must be real; a record's folder must be real itself.
        let way = match target {
            Target::Resource(_) => dir.parent().unwrap_or(&dir),
            Target::Kv { .. } | Target::Namespace(_) => &dir,
        };
        Ok(self.blocked(way)?.is_none().then_some(dir))
    }

    /// Why `dir` cannot be used, if it cannot: a component below the root is a symbolic link or
    /// not a directory. A missing component ends the check: everything below it is created by
    /// this process.
    fn blocked(&self, dir: &Path) -> io::Result<Option<String>> {
        let rel = dir
            .strip_prefix(&self.root)
            .map_err(|_| io::Error::other(format!("{} is outside the root", dir.display())))?;
        let mut cur = self.root.clone();
        for comp in rel.components() {
            let Component::Normal(name) = comp else {
                return Err(io::Error::other(format!("unexpected component in {}", dir.display())));
            };
            cur.push(name);
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Ok(Some(format!("refusing to write through symbolic link {}", cur.display())));
                }
                Ok(m) if !m.is_dir() => return Ok(Some(format!("{} is not a directory", cur.display()))),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Applies one operation (checked again: a link may have appeared since the journal was
    /// written). Removing something already gone succeeds, so replaying a journal is idempotent.
    ///
    /// # Errors
    /// The refusal or I/O failure, naming the file.
    pub(crate) fn apply(&mut self, op: &Op) -> io::Result<()> {
        self.check(op)?;
        let (dir, name) = self.location(&op.target);
        let applied = match (&op.target, &op.content) {
            (Target::Namespace(_), Some(body)) => {
                let bytes = body.json().map_err(io::Error::other)?;
                self.write_atomic(&dir, &name, &bytes, false)
            }
            (_, Some(body)) => {
                let bytes = pretty_json(&body.json().map_err(io::Error::other)?)?;
                self.write_atomic(&dir, &name, &bytes, false)
            }
            (target, None) => match (target, self.removal_dir(target)?) {
                (_, None) => Ok(()),
                (Target::Resource(_), Some(dir)) => remove_tree(&dir),
                (Target::Kv { .. } | Target::Namespace(_), Some(dir)) => match fs::remove_file(dir.join(&name)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                },
            },
        };
        // The namespace's records are in their file now: the earlier versions' folder goes.
        applied
            .and_then(|()| match &op.target {
                Target::Namespace(ns) if self.blocked(&self.kv_root())?.is_none() => {
                    remove_tree(&self.kv_root().join(ns))
                }
                _ => Ok(()),
            })
            .map_err(|e| io::Error::new(e.kind(), format!("{}/{name}: {e}", dir.display())))
    }

    /// Appends `bytes` (whole log lines) to the write-ahead log's current file and makes them
    /// durable (`fdatasync`). Once this returns, the lines survive a crash. The first call
    /// after open or [`Disk::rotate_log`] creates the file (and the private folder) and makes
    /// their entries durable too.
    ///
    /// # Errors
    /// Any I/O failure: the lines may then be partly written, which a later read treats as a
    /// torn tail; the caller must not acknowledge them, and the file is reopened by the next call.
    pub(crate) fn append_log(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.log.is_none() {
            let dir = self.private_dir();
            if !self.private_ready {
                if let Some(reason) = self.blocked(&dir)? {
                    return Err(io::Error::other(reason));
                }
                fs::create_dir_all(&dir)?;
                // The folder's own entry in the root must be durable before the log in it is.
                self.sync_dir(&self.root)?;
                self.private_ready = true;
            }
            let path = self.log_path(self.log_seq);
            if fs::symlink_metadata(&path).is_ok_and(|m| !m.is_file()) {
                return Err(io::Error::other(format!("{} is not a regular file", path.display())));
            }
            let file = OpenOptions::new().append(true).create(true).open(&path)?;
            self.log_len = file.metadata()?.len();
            self.sync_dir(&dir)?;
            self.log = Some(file);
        }
        let Some(file) = self.log.as_mut() else { return Err(io::Error::other("no log")) };
        let written = file.write_all(bytes).and_then(|()| if self.fsync { file.sync_data() } else { Ok(()) });
        match written {
            Ok(()) => {
                self.log_len += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Cut what may have been half-written, so later lines do not follow a torn one.
                let len = self.log_len;
                if let Some(file) = self.log.take() {
                    let _ = file.set_len(len);
                }
                Err(e)
            }
        }
    }

    /// The current log file's length in bytes.
    pub(crate) fn log_len(&self) -> u64 {
        self.log_len
    }

    /// Ends the current log file: later lines go to the next one. Returns the number of the
    /// file ended, which a checkpoint covering everything logged so far may remove
    /// ([`Disk::remove_logs`]) once its files are durable.
    pub(crate) fn rotate_log(&mut self) -> u64 {
        let ended = self.log_seq;
        self.log = None;
        self.log_len = 0;
        self.log_seq += 1;
        ended
    }

    /// The log files present, by number, in order.
    ///
    /// # Errors
    /// The private folder cannot be listed.
    pub(crate) fn log_files(&self) -> io::Result<Vec<(u64, PathBuf)>> {
        let mut out = Vec::new();
        let entries = match fs::read_dir(self.private_dir()) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(seq) = name
                .to_str()
                .and_then(|n| n.strip_prefix(LOG_PREFIX))
                .and_then(|n| n.strip_suffix(LOG_SUFFIX))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            out.push((seq, entry.path()));
        }
        out.sort();
        Ok(out)
    }

    /// Continues numbering after the files present (at open, before the first append).
    pub(crate) fn continue_logs_after(&mut self, last: u64) {
        self.log_seq = self.log_seq.max(last + 1);
    }

    /// Removes the log files numbered up to `upto` once a checkpoint made their content
    /// durable in the files.
    ///
    /// # Errors
    /// The folder cannot be listed or a file not removed; the files left only cost a replay
    /// that changes nothing.
    pub(crate) fn remove_logs(&self, upto: u64) -> io::Result<()> {
        for (seq, path) in self.log_files()? {
            if seq <= upto {
                match fs::remove_file(&path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Deletes the journal of an earlier version once it is applied and durable.
    ///
    /// # Errors
    /// I/O failures other than the journal being gone already.
    pub(crate) fn remove_journal(&self) -> io::Result<()> {
        match fs::remove_file(self.journal_path()) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Makes everything written so far durable, with one `syncfs(2)` of the root's file system:
    /// it covers every file, new folder and rename of a batch in one call, where per-file
    /// `fsync` would need one call per file plus one per touched folder.
    ///
    /// # Errors
    /// The `syncfs` failure.
    pub(crate) fn sync(&self) -> io::Result<()> {
        if !self.fsync {
            return Ok(());
        }
        let root = File::open(&self.root)?;
        rustix::fs::syncfs(&root).map_err(io::Error::from)
    }

    /// fsyncs a folder, making renames and new entries in it durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if self.fsync {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Replaces `dir/name` with `bytes` atomically, creating `dir` if needed. The caller has
    /// checked `dir` with [`Disk::blocked`].
    fn write_atomic(&mut self, dir: &Path, name: &str, bytes: &[u8], sync_file: bool) -> io::Result<()> {
        fs::create_dir_all(dir)?;
        let pid = std::process::id();
        // `create_new` refuses existing files (and links), so a leftover temp file from a
        // crashed process with the same pid only costs a retry.
        let (tmp, mut file) = loop {
            self.tmp_seq += 1;
            // Independent of `name`, so a long target name cannot make it exceed NAME_MAX.
            let tmp = dir.join(format!(".tmp-{pid}-{}", self.tmp_seq));
            match OpenOptions::new().write(true).create_new(true).open(&tmp) {
                Ok(f) => break (tmp, f),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        };
        let written = file
            .write_all(bytes)
            .and_then(|()| if sync_file { file.sync_all() } else { Ok(()) })
            .and_then(|()| fs::rename(&tmp, dir.join(name)));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written
    }
}

/// Removes a resource folder and everything in it, without following symbolic links (the
/// standard library's `remove_dir_all` unlinks links instead of entering them, also at the top).
fn remove_tree(dir: &Path) -> io::Result<()> {
    let result = match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(dir),
        Ok(_) => fs::remove_file(dir),
        Err(e) => Err(e),
    };
    match result {
        // Already gone (a parent's removal took it, or a replay), or a parent is a file: in
        // every case nothing is stored there any more.
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => Ok(()),
        other => other,
    }
}

/// Reformats compact JSON text the way the reference tree is written: 4-space indentation,
/// keys in the stored order, and a final newline. The text is reformatted as it is read (a
/// checkpoint writes thousands of resources kept as text; a value of each would double the
/// work).
///
/// # Errors
/// `json` is not JSON.
pub(crate) fn pretty_json(json: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(json.len() * 3 / 2 + 64);
    let mut ser = Serializer::with_formatter(&mut out, PrettyFormatter::with_indent(b"    "));
    let mut de = serde_json::Deserializer::from_slice(json);
    serde_transcode::transcode(&mut de, &mut ser).map_err(io::Error::other)?;
    de.end().map_err(io::Error::other)?;
    out.push(b'\n');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use serde::Serialize;
    use serde_json::Value;

    use super::*;

    /// What `pretty_json` must match: serde_json's pretty printer with 4-space indentation.
    fn pretty(value: &Value) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut ser = Serializer::with_formatter(&mut out, PrettyFormatter::with_indent(b"    "));
        value.serialize(&mut ser).map_err(io::Error::other)?;
        out.push(b'\n');
        Ok(out)
    }

    /// Files use 4-space indentation and keep the stored key order.
    #[test]
    fn pretty_format() {
        let v = json!({"b": 1, "a": {"c": [1]}});
        let s = String::from_utf8(pretty(&v).unwrap()).unwrap();
        assert_eq!(s, "{\n    \"b\": 1,\n    \"a\": {\n        \"c\": [\n            1\n        ]\n    }\n}\n");
        let text = serde_json::to_vec(&json!({"b": 1.5, "a": {"c": [1, "x\\"], "d": {}, "e": []}})).unwrap();
        let v: Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(pretty_json(&text).unwrap(), pretty(&v).unwrap(), "the same bytes from text as from a value");
        assert!(pretty_json(b"{} x").is_err());
    }
}
