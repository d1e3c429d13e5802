//! Messages on the bus. Every one is a JSON object with a schema version
//! `v`, a `type`, a timestamp `ts` (ms since the Unix epoch) and a stable
//! `id`; prices travel as decimal strings.

use std::sync::atomic::{AtomicU64, Ordering};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::domain::order::{OrderKind, Validity};

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// The earliest exchange time a message may carry: 2000-01-01 UTC.
pub const EARLIEST_TS_MS: i64 = 946_684_800_000;
/// The first exchange time no message may carry: 2100-01-01 UTC.
pub const LATEST_TS_MS: i64 = 4_102_444_800_000;

/// Check that `ts` (ms since the Unix epoch) is a time an exchange could have
/// stamped: between 2000 and 2100. Everything after parsing may then do plain
/// arithmetic on it; `i64::MAX` from the wire never reaches an addition.
///
/// # Errors
/// A time outside that range, named.
pub fn check_ts(field: &str, ts: i64) -> Result<(), String> {
    if (EARLIEST_TS_MS..LATEST_TS_MS).contains(&ts) {
        Ok(())
    } else {
        Err(format!(
            "{field} {ts} is not a plausible exchange time (expected ms since 1970, between 2000 and 2100)"
        ))
    }
}

/// `text` made safe to print or echo: control characters (ANSI escapes, new
/// lines) escaped, and at most `max_chars` characters kept, with a note of
/// how many were cut. Ids and free text from the bus pass through this before
/// they reach a terminal or another message.
#[must_use]
pub fn printable(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars.saturating_add(16)));
    let mut chars = text.chars();
    for (kept, c) in chars.by_ref().enumerate() {
        if kept == max_chars {
            let rest = 1 + chars.count();
            out.push_str(&format!("…({rest} more characters)"));
            return out;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The longest id a command may carry.
pub const MAX_ID_CHARS: usize = 128;

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// A process-unique id for an event: `<role>-<pid>-<start ms>-<n>`.
#[must_use]
pub fn event_id(role: &str) -> String {
    static START: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let start = *START.get_or_init(crate::domain::time::now_ms);
    format!(
        "{role}-{}-{start}-{}",
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    )
}

/// Wrap `body` (a JSON object) with `v`, `type`, `id` and `ts`.
#[must_use]
pub fn envelope(kind: &str, id: &str, ts_ms: i64, body: serde_json::Value) -> String {
    let mut map = match body {
        serde_json::Value::Object(map) => map,
        other => {
            let mut m = serde_json::Map::new();
            m.insert("body".into(), other);
            m
        }
    };
    map.insert("v".into(), SCHEMA_VERSION.into());
    map.insert("type".into(), kind.into());
    map.insert("id".into(), id.into());
    map.insert("ts".into(), ts_ms.into());
    serde_json::Value::Object(map).to_string()
}

pub use crate::domain::money::{de_decimal, de_opt_decimal};

/// Check `v` and `type` of a parsed message.
fn check_header(v: u32, kind: &str, want: &str) -> Result<(), String> {
    if v != SCHEMA_VERSION {
        return Err(format!(
            "schema version {v} is not supported (this build reads {SCHEMA_VERSION})"
        ));
    }
    if kind != want {
        return Err(format!("expected a message of type {want:?}, got {kind:?}"));
    }
    Ok(())
}

/// A signal on `trading:signals` and in the signal log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalMessage {
    /// Schema version.
    pub v: u32,
    /// `signal`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Deterministic: `<pipeline>/<plugin>@<version>/<event ts>/<sequence>`.
    pub id: String,
    /// Event time: the start of the bar that produced it.
    pub ts: i64,
    /// Pipeline id.
    pub pipeline: String,
    /// Plugin name.
    pub plugin: String,
    /// Plugin version.
    pub plugin_version: String,
    /// Instrument.
    pub instrument: String,
    /// `buy`, `sell` or `exit`.
    pub side: String,
    /// The strategy's reason.
    pub reason: String,
    /// Close (or last price) of the instrument when produced.
    #[serde(default, deserialize_with = "de_opt_decimal")]
    pub price: Option<Decimal>,
    /// Stop-loss.
    #[serde(default, deserialize_with = "de_opt_decimal")]
    pub stop_loss: Option<Decimal>,
    /// Target.
    #[serde(default, deserialize_with = "de_opt_decimal")]
    pub target: Option<Decimal>,
    /// Conviction.
    #[serde(default)]
    pub strength: Option<f64>,
    /// The sha256 of the plugin's `.wasm` (the audit export names the exact build).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_sha256: Option<String>,
    /// How its order is priced and how long it works; absent: at the market, for the day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<OrderTerms>,
}

/// A signal's order terms (contract 1.1): `{"type": "LIMIT", "price": "101.5"}`,
/// `{"type": "SL-M", "trigger": "99"}`, `{"type": "SL", "trigger": "99", "price": "98.5"}`,
/// with `"validity": "IOC"` where it is not a day order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderTerms {
    /// `MARKET`, `LIMIT`, `SL` or `SL-M`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The limit.
    #[serde(
        default,
        deserialize_with = "de_opt_decimal",
        skip_serializing_if = "Option::is_none"
    )]
    pub price: Option<Decimal>,
    /// The trigger, for stops.
    #[serde(
        default,
        deserialize_with = "de_opt_decimal",
        skip_serializing_if = "Option::is_none"
    )]
    pub trigger: Option<Decimal>,
    /// `DAY` (absent) or `IOC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validity: Option<String>,
}

