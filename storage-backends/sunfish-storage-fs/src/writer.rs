//! The writer thread: the only code that writes the store's files once it is open.
//!
//! Requests change the tree in memory under its lock and, still under the lock, send the
//! resulting change set here, so change sets arrive in memory order. The thread loops:
//! 1. wait for a message, then take every message already queued (group commit: one journal
//!    and one sync for all the requests that arrived while the previous batch was written);
//! 2. check each change set (no symbolic links on the way); a refused set fails its request;
//! 3. write the journal of the whole batch durably, then acknowledge the change sets: from here
//!    a crash loses nothing, because the next open replays the journal;
//! 4. apply the files (temp + rename), make them durable with one sync, delete the journal;
//! 5. acknowledge flushes (`close`), which wait for the files themselves.
//!
//! If writing the journal or applying fails, the batch's entries are kept and go into the next
//! journal with the next batch, so the files catch up with memory as soon as the disk works
//! again, and a journal on disk always holds everything not yet applied.
//!
//! The thread is a plain OS thread, not a tokio task: its work is blocking file I/O and it must
//! not hold a runtime worker for the length of a `syncfs`.

use std::sync::mpsc::Receiver;

use sunfish_core::tree::Change;
use sunfish_core::{Error, Result};
use tokio::sync::oneshot;
use tracing::{error, warn};

use crate::disk::Disk;
use crate::journal::{self, Op};

/// A request to the writer thread.
#[derive(Debug)]
pub(crate) enum Msg {
    /// Persist one mutation's changes; `ack` answers once they are durable (journaled).
    Commit {
        /// The changes, in the order the tree made them.
        changes: Vec<Change>,
        /// Answered with the outcome.
        ack: oneshot::Sender<Result<()>>,
    },
    /// Answer once everything sent before is applied to the files and durable.
    Flush {
        /// Answered with the outcome.
        ack: oneshot::Sender<Result<()>>,
    },
}

/// Runs until every sender is dropped and the queue is empty.
pub(crate) fn run(rx: Receiver<Msg>, mut disk: Disk) {
    // Entries journaled or applied unsuccessfully, retried with the next batch.
    let mut pending: Vec<Op> = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut ops = std::mem::take(&mut pending);
        let mut commits = Vec::new();
        let mut flushes = Vec::new();
        for msg in std::iter::once(first).chain(rx.try_iter()) {
            match msg {
                Msg::Commit { changes, ack } => {
                    let set: Vec<Op> = changes.into_iter().map(Op::from).collect();
                    match set.iter().try_for_each(|op| disk.check(op)) {
                        Ok(()) => {
                            ops.extend(set);
                            commits.push(ack);
                        }
                        Err(e) => {
                            error!(error = %e, "fs storage refused a write");
                            let _ = ack.send(Err(Error::storage(e)));
                        }
                    }
                }
                Msg::Flush { ack } => flushes.push(ack),
            }
        }
        if ops.is_empty() {
            answer(flushes, &Ok(()));
            continue;
        }
        let ops = journal::coalesce(ops);
        let journaled =
            journal::encode(&ops).map_err(std::io::Error::other).and_then(|bytes| disk.write_journal(&bytes));
        if let Err(e) = journaled {
            error!(error = %e, entries = ops.len(), "fs storage could not write its journal");
            let failed = Err(Error::storage(format!("journal: {e}")));
            answer(commits, &failed);
            answer(flushes, &failed);
            pending = ops;
            continue;
        }
        answer(commits, &Ok(()));
        match apply(&mut disk, &ops) {
            Ok(()) => {
                if let Err(e) = disk.remove_journal() {
                    warn!(error = %e, "fs storage could not delete its applied journal");
                }
                answer(flushes, &Ok(()));
            }
            Err(e) => {
                // Acknowledged already: the journal holds the batch and is left in place, so
                // the next batch's journal or the next open will apply it.
                error!(error = %e, entries = ops.len(), "fs storage could not apply its journal");
                answer(flushes, &Err(Error::storage(e)));
                pending = ops;
            }
        }
    }
}

/// Applies a journal's entries in order, then makes them durable.
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
