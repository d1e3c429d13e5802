//! One pipeline: a market source feeding one sandboxed strategy instance,
//! whose signals get deterministic ids and go to the signal log.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rust_decimal::Decimal;
use serde_json::json;
use tokio::sync::{mpsc, watch};

use super::{Signal, StrategyRunner, sdk_bar, sdk_chain};
use crate::bus::Bus;
use crate::bus::message::{Quote, QuotesMessage, SCHEMA_VERSION, SignalMessage};
use crate::config::{self, Config};
use crate::market::source::{self, MarketEvent};
use crate::monitor::Events;
use crate::sandbox::{PluginInstance, Sandbox};

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
}

impl PipelineSpec {
    /// The spec of `pipeline` in `config`.
    #[must_use]
    pub fn from_config(config: &Config, pipeline: &config::Pipeline) -> Self {
        let source = match &pipeline.source {
            config::Source::Replay { files, speed, underlying } => config::Source::Replay {
                files: files.iter().map(|f| config.resolve(f)).collect(),
                speed: *speed,
                underlying: underlying.as_ref().map(|u| config.resolve(u)),
            },
            other => other.clone(),
        };
        Self {
            id: pipeline.id.get_ref().clone(),
            plugin_path: config.resolve(&config.host.plugin_dir).join(pipeline.plugin.get_ref()),
            params: pipeline.param_pairs(),
            symbols: pipeline.symbols.get_ref().clone(),
            timeframe_secs: pipeline.timeframe_secs(),
            source,
            user: pipeline.user.clone(),
        }
    }
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
}

/// How a pipeline ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PipelineEnd {
    /// The source ran out.
    Finished,
    /// It was told to stop.
    Stopped,
    /// It could not continue; why.
    Failed(String),
}

/// Run a pipeline until its source ends, it is stopped, or it fails.
pub async fn run(spec: PipelineSpec, sandbox: Arc<Sandbox>, bus: Bus, events: Events, mut control: watch::Receiver<Control>, stats: Arc<PipelineStats>) -> PipelineEnd {
    let id = spec.id.clone();
    let fail = |reason: String| async {
        events.emit("pipeline_failed", json!({ "pipeline": id, "error": reason })).await;
        PipelineEnd::Failed(reason)
    };
    let plugin = match sandbox.load_file(&spec.plugin_path) {
        Ok(p) => p,
        Err(e) => return fail(e.to_string()).await,
    };
    let mut strategy = match tokio::task::block_in_place(|| sandbox.instantiate(&plugin, &spec.params)) {
        Ok(s) => s,
        Err(e) => return fail(e.to_string()).await,
    };
    events
        .emit(
            "plugin_loaded",
            json!({ "pipeline": id, "plugin": strategy.name(), "version": strategy.version(), "sha256": plugin.sha256(), "file": spec.plugin_path.display().to_string() }),
        )
        .await;

    let (tx, mut rx) = mpsc::channel::<MarketEvent>(1024);
    let feed = {
        let (spec, bus, events) = (spec.clone(), bus.clone(), events.clone());
        tokio::spawn(async move { feed_source(&spec, &bus, &events, &tx).await })
    };
    events.emit("pipeline_started", json!({ "pipeline": id, "symbols": spec.symbols, "source": source_name(&spec.source) })).await;

    let end = loop {
        tokio::select! {
            biased;
            changed = control.changed() => {
                if changed.is_err() || *control.borrow() == Control::Stop {
                    break PipelineEnd::Stopped;
                }
            }
            event = rx.recv() => {
                let Some(event) = event else { break PipelineEnd::Finished };
                let paused = *control.borrow() == Control::Pause;
                if let Err(e) = handle(&spec, &mut strategy, &bus, &events, &stats, &event, paused).await {
                    break fail(e).await;
                }
            }
        }
    };
    feed.abort();
    let name = match &end {
        PipelineEnd::Finished => "pipeline_finished",
        PipelineEnd::Stopped => "pipeline_stopped",
        PipelineEnd::Failed(_) => return end, // already reported by `fail`
    };
    events.emit(name, json!({ "pipeline": id, "events_in": stats.events_in.load(Ordering::Relaxed), "signals_out": stats.signals_out.load(Ordering::Relaxed) })).await;
    end
}

fn source_name(source: &config::Source) -> &'static str {
    match source {
        config::Source::Replay { .. } => "replay",
        config::Source::Synthetic { .. } => "synthetic",
        config::Source::Redis => "redis",
    }
}

