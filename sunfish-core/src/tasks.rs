//! The TaskService: writes that an object handler or agent forwarder reports as still running
//! ([`Pending`]) become Redfish tasks. The client gets 202 with a task monitor; the task
//! resource (`TaskService/Tasks/<id>`) shows `TaskState`, `PercentComplete` and `Messages`;
//! the monitor answers 202 while the work runs and the write's final response once it is done.
//! Task resources and final responses are stored, so they survive restarts; work that was
//! running when the service stopped is marked `Interrupted`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::eventservice::NewEvent;
use crate::resource::collection_template;
use crate::{BoxFuture, Error, Operation, ResourcePath, Result, StorageBackend};

/// Where task resources live.
pub const TASKS: &str = "/redfish/v1/TaskService/Tasks";
/// Where task monitors are served (not stored resources).
pub const TASK_MONITORS: &str = "/redfish/v1/TaskService/TaskMonitors";
/// The TaskEvent registry version used.
pub const TASK_EVENT: &str = "TaskEvent.1.0";
const NS_RESULT: &str = "taskresult";

type Work = BoxFuture<'static, Result<Option<Value>>>;

/// Work still running for a write. Its output is what to store (`None`: the payload as sent),
/// like an agent's reply.
#[derive(Clone)]
pub struct Pending {
    work: Arc<Mutex<Option<Work>>>,
    progress: Arc<watch::Sender<u8>>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pending")
    }
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.work, &other.work)
    }
}

/// Reports a running task's progress.
#[derive(Clone, Debug)]
pub struct Progress(Arc<watch::Sender<u8>>);

impl Progress {
    /// Sets `PercentComplete` (clamped to 100).
    pub fn set(&self, percent: u8) {
        self.0.send_replace(percent.min(100));
    }
}

impl Pending {
    /// Wraps `work`; the returned [`Progress`] lets it report how far it got.
    pub fn new(work: impl Future<Output = Result<Option<Value>>> + Send + 'static) -> (Self, Progress) {
        let (tx, _) = watch::channel(0u8);
        let tx = Arc::new(tx);
        (Pending { work: Arc::new(Mutex::new(Some(Box::pin(work)))), progress: tx.clone() }, Progress(tx))
    }

    /// Takes the work out (it runs once).
    pub(crate) fn take(&self) -> Option<Work> {
        self.work.lock().take()
    }

    pub(crate) fn progress(&self) -> watch::Receiver<u8> {
        self.progress.subscribe()
    }
}

/// A write turned into a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRef {
    /// Task Id.
    pub id: String,
    /// The task resource.
    pub task: ResourcePath,
    /// The task monitor URI.
    pub monitor: String,
}

/// The final response of a task's write, as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum FinalResponse {
    /// The write succeeded: status (201, 200, 204), `Location` for creates, body.
    Success {
        /// HTTP status of the original request had it completed at once.
        status: u16,
        /// `Location` header, for creates.
        location: Option<String>,
        /// Response body (the stored resource), if any.
        body: Option<Value>,
    },
    /// The write failed with this error.
    Failure(Error),
}

/// What a task monitor answers.
#[derive(Debug, Clone, PartialEq)]
pub enum MonitorState {
    /// Still running: answer 202 with the task.
    Running {
        /// The task resource.
        task: ResourcePath,
        /// Its `PercentComplete`.
        percent: u8,
    },
    /// Done: answer with the write's final response.
    Done(FinalResponse),
}

/// Task bookkeeping shared by the core.
pub struct TaskService {
    storage: Arc<dyn StorageBackend>,
    running: Mutex<HashMap<String, watch::Receiver<u8>>>,
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string().replace('Z', "+00:00")
}

fn message(key: &str, text: String, args: &[&str], severity: &str) -> Value {
    json!({"MessageId": format!("{TASK_EVENT}.{key}"), "Message": text, "MessageArgs": args, "MessageSeverity": severity})
}

/// The TaskEvent published when a task changes state.
pub fn task_event(key: &str, id: &str, text: String, severity: &str, args: Vec<Value>) -> NewEvent {
    NewEvent {
        message_id: format!("{TASK_EVENT}.{key}"),
        message: Some(text),
        message_args: if args.is_empty() { vec![Value::String(id.to_string())] } else { args },
        severity: severity.into(),
        origin: ResourcePath::parse(&format!("{TASKS}/{id}")).ok(),
        origin_type: Some("Task".into()),
        raw: None,
    }
}

impl TaskService {
    /// Task bookkeeping over `storage`.
    pub fn new(storage: Arc<dyn StorageBackend>) -> Self {
        TaskService { storage, running: Mutex::new(HashMap::new()) }
    }

