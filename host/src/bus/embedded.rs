//! The in-process bus: the same semantics as Redis, inside one process.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, broadcast};

use super::{Channels, LogEntry, glob_match};

#[derive(Debug)]
struct Pending {
    consumer: String,
    delivered: Instant,
}

#[derive(Debug, Default)]
struct Group {
    next: usize,
    pending: BTreeMap<usize, Pending>,
}

#[derive(Debug, Default)]
struct Log {
    entries: Vec<String>,
    seen: HashSet<String>,
    groups: HashMap<String, Group>,
}

/// The retained part of the price stream: entry `first + i` is `entries[i]`.
#[derive(Debug, Default)]
struct PriceLog {
    first: u64,
    entries: std::collections::VecDeque<String>,
}

/// The embedded bus.
pub struct EmbeddedBus {
    channels: Channels,
    /// Each subscription's own channel: a message goes only to those whose
    /// patterns match it (as Redis does), so a subscriber to commands alone never
    /// holds a copy of every price message until it next reads.
    pubsub: Mutex<Vec<Subscriber>>,
    log: Mutex<Log>,
    appended: Notify,
    prices: Mutex<PriceLog>,
    priced: Notify,
}

/// A subscription to the embedded bus.
pub struct EmbeddedSubscription {
    rx: broadcast::Receiver<(Arc<str>, Arc<str>)>,
    patterns: Vec<String>,
}

impl EmbeddedSubscription {
    pub(super) fn backlog(&self) -> usize {
        self.rx.len()
    }

