//! Hot paths of the core below the HTTP layer: path resolution (parsing a request path), JSON
//! merge patch, event filter matching, and the in-memory resource tree (the `memory` backend's
//! and the fs backend's served copy): read, PATCH, and create into a 1,000-member collection
//! (which rewrites the collection's `Members`). Run with `cargo bench -p sunfish-core --bench
//! core`; `docs/PERFORMANCE.md` records the numbers.

// A benchmark program: a failed setup step should stop it loudly; criterion's macros generate
// undocumented items.
#![allow(clippy::expect_used, missing_docs)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use serde_json::{json, Value};
use sunfish_core::eventservice::{EventFacts, SubscriptionFilter};
use sunfish_core::tree::ResourceTree;
use sunfish_core::{link, merge_patch, ResourcePath};

/// A 3 KB-ish ComputerSystem.
fn system(i: usize) -> Value {
    json!({
        "@odata.id": format!("/redfish/v1/Systems/{i}"),
        "@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem",
        "Id": i.to_string(),
        "Name": format!("System {i}"),
        "Status": {"State": "Enabled", "Health": "OK"},
        "ProcessorSummary": {"Count": 2, "Model": "x", "Status": {"State": "Enabled"}},
        "MemorySummary": {"TotalSystemMemoryGiB": 256, "Status": {"State": "Enabled"}},
        "Boot": {"BootSourceOverrideEnabled": "Disabled", "BootSourceOverrideTarget": "None"},
        "Links": {"Chassis": [{"@odata.id": "/redfish/v1/Chassis/1"}], "ManagedBy": [{"@odata.id": "/redfish/v1/Managers/1"}]},
        "Oem": {"Sunfish_RM": {"ManagingAgent": {"@odata.id": "/redfish/v1/AggregationService/AggregationSources/1"}}},
    })
}

/// A tree with a root, a `Systems` collection of `n` members, and their parent links.
fn tree(n: usize) -> ResourceTree {
    let mut t = ResourceTree::new(1);
    let root = ResourcePath::parse("/redfish/v1").expect("path");
    let coll = ResourcePath::parse("/redfish/v1/Systems").expect("path");
    let members: Vec<Value> = (0..n).map(|i| link(&format!("/redfish/v1/Systems/{i}"))).collect();
    let mut resources = vec![
        (
            root,
            json!({"@odata.id": "/redfish/v1", "@odata.type": "#ServiceRoot.v1_15_0.ServiceRoot", "Systems": link("/redfish/v1/Systems")}),
        ),
        (
            coll,
            json!({"@odata.id": "/redfish/v1/Systems", "@odata.type": "#ComputerSystemCollection.ComputerSystemCollection",
            "Name": "Systems", "Members": members, "Members@odata.count": n}),
        ),
    ];
    for i in 0..n {
        resources.push((ResourcePath::parse(&format!("/redfish/v1/Systems/{i}")).expect("path"), system(i)));
    }
    t.import(resources);
    t
}

fn bench(c: &mut Criterion) {
    c.bench_function("path: parse /redfish/v1/Fabrics/CXL/Switches/CXL1/Ports/F1", |b| {
        b.iter(|| ResourcePath::parse(std::hint::black_box("/redfish/v1/Fabrics/CXL/Switches/CXL1/Ports/F1")))
    });
    c.bench_function("path: parse with percent-encoding and trailing slash", |b| {
        b.iter(|| ResourcePath::parse(std::hint::black_box("/redfish/v1/Systems/a%20b/Memory/DIMM%2D1/")))
    });

    let base = system(7);
    let delta = json!({"Name": "renamed", "Status": {"Health": "Warning"}, "Boot": {"BootSourceOverrideTarget": "Pxe"}, "Oem": null});
    c.bench_function("merge_patch: nested delta into a system", |b| {
        b.iter_batched(|| base.clone(), |mut v| merge_patch(&mut v, &delta), BatchSize::SmallInput)
    });

    let filter = SubscriptionFilter::from_destination(&json!({
        "RegistryPrefixes": ["ResourceEvent"],
        "ExcludeMessageIds": ["ResourceEvent.1.4.ResourceRemoved"],
        "ResourceTypes": ["ComputerSystem", "Port", "Switch"],
        "OriginResources": [{"@odata.id": "/redfish/v1/Fabrics/CXL"}, {"@odata.id": "/redfish/v1/Systems"}],
        "SubordinateResources": true,
    }))
    .expect("filter");
    let origin = ResourcePath::parse("/redfish/v1/Fabrics/CXL/Switches/CXL1/Ports/F1").expect("path");
    let facts = EventFacts {
        message_id: "ResourceEvent.1.4.ResourceChanged",
        origin: Some(&origin),
        origin_type: Some("Port"),
    };
    c.bench_function("event filter: match a ResourceChanged against a 5-part filter", |b| {
        b.iter(|| filter.matches(std::hint::black_box(&facts)))
    });

    let mut t = tree(1000);
    let leaf = ResourcePath::parse("/redfish/v1/Systems/500").expect("path");
    c.bench_function("tree: get a leaf (1,000-member collection)", |b| b.iter(|| t.get(&leaf).expect("get")));
    let small = json!({"AssetTag": "x"});
    c.bench_function("tree: PATCH a leaf", |b| b.iter(|| t.patch(&leaf, &small, None).expect("patch")));
    let coll = ResourcePath::parse("/redfish/v1/Systems").expect("path");
    let mut next = 1000usize;
    c.bench_function("tree: create into a 1,000+-member collection", |b| {
        b.iter(|| {
            next += 1;
            let member = system(next);
            t.create(&coll, member, None).expect("create")
        })
    });
    // A delete looks for links into what it removes in every stored resource.
    let mut big = tree(100_000);
    let spare = system(200_000);
    let spare_path = ResourcePath::parse("/redfish/v1/Systems/200000").expect("path");
    c.bench_function("tree: create then delete a member among 100,000 systems", |b| {
        b.iter(|| {
            big.create(&coll, spare.clone(), None).expect("create");
            big.delete(&spare_path, None).expect("delete")
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
