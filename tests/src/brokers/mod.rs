//! Local HTTP servers that answer as the brokers' documented APIs do (Kite
//! Connect v3, Upstox v3, OpenAlgo v1) and as Telegram's Bot API does, with
//! faults on demand: 429s, a placement that times out although the order was
//! taken, an expired token, a rejection, a 5xx.
//!
//! Each server runs on its own thread and runtime on a free port; its state
//! is shared so a test can script faults and read what was asked of it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

mod kite;
mod openalgo;
mod telegram;
mod upstox;

pub use kite::kite_quote;
pub use openalgo::openalgo_chain_row;
pub use upstox::{upstox_chain_row, upstox_nifty_rows};

/// Which API a mock speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// OpenAlgo v1.
    OpenAlgo,
    /// Kite Connect v3.
    Kite,
    /// Upstox v3.
    Upstox,
    /// Telegram Bot API.
    Telegram,
}

/// A fault for the next order placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer 429 without taking the order.
    RateLimit,
    /// Take the order, then answer after the client has given up.
    SlowAccept(Duration),
    /// Answer 500 without taking the order.
    ServerError,
    /// Answer 400 (refused).
    Reject(String),
}

/// What an order does at a status read (or a push), per its script.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Still working, nothing new.
    Open,
    /// This many more units fill at this price.
    Fill(Decimal, Decimal),
    /// Refused after it was taken (the broker's risk system, the exchange), with this message.
    Reject(String),
    /// Cancelled by the exchange (the rest of an IOC, a price band), with this message.
    Cancel(String),
}

/// How an order placed on the mock lives, taken in placement order from [`State::scripts`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Script {
    /// One step per status read; when they run out the order stays where it is.
    pub steps: Vec<Step>,
    /// A cancel request finds it filled in full at this price meanwhile (the race), and is refused.
    pub fill_on_cancel: Option<Decimal>,
    /// The order book (the lookup by tag) shows it only after this many reads.
    pub book_lag: u32,
}

/// An order the mock holds.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MockOrder {
    /// Broker id.
    pub id: String,
    /// The request's fields, as sent.
    pub fields: HashMap<String, String>,
    /// Tag (Kite, Upstox).
    pub tag: Option<String>,
    /// Symbol.
    pub symbol: String,
    /// BUY / SELL.
    pub side: String,
    /// Units.
    pub qty: Decimal,
    /// Status in the broker's words.
    pub status: String,
    /// Average price once complete.
    pub average_price: Option<Decimal>,
    /// Status polls so far.
    pub polls: u32,
    /// Units filled so far.
    pub filled: Decimal,
    /// The broker's status message (a rejection's reason).
    pub message: String,
    /// When the broker took it, `YYYY-MM-DD HH:MM:SS` IST.
    pub placed_at: String,
    /// Its script, if the test gave one (else it fills in full at the first read).
    pub script: Option<Script>,
    /// Book reads that still do not show it.
    pub hidden: u32,
    /// Its trades, each a quantity and price, in order.
    pub trades: Vec<(Decimal, Decimal)>,
}

impl MockOrder {
    /// Its trades; an order a test made filled without any, one trade of all it filled.
    #[must_use]
    pub fn trades_or_fill(&self) -> Vec<(Decimal, Decimal)> {
        match (self.trades.is_empty(), self.average_price) {
            (true, Some(p)) if self.filled > Decimal::ZERO => vec![(self.filled, p)],
            _ => self.trades.clone(),
        }
    }

    fn fill(&mut self, qty: Decimal, price: Decimal) {
        let qty = qty.min(self.qty - self.filled);
        if qty <= Decimal::ZERO {
            return;
        }
        let before = self.average_price.unwrap_or_default() * self.filled;
        self.trades.push((qty, price));
        self.filled += qty;
        self.average_price = Some(((before + price * qty) / self.filled).round_dp(2));
        self.status = if self.filled == self.qty {
            "COMPLETE".into()
        } else {
            "OPEN".into()
        };
    }
}

/// One request as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// GET, POST, DELETE.
    pub method: String,
    /// Path with query.
    pub path: String,
    /// Headers, lower-case names.
    pub headers: HashMap<String, String>,
    /// Body.
    pub body: String,
    /// When it arrived (benchmarks time the path to the broker with it).
    pub at: std::time::Instant,
}