impl OrderTerms {
    /// The terms of an order of `kind` and `validity`; `None` for a market day order.
    #[must_use]
    pub fn of(kind: OrderKind, validity: Validity) -> Option<Self> {
        (kind != OrderKind::Market || validity != Validity::Day).then(|| Self {
            kind: kind.code().to_owned(),
            price: kind.price(),
            trigger: kind.trigger(),
            validity: (validity != Validity::Day).then(|| validity.code().to_owned()),
        })
    }

    /// The order kind and validity, or what is wrong with them.
    ///
    /// # Errors
    /// An unknown type or validity, a missing price, or a price not above zero.
    pub fn parse(&self) -> Result<(OrderKind, Validity), String> {
        let kind =
            OrderKind::from_parts(Some(&self.kind), self.price, self.trigger).ok_or_else(|| {
                match self.kind.as_str() {
                    "LIMIT" => "order type LIMIT needs a price".to_owned(),
                    "SL" => "order type SL needs a trigger and a price".to_owned(),
                    "SL-M" => "order type SL-M needs a trigger".to_owned(),
                    other => format!("order type {other:?}: expected MARKET, LIMIT, SL or SL-M"),
                }
            })?;
        for (field, v) in [("price", kind.price()), ("trigger", kind.trigger())] {
            if v.is_some_and(|p| p <= Decimal::ZERO) {
                return Err(format!(
                    "order {field} {}: not a price above zero",
                    v.unwrap_or_default()
                ));
            }
        }
        let validity = Validity::parse(self.validity.as_deref())
            .filter(|v| *v != Validity::Gtt)
            .ok_or_else(|| {
                format!(
                    "order validity {:?}: expected DAY or IOC",
                    self.validity.as_deref().unwrap_or("")
                )
            })?;
        Ok((kind, validity))
    }
}

impl SignalMessage {
    /// How its order is priced and how long it works (checked by [`SignalMessage::parse`];
    /// terms that do not parse read as a market day order).
    #[must_use]
    pub fn order_terms(&self) -> (OrderKind, Validity) {
        self.order
            .as_ref()
            .and_then(|o| o.parse().ok())
            .unwrap_or_default()
    }

    /// The deterministic id of the `sequence`-th signal a pipeline's plugin emitted at `ts`.
    #[must_use]
    pub fn make_id(
        pipeline: &str,
        plugin: &str,
        version: &str,
        ts: i64,
        sequence: usize,
    ) -> String {
        format!("{pipeline}/{plugin}@{version}/{ts}/{sequence}")
    }

    /// Parse and check a signal.
    ///
    /// # Errors
    /// What is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let m: Self = serde_json::from_str(text).map_err(|e| e.to_string())?;
        check_header(m.v, &m.kind, "signal")?;
        check_ts("ts", m.ts)?;
        if !matches!(m.side.as_str(), "buy" | "sell" | "exit") {
            return Err(format!("side {:?}: expected buy, sell or exit", m.side));
        }
        if let Some(order) = &m.order {
            order.parse()?;
        }
        Ok(m)
    }

    /// As JSON.
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A price of one instrument at one time, for fills and marks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quote {
    /// Instrument.
    pub instrument: String,
    /// Open of the bar (or the last price).
    #[serde(deserialize_with = "de_decimal")]
    pub open: Decimal,
    /// High.
    #[serde(deserialize_with = "de_decimal")]
    pub high: Decimal,
    /// Low.
    #[serde(deserialize_with = "de_decimal")]
    pub low: Decimal,
    /// Close (or the last price).
    #[serde(deserialize_with = "de_decimal")]
    pub close: Decimal,
    /// Best bid, when the source has one (ticks); intraday long trailing stops follow it.
    #[serde(
        default,
        deserialize_with = "de_opt_decimal",
        skip_serializing_if = "Option::is_none"
    )]
    pub bid: Option<Decimal>,
    /// Best ask, when the source has one; intraday short trailing stops follow it.
    #[serde(
        default,
        deserialize_with = "de_opt_decimal",
        skip_serializing_if = "Option::is_none"
    )]
    pub ask: Option<Decimal>,
}

/// Prices the engine saw at one time (`trading:quotes`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuotesMessage {
    /// Schema version.
    pub v: u32,
    /// `quotes`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `<pipeline>/<ts>`.
    pub id: String,
    /// Start of the bar.
    pub ts: i64,
    /// The prices.
    pub quotes: Vec<Quote>,
    /// The last signal its pipeline logged before these prices: the order side
    /// decides that signal before it lets these prices move anything, so a
    /// decision sees exactly the prices the strategy had seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_signal: Option<String>,
    /// The pipeline's source has ended: nothing more comes from it (its
    /// `quotes` are empty). Pipelines merged in event time stop waiting for it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub last: bool,
}

