//! `pipelines.toml`: what runs, for whom, on what data.
//!
//! Every mistake is refused with the file, line, column and the field's
//! path (`pipelines.toml:14:8: pipelines[1].accounts[0]: unknown account
//! "paper-9"`), and nothing starts on a configuration that does not validate.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rust_decimal::Decimal;
use serde::Deserialize;
use toml::Spanned;

pub use crate::domain::{PositionMode, Product};

/// A configuration that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}:{column}: {field}: {message}{}", path.display(), snippet.as_deref().map(|s| format!("\n{s}")).unwrap_or_default())]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Dotted path of the field, e.g. `pipelines[1].params.fast`.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// The offending line with a caret under the column.
    pub snippet: Option<String>,
}

/// `[host]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostSection {
    /// Folder of `.wasm` plugins.
    pub plugin_dir: PathBuf,
    /// The orders journal (SQLite).
    pub journal: PathBuf,
    /// Seconds between heartbeats on the events channel.
    pub heartbeat_secs: u64,
    /// Where broker sources record what they receive, one folder a day
    /// (`<record_dir>/<YYYY-MM-DD>/<pipeline>.ticks.csv.gz`); absent: not recorded.
    pub record_dir: Option<PathBuf>,
}

impl Default for HostSection {
    fn default() -> Self {
        Self {
            plugin_dir: "plugins".into(),
            journal: "out/journal.sqlite".into(),
            heartbeat_secs: 5,
            record_dir: None,
        }
    }
}

/// `[bus]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusSection {
    /// Redis URL; absent means the embedded in-process bus (`REDIS_URL` overrides).
    pub url: Option<String>,
    /// Prefix of every channel and key.
    pub prefix: String,
    /// A signal delivered to a consumer that has not acknowledged it for this
    /// long is taken over by another (a crashed orders process).
    pub claim_idle_ms: u64,
    /// About how many price messages the durable price stream keeps (an orders
    /// process down for longer misses the oldest, and is told so).
    pub prices_kept: usize,
}

impl Default for BusSection {
    fn default() -> Self {
        Self {
            url: None,
            prefix: "trading".into(),
            claim_idle_ms: 5_000,
            prices_kept: 500_000,
        }
    }
}

/// How many units an order for a signal has.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Sizing {
    /// A fixed quantity.
    Fixed {
        /// Units per order.
        qty: u64,
    },
    /// F&O lots, of the contract traded: its lot per `[market] contracts` (by
    /// underlying and expiry), else `lot_size`.
    Lots {
        /// Lots per order.
        lots: u64,
        /// Units per lot for contracts the contract rules do not list.
        #[serde(default)]
        lot_size: Option<u64>,
    },
    /// A percentage of capital at the signal's price.
    Percent {
        /// Percent of capital per position.
        #[serde(deserialize_with = "decimal")]
        percent: Decimal,
    },
    /// Risk a percentage of capital between the price and the signal's stop-loss.
    Risk {
        /// Percent of capital at risk per position.
        #[serde(deserialize_with = "decimal")]
        percent: Decimal,
    },
}

/// `[[accounts]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    /// Unique id.
    pub id: Spanned<String>,
    /// `paper`, `openalgo`, `kite` or `upstox`. Live brokers are used only with
    /// `TRADING_MODE=live`; in paper mode every account trades on paper.
    #[serde(default = "paper")]
    pub broker: Spanned<String>,
    /// The broker's API address (defaults: Kite `https://api.kite.trade`, Upstox
    /// `https://api.upstox.com`, OpenAlgo `http://127.0.0.1:5000`).
    #[serde(default)]
    pub base_url: Option<String>,
    /// The broker's market-data WebSocket (defaults: Kite `wss://ws.kite.trade`,
    /// OpenAlgo `ws://127.0.0.1:8765`; Upstox hands out a one-time address from
    /// its authorize call on `base_url`, so this overrides that address).
    #[serde(default)]
    pub ws_url: Option<String>,
    /// How live order updates are learned: `push` (the broker's order stream — Kite's
    /// postbacks on its ticker socket, Upstox's portfolio stream, OpenAlgo's `order_update`
    /// messages — with polling as the fallback) or `poll` only.
    #[serde(default)]
    pub order_updates: OrderUpdates,
    /// Name of the credentials (environment `TRADEHOST_<NAME>_API_KEY`, …, or
    /// `[accounts.<name>]` in the secrets file); default: the account id.
    #[serde(default)]
    pub credentials: Option<String>,
    /// Market protection of live market orders, percent; -1 = the broker's automatic protection.
    #[serde(default = "protection", deserialize_with = "decimal")]
    pub market_protection_pct: Decimal,
    /// Telegram alerts for this account.
    #[serde(default)]
    pub notify: Option<AccountNotify>,
    /// Starting capital, rupees.
    #[serde(deserialize_with = "decimal")]
    pub capital: Decimal,
    /// Which positions signals may open.
    #[serde(default = "long")]
    pub mode: PositionMode,
    /// Order size.
    #[serde(default = "one_unit")]
    pub sizing: Sizing,
    /// Paper fills: slippage against the trader, in basis points.
    #[serde(default, deserialize_with = "decimal")]
    pub slippage_bps: Decimal,
    /// `mis` (intraday: squared off at `square_off`) or `cnc` (delivery).
    #[serde(default = "mis")]
    pub product: Product,
    /// Intraday square-off time (IST) of `mis` positions: `"15:15"` for every
    /// segment, or `{ equity = "15:15", derivative = "15:20" }`. Default: the
    /// broker's (see [`Account::square_off_minute`]).
    #[serde(default)]
    pub square_off: Option<SquareOffTimes>,
    /// The algo id the regulator's framework assigns this account's strategies:
    /// sent with every order where the broker's API takes one (Kite's `algo_id`),
    /// and written in the audit export.
    #[serde(default)]
    pub algo_id: Option<String>,
    /// Before a live F&O entry is sent, ask the broker's margin calculator what it
    /// needs and refuse it (rule `margin`, with the shortfall) when the account's
    /// free margin is short.
    #[serde(default = "yes")]
    pub margin_check: bool,
    /// Kite only: an F&O order above its freeze quantity goes to Kite whole with
    /// `autoslice=true` and Kite slices it, instead of the host sending its own slices.
    #[serde(default)]
    pub autoslice: bool,
    /// Risk limits.
    #[serde(default)]
    pub risk: RiskLimits,
    /// Exits the host manages for every position.
    #[serde(default)]
    pub exits: ExitRules,
}

/// An account's square-off time: one for all segments, or one per segment.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum SquareOffTimes {
    /// `"15:15"`.
    Same(String),
    /// `{ equity = "15:15", derivative = "15:20" }`.
    BySegment {
        /// Cash equity.
        equity: String,
        /// Futures and options.
        derivative: String,
    },
}

impl Account {
    /// The broker it names (`None` for a name no broker has: refused at load).
    #[must_use]
    pub fn kind(&self) -> Option<crate::domain::BrokerKind> {
        crate::domain::BrokerKind::parse(self.broker.get_ref())
    }

