//! POST into collections: identities, Location, conflicts, refusals (issue 2), and collections
//! created by their first member (issue 3).

use serde_json::{json, Value};
use sunfish_tests::{assert_collection_consistent, assert_error_body, assert_redfish_error, TestServer, BACKENDS};

const SYSTEM: &str = "#ComputerSystem.v1_20_0.ComputerSystem";

fn system(extra: Value) -> Value {
    let mut v = json!({"@odata.type": SYSTEM, "Name": "test system"});
    if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
        o.extend(e);
    }
    v
}

/// Whether `s` is a canonical lowercase UUID version 4 (`xxxxxxxx-xxxx-4xxx-[89ab]xxx-xxxxxxxxxxxx`).
fn is_uuid_v4(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_digit() || ('a'..='f').contains(&c),
        })
        && b[14] == b'4'
        && matches!(b[19], b'8' | b'9' | b'a' | b'b')
}

/// A member POSTed with neither `Id` nor `@odata.id` gets a UUID v4 `Id` and
/// `@odata.id = <collection>/<Id>`; the answer is 201 with `Location` and the stored body, which
/// a GET returns unchanged, and the collection lists it with a matching count.
#[tokio::test]
async fn post_without_identity_assigns_uuid_v4() {
    for b in BACKENDS {
        let s = TestServer::start(b).await;
        let r = s.post("/redfish/v1/Systems", &system(json!({"SerialNumber": "S1"}))).await;
        assert_eq!(r.status, 201, "{b:?}: {}", r.body);
        let id = r.body["Id"].as_str().unwrap_or_default().to_string();
        assert!(is_uuid_v4(&id), "{b:?}: Id {id:?} is not a UUID v4");
        let uri = format!("/redfish/v1/Systems/{id}");
        assert_eq!(r.body["@odata.id"], uri.as_str(), "{b:?}");
        assert_eq!(r.header("location"), uri, "{b:?}");
        assert_eq!(r.body["SerialNumber"], "S1", "{b:?}");
        assert_eq!(r.body["@odata.type"], SYSTEM, "{b:?}");
        let g = s.get(&uri).await;
        assert_eq!(g.status, 200, "{b:?}");
        assert_eq!(g.body, r.body, "{b:?}: GET differs from the POST answer");
        let members = assert_collection_consistent(&s, "/redfish/v1/Systems").await;
        assert_eq!(members, vec![uri], "{b:?}");

        // Two such POSTs get two different Ids.
        let r2 = s.post("/redfish/v1/Systems", &system(json!({}))).await;
        assert_eq!(r2.status, 201, "{b:?}");
        assert_ne!(r2.body["Id"], r.body["Id"], "{b:?}");
        assert_eq!(assert_collection_consistent(&s, "/redfish/v1/Systems").await.len(), 2, "{b:?}");
        s.stop().await;
    }
}

/// A member POSTed with only `Id` gets `@odata.id = <collection>/<Id>` (the reference answered
/// 500); with only a valid `@odata.id` it gets `Id` = its last segment.
#[tokio::test]
async fn post_derives_missing_half_of_identity() {
    for b in BACKENDS {
        let s = TestServer::start(b).await;
        let r = s.post("/redfish/v1/Systems", &system(json!({"Id": "s1"}))).await;
        assert_eq!(r.status, 201, "{b:?}: {}", r.body);
        assert_eq!(r.body["@odata.id"], "/redfish/v1/Systems/s1", "{b:?}");
        assert_eq!(r.header("location"), "/redfish/v1/Systems/s1", "{b:?}");

        let r = s.post("/redfish/v1/Systems", &system(json!({"@odata.id": "/redfish/v1/Systems/s2"}))).await;
        assert_eq!(r.status, 201, "{b:?}: {}", r.body);
        assert_eq!(r.body["Id"], "s2", "{b:?}");
        assert_eq!(r.header("location"), "/redfish/v1/Systems/s2", "{b:?}");
        assert_eq!(s.get("/redfish/v1/Systems/s2").await.body, r.body, "{b:?}");

        let members = assert_collection_consistent(&s, "/redfish/v1/Systems").await;
        assert_eq!(members, ["/redfish/v1/Systems/s1", "/redfish/v1/Systems/s2"], "{b:?}");
        s.stop().await;
    }
}

