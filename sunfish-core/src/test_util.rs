//! The storage contract suite: one set of checks every [`StorageBackend`] must pass. A backend
//! crate runs it with
//! `sunfish_core::storage_contract_tests!(async { /* a fresh, empty backend */ });`
//! which expands to one `#[tokio::test]` per check (tokio with `macros` and `rt-multi-thread`
//! is needed in the backend's dev-dependencies).

// Test support: a failed expectation should panic with the error, like any test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use serde_json::{json, Value};

use crate::{Error, ResourcePath, StorageBackend};

fn p(s: &str) -> ResourcePath {
    ResourcePath::parse(s).unwrap_or_else(|e| panic!("bad test path {s}: {e}"))
}

fn coll(path: &str, ty: &str, members: &[&str]) -> Value {
    json!({
        "@odata.id": path,
        "@odata.type": format!("#{ty}Collection.{ty}Collection"),
        "Name": format!("{ty} Collection"),
        "Members": members.iter().map(|m| json!({"@odata.id": m})).collect::<Vec<_>>(),
        "Members@odata.count": members.len(),
    })
}

/// A small tree: root, Systems with member 1 (with a Bios child), Chassis with member 1 that
/// links to the system in several shapes.
pub fn fixture() -> Vec<(ResourcePath, Value)> {
    vec![
        (
            p("/redfish/v1"),
            json!({"@odata.id": "/redfish/v1", "@odata.type": "#ServiceRoot.v1_17_0.ServiceRoot", "Id": "RootService",
            "Systems": {"@odata.id": "/redfish/v1/Systems"}, "Chassis": {"@odata.id": "/redfish/v1/Chassis"}}),
        ),
        (p("/redfish/v1/Systems"), coll("/redfish/v1/Systems", "ComputerSystem", &["/redfish/v1/Systems/1"])),
        (
            p("/redfish/v1/Systems/1"),
            json!({"@odata.id": "/redfish/v1/Systems/1", "@odata.type": "#ComputerSystem.v1_22_0.ComputerSystem",
            "Id": "1", "Name": "one", "Status": {"State": "Enabled", "Health": "OK"}, "Bios": {"@odata.id": "/redfish/v1/Systems/1/Bios"}}),
        ),
        (
            p("/redfish/v1/Systems/1/Bios"),
            json!({"@odata.id": "/redfish/v1/Systems/1/Bios", "@odata.type": "#Bios.v1_2_0.Bios", "Id": "Bios"}),
        ),
        (p("/redfish/v1/Chassis"), coll("/redfish/v1/Chassis", "Chassis", &["/redfish/v1/Chassis/1"])),
        (
            p("/redfish/v1/Chassis/1"),
            json!({"@odata.id": "/redfish/v1/Chassis/1", "@odata.type": "#Chassis.v1_25_0.Chassis", "Id": "1",
            "Links": {"ComputerSystems": [{"@odata.id": "/redfish/v1/Systems/1"}], "ComputerSystems@odata.count": 1,
                      "ManagedBy": {"@odata.id": "/redfish/v1/Systems/1/Bios"}},
            "Outside": {"@odata.id": "/redfish/v1/Systems/1"}}),
        ),
    ]
}

async fn seeded(b: &Arc<dyn StorageBackend>) {
    b.import(fixture()).await.unwrap_or_else(|e| panic!("import: {e}"));
}

fn member(path: &str) -> Value {
    let id = path.rsplit('/').next().unwrap_or_default();
    json!({"@odata.id": path, "@odata.type": "#ComputerSystem.v1_22_0.ComputerSystem", "Id": id})
}

