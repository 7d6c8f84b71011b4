//! # sunfish-agent
//!
//! The Sunfish agent: serves one device's Redfish tree with the same [`sunfish_core::Core`] and
//! HTTP front end as `sunfish-server`, puts a [`HardwareManager`] in front of every write to the
//! device's resources, and registers with an upstream Sunfish service (docs/AGGREGATION.md,
//! agent side).
//!
//! Layout: [`config`] (layers and keys: the server's sections plus `[agent]` and
//! `[hardware]`), [`build`] (the core with the hardware manager, the agent's tree prepared for
//! registration), [`run`] (serve a listener until shutdown, with the registrar and the hardware
//! change feed running beside it), [`registrar`] (register, upload, heartbeats, re-register),
//! [`mockup`] (the `mockup` hardware manager). `main.rs` is only the CLI; after parsing it
//! calls [`serve`], which is also what a custom agent's `main` calls with its own manager
//! (`examples/custom_agent.rs`, docs/AGENTS.md).
//!
//! Lifecycle: [`build`] opens and seeds the store, writes the ConnectionMethod and the
//! `SunfishServer` subscription when an upstream is configured, and starts the hardware
//! manager ([`HardwareManager::start`]). [`run`] binds nothing itself: it serves the listener it
//! is given (so tests use `127.0.0.1:0`), logs `listening on <base URL>`, and stops the
//! registrar and the change feed before storage is closed.

pub mod central;
pub mod config;
pub mod mockup;
pub mod redfish;
pub mod registrar;

use std::future::Future;
use std::sync::Arc;

use sunfish_core::hardware::{ChangeSink, HardwareChange, HardwareManager, HardwareManagerRegistration};
use sunfish_core::registry::{entries, list_all, lookup, PluginInfo, Registration};
use sunfish_core::{Core, PluginOptions, StartupError};
use sunfish_server::AppState;
use tokio::net::TcpListener;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

// The storage backends and handlers the agent ships with, linked into every binary built on this
// library (inventory registers a plugin only when its crate is named once).
#[cfg(feature = "handler-audit")]
use sunfish_handler_audit as _;
#[cfg(feature = "storage-fs")]
use sunfish_storage_fs as _;
#[cfg(feature = "storage-memory")]
use sunfish_storage_memory as _;

pub use config::{AgentConfig, Overrides};
pub use registrar::{Phase, Registrar};
/// Resolves on SIGINT or SIGTERM (the shutdown [`serve`] waits for).
pub use sunfish_server::shutdown_signal;

/// A built agent, ready to [`run`].
pub struct Agent {
    /// The front end's state (core, HTTP settings).
    state: AppState,
    /// The configuration it was built from.
    config: AgentConfig,
    /// Changes the hardware manager reports, until [`run`] drains them.
    changes: UnboundedReceiver<HardwareChange>,
    /// The manager, told to stop when the agent does.
    manager: Arc<dyn HardwareManager>,
    /// The registrar's phase, once [`run`] started it (for embedders and tests).
    phase: Option<tokio::sync::watch::Receiver<Phase>>,
}

impl Agent {
    /// The agent's core.
    pub fn core(&self) -> &Core {
        &self.state.core
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }
}

/// Every registered plugin (the core's kinds and hardware managers), sorted by kind then name:
/// what `sunfish-agent --list-plugins` prints.
///
/// # Errors
/// A duplicate registration of any kind.
pub fn plugins() -> Result<Vec<PluginInfo>, StartupError> {
    let mut out = list_all()?;
    for r in entries::<HardwareManagerRegistration>()? {
        out.push(PluginInfo { kind: HardwareManagerRegistration::KIND, name: r.name, description: r.description });
    }
    out.sort();
    Ok(out)
}

/// Builds the hardware manager `[hardware]` names, with its options.
///
/// # Errors
/// An unknown manager (the registered ones are listed) or options it refuses.
pub fn hardware_manager(cfg: &config::HardwareConfig) -> Result<Arc<dyn HardwareManager>, StartupError> {
    let reg = lookup::<HardwareManagerRegistration>(&cfg.manager)?;
    (reg.build)(PluginOptions::new(HardwareManagerRegistration::KIND, &cfg.manager, cfg.options.clone()))
}

/// Builds the agent from configuration, with the hardware manager it names.
///
/// # Errors
/// As [`build_with_manager`], and an unknown or misconfigured hardware manager.
pub async fn build(cfg: &AgentConfig) -> Result<Agent, StartupError> {
    cfg.hardware.validate(&cfg.outbound)?;
    build_with_manager(cfg, hardware_manager(&cfg.hardware)?).await
}

/// Builds the agent with `manager` in front of the device's resources (for embedders with
/// their own manager; `[hardware]` is ignored).
///
/// # Errors
/// Bad `[agent]` values, every error of `sunfish_server::build`, a tree that cannot be
/// prepared for registration, a manager that cannot start.
pub async fn build_with_manager(cfg: &AgentConfig, manager: Arc<dyn HardwareManager>) -> Result<Agent, StartupError> {
    cfg.agent.validate(&cfg.outbound)?;
    let hw = manager.clone();
    let state = sunfish_server::build_with(&cfg.to_server(), move |b| b.hardware(hw)).await?;
    let core = state.core.clone();
    if let Some(upstream) = cfg.agent.upstream_base() {
        registrar::prepare_tree(&core, &upstream, &cfg.agent.name, &cfg.agent.roots)
            .await
            .map_err(|e| StartupError::Config(format!("preparing the tree for registration: {e}")))?;
    }
    let (sink, changes) = ChangeSink::channel();
    manager
        .start(&core, sink)
        .await
        .map_err(|e| StartupError::Io { what: "starting the hardware manager".into(), reason: e.to_string() })?;
    Ok(Agent { state, config: cfg.clone(), changes, manager, phase: None })
}

