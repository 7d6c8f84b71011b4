//! # sunfish-handler-audit
//!
//! Event handler `audit`: appends every event received at `/EventListener` to a JSON-lines
//! file, one line per event:
//!
//! ```json
//! {"received": "2025-01-31T12:00:00.000Z", "context": "agent-1", "event": {"MessageId": "..."}}
//! ```
//!
//! It is also the worked example of a plugin crate. The five steps, in the order of this file:
//! 1. an options struct, parsed from the plugin's own config table ([`AuditOptions`]);
//! 2. the handler value built from those options ([`AuditHandler`]);
//! 3. the plugin trait, here [`EventHandler`];
//! 4. a `build` function from options to handler (`Ok(None)` leaves the plugin idle);
//! 5. a registration under a name, submitted with [`sunfish_core::register_event_handler!`].
//!
//! A binary then links the crate by naming it once (`use sunfish_handler_audit as _;`), and
//! configuration selects it: `[event_handlers.audit]` with `path = "/var/log/sunfish/events.jsonl"`.
//! Without a `path` the handler is idle.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;
use sunfish_core::{
    Core, EventEnvelope, EventHandler, EventHandlerRegistration, EventRecord, PluginOptions, Result, StartupError,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;
use tracing::warn;

// Step 1: options. `deny_unknown_fields` makes a misspelt key fail at start, naming `audit`.

/// Options of `[event_handlers.audit]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditOptions {
    /// The JSON-lines file to append to (created if missing). Absent: the handler is idle.
    pub path: Option<PathBuf>,
}

// Step 2: the handler.

/// Appends each event it is given to one file.
///
/// The file is opened once, at start, so a path that cannot be written fails start-up instead
/// of every event. It is opened with `O_APPEND`, so each write lands at the current end even
/// if another process appends too (and `logrotate`'s `copytruncate` works). The mutex keeps
/// concurrent envelopes from interleaving parts of their lines.
#[derive(Debug)]
pub struct AuditHandler {
    path: PathBuf,
    file: Mutex<tokio::fs::File>,
}

impl AuditHandler {
    /// Opens (creating if needed) `path` for appending.
    ///
    /// # Errors
    /// The file cannot be opened for appending.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        // `build` is not async, so open with std and hand the file to tokio.
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(AuditHandler { path: path.to_path_buf(), file: Mutex::new(tokio::fs::File::from_std(file)) })
    }
}

// Step 3: the plugin trait.

#[async_trait]
impl EventHandler for AuditHandler {
    async fn handle(&self, _core: &Core, envelope: &EventEnvelope, event: &EventRecord) -> Result<()> {
        let mut line = json!({
            "received": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            "context": envelope.context,
            "event": event.raw,
        })
        .to_string();
        line.push('\n');

        let mut file = self.file.lock().await;
        // `flush` waits until tokio's background write is done, so the line is in the file
        // when the event is acknowledged. No fsync: that would cost a disk sync per event.
        let written = async {
            file.write_all(line.as_bytes()).await?;
            file.flush().await
        };
        // Audit runs after the event's own handlers. Failing here would answer an error for an
        // event that has already been applied (and invite the sender to retry it), so a write
        // failure is logged, not returned.
        if let Err(e) = written.await {
            warn!(path = %self.path.display(), error = %e, "audit: could not append event");
        }
        Ok(())
    }
}

// Step 4: build from options.

/// Builds the handler from `[event_handlers.audit]`; idle (`None`) without a `path`.
fn build(options: PluginOptions) -> std::result::Result<Option<Arc<dyn EventHandler>>, StartupError> {
    let opts: AuditOptions = options.parse()?;
    let Some(path) = opts.path else {
        return Ok(None);
    };
    let handler =
        AuditHandler::open(&path).map_err(|e| options.error(format!("cannot open {}: {e}", path.display())))?;
    Ok(Some(Arc::new(handler)))
}

// Step 5: register under a name, for every MessageId.

