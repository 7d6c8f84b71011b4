//! Configuration: serde defaults, then the file given by `--config`, then `SUNFISH__SECTION__KEY`
//! environment variables. Every section refuses unknown keys, so a typo fails at start with the
//! key named. Plugin options tables are passed through to the selected plugin, which checks them.
//! `conf/default.toml` documents every key; a test checks it equals these defaults.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;
use sunfish_core::{PluginSelection, StartupError};

/// The whole configuration of `sunfish-server`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// `[server]`: listening and HTTP limits.
    pub server: HttpConfig,
    /// `[storage]`: backend, its options, the seed tree.
    pub storage: StorageConfig,
    /// `[event_handlers.<name>]`: options per event handler.
    pub event_handlers: BTreeMap<String, Value>,
    /// `[objects]`: active object handlers.
    pub objects: ObjectsConfig,
    /// `[aggregation]`: agent forwarding.
    pub aggregation: AggregationConfig,
    /// `[log]`: logging.
    pub log: LogConfig,
    /// `[events]`: event delivery tuning.
    pub events: EventsConfig,
    /// `[outbound]`: which hosts the service may connect to.
    pub outbound: OutboundConfig,
    /// `[query]`: limits on `$expand` work per request.
    pub query: sunfish_core::query::Budget,
    /// `[auth]`: authentication.
    pub auth: AuthConfig,
    /// `[schema]`: the DMTF schema bundle.
    pub schema: SchemaConfig,
    /// `[metrics]`: the Prometheus endpoint.
    pub metrics: crate::metrics::MetricsConfig,
    /// `[ui]`: the web console.
    pub ui: crate::ui::UiConfig,
}

/// `[schema]`: see `conf/default.toml`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SchemaConfig {
    /// A DSP8010 bundle directory (with `json-schema/` and `csdl/`). When set, write bodies are
    /// validated against it, `Allow` and 405s follow its capabilities, `excerpt` uses its
    /// annotations and `$metadata` references only what it defines.
    pub dir: Option<std::path::PathBuf>,
}

/// `[auth]`: see `conf/default.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Whether requests must authenticate (Basic or session token).
    pub enabled: bool,
    /// The bootstrap Administrator's user name.
    pub admin_user: String,
    /// Its password, used when the account does not exist yet; without it a password is
    /// generated and logged once.
    pub admin_password: Option<String>,
    /// Let agents that send no credentials (the reference's) post to `/EventListener`.
    pub open_event_listener: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig { enabled: true, admin_user: "admin".into(), admin_password: None, open_event_listener: false }
    }
}

/// `[events]`: see `conf/default.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Events waiting per subscription before new ones are dropped for it.
    pub queue_limit: usize,
    /// Envelopes kept for SSE `Last-Event-ID` replay.
    pub replay_limit: usize,
    /// Timeout of one delivery attempt, in milliseconds.
    pub attempt_timeout_ms: u64,
    /// Longest wait between attempts under `RetryForeverWithBackoff`, in milliseconds.
    pub max_backoff_ms: u64,
    /// How often delivery counters are written to subscriptions, in milliseconds.
    pub counters_interval_ms: u64,
    /// Most subscriptions accepted.
    pub max_subscriptions: usize,
    /// Interval of SSE keep-alive comments, in milliseconds.
    pub sse_keepalive_ms: u64,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            queue_limit: 100_000,
            replay_limit: 1_000,
            attempt_timeout_ms: 10_000,
            max_backoff_ms: 300_000,
            counters_interval_ms: 1_000,
            max_subscriptions: 1_000,
            sse_keepalive_ms: 15_000,
        }
    }
}

/// `[outbound]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// CIDR blocks, addresses, host names and `*.suffix` wildcards the service may connect to.
    pub allow: Vec<String>,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig { allow: vec!["127.0.0.0/8".into(), "::1/128".into(), "localhost".into()] }
    }
}

