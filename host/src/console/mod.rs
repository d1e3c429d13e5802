//! The web console: watch and steer the host from a browser.
//!
//! `tradehost console` (or `[console] listen` under `run`) serves one page, embedded in
//! the binary, and a small JSON API over the same bus and journal the other stages use:
//! - the page follows the bus live over server-sent events (`GET /api/events`) and reads
//!   positions, P&L, exits and orders with their state history from the journal
//!   (`GET /api/state`, read-only);
//! - a trader's actions become the commands of the commands channel (pause, resume,
//!   reload, flatten, the kill switch, cancel, modify), and a manual order or an option
//!   basket a `basket` command whose id is the ticket's request id: a double click, two
//!   tabs or a retried POST place it once (the order manager places a basket id once);
//! - `GET /metrics` is the Prometheus text of what the console has seen.
//!
//! Security: it listens on 127.0.0.1 unless told otherwise; users and their argon2
//! password hashes live in the secrets file (`[console.users.<name>]`); a login sets an
//! HttpOnly, SameSite=Strict session cookie (Secure behind TLS) and hands the page a CSRF
//! token every state-changing request must carry; failed logins are limited per address;
//! a viewer can watch but not act. No secret is ever sent to the page: the journal's
//! tables hold none, and bus messages are scrubbed by their publishers. Every action is
//! an event naming its user.

mod chain;
mod metrics;
mod payoff;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::orders::journal::reads::JournalReader;
use anyhow::Context as _;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::brokers::secrets::SecretStore;
use crate::bus::Bus;
use crate::bus::events::{Event, Events};
use crate::bus::message::CommandMessage;
use crate::config::Config;

pub use payoff::{Leg as PayoffLeg, Payoff, payoff};

/// The page, embedded at build time.
const INDEX: &str = include_str!("index.html");

/// How long a session lasts without a new login.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Failed logins from one address within [`LOGIN_WINDOW`] before it must wait.
const LOGIN_FAILURES: usize = 5;
const LOGIN_WINDOW: Duration = Duration::from_secs(60);
/// Bus messages kept for a page that opens late.
const RECENT: usize = 300;
/// The session cookie's name.
const COOKIE: &str = "th_session";

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Watch.
    Viewer,
    /// Watch, and place, cancel, flatten, pause, resume and reload.
    Trader,
}

impl Role {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "viewer" => Some(Self::Viewer),
            "trader" => Some(Self::Trader),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Trader => "trader",
        }
    }
}

/// A console user: the PHC string of an argon2 hash of the password, and a role.
#[derive(Debug, Clone)]
pub struct User {
    hash: crate::domain::Secret,
    role: Role,
}

/// The argon2 hash (PHC string) of `password`, with a fresh salt: what goes in the
/// secrets file as `password_hash`.
///
/// # Errors
/// No randomness from the system.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    use argon2::PasswordHasher as _;
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| anyhow::anyhow!("no randomness for a salt: {e}"))?;
    let salt = argon2::password_hash::SaltString::encode_b64(&salt)
        .map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    Ok(argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("hashing: {e}"))?
        .to_string())
}

