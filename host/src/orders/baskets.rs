//! Multi-leg baskets (a straddle, an iron condor): buy legs first, the sell
//! legs once every buy leg has filled; a refused leg stops the rest and, with
//! `unwind`, closes what filled.

use super::*;

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
        let jerr = |source| OrderError::Journal { path: path.clone(), source };
        let Some(account) = self.config.account(&basket.account).cloned() else {
            return Ok(vec![Outcome::Event(Event::BasketFailed { basket: basket.id.clone(), account: None, reason: format!("unknown account {:?}", basket.account), unwinding: None })]);
        };
        let ts = basket.legs.iter().filter_map(|l| self.last.get(&l.instrument).map(|(t, _)| *t)).max().unwrap_or_else(now_ms);
        let tx = self.db.transaction().map_err(jerr)?;
        let inserted = tx
            .exec("INSERT OR IGNORE INTO baskets (basket_id, account, state, unwind, ts) VALUES (?1, ?2, 'buying', ?3, ?4)", params![basket.id, basket.account, basket.unwind_on_failure, ts])
            .map_err(jerr)?;
        let mut out = Vec::new();
        if inserted == 1 {
            for (i, leg) in basket.legs.iter().enumerate() {
                tx.exec(
                    "INSERT INTO basket_legs (basket_id, idx, instrument, side, qty, state) VALUES (?1, ?2, ?3, ?4, ?5, 'waiting')",
                    params![basket.id, i64::try_from(i).unwrap_or(i64::MAX), leg.instrument, leg.side.as_str(), leg.qty.to_string()],
                )
                .map_err(jerr)?;
            }
            out.push(Outcome::Event(Event::BasketPlaced { basket: basket.id.clone(), account: basket.account.clone(), legs: basket.legs.len() }));
            out.extend(send_legs(&tx, &self.config.market, &self.last, &account, &basket.id, OrderSide::Buy, ts).map_err(jerr)?);
        }
        let transitions = Self::submit_in(&tx, &self.recent, &self.live, &self.last, &mut self.handoff, &mut self.cancel_asked, &mut self.cancels).map_err(jerr)?;
        tx.commit().map_err(jerr)?;
        for (coid, state, extra) in transitions {
            out.push(Outcome::Order(self.order_message(&coid, state, extra)?));
        }
        Ok(out)
    }
}

/// One leg of a basket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasketLeg {
    /// Instrument, e.g. `NIFTY28MAR2420800CE`.
    pub instrument: String,
    /// Buy or sell.
    pub side: OrderSide,
    /// Units.
    pub qty: Decimal,
}

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

