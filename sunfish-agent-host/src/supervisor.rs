//! Supervision of the host's agent instances: one task per instance keeps its child process in
//! its target state. A child that exits while its target is `up` is restarted after a backoff
//! (the first wait `host.backoff_initial_ms`, doubling per quick exit up to `backoff_max_ms`;
//! a run of `stable_after_ms` resets it). Target `down` stops it: SIGTERM, then SIGKILL after
//! `grace_ms`. Every change of an instance's status is announced on the change channel (the
//! Redfish view turns it into a resource update and an event upstream).

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{HostSection, InstanceSpec, Target};

/// What an instance is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Its child runs.
    Running,
    /// Waiting before the next start after an exit.
    Backoff,
    /// Its child is being stopped.
    Stopping,
    /// Not running (target down, or the supervisor is stopping).
    Stopped,
}

impl Phase {
    /// The name shown in the view (`State`).
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Running => "Running",
            Phase::Backoff => "Backoff",
            Phase::Stopping => "Stopping",
            Phase::Stopped => "Stopped",
        }
    }
}

/// Mutable status of one instance.
#[derive(Debug)]
struct Status {
    phase: Phase,
    pid: Option<u32>,
    restarts: u64,
    quick_exits: u32,
    backoff: Duration,
    last_exit: Option<String>,
    since: SystemTime,
    /// Up intervals inside the stability window (start, end; `None`: still up).
    up: VecDeque<(Instant, Option<Instant>)>,
    created: Instant,
}

/// A snapshot of an instance, as the view shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The instance's name.
    pub name: String,
    /// Its target state.
    pub target: Target,
    /// What it is doing.
    pub phase: Phase,
    /// The child's pid while it runs.
    pub pid: Option<u32>,
    /// Restarts after unexpected exits.
    pub restarts: u64,
    /// Exits in a row that came sooner than `stable_after_ms` after their start.
    pub quick_exits: u32,
    /// The current wait before the next start (while in `Backoff`).
    pub backoff: Duration,
    /// How the last child exited.
    pub last_exit: Option<String>,
    /// Share of the stability window (or of the time since the instance was added, if
    /// shorter) that a child was up, 0 to 1.
    pub stability: f64,
    /// Its listen address.
    pub listen: String,
}

impl Snapshot {
    /// Two or more quick exits in a row: the instance is flapping or cannot start.
    pub fn unstable(&self) -> bool {
        self.quick_exits >= 2
    }

    /// The instance as JSON properties of the view's resource.
    pub fn properties(&self) -> Value {
        json!({
            "TargetState": self.target.as_str(),
            "State": self.phase.as_str(),
            "Pid": self.pid,
            "Restarts": self.restarts,
            "Stability": (self.stability * 1000.0).round() / 1000.0,
            "Unstable": self.unstable(),
            "QuickExits": self.quick_exits,
            "BackoffMs": self.backoff.as_millis() as u64,
            "LastExitStatus": self.last_exit,
            "Listen": self.listen,
        })
    }
}

/// One supervised instance.
struct Instance {
    spec: Mutex<InstanceSpec>,
    target: watch::Sender<Target>,
    status: Mutex<Status>,
    stop: CancellationToken,
}

/// Where children come from and how they are supervised.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The `sunfish-agent` binary.
    pub binary: PathBuf,
    /// Children's generated configurations and logs.
    pub state_dir: PathBuf,
    /// `[host]`.
    pub host: HostSection,
    /// `--upstream` of instances without their own.
    pub upstream: Option<String>,
}

/// The supervisor of one host's instances.
pub struct Supervisor {
    settings: Settings,
    instances: Mutex<BTreeMap<String, Arc<Instance>>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    changed: mpsc::UnboundedSender<String>,
}

impl Supervisor {
    /// A supervisor with no instances yet; status changes are announced (by instance name) on
    /// the returned receiver.
    pub fn new(settings: Settings) -> (Arc<Self>, mpsc::UnboundedReceiver<String>) {
        let (changed, rx) = mpsc::unbounded_channel();
        let s = Supervisor { settings, instances: Mutex::new(BTreeMap::new()), tasks: Mutex::new(Vec::new()), changed };
        (Arc::new(s), rx)
    }

    /// Names of the instances, sorted.
    pub fn names(&self) -> Vec<String> {
        self.instances.lock().keys().cloned().collect()
    }

