//! Stops that survive the host. When a live position has a stop, a protective
//! order rests at the broker at that stop (SL-M): if the host dies, the stop still
//! stands; for a delivery (CNC) position it is a GTT (Kite, Upstox, OpenAlgo), which outlives the
//! session (an SL-M is a day order). As the managed exit's stop tightens (a trailing stop), the protective
//! order is modified to follow it, throttled, never loosened; its quantity follows
//! the position (slices filling one by one). When the host closes the position
//! itself (a target, a square-off, a flatten, its own stop), it cancels the
//! protective order first and sends its close only once the broker has said what
//! became of it: cancelled (the close goes, for what is still held) or filled (the
//! position is gone, and the close with it). Everything is journaled first, so a
//! restart finds the protective order (by its client order id in the broker's
//! book) instead of placing a second one.

use super::*;
use crate::brokers::OrderKind;
use crate::brokers::live::{LiveCancel, LiveModify};

/// The `pipeline` of a protective stop order.
pub const PROTECTIVE: &str = "protective-stop";

/// Whether a broker keeps good-till-triggered stops the host can place (each adapter's GTT).
fn gtt_broker(broker: &str) -> bool {
    matches!(broker, "kite" | "upstox" | "openalgo")
}

/// Least exchange time between two modifications of one protective order.
const MODIFY_EVERY_MS: i64 = 2_000;

/// A protective order still working (or recorded and not yet sent).
struct Resting {
    coid: String,
    /// `buy` or `sell`: the side that closes the position it protects.
    side: String,
    qty: Decimal,
    trigger: Decimal,
    modified_at: Option<i64>,
    state: String,
}

fn resting(
    tx: &rusqlite::Transaction<'_>,
    account: &str,
    instrument: &str,
) -> rusqlite::Result<Option<Resting>> {
    type Row = (String, String, Option<String>, Option<i64>, String, String);
    let row: Option<Row> = tx
        .row(
            "SELECT client_order_id, qty, trigger_price, modified_at, state, side FROM orders WHERE account = ?1 AND instrument = ?2 AND pipeline = 'protective-stop'
             AND state IN ('new', 'submitted', 'accepted', 'triggered', 'partially_filled', 'pending_cancel') ORDER BY rowid DESC LIMIT 1",
            [account, instrument],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
        )
        .optional()?;
    row.map(|(coid, qty, trigger, modified_at, state, side)| {
        Ok(Resting {
            qty: dec(&qty)?,
            trigger: opt_dec(trigger.as_deref())?.unwrap_or_default(),
            coid,
            side,
            modified_at,
            state,
        })
    })
    .transpose()
}

