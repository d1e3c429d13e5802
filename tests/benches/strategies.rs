//! Strategy throughput, WASM against native, in one run on this machine.
//!
//! `cargo bench -p tradehost-tests --bench strategies` (or `scripts/bench`).
//! For each bundled candle strategy, over 1,000,000 synthetic one-minute
//! candles: candles per second natively (the baseline), as WASM with one call
//! per candle, and as WASM through the batched entry point; each WASM figure
//! is printed as a ratio of the native one. The option-chain strategy is
//! measured per snapshot. Then whole backtests (CSV parse, WASM strategy,
//! fills, P&L) at 250k, 500k and 1M bars show that cost grows linearly.
//!
//! Set `BENCH_CANDLES` to change the candle count (default 1,000,000).

use std::time::{Duration, Instant};

use tradehost::backtest::{self, BacktestConfig};
use tradehost::engine::{Native, StrategyRunner, sdk_bar, sdk_chain};
use tradehost::market::csv::{LoadOptions, load};
use tradehost::market::synthetic::{self, CandleSpec};
use tradehost::market::{CandleSeries, MarketData};
use tradehost::sandbox::{CpuBudget, Sandbox, SandboxLimits};
use tradehost_tests::plugin;

/// The `tradehost backtest` binary end to end (process start, plugin compile,
/// CSV parse, backtest, all four outputs), next to the in-process figure.
/// `tradehost backtest --config pipelines.toml --pipeline nifty-ma` on the same file: the
/// bundled pipeline through the order manager and its journal (the core `run` trades with),
/// next to the single-plugin whole process just measured.
fn pipeline_process(csv: &std::path::Path, bars: usize, single: Duration) {
    let bin = tradehost_tests::tradehost_bin();
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines.toml");
    let out = csv.with_extension("pipeline-out");
    let (d, _) = best_of_3(|| {
        let status = std::process::Command::new(&bin)
            .args(["backtest", "--config"])
            .arg(&config)
            .args(["--pipeline", "nifty-ma", "--plugin-dir"])
            .arg(tradehost_tests::plugin_dir())
            .arg("--data")
            .arg(csv)
            .arg("--out")
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        0
    });
    println!(
        "{bars:>10} {:>12.3} {:>12.0}   whole process: `tradehost backtest --config` (order manager, risk, journal), {:.2}x the single-plugin process",
        d.as_secs_f64(),
        d.as_nanos() as f64 / bars as f64,
        d.as_secs_f64() / single.as_secs_f64()
    );
}

fn whole_process(
    csv: &std::path::Path,
    wasm: &std::path::Path,
    bars: usize,
    in_process: Option<Duration>,
) -> Duration {
    let bin = tradehost_tests::tradehost_bin();
    let out = csv.with_extension("out");
    let (d, _) = best_of_3(|| {
        let status = std::process::Command::new(&bin)
            .args(["backtest", "--plugin"])
            .arg(wasm)
            .arg("--data")
            .arg(csv)
            .arg("--out")
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        0
    });
    let ratio = in_process
        .map(|p| {
            format!(
                ", {:.2}x the in-process time",
                d.as_secs_f64() / p.as_secs_f64()
            )
        })
        .unwrap_or_default();
    println!(
        "{bars:>10} {:>12.3} {:>12.0}   whole process: `tradehost backtest --plugin` binary{ratio}",
        d.as_secs_f64(),
        d.as_nanos() as f64 / bars as f64
    );
    d
}

const BATCH: usize = 4096;

fn native(name: &str) -> Box<dyn StrategyRunner> {
    match name {
        "ma-crossover" => Box::new(
            Native::<ma_crossover::MaCrossover>::new("ma-crossover", "0.1.0", &[]).unwrap(),
        ),
        "rsi" => Box::new(Native::<rsi::RsiReversal>::new("rsi", "0.1.0", &[]).unwrap()),
        "orb" => Box::new(Native::<orb::OpeningRangeBreakout>::new("orb", "0.1.0", &[]).unwrap()),
        "oi-crossover" => Box::new(
            Native::<oi_crossover::OiCrossover>::new("oi-crossover", "0.1.0", &[]).unwrap(),
        ),
        other => panic!("no native build of {other}"),
    }
}

/// Best of three: the least disturbed run is the truest on a shared machine.
fn best_of_3(mut f: impl FnMut() -> usize) -> (Duration, usize) {
    (0..3)
        .map(|_| {
            let t = Instant::now();
            let n = f();
            (t.elapsed(), n)
        })
        .min_by_key(|(d, _)| *d)
        .unwrap_or_default()
}

