//! One pipeline: a market source feeding one sandboxed strategy instance,
//! whose signals get deterministic ids and go to the signal log.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::json;
use tokio::sync::{mpsc, watch};

use super::{Signal, StrategyRunner, sdk_bar, sdk_chain};
use crate::bus::Bus;
use crate::bus::events::{Event, Events};
use crate::bus::message::{Quote, QuotesMessage, SCHEMA_VERSION, SignalMessage};
use crate::config::{self, Config};
use crate::market::feed::BrokerLinks;
use crate::market::feed::socket::SocketSettings;
use crate::market::recorder::TickRecorder;
use crate::market::source::{self, BrokerFeedOptions, MarketEvent, StaleSet};
use crate::sandbox::{CpuBudget, Plugin, PluginInstance, Sandbox, SandboxLimits};

/// What a pipeline runs, resolved from the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineSpec {
    /// Pipeline id.
    pub id: String,
    /// The plugin file.
    pub plugin_path: PathBuf,
    /// `init` parameters.
    pub params: Vec<(String, String)>,
    /// Instruments.
    pub symbols: Vec<String>,
    /// Bar length.
    pub timeframe_secs: u32,
    /// Market data, with paths resolved.
    pub source: config::Source,
    /// Owner.
    pub user: Option<String>,
    /// Sandbox limits of its plugin instance.
    pub limits: SandboxLimits,
    /// Recent events kept to warm up a new instance.
    pub warmup_candles: usize,
    /// What a price from a live feed must satisfy.
    pub guard: crate::market::guard::GuardRules,
    /// About how many messages the bus's price stream keeps.
    pub prices_kept: usize,
    /// No signal before this time (the configuration's `trade_from`): warm-up only.
    pub trade_from_ms: Option<i64>,
    /// Where a broker source records what it receives.
    pub record_dir: Option<PathBuf>,
}

impl PipelineSpec {
    /// The spec of `pipeline` in `config`.
    #[must_use]
    pub fn from_config(config: &Config, pipeline: &config::Pipeline) -> Self {
        let source = match &pipeline.source {
            config::Source::Replay {
                files,
                speed,
                underlying,
            } => config::Source::Replay {
                files: files.iter().map(|f| config.resolve(f)).collect(),
                speed: *speed,
                underlying: underlying.as_ref().map(|u| config.resolve(u)),
            },
            other => other.clone(),
        };
        Self {
            id: pipeline.id.get_ref().clone(),
            plugin_path: config
                .resolve(&config.host.plugin_dir)
                .join(pipeline.plugin.get_ref()),
            params: pipeline.param_pairs(),
            symbols: pipeline.symbols.get_ref().clone(),
            timeframe_secs: pipeline.timeframe_secs(),
            source,
            user: pipeline.user.clone(),
            limits: SandboxLimits {
                cpu: CpuBudget::Time {
                    per_event: std::time::Duration::from_millis(pipeline.limits.cpu_ms_per_event),
                },
                memory_bytes: pipeline.limits.memory_mib.saturating_mul(1 << 20),
                max_signals_per_event: pipeline.limits.max_signals_per_event,
                ..SandboxLimits::live()
            },
            warmup_candles: pipeline.warmup_candles,
            guard: crate::market::guard::GuardRules::from_config(
                &config.market,
                match &pipeline.source {
                    config::Source::Redis { max_skew_secs }
                    | config::Source::Broker { max_skew_secs, .. } => *max_skew_secs,
                    _ => 0,
                },
            ),
            prices_kept: config.bus.prices_kept,
            trade_from_ms: pipeline.trade_from_ms(),
            record_dir: config.host.record_dir.as_ref().map(|d| config.resolve(d)),
        }
    }

    /// Whether `other` differs only in what a hot swap can change (params,
    /// limits, warm-up window): then no restart of the feed is needed.
    #[must_use]
    pub fn same_feed(&self, other: &Self) -> bool {
        self.plugin_path == other.plugin_path
            && self.symbols == other.symbols
            && self.timeframe_secs == other.timeframe_secs
            && self.source == other.source
            && self.guard == other.guard
            && self.trade_from_ms == other.trade_from_ms
    }
}

