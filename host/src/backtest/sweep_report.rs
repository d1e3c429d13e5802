//! A sweep's outputs: `results.csv` and `results.parquet` (one row per
//! combination, ranked), `report.html` (a heatmap over two parameters, the
//! best runs and their equity curves); a walk-forward's `walk_forward.csv`
//! (per window: the winner, in-sample against out-of-sample), `in_sample.csv`,
//! `oos_equity.csv` and its `report.html`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

use super::grid::Grid;
use super::report::esc;
use super::sweep::{Metric, Run, Window, ranking, stitched};
use super::{EquityPoint, Summary};
use crate::domain::time::{format_iso_ist, format_ist_date};
use crate::market::parquet::{Column, write_table};
use crate::orders::report::csv_field;

/// Runs drawn as equity curves in the report.
const CURVES: usize = 5;
/// Rows of the best-runs table in the report (`results.csv` has every one).
const TABLE_ROWS: usize = 20;

/// What a sweep was: shown at the top of its report.
#[derive(Debug, Clone)]
pub struct SweepInfo {
    /// Strategy name and version, as the plugin says.
    pub strategy: String,
    /// The plugin file and the data file.
    pub files: (String, String),
    /// Fixed parameters, `k=v`.
    pub fixed: Vec<String>,
    /// The two parameters of the heatmap.
    pub heatmap: Option<(String, String)>,
    /// Wall-clock seconds, worker threads.
    pub timing: (f64, usize),
}

fn metric_columns(s: Option<&Summary>) -> [String; 9] {
    let f = |v: f64| format!("{v:.6}");
    match s {
        None => Default::default(),
        Some(s) => [
            s.trades.to_string(),
            s.net_pnl.to_string(),
            f(s.return_pct),
            f(s.win_rate),
            s.max_drawdown.to_string(),
            f(s.max_drawdown_pct),
            f(s.sharpe),
            s.exposure_pct.map(f).unwrap_or_default(),
            s.signals.to_string(),
        ],
    }
}

const METRIC_HEADER: &str =
    "trades,net_pnl,return_pct,win_rate,max_drawdown,max_drawdown_pct,sharpe,exposure_pct,signals";

fn csv_rows(grid: &Grid, runs: &[Run], order: &[usize], prefix: &str) -> String {
    let mut out = String::new();
    for (rank, &i) in order.iter().enumerate() {
        let run = &runs[i];
        let values: Vec<String> = run
            .values
            .iter()
            .map(|v| csv_field(v).into_owned())
            .collect();
        let summary = run.outcome.as_ref().ok().map(|o| &o.summary);
        let error = run
            .outcome
            .as_ref()
            .err()
            .map(|e| csv_field(e).into_owned())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{prefix}{},{}{}{},{error}",
            rank + 1,
            values.join(","),
            if grid.is_empty() { "" } else { "," },
            metric_columns(summary).join(",")
        );
    }
    out
}

fn header(grid: &Grid, prefix: &str) -> String {
    let names: Vec<String> = grid.names().map(|n| csv_field(n).into_owned()).collect();
    format!(
        "{prefix}rank,{}{}{METRIC_HEADER},error\n",
        names.join(","),
        if grid.is_empty() { "" } else { "," }
    )
}

/// Each grid value as a number column when every value is one, else text.
fn param_column(name: &str, values: Vec<&str>) -> Column {
    if let Some(ints) = values
        .iter()
        .map(|v| v.parse::<i64>().ok())
        .collect::<Option<Vec<_>>>()
    {
        return Column::Int(name.to_owned(), ints.into_iter().map(Some).collect());
    }
    if let Some(floats) = values
        .iter()
        .map(|v| v.parse::<f64>().ok().filter(|f| f.is_finite()))
        .collect::<Option<Vec<_>>>()
    {
        return Column::Float(name.to_owned(), floats.into_iter().map(Some).collect());
    }
    Column::Text(
        name.to_owned(),
        values.into_iter().map(|v| Some(v.to_owned())).collect(),
    )
}

