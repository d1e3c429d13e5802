//! A deterministic market, for demos, tests and benchmarks: the same seed
//! always gives the same bars and chains, on every machine.
//!
//! Prices follow a random walk whose drift switches regime every so often, so
//! trend and mean-reversion strategies both find something to do; option
//! open interest follows a sentiment process, so OI strategies do too.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use rust_decimal::Decimal;

use super::clock::{days_from_civil, format_iso_ist, ist_to_epoch_ms, weekday};
use super::{Bar, CandleSeries, ExpiryChain, OptionChain, OptionLeg, StrikeRow};

/// SplitMix64: tiny, fast, and the same everywhere.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(f64::MIN_POSITIVE);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct CandleSpec {
    /// Symbol of the series.
    pub instrument: String,
    /// Seed; same seed, same series.
    pub seed: u64,
    /// First trading day `(year, month, day)`; weekends are skipped.
    pub start: (i64, u32, u32),
    /// Number of trading days.
    pub days: u32,
    /// Price at the first open.
    pub start_price: f64,
    /// Annualised volatility, e.g. 0.15.
    pub annual_vol: f64,
    /// Generate volume (an index has none).
    pub with_volume: bool,
}

impl CandleSpec {
    /// A NIFTY-like index: 21,700 at 15% volatility, no volume.
    #[must_use]
    pub fn nifty_like(seed: u64, days: u32) -> Self {
        Self {
            instrument: "NIFTY".into(),
            seed,
            start: (2024, 1, 1),
            days,
            start_price: 21_700.0,
            annual_vol: 0.15,
            with_volume: false,
        }
    }
}

/// Bars per NSE day (09:15..15:29).
pub const BARS_PER_DAY: u32 = 375;
const SESSION_OPEN_MINUTE: u32 = 555;

fn to_tick(price: f64) -> Decimal {
    // 0.05 is the NSE tick for most instruments.
    let ticks = (price / 0.05).round().max(1.0) as i64;
    Decimal::new(ticks * 5, 2)
}

/// Trading days from `start`: the weekdays NSE's bundled calendar gives a regular
/// session (its holidays, and the short special sessions, have no synthetic bars).
fn trading_days(start: (i64, u32, u32), days: u32) -> impl Iterator<Item = i64> {
    static NSE: std::sync::OnceLock<crate::domain::calendar::Calendar> = std::sync::OnceLock::new();
    let calendar = NSE.get_or_init(crate::domain::calendar::Calendar::nse);
    let first = days_from_civil(start.0, start.1, start.2);
    (first..)
        .filter(|d| weekday(*d) < 5 && calendar.hours(*d) == Some(crate::domain::calendar::REGULAR))
        .take(days as usize)
}

/// Generate one-minute bars.
#[must_use]
pub fn candles(spec: &CandleSpec) -> CandleSeries {
    let mut rng = Rng::new(spec.seed);
    let sigma = spec.annual_vol / (252.0f64 * BARS_PER_DAY as f64).sqrt();
    let mut price = spec.start_price;
    let mut drift = 0.0;
    let mut bars = Vec::with_capacity((spec.days * BARS_PER_DAY) as usize);
    for day in trading_days(spec.start, spec.days) {
        let (y, m, d) = super::clock::civil_from_days(day);
        price *= 1.0 + sigma * 3.0 * rng.normal(); // overnight gap
        for minute in 0..BARS_PER_DAY {
            // Trends that last an hour or two and are small next to the noise, as on a
            // real index: enough for trend and mean-reversion rules to find something.
            if rng.unit() < 1.0 / 120.0 {
                drift = sigma * 0.08 * rng.normal();
            }
            let open = price;
            let close = open * (1.0 + drift + sigma * rng.normal());
            let wick = open * sigma * 0.5;
            let high = open.max(close) + wick * rng.unit();
            let low = open.min(close) - wick * rng.unit();
            price = close;
            let volume = if spec.with_volume {
                500 + (rng.unit() * 20_000.0) as u64
            } else {
                0
            };
            let (open, high, low, close) =
                (to_tick(open), to_tick(high), to_tick(low), to_tick(close));
            bars.push(Bar {
                ts_ms: ist_to_epoch_ms(y, m, d, SESSION_OPEN_MINUTE + minute, 0),
                open,
                high: high.max(open).max(close),
                low: low.min(open).min(close),
                close,
                volume,
                oi: 0,
            });
        }
    }
    CandleSeries {
        instrument: spec.instrument.clone(),
        timeframe_secs: 60,
        bars,
    }
}

