//! Aggregation (issue 5): stub agents on loopback register with an in-process Sunfish, upload
//! their inventories, get writes forwarded, send sync events, go offline and come back, and
//! unregister. The stub is [`sunfish_tests::agent::StubAgent`]; the wire contract is §5.9 of the
//! reference behaviour with the fixes of the design (`/tmp/agg-spec.md` at the time of writing).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use sunfish_server::ServerConfig;
use sunfish_tests::agent::{collection, connection_method_uri, error_body, Behaviour, StubAgent, SUBSCRIPTION};
use sunfish_tests::{
    assert_collection_consistent, assert_error_body, config_for, eventually, free_port, shared_dir, Backend, Client,
    TestServer,
};
use tempfile::TempDir;

use crate::receiver::{message_id, subscribe, Mode, Receiver};

const SOURCES: &str = "/redfish/v1/AggregationService/AggregationSources";
const WAIT: Duration = Duration::from_secs(10);
const ADMIN: (&str, &str) = ("admin", "admin-password-1");
/// What a client POSTs as the type of a new port (the core requires `@odata.type` on create).
const PORT_TYPE: &str = "#Port.v1_10_0.Port";

/// Memory backend, forwarder `agents`, 2 s per agent request, liveness far away (tests that
/// are about liveness shorten it).
pub(crate) fn agg_config() -> (ServerConfig, Option<TempDir>) {
    let (mut cfg, dir) = config_for(Backend::Memory);
    cfg.aggregation.forwarder = "agents".into();
    cfg.aggregation.request_timeout_ms = 2_000;
    cfg.aggregation.crawl_concurrency = 4;
    cfg.aggregation.liveness_interval_ms = 600_000;
    cfg.aggregation.liveness_timeout_ms = 1_200_000;
    (cfg, dir)
}

async fn start_with(tweak: impl FnOnce(&mut ServerConfig)) -> TestServer {
    let (mut cfg, dir) = agg_config();
    tweak(&mut cfg);
    TestServer::start_with(cfg, dir).await
}

async fn start() -> TestServer {
    start_with(|_| {}).await
}

fn link(uri: &str) -> Value {
    json!({"@odata.id": uri})
}

/// A resource at `uri` of `odata_type` (`Port` → `#Port.v1_10_0.Port`), `Id` its last segment,
/// with the members of `extra`.
fn res(uri: &str, odata_type: &str, extra: Value) -> Value {
    let id = uri.rsplit('/').next().unwrap_or_default();
    let mut v = json!({"@odata.id": uri, "@odata.type": format!("#{odata_type}.v1_0_0.{odata_type}"), "Id": id,
        "Name": format!("{odata_type} {id}")});
    if let (Some(o), Value::Object(x)) = (v.as_object_mut(), extra) {
        o.extend(x);
    }
    v
}

/// Registers `agent` under ConnectionMethod `cm`, asserts 200, returns its AggregationSource
/// URI (from the Context Sunfish PATCHed into the agent's subscription).
async fn register(s: &Client, agent: &StubAgent, cm: &str) -> String {
    let (status, body) = agent.register(&s.base, cm).await;
    assert_eq!(status, 200, "registering {}: {body}", agent.base());
    let id = agent.context();
    assert!(!id.is_empty(), "no Context was PATCHed into the agent's subscription");
    format!("{SOURCES}/{id}")
}

/// Uploads `root` from `agent` and asserts 200.
async fn upload(agent: &StubAgent, root: &str) {
    let (status, body) = agent.upload(root).await;
    assert_eq!(status, 200, "upload of {root} from {}: {body}", agent.base());
}

/// Starts a synthetic agent (`fabric`, `switches`, `ports`), registers it as `cm`, uploads its
/// fabric; returns it and its AggregationSource URI.
pub(crate) async fn agent_with_fabric(
    s: &Client,
    cm: &str,
    fabric: &str,
    switches: usize,
    ports: usize,
) -> (StubAgent, String) {
    let agent = StubAgent::synthetic(fabric, switches, ports).await;
    let src = register(s, &agent, cm).await;
    upload(&agent, &format!("/redfish/v1/Fabrics/{fabric}")).await;
    (agent, src)
}

async fn get_ok(c: &Client, uri: &str) -> Value {
    let r = c.get(uri).await;
    assert_eq!(r.status, 200, "GET {uri}: {}", r.body);
    r.body
}

async fn assert_absent(c: &Client, uri: &str) {
    let r = c.get(uri).await;
    assert_eq!(r.status, 404, "{uri} should not exist: {}", r.body);
}

fn managing_agent(v: &Value) -> &str {
    v["Oem"]["Sunfish_RM"]["ManagingAgent"]["@odata.id"].as_str().unwrap_or("")
}

/// Asserts that the resource at `uri` is stored and owned by `source`.
async fn assert_owned(c: &Client, uri: &str, source: &str) -> Value {
    let v = get_ok(c, uri).await;
    assert_eq!(managing_agent(&v), source, "{uri}: ManagingAgent; {v}");
    assert_eq!(
        v["Oem"]["Sunfish_RM"]["@odata.type"], "#SunfishExtensions.v1_0_0.ResourceExtensions",
        "{uri}: Oem.Sunfish_RM; {v}"
    );
    v
}

/// The `@odata.id`s of a JSON array of link objects.
fn ids(v: &Value) -> Vec<String> {
    v.as_array().into_iter().flatten().filter_map(|l| l["@odata.id"].as_str().map(str::to_string)).collect()
}

/// The first four characters of the Id of AggregationSource `source` (the rename prefix).
fn short(source: &str) -> String {
    source.rsplit('/').next().unwrap_or_default().chars().take(4).collect()
}

/// Adds collection `coll` (when the agent lacks it) and `member` in it to `agent`.
fn add(agent: &StubAgent, coll: &str, coll_type: &str, member: Value) {
    if agent.resource(coll).is_none() {
        agent.set_resource(coll, collection(coll, coll_type, &[]));
    }
    let uri = member["@odata.id"].as_str().unwrap_or_else(|| panic!("no @odata.id in {member}")).to_string();
    agent.set_resource(&uri, member);
}

/// Adds switch `name` with ports `ports` (plain DownstreamPorts) under fabric `fabric` (URI).
fn add_switch(agent: &StubAgent, fabric: &str, name: &str, ports: &[&str]) {
    let sw = format!("{fabric}/Switches/{name}");
    add(
        agent,
        &format!("{fabric}/Switches"),
        "SwitchCollection",
        res(&sw, "Switch", json!({"Ports": link(&format!("{sw}/Ports"))})),
    );
    agent.set_resource(&format!("{sw}/Ports"), collection(&format!("{sw}/Ports"), "PortCollection", &[]));
    for p in ports {
        agent.set_resource(
            &format!("{sw}/Ports/{p}"),
            res(&format!("{sw}/Ports/{p}"), "Port", json!({"PortProtocol": "CXL", "PortType": "DownstreamPort"})),
        );
    }
}

/// A CXL boundary port: `PortType`, the link-partner ids, and placeholder `links`.
fn boundary_port(uri: &str, port_type: &str, local: (&str, &str), remote: (&str, &str), links: Value) -> Value {
    res(
        uri,
        "Port",
        json!({"PortProtocol": "CXL", "PortType": port_type,
        "CXL": {"LinkPartnerTransmit": {"LinkPartnerId": local.0, "PortId": local.1},
                "LinkPartnerReceive": {"LinkPartnerId": remote.0, "PortId": remote.1}},
        "Links": links,
        "Oem": {"Sunfish_RM": {"@odata.type": "#SunfishExtensions.v1_0_0.ResourceExtensions",
            "BoundaryComponent": "BoundaryPort"}}}),
    )
}

/// An AggregationSourceDiscovered envelope with `MessageArgs` = `args` announcing
/// ConnectionMethod `cm` (for registrations no well-behaved agent would send).
fn discovered(args: Value, cm: &str) -> Value {
    json!({"@odata.type": "#Event.v1_7_0.Event", "Name": "discovered", "Context": "",
        "Events": [{"MessageId": "ResourceEvent.1.0.AggregationSourceDiscovered", "EventId": "1", "Severity": "OK",
            "MessageArgs": args, "OriginOfCondition": link(&connection_method_uri(cm))}]})
}

async fn source_members(c: &Client) -> Vec<String> {
    assert_collection_consistent(c, SOURCES).await
}

/// A receiver subscribed to every event of `s` at path `/events`.
async fn event_sink(c: &Client) -> Receiver {
    let recv = Receiver::start(Mode::Ok).await;
    subscribe(c, &recv.url("/events"), json!({})).await;
    recv
}

/// Waits until `recv` got an event whose MessageId ends with `key` and whose
/// OriginOfCondition is `origin`.
async fn wait_event(recv: &Receiver, key: &str, origin: &str) -> Value {
    let what = format!("a {key} event for {origin}");
    eventually(&what, WAIT, || {
        let found = recv
            .events_at("/events")
            .into_iter()
            .find(|e| message_id(e).rsplit('.').next() == Some(key) && e["OriginOfCondition"]["@odata.id"] == origin);
        async move { found }
    })
    .await
}

fn basic(user: &str, pass: &str) -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")))
}

// ---------------------------------------------------------------------------------------------
// Registration