    /// The instance called `name`, now.
    pub fn snapshot(&self, name: &str) -> Option<Snapshot> {
        let inst = self.instances.lock().get(name).cloned()?;
        let window = self.settings.host.stability_window();
        let target = *inst.target.borrow();
        let spec = inst.spec.lock();
        let st = inst.status.lock();
        let now = Instant::now();
        let from = now.checked_sub(window).unwrap_or(st.created).max(st.created);
        let span = now.duration_since(from).as_secs_f64();
        let up: f64 = st
            .up
            .iter()
            .map(|(s, e)| {
                let s = (*s).max(from);
                let e = e.unwrap_or(now);
                e.saturating_duration_since(s).as_secs_f64()
            })
            .sum();
        let stability = if span <= 0.0 { 1.0 } else { (up / span).clamp(0.0, 1.0) };
        Some(Snapshot {
            name: spec.name.clone(),
            target,
            phase: st.phase,
            pid: st.pid,
            restarts: st.restarts,
            quick_exits: st.quick_exits,
            backoff: st.backoff,
            last_exit: st.last_exit.clone(),
            stability,
            listen: spec.listen.to_string(),
        })
    }

    /// Sets `name`'s target; false for an unknown name.
    pub fn set_target(&self, name: &str, target: Target) -> bool {
        let Some(inst) = self.instances.lock().get(name).cloned() else { return false };
        if *inst.target.borrow() != target {
            info!(instance = name, target = target.as_str(), "target state set");
            inst.target.send_replace(target);
            let _ = self.changed.send(name.to_string());
        }
        true
    }

    /// Brings the instances in line with `specs`: new ones are added (and started if their
    /// target is up), removed ones are stopped and dropped, changed ones take the new spec at
    /// their next start. Returns (added, removed) names.
    pub fn apply(self: &Arc<Self>, specs: &BTreeMap<String, InstanceSpec>) -> (Vec<String>, Vec<String>) {
        let mut added = Vec::new();
        let mut removed = Vec::new();
        let mut map = self.instances.lock();
        for (name, inst) in map.iter() {
            if !specs.contains_key(name) {
                inst.stop.cancel();
                removed.push(name.clone());
            }
        }
        map.retain(|name, _| specs.contains_key(name));
        for (name, spec) in specs {
            if let Some(inst) = map.get(name) {
                *inst.spec.lock() = spec.clone();
                continue;
            }
            let inst = Arc::new(Instance {
                spec: Mutex::new(spec.clone()),
                target: watch::Sender::new(spec.target),
                status: Mutex::new(Status {
                    phase: Phase::Stopped,
                    pid: None,
                    restarts: 0,
                    quick_exits: 0,
                    backoff: Duration::ZERO,
                    last_exit: None,
                    since: SystemTime::now(),
                    up: VecDeque::new(),
                    created: Instant::now(),
                }),
                stop: CancellationToken::new(),
            });
            map.insert(name.clone(), inst.clone());
            let me = self.clone();
            self.tasks.lock().push(tokio::spawn(async move { me.supervise(inst).await }));
            added.push(name.clone());
        }
        drop(map);
        for n in added.iter().chain(&removed) {
            let _ = self.changed.send(n.clone());
        }
        (added, removed)
    }

    /// Stops every child (SIGTERM, then SIGKILL after the grace period) and waits for them.
    pub async fn shutdown(&self) {
        for inst in self.instances.lock().values() {
            inst.stop.cancel();
        }
        let tasks = std::mem::take(&mut *self.tasks.lock());
        for t in tasks {
            let _ = t.await;
        }
    }

    fn set(&self, inst: &Instance, f: impl FnOnce(&mut Status)) {
        {
            let mut st = inst.status.lock();
            f(&mut st);
            st.since = SystemTime::now();
            // Forget up intervals that ended before the window.
            let window = self.settings.host.stability_window();
            if let Some(cut) = Instant::now().checked_sub(window) {
                while st.up.front().is_some_and(|(_, e)| e.is_some_and(|e| e < cut)) {
                    st.up.pop_front();
                }
            }
        }
        let _ = self.changed.send(inst.spec.lock().name.clone());
    }

