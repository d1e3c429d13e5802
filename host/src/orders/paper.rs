//! The paper venue: the open paper orders of an instrument filled at the first price after
//! their signal (slippage and the 0.05 tick by `fill_price`), each recorded as a fill of the
//! order's state machine. The order manager calls it for every price message, in the
//! transaction that applies the price.

use super::*;

/// Fills made (each order's id and its fill event) and fills the state machine refused.
type PaperFills = (Vec<(String, Value)>, Vec<Outcome>);

/// Fill the paper book's open orders in `quote`'s instrument decided before `ts`: each at the
/// first price after its signal (not always this message: one instrument's prices can come
/// from pipelines running at different paces). Returns the fills made (order, price and time)
/// and the fills the state machine refused (reported, never applied).
pub(super) fn fill_open_orders(tx: &rusqlite::Transaction<'_>, recent: &Recent, quote: &crate::bus::message::Quote, ts: i64) -> rusqlite::Result<PaperFills> {
    let open: Vec<(String, String, String, String, String, i64)> = {
        let mut stmt = tx.prepare_cached(
            "SELECT p.client_order_id, p.account, p.side, p.qty, o.slippage_bps, p.not_before FROM paper_book p JOIN orders o USING (client_order_id)
             WHERE p.state = 'open' AND p.instrument = ?1 AND p.not_before < ?2 ORDER BY p.rowid",
        )?;
        stmt.query_map(params![quote.instrument, ts], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))?.collect::<rusqlite::Result<Vec<_>>>()?
    };
    let (mut filled, mut refusals) = (Vec::new(), Vec::new());
    for (coid, account, side, qty, slippage, not_before) in open {
        let side = side_of(&side)?;
        let (at, open) = first_price_after(recent, &quote.instrument, not_before).unwrap_or((ts, quote.open));
        let price = fill_price(side, open, dec(&slippage)?);
        match record_fill(tx, &coid, &account, &quote.instrument, side, dec(&qty)?, price, at, state::OrderEvent::Fill)? {
            Ok(()) => filled.push((coid, json!({ "price": price.to_string(), "fill_ts": at }))),
            Err(refused) => {
                tracing::error!("order {coid}: fill refused: {refused}");
                refusals.push(Outcome::Event(Event::OrderTransitionRefused { client_order_id: coid.clone(), reason: refused.to_string() }));
            }
        }
    }
    Ok((filled, refusals))
}

/// The first known price of `instrument` later than `ts`.
pub(super) fn first_price_after(recent: &Recent, instrument: &str, ts: i64) -> Option<(i64, Decimal)> {
    let prices = recent.get(instrument)?;
    prices.get(prices.partition_point(|(t, _)| *t <= ts)).copied()
}
