//! Market data: the first box of the pipeline. Candles and option-chain
//! snapshots, read from CSV files or generated, or built from ticks that a
//! broker pushes over its WebSocket ([`feed`]), filtered to the NSE session;
//! what a broker sent is recorded ([`recorder`]) so it can be replayed.
//!
//! Prices are exact decimals here; they become `f64` only when handed to a
//! strategy for its indicators.

pub use crate::domain::time as clock;
pub mod csv;
pub mod feed;
pub mod guard;
pub mod parquet;
pub mod recorder;
pub mod session;
pub mod source;
pub mod synthetic;

use rust_decimal::Decimal;

/// One OHLCV bar, labelled by its start (ms since the Unix epoch, UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bar {
    /// Start of the bar.
    pub ts_ms: i64,
    /// Opening price.
    pub open: Decimal,
    /// Highest price.
    pub high: Decimal,
    /// Lowest price.
    pub low: Decimal,
    /// Closing price.
    pub close: Decimal,
    /// Traded quantity (0 where the source has none).
    pub volume: u64,
    /// Open interest (0 where not applicable).
    pub oi: u64,
}

/// Consecutive bars of one instrument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CandleSeries {
    /// Trading symbol.
    pub instrument: String,
    /// Bar length in seconds.
    pub timeframe_secs: u32,
    /// Bars in time order.
    pub bars: Vec<Bar>,
}

/// One side of one strike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionLeg {
    /// Last traded price.
    pub last: Decimal,
    /// Open interest.
    pub oi: u64,
    /// Traded quantity.
    pub volume: u64,
    /// Its greeks, where the source gives them (Upstox).
    pub greeks: Option<Greeks>,
}

/// An option's greeks as its source computes them: delta and gamma per point of the
/// underlying, theta per day, vega per point of volatility, `iv` in percent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Greeks {
    /// Change in price per point of the underlying.
    pub delta: Decimal,
    /// Change in delta per point of the underlying.
    pub gamma: Decimal,
    /// Change in price per day.
    pub theta: Decimal,
    /// Change in price per point of volatility.
    pub vega: Decimal,
    /// Implied volatility, percent.
    pub iv: Decimal,
}

impl Greeks {
    /// From a source's floating-point numbers; `None` when any is not a finite number.
    #[must_use]
    pub fn from_f64(delta: f64, gamma: f64, theta: f64, vega: f64, iv: f64) -> Option<Self> {
        use rust_decimal::prelude::FromPrimitive as _;
        let d = |v: f64| {
            v.is_finite()
                .then(|| Decimal::from_f64(v))
                .flatten()
                .map(|d| d.round_dp(6).normalize())
        };
        Some(Self {
            delta: d(delta)?,
            gamma: d(gamma)?,
            theta: d(theta)?,
            vega: d(vega)?,
            iv: d(iv)?,
        })
    }
}

/// Both sides of one strike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StrikeRow {
    /// Strike price.
    pub strike: Decimal,
    /// The call, if quoted.
    pub ce: Option<OptionLeg>,
    /// The put, if quoted.
    pub pe: Option<OptionLeg>,
}

/// All strikes of one expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiryChain {
    /// `YYYY-MM-DD`.
    pub expiry: String,
    /// Strikes, ascending.
    pub strikes: Vec<StrikeRow>,
}

/// An option-chain snapshot, expiries nearest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionChain {
    /// Underlying symbol.
    pub underlying: String,
    /// Snapshot time.
    pub ts_ms: i64,
    /// Spot price of the underlying.
    pub spot: Decimal,
    /// Expiries, nearest first.
    pub expiries: Vec<ExpiryChain>,
}

impl OptionChain {
    /// Every quoted option in the snapshot as `(symbol, leg)`, symbols in the
    /// OpenAlgo format the strategies use.
    pub fn legs(&self) -> impl Iterator<Item = (String, OptionLeg)> + '_ {
        use strategy_sdk::OptionKind;
        self.expiries.iter().flat_map(move |e| {
            e.strikes.iter().flat_map(move |row| {
                let strike = f64::try_from(row.strike).unwrap_or(f64::NAN);
                [(OptionKind::Ce, row.ce), (OptionKind::Pe, row.pe)]
                    .into_iter()
                    .filter_map(move |(kind, leg)| {
                        let symbol =
                            strategy_sdk::option_symbol(&self.underlying, &e.expiry, strike, kind)?;
                        Some((symbol, leg?))
                    })
            })
        })
    }
}

/// What a data file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarketData {
    /// Bars of one instrument.
    Candles(CandleSeries),
    /// Option-chain snapshots in time order.
    Chains(Vec<OptionChain>),
}

impl MarketData {
    /// Number of events (bars or snapshots).
    #[must_use]
    pub fn len(&self) -> usize {
        match self {
            Self::Candles(s) => s.bars.len(),
            Self::Chains(c) => c.len(),
        }
    }

    /// True when there is nothing to replay.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
