//! The `redfish` hardware manager with real binaries on 127.0.0.1: a second `sunfish-server`
//! stands in for a BMC (seeded with our fabric-manager tree), a `sunfish-agent` proxies it, and
//! an upstream `sunfish-server` aggregates the agent. The BMC's resources appear upstream, a
//! PATCH made upstream lands on the BMC, a change made on the BMC reaches an upstream
//! subscriber, and a write the BMC refuses is refused upstream with nothing changed.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use reqwest::Method;
use serde_json::{json, Value};
use sunfish_tests::fleet::{get_ok, managing_agent, memory_server, owned_by, source_of, Agent, CxlTrees, Server};
use sunfish_tests::{eventually, free_port, Client, Reply};

use crate::receiver::{subscribe, Mode, Receiver};

const ADMIN_PASSWORD: &str = "bmc-admin-pw-1";
const SYSTEM: &str = "/redfish/v1/Systems/Host1";
const CHASSIS: &str = "/redfish/v1/Chassis/SwitchShelf";
const WAIT: Duration = Duration::from_secs(20);

/// A stand-in BMC: a server over our fabric-manager tree, with auth on or off. Its tree's own
/// `SunfishServer` subscription is removed so it sends events nowhere but its SSE stream.
async fn bmc(auth: bool, schemas: Option<&Path>) -> Server {
    let t = CxlTrees::ours();
    let mut env = memory_server();
    if let Some(dir) = schemas {
        env.push(("SUNFISH__SCHEMA__DIR".into(), dir.display().to_string()));
    }
    env.push(("SUNFISH__STORAGE__SEED".into(), t.fm.display().to_string()));
    env.push(("SUNFISH__AUTH__ENABLED".into(), auth.to_string()));
    env.push(("SUNFISH__AUTH__ADMIN_PASSWORD".into(), ADMIN_PASSWORD.into()));
    let s = Server::start(free_port(), &env).await;
    let r = send(&s, Method::DELETE, "/redfish/v1/EventService/Subscriptions/SunfishServer", None).await;
    assert!(r.status.is_success(), "{}", r.body);
    s
}

/// A request to the BMC as its administrator (ignored by a BMC with auth off).
async fn send(c: &Client, method: Method, uri: &str, body: Option<&Value>) -> Reply {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("admin:{ADMIN_PASSWORD}"));
    c.send(method, uri, body, &[("Authorization", &format!("Basic {basic}"))]).await
}

/// An agent proxying `bmc` with `auth` (`none`, `basic`, `session`), registered upstream.
async fn proxy(upstream: &Server, bmc: &Server, name: &str, auth: &str, events: &str) -> (Agent, String) {
    let env = [
        ("SUNFISH_AGENT__HARDWARE__OPTIONS__EVENTS", events),
        ("SUNFISH_AGENT__HARDWARE__MANAGER", "redfish"),
        ("SUNFISH_AGENT__HARDWARE__OPTIONS__URL", bmc.base.as_str()),
        ("SUNFISH_AGENT__HARDWARE__OPTIONS__AUTH", auth),
        ("SUNFISH_AGENT__HARDWARE__OPTIONS__USER", "admin"),
        ("SUNFISH_AGENT__HARDWARE__OPTIONS__PASSWORD", ADMIN_PASSWORD),
        ("SUNFISH_AGENT__HARDWARE__OPTIONS__RECONNECT_MAX_MS", "500"),
    ];
    let agent = Agent::start(Path::new("builtin"), &upstream.base, name, &env).await;
    let source = source_of(upstream, &agent).await;
    (agent, source)
}

