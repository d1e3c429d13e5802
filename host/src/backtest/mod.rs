//! Event-driven backtest of one plugin: replay a data file through a strategy
//! and trade its signals for one account with the rules the order manager
//! applies to a paper or live account, from the same code: the subscriber's
//! modes and sizing ([`crate::subscriber::intent`]), the paper fill price
//! (slippage, 0.05 tick), the FIFO [`Position`], the managed exits (stop,
//! target, trailing stop; [`ManagedExit`]) and the square-off rule
//! ([`square_off_rule`]). It keeps them in memory, driven by the data's clock;
//! `backtest --config` runs the order manager itself, with its journal and risk rules.
//!
//! On each bar, per instrument:
//! 1. With `square_off`, a position open at that time is closed by an order
//!    due then (filled at the next bar's open); one left open from an earlier
//!    day (the data stopped before the square-off) is `carried` and closed at
//!    the next session's first open.
//! 2. Orders from earlier signals fill at this bar's open, moved by the slippage.
//! 3. The managed exit checks the bar's range (stop first, the conservative
//!    assumption when both are touched) and fills at the level, or at the open
//!    when the bar gapped through it (`ExitFill::AtLevel`; paper and live send a
//!    market order on the next price instead, which `ExitFill::NextPrice`
//!    reproduces); then the trailing stop follows. A square-off due now, or
//!    left by this bar's fills, takes the exit's place.
//! 4. This bar's signals become orders for the next bar: `long` mode, a buy
//!    opens `qty` units and a sell closes them; `short` the mirror; `both`
//!    reverses. From the square-off time on, only the closing part is kept.
//!
//! Positions still open after the last bar are marked at its close.

pub mod grid;
mod report;
pub mod sweep;
mod sweep_report;

use rust_decimal::Decimal;
use serde::Serialize;

use crate::config::{ExitRules, Sizing};
use crate::domain::OrderSide;
use crate::domain::order::{OrderKind, PriceBar, Work, Working, work};
use crate::domain::position::{Closed, Position, fill_price};
use crate::domain::time::{format_hhmm, ist_day, ist_minute_of_day};
use crate::engine::{Signal, StrategyRunner, sdk_bar, sdk_chain};
use crate::market::{MarketData, OptionChain};
use crate::orders::exits::{ExitFill, ManagedExit};
use crate::orders::risk::is_entry;
use crate::orders::square_off_rule;
use crate::sandbox::SandboxError;
use crate::subscriber::{Rules, intent};

pub use report::{write_outputs, write_report_html};
pub use sweep_report::{SweepInfo, write_sweep, write_walk_forward};

pub use crate::domain::PositionMode;

/// How to run a backtest.
#[derive(Debug, Clone)]
pub struct BacktestConfig {
    /// Which positions signals may open.
    pub mode: PositionMode,
    /// Units bought or sold per position.
    pub qty: u64,
    /// An account's sizing (lots, percent of capital, risk to the stop) instead of `qty` units.
    pub sizing: Option<Sizing>,
    /// Starting capital, for the equity curve and returns.
    pub capital: Decimal,
    /// Intraday square-off time (IST minutes since midnight); `None` carries positions overnight.
    pub square_off_minute: Option<u32>,
    /// Bars per strategy call: 1 calls `on-candle` per bar, more uses the batched entry point.
    pub batch: usize,
    /// Slippage against the trader, basis points, as an account's `slippage_bps`.
    pub slippage_bps: Decimal,
    /// Stop-loss, target and trailing stop for positions whose signal sets none, as an account's `exits`.
    pub exits: ExitRules,
    /// How a fired exit fills: at its level (the default), or as paper and live do, on the next price.
    pub exit_fill: ExitFill,
    /// Signals before this time are seen by the strategy (its warm-up) but not
    /// traded; a walk-forward test window starts here. `None` trades from the first bar.
    pub trade_from_ms: Option<i64>,
}

impl Default for BacktestConfig {
    /// Today's single-plugin defaults: one unit, long only, the next open, no slippage, no exits of its own.
    fn default() -> Self {
        Self {
            mode: PositionMode::Long,
            qty: 1,
            sizing: None,
            capital: Decimal::from(1_000_000),
            square_off_minute: None,
            batch: 4096,
            slippage_bps: Decimal::ZERO,
            exits: ExitRules::default(),
            exit_fill: ExitFill::AtLevel,
            trade_from_ms: None,
        }
    }
}

