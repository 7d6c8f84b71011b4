//! Redfish query parameters (DSP0266 §7.3) as a pure library: [`QueryOptions::parse`] reads a
//! query string once per request, [`apply`] turns a stored [`Resource`] into the response body,
//! fetching linked resources through a [`Fetch`] (storage, or the [`Core`]).
//!
//! Layout: `filter` ([`Filter`]: tokenizer, parser, evaluator), `select` ([`Select`], also the
//! projection behind `excerpt`), `expand` ([`Expand`] and the expansion engine); this file holds
//! parsing of the query string, paging, `only`, `excerpt` and the order of application.
//!
//! # Parameters and the choices made where DSP0266 leaves room
//! - Parsing: the query is split on `&`, each name and value percent-decoded with `+` as a space.
//!   `$`-names are case-sensitive; an unknown one (`$orderby`, `$count`, `$Expand`) is
//!   [`Error::QueryNotSupported`] (501). Other names except `only` and `excerpt` are ignored
//!   (cache busters, `includeoriginofconditions`). A parameter given twice, or a bad value, is
//!   [`Error::QueryParameterValue`] (400).
//! - Order (DSP0266): `$filter`, then `$skip`/`$top`, then `$expand`, then `excerpt`, then
//!   `$select`. So `$expand` only fetches the members of the page, and `$select` sees the
//!   expanded resources.
//! - `$filter`, `$skip`, `$top` apply to resource collections; on any other resource they are
//!   refused with [`Error::QueryParameterValue`] naming the parameter (the spec's
//!   `QueryNotSupportedOnResource`). `$filter` fetches each member (a member that cannot be found
//!   is left out) and sets `Members@odata.count` to the number that matched.
//! - `$skip`/`$top`: non-negative integers. `Members@odata.count` stays the total (after
//!   `$filter`). While members remain, `Members@odata.nextLink` is
//!   `<path>?$skip=<next>&$top=<top>` followed by the request's other Redfish parameters as they
//!   were sent (cache busters are dropped). `$top=0` returns no members and no next link (a link
//!   that advances by zero would never end).
//! - `$expand`: see `expand`: `*`/`.`/`~`, `($levels=N)` or `($levels=max)`; levels above
//!   [`Budget::max_levels`] and more than [`Budget::max_resources`] inlined resources are
//!   [`Error::BudgetExceeded`] (checked before the response grows further).
//! - `$select`: see `select`. On a collection whose `Members` were expanded (`*` or `.`),
//!   `$select=Name` applies to **each member** and leaves the collection's own properties as they
//!   are (what a client of `?$expand=.&$select=Name` wants); a selection naming `Members` at the
//!   top (`$select=Members/Name`) instead applies to the collection, which is the navigation-
//!   prefix form and gives the same members. Everywhere else `$select` applies to the resource
//!   itself, and a selected navigation property carries its expanded resources, narrowed by
//!   the rest of the path (`$select=Links/Chassis/Name`).
//! - `excerpt` (no value): keeps the properties [`SchemaHints::excerpt_properties`] lists for
//!   the resource's `@odata.type` (each entry a `$select`-style path), plus `@odata.id`,
//!   `@odata.type`, `@odata.context`, `@odata.etag`; nothing else is added (`Id`, `Name` only if
//!   the hints list them). Without hints, or when the hints know no excerpt for the type, the
//!   resource is returned whole, as DSP0266 says for resources without excerpt properties. On a
//!   collection with expanded members it applies to each member.
//! - `only` (no value): on a collection with exactly one member, the response is that member
//!   (fetched; if it cannot be found, the collection). Otherwise, also on non-collections, the
//!   resource unchanged ([`only_member`] gives the member as a [`Resource`], for its ETag).
//!   Combined with any other Redfish parameter it is refused with
//!   [`Error::QueryParameterValue`] (DSP0266: `QueryCombinationInvalid`, 400).
//! - Fetch failures: `NotFound` (and an unusable link) means "missing": an unexpanded link, a
//!   member filtered out. Any other error (storage) fails the request.

mod expand;
mod filter;
mod select;

use std::sync::Arc;

use async_trait::async_trait;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};
use serde_json::{json, Value};

pub use expand::{Expand, ExpandLevels, ExpandMode};
pub use filter::{Filter, MAX_DEPTH as FILTER_MAX_DEPTH};
pub use select::{Select, ALWAYS_KEPT};

use expand::{is_missing, link_target, Resolver};

use crate::{Core, Error, Resource, ResourcePath, Result, StorageBackend};

/// Limits on the work one request may cause. Built from configuration by the front end (it
/// deserializes from a table with the snake_case keys below, missing keys taking the defaults);
/// [`Budget::default`] is 6 levels and 10 000 resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Budget {
    /// Deepest `$expand` (`$levels`) accepted; `$levels=max` means this. Also what
    /// [`supported_features`] should advertise as `MaxLevels`.
    pub max_levels: usize,
    /// Most resources one response may inline through `$expand`.
    pub max_resources: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget { max_levels: 6, max_resources: 10_000 }
    }
}

/// Something that fetches resources by path. Implemented for every [`StorageBackend`]
/// (including `dyn StorageBackend`), for `Arc`s of fetchers (so `&Arc<dyn StorageBackend>`
/// passes as `&dyn Fetch`) and for [`Core`].
#[async_trait]
pub trait Fetch: Send + Sync {
    /// The resource at `path`.
    ///
    /// # Errors
    /// [`Error::NotFound`] when nothing is there (the query engine treats it as "missing");
    /// anything else fails the request.
    async fn fetch(&self, path: &ResourcePath) -> Result<Resource>;
}

#[async_trait]
impl<T: StorageBackend + ?Sized> Fetch for T {
    async fn fetch(&self, path: &ResourcePath) -> Result<Resource> {
        self.get(path).await
    }
}

#[async_trait]
impl<F: Fetch + ?Sized> Fetch for Arc<F> {
    async fn fetch(&self, path: &ResourcePath) -> Result<Resource> {
        (**self).fetch(path).await
    }
}