    /// Marks tasks left running by a previous process as `Interrupted` (their work is gone).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn recover(&self) -> Result<()> {
        let tasks = ResourcePath::parse(TASKS)?;
        for p in self.storage.children(&tasks).await? {
            let Ok(r) = self.storage.get(&p).await else { continue };
            let value = r.value();
            let state = value.get("TaskState").and_then(Value::as_str).unwrap_or_default();
            if matches!(state, "New" | "Starting" | "Running" | "Pending") {
                let id = p.last().unwrap_or_default().to_string();
                let msg = message(
                    "TaskAborted",
                    format!("The task with Id '{id}' has completed with errors."),
                    &[&id],
                    "Critical",
                );
                self.storage
                    .patch(&p, json!({"TaskState": "Interrupted", "TaskStatus": "Critical", "EndTime": now(), "Messages": [msg]}), None)
                    .await?;
                let failure = FinalResponse::Failure(Error::Internal {
                    message: "the service restarted while the task ran".into(),
                });
                self.storage.kv_put(NS_RESULT, &id, serde_json::to_value(failure).unwrap_or_default()).await?;
            }
        }
        Ok(())
    }

    /// Creates the task resource for a write of `op` on `target`.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn create(
        &self,
        op: Operation,
        target: &ResourcePath,
        body: Option<&Value>,
        pending: &Pending,
    ) -> Result<TaskRef> {
        let id = uuid::Uuid::new_v4().to_string();
        let tasks = ResourcePath::parse(TASKS)?;
        let task = tasks.child(&id)?;
        let monitor = format!("{TASK_MONITORS}/{id}");
        let mut payload = json!({"HttpOperation": op.to_string(), "TargetUri": target.as_str()});
        if let Some(b) = body {
            payload["JsonBody"] = Value::String(b.to_string());
        }
        let value = json!({
            "@odata.id": task.as_str(),
            "@odata.type": "#Task.v1_7_4.Task",
            "Id": id,
            "Name": format!("Task {id}"),
            "TaskState": "Running",
            "TaskStatus": "OK",
            "StartTime": now(),
            "PercentComplete": 0,
            "TaskMonitor": monitor,
            "HidePayload": false,
            "Payload": payload,
            "Messages": [],
        });
        self.storage.create(&tasks, value, Some(collection_template(&tasks, "Task"))).await?;
        self.running.lock().insert(id.clone(), pending.progress());
        Ok(TaskRef { id, task, monitor })
    }

    /// Records progress on the task resource.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn set_progress(&self, task: &TaskRef, percent: u8) -> Result<()> {
        self.storage.patch(&task.task, json!({"PercentComplete": percent}), None).await.map(|_| ())
    }

    /// Stores the final response and completes the task resource; returns the TaskEvent key
    /// to publish.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn finish(&self, task: &TaskRef, response: FinalResponse) -> Result<&'static str> {
        self.storage.kv_put(NS_RESULT, &task.id, serde_json::to_value(&response).unwrap_or_default()).await?;
        let id = task.id.as_str();
        let (state, status, key, msg) = match &response {
            FinalResponse::Success { .. } => (
                "Completed",
                "OK",
                "TaskCompletedOK",
                message("TaskCompletedOK", format!("The task with Id '{id}' has completed."), &[id], "OK"),
            ),
            FinalResponse::Failure(e) => (
                "Exception",
                "Critical",
                "TaskAborted",
                json!({"MessageId": format!("{TASK_EVENT}.TaskAborted"),
                       "Message": format!("The task with Id '{id}' has completed with errors: {e}"),
                       "MessageArgs": [id], "MessageSeverity": "Critical"}),
            ),
        };
        let delta = json!({"TaskState": state, "TaskStatus": status, "EndTime": now(), "PercentComplete": 100, "Messages": [msg]});
        self.storage.patch(&task.task, delta, None).await?;
        self.running.lock().remove(id);
        Ok(key)
    }

    /// What the monitor of task `id` answers.
    ///
    /// # Errors
    /// `NotFound` for an unknown task.
    pub async fn monitor(&self, id: &str) -> Result<MonitorState> {
        let task =
            ResourcePath::parse(TASKS)?.child(id).map_err(|_| Error::not_found(format!("{TASK_MONITORS}/{id}")))?;
        if let Some(rx) = self.running.lock().get(id) {
            return Ok(MonitorState::Running { task, percent: *rx.borrow() });
        }
        match self.storage.kv_get(NS_RESULT, id).await? {
            Some(v) => serde_json::from_value(v)
                .map(MonitorState::Done)
                .map_err(|e| Error::Storage { message: format!("task result {id}: {e}") }),
            None => match self.storage.get(&task).await {
                Ok(r) => Ok(MonitorState::Running {
                    percent: r.value().get("PercentComplete").and_then(Value::as_u64).unwrap_or(0).min(100) as u8,
                    task,
                }),
                Err(_) => Err(Error::not_found(format!("{TASK_MONITORS}/{id}"))),
            },
        }
    }
}