/// A signal as it was emitted, with the price it was seen at.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalRecord {
    /// The signal.
    pub signal: Signal,
    /// Close (or last price) of the instrument when the signal was produced.
    pub price: Option<Decimal>,
}

/// Long or short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TradeSide {
    /// Bought first.
    Long,
    /// Sold first.
    Short,
}

impl TradeSide {
    /// `long` or `short`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Long => "long",
            Self::Short => "short",
        }
    }
}

/// One fill of the backtest's account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fill {
    /// When (the start of the bar it filled on).
    pub ts_ms: i64,
    /// What.
    pub instrument: String,
    /// Buy or sell.
    pub side: OrderSide,
    /// Units.
    pub qty: Decimal,
    /// Price, after slippage.
    pub price: Decimal,
    /// `signal`, or what closed the position: `stop-loss`, `target`, `trailing-stop`, `square-off`, `carried`.
    pub reason: String,
}

/// A closed round trip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trade {
    /// What was traded.
    pub instrument: String,
    /// When it was entered (start of the fill bar).
    pub entry_ts_ms: i64,
    /// When it was exited.
    pub exit_ts_ms: i64,
    /// Long or short.
    pub side: TradeSide,
    /// Units.
    pub qty: Decimal,
    /// Fill price in.
    pub entry_price: Decimal,
    /// Fill price out.
    pub exit_price: Decimal,
    /// Realised profit or loss.
    pub pnl: Decimal,
    /// Why it was closed: `signal`, `stop-loss`, `target`, `trailing-stop`, `square-off`, `carried`, `end of data`.
    pub exit_reason: String,
}

/// Equity at the end of a trading day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct EquityPoint {
    /// Time of the day's last bar.
    pub ts_ms: i64,
    /// Capital plus realised and unrealised P&L.
    pub equity: Decimal,
    /// Distance below the running peak (≤ 0).
    pub drawdown: Decimal,
}

/// The numbers a strategy author looks at first.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Summary {
    /// Strategy name.
    pub strategy: String,
    /// Strategy version.
    pub strategy_version: String,
    /// Position mode.
    pub mode: PositionMode,
    /// Units per position.
    pub qty: Decimal,
    /// Slippage, basis points.
    pub slippage_bps: Decimal,
    /// Starting capital.
    pub capital: Decimal,
    /// Square-off time, if any.
    pub square_off: Option<String>,
    /// Events replayed (bars or snapshots).
    pub events: usize,
    /// First event time (ISO, IST).
    pub first_ts: Option<String>,
    /// Last event time (ISO, IST).
    pub last_ts: Option<String>,
    /// Signals emitted.
    pub signals: usize,
    /// Signals refused (bad prices).
    pub signals_rejected: usize,
    /// Closed trades.
    pub trades: usize,
    /// Trades with positive P&L.
    pub wins: usize,
    /// Trades with negative P&L.
    pub losses: usize,
    /// wins / trades.
    pub win_rate: f64,
    /// Sum of winning trades.
    pub gross_profit: Decimal,
    /// Sum of losing trades (≤ 0).
    pub gross_loss: Decimal,
    /// Realised P&L.
    pub net_pnl: Decimal,
    /// capital + net P&L.
    pub final_equity: Decimal,
    /// net P&L / capital, in percent.
    pub return_pct: f64,
    /// Largest peak-to-trough fall of bar-close equity (≤ 0).
    pub max_drawdown: Decimal,
    /// The same, as a percentage of the peak.
    pub max_drawdown_pct: f64,
    /// Annualised Sharpe ratio of daily returns (√252, no risk-free rate).
    pub sharpe: f64,
    /// Share of the events (bars or snapshots) a position was open after, in percent;
    /// `None` where it is not known (a summary made from trades alone).
    pub exposure_pct: Option<f64>,
}

/// Everything a backtest produced.
#[derive(Debug, Clone)]
pub struct BacktestResult {
    /// Every signal, in order.
    pub signals: Vec<SignalRecord>,
    /// Why refused signals were refused.
    pub rejected: Vec<String>,
    /// Closed trades, in order of exit.
    pub trades: Vec<Trade>,
    /// Every fill, in order (the mark at the end of the data is not one).
    pub fills: Vec<Fill>,
    /// Daily equity.
    pub equity: Vec<EquityPoint>,
    /// Headline numbers.
    pub summary: Summary,
}