    /// The square-off time (IST minute of a regular day) of `segment`'s intraday
    /// positions: the configured one, or the broker's default — five minutes before
    /// the broker's own auto square-off where it is published (Zerodha squares off
    /// equity at 15:20 and F&O at 15:25, so Kite accounts 15:15 and 15:20), 15:15
    /// otherwise. `None` when the configured time is not `HH:MM` (refused at load).
    #[must_use]
    pub fn square_off_minute(&self, segment: crate::domain::Segment) -> Option<u32> {
        use crate::domain::Segment;
        let text = match (&self.square_off, segment) {
            (Some(SquareOffTimes::Same(t)), _) => t.as_str(),
            (Some(SquareOffTimes::BySegment { equity, .. }), Segment::Equity) => equity.as_str(),
            (Some(SquareOffTimes::BySegment { derivative, .. }), Segment::Derivative) => {
                derivative.as_str()
            }
            (None, Segment::Derivative)
                if self
                    .kind()
                    .is_some_and(|k| k.capabilities().later_fno_square_off) =>
            {
                "15:20"
            }
            (None, _) => "15:15",
        };
        crate::domain::time::parse_hhmm(text)
    }

    /// The lot of `instrument` for this account: the contract's per `contracts` (by
    /// underlying and expiry), else the account's `lot_size` for lots sizing.
    #[must_use]
    pub fn lot_of(
        &self,
        rules: &crate::domain::contracts::ContractRules,
        instrument: &str,
        at_ms: i64,
    ) -> Option<u64> {
        rules.lot_size_at(instrument, at_ms).or(match self.sizing {
            Sizing::Lots { lot_size, .. } => lot_size,
            _ => None,
        })
    }

    /// The earliest square-off time of its segments (a clock check: may any be due?).
    #[must_use]
    pub fn earliest_square_off(&self) -> Option<u32> {
        use crate::domain::Segment;
        self.square_off_minute(Segment::Equity)
            .into_iter()
            .chain(self.square_off_minute(Segment::Derivative))
            .min()
    }
}

/// `[accounts.notify]`: where this account's alerts go.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountNotify {
    /// Telegram chat id.
    pub telegram_chat: String,
    /// Which alerts: `fill`, `stop`, `breaker`, `plugin_failed`, `token_expired`, `rejected`, `position_mismatch` (default: all).
    #[serde(default = "all_alerts")]
    pub events: Vec<String>,
}

/// How an account's live order updates are learned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderUpdates {
    /// Pushed by the broker where it can (polling stays as the fallback).
    #[default]
    Push,
    /// Polled every `[live] poll_ms` only.
    Poll,
}

/// Every alert kind.
pub const ALERTS: [&str; 9] = [
    "fill",
    "stop",
    "breaker",
    "plugin_failed",
    "token_expired",
    "rejected",
    "position_mismatch",
    "position_carried",
    "journal_full",
];

fn all_alerts() -> Vec<String> {
    ALERTS.iter().map(|s| (*s).to_owned()).collect()
}

fn protection() -> Decimal {
    Decimal::from(2)
}

/// `[market]`: what a price must satisfy before it is believed (see
/// `market::guard`). Each feed adds its own `max_skew_secs`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MarketSection {
    /// Prices of every instrument whose tick is not known otherwise must be multiples of
    /// this (an explicit override: absent, only an instrument's own tick is checked, from
    /// `ticks` or its broker's instrument master; never a guessed grid); 0 turns it off.
    #[serde(default, deserialize_with = "crate::domain::money::de_opt_decimal")]
    pub tick: Option<Decimal>,
    /// The tick of named instruments (`{ YESBANK = "0.01" }`), over what a master says.
    #[serde(deserialize_with = "ticks")]
    pub ticks: std::collections::BTreeMap<String, Decimal>,
    /// Largest move from an instrument's last price, percent (options exempt); 0 turns it off.
    #[serde(deserialize_with = "decimal")]
    pub band_pct: Decimal,
    /// No price above this is believed.
    #[serde(deserialize_with = "decimal")]
    pub max_price: Decimal,
    /// A move beyond `band_pct` is taken as a gap (the band re-anchors on it) once this
    /// many ticks in a row, on the instrument's own feed, hold the new level.
    pub gap_ticks: u32,
    /// ... or once the new level has held this many seconds (of exchange time).
    pub gap_secs: u32,
    /// After this many seconds with no accepted price (an outage, the night), the next
    /// price sets the band's level afresh: only the sanity bound and circuits apply.
    pub stale_secs: u32,
    /// No price beyond this multiple of the exchange's reference (its previous close, or
    /// the last accepted price) is ever believed, however long it persists (options
    /// exempt); 0 turns it off.
    #[serde(deserialize_with = "decimal")]
    pub sanity_multiple: Decimal,
    /// Trading calendars to add to the bundled ones (NSE 2025 and 2026), one file a
    /// year, relative to this file: a year listed here replaces the bundled year.
    pub calendars: Vec<String>,
    /// A day in a year no calendar file covers: `weekdays` (weekdays trade as regular
    /// sessions) or `refuse` (no entries); either way a `calendar_unknown_year` event says so.
    pub unknown_year: crate::domain::calendar::UnknownYear,
    /// Contract rules (freeze quantities, lot sizes by expiry) replacing the bundled
    /// `contracts/nse.toml`, relative to this file.
    pub contracts: Option<String>,
    /// The contract rules in force: the bundled ones, or `contracts`.
    #[serde(skip, default = "nse_contracts")]
    pub contract_rules: std::sync::Arc<crate::domain::contracts::ContractRules>,
    /// The trading calendar: the bundled years with `calendars` read over them.
    #[serde(skip, default = "nse_calendar")]
    pub calendar: std::sync::Arc<crate::domain::calendar::Calendar>,
}

fn nse_contracts() -> std::sync::Arc<crate::domain::contracts::ContractRules> {
    static NSE: std::sync::OnceLock<std::sync::Arc<crate::domain::contracts::ContractRules>> =
        std::sync::OnceLock::new();
    NSE.get_or_init(|| std::sync::Arc::new(crate::domain::contracts::ContractRules::nse()))
        .clone()
}

fn nse_calendar() -> std::sync::Arc<crate::domain::calendar::Calendar> {
    static NSE: std::sync::OnceLock<std::sync::Arc<crate::domain::calendar::Calendar>> =
        std::sync::OnceLock::new();
    NSE.get_or_init(|| std::sync::Arc::new(crate::domain::calendar::Calendar::nse()))
        .clone()
}

impl Default for MarketSection {
    fn default() -> Self {
        Self {
            tick: None,
            ticks: std::collections::BTreeMap::new(),
            band_pct: Decimal::from(20),
            max_price: Decimal::from(10_000_000),
            gap_ticks: 5,
            gap_secs: 30,
            stale_secs: 900,
            sanity_multiple: Decimal::from(3),
            calendars: Vec::new(),
            unknown_year: crate::domain::calendar::UnknownYear::default(),
            contracts: None,
            contract_rules: nse_contracts(),
            calendar: nse_calendar(),
        }
    }
}

/// `[live]`: how live brokers are reached.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiveSection {
    /// Time limit of one broker call, milliseconds.
    pub timeout_ms: u64,
    /// How often working orders are polled, milliseconds.
    pub poll_ms: u64,
    /// First back-off after a timeout, 429 or 5xx, milliseconds (doubles each time).
    pub backoff_ms: u64,
    /// Placements of one order before it is given up.
    pub max_attempts: u32,
    /// Instrument master per broker: a path (relative to this file) or an `https://` URL.
    pub instruments: std::collections::BTreeMap<String, String>,
    /// When (IST) the instrument masters are reloaded each day.
    pub refresh_at: String,
    /// An entry order still unfilled this many seconds after it was sent is cancelled
    /// (its protection limit was not reached); 0: never. Exits and square-offs keep working.
    pub cancel_after_secs: u64,
    /// After an unanswered placement, the order book is read this many times (a
    /// back-off apart) before the order is taken as not placed: books lag.
    pub absent_reads: u32,
}

