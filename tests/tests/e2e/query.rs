//! Redfish query parameters over HTTP (DSP0266 §7.3): `$expand`, `$select`, `$filter`,
//! `$top`/`$skip` with next links, `only`, `excerpt`, unsupported parameters and the `[query]`
//! budget, on a tree of 25 ComputerSystems built by POST (see [`build_tree`]).

use std::collections::BTreeSet;

use serde_json::{json, Value};
use sunfish_tests::{
    assert_error_body, assert_redfish_error, config_for, config_for_root, Backend, Client, Reply, TestServer, BACKENDS,
};

const SYSTEMS: &str = "/redfish/v1/Systems";
const SYSTEM: &str = "#ComputerSystem.v1_20_0.ComputerSystem";
const CHASSIS: &str = "/redfish/v1/Chassis/ch1";
const MEMORY: &str = "/redfish/v1/Systems/s01/Memory";
const DIMM: &str = "/redfish/v1/Systems/s01/Memory/DIMM0";
/// Systems in the tree.
const N: usize = 25;

fn sid(i: usize) -> String {
    format!("s{i:02}")
}

fn uri(i: usize) -> String {
    format!("{SYSTEMS}/{}", sid(i))
}

fn link(target: &str) -> Value {
    json!({"@odata.id": target})
}

/// The system a system consumes from: the next one, in a ring.
fn next(i: usize) -> usize {
    i % N + 1
}

/// The system that supplies a system: the previous one, in a ring.
fn prev(i: usize) -> usize {
    (i + N - 2) % N + 1
}

fn name(i: usize) -> String {
    if i == 7 {
        "O'Brien's box".into()
    } else {
        format!("System {i:02}")
    }
}

fn health(i: usize) -> &'static str {
    ["Critical", "OK", "Warning"][i % 3]
}

fn power(i: usize) -> &'static str {
    if i % 2 == 1 {
        "On"
    } else {
        "Off"
    }
}

/// `MemorySummary/TotalSystemMemoryGiB`: `8 i`, plus a half for every fourth system (stored as
/// a float then, an integer otherwise).
fn gib(i: usize) -> f64 {
    let whole = u32::try_from(i * 8).unwrap_or(u32::MAX);
    f64::from(whole) + if i.is_multiple_of(4) { 0.5 } else { 0.0 }
}

fn watchdog(i: usize) -> bool {
    i.is_multiple_of(5)
}

/// `AssetTag`: absent (`i % 4 == 0`), `null` (`== 1`) or a string.
fn asset_tag(i: usize) -> Option<Value> {
    match i % 4 {
        0 => None,
        1 => Some(Value::Null),
        _ => Some(json!(format!("tag-{i:02}"))),
    }
}

fn system(i: usize) -> Value {
    let memory = if i.is_multiple_of(4) { json!(gib(i)) } else { json!(i * 8) };
    let mut v = json!({
        "@odata.type": SYSTEM,
        "Id": sid(i),
        "Name": name(i),
        "PowerState": power(i),
        "Status": {"State": "Enabled", "Health": health(i)},
        "MemorySummary": {"TotalSystemMemoryGiB": memory},
        "HostWatchdogTimer": {"FunctionEnabled": watchdog(i), "TimeoutAction": "None"},
        // A navigation property whose target does not exist: it stays a link.
        "Bios": link(&format!("{}/Bios", uri(i))),
        "Links": {
            "ConsumingComputerSystems": [link(&uri(next(i)))],
            "SupplyingComputerSystems": [link(&uri(prev(i)))],
            "Chassis": [link(CHASSIS)]
        }
    });
    if let (Some(tag), Some(o)) = (asset_tag(i), v.as_object_mut()) {
        o.insert("AssetTag".into(), tag);
    }
    v
}

/// POSTs the tree: `Chassis/ch1` (linking back to `s01` and `s02`), systems `s01`..`s25` (each
/// linking in `Links` to the next and previous in a ring and to `ch1`, and by navigation to a
/// missing `Bios`), and one `DIMM0` under `s01/Memory` (which gives `s01` a `Memory` link).
async fn build_tree(c: &Client) {
    let chassis = json!({
        "@odata.type": "#Chassis.v1_25_0.Chassis", "Id": "ch1", "Name": "Chassis 1", "ChassisType": "RackMount",
        "Links": {"ComputerSystems": [link(&uri(1)), link(&uri(2))]}
    });
    let r = c.post("/redfish/v1/Chassis", &chassis).await;
    assert_eq!(r.status, 201, "POST ch1: {}", r.body);
    for i in 1..=N {
        let r = c.post(SYSTEMS, &system(i)).await;
        assert_eq!(r.status, 201, "POST {}: {}", sid(i), r.body);
    }
    let dimm = json!({"@odata.type": "#Memory.v1_20_0.Memory", "Id": "DIMM0", "Name": "DIMM 0", "CapacityMiB": 32768});
    let r = c.post(MEMORY, &dimm).await;
    assert_eq!(r.status, 201, "POST DIMM0: {}", r.body);
}

/// A server on `backend` holding the tree.
async fn tree_server(backend: Backend) -> TestServer {
    let s = TestServer::start(backend).await;
    build_tree(&s).await;
    s
}

/// GET that must answer 200; returns the body.
async fn get_ok(c: &Client, path: &str) -> Value {
    let r = c.get(path).await;
    assert_eq!(r.status, 200, "GET {path}: {}", r.body);
    r.body
}

/// Percent-encodes everything but unreserved characters (for `$filter` values).
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The `@odata.id` of each entry of `Members` (links or inlined resources).
fn member_ids(v: &Value) -> Vec<String> {
    v["Members"]
        .as_array()
        .unwrap_or_else(|| panic!("no Members array: {v}"))
        .iter()
        .map(|m| m["@odata.id"].as_str().unwrap_or_else(|| panic!("member without @odata.id: {m}")).to_string())
        .collect()
}