#[derive(Debug, Clone, Copy)]
struct Quote {
    open: Decimal,
    high: Decimal,
    low: Decimal,
    close: Decimal,
}

/// A market order waiting for its price: it fills at the open of the first
/// bar that starts after `not_before`, as the paper venue fills.
#[derive(Debug, Clone)]
struct Order {
    side: OrderSide,
    qty: Decimal,
    not_before: i64,
    stop_loss: Option<Decimal>,
    target: Option<Decimal>,
    /// `signal`, or what closes the position (`square-off`, `carried`).
    reason: &'static str,
    /// How it is priced and how long it works, as the signal asked (the host's closes: at the market).
    terms: Option<crate::domain::order::Working>,
    /// It has been worked against a bar (an IOC has had its one chance).
    seen: bool,
}

#[derive(Debug, Clone)]
struct Book {
    instrument: String,
    position: Position,
    exit: Option<ManagedExit>,
    pending: Vec<Order>,
    last: Option<Decimal>,
    last_fill_ts: Option<i64>,
}

impl Book {
    /// Signed units held plus those of the orders waiting.
    fn effective(&self) -> Decimal {
        self.position.qty
            + self
                .pending
                .iter()
                .map(|o| o.qty * o.side.sign())
                .sum::<Decimal>()
    }
}

struct Engine<'a> {
    config: &'a BacktestConfig,
    sizing: Sizing,
    books: Vec<Book>,
    trades: Vec<Trade>,
    fills: Vec<Fill>,
    signals: Vec<SignalRecord>,
    rejected: Vec<String>,
    peak: Decimal,
    max_drawdown: Decimal,
    max_drawdown_pct: f64,
    equity: Vec<EquityPoint>,
    day: Option<i64>,
    last_ts: i64,
    /// Events replayed, and those after which a position was open.
    steps: usize,
    exposed: usize,
    /// Fills there were at the last mark to market.
    marked_fills: usize,
}

impl<'a> Engine<'a> {
    fn new(config: &'a BacktestConfig) -> Self {
        Self {
            config,
            sizing: config
                .sizing
                .clone()
                .unwrap_or(Sizing::Fixed { qty: config.qty }),
            books: Vec::new(),
            trades: Vec::new(),
            fills: Vec::new(),
            signals: Vec::new(),
            rejected: Vec::new(),
            peak: config.capital,
            max_drawdown: Decimal::ZERO,
            max_drawdown_pct: 0.0,
            equity: Vec::new(),
            day: None,
            last_ts: 0,
            steps: 0,
            exposed: 0,
            marked_fills: 0,
        }
    }

    fn book(&mut self, instrument: &str) -> usize {
        if let Some(i) = self.books.iter().position(|b| b.instrument == instrument) {
            return i;
        }
        self.books.push(Book {
            instrument: instrument.to_owned(),
            position: Position::default(),
            exit: None,
            pending: Vec::new(),
            last: None,
            last_fill_ts: None,
        });
        self.books.len() - 1
    }

    /// Fill `qty` units of book `i` at `price` (before slippage): the position,
    /// its closed lots as trades, and the exit armed when a position opens.
    #[allow(clippy::too_many_arguments)]
    fn fill(
        &mut self,
        i: usize,
        side: OrderSide,
        qty: Decimal,
        price: Decimal,
        ts_ms: i64,
        reason: &str,
        levels: (Option<Decimal>, Option<Decimal>),
    ) {
        let tick = crate::domain::money::tick_of(&self.books[i].instrument);
        let price = fill_price(side, price, self.config.slippage_bps, tick);
        self.fill_exact(i, side, qty, price, ts_ms, reason, levels);
    }

