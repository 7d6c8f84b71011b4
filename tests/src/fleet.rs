//! Real `sunfish-server` and `sunfish-agent` processes on 127.0.0.1 for the aggregation e2e
//! tests (`tests/e2e/agent.rs` over the reference's CXL trees, `tests/e2e/agent_trees.rs` over
//! ours): a server on a port the test picks, agents seeded from a tree and registering with it,
//! and the waits and assertions on the merged CXL fabric both sets of trees share.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{
    agent_binary, assert_collection_consistent, eventually, server_command, shared_dir, workspace_root, Client,
};

/// The server's AggregationSources.
pub const SOURCES: &str = "/redfish/v1/AggregationService/AggregationSources";
/// The fabric both CXL agents upload.
pub const FABRIC: &str = "/redfish/v1/Fabrics/CXL";
/// Its Connections collection.
pub const CONNECTIONS: &str = "/redfish/v1/Fabrics/CXL/Connections";
/// How long the waits of these tests wait.
pub const WAIT: Duration = Duration::from_secs(20);
/// The server's liveness settings in these tests (ms): probe after 200, offline after 1000.
pub const LIVENESS: [(&str, &str); 3] = [
    ("SUNFISH__AGGREGATION__LIVENESS_INTERVAL_MS", "200"),
    ("SUNFISH__AGGREGATION__LIVENESS_TIMEOUT_MS", "1000"),
    ("SUNFISH__AGGREGATION__REQUEST_TIMEOUT_MS", "3000"),
];
/// `SUNFISH__AGGREGATION__LIVENESS_TIMEOUT_MS` of [`LIVENESS`].
pub const LIVENESS_TIMEOUT: Duration = Duration::from_millis(1000);

/// A fabric-manager and an appliance-manager tree that share fabric `CXL` (switches `CXL1` and
/// `CXL2`, boundary ports `F1`-`F4`), with what the tests need to know about them.
#[derive(Debug, Clone)]
pub struct CxlTrees {
    /// The fabric manager's tree (switch `CXL1`).
    pub fm: PathBuf,
    /// The appliance manager's tree (switch `CXL2`).
    pub am: PathBuf,
    /// ConnectionMethod name of the fabric-manager agent.
    pub fm_name: &'static str,
    /// ConnectionMethod name of the appliance-manager agent.
    pub am_name: &'static str,
    /// `UUID` of the shared Fabric.
    pub uuid: &'static str,
    /// A resource outside the fabric that only the fabric manager has.
    pub fm_sample: &'static str,
    /// A resource outside the fabric that only the appliance manager has.
    pub am_sample: &'static str,
    /// An initiator and a target endpoint in the fabric (for Connection bodies).
    pub endpoints: [&'static str; 2],
}

impl CxlTrees {
    /// The reference's trees in `../shared/mockups/sunfish`, read in place, or `None` (with a
    /// printed `SKIP test` line) when they are absent.
    pub fn reference(test: &str) -> Option<Self> {
        let Some(shared) = shared_dir() else {
            eprintln!("SKIP {test}: the shared mockups are not available");
            return None;
        };
        let m = shared.join("mockups/sunfish");
        Some(CxlTrees {
            fm: m.join("fm_agent_Resources"),
            am: m.join("am_agent_Resources"),
            fm_name: "CXL",
            am_name: "CXL2",
            uuid: "1af883ee-d4b7-400d-afb2-536d2c2aea31",
            fm_sample: "/redfish/v1/Systems/CXL-System1",
            am_sample: "/redfish/v1/Chassis/PooledCXLType3",
            endpoints: ["/redfish/v1/Fabrics/CXL/Endpoints/I1", "/redfish/v1/Fabrics/CXL/Endpoints/T1"],
        })
    }

