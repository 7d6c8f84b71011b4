//! The TaskService (issue "EventService"): a write that an object handler reports as still
//! running becomes a task. This binary registers the object handler `test-slow` (Volumes) whose
//! work waits on a gate the test holds, reports progress through it, and ends when the test
//! says so, successfully or with an error.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};
use sunfish_core::tasks::{Pending, Progress};
use sunfish_core::{
    Core, Error, ObjectHandler, ObjectHandlerRegistration, Operation, PluginOptions, StartupError, WriteOp,
};
use sunfish_server::ServerConfig;
use sunfish_tests::{assert_error_body, Backend, Client, TestServer, BACKENDS};
use tempfile::TempDir;
use tokio::sync::{mpsc, oneshot};

use crate::receiver::{fast_config, get_until, message_id, subscribe, Mode, Receiver};

const WAIT: Duration = Duration::from_secs(15);
const MONITORS: &str = "/redfish/v1/TaskService/TaskMonitors/";
const TASKS: &str = "/redfish/v1/TaskService/Tasks/";

/// What the test tells the work of one gated create.
enum Step {
    Progress(u8),
    Finish,
    Fail(String),
}

/// Gates by the path of the Volume being created; `before` takes the receiving end.
static GATES: LazyLock<Mutex<HashMap<String, mpsc::UnboundedReceiver<Step>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn gates() -> std::sync::MutexGuard<'static, HashMap<String, mpsc::UnboundedReceiver<Step>>> {
    GATES.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The test's end of a gate.
struct Gate(mpsc::UnboundedSender<Step>);

impl Gate {
    /// A gate for the create of `path` (register it before the POST).
    fn new(path: &str) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        gates().insert(path.to_string(), rx);
        Gate(tx)
    }

    fn send(&self, step: Step) {
        assert!(self.0.send(step).is_ok(), "the gated work is gone");
    }
}

/// Makes creates of gated Volumes pending: the work runs until the gate says finish or fail.
struct SlowVolumes;

#[async_trait]
impl ObjectHandler for SlowVolumes {
    fn resource_types(&self) -> &[&str] {
        &["Volume"]
    }

    async fn before(&self, _core: &Core, op: &mut WriteOp) -> sunfish_core::Result<()> {
        if op.operation != Operation::Create {
            return Ok(());
        }
        let Some(mut steps) = gates().remove(op.path.as_str()) else { return Ok(()) };
        // The Progress handle comes with the Pending that wraps the work, so hand it in.
        let (give, take) = oneshot::channel::<Progress>();
        let work = async move {
            let progress = take.await.map_err(|_| Error::Internal { message: "no progress handle".into() })?;
            loop {
                match steps.recv().await {
                    Some(Step::Progress(p)) => progress.set(p),
                    Some(Step::Finish) => return Ok(None),
                    Some(Step::Fail(reason)) => return Err(Error::property_value("CapacityBytes", reason)),
                    // The test let go of the gate: stay running.
                    None => std::future::pending::<()>().await,
                }
            }
        };
        let (pending, progress) = Pending::new(work);
        let _ = give.send(progress);
        op.pending = Some(pending);
        Ok(())
    }
}

fn build(_: PluginOptions) -> Result<Arc<dyn ObjectHandler>, StartupError> {
    Ok(Arc::new(SlowVolumes))
}

sunfish_core::register_object_handler!(ObjectHandlerRegistration {
    name: "test-slow",
    description: "e2e tests: Volume creates wait on a gate the test holds",
    build,
});

fn config(backend: Backend) -> (ServerConfig, Option<TempDir>) {
    let (mut cfg, dir) = fast_config(backend);
    cfg.objects.handlers = vec!["test-slow".into()];
    (cfg, dir)
}