    /// A fill at `price` itself (a limit's, or a stop's already slipped).
    #[allow(clippy::too_many_arguments)]
    fn fill_exact(
        &mut self,
        i: usize,
        side: OrderSide,
        qty: Decimal,
        price: Decimal,
        ts_ms: i64,
        reason: &str,
        levels: (Option<Decimal>, Option<Decimal>),
    ) {
        let book = &mut self.books[i];
        let before = book.position.qty;
        let closed = book.position.fill(side, qty, price, ts_ms);
        book.last_fill_ts = Some(ts_ms);
        let after = book.position.qty;
        if after.is_zero() {
            book.exit = None;
        } else if before.is_zero() || before.is_sign_positive() != after.is_sign_positive() {
            book.exit = Some(ManagedExit::arm(
                after > Decimal::ZERO,
                price,
                levels.0,
                levels.1,
                &self.config.exits,
                crate::domain::money::tick_of(&book.instrument),
            ));
        }
        let instrument = book.instrument.clone();
        self.book_trades(&instrument, closed, reason);
        self.fills.push(Fill {
            ts_ms,
            instrument,
            side,
            qty,
            price,
            reason: reason.to_owned(),
        });
    }

    /// Close what is still open at each book's last price (a mark, not a fill).
    fn close_all_at_last(&mut self, ts_ms: i64, reason: &'static str) {
        for i in 0..self.books.len() {
            self.books[i].pending.clear();
            let qty = self.books[i].position.qty;
            if let (false, Some(last)) = (qty.is_zero(), self.books[i].last) {
                // A mark at the last price itself, not a fill: no slippage.
                let side = if qty > Decimal::ZERO {
                    OrderSide::Sell
                } else {
                    OrderSide::Buy
                };
                let closed = self.books[i].position.fill(side, qty.abs(), last, ts_ms);
                self.books[i].exit = None;
                let instrument = self.books[i].instrument.clone();
                self.book_trades(&instrument, closed, reason);
            }
        }
    }

    fn book_trades(&mut self, instrument: &str, closed: Vec<Closed>, reason: &str) {
        self.trades.extend(closed.into_iter().map(|c| Trade {
            instrument: instrument.to_owned(),
            entry_ts_ms: c.entry_ts,
            exit_ts_ms: c.exit_ts,
            side: if c.long {
                TradeSide::Long
            } else {
                TradeSide::Short
            },
            qty: c.qty,
            entry_price: c.entry_price,
            exit_price: c.exit_price,
            pnl: c.pnl,
            exit_reason: reason.to_owned(),
        }));
    }

    /// One event time: `quotes` are the prices of every instrument quoted now.
    /// Per instrument, as the order manager does on a price: a due square-off
    /// is queued, the orders waiting fill at this open, then the managed exit
    /// checks this bar (filling at its level: [`ExitFill::AtLevel`]); then
    /// this bar's signals become orders for the next price.
    fn step(
        &mut self,
        ts_ms: i64,
        quotes: &[(&str, Quote)],
        signals: impl Iterator<Item = strategy_sdk::Signal>,
    ) {
        let today = ist_day(ts_ms);
        if self.day.is_some_and(|d| d != today) {
            self.record_day_end(self.last_ts);
        }
        self.day = Some(today);
        for i in 0..self.books.len() {
            let Some(q) = quotes
                .iter()
                .find(|(name, _)| *name == self.books[i].instrument)
                .map(|(_, q)| *q)
            else {
                continue;
            };
            // Due before this price (a carried position at the open): filled by it.
            let mut squared = self.square_off(i, ts_ms);
            let ready: Vec<Order> = if self.books[i].pending.is_empty() {
                Vec::new()
            } else {
                let pending = &mut self.books[i].pending;
                let (ready, waiting) = std::mem::take(pending)
                    .into_iter()
                    .partition(|o| o.not_before < ts_ms);
                *pending = waiting;
                ready
            };
            if !ready.is_empty() {
                let bar = PriceBar {
                    ts: ts_ms,
                    open: q.open,
                    high: q.high,
                    low: q.low,
                };
                for mut o in ready {
                    let Some(terms) = o.terms.as_mut() else {
                        self.fill(
                            i,
                            o.side,
                            o.qty,
                            q.open,
                            ts_ms,
                            o.reason,
                            (o.stop_loss, o.target),
                        );
                        continue;
                    };
                    match work(terms, &bar, !o.seen) {
                        Work::Fill(price) => self.fill_exact(
                            i,
                            o.side,
                            o.qty,
                            price,
                            ts_ms,
                            o.reason,
                            (o.stop_loss, o.target),
                        ),
                        Work::Expire => {}
                        Work::Trigger => {
                            terms.triggered = true;
                            o.seen = true;
                            self.books[i].pending.push(o);
                        }
                        Work::Rest => {
                            o.seen = true;
                            self.books[i].pending.push(o);
                        }
                    }
                }
                // What those fills leave open at the square-off time is closed too.
                squared = self.square_off(i, ts_ms);
            }
            if !squared {
                self.check_exits(i, ts_ms, q);
            }
            self.books[i].last = Some(q.close);
        }
        for s in signals {
            self.take_signal(ts_ms, s, quotes);
        }
        self.last_ts = ts_ms;
        let open = self.books.iter().any(|b| !b.position.qty.is_zero());
        // Flat, with no fill since the last mark: the equity has not moved.
        if open || self.fills.len() != self.marked_fills {
            self.mark_to_market();
        }
        self.steps += 1;
        if open {
            self.exposed += 1;
        }
    }

