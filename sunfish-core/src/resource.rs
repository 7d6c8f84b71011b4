//! The Redfish resource model: a stored JSON object with a revision, and the few rules the
//! service applies to every resource (type from `@odata.type`, what a collection is, how PATCH
//! merges, how links are found).

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::{Error, ResourcePath, Result};

/// One stored resource: its JSON and the revision the backend gave it. Cheap to clone (shared).
///
/// Most resources are kept as their compact JSON text, which is also what a GET sends: a
/// parsed `serde_json::Value` costs about seven times the text (a map, a key string and a
/// hash-table entry per property), which put a store of 100,000 resources at 630 MiB. The
/// JSON is parsed when a write or a query needs it ([`Resource::value`]), and not kept.
/// Collections stay parsed: each create appends to one and each delete removes a member from
/// one, in place, and there are few of them.
#[derive(Clone)]
pub struct Resource {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    revision: u64,
    body: Body,
    /// `@odata.id`, which every response's headers use.
    id: Option<Box<str>>,
    /// `@odata.type`, which every response's headers and type checks use.
    odata_type: Option<Box<str>>,
    /// The parsed text, kept only once a write has asked for it
    /// ([`Resource::value_for_write`]): a write reads the current resource several times
    /// (checks, handlers, the merge), and the resource is replaced right after.
    parsed: OnceLock<Value>,
}

#[derive(Clone)]
enum Body {
    /// A collection: the value, and its compact JSON once a response has needed it.
    /// (Boxed: a `Value` and the cache are three times the size of the text's handle, and
    /// every resource's body is as large as its largest variant.)
    Parsed(Box<(Value, OnceLock<Bytes>)>),
    /// Everything else: the compact JSON.
    Compact(Bytes),
}

impl Resource {
    /// Wraps a value stored at `revision`. Backends create these; revisions only grow.
    pub fn new(value: Value, revision: u64) -> Self {
        let text = |k: &str| value.get(k).and_then(Value::as_str).map(Box::from);
        let (id, odata_type) = (text("@odata.id"), text("@odata.type"));
        let body = if is_collection(&value) {
            Body::Parsed(Box::new((value, OnceLock::new())))
        } else {
            Body::Compact(compact(&value))
        };
        Resource { inner: Arc::new(Inner { revision, body, id, odata_type, parsed: OnceLock::new() }) }
    }

