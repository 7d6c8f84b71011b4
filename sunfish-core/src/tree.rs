//! [`ResourceTree`]: the Redfish store semantics over an ordered in-memory map, shared by every
//! backend that keeps its tree in memory (memory, fs). Each mutating call either fails without
//! changing anything or applies completely and returns the [`Change`]s it made, which a
//! persistent backend writes out. Callers serialize mutations (one lock); the tree itself is
//! plain data.

use std::collections::BTreeMap;
use std::ops::Bound;

use serde_json::Value;

use crate::resource::{append_member, has_links, link, merge_patch, remove_links};
use crate::{Error, Operation, Resource, ResourcePath, Result};

/// One effect of a mutation, for persistence.
#[derive(Debug, Clone)]
pub enum Change {
    /// The resource at this path now has this content.
    Put(ResourcePath, Resource),
    /// The collection at the first path gained one member, the second path: its content is
    /// the previous one with one more `Members` link at the end and `Members@odata.count`
    /// updated. A persistent backend can log this instead of the whole collection, whose size
    /// grows with every create; the full content is the tree's current one.
    Append(ResourcePath, ResourcePath),
    /// Nothing is stored at this path any more.
    Remove(ResourcePath),
    /// The private record `ns/key` now holds this value.
    KvPut(String, String, Value),
    /// The private record `ns/key` is gone.
    KvRemove(String, String),
}

/// A previous value, recorded while a transaction is open so it can be rolled back.
#[derive(Debug)]
enum UndoEntry {
    Resource(ResourcePath, Option<Resource>),
    /// A create appended a member to this collection, which had this revision and this
    /// `Members@odata.count`: undone by dropping the last member (recording the whole previous
    /// collection would cost a copy of it per create).
    Append {
        collection: ResourcePath,
        revision: u64,
        count: Option<Value>,
    },
    Kv((String, String), Option<Value>),
}

/// The whole store in memory: resources by path, private records, and the revision counter.
#[derive(Debug)]
pub struct ResourceTree {
    resources: BTreeMap<ResourcePath, Resource>,
    kv: BTreeMap<(String, String), Value>,
    next_revision: u64,
    /// Previous values of what the open transaction changed ([`ResourceTree::begin`]).
    undo: Option<Vec<UndoEntry>>,
}

impl ResourceTree {
    /// An empty tree whose first revision is `first_revision`. Persistent backends pass the
    /// start time in microseconds so that ETags never repeat across restarts.
    pub fn new(first_revision: u64) -> Self {
        ResourceTree {
            resources: BTreeMap::new(),
            kv: BTreeMap::new(),
            next_revision: first_revision.max(1),
            undo: None,
        }
    }

    /// Starts recording previous values, so that a persistent backend can undo a mutation its
    /// storage refuses ([`ResourceTree::rollback`]) or keep it ([`ResourceTree::commit`]).
    pub fn begin(&mut self) {
        self.undo = Some(Vec::new());
    }

    /// Keeps what was changed since [`ResourceTree::begin`].
    pub fn commit(&mut self) {
        self.undo = None;
    }

    /// Restores every value changed since [`ResourceTree::begin`] (revisions are not reused).
    pub fn rollback(&mut self) {
        for entry in self.undo.take().unwrap_or_default().into_iter().rev() {
            match entry {
                UndoEntry::Resource(p, Some(r)) => {
                    self.resources.insert(p, r);
                }
                UndoEntry::Resource(p, None) => {
                    self.resources.remove(&p);
                }
                UndoEntry::Append { collection, revision, count } => {
                    let Some(res) = self.resources.remove(&collection) else { continue };
                    let mut value = res.into_value();
                    if let Some(obj) = value.as_object_mut() {
                        if let Some(Value::Array(list)) = obj.get_mut("Members") {
                            list.pop();
                        }
                        match count {
                            Some(c) => obj.insert("Members@odata.count".into(), c),
                            None => obj.remove("Members@odata.count"),
                        };
                    }
                    self.resources.insert(collection, Resource::new(value, revision));
                }
                UndoEntry::Kv(k, Some(v)) => {
                    self.kv.insert(k, v);
                }
                UndoEntry::Kv(k, None) => {
                    self.kv.remove(&k);
                }
            }
        }
    }