fn parquet_columns(grid: &Grid, runs: &[Run], order: &[usize]) -> Vec<Column> {
    let ranked: Vec<&Run> = order.iter().map(|&i| &runs[i]).collect();
    let s = |r: &Run| r.outcome.as_ref().ok().map(|o| o.summary.clone());
    let summaries: Vec<Option<Summary>> = ranked.iter().map(|r| s(r)).collect();
    let int = |name: &str, f: &dyn Fn(&Summary) -> i64| {
        Column::Int(
            name.into(),
            summaries.iter().map(|s| s.as_ref().map(f)).collect(),
        )
    };
    let float = |name: &str, f: &dyn Fn(&Summary) -> Option<f64>| {
        Column::Float(
            name.into(),
            summaries.iter().map(|s| s.as_ref().and_then(f)).collect(),
        )
    };
    let money = |name: &str, f: &dyn Fn(&Summary) -> Decimal| {
        Column::Decimal(
            name.into(),
            4,
            summaries.iter().map(|s| s.as_ref().map(f)).collect(),
        )
    };
    let mut columns = vec![Column::Int(
        "rank".into(),
        (1..=ranked.len()).map(|r| i64::try_from(r).ok()).collect(),
    )];
    for (a, axis) in grid.axes.iter().enumerate() {
        columns.push(param_column(
            &axis.name,
            ranked.iter().map(|r| r.values[a].as_str()).collect(),
        ));
    }
    columns.extend([
        int("trades", &|s| i64::try_from(s.trades).unwrap_or(i64::MAX)),
        money("net_pnl", &|s| s.net_pnl),
        float("return_pct", &|s| Some(s.return_pct)),
        float("win_rate", &|s| Some(s.win_rate)),
        money("max_drawdown", &|s| s.max_drawdown),
        float("max_drawdown_pct", &|s| Some(s.max_drawdown_pct)),
        float("sharpe", &|s| Some(s.sharpe)),
        float("exposure_pct", &|s| s.exposure_pct),
        int("signals", &|s| i64::try_from(s.signals).unwrap_or(i64::MAX)),
        Column::Text(
            "error".into(),
            ranked
                .iter()
                .map(|r| r.outcome.as_ref().err().cloned())
                .collect(),
        ),
    ]);
    columns
}

/// Write `results.csv`, `results.parquet` and `report.html` of a sweep into `dir`.
///
/// # Errors
/// When a file cannot be written; the error names it.
pub fn write_sweep(
    dir: &Path,
    grid: &Grid,
    runs: &[Run],
    metric: Metric,
    info: &SweepInfo,
) -> anyhow::Result<Vec<usize>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let order = ranking(runs, metric);
    let path = dir.join("results.csv");
    std::fs::write(&path, header(grid, "") + &csv_rows(grid, runs, &order, ""))
        .with_context(|| format!("writing {}", path.display()))?;
    let path = dir.join("results.parquet");
    let meta = [
        ("tradehost.format", "sweep/1".to_owned()),
        ("strategy", info.strategy.clone()),
        ("ranked_by", metric.column().to_owned()),
    ];
    write_table(&path, &parquet_columns(grid, runs, &order), &meta)
        .with_context(|| format!("writing {}", path.display()))?;
    let mut html = page_head(&format!("Sweep: {}", info.strategy));
    let ok = runs.iter().filter(|r| r.outcome.is_ok()).count();
    let _ = write!(
        html,
        "<h1>Sweep: {}</h1><p>{} on {} · {} combinations ({} failed) · ranked by {} · {:.1} s on {} threads{}</p>",
        esc(&info.strategy),
        esc(&info.files.0),
        esc(&info.files.1),
        runs.len(),
        runs.len() - ok,
        metric.column(),
        info.timing.0,
        info.timing.1,
        if info.fixed.is_empty() {
            String::new()
        } else {
            format!(" · fixed {}", esc(&info.fixed.join(" ")))
        }
    );
    if let Some((x, y)) = &info.heatmap {
        html.push_str(&heatmap(grid, runs, metric, x, y));
    }
    html.push_str(&best_table(grid, runs, &order));
    html.push_str(&curves(
        "Equity of the best runs (end of day)",
        grid,
        runs,
        &order,
    ));
    html.push_str("</body></html>\n");
    let path = dir.join("report.html");
    std::fs::write(&path, html).with_context(|| format!("writing {}", path.display()))?;
    Ok(order)
}