/// What a mock knows and does.
#[derive(Debug)]
pub struct State {
    /// The API.
    pub flavor: Flavor,
    /// Kite's api_key (the only valid one).
    pub api_key: String,
    /// The valid access token (OpenAlgo: API key; Telegram: bot token).
    pub token: String,
    /// Orders taken.
    pub orders: Vec<MockOrder>,
    /// Every request.
    pub requests: Vec<Request>,
    /// Faults for the next placements, in order.
    pub faults: VecDeque<Fault>,
    /// The next this-many requests of any kind get 429.
    pub rate_limit_next: usize,
    /// After this many more orders are taken, the token expires.
    pub expire_after: Option<usize>,
    /// Last traded prices, for market fills.
    pub ltp: HashMap<String, Decimal>,
    /// Telegram: messages received (chat, text).
    pub messages: Vec<(String, String)>,
    /// Telegram: at most this many messages a second before 429.
    pub per_second: usize,
    /// The exchange's freeze quantity per trading symbol: a larger order is refused, as NSE refuses it.
    pub freeze: HashMap<String, Decimal>,
    /// The lot of a contract per trading symbol (the freeze refusal counts lots in it; a
    /// partial fill is whole lots of it).
    pub lots: HashMap<String, Decimal>,
    /// Kindness, the opt-in: an unscripted order fills in full at its first read and the
    /// order book shows it at once. By default it fills half (in whole lots) at the first read
    /// and the rest at the next, and the book shows it a read late.
    pub instant_fills: bool,
    /// A limit the last price has not reached rests, as on the exchange (off: every open
    /// order fills at the first read, never beyond its limit, the market's price being
    /// whatever a replay's quotes last said).
    pub limits_rest: bool,
    /// Kite's GTTs (standing triggers), in placement order.
    pub gtts: Vec<MockGtt>,
    /// GTTs placed so far (their ids count from 100001).
    pub gtt_seq: u64,
    /// Every GTT modification taken: its id and new trigger.
    pub gtt_modifications: Vec<(u64, Decimal)>,
    /// Every modification taken: the order's id and the fields sent.
    pub modifications: Vec<(String, HashMap<String, String>)>,
    /// The margin calculator: rupees of margin per unit ordered.
    pub margin_per_unit: Decimal,
    /// What a calculation of several legs with both buys and sells costs, as a fraction of
    /// their sum (the hedge benefit a broker's basket margin gives; 1: none).
    pub basket_hedge: Decimal,
    /// The account's free margin (Kite `net`, Upstox `available_margin`, OpenAlgo `availablecash`).
    pub funds: Decimal,
    /// Upstox: trading symbol of each instrument token (positions name both).
    pub symbols: HashMap<String, String>,
    /// Upstox: the one-time market-feed address `GET /v3/feed/market-data-feed/authorize` hands out.
    pub feed_url: Option<String>,
    /// Upstox: the one-time order-stream address `GET /v2/feed/portfolio-stream-feed/authorize` hands out.
    pub portfolio_url: Option<String>,
    /// Upstox: the option contracts `GET /v2/option/contract` lists (their `expiry`, …).
    pub option_contracts: Vec<Value>,
    /// Upstox: the rows `GET /v2/option/chain` answers, per expiry (`YYYY-MM-DD`);
    /// OpenAlgo: the `chain` array `/api/v1/optionchain` answers, per `expiry_date` (`DDMMMYY`).
    pub option_chain: HashMap<String, Vec<Value>>,
    /// Kite: the full quotes `GET /quote` answers, by `EXCHANGE:TRADINGSYMBOL`.
    pub quotes: HashMap<String, Value>,
    /// Kite: the one-minute candles `GET /instruments/historical/:token/minute` answers, by
    /// instrument token: `[time, open, high, low, close, volume, oi]`, time `2024-01-01T09:15:00+0530`.
    /// Upstox: `GET /v3/historical-candle/intraday/:instrument_key/minutes/1`'s, by instrument key,
    /// the same rows with `+05:30`. OpenAlgo: `/api/v1/history`'s rows (`{timestamp, open, …}`) by `EXCHANGE:SYMBOL`.
    pub candles: HashMap<String, Vec<Value>>,
    /// OpenAlgo: the expiries `/api/v1/expiry` lists (`DD-MMM-YY`), and the spot its option chain gives.
    pub expiries: Vec<String>,
    /// OpenAlgo: the underlying's last price in its option-chain answer.
    pub underlying_ltp: f64,
    /// Scripts for the next orders placed, in order.
    pub scripts: VecDeque<Script>,
    /// The script of every order placed when `scripts` is empty (`None`: the market fills it, in
    /// two parts unless `instant_fills`).
    pub default_script: Option<Script>,
    /// Kite, Upstox: the trading symbols (Upstox: instrument tokens) the exchange knows;
    /// an order for any other is refused as the real API refuses it. Empty: any.
    pub tradable: Vec<String>,
    /// Until then every connection is dropped unanswered (the server restarting).
    pub down_until: Option<std::time::Instant>,
    /// The time the next order is stamped with, `YYYY-MM-DD HH:MM:SS` IST (else the wall clock).
    pub clock: Option<String>,
    sent_at: VecDeque<std::time::Instant>,
    /// The exchange's tick per trading symbol (as the master the test serves says): a price
    /// or trigger off it is refused as Kite refuses it.
    pub ticks: HashMap<String, Decimal>,
    /// Kite: the day's circuit limits (lower, upper) per trading symbol; an order priced
    /// beyond them is refused as Kite refuses it.
    pub circuits: HashMap<String, (Decimal, Decimal)>,
    /// Order requests (placements, modifications, cancels) taken per second before the next
    /// is answered 429, as Kite (10) and OpenAlgo (`ORDER_RATE_LIMIT`, 10) limit them; 0: none.
    pub orders_per_second: usize,
    order_requests_at: VecDeque<std::time::Instant>,
    /// Historical-data requests taken per second before the next is answered 429, as Kite
    /// limits them (3); 0: none.
    pub history_per_second: usize,
    /// When each historical-data request came (a test reads the pacing from it).
    pub history_requests_at: Vec<std::time::Instant>,
    /// The broker's own clock of the market day, which runs from where a test sets it
    /// ([`State::set_market_time`]); it starts at 10:00 IST on the day the mock starts, so a
    /// test that does not set it never reaches a cut-off.
    market_clock: (i64, std::time::Instant),
    /// The broker's intraday cut-offs, seconds after midnight IST: equity's, then F&O's. At
    /// them, by its own clock, it squares off every open intraday position itself
    /// ([`State::square_off_intraday`]), as Zerodha does at 15:20 and 15:25. `None`: never.
    pub cut_offs: Option<(i64, i64)>,
    /// The days (since the epoch, IST) whose equity and F&O cut-offs have been run.
    cut_offs_run: (i64, i64),
}

