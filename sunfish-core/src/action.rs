//! Redfish actions (`POST <resource>/Actions/<Type.Action>`). Built-in services register the
//! actions they implement on the [`crate::CoreBuilder`]; an action is never a stored resource.

use async_trait::async_trait;
use serde_json::Value;

use crate::{Core, ResourcePath, Result};

/// What an action returns to the client.
#[derive(Debug, Clone, PartialEq)]
pub enum ActionResult {
    /// 204 No Content.
    NoContent,
    /// 200 with this body.
    Body(Value),
}

/// Implements one action name (`EventService.SubmitTestEvent`) on the resources that carry it.
#[async_trait]
pub trait ActionHandler: Send + Sync + 'static {
    /// Runs the action on `target` (the resource whose `Actions` names it) with the POST body.
    ///
    /// # Errors
    /// Validation errors of the body; `NotFound` when `target` is not a resource this action
    /// applies to.
    async fn invoke(&self, core: &Core, target: &ResourcePath, payload: Value) -> Result<ActionResult>;
}

/// Splits `<target>/Actions/<Name>` into the target resource and the action name.
pub fn split_action_path(path: &ResourcePath) -> Option<(ResourcePath, String)> {
    let name = path.last()?.to_string();
    let actions = path.parent()?;
    if actions.last()? != "Actions" {
        return None;
    }
    Some((actions.parent()?, name))
}