impl QuotesMessage {
    /// The pipeline that published it (its id is `<pipeline>/<ts>`).
    #[must_use]
    pub fn pipeline(&self) -> &str {
        self.id
            .rsplit_once('/')
            .map_or(self.id.as_str(), |(p, _)| p)
    }

    /// Parse and check.
    ///
    /// # Errors
    /// What is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let m: Self = serde_json::from_str(text).map_err(|e| e.to_string())?;
        check_header(m.v, &m.kind, "quotes")?;
        check_ts("ts", m.ts)?;
        Ok(m)
    }
}

/// Market data from an external feed on `trading:market:<symbol>`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MarketMessage {
    /// A quote update.
    Tick {
        /// Schema version.
        v: u32,
        /// Stable id.
        id: String,
        /// Exchange time, ms.
        ts: i64,
        /// Instrument.
        symbol: String,
        /// Last traded price.
        #[serde(deserialize_with = "de_decimal")]
        last: Decimal,
        /// Best bid.
        #[serde(default, deserialize_with = "de_opt_decimal")]
        bid: Option<Decimal>,
        /// Best ask.
        #[serde(default, deserialize_with = "de_opt_decimal")]
        ask: Option<Decimal>,
        /// Cumulative volume.
        #[serde(default)]
        volume: u64,
        /// Open interest.
        #[serde(default)]
        oi: u64,
    },
    /// A finished bar.
    Candle {
        /// Schema version.
        v: u32,
        /// Stable id.
        id: String,
        /// Start of the bar, ms.
        ts: i64,
        /// Instrument.
        symbol: String,
        /// Bar length in seconds; the pipeline's when absent.
        #[serde(default)]
        timeframe_secs: Option<u32>,
        /// Open.
        #[serde(deserialize_with = "de_decimal")]
        open: Decimal,
        /// High.
        #[serde(deserialize_with = "de_decimal")]
        high: Decimal,
        /// Low.
        #[serde(deserialize_with = "de_decimal")]
        low: Decimal,
        /// Close.
        #[serde(deserialize_with = "de_decimal")]
        close: Decimal,
        /// Volume.
        #[serde(default)]
        volume: u64,
        /// Open interest.
        #[serde(default)]
        oi: u64,
    },
}

impl MarketMessage {
    /// Parse and check a market message.
    ///
    /// # Errors
    /// What is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let m: Self = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let v = match &m {
            Self::Tick { v, .. } | Self::Candle { v, .. } => *v,
        };
        if v != SCHEMA_VERSION {
            return Err(format!(
                "schema version {v} is not supported (this build reads {SCHEMA_VERSION})"
            ));
        }
        let (Self::Tick { ts, .. } | Self::Candle { ts, .. }) = &m;
        check_ts("ts", *ts)?;
        if let Self::Candle {
            open,
            high,
            low,
            close,
            ..
        } = &m
            && (high < open.max(close).max(low) || low > open.min(close))
        {
            return Err("candle high/low do not contain open and close".into());
        }
        Ok(m)
    }
}

/// A control command on `trading:commands`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandMessage {
    /// Schema version.
    pub v: u32,
    /// `command`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Stable id; echoed in the acknowledgement.
    pub id: String,
    /// When it was sent (optional for commands typed by hand).
    #[serde(default)]
    pub ts: Option<i64>,
    /// `start`, `stop`, `pause`, `resume`, `flatten`, `kill`, `release`, `reload`, `token`,
    /// `basket`, `cancel`, `modify`, `shutdown`.
    pub cmd: String,
    /// Target pipeline id, or `*` for all.
    #[serde(default)]
    pub pipeline: Option<String>,
    /// Target user: the pipelines whose `user` is this.
    #[serde(default)]
    pub user: Option<String>,
    /// Target account (for `flatten` and `basket`).
    #[serde(default)]
    pub account: Option<String>,
    /// The legs of a `basket`.
    #[serde(default)]
    pub legs: Option<Vec<LegMessage>>,
    /// For a `basket`: close the filled legs if a leg fails.
    #[serde(default)]
    pub unwind: Option<bool>,
    /// For `cancel` and `modify`: the order.
    #[serde(default)]
    pub client_order_id: Option<String>,
    /// For `modify`: the new limit price.
    #[serde(default, deserialize_with = "de_opt_decimal")]
    pub price: Option<Decimal>,
    /// For `modify`: the new trigger price.
    #[serde(default, deserialize_with = "de_opt_decimal")]
    pub trigger: Option<Decimal>,
    /// For `watch`: the instrument watched (the order is its one leg in `legs`).
    #[serde(default)]
    pub instrument: Option<String>,
    /// For `watch`: the level it must cross.
    #[serde(default, deserialize_with = "de_opt_decimal")]
    pub level: Option<Decimal>,
    /// For `watch`: `up` or `down`.
    #[serde(default)]
    pub direction: Option<String>,
    /// For `unwatch`: the watcher (its `watch` command's id).
    #[serde(default)]
    pub watch_id: Option<String>,
    /// For `token`: the account's new access token (OpenAlgo: its API key).
    /// Never printed: `Debug` shows `Secret(***)`.
    #[serde(default)]
    pub access_token: Option<crate::domain::Secret>,
}

