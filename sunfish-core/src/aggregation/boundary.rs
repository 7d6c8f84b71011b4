//! Boundary ports: joining the two halves of a CXL link that crosses agents.
//!
//! An agent only knows its own side of an inter-switch (or switch-to-host) link. It reports the
//! link's identity as a pair of `{LinkPartnerId, PortId}` ends, `CXL.LinkPartnerTransmit` (its own
//! end) and `CXL.LinkPartnerReceive` (the far end), and, since it cannot know where the other
//! agent's port will live in Sunfish, fills `Links.ConnectedSwitchPorts` and friends with a
//! placeholder such as `.../Switches/DummyCXL2/Ports/F1`. Sunfish sees every agent, so it matches
//! the two sides by those ids and points each port's links at the other's real URI (reference
//! behaviour §5.8).
//!
//! Lifecycle, driven by the aggregation module: [`track`] each stored port of an upload,
//! [`match_ports`] over the tracked ports of all agents, [`redirect`] every port that has a peer and
//! store the result; when an agent goes away, [`restore`] its former peers. Everything here is
//! pure: the caller reads and writes storage and persists the [`BoundaryPort`] records.
//!
//! Fixed against the reference: the agent's placeholders (`Oem.Sunfish_RM.AgentPeer*URI`) are saved
//! once and never overwritten by later redirections (the reference saved the already-redirected
//! URIs on every upload), so [`restore`] can put the agent's own view back.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

const INTERSWITCH: &str = "InterswitchPort";
const UPSTREAM: &str = "UpstreamPort";
const DOWNSTREAM: &str = "DownstreamPort";

const ODATA_ID: &str = "@odata.id";
const OEM: &str = "Oem";
const SUNFISH_RM: &str = "Sunfish_RM";
const LINKS: &str = "Links";

/// Where the agent's placeholder of the peer port is saved.
const PEER_PORT: &str = "AgentPeerPortURI";
/// Where the agent's placeholder of the peer switch is saved.
const PEER_SWITCH: &str = "AgentPeerSwitchURI";
/// Where the agent's placeholder of the peer host's endpoint is saved.
const PEER_ENDPOINT: &str = "AgentPeerEndpointURI";

/// One side of a CXL link as a port reports it (`CXL.LinkPartnerTransmit` = local,
/// `LinkPartnerReceive` = remote).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkEnd {
    /// `LinkPartnerId`: the id of the switch or host at this end (a UUID in the CXL mockups).
    pub partner_id: String,
    /// `PortId` of the port at this end, as that partner numbers it.
    pub port_id: String,
}

/// A boundary port Sunfish tracks (persisted by the lead in the storage backend's kv records as JSON).
///
/// Created by [`track`] with `peer = None`; [`match_ports`] sets `peer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundaryPort {
    /// Our URI of the port.
    pub path: String,
    /// The owning AggregationSource Id.
    pub agent: String,
    /// `InterswitchPort`, `UpstreamPort` or `DownstreamPort`.
    pub port_type: String,
    /// This port's end of the link (`CXL.LinkPartnerTransmit`), when the agent reported a complete one.
    pub local: Option<LinkEnd>,
    /// The far end of the link (`CXL.LinkPartnerReceive`), when the agent reported a complete one.
    pub remote: Option<LinkEnd>,
    /// Our URI of the matched port of another agent.
    pub peer: Option<String>,
}

/// `Some` when `port` (a stored resource at `path`, already with our URIs) is a boundary port:
/// type Port (the `@odata.type` name before the first `.` is `Port`, i.e. `#Port.v1_x_y.Port`),
/// `Oem.Sunfish_RM.BoundaryComponent == "BoundaryPort"`, `PortProtocol == "CXL"`, `PortType` one of
/// `InterswitchPort`, `UpstreamPort`, `DownstreamPort`. Missing fields give `None` (never panics).
///
/// A link end is recorded only when both its `LinkPartnerId` and `PortId` are present and
/// non-empty (strings, or numbers taken as their decimal text): an empty id identifies nothing and
/// would match every other empty one.
pub fn track(path: &str, agent: &str, port: &Value) -> Option<BoundaryPort> {
    if type_name(port)? != "Port"
        || port.pointer("/Oem/Sunfish_RM/BoundaryComponent")?.as_str()? != "BoundaryPort"
        || port.get("PortProtocol")?.as_str()? != "CXL"
    {
        return None;
    }
    let port_type = port.get("PortType")?.as_str()?;
    if ![INTERSWITCH, UPSTREAM, DOWNSTREAM].contains(&port_type) {
        return None;
    }
    Some(BoundaryPort {
        path: path.to_string(),
        agent: agent.to_string(),
        port_type: port_type.to_string(),
        local: link_end(port.pointer("/CXL/LinkPartnerTransmit")),
        remote: link_end(port.pointer("/CXL/LinkPartnerReceive")),
        peer: None,
    })
}

