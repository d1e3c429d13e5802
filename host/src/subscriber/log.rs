//! The subscriber's readers: the signal log, read in the orders' consumer
//! group (a restart's own unacknowledged entries first, entries a dead
//! consumer left taken over), and the durable price stream from a cursor; both
//! reconnect with back-off and say when they have caught up with their stream.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::bus::{Bus, LogEntry};

/// The consumer group the orders side reads the signal log in.
pub const GROUP: &str = "orders";

/// Reads the signal log: first this consumer's own unacknowledged entries
/// (a restart), then new ones, taking over entries a dead consumer left.
pub fn spawn_log_reader(
    bus: Bus,
    consumer: String,
    claim_idle: Duration,
    tx: mpsc::Sender<Vec<LogEntry>>,
    at_end: AtEnd,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            match bus.read_pending(GROUP, &consumer, 1000).await {
                Ok(entries) if entries.is_empty() => break,
                Ok(entries) => {
                    // Own pending entries are re-read from the start until acknowledged; only
                    // hand over the first batch and wait for the loop to catch up.
                    if tx.send(entries).await.is_err() {
                        return;
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!("reading pending signals: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        let mut last_claim = tokio::time::Instant::now();
        loop {
            if last_claim.elapsed() >= claim_idle / 2 {
                last_claim = tokio::time::Instant::now();
                match bus.claim_stale(GROUP, &consumer, claim_idle, 100).await {
                    Ok(entries) if !entries.is_empty() => {
                        if tx.send(entries).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!("claiming stale signals: {e}"),
                }
            }
            match bus
                .read_new(GROUP, &consumer, LOG_BATCH, Duration::from_millis(500))
                .await
            {
                Ok(entries) if !entries.is_empty() => {
                    backoff = Duration::from_millis(100);
                    at_end.set(entries.len() < LOG_BATCH);
                    if tx.send(entries).await.is_err() {
                        return;
                    }
                }
                Ok(_) => at_end.set(true),
                Err(e) => {
                    at_end.set(false);
                    tracing::warn!("reading signals: {e}");
                    // A Redis that came back without its data has no group: make it again.
                    if e.to_string().contains("NOGROUP") {
                        let _ = bus.ensure_group(GROUP).await;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    })
}

/// Signals read from the log at a time.
pub const LOG_BATCH: usize = 256;
/// Price messages read from their stream at a time.
pub const PRICE_BATCH: usize = 512;

/// Whether a reader's last read reached the end of its stream (came back short):
/// until both have, what a held signal or price waits for may be in the backlog.
#[derive(Clone, Default)]
pub struct AtEnd(Arc<std::sync::atomic::AtomicBool>);

impl AtEnd {
    /// Record whether the last read reached the end.
    pub fn set(&self, at_end: bool) {
        self.0.store(at_end, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the last read reached the end.
    #[must_use]
    pub fn get(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Reads the durable price stream from `after` on, in order, handing each
/// batch to the order loop; reconnects with back-off.
pub fn spawn_price_reader(
    bus: Bus,
    mut after: String,
    tx: mpsc::Sender<Vec<LogEntry>>,
    at_end: AtEnd,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            match bus
                .read_quotes(&after, PRICE_BATCH, Duration::from_millis(500))
                .await
            {
                Ok(entries) => {
                    backoff = Duration::from_millis(100);
                    at_end.set(entries.len() < PRICE_BATCH);
                    if let Some(last) = entries.last() {
                        after = last.entry_id.clone();
                        if tx.send(entries).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    at_end.set(false);
                    tracing::warn!("reading prices: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    })
}
