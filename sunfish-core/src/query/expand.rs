//! `$expand`: replacing hyperlinks by the resources they name, level by level, within a budget.
//!
//! A hyperlink is an object whose only property is a string `@odata.id`. Which hyperlinks a
//! level expands depends on the mode: `*` all of them, `.` those outside every `Links` property
//! (navigation properties, collection `Members`, links in annotations such as
//! `@Redfish.Settings`), `~` those inside a `Links` property. `Links` is recognized at any depth
//! of a resource, and each expanded resource is judged afresh. `Oem` is walked like any other
//! property. String-valued references (`@Redfish.ActionInfo`, `@odata.nextLink`) are not
//! hyperlink objects and stay as they are.
//!
//! A link with a JSON-pointer fragment (`.../Thermal#/Fans/0`) expands to that part of the
//! resource. A link stays a link when its target is missing ([`Error::NotFound`]), is not a
//! resource path, has a fragment that names nothing, or is already being expanded on the current
//! branch (a cycle: `Systems/1` → `Chassis/1` → `Systems/1`); the resource the request addressed
//! counts as on the branch. Other fetch failures (storage errors) fail the request.

use std::collections::HashMap;

use serde_json::Value;

use super::{Budget, Fetch};
use crate::{BoxFuture, Error, Resource, ResourcePath, Result};

/// Which hyperlinks `$expand` follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpandMode {
    /// `*`: every hyperlink.
    All,
    /// `.`: hyperlinks not inside a `Links` property (subordinate resources, `Members`).
    Subordinate,
    /// `~`: hyperlinks inside `Links` properties (dependent resources).
    Dependent,
}

impl ExpandMode {
    /// Whether the mode expands a hyperlink found inside (`in_links`) or outside `Links`.
    pub fn follows(self, in_links: bool) -> bool {
        match self {
            ExpandMode::All => true,
            ExpandMode::Subordinate => !in_links,
            ExpandMode::Dependent => in_links,
        }
    }

    /// Whether the mode expands a collection's `Members` (which are not inside `Links`).
    pub fn expands_members(self) -> bool {
        self.follows(false)
    }

    /// The mode's character in the query (`*`, `.`, `~`).
    pub fn symbol(self) -> char {
        match self {
            ExpandMode::All => '*',
            ExpandMode::Subordinate => '.',
            ExpandMode::Dependent => '~',
        }
    }
}

/// How many levels `$expand` descends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpandLevels {
    /// `$levels=N` (N ≥ 1); without `$levels`, 1.
    Count(usize),
    /// `$levels=max`: the budget's `max_levels`.
    Max,
}

/// A parsed `$expand`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expand {
    /// Which hyperlinks to follow.
    pub mode: ExpandMode,
    /// How deep.
    pub levels: ExpandLevels,
}

impl Expand {
    /// Parses a `$expand` value (already percent-decoded): `*`, `.` or `~`, optionally followed
    /// by `($levels=N)` or `($levels=max)`. Spaces around the parts are tolerated.
    ///
    /// # Errors
    /// [`Error::QueryParameterValue`] for `$expand`: any other form (Redfish services need not
    /// expand named navigation properties, and this one does not), `$levels` that is not a
    /// positive integer or `max`.
    pub fn parse(text: &str) -> Result<Expand> {
        let bad = |reason: String| Error::QueryParameterValue { parameter: "$expand".into(), reason };
        let text = text.trim();
        let mut chars = text.chars();
        let mode = match chars.next() {
            Some('*') => ExpandMode::All,
            Some('.') => ExpandMode::Subordinate,
            Some('~') => ExpandMode::Dependent,
            _ => return Err(bad(format!("'{text}' is not '*', '.' or '~' (optionally with ($levels=N))"))),
        };
        let rest = chars.as_str().trim();
        if rest.is_empty() {
            return Ok(Expand { mode, levels: ExpandLevels::Count(1) });
        }
        let inner = rest
            .strip_prefix('(')
            .and_then(|r| r.strip_suffix(')'))
            .ok_or_else(|| bad(format!("'{rest}' after '{}' is not ($levels=N)", mode.symbol())))?;
        let (key, value) = inner.split_once('=').ok_or_else(|| bad(format!("'{inner}' is not $levels=N")))?;
        if key.trim() != "$levels" {
            return Err(bad(format!("'{}' is not supported inside $expand, only $levels", key.trim())));
        }
        let value = value.trim();
        let levels = if value == "max" {
            ExpandLevels::Max
        } else {
            let n = value
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| value.parse::<usize>().ok())
                .flatten()
                .filter(|n| *n >= 1)
                .ok_or_else(|| bad(format!("$levels '{value}' is not a positive integer or 'max'")))?;
            ExpandLevels::Count(n)
        };
        Ok(Expand { mode, levels })
    }

    /// The number of levels under `budget`.
    ///
    /// # Errors
    /// [`Error::BudgetExceeded`] (`$expand levels`) when more than `budget.max_levels` are asked.
    pub fn resolve_levels(&self, budget: &Budget) -> Result<usize> {
        match self.levels {
            ExpandLevels::Max => Ok(budget.max_levels),
            ExpandLevels::Count(n) if n > budget.max_levels => {
                Err(Error::BudgetExceeded { what: "$expand levels".into(), limit: budget.max_levels })
            }
            ExpandLevels::Count(n) => Ok(n),
        }
    }
}