/// A validated plugin instance, ready to replace the running one between two events.
pub struct Swap {
    /// The new instance, `init` already called with the pipeline's params.
    pub instance: PluginInstance,
    /// Content hash of its file.
    pub sha256: String,
    /// Why: `file changed`, `config changed`.
    pub cause: String,
}

/// What the pipeline should be doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Trading.
    Run,
    /// Seeing data (indicators stay warm) but emitting no signals.
    Pause,
    /// Ending.
    Stop,
}

/// Live counters of a pipeline.
#[derive(Debug, Default)]
pub struct PipelineStats {
    /// Market events handed to the strategy.
    pub events_in: AtomicU64,
    /// Signals logged.
    pub signals_out: AtomicU64,
    /// Signals dropped while paused.
    pub signals_suppressed: AtomicU64,
    /// Signals refused (bad prices) or already logged (replays).
    pub signals_refused: AtomicU64,
    /// Events that arrived while the plugin was quarantined.
    pub events_skipped: AtomicU64,
    /// Hot swaps done.
    pub swaps: AtomicU64,
    /// Restarts after a failure.
    pub restarts: AtomicU64,
    /// Id of the last signal logged, carried by the next prices (see `QuotesMessage::after_signal`).
    pub last_signal: std::sync::Mutex<Option<String>>,
    /// Prices and signals waiting for the bus (during an outage).
    pub buffered: AtomicU64,
    /// Publications retried because the bus did not take them.
    pub retries: AtomicU64,
    /// Instruments whose broker feed is stale: entries on them are held.
    pub stale: crate::market::source::StaleSet,
    /// Entry signals held because their instrument's feed was stale.
    pub entries_held: AtomicU64,
    /// From the pipeline taking a market event to its signal on the bus.
    pub tick_to_signal: crate::domain::stats::Histogram,
    /// Wall-clock ms of the last market event taken (0: none yet): its feed's staleness.
    pub last_event_wall_ms: std::sync::atomic::AtomicI64,
    /// Fuel the strategy has burned (this instance; 0 when its budget is in time).
    pub fuel_total: AtomicU64,
    /// The strategy's linear memory, in bytes.
    pub memory_bytes: AtomicU64,
    /// Time the strategy has spent in its calls, in microseconds (this instance).
    pub busy_us: AtomicU64,
}

/// What a pipeline hands to the bus, in the order it happened.
enum Outgoing {
    Quotes(String),
    /// With when its market event was taken.
    Signal {
        id: String,
        json: String,
        taken: std::time::Instant,
    },
}

/// Most prices and signals a pipeline buffers while the bus is away; beyond
/// that the pipeline waits (its feed is then held up, never dropped).
pub const OUTBOX_CAPACITY: usize = 100_000;

/// Publishes a pipeline's prices and signals in order, each retried with
/// back-off until the bus takes it: an outage holds them back, loses none,
/// and never stops the pipeline seeing its market.
fn spawn_outbox(
    bus: Bus,
    events: Events,
    pipeline: String,
    stats: Arc<PipelineStats>,
    prices_kept: usize,
) -> (mpsc::Sender<Outgoing>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Outgoing>(OUTBOX_CAPACITY);
    let task = tokio::spawn(async move {
        while let Some(item) = rx.recv().await {
            let mut delay = Duration::from_millis(50);
            let mut failures = 0u64;
            loop {
                let result = match &item {
                    Outgoing::Quotes(json) => {
                        bus.append_quotes(json, prices_kept).await.map(|()| None)
                    }
                    Outgoing::Signal { id, json, .. } => {
                        bus.append_signal(id, json).await.map(Some)
                    }
                };
                match result {
                    Ok(logged) => {
                        if let (Some(true), Outgoing::Signal { taken, .. }) = (logged, &item) {
                            stats.tick_to_signal.observe(taken.elapsed());
                        }
                        match logged {
                            Some(true) => stats.signals_out.fetch_add(1, Ordering::Relaxed),
                            Some(false) => stats.signals_refused.fetch_add(1, Ordering::Relaxed),
                            None => 0,
                        };
                        if failures > 0 {
                            events
                                .publish(&Event::BusRecovered {
                                    pipeline: pipeline.clone(),
                                    retries: failures,
                                    still_buffered: rx.len(),
                                })
                                .await;
                        }
                        break;
                    }
                    Err(e) => {
                        if failures == 0 {
                            // Once per outage: the bus it would go to is the one that is away.
                            tracing::warn!(
                                pipeline,
                                "publishing to the bus: {e}; buffering and retrying"
                            );
                            events
                                .error(
                                    &format!("pipeline {pipeline}"),
                                    &format!("publishing to the bus: {e}; buffering and retrying"),
                                )
                                .await;
                        }
                        failures += 1;
                        stats.retries.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(2));
                    }
                }
            }
            stats.buffered.store(rx.len() as u64, Ordering::Relaxed);
        }
    });
    (tx, task)
}