/// Creates `/Systems/1/Storage/S1`; returns its Volumes collection URI.
async fn storage(c: &Client) -> String {
    let r = c
        .post(
            "/redfish/v1/Systems",
            &json!({"@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem", "Id": "1", "Name": "one"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = c
        .post(
            "/redfish/v1/Systems/1/Storage",
            &json!({"@odata.type": "#Storage.v1_15_0.Storage", "Id": "S1", "Name": "s"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    "/redfish/v1/Systems/1/Storage/S1/Volumes".into()
}

fn volume(id: &str) -> Value {
    json!({"@odata.type": "#Volume.v1_10_0.Volume", "Id": id, "Name": id, "CapacityBytes": 1_073_741_824u64})
}

/// POSTs a gated Volume; asserts 202 with `Location` (the task monitor) and `Retry-After`;
/// returns the monitor and task URIs.
async fn start_task(c: &Client, volumes: &str, id: &str) -> (String, String) {
    let r = c.post(volumes, &volume(id)).await;
    assert_eq!(r.status, 202, "a pending create is 202: {}", r.body);
    let monitor = r.header("location").to_string();
    assert!(monitor.starts_with(MONITORS), "Location is not a task monitor: {monitor:?}");
    let retry = r.header("retry-after");
    assert!(retry.parse::<u64>().is_ok(), "Retry-After {retry:?}");
    let task = format!("{TASKS}{}", monitor.trim_start_matches(MONITORS));
    (monitor, task)
}

/// A create that an object handler leaves pending is answered 202 with a task monitor and
/// `Retry-After`; the monitor answers 202 while it runs and the task shows `Running` and its
/// `PercentComplete`; once the work ends the monitor answers 201 with the Volume and its
/// `Location`, the task is `Completed` at 100, and a subscriber got TaskStarted and
/// TaskCompletedOK about the task.
#[tokio::test]
async fn a_pending_create_runs_as_a_task() {
    for b in BACKENDS {
        let (cfg, dir) = config(b);
        let s = TestServer::start_with(cfg, dir).await;
        let rx = Receiver::start(Mode::Ok).await;
        subscribe(&s, &rx.url("/tasks"), json!({"RegistryPrefixes": ["TaskEvent"]})).await;
        let volumes = storage(&s).await;
        let vol = format!("{volumes}/V-{b:?}");
        let gate = Gate::new(&vol);
        let (monitor, task) = start_task(&s, &volumes, &format!("V-{b:?}")).await;

        let m = s.get(&monitor).await;
        assert_eq!(m.status, 202, "{b:?}: the monitor of a running task: {}", m.body);
        let t = s.get(&task).await;
        assert_eq!(t.status, 200, "{b:?}: {}", t.body);
        assert_eq!(t.body["TaskState"], "Running", "{b:?}: {}", t.body);
        assert!(t.body["PercentComplete"].is_u64(), "{b:?}: {}", t.body);

        gate.send(Step::Progress(40));
        get_until(&s, &task, "PercentComplete 40", WAIT, |r| r.body["PercentComplete"] == 40).await;
        assert_eq!(s.get(&task).await.body["TaskState"], "Running", "{b:?}");
        assert_eq!(s.get(&monitor).await.status, 202, "{b:?}");

        gate.send(Step::Finish);
        let m = get_until(&s, &monitor, "the monitor's final answer", WAIT, |r| r.status != 202).await;
        assert_eq!(m.status, 201, "{b:?}: {}", m.body);
        assert_eq!(m.header("location"), vol, "{b:?}");
        assert_eq!(m.body["@odata.id"], vol, "{b:?}: {}", m.body);
        assert_eq!(m.body["CapacityBytes"], 1_073_741_824u64, "{b:?}: {}", m.body);
        let t = s.get(&task).await;
        assert_eq!(t.body["TaskState"], "Completed", "{b:?}: {}", t.body);
        assert_eq!(t.body["PercentComplete"], 100, "{b:?}: {}", t.body);
        assert_eq!(s.get(&vol).await.status, 200, "{b:?}: the Volume was not stored");

        let events = sunfish_tests::eventually("TaskCompletedOK at the subscriber", WAIT, || {
            let e = rx.events_at("/tasks");
            let done = e.iter().any(|e| message_id(e).ends_with(".TaskCompletedOK"));
            async move { done.then_some(e) }
        })
        .await;
        let keys: Vec<&str> = events.iter().map(|e| message_id(e).rsplit('.').next().unwrap_or_default()).collect();
        let started = keys.iter().position(|k| *k == "TaskStarted");
        let completed = keys.iter().position(|k| *k == "TaskCompletedOK");
        assert!(started.is_some_and(|s| completed.is_some_and(|c| s < c)), "{b:?}: TaskEvents {keys:?}");
        for e in &events {
            assert!(message_id(e).starts_with("TaskEvent."), "{b:?}: {e}");
            assert_eq!(e["OriginOfCondition"]["@odata.id"], task, "{b:?}: {e}");
        }
        s.stop().await;
    }
}

/// Work that fails: the monitor answers the error's status with a Redfish error body, the task
/// ends in `Exception`, and nothing is stored.
#[tokio::test]
async fn a_failing_task_ends_in_exception() {
    let (cfg, dir) = config(Backend::Memory);
    let s = TestServer::start_with(cfg, dir).await;
    let volumes = storage(&s).await;
    let vol = format!("{volumes}/V-fail");
    let gate = Gate::new(&vol);
    let (monitor, task) = start_task(&s, &volumes, "V-fail").await;
    gate.send(Step::Fail("the pool is full".into()));
    let m = get_until(&s, &monitor, "the monitor's final answer", WAIT, |r| r.status != 202).await;
    assert_eq!(m.status, 400, "{}", m.body);
    assert_error_body(&m);
    assert_eq!(m.body["error"]["@Message.ExtendedInfo"][0]["MessageArgs"][0], "CapacityBytes", "{}", m.body);
    let t = get_until(&s, &task, "TaskState Exception", WAIT, |r| r.body["TaskState"] == "Exception").await;
    assert_eq!(t.body["TaskStatus"], "Critical", "{}", t.body);
    assert_eq!(s.get(&vol).await.status, 404, "a failed create stored its resource");
    s.stop().await;
}

/// Tasks survive a restart (fs): a completed task's resource, its Volume and its monitor's
/// answer are still there; a task that was running when the service stopped is `Interrupted`
/// and its monitor answers an error.
#[tokio::test]
async fn tasks_survive_a_restart() {
    let (cfg, dir) = config(Backend::Fs);
    let s = TestServer::start_with(cfg.clone(), dir).await;
    let volumes = storage(&s).await;
    let done_vol = format!("{volumes}/V-done");
    let gate = Gate::new(&done_vol);
    let (done_monitor, done_task) = start_task(&s, &volumes, "V-done").await;
    gate.send(Step::Finish);
    get_until(&s, &done_monitor, "the task to complete", WAIT, |r| r.status == 201).await;
    let _left_running = Gate::new(&format!("{volumes}/V-running"));
    let (running_monitor, running_task) = start_task(&s, &volumes, "V-running").await;
    assert_eq!(s.get(&running_task).await.body["TaskState"], "Running");
    let dir = s.stop().await;

    let s = TestServer::start_with(cfg, dir).await;
    let t = s.get(&done_task).await;
    assert_eq!(t.status, 200, "the completed task is gone: {}", t.body);
    assert_eq!(t.body["TaskState"], "Completed", "{}", t.body);
    let m = s.get(&done_monitor).await;
    assert_eq!(m.status, 201, "the completed task's monitor after a restart: {}", m.body);
    assert_eq!(m.header("location"), done_vol);
    assert_eq!(m.body["@odata.id"], done_vol, "{}", m.body);
    assert_eq!(s.get(&done_vol).await.status, 200);

    let t = s.get(&running_task).await;
    assert_eq!(t.status, 200, "{}", t.body);
    assert_eq!(t.body["TaskState"], "Interrupted", "{}", t.body);
    let m = s.get(&running_monitor).await;
    assert!(m.status != 202 && !m.status.is_success(), "an interrupted task's monitor: {} {}", m.status, m.body);
    assert_error_body(&m);
    s.stop().await;
}
