//! HTTP front end: one dispatcher that maps a request onto [`sunfish_core::Core`] and the result
//! onto a response. Thin on purpose: extract, call the core, map the result; statuses for errors
//! come only from [`crate::error`].

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{json, Value};
use sunfish_core::{Error, Operation, Resource, ResourcePath};

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
    let trimmed = raw.trim_start_matches('/');

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
    match method {
        Method::GET | Method::HEAD => {
            let res = core.get(&path).await?;
            if let Some(inm) = parts.headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
                if etag_list_matches(inm, &res) {
                    let mut r = StatusCode::NOT_MODIFIED.into_response();
                    add_resource_headers(r.headers_mut(), &res);
                    return Ok(r);
                }
            }
            Ok(resource_response(StatusCode::OK, &res, &method))
        }
        Method::POST => {
            let payload = read_json(state, &parts.headers, body).await?;
            let res = core.create(&path, payload).await?;
            let mut r = resource_response(StatusCode::CREATED, &res, &method);
            if let Some(loc) =
                res.value().get("@odata.id").and_then(Value::as_str).and_then(|l| HeaderValue::from_str(l).ok())
            {
                r.headers_mut().insert(header::LOCATION, loc);
            }
            Ok(r)
        }
        Method::PUT => {
            let if_match = if_match(&parts.headers);
            let payload = read_json(state, &parts.headers, body).await?;
            let res = core.replace(&path, payload, if_match).await?;
            Ok(resource_response(StatusCode::OK, &res, &method))
        }
        Method::PATCH => {
            let if_match = if_match(&parts.headers);
            let payload = read_json(state, &parts.headers, body).await?;
            let res = core.patch(&path, payload, if_match).await?;
            Ok(resource_response(StatusCode::OK, &res, &method))
        }
        Method::DELETE => {
            core.delete(&path, if_match(&parts.headers)).await?;
            let mut r = StatusCode::NO_CONTENT.into_response();
            r.headers_mut().insert("OData-Version", HeaderValue::from_static("4.0"));
            Ok(r)
        }
        _ => {
            let res = core.get(&path).await?;
            Err(ApiError::MethodNotAllowed(allowed_for(&path, &res)))
        }
    }
}

/// What a stored resource allows, for `Allow` headers.
pub fn allowed_for(path: &ResourcePath, res: &Resource) -> Vec<Operation> {
    if path.is_root() {
        vec![Operation::Get, Operation::Patch]
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

fn add_resource_headers(h: &mut HeaderMap, res: &Resource) {
    if let Ok(v) = HeaderValue::from_str(&res.etag()) {
        h.insert(header::ETAG, v);
    }
    h.insert("OData-Version", HeaderValue::from_static("4.0"));
}

fn resource_response(status: StatusCode, res: &Resource, method: &Method) -> Response {
    let mut r = json_response(status, res.to_bytes(), method);
    add_resource_headers(r.headers_mut(), res);
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
