//! The `sunfish-server` command line: `--list-plugins` and `--check-config` (issue 13).

use std::path::Path;
use std::process::Output;

use sunfish_tests::{server_command, shipped_configs};

/// Runs the server binary with `args` in `cwd`.
fn run(args: &[&str], cwd: &Path) -> Output {
    server_command().args(args).current_dir(cwd).output().unwrap_or_else(|e| panic!("running sunfish-server: {e}"))
}

/// `--list-plugins` prints every registered plugin as `KIND NAME DESCRIPTION`, sorted by kind
/// then name, and exits 0.
#[test]
fn list_plugins_prints_every_registered_plugin_sorted() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let out = run(&["--list-plugins"], tmp.path());
    assert!(out.status.success(), "exit {:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    let expected = "\
event-handler audit appends every event received at /EventListener to a JSON-lines file
forwarder agents forwards writes on agent-owned resources to the owning agent (aggregation)
forwarder none owns nothing: every write is applied by Sunfish itself
storage fs index.json tree on disk (the reference's layout), served from memory
storage memory the tree in process memory, lost at exit
storage postgres resources as JSONB rows in PostgreSQL, shared by every server on the same database
";
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
    assert!(std::fs::read_dir(tmp.path()).into_iter().flatten().next().is_none(), "--list-plugins wrote files");
}

/// `--check-config` accepts every shipped `conf/*.toml` (exit 0), building its plugins in the
/// working directory.
#[test]
fn check_config_accepts_every_shipped_config() {
    for conf in shipped_configs() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let arg = conf.display().to_string();
        let out = run(&["--check-config", &arg], tmp.path());
        assert!(
            out.status.success(),
            "--check-config {arg}: exit {:?}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `--check-config` on a file with an unknown key exits non-zero naming the key on stderr;
/// likewise for an unknown key in a plugin's options table.
#[test]
fn check_config_names_unknown_keys() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    for (text, key) in [
        ("[server]\nlisten = \"127.0.0.1:0\"\nbodylimit = 5\n", "bodylimit"),
        ("[storage]\nbakend = \"memory\"\n", "bakend"),
        ("listen = \"127.0.0.1:0\"\n", "listen"),
        ("[storage]\nbackend = \"fs\"\n[storage.options]\nroot = \"d\"\nfsycn = true\n", "fsycn"),
        ("[storage]\nbackend = \"memory\"\n[event_handlers.audit]\npth = \"a.jsonl\"\n", "pth"),
    ] {
        let file = tmp.path().join("bad.toml");
        std::fs::write(&file, text).unwrap_or_else(|e| panic!("{e}"));
        let out = run(&["--check-config", &file.display().to_string()], tmp.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text:?} was accepted");
        assert!(stderr.contains(key), "{text:?}: stderr does not name {key}: {stderr}");
    }
}

/// `--check-config` with an unknown storage backend exits non-zero listing the registered ones.
#[test]
fn check_config_lists_registered_backends_for_unknown_name() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let file = tmp.path().join("s3.toml");
    std::fs::write(&file, "[storage]\nbackend = \"s3\"\n").unwrap_or_else(|e| panic!("{e}"));
    let out = run(&["--check-config", &file.display().to_string()], tmp.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "unknown backend accepted");
    assert!(stderr.contains("unknown storage \"s3\" (registered: fs, memory, postgres)"), "stderr: {stderr}");
    // A missing file is an error too.
    let out = run(&["--check-config", &tmp.path().join("absent.toml").display().to_string()], tmp.path());
    assert!(!out.status.success(), "a missing config file was accepted");
}
