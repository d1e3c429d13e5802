//! The `tradehost` command line: argument definitions and what each
//! subcommand does. `main.rs` only parses and calls [`run()`].

mod data;
pub mod live;
mod pipeline_backtest;
pub mod run;
mod sweep;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use rust_decimal::Decimal;

use crate::backtest::{self, BacktestConfig, PositionMode};
use crate::market::csv::{LoadOptions, load};
use crate::market::session::Session;
use crate::market::{MarketData, clock, synthetic};
use crate::sandbox::{CpuBudget, Sandbox, SandboxLimits};

/// Runs sandboxed WebAssembly trading strategies on NSE market data.
#[derive(Debug, Parser)]
#[command(name = "tradehost", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process: boxing would only add noise
pub enum Command {
    /// Replay a data file through a strategy plugin and write signals, trades, a summary and a report.
    Backtest(BacktestArgs),
    /// Backtest a plugin over a grid of parameters on every core: a ranked table, a heatmap, walk-forward.
    Sweep(sweep::SweepArgs),
    /// Convert market data files: `tradehost data import <csv>... --out <dir>` writes Parquet.
    Data {
        /// What to do.
        #[command(subcommand)]
        command: data::DataCommand,
    },
    /// Write a deterministic synthetic market (candles and an option chain) as CSV files.
    Generate(GenerateArgs),
    /// Run the pipelines of pipelines.toml: market data, strategies, signals, orders.
    Run(run::RunArgs),
    /// Watch a running host over Redis: pipelines, signals, orders, positions and P&L.
    Monitor {
        /// Redis URL (else REDIS_URL, else `[bus] url` of --config).
        #[arg(long)]
        redis: Option<String>,
        /// Configuration to read the bus settings from.
        #[arg(long, default_value = "pipelines.toml")]
        config: PathBuf,
        /// Print every message as raw JSON.
        #[arg(long)]
        raw: bool,
    },
    /// The web console: watch and steer a running host from a browser (users and their
    /// password hashes in the secrets file, `[console.users.<name>]`).
    Console {
        /// Configuration: the accounts, pipelines, bus and journal to show.
        #[arg(long, default_value = "pipelines.toml")]
        config: PathBuf,
        /// Where to listen (default `[console] listen`, else 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Redis URL (else REDIS_URL, else `[bus] url`).
        #[arg(long)]
        redis: Option<String>,
        /// Print the argon2 hash of the password read from standard input, for the secrets file, and exit.
        #[arg(long)]
        hash_password: bool,
    },
    /// Per-account, per-day FIFO P&L from the orders journal; round trips as CSV.
    Report {
        /// The journal (default: `[host] journal` of pipelines.toml).
        #[arg(long, default_value = "out/journal.sqlite")]
        journal: PathBuf,
        /// Write the round-trip trades here as CSV.
        #[arg(long)]
        csv: Option<PathBuf>,
        /// Write every fill here as `ts,account,instrument,side,qty,price,reason`, the
        /// columns of a backtest's `fills.csv`, to compare the two line by line.
        #[arg(long)]
        fills_csv: Option<PathBuf>,
        /// Charges per filled order, rupees (brokerage, taxes).
        #[arg(long, default_value = "0")]
        charges_per_order: Decimal,
    },
    /// The regulator's audit trail from the orders journal as CSV: every decision and
    /// order with its times, strategy, plugin version and sha256, algo id, outcome and rule.
    Audit {
        /// The journal.
        #[arg(long, default_value = "out/journal.sqlite")]
        journal: PathBuf,
        /// Only this IST day (`YYYY-MM-DD`, by exchange time); default: every day.
        #[arg(long)]
        day: Option<String>,
        /// Write the CSV here (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check a plugin file and print what it is.
    Inspect {
        /// The `.wasm` file.
        plugin: PathBuf,
    },
}

/// `tradehost backtest`.
#[derive(Debug, Args)]
pub struct BacktestArgs {
    /// The strategy, its parameters and its data.
    #[command(flatten)]
    pub strategy: StrategyArgs,
    /// Where to write signals.csv, trades.csv, summary.json and report.html.
    #[arg(long)]
    pub out: PathBuf,
    /// With `--config`: trade from this IST date or time (`2024-03-01`,
    /// `2024-03-01T09:15:00+05:30`); the data before it warms the strategies up.
    #[arg(long, requires = "config", value_name = "WHEN")]
    pub trade_from: Option<String>,
    /// The account's rules, the data's reading, the sandbox's limits.
    #[command(flatten)]
    pub rules: RulesArgs,
}

/// What a backtest or a sweep runs: a plugin, or a pipeline of a configuration; on which data.
#[derive(Debug, Args)]
pub struct StrategyArgs {
    /// The strategy plugin (`.wasm` component); or `--config` and `--pipeline`.
    #[arg(long, required_unless_present = "config", conflicts_with = "config")]
    pub plugin: Option<PathBuf>,
    /// A pipeline as configured: its plugin, params and accounts (sizing, risk, exits,
    /// product, slippage), traded through the same order manager `run` uses.
    #[arg(long, requires = "pipeline")]
    pub config: Option<PathBuf>,
    /// The pipeline of `--config`. A backtest takes several (repeat it, or
    /// `a,b`): a portfolio, its pipelines sharing their accounts' capital and
    /// risk rules, merged in event time.
    #[arg(long, requires = "config", value_delimiter = ',')]
    pub pipeline: Vec<String>,
    /// With `--config`: take the plugin from this folder instead of the configuration's
    /// `plugin_dir` (e.g. the build's output, before the plugins are installed).
    #[arg(long, requires = "config")]
    pub plugin_dir: Option<PathBuf>,
    /// Candle or option-chain data: CSV, or Parquet from `tradehost data import`.
    /// A backtest of pipelines takes `PIPELINE=FILE` per pipeline (one file alone
    /// serves them all), or none: each pipeline then replays its configured
    /// source (a replay or the synthetic market) as fast as the machine goes.
    #[arg(
        long,
        value_name = "[PIPELINE=]FILE",
        required_unless_present = "config"
    )]
    pub data: Vec<String>,
    /// Strategy parameter, `key=value`; repeat for more.
    #[arg(long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,
}

