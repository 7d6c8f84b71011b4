//! Versioned schema migrations. Each entry of [`MIGRATIONS`] is applied once, in order, in one
//! transaction that holds an advisory lock for the schema, and recorded in `migrations`; so
//! instances starting together apply each step exactly once, and a newer binary migrates an
//! older database on start. Steps are never edited once released: a change is a new step.

use deadpool_postgres::Client;

/// The steps, by version (1-based, in order).
pub const MIGRATIONS: &[&str] = &[
    // 1: resources keyed by path (byte order, as ResourcePath's, so a subtree is one range),
    // revisions from one sequence shared by every instance, private records.
    "CREATE SEQUENCE revisions;
     CREATE TABLE resources (
         path text COLLATE \"C\" PRIMARY KEY,
         parent text COLLATE \"C\",
         depth int4 NOT NULL,
         revision int8 NOT NULL,
         body jsonb NOT NULL
     );
     CREATE INDEX resources_parent ON resources (parent);
     CREATE TABLE kv (
         ns text COLLATE \"C\" NOT NULL,
         key text COLLATE \"C\" NOT NULL,
         value jsonb NOT NULL,
         PRIMARY KEY (ns, key)
     );",
    // 2: store-wide counters (event ids), so instances never hand out the same number.
    "CREATE TABLE counters (
         name text COLLATE \"C\" PRIMARY KEY,
         value int8 NOT NULL
     );",
];

/// Creates `schema` when missing and applies every step not yet recorded. Returns the version
/// the schema is at afterwards.
///
/// # Errors
/// Database errors, or a database already at a version newer than this binary knows.
pub async fn apply(client: &mut Client, schema: &str) -> Result<usize, String> {
    let tx = client.transaction().await.map_err(|e| e.to_string())?;
    tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&format!("sunfish-migrations:{schema}")])
        .await
        .map_err(|e| e.to_string())?;
    // `schema` passed check_schema: a plain lowercase identifier.
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.migrations (version int4 PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());"
    ))
    .await
    .map_err(|e| e.to_string())?;
    let row = tx
        .query_one(&format!("SELECT coalesce(max(version), 0) FROM {schema}.migrations"), &[])
        .await
        .map_err(|e| e.to_string())?;
    let at: i32 = row.get(0);
    let at = at as usize;
    if at > MIGRATIONS.len() {
        return Err(format!(
            "schema {schema} is at version {at}, newer than this binary's {}: upgrade sunfish-server",
            MIGRATIONS.len()
        ));
    }
    tx.batch_execute(&format!("SET LOCAL search_path = {schema}")).await.map_err(|e| e.to_string())?;
    for (i, step) in MIGRATIONS.iter().enumerate().skip(at) {
        tx.batch_execute(step).await.map_err(|e| format!("step {}: {e}", i + 1))?;
        tx.execute(&format!("INSERT INTO {schema}.migrations (version) VALUES ($1)"), &[&((i + 1) as i32)])
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(schema, version = i + 1, "postgres schema migrated");
    }
    tx.commit().await.map_err(|e| e.to_string())?;
    Ok(MIGRATIONS.len())
}
