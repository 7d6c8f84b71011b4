//! HTTP front end: one dispatcher that maps a request onto [`sunfish_core::Core`] and the result
//! onto a response. Thin on purpose: extract, call the core, map the result; statuses for errors
//! come only from [`crate::error`].

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{json, Value};
use sunfish_core::action::ActionResult;
use sunfish_core::auth::SESSIONS;
use sunfish_core::query::{self, QueryOptions};
use sunfish_core::tasks::{FinalResponse, MonitorState, TASK_MONITORS};
use sunfish_core::{Core, Error, Operation, Resource, ResourcePath};
use sunfish_core::{Outcome, Written};

/// Where the SSE stream is served (`ServerSentEventUri`).
pub const SSE_PATH: &str = "/redfish/v1/EventService/SSE";

use crate::auth;
use crate::error::ApiError;
use crate::AppState;

/// Entry point for every request.
pub async fn dispatch(State(state): State<AppState>, req: Request) -> Response {
    match handle(&state, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn handle(state: &AppState, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let raw = parts.uri.path().to_string();
    let method = parts.method.clone();
    // Only OData 4.0 is spoken; a client asking for another version gets 412.
    if let Some(v) = parts.headers.get("OData-Version") {
        if v.as_bytes() != b"4.0" {
            return Err(Error::PreconditionFailed { path: raw.clone() }.into());
        }
    }
    // `POST <collection>/Members` is a POST to the collection (DSP0266).
    let raw = match raw.strip_suffix("/Members").or_else(|| raw.strip_suffix("/Members/")) {
        Some(coll) if method == Method::POST => coll.to_string(),
        _ => raw,
    };
    let trimmed = raw.trim_start_matches('/');
    let access = auth::authorize(state, &method, &raw, &parts.headers).await?;

    if trimmed == "redfish" || trimmed == "redfish/" {
        return match method {
            Method::GET | Method::HEAD => {
                Ok(json_response(StatusCode::OK, Bytes::from_static(br#"{"v1":"/redfish/v1/"}"#), &method))
            }
            _ => Err(ApiError::MethodNotAllowed(vec![Operation::Get])),
        };
    }
    if trimmed == "EventListener" {
        if method != Method::POST {
            return Err(ApiError::MethodNotAllowed(vec![Operation::Create]));
        }
        let payload = read_json(state, &parts.headers, body).await?;
        let ids = state.core.handle_event(payload).await?;
        return Ok(json_response(StatusCode::OK, Bytes::from(serde_json::to_vec(&ids).unwrap_or_default()), &method));
    }
    if !(trimmed == "redfish/v1" || trimmed.starts_with("redfish/v1/")) {
        return Err(ApiError::NoRoute(raw.chars().filter(|c| !c.is_control()).take(200).collect()));
    }
    let path = ResourcePath::parse(&raw)?;
    let core = &state.core;
    if let Some(r) = crate::metadata::respond(core, core.schemas().map(|s| &**s), &path, &method).await {
        return r;
    }
    if method == Method::POST && path.as_str() == SESSIONS {
        if let Some(auth) = core.auth() {
            let payload = read_json(state, &parts.headers, body).await?;
            let (session, token) = auth.login(core, &payload).await?;
            let mut r = outcome_response(core, Outcome::Done(Written::Created(session)), &method);
            if let Ok(v) = HeaderValue::from_str(&token) {
                r.headers_mut().insert("X-Auth-Token", v);
            }
            return Ok(r);
        }
    }
    if path.as_str() == SSE_PATH && state.core.events().is_some() {
        return match method {
            Method::GET => crate::sse::stream(state, &parts.headers, parts.uri.query()),
            _ => Err(ApiError::MethodNotAllowed(vec![Operation::Get])),
        };
    }
    if let Some(id) = path.parent().filter(|p| p.as_str() == TASK_MONITORS).and(path.last()) {
        return match method {
            Method::GET | Method::HEAD => monitor_response(core.task_monitor(id).await?, &method),
            _ => Err(ApiError::MethodNotAllowed(vec![Operation::Get])),
        };
    }
    if core.is_action(&path) {
        return match method {
            Method::POST => {
                let payload = read_json_or_empty(state, &parts.headers, body).await?;
                match core.action(&path, payload).await? {
                    ActionResult::NoContent => Ok(no_content()),
                    ActionResult::Body(v) => Ok(json_response(StatusCode::OK, Bytes::from(v.to_string()), &method)),
                }
            }
            _ => Err(ApiError::MethodNotAllowed(vec![Operation::Create])),
        };
    }
    match method {
        Method::GET | Method::HEAD => {
            let res = core.read(&path).await?;
            if let Some(opts) = QueryOptions::parse(parts.uri.query().unwrap_or_default())? {
                return query_response(state, &path, res, &opts, &method).await;
            }
            if let Some(inm) = parts.headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
                if etag_list_matches(inm, &res) {
                    let mut r = StatusCode::NOT_MODIFIED.into_response();
                    add_resource_headers(core, r.headers_mut(), &res);
                    return Ok(r);
                }
            }
            Ok(resource_response(core, StatusCode::OK, &res, &method))
        }
        Method::POST => {
            let payload = read_json(state, &parts.headers, body).await?;
            Ok(outcome_response(core, core.create_request(&path, payload).await?, &method))
        }
        Method::PUT => {
            let if_match = if_match(&parts.headers);
            let payload = read_json(state, &parts.headers, body).await?;
            only_own_password(&access, &path, &payload)?;
            Ok(outcome_response(core, core.replace_request(&path, payload, if_match).await?, &method))
        }
        Method::PATCH => {
            let if_match = if_match(&parts.headers);
            let payload = read_json(state, &parts.headers, body).await?;
            only_own_password(&access, &path, &payload)?;
            Ok(outcome_response(core, core.patch_request(&path, payload, if_match).await?, &method))
        }
        Method::DELETE => {
            Ok(outcome_response(core, core.delete_request(&path, if_match(&parts.headers)).await?, &method))
        }
        _ => {
            let res = core.get(&path).await?;
            Err(ApiError::MethodNotAllowed(allowed_for(&path, &res)))
        }
    }
}

/// A principal allowed on its own account only by `ConfigureSelf` may change its password and
/// nothing else.
fn only_own_password(access: &auth::Access, path: &ResourcePath, payload: &Value) -> Result<(), ApiError> {
    if let auth::Access::OwnAccount(_) = access {
        let other = payload.as_object().is_some_and(|o| o.keys().any(|k| k != "Password" && !k.starts_with("@odata")));
        if other {
            return Err(Error::InsufficientPrivilege { path: path.to_string(), operation: Operation::Patch }.into());
        }
    }
    Ok(())
}

/// Seconds a client should wait before polling a task monitor again.
const RETRY_AFTER_SECONDS: &str = "1";

/// The response to a client write: the written resource, or 202 with the task monitor.
fn outcome_response(core: &Core, outcome: Outcome, method: &Method) -> Response {
    match outcome {
        Outcome::Done(Written::Created(res)) => {
            let mut r = resource_response(core, StatusCode::CREATED, &res, method);
            if let Some(loc) = res.odata_id().and_then(|l| HeaderValue::from_str(l).ok()) {
                r.headers_mut().insert(header::LOCATION, loc);
            }
            r
        }
        Outcome::Done(Written::Updated(res)) => resource_response(core, StatusCode::OK, &res, method),
        Outcome::Done(Written::Deleted(_)) => no_content(),
        Outcome::Accepted(task) => accepted(&task.monitor, task.task.as_str(), method),
    }
}

/// 202 Accepted pointing at a task monitor, with the task as body.
fn accepted(monitor: &str, task: &str, method: &Method) -> Response {
    let body = Bytes::from(json!({"@odata.id": task, "TaskMonitor": monitor}).to_string());
    let mut r = json_response(StatusCode::ACCEPTED, body, method);
    if let Ok(v) = HeaderValue::from_str(monitor) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
    r
}

fn no_content() -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut().insert("OData-Version", HeaderValue::from_static("4.0"));
    r
}

/// A task monitor: 202 while the task runs, then the write's final response.
fn monitor_response(state: MonitorState, method: &Method) -> Result<Response, ApiError> {
    match state {
        MonitorState::Running { task, .. } => {
            let monitor = format!("{TASK_MONITORS}/{}", task.last().unwrap_or_default());
            Ok(accepted(&monitor, task.as_str(), method))
        }
        MonitorState::Done(FinalResponse::Failure(e)) => Err(e.into()),
        MonitorState::Done(FinalResponse::Success { status, location, body }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            let mut r = match body {
                Some(b) => json_response(status, Bytes::from(b.to_string()), method),
                None => no_content(),
            };
            if let Some(l) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
                r.headers_mut().insert(header::LOCATION, l);
            }
            Ok(r)
        }
    }
}

/// A GET with Redfish query parameters. `only` answers as a plain GET of the single member
/// (with its ETag); `$select`/`excerpt` keep the resource's ETag (the view still names that
/// revision); `$expand`, `$filter` and paging build a new document and send none.
async fn query_response(
    state: &AppState,
    path: &ResourcePath,
    res: Resource,
    opts: &QueryOptions,
    method: &Method,
) -> Result<Response, ApiError> {
    let storage = state.core.storage();
    if opts.only() {
        if let Some(member) = query::only_member(storage, &res).await? {
            return Ok(resource_response(&state.core, StatusCode::OK, &member, method));
        }
    }
    let hints = state.core.schemas().map(|s| &**s as &dyn query::SchemaHints);
    let body = query::apply(storage, path, &res, opts, &state.query, hints).await?;
    let mut r = json_response(StatusCode::OK, Bytes::from(body.to_string()), method);
    let view_only = opts.expand().is_none() && opts.filter().is_none() && opts.top().is_none() && opts.skip().is_none();
    if view_only {
        add_resource_headers(&state.core, r.headers_mut(), &res);
    }
    Ok(r)
}

/// What a stored resource allows, for `Allow` headers.
pub fn allowed_for(path: &ResourcePath, res: &Resource) -> Vec<Operation> {
    if path.is_root() {
        vec![Operation::Get]
    } else if res.is_collection() {
        Operation::COLLECTION.to_vec()
    } else {
        Operation::RESOURCE.to_vec()
    }
}

fn json_response(status: StatusCode, body: Bytes, method: &Method) -> Response {
    let body = if method == Method::HEAD { Body::empty() } else { Body::from(body) };
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    h.insert("OData-Version", HeaderValue::from_static("4.0"));
    r
}

/// Headers every resource response carries: the strong `ETag`, `OData-Version`, `Allow`
/// (what the resource accepts), `Link: <schema>; rel=describedby` (the versioned DMTF schema
/// named by `@odata.type`), and `Cache-Control: no-cache` (clients revalidate with the ETag).
fn add_resource_headers(core: &Core, h: &mut HeaderMap, res: &Resource) {
    if let Ok(v) = HeaderValue::from_str(&res.etag()) {
        h.insert(header::ETAG, v);
    }
    h.insert("OData-Version", HeaderValue::from_static("4.0"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    let path = res.odata_id().and_then(|p| ResourcePath::parse(p).ok());
    if let Some(p) = path {
        if let Ok(v) = HeaderValue::from_str(&crate::error::allow_header(&core.allowed(&p, res))) {
            h.insert(header::ALLOW, v);
        }
    }
    if let Some(link) = res.odata_type().and_then(schema_link) {
        if let Ok(v) = HeaderValue::from_str(&link) {
            h.insert(header::LINK, v);
        }
    }
}

/// `<http://redfish.dmtf.org/schemas/v1/ComputerSystem.v1_22_0.json>; rel=describedby` from
/// `#ComputerSystem.v1_22_0.ComputerSystem` (unversioned types name the unversioned file).
fn schema_link(odata_type: &str) -> Option<String> {
    let t = odata_type.trim_start_matches('#');
    let mut parts = t.split('.');
    let name = parts.next().filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))?;
    let file = match (parts.next(), parts.next()) {
        (Some(ver), Some(_)) if ver.starts_with('v') && ver.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
            format!("{name}.{ver}")
        }
        _ => name.to_string(),
    };
    Some(format!("<http://redfish.dmtf.org/schemas/v1/{file}.json>; rel=describedby"))
}

fn resource_response(core: &Core, status: StatusCode, res: &Resource, method: &Method) -> Response {
    let mut r = json_response(status, res.to_bytes(), method);
    add_resource_headers(core, r.headers_mut(), res);
    r
}

/// Whether an `If-None-Match` list names the resource's current ETag (or is `*`).
fn etag_list_matches(list: &str, res: &Resource) -> bool {
    let current = res.etag();
    list.split(',').map(str::trim).any(|t| t == "*" || t.trim_start_matches("W/") == current)
}

/// The revision an `If-Match` header demands: `None` without the header or with `*`. A tag
/// that is not one of ours becomes revision 0, which no resource has, so the write gets 412.
fn if_match(headers: &HeaderMap) -> Option<u64> {
    let v = headers.get(header::IF_MATCH)?.to_str().unwrap_or("\"\"").trim();
    if v == "*" {
        return None;
    }
    let tag = v.split(',').next().unwrap_or_default().trim().trim_start_matches("W/").trim_matches('"');
    Some(u64::from_str_radix(tag, 16).unwrap_or(0))
}

/// An action body: JSON like any other, but an empty body means `{}` (actions without
/// parameters are often posted with none).
async fn read_json_or_empty(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Value, ApiError> {
    let empty = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()) == Some("0");
    if empty {
        return Ok(json!({}));
    }
    read_json(state, headers, body).await
}

/// Reads a JSON request body within the configured limit. A declared non-JSON media type is
/// 415; an empty or unparsable body is 400 `MalformedJSON`.
async fn read_json(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Value, ApiError> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default();
        let media = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        if media != "application/json" && !media.ends_with("+json") {
            return Err(Error::UnsupportedMediaType { media_type: ct.chars().take(100).collect() }.into());
        }
    }
    let limit = state.http.body_limit;
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge);
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| ApiError::PayloadTooLarge)?;
    serde_json::from_slice(&bytes).map_err(|e| Error::MalformedJson { reason: e.to_string() }.into())
}

/// The answer to `GET /redfish`.
pub fn versions() -> Value {
    json!({"v1": "/redfish/v1/"})
}
