//! A local broker market-data WebSocket server: Kite Connect's ticker as its
//! WebSocket streaming documentation lays it out, and (with [`KiteTicker::start_with`]
//! and frames from [`crate::upstox_feed`]) Upstox's Market Data Feed V3, so the
//! host's feeds are tested against frames built from the documentation and the
//! published schema, not by their own code. Requests are recorded whether
//! they come as text (Kite) or as binary JSON (Upstox).
//!
//! From the documentation: the client connects to `?api_key=…&access_token=…`
//! (a wrong pair is refused at the handshake with 403); requests are JSON
//! text `{"a":"subscribe","v":[tokens]}` and `{"a":"mode","v":["full",[tokens]]}`;
//! market data comes as binary messages: a 2-byte big-endian packet count,
//! then each packet as a 2-byte length and its bytes, all integers big-endian
//! and prices in paise; a 1-byte message is a heartbeat; postbacks and errors
//! are JSON text (`{"type":"order","data":{…}}`, `{"type":"error","data":"…"}`).
//! Packet layouts, byte offsets as documented:
//! - LTP (8): token 0, last price 4.
//! - index full (32): token, last 4, high 8, low 12, open 16, close 20, change 24, exchange time 28.
//! - full (184): token, last 4, last qty 8, average price 12, volume 16, buy qty 20, sell qty 24,
//!   open 28, high 32, low 36, close 40, last trade time 44, OI 48, OI high 52, OI low 56,
//!   exchange time 60, then 10 depth entries of 12 bytes (qty 4, price 4, orders 2, padding 2),
//!   five bids then five offers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};

/// What the server sends to every open connection.
#[derive(Debug, Clone)]
pub enum Push {
    /// A binary message.
    Binary(Vec<u8>),
    /// A text message.
    Text(String),
    /// Close every connection (a drop mid-stream).
    Drop,
}

/// One full-mode quote, in rupees and paise as the documentation states them.
#[derive(Debug, Clone, Copy)]
pub struct Full {
    /// Instrument token.
    pub token: u32,
    /// Last price, paise.
    pub last_paise: u32,
    /// The previous session's close, paise (the packet's `close`; 0: none, a new listing).
    pub close_paise: u32,
    /// Cumulative volume of the day.
    pub volume: u32,
    /// Open interest.
    pub oi: u32,
    /// Exchange time, Unix seconds.
    pub exchange_secs: u32,
    /// Best bid, paise (0: no bid).
    pub bid_paise: u32,
    /// Best offer, paise (0: none).
    pub ask_paise: u32,
}

fn put(p: &mut Vec<u8>, v: u32) {
    p.extend_from_slice(&v.to_be_bytes());
}

impl Full {
    /// The 184-byte packet.
    #[must_use]
    pub fn packet(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(184);
        for v in [
            self.token,
            self.last_paise,
            1,
            self.last_paise,
            self.volume,
            1_000,
            1_000,
            self.last_paise,
            self.last_paise,
            self.last_paise,
            self.close_paise,
        ] {
            put(&mut p, v);
        }
        for v in [
            self.exchange_secs,
            self.oi,
            self.oi,
            self.oi,
            self.exchange_secs,
        ] {
            put(&mut p, v);
        }
        for level in 0..10u32 {
            let (qty, price) = match level {
                0 if self.bid_paise > 0 => (75, self.bid_paise),
                5 if self.ask_paise > 0 => (50, self.ask_paise),
                1..=4 if self.bid_paise > 0 => (10, self.bid_paise.saturating_sub(5 * level)),
                6..=9 if self.ask_paise > 0 => (10, self.ask_paise + 5 * (level - 5)),
                _ => (0, 0),
            };
            put(&mut p, qty);
            put(&mut p, price);
            p.extend_from_slice(&[0, 3, 0, 0]);
        }
        debug_assert_eq!(p.len(), 184);
        p
    }
}

/// The 8-byte LTP packet.
#[must_use]
pub fn ltp_packet(token: u32, last_paise: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(8);
    put(&mut p, token);
    put(&mut p, last_paise);
    p
}

/// The 32-byte index full packet.
#[must_use]
pub fn index_packet(token: u32, last_paise: u32, exchange_secs: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(32);
    for v in [
        token,
        last_paise,
        last_paise,
        last_paise,
        last_paise,
        last_paise,
        0,
        exchange_secs,
    ] {
        put(&mut p, v);
    }
    p
}

/// A binary message holding `packets`.
///
/// # Panics
/// More than 65,535 packets or one longer than 65,535 bytes (the format's limits).
#[must_use]
pub fn message(packets: &[Vec<u8>]) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(
        &u16::try_from(packets.len())
            .expect("packet count fits 2 bytes")
            .to_be_bytes(),
    );
    for p in packets {
        m.extend_from_slice(&u16::try_from(p.len()).expect("packet fits").to_be_bytes());
        m.extend_from_slice(p);
    }
    m
}