impl StrategyArgs {
    /// The one data file of a single-plugin backtest or a sweep.
    ///
    /// # Errors
    /// None or several given.
    pub fn data_file(&self) -> anyhow::Result<PathBuf> {
        match self.data.as_slice() {
            [one] => Ok(PathBuf::from(one)),
            [] => bail!("give --data <file>"),
            _ => bail!(
                "--data: one file here (several are for a backtest of several pipelines, as PIPELINE=FILE)"
            ),
        }
    }
}

/// How a single-plugin backtest or a sweep trades, reads its data and limits the plugin.
#[derive(Debug, Args)]
pub struct RulesArgs {
    /// Which positions signals may open.
    #[arg(long, value_enum, default_value = "long")]
    pub mode: PositionMode,
    /// Units per position.
    #[arg(long, default_value_t = 1)]
    pub qty: u64,
    /// Slippage against the trader, basis points (an account's `slippage_bps`); fills go on the 0.05 tick.
    #[arg(long, default_value = "0")]
    pub slippage_bps: Decimal,
    /// Stop-loss this many percent from the entry, for signals that set none.
    #[arg(long, default_value = "0")]
    pub stop_loss_pct: Decimal,
    /// Target this many percent from the entry, for signals that set none.
    #[arg(long, default_value = "0")]
    pub target_pct: Decimal,
    /// Trailing stop this many percent behind the best price since entry.
    #[arg(long, default_value = "0")]
    pub trailing_pct: Decimal,
    /// How a stop or target that fires fills: `at-level` (the level the bar touched, or its
    /// open on a gap) or `next-price` (a market order on the next bar's open, as paper and live).
    #[arg(long, value_enum, default_value = "at-level")]
    pub exit_fill: crate::orders::exits::ExitFill,
    /// Starting capital in rupees.
    #[arg(long, default_value = "1000000")]
    pub capital: Decimal,
    /// Close positions intraday at this IST time (`HH:MM`) and refuse entries after it.
    #[arg(long, value_name = "HH:MM")]
    pub square_off: Option<String>,
    /// Instrument name, instead of the file's.
    #[arg(long)]
    pub instrument: Option<String>,
    /// Candles of the underlying, for option-chain data (else spot comes from put-call parity).
    #[arg(long)]
    pub underlying: Option<PathBuf>,
    /// Session filter `HH:MM-HH:MM` (IST), or `all` to keep every bar.
    #[arg(long, default_value = "09:15-15:30")]
    pub session: String,
    /// Bars per strategy call (1 = one call per bar).
    #[arg(long, default_value_t = 4096)]
    pub batch: usize,
    /// CPU budget per event, in instructions of fuel (deterministic).
    #[arg(long, default_value_t = 20_000_000)]
    pub fuel_per_event: u64,
    /// Memory cap of the plugin instance, in MiB.
    #[arg(long, default_value_t = 64)]
    pub memory_mib: usize,
}

