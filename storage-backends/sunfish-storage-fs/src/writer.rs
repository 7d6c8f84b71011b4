//! The writer thread: the only code that writes the store's files once it is open.
//!
//! Requests change the tree in memory under its lock and, still under the lock, send the
//! resulting log entries here, so entries arrive in memory order. The thread loops:
//! 1. wait for a message, then take every message already queued (group commit: one log line
//!    and one `fdatasync` for all the requests that arrived while the previous one was written);
//! 2. append the batch's entries to the write-ahead log (`journal`) durably, then answer the
//!    requests: from here a crash loses nothing, because the next open replays the log;
//! 3. remember which files the entries changed (`dirty`);
//! 4. every `checkpoint` interval (and when the log grows past [`LOG_LIMIT`], and for a flush):
//!    snapshot the *current* content of every dirty file from memory, start a new log file, and
//!    hand the snapshot to the checkpoint thread, which writes the files, makes them durable
//!    with one `syncfs`, and removes the log files the snapshot covers. Meanwhile this thread
//!    goes on logging and answering: a checkpoint never holds up a commit. One checkpoint runs
//!    at a time (a failed one's files are dirty again for the next, which must cover them
//!    before any log file is removed).
//!
//! Why a log and checkpoints rather than writing the files per commit: a create changes its
//! collection, whose `Members` grow with every create; writing the whole collection per commit
//! (and a `syncfs`, several milliseconds, per commit) capped creates at a few hundred a second.
//! The log line of a create holds an `append` of one link (of a delete, an `unlist`), and a
//! collection changed by a thousand creates between two checkpoints is written once.
//!
//! A checkpoint takes the tree's read lock and, under it, drains the queue: the snapshot then
//! holds exactly the changes of the entries drained so far, and those are logged (and
//! answered) before any file is written, so the files never hold a change the log lacks, and
//! a crash in the middle of a checkpoint leaves files that the log's replay completes.
//!
//! If appending to the log fails, the batch's requests get the error (memory has the change
//! already, as it would after a crash if the log had been written), and the entries are kept
//! and go into the next line. If a checkpoint fails, its files stay dirty and the log is kept,
//! so the next checkpoint (or the next open) retries.
//!
//! The thread is a plain OS thread, not a tokio task: its work is blocking file I/O and it must
//! not hold a runtime worker for the length of a `syncfs`.

use std::collections::BTreeSet;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Weak;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use sunfish_core::tree::ResourceTree;
use sunfish_core::{Error, Result};
use tokio::sync::oneshot;
use tracing::{error, warn};

use crate::disk::Disk;
use crate::journal::{self, Body, Entry, Op, Target};
use crate::State;

/// A log file this long triggers a checkpoint before the interval is over: it bounds the
/// replay at the next open and the log's disk use.
pub(crate) const LOG_LIMIT: u64 = 64 << 20;

/// A request to the writer thread.
#[derive(Debug)]
pub(crate) enum Msg {
    /// Persist one mutation's log entries; `ack` answers once they are durable (logged).
    Commit {
        /// The entries, in the order the tree made the changes.
        entries: Vec<Entry>,
        /// Answered with the outcome.
        ack: oneshot::Sender<Result<()>>,
    },
    /// Answer once everything sent before is in the files and durable (a checkpoint).
    Flush {
        /// Answered with the outcome.
        ack: oneshot::Sender<Result<()>>,
    },
}

/// Acknowledgements waiting for an outcome.
type Acks = Vec<oneshot::Sender<Result<()>>>;

/// The writer thread's state.
pub(crate) struct Writer {
    /// Where requests come from; closed when the backend closes.
    pub(crate) rx: Receiver<Msg>,
    /// The log (this thread appends to it; the checkpoint thread has its own [`Disk`] for the
    /// files, so their temporary names never meet).
    pub(crate) disk: Disk,
    /// The files, for the checkpoint thread.
    pub(crate) files: Disk,
    /// The backend's tree (weak: the backend owns it and the queue's sender), read by
    /// checkpoints.
    pub(crate) state: Weak<RwLock<State>>,
    /// Longest time a logged change waits for its checkpoint; zero checkpoints every batch.
    pub(crate) interval: Duration,
}

/// A checkpoint for the checkpoint thread: the file operations, and the last log file they
/// cover.
struct Job {
    ops: Vec<Op>,
    upto: u64,
}

/// A checkpoint's outcome: on failure, the targets to write again and the error.
type Done = std::result::Result<(), (Vec<Target>, String)>;

/// What the writer loop carries between batches.
struct Run {
    /// Files changed since the last snapshot.
    dirty: BTreeSet<Target>,
    /// Entries whose log append failed, retried with the next line.
    unlogged: Vec<Entry>,
    /// When the last checkpoint started.
    last: Instant,
    /// Whether the last checkpoint failed.
    failed: bool,
    /// Whether a checkpoint is running, and the flushes waiting for it.
    running: Option<Acks>,
    /// To the checkpoint thread.
    jobs: Sender<Job>,
    /// From the checkpoint thread.
    done: Receiver<Done>,
}

