//! Backtest outputs: `signals.csv`, `trades.csv`, `fills.csv`, `summary.json` and a
//! self-contained `report.html` (inline SVG, no scripts, no network).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

use super::{BacktestResult, EquityPoint};
use crate::domain::time::{format_iso_ist, format_ist_date};

/// Rows of the trade table in the HTML report; `trades.csv` has them all.
const REPORT_TRADE_ROWS: usize = 2000;

/// Write all four outputs into `dir` (created if missing). `run_info` is
/// stored under `"run"` in `summary.json` (plugin file, data file, timings).
///
/// # Errors
/// When a file cannot be written; the error names it.
pub fn write_outputs(
    dir: &Path,
    result: &BacktestResult,
    run_info: &serde_json::Value,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let signals = dir.join("signals.csv");
    write_signals_csv(&signals, result)
        .with_context(|| format!("writing {}", signals.display()))?;
    let trades = dir.join("trades.csv");
    write_trades_csv(&trades, result).with_context(|| format!("writing {}", trades.display()))?;
    let fills = dir.join("fills.csv");
    std::fs::write(&fills, crate::orders::report::fills_csv(fill_lines(result)))
        .with_context(|| format!("writing {}", fills.display()))?;
    let summary = dir.join("summary.json");
    let mut json = serde_json::to_value(&result.summary)?;
    if let Some(obj) = json.as_object_mut() {
        obj.insert("run".into(), run_info.clone());
        obj.insert(
            "rejected_signals".into(),
            serde_json::json!(result.rejected),
        );
    }
    std::fs::write(&summary, serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("writing {}", summary.display()))?;
    let report = dir.join("report.html");
    write_report_html(&report, result).with_context(|| format!("writing {}", report.display()))?;
    Ok(())
}

use crate::orders::report::csv_field;

fn write_signals_csv(path: &Path, result: &BacktestResult) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "ts,instrument,side,price,reason")?;
    for r in &result.signals {
        let s = &r.signal;
        let price = r.price.map(|p| p.to_string()).unwrap_or_default();
        writeln!(
            out,
            "{},{},{},{price},{}",
            format_iso_ist(s.ts_ms),
            csv_field(&s.instrument),
            s.side.as_str(),
            csv_field(&s.reason)
        )?;
    }
    out.flush()
}

/// The account a single-plugin backtest trades for, in `fills.csv`.
pub const BACKTEST_ACCOUNT: &str = "backtest";

/// Every fill, in the columns a run's journal reports (`tradehost report
/// --fills-csv`); the mark at the end of the data is not a fill (a run holds
/// that position still).
fn fill_lines(result: &BacktestResult) -> Vec<crate::orders::report::FillLine> {
    result
        .fills
        .iter()
        .map(|f| crate::orders::report::FillLine {
            ts: f.ts_ms,
            account: BACKTEST_ACCOUNT.to_owned(),
            instrument: f.instrument.clone(),
            side: f.side.as_str(),
            qty: f.qty,
            price: f.price,
            reason: f.reason.clone(),
        })
        .collect()
}

fn write_trades_csv(path: &Path, result: &BacktestResult) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(
        out,
        "entry_ts,exit_ts,side,qty,entry_price,exit_price,pnl,instrument,exit_reason"
    )?;
    for t in &result.trades {
        writeln!(
            out,
            "{},{},{},{},{},{},{},{},{}",
            format_iso_ist(t.entry_ts_ms),
            format_iso_ist(t.exit_ts_ms),
            t.side.as_str(),
            t.qty,
            t.entry_price,
            t.exit_price,
            t.pnl,
            csv_field(&t.instrument),
            csv_field(&t.exit_reason)
        )?;
    }
    out.flush()
}

pub(super) fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An SVG line (or filled area) chart of `values` over their index.
fn svg_chart(
    title: &str,
    points: &[EquityPoint],
    value: impl Fn(&EquityPoint) -> Decimal,
    colour: &str,
    fill: bool,
) -> String {
    const W: f64 = 900.0;
    const H: f64 = 220.0;
    const PAD: f64 = 70.0;
    let ys: Vec<f64> = points
        .iter()
        .map(|p| value(p).to_f64().unwrap_or(0.0))
        .collect();
    let (mut lo, mut hi) = ys
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| {
            (lo.min(*y), hi.max(*y))
        });
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    if fill {
        hi = hi.max(0.0);
    }
    if (hi - lo).abs() < f64::EPSILON {
        (lo, hi) = (lo - 1.0, hi + 1.0);
    }
    let n = ys.len().max(2) - 1;
    let x = |i: usize| PAD + (W - 2.0 * PAD) * i as f64 / n as f64;
    let y = |v: f64| H - PAD / 2.0 - (H - PAD) * (v - lo) / (hi - lo);
    let mut path = String::new();
    for (i, v) in ys.iter().enumerate() {
        let _ = write!(
            path,
            "{}{:.1},{:.1} ",
            if i == 0 { "M" } else { "L" },
            x(i),
            y(*v)
        );
    }
    if fill && !ys.is_empty() {
        let _ = write!(
            path,
            "L{:.1},{:.1} L{:.1},{:.1} Z",
            x(ys.len() - 1),
            y(0.0),
            x(0),
            y(0.0)
        );
    }
    let first = points
        .first()
        .map(|p| format_ist_date(p.ts_ms))
        .unwrap_or_default();
    let last = points
        .last()
        .map(|p| format_ist_date(p.ts_ms))
        .unwrap_or_default();
    let style = if fill {
        format!("fill:{colour};fill-opacity:0.35;stroke:{colour}")
    } else {
        format!("fill:none;stroke:{colour};stroke-width:1.5")
    };
    format!(
        r##"<figure><figcaption>{title}</figcaption><svg viewBox="0 0 {W} {H}" width="100%" role="img" aria-label="{title}">
<rect x="{PAD}" y="{top}" width="{iw}" height="{ih}" fill="#fafafa" stroke="#ddd"/>
<path d="{path}" style="{style}"/>
<text x="{PAD}" y="{H}" font-size="11">{first}</text><text x="{xr}" y="{H}" font-size="11" text-anchor="end">{last}</text>
<text x="{lx}" y="{ty}" font-size="11" text-anchor="end">{hi:.0}</text><text x="{lx}" y="{by}" font-size="11" text-anchor="end">{lo:.0}</text>
</svg></figure>"##,
        top = PAD / 2.0,
        iw = W - 2.0 * PAD,
        ih = H - PAD,
        xr = W - PAD,
        lx = PAD - 4.0,
        ty = PAD / 2.0 + 10.0,
        by = H - PAD / 2.0,
    )
}