/// Sets `peer` on every pair of ports of DIFFERENT agents that match: `a.local == b.remote` or
/// `a.remote == b.local` (both ends `Some`). Ports without a match get `peer = None`.
/// Deterministic (input order), each port matched at most once (first match wins).
///
/// Every `peer` is recomputed from scratch, so calling this again after an agent's ports were
/// removed from the slice drops the stale peers.
pub fn match_ports(ports: &mut [BoundaryPort]) {
    for port in ports.iter_mut() {
        port.peer = None;
    }
    for i in 0..ports.len() {
        if ports[i].peer.is_some() {
            continue;
        }
        let partner = (i + 1..ports.len())
            .find(|&j| ports[j].peer.is_none() && ports[j].agent != ports[i].agent && linked(&ports[i], &ports[j]));
        if let Some(j) = partner {
            ports[i].peer = Some(ports[j].path.clone());
            ports[j].peer = Some(ports[i].path.clone());
        }
    }
}

/// The port resource with its links pointed at `port.peer` (`None` when nothing changes, or when
/// `port.peer` is `None`, or the resource is not a JSON object, or `port.port_type` is not a boundary type):
/// - Interswitch/Downstream: `Links.ConnectedSwitchPorts = [{"@odata.id": peer}]`,
///   `Links.ConnectedSwitches = [{"@odata.id": peer minus its last two segments}]`;
/// - Upstream: `Links.ConnectedPorts = [{peer}]`, and `Links.AssociatedEndpoints =
///   [peer_host.Links.Endpoints[0]]` when `peer_host` (the resource at peer minus two segments) has one.
///
/// The first element that was replaced (the agent's placeholder, e.g. `.../DummyCXL2/Ports/F1`) is
/// kept ONCE in `Oem.Sunfish_RM.AgentPeerPortURI` / `AgentPeerSwitchURI` / `AgentPeerEndpointURI`
/// (a string URI) and never overwritten on later calls (the reference overwrote them: a bug).
/// Arrays with more than one entry: only the first entry is replaced. An absent or empty array gets
/// the entry (and nothing is saved, since nothing was replaced). An entry whose `@odata.id` already
/// is the target counts as unchanged, so a second call returns `None`. Other fields are untouched;
/// other members of `Oem.Sunfish_RM` (ManagingAgent, BoundaryComponent) are kept.
pub fn redirect(port: &BoundaryPort, resource: &Value, peer_host: Option<&Value>) -> Option<Value> {
    let peer = port.peer.as_deref()?;
    let mut out = resource.clone();
    let obj = out.as_object_mut()?;
    match port.port_type.as_str() {
        INTERSWITCH | DOWNSTREAM => {
            point(obj, "ConnectedSwitchPorts", peer, PEER_PORT);
            if let Some(switch) = owner_of_port(peer) {
                point(obj, "ConnectedSwitches", &switch, PEER_SWITCH);
            }
        }
        UPSTREAM => {
            point(obj, "ConnectedPorts", peer, PEER_PORT);
            let endpoint =
                peer_host.and_then(|host| host.pointer("/Links/Endpoints/0/@odata.id")).and_then(Value::as_str);
            if let Some(endpoint) = endpoint {
                point(obj, "AssociatedEndpoints", endpoint, PEER_ENDPOINT);
            }
        }
        _ => return None,
    }
    (out != *resource).then_some(out)
}