#[async_trait]
impl Fetch for Core {
    async fn fetch(&self, path: &ResourcePath) -> Result<Resource> {
        self.get(path).await
    }
}

/// Optional schema knowledge for `excerpt`.
pub trait SchemaHints: Send + Sync {
    /// The excerpt properties (those annotated `Redfish.Excerpt`, with any qualifier, and
    /// `Redfish.ExcerptCopyOnly`, as the implementation decides) of the type named by a full
    /// `@odata.type` (`#Sensor.v1_2_0.Sensor`), as `$select`-style paths. `None` when the type
    /// has no excerpt or is unknown: the resource is then returned whole.
    fn excerpt_properties(&self, odata_type: &str) -> Option<Vec<String>>;
}

/// The Redfish query options of one request, parsed and validated. Created by
/// [`QueryOptions::parse`]; a value always holds at least one option.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryOptions {
    expand: Option<Expand>,
    select: Option<Select>,
    filter: Option<Filter>,
    top: Option<usize>,
    skip: Option<usize>,
    only: bool,
    excerpt: bool,
    /// The raw `name=value` pieces of the Redfish parameters other than `$skip`/`$top`, as
    /// sent, in order: carried into `Members@odata.nextLink`.
    carry: Vec<String>,
}

/// The query names this module knows, as written in queries.
const KNOWN: [&str; 7] = ["$expand", "$select", "$filter", "$top", "$skip", "only", "excerpt"];

/// Characters escaped in a path segment of a next link (URL path rules, plus `%`).
const SEGMENT: &AsciiSet =
    &CONTROLS.add(b' ').add(b'"').add(b'#').add(b'%').add(b'<').add(b'>').add(b'?').add(b'`').add(b'{').add(b'}');

fn value_error(parameter: &str, reason: impl Into<String>) -> Error {
    Error::QueryParameterValue { parameter: parameter.to_string(), reason: reason.into() }
}

/// Form-style decoding: `+` is a space, then percent-escapes.
fn decode(raw: &str) -> std::result::Result<String, std::str::Utf8Error> {
    let spaced = raw.replace('+', " ");
    percent_decode_str(&spaced).decode_utf8().map(|c| c.into_owned())
}

/// A `$top`/`$skip` value: a non-negative decimal integer.
fn count(parameter: &str, value: &str) -> Result<usize> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(value_error(parameter, format!("'{value}' is not a non-negative integer")));
    }
    value.parse().map_err(|_| value_error(parameter, format!("'{value}' is too large")))
}

/// A parameter that takes no value (`only`, `excerpt`): absent or empty.
fn flag(parameter: &str, value: &str) -> Result<bool> {
    if value.is_empty() {
        Ok(true)
    } else {
        Err(value_error(parameter, format!("{parameter} takes no value, got '{value}'")))
    }
}

impl QueryOptions {
    /// Parses a raw query string (the part after `?`, still percent-encoded).
    ///
    /// Returns `Ok(None)` when the query has no Redfish query parameters (empty, or only
    /// parameters this module ignores).
    ///
    /// # Errors
    /// - [`Error::QueryNotSupported`] for a `$`-parameter other than `$expand`, `$select`,
    ///   `$filter`, `$top`, `$skip` (501).
    /// - [`Error::QueryParameterValue`] (400) for a value that cannot be used, a value that is
    ///   not UTF-8 after decoding, a parameter given twice, or `only` combined with another
    ///   Redfish parameter.
    pub fn parse(query: &str) -> Result<Option<QueryOptions>> {
        let mut o = QueryOptions::default();
        let mut seen: Vec<&'static str> = Vec::new();
        for raw in query.split('&').filter(|p| !p.is_empty()) {
            let (raw_name, raw_value) = raw.split_once('=').unwrap_or((raw, ""));
            let decoded_name = decode(raw_name).unwrap_or_default();
            let Some(name) = KNOWN.iter().copied().find(|k| *k == decoded_name) else {
                if decoded_name.starts_with('$') {
                    return Err(Error::QueryNotSupported { parameter: decoded_name });
                }
                continue;
            };
            if seen.contains(&name) {
                return Err(value_error(name, format!("{name} is given more than once")));
            }
            seen.push(name);
            let value = decode(raw_value).map_err(|_| value_error(name, "the value is not UTF-8"))?;
            match name {
                "$expand" => o.expand = Some(Expand::parse(&value)?),
                "$select" => o.select = Some(Select::parse(&value)?),
                "$filter" => o.filter = Some(Filter::parse(&value)?),
                "$top" => o.top = Some(count(name, &value)?),
                "$skip" => o.skip = Some(count(name, &value)?),
                "only" => o.only = flag(name, &value)?,
                _ => o.excerpt = flag(name, &value)?,
            }
            if name != "$top" && name != "$skip" {
                o.carry.push(raw.to_string());
            }
        }
        if seen.is_empty() {
            return Ok(None);
        }
        if o.only && seen.len() > 1 {
            return Err(value_error("only", "only cannot be combined with other query parameters"));
        }
        Ok(Some(o))
    }

    /// `$expand`, if given.
    pub fn expand(&self) -> Option<&Expand> {
        self.expand.as_ref()
    }

    /// `$select`, if given.
    pub fn select(&self) -> Option<&Select> {
        self.select.as_ref()
    }

    /// `$filter`, if given.
    pub fn filter(&self) -> Option<&Filter> {
        self.filter.as_ref()
    }

    /// `$top`, if given.
    pub fn top(&self) -> Option<usize> {
        self.top
    }

    /// `$skip`, if given.
    pub fn skip(&self) -> Option<usize> {
        self.skip
    }

    /// Whether `only` was given.
    pub fn only(&self) -> bool {
        self.only
    }

    /// Whether `excerpt` was given.
    pub fn excerpt(&self) -> bool {
        self.excerpt
    }

