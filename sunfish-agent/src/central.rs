//! Central configuration, agent side: fetch this agent's section from the upstream and layer
//! it under the local file, environment and flags.
//!
//! The upstream keeps one section per agent at
//! [`AGENT_CONFIGURATIONS`]`/<agent.name>` (`Configuration`: the same sections and keys as the
//! agent's TOML file). The GET carries `agent.upstream_user`/`upstream_password` when set;
//! reading sections needs `ConfigureComponents` upstream. `agent.central_config` says what to
//! do without an answer ([`CentralMode`]). The keys that locate the upstream
//! ([`LOCAL_ONLY_KEYS`]) are never taken from it.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use sunfish_core::aggregation::agentconfig::{local_only_key, AGENT_CONFIGURATIONS, LOCAL_ONLY_KEYS};
use sunfish_core::aggregation::client::{AgentClient, AgentFailure, AgentRequest};
use sunfish_core::{Operation, StartupError};
use tracing::{info, warn};

use crate::config::{AgentConfig, CentralMode, Overrides};

/// The first wait between attempts in `required` mode.
const FIRST_RETRY: Duration = Duration::from_millis(200);
/// Longest wait for one answer in `optional` mode (the agent should not hang at start).
const OPTIONAL_TIMEOUT: Duration = Duration::from_secs(5);

/// The URL of `cfg`'s section, if it has an upstream and central configuration is on.
pub fn section_url(cfg: &AgentConfig) -> Option<String> {
    if cfg.agent.central_config == CentralMode::Off {
        return None;
    }
    let base = cfg.agent.upstream_base()?;
    Some(format!("{base}{AGENT_CONFIGURATIONS}/{}", cfg.agent.name))
}

/// What one attempt found.
enum Attempt {
    /// The section's `Configuration`.
    Found(Value),
    /// No answer worth waiting on in optional mode; the text says why.
    Missing(String),
    /// Refused credentials: waiting will not change them.
    Refused(String),
    /// A section that is there but wrong: never started on, whatever the mode.
    Invalid(String),
}

/// Fetches the section for `cfg` (the local layers with the flags applied).
///
/// # Errors
/// [`StartupError::Config`] for a section that is malformed or sets a local-only key (in every
/// mode), for refused credentials in `required` mode, and for a bad `agent` section.
pub async fn fetch(cfg: &AgentConfig, client: &dyn AgentClient) -> Result<Option<Value>, StartupError> {
    let Some(url) = section_url(cfg) else { return Ok(None) };
    cfg.agent.validate(&cfg.outbound)?;
    let required = cfg.agent.central_config == CentralMode::Required;
    let timeout =
        if required { cfg.agent.request_timeout() } else { cfg.agent.request_timeout().min(OPTIONAL_TIMEOUT) };
    let mut wait = FIRST_RETRY;
    loop {
        match (attempt(cfg, client, &url, timeout).await, required) {
            (Attempt::Found(c), _) => {
                info!(%url, "configuration section fetched from the upstream");
                return Ok(Some(c));
            }
            (Attempt::Invalid(why), _) | (Attempt::Refused(why), true) => {
                return Err(StartupError::Config(format!("central configuration {url}: {why}")));
            }
            (Attempt::Refused(why), false) => {
                warn!(%url, reason = %why, "central configuration section refused; starting on the local configuration");
                return Ok(None);
            }
            (Attempt::Missing(why), false) => {
                info!(%url, reason = %why, "no central configuration section; starting on the local configuration");
                return Ok(None);
            }
            (Attempt::Missing(why), true) => {
                warn!(%url, reason = %why, retry_ms = wait.as_millis() as u64, "waiting for the central configuration section");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(cfg.agent.retry_max());
            }
        }
    }
}

async fn attempt(cfg: &AgentConfig, client: &dyn AgentClient, url: &str, timeout: Duration) -> Attempt {
    let mut headers = vec![("Accept".to_string(), "application/json".to_string())];
    if let (Some(u), Some(p)) = (&cfg.agent.upstream_user, &cfg.agent.upstream_password) {
        headers.push(crate::registrar::basic(u, p));
    }
    let request = AgentRequest { method: Operation::Get, url: url.to_string(), headers, body: None, timeout };
    let reply = match client.send(request).await {
        Ok(r) => r,
        Err(AgentFailure::TimedOut) => return Attempt::Missing("the upstream did not answer in time".into()),
        Err(AgentFailure::Unreachable(e)) => return Attempt::Missing(format!("the upstream is unreachable: {e}")),
    };
    match reply.status {
        200 => {}
        401 | 403 => {
            return Attempt::Refused(format!(
                "{} (reading sections needs ConfigureComponents: set agent.upstream_user and upstream_password)",
                reply.error_text()
            ))
        }
        _ => return Attempt::Missing(reply.error_text()),
    }
    let Some(section) = reply.json_object() else { return Attempt::Invalid("the answer is not a JSON object".into()) };
    let Some(configuration) = section.get("Configuration").filter(|c| c.is_object()).cloned() else {
        return Attempt::Invalid("the section has no Configuration object".into());
    };
    if let Some(key) = local_only_key(&configuration) {
        return Attempt::Invalid(format!(
            "Configuration sets {key}, which is taken from the agent's own configuration only ({})",
            LOCAL_ONLY_KEYS.join(", ")
        ));
    }
    Attempt::Found(configuration)
}