fn per_event(runner: &mut dyn StrategyRunner, bars: &[strategy_sdk::Bar]) -> usize {
    bars.iter()
        .map(|b| runner.on_candle("NIFTY", 60, b).unwrap().len())
        .sum()
}

fn batched(runner: &mut dyn StrategyRunner, bars: &[strategy_sdk::Bar]) -> usize {
    bars.chunks(BATCH)
        .map(|c| runner.on_candles("NIFTY", 60, c).unwrap().len())
        .sum()
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn main() {
    let candles: usize = std::env::var("BENCH_CANDLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let days = candles.div_ceil(synthetic::BARS_PER_DAY as usize) as u32;
    let mut series = synthetic::candles(&CandleSpec {
        with_volume: true,
        ..CandleSpec::nifty_like(42, days)
    });
    series.bars.truncate(candles);
    let bars: Vec<strategy_sdk::Bar> = series.bars.iter().map(sdk_bar).collect();
    println!(
        "tradehost strategy benchmark: {} candles, batch {BATCH}, {} cores",
        bars.len(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("WASM budgets: fuel (backtest, deterministic) and epoch (live, wall clock)\n");
    println!(
        "{:<14} {:>14} {:>22} {:>22} {:>22}",
        "strategy",
        "native c/s",
        "wasm per-event (fuel)",
        "wasm batched (fuel)",
        "wasm batched (epoch)"
    );

    let fuel = Sandbox::new(SandboxLimits::backtest()).unwrap();
    let epoch = Sandbox::new(SandboxLimits {
        cpu: CpuBudget::Time {
            per_event: Duration::from_millis(50),
        },
        ..SandboxLimits::live()
    })
    .unwrap();
    let mut worst_batched = f64::INFINITY;
    for name in ["ma-crossover", "rsi", "orb"] {
        let (dn, sn) = best_of_3(|| batched(native(name).as_mut(), &bars));
        let fuel_plugin = fuel.load_file(&plugin(name)).unwrap();
        let epoch_plugin = epoch.load_file(&plugin(name)).unwrap();
        let (de, se) =
            best_of_3(|| per_event(&mut fuel.instantiate(&fuel_plugin, &[]).unwrap(), &bars));
        let (db, sb) =
            best_of_3(|| batched(&mut fuel.instantiate(&fuel_plugin, &[]).unwrap(), &bars));
        let (dt, st) =
            best_of_3(|| batched(&mut epoch.instantiate(&epoch_plugin, &[]).unwrap(), &bars));
        assert!(
            sn == se && sn == sb && sn == st,
            "{name}: signal counts differ: native {sn}, wasm {se}/{sb}/{st}"
        );
        let native_rate = rate(bars.len(), dn);
        let cell = |d: Duration| {
            let r = rate(bars.len(), d);
            format!("{:>10.0} ({:>5.2}x)", r, r / native_rate)
        };
        println!(
            "{name:<14} {native_rate:>14.0} {:>22} {:>22} {:>22}",
            cell(de),
            cell(db),
            cell(dt)
        );
        worst_batched = worst_batched.min(rate(bars.len(), db) / native_rate);
    }

    // The sandbox's own cost: a strategy that does nothing, natively and as WASM.
    let idle = fuel.load_file(&plugin("hostile")).unwrap();
    let idle_params = vec![("behaviour".to_owned(), "idle".to_owned())];
    let (dn, _) = best_of_3(|| {
        batched(
            &mut Native::<hostile::Hostile>::new("hostile", "0.1.0", &idle_params).unwrap(),
            &bars,
        )
    });
    let (de, _) =
        best_of_3(|| per_event(&mut fuel.instantiate(&idle, &idle_params).unwrap(), &bars));
    let (db, _) = best_of_3(|| batched(&mut fuel.instantiate(&idle, &idle_params).unwrap(), &bars));
    let ns = |d: Duration| d.as_nanos() as f64 / bars.len() as f64;
    println!(
        "{:<14} {:>11.1} ns {:>19.1} ns {:>19.1} ns   (empty strategy, per candle: reading the bars natively; the sandbox's call per bar, and per batch)",
        "(empty)",
        ns(dn),
        ns(de),
        ns(db)
    );
    println!(
        "the batched boundary's own cost: {:.1} ns a candle over reading the bars natively (aim: at most 5 ns)",
        ns(db) - ns(dn)
    );

    let chain_days = 20;
    let underlying = CandleSeries {
        bars: series.bars[..chain_days * synthetic::BARS_PER_DAY as usize].to_vec(),
        ..series.clone()
    };
    let chains: Vec<strategy_sdk::OptionChain> = synthetic::option_chains(&underlying, 42, 1)
        .iter()
        .map(sdk_chain)
        .collect();
    let run_chains = |r: &mut dyn StrategyRunner| {
        chains
            .iter()
            .map(|c| r.on_option_chain(c).unwrap().len())
            .sum::<usize>()
    };
    let (dn, sn) = best_of_3(|| run_chains(native("oi-crossover").as_mut()));
    let oi = fuel.load_file(&plugin("oi-crossover")).unwrap();
    let (dw, sw) = best_of_3(|| run_chains(&mut fuel.instantiate(&oi, &[]).unwrap()));
    assert_eq!(sn, sw, "oi-crossover signal counts differ");
    let (rn, rw) = (rate(chains.len(), dn), rate(chains.len(), dw));
    println!(
        "{:<14} {rn:>14.0} {:>22}   (option-chain snapshots/s, {} strikes x 2 expiries each)",
        "oi-crossover",
        format!("{rw:>10.0} ({:>5.2}x)", rw / rn),
        21
    );
    println!(
        "\nbatched WASM keeps {:.0}% of native speed at worst (aim: at least 33%)",
        worst_batched * 100.0
    );

    println!("\nwhole backtest (parse CSV + ma-crossover WASM batched + fills + P&L), by size:");
    println!(
        "{:>10} {:>12} {:>12} {:>14}",
        "bars", "seconds", "ns/bar", "vs smallest"
    );
    let dir = tempfile::tempdir().unwrap();
    let ma = fuel.load_file(&plugin("ma-crossover")).unwrap();
    let mut first_ns = None;
    for n in [bars.len() / 4, bars.len() / 2, bars.len()] {
        let path = dir.path().join(format!("nifty_{n}.csv"));
        let part = CandleSeries {
            bars: series.bars[..n].to_vec(),
            ..series.clone()
        };
        synthetic::write_candles_csv(&path, &part).unwrap();
        let (d, trades) = best_of_3(|| {
            let data = load(&path, &LoadOptions::default()).unwrap().data;
            let mut strategy = fuel.instantiate(&ma, &[]).unwrap();
            backtest::run(&mut strategy, &data, &BacktestConfig::default(), |_| {})
                .unwrap()
                .trades
                .len()
        });
        let ns = d.as_nanos() as f64 / n as f64;
        let base = *first_ns.get_or_insert(ns);
        println!(
            "{n:>10} {:>12.3} {ns:>12.0} {:>13.2}x   ({trades} trades)",
            d.as_secs_f64(),
            ns / base
        );
        if n == bars.len() {
            let data = MarketData::Candles(part);
            let (dn, tn) = best_of_3(|| {
                let mut strategy = native("ma-crossover");
                backtest::run(strategy.as_mut(), &data, &BacktestConfig::default(), |_| {})
                    .unwrap()
                    .trades
                    .len()
            });
            assert_eq!(tn, trades, "native and WASM backtests disagree");
            println!(
                "{:>10} {:>12.3} {:>12.0}   native strategy, data already in memory (baseline)",
                n,
                dn.as_secs_f64(),
                dn.as_nanos() as f64 / n as f64
            );
            // The same core with an intraday account's rules switched on: reversals, slippage
            // on the tick, a stop and a trailing stop on every bar, the 15:15 square-off.
            let intraday = BacktestConfig {
                mode: tradehost::backtest::PositionMode::Both,
                qty: 3,
                square_off_minute: Some(15 * 60 + 15),
                slippage_bps: rust_decimal::Decimal::from(5),
                exits: tradehost::config::ExitRules {
                    stop_loss_pct: rust_decimal::Decimal::new(4, 1),
                    trailing_pct: rust_decimal::Decimal::new(3, 1),
                    ..Default::default()
                },
                ..BacktestConfig::default()
            };
            let (dr, tr) = best_of_3(|| {
                let mut strategy = native("ma-crossover");
                backtest::run(strategy.as_mut(), &data, &intraday, |_| {})
                    .unwrap()
                    .trades
                    .len()
            });
            println!(
                "{:>10} {:>12.3} {:>12.0}   native strategy, every account rule on ({tr} trades): {:.2}x the baseline",
                n,
                dr.as_secs_f64(),
                dr.as_nanos() as f64 / n as f64,
                dr.as_secs_f64() / dn.as_secs_f64()
            );
            whole_process(&path, &plugin("ma-crossover"), n, Some(d));
        }
    }

    // A configured pipeline through the order manager costs far more a bar (a journal
    // transaction per price): 60 days, next to the single-plugin process on the same file.
    let n = bars.len().min(60 * synthetic::BARS_PER_DAY as usize);
    let path = dir.path().join(format!("nifty_{n}_pipeline.csv"));
    synthetic::write_candles_csv(
        &path,
        &CandleSeries {
            bars: series.bars[..n].to_vec(),
            ..series.clone()
        },
    )
    .unwrap();
    println!("\nbacktest of the bundled pipeline nifty-ma as configured, {n} bars:");
    let single = whole_process(&path, &plugin("ma-crossover"), n, None);
    pipeline_process(&path, n, single);

    memory(&bars, &chains);
}

/// Linux's resident set size of this process, in KiB (`VmRSS`), or of `pid` at its peak (`VmHWM`).
fn status_kib(pid: Option<u32>, field: &str) -> Option<u64> {
    let path = pid.map_or_else(
        || "/proc/self/status".to_owned(),
        |p| format!("/proc/{p}/status"),
    );
    let status = std::fs::read_to_string(path).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// What a live instance of each bundled strategy holds (its linear memory, stack and
/// state, as the resident set grows with 40 of them warmed on a week of bars), beside
/// what the same strategy built natively holds; then the peak resident set of
/// `tradehost run` with the four bundled pipelines at full speed.
fn memory(bars: &[strategy_sdk::Bar], chains: &[strategy_sdk::OptionChain]) {
    const INSTANCES: usize = 40;
    println!(
        "\nmemory (resident set, {INSTANCES} instances each, warmed on a week of bars or a day of chains):"
    );
    if status_kib(None, "VmRSS:").is_none() {
        println!("  no /proc/self/status on this system: not measured");
        return;
    }
    let live = Sandbox::new(SandboxLimits::live()).unwrap();
    let week = &bars[..bars.len().min(5 * synthetic::BARS_PER_DAY as usize)];
    let day = &chains[..chains.len().min(synthetic::BARS_PER_DAY as usize)];
    let warm = |name: &str, r: &mut dyn StrategyRunner| {
        if name == "oi-crossover" {
            for c in day {
                r.on_option_chain(c).unwrap();
            }
        } else {
            r.on_candles("NIFTY", 60, week).unwrap();
        }
    };
    for name in ["ma-crossover", "rsi", "orb", "oi-crossover"] {
        let compiled = live.load_file(&plugin(name)).unwrap();
        let before = status_kib(None, "VmRSS:").unwrap_or(0);
        let mut held: Vec<Box<dyn StrategyRunner>> = Vec::with_capacity(INSTANCES);
        for _ in 0..INSTANCES {
            let mut i = live.instantiate(&compiled, &[]).unwrap();
            warm(name, &mut i);
            held.push(Box::new(i));
        }
        let wasm = status_kib(None, "VmRSS:")
            .unwrap_or(0)
            .saturating_sub(before) as f64
            / INSTANCES as f64
            / 1024.0;
        drop(held);
        let before = status_kib(None, "VmRSS:").unwrap_or(0);
        let mut natives = Vec::with_capacity(INSTANCES);
        for _ in 0..INSTANCES {
            let mut n = native(name);
            warm(name, n.as_mut());
            natives.push(n);
        }
        let native_mib = status_kib(None, "VmRSS:")
            .unwrap_or(0)
            .saturating_sub(before) as f64
            / INSTANCES as f64
            / 1024.0;
        drop(natives);
        println!(
            "{name:<14} {wasm:>8.2} MiB per live WASM instance (aim: at most 2 MiB); native {native_mib:.3} MiB"
        );
    }

    // `run` with the bundled configuration, its plugins from the build, a journal of its own.
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines.toml"),
    )
    .unwrap();
    let text = text
        .replace(
            "plugin_dir = \"plugins\"",
            &format!(
                "plugin_dir = {:?}",
                tradehost_tests::plugin_dir().display().to_string()
            ),
        )
        .replace(
            "journal = \"out/journal.sqlite\"",
            &format!(
                "journal = {:?}",
                dir.path().join("journal.sqlite").display().to_string()
            ),
        );
    let config = dir.path().join("pipelines.toml");
    std::fs::write(&config, text).unwrap();
    let started = Instant::now();
    let mut child = std::process::Command::new(tradehost_tests::tradehost_bin())
        .args(["run", "--quiet", "--until-idle", "1", "--config"])
        .arg(&config)
        .env_remove("REDIS_URL")
        .env_remove("TRADING_MODE")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The peak only grows: its last reading before the exit is the run's (to within 20 ms).
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        peak = status_kib(Some(child.id()), "VmHWM:")
            .unwrap_or(peak)
            .max(peak);
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "`tradehost run` with the four bundled pipelines (10 days of minutes, full speed): peak {:.0} MiB resident (aim: at most 64 MiB), {:.1} s",
        peak as f64 / 1024.0,
        started.elapsed().as_secs_f64()
    );
}