/// A running mock.
#[derive(Debug, Clone)]
pub struct MockServer {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// Its state.
    pub state: Arc<Mutex<State>>,
}

impl MockServer {
    /// [`Self::start`], kind: unscripted orders fill in full at their first read and the
    /// order book shows them at once (`instant_fills`). For tests of one mechanism (a
    /// protocol's frames, a sequence of router reports) whose partial fills are scripted
    /// where they matter; the end-to-end runs use the unkind default.
    #[must_use]
    pub fn start_kind(flavor: Flavor, api_key: &str, token: &str) -> Self {
        let server = Self::start(flavor, api_key, token);
        server.state().instant_fills = true;
        server
    }

    /// Start a mock of `flavor` accepting `token` (and, for Kite, `api_key`).
    ///
    /// # Panics
    /// When no port can be bound.
    #[must_use]
    pub fn start(flavor: Flavor, api_key: &str, token: &str) -> Self {
        let state = Arc::new(Mutex::new(State {
            flavor,
            api_key: api_key.to_owned(),
            token: token.to_owned(),
            orders: Vec::new(),
            requests: Vec::new(),
            faults: VecDeque::new(),
            rate_limit_next: 0,
            expire_after: None,
            ltp: HashMap::new(),
            messages: Vec::new(),
            per_second: 1000,
            freeze: HashMap::new(),
            lots: HashMap::new(),
            instant_fills: false,
            limits_rest: false,
            gtts: Vec::new(),
            gtt_seq: 0,
            gtt_modifications: Vec::new(),
            margin_per_unit: Decimal::ZERO,
            basket_hedge: Decimal::ONE,
            modifications: Vec::new(),
            funds: Decimal::from(10_000_000),
            symbols: HashMap::new(),
            feed_url: None,
            portfolio_url: None,
            option_contracts: Vec::new(),
            option_chain: HashMap::new(),
            quotes: HashMap::new(),
            candles: HashMap::new(),
            expiries: Vec::new(),
            underlying_ltp: 0.0,
            scripts: VecDeque::new(),
            default_script: None,
            tradable: Vec::new(),
            down_until: None,
            clock: None,
            sent_at: VecDeque::new(),
            orders_per_second: match flavor {
                Flavor::Kite | Flavor::OpenAlgo => 10,
                _ => 0,
            },
            order_requests_at: VecDeque::new(),
            history_per_second: match flavor {
                Flavor::Kite => 3,
                _ => 0,
            },
            history_requests_at: Vec::new(),
            ticks: HashMap::new(),
            circuits: HashMap::new(),
            market_clock: (ten_ist_today(), std::time::Instant::now()),
            cut_offs: cut_offs(flavor),
            cut_offs_run: (i64::MIN, i64::MIN),
        }));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let shared = state.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                // The broker's risk system works by its own clock, requests or none.
                let clock = shared.clone();
                tokio::spawn(async move {
                    let mut every = tokio::time::interval(Duration::from_millis(100));
                    loop {
                        every.tick().await;
                        if let Ok(mut s) = clock.lock() {
                            s.run_cut_offs();
                        }
                    }
                });
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let down = shared
                        .lock()
                        .map(|s| s.down_until.is_some_and(|t| std::time::Instant::now() < t))
                        .unwrap_or(false);
                    if down {
                        drop(stream); // restarting: the connection is closed unanswered
                        continue;
                    }
                    tokio::spawn(serve(stream, shared.clone()));
                }
            });
        });
        Self { url, state }
    }

    /// Drop every connection for `d`, new and open ones, as a server restarting does;
    /// what it held (orders, sessions) is still there when it is back.
    pub fn restart_for(&self, d: Duration) {
        self.state().down_until = Some(std::time::Instant::now() + d);
    }

    /// Lock the state.
    ///
    /// # Panics
    /// A poisoned lock.
    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("mock state")
    }
}

