//! `tradehost run`: the pipelines of `pipelines.toml`, in one process or
//! split into an engine role and an orders role sharing one Redis.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::bus::message::{Command, CommandMessage, Quote, QuotesMessage, SignalMessage, printable};
use crate::bus::{Bus, Channels, LogEntry, Subscription};
use crate::config::Config;
use crate::engine::supervisor::Supervisor;
use crate::engine::watch::Change;
use crate::market::guard::{GuardRules, PriceGuard};
use crate::bus::events::Events;
use crate::orders::{OrderManager, Outcome};
use crate::sandbox::{Sandbox, SandboxLimits};

/// Which stages this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Everything.
    All,
    /// Market sources and strategies: signals into the bus.
    Engine,
    /// Subscriber and order manager: signals out of the bus into orders.
    Orders,
}

/// `tradehost run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The configuration.
    #[arg(long, default_value = "pipelines.toml")]
    pub config: PathBuf,
    /// Which stages to run.
    #[arg(long, value_enum, default_value = "all")]
    pub role: Role,
    /// Redis URL (overrides REDIS_URL and `[bus] url`).
    #[arg(long)]
    pub redis: Option<String>,
    /// Orders journal (overrides `[host] journal`).
    #[arg(long)]
    pub journal: Option<PathBuf>,
    /// Name of this orders process in the consumer group; keep it across restarts.
    #[arg(long, default_value = "orders-1")]
    pub consumer: String,
    /// Print only the final summary, not every signal and order.
    #[arg(long)]
    pub quiet: bool,
    /// Batch replays and tests: exit once every source has ended and every
    /// signal is decided, after this many seconds with nothing to do. Without
    /// it `run` is a service: it runs until SIGTERM, SIGINT or a `shutdown` command.
    #[arg(long, value_name = "SECS")]
    pub until_idle: Option<f64>,
    /// Keep running when no pipeline can trade yet (its plugin missing or
    /// refused), waiting for a plugin to be dropped in; without it `run` exits
    /// non-zero, naming what stops each pipeline.
    #[arg(long)]
    pub wait_for_plugins: bool,
    /// A backtest of a pipeline (`tradehost backtest --config`): paper mode and the
    /// in-process bus, whatever `TRADING_MODE`, `REDIS_URL` or `[bus] url` say.
    #[arg(skip)]
    pub backtest: bool,
}

/// Paper or live, from `TRADING_MODE`.
///
/// # Errors
/// An unknown value.
pub fn trading_mode() -> anyhow::Result<&'static str> {
    match std::env::var("TRADING_MODE").unwrap_or_default().trim().to_ascii_lowercase().as_str() {
        "" | "paper" => Ok("paper"),
        "live" => Ok("live"),
        other => bail!("TRADING_MODE={other:?}: expected paper or live"),
    }
}

const GROUP: &str = "orders";

/// How long a process that has finished its work waits for queued alerts.
const ALERT_FLUSH: Duration = Duration::from_secs(60);
/// The same on SIGTERM: the whole stop must fit in 5 s.
const STOP_ALERT_FLUSH: Duration = Duration::from_secs(2);

