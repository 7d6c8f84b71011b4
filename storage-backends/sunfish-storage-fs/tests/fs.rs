//! Behaviour of the `fs` backend beyond the shared contract: what is on disk, what survives a
//! restart or a crash, and what stays outside the root.

// Test helpers outside #[test] functions panic on purpose too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};
use sunfish_core::test_util::fixture;
use sunfish_core::{Error, PluginOptions, ResourcePath, StorageBackend, StorageBackendRegistration};
use sunfish_storage_fs::{FsBackend, FsOptions};

fn p(s: &str) -> ResourcePath {
    ResourcePath::parse(s).unwrap()
}

async fn open(root: &Path) -> FsBackend {
    FsBackend::open(FsOptions { root: root.to_path_buf(), fsync: true, ..FsOptions::default() }).await.unwrap()
}

/// Every path and value of a backend.
async fn contents(b: &FsBackend) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for path in b.paths().await.unwrap() {
        out.insert(path.to_string(), b.get(&path).await.unwrap().value().into_owned());
    }
    out
}

/// What is on disk below `dir`, without following links: file bytes, folders, link targets.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path.strip_prefix(base).unwrap().to_path_buf();
            let ft = entry.file_type().unwrap();
            if ft.is_symlink() {
                out.insert(rel, format!("link -> {}", std::fs::read_link(&path).unwrap().display()));
            } else if ft.is_dir() {
                out.insert(rel, "dir".into());
                walk(base, &path, out);
            } else {
                out.insert(rel, format!("file {:?}", std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn system(path: &str) -> Value {
    let id = path.rsplit('/').next().unwrap();
    json!({"@odata.id": path, "@odata.type": "#ComputerSystem.v1_22_0.ComputerSystem", "Id": id})
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Resources (with their Members) and private records survive close and reopen, files are
/// 4-space pretty JSON in the reference layout, and no journal is left behind.
#[tokio::test]
async fn persists_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path()).await;
    b.import(fixture()).await.unwrap();
    b.create(&p("/redfish/v1/Systems"), system("/redfish/v1/Systems/2"), None).await.unwrap();
    b.patch(&p("/redfish/v1/Systems/2"), json!({"Name": "two"}), None).await.unwrap();
    b.delete(&p("/redfish/v1/Systems/1"), None).await.unwrap();
    b.kv_put("sessions", "a", json!({"user": "x"})).await.unwrap();
    b.kv_put("sessions", "b", json!(2)).await.unwrap();
    b.kv_delete("sessions", "b").await.unwrap();
    let before = contents(&b).await;
    let revision = b.get(&p("/redfish/v1/Systems/2")).await.unwrap().revision();
    b.close().await.unwrap();

    let root = dir.path();
    assert!(!root.join(".sunfish/journal.json").exists());
    assert!(!root.join("Systems/1").exists(), "a deleted resource's folder is removed");
    let file = std::fs::read_to_string(root.join("Systems/2/index.json")).unwrap();
    let expected = "{\n    \"@odata.id\": \"/redfish/v1/Systems/2\",\n    \"@odata.type\": \"#ComputerSystem.v1_22_0.ComputerSystem\",\n    \"Id\": \"2\",\n    \"Name\": \"two\"\n}\n";
    assert_eq!(file, expected);
    let records: Value =
        serde_json::from_slice(&std::fs::read(root.join(".sunfish/records/sessions.json")).unwrap()).unwrap();
    assert_eq!(records, json!({"a": {"user": "x"}}), "one file per record namespace");

    let b = open(dir.path()).await;
    assert_eq!(contents(&b).await, before);
    let systems = b.get(&p("/redfish/v1/Systems")).await.unwrap();
    assert_eq!(systems.value()["Members"], json!([{"@odata.id": "/redfish/v1/Systems/2"}]));
    assert_eq!(systems.value()["Members@odata.count"], 1);
    assert_eq!(b.kv_list("sessions").await.unwrap(), vec![("a".to_string(), json!({"user": "x"}))]);
    assert_ne!(b.get(&p("/redfish/v1/Systems/2")).await.unwrap().revision(), revision, "ETags move on after a restart");
    b.close().await.unwrap();
}

/// A store of an earlier version, with one file per record (`.sunfish/kv/<ns>/<key>.json`),
/// is read as it is; the first checkpoint that changes a namespace writes its records file and
/// removes its old folder; a namespace nobody changes keeps its old files.
#[tokio::test]
async fn records_of_earlier_versions_are_read_and_moved() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path()).await;
    b.import(fixture()).await.unwrap();
    b.close().await.unwrap();
    drop(b);
    write(&dir.path().join(".sunfish/kv/sessions/a.json"), br#"{"user": "x"}"#);
    write(&dir.path().join(".sunfish/kv/sessions/b.json"), b"2");
    write(&dir.path().join(".sunfish/kv/aliases/k.json"), b"[1]");

    let b = open(dir.path()).await;
    assert_eq!(
        b.kv_list("sessions").await.unwrap(),
        vec![("a".to_string(), json!({"user": "x"})), ("b".to_string(), json!(2))]
    );
    b.kv_delete("sessions", "b").await.unwrap();
    b.close().await.unwrap();
    drop(b);
    assert!(!dir.path().join(".sunfish/kv/sessions").exists(), "the old folder is gone");
    assert!(dir.path().join(".sunfish/kv/aliases/k.json").is_file(), "untouched namespaces stay");
    let b = open(dir.path()).await;
    assert_eq!(b.kv_list("sessions").await.unwrap(), vec![("a".to_string(), json!({"user": "x"}))]);
    assert_eq!(b.kv_get("aliases", "k").await.unwrap(), Some(json!([1])));
}

/// A complete journal found at open is applied (puts, folder removals, records) and deleted.
#[tokio::test]
async fn journal_is_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path()).await;
    b.import(fixture()).await.unwrap();
    b.close().await.unwrap();
    drop(b);

    // As if the process died after journaling, before applying.
    let journal = json!({"format": "sunfish-fs-journal/1", "entries": [
        {"op": "put", "path": "/redfish/v1/Systems/9", "value": system("/redfish/v1/Systems/9")},
        {"op": "put", "path": "/redfish/v1/Systems", "value": {"@odata.id": "/redfish/v1/Systems",
            "@odata.type": "#ComputerSystemCollection.ComputerSystemCollection",
            "Members": [{"@odata.id": "/redfish/v1/Systems/9"}], "Members@odata.count": 1}},
        {"op": "remove", "path": "/redfish/v1/Systems/1"},
        {"op": "remove", "path": "/redfish/v1/Systems/1/Bios"},
        {"op": "kv_put", "ns": "aliases", "key": "k", "value": {"v": 1}},
    ]});
    let jpath = dir.path().join(".sunfish/journal.json");
    write(&jpath, &serde_json::to_vec(&journal).unwrap());

    let b = open(dir.path()).await;
    assert!(!jpath.exists(), "the journal is deleted once applied");
    assert_eq!(*b.get(&p("/redfish/v1/Systems/9")).await.unwrap().value(), system("/redfish/v1/Systems/9"));
    assert_eq!(b.get(&p("/redfish/v1/Systems")).await.unwrap().value()["Members@odata.count"], 1);
    assert!(matches!(b.get(&p("/redfish/v1/Systems/1")).await, Err(Error::NotFound { .. })));
    assert!(!dir.path().join("Systems/1").exists());
    assert_eq!(b.kv_get("aliases", "k").await.unwrap(), Some(json!({"v": 1})));
    assert!(dir.path().join("Systems/9/index.json").is_file());
}

