//! `tradehost sweep`: one plugin over a grid of parameters, on every core,
//! with the data read once; or, with `--walk-forward`, optimised on each
//! train window and traded on the test window after it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::Args;

use super::{RulesArgs, StrategyArgs, describe, parse_params};
use crate::backtest::grid::{Axis, Grid};
use crate::backtest::sweep::{Metric, Outcome, Run, Sweep, WalkForward, stitched, trading_days};
use crate::backtest::{self, BacktestConfig};
use crate::config::Config;
use crate::market::MarketData;

/// `tradehost sweep`.
#[derive(Debug, Args)]
pub struct SweepArgs {
    /// The strategy, its fixed parameters and its data. With `--config`, each combination
    /// is traded through the order manager with every rule of the pipeline's account.
    #[command(flatten)]
    pub strategy: StrategyArgs,
    /// With `--config`: the account whose numbers to rank (the pipeline's first by default).
    #[arg(long, requires = "config")]
    pub account: Option<String>,
    /// Where to write results.csv, results.parquet, report.html and sweep.json.
    #[arg(long)]
    pub out: PathBuf,
    /// A parameter to sweep: `name=a..b[:step]` (both ends included) or `name=v1,v2,...`; repeat for more.
    #[arg(long = "grid", value_name = "NAME=A..B[:STEP]|NAME=V1,V2")]
    pub grid: Vec<String>,
    /// A TOML file of parameters to sweep (`fast = "5..14"`, `slow = [40, 45]`) and a `[params]` table of fixed ones.
    #[arg(long)]
    pub grid_file: Option<PathBuf>,
    /// What ranks the runs (and picks each walk-forward window's winner).
    #[arg(long, value_enum, default_value = "net_pnl")]
    pub rank: Metric,
    /// The two parameters of the report's heatmap, `x,y` (the first two swept by default).
    #[arg(long, value_name = "X,Y")]
    pub heatmap: Option<String>,
    /// Walk forward: `train=60d,test=20d[,step=20d]`, in trading days.
    #[arg(long, value_name = "train=Nd,test=Nd[,step=Nd]")]
    pub walk_forward: Option<String>,
    /// Worker threads (all cores by default).
    #[arg(long)]
    pub threads: Option<usize>,
    /// The account's rules, the data's reading, the sandbox's limits (with `--plugin`).
    #[command(flatten)]
    pub rules: RulesArgs,
}

/// What to run: the plugin file, its fixed parameters, the rules; with
/// `--config`, the pipeline whose order manager trades each combination.
struct Target {
    plugin: PathBuf,
    fixed: Vec<(String, String)>,
    config: BacktestConfig,
    pipeline: Option<PipelineTarget>,
}

/// A pipeline swept through `backtest --config`: the one core `run` trades with.
struct PipelineTarget {
    config: PathBuf,
    id: String,
    data: PathBuf,
    account: String,
}

