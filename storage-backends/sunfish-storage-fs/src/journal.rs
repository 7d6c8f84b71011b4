//! The write-ahead journal: what one group commit will do to the files, written durably before
//! any of them is touched.
//!
//! Format (`<root>/.sunfish/journal.json`, compact JSON):
//! ```json
//! {"format": "sunfish-fs-journal/1", "entries": [
//!   {"op": "put", "path": "/redfish/v1/Systems/1", "value": {...}},
//!   {"op": "remove", "path": "/redfish/v1/Systems/2"},
//!   {"op": "kv_put", "ns": "sessions", "key": "abc", "value": ...},
//!   {"op": "kv_remove", "ns": "sessions", "key": "abc"}
//! ]}
//! ```
//! Each entry holds the *final* content of its target (or its removal), never a delta, so
//! applying a journal twice gives the same files: replay after a crash at any point is safe.
//! `remove` deletes the resource's whole folder. Entries are applied in order; a target appears
//! at most once, at the position of its last change, which keeps a folder removal before any
//! later write below it.
//!
//! Paths and record names are validated again when a journal is read, so a journal edited by
//! hand can no more escape the root than a request can.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sunfish_core::tree::{check_kv_name, Change};
use sunfish_core::{Resource, ResourcePath};

/// The `format` tag of journals this crate writes and reads.
const FORMAT: &str = "sunfish-fs-journal/1";

/// What one entry changes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Target {
    /// A resource's `index.json` (and, on removal, its folder).
    Resource(ResourcePath),
    /// A private record's file.
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
    /// The JSON to write.
    pub(crate) fn value(&self) -> &Value {
        match self {
            Body::Resource(r) => r.value(),
            Body::Value(v) => v,
        }
    }
}

/// One journal entry: a target and its final content, `None` for removal.
#[derive(Debug, Clone)]
pub(crate) struct Op {
    /// What is written or removed.
    pub(crate) target: Target,
    /// The content to store, or `None` to remove.
    pub(crate) content: Option<Body>,
}

impl From<Change> for Op {
    fn from(change: Change) -> Self {
        match change {
            Change::Put(path, res) => Op { target: Target::Resource(path), content: Some(Body::Resource(res)) },
            Change::Remove(path) => Op { target: Target::Resource(path), content: None },
            Change::KvPut(ns, key, v) => Op { target: Target::Kv { ns, key }, content: Some(Body::Value(v)) },
            Change::KvRemove(ns, key) => Op { target: Target::Kv { ns, key }, content: None },
        }
    }
}

/// Keeps only the last change of each target, at the position of that last change (last writer
/// wins; each change carries the full content, so nothing is lost).
pub(crate) fn coalesce(ops: Vec<Op>) -> Vec<Op> {
    let mut seen = HashSet::with_capacity(ops.len());
    let mut out: Vec<Op> = ops.into_iter().rev().filter(|op| seen.insert(op.target.clone())).collect();
    out.reverse();
    out
}

#[derive(Serialize)]
struct JournalOut<'a> {
    format: &'static str,
    entries: Vec<EntryOut<'a>>,
}

#[derive(Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum EntryOut<'a> {
    Put { path: &'a str, value: &'a Value },
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
    Remove { path: String },
    KvPut { ns: String, key: String, value: Value },
    KvRemove { ns: String, key: String },
}

/// The journal file's bytes for `ops`.
///
/// # Errors
/// Serialization failures (not expected).
pub(crate) fn encode(ops: &[Op]) -> serde_json::Result<Vec<u8>> {
    let entries = ops
        .iter()
        .map(|op| match (&op.target, &op.content) {
            (Target::Resource(p), Some(b)) => EntryOut::Put { path: p.as_str(), value: b.value() },
            (Target::Resource(p), None) => EntryOut::Remove { path: p.as_str() },
            (Target::Kv { ns, key }, Some(b)) => EntryOut::KvPut { ns, key, value: b.value() },
            (Target::Kv { ns, key }, None) => EntryOut::KvRemove { ns, key },
        })
        .collect();
    serde_json::to_vec(&JournalOut { format: FORMAT, entries })
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
    let path = |p: &str| ResourcePath::parse(p).map_err(|e| e.to_string());
    let kv = |ns: String, key: String| -> Result<Target, String> {
        check_kv_name(&ns).and_then(|()| check_kv_name(&key)).map_err(|e| e.to_string())?;
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

    fn put(path: &str, n: i64) -> Op {
        Op { target: Target::Resource(p(path)), content: Some(Body::Value(json!({ "n": n }))) }
    }

    fn remove(path: &str) -> Op {
        Op { target: Target::Resource(p(path)), content: None }
    }

    fn describe(ops: &[Op]) -> Vec<(String, Option<Value>)> {
        ops.iter()
            .map(|op| {
                let t = match &op.target {
                    Target::Resource(p) => p.to_string(),
                    Target::Kv { ns, key } => format!("{ns}/{key}"),
                };
                (t, op.content.as_ref().map(|b| b.value().clone()))
            })
            .collect()
    }

    /// The last change of a target wins and sits where that change was, so a folder removal
    /// stays before a later re-creation below it.
    #[test]
    fn coalesce_keeps_last_in_place() {
        let ops = vec![
            put("/redfish/v1/A", 1),
            put("/redfish/v1/A/x", 1),
            remove("/redfish/v1/A"),
            remove("/redfish/v1/A/x"),
            put("/redfish/v1/A", 2),
            put("/redfish/v1/A/y", 2),
        ];
        assert_eq!(
            describe(&coalesce(ops)),
            vec![
                ("/redfish/v1/A/x".to_string(), None),
                ("/redfish/v1/A".to_string(), Some(json!({"n": 2}))),
                ("/redfish/v1/A/y".to_string(), Some(json!({"n": 2}))),
            ]
        );
    }

    /// A journal reads back as written.
    #[test]
    fn round_trip() {
        let ops = vec![
            put("/redfish/v1/A", 1),
            remove("/redfish/v1/B"),
            Op { target: Target::Kv { ns: "s".into(), key: "k".into() }, content: Some(Body::Value(json!([1]))) },
            Op { target: Target::Kv { ns: "s".into(), key: "j".into() }, content: None },
        ];
        let back = decode(&encode(&ops).unwrap()).unwrap();
        assert_eq!(describe(&back), describe(&ops));
    }

    /// Torn, foreign or escaping journals are refused.
    #[test]
    fn refuses_bad_journals() {
        let good = encode(&[put("/redfish/v1/A", 1)]).unwrap();
        assert!(decode(&good[..good.len() - 1]).is_err());
        assert!(decode(br#"{"format": "other", "entries": []}"#).is_err());
        for entry in [
            json!({"op": "put", "path": "/redfish/v1/../x", "value": {}}),
            json!({"op": "put", "path": "/redfish/v1/%2e%2e", "value": {}}),
            json!({"op": "remove", "path": "/etc"}),
            json!({"op": "kv_put", "ns": "..", "key": "x", "value": 1}),
            json!({"op": "kv_remove", "ns": "a", "key": "b/c"}),
            json!({"op": "put", "path": "/redfish/v1/A", "value": 3}),
        ] {
            let j = serde_json::to_vec(&json!({"format": FORMAT, "entries": [entry]})).unwrap();
            assert!(decode(&j).is_err(), "{entry}");
        }
    }
}
