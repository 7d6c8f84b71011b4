//! Error answers: always a Redfish error body with a Base registry MessageId, never a dropped
//! connection or a 500 for a bad request (issue 6).

use reqwest::Method;
use serde_json::json;
use sunfish_tests::{assert_error_body, assert_redfish_error, config_for, raw_head, raw_request, TestServer, BACKENDS};

const SYSTEM: &str = "#ComputerSystem.v1_20_0.ComputerSystem";

/// Unknown resources and unknown routes are 404 with a Redfish error body (`ResourceNotFound`
/// below the service root), sent as JSON with `OData-Version`.
#[tokio::test]
async fn not_found_is_redfish_error() {
    for b in BACKENDS {
        let s = TestServer::start(b).await;
        let r = s.get("/redfish/v1/Systems/none").await;
        assert_redfish_error(&r, 404, "ResourceNotFound");
        assert!(r.header("content-type").starts_with("application/json"), "{b:?}");
        assert_eq!(r.header("OData-Version"), "4.0", "{b:?}");
        assert_eq!(r.body["error"]["code"], r.body["error"]["@Message.ExtendedInfo"][0]["MessageId"], "{b:?}");
        for p in ["/nothing/here", "/redfish/v2", "/redfish/v1x"] {
            let r = s.get(p).await;
            assert_eq!(r.status, 404, "{b:?}: {p}");
            assert_error_body(&r);
        }
        s.stop().await;
    }
}

/// A body declared as something other than JSON is 415; malformed JSON (declared JSON or
/// undeclared), an empty body and a non-object body are 400 `MalformedJSON`; on POST, PATCH,
/// PUT and `/EventListener` alike.
#[tokio::test]
async fn non_json_bodies_are_415_or_400() {
    for b in BACKENDS {
        let s = TestServer::start(b).await;
        assert_eq!(s.post("/redfish/v1/Systems", &json!({"@odata.type": SYSTEM, "Id": "e1"})).await.status, 201);
        let targets = [
            (Method::POST, "/redfish/v1/Systems"),
            (Method::PATCH, "/redfish/v1/Systems/e1"),
            (Method::PUT, "/redfish/v1/Systems/e1"),
            (Method::POST, "/EventListener"),
        ];
        for (method, path) in targets {
            let what = format!("{b:?} {method} {path}");
            for ct in ["text/plain", "application/x-www-form-urlencoded", "application/xml"] {
                let r = s.send_bytes(method.clone(), path, b"Name=x".to_vec(), Some(ct)).await;
                assert_eq!(r.status, 415, "{what} as {ct}: {}", r.body);
                assert_error_body(&r);
            }
            for (body, ct) in [
                (&b"{\"Name\": "[..], Some("application/json")),
                (b"not json at all", Some("application/json")),
                (b"{'single': 'quotes'}", None),
                (b"", Some("application/json")),
                (b"[1, 2, 3]", Some("application/json")),
                (b"\"a string\"", Some("application/json")),
            ] {
                let r = s.send_bytes(method.clone(), path, body.to_vec(), ct).await;
                let shown = String::from_utf8_lossy(body);
                assert_redfish_error(&r, 400, "MalformedJSON");
                assert_eq!(r.status, 400, "{what} with {shown:?}");
            }
        }
        assert_eq!(s.get("/redfish/v1/Systems/e1").await.body["Id"], "e1", "{b:?}");
        s.stop().await;
    }
}

