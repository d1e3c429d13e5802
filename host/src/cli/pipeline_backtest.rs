//! `tradehost backtest --config pipelines.toml --pipeline <id>... [--data [<id>=]<file>]...`:
//! pipelines backtested as configured, through the very code `run` trades
//! with. The configuration is narrowed to those pipelines (their accounts keep
//! their sizing, risk rules, exits, product and slippage), each source becomes
//! a replay of its data file (or of its own replay or synthetic source) as fast
//! as the machine goes, and `run` drives them on paper over the in-process bus
//! with a fresh journal in the output folder. Several pipelines make a
//! portfolio: they share their accounts' capital, position limits and
//! daily-loss breakers, merged in event time on the order side, so the result
//! is the same on every run.
//! The outputs are read back from that journal: `fills.csv` (the columns of
//! `tradehost report --fills-csv`), `signals.csv` (what the strategy said, as
//! a single-plugin backtest writes it), `trades.csv` (FIFO round trips per
//! account), `summary.json` (per account), `report.txt`, and per account
//! `report-<account>.html` (equity and drawdown by day, KPIs, the trades).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use super::BacktestArgs;
use super::run::{Role, RunArgs};
use crate::config::Config;
use crate::orders::report;

/// Run it.
///
/// # Errors
/// A configuration or data file that cannot be used (named), an unknown
/// pipeline, or a run that fails.
pub fn run(args: &BacktestArgs) -> anyhow::Result<()> {
    let Some(config_path) = &args.strategy.config else {
        bail!("give --plugin, or --config with --pipeline")
    };
    let config = Config::load(config_path)?;
    let ids = &args.strategy.pipeline;
    if ids.is_empty() {
        bail!("give --pipeline <id> (repeat it, or a,b, for several sharing their accounts)");
    }
    let mut pipelines = Vec::new();
    for id in ids {
        let Some(pipeline) = config.pipeline(id) else {
            let all: Vec<&str> = config
                .pipelines
                .iter()
                .map(|p| p.id.get_ref().as_str())
                .collect();
            bail!(
                "{}: no pipeline {id:?} (it has {})",
                config_path.display(),
                all.join(", ")
            );
        };
        if pipelines
            .iter()
            .any(|p: &&crate::config::Pipeline| p.id.get_ref() == id)
        {
            bail!("--pipeline {id}: given twice");
        }
        pipelines.push(pipeline);
    }
    let absolute = |p: &Path| -> anyhow::Result<PathBuf> {
        std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))
    };
    // `--data FILE` serves every pipeline; `--data PIPELINE=FILE` one of them.
    let mut data_for: Vec<(String, PathBuf)> = Vec::new();
    let mut shared = None;
    for given in &args.strategy.data {
        let (pipeline, file) = match given.split_once('=') {
            Some((id, file)) if ids.iter().any(|p| p == id) => (Some(id), file),
            Some((id, _)) if !Path::new(given).exists() => bail!(
                "--data {given}: {id:?} is not one of the pipelines backtested ({})",
                ids.join(", ")
            ),
            _ => (None, given.as_str()),
        };
        let path = absolute(Path::new(file))?;
        if !path.is_file() {
            bail!("--data {given}: no such file");
        }
        match pipeline {
            Some(id) if data_for.iter().any(|(p, _)| p == id) => {
                bail!("--data {given}: pipeline {id} has data already")
            }
            Some(id) => data_for.push((id.to_owned(), path)),
            None if shared.is_some() => bail!(
                "--data {given}: one file without a pipeline's name serves them all; name the pipeline of each (PIPELINE=FILE)"
            ),
            None => shared = Some(path),
        }
    }
    let data_of = |id: &str| {
        data_for
            .iter()
            .find(|(p, _)| p == id)
            .map(|(_, f)| f.clone())
            .or_else(|| shared.clone())
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let out = absolute(&args.out)?;
    let journal = out.join("journal.sqlite");
    for suffix in ["", "-wal", "-shm"] {
        let stale = PathBuf::from(format!("{}{suffix}", journal.display()));
        if stale.exists() {
            std::fs::remove_file(&stale)
                .with_context(|| format!("removing the last backtest's {}", stale.display()))?;
        }
    }

    // The configuration as written, narrowed: these pipelines only, each replaying its data.
    let text = std::fs::read_to_string(config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let mut doc: toml::Table = text
        .parse()
        .with_context(|| format!("parsing {}", config_path.display()))?;
    let host = doc
        .entry("host")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let Some(host) = host.as_table_mut() {
        let plugins = match &args.strategy.plugin_dir {
            Some(dir) => absolute(dir)?,
            None => config.resolve(&config.host.plugin_dir),
        };
        host.insert(
            "plugin_dir".into(),
            toml::Value::String(plugins.display().to_string()),
        );
        host.insert(
            "journal".into(),
            toml::Value::String(journal.display().to_string()),
        );
        host.remove("record_dir");
    }
    if let Some(bus) = doc.get_mut("bus").and_then(toml::Value::as_table_mut) {
        bus.remove("url");
    }
    // No alerts leave a backtest.
    doc.remove("telegram");
    if let Some(accounts) = doc.get_mut("accounts").and_then(toml::Value::as_array_mut) {
        for a in accounts.iter_mut().filter_map(toml::Value::as_table_mut) {
            a.remove("notify");
        }
    }
    let overrides = super::parse_params(&args.strategy.params)?;
    if let Some(t) = &args.trade_from
        && crate::config::parse_moment(t).is_none()
    {
        bail!(
            "--trade-from {t:?}: expected a date like 2024-03-01 or a time like 2024-03-01T09:15:00+05:30"
        );
    }
    let mut kept = Vec::new();
    let mut sources = serde_json::Map::new();
    for pipeline in &pipelines {
        let id = pipeline.id.get_ref();
        let Some(mut table) = doc
            .get("pipelines")
            .and_then(toml::Value::as_array)
            .and_then(|all| {
                all.iter()
                    .find(|p| p.get("id").and_then(toml::Value::as_str) == Some(id.as_str()))
            })
            .cloned()
        else {
            bail!("{}: no pipeline {id:?}", config_path.display())
        };
        let Some(t) = table.as_table_mut() else {
            bail!("{}: pipeline {id:?} is not a table", config_path.display())
        };
        let source = match (data_of(id), &pipeline.source) {
            (Some(file), _) => {
                let mut source = toml::Table::new();
                source.insert("kind".into(), "replay".into());
                source.insert(
                    "files".into(),
                    toml::Value::Array(vec![toml::Value::String(file.display().to_string())]),
                );
                if let Some(u) = &args.rules.underlying {
                    source.insert(
                        "underlying".into(),
                        toml::Value::String(absolute(u)?.display().to_string()),
                    );
                }
                sources.insert(id.clone(), file.display().to_string().into());
                source
            }
            (
                None,
                crate::config::Source::Replay {
                    files, underlying, ..
                },
            ) => {
                // Its own files, found from where the configuration is.
                let mut source = toml::Table::new();
                source.insert("kind".into(), "replay".into());
                let files: Vec<String> = files
                    .iter()
                    .map(|f| config.resolve(f).display().to_string())
                    .collect();
                sources.insert(id.clone(), files.join(", ").into());
                source.insert(
                    "files".into(),
                    toml::Value::Array(files.into_iter().map(toml::Value::String).collect()),
                );
                if let Some(u) = underlying {
                    source.insert(
                        "underlying".into(),
                        toml::Value::String(config.resolve(u).display().to_string()),
                    );
                }
                source
            }
            (None, crate::config::Source::Synthetic { .. }) => {
                let Some(source) = t.get("source").and_then(toml::Value::as_table).cloned() else {
                    bail!(
                        "{}: pipeline {id:?}: source is not a table",
                        config_path.display()
                    )
                };
                sources.insert(id.clone(), "synthetic".into());
                source
            }
            (None, _) => bail!(
                "pipeline {id:?} reads a live feed; give it data to replay: --data {id}=<file>"
            ),
        };
        let mut source = source;
        source.insert("speed".into(), toml::Value::Integer(0));
        t.insert("source".into(), toml::Value::Table(source));
        if let Some(from) = &args.trade_from {
            t.insert("trade_from".into(), toml::Value::String(from.clone()));
        }
        // `--param` overrides the pipelines' params (a sweep varies them this way).
        if !overrides.is_empty() {
            let params = t
                .entry("params")
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let Some(params) = params.as_table_mut() else {
                bail!(
                    "{}: pipeline {id:?}: params is not a table",
                    config_path.display()
                )
            };
            for (k, v) in &overrides {
                params.insert(k.clone(), toml::Value::String(v.clone()));
            }
        }
        kept.push(table);
    }
    doc.insert("pipelines".into(), toml::Value::Array(kept));
    let narrowed = out.join("pipelines.toml");
    std::fs::write(&narrowed, toml::to_string(&doc)?)
        .with_context(|| format!("writing {}", narrowed.display()))?;
    let pipeline_id = ids.join(",");

    let started = std::time::Instant::now();
    let run_args = RunArgs {
        config: narrowed,
        role: Role::All,
        redis: None,
        journal: None,
        consumer: "backtest".into(),
        quiet: true,
        until_idle: Some(0.3),
        wait_for_plugins: false,
        backtest: true,
    };
    super::tokio_runtime()?.block_on(super::run::run(run_args))?;

    let fills = report::read_fills(&journal)?;
    let mut result = report::build(&fills, rust_decimal::Decimal::ZERO);
    result.refusals = report::read_refusals(&journal)?;
    let write = |name: &str, text: String| -> anyhow::Result<()> {
        let path = out.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    write(
        "fills.csv",
        report::fills_csv(fills.iter().map(report::FillLine::from).collect()),
    )?;
    let signals = report::read_signals(&journal)?;
    write("signals.csv", report::signals_csv(&signals))?;
    let first_ts = signals
        .first()
        .map(|s| s.ts)
        .into_iter()
        .chain(fills.first().map(|f| f.ts))
        .min();
    let last_ts = signals
        .last()
        .map(|s| s.ts)
        .into_iter()
        .chain(fills.last().map(|f| f.ts))
        .max();
    // The plugin's version, as its signal ids carry it (`<pipeline>/<plugin>@<version>/<ts>/<n>`).
    let version = signals
        .first()
        .map(|s| version_of(&s.signal_id))
        .unwrap_or_default();
    let mut pages = Vec::new();
    let mut summaries = serde_json::Map::new();
    // The accounts the pipelines trade for, each once, in the order they are named.
    let mut account_ids: Vec<&String> = Vec::new();
    for a in pipelines
        .iter()
        .flat_map(|p| p.accounts.iter().map(|a| a.get_ref()))
    {
        if !account_ids.contains(&a) {
            account_ids.push(a);
        }
    }
    for account in account_ids.iter().filter_map(|a| config.account(a)) {
        let id = account.id.get_ref();
        // What trades for it: its pipelines' plugins, and their signals.
        let feeding: Vec<&&crate::config::Pipeline> = pipelines
            .iter()
            .filter(|p| p.accounts.iter().any(|a| a.get_ref() == id))
            .collect();
        let plugin = feeding
            .iter()
            .map(|p| p.plugin.get_ref().as_str())
            .collect::<Vec<_>>()
            .join("+");
        let its_signals: Vec<&report::SignalRow> = signals
            .iter()
            .filter(|s| feeding.iter().any(|p| p.id.get_ref() == &s.pipeline))
            .collect();
        let version = its_signals
            .first()
            .map_or(version.clone(), |s| version_of(&s.signal_id));
        let (first_ts, last_ts) = (
            its_signals.first().map(|s| s.ts).or(first_ts),
            its_signals.last().map(|s| s.ts).or(last_ts),
        );
        let trades: Vec<crate::backtest::Trade> = result
            .trips
            .iter()
            .filter(|t| &t.account == id)
            .map(trade_of)
            .collect();
        let rules = crate::backtest::BacktestConfig {
            mode: account.mode,
            qty: match account.sizing {
                crate::config::Sizing::Fixed { qty } => qty,
                crate::config::Sizing::Lots { lots, lot_size } => {
                    lots.saturating_mul(lot_size.unwrap_or(1))
                }
                _ => 0,
            },
            capital: account.capital,
            square_off_minute: (account.product == crate::domain::Product::Mis)
                .then(|| account.earliest_square_off())
                .flatten(),
            slippage_bps: account.slippage_bps,
            exits: account.exits.clone(),
            ..crate::backtest::BacktestConfig::default()
        };
        let equity = crate::backtest::daily_equity(account.capital, &trades);
        let refused: usize = result
            .refusals
            .get(id)
            .map(|r| r.values().sum())
            .unwrap_or_default();
        let summary = crate::backtest::Summary::of(
            (&plugin, &version),
            &rules,
            &trades,
            &equity,
            (its_signals.len(), refused),
            (its_signals.len(), first_ts, last_ts),
        );
        let account_fills =
            fills
                .iter()
                .filter(|f| &f.account == id)
                .map(|f| crate::backtest::Fill {
                    ts_ms: f.ts,
                    instrument: f.instrument.clone(),
                    side: if f.sign > 0 {
                        crate::domain::OrderSide::Buy
                    } else {
                        crate::domain::OrderSide::Sell
                    },
                    qty: f.qty,
                    price: f.price,
                    reason: report::FillLine::from(f).reason,
                });
        summaries.insert(
            id.clone(),
            serde_json::json!({ "summary": summary, "equity": equity }),
        );
        let page = crate::backtest::BacktestResult {
            signals: Vec::new(),
            rejected: Vec::new(),
            trades,
            fills: account_fills.collect(),
            equity,
            summary,
        };
        let name = format!(
            "report-{}.html",
            id.replace(
                |c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_',
                "_"
            )
        );
        let path = out.join(&name);
        crate::backtest::write_report_html(&path, &page)
            .with_context(|| format!("writing {}", path.display()))?;
        pages.push(name);
    }
    write("trades.csv", result.trips_csv())?;
    write("report.txt", result.render())?;
    let mut accounts = serde_json::Map::new();
    for account in account_ids {
        let days = result.days.get(account);
        let realized: rust_decimal::Decimal = days
            .map(|d| d.values().map(|v| v.realized).sum())
            .unwrap_or_default();
        let trips: Vec<&report::RoundTrip> = result
            .trips
            .iter()
            .filter(|t| &t.account == account)
            .collect();
        let wins = trips
            .iter()
            .filter(|t| t.pnl > rust_decimal::Decimal::ZERO)
            .count();
        accounts.insert(
            account.clone(),
            serde_json::json!({
                "realized": realized.to_string(),
                "unrealized_at_last_fill": result.unrealized.get(account).copied().unwrap_or_default().to_string(),
                "fills": fills.iter().filter(|f| &f.account == account).count(),
                "round_trips": trips.len(),
                "win_rate": if trips.is_empty() { 0.0 } else { wins as f64 / trips.len() as f64 },
                "refused": result.refusals.get(account).cloned().unwrap_or_default(),
                // The headline numbers and daily equity a single-plugin backtest reports.
                "summary": summaries.get(account).map(|s| s["summary"].clone()).unwrap_or_default(),
                "equity": summaries.get(account).map(|s| s["equity"].clone()).unwrap_or_default(),
            }),
        );
    }
    let summary = serde_json::json!({
        "pipeline": pipeline_id,
        "pipelines": ids,
        "config": config_path.display().to_string(),
        "data": if sources.len() == 1 { sources.values().next().cloned().unwrap_or_default() } else { serde_json::Value::Object(sources.clone()) },
        "plugin": pipelines.iter().map(|p| p.plugin.get_ref().as_str()).collect::<Vec<_>>().join("+"),
        "accounts": accounts,
        "signals": signals.len(),
        "reports": pages,
        "total_seconds": started.elapsed().as_secs_f64(),
    });
    write(
        "summary.json",
        serde_json::to_string_pretty(&summary)? + "\n",
    )?;
    for (account, v) in &accounts {
        println!(
            "{pipeline_id} on {}: {account}: {} fills, {} round trips, realised {}, unrealised {} at the last fill",
            sources
                .values()
                .filter_map(serde_json::Value::as_str)
                .collect::<Vec<_>>()
                .join(" + "),
            v["fills"],
            v["round_trips"],
            v["realized"].as_str().unwrap_or_default(),
            v["unrealized_at_last_fill"].as_str().unwrap_or_default()
        );
    }
    println!(
        "-> {} ({:.2}s)",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The plugin's version, as a signal id carries it (`<pipeline>/<plugin>@<version>/<ts>/<n>`).
fn version_of(signal_id: &str) -> String {
    signal_id
        .split('/')
        .nth(1)
        .and_then(|p| p.split_once('@'))
        .map(|(_, v)| v.to_owned())
        .unwrap_or_default()
}

/// A journal round trip as a backtest trade (`exit_reason`: `signal`, or what closed it).
fn trade_of(t: &report::RoundTrip) -> crate::backtest::Trade {
    crate::backtest::Trade {
        instrument: t.instrument.clone(),
        entry_ts_ms: t.entry_ts,
        exit_ts_ms: t.exit_ts,
        side: if t.side == "short" {
            crate::backtest::TradeSide::Short
        } else {
            crate::backtest::TradeSide::Long
        },
        qty: t.qty,
        entry_price: t.entry_price,
        exit_price: t.exit_price,
        pnl: t.pnl,
        exit_reason: if crate::orders::CLOSE_REASONS.contains(&t.exit_by.as_str()) {
            t.exit_by.clone()
        } else {
            "signal".to_owned()
        },
    }
}
