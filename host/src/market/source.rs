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
use super::feed::socket::{self, SocketEvent, SocketSettings};
use super::feed::{ChainSnapshot, ChainSource, FeedItem, FeedPlan, FeedTick};
use super::guard::{Gap, GuardRules, PriceGuard, Reference, Refused};
use super::recorder::TickRecorder;
use super::session::Session;
use super::synthetic::{self, CandleSpec};
use super::{Bar, CandleSeries, MarketData, OptionChain};
use crate::bus::events::Event;
use crate::bus::message::{MarketMessage, printable};
use crate::bus::{Bus, BusError};
use crate::domain::time::now_ms;
use crate::domain::time::{format_iso_ist, ist_day};
use std::collections::HashMap;

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
        /// The best bid when the bar closed, where the feed has depth (intraday long trailing stops follow it).
        bid: Option<Decimal>,
        /// The best ask then (intraday short trailing stops follow it).
        ask: Option<Decimal>,
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
    /// A broker feed cannot run.
    #[error("{0}")]
    Feed(String),
    /// A recorded tick file is unusable.
    #[error(transparent)]
    Ticks(#[from] super::recorder::TickFileError),
}

/// Load replay files into one time-ordered list of events.
///
/// # Errors
/// The first file that cannot be read, with its line and field.
pub fn load_replay(
    files: &[PathBuf],
    underlying: Option<&PathBuf>,
    timeframe_secs: u32,
) -> Result<Vec<MarketEvent>, SourceError> {
    let session = Some(Session::NSE);
    let underlying = match underlying {
        Some(path) => match load(
            path,
            &LoadOptions {
                session,
                ..LoadOptions::default()
            },
        )?
        .data
        {
            MarketData::Candles(s) => Some(s),
            MarketData::Chains(_) => None,
        },
        None => None,
    };
    let mut events = Vec::new();
    let mut ticks = Vec::new();
    for file in &expand(files)? {
        if super::recorder::is_tick_file(file) {
            ticks.extend(super::recorder::read_ticks(file)?);
            continue;
        }
        if super::recorder::is_chain_file(file) {
            events.extend(
                super::recorder::read_chains(file)?
                    .into_iter()
                    .map(MarketEvent::Chain),
            );
            continue;
        }
        if super::recorder::is_bar_file(file) {
            // Bars read back after a gap, as the live source handed them on.
            let bars = super::recorder::read_bars(file)?;
            events.extend(
                bars.into_iter()
                    .map(|(instrument, tf, bar)| MarketEvent::Candle {
                        instrument,
                        timeframe_secs: tf,
                        bar,
                        bid: None,
                        ask: None,
                    }),
            );
            continue;
        }
        let options = LoadOptions {
            session,
            underlying: underlying.clone(),
            ..LoadOptions::default()
        };
        match load(file, &options)?.data {
            MarketData::Candles(series) => events.extend(candle_events(&series, timeframe_secs)),
            MarketData::Chains(chains) => events.extend(chains.into_iter().map(MarketEvent::Chain)),
        }
    }
    events.extend(tick_events(ticks, timeframe_secs));
    // Stable: events at the same time keep the order of the files.
    events.sort_by_key(MarketEvent::ts_ms);
    Ok(events)
}

/// The files to replay: a folder stands for the recorded tick and chain files in it.
fn expand(files: &[PathBuf]) -> Result<Vec<PathBuf>, SourceError> {
    let mut out = Vec::new();
    for file in files {
        if file.is_dir() {
            let listing = std::fs::read_dir(file).map_err(|e| MarketDataError::Io {
                path: file.clone(),
                source: e,
            })?;
            let mut found: Vec<PathBuf> = listing
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    super::recorder::is_tick_file(p)
                        || super::recorder::is_chain_file(p)
                        || super::recorder::is_bar_file(p)
                })
                .collect();
            found.sort();
            out.extend(found);
        } else {
            out.push(file.clone());
        }
    }
    Ok(out)
}

/// Candles from recorded ticks, built as the live source built them: by
/// exchange time, per instrument, inside the session, with the bid at the close.
fn tick_events(
    mut ticks: Vec<super::recorder::RecordedTick>,
    timeframe_secs: u32,
) -> Vec<MarketEvent> {
    // Several files (one per process start) merge by exchange time.
    ticks.sort_by_key(|t| t.ts_ms);
    let mut builders: std::collections::BTreeMap<String, CandleBuilder> =
        std::collections::BTreeMap::new();
    let mut events = Vec::new();
    for t in ticks {
        let b = builders
            .entry(t.instrument.clone())
            .or_insert_with(|| CandleBuilder::new(&t.instrument, timeframe_secs));
        if !Session::NSE.contains(bucket_start(t.ts_ms, timeframe_secs)) {
            continue;
        }
        events.extend(b.tick(t.ts_ms, t.last, t.day_volume, t.oi));
        b.set_bid(t.bid);
        b.set_ask(t.ask);
    }
    events.extend(builders.values_mut().filter_map(CandleBuilder::finish));
    events
}