async fn open_with(root: &Path, checkpoint_ms: u64) -> FsBackend {
    FsBackend::open(FsOptions { root: root.to_path_buf(), fsync: true, checkpoint_ms }).await.unwrap()
}

/// The write-ahead log found at open is replayed onto the files: puts, appends (one already
/// listed in the file, as after a crash mid-checkpoint, is not listed twice), unlists (one of a
/// member not listed changes nothing), removals and
/// records; a torn last line (never acknowledged) is dropped; the files are then written and
/// the log emptied.
#[tokio::test]
async fn log_is_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path()).await;
    b.import(fixture()).await.unwrap();
    b.close().await.unwrap();
    drop(b);
    let listed = std::fs::read_to_string(dir.path().join("Systems/index.json")).unwrap();
    assert!(listed.contains("/redfish/v1/Systems/1\""), "{listed}");

    // As if the process died after logging three group commits, before the checkpoint, while
    // writing a fourth line.
    let lines = [
        json!({"wal": 1, "entries": [
            {"op": "put", "path": "/redfish/v1/Systems/9", "value": system("/redfish/v1/Systems/9")},
            {"op": "append", "path": "/redfish/v1/Systems", "member": "/redfish/v1/Systems/9"},
            {"op": "put", "path": "/redfish/v1/Systems/8", "value": system("/redfish/v1/Systems/8")},
            {"op": "append", "path": "/redfish/v1/Systems", "member": "/redfish/v1/Systems/8"},
        ]}),
        json!({"wal": 1, "entries": [
            {"op": "append", "path": "/redfish/v1/Systems", "member": "/redfish/v1/Systems/1"},
            {"op": "kv_put", "ns": "aliases", "key": "k", "value": {"v": 1}},
            {"op": "kv_put", "ns": "aliases", "key": "gone", "value": 2},
        ]}),
        json!({"wal": 1, "entries": [
            {"op": "remove", "path": "/redfish/v1/Systems/1/Bios"},
            {"op": "kv_remove", "ns": "aliases", "key": "gone"},
            {"op": "unlist", "path": "/redfish/v1/Systems", "member": "/redfish/v1/Systems/8"},
            {"op": "remove", "path": "/redfish/v1/Systems/8"},
            {"op": "unlist", "path": "/redfish/v1/Systems", "member": "/redfish/v1/Systems/7"},
        ]}),
    ];
    let mut log = Vec::new();
    for l in &lines {
        log.extend(serde_json::to_vec(l).unwrap());
        log.push(b'\n');
    }
    log.extend(br#"{"wal": 1, "entries": [{"op": "remove", "path": "/redfish/v1/Systems/1"}"#);
    // Two log files: the first ended by a checkpoint the crash interrupted.
    let (first, second) = log.split_at(log.iter().position(|b| *b == b'\n').unwrap() + 1);
    write(&dir.path().join(".sunfish/wal-0000000000000007.jsonl"), first);
    write(&dir.path().join(".sunfish/wal-0000000000000008.jsonl"), second);

    let b = open(dir.path()).await;
    assert_eq!(log_bytes(dir.path()), "", "the log files are removed");
    assert_eq!(*b.get(&p("/redfish/v1/Systems/9")).await.unwrap().value(), system("/redfish/v1/Systems/9"));
    let systems = b.get(&p("/redfish/v1/Systems")).await.unwrap().value().into_owned();
    let ids: Vec<&str> =
        systems["Members"].as_array().unwrap().iter().map(|m| m["@odata.id"].as_str().unwrap()).collect();
    assert_eq!(ids.iter().filter(|m| **m == "/redfish/v1/Systems/1").count(), 1, "{ids:?}");
    assert_eq!(ids.last(), Some(&"/redfish/v1/Systems/9"));
    assert!(!ids.contains(&"/redfish/v1/Systems/8"), "{ids:?}");
    assert!(b.get(&p("/redfish/v1/Systems/8")).await.is_err());
    assert_eq!(systems["Members@odata.count"], ids.len());
    assert!(b.get(&p("/redfish/v1/Systems/1")).await.is_ok(), "the torn line is not replayed");
    assert!(matches!(b.get(&p("/redfish/v1/Systems/1/Bios")).await, Err(Error::NotFound { .. })));
    assert_eq!(b.kv_get("aliases", "k").await.unwrap(), Some(json!({"v": 1})));
    assert_eq!(b.kv_get("aliases", "gone").await.unwrap(), None);
    // The files hold the result (a checkpoint at open).
    let on_disk: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("Systems/index.json")).unwrap()).unwrap();
    assert_eq!(on_disk, systems);
    assert!(dir.path().join("Systems/9/index.json").is_file());
    assert!(!dir.path().join("Systems/1/Bios").exists());
    let records: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join(".sunfish/records/aliases.json")).unwrap()).unwrap();
    assert_eq!(records, json!({"k": {"v": 1}}));
    // Numbering goes on after the replayed files.
    b.patch(&p("/redfish/v1/Systems/9"), json!({"AssetTag": "x"}), None).await.unwrap();
    assert!(dir.path().join(".sunfish/wal-0000000000000009.jsonl").is_file());
    b.close().await.unwrap();
    assert_eq!(log_files(dir.path()), Vec::<String>::new(), "a closed store has no log");
}

