//! Two real `sunfish-server` processes on one PostgreSQL schema serve one tree (issue 8, first
//! part): writes through either are read through the other at once, ETags and If-Match hold
//! across them, and accounts and sessions live in the database (a token opened on one works on
//! the other; ended on one, it is refused by both). Skips, saying so, without a
//! PostgreSQL server (`SUNFISH_TEST_POSTGRES_URL`, default
//! `host=127.0.0.1 user=postgres dbname=test`).

use reqwest::Method;
use serde_json::json;
use sunfish_tests::BinaryServer;

const PASSWORD: &str = "pg-test-Passw0rd";

fn url() -> String {
    std::env::var("SUNFISH_TEST_POSTGRES_URL").unwrap_or_else(|_| "host=127.0.0.1 user=postgres dbname=test".into())
}

/// A connection for setup and cleanup, or `None` (printed) when no server answers.
async fn admin_connection(test: &str) -> Option<tokio_postgres::Client> {
    match tokio_postgres::connect(&url(), tokio_postgres::NoTls).await {
        Ok((client, conn)) => {
            tokio::spawn(conn);
            Some(client)
        }
        Err(e) => {
            eprintln!("SKIP {test}: no PostgreSQL at {:?} ({e})", url());
            None
        }
    }
}

/// A write through A is read through B at once (and the other way round); If-Match with B's
/// ETag works on A and a stale one is refused; the Administrator created by A's first start
/// logs in on B.
#[tokio::test]
async fn two_servers_on_one_database_are_one_service() {
    let Some(db) = admin_connection("two_servers_on_one_database_are_one_service").await else { return };
    let schema = format!("sfe2e_{}", std::process::id());
    let _ = db.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
    let env = [
        ("SUNFISH__STORAGE__BACKEND", "postgres".to_string()),
        ("SUNFISH__STORAGE__OPTIONS__URL", url()),
        ("SUNFISH__STORAGE__OPTIONS__SCHEMA", schema.clone()),
        ("SUNFISH__AUTH__ENABLED", "true".to_string()),
        ("SUNFISH__AUTH__ADMIN_PASSWORD", PASSWORD.to_string()),
    ];
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    let a = BinaryServer::start_env(&[], &env).await;
    let b = BinaryServer::start_env(&[], &env).await;

    let basic = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("admin:{PASSWORD}"));
    let basic = format!("Basic {basic}");
    let auth = [("Authorization", basic.as_str())];

    let created = a
        .send(
            Method::POST,
            "/redfish/v1/Systems",
            Some(&json!({"@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem", "Id": "pg1", "Name": "via A"})),
            &auth,
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let on_b = b.send(Method::GET, "/redfish/v1/Systems/pg1", None, &auth).await;
    assert_eq!(
        (on_b.status.as_u16(), on_b.body["Name"].as_str()),
        (200, Some("via A")),
        "the write and the account seen on B"
    );
    let members = b.send(Method::GET, "/redfish/v1/Systems", None, &auth).await;
    assert!(members.body["Members"]
        .as_array()
        .is_some_and(|m| m.contains(&json!({"@odata.id": "/redfish/v1/Systems/pg1"}))));

    let etag = on_b.header("ETag").to_string();
    let patched = a
        .send(
            Method::PATCH,
            "/redfish/v1/Systems/pg1",
            Some(&json!({"Name": "via A with B's ETag"})),
            &[auth[0], ("If-Match", &etag)],
        )
        .await;
    assert!(patched.status == 200 || patched.status == 204, "{} {}", patched.status, patched.body);
    let stale = b
        .send(
            Method::PATCH,
            "/redfish/v1/Systems/pg1",
            Some(&json!({"Name": "stale"})),
            &[auth[0], ("If-Match", &etag)],
        )
        .await;
    assert_eq!(stale.status, 412, "{}", stale.body);
    assert_eq!(b.send(Method::GET, "/redfish/v1/Systems/pg1", None, &auth).await.body["Name"], "via A with B's ETag");

    assert!(b.send(Method::DELETE, "/redfish/v1/Systems/pg1", None, &auth).await.status.is_success());
    assert_eq!(a.send(Method::GET, "/redfish/v1/Systems/pg1", None, &auth).await.status, 404);

    // A session opened on A works on B; ended on B, it is refused on A.
    let login = json!({"UserName": "admin", "Password": PASSWORD});
    let opened = a.send(Method::POST, "/redfish/v1/SessionService/Sessions", Some(&login), &[]).await;
    assert_eq!(opened.status, 201, "{}", opened.body);
    let token = opened.header("X-Auth-Token").to_string();
    let session = opened.header("Location").to_string();
    let with_token = [("X-Auth-Token", token.as_str())];
    assert_eq!(b.send(Method::GET, "/redfish/v1/Systems", None, &with_token).await.status, 200, "A's token on B");
    assert_eq!(a.send(Method::GET, "/redfish/v1/Systems", None, &with_token).await.status, 200);
    let ended = b.send(Method::DELETE, &session, None, &with_token).await;
    assert!(ended.status.is_success(), "{} {}", ended.status, ended.body);
    assert_eq!(
        a.send(Method::GET, "/redfish/v1/Systems", None, &with_token).await.status,
        401,
        "ended on B, refused on A"
    );
    assert_eq!(b.send(Method::GET, "/redfish/v1/Systems", None, &with_token).await.status, 401);

    drop((a, b));
    let _ = db.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
}