impl Default for LiveSection {
    fn default() -> Self {
        Self {
            timeout_ms: 5_000,
            poll_ms: 1_000,
            backoff_ms: 250,
            max_attempts: 6,
            instruments: std::collections::BTreeMap::new(),
            refresh_at: "08:15".into(),
            cancel_after_secs: 60,
            absent_reads: 3,
        }
    }
}

/// `[telegram]`: the Telegram Bot API notifier. The bot token is a secret
/// (`TRADEHOST_TELEGRAM_BOT_TOKEN` or `[telegram] bot_token` in the secrets file).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelegramSection {
    /// The Bot API address.
    pub base_url: String,
    /// Chat for alerts of every account (accounts may add their own).
    pub chat_id: Option<String>,
    /// Which alerts go to `chat_id`.
    pub events: Vec<String>,
    /// Least time between two messages to one chat, milliseconds (Telegram allows about one a second).
    pub min_interval_ms: u64,
    /// Alerts kept waiting per chat; beyond it the oldest are dropped and counted.
    pub queue: usize,
}

impl Default for TelegramSection {
    fn default() -> Self {
        Self {
            base_url: "https://api.telegram.org".into(),
            chat_id: None,
            events: all_alerts(),
            min_interval_ms: 1_000,
            queue: 100,
        }
    }
}

fn yes() -> bool {
    true
}

fn mis() -> Product {
    Product::Mis
}

/// `[accounts.risk]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RiskLimits {
    /// Most units in one order.
    pub max_order_qty: u64,
    /// Most rupees in one order (qty × price); 0 = the account's capital.
    #[serde(deserialize_with = "decimal")]
    pub max_order_notional: Decimal,
    /// Most units held in one instrument, long or short.
    pub max_position_qty: u64,
    /// Most instruments with an open position at once.
    pub max_open_positions: usize,
    /// Daily loss (realised + unrealised) at which the account may only reduce
    /// positions; 0 = 2% of capital.
    #[serde(deserialize_with = "decimal")]
    pub max_daily_loss: Decimal,
    /// Orders per second of exchange time; 10 is the exchange's threshold for retail algos.
    pub max_orders_per_sec: usize,
    /// When new positions may be opened (IST, `HH:MM-HH:MM`).
    pub entry_window: String,
    /// After a signal opened a position, no new entry in the same instrument
    /// from the same pipeline for this long.
    pub cooldown_secs: u64,
    /// On a contract's expiry day, no new position in it from this time (IST, `HH:MM`);
    /// empty: entries until the entry window closes.
    pub expiry_no_entry_after: String,
}

impl Default for RiskLimits {
    fn default() -> Self {
        Self {
            max_order_qty: 10_000,
            max_order_notional: Decimal::ZERO,
            max_position_qty: 20_000,
            max_open_positions: 10,
            max_daily_loss: Decimal::ZERO,
            max_orders_per_sec: 10,
            entry_window: "09:15-15:15".into(),
            cooldown_secs: 300,
            expiry_no_entry_after: String::new(),
        }
    }
}

impl RiskLimits {
    /// `(open, close)` of the entry window in IST minutes; `None` when malformed.
    #[must_use]
    pub fn window(&self) -> Option<(u32, u32)> {
        let (a, b) = self.entry_window.split_once('-')?;
        let (a, b) = (
            crate::domain::time::parse_hhmm(a)?,
            crate::domain::time::parse_hhmm(b)?,
        );
        (a < b).then_some((a, b))
    }
}

/// `[accounts.exits]`: stop-loss, target and trailing stop in percent of the
/// entry price, for positions whose signal did not set them. 0 = none.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExitRules {
    /// Stop-loss, percent below (long) or above (short) the entry.
    #[serde(deserialize_with = "decimal")]
    pub stop_loss_pct: Decimal,
    /// Target, percent above (long) or below (short) the entry.
    #[serde(deserialize_with = "decimal")]
    pub target_pct: Decimal,
    /// Trailing stop, percent behind the best price since entry.
    #[serde(deserialize_with = "decimal")]
    pub trailing_pct: Decimal,
    /// Short option positions are bought back on their contract's expiry day from this
    /// time (IST, `HH:MM`), whatever the product (an expiring short can be assigned
    /// or settled physically); empty: not.
    pub expiry_square_off: String,
    /// A live position with a stop keeps a protective order at the broker at that
    /// stop, tightened as the stop trails, so that it stands if the host dies: SL-M
    /// where the exchange takes it, SL (stop-limit) on options, where it does not.
    pub broker_stop: bool,
    /// An SL protective stop's limit lies this percent of the trigger beyond it (below
    /// a sell's trigger, above a buy's), on the tick, so that it fills in a fast market.
    #[serde(deserialize_with = "decimal")]
    pub stop_limit_buffer_pct: Decimal,
}

impl Default for ExitRules {
    fn default() -> Self {
        Self {
            stop_loss_pct: Decimal::ZERO,
            target_pct: Decimal::ZERO,
            trailing_pct: Decimal::ZERO,
            expiry_square_off: String::new(),
            broker_stop: true,
            stop_limit_buffer_pct: Decimal::from(5),
        }
    }
}

/// Where a pipeline's market data comes from.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Source {
    /// Replay CSV files (candles or an option chain).
    Replay {
        /// Files, replayed in order.
        files: Vec<PathBuf>,
        /// Speed factor against real time; 0 = as fast as possible.
        #[serde(default)]
        speed: f64,
        /// Candles of the underlying, for option-chain files.
        #[serde(default)]
        underlying: Option<PathBuf>,
    },
    /// The seeded synthetic market.
    Synthetic {
        /// Seed.
        #[serde(default = "seed")]
        seed: u64,
        /// Trading days.
        #[serde(default = "days")]
        days: u32,
        /// Speed factor against real time (60 = a one-minute bar a second); 0 = as fast as possible.
        #[serde(default)]
        speed: f64,
        /// First price.
        #[serde(default = "start_price")]
        start_price: f64,
        /// Also generate an option chain every bar, for option-chain strategies.
        #[serde(default)]
        option_chain: bool,
    },
    /// Ticks or candles published as JSON on `<prefix>:market:<symbol>` by an external feed.
    Redis {
        /// Largest distance of a message's time from the host's clock, seconds;
        /// 0 turns the check off (replaying a recorded session).
        #[serde(default = "max_skew_secs")]
        max_skew_secs: u64,
    },
    /// Ticks straight from an account's broker over its WebSocket, made into
    /// candles of the pipeline's timeframe by exchange time.
    Broker {
        /// The account whose broker, credentials and `ws_url` are used.
        account: String,
        /// Largest distance of a tick's exchange time from the host's clock, seconds; 0 = unchecked.
        #[serde(default = "max_skew_secs")]
        max_skew_secs: u64,
        /// A feed silent this long in market hours raises `feed_stale` and holds
        /// new entries on its instruments until ticks come again; 0 = never.
        #[serde(default = "stale_secs")]
        stale_secs: u64,
        /// Take an option-chain snapshot of the first symbol (the underlying) this often,
        /// seconds; 0 = none. Kite (quotes over the master's contracts), Upstox and OpenAlgo give them.
        #[serde(default)]
        chain_secs: u64,
        /// The expiry of the chain, `YYYY-MM-DD`; absent: the nearest.
        #[serde(default)]
        expiry: Option<String>,
        /// With `chain_secs`: also follow the ticks of the options of the strike
        /// nearest the spot and this many either side, re-centred with each snapshot; 0 = none.
        #[serde(default)]
        strikes: usize,
    },
}

