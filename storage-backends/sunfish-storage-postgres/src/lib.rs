//! # sunfish-storage-postgres
//!
//! Storage backend `postgres`: every resource is a JSONB row keyed by its path, with a revision
//! drawn from one database sequence, so several `sunfish-server` processes on the same database
//! serve the same tree and ETags never repeat. Unlike `memory` and `fs`, nothing is cached in
//! the process: the database is the truth for every read.
//!
//! Layout: [`PostgresOptions`] (the `[storage.options]` table), [`migrations`] (versioned schema,
//! applied at open under an advisory lock so instances starting together do not race), and
//! [`PostgresBackend`], whose operations each run in one transaction. Row locks (`FOR UPDATE`)
//! give the contract's atomicity: a create locks its collection, a write with `if_match`
//! compares the revision of the locked row (compare-and-swap), a delete locks the resource, then
//! removes the subtree and every link into it. A transaction the database aborts as a deadlock
//! or serialization failure is retried a few times.
//!
//! Key order: JSONB normalises the order of object keys; on read, `@odata.*` annotations are put
//! first again so bodies look as Redfish clients expect. Equality of values is unaffected.

pub mod coordination;
pub mod migrations;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde::Deserialize;
use serde_json::{Map, Value};
use sunfish_core::resource::{append_member, link, merge_patch, remove_links};
use sunfish_core::tree::check_kv_name;
use sunfish_core::{
    register_storage_backend, Error, Notification, Operation, PluginOptions, Resource, ResourcePath, Result,
    StartupError, StorageBackend, StorageBackendRegistration,
};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Json;
use tokio_postgres::{NoTls, Transaction};

/// The registered name.
pub const NAME: &str = "postgres";

/// How often a transaction aborted by a deadlock or serialization failure is tried again.
const RETRIES: usize = 5;

/// Rows per statement when importing (one `unnest` insert each).
const IMPORT_CHUNK: usize = 1000;

/// Options of `[storage.options]` for `postgres`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresOptions {
    /// Connection string, libpq key/value (`host=127.0.0.1 user=sunfish dbname=sunfish`) or URL
    /// (`postgresql://sunfish@127.0.0.1/sunfish`). TLS to the database is not supported yet.
    pub url: String,
    /// The database schema holding the tables; created when missing. Instances that are to act
    /// as one service use the same schema.
    pub schema: String,
    /// Connections in the pool.
    pub pool_size: usize,
    /// `statement_timeout` of every connection, in milliseconds (0: none).
    pub statement_timeout_ms: u64,
    /// Time to establish one connection, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Leader lease, in milliseconds: the leader (the instance that delivers subscriptions'
    /// events and checks agents) steps down when it cannot confirm its lock within a third of
    /// this, and the others try to take over at that pace; so a dead leader is replaced within
    /// one lease.
    pub lease_ms: u64,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            url: "host=127.0.0.1 user=postgres dbname=sunfish".into(),
            schema: "sunfish".into(),
            pool_size: 16,
            statement_timeout_ms: 5000,
            connect_timeout_ms: 5000,
            lease_ms: 5000,
        }
    }
}

/// The PostgreSQL backend: the pool, plus the notification and election tasks.
pub struct PostgresBackend {
    pool: Pool,
    schema: String,
    instance: String,
    notes: tokio::sync::broadcast::Sender<Notification>,
    leader: tokio::sync::watch::Receiver<bool>,
    stop: coordination::CancelFlag,
}

impl std::fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresBackend").field("pool", &self.pool.status()).finish()
    }
}

impl Drop for PostgresBackend {
    fn drop(&mut self) {
        self.stop.set();
    }
}

fn db_err(e: impl std::fmt::Display) -> Error {
    Error::storage(format!("postgres: {e}"))
}

/// Whether the database aborted the transaction for a reason a retry cures.
fn is_retryable(e: &tokio_postgres::Error) -> bool {
    matches!(e.code(), Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE)
}

/// What one attempt of a transaction ended with: the contract's errors pass through, database
/// errors may be retried.
enum TxError {
    Db(tokio_postgres::Error),
    Contract(Error),
}