/// `tradehost generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Trading days of candles.
    #[arg(long, default_value_t = 60)]
    pub days: u32,
    /// Trading days of option chains (one snapshot a minute).
    #[arg(long, default_value_t = 3)]
    pub chain_days: u32,
    /// Seed: the same seed writes the same files.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// Run a parsed command line.
///
/// # Errors
/// Whatever the subcommand reports, with context naming the file at fault.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Backtest(args) => run_backtest(&args),
        Command::Generate(args) => run_generate(&args),
        Command::Sweep(args) => sweep::run(&args),
        Command::Data { command } => data::run(&command),
        Command::Inspect { plugin } => run_inspect(&plugin),
        Command::Run(args) => tokio_runtime()?.block_on(run::run(args)),
        Command::Report {
            journal,
            csv,
            fills_csv,
            charges_per_order,
        } => {
            let fills = crate::orders::report::read_fills(&journal)?;
            let mut report = crate::orders::report::build(&fills, charges_per_order);
            report.refusals = crate::orders::report::read_refusals(&journal)?;
            if let Some(csv) = &csv {
                std::fs::write(csv, report.trips_csv())
                    .with_context(|| format!("writing {}", csv.display()))?;
            }
            if let Some(path) = &fills_csv {
                let text = crate::orders::report::fills_csv(
                    fills
                        .iter()
                        .map(crate::orders::report::FillLine::from)
                        .collect(),
                );
                std::fs::write(path, text)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            // A closed pipe (`| head`) ends the output, not the program with a panic.
            let mut out = std::io::stdout().lock();
            let _ = std::io::Write::write_all(&mut out, report.render().as_bytes());
            if let Some(csv) = csv {
                let _ = writeln!(
                    out,
                    "wrote {} round trips to {}",
                    report.trips.len(),
                    csv.display()
                );
            }
            Ok(())
        }
        Command::Audit { journal, day, out } => {
            let (csv, rows) = crate::orders::audit::audit_csv(&journal, day.as_deref())?;
            match out {
                Some(path) => {
                    std::fs::write(&path, csv)
                        .with_context(|| format!("writing {}", path.display()))?;
                    println!("wrote {rows} audit rows to {}", path.display());
                }
                None => {
                    let _ =
                        std::io::Write::write_all(&mut std::io::stdout().lock(), csv.as_bytes());
                }
            }
            Ok(())
        }
        Command::Monitor { redis, config, raw } => {
            tokio_runtime()?.block_on(run_monitor(redis, &config, raw))
        }
        Command::Console {
            config,
            listen,
            redis,
            hash_password,
        } => {
            if hash_password {
                let mut password = String::new();
                std::io::stdin()
                    .read_line(&mut password)
                    .context("reading the password from standard input")?;
                let password = password.trim_end_matches(['\n', '\r']);
                anyhow::ensure!(!password.is_empty(), "no password on standard input");
                println!("{}", crate::console::hash_password(password)?);
                return Ok(());
            }
            tokio_runtime()?.block_on(run_console(&config, listen, redis))
        }
    }
}

/// `tradehost console`: the web console over a host's Redis bus and its journal.
async fn run_console(
    config: &Path,
    listen: Option<std::net::SocketAddr>,
    redis: Option<String>,
) -> anyhow::Result<()> {
    let config = std::sync::Arc::new(crate::config::Config::load(config)?);
    let url = redis.or_else(|| config.redis_url()).context("the console needs a Redis URL (--redis, REDIS_URL or [bus] url): an embedded bus lives inside its own process; `[console] listen` serves it from `run`")?;
    let bus = crate::bus::Bus::redis(&url, &config.bus.prefix)
        .await
        .with_context(|| format!("connecting to Redis at {url}"))?;
    let users = crate::console::users(&config)?;
    if users.is_empty() {
        eprintln!(
            "console: no users in the secrets file: add [console.users.<name>] password_hash (tradehost console --hash-password) and role"
        );
    }
    let listen = listen
        .or(config.console.listen)
        .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 8080)));
    let settings = crate::console::ConsoleSettings {
        listen,
        journal: config.resolve(&config.host.journal),
        secure_cookies: config.console.secure_cookies,
    };
    crate::console::serve(config, bus, settings, users, shutdown_signal()).await
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