/// The names of the write-ahead log's files.
fn log_files(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(root.join(".sunfish"))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    out.retain(|n| n.starts_with("wal-"));
    out.sort();
    out
}

/// The write-ahead log's content, its files in order.
fn log_bytes(root: &Path) -> String {
    log_files(root).iter().map(|n| std::fs::read_to_string(root.join(".sunfish").join(n)).unwrap()).collect()
}

/// Creates and deletes are logged as appends and unlists of one link, not as copies of their
/// collection; the files follow at the checkpoint (here: close), and reopening gives the same
/// tree.
#[tokio::test]
async fn creates_and_deletes_are_logged_as_appends_and_unlists() {
    let dir = tempfile::tempdir().unwrap();
    let b = open_with(dir.path(), 3_600_000).await;
    b.import(fixture()).await.unwrap();
    b.close().await.unwrap();
    drop(b);
    let b = open_with(dir.path(), 3_600_000).await;
    let before = std::fs::read(dir.path().join("Systems/index.json")).unwrap();
    for i in 0..300 {
        let path = format!("/redfish/v1/Systems/n{i}");
        b.create(&p("/redfish/v1/Systems"), system(&path), None).await.unwrap();
    }
    for i in (0..300).step_by(3) {
        b.delete(&p(&format!("/redfish/v1/Systems/n{i}")), None).await.unwrap();
    }
    let log = log_bytes(dir.path());
    assert_eq!(log.matches(r#""op":"append""#).count(), 300);
    assert_eq!(log.matches(r#""op":"unlist""#).count(), 100);
    assert!(!log.contains("Members"), "no collection content in the log");
    assert!(log.len() < 400 * 400, "{} bytes for 300 small creates and 100 deletes", log.len());
    assert_eq!(std::fs::read(dir.path().join("Systems/index.json")).unwrap(), before, "not rewritten per create");
    let in_memory = contents(&b).await;
    b.close().await.unwrap();
    drop(b);
    let after: Value = serde_json::from_slice(&std::fs::read(dir.path().join("Systems/index.json")).unwrap()).unwrap();
    assert_eq!(after, in_memory["/redfish/v1/Systems"]);
    assert!(dir.path().join("Systems/n299/index.json").is_file());
    assert!(!dir.path().join("Systems/n3").exists());
    assert_eq!(after["Members@odata.count"], 201);
    let b = open(dir.path()).await;
    assert_eq!(contents(&b).await, in_memory);
}

/// Without close, a checkpoint writes the changed files within `checkpoint_ms`, and removes
/// the log files it covers.
#[tokio::test]
async fn checkpoints_write_files_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let b = open_with(dir.path(), 50).await;
    b.import(fixture()).await.unwrap();
    b.create(&p("/redfish/v1/Systems"), system("/redfish/v1/Systems/c"), None).await.unwrap();
    b.patch(&p("/redfish/v1/Systems/1"), json!({"AssetTag": "checkpointed"}), None).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let file = std::fs::read_to_string(dir.path().join("Systems/1/index.json")).unwrap_or_default();
        let emptied = log_files(dir.path()).is_empty();
        if file.contains("checkpointed") && dir.path().join("Systems/c/index.json").is_file() && emptied {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no checkpoint within 10 s");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let listed = std::fs::read_to_string(dir.path().join("Systems/index.json")).unwrap();
    assert!(listed.contains("/redfish/v1/Systems/c\""), "{listed}");
}

/// A journal that does not parse (torn write, never acknowledged) is discarded and changes
/// nothing; neither does one naming a path outside the tree.
#[tokio::test]
async fn torn_journal_is_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path()).await;
    b.import(fixture()).await.unwrap();
    b.close().await.unwrap();
    drop(b);
    let jpath = dir.path().join(".sunfish/journal.json");
    let escaping = json!({"format": "sunfish-fs-journal/1", "entries": [
        {"op": "put", "path": "/redfish/v1/Systems/9", "value": {}},
        {"op": "put", "path": "/redfish/v1/%2e%2e/escaped", "value": {}},
    ]});
    let torn = br#"{"format": "sunfish-fs-journal/1", "entries": [{"op": "put", "path": "/redfish/v1/Systems/9", "val"#;
    for bad in [torn.to_vec(), serde_json::to_vec(&escaping).unwrap()] {
        write(&jpath, &bad);
        let before = snapshot(dir.path());
        let b = open(dir.path()).await;
        assert!(!jpath.exists());
        assert!(matches!(b.get(&p("/redfish/v1/Systems/9")).await, Err(Error::NotFound { .. })));
        b.close().await.unwrap();
        let mut after = snapshot(dir.path());
        after.insert(PathBuf::from(".sunfish/journal.json"), before[Path::new(".sunfish/journal.json")].clone());
        assert_eq!(after, before);
        assert!(!dir.path().parent().unwrap().join("escaped").exists());
    }
}

/// A tree written by hand in the reference layout (any formatting, bad files, stray files,
/// folders without index.json) is served as it is and left byte-identical: opening, reading and
/// closing write nothing, not even the private folder.
#[tokio::test]
async fn reference_tree_served_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let service_root = json!({"@odata.type": "#ServiceRoot.v1_5_0.ServiceRoot", "@odata.id": "/redfish/v1",
        "Id": "RootService", "Systems": {"@odata.id": "/redfish/v1/Systems"}, "Name": "Root Service ✓"});
    write(&root.join("index.json"), serde_json::to_string(&service_root).unwrap().as_bytes());
    write(
        &root.join("Systems/index.json"),
        b"{\n  \"@odata.id\": \"/redfish/v1/Systems\",\n  \"@odata.type\": \"#ComputerSystemCollection.ComputerSystemCollection\",\n  \"Members\": [{\"@odata.id\": \"/redfish/v1/Systems/s1\"}],\n  \"Members@odata.count\": 1\n}",
    );
    write(&root.join("Systems/s1/index.json"), b"{\"Id\":\"s1\",\"@odata.id\":\"/redfish/v1/Systems/s1\"}\r\n");
    write(&root.join("Systems/broken/index.json"), b"{\"Id\": ");
    write(&root.join("Systems/array/index.json"), b"[1, 2]");
    write(&root.join("Systems/s1/notes.txt"), b"not a resource");
    write(
        &root.join("Fabrics/CXL/Endpoints/e1/index.json"),
        b"{\"@odata.id\": \"/redfish/v1/Fabrics/CXL/Endpoints/e1\"}",
    );
    let before = snapshot(root);

    let b = open(root).await;
    let served = contents(&b).await;
    assert_eq!(
        served.keys().collect::<Vec<_>>(),
        ["/redfish/v1", "/redfish/v1/Fabrics/CXL/Endpoints/e1", "/redfish/v1/Systems", "/redfish/v1/Systems/s1"]
    );
    assert_eq!(served["/redfish/v1"], service_root);
    assert_eq!(
        serde_json::to_string(&served["/redfish/v1"]).unwrap(),
        serde_json::to_string(&service_root).unwrap(),
        "key order is kept"
    );
    assert_eq!(served["/redfish/v1/Systems/s1"], json!({"Id": "s1", "@odata.id": "/redfish/v1/Systems/s1"}));
    b.close().await.unwrap();
    drop(b);
    assert_eq!(snapshot(root), before);
}

/// A symbolic link inside the root that points outside is neither loaded nor written, created
/// or deleted through, and deleting a folder containing one leaves its target alone.
#[tokio::test]
async fn symlinks_are_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let secret = json!({"@odata.id": "/redfish/v1/Linked", "Secret": true});
    write(&outside.path().join("index.json"), secret.to_string().as_bytes());
    write(&outside.path().join("Sub/index.json"), secret.to_string().as_bytes());
    let outside_before = snapshot(outside.path());

    let root = dir.path().join("store");
    let b = open(&root).await;
    b.import(fixture()).await.unwrap();
    b.close().await.unwrap();
    drop(b);
    std::os::unix::fs::symlink(outside.path(), root.join("Linked")).unwrap();
    std::os::unix::fs::symlink(outside.path(), root.join("Systems/1/Link")).unwrap();
    std::fs::create_dir_all(root.join(".sunfish/kv")).unwrap();
    std::os::unix::fs::symlink(outside.path(), root.join(".sunfish/kv/evil")).unwrap();

    let b = open(&root).await;
    assert!(matches!(b.get(&p("/redfish/v1/Linked")).await, Err(Error::NotFound { .. })));
    assert!(matches!(b.get(&p("/redfish/v1/Systems/1/Link")).await, Err(Error::NotFound { .. })));
    assert!(!b.paths().await.unwrap().iter().any(|x| x.as_str().contains("Link")));
    assert!(b.kv_list("evil").await.unwrap().is_empty());

    for path in ["/redfish/v1/Linked/Sub", "/redfish/v1/Linked/New", "/redfish/v1/Systems/1/Link/x"] {
        let err = b.import(vec![(p(path), json!({"@odata.id": path}))]).await.unwrap_err();
        assert!(matches!(err, Error::Storage { .. }), "{path}: {err:?}");
    }
    // Records now go to `.sunfish/records/evil.json`; the link where earlier versions kept
    // that namespace is unlinked, not followed.
    b.kv_put("evil", "k", json!(1)).await.unwrap();
    // The folder of Systems/1 holds the link; removing the folder unlinks it, nothing more.
    b.delete(&p("/redfish/v1/Systems/1"), None).await.unwrap();
    b.close().await.unwrap();
    assert!(!root.join("Systems/1").exists());
    assert!(std::fs::symlink_metadata(root.join(".sunfish/kv/evil")).is_err(), "the link is gone");
    assert!(root.join(".sunfish/records/evil.json").is_file());
    assert_eq!(snapshot(outside.path()), outside_before);
}

