//! Central agent configuration: one section per agent, kept by the upstream service so an
//! operator configures a fleet of agents in one place (as MADS brokers hand their agents their
//! settings). An agent started with `--upstream URL --name NAME` fetches
//! [`AGENT_CONFIGURATIONS`]`/NAME` and layers its `Configuration` under its own file,
//! environment and flags (docs/AGENTS.md, "Central configuration").
//!
//! The sections are ordinary resources of the tree, so operators use plain Redfish on them
//! (POST, PATCH with merge semantics and If-Match, DELETE, ETags, events). They sit below the
//! AggregationService's OEM URI space but are not linked from it: they may hold device
//! credentials, so reading them needs `ConfigureComponents` (Operator, Administrator; see
//! [`crate::auth::privilege_for`]), writing them `ConfigureManager` (Administrator), and no
//! `$expand` of a resource ordinary readers may see reaches them.
//!
//! What the upstream may not set: the keys that tell the agent where its upstream is and who it
//! is ([`LOCAL_ONLY_KEYS`]); those come with the request for the section, and letting the
//! section change them would let one upstream redirect an agent elsewhere. The hook refuses
//! them when the section is written, and the agent refuses them again when it reads one.

use async_trait::async_trait;
use serde_json::{json, Value};

use crate::{Core, Error, ObjectHandler, Operation, Resource, ResourcePath, Result, StorageBackend, WriteOp};

/// The collection of agent configuration sections.
pub const AGENT_CONFIGURATIONS: &str = "/redfish/v1/AggregationService/Oem/Sunfish_RM/AgentConfigurations";
/// The collection's `@odata.type`.
pub const COLLECTION_TYPE: &str = "#SunfishAgentConfigurationCollection.SunfishAgentConfigurationCollection";
/// The members' `@odata.type` (implied on POST).
pub const MEMBER_TYPE: &str = "#SunfishAgentConfiguration.v1_0_0.SunfishAgentConfiguration";
/// Keys (`section.key`, or a whole `section`) an agent takes only from its own file,
/// environment and flags.
pub const LOCAL_ONLY_KEYS: [&str; 6] = [
    "outbound",
    "agent.upstream",
    "agent.name",
    "agent.upstream_user",
    "agent.upstream_password",
    "agent.central_config",
];

/// The empty collection.
fn collection() -> Value {
    json!({
        "@odata.id": AGENT_CONFIGURATIONS,
        "@odata.type": COLLECTION_TYPE,
        "Name": "Agent Configurations",
        "Description": "One configuration section per agent, by ConnectionMethod name; \
                        readable with ConfigureComponents only",
        "Members": [],
        "Members@odata.count": 0,
    })
}

/// The empty collection when `path` is the sections' collection. The service shows it before
/// the first section exists without storing it (starting over a tree leaves the tree's files
/// alone), and stores it with the first section ([`ensure_collection`]).
pub fn service_collection(path: &ResourcePath) -> Option<Resource> {
    (path.as_str() == AGENT_CONFIGURATIONS).then(|| Resource::new(collection(), 0))
}

/// Stores the collection when `path` is it and the store lacks it (before a POST of a section).
///
/// # Errors
/// Storage failures.
pub async fn ensure_collection(storage: &dyn StorageBackend, path: &ResourcePath) -> Result<()> {
    let Some(c) = service_collection(path) else { return Ok(()) };
    match storage.get(path).await {
        Ok(_) => Ok(()),
        Err(Error::NotFound { .. }) => storage.import(vec![(path.clone(), c.value().into_owned())]).await,
        Err(e) => Err(e),
    }
}

/// Checks a `Configuration` value: an object of sections (objects), none of them setting a
/// [`LOCAL_ONLY_KEYS`] key. Returns the offending key's description.
///
/// # Errors
/// `PropertyValueFormatError`-style [`Error`] naming `Configuration/<key>`.
pub fn check_sections(configuration: &Value) -> Result<()> {
    let Some(sections) = configuration.as_object() else {
        return Err(Error::property_value("Configuration", "must be an object of configuration sections"));
    };
    for (name, section) in sections {
        if !section.is_object() {
            return Err(Error::property_value(
                format!("Configuration/{name}"),
                "a configuration section must be an object",
            ));
        }
    }
    if let Some(key) = local_only_key(configuration) {
        return Err(Error::property_value(
            format!("Configuration/{}", key.replace('.', "/")),
            "is taken from the agent's own configuration only",
        ));
    }
    Ok(())
}

/// The first [`LOCAL_ONLY_KEYS`] entry `configuration` sets, if any.
pub fn local_only_key(configuration: &Value) -> Option<&'static str> {
    LOCAL_ONLY_KEYS.into_iter().find(|key| {
        let pointer = format!("/{}", key.replace('.', "/"));
        configuration.pointer(&pointer).is_some()
    })
}

/// Checks writes of configuration sections (see the module docs).
pub struct AgentConfigHooks;

#[async_trait]
impl ObjectHandler for AgentConfigHooks {
    fn resource_types(&self) -> &[&str] {
        &["SunfishAgentConfiguration"]
    }

    async fn before(&self, core: &Core, op: &mut WriteOp) -> Result<()> {
        let Some(body) = op.payload.as_ref() else { return Ok(()) };
        match op.operation {
            Operation::Create | Operation::Replace => match body.get("Configuration") {
                Some(c) => check_sections(c),
                None => Err(Error::PropertyMissing { property: "Configuration".into() }),
            },
            Operation::Patch => {
                let Some(delta) = body.get("Configuration") else { return Ok(()) };
                // Check what the section becomes, not only the delta.
                let mut merged = core.get(&op.path).await?.value().get("Configuration").cloned().unwrap_or(json!({}));
                crate::merge_patch(&mut merged, delta);
                check_sections(&merged)
            }
            Operation::Get | Operation::Delete => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sections must be objects; the keys that locate the upstream are refused, named.
    #[test]
    fn sections_are_checked() {
        check_sections(&json!({"hardware": {"manager": "mockup"}, "agent": {"heartbeat_ms": 500}})).unwrap();
        check_sections(&json!({})).unwrap();
        assert!(check_sections(&json!([1])).is_err());
        let e = check_sections(&json!({"hardware": 3})).unwrap_err().to_string();
        assert!(e.contains("Configuration/hardware"), "{e}");
        let e = check_sections(&json!({"agent": {"upstream": "http://127.0.0.1:1"}})).unwrap_err().to_string();
        assert!(e.contains("Configuration/agent/upstream"), "{e}");
        let e = check_sections(&json!({"outbound": {"allow": ["*"]}})).unwrap_err().to_string();
        assert!(e.contains("Configuration/outbound"), "{e}");
        assert_eq!(local_only_key(&json!({"agent": {"name": "x"}})), Some("agent.name"));
        assert_eq!(local_only_key(&json!({"agent": {"roots": []}})), None);
    }
}
