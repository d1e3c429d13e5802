//! Market sources: where a pipeline's events come from.
//!
//! - **replay** of CSV files, at a speed factor (0 = as fast as possible);
//! - **synthetic**: the seeded generator, paced like a live feed at a speed factor;
//! - **redis**: ticks or candles published as JSON on `<prefix>:market:<symbol>`
//!   by an external feed; ticks are aggregated into candles of the pipeline's
//!   timeframe, labelled by their start in IST.
//!
//! A source sends [`MarketEvent`]s into a channel and returns when it is done
//! (replay, synthetic) or when the receiver is gone.

use std::path::PathBuf;
use std::time::Duration;

use rust_decimal::Decimal;
use tokio::sync::mpsc;

use super::csv::{LoadOptions, MarketDataError, load};
use super::session::Session;
use super::synthetic::{self, CandleSpec};
use super::{Bar, CandleSeries, MarketData, OptionChain};
use super::guard::{GuardRules, PriceGuard};
use crate::bus::message::{MarketMessage, now_ms, printable};
use crate::bus::{Bus, BusError};

/// One thing a strategy is told about.
#[derive(Debug, Clone, PartialEq)]
pub enum MarketEvent {
    /// A finished bar.
    Candle {
        /// Instrument.
        instrument: String,
        /// Bar length, seconds.
        timeframe_secs: u32,
        /// The bar.
        bar: Bar,
    },
    /// An option-chain snapshot.
    Chain(OptionChain),
}

impl MarketEvent {
    /// Event time.
    #[must_use]
    pub fn ts_ms(&self) -> i64 {
        match self {
            Self::Candle { bar, .. } => bar.ts_ms,
            Self::Chain(c) => c.ts_ms,
        }
    }
}

