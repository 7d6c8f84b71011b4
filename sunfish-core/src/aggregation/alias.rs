//! URI aliases of one agent: where its objects landed in our tree when their own URI was taken.
//!
//! An alias maps an agent URI to ours and covers everything below it, so the children of a
//! renamed object follow their parent without an entry each (`/Systems/S1/Memory/M1` of an agent
//! whose `S1` became `Sunfish_ab12_S1` is ours at `/Systems/Sunfish_ab12_S1/Memory/M1`). The same
//! map translates both ways: agent replies and uploads into ours, forwarded requests into the
//! agent's, including URIs of children that do not exist yet.

use std::collections::BTreeMap;

use serde_json::Value;

/// Agent URI → our URI, for the roots of renamed subtrees. Keys and values are normalised
/// resource paths (no trailing slash, no fragment).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Aliases(BTreeMap<String, String>);

/// Splits `uri` into its path and `#fragment` (kept as is).
fn split_fragment(uri: &str) -> (&str, &str) {
    match uri.find('#') {
        Some(i) => (&uri[..i], &uri[i..]),
        None => (uri, ""),
    }
}

/// The ancestors of `path` (itself first, then up to the root), on segment boundaries.
fn prefixes(path: &str) -> impl Iterator<Item = &str> {
    let mut cut = Some(path.len());
    std::iter::from_fn(move || {
        let end = cut?;
        let p = &path[..end];
        cut = p.rfind('/').filter(|i| *i > 0);
        Some(p)
    })
}

/// `uri` with the longest prefix found by `lookup` replaced; `None` when none matches.
fn translate<'a>(uri: &str, lookup: impl Fn(&str) -> Option<&'a str>) -> Option<String> {
    let (path, fragment) = split_fragment(uri);
    let path = path.strip_suffix('/').unwrap_or(path);
    prefixes(path).find_map(|p| lookup(p).map(|to| format!("{to}{}{fragment}", &path[p.len()..])))
}

impl Aliases {
    /// Records that the agent's `agent_uri` (and everything below it) is ours at `ours`.
    pub fn insert(&mut self, agent_uri: &str, ours: &str) {
        self.0.insert(agent_uri.to_string(), ours.to_string());
    }

    /// Forgets the aliases of agent URIs whose target lies at or below `ours`.
    pub fn remove_below(&mut self, ours: &str) {
        self.0.retain(|_, v| !(v == ours || v.starts_with(&format!("{ours}/"))));
    }

    /// Whether an alias points at `ours` exactly.
    pub fn targets(&self, ours: &str) -> bool {
        self.0.values().any(|v| v == ours)
    }

    /// Whether there are no aliases.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The agent's `uri` in our namespace (unchanged when no alias covers it).
    pub fn to_ours(&self, uri: &str) -> String {
        translate(uri, |p| self.0.get(p).map(String::as_str)).unwrap_or_else(|| uri.to_string())
    }

    /// Our `uri` in the agent's namespace (unchanged when no alias covers it).
    pub fn to_agent(&self, uri: &str) -> String {
        translate(uri, |p| self.0.iter().find(|(_, v)| v.as_str() == p).map(|(k, _)| k.as_str()))
            .unwrap_or_else(|| uri.to_string())
    }
}

/// Rewrites every `@odata.id` string in `value` with `f` (skipping anything under a
/// `Sunfish_RM` member: those links are ours already). Returns whether anything changed.
pub fn rewrite_links(value: &mut Value, f: &dyn Fn(&str) -> String) -> bool {
    match value {
        Value::Object(m) => {
            let mut changed = false;
            for (k, v) in m.iter_mut() {
                if k == "Sunfish_RM" {
                    continue;
                }
                if k == "@odata.id" {
                    if let Value::String(s) = v {
                        let new = f(s);
                        if new != *s {
                            *s = new;
                            changed = true;
                        }
                    }
                } else {
                    changed |= rewrite_links(v, f);
                }
            }
            changed
        }
        Value::Array(a) => a.iter_mut().fold(false, |c, v| rewrite_links(v, f) | c),
        _ => false,
    }
}

/// Every `@odata.id` in `value` except its own top-level one and those under `Sunfish_RM`: the
/// links an upload follows.
pub fn links(value: &Value) -> Vec<String> {
    fn walk(v: &Value, top: bool, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    if k == "Sunfish_RM" {
                        continue;
                    }
                    if k == "@odata.id" {
                        if let (false, Value::String(s)) = (top, x) {
                            out.push(s.clone());
                        }
                    } else {
                        walk(x, false, out);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, false, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, true, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Children of a renamed object translate with it, both ways, fragments kept; other URIs
    /// and look-alike siblings (`S10` next to `S1`) are left alone.
    #[test]
    fn prefix_translation_both_ways() {
        let mut a = Aliases::default();
        a.insert("/redfish/v1/Systems/S1", "/redfish/v1/Systems/Sunfish_ab12_S1");
        assert_eq!(a.to_ours("/redfish/v1/Systems/S1"), "/redfish/v1/Systems/Sunfish_ab12_S1");
        assert_eq!(a.to_ours("/redfish/v1/Systems/S1/Memory/M1"), "/redfish/v1/Systems/Sunfish_ab12_S1/Memory/M1");
        assert_eq!(
            a.to_ours("/redfish/v1/Systems/S1/Thermal#/Fans/0"),
            "/redfish/v1/Systems/Sunfish_ab12_S1/Thermal#/Fans/0"
        );
        assert_eq!(a.to_ours("/redfish/v1/Systems/S10"), "/redfish/v1/Systems/S10");
        assert_eq!(a.to_agent("/redfish/v1/Systems/Sunfish_ab12_S1/Ports/New"), "/redfish/v1/Systems/S1/Ports/New");
        assert_eq!(a.to_agent("/redfish/v1/Systems/S1"), "/redfish/v1/Systems/S1");
        a.remove_below("/redfish/v1/Systems/Sunfish_ab12_S1");
        assert!(a.is_empty());
    }

    /// Link rewriting reaches nested links and arrays, never `Sunfish_RM`; link discovery
    /// skips the object's own id.
    #[test]
    fn rewrite_and_discover_links() {
        let mut v = json!({"@odata.id": "/redfish/v1/A", "Links": {"L": [{"@odata.id": "/redfish/v1/B"}]},
            "Oem": {"Sunfish_RM": {"ManagingAgent": {"@odata.id": "/redfish/v1/B"}}}});
        assert_eq!(links(&v), vec!["/redfish/v1/B".to_string()]);
        assert!(rewrite_links(&mut v, &|s| s.replace("/B", "/C")));
        assert_eq!(v["Links"]["L"][0]["@odata.id"], "/redfish/v1/C");
        assert_eq!(v["Oem"]["Sunfish_RM"]["ManagingAgent"]["@odata.id"], "/redfish/v1/B");
        assert!(!rewrite_links(&mut v, &|s| s.to_string()));
    }
}
