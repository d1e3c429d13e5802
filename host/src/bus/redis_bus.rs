//! The bus on Redis: `PUBLISH` for channels, a stream with a consumer group
//! for the signal log.
//!
//! Two traps handled here: async connections time out replies after 500 ms,
//! so blocking `XREADGROUP` gets a connection of its own with no timeout; and
//! "append only if this id is new" is one Lua script (Redis 7.0 has no
//! idempotent `XADD`), so a replayed signal is never logged twice.

use std::time::Duration;

use redis::AsyncCommands as _;
use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use tokio::sync::Mutex;

use super::{BusError, Channels, LogEntry, SEEN_TTL};

const APPEND_IF_NEW: &str = r"
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[2]) then
  local id = redis.call('XADD', KEYS[1], '*', 'signal', ARGV[1])
  redis.call('PUBLISH', ARGV[3], ARGV[1])
  return id
end
return false
";

/// The Redis bus.
pub struct RedisBus {
    client: redis::Client,
    channels: Channels,
    commands: ConnectionManager,
    blocking: Mutex<Option<MultiplexedConnection>>,
    /// The price stream's reader, separate from the signal log's: both block.
    price_reader: Mutex<Option<MultiplexedConnection>>,
    append: redis::Script,
    health: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
    /// Times the server came back after it was found away.
    reconnects: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Mark the server up; count a reconnect when it was down.
fn mark_up(health: &tokio::sync::watch::Sender<bool>, reconnects: &std::sync::atomic::AtomicU64) {
    if health.send_if_modified(|up| !std::mem::replace(up, true)) {
        reconnects.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// How long one connection attempt may take; an unreachable server must not hang a caller.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether `e` means the connection, not the command, failed.
fn is_connection_error(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
}

fn entries(ids: Vec<StreamId>) -> Vec<LogEntry> {
    stream_entries(ids, "signal")
}

fn stream_entries(ids: Vec<StreamId>, field: &str) -> Vec<LogEntry> {
    ids.into_iter()
        .map(|s| {
            let payload = match s.map.get(field) {
                Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                Some(redis::Value::SimpleString(t)) => t.clone(),
                _ => String::new(),
            };
            LogEntry {
                entry_id: s.id,
                payload,
            }
        })
        .collect()
}

impl RedisBus {
    pub(super) async fn connect(url: &str, channels: Channels) -> Result<Self, BusError> {
        let client = redis::Client::open(url)?;
        // The manager reconnects by itself after a failure; a command issued while the
        // server is away fails at once (and is retried by its caller) instead of hanging.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let commands = client.get_connection_manager_with_config(config).await?;
        let (health, _) = tokio::sync::watch::channel(true);
        Ok(Self {
            client,
            channels,
            commands,
            blocking: Mutex::new(None),
            price_reader: Mutex::new(None),
            append: redis::Script::new(APPEND_IF_NEW),
            health: std::sync::Arc::new(health),
            reconnects: std::sync::Arc::default(),
        })
    }

    /// Times the server came back after it was found away.
    pub(super) fn reconnects(&self) -> u64 {
        self.reconnects.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Up (`true`) or down, as the last operation found the server.
    pub(super) fn health(&self) -> tokio::sync::watch::Receiver<bool> {
        self.health.subscribe()
    }

    /// Note what a result says about the connection, and convert its error.
    fn track<T>(&self, result: Result<T, redis::RedisError>) -> Result<T, BusError> {
        match &result {
            Ok(_) => mark_up(&self.health, &self.reconnects),
            Err(e) if is_connection_error(e) => {
                self.health
                    .send_if_modified(|up| std::mem::replace(up, false));
            }
            Err(_) => {}
        }
        Ok(result?)
    }

    pub(super) fn channels(&self) -> &Channels {
        &self.channels
    }

    pub(super) async fn publish(&self, channel: &str, payload: &str) -> Result<(), BusError> {
        let mut c = self.commands.clone();
        let r: Result<i64, _> = c.publish(channel, payload).await;
        self.track(r).map(drop)
    }

    pub(super) async fn append_quotes(&self, payload: &str, retain: usize) -> Result<(), BusError> {
        // Trimmed by approximate length: prices older than the retention are
        // history; an orders process down longer than that is told of the gap.
        let mut c = self.commands.clone();
        let r: Result<(i64,), _> = redis::pipe()
            .cmd("XADD")
            .arg(self.channels.price_log())
            .arg("MAXLEN")
            .arg("~")
            .arg(retain.max(1))
            .arg("*")
            .arg("quotes")
            .arg(payload)
            .ignore()
            .cmd("PUBLISH")
            .arg(self.channels.quotes())
            .arg(payload)
            .query_async(&mut c)
            .await;
        self.track(r).map(drop)
    }

    pub(super) async fn read_quotes(
        &self,
        after: &str,
        max: usize,
        block: Duration,
    ) -> Result<Vec<LogEntry>, BusError> {
        let mut c = {
            let mut slot = self.price_reader.lock().await;
            match slot.as_ref() {
                Some(c) => c.clone(),
                None => {
                    let config = redis::AsyncConnectionConfig::new()
                        .set_response_timeout(None)
                        .set_connection_timeout(Some(CONNECT_TIMEOUT));
                    let r = self
                        .client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await;
                    let c = self.track(r)?;
                    *slot = Some(c.clone());
                    c
                }
            }
        };
        let reply: Result<Option<StreamReadReply>, redis::RedisError> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(max.max(1))
            .arg("BLOCK")
            .arg(u64::try_from(block.as_millis()).unwrap_or(u64::MAX).max(1))
            .arg("STREAMS")
            .arg(self.channels.price_log())
            .arg(after)
            .query_async(&mut c)
            .await;
        if reply.is_err() {
            *self.price_reader.lock().await = None;
        }
        let reply = self.track(reply)?;
        Ok(reply
            .map(|r| {
                r.keys
                    .into_iter()
                    .flat_map(|k| stream_entries(k.ids, "quotes"))
                    .collect()
            })
            .unwrap_or_default())
    }

    pub(super) async fn replace_hash(
        &self,
        key: &str,
        entries: &[(String, String)],
    ) -> Result<(), BusError> {
        // Built under a temporary key and renamed over the old one: readers never see half a map.
        let tmp = format!("{key}:loading");
        let mut c = self.commands.clone();
        let _: () = self.track(redis::cmd("DEL").arg(&tmp).query_async(&mut c).await)?;
        for chunk in entries.chunks(5_000) {
            let _: () = self.track(
                redis::cmd("HSET")
                    .arg(&tmp)
                    .arg(chunk)
                    .query_async(&mut c)
                    .await,
            )?;
        }
        if entries.is_empty() {
            let _: () = self.track(redis::cmd("DEL").arg(key).query_async(&mut c).await)?;
        } else {
            let _: () = self.track(
                redis::cmd("RENAME")
                    .arg(&tmp)
                    .arg(key)
                    .query_async(&mut c)
                    .await,
            )?;
        }
        Ok(())
    }

    /// Hold `key` for `holder` for `ttl_ms`: taken when free, already ours, or held by
    /// a holder starting with `take_over` (one known to be gone); else who holds it.
    pub(super) async fn hold_lease(
        &self,
        key: &str,
        holder: &str,
        ttl_ms: u64,
        take_over: &str,
    ) -> Result<Option<String>, BusError> {
        // One script: the read and the write cannot interleave with another process's.
        const SCRIPT: &str = "local cur = redis.call('GET', KEYS[1]) \
            if (not cur) or cur == ARGV[1] or string.sub(cur, 1, string.len(ARGV[3])) == ARGV[3] then \
              redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return false end \
            return cur";
        let mut c = self.commands.clone();
        self.track(
            redis::cmd("EVAL")
                .arg(SCRIPT)
                .arg(1)
                .arg(key)
                .arg(holder)
                .arg(ttl_ms)
                .arg(take_over)
                .query_async(&mut c)
                .await,
        )
    }

    /// Give up `key` if `holder` holds it.
    pub(super) async fn release_lease(&self, key: &str, holder: &str) -> Result<(), BusError> {
        const SCRIPT: &str =
            "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end return 1";
        let mut c = self.commands.clone();
        let _: i64 = self.track(
            redis::cmd("EVAL")
                .arg(SCRIPT)
                .arg(1)
                .arg(key)
                .arg(holder)
                .query_async(&mut c)
                .await,
        )?;
        Ok(())
    }

    pub(super) async fn hash_get(
        &self,
        key: &str,
        field: &str,
    ) -> Result<Option<String>, BusError> {
        let mut c = self.commands.clone();
        self.track(
            redis::cmd("HGET")
                .arg(key)
                .arg(field)
                .query_async(&mut c)
                .await,
        )
    }

    pub(super) async fn subscribe(
        &self,
        patterns: &[String],
    ) -> Result<tokio::sync::mpsc::Receiver<(String, String)>, BusError> {
        use futures_util::StreamExt as _;
        async fn open(
            client: &redis::Client,
            patterns: &[String],
        ) -> Result<redis::aio::PubSub, redis::RedisError> {
            let mut pubsub = tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub())
                .await
                .map_err(|_| {
                    redis::RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "connecting for pub/sub timed out",
                    ))
                })??;
            for p in patterns {
                pubsub.psubscribe(p).await?;
            }
            Ok(pubsub)
        }
        // The first connection is made here, so a caller is subscribed when this returns.
        let first = self.track(open(&self.client, patterns).await)?;
        let (tx, rx) = tokio::sync::mpsc::channel(65_536);
        let (client, patterns, health, reconnects) = (
            self.client.clone(),
            patterns.to_vec(),
            self.health.clone(),
            self.reconnects.clone(),
        );
        tokio::spawn(async move {
            let mut next = Some(first);
            let mut delay = Duration::from_millis(100);
            loop {
                let pubsub = match next.take() {
                    Some(p) => p,
                    None => match open(&client, &patterns).await {
                        Ok(p) => {
                            delay = Duration::from_millis(100);
                            mark_up(&health, &reconnects);
                            p
                        }
                        Err(e) => {
                            tracing::debug!("pub/sub reconnect: {e}");
                            health.send_if_modified(|up| std::mem::replace(up, false));
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(Duration::from_secs(2));
                            if tx.is_closed() {
                                return;
                            }
                            continue;
                        }
                    },
                };
                let mut stream = pubsub.into_on_message();
                while let Some(msg) = stream.next().await {
                    let channel = msg.get_channel_name().to_owned();
                    let payload: String = msg.get_payload().unwrap_or_default();
                    if tx.send((channel, payload)).await.is_err() {
                        return;
                    }
                }
                // The stream ends silently when the connection drops: what was
                // published meanwhile is gone (pub/sub keeps nothing), so nothing on
                // the order path depends on it; reconnect and subscribe again.
                tracing::warn!("pub/sub connection to Redis lost; reconnecting");
                health.send_if_modified(|up| std::mem::replace(up, false));
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(rx)
    }

    pub(super) async fn append_signal(&self, id: &str, payload: &str) -> Result<bool, BusError> {
        let mut c = self.commands.clone();
        let added: Result<Option<String>, _> = self
            .append
            .key(self.channels.signal_log())
            .key(self.channels.signal_seen(id))
            .arg(payload)
            .arg(SEEN_TTL.as_secs())
            .arg(self.channels.signals())
            .invoke_async(&mut c)
            .await;
        let added = self.track(added)?;
        Ok(added.is_some())
    }

    pub(super) async fn ensure_group(&self, group: &str) -> Result<(), BusError> {
        let mut c = self.commands.clone();
        let created: Result<(), redis::RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.channels.signal_log())
            .arg(group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut c)
            .await;
        match created {
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            other => Ok(other?),
        }
    }

    async fn blocking_connection(&self) -> Result<MultiplexedConnection, BusError> {
        let mut slot = self.blocking.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(None)
            .set_connection_timeout(Some(CONNECT_TIMEOUT));
        let c = self.track(
            self.client
                .get_multiplexed_async_connection_with_config(&config)
                .await,
        )?;
        *slot = Some(c.clone());
        Ok(c)
    }

    async fn read_group(
        &self,
        group: &str,
        consumer: &str,
        max: usize,
        block: Option<Duration>,
        from: &str,
    ) -> Result<Vec<LogEntry>, BusError> {
        let mut c = self.blocking_connection().await?;
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(group)
            .arg(consumer)
            .arg("COUNT")
            .arg(max.max(1));
        if let Some(block) = block {
            cmd.arg("BLOCK")
                .arg(u64::try_from(block.as_millis()).unwrap_or(u64::MAX).max(1));
        }
        cmd.arg("STREAMS").arg(self.channels.signal_log()).arg(from);
        let reply: Result<Option<StreamReadReply>, redis::RedisError> =
            cmd.query_async(&mut c).await;
        if reply.is_err() {
            // Drop a broken connection so the next call opens a fresh one.
            *self.blocking.lock().await = None;
        }
        let reply = self.track(reply)?;
        Ok(reply
            .map(|r| r.keys.into_iter().flat_map(|k| entries(k.ids)).collect())
            .unwrap_or_default())
    }

    pub(super) async fn read_new(
        &self,
        group: &str,
        consumer: &str,
        max: usize,
        block: Duration,
    ) -> Result<Vec<LogEntry>, BusError> {
        self.read_group(group, consumer, max, Some(block), ">")
            .await
    }

    pub(super) async fn read_pending(
        &self,
        group: &str,
        consumer: &str,
        max: usize,
    ) -> Result<Vec<LogEntry>, BusError> {
        self.read_group(group, consumer, max, None, "0").await
    }

    pub(super) async fn claim_stale(
        &self,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        max: usize,
    ) -> Result<Vec<LogEntry>, BusError> {
        let mut c = self.commands.clone();
        let reply: StreamAutoClaimReply = self.track(
            redis::cmd("XAUTOCLAIM")
                .arg(self.channels.signal_log())
                .arg(group)
                .arg(consumer)
                .arg(u64::try_from(min_idle.as_millis()).unwrap_or(u64::MAX))
                .arg("0-0")
                .arg("COUNT")
                .arg(max.max(1))
                .query_async(&mut c)
                .await,
        )?;
        Ok(entries(reply.claimed))
    }

    pub(super) async fn ack(&self, group: &str, entry_id: &str) -> Result<(), BusError> {
        let mut c = self.commands.clone();
        let r: Result<i64, _> = c.xack(self.channels.signal_log(), group, &[entry_id]).await;
        self.track(r)?;
        Ok(())
    }

    pub(super) async fn log_len(&self) -> Result<usize, BusError> {
        let mut c = self.commands.clone();
        let r = c.xlen(self.channels.signal_log()).await;
        self.track(r)
    }

    pub(super) async fn pending_count(&self, group: &str) -> Result<usize, BusError> {
        let mut c = self.commands.clone();
        let reply: redis::Value = self.track(
            redis::cmd("XPENDING")
                .arg(self.channels.signal_log())
                .arg(group)
                .query_async(&mut c)
                .await,
        )?;
        match reply {
            redis::Value::Array(items) => match items.first() {
                Some(redis::Value::Int(n)) => Ok(usize::try_from(*n).unwrap_or(0)),
                _ => Err(BusError::Protocol("XPENDING: unexpected reply".into())),
            },
            _ => Err(BusError::Protocol("XPENDING: unexpected reply".into())),
        }
    }

    pub(super) async fn trim_log(&self, group: &str) -> Result<usize, BusError> {
        let mut c = self.commands.clone();
        let key = self.channels.signal_log();
        let pending: redis::Value = self.track(
            redis::cmd("XPENDING")
                .arg(&key)
                .arg(group)
                .query_async(&mut c)
                .await,
        )?;
        let oldest_pending = match &pending {
            redis::Value::Array(items) => match items.get(1) {
                Some(redis::Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            },
            _ => None,
        };
        let floor = match oldest_pending {
            Some(id) => id,
            None => {
                let groups: Vec<std::collections::HashMap<String, redis::Value>> = self.track(
                    redis::cmd("XINFO")
                        .arg("GROUPS")
                        .arg(&key)
                        .query_async(&mut c)
                        .await,
                )?;
                let last = groups.iter().find(|g| matches!(g.get("name"), Some(redis::Value::BulkString(n)) if n.as_slice() == group.as_bytes())).and_then(|g| match g.get("last-delivered-id") {
                    Some(redis::Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
                    _ => None,
                });
                match last {
                    Some(id) if id != "0-0" => id,
                    _ => return Ok(0),
                }
            }
        };
        let removed: usize = self.track(
            redis::cmd("XTRIM")
                .arg(&key)
                .arg("MINID")
                .arg(floor)
                .query_async(&mut c)
                .await,
        )?;
        Ok(removed)
    }

    pub(super) async fn undelivered_count(&self, group: &str) -> Result<usize, BusError> {
        let mut c = self.commands.clone();
        // XINFO GROUPS reports `lag` (entries not yet delivered) since Redis 7.0.
        let groups: Vec<std::collections::HashMap<String, redis::Value>> = self.track(
            redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(self.channels.signal_log())
                .query_async(&mut c)
                .await,
        )?;
        for g in groups {
            let name = match g.get("name") {
                Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                _ => continue,
            };
            if name == group {
                return match g.get("lag") {
                    Some(redis::Value::Int(n)) => Ok(usize::try_from(*n).unwrap_or(0)),
                    _ => Err(BusError::Protocol("XINFO GROUPS: no lag".into())),
                };
            }
        }
        Ok(0)
    }
}
