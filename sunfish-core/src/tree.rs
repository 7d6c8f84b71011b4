//! [`ResourceTree`]: the Redfish store semantics over an ordered in-memory map, shared by every
//! backend that keeps its tree in memory (memory, fs). Each mutating call either fails without
//! changing anything or applies completely and returns the [`Change`]s it made, which a
//! persistent backend writes out. Callers serialize mutations (one lock); the tree itself is
//! plain data.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use serde_json::Value;

use crate::layout::fitted;
use crate::resource::{append_member, cross_links, has_links, is_collection, link, merge_patch, remove_links};
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
    /// The collection at the first path no longer lists the second path, which was its
    /// direct member: its content is the previous one without that `Members` entry and with
    /// `Members@odata.count` updated. The counterpart of [`Change::Append`] for deletes.
    Unlist(ResourcePath, ResourcePath),
    /// Nothing is stored at this path any more.
    Remove(ResourcePath),
    /// The private record `ns/key` now holds this value.
    KvPut(String, String, Value),
    /// The private record `ns/key` is gone.
    KvRemove(String, String),
}

/// A resource ready to enter a tree: wrapped (as compact text unless it is a collection, see
/// [`Resource`]) and its links found. Every write makes one; a store loaded from disk makes
/// them in the threads that read the files ([`crate::layout::read_tree_with`]), so that the
/// work is shared by the cores and the parsed values never exist all at once.
pub struct Loaded {
    path: ResourcePath,
    resource: Resource,
    links: Vec<ResourcePath>,
}

impl Loaded {
    /// Wraps `value`, to be stored at `path`. A collection, kept parsed, is [`fitted`] to its
    /// size first (its content is as large as its members are many).
    pub fn new(path: ResourcePath, value: Value) -> Self {
        let links = cross_links(&path, &value);
        let value = if is_collection(&value) { fitted(value) } else { value };
        Loaded { resource: Resource::new(value, 0), links, path }
    }

    /// The path and the value, for a store that keeps values.
    pub fn into_value(self) -> (ResourcePath, Value) {
        (self.path, self.resource.into_value())
    }
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
    /// A delete dropped the `Members` entry at `index` of this collection, which had this
    /// revision and count: undone by putting the entry back.
    Unlist {
        collection: ResourcePath,
        index: usize,
        entry: Value,
        revision: u64,
        count: Option<Value>,
    },
    Kv((String, String), Option<Value>),
}