/// Whether a fetch failure means "leave the link as it is" rather than "fail the request".
pub(crate) fn is_missing(e: &Error) -> bool {
    matches!(e, Error::NotFound { .. } | Error::InvalidPath { .. })
}

/// The `@odata.id` of a hyperlink object (`{"@odata.id": X}` and nothing else).
pub(crate) fn link_target(v: &Value) -> Option<&str> {
    match v {
        Value::Object(o) if o.len() == 1 => o.get("@odata.id").and_then(Value::as_str),
        _ => None,
    }
}

/// One step from a value to a child, to find a hyperlink again after collecting it.
#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

fn child_mut<'v>(mut v: &'v mut Value, steps: &[Step]) -> Option<&'v mut Value> {
    for s in steps {
        v = match s {
            Step::Key(k) => v.get_mut(k.as_str())?,
            Step::Index(i) => v.get_mut(*i)?,
        };
    }
    Some(v)
}

/// Collects the hyperlinks of `v` that `mode` follows, with where they are. The object passed
/// in is never itself taken as a link (so a resource's own `@odata.id` is never expanded).
fn collect_links(v: &Value, mode: ExpandMode, in_links: bool, at: &mut Vec<Step>, out: &mut Vec<(Vec<Step>, String)>) {
    let visit = |child: &Value, step: Step, in_links: bool, at: &mut Vec<Step>, out: &mut Vec<_>| {
        at.push(step);
        match link_target(child) {
            Some(target) if mode.follows(in_links) => out.push((at.clone(), target.to_string())),
            Some(_) => {}
            None => collect_links(child, mode, in_links, at, out),
        }
        at.pop();
    };
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                if child.is_object() || child.is_array() {
                    visit(child, Step::Key(k.clone()), in_links || k == "Links", at, out);
                }
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                if child.is_object() || child.is_array() {
                    visit(child, Step::Index(i), in_links, at, out);
                }
            }
        }
        _ => {}
    }
}

/// Per-request fetching state: a cache (so `$filter` and `$expand` fetch a member once), the
/// expansion count against the budget, and the branch of resources being expanded.
pub(crate) struct Resolver<'a> {
    fetch: &'a dyn Fetch,
    budget: &'a Budget,
    cache: HashMap<ResourcePath, Option<Resource>>,
    /// Resources inlined so far (a resource inlined twice counts twice: the budget bounds the
    /// response, not the fetches).
    expanded: usize,
}

impl<'a> Resolver<'a> {
    pub(crate) fn new(fetch: &'a dyn Fetch, budget: &'a Budget) -> Self {
        Resolver { fetch, budget, cache: HashMap::new(), expanded: 0 }
    }

    /// The resource at `path`, or `None` when it is missing.
    async fn resource(&mut self, path: &ResourcePath) -> Result<Option<Resource>> {
        if let Some(hit) = self.cache.get(path) {
            return Ok(hit.clone());
        }
        let got = match self.fetch.fetch(path).await {
            Ok(r) => Some(r),
            Err(e) if is_missing(&e) => None,
            Err(e) => return Err(e),
        };
        self.cache.insert(path.clone(), got.clone());
        Ok(got)
    }

    /// The JSON a link target names: the resource, or the part a `#/pointer` fragment names.
    /// `None` when the target is not a resource path, is missing, or the fragment names nothing.
    pub(crate) async fn resolve(&mut self, target: &str) -> Result<Option<(ResourcePath, Value)>> {
        let (path_part, fragment) = match target.split_once('#') {
            Some((p, f)) => (p, Some(f)),
            None => (target, None),
        };
        let Ok(path) = ResourcePath::parse(path_part) else { return Ok(None) };
        let Some(resource) = self.resource(&path).await? else { return Ok(None) };
        let value = match fragment {
            None | Some("") => Some(resource.value().into_owned()),
            Some(pointer) => resource.value().pointer(pointer).cloned(),
        };
        Ok(value.map(|v| (path, v)))
    }

    /// Whether the member named by `target` matches `pred`; a missing member does not.
    pub(crate) async fn member_matches(&mut self, target: &str, pred: impl Fn(&Value) -> bool) -> Result<bool> {
        let (path_part, fragment) = match target.split_once('#') {
            Some((p, f)) => (p, Some(f)),
            None => (target, None),
        };
        let Ok(path) = ResourcePath::parse(path_part) else { return Ok(false) };
        let Some(resource) = self.resource(&path).await? else { return Ok(false) };
        Ok(match fragment {
            None | Some("") => pred(&resource.value()),
            Some(pointer) => resource.value().pointer(pointer).is_some_and(pred),
        })
    }

    /// Expands the hyperlinks of `value` (the resource at `path`) `levels` deep.
    ///
    /// # Errors
    /// [`Error::BudgetExceeded`] (`$expand resources`) when more than `max_resources` resources
    /// would be inlined; storage failures.
    pub(crate) async fn expand(
        &mut self,
        value: &mut Value,
        path: &ResourcePath,
        mode: ExpandMode,
        levels: usize,
    ) -> Result<()> {
        let mut branch = vec![path.clone()];
        self.expand_level(value, mode, levels, &mut branch).await
    }

