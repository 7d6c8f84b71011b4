//! Write-body validation against the bundle's JSON schemas ([`SchemaSet::validate`]).
//!
//! Rules, in the order they are checked for each property of the body (body order, depth
//! first; the first problem is returned):
//! - Keys starting with `@`, and `Prop@odata.*`/`@Redfish.*`/`@Message.*` annotations, are
//!   skipped: identity and annotations are the core's business.
//! - On PATCH and PUT, a value equal to the stored one is accepted whatever the schema says: it
//!   changes nothing, and clients (DMTF's protocol validator, GET-modify-PUT clients) echo
//!   read-only properties. On POST every value is checked.
//! - `Oem` objects are not looked into.
//! - A property the schema does not have (`additionalProperties: false` and no matching
//!   `patternProperties`), or one added after the resource's version, is
//!   [`Error::PropertyUnknown`].
//! - On PATCH and PUT, a `readonly` property is [`Error::PropertyNotWritable`]; POST may set
//!   read-only properties (agents and reference clients create complete resources).
//! - A JSON type the schema does not allow (`type`, including `"null"`, and `anyOf` with
//!   `{"type": "null"}` for nullable references) is [`Error::PropertyValueType`].
//! - A value outside `enum` (or added after the resource's version), not matching `pattern`, or
//!   outside `minimum`/`maximum` is [`Error::PropertyValue`].
//!
//! Property paths join names and array indexes with `/` (`Status/State`, `Links/Chassis/0`).

use std::sync::Arc;

use serde_json::{Map, Value};
use tracing::debug;

use super::{added_after, Doc, OdataType, SchemaSet, Version};
use crate::{Error, Operation, Result};

/// Deepest nesting of values and `$ref` hops followed; deeper parts are not checked (DMTF
/// schemas never come close; this only bounds a malicious or cyclic document).
const MAX_DEPTH: usize = 64;

/// Longest value text quoted back in [`Error::PropertyValueType`].
const MAX_VALUE_TEXT: usize = 100;

impl SchemaSet {
    /// Checks a write body against the schema of `odata_type` (the stored resource's type for
    /// PATCH/PUT, the payload's for POST). `current` is the stored resource for PATCH/PUT, so
    /// that unchanged values (also read-only ones) pass. See the module documentation for the
    /// rules. Types and versions the bundle does not describe are accepted (logged at debug).
    ///
    /// # Errors
    /// The first problem found: [`Error::PropertyNotWritable`], [`Error::PropertyUnknown`],
    /// [`Error::PropertyValueType`] or [`Error::PropertyValue`], naming the property by its
    /// `/`-separated path.
    pub fn validate(&self, odata_type: &str, body: &Value, op: Operation, current: Option<&Value>) -> Result<()> {
        let Some(t) = OdataType::parse(odata_type) else {
            debug!(odata_type, "unparsable @odata.type; not validated");
            return Ok(());
        };
        let Some(doc) = self.resource_schema(&t) else { return Ok(()) };
        let Some(definition) = doc.value.get("definitions").and_then(|d| d.get(t.name)) else {
            debug!(odata_type, file = %doc.file, "no definition for the type; not validated");
            return Ok(());
        };
        let check = Check { set: self, op, schema: t.schema, version: t.version };
        check.value(&doc, definition, body, current, "", 0)
    }
}

/// One validation run.
struct Check<'a> {
    set: &'a SchemaSet,
    op: Operation,
    /// The resource's schema name: `versionAdded` in its files is compared with `version`.
    schema: &'a str,
    /// The resource's version (`None` for unversioned types: nothing is filtered).
    version: Option<Version>,
}

