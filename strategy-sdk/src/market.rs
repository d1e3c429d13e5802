//! Market events as a strategy sees them.

/// One OHLCV bar, labelled by its start time (ms since the Unix epoch, UTC).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Bar {
    /// Start of the bar, ms since the Unix epoch (UTC).
    pub ts: i64,
    /// Opening price.
    pub open: f64,
    /// Highest price.
    pub high: f64,
    /// Lowest price.
    pub low: f64,
    /// Closing price.
    pub close: f64,
    /// Traded quantity; 0 where the source has none (an index).
    pub volume: u64,
    /// Open interest at the close; 0 where not applicable.
    pub oi: u64,
}

impl Bar {
    /// High minus low.
    #[must_use]
    pub fn range(&self) -> f64 {
        self.high - self.low
    }

    /// Absolute distance between open and close.
    #[must_use]
    pub fn body(&self) -> f64 {
        (self.close - self.open).abs()
    }

    /// `(high + low + close) / 3`, the price VWAP weights.
    #[must_use]
    pub fn typical_price(&self) -> f64 {
        (self.high + self.low + self.close) / 3.0
    }
}

/// Consecutive bars of one instrument, as handed to [`crate::Strategy::on_candles`]:
/// a view over the batch as it crossed the sandbox wall (one column per field),
/// or over bars in a slice (a native build). Nothing is copied to make it; bar
/// `i` is put together when it is read.
#[derive(Debug, Clone, Copy)]
pub struct Bars<'a>(Repr<'a>);

#[derive(Debug, Clone, Copy)]
enum Repr<'a> {
    Rows(&'a [Bar]),
    Columns(Columns<'a>),
}

/// The columns of a batch, all of one length.
#[derive(Debug, Clone, Copy)]
struct Columns<'a> {
    ts: &'a [i64],
    open: &'a [f64],
    high: &'a [f64],
    low: &'a [f64],
    close: &'a [f64],
    volume: &'a [u64],
    oi: &'a [u64],
}

impl<'a> Bars<'a> {
    /// A view over bars in a slice.
    #[must_use]
    pub const fn rows(bars: &'a [Bar]) -> Self {
        Self(Repr::Rows(bars))
    }

    /// A view over columns (bar `i` is `ts[i]`, `open[i]`, …); `None` when
    /// they differ in length.
    #[must_use]
    #[allow(clippy::too_many_arguments)]
    pub fn columns(
        ts: &'a [i64],
        open: &'a [f64],
        high: &'a [f64],
        low: &'a [f64],
        close: &'a [f64],
        volume: &'a [u64],
        oi: &'a [u64],
    ) -> Option<Self> {
        let n = ts.len();
        [
            open.len(),
            high.len(),
            low.len(),
            close.len(),
            volume.len(),
            oi.len(),
        ]
        .iter()
        .all(|len| *len == n)
        .then_some(Self(Repr::Columns(Columns {
            ts,
            open,
            high,
            low,
            close,
            volume,
            oi,
        })))
    }

    /// How many bars.
    #[must_use]
    pub const fn len(&self) -> usize {
        match &self.0 {
            Repr::Rows(r) => r.len(),
            Repr::Columns(c) => c.ts.len(),
        }
    }

    /// No bars.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bar `i`.
    #[must_use]
    #[inline]
    pub fn get(&self, i: usize) -> Option<Bar> {
        match &self.0 {
            Repr::Rows(r) => r.get(i).copied(),
            Repr::Columns(c) => Some(Bar {
                ts: *c.ts.get(i)?,
                open: *c.open.get(i)?,
                high: *c.high.get(i)?,
                low: *c.low.get(i)?,
                close: *c.close.get(i)?,
                volume: *c.volume.get(i)?,
                oi: *c.oi.get(i)?,
            }),
        }
    }