/// Undoes [`redirect`] (when the peer's agent goes away): puts the saved `AgentPeer*` placeholders
/// back as the first entries of the respective link arrays and removes the `AgentPeer*` members.
/// `None` when there is nothing to restore.
///
/// `AgentPeerPortURI` goes back to `Links.ConnectedPorts` when the resource's `PortType` is
/// `UpstreamPort`, else to `Links.ConnectedSwitchPorts`. A link array that had no placeholder when it
/// was redirected (absent or empty then) keeps the peer's entry: nothing records that it was added.
pub fn restore(resource: &Value) -> Option<Value> {
    let saved = resource.pointer("/Oem/Sunfish_RM")?.as_object()?;
    if ![PEER_PORT, PEER_SWITCH, PEER_ENDPOINT].iter().any(|member| saved.contains_key(*member)) {
        return None;
    }
    let port_array = if resource.get("PortType").and_then(Value::as_str) == Some(UPSTREAM) {
        "ConnectedPorts"
    } else {
        "ConnectedSwitchPorts"
    };
    let mut out = resource.clone();
    let obj = out.as_object_mut()?;
    let rm = obj.get_mut(OEM)?.get_mut(SUNFISH_RM)?.as_object_mut()?;
    let mut back = Vec::new();
    for (member, array) in
        [(PEER_PORT, port_array), (PEER_SWITCH, "ConnectedSwitches"), (PEER_ENDPOINT, "AssociatedEndpoints")]
    {
        // A non-string value was not written by `redirect`; it is dropped without restoring anything.
        if let Some(Value::String(uri)) = rm.shift_remove(member) {
            back.push((array, uri));
        }
    }
    for (array, uri) in back {
        put_first(obj, array, &uri);
    }
    Some(out)
}

/// Peer URI -> the URI of its switch/host (drops the last two segments:
/// `/a/b/Switches/X/Ports/F1` -> `/a/b/Switches/X`). `None` if too short (fewer than three
/// segments). Empty segments (doubled or trailing slashes) are ignored; the result starts with `/`.
pub fn owner_of_port(peer: &str) -> Option<String> {
    let segments: Vec<&str> = peer.split('/').filter(|s| !s.is_empty()).collect();
    let keep = segments.len().checked_sub(2).filter(|&n| n > 0)?;
    Some(format!("/{}", segments[..keep].join("/")))
}

/// The type name of a resource: `@odata.type` without `#`, up to the first `.` (reference §1.2).
fn type_name(resource: &Value) -> Option<&str> {
    let odata_type = resource.get("@odata.type")?.as_str()?;
    odata_type.trim_start_matches('#').split('.').next()
}

/// A complete link end, or `None` when either id is missing, empty or not a string/number.
fn link_end(end: Option<&Value>) -> Option<LinkEnd> {
    let end = end?;
    Some(LinkEnd { partner_id: id_text(end.get("LinkPartnerId")?)?, port_id: id_text(end.get("PortId")?)? })
}

/// An id as text: a non-empty string, or a number's decimal form (agents are loose about `PortId`).
fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Whether two ports describe the same link seen from its two sides.
fn linked(a: &BoundaryPort, b: &BoundaryPort) -> bool {
    (a.local.is_some() && a.local == b.remote) || (a.remote.is_some() && a.remote == b.local)
}

/// The object member `key` of `map`, created (or replacing a non-object) when needed.
fn object_member<'a>(map: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    let slot = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut()
}

/// A link object `{"@odata.id": uri}`.
fn link(uri: &str) -> Value {
    let mut map = Map::new();
    map.insert(ODATA_ID.to_string(), Value::String(uri.to_string()));
    Value::Object(map)
}

/// Points the first entry of `Links.<array>` at `target`; the replaced entry's URI is saved in
/// `Oem.Sunfish_RM.<saved_as>` unless something is saved there already.
fn point(resource: &mut Map<String, Value>, array: &str, target: &str, saved_as: &str) {
    let Some(links) = object_member(resource, LINKS) else { return };
    let replaced = match links.get_mut(array).and_then(Value::as_array_mut).and_then(|items| items.first_mut()) {
        Some(first) if first.get(ODATA_ID).and_then(Value::as_str) == Some(target) => return,
        Some(first) => std::mem::replace(first, link(target)).get(ODATA_ID).and_then(Value::as_str).map(str::to_string),
        None => {
            links.insert(array.to_string(), Value::Array(vec![link(target)]));
            None
        }
    };
    if let Some(placeholder) = replaced {
        if let Some(rm) = object_member(resource, OEM).and_then(|oem| object_member(oem, SUNFISH_RM)) {
            rm.entry(saved_as).or_insert(Value::String(placeholder));
        }
    }
}

