//! The shipped configuration files load, build and serve; `conf/default.toml` is the defaults
//! (issue 14).

use serde_json::{json, Value};
use sunfish_server::ServerConfig;
use sunfish_storage_fs::FsOptions;
use sunfish_tests::{shipped_configs, workspace_root, TestServer};

/// Every `conf/*.toml` loads with `ServerConfig::load` and builds (fs root and audit file
/// redirected into a temporary folder), and the service it describes answers on the service
/// root.
#[tokio::test]
async fn every_shipped_config_loads_builds_and_serves() {
    for conf in shipped_configs() {
        let mut cfg = ServerConfig::load(Some(&conf)).unwrap_or_else(|e| panic!("{}: {e}", conf.display()));
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        if cfg.storage.backend == "fs" {
            if !cfg.storage.options.is_object() {
                cfg.storage.options = json!({});
            }
            cfg.storage.options["root"] = json!(tmp.path().join("store"));
        }
        for (name, options) in cfg.event_handlers.iter_mut() {
            if options.get("path").is_some() {
                options["path"] = json!(tmp.path().join(format!("{name}.jsonl")));
            }
        }
        let fs_root = tmp.path().join("store");
        let backend = cfg.storage.backend.clone();
        let s = TestServer::start_with(cfg, None).await;
        let r = s.get("/redfish/v1").await;
        assert_eq!(r.status, 200, "{}: {}", conf.display(), r.body);
        assert_eq!(r.body["@odata.id"], "/redfish/v1", "{}", conf.display());
        s.stop().await;
        if backend == "fs" {
            assert!(fs_root.join("index.json").is_file(), "{}: fs root not redirected", conf.display());
        }
    }
}

/// Loading `conf/default.toml` gives exactly `ServerConfig::default()` except
/// `storage.options`, which the file spells out for fs: and those equal the fs backend's own
/// defaults (root `sunfish-data`, fsync on, checkpoints every second).
#[test]
fn default_toml_is_the_defaults() {
    let file = workspace_root().join("conf/default.toml");
    let mut loaded = ServerConfig::load(Some(&file)).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let options = std::mem::take(&mut loaded.storage.options);
    assert_eq!(options, json!({"root": "sunfish-data", "fsync": true, "checkpoint_ms": 1000}));
    let fs_defaults = serde_json::to_value(FsOptions::default()).unwrap_or(Value::Null);
    assert_eq!(options, fs_defaults, "default.toml's fs options differ from the fs backend's defaults");
    assert_eq!(loaded, ServerConfig::default());
}

/// `storage.seed` naming a directory seeds an empty store from it (and only an empty one).
#[tokio::test]
async fn seed_from_a_directory() {
    let seed = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(seed.path().join("Things")).unwrap();
    std::fs::write(
        seed.path().join("index.json"),
        r##"{"@odata.id": "/redfish/v1", "@odata.type": "#ServiceRoot.v1_20_0.ServiceRoot", "Id": "RootService", "Things": {"@odata.id": "/redfish/v1/Things"}}"##,
    )
    .unwrap();
    std::fs::write(
        seed.path().join("Things/index.json"),
        r##"{"@odata.id": "/redfish/v1/Things", "@odata.type": "#ThingCollection.ThingCollection", "Members": [], "Members@odata.count": 0}"##,
    )
    .unwrap();
    for backend in sunfish_tests::BACKENDS {
        let (mut cfg, dir) = sunfish_tests::config_for(backend);
        cfg.storage.seed = seed.path().to_string_lossy().into_owned();
        let s = sunfish_tests::TestServer::start_with(cfg.clone(), dir).await;
        assert_eq!(s.get("/redfish/v1/Things").await.status, 200, "{backend:?}");
        assert_eq!(s.get("/redfish/v1/Systems").await.status, 404, "{backend:?}: builtin seed used");
        s.stop().await;
    }
}

/// A key of a shipped file: its dotted name and its value (`None`: shown commented out).
type FileKeys = Vec<(String, Option<toml::Value>)>;