fn candle_events(series: &CandleSeries, timeframe_secs: u32) -> Vec<MarketEvent> {
    let bars = if timeframe_secs > series.timeframe_secs {
        resample(&series.bars, timeframe_secs)
    } else {
        series.bars.clone()
    };
    bars.into_iter()
        .map(|bar| MarketEvent::Candle {
            instrument: series.instrument.clone(),
            timeframe_secs,
            bar,
            bid: None,
            ask: None,
        })
        .collect()
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
pub fn synthetic_events(
    symbols: &[String],
    seed: u64,
    days: u32,
    start_price: f64,
    option_chain: bool,
    timeframe_secs: u32,
) -> Vec<MarketEvent> {
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
            events.extend(
                synthetic::option_chains(&series, seed, 1)
                    .into_iter()
                    .map(MarketEvent::Chain),
            );
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
pub async fn pace(
    events: Vec<MarketEvent>,
    speed: f64,
    timeframe_secs: u32,
    tx: &mpsc::Sender<MarketEvent>,
) {
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
    bid: Option<Decimal>,
    ask: Option<Decimal>,
    day_volume_at_start: Option<u64>,
    last_day_volume: u64,
    /// Start of the last bar closed: nothing at or before it makes a bar again.
    closed_up_to: Option<i64>,
    /// Ticks and bars that came for a bar already closed, dropped.
    late: u64,
}

impl CandleBuilder {
    /// A builder for `instrument` bars of `timeframe_secs`.
    #[must_use]
    pub fn new(instrument: &str, timeframe_secs: u32) -> Self {
        Self {
            instrument: instrument.to_owned(),
            timeframe_secs,
            current: None,
            bid: None,
            ask: None,
            day_volume_at_start: None,
            last_day_volume: 0,
            closed_up_to: None,
            late: 0,
        }
    }

    /// How many ticks and shorter bars came for a bar already closed (dropped: a minute
    /// never makes a second candle, however late its tick).
    #[must_use]
    pub fn late(&self) -> u64 {
        self.late
    }

    /// Whether a bar starting at `start` is one already closed (counted when it is).
    fn is_late(&mut self, start: i64) -> bool {
        let late = match &self.current {
            Some(bar) => start < bar.ts_ms,
            None => self.closed_up_to.is_some_and(|closed| start <= closed),
        };
        if late {
            self.late = self.late.saturating_add(1);
        }
        late
    }

    /// Add a tick (cumulative day volume); returns the bar it closed, if any.
    pub fn tick(
        &mut self,
        ts_ms: i64,
        price: Decimal,
        day_volume: u64,
        oi: u64,
    ) -> Option<MarketEvent> {
        let start = bucket_start(ts_ms, self.timeframe_secs);
        if self.is_late(start) {
            return None; // a late tick for a closed bar
        }
        let closed = match &self.current {
            Some(bar) if start > bar.ts_ms => self.finish(),
            _ => None,
        };
        let volume_base = *self
            .day_volume_at_start
            .get_or_insert(if self.current.is_none() {
                day_volume
            } else {
                self.last_day_volume
            });
        let bar = self.current.get_or_insert(Bar {
            ts_ms: start,
            open: price,
            high: price,
            low: price,
            close: price,
            volume: 0,
            oi,
        });
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
        if self.is_late(start) {
            return None;
        }
        let closed = match &self.current {
            Some(cur) if start > cur.ts_ms => self.finish(),
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
        if let Some(bar) = &self.current {
            self.closed_up_to = Some(bar.ts_ms);
        }
        self.current.take().map(|bar| MarketEvent::Candle {
            instrument: self.instrument.clone(),
            timeframe_secs: self.timeframe_secs,
            bar,
            bid: self.bid,
            ask: self.ask,
        })
    }

    /// The best ask now (carried by the bar when it closes).
    pub fn set_ask(&mut self, ask: Option<Decimal>) {
        if ask.is_some() {
            self.ask = ask;
        }
    }

    /// The best bid now (carried by the bar when it closes).
    pub fn set_bid(&mut self, bid: Option<Decimal>) {
        if bid.is_some() {
            self.bid = bid;
        }
    }

    /// Start of the bar in progress.
    #[must_use]
    pub fn bar_start(&self) -> Option<i64> {
        self.current.map(|b| b.ts_ms)
    }

    /// End of the bar in progress, ms.
    #[must_use]
    pub fn bucket_end(&self) -> Option<i64> {
        self.current.map(|b| {
            b.ts_ms
                .saturating_add(i64::from(self.timeframe_secs) * 1000)
        })
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
    on_gap: impl Fn(Gap),
) -> Result<(), SourceError> {
    let mut guard = PriceGuard::new(rules);
    let channels: Vec<String> = symbols.iter().map(|s| bus.channels().market(s)).collect();
    let mut sub = bus.subscribe(&channels).await?;
    let mut builders: Vec<CandleBuilder> = symbols
        .iter()
        .map(|s| CandleBuilder::new(s, timeframe_secs))
        .collect();
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
                match guard.check(&symbol, ts, &prices, now_ms()) {
                    Ok(Some(gap)) => on_gap(gap),
                    Ok(None) => {}
                    Err(refused) => {
                        on_error(format!("refused on {channel}: {refused}"));
                        continue;
                    }
                }
                last_seen = Some((ts, tokio::time::Instant::now()));
                let closed = match parsed {
                    MarketMessage::Tick { last, volume, oi, .. } => builder.tick(ts, last, volume, oi),
                    MarketMessage::Candle { timeframe_secs: tf, open, high, low, close, volume, oi, .. } => {
                        let bar = Bar { ts_ms: ts, open, high, low, close, volume, oi };
                        if tf.unwrap_or(timeframe_secs) == timeframe_secs {
                            Some(MarketEvent::Candle { instrument: symbol, timeframe_secs, bar, bid: None, ask: None })
                        } else {
                            builder.bar(bar)
                        }
                    }
                };
                if let Some(event) = closed
                    && tx.send(event).await.is_err() {
                        return Ok(());
                    }
            }
            _ = flush.tick() => {
                let Some(seen) = last_seen else { continue };
                if !close_quiet_bars(&mut builders, feed_time(seen), tx).await {
                    return Ok(());
                }
            }
        }
    }
}

/// Feed time now: the last message's time plus the wall time since it arrived.
fn feed_time((ts, at): (i64, tokio::time::Instant)) -> i64 {
    ts.saturating_add(i64::try_from(at.elapsed().as_millis()).unwrap_or(i64::MAX))
}

/// Close every bar whose end is two seconds of feed time behind `feed_now` (the feed went
/// quiet: no next tick will close it); false when the receiver is gone.
async fn close_quiet_bars(
    builders: &mut [CandleBuilder],
    feed_now: i64,
    tx: &mpsc::Sender<MarketEvent>,
) -> bool {
    for (_, event) in quiet_bars(builders, feed_now) {
        if tx.send(event).await.is_err() {
            return false;
        }
    }
    true
}

/// The bars whose end is two seconds of feed time past, closed, with their builder's index.
fn quiet_bars(builders: &mut [CandleBuilder], feed_now: i64) -> Vec<(usize, MarketEvent)> {
    builders
        .iter_mut()
        .enumerate()
        .filter(|(_, b)| {
            b.bucket_end()
                .is_some_and(|end| feed_now >= end.saturating_add(2_000))
        })
        .filter_map(|(i, b)| Some((i, b.finish()?)))
        .collect()
}

/// One instrument's missed bars to read back from its broker: `[from, to)`.
#[derive(Debug, Clone)]
struct ReadBack {
    token: String,
    from: i64,
    to: i64,
}

/// What an instrument's candles wait for: read-backs still out; meanwhile its closed bars
/// are held here, to go out with the bars read back in time order.
#[derive(Debug, Default)]
struct Held {
    reading: usize,
    bars: Vec<MarketEvent>,
    /// Ticks refused beyond the band since the last accepted one: if the guard comes to
    /// believe their level as a gap, the first of them go back into their candles.
    beyond_band: Vec<FeedTick>,
}

/// Most ticks kept per instrument while a move beyond the band waits to be believed.
const BEYOND_BAND_KEPT: usize = 64;

impl Held {
    /// Send `event`, or hold it while a read-back of its instrument is out; false when the
    /// pipeline is gone.
    async fn pass(&mut self, event: MarketEvent, tx: &mpsc::Sender<MarketEvent>) -> bool {
        if self.reading > 0 {
            self.bars.push(event);
            true
        } else {
            tx.send(event).await.is_ok()
        }
    }
}

/// Read back missed bars one request at a time, each at least `every` after the one
/// before (the broker's historical-data limit), beside the feed: ticks go on being
/// decoded, bars closed and the stale alarm watched while it reads.
async fn read_back(
    fill: super::feed::Backfill,
    every: Duration,
    mut asks: mpsc::UnboundedReceiver<ReadBack>,
    done: mpsc::UnboundedSender<(ReadBack, Result<Vec<Bar>, String>)>,
) -> Result<(), String> {
    let mut next = tokio::time::Instant::now();
    while let Some(ask) = asks.recv().await {
        tokio::time::sleep_until(next).await;
        next = tokio::time::Instant::now() + every;
        let bars = fill(ask.token.clone(), ask.from, ask.to).await;
        if done.send((ask, bars)).is_err() {
            break;
        }
    }
    Ok(())
}

/// How a broker source runs (from its `source = { kind = "broker", … }`).
pub struct BrokerFeedOptions {
    /// Bar length.
    pub timeframe_secs: u32,
    /// What a tick must satisfy.
    pub rules: GuardRules,
    /// Silence (in market hours) after which the feed is stale; 0 = never.
    pub stale_secs: u64,
    /// Where received ticks are recorded, if anywhere.
    pub recorder: Option<TickRecorder>,
    /// Connection timing.
    pub socket: SocketSettings,
    /// Option-chain snapshots to take, and how often.
    pub chain: Option<(ChainSource, Duration)>,
    /// With chains: also follow the ticks of the options of this many strikes
    /// either side of the money (and the money's), moved as the spot moves; 0 = none.
    pub strikes: usize,
}

impl std::fmt::Debug for BrokerFeedOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerFeedOptions")
            .field("timeframe_secs", &self.timeframe_secs)
            .field("stale_secs", &self.stale_secs)
            .field("chain_every", &self.chain.as_ref().map(|c| c.1))
            .finish_non_exhaustive()
    }
}