/// The whole store in memory: resources by path, private records, and the revision counter.
#[derive(Debug)]
pub struct ResourceTree {
    resources: BTreeMap<ResourcePath, Resource>,
    /// Who links where, for deletes: each target path with the resources that link to it,
    /// for every link [`cross_links`] reports (all but links to a resource's own children).
    /// A delete reads the targets within what it removes instead of walking the whole store
    /// under the write lock. Kept by [`ResourceTree::store`], through which every change of
    /// `resources` goes except appends of a child member, which add no such link.
    /// One `(target, holder)` entry per link (a set per target cost a tree node, 280 bytes,
    /// for the many targets that only one resource links to).
    backlinks: BTreeSet<(ResourcePath, ResourcePath)>,
    /// The same links by holder (only holders that have any), so that replacing or removing a
    /// resource drops its entries without parsing its stored JSON again.
    links: BTreeMap<ResourcePath, Vec<ResourcePath>>,
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
            backlinks: BTreeSet::new(),
            links: BTreeMap::new(),
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
                UndoEntry::Resource(p, r) => {
                    let links = r.as_ref().map(|r| cross_links(&p, &r.value())).unwrap_or_default();
                    self.store(p, r, links);
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
                UndoEntry::Unlist { collection, index, entry, revision, count } => {
                    let Some(res) = self.resources.remove(&collection) else { continue };
                    let mut value = res.into_value();
                    if let Some(obj) = value.as_object_mut() {
                        if let Some(Value::Array(list)) = obj.get_mut("Members") {
                            list.insert(index.min(list.len()), entry);
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

    /// Sets or removes the resource at `path`, keeping the link index in step; returns the
    /// previous one. `links` are the [`cross_links`] of `value` (none for a removal), which the
    /// caller computes from the JSON it has before wrapping it.
    fn store(&mut self, path: ResourcePath, value: Option<Resource>, links: Vec<ResourcePath>) -> Option<Resource> {
        let previous = match value {
            Some(r) => self.resources.insert(path.clone(), r),
            None => self.resources.remove(&path),
        };
        let dropped = self.links.remove(&path).unwrap_or_default();
        for target in dropped {
            self.backlinks.remove(&(target, path.clone()));
        }
        for target in &links {
            self.backlinks.insert((target.clone(), path.clone()));
        }
        if !links.is_empty() {
            self.links.insert(path, links);
        }
        previous
    }

    fn set_resource(&mut self, path: ResourcePath, value: Option<Resource>, links: Vec<ResourcePath>) {
        let previous = self.store(path.clone(), value, links);
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
        self.put_loaded(Loaded::new(path, value), changes)
    }

    fn put_loaded(&mut self, loaded: Loaded, changes: &mut Vec<Change>) -> Resource {
        let Loaded { path, resource, links } = loaded;
        let res = resource.with_revision(self.bump());
        self.set_resource(path.clone(), Some(res.clone()), links);
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
            Some(c) if c.is_collection() => c.value().into_owned(),
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
                    let mut pv = parent_res.value().into_owned();
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
        let mut value = current.value_for_write().clone();
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
        let (lower, upper) = below(path);
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
        // Every remaining resource loses its links into the deleted subtree; for the parent this
        // also drops the collection member entry or the navigation property. Only the parent
        // and the holders the index lists for targets in the subtree can have such links.
        let mut holders: BTreeSet<ResourcePath> = path.parent().into_iter().collect();
        let (first, after) = path.subtree_bounds();
        let range = (Bound::Included((first, ResourcePath::least())), Bound::Excluded((after, ResourcePath::least())));
        holders.extend(
            self.backlinks
                .range(range)
                .filter(|(target, holder)| target.is_within(path) && !holder.is_within(path))
                .map(|(_, holder)| holder.clone()),
        );
        let removed = self.subtree(path);
        let mut changes = Vec::new();
        for p in &removed {
            self.set_resource(p.clone(), None, Vec::new());
            changes.push(Change::Remove(p.clone()));
        }
        // The parent collection's entry is dropped in place, without copying the collection
        // (that made a delete cost the size of its collection); any other link the parent
        // still has is pruned below like everyone else's.
        if let Some(parent) = path.parent() {
            if self.unlist(&parent, path) {
                changes.push(Change::Unlist(parent, path.clone()));
            }
        }
        let mut touched = Vec::new();
        for p in holders {
            let Some(res) = self.resources.get(&p) else { continue };
            let value = res.value();
            if !has_links(&value, path) {
                continue;
            }
            let mut v = value.into_owned();
            if remove_links(&mut v, path) {
                touched.push((p, v));
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

    /// Drops the first `Members` entry of the collection at `collection` that is a link to
    /// `member` as written, updating the count; with a transaction open, records how to put
    /// it back. Returns whether there was such an entry. The index is left as it is: a
    /// collection's link to its direct member is not in it.
    fn unlist(&mut self, collection: &ResourcePath, member: &ResourcePath) -> bool {
        let Some(res) = self.resources.get(collection).filter(|r| r.is_collection()) else { return false };
        let Some(index) = member_index(&res.value(), member) else { return false };
        let (revision, count) = (res.revision(), res.value().get("Members@odata.count").cloned());
        let mut value = self.resources.remove(collection).map(Resource::into_value).unwrap_or_default();
        let mut entry = Value::Null;
        if let Some(obj) = value.as_object_mut() {
            if let Some(Value::Array(list)) = obj.get_mut("Members") {
                entry = list.remove(index);
                let n = list.len();
                obj.insert("Members@odata.count".into(), Value::from(n));
            }
        }
        let res = Resource::new(value, self.bump());
        self.resources.insert(collection.clone(), res);
        if let Some(undo) = self.undo.as_mut() {
            undo.push(UndoEntry::Unlist { collection: collection.clone(), index, entry, revision, count });
        }
        true
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

    /// Stores each resource as given (migration; seeds and loading from disk use
    /// [`ResourceTree::import_loaded`]).
    pub fn import(&mut self, resources: Vec<(ResourcePath, Value)>) -> Vec<Change> {
        self.import_loaded(resources.into_iter().map(|(p, v)| Loaded::new(p, v)).collect())
    }

    /// [`ResourceTree::import`] of resources prepared elsewhere ([`Loaded::new`]).
    pub fn import_loaded(&mut self, resources: Vec<Loaded>) -> Vec<Change> {
        let mut changes = Vec::new();
        for loaded in resources {
            self.put_loaded(loaded, &mut changes);
        }
        changes
    }

    /// Sets (`Some`) or removes (`None`) the resource at `path` alone, with a new revision and
    /// no change set: replaying a persistent backend's log of changes ([`Change::Put`],
    /// [`Change::Remove`]) onto the tree it loaded.
    pub fn restore(&mut self, path: ResourcePath, value: Option<Value>) {
        let links = value.as_ref().map(|v| cross_links(&path, v)).unwrap_or_default();
        let res = value.map(|v| Resource::new(v, self.bump()));
        self.store(path, res, links);
    }

    /// Replays a [`Change::Append`]: lists `member` at the end of the collection's `Members`
    /// unless it is listed already (so a replay over files that have it already changes
    /// nothing), and sets the count. Returns whether anything changed; a missing collection
    /// changes nothing.
    pub fn restore_append(&mut self, collection: &ResourcePath, member: &ResourcePath) -> bool {
        let Some(res) = self.resources.get(collection) else { return false };
        if member_index(&res.value(), member).is_some() {
            return false;
        }
        let mut value = self.resources.remove(collection).map(Resource::into_value).unwrap_or_default();
        append_member(&mut value, member);
        let res = Resource::new(value, self.bump());
        self.resources.insert(collection.clone(), res);
        // A create only appends direct children, which the index leaves out; a log written
        // otherwise still leaves the index right.
        if member.parent().as_ref() != Some(collection) {
            self.backlinks.insert((member.clone(), collection.clone()));
            self.links.entry(collection.clone()).or_default().push(member.clone());
        }
        true
    }

    /// Replays a [`Change::Unlist`]: drops `member`'s entry from the collection's `Members` if
    /// it is there (a replay over files without it changes nothing). Returns whether anything
    /// changed.
    pub fn restore_unlist(&mut self, collection: &ResourcePath, member: &ResourcePath) -> bool {
        self.unlist(collection, member)
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

/// The position of the first `Members` entry of `collection` that links to `member` as
/// written.
fn member_index(collection: &Value, member: &ResourcePath) -> Option<usize> {
    let listed = |m: &Value| m.get("@odata.id").and_then(Value::as_str) == Some(member.as_str());
    collection.get("Members")?.as_array()?.iter().position(listed)
}

/// The bounds of the paths strictly below `path` in string order: from `path/` (included) to
/// `path0` (excluded; `'0'` is the byte after `'/'`).
fn below(path: &ResourcePath) -> (String, String) {
    (format!("{path}/"), format!("{path}0"))
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
            t.paths().iter().map(|q| (q.clone(), t.get(q).unwrap().value().into_owned())).collect();
        t.begin();
        t.create(&p("/redfish/v1/S"), json!({"@odata.id": "/redfish/v1/S/b", "@odata.type": "#X.v1_0_0.X"}), None)
            .unwrap();
        t.delete(&p("/redfish/v1/S/a"), None).unwrap();
        t.kv_put("ns", "k", json!(2));
        t.kv_delete("ns", "k");
        t.rollback();
        let after: Vec<(ResourcePath, Value)> =
            t.paths().iter().map(|q| (q.clone(), t.get(q).unwrap().value().into_owned())).collect();
        assert_eq!(before, after);
        assert_eq!(t.kv_get("ns", "k"), Some(json!(1)));
    }

    /// The link index as rebuilt from scratch: what [`ResourceTree::backlinks`] must equal
    /// (checked here: [`ResourceTree::links`] holds the same links by holder).
    fn fresh_index(t: &ResourceTree) -> BTreeSet<(ResourcePath, ResourcePath)> {
        let mut out = BTreeSet::new();
        for (holder, res) in &t.resources {
            for target in cross_links(holder, &res.value()) {
                out.insert((target, holder.clone()));
            }
        }
        let mut by_holder: BTreeMap<ResourcePath, BTreeSet<ResourcePath>> = BTreeMap::new();
        for (holder, targets) in &t.links {
            by_holder.entry(holder.clone()).or_default().extend(targets.iter().cloned());
        }
        let mut expected: BTreeMap<ResourcePath, BTreeSet<ResourcePath>> = BTreeMap::new();
        for (target, holder) in &out {
            expected.entry(holder.clone()).or_default().insert(target.clone());
        }
        assert_eq!(by_holder, expected, "links by holder");
        out
    }

    /// Deletes prune links found through the index (cross links anywhere, child links of the
    /// parent) exactly as a walk over the whole store would, and every kind of change, rollback
    /// included, leaves the index equal to one rebuilt from scratch.
    #[test]
    fn deletes_use_the_link_index() {
        let mut t = ResourceTree::new(1);
        let coll = |id: &str, members: Value| json!({"@odata.id": id, "@odata.type": "#XCollection.XCollection", "Members": members});
        t.import(vec![
            (p("/redfish/v1"), json!({"Systems": {"@odata.id": "/redfish/v1/Systems"}, "Chassis": {"@odata.id": "/redfish/v1/Chassis"}})),
            (p("/redfish/v1/Systems"), coll("/redfish/v1/Systems", json!([]))),
            (p("/redfish/v1/Chassis"), coll("/redfish/v1/Chassis", json!([{"@odata.id": "/redfish/v1/Chassis/c"}]))),
            (
                p("/redfish/v1/Chassis/c"),
                json!({
                    "@odata.id": "/redfish/v1/Chassis/c",
                    "Name": "/redfish/v1/Systems/a",
                    "Links": {
                        "ComputerSystems": [{"@odata.id": "/redfish/v1/Systems/a"}, {"@odata.id": "/redfish/v1/Systems/b"}],
                        "ComputerSystems@odata.count": 2,
                        "Deep": {"@odata.id": "/redfish/v1//Systems/a/Bios#/x"},
                        "Strings": ["/redfish/v1/Systems/a/Memory/1"]
                    }
                }),
            ),
        ]);
        for id in ["a", "b"] {
            let m = json!({"@odata.id": format!("/redfish/v1/Systems/{id}"), "@odata.type": "#X.v1_0_0.X",
                "Bios": {"@odata.id": format!("/redfish/v1/Systems/{id}/Bios")},
                "Links": {"Chassis": [{"@odata.id": "/redfish/v1/Chassis/c"}]}});
            t.create(&p("/redfish/v1/Systems"), m, None).unwrap();
            t.restore(p(&format!("/redfish/v1/Systems/{id}/Bios")), Some(json!({"Id": "Bios"})));
        }
        assert_eq!(t.backlinks, fresh_index(&t));
        assert!(t.backlinks.contains(&(p("/redfish/v1/Chassis/c"), p("/redfish/v1/Systems/a"))));
        assert!(t.backlinks.contains(&(p("/redfish/v1/Systems/a/Bios"), p("/redfish/v1/Chassis/c"))));
        assert!(
            !t.backlinks.iter().any(|(target, _)| target.as_str() == "/redfish/v1/Systems"),
            "child links are not indexed"
        );

        // Rolled back, a delete leaves resources and index as they were.
        let snapshot: Vec<(ResourcePath, Value)> =
            t.paths().iter().map(|q| (q.clone(), t.get(q).unwrap().value().into_owned())).collect();
        t.begin();
        t.delete(&p("/redfish/v1/Systems/a"), None).unwrap();
        t.rollback();
        let again: Vec<(ResourcePath, Value)> =
            t.paths().iter().map(|q| (q.clone(), t.get(q).unwrap().value().into_owned())).collect();
        assert_eq!(snapshot, again);
        assert_eq!(t.backlinks, fresh_index(&t));

        let (removed, changes) = t.delete(&p("/redfish/v1/Systems/a"), None).unwrap();
        assert_eq!(removed, vec![p("/redfish/v1/Systems/a"), p("/redfish/v1/Systems/a/Bios")]);
        let put: Vec<&str> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Put(q, _) => Some(q.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(put, ["/redfish/v1/Chassis/c"]);
        assert!(changes
            .iter()
            .any(|c| matches!(c, Change::Unlist(c, m) if c.as_str() == "/redfish/v1/Systems" && m == &removed[0])));
        let chassis = t.get(&p("/redfish/v1/Chassis/c")).unwrap().value().into_owned();
        assert_eq!(
            chassis["Links"],
            json!({"ComputerSystems": [{"@odata.id": "/redfish/v1/Systems/b"}], "ComputerSystems@odata.count": 1, "Strings": []})
        );
        assert_eq!(chassis["Name"], "/redfish/v1/Systems/a", "a property's string is not a link");
        assert_eq!(
            t.get(&p("/redfish/v1/Systems")).unwrap().value()["Members"],
            json!([{"@odata.id": "/redfish/v1/Systems/b"}])
        );
        assert_eq!(t.backlinks, fresh_index(&t));

        // Deleting a collection prunes the parent's navigation link; patches reindex.
        t.patch(&p("/redfish/v1/Systems/b"), &json!({"Links": {"Chassis": []}}), None).unwrap();
        assert_eq!(t.backlinks, fresh_index(&t));
        t.delete(&p("/redfish/v1/Chassis"), None).unwrap();
        assert!(t.get(&p("/redfish/v1")).unwrap().value().get("Chassis").is_none());
        assert_eq!(t.backlinks, fresh_index(&t));
        assert!(t.restore_append(&p("/redfish/v1/Systems"), &p("/redfish/v1/Other/x")));
        assert_eq!(t.backlinks, fresh_index(&t));
        let count = |t: &ResourceTree| t.get(&p("/redfish/v1/Systems")).unwrap().value()["Members@odata.count"].clone();
        assert_eq!(count(&t), 2);
        assert!(t.restore_unlist(&p("/redfish/v1/Systems"), &p("/redfish/v1/Systems/b")));
        assert!(!t.restore_unlist(&p("/redfish/v1/Systems"), &p("/redfish/v1/Systems/b")), "unlisted already");
        assert_eq!(
            t.get(&p("/redfish/v1/Systems")).unwrap().value()["Members"],
            json!([{"@odata.id": "/redfish/v1/Other/x"}])
        );
        assert_eq!(count(&t), 1);
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
        let created = t.get(&p("/redfish/v1/S")).unwrap().value().into_owned();
        assert!(!t.restore_append(&p("/redfish/v1/S"), &p("/redfish/v1/S/a")), "listed already");
        assert!(t.restore_append(&p("/redfish/v1/S"), &p("/redfish/v1/S/b")));
        let v = t.get(&p("/redfish/v1/S")).unwrap().value().into_owned();
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
