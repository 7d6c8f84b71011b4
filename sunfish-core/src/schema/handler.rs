//! [`SchemaValidator`]: the object handler that runs [`SchemaSet::validate`] on every
//! POST, PUT and PATCH.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::SchemaSet;
use crate::{Core, ObjectHandler, Operation, Result, WriteOp};

/// Validates write bodies against the bundle's schemas before they are stored or forwarded:
/// POST against the payload's `@odata.type`, PUT and PATCH against the stored resource's type,
/// with the stored resource as the current value (unchanged values pass). Deletes are not
/// looked at. Built by the front end when `schema.dir` is configured, for all types (`"*"`).
///
/// Register it so it runs **before** the service's own hooks (accounts, subscriptions): those
/// add service-computed, read-only properties (`Links/Role`, `Status`) to the payload, which a
/// client may not send but the service may write.
pub struct SchemaValidator {
    /// The bundle, shared with the query engine and the HTTP front end.
    schemas: Arc<SchemaSet>,
}

impl SchemaValidator {
    /// A validator over `schemas`.
    pub fn new(schemas: Arc<SchemaSet>) -> Self {
        SchemaValidator { schemas }
    }
}

#[async_trait]
impl ObjectHandler for SchemaValidator {
    fn resource_types(&self) -> &[&str] {
        &["*"]
    }

    async fn before(&self, core: &Core, op: &mut WriteOp) -> Result<()> {
        let Some(payload) = op.payload.as_ref() else { return Ok(()) };
        match op.operation {
            Operation::Create => {
                let Some(t) = payload.get("@odata.type").and_then(Value::as_str) else { return Ok(()) };
                self.schemas.validate(t, payload, Operation::Create, None)
            }
            Operation::Patch | Operation::Replace => {
                let current = core.get(&op.path).await?;
                let Some(t) = current.odata_type() else { return Ok(()) };
                self.schemas.validate(t, payload, op.operation, Some(current.value_for_write()))
            }
            Operation::Get | Operation::Delete => Ok(()),
        }
    }
}