/// Instruments whose feed is stale: their new entries are held until it is fresh.
pub type StaleSet = std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>;

/// Aborts a task when dropped (the feed's sockets end with the source).
struct AbortOnDrop(tokio::task::JoinHandle<Result<(), String>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// At most one report of each kind per this long, with the count since.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Follow a broker's WebSocket: ticks are checked by the guard, recorded,
/// and built into candles of the pipeline's timeframe by exchange time
/// (labelled by their start in IST; ticks outside the session make no bar).
/// A bar is closed by the first tick of the next one or, when the feed goes
/// quiet, two seconds of feed time after its end. Connections that drop are
/// made again and subscribed again; a bar in progress across such a gap is
/// reported (`feed_gap`, with the bar and whether whole bars were missed).
/// A feed silent for `stale_secs` while the market is open is reported
/// (`feed_stale`) and its instruments put in `stale` until a tick comes
/// (`feed_fresh`). Malformed frames and refused ticks are counted and
/// reported; the feed goes on. `on_event` publishes a report.
///
/// # Errors
/// More instruments than the broker allows one account.
pub async fn broker_feed(
    plan: FeedPlan,
    mut options: BrokerFeedOptions,
    stale: StaleSet,
    tx: &mpsc::Sender<MarketEvent>,
    on_event: impl Fn(Event),
) -> Result<(), SourceError> {
    let tokens: Vec<String> = plan.instruments.iter().map(|(_, t)| t.clone()).collect();
    let connections = socket::shards(plan.wire, &tokens)
        .map_err(SourceError::Feed)?
        .len();
    // Instruments by token; the strikes around the money join as the chain moves.
    let mut index: HashMap<String, usize> = plan
        .instruments
        .iter()
        .enumerate()
        .map(|(i, (_, t))| (t.clone(), i))
        .collect();
    let mut symbols: Vec<String> = plan.instruments.iter().map(|(s, _)| s.clone()).collect();
    let mut token_of: Vec<String> = plan.instruments.iter().map(|(_, t)| t.clone()).collect();
    // The pipeline's own instruments; the strikes around the money come after them.
    let own = symbols.len();
    let tf = options.timeframe_secs;
    let mut builders: Vec<CandleBuilder> =
        symbols.iter().map(|s| CandleBuilder::new(s, tf)).collect();
    // After a reconnect, each instrument's first tick says whether its bar straddled the gap.
    let mut after_gap = vec![false; builders.len()];
    // The bar of each instrument's last tick: after a reconnect, the bars between it and the
    // first tick's are read back from the broker (`plan.backfill`).
    let mut last_bucket: Vec<Option<i64>> = vec![None; builders.len()];
    let mut guard = PriceGuard::new(options.rules.clone());
    // Read-backs run in their own task, paced to the broker's limit; each instrument's bars
    // wait for its read-backs so that they reach the pipeline in time order.
    let mut held: Vec<Held> = std::iter::repeat_with(Held::default)
        .take(builders.len())
        .collect();
    let (asks_tx, asks_rx) = mpsc::unbounded_channel::<ReadBack>();
    let (done_tx, mut read) = mpsc::unbounded_channel();
    let _reader = plan.backfill.clone().map(|fill| {
        AbortOnDrop(tokio::spawn(read_back(
            fill,
            plan.wire.history_every(),
            asks_rx,
            done_tx,
        )))
    });
    let (stx, mut srx) = mpsc::channel(65_536);
    let (strikes_tx, strikes_rx) = tokio::sync::watch::channel(Vec::<String>::new());
    let _sockets = AbortOnDrop(tokio::spawn(socket::run_with(
        plan.clone(),
        options.socket,
        stx,
        strikes_rx,
    )));
    let account = plan.account.clone();
    let mut last_seen: Option<(i64, tokio::time::Instant)> = None;
    let started = tokio::time::Instant::now();
    let mut is_stale = false;
    let mut flush = tokio::time::interval(Duration::from_millis(250));
    let (mut malformed, mut refused, mut untimed, mut late) = (
        Counted::default(),
        Counted::default(),
        Counted::default(),
        Counted::default(),
    );
    // Option chains are fetched beside the ticks, one request at a time, and handed over as they come.
    let (chain_tx, mut chains) = mpsc::channel::<Result<ChainSnapshot, String>>(4);
    let _chain_task = options.chain.take().map(|(fetch, every)| {
        AbortOnDrop(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if chain_tx.send(fetch().await).await.is_err() {
                    return Ok(());
                }
            }
        }))
    });
    let mut chain_failures = Counted::default();
    // The last greeks each option's ticks brought (Upstox's `option_greeks` mode), by token.
    let mut live_greeks: HashMap<String, super::Greeks> = HashMap::new();
    let mut chains_open = _chain_task.is_some();
    loop {
        tokio::select! {
            chain = chains.recv(), if chains_open => match chain {
                Some(Ok(ChainSnapshot { mut chain, tokens: option_tokens })) => {
                    if options.strikes > 0 {
                        let wanted = around_the_money(&chain, &option_tokens, options.strikes);
                        for (symbol, token) in &wanted {
                            if !index.contains_key(token) {
                                index.insert(token.clone(), builders.len());
                                builders.push(CandleBuilder::new(symbol, tf));
                                held.push(Held::default());
                                symbols.push(symbol.clone());
                                token_of.push(token.clone());
                                after_gap.push(false);
                                last_bucket.push(None);
                            }
                        }
                        let wanted_tokens: Vec<String> = wanted.iter().map(|(_, t)| t.clone()).collect();
                        // Strikes that left the window: their bar in progress goes out, then
                        // their builders go (the socket unsubscribes them).
                        let mut gone: Vec<usize> = (own..builders.len()).filter(|i| !wanted_tokens.contains(&token_of[*i])).collect();
                        gone.sort_unstable_by(|a, b| b.cmp(a));
                        let moved = !gone.is_empty();
                        for i in gone {
                            let mut out = std::mem::take(&mut held[i].bars);
                            out.extend(builders[i].finish());
                            for event in out {
                                if tx.send(event).await.is_err() {
                                    return Ok(());
                                }
                            }
                            // Its last greeks go too: no tick will freshen them again.
                            live_greeks.remove(&token_of[i]);
                            for v in [&mut symbols, &mut token_of] {
                                v.remove(i);
                            }
                            builders.remove(i);
                            held.remove(i);
                            after_gap.remove(i);
                            last_bucket.remove(i);
                        }
                        if moved {
                            index = token_of.iter().enumerate().map(|(i, t)| (t.clone(), i)).collect();
                        }
                        if *strikes_tx.borrow() != wanted_tokens {
                            on_event(Event::StrikesMoved { account: account.clone(), underlying: chain.underlying.clone(), spot: chain.spot.to_string(), options: wanted.iter().map(|(s, _)| s.clone()).collect() });
                            let _ = strikes_tx.send(wanted_tokens);
                        }
                    }
                    // The socket's greeks of a strike it carries are fresher than the chain's.
                    with_live_greeks(&mut chain, &option_tokens, &live_greeks);
                    if let Some(rec) = options.recorder.as_mut()
                        && let Err(e) = rec.record_chain(now_ms(), &chain) {
                            on_event(Event::feed_error("recorder", format!("recording option chains: {e}; recording stops")));
                            options.recorder = None;
                        }
                    if tx.send(MarketEvent::Chain(chain)).await.is_err() {
                        return Ok(());
                    }
                }
                Some(Err(e)) => {
                    if let Some(n) = chain_failures.due() {
                        on_event(Event::FeedError { source: format!("option chain of {account}"), error: printable(&e, 300), malformed_frames: None, refused_ticks: None, failures: Some(n) });
                    }
                }
                None => chains_open = false,
            },
            event = srx.recv() => {
                let Some(event) = event else { return Ok(()) };
                let tick = match event {
                    SocketEvent::Item(FeedItem::Tick(t)) => t,
                    SocketEvent::Item(FeedItem::Order(update)) => {
                        on_event(Event::BrokerOrderUpdate { account: account.clone(), update });
                        continue;
                    }
                    SocketEvent::Item(FeedItem::BrokerError(e)) => {
                        on_event(Event::feed_error(format!("{} feed of {account}", plan.wire.name()), printable(&e, 300)));
                        continue;
                    }
                    SocketEvent::Up { connection, reconnect } => {
                        let (account, broker, instruments) = (account.clone(), plan.wire.name().to_owned(), tokens.len());
                        on_event(if reconnect { Event::FeedReconnected { account, broker, connection, connections, instruments } } else { Event::FeedConnected { account, broker, connection, connections, instruments } });
                        if reconnect {
                            after_gap.iter_mut().for_each(|g| *g = true);
                        }
                        continue;
                    }
                    SocketEvent::Down { connection, reason } => {
                        on_event(Event::FeedDown { account: account.clone(), broker: plan.wire.name().to_owned(), connection, reason: printable(&reason, 300) });
                        continue;
                    }
                    SocketEvent::Malformed { connection, reason } => {
                        if let Some(n) = malformed.due() {
                            on_event(Event::FeedError { source: format!("{} feed of {account}", plan.wire.name()), error: format!("malformed frame on connection {connection}: {}", printable(&reason, 200)), malformed_frames: Some(n), refused_ticks: None, failures: None });
                        }
                        continue;
                    }
                };
                let Some(&i) = index.get(&tick.token) else {
                    if let Some(n) = malformed.due() {
                        on_event(Event::FeedError { source: format!("{} feed of {account}", plan.wire.name()), error: format!("a tick for token {} that was not subscribed", printable(&tick.token, 40)), malformed_frames: Some(n), refused_ticks: None, failures: None });
                    }
                    continue;
                };
                let symbol = symbols[i].as_str();
                let Some(ts) = tick.ts_ms else {
                    // LTP and quote packets carry no exchange time: no candle is built on the host's clock.
                    if let Some(n) = untimed.due() {
                        tracing::debug!(account, symbol, n, "ticks without exchange time skipped");
                    }
                    continue;
                };
                let prices: Vec<(&'static str, Decimal)> = [("last", Some(tick.last)), ("bid", tick.bid), ("ask", tick.ask)].into_iter().filter_map(|(f, p)| Some((f, p?))).collect();
                if tick.prev_close.is_some() {
                    guard.set_reference(symbol, ts, Reference { close: tick.prev_close, circuit: None });
                }
                let verdict = guard.check(symbol, ts, &prices, now_ms());
                if let Some(rec) = options.recorder.as_mut() {
                    let why = verdict.as_ref().err().map(ToString::to_string);
                    if let Err(e) = rec.record(now_ms(), symbol, &tick, why.as_deref()) {
                        on_event(Event::feed_error("recorder", format!("recording ticks: {e}; recording stops")));
                        options.recorder = None;
                    }
                }
                // The ticks to build candles from: this one, after those at its level refused
                // until the gap was believed (the candles then show where the market went).
                let mut ticks = Vec::new();
                match verdict {
                    Ok(Some(gap)) => {
                        let kept = std::mem::take(&mut held[i].beyond_band);
                        let earlier = usize::try_from(gap.earlier).unwrap_or(usize::MAX).min(kept.len());
                        ticks.extend(kept.into_iter().rev().take(earlier).rev());
                        on_event(gap.event(format!("{} feed of {account}", plan.wire.name())));
                    }
                    Ok(None) => held[i].beyond_band.clear(),
                    Err(why) => {
                        if matches!(why, Refused::OutsideBand { field: "last", .. }) {
                            let kept = &mut held[i].beyond_band;
                            if kept.len() >= BEYOND_BAND_KEPT {
                                kept.remove(0);
                            }
                            kept.push(tick);
                        }
                        if let Some(n) = refused.due() {
                            on_event(Event::FeedError { source: format!("{} feed of {account}", plan.wire.name()), error: format!("refused: {why}"), malformed_frames: None, refused_ticks: Some(n), failures: None });
                        }
                        continue;
                    }
                }
                if let Some(g) = tick.greeks {
                    live_greeks.insert(tick.token.clone(), g);
                }
                ticks.push(tick);
                last_seen = Some((ts, tokio::time::Instant::now()));
                if is_stale {
                    is_stale = false;
                    if let Ok(mut s) = stale.lock() {
                        s.clear();
                    }
                    on_event(Event::FeedFresh { account: account.clone(), broker: plan.wire.name().to_owned() });
                }
                for tick in ticks {
                    let Some(ts) = tick.ts_ms else { continue };
                    let builder = &mut builders[i];
                    let start = bucket_start(ts, tf);
                    let tf_ms = i64::from(tf) * 1000;
                    let mut missed_from = None;
                    if std::mem::take(&mut after_gap[i]) {
                        if let Some(open) = builder.bar_start() {
                            let missed = (start.saturating_sub(open) / tf_ms).saturating_sub(1).max(0);
                            on_event(Event::FeedGap { account: account.clone(), instrument: symbol.to_owned(), bar_ts: open, straddles: start == open, bars_missed: missed });
                        }
                        // Whole bars with no tick since the last one before the gap, the same day.
                        missed_from = last_bucket[i].map(|prev| prev.saturating_add(tf_ms)).filter(|from| *from < start && ist_day(*from) == ist_day(start));
                    }
                    // The day's own hours: a special session (Muhurat, a Saturday) makes bars, a
                    // holiday's stray prints do not.
                    if !options.rules.calendar.is_open(start) {
                        continue;
                    }
                    let was_late = builder.late();
                    let closed = builder.tick(ts, tick.last, tick.day_volume.unwrap_or(0), tick.oi.unwrap_or(0));
                    // A tick for a minute already closed makes no second candle: counted and told.
                    if builder.late() > was_late && let Some(n) = late.due() {
                        on_event(Event::FeedError { source: format!("{} feed of {account}", plan.wire.name()), error: format!("a tick of {symbol} at {} for a bar already closed: dropped", crate::domain::time::format_iso_ist(ts)), malformed_frames: None, refused_ticks: Some(n), failures: None });
                    }
                    builder.set_bid(tick.bid);
                    builder.set_ask(tick.ask);
                    last_bucket[i] = Some(start);
                    if let Some(event) = closed
                        && !held[i].pass(event, tx).await {
                            return Ok(());
                        }
                    // The missed bars go after the one the gap interrupted and before this tick's:
                    // its bars wait for them.
                    if let (Some(from), true) = (missed_from, plan.backfill.is_some()) {
                        held[i].reading += 1;
                        let _ = asks_tx.send(ReadBack { token: tick.token.clone(), from, to: start });
                    }
                }
            }
            Some((ask, minutes)) = read.recv() => {
                let ReadBack { token, from, to } = ask;
                // A strike that left the money meanwhile has no bars to merge any more.
                let Some(&i) = index.get(&token) else { continue };
                let symbol = symbols[i].clone();
                match minutes {
                    Ok(minutes) => {
                        let mut bars = CandleBuilder::new(&symbol, tf);
                        let mut filled = Vec::new();
                        for m in minutes.into_iter().filter(|m| m.ts_ms >= from && m.ts_ms < to && options.rules.calendar.is_open(bucket_start(m.ts_ms, tf))) {
                            filled.extend(bars.bar(m));
                        }
                        filled.extend(bars.finish());
                        on_event(Event::FeedBackfilled { account: account.clone(), instrument: symbol.clone(), from, to, bars: filled.len() });
                        for event in &filled {
                            if let (Some(rec), MarketEvent::Candle { bar, .. }) = (options.recorder.as_mut(), event)
                                && let Err(e) = rec.record_bar(now_ms(), &symbol, tf, bar) {
                                    on_event(Event::feed_error("recorder", format!("recording bars read back: {e}; recording stops")));
                                    options.recorder = None;
                                }
                        }
                        held[i].bars.extend(filled);
                    }
                    Err(e) => on_event(Event::feed_error(format!("backfill of {account}"), format!("{symbol}: the bars from {} to {} could not be read: {}", format_iso_ist(from), format_iso_ist(to), printable(&e, 300)))),
                }
                let h = &mut held[i];
                h.reading = h.reading.saturating_sub(1);
                if h.reading == 0 {
                    // Merged in time order: the bars read back, then those held meanwhile.
                    let mut out = std::mem::take(&mut h.bars);
                    out.sort_by_key(|e| match e {
                        MarketEvent::Candle { bar, .. } => bar.ts_ms,
                        MarketEvent::Chain(c) => c.ts_ms,
                    });
                    for event in out {
                        if tx.send(event).await.is_err() {
                            return Ok(());
                        }
                    }
                }
            }
            _ = flush.tick() => {
                if let Some(rec) = options.recorder.as_mut() {
                    let _ = rec.flush();
                }
                // Before any tick, the host's clock stands for the feed's.
                let feed_now = last_seen.map_or_else(now_ms, feed_time);
                for (i, event) in quiet_bars(&mut builders, feed_now) {
                    if !held[i].pass(event, tx).await {
                        return Ok(());
                    }
                }
                let silent = last_seen.map_or(started.elapsed(), |(_, at)| at.elapsed());
                if options.stale_secs > 0 && !is_stale && silent >= Duration::from_secs(options.stale_secs) && options.rules.calendar.is_open(feed_now) {
                    is_stale = true;
                    if let Ok(mut s) = stale.lock() {
                        s.extend(plan.instruments.iter().map(|(sym, _)| sym.clone()));
                    }
                    on_event(Event::FeedStale { account: account.clone(), broker: plan.wire.name().to_owned(), silent_secs: silent.as_secs(), instruments: tokens.len() });
                }
            }
        }
    }
}

