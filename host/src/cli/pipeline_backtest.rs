//! `tradehost backtest --config pipelines.toml --pipeline <id> --data <file>`:
//! a pipeline backtested as configured, through the very code `run` trades
//! with. The configuration is narrowed to that pipeline (its accounts keep
//! their sizing, risk rules, exits, product and slippage), its source becomes
//! a replay of the data file as fast as the machine goes, and `run` drives it
//! on paper over the in-process bus with a fresh journal in the output folder.
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
    let (Some(config_path), Some(pipeline_id)) = (&args.strategy.config, &args.strategy.pipeline) else {
        bail!("give --plugin, or --config with --pipeline");
    };
    let config = Config::load(config_path)?;
    let Some(pipeline) = config.pipeline(pipeline_id) else {
        let ids: Vec<&str> = config.pipelines.iter().map(|p| p.id.get_ref().as_str()).collect();
        bail!("{}: no pipeline {pipeline_id:?} (it has {})", config_path.display(), ids.join(", "));
    };
    let absolute = |p: &Path| -> anyhow::Result<PathBuf> { std::path::absolute(p).with_context(|| format!("resolving {}", p.display())) };
    let data = absolute(&args.strategy.data)?;
    if !data.is_file() {
        bail!("--data {}: no such file", args.strategy.data.display());
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let out = absolute(&args.out)?;
    let journal = out.join("journal.sqlite");
    for suffix in ["", "-wal", "-shm"] {
        let stale = PathBuf::from(format!("{}{suffix}", journal.display()));
        if stale.exists() {
            std::fs::remove_file(&stale).with_context(|| format!("removing the last backtest's {}", stale.display()))?;
        }
    }

    // The configuration as written, narrowed: this pipeline only, replaying the data file.
    let text = std::fs::read_to_string(config_path).with_context(|| format!("reading {}", config_path.display()))?;
    let mut doc: toml::Table = text.parse().with_context(|| format!("parsing {}", config_path.display()))?;
    let host = doc.entry("host").or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let Some(host) = host.as_table_mut() {
        let plugins = match &args.strategy.plugin_dir {
            Some(dir) => absolute(dir)?,
            None => config.resolve(&config.host.plugin_dir),
        };
        host.insert("plugin_dir".into(), toml::Value::String(plugins.display().to_string()));
        host.insert("journal".into(), toml::Value::String(journal.display().to_string()));
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
    let mut source = toml::Table::new();
    source.insert("kind".into(), "replay".into());
    source.insert("files".into(), toml::Value::Array(vec![toml::Value::String(data.display().to_string())]));
    source.insert("speed".into(), toml::Value::Integer(0));
    if let Some(u) = &args.rules.underlying {
        source.insert("underlying".into(), toml::Value::String(absolute(u)?.display().to_string()));
    }
    let mut kept = None;
    if let Some(pipelines) = doc.get("pipelines").and_then(toml::Value::as_array) {
        kept = pipelines.iter().find(|p| p.get("id").and_then(toml::Value::as_str) == Some(pipeline_id.as_str())).cloned();
    }
    let Some(mut kept) = kept else { bail!("{}: no pipeline {pipeline_id:?}", config_path.display()) };
    if let Some(t) = kept.as_table_mut() {
        t.insert("source".into(), toml::Value::Table(source));
        // `--param` overrides the pipeline's params (a sweep varies them this way).
        let overrides = super::parse_params(&args.strategy.params)?;
        if !overrides.is_empty() {
            let params = t.entry("params").or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let Some(params) = params.as_table_mut() else { bail!("{}: pipeline {pipeline_id:?}: params is not a table", config_path.display()) };
            for (k, v) in overrides {
                params.insert(k, toml::Value::String(v));
            }
        }
    }
    doc.insert("pipelines".into(), toml::Value::Array(vec![kept]));
    let narrowed = out.join("pipelines.toml");
    std::fs::write(&narrowed, toml::to_string(&doc)?).with_context(|| format!("writing {}", narrowed.display()))?;

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
    write("fills.csv", report::fills_csv(fills.iter().map(report::FillLine::from).collect()))?;
    let signals = report::read_signals(&journal)?;
    write("signals.csv", report::signals_csv(&signals))?;
    let first_ts = signals.first().map(|s| s.ts).into_iter().chain(fills.first().map(|f| f.ts)).min();
    let last_ts = signals.last().map(|s| s.ts).into_iter().chain(fills.last().map(|f| f.ts)).max();
    // The plugin's version, as its signal ids carry it (`<pipeline>/<plugin>@<version>/<ts>/<n>`).
    let version = signals.first().and_then(|s| s.signal_id.split('/').nth(1)?.split_once('@').map(|(_, v)| v.to_owned())).unwrap_or_default();
    let mut pages = Vec::new();
    let mut summaries = serde_json::Map::new();
    for account in pipeline.accounts.iter().filter_map(|a| config.account(a.get_ref())) {
        let id = account.id.get_ref();
        let trades: Vec<crate::backtest::Trade> = result.trips.iter().filter(|t| &t.account == id).map(trade_of).collect();
        let rules = crate::backtest::BacktestConfig {
            mode: account.mode,
            qty: match account.sizing {
                crate::config::Sizing::Fixed { qty } => qty,
                crate::config::Sizing::Lots { lots, lot_size } => lots.saturating_mul(lot_size),
                _ => 0,
            },
            capital: account.capital,
            square_off_minute: (account.product == crate::domain::Product::Mis).then(|| crate::domain::time::parse_hhmm(&account.square_off)).flatten(),
            slippage_bps: account.slippage_bps,
            exits: account.exits.clone(),
            ..crate::backtest::BacktestConfig::default()
        };
        let equity = crate::backtest::daily_equity(account.capital, &trades);
        let refused: usize = result.refusals.get(id).map(|r| r.values().sum()).unwrap_or_default();
        let summary = crate::backtest::Summary::of((pipeline.plugin.get_ref(), &version), &rules, &trades, &equity, (signals.len(), refused), (signals.len(), first_ts, last_ts));
        let account_fills = fills.iter().filter(|f| &f.account == id).map(|f| crate::backtest::Fill {
            ts_ms: f.ts,
            instrument: f.instrument.clone(),
            side: if f.sign > 0 { crate::domain::OrderSide::Buy } else { crate::domain::OrderSide::Sell },
            qty: f.qty,
            price: f.price,
            reason: report::FillLine::from(f).reason,
        });
        summaries.insert(id.clone(), serde_json::json!({ "summary": summary, "equity": equity }));
        let page = crate::backtest::BacktestResult { signals: Vec::new(), rejected: Vec::new(), trades, fills: account_fills.collect(), equity, summary };
        let name = format!("report-{}.html", id.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_', "_"));
        let path = out.join(&name);
        crate::backtest::write_report_html(&path, &page).with_context(|| format!("writing {}", path.display()))?;
        pages.push(name);
    }
    write("trades.csv", result.trips_csv())?;
    write("report.txt", result.render())?;
    let mut accounts = serde_json::Map::new();
    for account in pipeline.accounts.iter().map(|a| a.get_ref()) {
        let days = result.days.get(account);
        let realized: rust_decimal::Decimal = days.map(|d| d.values().map(|v| v.realized).sum()).unwrap_or_default();
        let trips: Vec<&report::RoundTrip> = result.trips.iter().filter(|t| &t.account == account).collect();
        let wins = trips.iter().filter(|t| t.pnl > rust_decimal::Decimal::ZERO).count();
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
        "config": config_path.display().to_string(),
        "data": data.display().to_string(),
        "plugin": pipeline.plugin.get_ref(),
        "accounts": accounts,
        "signals": signals.len(),
        "reports": pages,
        "total_seconds": started.elapsed().as_secs_f64(),
    });
    write("summary.json", serde_json::to_string_pretty(&summary)? + "\n")?;
    for (account, v) in &accounts {
        println!(
            "{pipeline_id} on {}: {account}: {} fills, {} round trips, realised {}, unrealised {} at the last fill",
            args.strategy.data.display(),
            v["fills"],
            v["round_trips"],
            v["realized"].as_str().unwrap_or_default(),
            v["unrealized_at_last_fill"].as_str().unwrap_or_default()
        );
    }
    println!("-> {} ({:.2}s)", out.display(), started.elapsed().as_secs_f64());
    Ok(())
}

/// A journal round trip as a backtest trade (`exit_reason`: `signal`, or what closed it).
fn trade_of(t: &report::RoundTrip) -> crate::backtest::Trade {
    crate::backtest::Trade {
        instrument: t.instrument.clone(),
        entry_ts_ms: t.entry_ts,
        exit_ts_ms: t.exit_ts,
        side: if t.side == "short" { crate::backtest::TradeSide::Short } else { crate::backtest::TradeSide::Long },
        qty: t.qty,
        entry_price: t.entry_price,
        exit_price: t.exit_price,
        pnl: t.pnl,
        exit_reason: if crate::orders::CLOSE_REASONS.contains(&t.exit_by.as_str()) { t.exit_by.clone() } else { "signal".to_owned() },
    }
}
