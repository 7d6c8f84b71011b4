//! Configuration of `sunfish-agent`: serde defaults, then the agent's section kept by the
//! upstream (central configuration, [`crate::central`]), then the file given by `--config`, then
//! `SUNFISH_AGENT__SECTION__KEY` environment variables (list keys such as `agent.roots` take
//! comma-separated values), then command-line flags ([`Overrides`]). Every section refuses unknown keys. The server's sections that make
//! sense for an agent keep their meaning and keys (`[server]`, `[storage]`, `[events]`, ...);
//! `[agent]` says where the upstream Sunfish service is and `[hardware]` which hardware manager
//! applies writes. `conf/agent.toml` documents every key; a test checks it equals these
//! defaults.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use sunfish_core::StartupError;
use sunfish_server::config::{
    AuthConfig, EventsConfig, HttpConfig, LogConfig, ObjectsConfig, OutboundConfig, SchemaConfig, StorageConfig,
};
use sunfish_server::ServerConfig;

/// The prefix of the agent's environment variables (`SUNFISH_AGENT__AGENT__UPSTREAM`).
pub const ENV_PREFIX: &str = "SUNFISH_AGENT";

/// Keys whose environment values are comma-separated lists.
const LIST_KEYS: [&str; 5] = [
    "agent.roots",
    "outbound.allow",
    "hardware.options.fail_operations",
    "hardware.options.fail_paths",
    "hardware.options.roots",
];

/// The whole configuration of `sunfish-agent`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// `[server]`: the agent's own listening address and HTTP limits (as the server's).
    pub server: HttpConfig,
    /// `[storage]`: backend, options and seed tree of the device's Redfish tree.
    pub storage: StorageConfig,
    /// `[event_handlers.<name>]`: options per event handler.
    pub event_handlers: BTreeMap<String, Value>,
    /// `[objects]`: active object handlers.
    pub objects: ObjectsConfig,
    /// `[log]`: logging.
    pub log: LogConfig,
    /// `[events]`: event delivery (the agent's events reach the upstream through it).
    pub events: EventsConfig,
    /// `[outbound]`: hosts the agent may connect to; the upstream must be among them.
    pub outbound: OutboundConfig,
    /// `[query]`: `$expand` limits.
    pub query: sunfish_core::query::Budget,
    /// `[auth]`: authentication of requests to the agent (off by default).
    pub auth: AuthConfig,
    /// `[schema]`: the DMTF schema bundle.
    pub schema: SchemaConfig,
    /// `[agent]`: the upstream Sunfish service and registration.
    pub agent: AgentSection,
    /// `[hardware]`: the hardware manager.
    pub hardware: HardwareConfig,
}

impl Default for AgentConfig {
    fn default() -> Self {
        let server = HttpConfig { listen: std::net::SocketAddr::from(([127, 0, 0, 1], 5001)), ..HttpConfig::default() };
        let storage = StorageConfig { backend: "memory".into(), options: Value::Null, seed: "builtin".into() };
        // The upstream calls agents without credentials (docs/AGGREGATION.md).
        let auth = AuthConfig { enabled: false, ..AuthConfig::default() };
        // An upstream that was down gets the agent's queued events soon after it is back.
        let events = EventsConfig { max_backoff_ms: 10_000, ..EventsConfig::default() };
        AgentConfig {
            server,
            storage,
            event_handlers: BTreeMap::new(),
            objects: ObjectsConfig::default(),
            log: LogConfig::default(),
            events,
            outbound: OutboundConfig::default(),
            query: sunfish_core::query::Budget::default(),
            auth,
            schema: SchemaConfig::default(),
            agent: AgentSection::default(),
            hardware: HardwareConfig::default(),
        }
    }
}

/// `[agent]`: see `conf/agent.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AgentSection {
    /// Base URL of the upstream Sunfish service (`http://127.0.0.1:8000`); without it the agent
    /// serves its tree and registers nowhere.
    pub upstream: Option<String>,
    /// Name of the agent's ConnectionMethod (`/redfish/v1/AggregationService/ConnectionMethods/<name>`).
    pub name: String,
    /// The base URL the upstream reaches the agent at; default `http(s)://<bound address>`.
    pub advertise_url: Option<String>,
    /// Inventory roots announced with `ResourceCreated`; empty: every member of the device's
    /// top-level collections except `Managers` and the agent's own services.
    pub roots: Vec<String>,
    /// Interval of heartbeat events and AggregationSource checks, in milliseconds.
    pub heartbeat_ms: u64,
    /// Longest wait between registration attempts, in milliseconds (backoff from 200 ms).
    pub retry_max_ms: u64,
    /// Timeout of one request to the upstream, in milliseconds (an upload waits for the crawl).
    pub request_timeout_ms: u64,
    /// User name for the first registration when the upstream requires credentials.
    pub upstream_user: Option<String>,
    /// Its password (prefer `SUNFISH_AGENT__AGENT__UPSTREAM_PASSWORD`).
    pub upstream_password: Option<String>,
    /// Whether to fetch the agent's configuration section from the upstream at start.
    pub central_config: CentralMode,
}

