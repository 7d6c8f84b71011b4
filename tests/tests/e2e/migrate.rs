//! `sunfish-server --export-to` and `--migrate-from` with the real binary: a store written
//! through a running server (a resource, an account, a session, a subscription) is copied into
//! another, and a server on the copy serves the same tree and knows the same accounts, session
//! tokens and subscriptions. fs → fs always; fs → postgres → fs when a PostgreSQL server
//! answers (skips, saying so, without one). A non-empty target is refused.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use reqwest::Method;
use serde_json::{json, Value};
use sunfish_tests::{server_binary, BinaryServer};

const PASSWORD: &str = "migrate-Passw0rd";

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("{user}:{password}"))
    )
}

/// Every `index.json` below `root`, by relative path, parsed.
fn tree(root: &Path) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == "index.json") {
                let rel = p.strip_prefix(root).map(|r| r.display().to_string()).unwrap_or_default();
                let v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap_or_default()).unwrap_or(Value::Null);
                out.insert(rel, v);
            }
        }
    }
    out
}

fn env_for(backend: &[(&str, String)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = backend.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    env.push(("SUNFISH__AUTH__ENABLED".into(), "true".into()));
    env.push(("SUNFISH__AUTH__ADMIN_PASSWORD".into(), PASSWORD.into()));
    env
}

fn fs(root: &Path) -> Vec<(&'static str, String)> {
    vec![("SUNFISH__STORAGE__BACKEND", "fs".into()), ("SUNFISH__STORAGE__OPTIONS__ROOT", root.display().to_string())]
}

/// Runs `sunfish-server <args>` with `env` (a copy) to its end; returns (success, output).
fn copy(args: &[&str], env: &[(String, String)]) -> (bool, String) {
    let mut cmd = Command::new(server_binary());
    cmd.args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap_or_else(|e| panic!("sunfish-server {args:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Writes a resource, an account, a session and a subscription through a server on `env`;
/// stops it (SIGTERM, clean exit). Returns the session token.
async fn populate(env: &[(String, String)]) -> String {
    let s = BinaryServer::start_env(&[], env).await;
    let admin = basic("admin", PASSWORD);
    let auth = [("Authorization", admin.as_str())];
    let sys = json!({"@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem", "Id": "m1", "Name": "moved"});
    let r = s.send(Method::POST, "/redfish/v1/Systems", Some(&sys), &auth).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let user = json!({"UserName": "mover", "Password": "mover-password", "RoleId": "Operator"});
    let r = s.send(Method::POST, "/redfish/v1/AccountService/Accounts", Some(&user), &auth).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let login = json!({"UserName": "mover", "Password": "mover-password"});
    let r = s.send(Method::POST, "/redfish/v1/SessionService/Sessions", Some(&login), &[]).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let token = r.header("X-Auth-Token").to_string();
    let sub = json!({"Destination": "http://127.0.0.1:9/events", "Protocol": "Redfish", "Context": "moved-sub"});
    let r = s.send(Method::POST, "/redfish/v1/EventService/Subscriptions", Some(&sub), &auth).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let pid = s.pid().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(sent.is_ok_and(|st| st.success()));
    assert!(s.wait().success(), "the populating server did not stop cleanly");
    token
}

/// A server on `env` serves what [`populate`] wrote: the resource, the account's password,
/// the session token, the subscription.
async fn assert_served(env: &[(String, String)], token: &str) {
    let s = BinaryServer::start_env(&[], env).await;
    let r = s.send(Method::GET, "/redfish/v1/Systems/m1", None, &[("X-Auth-Token", token)]).await;
    assert_eq!(
        (r.status.as_u16(), r.body["Name"].as_str()),
        (200, Some("moved")),
        "session token and resource: {}",
        r.body
    );
    let mover = basic("mover", "mover-password");
    let r =
        s.send(Method::GET, "/redfish/v1/EventService/Subscriptions", None, &[("Authorization", mover.as_str())]).await;
    assert_eq!(r.status, 200, "account password: {}", r.body);
    let subs = r.body["Members"].as_array().cloned().unwrap_or_default();
    assert_eq!(subs.len(), 1, "{}", r.body);
    let uri = subs[0]["@odata.id"].as_str().unwrap_or_default();
    let r = s.send(Method::GET, uri, None, &[("Authorization", mover.as_str())]).await;
    assert_eq!(r.body["Context"], "moved-sub", "{}", r.body);
}

/// fs → fs: `--export-to fs:DIR` copies the configured store; the copy's files are the
/// original's and a server on it knows everything; a second export into the now full
/// directory is refused, and so is a store spelled wrong.
#[tokio::test]
async fn export_to_fs_copies_everything() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let env_a = env_for(&fs(&a));
    let token = populate(&env_a).await;
    let target = format!("fs:{}", b.display());
    let (ok, out) = copy(&["--export-to", &target], &env_a);
    assert!(ok, "{out}");
    assert!(out.contains("copied") && out.contains("records"), "{out}");
    assert_eq!(tree(&a), tree(&b), "the copy's files differ");
    assert_served(&env_for(&fs(&b)), &token).await;
    let (ok, out) = copy(&["--export-to", &target], &env_a);
    assert!(!ok && out.contains("not empty"), "{out}");
    let (ok, out) = copy(&["--export-to", "nowhere"], &env_a);
    assert!(!ok && out.contains("BACKEND:LOCATION"), "{out}");
}

/// fs → postgres → fs: `--migrate-from fs:DIR` into a configured postgres store, a server on
/// it knows everything, and `--export-to` back gives the original files.
#[tokio::test]
async fn migrate_from_fs_into_postgres_and_back() {
    let url = std::env::var("SUNFISH_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 user=postgres dbname=test".into());
    let db = match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
        Ok((client, conn)) => {
            tokio::spawn(conn);
            client
        }
        Err(e) => {
            eprintln!("SKIP migrate_from_fs_into_postgres_and_back: no PostgreSQL at {url:?} ({e})");
            return;
        }
    };
    let schema = format!("sfmig_{}", std::process::id());
    let _ = db.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (a, c) = (dir.path().join("a"), dir.path().join("c"));
    let env_a = env_for(&fs(&a));
    let token = populate(&env_a).await;
    let pg = env_for(&[
        ("SUNFISH__STORAGE__BACKEND", "postgres".into()),
        ("SUNFISH__STORAGE__OPTIONS__URL", url.clone()),
        ("SUNFISH__STORAGE__OPTIONS__SCHEMA", schema.clone()),
    ]);
    let (ok, out) = copy(&["--migrate-from", &format!("fs:{}", a.display())], &pg);
    assert!(ok, "{out}");
    assert_served(&pg, &token).await;
    let (ok, out) = copy(&["--export-to", &format!("fs:{}", c.display())], &pg);
    assert!(ok, "{out}");
    // The server on postgres wrote nothing new but session bookkeeping; the tree is the same.
    assert_eq!(tree(&a), tree(&c), "fs → postgres → fs changed the tree");
    let _ = db.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
}
