//! `/metrics` (issue 9): Prometheus text that a Prometheus parser reads, counters that move by
//! exactly what the test drove, event deliveries, storage timings, agents by state, and who
//! may read it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use sunfish_server::metrics::MetricsAccess;
use sunfish_tests::{config_for, eventually, Backend, Client, TestServer};

use crate::aggregation::{agent_with_fabric, agg_config};

use crate::receiver::{event, fast_config, post_events, subscribe, Mode, Receiver};

/// A parsed scrape: (metric name, sorted labels) → value. Histograms appear as their
/// `_count` and `_sum` (and buckets under `le`), counters and gauges as themselves.
struct Scrape(BTreeMap<(String, Vec<(String, String)>), f64>);

impl Scrape {
    async fn take(c: &Client, auth: Option<(&str, &str)>) -> Scrape {
        let mut req = c.http.get(format!("{}/metrics", c.base));
        if let Some((u, p)) = auth {
            req = req.basic_auth(u, Some(p));
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("GET /metrics: {e}"));
        assert_eq!(resp.status(), 200, "GET /metrics");
        let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        assert!(ct.starts_with("text/plain; version=0.0.4"), "content type {ct}");
        let text = resp.text().await.unwrap_or_default();
        Scrape::parse(&text)
    }

    fn parse(text: &str) -> Scrape {
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let scrape =
            prometheus_parse::Scrape::parse(lines).unwrap_or_else(|e| panic!("not Prometheus text: {e}\n{text}"));
        let mut out = BTreeMap::new();
        for s in scrape.samples {
            let labels: Vec<(String, String)> = s
                .labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
                .into_iter()
                .collect();
            match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => {
                    out.insert((s.metric.clone(), labels), v);
                }
                prometheus_parse::Value::Histogram(buckets) => {
                    for b in buckets {
                        let mut l = labels.clone();
                        l.push(("le".into(), b.less_than.to_string()));
                        l.sort();
                        out.insert((format!("{}_bucket", s.metric), l), b.count);
                    }
                }
                prometheus_parse::Value::Summary(_) => {}
            }
        }
        // The parser folds `_count` and `_sum` of histograms into the samples above only for
        // buckets; read them from the text too (they are plain lines).
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((head, value)) = line.rsplit_once(' ') else { continue };
            let (name, labels) = match head.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (head, ""),
            };
            if !(name.ends_with("_count") || name.ends_with("_sum")) {
                continue;
            }
            let mut l: Vec<(String, String)> = labels
                .split(',')
                .filter(|p| !p.is_empty())
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
                .collect();
            l.sort();
            out.insert((name.to_string(), l), value.parse().unwrap_or(f64::NAN));
        }
        Scrape(out)
    }

    /// The value of `name` with exactly `labels` (0 when the series does not exist yet).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut l: Vec<(String, String)> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        l.sort();
        self.0.get(&(name.to_string(), l)).copied().unwrap_or(0.0)
    }

    /// The sum of `name` over every series whose labels include `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|((n, l), _)| n == name && labels.iter().all(|(k, v)| l.iter().any(|(a, b)| a == k && b == v)))
            .map(|(_, v)| v)
            .sum()
    }
}

fn requests(s: &Scrape, method: &str, route: &str, status: &str) -> f64 {
    s.get("sunfish_http_requests_total", &[("method", method), ("route", route), ("status", status)])
}