    /// Queue the square-off of book `i` when [`square_off_rule`] says it is due
    /// and nothing else works on the position; true when one is queued or waits.
    fn square_off(&mut self, i: usize, ts_ms: i64) -> bool {
        let Some(square_off) = self.config.square_off_minute else {
            return false;
        };
        let book = &mut self.books[i];
        if book
            .pending
            .iter()
            .any(|o| o.reason == "square-off" || o.reason == "carried")
        {
            return true;
        }
        // A limit or a stop entry still resting at the square-off is cancelled, as the
        // order manager cancels a working entry then.
        if ist_minute_of_day(ts_ms) >= square_off {
            book.pending.retain(|o| o.terms.is_none());
        }
        if book.position.qty.is_zero() || !book.pending.is_empty() {
            return false;
        }
        let Some((reason, not_before)) = square_off_rule(square_off, ts_ms, book.last_fill_ts)
        else {
            return false;
        };
        let side = if book.position.qty > Decimal::ZERO {
            OrderSide::Sell
        } else {
            OrderSide::Buy
        };
        book.pending.push(Order {
            side,
            qty: book.position.qty.abs(),
            not_before,
            stop_loss: None,
            target: None,
            reason,
            terms: None,
            seen: false,
        });
        true
    }

    fn check_exits(&mut self, i: usize, ts_ms: i64, q: Quote) {
        let book = &mut self.books[i];
        let Some(exit) = book.exit.as_mut() else {
            return;
        };
        let Some(reason) = exit.on_price(q.high, q.low, q.close) else {
            return;
        };
        let qty = book.position.qty;
        let side = if qty > Decimal::ZERO {
            OrderSide::Sell
        } else {
            OrderSide::Buy
        };
        match exit.fill_price(reason, q.open, self.config.exit_fill) {
            Some(price) => self.fill(i, side, qty.abs(), price, ts_ms, reason, (None, None)),
            None => book.pending.push(Order {
                side,
                qty: qty.abs(),
                not_before: ts_ms,
                stop_loss: None,
                target: None,
                reason,
                terms: None,
                seen: false,
            }),
        }
    }