/// 1,000 creates into one collection, 32 in flight at a time, all reach the disk: after a
/// reopen the collection lists exactly 1,000 members and each has its folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousand_concurrent_creates() {
    let dir = tempfile::tempdir().unwrap();
    let b = Arc::new(open(dir.path()).await);
    let mut seed = fixture();
    seed.retain(|(path, _)| path.as_str() == "/redfish/v1");
    seed.push((
        p("/redfish/v1/Systems"),
        json!({"@odata.id": "/redfish/v1/Systems", "@odata.type": "#ComputerSystemCollection.ComputerSystemCollection",
               "Members": [], "Members@odata.count": 0}),
    ));
    b.import(seed).await.unwrap();

    let limit = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let (b, limit) = (b.clone(), limit.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire_owned().await.unwrap();
            b.create(&p("/redfish/v1/Systems"), system(&format!("/redfish/v1/Systems/s{i}")), None).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    b.close().await.unwrap();
    drop(b);

    let b = open(dir.path()).await;
    let systems = b.get(&p("/redfish/v1/Systems")).await.unwrap();
    assert_eq!(systems.value()["Members"].as_array().unwrap().len(), 1000);
    assert_eq!(systems.value()["Members@odata.count"], 1000);
    assert_eq!(b.children(&p("/redfish/v1/Systems")).await.unwrap().len(), 1000);
    let folders =
        std::fs::read_dir(dir.path().join("Systems")).unwrap().filter(|e| e.as_ref().unwrap().path().is_dir()).count();
    assert_eq!(folders, 1000);
}