/// Keep every live position's protective stop in line with its managed exit: record
/// one where a position with a stop has none, tighten (and resize) one whose exit
/// moved, at most every [`MODIFY_EVERY_MS`] of exchange time. `now` is the market's time.
#[allow(clippy::too_many_arguments)]
pub(super) fn protect(
    tx: &rusqlite::Transaction<'_>,
    config: &Config,
    live: &std::collections::HashSet<String>,
    now: i64,
    modifies: &mut Vec<LiveModify>,
    asked: &mut std::collections::HashSet<String>,
    cancels: &mut Vec<LiveCancel>,
) -> rusqlite::Result<Vec<Outcome>> {
    let mut out = Vec::new();
    if live.is_empty() {
        return Ok(out);
    }
    // A protective stop with nothing left to protect (the position closed some other
    // way) must not rest: triggered, it would open a position.
    let orphans: Vec<(String, String, String, String)> = {
        let mut stmt = tx.prepare_cached(
            "SELECT o.client_order_id, o.account, o.instrument, o.side FROM orders o WHERE o.pipeline = 'protective-stop' AND o.state IN ('new', 'submitted', 'accepted', 'triggered', 'partially_filled')",
        )?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?
    };
    for (coid, account, instrument, side) in orphans {
        let held: Option<String> = tx
            .row(
                "SELECT qty FROM positions WHERE account = ?1 AND instrument = ?2",
                [&account, &instrument],
                |r| r.get(0),
            )
            .optional()?;
        let held = opt_dec(held.as_deref())?.unwrap_or_default();
        let protects = if side == "sell" {
            held > Decimal::ZERO
        } else {
            held < Decimal::ZERO
        };
        if protects {
            continue;
        }
        let state: String = tx.row(
            "SELECT state FROM orders WHERE client_order_id = ?1",
            [&coid],
            |r| r.get(0),
        )?;
        if state == "new" {
            let _ = advance(tx, &coid, state::OrderEvent::Cancel)?;
        } else if asked.insert(coid.clone()) {
            cancels.push(LiveCancel {
                account,
                client_order_id: coid,
                reason: "its position is closed".into(),
            });
        }
    }
    type Row = (String, String, bool, Option<String>, bool, String);
    let rows: Vec<Row> = {
        let mut stmt = tx.prepare_cached(
            "SELECT e.account, e.instrument, e.long, e.stop, e.triggered, p.qty FROM exits e
             JOIN positions p ON p.account = e.account AND p.instrument = e.instrument WHERE p.qty != '0' ORDER BY e.account, e.instrument",
        )?;
        stmt.query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?
    };
    for (account, instrument, long, stop, triggered, qty) in rows {
        let Some(stop) = opt_dec(stop.as_deref())? else {
            continue;
        };
        if triggered
            || !live.contains(&account)
            || !config
                .account(&account)
                .is_some_and(|a| a.exits.broker_stop)
        {
            continue;
        }
        let held = dec(&qty)?;
        let want = held.abs();
        let side = if long {
            OrderSide::Sell
        } else {
            OrderSide::Buy
        };
        // The host is closing (or reversing) the position itself: nothing new rests against it.
        let closing: i64 = tx.row(
            "SELECT COUNT(*) FROM orders WHERE account = ?1 AND instrument = ?2 AND pipeline != 'protective-stop' AND side = ?3
             AND state IN ('new', 'submitted', 'accepted', 'triggered', 'partially_filled', 'pending_cancel')",
            [&account, &instrument, &side.as_str().to_owned()],
            |r| r.get(0),
        )?;
        if closing > 0 {
            continue;
        }
        match resting(tx, &account, &instrument)? {
            None => {
                let n: i64 = tx.row("SELECT COUNT(*) FROM orders WHERE account = ?1 AND instrument = ?2 AND pipeline = 'protective-stop'", [&account, &instrument], |r| r.get(0))?;
                let key = format!("protect/{account}/{instrument}/{}", n + 1);
                let coid = client_order_id(&key, &account);
                // A delivery position's stop must outlive the session: a GTT where the broker has one.
                let validity = config
                    .account(&account)
                    .is_some_and(|a| {
                        a.product == crate::domain::Product::Cnc && gtt_broker(a.broker.get_ref())
                    })
                    .then_some("GTT");
                tx.exec(
                    "INSERT OR IGNORE INTO orders (client_order_id, signal_id, account, pipeline, instrument, side, qty, state, not_before, slippage_bps, created_at, updated_at,
                         algo_id, order_type, trigger_price, modified_at, validity)
                     VALUES (?1, ?2, ?3, 'protective-stop', ?4, ?5, ?6, 'new', ?7, '0', ?8, ?8, (SELECT value FROM settings WHERE key = 'algo/' || ?3), 'SL-M', ?9, NULL, ?10)",
                    params![coid, key, account, instrument, side.as_str(), want.to_string(), now, now_ms(), stop.to_string(), validity],
                )?;
                out.push(Outcome::Event(Event::ProtectiveStop {
                    account: account.clone(),
                    instrument: instrument.clone(),
                    client_order_id: coid,
                    trigger: stop.to_string(),
                    qty: want.to_string(),
                    action: "placed".into(),
                }));
            }
            Some(r) if r.state == "pending_cancel" => {}
            Some(r) => {
                // Never loosened: a long's stop only rises, a short's only falls.
                let tighter = if long {
                    stop > r.trigger
                } else {
                    stop < r.trigger
                };
                let resized = want != r.qty;
                let due = r
                    .modified_at
                    .is_none_or(|at| now.saturating_sub(at) >= MODIFY_EVERY_MS);
                if !(tighter || resized) || !due {
                    continue;
                }
                let trigger = if tighter { stop } else { r.trigger };
                tx.exec("UPDATE orders SET trigger_price = ?2, qty = ?3, modified_at = ?4, updated_at = ?5 WHERE client_order_id = ?1", params![r.coid, trigger.to_string(), want.to_string(), now, now_ms()])?;
                if r.state != "new" {
                    modifies.push(LiveModify {
                        account: account.clone(),
                        client_order_id: r.coid.clone(),
                        kind: OrderKind::StopMarket { trigger },
                        qty: want,
                    });
                }
                out.push(Outcome::Event(Event::ProtectiveStop {
                    account: account.clone(),
                    instrument: instrument.clone(),
                    client_order_id: r.coid,
                    trigger: trigger.to_string(),
                    qty: want.to_string(),
                    action: "moved".into(),
                }));
            }
        }
    }
    Ok(out)
}

