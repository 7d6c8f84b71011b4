//! # sunfish-server
//!
//! The standalone Sunfish fabric service: Redfish over HTTP in front of [`sunfish_core::Core`].
//!
//! Layout: [`config`] (layers and keys), [`build`] (plugins from config, seed), [`app`] (the
//! router, for `oneshot` tests), [`run`] (serve a listener until shutdown, then close storage),
//! [`listener`] (the accept loop under `run`: TLS, connection and request limits), [`tls`]
//! (`[server.tls]`), [`routes`] (the dispatcher), [`error`] (the only place that picks statuses),
//! [`seed`].
//! `main.rs` is only the CLI.

pub mod auth;
pub mod config;
pub mod error;
pub mod listener;
pub mod metadata;
pub mod metrics;
pub mod migrate;
pub mod routes;
pub mod seed;
pub mod sse;
pub mod tls;
pub mod transport;
pub mod ui;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use sunfish_core::eventservice::EventService;
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
    /// `[auth]` settings used per request.
    pub auth: Arc<config::AuthConfig>,
    /// `[query]` limits.
    pub query: sunfish_core::query::Budget,
    /// `[events]` settings used by the SSE endpoint.
    pub events: Arc<config::EventsConfig>,
    /// `[metrics]`: whether and to whom `/metrics` is served.
    pub metrics: Arc<metrics::MetricsConfig>,
    /// `[ui]`: whether the web console is served.
    pub ui: Arc<ui::UiConfig>,
    /// Cancelled when shutdown starts, so long-lived responses (SSE) end and graceful shutdown
    /// can complete.
    pub shutdown: tokio_util::sync::CancellationToken,
}

/// Builds the service from configuration: every plugin, then the seed for an empty store.
///
/// # Errors
/// Unknown plugins, bad options, a store that cannot open or be seeded.
pub async fn build(config: &ServerConfig) -> Result<AppState, StartupError> {
    build_with(config, |b| b).await
}

/// [`build`], with `customize` applied to the core builder after every configured service
/// (the agent uses it to put its hardware manager in front of the device's resources).
///
/// # Errors
/// As [`build`].
pub async fn build_with(
    config: &ServerConfig,
    customize: impl FnOnce(sunfish_core::CoreBuilder) -> sunfish_core::CoreBuilder,
) -> Result<AppState, StartupError> {
    let builder = Core::builder_from_plugins(config.plugins()).await?;
    let transport = transport::HttpTransport::new()
        .map_err(|e| StartupError::Io { what: "HTTP client".into(), reason: e.to_string() })?;
    let events = EventService::new(
        builder.storage().clone(),
        Arc::new(transport.clone()),
        config.events.to_core(&config.outbound)?,
    );
    let auth = sunfish_core::auth::AuthService::new(builder.storage().clone());
    let schemas = match &config.schema.dir {
        Some(dir) => Some(Arc::new(sunfish_core::schema::SchemaSet::load(dir)?)),
        None => None,
    };
    let aggregator = sunfish_core::aggregation::Aggregator::new(
        builder.storage().clone(),
        Arc::new(transport.clone()),
        config.aggregation.to_core(&config.outbound, config.auth.enabled)?,
    );
    let mut builder = builder.event_service(events).auth(auth.clone()).aggregation(aggregator);
    if let Some(s) = &schemas {
        builder = builder.schemas(s.clone());
    }
    let core = customize(builder).build();
    seed::apply(&core, &config.storage.seed).await?;
    seed::advertise_features(&core, &config.query).await?;
    core.start()
        .await
        .map_err(|e| StartupError::Io { what: "starting the event service".into(), reason: e.to_string() })?;
    if config.auth.enabled {
        auth.bootstrap(&core, &config.auth.admin_user, config.auth.admin_password.as_deref())
            .await
            .map_err(|e| StartupError::Config(format!("auth: {e}")))?;
    }
    Ok(AppState {
        core,
        http: Arc::new(config.server.clone()),
        events: Arc::new(config.events.clone()),
        query: config.query,
        auth: Arc::new(config.auth.clone()),
        metrics: Arc::new(config.metrics.clone()),
        ui: Arc::new(config.ui.clone()),
        shutdown: Default::default(),
    })
}

/// The router: `/metrics`, the web console under `/ui` ([`ui`]), and every other path to one
/// dispatcher; every request is counted ([`metrics::record`]).
pub fn app(state: AppState) -> Router {
    Router::new()
        .route(metrics::METRICS_PATH, axum::routing::any(metrics::serve))
        .merge(ui::routes())
        .fallback(routes::dispatch)
        .layer(axum::middleware::from_fn_with_state(state.clone(), metrics::record))
        .with_state(state)
}

/// Serves `listener` until `shutdown` completes, lets in-flight requests finish, then closes
/// the storage backend (flushing what it holds). HTTPS when the state's `server.tls` names a
/// certificate and key (read here; see [`run_with_tls`] to read them earlier), plain HTTP
/// otherwise. The `[server]` limits apply either way ([`listener`]).
///
/// # Errors
/// A bad `server.tls` setting (storage is closed first), I/O errors of the listener or a
/// storage close failure.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match state.http.tls.load() {
        Ok(tls) => run_with_tls(listener, state, tls, shutdown).await,
        Err(e) => {
            close(&state.core).await?;
            Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))
        }
    }
}

/// [`run`] with the TLS configuration given (`None`: plain HTTP) instead of read from
/// `state`: `main.rs` reads the files before it opens the store.
///
/// # Errors
/// I/O errors of the listener or a storage close failure.
pub async fn run_with_tls(
    listener: TcpListener,
    state: AppState,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let core = state.core.clone();
    let http = state.http.clone();
    let token = state.shutdown.clone();
    let cancel = token.clone();
    let shutdown = async move {
        shutdown.await;
        token.cancel();
    };
    listener::serve(listener, app(state), &http, tls, cancel, shutdown).await?;
    close(&core).await
}

/// Stops the core's background work and closes storage.
async fn close(core: &Core) -> std::io::Result<()> {
    core.stop();
    core.storage().close().await.map_err(|e| std::io::Error::other(e.to_string()))
}

/// Resolves on SIGINT or SIGTERM: the shutdown future the binaries (`sunfish-server`,
/// `sunfish-agent` and agents built on its library) pass to [`run`].
pub async fn shutdown_signal() {
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