impl Writer {
    /// Runs until every sender is dropped and the queue is empty, then checkpoints and removes
    /// the log.
    pub(crate) fn run(mut self) {
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (done_tx, done) = mpsc::channel::<Done>();
        let files = std::mem::replace(&mut self.files, Disk::new(self.disk.root().to_path_buf(), false));
        let thread: Option<JoinHandle<()>> = std::thread::Builder::new()
            .name("sunfish-fs-checkpoint".into())
            .spawn(move || checkpoints(job_rx, done_tx, files))
            .map_err(|e| error!(error = %e, "fs storage cannot start its checkpoint thread"))
            .ok();
        let mut run = Run {
            dirty: BTreeSet::new(),
            unlogged: Vec::new(),
            last: Instant::now(),
            failed: false,
            running: None,
            jobs,
            done,
        };
        loop {
            self.collect(&mut run, false);
            let wait = if run.running.is_some() {
                // Look again soon: the next checkpoint may be due once this one is done.
                Some(Duration::from_millis(5))
            } else if run.dirty.is_empty() {
                None
            } else {
                // After a failed checkpoint, retry at most once a second (not in a hot loop).
                let every = if run.failed { self.interval.max(Duration::from_secs(1)) } else { self.interval };
                Some(every.saturating_sub(run.last.elapsed()))
            };
            let first = match wait {
                None => match self.rx.recv() {
                    Ok(m) => Some(m),
                    Err(_) => break,
                },
                Some(d) => match self.rx.recv_timeout(d) {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                },
            };
            let msgs: Vec<Msg> = first.into_iter().chain(self.rx.try_iter()).collect();
            let mut flushes = self.log(&mut run, msgs);
            if !flushes.is_empty() {
                // A flush waits for a checkpoint that starts after it.
                self.collect(&mut run, true);
            }
            let due = run.last.elapsed() >= self.interval || self.disk.log_len() >= LOG_LIMIT;
            if run.running.is_none() && (!flushes.is_empty() || (due && !run.dirty.is_empty())) {
                flushes.extend(self.start_checkpoint(&mut run, flushes.is_empty()));
                match &mut run.running {
                    Some(waiting) => waiting.extend(flushes),
                    None if run.failed => {
                        answer(flushes, &Err(Error::storage("fs storage checkpoint could not start")))
                    }
                    None => answer(flushes, &Ok(())),
                }
            } else if !flushes.is_empty() {
                answer(flushes, &Err(Error::storage("fs storage checkpoint could not start")));
            }
        }
        // Closed: finish what runs, then one last checkpoint, and wait for it.
        self.collect(&mut run, true);
        let mut flushes = self.start_checkpoint(&mut run, false);
        let last = run.running.take();
        let outcome = if last.is_some() {
            match run.done.recv() {
                Ok(Ok(())) => Ok(()),
                Ok(Err((_, e))) => Err(Error::storage(e)),
                Err(_) => Err(Error::storage("fs storage checkpoint thread stopped")),
            }
        } else if run.failed || !run.unlogged.is_empty() {
            Err(Error::storage("fs storage could not write everything at close"))
        } else {
            Ok(())
        };
        flushes.extend(last.unwrap_or_default());
        answer(flushes, &outcome);
        drop(run);
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }

    /// Takes the outcome of the running checkpoint, if it is done (or, with `wait`, once it
    /// is), and answers the flushes waiting for it. A failed checkpoint's targets are dirty
    /// again.
    fn collect(&mut self, run: &mut Run, wait: bool) {
        let Some(waiting) = run.running.as_mut() else { return };
        let done =
            if wait { run.done.recv().map_err(|_| mpsc::TryRecvError::Disconnected) } else { run.done.try_recv() };
        let outcome = match done {
            Ok(Ok(())) => Ok(()),
            Ok(Err((targets, e))) => {
                run.dirty.extend(targets);
                Err(Error::storage(e))
            }
            Err(mpsc::TryRecvError::Empty) => return,
            Err(mpsc::TryRecvError::Disconnected) => Err(Error::storage("fs storage checkpoint thread stopped")),
        };
        let waiting = std::mem::take(waiting);
        run.running = None;
        run.failed = outcome.is_err();
        answer(waiting, &outcome);
    }