impl From<tokio_postgres::Error> for TxError {
    fn from(e: tokio_postgres::Error) -> Self {
        TxError::Db(e)
    }
}

impl From<Error> for TxError {
    fn from(e: Error) -> Self {
        TxError::Contract(e)
    }
}

type TxResult<T> = std::result::Result<T, TxError>;

/// Checks a schema name: it is spliced into SQL, so only lowercase letters, digits and `_`.
fn check_schema(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(format!("schema {name:?}: use 1-63 lowercase letters, digits and _, not starting with a digit"))
    }
}

/// Puts `@odata.*` annotations first (JSONB stores keys shortest first).
fn annotations_first(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let (mut first, rest): (Vec<_>, Vec<_>) = map.into_iter().partition(|(k, _)| k.starts_with("@odata."));
            first.sort_by_key(|(k, _)| odata_rank(k));
            let mut out = Map::with_capacity(first.len() + rest.len());
            out.extend(first);
            out.extend(rest);
            Value::Object(out)
        }
        other => other,
    }
}

fn odata_rank(key: &str) -> usize {
    ["@odata.context", "@odata.id", "@odata.type", "@odata.etag"].iter().position(|k| *k == key).unwrap_or(4)
}

/// The `parent` column: the collection or resource a row sits below (`None` for the root).
fn parent_of(path: &ResourcePath) -> Option<String> {
    path.parent().map(|p| p.as_str().to_string())
}

/// The text a JSON document contains where it links to `path` or below it (a link value starts
/// with the JSON string of the path): narrows the rows a delete must look at.
fn link_needle(path: &ResourcePath) -> String {
    let quoted = serde_json::to_string(path.as_str()).unwrap_or_default();
    quoted.trim_end_matches('"').to_string()
}

fn parse_path(raw: &str) -> Result<ResourcePath> {
    ResourcePath::parse(raw).map_err(|e| db_err(format!("stored path {raw}: {e}")))
}

impl PostgresBackend {
    /// Connects, creates the schema when missing and applies pending migrations.
    ///
    /// # Errors
    /// Bad options, an unreachable database, a failed migration.
    pub async fn open(options: &PostgresOptions) -> std::result::Result<Self, String> {
        check_schema(&options.schema)?;
        let mut pg: tokio_postgres::Config = options.url.parse().map_err(|e| format!("url: {e}"))?;
        let mut startup = format!("-c search_path={}", options.schema);
        if options.statement_timeout_ms > 0 {
            startup.push_str(&format!(" -c statement_timeout={}", options.statement_timeout_ms));
        }
        pg.options(&startup);
        pg.connect_timeout(Duration::from_millis(options.connect_timeout_ms.max(1)));
        let side = pg.clone();
        let manager = Manager::from_config(pg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager).max_size(options.pool_size.max(1)).build().map_err(|e| e.to_string())?;
        let mut client = pool.get().await.map_err(|e| format!("connecting: {e}"))?;
        migrations::apply(&mut client, &options.schema).await.map_err(|e| format!("migrating: {e}"))?;
        let instance = coordination::instance_id();
        let (notes, _) = tokio::sync::broadcast::channel(coordination::BUFFER);
        let (leader_tx, leader) = tokio::sync::watch::channel(false);
        let stop = coordination::CancelFlag::default();
        tokio::spawn(coordination::listen(
            side.clone(),
            options.schema.clone(),
            instance.clone(),
            notes.clone(),
            stop.clone(),
        ));
        tokio::spawn(coordination::elect(
            side,
            options.schema.clone(),
            Duration::from_millis(options.lease_ms.max(150)),
            leader_tx,
            stop.clone(),
        ));
        Ok(PostgresBackend { pool, schema: options.schema.clone(), instance, notes, leader, stop })
    }
}

