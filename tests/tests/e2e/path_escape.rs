//! Requests cannot reach outside the fs root (issue 11; the reference served and deleted files
//! outside its root for `..` and `%2e%2e`).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::json;
use sunfish_tests::{config_for, config_for_root, raw_head, raw_request, Backend, TestServer, BACKENDS};

/// Text that only the files outside the root contain.
const SECRET: &str = "SENTINEL-7d0c4e1b-outside-the-root";

/// Request targets that try to leave `/redfish/v1` or smuggle separators and NUL.
const TARGETS: [&str; 17] = [
    "/redfish/v1/../../x",
    "/redfish/v1/../sentinel",
    "/redfish/v1/Systems/../../sentinel",
    "/redfish/v1/%2e%2e/%2e%2e/sentinel",
    "/redfish/v1/%2e%2e/sentinel",
    "/redfish/v1/%2E%2E/sentinel",
    "/redfish/v1/Systems/%2E%2E/%2E%2E/sentinel",
    "/redfish/v1/.%2e/sentinel",
    "/redfish/v1/..%2fsentinel",
    "/redfish/v1/%2e%2e%2fsentinel",
    "/redfish/v1/%2e%2e%2f%2e%2e%2fsentinel",
    "/redfish/v1/..%5csentinel",
    "/redfish/v1/%2e%2e%5c%2e%2e%5csentinel",
    "/redfish/v1/Systems%00/../../sentinel",
    "/redfish/v1/sentinel%00",
    "/redfish/v1/%00",
    "/redfish/v1/./Systems/..",
];

/// The bytes and modification time of every file below `dir`, to prove nothing changed.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>, SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap_or_default();
                let mtime = std::fs::symlink_metadata(&p).and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH);
                out.push((p, bytes, mtime));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// `<base>/sentinel/index.json` (what a naive backend maps `/redfish/v1/../sentinel` to) and
