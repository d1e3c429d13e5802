//! Event-driven backtest: replay a data file through a strategy and trade its
//! signals the way a careful trader would on paper.
//!
//! Rules, in the order they apply on each bar:
//! 1. With `square_off`, a position still open when a day ends before the
//!    square-off time is closed at that day's last close.
//! 2. Orders from the previous bar's signals fill at this bar's open.
//! 3. With `square_off`, an open position is closed at the open of the first
//!    bar starting at or after that time; entries are refused from then on.
//! 4. A stop-loss or target from the entry signal is checked against the bar's
//!    range (stop first, the conservative assumption when both are touched);
//!    a gap through the level fills at the open.
//! 5. This bar's signals become orders for the next bar. In `long` mode a buy
//!    opens one unit and a sell closes it; in `short` mode the mirror; in
//!    `both` a buy goes to +1 and a sell to −1, reversing if needed.
//!
//! Positions still open after the last bar are closed at its close.

mod report;

use rust_decimal::Decimal;
use serde::Serialize;

use crate::engine::{Side, Signal, StrategyRunner, sdk_bar, sdk_chain};
use crate::domain::time::{format_hhmm, ist_day, ist_minute_of_day};
use crate::market::{MarketData, OptionChain};
use crate::sandbox::SandboxError;

pub use report::{write_outputs, write_report_html};

pub use crate::domain::PositionMode;

/// How to run a backtest.
#[derive(Debug, Clone)]
pub struct BacktestConfig {
    /// Which positions signals may open.
    pub mode: PositionMode,
    /// Units bought or sold per position.
    pub qty: Decimal,
    /// Starting capital, for the equity curve and returns.
    pub capital: Decimal,
    /// Intraday square-off time (IST minutes since midnight); `None` carries positions overnight.
    pub square_off_minute: Option<u32>,
    /// Bars per strategy call: 1 calls `on-candle` per bar, more uses the batched entry point.
    pub batch: usize,
}

impl Default for BacktestConfig {
    fn default() -> Self {
        Self { mode: PositionMode::Long, qty: Decimal::ONE, capital: Decimal::from(1_000_000), square_off_minute: None, batch: 4096 }
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
    /// Why it was closed: `signal`, `stop-loss`, `target`, `square-off`, `end of day`, `end of data`.
    pub exit_reason: String,
}

/// Equity at the end of a trading day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EquityPoint {
    /// Time of the day's last bar.
    pub ts_ms: i64,
    /// Capital plus realised and unrealised P&L.
    pub equity: Decimal,
    /// Distance below the running peak (≤ 0).
    pub drawdown: Decimal,
}

/// The numbers a strategy author looks at first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Strategy name.
    pub strategy: String,
    /// Strategy version.
    pub strategy_version: String,
    /// Position mode.
    pub mode: PositionMode,
    /// Units per position.
    pub qty: Decimal,
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

#[derive(Debug, Clone)]
struct Order {
    want: i8,
    stop_loss: Option<Decimal>,
    target: Option<Decimal>,
}

#[derive(Debug, Clone)]
struct Book {
    instrument: String,
    position: i8,
    entry_price: Decimal,
    entry_ts_ms: i64,
    stop_loss: Option<Decimal>,
    target: Option<Decimal>,
    pending: Option<Order>,
    last: Option<Decimal>,
}

struct Engine<'a> {
    config: &'a BacktestConfig,
    books: Vec<Book>,
    trades: Vec<Trade>,
    signals: Vec<SignalRecord>,
    rejected: Vec<String>,
    realised: Decimal,
    peak: Decimal,
    max_drawdown: Decimal,
    max_drawdown_pct: f64,
    equity: Vec<EquityPoint>,
    day: Option<i64>,
    last_ts: i64,
}

impl<'a> Engine<'a> {
    fn new(config: &'a BacktestConfig) -> Self {
        Self {
            config,
            books: Vec::new(),
            trades: Vec::new(),
            signals: Vec::new(),
            rejected: Vec::new(),
            realised: Decimal::ZERO,
            peak: config.capital,
            max_drawdown: Decimal::ZERO,
            max_drawdown_pct: 0.0,
            equity: Vec::new(),
            day: None,
            last_ts: 0,
        }
    }