    /// The JSON: borrowed for a collection, parsed from the stored text for anything else (so
    /// bind it once where it is used several times).
    pub fn value(&self) -> Cow<'_, Value> {
        match &self.inner.body {
            Body::Parsed(parsed) => Cow::Borrowed(&parsed.0),
            Body::Compact(json) => match self.inner.parsed.get() {
                Some(value) => Cow::Borrowed(value),
                None => Cow::Owned(parse(json)),
            },
        }
    }

    /// The JSON for a write that is about to replace this resource: parsed once and kept with
    /// it, so the checks, handlers and merge of one write share one parse. Reads use
    /// [`Resource::value`], which keeps nothing (a resource a write was refused for keeps its
    /// parsed form until its next write).
    pub fn value_for_write(&self) -> &Value {
        match &self.inner.body {
            Body::Parsed(parsed) => &parsed.0,
            Body::Compact(json) => self.inner.parsed.get_or_init(|| parse(json)),
        }
    }

    /// The JSON, owned: moved out without copying when this is the only handle to a collection
    /// (one being rewritten by the one writer), else a copy or a parse.
    pub fn into_value(self) -> Value {
        match Arc::try_unwrap(self.inner) {
            Ok(Inner { body: Body::Parsed(parsed), .. }) => parsed.0,
            Ok(Inner { body: Body::Compact(json), .. }) => parse(&json),
            Err(shared) => Resource { inner: shared }.value().into_owned(),
        }
    }

    /// The same content at another revision: how a resource wrapped away from its store (see
    /// [`crate::tree::Loaded`]) enters it. Moves the content when this is the only handle.
    pub fn with_revision(self, revision: u64) -> Resource {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| Inner::clone(&shared));
        inner.revision = revision;
        Resource { inner: Arc::new(inner) }
    }

    /// The storage revision; changes on every write of this resource (also a collection's on
    /// each member change), never repeats for a path within one store's life.
    pub fn revision(&self) -> u64 {
        self.inner.revision
    }

    /// The strong ETag derived from the revision (`"1a2b"`, with quotes).
    pub fn etag(&self) -> String {
        format!("\"{:x}\"", self.inner.revision)
    }

    /// The compact JSON body, shared by every response that sends it.
    pub fn to_bytes(&self) -> Bytes {
        match &self.inner.body {
            Body::Parsed(parsed) => parsed.1.get_or_init(|| compact(&parsed.0)).clone(),
            Body::Compact(json) => json.clone(),
        }
    }

    /// `@odata.id` as stored.
    pub fn odata_id(&self) -> Option<&str> {
        self.inner.id.as_deref()
    }

    /// `@odata.type` as stored.
    pub fn odata_type(&self) -> Option<&str> {
        self.inner.odata_type.as_deref()
    }

    /// The resource's type name (see [`type_name`]).
    pub fn type_name(&self) -> Option<&str> {
        type_name_of(self.odata_type()?)
    }

    /// Whether the resource is a collection (see [`is_collection`]).
    pub fn is_collection(&self) -> bool {
        matches!(self.inner.body, Body::Parsed(_))
    }
}

/// The compact JSON of a value, in an allocation of its exact size (a store holds one per
/// resource; `Vec`'s spare capacity would be a third more on average).
fn compact(value: &Value) -> Bytes {
    let mut v = serde_json::to_vec(value).unwrap_or_default();
    v.shrink_to_fit();
    Bytes::from(v)
}

/// Parses JSON that [`compact`] wrote (it cannot fail; `float_roundtrip` keeps numbers exact).
fn parse(json: &[u8]) -> Value {
    serde_json::from_slice(json).unwrap_or(Value::Null)
}

impl std::fmt::Debug for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resource").field("revision", &self.inner.revision).field("value", &self.value()).finish()
    }
}

/// The type name from `@odata.type`: the text before the first dot, `#` removed
/// (`#ComputerSystem.v1_20_0.ComputerSystem` → `ComputerSystem`).
pub fn type_name(value: &Value) -> Option<&str> {
    type_name_of(value.get("@odata.type")?.as_str()?)
}

/// [`type_name`] of an `@odata.type` text.
fn type_name_of(t: &str) -> Option<&str> {
    let t = t.strip_prefix('#').unwrap_or(t);
    let name = t.split('.').next()?;
    (!name.is_empty()).then_some(name)
}

/// Whether a value is a Redfish collection: its type name ends in `Collection`
/// (`ComputerSystemCollection`). The reference's "contains Collection" would also call
/// `CollectionCapabilities` a collection; we do not.
pub fn is_collection(value: &Value) -> bool {
    type_name(value).is_some_and(|t| t.ends_with("Collection") && t.len() > "Collection".len())
}

/// The collection resource created when a member of type `member_type` is POSTed into a
/// collection that does not exist yet: `#<T>Collection.<T>Collection`, named, empty.
pub fn collection_template(path: &ResourcePath, member_type: &str) -> Value {
    let mut m = Map::new();
    m.insert("@odata.id".into(), Value::String(path.to_string()));
    m.insert("@odata.type".into(), Value::String(format!("#{member_type}Collection.{member_type}Collection")));
    m.insert("Name".into(), Value::String(format!("{member_type} Collection")));
    m.insert("Members".into(), Value::Array(Vec::new()));
    m.insert("Members@odata.count".into(), Value::from(0));
    Value::Object(m)
}