/// Send the `side` legs of a basket (each through the risk checks); a refused
/// leg fails the basket. Returns events.
pub(super) fn send_legs(
    tx: &rusqlite::Transaction<'_>,
    market: &crate::config::MarketSection,
    last: &HashMap<String, (i64, Decimal)>,
    account: &crate::config::Account,
    basket_id: &str,
    side: OrderSide,
    ts: i64,
) -> rusqlite::Result<Vec<Outcome>> {
    let legs: Vec<(i64, String, String)> = {
        let mut stmt = tx.prepare_cached("SELECT idx, instrument, qty FROM basket_legs WHERE basket_id = ?1 AND side = ?2 AND state = 'waiting' ORDER BY idx")?;
        
        stmt.query_map(params![basket_id, side.as_str()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<rusqlite::Result<Vec<_>>>()?
    };
    let id = account.id.get_ref();
    for (idx, instrument, qty) in legs {
        let intent = Intent { side, qty: dec(&qty)? };
        let position = OrderManager::effective_position(tx, id, &instrument)?;
        let price = last.get(&instrument).map(|(_, p)| *p);
        let ctx = self_risk_context(tx, &market.calendar, last, account, &format!("basket/{basket_id}"), &instrument, ts, price, position)?;
        // A leg goes out as one order: one above the exchange's freeze quantity would be frozen.
        if let Some(freeze) = market.contract_rules.freeze_qty(&instrument).filter(|f| intent.qty > Decimal::from(*f)) {
            tx.exec("UPDATE basket_legs SET state = 'refused' WHERE basket_id = ?1 AND idx = ?2", params![basket_id, idx])?;
            return fail_basket(tx, basket_id, &format!("leg {idx} ({} {qty} {instrument}) refused by freeze_qty: above the freeze quantity {freeze}; split it into legs of at most {freeze}", side.as_str()), ts);
        }
        if let Err(refusal) = risk::check(&account.risk, &ctx, &intent) {
            tx.exec("UPDATE basket_legs SET state = 'refused' WHERE basket_id = ?1 AND idx = ?2", params![basket_id, idx])?;
            return fail_basket(tx, basket_id, &format!("leg {idx} ({} {qty} {instrument}) refused by {}: {}", side.as_str(), refusal.rule, refusal.reason), ts);
        }
        let key = format!("basket/{basket_id}/{idx}");
        let coid = client_order_id(&key, id);
        tx.exec(
            "INSERT OR IGNORE INTO orders (client_order_id, signal_id, account, pipeline, instrument, side, qty, state, not_before, slippage_bps, created_at, updated_at, algo_id)
             VALUES (?1, ?2, ?3, 'basket', ?4, ?5, ?6, 'new', ?7, ?8, ?9, ?9, (SELECT value FROM settings WHERE key = 'algo/' || ?3))",
            params![coid, key, id, instrument, side.as_str(), qty, ts, account.slippage_bps.to_string(), now_ms()],
        )?;
        tx.exec("UPDATE basket_legs SET state = 'sent', client_order_id = ?3 WHERE basket_id = ?1 AND idx = ?2", params![basket_id, idx, coid])?;
    }
    Ok(Vec::new())
}

/// How the live basket leg `coid`'s margin is checked: the first leg handed to the broker
/// carries the basket's other legs (the broker judges the hedged whole), the later ones
/// were checked with it.
pub(super) fn margin_scope(tx: &rusqlite::Transaction<'_>, coid: &str) -> rusqlite::Result<crate::brokers::live::MarginScope> {
    use crate::brokers::live::MarginScope;
    let Some(basket_id): Option<String> = tx.row("SELECT basket_id FROM basket_legs WHERE client_order_id = ?1", [coid], |r| r.get(0)).optional()? else {
        return Ok(MarginScope::Alone);
    };
    let sent: i64 = tx.row(
        "SELECT COUNT(*) FROM basket_legs l JOIN orders o USING (client_order_id) WHERE l.basket_id = ?1 AND o.client_order_id != ?2 AND o.submitted_at IS NOT NULL",
        [&basket_id, coid],
        |r| r.get(0),
    )?;
    if sent > 0 {
        return Ok(MarginScope::Checked);
    }
    let mut stmt = tx.prepare_cached("SELECT instrument, side, qty FROM basket_legs WHERE basket_id = ?1 AND client_order_id IS NOT ?2 ORDER BY idx")?;
    let legs = stmt
        .query_map([&basket_id, coid], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?
        .map(|row| {
            let (instrument, side, qty) = row?;
            Ok((instrument, side_of(&side)?, dec(&qty)?))
        })
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(if legs.is_empty() { MarginScope::Alone } else { MarginScope::Basket(legs) })
}

/// Stop a basket: no more legs; an alert; the filled legs closed if it asked.
pub(super) fn fail_basket(tx: &rusqlite::Transaction<'_>, basket_id: &str, reason: &str, ts: i64) -> rusqlite::Result<Vec<Outcome>> {
    let (account, unwind): (String, bool) = tx.row("SELECT account, unwind FROM baskets WHERE basket_id = ?1", [basket_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    tx.exec("UPDATE basket_legs SET state = 'not_sent' WHERE basket_id = ?1 AND state = 'waiting'", [basket_id])?;
    let filled: Vec<(i64, String, String, String)> = {
        let mut stmt = tx.prepare_cached(
            "SELECT l.idx, l.instrument, l.side, l.qty FROM basket_legs l JOIN orders o USING (client_order_id) WHERE l.basket_id = ?1 AND o.state = 'filled' ORDER BY l.idx",
        )?;
        
        stmt.query_map([basket_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?.collect::<rusqlite::Result<Vec<_>>>()?
    };
    let mut unwound = Vec::new();
    if unwind {
        for (idx, instrument, side, qty) in &filled {
            // Close what the leg opened: the opposite side, same quantity.
            let signed = dec(qty)? * side_of(side)?.sign();
            // A leg is within its freeze quantity (refused otherwise), and so is its unwind.
            queue_close(tx, None, &account, instrument, signed, &format!("unwind/{basket_id}/{idx}"), "basket-unwind", ts, Decimal::ZERO)?;
            unwound.push(instrument.clone());
        }
    }
    tx.exec("UPDATE baskets SET state = ?2 WHERE basket_id = ?1", params![basket_id, if unwind { "unwinding" } else { "failed" }])?;
    Ok(vec![Outcome::Event(Event::BasketFailed { basket: basket_id.to_owned(), account: Some(account.to_owned()), reason: reason.to_owned(), unwinding: Some(unwound) })])
}

/// After fills: a basket whose buy legs are all filled sends its sell legs; one
/// whose legs are all filled is complete.
pub(super) fn advance_baskets(tx: &rusqlite::Transaction<'_>, config: &Config, last: &HashMap<String, (i64, Decimal)>, ts: i64) -> rusqlite::Result<Vec<Outcome>> {
    let open: Vec<(String, String, String)> = {
        let mut stmt = tx.prepare_cached("SELECT basket_id, account, state FROM baskets WHERE state IN ('buying', 'selling')")?;
        
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<rusqlite::Result<Vec<_>>>()?
    };
    let mut out = Vec::new();
    for (basket_id, account_id, state) in open {
        let side = if state == "buying" { "buy" } else { "sell" };
        let unfilled: i64 = tx.row(
            "SELECT COUNT(*) FROM basket_legs l LEFT JOIN orders o USING (client_order_id) WHERE l.basket_id = ?1 AND l.side = ?2 AND (o.state IS NULL OR o.state != 'filled')",
            params![basket_id, side],
            |r| r.get(0),
        )?;
        if unfilled > 0 {
            continue;
        }
        if state == "buying" {
            tx.exec("UPDATE baskets SET state = 'selling' WHERE basket_id = ?1", [&basket_id])?;
            if let Some(account) = config.account(&account_id) {
                out.extend(send_legs(tx, &config.market, last, account, &basket_id, OrderSide::Sell, ts)?);
            }
        } else {
            tx.exec("UPDATE baskets SET state = 'complete' WHERE basket_id = ?1", [&basket_id])?;
            out.push(Outcome::Event(Event::BasketComplete { basket: basket_id.clone(), account: account_id.clone() }));
        }
    }
    Ok(out)
}