    fn set_resource(&mut self, path: ResourcePath, value: Option<Resource>) {
        let previous = match value {
            Some(r) => self.resources.insert(path.clone(), r),
            None => self.resources.remove(&path),
        };
        if let Some(undo) = self.undo.as_mut() {
            undo.push(UndoEntry::Resource(path, previous));
        }
    }

    fn set_kv(&mut self, key: (String, String), value: Option<Value>) -> bool {
        let previous = match value {
            Some(v) => self.kv.insert(key.clone(), v),
            None => self.kv.remove(&key),
        };
        let existed = previous.is_some();
        if let Some(undo) = self.undo.as_mut() {
            undo.push(UndoEntry::Kv(key, previous));
        }
        existed
    }

    fn bump(&mut self) -> u64 {
        let r = self.next_revision;
        self.next_revision += 1;
        r
    }

    fn put(&mut self, path: ResourcePath, value: Value, changes: &mut Vec<Change>) -> Resource {
        let res = Resource::new(value, self.bump());
        self.set_resource(path.clone(), Some(res.clone()));
        changes.push(Change::Put(path, res.clone()));
        res
    }

    /// Number of stored resources.
    pub fn len(&self) -> usize {
        self.resources.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
    }

    /// The resource at `path`.
    ///
    /// # Errors
    /// `NotFound`.
    pub fn get(&self, path: &ResourcePath) -> Result<Resource> {
        self.resources.get(path).cloned().ok_or_else(|| Error::not_found(path))
    }

    fn check_revision(&self, path: &ResourcePath, if_match: Option<u64>) -> Result<Resource> {
        let current = self.get(path)?;
        match if_match {
            Some(rev) if rev != current.revision() => Err(Error::PreconditionFailed { path: path.to_string() }),
            _ => Ok(current),
        }
    }