    /// The project's own trees (`sunfish-agent/mockups`, see its README).
    pub fn ours() -> Self {
        let m = workspace_root().join("sunfish-agent/mockups");
        CxlTrees {
            fm: m.join("cxl-fabric-manager"),
            am: m.join("cxl-appliance"),
            fm_name: "CXL-FM",
            am_name: "CXL-APPL",
            uuid: "f47fc9d0-ecd3-5b55-8377-b539d57f4b54",
            fm_sample: "/redfish/v1/Systems/Host1",
            am_sample: "/redfish/v1/Chassis/MemoryAppliance",
            endpoints: ["/redfish/v1/Fabrics/CXL/Endpoints/Initiator1", "/redfish/v1/Fabrics/CXL/Endpoints/Target1"],
        }
    }

    /// A client body for a new Connection in the fabric, between [`CxlTrees::endpoints`].
    pub fn connection(&self, name: &str) -> Value {
        json!({"@odata.type": "#Connection.v1_3_0.Connection", "Name": name, "ConnectionType": "Memory",
            "Links": {"InitiatorEndpoints": [link(self.endpoints[0])], "TargetEndpoints": [link(self.endpoints[1])]}})
    }
}

/// A `sunfish-server` child process on a port chosen by the test (so agents can be pointed at
/// it before it starts, and it can be restarted where they look for it).
pub struct Server {
    /// Client for the server.
    pub client: Client,
    child: Child,
}

impl Server {
    /// Starts the server on `port` with auth off, the test's liveness settings and `env`;
    /// waits until it answers.
    pub async fn start(port: u16, env: &[(String, String)]) -> Self {
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
    pub async fn terminate(mut self) {
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
/// with `upstream` (`""`: with none) as ConnectionMethod `name`.
pub struct Agent {
    /// Client for the agent's own Redfish service.
    pub client: Client,
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
    pub async fn start(tree: &Path, upstream: &str, name: &str, env: &[(&str, &str)]) -> Self {
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
        if !upstream.is_empty() {
            cmd.args(["--upstream", upstream]);
        }
        cmd.args(["--name", name, "--listen", listen])
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
        let (child, log, url) = spawn_listening(cmd, "sunfish-agent").await;
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
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the agent and starts it again on the same address, with the same settings.
    pub async fn restart(mut self) -> Self {
        self.kill();
        let listen = self.client.addr().to_string();
        let env = std::mem::take(&mut self.env);
        Self::spawn(&self.tree.clone(), &self.upstream.clone(), &self.name.clone(), env, &listen).await
    }

    /// Everything the agent logged so far (for failure messages).
    pub fn log(&self) -> String {
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

/// Spawns `cmd` (stderr piped), keeps everything it logs, and waits for its `listening on
/// <URL>` line. Returns the child, its log so far (growing) and the URL.
pub async fn spawn_listening(mut cmd: Command, what: &str) -> (Child, Arc<Mutex<String>>, String) {
    cmd.stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
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
    let url = eventually(&format!("the `listening on` line of {what}"), WAIT, || {
        let got = rx.try_recv().ok();
        async move { got }
    })
    .await;
    (child, log, url)
}

/// A Redfish link object.
pub fn link(uri: &str) -> Value {
    json!({"@odata.id": uri})
}

/// `Oem.Sunfish_RM.ManagingAgent` of a stored object ("" when absent).
pub fn managing_agent(v: &Value) -> &str {
    v["Oem"]["Sunfish_RM"]["ManagingAgent"]["@odata.id"].as_str().unwrap_or("")
}

/// GET that must answer 200; returns the body.
pub async fn get_ok(c: &Client, uri: &str) -> Value {
    let r = c.get(uri).await;
    assert_eq!(r.status, 200, "GET {}{uri}: {}", c.base, r.body);
    r.body
}

/// The AggregationSource of the agent at `agent` (by HostName), once the server has one.
pub async fn source_of(s: &Client, agent: &Agent) -> String {
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
pub async fn owned_by(s: &Client, uri: &str, source: &str) -> Value {
    let what = format!("{uri} owned by {source}");
    eventually(&what, WAIT, || async move {
        let r = s.get(uri).await;
        (r.status == 200 && managing_agent(&r.body) == source).then_some(r.body)
    })
    .await
}

/// Waits until the AggregationSource `src` is in `Status.State` `state`; returns it.
pub async fn source_in_state(s: &Client, src: &str, state: &str, within: Duration) -> Value {
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
pub async fn both_agents(s: &Client, t: &CxlTrees, fm_env: &[(&str, &str)]) -> [(Agent, String); 2] {
    both_agents_with(s, t, fm_env, &[]).await
}

/// [`both_agents`], with `am_env` for the appliance-manager agent (registration credentials
/// when the server has authentication on, say).
pub async fn both_agents_with(
    s: &Client,
    t: &CxlTrees,
    fm_env: &[(&str, &str)],
    am_env: &[(&str, &str)],
) -> [(Agent, String); 2] {
    let fm = Agent::start(&t.fm, &s.base, t.fm_name, fm_env).await;
    let src_fm = source_of(s, &fm).await;
    owned_by(s, &format!("{FABRIC}/Switches/CXL1"), &src_fm).await;
    owned_by(s, FABRIC, &src_fm).await;
    let am = Agent::start(&t.am, &s.base, t.am_name, am_env).await;
    let src_am = source_of(s, &am).await;
    owned_by(s, &format!("{FABRIC}/Switches/CXL2"), &src_am).await;
    [(fm, src_fm), (am, src_am)]
}

/// Asserts the merged fabric: `CXL` (with the trees' UUID) owned by `owner`, shared with
/// `sharer`, both switches in it owned by their agents, each tree's sample resource owned by its
/// agent, and the boundary ports CXL1/F1 ↔ CXL2/F1 linked to each other.
pub async fn assert_merged_fabric(s: &Client, t: &CxlTrees, owner: &str, sharer: &str, src_fm: &str, src_am: &str) {
    let what = format!("{FABRIC} owned by {owner} and shared with {sharer}");
    let fabric = eventually(&what, WAIT, || async move {
        let v = s.get(FABRIC).await.body;
        (managing_agent(&v) == owner && v["Oem"]["Sunfish_RM"]["FabricSharedWith"] == json!([link(sharer)]))
            .then_some(v)
    })
    .await;
    assert_eq!(fabric["UUID"], t.uuid, "{fabric}");
    assert_eq!(assert_collection_consistent(s, "/redfish/v1/Fabrics").await, vec![FABRIC.to_string()]);
    // Members are in upload order (agents started together upload in either order).
    let mut switches = assert_collection_consistent(s, &format!("{FABRIC}/Switches")).await;
    switches.sort();
    assert_eq!(switches, vec![format!("{FABRIC}/Switches/CXL1"), format!("{FABRIC}/Switches/CXL2")]);
    owned_by(s, &format!("{FABRIC}/Switches/CXL1"), src_fm).await;
    owned_by(s, &format!("{FABRIC}/Switches/CXL2"), src_am).await;
    owned_by(s, t.fm_sample, src_fm).await;
    owned_by(s, t.am_sample, src_am).await;
    let p1 = get_ok(s, &format!("{FABRIC}/Switches/CXL1/Ports/F1")).await;
    assert_eq!(p1["Links"]["ConnectedSwitchPorts"], json!([link(&format!("{FABRIC}/Switches/CXL2/Ports/F1"))]), "{p1}");
    assert_eq!(p1["Links"]["ConnectedSwitches"], json!([link(&format!("{FABRIC}/Switches/CXL2"))]), "{p1}");
    let p2 = get_ok(s, &format!("{FABRIC}/Switches/CXL2/Ports/F1")).await;
    assert_eq!(p2["Links"]["ConnectedSwitchPorts"], json!([link(&format!("{FABRIC}/Switches/CXL1/Ports/F1"))]), "{p2}");
    assert_eq!(p2["Links"]["ConnectedSwitches"], json!([link(&format!("{FABRIC}/Switches/CXL1"))]), "{p2}");
}

/// Server environment for a memory store.
pub fn memory_server() -> Vec<(String, String)> {
    vec![("SUNFISH__STORAGE__BACKEND".into(), "memory".into())]
}
