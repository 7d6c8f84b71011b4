//! Crash safety of the fs backend with the real binary (issue 10): a write storm is SIGKILLed
//! mid-way; afterwards every file parses, the restarted service's collections match the
//! resources on disk exactly, and every acknowledged write is there.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use sunfish_core::resource::is_collection;
use sunfish_tests::{
    assert_collection_consistent, eventually, fs_env, index_files, uri_of_index, BinaryServer, Client,
};

/// Writer tasks per storm.
const TASKS: usize = 6;
/// Acknowledged writes after which the server is killed.
const KILL_AFTER: usize = 150;
/// Storm, kill, check, restart: this many times on one store.
const ROUNDS: usize = 2;

/// What a path holds: nothing, a system with its `Counter`, or a Memory member.
#[derive(Debug, Clone, PartialEq)]
enum St {
    Absent,
    Counter(u64),
    Present,
}

/// What one writer task saw: the state of each path after its last acknowledged write, the
/// effects of the write that was in flight when the server died, and any non-2xx answer.
#[derive(Debug, Default)]
struct TaskLog {
    acked: BTreeMap<String, St>,
    in_flight: Vec<(String, St)>,
    unexpected: Vec<String>,
}

impl TaskLog {
    /// Sends one write; returns whether to go on.
    async fn op(
        &mut self,
        c: &Client,
        acks: &AtomicUsize,
        method: Method,
        path: &str,
        body: Option<Value>,
        effects: Vec<(String, St)>,
    ) -> bool {
        match c.try_send(method.clone(), path, body.as_ref(), &[]).await {
            Ok(r) if r.status.is_success() => {
                self.acked.extend(effects);
                acks.fetch_add(1, Ordering::SeqCst);
                true
            }
            Ok(r) => {
                self.unexpected.push(format!("{method} {path} → {} {}", r.status, r.body));
                self.in_flight = effects;
                false
            }
            Err(_) => {
                self.in_flight = effects;
                false
            }
        }
    }
}

/// One writer: creates systems, patches them, adds Memory subcollections, deletes its previous
/// system (with its subtree), until the server stops answering.
async fn writer(c: Client, round: usize, task: usize, acks: Arc<AtomicUsize>) -> TaskLog {
    let mut log = TaskLog::default();
    let mut previous: Option<(String, bool)> = None;
    for k in 0usize.. {
        let id = format!("r{round}t{task}k{k}");
        let sys = format!("/redfish/v1/Systems/{id}");
        let body = json!({"@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem", "Id": id, "Counter": 0,
            "Links": {"Chassis": []}});
        if !log
            .op(&c, &acks, Method::POST, "/redfish/v1/Systems", Some(body), vec![(sys.clone(), St::Counter(0))])
            .await
        {
            break;
        }
        let patch = json!({"Counter": 1, "Status": {"State": "Enabled"}});
        if !log.op(&c, &acks, Method::PATCH, &sys, Some(patch), vec![(sys.clone(), St::Counter(1))]).await {
            break;
        }
        let with_memory = k % 2 == 0;
        if with_memory {
            let mem = json!({"@odata.type": "#Memory.v1_20_0.Memory", "Id": "m"});
            let effects = vec![(format!("{sys}/Memory/m"), St::Present)];
            if !log.op(&c, &acks, Method::POST, &format!("{sys}/Memory"), Some(mem), effects).await {
                break;
            }
        }
        if k % 3 == 2 {
            if let Some((prev, had_memory)) = previous.take() {
                let mut effects = vec![(prev.clone(), St::Absent)];
                if had_memory {
                    effects.push((format!("{prev}/Memory/m"), St::Absent));
                }
                if !log.op(&c, &acks, Method::DELETE, &prev, None, effects).await {
                    break;
                }
            }
        }
        previous = Some((sys, with_memory));
    }
    log
}