/// Run the configured pipelines until SIGTERM, SIGINT or a `shutdown`
/// command (or, with `--until-idle`, until every source has ended and every
/// signal is decided).
///
/// # Errors
/// A configuration, bus or journal that cannot be used; live mode that
/// cannot start; no pipeline that can trade (unless `--wait-for-plugins`).
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let mode = if args.backtest { "paper" } else { trading_mode()? };
    println!("tradehost: TRADING_MODE={mode}");
    let config = Arc::new(Config::load(&args.config)?);
    let on_live_brokers: Vec<String> = config.accounts.iter().filter(|a| a.broker.get_ref() != "paper").map(|a| format!("{} ({})", a.id.get_ref(), a.broker.get_ref())).collect();
    if mode == "paper" && !on_live_brokers.is_empty() {
        println!("tradehost: paper mode: accounts configured for live brokers trade on paper: {}", on_live_brokers.join(", "));
    }
    let (shutdown_tx, shutdown) = watch::channel(false);
    let shutdown_tx = Arc::new(shutdown_tx);
    {
        let tx = shutdown_tx.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            let _ = tx.send(true);
        });
    }
    let prefix = config.bus.prefix.clone();
    let url = if args.backtest { None } else { args.redis.clone().or_else(|| config.redis_url()) };
    let bus = match url {
        Some(url) => match connect_redis(&url, &prefix, shutdown.clone()).await? {
            Some(bus) => bus,
            None => return Ok(()), // told to stop while waiting for Redis
        },
        None => Bus::embedded(&prefix),
    };
    if args.role != Role::All && matches!(bus, Bus::Embedded(_)) {
        bail!("--role {:?} runs half of the pipeline and needs a Redis bus the other half shares: set REDIS_URL or [bus] url", args.role);
    }
    println!(
        "tradehost: {} bus, role {:?}, {} pipelines, {} accounts, channels {}",
        bus.kind(),
        args.role,
        config.pipelines.len(),
        config.accounts.len(),
        bus.channels().all()
    );
    if let Some(health) = bus.health() {
        tokio::spawn(watch_redis(health, Events::new(bus.clone(), "host")));
    }
    // Everything that listens subscribes before the engine publishes its first
    // price: at replay speed 0 the first hundreds of bars go by in milliseconds.
    let printer = if args.quiet {
        None
    } else {
        let c = bus.channels();
        Some(spawn_printer(bus.subscribe(&[c.signals(), c.orders(), c.events()]).await?, c.clone()))
    };
    let orders_commands = if matches!(args.role, Role::All | Role::Orders) { Some(bus.subscribe(&[bus.channels().commands()]).await?) } else { None };
    // Live brokers belong to the orders role; nothing trades until every live account is ready.
    let live = if mode == "live" && orders_commands.is_some() { Some(super::live::connect(&config, &bus, &Events::new(bus.clone(), "orders")).await?) } else { None };

    // One watcher per process: plugin folder changes go to the engine, configuration
    // changes through `config_watch` to both roles.
    let (plugin_tx, plugin_rx) = mpsc::channel(16);
    let (config_change_tx, config_change_rx) = mpsc::channel(16);
    let (change_tx, mut change_rx) = mpsc::channel(16);
    let _watcher = crate::engine::watch::watch(&config.resolve(&config.host.plugin_dir), &args.config, change_tx)
        .map_err(|e| tracing::warn!("file watching is off: {e}"))
        .ok();
    tokio::spawn(async move {
        while let Some(change) = change_rx.recv().await {
            let _ = match change {
                Change::Plugins => plugin_tx.try_send(change),
                Change::Config => config_change_tx.try_send(change),
            };
        }
    });
    let (config_tx, config_rx) = watch::channel(config.clone());
    let alerts = if orders_commands.is_some() { super::live::start_notifier(&config, &bus, config_rx.clone()).await? } else { None };
    let (reload_tx, reload_rx) = mpsc::channel(16);
    tokio::spawn(config_watch(args.config.clone(), Events::new(bus.clone(), "host"), config_tx, config_change_rx, reload_rx));
    let engine_commands = if matches!(args.role, Role::All | Role::Engine) { Some(bus.subscribe(&[bus.channels().commands()]).await?) } else { None };
    let engine = engine_commands.map(|commands| {
        let (config, bus, configs) = (config.clone(), bus.clone(), config_rx.clone());
        let lifecycle = Lifecycle { shutdown: shutdown.clone(), stop: shutdown_tx.clone(), until_idle: args.until_idle.is_some(), wait_for_plugins: args.wait_for_plugins };
        tokio::spawn(async move { engine_role(config, bus, lifecycle, plugin_rx, configs, commands).await })
    });
    let (engine_done_tx, engine_done) = watch::channel(engine.is_none());
    let orders = orders_commands.map(|commands| {
        let journal = args.journal.clone().unwrap_or_else(|| config.resolve(&config.host.journal));
        let settings = OrdersSettings { journal, consumer: args.consumer.clone(), mode, until_idle: args.until_idle.map(Duration::from_secs_f64) };
        let (config, bus, configs, reload) = (config.clone(), bus.clone(), config_rx.clone(), reload_tx.clone());
        let lifecycle = Lifecycle { shutdown: shutdown.clone(), stop: shutdown_tx.clone(), until_idle: args.until_idle.is_some(), wait_for_plugins: args.wait_for_plugins };
        tokio::spawn(async move { orders_role(config, bus, settings, commands, lifecycle, engine_done, configs, reload, live).await })
    });
    let mut failure = None;
    if let Some(engine) = engine {
        if let Err(e) = engine.await.context("engine task")? {
            // The orders side finishes what it holds, then the process reports the failure.
            let _ = shutdown_tx.send(true);
            failure = Some(e);
        }
        let _ = engine_done_tx.send(true);
    }
    if let Some(orders) = orders {
        let summary = orders.await.context("orders task")??;
        print_summary(&summary);
    }
    if let Some(p) = printer {
        tokio::time::sleep(Duration::from_millis(100)).await;
        p.abort();
    }
    if let Some(pending) = alerts {
        // Alerts still queued (Telegram allows about one a second per chat) go
        // out before we do; on SIGTERM only as long as a clean stop allows.
        let budget = if *shutdown.borrow() { STOP_ALERT_FLUSH } else { ALERT_FLUSH };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let waiting = || pending.load(std::sync::atomic::Ordering::SeqCst);
        if waiting() > 0 {
            println!("tradehost: sending {} queued alerts before exiting", waiting());
        }
        let deadline = tokio::time::Instant::now() + budget;
        while waiting() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if waiting() > 0 {
            eprintln!("tradehost: {} alerts were not sent in {} s", waiting(), budget.as_secs());
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// How a role knows when to stop.
struct Lifecycle {
    /// Set on SIGTERM, SIGINT or a `shutdown` command.
    shutdown: watch::Receiver<bool>,
    /// Sets it (a `shutdown` command).
    stop: Arc<watch::Sender<bool>>,
    /// Batch replay: end once every source has ended and everything is decided.
    until_idle: bool,
    /// Keep running although no pipeline can trade yet.
    wait_for_plugins: bool,
}

/// Connect to Redis, waiting with back-off while it is not there (a service
/// started before its Redis must not die of it); `None` when told to stop meanwhile.
async fn connect_redis(url: &str, prefix: &str, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<Option<Bus>> {
    let mut delay = Duration::from_millis(200);
    let mut told = false;
    loop {
        match Bus::redis(url, prefix).await {
            Ok(bus) => {
                if told {
                    println!("tradehost: Redis at {url} is up");
                }
                return Ok(Some(bus));
            }
            // A URL that cannot work is the user's to fix, not a reason to wait.
            Err(crate::bus::BusError::Redis(e)) if e.kind() == redis::ErrorKind::InvalidClientConfig => {
                return Err(anyhow::anyhow!("REDIS_URL / [bus] url {url:?}: {e}"));
            }
            Err(e) => {
                if !told {
                    eprintln!("tradehost: waiting for Redis at {url}: {e} (retrying; Ctrl-C to stop)");
                    told = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.changed() => return Ok(None),
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Say when Redis goes away and when it is back; the return is an alert.
async fn watch_redis(mut health: watch::Receiver<bool>, events: Events) {
    let mut down_since: Option<tokio::time::Instant> = None;
    while health.changed().await.is_ok() {
        let up = *health.borrow_and_update();
        match (up, down_since) {
            (false, None) => {
                down_since = Some(tokio::time::Instant::now());
                eprintln!("tradehost: Redis connection lost: holding decisions and buffering prices and signals while reconnecting");
            }
            (true, Some(since)) => {
                down_since = None;
                let down_ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX);
                eprintln!("tradehost: Redis is back after {:.1} s; resuming from the streams", down_ms as f64 / 1000.0);
                events.emit("redis_outage", json!({ "down_ms": down_ms, "alert": true, "detail": "Redis was unreachable; the streams were resumed with nothing lost" })).await;
            }
            _ => {}
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { if let Some(t) = term.as_mut() { t.recv().await; } else { std::future::pending::<()>().await } } => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

fn spawn_printer(mut sub: Subscription, channels: Channels) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some((channel, payload)) = sub.recv().await {
            let Ok(v) = serde_json::from_str::<Value>(&payload) else { continue };
            // Fields come from the bus: control characters escaped and length capped before they reach a terminal.
            let text = |k: &str| printable(&v[k].as_str().map(str::to_owned).unwrap_or_else(|| v[k].to_string()), 200);
            let line = match v["type"].as_str() {
                Some("signal") => format!("signal  {:<16} {:<10} {:<4} @ {:<10} {}", text("pipeline"), text("instrument"), text("side"), text("price"), text("reason")),
                Some("order") if matches!(v["state"].as_str(), Some("filled")) => {
                    format!("order   {:<16} {} {} {} {} @ {} [{}]", text("account"), text("state"), text("side"), text("qty"), text("instrument"), text("price"), text("mode"))
                }
                Some("event") if channel == channels.events() => format!("event   {} {}", text("event"), printable(v["pipeline"].as_str().unwrap_or(""), 80)),
                Some("error") => format!("error   {}: {}", text("source"), text("reason")),
                Some("command_ack") => format!("ack     {} {} ok={} {}", text("command_id"), text("cmd"), text("ok"), text("detail")),
                _ => continue,
            };
            println!("{line}");
        }
    })
}

async fn engine_role(
    config: Arc<Config>,
    bus: Bus,
    mut life: Lifecycle,
    mut changes: mpsc::Receiver<Change>,
    mut configs: watch::Receiver<Arc<Config>>,
    mut commands: Subscription,
) -> anyhow::Result<()> {
    let events = Events::new(bus.clone(), "engine");
    let cache = config.resolve(&config.host.journal).parent().map(|d| d.join("plugin-cache")).unwrap_or_else(|| PathBuf::from("plugin-cache"));
    let sandbox = Arc::new(Sandbox::new(SandboxLimits::live())?.with_cache(cache));
    let feed_tokens = crate::brokers::feeds::TokenOverrides::default();
    let feeds = crate::market::feed::BrokerLinks {
        feed: crate::brokers::feeds::resolver(configs.clone(), bus.clone(), feed_tokens.clone()),
        chain: crate::brokers::feeds::chain_resolver(configs.clone(), bus.clone(), feed_tokens.clone()),
    };
    let mut engine = Supervisor::new(config.clone(), sandbox, bus.clone(), events.clone()).with_feeds(feeds);
    engine.start().await;
    let mut heartbeat = tokio::time::interval(Duration::from_secs(config.host.heartbeat_secs.max(1)));
    let mut reap = tokio::time::interval(Duration::from_millis(100));
    let mut said_waiting = false;
    let mut outcome = Ok(());
    loop {
        tokio::select! {
            _ = life.shutdown.changed() => break,
            change = changes.recv() => {
                if change == Some(Change::Plugins) {
                    engine.rescan_plugins().await;
                }
            }
            changed = configs.changed() => {
                if changed.is_ok() {
                    let new = configs.borrow_and_update().clone();
                    engine.apply_config(new).await;
                }
            }
            msg = commands.recv() => {
                // A Redis subscription reconnects by itself; `None` only when the bus is gone.
                let Some((_, payload)) = msg else { break };
                match CommandMessage::parse(&payload).map(|m| { let c = m.command(); (m, c) }) {
                    Ok((m, Ok(Command::Reload))) => {
                        engine.rescan_plugins().await;
                        events.ack(&m.id, &m.cmd, true, "plugin folder rescanned").await;
                    }
                    Ok((m, Ok(Command::Shutdown))) => {
                        events.ack(&m.id, &m.cmd, true, "engine stopping").await;
                        let _ = life.stop.send(true);
                    }
                    Ok((_, Ok(Command::Token { account, access_token }))) => {
                        // The orders side checks the session and acknowledges; the feeds use the token on their next connection.
                        if let Ok(mut t) = feed_tokens.write() {
                            t.insert(account, access_token);
                        }
                    }
                    Ok((m, Ok(Command::Pipelines { action, target }))) => engine.command(&m.id, action, &target).await,
                    // An engine command without what it needs is the engine's to refuse; the rest are the orders side's.
                    Ok((m, Err(e))) if Command::ENGINE.contains(&m.cmd.as_str()) => events.ack(&m.id, &m.cmd, false, &e).await,
                    Ok(_) => {}
                    Err(e) => events.error("commands", &format!("malformed command ignored: {e}")).await,
                }
            }
            _ = heartbeat.tick() => events.heartbeat(engine.heartbeat()).await,
            _ = reap.tick() => {
                let all_ended = engine.reap().await;
                if let Some(reasons) = engine.nothing_trades() {
                    if !life.wait_for_plugins {
                        outcome = Err(anyhow::anyhow!("no pipeline can trade:\n  {}\n(--wait-for-plugins keeps running until a plugin is dropped in)", reasons.join("\n  ")));
                        break;
                    }
                    if !said_waiting {
                        eprintln!("tradehost: waiting: no pipeline can trade yet:\n  {}", reasons.join("\n  "));
                        said_waiting = true;
                    }
                } else {
                    said_waiting = false;
                }
                if all_ended && life.until_idle {
                    break; // a batch replay: every source ran out
                }
            }
        }
    }
    engine.shutdown().await;
    // The final states; not waited for beyond a moment when the bus is away.
    let _ = tokio::time::timeout(Duration::from_secs(1), events.heartbeat(engine.heartbeat())).await;
    outcome
}

/// Reloads the configuration when its file changes or a `reload` command asks:
/// a valid one is handed to both roles, an invalid one refused with its place
/// while the old one keeps running.
async fn config_watch(path: PathBuf, events: Events, tx: watch::Sender<Arc<Config>>, mut changes: mpsc::Receiver<Change>, mut reloads: mpsc::Receiver<String>) {
    loop {
        let command_id = tokio::select! {
            change = changes.recv() => match change {
                Some(_) => None,
                None => return,
            },
            id = reloads.recv() => match id {
                Some(id) => Some(id),
                None => return,
            },
        };
        match Config::load(&path) {
            Ok(new) => {
                let changed = **tx.borrow() != new;
                if changed {
                    let _ = tx.send(Arc::new(new));
                }
                if let Some(id) = command_id {
                    events.ack(&id, "reload", true, if changed { "configuration reloaded" } else { "configuration unchanged" }).await;
                }
            }
            Err(e) => {
                events.emit("config_refused", json!({ "file": path.display().to_string(), "error": e.to_string(), "line": e.line, "column": e.column, "field": e.field })).await;
                if let Some(id) = command_id {
                    events.ack(&id, "reload", false, &e.to_string()).await;
                }
            }
        }
    }
}

struct OrdersSettings {
    journal: PathBuf,
    consumer: String,
    mode: &'static str,
    until_idle: Option<Duration>,
}

/// Reads the signal log: first this consumer's own unacknowledged entries
/// (a restart), then new ones, taking over entries a dead consumer left.
fn spawn_log_reader(bus: Bus, consumer: String, claim_idle: Duration, tx: mpsc::Sender<Vec<LogEntry>>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            match bus.read_pending(GROUP, &consumer, 1000).await {
                Ok(entries) if entries.is_empty() => break,
                Ok(entries) => {
                    // Own pending entries are re-read from the start until acknowledged; only
                    // hand over the first batch and wait for the loop to catch up.
                    if tx.send(entries).await.is_err() {
                        return;
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!("reading pending signals: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        let mut last_claim = tokio::time::Instant::now();
        loop {
            if last_claim.elapsed() >= claim_idle / 2 {
                last_claim = tokio::time::Instant::now();
                match bus.claim_stale(GROUP, &consumer, claim_idle, 100).await {
                    Ok(entries) if !entries.is_empty() => {
                        if tx.send(entries).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!("claiming stale signals: {e}"),
                }
            }
            match bus.read_new(GROUP, &consumer, 256, Duration::from_millis(500)).await {
                Ok(entries) if !entries.is_empty() => {
                    backoff = Duration::from_millis(100);
                    if tx.send(entries).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!("reading signals: {e}");
                    // A Redis that came back without its data has no group: make it again.
                    if e.to_string().contains("NOGROUP") {
                        let _ = bus.ensure_group(GROUP).await;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    })
}

/// The prices of a quote, as the guard checks them (close first: it is remembered).
fn quote_prices(q: &Quote) -> Vec<(&'static str, rust_decimal::Decimal)> {
    let mut prices = vec![("close", q.close), ("open", q.open), ("high", q.high), ("low", q.low)];
    prices.extend(q.bid.map(|b| ("bid", b)));
    prices
}

/// What the order loop hands to its outbox: sent in order, off the loop, so
/// the journal never waits on a network round trip.
enum Out {
    Outcomes(Vec<Outcome>),
    Ack(String),
}

fn spawn_outbox(bus: Bus, events: Events) -> (mpsc::UnboundedSender<Out>, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Out>();
    let task = tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            match out {
                Out::Outcomes(o) => publish(&bus, &events, o).await,
                Out::Ack(entry_id) => {
                    if let Err(e) = bus.ack(GROUP, &entry_id).await {
                        // Not acknowledged: it comes back after a restart, and its recorded decisions make that harmless.
                        tracing::warn!("acknowledging {entry_id}: {e}");
                    }
                }
            }
        }
    });
    (tx, task)
}

async fn publish(bus: &Bus, events: &Events, outcomes: Vec<Outcome>) {
    for o in outcomes {
        match o {
            Outcome::Order(json) => {
                if let Err(e) = bus.publish(&bus.channels().orders(), &json).await {
                    tracing::warn!("publishing an order event: {e}");
                }
            }
            Outcome::Event(name, fields) => events.emit(name, fields).await,
        }
    }
}

/// Reads the durable price stream from `after` on, in order, handing each
/// batch to the order loop; reconnects with back-off.
fn spawn_price_reader(bus: Bus, mut after: String, tx: mpsc::Sender<Vec<LogEntry>>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            match bus.read_quotes(&after, 512, Duration::from_millis(500)).await {
                Ok(entries) => {
                    backoff = Duration::from_millis(100);
                    if let Some(last) = entries.last() {
                        after = last.entry_id.clone();
                        if tx.send(entries).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!("reading prices: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    })
}

/// Replay the retained prices up to `cursor` into `om`'s memory (what an
/// earlier run applied: last prices, recent opens, pipeline clocks), so a
/// restarted process decides on exactly what the undisturbed one knew.
async fn warm_prices(bus: &Bus, om: &mut OrderManager, cursor: &str, shutdown: &mut watch::Receiver<bool>) -> bool {
    let target = stream_id(cursor);
    let mut after = "0".to_owned();
    let mut backoff = Duration::from_millis(100);
    loop {
        if *shutdown.borrow() {
            return false;
        }
        match bus.read_quotes(&after, 2048, Duration::from_millis(1)).await {
            Ok(entries) => {
                for e in &entries {
                    if stream_id(&e.entry_id) > target {
                        return true;
                    }
                    if let Ok(q) = QuotesMessage::parse(&e.payload) {
                        om.observe_quotes(&q);
                    }
                }
                match entries.last() {
                    Some(last) => after = last.entry_id.clone(),
                    None => return true, // nothing beyond: the cursor is the stream's end
                }
            }
            Err(e) => {
                tracing::warn!("reading prices to warm up: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// A stream entry id (`<ms>-<seq>`) as a comparable pair.
fn stream_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// Create the consumer group, retrying with back-off while Redis is away;
/// false when told to stop meanwhile.
async fn ensure_group(bus: &Bus, shutdown: &mut watch::Receiver<bool>) -> bool {
    let mut backoff = Duration::from_millis(100);
    loop {
        match bus.ensure_group(GROUP).await {
            Ok(()) => return true,
            Err(e) => {
                tracing::warn!("creating the consumer group: {e}; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return false,
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Prices read from the stream, waiting for the signal logged before them.
struct HeldPrices {
    quotes: QuotesMessage,
    entry_id: Option<String>,
    since: tokio::time::Instant,
}

/// Ends its tasks when dropped (the order streams end with the orders role).
struct AbortOnDrop(Vec<JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn orders_role(
    config: Arc<Config>,
    bus: Bus,
    settings: OrdersSettings,
    mut commands: Subscription,
    mut life: Lifecycle,
    mut engine_done: watch::Receiver<bool>,
    mut configs: watch::Receiver<Arc<Config>>,
    reload: mpsc::Sender<String>,
    live: Option<super::live::Live>,
) -> anyhow::Result<Value> {
    let events = Events::new(bus.clone(), "orders");
    let journal = settings.journal.clone();
    let mut om = tokio::task::block_in_place(|| OrderManager::open(&journal, config.clone(), settings.mode)).with_context(|| format!("opening the journal {}", journal.display()))?;
    let (router, mut reports) = match live {
        Some(l) => (Some(l.router), Some(l.reports)),
        None => (None, None),
    };
    if let Some(r) = &router {
        om.set_live_accounts(r.accounts());
        let journals = r.brokers().iter().map(|(account, _)| om.positions_of(account).map(|p| (account.clone(), p))).collect::<Result<HashMap<_, _>, _>>()?;
        reconcile_positions(r, &journals, &events).await;
        // The broker ids already matched stay matched; then the live orders a previous run
        // left unfinished: found, polled, or looked for before placing.
        for account in r.accounts() {
            r.claimed(&account, om.broker_order_ids(&account)?);
        }
        for order in om.recover_live_orders()? {
            r.send(order);
        }
    }
    // Order updates the brokers push; each (re)connection also syncs the open orders.
    let stream_tokens = crate::brokers::feeds::TokenOverrides::default();
    let _streams = AbortOnDrop(match &router {
        Some(r) => {
            let ev = events.clone();
            let on_event: crate::brokers::feeds::StreamEvents = Arc::new(move |kind, body| {
                let ev = ev.clone();
                tokio::spawn(async move { ev.emit(kind, body).await });
            });
            crate::brokers::feeds::order_streams(&config, configs.clone(), bus.clone(), r, stream_tokens.clone(), on_event)
        }
        None => Vec::new(),
    });
    let summary = |om: &OrderManager| -> anyhow::Result<Value> { Ok(json!({ "mode": settings.mode, "accounts": om.accounts_summary()?, "counters": om.counts()? })) };
    if !ensure_group(&bus, &mut life.shutdown).await {
        return summary(&om);
    }
    // The prices an earlier run applied, back into memory; then the stream from there on.
    let cursor = om.price_cursor()?;
    if let Some(c) = &cursor {
        if !warm_prices(&bus, &mut om, c, &mut life.shutdown).await {
            return summary(&om);
        }
    }
    // Orders recorded before a crash but never sent: send them now.
    publish(&bus, &events, tokio::task::block_in_place(|| om.submit_new())?).await;
    events.emit("orders_started", json!({ "consumer": settings.consumer, "journal": journal.display().to_string(), "mode": settings.mode, "kill_switch": om.kill_switch()?, "price_cursor": cursor })).await;

    let (outbox, outbox_task) = spawn_outbox(bus.clone(), events.clone());
    let (tx, mut rx) = mpsc::channel::<Vec<LogEntry>>(64);
    let reader = spawn_log_reader(bus.clone(), settings.consumer.clone(), Duration::from_millis(config.bus.claim_idle_ms.max(100)), tx);
    let (prices_tx, mut prices) = mpsc::channel::<Vec<LogEntry>>(64);
    let price_reader = spawn_price_reader(bus.clone(), cursor.unwrap_or_else(|| "0".into()), prices_tx);
    let mut heartbeat = tokio::time::interval(Duration::from_secs(config.host.heartbeat_secs.max(1)));
    let mut idle_check = tokio::time::interval(Duration::from_millis(200));
    let mut clock = tokio::time::interval(Duration::from_secs(1));
    clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut trim = tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(60), Duration::from_secs(60));
    let mut last_work = tokio::time::Instant::now();
    // Prices of several pipelines interleave and replays carry old times: only
    // the price rules apply here, not the clock or the order of arrival.
    let mut price_guard = PriceGuard::new(GuardRules { max_skew_ms: 0, in_order: false, ..GuardRules::from_config(&config.market, 0) });
    // Signals waiting for their instrument's prices to catch up (see `release`).
    let mut held: std::collections::VecDeque<(LogEntry, tokio::time::Instant)> = std::collections::VecDeque::new();
    // Prices waiting for the signal logged before them to be decided.
    let mut held_quotes: std::collections::VecDeque<HeldPrices> = std::collections::VecDeque::new();
    let mut stop = life.shutdown.clone();
    loop {
        if let Some(r) = &router {
            for order in om.take_live_orders() {
                r.send(order);
            }
            for cancel in om.take_live_cancels() {
                r.cancel(cancel);
            }
        }
        tokio::select! {
            _ = life.shutdown.changed() => break,
            report = async { match reports.as_mut() { Some(r) => r.recv().await, None => std::future::pending().await } } => {
                let Some(report) = report else { continue };
                last_work = tokio::time::Instant::now();
                match report {
                    crate::brokers::live::RouterOutput::Update(update) => {
                        // What the broker did must be recorded: retried rather than lost.
                        if let Some(out) = until_recorded(&events, "a broker report", &mut stop, || om.on_live_update(&update)).await {
                            let _ = outbox.send(Out::Outcomes(out));
                        }
                    }
                    crate::brokers::live::RouterOutput::Notice(notice) => live_notice(&events, notice).await,
                }
            }
            batch = rx.recv() => {
                let Some(batch) = batch else { break };
                last_work = tokio::time::Instant::now();
                let now = tokio::time::Instant::now();
                held.extend(batch.into_iter().map(|e| (e, now)));
                release(&mut held, &mut held_quotes, &mut om, &outbox, &events, &mut stop).await;
            }
            batch = prices.recv() => {
                let Some(batch) = batch else { break };
                last_work = tokio::time::Instant::now();
                for entry in batch {
                    match QuotesMessage::parse(&entry.payload) {
                        Ok(mut q) => {
                            // A price the guard refuses never moves a fill, a stop or a mark.
                            let mut refused = Vec::new();
                            q.quotes.retain(|quote| match price_guard.check(&quote.instrument, q.ts, &quote_prices(quote), 0) {
                                Ok(()) => true,
                                Err(r) => {
                                    refused.push(r);
                                    false
                                }
                            });
                            for r in refused {
                                events.emit("price_refused", json!({ "source": "quotes", "message": printable(&q.id, 80), "instrument": printable(r.instrument(), 40), "field": r.field(), "reason": r.to_string() })).await;
                                events.error("quotes", &format!("price refused in {}: {r}", printable(&q.id, 80))).await;
                            }
                            held_quotes.push_back(HeldPrices { quotes: q, entry_id: Some(entry.entry_id), since: tokio::time::Instant::now() });
                        }
                        Err(e) => events.error("quotes", &format!("malformed prices in {} ignored: {e}", entry.entry_id)).await,
                    }
                }
                release(&mut held, &mut held_quotes, &mut om, &outbox, &events, &mut stop).await;
            }
            msg = commands.recv() => {
                // A Redis subscription reconnects by itself; `None` only when the bus is gone.
                let Some((_, payload)) = msg else { break };
                if let Ok(m) = CommandMessage::parse(&payload) {
                    match m.command() {
                        Ok(Command::Token { account, access_token }) => {
                            // The order streams use it on their next connection; the router below checks it.
                            if let Ok(mut t) = stream_tokens.write() {
                                t.insert(account, access_token);
                            }
                        }
                        Ok(Command::Reload) => {
                            let _ = reload.try_send(m.id);
                            continue;
                        }
                        Ok(Command::Shutdown) => {
                            events.ack(&m.id, &m.cmd, true, "orders stopping after the decision in flight").await;
                            let _ = life.stop.send(true);
                            continue;
                        }
                        _ => {}
                    }
                }
                let current = configs.borrow().clone();
                orders_command(&payload, &current, &mut om, &bus, &events, router.as_ref()).await;
            }
            changed = configs.changed() => {
                if changed.is_ok() {
                    om.set_config(configs.borrow_and_update().clone());
                }
            }
            _ = trim.tick() => {
                match bus.trim_log(GROUP).await {
                    Ok(n) if n > 0 => tracing::debug!("trimmed {n} acknowledged signals from the log"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("trimming the signal log: {e}"),
                }
            }
            _ = heartbeat.tick() => {
                let body = json!({ "mode": settings.mode, "accounts": om.accounts_summary()?, "counters": om.counts()?, "kill_switch": om.kill_switch()?, "held_signals": held.len(), "held_prices": held_quotes.len() });
                events.heartbeat(body).await;
            }
            _ = clock.tick() => {
                // Square-off by the clock when the prices stop (a feed gap at 15:14, a position
                // left open overnight). Only with nothing held and the prices quiet: what it
                // records is what the next price would record, so a replay decides the same.
                let quiet = om.prices_quiet_for().is_some_and(|d| d >= CLOCK_QUIET);
                if quiet && held.is_empty() && held_quotes.is_empty() && rx.is_empty() && prices.is_empty() {
                    if let Some(now) = om.market_clock() {
                        if let Some(out) = until_recorded(&events, "the square-off clock", &mut stop, || om.on_clock(now)).await {
                            if !out.is_empty() {
                                last_work = tokio::time::Instant::now();
                            }
                            let _ = outbox.send(Out::Outcomes(out));
                        }
                    }
                }
            }
            _ = idle_check.tick() => {
                release(&mut held, &mut held_quotes, &mut om, &outbox, &events, &mut stop).await;
                let Some(until_idle) = settings.until_idle else { continue };
                let quiet_for = last_work.elapsed();
                let live_busy = router.as_ref().is_some_and(|r| r.open_orders() > 0) || reports.as_ref().is_some_and(|r| !r.is_empty());
                let local_drained = !live_busy && held.is_empty() && held_quotes.is_empty() && rx.is_empty() && prices.is_empty();
                // A count the bus cannot give (an outage) is not "drained".
                let drained = local_drained && matches!(bus.undelivered_count(GROUP).await, Ok(0)) && matches!(bus.pending_count(GROUP).await, Ok(0));
                let engine_over = *engine_done.borrow_and_update();
                if drained && engine_over && quiet_for >= until_idle {
                    break; // a batch replay: the engine is done and every signal is handled
                }
            }
        }
    }
    reader.abort();
    price_reader.abort();
    drop(outbox);
    // Everything decided is published and acknowledged before we go, unless
    // the bus is away: then what was not acknowledged comes back on restart,
    // and its recorded decisions make that harmless.
    if tokio::time::timeout(Duration::from_secs(2), outbox_task).await.is_err() {
        eprintln!("tradehost: the bus did not take the last order events in 2 s; unacknowledged signals are decided again (from the journal) on restart");
    }
    let summary = summary(&om)?;
    let _ = tokio::time::timeout(Duration::from_secs(1), events.heartbeat(summary.clone())).await;
    Ok(summary)
}

/// How long a signal (or a price message) waits for its counterpart before it
/// goes through anyway. In normal flow nothing waits more than milliseconds
/// (every price message advances its pipeline's clock); this only matters
/// when a pipeline stops publishing, and must be long enough that a loaded
/// machine never reaches it, or fast replays stop being exact.
const PRICE_WAIT: Duration = Duration::from_secs(10);

/// How long the prices must have been quiet before the clock squares off on its own.
const CLOCK_QUIET: Duration = Duration::from_secs(2);

/// Let held signals and prices through in the order the engine produced them.
///
/// Prices and signals travel on different channels and may arrive in any
/// order. A signal waits until its pipeline's prices (or its instrument's)
/// have reached the signal's time (the prices the strategy saw); a price message waits until
/// the signal its pipeline logged just before it is decided. So a decision
/// never sees a stop or square-off caused by later prices, nor misses one
/// caused by earlier ones, however fast a replay runs. Anything held longer
/// than [`PRICE_WAIT`] goes through anyway (an instrument without prices, a
/// signal that will never come).
async fn release(
    held: &mut std::collections::VecDeque<(LogEntry, tokio::time::Instant)>,
    held_quotes: &mut std::collections::VecDeque<HeldPrices>,
    om: &mut OrderManager,
    outbox: &mpsc::UnboundedSender<Out>,
    events: &Events,
    stop: &mut watch::Receiver<bool>,
) {
    loop {
        let mut progress = false;
        while let Some(h) = held_quotes.front() {
            let ready = h.quotes.after_signal.as_deref().is_none_or(|id| om.is_decided(id)) || h.since.elapsed() >= PRICE_WAIT;
            if !ready {
                break;
            }
            if let Some(h) = held_quotes.front() {
                // Recorded with the price cursor, or retried: a price skipped here would be a stop never fired.
                let applied = until_recorded(events, &format!("prices {}", printable(&h.quotes.id, 80)), stop, || om.on_quotes_at(&h.quotes, h.entry_id.as_deref())).await;
                let Some(out) = applied else { return }; // stopping: the price is applied again after the restart
                let _ = outbox.send(Out::Outcomes(out));
                held_quotes.pop_front();
                progress = true;
            }
        }
        // Signals of one pipeline stay in order; a pipeline waiting for its prices does not hold up the others.
        let mut blocked: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut i = 0;
        while i < held.len() {
            let (entry, since) = &held[i];
            let (pipeline, ready) = match SignalMessage::parse(&entry.payload) {
                Ok(s) => {
                    let priced = om.pipeline_clock(&s.pipeline).is_some_and(|t| t >= s.ts) || om.price_clock(&s.instrument).is_some_and(|t| t >= s.ts);
                    (s.pipeline, priced || since.elapsed() >= PRICE_WAIT)
                }
                Err(_) => (String::new(), true), // reported and skipped by handle_entry
            };
            if !ready || blocked.contains(&pipeline) {
                blocked.insert(pipeline);
                i += 1;
                continue;
            }
            if let Some((entry, _)) = held.remove(i) {
                if !handle_entry(om, outbox, events, &entry, stop).await {
                    return; // stopping: the entry stays unacknowledged and comes back after the restart
                }
                progress = true;
            }
        }
        if !progress {
            return;
        }
    }
}

/// Run a journal write until it succeeds: what it records (a decision, a
/// broker's report, prices) must never be dropped. A transient failure (the
/// journal busy or locked, an I/O error) is retried with back-off; a permanent
/// one (a constraint, a value that does not fit) is reported once and the item
/// parked: `Some(empty)`, so it is not retried forever. `None` when the process
/// is told to stop meanwhile (the item is redone after the restart).
async fn until_recorded(events: &Events, what: &str, stop: &mut watch::Receiver<bool>, mut write: impl FnMut() -> Result<Vec<Outcome>, crate::orders::OrderError>) -> Option<Vec<Outcome>> {
    let mut delay = Duration::from_millis(100);
    let mut reported = false;
    loop {
        match tokio::task::block_in_place(&mut write) {
            Ok(out) => return Some(out),
            Err(e) if e.is_transient() => {
                if *stop.borrow() {
                    return None;
                }
                if !reported {
                    events.error("orders", &format!("recording {what}: {e}; retrying")).await;
                    reported = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => return None,
                }
                if *stop.borrow() {
                    return None;
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                events.emit("parked", json!({ "item": what, "error": e.to_string(), "alert": true, "detail": "a permanent journal error: the item is set aside, not retried" })).await;
                return Some(Vec::new());
            }
        }
    }
}

/// Decide one log entry; false when stopping before it was recorded.
async fn handle_entry(om: &mut OrderManager, outbox: &mpsc::UnboundedSender<Out>, events: &Events, entry: &LogEntry, stop: &mut watch::Receiver<bool>) -> bool {
    match SignalMessage::parse(&entry.payload) {
        Ok(signal) => {
            // The journal is the one thing that must work: keep the entry
            // unacknowledged and try again rather than lose the signal.
            match until_recorded(events, &format!("signal {}", printable(&signal.id, 200)), stop, || om.on_signal(&signal)).await {
                Some(out) => {
                    let _ = outbox.send(Out::Outcomes(out));
                }
                None => return false,
            }
        }
        Err(e) => events.error("signal log", &format!("entry {} is malformed and was skipped: {e}", entry.entry_id)).await,
    }
    if let Ok(id) = serde_json::from_str::<Value>(&entry.payload).map(|v| v["id"].as_str().unwrap_or_default().to_owned()) {
        om.mark_decided(&id);
    }
    // After the decisions are committed, never before.
    let _ = outbox.send(Out::Ack(entry.entry_id.clone()));
    true
}

/// Compare each live account's journal positions with its broker's, and raise
/// an alert for every difference (a manual trade, an order placed while the
/// host was down). Trading goes on: the trader decides (a `flatten`, a fix at the broker).
async fn reconcile_positions(router: &crate::brokers::live::LiveRouter, journals: &HashMap<String, HashMap<String, rust_decimal::Decimal>>, events: &Events) {
    for (account, broker) in router.brokers() {
        let journal = journals.get(account).cloned().unwrap_or_default();
        match router.reconcile(account, &journal).await {
            Ok(mismatches) if mismatches.is_empty() => {
                println!("tradehost: {account}: positions agree with {} ({} open)", broker.name(), journal.len());
            }
            Ok(mismatches) => {
                for m in mismatches {
                    println!("tradehost: {account}: position mismatch in {}: journal {}, {} {}", m.instrument, m.journal, broker.name(), m.broker);
                    events
                        .emit("position_mismatch", json!({ "account": account, "broker": broker.name(), "instrument": m.instrument, "journal": m.journal.to_string(), "broker_qty": m.broker.to_string(), "alert": true }))
                        .await;
                }
            }
            Err(e) => events.emit("reconcile_failed", json!({ "account": account, "broker": broker.name(), "error": e.to_string(), "alert": true })).await,
        }
    }
}

/// Publish what the live router reports to the operator.
async fn live_notice(events: &Events, notice: crate::brokers::live::LiveNotice) {
    use crate::brokers::live::LiveNotice as N;
    match notice {
        N::TokenExpired { account, broker, reason } => {
            events.emit("token_expired", json!({ "account": account, "broker": broker, "reason": reason, "alert": true, "detail": "orders for this account are held until a token command brings a new token" })).await;
        }
        N::Resumed { account, broker } => events.emit("token_renewed", json!({ "account": account, "broker": broker })).await,
        N::TokenRefused { account, broker, reason } => events.emit("token_refused", json!({ "account": account, "broker": broker, "reason": reason, "alert": true })).await,
        N::Unpriced { account, client_order_id } => {
            events.emit("order_unpriced", json!({ "account": account, "client_order_id": client_order_id, "alert": true, "detail": "the broker reports it complete without an average price; nothing is journaled until it gives one" })).await;
        }
        N::Retrying { account, client_order_id, reason, wait_ms } => {
            events.emit("broker_retry", json!({ "account": account, "client_order_id": client_order_id, "reason": reason, "wait_ms": wait_ms })).await;
        }
    }
}

async fn orders_command(payload: &str, config: &Config, om: &mut OrderManager, bus: &Bus, events: &Events, router: Option<&crate::brokers::live::LiveRouter>) {
    let cmd = match CommandMessage::parse(payload) {
        Ok(c) => c,
        Err(e) => {
            events.error("commands", &format!("malformed command ignored: {e}")).await;
            return;
        }
    };
    let command = match cmd.command() {
        Ok(c) => c,
        // The engine's commands are the engine's to refuse.
        Err(_) if Command::ENGINE.contains(&cmd.cmd.as_str()) => return,
        Err(e) => return events.ack(&cmd.id, &cmd.cmd, false, &e).await,
    };
    let result: Result<String, String> = match command {
        Command::Flatten { account } if config.account(&account).is_some() => match tokio::task::block_in_place(|| om.flatten(&account, &cmd.id)) {
            Ok(out) => {
                let n = out.iter().filter(|o| matches!(o, Outcome::Order(j) if j.contains("\"accepted\""))).count();
                publish(bus, events, out).await;
                Ok(format!("flattening {account}: {n} closing orders"))
            }
            Err(e) => Err(e.to_string()),
        },
        Command::Flatten { account } => Err(format!("unknown account {account:?}")),
        Command::Basket { account, legs, unwind } => {
            let legs = legs.into_iter().map(|(instrument, side, qty)| crate::orders::BasketLeg { instrument, side, qty }).collect();
            let basket = crate::orders::Basket { id: cmd.id.clone(), account, legs, unwind_on_failure: unwind };
            match tokio::task::block_in_place(|| om.place_basket(&basket)) {
                Ok(out) => {
                    let failed = out.iter().any(|o| matches!(o, Outcome::Event("basket_failed", _)));
                    publish(bus, events, out).await;
                    if failed { Err(format!("basket {} failed; see basket_failed", cmd.id)) } else { Ok(format!("basket {} placed: buy legs first", cmd.id)) }
                }
                Err(e) => Err(e.to_string()),
            }
        }
        Command::KillSwitch { on } => match om.set_kill_switch(on) {
            Ok(()) => {
                events.emit("kill_switch", json!({ "on": on, "command_id": cmd.id })).await;
                Ok(if on { "kill switch on: no new orders until released".into() } else { "kill switch released".into() })
            }
            Err(e) => Err(e.to_string()),
        },
        Command::Token { account, access_token } => match router {
            Some(r) if r.token(&account, access_token) => Ok(format!("new token for {account}: checking the session")),
            Some(_) => Err(format!("{account} is not a live account")),
            None => Err("not in live mode: tokens are for live accounts".into()),
        },
        Command::Pipelines { .. } | Command::Reload | Command::Shutdown => return, // the engine's and the host's
    };
    match result {
        Ok(detail) => events.ack(&cmd.id, &cmd.cmd, true, &detail).await,
        Err(detail) => events.ack(&cmd.id, &cmd.cmd, false, &detail).await,
    }
}

fn print_summary(summary: &Value) {
    println!("\n{:<16} {:>14} {:>14}  positions", "account", "realised", "unrealised");
    if let Some(accounts) = summary["accounts"].as_object() {
        for (id, a) in accounts {
            println!("{id:<16} {:>14} {:>14}  {}", a["realized"].as_str().unwrap_or("0"), a["unrealized"].as_str().unwrap_or("0"), a["positions"]);
        }
    }
    println!("orders: {}  (mode {})", summary["counters"], summary["mode"].as_str().unwrap_or("?"));
}
