//! How subscriptions and the EventService resource follow writes made through the Core: an
//! [`ObjectHandler`] validates `EventDestination` bodies before they are stored, keeps
//! `HttpHeaders` out of the resource (they are secrets: stored privately, sent with each
//! delivery, never returned), and registers, updates or removes the subscription afterwards.
//! It also re-reads the service settings after a write to the EventService resource. The
//! actions `SubmitTestEvent`, `SuspendSubscription` and `ResumeSubscription` live here too.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::{EventService, NewEvent, RetryPolicy, SubscriptionFilter, EVENT_SERVICE, NS_SECRET, SUBSCRIPTIONS};
use crate::action::{ActionHandler, ActionResult};
use crate::resource::merge_patch;
use crate::{Core, Error, ObjectHandler, Operation, Resource, ResourcePath, Result, WriteOp};

/// The built-in object handler for `EventDestination` and `EventService` resources.
pub struct SubscriptionHooks {
    /// The service the hooks feed.
    pub service: Arc<EventService>,
}

fn is_subscription(path: &ResourcePath) -> bool {
    path.parent().is_some_and(|p| p.as_str() == SUBSCRIPTIONS)
}

/// Reads `HttpHeaders` (`[{"Name": "value"}, ...]`) into pairs.
fn parse_headers(v: &Value) -> Result<Vec<(String, String)>> {
    let bad = || Error::property_value("HttpHeaders", "must be an array of objects mapping header names to strings");
    let Value::Array(items) = v else { return Err(bad()) };
    let mut out = Vec::new();
    for item in items {
        let Value::Object(m) = item else { return Err(bad()) };
        for (k, v) in m {
            let v = v.as_str().ok_or_else(bad)?;
            if k.is_empty() || k.chars().any(|c| c.is_control() || c == ':') || v.chars().any(char::is_control) {
                return Err(bad());
            }
            out.push((k.clone(), v.to_string()));
        }
    }
    Ok(out)
}

impl SubscriptionHooks {
    /// Checks a whole subscription body (after merging a PATCH).
    fn validate(&self, v: &Value) -> Result<()> {
        let dest = match v.get("Destination") {
            Some(Value::String(s)) => s,
            None | Some(Value::Null) => return Err(Error::PropertyMissing { property: "Destination".into() }),
            Some(_) => return Err(Error::property_value("Destination", "must be a string")),
        };
        self.service
            .config
            .outbound
            .check(dest)
            .map_err(|reason| Error::NotPermitted { property: "Destination".into(), reason })?;
        match v.get("Protocol").and_then(Value::as_str) {
            Some("Redfish") => {}
            _ => return Err(Error::property_value("Protocol", "only Redfish is supported")),
        }
        if let Some(t) = v.get("SubscriptionType") {
            if t != "RedfishEvent" {
                return Err(Error::property_value(
                    "SubscriptionType",
                    "only RedfishEvent can be created; use the ServerSentEventUri for SSE",
                ));
            }
        }
        if let Some(f) = v.get("EventFormatType") {
            if f != "Event" {
                return Err(Error::property_value("EventFormatType", "only Event is supported"));
            }
        }
        if let Some(p) = v.get("DeliveryRetryPolicy") {
            if p.as_str().and_then(RetryPolicy::parse).is_none() {
                return Err(Error::property_value("DeliveryRetryPolicy", "unknown policy"));
            }
        }
        if let Some(c) = v.get("Context") {
            if !c.is_string() && !c.is_null() {
                return Err(Error::property_value("Context", "must be a string"));
            }
        }
        SubscriptionFilter::from_destination(v)?;
        Ok(())
    }
}

#[async_trait]
impl ObjectHandler for SubscriptionHooks {
    fn resource_types(&self) -> &[&str] {
        &["EventDestination", "EventService"]
    }

