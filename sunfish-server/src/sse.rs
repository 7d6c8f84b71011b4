//! `GET /redfish/v1/EventService/SSE`: events as Server-Sent Events. Each message carries one
//! envelope; its `id:` is the EventId of the envelope's last event, so a client reconnecting
//! with `Last-Event-ID` gets every later envelope still in the bounded replay log, then live
//! ones. `$filter` (DSP0266 SSE filter properties `MessageId`, `RegistryPrefix`,
//! `ResourceType`, `OriginResource`, `EventType`) selects events. Keep-alive comments are sent
//! while idle.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use serde_json::{json, Value};
use sunfish_core::eventservice::{sse_envelope, Facts, LogEntry};
use sunfish_core::query::Filter;
use sunfish_core::{Error, Operation};
use tokio::sync::broadcast;

use crate::error::ApiError;
use crate::AppState;

/// The event facts as the SSE filter sees them.
fn facts_object(f: &Facts) -> Value {
    let prefix = f.message_id.split('.').next().unwrap_or_default();
    json!({
        "MessageId": f.message_id,
        "RegistryPrefix": prefix,
        "ResourceType": f.origin_type,
        "OriginResource": f.origin,
        "EventType": "Other",
    })
}

/// Parses the SSE `$filter` of a query string, with the same grammar as resource `$filter`,
/// evaluated against each event's facts.
fn parse_filter(query: Option<&str>) -> Result<Option<Filter>, Error> {
    let Some(q) = query else { return Ok(None) };
    for pair in q.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(k) == "$filter" {
            return Filter::parse(&percent_decode(v)).map(Some);
        }
    }
    Ok(None)
}

fn percent_decode(s: &str) -> String {
    let s = s.replace('+', " ");
    percent_encoding::percent_decode_str(&s).decode_utf8_lossy().into_owned()
}

/// Answers the SSE request.
///
/// # Errors
/// 405 without an EventService, 400 for a bad `$filter`.
pub fn stream(state: &AppState, headers: &HeaderMap, query: Option<&str>) -> Result<Response, ApiError> {
    let Some(events) = state.core.events() else {
        return Err(ApiError::MethodNotAllowed(vec![Operation::Get]));
    };
    let filter = parse_filter(query)?;
    let last_id = headers.get("Last-Event-ID").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    let (rx, replay) = events.sse_subscribe(last_id);
    let keep = Arc::new(move |f: &Facts| filter.as_ref().is_none_or(|flt| flt.matches(&facts_object(f))));
    let shutdown = state.shutdown.clone();
    let start = replay.last().map(|e| e.last_seq()).or(last_id).unwrap_or(0);
    let replay_stream = {
        let keep = keep.clone();
        stream::iter(replay.into_iter().filter_map(move |e| to_event(&e, &*keep)).map(Ok::<_, Infallible>))
    };
    let live = stream::unfold((rx, start, keep, shutdown), |(mut rx, mut seen, keep, shutdown)| async move {
        loop {
            let entry: Arc<LogEntry> = tokio::select! {
                _ = shutdown.cancelled() => return None,
                r = rx.recv() => match r {
                    Ok(e) => e,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(skipped = n, "SSE client lagged; events skipped");
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            };
            if entry.last_seq() <= seen {
                continue;
            }
            seen = entry.last_seq();
            if let Some(ev) = to_event(&entry, &*keep) {
                return Some((Ok::<_, Infallible>(ev), (rx, seen, keep, shutdown)));
            }
        }
    });
    let all: std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>> =
        Box::pin(futures_util::StreamExt::chain(replay_stream, live));
    let keepalive =
        KeepAlive::new().interval(Duration::from_millis(state.events.sse_keepalive_ms.max(100))).text("keep-alive");
    let mut resp = Sse::new(all).keep_alive(keepalive).into_response();
    resp.headers_mut().insert("OData-Version", axum::http::HeaderValue::from_static("4.0"));
    Ok(resp)
}

fn to_event(entry: &LogEntry, keep: &dyn Fn(&Facts) -> bool) -> Option<Event> {
    let env = sse_envelope(entry, keep)?;
    Some(Event::default().id(entry.last_seq().to_string()).data(env))
}