async fn run_monitor(redis: Option<String>, config: &Path, raw: bool) -> anyhow::Result<()> {
    let (url, prefix) = match crate::config::Config::load(config) {
        Ok(c) => (redis.or_else(|| c.redis_url()), c.bus.prefix),
        Err(_) => (
            redis.or_else(|| std::env::var("REDIS_URL").ok()),
            "trading".to_owned(),
        ),
    };
    let url = url.context("monitor needs a Redis URL (--redis, REDIS_URL or [bus] url): an embedded bus lives inside its own process")?;
    let bus = crate::bus::Bus::redis(&url, &prefix)
        .await
        .with_context(|| format!("connecting to Redis at {url}"))?;
    let sub = bus.subscribe(&[bus.channels().all()]).await?;
    println!("monitor: watching {} on {url}", bus.channels().all());
    crate::monitor::follow(sub, raw).await;
    Ok(())
}

/// Split `key=value` parameters.
///
/// # Errors
/// A parameter without `=` or with an empty key.
pub fn parse_params(raw: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    raw.iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
            _ => bail!("--param {p:?}: expected key=value"),
        })
        .collect()
}

impl RulesArgs {
    /// The account's rules as a backtest takes them.
    ///
    /// # Errors
    /// A square-off time, quantity or percentage out of range, named by its flag.
    pub fn backtest_config(&self) -> anyhow::Result<BacktestConfig> {
        let square_off_minute = self
            .square_off
            .as_deref()
            .map(|t| {
                clock::parse_hhmm(t).with_context(|| format!("--square-off {t:?}: expected HH:MM"))
            })
            .transpose()?;
        if self.qty == 0 {
            bail!("--qty 0: must be positive");
        }
        for (flag, value) in [
            ("--slippage-bps", self.slippage_bps),
            ("--stop-loss-pct", self.stop_loss_pct),
            ("--target-pct", self.target_pct),
            ("--trailing-pct", self.trailing_pct),
        ] {
            anyhow::ensure!(
                value >= Decimal::ZERO && value < Decimal::ONE_HUNDRED,
                "{flag} {value}: expected a percentage (basis points for slippage) from 0 to below 100"
            );
        }
        let exits = crate::config::ExitRules {
            stop_loss_pct: self.stop_loss_pct,
            target_pct: self.target_pct,
            trailing_pct: self.trailing_pct,
            ..crate::config::ExitRules::default()
        };
        Ok(BacktestConfig {
            mode: self.mode,
            qty: self.qty,
            capital: self.capital,
            square_off_minute,
            batch: self.batch,
            slippage_bps: self.slippage_bps,
            exits,
            exit_fill: self.exit_fill,
            ..BacktestConfig::default()
        })
    }

    fn session(&self) -> anyhow::Result<Option<Session>> {
        match self.session.as_str() {
            "all" => Ok(None),
            text => Ok(Some(
                Session::parse(text).map_err(|e| anyhow::anyhow!("--session: {e}"))?,
            )),
        }
    }

    /// A sandbox with the fuel and memory budgets asked for.
    ///
    /// # Errors
    /// When wasmtime cannot make an engine.
    pub fn sandbox(&self) -> anyhow::Result<Sandbox> {
        let limits = SandboxLimits {
            cpu: CpuBudget::Fuel {
                per_event: self.fuel_per_event,
            },
            memory_bytes: self.memory_mib.saturating_mul(1 << 20),
            ..SandboxLimits::backtest()
        };
        Sandbox::new(limits)
    }

    /// Read `data` (CSV or Parquet) with the session filter, instrument name and underlying asked for.
    ///
    /// # Errors
    /// A file that cannot be read, named with its line and field.
    pub fn load(&self, data: &Path) -> anyhow::Result<crate::market::csv::Loaded> {
        let session = self.session()?;
        let underlying = match &self.underlying {
            None => None,
            Some(path) => match load(
                path,
                &LoadOptions {
                    session,
                    ..LoadOptions::default()
                },
            )?
            .data
            {
                MarketData::Candles(series) => Some(series),
                MarketData::Chains(_) => bail!(
                    "--underlying {}: expected candles, found an option chain",
                    path.display()
                ),
            },
        };
        Ok(load(
            data,
            &LoadOptions {
                instrument: self.instrument.clone(),
                session,
                underlying,
            },
        )?)
    }
}

/// What `data` holds, for messages: the instrument, or the chain's underlying.
fn describe(data: &MarketData) -> String {
    match data {
        MarketData::Candles(s) => s.instrument.clone(),
        MarketData::Chains(c) => c
            .first()
            .map(|c| format!("{} option chain", c.underlying))
            .unwrap_or_default(),
    }
}

