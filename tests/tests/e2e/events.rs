//! `POST /EventListener`: envelope validation and dispatch of every event to the handlers
//! (issue 7), proved with the `audit` handler.

use serde_json::{json, Value};
use sunfish_tests::{assert_error_body, assert_redfish_error, config_for, TestServer, BACKENDS};

fn audit_lines(path: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l:?}: {e}"))).collect()
}

/// An envelope with three events (one with a MessageId no handler knows) is answered 200 with
/// a JSON array, and each event reaches the `audit` handler: three lines, in order, each with
/// the envelope's Context and the event as sent.
#[tokio::test]
async fn every_event_of_an_envelope_is_dispatched() {
    for b in BACKENDS {
        let audit_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let audit = audit_dir.path().join("audit.jsonl");
        let (mut cfg, dir) = config_for(b);
        cfg.event_handlers.insert("audit".into(), json!({"path": audit}));
        let s = TestServer::start_with(cfg, dir).await;

        let events = [
            json!({"MessageId": "ResourceEvent.1.0.ResourceChanged", "EventId": "1",
                "OriginOfCondition": {"@odata.id": "/redfish/v1/Systems"}}),
            json!({"MessageId": "Alert.1.0.SomethingNobodyHandles", "EventId": "2", "MessageArgs": ["a", 1]}),
            json!({"MessageId": "TotallyUnknown", "EventId": "3"}),
        ];
        let envelope = json!({"@odata.type": "#Event.v1_7_0.Event", "Id": "env1", "Name": "test",
            "Context": "ctx-1", "Events": events});
        let r = s.post("/EventListener", &envelope).await;
        assert_eq!(r.status, 200, "{b:?}: {}", r.body);
        assert!(r.body.is_array(), "{b:?}: answer is not a JSON array: {}", r.body);
        assert!(r.header("content-type").starts_with("application/json"), "{b:?}");

        let lines = audit_lines(&audit);
        assert_eq!(lines.len(), 3, "{b:?}: {lines:#?}");
        for (line, event) in lines.iter().zip(&events) {
            assert_eq!(&line["event"], event, "{b:?}");
            assert_eq!(line["context"], "ctx-1", "{b:?}");
        }

        // An empty Events list is valid and dispatches nothing.
        let r = s.post("/EventListener", &json!({"Events": []})).await;
        assert_eq!(r.status, 200, "{b:?}: {}", r.body);
        assert!(r.body.is_array(), "{b:?}");
        assert_eq!(audit_lines(&audit).len(), 3, "{b:?}");
        s.stop().await;
    }
}

/// An envelope without `Events` is 400 `PropertyMissing` (the reference answered 500); wrongly
/// typed `Events` or an event without `MessageId` is 400; nothing is dispatched for them; GET
/// on `/EventListener` is 405.
#[tokio::test]
async fn invalid_envelopes_are_400_and_not_dispatched() {
    for b in BACKENDS {
        let audit_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let audit = audit_dir.path().join("audit.jsonl");
        let (mut cfg, dir) = config_for(b);
        cfg.event_handlers.insert("audit".into(), json!({"path": audit}));
        let s = TestServer::start_with(cfg, dir).await;

        let r = s.post("/EventListener", &json!({"Context": "c", "Id": "x"})).await;
        assert_redfish_error(&r, 400, "PropertyMissing");
        assert!(r.body.to_string().contains("Events"), "{b:?}: {}", r.body);
        for bad in [
            json!({"Events": {"MessageId": "Alert"}}),
            json!({"Events": "Alert"}),
            json!({"Events": [{"EventId": "1"}]}),
            json!({"Events": [{"MessageId": 7}]}),
        ] {
            let r = s.post("/EventListener", &bad).await;
            assert_eq!(r.status, 400, "{b:?}: {bad} → {}", r.body);
            assert_error_body(&r);
        }
        assert!(audit_lines(&audit).is_empty(), "{b:?}: a refused envelope was dispatched");
        let r = s.get("/EventListener").await;
        assert_redfish_error(&r, 405, "OperationNotAllowed");
        assert!(r.header("allow").contains("POST"), "{b:?}: Allow {}", r.header("allow"));
        // `/redfish/v1/EventListener` is not the listener: it is an ordinary (missing) resource.
        let r = s.post("/redfish/v1/EventListener", &json!({"Events": []})).await;
        assert_eq!(r.status, 400, "{b:?}: {}", r.body);
        assert!(audit_lines(&audit).is_empty(), "{b:?}");
        s.stop().await;
    }
}