/// Set the greeks of the legs of `chain` whose options' ticks brought some (`live`, by
/// token; `tokens` maps each option of the chain to its token).
fn with_live_greeks(
    chain: &mut super::OptionChain,
    tokens: &[(Decimal, bool, String)],
    live: &HashMap<String, super::Greeks>,
) {
    if live.is_empty() {
        return;
    }
    for (strike, call, token) in tokens {
        let Some(g) = live.get(token) else { continue };
        for e in &mut chain.expiries {
            for row in e.strikes.iter_mut().filter(|r| r.strike == *strike) {
                let leg = if *call { &mut row.ce } else { &mut row.pe };
                if let Some(leg) = leg.as_mut() {
                    leg.greeks = Some(*g);
                }
            }
        }
    }
}

/// `(symbol, token)` of the calls and puts of the strike nearest the spot and
/// `n` strikes either side, in the chain's first expiry (symbols as the chain's legs name them).
#[must_use]
pub fn around_the_money(
    chain: &OptionChain,
    tokens: &[(Decimal, bool, String)],
    n: usize,
) -> Vec<(String, String)> {
    let Some(expiry) = chain.expiries.first() else {
        return Vec::new();
    };
    let Some(atm) = expiry
        .strikes
        .iter()
        .enumerate()
        .min_by_key(|(_, r)| (r.strike - chain.spot).abs())
        .map(|(i, _)| i)
    else {
        return Vec::new();
    };
    let (from, to) = (
        atm.saturating_sub(n),
        atm.saturating_add(n)
            .min(expiry.strikes.len().saturating_sub(1)),
    );
    let mut out = Vec::new();
    for row in expiry.strikes.get(from..=to).unwrap_or_default() {
        for (call, kind) in [
            (true, strategy_sdk::OptionKind::Ce),
            (false, strategy_sdk::OptionKind::Pe),
        ] {
            let Some((_, _, token)) = tokens
                .iter()
                .find(|(k, c, _)| *k == row.strike && *c == call)
            else {
                continue;
            };
            let strike = f64::try_from(row.strike).unwrap_or(f64::NAN);
            if let Some(symbol) =
                strategy_sdk::option_symbol(&chain.underlying, &expiry.expiry, strike, kind)
            {
                out.push((symbol, token.clone()));
            }
        }
    }
    out
}

