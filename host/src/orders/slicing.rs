//! Recording an order, sliced when the exchange would freeze it: an F&O order
//! above its underlying's freeze quantity (`[market] contracts`) is journaled as
//! child orders of whole lots no larger than it, each with its own client order
//! id derived from the parent's (so a restart or a repeat records the same
//! children once), `parent` naming the parent and `slice` its place (`2/3`). The
//! k-th child is due k ÷ the account's order rate seconds after the parent's
//! time, so the children go out paced under the limit (the live router paces
//! its placements by the same rate). Each child fills, or not, on its own: the
//! position, and so the exits and the square-off, follow what filled.

use super::*;

/// An order to record.
pub(super) struct NewOrder<'a> {
    /// Its client order id (a parent's when sliced).
    pub coid: &'a str,
    /// The signal (or key) it comes from.
    pub signal_id: &'a str,
    pub account: &'a str,
    /// The pipeline, or the reason of a close the host makes itself.
    pub pipeline: &'a str,
    pub instrument: &'a str,
    pub side: OrderSide,
    pub qty: Decimal,
    /// Its exchange time: not filled before it.
    pub not_before: i64,
    pub slippage: Decimal,
    pub stop_loss: Option<Decimal>,
    pub target: Option<Decimal>,
    /// Whether it opens or adds to a position.
    pub opens: bool,
    /// How it is priced (on the tick already).
    pub kind: crate::domain::order::OrderKind,
    /// How long it works.
    pub validity: crate::domain::order::Validity,
    /// Its place in a run of orders paced together at the account's order rate (a
    /// basket's legs and their slices): 0 for an order of its own.
    pub pace_from: usize,
}

/// The `slice` of an order the broker slices itself (Kite's `autoslice`).
pub const AUTOSLICE: &str = "auto";

/// The client order id of the `i`-th (1-based) slice of `parent`.
#[must_use]
pub fn slice_id(parent: &str, i: usize) -> String {
    client_order_id(&format!("{parent}#{i}"), "slice")
}

/// The quantities `o` goes out as under `config`'s contract rules: one, or the slices.
fn slices_of(config: &Config, o: &NewOrder<'_>) -> (Vec<Decimal>, Option<u64>) {
    let rules = &config.market.contract_rules;
    let Some(freeze) = rules.freeze_qty(o.instrument) else {
        return (vec![o.qty], None);
    };
    // Only a whole, representable quantity is sliced (the exchange takes nothing else).
    let Some(qty) = o
        .qty
        .fract()
        .is_zero()
        .then(|| u64::try_from(o.qty).ok())
        .flatten()
    else {
        return (vec![o.qty], None);
    };
    // No lot known: slices of the freeze quantity (whole lots are then the broker's check).
    let lot = config.account(o.account).map_or_else(
        || rules.lot_size_at(o.instrument, o.not_before),
        |a| a.lot_of(rules, o.instrument, o.not_before),
    );
    let parts = rules.slices(o.instrument, qty, lot);
    (parts.into_iter().map(Decimal::from).collect(), Some(freeze))
}

/// Record `o` (its slices, above the freeze quantity; `config` `None`: never sliced,
/// for closes no larger than a leg already within it). Returns whether it is new,
/// and the event of a slicing.
pub(super) fn record_order(
    tx: &rusqlite::Transaction<'_>,
    config: Option<&Config>,
    o: &NewOrder<'_>,
) -> rusqlite::Result<(bool, Option<Outcome>)> {
    let (parts, freeze) = config.map_or_else(|| (vec![o.qty], None), |c| slices_of(c, o));
    // The account lets Kite slice: one order, marked for the broker to split.
    let auto = parts.len() > 1
        && config
            .and_then(|c| c.account(o.account))
            .is_some_and(|a| a.autoslice);
    let parts = if auto { vec![o.qty] } else { parts };
    let now = now_ms();
    let text = |d: Option<Decimal>| d.map(|v| v.to_string());
    let insert = |coid: &str,
                  qty: Decimal,
                  not_before: i64,
                  parent: Option<&str>,
                  slice: Option<String>| {
        tx.exec(
            "INSERT OR IGNORE INTO orders (client_order_id, signal_id, account, pipeline, instrument, side, qty, state, not_before, slippage_bps, created_at, updated_at,
                 stop_loss, target, opens, algo_id, parent, slice, order_type, limit_price, trigger_price, validity)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'new', ?8, ?9, ?10, ?10, ?11, ?12, ?13, (SELECT value FROM settings WHERE key = 'algo/' || ?3), ?14, ?15, ?16, ?17, ?18, ?19)",
            params![
                coid, o.signal_id, o.account, o.pipeline, o.instrument, o.side.as_str(), qty.to_string(), not_before, o.slippage.to_string(), now, text(o.stop_loss),
                text(o.target), o.opens, parent, slice, (o.kind != crate::domain::order::OrderKind::Market).then(|| o.kind.code()), text(o.kind.price()),
                text(o.kind.trigger()), (o.validity != crate::domain::order::Validity::Day).then(|| o.validity.code())
            ],
        )
    };
    let per_sec = config
        .and_then(|c| c.account(o.account))
        .map_or(10, |a| a.risk.max_orders_per_sec.max(1));
    let per_sec = i64::try_from(per_sec).unwrap_or(i64::MAX);
    // The k-th order of a paced run is due k ÷ the order rate seconds after the first.
    let due = |k: usize| {
        let step = i64::try_from(o.pace_from.saturating_add(k)).unwrap_or(i64::MAX) / per_sec;
        o.not_before.saturating_add(step.saturating_mul(1000))
    };
    if parts.len() <= 1 {
        return Ok((
            insert(
                o.coid,
                o.qty,
                due(0),
                None,
                auto.then(|| AUTOSLICE.to_owned()),
            )? == 1,
            None,
        ));
    }
    let n = parts.len();
    let mut new = false;
    for (k, qty) in parts.into_iter().enumerate() {
        new |= insert(
            &slice_id(o.coid, k + 1),
            qty,
            due(k),
            Some(o.coid),
            Some(format!("{}/{n}", k + 1)),
        )? == 1;
    }
    let event = new.then(|| {
        Outcome::Event(Event::OrderSliced {
            client_order_id: o.coid.to_owned(),
            account: o.account.to_owned(),
            instrument: o.instrument.to_owned(),
            qty: o.qty.to_string(),
            slices: n,
            freeze_qty: freeze.unwrap_or_default(),
        })
    });
    Ok((new, event))
}