/// The base URL the upstream reaches the agent at: `agent.advertise_url`, else
/// `http(s)://<bound address>`.
pub fn base_url(cfg: &AgentConfig, addr: std::net::SocketAddr) -> String {
    match &cfg.agent.advertise_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => {
            let scheme = if cfg.server.tls.is_configured() { "https" } else { "http" };
            format!("{scheme}://{addr}")
        }
    }
}

/// Starts what runs beside the HTTP front end: the hardware change feed and, with an upstream,
/// the registrar. Everything stops when `cancel` fires. Returns the tasks to wait for.
fn start_background(agent: &mut Agent, base: String, cancel: &CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    let core = agent.state.core.clone();
    let mut changes = std::mem::replace(&mut agent.changes, tokio::sync::mpsc::unbounded_channel().1);
    let stop = cancel.clone();
    tasks.push(tokio::spawn(async move {
        loop {
            let change = tokio::select! {
                _ = stop.cancelled() => return,
                c = changes.recv() => match c { Some(c) => c, None => return },
            };
            if let Err(e) = core.apply_change(change).await {
                warn!(error = %e, "hardware change not applied");
            }
        }
    }));
    let a = &agent.config.agent;
    if let Some(upstream) = a.upstream_base() {
        let client = match sunfish_server::transport::HttpTransport::new() {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "no HTTP client; not registering");
                return tasks;
            }
        };
        let settings = registrar::Settings {
            upstream,
            name: a.name.clone(),
            base_url: base,
            roots: a.roots.clone(),
            heartbeat: a.heartbeat(),
            retry_max: a.retry_max(),
            request_timeout: a.request_timeout(),
            credentials: a.upstream_user.clone().zip(a.upstream_password.clone()),
        };
        let reg = Registrar::new(agent.state.core.clone(), settings, Arc::new(client));
        agent.phase = Some(reg.phase());
        tasks.push(tokio::spawn(reg.run(cancel.clone())));
    } else {
        info!("no agent.upstream: serving without registering");
    }
    tasks
}

/// Serves `listener` until `shutdown` completes, registering with the upstream meanwhile; then
/// stops the registrar, lets in-flight requests finish and closes storage.
///
/// # Errors
/// I/O errors of the listener, a bad `server.tls`, a storage close failure.
pub async fn run(
    listener: TcpListener,
    agent: Agent,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    run_with_phase(listener, agent, shutdown, |_| {}).await
}

/// [`run`], handing the registrar's phase receiver to `on_phase` once it exists (embedders and
/// tests that wait for the registration).
///
/// # Errors
/// As [`run`].
pub async fn run_with_phase(
    listener: TcpListener,
    mut agent: Agent,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_phase: impl FnOnce(tokio::sync::watch::Receiver<Phase>),
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let base = base_url(&agent.config, addr);
    info!(url = %base, name = %agent.config.agent.name, "listening on {base}");
    let cancel = CancellationToken::new();
    let tasks = start_background(&mut agent, base, &cancel);
    if let Some(p) = agent.phase.take() {
        on_phase(p);
    }
    let token = cancel.clone();
    let shutdown = async move {
        shutdown.await;
        token.cancel();
    };
    let manager = agent.manager.clone();
    let result = sunfish_server::run(listener, agent.state, shutdown).await;
    cancel.cancel();
    manager.stop().await;
    // Cancelled tasks end at their next await point; one stuck in a request to the upstream is
    // aborted rather than waited for.
    for mut t in tasks {
        if tokio::time::timeout(std::time::Duration::from_secs(2), &mut t).await.is_err() {
            t.abort();
        }
    }
    result
}

/// Runs an agent the way `sunfish-agent` does once its configuration is loaded: checks
/// `server.tls`, builds the agent with `manager` (`None`: the one `[hardware]` names), binds
/// `server.listen`, and serves until SIGINT or SIGTERM ([`shutdown_signal`]). One call is a
/// custom agent's whole `main` body.
///
/// # Errors
/// A bad `server.tls`, every error of [`build`]/[`build_with_manager`], an address that cannot
/// be bound, and I/O errors while serving.
pub async fn serve(cfg: &AgentConfig, manager: Option<Arc<dyn HardwareManager>>) -> Result<(), StartupError> {
    cfg.server.tls.load()?;
    let manager_name = if manager.is_some() { "(embedded)" } else { cfg.hardware.manager.as_str() };
    let agent = match manager {
        Some(m) => build_with_manager(cfg, m).await?,
        None => build(cfg).await?,
    };
    let listener = TcpListener::bind(cfg.server.listen).await.map_err(|e| StartupError::Io {
        what: format!("cannot listen on {}", cfg.server.listen),
        reason: e.to_string(),
    })?;
    info!(backend = %cfg.storage.backend, manager = %manager_name, "sunfish-agent ready");
    run(listener, agent, shutdown_signal())
        .await
        .map_err(|e| StartupError::Io { what: "serving".into(), reason: e.to_string() })?;
    info!("stopped");
    Ok(())
}

/// Logs to stderr with `level` as the tracing filter (`RUST_LOG` overrides it); plain text when
/// stderr is not a terminal, so scripts and tests can read the `listening on <URL>` line.
pub fn init_logging(level: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}