/// How a pipeline ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PipelineEnd {
    /// The source ran out.
    Finished,
    /// It was told to stop.
    Stopped,
    /// It could not continue; why.
    Failed(SourceError),
}

/// Why a pipeline's source could not run. Each is permanent for this run of
/// the pipeline (the same configuration fails the same way): the pipeline
/// ends `failed` with an alert, and a corrected file or configuration (a
/// reload) starts it again. What is transient is handled below this: a feed
/// reconnects with back-off by itself, and a strategy that fails on an event
/// is quarantined and retried with back-off ([`FIRST_BACKOFF`]), never a
/// source error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// The replay's data cannot be used: a file missing or malformed, or no bars in the session.
    #[error("{0}")]
    Data(String),
    /// A live feed cannot start: no broker link in this process, an instrument
    /// the broker does not know, a subscription refused.
    #[error("{0}")]
    Feed(String),
}

impl SourceError {
    /// `data` or `feed`, for events.
    #[must_use]
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::Data(_) => "data",
            Self::Feed(_) => "feed",
        }
    }
}

/// First back-off after a plugin fails; doubled on each failure up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest back-off.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A plugin healthy this long after a restart gets its back-off reset.
pub const HEALTHY_RESET: Duration = Duration::from_secs(60);

/// The running plugin of a pipeline, or why there is none.
struct Running {
    instance: Option<PluginInstance>,
    sha256: String,
    quarantined_until: Option<tokio::time::Instant>,
    backoff: Duration,
    healthy_since: tokio::time::Instant,
    recent: VecDeque<MarketEvent>,
    /// Time of the last event seen (the end of a replay's prices).
    last_ts: Option<i64>,
}

/// Feed recent events to a fresh instance so its indicators are not cold; its signals are dropped.
fn warm_up(instance: &mut PluginInstance, recent: &VecDeque<MarketEvent>) -> Result<usize, String> {
    tokio::task::block_in_place(|| {
        for event in recent {
            match event {
                MarketEvent::Candle {
                    instrument,
                    timeframe_secs,
                    bar,
                    ..
                } => {
                    instance
                        .on_candle(instrument, *timeframe_secs, &sdk_bar(bar))
                        .map_err(|e| e.to_string())?;
                }
                MarketEvent::Chain(chain) => {
                    instance
                        .on_option_chain(&sdk_chain(chain))
                        .map_err(|e| e.to_string())?;
                }
            }
        }
        Ok(recent.len())
    })
}

