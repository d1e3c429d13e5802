//! The broker is the truth for positions. When a live account's journal holds more than
//! its broker does (the broker squared an intraday position off itself while the host was
//! down, a stop filled unseen), the journal is brought down to the broker's position before
//! anything else is placed for that instrument: otherwise the morning's "carried" close
//! would be a fresh order on a flat account. The adjustment is an order of its own
//! (pipeline `reconcile`), filled in the journal at the last price the host knows (else the
//! position's average cost, no P&L), and an alert says what was done and that the broker's
//! own fill price is for the trader to check. A broker holding *more* than the journal (a
//! trade made by hand) is only reported: the host does not adopt positions it did not open.

use super::*;

/// The `pipeline` of a journal adjustment toward the broker's position.
pub const RECONCILE: &str = "reconcile";

impl OrderManager {
    /// Bring `account`'s journal position in `instrument` down to `broker` units (what the
    /// broker holds), where the journal holds more on the same side or the broker is flat.
    /// Returns the order messages and the alert; nothing when there is nothing to reduce.
    ///
    /// # Errors
    /// A journal failure: nothing is then recorded.
    pub fn resolve_to_broker(
        &mut self,
        account: &str,
        instrument: &str,
        broker: Decimal,
    ) -> Result<Vec<Outcome>, OrderError> {
        let path = self.path.clone();
        let jerr = |source| OrderError::Journal {
            path: path.clone(),
            source,
        };
        let tx = self.db.transaction().map_err(jerr)?;
        let held: Option<(String, String)> = tx
            .row(
                "SELECT qty, avg_price FROM positions WHERE account = ?1 AND instrument = ?2",
                [account, instrument],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(jerr)?;
        let Some((qty, avg)) = held else {
            return Ok(Vec::new());
        };
        let journal = dec(&qty).map_err(jerr)?;
        // Only a reduction toward the broker: same side and smaller, or flat.
        let reducible = !journal.is_zero()
            && (broker.is_zero()
                || (broker.is_sign_positive() == journal.is_sign_positive()
                    && broker.abs() < journal.abs()));
        if !reducible {
            return Ok(Vec::new());
        }
        let Some(units) = journal.checked_sub(broker).map(|d| d.abs()) else {
            return Ok(Vec::new());
        };
        let side = if journal > Decimal::ZERO {
            OrderSide::Sell
        } else {
            OrderSide::Buy
        };
        let (price, priced_by) = match self.last.get(instrument) {
            Some((_, p)) => (*p, "the last price the host saw"),
            None => (
                dec(&avg).map_err(jerr)?,
                "the position's average cost (no P&L)",
            ),
        };
        let n: i64 = tx
            .row(
                "SELECT COUNT(*) FROM orders WHERE account = ?1 AND instrument = ?2 AND pipeline = ?3",
                [account, instrument, RECONCILE],
                |r| r.get(0),
            )
            .map_err(jerr)?;
        let key = format!("reconcile/{account}/{instrument}/{}", n + 1);
        let coid = client_order_id(&key, account);
        let ts = now_ms();
        tx.exec(
            "INSERT INTO orders (client_order_id, signal_id, account, pipeline, instrument, side, qty, state, not_before, slippage_bps, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?8, ?4, ?5, ?6, 'accepted', ?7, '0', ?7, ?7)",
            params![coid, key, account, instrument, side.as_str(), units.to_string(), ts, RECONCILE],
        )
        .map_err(jerr)?;
        if let Err(refused) = record_fill(
            &tx,
            &coid,
            account,
            instrument,
            side,
            units,
            price,
            ts,
            state::OrderEvent::Fill,
        )
        .map_err(jerr)?
        {
            return Ok(vec![Outcome::Event(Event::OrderTransitionRefused {
                client_order_id: coid,
                reason: refused.to_string(),
            })]);
        }
        journal::commit(tx).map_err(jerr)?;
        let mut out = vec![Outcome::Order(self.order_message(
            &coid,
            "filled",
            json!({ "price": price.to_string(), "reason": RECONCILE }),
        )?)];
        out.push(Outcome::Event(Event::PositionResolved {
            account: account.to_owned(),
            instrument: instrument.to_owned(),
            journal: journal.to_string(),
            broker_qty: broker.to_string(),
            client_order_id: coid,
            price: price.to_string(),
            detail: format!(
                "the broker holds less than the journal did (squared off by the broker, or a fill the host missed): the journal now holds what the broker does, {units} {} booked at {priced_by}; check the broker's own price in its contract note",
                side.as_str()
            ),
        }));
        Ok(out)
    }
}