/// Whether `password` matches the PHC hash `hash`.
fn verify(password: &str, hash: &str) -> bool {
    use argon2::PasswordVerifier as _;
    argon2::password_hash::PasswordHash::new(hash).is_ok_and(|parsed| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// A hash no password matches, verified for an unknown user so that a wrong name takes
/// as long as a wrong password.
const DECOY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmE";

fn token() -> String {
    let mut bytes = [0u8; 24];
    // Without system randomness there are no safe sessions: a fixed token would be worse.
    getrandom::fill(&mut bytes)
        .unwrap_or_else(|e| panic!("no system randomness for a session token: {e}"));
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct Session {
    user: String,
    role: Role,
    csrf: String,
    expires: Instant,
}

/// What the console serves from.
pub struct ConsoleSettings {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The journal to read.
    pub journal: PathBuf,
    /// Mark cookies `Secure`.
    pub secure_cookies: bool,
}

struct App {
    config: Arc<Config>,
    bus: Bus,
    events: Events,
    journal: PathBuf,
    secure: bool,
    users: BTreeMap<String, User>,
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
    feed: broadcast::Sender<(String, String)>,
    seen: Mutex<Seen>,
    metrics: metrics::Metrics,
    /// The brokers' instrument masters (`[live] instruments`), for the symbol box and the
    /// basket builder's strikes; empty until read, and when none is configured.
    catalog: std::sync::RwLock<crate::brokers::instruments::Catalog>,
}

/// An armed exit as the journal keeps it: stop, target, trailing percent, best price.
/// What the console has seen on the bus.
#[derive(Default)]
struct Seen {
    recent: VecDeque<Value>,
    pipelines: BTreeMap<String, Value>,
    alerts: VecDeque<Value>,
    last: HashMap<String, rust_decimal::Decimal>,
    equity: BTreeMap<String, VecDeque<(i64, String)>>,
    last_equity_ts: i64,
    chains: chain::Chains,
}

/// The console's users from the secrets file beside `config`, checked: a role that is
/// neither `viewer` nor `trader`, or a hash that is not an argon2 PHC string, is an error
/// naming the user.
///
/// # Errors
/// A secrets file that does not parse, or a bad user.
pub fn users(config: &Config) -> anyhow::Result<BTreeMap<String, User>> {
    let store = SecretStore::beside(config)?;
    let mut out = BTreeMap::new();
    for (name, u) in store.console_users() {
        let where_ = store.path.as_ref().map_or_else(
            || "the secrets file".to_owned(),
            |p| p.display().to_string(),
        );
        let role = Role::parse(&u.role).with_context(|| {
            format!(
                "{where_}: [console.users.{name}] role = {:?}: expected \"viewer\" or \"trader\"",
                u.role
            )
        })?;
        if argon2::password_hash::PasswordHash::new(u.password_hash.expose()).is_err() {
            anyhow::bail!(
                "{where_}: [console.users.{name}] password_hash is not an argon2 hash (make one with `tradehost console --hash-password`)"
            );
        }
        out.insert(
            name,
            User {
                hash: u.password_hash,
                role,
            },
        );
    }
    Ok(out)
}

/// Serve the console until `shutdown` resolves.
///
/// # Errors
/// The address cannot be bound, or the bus cannot be subscribed to.
pub async fn serve(
    config: Arc<Config>,
    bus: Bus,
    settings: ConsoleSettings,
    users: BTreeMap<String, User>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (feed, _) = broadcast::channel(1024);
    let app = Arc::new(App {
        config,
        events: Events::new(bus.clone(), "console"),
        bus: bus.clone(),
        journal: settings.journal,
        secure: settings.secure_cookies,
        users,
        sessions: Mutex::default(),
        failures: Mutex::default(),
        feed,
        seen: Mutex::default(),
        metrics: metrics::Metrics::default(),
        catalog: std::sync::RwLock::default(),
    });
    // The masters are read in the background: the page is up at once.
    let reader = app.clone();
    let masters = tokio::spawn(async move {
        for (broker, source) in &reader.config.live.instruments {
            let source = reader.config.resolve_source(source);
            let read = crate::brokers::instruments::read_source(&source)
                .await
                .and_then(|text| Ok(crate::brokers::instruments::parse(broker, &source, &text)?));
            match read {
                Ok(entries) => {
                    if let Ok(mut c) = reader.catalog.write() {
                        c.add(&entries);
                    }
                }
                Err(e) => {
                    reader
                        .events
                        .error("console", &format!("{broker} instrument master: {e:#}"))
                        .await
                }
            }
        }
    });
    let mut sub = bus
        .subscribe(&[bus.channels().all()])
        .await
        .context("subscribing to the bus")?;
    let watcher = app.clone();
    let follow = tokio::spawn(async move {
        while let Some((channel, payload)) = sub.recv().await {
            watcher.take(&channel, &payload);
            let _ = watcher.feed.send((channel, payload));
        }
    });
    let router = Router::new()
        .route("/", get(index))
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .route("/api/session", get(session))
        .route("/api/state", get(state))
        .route("/api/events", get(events))
        .route("/api/command", post(command))
        .route("/api/orders", post(manual_order))
        .route("/api/baskets", post(basket))
        .route("/api/watchers", post(watch))
        .route("/api/watchers/cancel", post(unwatch))
        .route("/api/payoff", post(payoff_of))
        .route("/api/instruments", get(instruments))
        .route("/api/chain", get(option_chain))
        .route("/metrics", get(metrics))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("binding the console to {}", settings.listen))?;
    let bound = listener.local_addr().unwrap_or(settings.listen);
    tracing::info!("console on http://{bound}");
    println!("console: http://{bound}");
    let served = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    follow.abort();
    masters.abort();
    served.context("serving the console")
}

impl App {
    /// Take in one bus message: the recent list, pipelines, alerts, last prices, metrics.
    fn take(&self, channel: &str, payload: &str) {
        let Ok(v) = serde_json::from_str::<Value>(payload) else {
            return;
        };
        self.metrics.observe(&v);
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        let kind = v["type"].as_str().unwrap_or_default();
        if kind == "quotes" {
            let ts = v["ts"].as_i64().unwrap_or(0);
            for q in v["quotes"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                if let (Some(i), Some(p)) = (
                    q["instrument"].as_str(),
                    q["close"].as_str().and_then(|p| p.parse().ok()),
                ) {
                    seen.last.insert(i.to_owned(), p);
                    seen.chains.take(i, p, ts);
                }
            }
            // The intraday equity curve: each account's P&L, at most once a market minute.
            if ts >= seen.last_equity_ts + 60_000 {
                seen.last_equity_ts = ts;
                let last = seen.last.clone();
                if let Ok(accounts) = self.accounts(&last) {
                    for (id, a) in accounts.as_object().into_iter().flatten() {
                        let curve = seen.equity.entry(id.clone()).or_default();
                        if curve.len() == 500 {
                            curve.pop_front();
                        }
                        curve.push_back((ts, a["total"].as_str().unwrap_or("0").to_owned()));
                    }
                }
            }
            return;
        }
        if kind == "heartbeat" {
            return;
        }
        let entry = json!({ "channel": channel, "message": v });
        if seen.recent.len() == RECENT {
            seen.recent.pop_front();
        }
        seen.recent.push_back(entry);
        if v["alert"] == true
            || matches!(
                v["event"].as_str(),
                Some("plugin_failed" | "feed_stale" | "token_expired" | "risk_breaker")
            )
        {
            if seen.alerts.len() == 50 {
                seen.alerts.pop_front();
            }
            seen.alerts.push_back(v.clone());
        }
        // Order messages name a pipeline too (or `basket`, a close's reason): not a pipeline's news.
        let pipeline = if kind == "order" {
            None
        } else {
            v["pipeline"].as_str().map(str::to_owned)
        };
        if let Some(p) = pipeline {
            let row = seen.pipelines.entry(p.clone()).or_insert_with(
                || json!({ "pipeline": p, "state": "unknown", "swaps": 0, "quarantines": 0 }),
            );
            match (kind, v["event"].as_str()) {
                ("signal", _) => {
                    row["last_signal"] = json!({ "side": v["side"], "instrument": v["instrument"], "ts": v["ts"], "reason": v["reason"] })
                }
                (_, Some("plugin_loaded")) => {
                    row["plugin"] = v["plugin"].clone();
                    row["version"] = v["version"].clone();
                }
                (_, Some("pipeline_started" | "pipeline_resumed" | "plugin_restarted")) => {
                    row["state"] = json!("running")
                }
                (_, Some("pipeline_paused")) => row["state"] = json!("paused"),
                (_, Some("pipeline_waiting")) => row["state"] = json!("waiting"),
                (_, Some("pipeline_finished")) => row["state"] = json!("finished"),
                (_, Some("pipeline_stopped")) => row["state"] = json!("stopped"),
                (_, Some("pipeline_failed")) => row["state"] = json!("failed"),
                (_, Some("plugin_swapped")) => {
                    row["swaps"] = json!(row["swaps"].as_u64().unwrap_or(0) + 1);
                    row["version"] = v["new_version"].clone();
                }
                (_, Some("plugin_failed")) => {
                    row["quarantines"] = json!(row["quarantines"].as_u64().unwrap_or(0) + 1);
                    row["state"] = json!("quarantined");
                }
                _ => {}
            }
        }
    }

    /// Each account's positions, P&L (realized, unrealized at the last price) and armed
    /// exits, from the journal (read-only; an absent journal is an empty account).
    fn accounts(&self, last: &HashMap<String, rust_decimal::Decimal>) -> anyhow::Result<Value> {
        use rust_decimal::Decimal;
        let mut out = serde_json::Map::new();
        for a in &self.config.accounts {
            out.insert(a.id.get_ref().clone(), json!({ "broker": a.broker.get_ref(), "mode": format!("{:?}", a.mode).to_lowercase(), "positions": {}, "realized": "0", "unrealized": "0", "total": "0" }));
        }
        let Some(journal) = JournalReader::open(&self.journal)? else {
            return Ok(Value::Object(out));
        };
        let mut sums: HashMap<String, (Decimal, Decimal)> = HashMap::new();
        for row in journal.positions()? {
            let (q, p, r) = (row.qty, row.avg_price, row.realized);
            let mark = last.get(&row.instrument).copied();
            let unrealized = mark
                .and_then(|m| m.checked_sub(p))
                .and_then(|d| d.checked_mul(q))
                .unwrap_or_default();
            let sum = sums.entry(row.account.clone()).or_default();
            sum.0 = sum.0.checked_add(r).unwrap_or(sum.0);
            sum.1 = sum.1.checked_add(unrealized).unwrap_or(sum.1);
            if q.is_zero() {
                continue;
            }
            let exit = journal.exit_of(&row.account, &row.instrument)?;
            let text = |d: Option<Decimal>| d.map(|d| d.to_string());
            let entry = out
                .entry(row.account.clone())
                .or_insert_with(|| json!({ "positions": {} }));
            entry["positions"][&row.instrument] = json!({
                "qty": q.normalize().to_string(), "avg_price": p.normalize().to_string(), "last": mark.map(|m| m.normalize().to_string()),
                "unrealized": unrealized.round_dp(2).normalize().to_string(),
                "exit": exit.map(|e| json!({ "stop": text(e.stop), "target": text(e.target), "trailing_pct": text(e.trailing_pct), "best": e.best.to_string() })),
            });
        }
        for (account, (realized, unrealized)) in sums {
            let entry = out
                .entry(account)
                .or_insert_with(|| json!({ "positions": {} }));
            entry["realized"] = json!(realized.round_dp(2).normalize().to_string());
            entry["unrealized"] = json!(unrealized.round_dp(2).normalize().to_string());
            entry["total"] = json!(
                realized
                    .checked_add(unrealized)
                    .unwrap_or(realized)
                    .round_dp(2)
                    .normalize()
                    .to_string()
            );
        }
        Ok(Value::Object(out))
    }

    /// The latest orders with their state-machine history.
    fn orders(&self) -> anyhow::Result<Vec<Value>> {
        let Some(journal) = JournalReader::open(&self.journal)? else {
            return Ok(Vec::new());
        };
        let text = |d: Option<rust_decimal::Decimal>| d.map(|d| d.to_string());
        let mut out = Vec::new();
        for o in journal.recent_orders(100)? {
            let history: Vec<Value> = journal
                .history(&o.client_order_id)?
                .into_iter()
                .map(|t| json!({ "from": t.from, "event": t.event, "to": t.to, "at": t.at }))
                .collect();
            out.push(json!({
                "client_order_id": o.client_order_id, "account": o.account, "pipeline": o.pipeline, "instrument": o.instrument,
                "side": o.side.as_str(), "qty": o.qty.to_string(), "state": o.state, "fill_price": text(o.fill_price),
                "filled_qty": text(o.filled_qty).unwrap_or_default(), "order_type": o.order_type, "price": text(o.price), "trigger": text(o.trigger),
                "parent": o.parent, "broker_order_id": o.broker_order_id, "signal_id": o.signal_id,
                "history": history,
            }));
        }
        Ok(out)
    }

    /// The level watchers, newest first.
    fn watchers(&self) -> anyhow::Result<Vec<Value>> {
        let Some(journal) = JournalReader::open(&self.journal)? else {
            return Ok(Vec::new());
        };
        Ok(journal
            .watchers(100)?
            .into_iter()
            .map(|w| {
                json!({
                    "watch_id": w.watch_id, "account": w.account, "instrument": w.instrument, "level": w.level.to_string(),
                    "direction": if w.up { "up" } else { "down" }, "side": w.side.as_str(), "order_instrument": w.order_instrument,
                    "qty": w.qty.to_string(), "state": w.state, "fired_ts": w.fired_ts,
                })
            })
            .collect())
    }

    /// The session of a request's cookie, if it is live.
    fn session(&self, headers: &HeaderMap) -> Option<(String, Role, String)> {
        let cookie = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|c| c.split(';'))
            .find_map(|kv| {
                kv.trim()
                    .strip_prefix(&format!("{COOKIE}="))
                    .map(str::to_owned)
            })?;
        let mut sessions = self.sessions.lock().ok()?;
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        sessions
            .get(&cookie)
            .map(|s| (s.user.clone(), s.role, s.csrf.clone()))
    }

    async fn did(&self, user: &str, role: Role, action: &str, detail: String) {
        self.events
            .publish(&Event::ConsoleAction {
                user: user.to_owned(),
                access: role.as_str().to_owned(),
                action: action.to_owned(),
                detail,
            })
            .await;
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// A request refused: its status and why.
struct Refused(StatusCode, String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        error(self.0, &self.1)
    }
}

/// The user of a state-changing request: a live session, its CSRF token in `X-CSRF-Token`,
/// and the trader role. Else the response that refuses it (401, 403).
fn trader(app: &App, headers: &HeaderMap) -> Result<(String, Role), Refused> {
    let Some((user, role, csrf)) = app.session(headers) else {
        return Err(Refused(StatusCode::UNAUTHORIZED, "log in first".into()));
    };
    let sent = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if sent.is_empty() || !constant_eq(sent.as_bytes(), csrf.as_bytes()) {
        return Err(Refused(
            StatusCode::FORBIDDEN,
            "missing or wrong CSRF token: reload the page".into(),
        ));
    }
    if role != Role::Trader {
        return Err(Refused(
            StatusCode::FORBIDDEN,
            "a viewer cannot place, cancel, flatten, pause or reload".into(),
        ));
    }
    Ok((user, role))
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn index() -> Response {
    let mut r = (StatusCode::OK, INDEX).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn login(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let user = body["user"]
        .as_str()
        .unwrap_or_default()
        .chars()
        .take(64)
        .collect::<String>();
    let password = body["password"].as_str().unwrap_or_default();
    let now = Instant::now();
    let limited = app.failures.lock().is_ok_and(|mut f| {
        let tries = f.entry(peer.ip()).or_default();
        while tries
            .front()
            .is_some_and(|t| now.duration_since(*t) > LOGIN_WINDOW)
        {
            tries.pop_front();
        }
        tries.len() >= LOGIN_FAILURES
    });
    if limited {
        app.metrics.login_refused("rate_limited");
        app.events
            .publish(&Event::ConsoleLoginRefused {
                user: user.clone(),
                from: peer.ip().to_string(),
                reason: "too many failed logins".into(),
            })
            .await;
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed logins from this address: wait a minute",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        return r;
    }
    let known = app.users.get(&user);
    let hash = known.map_or(DECOY, |u| u.hash.expose());
    let hash = hash.to_owned();
    let pw = password.to_owned();
    let ok = tokio::task::spawn_blocking(move || verify(&pw, &hash))
        .await
        .unwrap_or(false)
        && known.is_some();
    let Some(u) = known.filter(|_| ok) else {
        if let Ok(mut f) = app.failures.lock() {
            f.entry(peer.ip()).or_default().push_back(now);
        }
        app.metrics.login_refused("bad_credentials");
        app.events
            .publish(&Event::ConsoleLoginRefused {
                user,
                from: peer.ip().to_string(),
                reason: "wrong user or password".into(),
            })
            .await;
        return error(StatusCode::UNAUTHORIZED, "wrong user or password");
    };
    let (sid, csrf) = (token(), token());
    if let Ok(mut s) = app.sessions.lock() {
        s.insert(
            sid.clone(),
            Session {
                user: user.clone(),
                role: u.role,
                csrf: csrf.clone(),
                expires: now + SESSION_TTL,
            },
        );
    }
    app.did(&user, u.role, "login", format!("from {}", peer.ip()))
        .await;
    let secure = app.secure
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            == Some("https");
    let cookie = format!(
        "{COOKIE}={sid}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
        SESSION_TTL.as_secs(),
        if secure { "; Secure" } else { "" }
    );
    let mut r = Json(json!({ "user": user, "role": u.role, "csrf": csrf })).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn logout(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let Some((user, role, csrf)) = app.session(&headers) else {
        return error(StatusCode::UNAUTHORIZED, "not logged in");
    };
    let sent = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !constant_eq(sent.as_bytes(), csrf.as_bytes()) {
        return error(StatusCode::FORBIDDEN, "missing or wrong CSRF token");
    }
    if let Ok(mut s) = app.sessions.lock() {
        s.retain(|_, s| s.csrf != csrf);
    }
    app.did(&user, role, "logout", String::new()).await;
    let mut r = Json(json!({ "ok": true })).into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("th_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    r
}

async fn session(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    match app.session(&headers) {
        Some((user, role, csrf)) => {
            Json(json!({ "user": user, "role": role, "csrf": csrf })).into_response()
        }
        None => error(StatusCode::UNAUTHORIZED, "log in first"),
    }
}

async fn state(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if app.session(&headers).is_none() {
        return error(StatusCode::UNAUTHORIZED, "log in first");
    }
    let (last, recent, pipelines, alerts, equity) = match app.seen.lock() {
        Ok(s) => (
            s.last.clone(),
            s.recent.iter().cloned().collect::<Vec<_>>(),
            s.pipelines.clone(),
            s.alerts.iter().cloned().collect::<Vec<_>>(),
            s.equity.clone(),
        ),
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "state unavailable"),
    };
    let app2 = app.clone();
    let read = tokio::task::spawn_blocking(move || {
        Ok::<_, anyhow::Error>((app2.accounts(&last)?, app2.orders()?, app2.watchers()?))
    })
    .await;
    let (accounts, orders, watchers) = match read {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                &crate::domain::secret::scrub(&format!("journal: {e:#}")),
            );
        }
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "journal read failed"),
    };
    // Every configured pipeline, seen on the bus or not yet.
    let mut pipes = pipelines;
    for p in &app.config.pipelines {
        pipes.entry(p.id.get_ref().clone()).or_insert_with(|| json!({ "pipeline": p.id.get_ref(), "state": "unknown", "plugin": p.plugin.get_ref(), "swaps": 0, "quarantines": 0 }));
    }
    let equity: BTreeMap<String, Vec<Value>> = equity
        .into_iter()
        .map(|(k, v)| (k, v.into_iter().map(|(t, p)| json!([t, p])).collect()))
        .collect();
    Json(json!({
        "accounts": accounts, "orders": orders, "watchers": watchers, "pipelines": pipes.into_values().collect::<Vec<_>>(), "alerts": alerts, "recent": recent, "equity": equity,
    }))
    .into_response()
}

async fn events(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if app.session(&headers).is_none() {
        return error(StatusCode::UNAUTHORIZED, "log in first");
    }
    let rx = app.feed.subscribe();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok((channel, payload)) => {
                    if payload.contains("\"type\":\"heartbeat\"") {
                        continue;
                    }
                    let data = json!({ "channel": channel, "message": serde_json::from_str::<Value>(&payload).unwrap_or(Value::Null) }).to_string();
                    return Some((
                        Ok::<_, std::convert::Infallible>(SseEvent::default().data(data)),
                        rx,
                    ));
                }
                // A slow page missed some: it reloads its state.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    return Some((Ok(SseEvent::default().event("lagged").data("{}")), rx));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// The commands a trader may send from the page.
const COMMANDS: [&str; 10] = [
    "pause", "resume", "start", "stop", "reload", "flatten", "kill", "release", "cancel", "modify",
];

/// Publish a command built from `fields`, checked as the services will check it.
async fn send_command(
    app: &App,
    user: &str,
    role: Role,
    id: &str,
    fields: Value,
    action: &str,
) -> Response {
    let mut msg =
        json!({ "v": 1, "type": "command", "id": id, "ts": crate::domain::time::now_ms() });
    for (k, v) in fields.as_object().into_iter().flatten() {
        msg[k] = v.clone();
    }
    let text = msg.to_string();
    let checked = CommandMessage::parse(&text).and_then(|c| c.command().map(|_| c));
    if let Err(e) = checked {
        return error(StatusCode::BAD_REQUEST, &e);
    }
    if let Err(e) = app.bus.publish(&app.bus.channels().commands(), &text).await {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("the bus did not take the command: {e}"),
        );
    }
    app.metrics.action(action);
    app.did(
        user,
        role,
        action,
        crate::bus::message::printable(&fields.to_string(), 300),
    )
    .await;
    (
        StatusCode::ACCEPTED,
        Json(json!({ "id": id, "accepted": true })),
    )
        .into_response()
}

async fn command(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let (user, role) = match trader(&app, &headers) {
        Ok(u) => u,
        Err(r) => return r.into_response(),
    };
    let cmd = body["cmd"].as_str().unwrap_or_default();
    if !COMMANDS.contains(&cmd) {
        return error(
            StatusCode::BAD_REQUEST,
            &format!(
                "unknown or not allowed here: {:?} (one of {})",
                crate::bus::message::printable(cmd, 40),
                COMMANDS.join(", ")
            ),
        );
    }
    let mut fields = serde_json::Map::new();
    for k in [
        "cmd",
        "pipeline",
        "account",
        "client_order_id",
        "price",
        "trigger",
    ] {
        if let Some(v) = body.get(k).filter(|v| !v.is_null()) {
            fields.insert(k.to_owned(), v.clone());
        }
    }
    let id = format!("console-{}", token());
    send_command(&app, &user, role, &id, Value::Object(fields), cmd).await
}

/// A ticket's request id: letters, digits, `-` and `_`, 8 to 64 of them.
fn request_id(body: &Value) -> Result<String, Refused> {
    let id = body["request_id"].as_str().unwrap_or_default();
    if (8..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        Ok(id.to_owned())
    } else {
        Err(Refused(
            StatusCode::BAD_REQUEST,
            "request_id: 8 to 64 letters, digits, - or _ (one per ticket: a retry sends the same)"
                .into(),
        ))
    }
}

/// One leg of a ticket, as the `basket` command takes it: at the market, or with its
/// `order_type` (`LIMIT`, `SL`, `SL-M`), `price` and `trigger` as the command's order terms;
/// with a `stop_loss` and `target` for the managed exit of what it opens.
fn leg(v: &Value) -> Value {
    let mut leg = json!({ "instrument": v["instrument"], "side": v["side"], "qty": v["qty"] });
    let given = |k: &str| {
        v.get(k)
            .filter(|x| !x.is_null() && x.as_str() != Some(""))
            .cloned()
    };
    if let Some(kind) = given("order_type").filter(|k| k.as_str() != Some("MARKET")) {
        let mut terms = json!({ "type": kind });
        for k in ["price", "trigger"] {
            if let Some(x) = given(k) {
                terms[k] = x;
            }
        }
        leg["order"] = terms;
    }
    for k in ["stop_loss", "target"] {
        if let Some(x) = given(k) {
            leg[k] = x;
        }
    }
    leg
}

/// A ticket as a `basket` command whose id is `action-<request id>`: placed once however
/// often it is sent (the order manager places a basket id once).
async fn ticket(
    app: &App,
    headers: &HeaderMap,
    body: &Value,
    action: &str,
    legs: Vec<Value>,
    unwind: bool,
) -> Response {
    let ((user, role), rid) =
        match trader(app, headers).and_then(|who| request_id(body).map(|rid| (who, rid))) {
            Ok(t) => t,
            Err(r) => return r.into_response(),
        };
    let fields =
        json!({ "cmd": "basket", "account": body["account"], "legs": legs, "unwind": unwind });
    send_command(app, &user, role, &format!("{action}-{rid}"), fields, action).await
}

/// A manual order: one leg, placed exactly once per request id through the order
/// manager's basket path (risk rules, journal, managed exits as for any order).
async fn manual_order(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    ticket(&app, &headers, &body, "order", vec![leg(&body)], false).await
}

/// An option basket (legs bought first, then sold), once per request id.
async fn basket(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let legs = body["legs"]
        .as_array()
        .map(|l| l.iter().map(leg).collect())
        .unwrap_or_default();
    ticket(
        &app,
        &headers,
        &body,
        "basket",
        legs,
        body["unwind"].as_bool().unwrap_or(true),
    )
    .await
}

/// A level watcher: when `instrument` crosses `level` (`direction` up or down), place the
/// order (`side`, `qty` of `order_instrument`, by default the instrument watched); armed
/// once per request id, kept in the journal across restarts, fired once.
async fn watch(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let ((user, role), rid) =
        match trader(&app, &headers).and_then(|who| request_id(&body).map(|rid| (who, rid))) {
            Ok(t) => t,
            Err(r) => return r.into_response(),
        };
    let order_instrument = body
        .get("order_instrument")
        .filter(|v| v.as_str().is_some_and(|s| !s.is_empty()))
        .unwrap_or(&body["instrument"]);
    let fields = json!({
        "cmd": "watch", "account": body["account"], "instrument": body["instrument"], "level": body["level"], "direction": body["direction"],
        "legs": [{ "instrument": order_instrument, "side": body["side"], "qty": body["qty"] }],
    });
    send_command(&app, &user, role, &format!("watch-{rid}"), fields, "watch").await
}

/// Disarm a level watcher.
async fn unwatch(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let (user, role) = match trader(&app, &headers) {
        Ok(u) => u,
        Err(r) => return r.into_response(),
    };
    send_command(
        &app,
        &user,
        role,
        &format!("console-{}", token()),
        json!({ "cmd": "unwatch", "watch_id": body["watch_id"] }),
        "unwatch",
    )
    .await
}

/// The payoff of a basket at expiry and today (Black-76 from each leg's implied volatility).
async fn payoff_of(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if app.session(&headers).is_none() {
        return error(StatusCode::UNAUTHORIZED, "log in first");
    }
    match serde_json::from_value::<payoff::Request>(body) {
        Ok(req) => match payoff(&req) {
            Ok(p) => Json(p).into_response(),
            Err(e) => error(StatusCode::BAD_REQUEST, &e),
        },
        Err(e) => error(StatusCode::BAD_REQUEST, &format!("basket: {e}")),
    }
}

#[derive(serde::Deserialize)]
struct Search {
    #[serde(default)]
    q: String,
}

/// Instruments matching `q`, those starting with it first: the instrument masters'
/// names, the pipelines' symbols and every instrument priced on the bus.
async fn instruments(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(search): Query<Search>,
) -> Response {
    const SHOWN: usize = 20;
    if app.session(&headers).is_none() {
        return error(StatusCode::UNAUTHORIZED, "log in first");
    }
    let q = search.q.trim().to_ascii_uppercase();
    if q.is_empty() || q.len() > 40 {
        return Json(json!({ "instruments": [] })).into_response();
    }
    let mut all: std::collections::BTreeSet<String> = app
        .config
        .pipelines
        .iter()
        .flat_map(|p| p.symbols.get_ref().iter().cloned())
        .collect();
    if let Ok(s) = app.seen.lock() {
        all.extend(s.last.keys().cloned());
    }
    let mut found: Vec<String> = all
        .range(q.clone()..)
        .take_while(|i| i.starts_with(&q))
        .take(SHOWN)
        .cloned()
        .collect();
    if let Ok(c) = app.catalog.read() {
        found.extend(
            c.symbols
                .range(q.clone()..)
                .take_while(|i| i.starts_with(&q))
                .take(SHOWN)
                .cloned(),
        );
        found.sort();
        found.dedup();
        found.truncate(SHOWN);
        // Then names holding it elsewhere (`BANK` finds `NIFTY BANK`).
        let more: std::collections::BTreeSet<&String> = all
            .iter()
            .chain(c.symbols.iter())
            .filter(|i| !i.starts_with(&q) && i.contains(&q))
            .take(SHOWN)
            .collect();
        let room = SHOWN - found.len();
        found.extend(more.into_iter().take(room).cloned());
    }
    Json(json!({ "instruments": found })).into_response()
}

#[derive(serde::Deserialize)]
struct ChainQuery {
    underlying: Option<String>,
    expiry: Option<String>,
}

/// The option chain of an underlying and expiry, for the basket builder.
async fn option_chain(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<ChainQuery>,
) -> Response {
    if app.session(&headers).is_none() {
        return error(StatusCode::UNAUTHORIZED, "log in first");
    }
    let (Ok(seen), Ok(catalog)) = (app.seen.lock(), app.catalog.read()) else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "state unavailable");
    };
    let underlying = q.underlying.map(|u| u.trim().to_ascii_uppercase());
    Json(chain::view(
        &app.config,
        &catalog,
        &seen.chains,
        &seen.last,
        underlying.as_deref(),
        q.expiry.as_deref(),
    ))
    .into_response()
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let mut r = (StatusCode::OK, app.metrics.render()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    r
}
