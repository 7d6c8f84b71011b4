//! Outbound HTTP for event delivery and agent requests, with reqwest. Redirects are not followed (a destination
//! could otherwise bounce deliveries to a host the outbound policy refuses), proxies from the
//! environment are ignored, and every attempt has its own timeout.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use sunfish_core::aggregation::client::{AgentClient, AgentFailure, AgentReply, AgentRequest};
use sunfish_core::eventservice::EventTransport;
use sunfish_core::Operation;

/// Delivers event envelopes over HTTP(S).
#[derive(Debug, Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
}

impl HttpTransport {
    /// A transport with its own connection pool.
    ///
    /// # Errors
    /// TLS initialisation failures of the HTTP client.
    pub fn new() -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("sunfish-rs/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(4)
            .build()?;
        Ok(HttpTransport { client })
    }
}

#[async_trait]
impl EventTransport for HttpTransport {
    async fn post(
        &self,
        destination: &str,
        headers: &[(String, String)],
        body: Bytes,
        timeout: Duration,
    ) -> Result<u16, String> {
        let mut req = self.client.post(destination).timeout(timeout).header("Content-Type", "application/json");
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        match req.body(body).send().await {
            Ok(resp) => Ok(resp.status().as_u16()),
            Err(e) if e.is_timeout() => Err("timed out".into()),
            Err(e) => Err(e.to_string()),
        }
    }
}

#[async_trait]
impl AgentClient for HttpTransport {
    async fn send(&self, request: AgentRequest) -> Result<AgentReply, AgentFailure> {
        let method = match request.method {
            Operation::Get => reqwest::Method::GET,
            Operation::Create => reqwest::Method::POST,
            Operation::Replace => reqwest::Method::PUT,
            Operation::Patch => reqwest::Method::PATCH,
            Operation::Delete => reqwest::Method::DELETE,
        };
        let mut req = self.client.request(method, &request.url).timeout(request.timeout);
        for (k, v) in &request.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        if let Some(body) = &request.body {
            req = req.header("Content-Type", "application/json").body(body.to_string());
        }
        let resp = req.send().await.map_err(|e| failure(&e))?;
        let status = resp.status().as_u16();
        let location = resp.headers().get("Location").and_then(|v| v.to_str().ok()).map(str::to_string);
        let body = resp.bytes().await.map_err(|e| failure(&e))?;
        Ok(AgentReply { status, body, location })
    }
}

fn failure(e: &reqwest::Error) -> AgentFailure {
    if e.is_timeout() {
        AgentFailure::TimedOut
    } else {
        AgentFailure::Unreachable(e.to_string())
    }
}