/// The keys of a shipped TOML file, as the file's reader sees them. Uncommented keys come with
/// their values (taken from a real TOML parse); keys shown commented out (`# key = value` right
/// after `# ` under a section, or under a commented `# [section]` header) come without, as
/// *unset*. Explanatory comments (`#   name = ...`, indented) are not keys. Tables under
/// `skip` (example contents, such as an instance's own agent configuration) are left out.
fn file_keys(path: &std::path::Path, skip: &[&str]) -> FileKeys {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let parsed: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header = |l: &str| -> Option<String> {
        let l = l.trim();
        let inner = l
            .strip_prefix("[[")
            .and_then(|r| r.strip_suffix("]]"))
            .or_else(|| l.strip_prefix('[').and_then(|r| r.strip_suffix(']')))?;
        inner.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.').then(|| inner.to_string())
    };
    let key_of = |l: &str| -> Option<String> {
        let (k, _) = l.split_once(" = ")?;
        (!k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .then(|| k.to_string())
    };
    let lookup = |dotted: &str| -> Option<toml::Value> {
        let mut cur = toml::Value::Table(parsed.clone());
        for part in dotted.split('.') {
            cur = match cur {
                toml::Value::Table(t) => t.get(part)?.clone(),
                // An array of tables: the first one stands for all.
                toml::Value::Array(a) => a.first()?.as_table()?.get(part)?.clone(),
                _ => return None,
            };
        }
        Some(cur)
    };
    let mut section = String::new();
    let mut out: FileKeys = Vec::new();
    for line in text.lines() {
        if let Some(h) = header(line) {
            section = h;
            continue;
        }
        if let Some(h) = line.strip_prefix("# ").and_then(header) {
            section = h;
            continue;
        }
        if skip.iter().any(|s| section == *s || section.starts_with(&format!("{s}."))) {
            continue;
        }
        let (key, commented) = match line.strip_prefix("# ") {
            Some(rest) => (key_of(rest), true),
            None => (key_of(line), false),
        };
        let Some(key) = key else { continue };
        let dotted = if section.is_empty() { key } else { format!("{section}.{key}") };
        let value = if commented {
            None
        } else {
            Some(lookup(&dotted).unwrap_or_else(|| panic!("{}: {dotted} not parsed", path.display())))
        };
        if !out.iter().any(|(k, _)| *k == dotted) {
            out.push((dotted, value));
        }
    }
    out
}

/// A row of a docs/CONFIG.md table: key, default (`None`: *unset*, or required), under which
/// `##` and `###`/`####` headings.
struct DocRow {
    key: String,
    default: Option<toml::Value>,
    part: String,
    subsection: String,
}

fn toml_literal(cell: &str, what: &str) -> toml::Value {
    let lit = cell.trim().trim_matches('`');
    let t: toml::Table = toml::from_str(&format!("v = {lit}"))
        .unwrap_or_else(|e| panic!("CONFIG.md {what}: `{lit}` is not a TOML value: {e}"));
    t["v"].clone()
}

fn doc_rows(text: &str) -> Vec<DocRow> {
    let (mut part, mut subsection) = (String::new(), String::new());
    let mut rows = Vec::new();
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            part = h.to_string();
        } else if let Some(h) = line.strip_prefix("### ").or_else(|| line.strip_prefix("#### ")) {
            subsection = h.to_string();
        } else if line.starts_with("| `") {
            let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
            assert!(cells.len() >= 4, "CONFIG.md: a row needs key, default, example, meaning: {line}");
            let key = cells[0].trim_matches('`').to_string();
            let default = cells[1].starts_with('`').then(|| toml_literal(cells[1], &format!("{key} default")));
            assert!(
                default.is_some() || cells[1].starts_with("*unset*") || cells[1] == "required",
                "CONFIG.md {key}: default `{}`",
                cells[1]
            );
            toml_literal(cells[2], &format!("{key} example"));
            rows.push(DocRow { key, default, part: part.clone(), subsection: subsection.clone() });
        }
    }
    rows
}

/// docs/CONFIG.md documents every key of conf/default.toml, conf/agent.toml and
/// conf/agent-host.toml with the file's default, and names no server key the server's file
/// lacks (issue 9): the page is checked against the files, so it cannot drift.
#[test]
fn config_md_documents_every_key() {
    let root = workspace_root();
    let doc = std::fs::read_to_string(root.join("docs/CONFIG.md")).unwrap_or_else(|e| panic!("docs/CONFIG.md: {e}"));
    let rows = doc_rows(&doc);
    let in_part = |part: &str, key: &str| rows.iter().find(|r| r.part.starts_with(part) && r.key == key);
    let check = |part: &str, (key, value): &(String, Option<toml::Value>), file: &str| {
        let row = in_part(part, key)
            .unwrap_or_else(|| panic!("docs/CONFIG.md, part {part}: {key} (from {file}) is not documented"));
        assert_eq!(&row.default, value, "docs/CONFIG.md, part {part}: default of {key} differs from {file}");
    };

    let server = file_keys(&root.join("conf/default.toml"), &[]);
    assert!(server.len() > 30, "conf/default.toml: only {} keys found", server.len());
    for k in &server {
        check("sunfish-server", k, "conf/default.toml");
    }
    for r in rows.iter().filter(|r| r.part.starts_with("sunfish-server") && r.subsection != "Backend options") {
        assert!(
            server.iter().any(|(k, _)| *k == r.key),
            "docs/CONFIG.md names {} which conf/default.toml lacks",
            r.key
        );
    }

    let agent = file_keys(&root.join("conf/agent.toml"), &[]);
    for k in &agent {
        let own = k.0.starts_with("agent.") || k.0.starts_with("hardware.");
        let as_server = server.iter().find(|(s, _)| *s == k.0);
        if own || as_server.is_none_or(|s| s.1 != k.1) {
            check("sunfish-agent ", k, "conf/agent.toml");
        }
    }

    let host = file_keys(&root.join("conf/agent-host.toml"), &["instances.config"]);
    for (key, value) in &host {
        if key.starts_with("host.") {
            check("sunfish-agent-host", &(key.clone(), value.clone()), "conf/agent-host.toml");
        } else if key.starts_with("instances.") {
            assert!(
                in_part("sunfish-agent-host", key).is_some(),
                "docs/CONFIG.md: {key} (conf/agent-host.toml) is not documented"
            );
        } else {
            // The supervisor's own agent sections: keys of conf/agent.toml.
            assert!(agent.iter().any(|(k, _)| k == key), "conf/agent-host.toml: {key} is not a key of conf/agent.toml");
        }
    }
    assert!(in_part("sunfish-agent-host", "instances.config").is_some(), "docs/CONFIG.md: instances.config");
}