/// The whole layering: `local` is the configuration from the file, the environment and the
/// flags; when it names an upstream and central configuration is on, the section fetched from
/// there goes under the file, environment and flags (which win), and the result is loaded again.
/// The section is checked on its own first, so an unknown key in it is reported as the
/// section's.
///
/// # Errors
/// Those of [`fetch`] and of loading the layers.
pub async fn layer(
    local: AgentConfig,
    file: Option<&Path>,
    env: Vec<(String, String)>,
    overrides: &Overrides,
    client: &dyn AgentClient,
) -> Result<AgentConfig, StartupError> {
    let Some(section) = fetch(&local, client).await? else { return Ok(local) };
    let url = section_url(&local).unwrap_or_default();
    AgentConfig::load_layers(None, [], Some(&section))
        .map_err(|e| StartupError::Config(format!("central configuration {url}: {e}")))?;
    let mut cfg = AgentConfig::load_layers(file, env, Some(&section))?;
    overrides.apply(&mut cfg);
    Ok(cfg)
}

/// [`layer`] with the process environment and an HTTP client of its own: what `sunfish-agent`
/// and custom agents call after loading the local layers.
///
/// # Errors
/// As [`layer`]; no HTTP client.
pub async fn resolve(
    local: AgentConfig,
    file: Option<&Path>,
    overrides: &Overrides,
) -> Result<AgentConfig, StartupError> {
    if section_url(&local).is_none() {
        return Ok(local);
    }
    let client = sunfish_server::transport::HttpTransport::new()
        .map_err(|e| StartupError::Io { what: "HTTP client".into(), reason: e.to_string() })?;
    layer(local, file, std::env::vars().collect(), overrides, &client).await
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use async_trait::async_trait;
    use parking_lot::Mutex;
    use serde_json::json;
    use sunfish_core::aggregation::client::AgentReply;

    use super::*;

    /// Answers from a script, recording the requests.
    #[derive(Default)]
    struct Script {
        replies: Mutex<VecDeque<Result<AgentReply, AgentFailure>>>,
        seen: Mutex<Vec<AgentRequest>>,
    }

    impl Script {
        fn new(replies: Vec<Result<AgentReply, AgentFailure>>) -> Self {
            Script { replies: Mutex::new(replies.into()), seen: Mutex::default() }
        }
    }

    #[async_trait]
    impl AgentClient for Script {
        async fn send(&self, request: AgentRequest) -> Result<AgentReply, AgentFailure> {
            self.seen.lock().push(request);
            self.replies.lock().pop_front().unwrap_or(Err(AgentFailure::Unreachable("script ended".into())))
        }
    }

    fn reply(status: u16, body: Value) -> Result<AgentReply, AgentFailure> {
        Ok(AgentReply { status, body: body.to_string().into(), location: None })
    }

    fn section(configuration: Value) -> Result<AgentReply, AgentFailure> {
        reply(200, json!({"Id": "CXL1", "Configuration": configuration}))
    }

    fn local(mode: &str) -> AgentConfig {
        let env = [
            ("SUNFISH_AGENT__AGENT__UPSTREAM".to_string(), "http://127.0.0.1:8000/".to_string()),
            ("SUNFISH_AGENT__AGENT__NAME".into(), "CXL1".into()),
            ("SUNFISH_AGENT__AGENT__CENTRAL_CONFIG".into(), mode.into()),
            ("SUNFISH_AGENT__AGENT__RETRY_MAX_MS".into(), "200".into()),
        ];
        AgentConfig::load_layers(None, env, None).unwrap()
    }

    /// Layers, later wins: defaults < central section < file < environment < flags. The GET
    /// goes to the section's URI with the registration credentials.
    #[tokio::test]
    async fn the_section_goes_under_file_environment_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agent.toml");
        std::fs::write(&file, "[agent]\nretry_max_ms = 1234\n[hardware.options]\nlatency_ms = 7\n").unwrap();
        let env = vec![
            ("SUNFISH_AGENT__AGENT__UPSTREAM".to_string(), "http://127.0.0.1:8000".to_string()),
            ("SUNFISH_AGENT__AGENT__UPSTREAM_USER".into(), "op".into()),
            ("SUNFISH_AGENT__AGENT__UPSTREAM_PASSWORD".into(), "pw".into()),
            ("SUNFISH_AGENT__AGENT__HEARTBEAT_MS".into(), "300".into()),
        ];
        let overrides = Overrides { name: Some("CXL1".into()), ..Overrides::default() };
        let mut local = AgentConfig::load_layers(Some(&file), env.clone(), None).unwrap();
        overrides.apply(&mut local);
        let script = Script::new(vec![section(json!({
            "agent": {"heartbeat_ms": 9000, "retry_max_ms": 9000, "roots": ["/redfish/v1/Fabrics/CXL"]},
            "hardware": {"manager": "mockup", "options": {"latency_ms": 50, "fail_operations": ["PATCH"]}},
            "server": {"listen": "127.0.0.1:5999"},
        }))]);
        let cfg = layer(local, Some(&file), env, &overrides, &script).await.unwrap();
        // From the section only.
        assert_eq!(cfg.agent.roots, ["/redfish/v1/Fabrics/CXL"]);
        assert_eq!(cfg.hardware.options["fail_operations"], json!(["PATCH"]));
        assert_eq!(cfg.server.listen.to_string(), "127.0.0.1:5999");
        // The file beats the section, the environment beats both, the flags beat everything.
        assert_eq!(cfg.agent.retry_max_ms, 1234);
        assert_eq!(cfg.hardware.options["latency_ms"], 7);
        assert_eq!(cfg.agent.heartbeat_ms, 300);
        assert_eq!(cfg.agent.name, "CXL1");
        let seen = script.seen.lock();
        assert_eq!(seen.len(), 1);
        assert_eq!(
            seen[0].url,
            "http://127.0.0.1:8000/redfish/v1/AggregationService/Oem/Sunfish_RM/AgentConfigurations/CXL1"
        );
        assert!(seen[0].headers.contains(&("Authorization".into(), "Basic b3A6cHc=".into())), "{:?}", seen[0].headers);
    }

    /// `optional`: no upstream, no section, no access → the local configuration, after one try.
    #[tokio::test]
    async fn optional_goes_on_without_a_section() {
        for answer in [
            Err(AgentFailure::Unreachable("refused".into())),
            Err(AgentFailure::TimedOut),
            reply(404, json!({})),
            reply(401, json!({})),
            reply(503, json!({})),
        ] {
            let script = Script::new(vec![answer]);
            assert_eq!(fetch(&local("optional"), &script).await.unwrap(), None);
            assert_eq!(script.seen.lock().len(), 1);
        }
        let script = Script::new(vec![]);
        assert_eq!(fetch(&local("off"), &script).await.unwrap(), None);
        assert!(script.seen.lock().is_empty(), "off never asks");
    }

    /// `required` waits through an unreachable upstream and a missing section; refused
    /// credentials stop it.
    #[tokio::test]
    async fn required_waits_for_the_section() {
        let script = Script::new(vec![
            Err(AgentFailure::Unreachable("refused".into())),
            reply(404, json!({})),
            section(json!({"agent": {"heartbeat_ms": 99}})),
        ]);
        let got = fetch(&local("required"), &script).await.unwrap();
        assert_eq!(got, Some(json!({"agent": {"heartbeat_ms": 99}})));
        assert_eq!(script.seen.lock().len(), 3);
        let script = Script::new(vec![reply(403, json!({}))]);
        let e = fetch(&local("required"), &script).await.unwrap_err().to_string();
        assert!(e.contains("ConfigureComponents"), "{e}");
    }

    /// A section may not move the agent to another upstream, nor carry unknown keys; both are
    /// refused naming the key, whatever the mode.
    #[tokio::test]
    async fn bad_sections_are_refused() {
        let script = Script::new(vec![section(json!({"agent": {"upstream": "http://127.0.0.1:9"}}))]);
        let e = fetch(&local("optional"), &script).await.unwrap_err().to_string();
        assert!(e.contains("agent.upstream"), "{e}");
        let script = Script::new(vec![section(json!({"outbound": {"allow": ["*"]}}))]);
        let e = fetch(&local("required"), &script).await.unwrap_err().to_string();
        assert!(e.contains("outbound"), "{e}");
        let script = Script::new(vec![section(json!({"hardware": {"manger": "x"}}))]);
        let l = local("optional");
        let e = layer(l, None, vec![], &Overrides::default(), &script).await.unwrap_err().to_string();
        assert!(e.contains("central configuration") && e.contains("manger"), "{e}");
    }
}
