//! Authentication and authorization: credentials, roles, sessions, lockout, password secrecy.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use sunfish_tests::{config_for, eventually, Backend, Client, Reply, TestServer};

const ADMIN: (&str, &str) = ("admin", "admin-password-1");

async fn start(tweak: impl FnOnce(&mut sunfish_server::ServerConfig)) -> TestServer {
    let (mut cfg, dir) = config_for(Backend::Memory);
    cfg.auth.enabled = true;
    cfg.auth.admin_user = ADMIN.0.into();
    cfg.auth.admin_password = Some(ADMIN.1.into());
    tweak(&mut cfg);
    TestServer::start_with(cfg, dir).await
}

fn basic(user: &str, pass: &str) -> String {
    use std::fmt::Write;
    let raw = format!("{user}:{pass}");
    // Standard base64 without a crate: tests stay independent of the server's choice.
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in raw.as_bytes().chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    let mut h = String::new();
    let _ = write!(h, "Basic {out}");
    h
}

async fn as_user(c: &Client, user: &str, pass: &str, method: Method, path: &str, body: Option<&Value>) -> Reply {
    let auth = basic(user, pass);
    c.send(method, path, body, &[("Authorization", auth.as_str())]).await
}

async fn admin(c: &Client, method: Method, path: &str, body: Option<&Value>) -> Reply {
    as_user(c, ADMIN.0, ADMIN.1, method, path, body).await
}