    /// The bars in order.
    #[must_use]
    pub fn iter(&self) -> BarsIter<'a> {
        match self.0 {
            Repr::Rows(r) => BarsIter(IterRepr::Rows(r.iter())),
            // Zipped slices: one length check for the lot, none per bar.
            Repr::Columns(c) => BarsIter(IterRepr::Columns(
                c.ts.iter()
                    .zip(c.open)
                    .zip(c.high)
                    .zip(c.low)
                    .zip(c.close)
                    .zip(c.volume)
                    .zip(c.oi),
            )),
        }
    }

    /// The closes in order: borrowed when the batch came as columns.
    #[must_use]
    pub fn closes(&self) -> std::borrow::Cow<'a, [f64]> {
        match self.0 {
            Repr::Rows(r) => std::borrow::Cow::Owned(r.iter().map(|b| b.close).collect()),
            Repr::Columns(c) => std::borrow::Cow::Borrowed(c.close),
        }
    }
}

type ColumnsIter<'a> = std::iter::Zip<
    std::iter::Zip<
        std::iter::Zip<
            std::iter::Zip<
                std::iter::Zip<
                    std::iter::Zip<std::slice::Iter<'a, i64>, std::slice::Iter<'a, f64>>,
                    std::slice::Iter<'a, f64>,
                >,
                std::slice::Iter<'a, f64>,
            >,
            std::slice::Iter<'a, f64>,
        >,
        std::slice::Iter<'a, u64>,
    >,
    std::slice::Iter<'a, u64>,
>;

/// The bars of a [`Bars`] in order.
#[derive(Debug, Clone)]
pub struct BarsIter<'a>(IterRepr<'a>);

#[derive(Debug, Clone)]
enum IterRepr<'a> {
    Rows(std::slice::Iter<'a, Bar>),
    Columns(ColumnsIter<'a>),
}

impl Iterator for BarsIter<'_> {
    type Item = Bar;

    #[inline]
    fn next(&mut self) -> Option<Bar> {
        match &mut self.0 {
            IterRepr::Rows(r) => r.next().copied(),
            IterRepr::Columns(c) => {
                c.next()
                    .map(|((((((ts, open), high), low), close), volume), oi)| Bar {
                        ts: *ts,
                        open: *open,
                        high: *high,
                        low: *low,
                        close: *close,
                        volume: *volume,
                        oi: *oi,
                    })
            }
        }
    }

    /// One `match` for the lot, then a loop over one kind (`for_each` and the
    /// adapters that end in it go through here).
    #[inline]
    fn fold<B, F: FnMut(B, Bar) -> B>(self, init: B, mut f: F) -> B {
        match self.0 {
            IterRepr::Rows(r) => r.fold(init, |acc, b| f(acc, *b)),
            IterRepr::Columns(c) => c.fold(
                init,
                |acc, ((((((ts, open), high), low), close), volume), oi)| {
                    f(
                        acc,
                        Bar {
                            ts: *ts,
                            open: *open,
                            high: *high,
                            low: *low,
                            close: *close,
                            volume: *volume,
                            oi: *oi,
                        },
                    )
                },
            ),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.0 {
            IterRepr::Rows(r) => r.size_hint(),
            IterRepr::Columns(c) => c.size_hint(),
        }
    }
}

impl ExactSizeIterator for BarsIter<'_> {}

/// A bar of one instrument, as handed to [`crate::Strategy::on_candle`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candle<'a> {
    /// Trading symbol, e.g. `NIFTY` or `RELIANCE`.
    pub instrument: &'a str,
    /// Bar length in seconds.
    pub timeframe_secs: u32,
    /// The bar itself.
    pub bar: Bar,
}

impl std::ops::Deref for Candle<'_> {
    type Target = Bar;
    fn deref(&self) -> &Bar {
        &self.bar
    }
}

/// A quote update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tick<'a> {
    /// Trading symbol.
    pub instrument: &'a str,
    /// Exchange time, ms since the Unix epoch (UTC).
    pub ts: i64,
    /// Last traded price.
    pub last: f64,
    /// Best bid.
    pub bid: f64,
    /// Best ask.
    pub ask: f64,
    /// Cumulative traded quantity for the day.
    pub volume: u64,
    /// Open interest.
    pub open_interest: u64,
}

/// Call or put.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OptionKind {
    /// Call.
    Ce,
    /// Put.
    Pe,
}

impl OptionKind {
    /// `"CE"` or `"PE"`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ce => "CE",
            Self::Pe => "PE",
        }
    }
}