    /// The instance's whole life: start, watch, restart, stop.
    async fn supervise(self: Arc<Self>, inst: Arc<Instance>) {
        let host = &self.settings.host;
        let mut target = inst.target.subscribe();
        let mut backoff = host.backoff_initial();
        loop {
            if inst.stop.is_cancelled() {
                return;
            }
            if *target.borrow_and_update() == Target::Down {
                self.set(&inst, |s| s.phase = Phase::Stopped);
                tokio::select! {
                    _ = target.changed() => continue,
                    _ = inst.stop.cancelled() => return,
                }
            }
            let name = inst.spec.lock().name.clone();
            let started = Instant::now();
            let exit = match self.spawn(&inst) {
                Ok(mut child) => {
                    let pid = child.id();
                    info!(instance = %name, pid, "started");
                    self.set(&inst, |s| {
                        s.phase = Phase::Running;
                        s.pid = pid;
                        s.up.push_back((started, None));
                    });
                    let outcome = tokio::select! {
                        status = child.wait() => Some(status),
                        _ = wait_for(&mut target, Target::Down) => None,
                        _ = inst.stop.cancelled() => None,
                    };
                    let status = match outcome {
                        Some(status) => describe(status),
                        None => {
                            self.set(&inst, |s| s.phase = Phase::Stopping);
                            let status = terminate(&mut child, host.grace()).await;
                            info!(instance = %name, status = %status, "stopped");
                            self.set(&inst, |s| {
                                s.phase = Phase::Stopped;
                                s.pid = None;
                                s.last_exit = Some(status);
                                s.quick_exits = 0;
                                s.backoff = Duration::ZERO;
                                end_up(s);
                            });
                            backoff = host.backoff_initial();
                            continue;
                        }
                    };
                    status
                }
                Err(e) => format!("could not start: {e}"),
            };
            // An exit nobody asked for.
            let ran = started.elapsed();
            if ran >= host.stable_after() {
                backoff = host.backoff_initial();
            }
            let wait = backoff;
            warn!(instance = %name, status = %exit, ran_ms = ran.as_millis() as u64, restart_in_ms = wait.as_millis() as u64, "exited; restarting");
            self.set(&inst, |s| {
                s.phase = Phase::Backoff;
                s.pid = None;
                s.last_exit = Some(exit);
                s.restarts += 1;
                s.quick_exits = if ran >= host.stable_after() { 1 } else { s.quick_exits + 1 };
                s.backoff = wait;
                end_up(s);
            });
            backoff = (backoff * 2).min(host.backoff_max());
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = wait_for(&mut target, Target::Down) => {}
                _ = inst.stop.cancelled() => {}
            }
            self.set(&inst, |s| s.backoff = Duration::ZERO);
        }
    }

    /// Writes the child's configuration and starts it.
    fn spawn(&self, inst: &Instance) -> std::io::Result<Child> {
        let spec = inst.spec.lock().clone();
        let dir = &self.settings.state_dir;
        let file = dir.join(format!("{}.toml", spec.name));
        std::fs::write(&file, spec.file_text())?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join(format!("{}.log", spec.name)))?;
        let mut cmd = Command::new(&self.settings.binary);
        cmd.arg("--config").arg(&file).args(["--name", &spec.name, "--listen", &spec.listen.to_string()]);
        if let Some(up) = spec.upstream.as_ref().or(self.settings.upstream.as_ref()) {
            cmd.args(["--upstream", up]);
        }
        // The supervisor's environment is not the child's configuration.
        for (k, _) in std::env::vars() {
            if k.starts_with("SUNFISH_AGENT__") {
                cmd.env_remove(k);
            }
        }
        cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).kill_on_drop(true);
        cmd.spawn()
    }
}

fn end_up(s: &mut Status) {
    if let Some(last) = s.up.back_mut() {
        if last.1.is_none() {
            last.1 = Some(Instant::now());
        }
    }
}

/// Resolves once `rx` holds `want` (never, if the sender is gone).
async fn wait_for(rx: &mut watch::Receiver<Target>, want: Target) {
    loop {
        if *rx.borrow_and_update() == want {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// SIGTERM, then SIGKILL after `grace`; returns how the child ended.
async fn terminate(child: &mut Child, grace: Duration) -> String {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()).and_then(rustix::process::Pid::from_raw) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(Ok(status)) => describe(Ok(status)),
        _ => {
            let _ = child.kill().await;
            format!("{} (SIGKILL after the grace period)", describe(child.wait().await))
        }
    }
}

fn describe(status: std::io::Result<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            _ => s.to_string(),
        },
        Err(e) => format!("wait failed: {e}"),
    }
}