/// One leg of a `basket` command.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegMessage {
    /// Instrument.
    pub instrument: String,
    /// `buy` or `sell`.
    pub side: String,
    /// Units.
    #[serde(deserialize_with = "de_decimal")]
    pub qty: Decimal,
    /// How it is priced (absent: at the market), as a signal's: `{"type": "LIMIT", "price": "101.5"}`.
    #[serde(default)]
    pub order: Option<OrderTerms>,
    /// The managed exit's stop for the position it opens, as a signal's.
    #[serde(default, deserialize_with = "de_opt_decimal")]
    pub stop_loss: Option<Decimal>,
    /// The managed exit's target for the position it opens.
    #[serde(default, deserialize_with = "de_opt_decimal")]
    pub target: Option<Decimal>,
}

/// Which pipelines an engine command is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `"pipeline": "*"`.
    All,
    /// `"pipeline": "<id>"`.
    Pipeline(String),
    /// `"user": "<user>"`: the pipelines whose `user` is this.
    User(String),
}

/// What the engine does to the pipelines of a [`Target`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipelineAction {
    /// Start stopped pipelines.
    Start,
    /// Stop running ones.
    Stop,
    /// Pause: no events reach the strategy.
    Pause,
    /// Resume paused ones.
    Resume,
}

/// A command, checked once: what it asks, with every field it needs present
/// and well formed. Each role acts on its own kinds and leaves the others.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// The engine's `start`, `stop`, `pause`, `resume`.
    Pipelines {
        /// What to do.
        action: PipelineAction,
        /// To which pipelines.
        target: Target,
    },
    /// Rescan the plugin folder and reload the configuration.
    Reload,
    /// Stop the process cleanly.
    Shutdown,
    /// Close every position of an account.
    Flatten {
        /// The account.
        account: String,
    },
    /// `kill` (on) or `release` (off): no new orders while on.
    KillSwitch {
        /// On or off.
        on: bool,
    },
    /// A live account's new access token.
    Token {
        /// The account.
        account: String,
        /// The token (never printed).
        access_token: crate::domain::Secret,
    },
    /// Cancel a working order.
    CancelOrder {
        /// The order.
        client_order_id: String,
    },
    /// New prices for a working limit or stop order.
    ModifyOrder {
        /// The order.
        client_order_id: String,
        /// The new limit.
        price: Option<Decimal>,
        /// The new trigger.
        trigger: Option<Decimal>,
    },
    /// A level watcher (a trap): when `instrument` crosses `level` (`up` or down), place the
    /// one-leg order; its id is the command's.
    Watch {
        /// The account.
        account: String,
        /// The instrument watched.
        instrument: String,
        /// The level.
        level: Decimal,
        /// Crossing up (else down).
        up: bool,
        /// The order (at the market).
        leg: crate::domain::order::Leg,
    },
    /// Disarm a level watcher.
    Unwatch {
        /// Its id.
        watch_id: String,
    },
    /// A multi-leg order.
    Basket {
        /// The account.
        account: String,
        /// The legs, units positive.
        legs: Vec<crate::domain::order::Leg>,
        /// Close the filled legs if a leg fails.
        unwind: bool,
    },
}

