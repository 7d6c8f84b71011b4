//! `$select` (and the projection behind `excerpt`): keep the named properties of a resource.
//!
//! A selection is a tree of property names: `$select=Name,Status/Health` keeps `Name` whole and
//! only `Health` inside `Status`. Rules:
//! - `@odata.id`, `@odata.type`, `@odata.context` and `@odata.etag` are kept in every object the
//!   selection walks into, so expanded resources inside a selected property keep their identity.
//! - A kept property keeps its annotations (`Members` keeps `Members@odata.count` and
//!   `Members@odata.nextLink`). An annotation can also be named itself (`@Redfish.Settings`).
//! - A sub-selection applies inside objects, and to every object element of an array (so
//!   `Members/Name` selects `Name` in each expanded member); a scalar with a sub-selection is
//!   dropped, since nothing of it was asked for. Non-object array elements are kept, since
//!   array positions carry meaning.
//! - `*` as the last segment selects everything at that level (`$select=*`, `Oem/*`).
//! - Naming a property that does not exist is not an error: it simply is not in the response
//!   (the service has no schema to tell a typo from an absent optional property).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::{Error, Result};

/// Properties kept in every selected object (DSP0266: the service shall include `@odata.id`
/// and `@odata.type`; context and etag are kept because they describe the payload itself).
pub const ALWAYS_KEPT: [&str; 4] = ["@odata.id", "@odata.type", "@odata.context", "@odata.etag"];

/// Longest accepted property name segment; longer names cannot be Redfish properties.
const MAX_SEGMENT: usize = 128;

/// One level of the selection tree.
#[derive(Debug, Clone, Default, PartialEq)]
struct Node {
    /// The property is selected entirely (named without a sub-path, or with `*`).
    whole: bool,
    /// Sub-selections by property name.
    children: BTreeMap<String, Node>,
}

/// A parsed `$select` (or an excerpt property list): which properties to keep.
#[derive(Debug, Clone, PartialEq)]
pub struct Select {
    root: Node,
}

fn valid_segment(seg: &str) -> bool {
    !seg.is_empty()
        && seg.len() <= MAX_SEGMENT
        && (seg == "*" || seg.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '@' | '.' | '#' | '-')))
}

impl Select {
    /// Parses a `$select` value (already percent-decoded): comma-separated paths whose segments
    /// are separated by `/`; spaces around items are ignored.
    ///
    /// # Errors
    /// [`Error::QueryParameterValue`] for `$select` when the value is empty, an item is empty,
    /// a segment is empty or has characters no property name has, or `*` is not last.
    pub fn parse(text: &str) -> Result<Select> {
        Self::from_paths(text.split(','), "$select")
    }

    /// Builds a selection from paths like those of `$select` (`Status/Health`), e.g. the
    /// excerpt properties of a type. `parameter` names the query parameter in errors.
    ///
    /// # Errors
    /// As [`Select::parse`].
    pub fn from_paths<I, S>(paths: I, parameter: &str) -> Result<Select>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let bad = |reason: String| Error::QueryParameterValue { parameter: parameter.to_string(), reason };
        let mut root = Node::default();
        let mut any = false;
        for raw in paths {
            let item = raw.as_ref().trim();
            if item.is_empty() {
                return Err(bad("empty property name in the list".into()));
            }
            any = true;
            let segments: Vec<&str> = item.split('/').map(str::trim).collect();
            let mut node = &mut root;
            for (i, seg) in segments.iter().enumerate() {
                if !valid_segment(seg) {
                    return Err(bad(format!("'{item}' is not a property path")));
                }
                if *seg == "*" {
                    if i + 1 != segments.len() {
                        return Err(bad(format!("'*' must be the last segment in '{item}'")));
                    }
                    node.whole = true;
                    break;
                }
                node = node.children.entry((*seg).to_string()).or_default();
                if i + 1 == segments.len() {
                    node.whole = true;
                }
            }
        }
        if !any {
            return Err(bad("no properties named".into()));
        }
        Ok(Select { root })
    }

    /// Whether the selection names `Members` at the top (`Members/Name`): the collection-level
    /// form of selecting inside expanded members.
    pub fn names_members(&self) -> bool {
        self.root.children.contains_key("Members")
    }

    /// Whether the selection keeps everything (`$select=*`).
    pub fn is_everything(&self) -> bool {
        self.root.whole
    }

    /// Removes from `value` (a resource) every property not selected. Non-objects are left as
    /// they are.
    pub fn apply(&self, value: &mut Value) {
        if let Value::Object(map) = value {
            apply_object(map, &self.root);
        }
    }
}

/// The property an annotation key belongs to (`Members@odata.count` → `Members`), or the key
/// itself for plain properties and resource-level annotations (`@Redfish.Settings`).
fn annotated_property(key: &str) -> &str {
    match key.find('@') {
        Some(at) if at > 0 => &key[..at],
        _ => key,
    }
}

