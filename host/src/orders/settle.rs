//! An order that acts on an entry the broker has not settled waits for it.
//!
//! A live market order the broker accepted is counted as a position to come, so a
//! strategy's next signal is sized against it. The broker may still refuse it
//! (an RMS rejection after acceptance) or fill only part of it. A sell sized to
//! close a long that never opened would then open a short the account may not
//! hold. So a strategy's order on the other side of an earlier, still working
//! market order of the same account and instrument is held (`settles_after`
//! names that order, `settle_target` the position it was decided to reach) until
//! the broker has settled every such order, and then goes for what still takes
//! the account to that position: never more than it was decided for, and nothing
//! (a cancel with the reason) when the position is already there.
//!
//! Only an order of its own waits, for an order of its own: the slices of an order
//! above the freeze quantity, a basket's legs, the host's closes (sized from what is
//! held) and protective stops go as before.

use super::*;

/// Whether the live order `coid` (of `qty`, a strategy's or a trader's) may go now:
/// `Ok(None)` wait (an earlier order on the other side still works), `Ok(Some(qty))` go for
/// that many, `Err(reason)` nothing is left to do.
pub(super) fn settle_first(
    tx: &rusqlite::Transaction<'_>,
    coid: &str,
    account: &str,
    instrument: &str,
    side: OrderSide,
    qty: Decimal,
) -> rusqlite::Result<Result<Option<Decimal>, String>> {
    let (rowid, waited, target): (i64, Option<String>, Option<String>) = tx.row(
        "SELECT rowid, settles_after, settle_target FROM orders WHERE client_order_id = ?1",
        [coid],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let other = match side {
        OrderSide::Buy => OrderSide::Sell,
        OrderSide::Sell => OrderSide::Buy,
    };
    let earlier: Option<String> = tx
        .row(
            "SELECT client_order_id FROM orders WHERE account = ?1 AND instrument = ?2 AND side = ?3 AND rowid < ?4
             AND pipeline NOT IN ('protective-stop', 'basket') AND slice IS NULL
             AND COALESCE(order_type, 'MARKET') = 'MARKET'
             AND state IN ('submitted', 'accepted', 'triggered', 'partially_filled', 'pending_cancel')
             ORDER BY rowid LIMIT 1",
            params![account, instrument, other.as_str(), rowid],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(earlier) = earlier {
        // The position it was decided to reach, taken when it is first held (in the
        // decision's own transaction): this order counted in full, and the earlier too.
        let target = match target {
            Some(t) => t,
            None => OrderManager::effective_position(tx, account, instrument)?.to_string(),
        };
        tx.exec(
            "UPDATE orders SET settles_after = ?2, settle_target = ?3 WHERE client_order_id = ?1",
            params![coid, earlier, target],
        )?;
        return Ok(Ok(None));
    }
    let (Some(waited), Some(target)) = (waited, target) else {
        return Ok(Ok(Some(qty)));
    };
    // Every earlier order on the other side has settled: what does it take now?
    let target = dec(&target)?;
    let now = OrderManager::effective_position_except(tx, account, instrument, &[coid.to_owned()])?;
    let wanted = match side {
        OrderSide::Buy => target - now,
        OrderSide::Sell => now - target,
    };
    let go = wanted.min(qty);
    tx.exec(
        "UPDATE orders SET settles_after = NULL, qty = ?2 WHERE client_order_id = ?1",
        params![coid, go.max(Decimal::ZERO).to_string()],
    )?;
    if go <= Decimal::ZERO {
        let (state, ordered, filled): (String, String, Option<String>) = tx.row(
            "SELECT state, qty, filled_qty FROM orders WHERE client_order_id = ?1",
            [waited.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let filled = opt_dec(filled.as_deref())?.unwrap_or_default();
        return Ok(Err(format!(
            "{coid}: nothing left to {} in {instrument}: the position is {now}, where it was decided to go ({target}); the order it was sized against, {waited}, ended {state} with {filled} of {ordered} filled",
            side.as_str()
        )));
    }
    Ok(Ok(Some(go)))
}
