//! `tradehost run`: the pipelines of `pipelines.toml`, in one process or
//! split into an engine role and an orders role sharing one Redis.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::bus::events::Events;
use crate::bus::message::printable;
use crate::bus::{Bus, Channels, Lifecycle, Subscription};
use crate::config::Config;
use crate::domain::secret::TokenOverrides;
use crate::engine::watch::Change;

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
pub fn trading_mode() -> anyhow::Result<TradingMode> {
    let text = std::env::var("TRADING_MODE")
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if text.is_empty() {
        return Ok(TradingMode::Paper);
    }
    match TradingMode::parse(&text) {
        Some(mode) => Ok(mode),
        None => bail!("TRADING_MODE={text:?}: expected paper or live"),
    }
}

use crate::domain::TradingMode;
use crate::orders::service::OrdersSettings;

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
    let mode = if args.backtest {
        TradingMode::Paper
    } else {
        trading_mode()?
    };
    println!("tradehost: TRADING_MODE={mode}");
    let config = Arc::new(Config::load(&args.config)?);
    let on_live_brokers: Vec<String> = config
        .accounts
        .iter()
        .filter(|a| a.kind() != Some(crate::domain::BrokerKind::Paper))
        .map(|a| format!("{} ({})", a.id.get_ref(), a.broker.get_ref()))
        .collect();
    if mode == TradingMode::Paper && !on_live_brokers.is_empty() {
        println!(
            "tradehost: paper mode: accounts configured for live brokers trade on paper: {}",
            on_live_brokers.join(", ")
        );
    }
    // One order manager per journal: a second would place and recover the same orders.
    let _journal_lock = if matches!(args.role, Role::All | Role::Orders) {
        let journal = args
            .journal
            .clone()
            .unwrap_or_else(|| config.resolve(&config.host.journal));
        Some(lock_journal(&journal)?)
    } else {
        None
    };
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
    let url = if args.backtest {
        None
    } else {
        args.redis.clone().or_else(|| config.redis_url())
    };
    let bus = match url {
        Some(url) => match connect_redis(&url, &prefix, shutdown.clone()).await? {
            Some(bus) => bus,
            None => return Ok(()), // told to stop while waiting for Redis
        },
        None => Bus::embedded(&prefix),
    };
    if args.role != Role::All && matches!(bus, Bus::Embedded(_)) {
        bail!(
            "--role {:?} runs half of the pipeline and needs a Redis bus the other half shares: set REDIS_URL or [bus] url",
            args.role
        );
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
        Some(spawn_printer(
            bus.subscribe(&[c.signals(), c.orders(), c.events()])
                .await?,
            c.clone(),
        ))
    };
    let orders_commands = if matches!(args.role, Role::All | Role::Orders) {
        Some(bus.subscribe(&[bus.channels().commands()]).await?)
    } else {
        None
    };
    // Live brokers belong to the orders role; nothing trades until every live account is ready.
    let live = if mode == TradingMode::Live && orders_commands.is_some() {
        let orders_events = Events::new(bus.clone(), "orders");
        match super::live::connect(&config, &bus, &orders_events, shutdown.clone()).await? {
            Some(live) => Some(live),
            None => return Ok(()), // told to stop while waiting for a broker
        }
    } else {
        None
    };

    // One watcher per process: plugin folder changes go to the engine, configuration
    // changes through `config_watch` to both roles.
    let (plugin_tx, plugin_rx) = mpsc::channel(16);
    let (config_change_tx, config_change_rx) = mpsc::channel(16);
    let (change_tx, mut change_rx) = mpsc::channel(16);
    let _watcher = crate::engine::watch::watch(
        &config.resolve(&config.host.plugin_dir),
        &args.config,
        change_tx,
    )
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
    let alerts = if orders_commands.is_some() {
        super::live::start_notifier(&config, &bus, config_rx.clone()).await?
    } else {
        None
    };
    let (reload_tx, reload_rx) = mpsc::channel(16);
    tokio::spawn(crate::engine::service::config_watch(
        args.config.clone(),
        Events::new(bus.clone(), "host"),
        config_tx,
        config_change_rx,
        reload_rx,
    ));
    let engine_commands = if matches!(args.role, Role::All | Role::Engine) {
        Some(bus.subscribe(&[bus.channels().commands()]).await?)
    } else {
        None
    };
    let engine = engine_commands.map(|commands| {
        let (config, bus, configs) = (config.clone(), bus.clone(), config_rx.clone());
        let lifecycle = Lifecycle {
            shutdown: shutdown.clone(),
            stop: shutdown_tx.clone(),
            until_idle: args.until_idle.is_some(),
            wait_for_plugins: args.wait_for_plugins,
        };
        // The brokers reach the engine through these: its `broker` sources' ticks and chains.
        let tokens = TokenOverrides::default();
        let feeds = crate::market::feed::BrokerLinks {
            feed: crate::brokers::feeds::resolver(configs.clone(), bus.clone(), tokens.clone()),
            chain: crate::brokers::feeds::chain_resolver(
                configs.clone(),
                bus.clone(),
                tokens.clone(),
            ),
        };
        tokio::spawn(async move {
            crate::engine::service::serve(
                config, bus, lifecycle, plugin_rx, configs, commands, feeds, tokens,
            )
            .await
        })
    });
    // `[console] listen`: the web console beside the pipelines, on the same bus and journal.
    let console = match config.console.listen {
        Some(listen) if matches!(args.role, Role::All | Role::Orders) => {
            let users = crate::console::users(&config)?;
            let journal = args
                .journal
                .clone()
                .unwrap_or_else(|| config.resolve(&config.host.journal));
            let settings = crate::console::ConsoleSettings {
                listen,
                journal,
                secure_cookies: config.console.secure_cookies,
            };
            let mut stop = shutdown.clone();
            let (config, bus) = (config.clone(), bus.clone());
            Some(tokio::spawn(async move {
                let until = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                if let Err(e) = crate::console::serve(config, bus, settings, users, until).await {
                    tracing::error!("console: {e:#}");
                    eprintln!("tradehost: console: {e:#}");
                }
            }))
        }
        _ => None,
    };
    let (engine_done_tx, engine_done) = watch::channel(engine.is_none());
    let orders = orders_commands.map(|commands| {
        let journal = args
            .journal
            .clone()
            .unwrap_or_else(|| config.resolve(&config.host.journal));
        let durability = if args.backtest {
            crate::orders::Durability::Scratch
        } else {
            crate::orders::Durability::Durable
        };
        let settings = OrdersSettings {
            journal,
            consumer: args.consumer.clone(),
            mode,
            until_idle: args.until_idle.map(Duration::from_secs_f64),
            durability,
        };
        let (config, bus, configs, reload) = (
            config.clone(),
            bus.clone(),
            config_rx.clone(),
            reload_tx.clone(),
        );
        let lifecycle = Lifecycle {
            shutdown: shutdown.clone(),
            stop: shutdown_tx.clone(),
            until_idle: args.until_idle.is_some(),
            wait_for_plugins: args.wait_for_plugins,
        };
        tokio::spawn(async move {
            crate::orders::service::serve(
                config,
                bus,
                settings,
                commands,
                lifecycle,
                engine_done,
                configs,
                reload,
                live.map(|l| (l.router, l.reports)),
            )
            .await
        })
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
    if let Some(c) = console {
        c.abort();
    }
    if let Some(pending) = alerts {
        // Alerts still queued (Telegram allows about one a second per chat) go
        // out before we do; on SIGTERM only as long as a clean stop allows.
        let budget = if *shutdown.borrow() {
            STOP_ALERT_FLUSH
        } else {
            ALERT_FLUSH
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let waiting = || pending.load(std::sync::atomic::Ordering::SeqCst);
        if waiting() > 0 {
            println!(
                "tradehost: sending {} queued alerts before exiting",
                waiting()
            );
        }
        let deadline = tokio::time::Instant::now() + budget;
        while waiting() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if waiting() > 0 {
            eprintln!(
                "tradehost: {} alerts were not sent in {} s",
                waiting(),
                budget.as_secs()
            );
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Connect to Redis, waiting with back-off while it is not there (a service
/// started before its Redis must not die of it); `None` when told to stop meanwhile.
async fn connect_redis(
    url: &str,
    prefix: &str,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Option<Bus>> {
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
            Err(crate::bus::BusError::Redis(e))
                if e.kind() == redis::ErrorKind::InvalidClientConfig =>
            {
                return Err(anyhow::anyhow!("REDIS_URL / [bus] url {url:?}: {e}"));
            }
            Err(e) => {
                if !told {
                    eprintln!(
                        "tradehost: waiting for Redis at {url}: {e} (retrying; Ctrl-C to stop)"
                    );
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
                eprintln!(
                    "tradehost: Redis connection lost: holding decisions and buffering prices and signals while reconnecting"
                );
            }
            (true, Some(since)) => {
                down_since = None;
                let down_ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX);
                eprintln!(
                    "tradehost: Redis is back after {:.1} s; resuming from the streams",
                    down_ms as f64 / 1000.0
                );
                events
                    .publish(&crate::bus::events::Event::RedisOutage {
                        down_ms,
                        detail: "Redis was unreachable; the streams were resumed with nothing lost"
                            .into(),
                    })
                    .await;
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
            let Ok(v) = serde_json::from_str::<Value>(&payload) else {
                continue;
            };
            // Fields come from the bus: control characters escaped and length capped before they reach a terminal.
            let text = |k: &str| {
                printable(
                    &v[k]
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| v[k].to_string()),
                    200,
                )
            };
            let line = match v["type"].as_str() {
                Some("signal") => format!(
                    "signal  {:<16} {:<10} {:<4} @ {:<10} {}",
                    text("pipeline"),
                    text("instrument"),
                    text("side"),
                    text("price"),
                    text("reason")
                ),
                Some("order") if matches!(v["state"].as_str(), Some("filled")) => {
                    format!(
                        "order   {:<16} {} {} {} {} @ {} [{}]",
                        text("account"),
                        text("state"),
                        text("side"),
                        text("qty"),
                        text("instrument"),
                        text("price"),
                        text("mode")
                    )
                }
                Some("event") if channel == channels.events() => format!(
                    "event   {} {}",
                    text("event"),
                    printable(v["pipeline"].as_str().unwrap_or(""), 80)
                ),
                Some("error") => format!("error   {}: {}", text("source"), text("reason")),
                Some("command_ack") => format!(
                    "ack     {} {} ok={} {}",
                    text("command_id"),
                    text("cmd"),
                    text("ok"),
                    text("detail")
                ),
                _ => continue,
            };
            println!("{line}");
        }
    })
}

fn print_summary(summary: &Value) {
    println!(
        "\n{:<16} {:>14} {:>14}  positions",
        "account", "realised", "unrealised"
    );
    if let Some(accounts) = summary["accounts"].as_object() {
        for (id, a) in accounts {
            println!(
                "{id:<16} {:>14} {:>14}  {}",
                a["realized"].as_str().unwrap_or("0"),
                a["unrealized"].as_str().unwrap_or("0"),
                a["positions"]
            );
        }
    }
    println!(
        "orders: {}  (mode {})",
        summary["counters"],
        summary["mode"].as_str().unwrap_or("?")
    );
}

/// Hold `journal`'s lock (`<journal>.lock`, an exclusive advisory lock the operating system
/// releases when the process ends, however it ends) for as long as the returned file lives,
/// with this process's id in it.
///
/// # Errors
/// Another process holds it (named by its id), or the lock file cannot be made.
pub fn lock_journal(journal: &std::path::Path) -> anyhow::Result<std::fs::File> {
    use std::io::{Read as _, Seek as _, Write as _};
    if let Some(dir) = journal.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating {} for the journal", dir.display()))?;
    }
    let path = journal.with_file_name(format!(
        "{}.lock",
        journal
            .file_name()
            .map_or_else(|| "journal".into(), |n| n.to_string_lossy())
    ));
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening the journal's lock {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            bail!(
                "the journal {} is in use by another tradehost process{}: one order manager per journal (two would place and recover the same orders); stop it first, or give this run its own journal (--journal or [host] journal)",
                journal.display(),
                if holder.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {holder})")
                }
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", path.display()));
        }
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| write!(file, "{}", std::process::id()))
        .and_then(|()| file.flush())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(file)
}
