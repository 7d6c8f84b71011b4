//! The shared storage contract, and what only a shared database adds (two backends on one
//! schema, reopening, migrations), run against `postgres`.
//!
//! Needs a PostgreSQL server: `SUNFISH_TEST_POSTGRES_URL` (default
//! `host=127.0.0.1 user=postgres dbname=test`). Without one every test prints `SKIP` and passes;
//! `.ci/run` starts the machine's server when it is installed. Each test works in a schema of
//! its own (`sft_<time>_<pid>_<n>`); the first test of a run drops those older than an hour.

// Tests: a failed expectation should panic with the error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::json;
use sunfish_core::{ResourcePath, StorageBackend};
use sunfish_storage_postgres::{migrations, PostgresBackend, PostgresOptions};

fn url() -> String {
    std::env::var("SUNFISH_TEST_POSTGRES_URL").unwrap_or_else(|_| "host=127.0.0.1 user=postgres dbname=test".into())
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A fresh schema name, unique within and across runs.
fn fresh_schema() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("sft_{}_{}_{}", now_secs(), std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

fn options(schema: &str) -> PostgresOptions {
    PostgresOptions { url: url(), schema: schema.into(), pool_size: 4, ..PostgresOptions::default() }
}

/// Drops test schemas older than an hour (left by runs that were killed).
async fn drop_stale() {
    let Ok((client, conn)) = tokio_postgres::connect(&url(), tokio_postgres::NoTls).await else { return };
    tokio::spawn(conn);
    let Ok(rows) = client.query("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'sft\\_%'", &[]).await else {
        return;
    };
    for r in rows {
        let name: String = r.get(0);
        let born = name.split('_').nth(1).and_then(|t| t.parse::<u64>().ok()).unwrap_or(0);
        if born + 3600 < now_secs() {
            let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE")).await;
        }
    }
}

/// A backend on a fresh schema, or `None` (printed) when no server answers.
async fn fresh() -> Option<Arc<dyn StorageBackend>> {
    static CLEANED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    CLEANED.get_or_init(drop_stale).await;
    match PostgresBackend::open(&options(&fresh_schema())).await {
        Ok(b) => Some(Arc::new(b) as Arc<dyn StorageBackend>),
        Err(e) => {
            eprintln!("SKIP postgres contract: no PostgreSQL at {:?} ({e}); set SUNFISH_TEST_POSTGRES_URL", url());
            None
        }
    }
}

sunfish_core::storage_contract_tests!(optional fresh());

fn p(s: &str) -> ResourcePath {
    ResourcePath::parse(s).unwrap()
}

/// Two backends on one schema are one store: a write through either is read through the other
/// at once, revisions never collide, and a create through one sees members added by the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_store() {
    let schema = fresh_schema();
    let Ok(a) = PostgresBackend::open(&options(&schema)).await else {
        eprintln!("SKIP two_instances_share_one_store: no PostgreSQL at {:?}", url());
        return;
    };
    let b = PostgresBackend::open(&options(&schema)).await.unwrap();
    a.import(sunfish_core::test_util::fixture()).await.unwrap();
    let coll = p("/redfish/v1/Systems");
    let m = |id: &str| json!({"@odata.id": format!("/redfish/v1/Systems/{id}"), "@odata.type": "#ComputerSystem.v1_22_0.ComputerSystem", "Id": id});
    let ra = a.create(&coll, m("a"), None).await.unwrap();
    let rb = b.create(&coll, m("b"), None).await.unwrap();
    assert_ne!(ra.revision(), rb.revision());
    let members = a.get(&coll).await.unwrap().value()["Members"].clone();
    assert_eq!(
        members,
        json!([{"@odata.id": "/redfish/v1/Systems/1"}, {"@odata.id": "/redfish/v1/Systems/a"}, {"@odata.id": "/redfish/v1/Systems/b"}])
    );
    b.patch(&p("/redfish/v1/Systems/a"), json!({"Name": "via b"}), Some(ra.revision())).await.unwrap();
    assert_eq!(a.get(&p("/redfish/v1/Systems/a")).await.unwrap().value()["Name"], "via b");
    a.kv_put("sessions", "k", json!(1)).await.unwrap();
    assert_eq!(b.kv_get("sessions", "k").await.unwrap(), Some(json!(1)));
    drop_schema(&schema).await;
}

/// Reopening keeps the data and its revisions; migrations already applied are not applied
/// again, and a schema newer than the binary is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_and_migrations() {
    let schema = fresh_schema();
    let Ok(a) = PostgresBackend::open(&options(&schema)).await else {
        eprintln!("SKIP reopen_and_migrations: no PostgreSQL at {:?}", url());
        return;
    };
    a.import(sunfish_core::test_util::fixture()).await.unwrap();
    let before = a.get(&p("/redfish/v1/Systems/1")).await.unwrap();
    a.close().await.unwrap();
    let b = PostgresBackend::open(&options(&schema)).await.unwrap();
    let after = b.get(&p("/redfish/v1/Systems/1")).await.unwrap();
    assert_eq!((before.value(), before.revision()), (after.value(), after.revision()));
    let (client, conn) = tokio_postgres::connect(&url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let n: i64 = client.query_one(&format!("SELECT count(*) FROM {schema}.migrations"), &[]).await.unwrap().get(0);
    assert_eq!(n as usize, migrations::MIGRATIONS.len());
    client.execute(&format!("INSERT INTO {schema}.migrations (version) VALUES (999)"), &[]).await.unwrap();
    let err = PostgresBackend::open(&options(&schema)).await.unwrap_err();
    assert!(err.contains("newer than this binary"), "{err}");
    drop_schema(&schema).await;
}

/// Bodies come back with their annotations first, as Redfish clients expect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotations_lead_bodies() {
    let Some(b) = fresh().await else { return };
    b.import(sunfish_core::test_util::fixture()).await.unwrap();
    let r = b.get(&p("/redfish/v1/Systems/1")).await.unwrap();
    let value = r.value();
    let keys: Vec<&str> = value.as_object().unwrap().keys().map(String::as_str).take(2).collect();
    assert_eq!(keys, ["@odata.id", "@odata.type"]);
}

async fn drop_schema(schema: &str) {
    if let Ok((client, conn)) = tokio_postgres::connect(&url(), tokio_postgres::NoTls).await {
        tokio::spawn(conn);
        let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
    }
}