/// A body larger than `server.body_limit` is 413 with a Redfish error, whether it declares its
/// length or arrives chunked; a body at the limit is accepted.
#[tokio::test]
async fn oversize_body_is_413() {
    for b in BACKENDS {
        let (mut cfg, dir) = config_for(b);
        cfg.server.body_limit = 4096;
        let s = TestServer::start_with(cfg, dir).await;
        let big = json!({"@odata.type": SYSTEM, "Id": "big", "Pad": "x".repeat(8000)});
        let r = s.post("/redfish/v1/Systems", &big).await;
        assert_redfish_error(&r, 413, "PayloadTooLarge");
        let r = s.patch("/redfish/v1", &json!({"Pad": "x".repeat(8000)})).await;
        assert_eq!(r.status, 413, "{b:?}");
        let r = s.post("/EventListener", &json!({"Events": [], "Pad": "x".repeat(8000)})).await;
        assert_eq!(r.status, 413, "{b:?}");

        // Chunked, no Content-Length: the limit still holds.
        let chunk = "x".repeat(3000);
        let mut req = b"POST /redfish/v1/Systems HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
            Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
        for part in [format!("{{\"@odata.type\":\"{SYSTEM}\",\"Id\":\"chunked\",\"Pad\":\""), chunk.clone(), chunk] {
            req.extend(format!("{:x}\r\n{part}\r\n", part.len()).into_bytes());
        }
        req.extend(b"1\r\n\"\r\n1\r\n}\r\n0\r\n\r\n");
        let raw = raw_request(s.addr(), &req).await;
        assert_eq!(raw.status, 413, "{b:?}: {}", raw.text);

        // Exactly at the limit is fine.
        let head = format!("{{\"@odata.type\":\"{SYSTEM}\",\"Id\":\"fits\",\"Pad\":\"");
        let pad = 4096 - head.len() - 2;
        let body = format!("{head}{}\"}}", "x".repeat(pad));
        assert_eq!(body.len(), 4096);
        let r = s.send_bytes(Method::POST, "/redfish/v1/Systems", body.into_bytes(), Some("application/json")).await;
        assert_eq!(r.status, 201, "{b:?}: {}", r.body);
        for p in ["/redfish/v1/Systems/big", "/redfish/v1/Systems/chunked"] {
            assert_eq!(s.get(p).await.status, 404, "{b:?}: {p}");
        }
        s.stop().await;
    }
}

/// The default `server.body_limit` (1 MiB) is enforced: one byte more is 413.
#[tokio::test]
async fn default_body_limit_is_one_mib() {
    let s = TestServer::start(sunfish_tests::Backend::Memory).await;
    let head = format!("{{\"@odata.type\":\"{SYSTEM}\",\"Id\":\"m\",\"Pad\":\"");
    let make = |len: usize| format!("{head}{}\"}}", "x".repeat(len - head.len() - 2)).into_bytes();
    let r = s.send_bytes(Method::POST, "/redfish/v1/Systems", make(1024 * 1024 + 1), Some("application/json")).await;
    assert_redfish_error(&r, 413, "PayloadTooLarge");
    let r = s.send_bytes(Method::POST, "/redfish/v1/Systems", make(1024 * 1024), Some("application/json")).await;
    assert_eq!(r.status, 201, "{}", r.body);
    s.stop().await;
}

/// Bad requests sent by hand (methods the service does not implement, garbage bodies, bodies
/// on GET) get a status line and a Redfish error body, never a dropped connection or a 500.
#[tokio::test]
async fn bad_requests_never_drop_the_connection() {
    for b in BACKENDS {
        let s = TestServer::start(b).await;
        let cases: Vec<Vec<u8>> = vec![
            raw_head("POST", "/redfish/v1/Systems", b"\x00\x01\x02\xff"),
            raw_head("PATCH", "/redfish/v1/Systems", b"{"),
            raw_head("OPTIONSX", "/redfish/v1", b""),
            raw_head("TRACE", "/redfish/v1", b""),
            raw_head("POST", "/redfish", b"{}"),
            raw_head("DELETE", "/EventListener", b""),
            raw_head("POST", "/redfish/v1/Systems?x=1", b"{}"),
        ];
        for req in cases {
            let shown = String::from_utf8_lossy(&req[..req.len().min(40)]).into_owned();
            let raw = raw_request(s.addr(), &req).await;
            assert!((400..500).contains(&raw.status), "{b:?}: {shown:?} → {}", raw.text);
            let body = raw.text.split("\r\n\r\n").nth(1).unwrap_or_default();
            let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
            assert!(v["error"]["@Message.ExtendedInfo"][0]["MessageId"].is_string(), "{b:?}: {shown:?} → {body}");
        }
        // The server is still fine.
        assert_eq!(s.get("/redfish/v1").await.status, 200, "{b:?}");
        s.stop().await;
    }
}