/// After close, reads still work and writes fail with a storage error, changing nothing.
#[tokio::test]
async fn writes_after_close_fail() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path()).await;
    b.import(fixture()).await.unwrap();
    b.close().await.unwrap();
    b.close().await.unwrap();
    let err = b.create(&p("/redfish/v1/Systems"), system("/redfish/v1/Systems/2"), None).await.unwrap_err();
    assert!(matches!(err, Error::Storage { .. }), "{err:?}");
    assert!(matches!(b.get(&p("/redfish/v1/Systems/2")).await, Err(Error::NotFound { .. })));
    assert_eq!(b.get(&p("/redfish/v1/Systems")).await.unwrap().value()["Members@odata.count"], 1);
}

/// Dropping without close still writes out every acknowledged change.
#[tokio::test]
async fn drop_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path()).await;
    b.import(fixture()).await.unwrap();
    b.create(&p("/redfish/v1/Systems"), system("/redfish/v1/Systems/2"), None).await.unwrap();
    drop(b);
    assert!(dir.path().join("Systems/2/index.json").is_file());
    assert!(!dir.path().join(".sunfish/journal.json").exists());
}

/// The registry builds the backend from its options table; bad options name the key.
#[tokio::test]
async fn built_from_registry() {
    let dir = tempfile::tempdir().unwrap();
    let reg = sunfish_core::registry::lookup::<StorageBackendRegistration>("fs").unwrap();
    let root = dir.path().join("a/b");
    let opts = PluginOptions::new("storage", "fs", json!({"root": root, "fsync": false}));
    let b: Arc<dyn StorageBackend> = (reg.build)(opts).await.unwrap();
    b.import(fixture()).await.unwrap();
    b.close().await.unwrap();
    assert!(root.join("Systems/1/Bios/index.json").is_file());

    let bad = PluginOptions::new("storage", "fs", json!({"root": root, "sync": false}));
    let err = (reg.build)(bad).await.err().unwrap().to_string();
    assert!(err.contains("unknown field `sync`"), "{err}");
}