async fn serve(mut stream: tokio::net::TcpStream, state: Arc<Mutex<State>>) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // Headers.
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or_default().split(' ');
        let (method, path) = (
            first.next().unwrap_or_default().to_owned(),
            first.next().unwrap_or_default().to_owned(),
        );
        let headers: HashMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < end + 4 + len {
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
        buf.drain(..end + 4 + len);
        if state
            .lock()
            .map(|s| s.down_until.is_some_and(|t| std::time::Instant::now() < t))
            .unwrap_or(false)
        {
            return; // restarting: kept-alive connections die too
        }
        let request = Request {
            method,
            path,
            headers,
            body,
            at: std::time::Instant::now(),
        };
        let (status, answer, delay) = {
            let mut s = state.lock().expect("mock state");
            s.requests.push(request.clone());
            handle(&mut s, &request)
        };
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        let text = answer.to_string();
        let reason = match status {
            200 => "OK",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            429 => "Too Many Requests",
            _ => "Internal Server Error",
        };
        let response = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn form(body: &str) -> HashMap<String, String> {
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.replace('+', " ").into_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&String::from_utf8_lossy(&bytes[i + 1..i + 3]), 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query(path: &str, key: &str) -> Option<String> {
    path.split_once('?').and_then(|(_, q)| form(q).remove(key))
}

type Reply = (u16, Value, Option<Duration>);

/// A request no route of the server takes.
fn not_found(r: &Request) -> Reply {
    (
        404,
        json!({ "status": "error", "message": format!("no route {} {}", r.method, r.path) }),
        None,
    )
}

fn token_error(flavor: Flavor) -> Reply {
    match flavor {
        Flavor::Kite => (
            403,
            json!({ "status": "error", "message": "Incorrect `api_key` or `access_token`.", "data": null, "error_type": "TokenException" }),
            None,
        ),
        Flavor::Upstox => (
            401,
            json!({ "status": "error", "errors": [{ "errorCode": "UDAPI100050", "message": "Invalid token used to access API", "propertyPath": null, "invalidValue": null, "error_code": "UDAPI100050", "property_path": null, "invalid_value": null }] }),
            None,
        ),
        Flavor::OpenAlgo => (
            403,
            json!({ "status": "error", "message": "Invalid openalgo apikey" }),
            None,
        ),
        Flavor::Telegram => (
            401,
            json!({ "ok": false, "error_code": 401, "description": "Unauthorized" }),
            None,
        ),
    }
}

fn refusal(flavor: Flavor, message: &str) -> Reply {
    match flavor {
        Flavor::Kite => (
            400,
            json!({ "status": "error", "message": message, "data": null, "error_type": "InputException" }),
            None,
        ),
        Flavor::Upstox => (
            400,
            json!({ "status": "error", "errors": [{ "errorCode": "UDAPI1026", "message": message, "error_code": "UDAPI1026", "property_path": null, "invalid_value": null }] }),
            None,
        ),
        _ => (400, json!({ "status": "error", "message": message }), None),
    }
}

fn too_many(flavor: Flavor) -> Reply {
    match flavor {
        Flavor::Kite => (
            429,
            json!({ "status": "error", "message": "Too many requests", "data": null, "error_type": "NetworkException" }),
            None,
        ),
        Flavor::Upstox => (
            429,
            json!({ "status": "error", "errors": [{ "errorCode": "UDAPI10005", "message": "Too Many Request Sent", "error_code": "UDAPI10005" }] }),
            None,
        ),
        _ => (
            429,
            json!({ "status": "error", "message": "Rate limit exceeded" }),
            None,
        ),
    }
}

fn handle(s: &mut State, r: &Request) -> Reply {
    if s.flavor == Flavor::Telegram {
        return telegram::route(s, r);
    }
    s.run_cut_offs();
    if s.rate_limit_next > 0 {
        s.rate_limit_next -= 1;
        return too_many(s.flavor);
    }
    // Authentication, as each API does it.
    let body_json: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    let authorised = match s.flavor {
        Flavor::Kite => {
            r.headers.get("x-kite-version").map(String::as_str) == Some("3")
                && r.headers.get("authorization")
                    == Some(&format!("token {}:{}", s.api_key, s.token))
        }
        Flavor::Upstox => r.headers.get("authorization") == Some(&format!("Bearer {}", s.token)),
        Flavor::OpenAlgo => body_json["apikey"].as_str() == Some(s.token.as_str()),
        Flavor::Telegram => true,
    };
    if !authorised {
        return token_error(s.flavor);
    }
    let route = r.path.split('?').next().unwrap_or_default().to_owned();
    let order_request = r.method != "GET"
        && (route.starts_with("/orders/")
            || route.starts_with("/v3/order/")
            || matches!(
                route.as_str(),
                "/api/v1/placeorder"
                    | "/api/v1/placesmartorder"
                    | "/api/v1/modifyorder"
                    | "/api/v1/cancelorder"
            ));
    if order_request && s.orders_per_second > 0 {
        // The broker's order rate: the requests of the last second, the next one refused.
        let now = std::time::Instant::now();
        while s
            .order_requests_at
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            s.order_requests_at.pop_front();
        }
        if s.order_requests_at.len() >= s.orders_per_second {
            return too_many(s.flavor);
        }
        s.order_requests_at.push_back(now);
    }
    if route.starts_with("/instruments/historical/") {
        let now = std::time::Instant::now();
        let recent = s
            .history_requests_at
            .iter()
            .filter(|t| now.duration_since(**t) < Duration::from_secs(1))
            .count();
        s.history_requests_at.push(now);
        if s.history_per_second > 0 && recent >= s.history_per_second {
            return too_many(s.flavor);
        }
    }
    match s.flavor {
        Flavor::Kite => kite::route(s, r, &route),
        Flavor::Upstox => upstox::route(s, r, &route, &body_json),
        Flavor::OpenAlgo => openalgo::route(s, r, &route, &body_json),
        Flavor::Telegram => telegram::route(s, r),
    }
}

/// 10:00 IST today, in ms since the epoch: where a mock's market clock starts.
fn ten_ist_today() -> i64 {
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis()),
    )
    .unwrap_or(0);
    let day = (now + 19_800_000).div_euclid(86_400_000);
    day * 86_400_000 - 19_800_000 + 10 * 3_600_000
}

/// Each broker's intraday cut-offs (equity, F&O), seconds after midnight IST: Zerodha's
/// 15:20 and 15:25; Upstox's 15:15 for both. OpenAlgo passes orders to the broker behind
/// it, whose cut-offs apply; it keeps none of its own.
fn cut_offs(flavor: Flavor) -> Option<(i64, i64)> {
    let at = |h: i64, m: i64| h * 3600 + m * 60;
    match flavor {
        Flavor::Kite => Some((at(15, 20), at(15, 25))),
        Flavor::Upstox => Some((at(15, 15), at(15, 15))),
        Flavor::OpenAlgo | Flavor::Telegram => None,
    }
}

impl State {
    /// The broker's clock of the market day, ms since the epoch.
    #[must_use]
    pub fn market_ms(&self) -> i64 {
        let (at, since) = self.market_clock;
        at + i64::try_from(since.elapsed().as_millis()).unwrap_or(i64::MAX / 2)
    }

