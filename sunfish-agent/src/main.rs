//! `sunfish-agent`: the CLI around [`sunfish_agent::run`].

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

use sunfish_agent::{AgentConfig, Overrides};

/// mimalloc instead of the system allocator, as in sunfish-server (many small JSON values).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Base URL of the upstream Sunfish service, overriding `agent.upstream`. With
    /// `agent.central_config` on (the default, `optional`), the agent's configuration section
    /// is fetched from there first and layered under the file, environment and flags.
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
                cfg.hardware.validate(&cfg.outbound)?;
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
    let overrides = Overrides { listen: cli.listen, upstream: cli.upstream, name: cli.name };
    let mut local = match AgentConfig::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    overrides.apply(&mut local);
    // Logging starts on the local level: the central section is fetched with it on.
    sunfish_agent::init_logging(&local.log.level);
    let cfg = match rt.block_on(sunfish_agent::central::resolve(local, cli.config.as_deref(), &overrides)) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    match rt.block_on(sunfish_agent::serve(&cfg, None)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("sunfish-agent: {e}");
    ExitCode::FAILURE
}
