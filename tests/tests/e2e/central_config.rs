//! Central agent configuration with real binaries on 127.0.0.1: an operator keeps each agent's
//! section on the upstream (`AggregationService/Oem/Sunfish_RM/AgentConfigurations/<name>`),
//! an agent started with only `--upstream` and `--name` (and its registration credentials)
//! fetches it and runs on it, its own environment overriding the section; who may read and
//! write sections, and what a section may not set.

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use sunfish_tests::fleet::{get_ok, memory_server, owned_by, source_of, Agent, CxlTrees, Server, FABRIC};
use sunfish_tests::{free_port, Client, Reply};

const SECTIONS: &str = "/redfish/v1/AggregationService/Oem/Sunfish_RM/AgentConfigurations";
const ADMIN_PASSWORD: &str = "upstream-admin-1";
const BMC_PASSWORD: &str = "bmc-admin-pw-1";
const OPERATOR: (&str, &str) = ("fleet-op", "fleet-op-password");
const VIEWER: (&str, &str) = ("viewer", "viewer-password");

/// A client that sends Basic credentials on every request.
fn as_user(base: &str, (user, password): (&str, &str)) -> Client {
    Client::with_basic(base, user, password)
}

/// An upstream with authentication on and two more accounts: an Operator (the agents'
/// registration account) and a ReadOnly viewer. Returns it and the administrator's client.
async fn upstream() -> (Server, Client) {
    let mut env = memory_server();
    env.push(("SUNFISH__AUTH__ENABLED".into(), "true".into()));
    env.push(("SUNFISH__AUTH__ADMIN_PASSWORD".into(), ADMIN_PASSWORD.into()));
    let s = Server::start(free_port(), &env).await;
    let admin = as_user(&s.base, ("admin", ADMIN_PASSWORD));
    for ((user, password), role) in [(OPERATOR, "Operator"), (VIEWER, "ReadOnly")] {
        let body = json!({"UserName": user, "Password": password, "RoleId": role});
        let r = admin.post("/redfish/v1/AccountService/Accounts", &body).await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    (s, admin)
}

fn created(r: &Reply) {
    assert_eq!(r.status, 201, "{}", r.body);
}

/// The section names the whole device (the `redfish` manager, its BMC and credentials); the
/// agent gets nothing but where the upstream is, its name and its registration account, plus
/// the one key its environment overrides (the section's BMC password is stale). The BMC's
/// resources reach the upstream through it. Reading sections needs ConfigureComponents,
/// writing them ConfigureManager, and a section may not redirect the agent.
#[tokio::test]
async fn an_agent_runs_on_the_section_its_upstream_keeps() {
    let t = CxlTrees::ours();
    let mut bmc_env = memory_server();
    bmc_env.push(("SUNFISH__STORAGE__SEED".into(), t.fm.display().to_string()));
    bmc_env.push(("SUNFISH__AUTH__ENABLED".into(), "true".into()));
    bmc_env.push(("SUNFISH__AUTH__ADMIN_PASSWORD".into(), BMC_PASSWORD.into()));
    let bmc = Server::start(free_port(), &bmc_env).await;
    let bmc_admin = as_user(&bmc.base, ("admin", BMC_PASSWORD));
    let r = bmc_admin.delete("/redfish/v1/EventService/Subscriptions/SunfishServer").await;
    assert!(r.status.is_success(), "{}", r.body);

    let (up, admin) = upstream().await;
    // The collection is served from the start, empty; it is not linked from the service.
    let c = get_ok(&admin, SECTIONS).await;
    assert_eq!(c["Members"], json!([]), "{c}");
    let service = get_ok(&admin, "/redfish/v1/AggregationService").await;
    assert!(!service.to_string().contains("AgentConfigurations"), "{service}");

    let section = json!({"Id": "BMC1", "Configuration": {
        "hardware": {"manager": "redfish", "options": {
            "url": bmc.base, "auth": "basic", "user": "admin", "password": "stale-password", "events": "off"}},
    }});
    // Writing needs ConfigureManager: the Operator may not.
    let operator = as_user(&up.base, OPERATOR);
    let r = operator.post(SECTIONS, &section).await;
    assert_eq!(r.status, 403, "{}", r.body);
    created(&admin.post(SECTIONS, &section).await);
    let uri = format!("{SECTIONS}/BMC1");
    // Reading needs ConfigureComponents: the Operator may, the viewer and the anonymous may not.
    assert_eq!(get_ok(&operator, &uri).await["Configuration"]["hardware"]["manager"], "redfish");
    let viewer = as_user(&up.base, VIEWER);
    assert_eq!(viewer.get(&uri).await.status, 403);
    assert_eq!(viewer.get(SECTIONS).await.status, 403);
    assert_eq!(up.get(&uri).await.status, 401);
    // A section may not say where the upstream is or widen what the agent may reach.
    let bad = json!({"Id": "X", "Configuration": {"agent": {"upstream": "http://127.0.0.1:9"}}});
    let r = admin.post(SECTIONS, &bad).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.to_string().contains("Configuration/agent/upstream"), "{}", r.body);
    let r = admin.patch(&uri, &json!({"Configuration": {"outbound": {"allow": ["*"]}}})).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = admin.post(SECTIONS, &json!({"Id": "Y", "Configuration": [1]})).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(get_ok(&admin, SECTIONS).await["Members@odata.count"], 1);

    let env = [
        ("SUNFISH_AGENT__AGENT__UPSTREAM_USER", OPERATOR.0),
        ("SUNFISH_AGENT__AGENT__UPSTREAM_PASSWORD", OPERATOR.1),
        ("SUNFISH_AGENT__HARDWARE__OPTIONS__PASSWORD", BMC_PASSWORD),
    ];
    let agent = Agent::start(Path::new("builtin"), &up.base, "BMC1", &env).await;
    assert!(agent.log().contains("configuration section fetched"), "{}", agent.log());
    let source = source_of(&admin, &agent).await;
    owned_by(&admin, "/redfish/v1/Systems/Host1", &source).await;
    owned_by(&admin, &format!("{FABRIC}/Switches/CXL1"), &source).await;
    assert_eq!(get_ok(&agent, "/redfish/v1/Systems/Host1").await["Id"], "Host1");
}