fn member_ids(v: &Value) -> Vec<String> {
    v["Members"]
        .as_array()
        .map(|a| a.iter().filter_map(|m| m["@odata.id"].as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// Imported resources are read back with a revision; a missing path is `NotFound`.
pub async fn import_and_get(b: Arc<dyn StorageBackend>) {
    seeded(&b).await;
    let r = b.get(&p("/redfish/v1/Systems/1")).await.unwrap();
    assert_eq!(r.value()["Name"], "one");
    assert!(r.revision() > 0);
    assert!(matches!(b.get(&p("/redfish/v1/Systems/2")).await, Err(Error::NotFound { .. })));
    assert_eq!(b.paths().await.unwrap().len(), fixture().len());
}

/// A create stores the member and updates Members and the count together.
pub async fn create_adds_member(b: Arc<dyn StorageBackend>) {
    seeded(&b).await;
    let before = b.get(&p("/redfish/v1/Systems")).await.unwrap().revision();
    let r = b.create(&p("/redfish/v1/Systems"), member("/redfish/v1/Systems/2"), None).await.unwrap();
    assert_eq!(r.value()["Id"], "2");
    let c = b.get(&p("/redfish/v1/Systems")).await.unwrap();
    assert_eq!(member_ids(&c.value()), ["/redfish/v1/Systems/1", "/redfish/v1/Systems/2"]);
    assert_eq!(c.value()["Members@odata.count"], 2);
    assert_ne!(c.revision(), before, "a collection's revision moves with its members");
}

/// A duplicate create fails and changes nothing.
pub async fn create_duplicate_fails(b: Arc<dyn StorageBackend>) {
    seeded(&b).await;
    let err = b.create(&p("/redfish/v1/Systems"), member("/redfish/v1/Systems/1"), None).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err:?}");
    let c = b.get(&p("/redfish/v1/Systems")).await.unwrap();
    assert_eq!(c.value()["Members@odata.count"], 1);
}

/// A missing collection is created from the template, linked from its parent; without a
/// template, or without a parent, it is `NotFound`; a non-collection target is `NotAllowed`.
pub async fn create_makes_collection(b: Arc<dyn StorageBackend>) {
    seeded(&b).await;
    let coll_path = p("/redfish/v1/Systems/1/Memory");
    let m = json!({"@odata.id": "/redfish/v1/Systems/1/Memory/DIMM0", "@odata.type": "#Memory.v1_20_0.Memory", "Id": "DIMM0"});
    assert!(matches!(b.create(&coll_path, m.clone(), None).await, Err(Error::NotFound { .. })));
    let template = crate::resource::collection_template(&coll_path, "Memory");
    b.create(&coll_path, m, Some(template)).await.unwrap();
    let c = b.get(&coll_path).await.unwrap();
    assert_eq!(c.value()["@odata.type"], "#MemoryCollection.MemoryCollection");
    assert_eq!(c.value()["@odata.id"], "/redfish/v1/Systems/1/Memory");
    assert_eq!(c.value()["Members@odata.count"], 1);
    let parent = b.get(&p("/redfish/v1/Systems/1")).await.unwrap();
    assert_eq!(parent.value()["Memory"], json!({"@odata.id": "/redfish/v1/Systems/1/Memory"}));

    let orphan = p("/redfish/v1/Nowhere/Things");
    let t = crate::resource::collection_template(&orphan, "Thing");
    let m = json!({"@odata.id": "/redfish/v1/Nowhere/Things/a", "@odata.type": "#Thing.v1_0_0.Thing"});
    assert!(matches!(b.create(&orphan, m, Some(t)).await, Err(Error::NotFound { .. })));

    let not_coll = p("/redfish/v1/Systems/1/Bios");
    let m = json!({"@odata.id": "/redfish/v1/Systems/1/Bios/x", "@odata.type": "#Thing.v1_0_0.Thing"});
    assert!(matches!(b.create(&not_coll, m, None).await, Err(Error::NotAllowed { .. })));
}

/// PATCH merges nested objects; a stale `if_match` is refused, a current one accepted, and
/// every write gives a new revision.
pub async fn patch_merges_with_cas(b: Arc<dyn StorageBackend>) {
    seeded(&b).await;
    let path = p("/redfish/v1/Systems/1");
    let rev = b.get(&path).await.unwrap().revision();
    let r = b.patch(&path, json!({"Status": {"State": "Disabled"}}), Some(rev)).await.unwrap();
    assert_eq!(r.value()["Status"], json!({"State": "Disabled", "Health": "OK"}));
    assert_ne!(r.revision(), rev);
    let err = b.patch(&path, json!({"Name": "x"}), Some(rev)).await.unwrap_err();
    assert!(matches!(err, Error::PreconditionFailed { .. }), "{err:?}");
    assert_eq!(b.get(&path).await.unwrap().value()["Name"], "one");
    assert!(matches!(b.patch(&p("/redfish/v1/Systems/9"), json!({}), None).await, Err(Error::NotFound { .. })));
}

/// PUT replaces the whole body, with the same `if_match` rule.
pub async fn replace_whole(b: Arc<dyn StorageBackend>) {
    seeded(&b).await;
    let path = p("/redfish/v1/Systems/1");
    let body = member("/redfish/v1/Systems/1");
    let r = b.replace(&path, body.clone(), None).await.unwrap();
    assert_eq!(*r.value(), body);
    assert!(matches!(b.replace(&path, body.clone(), Some(1)).await, Err(Error::PreconditionFailed { .. })));
    assert!(matches!(b.replace(&p("/redfish/v1/Systems/9"), body, None).await, Err(Error::NotFound { .. })));
}

/// DELETE removes the subtree, the member entry, and every link to the subtree elsewhere.
pub async fn delete_subtree_and_links(b: Arc<dyn StorageBackend>) {
    seeded(&b).await;
    let removed = b.delete(&p("/redfish/v1/Systems/1"), None).await.unwrap();
    assert_eq!(removed, [p("/redfish/v1/Systems/1"), p("/redfish/v1/Systems/1/Bios")]);
    assert!(matches!(b.get(&p("/redfish/v1/Systems/1/Bios")).await, Err(Error::NotFound { .. })));
    let c = b.get(&p("/redfish/v1/Systems")).await.unwrap();
    assert_eq!(member_ids(&c.value()), Vec::<String>::new());
    assert_eq!(c.value()["Members@odata.count"], 0);
    let ch = b.get(&p("/redfish/v1/Chassis/1")).await.unwrap();
    assert_eq!(ch.value()["Links"], json!({"ComputerSystems": [], "ComputerSystems@odata.count": 0}));
    assert!(ch.value().get("Outside").is_none());
    assert!(matches!(b.delete(&p("/redfish/v1/Systems/1"), None).await, Err(Error::NotFound { .. })));
    assert!(matches!(b.delete(&ResourcePath::root(), None).await, Err(Error::NotAllowed { .. })));
}

/// A navigation property naming a deleted child is removed from the parent; a stale
/// `if_match` protects a delete.
pub async fn delete_child_property_and_cas(b: Arc<dyn StorageBackend>) {
    seeded(&b).await;
    let bios = p("/redfish/v1/Systems/1/Bios");
    assert!(matches!(b.delete(&bios, Some(1)).await, Err(Error::PreconditionFailed { .. })));
    let rev = b.get(&bios).await.unwrap().revision();
    b.delete(&bios, Some(rev)).await.unwrap();
    assert!(b.get(&p("/redfish/v1/Systems/1")).await.unwrap().value().get("Bios").is_none());
}

/// `children` and `paths` are sorted and exact.
pub async fn children_sorted(b: Arc<dyn StorageBackend>) {
    seeded(&b).await;
    for id in ["3", "10", "2"] {
        b.create(&p("/redfish/v1/Systems"), member(&format!("/redfish/v1/Systems/{id}")), None).await.unwrap();
    }
    let kids = b.children(&p("/redfish/v1/Systems")).await.unwrap();
    let mut sorted = kids.clone();
    sorted.sort();
    assert_eq!(kids, sorted);
    assert_eq!(kids.len(), 4);
    assert!(b.children(&p("/redfish/v1/Nothing")).await.unwrap().is_empty());
}

/// 500 concurrent creates into one collection lose nothing.
pub async fn concurrent_creates(b: Arc<dyn StorageBackend>) {
    seeded(&b).await;
    let mut tasks = Vec::new();
    for i in 0..500 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            b.create(&p("/redfish/v1/Systems"), member(&format!("/redfish/v1/Systems/c{i}")), None).await
        }));
    }
    for t in tasks {
        t.await.unwrap_or_else(|e| panic!("join: {e}")).unwrap();
    }
    let c = b.get(&p("/redfish/v1/Systems")).await.unwrap();
    assert_eq!(member_ids(&c.value()).len(), 501);
    assert_eq!(c.value()["Members@odata.count"], 501);
}