/// Why a source could not run.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A replay file is unusable.
    #[error(transparent)]
    Data(#[from] MarketDataError),
    /// The bus failed.
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// Load replay files into one time-ordered list of events.
///
/// # Errors
/// The first file that cannot be read, with its line and field.
pub fn load_replay(files: &[PathBuf], underlying: Option<&PathBuf>, timeframe_secs: u32) -> Result<Vec<MarketEvent>, SourceError> {
    let session = Some(Session::NSE);
    let underlying = match underlying {
        Some(path) => match load(path, &LoadOptions { session, ..LoadOptions::default() })?.data {
            MarketData::Candles(s) => Some(s),
            MarketData::Chains(_) => None,
        },
        None => None,
    };
    let mut events = Vec::new();
    for file in files {
        let options = LoadOptions { session, underlying: underlying.clone(), ..LoadOptions::default() };
        match load(file, &options)?.data {
            MarketData::Candles(series) => events.extend(candle_events(&series, timeframe_secs)),
            MarketData::Chains(chains) => events.extend(chains.into_iter().map(MarketEvent::Chain)),
        }
    }
    // Stable: events at the same time keep the order of the files.
    events.sort_by_key(MarketEvent::ts_ms);
    Ok(events)
}

fn candle_events(series: &CandleSeries, timeframe_secs: u32) -> Vec<MarketEvent> {
    let bars = if timeframe_secs > series.timeframe_secs { resample(&series.bars, timeframe_secs) } else { series.bars.clone() };
    bars.into_iter().map(|bar| MarketEvent::Candle { instrument: series.instrument.clone(), timeframe_secs, bar }).collect()
}

/// Start of the `timeframe_secs` bucket holding `ts_ms`, aligned to the IST clock.
#[must_use]
pub fn bucket_start(ts_ms: i64, timeframe_secs: u32) -> i64 {
    // Saturating: a timestamp from input (i64::MAX) must not overflow; the
    // market guard refuses such a time before it gets here in a live feed.
    let tf = i64::from(timeframe_secs.max(1)) * 1000;
    let local = ts_ms.saturating_add(super::clock::IST_OFFSET_MS);
    ts_ms.saturating_sub(local.rem_euclid(tf))
}

/// Merge bars into longer ones.
#[must_use]
pub fn resample(bars: &[Bar], timeframe_secs: u32) -> Vec<Bar> {
    let mut out: Vec<Bar> = Vec::new();
    for b in bars {
        let start = bucket_start(b.ts_ms, timeframe_secs);
        match out.last_mut() {
            Some(last) if last.ts_ms == start => {
                last.high = last.high.max(b.high);
                last.low = last.low.min(b.low);
                last.close = b.close;
                last.volume += b.volume;
                last.oi = b.oi;
            }
            _ => out.push(Bar { ts_ms: start, ..*b }),
        }
    }
    out
}

/// The synthetic market as events: one series per symbol (seeds differ per
/// symbol), and with `option_chain` a chain on the first symbol every bar.
#[must_use]
pub fn synthetic_events(symbols: &[String], seed: u64, days: u32, start_price: f64, option_chain: bool, timeframe_secs: u32) -> Vec<MarketEvent> {
    let mut events = Vec::new();
    for (i, symbol) in symbols.iter().enumerate() {
        let spec = CandleSpec {
            instrument: symbol.clone(),
            seed: seed.wrapping_add(i as u64),
            start_price,
            with_volume: true,
            ..CandleSpec::nifty_like(seed, days)
        };
        let series = synthetic::candles(&spec);
        if option_chain && i == 0 {
            events.extend(synthetic::option_chains(&series, seed, 1).into_iter().map(MarketEvent::Chain));
        } else {
            events.extend(candle_events(&series, timeframe_secs));
        }
    }
    events.sort_by_key(MarketEvent::ts_ms);
    events
}

/// Send `events` at `speed` times real time (0 = no waiting). Gaps longer than
/// two bars (nights, weekends) are not waited out. The schedule is kept on
/// average (a sleep only when more than a millisecond ahead), so high rates
/// are reached despite the timer's granularity. Returns early when the
/// receiver is gone.
pub async fn pace(events: Vec<MarketEvent>, speed: f64, timeframe_secs: u32, tx: &mpsc::Sender<MarketEvent>) {
    let max_gap_ms = 2 * i64::from(timeframe_secs) * 1000;
    let start = tokio::time::Instant::now();
    let (mut prev, mut feed_ms) = (None::<i64>, 0i64);
    for event in events {
        if speed > 0.0 {
            if let Some(p) = prev {
                feed_ms += (event.ts_ms() - p).clamp(0, max_gap_ms);
            }
            prev = Some(event.ts_ms());
            let due = start + Duration::from_secs_f64(feed_ms as f64 / 1000.0 / speed);
            if due > tokio::time::Instant::now() + Duration::from_millis(1) {
                tokio::time::sleep_until(due).await;
            }
        }
        if tx.send(event).await.is_err() {
            return;
        }
    }
}

/// Builds candles of one instrument from ticks or shorter candles.
#[derive(Debug, Clone)]
pub struct CandleBuilder {
    instrument: String,
    timeframe_secs: u32,
    current: Option<Bar>,
    day_volume_at_start: Option<u64>,
    last_day_volume: u64,
}

impl CandleBuilder {
    /// A builder for `instrument` bars of `timeframe_secs`.
    #[must_use]
    pub fn new(instrument: &str, timeframe_secs: u32) -> Self {
        Self { instrument: instrument.to_owned(), timeframe_secs, current: None, day_volume_at_start: None, last_day_volume: 0 }
    }

    /// Add a tick (cumulative day volume); returns the bar it closed, if any.
    pub fn tick(&mut self, ts_ms: i64, price: Decimal, day_volume: u64, oi: u64) -> Option<MarketEvent> {
        let start = bucket_start(ts_ms, self.timeframe_secs);
        let closed = match &self.current {
            Some(bar) if start > bar.ts_ms => self.finish(),
            Some(bar) if start < bar.ts_ms => return None, // a late tick for a closed bar
            _ => None,
        };
        let volume_base = *self.day_volume_at_start.get_or_insert(if self.current.is_none() { day_volume } else { self.last_day_volume });
        let bar = self.current.get_or_insert(Bar { ts_ms: start, open: price, high: price, low: price, close: price, volume: 0, oi });
        bar.high = bar.high.max(price);
        bar.low = bar.low.min(price);
        bar.close = price;
        bar.volume = day_volume.saturating_sub(volume_base);
        bar.oi = oi;
        self.last_day_volume = day_volume;
        closed
    }

    /// Add a shorter bar; returns the bar it closed, if any.
    pub fn bar(&mut self, b: Bar) -> Option<MarketEvent> {
        let start = bucket_start(b.ts_ms, self.timeframe_secs);
        let closed = match &self.current {
            Some(cur) if start > cur.ts_ms => self.finish(),
            Some(cur) if start < cur.ts_ms => return None,
            _ => None,
        };
        match &mut self.current {
            Some(cur) => {
                cur.high = cur.high.max(b.high);
                cur.low = cur.low.min(b.low);
                cur.close = b.close;
                cur.volume += b.volume;
                cur.oi = b.oi;
            }
            None => self.current = Some(Bar { ts_ms: start, ..b }),
        }
        closed
    }

    /// Close the bar in progress (the bucket's time is over).
    pub fn finish(&mut self) -> Option<MarketEvent> {
        self.day_volume_at_start = None;
        self.current.take().map(|bar| MarketEvent::Candle { instrument: self.instrument.clone(), timeframe_secs: self.timeframe_secs, bar })
    }

    /// End of the bar in progress, ms.
    #[must_use]
    pub fn bucket_end(&self) -> Option<i64> {
        self.current.map(|b| b.ts_ms.saturating_add(i64::from(self.timeframe_secs) * 1000))
    }
}

/// Follow an external feed on `<prefix>:market:<symbol>`. Malformed messages
/// are passed to `on_error` and skipped. A candle of the pipeline's timeframe
/// is forwarded at once; ticks and shorter candles are aggregated, and a bar is
/// closed by the first tick of the next one or, when the feed goes quiet, two
/// seconds of wall time after its end.
///
/// # Errors
/// When the subscription cannot be made.
pub async fn redis_feed(
    bus: &Bus,
    symbols: &[String],
    timeframe_secs: u32,
    rules: GuardRules,
    tx: &mpsc::Sender<MarketEvent>,
    on_error: impl Fn(String),
) -> Result<(), SourceError> {
    let mut guard = PriceGuard::new(rules);
    let channels: Vec<String> = symbols.iter().map(|s| bus.channels().market(s)).collect();
    let mut sub = bus.subscribe(&channels).await?;
    let mut builders: Vec<CandleBuilder> = symbols.iter().map(|s| CandleBuilder::new(s, timeframe_secs)).collect();
    let mut last_seen: Option<(i64, tokio::time::Instant)> = None;
    let mut flush = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            msg = sub.recv() => {
                let Some((channel, payload)) = msg else { return Ok(()) };
                let parsed = match MarketMessage::parse(&payload) {
                    Ok(m) => m,
                    Err(e) => {
                        on_error(format!("malformed message on {channel}: {e}"));
                        continue;
                    }
                };
                let (symbol, ts) = match &parsed {
                    MarketMessage::Tick { symbol, ts, .. } | MarketMessage::Candle { symbol, ts, .. } => (symbol.clone(), *ts),
                };
                let Some(builder) = builders.iter_mut().find(|b| b.instrument == symbol) else {
                    on_error(format!("message on {channel} is for {:?}, not a symbol of this pipeline", printable(&symbol, 40)));
                    continue;
                };
                let prices: Vec<(&'static str, Decimal)> = match &parsed {
                    MarketMessage::Tick { last, bid, ask, .. } => {
                        [("last", Some(*last)), ("bid", *bid), ("ask", *ask)].into_iter().filter_map(|(f, p)| Some((f, p?))).collect()
                    }
                    MarketMessage::Candle { open, high, low, close, .. } => vec![("close", *close), ("open", *open), ("high", *high), ("low", *low)],
                };
                if let Err(refused) = guard.check(&symbol, ts, &prices, now_ms()) {
                    on_error(format!("refused on {channel}: {refused}"));
                    continue;
                }
                last_seen = Some((ts, tokio::time::Instant::now()));
                let closed = match parsed {
                    MarketMessage::Tick { last, volume, oi, .. } => builder.tick(ts, last, volume, oi),
                    MarketMessage::Candle { timeframe_secs: tf, open, high, low, close, volume, oi, .. } => {
                        let bar = Bar { ts_ms: ts, open, high, low, close, volume, oi };
                        if tf.unwrap_or(timeframe_secs) == timeframe_secs {
                            Some(MarketEvent::Candle { instrument: symbol, timeframe_secs, bar })
                        } else {
                            builder.bar(bar)
                        }
                    }
                };
                if let Some(event) = closed {
                    if tx.send(event).await.is_err() {
                        return Ok(());
                    }
                }
            }
            _ = flush.tick() => {
                // Feed time now ≈ the last message's time plus the wall time since it.
                let Some((ts, at)) = last_seen else { continue };
                let feed_now = ts.saturating_add(i64::try_from(at.elapsed().as_millis()).unwrap_or(i64::MAX));
                for b in &mut builders {
                    if b.bucket_end().is_some_and(|end| feed_now >= end.saturating_add(2_000)) {
                        if let Some(event) = b.finish() {
                            if tx.send(event).await.is_err() {
                                return Ok(());
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    const T0: i64 = 1_704_080_700_000; // 2024-01-01 09:15 IST

    #[test]
    fn ticks_become_candles() {
        let mut b = CandleBuilder::new("NIFTY", 60);
        assert_eq!(b.tick(T0 + 1_000, dec!(100), 1_000, 0), None);
        assert_eq!(b.tick(T0 + 30_000, dec!(103), 1_400, 0), None);
        assert_eq!(b.tick(T0 + 59_999, dec!(99), 1_500, 0), None);
        let Some(MarketEvent::Candle { bar, .. }) = b.tick(T0 + 60_000, dec!(101), 1_600, 0) else { panic!("the next minute closes the bar") };
        assert_eq!((bar.ts_ms, bar.open, bar.high, bar.low, bar.close, bar.volume), (T0, dec!(100), dec!(103), dec!(99), dec!(99), 500));
        let Some(MarketEvent::Candle { bar, .. }) = b.finish() else { panic!("finish closes the bar in progress") };
        assert_eq!((bar.ts_ms, bar.open, bar.volume), (T0 + 60_000, dec!(101), 0));
        assert_eq!(b.tick(T0 - 1, dec!(1), 0, 0), None);
    }

    #[test]
    fn five_minute_buckets_follow_the_ist_clock() {
        assert_eq!(bucket_start(T0 + 4 * 60_000 + 59_000, 300), T0, "09:15..09:19 is one 5-minute bar");
        assert_eq!(bucket_start(T0 + 5 * 60_000, 300), T0 + 300_000);
        let bars: Vec<Bar> = (0..10)
            .map(|i| Bar { ts_ms: T0 + i * 60_000, open: Decimal::from(i), high: Decimal::from(i + 1), low: Decimal::from(i), close: Decimal::from(i), volume: 1, oi: 0 })
            .collect();
        let five = resample(&bars, 300);
        assert_eq!(five.len(), 2);
        assert_eq!((five[0].open, five[0].high, five[0].close, five[0].volume), (dec!(0), dec!(5), dec!(4), 5));
    }

    #[test]
    fn synthetic_events_are_time_ordered_and_repeatable() {
        let symbols = vec!["NIFTY".to_owned(), "BANKNIFTY".to_owned()];
        let a = synthetic_events(&symbols, 3, 2, 21_700.0, false, 60);
        assert_eq!(a.len(), 2 * 2 * 375);
        assert!(a.windows(2).all(|w| w[0].ts_ms() <= w[1].ts_ms()));
        assert_eq!(a, synthetic_events(&symbols, 3, 2, 21_700.0, false, 60));
        let chains = synthetic_events(&symbols[..1], 3, 1, 21_700.0, true, 60);
        assert!(chains.iter().all(|e| matches!(e, MarketEvent::Chain(_))));
    }
}