/// Registration handshake: while the agent's POST is pending Sunfish GETs the announced
/// ConnectionMethod (single slash) and then PATCHes the agent's `SunfishServer` subscription
/// with exactly `{"Context": <new AggregationSource Id>}`, and nothing else; the answer is 200
/// with a JSON array. The AggregationSource is an `AggregationSource.v1_5_0` with Name, HostName,
/// `Links.ConnectionMethod` (our stored copy) and `Links.ResourcesAccessed` (link objects),
/// Enabled/OK and a LastSeen time stamp.
#[tokio::test]
async fn registration_handshake() {
    let s = start().await;
    let agent = StubAgent::synthetic("F", 1, 1).await;
    let cm = connection_method_uri("Stub");
    let (status, body) = agent.register(&s.base, "Stub").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.is_array(), "answer is not a JSON array: {body}");

    let id = agent.context();
    assert_eq!(id.len(), 36, "AggregationSource Id is not a UUID: {id:?}");
    assert_eq!(id.matches('-').count(), 4, "AggregationSource Id is not a UUID: {id:?}");
    let reqs = agent.requests();
    let seen: Vec<(String, String)> = reqs.iter().map(|r| (r.method.to_string(), r.path.clone())).collect();
    assert_eq!(seen, vec![("GET".to_string(), cm.clone()), ("PATCH".to_string(), SUBSCRIPTION.to_string())]);
    assert_eq!(reqs[1].body, json!({"Context": id}), "the PATCH body");

    let src = format!("{SOURCES}/{id}");
    assert_eq!(source_members(&s).await, vec![src.clone()]);
    let a = get_ok(&s, &src).await;
    assert_eq!(a["@odata.type"], "#AggregationSource.v1_5_0.AggregationSource", "{a}");
    assert_eq!(a["@odata.id"], src.as_str(), "{a}");
    assert_eq!(a["Id"], id.as_str(), "{a}");
    assert_eq!(a["Name"], format!("Agent at {}", agent.base()), "{a}");
    assert_eq!(a["HostName"], agent.base(), "{a}");
    assert_eq!(a["Links"]["ConnectionMethod"], link(&cm), "{a}");
    assert_eq!(a["Links"]["ResourcesAccessed"], json!([]), "nothing uploaded yet: {a}");
    assert_eq!(a["Status"]["State"], "Enabled", "{a}");
    assert_eq!(a["Status"]["Health"], "OK", "{a}");
    let seen_at = a["Oem"]["Sunfish_RM"]["LastSeen"].as_str().unwrap_or_else(|| panic!("no LastSeen: {a}"));
    assert!(
        seen_at.len() >= 20 && seen_at.as_bytes()[4] == b'-' && seen_at.as_bytes()[10] == b'T',
        "LastSeen is not RFC 3339: {seen_at}"
    );

    let stored = get_ok(&s, &cm).await;
    assert_eq!(stored["@odata.id"], cm.as_str(), "{stored}");
    assert_eq!(stored["ConnectionMethodType"], "Redfish", "{stored}");
    let cms = assert_collection_consistent(&s, "/redfish/v1/AggregationService/ConnectionMethods").await;
    assert!(cms.contains(&cm), "{cms:?}");

    // After an upload, ResourcesAccessed links the topmost owned resource.
    upload(&agent, "/redfish/v1/Fabrics/F").await;
    let a = get_ok(&s, &src).await;
    assert_eq!(a["Links"]["ResourcesAccessed"], json!([link("/redfish/v1/Fabrics/F")]), "{a}");
    s.stop().await;
}

/// Registering the same agent again (same HostName and ConnectionMethod) is 200, never 409:
/// the same AggregationSource Id, still one AggregationSource, the Context PATCH repeated, and
/// what the agent had announced is crawled again (a change made meanwhile arrives).
#[tokio::test]
async fn re_registration_is_idempotent() {
    let s = start().await;
    let (agent, src) = agent_with_fabric(&s, "Stub", "F", 1, 1).await;
    let id = agent.context();
    agent.patch_resource("/redfish/v1/Fabrics/F/Switches/S0", &json!({"Name": "renamed meanwhile"}));
    agent.clear_requests();

    let (status, body) = agent.register(&s.base, "Stub").await;
    assert_eq!(status, 200, "second registration: {body}");
    assert_eq!(agent.context(), id, "the Context changed");
    assert_eq!(source_members(&s).await, vec![src.clone()]);
    let patches = agent.requests_to(&Method::PATCH, SUBSCRIPTION);
    assert_eq!(patches.len(), 1, "PATCHes of the subscription");
    assert_eq!(patches[0].body["Context"], id.as_str());
    eventually("the re-crawl of the announced fabric", WAIT, || {
        let crawled = !agent.requests_to(&Method::GET, "/redfish/v1/Fabrics/F").is_empty();
        let c = s.client.clone();
        async move {
            let v = c.get("/redfish/v1/Fabrics/F/Switches/S0").await.body;
            (crawled && v["Name"] == "renamed meanwhile").then_some(())
        }
    })
    .await;
    s.stop().await;
}

