//! Server-Sent Events at `/redfish/v1/EventService/SSE` (issue "EventService"): `id:`/`data:`
//! messages carrying event envelopes, `Last-Event-ID` replay from the event log, keep-alive
//! comments while idle, and `$filter` on MessageId, RegistryPrefix, ResourceType and
//! OriginResource. Streams are read over real HTTP, chunk by chunk, and parsed line by line.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sunfish_tests::{Backend, Client, TestServer};

use crate::receiver::{event, fast_config, marker, message_id, post_events};

const SSE: &str = "/redfish/v1/EventService/SSE";
const READ: Duration = Duration::from_secs(10);

/// One parsed SSE block.
#[derive(Debug, Clone)]
enum Item {
    /// A message: its `id:` and its `data:` parsed as JSON.
    Message { id: String, data: Value },
    /// A block of comment lines only (keep-alives).
    Comment(String),
}

/// An open SSE stream.
struct Stream {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl Stream {
    /// GETs the SSE URI with `query` (e.g. `?$filter=...`) and optional `Last-Event-ID`; asserts
    /// 200 and `text/event-stream`. The service has subscribed this stream once the headers
    /// are back, so events posted afterwards reach it.
    async fn open(c: &Client, query: &str, last_event_id: Option<&str>) -> Self {
        let resp = Self::request(c, query, last_event_id).await;
        let status = resp.status();
        let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        if status != 200 {
            let body = resp.text().await.unwrap_or_default();
            panic!("GET {SSE}{query}: {status}: {body}");
        }
        assert!(ct.starts_with("text/event-stream"), "Content-Type {ct:?}");
        Stream { resp, buf: Vec::new() }
    }

    async fn request(c: &Client, query: &str, last_event_id: Option<&str>) -> reqwest::Response {
        // A client without the harness's overall timeout: the body of a stream never ends.
        let http = reqwest::Client::builder().no_proxy().build().unwrap_or_else(|e| panic!("client: {e}"));
        let mut req = http.get(format!("{}{SSE}{query}", c.base)).header("Accept", "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        req.send().await.unwrap_or_else(|e| panic!("GET {SSE}{query}: {e}"))
    }

    /// The next block (message or comment), waiting at most `timeout`.
    async fn next(&mut self, timeout: Duration) -> Item {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..pos + 2).collect();
                let text = String::from_utf8_lossy(&block).into_owned();
                if let Some(item) = parse_block(&text) {
                    return item;
                }
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, self.resp.chunk())
                .await
                .unwrap_or_else(|_| panic!("nothing on the SSE stream within {timeout:?}"))
                .unwrap_or_else(|e| panic!("reading the SSE stream: {e}"))
                .unwrap_or_else(|| panic!("the SSE stream ended"));
            self.buf.extend_from_slice(&chunk);
        }
    }

    /// The next message whose events have a MessageId starting with `prefix` (other messages
    /// and comments are skipped).
    async fn next_with(&mut self, prefix: &str) -> (String, Value) {
        let deadline = Instant::now() + READ;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Item::Message { id, data } = self.next(left).await {
                if data["Events"].as_array().is_some_and(|es| es.iter().any(|e| message_id(e).starts_with(prefix))) {
                    return (id, data);
                }
            }
        }
    }
}

/// Parses one block of SSE lines; `None` for an empty block.
fn parse_block(text: &str) -> Option<Item> {
    let mut id = None;
    let mut data = String::new();
    let mut comments = Vec::new();
    for line in text.lines() {
        if let Some(c) = line.strip_prefix(':') {
            comments.push(c.trim().to_string());
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => id = Some(value.to_string()),
            "data" => {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(value);
            }
            _ => {}
        }
    }
    if !data.is_empty() {
        let data = serde_json::from_str(&data).unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {data}"));
        return Some(Item::Message { id: id.unwrap_or_default(), data });
    }
    (!comments.is_empty()).then(|| Item::Comment(comments.join("\n")))
}

fn markers(data: &Value) -> Vec<String> {
    data["Events"].as_array().map(|es| es.iter().map(marker).collect()).unwrap_or_default()
}