/// Two writers with the same `if_match`: exactly one wins.
pub async fn cas_race(b: Arc<dyn StorageBackend>) {
    seeded(&b).await;
    let path = p("/redfish/v1/Systems/1");
    for round in 0..50 {
        let rev = b.get(&path).await.unwrap().revision();
        let (b1, b2, p1, p2) = (b.clone(), b.clone(), path.clone(), path.clone());
        let t1 = tokio::spawn(async move { b1.patch(&p1, json!({"Name": format!("a{round}")}), Some(rev)).await });
        let t2 = tokio::spawn(async move { b2.patch(&p2, json!({"Name": format!("b{round}")}), Some(rev)).await });
        let r1 = t1.await.unwrap_or_else(|e| panic!("{e}"));
        let r2 = t2.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r1.is_ok() as u8 + r2.is_ok() as u8, 1, "round {round}: {r1:?} {r2:?}");
    }
}

/// Revisions never repeat for a path, even across delete and re-create.
pub async fn revisions_unique(b: Arc<dyn StorageBackend>) {
    seeded(&b).await;
    let path = p("/redfish/v1/Systems/2");
    let r1 = b.create(&p("/redfish/v1/Systems"), member(path.as_str()), None).await.unwrap().revision();
    b.delete(&path, None).await.unwrap();
    let r2 = b.create(&p("/redfish/v1/Systems"), member(path.as_str()), None).await.unwrap().revision();
    assert_ne!(r1, r2);
}