/// Runs `$body` (an expression using the transaction `$tx`, of type `TxResult<T>`) in a
/// transaction of `$backend`'s pool, retrying when the database aborts it as a deadlock or
/// serialization failure; evaluates to `Result<T>`. A macro rather than a closure so the body
/// may borrow the caller's arguments. The body must have no effects outside the transaction.
macro_rules! in_tx {
    ($backend:expr, |$tx:ident| $body:expr) => {{
        async {
            let mut client = $backend.pool.get().await.map_err(db_err)?;
            let mut attempt = 0;
            loop {
                attempt += 1;
                let $tx = client.transaction().await.map_err(db_err)?;
                let outcome: TxResult<_> = match $body.await {
                    Ok(v) => $tx.commit().await.map(|()| v).map_err(TxError::Db),
                    Err(e) => {
                        let _ = $tx.rollback().await;
                        Err(e)
                    }
                };
                match outcome {
                    Ok(v) => return Ok(v),
                    Err(TxError::Contract(e)) => return Err(e),
                    Err(TxError::Db(e)) if is_retryable(&e) && attempt < RETRIES => {
                        tracing::debug!(error = %e, attempt, "postgres transaction retried");
                    }
                    Err(TxError::Db(e)) => return Err(db_err(e)),
                }
            }
        }
        .await
    }};
}

/// Reads and locks one row.
async fn locked(tx: &Transaction<'_>, path: &ResourcePath) -> TxResult<Option<Resource>> {
    let row =
        tx.query_opt("SELECT body, revision FROM resources WHERE path = $1 FOR UPDATE", &[&path.as_str()]).await?;
    Ok(row.map(|r| {
        let Json(body): Json<Value> = r.get(0);
        let rev: i64 = r.get(1);
        Resource::new(annotations_first(body), rev as u64)
    }))
}

/// Writes `value` at `path` (insert or overwrite) with a fresh revision.
async fn put(tx: &Transaction<'_>, path: &ResourcePath, value: Value) -> TxResult<Resource> {
    let row = tx
        .query_one(
            "INSERT INTO resources (path, parent, depth, revision, body) VALUES ($1, $2, $3, nextval('revisions'), $4) \
             ON CONFLICT (path) DO UPDATE SET body = EXCLUDED.body, revision = EXCLUDED.revision RETURNING revision",
            &[&path.as_str(), &parent_of(path), &(path.depth() as i32), &Json(&value)],
        )
        .await?;
    let rev: i64 = row.get(0);
    Ok(Resource::new(value, rev as u64))
}

/// The current resource, checked against `if_match`.
async fn checked(tx: &Transaction<'_>, path: &ResourcePath, if_match: Option<u64>) -> TxResult<Resource> {
    let current = locked(tx, path).await?.ok_or_else(|| Error::not_found(path))?;
    match if_match {
        Some(rev) if rev != current.revision() => Err(Error::PreconditionFailed { path: path.to_string() }.into()),
        _ => Ok(current),
    }
}

async fn create_tx(
    tx: &Transaction<'_>,
    collection: &ResourcePath,
    member: &Value,
    new_collection: Option<&Value>,
) -> TxResult<Resource> {
    let member_path = member
        .get("@odata.id")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::PropertyMissing { property: "@odata.id".into() })
        .and_then(ResourcePath::parse)?;
    if member_path.parent().as_ref() != Some(collection) {
        return Err(Error::property_value("@odata.id", format!("not a direct member of {collection}")).into());
    }
    let mut coll = locked(tx, collection).await?;
    if coll.is_none() {
        // Lock the parent, so two creates of the same new collection queue up, then look again.
        let template = new_collection.ok_or_else(|| Error::not_found(collection))?;
        let parent = collection.parent().ok_or_else(|| Error::not_found(collection))?;
        let parent_res = locked(tx, &parent).await?.ok_or_else(|| Error::not_found(collection))?;
        coll = locked(tx, collection).await?;
        if coll.is_none() {
            if parent_res.is_collection() {
                return Err(Error::not_found(collection).into());
            }
            let seg = collection.last().unwrap_or_default().to_string();
            if parent_res.value().get(&seg).is_none() {
                let mut pv = parent_res.value().into_owned();
                if let Some(obj) = pv.as_object_mut() {
                    obj.insert(seg, link(collection.as_str()));
                }
                put(tx, &parent, pv).await?;
            }
            coll = Some(Resource::new(template.clone(), 0));
        }
    }
    let coll = coll.ok_or_else(|| Error::not_found(collection))?;
    if !coll.is_collection() {
        return Err(Error::NotAllowed {
            path: collection.to_string(),
            operation: Operation::Create,
            allowed: Operation::RESOURCE.to_vec(),
        }
        .into());
    }
    let inserted = tx
        .query_opt(
            "INSERT INTO resources (path, parent, depth, revision, body) VALUES ($1, $2, $3, nextval('revisions'), $4) \
             ON CONFLICT (path) DO NOTHING RETURNING revision",
            &[&member_path.as_str(), &parent_of(&member_path), &(member_path.depth() as i32), &Json(member)],
        )
        .await?;
    let Some(row) = inserted else {
        return Err(Error::AlreadyExists { path: member_path.to_string() }.into());
    };
    let rev: i64 = row.get(0);
    let mut cv = coll.value().into_owned();
    append_member(&mut cv, &member_path);
    put(tx, collection, cv).await?;
    Ok(Resource::new(member.clone(), rev as u64))
}