    fn book(&mut self, instrument: &str) -> usize {
        if let Some(i) = self.books.iter().position(|b| b.instrument == instrument) {
            return i;
        }
        self.books.push(Book {
            instrument: instrument.to_owned(),
            position: 0,
            entry_price: Decimal::ZERO,
            entry_ts_ms: 0,
            stop_loss: None,
            target: None,
            pending: None,
            last: None,
        });
        self.books.len() - 1
    }

    /// Move book `i` to position `want` at `price`, recording the closed trade if any.
    fn trade_to(&mut self, i: usize, want: i8, price: Decimal, ts_ms: i64, reason: &str, order: Option<&Order>) {
        let qty = self.config.qty;
        let book = &mut self.books[i];
        if book.position == want {
            return;
        }
        if book.position != 0 {
            let direction = Decimal::from(book.position);
            let pnl = (price - book.entry_price) * qty * direction;
            self.realised += pnl;
            self.trades.push(Trade {
                instrument: book.instrument.clone(),
                entry_ts_ms: book.entry_ts_ms,
                exit_ts_ms: ts_ms,
                side: if book.position > 0 { TradeSide::Long } else { TradeSide::Short },
                qty,
                entry_price: book.entry_price,
                exit_price: price,
                pnl,
                exit_reason: reason.to_owned(),
            });
        }
        book.position = want;
        book.stop_loss = None;
        book.target = None;
        if want != 0 {
            book.entry_price = price;
            book.entry_ts_ms = ts_ms;
            if let Some(o) = order {
                book.stop_loss = o.stop_loss;
                book.target = o.target;
            }
        }
    }

    fn close_all_at_last(&mut self, ts_ms: i64, reason: &str) {
        for i in 0..self.books.len() {
            if let (true, Some(last)) = (self.books[i].position != 0, self.books[i].last) {
                self.trade_to(i, 0, last, ts_ms, reason, None);
            }
            self.books[i].pending = None;
        }
    }

    /// One event time: `quotes` are the prices of every instrument quoted now.
    fn step(&mut self, ts_ms: i64, quotes: &[(&str, Quote)], signals: impl Iterator<Item = strategy_sdk::Signal>) {
        let today = ist_day(ts_ms);
        let minute = ist_minute_of_day(ts_ms);
        if self.day.is_some_and(|d| d != today) {
            if self.config.square_off_minute.is_some() {
                // The day ended before square-off time (a half day, or data that stops early).
                self.close_all_at_last(self.last_ts, "end of day");
            }
            self.record_day_end(self.last_ts);
        }
        self.day = Some(today);
        let squaring_off = self.config.square_off_minute.is_some_and(|sq| minute >= sq);

        for i in 0..self.books.len() {
            let Some(q) = quotes.iter().find(|(name, _)| *name == self.books[i].instrument).map(|(_, q)| *q) else { continue };
            if let Some(order) = self.books[i].pending.take() {
                self.trade_to(i, order.want, q.open, ts_ms, "signal", Some(&order));
            }
            if squaring_off && self.books[i].position != 0 {
                let reason = format!("square-off {}", self.config.square_off_minute.map(format_hhmm).unwrap_or_default());
                self.trade_to(i, 0, q.open, ts_ms, &reason, None);
            }
            self.check_exits(i, ts_ms, q);
            self.books[i].last = Some(q.close);
        }

        for s in signals {
            self.take_signal(ts_ms, s, quotes, squaring_off);
        }
        self.last_ts = ts_ms;
        self.mark_to_market();
    }

