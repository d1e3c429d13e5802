//! Multi-leg baskets (a straddle, an iron condor): buy legs first, the sell
//! legs once every buy leg has filled; a leg refused by the risk checks, or
//! rejected or cancelled at the broker, stops the rest and, with `unwind`,
//! closes what filled. A leg above its contract's freeze quantity goes out as
//! slices, like any order; it is filled when every slice is.

use super::*;
use crate::domain::order::{OrderKind, Validity};

impl OrderManager {
    /// Place a multi-leg basket (a straddle, an iron condor): buy legs first;
    /// the sell legs only once every buy leg has filled. If a leg is refused,
    /// the remaining legs are not sent, a `basket_failed` alert is raised, and
    /// with `unwind` the filled legs are closed. Placing the same basket id
    /// again changes nothing.
    ///
    /// # Errors
    /// A journal failure.
    pub fn place_basket(&mut self, basket: &Basket) -> Result<Vec<Outcome>, OrderError> {
        let path = self.path.clone();
        let jerr = |source| OrderError::Journal {
            path: path.clone(),
            source,
        };
        let ts = basket
            .legs
            .iter()
            .filter_map(|l| self.last.get(&l.instrument).map(|(t, _)| *t))
            .max()
            .unwrap_or_else(now_ms);
        let tx = self.db.transaction().map_err(jerr)?;
        let mut out = place_in(&tx, &self.config, &self.last, basket, ts).map_err(jerr)?;
        let transitions = Self::submit_in(
            &tx,
            &self.recent,
            &self.live,
            &self.last,
            &self.closes,
            &self.config.market.contract_rules,
            &mut self.handoff,
            &mut self.cancel_asked,
            &mut self.cancels,
        )
        .map_err(jerr)?;
        journal::commit(tx).map_err(jerr)?;
        for (coid, state, extra) in transitions {
            out.push(Outcome::Order(self.order_message(&coid, state, extra)?));
        }
        Ok(out)
    }
}

/// Record `basket` (once per id) and send its buy legs, in `tx`. Returns events.
pub(super) fn place_in(
    tx: &rusqlite::Transaction<'_>,
    config: &Config,
    last: &HashMap<String, (i64, Decimal)>,
    basket: &Basket,
    ts: i64,
) -> rusqlite::Result<Vec<Outcome>> {
    let Some(account) = config.account(&basket.account) else {
        return Ok(vec![Outcome::Event(Event::BasketFailed {
            basket: basket.id.clone(),
            account: None,
            reason: format!("unknown account {:?}", basket.account),
            unwinding: None,
        })]);
    };
    let inserted = tx.exec("INSERT OR IGNORE INTO baskets (basket_id, account, state, unwind, ts) VALUES (?1, ?2, 'buying', ?3, ?4)", params![basket.id, basket.account, basket.unwind_on_failure, ts])?;
    let mut out = Vec::new();
    if inserted == 1 {
        for (i, leg) in basket.legs.iter().enumerate() {
            let market = leg.kind == OrderKind::Market;
            tx.exec(
                "INSERT INTO basket_legs (basket_id, idx, instrument, side, qty, state, order_type, limit_price, trigger_price, validity, stop_loss, target)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'waiting', ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    basket.id,
                    i64::try_from(i).unwrap_or(i64::MAX),
                    leg.instrument,
                    leg.side.as_str(),
                    leg.qty.to_string(),
                    (!market).then(|| leg.kind.code()),
                    leg.kind.price().map(|p| p.to_string()),
                    leg.kind.trigger().map(|p| p.to_string()),
                    (leg.validity != Validity::Day).then(|| leg.validity.code()),
                    leg.stop_loss.map(|p| p.to_string()),
                    leg.target.map(|p| p.to_string()),
                ],
            )?;
        }
        out.push(Outcome::Event(Event::BasketPlaced {
            basket: basket.id.clone(),
            account: basket.account.clone(),
            legs: basket.legs.len(),
        }));
        out.extend(send_legs(
            tx,
            config,
            last,
            account,
            &basket.id,
            OrderSide::Buy,
            ts,
        )?);
    }
    Ok(out)
}

/// One leg of a basket: an order of any kind (a manual ticket's limit or stop too).
pub type BasketLeg = crate::domain::order::Leg;