/// Write a walk-forward's `walk_forward.csv`, `in_sample.csv`, `oos_equity.csv` and `report.html` into `dir`.
///
/// # Errors
/// When a file cannot be written; the error names it.
pub fn write_walk_forward(
    dir: &Path,
    grid: &Grid,
    windows: &[Window],
    metric: Metric,
    capital: Decimal,
    info: &SweepInfo,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let names: Vec<String> = grid.names().map(|n| csv_field(n).into_owned()).collect();
    // The ranking metric gets columns of its own unless it has them already.
    let extra = !matches!(metric, Metric::NetPnl | Metric::Sharpe);
    let mut wf = format!(
        "window,train_from,train_to,test_from,test_to,train_days,test_days,{}{}is_net_pnl,oos_net_pnl,is_return_pct,oos_return_pct,is_return_pct_per_day,oos_return_pct_per_day,gap_pct_per_day,is_sharpe,oos_sharpe,oos_trades,{}error\n",
        names.join(","),
        if names.is_empty() { "" } else { "," },
        if extra {
            format!("is_{0},oos_{0},", metric.column())
        } else {
            String::new()
        }
    );
    let mut rows_html = String::new();
    for (n, w) in windows.iter().enumerate() {
        let best = w.best.map(|i| &w.in_sample[i]);
        let is = best
            .and_then(|r| r.outcome.as_ref().ok())
            .map(|o| &o.summary);
        let oos = w
            .out_of_sample
            .as_ref()
            .and_then(|o| o.as_ref().ok())
            .map(|o| &o.summary);
        let error = match (&w.out_of_sample, best) {
            (Some(Err(e)), _) => e.clone(),
            (_, None) => "no combination ran on the train days".into(),
            _ => String::new(),
        };
        let per_day =
            |s: Option<&Summary>, days: usize| s.map(|s| s.return_pct / days.max(1) as f64);
        let (is_day, oos_day) = (per_day(is, w.days.0), per_day(oos, w.days.1));
        let gap = is_day.zip(oos_day).map(|(a, b)| a - b);
        let num = |v: Option<f64>| v.map(|v| format!("{v:.6}")).unwrap_or_default();
        let values: Vec<String> = best
            .map(|r| r.values.iter().map(|v| csv_field(v).into_owned()).collect())
            .unwrap_or_else(|| vec![String::new(); names.len()]);
        let _ = writeln!(
            wf,
            "{},{},{},{},{},{},{},{}{}{},{},{},{},{},{},{},{},{},{},{}{}",
            n + 1,
            format_iso_ist(w.train.0),
            format_iso_ist(w.train.1),
            format_iso_ist(w.test.0),
            format_iso_ist(w.test.1),
            w.days.0,
            w.days.1,
            values.join(","),
            if names.is_empty() { "" } else { "," },
            is.map(|s| s.net_pnl.to_string()).unwrap_or_default(),
            oos.map(|s| s.net_pnl.to_string()).unwrap_or_default(),
            num(is.map(|s| s.return_pct)),
            num(oos.map(|s| s.return_pct)),
            num(is_day),
            num(oos_day),
            num(gap),
            num(is.map(|s| s.sharpe)),
            num(oos.map(|s| s.sharpe)),
            oos.map(|s| s.trades.to_string()).unwrap_or_default(),
            if extra {
                format!(
                    "{},{},",
                    num(is.map(|s| metric.of(s))),
                    num(oos.map(|s| metric.of(s)))
                )
            } else {
                String::new()
            },
            csv_field(&error)
        );
        let params = best
            .map(|r| {
                grid.names()
                    .zip(&r.values)
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        let cell = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"));
        let _ = write!(
            rows_html,
            "<tr><td>{}</td><td class=l>{} → {}</td><td class=l>{} → {}</td><td class=l>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class={}>{}</td><td>{}</td><td>{}</td><td class=l>{}</td></tr>",
            n + 1,
            format_ist_date(w.train.0),
            format_ist_date(w.train.1),
            format_ist_date(w.test.0),
            format_ist_date(w.test.1),
            esc(&params),
            cell(is.map(|s| s.return_pct)),
            cell(oos.map(|s| s.return_pct)),
            cell(is_day),
            cell(oos_day),
            if gap.unwrap_or(0.0) > 0.0 {
                "neg"
            } else {
                "pos"
            },
            cell(gap),
            cell(is.map(|s| s.sharpe)),
            cell(oos.map(|s| s.sharpe)),
            esc(&error)
        );
    }
    let write = |name: &str, text: String| -> anyhow::Result<()> {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    write("walk_forward.csv", wf)?;
    let mut in_sample = header(grid, "window,");
    for (n, w) in windows.iter().enumerate() {
        in_sample.push_str(&csv_rows(
            grid,
            &w.in_sample,
            &ranking(&w.in_sample, metric),
            &format!("{},", n + 1),
        ));
    }
    write("in_sample.csv", in_sample)?;
    let equity = stitched(windows, capital);
    let mut text = String::from("date,equity,drawdown\n");
    for p in &equity {
        let _ = writeln!(
            text,
            "{},{},{}",
            format_ist_date(p.ts_ms),
            p.equity,
            p.drawdown
        );
    }
    write("oos_equity.csv", text)?;

    let mut html = page_head(&format!("Walk-forward: {}", info.strategy));
    let total = equity.last().map_or(Decimal::ZERO, |p| p.equity - capital);
    let _ = write!(
        html,
        "<h1>Walk-forward: {}</h1><p>{} on {} · {} windows · {} combinations each · chosen by {} · {:.1} s on {} threads{}</p>\
         <p>Out-of-sample P&amp;L over every test window: <b class={}>{total}</b></p>",
        esc(&info.strategy),
        esc(&info.files.0),
        esc(&info.files.1),
        windows.len(),
        grid.len(),
        metric.column(),
        info.timing.0,
        info.timing.1,
        if info.fixed.is_empty() {
            String::new()
        } else {
            format!(" · fixed {}", esc(&info.fixed.join(" ")))
        },
        if total < Decimal::ZERO { "neg" } else { "pos" },
    );
    html.push_str(&multi_line_chart(
        "Out-of-sample equity, the test windows stitched (end of day)",
        &[("out of sample".into(), equity)],
    ));
    let _ = write!(
        html,
        "<h2>Per window: in-sample against out-of-sample</h2><p>Return in percent of capital; per day, so windows of different lengths compare; \
         the gap is the in-sample return a day less the out-of-sample one (the overfitting).</p>\
         <table><tr><th>#</th><th class=l>Train</th><th class=l>Test</th><th class=l>Chosen</th><th>IS return</th><th>OOS return</th><th>IS / day</th><th>OOS / day</th><th>Gap / day</th><th>IS Sharpe</th><th>OOS Sharpe</th><th class=l>Error</th></tr>{rows_html}</table>"
    );
    if let (Some((x, y)), Some(last)) = (&info.heatmap, windows.last()) {
        let _ = write!(html, "<h2>The last window's train days</h2>");
        html.push_str(&heatmap(grid, &last.in_sample, metric, x, y));
    }
    html.push_str("</body></html>\n");
    write("report.html", html)
}

fn page_head(title: &str) -> String {
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{}</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse}}td,th{{padding:2px 8px;border-bottom:1px solid #eee;text-align:right;white-space:nowrap}}
th{{background:#f4f4f4}}td.l,th.l{{text-align:left}}.pos{{color:#0a7a2f}}.neg{{color:#b3261e}}figure{{margin:1em 0}}figcaption{{font-weight:600}}</style></head><body>
"#,
        esc(title)
    )
}

/// A heatmap of `metric` over parameters `x` and `y`: with more axes, each
/// cell shows the best value over the others.
fn heatmap(grid: &Grid, runs: &[Run], metric: Metric, x: &str, y: &str) -> String {
    let (Some(xi), Some(yi)) = (
        grid.axes.iter().position(|a| a.name == x),
        grid.axes.iter().position(|a| a.name == y),
    ) else {
        return String::new();
    };
    let (xs, ys) = (&grid.axes[xi].values, &grid.axes[yi].values);
    let mut cells: Vec<Vec<Option<f64>>> = vec![vec![None; xs.len()]; ys.len()];
    for run in runs {
        let Ok(o) = &run.outcome else { continue };
        let (Some(cx), Some(cy)) = (
            xs.iter().position(|v| *v == run.values[xi]),
            ys.iter().position(|v| *v == run.values[yi]),
        ) else {
            continue;
        };
        let v = metric.of(&o.summary);
        let cell = &mut cells[cy][cx];
        if v.is_finite() && cell.is_none_or(|c| v > c) {
            *cell = Some(v);
        }
    }
    let all: Vec<f64> = cells.iter().flatten().flatten().copied().collect();
    let (lo, hi) = all
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        });
    let span = (hi.max(0.0).abs()).max(lo.min(0.0).abs()).max(f64::EPSILON);
    let colour = |v: f64| {
        // Diverging around zero: green for gains, red for losses, pale near zero.
        let t = (v / span).clamp(-1.0, 1.0);
        let (r, g, b) = if t >= 0.0 {
            (255.0 - 200.0 * t, 255.0 - 90.0 * t, 255.0 - 200.0 * t)
        } else {
            (255.0 + 40.0 * t, 255.0 + 200.0 * t, 255.0 + 200.0 * t)
        };
        format!("rgb({:.0},{:.0},{:.0})", r, g, b)
    };
    let (cw, ch, left, top) = (64.0, 26.0, 70.0, 30.0);
    let w = left + cw * xs.len() as f64 + 10.0;
    let h = top + ch * ys.len() as f64 + 40.0;
    let mut svg = format!(
        r#"<figure><figcaption>{metric} by {x} (across) and {y} (down){more}</figcaption><svg viewBox="0 0 {w} {h}" width="{w}" role="img" aria-label="heatmap">"#,
        metric = metric.column(),
        x = esc(x),
        y = esc(y),
        more = if grid.axes.len() > 2 {
            ", the best over the other parameters"
        } else {
            ""
        }
    );
    for (cx, v) in xs.iter().enumerate() {
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"#,
            left + cw * (cx as f64 + 0.5),
            top - 8.0,
            esc(v)
        );
    }
    for (cy, v) in ys.iter().enumerate() {
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"#,
            left - 6.0,
            top + ch * (cy as f64 + 0.65),
            esc(v)
        );
        for (cx, cell) in cells[cy].iter().enumerate() {
            let (x0, y0) = (left + cw * cx as f64, top + ch * cy as f64);
            let (fill, label) = match cell {
                Some(v) => (colour(*v), format_metric(metric, *v)),
                None => ("#eee".to_owned(), "–".to_owned()),
            };
            let _ = write!(
                svg,
                r##"<rect x="{x0:.1}" y="{y0:.1}" width="{cw}" height="{ch}" fill="{fill}" stroke="#fff"><title>{x}={xv} {y}={yv}: {label}</title></rect><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle">{label}</text>"##,
                x0 + cw / 2.0,
                y0 + ch * 0.65,
                x = esc(x),
                xv = esc(&xs[cx]),
                y = esc(y),
                yv = esc(&ys[cy]),
            );
        }
    }
    svg.push_str("</svg></figure>");
    svg
}

