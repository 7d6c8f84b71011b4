//! Subscription filters per DSP0266: each filter property constrains one aspect of an event;
//! a subscription receives an event when **every** present property accepts it (AND across
//! properties) and a list accepts when **any** entry matches (OR within). A subscription with
//! no filter receives every event. The reference ORed everything and gave unfiltered
//! subscriptions nothing; both are fixed here.

use serde_json::Value;

use crate::{Error, ResourcePath, Result};

/// The filter part of an `EventDestination`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubscriptionFilter {
    /// `RegistryPrefixes`: registry prefixes accepted.
    pub registry_prefixes: Vec<String>,
    /// `ExcludeRegistryPrefixes`.
    pub exclude_registry_prefixes: Vec<String>,
    /// `MessageIds`, normalized to `(prefix, key)` (versions are ignored).
    pub message_ids: Vec<(String, String)>,
    /// `ExcludeMessageIds`, normalized.
    pub exclude_message_ids: Vec<(String, String)>,
    /// `ResourceTypes`, as type names (`ComputerSystem`).
    pub resource_types: Vec<String>,
    /// `OriginResources`.
    pub origin_resources: Vec<ResourcePath>,
    /// `SubordinateResources`: origins also match resources below them.
    pub subordinate: bool,
}

/// What a filter looks at in one event.
#[derive(Debug, Clone, Copy)]
pub struct EventFacts<'a> {
    /// Full MessageId.
    pub message_id: &'a str,
    /// OriginOfCondition, if any.
    pub origin: Option<&'a ResourcePath>,
    /// Type name of the origin resource, if known.
    pub origin_type: Option<&'a str>,
}

/// `(registry prefix, message key)` of a MessageId: first and last dotted segments, so
/// `ResourceEvent.1.4.ResourceCreated` and `ResourceEvent.ResourceCreated` are the same.
pub fn normalize_message_id(id: &str) -> (String, String) {
    let prefix = id.split('.').next().unwrap_or(id);
    let key = id.rsplit('.').next().unwrap_or(id);
    (prefix.to_string(), key.to_string())
}

/// A type name from either `ComputerSystem` or `#ComputerSystem.v1_0_0.ComputerSystem`.
fn normalize_type(t: &str) -> String {
    let t = t.strip_prefix('#').unwrap_or(t);
    t.split('.').next().unwrap_or(t).to_string()
}

fn string_list(v: &Value, prop: &str) -> Result<Vec<String>> {
    match v.get(prop) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str().map(str::to_string).ok_or_else(|| Error::property_value(prop, "entries must be strings"))
            })
            .collect(),
        Some(_) => Err(Error::property_value(prop, "must be an array")),
    }
}

