//! The web console (`/ui`, issue 9). Its assets and its access endpoint over plain HTTP, then
//! a browser test: headless Chromium (Debian's `chromium` and `chromedriver`, driven over
//! WebDriver) against a real server with authentication on and two real demo agents. It logs
//! in, sees both agents Enabled, finds CXL1 linked to CXL2 in the fabric picture, opens a port
//! from the picture, PATCHes it through the editor and sees the new value, sees the change in
//! the live event tail, and sees a read-only account offered no edit. Screenshots of every
//! view go to `target/console-screenshots/`.
//!
//! Without chromium and chromedriver the browser test prints `SKIP` and passes (`.ci/run`
//! installs both). The browser is confined to loopback: a dead proxy for every other address
//! and host names resolving to nothing, plus Chromium's own background traffic turned off.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client as Browser, ClientBuilder, Locator};
use serde_json::{json, Value};
use sunfish_tests::fleet::{both_agents_with, get_ok, memory_server, CxlTrees, Server, CONNECTIONS, FABRIC};
use sunfish_tests::{eventually, free_port, workspace_root, Client};

use crate::receiver::{subscribe, Mode, Receiver};

const ADMIN_PASSWORD: &str = "console-admin-1";
const VIEWER: (&str, &str) = ("console-viewer", "viewer-password-1");
const OPERATOR: (&str, &str) = ("console-agents", "agents-password-1");
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long one browser wait may take.
const WAIT: Duration = Duration::from_secs(20);

/// A server with authentication on, an Operator account for the agents' registration and a
/// ReadOnly account; returns it with an admin client.
async fn server_with_accounts() -> (Server, Client) {
    let mut env = memory_server();
    env.push(("SUNFISH__AUTH__ENABLED".into(), "true".into()));
    env.push(("SUNFISH__AUTH__ADMIN_PASSWORD".into(), ADMIN_PASSWORD.into()));
    let s = Server::start(free_port(), &env).await;
    let admin = Client::with_basic(&s.base, "admin", ADMIN_PASSWORD);
    for ((user, password), role) in [(OPERATOR, "Operator"), (VIEWER, "ReadOnly")] {
        let body = json!({"UserName": user, "Password": password, "RoleId": role});
        let r = admin.post("/redfish/v1/AccountService/Accounts", &body).await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    (s, admin)
}

fn access_uri(path: &str) -> String {
    format!("/ui/api/access?path={path}")
}

/// The page and its assets are served with a policy that forbids other origins; the access
/// endpoint needs credentials and answers by the caller's privileges; `ui.enabled = false`
/// takes all of it away.
#[tokio::test]
async fn console_assets_and_access_follow_the_session() {
    let (s, admin) = server_with_accounts().await;
    for (path, kind) in [("/ui", "text/html"), ("/ui/app.js", "text/javascript"), ("/ui/app.css", "text/css")] {
        let r = s.http.get(format!("{}{path}", s.base)).send().await.unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(r.status(), 200, "GET {path}");
        let h = |n: &str| r.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        assert!(h("content-type").starts_with(kind), "{path}: {}", h("content-type"));
        assert!(
            h("content-security-policy").contains("default-src 'none'"),
            "{path}: CSP {}",
            h("content-security-policy")
        );
        assert_eq!(h("x-frame-options"), "DENY");
    }
    let port = "/redfish/v1/Systems";
    assert_eq!(s.get(&access_uri(port)).await.status, 401, "the access endpoint needs credentials");
    let a = get_ok(&admin, &access_uri(port)).await;
    assert_eq!(a["UserName"], "admin");
    assert_eq!(a["RoleId"], "Administrator");
    assert_eq!(a["Allowed"], json!({"GET": true, "PATCH": true, "DELETE": true, "POST": true}), "{a}");
    let viewer = Client::with_basic(&s.base, VIEWER.0, VIEWER.1);
    let v = get_ok(&viewer, &access_uri(port)).await;
    assert_eq!(v["Privileges"], json!(["Login", "ConfigureSelf"]), "{v}");
    assert_eq!(v["Allowed"], json!({"GET": true, "PATCH": false, "DELETE": false, "POST": false}), "{v}");
    // Its own account it may PATCH (the password), not delete.
    let own = get_ok(&viewer, &access_uri(v["Account"].as_str().unwrap_or_default())).await;
    assert_eq!(own["Allowed"]["PATCH"], true, "{own}");
    assert_eq!(own["Allowed"]["DELETE"], false, "{own}");
    drop(s);

    let mut env = memory_server();
    env.push(("SUNFISH__UI__ENABLED".into(), "false".into()));
    let off = Server::start(free_port(), &env).await;
    for path in ["/ui", "/ui/app.js", &access_uri(port)] {
        assert_eq!(off.get(path).await.status, 404, "{path} with ui.enabled = false");
    }
}

/// chromedriver on a loopback port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start() -> Driver {
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {CHROMEDRIVER}: {e}"));
        let driver = Driver { child, url: format!("http://127.0.0.1:{port}") };
        eventually("chromedriver to listen", WAIT, || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(|_| ())
        })
        .await;
        driver
    }

    /// A headless Chromium session that can reach nothing but loopback.
    async fn browser(&self, profile: &std::path::Path) -> Browser {
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1400,1000",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--disable-extensions",
            "--disable-domain-reliability",
            "--proxy-server=http://127.0.0.1:9",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        ];
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert("goog:chromeOptions".into(), json!({"binary": CHROMIUM, "args": args}));
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("WebDriver session on {}: {e}", self.url))
    }
}