    /// The `Members@odata.nextLink` for the page starting at `skip` with `top` members: the
    /// path (segments percent-encoded), `$skip` and `$top`, then the request's other Redfish
    /// parameters as sent.
    pub fn next_link(&self, path: &ResourcePath, skip: usize, top: usize) -> String {
        let mut link = String::with_capacity(path.as_str().len() + 32);
        for seg in path.as_str().split('/').filter(|s| !s.is_empty()) {
            link.push('/');
            link.extend(utf8_percent_encode(seg, SEGMENT));
        }
        link.push_str(&format!("?$skip={skip}&$top={top}"));
        for raw in &self.carry {
            link.push('&');
            link.push_str(raw);
        }
        link
    }
}

/// Applies `opts` to `resource` (stored at `path`), fetching linked resources through `fetch`
/// as needed, and returns the response body. See the module documentation for the semantics.
///
/// # Errors
/// - [`Error::QueryParameterValue`]: `$filter`, `$skip` or `$top` on a resource that is not a
///   collection.
/// - [`Error::BudgetExceeded`]: `$expand` deeper than `budget.max_levels`, or inlining more than
///   `budget.max_resources` resources.
/// - Failures of `fetch` other than `NotFound`.
pub async fn apply(
    fetch: &dyn Fetch,
    path: &ResourcePath,
    resource: &Resource,
    opts: &QueryOptions,
    budget: &Budget,
    hints: Option<&dyn SchemaHints>,
) -> Result<Value> {
    if opts.only {
        let member = only_member(fetch, resource).await?;
        return Ok(member.as_ref().unwrap_or(resource).value().into_owned());
    }
    let mut resolver = Resolver::new(fetch, budget);
    let collection = resource.is_collection();
    let levels = opts.expand.map(|e| e.resolve_levels(budget)).transpose()?;
    if !collection {
        for (given, name) in
            [(opts.filter.is_some(), "$filter"), (opts.skip.is_some(), "$skip"), (opts.top.is_some(), "$top")]
        {
            if given {
                return Err(value_error(
                    name,
                    format!("{name} applies only to resource collections; {path} is not one"),
                ));
            }
        }
    }

    let mut body = resource.value().into_owned();
    if let Some(filter) = &opts.filter {
        filter_members(&mut resolver, &mut body, filter).await?;
    }
    if opts.top.is_some() || opts.skip.is_some() {
        page(&mut body, path, opts);
    }
    if let (Some(expand), Some(levels)) = (opts.expand, levels) {
        resolver.expand(&mut body, path, expand.mode, levels).await?;
    }
    let member_level = collection && opts.expand.is_some_and(|e| e.mode.expands_members());
    if opts.excerpt {
        if let Some(hints) = hints {
            excerpt(&mut body, hints);
            if member_level {
                for_each_member(&mut body, |m| excerpt(m, hints));
            }
        }
    }
    if let Some(select) = &opts.select {
        if member_level && !select.names_members() {
            for_each_member(&mut body, |m| select.apply(m));
        } else {
            select.apply(&mut body);
        }
    }
    Ok(body)
}