fn format_metric(metric: Metric, v: f64) -> String {
    match metric {
        Metric::NetPnl | Metric::MaxDrawdown => format!("{v:.0}"),
        Metric::Trades => format!("{v:.0}"),
        Metric::WinRate => format!("{:.1}%", v * 100.0),
        Metric::Exposure => format!("{v:.1}%"),
        Metric::Sharpe => format!("{v:.2}"),
    }
}

fn best_table(grid: &Grid, runs: &[Run], order: &[usize]) -> String {
    let mut html = format!(
        "<h2>The best runs</h2><p>{} shown; every one is in results.csv and results.parquet.</p><table><tr><th>Rank</th>",
        order.len().min(TABLE_ROWS)
    );
    for name in grid.names() {
        let _ = write!(html, "<th>{}</th>", esc(name));
    }
    html.push_str("<th>Trades</th><th>Net P&amp;L</th><th>Return %</th><th>Win rate</th><th>Max drawdown</th><th>Sharpe</th><th>Exposure</th><th class=l>Error</th></tr>");
    for (rank, &i) in order.iter().take(TABLE_ROWS).enumerate() {
        let run = &runs[i];
        let _ = write!(html, "<tr><td>{}</td>", rank + 1);
        for v in &run.values {
            let _ = write!(html, "<td>{}</td>", esc(v));
        }
        match &run.outcome {
            Ok(o) => {
                let s = &o.summary;
                let _ = write!(
                    html,
                    "<td>{}</td><td class={}>{}</td><td>{:.2}</td><td>{:.1}%</td><td>{}</td><td>{:.2}</td><td>{}</td><td></td></tr>",
                    s.trades,
                    if s.net_pnl < Decimal::ZERO {
                        "neg"
                    } else {
                        "pos"
                    },
                    s.net_pnl,
                    s.return_pct,
                    s.win_rate * 100.0,
                    s.max_drawdown,
                    s.sharpe,
                    s.exposure_pct
                        .map(|e| format!("{e:.1}%"))
                        .unwrap_or_default()
                );
            }
            Err(e) => {
                let _ = write!(html, "<td colspan=7></td><td class=l>{}</td></tr>", esc(e));
            }
        }
    }
    html.push_str("</table>");
    html
}