/// (a) Every `index.json` under `root` parses as a JSON object. (There may be none yet: the
/// write-ahead log holds what no checkpoint has written, the seed included.)
fn assert_all_files_parse(root: &Path) {
    for f in index_files(root) {
        let bytes = std::fs::read(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let v: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{} does not parse after the crash: {e}", f.display()));
        assert!(v.is_object(), "{} is not an object", f.display());
    }
}

/// (b) After restart: every file is served as it is on disk, and every collection's Members
/// equal exactly the member folders present on disk (no folder left behind unlisted, no member
/// without its folder), each answering 200, with a matching count.
async fn assert_store_consistent(root: &Path, c: &Client) {
    let files = index_files(root);
    assert!(!files.is_empty(), "no index.json under {} after the restart's replay", root.display());
    for f in files {
        let uri = uri_of_index(root, &f);
        let on_disk: Value = serde_json::from_slice(&std::fs::read(&f).unwrap_or_default()).unwrap_or_default();
        let r = c.get(&uri).await;
        assert_eq!(r.status, 200, "{uri} is on disk but not served");
        assert_eq!(r.body, on_disk, "{uri} is served differently from its file");
        if !is_collection(&on_disk) {
            continue;
        }
        let dir = f.parent().unwrap_or(root);
        let mut folders = BTreeSet::new();
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // Any folder (with or without index.json) below a collection must be a member.
            if !name.starts_with('.') && e.file_type().is_ok_and(|t| t.is_dir()) {
                folders.insert(format!("{uri}/{name}"));
            }
        }
        let listed: BTreeSet<String> = assert_collection_consistent(c, &uri).await.into_iter().collect();
        assert_eq!(listed, folders, "{uri}: Members differ from the member folders on disk");
    }
}

/// What a path holds now, by GET.
async fn observe(c: &Client, path: &str) -> St {
    let r = c.get(path).await;
    match r.status.as_u16() {
        404 => St::Absent,
        200 => r.body["Counter"].as_u64().map_or(St::Present, St::Counter),
        s => panic!("GET {path} → {s}: {}", r.body),
    }
}

/// SIGKILL in the middle of a storm of POSTs, PATCHes and DELETEs from several tasks (fs with
/// fsync, real binary), twice on one store: afterwards every `index.json` parses; the restarted
/// service serves each file as it is, every collection's Members equal exactly the member
/// folders on disk (each answering 200) with a matching count; every write acknowledged before
/// the kill is present (the write in flight may or may not be); and the store takes new writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_mid_storm_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let root = dir.path().join("store");
    let env = fs_env(&root, true);
    let mut server = BinaryServer::start_env(&[], &env).await;
    let mut baseline: BTreeMap<String, St> = BTreeMap::new();

    for round in 0..ROUNDS {
        let acks = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> =
            (0..TASKS).map(|t| tokio::spawn(writer(server.client.clone(), round, t, acks.clone()))).collect();
        eventually("the storm to reach its kill point", Duration::from_secs(60), || {
            let ready = acks.load(Ordering::SeqCst) >= KILL_AFTER || handles.iter().all(|h| h.is_finished());
            async move { ready.then_some(()) }
        })
        .await;
        server.kill();
        let mut logs = Vec::new();
        for h in handles {
            logs.push(h.await.unwrap_or_else(|e| panic!("writer task: {e}")));
        }
        let unexpected: Vec<&String> = logs.iter().flat_map(|l| &l.unexpected).collect();
        assert!(unexpected.is_empty(), "round {round}: writes refused during the storm: {unexpected:#?}");
        assert!(acks.load(Ordering::SeqCst) >= KILL_AFTER, "round {round}: the storm ended before the kill");
        let interrupted = logs.iter().filter(|l| !l.in_flight.is_empty()).count();
        assert!(interrupted > 0, "round {round}: no write was in flight at the kill");
        eprintln!(
            "round {round}: killed after {} acknowledged writes with {interrupted} in flight",
            acks.load(Ordering::SeqCst)
        );

        assert_all_files_parse(&root);
        server = BinaryServer::start_env(&[], &env).await;
        assert_store_consistent(&root, &server.client).await;

        let mut expect: BTreeMap<String, Vec<St>> =
            baseline.iter().map(|(p, s)| (p.clone(), vec![s.clone()])).collect();
        for log in &logs {
            for (p, s) in &log.acked {
                expect.insert(p.clone(), vec![s.clone()]);
            }
        }
        for log in &logs {
            for (p, s) in &log.in_flight {
                expect.entry(p.clone()).or_insert_with(|| vec![St::Absent]).push(s.clone());
            }
        }
        let mut lost = Vec::new();
        baseline.clear();
        for (path, allowed) in &expect {
            let seen = observe(&server.client, path).await;
            if !allowed.contains(&seen) {
                lost.push(format!("{path}: expected one of {allowed:?}, found {seen:?}"));
            }
            baseline.insert(path.clone(), seen);
        }
        assert!(lost.is_empty(), "round {round}: acknowledged writes lost or changed: {lost:#?}");
    }

    // The recovered store takes writes.
    let r = server.post("/redfish/v1/Systems", &json!({"@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem"})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_collection_consistent(&server.client, "/redfish/v1/Systems").await;
    server.kill();
}