    /// Set the broker's clock to `ms` since the epoch; it runs on from there. A cut-off it
    /// has already passed that day is not run again.
    pub fn set_market_time(&mut self, ms: i64) {
        self.market_clock = (ms, std::time::Instant::now());
    }

    /// Square off the intraday positions whose cut-off the broker's clock has reached today.
    fn run_cut_offs(&mut self) {
        let Some((equity, fno)) = self.cut_offs else {
            return;
        };
        let ist = self.market_ms().div_euclid(1000) + 19_800;
        let (day, secs) = (ist.div_euclid(86_400), ist.rem_euclid(86_400));
        if secs >= equity && self.cut_offs_run.0 != day {
            self.cut_offs_run.0 = day;
            if let Err(e) = self.square_off_where(|o| !derivative(o)) {
                eprintln!("mock broker: no square-off at the equity cut-off: {e}");
            }
        }
        if secs >= fno && self.cut_offs_run.1 != day {
            self.cut_offs_run.1 = day;
            if let Err(e) = self.square_off_where(derivative) {
                eprintln!("mock broker: no square-off at the F&O cut-off: {e}");
            }
        }
    }

    /// The broker squares off every open intraday position itself, as Zerodha does at its
    /// cut-offs (15:20 equity, 15:25 F&O) and the other brokers at theirs: a market order of
    /// its own per position (no tag), complete at the last traded price. Returns how many.
    /// (The broker's clock does this at its cut-offs; a test calls it for the broker's risk
    /// system or a trader at its terminal closing a position at any other time.)
    ///
    /// # Panics
    /// When a position's instrument has no last price to fill at.
    pub fn square_off_intraday(&mut self) -> usize {
        self.square_off_where(|_| true)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Self::square_off_intraday`] of the orders `which` takes; an error names a position
    /// with no last price to fill at (nothing is squared off then).
    fn square_off_where(&mut self, which: impl Fn(&MockOrder) -> bool) -> Result<usize, String> {
        let intraday = |o: &MockOrder| {
            which(o)
                && o.fields
                    .get("product")
                    .is_some_and(|p| p == "MIS" || p == "I")
        };
        // Per symbol: its exchange (as its orders named it) and net filled units.
        let mut net: Vec<(String, Option<String>, Decimal)> = Vec::new();
        for o in self
            .orders
            .iter()
            .filter(|o| o.filled > Decimal::ZERO && intraday(o))
        {
            let q = if o.side == "BUY" { o.filled } else { -o.filled };
            match net.iter_mut().find(|(sym, _, _)| *sym == o.symbol) {
                Some((_, _, n)) => *n += q,
                None => net.push((o.symbol.clone(), o.fields.get("exchange").cloned(), q)),
            }
        }
        net.retain(|(_, _, q)| !q.is_zero());
        if let Some((symbol, _, _)) = net.iter().find(|(sym, _, _)| !self.ltp.contains_key(sym)) {
            return Err(format!("no last price of {symbol} to square off at"));
        }
        for (symbol, exchange, q) in &net {
            let price = self.ltp[symbol];
            let id = format!("auto-sq-{}", self.orders.len() + 1);
            let mut fields: HashMap<String, String> = [
                ("product".to_owned(), "MIS".to_owned()),
                ("order_type".to_owned(), "MARKET".to_owned()),
            ]
            .into();
            if let Some(exchange) = exchange {
                fields.insert("exchange".to_owned(), exchange.clone());
            }
            let mut o = MockOrder {
                id,
                symbol: symbol.clone(),
                side: if *q > Decimal::ZERO { "SELL" } else { "BUY" }.into(),
                qty: q.abs(),
                status: "OPEN".into(),
                placed_at: self.clock.clone().unwrap_or_else(ist_now),
                fields,
                ..MockOrder::default()
            };
            o.fill(o.qty, price);
            self.orders.push(o);
        }
        Ok(net.len())
    }
}

/// Whether `o` is for a derivative (its cut-off is F&O's): Kite's `NFO` exchange, Upstox's
/// `NSE_FO|` instrument tokens.
fn derivative(o: &MockOrder) -> bool {
    o.fields.get("exchange").is_some_and(|e| e == "NFO") || o.symbol.starts_with("NSE_FO|")
}

/// Net filled units per symbol (Upstox: per instrument token), zeros left out.
/// The average price of the net position in `symbol`: of the buys for a long, the sells for
/// a short (as the brokers' position books report a day's net position); 0 when flat.
fn net_average(s: &State, symbol: &str, net: Decimal) -> f64 {
    let side = if net > Decimal::ZERO { "BUY" } else { "SELL" };
    let (mut qty, mut value) = (Decimal::ZERO, Decimal::ZERO);
    for o in s
        .orders
        .iter()
        .filter(|o| o.symbol == symbol && o.side == side)
    {
        for (q, p) in o.trades_or_fill() {
            qty += q;
            value += q * p;
        }
    }
    if qty.is_zero() || net.is_zero() {
        return 0.0;
    }
    (value / qty)
        .round_dp(2)
        .to_string()
        .parse::<f64>()
        .unwrap_or(0.0)
}

fn net_positions(s: &State) -> Vec<(String, Decimal)> {
    let mut net: Vec<(String, Decimal)> = Vec::new();
    for o in s.orders.iter().filter(|o| o.filled > Decimal::ZERO) {
        let q = if o.side == "BUY" { o.filled } else { -o.filled };
        match net.iter_mut().find(|(sym, _)| *sym == o.symbol) {
            Some((_, n)) => *n += q,
            None => net.push((o.symbol.clone(), q)),
        }
    }
    net.retain(|(_, q)| !q.is_zero());
    net
}

fn ok_kite(data: Value) -> Reply {
    (200, json!({ "status": "success", "data": data }), None)
}

fn next_id(s: &State) -> String {
    format!("2504080{:08}", s.orders.len() + 1)
}

fn place(
    s: &mut State,
    fields: HashMap<String, String>,
    tag: Option<String>,
    symbol: &str,
    side: &str,
    qty: &str,
    answer: impl Fn(&str) -> Value,
) -> Reply {
    let fault = s.faults.pop_front();
    match &fault {
        Some(Fault::RateLimit) => return too_many(s.flavor),
        Some(Fault::ServerError) => {
            return match s.flavor {
                Flavor::Kite => (
                    500,
                    json!({ "status": "error", "message": "Something went wrong", "error_type": "GeneralException" }),
                    None,
                ),
                _ => (
                    500,
                    json!({ "status": "error", "message": "Internal server error" }),
                    None,
                ),
            };
        }
        Some(Fault::Reject(m)) => return refusal(s.flavor, m),
        _ => {}
    }
    let Ok(qty) = qty.trim_matches('"').parse::<Decimal>() else {
        return refusal(s.flavor, "Invalid quantity");
    };
    if let Some(limit) = s.freeze.get(symbol).copied().filter(|limit| qty > *limit) {
        let text = if s.flavor == Flavor::Kite {
            // Kite's words (an InputException), lots by the contract's lot where it is set.
            let lot = s.lots.get(symbol).copied().unwrap_or(Decimal::ONE);
            format!(
                "The order quantity {qty} ({} lots) is higher than the maximum quantity of {limit} ({} lots) allowed by the exchanges. Please reduce the order quantity or use iceberg orders.",
                (qty / lot).trunc(),
                (limit / lot).trunc()
            )
        } else {
            "Quantity freeze: the order quantity is above the exchange's freeze limit for this contract.".to_owned()
        };
        return refusal(s.flavor, &text);
    }
    let id = next_id(s);
    let mut script = s.scripts.pop_front().or_else(|| s.default_script.clone());
    // NSE's limit price protection on options: a limit more than ₹20 (last price up to ₹50)
    // or 40 % (above) from the last price is taken, then cancelled by the exchange.
    let limit = fields
        .get("price")
        .filter(|_| fields.get("order_type").map(String::as_str) == Some("LIMIT"))
        .and_then(|p| p.trim_matches('"').parse::<Decimal>().ok());
    if let (Some(limit), Some(last)) = (limit, s.ltp.get(symbol).copied())
        && is_option(symbol)
    {
        let width = if last <= Decimal::from(50) {
            Decimal::from(20)
        } else {
            last * Decimal::new(4, 1)
        };
        if limit < last - width || limit > last + width {
            script = Some(Script {
                steps: vec![Step::Cancel(OUTSIDE_LPP.to_owned())],
                ..Script::default()
            });
        }
    }
    let placed_at = s.clock.clone().unwrap_or_else(ist_now);
    // A stop (SL, SL-M) rests until the market trades through its trigger.
    let stop = is_stop(&fields);
    s.orders.push(MockOrder {
        id: id.clone(),
        fields,
        tag,
        symbol: symbol.to_owned(),
        side: side.to_ascii_uppercase(),
        qty,
        status: if stop {
            TRIGGER_PENDING.into()
        } else {
            "OPEN".into()
        },
        average_price: None,
        polls: 0,
        filled: Decimal::ZERO,
        message: String::new(),
        placed_at,
        // The order book shows a new order a read late, as a busy broker's does; at once only when kind.
        hidden: script
            .as_ref()
            .map_or(u32::from(!s.instant_fills), |sc| sc.book_lag),
        script,
        trades: Vec::new(),
    });
    if let Some(n) = s.expire_after.as_mut() {
        *n = n.saturating_sub(1);
        if *n == 0 {
            // The session ends (a new login elsewhere, the day's expiry): the next call fails.
            s.token = format!("{}-expired", s.token);
            s.expire_after = None;
        }
    }
    let delay = match fault {
        Some(Fault::SlowAccept(d)) => Some(d),
        _ => None,
    };
    (200, answer(&id), delay)
}

/// The wall clock in IST, as brokers stamp orders.
fn ist_now() -> String {
    ist_stamp(
        i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis()),
        )
        .unwrap_or(0),
    )
}

/// `ms` since the epoch as brokers print order times: `YYYY-MM-DD HH:MM:SS`, IST.
#[must_use]
pub fn ist_stamp(ms: i64) -> String {
    let secs = ms.div_euclid(1000) + 19_800;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = tradehost::market::clock::civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The orders a book read shows: an order with a lag shows up only after that many reads.
fn book(s: &mut State) -> Vec<MockOrder> {
    let mut shown = Vec::new();
    for o in &mut s.orders {
        if o.hidden > 0 {
            o.hidden -= 1;
        } else {
            shown.push(o.clone());
        }
    }
    shown
}

/// NSE's cancel of an option limit outside its limit price protection range, as Zerodha words it.
pub const OUTSIDE_LPP: &str = "The order was cancelled by the exchange because the price is outside the current allowed limit price protection range";

/// Kite's refusal of a stop-loss-market order on an F&O option (NSE discontinued SL-M on
/// options in September 2021; the exchange itself answers "16052: Function not available").
pub const SL_M_BLOCKED: &str = "Stoploss Market orders (SL-M) are blocked for F&O contracts as they have been discontinued by the exchange. Try placing SL-M order with market protection enabled.";

/// Upstox's refusal of the same (its help: stop-loss market "is currently not permitted at
/// the exchange level"; the API's error code for it is not documented).
pub const UPSTOX_SL_M_BLOCKED: &str =
    "Stop loss market orders are currently not permitted at the exchange level for options";

/// Modifications Kite takes per order; the next is refused and the order must be cancelled
/// and placed again.
pub const MAX_MODIFICATIONS: usize = 25;

/// An option's trading symbol (`NIFTY24MAR20800CE`, `NIFTY28MAR2420800PE`).
fn is_option(symbol: &str) -> bool {
    (symbol.ends_with("CE") || symbol.ends_with("PE")) && symbol.bytes().any(|b| b.is_ascii_digit())
}

/// A stop's status until it triggers, as Kite writes it.
pub const TRIGGER_PENDING: &str = "TRIGGER PENDING";

/// Whether an order's fields make it a stop (Kite and Upstox `order_type`, OpenAlgo `pricetype`).
fn is_stop(fields: &HashMap<String, String>) -> bool {
    ["order_type", "pricetype"]
        .iter()
        .any(|k| fields.get(*k).is_some_and(|t| t == "SL" || t == "SL-M"))
}

/// A status read: a scripted order takes its next step; a stop triggers when the last price
/// reaches it; a limit the last price has not reached rests; any other open order fills at the
/// market, never beyond its limit: half (in whole lots) at its first read and the rest at the
/// next, or all at once where the test asked for `instant_fills`.
fn poll(s: &mut State, id: &str) -> Option<MockOrder> {
    let ltp = s.ltp.clone();
    let limits_rest = s.limits_rest;
    let (instant, lots) = (s.instant_fills, s.lots.clone());
    let o = s.orders.iter_mut().find(|o| o.id == id)?;
    o.polls += 1;
    if o.status == TRIGGER_PENDING {
        // Triggered when the last price reaches the trigger: a sell stop at or below it, a buy stop at or above.
        let trigger = o
            .fields
            .get("trigger_price")
            .and_then(|t| t.parse::<Decimal>().ok());
        if let (Some(trigger), Some(last)) = (trigger, ltp.get(&o.symbol).copied()) {
            let hit = if o.side == "SELL" {
                last <= trigger
            } else {
                last >= trigger
            };
            if hit {
                o.status = "OPEN".into();
                // An SL becomes a limit at its price: it fills only where the market meets it.
                let limit = o
                    .fields
                    .get("price")
                    .and_then(|p| p.trim_matches('"').parse::<Decimal>().ok())
                    .filter(|p| {
                        !p.is_zero()
                            && o.fields
                                .get("order_type")
                                .or(o.fields.get("pricetype"))
                                .is_some_and(|t| t == "SL")
                    });
                match limit {
                    Some(l) if (o.side == "SELL" && last < l) || (o.side != "SELL" && last > l) => {
                    }
                    _ => o.fill(o.qty, last),
                }
            }
        }
        return Some(o.clone());
    }
    if let Some(script) = o.script.as_mut() {
        if o.status == "OPEN" && !script.steps.is_empty() {
            match script.steps.remove(0) {
                Step::Open => {}
                Step::Fill(qty, price) => o.fill(qty, price),
                Step::Reject(m) => {
                    o.status = "REJECTED".into();
                    o.message = m;
                }
                Step::Cancel(m) => {
                    o.status = "CANCELLED".into();
                    o.message = m;
                }
            }
        }
        return Some(o.clone());
    }
    if o.status == "OPEN" {
        let limit = o
            .fields
            .get("price")
            .and_then(|p| p.trim_matches('"').parse::<Decimal>().ok())
            .filter(|p| !p.is_zero());
        // A limit the market has not reached rests, as on the exchange: a buy above the last price, a sell below.
        if let (true, Some(l), Some(last)) = (limits_rest, limit, ltp.get(&o.symbol).copied()) {
            let marketable = if o.side == "BUY" {
                last <= l
            } else {
                last >= l
            };
            if !marketable {
                return Some(o.clone());
            }
        }
        // At the last traded price the test's market gave (a limit at most at its limit);
        // with no price at all a market order finds nobody to trade with and works on.
        let Some(price) = ltp.get(&o.symbol).copied().or(limit) else {
            return Some(o.clone());
        };
        // A limit (protected) order fills at the market, never beyond its limit.
        let price = match (limit, o.side.as_str()) {
            (Some(l), "BUY") => price.min(l),
            (Some(l), _) => price.max(l),
            (None, _) => price,
        };
        // As the exchange matches a market order against the book: part of it (half, in
        // whole lots) at the first read, the rest at the next; all at once only when kind.
        let lot = lots.get(&o.symbol).copied().unwrap_or(Decimal::ONE);
        let half = ((o.qty / lot / Decimal::TWO).floor() * lot).max(Decimal::ZERO);
        if !instant && o.filled.is_zero() && half > Decimal::ZERO {
            o.fill(half, price);
        } else {
            o.fill(o.qty, price);
        }
    }
    Some(o.clone())
}

/// Apply new terms to a working order (its fields, its quantity), recording each change.
fn modify(
    s: &mut State,
    id: &str,
    fields: HashMap<String, String>,
    answer: impl Fn(&str) -> Value,
) -> Reply {
    let flavor = s.flavor;
    let taken = s.modifications.iter().filter(|(m, _)| m == id).count();
    if matches!(flavor, Flavor::Kite | Flavor::OpenAlgo) && taken >= MAX_MODIFICATIONS {
        // Kite's cap (OpenAlgo relays Zerodha's answer): cancel and place a new order instead.
        return match flavor {
            Flavor::Kite => (
                400,
                json!({ "status": "error", "message": "Maximum allowed order modifications exceeded.", "data": null, "error_type": "NetworkException" }),
                None,
            ),
            _ => refusal(flavor, "Maximum allowed order modifications exceeded."),
        };
    }
    match s.orders.iter_mut().find(|o| o.id == id) {
        Some(o) if o.status == "OPEN" || o.status == TRIGGER_PENDING => {
            if let Some(q) = fields
                .get("quantity")
                .and_then(|q| q.trim_matches('"').parse::<Decimal>().ok())
            {
                o.qty = q;
            }
            for (k, v) in &fields {
                o.fields.insert(k.clone(), v.clone());
            }
            let changed = (id.to_owned(), fields);
            s.modifications.push(changed);
            (200, answer(id), None)
        }
        Some(_) => refusal(flavor, "Order cannot be modified as it is not open."),
        None => refusal(flavor, "Order not found"),
    }
}

fn cancel(s: &mut State, id: &str, answer: impl Fn(&str) -> Value) -> Reply {
    let flavor = s.flavor;
    match s.orders.iter_mut().find(|o| o.id == id) {
        Some(o)
            if o.status == "OPEN"
                && o.script
                    .as_ref()
                    .is_some_and(|sc| sc.fill_on_cancel.is_some()) =>
        {
            // The fill was on its way: the cancel comes too late.
            let price = o
                .script
                .as_ref()
                .and_then(|sc| sc.fill_on_cancel)
                .unwrap_or_default();
            o.fill(o.qty, price);
            refusal(
                flavor,
                "Order cannot be cancelled as it is being processed. Try later.",
            )
        }
        Some(o) if o.status == "OPEN" || o.status == TRIGGER_PENDING => {
            o.status = "CANCELLED".into();
            o.message = "Cancelled by user".into();
            (200, answer(id), None)
        }
        Some(_) => refusal(
            flavor,
            "Order cannot be cancelled as it is being processed. Try later.",
        ),
        None => refusal(flavor, "Order not found"),
    }
}

fn whole(d: Decimal) -> u64 {
    d.to_string().parse::<u64>().unwrap_or(0)
}

fn float(d: Option<Decimal>) -> f64 {
    d.map_or(0.0, |p| p.to_string().parse::<f64>().unwrap_or(0.0))
}

/// A GTT at the mock Kite.
#[derive(Debug, Clone, Default)]
pub struct MockGtt {
    /// Trigger id.
    pub id: u64,
    /// `active`, `triggered`, `deleted` (Kite, OpenAlgo) or `cancelled` (Upstox).
    pub status: String,
    /// Trading symbol.
    pub symbol: String,
    /// BUY / SELL.
    pub side: String,
    /// Units.
    pub qty: Decimal,
    /// The trigger value.
    pub trigger: Decimal,
    /// The limit of the order it places (0: at the market).
    pub limit: Decimal,
    /// The last price given at placement: the trigger fires when the market crosses from there.
    pub last_price: Decimal,
    /// `YYYY-MM-DD HH:MM:SS` IST.
    pub created_at: String,
    /// The order it placed once triggered.
    pub order_id: Option<String>,
}

/// A GTT's id as each broker writes it: Upstox `GTT-C…`, Kite and OpenAlgo a number.
fn gtt_key(flavor: Flavor, id: u64) -> String {
    match flavor {
        Flavor::Upstox => format!("GTT-C26{id:09}"),
        _ => id.to_string(),
    }
}

/// Fire every active GTT the last price has crossed: its order goes into the book
/// (untagged, as GTTs' orders are): a LIMIT at its limit, or at the market.
fn fire_gtts(s: &mut State) {
    for i in 0..s.gtts.len() {
        let g = s.gtts[i].clone();
        let Some(last) = s.ltp.get(&g.symbol).copied() else {
            continue;
        };
        let crossed = if g.last_price > g.trigger {
            last <= g.trigger
        } else {
            last >= g.trigger
        };
        if g.status != "active" || !crossed {
            continue;
        }
        let id = next_id(s);
        let mut fields: HashMap<String, String> = [
            ("tradingsymbol", g.symbol.clone()),
            ("transaction_type", g.side.clone()),
            ("quantity", g.qty.to_string()),
            ("exchange", "NSE".into()),
            ("product", "CNC".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let kind = if g.limit.is_zero() { "MARKET" } else { "LIMIT" };
        fields.insert("order_type".into(), kind.into());
        fields.insert("pricetype".into(), kind.into());
        if !g.limit.is_zero() {
            fields.insert("price".into(), g.limit.to_string());
        }
        let placed_at = s.clock.clone().unwrap_or_else(ist_now);
        s.orders.push(MockOrder {
            id: id.clone(),
            fields,
            tag: None,
            symbol: g.symbol.clone(),
            side: g.side.clone(),
            qty: g.qty,
            status: "OPEN".into(),
            placed_at,
            ..MockOrder::default()
        });
        s.gtts[i].status = "triggered".into();
        s.gtts[i].order_id = Some(id);
    }
}

/// A margin of several legs: with both buys and sells among them, `basket_hedge` of the sum.
fn hedged(s: &State, total: Decimal, sides: &[&str]) -> Decimal {
    let both = sides.iter().any(|t| t.eq_ignore_ascii_case("buy"))
        && sides.iter().any(|t| t.eq_ignore_ascii_case("sell"));
    if both { total * s.basket_hedge } else { total }
}
