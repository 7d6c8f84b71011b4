//! Redfish events as they arrive at `/EventListener`, and the event handler plugin kind.
//!
//! Handlers are a dispatch registry: every linked handler is active (unless its options leave it
//! idle) and is called for each event whose MessageId's last dotted segment is one of its
//! `message_ids` (`ResourceEvent.1.0.ResourceCreated`, `Foo.1.0.ResourceCreated` and
//! `ResourceCreated` all reach a `ResourceCreated` handler), or for every event with `"*"`.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use crate::{Core, Error, PluginOptions, Result, StartupError};

/// A parsed event envelope (`#Event.v1_x.Event`); the raw JSON is kept for routing and audit.
#[derive(Debug, Clone)]
pub struct EventEnvelope {
    /// The envelope's `Context` (for agents: their AggregationSource Id), if any.
    pub context: Option<String>,
    /// The events, in order.
    pub events: Vec<EventRecord>,
    /// The envelope as received.
    pub raw: Value,
}

/// One entry of an envelope's `Events`.
#[derive(Debug, Clone)]
pub struct EventRecord {
    /// Full MessageId (`ResourceEvent.1.0.ResourceCreated`).
    pub message_id: String,
    /// `MessageArgs`, empty when absent.
    pub message_args: Vec<Value>,
    /// `OriginOfCondition.@odata.id`, if any.
    pub origin: Option<String>,
    /// The event as received.
    pub raw: Value,
}

impl EventRecord {
    /// The dispatch key: the last dotted segment of the MessageId.
    pub fn key(&self) -> &str {
        self.message_id.rsplit('.').next().unwrap_or(&self.message_id)
    }

    /// The registry prefix: the text before the first dot (`ResourceEvent`).
    pub fn registry_prefix(&self) -> &str {
        self.message_id.split('.').next().unwrap_or(&self.message_id)
    }
}

impl EventEnvelope {
    /// Validates and parses an envelope.
    ///
    /// # Errors
    /// `MalformedJson` when not an object; `PropertyMissing` for `Events` or an event's
    /// `MessageId`; `PropertyValue` for wrongly typed members.
    pub fn parse(raw: Value) -> Result<Self> {
        let obj = raw
            .as_object()
            .ok_or_else(|| Error::MalformedJson { reason: "an event envelope must be a JSON object".into() })?;
        let context = match obj.get("Context") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(Error::property_value("Context", "must be a string")),
        };
        let list = match obj.get("Events") {
            None => return Err(Error::PropertyMissing { property: "Events".into() }),
            Some(Value::Array(list)) => list,
            Some(_) => return Err(Error::property_value("Events", "must be an array")),
        };
        let mut events = Vec::with_capacity(list.len());
        for (i, e) in list.iter().enumerate() {
            let message_id = match e.get("MessageId") {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                Some(_) => {
                    return Err(Error::property_value(format!("Events/{i}/MessageId"), "must be a non-empty string"))
                }
                None => return Err(Error::PropertyMissing { property: format!("Events/{i}/MessageId") }),
            };
            let message_args = match e.get("MessageArgs") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(a)) => a.clone(),
                Some(_) => return Err(Error::property_value(format!("Events/{i}/MessageArgs"), "must be an array")),
            };
            let origin = match e.get("OriginOfCondition") {
                None | Some(Value::Null) => None,
                Some(Value::Object(o)) => o.get("@odata.id").and_then(Value::as_str).map(str::to_string),
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => {
                    return Err(Error::property_value(format!("Events/{i}/OriginOfCondition"), "must be a link"))
                }
            };
            events.push(EventRecord { message_id, message_args, origin, raw: e.clone() });
        }
        Ok(EventEnvelope { context, events, raw })
    }
}

/// Reacts to events received at `/EventListener` (agent registration, inventory upload, audit).
#[async_trait]
pub trait EventHandler: Send + Sync + 'static {
    /// Handles one event of `envelope`. An error stops the envelope and is answered to the
    /// sender (a `PropertyMissing` becomes 400, and so on).
    ///
    /// # Errors
    /// Whatever the handler cannot accept.
    async fn handle(&self, core: &Core, envelope: &EventEnvelope, event: &EventRecord) -> Result<()>;
}

/// Registers an event handler. `message_ids` are dispatch keys (last MessageId segments) or
/// `"*"` for every event. Submit it with [`crate::register_event_handler!`].
pub struct EventHandlerRegistration {
    /// Unique name; its options come from `[event_handlers.<name>]`.
    pub name: &'static str,
    /// One line for `--list-plugins`.
    pub description: &'static str,
    /// Dispatch keys this handler receives.
    pub message_ids: &'static [&'static str],
    /// Builds the handler from its options; `Ok(None)` when the options leave it idle (the
    /// audit handler without a `path`).
    pub build: fn(PluginOptions) -> Result<Option<Arc<dyn EventHandler>>, StartupError>,
}

crate::registry::impl_registration!(EventHandlerRegistration, "event-handler");

/// Registers an [`EventHandlerRegistration`] at link time.
#[macro_export]
macro_rules! register_event_handler {
    ($registration:expr) => {
        $crate::__private::inventory::submit! { $registration }
    };
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Envelopes without Events, or with a bad event, are refused with the property named.
    #[test]
    fn envelope_validation() {
        assert_eq!(EventEnvelope::parse(json!({})).unwrap_err(), Error::PropertyMissing { property: "Events".into() });
        assert_eq!(
            EventEnvelope::parse(json!({"Events": [{}]})).unwrap_err(),
            Error::PropertyMissing { property: "Events/0/MessageId".into() }
        );
        let env = EventEnvelope::parse(json!({"Context": "c", "Events": [
            {"MessageId": "ResourceEvent.1.0.ResourceCreated", "OriginOfCondition": {"@odata.id": "/redfish/v1/Fabrics/CXL"}}
        ]}))
        .unwrap();
        assert_eq!(env.context.as_deref(), Some("c"));
        assert_eq!(env.events[0].key(), "ResourceCreated");
        assert_eq!(env.events[0].registry_prefix(), "ResourceEvent");
        assert_eq!(env.events[0].origin.as_deref(), Some("/redfish/v1/Fabrics/CXL"));
    }
}