    fn check_exits(&mut self, i: usize, ts_ms: i64, q: Quote) {
        let book = &self.books[i];
        let exit = match book.position {
            1 => match (book.stop_loss, book.target) {
                (Some(stop), _) if q.low <= stop => Some((q.open.min(stop), "stop-loss")),
                (_, Some(target)) if q.high >= target => Some((q.open.max(target), "target")),
                _ => None,
            },
            -1 => match (book.stop_loss, book.target) {
                (Some(stop), _) if q.high >= stop => Some((q.open.max(stop), "stop-loss")),
                (_, Some(target)) if q.low <= target => Some((q.open.min(target), "target")),
                _ => None,
            },
            _ => None,
        };
        if let Some((price, reason)) = exit {
            self.trade_to(i, 0, price, ts_ms, reason, None);
        }
    }

    fn take_signal(&mut self, ts_ms: i64, s: strategy_sdk::Signal, quotes: &[(&str, Quote)], squaring_off: bool) {
        let signal = match Signal::from_strategy(ts_ms, s) {
            Ok(signal) => signal,
            Err(reason) => {
                self.rejected.push(format!("{}: {reason}", crate::domain::time::format_iso_ist(ts_ms)));
                return;
            }
        };
        let price = quotes.iter().find(|(n, _)| *n == signal.instrument).map(|(_, q)| q.close);
        let i = self.book(&signal.instrument);
        let book = &self.books[i];
        let current = book.pending.as_ref().map_or(book.position, |o| o.want);
        let mut want = match (signal.side, self.config.mode) {
            (Side::Exit, _) => 0,
            (Side::Buy, PositionMode::Long | PositionMode::Both) => 1,
            (Side::Buy, PositionMode::Short) => if current < 0 { 0 } else { current },
            (Side::Sell, PositionMode::Short | PositionMode::Both) => -1,
            (Side::Sell, PositionMode::Long) => if current > 0 { 0 } else { current },
        };
        if squaring_off && want != 0 {
            // After square-off time only the closing half of a signal is kept.
            want = if current != 0 && want.signum() != current.signum() { 0 } else { current };
        }
        if want != current {
            self.books[i].pending = Some(Order { want, stop_loss: signal.stop_loss, target: signal.target });
        }
        self.signals.push(SignalRecord { signal, price });
    }

    fn open_equity(&self) -> Decimal {
        let qty = self.config.qty;
        let unrealised: Decimal = self
            .books
            .iter()
            .filter(|b| b.position != 0)
            .filter_map(|b| b.last.map(|last| (last - b.entry_price) * qty * Decimal::from(b.position)))
            .sum();
        self.config.capital + self.realised + unrealised
    }

    fn mark_to_market(&mut self) {
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
        self.equity.push(EquityPoint { ts_ms, equity, drawdown: equity - self.peak });
    }
}

fn ratio_pct(num: Decimal, den: Decimal) -> f64 {
    use rust_decimal::prelude::ToPrimitive;
    if den.is_zero() { 0.0 } else { (num / den * Decimal::ONE_HUNDRED).to_f64().unwrap_or(0.0) }
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
    mut progress: impl FnMut(usize),
) -> Result<BacktestResult, SandboxError> {
    let mut engine = Engine::new(config);
    let (first_ts, last_ts) = match data {
        MarketData::Candles(series) => {
            let batch = config.batch.max(1);
            let mut sdk = Vec::with_capacity(batch.min(series.bars.len()));
            for (chunk_no, chunk) in series.bars.chunks(batch).enumerate() {
                sdk.clear();
                sdk.extend(chunk.iter().map(sdk_bar));
                let mut signals = if batch == 1 {
                    strategy.on_candle(&series.instrument, series.timeframe_secs, &sdk[0])?.into_iter().map(|s| (0, s)).collect()
                } else {
                    strategy.on_candles(&series.instrument, series.timeframe_secs, &sdk)?
                }
                .into_iter()
                .peekable();
                for (j, bar) in chunk.iter().enumerate() {
                    let quote = Quote { open: bar.open, high: bar.high, low: bar.low, close: bar.close };
                    let mine = std::iter::from_fn(|| signals.next_if(|(idx, _)| *idx as usize == j).map(|(_, s)| s));
                    engine.step(bar.ts_ms, &[(series.instrument.as_str(), quote)], mine);
                }
                progress(chunk_no * batch + chunk.len());
            }
            (series.bars.first().map(|b| b.ts_ms), series.bars.last().map(|b| b.ts_ms))
        }
        MarketData::Chains(chains) => {
            for (n, chain) in chains.iter().enumerate() {
                let signals = strategy.on_option_chain(&sdk_chain(chain))?;
                let legs = chain_quotes(chain);
                let quotes: Vec<(&str, Quote)> = legs.iter().map(|(s, q)| (s.as_str(), *q)).collect();
                engine.step(chain.ts_ms, &quotes, signals.into_iter());
                if n % 64 == 0 {
                    progress(n + 1);
                }
            }
            progress(chains.len());
            (chains.first().map(|c| c.ts_ms), chains.last().map(|c| c.ts_ms))
        }
    };
    if let Some(ts) = last_ts {
        engine.close_all_at_last(ts, "end of data");
        engine.mark_to_market();
        engine.record_day_end(ts);
    }
    let summary = summarise(strategy, data.len(), &engine, first_ts, last_ts);
    Ok(BacktestResult { signals: engine.signals, rejected: engine.rejected, trades: engine.trades, equity: engine.equity, summary })
}