/// `<base>/sentinel.txt`, beside the root `<base>/store`.
fn plant_sentinel(base: &Path) {
    let dir = base.join("sentinel");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let doc = json!({"@odata.id": "/redfish/v1/sentinel", "@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem",
        "Id": "sentinel", "Members": [], "Secret": SECRET});
    std::fs::write(dir.join("index.json"), serde_json::to_vec_pretty(&doc).unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(base.join("sentinel.txt"), SECRET).unwrap_or_else(|e| panic!("{e}"));
}

/// GET, POST, PATCH, PUT and DELETE of `..`, `%2e%2e`, `%2E%2E`, `%2f`, `%5c` and `%00` paths,
/// sent as raw request lines, are all 400 or 404; on fs the sentinel files beside the root are
/// never read (their content appears in no answer) nor changed (bytes and mtime), and nothing
/// new appears beside the root.
#[tokio::test]
async fn dot_dot_and_encoded_separators_are_refused() {
    for b in BACKENDS {
        let (cfg, dir) = config_for(b);
        let outside = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        // On fs the sentinel sits beside the store; on memory anywhere (nothing may read it).
        let base = dir.as_ref().map_or_else(|| outside.path().to_path_buf(), |d| d.path().to_path_buf());
        plant_sentinel(&base);
        let s = TestServer::start_with(cfg, dir).await;
        let entries_before: Vec<_> =
            std::fs::read_dir(&base).into_iter().flatten().flatten().map(|e| e.path()).collect();
        let before = snapshot(&base.join("sentinel"));
        let txt_before = snapshot(&base).into_iter().find(|f| f.0.ends_with("sentinel.txt"));

        let payload = serde_json::to_vec(&json!({"@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem",
            "Id": "sentinel", "Name": "overwritten", "Secret": "changed"}))
        .unwrap_or_default();
        for target in TARGETS {
            for method in ["GET", "POST", "PATCH", "PUT", "DELETE"] {
                let body: &[u8] = if matches!(method, "GET" | "DELETE") { b"" } else { &payload };
                let raw = raw_request(s.addr(), &raw_head(method, target, body)).await;
                assert!(
                    raw.status == 400 || raw.status == 404,
                    "{b:?}: {method} {target} → {}: {}",
                    raw.status,
                    raw.text
                );
                assert!(!raw.text.contains(SECRET), "{b:?}: {method} {target} leaked the sentinel: {}", raw.text);
            }
        }
        assert_eq!(snapshot(&base.join("sentinel")), before, "{b:?}: the sentinel changed");
        assert_eq!(snapshot(&base).into_iter().find(|f| f.0.ends_with("sentinel.txt")), txt_before, "{b:?}");
        let entries_after: Vec<_> =
            std::fs::read_dir(&base).into_iter().flatten().flatten().map(|e| e.path()).collect();
        let mut a = entries_before.clone();
        let mut z = entries_after.clone();
        a.sort();
        z.sort();
        assert_eq!(a, z, "{b:?}: something was created or removed beside the root");
        // The service itself is unharmed.
        assert_eq!(s.get("/redfish/v1/Systems").await.status, 200, "{b:?}");
        let kept = s.stop().await;
        if b == Backend::Fs {
            assert_eq!(snapshot(&base.join("sentinel")), before, "{b:?}: the sentinel changed at shutdown");
        }
        drop(kept);
    }
}

/// A symbolic link inside the fs root that points outside (a folder `Escape` and an
/// `index.json` link inside a real folder), created before start, is never served (404), and
/// writes addressed at it change nothing outside the root.
#[tokio::test]
async fn symlinks_out_of_the_fs_root_are_not_served() {
    let base = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    plant_sentinel(base.path());
    let outside = base.path().join("sentinel");
    let root = base.path().join("store");
    std::fs::create_dir_all(root.join("Fabrics").join("Leak")).unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink(&outside, root.join("Escape")).unwrap_or_else(|e| panic!("symlink: {e}"));
    std::os::unix::fs::symlink(outside.join("index.json"), root.join("Fabrics").join("Leak").join("index.json"))
        .unwrap_or_else(|e| panic!("symlink: {e}"));
    let before = snapshot(&outside);

    let s = TestServer::start_with(config_for_root(&root, false), None).await;
    for uri in ["/redfish/v1/Escape", "/redfish/v1/Fabrics/Leak", "/redfish/v1/Escape/"] {
        let r = s.get(uri).await;
        assert_eq!(r.status, 404, "{uri} served through a symlink: {}", r.body);
        assert!(!r.body.to_string().contains(SECRET), "{uri}");
    }
    // The builtin seed was applied (the store looked empty) without following the links.
    let fabrics = s.get("/redfish/v1/Fabrics").await;
    assert_eq!(fabrics.status, 200);
    assert!(!fabrics.body.to_string().contains("Leak"), "{}", fabrics.body);

    // Writes aimed at the links: whatever the status, nothing outside changes or leaks, and a
    // write that was refused leaves no trace in what is served.
    let sys = json!({"@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem", "Id": "x", "Name": "via link"});
    let escape_post = s.post("/redfish/v1/Escape", &sys).await;
    // What a refused POST left visible, checked last so that the other checks run too.
    let mut traces = Vec::new();
    if !escape_post.status.is_success() {
        for uri in ["/redfish/v1/Escape", "/redfish/v1/Escape/x"] {
            let r = s.get(uri).await;
            if r.status != 404 {
                traces.push(format!("GET {uri} → {}", r.status));
            }
        }
        if s.get("/redfish/v1").await.body.get("Escape").is_some() {
            traces.push("the service root links Escape".into());
        }
    }
    let posted = s.post("/redfish/v1/Fabrics/Leak/Ports", &sys).await;
    assert_eq!(posted.status, 404, "POST below a folder whose index.json is a link: {}", posted.body);
    let replies = [
        escape_post,
        posted,
        s.patch("/redfish/v1/Fabrics/Leak", &json!({"Name": "pwned"})).await,
        s.put("/redfish/v1/Fabrics/Leak", &sys).await,
        s.delete("/redfish/v1/Fabrics/Leak").await,
        s.delete("/redfish/v1/Escape/x").await,
        s.delete("/redfish/v1/Escape").await,
    ];
    for r in &replies {
        assert!(!r.body.to_string().contains(SECRET), "a write answer leaked the sentinel: {}", r.body);
    }
    for uri in ["/redfish/v1/Escape/x", "/redfish/v1/Escape", "/redfish/v1/Fabrics/Leak"] {
        let r = s.get(uri).await;
        assert!(!r.body.to_string().contains(SECRET), "{uri}: {}", r.body);
    }
    s.stop().await;
    assert_eq!(snapshot(&outside), before, "a file outside the root changed through a symlink");
    assert!(outside.join("index.json").is_file(), "the outside folder was emptied");
    assert!(traces.is_empty(), "a POST refused by storage (through the Escape link) is visible: {traces:?}");
}