/// One side of one strike.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct OptionLeg {
    /// Last traded price.
    pub last: f64,
    /// Open interest, in contracts.
    pub oi: u64,
    /// Traded quantity.
    pub volume: u64,
    /// Its greeks, where the source gives them (Upstox's chain and feed); `None` from a
    /// backtest's file, Kite and OpenAlgo.
    pub greeks: Option<Greeks>,
}

/// An option's greeks as its source computes them.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Greeks {
    /// Change in price per point of the underlying.
    pub delta: f64,
    /// Change in delta per point of the underlying.
    pub gamma: f64,
    /// Change in price per day.
    pub theta: f64,
    /// Change in price per point of volatility.
    pub vega: f64,
    /// Implied volatility, in percent.
    pub iv: f64,
}

/// Both sides of one strike.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StrikeRow {
    /// Strike price.
    pub strike: f64,
    /// The call, if quoted.
    pub ce: Option<OptionLeg>,
    /// The put, if quoted.
    pub pe: Option<OptionLeg>,
}

/// All strikes of one expiry, sorted by strike.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpiryChain {
    /// Expiry date, `YYYY-MM-DD`.
    pub expiry: String,
    /// Strikes in ascending order.
    pub strikes: Vec<StrikeRow>,
}

/// A snapshot of an option chain, nearest expiry first.
#[derive(Debug, Clone, PartialEq)]
pub struct OptionChain {
    /// The underlying's symbol, e.g. `NIFTY`.
    pub underlying: String,
    /// Snapshot time, ms since the Unix epoch (UTC).
    pub ts: i64,
    /// Spot price of the underlying.
    pub spot: f64,
    /// Expiries, nearest first.
    pub expiries: Vec<ExpiryChain>,
}

impl OptionChain {
    /// The nearest expiry, if the snapshot has any.
    #[must_use]
    pub fn nearest(&self) -> Option<&ExpiryChain> {
        self.expiries.first()
    }
}

impl ExpiryChain {
    /// The strike closest to `spot` (the lower one on an exact tie).
    #[must_use]
    pub fn atm(&self, spot: f64) -> Option<&StrikeRow> {
        self.strikes.iter().min_by(|a, b| {
            (a.strike - spot)
                .abs()
                .total_cmp(&(b.strike - spot).abs())
                .then(a.strike.total_cmp(&b.strike))
        })
    }

    /// Σ put OI − Σ call OI over every strike.
    #[must_use]
    pub fn net_oi(&self) -> i64 {
        self.strikes.iter().fold(0i64, |acc, row| {
            let pe = row.pe.map_or(0, |l| l.oi);
            let ce = row.ce.map_or(0, |l| l.oi);
            acc.saturating_add(i64::try_from(pe).unwrap_or(i64::MAX))
                .saturating_sub(i64::try_from(ce).unwrap_or(i64::MAX))
        })
    }
}

/// A timer fired by the host (`session-open`, `session-close`, `minute`, …).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timer<'a> {
    /// When it fired, ms since the Unix epoch (UTC).
    pub ts: i64,
    /// Which timer.
    pub name: &'a str,
}