impl EventsConfig {
    /// The core's EventService configuration.
    ///
    /// # Errors
    /// A bad `outbound.allow` entry.
    pub fn to_core(
        &self,
        outbound: &OutboundConfig,
    ) -> Result<sunfish_core::eventservice::EventServiceConfig, StartupError> {
        use std::time::Duration;
        let policy = sunfish_core::outbound::OutboundPolicy::parse(&outbound.allow)
            .map_err(|e| StartupError::Config(format!("outbound.allow: {e}")))?;
        Ok(sunfish_core::eventservice::EventServiceConfig {
            queue_limit: self.queue_limit,
            replay_limit: self.replay_limit,
            attempt_timeout: Duration::from_millis(self.attempt_timeout_ms),
            max_backoff: Duration::from_millis(self.max_backoff_ms),
            counters_interval: Duration::from_millis(self.counters_interval_ms.max(10)),
            max_subscriptions: self.max_subscriptions,
            outbound: policy,
        })
    }
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Largest accepted request body in bytes; larger ones get 413.
    pub body_limit: usize,
    /// Most connections served at once; past it new ones wait in the listen backlog (0: no
    /// limit).
    pub max_connections: usize,
    /// Milliseconds a client has to finish a request head (and a TLS handshake, and the wait
    /// for the next request on a keep-alive connection) before the connection is closed (0: no
    /// limit).
    pub header_timeout_ms: u64,
    /// Milliseconds until a response head is ready; later ones are answered 503 (0: no limit).
    pub request_timeout_ms: u64,
    /// Largest total size of request headers in bytes; larger ones get 431 (0: hyper's own
    /// limit only).
    pub max_header_bytes: usize,
    /// `[server.tls]`: HTTPS when a certificate and key are set.
    pub tls: crate::tls::TlsConfig,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            body_limit: 1024 * 1024,
            max_connections: 1024,
            header_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
            max_header_bytes: 16 * 1024,
            tls: crate::tls::TlsConfig::default(),
        }
    }
}

/// `[storage]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Registered backend name (`fs`, `memory`).
    pub backend: String,
    /// The backend's own options (for `fs`: `root`, `fsync`).
    pub options: Value,
    /// Tree an empty store is seeded with: `builtin` (the tree compiled into the binary, from
    /// `conf/seed`), `none`, or a directory in the `index.json` layout.
    pub seed: String,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig { backend: "fs".into(), options: Value::Null, seed: "builtin".into() }
    }
}

/// `[objects]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ObjectsConfig {
    /// Active object handlers, in call order.
    pub handlers: Vec<String>,
    /// Options per object handler name.
    pub options: BTreeMap<String, Value>,
}

/// `[aggregation]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AggregationConfig {
    /// Registered agent forwarder name (`agents`, or `none` to apply every write locally).
    pub forwarder: String,
    /// The forwarder's options.
    pub options: Value,
    /// Every request to an agent gives up after this long.
    pub request_timeout_ms: u64,
    /// Agent GETs in flight during an upload.
    pub crawl_concurrency: usize,
    /// An agent silent this long gets a GET of its service root.
    pub liveness_interval_ms: u64,
    /// An agent silent this long is marked `UnavailableOffline`.
    pub liveness_timeout_ms: u64,
    /// AggregationSource Ids or HostNames (`*`: all) whose resources are re-read on GET.
    pub read_through: Vec<String>,
    /// `[[aggregation.agent_credentials]]`: Basic credentials sent to agents whose URL starts
    /// with `url` (agents that require authentication, such as an agent host supervisor).
    pub agent_credentials: Vec<AgentCredential>,
}

/// One `[[aggregation.agent_credentials]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentCredential {
    /// Agent base URL (prefix, on a path or port boundary): `http://10.0.0.5:5100`.
    pub url: String,
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
}

impl Default for AggregationConfig {
    fn default() -> Self {
        AggregationConfig {
            forwarder: "agents".into(),
            options: Value::Null,
            request_timeout_ms: 5000,
            crawl_concurrency: 16,
            liveness_interval_ms: 10_000,
            liveness_timeout_ms: 30_000,
            read_through: Vec::new(),
            agent_credentials: Vec::new(),
        }
    }
}