fn target(args: &SweepArgs) -> anyhow::Result<Target> {
    let rules = args.rules.backtest_config()?;
    if args.strategy.pipeline.len() > 1 {
        bail!("--pipeline: a sweep varies one pipeline's parameters; give one");
    }
    let (Some(path), Some(id)) = (&args.strategy.config, args.strategy.pipeline.first()) else {
        let Some(plugin) = args.strategy.plugin.clone() else {
            bail!("give --plugin, or --config with --pipeline")
        };
        return Ok(Target {
            plugin,
            fixed: Vec::new(),
            config: rules,
            pipeline: None,
        });
    };
    let config = Config::load(path)?;
    let Some(pipeline) = config.pipeline(id) else {
        let ids: Vec<&str> = config
            .pipelines
            .iter()
            .map(|p| p.id.get_ref().as_str())
            .collect();
        bail!(
            "{}: no pipeline {id:?} (it has {})",
            path.display(),
            ids.join(", ")
        );
    };
    let account_id = match &args.account {
        Some(a) if pipeline.accounts.iter().any(|p| p.get_ref() == a) => a.clone(),
        Some(a) => bail!(
            "--account {a:?}: pipeline {id:?} trades for {}",
            pipeline
                .accounts
                .iter()
                .map(|a| a.get_ref().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => pipeline
            .accounts
            .first()
            .map(|a| a.get_ref().clone())
            .unwrap_or_default(),
    };
    let Some(account) = config.account(&account_id) else {
        bail!("{}: no account {account_id:?}", path.display())
    };
    let plugins = match &args.strategy.plugin_dir {
        Some(dir) => dir.clone(),
        None => config.resolve(&config.host.plugin_dir),
    };
    // The account's rules, for the report's header and the capital; the runs themselves
    // go through the order manager with all of the account's rules (risk, cooldown, window).
    let config = BacktestConfig {
        mode: account.mode,
        sizing: Some(account.sizing.clone()),
        capital: account.capital,
        slippage_bps: account.slippage_bps,
        exits: account.exits.clone(),
        ..rules
    };
    Ok(Target {
        plugin: plugins.join(pipeline.plugin.get_ref()),
        fixed: pipeline.param_pairs(),
        config,
        pipeline: Some(PipelineTarget {
            config: path.clone(),
            id: id.clone(),
            data: args.strategy.data_file()?,
            account: account_id,
        }),
    })
}

/// Combination `index` of a pipeline sweep: `tradehost backtest --config` in a process of
/// its own, its outputs kept in `<out>/runs/<n>`, its account's numbers read back.
fn pipeline_run(args: &SweepArgs, p: &PipelineTarget, sweep: &Sweep<'_>, index: usize) -> Run {
    let out = args.out.join("runs").join(format!(
        "{:0width$}",
        index + 1,
        width = sweep.grid.len().to_string().len()
    ));
    pipeline_run_on(args, p, sweep, index, (&p.data, None), out)
}

/// [`pipeline_run`] on `data`, trading from `trade_from` (the days before are warm-up), its
/// outputs in `out`.
fn pipeline_run_on(
    args: &SweepArgs,
    p: &PipelineTarget,
    sweep: &Sweep<'_>,
    index: usize,
    (data, trade_from): (&Path, Option<i64>),
    out: PathBuf,
) -> Run {
    let values = sweep.grid.values(index);
    let outcome = (|| -> Result<Outcome, String> {
        let exe = std::env::current_exe().map_err(|e| format!("finding this program: {e}"))?;
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("backtest")
            .arg("--config")
            .arg(&p.config)
            .arg("--pipeline")
            .arg(&p.id)
            .arg("--data")
            .arg(data)
            .arg("--out")
            .arg(&out);
        if let Some(from) = trade_from {
            cmd.arg("--trade-from")
                .arg(crate::domain::time::format_iso_ist(from));
        }
        if let Some(dir) = &args.strategy.plugin_dir {
            cmd.arg("--plugin-dir").arg(dir);
        }
        if let Some(u) = &args.rules.underlying {
            cmd.arg("--underlying").arg(u);
        }
        for (k, v) in sweep.params(index) {
            cmd.arg("--param").arg(format!("{k}={v}"));
        }
        let done = cmd
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("starting the backtest: {e}"))?;
        if !done.status.success() {
            let stderr = String::from_utf8_lossy(&done.stderr);
            return Err(stderr
                .lines()
                .rev()
                .find(|l| l.starts_with("error:"))
                .unwrap_or(stderr.trim())
                .trim_start_matches("error: ")
                .to_owned());
        }
        let text = std::fs::read_to_string(out.join("summary.json"))
            .map_err(|e| format!("reading {}: {e}", out.join("summary.json").display()))?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        let account = &json["accounts"][&p.account];
        let summary: crate::backtest::Summary = serde_json::from_value(account["summary"].clone())
            .map_err(|e| format!("{}: {e}", out.display()))?;
        let equity = serde_json::from_value(account["equity"].clone())
            .map_err(|e| format!("{}: {e}", out.display()))?;
        Ok(Outcome { summary, equity })
    })();
    Run {
        index,
        values,
        outcome,
    }
}

/// Parameters in order of precedence: the pipeline's, the grid file's `[params]`, `--param`;
/// a parameter that is swept is not also fixed.
fn parameters(
    args: &SweepArgs,
    base: Vec<(String, String)>,
) -> anyhow::Result<(Grid, Vec<(String, String)>)> {
    let mut axes = Vec::new();
    let mut fixed = base;
    let set = |fixed: &mut Vec<(String, String)>, (k, v): (String, String)| match fixed
        .iter_mut()
        .find(|(name, _)| *name == k)
    {
        Some(slot) => slot.1 = v,
        None => fixed.push((k, v)),
    };
    if let Some(file) = &args.grid_file {
        let from_file = Grid::read_file(file).map_err(anyhow::Error::msg)?;
        axes.extend(from_file.axes);
        for kv in from_file.fixed {
            set(&mut fixed, kv);
        }
    }
    for spec in &args.grid {
        axes.push(Axis::parse(spec).map_err(anyhow::Error::msg)?);
    }
    let given = parse_params(&args.strategy.params)?;
    if let Some((k, _)) = given
        .iter()
        .find(|(k, _)| axes.iter().any(|a| &a.name == k))
    {
        bail!("--param {k}: {k} is also swept by the grid; give it one way");
    }
    for kv in given {
        set(&mut fixed, kv);
    }
    if axes.is_empty() {
        bail!("nothing to sweep: give --grid name=a..b[:step] (or name=v1,v2,...), or --grid-file");
    }
    fixed.retain(|(k, _)| !axes.iter().any(|a| &a.name == k));
    Ok((Grid::new(axes).map_err(anyhow::Error::msg)?, fixed))
}

/// Run it.
///
/// # Errors
/// Bad arguments (named), a plugin or data file that cannot be used, or every combination failing.
pub fn run(args: &SweepArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let target = target(args)?;
    let (grid, fixed) = parameters(args, target.fixed.clone())?;
    let walk = args
        .walk_forward
        .as_deref()
        .map(WalkForward::parse)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let heatmap = match &args.heatmap {
        Some(text) => {
            let Some((x, y)) = text.split_once(',') else {
                bail!("--heatmap {text:?}: expected two swept parameters, x,y")
            };
            let (x, y) = (x.trim().to_owned(), y.trim().to_owned());
            for name in [&x, &y] {
                if !grid.names().any(|n| n == name) {
                    bail!(
                        "--heatmap {text:?}: {name:?} is not swept (the grid has {})",
                        grid.names().collect::<Vec<_>>().join(", ")
                    );
                }
            }
            Some((x, y))
        }
        None => {
            (grid.axes.len() >= 2).then(|| (grid.axes[0].name.clone(), grid.axes[1].name.clone()))
        }
    };
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get))
        .max(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("sweep-{i}"))
        .build()?;

    let sandbox = args.rules.sandbox()?;
    let plugin = sandbox.load_file(&target.plugin)?;
    let data = args.strategy.data_file()?;
    let loaded = args.rules.load(&data)?;
    let load_seconds = started.elapsed().as_secs_f64();
    let sweep = Sweep {
        sandbox: &sandbox,
        plugin: &plugin,
        fixed: &fixed,
        grid: &grid,
        config: &target.config,
    };
    let strategy = sandbox
        .instantiate(&plugin, &sweep.params(0))
        .map(|s| format!("{} {}", s.name(), s.version()))
        .unwrap_or_else(|_| plugin.file_name().to_owned());
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;

    let runs_total = match walk {
        // Every combination on each window's train days, then the winner on its test days.
        Some(wf) => wf
            .windows(trading_days(&loaded.data))
            .len()
            .saturating_mul(grid.len().saturating_add(1)),
        None => grid.len(),
    };
    let bar = super::progress_bar(runs_total as u64, "runs");
    let done = || bar.inc(1);
    let fixed_text: Vec<String> = fixed.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let files = (
        target.plugin.display().to_string(),
        data.display().to_string(),
    );
    let mut info_json = serde_json::json!({
        "plugin": files.0,
        "plugin_sha256": plugin.sha256(),
        "strategy": strategy,
        "data": files.1,
        "instrument": describe(&loaded.data),
        "events": loaded.data.len(),
        "fixed": fixed.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect::<serde_json::Map<_, _>>(),
        "grid": grid.axes.iter().map(|a| (a.name.clone(), serde_json::json!(a.values))).collect::<serde_json::Map<_, _>>(),
        "combinations": grid.len(),
        "ranked_by": args.rank,
        "threads": threads,
        "load_seconds": load_seconds,
    });

    match walk {
        None => {
            let runs = match &target.pipeline {
                None => sweep.run(&pool, &loaded.data, &done),
                Some(p) => pool.install(|| {
                    use rayon::prelude::*;
                    (0..grid.len())
                        .into_par_iter()
                        .map(|i| {
                            let run = pipeline_run(args, p, &sweep, i);
                            done();
                            run
                        })
                        .collect()
                }),
            };
            bar.finish_and_clear();
            let seconds = started.elapsed().as_secs_f64();
            let info = backtest::SweepInfo {
                strategy,
                files,
                fixed: fixed_text,
                heatmap,
                timing: (seconds, threads),
            };
            let order = backtest::write_sweep(&args.out, &grid, &runs, args.rank, &info)?;
            info_json["total_seconds"] = serde_json::json!(seconds);
            write_json(args, &info_json)?;
            let failed = runs.iter().filter(|r| r.outcome.is_err()).count();
            println!(
                "{}: {} combinations on {} ({} events) in {seconds:.2}s on {threads} threads{}",
                info.strategy,
                runs.len(),
                info.files.1,
                loaded.data.len(),
                if failed > 0 {
                    format!(", {failed} failed")
                } else {
                    String::new()
                }
            );
            for (rank, &i) in order.iter().take(5).enumerate() {
                let r = &runs[i];
                let params: Vec<String> = grid
                    .names()
                    .zip(&r.values)
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                match &r.outcome {
                    Ok(o) => println!(
                        "  #{} {}: {} trades, P&L {}, win rate {:.1}%, max drawdown {}, Sharpe {:.2}",
                        rank + 1,
                        params.join(" "),
                        o.summary.trades,
                        o.summary.net_pnl,
                        o.summary.win_rate * 100.0,
                        o.summary.max_drawdown,
                        o.summary.sharpe
                    ),
                    Err(e) => println!("  #{} {}: failed: {e}", rank + 1, params.join(" ")),
                }
            }
            println!("-> {}", args.out.display());
            if failed == runs.len() {
                let first = runs
                    .first()
                    .and_then(|r| r.outcome.as_ref().err())
                    .cloned()
                    .unwrap_or_default();
                bail!("every combination failed; the first: {first}");
            }
        }
        Some(wf) => {
            let windows = match &target.pipeline {
                None => sweep
                    .walk_forward(&pool, &loaded.data, wf, args.rank, &done)
                    .map_err(anyhow::Error::msg)?,
                // Through the order manager: each window's days written out once (Parquet), each
                // combination a `backtest --config` process on them.
                Some(p) => {
                    let dir = args.out.join("runs");
                    let write = |data: &MarketData, path: &Path| -> Result<(), String> {
                        std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))
                            .map_err(|e| format!("creating {}: {e}", path.display()))?;
                        match data {
                            MarketData::Candles(s) => {
                                crate::market::parquet::write_candles(path, s)
                            }
                            MarketData::Chains(c) => crate::market::parquet::write_chains(path, c),
                        }
                        .map_err(|e| e.to_string())
                    };
                    let failed = |index: usize, e: String| Run {
                        index,
                        values: sweep.grid.values(index),
                        outcome: Err(e),
                    };
                    let width = sweep.grid.len().to_string().len();
                    backtest::sweep::walk_forward_with(
                        &loaded.data,
                        wf,
                        args.rank,
                        &target.config,
                        |train, n| {
                            let file = dir.join(format!("w{}", n + 1)).join("train.parquet");
                            if let Err(e) = write(train, &file) {
                                return (0..grid.len()).map(|i| failed(i, e.clone())).collect();
                            }
                            pool.install(|| {
                                use rayon::prelude::*;
                                (0..grid.len())
                                    .into_par_iter()
                                    .map(|i| {
                                        let run = pipeline_run_on(
                                            args,
                                            p,
                                            &sweep,
                                            i,
                                            (&file, None),
                                            dir.join(format!("w{}", n + 1))
                                                .join(format!("{:0width$}", i + 1)),
                                        );
                                        done();
                                        run
                                    })
                                    .collect()
                            })
                        },
                        |index, window, test_from, n| {
                            let file = dir.join(format!("w{}", n + 1)).join("window.parquet");
                            let run = match write(window, &file) {
                                Ok(()) => pipeline_run_on(
                                    args,
                                    p,
                                    &sweep,
                                    index,
                                    (&file, Some(test_from)),
                                    dir.join(format!("w{}", n + 1)).join("out-of-sample"),
                                ),
                                Err(e) => failed(index, e),
                            };
                            done();
                            run
                        },
                    )
                    .map_err(anyhow::Error::msg)?
                }
            };
            bar.finish_and_clear();
            let seconds = started.elapsed().as_secs_f64();
            let info = backtest::SweepInfo {
                strategy,
                files,
                fixed: fixed_text,
                heatmap,
                timing: (seconds, threads),
            };
            backtest::write_walk_forward(
                &args.out,
                &grid,
                &windows,
                args.rank,
                target.config.capital,
                &info,
            )?;
            info_json["walk_forward"] = serde_json::json!({ "train_days": wf.train, "test_days": wf.test, "step_days": wf.step, "windows": windows.len() });
            info_json["total_seconds"] = serde_json::json!(seconds);
            write_json(args, &info_json)?;
            let oos = stitched(&windows, target.config.capital);
            let pnl = oos.last().map_or(rust_decimal::Decimal::ZERO, |p| {
                p.equity - target.config.capital
            });
            println!(
                "{}: walk-forward over {} windows of {} combinations on {} in {seconds:.2}s on {threads} threads",
                info.strategy,
                windows.len(),
                grid.len(),
                info.files.1
            );
            for (n, w) in windows.iter().enumerate() {
                let chosen = w
                    .best
                    .map(|i| {
                        grid.names()
                            .zip(&w.in_sample[i].values)
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_else(|| "none".into());
                let is = w
                    .best
                    .and_then(|i| w.in_sample[i].outcome.as_ref().ok())
                    .map(|o| o.summary.return_pct);
                let oos = w
                    .out_of_sample
                    .as_ref()
                    .and_then(|o| o.as_ref().ok())
                    .map(|o| o.summary.return_pct);
                let pct =
                    |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:+.2}%"));
                println!(
                    "  window {}: {} -> in-sample {} over {} days, out-of-sample {} over {} days",
                    n + 1,
                    chosen,
                    pct(is),
                    w.days.0,
                    pct(oos),
                    w.days.1
                );
            }
            println!("  out-of-sample P&L, stitched: {pnl}");
            println!("-> {}", args.out.display());
        }
    }
    Ok(())
}

/// This process's peak resident memory in MiB (Linux's `VmHWM`), for `sweep.json`.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

fn write_json(args: &SweepArgs, value: &serde_json::Value) -> anyhow::Result<()> {
    let mut value = value.clone();
    value["peak_rss_mib"] = serde_json::json!(peak_rss_mib());
    let value = &value;
    let path = args.out.join("sweep.json");
    std::fs::write(&path, serde_json::to_string_pretty(value)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}