/// A given `@odata.id` that is not a direct member of the target collection is refused with 400
/// and nothing is stored anywhere (the reference wrote it wherever it pointed).
#[tokio::test]
async fn post_with_foreign_odata_id_is_400() {
    for b in BACKENDS {
        let s = TestServer::start(b).await;
        for (target, odata_id) in [
            ("/redfish/v1/Systems", "/redfish/v1/Elsewhere/e1"),
            ("/redfish/v1/Systems", "/redfish/v1/Systems/a/b"),
            ("/redfish/v1/Systems", "/redfish/v1/Systems"),
            ("/redfish/v1/Systems", "/redfish/v1/Chassis/c1"),
            ("/redfish/v1/Systems", "/elsewhere/Systems/x"),
        ] {
            let r = s.post(target, &system(json!({"@odata.id": odata_id}))).await;
            assert_eq!(r.status, 400, "{b:?}: POST {target} with @odata.id {odata_id}: {}", r.body);
            assert_error_body(&r);
        }
        // An Id contradicting the @odata.id is refused as well.
        let r = s.post("/redfish/v1/Systems", &system(json!({"@odata.id": "/redfish/v1/Systems/x", "Id": "y"}))).await;
        assert_eq!(r.status, 400, "{b:?}: {}", r.body);
        assert_error_body(&r);

        assert_eq!(s.get("/redfish/v1/Elsewhere").await.status, 404, "{b:?}");
        assert_eq!(s.get("/redfish/v1/Elsewhere/e1").await.status, 404, "{b:?}");
        assert_eq!(s.get("/redfish/v1/Systems/x").await.status, 404, "{b:?}");
        assert_eq!(s.get("/redfish/v1/Chassis/c1").await.status, 404, "{b:?}");
        assert!(s.get("/redfish/v1").await.body.get("Elsewhere").is_none(), "{b:?}: root gained a link");
        assert!(assert_collection_consistent(&s, "/redfish/v1/Systems").await.is_empty(), "{b:?}");
        s.stop().await;
    }
}

/// POSTing a member that exists is 409 `ResourceAlreadyExists` and leaves the first one as it was.
#[tokio::test]
async fn duplicate_post_is_409_resource_already_exists() {
    for b in BACKENDS {
        let s = TestServer::start(b).await;
        let first = s.post("/redfish/v1/Systems", &system(json!({"Id": "dup", "Name": "first"}))).await;
        assert_eq!(first.status, 201, "{b:?}");
        let again = s.post("/redfish/v1/Systems", &system(json!({"Id": "dup", "Name": "second"}))).await;
        assert_redfish_error(&again, 409, "ResourceAlreadyExists");
        let again = s
            .post("/redfish/v1/Systems", &system(json!({"@odata.id": "/redfish/v1/Systems/dup", "Name": "third"})))
            .await;
        assert_redfish_error(&again, 409, "ResourceAlreadyExists");
        assert_eq!(s.get("/redfish/v1/Systems/dup").await.body["Name"], "first", "{b:?}");
        assert_eq!(assert_collection_consistent(&s, "/redfish/v1/Systems").await.len(), 1, "{b:?}");
        s.stop().await;
    }
}

