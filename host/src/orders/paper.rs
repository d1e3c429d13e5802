//! The paper venue: the open paper orders of an instrument worked against the bars that
//! come after their signal, each outcome recorded through the order's state machine. The
//! order manager calls it for every price message, in the transaction that applies the price.
//!
//! The rules it fills by are the domain's ([`crate::domain::order::work`]), shared with the backtester.
//!
//! Each bar is worked once per order (`seen_ts`), so the same bar arriving from two
//! pipelines changes nothing, and a restart that replays prices does what the first run did.

use super::*;
use crate::domain::order::{Validity, Work, Working, work};

/// Fills made (each order's id and its fill event), and the other transitions (trigger,
/// expiry) and refusals.
type PaperFills = (
    Vec<(String, Value)>,
    Vec<(String, &'static str, Value)>,
    Vec<Outcome>,
);

/// A paper order as the book keeps it.
type BookRow = (
    String,
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
    bool,
    (Option<String>, Option<String>, Option<String>),
    Option<String>,
);

/// Work the paper book's open orders in `instrument` against the bars after each one's
/// signal (and after the last bar it was worked against). Returns the fills, the other
/// transitions and the fills the state machine refused (reported, never applied).
pub(super) fn work_open_orders(
    tx: &rusqlite::Transaction<'_>,
    recent: &Recent,
    instrument: &str,
    only: Option<&str>,
) -> rusqlite::Result<PaperFills> {
    let open: Vec<BookRow> = {
        let mut stmt = tx.prepare_cached(
            "SELECT p.client_order_id, p.account, p.side, p.qty, o.slippage_bps, p.not_before, p.seen_ts, p.triggered, o.order_type, o.limit_price, o.trigger_price, o.validity
             FROM paper_book p JOIN orders o USING (client_order_id)
             WHERE p.state = 'open' AND p.instrument = ?1 AND (?2 IS NULL OR p.client_order_id = ?2) ORDER BY p.rowid",
        )?;
        stmt.query_map(params![instrument, only], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                (r.get(8)?, r.get(9)?, r.get(10)?),
                r.get(11)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?
    };
    let (mut filled, mut moved, mut refusals) = (Vec::new(), Vec::new(), Vec::new());
    let Some(bars) = recent.get(instrument) else {
        return Ok((filled, moved, refusals));
    };
    for (coid, account, side, qty, slippage, not_before, seen_ts, triggered, kind, validity) in open
    {
        let validity = Validity::parse(validity.as_deref())
            .ok_or_else(|| journal::corrupt("order validity", &format!("{coid}: {validity:?}")))?;
        let mut terms = Working {
            side: side_of(&side)?,
            kind: order_kind(&coid, &kind)?,
            validity,
            slippage_bps: dec(&slippage)?,
            not_before,
            triggered,
            tick: crate::domain::money::tick_of(instrument),
        };
        let from = seen_ts.unwrap_or(not_before).max(not_before);
        let start = bars.partition_point(|b| b.ts <= from);
        let mut last_seen = None;
        for b in bars.range(start..) {
            last_seen = Some(b.ts);
            match work(&terms, b, seen_ts.is_none() && b.ts == bars[start].ts) {
                Work::Rest => {}
                Work::Trigger => {
                    terms.triggered = true;
                    tx.exec(
                        "UPDATE paper_book SET triggered = 1 WHERE client_order_id = ?1",
                        [&coid],
                    )?;
                    if let Ok(to) = advance(tx, &coid, state::OrderEvent::Trigger)? {
                        moved.push((coid.clone(), to.as_str(), json!({ "trigger_ts": b.ts })));
                    }
                }
                Work::Expire => {
                    tx.exec(
                        "UPDATE paper_book SET state = 'expired' WHERE client_order_id = ?1",
                        [&coid],
                    )?;
                    if let Ok(to) = advance(tx, &coid, state::OrderEvent::Expire)? {
                        let why = if validity == Validity::Ioc {
                            "IOC: not filled on the first price after it"
                        } else {
                            "DAY: not filled on its day"
                        };
                        moved.push((
                            coid.clone(),
                            to.as_str(),
                            json!({ "reason": why, "expired_ts": b.ts }),
                        ));
                    }
                    super::decisions::restore_cooldown(tx, &coid)?;
                    break;
                }
                Work::Fill(price) => {
                    match record_fill(
                        tx,
                        &coid,
                        &account,
                        instrument,
                        terms.side,
                        dec(&qty)?,
                        price,
                        b.ts,
                        state::OrderEvent::Fill,
                    )? {
                        Ok(()) => filled.push((
                            coid.clone(),
                            json!({ "price": price.to_string(), "fill_ts": b.ts }),
                        )),
                        Err(refused) => {
                            tracing::error!("order {coid}: fill refused: {refused}");
                            refusals.push(Outcome::Event(Event::OrderTransitionRefused {
                                client_order_id: coid.clone(),
                                reason: refused.to_string(),
                            }));
                        }
                    }
                    break;
                }
            }
        }
        if let Some(ts) = last_seen {
            tx.exec(
                "UPDATE paper_book SET seen_ts = ?2 WHERE client_order_id = ?1",
                params![coid, ts],
            )?;
        }
    }
    Ok((filled, moved, refusals))
}

/// Each instrument's previous close: the last price of the trading day before the one it
/// last traded (the reference of its daily price band), kept as prices come.
pub(super) type Closes = HashMap<String, Decimal>;

/// What the paper venue knows of `instrument` when it takes an order: its tick, lot and
/// freeze quantity, and today's circuit limits where the rules give its price band and a
/// previous close has been seen (a run's first day has none: nothing is refused for it).
pub(super) fn facts_of(
    rules: &crate::domain::contracts::ContractRules,
    closes: &Closes,
    instrument: &str,
) -> crate::domain::order::ContractFacts {
    let tick = crate::domain::money::known_tick(instrument);
    let circuit = rules.band_pct(instrument).and_then(|pct| {
        let prev = *closes.get(instrument)?;
        crate::domain::order::circuit_limits(prev, pct, tick.unwrap_or(crate::domain::money::TICK))
    });
    crate::domain::order::ContractFacts {
        tick,
        lot: rules.lot_size(instrument),
        freeze: rules.freeze_qty(instrument),
        circuit,
    }
}