impl Source {
    /// Whether its prices follow the wall clock (a feed), rather than a file or
    /// the seeded market replayed at its own pace, whose time only the prices tell.
    #[must_use]
    pub const fn is_live(&self) -> bool {
        matches!(self, Self::Redis { .. } | Self::Broker { .. })
    }
}

fn stale_secs() -> u64 {
    10
}

fn max_skew_secs() -> u64 {
    5
}

/// `[[pipelines]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    /// Unique id; part of every signal id.
    pub id: Spanned<String>,
    /// Plugin file in the plugin folder.
    pub plugin: Spanned<String>,
    /// Instruments to feed the strategy.
    pub symbols: Spanned<Vec<String>>,
    /// Bar length, `1m`, `5m`, `1h`, `30s`.
    #[serde(default = "one_minute")]
    pub timeframe: Spanned<String>,
    /// Market data.
    pub source: Source,
    /// Parameters for the plugin's `init`.
    #[serde(default = "no_params")]
    pub params: Spanned<toml::Table>,
    /// Accounts that trade its signals.
    pub accounts: Vec<Spanned<String>>,
    /// Owner, for commands aimed at one user's pipelines.
    #[serde(default)]
    pub user: Option<String>,
    /// Sandbox limits of this pipeline's plugin.
    #[serde(default)]
    pub limits: PluginLimits,
    /// Recent candles kept to warm up a new version that cannot restore the old one's state.
    #[serde(default = "warmup_candles")]
    pub warmup_candles: usize,
    /// Send no signal before this exchange time (`2024-03-01`, the IST day's start, or
    /// `2024-03-01T09:15:00+05:30`): a replay's earlier data only warms the strategy up.
    #[serde(default)]
    pub trade_from: Option<Spanned<String>>,
}

/// `[pipelines.limits]`: what one plugin instance may use. The defaults are safe
/// for one-minute bars; a heavy strategy may need more CPU.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginLimits {
    /// CPU per event, milliseconds of wall clock.
    pub cpu_ms_per_event: u64,
    /// Linear memory, MiB.
    pub memory_mib: usize,
    /// Signals one event may produce.
    pub max_signals_per_event: usize,
}

impl Default for PluginLimits {
    fn default() -> Self {
        Self {
            cpu_ms_per_event: 50,
            memory_mib: 64,
            max_signals_per_event: 16,
        }
    }
}

fn warmup_candles() -> usize {
    500
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    #[serde(default)]
    host: HostSection,
    #[serde(default)]
    bus: BusSection,
    #[serde(default)]
    accounts: Vec<Account>,
    #[serde(default)]
    pipelines: Vec<Pipeline>,
    #[serde(default)]
    live: LiveSection,
    #[serde(default)]
    market: MarketSection,
    #[serde(default)]
    telegram: Option<TelegramSection>,
    #[serde(default)]
    console: ConsoleSection,
}

/// `[console]`: the web console `run` serves beside the pipelines (and the defaults of
/// `tradehost console`). Users and their password hashes are in the secrets file.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleSection {
    /// Where to listen (`127.0.0.1:8080`); absent: `run` serves no console.
    pub listen: Option<std::net::SocketAddr>,
    /// Mark the session cookie `Secure` (behind a TLS proxy; also when it says `X-Forwarded-Proto: https`).
    pub secure_cookies: bool,
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where it was read from.
    pub path: PathBuf,
    /// `[host]`.
    pub host: HostSection,
    /// `[bus]`.
    pub bus: BusSection,
    /// `[[accounts]]`.
    pub accounts: Vec<Account>,
    /// `[[pipelines]]`.
    pub pipelines: Vec<Pipeline>,
    /// `[live]`.
    pub live: LiveSection,
    /// `[market]`.
    pub market: MarketSection,
    /// `[telegram]`, if alerts are wanted.
    pub telegram: Option<TelegramSection>,
    /// `[console]`.
    pub console: ConsoleSection,
}

fn paper() -> Spanned<String> {
    Spanned::new(0..0, "paper".into())
}
fn long() -> PositionMode {
    PositionMode::Long
}
fn one_unit() -> Sizing {
    Sizing::Fixed { qty: 1 }
}
fn one_minute() -> Spanned<String> {
    Spanned::new(0..0, "1m".into())
}
fn no_params() -> Spanned<toml::Table> {
    Spanned::new(0..0, toml::Table::new())
}
fn seed() -> u64 {
    42
}
fn days() -> u32 {
    20
}
fn start_price() -> f64 {
    21_700.0
}

use crate::domain::money::de_decimal as decimal;

/// `[market] ticks`: instrument → a tick above zero.
fn ticks<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<std::collections::BTreeMap<String, Decimal>, D::Error> {
    #[derive(Deserialize)]
    struct Tick(#[serde(deserialize_with = "decimal")] Decimal);
    let raw = std::collections::BTreeMap::<String, Tick>::deserialize(d)?;
    raw.into_iter()
        .map(|(k, Tick(t))| {
            if t > Decimal::ZERO {
                Ok((k, t))
            } else {
                Err(serde::de::Error::custom(format!(
                    "ticks.{k}: {t} is not a tick above zero"
                )))
            }
        })
        .collect()
}

impl Pipeline {
    /// The plugin's parameters flattened to strings, as `init` takes them.
    #[must_use]
    pub fn param_pairs(&self) -> Vec<(String, String)> {
        self.params
            .get_ref()
            .iter()
            .map(|(k, v)| {
                let text = match v {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), text)
            })
            .collect()
    }

    /// When its signals may start (`trade_from`, ms since the epoch).
    #[must_use]
    pub fn trade_from_ms(&self) -> Option<i64> {
        self.trade_from
            .as_ref()
            .and_then(|t| parse_moment(t.get_ref()))
    }

    /// Bar length in seconds.
    #[must_use]
    pub fn timeframe_secs(&self) -> u32 {
        parse_timeframe(self.timeframe.get_ref()).unwrap_or(60)
    }
}

/// `YYYY-MM-DD` (the start of that IST day) or an ISO-8601 time → ms since the epoch.
#[must_use]
pub fn parse_moment(text: &str) -> Option<i64> {
    let text = text.trim();
    match crate::domain::time::parse_date(text) {
        Some(day) => day
            .checked_mul(86_400_000)?
            .checked_sub(crate::domain::time::IST_OFFSET_MS),
        None => crate::domain::time::parse_iso(text),
    }
}

/// `30s`, `1m`, `15m`, `1h` → seconds.
#[must_use]
pub fn parse_timeframe(text: &str) -> Option<u32> {
    let text = text.trim();
    // The unit is the last character, whatever its width (a multi-byte one is simply not a unit).
    let unit = text.chars().last()?;
    let n: u32 = text[..text.len() - unit.len_utf8()]
        .parse()
        .ok()
        .filter(|n| *n > 0)?;
    n.checked_mul(match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        _ => return None,
    })
}