/// The SSE stream sends each envelope as a message whose `id:` is the EventId of its last event
/// and whose `data:` is the envelope; `Last-Event-ID` replays the later envelopes from the log,
/// in order; an idle stream gets keep-alive comments.
#[tokio::test]
async fn sse_streams_envelopes_replays_after_last_event_id_and_keeps_alive() {
    let (cfg, dir) = fast_config(Backend::Memory);
    let s = TestServer::start_with(cfg, dir).await;
    let mut a = Stream::open(&s, "", None).await;
    post_events(&s, vec![event("Sse.1.0.One", "s1", None)]).await;
    post_events(&s, vec![event("Sse.1.0.Two", "s2", None), event("Sse.1.0.Two", "s2b", None)]).await;
    post_events(&s, vec![event("Sse.1.0.Three", "s3", None)]).await;

    let mut seen = Vec::new();
    for want in [vec!["s1"], vec!["s2", "s2b"], vec!["s3"]] {
        let (id, data) = a.next_with("Sse.").await;
        assert_eq!(markers(&data), want, "{data}");
        assert!(data["@odata.type"].as_str().is_some_and(|t| t.starts_with("#Event.")), "{data}");
        let last = data["Events"].as_array().and_then(|e| e.last()).cloned().unwrap_or_default();
        assert_eq!(last["EventId"].as_str(), Some(id.as_str()), "id: is the last EventId: {data}");
        seen.push(id);
    }

    let mut b = Stream::open(&s, "", Some(&seen[0])).await;
    let (id2, d2) = b.next_with("Sse.").await;
    let (id3, d3) = b.next_with("Sse.").await;
    assert_eq!((markers(&d2), markers(&d3)), (vec!["s2".to_string(), "s2b".into()], vec!["s3".to_string()]));
    assert_eq!([id2, id3], [seen[1].clone(), seen[2].clone()], "replayed ids");

    // Nothing more happens: keep-alive comments arrive (sse_keepalive_ms is small).
    let item = b.next(Duration::from_secs(3)).await;
    assert!(matches!(&item, Item::Comment(c) if c.contains("keep-alive")), "expected a keep-alive, got {item:?}");
    // And live events still follow on the replayed stream.
    post_events(&s, vec![event("Sse.1.0.Four", "s4", None)]).await;
    let (_, d4) = b.next_with("Sse.").await;
    assert_eq!(markers(&d4), ["s4"]);
    drop((a, b));
    s.stop().await;
}

/// `$filter` selects the events of a stream: `MessageId eq`, `RegistryPrefix eq`,
/// `ResourceType eq`, `OriginResource eq`, and `or` combinations; each stream's messages hold
/// only its matching events.
#[tokio::test]
async fn sse_filter_selects_events() {
    let (cfg, dir) = fast_config(Backend::Memory);
    let s = TestServer::start_with(cfg, dir).await;
    let r = s
        .post(
            "/redfish/v1/Systems",
            &json!({"@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem", "Id": "1", "Name": "one"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let filters = [
        ("MessageId eq 'Flt.1.0.One'", vec!["f1"]),
        ("RegistryPrefix eq 'Other'", vec!["f3"]),
        ("ResourceType eq 'ComputerSystem'", vec!["f2"]),
        ("OriginResource eq '/redfish/v1/Systems/1'", vec!["f2"]),
        ("MessageId eq 'Flt.1.0.One' or RegistryPrefix eq 'Other'", vec!["f1", "f3"]),
    ];
    let mut streams = Vec::new();
    for (f, want) in &filters {
        let q: String = format!("?%24filter={}", f.replace(' ', "%20").replace('\'', "%27"));
        streams.push((f, want, Stream::open(&s, &q, None).await));
    }
    post_events(
        &s,
        vec![
            event("Flt.1.0.One", "f1", Some("/redfish/v1/Chassis")),
            event("Flt.1.0.Two", "f2", Some("/redfish/v1/Systems/1")),
            event("Other.1.0.Three", "f3", None),
        ],
    )
    .await;
    for (f, want, stream) in &mut streams {
        // The first message after the stream opened: keep-alives are skipped.
        let (_, data) = stream.next_with("").await;
        assert_eq!(markers(&data), **want, "$filter={f}: {data}");
    }
    s.stop().await;
}
