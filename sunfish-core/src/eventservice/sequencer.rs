//! Releases published log entries in EventId order, each only once it is durable.
//!
//! Lifecycle of an EventId allocated by this process: [`Sequencer::reserve`] right after the
//! allocation, under the same lock (so reservations come in increasing order); then the entry is
//! stored concurrently with other publishers' entries (the fs backend group-commits concurrent
//! writes into one fsync), so stores finish in any order; each publisher reports its outcome with
//! [`Sequencer::complete`], which hands back the entries that may now enter the in-memory log, in
//! EventId order: a durable entry is released once every smaller reserved id is released or
//! skipped. An id whose store failed (or whose publisher went away before storing) is skipped,
//! so it never holds up its successors.
//!
//! Only this process's ids are held here. On a shared store (HA) other instances' ids fall in
//! between; their entries arrive through notifications and are queued as they come (late ones
//! through the subscriber's `late` set), never through the sequencer.

use std::collections::BTreeMap;

use tokio::sync::oneshot;

/// Where a reserved id stands.
enum State<T> {
    /// Allocated; its entry is being built or stored.
    Storing,
    /// Stored durably, waiting for a smaller id.
    Durable(T),
    /// Not stored: skipped when its turn comes.
    Failed,
}

struct Slot<T> {
    state: State<T>,
    /// Completed when the entry is released (dropped unreleased when it is skipped).
    released: Option<oneshot::Sender<()>>,
}

/// An entry whose turn came: to be put in the log, then `released` to be signalled.
pub(super) struct Release<T> {
    /// The entry.
    pub item: T,
    /// Tells the publisher its entry is in the log.
    pub released: Option<oneshot::Sender<()>>,
}

impl<T> Release<T> {
    /// Tells the publisher (if it still waits) that its entry was released.
    pub fn signal(self) {
        if let Some(tx) = self.released {
            let _ = tx.send(());
        }
    }
}

/// The ids this process allocated and has not released yet, in order.
pub(super) struct Sequencer<T> {
    slots: BTreeMap<u64, Slot<T>>,
}

impl<T> Default for Sequencer<T> {
    fn default() -> Self {
        Sequencer { slots: BTreeMap::new() }
    }
}

impl<T> Sequencer<T> {
    /// Holds `seq`, just allocated (larger than every id reserved before). The receiver completes
    /// when its entry is released, and fails when it is skipped.
    pub fn reserve(&mut self, seq: u64) -> oneshot::Receiver<()> {
        debug_assert!(self.slots.last_key_value().is_none_or(|(last, _)| *last < seq), "ids reserved out of order");
        let (tx, rx) = oneshot::channel();
        self.slots.insert(seq, Slot { state: State::Storing, released: Some(tx) });
        rx
    }

    /// Records the outcome for `seq`: its durable entry (`Some`) or a failure (`None`). Returns
    /// the entries that may enter the log now, in EventId order; the caller releases them in that
    /// order before anyone else calls `complete` (i.e. under the lock that guards this value).
    /// An id that is not held (completed already) changes nothing.
    pub fn complete(&mut self, seq: u64, item: Option<T>) -> Vec<Release<T>> {
        if let Some(slot) = self.slots.get_mut(&seq) {
            if matches!(slot.state, State::Storing) {
                slot.state = match item {
                    Some(item) => State::Durable(item),
                    None => State::Failed,
                };
            }
        }
        let mut out = Vec::new();
        while let Some(entry) = self.slots.first_entry() {
            if matches!(entry.get().state, State::Storing) {
                break;
            }
            let slot = entry.remove();
            if let State::Durable(item) = slot.state {
                out.push(Release { item, released: slot.released });
            }
        }
        out
    }

    /// Whether `seq` is held (reserved, not yet released or skipped).
    pub fn holds(&self, seq: u64) -> bool {
        self.slots.contains_key(&seq)
    }

    /// The smallest id held, if any: every id allocated here below it is released or skipped.
    pub fn oldest(&self) -> Option<u64> {
        self.slots.first_key_value().map(|(seq, _)| *seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(r: Vec<Release<&'static str>>) -> Vec<&'static str> {
        r.into_iter()
            .map(|r| {
                let item = r.item;
                r.signal();
                item
            })
            .collect()
    }

    /// Entries stored out of order are released in id order: each waits for every smaller id.
    #[test]
    fn out_of_order_completion_is_released_in_order() {
        let mut s = Sequencer::default();
        let mut rx1 = s.reserve(1);
        let mut rx2 = s.reserve(2);
        let mut rx3 = s.reserve(3);
        assert!(items(s.complete(3, Some("c"))).is_empty());
        assert!(items(s.complete(2, Some("b"))).is_empty());
        assert_eq!(rx2.try_recv(), Err(oneshot::error::TryRecvError::Empty), "2 must wait for 1");
        assert_eq!(s.oldest(), Some(1));
        assert!(s.holds(3));
        assert_eq!(items(s.complete(1, Some("a"))), vec!["a", "b", "c"]);
        assert_eq!((rx1.try_recv(), rx2.try_recv(), rx3.try_recv()), (Ok(()), Ok(()), Ok(())));
        assert_eq!(s.oldest(), None);
        assert!(!s.holds(3));
    }

    /// A failed id is skipped: its successors are released, its publisher is not told "released".
    #[test]
    fn failure_is_skipped() {
        let mut s = Sequencer::default();
        let mut rx1 = s.reserve(10);
        let _rx2 = s.reserve(11);
        let _rx3 = s.reserve(12);
        assert!(items(s.complete(11, Some("b"))).is_empty());
        assert_eq!(items(s.complete(10, None)), vec!["b"]);
        assert_eq!(rx1.try_recv(), Err(oneshot::error::TryRecvError::Closed));
        assert_eq!(s.oldest(), Some(12));
        // A failure behind a waiting id releases nothing until that id is done.
        let _rx4 = s.reserve(13);
        assert!(items(s.complete(13, None)).is_empty());
        assert_eq!(items(s.complete(12, Some("c"))), vec!["c"]);
        assert_eq!(s.oldest(), None);
    }

    /// Ids with gaps (another instance's ids in between) are ordered among themselves, and a
    /// second outcome for an id (a late drop guard) changes nothing.
    #[test]
    fn gaps_and_repeated_outcomes() {
        let mut s = Sequencer::default();
        let _a = s.reserve(100);
        let _b = s.reserve(250);
        assert!(items(s.complete(250, Some("b"))).is_empty());
        assert!(items(s.complete(250, None)).is_empty(), "the first outcome stands");
        assert_eq!(items(s.complete(100, Some("a"))), vec!["a", "b"]);
        assert!(items(s.complete(100, None)).is_empty(), "a released id is gone");
        assert!(items(s.complete(7, Some("x"))).is_empty(), "an id never reserved is ignored");
    }
}