/// A payload whose type is a collection is refused with 405 and nothing is written.
#[tokio::test]
async fn posting_a_collection_is_405() {
    for b in BACKENDS {
        let s = TestServer::start(b).await;
        let body = json!({"@odata.type": "#ComputerSystemCollection.ComputerSystemCollection",
            "Id": "Sub", "Name": "nested", "Members": [], "Members@odata.count": 0});
        let r = s.post("/redfish/v1/Systems", &body).await;
        assert_redfish_error(&r, 405, "OperationNotAllowed");
        assert_eq!(s.get("/redfish/v1/Systems/Sub").await.status, 404, "{b:?}");
        // Nor into a collection that does not exist yet.
        let r = s.post("/redfish/v1/Things", &body).await;
        assert_redfish_error(&r, 405, "OperationNotAllowed");
        assert_eq!(s.get("/redfish/v1/Things").await.status, 404, "{b:?}");
        assert!(assert_collection_consistent(&s, "/redfish/v1/Systems").await.is_empty(), "{b:?}");
        s.stop().await;
    }
}

/// A payload without `@odata.type` is 400 `PropertyMissing`.
#[tokio::test]
async fn post_without_odata_type_is_400_property_missing() {
    for b in BACKENDS {
        let s = TestServer::start(b).await;
        let r = s.post("/redfish/v1/Systems", &json!({"Id": "untyped", "Name": "x"})).await;
        assert_redfish_error(&r, 400, "PropertyMissing");
        assert!(r.body.to_string().contains("@odata.type"), "{b:?}: the property is not named: {}", r.body);
        assert_eq!(s.get("/redfish/v1/Systems/untyped").await.status, 404, "{b:?}");
        s.stop().await;
    }
}

/// POSTing into a resource that is not a collection (the service root, a member) is 405.
#[tokio::test]
async fn post_into_non_collection_is_405() {
    for b in BACKENDS {
        let s = TestServer::start(b).await;
        assert_eq!(s.post("/redfish/v1/Systems", &system(json!({"Id": "1"}))).await.status, 201);
        for target in ["/redfish/v1", "/redfish/v1/Systems/1"] {
            let r = s.post(target, &system(json!({"Id": "x"}))).await;
            assert_redfish_error(&r, 405, "OperationNotAllowed");
            assert!(!r.header("allow").is_empty(), "{b:?}: 405 without Allow for {target}");
            assert!(!r.header("allow").contains("POST"), "{b:?}: Allow for {target}: {}", r.header("allow"));
        }
        s.stop().await;
    }
}

/// POSTing a Memory into `/Systems/<id>/Memory`, which does not exist yet, creates the
/// collection with its full `@odata.id`, type `#MemoryCollection.MemoryCollection`, a `Name`,
/// and a link from the system; Members and count stay consistent as members are added.
#[tokio::test]
async fn post_creates_missing_collection_under_existing_resource() {
    for b in BACKENDS {
        let s = TestServer::start(b).await;
        assert_eq!(s.post("/redfish/v1/Systems", &system(json!({"Id": "sys1"}))).await.status, 201);
        let memory = json!({"@odata.type": "#Memory.v1_20_0.Memory", "Id": "DIMM0", "CapacityMiB": 32768});
        let r = s.post("/redfish/v1/Systems/sys1/Memory", &memory).await;
        assert_eq!(r.status, 201, "{b:?}: {}", r.body);
        assert_eq!(r.body["@odata.id"], "/redfish/v1/Systems/sys1/Memory/DIMM0", "{b:?}");
        assert_eq!(r.header("location"), "/redfish/v1/Systems/sys1/Memory/DIMM0", "{b:?}");

        let coll = s.get("/redfish/v1/Systems/sys1/Memory").await;
        assert_eq!(coll.status, 200, "{b:?}");
        assert_eq!(coll.body["@odata.id"], "/redfish/v1/Systems/sys1/Memory", "{b:?}");
        assert_eq!(coll.body["@odata.type"], "#MemoryCollection.MemoryCollection", "{b:?}");
        assert!(coll.body["Name"].as_str().is_some_and(|n| !n.is_empty()), "{b:?}: no Name: {}", coll.body);
        let parent = s.get("/redfish/v1/Systems/sys1").await;
        assert_eq!(parent.body["Memory"], json!({"@odata.id": "/redfish/v1/Systems/sys1/Memory"}), "{b:?}");
        let members = assert_collection_consistent(&s, "/redfish/v1/Systems/sys1/Memory").await;
        assert_eq!(members, ["/redfish/v1/Systems/sys1/Memory/DIMM0"], "{b:?}");

        let mut second = memory.clone();
        second["Id"] = json!("DIMM1");
        assert_eq!(s.post("/redfish/v1/Systems/sys1/Memory", &second).await.status, 201, "{b:?}");
        let members = assert_collection_consistent(&s, "/redfish/v1/Systems/sys1/Memory").await;
        assert_eq!(members.len(), 2, "{b:?}");
        // The system itself is not a collection member anywhere new, and Systems is unchanged.
        assert_eq!(assert_collection_consistent(&s, "/redfish/v1/Systems").await, ["/redfish/v1/Systems/sys1"]);
        s.stop().await;
    }
}

