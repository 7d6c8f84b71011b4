//! `sunfish-agent` (issue 6) end to end: the real `sunfish-server` and `sunfish-agent` binaries
//! on 127.0.0.1, the agents serving the reference's CXL trees (`../shared/mockups/sunfish`,
//! read in place through `storage.seed`) with the `mockup` hardware manager. Registration,
//! upload, the merged fabric, forwarded writes, injected hardware failures, liveness, agents
//! started first, and restarts of either side. The harness is `sunfish_tests::fleet`.

use std::process::Command;
use std::time::Instant;

use serde_json::json;
use sunfish_tests::fleet::{
    assert_merged_fabric, both_agents, get_ok, link, managing_agent, memory_server, owned_by, source_in_state,
    source_of, Agent, CxlTrees, Server, CONNECTIONS, FABRIC, LIVENESS_TIMEOUT, SOURCES, WAIT,
};
use sunfish_tests::{agent_binary, assert_collection_consistent, assert_error_body, free_port};

/// Two agents over the reference's CXL trees register with the server and give one fabric
/// `CXL`, owned by the first, `FabricSharedWith` the second, both switches in it and the
/// boundary ports CXL1/F1 ↔ CXL2/F1 pointing at each other. Each agent serves its own
/// ConnectionMethod and a `SunfishServer` subscription carrying its AggregationSource Id.
#[tokio::test]
async fn agents_over_the_cxl_mockups_share_one_fabric() {
    let Some(t) = CxlTrees::reference("agents_over_the_cxl_mockups_share_one_fabric") else { return };
    let s = Server::start(free_port(), &memory_server()).await;
    let [(fm, src_fm), (am, src_am)] = both_agents(&s, &t, &[]).await;
    assert_merged_fabric(&s, &t, &src_fm, &src_am, &src_fm, &src_am).await;
    assert_eq!(assert_collection_consistent(&s, SOURCES).await.len(), 2);
    for (agent, src, cm) in [(&fm, &src_fm, "CXL"), (&am, &src_am, "CXL2")] {
        let m = get_ok(agent, &format!("/redfish/v1/AggregationService/ConnectionMethods/{cm}")).await;
        assert_eq!(m["ConnectionMethodType"], "Redfish", "{m}");
        let sub = get_ok(agent, "/redfish/v1/EventService/Subscriptions/SunfishServer").await;
        assert_eq!(sub["Destination"], format!("{}/EventListener", s.base), "{sub}");
        assert_eq!(Some(sub["Context"].as_str().unwrap_or_default()), src.rsplit('/').next(), "{sub}");
        assert_eq!(sub.get("RegistryPrefixes"), None, "the mockup's filter was not cleared: {sub}");
        let source = get_ok(&s, src).await;
        assert_eq!(source["Status"]["State"], "Enabled", "{source}");
        assert_eq!(
            source["Links"]["ConnectionMethod"],
            link(&format!("/redfish/v1/AggregationService/ConnectionMethods/{cm}"))
        );
    }
    // The agents' own services are not inventory.
    assert_eq!(s.get("/redfish/v1/EventService/Subscriptions/SunfishServer").await.status, 404);
}

