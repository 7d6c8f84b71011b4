//! `sunfish-agent` (issue 6) end to end: the real `sunfish-server` and `sunfish-agent` binaries
//! on 127.0.0.1, the agents serving the reference's CXL trees (`../shared/mockups/sunfish`,
//! read in place through `storage.seed`) with the `mockup` hardware manager. Registration,
//! upload, the merged fabric, forwarded writes, injected hardware failures, liveness, agents
//! started first, and restarts of either side.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sunfish_tests::{
    agent_binary, assert_collection_consistent, assert_error_body, eventually, free_port, server_command, shared_dir,
    Client,
};

const SOURCES: &str = "/redfish/v1/AggregationService/AggregationSources";
const FABRIC: &str = "/redfish/v1/Fabrics/CXL";
const CONNECTIONS: &str = "/redfish/v1/Fabrics/CXL/Connections";
const WAIT: Duration = Duration::from_secs(20);
/// The server's liveness settings in these tests (ms): probe after 200, offline after 1000.
const LIVENESS: [(&str, &str); 3] = [
    ("SUNFISH__AGGREGATION__LIVENESS_INTERVAL_MS", "200"),
    ("SUNFISH__AGGREGATION__LIVENESS_TIMEOUT_MS", "1000"),
    ("SUNFISH__AGGREGATION__REQUEST_TIMEOUT_MS", "3000"),
];
const LIVENESS_TIMEOUT: Duration = Duration::from_millis(1000);

/// The reference's fabric-manager and appliance-manager trees, or `None` (skip).
fn mockups(test: &str) -> Option<(PathBuf, PathBuf)> {
    let Some(shared) = shared_dir() else {
        eprintln!("SKIP {test}: the shared mockups are not available");
        return None;
    };
    let m = shared.join("mockups/sunfish");
    Some((m.join("fm_agent_Resources"), m.join("am_agent_Resources")))
}

/// A `sunfish-server` child process on a port chosen by the test (so agents can be pointed at
/// it before it starts, and it can be restarted where they look for it).
struct Server {
    client: Client,
    child: Child,
}