/// What the server saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Connections accepted so far.
    pub connections: usize,
    /// Handshakes refused (bad key or token).
    pub refused: usize,
    /// Requests per connection (0-based, in accept order), text or binary JSON.
    pub requests: HashMap<usize, Vec<serde_json::Value>>,
    /// How many of them came as binary frames.
    pub binary_requests: usize,
}

/// A running ticker.
pub struct KiteTicker {
    addr: SocketAddr,
    push: broadcast::Sender<Push>,
    seen: Arc<Mutex<Seen>>,
    query: Arc<Mutex<Vec<(String, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl KiteTicker {
    /// Start on a free port, accepting `api_key` with `access_token`.
    ///
    /// # Panics
    /// No port to bind.
    pub async fn start(api_key: &str, access_token: &str) -> Self {
        Self::start_with(&[("api_key", api_key), ("access_token", access_token)]).await
    }

    /// Start on a free port, accepting a connection whose query has every `(name, value)` of `query`.
    ///
    /// # Panics
    /// No port to bind.
    pub async fn start_with(query: &[(&str, &str)]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (push, _) = broadcast::channel(100_000);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let query = Arc::new(Mutex::new(
            query
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<Vec<_>>(),
        ));
        let (push2, seen2, query2) = (push.clone(), seen.clone(), query.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (push, seen, query) = (push2.clone(), seen2.clone(), query2.clone());
                tokio::spawn(async move { serve(stream, push, seen, query).await });
            }
        });
        Self {
            addr,
            push,
            seen,
            query,
            task,
        }
    }

    /// `ws://127.0.0.1:<port>`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Send to every open connection.
    pub fn push(&self, p: Push) {
        let _ = self.push.send(p);
    }

    /// Accept only `token` from now on (an expired session).
    pub fn set_token(&self, token: &str) {
        if let Ok(mut q) = self.query.lock() {
            for (k, v) in q.iter_mut() {
                if k == "access_token" {
                    token.clone_into(v);
                }
            }
        }
    }

    /// Connections open now.
    #[must_use]
    pub fn open(&self) -> usize {
        self.push.receiver_count()
    }

    /// What it saw so far.
    pub fn seen<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.seen.lock().expect("lock"))
    }
}

impl Drop for KiteTicker {
    fn drop(&mut self) {
        self.task.abort();
        let _ = self.push.send(Push::Drop);
    }
}

fn query_value<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

// The handshake callback's error type is tungstenite's `ErrorResponse` (an HTTP response).
#[allow(clippy::result_large_err)]
async fn serve(
    stream: tokio::net::TcpStream,
    push: broadcast::Sender<Push>,
    seen: Arc<Mutex<Seen>>,
    query: Arc<Mutex<Vec<(String, String)>>>,
) {
    let expected = query.lock().map(|q| q.clone()).unwrap_or_default();
    let check = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let q = req.uri().query().unwrap_or("");
        if expected
            .iter()
            .all(|(k, v)| query_value(q, k) == Some(v.as_str()))
        {
            Ok(resp)
        } else {
            let mut e = ErrorResponse::new(Some("Invalid `api_key` or `access_token`.".into()));
            *e.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::FORBIDDEN;
            Err(e)
        }
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, check).await else {
        if let Ok(mut s) = seen.lock() {
            s.refused += 1;
        }
        return;
    };
    let mut rx = push.subscribe();
    let id = {
        let mut s = seen.lock().expect("lock");
        s.connections += 1;
        s.connections - 1
    };
    let (mut write, mut read) = ws.split();
    loop {
        tokio::select! {
            msg = read.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    let v: serde_json::Value = serde_json::from_str(&t).unwrap_or(serde_json::Value::Null);
                    seen.lock().expect("lock").requests.entry(id).or_default().push(v);
                }
                Some(Ok(Message::Binary(b))) => {
                    let v: serde_json::Value = serde_json::from_slice(&b).unwrap_or(serde_json::Value::Null);
                    let mut s = seen.lock().expect("lock");
                    s.binary_requests += 1;
                    s.requests.entry(id).or_default().push(v);
                }
                Some(Ok(_)) => {}
                _ => return,
            },
            p = rx.recv() => match p {
                Ok(Push::Binary(b)) => { if write.send(Message::Binary(b.into())).await.is_err() { return; } }
                Ok(Push::Text(t)) => { if write.send(Message::Text(t.into())).await.is_err() { return; } }
                Ok(Push::Drop) | Err(broadcast::error::RecvError::Closed) => { let _ = write.close().await; return; }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
            },
        }
    }
}