fn chain_quotes(chain: &OptionChain) -> Vec<(String, Quote)> {
    chain
        .legs()
        .filter(|(_, leg)| leg.last > Decimal::ZERO)
        .map(|(symbol, leg)| (symbol, Quote { open: leg.last, high: leg.last, low: leg.last, close: leg.last }))
        .collect()
}

fn summarise(strategy: &dyn StrategyRunner, events: usize, engine: &Engine<'_>, first: Option<i64>, last: Option<i64>) -> Summary {
    use rust_decimal::prelude::ToPrimitive;
    let config = engine.config;
    let trades = &engine.trades;
    let wins = trades.iter().filter(|t| t.pnl > Decimal::ZERO).count();
    let losses = trades.iter().filter(|t| t.pnl < Decimal::ZERO).count();
    let gross_profit: Decimal = trades.iter().map(|t| t.pnl).filter(|p| *p > Decimal::ZERO).sum();
    let gross_loss: Decimal = trades.iter().map(|t| t.pnl).filter(|p| *p < Decimal::ZERO).sum();
    let net_pnl = gross_profit + gross_loss;
    let returns: Vec<f64> = std::iter::once(config.capital)
        .chain(engine.equity.iter().map(|p| p.equity))
        .collect::<Vec<_>>()
        .windows(2)
        .map(|w| if w[0].is_zero() { 0.0 } else { ((w[1] - w[0]) / w[0]).to_f64().unwrap_or(0.0) })
        .collect();
    Summary {
        strategy: strategy.name().to_owned(),
        strategy_version: strategy.version().to_owned(),
        mode: config.mode,
        qty: config.qty,
        capital: config.capital,
        square_off: config.square_off_minute.map(format_hhmm),
        events,
        first_ts: first.map(crate::domain::time::format_iso_ist),
        last_ts: last.map(crate::domain::time::format_iso_ist),
        signals: engine.signals.len(),
        signals_rejected: engine.rejected.len(),
        trades: trades.len(),
        wins,
        losses,
        win_rate: if trades.is_empty() { 0.0 } else { wins as f64 / trades.len() as f64 },
        gross_profit,
        gross_loss,
        net_pnl,
        final_equity: config.capital + net_pnl,
        return_pct: ratio_pct(net_pnl, config.capital),
        max_drawdown: engine.max_drawdown,
        max_drawdown_pct: engine.max_drawdown_pct,
        sharpe: sharpe(&returns),
    }
}

/// Annualised Sharpe ratio of daily returns; 0 when undefined.
#[must_use]
pub fn sharpe(daily_returns: &[f64]) -> f64 {
    let n = daily_returns.len();
    if n < 2 {
        return 0.0;
    }
    let mean = daily_returns.iter().sum::<f64>() / n as f64;
    let var = daily_returns.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let sd = var.sqrt();
    if sd > 0.0 { mean / sd * 252f64.sqrt() } else { 0.0 }
}

#[cfg(test)]
mod tests;