/// A count of things reported at most once per [`REPORT_EVERY`].
#[derive(Debug, Default)]
struct Counted {
    total: u64,
    last: Option<std::time::Instant>,
}

impl Counted {
    /// Count one; `Some(total)` when a report is due.
    fn due(&mut self) -> Option<u64> {
        self.total = self.total.saturating_add(1);
        let due = self.last.is_none_or(|at| at.elapsed() >= REPORT_EVERY);
        if due {
            self.last = Some(std::time::Instant::now());
        }
        due.then_some(self.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    const T0: i64 = 1_704_080_700_000; // 2024-01-01 09:15 IST

    #[test]
    fn a_late_tick_after_a_quiet_close_makes_no_second_candle_for_its_minute() {
        let mut b = CandleBuilder::new("NIFTY", 60);
        assert_eq!(b.tick(T0 + 1_000, dec!(100), 1_000, 0), None);
        // The feed went quiet: the bar is closed by the clock, not by a next tick.
        let Some(MarketEvent::Candle { bar, .. }) = b.finish() else {
            panic!("the bar closes")
        };
        assert_eq!(bar.ts_ms, T0);
        // A tick of that minute arriving late opens nothing; nor does a shorter bar of it.
        assert_eq!(b.tick(T0 + 59_000, dec!(100.5), 1_100, 0), None);
        assert_eq!(b.bar_start(), None, "no second 09:15 bar");
        assert_eq!(
            b.bar(Bar {
                ts_ms: T0,
                open: dec!(100),
                high: dec!(101),
                low: dec!(99),
                close: dec!(100),
                volume: 5,
                oi: 0
            }),
            None
        );
        assert_eq!((b.late(), b.bar_start()), (2, None));
        // The next minute builds as before.
        assert_eq!(b.tick(T0 + 60_000, dec!(101), 1_200, 0), None);
        assert_eq!(b.bar_start(), Some(T0 + 60_000));
    }

    #[test]
    fn ticks_become_candles() {
        let mut b = CandleBuilder::new("NIFTY", 60);
        assert_eq!(b.tick(T0 + 1_000, dec!(100), 1_000, 0), None);
        assert_eq!(b.tick(T0 + 30_000, dec!(103), 1_400, 0), None);
        assert_eq!(b.tick(T0 + 59_999, dec!(99), 1_500, 0), None);
        let Some(MarketEvent::Candle { bar, .. }) = b.tick(T0 + 60_000, dec!(101), 1_600, 0) else {
            panic!("the next minute closes the bar")
        };
        assert_eq!(
            (
                bar.ts_ms, bar.open, bar.high, bar.low, bar.close, bar.volume
            ),
            (T0, dec!(100), dec!(103), dec!(99), dec!(99), 500)
        );
        let Some(MarketEvent::Candle { bar, .. }) = b.finish() else {
            panic!("finish closes the bar in progress")
        };
        assert_eq!(
            (bar.ts_ms, bar.open, bar.volume),
            (T0 + 60_000, dec!(101), 0)
        );
        assert_eq!(b.tick(T0 - 1, dec!(1), 0, 0), None);
    }

    #[test]
    fn five_minute_buckets_follow_the_ist_clock() {
        assert_eq!(
            bucket_start(T0 + 4 * 60_000 + 59_000, 300),
            T0,
            "09:15..09:19 is one 5-minute bar"
        );
        assert_eq!(bucket_start(T0 + 5 * 60_000, 300), T0 + 300_000);
        let bars: Vec<Bar> = (0..10)
            .map(|i| Bar {
                ts_ms: T0 + i * 60_000,
                open: Decimal::from(i),
                high: Decimal::from(i + 1),
                low: Decimal::from(i),
                close: Decimal::from(i),
                volume: 1,
                oi: 0,
            })
            .collect();
        let five = resample(&bars, 300);
        assert_eq!(five.len(), 2);
        assert_eq!(
            (five[0].open, five[0].high, five[0].close, five[0].volume),
            (dec!(0), dec!(5), dec!(4), 5)
        );
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