/// `agent.central_config`: whether the agent layers its section from the upstream
/// (`AggregationService/Oem/Sunfish_RM/AgentConfigurations/<name>`) under its own file.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum CentralMode {
    /// Never ask.
    Off,
    /// Ask once at start; without an answer (no upstream yet, no section, no access) start on
    /// the local configuration.
    #[default]
    Optional,
    /// Wait for the section: retry with backoff while the upstream is unreachable or has none;
    /// refused credentials stop the agent.
    Required,
}

impl Default for AgentSection {
    fn default() -> Self {
        AgentSection {
            upstream: None,
            name: "Agent".into(),
            advertise_url: None,
            roots: Vec::new(),
            heartbeat_ms: 5_000,
            retry_max_ms: 30_000,
            request_timeout_ms: 35_000,
            upstream_user: None,
            upstream_password: None,
            central_config: CentralMode::Optional,
        }
    }
}

/// Command-line flags: the top layer, above the environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<std::net::SocketAddr>,
    /// `--upstream`.
    pub upstream: Option<String>,
    /// `--name`.
    pub name: Option<String>,
}

impl Overrides {
    /// Sets what was given on `cfg`.
    pub fn apply(&self, cfg: &mut AgentConfig) {
        if let Some(listen) = self.listen {
            cfg.server.listen = listen;
        }
        if let Some(up) = &self.upstream {
            cfg.agent.upstream = Some(up.clone());
        }
        if let Some(name) = &self.name {
            cfg.agent.name = name.clone();
        }
    }
}

/// `[hardware]`: see `conf/agent.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HardwareConfig {
    /// Registered hardware manager name (`mockup`).
    pub manager: String,
    /// The manager's own options table.
    pub options: Value,
}

impl Default for HardwareConfig {
    fn default() -> Self {
        HardwareConfig { manager: "mockup".into(), options: Value::Null }
    }
}

impl HardwareConfig {
    /// Checks what every manager shares: a `url` option (the device a manager talks to, such
    /// as the `redfish` manager's service) must be allowed by `[outbound] allow`, like every
    /// other host the agent connects to.
    ///
    /// # Errors
    /// [`StartupError::Config`] naming the key.
    pub fn validate(&self, outbound: &OutboundConfig) -> Result<(), StartupError> {
        if let Some(url) = self.options.get("url").and_then(Value::as_str) {
            let policy = sunfish_core::outbound::OutboundPolicy::parse(&outbound.allow)
                .map_err(|e| StartupError::Config(format!("outbound.allow: {e}")))?;
            policy.check(url).map_err(|e| StartupError::Config(format!("hardware.options.url {url}: {e}")))?;
        }
        Ok(())
    }
}

impl AgentSection {
    /// Checks the values serde cannot: URLs, the name, the credential pair.
    ///
    /// # Errors
    /// [`StartupError::Config`] naming the key.
    pub fn validate(&self, outbound: &OutboundConfig) -> Result<(), StartupError> {
        let policy = sunfish_core::outbound::OutboundPolicy::parse(&outbound.allow)
            .map_err(|e| StartupError::Config(format!("outbound.allow: {e}")))?;
        if let Some(up) = &self.upstream {
            policy.check(up).map_err(|e| StartupError::Config(format!("agent.upstream {up}: {e}")))?;
        }
        if let Some(url) = &self.advertise_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(StartupError::Config(format!("agent.advertise_url {url}: must be an http(s) URL")));
            }
        }
        sunfish_core::ResourcePath::root()
            .child(&self.name)
            .map_err(|e| StartupError::Config(format!("agent.name {:?}: {e}", self.name)))?;
        for r in &self.roots {
            let p = sunfish_core::ResourcePath::parse(r)
                .map_err(|e| StartupError::Config(format!("agent.roots {r}: {e}")))?;
            if p.depth() < 1 || sunfish_core::hardware::is_service_path(&p) {
                return Err(StartupError::Config(format!(
                    "agent.roots {r}: must be below /redfish/v1 and outside the agent's own services"
                )));
            }
        }
        if self.upstream_user.is_some() != self.upstream_password.is_some() {
            return Err(StartupError::Config("agent.upstream_user and agent.upstream_password go together".into()));
        }
        Ok(())
    }

    /// The upstream URL without a trailing slash.
    pub fn upstream_base(&self) -> Option<String> {
        self.upstream.as_ref().map(|u| u.trim_end_matches('/').to_string())
    }

    /// `heartbeat_ms` as a duration (at least 10 ms).
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms.max(10))
    }

    /// `retry_max_ms` as a duration (at least 200 ms).
    pub fn retry_max(&self) -> Duration {
        Duration::from_millis(self.retry_max_ms.max(200))
    }

    /// `request_timeout_ms` as a duration (at least 10 ms).
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms.max(10))
    }
}