/// The resource `only` answers with: the single member of a one-member collection, fetched.
/// `None` when `resource` is not a collection, has no or several members, or its member cannot
/// be found; the response is then `resource` itself. The server can use this directly to send
/// the member with its own ETag.
///
/// # Errors
/// Failures of `fetch` other than `NotFound`.
pub async fn only_member(fetch: &dyn Fetch, resource: &Resource) -> Result<Option<Resource>> {
    if !resource.is_collection() {
        return Ok(None);
    }
    let value = resource.value();
    let Some([single]) = value.get("Members").and_then(Value::as_array).map(Vec::as_slice) else {
        return Ok(None);
    };
    let Some(path) = single.get("@odata.id").and_then(Value::as_str).and_then(|t| ResourcePath::parse(t).ok()) else {
        return Ok(None);
    };
    match fetch.fetch(&path).await {
        Ok(member) => Ok(Some(member)),
        Err(e) if is_missing(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Takes `Members` out of a collection body (empty when absent or not an array).
fn take_members(body: &mut Value) -> Vec<Value> {
    match body.get_mut("Members").map(Value::take) {
        Some(Value::Array(items)) => items,
        _ => Vec::new(),
    }
}

fn for_each_member(body: &mut Value, mut f: impl FnMut(&mut Value)) {
    if let Some(Value::Array(items)) = body.get_mut("Members") {
        items.iter_mut().for_each(&mut f);
    }
}

/// `$filter`: keeps the members that match; members given inline are evaluated as they are.
async fn filter_members(resolver: &mut Resolver<'_>, body: &mut Value, filter: &Filter) -> Result<()> {
    let members = take_members(body);
    let mut kept = Vec::with_capacity(members.len());
    for member in members {
        let keep = match link_target(&member) {
            Some(target) => resolver.member_matches(target, |v| filter.matches(v)).await?,
            None => filter.matches(&member),
        };
        if keep {
            kept.push(member);
        }
    }
    if let Value::Object(map) = body {
        let n = kept.len();
        map.insert("Members".into(), Value::Array(kept));
        map.insert("Members@odata.count".into(), Value::from(n));
    }
    Ok(())
}

/// `$skip`/`$top`: cuts `Members` to the page, keeps the total count, sets or clears the next
/// link.
fn page(body: &mut Value, path: &ResourcePath, opts: &QueryOptions) {
    let members = take_members(body);
    let total = members.len();
    let skip = opts.skip.unwrap_or(0);
    let page: Vec<Value> = members.into_iter().skip(skip).take(opts.top.unwrap_or(usize::MAX)).collect();
    let next = skip.saturating_add(page.len());
    let Value::Object(map) = body else { return };
    map.insert("Members".into(), Value::Array(page));
    map.insert("Members@odata.count".into(), Value::from(total));
    match opts.top {
        Some(top) if top > 0 && next < total => {
            map.insert("Members@odata.nextLink".into(), Value::String(opts.next_link(path, next, top)));
        }
        _ => {
            map.shift_remove("Members@odata.nextLink");
        }
    }
}

/// `excerpt` on one resource.
fn excerpt(value: &mut Value, hints: &dyn SchemaHints) {
    let Some(odata_type) = value.get("@odata.type").and_then(Value::as_str) else { return };
    let Some(properties) = hints.excerpt_properties(odata_type) else { return };
    // Hints come from the service's own schema knowledge; an entry that is not a property path
    // is a bug there, and dropping it is safer than failing the request.
    let usable: Vec<&String> = properties.iter().filter(|p| Select::from_paths([p], "excerpt").is_ok()).collect();
    if let Ok(selection) = Select::from_paths(usable, "excerpt") {
        selection.apply(value);
    } else {
        // No usable entry: the excerpt is empty apart from the identity properties.
        if let Value::Object(map) = value {
            map.retain(|k, _| ALWAYS_KEPT.contains(&k.as_str()));
        }
    }
}

/// The `ProtocolFeaturesSupported` object for the service root, advertising what this module
/// implements; `max_levels` is [`Budget::max_levels`].
pub fn supported_features(max_levels: usize) -> Value {
    json!({
        "ExpandQuery": {
            "ExpandAll": true,
            "Levels": true,
            "Links": true,
            "NoLinks": true,
            "MaxLevels": max_levels
        },
        "SelectQuery": true,
        "FilterQuery": true,
        "OnlyMemberQuery": true,
        "ExcerptQuery": true,
        "TopSkipQuery": true
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::json;

    use super::*;

    const SYSTEMS: &str = "/redfish/v1/Systems";

    /// An in-memory fetcher over JSON by path, counting fetches; one path can be made to fail
    /// like broken storage.
    #[derive(Default)]
    struct Mem {
        map: BTreeMap<String, Value>,
        fetches: AtomicUsize,
        broken: Option<String>,
    }

    #[async_trait]
    impl Fetch for Mem {
        async fn fetch(&self, path: &ResourcePath) -> Result<Resource> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            if self.broken.as_deref() == Some(path.as_str()) {
                return Err(Error::storage("disk on fire"));
            }
            self.map.get(path.as_str()).map(|v| Resource::new(v.clone(), 1)).ok_or_else(|| Error::not_found(path))
        }
    }

    impl Mem {
        fn put(&mut self, v: Value) {
            let id = v["@odata.id"].as_str().unwrap().to_string();
            self.map.insert(id, v);
        }

        fn fetched(&self) -> usize {
            self.fetches.load(Ordering::SeqCst)
        }

        async fn run_with(
            &self,
            path: &str,
            query: &str,
            budget: &Budget,
            hints: Option<&dyn SchemaHints>,
        ) -> Result<Value> {
            let p = ResourcePath::parse(path).unwrap();
            let res = Resource::new(self.map[path].clone(), 7);
            let opts = QueryOptions::parse(query)?.expect("query has options");
            apply(self, &p, &res, &opts, budget, hints).await
        }

        async fn run(&self, path: &str, query: &str) -> Result<Value> {
            self.run_with(path, query, &Budget::default(), None).await
        }
    }

    fn system(i: usize) -> Value {
        json!({
            "@odata.id": format!("{SYSTEMS}/{i}"),
            "@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem",
            "Id": i.to_string(),
            "Name": format!("System {i}"),
            "Status": {"Health": if i % 2 == 1 { "OK" } else { "Warning" }, "State": "Enabled"},
            "ProcessorSummary": {"Count": i},
            "Bios": {"@odata.id": format!("{SYSTEMS}/{i}/Bios")},
            "Links": {"Chassis": [{"@odata.id": "/redfish/v1/Chassis/1"}]}
        })
    }

    fn collection(path: &str, ids: impl IntoIterator<Item = String>) -> Value {
        let members: Vec<Value> = ids.into_iter().map(|id| crate::link(&id)).collect();
        json!({
            "@odata.id": path,
            "@odata.type": "#ComputerSystemCollection.ComputerSystemCollection",
            "Name": "Computer System Collection",
            "Members@odata.count": members.len(),
            "Members": members
        })
    }

    /// Root → Systems (n members) → each system → Systems/1/Bios (the others' Bios missing);
    /// Chassis/1 links back to Systems/1 and has a Thermal with fans.
    fn tree(n: usize) -> Mem {
        let mut m = Mem::default();
        m.put(
            json!({"@odata.id": "/redfish/v1", "@odata.type": "#ServiceRoot.v1_15_0.ServiceRoot", "Id": "RootService",
                     "Systems": {"@odata.id": SYSTEMS}, "Chassis": {"@odata.id": "/redfish/v1/Chassis"}}),
        );
        m.put(collection(SYSTEMS, (1..=n).map(|i| format!("{SYSTEMS}/{i}"))));
        for i in 1..=n {
            m.put(system(i));
        }
        m.put(json!({"@odata.id": format!("{SYSTEMS}/1/Bios"), "@odata.type": "#Bios.v1_2_0.Bios", "Id": "Bios"}));
        m.put(json!({
            "@odata.id": "/redfish/v1/Chassis/1", "@odata.type": "#Chassis.v1_25_0.Chassis", "Id": "1", "Name": "Chassis 1",
            "Thermal": {"@odata.id": "/redfish/v1/Chassis/1/Thermal"},
            "Links": {"ComputerSystems": [{"@odata.id": format!("{SYSTEMS}/1")}]}
        }));
        m.put(json!({
            "@odata.id": "/redfish/v1/Chassis/1/Thermal", "@odata.type": "#Thermal.v1_7_0.Thermal", "Id": "Thermal",
            "Fans": [{"@odata.id": "/redfish/v1/Chassis/1/Thermal#/Fans/0", "Name": "Fan 0", "Reading": 3000}]
        }));
        m
    }

    fn member_ids(v: &Value) -> Vec<String> {
        v["Members"].as_array().unwrap().iter().map(|m| m["@odata.id"].as_str().unwrap().to_string()).collect()
    }

    fn ids(nums: &[usize]) -> Vec<String> {
        nums.iter().map(|i| format!("{SYSTEMS}/{i}")).collect()
    }

    fn value_error_of(r: Result<impl std::fmt::Debug>) -> String {
        match r {
            Err(Error::QueryParameterValue { parameter, .. }) => parameter,
            other => panic!("expected a value error, got {other:?}"),
        }
    }

    /// Queries without Redfish parameters parse to None: cache busters and unknown plain
    /// names are ignored.
    #[test]
    fn parse_none() {
        for q in ["", "&", "&&", "_=1234", "foo=bar&x", "includeoriginofconditions", "onlyx=1"] {
            assert_eq!(QueryOptions::parse(q).unwrap(), None, "{q}");
        }
    }

    /// Names and values are percent-decoded, with '+' as a space.
    #[test]
    fn parse_decodes() {
        let o = QueryOptions::parse("%24expand=.%28%24levels%3D2%29&_=1").unwrap().unwrap();
        assert_eq!(o.expand(), Some(&Expand { mode: ExpandMode::Subordinate, levels: ExpandLevels::Count(2) }));
        let o = QueryOptions::parse("$filter=Name+eq+'a%20b+c'").unwrap().unwrap();
        assert!(o.filter().unwrap().matches(&json!({"Name": "a b c"})));
        let o = QueryOptions::parse("$select=Name,Status%2FHealth&$top=3&$skip=0&excerpt").unwrap().unwrap();
        assert_eq!(o.select(), Some(&Select::parse("Name,Status/Health").unwrap()));
        assert_eq!((o.top(), o.skip(), o.excerpt(), o.only()), (Some(3), Some(0), true, false));
        assert!(QueryOptions::parse("only").unwrap().unwrap().only());
        assert!(QueryOptions::parse("only=&_=2").unwrap().unwrap().only(), "cache busters do not conflict with only");
    }

    /// Unknown `$` parameters are 501 QueryNotSupported, names are case-sensitive.
    #[test]
    fn parse_unsupported() {
        for (q, name) in
            [("$orderby=Name", "$orderby"), ("$Expand=.", "$Expand"), ("%24count=true", "$count"), ("$", "$")]
        {
            assert_eq!(QueryOptions::parse(q), Err(Error::QueryNotSupported { parameter: name.into() }), "{q}");
        }
    }

    /// Bad values, repeats and `only` combinations are 400 value errors naming the parameter.
    #[test]
    fn parse_bad_values() {
        for (q, name) in [
            ("$top=-1", "$top"),
            ("$top=x", "$top"),
            ("$top=", "$top"),
            ("$top=+1", "$top"),
            ("$skip=1.5", "$skip"),
            ("$skip=99999999999999999999999", "$skip"),
            ("$top=1&$top=2", "$top"),
            ("$expand=.&%24expand=*", "$expand"),
            ("$expand=Links", "$expand"),
            ("$select=", "$select"),
            ("$filter=", "$filter"),
            ("$filter=Name%20eq", "$filter"),
            ("$filter=%FF", "$filter"),
            ("only&$top=1", "only"),
            ("$expand=.&only", "only"),
            ("only&excerpt", "only"),
            ("only=yes", "only"),
            ("excerpt=1", "excerpt"),
        ] {
            assert_eq!(value_error_of(QueryOptions::parse(q)), name, "{q}");
        }
    }

    /// `.` expands navigation links but not those in `Links`; `~` the reverse; `*` both. The
    /// resource's own `@odata.id` is never expanded; a missing target stays a link.
    #[tokio::test]
    async fn expand_modes() {
        let m = tree(2);
        let dot = m.run(&format!("{SYSTEMS}/1"), "$expand=.").await.unwrap();
        assert_eq!(dot["@odata.id"], json!(format!("{SYSTEMS}/1")));
        assert_eq!(dot["Bios"]["Id"], json!("Bios"));
        assert_eq!(dot["Links"]["Chassis"][0], json!({"@odata.id": "/redfish/v1/Chassis/1"}));

        let tilde = m.run(&format!("{SYSTEMS}/1"), "$expand=~").await.unwrap();
        assert_eq!(tilde["Bios"], json!({"@odata.id": format!("{SYSTEMS}/1/Bios")}));
        assert_eq!(tilde["Links"]["Chassis"][0]["Name"], json!("Chassis 1"));
        assert_eq!(
            tilde["Links"]["Chassis"][0]["Links"]["ComputerSystems"][0],
            json!({"@odata.id": format!("{SYSTEMS}/1")}),
            "one level only"
        );

        let star = m.run(&format!("{SYSTEMS}/1"), "$expand=*").await.unwrap();
        assert_eq!(star["Bios"]["Id"], json!("Bios"));
        assert_eq!(star["Links"]["Chassis"][0]["Id"], json!("1"));
        assert_eq!(star["Links"]["Chassis"][0]["Thermal"], json!({"@odata.id": "/redfish/v1/Chassis/1/Thermal"}));

        let missing = m.run(&format!("{SYSTEMS}/2"), "$expand=.").await.unwrap();
        assert_eq!(missing["Bios"], json!({"@odata.id": format!("{SYSTEMS}/2/Bios")}));
    }

    /// `$levels` descends: root → Systems → members → Bios.
    #[tokio::test]
    async fn expand_levels() {
        let m = tree(2);
        let one = m.run("/redfish/v1", "$expand=.").await.unwrap();
        assert_eq!(member_ids(&one["Systems"]), ids(&[1, 2]));
        assert_eq!(one["Systems"]["Members"][0], json!({"@odata.id": format!("{SYSTEMS}/1")}));
        assert_eq!(one["Chassis"], json!({"@odata.id": "/redfish/v1/Chassis"}), "missing collection stays a link");

        let two = m.run("/redfish/v1", "$expand=.($levels=2)").await.unwrap();
        assert_eq!(two["Systems"]["Members"][1]["Name"], json!("System 2"));
        assert_eq!(two["Systems"]["Members"][0]["Bios"], json!({"@odata.id": format!("{SYSTEMS}/1/Bios")}));

        let three = m.run("/redfish/v1", "$expand=.($levels=3)").await.unwrap();
        assert_eq!(three["Systems"]["Members"][0]["Bios"]["Id"], json!("Bios"));
        assert_eq!(
            three["Systems"]["Members"][0]["Links"]["Chassis"][0],
            json!({"@odata.id": "/redfish/v1/Chassis/1"})
        );
    }

    /// A cycle (System → Chassis → the same System) stops at the resource already on the branch,
    /// however many levels are asked; other links at that depth still expand.
    #[tokio::test]
    async fn expand_cycles() {
        let m = tree(1);
        let v = m.run(&format!("{SYSTEMS}/1"), "$expand=*($levels=6)").await.unwrap();
        let chassis = &v["Links"]["Chassis"][0];
        assert_eq!(chassis["Id"], json!("1"));
        assert_eq!(chassis["Links"]["ComputerSystems"][0], json!({"@odata.id": format!("{SYSTEMS}/1")}));
        assert_eq!(chassis["Thermal"]["Fans"][0]["Reading"], json!(3000));
        assert!(m.fetched() <= 4, "each resource fetched once: {}", m.fetched());
    }

    /// Links with a JSON-pointer fragment expand to the named part; a bad pointer stays a link.
    /// Oem links expand like any other; plain-string references stay strings.
    #[tokio::test]
    async fn expand_fragments_and_oem() {
        let mut m = tree(1);
        m.put(json!({
            "@odata.id": "/redfish/v1/Things/1", "@odata.type": "#Thing.v1_0_0.Thing",
            "RelatedItem": [{"@odata.id": "/redfish/v1/Chassis/1/Thermal#/Fans/0"},
                            {"@odata.id": "/redfish/v1/Chassis/1/Thermal#/Fans/9"}],
            "Oem": {"Vendor": {"Sys": {"@odata.id": format!("{SYSTEMS}/1")}}},
            "External": {"@odata.id": "https://example.com/x"},
            "@Redfish.ActionInfo": "/redfish/v1/Chassis/1"
        }));
        let v = m.run("/redfish/v1/Things/1", "$expand=*").await.unwrap();
        assert_eq!(v["RelatedItem"][0]["Name"], json!("Fan 0"));
        assert_eq!(v["RelatedItem"][1], json!({"@odata.id": "/redfish/v1/Chassis/1/Thermal#/Fans/9"}));
        assert_eq!(v["Oem"]["Vendor"]["Sys"]["Id"], json!("1"));
        assert_eq!(v["External"], json!({"@odata.id": "https://example.com/x"}));
        assert_eq!(v["@Redfish.ActionInfo"], json!("/redfish/v1/Chassis/1"));
    }

    /// Levels above the budget and too many inlined resources are refused, not built.
    #[tokio::test]
    async fn expand_budgets() {
        let m = tree(5);
        assert_eq!(
            m.run(SYSTEMS, "$expand=.($levels=7)").await,
            Err(Error::BudgetExceeded { what: "$expand levels".into(), limit: 6 })
        );
        let small = Budget { max_levels: 6, max_resources: 4 };
        assert_eq!(
            m.run_with(SYSTEMS, "$expand=.", &small, None).await,
            Err(Error::BudgetExceeded { what: "$expand resources".into(), limit: 4 })
        );
        let exact = Budget { max_levels: 6, max_resources: 5 };
        assert_eq!(member_ids(&m.run_with(SYSTEMS, "$expand=.", &exact, None).await.unwrap()).len(), 5);
        // Deep expansion counts every level: root → Systems → 5 members → 1 Bios = 7.
        let seven = Budget { max_levels: 6, max_resources: 6 };
        assert!(matches!(
            m.run_with("/redfish/v1", "$expand=.($levels=max)", &seven, None).await,
            Err(Error::BudgetExceeded { .. })
        ));
        let budget = Budget { max_levels: 2, max_resources: 100 };
        let v = m.run_with("/redfish/v1", "$expand=.($levels=max)", &budget, None).await.unwrap();
        assert_eq!(v["Systems"]["Members"][0]["Bios"], json!({"@odata.id": format!("{SYSTEMS}/1/Bios")}));
    }

    /// Storage failures are not "missing": they fail the request.
    #[tokio::test]
    async fn fetch_failures_propagate() {
        let mut m = tree(2);
        m.broken = Some(format!("{SYSTEMS}/2"));
        assert_eq!(m.run(SYSTEMS, "$expand=.").await, Err(Error::storage("disk on fire")));
        assert_eq!(m.run(SYSTEMS, "$filter=Id eq '1'").await, Err(Error::storage("disk on fire")));
    }

    /// `$filter` keeps matching members and counts them; members that cannot be fetched are
    /// left out.
    #[tokio::test]
    async fn filter_collection() {
        let mut m = tree(5);
        m.put(collection(SYSTEMS, (1..=6).map(|i| format!("{SYSTEMS}/{i}"))));
        let v = m.run(SYSTEMS, "$filter=Status/Health%20eq%20'OK'").await.unwrap();
        assert_eq!(member_ids(&v), ids(&[1, 3, 5]));
        assert_eq!(v["Members@odata.count"], json!(3));
        assert_eq!(v["Name"], json!("Computer System Collection"));
        let v =
            m.run(SYSTEMS, "$filter=ProcessorSummary/Count ge 2 and not (Id eq '4') or Id eq 'nope'").await.unwrap();
        assert_eq!(member_ids(&v), ids(&[2, 3, 5]));
        let v = m.run(SYSTEMS, "$filter=Id eq null").await.unwrap();
        assert_eq!(member_ids(&v), Vec::<String>::new(), "the unfetchable member 6 is excluded, not null");
    }

    /// `$filter`, `$top`, `$skip` on a resource that is not a collection are value errors.
    #[tokio::test]
    async fn collection_only_parameters() {
        let m = tree(1);
        for (q, name) in [("$filter=Id eq '1'", "$filter"), ("$top=1", "$top"), ("$skip=1", "$skip")] {
            assert_eq!(value_error_of(m.run(&format!("{SYSTEMS}/1"), q).await), name);
        }
    }

    /// Paging keeps the total count and links to the next page while members remain.
    #[tokio::test]
    async fn top_skip_and_next_link() {
        let m = tree(5);
        let v = m.run(SYSTEMS, "$top=2").await.unwrap();
        assert_eq!(member_ids(&v), ids(&[1, 2]));
        assert_eq!(v["Members@odata.count"], json!(5));
        assert_eq!(v["Members@odata.nextLink"], json!(format!("{SYSTEMS}?$skip=2&$top=2")));
        let v = m.run(SYSTEMS, "$skip=2&$top=2").await.unwrap();
        assert_eq!(member_ids(&v), ids(&[3, 4]));
        assert_eq!(v["Members@odata.nextLink"], json!(format!("{SYSTEMS}?$skip=4&$top=2")));
        let v = m.run(SYSTEMS, "$skip=4&$top=2").await.unwrap();
        assert_eq!(member_ids(&v), ids(&[5]));
        assert!(v.get("Members@odata.nextLink").is_none());
        let v = m.run(SYSTEMS, "$skip=3").await.unwrap();
        assert_eq!(member_ids(&v), ids(&[4, 5]));
        assert!(v.get("Members@odata.nextLink").is_none());
        let v = m.run(SYSTEMS, "$skip=10").await.unwrap();
        assert_eq!((member_ids(&v).len(), &v["Members@odata.count"]), (0, &json!(5)));
        let v = m.run(SYSTEMS, "$top=0").await.unwrap();
        assert_eq!(member_ids(&v).len(), 0);
        assert!(v.get("Members@odata.nextLink").is_none(), "$top=0 would page forever");
        assert_eq!(m.fetched(), 0, "paging alone fetches nothing");
    }

    /// The next link carries the other Redfish parameters as sent, drops cache busters, and
    /// encodes the path.
    #[tokio::test]
    async fn next_link_preserves_parameters() {
        let m = tree(5);
        let v = m.run(SYSTEMS, "$filter=Status/Health%20eq%20'OK'&_=99&$top=1&$select=Name&$expand=.").await.unwrap();
        assert_eq!(v["Members@odata.count"], json!(3));
        assert_eq!(
            v["Members@odata.nextLink"],
            json!(format!("{SYSTEMS}?$skip=1&$top=1&$filter=Status/Health%20eq%20'OK'&$select=Name&$expand=."))
        );
        let o = QueryOptions::parse("$top=1").unwrap().unwrap();
        let p = ResourcePath::parse("/redfish/v1/Things/a%20b%25").unwrap();
        assert_eq!(o.next_link(&p, 1, 1), "/redfish/v1/Things/a%20b%25?$skip=1&$top=1");
    }

    /// Order: `$filter`, then the page, then `$expand` of the page only, then `$select` on the
    /// expanded members. Members are fetched once although filter and expand both need them.
    #[tokio::test]
    async fn order_of_application() {
        let m = tree(5);
        let v = m.run(SYSTEMS, "$select=Name&$expand=.&$skip=1&$top=1&$filter=Status/Health eq 'OK'").await.unwrap();
        assert_eq!(
            v,
            json!({
                "@odata.id": SYSTEMS,
                "@odata.type": "#ComputerSystemCollection.ComputerSystemCollection",
                "Name": "Computer System Collection",
                "Members@odata.count": 3,
                "Members": [{"@odata.id": format!("{SYSTEMS}/3"), "@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem", "Name": "System 3"}],
                "Members@odata.nextLink": format!("{SYSTEMS}?$skip=2&$top=1&$select=Name&$expand=.&$filter=Status/Health eq 'OK'")
            })
        );
        assert_eq!(m.fetched(), 5);
    }

    /// `$select` on a collection without `$expand` applies to the collection; with `~` too
    /// (members are not expanded by it); `Members/...` is the collection-level form.
    #[tokio::test]
    async fn select_on_collections() {
        let m = tree(2);
        let v = m.run(SYSTEMS, "$select=Name").await.unwrap();
        assert_eq!(
            v,
            json!({"@odata.id": SYSTEMS, "@odata.type": "#ComputerSystemCollection.ComputerSystemCollection",
                   "Name": "Computer System Collection"})
        );
        assert_eq!(m.run(SYSTEMS, "$select=Name&$expand=~").await.unwrap(), v);
        let v = m.run(SYSTEMS, "$expand=.&$select=Members/Id").await.unwrap();
        assert_eq!(
            v,
            json!({
                "@odata.id": SYSTEMS, "@odata.type": "#ComputerSystemCollection.ComputerSystemCollection",
                "Members@odata.count": 2,
                "Members": [
                    {"@odata.id": format!("{SYSTEMS}/1"), "@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem", "Id": "1"},
                    {"@odata.id": format!("{SYSTEMS}/2"), "@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem", "Id": "2"}
                ]
            })
        );
        let members_form = m.run(SYSTEMS, "$expand=.&$select=Id").await.unwrap();
        assert_eq!(members_form["Members"], v["Members"]);
        assert_eq!(members_form["Name"], json!("Computer System Collection"));
    }

    /// On a resource, `$select` narrows expanded navigation properties by the path after them.
    #[tokio::test]
    async fn select_with_expand_on_resource() {
        let m = tree(1);
        let v = m.run(&format!("{SYSTEMS}/1"), "$expand=*&$select=Links/Chassis/Name,Status/Health").await.unwrap();
        assert_eq!(
            v,
            json!({
                "@odata.id": format!("{SYSTEMS}/1"), "@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem",
                "Status": {"Health": "OK"},
                "Links": {"Chassis": [{"@odata.id": "/redfish/v1/Chassis/1", "@odata.type": "#Chassis.v1_25_0.Chassis", "Name": "Chassis 1"}]}
            })
        );
    }

    /// `only` returns the single member of a one-member collection and nothing else changes.
    #[tokio::test]
    async fn only_query() {
        let mut m = tree(2);
        let both = m.run(SYSTEMS, "only").await.unwrap();
        assert_eq!(both, m.map[SYSTEMS]);
        m.put(collection("/redfish/v1/One", [format!("{SYSTEMS}/2")]));
        assert_eq!(m.run("/redfish/v1/One", "only").await.unwrap(), system(2));
        m.put(collection("/redfish/v1/Gone", ["/redfish/v1/Nowhere/1".to_string()]));
        assert_eq!(m.run("/redfish/v1/Gone", "only").await.unwrap(), m.map["/redfish/v1/Gone"]);
        m.put(collection("/redfish/v1/Empty", []));
        assert_eq!(m.run("/redfish/v1/Empty", "only").await.unwrap(), m.map["/redfish/v1/Empty"]);
        assert_eq!(m.run(&format!("{SYSTEMS}/1"), "only").await.unwrap(), system(1));
        let one = Resource::new(m.map["/redfish/v1/One"].clone(), 3);
        let member = only_member(&m, &one).await.unwrap().unwrap();
        assert_eq!((member.value().into_owned(), member.revision()), (system(2), 1), "the member itself, for its ETag");
        let both = Resource::new(m.map[SYSTEMS].clone(), 3);
        assert!(only_member(&m, &both).await.unwrap().is_none());
    }

    struct Hints;

    impl SchemaHints for Hints {
        fn excerpt_properties(&self, odata_type: &str) -> Option<Vec<String>> {
            match odata_type.split('.').next() {
                Some("#ComputerSystem") => Some(vec!["Name".into(), "Status/Health".into()]),
                Some("#Bios") => Some(vec![]),
                Some("#Chassis") => Some(vec!["bad path!".into(), "Id".into()]),
                _ => None,
            }
        }
    }

    /// `excerpt` keeps the hinted properties plus identity; without hints or without an excerpt
    /// for the type, the resource is whole; on expanded collections it applies to members.
    #[tokio::test]
    async fn excerpt_query() {
        let m = tree(2);
        let s1 = format!("{SYSTEMS}/1");
        let budget = Budget::default();
        let v = m.run_with(&s1, "excerpt", &budget, Some(&Hints)).await.unwrap();
        assert_eq!(
            v,
            json!({"@odata.id": s1, "@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem", "Name": "System 1",
                   "Status": {"Health": "OK"}})
        );
        assert_eq!(m.run(&s1, "excerpt").await.unwrap(), system(1), "no hints: whole resource");
        let v = m.run_with(&format!("{s1}/Bios"), "excerpt", &budget, Some(&Hints)).await.unwrap();
        assert_eq!(v, json!({"@odata.id": format!("{s1}/Bios"), "@odata.type": "#Bios.v1_2_0.Bios"}));
        let v = m.run_with("/redfish/v1/Chassis/1", "excerpt", &budget, Some(&Hints)).await.unwrap();
        assert_eq!(
            v,
            json!({"@odata.id": "/redfish/v1/Chassis/1", "@odata.type": "#Chassis.v1_25_0.Chassis", "Id": "1"})
        );

        let v = m.run_with(SYSTEMS, "excerpt&$expand=.&$top=1", &budget, Some(&Hints)).await.unwrap();
        assert_eq!(v["Name"], json!("Computer System Collection"), "the collection has no excerpt");
        assert_eq!(
            v["Members"],
            json!([{"@odata.id": s1, "@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem", "Name": "System 1",
                    "Status": {"Health": "OK"}}])
        );
        // excerpt then $select.
        let v = m.run_with(&s1, "excerpt&$select=Status", &budget, Some(&Hints)).await.unwrap();
        assert_eq!(
            v,
            json!({"@odata.id": s1, "@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem", "Status": {"Health": "OK"}})
        );
    }

    /// A collection's inline members (not links) are filtered as they are.
    #[tokio::test]
    async fn inline_members() {
        let mut m = Mem::default();
        m.put(json!({"@odata.id": "/redfish/v1/C", "@odata.type": "#XCollection.XCollection",
                     "Members": [{"@odata.id": "/redfish/v1/C/1", "V": 1}, {"@odata.id": "/redfish/v1/C/2", "V": 2}]}));
        let v = m.run("/redfish/v1/C", "$filter=V gt 1").await.unwrap();
        assert_eq!(v["Members"], json!([{"@odata.id": "/redfish/v1/C/2", "V": 2}]));
        assert_eq!(v["Members@odata.count"], json!(1));
        assert_eq!(m.fetched(), 0);
    }

    /// The service root advertises what is implemented, with the configured level limit.
    #[test]
    fn features() {
        let f = supported_features(6);
        assert_eq!(f["ExpandQuery"]["MaxLevels"], json!(6));
        for k in ["SelectQuery", "FilterQuery", "OnlyMemberQuery", "ExcerptQuery", "TopSkipQuery"] {
            assert_eq!(f[k], json!(true), "{k}");
        }
        for k in ["ExpandAll", "Levels", "Links", "NoLinks"] {
            assert_eq!(f["ExpandQuery"][k], json!(true), "{k}");
        }
        assert_eq!(Budget::default(), Budget { max_levels: 6, max_resources: 10_000 });
        let b: Budget = serde_json::from_value(json!({"max_levels": 3})).unwrap();
        assert_eq!(b, Budget { max_levels: 3, max_resources: 10_000 });
        assert!(serde_json::from_value::<Budget>(json!({"max_level": 3})).is_err());
    }

    /// The server can hold the future across awaits in a handler (Send), and storage, Arcs of
    /// it and the core pass as `&dyn Fetch`.
    #[test]
    fn wiring_types() {
        fn is_send<T: Send>(_: &T) {}
        fn as_fetch_arc(s: &Arc<dyn StorageBackend>) -> &dyn Fetch {
            s
        }
        fn as_fetch_core(c: &Core) -> &dyn Fetch {
            c
        }
        fn dyn_storage_is_fetch<T: Fetch + ?Sized>() {}
        dyn_storage_is_fetch::<dyn StorageBackend>();
        let _ = (as_fetch_arc, as_fetch_core);
        let m = tree(1);
        let p = ResourcePath::root();
        let r = Resource::new(json!({}), 1);
        let o = QueryOptions::parse("$expand=.").unwrap().unwrap();
        let b = Budget::default();
        let fut = apply(&m, &p, &r, &o, &b, None);
        is_send(&fut);
    }
}