    fn take_signal(&mut self, ts_ms: i64, s: strategy_sdk::Signal, quotes: &[(&str, Quote)]) {
        if self.config.trade_from_ms.is_some_and(|from| ts_ms < from) {
            return;
        }
        let signal = match Signal::from_strategy(ts_ms, s) {
            Ok(signal) => signal,
            Err(reason) => {
                self.rejected.push(format!(
                    "{}: {reason}",
                    crate::domain::time::format_iso_ist(ts_ms)
                ));
                return;
            }
        };
        let price = quotes
            .iter()
            .find(|(n, _)| *n == signal.instrument)
            .map(|(_, q)| q.close);
        let i = self.book(&signal.instrument);
        // A new signal replaces a limit or a stop still resting in the instrument, as the order manager does.
        self.books[i].pending.retain(|o| o.terms.is_none());
        let effective = self.books[i].effective();
        let rules = Rules {
            mode: self.config.mode,
            sizing: &self.sizing,
            capital: self.config.capital,
            lot: None,
        };
        match intent(
            rules,
            signal.side.as_str(),
            effective,
            price,
            signal.stop_loss,
        ) {
            Ok(Some(mut order)) => {
                // From the square-off time on, only the closing part of a signal is kept.
                let late = self
                    .config
                    .square_off_minute
                    .is_some_and(|sq| ist_minute_of_day(ts_ms) >= sq);
                if late && is_entry(effective, &order) {
                    let reverses = !effective.is_zero()
                        && (effective > Decimal::ZERO) != (order.side == OrderSide::Buy);
                    order.qty = if reverses {
                        effective.abs()
                    } else {
                        Decimal::ZERO
                    };
                }
                if !order.qty.is_zero() {
                    // A limit or a stop rests as the paper venue's would, by the same rules.
                    let tick = crate::domain::money::tick_of(&signal.instrument);
                    let terms = (signal.order != OrderKind::Market).then(|| Working {
                        side: order.side,
                        kind: signal.order.on_tick_of(order.side, tick),
                        validity: signal.validity,
                        slippage_bps: self.config.slippage_bps,
                        not_before: ts_ms,
                        triggered: false,
                        tick,
                    });
                    self.books[i].pending.push(Order {
                        side: order.side,
                        qty: order.qty,
                        not_before: ts_ms,
                        stop_loss: signal.stop_loss,
                        target: signal.target,
                        reason: "signal",
                        terms,
                        seen: false,
                    });
                }
            }
            Ok(None) => {}
            Err(reason) => self.rejected.push(format!(
                "{}: {reason}",
                crate::domain::time::format_iso_ist(ts_ms)
            )),
        }
        self.signals.push(SignalRecord { signal, price });
    }

    fn realised(&self) -> Decimal {
        self.books.iter().map(|b| b.position.realized).sum()
    }

    fn open_equity(&self) -> Decimal {
        let unrealised: Decimal = self
            .books
            .iter()
            .filter(|b| !b.position.qty.is_zero())
            .filter_map(|b| b.last.map(|last| b.position.unrealized(last)))
            .sum();
        self.config.capital + self.realised() + unrealised
    }

    fn mark_to_market(&mut self) {
        self.marked_fills = self.fills.len();
        let equity = self.open_equity();
        if equity > self.peak {
            self.peak = equity;
        }
        let drawdown = equity - self.peak;
        if drawdown < self.max_drawdown {
            self.max_drawdown = drawdown;
            self.max_drawdown_pct = ratio_pct(drawdown, self.peak);
        }
    }

    fn record_day_end(&mut self, ts_ms: i64) {
        let equity = self.open_equity();
        self.equity.push(EquityPoint {
            ts_ms,
            equity,
            drawdown: equity - self.peak,
        });
    }
}

fn ratio_pct(num: Decimal, den: Decimal) -> f64 {
    use rust_decimal::prelude::ToPrimitive;
    if den.is_zero() {
        0.0
    } else {
        (num / den * Decimal::ONE_HUNDRED).to_f64().unwrap_or(0.0)
    }
}

/// Replay `data` through `strategy`. `progress` is told how many events are done.
///
/// # Errors
/// When the strategy fails (a trap, its CPU budget, its memory cap…): the
/// error names the plugin and the call.
pub fn run(
    strategy: &mut dyn StrategyRunner,
    data: &MarketData,
    config: &BacktestConfig,
    progress: impl FnMut(usize),
) -> Result<BacktestResult, SandboxError> {
    run_prepared(strategy, &Prepared { data, bars: None }, config, progress)
}

/// Data read once and shared by many backtests (a sweep's runs): with its
/// bars already in the strategy's form, each run skips converting a million
/// decimal prices to the floats the strategy reads.
#[derive(Debug)]
pub struct Prepared<'a> {
    /// The data.
    pub data: &'a MarketData,
    /// Its candles as the strategy sees them; `None` converts them a batch at a time.
    bars: Option<Vec<strategy_sdk::Bar>>,
}

impl<'a> Prepared<'a> {
    /// `data` with its candles converted once.
    #[must_use]
    pub fn new(data: &'a MarketData) -> Self {
        let bars = match data {
            MarketData::Candles(series) => Some(series.bars.iter().map(sdk_bar).collect()),
            MarketData::Chains(_) => None,
        };
        Self { data, bars }
    }
}

