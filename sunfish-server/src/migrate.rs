//! `sunfish-server --migrate-from STORE` and `--export-to STORE`: a whole store from another
//! backend into the configured one, or the configured one into another
//! ([`sunfish_core::migrate`]). A progress bar on a terminal, progress lines in the log
//! otherwise. The server does not serve meanwhile; stop it (all its instances) first.

use std::io::IsTerminal;

use sunfish_core::migrate::{copy_store, open, parse_store, Copied};
use sunfish_core::StartupError;
use tracing::info;

use crate::ServerConfig;

/// Which way to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the store named on the command line into the configured one.
    Import,
    /// From the configured store into the one named on the command line.
    Export,
}

/// Copies between the configured store and `spec` (`fs:DIR`, `postgres:URL`).
///
/// # Errors
/// A bad `spec`, a store that cannot be opened, a target that is not empty, storage failures.
pub async fn run(cfg: &ServerConfig, spec: &str, direction: Direction) -> Result<Copied, StartupError> {
    let (name, options) = parse_store(spec)?;
    let configured = open(&cfg.storage.backend, cfg.storage.options.clone()).await?;
    let other = open(&name, options).await?;
    let (from, to, what) = match direction {
        Direction::Import => (&other, &configured, format!("{spec} → {} (configured)", cfg.storage.backend)),
        Direction::Export => (&configured, &other, format!("{} (configured) → {spec}", cfg.storage.backend)),
    };
    info!(copy = %what, "copying the store");
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(0);
        if let Ok(style) = indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} resources ({eta})") {
            b.set_style(style.progress_chars("=> "));
        }
        b.set_message(what.clone());
        b
    });
    let mut logged = 0;
    let result = copy_store(&**from, &**to, |done, total| match &bar {
        Some(b) => {
            b.set_length(total as u64);
            b.set_position(done as u64);
        }
        None => {
            // A line per tenth, for logs.
            let tenth = (done * 10).checked_div(total).unwrap_or(10);
            if tenth > logged || done == total {
                logged = tenth;
                info!(done, total, "copying resources");
            }
        }
    })
    .await;
    if let Some(b) = bar {
        b.finish();
    }
    let closed = (from.close().await, to.close().await);
    let copied = result.map_err(|e| StartupError::Io { what: format!("copying {what}"), reason: e.to_string() })?;
    for c in [closed.0, closed.1] {
        c.map_err(|e| StartupError::Io { what: "closing a store".into(), reason: e.to_string() })?;
    }
    info!(resources = copied.resources, records = copied.records, "store copied");
    Ok(copied)
}