fn apply_object(map: &mut Map<String, Value>, node: &Node) {
    if node.whole {
        return;
    }
    map.retain(|key, child| {
        if ALWAYS_KEPT.contains(&key.as_str()) {
            return true;
        }
        if let Some(sub) = node.children.get(key.as_str()) {
            return apply_value(child, sub);
        }
        let base = annotated_property(key);
        base != key && node.children.contains_key(base)
    });
}

/// Applies a sub-selection; returns whether the property stays.
fn apply_value(value: &mut Value, node: &Node) -> bool {
    if node.whole {
        return true;
    }
    match value {
        Value::Object(map) => {
            apply_object(map, node);
            true
        }
        Value::Array(items) => {
            for item in items.iter_mut() {
                if let Value::Object(map) = item {
                    apply_object(map, node);
                }
            }
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sel(s: &str, mut v: Value) -> Value {
        Select::parse(s).unwrap().apply(&mut v);
        v
    }

    /// Only the named properties stay, plus the identity annotations; `Id` is not automatic.
    #[test]
    fn keeps_named_and_identity() {
        let v = json!({"@odata.id": "/redfish/v1/S/1", "@odata.type": "#S.v1.S", "@odata.etag": "\"1\"",
                       "@odata.context": "/redfish/v1/$metadata#S.S", "Id": "1", "Name": "n", "Other": 1});
        assert_eq!(
            sel("Name", v),
            json!({"@odata.id": "/redfish/v1/S/1", "@odata.type": "#S.v1.S", "@odata.etag": "\"1\"",
                   "@odata.context": "/redfish/v1/$metadata#S.S", "Name": "n"})
        );
    }

    /// Nested paths keep only the named leaves; a path through a scalar or a missing property
    /// keeps nothing.
    #[test]
    fn nested_paths() {
        let v = json!({"Status": {"Health": "OK", "State": "Enabled"}, "Name": "n", "Model": "m",
                       "Boot": {"Order": ["a"], "Mode": "UEFI"}});
        assert_eq!(
            sel(" Status/Health , Boot ,Nope/x, Name/x", v),
            json!({"Status": {"Health": "OK"}, "Boot": {"Order": ["a"], "Mode": "UEFI"}})
        );
    }

    /// A whole property wins over a sub-path of it, in either order.
    #[test]
    fn whole_wins() {
        let v = json!({"Status": {"Health": "OK", "State": "Enabled"}});
        assert_eq!(sel("Status/Health,Status", v.clone()), v);
        assert_eq!(sel("Status,Status/Health", v.clone()), v);
    }

    /// Sub-selections apply to each object in an array; annotations follow their property.
    #[test]
    fn arrays_and_annotations() {
        let v = json!({
            "Members": [{"@odata.id": "/a/1", "Name": "1", "X": 1}, {"@odata.id": "/a/2", "Name": "2"}, "raw"],
            "Members@odata.count": 3,
            "Members@odata.nextLink": "/a?$skip=3",
            "Name": "c",
            "Name@Redfish.AllowableValues": ["c"],
            "@Redfish.Settings": {"x": 1}
        });
        assert_eq!(
            sel("Members/Name", v.clone()),
            json!({
                "Members": [{"@odata.id": "/a/1", "Name": "1"}, {"@odata.id": "/a/2", "Name": "2"}, "raw"],
                "Members@odata.count": 3,
                "Members@odata.nextLink": "/a?$skip=3"
            })
        );
        assert_eq!(
            sel("Name,@Redfish.Settings", v),
            json!({"Name": "c", "Name@Redfish.AllowableValues": ["c"], "@Redfish.Settings": {"x": 1}})
        );
    }

    /// `*` keeps a whole level.
    #[test]
    fn star() {
        let v = json!({"A": 1, "Oem": {"V": {"x": 1}}, "B": 2});
        assert_eq!(sel("*", v.clone()), v);
        assert!(Select::parse("*").unwrap().is_everything());
        assert_eq!(sel("Oem/*", v), json!({"Oem": {"V": {"x": 1}}}));
    }

    /// Malformed lists are value errors for `$select`.
    #[test]
    fn errors() {
        for bad in ["", " ", "A,,B", "A,", "A//B", "/A", "A/", "A B", "A%", "*/A", "A=1"] {
            match Select::parse(bad) {
                Err(Error::QueryParameterValue { parameter, .. }) => assert_eq!(parameter, "$select"),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        assert!(Select::parse(&"A".repeat(200)).is_err());
        assert!(Select::parse("Members/Name").unwrap().names_members());
        assert!(!Select::parse("Name").unwrap().names_members());
    }
}
