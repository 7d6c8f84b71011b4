//! Query engine costs: `$filter` over a 1,000-member collection (every member fetched and
//! evaluated) and `$expand=.($levels=1)` of a 100-member collection, both over an in-memory
//! fetcher so the numbers are the engine's, not a backend's. Run with
//! `cargo bench -p sunfish-core --bench query`.

// A benchmark program: a failed setup step should stop it loudly; criterion's macros generate
// undocumented items.
#![allow(clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;

use async_trait::async_trait;
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Value};
use sunfish_core::query::{apply, Budget, Fetch, QueryOptions};
use sunfish_core::{link, Error, Resource, ResourcePath, Result};

/// Resources by path, as shared `Resource`s (cloning one is a reference count).
struct Mem(BTreeMap<String, Resource>);

#[async_trait]
impl Fetch for Mem {
    async fn fetch(&self, path: &ResourcePath) -> Result<Resource> {
        self.0.get(path.as_str()).cloned().ok_or_else(|| Error::not_found(path))
    }
}

/// A `Systems` collection of `n` members with a few properties each.
fn systems(n: usize) -> (Mem, Resource) {
    let mut map = BTreeMap::new();
    let mut members = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("/redfish/v1/Systems/{i}");
        let health = if i % 3 == 0 { "Warning" } else { "OK" };
        let body = json!({
            "@odata.id": id,
            "@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem",
            "Id": i.to_string(),
            "Name": format!("System {i}"),
            "Status": {"State": "Enabled", "Health": health},
            "ProcessorSummary": {"Count": i % 8, "Model": "x"},
            "MemorySummary": {"TotalSystemMemoryGiB": 256},
            "Links": {"Chassis": [{"@odata.id": "/redfish/v1/Chassis/1"}]}
        });
        members.push(link(&id));
        map.insert(id, Resource::new(body, 1));
    }
    let collection = json!({
        "@odata.id": "/redfish/v1/Systems",
        "@odata.type": "#ComputerSystemCollection.ComputerSystemCollection",
        "Name": "Computer System Collection",
        "Members@odata.count": n,
        "Members": Value::Array(members)
    });
    (Mem(map), Resource::new(collection, 1))
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let path = ResourcePath::parse("/redfish/v1/Systems").expect("path");
    let budget = Budget::default();

    let (mem, coll) = systems(1_000);
    let filter = QueryOptions::parse("$filter=Status/Health%20eq%20'OK'%20and%20ProcessorSummary/Count%20ge%202")
        .expect("valid")
        .expect("has options");
    c.bench_function("filter 1000 members", |b| {
        b.iter(|| rt.block_on(apply(&mem, &path, &coll, &filter, &budget, None)).expect("applies"))
    });

    let (mem, coll) = systems(100);
    let expand = QueryOptions::parse("$expand=.($levels=1)").expect("valid").expect("has options");
    c.bench_function("expand 100 members", |b| {
        b.iter(|| rt.block_on(apply(&mem, &path, &coll, &expand, &budget, None)).expect("applies"))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
