//! The signal bus: pub/sub channels anyone can listen to, and a durable
//! signal log the order side reads through a consumer group.
//!
//! Two implementations behind one type: [`Bus::Embedded`] (in-process, the
//! default: the main command needs no server) and [`Bus::Redis`]. Both pass
//! the same conformance suite. Nothing on the order path depends on pub/sub
//! delivery: signals reach the orders side through the log, which keeps an
//! entry pending until the orders for it are recorded and acknowledged.

mod embedded;
pub mod events;
pub mod message;
mod redis_bus;

use std::sync::Arc;
use std::time::Duration;

pub use embedded::EmbeddedBus;

/// How a service (the engine, the orders side) knows when to stop.
pub struct Lifecycle {
    /// Set on SIGTERM, SIGINT or a `shutdown` command.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Sets it (a `shutdown` command).
    pub stop: Arc<tokio::sync::watch::Sender<bool>>,
    /// Batch replay: end once every source has ended and everything is decided.
    pub until_idle: bool,
    /// Keep running although no pipeline can trade yet.
    pub wait_for_plugins: bool,
}
pub use redis_bus::RedisBus;

/// A bus operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// Redis refused or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A reply did not have the expected shape.
    #[error("bus: {0}")]
    Protocol(String),
}

/// An entry of the durable signal log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// The log's id of the entry (`<ms>-<seq>` in Redis).
    pub entry_id: String,
    /// The signal, JSON.
    pub payload: String,
}

/// Channel and key names under a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channels {
    prefix: String,
}

impl Channels {
    /// Names under `prefix` (default `trading`).
    #[must_use]
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }
    /// Every signal, JSON (pub/sub).
    #[must_use]
    pub fn signals(&self) -> String {
        format!("{}:signals", self.prefix)
    }
    /// The durable signal log (a stream).
    #[must_use]
    pub fn signal_log(&self) -> String {
        format!("{}:signals:log", self.prefix)
    }
    /// Where "this signal id was seen" markers live.
    #[must_use]
    pub fn signal_seen(&self, id: &str) -> String {
        format!("{}:signals:seen:{id}", self.prefix)
    }
    /// Order lifecycle events.
    #[must_use]
    pub fn orders(&self) -> String {
        format!("{}:orders", self.prefix)
    }
    /// Host events and heartbeats.
    #[must_use]
    pub fn events(&self) -> String {
        format!("{}:events", self.prefix)
    }
    /// Control commands.
    #[must_use]
    pub fn commands(&self) -> String {
        format!("{}:commands", self.prefix)
    }
    /// Market data from an external feed for `symbol`.
    #[must_use]
    pub fn market(&self, symbol: &str) -> String {
        format!("{}:market:{symbol}", self.prefix)
    }
    /// Prices the engine saw, for the order side's fills and marks.
    #[must_use]
    pub fn quotes(&self) -> String {
        format!("{}:quotes", self.prefix)
    }
    /// The durable stream of the same prices, which the order side reads from
    /// its journaled position, so a restarted orders process sees every price it missed.
    #[must_use]
    pub fn price_log(&self) -> String {
        format!("{}:quotes:log", self.prefix)
    }
    /// The lease of consumer `consumer` of the signal log's group `group`: one process
    /// reads as one consumer.
    #[must_use]
    pub fn consumer_lease(&self, group: &str, consumer: &str) -> String {
        format!("{}:lease:{group}:{consumer}", self.prefix)
    }
    /// The prefix of every channel and key.
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Every channel: `<prefix>:*`.
    #[must_use]
    pub fn all(&self) -> String {
        format!("{}:*", self.prefix)
    }
}

/// A subscription: messages as `(channel, payload)`; `None` only once the bus is gone.
pub struct Subscription {
    inner: SubscriptionInner,
}

enum SubscriptionInner {
    Embedded(embedded::EmbeddedSubscription),
    Redis(tokio::sync::mpsc::Receiver<(String, String)>),
}

impl Subscription {
    /// Messages received by the connection and not yet taken by [`Subscription::recv`]
    /// (for the embedded bus: every channel's, before filtering).
    #[must_use]
    pub fn backlog(&self) -> usize {
        match &self.inner {
            SubscriptionInner::Embedded(s) => s.backlog(),
            SubscriptionInner::Redis(rx) => rx.len(),
        }
    }

    /// The next message.
    pub async fn recv(&mut self) -> Option<(String, String)> {
        match &mut self.inner {
            SubscriptionInner::Embedded(s) => s.recv().await,
            SubscriptionInner::Redis(rx) => rx.recv().await,
        }
    }
}

/// The bus, embedded or Redis.
#[derive(Clone)]
pub enum Bus {
    /// In-process.
    Embedded(Arc<EmbeddedBus>),
    /// A Redis server.
    Redis(Arc<RedisBus>),
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Embedded(_) => "Bus::Embedded",
            Self::Redis(_) => "Bus::Redis",
        })
    }
}

/// How long a signal id is remembered for de-duplication (a week: longer than any replay).
pub const SEEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