async fn delete_tx(tx: &Transaction<'_>, path: &ResourcePath, if_match: Option<u64>) -> TxResult<Vec<ResourcePath>> {
    if path.is_root() {
        return Err(Error::NotAllowed {
            path: path.to_string(),
            operation: Operation::Delete,
            allowed: vec![Operation::Get, Operation::Patch],
        }
        .into());
    }
    checked(tx, path, if_match).await?;
    let lower = format!("{path}/");
    let upper = format!("{path}0"); // '0' is the byte after '/'
    let rows = tx
        .query(
            "DELETE FROM resources WHERE path = $1 OR (path >= $2 AND path < $3) RETURNING path",
            &[&path.as_str(), &lower, &upper],
        )
        .await?;
    let mut removed = rows.iter().map(|r| parse_path(r.get(0))).collect::<Result<Vec<_>>>()?;
    removed.sort();
    // Every remaining resource loses its links into the deleted subtree (the parent its member
    // entry or navigation property). The text match only narrows; `remove_links` decides.
    let candidates = tx
        .query(
            "SELECT path, body FROM resources WHERE strpos(body::text, $1) > 0 ORDER BY path FOR UPDATE",
            &[&link_needle(path)],
        )
        .await?;
    for row in candidates {
        let p = parse_path(row.get(0))?;
        let Json(mut v): Json<Value> = row.get(1);
        if remove_links(&mut v, path) {
            if let Some(obj) = v.as_object_mut() {
                if let Some(Value::Array(m)) = obj.get("Members") {
                    let n = m.len();
                    obj.insert("Members@odata.count".into(), Value::from(n));
                }
            }
            put(tx, &p, annotations_first(v)).await?;
        }
    }
    Ok(removed)
}

#[async_trait]
impl StorageBackend for PostgresBackend {
    /// Every instance on the database sees the same rows.
    fn shared(&self) -> bool {
        true
    }

    async fn get(&self, path: &ResourcePath) -> Result<Resource> {
        let client = self.pool.get().await.map_err(db_err)?;
        let row = client
            .query_opt("SELECT body, revision FROM resources WHERE path = $1", &[&path.as_str()])
            .await
            .map_err(db_err)?
            .ok_or_else(|| Error::not_found(path))?;
        let Json(body): Json<Value> = row.get(0);
        let rev: i64 = row.get(1);
        Ok(Resource::new(annotations_first(body), rev as u64))
    }

    async fn create(
        &self,
        collection: &ResourcePath,
        member: Value,
        new_collection: Option<Value>,
    ) -> Result<Resource> {
        in_tx!(self, |tx| create_tx(&tx, collection, &member, new_collection.as_ref()))
    }

    async fn replace(&self, path: &ResourcePath, body: Value, if_match: Option<u64>) -> Result<Resource> {
        in_tx!(self, |tx| async {
            checked(&tx, path, if_match).await?;
            put(&tx, path, body.clone()).await
        })
    }

