//! The regulator's audit trail as CSV: every decision the order manager made
//! (an order, nothing to do, a refusal and its rule) and every order the host
//! made itself (exits, square-offs, flattens, basket legs), with their times,
//! the strategy and the exact plugin build behind them (name, version, sha256),
//! the account's algo id as it stood when the order was recorded, and where the
//! order ended. Read from the journal only, so it can be run on a live host's
//! journal at any time (`tradehost audit`).

use std::path::Path;

use rusqlite::Connection;
use rust_decimal::Decimal;

use super::report::csv_field;
use crate::domain::time::{format_iso_ist, ist_day, parse_date};

/// The columns, in order.
pub const HEADER: &str = "exchange_time,recorded_at,client_order_id,parent_order_id,slice,account,algo_id,exchange,instrument,side,qty,state,filled_qty,average_price,broker_order_id,signal_id,signal_time,pipeline,plugin,plugin_version,plugin_sha256,decision,rule,detail";

/// An ISO time in IST with milliseconds: `2024-01-01T09:15:00.250+05:30`.
fn iso_ms(ts: i64) -> String {
    let text = format_iso_ist(ts);
    let (clock, zone) = text.split_at(text.len() - 6);
    format!("{clock}.{:03}{zone}", ts.rem_euclid(1000))
}

/// One order or decision.
#[derive(Debug, Default)]
struct Row {
    exchange_time: i64,
    recorded_at: Option<i64>,
    coid: Option<String>,
    parent: Option<String>,
    slice: Option<String>,
    account: String,
    algo_id: Option<String>,
    instrument: String,
    side: String,
    qty: Option<String>,
    state: Option<String>,
    filled: Option<String>,
    average: Option<Decimal>,
    broker_id: Option<String>,
    signal_id: Option<String>,
    signal_time: Option<i64>,
    pipeline: String,
    plugin: Option<String>,
    version: Option<String>,
    sha256: Option<String>,
    decision: String,
    rule: String,
    detail: String,
}

/// `refused [max_order_qty]: 12 units is …` → (`refused`, `max_order_qty`, the reason).
fn split_outcome(outcome: &str) -> (String, String, String) {
    if let Some(rest) = outcome.strip_prefix("refused [")
        && let Some((rule, reason)) = rest.split_once("]: ")
    {
        return ("refused".into(), rule.into(), reason.into());
    }
    match outcome {
        "nothing to do" => ("nothing to do".into(), String::new(), String::new()),
        other => ("order".into(), String::new(), other.into()),
    }
}