/// The system number of a member URI (`.../s07` → 7).
fn index_of(member: &str) -> usize {
    member.rsplit('/').next().and_then(|id| id.strip_prefix('s')).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// The `@odata.id` (without fragment) of an inlined resource: an object with `@odata.id` and
/// more.
fn inlined_id(v: &Value) -> Option<String> {
    let map = v.as_object().filter(|m| m.len() > 1)?;
    let id = map.get("@odata.id")?.as_str()?;
    Some(id.split('#').next().unwrap_or(id).to_string())
}

/// The deepest nesting of inlined resources below `v`, asserting on the way that no inlined
/// resource sits inside itself (`branch` holds the resources it is inside of).
fn inline_depth(v: &Value, branch: &mut Vec<String>) -> usize {
    let children: Vec<&Value> = match v {
        Value::Object(m) => m.values().collect(),
        Value::Array(a) => a.iter().collect(),
        _ => return 0,
    };
    let mut deepest = 0;
    for child in children {
        match inlined_id(child) {
            Some(id) => {
                assert!(!branch.contains(&id), "{id} is inlined inside itself (branch {branch:?})");
                branch.push(id);
                deepest = deepest.max(1 + inline_depth(child, branch));
                branch.pop();
            }
            None => deepest = deepest.max(inline_depth(child, branch)),
        }
    }
    deepest
}

/// [`inline_depth`] of a whole response.
fn depth_of(body: &Value) -> usize {
    let top = body["@odata.id"].as_str().unwrap_or_default().to_string();
    inline_depth(body, &mut vec![top])
}

/// Asserts a 400 `QueryParameterValueFormatError` whose message names `parameter`.
#[track_caller]
fn assert_value_error(r: &Reply, parameter: &str, what: &str) {
    assert_redfish_error(r, 400, "QueryParameterValueFormatError");
    let info = &r.body["error"]["@Message.ExtendedInfo"][0];
    assert!(
        info["Message"].as_str().is_some_and(|m| m.contains(parameter))
            || info["MessageArgs"].as_array().is_some_and(|a| a.iter().any(|x| x == parameter)),
        "{what}: the error does not name {parameter}: {}",
        r.body
    );
}

/// `$expand=.` inlines navigation properties and collection members but not what `Links`
/// holds, `~` only what `Links` holds, `*` both; one level by default, so an inlined resource's
/// own links stay links; a link whose target is missing stays a link.
#[tokio::test]
async fn expand_modes_choose_what_is_inlined() {
    for b in BACKENDS {
        let s = tree_server(b).await;
        let root = get_ok(&s, "/redfish/v1").await;

        let sub = get_ok(&s, "/redfish/v1?$expand=.").await;
        assert_eq!(sub["Systems"]["@odata.type"], "#ComputerSystemCollection.ComputerSystemCollection", "{b:?}");
        assert_eq!(sub["Systems"]["Members@odata.count"], N, "{b:?}");
        assert!(sub["Systems"]["Members"].as_array().is_some_and(|m| m.iter().all(|x| inlined_id(x).is_none())));
        assert_eq!(sub["Links"], root["Links"], "{b:?}: `.` expanded inside Links");

        let dep = get_ok(&s, "/redfish/v1?$expand=~").await;
        assert_eq!(dep["Systems"], link(SYSTEMS), "{b:?}: `~` expanded a navigation property");
        let manager = &dep["Links"]["ManagerProvidingService"];
        assert!(manager["@odata.type"].as_str().is_some_and(|t| t.starts_with("#Manager.")), "{b:?}: {manager}");
        assert!(dep["Links"]["Sessions"]["Members"].is_array(), "{b:?}: {}", dep["Links"]);

        let all = get_ok(&s, "/redfish/v1?$expand=*").await;
        assert_eq!(all["Systems"], sub["Systems"], "{b:?}");
        assert_eq!(all["Links"], dep["Links"], "{b:?}");

        // On a system: Memory is subordinate, the other systems and the chassis dependent.
        let plain = get_ok(&s, &uri(1)).await;
        assert_eq!(plain["Memory"], link(MEMORY), "{b:?}: the DIMM POST did not link Memory");
        let s2 = get_ok(&s, &uri(2)).await;
        let s25 = get_ok(&s, &uri(N)).await;
        let ch1 = get_ok(&s, CHASSIS).await;
        let memory = get_ok(&s, MEMORY).await;

        let sub = get_ok(&s, &format!("{}?$expand=.", uri(1))).await;
        assert_eq!(sub["Memory"], memory, "{b:?}");
        assert_eq!(sub["Memory"]["Members"], json!([link(DIMM)]), "{b:?}: one level only");
        assert_eq!(sub["Bios"], plain["Bios"], "{b:?}: a missing target must stay a link");
        assert_eq!(sub["Links"], plain["Links"], "{b:?}");

        let dep = get_ok(&s, &format!("{}?$expand=~", uri(1))).await;
        assert_eq!(dep["Memory"], link(MEMORY), "{b:?}");
        assert_eq!(dep["Links"]["ConsumingComputerSystems"], json!([s2]), "{b:?}");
        assert_eq!(dep["Links"]["SupplyingComputerSystems"], json!([s25]), "{b:?}");
        assert_eq!(dep["Links"]["Chassis"], json!([ch1]), "{b:?}");

        let all = get_ok(&s, &format!("{}?$expand=*", uri(1))).await;
        assert_eq!(all["Memory"], sub["Memory"], "{b:?}");
        assert_eq!(all["Links"], dep["Links"], "{b:?}");
        assert_eq!(all["Bios"], plain["Bios"], "{b:?}");
        let mut rest = all.clone();
        for k in ["Memory", "Links"] {
            rest[k] = plain[k].clone();
        }
        assert_eq!(rest, plain, "{b:?}: $expand changed something other than links");

        // On a collection: `.` and `*` inline every member as a GET returns it; `~` nothing,
        // since Members are not inside Links.
        let coll = get_ok(&s, SYSTEMS).await;
        for q in [".", "*"] {
            let v = get_ok(&s, &format!("{SYSTEMS}?$expand={q}")).await;
            assert_eq!(v["Members@odata.count"], N, "{b:?} {q}");
            assert_eq!(member_ids(&v), member_ids(&coll), "{b:?} {q}");
            for m in v["Members"].as_array().into_iter().flatten() {
                let id = m["@odata.id"].as_str().unwrap_or_default();
                assert_eq!(m, &get_ok(&s, id).await, "{b:?} {q}: member {id} differs from its GET");
            }
        }
        assert_eq!(get_ok(&s, &format!("{SYSTEMS}?$expand=~")).await, coll, "{b:?}");
        s.stop().await;
    }
}

/// `($levels=N)` inlines exactly N levels deep (links below stay links), `max` means the
/// configured maximum (6 by default), and a resource is never inlined inside itself: a link
/// back to the addressed resource or to one being expanded on the same branch stays a link.
#[tokio::test]
async fn expand_levels_are_respected_and_cycles_stay_links() {
    for b in BACKENDS {
        let s = tree_server(b).await;
        let s01 = |v: &Value| -> Value {
            v["Members"]
                .as_array()
                .and_then(|m| m.iter().find(|x| x["@odata.id"] == uri(1)).cloned())
                .unwrap_or_default()
        };
        let one = get_ok(&s, &format!("{SYSTEMS}?$expand=.")).await;
        assert_eq!(s01(&one)["Memory"], link(MEMORY), "{b:?}");
        assert_eq!(depth_of(&one), 1, "{b:?}");
        let two = get_ok(&s, &format!("{SYSTEMS}?$expand=.($levels=2)")).await;
        assert_eq!(s01(&two)["Memory"]["Members"], json!([link(DIMM)]), "{b:?}");
        assert_eq!(depth_of(&two), 2, "{b:?}");
        let three = get_ok(&s, &format!("{SYSTEMS}?$expand=.($levels=3)")).await;
        assert_eq!(s01(&three)["Memory"]["Members"][0]["CapacityMiB"], 32768, "{b:?}");
        assert_eq!(depth_of(&three), 3, "{b:?}");
        assert_eq!(s01(&three)["Links"], get_ok(&s, &uri(1)).await["Links"], "{b:?}: `.` went into Links");

        // Dependent chain s01 → s02 → s03 → s04, three levels.
        let v = get_ok(&s, &format!("{}?$expand=~($levels=3)", uri(1))).await;
        assert_eq!(depth_of(&v), 3, "{b:?}");
        let l1 = &v["Links"]["ConsumingComputerSystems"][0];
        let l2 = &l1["Links"]["ConsumingComputerSystems"][0];
        let l3 = &l2["Links"]["ConsumingComputerSystems"][0];
        assert_eq!((&l1["Name"], &l2["Name"], &l3["Name"]), (&json!(name(2)), &json!(name(3)), &json!(name(4))));
        assert_eq!(l1["Links"]["SupplyingComputerSystems"], json!([link(&uri(1))]), "{b:?}: back to the top");
        assert_eq!(l2["Links"]["SupplyingComputerSystems"], json!([link(&uri(2))]), "{b:?}: back up the branch");
        assert_eq!(l3["Links"]["ConsumingComputerSystems"], json!([link(&uri(5))]), "{b:?}: beyond 3 levels");
        let ch1 = &v["Links"]["Chassis"][0];
        assert_eq!(ch1["Links"]["ComputerSystems"][0], link(&uri(1)), "{b:?}: chassis back to s01");
        assert_eq!(ch1["Links"]["ComputerSystems"][1]["Name"], name(2), "{b:?}");

        // max = 6 (the default budget); everything at once still terminates and never nests a
        // resource inside itself.
        let v = get_ok(&s, &format!("{}?$expand=*($levels=max)", uri(1))).await;
        assert_eq!(depth_of(&v), 6, "{b:?}");
        let mut at = &v;
        for i in 2..=7 {
            at = &at["Links"]["ConsumingComputerSystems"][0];
            assert_eq!(at["Name"], name(i), "{b:?}: level {}", i - 1);
        }
        assert_eq!(at["Links"]["ConsumingComputerSystems"], json!([link(&uri(8))]), "{b:?}");
        assert_eq!(get_ok(&s, &format!("{}?$expand=*($levels=6)", uri(1))).await, v, "{b:?}");
        let v = get_ok(&s, &format!("{SYSTEMS}?$expand=*($levels=2)")).await;
        assert_eq!(depth_of(&v), 2, "{b:?}");

        // Bad $expand values.
        for q in ["", "Links", ".($levels=0)", ".($levels=x)", "*($top=1)", ".(levels=2)", "**"] {
            let r = s.get(&format!("{SYSTEMS}?$expand={q}")).await;
            assert_value_error(&r, "$expand", &format!("{b:?} $expand={q}"));
        }
        s.stop().await;
    }
}

/// `$select` keeps the named properties (`A`, `B/C`) plus `@odata.id` and `@odata.type`, keeps
/// the resource's ETag; on a collection with `$expand=.` it applies to each member
/// (`Members/X` too), and through `$expand=~` it narrows the inlined resources.
#[tokio::test]
async fn select_keeps_named_properties_and_identity() {
    for b in BACKENDS {
        let s = tree_server(b).await;
        let plain = s.get(&uri(7)).await;
        let r = s.get(&format!("{}?$select=Name,Status/Health", uri(7))).await;
        assert_eq!(r.status, 200, "{b:?}: {}", r.body);
        assert_eq!(
            r.body,
            json!({"@odata.id": uri(7), "@odata.type": SYSTEM, "Name": "O'Brien's box", "Status": {"Health": health(7)}}),
            "{b:?}"
        );
        assert!(!plain.header("etag").is_empty(), "{b:?}");
        assert_eq!(r.header("etag"), plain.header("etag"), "{b:?}: $select is a view of the same revision");

        let v = get_ok(&s, &format!("{}?$select=MemorySummary/TotalSystemMemoryGiB", uri(4))).await;
        assert_eq!(
            v,
            json!({"@odata.id": uri(4), "@odata.type": SYSTEM, "MemorySummary": {"TotalSystemMemoryGiB": 32.5}}),
            "{b:?}"
        );
        let v = get_ok(&s, &format!("{}?$select=NoSuchProperty", uri(4))).await;
        assert_eq!(v, json!({"@odata.id": uri(4), "@odata.type": SYSTEM}), "{b:?}");
        let v = get_ok(&s, &format!("{}?$select=*", uri(4))).await;
        assert_eq!(v, get_ok(&s, &uri(4)).await, "{b:?}");

        let v = get_ok(&s, &format!("{SYSTEMS}?$select=Name")).await;
        assert_eq!(
            v,
            json!({"@odata.id": SYSTEMS, "@odata.type": "#ComputerSystemCollection.ComputerSystemCollection",
                   "Name": "Computer System Collection"}),
            "{b:?}: without $expand, $select applies to the collection"
        );

        let coll = get_ok(&s, SYSTEMS).await;
        let v = get_ok(&s, &format!("{SYSTEMS}?$expand=.&$select=Name,PowerState")).await;
        assert_eq!(v["Name"], coll["Name"], "{b:?}: the collection's own properties stay");
        assert_eq!(v["Members@odata.count"], N, "{b:?}");
        assert_eq!(member_ids(&v), member_ids(&coll), "{b:?}");
        for m in v["Members"].as_array().into_iter().flatten() {
            let i = index_of(m["@odata.id"].as_str().unwrap_or_default());
            assert_eq!(
                m,
                &json!({"@odata.id": uri(i), "@odata.type": SYSTEM, "Name": name(i), "PowerState": power(i)}),
                "{b:?}"
            );
        }
        let v = get_ok(&s, &format!("{SYSTEMS}?$expand=.&$select=Members/Id")).await;
        let keys: BTreeSet<&str> = v.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
        assert_eq!(keys, BTreeSet::from(["@odata.id", "@odata.type", "Members", "Members@odata.count"]), "{b:?}");
        assert_eq!(v["Members"][0], json!({"@odata.id": uri(1), "@odata.type": SYSTEM, "Id": sid(1)}), "{b:?}");

        let v = get_ok(&s, &format!("{}?$expand=~&$select=Links/ConsumingComputerSystems/Name", uri(1))).await;
        assert_eq!(
            v,
            json!({"@odata.id": uri(1), "@odata.type": SYSTEM,
                   "Links": {"ConsumingComputerSystems": [{"@odata.id": uri(2), "@odata.type": SYSTEM, "Name": name(2)}]}}),
            "{b:?}"
        );

        for q in ["", "Name,", "Status//Health", "*/Name", "Na me!"] {
            let r = s.get(&format!("{}?$select={}", uri(1), enc(q))).await;
            assert_value_error(&r, "$select", &format!("{b:?} $select={q}"));
        }
        s.stop().await;
    }
}

/// `$filter` keeps the members matching the expression (eq ne gt ge lt le, and or not,
/// parentheses with OData precedence, quoted strings with `''`, integers and decimals,
/// booleans, null for missing or null values, nested paths) in collection order, and sets
/// `Members@odata.count` to the number kept.
#[tokio::test]
async fn filter_keeps_matching_members() {
    let cases: &[(&str, fn(usize) -> bool)] = &[
        ("PowerState eq 'On'", |i| power(i) == "On"),
        ("PowerState ne 'On'", |i| power(i) != "On"),
        ("MemorySummary/TotalSystemMemoryGiB gt 96.5", |i| gib(i) > 96.5),
        ("MemorySummary/TotalSystemMemoryGiB ge 96.5", |i| gib(i) >= 96.5),
        ("MemorySummary/TotalSystemMemoryGiB lt 40", |i| gib(i) < 40.0),
        ("MemorySummary/TotalSystemMemoryGiB le 40", |i| gib(i) <= 40.0),
        ("MemorySummary/TotalSystemMemoryGiB eq 8", |i| i == 1),
        ("MemorySummary/TotalSystemMemoryGiB eq 32.5", |i| i == 4),
        ("MemorySummary/TotalSystemMemoryGiB eq 88.0", |i| i == 11),
        ("MemorySummary/TotalSystemMemoryGiB gt -1e3", |_| true),
        ("Status/Health eq 'OK' and PowerState eq 'On'", |i| health(i) == "OK" && power(i) == "On"),
        ("Status/Health eq 'Critical' or MemorySummary/TotalSystemMemoryGiB lt 20", |i| {
            health(i) == "Critical" || gib(i) < 20.0
        }),
        ("not (PowerState eq 'On')", |i| power(i) != "On"),
        // `not` binds tighter than `eq`: (not PowerState) is null, which equals no string.
        ("not PowerState eq 'On'", |_| false),
        ("Status/Health eq 'OK' or Status/Health eq 'Warning' and PowerState eq 'Off'", |i| {
            health(i) == "OK" || (health(i) == "Warning" && power(i) == "Off")
        }),
        ("(Status/Health eq 'OK' or Status/Health eq 'Warning') and PowerState eq 'Off'", |i| {
            (health(i) == "OK" || health(i) == "Warning") && power(i) == "Off"
        }),
        ("(Status/Health ne 'Critical') and not (HostWatchdogTimer/FunctionEnabled eq true)", |i| {
            health(i) != "Critical" && !watchdog(i)
        }),
        ("HostWatchdogTimer/FunctionEnabled eq true", watchdog),
        ("HostWatchdogTimer/FunctionEnabled eq false", |i| !watchdog(i)),
        ("Name eq 'O''Brien''s box'", |i| i == 7),
        ("Name ne 'O''Brien''s box'", |i| i != 7),
        ("Name gt 'System 20'", |i| i > 20),
        ("Id eq 's03' or Id eq 's13'", |i| i == 3 || i == 13),
        ("AssetTag eq null", |i| !matches!(asset_tag(i), Some(Value::String(_)))),
        ("AssetTag ne null", |i| matches!(asset_tag(i), Some(Value::String(_)))),
        ("NoSuchProperty eq null", |_| true),
        ("PowerState eq 'Paused'", |_| false),
        ("PowerState gt 5", |_| false),
    ];
    for b in BACKENDS {
        let s = tree_server(b).await;
        let all = member_ids(&get_ok(&s, SYSTEMS).await);
        for (filter, pred) in cases {
            let expected: Vec<String> = all.iter().filter(|m| pred(index_of(m))).cloned().collect();
            let v = get_ok(&s, &format!("{SYSTEMS}?$filter={}", enc(filter))).await;
            assert_eq!(member_ids(&v), expected, "{b:?}: $filter={filter}");
            assert_eq!(v["Members@odata.count"], expected.len(), "{b:?}: $filter={filter}");
            assert_eq!(v["Name"], "Computer System Collection", "{b:?}: $filter={filter}");
        }
        // Unencoded spaces and quotes work as well.
        let v = get_ok(&s, &format!("{SYSTEMS}?$filter=Id eq 's05'")).await;
        assert_eq!(member_ids(&v), [uri(5)], "{b:?}");
        // With $expand and $select: the kept members, inlined and narrowed.
        let v =
            get_ok(&s, &format!("{SYSTEMS}?$filter={}&$expand=.&$select=PowerState", enc("PowerState eq 'On'"))).await;
        assert_eq!(v["Members@odata.count"], 13, "{b:?}");
        assert!(v["Members"].as_array().is_some_and(|m| m.len() == 13 && m.iter().all(|x| x["PowerState"] == "On")));
        s.stop().await;
    }
}

/// A `$filter` that does not parse is 400 `QueryParameterValueFormatError` naming `$filter`;
/// `$filter` on a resource that is not a collection is 400 naming `$filter`.
#[tokio::test]
async fn filter_errors_are_400() {
    for b in BACKENDS {
        let s = tree_server(b).await;
        for bad in [
            "",
            "PowerState eq",
            "PowerState eq 'On",
            "(PowerState eq 'On'",
            "PowerState eq 'On')",
            "PowerState == 'On'",
            "PowerState Eq 'On'",
            "PowerState eq 'On' and",
            "eq 'On'",
            "PowerState 'On'",
            "MemorySummary/ eq 1",
            "MemorySummary/TotalSystemMemoryGiB gt 1.",
            "not",
        ] {
            let r = s.get(&format!("{SYSTEMS}?$filter={}", enc(bad))).await;
            assert_value_error(&r, "$filter", &format!("{b:?} $filter={bad}"));
        }
        let r = s.get(&format!("{SYSTEMS}?$filter={0}&$filter={0}", enc("Id eq 's01'"))).await;
        assert_value_error(&r, "$filter", &format!("{b:?}: $filter twice"));
        for target in [uri(1), "/redfish/v1".to_string(), CHASSIS.to_string()] {
            let r = s.get(&format!("{target}?$filter={}", enc("Id eq 's01'"))).await;
            assert_eq!(r.status, 400, "{b:?}: $filter on {target}: {}", r.body);
            assert_error_body(&r);
            assert!(r.body.to_string().contains("$filter"), "{b:?}: $filter not named: {}", r.body);
        }
        assert_eq!(s.get(SYSTEMS).await.status, 200, "{b:?}");
        s.stop().await;
    }
}

/// Follows `Members@odata.nextLink` from `first` to the end; returns the pages. Every page
/// must say `Members@odata.count == total`.
async fn follow_pages(c: &Client, first: &str, total: usize) -> Vec<Value> {
    let mut pages = Vec::new();
    let mut next = Some(first.to_string());
    while let Some(path) = next {
        assert!(pages.len() <= N + 1, "next links do not end (at {path})");
        let v = get_ok(c, &path).await;
        assert_eq!(v["Members@odata.count"], total, "{path}: the count must stay the total");
        next = v.get("Members@odata.nextLink").map(|l| {
            let l = l.as_str().unwrap_or_else(|| panic!("{path}: nextLink is not a string: {l}"));
            assert!(l.starts_with(&format!("{SYSTEMS}?")), "{path}: nextLink {l}");
            l.to_string()
        });
        pages.push(v);
    }
    pages
}

/// `$top`/`$skip` page the members: following `Members@odata.nextLink` until it is absent yields
/// every member exactly once in collection order, each page keeping the total count; the
/// link carries `$filter`, `$expand` and `$select` along. Bad values are 400.
#[tokio::test]
async fn top_skip_and_next_links() {
    for b in BACKENDS {
        let s = tree_server(b).await;
        let all = member_ids(&get_ok(&s, SYSTEMS).await);
        assert_eq!(all.len(), N, "{b:?}");

        let pages = follow_pages(&s, &format!("{SYSTEMS}?$top=7"), N).await;
        let sizes: Vec<usize> = pages.iter().map(|p| member_ids(p).len()).collect();
        assert_eq!(sizes, [7, 7, 7, 4], "{b:?}");
        let seen: Vec<String> = pages.iter().flat_map(member_ids).collect();
        assert_eq!(seen, all, "{b:?}: every member exactly once, in order");

        // Filtered, expanded and selected pages.
        let odd: Vec<String> = all.iter().filter(|m| power(index_of(m)) == "On").cloned().collect();
        let first = format!("{SYSTEMS}?$filter={}&$top=4&$expand=.&$select=Name", enc("PowerState eq 'On'"));
        let pages = follow_pages(&s, &first, odd.len()).await;
        assert_eq!(pages.len(), 4, "{b:?}");
        let seen: Vec<String> = pages.iter().flat_map(member_ids).collect();
        assert_eq!(seen, odd, "{b:?}");
        for m in pages.iter().flat_map(|p| p["Members"].as_array().cloned().unwrap_or_default()) {
            let i = index_of(m["@odata.id"].as_str().unwrap_or_default());
            assert_eq!(m, json!({"@odata.id": uri(i), "@odata.type": SYSTEM, "Name": name(i)}), "{b:?}");
        }

        let v = get_ok(&s, &format!("{SYSTEMS}?$skip=3&$top=2")).await;
        assert_eq!(member_ids(&v), all[3..5], "{b:?}");
        assert_eq!(v["Members@odata.nextLink"], format!("{SYSTEMS}?$skip=5&$top=2"), "{b:?}");
        let v = get_ok(&s, &format!("{SYSTEMS}?$skip=20")).await;
        assert_eq!(member_ids(&v), all[20..], "{b:?}");
        assert!(v.get("Members@odata.nextLink").is_none(), "{b:?}");
        for q in ["$skip=30", "$top=0", "$skip=25&$top=5"] {
            let v = get_ok(&s, &format!("{SYSTEMS}?{q}")).await;
            assert_eq!(member_ids(&v).len(), 0, "{b:?} {q}");
            assert_eq!(v["Members@odata.count"], N, "{b:?} {q}");
            assert!(v.get("Members@odata.nextLink").is_none(), "{b:?} {q}");
        }
        let v = get_ok(&s, &format!("{SYSTEMS}?$top=100")).await;
        assert_eq!(member_ids(&v), all, "{b:?}");
        assert!(v.get("Members@odata.nextLink").is_none(), "{b:?}");

        for (q, p) in [
            ("$top=-1", "$top"),
            ("$top=abc", "$top"),
            ("$top=", "$top"),
            ("$top=%2B1", "$top"),
            ("$top=99999999999999999999999", "$top"),
            ("$skip=1.5", "$skip"),
            ("$skip=-3", "$skip"),
            ("$top=1&$top=2", "$top"),
        ] {
            assert_value_error(&s.get(&format!("{SYSTEMS}?{q}")).await, p, &format!("{b:?} {q}"));
        }
        for (target, q, p) in [(uri(1), "$top=1", "$top"), ("/redfish/v1".into(), "$skip=1", "$skip")] {
            let r = s.get(&format!("{target}?{q}")).await;
            assert_eq!(r.status, 400, "{b:?}: {q} on {target}: {}", r.body);
            assert!(r.body.to_string().contains(p), "{b:?}: {p} not named: {}", r.body);
        }
        s.stop().await;
    }
}

/// `only` on a one-member collection answers with that member and the member's ETag; on a
/// collection with several or no members, and on a resource that is not a collection, the
/// resource as a plain GET returns it; combined with `$expand` (or another Redfish parameter),
/// or given a value, it is 400.
#[tokio::test]
async fn only_returns_the_single_member() {
    for b in BACKENDS {
        let s = tree_server(b).await;
        let dimm = s.get(DIMM).await;
        let r = s.get(&format!("{MEMORY}?only")).await;
        assert_eq!(r.status, 200, "{b:?}: {}", r.body);
        assert_eq!(r.body, dimm.body, "{b:?}");
        assert!(!dimm.header("etag").is_empty(), "{b:?}");
        assert_eq!(r.header("etag"), dimm.header("etag"), "{b:?}: the member's ETag");
        let r = s.get(&format!("{MEMORY}?only&foo=bar")).await;
        assert_eq!(r.body, dimm.body, "{b:?}: ignored parameters do not combine");

        for path in [SYSTEMS.to_string(), "/redfish/v1/Fabrics".into(), uri(1), "/redfish/v1".into()] {
            let plain = s.get(&path).await;
            let r = s.get(&format!("{path}?only")).await;
            assert_eq!(r.status, 200, "{b:?} {path}: {}", r.body);
            assert_eq!(r.body, plain.body, "{b:?} {path}");
        }

        for q in ["only&$expand=.", "$expand=*&only", "only&$top=1", "only&$select=Name", "only=yes"] {
            let r = s.get(&format!("{MEMORY}?{q}")).await;
            assert_eq!(r.status, 400, "{b:?} {q}: {}", r.body);
            assert_error_body(&r);
            assert!(r.body.to_string().contains("only"), "{b:?} {q}: `only` not named: {}", r.body);
        }
        s.stop().await;
    }
}

/// Without `schema.dir` the service knows no excerpt properties, so `excerpt` returns the
/// resource whole (with its ETag); `excerpt` takes no value.
#[tokio::test]
async fn excerpt_without_schema_returns_whole_resources() {
    for b in BACKENDS {
        let s = tree_server(b).await;
        let plain = s.get(&uri(3)).await;
        let r = s.get(&format!("{}?excerpt", uri(3))).await;
        assert_eq!(r.status, 200, "{b:?}: {}", r.body);
        assert_eq!(r.body, plain.body, "{b:?}");
        assert_eq!(r.header("etag"), plain.header("etag"), "{b:?}");
        let v = get_ok(&s, &format!("{SYSTEMS}?$expand=.&excerpt&$top=2")).await;
        assert_eq!(v["Members"], json!([get_ok(&s, &uri(1)).await, get_ok(&s, &uri(2)).await]), "{b:?}");
        assert_value_error(&s.get(&format!("{}?excerpt=1", uri(3))).await, "excerpt", &format!("{b:?}"));
        s.stop().await;
    }
}

/// With the DMTF bundle as `schema.dir`, `excerpt` on a `Control` keeps only the properties
/// its schema annotates as excerpt (`ControlMode`, `SetPoint`, `SetPointUnits` of those it
/// has) plus identity; on an expanded collection it narrows each member, before `$select`;
/// types without excerpt properties (Chassis, ComputerSystem) come back whole.
#[tokio::test]
async fn excerpt_with_schema_keeps_excerpt_properties() {
    let Some(shared) = sunfish_tests::shared_dir() else { return };
    let dir = shared.join("redfish");
    if !dir.join("json-schema").is_dir() {
        eprintln!("SKIP: no DMTF schema bundle at {}", dir.display());
        return;
    }
    let (mut cfg, tmp) = config_for(Backend::Memory);
    cfg.schema.dir = Some(dir);
    let s = TestServer::start_with(cfg, tmp).await;
    // ControlCollection is not insertable in the bundle: each collection gets the one member
    // whose POST creates it.
    for (chassis, control, set_point) in [("c1", "fan", 35), ("c2", "pump", 40)] {
        let body = json!({"@odata.type": "#Chassis.v1_28_0.Chassis", "Id": chassis, "Name": chassis,
                          "ChassisType": "RackMount"});
        assert_eq!(s.post("/redfish/v1/Chassis", &body).await.status, 201, "POST {chassis}");
        let body = json!({
            "@odata.type": "#Control.v1_7_0.Control", "Id": control, "Name": format!("{control} control"),
            "ControlType": "Temperature", "ControlMode": "Automatic", "SetPoint": set_point, "SetPointUnits": "Cel",
            "PhysicalContext": "Intake", "Status": {"State": "Enabled", "Health": "OK"}
        });
        let r = s.post(&format!("/redfish/v1/Chassis/{chassis}/Controls"), &body).await;
        assert_eq!(r.status, 201, "POST control {control}: {}", r.body);
    }
    let fan = "/redfish/v1/Chassis/c1/Controls/fan";
    let pump = "/redfish/v1/Chassis/c2/Controls/pump";
    let excerpt = |id: &str, set_point: i32| {
        json!({"@odata.id": id, "@odata.type": "#Control.v1_7_0.Control",
               "ControlMode": "Automatic", "SetPoint": set_point, "SetPointUnits": "Cel"})
    };
    let plain = s.get(fan).await;
    let r = s.get(&format!("{fan}?excerpt")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, excerpt(fan, 35));
    assert_eq!(r.header("etag"), plain.header("etag"), "an excerpt is a view of the same revision");

    let controls = "/redfish/v1/Chassis/c1/Controls";
    let v = get_ok(&s, &format!("{controls}?$expand=.&excerpt")).await;
    assert_eq!(v["Members"], json!([excerpt(fan, 35)]));
    assert_eq!(v["Name"], get_ok(&s, controls).await["Name"], "the collection itself has no excerpt");
    let v = get_ok(&s, &format!("{pump}?excerpt&$select=SetPoint,Name")).await;
    assert_eq!(v, json!({"@odata.id": pump, "@odata.type": "#Control.v1_7_0.Control", "SetPoint": 40}));

    let sys = json!({"@odata.type": SYSTEM, "Id": "x1", "Name": "x1", "PowerState": "On"});
    assert_eq!(s.post(SYSTEMS, &sys).await.status, 201);
    assert_eq!(get_ok(&s, &format!("{SYSTEMS}/x1?excerpt")).await, get_ok(&s, &format!("{SYSTEMS}/x1")).await);
    let c1 = "/redfish/v1/Chassis/c1";
    assert_eq!(get_ok(&s, &format!("{c1}?excerpt")).await, get_ok(&s, c1).await);
    s.stop().await;
}

/// `$`-parameters the service does not implement (`$orderby`, `$search`, `$format`, `$count`,
/// and `$Expand`: names are case-sensitive) are 501 `QueryParameterUnsupported` naming the
/// parameter; other unknown parameters are ignored: the answer is the plain GET's.
#[tokio::test]
async fn unsupported_and_ignored_parameters() {
    for b in BACKENDS {
        let s = tree_server(b).await;
        for (q, p) in [
            ("$orderby=Name", "$orderby"),
            ("$search=blue", "$search"),
            ("$format=json", "$format"),
            ("$count=true", "$count"),
            ("$Expand=.", "$Expand"),
            ("$top=2&$orderby=Name", "$orderby"),
        ] {
            let r = s.get(&format!("{SYSTEMS}?{q}")).await;
            assert_redfish_error(&r, 501, "QueryParameterUnsupported");
            assert!(r.body.to_string().contains(p), "{b:?} {q}: {p} not named: {}", r.body);
        }
        for path in [SYSTEMS.to_string(), uri(1)] {
            let plain = s.get(&path).await;
            for q in ["foo=bar", "_=1712345678", "foo", "includeoriginofconditions=true", "&&"] {
                let r = s.get(&format!("{path}?{q}")).await;
                assert_eq!(r.status, 200, "{b:?} {path}?{q}: {}", r.body);
                assert_eq!(r.body, plain.body, "{b:?} {path}?{q}");
                assert_eq!(r.header("etag"), plain.header("etag"), "{b:?} {path}?{q}");
            }
        }
        s.stop().await;
    }
}

/// With `query.max_levels = 2`, `$expand` deeper than 2 is 400 `QueryCombinationInvalid`
/// naming the levels limit, `($levels=2)` and `($levels=max)` inline two levels, the service
/// root advertises `MaxLevels` 2, and the server keeps answering.
#[tokio::test]
async fn expand_levels_over_budget_are_400() {
    for b in BACKENDS {
        let (mut cfg, dir) = config_for(b);
        cfg.query.max_levels = 2;
        let s = TestServer::start_with(cfg, dir).await;
        build_tree(&s).await;
        let root = get_ok(&s, "/redfish/v1").await;
        assert_eq!(root["ProtocolFeaturesSupported"]["ExpandQuery"]["MaxLevels"], 2, "{b:?}");
        for q in [".($levels=3)", "*($levels=3)", "~($levels=99)"] {
            let r = s.get(&format!("{SYSTEMS}?$expand={q}")).await;
            assert_redfish_error(&r, 400, "QueryCombinationInvalid");
            let message = r.body["error"]["@Message.ExtendedInfo"][0]["Message"].as_str().unwrap_or_default();
            assert!(message.contains("levels") && message.contains('2'), "{b:?} {q}: {message}");
        }
        let two = get_ok(&s, &format!("{SYSTEMS}?$expand=.($levels=2)")).await;
        assert_eq!(depth_of(&two), 2, "{b:?}");
        assert_eq!(get_ok(&s, &format!("{SYSTEMS}?$expand=.($levels=max)")).await, two, "{b:?}");
        assert_eq!(member_ids(&get_ok(&s, SYSTEMS).await).len(), N, "{b:?}: the server stays healthy");
        s.stop().await;
    }
}

/// With `query.max_resources = 10`, `$expand=.` of a 25-member collection is 400
/// `QueryCombinationInvalid` naming the resources limit, while a page of 10 expands; the server
/// keeps answering afterwards.
#[tokio::test]
async fn expand_resources_over_budget_are_400() {
    for b in BACKENDS {
        let (mut cfg, dir) = config_for(b);
        cfg.query.max_resources = 10;
        let s = TestServer::start_with(cfg, dir).await;
        build_tree(&s).await;
        for q in ["$expand=.", "$expand=*", "$top=11&$expand=."] {
            let r = s.get(&format!("{SYSTEMS}?{q}")).await;
            assert_redfish_error(&r, 400, "QueryCombinationInvalid");
            let message = r.body["error"]["@Message.ExtendedInfo"][0]["Message"].as_str().unwrap_or_default();
            assert!(message.contains("resources") && message.contains("10"), "{b:?} {q}: {message}");
        }
        let v = get_ok(&s, &format!("{SYSTEMS}?$top=10&$expand=.")).await;
        assert_eq!(v["Members"].as_array().map(|m| m.iter().filter(|x| inlined_id(x).is_some()).count()), Some(10));
        assert_eq!(member_ids(&get_ok(&s, SYSTEMS).await).len(), N, "{b:?}: the server stays healthy");
        assert_eq!(get_ok(&s, &uri(1)).await["Name"], name(1), "{b:?}");
        s.stop().await;
    }
}

/// The seeded service root advertises the query features and `ExpandQuery.MaxLevels` equal to
/// the configured `max_levels` (6 by default), also after a restart on the same store with a
/// different limit.
#[tokio::test]
async fn service_root_advertises_configured_max_levels() {
    for b in BACKENDS {
        let s = TestServer::start(b).await;
        let f = get_ok(&s, "/redfish/v1").await["ProtocolFeaturesSupported"].clone();
        assert_eq!(f["ExpandQuery"]["MaxLevels"], 6, "{b:?}: {f}");
        for k in ["ExpandAll", "Levels", "Links", "NoLinks"] {
            assert_eq!(f["ExpandQuery"][k], true, "{b:?}: {k}");
        }
        for k in ["SelectQuery", "FilterQuery", "OnlyMemberQuery", "ExcerptQuery", "TopSkipQuery"] {
            assert_eq!(f[k], true, "{b:?}: {k}");
        }
        s.stop().await;

        let (mut cfg, dir) = config_for(b);
        cfg.query.max_levels = 4;
        let s = TestServer::start_with(cfg, dir).await;
        let root = get_ok(&s, "/redfish/v1").await;
        assert_eq!(root["ProtocolFeaturesSupported"]["ExpandQuery"]["MaxLevels"], 4, "{b:?}");
        s.stop().await;
    }
    // The fs store is seeded once; the advertised limit follows the configuration of each start.
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let root = tmp.path().join("store");
    for levels in [4, 3] {
        let mut cfg = config_for_root(&root, false);
        cfg.query.max_levels = levels;
        let s = TestServer::start_with(cfg, None).await;
        let v = get_ok(&s, "/redfish/v1").await;
        assert_eq!(v["ProtocolFeaturesSupported"]["ExpandQuery"]["MaxLevels"], levels, "after a restart");
        s.stop().await;
    }
}
