//! The write-ahead log (WAL), and the single-file journal of earlier versions.
//!
//! **The log** (`<root>/.sunfish/wal-<n>.jsonl`, a new file per checkpoint): one line per
//! group commit, appended and made durable (`fdatasync`) before the commit's requests are
//! answered:
//! ```json
//! {"wal": 1, "entries": [
//!   {"op": "put", "path": "/redfish/v1/Systems/1", "value": {...}},
//!   {"op": "append", "path": "/redfish/v1/Systems", "member": "/redfish/v1/Systems/1"},
//!   {"op": "unlist", "path": "/redfish/v1/Systems", "member": "/redfish/v1/Systems/2"},
//!   {"op": "remove", "path": "/redfish/v1/Systems/2"},
//!   {"op": "kv_put", "ns": "sessions", "key": "abc", "value": ...},
//!   {"op": "kv_remove", "ns": "sessions", "key": "abc"}
//! ]}
//! ```
//! `put` holds a resource's full new content; `append` says that a collection gained one member
//! at the end of `Members` (a create), so that a create costs a line the size of the member, not
//! of its collection, whose `Members` grow with every create; `unlist` is its counterpart for
//! a delete (the collection no longer lists that member). `remove` removes one resource (a
//! deleted subtree has one entry per resource). The resource files are not touched per commit:
//! a checkpoint (see `writer`) writes the current content of everything changed since the last
//! one, makes it durable with one `syncfs`, and only then removes the log files it covers.
//! Opening a store replays the log files, in order, onto the tree read from the files; every
//! entry is idempotent on content at least as new as the checkpoint it follows (`append` lists
//! a member only if it is not listed yet, `unlist` drops it only if it is listed, and every later change of the same target comes
//! after it), so replaying log files whose removal a crash interrupted is safe too.
//!
//! A line is complete only with its newline and when it parses whole. A crash can tear only
//! the last line (every earlier one was made durable before the next was written), and a torn
//! line was never acknowledged: replay stops there.
//!
//! **The journal** (`<root>/.sunfish/journal.json`, format `sunfish-fs-journal/1`) is what
//! earlier versions wrote before touching the files: a store a crash left with one is finished
//! at open by applying it (final contents: `put`, folder-removing `remove`, `kv_put`,
//! `kv_remove`), then the log is replayed.
//!
//! Paths and record names are validated again when either is read, so a file edited by hand can
//! no more escape the root than a request can.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use sunfish_core::tree::{check_kv_name, Change};
use sunfish_core::{Resource, ResourcePath};

/// The `format` tag of the journal of earlier versions.
const FORMAT: &str = "sunfish-fs-journal/1";
/// The `wal` tag of the log lines this crate writes and reads.
const WAL_VERSION: u32 = 1;

/// What one entry changes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Target {
    /// A resource's `index.json` (and, on removal, its folder).
    Resource(ResourcePath),
    /// All the records of one namespace, in one file: what checkpoints write.
    Namespace(String),
    /// A private record's own file: the layout of earlier versions (their journals name it).
    Kv {
        /// Namespace, a valid path segment.
        ns: String,
        /// Key, a valid path segment.
        key: String,
    },
}

/// New content: the stored [`Resource`] (shared with memory, not copied) or a plain value.
#[derive(Debug, Clone)]
pub(crate) enum Body {
    /// A resource as the tree stored it.
    Resource(Resource),
    /// A private record, or a resource read back from a journal.
    Value(Value),
}

impl Body {
    /// The JSON as a value (parsed, for a resource kept as text).
    #[cfg(test)]
    pub(crate) fn value(&self) -> std::borrow::Cow<'_, Value> {
        match self {
            Body::Resource(r) => r.value(),
            Body::Value(v) => std::borrow::Cow::Borrowed(v),
        }
    }

    /// The compact JSON text to write: a resource's own, shared (no parse, no copy).
    pub(crate) fn json(&self) -> serde_json::Result<Bytes> {
        match self {
            Body::Resource(r) => Ok(r.to_bytes()),
            Body::Value(v) => serde_json::to_vec(v).map(Bytes::from),
        }
    }

    /// The JSON, owned.
    pub(crate) fn into_value(self) -> Value {
        match self {
            Body::Resource(r) => r.into_value(),
            Body::Value(v) => v,
        }
    }
}

/// One file operation (a checkpoint's, or an old journal's entry): a target and its final
/// content, `None` for removal.
#[derive(Debug, Clone)]
pub(crate) struct Op {
    /// What is written or removed.
    pub(crate) target: Target,
    /// The content to store, or `None` to remove.
    pub(crate) content: Option<Body>,
}