/// [`run`] on prepared data.
///
/// # Errors
/// As [`run`].
pub fn run_prepared(
    strategy: &mut dyn StrategyRunner,
    prepared: &Prepared<'_>,
    config: &BacktestConfig,
    mut progress: impl FnMut(usize),
) -> Result<BacktestResult, SandboxError> {
    let data = prepared.data;
    let mut engine = Engine::new(config);
    let (first_ts, last_ts) = match data {
        MarketData::Candles(series) => {
            let batch = config.batch.max(1);
            let mut converted = Vec::new();
            for (chunk_no, chunk) in series.bars.chunks(batch).enumerate() {
                let sdk: &[strategy_sdk::Bar] = match &prepared.bars {
                    Some(all) => &all[chunk_no * batch..chunk_no * batch + chunk.len()],
                    None => {
                        converted.clear();
                        converted.extend(chunk.iter().map(sdk_bar));
                        &converted
                    }
                };
                let mut signals = if batch == 1 {
                    strategy
                        .on_candle(&series.instrument, series.timeframe_secs, &sdk[0])?
                        .into_iter()
                        .map(|s| (0, s))
                        .collect()
                } else {
                    strategy.on_candles(&series.instrument, series.timeframe_secs, sdk)?
                }
                .into_iter()
                .peekable();
                for (j, bar) in chunk.iter().enumerate() {
                    let quote = Quote {
                        open: bar.open,
                        high: bar.high,
                        low: bar.low,
                        close: bar.close,
                    };
                    let mine = std::iter::from_fn(|| {
                        signals
                            .next_if(|(idx, _)| *idx as usize == j)
                            .map(|(_, s)| s)
                    });
                    engine.step(bar.ts_ms, &[(series.instrument.as_str(), quote)], mine);
                }
                progress(chunk_no * batch + chunk.len());
            }
            (
                series.bars.first().map(|b| b.ts_ms),
                series.bars.last().map(|b| b.ts_ms),
            )
        }
        MarketData::Chains(chains) => {
            for (n, chain) in chains.iter().enumerate() {
                let signals = strategy.on_option_chain(&sdk_chain(chain))?;
                let legs = chain_quotes(chain);
                let quotes: Vec<(&str, Quote)> =
                    legs.iter().map(|(s, q)| (s.as_str(), *q)).collect();
                engine.step(chain.ts_ms, &quotes, signals.into_iter());
                if n % 64 == 0 {
                    progress(n + 1);
                }
            }
            progress(chains.len());
            (
                chains.first().map(|c| c.ts_ms),
                chains.last().map(|c| c.ts_ms),
            )
        }
    };
    if let Some(ts) = last_ts {
        engine.close_all_at_last(ts, "end of data");
        engine.mark_to_market();
        engine.record_day_end(ts);
    }
    let summary = summarise(strategy, data.len(), &engine, first_ts, last_ts);
    Ok(BacktestResult {
        signals: engine.signals,
        rejected: engine.rejected,
        trades: engine.trades,
        fills: engine.fills,
        equity: engine.equity,
        summary,
    })
}

fn chain_quotes(chain: &OptionChain) -> Vec<(String, Quote)> {
    chain
        .legs()
        .filter(|(_, leg)| leg.last > Decimal::ZERO)
        .map(|(symbol, leg)| {
            (
                symbol,
                Quote {
                    open: leg.last,
                    high: leg.last,
                    low: leg.last,
                    close: leg.last,
                },
            )
        })
        .collect()
}

fn summarise(
    strategy: &dyn StrategyRunner,
    events: usize,
    engine: &Engine<'_>,
    first: Option<i64>,
    last: Option<i64>,
) -> Summary {
    let mut summary = Summary::of(
        (strategy.name(), strategy.version()),
        engine.config,
        &engine.trades,
        &engine.equity,
        (engine.signals.len(), engine.rejected.len()),
        (events, first, last),
    );
    summary.max_drawdown = engine.max_drawdown;
    summary.max_drawdown_pct = engine.max_drawdown_pct;
    summary.exposure_pct = Some(if engine.steps == 0 {
        0.0
    } else {
        engine.exposed as f64 * 100.0 / engine.steps as f64
    });
    summary
}

