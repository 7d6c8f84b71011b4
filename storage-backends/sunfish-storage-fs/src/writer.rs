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
//!    write the *current* content of every dirty file from memory, make them durable with one
//!    `syncfs`, then empty the log.
//!
//! Why a log and checkpoints rather than writing the files per commit: a create changes its
//! collection, whose `Members` grow with every create; writing the whole collection per commit
//! (and a `syncfs`, several milliseconds, per commit) capped creates at a few hundred a second.
//! The log line of a create holds an `append` of one link, and a collection changed by a
//! thousand creates between two checkpoints is written once.
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
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Weak;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use sunfish_core::tree::ResourceTree;
use sunfish_core::{Error, Result};
use tokio::sync::oneshot;
use tracing::{error, warn};

use crate::disk::Disk;
use crate::journal::{self, Body, Entry, Op, Target};
use crate::State;

/// A log this long triggers a checkpoint before the interval is over: it bounds the replay at
/// the next open and the log's disk use.
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

/// The writer thread's state.
pub(crate) struct Writer {
    /// Where requests come from; closed when the backend closes.
    pub(crate) rx: Receiver<Msg>,
    /// The files and the log.
    pub(crate) disk: Disk,
    /// The backend's tree (weak: the backend owns it and the queue's sender), read by
    /// checkpoints.
    pub(crate) state: Weak<RwLock<State>>,
    /// Longest time a logged change waits for its checkpoint; zero checkpoints every batch.
    pub(crate) interval: Duration,
}

impl Writer {
    /// Runs until every sender is dropped and the queue is empty, then checkpoints and removes
    /// the (empty) log.
    pub(crate) fn run(mut self) {
        let mut run = Run { dirty: BTreeSet::new(), unlogged: Vec::new(), last: Instant::now(), failed: false };
        loop {
            let first = if run.dirty.is_empty() {
                match self.rx.recv() {
                    Ok(m) => m,
                    Err(_) => break,
                }
            } else {
                // After a failed checkpoint, retry at most once a second (not in a hot loop).
                let every = if run.failed { self.interval.max(Duration::from_secs(1)) } else { self.interval };
                match self.rx.recv_timeout(every.saturating_sub(run.last.elapsed())) {
                    Ok(m) => m,
                    Err(RecvTimeoutError::Timeout) => {
                        let flushes = self.checkpoint(&mut run);
                        answer(flushes.0, &flushes.1);
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            };
            let msgs: Vec<Msg> = std::iter::once(first).chain(self.rx.try_iter()).collect();
            let mut flushes = self.log(&mut run, msgs);
            if !flushes.is_empty() || run.last.elapsed() >= self.interval || self.disk.log_len() >= LOG_LIMIT {
                let (more, outcome) = self.checkpoint(&mut run);
                flushes.extend(more);
                answer(flushes, &outcome);
            }
        }
        let (flushes, outcome) = self.checkpoint(&mut run);
        answer(flushes, &outcome);
        if outcome.is_ok() {
            if let Err(e) = self.disk.remove_log() {
                warn!(error = %e, "fs storage could not delete its empty log");
            }
        }
    }

    /// Logs the commits among `msgs` in one line and answers them; returns the flushes.
    fn log(&mut self, run: &mut Run, msgs: Vec<Msg>) -> Vec<oneshot::Sender<Result<()>>> {
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

    /// Logs what is queued, writes the current content of every dirty file, makes it durable
    /// and empties the log. Returns the flushes found queued and the outcome they get.
    fn checkpoint(&mut self, run: &mut Run) -> (Vec<oneshot::Sender<Result<()>>>, Result<()>) {
        let (flushes, outcome) = self.try_checkpoint(run);
        run.last = Instant::now();
        run.failed = outcome.is_err();
        (flushes, outcome)
    }

    fn try_checkpoint(&mut self, run: &mut Run) -> (Vec<oneshot::Sender<Result<()>>>, Result<()>) {
        let Some(state) = self.state.upgrade() else {
            return (Vec::new(), Err(Error::storage("fs storage is gone")));
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
            (late, snapshot(&guard.tree, std::mem::take(&mut run.dirty)))
        };
        let flushes = self.log(run, late);
        if !run.unlogged.is_empty() {
            // Files must never hold a change the log lacks while the log holds older lines:
            // try again once the log can be written.
            run.dirty.extend(ops.into_iter().map(|op| op.target));
            return (flushes, Err(Error::storage("fs storage could not append to its log")));
        }
        if ops.is_empty() {
            return (flushes, Ok(()));
        }
        let applied = apply(&mut self.disk, &ops).and_then(|()| self.disk.reset_log());
        match applied {
            Ok(()) => (flushes, Ok(())),
            Err(e) => {
                error!(error = %e, files = ops.len(), "fs storage checkpoint failed; the log is kept");
                run.dirty.extend(ops.into_iter().map(|op| op.target));
                (flushes, Err(Error::storage(e)))
            }
        }
    }
}

/// What the writer loop carries between batches.
struct Run {
    /// Files changed since the last checkpoint.
    dirty: BTreeSet<Target>,
    /// Entries whose log append failed, retried with the next line.
    unlogged: Vec<Entry>,
    /// When the last checkpoint ran.
    last: Instant,
    /// Whether the last checkpoint failed.
    failed: bool,
}

/// The file operations that bring `targets` to their content in `tree`: every removal first
/// (a removal takes a resource's whole folder), then the writes, parents before children.
pub(crate) fn snapshot(tree: &ResourceTree, targets: BTreeSet<Target>) -> Vec<Op> {
    let mut removals = Vec::new();
    let mut writes = Vec::new();
    for target in targets {
        let content = match &target {
            Target::Resource(p) => tree.get(p).ok().map(Body::Resource),
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