impl AggregationConfig {
    /// The core's settings; agents get credentials when `auth_enabled`.
    ///
    /// # Errors
    /// A bad `outbound.allow` entry.
    pub fn to_core(
        &self,
        outbound: &OutboundConfig,
        auth_enabled: bool,
    ) -> Result<sunfish_core::aggregation::AggregationConfig, StartupError> {
        use std::time::Duration;
        let policy = sunfish_core::outbound::OutboundPolicy::parse(&outbound.allow)
            .map_err(|e| StartupError::Config(format!("outbound.allow: {e}")))?;
        Ok(sunfish_core::aggregation::AggregationConfig {
            request_timeout: Duration::from_millis(self.request_timeout_ms.max(1)),
            crawl_concurrency: self.crawl_concurrency.max(1),
            liveness_interval: Duration::from_millis(self.liveness_interval_ms.max(10)),
            liveness_timeout: Duration::from_millis(self.liveness_timeout_ms.max(10)),
            read_through: self.read_through.clone(),
            credentials: auth_enabled,
            outbound: policy,
            agent_credentials: self
                .agent_credentials
                .iter()
                .map(|c| (c.url.trim_end_matches('/').to_string(), c.user.clone(), c.password.clone()))
                .collect(),
        })
    }
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter (`info`, `sunfish_core=debug,info`); `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: "info".into() }
    }
}

impl ServerConfig {
    /// Loads the layers: defaults, then `file` (if any), then the environment.
    ///
    /// # Errors
    /// [`StartupError::Config`] naming the file, key or value at fault.
    pub fn load(file: Option<&Path>) -> Result<Self, StartupError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// [`ServerConfig::load`] with an explicit environment (tests).
    ///
    /// # Errors
    /// As [`ServerConfig::load`].
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, StartupError> {
        let mut b = config::Config::builder();
        if let Some(f) = file {
            if !f.is_file() {
                return Err(StartupError::Config(format!("config file {} not found", f.display())));
            }
            b = b.add_source(config::File::from(f).format(config::FileFormat::Toml));
        }
        let vars: std::collections::HashMap<String, String> =
            env.into_iter().filter(|(k, _)| k.starts_with("SUNFISH__")).collect();
        b = b.add_source(
            config::Environment::with_prefix("SUNFISH")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(vars)),
        );
        let built = b.build().map_err(|e| StartupError::Config(e.to_string()))?;
        let cfg: ServerConfig = built.try_deserialize().map_err(|e| {
            let at = file.map(|f| format!(" in {}", f.display())).unwrap_or_default();
            StartupError::Config(format!("{e}{at}"))
        })?;
        Ok(cfg)
    }

    /// The plugins this configuration selects.
    pub fn plugins(&self) -> PluginSelection {
        PluginSelection {
            storage: (self.storage.backend.clone(), self.storage.options.clone()),
            event_handlers: self.event_handlers.clone(),
            object_handlers: self
                .objects
                .handlers
                .iter()
                .map(|n| (n.clone(), self.objects.options.get(n).cloned().unwrap_or(Value::Null)))
                .collect(),
            forwarder: (self.aggregation.forwarder.clone(), self.aggregation.options.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No file, no environment: the documented defaults.
    #[test]
    fn defaults() {
        let c = ServerConfig::load_with_env(None, []).unwrap();
        assert_eq!(c, ServerConfig::default());
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8000");
        assert_eq!(c.storage.backend, "fs");
    }

    /// `SUNFISH__SECTION__KEY` overrides, including nested plugin options.
    #[test]
    fn env_overrides() {
        let c = ServerConfig::load_with_env(
            None,
            [
                ("SUNFISH__STORAGE__BACKEND".to_string(), "memory".to_string()),
                ("SUNFISH__SERVER__LISTEN".to_string(), "127.0.0.1:9999".to_string()),
                ("SUNFISH__STORAGE__OPTIONS__ROOT".to_string(), "/tmp/x".to_string()),
            ],
        )
        .unwrap();
        assert_eq!(c.storage.backend, "memory");
        assert_eq!(c.server.listen.port(), 9999);
        assert_eq!(c.storage.options["root"], "/tmp/x");
    }

    /// Unknown keys and bad values fail with the key named.
    #[test]
    fn unknown_and_bad() {
        let err = ServerConfig::load_with_env(None, [("SUNFISH__STORAGE__BAKEND".to_string(), "x".to_string())])
            .unwrap_err()
            .to_string();
        assert!(err.contains("bakend"), "{err}");
        let err = ServerConfig::load_with_env(None, [("SUNFISH__SERVER__LISTEN".to_string(), "nope".to_string())])
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen") || err.contains("address"), "{err}");
    }
}