/// Makes `uri` the first entry of `Links.<array>` (creating the array when absent or empty).
fn put_first(resource: &mut Map<String, Value>, array: &str, uri: &str) {
    let Some(links) = object_member(resource, LINKS) else { return };
    match links.get_mut(array).and_then(Value::as_array_mut).and_then(|items| items.first_mut()) {
        Some(first) => *first = link(uri),
        None => {
            links.insert(array.to_string(), Value::Array(vec![link(uri)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FM: &str = "bfd8ca1e-b5b5-4c0f-a3cf-4d741b85b1fb";
    const AM: &str = "ac14c5f1-0fea-42dd-8a19-f681d9799e50";
    const CXL1_F1: &str = "/redfish/v1/Fabrics/CXL/Switches/CXL1/Ports/F1";
    const CXL2_F1: &str = "/redfish/v1/Fabrics/CXL/Switches/CXL2/Ports/F1";

    /// The fm agent's CXL1 F1 as stored: its file repeats `Links.ConnectedSwitchPorts` (the first
    /// copy holds `DummyCXL2`, the switch), serde_json keeps the last, so there is no ConnectedSwitches.
    fn fm_f1() -> Value {
        json!({
            "@odata.id": CXL1_F1,
            "@odata.type": "#Port.v1_10_0.Port",
            "CXL": {
                "ConnectedDeviceMode": "PBR",
                "LinkPartnerTransmit": {"LinkPartnerId": FM, "PortId": "5"},
                "LinkPartnerReceive": {"LinkPartnerId": AM, "PortId": "1"},
                "MaxLogicalDeviceCount": 8
            },
            "Id": "F1",
            "Links": {
                "ConnectedSwitchPorts": [{"@odata.id": "/redfish/v1/Fabrics/CXL/Switches/DummyCXL2/Ports/F1"}]
            },
            "Metrics": {"@odata.id": "/redfish/v1/Fabrics/CXL/Switches/CXL1/Ports/F1/Metrics"},
            "Name": "CXL Port F1",
            "Oem": {"Sunfish_RM": {
                "@odata.type": "#SunfishExtensions.v1_0_0.ResourceExtensions",
                "ManagingAgent": {"@odata.id": "/redfish/v1/AggregationService/AggregationSources/a"},
                "BoundaryComponent": "BoundaryPort"
            }},
            "PortId": "5",
            "PortProtocol": "CXL",
            "PortType": "InterswitchPort",
            "RemotePortId": "1"
        })
    }

    /// The am agent's CXL2 F1 as stored.
    fn am_f1() -> Value {
        json!({
            "@odata.id": CXL2_F1,
            "@odata.type": "#Port.v1_10_0.Port",
            "CXL": {
                "ConnectedDeviceMode": "PBR",
                "LinkPartnerTransmit": {"LinkPartnerId": AM, "PortId": "1"},
                "LinkPartnerReceive": {"LinkPartnerId": FM, "PortId": "5"},
                "MaxLogicalDeviceCount": 8
            },
            "Id": "F1",
            "Links": {
                "ConnectedSwitches": [{"@odata.id": "/redfish/v1/Fabrics/CXL/Switches/DummyCXL1"}],
                "ConnectedSwitchPorts": [{"@odata.id": "/redfish/v1/Fabrics/CXL/Switches/DummyCXL1/Ports/F1"}]
            },
            "Name": "CXL Port F1",
            "Oem": {"Sunfish_RM": {
                "@odata.type": "#SunfishExtensions.v1_0_0.ResourceExtensions",
                "ManagingAgent": {"@odata.id": "/redfish/v1/AggregationService/AggregationSources/b"},
                "BoundaryComponent": "BoundaryPort"
            }},
            "PortId": "1",
            "PortProtocol": "CXL",
            "PortType": "InterswitchPort",
            "RemotePortId": "5"
        })
    }

    /// A tracked boundary port with the given ends, for matching tests.
    fn bp(path: &str, agent: &str, local: Option<(&str, &str)>, remote: Option<(&str, &str)>) -> BoundaryPort {
        let end = |e: Option<(&str, &str)>| e.map(|(p, i)| LinkEnd { partner_id: p.into(), port_id: i.into() });
        BoundaryPort {
            path: path.into(),
            agent: agent.into(),
            port_type: INTERSWITCH.into(),
            local: end(local),
            remote: end(remote),
            peer: None,
        }
    }

    /// A minimal boundary port resource of the given type with the given links.
    fn port_resource(port_type: &str, links: Value) -> Value {
        json!({
            "@odata.id": "/redfish/v1/Fabrics/F/Switches/S/Ports/P",
            "@odata.type": "#Port.v1_10_0.Port",
            "Id": "P",
            "Links": links,
            "Oem": {"Sunfish_RM": {"BoundaryComponent": "BoundaryPort"}},
            "PortProtocol": "CXL",
            "PortType": port_type
        })
    }

    /// The mockups' CXL1 F1 (fm agent) and CXL2 F1 (am agent) are matched and point at each other,
    /// the agents' placeholders are saved, a second redirect changes nothing, and restore undoes it.
    #[test]
    fn real_cxl_pair_links_both_ways() {
        let (fm, am) = (fm_f1(), am_f1());
        let mut ports = vec![track(CXL1_F1, "a", &fm).unwrap(), track(CXL2_F1, "b", &am).unwrap()];
        assert_eq!(ports[0].local, Some(LinkEnd { partner_id: FM.into(), port_id: "5".into() }));
        assert_eq!(ports[0].remote, Some(LinkEnd { partner_id: AM.into(), port_id: "1".into() }));
        match_ports(&mut ports);
        assert_eq!(ports[0].peer.as_deref(), Some(CXL2_F1));
        assert_eq!(ports[1].peer.as_deref(), Some(CXL1_F1));

        let fm2 = redirect(&ports[0], &fm, None).unwrap();
        assert_eq!(fm2["Links"]["ConnectedSwitchPorts"], json!([{"@odata.id": CXL2_F1}]));
        assert_eq!(fm2["Links"]["ConnectedSwitches"], json!([{"@odata.id": "/redfish/v1/Fabrics/CXL/Switches/CXL2"}]));
        let rm = &fm2["Oem"]["Sunfish_RM"];
        assert_eq!(rm[PEER_PORT], json!("/redfish/v1/Fabrics/CXL/Switches/DummyCXL2/Ports/F1"));
        assert!(rm.get(PEER_SWITCH).is_none(), "nothing was replaced in the absent ConnectedSwitches");
        assert_eq!(rm["BoundaryComponent"], json!("BoundaryPort"));
        assert_eq!(rm["ManagingAgent"], fm["Oem"]["Sunfish_RM"]["ManagingAgent"]);
        assert_eq!(fm2["CXL"], fm["CXL"]);
        assert_eq!(fm2["Metrics"], fm["Metrics"]);

        let am2 = redirect(&ports[1], &am, None).unwrap();
        assert_eq!(am2["Links"]["ConnectedSwitchPorts"], json!([{"@odata.id": CXL1_F1}]));
        assert_eq!(am2["Links"]["ConnectedSwitches"], json!([{"@odata.id": "/redfish/v1/Fabrics/CXL/Switches/CXL1"}]));
        let rm = &am2["Oem"]["Sunfish_RM"];
        assert_eq!(rm[PEER_PORT], json!("/redfish/v1/Fabrics/CXL/Switches/DummyCXL1/Ports/F1"));
        assert_eq!(rm[PEER_SWITCH], json!("/redfish/v1/Fabrics/CXL/Switches/DummyCXL1"));

        assert_eq!(redirect(&ports[0], &fm2, None), None);
        assert_eq!(redirect(&ports[1], &am2, None), None);

        let am3 = restore(&am2).unwrap();
        assert_eq!(am3, am);
        assert_eq!(restore(&am3), None);
        let fm3 = restore(&fm2).unwrap();
        assert_eq!(fm3["Links"]["ConnectedSwitchPorts"], fm["Links"]["ConnectedSwitchPorts"]);
        assert_eq!(fm3["Oem"], fm["Oem"]);
    }

    /// Two ports of the same agent never match, even with complementary link ends.
    #[test]
    fn same_agent_ports_never_match() {
        let mut ports =
            vec![bp("/p/1", "a", Some((FM, "5")), Some((AM, "1"))), bp("/p/2", "a", Some((AM, "1")), Some((FM, "5")))];
        match_ports(&mut ports);
        assert!(ports.iter().all(|p| p.peer.is_none()));
    }

    /// One matching end is enough, in either direction (local == other's remote, or remote == other's local).
    #[test]
    fn one_sided_ends_match() {
        let mut ports = vec![bp("/p/1", "a", Some((FM, "7")), None), bp("/p/2", "b", None, Some((FM, "7")))];
        match_ports(&mut ports);
        assert_eq!(ports[0].peer.as_deref(), Some("/p/2"));
        let mut ports = vec![bp("/p/1", "a", None, Some((AM, "3"))), bp("/p/2", "b", Some((AM, "3")), None)];
        match_ports(&mut ports);
        assert_eq!(ports[1].peer.as_deref(), Some("/p/1"));
    }

    /// Ports with no ends, or ends that agree only on the local side, do not match.
    #[test]
    fn missing_or_equal_local_ends_do_not_match() {
        let mut ports = vec![
            bp("/p/1", "a", None, None),
            bp("/p/2", "b", None, None),
            bp("/p/3", "a", Some((FM, "7")), None),
            bp("/p/4", "b", Some((FM, "7")), None),
        ];
        match_ports(&mut ports);
        assert!(ports.iter().all(|p| p.peer.is_none()));
    }

    /// Each port gets at most one peer, the first candidate in input order; stale peers are cleared.
    #[test]
    fn first_match_wins_and_stale_peers_cleared() {
        let mut ports = vec![
            bp("/p/1", "a", Some((FM, "5")), Some((AM, "1"))),
            bp("/p/2", "b", Some((AM, "1")), Some((FM, "5"))),
            bp("/p/3", "c", Some((AM, "1")), Some((FM, "5"))),
            bp("/p/4", "c", Some((FM, "9")), Some((AM, "9"))),
        ];
        ports[3].peer = Some("/gone".into());
        match_ports(&mut ports);
        let peers: Vec<_> = ports.iter().map(|p| p.peer.as_deref()).collect();
        assert_eq!(peers, [Some("/p/2"), Some("/p/1"), None, None]);
    }

    /// Only CXL Ports marked BoundaryPort with a boundary PortType are tracked; anything else, including
    /// objects with missing or mistyped fields, is ignored without panicking.
    #[test]
    fn non_boundary_ports_not_tracked() {
        let good = fm_f1();
        assert!(track(CXL1_F1, "a", &good).is_some());
        let mut owned = good.clone();
        owned["Oem"]["Sunfish_RM"]["BoundaryComponent"] = json!("owned");
        let mut pcie = good.clone();
        pcie["PortProtocol"] = json!("PCIe");
        let mut mgmt = good.clone();
        mgmt["PortType"] = json!("ManagementPort");
        let mut network_port = good.clone();
        network_port["@odata.type"] = json!("#NetworkPort.v1_4_0.NetworkPort");
        let mut collection = good.clone();
        collection["@odata.type"] = json!("#PortCollection.PortCollection");
        let mut no_type = good.clone();
        no_type.as_object_mut().unwrap().remove("PortType");
        let mut no_oem = good.clone();
        no_oem.as_object_mut().unwrap().remove("Oem");
        let mut numeric_protocol = good.clone();
        numeric_protocol["PortProtocol"] = json!(3);
        for port in [
            owned,
            pcie,
            mgmt,
            network_port,
            collection,
            no_type,
            no_oem,
            numeric_protocol,
            json!(null),
            json!([1]),
            json!({}),
        ] {
            assert_eq!(track(CXL1_F1, "a", &port), None, "{port}");
        }
    }

    /// Incomplete or empty link ends are not recorded; numeric ids are taken as text.
    #[test]
    fn link_ends_need_both_ids() {
        let mut port = fm_f1();
        port["CXL"]["LinkPartnerTransmit"] = json!({"LinkPartnerId": FM});
        port["CXL"]["LinkPartnerReceive"] = json!({"LinkPartnerId": AM, "PortId": 1});
        let tracked = track(CXL1_F1, "a", &port).unwrap();
        assert_eq!(tracked.local, None);
        assert_eq!(tracked.remote, Some(LinkEnd { partner_id: AM.into(), port_id: "1".into() }));
        port["CXL"] = json!({"LinkPartnerTransmit": {"LinkPartnerId": "", "PortId": "5"}});
        let tracked = track(CXL1_F1, "a", &port).unwrap();
        assert_eq!((tracked.local, tracked.remote), (None, None));
    }

    /// An Upstream port points ConnectedPorts at the peer and AssociatedEndpoints at the peer host's
    /// first endpoint, saving both placeholders; restore puts them back.
    #[test]
    fn upstream_port_uses_peer_host_endpoint() {
        let peer = "/redfish/v1/Systems/S1/Processors/CPU/Ports/1";
        let resource = port_resource(
            UPSTREAM,
            json!({
                "AssociatedEndpoints": [{"@odata.id": "/redfish/v1/Fabrics/CXL/Endpoints/I1"}],
                "ConnectedPorts": [{"@odata.id": "/redfish/v1/Systems/Dummy/Processors/CPU/Ports/1"}]
            }),
        );
        let mut port = track("/redfish/v1/Fabrics/F/Switches/S/Ports/P", "a", &resource).unwrap();
        port.peer = Some(peer.into());
        let host = json!({"Links": {"Endpoints": [{"@odata.id": "/redfish/v1/Fabrics/CXL/Endpoints/H1"}, {"@odata.id": "/x"}]}});
        let out = redirect(&port, &resource, Some(&host)).unwrap();
        assert_eq!(out["Links"]["ConnectedPorts"], json!([{"@odata.id": peer}]));
        assert_eq!(out["Links"]["AssociatedEndpoints"], json!([{"@odata.id": "/redfish/v1/Fabrics/CXL/Endpoints/H1"}]));
        assert!(out["Links"].get("ConnectedSwitchPorts").is_none());
        let rm = &out["Oem"]["Sunfish_RM"];
        assert_eq!(rm[PEER_PORT], json!("/redfish/v1/Systems/Dummy/Processors/CPU/Ports/1"));
        assert_eq!(rm[PEER_ENDPOINT], json!("/redfish/v1/Fabrics/CXL/Endpoints/I1"));
        assert_eq!(redirect(&port, &out, Some(&host)), None);
        assert_eq!(restore(&out).unwrap(), resource);
    }

    /// Without a peer host endpoint an Upstream port only gets ConnectedPorts; AssociatedEndpoints stays.
    #[test]
    fn upstream_without_host_endpoint_keeps_endpoints() {
        let resource = port_resource(UPSTREAM, json!({"AssociatedEndpoints": [{"@odata.id": "/e/I1"}]}));
        let mut port = track("/redfish/v1/Fabrics/F/Switches/S/Ports/P", "a", &resource).unwrap();
        port.peer = Some("/redfish/v1/Systems/S1/Processors/CPU/Ports/1".into());
        for host in [None, Some(json!({"Links": {"Endpoints": []}})), Some(json!({"Id": "CPU"}))] {
            let out = redirect(&port, &resource, host.as_ref()).unwrap();
            assert_eq!(out["Links"]["AssociatedEndpoints"], json!([{"@odata.id": "/e/I1"}]));
            assert_eq!(out["Links"]["ConnectedPorts"], json!([{"@odata.id": port.peer.as_deref().unwrap()}]));
            assert!(out["Oem"]["Sunfish_RM"].get(PEER_PORT).is_none(), "nothing replaced, nothing saved");
        }
    }

    /// The saved placeholder is the agent's original: a later redirect to another peer keeps it.
    #[test]
    fn placeholder_saved_once() {
        let resource = port_resource(DOWNSTREAM, json!({"ConnectedSwitchPorts": [{"@odata.id": "/dummy/Ports/1"}]}));
        let mut port = track("/redfish/v1/Fabrics/F/Switches/S/Ports/P", "a", &resource).unwrap();
        port.peer = Some("/f/Switches/A/Ports/1".into());
        let first = redirect(&port, &resource, None).unwrap();
        port.peer = Some("/f/Switches/B/Ports/2".into());
        let second = redirect(&port, &first, None).unwrap();
        assert_eq!(second["Links"]["ConnectedSwitchPorts"], json!([{"@odata.id": "/f/Switches/B/Ports/2"}]));
        assert_eq!(second["Links"]["ConnectedSwitches"], json!([{"@odata.id": "/f/Switches/B"}]));
        assert_eq!(second["Oem"]["Sunfish_RM"][PEER_PORT], json!("/dummy/Ports/1"));
        assert_eq!(
            restore(&second).unwrap()["Links"]["ConnectedSwitchPorts"],
            json!([{"@odata.id": "/dummy/Ports/1"}])
        );
    }

    /// Only the first entry of a longer array is replaced; an absent or empty array gets the entry.
    #[test]
    fn arrays_first_entry_or_created() {
        let resource = port_resource(
            INTERSWITCH,
            json!({"ConnectedSwitchPorts": [{"@odata.id": "/dummy/P1"}, {"@odata.id": "/other/P2"}], "ConnectedSwitches": []}),
        );
        let mut port = track("/redfish/v1/Fabrics/F/Switches/S/Ports/P", "a", &resource).unwrap();
        port.peer = Some("/f/Switches/X/Ports/F1".into());
        let out = redirect(&port, &resource, None).unwrap();
        assert_eq!(
            out["Links"]["ConnectedSwitchPorts"],
            json!([{"@odata.id": "/f/Switches/X/Ports/F1"}, {"@odata.id": "/other/P2"}])
        );
        assert_eq!(out["Links"]["ConnectedSwitches"], json!([{"@odata.id": "/f/Switches/X"}]));
        let mut bare = resource.clone();
        bare.as_object_mut().unwrap().remove("Links");
        bare.as_object_mut().unwrap().remove("Oem");
        let out = redirect(&port, &bare, None).unwrap();
        assert_eq!(out["Links"]["ConnectedSwitchPorts"], json!([{"@odata.id": "/f/Switches/X/Ports/F1"}]));
        assert!(out.get("Oem").is_none(), "nothing replaced, so no Oem is created");
    }

    /// Redirect does nothing without a peer, for a non-object resource, or for a non-boundary type.
    #[test]
    fn redirect_needs_a_peer() {
        let resource = port_resource(INTERSWITCH, json!({}));
        let mut port = track("/redfish/v1/Fabrics/F/Switches/S/Ports/P", "a", &resource).unwrap();
        assert_eq!(redirect(&port, &resource, None), None);
        port.peer = Some("/f/Switches/X/Ports/F1".into());
        assert_eq!(redirect(&port, &json!("x"), None), None);
        port.port_type = "ManagementPort".into();
        assert_eq!(redirect(&port, &resource, None), None);
    }

    /// Restore returns None when no placeholder was saved, and drops a non-string AgentPeer* member.
    #[test]
    fn restore_only_with_placeholders() {
        assert_eq!(restore(&fm_f1()), None);
        assert_eq!(restore(&json!({"Id": "x"})), None);
        assert_eq!(restore(&json!(null)), None);
        let mut odd = fm_f1();
        odd["Oem"]["Sunfish_RM"][PEER_SWITCH] = json!(null);
        let out = restore(&odd).unwrap();
        assert_eq!(out, fm_f1());
    }

    /// The owner of a port URI drops its last two segments; too-short URIs give None.
    #[test]
    fn owner_of_port_drops_two_segments() {
        assert_eq!(owner_of_port("/a/b/Switches/X/Ports/F1").as_deref(), Some("/a/b/Switches/X"));
        assert_eq!(owner_of_port(CXL2_F1).as_deref(), Some("/redfish/v1/Fabrics/CXL/Switches/CXL2"));
        assert_eq!(owner_of_port("/x/Ports/F1/").as_deref(), Some("/x"));
        assert_eq!(owner_of_port("/Ports/F1"), None);
        assert_eq!(owner_of_port("F1"), None);
        assert_eq!(owner_of_port(""), None);
    }

    /// BoundaryPort survives a JSON round trip (it is persisted as JSON), missing options read as None.
    #[test]
    fn boundary_port_json_round_trip() {
        let mut port = bp("/p/1", "a", Some((FM, "5")), None);
        port.peer = Some("/p/2".into());
        let text = serde_json::to_string(&port).unwrap();
        assert_eq!(serde_json::from_str::<BoundaryPort>(&text).unwrap(), port);
        let minimal: BoundaryPort =
            serde_json::from_value(json!({"path": "/p", "agent": "a", "port_type": "UpstreamPort"})).unwrap();
        assert_eq!((minimal.local, minimal.remote, minimal.peer), (None, None, None));
    }
}
