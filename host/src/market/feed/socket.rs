//! Keeping a broker's WebSocket connections up.
//!
//! The instruments are split over as few connections as the broker's
//! per-connection limit allows. Each connection asks the [`Connector`](super::Connector) for
//! its address (so a renewed token or a one-time Upstox address is used),
//! subscribes its instruments, and reads frames until the socket closes,
//! errs or stays silent longer than [`SocketSettings::idle`]; then it waits
//! (250 ms doubling to 10 s, reset once frames flow again) and starts over,
//! subscribing again. A frame that does not decode is reported and skipped:
//! the connection goes on.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use super::{FeedAddress, FeedItem, FeedPlan, Outbound, Wire};

/// What happens on a feed's connections.
#[derive(Debug, Clone, PartialEq)]
pub enum SocketEvent {
    /// Something a frame held.
    Item(FeedItem),
    /// A connection is up and subscribed; `reconnect` after the first time.
    Up {
        /// Which connection (0-based).
        connection: usize,
        /// Whether it had been up before.
        reconnect: bool,
    },
    /// A connection was lost (or could not be made); it will be tried again.
    Down {
        /// Which connection.
        connection: usize,
        /// Why, with credentials removed.
        reason: String,
    },
    /// A frame that could not be decoded (the connection goes on).
    Malformed {
        /// Which connection.
        connection: usize,
        /// What was wrong.
        reason: String,
    },
}

/// Timing of the connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketSettings {
    /// A connection with no frame at all (brokers send heartbeats) for this long is dropped and made again.
    pub idle: Duration,
    /// First wait before reconnecting.
    pub first_backoff: Duration,
    /// Longest wait.
    pub max_backoff: Duration,
}