impl Config {
    /// Read and validate a configuration file.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the place of the first problem.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_owned(),
            line: 0,
            column: 0,
            field: "(file)".into(),
            message: format!("cannot read: {e}"),
            snippet: None,
        })?;
        let config = Self::parse(path, &text)?;
        // The ticks configured by name are this process's, over what a master says.
        crate::domain::money::set_tick_overrides(config.market.ticks.clone());
        Ok(config)
    }

    /// Parse and validate configuration text; `path` names it in errors.
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let doc: Document = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let message = e.message().trim().to_owned();
            error_at(path, text, span.start, &field_at(text, span.start), message)
        })?;
        let mut config = Self {
            path: path.to_owned(),
            host: doc.host,
            bus: doc.bus,
            accounts: doc.accounts,
            pipelines: doc.pipelines,
            live: doc.live,
            market: doc.market,
            telegram: doc.telegram,
            console: doc.console,
        };
        config.validate(text)?;
        config.market.calendar = std::sync::Arc::new(config.load_calendars(text)?);
        if let Some(rules) = config.load_contracts(text)? {
            config.market.contract_rules = std::sync::Arc::new(rules);
        }
        Ok(config)
    }

    /// The bundled calendars with `[market] calendars` read over them.
    fn load_calendars(&self, text: &str) -> Result<crate::domain::calendar::Calendar, ConfigError> {
        let mut calendar = crate::domain::calendar::Calendar::nse();
        calendar.set_unknown_year(self.market.unknown_year);
        let offset = text.find("calendars").unwrap_or(0);
        for (i, file) in self.market.calendars.iter().enumerate() {
            let resolved = self
                .path
                .parent()
                .map_or_else(|| PathBuf::from(file), |dir| dir.join(file));
            let field = format!("market.calendars[{i}]");
            let body = std::fs::read_to_string(&resolved).map_err(|e| {
                error_at(
                    &self.path,
                    text,
                    offset,
                    &field,
                    format!("{}: cannot read: {e}", resolved.display()),
                )
            })?;
            let year =
                crate::domain::calendar::Calendar::parse(&resolved.display().to_string(), &body)
                    .map_err(|e| error_at(&self.path, text, offset, &field, e.to_string()))?;
            calendar.extend(year);
        }
        Ok(calendar)
    }

    /// `[market] contracts`, when set.
    fn load_contracts(
        &self,
        text: &str,
    ) -> Result<Option<crate::domain::contracts::ContractRules>, ConfigError> {
        let Some(file) = &self.market.contracts else {
            return Ok(None);
        };
        let offset = text.find("contracts").unwrap_or(0);
        let resolved = self
            .path
            .parent()
            .map_or_else(|| PathBuf::from(file), |dir| dir.join(file));
        let body = std::fs::read_to_string(&resolved).map_err(|e| {
            error_at(
                &self.path,
                text,
                offset,
                "market.contracts",
                format!("{}: cannot read: {e}", resolved.display()),
            )
        })?;
        crate::domain::contracts::ContractRules::parse(&resolved.display().to_string(), &body)
            .map(Some)
            .map_err(|e| error_at(&self.path, text, offset, "market.contracts", e.to_string()))
    }

    fn validate(&self, text: &str) -> Result<(), ConfigError> {
        let err = |offset: usize, field: String, message: String| {
            Err(error_at(&self.path, text, offset, &field, message))
        };
        let m = &self.market;
        if m.gap_ticks == 0 {
            let offset = text.find("gap_ticks").unwrap_or(0);
            return err(
                offset,
                "market.gap_ticks".into(),
                "must be at least 1".into(),
            );
        }
        if m.sanity_multiple != Decimal::ZERO && m.sanity_multiple <= Decimal::ONE {
            let offset = text.find("sanity_multiple").unwrap_or(0);
            return err(
                offset,
                "market.sanity_multiple".into(),
                format!("{} must be above 1 (or 0: off)", m.sanity_multiple),
            );
        }
        let mut account_ids = HashSet::new();
        for (i, a) in self.accounts.iter().enumerate() {
            if a.id.get_ref().trim().is_empty() {
                return err(
                    a.id.span().start,
                    format!("accounts[{i}].id"),
                    "must not be empty".into(),
                );
            }
            if !account_ids.insert(a.id.get_ref().as_str()) {
                return err(
                    a.id.span().start,
                    format!("accounts[{i}].id"),
                    format!("duplicate account id {:?}", a.id.get_ref()),
                );
            }
            if a.kind().is_none() {
                return err(
                    a.broker.span().start,
                    format!("accounts[{i}].broker"),
                    format!(
                        "unknown broker {:?}; expected one of {}",
                        a.broker.get_ref(),
                        crate::domain::BrokerKind::names()
                    ),
                );
            }
            let p = a.market_protection_pct;
            if !(p == Decimal::NEGATIVE_ONE || (p > Decimal::ZERO && p <= Decimal::ONE_HUNDRED)) {
                return err(
                    a.id.span().start,
                    format!("accounts[{i}].market_protection_pct"),
                    format!("{p}: expected -1 (automatic) or a percentage in (0, 100]"),
                );
            }
            if let Some(url) = a
                .base_url
                .as_deref()
                .filter(|u| !(u.starts_with("http://") || u.starts_with("https://")))
            {
                return err(
                    a.id.span().start,
                    format!("accounts[{i}].base_url"),
                    format!("{url:?}: expected an http:// or https:// address"),
                );
            }
            if let Some(n) = &a.notify
                && let Some(bad) = n.events.iter().find(|e| !ALERTS.contains(&e.as_str()))
            {
                return err(
                    a.id.span().start,
                    format!("accounts[{i}].notify.events"),
                    format!(
                        "unknown alert {bad:?}; expected some of {}",
                        ALERTS.join(", ")
                    ),
                );
            }
            if a.capital <= Decimal::ZERO {
                return err(
                    a.id.span().start,
                    format!("accounts[{i}].capital"),
                    format!("must be positive, got {}", a.capital),
                );
            }
            if a.risk.window().is_none() {
                return err(
                    a.id.span().start,
                    format!("accounts[{i}].risk.entry_window"),
                    format!("{:?}: expected HH:MM-HH:MM", a.risk.entry_window),
                );
            }
            for (segment, name) in [
                (crate::domain::Segment::Equity, "equity"),
                (crate::domain::Segment::Derivative, "derivative"),
            ] {
                if a.square_off_minute(segment).is_none() {
                    return err(
                        a.id.span().start,
                        format!("accounts[{i}].square_off"),
                        format!("{:?} ({name}): expected HH:MM", a.square_off),
                    );
                }
            }
            if a.autoslice && !a.kind().is_some_and(|k| k.capabilities().autoslice) {
                return err(
                    a.id.span().start,
                    format!("accounts[{i}].autoslice"),
                    format!(
                        "Kite's order slicing: the broker is {:?}; remove it to let the host slice",
                        a.broker.get_ref()
                    ),
                );
            }
            if let Some(id) = a.algo_id.as_deref().filter(|id| {
                id.trim().is_empty()
                    || id.len() > 64
                    || !id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
            }) {
                return err(
                    a.id.span().start,
                    format!("accounts[{i}].algo_id"),
                    format!("{id:?}: expected up to 64 letters, digits, '-', '_', '.' or '/'"),
                );
            }
            for (field, value) in [
                ("risk.expiry_no_entry_after", &a.risk.expiry_no_entry_after),
                ("exits.expiry_square_off", &a.exits.expiry_square_off),
            ] {
                if !value.is_empty() && crate::domain::time::parse_hhmm(value).is_none() {
                    return err(
                        a.id.span().start,
                        format!("accounts[{i}].{field}"),
                        format!("{value:?}: expected HH:MM (or empty: off)"),
                    );
                }
            }
            let e = &a.exits;
            if [
                e.stop_loss_pct,
                e.target_pct,
                e.trailing_pct,
                e.stop_limit_buffer_pct,
            ]
            .iter()
            .any(|p| p.is_sign_negative() || *p >= Decimal::ONE_HUNDRED)
            {
                return err(
                    a.id.span().start,
                    format!("accounts[{i}].exits"),
                    "percentages must be within 0..100".into(),
                );
            }
            if a.slippage_bps.is_sign_negative() {
                return err(
                    a.id.span().start,
                    format!("accounts[{i}].slippage_bps"),
                    "must not be negative".into(),
                );
            }
            let bad_size = match &a.sizing {
                Sizing::Fixed { qty } => (*qty == 0).then_some("qty must be at least 1"),
                Sizing::Lots { lots, lot_size } => (*lots == 0 || *lot_size == Some(0))
                    .then_some("lots and lot_size must be at least 1"),
                Sizing::Percent { percent } | Sizing::Risk { percent } => {
                    (*percent <= Decimal::ZERO || *percent > Decimal::ONE_HUNDRED)
                        .then_some("percent must be within (0, 100]")
                }
            };
            if let Some(message) = bad_size {
                return err(
                    a.id.span().start,
                    format!("accounts[{i}].sizing"),
                    message.into(),
                );
            }
        }
        let mut pipeline_ids = HashSet::new();
        for (i, p) in self.pipelines.iter().enumerate() {
            let id = p.id.get_ref();
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return err(
                    p.id.span().start,
                    format!("pipelines[{i}].id"),
                    format!("{id:?}: use letters, digits, '-', '_' or '.'"),
                );
            }
            if !pipeline_ids.insert(id.as_str()) {
                return err(
                    p.id.span().start,
                    format!("pipelines[{i}].id"),
                    format!("duplicate pipeline id {id:?}"),
                );
            }
            let plugin = p.plugin.get_ref();
            if !plugin.ends_with(".wasm") || plugin.contains(['/', '\\']) {
                return err(
                    p.plugin.span().start,
                    format!("pipelines[{i}].plugin"),
                    format!(
                        "{plugin:?}: expected a file name in the plugin folder ending in .wasm"
                    ),
                );
            }
            if p.symbols.get_ref().is_empty()
                || p.symbols.get_ref().iter().any(|s| s.trim().is_empty())
            {
                return err(
                    p.symbols.span().start,
                    format!("pipelines[{i}].symbols"),
                    "list at least one non-empty symbol".into(),
                );
            }
            if parse_timeframe(p.timeframe.get_ref()).is_none() {
                return err(
                    p.timeframe.span().start,
                    format!("pipelines[{i}].timeframe"),
                    format!(
                        "{:?}: expected a length like 30s, 1m, 15m or 1h",
                        p.timeframe.get_ref()
                    ),
                );
            }
            if let Some(t) = &p.trade_from
                && parse_moment(t.get_ref()).is_none()
            {
                return err(
                    t.span().start,
                    format!("pipelines[{i}].trade_from"),
                    format!(
                        "{:?}: expected a date like 2024-03-01 or a time like 2024-03-01T09:15:00+05:30",
                        t.get_ref()
                    ),
                );
            }
            if p.accounts.is_empty() {
                return err(
                    p.id.span().start,
                    format!("pipelines[{i}].accounts"),
                    "list at least one account".into(),
                );
            }
            for (j, a) in p.accounts.iter().enumerate() {
                if !account_ids.contains(a.get_ref().as_str()) {
                    let known: Vec<&str> = self
                        .accounts
                        .iter()
                        .map(|a| a.id.get_ref().as_str())
                        .collect();
                    return err(
                        a.span().start,
                        format!("pipelines[{i}].accounts[{j}]"),
                        format!(
                            "unknown account {:?} (known: {})",
                            a.get_ref(),
                            known.join(", ")
                        ),
                    );
                }
            }
            for (k, v) in p.params.get_ref() {
                if matches!(v, toml::Value::Array(_) | toml::Value::Table(_)) {
                    let at =
                        key_offset(text, p.params.span().start, k).unwrap_or(p.params.span().start);
                    return err(
                        at,
                        format!("pipelines[{i}].params.{k}"),
                        "must be a string, number or boolean".into(),
                    );
                }
            }
            let l = &p.limits;
            if l.cpu_ms_per_event == 0
                || l.cpu_ms_per_event > 10_000
                || l.memory_mib == 0
                || l.memory_mib > 4096
                || l.max_signals_per_event == 0
            {
                return err(p.id.span().start, format!("pipelines[{i}].limits"), "cpu_ms_per_event must be 1..=10000, memory_mib 1..=4096, max_signals_per_event at least 1".into());
            }
            match &p.source {
                Source::Replay { files, speed, .. }
                    if files.is_empty() || !speed.is_finite() || *speed < 0.0 =>
                {
                    return err(
                        p.id.span().start,
                        format!("pipelines[{i}].source"),
                        "replay needs at least one file and a speed of 0 or more".into(),
                    );
                }
                Source::Synthetic { speed, days, .. }
                    if !speed.is_finite() || *speed < 0.0 || *days == 0 =>
                {
                    return err(
                        p.id.span().start,
                        format!("pipelines[{i}].source"),
                        "synthetic needs days of at least 1 and a speed of 0 or more".into(),
                    );
                }
                Source::Broker {
                    expiry: Some(e), ..
                } if crate::domain::time::parse_date(e).is_none() => {
                    return err(
                        p.id.span().start,
                        format!("pipelines[{i}].source.expiry"),
                        format!("{e:?}: expected YYYY-MM-DD"),
                    );
                }
                Source::Broker {
                    chain_secs: 0,
                    strikes,
                    ..
                } if *strikes > 0 => {
                    return err(p.id.span().start, format!("pipelines[{i}].source.strikes"), "strikes around the money are chosen from the option chain: set chain_secs too".into());
                }
                Source::Broker {
                    account,
                    chain_secs,
                    ..
                } if *chain_secs > 0
                    && self.account(account).is_some_and(|a| {
                        !a.kind().is_some_and(|k| k.capabilities().option_chain)
                    }) =>
                {
                    return err(
                        p.id.span().start,
                        format!("pipelines[{i}].source.chain_secs"),
                        format!(
                            "option chains from the broker are read from kite, upstox and openalgo accounts; {account:?} is none of them"
                        ),
                    );
                }
                Source::Broker { account, .. } => match self.account(account) {
                    None => {
                        return err(
                            p.id.span().start,
                            format!("pipelines[{i}].source.account"),
                            format!("unknown account {account:?}"),
                        );
                    }
                    Some(a) if !a.kind().is_some_and(|k| k.capabilities().market_feed) => {
                        return err(
                            a.broker.span().start,
                            format!("pipelines[{i}].source.account"),
                            format!(
                                "account {account:?} uses broker {:?}, which has no market feed (kite, upstox or openalgo)",
                                a.broker.get_ref()
                            ),
                        );
                    }
                    Some(_) => {}
                },
                _ => {}
            }
        }
        let at = |key: &str| text.find(key).unwrap_or(0);
        for broker in self.live.instruments.keys() {
            if !crate::domain::Capabilities::of(broker).is_some_and(|c| c.instrument_master) {
                return err(
                    at("[live"),
                    format!("live.instruments.{broker}"),
                    "instrument masters are read for kite and upstox".into(),
                );
            }
        }
        if crate::domain::time::parse_hhmm(&self.live.refresh_at).is_none() {
            return err(
                at("refresh_at"),
                "live.refresh_at".into(),
                format!("{:?}: expected HH:MM", self.live.refresh_at),
            );
        }
        if self.live.timeout_ms == 0 || self.live.poll_ms == 0 || self.live.max_attempts == 0 {
            return err(
                at("[live"),
                "live".into(),
                "timeout_ms, poll_ms and max_attempts must be at least 1".into(),
            );
        }
        if let Some(t) = &self.telegram
            && let Some(bad) = t.events.iter().find(|e| !ALERTS.contains(&e.as_str()))
        {
            return err(
                at("[telegram"),
                "telegram.events".into(),
                format!(
                    "unknown alert {bad:?}; expected some of {}",
                    ALERTS.join(", ")
                ),
            );
        }
        Ok(())
    }

    /// The account with `id`.
    #[must_use]
    pub fn account(&self, id: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.id.get_ref() == id)
    }

    /// The pipeline with `id`.
    #[must_use]
    pub fn pipeline(&self, id: &str) -> Option<&Pipeline> {
        self.pipelines.iter().find(|p| p.id.get_ref() == id)
    }

    /// The Redis URL: `REDIS_URL` when set, else `[bus] url`.
    #[must_use]
    pub fn redis_url(&self) -> Option<String> {
        std::env::var("REDIS_URL")
            .ok()
            .filter(|u| !u.trim().is_empty())
            .or_else(|| self.bus.url.clone())
    }

    /// Where to read a file named in the configuration (an instrument master):
    /// an `http(s)://` URL as it is, a path relative to the file's folder.
    #[must_use]
    pub fn resolve_source(&self, source: &str) -> String {
        if source.starts_with("http://") || source.starts_with("https://") {
            source.to_owned()
        } else {
            self.resolve(Path::new(source)).display().to_string()
        }
    }

    /// A path from the file, relative to the file's folder.
    #[must_use]
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_owned()
        } else {
            self.path.parent().unwrap_or(Path::new(".")).join(path)
        }
    }
}