/// Run a pipeline until its source ends, it is stopped, or it cannot start.
/// A plugin that fails mid-run is quarantined and restarted with back-off
/// (1 s doubling to 30 s, reset after a healthy minute); new versions arrive
/// on `swaps` and replace it between two events.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    spec: PipelineSpec,
    plugin: Plugin,
    sandbox: Arc<Sandbox>,
    bus: Bus,
    events: Events,
    mut control: watch::Receiver<Control>,
    mut swaps: mpsc::Receiver<Swap>,
    stats: Arc<PipelineStats>,
    feeds: Option<BrokerLinks>,
) -> PipelineEnd {
    let id = spec.id.clone();
    let mut plugin = plugin;
    let mut run = Running {
        instance: None,
        sha256: plugin.sha256().to_owned(),
        quarantined_until: None,
        backoff: FIRST_BACKOFF,
        healthy_since: tokio::time::Instant::now(),
        recent: VecDeque::with_capacity(spec.warmup_candles.min(100_000)),
        last_ts: None,
    };
    match tokio::task::block_in_place(|| {
        sandbox.instantiate_with(&plugin, &spec.params, &spec.limits)
    }) {
        Ok(instance) => {
            events
                .publish(&Event::PluginLoaded {
                    pipeline: id.clone(),
                    plugin: instance.name().to_owned(),
                    version: instance.version().to_owned(),
                    sha256: plugin.sha256().to_owned(),
                    file: spec.plugin_path.display().to_string(),
                    from_cache: plugin.from_cache(),
                })
                .await;
            run.instance = Some(instance);
        }
        // A plugin that fails to start (a loop or a trap in `init`) is treated like
        // one that fails later: quarantined, and retried with back-off.
        Err(e) => quarantine(&spec, &mut run, &events, e.to_string()).await,
    }

    let (outbox, outbox_task) = spawn_outbox(
        bus.clone(),
        events.clone(),
        id.clone(),
        stats.clone(),
        spec.prices_kept,
    );
    let (tx, mut rx) = mpsc::channel::<MarketEvent>(1024);
    let mut feed = {
        let (spec, bus, events, stale) = (
            spec.clone(),
            bus.clone(),
            events.clone(),
            stats.stale.clone(),
        );
        tokio::spawn(async move { feed_source(&spec, &bus, &events, feeds, stale, &tx).await })
    };
    events
        .publish(&Event::PipelineStarted {
            pipeline: id.clone(),
            symbols: spec.symbols.clone(),
            source: source_name(&spec.source).to_owned(),
        })
        .await;

    let end = loop {
        tokio::select! {
            biased;
            changed = control.changed() => {
                if changed.is_err() || *control.borrow() == Control::Stop {
                    break PipelineEnd::Stopped;
                }
            }
            swap = swaps.recv() => {
                let Some(swap) = swap else { continue };
                apply_swap(&spec, &mut run, swap, &events, &stats).await;
            }
            event = rx.recv() => {
                let Some(event) = event else {
                    break match (&mut feed).await {
                        Ok(Err(reason)) => PipelineEnd::Failed(reason),
                        _ => PipelineEnd::Finished,
                    };
                };
                if run.instance.is_none() {
                    restart_if_due(&spec, &mut run, &mut plugin, &sandbox, &events, &stats).await;
                }
                let paused = *control.borrow() == Control::Pause;
                run.last_ts = Some(event.ts_ms());
                match run.instance.as_mut() {
                    Some(instance) => {
                        if let Err(e) = handle(&spec, instance, &run.sha256, &outbox, &events, &stats, &event, paused).await {
                            quarantine(&spec, &mut run, &events, e).await;
                        } else if run.backoff > FIRST_BACKOFF && run.healthy_since.elapsed() >= HEALTHY_RESET {
                            run.backoff = FIRST_BACKOFF;
                        }
                    }
                    None => {
                        stats.events_skipped.fetch_add(1, Ordering::Relaxed);
                        publish_prices(&spec, &outbox, &stats, &event).await;
                    }
                }
                if spec.warmup_candles > 0 {
                    if run.recent.len() == spec.warmup_candles {
                        run.recent.pop_front();
                    }
                    run.recent.push_back(event);
                }
            }
        }
    };
    feed.abort();
    // The order side merges the replays in event time: it stops waiting for this one.
    let end_ts = run.last_ts.unwrap_or_else(crate::domain::time::now_ms);
    let after_signal = stats.last_signal.lock().ok().and_then(|g| g.clone());
    let last = QuotesMessage {
        v: SCHEMA_VERSION,
        kind: "quotes".into(),
        id: format!("{id}/{end_ts}"),
        ts: end_ts,
        quotes: Vec::new(),
        after_signal,
        last: true,
    };
    if let Ok(json) = serde_json::to_string(&last) {
        send(&outbox, &stats, Outgoing::Quotes(json)).await;
    }
    // What was handed to the bus goes out before the pipeline is over; when it
    // is stopped (a shutdown), not longer than a moment: a bus that is away
    // must not hold up the stop. What is still buffered then is reported.
    drop(outbox);
    let drained = match end {
        PipelineEnd::Stopped => tokio::time::timeout(Duration::from_secs(2), outbox_task)
            .await
            .is_ok(),
        _ => outbox_task.await.is_ok(),
    };
    if !drained {
        events
            .error(
                &format!("pipeline {id}"),
                &format!(
                    "stopped with {} prices and signals not yet on the bus",
                    stats.buffered.load(Ordering::Relaxed)
                ),
            )
            .await;
    }
    let pipeline = id.clone();
    let (events_in, signals_out, events_skipped, swaps, restarts) = (
        stats.events_in.load(Ordering::Relaxed),
        stats.signals_out.load(Ordering::Relaxed),
        stats.events_skipped.load(Ordering::Relaxed),
        stats.swaps.load(Ordering::Relaxed),
        stats.restarts.load(Ordering::Relaxed),
    );
    let event = match &end {
        PipelineEnd::Finished => Event::PipelineFinished {
            pipeline,
            events_in,
            signals_out,
            events_skipped,
            swaps,
            restarts,
        },
        PipelineEnd::Stopped => Event::PipelineStopped {
            pipeline,
            events_in,
            signals_out,
            events_skipped,
            swaps,
            restarts,
        },
        PipelineEnd::Failed(reason) => Event::PipelineFailed {
            pipeline,
            reason: reason.to_string(),
            kind: reason.kind().to_owned(),
        },
    };
    events.publish(&event).await;
    end
}