    async fn before(&self, core: &Core, op: &mut WriteOp) -> Result<()> {
        if op.resource_type != "EventDestination" || !is_subscription(&op.path) {
            return Ok(());
        }
        let Some(Value::Object(body)) = op.payload.as_mut() else { return Ok(()) };
        let headers = match body.remove("HttpHeaders") {
            None | Some(Value::Null) => None,
            Some(h) => Some(parse_headers(&h)?),
        };
        match op.operation {
            Operation::Create => {
                if self.service.subs.read().len() >= self.service.config.max_subscriptions {
                    return Err(Error::NotPermitted {
                        property: "Destination".into(),
                        reason: format!(
                            "the service holds its maximum of {} subscriptions",
                            self.service.config.max_subscriptions
                        ),
                    });
                }
                body.entry("Protocol").or_insert_with(|| json!("Redfish"));
                body.entry("SubscriptionType").or_insert_with(|| json!("RedfishEvent"));
                body.entry("EventFormatType").or_insert_with(|| json!("Event"));
                body.entry("DeliveryRetryPolicy").or_insert_with(|| json!("TerminateAfterRetries"));
                body.entry("Context").or_insert_with(|| json!(""));
                body.insert("Status".into(), json!({"State": "Enabled", "Health": "OK"}));
                let p = op.path.as_str();
                body.insert(
                    "Actions".into(),
                    json!({
                        "#EventDestination.ResumeSubscription": {"target": format!("{p}/Actions/EventDestination.ResumeSubscription")},
                        "#EventDestination.SuspendSubscription": {"target": format!("{p}/Actions/EventDestination.SuspendSubscription")}
                    }),
                );
                self.validate(&Value::Object(body.clone()))?;
                self.service.pending_secrets.lock().insert(op.path.clone(), headers.unwrap_or_default());
            }
            Operation::Patch | Operation::Replace => {
                let current = core.get(&op.path).await?;
                let mut merged = current.value().into_owned();
                if op.operation == Operation::Patch {
                    merge_patch(&mut merged, &Value::Object(body.clone()));
                } else {
                    merged = Value::Object(body.clone());
                }
                self.validate(&merged)?;
                if let Some(h) = headers {
                    let id = op.path.last().unwrap_or_default();
                    self.service.storage.kv_put(NS_SECRET, id, serde_json::to_value(h).unwrap_or_default()).await?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    async fn after(&self, _core: &Core, op: &WriteOp, result: Option<&Resource>) -> Result<()> {
        if op.resource_type == "EventService" && op.path.as_str() == EVENT_SERVICE {
            self.service.reload_settings().await;
            self.service.announce_settings().await;
            return Ok(());
        }
        if op.resource_type != "EventDestination" || !is_subscription(&op.path) {
            return Ok(());
        }
        let id = op.path.last().unwrap_or_default().to_string();
        match (op.operation, result) {
            (Operation::Delete, _) => self.service.unregister(&id).await,
            (Operation::Create, Some(r)) => {
                let headers = self.service.pending_secrets.lock().remove(&op.path).unwrap_or_default();
                if !headers.is_empty() {
                    self.service
                        .storage
                        .kv_put(NS_SECRET, &id, serde_json::to_value(headers).unwrap_or_default())
                        .await?;
                }
                self.service.register(&op.path, &r.value()).await?;
            }
            (_, Some(r)) => self.service.register(&op.path, &r.value()).await?,
            _ => return Ok(()),
        }
        self.service.announce(&id).await;
        Ok(())
    }
}

/// `EventService.SubmitTestEvent`: publishes the event described by the body.
pub struct SubmitTestEvent {
    /// The service.
    pub service: Arc<EventService>,
}

#[async_trait]
impl ActionHandler for SubmitTestEvent {
    async fn invoke(&self, _core: &Core, target: &ResourcePath, payload: Value) -> Result<ActionResult> {
        if target.as_str() != EVENT_SERVICE {
            return Err(Error::not_found(target));
        }
        let Value::Object(mut body) = payload else {
            return Err(Error::MalformedJson { reason: "the action body must be a JSON object".into() });
        };
        let message_id = match body.remove("MessageId") {
            None | Some(Value::Null) => format!("{}.TestMessage", super::RESOURCE_EVENT),
            Some(Value::String(s)) if !s.is_empty() => s,
            Some(_) => return Err(Error::property_value("MessageId", "must be a non-empty string")),
        };
        let origin = match body.get("OriginOfCondition") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(
                ResourcePath::parse_link(s).map_err(|e| Error::property_value("OriginOfCondition", e.to_string()))?,
            ),
            Some(Value::Object(o)) => o
                .get("@odata.id")
                .and_then(Value::as_str)
                .map(|s| {
                    ResourcePath::parse_link(s).map_err(|e| Error::property_value("OriginOfCondition", e.to_string()))
                })
                .transpose()?,
            Some(_) => return Err(Error::property_value("OriginOfCondition", "must be a URI")),
        };
        body.remove("OriginOfCondition");
        let severity = body
            .get("MessageSeverity")
            .or_else(|| body.get("Severity"))
            .and_then(Value::as_str)
            .unwrap_or("OK")
            .to_string();
        let message_args = match body.remove("MessageArgs") {
            Some(Value::Array(a)) => a,
            _ => Vec::new(),
        };
        self.service
            .publish(vec![NewEvent {
                message_id,
                message: body.get("Message").and_then(Value::as_str).map(str::to_string),
                message_args,
                severity,
                origin,
                origin_type: None,
                raw: Some(Value::Object(body)),
            }])
            .await?;
        Ok(ActionResult::NoContent)
    }
}

/// `EventDestination.SuspendSubscription`.
pub struct SuspendSubscription {
    /// The service.
    pub service: Arc<EventService>,
}

/// `EventDestination.ResumeSubscription`: delivery restarts with the event it stopped at.
pub struct ResumeSubscription {
    /// The service.
    pub service: Arc<EventService>,
}

async fn set_state(service: &EventService, target: &ResourcePath, enabled: bool) -> Result<ActionResult> {
    if !is_subscription(target) || !service.set_enabled(target.last().unwrap_or_default(), enabled).await? {
        return Err(Error::not_found(target));
    }
    Ok(ActionResult::NoContent)
}

#[async_trait]
impl ActionHandler for SuspendSubscription {
    async fn invoke(&self, _core: &Core, target: &ResourcePath, _payload: Value) -> Result<ActionResult> {
        set_state(&self.service, target, false).await
    }
}

#[async_trait]
impl ActionHandler for ResumeSubscription {
    async fn invoke(&self, _core: &Core, target: &ResourcePath, _payload: Value) -> Result<ActionResult> {
        set_state(&self.service, target, true).await
    }
}
