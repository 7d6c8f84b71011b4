//! # sunfish-server
//!
//! The standalone Sunfish fabric service: Redfish over HTTP in front of [`sunfish_core::Core`].
//!
//! Layout: [`config`] (layers and keys), [`build`] (plugins from config, seed), [`app`] (the
//! router, for `oneshot` tests), [`run`] (serve a listener until shutdown, then close storage),
//! [`routes`] (the dispatcher), [`error`] (the only place that picks statuses), [`seed`].
//! `main.rs` is only the CLI.

pub mod config;
pub mod error;
pub mod routes;
pub mod seed;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use sunfish_core::{Core, StartupError};
use tokio::net::TcpListener;

pub use config::ServerConfig;

/// What every request handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The service core (storage, handlers, forwarder).
    pub core: Core,
    /// `[server]` settings used per request (limits).
    pub http: Arc<config::HttpConfig>,
}

/// Builds the service from configuration: every plugin, then the seed for an empty store.
///
/// # Errors
/// Unknown plugins, bad options, a store that cannot open or be seeded.
pub async fn build(config: &ServerConfig) -> Result<AppState, StartupError> {
    let core = Core::from_plugins(config.plugins()).await?;
    seed::apply(&core, &config.storage.seed).await?;
    Ok(AppState { core, http: Arc::new(config.server.clone()) })
}

/// The router: every path goes to one dispatcher.
pub fn app(state: AppState) -> Router {
    Router::new().fallback(routes::dispatch).with_state(state)
}

/// Serves `listener` until `shutdown` completes, lets in-flight requests finish, then closes
/// the storage backend (flushing what it holds).
///
/// # Errors
/// I/O errors of the listener or a storage close failure.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let core = state.core.clone();
    axum::serve(listener, app(state)).with_graceful_shutdown(shutdown).await?;
    core.storage().close().await.map_err(|e| std::io::Error::other(e.to_string()))
}