/// A `{"@odata.id": path}` link object.
pub fn link(path: &str) -> Value {
    let mut m = Map::new();
    m.insert("@odata.id".into(), Value::String(path.to_string()));
    Value::Object(m)
}

/// Merges a PATCH delta into `target`: objects merge key by key, recursively (so
/// `{"Status":{"State":"Disabled"}}` keeps `Status.Health`); arrays and scalars replace; `null`
/// is stored as `null` (Redfish clears a property by setting it to null).
pub fn merge_patch(target: &mut Value, delta: &Value) {
    match (target, delta) {
        (Value::Object(t), Value::Object(d)) => {
            for (k, v) in d {
                match t.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge_patch(existing, v),
                    _ => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (t, d) => *t = d.clone(),
    }
}

/// The properties no client may change: identity and type.
pub const IMMUTABLE_PROPERTIES: [&str; 3] = ["@odata.id", "@odata.type", "Id"];

/// Refuses a write that would change `@odata.id`, `@odata.type` or `Id` of `current`. Equal
/// values are accepted, since reference agents echo them in PATCH bodies.
///
/// # Errors
/// [`Error::PropertyNotWritable`] naming the first changed property.
pub fn check_immutable(current: &Value, incoming: &Value) -> Result<()> {
    for prop in IMMUTABLE_PROPERTIES {
        if let Some(new) = incoming.get(prop) {
            if current.get(prop) != Some(new) {
                return Err(Error::PropertyNotWritable { property: prop.to_string() });
            }
        }
    }
    Ok(())
}

/// Removes every link to `gone` (or below it) from `value`, wherever it appears: array entries
/// (`{"@odata.id": ..}` objects or plain strings) and single-valued link objects, whose property
/// is removed. `X@odata.count` next to a pruned array `X` is corrected. Returns whether
/// anything changed.
pub fn remove_links(value: &mut Value, gone: &ResourcePath) -> bool {
    let points_at_gone = |v: &Value| points_within(v, gone);
    fn walk(v: &mut Value, f: &dyn Fn(&Value) -> bool, top: bool) -> bool {
        let mut changed = false;
        match v {
            Value::Object(map) => {
                let mut drop_keys = Vec::new();
                let mut recount = Vec::new();
                for (k, child) in map.iter_mut() {
                    if top && k == "@odata.id" {
                        continue;
                    }
                    match child {
                        Value::Array(items) => {
                            let before = items.len();
                            items.retain(|i| !f(i));
                            if items.len() != before {
                                changed = true;
                                recount.push((format!("{k}@odata.count"), items.len()));
                            }
                            for i in items.iter_mut() {
                                changed |= walk(i, f, false);
                            }
                        }
                        Value::Object(_) if f(child) => drop_keys.push(k.clone()),
                        Value::Object(_) => changed |= walk(child, f, false),
                        _ => {}
                    }
                }
                for k in drop_keys {
                    map.remove(&k);
                    changed = true;
                }
                for (k, n) in recount {
                    if map.contains_key(&k) {
                        map.insert(k, Value::from(n));
                    }
                }
            }
            Value::Array(items) => {
                for i in items.iter_mut() {
                    changed |= walk(i, f, false);
                }
            }
            _ => {}
        }
        changed
    }
    walk(value, &points_at_gone, true)
}

/// Lists `member` at the end of a collection's `Members` (made an array if it is missing or
/// something else) and sets `Members@odata.count`: what a create does to its collection.
pub fn append_member(collection: &mut Value, member: &ResourcePath) {
    if let Some(obj) = collection.as_object_mut() {
        let members = obj.entry("Members").or_insert_with(|| Value::Array(Vec::new()));
        if !members.is_array() {
            *members = Value::Array(Vec::new());
        }
        if let Value::Array(list) = members {
            list.push(link(member.as_str()));
            let n = list.len();
            obj.insert("Members@odata.count".into(), Value::from(n));
        }
    }
}

/// The target text of `v` if it is a link: a string, or an object whose only property is
/// `@odata.id`.
fn link_text(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s),
        // The only entry, read without hashing its key (this runs for every small object).
        Value::Object(o) if o.len() == 1 => match o.iter().next() {
            Some((k, Value::String(t))) if k == "@odata.id" => Some(t),
            _ => None,
        },
        _ => None,
    }
}