/// Registration failures answer without creating an AggregationSource: agent unreachable 502,
/// agent answering 404 for its ConnectionMethod 404, agent too slow 504, a HostName the
/// outbound policy refuses 400, malformed MessageArgs 400.
#[tokio::test]
async fn registration_failures() {
    let s = start_with(|c| c.aggregation.request_timeout_ms = 500).await;

    let dead = format!("http://127.0.0.1:{}", free_port());
    let r = s.post("/EventListener", &discovered(json!(["Redfish", dead]), "Dead")).await;
    assert_eq!(r.status, 502, "unreachable agent: {}", r.body);
    assert_error_body(&r);

    let agent = StubAgent::synthetic("F", 0, 0).await;
    agent.set_behaviour(Method::GET, Behaviour::Reply(404, error_body("ResourceNotFound", "no such method")));
    let (status, body) = agent.register(&s.base, "Missing").await;
    assert_eq!(status, 404, "agent's 404 passed on: {body}");

    agent.set_behaviour(Method::GET, Behaviour::Delay(Duration::from_secs(5)));
    let t0 = Instant::now();
    let (status, body) = agent.register(&s.base, "Slow").await;
    assert_eq!(status, 504, "slow agent: {body}");
    assert!(t0.elapsed() < Duration::from_secs(4), "the timeout was not applied: {:?}", t0.elapsed());

    let r = s.post("/EventListener", &discovered(json!(["Redfish", "http://192.0.2.1:5000"]), "Far")).await;
    assert_eq!(r.status, 400, "HostName outside [outbound] allow: {}", r.body);
    assert_error_body(&r);
    for args in [json!(["Redfish"]), json!([]), json!(["Redfish", "not a url"]), json!(["Redfish", 5])] {
        let r = s.post("/EventListener", &discovered(args.clone(), "Bad")).await;
        assert_eq!(r.status, 400, "MessageArgs {args}: {}", r.body);
        assert_error_body(&r);
    }
    assert!(source_members(&s).await.is_empty(), "a failed registration left an AggregationSource");
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Upload

/// An upload imports everything the root links to, also outside the announced root (an
/// Endpoint's link to `/redfish/v1/Systems/X`), fragments fetched without the fragment, and
/// the ancestors of what it fetches (`Chassis/C1` reached only as the parent of a linked
/// `Thermal`); every import is owned (ManagingAgent, BoundaryComponent "owned"); collections
/// list their members; the agent's service infrastructure is never imported; a dangling link
/// stays as it is; ResourcesAccessed links the topmost owned resources. The 200 comes after
/// the crawl is stored.
#[tokio::test]
async fn upload_imports_linked_resources_outside_the_root() {
    let s = start().await;
    let agent = StubAgent::synthetic("F", 1, 1).await;
    add(
        &agent,
        "/redfish/v1/Systems",
        "ComputerSystemCollection",
        res("/redfish/v1/Systems/X", "ComputerSystem", json!({"SystemType": "Physical"})),
    );
    add(&agent, "/redfish/v1/Chassis", "ChassisCollection", res("/redfish/v1/Chassis/C1", "Chassis", json!({})));
    agent.set_resource("/redfish/v1/Chassis/C1/Thermal", res("/redfish/v1/Chassis/C1/Thermal", "Thermal",
        json!({"Temperatures": [{"@odata.id": "/redfish/v1/Chassis/C1/Thermal#/Temperatures/0", "ReadingCelsius": 40}]})));
    add(
        &agent,
        "/redfish/v1/AccountService/Accounts",
        "ManagerAccountCollection",
        res("/redfish/v1/AccountService/Accounts/agentuser", "ManagerAccount", json!({"UserName": "agentuser"})),
    );
    let e1 = "/redfish/v1/Fabrics/F/Endpoints/E1";
    agent.set_resource(
        e1,
        res(
            e1,
            "Endpoint",
            json!({
        "ConnectedEntities": [{"EntityType": "RootComplex", "EntityLink": link("/redfish/v1/Systems/X")}],
        "Links": {"Ports": [link("/redfish/v1/Fabrics/F/Switches/S0/Ports/P0")],
                  "Zones": [link("/redfish/v1/Fabrics/F/Zones/Missing")]},
        "Oem": {"Contoso": {"Sensor": link("/redfish/v1/Chassis/C1/Thermal#/Temperatures/0"),
                            "Subscription": link(SUBSCRIPTION),
                            "Account": link("/redfish/v1/AccountService/Accounts/agentuser")}}}),
        ),
    );

    let src = register(&s, &agent, "Stub").await;
    upload(&agent, "/redfish/v1/Fabrics/F").await;

    for uri in [
        "/redfish/v1/Fabrics/F",
        "/redfish/v1/Fabrics/F/Switches/S0",
        "/redfish/v1/Fabrics/F/Switches/S0/Ports/P0",
        e1,
        "/redfish/v1/Systems/X",
        "/redfish/v1/Chassis/C1",
        "/redfish/v1/Chassis/C1/Thermal",
    ] {
        let v = assert_owned(&s, uri, &src).await;
        assert_eq!(v["Oem"]["Sunfish_RM"]["BoundaryComponent"], "owned", "{uri}: {v}");
        assert_eq!(v["@odata.id"], uri, "{uri}: {v}");
    }
    assert!(agent.requests().iter().all(|r| !r.path.contains('#')), "a fragment was sent to the agent");
    assert!(!agent.requests_to(&Method::GET, "/redfish/v1/Chassis/C1/Thermal").is_empty());

    let fabrics = assert_collection_consistent(&s, "/redfish/v1/Fabrics").await;
    assert!(fabrics.contains(&"/redfish/v1/Fabrics/F".to_string()), "{fabrics:?}");
    let switches = assert_collection_consistent(&s, "/redfish/v1/Fabrics/F/Switches").await;
    assert_eq!(switches, vec!["/redfish/v1/Fabrics/F/Switches/S0"]);
    let coll = get_ok(&s, "/redfish/v1/Fabrics/F/Switches").await;
    assert_eq!(coll["@odata.type"], "#SwitchCollection.SwitchCollection", "{coll}");
    let ports = assert_collection_consistent(&s, "/redfish/v1/Fabrics/F/Switches/S0/Ports").await;
    assert_eq!(ports, vec!["/redfish/v1/Fabrics/F/Switches/S0/Ports/P0"]);
    assert_eq!(assert_collection_consistent(&s, "/redfish/v1/Fabrics/F/Endpoints").await, vec![e1]);
    assert!(assert_collection_consistent(&s, "/redfish/v1/Systems").await.contains(&"/redfish/v1/Systems/X".into()));
    assert!(assert_collection_consistent(&s, "/redfish/v1/Chassis").await.contains(&"/redfish/v1/Chassis/C1".into()));

    // Links stay; a dangling one stays dangling.
    let e = get_ok(&s, e1).await;
    assert_eq!(e["Links"]["Zones"], json!([link("/redfish/v1/Fabrics/F/Zones/Missing")]), "{e}");
    assert_eq!(e["ConnectedEntities"][0]["EntityLink"], link("/redfish/v1/Systems/X"), "{e}");
    assert_absent(&s, "/redfish/v1/Fabrics/F/Zones/Missing").await;

    // The agent's infrastructure is not ours.
    assert_absent(&s, SUBSCRIPTION).await;
    assert_absent(&s, "/redfish/v1/AccountService/Accounts/agentuser").await;
    let root = get_ok(&s, "/redfish/v1").await;
    assert_eq!(managing_agent(&root), "", "our service root became agent-owned: {root}");

    let a = get_ok(&s, &src).await;
    let accessed: BTreeSet<String> = ids(&a["Links"]["ResourcesAccessed"]).into_iter().collect();
    let expected: BTreeSet<String> =
        ["/redfish/v1/Fabrics/F", "/redfish/v1/Systems/X", "/redfish/v1/Chassis/C1"].map(String::from).into();
    assert_eq!(accessed, expected, "{a}");
    for l in a["Links"]["ResourcesAccessed"].as_array().into_iter().flatten() {
        assert_eq!(l.as_object().map(|o| o.len()), Some(1), "not a plain link object: {l}");
    }
    s.stop().await;
}

/// A second agent's object at an URI another agent holds is stored as
/// `<parent>/Sunfish_<4>_<name>` with its Id renamed and its children under the new path, and
/// every link of that agent to the old URI or below it now points at the new one; the first
/// agent's objects and links are untouched; a re-upload does not rename again.
#[tokio::test]
async fn colliding_uri_is_renamed_and_links_rewritten() {
    let s = start().await;
    let a = StubAgent::synthetic("FA", 0, 0).await;
    add(
        &a,
        "/redfish/v1/Systems",
        "ComputerSystemCollection",
        res("/redfish/v1/Systems/S1", "ComputerSystem", json!({"Name": "A's S1"})),
    );
    a.set_resource(
        "/redfish/v1/Fabrics/FA/Endpoints/E1",
        res(
            "/redfish/v1/Fabrics/FA/Endpoints/E1",
            "Endpoint",
            json!({"ConnectedEntities": [{"EntityLink": link("/redfish/v1/Systems/S1")}]}),
        ),
    );
    let b = StubAgent::synthetic("FB", 0, 0).await;
    add(
        &b,
        "/redfish/v1/Systems",
        "ComputerSystemCollection",
        res(
            "/redfish/v1/Systems/S1",
            "ComputerSystem",
            json!({"Name": "B's S1",
            "Processors": link("/redfish/v1/Systems/S1/Processors")}),
        ),
    );
    add(
        &b,
        "/redfish/v1/Systems/S1/Processors",
        "ProcessorCollection",
        res("/redfish/v1/Systems/S1/Processors/P1", "Processor", json!({})),
    );
    b.set_resource(
        "/redfish/v1/Fabrics/FB/Endpoints/E1",
        res(
            "/redfish/v1/Fabrics/FB/Endpoints/E1",
            "Endpoint",
            json!({"ConnectedEntities": [{"EntityLink": link("/redfish/v1/Systems/S1")}],
               "Links": {"Oem": {"Contoso": {"Cpu": link("/redfish/v1/Systems/S1/Processors/P1")}}}}),
        ),
    );

    let src_a = register(&s, &a, "A").await;
    upload(&a, "/redfish/v1/Fabrics/FA").await;
    let src_b = register(&s, &b, "B").await;
    upload(&b, "/redfish/v1/Fabrics/FB").await;

    let renamed_name = format!("Sunfish_{}_S1", short(&src_b));
    let renamed = format!("/redfish/v1/Systems/{renamed_name}");
    let s1 = assert_owned(&s, "/redfish/v1/Systems/S1", &src_a).await;
    assert_eq!(s1["Name"], "A's S1", "{s1}");
    let r = assert_owned(&s, &renamed, &src_b).await;
    assert_eq!(r["Name"], "B's S1", "{r}");
    assert_eq!(r["Id"], renamed_name.as_str(), "{r}");
    assert_eq!(r["@odata.id"], renamed.as_str(), "{r}");
    assert_eq!(r["Processors"], link(&format!("{renamed}/Processors")), "own child link: {r}");
    let p1 = assert_owned(&s, &format!("{renamed}/Processors/P1"), &src_b).await;
    assert_eq!(p1["@odata.id"], format!("{renamed}/Processors/P1"), "{p1}");
    assert_eq!(p1["Id"], "P1", "a child keeps its Id: {p1}");
    assert_absent(&s, "/redfish/v1/Systems/S1/Processors/P1").await;
    assert_eq!(
        assert_collection_consistent(&s, &format!("{renamed}/Processors")).await,
        vec![format!("{renamed}/Processors/P1")]
    );

    let eb = get_ok(&s, "/redfish/v1/Fabrics/FB/Endpoints/E1").await;
    assert_eq!(eb["ConnectedEntities"][0]["EntityLink"], link(&renamed), "B's link to its S1: {eb}");
    assert_eq!(eb["Links"]["Oem"]["Contoso"]["Cpu"], link(&format!("{renamed}/Processors/P1")), "{eb}");
    let ea = get_ok(&s, "/redfish/v1/Fabrics/FA/Endpoints/E1").await;
    assert_eq!(ea["ConnectedEntities"][0]["EntityLink"], link("/redfish/v1/Systems/S1"), "A's link: {ea}");

    let systems = assert_collection_consistent(&s, "/redfish/v1/Systems").await;
    assert!(systems.contains(&"/redfish/v1/Systems/S1".to_string()) && systems.contains(&renamed), "{systems:?}");

    upload(&b, "/redfish/v1/Fabrics/FB").await;
    let again = assert_collection_consistent(&s, "/redfish/v1/Systems").await;
    assert_eq!(again, systems, "a re-upload changed the Systems collection");
    let eb = get_ok(&s, "/redfish/v1/Fabrics/FB/Endpoints/E1").await;
    assert_eq!(eb["ConnectedEntities"][0]["EntityLink"], link(&renamed), "after re-upload: {eb}");
    s.stop().await;
}

/// Fabrics with the same UUID merge: the fabric stays the first agent's, gains
/// `FabricSharedWith` = [second agent] (no duplicate after a re-upload), and the second agent's
/// switch is stored in the same fabric, owned by it. A fabric with another UUID at the same URI
/// is renamed instead.
#[tokio::test]
async fn fabrics_with_the_same_uuid_merge() {
    let s = start().await;
    let f = "/redfish/v1/Fabrics/CXL";
    let uuid = json!({"UUID": "1af883ee-d4b7-400d-afb2-536d2c2aea31"});
    let a = StubAgent::synthetic("CXL", 0, 0).await;
    a.patch_resource(f, &uuid);
    add_switch(&a, f, "SA", &["P1"]);
    let b = StubAgent::synthetic("CXL", 0, 0).await;
    b.patch_resource(f, &uuid);
    add_switch(&b, f, "SB", &["P1"]);
    let c = StubAgent::synthetic("CXL", 0, 0).await;
    c.patch_resource(f, &json!({"UUID": "00000000-0000-4000-8000-000000000000"}));
    add_switch(&c, f, "SC", &[]);

    let src_a = register(&s, &a, "A").await;
    upload(&a, f).await;
    let src_b = register(&s, &b, "B").await;
    upload(&b, f).await;
    upload(&b, f).await;
    // The owner's re-upload refreshes the fabric and keeps who shares it.
    upload(&a, f).await;

    let fabric = assert_owned(&s, f, &src_a).await;
    assert_eq!(fabric["Oem"]["Sunfish_RM"]["FabricSharedWith"], json!([link(&src_b)]), "{fabric}");
    assert_owned(&s, &format!("{f}/Switches/SA"), &src_a).await;
    assert_owned(&s, &format!("{f}/Switches/SB"), &src_b).await;
    assert_owned(&s, &format!("{f}/Switches/SB/Ports/P1"), &src_b).await;
    let switches = assert_collection_consistent(&s, &format!("{f}/Switches")).await;
    assert_eq!(switches, vec![format!("{f}/Switches/SA"), format!("{f}/Switches/SB")]);
    assert_absent(&s, &format!("/redfish/v1/Fabrics/Sunfish_{}_CXL", short(&src_b))).await;

    let src_c = register(&s, &c, "C").await;
    upload(&c, f).await;
    let renamed = format!("/redfish/v1/Fabrics/Sunfish_{}_CXL", short(&src_c));
    let rc = assert_owned(&s, &renamed, &src_c).await;
    assert_eq!(rc["UUID"], "00000000-0000-4000-8000-000000000000", "{rc}");
    assert_owned(&s, &format!("{renamed}/Switches/SC"), &src_c).await;
    let fabric = get_ok(&s, f).await;
    assert_eq!(fabric["Oem"]["Sunfish_RM"]["FabricSharedWith"], json!([link(&src_b)]), "C joined: {fabric}");
    let fabrics = assert_collection_consistent(&s, "/redfish/v1/Fabrics").await;
    assert_eq!(fabrics, vec![f.to_string(), renamed.clone()]);
    s.stop().await;
}

/// The agents of [`boundary_ports_are_linked_across_agents`]: A has switch SA (InterswitchPort
/// F1) and host H1 (CPU port 1, a DownstreamPort); B has switch SB (InterswitchPort F1 and
/// UpstreamPort U1). SA/F1 ↔ SB/F1 and H1's CPU port ↔ SB/U1 are link partners; every link
/// to the far side is a placeholder.
async fn boundary_agents() -> (StubAgent, StubAgent) {
    let f = "/redfish/v1/Fabrics/CXL";
    let uuid = json!({"UUID": "1af883ee-d4b7-400d-afb2-536d2c2aea31"});
    let a = StubAgent::synthetic("CXL", 0, 0).await;
    a.patch_resource(f, &uuid);
    add_switch(&a, f, "SA", &[]);
    a.set_resource(
        &format!("{f}/Switches/SA/Ports/F1"),
        boundary_port(
            &format!("{f}/Switches/SA/Ports/F1"),
            "InterswitchPort",
            ("SWA", "5"),
            ("SWB", "1"),
            json!({"ConnectedSwitchPorts": [link(&format!("{f}/Switches/DummySB/Ports/F1"))],
               "ConnectedSwitches": [link(&format!("{f}/Switches/DummySB"))]}),
        ),
    );
    let cpu = "/redfish/v1/Systems/H1/Processors/CPU";
    a.set_resource(
        &format!("{f}/Endpoints/I1"),
        res(&format!("{f}/Endpoints/I1"), "Endpoint", json!({"Links": {"Ports": [link(&format!("{cpu}/Ports/1"))]}})),
    );
    add(
        &a,
        "/redfish/v1/Systems",
        "ComputerSystemCollection",
        res("/redfish/v1/Systems/H1", "ComputerSystem", json!({})),
    );
    add(
        &a,
        "/redfish/v1/Systems/H1/Processors",
        "ProcessorCollection",
        res(cpu, "Processor", json!({"Links": {"Endpoints": [link(&format!("{f}/Endpoints/I1"))]}})),
    );
    add(
        &a,
        &format!("{cpu}/Ports"),
        "PortCollection",
        boundary_port(
            &format!("{cpu}/Ports/1"),
            "DownstreamPort",
            ("HOST", "7"),
            ("SWB", "9"),
            json!({"ConnectedSwitchPorts": [link(&format!("{f}/Switches/DummySB/Ports/U1"))],
               "ConnectedSwitches": [link(&format!("{f}/Switches/DummySB"))]}),
        ),
    );

    let b = StubAgent::synthetic("CXL", 0, 0).await;
    b.patch_resource(f, &uuid);
    add_switch(&b, f, "SB", &[]);
    b.set_resource(
        &format!("{f}/Switches/SB/Ports/F1"),
        boundary_port(
            &format!("{f}/Switches/SB/Ports/F1"),
            "InterswitchPort",
            ("SWB", "1"),
            ("SWA", "5"),
            json!({"ConnectedSwitchPorts": [link(&format!("{f}/Switches/DummySA/Ports/F1"))],
               "ConnectedSwitches": [link(&format!("{f}/Switches/DummySA"))]}),
        ),
    );
    b.set_resource(
        &format!("{f}/Switches/SB/Ports/U1"),
        boundary_port(
            &format!("{f}/Switches/SB/Ports/U1"),
            "UpstreamPort",
            ("SWB", "9"),
            ("HOST", "7"),
            json!({"ConnectedPorts": [link("/redfish/v1/Systems/DummyH/Processors/CPU/Ports/1")],
               "AssociatedEndpoints": [link(&format!("{f}/Endpoints/DummyI1"))]}),
        ),
    );
    (a, b)
}

/// Boundary ports of two agents matched by their CXL link partner ids point at each other:
/// Interswitch and Downstream ports get `ConnectedSwitchPorts` = [peer port] and
/// `ConnectedSwitches` = [peer switch], an Upstream port `ConnectedPorts` = [peer] and
/// `AssociatedEndpoints` = [peer host's first endpoint]; the placeholders are kept in
/// `Oem.Sunfish_RM.AgentPeer*URI` and are not overwritten by a re-upload.
#[tokio::test]
async fn boundary_ports_are_linked_across_agents() {
    let s = start().await;
    let f = "/redfish/v1/Fabrics/CXL";
    let (a, b) = boundary_agents().await;
    register(&s, &a, "A").await;
    upload(&a, f).await;
    register(&s, &b, "B").await;
    upload(&b, f).await;

    for round in ["after both uploads", "after a re-upload of A"] {
        let sa = get_ok(&s, &format!("{f}/Switches/SA/Ports/F1")).await;
        assert_eq!(
            sa["Links"]["ConnectedSwitchPorts"],
            json!([link(&format!("{f}/Switches/SB/Ports/F1"))]),
            "{round}: {sa}"
        );
        assert_eq!(sa["Links"]["ConnectedSwitches"], json!([link(&format!("{f}/Switches/SB"))]), "{round}: {sa}");
        assert_eq!(
            sa["Oem"]["Sunfish_RM"]["AgentPeerPortURI"],
            format!("{f}/Switches/DummySB/Ports/F1"),
            "{round}: {sa}"
        );
        assert_eq!(sa["Oem"]["Sunfish_RM"]["AgentPeerSwitchURI"], format!("{f}/Switches/DummySB"), "{round}: {sa}");
        assert_eq!(sa["Oem"]["Sunfish_RM"]["BoundaryComponent"], "BoundaryPort", "{round}: {sa}");

        let sb = get_ok(&s, &format!("{f}/Switches/SB/Ports/F1")).await;
        assert_eq!(
            sb["Links"]["ConnectedSwitchPorts"],
            json!([link(&format!("{f}/Switches/SA/Ports/F1"))]),
            "{round}: {sb}"
        );
        assert_eq!(sb["Links"]["ConnectedSwitches"], json!([link(&format!("{f}/Switches/SA"))]), "{round}: {sb}");
        assert_eq!(
            sb["Oem"]["Sunfish_RM"]["AgentPeerPortURI"],
            format!("{f}/Switches/DummySA/Ports/F1"),
            "{round}: {sb}"
        );

        let u1 = get_ok(&s, &format!("{f}/Switches/SB/Ports/U1")).await;
        let host_port = "/redfish/v1/Systems/H1/Processors/CPU/Ports/1";
        assert_eq!(u1["Links"]["ConnectedPorts"], json!([link(host_port)]), "{round}: {u1}");
        assert_eq!(u1["Links"]["AssociatedEndpoints"], json!([link(&format!("{f}/Endpoints/I1"))]), "{round}: {u1}");
        assert_eq!(
            u1["Oem"]["Sunfish_RM"]["AgentPeerPortURI"], "/redfish/v1/Systems/DummyH/Processors/CPU/Ports/1",
            "{round}: {u1}"
        );
        assert_eq!(u1["Oem"]["Sunfish_RM"]["AgentPeerEndpointURI"], format!("{f}/Endpoints/DummyI1"), "{round}: {u1}");

        let hp = get_ok(&s, host_port).await;
        assert_eq!(
            hp["Links"]["ConnectedSwitchPorts"],
            json!([link(&format!("{f}/Switches/SB/Ports/U1"))]),
            "{round}: {hp}"
        );
        assert_eq!(hp["Links"]["ConnectedSwitches"], json!([link(&format!("{f}/Switches/SB"))]), "{round}: {hp}");

        upload(&a, f).await;
    }
    s.stop().await;
}

/// A write forwarded to a boundary port while the server is still reading that port for an
/// earlier `ResourceChanged` (the older read is set aside: the agent's answer to the write
/// stands) leaves both ports linked; the port used to drop out of the matching, which
/// restored its peer's placeholder links until the next crawl.
#[tokio::test]
async fn a_write_during_a_refresh_keeps_boundary_ports_linked() {
    let s = start().await;
    let f = "/redfish/v1/Fabrics/CXL";
    let (a, b) = boundary_agents().await;
    register(&s, &a, "A").await;
    upload(&a, f).await;
    register(&s, &b, "B").await;
    upload(&b, f).await;
    let sa = format!("{f}/Switches/SA/Ports/F1");
    let sb = format!("{f}/Switches/SB/Ports/F1");
    let linked = json!([link(&sb)]);
    assert_eq!(get_ok(&s, &sa).await["Links"]["ConnectedSwitchPorts"], linked);

    // B's reads take 800 ms; its ResourceChanged for SB/F1 is answered once the read is done.
    b.set_behaviour(Method::GET, Behaviour::Delay(Duration::from_millis(800)));
    let refresh = b.send_event(&s.base, "ResourceEvent.1.0.ResourceChanged", &sb);
    let write = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        s.patch(&sb, &json!({"Name": "written during the refresh"})).await
    };
    let ((status, body), r) = tokio::join!(refresh, write);
    assert!((200..300).contains(&status), "{status} {body}");
    assert_eq!(r.status, 200, "{}", r.body);
    b.reset_behaviours();

    let now = get_ok(&s, &sb).await;
    assert_eq!(now["Name"], "written during the refresh", "{now}");
    assert_eq!(now["Links"]["ConnectedSwitchPorts"], json!([link(&sa)]), "{now}");
    let peer = get_ok(&s, &sa).await;
    assert_eq!(peer["Links"]["ConnectedSwitchPorts"], linked, "the peer lost its link: {peer}");
    assert_eq!(peer["Oem"]["Sunfish_RM"]["AgentPeerPortURI"], format!("{f}/Switches/DummySB/Ports/F1"), "{peer}");
    s.stop().await;
}