/// Write the HTML report.
///
/// # Errors
/// When the file cannot be written.
pub fn write_report_html(path: &Path, result: &BacktestResult) -> std::io::Result<()> {
    let s = &result.summary;
    let mut html = String::with_capacity(64 * 1024);
    let _ = write!(
        html,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Backtest: {name}</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse}}td,th{{padding:2px 8px;border-bottom:1px solid #eee;text-align:right;white-space:nowrap}}
th{{background:#f4f4f4}}td.l,th.l{{text-align:left}}.pos{{color:#0a7a2f}}.neg{{color:#b3261e}}figure{{margin:1em 0}}figcaption{{font-weight:600}}
.kpi{{display:grid;grid-template-columns:repeat(4,max-content);gap:4px 24px}}</style></head><body>
<h1>Backtest: {name} {version}</h1>
<p>{first} → {last} · {events} events · mode {mode:?} · qty {qty} · capital {capital}{sq}</p>
<div class="kpi"><div>Net P&amp;L</div><div class="{pnl_class}">{pnl}</div><div>Return</div><div>{ret:.2}%</div>
<div>Trades</div><div>{trades} ({wins} won, {losses} lost)</div><div>Win rate</div><div>{wr:.1}%</div>
<div>Max drawdown</div><div>{dd} ({ddp:.2}%)</div><div>Sharpe</div><div>{sharpe:.2}</div>
<div>Signals</div><div>{signals} ({rej} refused)</div><div>Final equity</div><div>{fe}</div></div>
"#,
        name = esc(&s.strategy),
        version = esc(&s.strategy_version),
        first = s.first_ts.as_deref().unwrap_or("-"),
        last = s.last_ts.as_deref().unwrap_or("-"),
        events = s.events,
        mode = s.mode,
        qty = s.qty,
        capital = s.capital,
        sq = s
            .square_off
            .as_ref()
            .map(|t| format!(" · square-off {t}"))
            .unwrap_or_default(),
        pnl_class = if s.net_pnl < Decimal::ZERO {
            "neg"
        } else {
            "pos"
        },
        pnl = s.net_pnl,
        ret = s.return_pct,
        trades = s.trades,
        wins = s.wins,
        losses = s.losses,
        wr = s.win_rate * 100.0,
        dd = s.max_drawdown,
        ddp = s.max_drawdown_pct,
        sharpe = s.sharpe,
        signals = s.signals,
        rej = s.signals_rejected,
        fe = s.final_equity,
    );
    html.push_str(&svg_chart(
        "Equity (end of day)",
        &result.equity,
        |p| p.equity,
        "#1f5fbf",
        false,
    ));
    html.push_str(&svg_chart(
        "Drawdown (end of day)",
        &result.equity,
        |p| p.drawdown,
        "#b3261e",
        true,
    ));
    let shown = result.trades.len().min(REPORT_TRADE_ROWS);
    let _ = writeln!(
        html,
        "<h2>Trades</h2><p>{}</p><table><tr><th>#</th><th class=l>Instrument</th><th class=l>Side</th><th class=l>Entry</th><th class=l>Exit</th><th>Qty</th><th>Entry price</th><th>Exit price</th><th>P&amp;L</th><th class=l>Exit reason</th></tr>",
        if shown < result.trades.len() {
            format!(
                "First {shown} of {}; all are in trades.csv.",
                result.trades.len()
            )
        } else {
            format!("{} trades.", result.trades.len())
        }
    );
    for (i, t) in result.trades.iter().take(shown).enumerate() {
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td class=l>{}</td><td class=l>{}</td><td class=l>{}</td><td class=l>{}</td><td>{}</td><td>{}</td><td>{}</td><td class={}>{}</td><td class=l>{}</td></tr>",
            i + 1,
            esc(&t.instrument),
            t.side.as_str(),
            format_iso_ist(t.entry_ts_ms),
            format_iso_ist(t.exit_ts_ms),
            t.qty,
            t.entry_price,
            t.exit_price,
            if t.pnl < Decimal::ZERO { "neg" } else { "pos" },
            t.pnl,
            esc(&t.exit_reason)
        );
    }
    html.push_str("</table></body></html>\n");
    std::fs::write(path, html)
}
