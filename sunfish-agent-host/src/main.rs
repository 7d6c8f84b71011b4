//! `sunfish-agent-host`: the CLI around [`sunfish_agent_host::run`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Sunfish agent host supervisor: runs this host's agent instances as child processes, keeps
/// them in their target states, and serves a Redfish view of them that registers upstream.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Host file (TOML; see conf/agent-host.toml).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The view's listen address, overriding `server.listen` of the host file.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Check FILE (every instance's agent configuration included), then exit 0, or print the
    /// error and exit 1.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.check {
        return match sunfish_agent_host::HostFile::load(&cli.config) {
            Ok(h) => {
                println!("{}: ok ({} instances)", cli.config.display(), h.instances.len());
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        };
    }
    let level = match sunfish_agent_host::HostFile::load(&cli.config) {
        Ok(h) => h.supervisor.log.level,
        Err(e) => return fail(&e),
    };
    sunfish_agent::init_logging(&level);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(&e),
    };
    match rt.block_on(sunfish_agent_host::run(&cli.config, cli.listen)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("sunfish-agent-host: {e}");
    ExitCode::FAILURE
}