    /// Logs the commits among `msgs` in one line and answers them; returns the flushes.
    fn log(&mut self, run: &mut Run, msgs: Vec<Msg>) -> Acks {
        let mut entries = std::mem::take(&mut run.unlogged);
        let mut commits = Vec::new();
        let mut flushes = Vec::new();
        for msg in msgs {
            match msg {
                Msg::Commit { entries: e, ack } => {
                    run.dirty.extend(e.iter().map(Entry::target));
                    entries.extend(e);
                    commits.push(ack);
                }
                Msg::Flush { ack } => flushes.push(ack),
            }
        }
        if entries.is_empty() {
            answer(commits, &Ok(()));
            return flushes;
        }
        let logged =
            journal::encode_batch(&entries).map_err(std::io::Error::other).and_then(|line| self.disk.append_log(&line));
        match logged {
            Ok(()) => answer(commits, &Ok(())),
            Err(e) => {
                error!(error = %e, entries = entries.len(), "fs storage could not append to its log");
                answer(commits, &Err(Error::storage(format!("log: {e}"))));
                run.unlogged = entries;
            }
        }
        flushes
    }

    /// Logs what is queued, snapshots the dirty files, starts a new log file and hands the
    /// snapshot to the checkpoint thread (`run.running` is then set). Returns the flushes
    /// found queued; with `only_if_dirty`, nothing starts when nothing is dirty.
    fn start_checkpoint(&mut self, run: &mut Run, only_if_dirty: bool) -> Acks {
        run.last = Instant::now();
        let Some(state) = self.state.upgrade() else {
            run.failed = true;
            return Vec::new();
        };
        let (late, ops) = {
            let guard = state.read();
            // Under the lock no request can queue anything: after this drain, the snapshot
            // holds exactly the changes of the entries logged so far and of `late`.
            let late: Vec<Msg> = self.rx.try_iter().collect();
            for msg in &late {
                if let Msg::Commit { entries, .. } = msg {
                    run.dirty.extend(entries.iter().map(Entry::target));
                }
            }
            if only_if_dirty && run.dirty.is_empty() {
                drop(guard);
                return self.log(run, late);
            }
            (late, snapshot(&guard.tree, std::mem::take(&mut run.dirty)))
        };
        let flushes = self.log(run, late);
        if !run.unlogged.is_empty() {
            // Files must never hold a change the log lacks: try again once the log works.
            run.dirty.extend(ops.into_iter().map(|op| op.target));
            run.failed = true;
            return flushes;
        }
        let upto = self.disk.rotate_log();
        match run.jobs.send(Job { ops, upto }) {
            Ok(()) => run.running = Some(Vec::new()),
            Err(mpsc::SendError(job)) => {
                error!("fs storage checkpoint thread has stopped");
                run.dirty.extend(job.ops.into_iter().map(|op| op.target));
                run.failed = true;
            }
        }
        flushes
    }
}

/// The checkpoint thread: writes each snapshot's files, makes them durable, removes the log
/// files it covers, and reports.
fn checkpoints(jobs: Receiver<Job>, done: Sender<Done>, mut disk: Disk) {
    for Job { ops, upto } in jobs {
        let applied = apply(&mut disk, &ops).and_then(|()| disk.remove_logs(upto));
        let outcome = match applied {
            Ok(()) => Ok(()),
            Err(e) => {
                error!(error = %e, files = ops.len(), "fs storage checkpoint failed; the log is kept");
                Err((ops.into_iter().map(|op| op.target).collect(), e.to_string()))
            }
        };
        if done.send(outcome).is_err() {
            warn!("fs storage writer is gone before its checkpoint ended");
            return;
        }
    }
}

/// The file operations that bring `targets` to their content in `tree`: every removal first
/// (a removal takes a resource's whole folder), then the writes, parents before children.
pub(crate) fn snapshot(tree: &ResourceTree, targets: BTreeSet<Target>) -> Vec<Op> {
    let mut removals = Vec::new();
    let mut writes = Vec::new();
    for target in targets {
        let content = match &target {
            Target::Resource(p) => tree.get(p).ok().map(Body::Resource),
            Target::Namespace(ns) => {
                let records: serde_json::Map<String, serde_json::Value> = tree.kv_list(ns).into_iter().collect();
                (!records.is_empty()).then_some(Body::Value(serde_json::Value::Object(records)))
            }
            Target::Kv { ns, key } => tree.kv_get(ns, key).map(Body::Value),
        };
        let op = Op { target, content };
        if op.content.is_some() {
            writes.push(op);
        } else {
            removals.push(op);
        }
    }
    removals.extend(writes);
    removals
}

/// Applies file operations in order, then makes them durable.
///
/// # Errors
/// The first failure; entries before it are applied, the rest not.
pub(crate) fn apply(disk: &mut Disk, ops: &[Op]) -> std::io::Result<()> {
    for op in ops {
        disk.apply(op)?;
    }
    disk.sync()
}

fn answer(acks: Vec<oneshot::Sender<Result<()>>>, outcome: &Result<()>) {
    for ack in acks {
        // A request that gave up waiting (its future dropped) needs no answer.
        let _ = ack.send(outcome.clone());
    }
}