/// Whether `v` is a link (a string, or an object with only `@odata.id`) to `gone` or below it.
fn points_within(v: &Value, gone: &ResourcePath) -> bool {
    let Some(target) = link_text(v) else { return false };
    // Parsing a link only drops a fragment, empty segments (`//`) and percent-escapes; without
    // the last two, a link within `gone` contains its text as written. Checking that first
    // spares a parse (and its allocation) for nearly every string of the store on a delete.
    let written = gone.as_str().trim_start_matches('/');
    if !target.contains(written) && !target.contains('%') && !target.contains("//") {
        return false;
    }
    ResourcePath::parse_link(target).is_ok_and(|p| p.is_within(gone))
}

/// Visits every place where [`remove_links`] looks for a link: entries of arrays and values of
/// object properties, at any depth, except the resource's own top-level `@odata.id`. Strings
/// that are object property values are not links (`"Name": "/redfish/v1"` is a name). Stops
/// at, and returns true for, the first place `f` answers true for.
fn any_link_place(value: &Value, f: &mut dyn FnMut(&Value) -> bool) -> bool {
    fn walk(v: &Value, f: &mut dyn FnMut(&Value) -> bool, top: bool) -> bool {
        match v {
            Value::Object(map) => map.iter().any(|(k, child)| {
                if top && k == "@odata.id" {
                    return false;
                }
                match child {
                    Value::Array(items) => items.iter().any(|i| f(i) || walk(i, f, false)),
                    Value::Object(_) => f(child) || walk(child, f, false),
                    _ => false,
                }
            }),
            Value::Array(items) => items.iter().any(|i| walk(i, f, false)),
            _ => false,
        }
    }
    walk(value, f, true)
}

/// Whether [`remove_links`] would find a link to `gone` (or below it) in `value`, without
/// copying or changing it: a delete asks this of every resource that may link into what it
/// removes and copies only those that answer yes.
pub fn has_links(value: &Value, gone: &ResourcePath) -> bool {
    any_link_place(value, &mut |v| points_within(v, gone))
}

