//! # sunfish-agent-host
//!
//! The agent host supervisor: one process per management host keeps that host's agent
//! instances running (OCS's HostManager is the model). It reads a host file ([`config`]),
//! runs each instance as a child `sunfish-agent` process (so a crashing hardware manager
//! cannot take the others down), restarts children that exit while their target is `up`, stops
//! those set `down`, and serves a small Redfish view of itself ([`view`]) through the same agent
//! machinery as any device: it registers upstream like an agent, and a PATCH of an instance's
//! `TargetState` made upstream is forwarded to it. SIGHUP re-reads the host file: new instances
//! start, removed ones stop. SIGINT/SIGTERM stop every child, then the supervisor.
//!
//! Layout: [`config`] (the host file), [`supervisor`] (child processes and their states),
//! [`view`] (the Redfish view, a `HardwareManager`), [`run`] (all of it, what `main` calls).

pub mod config;
pub mod supervisor;
pub mod view;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sunfish_core::StartupError;
use tokio::net::TcpListener;
use tracing::{info, warn};

pub use config::{HostFile, HostSection, InstanceSpec, Target};
pub use supervisor::{Phase, Settings, Snapshot, Supervisor};

/// The `sunfish-agent` binary children run: `host.agent_binary`, else the one beside this
/// binary, else `sunfish-agent` on PATH.
pub fn agent_binary(host: &HostSection) -> PathBuf {
    if let Some(b) = &host.agent_binary {
        return b.clone();
    }
    let beside = std::env::current_exe().ok().and_then(|e| e.parent().map(|d| d.join("sunfish-agent")));
    beside.filter(|p| p.is_file()).unwrap_or_else(|| PathBuf::from("sunfish-agent"))
}

/// Runs the supervisor of `file` until SIGINT or SIGTERM: starts the instances, serves the
/// view (on `listen` if given, else the file's `server.listen`), registers it upstream,
/// re-reads the file on SIGHUP; at the end stops every child.
///
/// # Errors
/// A bad host file, a view that cannot be built or bound, a state directory that cannot be made.
pub async fn run(file: &Path, listen: Option<SocketAddr>) -> Result<(), StartupError> {
    let hf = HostFile::load(file)?;
    let mut own = hf.supervisor.clone();
    if let Some(l) = listen {
        own.server.listen = l;
    }
    let host = own.agent.name.clone();
    // What the view uploads: the supervisor's Manager (Managers are not uploaded by default)
    // and its instances (a crawl does not follow links inside Oem).
    if own.agent.roots.is_empty() {
        let paths = view::Paths::new(&host).map_err(|e| StartupError::Config(format!("agent.name {host:?}: {e}")))?;
        own.agent.roots = vec![paths.manager.to_string(), paths.instances.to_string()];
    }
    let io = |what: &str, e: std::io::Error| StartupError::Io { what: what.to_string(), reason: e.to_string() };
    let (state_dir, _temporary) = match &hf.host.state_dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|e| io(&format!("state_dir {}", d.display()), e))?;
            (d.clone(), None)
        }
        None => {
            let t = tempfile::Builder::new().prefix("sunfish-agent-host-").tempdir().map_err(|e| io("state_dir", e))?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let settings = Settings {
        binary: agent_binary(&hf.host),
        state_dir: state_dir.clone(),
        host: hf.host.clone(),
        upstream: own.agent.upstream.clone(),
    };
    info!(binary = %settings.binary.display(), state_dir = %state_dir.display(), instances = hf.instances.len(), "supervising");
    let (supervisor, changes) = Supervisor::new(settings);
    supervisor.apply(&hf.instances);
    let view = view::HostView::new(supervisor.clone(), &host, changes)
        .map_err(|e| StartupError::Config(format!("agent.name {host:?}: {e}")))?;
    let agent = match sunfish_agent::build_with_manager(&own, Arc::new(view)).await {
        Ok(a) => a,
        Err(e) => {
            supervisor.shutdown().await;
            return Err(e);
        }
    };
    let listener = match TcpListener::bind(own.server.listen).await {
        Ok(l) => l,
        Err(e) => {
            supervisor.shutdown().await;
            return Err(io(&format!("cannot listen on {}", own.server.listen), e));
        }
    };
    let reload = tokio::spawn(reload_on_hangup(file.to_path_buf(), supervisor.clone()));
    let served = sunfish_agent::run(listener, agent, sunfish_agent::shutdown_signal()).await;
    reload.abort();
    info!("stopping every instance");
    supervisor.shutdown().await;
    served.map_err(|e| io("serving", e))?;
    info!("stopped");
    Ok(())
}

/// Re-reads the host file at every SIGHUP and applies its instances.
async fn reload_on_hangup(file: PathBuf, supervisor: Arc<Supervisor>) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        warn!("no SIGHUP handler: reload by restarting the supervisor");
        return;
    };
    while hup.recv().await.is_some() {
        match HostFile::load(&file) {
            Ok(h) => {
                let (added, removed) = supervisor.apply(&h.instances);
                info!(?added, ?removed, "host file reloaded");
            }
            Err(e) => warn!(error = %e, "host file not reloaded; the instances keep running as they are"),
        }
    }
}