    /// See [`crate::StorageBackend::create`].
    ///
    /// # Errors
    /// As there.
    pub fn create(
        &mut self,
        collection: &ResourcePath,
        member: Value,
        new_collection: Option<Value>,
    ) -> Result<(Resource, Vec<Change>)> {
        let member_path = member
            .get("@odata.id")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::PropertyMissing { property: "@odata.id".into() })
            .and_then(ResourcePath::parse)?;
        if member_path.parent().as_ref() != Some(collection) {
            return Err(Error::property_value("@odata.id", format!("not a direct member of {collection}")));
        }
        if self.resources.contains_key(&member_path) {
            return Err(Error::AlreadyExists { path: member_path.to_string() });
        }
        let mut changes = Vec::new();
        // Set when the member is appended to an existing `Members` array: the previous
        // revision and count, which are all a rollback needs.
        let mut appended = None;
        let mut coll_value = match self.resources.get(collection) {
            // The collection is moved out of the map, not copied (the cost of a create grew with
            // the collection): a rollback drops the appended member again.
            Some(c) if c.is_collection() && c.value().get("Members").is_some_and(Value::is_array) => {
                appended = Some((c.revision(), c.value().get("Members@odata.count").cloned()));
                self.resources.remove(collection).map(Resource::into_value).unwrap_or_default()
            }
            Some(c) if c.is_collection() && self.undo.is_none() => {
                self.resources.remove(collection).map(Resource::into_value).unwrap_or_default()
            }
            Some(c) if c.is_collection() => c.value().clone(),
            Some(_) => {
                return Err(Error::NotAllowed {
                    path: collection.to_string(),
                    operation: Operation::Create,
                    allowed: Operation::RESOURCE.to_vec(),
                })
            }
            None => {
                let template = new_collection.ok_or_else(|| Error::not_found(collection))?;
                let parent = collection.parent().ok_or_else(|| Error::not_found(collection))?;
                let parent_res = self.get(&parent)?;
                if parent_res.is_collection() {
                    return Err(Error::not_found(collection));
                }
                let seg = collection.last().unwrap_or_default().to_string();
                if parent_res.value().get(&seg).is_none() {
                    let mut pv = parent_res.value().clone();
                    if let Some(obj) = pv.as_object_mut() {
                        obj.insert(seg, link(collection.as_str()));
                    }
                    self.put(parent, pv, &mut changes);
                }
                template
            }
        };
        append_member(&mut coll_value, &member_path);
        let stored = self.put(member_path.clone(), member, &mut changes);
        match appended {
            Some((revision, count)) => {
                let res = Resource::new(coll_value, self.bump());
                self.resources.insert(collection.clone(), res);
                if let Some(undo) = self.undo.as_mut() {
                    undo.push(UndoEntry::Append { collection: collection.clone(), revision, count });
                }
                changes.push(Change::Append(collection.clone(), member_path));
            }
            None => {
                self.put(collection.clone(), coll_value, &mut changes);
            }
        }
        Ok((stored, changes))
    }

    /// See [`crate::StorageBackend::replace`].
    ///
    /// # Errors
    /// As there.
    pub fn replace(
        &mut self,
        path: &ResourcePath,
        body: Value,
        if_match: Option<u64>,
    ) -> Result<(Resource, Vec<Change>)> {
        self.check_revision(path, if_match)?;
        let mut changes = Vec::new();
        let res = self.put(path.clone(), body, &mut changes);
        Ok((res, changes))
    }

    /// See [`crate::StorageBackend::patch`].
    ///
    /// # Errors
    /// As there.
    pub fn patch(
        &mut self,
        path: &ResourcePath,
        delta: &Value,
        if_match: Option<u64>,
    ) -> Result<(Resource, Vec<Change>)> {
        let current = self.check_revision(path, if_match)?;
        let mut value = current.value().clone();
        merge_patch(&mut value, delta);
        let mut changes = Vec::new();
        let res = self.put(path.clone(), value, &mut changes);
        Ok((res, changes))
    }

    /// Paths at or below `path`, in order.
    fn subtree(&self, path: &ResourcePath) -> Vec<ResourcePath> {
        let mut out = Vec::new();
        if self.resources.contains_key(path) {
            out.push(path.clone());
        }
        let lower = format!("{path}/");
        let upper = format!("{path}0"); // '0' is the byte after '/'
        let range = (Bound::Included(lower.as_str()), Bound::Excluded(upper.as_str()));
        out.extend(self.resources.range::<str, _>(range).map(|(k, _)| k.clone()));
        out
    }

    /// See [`crate::StorageBackend::delete`].
    ///
    /// # Errors
    /// As there.
    pub fn delete(&mut self, path: &ResourcePath, if_match: Option<u64>) -> Result<(Vec<ResourcePath>, Vec<Change>)> {
        if path.is_root() {
            return Err(Error::NotAllowed {
                path: path.to_string(),
                operation: Operation::Delete,
                allowed: vec![Operation::Get, Operation::Patch],
            });
        }
        self.check_revision(path, if_match)?;
        let removed = self.subtree(path);
        let mut changes = Vec::new();
        for p in &removed {
            self.set_resource(p.clone(), None);
            changes.push(Change::Remove(p.clone()));
        }
        // Every remaining resource loses its links into the deleted subtree; for the parent this
        // also drops the collection member entry or the navigation property.
        let mut touched = Vec::new();
        for (p, res) in &self.resources {
            if !has_links(res.value(), path) {
                continue;
            }
            let mut v = res.value().clone();
            if remove_links(&mut v, path) {
                touched.push((p.clone(), v));
            }
        }
        for (p, mut v) in touched {
            if let Some(obj) = v.as_object_mut() {
                if let Some(Value::Array(m)) = obj.get("Members") {
                    let n = m.len();
                    obj.insert("Members@odata.count".into(), Value::from(n));
                }
            }
            self.put(p, v, &mut changes);
        }
        Ok((removed, changes))
    }

    /// Paths directly below `path`.
    pub fn children(&self, path: &ResourcePath) -> Vec<ResourcePath> {
        let depth = path.depth() + 1;
        self.subtree(path).into_iter().filter(|p| p.depth() == depth).collect()
    }

    /// Every stored path, sorted.
    pub fn paths(&self) -> Vec<ResourcePath> {
        self.resources.keys().cloned().collect()
    }

    /// Stores each resource as given (seed, migration, loading from disk).
    pub fn import(&mut self, resources: Vec<(ResourcePath, Value)>) -> Vec<Change> {
        let mut changes = Vec::new();
        for (p, v) in resources {
            self.put(p, v, &mut changes);
        }
        changes
    }

    /// Sets (`Some`) or removes (`None`) the resource at `path` alone, with a new revision and
    /// no change set: replaying a persistent backend's log of changes ([`Change::Put`],
    /// [`Change::Remove`]) onto the tree it loaded.
    pub fn restore(&mut self, path: ResourcePath, value: Option<Value>) {
        match value {
            Some(v) => {
                let res = Resource::new(v, self.bump());
                self.resources.insert(path, res);
            }
            None => {
                self.resources.remove(&path);
            }
        }
    }

    /// Replays a [`Change::Append`]: lists `member` at the end of the collection's `Members`
    /// unless it is listed already (so a replay over files that have it already changes
    /// nothing), and sets the count. Returns whether anything changed; a missing collection
    /// changes nothing.
    pub fn restore_append(&mut self, collection: &ResourcePath, member: &ResourcePath) -> bool {
        let Some(res) = self.resources.get(collection) else { return false };
        let listed = |m: &Value| m.get("@odata.id").and_then(Value::as_str) == Some(member.as_str());
        if res.value().get("Members").and_then(Value::as_array).is_some_and(|l| l.iter().any(listed)) {
            return false;
        }
        let mut value = self.resources.remove(collection).map(Resource::into_value).unwrap_or_default();
        append_member(&mut value, member);
        let res = Resource::new(value, self.bump());
        self.resources.insert(collection.clone(), res);
        true
    }

    /// A private record.
    pub fn kv_get(&self, ns: &str, key: &str) -> Option<Value> {
        self.kv.get(&(ns.to_string(), key.to_string())).cloned()
    }

    /// Creates or replaces a private record.
    pub fn kv_put(&mut self, ns: &str, key: &str, value: Value) -> Vec<Change> {
        self.set_kv((ns.to_string(), key.to_string()), Some(value.clone()));
        vec![Change::KvPut(ns.to_string(), key.to_string(), value)]
    }

    /// Deletes a private record.
    pub fn kv_delete(&mut self, ns: &str, key: &str) -> (bool, Vec<Change>) {
        let existed = self.set_kv((ns.to_string(), key.to_string()), None);
        let changes = if existed { vec![Change::KvRemove(ns.to_string(), key.to_string())] } else { Vec::new() };
        (existed, changes)
    }

    /// Every record of a namespace, sorted by key.
    pub fn kv_list(&self, ns: &str) -> Vec<(String, Value)> {
        self.kv.iter().filter(|((n, _), _)| n == ns).map(|((_, k), v)| (k.clone(), v.clone())).collect()
    }
}

