//! What lets several servers on one schema act as one service, besides the shared rows:
//! change notifications (`LISTEN`/`NOTIFY` on a channel per schema) and leader election (a
//! session advisory lock per schema, held on a connection of its own).
//!
//! Leadership is a lease: the leader checks its lock connection every third of
//! `lease_ms` and steps down when the check fails or takes longer than that; the others try the
//! lock at the same pace. The database releases the lock the moment the leader's session ends
//! (a killed process closes its socket), so a successor takes over within one lease.
//!
//! Each process tags what it sends with a random instance id and ignores its own
//! notifications, so [`sunfish_core::StorageBackend::notifications`] only carries other
//! instances' changes.

use std::time::Duration;

use sunfish_core::Notification;
use tokio::sync::{broadcast, watch};
use tokio_postgres::{AsyncMessage, NoTls};
pub use tokio_util_free::CancelFlag;
use tracing::{debug, info, warn};

/// Notifications kept for a slow reader before it is told it lagged.
pub const BUFFER: usize = 4096;

/// The channel of `schema` (schemas are plain identifiers, see `check_schema`).
pub fn channel(schema: &str) -> String {
    format!("sunfish_{schema}")
}

/// A random id for this process.
pub fn instance_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    format!("{:016x}", h.finish())
}

/// `instance|topic|payload`.
pub fn encode(instance: &str, topic: &str, payload: &str) -> String {
    format!("{instance}|{topic}|{payload}")
}

/// The notification in `text` unless it is from `instance` (or not ours).
pub fn decode(instance: &str, text: &str) -> Option<Notification> {
    let mut parts = text.splitn(3, '|');
    let from = parts.next()?;
    let topic = parts.next()?;
    let payload = parts.next()?;
    (from != instance).then(|| Notification { topic: topic.to_string(), payload: payload.to_string() })
}

/// Topic sent to readers after the listening connection was lost and re-established: they
/// may have missed changes and should re-read what they follow.
pub const RESYNC: &str = "*";

/// Keeps a `LISTEN` connection open (reconnecting after failures) and passes other instances'
/// notifications to `tx`, until `stop` is set.
pub async fn listen(
    config: tokio_postgres::Config,
    schema: String,
    instance: String,
    tx: broadcast::Sender<Notification>,
    stop: CancelFlag,
) {
    let mut first = true;
    while !stop.is_set() {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let (msgs_tx, mut msgs_rx) = tokio::sync::mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    loop {
                        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                            Some(Ok(AsyncMessage::Notification(n))) => {
                                if msgs_tx.send(n.payload().to_string()).is_err() {
                                    return;
                                }
                            }
                            Some(Ok(_)) => {}
                            Some(Err(e)) => {
                                debug!(error = %e, "postgres listen connection failed");
                                return;
                            }
                            None => return,
                        }
                    }
                });
                if let Err(e) = client.batch_execute(&format!("LISTEN {}", channel(&schema))).await {
                    warn!(error = %e, "postgres LISTEN failed");
                } else {
                    if !first {
                        let _ = tx.send(Notification { topic: RESYNC.into(), payload: String::new() });
                    }
                    first = false;
                    loop {
                        tokio::select! {
                            m = msgs_rx.recv() => match m {
                                Some(text) => {
                                    if let Some(n) = decode(&instance, &text) {
                                        let _ = tx.send(n);
                                    }
                                }
                                None => break,
                            },
                            _ = stop.wait() => break,
                        }
                    }
                }
                driver.abort();
                if !stop.is_set() {
                    warn!("postgres notification connection lost; reconnecting");
                }
            }
            Err(e) => warn!(error = %e, "postgres notification connection failed; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.wait() => {}
        }
    }
}

/// Runs the election for `schema`: sets `leader` while this process holds the advisory lock.
pub async fn elect(
    config: tokio_postgres::Config,
    schema: String,
    lease: Duration,
    leader: watch::Sender<bool>,
    stop: CancelFlag,
) {
    let beat = (lease / 3).max(Duration::from_millis(50));
    let key = format!("sunfish-leader:{schema}");
    while !stop.is_set() {
        let connected = tokio::time::timeout(beat.max(Duration::from_secs(1)), config.connect(NoTls)).await;
        if let Ok(Ok((client, connection))) = connected {
            let driver = tokio::spawn(async move {
                let _ = connection.await;
            });
            loop {
                let query = if *leader.borrow() { "SELECT true" } else { "SELECT pg_try_advisory_lock(hashtext($1))" };
                let res = if *leader.borrow() {
                    tokio::time::timeout(beat, client.query_one(query, &[])).await
                } else {
                    tokio::time::timeout(beat, client.query_one(query, &[&key])).await
                };
                match res {
                    Ok(Ok(row)) => {
                        let held: bool = row.get(0);
                        if held && !*leader.borrow() {
                            info!(schema, "this instance is the leader");
                            leader.send_replace(true);
                        }
                    }
                    _ => {
                        if *leader.borrow() {
                            warn!(schema, "leadership lost: the lock connection failed its check");
                            leader.send_replace(false);
                        }
                        break;
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(beat) => {}
                    _ = stop.wait() => break,
                }
                if stop.is_set() {
                    break;
                }
            }
            // Dropping the client ends the session and with it the lock.
            drop(client);
            driver.abort();
            if *leader.borrow() {
                leader.send_replace(false);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(beat) => {}
            _ = stop.wait() => {}
        }
    }
}

/// A set-once stop flag that tasks can wait on.
mod tokio_util_free {
    use std::sync::Arc;

    use tokio::sync::watch;

    /// Cloneable; [`CancelFlag::set`] wakes every waiter.
    #[derive(Clone)]
    pub struct CancelFlag(Arc<watch::Sender<bool>>);

    impl Default for CancelFlag {
        fn default() -> Self {
            CancelFlag(Arc::new(watch::channel(false).0))
        }
    }

    impl CancelFlag {
        /// Sets the flag.
        pub fn set(&self) {
            self.0.send_replace(true);
        }

        /// Whether it is set.
        pub fn is_set(&self) -> bool {
            *self.0.borrow()
        }

        /// Returns once it is set.
        pub async fn wait(&self) {
            let mut rx = self.0.subscribe();
            let _ = rx.wait_for(|v| *v).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An instance hears the others, never itself, and only well-formed messages.
    #[test]
    fn own_notifications_are_ignored() {
        let text = encode("a", "eventlog", "000|1");
        assert_eq!(decode("a", &text), None);
        assert_eq!(decode("b", &text), Some(Notification { topic: "eventlog".into(), payload: "000|1".into() }));
        assert_eq!(decode("b", "garbage"), None);
        assert_ne!(instance_id(), "");
    }
}