/// A Connection created, patched and deleted through the server reaches the agent that owns
/// the fabric (its tree changes), and the server stores what the agent answered.
#[tokio::test]
async fn connection_writes_reach_the_owning_agent() {
    let Some(t) = CxlTrees::reference("connection_writes_reach_the_owning_agent") else { return };
    let s = Server::start(free_port(), &memory_server()).await;
    let [(fm, src_fm), (am, src_am)] = both_agents(&s, &t, &[]).await;

    let r = s.post(CONNECTIONS, &t.connection("conn A")).await;
    assert_eq!(r.status, 201, "{}\nfm log:\n{}", r.body, fm.log());
    let uri = r.header("location").to_string();
    assert!(uri.starts_with(&format!("{CONNECTIONS}/")), "Location {uri}");
    assert_eq!(managing_agent(&r.body), src_fm, "{}", r.body);
    let on_agent = get_ok(&fm, &uri).await;
    assert_eq!(on_agent["Name"], "conn A", "{on_agent}");
    assert_eq!(on_agent["ConnectionType"], "Memory", "{on_agent}");
    assert_eq!(
        on_agent["Oem"]["Sunfish_RM"].get("ManagingAgent"),
        None,
        "our bookkeeping reached the agent: {on_agent}"
    );
    assert_eq!(am.get(&uri).await.status, 404, "the create reached the wrong agent");
    let stored = get_ok(&s, &uri).await;
    assert_eq!(stored["Name"], "conn A", "{stored}");
    assert_eq!(managing_agent(&stored), src_fm, "{stored}");
    assert!(assert_collection_consistent(&s, CONNECTIONS).await.contains(&uri));

    let r = s.patch(&uri, &json!({"Name": "conn A2"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["Name"], "conn A2", "{}", r.body);
    assert_eq!(get_ok(&fm, &uri).await["Name"], "conn A2");
    let stored = get_ok(&s, &uri).await;
    assert_eq!(stored["Name"], "conn A2", "{stored}");
    assert_eq!(managing_agent(&stored), src_fm, "{stored}");

    let r = s.delete(&uri).await;
    assert!(r.status.is_success(), "{} {}", r.status, r.body);
    assert_eq!(fm.get(&uri).await.status, 404, "the agent still has {uri}");
    assert_eq!(s.get(&uri).await.status, 404, "the server still has {uri}");
    assert!(!assert_collection_consistent(&s, CONNECTIONS).await.contains(&uri));

    // Echoes of the agent's own events leave the merged fabric as it was.
    assert_merged_fabric(&s, &t, &src_fm, &src_am, &src_fm, &src_am).await;
}

/// A write the hardware manager refuses (`mockup` with `fail_operations`) comes back to the
/// client as an error with the injected status, and neither the agent nor the server changed.
#[tokio::test]
async fn hardware_failure_reaches_the_client_and_changes_nothing() {
    let Some(t) = CxlTrees::reference("hardware_failure_reaches_the_client_and_changes_nothing") else { return };
    let s = Server::start(free_port(), &memory_server()).await;
    let fm = Agent::start(
        &t.fm,
        &s.base,
        "CXL",
        &[
            ("SUNFISH_AGENT__HARDWARE__OPTIONS__FAIL_OPERATIONS", "POST,PATCH,DELETE"),
            ("SUNFISH_AGENT__HARDWARE__OPTIONS__FAIL_STATUS", "503"),
        ],
    )
    .await;
    let src = source_of(&s, &fm).await;
    let switch = format!("{FABRIC}/Switches/CXL1");
    let before = owned_by(&s, &switch, &src).await;
    let agent_before = get_ok(&fm, &switch).await;

    let r = s.post(CONNECTIONS, &t.connection("refused")).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_error_body(&r);
    assert!(r.body["error"]["message"].as_str().unwrap_or_default().contains("injected failure"), "{}", r.body);
    let r = s.patch(&switch, &json!({"Name": "renamed"})).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_error_body(&r);
    let r = s.delete(&switch).await;
    assert_eq!(r.status, 503, "{}", r.body);

    assert_eq!(get_ok(&s, &switch).await, before, "the server's copy changed");
    assert_eq!(get_ok(&fm, &switch).await, agent_before, "the agent's tree changed");
    let coll = s.get(CONNECTIONS).await;
    assert!(coll.status == 404 || coll.body["Members"] == json!([]), "{}", coll.body);
    assert_eq!(fm.get(CONNECTIONS).await.status, 404);
}

/// A killed agent's AggregationSource turns `UnavailableOffline` within the configured liveness
/// timeout; the agent restarted on the same address makes it `Enabled` again, with no second
/// AggregationSource or ConnectionMethod and its inventory in place.
#[tokio::test]
async fn killed_agent_goes_offline_and_comes_back() {
    let Some(t) = CxlTrees::reference("killed_agent_goes_offline_and_comes_back") else { return };
    let s = Server::start(free_port(), &memory_server()).await;
    let mut fm = Agent::start(&t.fm, &s.base, "CXL", &[]).await;
    let src = source_of(&s, &fm).await;
    owned_by(&s, &format!("{FABRIC}/Switches/CXL1"), &src).await;
    source_in_state(&s, &src, "Enabled", WAIT).await;

    fm.kill();
    let killed = Instant::now();
    let down = source_in_state(&s, &src, "UnavailableOffline", LIVENESS_TIMEOUT * 5).await;
    assert_eq!(down["Status"]["Health"], "Critical", "{down}");
    assert!(killed.elapsed() >= LIVENESS_TIMEOUT / 2, "offline too early: {:?}", killed.elapsed());

    let fm = fm.restart().await;
    let up = source_in_state(&s, &src, "Enabled", WAIT).await;
    assert_eq!(up["Status"]["Health"], "OK", "{up}");
    assert_eq!(source_of(&s, &fm).await, src, "the restarted agent got another AggregationSource");
    assert_eq!(assert_collection_consistent(&s, SOURCES).await, vec![src.clone()]);
    assert_eq!(
        assert_collection_consistent(&s, "/redfish/v1/AggregationService/ConnectionMethods").await,
        vec!["/redfish/v1/AggregationService/ConnectionMethods/CXL".to_string()]
    );
    owned_by(&s, &format!("{FABRIC}/Switches/CXL1"), &src).await;
    owned_by(&s, FABRIC, &src).await;
    // Still in sync: a write through the server reaches the restarted agent.
    let r = s.patch(&format!("{FABRIC}/Switches/CXL1"), &json!({"Name": "after restart"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(get_ok(&fm, &format!("{FABRIC}/Switches/CXL1")).await["Name"], "after restart");
}

/// Agents started before the server retry until it is up, then register and upload: the
/// merged fabric appears (owned by whichever registered first, shared with the other).
#[tokio::test]
async fn agents_started_before_the_server_register_once_it_is_up() {
    let Some(t) = CxlTrees::reference("agents_started_before_the_server_register_once_it_is_up") else {
        return;
    };
    let port = free_port();
    let upstream = format!("http://127.0.0.1:{port}");
    let fm = Agent::start(&t.fm, &upstream, "CXL", &[]).await;
    let am = Agent::start(&t.am, &upstream, "CXL2", &[]).await;
    let s = Server::start(port, &memory_server()).await;
    let src_fm = source_of(&s, &fm).await;
    let src_am = source_of(&s, &am).await;
    owned_by(&s, &format!("{FABRIC}/Switches/CXL1"), &src_fm).await;
    owned_by(&s, &format!("{FABRIC}/Switches/CXL2"), &src_am).await;
    let owner = managing_agent(&get_ok(&s, FABRIC).await).to_string();
    let sharer = if owner == src_fm { src_am.clone() } else { src_fm.clone() };
    assert!(owner == src_fm || owner == src_am, "fabric owned by {owner}");
    assert_merged_fabric(&s, &t, &owner, &sharer, &src_fm, &src_am).await;
    assert_eq!(assert_collection_consistent(&s, SOURCES).await.len(), 2);
}

/// A server restarted on its fs store still knows both agents (same AggregationSources,
/// `Enabled`), still holds their resources and the merged fabric, and still forwards to them.
#[tokio::test]
async fn server_restart_keeps_the_agents() {
    let Some(t) = CxlTrees::reference("server_restart_keeps_the_agents") else { return };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let env = sunfish_tests::fs_env(&dir.path().join("store"), false);
    let port = free_port();
    let s = Server::start(port, &env).await;
    let [(fm, src_fm), (am, src_am)] = both_agents(&s, &t, &[]).await;
    assert_merged_fabric(&s, &t, &src_fm, &src_am, &src_fm, &src_am).await;
    s.terminate().await;

    let s = Server::start(port, &env).await;
    let mut sources = assert_collection_consistent(&s, SOURCES).await;
    sources.sort();
    let mut want = vec![src_fm.clone(), src_am.clone()];
    want.sort();
    assert_eq!(sources, want);
    assert_merged_fabric(&s, &t, &src_fm, &src_am, &src_fm, &src_am).await;
    for src in [&src_fm, &src_am] {
        source_in_state(&s, src, "Enabled", WAIT).await;
    }
    // The agents saw the same AggregationSources and did not register anew.
    assert_eq!(source_of(&s, &fm).await, src_fm);
    assert_eq!(source_of(&s, &am).await, src_am);
    let r = s.patch(&format!("{FABRIC}/Switches/CXL2"), &json!({"Name": "after server restart"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(get_ok(&am, &format!("{FABRIC}/Switches/CXL2")).await["Name"], "after server restart");
    assert_eq!(assert_collection_consistent(&s, SOURCES).await.len(), 2);
}

/// Runs the agent binary with `args` in a fresh directory, without inherited agent variables.
fn agent_cli(args: &[&str]) -> std::process::Output {
    agent_cli_env(args, &[])
}

/// [`agent_cli`] with extra environment variables.
fn agent_cli_env(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let mut cmd = Command::new(agent_binary());
    for (k, _) in std::env::vars() {
        if k.starts_with("SUNFISH_AGENT__") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.args(args).current_dir(tmp.path()).output().unwrap_or_else(|e| panic!("running sunfish-agent: {e}"))
}

/// `sunfish-agent --list-plugins` lists hardware managers with the core's plugin kinds, sorted;
/// `--check-config` accepts `conf/agent.toml` and refuses an unknown key or hardware manager,
/// naming it.
#[test]
fn agent_cli_lists_plugins_and_checks_configs() {
    let out = agent_cli(&["--list-plugins"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted, "not sorted:\n{text}");
    assert!(lines.iter().any(|l| l.starts_with("hardware-manager mockup ")), "{text}");
    assert!(lines.iter().any(|l| l.starts_with("hardware-manager redfish ")), "{text}");
    assert!(lines.iter().any(|l| l.starts_with("storage memory ")), "{text}");

    // The redfish example keeps its password out of the file, as it advises.
    let password = [("SUNFISH_AGENT__HARDWARE__OPTIONS__PASSWORD", "pw")];
    for (name, env) in [("conf/agent.toml", &[][..]), ("conf/agent-redfish.toml", &password[..])] {
        let conf = sunfish_tests::workspace_root().join(name).display().to_string();
        let out = agent_cli_env(&["--check-config", &conf], env);
        assert!(out.status.success(), "{conf}: {}", String::from_utf8_lossy(&out.stderr));
    }

    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    for (text, want) in [
        ("[agent]\nupstreem = \"http://127.0.0.1:8000\"\n", "upstreem"),
        ("[hardware]\nmanager = \"bmc\"\n", "unknown hardware-manager \"bmc\" (registered: mockup, redfish)"),
        ("[hardware.options]\nfail_operations = [\"GET\"]\n", "fail_operations"),
    ] {
        let file = tmp.path().join("bad.toml");
        std::fs::write(&file, text).unwrap_or_else(|e| panic!("{e}"));
        let out = agent_cli(&["--check-config", &file.display().to_string()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text:?} was accepted");
        assert!(stderr.contains(want), "{text:?}: stderr does not say {want}: {stderr}");
    }
}