/// The resources `value`, stored at `holder`, links to in the places [`remove_links`] looks,
/// except `holder` itself, its direct children and the service root: the links a delete
/// elsewhere in the tree could have to prune. A resource's links to its own children are left
/// out because a delete finds those without an index (the only resource outside a deleted
/// subtree that links to a child inside it is the subtree's parent), and they are most links
/// of the store (every collection member). Unsorted, may repeat.
pub fn cross_links(holder: &ResourcePath, value: &Value) -> Vec<ResourcePath> {
    let mut out = Vec::new();
    any_link_place(value, &mut |v| {
        let Some(text) = link_text(v) else { return false };
        // Every parsable link names `redfish` literally; most strings are not links.
        if !text.contains("redfish") {
            return false;
        }
        // A child link as written (`<holder>/<segment>`), recognised without parsing.
        let plain_child = text
            .strip_prefix(holder.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|seg| !seg.is_empty() && !seg.contains(['/', '%', '#', '?']) && !seg.starts_with('.'));
        if plain_child {
            return false;
        }
        if let Ok(target) = ResourcePath::parse_link(text) {
            if !target.is_root() && &target != holder && target.parent().as_ref() != Some(holder) {
                out.push(target);
            }
        }
        false
    });
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The type rule and the collection rule.
    #[test]
    fn types() {
        let v = json!({"@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem"});
        assert_eq!(type_name(&v), Some("ComputerSystem"));
        assert!(!is_collection(&v));
        assert!(is_collection(&json!({"@odata.type": "#ComputerSystemCollection.ComputerSystemCollection"})));
        assert!(!is_collection(&json!({"@odata.type": "#Collection.Collection"})));
        assert_eq!(type_name(&json!({})), None);
    }

    /// PATCH merges nested objects and replaces arrays.
    #[test]
    fn merge() {
        let mut t = json!({"Status": {"State": "Enabled", "Health": "OK"}, "A": [1, 2], "B": 1});
        merge_patch(&mut t, &json!({"Status": {"State": "Disabled"}, "A": [3], "C": null}));
        assert_eq!(t, json!({"Status": {"State": "Disabled", "Health": "OK"}, "A": [3], "B": 1, "C": null}));
    }

    /// Links to a deleted subtree disappear everywhere, counts follow, other links stay.
    #[test]
    fn link_removal() {
        let gone = ResourcePath::parse("/redfish/v1/Systems/1").unwrap();
        let mut v = json!({
            "@odata.id": "/redfish/v1/Chassis/1",
            "Links": {
                "ComputerSystems": [{"@odata.id": "/redfish/v1/Systems/1"}, {"@odata.id": "/redfish/v1/Systems/10"}],
                "ComputerSystems@odata.count": 2,
                "ManagedBy": {"@odata.id": "/redfish/v1/Systems/1/Bios"},
                "Strings": ["/redfish/v1/Systems/1", "x"]
            },
            "Other": {"Sys": {"@odata.id": "/redfish/v1/Systems/1"}},
            "Thermal": [{"@odata.id": "/redfish/v1/Systems/1/Thermal#/Fans/0"}]
        });
        assert!(has_links(&v, &gone));
        assert!(remove_links(&mut v, &gone));
        assert!(!has_links(&v, &gone), "what remove_links leaves has none");
        assert!(!remove_links(&mut v.clone(), &gone));
        // Each kind of link alone is found, and the resource's own @odata.id is not a link.
        for one in [
            json!({"A": [{"@odata.id": "/redfish/v1/Systems/1"}]}),
            json!({"A": ["/redfish/v1/Systems/1/x"]}),
            json!({"A": {"B": {"@odata.id": "/redfish/v1/Systems/1"}}}),
            json!({"A": [{"B": [{"@odata.id": "/redfish/v1/Systems/1"}]}]}),
            // Spellings the quick text check cannot see through: they are parsed.
            json!({"A": [{"@odata.id": "/redfish/v1//Systems/1/"}]}),
            json!({"A": [{"@odata.id": "/redfish/v1/Systems/%31"}]}),
            json!({"A": [{"@odata.id": "redfish/v1/Systems/1#/x"}]}),
        ] {
            assert!(has_links(&one, &gone), "{one}");
            assert!(remove_links(&mut one.clone(), &gone), "{one}");
        }
        let own = json!({"@odata.id": "/redfish/v1/Systems/1", "Id": "1"});
        assert!(!has_links(&own, &gone));
        assert!(!remove_links(&mut own.clone(), &gone));
        assert_eq!(
            v,
            json!({
                "@odata.id": "/redfish/v1/Chassis/1",
                "Links": {
                    "ComputerSystems": [{"@odata.id": "/redfish/v1/Systems/10"}],
                    "ComputerSystems@odata.count": 1,
                    "Strings": ["x"]
                },
                "Other": {},
                "Thermal": []
            })
        );
    }

    /// Identity properties cannot change but may be echoed.
    #[test]
    fn immutables() {
        let cur = json!({"@odata.id": "/redfish/v1/S/1", "Id": "1", "@odata.type": "#A.v1.A"});
        assert!(check_immutable(&cur, &json!({"Id": "1", "Name": "x"})).is_ok());
        assert_eq!(
            check_immutable(&cur, &json!({"Id": "2"})),
            Err(Error::PropertyNotWritable { property: "Id".into() })
        );
    }
}
