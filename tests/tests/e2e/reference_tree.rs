//! The reference's initial tree is served unchanged by the fs backend (issue 12).

use std::path::{Path, PathBuf};

use serde_json::Value;
use sunfish_tests::{config_for_root, index_files, shared_dir, uri_of_index, TestServer};

/// Copies the tree at `from` into `to` (regular files and folders only).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("{}: {e}", to.display()));
    for e in std::fs::read_dir(from).into_iter().flatten().flatten() {
        let ft = e.file_type().unwrap_or_else(|err| panic!("{}: {err}", e.path().display()));
        let target = to.join(e.file_name());
        if ft.is_dir() {
            copy_tree(&e.path(), &target);
        } else if ft.is_file() {
            std::fs::copy(e.path(), &target).unwrap_or_else(|err| panic!("{}: {err}", e.path().display()));
        }
    }
}

/// Every file below `root`, relative, with its bytes.
fn files(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            } else {
                let rel = e.path().strip_prefix(root).map(Path::to_path_buf).unwrap_or_default();
                out.push((rel, std::fs::read(e.path()).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

/// `mockups/sunfish/server_start_Resources`, copied to a temporary folder and opened by the fs
/// backend with `seed = "none"`: each `index.json` is served at `/redfish/v1/<its folder>` as
/// exactly its JSON, and after the server stops the tree holds the same files, byte for byte.
#[tokio::test]
async fn reference_start_tree_is_served_unchanged() {
    let Some(shared) = shared_dir() else { return };
    let source = shared.join("mockups/sunfish/server_start_Resources");
    if !source.is_dir() {
        eprintln!("SKIP: {} not found", source.display());
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let root = dir.path().join("Resources");
    copy_tree(&source, &root);
    let original = files(&source);
    assert_eq!(files(&root), original, "the copy differs from the source");

    let mut cfg = config_for_root(&root, true);
    cfg.storage.seed = "none".into();
    let s = TestServer::start_with(cfg, None).await;
    let index = index_files(&root);
    assert!(index.len() >= 5, "only {} index.json files in {}", index.len(), root.display());
    for f in &index {
        let uri = uri_of_index(&root, f);
        let expected: Value = serde_json::from_slice(&std::fs::read(f).unwrap_or_default())
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let r = s.get(&uri).await;
        assert_eq!(r.status, 200, "{uri} not served: {}", r.body);
        assert_eq!(r.body, expected, "{uri} is not served as its file {}", f.display());
        let slash = s.get(&format!("{uri}/")).await;
        assert_eq!(slash.body, expected, "{uri}/");
    }
    // Folders without index.json (SunfishPrivate) are not resources.
    assert_eq!(s.get("/redfish/v1/SunfishPrivate").await.status, 404);
    s.stop().await;
    assert_eq!(files(&root), original, "serving the reference tree changed its files");
}