/// The audit CSV of `journal`, of one IST day (`YYYY-MM-DD`, by exchange time) or
/// all; returns the text and the number of rows.
///
/// # Errors
/// The journal cannot be read, or `day` is not a date.
pub fn audit_csv(journal: &Path, day: Option<&str>) -> anyhow::Result<(String, usize)> {
    let day = day
        .map(|d| parse_date(d).ok_or_else(|| anyhow::anyhow!("--day {d:?}: expected YYYY-MM-DD")))
        .transpose()?;
    if !journal.exists() {
        anyhow::bail!("{}: no such journal", journal.display());
    }
    let db = Connection::open_with_flags(journal, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let has = |table: &str, column: &str| -> rusqlite::Result<bool> {
        db.query_row(
            "SELECT COUNT(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
            [table, column],
            |r| r.get(0),
        )
    };
    if !has("orders", "client_order_id")? {
        anyhow::bail!("{}: not an orders journal", journal.display());
    }
    // Journals from before these columns: the fields stay empty.
    let algo = if has("orders", "algo_id")? {
        "o.algo_id"
    } else {
        "NULL"
    };
    let (parent, slice) = if has("orders", "parent")? {
        ("o.parent", "o.slice")
    } else {
        ("NULL", "NULL")
    };
    let plugin = if has("signals", "plugin_sha256")? {
        "s.plugin, s.plugin_version, s.plugin_sha256"
    } else {
        "NULL, NULL, NULL"
    };
    let mut rows = Vec::new();
    // Every decision, with its order where it made one.
    let sql = format!(
        "SELECT d.signal_id, d.account, d.outcome, COALESCE(o.client_order_id, d.client_order_id), d.at, s.ts, s.pipeline, s.instrument, s.side, {plugin},
                o.qty, o.state, o.filled_qty, o.broker_order_id, o.created_at, o.side, {algo}, {parent}, {slice}
         FROM decisions d LEFT JOIN signals s ON s.signal_id = d.signal_id LEFT JOIN orders o ON o.client_order_id = d.client_order_id OR {parent} = d.client_order_id"
    );
    let mut stmt = db.prepare(&sql)?;
    let mut q = stmt.query([])?;
    while let Some(r) = q.next()? {
        let outcome: String = r.get(2)?;
        let (decision, rule, detail) = split_outcome(&outcome);
        let signal_time: Option<i64> = r.get(5)?;
        let signal_id: String = r.get(0)?;
        rows.push(Row {
            exchange_time: signal_time.unwrap_or_default(),
            recorded_at: r.get::<_, Option<i64>>(16)?.or(Some(r.get(4)?)),
            coid: r.get(3)?,
            account: r.get(1)?,
            algo_id: r.get(18)?,
            parent: r.get(19)?,
            slice: r.get(20)?,
            instrument: r.get::<_, Option<String>>(7)?.unwrap_or_default(),
            side: r
                .get::<_, Option<String>>(17)?
                .or(r.get(8)?)
                .unwrap_or_default(),
            qty: r.get(12)?,
            state: r.get(13)?,
            filled: r.get(14)?,
            broker_id: r.get(15)?,
            pipeline: r
                .get::<_, Option<String>>(6)?
                .unwrap_or_else(|| signal_id.split('/').next().unwrap_or_default().to_owned()),
            signal_id: Some(signal_id),
            signal_time,
            plugin: r.get(9)?,
            version: r.get(10)?,
            sha256: r.get(11)?,
            decision,
            rule,
            detail,
            ..Row::default()
        });
    }
    drop(q);
    drop(stmt);
    // The orders the host made itself: no decision names them.
    let sql = format!(
        "SELECT o.client_order_id, o.account, o.pipeline, o.instrument, o.side, o.qty, o.state, o.filled_qty, o.broker_order_id, o.created_at, o.not_before, o.signal_id, {algo}, {parent}, {slice}
         FROM orders o WHERE NOT EXISTS (SELECT 1 FROM decisions d WHERE d.client_order_id = o.client_order_id OR d.client_order_id = {parent})"
    );
    let mut stmt = db.prepare(&sql)?;
    let mut q = stmt.query([])?;
    while let Some(r) = q.next()? {
        let pipeline: String = r.get(2)?;
        rows.push(Row {
            coid: r.get(0)?,
            account: r.get(1)?,
            instrument: r.get(3)?,
            side: r.get(4)?,
            qty: r.get(5)?,
            state: r.get(6)?,
            filled: r.get(7)?,
            broker_id: r.get(8)?,
            recorded_at: r.get(9)?,
            exchange_time: r.get(10)?,
            signal_id: r.get(11)?,
            algo_id: r.get(12)?,
            parent: r.get(13)?,
            slice: r.get(14)?,
            decision: "order".into(),
            rule: pipeline.clone(),
            detail: format!("the host's own {pipeline} order"),
            pipeline,
            ..Row::default()
        });
    }
    drop(q);
    drop(stmt);
    rows.retain(|row| day.is_none_or(|d| ist_day(row.exchange_time) == d));
    let mut average =
        db.prepare("SELECT qty, price FROM fills WHERE client_order_id = ?1 ORDER BY seq")?;
    for row in &mut rows {
        let Some(coid) = &row.coid else { continue };
        let (mut units, mut value) = (Decimal::ZERO, Decimal::ZERO);
        let fills = average.query_map([coid], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        for fill in fills {
            let (qty, price) = fill?;
            let (qty, price) = (
                qty.parse::<Decimal>().map_err(|_| {
                    anyhow::anyhow!(
                        "{}: order {coid}: fill quantity {qty:?} is not a number",
                        journal.display()
                    )
                })?,
                price.parse::<Decimal>().map_err(|_| {
                    anyhow::anyhow!(
                        "{}: order {coid}: fill price {price:?} is not a number",
                        journal.display()
                    )
                })?,
            );
            units += qty;
            value += qty * price;
        }
        if !units.is_zero() {
            row.average = Some((value / units).round_dp(4).normalize());
            row.filled.get_or_insert_with(|| units.to_string());
        }
    }
    // Slices in their order: `2/3` by its number.
    let place = |r: &Row| {
        r.slice
            .as_deref()
            .and_then(|s| s.split('/').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    rows.sort_by(|a, b| {
        let key = |r: &Row| {
            (
                r.exchange_time,
                r.account.clone(),
                r.parent.clone().or_else(|| r.coid.clone()),
                place(r),
            )
        };
        key(a).cmp(&key(b))
    });
    let mut out = String::from(HEADER);
    out.push('\n');
    let opt = |t: &Option<String>| t.clone().unwrap_or_default();
    for r in &rows {
        let exchange = if r.instrument.is_empty() {
            String::new()
        } else {
            crate::domain::Segment::of(&r.instrument)
                .exchange()
                .to_owned()
        };
        let fields = [
            iso_ms(r.exchange_time),
            r.recorded_at.map(iso_ms).unwrap_or_default(),
            opt(&r.coid),
            opt(&r.parent),
            opt(&r.slice),
            r.account.clone(),
            opt(&r.algo_id),
            exchange,
            r.instrument.clone(),
            r.side.clone(),
            opt(&r.qty),
            opt(&r.state),
            opt(&r.filled),
            r.average.map(|p| p.to_string()).unwrap_or_default(),
            opt(&r.broker_id),
            opt(&r.signal_id),
            r.signal_time.map(iso_ms).unwrap_or_default(),
            r.pipeline.clone(),
            opt(&r.plugin),
            opt(&r.version),
            opt(&r.sha256),
            r.decision.clone(),
            r.rule.clone(),
            r.detail.clone(),
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f).into_owned()).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    Ok((out, rows.len()))
}