/// NSE/OpenAlgo option symbol: `NIFTY28MAR2420800CE` (underlying, expiry as
/// DDMMMYY, strike without a trailing `.0`, CE/PE). `expiry` is `YYYY-MM-DD`;
/// `None` when it is not.
#[must_use]
pub fn option_symbol(
    underlying: &str,
    expiry: &str,
    strike: f64,
    kind: OptionKind,
) -> Option<String> {
    const MONTHS: [&str; 12] = [
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ];
    let mut parts = expiry.split('-');
    let year = parts.next()?;
    let month: usize = parts.next()?.parse().ok()?;
    let day = parts.next()?;
    if parts.next().is_some() || year.len() != 4 || day.len() != 2 {
        return None;
    }
    let month = MONTHS.get(month.checked_sub(1)?)?;
    let strike = if strike.fract() == 0.0 {
        format!("{strike:.0}")
    } else {
        format!("{strike}")
    };
    Some(format!(
        "{underlying}{day}{month}{}{strike}{}",
        &year[2..],
        kind.as_str()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_symbols_follow_the_openalgo_format() {
        let cases = [
            (
                "NIFTY",
                "2024-03-28",
                20800.0,
                OptionKind::Ce,
                Some("NIFTY28MAR2420800CE"),
            ),
            (
                "HEROMOTOCO",
                "2025-08-28",
                5100.0,
                OptionKind::Pe,
                Some("HEROMOTOCO28AUG255100PE"),
            ),
            (
                "X",
                "2025-08-28",
                102.5,
                OptionKind::Pe,
                Some("X28AUG25102.5PE"),
            ),
            ("X", "2025-13-28", 100.0, OptionKind::Pe, None),
            ("X", "28-08-2025", 100.0, OptionKind::Pe, None),
        ];
        for (u, e, s, k, want) in cases {
            assert_eq!(option_symbol(u, e, s, k).as_deref(), want, "{u} {e} {s}");
        }
    }

    #[test]
    fn atm_picks_nearest_strike_and_lower_on_tie() {
        let row = |strike| StrikeRow {
            strike,
            ce: None,
            pe: None,
        };
        let chain = ExpiryChain {
            expiry: "2025-08-28".into(),
            strikes: vec![row(100.0), row(110.0), row(120.0)],
        };
        assert_eq!(chain.atm(111.0).map(|r| r.strike), Some(110.0));
        assert_eq!(chain.atm(115.0).map(|r| r.strike), Some(110.0));
        assert_eq!(chain.atm(119.0).map(|r| r.strike), Some(120.0));
        assert_eq!(
            ExpiryChain {
                expiry: String::new(),
                strikes: vec![]
            }
            .atm(1.0),
            None
        );
    }

    #[test]
    fn net_oi_is_puts_minus_calls() {
        let leg = |oi| {
            Some(OptionLeg {
                last: 1.0,
                oi,
                volume: 0,
                greeks: None,
            })
        };
        let chain = ExpiryChain {
            expiry: "2025-08-28".into(),
            strikes: vec![
                StrikeRow {
                    strike: 1.0,
                    ce: leg(500),
                    pe: leg(1500),
                },
                StrikeRow {
                    strike: 2.0,
                    ce: leg(3000),
                    pe: None,
                },
            ],
        };
        assert_eq!(chain.net_oi(), 1500 - 3500);
    }
}

#[cfg(test)]
mod bars_tests {
    use super::{Bar, Bars};

    fn bar(i: u32) -> Bar {
        let f = f64::from(i);
        Bar {
            ts: i64::from(i) * 60_000,
            open: 100.0 + f,
            high: 101.0 + f,
            low: 99.0 + f,
            close: 100.5 + f,
            volume: u64::from(i) * 10,
            oi: u64::from(i),
        }
    }

    #[test]
    fn a_view_over_columns_reads_as_the_bars_they_came_from() {
        let rows: Vec<Bar> = (0..5).map(bar).collect();
        let col = |f: fn(&Bar) -> f64| rows.iter().map(f).collect::<Vec<f64>>();
        let (ts, volume, oi): (Vec<i64>, Vec<u64>, Vec<u64>) = (
            rows.iter().map(|b| b.ts).collect(),
            rows.iter().map(|b| b.volume).collect(),
            rows.iter().map(|b| b.oi).collect(),
        );
        let (open, high, low, close) = (
            col(|b| b.open),
            col(|b| b.high),
            col(|b| b.low),
            col(|b| b.close),
        );
        let columns =
            Bars::columns(&ts, &open, &high, &low, &close, &volume, &oi).expect("equal lengths");
        for view in [columns, Bars::rows(&rows)] {
            assert_eq!(view.len(), 5);
            assert_eq!(view.iter().collect::<Vec<_>>(), rows, "next()");
            let mut folded = Vec::new();
            view.iter().for_each(|b| folded.push(b));
            assert_eq!(folded, rows, "fold()");
            assert_eq!(view.iter().len(), 5);
            assert_eq!(view.get(3), Some(rows[3]));
            assert_eq!(view.get(5), None);
            assert_eq!(&*view.closes(), &close[..]);
        }
        assert!(
            Bars::columns(&ts, &open, &high[..4], &low, &close, &volume, &oi).is_none(),
            "ragged columns are refused"
        );
        assert!(Bars::rows(&[]).is_empty());
    }
}