/// A record key is refused up front when `<key>.json` would exceed the file-name limit, so
/// it can never reach the journal; the longest valid key is stored and read back.
#[tokio::test]
async fn long_record_keys() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path()).await;
    let err = b.kv_put("ns", &"k".repeat(251), json!(1)).await.unwrap_err();
    assert!(matches!(err, Error::InvalidPath { .. }), "{err:?}");
    assert_eq!(b.kv_get("ns", &"k".repeat(251)).await.unwrap_err(), err);
    b.kv_put("ns", &"k".repeat(250), json!(2)).await.unwrap();
    b.close().await.unwrap();
    drop(b);
    let b = open(dir.path()).await;
    assert_eq!(b.kv_list("ns").await.unwrap(), vec![("k".repeat(250), json!(2))]);
}

/// Environment variable that turns [`crash_child`] into the writer killed by
/// [`killed_writer_leaves_consistent_tree`]; it names the store's root.
const CRASH_ROOT: &str = "SUNFISH_FS_CRASH_ROOT";

/// Not a check on its own: run by [`killed_writer_leaves_consistent_tree`] in a child process,
/// it creates members from 32 tasks forever and prints `acked <id>` after each acknowledgement.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_child() {
    let Ok(root) = std::env::var(CRASH_ROOT) else { return };
    let b = Arc::new(open(Path::new(&root)).await);
    let mut tasks = Vec::new();
    for t in 0..32 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let id = format!("t{t}-{i}");
                b.create(&p("/redfish/v1/Systems"), system(&format!("/redfish/v1/Systems/{id}")), None).await.unwrap();
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                writeln!(out, "acked {id}").unwrap();
                out.flush().unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// A process killed (SIGKILL) in the middle of group commits loses no acknowledged create and