impl Summary {
    /// The headline numbers of `trades` and the daily `equity` of an account
    /// trading as `config` says: `strategy` is (name, version), `signals` is
    /// (emitted, refused), `span` is (events, first time, last time). The
    /// drawdown is that of the daily equity; a backtest replaces it with its
    /// bar-by-bar figure.
    #[must_use]
    pub fn of(
        strategy: (&str, &str),
        config: &BacktestConfig,
        trades: &[Trade],
        equity: &[EquityPoint],
        signals: (usize, usize),
        span: (usize, Option<i64>, Option<i64>),
    ) -> Self {
        let wins = trades.iter().filter(|t| t.pnl > Decimal::ZERO).count();
        let losses = trades.iter().filter(|t| t.pnl < Decimal::ZERO).count();
        let gross_profit: Decimal = trades
            .iter()
            .map(|t| t.pnl)
            .filter(|p| *p > Decimal::ZERO)
            .sum();
        let gross_loss: Decimal = trades
            .iter()
            .map(|t| t.pnl)
            .filter(|p| *p < Decimal::ZERO)
            .sum();
        let net_pnl = gross_profit + gross_loss;
        let worst = equity.iter().min_by_key(|p| p.drawdown);
        Self {
            strategy: strategy.0.to_owned(),
            strategy_version: strategy.1.to_owned(),
            mode: config.mode,
            qty: Decimal::from(config.qty),
            slippage_bps: config.slippage_bps,
            capital: config.capital,
            square_off: config.square_off_minute.map(format_hhmm),
            events: span.0,
            first_ts: span.1.map(crate::domain::time::format_iso_ist),
            last_ts: span.2.map(crate::domain::time::format_iso_ist),
            signals: signals.0,
            signals_rejected: signals.1,
            trades: trades.len(),
            wins,
            losses,
            win_rate: if trades.is_empty() {
                0.0
            } else {
                wins as f64 / trades.len() as f64
            },
            gross_profit,
            gross_loss,
            net_pnl,
            final_equity: config.capital + net_pnl,
            return_pct: ratio_pct(net_pnl, config.capital),
            max_drawdown: worst.map(|p| p.drawdown).unwrap_or_default(),
            max_drawdown_pct: worst
                .map(|p| ratio_pct(p.drawdown, p.equity - p.drawdown))
                .unwrap_or_default(),
            sharpe: equity_sharpe(config.capital, equity),
            exposure_pct: None,
        }
    }
}

/// Daily equity points of an account from its trades: capital plus the P&L
/// realised up to each day's last exit, with the drawdown from the running peak.
#[must_use]
pub fn daily_equity(capital: Decimal, trades: &[Trade]) -> Vec<EquityPoint> {
    let mut points: Vec<EquityPoint> = Vec::new();
    let (mut equity, mut peak) = (capital, capital);
    let mut sorted: Vec<&Trade> = trades.iter().collect();
    sorted.sort_by_key(|t| t.exit_ts_ms);
    for t in sorted {
        equity += t.pnl;
        peak = peak.max(equity);
        let point = EquityPoint {
            ts_ms: t.exit_ts_ms,
            equity,
            drawdown: equity - peak,
        };
        match points.last_mut() {
            Some(last) if ist_day(last.ts_ms) == ist_day(t.exit_ts_ms) => *last = point,
            _ => points.push(point),
        }
    }
    points
}

/// Annualised Sharpe ratio of the daily returns of `equity`, starting from `capital`.
#[must_use]
pub fn equity_sharpe(capital: Decimal, equity: &[EquityPoint]) -> f64 {
    use rust_decimal::prelude::ToPrimitive;
    let returns: Vec<f64> = std::iter::once(capital)
        .chain(equity.iter().map(|p| p.equity))
        .collect::<Vec<_>>()
        .windows(2)
        .map(|w| {
            if w[0].is_zero() {
                0.0
            } else {
                ((w[1] - w[0]) / w[0]).to_f64().unwrap_or(0.0)
            }
        })
        .collect();
    sharpe(&returns)
}

/// Annualised Sharpe ratio of daily returns; 0 when undefined.
#[must_use]
pub fn sharpe(daily_returns: &[f64]) -> f64 {
    let n = daily_returns.len();
    if n < 2 {
        return 0.0;
    }
    let mean = daily_returns.iter().sum::<f64>() / n as f64;
    let var = daily_returns
        .iter()
        .map(|r| (r - mean).powi(2))
        .sum::<f64>()
        / (n - 1) as f64;
    let sd = var.sqrt();
    if sd > 0.0 {
        mean / sd * 252f64.sqrt()
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests;