    async fn patch(&self, path: &ResourcePath, delta: Value, if_match: Option<u64>) -> Result<Resource> {
        in_tx!(self, |tx| async {
            let current = checked(&tx, path, if_match).await?;
            let mut value = current.value().into_owned();
            merge_patch(&mut value, &delta);
            put(&tx, path, value).await
        })
    }

    async fn delete(&self, path: &ResourcePath, if_match: Option<u64>) -> Result<Vec<ResourcePath>> {
        in_tx!(self, |tx| delete_tx(&tx, path, if_match))
    }

    async fn children(&self, path: &ResourcePath) -> Result<Vec<ResourcePath>> {
        let client = self.pool.get().await.map_err(db_err)?;
        let rows = client
            .query("SELECT path FROM resources WHERE parent = $1 ORDER BY path", &[&path.as_str()])
            .await
            .map_err(db_err)?;
        rows.iter().map(|r| parse_path(r.get(0))).collect()
    }

    async fn paths(&self) -> Result<Vec<ResourcePath>> {
        let client = self.pool.get().await.map_err(db_err)?;
        let rows = client.query("SELECT path FROM resources ORDER BY path", &[]).await.map_err(db_err)?;
        rows.iter().map(|r| parse_path(r.get(0))).collect()
    }

    async fn import(&self, resources: Vec<(ResourcePath, Value)>) -> Result<()> {
        in_tx!(self, |tx| async {
            for chunk in resources.chunks(IMPORT_CHUNK) {
                let paths: Vec<&str> = chunk.iter().map(|(p, _)| p.as_str()).collect();
                let parents: Vec<Option<String>> = chunk.iter().map(|(p, _)| parent_of(p)).collect();
                let depths: Vec<i32> = chunk.iter().map(|(p, _)| p.depth() as i32).collect();
                let bodies: Vec<Json<&Value>> = chunk.iter().map(|(_, v)| Json(v)).collect();
                tx.execute(
                        "INSERT INTO resources (path, parent, depth, revision, body) \
                         SELECT p, pa, d, nextval('revisions'), b FROM unnest($1::text[], $2::text[], $3::int4[], $4::jsonb[]) AS t(p, pa, d, b) \
                         ON CONFLICT (path) DO UPDATE SET body = EXCLUDED.body, revision = EXCLUDED.revision",
                        &[&paths, &parents, &depths, &bodies],
                    )
                    .await?;
            }
            Ok(())
        })
    }

    async fn kv_get(&self, ns: &str, key: &str) -> Result<Option<Value>> {
        check_kv_name(ns)?;
        check_kv_name(key)?;
        let client = self.pool.get().await.map_err(db_err)?;
        let row =
            client.query_opt("SELECT value FROM kv WHERE ns = $1 AND key = $2", &[&ns, &key]).await.map_err(db_err)?;
        Ok(row.map(|r| {
            let Json(v): Json<Value> = r.get(0);
            v
        }))
    }