impl Bus {
    /// An in-process bus.
    #[must_use]
    pub fn embedded(prefix: &str) -> Self {
        Self::Embedded(Arc::new(EmbeddedBus::new(Channels::new(prefix))))
    }

    /// A bus on the Redis server at `url`.
    ///
    /// # Errors
    /// When the server cannot be reached.
    pub async fn redis(url: &str, prefix: &str) -> Result<Self, BusError> {
        Ok(Self::Redis(Arc::new(
            RedisBus::connect(url, Channels::new(prefix)).await?,
        )))
    }

    /// The channel names.
    #[must_use]
    pub fn channels(&self) -> &Channels {
        match self {
            Self::Embedded(b) => b.channels(),
            Self::Redis(b) => b.channels(),
        }
    }

    /// `embedded` or `redis`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Embedded(_) => "embedded",
            Self::Redis(_) => "redis",
        }
    }

    /// Publish on a pub/sub channel (best effort: listeners that are not there miss it).
    ///
    /// # Errors
    /// A Redis failure.
    pub async fn publish(&self, channel: &str, payload: &str) -> Result<(), BusError> {
        match self {
            Self::Embedded(b) => {
                b.publish(channel, payload);
                Ok(())
            }
            Self::Redis(b) => b.publish(channel, payload).await,
        }
    }

    /// Redis bus only: replace the hash `key` with `entries`, atomically.
    ///
    /// # Errors
    /// Redis errors; `Ok(false)` on the embedded bus, which has no hashes.
    pub async fn replace_hash(
        &self,
        key: &str,
        entries: &[(String, String)],
    ) -> Result<bool, BusError> {
        match self {
            Self::Embedded(_) => Ok(false),
            Self::Redis(b) => b.replace_hash(key, entries).await.map(|()| true),
        }
    }

    /// Hold the lease `key` for `holder` for `ttl` (taken when free, ours, or held by a
    /// holder starting with `take_over`, one known to be gone). `Ok(Some(other))`: another
    /// process holds it. The embedded bus lives in one process: always held.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn hold_lease(
        &self,
        key: &str,
        holder: &str,
        ttl: std::time::Duration,
        take_over: &str,
    ) -> Result<Option<String>, BusError> {
        match self {
            Self::Embedded(_) => Ok(None),
            Self::Redis(b) => {
                let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
                b.hold_lease(key, holder, ttl_ms, take_over).await
            }
        }
    }

    /// Give up the lease `key` if `holder` holds it.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn release_lease(&self, key: &str, holder: &str) -> Result<(), BusError> {
        match self {
            Self::Embedded(_) => Ok(()),
            Self::Redis(b) => b.release_lease(key, holder).await,
        }
    }

    /// Redis bus only: one field of the hash `key`.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn hash_get(&self, key: &str, field: &str) -> Result<Option<String>, BusError> {
        match self {
            Self::Embedded(_) => Ok(None),
            Self::Redis(b) => b.hash_get(key, field).await,
        }
    }

    /// Append prices to the durable price stream (keeping about `retain`
    /// entries) and publish them on the quotes channel.
    ///
    /// # Errors
    /// A Redis failure; the caller retries (a duplicate is harmless: prices
    /// only move what is newer than what was seen).
    pub async fn append_quotes(&self, payload: &str, retain: usize) -> Result<(), BusError> {
        match self {
            Self::Embedded(b) => {
                b.append_quotes(payload, retain);
                Ok(())
            }
            Self::Redis(b) => b.append_quotes(payload, retain).await,
        }
    }

    /// Entries of the price stream after `after` (an entry id, or `0` for the
    /// oldest retained), up to `max`, waiting up to `block` for one.
    ///
    /// # Errors
    /// A Redis failure.
    pub async fn read_quotes(
        &self,
        after: &str,
        max: usize,
        block: Duration,
    ) -> Result<Vec<LogEntry>, BusError> {
        match self {
            Self::Embedded(b) => Ok(b.read_quotes(after, max, block).await),
            Self::Redis(b) => b.read_quotes(after, max, block).await,
        }
    }

    /// Whether the server answers (`true`), as the last operation found it;
    /// `None` for the embedded bus, which cannot be away.
    #[must_use]
    pub fn health(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        match self {
            Self::Embedded(_) => None,
            Self::Redis(b) => Some(b.health()),
        }
    }

    /// Times a Redis server came back after it was found away (0 for the embedded bus).
    #[must_use]
    pub fn reconnects(&self) -> u64 {
        match self {
            Self::Embedded(_) => 0,
            Self::Redis(b) => b.reconnects(),
        }
    }

    /// Subscribe to channels or glob patterns (`trading:*`). A Redis
    /// subscription reconnects and subscribes again by itself after the
    /// connection drops; what was published meanwhile is lost, as pub/sub loses it.
    ///
    /// # Errors
    /// A Redis failure.
    pub async fn subscribe(&self, patterns: &[String]) -> Result<Subscription, BusError> {
        Ok(Subscription {
            inner: match self {
                Self::Embedded(b) => SubscriptionInner::Embedded(b.subscribe(patterns)),
                Self::Redis(b) => SubscriptionInner::Redis(b.subscribe(patterns).await?),
            },
        })
    }

    /// Publish a signal and append it to the log, unless its id was seen
    /// before (a replay): returns whether it was new.
    ///
    /// # Errors
    /// A Redis failure; the signal may then be retried safely.
    pub async fn append_signal(&self, id: &str, payload: &str) -> Result<bool, BusError> {
        match self {
            Self::Embedded(b) => Ok(b.append_signal(id, payload)),
            Self::Redis(b) => b.append_signal(id, payload).await,
        }
    }

    /// Create the consumer group if it does not exist (it starts at the log's beginning).
    ///
    /// # Errors
    /// A Redis failure.
    pub async fn ensure_group(&self, group: &str) -> Result<(), BusError> {
        match self {
            Self::Embedded(b) => {
                b.ensure_group(group);
                Ok(())
            }
            Self::Redis(b) => b.ensure_group(group).await,
        }
    }

    /// Entries never delivered to the group, up to `max`, waiting up to `block` for one.
    ///
    /// # Errors
    /// A Redis failure.
    pub async fn read_new(
        &self,
        group: &str,
        consumer: &str,
        max: usize,
        block: Duration,
    ) -> Result<Vec<LogEntry>, BusError> {
        match self {
            Self::Embedded(b) => Ok(b.read_new(group, consumer, max, block).await),
            Self::Redis(b) => b.read_new(group, consumer, max, block).await,
        }
    }

    /// Entries delivered to `consumer` and not acknowledged (after a restart: redo them).
    ///
    /// # Errors
    /// A Redis failure.
    pub async fn read_pending(
        &self,
        group: &str,
        consumer: &str,
        max: usize,
    ) -> Result<Vec<LogEntry>, BusError> {
        match self {
            Self::Embedded(b) => Ok(b.read_pending(group, consumer, max)),
            Self::Redis(b) => b.read_pending(group, consumer, max).await,
        }
    }

    /// Take over entries another consumer has held unacknowledged for `min_idle`.
    ///
    /// # Errors
    /// A Redis failure.
    pub async fn claim_stale(
        &self,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        max: usize,
    ) -> Result<Vec<LogEntry>, BusError> {
        match self {
            Self::Embedded(b) => Ok(b.claim_stale(group, consumer, min_idle, max)),
            Self::Redis(b) => b.claim_stale(group, consumer, min_idle, max).await,
        }
    }

    /// Acknowledge an entry: its orders are recorded.
    ///
    /// # Errors
    /// A Redis failure.
    pub async fn ack(&self, group: &str, entry_id: &str) -> Result<(), BusError> {
        match self {
            Self::Embedded(b) => {
                b.ack(group, entry_id);
                Ok(())
            }
            Self::Redis(b) => b.ack(group, entry_id).await,
        }
    }

    /// Drop log entries the group has delivered and had acknowledged: everything
    /// before the oldest pending entry (or, with none pending, before the last
    /// delivered one). An unacknowledged signal is never dropped: trimming by
    /// length (`MAXLEN`) could. Returns how many went. The embedded log lives
    /// only as long as its process and is not trimmed.
    ///
    /// # Errors
    /// A Redis failure.
    pub async fn trim_log(&self, group: &str) -> Result<usize, BusError> {
        match self {
            Self::Embedded(_) => Ok(0),
            Self::Redis(b) => b.trim_log(group).await,
        }
    }

    /// Entries in the log.
    ///
    /// # Errors
    /// A Redis failure.
    pub async fn log_len(&self) -> Result<usize, BusError> {
        match self {
            Self::Embedded(b) => Ok(b.log_len()),
            Self::Redis(b) => b.log_len().await,
        }
    }

    /// Entries of the group delivered and not yet acknowledged, by any consumer.
    ///
    /// # Errors
    /// A Redis failure.
    pub async fn pending_count(&self, group: &str) -> Result<usize, BusError> {
        match self {
            Self::Embedded(b) => Ok(b.pending_count(group)),
            Self::Redis(b) => b.pending_count(group).await,
        }
    }

    /// Entries of the log not yet delivered to the group.
    ///
    /// # Errors
    /// A Redis failure.
    pub async fn undelivered_count(&self, group: &str) -> Result<usize, BusError> {
        match self {
            Self::Embedded(b) => Ok(b.undelivered_count(group)),
            Self::Redis(b) => b.undelivered_count(group).await,
        }
    }
}

/// Glob match with `*` for any run of characters (as Redis `PSUBSCRIBE` does).
#[must_use]
pub fn glob_match(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            let Some(tail) = text.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len())
                .filter(|i| tail.is_char_boundary(*i))
                .any(|i| glob_match(rest, &tail[i..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        for (p, t, want) in [
            ("trading:*", "trading:signals", true),
            ("trading:*", "other:signals", false),
            ("trading:market:*", "trading:market:NIFTY", true),
            ("trading:events", "trading:events", true),
            ("trading:events", "trading:events:x", false),
            ("*:orders", "trading:orders", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
        ] {
            assert_eq!(glob_match(p, t), want, "{p} {t}");
        }
    }
}
