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
/// defaults (root `sunfish-data`, fsync on).
#[test]
fn default_toml_is_the_defaults() {
    let file = workspace_root().join("conf/default.toml");
    let mut loaded = ServerConfig::load(Some(&file)).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let options = std::mem::take(&mut loaded.storage.options);
    assert_eq!(options, json!({"root": "sunfish-data", "fsync": true}));
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
