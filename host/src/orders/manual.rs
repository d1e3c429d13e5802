//! A trader's hand on a working order: `cancel` and `modify` commands. The same
//! state machine and journal as everything else: on paper the venue applies them at
//! once; for a live account the cancel or the new terms go to the router, and the
//! journal follows what the broker then reports.

use super::*;
use crate::brokers::OrderKind;
use crate::brokers::live::{LiveCancel, LiveModify};

/// A working order as a command finds it.
struct Working {
    account: String,
    instrument: String,
    state: String,
    side: OrderSide,
    qty: Decimal,
    kind: OrderKind,
}

/// `account, instrument, state, pipeline, side, qty` and the order type's columns.
type WorkingRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    (Option<String>, Option<String>, Option<String>),
);

fn working(
    tx: &rusqlite::Transaction<'_>,
    coid: &str,
) -> rusqlite::Result<Result<Working, String>> {
    let row: Option<WorkingRow> = tx
        .row(
            "SELECT account, instrument, state, pipeline, side, qty, order_type, limit_price, trigger_price FROM orders WHERE client_order_id = ?1",
            [coid],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, (r.get(6)?, r.get(7)?, r.get(8)?))),
        )
        .optional()?;
    let Some((account, instrument, state, pipeline, side, qty, kind)) = row else {
        return Ok(Err(format!("no order {coid:?} in the journal")));
    };
    if state::OrderState::parse(&state).is_none_or(state::OrderState::is_final) {
        return Ok(Err(format!(
            "order {coid} is {state}: nothing works to change"
        )));
    }
    if pipeline == protect::PROTECTIVE {
        return Ok(Err(format!(
            "order {coid} is a protective stop: it follows its position's exits (flatten the position, or change its stop)"
        )));
    }
    Ok(Ok(Working {
        account,
        instrument,
        state,
        side: side_of(&side)?,
        qty: dec(&qty)?,
        kind: order_kind(coid, &kind)?,
    }))
}

/// Cancel the working order `coid` (in `state`) of `account`: a live one sent to its broker
/// by asking the router (once; the journal follows the broker's report), one on paper or not
/// yet sent withdrawn here, its entry's cooldown given back. Returns the states it passed.
#[allow(clippy::too_many_arguments)]
pub(super) fn cancel_working(
    tx: &rusqlite::Transaction<'_>,
    coid: &str,
    account: &str,
    state: &str,
    reason: &str,
    live: &std::collections::HashSet<String>,
    asked: &mut std::collections::HashSet<String>,
    cancels: &mut Vec<LiveCancel>,
) -> rusqlite::Result<Vec<&'static str>> {
    if live.contains(account) && state != "new" {
        if state != "pending_cancel" && asked.insert(coid.to_owned()) {
            cancels.push(LiveCancel {
                account: account.to_owned(),
                client_order_id: coid.to_owned(),
                reason: reason.to_owned(),
            });
        }
        return Ok(Vec::new());
    }
    let passed = journal::withdraw(tx, coid, state != "new")?;
    // A close opened nothing: `restore_cooldown` leaves it alone.
    restore_cooldown(tx, coid)?;
    Ok(passed)
}

impl OrderManager {
    /// Cancel a working order (`command` names who asked). The inner error is why it
    /// cannot be (unknown, already final, a protective stop).
    ///
    /// # Errors
    /// A journal failure.
    pub fn cancel_order(
        &mut self,
        coid: &str,
        command: &str,
    ) -> Result<Result<Vec<Outcome>, String>, OrderError> {
        let path = self.path.clone();
        let jerr = |source| OrderError::Journal {
            path: path.clone(),
            source,
        };
        let tx = self.db.transaction().map_err(jerr)?;
        let o = match working(&tx, coid).map_err(jerr)? {
            Ok(o) => o,
            Err(why) => return Ok(Err(why)),
        };
        let reason = format!("cancelled by command {command}");
        let passed = cancel_working(
            &tx,
            coid,
            &o.account,
            &o.state,
            &reason,
            &self.live,
            &mut self.cancel_asked,
            &mut self.cancels,
        )
        .map_err(jerr)?;
        // A basket leg's order (or a slice of it): its basket learns who cancelled it.
        tx.exec(
            "UPDATE basket_legs SET cancelled_by = ?2 WHERE client_order_id IN (?1, (SELECT parent FROM orders WHERE client_order_id = ?1))",
            params![coid, command],
        )
        .map_err(jerr)?;
        journal::commit(tx).map_err(jerr)?;
        let mut out = Vec::new();
        for state in passed {
            out.push(Outcome::Order(self.order_message(
                coid,
                state,
                json!({ "reason": reason }),
            )?));
        }
        Ok(Ok(out))
    }