async fn make_account(c: &Client, user: &str, role: &str) -> String {
    let r = admin(
        c,
        Method::POST,
        "/redfish/v1/AccountService/Accounts",
        Some(&json!({"UserName": user, "Password": format!("{user}-password"), "RoleId": role})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["@odata.id"].as_str().unwrap_or_else(|| panic!("no @odata.id in {}", r.body)).to_string()
}

/// Without credentials only the service root, /redfish, $metadata, the OData document and
/// login are open; everything else is 401 with WWW-Authenticate and a Redfish error body.
#[tokio::test]
async fn unauthenticated_requests_get_401() {
    let s = start(|_| {}).await;
    for path in ["/redfish", "/redfish/v1", "/redfish/v1/"] {
        assert_eq!(s.get(path).await.status, 200, "{path}");
    }
    for (method, path) in [
        (Method::GET, "/redfish/v1/Systems"),
        (Method::GET, "/redfish/v1/AccountService/Accounts"),
        (Method::POST, "/redfish/v1/Systems"),
        (Method::PATCH, "/redfish/v1/Systems"),
        (Method::DELETE, "/redfish/v1/Chassis"),
        (Method::GET, "/redfish/v1/NoSuchThing"),
        (Method::POST, "/EventListener"),
        (Method::GET, "/redfish/v1/EventService/SSE"),
    ] {
        let r = s.send(method.clone(), path, Some(&json!({})), &[]).await;
        assert_eq!(r.status, 401, "{method} {path}");
        assert!(r.header("WWW-Authenticate").starts_with("Basic"), "{method} {path}");
        assert!(r.body["error"]["@Message.ExtendedInfo"][0]["MessageId"].is_string(), "{method} {path}");
    }
    let wrong = as_user(&s, ADMIN.0, "nope-nope", Method::GET, "/redfish/v1/Systems", None).await;
    assert_eq!(wrong.status, 401);
    let bogus = s.send(Method::GET, "/redfish/v1/Systems", None, &[("X-Auth-Token", "0123")]).await;
    assert_eq!(bogus.status, 401);
    s.stop().await;
}

/// Per role: ReadOnly reads only; Operator changes components but not accounts or the service;
/// Administrator does everything. Insufficient privilege is 403.
#[tokio::test]
async fn roles_grant_their_privileges() {
    let s = start(|_| {}).await;
    make_account(&s, "reader", "ReadOnly").await;
    make_account(&s, "operator", "Operator").await;
    let system = json!({"@odata.type": "#ComputerSystem.v1_22_0.ComputerSystem", "Name": "x"});
    let new_user = json!({"UserName": "x", "Password": "x-password", "RoleId": "ReadOnly"});
    let cases: [(&str, Method, &str, Option<&Value>, [u16; 3]); 6] = [
        // (what, method, path, body, [reader, operator, admin])
        ("read", Method::GET, "/redfish/v1/Systems", None, [200, 200, 200]),
        ("create component", Method::POST, "/redfish/v1/Systems", Some(&system), [403, 201, 201]),
        (
            "patch service",
            Method::PATCH,
            "/redfish/v1/EventService",
            Some(&json!({"DeliveryRetryAttempts": 2})),
            [403, 403, 200],
        ),
        ("create account", Method::POST, "/redfish/v1/AccountService/Accounts", Some(&new_user), [403, 403, 201]),
        ("list accounts", Method::GET, "/redfish/v1/AccountService/Accounts", None, [200, 200, 200]),
        (
            "patch settings",
            Method::PATCH,
            "/redfish/v1/AccountService",
            Some(&json!({"MinPasswordLength": 8})),
            [403, 403, 200],
        ),
    ];
    for (what, method, path, body, expected) in cases {
        for (i, (user, pass)) in
            [("reader", "reader-password"), ("operator", "operator-password"), ADMIN].iter().enumerate()
        {
            let r = as_user(&s, user, pass, method.clone(), path, body).await;
            assert_eq!(r.status.as_u16(), expected[i], "{what} as {user}: {}", r.body);
            if expected[i] == 403 {
                assert_eq!(r.message_id(), "InsufficientPrivilege");
            }
        }
    }
    s.stop().await;
}

/// Passwords are write-only: shown as null on every read, never echoed, never in a collection
/// expansion; a user may change its own password (ConfigureSelf) but not its role.
#[tokio::test]
async fn passwords_are_never_readable() {
    let s = start(|_| {}).await;
    let acct = make_account(&s, "alice", "ReadOnly").await;
    let r = admin(&s, Method::GET, &acct, None).await;
    assert_eq!(r.body["Password"], Value::Null);
    assert_eq!(r.body["UserName"], "alice");
    let all = admin(&s, Method::GET, "/redfish/v1/AccountService/Accounts?$expand=.", None).await;
    assert!(!all.body.to_string().contains("alice-password"), "{}", all.body);
    let own =
        as_user(&s, "alice", "alice-password", Method::PATCH, &acct, Some(&json!({"Password": "alice-new-password"})))
            .await;
    assert_eq!(own.status, 200, "{}", own.body);
    assert!(!own.body.to_string().contains("alice-new-password"));
    assert_eq!(as_user(&s, "alice", "alice-password", Method::GET, "/redfish/v1/Systems", None).await.status, 401);
    assert_eq!(as_user(&s, "alice", "alice-new-password", Method::GET, "/redfish/v1/Systems", None).await.status, 200);
    let escalate =
        as_user(&s, "alice", "alice-new-password", Method::PATCH, &acct, Some(&json!({"RoleId": "Administrator"})))
            .await;
    assert_eq!(escalate.status, 403);
    let other = make_account(&s, "bob", "ReadOnly").await;
    let theirs =
        as_user(&s, "alice", "alice-new-password", Method::PATCH, &other, Some(&json!({"Password": "hijacked-pass"})))
            .await;
    assert_eq!(theirs.status, 403);
    let short = admin(&s, Method::PATCH, &acct, Some(&json!({"Password": "short"}))).await;
    assert_eq!(short.status, 400);
    let dup = admin(
        &s,
        Method::POST,
        "/redfish/v1/AccountService/Accounts",
        Some(&json!({"UserName": "alice", "Password": "whatever-pw", "RoleId": "ReadOnly"})),
    )
    .await;
    assert_eq!(dup.status, 409);
    let norole = admin(
        &s,
        Method::POST,
        "/redfish/v1/AccountService/Accounts",
        Some(&json!({"UserName": "carol", "Password": "whatever-pw", "RoleId": "Nope"})),
    )
    .await;
    assert_eq!(norole.status, 400);
    s.stop().await;
}

/// Sessions: POST gives 201, X-Auth-Token and Location; the token works; DELETE logs out; the
/// session resource never shows the password; bad credentials are 401.
#[tokio::test]
async fn session_login_and_logout() {
    let s = start(|_| {}).await;
    let bad =
        s.post("/redfish/v1/SessionService/Sessions", &json!({"UserName": "admin", "Password": "wrong-one"})).await;
    assert_eq!(bad.status, 401);
    let missing = s.post("/redfish/v1/SessionService/Sessions", &json!({"UserName": "admin"})).await;
    assert_eq!(missing.status, 400);
    let r = s.post("/redfish/v1/SessionService/Sessions", &json!({"UserName": ADMIN.0, "Password": ADMIN.1})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let token = r.header("X-Auth-Token").to_string();
    let location = r.header("Location").to_string();
    assert!(token.len() >= 32);
    assert_eq!(r.body["@odata.id"], location.as_str());
    assert!(!r.body.to_string().contains(ADMIN.1));
    let hdr = [("X-Auth-Token", token.as_str())];
    assert_eq!(s.send(Method::GET, "/redfish/v1/Systems", None, &hdr).await.status, 200);
    assert_eq!(s.send(Method::GET, &location, None, &hdr).await.body["UserName"], "admin");
    assert_eq!(s.send(Method::DELETE, &location, None, &hdr).await.status, 204);
    assert_eq!(s.send(Method::GET, "/redfish/v1/Systems", None, &hdr).await.status, 401);
    s.stop().await;
}

/// An idle session expires after SessionTimeout seconds.
#[tokio::test]
async fn idle_sessions_time_out() {
    let s = start(|_| {}).await;
    let r = admin(&s, Method::PATCH, "/redfish/v1/SessionService", Some(&json!({"SessionTimeout": 1}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s.post("/redfish/v1/SessionService/Sessions", &json!({"UserName": ADMIN.0, "Password": ADMIN.1})).await;
    let token = r.header("X-Auth-Token").to_string();
    let location = r.header("Location").to_string();
    assert_eq!(s.send(Method::GET, "/redfish/v1/Systems", None, &[("X-Auth-Token", token.as_str())]).await.status, 200);
    // Watch the session resource (with Basic, so the token stays idle) until it is removed.
    eventually("the idle session to expire", Duration::from_secs(10), || async {
        (admin(&s, Method::GET, &location, None).await.status == 404).then_some(())
    })
    .await;
    let r = s.send(Method::GET, "/redfish/v1/Systems", None, &[("X-Auth-Token", token.as_str())]).await;
    assert_eq!(r.status, 401, "an expired token is refused");
    s.stop().await;
}

/// AccountLockoutThreshold failures lock the account (even the right password is refused) for
/// AccountLockoutDuration; an administrator can unlock it at once.
#[tokio::test]
async fn lockout_after_failures() {
    let s = start(|_| {}).await;
    let r = admin(
        &s,
        Method::PATCH,
        "/redfish/v1/AccountService",
        Some(&json!({"AccountLockoutThreshold": 3, "AccountLockoutDuration": 2, "AccountLockoutCounterResetAfter": 2})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let acct = make_account(&s, "dave", "Operator").await;
    for _ in 0..3 {
        assert_eq!(as_user(&s, "dave", "bad-password", Method::GET, "/redfish/v1/Systems", None).await.status, 401);
    }
    assert_eq!(
        as_user(&s, "dave", "dave-password", Method::GET, "/redfish/v1/Systems", None).await.status,
        401,
        "locked"
    );
    assert_eq!(admin(&s, Method::GET, &acct, None).await.body["Locked"], true);
    // Unlock by an administrator.
    assert_eq!(admin(&s, Method::PATCH, &acct, Some(&json!({"Locked": false}))).await.status, 200);
    assert_eq!(as_user(&s, "dave", "dave-password", Method::GET, "/redfish/v1/Systems", None).await.status, 200);
    // Lock again; the lock ends by itself after the duration.
    for _ in 0..3 {
        as_user(&s, "dave", "bad-password", Method::GET, "/redfish/v1/Systems", None).await;
    }
    assert_eq!(as_user(&s, "dave", "dave-password", Method::GET, "/redfish/v1/Systems", None).await.status, 401);
    eventually("the lock to expire", Duration::from_secs(10), || async {
        let r = as_user(&s, "dave", "dave-password", Method::GET, "/redfish/v1/Systems", None).await;
        (r.status == 200).then_some(())
    })
    .await;
    s.stop().await;
}

/// Predefined roles keep their privileges; `auth.open_event_listener` lets credential-less
/// agents post events and nothing else.
#[tokio::test]
async fn predefined_roles_and_open_listener() {
    let s = start(|cfg| cfg.auth.open_event_listener = true).await;
    let r = admin(
        &s,
        Method::PATCH,
        "/redfish/v1/AccountService/Roles/ReadOnly",
        Some(&json!({"AssignedPrivileges": ["Login", "ConfigureUsers"]})),
    )
    .await;
    assert_eq!(r.status, 400);
    let ev = s.post("/EventListener", &json!({"Events": [{"MessageId": "ResourceEvent.1.0.ResourceChanged"}]})).await;
    assert_eq!(ev.status, 200);
    assert_eq!(s.get("/redfish/v1/Systems").await.status, 401);
    s.stop().await;
}

/// With auth on and no admin password configured, a password is generated: the service is
/// never started without a way to log in, and no account is created with a known default.
#[tokio::test]
async fn bootstrap_without_password_generates_one() {
    let (mut cfg, dir) = config_for(Backend::Memory);
    cfg.auth.enabled = true;
    cfg.auth.admin_password = None;
    let s = TestServer::start_with(cfg, dir).await;
    assert_eq!(as_user(&s, "admin", "", Method::GET, "/redfish/v1/Systems", None).await.status, 401);
    assert_eq!(as_user(&s, "admin", "admin", Method::GET, "/redfish/v1/Systems", None).await.status, 401);
    s.stop().await;
    let (mut cfg, dir) = config_for(Backend::Memory);
    cfg.auth.enabled = true;
    cfg.auth.admin_user = String::new();
    let Err(e) = sunfish_server::build(&cfg).await else { panic!("started without any way to log in") };
    drop(dir);
    assert!(e.to_string().contains("admin"), "{e}");
}