impl AgentConfig {
    /// Loads the layers: defaults, then `file` (if any), then the environment.
    ///
    /// # Errors
    /// [`StartupError::Config`] naming the file, key or value at fault.
    pub fn load(file: Option<&Path>) -> Result<Self, StartupError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// [`AgentConfig::load`] with an explicit environment (tests).
    ///
    /// # Errors
    /// As [`AgentConfig::load`].
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, StartupError> {
        Self::load_layers(file, env, None)
    }

    /// [`AgentConfig::load_with_env`] with the agent's central section (the `Configuration`
    /// object fetched from the upstream, sections as in the file) as a layer between the
    /// defaults and the file.
    ///
    /// # Errors
    /// As [`AgentConfig::load`] ([`crate::central::layer`] checks the section on its own first,
    /// so its faults are reported as the section's).
    pub fn load_layers(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        central: Option<&Value>,
    ) -> Result<Self, StartupError> {
        let mut b = config::Config::builder();
        // Sections given in part are completed from their own (server) defaults by serde; the
        // agent's different defaults must therefore be a layer of their own.
        let d = AgentConfig::default();
        let agent_defaults: [(&str, config::Value); 4] = [
            ("server.listen", d.server.listen.to_string().into()),
            ("storage.backend", d.storage.backend.clone().into()),
            ("auth.enabled", d.auth.enabled.into()),
            ("events.max_backoff_ms", d.events.max_backoff_ms.into()),
        ];
        for (k, v) in agent_defaults {
            b = b.set_default(k, v).map_err(|e| StartupError::Config(e.to_string()))?;
        }
        if let Some(c) = central {
            let layer = config::Config::try_from(c)
                .map_err(|e| StartupError::Config(format!("central configuration section: {e}")))?;
            b = b.add_source(layer);
        }
        if let Some(f) = file {
            if !f.is_file() {
                return Err(StartupError::Config(format!("config file {} not found", f.display())));
            }
            b = b.add_source(config::File::from(f).format(config::FileFormat::Toml));
        }
        let prefix = format!("{ENV_PREFIX}__");
        let vars: std::collections::HashMap<String, String> =
            env.into_iter().filter(|(k, _)| k.starts_with(&prefix)).collect();
        let mut source = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .list_separator(",");
        for key in LIST_KEYS {
            source = source.with_list_parse_key(key);
        }
        b = b.add_source(source.source(Some(vars)));
        let built = b.build().map_err(|e| StartupError::Config(e.to_string()))?;
        let cfg: AgentConfig = built.try_deserialize().map_err(|e| {
            let at = file.map(|f| format!(" in {}", f.display())).unwrap_or_default();
            StartupError::Config(format!("{e}{at}"))
        })?;
        Ok(cfg)
    }

    /// The server configuration the agent's front end and core are built from: the shared
    /// sections as given, nothing forwarded to agents (the hardware manager takes the
    /// forwarder's place), and the aggregation service idle.
    pub fn to_server(&self) -> ServerConfig {
        let mut s = ServerConfig {
            server: self.server.clone(),
            storage: self.storage.clone(),
            event_handlers: self.event_handlers.clone(),
            objects: self.objects.clone(),
            log: self.log.clone(),
            events: self.events.clone(),
            outbound: self.outbound.clone(),
            query: self.query,
            auth: self.auth.clone(),
            schema: self.schema.clone(),
            ..ServerConfig::default()
        };
        s.aggregation.forwarder = "none".into();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// No file, no environment: the documented defaults (memory store, auth off, port 5001).
    #[test]
    fn defaults() {
        let c = AgentConfig::load_with_env(None, []).unwrap();
        assert_eq!(c, AgentConfig::default());
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:5001");
        assert_eq!(c.storage.backend, "memory");
        assert!(!c.auth.enabled);
        assert_eq!(c.agent.heartbeat_ms, 5000);
        assert_eq!(c.hardware.manager, "mockup");
    }

    /// `conf/agent.toml` is exactly the defaults.
    #[test]
    fn agent_toml_is_the_defaults() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/agent.toml");
        let c = AgentConfig::load_with_env(Some(&file), []).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!(c, AgentConfig::default());
    }