impl Command {
    /// The commands the engine acknowledges (the orders side leaves them alone).
    pub const ENGINE: [&'static str; 6] =
        ["start", "stop", "pause", "resume", "reload", "shutdown"];
}

impl CommandMessage {
    /// What the command asks, checked: an error names what is missing or wrong.
    ///
    /// # Errors
    /// An unknown `cmd`, or one without the fields it needs.
    pub fn command(&self) -> Result<Command, String> {
        let need_account = |what: &str| {
            self.account
                .clone()
                .ok_or_else(|| format!("{what} needs \"account\""))
        };
        Ok(match self.cmd.as_str() {
            name @ ("start" | "stop" | "pause" | "resume") => {
                let action = match name {
                    "start" => PipelineAction::Start,
                    "stop" => PipelineAction::Stop,
                    "pause" => PipelineAction::Pause,
                    _ => PipelineAction::Resume,
                };
                let target = match (&self.pipeline, &self.user) {
                    (Some(p), _) if p == "*" => Target::All,
                    (Some(p), _) => Target::Pipeline(p.clone()),
                    (None, Some(u)) => Target::User(u.clone()),
                    (None, None) => {
                        return Err(format!(
                            "`{name}` needs \"pipeline\" (an id or \"*\") or \"user\""
                        ));
                    }
                };
                Command::Pipelines { action, target }
            }
            "reload" => Command::Reload,
            "shutdown" => Command::Shutdown,
            "flatten" => Command::Flatten {
                account: need_account("flatten")?,
            },
            "kill" => Command::KillSwitch { on: true },
            "release" => Command::KillSwitch { on: false },
            "token" => match (&self.account, &self.access_token) {
                (Some(account), Some(token)) => Command::Token {
                    account: account.clone(),
                    access_token: token.clone(),
                },
                _ => return Err("token needs \"account\" and \"access_token\"".into()),
            },
            "cancel" => Command::CancelOrder {
                client_order_id: self
                    .client_order_id
                    .clone()
                    .ok_or("cancel needs \"client_order_id\"")?,
            },
            "modify" => match (&self.client_order_id, self.price, self.trigger) {
                (Some(coid), price, trigger) if price.is_some() || trigger.is_some() => {
                    Command::ModifyOrder {
                        client_order_id: coid.clone(),
                        price,
                        trigger,
                    }
                }
                _ => {
                    return Err(
                        "modify needs \"client_order_id\" and a new \"price\" or \"trigger\""
                            .into(),
                    );
                }
            },
            "basket" => {
                let account = need_account("basket")?;
                Command::Basket {
                    account,
                    legs: self.checked_legs("basket")?,
                    unwind: self.unwind.unwrap_or(false),
                }
            }
            "watch" => {
                let account = need_account("watch")?;
                let (Some(instrument), Some(level)) = (
                    self.instrument.clone(),
                    self.level.filter(|l| *l > Decimal::ZERO),
                ) else {
                    return Err("watch needs \"instrument\" and a positive \"level\"".into());
                };
                let up = match self.direction.as_deref() {
                    Some("up") => true,
                    Some("down") => false,
                    _ => return Err("watch needs \"direction\": \"up\" or \"down\"".into()),
                };
                let mut legs = self.checked_legs("watch")?;
                if legs.len() != 1 {
                    return Err("watch places one order: \"legs\" holds one leg".into());
                }
                if legs[0].kind != OrderKind::Market
                    || legs[0].validity != Validity::Day
                    || legs[0].stop_loss.is_some()
                    || legs[0].target.is_some()
                {
                    return Err("watch places its order at the market, its exits the account's: its leg takes no \"order\", \"stop_loss\" or \"target\"".into());
                }
                Command::Watch {
                    account,
                    instrument,
                    level,
                    up,
                    leg: legs.remove(0),
                }
            }
            "unwatch" => Command::Unwatch {
                watch_id: self.watch_id.clone().ok_or("unwatch needs \"watch_id\"")?,
            },
            other => {
                return Err(format!(
                    "unknown command {other:?}; expected start, stop, pause, resume, flatten, kill, release, basket, watch, unwatch, cancel, modify, token, reload or shutdown"
                ));
            }
        })
    }

    /// The `legs` of a `basket` or `watch`, checked: a side of buy or sell, a positive
    /// quantity, order terms that parse.
    fn checked_legs(&self, what: &str) -> Result<Vec<crate::domain::order::Leg>, String> {
        let legs = self
            .legs
            .as_deref()
            .filter(|l| !l.is_empty())
            .ok_or(format!(
                "{what} needs \"account\" and a non-empty \"legs\" list"
            ))?;
        legs.iter()
            .map(|l| {
                let Some(side) = crate::domain::OrderSide::parse(&l.side).filter(|_| l.qty > Decimal::ZERO) else {
                    return Err(format!("leg {}: side must be buy or sell and qty positive", l.instrument));
                };
                let (kind, validity) = l.order.as_ref().map(OrderTerms::parse).transpose().map_err(|e| format!("leg {}: {e}", l.instrument))?.unwrap_or_default();
                for (field, v) in [("stop_loss", l.stop_loss), ("target", l.target)] {
                    if v.is_some_and(|p| p <= Decimal::ZERO) {
                        return Err(format!("leg {}: {field} {}: not a price above zero", l.instrument, v.unwrap_or_default()));
                    }
                }
                // A buy's stop is below its target, a sell's above.
                if let (Some(stop), Some(target)) = (l.stop_loss, l.target)
                    && ((side == crate::domain::OrderSide::Buy && stop >= target) || (side == crate::domain::OrderSide::Sell && stop <= target))
                {
                    return Err(format!("leg {}: a {} with stop_loss {stop} and target {target}: the stop must be on the losing side", l.instrument, side.as_str()));
                }
                Ok(crate::domain::order::Leg { instrument: l.instrument.clone(), side, qty: l.qty, kind, validity, stop_loss: l.stop_loss, target: l.target })
            })
            .collect()
    }

