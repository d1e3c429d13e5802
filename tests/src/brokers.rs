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
        return telegram(s, r);
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
    match (s.flavor, r.method.as_str(), route.as_str()) {
        (Flavor::Kite, "GET", p) if p.starts_with("/instruments/historical/") => {
            // `/instruments/historical/:instrument_token/:interval?from=yyyy-mm-dd hh:mm:ss&to=…[&oi=1]`, both ends inclusive.
            let parts: Vec<&str> = p
                .trim_start_matches("/instruments/historical/")
                .split('/')
                .collect();
            let stamp = |k: &str| {
                query(&r.path, k).filter(|t| {
                    t.len() == 19 && t.as_bytes()[10] == b' ' && t.as_bytes()[4] == b'-'
                })
            };
            let (Some(from), Some(to)) = (stamp("from"), stamp("to")) else {
                return (
                    400,
                    json!({ "status": "error", "message": "from and to must be yyyy-mm-dd hh:mm:ss", "data": null, "error_type": "InputException" }),
                    None,
                );
            };
            let interval_ok = matches!(
                parts.get(1).copied(),
                Some(
                    "minute"
                        | "day"
                        | "3minute"
                        | "5minute"
                        | "10minute"
                        | "15minute"
                        | "30minute"
                        | "60minute"
                )
            );
            if parts.len() != 2 || !interval_ok || from > to {
                return (
                    400,
                    json!({ "status": "error", "message": "invalid interval or range", "data": null, "error_type": "InputException" }),
                    None,
                );
            }
            let with_oi = query(&r.path, "oi").as_deref() == Some("1");
            let rows: Vec<Value> = s
                .candles
                .get(parts[0])
                .map(|rows| {
                    rows.iter()
                        .filter(|row| {
                            row[0].as_str().is_some_and(|t| {
                                t.get(0..19)
                                    .map(|t| t.replace('T', " "))
                                    .is_some_and(|t| t >= from && t <= to)
                            })
                        })
                        .map(|row| {
                            if with_oi {
                                row.clone()
                            } else {
                                Value::Array(
                                    row.as_array()
                                        .map(|a| a[..6.min(a.len())].to_vec())
                                        .unwrap_or_default(),
                                )
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            ok_kite(json!({ "candles": rows }))
        }
        (Flavor::Kite, "GET", "/quote") => {
            // `i=EXCHANGE:TRADINGSYMBOL`, repeated; at most 500 a call. Instruments without data are left out.
            let asked: Vec<String> = r
                .path
                .split_once('?')
                .map(|(_, q)| {
                    q.split('&')
                        .filter_map(|kv| kv.split_once('='))
                        .filter(|(k, _)| *k == "i")
                        .map(|(_, v)| decode(v))
                        .collect()
                })
                .unwrap_or_default();
            if asked.is_empty() || asked.len() > 500 || asked.iter().any(|i| !i.contains(':')) {
                return (
                    400,
                    json!({ "status": "error", "message": "Invalid or too many instruments (1 to 500 EXCHANGE:TRADINGSYMBOL)", "data": null, "error_type": "InputException" }),
                    None,
                );
            }
            let data: serde_json::Map<String, Value> = asked
                .iter()
                .filter_map(|i| Some((i.clone(), s.quotes.get(i)?.clone())))
                .collect();
            ok_kite(Value::Object(data))
        }
        (Flavor::Kite, "GET", "/user/profile") => {
            ok_kite(json!({ "user_id": "AB1234", "user_name": "Test Trader", "broker": "ZERODHA" }))
        }
        (Flavor::Kite, "POST", "/orders/regular") => {
            let f = form(&r.body);
            for k in [
                "tradingsymbol",
                "exchange",
                "transaction_type",
                "order_type",
                "quantity",
                "product",
                "validity",
            ] {
                if !f.contains_key(k) {
                    return refusal(Flavor::Kite, &format!("Missing {k}"));
                }
            }
            if f.get("tag").is_some_and(|t| t.len() > 20) {
                return refusal(
                    Flavor::Kite,
                    "Tag length should be less than 20 characters.",
                );
            }
            // Kite Connect's documented values; anything else is an InputException.
            for (k, allowed) in [
                (
                    "exchange",
                    &["NSE", "BSE", "NFO", "CDS", "BCD", "MCX", "BFO"][..],
                ),
                ("transaction_type", &["BUY", "SELL"][..]),
                ("order_type", &["MARKET", "LIMIT", "SL", "SL-M"][..]),
                ("product", &["CNC", "NRML", "MIS", "MTF"][..]),
                ("validity", &["DAY", "IOC", "TTL"][..]),
            ] {
                if !allowed.contains(&f[k].as_str()) {
                    return refusal(Flavor::Kite, &format!("Invalid `{k}`."));
                }
            }
            if f["quantity"].parse::<u64>().is_ok_and(|q| q == 0)
                || f["quantity"].parse::<u64>().is_err()
            {
                return refusal(Flavor::Kite, "Invalid `quantity`.");
            }
            if f.get("market_protection").is_some_and(|m| {
                m.parse::<i64>()
                    .map_or(true, |m| !(m == -1 || (0..=100).contains(&m)))
            }) {
                return refusal(Flavor::Kite, "Invalid `market_protection`.");
            }
            if !s.tradable.is_empty() && !s.tradable.contains(&f["tradingsymbol"]) {
                return refusal(Flavor::Kite, "Invalid `tradingsymbol`.");
            }
            if f["order_type"] == "MARKET" && f.get("market_protection").is_none_or(|m| m == "0") {
                return refusal(
                    Flavor::Kite,
                    "Market orders without market protection are not allowed via API. Please set market protection or use a Limit order.",
                );
            }
            if let Some(tick) = s.ticks.get(&f["tradingsymbol"]).copied() {
                for (k, what) in [("price", "price"), ("trigger_price", "trigger price")] {
                    if f.get(k)
                        .and_then(|p| p.parse::<Decimal>().ok())
                        .is_some_and(|p| !(p % tick).is_zero())
                    {
                        return refusal(
                            Flavor::Kite,
                            &format!(
                                "Tick size for this script is {tick}. Kindly enter {what} in the multiple of tick size for this script"
                            ),
                        );
                    }
                }
            }
            if let Some((lower, upper)) = s.circuits.get(&f["tradingsymbol"]).copied() {
                let at = |k: &str| f.get(k).and_then(|p| p.parse::<Decimal>().ok());
                let refused = match (at("price").filter(|p| !p.is_zero()), at("trigger_price").filter(|p| !p.is_zero())) {
                    (Some(p), _) if p < lower => Some(format!("Your order price is lower than the current lower circuit limit of {lower:.2}. Place an order within the daily range.")),
                    (Some(p), _) if p > upper => Some(format!("Your order price is higher than the current upper circuit limit of {upper:.2}. Place an order within the daily range.")),
                    (_, Some(t)) if t < lower => Some("Trigger price for stoploss sell orders cannot be below the lower circuit price.".to_owned()),
                    (_, Some(t)) if t > upper => Some("Trigger price for stoploss buy orders cannot be above the upper circuit price.".to_owned()),
                    _ => None,
                };
                if let Some(text) = refused {
                    return refusal(Flavor::Kite, &text);
                }
            }
            if f["order_type"] == "SL-M" && f["exchange"] == "NFO" && is_option(&f["tradingsymbol"])
            {
                return refusal(Flavor::Kite, SL_M_BLOCKED);
            }
            if f.get("autoslice").map(String::as_str) == Some("true") {
                return autoslice(s, &f);
            }
            place(
                s,
                f.clone(),
                f.get("tag").cloned(),
                &f["tradingsymbol"],
                &f["transaction_type"],
                &f["quantity"],
                |id| json!({ "status": "success", "data": { "order_id": id } }),
            )
        }
        // GTTs (Kite's documented form: `type`, `condition` and `orders` as JSON text; only
        // LIMIT orders; `last_price` sets the direction of a single trigger).
        (Flavor::Kite, "POST", "/gtt/triggers") => {
            let f = form(&r.body);
            match gtt_from_form(&f) {
                Ok(mut g) => {
                    s.gtt_seq += 1;
                    g.id = 100_000 + s.gtt_seq;
                    g.created_at = s.clock.clone().unwrap_or_else(ist_now);
                    let id = g.id;
                    s.gtts.push(g);
                    ok_kite(json!({ "trigger_id": id }))
                }
                Err(m) => refusal(Flavor::Kite, &m),
            }
        }
        (Flavor::Kite, "GET", "/gtt/triggers") => {
            fire_gtts(s);
            ok_kite(Value::Array(s.gtts.iter().map(gtt_json).collect()))
        }
        (Flavor::Kite, method, p) if p.starts_with("/gtt/triggers/") => {
            fire_gtts(s);
            let Ok(id) = p["/gtt/triggers/".len()..].parse::<u64>() else {
                return refusal(Flavor::Kite, "Invalid trigger id.");
            };
            let Some(at) = s.gtts.iter().position(|g| g.id == id) else {
                return refusal(Flavor::Kite, "Trigger not found.");
            };
            match method {
                "GET" => ok_kite(gtt_json(&s.gtts[at])),
                "PUT" if s.gtts[at].status == "active" => match gtt_from_form(&form(&r.body)) {
                    Ok(new) => {
                        let g = &mut s.gtts[at];
                        (g.trigger, g.limit, g.last_price, g.qty, g.side, g.symbol) = (
                            new.trigger,
                            new.limit,
                            new.last_price,
                            new.qty,
                            new.side,
                            new.symbol,
                        );
                        s.gtt_modifications.push((id, new.trigger));
                        ok_kite(json!({ "trigger_id": id }))
                    }
                    Err(m) => refusal(Flavor::Kite, &m),
                },
                "DELETE" if s.gtts[at].status == "active" => {
                    s.gtts[at].status = "deleted".into();
                    ok_kite(json!({ "trigger_id": id }))
                }
                _ => refusal(Flavor::Kite, "Trigger is not active."),
            }
        }
        // Upstox's GTTs (v3): one `ENTRY` rule for a single-leg GTT, at the market when it fires.
        (Flavor::Upstox, "POST", "/v3/order/gtt/place") => match upstox_gtt(&body_json, None) {
            Ok(mut g) => {
                if !s.tradable.is_empty() && !s.tradable.contains(&g.symbol) {
                    return refusal(Flavor::Upstox, "Invalid instrument key");
                }
                s.gtt_seq += 1;
                g.id = 100_000 + s.gtt_seq;
                g.created_at = s.clock.clone().unwrap_or_else(ist_now);
                let key = gtt_key(Flavor::Upstox, g.id);
                s.gtts.push(g);
                (
                    200,
                    json!({ "status": "success", "data": { "gtt_order_ids": [key] }, "metadata": { "latency": 31 } }),
                    None,
                )
            }
            Err(m) => refusal(Flavor::Upstox, &m),
        },
        (Flavor::Upstox, "PUT", "/v3/order/gtt/modify") => {
            fire_gtts(s);
            let key = body_json["gtt_order_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let Some(at) = s
                .gtts
                .iter()
                .position(|g| gtt_key(Flavor::Upstox, g.id) == key)
            else {
                return refusal(Flavor::Upstox, "Invalid GTT order id");
            };
            if s.gtts[at].status != "active" {
                return refusal(
                    Flavor::Upstox,
                    "GTT order cannot be modified: it is not active",
                );
            }
            match upstox_gtt(&body_json, Some(&s.gtts[at])) {
                Ok(new) => {
                    let id = s.gtts[at].id;
                    let g = &mut s.gtts[at];
                    (g.trigger, g.last_price, g.qty) = (new.trigger, new.last_price, new.qty);
                    s.gtt_modifications.push((id, new.trigger));
                    (
                        200,
                        json!({ "status": "success", "data": { "gtt_order_ids": [key] }, "metadata": { "latency": 28 } }),
                        None,
                    )
                }
                Err(m) => refusal(Flavor::Upstox, &m),
            }
        }
        (Flavor::Upstox, "DELETE", "/v3/order/gtt/cancel") => {
            fire_gtts(s);
            let key = body_json["gtt_order_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            match s
                .gtts
                .iter_mut()
                .find(|g| gtt_key(Flavor::Upstox, g.id) == key)
            {
                Some(g) if g.status == "active" => {
                    g.status = "cancelled".into();
                    (
                        200,
                        json!({ "status": "success", "data": { "gtt_order_ids": [key] }, "metadata": { "latency": 22 } }),
                        None,
                    )
                }
                Some(_) => refusal(
                    Flavor::Upstox,
                    "GTT order cannot be cancelled: it is not active",
                ),
                None => refusal(Flavor::Upstox, "Invalid GTT order id"),
            }
        }
        (Flavor::Upstox, "GET", "/v3/order/gtt") => {
            fire_gtts(s);
            // "The Get GTT API does not support retrieving completed GTT orders."
            let shown: Vec<Value> = s
                .gtts
                .iter()
                .filter(|g| !gtt_completed(s, g))
                .map(|g| upstox_gtt_json(s, g))
                .collect();
            match query(&r.path, "gtt_order_id") {
                Some(key) => match shown
                    .into_iter()
                    .find(|g| g["gtt_order_id"] == key.as_str())
                {
                    Some(g) => ok_kite(json!([g])),
                    None => refusal(Flavor::Upstox, "GTT order not found"),
                },
                None => ok_kite(Value::Array(shown)),
            }
        }
        // OpenAlgo's GTTs: SINGLE triggers, the trigger below the market in `triggerprice_sl`
        // or above it in `triggerprice_tg`; the GTT book lists only active ones.
        (Flavor::OpenAlgo, "POST", "/api/v1/placegttorder") => match openalgo_gtt(
            &body_json,
            s.ltp
                .get(body_json["symbol"].as_str().unwrap_or_default())
                .copied(),
        ) {
            Ok(mut g) => {
                s.gtt_seq += 1;
                g.id = 100_000 + s.gtt_seq;
                g.created_at = s.clock.clone().unwrap_or_else(ist_now);
                let key = gtt_key(Flavor::OpenAlgo, g.id);
                s.gtts.push(g);
                (200, json!({ "status": "success", "trigger_id": key }), None)
            }
            Err(m) => refusal(Flavor::OpenAlgo, &m),
        },
        (Flavor::OpenAlgo, "POST", "/api/v1/modifygttorder") => {
            fire_gtts(s);
            let key = text_of(&body_json["trigger_id"]);
            let Some(at) = s
                .gtts
                .iter()
                .position(|g| gtt_key(Flavor::OpenAlgo, g.id) == key && g.status == "active")
            else {
                return refusal(Flavor::OpenAlgo, "GTT trigger not found or not active");
            };
            match openalgo_gtt(&body_json, s.ltp.get(&s.gtts[at].symbol).copied()) {
                Ok(new) => {
                    let id = s.gtts[at].id;
                    let g = &mut s.gtts[at];
                    (g.trigger, g.limit, g.last_price, g.qty) =
                        (new.trigger, new.limit, new.last_price, new.qty);
                    s.gtt_modifications.push((id, new.trigger));
                    (200, json!({ "status": "success", "trigger_id": key }), None)
                }
                Err(m) => refusal(Flavor::OpenAlgo, &m),
            }
        }
        (Flavor::OpenAlgo, "POST", "/api/v1/cancelgttorder") => {
            fire_gtts(s);
            let key = text_of(&body_json["trigger_id"]);
            match s
                .gtts
                .iter_mut()
                .find(|g| gtt_key(Flavor::OpenAlgo, g.id) == key && g.status == "active")
            {
                Some(g) => {
                    g.status = "deleted".into();
                    (200, json!({ "status": "success", "trigger_id": key }), None)
                }
                None => refusal(Flavor::OpenAlgo, "GTT trigger not found or not active"),
            }
        }
        (Flavor::OpenAlgo, "POST", "/api/v1/gttorderbook") => {
            fire_gtts(s);
            let num = |d: Decimal| d.to_string().parse::<f64>().unwrap_or(0.0);
            let active: Vec<Value> = s
                .gtts
                .iter()
                .filter(|g| g.status == "active")
                .map(|g| {
                    let (pricetype, price) = if g.limit.is_zero() { ("MARKET", 0.0) } else { ("LIMIT", num(g.limit)) };
                    json!({
                        "trigger_id": gtt_key(Flavor::OpenAlgo, g.id), "trigger_type": "single", "status": "active", "symbol": g.symbol, "exchange": "NSE",
                        "trigger_prices": [num(g.trigger)], "last_price": num(g.last_price),
                        "legs": [{ "action": g.side, "quantity": whole(g.qty), "price": price, "pricetype": pricetype, "product": "CNC" }],
                        "created_at": g.created_at, "updated_at": "", "expires_at": "",
                    })
                })
                .collect();
            (200, json!({ "status": "success", "data": active }), None)
        }
        (Flavor::Kite, "GET", "/orders") => ok_kite(Value::Array(
            book(s).iter().map(|o| kite_order(o, &o.status)).collect(),
        )),
        (Flavor::Kite, "GET", p) if p.starts_with("/orders/") => {
            let id = &p["/orders/".len()..];
            match poll(s, id) {
                Some(o) => ok_kite(json!([
                    kite_order(&o, "PUT ORDER REQ RECEIVED"),
                    kite_order(&o, "VALIDATION PENDING"),
                    kite_order(&o, &o.status)
                ])),
                None => refusal(Flavor::Kite, "Couldn't find that `order_id`."),
            }
        }
        (Flavor::Kite, "DELETE", p) if p.starts_with("/orders/regular/") => cancel(
            s,
            &p["/orders/regular/".len()..],
            |id| json!({ "status": "success", "data": { "order_id": id } }),
        ),
        (Flavor::Kite, "GET", "/portfolio/positions") => {
            let net: Vec<Value> = net_positions(s).into_iter().map(|(sym, q)| json!({ "tradingsymbol": sym, "exchange": "NSE", "product": "MIS", "quantity": q.to_string().parse::<i64>().unwrap_or(0), "average_price": net_average(s, &sym, q), "pnl": 0.0 })).collect();
            ok_kite(json!({ "net": net, "day": [] }))
        }
        (Flavor::Upstox, "GET", "/v2/portfolio/short-term-positions") => {
            let rows: Vec<Value> = net_positions(s)
                .into_iter()
                .map(|(token, q)| {
                    let symbol = s.symbols.get(&token).cloned().unwrap_or_else(|| token.clone());
                    json!({ "trading_symbol": symbol, "instrument_token": token, "exchange": "NSE", "product": "I", "quantity": q.to_string().parse::<i64>().unwrap_or(0), "average_price": net_average(s, &token, q), "pnl": 0.0 })
                })
                .collect();
            ok_kite(Value::Array(rows))
        }
        // Upstox's documented answer carries the address under both spellings.
        (Flavor::Upstox, "GET", "/v3/feed/market-data-feed/authorize") => match &s.feed_url {
            Some(url) => {
                ok_kite(json!({ "authorized_redirect_uri": url, "authorizedRedirectUri": url }))
            }
            None => (
                500,
                json!({ "status": "error", "errors": [{ "errorCode": "UDAPI100500", "message": "feed unavailable" }] }),
                None,
            ),
        },
        (Flavor::Upstox, "GET", "/v2/feed/portfolio-stream-feed/authorize") => {
            match (&s.portfolio_url, query(&r.path, "update_types")) {
                (Some(url), Some(_)) => {
                    ok_kite(json!({ "authorized_redirect_uri": url, "authorizedRedirectUri": url }))
                }
                (_, None) => (
                    400,
                    json!({ "status": "error", "errors": [{ "errorCode": "UDAPI1154", "message": "update_types is required" }] }),
                    None,
                ),
                (None, _) => (
                    500,
                    json!({ "status": "error", "errors": [{ "errorCode": "UDAPI100500", "message": "stream unavailable" }] }),
                    None,
                ),
            }
        }
        (Flavor::OpenAlgo, "POST", "/api/v1/expiry") => match (
            body_json["symbol"].as_str(),
            body_json["exchange"].as_str(),
            body_json["instrumenttype"].as_str(),
        ) {
            (Some(symbol), Some("NFO" | "BFO"), Some("options" | "futures")) => (
                200,
                json!({ "status": "success", "message": format!("Found {} expiry dates for {symbol} options in NFO", s.expiries.len()), "data": s.expiries }),
                None,
            ),
            _ => (
                400,
                json!({ "status": "error", "message": "symbol, exchange (NFO/BFO) and instrumenttype (options/futures) are required" }),
                None,
            ),
        },
        (Flavor::OpenAlgo, "POST", "/api/v1/optionchain") => match (
            body_json["underlying"].as_str(),
            body_json["exchange"].as_str(),
            body_json["expiry_date"].as_str(),
        ) {
            (Some(underlying), Some("NSE_INDEX" | "NSE" | "BSE_INDEX" | "BSE"), Some(expiry)) => {
                match s.option_chain.get(expiry) {
                    Some(chain) => (
                        200,
                        json!({ "status": "success", "underlying": underlying, "underlying_ltp": s.underlying_ltp, "expiry_date": expiry, "chain": chain }),
                        None,
                    ),
                    None => (
                        400,
                        json!({ "status": "error", "message": format!("No option contracts for {underlying} expiring {expiry}") }),
                        None,
                    ),
                }
            }
            _ => (
                400,
                json!({ "status": "error", "message": "underlying, exchange and expiry_date (DDMMMYY) are required" }),
                None,
            ),
        },
        (Flavor::Upstox, "GET", p) if p.starts_with("/v3/historical-candle/intraday/") => {
            // `/v3/historical-candle/intraday/:instrument_key/:unit/:interval`, today's candles, newest first.
            let parts: Vec<String> = p
                .trim_start_matches("/v3/historical-candle/intraday/")
                .split('/')
                .map(decode)
                .collect();
            match parts.as_slice() {
                [key, unit, interval]
                    if unit == "minutes"
                        && interval
                            .parse::<u32>()
                            .is_ok_and(|i| (1..=300).contains(&i)) =>
                {
                    let mut rows = s.candles.get(key).cloned().unwrap_or_default();
                    rows.reverse();
                    ok_kite(json!({ "candles": rows }))
                }
                _ => (
                    400,
                    json!({ "status": "error", "errors": [{ "errorCode": "UDAPI1148", "message": "Invalid unit or interval" }] }),
                    None,
                ),
            }
        }
        (Flavor::OpenAlgo, "POST", "/api/v1/history") => {
            let field = |k: &str| body_json[k].as_str().map(str::to_owned);
            let valid_date = |d: &Option<String>| {
                d.as_ref().is_some_and(|d| {
                    d.len() == 10 && d.as_bytes()[4] == b'-' && d.as_bytes()[7] == b'-'
                })
            };
            let (start, end) = (field("start_date"), field("end_date"));
            match (field("symbol"), field("exchange"), field("interval")) {
                (Some(symbol), Some(exchange), Some(interval))
                    if valid_date(&start)
                        && valid_date(&end)
                        && ["1m", "3m", "5m", "10m", "15m", "30m", "1h", "D"]
                            .contains(&interval.as_str()) =>
                {
                    let (start, end) = (start.unwrap_or_default(), end.unwrap_or_default());
                    let rows: Vec<Value> = s
                        .candles
                        .get(&format!("{exchange}:{symbol}"))
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|r| {
                            r["timestamp"]
                                .as_str()
                                .and_then(|t| t.get(0..10))
                                .is_some_and(|d| d >= start.as_str() && d <= end.as_str())
                        })
                        .collect();
                    (200, json!({ "status": "success", "data": rows }), None)
                }
                _ => (
                    400,
                    json!({ "status": "error", "message": "symbol, exchange, interval, start_date and end_date (YYYY-MM-DD) are required" }),
                    None,
                ),
            }
        }
        (Flavor::Upstox, "GET", "/v2/option/contract") => {
            ok_kite(Value::Array(s.option_contracts.clone()))
        }
        (Flavor::Upstox, "GET", "/v2/option/chain") => match query(&r.path, "expiry_date") {
            Some(e) => ok_kite(Value::Array(
                s.option_chain.get(&e).cloned().unwrap_or_default(),
            )),
            None => (
                400,
                json!({ "status": "error", "errors": [{ "errorCode": "UDAPI1088", "message": "expiry_date is required" }] }),
                None,
            ),
        },
        (Flavor::Upstox, "GET", "/v2/user/profile") => ok_kite(
            json!({ "user_id": "UP1234", "user_name": "Test Trader", "broker": "UPSTOX", "is_active": true }),
        ),
        (Flavor::Upstox, "POST", "/v3/order/place") => {
            let b = body_json;
            for k in [
                "quantity",
                "product",
                "validity",
                "price",
                "instrument_token",
                "order_type",
                "transaction_type",
                "disclosed_quantity",
                "trigger_price",
                "is_amo",
            ] {
                if b.get(k).is_none() {
                    return refusal(Flavor::Upstox, &format!("{k} is required"));
                }
            }
            // Upstox's documented types: numbers as JSON numbers, booleans as booleans, enums exact.
            let typed = b["quantity"].as_u64().is_some_and(|q| q > 0)
                && b["price"].is_number()
                && b["disclosed_quantity"].is_number()
                && b["trigger_price"].is_number()
                && b["is_amo"].is_boolean()
                && b.get("slice").is_none_or(Value::is_boolean)
                && b.get("tag").is_none_or(Value::is_string)
                && b["instrument_token"].is_string();
            if !typed {
                return refusal(Flavor::Upstox, "Invalid input: a field has the wrong type");
            }
            for (k, allowed) in [
                ("product", &["I", "D", "MTF"][..]),
                ("validity", &["DAY", "IOC"][..]),
                ("order_type", &["MARKET", "LIMIT", "SL", "SL-M"][..]),
                ("transaction_type", &["BUY", "SELL"][..]),
            ] {
                if !b[k].as_str().is_some_and(|v| allowed.contains(&v)) {
                    return refusal(Flavor::Upstox, &format!("Invalid {k}"));
                }
            }
            if b["order_type"] == "LIMIT" && b["price"].as_f64().is_none_or(|p| p <= 0.0) {
                return refusal(Flavor::Upstox, "Price is required for a limit order");
            }
            let token = b["instrument_token"].as_str().unwrap_or_default();
            if b["order_type"] == "SL-M"
                && (is_option(token) || s.symbols.get(token).is_some_and(|sym| is_option(sym)))
            {
                return refusal(Flavor::Upstox, UPSTOX_SL_M_BLOCKED);
            }
            if !s.tradable.is_empty()
                && !b["instrument_token"]
                    .as_str()
                    .is_some_and(|t| s.tradable.iter().any(|x| x == t))
            {
                return refusal(Flavor::Upstox, "Invalid instrument key");
            }
            let fields: HashMap<String, String> = b
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| {
                            (
                                k.clone(),
                                v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let symbol = fields["instrument_token"].clone();
            let qty = fields["quantity"].clone();
            let side = fields["transaction_type"].clone();
            place(
                s,
                fields,
                b["tag"].as_str().map(str::to_owned),
                &symbol,
                &side,
                &qty,
                |id| json!({ "status": "success", "data": { "order_ids": [id] }, "metadata": { "latency": 12 } }),
            )
        }
        (Flavor::Upstox, "GET", "/v2/order/details") => {
            match query(&r.path, "order_id").and_then(|id| poll(s, &id)) {
                Some(o) => ok_kite(upstox_order(&o)),
                None => refusal(Flavor::Upstox, "Order not found"),
            }
        }
        (Flavor::Upstox, "GET", "/v2/order/retrieve-all") => {
            ok_kite(Value::Array(book(s).iter().map(upstox_order).collect()))
        }
        (Flavor::Upstox, "DELETE", "/v3/order/cancel") => {
            let id = query(&r.path, "order_id").unwrap_or_default();
            cancel(
                s,
                &id,
                |id| json!({ "status": "success", "data": { "order_ids": [id] }, "metadata": { "latency": 9 } }),
            )
        }
        // Modifying a working order: its new terms replace the old ones.
        (Flavor::Kite, "PUT", p) if p.starts_with("/orders/regular/") => {
            let f = form(&r.body);
            for (k, allowed) in [
                ("order_type", &["MARKET", "LIMIT", "SL", "SL-M"][..]),
                ("validity", &["DAY", "IOC", "TTL"][..]),
            ] {
                if f.get(k).is_some_and(|v| !allowed.contains(&v.as_str())) {
                    return refusal(Flavor::Kite, &format!("Invalid `{k}`."));
                }
            }
            let id = &p["/orders/regular/".len()..];
            let option = s
                .orders
                .iter()
                .find(|o| o.id == id)
                .is_some_and(|o| is_option(&o.symbol));
            if option && f.get("order_type").is_some_and(|t| t == "SL-M") {
                return refusal(Flavor::Kite, SL_M_BLOCKED);
            }
            modify(
                s,
                id,
                f,
                |id| json!({ "status": "success", "data": { "order_id": id } }),
            )
        }
        (Flavor::Upstox, "PUT", "/v3/order/modify") => {
            let b = body_json.clone();
            let Some(id) = b["order_id"].as_str().map(str::to_owned) else {
                return refusal(Flavor::Upstox, "order_id is required");
            };
            for (k, number) in [
                ("quantity", true),
                ("price", true),
                ("trigger_price", true),
                ("validity", false),
                ("order_type", false),
            ] {
                if b.get(k).is_some_and(|v| {
                    if number {
                        !v.is_number()
                    } else {
                        !v.is_string()
                    }
                }) {
                    return refusal(Flavor::Upstox, &format!("{k} has the wrong type"));
                }
            }
            let fields: HashMap<String, String> = b
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| {
                            (
                                k.clone(),
                                v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            modify(
                s,
                &id,
                fields,
                |id| json!({ "status": "success", "data": { "order_ids": [id] }, "metadata": { "latency": 10 } }),
            )
        }
        (Flavor::OpenAlgo, "POST", "/api/v1/modifyorder") => {
            let b = body_json.clone();
            for k in [
                "strategy",
                "orderid",
                "symbol",
                "action",
                "exchange",
                "pricetype",
                "product",
                "quantity",
                "price",
            ] {
                if b.get(k).is_none() {
                    return refusal(
                        Flavor::OpenAlgo,
                        &format!("Missing mandatory field(s): {k}"),
                    );
                }
            }
            let id = b["orderid"]
                .as_str()
                .map_or_else(|| b["orderid"].to_string(), str::to_owned);
            let fields: HashMap<String, String> = b
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| {
                            (
                                k.clone(),
                                v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            modify(
                s,
                &id,
                fields,
                |id| json!({ "status": "success", "orderid": id }),
            )
        }
        // The margin calculators and funds, in each API's documented shape.
        (Flavor::Kite, "POST", "/margins/orders") => {
            let Ok(Value::Array(orders)) = serde_json::from_str::<Value>(&r.body) else {
                return refusal(Flavor::Kite, "Invalid JSON: expected a list of orders");
            };
            let mut rows = Vec::new();
            for o in &orders {
                for k in [
                    "exchange",
                    "tradingsymbol",
                    "transaction_type",
                    "variety",
                    "product",
                    "order_type",
                    "quantity",
                ] {
                    if o.get(k).is_none() {
                        return refusal(Flavor::Kite, &format!("Missing {k}"));
                    }
                }
                let Some(qty) = o["quantity"].as_u64() else {
                    return refusal(Flavor::Kite, "Invalid `quantity`.");
                };
                let total = s.margin_per_unit * Decimal::from(qty);
                let total = total.to_string().parse::<f64>().unwrap_or(0.0);
                rows.push(json!({ "type": "equity", "tradingsymbol": o["tradingsymbol"], "exchange": o["exchange"], "span": total, "exposure": 0, "option_premium": 0, "additional": 0, "bo": 0, "cash": 0, "var": 0, "pnl": { "realised": 0, "unrealised": 0 }, "leverage": 1, "total": total }));
            }
            ok_kite(Value::Array(rows))
        }
        (Flavor::Kite, "POST", "/margins/basket") => {
            // Kite's basket margins: `initial` the legs as if alone, `final` with the hedges (and,
            // with `consider_positions=true`, the open positions) counted.
            let Ok(Value::Array(orders)) = serde_json::from_str::<Value>(&r.body) else {
                return refusal(Flavor::Kite, "Invalid JSON: expected a list of orders");
            };
            let mut total = Decimal::ZERO;
            for o in &orders {
                for k in [
                    "exchange",
                    "tradingsymbol",
                    "transaction_type",
                    "variety",
                    "product",
                    "order_type",
                    "quantity",
                ] {
                    if o.get(k).is_none() {
                        return refusal(Flavor::Kite, &format!("Missing {k}"));
                    }
                }
                let Some(qty) = o["quantity"].as_u64() else {
                    return refusal(Flavor::Kite, "Invalid `quantity`.");
                };
                total += s.margin_per_unit * Decimal::from(qty);
            }
            let sides: Vec<&str> = orders
                .iter()
                .filter_map(|o| o["transaction_type"].as_str())
                .collect();
            let num = |d: Decimal| d.to_string().parse::<f64>().unwrap_or(0.0);
            let margin = |t: f64| json!({ "type": "", "tradingsymbol": "", "exchange": "", "span": t, "exposure": 0, "option_premium": 0, "additional": 0, "bo": 0, "cash": 0, "var": 0, "pnl": { "realised": 0, "unrealised": 0 }, "leverage": 0, "total": t });
            ok_kite(
                json!({ "initial": margin(num(total)), "final": margin(num(hedged(s, total, &sides))), "orders": [] }),
            )
        }
        (Flavor::Kite, "GET", "/user/margins/equity") => {
            let net = s.funds.to_string().parse::<f64>().unwrap_or(0.0);
            ok_kite(
                json!({ "enabled": true, "net": net, "available": { "cash": net, "opening_balance": net, "live_balance": net, "collateral": 0, "intraday_payin": 0 }, "utilised": { "debits": 0, "exposure": 0, "span": 0, "option_premium": 0 } }),
            )
        }
        (Flavor::Upstox, "POST", "/v2/charges/margin") => {
            let items = body_json["instruments"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if items.is_empty() || items.len() > 20 {
                return refusal(Flavor::Upstox, "instruments: 1 to 20 allowed");
            }
            let mut total = Decimal::ZERO;
            let mut margins = Vec::new();
            for i in &items {
                let (Some(_), Some(qty), Some(_), Some(_)) = (
                    i["instrument_key"].as_str(),
                    i["quantity"].as_u64(),
                    i["transaction_type"].as_str(),
                    i["product"].as_str(),
                ) else {
                    return refusal(
                        Flavor::Upstox,
                        "instrument_key, quantity, transaction_type and product are required",
                    );
                };
                let m = s.margin_per_unit * Decimal::from(qty);
                total += m;
                let m = m.to_string().parse::<f64>().unwrap_or(0.0);
                margins.push(json!({ "span_margin": m, "exposure_margin": 0, "equity_margin": 0, "net_buy_premium": 0, "additional_margin": 0, "total_margin": m, "tender_margin": 0 }));
            }
            let sides: Vec<&str> = items
                .iter()
                .filter_map(|i| i["transaction_type"].as_str())
                .collect();
            let final_margin = hedged(s, total, &sides)
                .to_string()
                .parse::<f64>()
                .unwrap_or(0.0);
            let total = total.to_string().parse::<f64>().unwrap_or(0.0);
            ok_kite(
                json!({ "margins": margins, "required_margin": total, "final_margin": final_margin }),
            )
        }
        (Flavor::Upstox, "GET", "/v2/user/get-funds-and-margin") => {
            let free = s.funds.to_string().parse::<f64>().unwrap_or(0.0);
            ok_kite(
                json!({ "equity": { "used_margin": 0, "payin_amount": 0, "span_margin": 0, "adhoc_margin": 0, "notional_cash": 0, "available_margin": free, "exposure_margin": 0 } }),
            )
        }
        (Flavor::OpenAlgo, "POST", "/api/v1/margin") => {
            let positions = body_json["positions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if positions.is_empty() {
                return refusal(Flavor::OpenAlgo, "positions: at least one is required");
            }
            let mut total = Decimal::ZERO;
            for p in &positions {
                for k in [
                    "symbol",
                    "exchange",
                    "action",
                    "quantity",
                    "product",
                    "pricetype",
                ] {
                    if p.get(k).is_none() {
                        return refusal(
                            Flavor::OpenAlgo,
                            &format!("Missing mandatory field(s): {k}"),
                        );
                    }
                }
                let Some(qty) = p["quantity"].as_str().and_then(|q| q.parse::<u64>().ok()) else {
                    return refusal(Flavor::OpenAlgo, "quantity must be a whole number");
                };
                total += s.margin_per_unit * Decimal::from(qty);
            }
            let sides: Vec<&str> = positions
                .iter()
                .filter_map(|p| p["action"].as_str())
                .collect();
            let total = hedged(s, total, &sides).to_string();
            (
                200,
                json!({ "status": "success", "data": { "total_margin_required": total, "span_margin": total, "exposure_margin": "0" } }),
                None,
            )
        }
        (Flavor::OpenAlgo, "POST", "/api/v1/funds") => {
            let free = s.funds.to_string();
            (
                200,
                json!({ "status": "success", "data": { "availablecash": free, "collateral": "0.00", "m2mrealized": "0.00", "m2munrealized": "0.00", "utiliseddebits": "0.00" } }),
                None,
            )
        }
        (Flavor::OpenAlgo, "POST", "/api/v1/ping") => (
            200,
            json!({ "status": "success", "data": { "message": "pong", "broker": "zerodha" } }),
            None,
        ),
        (Flavor::OpenAlgo, "POST", "/api/v1/placeorder" | "/api/v1/placesmartorder") => {
            let b = body_json;
            for k in [
                "strategy",
                "symbol",
                "action",
                "exchange",
                "pricetype",
                "product",
                "quantity",
            ] {
                if b.get(k).is_none() {
                    return refusal(
                        Flavor::OpenAlgo,
                        &format!("Missing mandatory field(s): {k}"),
                    );
                }
            }
            // OpenAlgo's schema: enums exact; numbers as numbers or numeric strings.
            for (k, allowed) in [
                ("action", &["BUY", "SELL"][..]),
                (
                    "exchange",
                    &["NSE", "NFO", "BSE", "BFO", "CDS", "BCD", "MCX"][..],
                ),
                ("pricetype", &["MARKET", "LIMIT", "SL", "SL-M"][..]),
                ("product", &["MIS", "CNC", "NRML"][..]),
            ] {
                if !b[k].as_str().is_some_and(|v| allowed.contains(&v)) {
                    return refusal(
                        Flavor::OpenAlgo,
                        &format!(
                            "Validation error: {{'{k}': ['Must be one of: {}.']}}",
                            allowed.join(", ")
                        ),
                    );
                }
            }
            let numeric = |v: &Value| {
                v.is_null()
                    || v.as_f64().is_some()
                    || v.as_str().is_some_and(|t| t.trim().parse::<f64>().is_ok())
            };
            let quantity = b["quantity"].as_u64().or_else(|| {
                b["quantity"]
                    .as_str()
                    .and_then(|q| q.trim().parse::<u64>().ok())
            });
            if quantity.is_none_or(|q| q == 0)
                || !numeric(&b["price"])
                || !numeric(&b["trigger_price"])
            {
                return refusal(
                    Flavor::OpenAlgo,
                    "Validation error: {'quantity': ['Not a valid integer.']}",
                );
            }
            if b["pricetype"] == "SL-M"
                && b["exchange"] == "NFO"
                && b["symbol"].as_str().is_some_and(is_option)
            {
                // OpenAlgo relays the broker's refusal (here Zerodha's) with its status.
                return refusal(Flavor::OpenAlgo, SL_M_BLOCKED);
            }
            if b["pricetype"] == "LIMIT"
                && b["price"]
                    .as_str()
                    .and_then(|p| p.parse::<f64>().ok())
                    .or(b["price"].as_f64())
                    .is_none_or(|p| p <= 0.0)
            {
                return refusal(Flavor::OpenAlgo, "Price is required for LIMIT orders");
            }
            let fields: HashMap<String, String> = b
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| {
                            (
                                k.clone(),
                                v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let (symbol, side, qty) = (
                fields["symbol"].clone(),
                fields["action"].clone(),
                fields["quantity"].clone(),
            );
            place(
                s,
                fields,
                None,
                &symbol,
                &side,
                &qty,
                |id| json!({ "status": "success", "orderid": id }),
            )
        }
        (Flavor::OpenAlgo, "POST", "/api/v1/orderstatus") => {
            match body_json["orderid"].as_str().and_then(|id| poll(s, id)) {
                Some(o) => {
                    // OpenAlgo's `orderstatus_service.py`: a complete order's average price is the
                    // first matching tradebook row's; anything else reports 0.0.
                    let mut data = openalgo_order(&o);
                    data["average_price"] = json!(if o.status == "COMPLETE" {
                        float(o.trades_or_fill().first().map(|t| t.1))
                    } else {
                        0.0
                    });
                    (200, json!({ "status": "success", "data": data }), None)
                }
                None => refusal(Flavor::OpenAlgo, "Order not found"),
            }
        }
        (Flavor::OpenAlgo, "POST", "/api/v1/orderbook") => {
            let orders: Vec<Value> = book(s).iter().map(openalgo_order).collect();
            let count = |st: &str| {
                s.orders
                    .iter()
                    .filter(|o| o.status.eq_ignore_ascii_case(st))
                    .count() as f64
            };
            let stats = json!({ "total_buy_orders": s.orders.iter().filter(|o| o.side == "BUY").count() as f64, "total_sell_orders": s.orders.iter().filter(|o| o.side == "SELL").count() as f64, "total_completed_orders": count("COMPLETE"), "total_open_orders": count("OPEN"), "total_rejected_orders": count("REJECTED") });
            (
                200,
                json!({ "status": "success", "data": { "orders": orders, "statistics": stats } }),
                None,
            )
        }
        (Flavor::OpenAlgo, "POST", "/api/v1/cancelorder") => {
            let id = body_json["orderid"].as_str().unwrap_or_default().to_owned();
            cancel(s, &id, |id| json!({ "status": "success", "orderid": id }))
        }
        // One row per trade (OpenAlgo's tradebook over Zerodha's: `average_price` is the
        // trade's price); its order status carries no filled quantity.
        (Flavor::OpenAlgo, "POST", "/api/v1/tradebook") => {
            let data: Vec<Value> = s
                .orders
                .iter()
                .flat_map(|o| o.trades_or_fill().into_iter().map(move |t| (o, t)))
                .map(|(o, (q, p))| {
                    let avg = p.to_string().parse::<f64>().unwrap_or(0.0);
                    let qty = q.to_string().parse::<f64>().unwrap_or(0.0);
                    json!({ "action": o.side, "average_price": avg, "exchange": o.fields.get("exchange"), "orderid": o.id, "product": o.fields.get("product"),
                        "quantity": qty, "symbol": o.symbol, "timestamp": o.placed_at.split(' ').nth(1).unwrap_or_default(), "trade_value": avg * qty })
                })
                .collect();
            (200, json!({ "status": "success", "data": data }), None)
        }
        (Flavor::OpenAlgo, "POST", "/api/v1/positionbook") => {
            let data: Vec<Value> = net_positions(s).into_iter().map(|(sym, q)| {
                let (avg, ltp) = (net_average(s, &sym, q), s.ltp.get(&sym).map_or(0.0, |p| p.to_string().parse::<f64>().unwrap_or(0.0)));
                json!({ "symbol": sym, "exchange": "NSE", "product": "MIS", "quantity": q.to_string(), "average_price": format!("{avg:.2}"), "ltp": format!("{ltp:.2}"), "pnl": "0.00" })
            }).collect();
            (200, json!({ "status": "success", "data": data }), None)
        }
        _ => (
            404,
            json!({ "status": "error", "message": format!("no route {} {}", r.method, r.path) }),
            None,
        ),
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

/// Kite's order (`GET /orders`, the last entry of `GET /orders/:id`): numbers are numbers.
fn kite_order(o: &MockOrder, status: &str) -> Value {
    let shown = status == o.status;
    let filled = if shown { o.filled } else { Decimal::ZERO };
    json!({
        "order_id": o.id, "exchange_order_id": if shown && o.status != "REJECTED" { Value::String(format!("1100000{}", o.id)) } else { Value::Null },
        "status": status, "status_message": if shown && !o.message.is_empty() { Value::String(o.message.clone()) } else { Value::Null },
        "tag": o.tag, "tradingsymbol": o.symbol,
        "exchange": o.fields.get("exchange"), "transaction_type": o.side, "order_type": o.fields.get("order_type"),
        "product": o.fields.get("product"), "quantity": whole(o.qty),
        "filled_quantity": whole(filled), "pending_quantity": if shown && o.status == "OPEN" { whole(o.qty - filled) } else { 0 },
        "cancelled_quantity": if shown && o.status == "CANCELLED" { whole(o.qty - filled) } else { 0 },
        "average_price": if shown { float(o.average_price) } else { 0.0 },
        "price": 0, "trigger_price": 0, "validity": "DAY", "variety": "regular", "order_timestamp": o.placed_at,
        "market_protection": o.fields.get("market_protection").and_then(|m| m.parse::<i64>().ok()),
    })
}

/// Upstox's order (`GET /v2/order/details`, `/v2/order/retrieve-all`).
fn upstox_order(o: &MockOrder) -> Value {
    json!({
        "order_id": o.id, "status": o.status.to_ascii_lowercase(), "tag": o.tag, "instrument_token": o.symbol,
        "trading_symbol": o.symbol, "transaction_type": o.side, "order_type": o.fields.get("order_type"),
        "quantity": whole(o.qty), "filled_quantity": whole(o.filled), "pending_quantity": if o.status == "OPEN" { whole(o.qty - o.filled) } else { 0 },
        "average_price": float(o.average_price), "price": o.fields.get("price").and_then(|p| p.parse::<f64>().ok()).unwrap_or(0.0),
        "status_message": if o.message.is_empty() { Value::Null } else { Value::String(o.message.clone()) },
        "validity": "DAY", "product": o.fields.get("product"), "order_timestamp": o.placed_at, "is_amo": false,
    })
}

/// OpenAlgo's order (`orderstatus`, `orderbook` rows): quantity a string, prices numbers,
/// the time as `08-Apr-2025 13:58:03`, and no filled quantity (that is in the tradebook).
fn openalgo_order(o: &MockOrder) -> Value {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (date, time) = o
        .placed_at
        .split_once(' ')
        .unwrap_or(("1970-01-01", "00:00:00"));
    let parts: Vec<&str> = date.split('-').collect();
    let month = parts
        .get(1)
        .and_then(|m| m.parse::<usize>().ok())
        .and_then(|m| MONTHS.get(m.wrapping_sub(1)))
        .copied()
        .unwrap_or("Jan");
    let stamp = format!(
        "{}-{month}-{} {time}",
        parts.get(2).copied().unwrap_or("01"),
        parts.first().copied().unwrap_or("1970")
    );
    json!({
        "action": o.side, "symbol": o.symbol, "exchange": o.fields.get("exchange"), "orderid": o.id,
        "product": o.fields.get("product"), "quantity": o.qty.to_string(),
        "price": o.fields.get("price").and_then(|p| p.parse::<f64>().ok()).unwrap_or(0.0),
        "pricetype": o.fields.get("pricetype"), "order_status": o.status.to_ascii_lowercase(), "trigger_price": 0.0,
        "average_price": float(o.average_price), "timestamp": stamp,
    })
}

fn telegram(s: &mut State, r: &Request) -> Reply {
    let Some(rest) = r.path.strip_prefix("/bot") else {
        return (
            404,
            json!({ "ok": false, "error_code": 404, "description": "Not Found" }),
            None,
        );
    };
    let Some((token, method)) = rest.split_once('/') else {
        return (
            404,
            json!({ "ok": false, "error_code": 404, "description": "Not Found" }),
            None,
        );
    };
    if token != s.token {
        return token_error(Flavor::Telegram);
    }
    if method != "sendMessage" {
        return (
            404,
            json!({ "ok": false, "error_code": 404, "description": "Not Found: method not found" }),
            None,
        );
    }
    let now = std::time::Instant::now();
    while s
        .sent_at
        .front()
        .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(1))
    {
        s.sent_at.pop_front();
    }
    if s.sent_at.len() >= s.per_second {
        return (
            429,
            json!({ "ok": false, "error_code": 429, "description": "Too Many Requests: retry after 1", "parameters": { "retry_after": 1 } }),
            None,
        );
    }
    let b: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    let (Some(chat), Some(text)) = (
        b["chat_id"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| b["chat_id"].as_i64().map(|i| i.to_string())),
        b["text"].as_str(),
    ) else {
        return (
            400,
            json!({ "ok": false, "error_code": 400, "description": "Bad Request: message text is empty" }),
            None,
        );
    };
    s.sent_at.push_back(now);
    s.messages.push((chat.clone(), text.to_owned()));
    let id = s.messages.len();
    (
        200,
        json!({ "ok": true, "result": { "message_id": id, "chat": { "id": chat }, "date": 1_700_000_000, "text": text } }),
        None,
    )
}

/// A full market quote as Kite's `GET /quote` documents it (`oi` is 0 for what is not F&O).
#[must_use]
pub fn kite_quote(instrument_token: u64, last_price: f64, oi: u64, volume: u64) -> Value {
    let level = |p: f64| json!({ "price": p, "quantity": 75, "orders": 1 });
    json!({
        "instrument_token": instrument_token, "timestamp": "2024-03-21 10:15:02", "last_trade_time": "2024-03-21 10:15:01",
        "last_price": last_price, "last_quantity": 75, "buy_quantity": 15_000, "sell_quantity": 12_000, "volume": volume,
        "average_price": last_price, "oi": oi, "oi_day_high": oi, "oi_day_low": oi, "net_change": 0, "lower_circuit_limit": 0.05, "upper_circuit_limit": last_price * 4.0,
        "ohlc": { "open": last_price, "high": last_price, "low": last_price, "close": last_price },
        "depth": { "buy": (0..5).map(|i| level(last_price - 0.05 * f64::from(i + 1))).collect::<Vec<_>>(), "sell": (0..5).map(|i| level(last_price + 0.05 * f64::from(i + 1))).collect::<Vec<_>>() }
    })
}

/// One row of Upstox's option chain (`GET /v2/option/chain`) as its documentation shows it.
#[must_use]
pub fn upstox_chain_row(
    expiry: &str,
    strike: f64,
    spot: f64,
    ce: (f64, f64),
    pe: (f64, f64),
) -> Value {
    let side = |key: &str, (ltp, oi): (f64, f64)| {
        json!({
            "instrument_key": key,
            "market_data": { "ltp": ltp, "volume": 1200, "oi": oi, "close_price": ltp, "bid_price": ltp - 0.05, "bid_qty": 75, "ask_price": ltp + 0.05, "ask_qty": 75, "prev_oi": oi },
            "option_greeks": { "vega": 10.2, "theta": -5.1, "gamma": 0.001, "delta": 0.5, "iv": 14.3, "pop": 50.0 }
        })
    };
    json!({
        "expiry": expiry, "pcr": 1.1, "strike_price": strike, "underlying_key": "NSE_INDEX|Nifty 50", "underlying_spot_price": spot,
        "call_options": side(&format!("NSE_FO|{}", strike as u64 * 10 + 1), ce),
        "put_options": side(&format!("NSE_FO|{}", strike as u64 * 10 + 2), pe),
    })
}

/// Two strikes of a NIFTY chain expiring `expiry` around a spot of 21,712.5, as Upstox's
/// `/v2/option/chain` answers: 21,700 (CE 110.2, OI 60,000; PE 96, OI 70,000) and 21,800
/// (CE 55, OI 90,000; PE 140.35, OI 40,000), each side with Upstox's greeks.
#[must_use]
pub fn upstox_nifty_rows(expiry: &str) -> Vec<Value> {
    vec![
        upstox_chain_row(
            expiry,
            21_800.0,
            21_712.5,
            (55.0, 90_000.0),
            (140.35, 40_000.0),
        ),
        upstox_chain_row(
            expiry,
            21_700.0,
            21_712.5,
            (110.2, 60_000.0),
            (96.0, 70_000.0),
        ),
    ]
}

/// One strike of OpenAlgo's option chain (`/api/v1/optionchain`) as its documentation shows it.
#[must_use]
pub fn openalgo_chain_row(
    symbol_prefix: &str,
    strike: f64,
    ce: (f64, f64),
    pe: (f64, f64),
) -> Value {
    let side = |kind: &str, (ltp, oi): (f64, f64)| {
        json!({ "symbol": format!("{symbol_prefix}{}{kind}", strike as u64), "label": "ATM", "ltp": ltp, "bid": ltp - 0.05, "ask": ltp + 0.05,
            "open": ltp, "high": ltp, "low": ltp, "prev_close": ltp, "volume": 1_195_800, "oi": oi, "lotsize": 65, "tick_size": 0.05 })
    };
    json!({ "strike": strike, "ce": side("CE", ce), "pe": side("PE", pe) })
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

/// A GTT from its form, checked as Kite checks it.
fn gtt_from_form(f: &HashMap<String, String>) -> Result<MockGtt, String> {
    if f.get("type").map(String::as_str) != Some("single") {
        return Err("Invalid `type`.".into());
    }
    let condition: Value = f
        .get("condition")
        .and_then(|c| serde_json::from_str(c).ok())
        .ok_or("Invalid `condition`.")?;
    let orders: Value = f
        .get("orders")
        .and_then(|o| serde_json::from_str(o).ok())
        .ok_or("Invalid `orders`.")?;
    let dec = |v: &Value| {
        v.as_f64()
            .and_then(|x| Decimal::from_str_exact(&x.to_string()).ok())
    };
    let trigger = condition["trigger_values"]
        .as_array()
        .filter(|t| t.len() == 1)
        .and_then(|t| dec(&t[0]))
        .ok_or("Invalid `trigger_values`.")?;
    let last_price = dec(&condition["last_price"]).ok_or("Invalid `last_price`.")?;
    if trigger == last_price {
        return Err("Trigger price cannot be the same as the last price.".into());
    }
    let leg = orders
        .as_array()
        .filter(|o| o.len() == 1)
        .map(|o| &o[0])
        .ok_or("A single trigger takes one order.")?;
    if leg["order_type"] != "LIMIT" {
        return Err("Only LIMIT orders are allowed for GTT.".into());
    }
    let symbol = condition["tradingsymbol"]
        .as_str()
        .ok_or("Invalid `tradingsymbol`.")?;
    if leg["tradingsymbol"].as_str() != Some(symbol)
        || condition["exchange"].as_str().is_none()
        || leg["exchange"] != condition["exchange"]
    {
        return Err("The order and the condition must be for the same instrument.".into());
    }
    let side = leg["transaction_type"]
        .as_str()
        .filter(|t| *t == "BUY" || *t == "SELL")
        .ok_or("Invalid `transaction_type`.")?;
    let qty = leg["quantity"]
        .as_u64()
        .filter(|q| *q > 0)
        .map(Decimal::from)
        .ok_or("Invalid `quantity`.")?;
    let limit = dec(&leg["price"])
        .filter(|p| *p > Decimal::ZERO)
        .ok_or("Invalid `price`.")?;
    if !leg["product"]
        .as_str()
        .is_some_and(|p| ["CNC", "MIS", "NRML"].contains(&p))
    {
        return Err("Invalid `product`.".into());
    }
    Ok(MockGtt {
        id: 0,
        status: "active".into(),
        symbol: symbol.to_owned(),
        side: side.to_owned(),
        qty,
        trigger,
        limit,
        last_price,
        created_at: String::new(),
        order_id: None,
    })
}

/// A GTT's id as each broker writes it: Upstox `GTT-C…`, Kite and OpenAlgo a number.
fn gtt_key(flavor: Flavor, id: u64) -> String {
    match flavor {
        Flavor::Upstox => format!("GTT-C26{id:09}"),
        _ => id.to_string(),
    }
}

/// A JSON string or number as text.
fn text_of(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

/// Whether the order a triggered GTT placed is complete (Upstox then stops returning the GTT).
fn gtt_completed(s: &State, g: &MockGtt) -> bool {
    g.order_id.as_ref().is_some_and(|id| {
        s.orders
            .iter()
            .any(|o| &o.id == id && o.status == "COMPLETE")
    })
}

/// A single-leg GTT from Upstox's place or modify body, checked as Upstox documents it:
/// `type` SINGLE, a whole `quantity`, one `ENTRY` rule `ABOVE` or `BELOW` a positive
/// `trigger_price`; placing also takes `product` (I or D), `instrument_token` and
/// `transaction_type`. Its market fires when the last price crosses the trigger that way.
fn upstox_gtt(b: &Value, was: Option<&MockGtt>) -> Result<MockGtt, String> {
    if b["type"] != "SINGLE" {
        return Err("Invalid type: only SINGLE is taken here".into());
    }
    let qty = b["quantity"]
        .as_u64()
        .filter(|q| *q > 0)
        .map(Decimal::from)
        .ok_or("Invalid quantity")?;
    let rules = b["rules"]
        .as_array()
        .filter(|r| r.len() == 1)
        .ok_or("A SINGLE GTT takes one rule")?;
    let rule = &rules[0];
    if rule["strategy"] != "ENTRY" {
        return Err("Invalid strategy: a SINGLE GTT's rule is its ENTRY".into());
    }
    let trigger = rule["trigger_price"]
        .as_f64()
        .filter(|p| *p > 0.0)
        .and_then(|p| Decimal::from_str_exact(&p.to_string()).ok())
        .ok_or("Invalid trigger_price")?;
    let last_price = match rule["trigger_type"].as_str() {
        Some("BELOW") => trigger + Decimal::ONE,
        Some("ABOVE") => (trigger - Decimal::ONE).max(Decimal::new(5, 2)),
        _ => return Err("Invalid trigger_type".into()),
    };
    let (symbol, side) = match was {
        Some(g) => (g.symbol.clone(), g.side.clone()),
        None => {
            if !b["product"].as_str().is_some_and(|p| p == "I" || p == "D") {
                return Err("Invalid product".into());
            }
            let side = b["transaction_type"]
                .as_str()
                .filter(|t| *t == "BUY" || *t == "SELL")
                .ok_or("Invalid transaction_type")?;
            (
                b["instrument_token"]
                    .as_str()
                    .ok_or("instrument_token is required")?
                    .to_owned(),
                side.to_owned(),
            )
        }
    };
    Ok(MockGtt {
        id: 0,
        status: "active".into(),
        symbol,
        side,
        qty,
        trigger,
        limit: Decimal::ZERO,
        last_price,
        created_at: String::new(),
        order_id: None,
    })
}

/// A GTT as Upstox's `GET /v3/order/gtt` writes it (times in microseconds).
fn upstox_gtt_json(s: &State, g: &MockGtt) -> Value {
    let status = match (g.status.as_str(), &g.order_id) {
        ("active", _) => "SCHEDULED",
        ("cancelled", _) => "CANCELLED",
        (_, Some(id))
            if s.orders
                .iter()
                .any(|o| &o.id == id && o.status == "COMPLETE") =>
        {
            "COMPLETED"
        }
        _ => "TRIGGERED",
    };
    let created = tradehost::brokers::ist_timestamp(&g.created_at).unwrap_or(0) * 1_000;
    json!({
        "type": "SINGLE", "exchange": "NSE_EQ", "quantity": whole(g.qty), "product": "D",
        "rules": [{ "strategy": "ENTRY", "status": status, "message": null, "trigger_type": if g.last_price > g.trigger { "BELOW" } else { "ABOVE" },
                    "trigger_price": g.trigger.to_string().parse::<f64>().unwrap_or(0.0), "transaction_type": g.side, "order_id": g.order_id }],
        "trading_symbol": g.symbol, "instrument_token": g.symbol, "gtt_order_id": gtt_key(Flavor::Upstox, g.id),
        "expires_at": created + 365 * 86_400_000_000, "created_at": created,
    })
}

/// A SINGLE GTT from OpenAlgo's place or modify body, checked as its documentation says:
/// CNC or NRML (never MIS), a positive whole quantity, exactly one of `triggerprice_sl`
/// (below the last price) and `triggerprice_tg` (above it), `price` the limit (0 at the market).
fn openalgo_gtt(b: &Value, ltp: Option<Decimal>) -> Result<MockGtt, String> {
    let dec = |v: &Value| {
        v.as_f64()
            .or_else(|| v.as_str().and_then(|t| t.parse().ok()))
            .and_then(|x| Decimal::from_str_exact(&x.to_string()).ok())
            .unwrap_or_default()
    };
    for k in [
        "strategy",
        "trigger_type",
        "exchange",
        "symbol",
        "action",
        "product",
        "quantity",
        "price",
    ] {
        if b.get(k).is_none_or(Value::is_null) {
            return Err(format!("{k}: Missing data for required field."));
        }
    }
    if b["trigger_type"] != "SINGLE" {
        return Err("trigger_type: only SINGLE is taken here".into());
    }
    if !b["product"]
        .as_str()
        .is_some_and(|p| p == "CNC" || p == "NRML")
    {
        return Err(
            "GTT supports only CNC (delivery) or NRML (overnight F&O); MIS is intraday-only."
                .into(),
        );
    }
    let qty = dec(&b["quantity"]);
    if qty <= Decimal::ZERO {
        return Err("Quantity must be a positive number".into());
    }
    if !qty.fract().is_zero() {
        return Err("Fractional quantity is not allowed for non-crypto exchanges".into());
    }
    let side = b["action"]
        .as_str()
        .filter(|t| *t == "BUY" || *t == "SELL")
        .ok_or("action: must be BUY or SELL")?;
    let (sl, tg) = (dec(&b["triggerprice_sl"]), dec(&b["triggerprice_tg"]));
    let (trigger, below) = match (sl > Decimal::ZERO, tg > Decimal::ZERO) {
        (true, false) => (sl, true),
        (false, true) => (tg, false),
        _ => return Err(
            "triggerprice_sl: SINGLE GTT requires a positive triggerprice_sl or triggerprice_tg"
                .into(),
        ),
    };
    if let Some(last) = ltp {
        if below && trigger >= last {
            return Err("triggerprice_sl: the trigger must sit below the last price".into());
        }
        if !below && trigger <= last {
            return Err("triggerprice_tg: the trigger must sit above the last price".into());
        }
    }
    let limit = if b["pricetype"] == "LIMIT" {
        dec(&b["price"])
    } else {
        Decimal::ZERO
    };
    let last_price = ltp.unwrap_or(if below {
        trigger + Decimal::ONE
    } else {
        trigger - Decimal::ONE
    });
    Ok(MockGtt {
        id: 0,
        status: "active".into(),
        symbol: b["symbol"].as_str().unwrap_or_default().to_owned(),
        side: side.to_owned(),
        qty,
        trigger,
        limit,
        last_price,
        created_at: String::new(),
        order_id: None,
    })
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

/// A GTT as Kite's `GET /gtt/triggers/:id` writes it.
fn gtt_json(g: &MockGtt) -> Value {
    let num = |d: Decimal| d.to_string().parse::<f64>().unwrap_or(0.0);
    let result = g.order_id.as_ref().map(|id| json!({ "order_result": { "status": "success", "order_id": id, "rejection_reason": "" }, "triggered_at": num(g.trigger) }));
    json!({
        "id": g.id, "user_id": "AB1234", "parent_trigger": null, "type": "single", "created_at": g.created_at, "updated_at": g.created_at,
        "expires_at": "2027-12-31 23:59:59", "status": g.status,
        "condition": { "exchange": "NSE", "last_price": num(g.last_price), "tradingsymbol": g.symbol, "trigger_values": [num(g.trigger)], "instrument_token": 738561 },
        "orders": [{ "exchange": "NSE", "tradingsymbol": g.symbol, "product": "CNC", "order_type": "LIMIT", "transaction_type": g.side, "quantity": whole(g.qty), "price": num(g.limit), "result": result }],
        "meta": {}
    })
}

/// A margin of several legs: with both buys and sells among them, `basket_hedge` of the sum.
fn hedged(s: &State, total: Decimal, sides: &[&str]) -> Decimal {
    let both = sides.iter().any(|t| t.eq_ignore_ascii_case("buy"))
        && sides.iter().any(|t| t.eq_ignore_ascii_case("sell"));
    if both { total * s.basket_hedge } else { total }
}

/// Kite's `autoslice=true`: an order above the freeze quantity is split into slices no
/// larger than it, each placed as an order of its own with the order's tag; the answer is
/// the parent's id and each child's. At or below the freeze, Kite refuses to slice.
fn autoslice(s: &mut State, f: &HashMap<String, String>) -> Reply {
    let symbol = f["tradingsymbol"].clone();
    let Ok(qty) = f["quantity"].parse::<Decimal>() else {
        return refusal(Flavor::Kite, "Invalid `quantity`.");
    };
    let Some(freeze) = s.freeze.get(&symbol).copied().filter(|l| qty > *l) else {
        let least = s.freeze.get(&symbol).map_or_else(
            || "the freeze quantity".to_owned(),
            |l| (l + Decimal::ONE).to_string(),
        );
        return refusal(
            Flavor::Kite,
            &format!("Quantity should be greater than or equal to {least} for order slicing."),
        );
    };
    let parent = format!("2504081{:08}", s.orders.len() + 1);
    let mut children = Vec::new();
    let mut left = qty;
    while left > Decimal::ZERO {
        let part = left.min(freeze);
        left -= part;
        let mut fields = f.clone();
        fields.remove("autoslice");
        fields.insert("quantity".into(), part.to_string());
        let (status, body, _) = place(
            s,
            fields,
            f.get("tag").cloned(),
            &symbol,
            &f["transaction_type"],
            &part.to_string(),
            |id| json!({ "order_id": id }),
        );
        children.push(if status == 200 {
            body
        } else {
            json!({ "error": { "message": body["message"], "error_type": body["error_type"] } })
        });
    }
    ok_kite(json!({ "order_id": parent, "children": children }))
}