/// Where the screenshots go: `target/console-screenshots/` (or under `CARGO_TARGET_DIR`).
fn screenshot_dir() -> PathBuf {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"));
    let target = if target.is_absolute() { target } else { workspace_root().join(target) };
    let dir = target.join("console-screenshots");
    // Only this run's pictures (a failure.png of an earlier run would mislead).
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// The page as the test sees it: waits and checks on the DOM.
struct Page {
    b: Browser,
    base: String,
    shots: PathBuf,
}

impl Page {
    async fn go(&self, hash: &str) {
        self.b.goto(&format!("{}/ui{hash}", self.base)).await.unwrap_or_else(|e| panic!("goto /ui{hash}: {e}"));
    }

    async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.b.execute(script, args).await.unwrap_or_else(|e| panic!("script {script}: {e}"))
    }

    async fn count(&self, css: &str) -> u64 {
        self.js("return document.querySelectorAll(arguments[0]).length", vec![json!(css)]).await.as_u64().unwrap_or(0)
    }

    /// Waits until `css` matches at least `n` elements.
    async fn wait_for(&self, what: &str, css: &str, n: u64) {
        let page = self;
        let found = tokio::time::timeout(WAIT, async {
            loop {
                if page.count(css).await >= n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        if found.is_err() {
            let body = self.js("return document.body.innerText", vec![]).await;
            self.shot("failure").await;
            panic!("waited {WAIT:?} for {what} ({css} ×{n}); the page shows:\n{}", body.as_str().unwrap_or(""));
        }
    }

    async fn text(&self, css: &str) -> String {
        let e = self.b.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("find {css}: {e}"));
        e.text().await.unwrap_or_default()
    }

    async fn click(&self, css: &str) {
        let e = self.b.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("find {css}: {e}"));
        e.click().await.unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    async fn type_into(&self, css: &str, text: &str) {
        let e = self.b.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("find {css}: {e}"));
        e.send_keys(text).await.unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    async fn shot(&self, name: &str) {
        if let Ok(png) = self.b.screenshot().await {
            let path = self.shots.join(format!("{name}.png"));
            std::fs::write(&path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        }
    }

    async fn log_in(&self, user: &str, password: &str) {
        self.go("").await;
        self.wait_for("the login form", "#login-view:not([hidden]) #login-form", 1).await;
        self.type_into("#login-user", user).await;
        self.type_into("#login-password", password).await;
        self.click("#login-submit").await;
        self.wait_for("the signed-in header", "#nav:not([hidden])", 1).await;
        assert!(self.text("#who").await.starts_with(user), "header names {user}");
    }
}

fn has_browser() -> bool {
    [CHROMIUM, CHROMEDRIVER].iter().all(|p| std::path::Path::new(p).exists())
}

#[tokio::test]
async fn console_in_a_browser_against_two_agents() {
    if !has_browser() {
        eprintln!(
            "SKIP console_in_a_browser_against_two_agents: {CHROMIUM} and {CHROMEDRIVER} are needed \
             (Debian packages chromium and chromium-driver; .ci/run installs them)"
        );
        return;
    }
    let t = CxlTrees::ours();
    let (s, admin) = server_with_accounts().await;
    let creds =
        [("SUNFISH_AGENT__AGENT__UPSTREAM_USER", OPERATOR.0), ("SUNFISH_AGENT__AGENT__UPSTREAM_PASSWORD", OPERATOR.1)];
    let [(_fm, _), (am, _)] = both_agents_with(&admin, &t, &creds, &creds).await;
    // A Connection, so the fabric picture has one to draw.
    let r = admin.post(CONNECTIONS, &t.connection("console connection")).await;
    assert_eq!(r.status, 201, "{}", r.body);
    // A subscription, so the events view has delivery counters to show.
    let receiver = Receiver::start(Mode::Ok).await;
    let (_, sub_id) = subscribe(&admin, &receiver.url("/console"), json!({"Context": "console"})).await;

    let driver = Driver::start().await;
    let profile = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let page = Page { b: driver.browser(profile.path()).await, base: s.base.clone(), shots: screenshot_dir() };
    let walk = std::panic::AssertUnwindSafe(walk_through(&page, &admin, &am, &sub_id, &receiver));
    let result = futures::FutureExt::catch_unwind(walk).await;
    // Close the session (and with it Chromium) whether the walk passed or not.
    let _ = page.b.clone().close().await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

async fn walk_through(page: &Page, admin: &Client, am: &Client, sub_id: &str, receiver: &Receiver) {
    // Log in.
    page.go("").await;
    page.wait_for("the login form", "#login-view:not([hidden]) #login-form", 1).await;
    page.shot("01-login").await;
    page.log_in("admin", ADMIN_PASSWORD).await;
    page.wait_for("the service root in the tree", "#tree-json", 1).await;
    page.shot("02-tree").await;

    // Agents: both Enabled, with their crawl.
    page.click("#nav-agents").await;
    page.wait_for("two Enabled agents", "#agents tr[data-agent][data-state='Enabled']", 2).await;
    page.wait_for("two completed crawls", "#agents td[data-col='sync'] .sync-Completed", 2).await;
    page.shot("03-agents").await;

    // Fabric: CXL1 linked to CXL2 in the picture (each of the four boundary ports).
    page.click("#nav-fabric").await;
    let isl = "svg#fabric-graph line.isl[data-from-switch='CXL1'][data-to-switch='CXL2'], \
               svg#fabric-graph line.isl[data-from-switch='CXL2'][data-to-switch='CXL1']";
    page.wait_for("CXL1 linked to CXL2", isl, 4).await;
    assert_eq!(page.count("svg#fabric-graph g.switch").await, 2);
    assert!(page.count("svg#fabric-graph g.endpoint").await >= 2, "endpoints are drawn");
    page.wait_for("the Connection between its endpoints", "svg#fabric-graph path.connection", 1).await;
    assert!(page.text("#fabric-links").await.contains("CXL1 F1 ⟷ CXL2 F1"));
    page.shot("04-fabric").await;

    // Open a port from the picture, PATCH its Name in the editor, see the new value.
    let port = format!("{FABRIC}/Switches/CXL2/Ports/F1");
    page.click("svg#fabric-graph g.port[data-switch='CXL2'][data-port='F1'] circle").await;
    page.wait_for("the port in the tree", &format!("section[data-path='{port}'] #tree-json"), 1).await;
    let etag_before = page.text("#tree-meta").await;
    page.click("#edit-button").await;
    page.wait_for("the editor", "#edit-body", 1).await;
    let name = "Uplink to CXL1 (console)";
    let set = "const a = document.getElementById('edit-body'); const v = JSON.parse(a.value); \
               v.Name = arguments[0]; a.value = JSON.stringify(v, null, 2); return true;";
    page.js(set, vec![json!(name)]).await;
    page.shot("05-edit").await;
    page.click("#edit-save").await;
    page.wait_for("the saved resource", "#tree-json:not([hidden])", 1).await;
    eventually("the new Name on the page", WAIT, || async move {
        page.text("#tree-json").await.contains(name).then_some(())
    })
    .await;
    assert_ne!(page.text("#tree-meta").await, etag_before, "a new ETag after the PATCH");
    assert_eq!(get_ok(admin, &port).await["Name"], name, "the server has it");
    assert_eq!(get_ok(am, &port).await["Name"], name, "the owning agent has it");
    page.shot("06-resource").await;

    // Events: the change in the live tail, and the subscription with its counters.
    page.click("#nav-events").await;
    let change = format!("#tail li[data-message-id*='ResourceChanged'][data-origin='{port}']");
    page.wait_for("the PATCH's ResourceChanged in the live tail", &change, 1).await;
    assert_eq!(page.text("#tail-status").await, "(live)");
    page.wait_for("the subscription row", &format!("#subscriptions tr[data-subscription='{sub_id}']"), 1).await;
    receiver.wait_attempts("/console", 1, WAIT).await;
    page.wait_for("a delivered counter", &format!("#subscriptions tr[data-subscription='{sub_id}'] [data-counter]"), 1)
        .await;
    // A change made elsewhere arrives while the view is open.
    let seen = page.count(&change).await;
    let r = admin.patch(&port, &json!({"Description": "changed while the console watches"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    page.wait_for("the next ResourceChanged", &change, seen + 1).await;
    page.shot("07-events").await;

    // A read-only account sees the resource but is offered no edit and no delete.
    page.click("#logout").await;
    page.wait_for("the login form again", "#login-view:not([hidden])", 1).await;
    page.log_in(VIEWER.0, VIEWER.1).await;
    page.go(&format!("#/tree{port}")).await;
    page.wait_for("the port for the viewer", "#tree-json", 1).await;
    page.wait_for("edit disabled", "#edit-button[disabled]", 1).await;
    page.wait_for("delete disabled", "#delete-button[disabled]", 1).await;
    page.shot("08-readonly").await;
}
