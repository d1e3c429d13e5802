//! Level watchers (traps): "when NIFTY crosses 25,950 up, buy 75 NIFTY…CE". Each is
//! journaled when armed, so it stays armed across restarts; it fires once, on the first
//! price that crosses its level from the side it was armed on (a bar's high for a
//! crossing up, its low for one down), in the same transaction that records its
//! order: a one-leg basket whose id is the watcher's, through the risk rules like any
//! order. Prices are taken in event order, so a replay fires it on the same bar.

use super::*;

/// A watcher to arm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watcher {
    /// Its id (the `watch` command's): arming it again changes nothing.
    pub id: String,
    /// The account that trades.
    pub account: String,
    /// The instrument watched.
    pub instrument: String,
    /// The level to cross.
    pub level: Decimal,
    /// Crossing up (else down).
    pub up: bool,
    /// What to place when it fires.
    pub leg: BasketLeg,
}

fn direction(up: bool) -> &'static str {
    if up { "up" } else { "down" }
}

impl OrderManager {
    /// Arm `w` (once per id), with the last price seen as the side it starts on;
    /// `Ok(Err(why))` for an unknown account.
    ///
    /// # Errors
    /// A journal failure.
    pub fn arm_watcher(&mut self, w: &Watcher) -> Result<Result<Vec<Outcome>, String>, OrderError> {
        let path = self.path.clone();
        let jerr = |source| OrderError::Journal {
            path: path.clone(),
            source,
        };
        if self.config.account(&w.account).is_none() {
            return Ok(Err(format!(
                "watch {}: unknown account {:?}",
                w.id, w.account
            )));
        }
        let reference = self.last.get(&w.instrument).map(|(_, p)| p.to_string());
        let tx = self.db.transaction().map_err(jerr)?;
        let inserted = tx
            .exec(
                "INSERT OR IGNORE INTO watchers (watch_id, account, instrument, level, up, side, order_instrument, qty, state, reference, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'armed', ?9, ?10)",
                params![w.id, w.account, w.instrument, w.level.to_string(), w.up, w.leg.side.as_str(), w.leg.instrument, w.leg.qty.to_string(), reference, now_ms()],
            )
            .map_err(jerr)?;
        journal::commit(tx).map_err(jerr)?;
        Ok(Ok(if inserted == 1 {
            let order = format!("{} {} {}", w.leg.side.as_str(), w.leg.qty, w.leg.instrument);
            vec![Outcome::Event(Event::WatcherArmed {
                watch_id: w.id.clone(),
                account: w.account.clone(),
                instrument: w.instrument.clone(),
                level: w.level.to_string(),
                direction: direction(w.up).into(),
                order,
            })]
        } else {
            Vec::new()
        }))
    }

    /// Disarm watcher `id`: `Ok(Err(why))` when it is unknown or no longer armed.
    ///
    /// # Errors
    /// A journal failure.
    pub fn disarm_watcher(&mut self, id: &str) -> Result<Result<Vec<Outcome>, String>, OrderError> {
        let path = self.path.clone();
        let jerr = |source| OrderError::Journal {
            path: path.clone(),
            source,
        };
        let tx = self.db.transaction().map_err(jerr)?;
        let row: Option<(String, String)> = tx
            .row(
                "SELECT account, state FROM watchers WHERE watch_id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(jerr)?;
        let out = match row {
            None => Err(format!("no watcher {id:?}")),
            Some((_, state)) if state != "armed" => Err(format!("watcher {id} has {state}")),
            Some((account, _)) => {
                tx.exec(
                    "UPDATE watchers SET state = 'cancelled' WHERE watch_id = ?1",
                    [id],
                )
                .map_err(jerr)?;
                Ok(vec![Outcome::Event(Event::WatcherCancelled {
                    watch_id: id.to_owned(),
                    account,
                })])
            }
        };
        journal::commit(tx).map_err(jerr)?;
        Ok(out)
    }
}

/// Fire the armed watchers of `quote`'s instrument that its bar crosses, placing their
/// orders; the others learn the side the price is on. Returns events.
pub(super) fn fire(
    tx: &rusqlite::Transaction<'_>,
    config: &Config,
    last: &HashMap<String, (i64, Decimal)>,
    quote: &crate::bus::message::Quote,
    ts: i64,
) -> rusqlite::Result<Vec<Outcome>> {
    type Row = (
        String,
        String,
        String,
        bool,
        String,
        String,
        String,
        Option<String>,
    );
    let armed: Vec<Row> = {
        let mut stmt = tx.prepare_cached("SELECT watch_id, account, level, up, side, order_instrument, qty, reference FROM watchers WHERE instrument = ?1 AND state = 'armed' ORDER BY rowid")?;
        stmt.query_map([&quote.instrument], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?
    };
    let mut out = Vec::new();
    for (id, account, level, up, side, order_instrument, qty, reference) in armed {
        let level = dec(&level)?;
        // The side it starts on: the price when armed, else the first bar's open.
        let from = opt_dec(reference.as_deref())?.unwrap_or(quote.open);
        let crossed = if up {
            from < level && quote.high >= level
        } else {
            from > level && quote.low <= level
        };
        if !crossed {
            // Still on its side, or armed on the far side: it waits for a price on the near side first.
            let now_on = if up {
                quote.close < level
            } else {
                quote.close > level
            };
            if now_on {
                tx.exec(
                    "UPDATE watchers SET reference = ?2 WHERE watch_id = ?1",
                    params![id, quote.close.to_string()],
                )?;
            }
            continue;
        }
        tx.exec(
            "UPDATE watchers SET state = 'fired', fired_ts = ?2 WHERE watch_id = ?1",
            params![id, ts],
        )?;
        out.push(Outcome::Event(Event::WatcherFired {
            watch_id: id.clone(),
            account: account.clone(),
            instrument: quote.instrument.clone(),
            level: level.to_string(),
            direction: direction(up).into(),
            price: quote.close.to_string(),
        }));
        let leg = BasketLeg::market(order_instrument, side_of(&side)?, dec(&qty)?);
        out.extend(baskets::place_in(
            tx,
            config,
            last,
            &Basket {
                id,
                account,
                legs: vec![leg],
                unwind_on_failure: false,
            },
            ts,
        )?);
    }
    Ok(out)
}