/// Option chains on an underlying series: at every `every_n_bars`-th bar a
/// snapshot of the weekly (next Thursday) and monthly expiries, 11 strikes
/// each side of the first spot of the day.
#[must_use]
pub fn option_chains(
    underlying: &CandleSeries,
    seed: u64,
    every_n_bars: usize,
) -> Vec<OptionChain> {
    let mut rng = Rng::new(seed ^ 0x0C0C);
    let mut sentiment = 0.0f64;
    let mut chains = Vec::new();
    let mut day_strikes: (i64, Vec<f64>) = (i64::MIN, Vec::new());
    for bar in underlying.bars.iter().step_by(every_n_bars.max(1)) {
        let spot = f64::try_from(bar.close).unwrap_or(0.0);
        let day = super::clock::ist_day(bar.ts_ms);
        if day != day_strikes.0 {
            let step = strike_step(spot);
            let atm = (spot / step).round() * step;
            day_strikes = (day, (-10..=10).map(|i| atm + f64::from(i) * step).collect());
        }
        // Mean-reverting sentiment with occasional jumps: its sign decides who writes.
        sentiment += -0.05 * sentiment
            + 0.08 * rng.normal()
            + if rng.unit() < 0.01 { rng.normal() } else { 0.0 };
        // NSE's weekly index expiry: Thursdays, Tuesdays from September 2025.
        let weekly = next_weekday(day, crate::domain::calendar::index_expiry_weekday(day));
        let expiries = [weekly, weekly + 28];
        let chain_expiries = expiries
            .iter()
            .enumerate()
            .map(|(e, expiry)| {
                let t_years = ((expiry - day) as f64 + 0.5) / 365.0;
                let strikes = day_strikes
                    .1
                    .iter()
                    .map(|k| {
                        let time_value = spot
                            * 0.15
                            * t_years.sqrt()
                            * 0.4
                            * (-((k - spot) / (spot * 0.03)).powi(2)).exp();
                        let near = (-((k - spot) / (spot * 0.02)).powi(2)).exp();
                        let base = 2_000.0 * near / (1.0 + e as f64);
                        let pe_oi = base * (1.0 + sentiment.max(0.0) * 2.0) + rng.unit() * 50.0;
                        let ce_oi = base * (1.0 + (-sentiment).max(0.0) * 2.0) + rng.unit() * 50.0;
                        let leg = |price: f64, oi: f64| OptionLeg {
                            last: to_tick(price + time_value),
                            oi: oi as u64,
                            volume: (oi * 0.1) as u64,
                            greeks: None,
                        };
                        StrikeRow {
                            strike: Decimal::from_f64_retain(*k)
                                .unwrap_or_default()
                                .round_dp(2)
                                .normalize(),
                            ce: Some(leg((spot - k).max(0.0), ce_oi)),
                            pe: Some(leg((k - spot).max(0.0), pe_oi)),
                        }
                    })
                    .collect();
                let (y, m, d) = super::clock::civil_from_days(*expiry);
                ExpiryChain {
                    expiry: format!("{y:04}-{m:02}-{d:02}"),
                    strikes,
                }
            })
            .collect();
        chains.push(OptionChain {
            underlying: underlying.instrument.clone(),
            ts_ms: bar.ts_ms,
            spot: bar.close,
            expiries: chain_expiries,
        });
    }
    chains
}

fn strike_step(spot: f64) -> f64 {
    match spot {
        s if s > 20_000.0 => 100.0,
        s if s > 5_000.0 => 50.0,
        s if s > 1_000.0 => 20.0,
        _ => 5.0,
    }
}

/// The first day ≥ `day` that is weekday `wd` (0 = Monday).
fn next_weekday(day: i64, wd: u32) -> i64 {
    day + i64::from((wd + 7 - weekday(day)) % 7)
}

/// Write bars as `timestamp,open,high,low,close,volume`.
pub fn write_candles_csv(path: &Path, series: &CandleSeries) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "timestamp,open,high,low,close,volume")?;
    for b in &series.bars {
        writeln!(
            out,
            "{},{},{},{},{},{}",
            format_iso_ist(b.ts_ms),
            b.open,
            b.high,
            b.low,
            b.close,
            b.volume
        )?;
    }
    out.flush()
}

/// Write chains in the long format `timestamp,expiry,strike,option_type,close,volume,oi`.
pub fn write_chains_csv(path: &Path, chains: &[OptionChain]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "timestamp,expiry,strike,option_type,close,volume,oi")?;
    let mut line = String::new();
    for c in chains {
        let ts = format_iso_ist(c.ts_ms);
        for e in &c.expiries {
            for r in &e.strikes {
                for (kind, leg) in [("CE", r.ce), ("PE", r.pe)] {
                    if let Some(l) = leg {
                        line.clear();
                        let _ = write!(
                            line,
                            "{ts},{},{},{kind},{},{},{}",
                            e.expiry, r.strike, l.last, l.volume, l.oi
                        );
                        writeln!(out, "{line}")?;
                    }
                }
            }
        }
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_market() {
        let a = candles(&CandleSpec::nifty_like(7, 3));
        let b = candles(&CandleSpec::nifty_like(7, 3));
        let c = candles(&CandleSpec::nifty_like(8, 3));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.bars.len(), 3 * BARS_PER_DAY as usize);
        for bar in &a.bars {
            assert!(
                bar.low <= bar.open.min(bar.close) && bar.high >= bar.open.max(bar.close),
                "{bar:?}"
            );
            assert!(super::super::session::Session::NSE.contains(bar.ts_ms));
        }
        // 2024-01-01 is a Monday; three days are Mon, Tue, Wed.
        assert_eq!(
            super::super::clock::format_ist_date(a.bars[2 * 375].ts_ms),
            "2024-01-03"
        );
    }

    #[test]
    fn weekends_are_skipped() {
        let s = candles(&CandleSpec::nifty_like(1, 6));
        let last = super::super::clock::format_ist_date(s.bars[s.bars.len() - 1].ts_ms);
        assert_eq!(last, "2024-01-08", "Mon..Fri then Monday");
    }

    #[test]
    fn chains_follow_the_underlying() {
        let s = candles(&CandleSpec::nifty_like(3, 2));
        let chains = option_chains(&s, 3, 5);
        assert_eq!(chains.len(), s.bars.len().div_ceil(5));
        let first = &chains[0];
        assert_eq!(first.expiries.len(), 2);
        assert_eq!(first.expiries[0].expiry, "2024-01-04", "next Thursday");
        assert_eq!(first.expiries[0].strikes.len(), 21);
        assert_eq!(option_chains(&s, 3, 5), chains, "deterministic");
    }
}