impl Check<'_> {
    /// Whether a PATCH/PUT leaves this value as stored.
    fn unchanged(&self, value: &Value, current: Option<&Value>) -> bool {
        self.op != Operation::Create && current == Some(value)
    }

    /// Whether an addition marked `added` (`v1_5_0`) in `doc` is newer than the resource.
    fn too_new(&self, doc: &Doc, added: Option<&Value>) -> bool {
        added_after(&doc.schema, added, self.schema, self.version)
    }

    /// Checks `value` against `schema` (a node of `doc`).
    fn value(
        &self,
        doc: &Arc<Doc>,
        schema: &Value,
        value: &Value,
        current: Option<&Value>,
        path: &str,
        depth: usize,
    ) -> Result<()> {
        if depth > MAX_DEPTH || self.unchanged(value, current) {
            return Ok(());
        }
        let Some(s) = schema.as_object() else { return Ok(()) };
        if let Some(reference) = s.get("$ref").and_then(Value::as_str) {
            // References outside the bundle (other publishers) are not validated.
            let Some((target_doc, pointer)) = self.set.resolve_ref(doc, reference) else { return Ok(()) };
            let Some(target) = target_doc.value.pointer(&pointer) else { return Ok(()) };
            return self.value(&target_doc, target, value, current, path, depth + 1);
        }
        if let Some(alternatives) = s.get("anyOf").and_then(Value::as_array) {
            return self.any_of(doc, alternatives, value, current, path, depth);
        }
        if let Some(t) = s.get("type") {
            if !type_matches(t, value) {
                return Err(type_error(path, value));
            }
        }
        if let Some(allowed) = s.get("enum").and_then(Value::as_array) {
            if !value.is_null() {
                if !allowed.contains(value) {
                    return Err(Error::property_value(
                        path,
                        format!("{} is not one of the allowed values", short(value)),
                    ));
                }
                let added = value.as_str().and_then(|v| s.get("enumVersionAdded").and_then(|m| m.get(v)));
                if self.too_new(doc, added) {
                    return Err(Error::property_value(
                        path,
                        format!("{} is not allowed in this version of the resource", short(value)),
                    ));
                }
            }
        }
        match value {
            Value::String(text) => {
                if let Some(pattern) = s.get("pattern").and_then(Value::as_str) {
                    if self.set.regex(pattern).is_some_and(|re| !re.is_match(text)) {
                        return Err(Error::property_value(
                            path,
                            format!("{} does not match the pattern {pattern}", short(value)),
                        ));
                    }
                }
            }
            Value::Number(n) => {
                let n = n.as_f64().unwrap_or(0.0);
                if let Some(min) = s.get("minimum").and_then(Value::as_f64).filter(|min| n < *min) {
                    return Err(Error::property_value(path, format!("{n} is below the minimum {min}")));
                }
                if let Some(max) = s.get("maximum").and_then(Value::as_f64).filter(|max| n > *max) {
                    return Err(Error::property_value(path, format!("{n} is above the maximum {max}")));
                }
            }
            Value::Object(map) => return self.object(doc, s, map, current, path, depth),
            Value::Array(items) => {
                if let Some(item_schema) = s.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        let cur = current.and_then(|c| c.get(i));
                        self.value(doc, item_schema, item, cur, &join(path, &i.to_string()), depth + 1)?;
                    }
                }
            }
            Value::Null | Value::Bool(_) => {}
        }
        Ok(())
    }

    /// The members of an object value.
    fn object(
        &self,
        doc: &Arc<Doc>,
        s: &Map<String, Value>,
        map: &Map<String, Value>,
        current: Option<&Value>,
        path: &str,
        depth: usize,
    ) -> Result<()> {
        let properties = s.get("properties").and_then(Value::as_object);
        let patterns = s.get("patternProperties").and_then(Value::as_object);
        for (key, v) in map {
            if is_annotation(key) {
                continue;
            }
            let p = join(path, key);
            let cur = current.and_then(|c| c.get(key));
            if let Some(prop) = properties.and_then(|ps| ps.get(key)) {
                self.property(doc, prop, key, v, cur, &p, depth)?;
                continue;
            }
            let by_pattern = patterns.and_then(|pp| {
                pp.iter().find(|(re, _)| self.set.regex(re).is_some_and(|re| re.is_match(key))).map(|(_, s)| s)
            });
            if let Some(pattern_schema) = by_pattern {
                self.value(doc, pattern_schema, v, cur, &p, depth + 1)?;
                continue;
            }
            match s.get("additionalProperties") {
                Some(Value::Bool(false)) if !self.unchanged(v, cur) => {
                    return Err(Error::PropertyUnknown { property: p })
                }
                Some(extra @ Value::Object(_)) => self.value(doc, extra, v, cur, &p, depth + 1)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// A named property: version, read-only, then its value.
    #[allow(clippy::too_many_arguments)]
    fn property(
        &self,
        doc: &Arc<Doc>,
        prop: &Value,
        name: &str,
        value: &Value,
        current: Option<&Value>,
        path: &str,
        depth: usize,
    ) -> Result<()> {
        if self.unchanged(value, current) {
            return Ok(());
        }
        if name == "Oem" && value.is_object() {
            return Ok(());
        }
        if self.too_new(doc, prop.get("versionAdded")) {
            return Err(Error::PropertyUnknown { property: path.to_string() });
        }
        if self.op != Operation::Create && prop.get("readonly") == Some(&Value::Bool(true)) {
            return Err(Error::PropertyNotWritable { property: path.to_string() });
        }
        self.value(doc, prop, value, current, path, depth + 1)
    }

    /// `anyOf`: valid when one alternative accepts the value. References that resolve to the
    /// same definition (every historical version of a schema maps to the bundle's newest file)
    /// are tried once. When none accepts, the error comes from the last alternative whose JSON
    /// type fits the value (the newest definition, after `idRef`), else it is a type error.
    fn any_of(
        &self,
        doc: &Arc<Doc>,
        alternatives: &[Value],
        value: &Value,
        current: Option<&Value>,
        path: &str,
        depth: usize,
    ) -> Result<()> {
        let mut seen: Vec<(String, String)> = Vec::new();
        let mut last_error = None;
        for alt in alternatives {
            if let Some(reference) = alt.get("$ref").and_then(Value::as_str) {
                let Some((d, pointer)) = self.set.resolve_ref(doc, reference) else { return Ok(()) };
                let key = (d.file.clone(), pointer);
                if seen.contains(&key) {
                    continue;
                }
                seen.push(key);
            }
            if !self.accepts_type(doc, alt, value, depth) {
                continue;
            }
            match self.value(doc, alt, value, current, path, depth + 1) {
                Ok(()) => return Ok(()),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| type_error(path, value)))
    }

    /// Whether `schema`'s JSON type admits `value`, looking through `$ref` and `anyOf` but not
    /// into members.
    fn accepts_type(&self, doc: &Arc<Doc>, schema: &Value, value: &Value, depth: usize) -> bool {
        if depth > MAX_DEPTH {
            return true;
        }
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            return match self.set.resolve_ref(doc, reference) {
                Some((d, pointer)) => match d.value.pointer(&pointer) {
                    Some(target) => self.accepts_type(&d, target, value, depth + 1),
                    None => true,
                },
                None => true,
            };
        }
        if let Some(alternatives) = schema.get("anyOf").and_then(Value::as_array) {
            return alternatives.iter().any(|a| self.accepts_type(doc, a, value, depth + 1));
        }
        schema.get("type").is_none_or(|t| type_matches(t, value))
    }
}

/// Annotation keys the validator leaves alone: `@odata.id`, `@Redfish.Settings`,
/// `Members@odata.count`, `Name@Redfish.AllowableValues`, `@Message.ExtendedInfo`, ...
fn is_annotation(key: &str) -> bool {
    key.starts_with('@') || key.contains("@odata.") || key.contains("@Redfish.") || key.contains("@Message.")
}

/// Whether JSON schema `type` (a name or a list of names) admits `value`.
fn type_matches(t: &Value, value: &Value) -> bool {
    let one = |name: &str| match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "number" => value.is_number(),
        "integer" => match value {
            Value::Number(n) => n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0),
            _ => false,
        },
        // An unknown type name constrains nothing we know how to check.
        _ => true,
    };
    match t {
        Value::String(name) => one(name),
        Value::Array(names) => names.iter().filter_map(Value::as_str).any(one),
        _ => true,
    }
}