async fn quarantine(spec: &PipelineSpec, run: &mut Running, events: &Events, error: String) {
    let until = tokio::time::Instant::now() + run.backoff;
    events
        .publish(&Event::PluginFailed {
            pipeline: spec.id.clone(),
            error: error.clone(),
            quarantined_for_ms: u64::try_from(run.backoff.as_millis()).unwrap_or(u64::MAX),
        })
        .await;
    run.instance = None;
    run.quarantined_until = Some(until);
    run.backoff = (run.backoff * 2).min(MAX_BACKOFF);
}

async fn restart_if_due(
    spec: &PipelineSpec,
    run: &mut Running,
    plugin: &mut Plugin,
    sandbox: &Sandbox,
    events: &Events,
    stats: &PipelineStats,
) {
    if run
        .quarantined_until
        .is_some_and(|t| tokio::time::Instant::now() < t)
    {
        return;
    }
    let fresh = tokio::task::block_in_place(|| {
        sandbox.instantiate_with(plugin, &spec.params, &spec.limits)
    })
    .map_err(|e| e.to_string());
    let warmed = fresh.and_then(|mut i| warm_up(&mut i, &run.recent).map(|n| (i, n)));
    match warmed {
        Ok((instance, n)) => {
            stats.restarts.fetch_add(1, Ordering::Relaxed);
            run.instance = Some(instance);
            run.quarantined_until = None;
            run.healthy_since = tokio::time::Instant::now();
            events
                .publish(&Event::PluginRestarted {
                    pipeline: spec.id.clone(),
                    warmed_up_with: n,
                })
                .await;
        }
        Err(e) => quarantine(spec, run, events, format!("restart failed: {e}")).await,
    }
}