/// Checks a private record namespace or key: the same rules as a path segment, so backends may
/// use them as file names.
///
/// # Errors
/// `InvalidPath`.
pub fn check_kv_name(name: &str) -> Result<()> {
    ResourcePath::root().child(name).map(|_| ())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn p(s: &str) -> ResourcePath {
        ResourcePath::parse(s).unwrap()
    }

    /// Creates outside a transaction move the collection out of the map instead of copying it;
    /// a handle a reader holds keeps the old version.
    #[test]
    fn creates_leave_held_copies_alone() {
        let mut t = ResourceTree::new(1);
        t.import(vec![
            (p("/redfish/v1"), json!({"@odata.id": "/redfish/v1"})),
            (p("/redfish/v1/Systems"), json!({"@odata.id": "/redfish/v1/Systems", "@odata.type": "#ComputerSystemCollection.ComputerSystemCollection", "Members": []})),
        ]);
        let member = |i: u32| json!({"@odata.id": format!("/redfish/v1/Systems/{i}"), "@odata.type": "#ComputerSystem.v1_0_0.ComputerSystem"});
        // Nobody holds the collection: it is moved, not copied, and the result is the same.
        t.create(&p("/redfish/v1/Systems"), member(1), None).unwrap();
        let held = t.get(&p("/redfish/v1/Systems")).unwrap();
        // A reader holds it: the reader keeps its version.
        t.create(&p("/redfish/v1/Systems"), member(2), None).unwrap();
        assert_eq!(held.value()["Members@odata.count"], 1);
        let now = t.get(&p("/redfish/v1/Systems")).unwrap();
        assert_eq!(now.value()["Members@odata.count"], 2);
        assert_eq!(now.value()["Members"][1]["@odata.id"], "/redfish/v1/Systems/2");
        assert!(now.revision() > held.revision());
    }

    /// A rolled-back transaction leaves resources and records exactly as before.
    #[test]
    fn rollback_restores_everything() {
        let mut t = ResourceTree::new(1);
        t.import(vec![
            (p("/redfish/v1"), json!({"S": {"@odata.id": "/redfish/v1/S"}})),
            (p("/redfish/v1/S"), json!({"@odata.type": "#XCollection.XCollection", "Members": [{"@odata.id": "/redfish/v1/S/a"}], "Members@odata.count": 1})),
            (p("/redfish/v1/S/a"), json!({"@odata.type": "#X.v1_0_0.X", "Id": "a"})),
        ]);
        t.kv_put("ns", "k", json!(1));
        let before: Vec<(ResourcePath, Value)> =
            t.paths().iter().map(|q| (q.clone(), t.get(q).unwrap().value().clone())).collect();
        t.begin();
        t.create(&p("/redfish/v1/S"), json!({"@odata.id": "/redfish/v1/S/b", "@odata.type": "#X.v1_0_0.X"}), None)
            .unwrap();
        t.delete(&p("/redfish/v1/S/a"), None).unwrap();
        t.kv_put("ns", "k", json!(2));
        t.kv_delete("ns", "k");
        t.rollback();
        let after: Vec<(ResourcePath, Value)> =
            t.paths().iter().map(|q| (q.clone(), t.get(q).unwrap().value().clone())).collect();
        assert_eq!(before, after);
        assert_eq!(t.kv_get("ns", "k"), Some(json!(1)));
    }

    /// A create into an existing collection is reported as an append (not the whole
    /// collection), also inside a transaction; rolling it back restores the collection's
    /// content and revision; replaying the append is idempotent.
    #[test]
    fn creates_append_and_roll_back() {
        let mut t = ResourceTree::new(1);
        t.import(vec![
            (p("/redfish/v1"), json!({"@odata.id": "/redfish/v1"})),
            (
                p("/redfish/v1/S"),
                json!({"@odata.id": "/redfish/v1/S", "@odata.type": "#XCollection.XCollection", "Members": []}),
            ),
        ]);
        let before = t.get(&p("/redfish/v1/S")).unwrap();
        let member = json!({"@odata.id": "/redfish/v1/S/a", "@odata.type": "#X.v1_0_0.X"});
        t.begin();
        let (_, changes) = t.create(&p("/redfish/v1/S"), member.clone(), None).unwrap();
        assert!(matches!(&changes[..], [Change::Put(m, _), Change::Append(c, a)]
            if m.as_str() == "/redfish/v1/S/a" && c.as_str() == "/redfish/v1/S" && a == m));
        assert_eq!(t.get(&p("/redfish/v1/S")).unwrap().value()["Members@odata.count"], 1);
        t.rollback();
        let after = t.get(&p("/redfish/v1/S")).unwrap();
        assert_eq!(after.value(), before.value(), "no count was there before, none after");
        assert_eq!(after.revision(), before.revision());
        assert!(t.get(&p("/redfish/v1/S/a")).is_err());

        t.begin();
        t.create(&p("/redfish/v1/S"), member, None).unwrap();
        t.commit();
        let created = t.get(&p("/redfish/v1/S")).unwrap().value().clone();
        assert!(!t.restore_append(&p("/redfish/v1/S"), &p("/redfish/v1/S/a")), "listed already");
        assert!(t.restore_append(&p("/redfish/v1/S"), &p("/redfish/v1/S/b")));
        let v = t.get(&p("/redfish/v1/S")).unwrap().value().clone();
        assert_eq!(v["Members"], json!([{"@odata.id": "/redfish/v1/S/a"}, {"@odata.id": "/redfish/v1/S/b"}]));
        assert_eq!(v["Members@odata.count"], 2);
        assert_eq!(created["Members@odata.count"], 1);
        assert!(!t.restore_append(&p("/redfish/v1/Nope"), &p("/redfish/v1/Nope/x")));
        t.restore(p("/redfish/v1/S/b"), Some(json!({"Id": "b"})));
        assert_eq!(t.get(&p("/redfish/v1/S/b")).unwrap().value()["Id"], "b");
        t.restore(p("/redfish/v1/S/b"), None);
        assert!(t.get(&p("/redfish/v1/S/b")).is_err());
    }
}