/// With session auth: mirrored upstream, PATCH upstream → BMC, BMC change → upstream event and
/// copy, BMC refusal → upstream refusal with nothing changed.
#[tokio::test]
async fn redfish_manager_proxies_a_bmc_with_session_auth() {
    // With the DMTF bundle the BMC validates writes, so it refuses what the agent passes on.
    let bundle = sunfish_tests::workspace_root().join("../shared/redfish");
    let schemas = bundle.join("json-schema").is_dir().then_some(bundle.as_path());
    let bmc = bmc(true, schemas).await;
    let up = Server::start(free_port(), &memory_server()).await;
    let (agent, source) = proxy(&up, &bmc, "BMC1", "session", "sse").await;

    // The BMC's resources, served by the agent, are aggregated upstream.
    let host = owned_by(&up, SYSTEM, &source).await;
    assert_eq!(host["Manufacturer"], send(&bmc, Method::GET, SYSTEM, None).await.body["Manufacturer"]);
    owned_by(&up, CHASSIS, &source).await;
    owned_by(&up, "/redfish/v1/Fabrics/CXL/Switches/CXL1", &source).await;
    assert_eq!(get_ok(&agent, SYSTEM).await["Id"], "Host1");

    // A PATCH made upstream lands on the BMC; the upstream stores what the BMC then holds.
    let r = up.patch(SYSTEM, &json!({"AssetTag": "from-upstream"})).await;
    assert_eq!(r.status, 200, "{}\nagent log:\n{}", r.body, agent.log());
    assert_eq!(send(&bmc, Method::GET, SYSTEM, None).await.body["AssetTag"], "from-upstream");
    let stored = get_ok(&up, SYSTEM).await;
    assert_eq!(stored["AssetTag"], "from-upstream");
    assert_eq!(managing_agent(&stored), source);

    // A change made on the BMC itself reaches an upstream subscriber and the upstream's copy.
    let recv = Receiver::start(Mode::Ok).await;
    subscribe(&up, &recv.url("/events"), json!({})).await;
    let r = send(&bmc, Method::PATCH, CHASSIS, Some(&json!({"AssetTag": "from-bmc"}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    eventually("a ResourceChanged for the chassis upstream", WAIT, || {
        let events = recv.events_at("/events");
        async move {
            events
                .iter()
                .any(|e| {
                    e["MessageId"].as_str().unwrap_or_default().ends_with("ResourceChanged")
                        && e["OriginOfCondition"]["@odata.id"] == CHASSIS
                })
                .then_some(())
        }
    })
    .await;
    eventually("the upstream copy of the chassis updated", WAIT, || {
        let up = up.client.clone();
        async move { (up.get(CHASSIS).await.body["AssetTag"] == "from-bmc").then_some(()) }
    })
    .await;

    // A write the BMC refuses is refused upstream, and nothing changes anywhere.
    if schemas.is_none() {
        eprintln!("SKIP the schema refusal part: no DMTF bundle at {}", bundle.display());
        return;
    }
    let before_up = get_ok(&up, SYSTEM).await;
    let before_bmc = send(&bmc, Method::GET, SYSTEM, None).await.body;
    let r = up.patch(SYSTEM, &json!({"PowerState": 42})).await;
    assert!(r.status.is_client_error() || r.status.is_server_error(), "{} {}", r.status, r.body);
    assert_eq!(send(&bmc, Method::GET, SYSTEM, None).await.body, before_bmc);
    let after_up = get_ok(&up, SYSTEM).await;
    assert_eq!(after_up["PowerState"], before_up["PowerState"]);
    assert_eq!(after_up["AssetTag"], before_up["AssetTag"]);
    drop(agent);
}

/// Without auth, and with Basic, events off: the BMC's resources appear upstream, a PATCH lands
/// on it, reads through the agent are live, and a write on a resource the BMC no longer has is
/// refused upstream with its 404, nothing changed.
#[tokio::test]
async fn redfish_manager_proxies_a_bmc_without_auth_and_with_basic() {
    for (auth_on, mode, name) in [(false, "none", "BMC-open"), (true, "basic", "BMC-basic")] {
        let bmc = bmc(auth_on, None).await;
        let up = Server::start(free_port(), &memory_server()).await;
        let (agent, source) = proxy(&up, &bmc, name, mode, "off").await;
        owned_by(&up, SYSTEM, &source).await;
        let r = up.patch(SYSTEM, &json!({"AssetTag": mode})).await;
        assert_eq!(r.status, 200, "{mode}: {}\nagent log:\n{}", r.body, agent.log());
        assert_eq!(send(&bmc, Method::GET, SYSTEM, None).await.body["AssetTag"], mode);
        // Reads through the agent are live: a change on the BMC is what the agent serves next.
        let r = send(&bmc, Method::PATCH, SYSTEM, Some(&json!({"AssetTag": "live"}))).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(get_ok(&agent, SYSTEM).await["AssetTag"], "live");

        let gone = "/redfish/v1/Systems/Host2";
        let before = owned_by(&up, gone, &source).await;
        let r = send(&bmc, Method::DELETE, gone, None).await;
        assert!(r.status.is_success(), "{}", r.body);
        let r = up.patch(gone, &json!({"AssetTag": "never"})).await;
        assert_eq!(r.status, 404, "{mode}: {}", r.body);
        assert_eq!(get_ok(&up, gone).await, before, "the upstream copy changed");
        assert_eq!(send(&bmc, Method::GET, gone, None).await.status, 404);
    }
}

/// A `url` outside `[outbound] allow` is refused at start, naming the key.
#[tokio::test]
async fn redfish_manager_url_must_be_allowed() {
    let out = std::process::Command::new(sunfish_tests::agent_binary())
        .env("SUNFISH_AGENT__HARDWARE__MANAGER", "redfish")
        .env("SUNFISH_AGENT__HARDWARE__OPTIONS__URL", "http://192.0.2.1:443")
        .env("SUNFISH_AGENT__STORAGE__BACKEND", "memory")
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap_or_else(|e| panic!("run sunfish-agent: {e}"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hardware.options.url"), "{err}");
}