fn type_error(path: &str, value: &Value) -> Error {
    Error::PropertyValueType { property: path.to_string(), value: short(value) }
}

/// `value` as JSON text, cut to [`MAX_VALUE_TEXT`] characters.
fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= MAX_VALUE_TEXT {
        return text;
    }
    let mut cut: String = text.chars().take(MAX_VALUE_TEXT).collect();
    cut.push_str("...");
    cut
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}/{key}")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// JSON types, including `integer` written as a whole float and type lists with null.
    #[test]
    fn types() {
        assert!(type_matches(&json!("integer"), &json!(3)));
        assert!(type_matches(&json!("integer"), &json!(3.0)));
        assert!(!type_matches(&json!("integer"), &json!(3.5)));
        assert!(type_matches(&json!("number"), &json!(3)));
        assert!(type_matches(&json!(["string", "null"]), &Value::Null));
        assert!(!type_matches(&json!(["string", "null"]), &json!(1)));
        assert!(!type_matches(&json!("object"), &json!([])));
    }

    /// Annotations are recognised wherever the `@` is.
    #[test]
    fn annotations() {
        for k in ["@odata.id", "@Redfish.Settings", "Members@odata.count", "Name@Redfish.AllowableValues"] {
            assert!(is_annotation(k), "{k}");
        }
        assert!(!is_annotation("Name"));
        assert!(!is_annotation("Name@Contoso.Thing"));
    }

    /// Long values are shortened when quoted back.
    #[test]
    fn shortens() {
        assert_eq!(short(&json!("x")), "\"x\"");
        let long = short(&json!("y".repeat(500)));
        assert_eq!(long.chars().count(), MAX_VALUE_TEXT + 3);
    }
}