    /// `conf/agent-redfish.toml` selects the `redfish` manager with options it accepts, and its
    /// BMC URL passes the outbound policy; a URL outside it is refused naming the key.
    #[test]
    fn agent_redfish_toml_builds_its_manager() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/agent-redfish.toml");
        let mut c =
            AgentConfig::load_with_env(Some(&file), env(&[("SUNFISH_AGENT__HARDWARE__OPTIONS__PASSWORD", "pw")]))
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!(c.hardware.manager, "redfish");
        c.agent.validate(&c.outbound).unwrap();
        c.hardware.validate(&c.outbound).unwrap();
        assert!(crate::hardware_manager(&c.hardware).is_ok());
        c.hardware.options["url"] = Value::String("http://192.0.2.7".into());
        let e = c.hardware.validate(&c.outbound).unwrap_err().to_string();
        assert!(e.contains("hardware.options.url"), "{e}");
    }

    /// `SUNFISH_AGENT__SECTION__KEY` overrides, lists are comma-separated, hardware options pass
    /// through; the server's `SUNFISH__` variables are ignored.
    #[test]
    fn env_overrides() {
        let c = AgentConfig::load_with_env(
            None,
            env(&[
                ("SUNFISH_AGENT__AGENT__UPSTREAM", "http://127.0.0.1:8000"),
                ("SUNFISH_AGENT__AGENT__NAME", "CXL2"),
                ("SUNFISH_AGENT__AGENT__HEARTBEAT_MS", "250"),
                ("SUNFISH_AGENT__AGENT__ROOTS", "/redfish/v1/Fabrics/CXL,/redfish/v1/Chassis/X"),
                ("SUNFISH_AGENT__HARDWARE__OPTIONS__FAIL_OPERATIONS", "POST"),
                ("SUNFISH_AGENT__HARDWARE__OPTIONS__LATENCY_MS", "5"),
                ("SUNFISH_AGENT__STORAGE__SEED", "/tmp/tree"),
                ("SUNFISH__STORAGE__BACKEND", "fs"),
            ]),
        )
        .unwrap();
        assert_eq!(c.agent.upstream.as_deref(), Some("http://127.0.0.1:8000"));
        assert_eq!(c.agent.name, "CXL2");
        assert_eq!(c.agent.heartbeat_ms, 250);
        assert_eq!(c.agent.roots, ["/redfish/v1/Fabrics/CXL", "/redfish/v1/Chassis/X"]);
        assert_eq!(c.hardware.options, serde_json::json!({"fail_operations": ["POST"], "latency_ms": 5}));
        assert_eq!(c.storage.seed, "/tmp/tree");
        assert_eq!(c.storage.backend, "memory");
    }

    /// A section given in part keeps the agent's defaults for its other keys.
    #[test]
    fn partial_sections_keep_agent_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.toml");
        std::fs::write(&file, "[server]\nbody_limit = 10\n[auth]\nadmin_user = \"root\"\n[events]\nqueue_limit = 5\n")
            .unwrap();
        let c = AgentConfig::load_with_env(Some(&file), []).unwrap();
        assert_eq!(c.server.listen.port(), 5001);
        assert_eq!(c.server.body_limit, 10);
        assert!(!c.auth.enabled);
        assert_eq!(c.events.max_backoff_ms, 10_000);
        assert_eq!(c.storage.backend, "memory");
    }

    /// Unknown keys fail with the key named.
    #[test]
    fn unknown_keys() {
        let err =
            AgentConfig::load_with_env(None, env(&[("SUNFISH_AGENT__AGENT__UPSTREEM", "x")])).unwrap_err().to_string();
        assert!(err.contains("upstreem"), "{err}");
    }

    /// Bad values of `[agent]` are refused with the key named.
    #[test]
    fn validation() {
        let outbound = OutboundConfig::default();
        let ok = AgentSection { upstream: Some("http://127.0.0.1:8000".into()), ..AgentSection::default() };
        ok.validate(&outbound).unwrap();
        let far = AgentSection { upstream: Some("http://192.0.2.1:8000".into()), ..AgentSection::default() };
        assert!(far.validate(&outbound).unwrap_err().to_string().contains("agent.upstream"));
        let name = AgentSection { name: "a/b".into(), ..AgentSection::default() };
        assert!(name.validate(&outbound).unwrap_err().to_string().contains("agent.name"));
        let root = AgentSection { roots: vec!["/redfish/v1/EventService".into()], ..AgentSection::default() };
        assert!(root.validate(&outbound).unwrap_err().to_string().contains("agent.roots"));
        let half = AgentSection { upstream_user: Some("u".into()), ..AgentSection::default() };
        assert!(half.validate(&outbound).unwrap_err().to_string().contains("upstream_password"));
    }

    /// The server configuration keeps the shared sections and forwards nothing.
    #[test]
    fn to_server() {
        let mut c = AgentConfig::default();
        c.storage.seed = "/x".into();
        let s = c.to_server();
        assert_eq!(s.storage.seed, "/x");
        assert_eq!(s.aggregation.forwarder, "none");
        assert!(!s.auth.enabled);
        assert_eq!(s.server.listen.port(), 5001);
    }
}