async fn apply_swap(
    spec: &PipelineSpec,
    run: &mut Running,
    mut swap: Swap,
    events: &Events,
    stats: &PipelineStats,
) {
    let paused_at = std::time::Instant::now();
    let (old_version, old_sha) = (
        run.instance.as_ref().map(|i| i.version().to_owned()),
        run.sha256.clone(),
    );
    // State first from the old instance's snapshot; when there is none, or the new
    // version refuses it, from the recent events.
    let snapshot = run
        .instance
        .as_mut()
        .map(|i| tokio::task::block_in_place(|| i.snapshot()));
    let carried = match snapshot {
        Some(Ok(state)) => match tokio::task::block_in_place(|| swap.instance.restore(&state)) {
            Ok(Ok(())) => Ok("snapshot".to_owned()),
            Ok(Err(refused)) => warm_up(&mut swap.instance, &run.recent)
                .map(|n| format!("warm-up from {n} events (snapshot refused: {refused})")),
            Err(e) => Err(e.to_string()),
        },
        _ => warm_up(&mut swap.instance, &run.recent).map(|n| format!("warm-up from {n} events")),
    };
    let pause_us = u64::try_from(paused_at.elapsed().as_micros()).unwrap_or(u64::MAX);
    match carried {
        Ok(how) => {
            events
                .publish(&Event::PluginSwapped {
                    pipeline: spec.id.clone(),
                    cause: swap.cause.clone(),
                    old_version,
                    new_version: swap.instance.version().to_owned(),
                    old_sha256: old_sha,
                    new_sha256: swap.sha256.clone(),
                    state: how,
                    // How long the events behind this one waited for the swap.
                    pause_us,
                })
                .await;
            run.sha256 = swap.sha256;
            run.instance = Some(swap.instance);
            run.quarantined_until = None;
            run.healthy_since = tokio::time::Instant::now();
            stats.swaps.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            events
                .publish(&Event::PluginRefused {
                    pipeline: Some(spec.id.clone()),
                    file: None,
                    sha256: Some(swap.sha256.clone()),
                    reason: format!("taking over the state failed: {e}"),
                })
                .await;
        }
    }
}

fn source_name(source: &config::Source) -> &'static str {
    match source {
        config::Source::Replay { .. } => "replay",
        config::Source::Synthetic { .. } => "synthetic",
        config::Source::Redis { .. } => "redis",
        config::Source::Broker { .. } => "broker",
    }
}