/// Whether the live close `coid` of `account` in `instrument` may go to the broker
/// now: not while a protective order rests there (its cancel is asked for, once),
/// and only for what is still held (a strategy's exit or reversal: less what the stop
/// filled while it waited). `Ok(None)`: hold it; `Ok(Some(qty))`: send that many; an
/// order with nothing left to close is refused (the protective stop filled).
#[allow(clippy::too_many_arguments)]
pub(super) fn release_close(
    tx: &rusqlite::Transaction<'_>,
    coid: &str,
    account: &str,
    instrument: &str,
    side: OrderSide,
    qty: Decimal,
    close: bool,
    asked: &mut std::collections::HashSet<String>,
    cancels: &mut Vec<LiveCancel>,
) -> rusqlite::Result<Result<Option<Decimal>, String>> {
    let resting = resting(tx, account, instrument)?;
    // Only an order on the protective stop's side (one that reduces the position) waits.
    if resting.as_ref().is_some_and(|r| r.side != side.as_str()) {
        return Ok(Ok(Some(qty)));
    }
    if resting.is_none() && !close {
        return less_what_the_stop_filled(tx, coid, instrument, side, qty);
    }
    if let Some(r) = resting {
        if r.state == "new" {
            // Never sent: nothing to ask the broker.
            let _ = advance(tx, &r.coid, state::OrderEvent::Cancel)?;
        } else {
            if r.state != "pending_cancel" && asked.insert(r.coid.clone()) {
                cancels.push(LiveCancel {
                    account: account.to_owned(),
                    client_order_id: r.coid.clone(),
                    reason: "the host closes the position itself".into(),
                });
            }
            tx.exec(
                "UPDATE orders SET waits_for = ?2 WHERE client_order_id = ?1",
                [coid, r.coid.as_str()],
            )?;
            return Ok(Ok(None));
        }
    }
    if !close {
        return less_what_the_stop_filled(tx, coid, instrument, side, qty);
    }
    let held: Option<String> = tx
        .row(
            "SELECT qty FROM positions WHERE account = ?1 AND instrument = ?2",
            [account, instrument],
            |r| r.get(0),
        )
        .optional()?;
    let held = opt_dec(held.as_deref())?.unwrap_or_default();
    // What a close in `side` can still close: the position on the other side.
    let closable = if (side == OrderSide::Sell && held > Decimal::ZERO)
        || (side == OrderSide::Buy && held < Decimal::ZERO)
    {
        held.abs()
    } else {
        Decimal::ZERO
    };
    if closable.is_zero() {
        return Ok(Err(format!(
            "{coid}: nothing left to close in {instrument} (its protective stop filled)"
        )));
    }
    Ok(Ok(Some(qty.min(closable))))
}

/// A strategy's exit or reversal goes once the stop is out of the way, less what the
/// stop it waited on filled meanwhile: an exit of a position the stop closed sells
/// nothing, a reversal only opens the new side.
fn less_what_the_stop_filled(
    tx: &rusqlite::Transaction<'_>,
    coid: &str,
    instrument: &str,
    side: OrderSide,
    qty: Decimal,
) -> rusqlite::Result<Result<Option<Decimal>, String>> {
    let waited: Option<String> = tx
        .row(
            "SELECT waits_for FROM orders WHERE client_order_id = ?1",
            [coid],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    let Some(stop) = waited else {
        return Ok(Ok(Some(qty)));
    };
    let mut stmt = tx.prepare_cached("SELECT qty FROM fills WHERE client_order_id = ?1")?;
    let fills = stmt
        .query_map([stop.as_str()], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut filled = Decimal::ZERO;
    for f in fills {
        filled = filled.checked_add(dec(&f)?).unwrap_or(Decimal::MAX);
    }
    Ok(match qty.checked_sub(filled) {
        Some(left) if left > Decimal::ZERO => Ok(Some(left)),
        _ => Err(format!(
            "{coid}: nothing left to {} in {instrument}: its protective stop {stop} filled {filled} while the order waited",
            side.as_str()
        )),
    })
}

impl OrderManager {
    /// The modifications of working orders since the last call, for the router.
    pub fn take_live_modifies(&mut self) -> Vec<LiveModify> {
        std::mem::take(&mut self.modifies)
    }
}