sunfish_core::register_event_handler!(EventHandlerRegistration {
    name: "audit",
    description: "appends every event received at /EventListener to a JSON-lines file",
    message_ids: &["*"],
    build,
});

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {

    use serde_json::{json, Value};
    use sunfish_core::registry::{lookup, Registration};
    use sunfish_storage_memory::MemoryBackend;

    use super::*;

    /// Builds `audit` through the registry, as the server does, with `options`.
    fn build_audit(options: Value) -> std::result::Result<Option<Arc<dyn EventHandler>>, StartupError> {
        let reg = lookup::<EventHandlerRegistration>("audit")?;
        (reg.build)(PluginOptions::new(EventHandlerRegistration::KIND, reg.name, options))
    }

    /// The start-up error building `audit` with `options` gives (handlers are not `Debug`).
    fn build_error(options: Value) -> String {
        match build_audit(options) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("build should have failed"),
        }
    }

    /// Every event of an envelope becomes one line with receive time, Context and the event.
    #[tokio::test]
    async fn two_events_two_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let handler = build_audit(json!({"path": path})).unwrap().expect("a path makes it active");
        let reg = lookup::<EventHandlerRegistration>("audit").unwrap();
        let core =
            Core::builder(Arc::new(MemoryBackend::new())).event_handler(reg.name, reg.message_ids, handler).build();

        let created = json!({"MessageId": "ResourceEvent.1.0.ResourceCreated",
            "OriginOfCondition": {"@odata.id": "/redfish/v1/Fabrics/CXL"}});
        let other = json!({"MessageId": "Foo.1.0.SomethingElse", "MessageArgs": ["x"]});
        core.handle_event(json!({"Context": "agent-1", "Events": [created, other]})).await.unwrap();

        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2, "{text}");
        for (line, event) in lines.iter().zip([&created, &other]) {
            assert_eq!(line["context"], json!("agent-1"));
            assert_eq!(&line["event"], event);
            let received = line["received"].as_str().unwrap();
            assert!(received.len() == 24 && received.ends_with('Z'), "{received}");
        }
    }

    /// An envelope without Context is recorded with `"context": null`, after earlier lines.
    #[tokio::test]
    async fn appends_and_records_missing_context() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        std::fs::write(&path, "{\"earlier\":true}\n").unwrap();
        let handler = build_audit(json!({"path": path})).unwrap().unwrap();
        let core = Core::builder(Arc::new(MemoryBackend::new())).build();
        let env = EventEnvelope::parse(json!({"Events": [{"MessageId": "Alert"}]})).unwrap();
        handler.handle(&core, &env, &env.events[0]).await.unwrap();

        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines[0], json!({"earlier": true}));
        assert_eq!(lines[1]["context"], Value::Null);
        assert_eq!(lines[1]["event"], json!({"MessageId": "Alert"}));
    }

    /// Concurrent envelopes never interleave their lines, even lines longer than tokio's
    /// 2 MiB write chunk, which take several `write` calls.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_lines_stay_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let handler = build_audit(json!({"path": path})).unwrap().unwrap();
        let core = Core::builder(Arc::new(MemoryBackend::new())).build();
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let (handler, core) = (handler.clone(), core.clone());
                let big = i.to_string().repeat(2_500_000);
                tokio::spawn(async move {
                    let env = EventEnvelope::parse(json!({"Context": big,
                        "Events": [{"MessageId": "Alert"}]}))
                    .unwrap();
                    handler.handle(&core, &env, &env.events[0]).await.unwrap();
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 8);
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["event"]["MessageId"], "Alert");
        }
    }

    /// Without a path the handler is idle: build succeeds with nothing to register.
    #[test]
    fn no_path_is_idle() {
        assert!(build_audit(Value::Null).unwrap().is_none());
        assert!(build_audit(json!({})).unwrap().is_none());
    }

    /// A misspelt option fails start-up, naming the plugin and the key.
    #[test]
    fn unknown_option_names_audit() {
        let err = build_error(json!({"pth": "/tmp/x"}));
        assert!(err.starts_with("options of event-handler \"audit\": unknown field `pth`"), "{err}");
    }

    /// A path that cannot be opened fails start-up, not every event.
    #[test]
    fn unopenable_path_fails_at_build() {
        let dir = tempfile::tempdir().unwrap();
        let err = build_error(json!({"path": dir.path().join("missing/audit.jsonl")}));
        assert!(err.contains("\"audit\": cannot open"), "{err}");
    }
}