    pub(super) async fn recv(&mut self) -> Option<(String, String)> {
        loop {
            match self.rx.recv().await {
                Ok((channel, payload)) => {
                    if self.patterns.iter().any(|p| glob_match(p, &channel)) {
                        return Some((channel.to_string(), payload.to_string()));
                    }
                }
                // Like Redis pub/sub, a listener that falls behind loses messages; the
                // order path does not depend on them.
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "embedded bus: a slow subscriber missed messages");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// Messages a subscription holds for a subscriber that has not read them; beyond,
/// it loses the oldest (as a slow Redis subscriber does).
const SUBSCRIBER_BACKLOG: usize = 65_536;

/// One subscription's patterns and the sending side of its channel.
#[derive(Debug)]
struct Subscriber {
    patterns: Vec<String>,
    tx: broadcast::Sender<(Arc<str>, Arc<str>)>,
}

fn entry_id(index: usize) -> String {
    format!("{}-0", index + 1)
}

fn index_of(entry_id: &str) -> Option<usize> {
    entry_id
        .strip_suffix("-0")?
        .parse::<usize>()
        .ok()?
        .checked_sub(1)
}

impl EmbeddedBus {
    pub(super) fn new(channels: Channels) -> Self {
        Self {
            channels,
            pubsub: Mutex::new(Vec::new()),
            log: Mutex::new(Log::default()),
            appended: Notify::new(),
            prices: Mutex::new(PriceLog::default()),
            priced: Notify::new(),
        }
    }

    pub(super) fn channels(&self) -> &Channels {
        &self.channels
    }

    fn log(&self) -> MutexGuard<'_, Log> {
        // A panic while holding the lock leaves plain data behind, still consistent.
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn publish(&self, channel: &str, payload: &str) {
        let mut subscribers = self
            .pubsub
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        subscribers.retain(|s| s.tx.receiver_count() > 0);
        let mut message = None;
        for s in subscribers
            .iter()
            .filter(|s| s.patterns.iter().any(|p| glob_match(p, channel)))
        {
            let m = message
                .get_or_insert_with(|| (Arc::<str>::from(channel), Arc::<str>::from(payload)));
            // A subscription dropped meanwhile is not an error for pub/sub.
            let _ = s.tx.send(m.clone());
        }
    }

    pub(super) fn subscribe(&self, patterns: &[String]) -> EmbeddedSubscription {
        let (tx, rx) = broadcast::channel(SUBSCRIBER_BACKLOG);
        self.pubsub
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Subscriber {
                patterns: patterns.to_vec(),
                tx,
            });
        EmbeddedSubscription {
            rx,
            patterns: patterns.to_vec(),
        }
    }

    pub(super) fn append_signal(&self, id: &str, payload: &str) -> bool {
        {
            let mut log = self.log();
            if !log.seen.insert(id.to_owned()) {
                return false;
            }
            log.entries.push(payload.to_owned());
        }
        self.publish(&self.channels.signals(), payload);
        self.appended.notify_waiters();
        true
    }

    fn prices(&self) -> MutexGuard<'_, PriceLog> {
        self.prices
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn append_quotes(&self, payload: &str, retain: usize) {
        {
            let mut p = self.prices();
            p.entries.push_back(payload.to_owned());
            while p.entries.len() > retain.max(1) {
                p.entries.pop_front();
                p.first += 1;
            }
        }
        self.publish(&self.channels.quotes(), payload);
        self.priced.notify_waiters();
    }

    fn prices_after(&self, after: &str, max: usize) -> Vec<LogEntry> {
        // Ids are `<n>-0` from 1, like a Redis stream's; "0" and "0-0" mean before the first.
        let after = after
            .split('-')
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        let mut p = self.prices();
        // The order side in this process is the one reader, and nothing outlives the
        // process: what it has asked to read past is done with (a full-speed replay
        // kept its whole price history here otherwise).
        while p.first < after && p.entries.pop_front().is_some() {
            p.first += 1;
        }
        let start = after.saturating_sub(p.first).min(p.entries.len() as u64) as usize;
        p.entries
            .iter()
            .enumerate()
            .skip(start)
            .take(max)
            .map(|(i, payload)| LogEntry {
                entry_id: format!("{}-0", p.first + i as u64 + 1),
                payload: payload.clone(),
            })
            .collect()
    }

    pub(super) async fn read_quotes(
        &self,
        after: &str,
        max: usize,
        block: Duration,
    ) -> Vec<LogEntry> {
        let deadline = tokio::time::Instant::now() + block;
        loop {
            let notified = self.priced.notified();
            let out = self.prices_after(after, max);
            if !out.is_empty() || tokio::time::Instant::now() >= deadline {
                return out;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.prices_after(after, max);
            }
        }
    }

    pub(super) fn ensure_group(&self, group: &str) {
        self.log().groups.entry(group.to_owned()).or_default();
    }

    fn take_new(&self, group: &str, consumer: &str, max: usize) -> Vec<LogEntry> {
        let mut log = self.log();
        let Log {
            entries, groups, ..
        } = &mut *log;
        let g = groups.entry(group.to_owned()).or_default();
        let end = entries.len().min(g.next + max);
        let out: Vec<LogEntry> = (g.next..end)
            .map(|i| LogEntry {
                entry_id: entry_id(i),
                payload: entries[i].clone(),
            })
            .collect();
        for i in g.next..end {
            g.pending.insert(
                i,
                Pending {
                    consumer: consumer.to_owned(),
                    delivered: Instant::now(),
                },
            );
        }
        g.next = end;
        out
    }

    pub(super) async fn read_new(
        &self,
        group: &str,
        consumer: &str,
        max: usize,
        block: Duration,
    ) -> Vec<LogEntry> {
        let deadline = tokio::time::Instant::now() + block;
        loop {
            let notified = self.appended.notified();
            let out = self.take_new(group, consumer, max);
            if !out.is_empty() || tokio::time::Instant::now() >= deadline {
                return out;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.take_new(group, consumer, max);
            }
        }
    }

    pub(super) fn read_pending(&self, group: &str, consumer: &str, max: usize) -> Vec<LogEntry> {
        let log = self.log();
        let Some(g) = log.groups.get(group) else {
            return Vec::new();
        };
        g.pending
            .iter()
            .filter(|(_, p)| p.consumer == consumer)
            .take(max)
            .map(|(i, _)| LogEntry {
                entry_id: entry_id(*i),
                payload: log.entries[*i].clone(),
            })
            .collect()
    }

    pub(super) fn claim_stale(
        &self,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        max: usize,
    ) -> Vec<LogEntry> {
        let mut log = self.log();
        let Log {
            entries, groups, ..
        } = &mut *log;
        let Some(g) = groups.get_mut(group) else {
            return Vec::new();
        };
        let now = Instant::now();
        let mut out = Vec::new();
        for (i, p) in g.pending.iter_mut() {
            if out.len() >= max {
                break;
            }
            if now.duration_since(p.delivered) >= min_idle {
                p.consumer = consumer.to_owned();
                p.delivered = now;
                out.push(LogEntry {
                    entry_id: entry_id(*i),
                    payload: entries[*i].clone(),
                });
            }
        }
        out
    }

    pub(super) fn ack(&self, group: &str, entry_id: &str) {
        if let (Some(i), Some(g)) = (index_of(entry_id), self.log().groups.get_mut(group)) {
            g.pending.remove(&i);
        }
    }

    pub(super) fn log_len(&self) -> usize {
        self.log().entries.len()
    }

    pub(super) fn pending_count(&self, group: &str) -> usize {
        self.log().groups.get(group).map_or(0, |g| g.pending.len())
    }

    pub(super) fn undelivered_count(&self, group: &str) -> usize {
        let log = self.log();
        log.entries.len() - log.groups.get(group).map_or(0, |g| g.next)
    }
}