/// A multi-leg order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Basket {
    /// Stable id: placing it twice places it once.
    pub id: String,
    /// Account.
    pub account: String,
    /// Legs, in any order: buys go first.
    pub legs: Vec<BasketLeg>,
    /// Close the filled legs if a leg fails.
    pub unwind_on_failure: bool,
}

/// The orders a leg `l` went out as: its own, or its slices.
const LEG_ORDERS: &str = "(o.client_order_id = l.client_order_id OR o.parent = l.client_order_id)";

/// Send the `side` legs of a basket (each through the risk checks, sliced above its
/// freeze quantity); a refused leg fails the basket. Returns events.
pub(super) fn send_legs(
    tx: &rusqlite::Transaction<'_>,
    config: &Config,
    last: &HashMap<String, (i64, Decimal)>,
    account: &crate::config::Account,
    basket_id: &str,
    side: OrderSide,
    ts: i64,
) -> rusqlite::Result<Vec<Outcome>> {
    type Row = (
        i64,
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let legs: Vec<Row> = {
        let mut stmt = tx.prepare_cached(
            "SELECT idx, instrument, qty, order_type, limit_price, trigger_price, validity, stop_loss, target FROM basket_legs
             WHERE basket_id = ?1 AND side = ?2 AND state = 'waiting' ORDER BY idx",
        )?;
        stmt.query_map(params![basket_id, side.as_str()], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?
    };
    let id = account.id.get_ref();
    let mut out = Vec::new();
    // The legs and their slices go out paced at the account's order rate, after the
    // orders already due this second: never refused by it.
    let mut paced: Option<usize> = None;
    for (idx, instrument, qty, order_type, limit, trigger, validity, stop_loss, target) in legs {
        // Its prices on the exchange's tick, never worse than asked.
        let kind = OrderKind::from_parts(
            order_type.as_deref(),
            opt_dec(limit.as_deref())?,
            opt_dec(trigger.as_deref())?,
        )
        .unwrap_or_default()
        .on_tick_of(side, crate::domain::money::tick_of(&instrument));
        let validity = Validity::parse(validity.as_deref()).unwrap_or_default();
        let intent = Intent {
            side,
            qty: dec(&qty)?,
        };
        let position = OrderManager::effective_position(tx, id, &instrument)?;
        let price = last.get(&instrument).map(|(_, p)| *p);
        let mut ctx = self_risk_context(
            tx,
            &config.market.calendar,
            last,
            account,
            &format!("basket/{basket_id}"),
            &instrument,
            ts,
            price,
            position,
        )?;
        let pace_from = *paced.get_or_insert(ctx.recent_orders_ms.len());
        ctx.recent_orders_ms.clear();
        if let Err(refusal) = risk::check(&account.risk, &ctx, &intent) {
            tx.exec(
                "UPDATE basket_legs SET state = 'refused' WHERE basket_id = ?1 AND idx = ?2",
                params![basket_id, idx],
            )?;
            return fail_basket(
                tx,
                config,
                basket_id,
                &format!(
                    "leg {idx} ({} {qty} {instrument}) refused by {}: {}",
                    side.as_str(),
                    refusal.rule,
                    refusal.reason
                ),
                ts,
            );
        }
        let key = format!("basket/{basket_id}/{idx}");
        let coid = client_order_id(&key, id);
        // Above the exchange's freeze quantity the leg goes out as slices (their parent the leg's id).
        let order = super::slicing::NewOrder {
            coid: &coid,
            signal_id: &key,
            account: id,
            pipeline: "basket",
            instrument: &instrument,
            side,
            qty: intent.qty,
            not_before: ts,
            slippage: account.slippage_bps,
            stop_loss: opt_dec(stop_loss.as_deref())?,
            target: opt_dec(target.as_deref())?,
            opens: false,
            kind,
            validity,
            pace_from,
        };
        let (_, sliced) = super::slicing::record_order(tx, Some(config), &order)?;
        let recorded: i64 = tx.row(
            "SELECT COUNT(*) FROM orders WHERE client_order_id = ?1 OR parent = ?1",
            [&coid],
            |r| r.get(0),
        )?;
        paced = Some(pace_from + usize::try_from(recorded).unwrap_or(0));
        out.extend(sliced);
        tx.exec("UPDATE basket_legs SET state = 'sent', client_order_id = ?3 WHERE basket_id = ?1 AND idx = ?2", params![basket_id, idx, coid])?;
    }
    Ok(out)
}

/// How the live basket leg `coid`'s margin is checked: the first leg handed to the broker
/// carries the basket's other legs (the broker judges the hedged whole), the later ones
/// were checked with it.
pub(super) fn margin_scope(
    tx: &rusqlite::Transaction<'_>,
    coid: &str,
) -> rusqlite::Result<crate::brokers::live::MarginScope> {
    use crate::brokers::live::MarginScope;
    // A slice's leg is its parent's.
    let (leg_coid, own_qty): (String, String) = tx.row(
        "SELECT COALESCE(parent, client_order_id), qty FROM orders WHERE client_order_id = ?1",
        [coid],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let Some((basket_id, leg_idx)): Option<(String, i64)> = tx
        .row(
            "SELECT basket_id, idx FROM basket_legs WHERE client_order_id = ?1",
            [&leg_coid],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?
    else {
        return Ok(MarginScope::Alone);
    };
    let sent: i64 = tx.row(
        &format!("SELECT COUNT(*) FROM basket_legs l JOIN orders o ON {LEG_ORDERS} WHERE l.basket_id = ?1 AND o.client_order_id != ?2 AND o.submitted_at IS NOT NULL"),
        [&basket_id, coid],
        |r| r.get(0),
    )?;
    if sent > 0 {
        return Ok(MarginScope::Checked);
    }
    // The rest of the basket: the other legs whole, and what this leg's other slices add.
    let mut stmt = tx.prepare_cached(
        "SELECT idx, instrument, side, qty FROM basket_legs WHERE basket_id = ?1 ORDER BY idx",
    )?;
    let mut legs = Vec::new();
    for row in stmt.query_map([&basket_id], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
        ))
    })? {
        let (idx, instrument, side, qty) = row?;
        let qty = if idx == leg_idx {
            dec(&qty)?.checked_sub(dec(&own_qty)?).unwrap_or_default()
        } else {
            dec(&qty)?
        };
        if qty > Decimal::ZERO {
            legs.push((instrument, side_of(&side)?, qty));
        }
    }
    Ok(if legs.is_empty() {
        MarginScope::Alone
    } else {
        MarginScope::Basket(legs)
    })
}

/// Stop a basket: no more legs; an alert; what the legs filled closed if it asked
/// (sliced again where above the freeze quantity).
pub(super) fn fail_basket(
    tx: &rusqlite::Transaction<'_>,
    config: &Config,
    basket_id: &str,
    reason: &str,
    ts: i64,
) -> rusqlite::Result<Vec<Outcome>> {
    let (account, unwind): (String, bool) = tx.row(
        "SELECT account, unwind FROM baskets WHERE basket_id = ?1",
        [basket_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    tx.exec(
        "UPDATE basket_legs SET state = 'not_sent' WHERE basket_id = ?1 AND state = 'waiting'",
        [basket_id],
    )?;
    // What each leg filled: a whole leg, or the slices (or the part) that filled before one failed.
    let fills: Vec<(i64, String, String, String)> = {
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT l.idx, l.instrument, l.side, f.qty FROM basket_legs l JOIN orders o ON {LEG_ORDERS} JOIN fills f ON f.client_order_id = o.client_order_id WHERE l.basket_id = ?1 ORDER BY l.idx"
        ))?;
        stmt.query_map([basket_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?
    };
    let mut filled: Vec<(i64, String, String, Decimal)> = Vec::new();
    for (idx, instrument, side, qty) in fills {
        let qty = dec(&qty)?;
        match filled.last_mut() {
            Some(last) if last.0 == idx => last.3 = last.3.checked_add(qty).unwrap_or(last.3),
            _ => filled.push((idx, instrument, side, qty)),
        }
    }
    let mut unwound = Vec::new();
    if unwind {
        for (idx, instrument, side, qty) in &filled {
            // Close what the leg opened: the opposite side, the quantity it filled.
            let signed = *qty * side_of(side)?.sign();
            queue_close(
                tx,
                Some(config),
                &account,
                instrument,
                signed,
                &format!("unwind/{basket_id}/{idx}"),
                "basket-unwind",
                ts,
                Decimal::ZERO,
            )?;
            unwound.push(instrument.clone());
        }
    }
    tx.exec(
        "UPDATE baskets SET state = ?2 WHERE basket_id = ?1",
        params![basket_id, if unwind { "unwinding" } else { "failed" }],
    )?;
    Ok(vec![Outcome::Event(Event::BasketFailed {
        basket: basket_id.to_owned(),
        account: Some(account.to_owned()),
        reason: reason.to_owned(),
        unwinding: Some(unwound),
    })])
}

/// After fills: a basket whose buy legs are all filled sends its sell legs; one
/// whose legs are all filled is complete.
pub(super) fn advance_baskets(
    tx: &rusqlite::Transaction<'_>,
    config: &Config,
    last: &HashMap<String, (i64, Decimal)>,
    ts: i64,
) -> rusqlite::Result<Vec<Outcome>> {
    let open: Vec<(String, String, String)> = {
        let mut stmt = tx.prepare_cached(
            "SELECT basket_id, account, state FROM baskets WHERE state IN ('buying', 'selling')",
        )?;

        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?
    };
    let mut out = Vec::new();
    for (basket_id, account_id, state) in open {
        // A leg the broker rejected or cancelled (any slice of it) stops the basket.
        let failed: Option<(i64, String, String, String, String, Option<String>)> = tx
            .row(
                &format!(
                    "SELECT l.idx, l.side, l.qty, l.instrument, o.state, l.cancelled_by FROM basket_legs l JOIN orders o ON {LEG_ORDERS}
                     WHERE l.basket_id = ?1 AND o.state IN ('rejected', 'cancelled', 'expired') ORDER BY l.idx LIMIT 1"
                ),
                [&basket_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
            )
            .optional()?;
        if let Some((idx, side, qty, instrument, st, by)) = failed {
            let leg = format!("leg {idx} ({side} {qty} {instrument})");
            let Some(command) = by.filter(|_| st == "cancelled") else {
                out.extend(fail_basket(
                    tx,
                    config,
                    &basket_id,
                    &format!("{leg} {st} at the broker"),
                    ts,
                )?);
                continue;
            };
            let reason = format!("{leg} cancelled by command {command}");
            let legs: i64 = tx.row(
                "SELECT COUNT(*) FROM basket_legs WHERE basket_id = ?1",
                [&basket_id],
                |r| r.get(0),
            )?;
            if legs == 1 {
                // A ticket the trader cancelled: over, as asked.
                tx.exec(
                    "UPDATE baskets SET state = 'cancelled' WHERE basket_id = ?1",
                    [&basket_id],
                )?;
                out.push(Outcome::Event(Event::BasketCancelled {
                    basket: basket_id.clone(),
                    account: account_id.clone(),
                    reason,
                }));
            } else {
                // One leg of many cancelled by hand still breaks the basket.
                out.extend(fail_basket(tx, config, &basket_id, &reason, ts)?);
            }
            continue;
        }
        let side = if state == "buying" { "buy" } else { "sell" };
        // A leg is filled when every order it went out as is.
        let unfilled: i64 = tx.row(
            &format!(
                "SELECT COUNT(*) FROM basket_legs l WHERE l.basket_id = ?1 AND l.side = ?2
                 AND (NOT EXISTS (SELECT 1 FROM orders o WHERE {LEG_ORDERS}) OR EXISTS (SELECT 1 FROM orders o WHERE {LEG_ORDERS} AND o.state != 'filled'))"
            ),
            params![basket_id, side],
            |r| r.get(0),
        )?;
        if unfilled > 0 {
            continue;
        }
        if state == "buying" {
            tx.exec(
                "UPDATE baskets SET state = 'selling' WHERE basket_id = ?1",
                [&basket_id],
            )?;
            if let Some(account) = config.account(&account_id) {
                out.extend(send_legs(
                    tx,
                    config,
                    last,
                    account,
                    &basket_id,
                    OrderSide::Sell,
                    ts,
                )?);
            }
        } else {
            tx.exec(
                "UPDATE baskets SET state = 'complete' WHERE basket_id = ?1",
                [&basket_id],
            )?;
            out.push(Outcome::Event(Event::BasketComplete {
                basket: basket_id.clone(),
                account: account_id.clone(),
            }));
        }
    }
    Ok(out)
}