/// Run the pipeline's source until it ends; `Err` when it cannot start (a
/// missing or bad replay file, a feed that cannot subscribe).
async fn feed_source(
    spec: &PipelineSpec,
    bus: &Bus,
    events: &Events,
    feeds: Option<BrokerLinks>,
    stale: StaleSet,
    tx: &mpsc::Sender<MarketEvent>,
) -> Result<(), SourceError> {
    let tf = spec.timeframe_secs;
    match &spec.source {
        config::Source::Replay {
            files,
            speed,
            underlying,
        } => {
            let loaded = {
                let (files, underlying) = (files.clone(), underlying.clone());
                tokio::task::spawn_blocking(move || {
                    source::load_replay(&files, underlying.as_ref(), tf)
                })
                .await
            };
            let list = match loaded {
                Ok(Ok(list)) => list,
                Ok(Err(e)) => return Err(SourceError::Data(e.to_string())),
                Err(e) => return Err(SourceError::Data(format!("loading the replay files: {e}"))),
            };
            if list.is_empty() {
                return Err(SourceError::Data(format!(
                    "the replay files hold no bars inside the session: {}",
                    files
                        .iter()
                        .map(|f| f.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            source::pace(list, *speed, tf, tx).await;
        }
        config::Source::Synthetic {
            seed,
            days,
            speed,
            start_price,
            option_chain,
        } => {
            let list = source::synthetic_events(
                &spec.symbols,
                *seed,
                *days,
                *start_price,
                *option_chain,
                tf,
            );
            source::pace(list, *speed, tf, tx).await;
        }
        config::Source::Redis { .. } => {
            let (events2, id) = (events.clone(), spec.id.clone());
            let on_error = move |reason: String| {
                let (events, id) = (events2.clone(), id.clone());
                tokio::spawn(async move {
                    events.error(&format!("market feed of {id}"), &reason).await
                });
            };
            let (events3, id3) = (events.clone(), spec.id.clone());
            let on_gap = move |gap: crate::market::guard::Gap| {
                let events = events3.clone();
                let event = gap.event(format!("market feed of {id3}"));
                tokio::spawn(async move { events.publish(&event).await });
            };
            source::redis_feed(
                bus,
                &spec.symbols,
                tf,
                spec.guard.clone(),
                tx,
                on_error,
                on_gap,
            )
            .await
            .map_err(|e| SourceError::Feed(e.to_string()))?;
        }
        config::Source::Broker {
            account,
            stale_secs,
            chain_secs,
            expiry,
            strikes,
            ..
        } => {
            let links = feeds.ok_or_else(|| {
                SourceError::Feed(format!(
                    "source account {account}: broker feeds are not available in this process"
                ))
            })?;
            let plan = (links.feed)(account.clone(), spec.symbols.clone())
                .await
                .map_err(SourceError::Feed)?;
            let chain = match (*chain_secs, spec.symbols.first()) {
                (secs, Some(underlying)) if secs > 0 => Some((
                    (links.chain)(account.clone(), underlying.clone(), expiry.clone())
                        .await
                        .map_err(SourceError::Feed)?,
                    Duration::from_secs(secs),
                )),
                _ => None,
            };
            let options = BrokerFeedOptions {
                timeframe_secs: tf,
                rules: spec.guard.clone(),
                stale_secs: *stale_secs,
                recorder: spec
                    .record_dir
                    .as_ref()
                    .map(|d| TickRecorder::new(d, &spec.id)),
                socket: SocketSettings::default(),
                chain,
                strikes: *strikes,
            };
            let (events2, id) = (events.clone(), spec.id.clone());
            // Published with the pipeline's id beside the event's own fields.
            let on_event = move |event: Event| {
                let mut body = event.fields();
                if let Some(o) = body.as_object_mut() {
                    o.remove("event");
                    o.insert("pipeline".into(), json!(id));
                }
                let events = events2.clone();
                tokio::spawn(async move { events.emit(event.name(), body).await });
            };
            source::broker_feed(plan, options, stale, tx, on_event)
                .await
                .map_err(|e| SourceError::Feed(e.to_string()))?;
        }
    }
    Ok(())
}

/// Hand an item to the outbox: waits when it is full (the bus has been away
/// for [`OUTBOX_CAPACITY`] items), so nothing is dropped.
async fn send(outbox: &mpsc::Sender<Outgoing>, stats: &PipelineStats, item: Outgoing) {
    let _ = outbox.send(item).await;
    stats.buffered.store(
        (OUTBOX_CAPACITY - outbox.capacity()) as u64,
        Ordering::Relaxed,
    );
}

/// Publish an event's prices for the order side, naming the last signal logged
/// before them. Also while the strategy is quarantined: stops, targets and
/// fills on those instruments must not wait for it.
async fn publish_prices(
    spec: &PipelineSpec,
    outbox: &mpsc::Sender<Outgoing>,
    stats: &PipelineStats,
    event: &MarketEvent,
) -> QuotesMessage {
    let quotes = match event {
        MarketEvent::Candle {
            instrument,
            bar,
            bid,
            ask,
            ..
        } => vec![Quote {
            instrument: instrument.clone(),
            open: bar.open,
            high: bar.high,
            low: bar.low,
            close: bar.close,
            bid: *bid,
            ask: *ask,
        }],
        MarketEvent::Chain(chain) => chain
            .legs()
            .filter(|(_, l)| l.last > Decimal::ZERO)
            .map(|(instrument, l)| Quote {
                instrument,
                open: l.last,
                high: l.last,
                low: l.last,
                close: l.last,
                bid: None,
                ask: None,
            })
            .collect(),
    };
    let ts = event.ts_ms();
    let after_signal = stats.last_signal.lock().ok().and_then(|g| g.clone());
    let msg = QuotesMessage {
        v: SCHEMA_VERSION,
        kind: "quotes".into(),
        id: format!("{}/{ts}", spec.id),
        ts,
        quotes,
        after_signal,
        last: false,
    };
    if let Ok(json) = serde_json::to_string(&msg) {
        send(outbox, stats, Outgoing::Quotes(json)).await;
    }
    msg
}

/// Feed one event to the strategy, publish the prices it saw and log its signals.
#[allow(clippy::too_many_arguments)]
async fn handle(
    spec: &PipelineSpec,
    strategy: &mut PluginInstance,
    sha256: &str,
    outbox: &mpsc::Sender<Outgoing>,
    events: &Events,
    stats: &PipelineStats,
    event: &MarketEvent,
    paused: bool,
) -> Result<(), String> {
    let ts = event.ts_ms();
    let taken = std::time::Instant::now();
    stats
        .last_event_wall_ms
        .store(crate::domain::time::now_ms(), Ordering::Relaxed);
    // Prices first (even when the strategy then fails on them): the order side
    // fills an order only on a price later than its signal.
    let quotes_msg = publish_prices(spec, outbox, stats, event).await;
    let raw = match event {
        MarketEvent::Candle {
            instrument,
            timeframe_secs,
            bar,
            ..
        } => {
            let b = sdk_bar(bar);
            tokio::task::block_in_place(|| strategy.on_candle(instrument, *timeframe_secs, &b))
                .map_err(|e| e.to_string())?
        }
        MarketEvent::Chain(chain) => {
            let c = sdk_chain(chain);
            tokio::task::block_in_place(|| strategy.on_option_chain(&c))
                .map_err(|e| e.to_string())?
        }
    };
    stats.events_in.fetch_add(1, Ordering::Relaxed);
    let usage = strategy.usage();
    stats.fuel_total.store(usage.fuel_total, Ordering::Relaxed);
    stats
        .memory_bytes
        .store(usage.memory_bytes, Ordering::Relaxed);
    stats.busy_us.store(usage.busy_us, Ordering::Relaxed);
    let price_of = |instrument: &str| {
        quotes_msg
            .quotes
            .iter()
            .find(|q| q.instrument == instrument)
            .map(|q| q.close)
    };
    for (seq, s) in raw.into_iter().enumerate() {
        let signal = match Signal::from_strategy(ts, s) {
            Ok(s) => s,
            Err(reason) => {
                stats.signals_refused.fetch_add(1, Ordering::Relaxed);
                events
                    .error(&format!("pipeline {}", spec.id), &reason)
                    .await;
                continue;
            }
        };
        if paused || spec.trade_from_ms.is_some_and(|from| ts < from) {
            stats.signals_suppressed.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        // A stale feed holds new entries on its instruments; exits always pass.
        let entry = signal.side.as_str() != "exit";
        if entry
            && stats
                .stale
                .lock()
                .is_ok_and(|s| s.contains(&signal.instrument))
        {
            stats.entries_held.fetch_add(1, Ordering::Relaxed);
            events
                .publish(&Event::EntryHeld {
                    pipeline: spec.id.clone(),
                    instrument: signal.instrument.clone(),
                    side: signal.side.as_str().to_owned(),
                    reason: "its market feed is stale".into(),
                })
                .await;
            continue;
        }
        let msg = SignalMessage {
            v: SCHEMA_VERSION,
            kind: "signal".into(),
            id: SignalMessage::make_id(&spec.id, strategy.name(), strategy.version(), ts, seq),
            ts,
            pipeline: spec.id.clone(),
            plugin: strategy.name().to_owned(),
            plugin_version: strategy.version().to_owned(),
            price: price_of(&signal.instrument),
            instrument: signal.instrument,
            side: signal.side.as_str().to_owned(),
            reason: signal.reason,
            stop_loss: signal.stop_loss,
            target: signal.target,
            strength: signal.strength,
            plugin_sha256: Some(sha256.to_owned()),
            order: crate::bus::message::OrderTerms::of(signal.order, signal.validity),
        };
        // The outbox retries a failed append: the id makes a retry harmless,
        // and a signal must not be lost to a passing network error.
        if let Ok(mut last) = stats.last_signal.lock() {
            *last = Some(msg.id.clone());
        }
        send(
            outbox,
            stats,
            Outgoing::Signal {
                json: msg.to_json(),
                id: msg.id,
                taken,
            },
        )
        .await;
    }
    Ok(())
}