    /// Parse and check a command.
    ///
    /// # Errors
    /// What is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let m: Self = serde_json::from_str(text).map_err(|e| e.to_string())?;
        check_header(m.v, &m.kind, "command")?;
        if m.id.trim().is_empty() {
            return Err("a command needs a non-empty id".into());
        }
        if m.id.chars().count() > MAX_ID_CHARS || m.id.chars().any(char::is_control) {
            return Err(format!(
                "command id {:?}: at most {MAX_ID_CHARS} characters and no control characters",
                printable(&m.id, 40)
            ));
        }
        if let Some(ts) = m.ts {
            check_ts("ts", ts)?;
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_704_080_700_000; // 2024-01-01 09:15 IST

    #[test]
    fn a_command_is_checked_once_into_what_it_asks() {
        let cmd = |body: &str| {
            CommandMessage::parse(&format!(r#"{{"v":1,"type":"command","id":"c1",{body}}}"#))
                .unwrap()
                .command()
        };
        assert_eq!(
            cmd(r#""cmd":"pause","pipeline":"*""#),
            Ok(Command::Pipelines {
                action: PipelineAction::Pause,
                target: Target::All
            })
        );
        assert_eq!(
            cmd(r#""cmd":"resume","user":"asha""#),
            Ok(Command::Pipelines {
                action: PipelineAction::Resume,
                target: Target::User("asha".into())
            })
        );
        assert_eq!(
            cmd(r#""cmd":"release""#),
            Ok(Command::KillSwitch { on: false })
        );
        assert!(
            cmd(r#""cmd":"stop""#)
                .unwrap_err()
                .contains("needs \"pipeline\"")
        );
        assert!(
            cmd(r#""cmd":"token","account":"a""#)
                .unwrap_err()
                .contains("access_token")
        );
        assert!(cmd(r#""cmd":"flatten""#).unwrap_err().contains("account"));
        assert!(
            cmd(r#""cmd":"dance""#)
                .unwrap_err()
                .contains("unknown command \"dance\"")
        );
        assert!(
            cmd(r#""cmd":"basket","account":"a","legs":[]"#)
                .unwrap_err()
                .contains("non-empty")
        );
        assert!(
            cmd(
                r#""cmd":"basket","account":"a","legs":[{"instrument":"X","side":"hold","qty":1}]"#
            )
            .unwrap_err()
            .contains("leg X")
        );
        let basket = cmd(r#""cmd":"basket","account":"a","legs":[{"instrument":"X","side":"buy","qty":"75"}],"unwind":true"#).unwrap();
        assert_eq!(
            basket,
            Command::Basket {
                account: "a".into(),
                legs: vec![crate::domain::order::Leg::market(
                    "X",
                    crate::domain::OrderSide::Buy,
                    Decimal::from(75)
                )],
                unwind: true
            }
        );
        let limit = cmd(r#""cmd":"basket","account":"a","legs":[{"instrument":"X","side":"sell","qty":"5","order":{"type":"LIMIT","price":"101.5"}}]"#).unwrap();
        let Command::Basket { legs, .. } = limit else {
            panic!("a basket")
        };
        assert_eq!(
            (legs[0].kind, legs[0].validity),
            (
                OrderKind::Limit {
                    price: Decimal::new(1015, 1)
                },
                Validity::Day
            )
        );
        let stop = cmd(r#""cmd":"basket","account":"a","legs":[{"instrument":"X","side":"buy","qty":"5","order":{"type":"SL-M","trigger":"99","validity":"IOC"}}]"#).unwrap();
        let Command::Basket { legs, .. } = stop else {
            panic!("a basket")
        };
        assert_eq!(
            (legs[0].kind, legs[0].validity),
            (
                OrderKind::StopMarket {
                    trigger: Decimal::from(99)
                },
                Validity::Ioc
            )
        );
        assert!(cmd(r#""cmd":"basket","account":"a","legs":[{"instrument":"X","side":"buy","qty":"5","order":{"type":"LIMIT"}}]"#).unwrap_err().contains("leg X: order type LIMIT needs a price"));
        assert!(cmd(r#""cmd":"basket","account":"a","legs":[{"instrument":"X","side":"buy","qty":"5","order":{"type":"LIMIT","price":"0"}}]"#).unwrap_err().contains("above zero"));
        let bracket = cmd(r#""cmd":"basket","account":"a","legs":[{"instrument":"X","side":"buy","qty":"5","stop_loss":"95","target":"110"}]"#).unwrap();
        let Command::Basket { legs, .. } = bracket else {
            panic!("a basket")
        };
        assert_eq!(
            (legs[0].stop_loss, legs[0].target),
            (Some(Decimal::from(95)), Some(Decimal::from(110)))
        );
        assert!(cmd(r#""cmd":"basket","account":"a","legs":[{"instrument":"X","side":"buy","qty":"5","stop_loss":"111","target":"110"}]"#).unwrap_err().contains("losing side"));
        assert!(cmd(r#""cmd":"basket","account":"a","legs":[{"instrument":"X","side":"sell","qty":"5","stop_loss":"-1"}]"#).unwrap_err().contains("stop_loss -1"));
        assert_eq!(
            cmd(r#""cmd":"modify","client_order_id":"o1","price":"101.5""#),
            Ok(Command::ModifyOrder {
                client_order_id: "o1".into(),
                price: Some(Decimal::new(1015, 1)),
                trigger: None
            })
        );
        assert!(
            cmd(r#""cmd":"modify","client_order_id":"o1""#)
                .unwrap_err()
                .contains("\"price\" or \"trigger\"")
        );
        assert_eq!(
            cmd(r#""cmd":"cancel","client_order_id":"o1""#),
            Ok(Command::CancelOrder {
                client_order_id: "o1".into()
            })
        );
        let watch = cmd(r#""cmd":"watch","account":"a","instrument":"NIFTY","level":"25950","direction":"up","legs":[{"instrument":"NIFTY24DEC25950CE","side":"buy","qty":"75"}]"#).unwrap();
        assert_eq!(
            watch,
            Command::Watch {
                account: "a".into(),
                instrument: "NIFTY".into(),
                level: Decimal::from(25_950),
                up: true,
                leg: crate::domain::order::Leg::market(
                    "NIFTY24DEC25950CE",
                    crate::domain::OrderSide::Buy,
                    Decimal::from(75)
                )
            }
        );
        assert!(cmd(r#""cmd":"watch","account":"a","instrument":"NIFTY","level":"25950","direction":"up","legs":[{"instrument":"X","side":"buy","qty":"1","order":{"type":"LIMIT","price":"5"}}]"#).unwrap_err().contains("at the market"));
        assert!(cmd(r#""cmd":"watch","account":"a","instrument":"NIFTY","level":"25950","direction":"sideways","legs":[{"instrument":"X","side":"buy","qty":"1"}]"#).unwrap_err().contains("direction"));
        assert!(cmd(r#""cmd":"watch","account":"a","instrument":"NIFTY","level":"0","direction":"up","legs":[{"instrument":"X","side":"buy","qty":"1"}]"#).unwrap_err().contains("positive \"level\""));
        assert_eq!(
            cmd(r#""cmd":"unwatch","watch_id":"w1""#),
            Ok(Command::Unwatch {
                watch_id: "w1".into()
            })
        );
        assert!(
            cmd(r#""cmd":"cancel""#)
                .unwrap_err()
                .contains("client_order_id")
        );
    }

    #[test]
    fn a_signals_order_terms_travel_with_it_and_bad_ones_are_refused_by_field() {
        let with = |order: &str| {
            format!(
                r#"{{"v":1,"type":"signal","id":"p/x/1","ts":{T},"pipeline":"p","plugin":"x","plugin_version":"1","instrument":"NIFTY","side":"buy","reason":"r","order":{order}}}"#
            )
        };
        let m = SignalMessage::parse(&with(
            r#"{"type":"SL","trigger":"101","price":"101.5","validity":"IOC"}"#,
        ))
        .unwrap();
        assert_eq!(
            m.order_terms(),
            (
                OrderKind::StopLimit {
                    trigger: Decimal::from(101),
                    price: Decimal::new(1015, 1)
                },
                Validity::Ioc
            )
        );
        assert_eq!(
            SignalMessage::parse(&m.to_json()),
            Ok(m.clone()),
            "round trip"
        );
        assert_eq!(
            OrderTerms::of(OrderKind::Market, Validity::Day),
            None,
            "a market day order says nothing"
        );
        for (bad, want) in [
            (r#"{"type":"LIMIT"}"#, "LIMIT needs a price"),
            (
                r#"{"type":"SL","trigger":"1"}"#,
                "SL needs a trigger and a price",
            ),
            (r#"{"type":"SL-M","price":"1"}"#, "SL-M needs a trigger"),
            (
                r#"{"type":"ICEBERG","price":"1"}"#,
                "order type \"ICEBERG\"",
            ),
            (r#"{"type":"LIMIT","price":"0"}"#, "not a price above zero"),
            (
                r#"{"type":"LIMIT","price":"5","validity":"GTC"}"#,
                "validity \"GTC\"",
            ),
            (
                r#"{"type":"SL-M","trigger":"5","validity":"GTT"}"#,
                "validity \"GTT\"",
            ),
            (
                r#"{"type":"LIMIT","price":"5","limit":"6"}"#,
                "unknown field",
            ),
        ] {
            let err = SignalMessage::parse(&with(bad)).unwrap_err();
            assert!(err.contains(want), "{bad}: {err}");
        }
    }

    #[test]
    fn signals_round_trip_and_refuse_bad_input() {
        let m = SignalMessage {
            v: 1,
            kind: "signal".into(),
            id: SignalMessage::make_id("p", "ma", "0.1.0", T, 0),
            ts: T,
            pipeline: "p".into(),
            plugin: "ma".into(),
            plugin_version: "0.1.0".into(),
            instrument: "NIFTY".into(),
            side: "buy".into(),
            reason: "r".into(),
            price: Some(Decimal::new(2_171_275, 2)),
            stop_loss: None,
            target: None,
            strength: None,
            plugin_sha256: None,
            order: None,
        };
        let json = m.to_json();
        assert!(
            json.contains("\"price\":\"21712.75\""),
            "prices travel as strings: {json}"
        );
        assert_eq!(SignalMessage::parse(&json), Ok(m));
        for (bad, want) in [
            ("{", "EOF"),
            (
                r#"{"v":2,"type":"signal","id":"x","ts":1,"pipeline":"p","plugin":"m","plugin_version":"1","instrument":"N","side":"buy","reason":""}"#,
                "schema version 2",
            ),
            (
                r#"{"v":1,"type":"signal","id":"x","ts":1704080700000,"pipeline":"p","plugin":"m","plugin_version":"1","instrument":"N","side":"hold","reason":""}"#,
                "side \"hold\"",
            ),
            (
                r#"{"v":1,"type":"signal","id":"x","ts":1704080700000,"pipeline":"p","plugin":"m","plugin_version":"1","instrument":"N","side":"buy","reason":"","price":"abc"}"#,
                "expected a decimal",
            ),
            (
                r#"{"v":1,"type":"signal","id":"x","ts":9223372036854775807,"pipeline":"p","plugin":"m","plugin_version":"1","instrument":"N","side":"buy","reason":""}"#,
                "not a plausible exchange time",
            ),
        ] {
            let err = SignalMessage::parse(bad).unwrap_err();
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn market_messages() {
        let tick = r#"{"v":1,"type":"tick","id":"t1","ts":1704080700000,"symbol":"NIFTY","last":"21712.5","volume":10}"#;
        assert!(
            matches!(MarketMessage::parse(tick), Ok(MarketMessage::Tick { last, .. }) if last == Decimal::new(217_125, 1))
        );
        let candle = r#"{"v":1,"type":"candle","id":"c1","ts":1704080700000,"symbol":"NIFTY","open":1,"high":2,"low":0.5,"close":1.5}"#;
        assert!(matches!(
            MarketMessage::parse(candle),
            Ok(MarketMessage::Candle { .. })
        ));
        let bad = r#"{"v":1,"type":"candle","id":"c1","ts":1704080700000,"symbol":"NIFTY","open":1,"high":0.9,"low":0.5,"close":1.5}"#;
        assert!(MarketMessage::parse(bad).is_err());
        for ts in [
            "1000",
            "9223372036854775807",
            "-9223372036854775808",
            "4102444800000",
        ] {
            let tick = format!(
                r#"{{"v":1,"type":"tick","id":"t1","ts":{ts},"symbol":"NIFTY","last":"21712.5"}}"#
            );
            assert!(
                MarketMessage::parse(&tick)
                    .unwrap_err()
                    .contains("plausible"),
                "ts {ts}"
            );
        }
        assert!(MarketMessage::parse(r#"{"v":1,"type":"quote"}"#).is_err());
    }

    #[test]
    fn commands() {
        let c = CommandMessage::parse(
            r#"{"v":1,"type":"command","id":"c1","cmd":"pause","pipeline":"nifty-ma"}"#,
        )
        .unwrap();
        assert_eq!(
            (c.cmd.as_str(), c.pipeline.as_deref()),
            ("pause", Some("nifty-ma"))
        );
        assert!(
            CommandMessage::parse(
                r#"{"v":1,"type":"command","id":"c1","cmd":"pause","pipelin":"x"}"#
            )
            .unwrap_err()
            .contains("unknown field")
        );
        assert!(
            CommandMessage::parse(r#"{"v":1,"type":"command","id":"","cmd":"pause"}"#).is_err()
        );
        let long = format!(
            r#"{{"v":1,"type":"command","id":"{}","cmd":"pause"}}"#,
            "x".repeat(10_000)
        );
        let err = CommandMessage::parse(&long).unwrap_err();
        assert!(
            err.len() < 300,
            "the refusal does not echo the whole id: {} chars",
            err.len()
        );
        let ansi = CommandMessage::parse(
            r#"{"v":1,"type":"command","id":"a\u001b[31mred","cmd":"pause"}"#,
        )
        .unwrap_err();
        assert!(
            !ansi.contains('\u{1b}') && ansi.contains("\\u{1b}"),
            "{ansi}"
        );
    }

    #[test]
    fn printable_escapes_and_caps() {
        for (text, max, want) in [
            ("plain", 10, "plain"),
            ("a\u{1b}[2Jb", 20, "a\\u{1b}[2Jb"),
            ("line\nbreak", 20, "line\\nbreak"),
            ("abcdef", 3, "abc…(3 more characters)"),
            ("", 3, ""),
        ] {
            assert_eq!(printable(text, max), want, "{text:?}");
        }
    }

    #[test]
    fn envelopes_carry_the_header() {
        let json: serde_json::Value = serde_json::from_str(&envelope(
            "event",
            "e1",
            7,
            serde_json::json!({"event": "x"}),
        ))
        .unwrap();
        assert_eq!(
            (
                json["v"].as_u64(),
                json["type"].as_str(),
                json["id"].as_str(),
                json["ts"].as_i64()
            ),
            (Some(1), Some("event"), Some("e1"), Some(7))
        );
    }
}