    async fn kv_put(&self, ns: &str, key: &str, value: Value) -> Result<()> {
        check_kv_name(ns)?;
        check_kv_name(key)?;
        let client = self.pool.get().await.map_err(db_err)?;
        client
            .execute(
                "INSERT INTO kv (ns, key, value) VALUES ($1, $2, $3) ON CONFLICT (ns, key) DO UPDATE SET value = EXCLUDED.value",
                &[&ns, &key, &Json(&value)],
            )
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn kv_delete(&self, ns: &str, key: &str) -> Result<bool> {
        check_kv_name(ns)?;
        check_kv_name(key)?;
        let client = self.pool.get().await.map_err(db_err)?;
        let n = client.execute("DELETE FROM kv WHERE ns = $1 AND key = $2", &[&ns, &key]).await.map_err(db_err)?;
        Ok(n > 0)
    }

    async fn kv_list(&self, ns: &str) -> Result<Vec<(String, Value)>> {
        check_kv_name(ns)?;
        let client = self.pool.get().await.map_err(db_err)?;
        let rows =
            client.query("SELECT key, value FROM kv WHERE ns = $1 ORDER BY key", &[&ns]).await.map_err(db_err)?;
        Ok(rows
            .iter()
            .map(|r| {
                let Json(v): Json<Value> = r.get(1);
                (r.get::<_, String>(0), v)
            })
            .collect())
    }

    async fn allocate(&self, name: &str, count: u64, floor: u64) -> Result<Option<u64>> {
        let client = self.pool.get().await.map_err(db_err)?;
        let count = i64::try_from(count).map_err(db_err)?;
        let floor = i64::try_from(floor).unwrap_or(i64::MAX / 2);
        // One statement: the row lock makes concurrent allocations take turns.
        let row = client
            .query_one(
                "INSERT INTO counters (name, value) VALUES ($1::text, $2::int8 + $3::int8) ON CONFLICT (name) \
                 DO UPDATE SET value = GREATEST(counters.value, $2::int8) + $3::int8 RETURNING value - $3::int8",
                &[&name, &floor, &count],
            )
            .await
            .map_err(db_err)?;
        let first: i64 = row.get(0);
        Ok(Some(first as u64))
    }

    async fn notify(&self, topic: &str, payload: &str) -> Result<()> {
        let client = self.pool.get().await.map_err(db_err)?;
        client
            .execute(
                "SELECT pg_notify($1, $2)",
                &[&coordination::channel(&self.schema), &coordination::encode(&self.instance, topic, payload)],
            )
            .await
            .map_err(db_err)?;
        Ok(())
    }

    fn notifications(&self) -> Option<tokio::sync::broadcast::Receiver<Notification>> {
        Some(self.notes.subscribe())
    }

    fn leadership(&self) -> tokio::sync::watch::Receiver<bool> {
        self.leader.clone()
    }

    async fn close(&self) -> Result<()> {
        // Every acknowledged write was committed; closing the pool ends the connections, and
        // stopping the election ends the lock's session, so a successor need not wait.
        self.stop.set();
        self.pool.close();
        Ok(())
    }
}

fn build(
    opts: PluginOptions,
) -> sunfish_core::BoxFuture<'static, std::result::Result<Arc<dyn StorageBackend>, StartupError>> {
    Box::pin(async move {
        let parsed: PostgresOptions = opts.parse()?;
        let backend = PostgresBackend::open(&parsed).await.map_err(|e| opts.error(e))?;
        Ok(Arc::new(backend) as Arc<dyn StorageBackend>)
    })
}

register_storage_backend!(StorageBackendRegistration {
    name: NAME,
    description: "resources as JSONB rows in PostgreSQL, shared by every server on the same database",
    build,
});

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Schema names are spliced into SQL: only plain identifiers pass.
    #[test]
    fn schema_names() {
        for ok in ["sunfish", "sf_test_1", "a"] {
            assert!(check_schema(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Sunfish", "1abc", "a;drop", "a b", "a\"b", &"x".repeat(64)] {
            assert!(check_schema(bad).is_err(), "{bad}");
        }
    }

    /// Annotations come first, in the conventional order; other keys keep theirs.
    #[test]
    fn annotation_order() {
        let v = annotations_first(json!({"Id": "1", "@odata.type": "#X", "Name": "n", "@odata.id": "/redfish/v1/X"}));
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["@odata.id", "@odata.type", "Id", "Name"]);
    }

    /// The link needle matches the path and paths below or beside it (narrowing only).
    #[test]
    fn needle() {
        let p = ResourcePath::parse("/redfish/v1/Systems/1").unwrap();
        let n = link_needle(&p);
        assert_eq!(n, "\"/redfish/v1/Systems/1");
        assert!(r#"{"a":{"@odata.id":"/redfish/v1/Systems/1/Bios"}}"#.contains(&n));
    }

    /// Options are typed: unknown keys and bad schema names are refused with the plugin named.
    #[tokio::test]
    async fn bad_options() {
        for (options, want) in [(json!({"uri": "x"}), "unknown field `uri`"), (json!({"schema": "A"}), "schema")] {
            let err = build(PluginOptions::new("storage", NAME, options)).await.err().map(|e| e.to_string());
            let err = err.unwrap_or_default();
            assert!(err.contains("postgres"), "{err}");
            assert!(err.contains(want), "{err}");
        }
    }
}