fn curves(title: &str, grid: &Grid, runs: &[Run], order: &[usize]) -> String {
    let lines: Vec<(String, Vec<EquityPoint>)> = order
        .iter()
        .filter_map(|&i| {
            let o = runs[i].outcome.as_ref().ok()?;
            let label = grid
                .names()
                .zip(&runs[i].values)
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ");
            Some((label, o.equity.clone()))
        })
        .take(CURVES)
        .collect();
    multi_line_chart(title, &lines)
}

/// Several equity curves on one SVG chart, each with its label.
fn multi_line_chart(title: &str, lines: &[(String, Vec<EquityPoint>)]) -> String {
    const COLOURS: [&str; CURVES] = ["#1f5fbf", "#0a7a2f", "#b3261e", "#8a5a00", "#6b3fa0"];
    const W: f64 = 900.0;
    const H: f64 = 260.0;
    const PAD: f64 = 70.0;
    let values = |p: &EquityPoint| p.equity.to_f64().unwrap_or(0.0);
    let (mut lo, mut hi) = lines
        .iter()
        .flat_map(|(_, pts)| pts.iter().map(values))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    if (hi - lo).abs() < f64::EPSILON {
        (lo, hi) = (lo - 1.0, hi + 1.0);
    }
    let (t0, t1) = lines
        .iter()
        .flat_map(|(_, pts)| pts.iter().map(|p| p.ts_ms))
        .fold((i64::MAX, i64::MIN), |(a, b), t| (a.min(t), b.max(t)));
    let span = (t1.saturating_sub(t0)).max(1) as f64;
    let x = |t: i64| PAD + (W - 2.0 * PAD) * (t.saturating_sub(t0)) as f64 / span;
    let y = |v: f64| H - PAD / 2.0 - (H - PAD) * (v - lo) / (hi - lo);
    let mut svg = format!(
        r##"<figure><figcaption>{}</figcaption><svg viewBox="0 0 {W} {H}" width="100%" role="img" aria-label="equity curves"><rect x="{PAD}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#fafafa" stroke="#ddd"/>"##,
        esc(title),
        PAD / 2.0,
        W - 2.0 * PAD,
        H - PAD
    );
    for (n, (label, pts)) in lines.iter().enumerate() {
        let colour = COLOURS[n % COLOURS.len()];
        let mut path = String::new();
        for (i, p) in pts.iter().enumerate() {
            let _ = write!(
                path,
                "{}{:.1},{:.1} ",
                if i == 0 { "M" } else { "L" },
                x(p.ts_ms),
                y(values(p))
            );
        }
        let _ = write!(
            svg,
            r#"<path d="{path}" style="fill:none;stroke:{colour};stroke-width:1.5"/><text x="{:.1}" y="{:.1}" font-size="11" fill="{colour}">{}</text>"#,
            PAD + 6.0,
            PAD / 2.0 + 14.0 + 13.0 * n as f64,
            esc(label)
        );
    }
    let (first, last) = if t0 <= t1 {
        (format_ist_date(t0), format_ist_date(t1))
    } else {
        Default::default()
    };
    let _ = write!(
        svg,
        r#"<text x="{PAD}" y="{H}" font-size="11">{first}</text><text x="{:.1}" y="{H}" font-size="11" text-anchor="end">{last}</text><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{hi:.0}</text><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{lo:.0}</text></svg></figure>"#,
        W - PAD,
        PAD - 4.0,
        PAD / 2.0 + 10.0,
        PAD - 4.0,
        H - PAD / 2.0
    );
    svg
}