/// `central_config = "required"`: an agent started before its section exists waits for it
/// (not serving yet), then starts on it once the operator writes it: here an option of its
/// hardware manager (the mockup refuses every PATCH), which the upstream's clients then meet.
#[tokio::test]
async fn a_required_section_is_waited_for() {
    let t = CxlTrees::ours();
    let (up, admin) = upstream().await;
    let env = [
        ("SUNFISH_AGENT__AGENT__UPSTREAM_USER", OPERATOR.0),
        ("SUNFISH_AGENT__AGENT__UPSTREAM_PASSWORD", OPERATOR.1),
        ("SUNFISH_AGENT__AGENT__CENTRAL_CONFIG", "required"),
    ];
    let operator_writes_it = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let sources = get_ok(&admin, "/redfish/v1/AggregationService/AggregationSources").await;
        assert_eq!(sources["Members"], json!([]), "the agent registered without its section: {sources}");
        let section =
            json!({"Id": t.fm_name, "Configuration": {"hardware": {"options": {"fail_operations": ["PATCH"]}}}});
        created(&admin.post(SECTIONS, &section).await);
    };
    let (agent, ()) = tokio::join!(Agent::start(&t.fm, &up.base, t.fm_name, &env), operator_writes_it);
    assert!(agent.log().contains("waiting for the central configuration section"), "{}", agent.log());
    let source = source_of(&admin, &agent).await;
    owned_by(&admin, &format!("{FABRIC}/Switches/CXL1"), &source).await;
    let switch = format!("{FABRIC}/Switches/CXL1");
    let r = admin.patch(&switch, &json!({"AssetTag": "from-upstream"})).await;
    assert!(r.status.is_client_error() || r.status.is_server_error(), "{} {}", r.status, r.body);
    assert_ne!(get_ok(&agent, &switch).await["AssetTag"], "from-upstream");
    assert_ne!(get_ok(&admin, &switch).await["AssetTag"], "from-upstream");
}