    fn expand_level<'s>(
        &'s mut self,
        value: &'s mut Value,
        mode: ExpandMode,
        levels: usize,
        branch: &'s mut Vec<ResourcePath>,
    ) -> BoxFuture<'s, Result<()>> {
        Box::pin(async move {
            if levels == 0 {
                return Ok(());
            }
            let mut links = Vec::new();
            collect_links(value, mode, false, &mut Vec::new(), &mut links);
            for (at, target) in links {
                let path_part = target.split('#').next().unwrap_or(&target);
                if ResourcePath::parse(path_part).is_ok_and(|p| branch.contains(&p)) {
                    continue;
                }
                let Some((target_path, mut inlined)) = self.resolve(&target).await? else { continue };
                if self.expanded >= self.budget.max_resources {
                    return Err(Error::BudgetExceeded {
                        what: "$expand resources".into(),
                        limit: self.budget.max_resources,
                    });
                }
                self.expanded += 1;
                if levels > 1 {
                    branch.push(target_path);
                    self.expand_level(&mut inlined, mode, levels - 1, branch).await?;
                    branch.pop();
                }
                if let Some(slot) = child_mut(value, &at) {
                    *slot = inlined;
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn levels(n: usize) -> ExpandLevels {
        ExpandLevels::Count(n)
    }

    /// The three modes, with and without `$levels`, spaces tolerated.
    #[test]
    fn parses_forms() {
        assert_eq!(Expand::parse("*").unwrap(), Expand { mode: ExpandMode::All, levels: levels(1) });
        assert_eq!(Expand::parse(".").unwrap().mode, ExpandMode::Subordinate);
        assert_eq!(Expand::parse("~").unwrap().mode, ExpandMode::Dependent);
        assert_eq!(Expand::parse(".($levels=3)").unwrap(), Expand { mode: ExpandMode::Subordinate, levels: levels(3) });
        assert_eq!(Expand::parse(" ~ ( $levels = 2 ) ").unwrap().levels, levels(2));
        assert_eq!(Expand::parse("*($levels=max)").unwrap().levels, ExpandLevels::Max);
    }

    /// Anything else is a value error for `$expand`.
    #[test]
    fn refuses_other_forms() {
        for bad in [
            "",
            "Links",
            "x",
            "*($levels=0)",
            "*($levels=-1)",
            "*($levels=+1)",
            "*($levels=a)",
            "*($levels=)",
            "*($levels=1",
            "*$levels=1",
            "*($top=1)",
            "*($levels=99999999999999999999999999)",
            "**",
        ] {
            match Expand::parse(bad) {
                Err(Error::QueryParameterValue { parameter, .. }) => assert_eq!(parameter, "$expand"),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    /// Levels beyond the budget are refused; `max` means the budget's maximum.
    #[test]
    fn levels_against_budget() {
        let budget = Budget { max_levels: 3, max_resources: 10 };
        assert_eq!(Expand::parse("*($levels=3)").unwrap().resolve_levels(&budget), Ok(3));
        assert_eq!(Expand::parse("*($levels=max)").unwrap().resolve_levels(&budget), Ok(3));
        assert_eq!(
            Expand::parse("*($levels=4)").unwrap().resolve_levels(&budget),
            Err(Error::BudgetExceeded { what: "$expand levels".into(), limit: 3 })
        );
    }

    /// Links are found by mode; `Links` counts at any depth; the passed object itself is never
    /// a link.
    #[test]
    fn collects_by_mode() {
        let v = serde_json::json!({
            "@odata.id": "/redfish/v1/A",
            "Nav": {"@odata.id": "/redfish/v1/N"},
            "Links": {"L": [{"@odata.id": "/redfish/v1/L"}]},
            "Deep": {"Links": {"M": {"@odata.id": "/redfish/v1/M"}}, "Oem": {"O": {"@odata.id": "/redfish/v1/O"}}},
            "NotALink": {"@odata.id": "/redfish/v1/X", "Name": "x"}
        });
        let targets = |mode| {
            let mut out = Vec::new();
            collect_links(&v, mode, false, &mut Vec::new(), &mut out);
            out.into_iter().map(|(_, t)| t).collect::<Vec<_>>()
        };
        assert_eq!(targets(ExpandMode::All), ["/redfish/v1/N", "/redfish/v1/L", "/redfish/v1/M", "/redfish/v1/O"]);
        assert_eq!(targets(ExpandMode::Subordinate), ["/redfish/v1/N", "/redfish/v1/O"]);
        assert_eq!(targets(ExpandMode::Dependent), ["/redfish/v1/L", "/redfish/v1/M"]);
        let mut out = Vec::new();
        collect_links(
            &serde_json::json!({"@odata.id": "/redfish/v1"}),
            ExpandMode::All,
            false,
            &mut Vec::new(),
            &mut out,
        );
        assert!(out.is_empty());
    }
}