/// leaves no half-applied one: after reopening, the collection's Members are exactly the member
/// resources on disk, and they include every acknowledged id.
#[tokio::test]
async fn killed_writer_leaves_consistent_tree() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path()).await;
    let mut seed = fixture();
    seed.retain(|(path, _)| path.as_str() == "/redfish/v1");
    seed.push((
        p("/redfish/v1/Systems"),
        json!({"@odata.id": "/redfish/v1/Systems", "@odata.type": "#ComputerSystemCollection.ComputerSystemCollection",
               "Members": [], "Members@odata.count": 0}),
    ));
    b.import(seed).await.unwrap();
    b.close().await.unwrap();
    drop(b);

    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CRASH_ROOT, dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut acked = Vec::new();
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        if let Some(id) = line.unwrap().strip_prefix("acked ") {
            acked.push(id.to_string());
            if acked.len() == 400 {
                break;
            }
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(acked.len(), 400, "the child stopped early");

    let b = open(dir.path()).await;
    assert!(!dir.path().join(".sunfish/journal.json").exists());
    let systems = b.get(&p("/redfish/v1/Systems")).await.unwrap();
    let members: Vec<String> = systems.value()["Members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["@odata.id"].as_str().unwrap().to_string())
        .collect();
    let children: Vec<String> =
        b.children(&p("/redfish/v1/Systems")).await.unwrap().iter().map(|c| c.to_string()).collect();
    let mut sorted = members.clone();
    sorted.sort();
    assert_eq!(sorted, children, "Members and member resources agree");
    assert_eq!(systems.value()["Members@odata.count"], members.len());
    for id in &acked {
        assert!(children.contains(&format!("/redfish/v1/Systems/{id}")), "acknowledged {id} was lost");
    }
}
