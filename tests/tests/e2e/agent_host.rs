//! The agent host supervisor with real binaries on 127.0.0.1: an upstream `sunfish-server`,
//! a `sunfish-agent-host` running mockup agents as child processes, and its Redfish view
//! registered upstream like any agent. SIGKILL of a child → restarted and re-registered with
//! its restart counted; TargetState down/up through the upstream → the child stops (its
//! AggregationSource goes offline) and returns; a child whose hardware manager fails at start
//! is retried with growing backoff and marked unstable while the others keep running; SIGHUP
//! adds and removes instances.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sunfish_tests::fleet::{get_ok, memory_server, source_in_state, CxlTrees, Server, LIVENESS_TIMEOUT, SOURCES};
use sunfish_tests::{agent_binary, eventually, free_port, host_binary, Client};

const HOST: &str = "host1";
const INSTANCES: &str = "/redfish/v1/Managers/host1/Oem/Sunfish_RM/AgentInstances";
const WAIT: Duration = Duration::from_secs(20);

/// A running `sunfish-agent-host`.
struct Host {
    child: Child,
    /// Client for its view.
    view: Client,
    log: Arc<Mutex<String>>,
}

impl Host {
    /// Starts the supervisor of `file` and waits for its view's `listening on` line.
    async fn start(file: &Path) -> Self {
        let mut cmd = Command::new(host_binary());
        cmd.args(["--config"]).arg(file).stdout(Stdio::null());
        for (k, _) in std::env::vars() {
            if k.starts_with("SUNFISH_AGENT__") || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        let (child, log, url) = sunfish_tests::fleet::spawn_listening(cmd, "sunfish-agent-host").await;
        Host { child, view: Client::new(url), log }
    }

    fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args([sig, &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill {sig} {pid} failed");
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // SIGTERM so the children are stopped too, then make sure.
        self.signal("-TERM");
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One `[[instances]]` table: a mockup agent over `tree` (the builtin seed when `None`), or
/// with `extra` TOML lines for its config.
fn instance(name: &str, port: u16, tree: Option<&Path>, extra: &str) -> String {
    let mut s = format!("\n[[instances]]\nname = \"{name}\"\nlisten = \"127.0.0.1:{port}\"\ntarget = \"up\"\n");
    s.push_str("[instances.config.agent]\nheartbeat_ms = 200\nretry_max_ms = 400\n");
    if let Some(t) = tree {
        let _ = write!(s, "[instances.config.storage]\nseed = \"{}\"\n", t.display());
    }
    s.push_str(extra);
    s
}

/// A host file for `upstream` with `instances` (from [`instance`]), the view on a free port.
fn host_file(dir: &Path, upstream: &str, instances: &str) -> std::path::PathBuf {
    host_file_with(dir, upstream, free_port(), "", instances)
}

/// [`host_file`] with the view's port and extra sections of the supervisor's own (`[auth]`).
fn host_file_with(dir: &Path, upstream: &str, view: u16, own: &str, instances: &str) -> std::path::PathBuf {
    let text = format!(
        "{own}[server]\nlisten = \"127.0.0.1:{view}\"\n[agent]\nupstream = \"{upstream}\"\nname = \"{HOST}\"\nheartbeat_ms = 200\nretry_max_ms = 400\n\
         [host]\nagent_binary = \"{bin}\"\nstate_dir = \"{state}\"\ngrace_ms = 3000\nbackoff_initial_ms = 500\nbackoff_max_ms = 8000\nstable_after_ms = 4000\nstability_window_s = 60\n{instances}",
        bin = agent_binary().display(),
        state = dir.join("state").display(),
    );
    let f = dir.join("host.toml");
    std::fs::write(&f, text).unwrap_or_else(|e| panic!("{e}"));
    f
}

/// The AggregationSource registered by the agent listening on `port`, once there is one.
async fn source_at(s: &Client, port: u16) -> String {
    let host = format!("http://127.0.0.1:{port}");
    let what = format!("an AggregationSource for {host}");
    let host = host.as_str();
    eventually(&what, WAIT, || async move {
        for m in s.get(SOURCES).await.body["Members"].as_array().cloned().unwrap_or_default() {
            let uri = m["@odata.id"].as_str().unwrap_or_default().to_string();
            if s.get(&uri).await.body["HostName"] == host {
                return Some(uri);
            }
        }
        None
    })
    .await
}

/// Waits until `instance` (as `c` serves it) satisfies `ok`; returns it.
async fn instance_where(c: &Client, name: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let uri = format!("{INSTANCES}/{name}");
    let what = format!("{uri} {what}");
    let ok = &ok;
    let uri = uri.as_str();
    eventually(&what, WAIT, || async move {
        let r = c.get(uri).await;
        (r.status == 200 && ok(&r.body)).then_some(r.body)
    })
    .await
}

/// Three mockup agents under one supervisor: all register upstream, and so does the
/// supervisor's view (its instances readable upstream). SIGKILL one child → it is back and
/// re-registered (its AggregationSource Enabled again) within 10 s, restart count 1. Its
/// TargetState down through the upstream → the child stops and its AggregationSource goes
/// UnavailableOffline; up → it returns and is Enabled. SIGHUP after the file lost one
/// instance and gained another → the first stops, the second registers.
#[tokio::test]
async fn the_supervisor_keeps_three_agents_in_their_target_states() {
    let t = CxlTrees::ours();
    let up = Server::start(free_port(), &memory_server()).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let ports = [free_port(), free_port(), free_port()];
    let three = [
        instance("CXL-FM", ports[0], Some(&t.fm), ""),
        instance("CXL-APPL", ports[1], Some(&t.am), ""),
        instance("SPARE", ports[2], None, ""),
    ]
    .concat();
    let file = host_file(dir.path(), &up.base, &three);
    let host = Host::start(&file).await;

    let mut sources = Vec::new();
    for p in ports {
        let src = source_at(&up, p).await;
        source_in_state(&up, &src, "Enabled", WAIT).await;
        sources.push(src);
    }
    // The supervisor's view is aggregated too: every instance is visible upstream.
    let view_source =
        source_at(&up, host.view.addr().rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(0)).await;
    for name in ["CXL-FM", "CXL-APPL", "SPARE"] {
        let v = instance_where(&up, name, "Running upstream", |v| v["State"] == "Running").await;
        assert_eq!(v["Oem"]["Sunfish_RM"]["ManagingAgent"]["@odata.id"], view_source.as_str(), "{v}");
    }
    get_ok(&up, &format!("/redfish/v1/Managers/{HOST}")).await;

    // SIGKILL a child: back within 10 s, restarts 1, re-registered.
    let before = get_ok(&host.view, &format!("{INSTANCES}/CXL-APPL")).await;
    let pid = before["Pid"].as_u64().unwrap_or_else(|| panic!("no Pid: {before}")).to_string();
    let killed = Instant::now();
    let sent = Command::new("kill").args(["-KILL", &pid]).status();
    assert!(sent.is_ok_and(|s| s.success()));
    let back = instance_where(&host.view, "CXL-APPL", "restarted", |v| {
        v["State"] == "Running" && v["Restarts"] == 1 && v["Pid"].as_u64().is_some_and(|p| p.to_string() != pid)
    })
    .await;
    assert_eq!(back["LastExitStatus"], "killed by signal 9", "{back}");
    // Re-registered: the upstream answers its probe again, the source is Enabled; the
    // restarted agent uploaded again (its switch is there).
    let probe = Client::new(format!("http://127.0.0.1:{}", ports[1]));
    eventually("the restarted agent to answer", Duration::from_secs(10), || {
        let probe = probe.clone();
        async move {
            let r = probe.http.get(format!("{}/redfish/v1", probe.base)).send().await.ok()?;
            r.status().is_success().then_some(())
        }
    })
    .await;
    source_in_state(&up, &sources[1], "Enabled", Duration::from_secs(10)).await;
    assert!(killed.elapsed() < Duration::from_secs(10), "took {:?}", killed.elapsed());
    get_ok(&up, "/redfish/v1/Fabrics/CXL/Switches/CXL2").await;
    let upstream_copy = instance_where(&up, "CXL-APPL", "restart seen upstream", |v| v["Restarts"] == 1).await;
    assert_eq!(upstream_copy["State"], "Running");

    // Down through the upstream: the write is forwarded to the supervisor.
    let r = up.patch(&format!("{INSTANCES}/SPARE"), &json!({"TargetState": "down"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["TargetState"], "down", "{}", r.body);
    let stopped = instance_where(&host.view, "SPARE", "stopped", |v| v["State"] == "Stopped").await;
    assert_eq!(stopped["LastExitStatus"], "exit code 0", "SIGTERM ends an agent cleanly: {stopped}");
    assert_eq!(stopped["Restarts"], 0, "a stop asked for is no restart: {stopped}");
    source_in_state(&up, &sources[2], "UnavailableOffline", LIVENESS_TIMEOUT * 5).await;
    // Only TargetState may be written.
    let r = up.patch(&format!("{INSTANCES}/SPARE"), &json!({"Pid": 1})).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = host.view.patch(&format!("{INSTANCES}/SPARE"), &json!({"TargetState": "sideways"})).await;
    assert_eq!(r.status, 400, "{}", r.body);
    // Up again.
    let r = up.patch(&format!("{INSTANCES}/SPARE"), &json!({"TargetState": "up"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    instance_where(&host.view, "SPARE", "running again", |v| v["State"] == "Running").await;
    source_in_state(&up, &sources[2], "Enabled", WAIT).await;

    // Reload: SPARE leaves the file, NEW joins.
    let new_port = free_port();
    let two_and_new = [
        instance("CXL-FM", ports[0], Some(&t.fm), ""),
        instance("CXL-APPL", ports[1], Some(&t.am), ""),
        instance("NEW", new_port, None, ""),
    ]
    .concat();
    let _ = host_file_rewrite(&file, &three, &two_and_new);
    host.signal("-HUP");
    let new_source = source_at(&up, new_port).await;
    source_in_state(&up, &new_source, "Enabled", WAIT).await;
    source_in_state(&up, &sources[2], "UnavailableOffline", WAIT).await;
    eventually("SPARE gone from the view", WAIT, || {
        let c = host.view.clone();
        async move { (c.get(&format!("{INSTANCES}/SPARE")).await.status == 404).then_some(()) }
    })
    .await;
    assert!(host.log().contains("host file reloaded"), "{}", host.log());
}

/// Replaces the instances part of a host file (the view keeps its port).
fn host_file_rewrite(file: &Path, old: &str, new: &str) -> String {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{e}"));
    let text = text.replace(old, new);
    std::fs::write(file, &text).unwrap_or_else(|e| panic!("{e}"));
    text
}

/// A child whose hardware manager fails at start (a `redfish` manager whose device refuses
/// connections) is started again and again with growing backoff and reported Unstable, while
/// the two healthy agents keep running, registered, never restarted. PATCH of the Manager's
/// `Oem.Sunfish_RM.TargetState` sets every instance at once; supervisor shutdown stops all.
#[tokio::test]
async fn a_failing_agent_backs_off_and_the_others_keep_running() {
    let t = CxlTrees::ours();
    let up = Server::start(free_port(), &memory_server()).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let ports = [free_port(), free_port(), free_port()];
    let closed = free_port();
    let broken = format!(
        "[instances.config.hardware]\nmanager = \"redfish\"\n[instances.config.hardware.options]\nurl = \"http://127.0.0.1:{closed}\"\nevents = \"off\"\n"
    );
    let file = host_file(
        dir.path(),
        &up.base,
        &[
            instance("CXL-FM", ports[0], Some(&t.fm), ""),
            instance("BROKEN", ports[1], None, &broken),
            instance("CXL-APPL", ports[2], Some(&t.am), ""),
        ]
        .concat(),
    );
    let host = Host::start(&file).await;
    let healthy = [source_at(&up, ports[0]).await, source_at(&up, ports[2]).await];

    // Backoff grows with each quick exit: 500, 1000, 2000 ms...
    let mut seen: Vec<u64> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let unstable = loop {
        let v = host.view.get(&format!("{INSTANCES}/BROKEN")).await.body;
        if let Some(b) = v["BackoffMs"].as_u64().filter(|b| *b > 0) {
            if seen.last() != Some(&b) {
                seen.push(b);
            }
        }
        if v["Restarts"].as_u64().unwrap_or(0) >= 3 && v["Unstable"] == true {
            break v;
        }
        assert!(Instant::now() < deadline, "BROKEN not unstable after 30 s: {v}\n{}", host.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(seen.len() >= 2 && seen.windows(2).all(|w| w[1] > w[0]), "backoff did not grow: {seen:?} {unstable}");
    assert_eq!(seen[0], 500, "first restart after backoff_initial_ms: {seen:?}");
    assert_eq!(unstable["LastExitStatus"], "exit code 1", "{unstable}");
    assert!(unstable["Stability"].as_f64().unwrap_or(1.0) < 0.5, "{unstable}");
    // Upstream sees it too.
    instance_where(&up, "BROKEN", "unstable upstream", |v| v["Unstable"] == true).await;
    // The other two never stopped.
    for (name, src) in [("CXL-FM", &healthy[0]), ("CXL-APPL", &healthy[1])] {
        let v = get_ok(&host.view, &format!("{INSTANCES}/{name}")).await;
        assert_eq!(
            (v["State"].as_str(), v["Restarts"].as_u64(), v["Unstable"].as_bool()),
            (Some("Running"), Some(0), Some(false)),
            "{v}"
        );
        assert_eq!(get_ok(&up, src).await["Status"]["State"], "Enabled");
    }
    assert!(std::fs::read_to_string(dir.path().join("state/BROKEN.log")).unwrap_or_default().contains("127.0.0.1"));

    // Every instance down at once, through the upstream.
    let r = up
        .patch(&format!("/redfish/v1/Managers/{HOST}"), &json!({"Oem": {"Sunfish_RM": {"TargetState": "down"}}}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    for name in ["CXL-FM", "BROKEN", "CXL-APPL"] {
        instance_where(&host.view, name, "stopped", |v| v["State"] == "Stopped" && v["TargetState"] == "down").await;
    }
    for src in &healthy {
        source_in_state(&up, src, "UnavailableOffline", LIVENESS_TIMEOUT * 5).await;
    }
    // Shutdown stops children: bring two up, then SIGTERM the supervisor.
    let r = host.view.patch(&format!("{INSTANCES}/CXL-FM"), &json!({"TargetState": "up"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let running = instance_where(&host.view, "CXL-FM", "running", |v| v["State"] == "Running").await;
    let pid = running["Pid"].as_u64().unwrap_or(0);
    drop(host);
    let alive = Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z ");
    assert!(!alive, "child {pid} outlived its supervisor");
}

/// With authentication on in the view, writes need credentials there; the upstream, given the
/// host's credential in `[[aggregation.agent_credentials]]`, crawls it and forwards an
/// operator's PATCH of TargetState with it.
#[tokio::test]
async fn an_authenticated_view_is_controlled_through_the_upstream() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let view_port = free_port();
    let upstream_file = dir.path().join("upstream.toml");
    let credential = format!(
        "[[aggregation.agent_credentials]]\nurl = \"http://127.0.0.1:{view_port}\"\nuser = \"admin\"\npassword = \"host-admin-pw\"\n"
    );
    std::fs::write(&upstream_file, credential).unwrap_or_else(|e| panic!("{e}"));
    let mut env = memory_server();
    env.extend(sunfish_tests::fleet::LIVENESS.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let up = sunfish_tests::BinaryServer::start(&["--config", &upstream_file.display().to_string()], &env).await;
    let port = free_port();
    let own = "[auth]\nenabled = true\nadmin_password = \"host-admin-pw\"\n";
    let file = host_file_with(dir.path(), &up.base, view_port, own, &instance("ONE", port, None, ""));
    let host = Host::start(&file).await;
    source_at(&up, port).await;
    let view_source = source_at(&up, view_port).await;
    source_in_state(&up, &view_source, "Enabled", WAIT).await;
    instance_where(&up, "ONE", "Running upstream", |v| v["State"] == "Running").await;
    // Directly, without credentials: refused.
    let r = host.view.patch(&format!("{INSTANCES}/ONE"), &json!({"TargetState": "down"})).await;
    assert_eq!(r.status, 401, "{}", r.body);
    // Through the upstream, which holds the credential.
    let r = up.patch(&format!("{INSTANCES}/ONE"), &json!({"TargetState": "down"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    instance_where(&up, "ONE", "Stopped upstream", |v| v["State"] == "Stopped").await;
}