/// A ComputerSystem POSTed into a new collection below some resource makes a
/// `#ComputerSystemCollection.ComputerSystemCollection` (named after the member type, not the
/// path segment as the reference did), with the full `@odata.id`.
#[tokio::test]
async fn new_collection_type_follows_member_type() {
    for b in BACKENDS {
        let s = TestServer::start(b).await;
        let r = s.post("/redfish/v1/Managers/Sunfish/Hosts", &system(json!({"Id": "h1"}))).await;
        assert_eq!(r.status, 201, "{b:?}: {}", r.body);
        let coll = s.get("/redfish/v1/Managers/Sunfish/Hosts").await;
        assert_eq!(coll.status, 200, "{b:?}");
        assert_eq!(coll.body["@odata.type"], "#ComputerSystemCollection.ComputerSystemCollection", "{b:?}");
        assert_eq!(coll.body["@odata.id"], "/redfish/v1/Managers/Sunfish/Hosts", "{b:?}");
        assert_eq!(
            s.get("/redfish/v1/Managers/Sunfish").await.body["Hosts"],
            json!({"@odata.id": "/redfish/v1/Managers/Sunfish/Hosts"}),
            "{b:?}"
        );
        assert_eq!(assert_collection_consistent(&s, "/redfish/v1/Managers/Sunfish/Hosts").await.len(), 1);

        // A new top-level collection is linked from the service root.
        let r = s.post("/redfish/v1/Hosts", &system(json!({"Id": "h2"}))).await;
        assert_eq!(r.status, 201, "{b:?}: {}", r.body);
        assert_eq!(s.get("/redfish/v1").await.body["Hosts"], json!({"@odata.id": "/redfish/v1/Hosts"}), "{b:?}");
        assert_eq!(assert_collection_consistent(&s, "/redfish/v1/Hosts").await, ["/redfish/v1/Hosts/h2"]);
        s.stop().await;
    }
}

/// POSTing into a collection whose parent does not exist is 404 and creates nothing.
#[tokio::test]
async fn post_under_missing_parent_is_404() {
    for b in BACKENDS {
        let s = TestServer::start(b).await;
        let memory = json!({"@odata.type": "#Memory.v1_20_0.Memory", "Id": "DIMM0"});
        let r = s.post("/redfish/v1/Systems/nope/Memory", &memory).await;
        assert_redfish_error(&r, 404, "ResourceNotFound");
        let r = s.post("/redfish/v1/Nowhere/Deeper/Memory", &memory).await;
        assert_redfish_error(&r, 404, "ResourceNotFound");
        for p in ["/redfish/v1/Systems/nope", "/redfish/v1/Systems/nope/Memory", "/redfish/v1/Nowhere"] {
            assert_eq!(s.get(p).await.status, 404, "{b:?}: {p}");
        }
        assert!(assert_collection_consistent(&s, "/redfish/v1/Systems").await.is_empty(), "{b:?}");
        s.stop().await;
    }
}