/// One entry of the log: what one change did (see the module doc).
#[derive(Debug, Clone)]
pub(crate) enum Entry {
    /// The resource's new content (shared with memory when written, not copied).
    Put(ResourcePath, Body),
    /// The collection gained this member at the end of `Members`.
    Append(ResourcePath, ResourcePath),
    /// The collection no longer lists this member.
    Unlist(ResourcePath, ResourcePath),
    /// The resource is gone.
    Remove(ResourcePath),
    /// The record's new value.
    KvPut(String, String, Value),
    /// The record is gone.
    KvRemove(String, String),
}

impl Entry {
    /// The file the entry changes.
    pub(crate) fn target(&self) -> Target {
        match self {
            Entry::Put(p, _) | Entry::Append(p, _) | Entry::Unlist(p, _) | Entry::Remove(p) => {
                Target::Resource(p.clone())
            }
            Entry::KvPut(ns, _, _) | Entry::KvRemove(ns, _) => Target::Namespace(ns.clone()),
        }
    }

    /// Whether the entry removes its target (a record's removal rewrites its namespace's file).
    pub(crate) fn is_removal(&self) -> bool {
        matches!(self, Entry::Remove(_))
    }
}

impl From<Change> for Entry {
    fn from(change: Change) -> Self {
        match change {
            Change::Put(path, res) => Entry::Put(path, Body::Resource(res)),
            Change::Append(collection, member) => Entry::Append(collection, member),
            Change::Unlist(collection, member) => Entry::Unlist(collection, member),
            Change::Remove(path) => Entry::Remove(path),
            Change::KvPut(ns, key, v) => Entry::KvPut(ns, key, v),
            Change::KvRemove(ns, key) => Entry::KvRemove(ns, key),
        }
    }
}

#[derive(Serialize)]
struct LineOut<'a> {
    wal: u32,
    entries: Vec<EntryOut<'a>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LineIn {
    wal: u32,
    entries: Vec<EntryIn>,
}