/// The counters move by exactly the requests the test sends, by method, route class and
/// status; the latency histogram counts them; storage operations are timed; the text parses.
#[tokio::test]
async fn request_counters_move_with_the_requests_driven() {
    let s = TestServer::start(Backend::Memory).await;
    let before = Scrape::take(&s, None).await;
    for _ in 0..3 {
        assert_eq!(s.get("/redfish/v1/Systems").await.status, 200);
    }
    assert_eq!(s.get("/redfish/v1/NoSuchThing").await.status, 404);
    let r = s
        .post(
            "/redfish/v1/Systems",
            &json!({"@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem", "Id": "m1", "Name": "m1"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = s.patch("/redfish/v1/Systems/m1", &json!({"AssetTag": "metrics"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(s.get("/redfish/v1").await.status, 200);
    let after = Scrape::take(&s, None).await;

    let moved =
        |m: &str, route: &str, status: &str| requests(&after, m, route, status) - requests(&before, m, route, status);
    assert_eq!(moved("GET", "resource", "200"), 3.0);
    assert_eq!(moved("GET", "resource", "404"), 1.0);
    assert_eq!(moved("POST", "resource", "201"), 1.0);
    assert_eq!(moved("PATCH", "resource", "200"), 1.0);
    assert_eq!(moved("GET", "service_root", "200"), 1.0);
    // The first scrape itself was counted when it was answered.
    assert!(requests(&after, "GET", "metrics", "200") >= 1.0);

    let count = |s: &Scrape, m: &str| {
        s.get("sunfish_http_request_duration_seconds_count", &[("method", m), ("route", "resource")])
    };
    assert_eq!(count(&after, "GET") - count(&before, "GET"), 4.0, "latency samples of the 4 GETs");
    assert!(after.get("sunfish_http_request_duration_seconds_sum", &[("method", "GET"), ("route", "resource")]) > 0.0);

    let storage = |s: &Scrape, op: &str| s.get("sunfish_storage_operation_duration_seconds_count", &[("op", op)]);
    assert!(storage(&after, "create") - storage(&before, "create") >= 1.0, "the POST's create was timed");
    assert!(storage(&after, "patch") - storage(&before, "patch") >= 1.0, "the PATCH was timed");
    assert!(storage(&after, "get") > storage(&before, "get"), "GETs read storage");
    s.stop().await;
}

/// Deliveries by outcome: a subscriber that accepts counts `delivered`, one that fails counts
/// `failed` attempts; the queue depth gauge is there.
#[tokio::test]
async fn event_deliveries_are_counted_by_outcome() {
    let (cfg, dir) = fast_config(Backend::Memory);
    let s = TestServer::start_with(cfg, dir).await;
    let before = Scrape::take(&s, None).await;
    let ok = Receiver::start(Mode::Ok).await;
    let bad = Receiver::start(Mode::Fail).await;
    let only_ours = json!({"RegistryPrefixes": ["Metrics"]});
    subscribe(&s, &ok.url("/ok"), only_ours.clone()).await;
    let mut failing = only_ours;
    failing["DeliveryRetryPolicy"] = json!("RetryForever");
    subscribe(&s, &bad.url("/bad"), failing).await;
    post_events(&s, vec![event("Metrics.1.0.Ping", "m1", None)]).await;
    post_events(&s, vec![event("Metrics.1.0.Ping", "m2", None)]).await;
    ok.wait_markers("/ok", "Metrics.", 2, Duration::from_secs(15)).await;
    bad.wait_attempts("/bad", 1, Duration::from_secs(15)).await;
    let after = eventually("deliveries counted", Duration::from_secs(10), || async {
        let a = Scrape::take(&s, None).await;
        let d = |o: &str, s: &Scrape| s.get("sunfish_event_deliveries_total", &[("outcome", o)]);
        (d("delivered", &a) - d("delivered", &before) >= 2.0 && d("failed", &a) - d("failed", &before) >= 1.0)
            .then_some(a)
    })
    .await;
    assert!(after.0.keys().any(|(n, _)| n == "sunfish_event_queue_depth"), "queue depth gauge");
    s.stop().await;
}

/// Agents by state and crawl durations: one agent registered and uploaded shows as one
/// Enabled agent and one successful crawl; its AggregationSource shows the crawl's progress
/// (`Oem.Sunfish_RM.Sync`) Completed with what was fetched; an upload of a root the agent does
/// not serve is a failed crawl, shown Failed.
#[tokio::test]
async fn agents_crawls_and_sync_progress() {
    let (cfg, dir) = agg_config();
    let s = TestServer::start_with(cfg, dir).await;
    let before = Scrape::take(&s, None).await;
    let (agent, src) = agent_with_fabric(&s, "metrics-agent", "CXL", 2, 3).await;
    let after = Scrape::take(&s, None).await;
    assert_eq!(after.get("sunfish_agents", &[("state", "Enabled")]), 1.0);
    assert_eq!(after.get("sunfish_agents", &[("state", "UnavailableOffline")]), 0.0);
    let crawls = |s: &Scrape, result: &str| s.get("sunfish_agent_crawl_duration_seconds_count", &[("result", result)]);
    assert!(crawls(&after, "ok") - crawls(&before, "ok") >= 1.0, "the upload's crawl was timed");
    assert!(after.sum("sunfish_agent_crawl_duration_seconds_bucket", &[("result", "ok")]) >= 1.0);

    let r = s.get(&src).await;
    let sync = &r.body["Oem"]["Sunfish_RM"]["Sync"];
    assert_eq!(sync["State"], "Completed", "{}", r.body);
    assert_eq!(sync["Errors"], 0, "{}", r.body);
    // The fabric, its Switches collection, 2 switches, their Ports collections, 6 ports.
    assert!(sync["ResourcesFetched"].as_u64().is_some_and(|n| n >= 12), "{}", r.body);
    let started = sync["StartedAt"].as_str().unwrap_or_default().to_string();
    assert!(started.contains('T'), "{}", r.body);
    assert!(sync["FinishedAt"].as_str().is_some_and(|t| t >= started.as_str()), "{}", r.body);

    let (status, _) = agent.upload("/redfish/v1/Fabrics/Nowhere").await;
    assert_ne!(status, 200, "an upload of a root the agent does not serve fails");
    let r = s.get(&src).await;
    assert_eq!(r.body["Oem"]["Sunfish_RM"]["Sync"]["State"], "Failed", "{}", r.body);
    let failed = Scrape::take(&s, None).await;
    assert!(crawls(&failed, "failed") - crawls(&before, "failed") >= 1.0, "the failed crawl was timed");
    agent.stop().await;
    s.stop().await;
}

/// `access = "authenticated"` (the default) answers 401 without credentials and 200 with
/// them; `"public"` needs none; `enabled = false` is 404.
#[tokio::test]
async fn metrics_access_follows_the_configuration() {
    let auth = |access: MetricsAccess, enabled: bool| {
        let (mut cfg, dir) = config_for(Backend::Memory);
        cfg.auth.enabled = true;
        cfg.auth.admin_user = "admin".into();
        cfg.auth.admin_password = Some("metrics-pass-1".into());
        cfg.metrics.access = access;
        cfg.metrics.enabled = enabled;
        (cfg, dir)
    };
    let (cfg, dir) = auth(MetricsAccess::Authenticated, true);
    let s = TestServer::start_with(cfg, dir).await;
    assert_eq!(s.get("/metrics").await.status, 401);
    Scrape::take(&s, Some(("admin", "metrics-pass-1"))).await;
    s.stop().await;

    let (cfg, dir) = auth(MetricsAccess::Public, true);
    let s = TestServer::start_with(cfg, dir).await;
    Scrape::take(&s, None).await;
    assert_eq!(s.get("/redfish/v1/Systems").await.status, 401, "only /metrics is public");
    s.stop().await;

    let (cfg, dir) = auth(MetricsAccess::Public, false);
    let s = TestServer::start_with(cfg, dir).await;
    assert_eq!(s.get("/metrics").await.status, 404);
    s.stop().await;
}
