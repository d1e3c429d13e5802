//! An order that acts on an entry the broker has not settled waits for it.
//!
//! A live market order the broker accepted is counted as a position to come, so a
//! strategy's next signal is sized against it. The broker may still refuse it
//! (an RMS rejection after acceptance) or fill only part of it. A sell sized to
//! close a long that never opened would then open a short the account may not
//! hold. So a strategy's order on the other side of an earlier, still working
//! market order of the same account and instrument is held (`settles_after`
//! names that order) until the broker settles it, and then goes for what takes the
//! account to the position it was decided for: less whatever the earlier order
//! did not fill. Nothing left is a cancel with the reason.
//!
//! Only an order of its own waits, for an order of its own: the slices of an order
//! above the freeze quantity, a basket's legs, the host's closes (sized from what is
//! held) and protective stops go as before.

use super::*;

/// What a held order may do now.
pub(super) enum Settled {
    /// Wait: an earlier order on the other side still works.
    Wait,
    /// Go for this many.
    Go(Decimal),
    /// Nothing is left to do; the reason.
    Nothing(String),
}

/// Whether the live order `coid` (of `qty`, a strategy's or a trader's) may go now.
pub(super) fn settle_first(
    tx: &rusqlite::Transaction<'_>,
    coid: &str,
    account: &str,
    instrument: &str,
    side: OrderSide,
    qty: Decimal,
) -> rusqlite::Result<Settled> {
    let mut qty = qty;
    let waited: Option<String> = tx
        .row(
            "SELECT settles_after FROM orders WHERE client_order_id = ?1",
            [coid],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    if let Some(earlier) = waited {
        let (state, ordered, filled): (String, String, Option<String>) = tx.row(
            "SELECT state, qty, filled_qty FROM orders WHERE client_order_id = ?1",
            [earlier.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let settled = state::OrderState::parse(&state)
            .ok_or_else(|| journal::corrupt(&format!("state of order {earlier}"), &state))?
            .is_final();
        if !settled {
            return Ok(Settled::Wait);
        }
        let filled = opt_dec(filled.as_deref())?.unwrap_or_default();
        let unfilled = (dec(&ordered)? - filled).max(Decimal::ZERO);
        // The position this order was decided for counted all of `earlier`; what it did not
        // fill is not there to act on.
        qty = qty.checked_sub(unfilled).unwrap_or(Decimal::ZERO);
        tx.exec(
            "UPDATE orders SET settles_after = NULL, qty = ?2 WHERE client_order_id = ?1",
            params![coid, qty.max(Decimal::ZERO).to_string()],
        )?;
        if qty <= Decimal::ZERO {
            return Ok(Settled::Nothing(format!(
                "{coid}: nothing left to {} in {instrument}: the order it was sized against, {earlier}, ended {state} with {filled} of {ordered} filled",
                side.as_str()
            )));
        }
    }
    let rowid: i64 = tx.row(
        "SELECT rowid FROM orders WHERE client_order_id = ?1",
        [coid],
        |r| r.get(0),
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
    Ok(match earlier {
        Some(earlier) => {
            tx.exec(
                "UPDATE orders SET settles_after = ?2 WHERE client_order_id = ?1",
                [coid, earlier.as_str()],
            )?;
            Settled::Wait
        }
        None => Settled::Go(qty),
    })
}