impl Default for SocketSettings {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(10),
            first_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// The instruments of each connection, within the broker's limits.
///
/// # Errors
/// More instruments than the broker allows one account.
pub fn shards(wire: Wire, tokens: &[String]) -> Result<Vec<Vec<String>>, String> {
    if tokens.is_empty() {
        // A connection for what the broker pushes unasked (Kite's order postbacks).
        return Ok(vec![Vec::new()]);
    }
    let per = wire.max_per_connection().max(1);
    let shards: Vec<Vec<String>> = tokens.chunks(per).map(<[String]>::to_vec).collect();
    if shards.len() > wire.max_connections() {
        return Err(format!(
            "{} instruments need {} {} connections; the broker allows {} of {per} each",
            tokens.len(),
            shards.len(),
            wire.name(),
            wire.max_connections()
        ));
    }
    Ok(shards)
}

/// Run every connection of `plan` until `tx` is dropped.
///
/// # Errors
/// More instruments than the broker allows (nothing is connected then).
pub async fn run(
    plan: FeedPlan,
    settings: SocketSettings,
    tx: mpsc::Sender<SocketEvent>,
) -> Result<(), String> {
    let (_fixed, extra) = watch::channel(Vec::new());
    run_with(plan, settings, tx, extra).await
}

/// [`run`], with instruments that come and go (`extra`: the tokens wanted now,
/// e.g. the strikes around the money): the first connection subscribes what is
/// added and unsubscribes what is dropped, and subscribes them all again after a reconnect.
///
/// # Errors
/// More instruments than the broker allows (nothing is connected then).
pub async fn run_with(
    plan: FeedPlan,
    settings: SocketSettings,
    tx: mpsc::Sender<SocketEvent>,
    extra: watch::Receiver<Vec<String>>,
) -> Result<(), String> {
    let tokens: Vec<String> = plan.instruments.iter().map(|(_, t)| t.clone()).collect();
    let shards = shards(plan.wire, &tokens)?;
    let mut tasks = tokio::task::JoinSet::new();
    let mut extra = Some(extra);
    for (connection, tokens) in shards.into_iter().enumerate() {
        tasks.spawn(connection_loop(
            plan.clone(),
            connection,
            tokens,
            extra.take(),
            settings,
            tx.clone(),
        ));
    }
    drop(tx);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// `reason` with the query values of `url` (API key, token) replaced.
fn scrub(reason: &str, url: &str) -> String {
    let mut out = reason.replace(url, "<feed address>");
    if let Some((_, query)) = url.split_once('?') {
        for value in query
            .split('&')
            .filter_map(|kv| kv.split_once('=').map(|(_, v)| v))
            .filter(|v| v.len() >= 4)
        {
            out = out.replace(value, "***");
        }
    }
    out
}

async fn connection_loop(
    plan: FeedPlan,
    connection: usize,
    tokens: Vec<String>,
    mut extra: Option<watch::Receiver<Vec<String>>>,
    settings: SocketSettings,
    tx: mpsc::Sender<SocketEvent>,
) {
    let mut backoff = settings.first_backoff;
    let mut was_up = false;
    loop {
        let reason = match (plan.connect)().await {
            Err(e) => format!("no address to connect to: {e}"),
            Ok(address) => match session(
                &plan,
                connection,
                &tokens,
                extra.as_mut(),
                &address,
                settings,
                &mut was_up,
                &mut backoff,
                &tx,
            )
            .await
            {
                Ok(reason) => scrub(&reason, &address.url),
                Err(Gone) => return,
            },
        };
        if tx
            .send(SocketEvent::Down { connection, reason })
            .await
            .is_err()
        {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(settings.max_backoff);
    }
}

fn frame(request: Outbound) -> Message {
    match request {
        Outbound::Text(t) => Message::Text(t.into()),
        Outbound::Binary(b) => Message::Binary(b.into()),
    }
}

/// The receiver is gone: stop.
struct Gone;

/// One connection's life; returns why it ended.
#[allow(clippy::too_many_arguments)]
async fn session(
    plan: &FeedPlan,
    connection: usize,
    tokens: &[String],
    mut extra: Option<&mut watch::Receiver<Vec<String>>>,
    address: &FeedAddress,
    settings: SocketSettings,
    was_up: &mut bool,
    backoff: &mut std::time::Duration,
    tx: &mpsc::Sender<SocketEvent>,
) -> Result<String, Gone> {
    let ws = match tokio::time::timeout(
        settings.idle,
        tokio_tungstenite::connect_async(address.url.as_str()),
    )
    .await
    {
        Err(_) => {
            return Ok(format!(
                "connecting took longer than {} s",
                settings.idle.as_secs()
            ));
        }
        Ok(Err(e)) => return Ok(format!("connecting: {e}")),
        Ok(Ok((ws, _))) => ws,
    };
    let (mut write, mut read) = ws.split();
    let mut requests: Vec<Outbound> = address.login.iter().cloned().map(Outbound::Text).collect();
    if !tokens.is_empty() {
        requests.extend(plan.wire.subscribe(tokens));
    }
    // The instruments that come and go: all of them again on a new connection.
    let mut extra_now: Vec<String> = extra
        .as_mut()
        .map(|e| e.borrow_and_update().clone())
        .unwrap_or_default();
    if !extra_now.is_empty() {
        requests.extend(plan.wire.subscribe_options(&extra_now));
    }
    for request in requests {
        if let Err(e) = write.send(frame(request)).await {
            return Ok(format!("subscribing: {e}"));
        }
    }
    tx.send(SocketEvent::Up {
        connection,
        reconnect: *was_up,
    })
    .await
    .map_err(|_| Gone)?;
    *was_up = true;
    let mut items = Vec::new();
    loop {
        let extra_changed = async {
            if let Some(e) = extra.as_mut()
                && e.changed().await.is_ok()
            {
                return e.borrow_and_update().clone();
            }
            // No moving instruments on this connection, or no one to move them any more.
            std::future::pending().await
        };
        let read = tokio::select! {
            r = tokio::time::timeout(settings.idle, read.next()) => r,
            wanted = extra_changed => {
                let added: Vec<String> = wanted.iter().filter(|t| !extra_now.contains(t)).cloned().collect();
                let dropped: Vec<String> = extra_now.iter().filter(|t| !wanted.contains(t)).cloned().collect();
                let mut requests = Vec::new();
                if !dropped.is_empty() {
                    requests.extend(plan.wire.unsubscribe(&dropped));
                }
                if !added.is_empty() {
                    requests.extend(plan.wire.subscribe_options(&added));
                }
                for request in requests {
                    if let Err(e) = write.send(frame(request)).await {
                        return Ok(format!("changing subscriptions: {e}"));
                    }
                }
                extra_now = wanted;
                continue;
            }
        };
        let msg = match read {
            Err(_) => return Ok(format!("no frame for {} s", settings.idle.as_secs())),
            Ok(None) => return Ok("the broker closed the connection".into()),
            Ok(Some(Err(e))) => return Ok(format!("reading: {e}")),
            Ok(Some(Ok(msg))) => msg,
        };
        let fault = match msg {
            Message::Binary(frame) => {
                *backoff = settings.first_backoff;
                plan.wire.decode_binary(&frame, &mut items).err()
            }
            Message::Text(text) => match plan.wire.decode_text(&text) {
                Ok(item) => {
                    items.extend(item);
                    None
                }
                Err(e) => Some(e),
            },
            Message::Ping(payload) => {
                let _ = write.send(Message::Pong(payload)).await;
                None
            }
            Message::Close(frame) => {
                return Ok(format!(
                    "the broker closed the connection{}",
                    frame
                        .map(|f| format!(": {} {}", f.code, f.reason))
                        .unwrap_or_default()
                ));
            }
            Message::Pong(_) | Message::Frame(_) => None,
        };
        for item in items.drain(..) {
            tx.send(SocketEvent::Item(item)).await.map_err(|_| Gone)?;
        }
        if let Some(e) = fault {
            tx.send(SocketEvent::Malformed {
                connection,
                reason: e.0,
            })
            .await
            .map_err(|_| Gone)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instruments_are_split_within_the_limits() {
        let tokens: Vec<String> = (0..5_000).map(|i| i.to_string()).collect();
        let s = shards(Wire::Kite, &tokens).unwrap();
        assert_eq!(
            s.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![3_000, 2_000]
        );
        let too_many: Vec<String> = (0..9_001).map(|i| i.to_string()).collect();
        assert!(
            shards(Wire::Kite, &too_many)
                .unwrap_err()
                .contains("allows 3")
        );
    }

    #[test]
    fn credentials_never_reach_a_reason() {
        let url = "wss://ws.kite.trade?api_key=abcd1234&access_token=secrettoken";
        assert_eq!(
            scrub(
                "HTTP 403 at wss://ws.kite.trade?api_key=abcd1234&access_token=secrettoken",
                url
            ),
            "HTTP 403 at <feed address>"
        );
        assert_eq!(scrub("token secrettoken refused", url), "token *** refused");
    }
}