/// A re-upload replaces what changed on the agent and deletes what the agent no longer has
/// (with everything below it), leaving the collections consistent.
#[tokio::test]
async fn re_upload_removes_what_the_agent_no_longer_has() {
    let s = start().await;
    let (agent, src) = agent_with_fabric(&s, "Stub", "F", 2, 2).await;
    let sw = "/redfish/v1/Fabrics/F/Switches";
    assert_owned(&s, &format!("{sw}/S1/Ports/P1"), &src).await;
    agent.remove_resource(&format!("{sw}/S1"));
    agent.patch_resource(&format!("{sw}/S0"), &json!({"Name": "S0 v2"}));
    agent.remove_resource(&format!("{sw}/S0/Ports/P1"));

    upload(&agent, "/redfish/v1/Fabrics/F").await;
    for gone in [format!("{sw}/S1"), format!("{sw}/S1/Ports"), format!("{sw}/S1/Ports/P0"), format!("{sw}/S0/Ports/P1")]
    {
        assert_absent(&s, &gone).await;
    }
    assert_eq!(assert_collection_consistent(&s, sw).await, vec![format!("{sw}/S0")]);
    assert_eq!(assert_collection_consistent(&s, &format!("{sw}/S0/Ports")).await, vec![format!("{sw}/S0/Ports/P0")]);
    let s0 = assert_owned(&s, &format!("{sw}/S0"), &src).await;
    assert_eq!(s0["Name"], "S0 v2", "{s0}");
    let a = get_ok(&s, &src).await;
    assert_eq!(a["Links"]["ResourcesAccessed"], json!([link("/redfish/v1/Fabrics/F")]), "{a}");
    s.stop().await;
}