async fn feed_source(spec: &PipelineSpec, bus: &Bus, events: &Events, tx: &mpsc::Sender<MarketEvent>) {
    let tf = spec.timeframe_secs;
    match &spec.source {
        config::Source::Replay { files, speed, underlying } => {
            let loaded = {
                let (files, underlying) = (files.clone(), underlying.clone());
                tokio::task::spawn_blocking(move || source::load_replay(&files, underlying.as_ref(), tf)).await
            };
            match loaded {
                Ok(Ok(list)) => source::pace(list, *speed, tf, tx).await,
                Ok(Err(e)) => events.error(&format!("pipeline {}", spec.id), &e.to_string()).await,
                Err(e) => events.error(&format!("pipeline {}", spec.id), &e.to_string()).await,
            }
        }
        config::Source::Synthetic { seed, days, speed, start_price, option_chain } => {
            let list = source::synthetic_events(&spec.symbols, *seed, *days, *start_price, *option_chain, tf);
            source::pace(list, *speed, tf, tx).await;
        }
        config::Source::Redis => {
            let (events2, id) = (events.clone(), spec.id.clone());
            let on_error = move |reason: String| {
                let (events, id) = (events2.clone(), id.clone());
                tokio::spawn(async move { events.error(&format!("market feed of {id}"), &reason).await });
            };
            if let Err(e) = source::redis_feed(bus, &spec.symbols, tf, tx, on_error).await {
                events.error(&format!("pipeline {}", spec.id), &e.to_string()).await;
            }
        }
    }
}

/// Feed one event to the strategy, publish the prices it saw and log its signals.
async fn handle(
    spec: &PipelineSpec,
    strategy: &mut PluginInstance,
    bus: &Bus,
    events: &Events,
    stats: &PipelineStats,
    event: &MarketEvent,
    paused: bool,
) -> Result<(), String> {
    let ts = event.ts_ms();
    let (raw, quotes) = match event {
        MarketEvent::Candle { instrument, timeframe_secs, bar } => {
            let b = sdk_bar(bar);
            let raw = tokio::task::block_in_place(|| strategy.on_candle(instrument, *timeframe_secs, &b)).map_err(|e| e.to_string())?;
            (raw, vec![Quote { instrument: instrument.clone(), open: bar.open, high: bar.high, low: bar.low, close: bar.close }])
        }
        MarketEvent::Chain(chain) => {
            let c = sdk_chain(chain);
            let raw = tokio::task::block_in_place(|| strategy.on_option_chain(&c)).map_err(|e| e.to_string())?;
            let quotes = chain
                .legs()
                .filter(|(_, l)| l.last > Decimal::ZERO)
                .map(|(instrument, l)| Quote { instrument, open: l.last, high: l.last, low: l.last, close: l.last })
                .collect();
            (raw, quotes)
        }
    };
    stats.events_in.fetch_add(1, Ordering::Relaxed);
    // Prices first: the order side fills an order only on a price later than its signal.
    let quotes_msg = QuotesMessage { v: SCHEMA_VERSION, kind: "quotes".into(), id: format!("{}/{ts}", spec.id), ts, quotes };
    let price_of = |instrument: &str| quotes_msg.quotes.iter().find(|q| q.instrument == instrument).map(|q| q.close);
    if let Ok(json) = serde_json::to_string(&quotes_msg) {
        if let Err(e) = bus.publish(&bus.channels().quotes(), &json).await {
            events.error(&format!("pipeline {}", spec.id), &format!("publishing prices: {e}")).await;
        }
    }
    for (seq, s) in raw.into_iter().enumerate() {
        let signal = match Signal::from_strategy(ts, s) {
            Ok(s) => s,
            Err(reason) => {
                stats.signals_refused.fetch_add(1, Ordering::Relaxed);
                events.error(&format!("pipeline {}", spec.id), &reason).await;
                continue;
            }
        };
        if paused {
            stats.signals_suppressed.fetch_add(1, Ordering::Relaxed);
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
        };
        // A failed append is retried: the id makes a retry harmless, and a
        // signal must not be lost to a passing network error.
        let mut delay = std::time::Duration::from_millis(50);
        loop {
            match bus.append_signal(&msg.id, &msg.to_json()).await {
                Ok(true) => {
                    stats.signals_out.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Ok(false) => {
                    stats.signals_refused.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(e) => {
                    events.error(&format!("pipeline {}", spec.id), &format!("logging signal {}: {e}; retrying", msg.id)).await;
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(std::time::Duration::from_secs(5));
                }
            }
        }
    }
    Ok(())
}