#[derive(Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum EntryOut<'a> {
    Put { path: &'a str, value: &'a RawValue },
    Append { path: &'a str, member: &'a str },
    Unlist { path: &'a str, member: &'a str },
    Remove { path: &'a str },
    KvPut { ns: &'a str, key: &'a str, value: &'a Value },
    KvRemove { ns: &'a str, key: &'a str },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JournalIn {
    format: String,
    entries: Vec<EntryIn>,
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum EntryIn {
    Put { path: String, value: Value },
    Append { path: String, member: String },
    Unlist { path: String, member: String },
    Remove { path: String },
    KvPut { ns: String, key: String, value: Value },
    KvRemove { ns: String, key: String },
}

/// One log line (newline included) for a group commit's entries.
///
/// # Errors
/// Serialization failures (not expected).
pub(crate) fn encode_batch(entries: &[Entry]) -> serde_json::Result<Vec<u8>> {
    // The resources' own text goes into the line as it is (checked, not parsed into a value).
    let bodies = entries
        .iter()
        .map(|e| match e {
            Entry::Put(_, b) => b.json(),
            _ => Ok(Bytes::new()),
        })
        .collect::<serde_json::Result<Vec<Bytes>>>()?;
    let mut out = Vec::with_capacity(entries.len());
    for (e, json) in entries.iter().zip(&bodies) {
        out.push(match e {
            Entry::Put(p, _) => EntryOut::Put { path: p.as_str(), value: serde_json::from_slice(json)? },
            Entry::Append(p, m) => EntryOut::Append { path: p.as_str(), member: m.as_str() },
            Entry::Unlist(p, m) => EntryOut::Unlist { path: p.as_str(), member: m.as_str() },
            Entry::Remove(p) => EntryOut::Remove { path: p.as_str() },
            Entry::KvPut(ns, key, value) => EntryOut::KvPut { ns, key, value },
            Entry::KvRemove(ns, key) => EntryOut::KvRemove { ns, key },
        });
    }
    let mut line = serde_json::to_vec(&LineOut { wal: WAL_VERSION, entries: out })?;
    line.push(b'\n');
    Ok(line)
}

/// Reads a log: the entries of every complete line, in order, and why reading stopped early
/// (a torn or invalid line, which ends the log: nothing after it was acknowledged).
pub(crate) fn decode_log(bytes: &[u8]) -> (Vec<Entry>, Option<String>) {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let Some(end) = rest.iter().position(|b| *b == b'\n') else {
            return (out, Some(format!("a torn last line of {} bytes", rest.len())));
        };
        match decode_line(&rest[..end]) {
            Ok(entries) => out.extend(entries),
            Err(reason) => return (out, Some(reason)),
        }
        rest = &rest[end + 1..];
    }
    (out, None)
}

fn decode_line(line: &[u8]) -> Result<Vec<Entry>, String> {
    let line: LineIn = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    if line.wal != WAL_VERSION {
        return Err(format!("unknown log version {}", line.wal));
    }
    line.entries
        .into_iter()
        .map(|e| {
            Ok(match e {
                EntryIn::Put { path: p, value } => {
                    if !value.is_object() {
                        return Err(format!("{p}: a resource must be a JSON object"));
                    }
                    Entry::Put(path(&p)?, Body::Value(value))
                }
                EntryIn::Append { path: p, member } => {
                    let (collection, member) = member_of(&p, &member)?;
                    Entry::Append(collection, member)
                }
                EntryIn::Unlist { path: p, member } => {
                    let (collection, member) = member_of(&p, &member)?;
                    Entry::Unlist(collection, member)
                }
                EntryIn::Remove { path: p } => Entry::Remove(path(&p)?),
                EntryIn::KvPut { ns, key, value } => {
                    kv_names(&ns, &key)?;
                    Entry::KvPut(ns, key, value)
                }
                EntryIn::KvRemove { ns, key } => {
                    kv_names(&ns, &key)?;
                    Entry::KvRemove(ns, key)
                }
            })
        })
        .collect()
}

fn path(p: &str) -> Result<ResourcePath, String> {
    ResourcePath::parse(p).map_err(|e| e.to_string())
}

/// A collection and one of its direct members, as `append` and `unlist` name them.
fn member_of(collection: &str, member: &str) -> Result<(ResourcePath, ResourcePath), String> {
    let (collection, member) = (path(collection)?, path(member)?);
    if member.parent().as_ref() != Some(&collection) {
        return Err(format!("{member} is not a member of {collection}"));
    }
    Ok((collection, member))
}

fn kv_names(ns: &str, key: &str) -> Result<(), String> {
    check_kv_name(ns).and_then(|()| check_kv_name(key)).map_err(|e| e.to_string())
}

/// Reads a journal. Anything that does not parse completely, has another format tag, or names
/// an invalid path or record was never acknowledged by this crate (the journal is renamed into
/// place whole) and is refused.
///
/// # Errors
/// Why the journal is refused.
pub(crate) fn decode(bytes: &[u8]) -> Result<Vec<Op>, String> {
    let journal: JournalIn = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if journal.format != FORMAT {
        return Err(format!("unknown journal format {:?}", journal.format));
    }
    let kv = |ns: String, key: String| -> Result<Target, String> {
        kv_names(&ns, &key)?;
        Ok(Target::Kv { ns, key })
    };
    journal
        .entries
        .into_iter()
        .map(|e| {
            Ok(match e {
                EntryIn::Put { path: p, value } => {
                    if !value.is_object() {
                        return Err(format!("{p}: a resource must be a JSON object"));
                    }
                    Op { target: Target::Resource(path(&p)?), content: Some(Body::Value(value)) }
                }
                EntryIn::Append { .. } | EntryIn::Unlist { .. } => {
                    return Err("an append or unlist in a format-1 journal".into())
                }
                EntryIn::Remove { path: p } => Op { target: Target::Resource(path(&p)?), content: None },
                EntryIn::KvPut { ns, key, value } => Op { target: kv(ns, key)?, content: Some(Body::Value(value)) },
                EntryIn::KvRemove { ns, key } => Op { target: kv(ns, key)?, content: None },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn p(s: &str) -> ResourcePath {
        ResourcePath::parse(s).unwrap()
    }

    fn describe(entries: &[Entry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| match e {
                Entry::Put(p, b) => format!("put {p} {}", b.value()),
                Entry::Append(c, m) => format!("append {c} {m}"),
                Entry::Unlist(c, m) => format!("unlist {c} {m}"),
                Entry::Remove(p) => format!("remove {p}"),
                Entry::KvPut(ns, k, v) => format!("kv_put {ns}/{k} {v}"),
                Entry::KvRemove(ns, k) => format!("kv_remove {ns}/{k}"),
            })
            .collect()
    }

    fn sample() -> Vec<Entry> {
        vec![
            Entry::Put(p("/redfish/v1/A/x"), Body::Value(json!({"n": 1}))),
            Entry::Append(p("/redfish/v1/A"), p("/redfish/v1/A/x")),
            Entry::Unlist(p("/redfish/v1/A"), p("/redfish/v1/A/y")),
            Entry::Remove(p("/redfish/v1/B")),
            Entry::KvPut("s".into(), "k".into(), json!([1])),
            Entry::KvRemove("s".into(), "j".into()),
        ]
    }

    /// Log lines read back as written, several lines in a row.
    #[test]
    fn log_round_trip() {
        let mut bytes = encode_batch(&sample()).unwrap();
        assert_eq!(bytes.last(), Some(&b'\n'));
        assert_eq!(bytes.iter().filter(|b| **b == b'\n').count(), 1, "one line per batch");
        bytes.extend(encode_batch(&sample()[..1]).unwrap());
        let (back, stop) = decode_log(&bytes);
        assert_eq!(stop, None);
        let mut want = describe(&sample());
        want.extend(describe(&sample()[..1]));
        assert_eq!(describe(&back), want);
    }

    /// A torn or invalid line ends the log: the lines before it count, nothing after it does.
    #[test]
    fn log_stops_at_a_torn_line() {
        let good = encode_batch(&sample()).unwrap();
        for tail in [
            good[..good.len() - 1].to_vec(),
            good[..good.len() / 2].to_vec(),
            vec![0u8; 4096],
            b"{\"wal\": 2, \"entries\": []}\n".to_vec(),
            b"{\"wal\": 1, \"entries\": [{\"op\": \"put\", \"path\": \"/redfish/v1/../x\", \"value\": {}}]}\n".to_vec(),
            b"{\"wal\": 1, \"entries\": [{\"op\": \"append\", \"path\": \"/redfish/v1/A\", \"member\": \"/redfish/v1/B/c\"}]}\n".to_vec(),
            b"{\"wal\": 1, \"entries\": [{\"op\": \"kv_put\", \"ns\": \"..\", \"key\": \"x\", \"value\": 1}]}\n".to_vec(),
        ] {
            let mut bytes = good.clone();
            bytes.extend(&tail);
            bytes.extend(&good);
            let (back, stop) = decode_log(&bytes);
            assert_eq!(describe(&back), describe(&sample()), "{}", String::from_utf8_lossy(&tail));
            assert!(stop.is_some());
        }
    }

    /// An old-format journal reads back as its file operations.
    #[test]
    fn old_journal_is_read() {
        let j = json!({"format": FORMAT, "entries": [
            {"op": "put", "path": "/redfish/v1/A", "value": {"n": 1}},
            {"op": "remove", "path": "/redfish/v1/B"},
            {"op": "kv_put", "ns": "s", "key": "k", "value": [1]},
            {"op": "kv_remove", "ns": "s", "key": "j"},
        ]});
        let ops = decode(&serde_json::to_vec(&j).unwrap()).unwrap();
        let got: Vec<(Target, Option<Value>)> =
            ops.iter().map(|o| (o.target.clone(), o.content.as_ref().map(|b| b.value().into_owned()))).collect();
        assert_eq!(
            got,
            vec![
                (Target::Resource(p("/redfish/v1/A")), Some(json!({"n": 1}))),
                (Target::Resource(p("/redfish/v1/B")), None),
                (Target::Kv { ns: "s".into(), key: "k".into() }, Some(json!([1]))),
                (Target::Kv { ns: "s".into(), key: "j".into() }, None),
            ]
        );
    }

    /// Torn, foreign or escaping old journals are refused.
    #[test]
    fn refuses_bad_journals() {
        let good = serde_json::to_vec(&json!({"format": FORMAT, "entries": [
            {"op": "put", "path": "/redfish/v1/A", "value": {"n": 1}}]}))
        .unwrap();
        assert!(decode(&good).is_ok());
        assert!(decode(&good[..good.len() - 1]).is_err());
        assert!(decode(br#"{"format": "other", "entries": []}"#).is_err());
        for entry in [
            json!({"op": "put", "path": "/redfish/v1/../x", "value": {}}),
            json!({"op": "put", "path": "/redfish/v1/%2e%2e", "value": {}}),
            json!({"op": "remove", "path": "/etc"}),
            json!({"op": "kv_put", "ns": "..", "key": "x", "value": 1}),
            json!({"op": "kv_remove", "ns": "a", "key": "b/c"}),
            json!({"op": "put", "path": "/redfish/v1/A", "value": 3}),
            json!({"op": "append", "path": "/redfish/v1/A", "member": "/redfish/v1/A/b"}),
        ] {
            let j = serde_json::to_vec(&json!({"format": FORMAT, "entries": [entry]})).unwrap();
            assert!(decode(&j).is_err(), "{entry}");
        }
    }
}
