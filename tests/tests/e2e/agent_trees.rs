//! `sunfish-agent` over the project's own CXL trees (`sunfish-agent/mockups`), with the real
//! binaries on 127.0.0.1: the merged fabric and a forwarded Connection, and the request forms
//! of the reference server (SUNFISH-BEHAVIOUR.md §5.3) beside ours, sent to an agent directly.

use serde_json::{json, Value};
use sunfish_tests::fleet::{
    assert_merged_fabric, both_agents, get_ok, managing_agent, memory_server, Agent, CxlTrees, Server, CONNECTIONS,
    FABRIC, SOURCES,
};
use sunfish_tests::{assert_collection_consistent, free_port};

/// Two agents over our trees give one fabric `CXL` (our UUID) owned by the fabric manager and
/// `FabricSharedWith` the appliance, with the boundary ports CXL1/F1 ↔ CXL2/F1 linked; a
/// Connection created and patched through the server reaches the fabric manager's
/// tree, and the server stores what that agent answered.
#[tokio::test]
async fn our_trees_share_one_fabric_and_forward_connections() {
    let t = CxlTrees::ours();
    let s = Server::start(free_port(), &memory_server()).await;
    let [(fm, src_fm), (am, src_am)] = both_agents(&s, &t, &[]).await;
    assert_merged_fabric(&s, &t, &src_fm, &src_am, &src_fm, &src_am).await;
    assert_eq!(assert_collection_consistent(&s, SOURCES).await.len(), 2);

    let r = s.post(CONNECTIONS, &t.connection("host 1 to target 1")).await;
    assert_eq!(r.status, 201, "{}\nfm log:\n{}", r.body, fm.log());
    let uri = r.header("location").to_string();
    assert_eq!(managing_agent(&r.body), src_fm, "{}", r.body);
    let on_agent = get_ok(&fm, &uri).await;
    assert_eq!(on_agent["Name"], "host 1 to target 1", "{on_agent}");
    assert_eq!(on_agent["Links"]["TargetEndpoints"], json!([{"@odata.id": t.endpoints[1]}]), "{on_agent}");
    assert_eq!(am.get(&uri).await.status, 404, "the create reached the appliance");
    assert_eq!(get_ok(&s, &uri).await["Name"], "host 1 to target 1");

    let r = s.patch(&uri, &json!({"Name": "renamed"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(get_ok(&fm, &uri).await["Name"], "renamed");

    // A late echo of the create or the patch, whose crawl read the member before the DELETE,
    // must not bring it back: crawls older than a forwarded write leave its path alone.
    let r = s.delete(&uri).await;
    assert!(r.status.is_success(), "{} {}", r.status, r.body);
    assert_eq!(fm.get(&uri).await.status, 404, "the agent still has {uri}");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(s.get(&uri).await.status, 404, "the server still has {uri}");
    assert!(!assert_collection_consistent(&s, CONNECTIONS).await.contains(&uri));
    assert_merged_fabric(&s, &t, &src_fm, &src_am, &src_fm, &src_am).await;

    // A PATCH of a boundary port goes to its agent, which answers with its dummy peer; the
    // answer and the stored port keep the real peer (found by the console's fabric picture).
    let port = format!("{FABRIC}/Switches/CXL2/Ports/F1");
    let r = s.patch(&port, &json!({"Name": "uplink"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let real = json!([{"@odata.id": format!("{FABRIC}/Switches/CXL1/Ports/F1")}]);
    assert_eq!(r.body["Links"]["ConnectedSwitchPorts"], real, "{}", r.body);
    assert!(r.body["Oem"]["Sunfish_RM"]["AgentPeerPortURI"].is_string(), "{}", r.body);
    let stored = get_ok(&s, &port).await;
    assert_eq!(stored["Name"], "uplink");
    assert_eq!(stored["Links"]["ConnectedSwitchPorts"], real, "{stored}");
    assert_eq!(get_ok(&am, &port).await["Name"], "uplink", "the agent applied it");
    assert_merged_fabric(&s, &t, &src_fm, &src_am, &src_fm, &src_am).await;
}

/// The agent accepts the reference server's forwarded forms as well as ours: `//redfish/v1/...`
/// (double slash) for every method, a POST at the new member's URI with the assigned `Id` and
/// `@odata.id` in the body, a PUT sent as a PATCH carrying the whole object, and a PATCH delta
/// that carries `@odata.id`; each reaches the tree as the plain Redfish form does.
#[tokio::test]
async fn agent_accepts_the_reference_request_forms() {
    let t = CxlTrees::ours();
    let a = Agent::start(&t.fm, "", t.fm_name, &[]).await;
    let switch = format!("{FABRIC}/Switches/CXL1");

    // GET with a double slash.
    let r = a.get(&format!("/{switch}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["@odata.id"], switch.as_str());

    // The reference's create: POST at the member's URI (double slash), identity in the body.
    let member = format!("{CONNECTIONS}/RefConn");
    let mut body = t.connection("reference form");
    body["Id"] = json!("RefConn");
    body["@odata.id"] = json!(member);
    let r = a.post(&format!("/{member}"), &body).await;
    assert!(r.status.is_success(), "{} {}\nlog:\n{}", r.status, r.body, a.log());
    assert_eq!(r.body["@odata.id"], member.as_str(), "{}", r.body);
    // Ours: POST at the collection.
    let r = a.post(CONNECTIONS, &t.connection("our form")).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let ours = r.header("location").to_string();
    let mut members = assert_collection_consistent(&a, CONNECTIONS).await;
    members.sort();
    let mut want = vec![member.clone(), ours.clone()];
    want.sort();
    assert_eq!(members, want);

    // A PATCH delta carrying `@odata.id` (the reference's), then ours without it.
    let r = a.patch(&format!("/{member}"), &json!({"@odata.id": member, "Name": "patched"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(get_ok(&a, &member).await["Name"], "patched");
    let r = a.patch(&ours, &json!({"Name": "patched too"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(get_ok(&a, &ours).await["Name"], "patched too");

    // The reference's replace: a PATCH with the whole object (identity, type, links, Oem).
    let mut whole: Value = get_ok(&a, &switch).await;
    whole["Name"] = json!("replaced by PATCH");
    let r = a.patch(&format!("/{switch}"), &whole).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(get_ok(&a, &switch).await, whole);
    // Ours: PUT with the whole object.
    whole["Name"] = json!("replaced by PUT");
    let r = a.put(&switch, &whole).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(get_ok(&a, &switch).await, whole);

    // DELETE in both spellings.
    for uri in [format!("/{member}"), ours.clone()] {
        let r = a.delete(&uri).await;
        assert!(r.status.is_success(), "DELETE {uri}: {} {}", r.status, r.body);
    }
    assert_eq!(a.get(&member).await.status, 404);
    assert_eq!(a.get(&ours).await.status, 404);
    assert_eq!(assert_collection_consistent(&a, CONNECTIONS).await, Vec::<String>::new());
}
