//! `excerpt` hints from the bundle: the JSON schemas carry CSDL's `Redfish.Excerpt` and
//! `Redfish.ExcerptCopyOnly` annotations as `excerpt` (the qualifiers, comma-separated) and
//! `excerptCopyOnly` on each property, so no CSDL parsing is needed.
//!
//! The excerpt of a type is every property of its definition annotated either way, whatever the
//! qualifier, that exists in the resource's version. An annotated object property is kept whole.
//! (In DSP8010 2025.4 no unannotated object has annotated members, so nested members are not
//! searched.) Types without any are `None`: the resource is returned whole.

use serde_json::Value;

use super::{added_after, Doc, OdataType, SchemaSet};
use crate::query::SchemaHints;

impl SchemaHints for SchemaSet {
    fn excerpt_properties(&self, odata_type: &str) -> Option<Vec<String>> {
        if let Some(cached) = self.excerpts.read().get(odata_type) {
            return cached.clone();
        }
        let t = OdataType::parse(odata_type)?;
        let doc = self.resource_schema(&t)?;
        let definition = doc.value.get("definitions")?.get(t.name)?;
        let out = collect(&t, &doc, definition);
        let answer = (!out.is_empty()).then_some(out);
        // Only types the bundle describes reach here, so the cache stays bounded.
        self.excerpts.write().insert(odata_type.to_string(), answer.clone());
        answer
    }
}

/// The annotated properties of `definition`, in schema order.
fn collect(t: &OdataType<'_>, doc: &Doc, definition: &Value) -> Vec<String> {
    let Some(properties) = definition.get("properties").and_then(Value::as_object) else { return Vec::new() };
    properties
        .iter()
        .filter(|(name, prop)| {
            !name.starts_with('@')
                && !added_after(&doc.schema, prop.get("versionAdded"), t.schema, t.version)
                && (prop.get("excerpt").is_some() || prop.get("excerptCopyOnly") == Some(&Value::Bool(true)))
        })
        .map(|(name, _)| name.clone())
        .collect()
}
