//! `sunfish-server`: the CLI around [`sunfish_server::run`].

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
#[cfg(feature = "storage-postgres")]
use sunfish_storage_postgres as _;

use sunfish_server::ServerConfig;

/// mimalloc instead of the system allocator: a request allocates many small JSON values, and
/// glibc's malloc and free were about a fifth of the server's CPU under load.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sunfish fabric manager: a Redfish service that aggregates agents into one tree.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML); without it, built-in defaults (see conf/default.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen address, overriding `server.listen`.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Print every registered plugin as `KIND NAME DESCRIPTION`, sorted, and exit.
    #[arg(long)]
    list_plugins: bool,
    /// Build every plugin FILE configures, then exit 0, or print the error and exit 1.
    #[arg(long, value_name = "FILE")]
    check_config: Option<PathBuf>,
    /// Copy a whole store (resources and the services' private records) from STORE into the
    /// configured backend, which must be empty, then exit. STORE is `fs:DIR` or
    /// `postgres:URL`. Stop every server on either store first.
    #[arg(long, value_name = "STORE", conflicts_with = "export_to")]
    migrate_from: Option<String>,
    /// Copy the configured store into STORE (`fs:DIR`, `postgres:URL`), which must be empty,
    /// then exit: a backup, or the first half of a move.
    #[arg(long, value_name = "STORE")]
    export_to: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.list_plugins {
        return match sunfish_core::registry::list_all() {
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
                let cfg = ServerConfig::load(Some(&file))?;
                let core = sunfish_core::Core::from_plugins(cfg.plugins()).await?;
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
    let mut cfg = match ServerConfig::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    if let Some(listen) = cli.listen {
        cfg.server.listen = listen;
    }
    init_logging(&cfg.log.level);
    let copy = match (&cli.migrate_from, &cli.export_to) {
        (Some(s), _) => Some((s.clone(), sunfish_server::migrate::Direction::Import)),
        (None, Some(s)) => Some((s.clone(), sunfish_server::migrate::Direction::Export)),
        (None, None) => None,
    };
    if let Some((spec, direction)) = copy {
        return match rt.block_on(sunfish_server::migrate::run(&cfg, &spec, direction)) {
            Ok(c) => {
                println!("copied {} resources and {} records", c.resources, c.records);
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        };
    }
    rt.block_on(async move {
        // Certificate files first: a bad one stops the start before the store is opened.
        let tls = match cfg.server.tls.load() {
            Ok(t) => t,
            Err(e) => return fail(&e),
        };
        let state = match sunfish_server::build(&cfg).await {
            Ok(s) => s,
            Err(e) => return fail(&e),
        };
        let listener = match tokio::net::TcpListener::bind(cfg.server.listen).await {
            Ok(l) => l,
            Err(e) => return fail(&format!("cannot listen on {}: {e}", cfg.server.listen)),
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(listen = %cfg.server.listen, %scheme, backend = %cfg.storage.backend, "sunfish-server ready");
        match sunfish_server::run_with_tls(listener, state, tls, sunfish_server::shutdown_signal()).await {
            Ok(()) => {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        }
    })
}

fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("sunfish-server: {e}");
    ExitCode::FAILURE
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