/// Where `key = …` starts, searching from `from` (a table's span).
fn key_offset(text: &str, from: usize, key: &str) -> Option<usize> {
    let mut pos = from.min(text.len());
    for line in text.get(pos..)?.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix(key)
            && rest.trim_start().starts_with('=')
        {
            return Some(pos + (line.len() - trimmed.len()));
        }
        pos += line.len();
    }
    None
}

fn line_col(text: &str, offset: usize) -> (usize, usize, &str) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[line_start..]
        .find('\n')
        .map_or(text.len(), |i| line_start + i);
    (
        line,
        before[line_start..].chars().count() + 1,
        &text[line_start..line_end],
    )
}

fn error_at(path: &Path, text: &str, offset: usize, field: &str, message: String) -> ConfigError {
    let (line, column, source_line) = line_col(text, offset);
    let snippet = (!source_line.is_empty()).then(|| {
        format!(
            "  {line:>4} | {source_line}\n       | {}^",
            " ".repeat(column.saturating_sub(1))
        )
    });
    ConfigError {
        path: path.to_owned(),
        line,
        column,
        field: field.to_owned(),
        message,
        snippet,
    }
}

/// The dotted path of the key on the line at `offset`, from the table headers above it:
/// `pipelines[1].params.fast`.
fn field_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let mut table = String::new();
    let mut counts: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut key = String::new();
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        let start = pos;
        pos += line.len();
        if let Some(name) = trimmed
            .strip_prefix("[[")
            .and_then(|r| r.split("]]").next())
        {
            let name = name.trim().to_owned();
            let n = counts
                .entry(name.clone())
                .and_modify(|n| *n += 1)
                .or_insert(0);
            table = format!("{name}[{n}]");
        } else if let Some(name) = trimmed.strip_prefix('[').and_then(|r| r.split(']').next()) {
            let name = name.trim();
            // `[pipelines.params]` belongs to the latest `[[pipelines]]`.
            table = match name.split_once('.') {
                Some((array, rest)) if counts.contains_key(array) => {
                    format!("{array}[{}].{rest}", counts[array])
                }
                _ => name.to_owned(),
            };
        }
        if start <= offset && offset < pos.max(start + 1) {
            key = trimmed
                .split('=')
                .next()
                .filter(|_| trimmed.contains('='))
                .map(|k| k.trim().to_owned())
                .unwrap_or_default();
            break;
        }
    }
    match (table.is_empty(), key.is_empty()) {
        (true, true) => "(document)".into(),
        (true, false) => key,
        (false, true) => table,
        (false, false) => format!("{table}.{key}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[host]
plugin_dir = "plugins"

[[accounts]]
id = "paper-1"
capital = 1000000
mode = "both"
sizing = { kind = "lots", lots = 2, lot_size = 75 }
slippage_bps = 1.5

[[pipelines]]
id = "nifty-ma"
plugin = "ma_crossover.wasm"
symbols = ["NIFTY"]
timeframe = "5m"
accounts = ["paper-1"]
source = { kind = "synthetic", seed = 7, days = 2 }
[pipelines.params]
fast = 10
kind = "ema"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("pipelines.toml"), text)
    }

    #[test]
    fn square_off_times_per_segment_and_by_broker() {
        use crate::domain::Segment;
        let c = parse(GOOD).unwrap();
        assert_eq!(
            (
                c.accounts[0].square_off_minute(Segment::Equity),
                c.accounts[0].square_off_minute(Segment::Derivative)
            ),
            (Some(915), Some(915)),
            "paper: 15:15"
        );
        let kite = GOOD.replace(
            "slippage_bps = 1.5",
            "slippage_bps = 1.5\nbroker = \"kite\"",
        );
        let c = parse(&kite).unwrap();
        assert_eq!(
            (
                c.accounts[0].square_off_minute(Segment::Equity),
                c.accounts[0].square_off_minute(Segment::Derivative)
            ),
            (Some(915), Some(920)),
            "Zerodha: 5 minutes before its own 15:20 and 15:25"
        );
        let split = GOOD.replace("slippage_bps = 1.5", "slippage_bps = 1.5\nsquare_off = { equity = \"15:10\", derivative = \"15:22\" }\nalgo_id = \"NSE-ALGO-42\"");
        let c = parse(&split).unwrap();
        assert_eq!(
            (
                c.accounts[0].square_off_minute(Segment::Equity),
                c.accounts[0].square_off_minute(Segment::Derivative)
            ),
            (Some(910), Some(922))
        );
        assert_eq!(c.accounts[0].algo_id.as_deref(), Some("NSE-ALGO-42"));
        let bad = GOOD.replace(
            "slippage_bps = 1.5",
            "slippage_bps = 1.5\nsquare_off = { equity = \"15:10\", derivative = \"3pm\" }",
        );
        let e = parse(&bad).unwrap_err();
        assert_eq!(e.field, "accounts[0].square_off");
        assert!(e.message.contains("(derivative): expected HH:MM"), "{e}");
        let bad = GOOD.replace(
            "slippage_bps = 1.5",
            "slippage_bps = 1.5\nalgo_id = \"two words\"",
        );
        assert_eq!(parse(&bad).unwrap_err().field, "accounts[0].algo_id");
        // Kite's slicing is Kite's: on another broker the setting is refused, naming it.
        let bad = GOOD.replace("slippage_bps = 1.5", "slippage_bps = 1.5\nautoslice = true");
        let e = parse(&bad).unwrap_err();
        assert_eq!(e.field, "accounts[0].autoslice", "{e}");
        assert!(e.message.contains("Kite's order slicing"), "{e}");
    }

    #[test]
    fn a_calendar_that_cannot_be_read_is_named_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("nse-2028.toml"),
            "year = 2028\n[[holiday]]\ndate = \"2028-13-01\"\nname = \"x\"\n",
        )
        .unwrap();
        let text = format!("[market]\ncalendars = [\"nse-2028.toml\"]\n{GOOD}");
        let e = Config::parse(&dir.path().join("pipelines.toml"), &text).unwrap_err();
        assert_eq!(e.field, "market.calendars[0]");
        assert!(
            e.message
                .ends_with("nse-2028.toml:3: holiday.date: \"2028-13-01\": expected YYYY-MM-DD"),
            "{e}"
        );
        let e = Config::parse(
            &dir.path().join("pipelines.toml"),
            &text.replace("nse-2028", "missing"),
        )
        .unwrap_err();
        assert!(e.message.contains("missing.toml: cannot read"), "{e}");
        std::fs::write(
            dir.path().join("nse-2028.toml"),
            "year = 2028\n[[holiday]]\ndate = \"2028-01-26\"\nname = \"Republic Day\"\n",
        )
        .unwrap();
        let c = Config::parse(&dir.path().join("pipelines.toml"), &text).unwrap();
        let mut years = crate::domain::calendar::BUNDLED_YEARS.to_vec();
        years.push(2028);
        assert_eq!(c.market.calendar.years(), years);
        assert!(
            c.market
                .calendar
                .hours(crate::domain::time::days_from_civil(2028, 1, 26))
                .is_none()
        );
    }

    #[test]
    fn the_unknown_year_policy_and_the_band_rules_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pipelines.toml");
        let c = Config::parse(
            &path,
            &format!("[market]\nunknown_year = \"refuse\"\ngap_ticks = 3\n{GOOD}"),
        )
        .unwrap();
        assert_eq!(
            c.market.calendar.unknown_year(),
            crate::domain::calendar::UnknownYear::Refuse
        );
        assert_eq!(c.market.gap_ticks, 3);
        let e = Config::parse(
            &path,
            &format!("[market]\nunknown_year = \"maybe\"\n{GOOD}"),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("unknown_year") || e.message.contains("maybe"),
            "{e}"
        );
        let e = Config::parse(&path, &format!("[market]\nsanity_multiple = \"1\"\n{GOOD}"))
            .unwrap_err();
        assert_eq!(e.field, "market.sanity_multiple", "{e}");
        let e = Config::parse(&path, &format!("[market]\ngap_ticks = 0\n{GOOD}")).unwrap_err();
        assert_eq!((e.field.as_str(), e.line), ("market.gap_ticks", 2), "{e}");
    }

    #[test]
    fn a_good_file() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.accounts[0].slippage_bps, Decimal::new(15, 1));
        assert_eq!(
            c.accounts[0].sizing,
            Sizing::Lots {
                lots: 2,
                lot_size: Some(75)
            }
        );
        let p = &c.pipelines[0];
        assert_eq!(p.timeframe_secs(), 300);
        let mut params = p.param_pairs();
        params.sort();
        assert_eq!(
            params,
            vec![("fast".into(), "10".into()), ("kind".into(), "ema".into())]
        );
        assert_eq!(c.bus.prefix, "trading");
    }

    #[test]
    fn mistakes_name_line_column_and_field() {
        let cases = [
            (
                GOOD.replace("fast = 10", "fast = [1]"),
                "pipelines.toml:20:1: pipelines[0].params.fast: must be a string",
            ),
            (
                GOOD.replace("accounts = [\"paper-1\"]", "accounts = [\"paper-9\"]"),
                "pipelines.toml:17:13: pipelines[0].accounts[0]: unknown account \"paper-9\" (known: paper-1)",
            ),
            (
                GOOD.replace("timeframe = \"5m\"", "timeframe = \"5x\""),
                "pipelines.toml:16:13: pipelines[0].timeframe: \"5x\"",
            ),
            (
                GOOD.replace(
                    "timeframe = \"5m\"",
                    "timeframe = \"5m\"\ntrade_from = \"soon\"",
                ),
                "pipelines.toml:17:14: pipelines[0].trade_from: \"soon\": expected a date like 2024-03-01",
            ),
            (
                GOOD.replace("mode = \"both\"", "mode = \"sideways\""),
                "pipelines.toml:8:8: accounts[0].mode: unknown variant `sideways`",
            ),
            (
                GOOD.replace("plugin_dir", "plugin_folder"),
                "pipelines.toml:3:1: host.plugin_folder: unknown field `plugin_folder`",
            ),
            (
                GOOD.replace("capital = 1000000", "capital = \"lots\""),
                "pipelines.toml:7:11: accounts[0].capital: expected a decimal number",
            ),
            (
                GOOD.replace("ma_crossover.wasm", "ma_crossover.so"),
                "pipelines.toml:14:10: pipelines[0].plugin",
            ),
            (
                GOOD.replace("symbols = [\"NIFTY\"]", "symbols = []"),
                "pipelines.toml:15:11: pipelines[0].symbols",
            ),
            (
                GOOD.replace("lots = 2", "lots = 0"),
                "accounts[0].sizing: lots and lot_size must be at least 1",
            ),
            (
                GOOD.replace("id = \"nifty-ma\"", "id = \"nifty ma\""),
                "pipelines[0].id",
            ),
            (
                format!(
                    "{GOOD}\n[[pipelines]]\nid = \"nifty-ma\"\nplugin = \"x.wasm\"\nsymbols = [\"A\"]\naccounts = [\"paper-1\"]\nsource = {{ kind = \"redis\" }}\n"
                ),
                "pipelines[1].id: duplicate pipeline id",
            ),
            (
                GOOD.replace("[[pipelines]]", "[[pipelines]"),
                "pipelines.toml:12:",
            ),
        ];
        for (text, want) in cases {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(want), "{err}\n  does not contain\n{want}");
        }
    }

    #[test]
    fn snippet_points_at_the_column() {
        let err = parse(&GOOD.replace("mode = \"both\"", "mode = \"sideways\"")).unwrap_err();
        let snippet = err.snippet.unwrap_or_default();
        assert!(
            snippet.contains("mode = \"sideways\"") && snippet.contains("       |        ^"),
            "{snippet}"
        );
    }

    #[test]
    fn timeframes() {
        for (t, want) in [
            ("30s", Some(30)),
            ("1m", Some(60)),
            ("15m", Some(900)),
            ("1h", Some(3600)),
            ("0m", None),
            ("m", None),
            ("1d", None),
            ("", None),
        ] {
            assert_eq!(parse_timeframe(t), want, "{t}");
        }
    }
}