/// Private records: put, get, list sorted, delete; unsafe names refused.
pub async fn kv_records(b: Arc<dyn StorageBackend>) {
    b.kv_put("sessions", "b", json!({"n": 2})).await.unwrap();
    b.kv_put("sessions", "a", json!({"n": 1})).await.unwrap();
    b.kv_put("other", "a", json!(0)).await.unwrap();
    assert_eq!(b.kv_get("sessions", "a").await.unwrap(), Some(json!({"n": 1})));
    let list = b.kv_list("sessions").await.unwrap();
    assert_eq!(list, vec![("a".to_string(), json!({"n": 1})), ("b".to_string(), json!({"n": 2}))]);
    assert!(b.kv_delete("sessions", "a").await.unwrap());
    assert!(!b.kv_delete("sessions", "a").await.unwrap());
    assert_eq!(b.kv_get("sessions", "a").await.unwrap(), None);
    assert!(b.kv_put("..", "x", json!(1)).await.is_err());
    assert!(b.kv_put("ns", "a/b", json!(1)).await.is_err());
    assert!(b.paths().await.unwrap().is_empty(), "records are not resources");
}

/// Expands to one `#[tokio::test]` per contract check, each on a fresh backend from `$factory`
/// (an expression evaluating to a future of `Arc<dyn StorageBackend>`).
///
/// Backends that need an outside service (a database) use the `optional` form, whose factory
/// yields `Option<Arc<dyn StorageBackend>>`: `None` skips the check, and the factory prints why.
#[macro_export]
macro_rules! storage_contract_tests {
    (optional $factory:expr) => {
        $crate::storage_contract_tests!(@each $factory;
            import_and_get, create_adds_member, create_duplicate_fails, create_makes_collection,
            patch_merges_with_cas, replace_whole, delete_subtree_and_links,
            delete_child_property_and_cas, children_sorted, concurrent_creates, cas_race,
            revisions_unique, kv_records);
    };
    ($factory:expr) => {
        $crate::storage_contract_tests!(optional async { ::std::option::Option::Some($factory.await) });
    };
    (@each $factory:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let backend: ::std::option::Option<::std::sync::Arc<dyn $crate::StorageBackend>> = $factory.await;
                if let ::std::option::Option::Some(backend) = backend {
                    $crate::test_util::$check(backend).await;
                }
            }
        )*
    };
}