impl Server {
    /// Starts the server on `port` with auth off, the test's liveness settings and `env`;
    /// waits until it answers.
    async fn start(port: u16, env: &[(String, String)]) -> Self {
        let listen = format!("127.0.0.1:{port}");
        let mut cmd = server_command();
        cmd.args(["--listen", &listen]).stdout(Stdio::null()).stderr(Stdio::null());
        cmd.env("SUNFISH__AUTH__ENABLED", "false");
        for (k, v) in LIVENESS {
            cmd.env(k, v);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn sunfish-server: {e}"));
        let server = Server { client: Client::new(format!("http://{listen}")), child };
        let probe = server.client.clone();
        eventually("the server to answer", WAIT, || {
            let probe = probe.clone();
            async move {
                let r = probe.http.get(format!("{}/redfish", probe.base)).send().await.ok()?;
                r.status().is_success().then_some(())
            }
        })
        .await;
        server
    }

    /// SIGTERM, then waits for a clean exit (the fs store is closed).
    async fn terminate(mut self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid} failed");
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "server exited with {status}");
                return;
            }
            assert!(Instant::now() < deadline, "server {pid} did not stop");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl std::ops::Deref for Server {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

/// A `sunfish-agent` child process serving `tree` (memory store seeded from it), registering
/// with `upstream` as ConnectionMethod `name`.
struct Agent {
    /// Client for the agent's own Redfish service.
    client: Client,
    child: Child,
    /// Everything it logged so far (for failure messages).
    log: Arc<Mutex<String>>,
    tree: PathBuf,
    upstream: String,
    name: String,
    env: Vec<(String, String)>,
}

impl Agent {
    /// Starts the agent on `127.0.0.1:0` and waits for its `listening on` line.
    async fn start(tree: &Path, upstream: &str, name: &str, env: &[(&str, &str)]) -> Self {
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Self::spawn(tree, upstream, name, env, "127.0.0.1:0").await
    }

    async fn spawn(tree: &Path, upstream: &str, name: &str, env: Vec<(String, String)>, listen: &str) -> Self {
        let mut cmd = Command::new(agent_binary());
        for (k, _) in std::env::vars() {
            if k.starts_with("SUNFISH_AGENT__") || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        cmd.args(["--upstream", upstream, "--name", name, "--listen", listen])
            .env("SUNFISH_AGENT__STORAGE__BACKEND", "memory")
            .env("SUNFISH_AGENT__STORAGE__SEED", tree)
            .env("SUNFISH_AGENT__AGENT__HEARTBEAT_MS", "200")
            .env("SUNFISH_AGENT__AGENT__RETRY_MAX_MS", "400")
            .env("SUNFISH_AGENT__LOG__LEVEL", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn sunfish-agent: {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        if let Some(stderr) = child.stderr.take() {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(url) = line.split("listening on ").nth(1).and_then(|s| s.split_whitespace().next()) {
                        let _ = tx.send(url.to_string());
                    }
                    if let Ok(mut l) = log.lock() {
                        l.push_str(&line);
                        l.push('\n');
                    }
                }
            });
        }
        let url = eventually("the agent's `listening on` line", WAIT, || {
            let got = rx.try_recv().ok();
            async move { got }
        })
        .await;
        Agent {
            client: Client::new(url),
            child,
            log,
            tree: tree.to_path_buf(),
            upstream: upstream.to_string(),
            name: name.to_string(),
            env,
        }
    }

    /// SIGKILL.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the agent and starts it again on the same address, with the same settings.
    async fn restart(mut self) -> Self {
        self.kill();
        let listen = self.client.addr().to_string();
        let env = std::mem::take(&mut self.env);
        Self::spawn(&self.tree.clone(), &self.upstream.clone(), &self.name.clone(), env, &listen).await
    }

    fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

impl std::ops::Deref for Agent {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

fn link(uri: &str) -> Value {
    json!({"@odata.id": uri})
}

fn managing_agent(v: &Value) -> &str {
    v["Oem"]["Sunfish_RM"]["ManagingAgent"]["@odata.id"].as_str().unwrap_or("")
}

async fn get_ok(c: &Client, uri: &str) -> Value {
    let r = c.get(uri).await;
    assert_eq!(r.status, 200, "GET {}{uri}: {}", c.base, r.body);
    r.body
}

/// The AggregationSource of the agent at `agent` (by HostName), once the server has one.
async fn source_of(s: &Client, agent: &Agent) -> String {
    let what = format!("an AggregationSource for {} ({}); agent log:\n{}", agent.base, agent.name, agent.log());
    let host = agent.base.as_str();
    eventually(&what, WAIT, || async move {
        let members = s.get(SOURCES).await.body["Members"].as_array().cloned().unwrap_or_default();
        for m in members {
            let uri = m["@odata.id"].as_str().unwrap_or_default().to_string();
            if s.get(&uri).await.body["HostName"] == host {
                return Some(uri);
            }
        }
        None
    })
    .await
}

/// Waits until `uri` is stored on the server and owned by `source`; returns it.
async fn owned_by(s: &Client, uri: &str, source: &str) -> Value {
    let what = format!("{uri} owned by {source}");
    eventually(&what, WAIT, || async move {
        let r = s.get(uri).await;
        (r.status == 200 && managing_agent(&r.body) == source).then_some(r.body)
    })
    .await
}

/// Waits until the AggregationSource `src` is in `Status.State` `state`; returns it.
async fn source_in_state(s: &Client, src: &str, state: &str, within: Duration) -> Value {
    let what = format!("{src} {state}");
    eventually(&what, within, || async move {
        let v = s.get(src).await.body;
        (v["Status"]["State"] == state).then_some(v)
    })
    .await
}

/// Starts the fabric-manager agent, waits until the server holds its fabric, then the
/// appliance-manager agent and waits until it shares the fabric. Returns both agents and their
/// AggregationSources.
async fn both_agents(s: &Client, fm_tree: &Path, am_tree: &Path, fm_env: &[(&str, &str)]) -> [(Agent, String); 2] {
    let fm = Agent::start(fm_tree, &s.base, "CXL", fm_env).await;
    let src_fm = source_of(s, &fm).await;
    owned_by(s, &format!("{FABRIC}/Switches/CXL1"), &src_fm).await;
    owned_by(s, FABRIC, &src_fm).await;
    let am = Agent::start(am_tree, &s.base, "CXL2", &[]).await;
    let src_am = source_of(s, &am).await;
    owned_by(s, &format!("{FABRIC}/Switches/CXL2"), &src_am).await;
    [(fm, src_fm), (am, src_am)]
}

/// Asserts the merged fabric: `CXL` owned by `owner`, shared with `sharer`, both switches in it
/// owned by their agents, and the boundary ports CXL1/F1 ↔ CXL2/F1 linked to each other.
async fn assert_merged_fabric(s: &Client, owner: &str, sharer: &str, src_fm: &str, src_am: &str) {
    let what = format!("{FABRIC} owned by {owner} and shared with {sharer}");
    let fabric = eventually(&what, WAIT, || async move {
        let v = s.get(FABRIC).await.body;
        (managing_agent(&v) == owner && v["Oem"]["Sunfish_RM"]["FabricSharedWith"] == json!([link(sharer)]))
            .then_some(v)
    })
    .await;
    assert_eq!(fabric["UUID"], "1af883ee-d4b7-400d-afb2-536d2c2aea31", "{fabric}");
    assert_eq!(assert_collection_consistent(s, "/redfish/v1/Fabrics").await, vec![FABRIC.to_string()]);
    let switches = assert_collection_consistent(s, &format!("{FABRIC}/Switches")).await;
    assert_eq!(switches, vec![format!("{FABRIC}/Switches/CXL1"), format!("{FABRIC}/Switches/CXL2")]);
    owned_by(s, &format!("{FABRIC}/Switches/CXL1"), src_fm).await;
    owned_by(s, &format!("{FABRIC}/Switches/CXL2"), src_am).await;
    owned_by(s, "/redfish/v1/Systems/CXL-System1", src_fm).await;
    owned_by(s, "/redfish/v1/Chassis/PooledCXLType3", src_am).await;
    let p1 = get_ok(s, &format!("{FABRIC}/Switches/CXL1/Ports/F1")).await;
    assert_eq!(p1["Links"]["ConnectedSwitchPorts"], json!([link(&format!("{FABRIC}/Switches/CXL2/Ports/F1"))]), "{p1}");
    assert_eq!(p1["Links"]["ConnectedSwitches"], json!([link(&format!("{FABRIC}/Switches/CXL2"))]), "{p1}");
    let p2 = get_ok(s, &format!("{FABRIC}/Switches/CXL2/Ports/F1")).await;
    assert_eq!(p2["Links"]["ConnectedSwitchPorts"], json!([link(&format!("{FABRIC}/Switches/CXL1/Ports/F1"))]), "{p2}");
    assert_eq!(p2["Links"]["ConnectedSwitches"], json!([link(&format!("{FABRIC}/Switches/CXL1"))]), "{p2}");
}

fn memory_server() -> Vec<(String, String)> {
    vec![("SUNFISH__STORAGE__BACKEND".into(), "memory".into())]
}

/// A client body for a new Connection in the CXL fabric.
fn connection(name: &str) -> Value {
    json!({"@odata.type": "#Connection.v1_3_0.Connection", "Name": name, "ConnectionType": "Memory",
        "Links": {"InitiatorEndpoints": [link(&format!("{FABRIC}/Endpoints/I1"))],
                  "TargetEndpoints": [link(&format!("{FABRIC}/Endpoints/T1"))]}})
}

/// Two agents over the reference's CXL trees register with the server and give one fabric
/// `CXL`, owned by the first, `FabricSharedWith` the second, both switches in it and the
/// boundary ports CXL1/F1 ↔ CXL2/F1 pointing at each other. Each agent serves its own
/// ConnectionMethod and a `SunfishServer` subscription carrying its AggregationSource Id.
#[tokio::test]
async fn agents_over_the_cxl_mockups_share_one_fabric() {
    let Some((fm_tree, am_tree)) = mockups("agents_over_the_cxl_mockups_share_one_fabric") else { return };
    let s = Server::start(free_port(), &memory_server()).await;
    let [(fm, src_fm), (am, src_am)] = both_agents(&s, &fm_tree, &am_tree, &[]).await;
    assert_merged_fabric(&s, &src_fm, &src_am, &src_fm, &src_am).await;
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
    let Some((fm_tree, am_tree)) = mockups("connection_writes_reach_the_owning_agent") else { return };
    let s = Server::start(free_port(), &memory_server()).await;
    let [(fm, src_fm), (am, src_am)] = both_agents(&s, &fm_tree, &am_tree, &[]).await;

    let r = s.post(CONNECTIONS, &connection("conn A")).await;
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
    assert_merged_fabric(&s, &src_fm, &src_am, &src_fm, &src_am).await;
}

/// A write the hardware manager refuses (`mockup` with `fail_operations`) comes back to the
/// client as an error with the injected status, and neither the agent nor the server changed.
#[tokio::test]
async fn hardware_failure_reaches_the_client_and_changes_nothing() {
    let Some((fm_tree, _)) = mockups("hardware_failure_reaches_the_client_and_changes_nothing") else { return };
    let s = Server::start(free_port(), &memory_server()).await;
    let fm = Agent::start(
        &fm_tree,
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

    let r = s.post(CONNECTIONS, &connection("refused")).await;
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
    let Some((fm_tree, _)) = mockups("killed_agent_goes_offline_and_comes_back") else { return };
    let s = Server::start(free_port(), &memory_server()).await;
    let mut fm = Agent::start(&fm_tree, &s.base, "CXL", &[]).await;
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
    let Some((fm_tree, am_tree)) = mockups("agents_started_before_the_server_register_once_it_is_up") else {
        return;
    };
    let port = free_port();
    let upstream = format!("http://127.0.0.1:{port}");
    let fm = Agent::start(&fm_tree, &upstream, "CXL", &[]).await;
    let am = Agent::start(&am_tree, &upstream, "CXL2", &[]).await;
    let s = Server::start(port, &memory_server()).await;
    let src_fm = source_of(&s, &fm).await;
    let src_am = source_of(&s, &am).await;
    owned_by(&s, &format!("{FABRIC}/Switches/CXL1"), &src_fm).await;
    owned_by(&s, &format!("{FABRIC}/Switches/CXL2"), &src_am).await;
    let owner = managing_agent(&get_ok(&s, FABRIC).await).to_string();
    let sharer = if owner == src_fm { src_am.clone() } else { src_fm.clone() };
    assert!(owner == src_fm || owner == src_am, "fabric owned by {owner}");
    assert_merged_fabric(&s, &owner, &sharer, &src_fm, &src_am).await;
    assert_eq!(assert_collection_consistent(&s, SOURCES).await.len(), 2);
}

/// A server restarted on its fs store still knows both agents (same AggregationSources,
/// `Enabled`), still holds their resources and the merged fabric, and still forwards to them.
#[tokio::test]
async fn server_restart_keeps_the_agents() {
    let Some((fm_tree, am_tree)) = mockups("server_restart_keeps_the_agents") else { return };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let env = sunfish_tests::fs_env(&dir.path().join("store"), false);
    let port = free_port();
    let s = Server::start(port, &env).await;
    let [(fm, src_fm), (am, src_am)] = both_agents(&s, &fm_tree, &am_tree, &[]).await;
    assert_merged_fabric(&s, &src_fm, &src_am, &src_fm, &src_am).await;
    s.terminate().await;

    let s = Server::start(port, &env).await;
    let mut sources = assert_collection_consistent(&s, SOURCES).await;
    sources.sort();
    let mut want = vec![src_fm.clone(), src_am.clone()];
    want.sort();
    assert_eq!(sources, want);
    assert_merged_fabric(&s, &src_fm, &src_am, &src_fm, &src_am).await;
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
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let mut cmd = Command::new(agent_binary());
    for (k, _) in std::env::vars() {
        if k.starts_with("SUNFISH_AGENT__") {
            cmd.env_remove(k);
        }
    }
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
    assert!(lines.iter().any(|l| l.starts_with("storage memory ")), "{text}");

    let conf = sunfish_tests::workspace_root().join("conf/agent.toml").display().to_string();
    let out = agent_cli(&["--check-config", &conf]);
    assert!(out.status.success(), "{conf}: {}", String::from_utf8_lossy(&out.stderr));

    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    for (text, want) in [
        ("[agent]\nupstreem = \"http://127.0.0.1:8000\"\n", "upstreem"),
        ("[hardware]\nmanager = \"bmc\"\n", "unknown hardware-manager \"bmc\" (registered: mockup)"),
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