impl SubscriptionFilter {
    /// Reads and validates the filter properties of an `EventDestination` body.
    ///
    /// # Errors
    /// `PropertyValue` naming the property when a value has the wrong shape or when include and
    /// exclude lists contradict each other (the same prefix or MessageId in both, a MessageId
    /// whose registry is excluded or not among `RegistryPrefixes`).
    pub fn from_destination(v: &Value) -> Result<Self> {
        let registry_prefixes = string_list(v, "RegistryPrefixes")?;
        let exclude_registry_prefixes = string_list(v, "ExcludeRegistryPrefixes")?;
        let message_ids: Vec<_> = string_list(v, "MessageIds")?.iter().map(|m| normalize_message_id(m)).collect();
        let exclude_message_ids: Vec<_> =
            string_list(v, "ExcludeMessageIds")?.iter().map(|m| normalize_message_id(m)).collect();
        let resource_types = string_list(v, "ResourceTypes")?.iter().map(|t| normalize_type(t)).collect();
        let origin_resources = match v.get("OriginResources") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| {
                    let s = i.get("@odata.id").and_then(Value::as_str).or_else(|| i.as_str());
                    s.and_then(|s| ResourcePath::parse_link(s).ok())
                        .ok_or_else(|| Error::property_value("OriginResources", "entries must be links to resources"))
                })
                .collect::<Result<_>>()?,
            Some(_) => return Err(Error::property_value("OriginResources", "must be an array")),
        };
        let subordinate = match v.get("SubordinateResources") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(Error::property_value("SubordinateResources", "must be a boolean")),
        };
        if let Some(p) = registry_prefixes.iter().find(|p| exclude_registry_prefixes.contains(p)) {
            return Err(Error::property_value("ExcludeRegistryPrefixes", format!("{p} is also in RegistryPrefixes")));
        }
        if let Some(m) = message_ids.iter().find(|m| exclude_message_ids.contains(m)) {
            return Err(Error::property_value("ExcludeMessageIds", format!("{}.{} is also in MessageIds", m.0, m.1)));
        }
        if let Some(m) = message_ids.iter().find(|m| exclude_registry_prefixes.contains(&m.0)) {
            return Err(Error::property_value(
                "MessageIds",
                format!("{}.{} belongs to a registry in ExcludeRegistryPrefixes", m.0, m.1),
            ));
        }
        if !registry_prefixes.is_empty() {
            if let Some(m) = message_ids.iter().find(|m| !registry_prefixes.contains(&m.0)) {
                return Err(Error::property_value(
                    "MessageIds",
                    format!("{}.{} belongs to no registry in RegistryPrefixes", m.0, m.1),
                ));
            }
        }
        Ok(SubscriptionFilter {
            registry_prefixes,
            exclude_registry_prefixes,
            message_ids,
            exclude_message_ids,
            resource_types,
            origin_resources,
            subordinate,
        })
    }

    /// Whether the subscription receives this event.
    pub fn matches(&self, e: &EventFacts<'_>) -> bool {
        let (prefix, key) = normalize_message_id(e.message_id);
        let id = (prefix, key);
        if !self.registry_prefixes.is_empty() && !self.registry_prefixes.contains(&id.0) {
            return false;
        }
        if self.exclude_registry_prefixes.contains(&id.0) {
            return false;
        }
        if !self.message_ids.is_empty() && !self.message_ids.contains(&id) {
            return false;
        }
        if self.exclude_message_ids.contains(&id) {
            return false;
        }
        if !self.resource_types.is_empty() && !e.origin_type.is_some_and(|t| self.resource_types.iter().any(|r| r == t))
        {
            return false;
        }
        if !self.origin_resources.is_empty() {
            let Some(origin) = e.origin else { return false };
            let hit =
                self.origin_resources.iter().any(|o| if self.subordinate { origin.is_within(o) } else { origin == o });
            if !hit {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn facts<'a>(id: &'a str, origin: Option<&'a ResourcePath>, ty: Option<&'a str>) -> EventFacts<'a> {
        EventFacts { message_id: id, origin, origin_type: ty }
    }

    /// No filter: every event.
    #[test]
    fn unfiltered_gets_everything() {
        let f = SubscriptionFilter::from_destination(&json!({})).unwrap();
        assert!(f.matches(&facts("Anything.1.0.X", None, None)));
    }

    /// Lists OR within, properties AND across.
    #[test]
    fn and_across_or_within() {
        let f = SubscriptionFilter::from_destination(&json!({
            "RegistryPrefixes": ["ResourceEvent", "TaskEvent"],
            "ResourceTypes": ["#ComputerSystem.v1_0_0.ComputerSystem"]
        }))
        .unwrap();
        let sys = ResourcePath::parse("/redfish/v1/Systems/1").unwrap();
        assert!(f.matches(&facts("ResourceEvent.1.4.ResourceCreated", Some(&sys), Some("ComputerSystem"))));
        assert!(f.matches(&facts("TaskEvent.1.0.TaskStarted", Some(&sys), Some("ComputerSystem"))));
        assert!(!f.matches(&facts("ResourceEvent.1.4.ResourceCreated", Some(&sys), Some("Chassis"))));
        assert!(!f.matches(&facts("Base.1.0.X", Some(&sys), Some("ComputerSystem"))));
        assert!(!f.matches(&facts("ResourceEvent.1.4.ResourceCreated", None, None)));
    }

    /// Excludes win; MessageIds match across versions.
    #[test]
    fn excludes_and_versions() {
        let f = SubscriptionFilter::from_destination(&json!({
            "ExcludeRegistryPrefixes": ["Base"],
            "ExcludeMessageIds": ["ResourceEvent.ResourceChanged"]
        }))
        .unwrap();
        assert!(!f.matches(&facts("Base.1.19.Success", None, None)));
        assert!(!f.matches(&facts("ResourceEvent.1.4.ResourceChanged", None, None)));
        assert!(f.matches(&facts("ResourceEvent.1.4.ResourceCreated", None, None)));
        let f = SubscriptionFilter::from_destination(&json!({"MessageIds": ["TaskEvent.1.0.TaskCancelled"]})).unwrap();
        assert!(f.matches(&facts("TaskEvent.1.0.5.TaskCancelled", None, None)));
        assert!(!f.matches(&facts("TaskEvent.1.0.TaskStarted", None, None)));
    }

    /// Origins match exactly, or on segment boundaries with SubordinateResources.
    #[test]
    fn origins() {
        let s1 = ResourcePath::parse("/redfish/v1/Systems/1").unwrap();
        let s10 = ResourcePath::parse("/redfish/v1/Systems/10").unwrap();
        let bios = ResourcePath::parse("/redfish/v1/Systems/1/Bios").unwrap();
        let exact =
            SubscriptionFilter::from_destination(&json!({"OriginResources": [{"@odata.id": "/redfish/v1/Systems/1"}]}))
                .unwrap();
        assert!(exact.matches(&facts("X.1.Y", Some(&s1), None)));
        assert!(!exact.matches(&facts("X.1.Y", Some(&bios), None)));
        let sub = SubscriptionFilter::from_destination(
            &json!({"OriginResources": [{"@odata.id": "/redfish/v1/Systems/1"}], "SubordinateResources": true}),
        )
        .unwrap();
        assert!(sub.matches(&facts("X.1.Y", Some(&bios), None)));
        assert!(!sub.matches(&facts("X.1.Y", Some(&s10), None)));
    }

    /// Contradictions are refused with the property named.
    #[test]
    fn contradictions() {
        let cases = [
            (json!({"RegistryPrefixes": ["A"], "ExcludeRegistryPrefixes": ["A"]}), "ExcludeRegistryPrefixes"),
            (json!({"MessageIds": ["A.1.X"], "ExcludeMessageIds": ["A.X"]}), "ExcludeMessageIds"),
            (json!({"MessageIds": ["A.1.X"], "ExcludeRegistryPrefixes": ["A"]}), "MessageIds"),
            (json!({"MessageIds": ["A.1.X"], "RegistryPrefixes": ["B"]}), "MessageIds"),
            (json!({"RegistryPrefixes": "A"}), "RegistryPrefixes"),
            (json!({"SubordinateResources": "True"}), "SubordinateResources"),
        ];
        for (body, prop) in cases {
            match SubscriptionFilter::from_destination(&body) {
                Err(Error::PropertyValue { property, .. }) => assert_eq!(property, prop, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }
}
