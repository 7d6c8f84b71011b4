//! `/metrics` (Prometheus text format) and the request layer that counts every answered
//! request into the core's [`sunfish_core::metrics::Metrics`].
//!
//! The families themselves live in sunfish-core, beside the work they count; this module only
//! classifies requests (a fixed set of route classes, so label cardinality stays bounded
//! however large the fabric grows) and serves the text. `/metrics` is outside `/redfish`, so
//! it is not part of the Redfish tree and conformance tools never see it.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sunfish_core::metrics::CONTENT_TYPE;

use crate::error::ApiError;
use crate::routes::SSE_PATH;
use crate::AppState;

/// Where the metrics are served.
pub const METRICS_PATH: &str = "/metrics";

/// `[metrics]`: see `conf/default.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Whether `/metrics` is served (404 otherwise); requests are counted either way.
    pub enabled: bool,
    /// Who may read it.
    pub access: MetricsAccess,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { enabled: true, access: MetricsAccess::Authenticated }
    }
}

/// Who may read `/metrics`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MetricsAccess {
    /// Any account that may log in (`Login`), as for a Redfish GET: Basic or X-Auth-Token.
    Authenticated,
    /// Anyone who reaches the port: for a scraper on a trusted network without credentials.
    Public,
}

/// The route class of a request path: the `route` label.
pub fn route_class(path: &str) -> &'static str {
    let p = path.trim_end_matches('/');
    let under = |base: &str| p == base || p.strip_prefix(base).is_some_and(|r| r.starts_with('/'));
    match p {
        "" | "/redfish" | "/redfish/v1" => "service_root",
        "/redfish/v1/$metadata" => "metadata",
        "/redfish/v1/odata" => "odata",
        METRICS_PATH => "metrics",
        "/EventListener" => "event_listener",
        _ if p == SSE_PATH => "sse",
        _ if under("/ui") => "ui",
        _ if under("/redfish/v1/SessionService") => "sessions",
        _ if under("/redfish/v1/AccountService") => "accounts",
        _ if under("/redfish/v1/EventService") => "eventservice",
        _ if under("/redfish/v1/AggregationService") => "aggregation",
        _ if under("/redfish/v1/TaskService") => "tasks",
        _ if under("/redfish/v1/JsonSchemas") || under("/redfish/v1/Registries") => "schemas",
        _ if under("/redfish/v1") => "resource",
        _ => "other",
    }
}

/// Counts and times every request (the time to the response head; streamed bodies such as
/// SSE are not timed).
pub async fn record(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let route = route_class(req.uri().path());
    let response = next.run(req).await;
    state.core.metrics().http().observe(
        method.as_str(),
        route,
        response.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    response
}

/// `GET /metrics`.
pub async fn serve(State(state): State<AppState>, method: Method, headers: HeaderMap) -> Response {
    match render(&state, &method, &headers).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn render(state: &AppState, method: &Method, headers: &HeaderMap) -> Result<Response, ApiError> {
    if !state.metrics.enabled {
        return Err(ApiError::NoRoute(METRICS_PATH.into()));
    }
    if *method != Method::GET && *method != Method::HEAD {
        return Err(ApiError::MethodNotAllowed(vec![sunfish_core::Operation::Get]));
    }
    if state.metrics.access == MetricsAccess::Authenticated {
        crate::auth::authorize(state, &Method::GET, METRICS_PATH, headers).await?;
    }
    let body = state.core.metrics().render(&state.core);
    let mut r = if *method == Method::HEAD { ().into_response() } else { body.into_response() };
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_classes_are_bounded_and_specific() {
        assert_eq!(route_class("/redfish/v1/"), "service_root");
        assert_eq!(route_class("/redfish"), "service_root");
        assert_eq!(route_class("/redfish/v1/$metadata"), "metadata");
        assert_eq!(route_class("/redfish/v1/EventService/SSE"), "sse");
        assert_eq!(route_class("/redfish/v1/EventService/Subscriptions/1"), "eventservice");
        assert_eq!(route_class("/redfish/v1/SessionService/Sessions"), "sessions");
        assert_eq!(route_class("/redfish/v1/Fabrics/CXL/Switches/CXL1"), "resource");
        assert_eq!(route_class("/redfish/v1/AggregationServiceX"), "resource");
        assert_eq!(route_class("/ui/app.js"), "ui");
        assert_eq!(route_class("/metrics"), "metrics");
        assert_eq!(route_class("/anything/else"), "other");
    }
}
