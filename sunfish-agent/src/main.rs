//! `sunfish-agent`: the CLI around [`sunfish_agent::run`].

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
// Plugin crates register at link time only if named once (inventory's linker caveat).
#[cfg(feature = "handler-audit")]
use sunfish_handler_audit as _;
#[cfg(feature = "storage-fs")]
use sunfish_storage_fs as _;
#[cfg(feature = "storage-memory")]
use sunfish_storage_memory as _;

use sunfish_agent::AgentConfig;

/// Sunfish agent: serves a device's Redfish tree, applies writes through a hardware manager and
/// registers with an upstream Sunfish service.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML); without it, built-in defaults (see conf/agent.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen address, overriding `server.listen` (`127.0.0.1:0` picks a free port; the log
    /// line `listening on ...` names it).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Base URL of the upstream Sunfish service, overriding `agent.upstream`.
    #[arg(long, value_name = "URL")]
    upstream: Option<String>,
    /// Name of the agent's ConnectionMethod, overriding `agent.name`.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Print every registered plugin (hardware managers included) as `KIND NAME DESCRIPTION`,
    /// sorted, and exit.
    #[arg(long)]
    list_plugins: bool,
    /// Build every plugin FILE configures (hardware manager included), then exit 0, or print
    /// the error and exit 1.
    #[arg(long, value_name = "FILE")]
    check_config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.list_plugins {
        return match sunfish_agent::plugins() {
            Ok(list) => {
                for p in list {
                    println!("{} {} {}", p.kind, p.name, p.description);
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        };
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(&e),
    };
    if let Some(file) = cli.check_config {
        return rt.block_on(async {
            let result = async {
                let cfg = AgentConfig::load(Some(&file))?;
                cfg.agent.validate(&cfg.outbound)?;
                sunfish_agent::hardware_manager(&cfg.hardware)?;
                let core = sunfish_core::Core::from_plugins(cfg.to_server().plugins()).await?;
                let _ = core.storage().close().await;
                Ok::<_, sunfish_core::StartupError>(())
            };
            match result.await {
                Ok(()) => {
                    println!("{}: ok", file.display());
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        });
    }
    let mut cfg = match AgentConfig::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    if let Some(listen) = cli.listen {
        cfg.server.listen = listen;
    }
    if let Some(up) = cli.upstream {
        cfg.agent.upstream = Some(up);
    }
    if let Some(name) = cli.name {
        cfg.agent.name = name;
    }
    init_logging(&cfg.log.level);
    rt.block_on(async move {
        if let Err(e) = cfg.server.tls.load() {
            return fail(&e);
        }
        let agent = match sunfish_agent::build(&cfg).await {
            Ok(a) => a,
            Err(e) => return fail(&e),
        };
        let listener = match tokio::net::TcpListener::bind(cfg.server.listen).await {
            Ok(l) => l,
            Err(e) => return fail(&format!("cannot listen on {}: {e}", cfg.server.listen)),
        };
        tracing::info!(backend = %cfg.storage.backend, manager = %cfg.hardware.manager, "sunfish-agent ready");
        match sunfish_agent::run(listener, agent, shutdown_signal()).await {
            Ok(()) => {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        }
    })
}

fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("sunfish-agent: {e}");
    ExitCode::FAILURE
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Plain text when the log goes to a file or a pipe (scripts read the `listening on` line).
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutdown requested");
}