fn run_backtest(args: &BacktestArgs) -> anyhow::Result<()> {
    let (Some(plugin_path), None) = (&args.strategy.plugin, &args.strategy.config) else {
        return pipeline_backtest::run(args);
    };
    let started = Instant::now();
    let params = parse_params(&args.strategy.params)?;
    let config = args.rules.backtest_config()?;
    let session = args.rules.session()?;
    let sandbox = args.rules.sandbox()?;
    let plugin = sandbox.load_file(plugin_path)?;
    let mut strategy = sandbox.instantiate(&plugin, &params)?;
    let data = args.strategy.data_file()?;
    let loaded = args.rules.load(&data)?;
    let loaded_at = started.elapsed();

    let bar = progress_bar(loaded.data.len() as u64, "events");
    let result = backtest::run(&mut strategy, &loaded.data, &config, |done| {
        bar.set_position(done as u64)
    })?;
    bar.finish_and_clear();
    let elapsed = started.elapsed();

    let instrument = describe(&loaded.data);
    let run_info = serde_json::json!({
        "plugin": plugin_path.display().to_string(),
        "plugin_sha256": plugin.sha256(),
        "contract": plugin.contract().to_string(),
        "params": params.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect::<serde_json::Map<_, _>>(),
        "data": data.display().to_string(),
        "instrument": instrument,
        "rows": loaded.rows,
        "rows_outside_session": loaded.outside_session,
        "session": session.map_or_else(|| "all".to_owned(), |s| s.to_string()),
        "batch": config.batch,
        "load_seconds": loaded_at.as_secs_f64(),
        "total_seconds": elapsed.as_secs_f64(),
    });
    backtest::write_outputs(&args.out, &result, &run_info)?;
    let s = &result.summary;
    println!(
        "{} {} on {instrument}: {} events, {} signals, {} trades, P&L {} ({:+.2}%), win rate {:.1}%, max drawdown {} ({:.2}%), Sharpe {:.2} -> {} ({:.2}s)",
        s.strategy,
        s.strategy_version,
        s.events,
        s.signals,
        s.trades,
        s.net_pnl,
        s.return_pct,
        s.win_rate * 100.0,
        s.max_drawdown,
        s.max_drawdown_pct,
        s.sharpe,
        args.out.display(),
        elapsed.as_secs_f64()
    );
    Ok(())
}

/// A progress bar over `len` `unit`s, with the rate and an ETA.
fn progress_bar(len: u64, unit: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(&format!(
        "{{spinner}} {{bar:40}} {{pos}}/{{len}} {unit} {{per_sec}} eta {{eta}}"
    )) {
        bar.set_style(style);
    }
    bar
}

fn run_generate(args: &GenerateArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let write = |name: &str, f: &dyn Fn(&Path) -> std::io::Result<()>| -> anyhow::Result<()> {
        let path = args.out.join(name);
        f(&path).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
        Ok(())
    };
    let nifty = synthetic::candles(&synthetic::CandleSpec {
        with_volume: true,
        ..synthetic::CandleSpec::nifty_like(args.seed, args.days)
    });
    write("nifty_1m.csv", &|p| synthetic::write_candles_csv(p, &nifty))?;
    let bank = synthetic::candles(&synthetic::CandleSpec {
        instrument: "BANKNIFTY".into(),
        seed: args.seed.wrapping_add(1),
        start_price: 48_200.0,
        annual_vol: 0.18,
        with_volume: true,
        ..synthetic::CandleSpec::nifty_like(args.seed, args.days)
    });
    write("banknifty_1m.csv", &|p| {
        synthetic::write_candles_csv(p, &bank)
    })?;
    let chain_days = args.chain_days.min(args.days) as usize;
    let underlying = crate::market::CandleSeries {
        bars: nifty.bars[..chain_days * synthetic::BARS_PER_DAY as usize].to_vec(),
        ..nifty.clone()
    };
    let chains = synthetic::option_chains(&underlying, args.seed, 1);
    write("nifty_optionchain_1m.csv", &|p| {
        synthetic::write_chains_csv(p, &chains)
    })?;
    Ok(())
}

fn run_inspect(path: &Path) -> anyhow::Result<()> {
    let sandbox = Sandbox::new(SandboxLimits::backtest())?;
    let plugin = sandbox.load_file(path)?;
    let instance = sandbox.instantiate(&plugin, &[])?;
    println!(
        "{}: {} {} (contract {}@{}, sha256 {})",
        path.display(),
        instance.name(),
        instance.version(),
        crate::sandbox::CONTRACT_PACKAGE,
        plugin.contract(),
        plugin.sha256()
    );
    Ok(())
}