/// The reference's two CXL agents (fabric manager, appliance manager) read in place end in one
/// fabric `/redfish/v1/Fabrics/CXL` owned by the first with `FabricSharedWith` = [second], both
/// switches in it, and CXL1/Ports/F1 ↔ CXL2/Ports/F1 pointing at each other.
#[tokio::test]
async fn cxl_mockup_agents_share_one_fabric() {
    let Some(shared) = shared_dir() else {
        eprintln!("SKIP cxl_mockup_agents_share_one_fabric: the shared mockups are not available");
        return;
    };
    let mockups = shared.join("mockups/sunfish");
    let s = start().await;
    let fm = StubAgent::from_mockup(&mockups.join("fm_agent_Resources")).await;
    let am = StubAgent::from_mockup(&mockups.join("am_agent_Resources")).await;
    let f = "/redfish/v1/Fabrics/CXL";
    let src_fm = register(&s, &fm, "CXL").await;
    upload(&fm, f).await;
    let src_am = register(&s, &am, "CXL2").await;
    upload(&am, f).await;

    let fabric = assert_owned(&s, f, &src_fm).await;
    assert_eq!(fabric["UUID"], "1af883ee-d4b7-400d-afb2-536d2c2aea31", "{fabric}");
    assert_eq!(fabric["Oem"]["Sunfish_RM"]["FabricSharedWith"], json!([link(&src_am)]), "{fabric}");
    assert_eq!(assert_collection_consistent(&s, "/redfish/v1/Fabrics").await, vec![f.to_string()]);
    let switches = assert_collection_consistent(&s, &format!("{f}/Switches")).await;
    assert_eq!(switches, vec![format!("{f}/Switches/CXL1"), format!("{f}/Switches/CXL2")]);
    assert_owned(&s, &format!("{f}/Switches/CXL1"), &src_fm).await;
    assert_owned(&s, &format!("{f}/Switches/CXL2"), &src_am).await;
    assert_owned(&s, "/redfish/v1/Systems/CXL-System1/Processors/CPU/Ports/1", &src_fm).await;
    assert_owned(&s, "/redfish/v1/Chassis/PooledCXLType3/MemoryDomains/1/MemoryChunks/1", &src_am).await;
    let endpoints = assert_collection_consistent(&s, &format!("{f}/Endpoints")).await;
    for e in ["I1", "I2", "I3", "T1", "T4", "VT1.8"] {
        assert!(endpoints.contains(&format!("{f}/Endpoints/{e}")), "{e} missing from {endpoints:?}");
    }

    let p1 = get_ok(&s, &format!("{f}/Switches/CXL1/Ports/F1")).await;
    assert_eq!(p1["Links"]["ConnectedSwitchPorts"], json!([link(&format!("{f}/Switches/CXL2/Ports/F1"))]), "{p1}");
    assert_eq!(p1["Links"]["ConnectedSwitches"], json!([link(&format!("{f}/Switches/CXL2"))]), "{p1}");
    assert_eq!(p1["Oem"]["Sunfish_RM"]["AgentPeerPortURI"], format!("{f}/Switches/DummyCXL2/Ports/F1"), "{p1}");
    let p2 = get_ok(&s, &format!("{f}/Switches/CXL2/Ports/F1")).await;
    assert_eq!(p2["Links"]["ConnectedSwitchPorts"], json!([link(&format!("{f}/Switches/CXL1/Ports/F1"))]), "{p2}");
    assert_eq!(p2["Links"]["ConnectedSwitches"], json!([link(&format!("{f}/Switches/CXL1"))]), "{p2}");
    assert_eq!(p2["Oem"]["Sunfish_RM"]["AgentPeerPortURI"], format!("{f}/Switches/DummyCXL1/Ports/F1"), "{p2}");
    assert_eq!(p2["Oem"]["Sunfish_RM"]["AgentPeerSwitchURI"], format!("{f}/Switches/DummyCXL1"), "{p2}");
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Forwarding

/// A POST into a collection of an agent-owned resource is sent to the agent's collection with
/// our assigned Id and `@odata.id` and without our ownership marks; the agent's reply is stored
/// (owned) and returned 201 with Location.
#[tokio::test]
async fn forwarded_post_creates_on_the_agent() {
    let s = start().await;
    let (agent, src) = agent_with_fabric(&s, "Stub", "F", 1, 1).await;
    let ports = "/redfish/v1/Fabrics/F/Switches/S0/Ports";
    agent.clear_requests();

    let r = s.post(ports, &json!({"@odata.type": PORT_TYPE, "Name": "new port", "PortProtocol": "CXL", "PortType": "InterswitchPort"})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let loc = r.header("location").to_string();
    assert!(loc.starts_with(&format!("{ports}/")), "Location {loc}");
    assert_eq!(r.body["@odata.id"], loc.as_str(), "{}", r.body);
    assert_eq!(managing_agent(&r.body), src, "{}", r.body);

    let posts: Vec<_> = agent.requests().into_iter().filter(|q| q.method == Method::POST).collect();
    assert_eq!(posts.len(), 1, "POSTs the agent received");
    assert_eq!(posts[0].path, ports);
    let sent = &posts[0].body;
    assert_eq!(sent["@odata.id"], loc.as_str(), "{sent}");
    assert_eq!(sent["Id"], loc.rsplit('/').next().unwrap_or_default(), "{sent}");
    assert_eq!(sent["Name"], "new port", "{sent}");
    assert!(sent["Oem"]["Sunfish_RM"].get("ManagingAgent").is_none(), "ManagingAgent sent to the agent: {sent}");
    assert!(agent.resource(&loc).is_some(), "the agent does not have {loc}");

    let v = assert_owned(&s, &loc, &src).await;
    assert_eq!(v["Name"], "new port", "{v}");
    assert!(assert_collection_consistent(&s, ports).await.contains(&loc));
    s.stop().await;
}

/// A PATCH of an agent-owned resource sends the delta to the agent and stores its answer: the
/// merged object (200), a different object the agent chose (stored as the agent says), or 204
/// (our payload applied locally); a PUT sends the whole object (without our ManagingAgent) as
/// a PUT and stores the reply. Ownership stays.
#[tokio::test]
async fn forwarded_patch_and_put() {
    let s = start().await;
    let (agent, src) = agent_with_fabric(&s, "Stub", "F", 1, 2).await;
    let p0 = "/redfish/v1/Fabrics/F/Switches/S0/Ports/P0";
    agent.clear_requests();

    let r = s.patch(p0, &json!({"Name": "renamed"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["Name"], "renamed", "{}", r.body);
    let sent = agent.requests_to(&Method::PATCH, p0);
    assert_eq!(sent.len(), 1, "PATCHes the agent received: {:?}", agent.requests());
    assert_eq!(sent[0].path, p0);
    assert_eq!(sent[0].body, json!({"Name": "renamed"}), "the delta");
    let v = assert_owned(&s, p0, &src).await;
    assert_eq!(v["Name"], "renamed", "{v}");
    assert_eq!(agent.resource(p0).unwrap_or_default()["Name"], "renamed");

    let mut chosen = agent.resource(p0).unwrap_or_default();
    chosen["Name"] = json!("the agent decides");
    chosen["Description"] = json!("set by the agent");
    agent.set_behaviour(Method::PATCH, Behaviour::Reply(200, chosen));
    let r = s.patch(p0, &json!({"Name": "client wants"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = assert_owned(&s, p0, &src).await;
    assert_eq!(v["Name"], "the agent decides", "the agent's reply is what is stored: {v}");
    assert_eq!(v["Description"], "set by the agent", "{v}");

    agent.set_behaviour(Method::PATCH, Behaviour::NoContent);
    let r = s.patch(p0, &json!({"Description": "via 204"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = assert_owned(&s, p0, &src).await;
    assert_eq!(v["Description"], "via 204", "a 204 applies our payload locally: {v}");
    agent.reset_behaviours();

    let p1 = "/redfish/v1/Fabrics/F/Switches/S0/Ports/P1";
    let mut whole = get_ok(&s, p1).await;
    if let Some(o) = whole.as_object_mut() {
        o.remove("@odata.etag");
        o.remove("Links");
    }
    whole["Name"] = json!("replaced");
    whole["PortType"] = json!("UpstreamPort");
    agent.clear_requests();
    let r = s.put(p1, &whole).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let sent = agent.requests_to(&Method::PUT, p1);
    assert_eq!(sent.len(), 1, "PUTs the agent received: {:?}", agent.requests());
    assert_eq!(sent[0].body["Name"], "replaced", "{}", sent[0].body);
    assert!(
        sent[0].body["Oem"]["Sunfish_RM"].get("ManagingAgent").is_none(),
        "ManagingAgent sent to the agent: {}",
        sent[0].body
    );
    let v = assert_owned(&s, p1, &src).await;
    assert_eq!(v["Name"], "replaced", "{v}");
    assert_eq!(v["PortType"], "UpstreamPort", "{v}");
    assert!(v.get("Links").is_none(), "PUT replaced the whole object: {v}");
    assert_eq!(agent.resource(p1).unwrap_or_default()["PortType"], "UpstreamPort");
    s.stop().await;
}

/// A DELETE of an agent-owned resource is sent to the agent; on its 204 our copy is deleted
/// and the collection no longer lists it.
#[tokio::test]
async fn forwarded_delete() {
    let s = start().await;
    let (agent, _src) = agent_with_fabric(&s, "Stub", "F", 1, 2).await;
    let ports = "/redfish/v1/Fabrics/F/Switches/S0/Ports";
    let p1 = format!("{ports}/P1");
    agent.clear_requests();
    let r = s.delete(&p1).await;
    assert!(r.status.is_success(), "DELETE {p1}: {} {}", r.status, r.body);
    assert_eq!(agent.requests_to(&Method::DELETE, &p1).len(), 1, "{:?}", agent.requests());
    assert!(agent.resource(&p1).is_none(), "the agent still has {p1}");
    assert_absent(&s, &p1).await;
    assert_eq!(assert_collection_consistent(&s, ports).await, vec![format!("{ports}/P0")]);
    s.stop().await;
}

/// An agent that refuses a forwarded write (4xx or 5xx) gets that status and its message passed
/// on to the client; nothing is stored or deleted.
#[tokio::test]
async fn agent_refusal_is_passed_on() {
    let s = start().await;
    let (agent, _src) = agent_with_fabric(&s, "Stub", "F", 1, 1).await;
    let ports = "/redfish/v1/Fabrics/F/Switches/S0/Ports";
    let p0 = format!("{ports}/P0");
    let before = get_ok(&s, &p0).await;

    agent.set_behaviour(
        Method::PATCH,
        Behaviour::Reply(400, error_body("PropertyValueNotInList", "agent refuses Name")),
    );
    let r = s.patch(&p0, &json!({"Name": "nope"})).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.to_string().contains("agent refuses Name"), "the agent's message is lost: {}", r.body);

    agent.set_behaviour(Method::POST, Behaviour::Reply(409, error_body("ResourceAlreadyExists", "no more ports")));
    let r = s.post(ports, &json!({"@odata.type": PORT_TYPE, "Name": "extra"})).await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.to_string().contains("no more ports"), "{}", r.body);

    agent.set_behaviour(Method::PUT, Behaviour::Reply(500, error_body("InternalError", "agent broke")));
    let r = s.put(&p0, &json!({"Name": "whole"})).await;
    assert_eq!(r.status, 500, "{}", r.body);

    agent.set_behaviour(Method::DELETE, Behaviour::Reply(403, error_body("InsufficientPrivilege", "keep it")));
    let r = s.delete(&p0).await;
    assert_eq!(r.status, 403, "{}", r.body);

    assert_eq!(get_ok(&s, &p0).await, before, "a refused write changed {p0}");
    assert_eq!(assert_collection_consistent(&s, ports).await, vec![p0.clone()]);
    s.stop().await;
}

/// An agent slower than `request_timeout_ms` makes a forwarded write 504 (after the timeout,
/// not after the agent's answer); nothing is stored.
#[tokio::test]
async fn slow_agent_is_504() {
    let s = start_with(|c| c.aggregation.request_timeout_ms = 500).await;
    let (agent, _src) = agent_with_fabric(&s, "Stub", "F", 1, 1).await;
    let ports = "/redfish/v1/Fabrics/F/Switches/S0/Ports";
    let p0 = format!("{ports}/P0");
    let before = get_ok(&s, &p0).await;
    for m in [Method::PATCH, Method::POST] {
        agent.set_behaviour(m, Behaviour::Delay(Duration::from_secs(5)));
    }
    let t0 = Instant::now();
    let r = s.patch(&p0, &json!({"@odata.type": PORT_TYPE, "Name": "late"})).await;
    assert_eq!(r.status, 504, "{}", r.body);
    assert!(t0.elapsed() < Duration::from_secs(4), "answered after {:?}", t0.elapsed());
    let r = s.post(ports, &json!({"@odata.type": PORT_TYPE, "Name": "late"})).await;
    assert_eq!(r.status, 504, "{}", r.body);
    assert_error_body(&r);
    assert_eq!(get_ok(&s, &p0).await, before);
    assert_eq!(assert_collection_consistent(&s, ports).await, vec![p0.clone()]);
    s.stop().await;
}

/// A write on the resources of an agent that is down is 502; nothing changes.
#[tokio::test]
async fn unreachable_agent_is_502() {
    let s = start().await;
    let (agent, _src) = agent_with_fabric(&s, "Stub", "F", 1, 1).await;
    let ports = "/redfish/v1/Fabrics/F/Switches/S0/Ports";
    let p0 = format!("{ports}/P0");
    let before = get_ok(&s, &p0).await;
    agent.stop().await;
    let r = s.patch(&p0, &json!({"Name": "nobody home"})).await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert_error_body(&r);
    assert_eq!(s.post(ports, &json!({"@odata.type": PORT_TYPE, "Name": "x"})).await.status, 502);
    assert_eq!(s.delete(&p0).await.status, 502);
    assert_eq!(get_ok(&s, &p0).await, before);
    assert_eq!(assert_collection_consistent(&s, ports).await, vec![p0.clone()]);
    s.stop().await;
}

/// Writes below a renamed resource reach the agent in its own namespace: a POST of a new child
/// under `Sunfish_<4>_F` goes to the agent's `F/...` collection with the agent's `@odata.id`,
/// links in a PATCH body are translated there and back, a DELETE goes to the agent's URI; the
/// other agent is not contacted.
#[tokio::test]
async fn forwarding_translates_through_a_renamed_parent() {
    let s = start().await;
    let a = StubAgent::synthetic("F", 1, 1).await;
    a.patch_resource("/redfish/v1/Fabrics/F", &json!({"UUID": "aaaaaaaa-0000-4000-8000-000000000001"}));
    let b = StubAgent::synthetic("F", 1, 1).await;
    b.patch_resource("/redfish/v1/Fabrics/F", &json!({"UUID": "bbbbbbbb-0000-4000-8000-000000000002"}));
    register(&s, &a, "A").await;
    upload(&a, "/redfish/v1/Fabrics/F").await;
    let src_b = register(&s, &b, "B").await;
    upload(&b, "/redfish/v1/Fabrics/F").await;
    let ours = format!("/redfish/v1/Fabrics/Sunfish_{}_F", short(&src_b));
    assert_owned(&s, &ours, &src_b).await;
    a.clear_requests();
    b.clear_requests();

    let r = s
        .post(
            &format!("{ours}/Switches/S0/Ports"),
            &json!({"@odata.type": PORT_TYPE, "Name": "under a renamed parent"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let loc = r.header("location").to_string();
    assert!(loc.starts_with(&format!("{ours}/Switches/S0/Ports/")), "Location {loc}");
    let new_id = loc.rsplit('/').next().unwrap_or_default().to_string();
    let theirs = format!("/redfish/v1/Fabrics/F/Switches/S0/Ports/{new_id}");
    let posts: Vec<_> = b.requests().into_iter().filter(|q| q.method == Method::POST).collect();
    assert_eq!(posts.len(), 1, "{:?}", b.requests());
    assert_eq!(posts[0].path, "/redfish/v1/Fabrics/F/Switches/S0/Ports");
    assert_eq!(posts[0].body["@odata.id"], theirs.as_str(), "{}", posts[0].body);
    assert!(b.resource(&theirs).is_some(), "agent B does not have {theirs}");
    let v = assert_owned(&s, &loc, &src_b).await;
    assert_eq!(v["@odata.id"], loc.as_str(), "{v}");

    let sw = format!("{ours}/Switches/S0");
    let r = s.patch(&sw, &json!({"Links": {"Endpoints": [link(&format!("{ours}/Endpoints/E9"))]}})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let sent = b.requests_to(&Method::PATCH, "/redfish/v1/Fabrics/F/Switches/S0");
    assert_eq!(sent.len(), 1, "{:?}", b.requests());
    assert_eq!(sent[0].body["Links"]["Endpoints"], json!([link("/redfish/v1/Fabrics/F/Endpoints/E9")]));
    let v = get_ok(&s, &sw).await;
    assert_eq!(v["Links"]["Endpoints"], json!([link(&format!("{ours}/Endpoints/E9"))]), "{v}");
    assert_eq!(v["@odata.id"], sw.as_str(), "{v}");

    let r = s.delete(&loc).await;
    assert!(r.status.is_success(), "{} {}", r.status, r.body);
    assert_eq!(b.requests_to(&Method::DELETE, &theirs).len(), 1, "{:?}", b.requests());
    assert_absent(&s, &loc).await;
    assert!(a.requests().iter().all(|q| q.method == Method::GET), "agent A got a write: {:?}", a.requests());
    s.stop().await;
}

/// With `read_through` naming an agent's HostName, a GET of its resources re-reads them from
/// the agent; other agents' resources are served from the store without asking them.
#[tokio::test]
async fn read_through_rereads_listed_agents() {
    let fresh = StubAgent::synthetic("FA", 1, 1).await;
    let cached = StubAgent::synthetic("FB", 1, 1).await;
    let listed = fresh.base().to_string();
    let s = start_with(move |c| c.aggregation.read_through = vec![listed]).await;
    let src_a = register(&s, &fresh, "A").await;
    upload(&fresh, "/redfish/v1/Fabrics/FA").await;
    register(&s, &cached, "B").await;
    upload(&cached, "/redfish/v1/Fabrics/FB").await;

    let pa = "/redfish/v1/Fabrics/FA/Switches/S0/Ports/P0";
    let pb = "/redfish/v1/Fabrics/FB/Switches/S0/Ports/P0";
    fresh.patch_resource(pa, &json!({"Name": "changed on the agent"}));
    cached.patch_resource(pb, &json!({"Name": "changed on the agent"}));
    cached.clear_requests();
    let v = assert_owned(&s, pa, &src_a).await;
    assert_eq!(v["Name"], "changed on the agent", "read-through: {v}");
    let v = get_ok(&s, pb).await;
    assert_eq!(v["Name"], "Port P0", "not listed, served from the store: {v}");
    assert!(cached.requests().is_empty(), "an unlisted agent was asked: {:?}", cached.requests());
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Sync, liveness, unregister

/// Agent events with its Context keep our copy in sync, in our namespace (the agent's fabric
/// is renamed here): ResourceChanged re-reads the object, ResourceRemoved deletes our copy,
/// ResourceCreated imports a new subtree; subscribers get the events with our URIs.
#[tokio::test]
async fn agent_events_sync_our_copy() {
    let s = start().await;
    let recv = event_sink(&s).await;
    let a = StubAgent::synthetic("F", 1, 1).await;
    a.patch_resource("/redfish/v1/Fabrics/F", &json!({"UUID": "aaaaaaaa-0000-4000-8000-000000000001"}));
    register(&s, &a, "A").await;
    upload(&a, "/redfish/v1/Fabrics/F").await;
    let b = StubAgent::synthetic("F", 1, 2).await;
    b.patch_resource("/redfish/v1/Fabrics/F", &json!({"UUID": "bbbbbbbb-0000-4000-8000-000000000002"}));
    let src_b = register(&s, &b, "B").await;
    upload(&b, "/redfish/v1/Fabrics/F").await;
    let ours = format!("/redfish/v1/Fabrics/Sunfish_{}_F", short(&src_b));
    let theirs = "/redfish/v1/Fabrics/F";

    b.patch_resource(&format!("{theirs}/Switches/S0/Ports/P0"), &json!({"Name": "changed"}));
    let (status, body) =
        b.send_event(&s.base, "ResourceEvent.1.0.ResourceChanged", &format!("{theirs}/Switches/S0/Ports/P0")).await;
    assert_eq!(status, 200, "{body}");
    let v = assert_owned(&s, &format!("{ours}/Switches/S0/Ports/P0"), &src_b).await;
    assert_eq!(v["Name"], "changed", "{v}");
    assert_eq!(v["@odata.id"], format!("{ours}/Switches/S0/Ports/P0"), "{v}");
    let va = get_ok(&s, "/redfish/v1/Fabrics/F/Switches/S0/Ports/P0").await;
    assert_eq!(va["Name"], "Port P0", "agent A's port changed: {va}");
    wait_event(&recv, "ResourceChanged", &format!("{ours}/Switches/S0/Ports/P0")).await;

    b.remove_resource(&format!("{theirs}/Switches/S0/Ports/P1"));
    let (status, body) =
        b.send_event(&s.base, "ResourceEvent.1.0.ResourceRemoved", &format!("{theirs}/Switches/S0/Ports/P1")).await;
    assert_eq!(status, 200, "{body}");
    assert_absent(&s, &format!("{ours}/Switches/S0/Ports/P1")).await;
    assert_eq!(
        assert_collection_consistent(&s, &format!("{ours}/Switches/S0/Ports")).await,
        vec![format!("{ours}/Switches/S0/Ports/P0")]
    );
    wait_event(&recv, "ResourceRemoved", &format!("{ours}/Switches/S0/Ports/P1")).await;

    add_switch(&b, theirs, "S5", &["Q1"]);
    let (status, body) =
        b.send_event(&s.base, "ResourceEvent.1.0.ResourceCreated", &format!("{theirs}/Switches/S5")).await;
    assert_eq!(status, 200, "{body}");
    assert_owned(&s, &format!("{ours}/Switches/S5"), &src_b).await;
    assert_owned(&s, &format!("{ours}/Switches/S5/Ports/Q1"), &src_b).await;
    let sws = assert_collection_consistent(&s, &format!("{ours}/Switches")).await;
    assert_eq!(sws, vec![format!("{ours}/Switches/S0"), format!("{ours}/Switches/S5")]);
    s.stop().await;
}

/// An event whose Context is no AggregationSource Id is a plain event: 200, routed to
/// subscribers unchanged, nothing fetched or imported.
#[tokio::test]
async fn events_with_an_unknown_context_are_plain() {
    let s = start().await;
    let recv = event_sink(&s).await;
    let agent = StubAgent::synthetic("F", 1, 1).await;
    register(&s, &agent, "A").await;
    agent.clear_requests();
    let env = json!({"@odata.type": "#Event.v1_7_0.Event", "Name": "e", "Context": "not-an-agent",
        "Events": [{"MessageId": "ResourceEvent.1.0.ResourceCreated", "EventId": "1",
            "OriginOfCondition": link("/redfish/v1/Fabrics/F")}]});
    let r = s.post("/EventListener", &env).await;
    assert_eq!(r.status, 200, "{}", r.body);
    wait_event(&recv, "ResourceCreated", "/redfish/v1/Fabrics/F").await;
    assert_absent(&s, "/redfish/v1/Fabrics/F").await;
    assert!(agent.requests().is_empty(), "the agent was contacted: {:?}", agent.requests());
    s.stop().await;
}

/// Liveness: a silent agent gets `GET /redfish/v1`; one that stays unanswering past
/// `liveness_timeout_ms` is `UnavailableOffline`/`Critical` with a
/// ResourceStatusChangedCritical event; when it answers again it is `Enabled`/`OK`, a
/// ResourceStatusChangedOK event follows, its roots are crawled again and LastSeen moves on.
#[tokio::test]
async fn liveness_marks_agents_down_and_up() {
    let s = start_with(|c| {
        c.aggregation.liveness_interval_ms = 100;
        c.aggregation.liveness_timeout_ms = 500;
        c.aggregation.request_timeout_ms = 300;
    })
    .await;
    let recv = event_sink(&s).await;
    let (agent, src) = agent_with_fabric(&s, "Stub", "F", 1, 1).await;
    eventually("a liveness GET of the agent's service root", WAIT, || {
        let pinged = !agent.requests_to(&Method::GET, "/redfish/v1").is_empty();
        async move { pinged.then_some(()) }
    })
    .await;
    let up = source_in_state(&s, &src, "Enabled").await.unwrap_or_else(|| panic!("agent not Enabled while online"));
    let seen_before = up["Oem"]["Sunfish_RM"]["LastSeen"].clone();

    agent.set_offline(true);
    let down = eventually("UnavailableOffline", WAIT, || source_in_state(&s, &src, "UnavailableOffline")).await;
    assert_eq!(down["Status"]["Health"], "Critical", "{down}");
    wait_event(&recv, "ResourceStatusChangedCritical", &src).await;

    agent.clear_requests();
    agent.set_offline(false);
    let back = eventually("Enabled again", WAIT, || source_in_state(&s, &src, "Enabled")).await;
    assert_eq!(back["Status"]["Health"], "OK", "{back}");
    wait_event(&recv, "ResourceStatusChangedOK", &src).await;
    eventually("the re-crawl after recovery", WAIT, || {
        let crawled = !agent.requests_to(&Method::GET, "/redfish/v1/Fabrics/F").is_empty();
        async move { crawled.then_some(()) }
    })
    .await;
    let now = get_ok(&s, &src).await;
    assert_ne!(now["Oem"]["Sunfish_RM"]["LastSeen"], seen_before, "LastSeen did not move: {now}");
    s.stop().await;
}

/// The AggregationSource at `src` when its `Status.State` is `want`.
async fn source_in_state(c: &Client, src: &str, want: &str) -> Option<Value> {
    let v = c.get(src).await.body;
    (v["Status"]["State"] == want).then_some(v)
}

/// DELETE of an AggregationSource removes every resource the agent owns (also outside its
/// fabric), its ConnectionMethod, and the AggregationSource; subscribers get ResourceRemoved;
/// later events with its old Context are plain events.
#[tokio::test]
async fn unregister_removes_the_agents_resources() {
    let s = start().await;
    let recv = event_sink(&s).await;
    let agent = StubAgent::synthetic("F", 1, 1).await;
    add(
        &agent,
        "/redfish/v1/Systems",
        "ComputerSystemCollection",
        res("/redfish/v1/Systems/X", "ComputerSystem", json!({})),
    );
    agent.set_resource(
        "/redfish/v1/Fabrics/F/Endpoints/E1",
        res(
            "/redfish/v1/Fabrics/F/Endpoints/E1",
            "Endpoint",
            json!({"ConnectedEntities": [{"EntityLink": link("/redfish/v1/Systems/X")}]}),
        ),
    );
    let src = register(&s, &agent, "Stub").await;
    upload(&agent, "/redfish/v1/Fabrics/F").await;
    assert_owned(&s, "/redfish/v1/Systems/X", &src).await;

    let r = s.delete(&src).await;
    assert!(r.status.is_success(), "DELETE {src}: {} {}", r.status, r.body);
    for gone in [
        src.as_str(),
        "/redfish/v1/Fabrics/F",
        "/redfish/v1/Fabrics/F/Switches/S0",
        "/redfish/v1/Fabrics/F/Switches/S0/Ports/P0",
        "/redfish/v1/Fabrics/F/Endpoints/E1",
        "/redfish/v1/Systems/X",
        "/redfish/v1/AggregationService/ConnectionMethods/Stub",
    ] {
        assert_absent(&s, gone).await;
    }
    assert!(source_members(&s).await.is_empty());
    assert!(!assert_collection_consistent(&s, "/redfish/v1/Fabrics").await.contains(&"/redfish/v1/Fabrics/F".into()));
    assert!(!assert_collection_consistent(&s, "/redfish/v1/Systems").await.contains(&"/redfish/v1/Systems/X".into()));
    wait_event(&recv, "ResourceRemoved", "/redfish/v1/Fabrics/F").await;

    agent.clear_requests();
    upload(&agent, "/redfish/v1/Fabrics/F").await;
    assert_absent(&s, "/redfish/v1/Fabrics/F").await;
    assert!(agent.requests().is_empty(), "an unregistered agent was crawled: {:?}", agent.requests());
    s.stop().await;
}

/// Unregistering one of two agents sharing a fabric hands the fabric over to the other (it
/// stays, owned by the other, no longer shared) and removes only the leaving agent's switch; the
/// remaining agent's boundary port gets its placeholders back.
#[tokio::test]
async fn unregister_hands_a_shared_fabric_over() {
    let s = start().await;
    let f = "/redfish/v1/Fabrics/CXL";
    let (a, b) = boundary_agents().await;
    let src_a = register(&s, &a, "A").await;
    upload(&a, f).await;
    let src_b = register(&s, &b, "B").await;
    upload(&b, f).await;

    let r = s.delete(&src_a).await;
    assert!(r.status.is_success(), "DELETE {src_a}: {} {}", r.status, r.body);
    let fabric = assert_owned(&s, f, &src_b).await;
    assert!(
        ids(&fabric["Oem"]["Sunfish_RM"]["FabricSharedWith"]).is_empty(),
        "still shared after the handover: {fabric}"
    );
    assert_absent(&s, &format!("{f}/Switches/SA")).await;
    assert_absent(&s, "/redfish/v1/Systems/H1").await;
    assert_owned(&s, &format!("{f}/Switches/SB"), &src_b).await;
    assert_eq!(assert_collection_consistent(&s, &format!("{f}/Switches")).await, vec![format!("{f}/Switches/SB")]);
    let sb = get_ok(&s, &format!("{f}/Switches/SB/Ports/F1")).await;
    assert_eq!(sb["Links"]["ConnectedSwitchPorts"], json!([link(&format!("{f}/Switches/DummySA/Ports/F1"))]), "{sb}");
    assert_eq!(sb["Links"]["ConnectedSwitches"], json!([link(&format!("{f}/Switches/DummySA"))]), "{sb}");
    let u1 = get_ok(&s, &format!("{f}/Switches/SB/Ports/U1")).await;
    assert_eq!(
        u1["Links"]["ConnectedPorts"],
        json!([link("/redfish/v1/Systems/DummyH/Processors/CPU/Ports/1")]),
        "{u1}"
    );
    assert_eq!(u1["Links"]["AssociatedEndpoints"], json!([link(&format!("{f}/Endpoints/DummyI1"))]), "{u1}");
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Authentication

/// With authentication on, the registration PATCH gives the agent credentials of its own
/// (`HttpHeaders` with Basic for an Operator account `agent-<first 8 of its Id>`); the agent's
/// later upload with that header is accepted, without credentials it is 401, and after the
/// AggregationSource is deleted the account is gone and the header refused.
#[tokio::test]
async fn registration_hands_the_agent_credentials() {
    let s = start_with(|c| {
        c.auth.enabled = true;
        c.auth.admin_user = ADMIN.0.into();
        c.auth.admin_password = Some(ADMIN.1.into());
        c.auth.open_event_listener = false;
    })
    .await;
    let admin = basic(ADMIN.0, ADMIN.1);
    let as_admin = [("Authorization", admin.as_str())];
    let agent = StubAgent::synthetic("F", 1, 1).await;
    // The operator provisions the agent with a bootstrap credential for its registration.
    agent.patch_resource(SUBSCRIPTION, &json!({"HttpHeaders": [{"Authorization": admin}]}));
    let src = register(&s, &agent, "Stub").await;
    let id = agent.context();

    let patch = agent.requests_to(&Method::PATCH, SUBSCRIPTION);
    assert_eq!(patch.len(), 1);
    assert_eq!(patch[0].body["Context"], id.as_str(), "{}", patch[0].body);
    let headers = patch[0].body["HttpHeaders"].as_array().cloned().unwrap_or_default();
    assert_eq!(headers.len(), 1, "HttpHeaders: {}", patch[0].body);
    let auth = headers[0]["Authorization"].as_str().unwrap_or_else(|| panic!("no Authorization in {}", patch[0].body));
    assert_ne!(auth, admin, "the agent got the admin's credentials");
    let decoded = {
        use base64::Engine as _;
        let raw = auth.strip_prefix("Basic ").unwrap_or_else(|| panic!("not Basic: {auth}"));
        let bytes = base64::engine::general_purpose::STANDARD.decode(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
        String::from_utf8(bytes).unwrap_or_default()
    };
    let user = format!("agent-{}", &id[..8]);
    assert!(decoded.starts_with(&format!("{user}:")), "credentials for {decoded:?}, want {user}");
    assert_eq!(agent.event_headers(), vec![("Authorization".to_string(), auth.to_string())]);

    let accounts = s.send(Method::GET, "/redfish/v1/AccountService/Accounts?$expand=.", None, &as_admin).await;
    assert_eq!(accounts.status, 200, "{}", accounts.body);
    let account = accounts.body["Members"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["UserName"] == user.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("no account {user}: {}", accounts.body));
    assert_eq!(account["RoleId"], "Operator", "{account}");

    upload(&agent, "/redfish/v1/Fabrics/F").await;
    let r = s.send(Method::GET, "/redfish/v1/Fabrics/F", None, &as_admin).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(managing_agent(&r.body), src, "{}", r.body);
    let env = json!({"Context": id, "Events": [{"MessageId": "ResourceEvent.1.0.ResourceCreated", "EventId": "9",
        "OriginOfCondition": link("/redfish/v1/Fabrics/F")}]});
    assert_eq!(s.post("/EventListener", &env).await.status, 401, "an upload without credentials");

    let r = s.send(Method::DELETE, &src, None, &as_admin).await;
    assert!(r.status.is_success(), "{} {}", r.status, r.body);
    let (status, body) = agent.upload("/redfish/v1/Fabrics/F").await;
    assert_eq!(status, 401, "the deleted agent's credentials still work: {body}");
    let accounts = s.send(Method::GET, "/redfish/v1/AccountService/Accounts?$expand=.", None, &as_admin).await;
    assert!(
        !accounts.body["Members"].as_array().into_iter().flatten().any(|a| a["UserName"] == user.as_str()),
        "account {user} survived: {}",
        accounts.body
    );
    s.stop().await;
}

/// An agent event about the agent's own services (its SunfishServer subscription) imports
/// nothing: those resources are the agent's business, not its inventory.
#[tokio::test]
async fn agent_events_about_its_own_services_import_nothing() {
    let s = start().await;
    let agent = StubAgent::synthetic("F", 1, 1).await;
    register(&s, &agent, "A").await;
    let sub = "/redfish/v1/EventService/Subscriptions/SunfishServer";
    for message in ["ResourceEvent.1.0.ResourceChanged", "ResourceEvent.1.0.ResourceCreated"] {
        let (status, body) = agent.send_event(&s.client.base, message, sub).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_absent(&s, sub).await;
    s.stop().await;
}

/// The agent's own event about a forwarded write may reach Sunfish before its reply does (the
/// stub sends it first and waits for it to be handled): a forwarded POST whose member the
/// echo's crawl already stored is still answered 201 with the agent's reply stored once, and a
/// forwarded DELETE whose copy the echo already removed is still a success.
#[tokio::test]
async fn echo_events_overtaking_forwarded_replies_change_no_outcome() {
    let s = start().await;
    let (agent, src) = agent_with_fabric(&s, "Stub", "F", 1, 2).await;
    let ports = "/redfish/v1/Fabrics/F/Switches/S0/Ports";
    agent.set_behaviour(Method::POST, Behaviour::EchoFirst);
    agent.set_behaviour(Method::DELETE, Behaviour::EchoFirst);

    let r = s.post(ports, &json!({"@odata.type": PORT_TYPE, "Name": "echoed port"})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let loc = r.header("location").to_string();
    assert_eq!(managing_agent(&r.body), src, "{}", r.body);
    let v = assert_owned(&s, &loc, &src).await;
    assert_eq!(v["Name"], "echoed port", "{v}");
    let members = assert_collection_consistent(&s, ports).await;
    assert_eq!(members.iter().filter(|m| **m == loc).count(), 1, "{members:?}");

    let p1 = format!("{ports}/P1");
    let r = s.delete(&p1).await;
    assert!(r.status.is_success(), "DELETE {p1}: {} {}", r.status, r.body);
    assert!(agent.resource(&p1).is_none(), "the agent still has {p1}");
    assert_absent(&s, &p1).await;
    let mut want = vec![format!("{ports}/P0"), loc.clone()];
    want.sort();
    let mut members = assert_collection_consistent(&s, ports).await;
    members.sort();
    assert_eq!(members, want);
    s.stop().await;
}
