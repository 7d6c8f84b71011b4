//! The web console at `/ui`: one HTML page, one script and one stylesheet, built into the
//! binary so the console works offline and ships with every server (no CDN, no asset folder
//! to deploy next to the binary).
//!
//! The page holds no data: everything it shows it reads through the Redfish API with the
//! operator's own session (`X-Auth-Token`), so it can never show or change more than that
//! session may. The one console-only endpoint is [`ACCESS_PATH`], which answers "may this
//! session PATCH/DELETE/POST this path?" by running the server's own authorization
//! ([`crate::auth::authorize`]) for each method, so the page hides the buttons a user may not
//! use without a second copy of the privilege map in JavaScript.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sunfish_core::auth::SESSIONS;

use crate::auth::{authorize, Access};
use crate::error::ApiError;
use crate::AppState;

/// Where the console is served.
pub const UI_PATH: &str = "/ui";
/// The console's access query: `GET /ui/api/access?path=<resource path>`.
pub const ACCESS_PATH: &str = "/ui/api/access";

const INDEX_HTML: &str = include_str!("../ui/index.html");
const APP_JS: &str = include_str!("../ui/app.js");
const APP_CSS: &str = include_str!("../ui/app.css");

/// The page may load only its own script and stylesheet and talk only to this server: an
/// injected `<script>` or a link to another origin does nothing, and no site may frame the
/// console (clickjacking an operator's session).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// `[ui]`: see `conf/default.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UiConfig {
    /// Whether `/ui` is served (404 otherwise).
    pub enabled: bool,
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig { enabled: true }
    }
}

/// The console's routes, merged into [`crate::app`].
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(UI_PATH, get(index))
        .route("/ui/", get(index))
        .route("/ui/index.html", get(index))
        .route("/ui/app.js", get(script))
        .route("/ui/app.css", get(stylesheet))
        .route(ACCESS_PATH, get(access))
}

/// One built-in asset with the console's security headers.
fn asset(state: &AppState, content_type: &'static str, body: &'static str) -> Response {
    if !state.ui.enabled {
        return ApiError::NoRoute(UI_PATH.into()).into_response();
    }
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // Revalidate every load, so a server upgrade never leaves an old script in a browser.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

async fn index(State(state): State<AppState>) -> Response {
    asset(&state, "text/html; charset=utf-8", INDEX_HTML)
}

async fn script(State(state): State<AppState>) -> Response {
    asset(&state, "text/javascript; charset=utf-8", APP_JS)
}

async fn stylesheet(State(state): State<AppState>) -> Response {
    asset(&state, "text/css; charset=utf-8", APP_CSS)
}

/// The query of [`ACCESS_PATH`].
#[derive(Debug, Deserialize)]
pub struct AccessQuery {
    /// A resource path (`/redfish/v1/...`).
    pub path: String,
}

/// The methods the console offers buttons for.
const METHODS: [Method; 4] = [Method::GET, Method::PATCH, Method::DELETE, Method::POST];

/// `GET /ui/api/access?path=`: who the caller is and which methods its credentials may use on
/// `path`. 401 without valid credentials (when authentication is on). The answer is about
/// privileges only; whether the resource supports a method is its `Allow` header.
async fn access(State(state): State<AppState>, headers: HeaderMap, Query(q): Query<AccessQuery>) -> Response {
    if !state.ui.enabled {
        return ApiError::NoRoute(ACCESS_PATH.into()).into_response();
    }
    // Who: the sessions collection needs `Login`, so any valid credentials name a principal.
    let who = match authorize(&state, &Method::GET, SESSIONS, &headers).await {
        Ok(a) => a,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let mut allowed = Map::new();
    for m in METHODS {
        let ok = authorize(&state, &m, &q.path, &headers).await.is_ok();
        allowed.insert(m.as_str().to_string(), Value::Bool(ok));
    }
    let identity = match who {
        Access::Granted(p) | Access::OwnAccount(p) => json!({
            "AuthEnabled": true,
            "UserName": p.user,
            "RoleId": p.role,
            "Privileges": p.privileges.names(),
            "Account": p.account.as_str(),
        }),
        Access::Open => json!({"AuthEnabled": false}),
    };
    let mut body = identity;
    body["Path"] = Value::String(q.path);
    body["Allowed"] = Value::Object(allowed);
    let mut r = (StatusCode::OK, axum::Json(body)).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page loads only the built-in assets, by the paths [`routes`] serves.
    #[test]
    fn the_page_references_only_built_in_assets() {
        for asset in ["/ui/app.js", "/ui/app.css"] {
            assert!(INDEX_HTML.contains(asset), "index.html loads {asset}");
        }
        for text in [INDEX_HTML, APP_JS, APP_CSS] {
            // The SVG namespace is a name, not a download.
            let text = text.replace("http://www.w3.org/2000/svg", "");
            assert!(!text.contains("http://") && !text.contains("https://"), "no absolute URLs (offline, no CDN)");
        }
        assert!(APP_JS.contains(ACCESS_PATH), "the script asks the access endpoint");
    }
}