    /// New prices for a working limit or stop order: `price` its limit, `trigger` its
    /// trigger (each on the tick, never worse than asked). A market order has nothing to move.
    ///
    /// # Errors
    /// A journal failure.
    pub fn modify_order(
        &mut self,
        coid: &str,
        price: Option<Decimal>,
        trigger: Option<Decimal>,
        command: &str,
    ) -> Result<Result<Vec<Outcome>, String>, OrderError> {
        if price.is_none() && trigger.is_none() {
            return Ok(Err("modify needs \"price\" or \"trigger\"".into()));
        }
        if let Some(bad) = [price, trigger]
            .into_iter()
            .flatten()
            .find(|p| *p <= Decimal::ZERO)
        {
            return Ok(Err(format!("{bad} is not a price above zero")));
        }
        let path = self.path.clone();
        let jerr = |source| OrderError::Journal {
            path: path.clone(),
            source,
        };
        let tx = self.db.transaction().map_err(jerr)?;
        let o = match working(&tx, coid).map_err(jerr)? {
            Ok(o) => o,
            Err(why) => return Ok(Err(why)),
        };
        let kind = match o.kind {
            OrderKind::Market => {
                return Ok(Err(format!(
                    "order {coid} is a market order: it has no price to move"
                )));
            }
            OrderKind::Limit { price: old } if trigger.is_none() => OrderKind::Limit {
                price: price.unwrap_or(old),
            },
            OrderKind::StopMarket { trigger: old } if price.is_none() => OrderKind::StopMarket {
                trigger: trigger.unwrap_or(old),
            },
            OrderKind::StopLimit {
                trigger: t,
                price: p,
            } => OrderKind::StopLimit {
                trigger: trigger.unwrap_or(t),
                price: price.unwrap_or(p),
            },
            other => {
                return Ok(Err(format!(
                    "order {coid} is {}: it has no {}",
                    other.code(),
                    if trigger.is_some() {
                        "trigger"
                    } else {
                        "limit price"
                    }
                )));
            }
        }
        .on_tick_of(o.side, crate::domain::money::tick_of(&o.instrument));
        let now = now_ms();
        let text = |d: Option<Decimal>| d.map(|v| v.to_string());
        let at_broker = self.live.contains(&o.account) && o.state != "new";
        // At a broker, the journal's terms stay the ones it holds until it takes the new ones.
        let sql = if at_broker {
            "UPDATE orders SET wanted_price = ?2, wanted_trigger = ?3, modified_at = ?4, updated_at = ?4 WHERE client_order_id = ?1"
        } else {
            "UPDATE orders SET limit_price = ?2, trigger_price = ?3, modified_at = ?4, updated_at = ?4 WHERE client_order_id = ?1"
        };
        tx.exec(
            sql,
            params![coid, text(kind.price()), text(kind.trigger()), now],
        )
        .map_err(jerr)?;
        if at_broker {
            self.modifies.push(LiveModify {
                account: o.account.clone(),
                client_order_id: coid.to_owned(),
                kind,
                qty: o.qty,
            });
        }
        journal::commit(tx).map_err(jerr)?;
        Ok(Ok(vec![Outcome::Event(Event::OrderModified {
            account: o.account,
            client_order_id: coid.to_owned(),
            order_type: kind.code().to_owned(),
            trigger: text(kind.trigger()),
            price: text(kind.price()),
            qty: o.qty.to_string(),
            by: Some(command.to_owned()),
        })]))
    }
}
