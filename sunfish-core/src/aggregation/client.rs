//! How the aggregation service talks to agents. The core has no HTTP client of its own: the
//! front end (the server, with reqwest) implements [`AgentClient`], tests can script one.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::Value;

use crate::Operation;

/// One request to an agent.
#[derive(Debug, Clone)]
pub struct AgentRequest {
    /// GET, POST (create), PUT (replace), PATCH or DELETE.
    pub method: Operation,
    /// Absolute URL (`http://127.0.0.1:5001/redfish/v1/Fabrics/CXL`).
    pub url: String,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// JSON body, if any.
    pub body: Option<Value>,
    /// Give up after this long.
    pub timeout: Duration,
}

/// An agent's answer.
#[derive(Debug, Clone)]
pub struct AgentReply {
    /// HTTP status.
    pub status: u16,
    /// Body bytes (may be empty).
    pub body: Bytes,
    /// `Location`, if sent.
    pub location: Option<String>,
}

impl AgentReply {
    /// The body as a JSON object, if it is one.
    pub fn json_object(&self) -> Option<Value> {
        serde_json::from_slice::<Value>(&self.body).ok().filter(Value::is_object)
    }

    /// What an error reply says, for the client: the Redfish error message, else the status.
    pub fn error_text(&self) -> String {
        let v = self.json_object().unwrap_or_default();
        let ext = v.pointer("/error/@Message.ExtendedInfo/0/Message").and_then(Value::as_str);
        let msg = ext.or_else(|| v.pointer("/error/message").and_then(Value::as_str));
        match msg {
            Some(m) => format!("the agent answered {}: {m}", self.status),
            None => format!("the agent answered {}", self.status),
        }
    }
}

/// Why no answer came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentFailure {
    /// Nothing within the request's timeout.
    TimedOut,
    /// Connection refused, reset, DNS, TLS...: the text says which.
    Unreachable(String),
}

/// Sends HTTP requests to agents.
#[async_trait]
pub trait AgentClient: Send + Sync + 'static {
    /// Sends `request`; any HTTP status is an `Ok` reply.
    ///
    /// # Errors
    /// [`AgentFailure`] when no HTTP answer came.
    async fn send(&self, request: AgentRequest) -> Result<AgentReply, AgentFailure>;
}
