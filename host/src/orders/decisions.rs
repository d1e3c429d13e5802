//! Decisions: a signal fanned out to its pipeline's accounts (the subscriber's
//! `fan_out`), each share checked by the kill switch, the account's routing and the risk
//! rules, and recorded with its order in one transaction; and the cooldown an entry starts,
//! given back when the broker refuses it.

use super::*;

impl OrderManager {
    pub(super) fn effective_position(
        tx: &rusqlite::Transaction<'_>,
        account: &str,
        instrument: &str,
    ) -> rusqlite::Result<Decimal> {
        Self::effective_position_except(tx, account, instrument, &[])
    }

    /// [`OrderManager::effective_position`] leaving out the working orders `except` (being cancelled).
    pub(super) fn effective_position_except(
        tx: &rusqlite::Transaction<'_>,
        account: &str,
        instrument: &str,
        except: &[String],
    ) -> rusqlite::Result<Decimal> {
        let held: Option<String> = tx
            .row(
                "SELECT qty FROM positions WHERE account = ?1 AND instrument = ?2",
                [account, instrument],
                |r| r.get(0),
            )
            .optional()?;
        let mut qty = opt_dec(held.as_deref())?.unwrap_or_default();
        // Working orders count with what is left of them: their filled part is in the position.
        let mut stmt = tx.prepare_cached(
            // A protective stop is contingent: it is not a position to come.
            "SELECT side, qty, filled_qty, client_order_id FROM orders WHERE account = ?1 AND instrument = ?2 AND pipeline != 'protective-stop' AND state IN ('new', 'submitted', 'accepted', 'triggered', 'partially_filled', 'pending_cancel')",
        )?;
        let open = stmt.query_map([account, instrument], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        for o in open {
            let (side, q, filled, coid) = o?;
            if except.contains(&coid) {
                continue;
            }
            let left =
                (dec(&q)? - opt_dec(filled.as_deref())?.unwrap_or_default()).max(Decimal::ZERO);
            qty += left * side_of(&side)?.sign();
        }
        Ok(qty)
    }

    /// Decide, for every account of the signal's pipeline, what to do; record
    /// it; then send the new orders to the broker. Safe to call again with the
    /// same signal: decisions already recorded are kept.
    ///
    /// # Errors
    /// A journal failure: nothing of this call is then committed.
    pub fn on_signal(&mut self, s: &SignalMessage) -> Result<Vec<Outcome>, OrderError> {
        let mut out = Vec::new();
        self.decided.insert(s.id.clone());
        let day = crate::domain::time::ist_day(s.ts);
        if let Some((year, doubt)) = Event::calendar_doubt(
            &self.config.market.calendar,
            day,
            &format!("signal {}", crate::bus::message::printable(&s.id, 80)),
        ) && self.calendar_told.insert(year)
        {
            out.push(Outcome::Event(doubt));
        }
        let Some(pipeline) = self.config.pipeline(&s.pipeline).cloned() else {
            out.push(Outcome::Event(Event::SignalRefused {
                signal_id: s.id.clone(),
                reason: format!("unknown pipeline {:?}", s.pipeline),
                rule: "config".into(),
            }));
            return Ok(out);
        };
        let killed = self.kill_switch()?;
        let now = now_ms();
        // A limit or a stop is sized and checked at the price it names (the worst it may
        // pay), not at the close the signal came with.
        let (kind, validity) = s.order_terms();
        let priced = kind.named_price().map(|p| SignalMessage {
            price: Some(p),
            ..s.clone()
        });
        let sized = priced.as_ref().unwrap_or(s);
        let config = self.config.clone();
        let path = self.path.clone();
        let jerr = |source| OrderError::Journal {
            path: path.clone(),
            source,
        };
        let tx = self.db.transaction().map_err(jerr)?;
        let mut moves = Vec::new();
        let result: rusqlite::Result<()> = (|| {
            // What the strategy said, beside what each account made of it (an audit trail, and a backtest's signals.csv).
            let text = |d: Option<Decimal>| d.map(|v| v.to_string());
            tx.exec(
                "INSERT OR IGNORE INTO signals (signal_id, ts, pipeline, instrument, side, price, stop_loss, target, reason, plugin, plugin_version, plugin_sha256)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![s.id, s.ts, s.pipeline, s.instrument, s.side, text(s.price), text(s.stop_loss), text(s.target), s.reason, s.plugin, s.plugin_version, s.plugin_sha256],
            )?;
            let s = sized;
            // The subscriber's fan-out: each account not yet decided, its position and intent.
            let decided = |account: &str| {
                tx.row(
                    "SELECT 1 FROM decisions WHERE signal_id = ?1 AND account = ?2",
                    [s.id.as_str(), account],
                    |_| Ok(()),
                )
                .optional()
                .map(|d| d.is_some())
            };
            // A new signal replaces the pipeline's limit or stop still resting in the instrument:
            // cancelled first, it is no longer a position to come.
            let superseded = supersede(
                &tx,
                s,
                &self.live,
                &mut self.cancel_asked,
                &mut self.cancels,
                &mut moves,
            )?;
            let shares = fan_out(&config, &pipeline, s, decided, |account| {
                Self::effective_position_except(&tx, account, &s.instrument, &superseded)
            })?;
            for Share {
                account,
                effective,
                intent,
            } in shares
            {
                let account_id = account.id.get_ref();
                // In live mode an account configured for a broker that is not connected
                // (added by a reload) must not quietly trade on paper.
                let unrouted = self.mode == crate::domain::TradingMode::Live
                    && account.kind() != Some(crate::domain::BrokerKind::Paper)
                    && !self.live.contains(account_id);
                let mut rule = if killed {
                    "kill_switch"
                } else if unrouted {
                    "broker"
                } else {
                    "sizing"
                };
                let decision = if killed {
                    Err("the kill switch is on".to_owned())
                } else if unrouted {
                    Err(format!(
                        "broker {} is not connected for this account; restart to connect it",
                        account.broker.get_ref()
                    ))
                } else {
                    match intent {
                        Ok(Some(i)) => {
                            let ctx = self_risk_context(
                                &tx,
                                &config.market.calendar,
                                &self.last,
                                account,
                                &s.pipeline,
                                &s.instrument,
                                s.ts,
                                s.price,
                                effective,
                            )?;
                            match risk::check(&account.risk, &ctx, &i) {
                                Ok(()) => Ok(Some(i)),
                                Err(refusal) => {
                                    rule = refusal.rule;
                                    if refusal.rule == "max_daily_loss"
                                        && trip_breaker(&tx, account_id, s.ts)?
                                    {
                                        out.push(Outcome::Event(Event::RiskBreaker {
                                            account: account_id.clone(),
                                            rule: "max_daily_loss".into(),
                                            daily_pnl: ctx.daily_pnl.to_string(),
                                            detail: "only reducing orders until tomorrow".into(),
                                        }));
                                    }
                                    Err(refusal.reason)
                                }
                            }
                        }
                        other => other.map_err(|e| e.to_string()),
                    }
                };
                let (outcome, coid) = match decision {
                    Ok(Some(i)) => {
                        let opens = risk::is_entry(effective, &i);
                        if opens {
                            tx.exec(
                                "INSERT INTO entries (pipeline, instrument, ts) VALUES (?1, ?2, ?3) ON CONFLICT(pipeline, instrument) DO UPDATE SET ts = MAX(ts, ?3)",
                                params![s.pipeline, s.instrument, s.ts],
                            )?;
                        }
                        let coid = client_order_id(&s.id, account_id);
                        let order = super::slicing::NewOrder {
                            coid: &coid,
                            signal_id: &s.id,
                            account: account_id,
                            pipeline: &s.pipeline,
                            instrument: &s.instrument,
                            side: i.side,
                            qty: i.qty,
                            not_before: s.ts,
                            slippage: account.slippage_bps,
                            stop_loss: s.stop_loss,
                            target: s.target,
                            opens,
                            // On the instrument's own tick where its master gave one.
                            kind: kind
                                .on_tick_of(i.side, crate::domain::money::tick_of(&s.instrument)),
                            validity,
                            pace_from: 0,
                        };
                        let (_, sliced) = super::slicing::record_order(&tx, Some(&config), &order)?;
                        out.extend(sliced);
                        (
                            format!("order {} {} {}", i.side.as_str(), i.qty, s.instrument),
                            Some(coid),
                        )
                    }
                    Ok(None) => ("nothing to do".to_owned(), None),
                    Err(reason) => {
                        out.push(Outcome::Event(Event::OrderRefused {
                            signal_id: s.id.clone(),
                            account: account_id.clone(),
                            reason: reason.clone(),
                            rule: rule.to_owned(),
                        }));
                        (format!("refused [{rule}]: {reason}"), None)
                    }
                };
                tx.exec(
                    "INSERT INTO decisions (signal_id, account, outcome, client_order_id, at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![s.id, account_id, outcome, coid, now],
                )?;
            }
            Ok(())
        })();
        result.map_err(jerr)?;
        // Decisions and the broker hand-off in one commit: one fsync per signal.
        let mut transitions = moves;
        transitions.extend(
            Self::submit_in(
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
            .map_err(jerr)?,
        );
        journal::commit(tx).map_err(jerr)?;
        for (coid, state, extra) in transitions {
            out.push(Outcome::Order(self.order_message(&coid, state, extra)?));
        }
        Ok(out)
    }
}

/// Cancel the resting limit and stop orders `s`'s pipeline has in its instrument (not its own,
/// on a repeat): on paper at once, for a live account by asking the broker (the journal follows
/// its report). Returns their ids; the paper ones' transitions go to `moves`.
fn supersede(
    tx: &rusqlite::Transaction<'_>,
    s: &SignalMessage,
    live: &std::collections::HashSet<String>,
    asked: &mut std::collections::HashSet<String>,
    cancels: &mut Vec<crate::brokers::live::LiveCancel>,
    moves: &mut Vec<(String, &'static str, Value)>,
) -> rusqlite::Result<Vec<String>> {
    let resting: Vec<(String, String, String)> = {
        let mut stmt = tx.prepare_cached(
            "SELECT client_order_id, account, state FROM orders WHERE pipeline = ?1 AND instrument = ?2 AND signal_id != ?3
             AND COALESCE(order_type, 'MARKET') != 'MARKET' AND state IN ('new', 'submitted', 'accepted', 'triggered', 'partially_filled', 'pending_cancel') ORDER BY rowid",
        )?;
        stmt.query_map(params![s.pipeline, s.instrument, s.id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?
    };
    let reason = format!("replaced by signal {}", s.id);
    let mut ids = Vec::with_capacity(resting.len());
    for (coid, account, state) in resting {
        for to in super::manual::cancel_working(
            tx, &coid, &account, &state, &reason, live, asked, cancels,
        )? {
            moves.push((coid.clone(), to, json!({ "reason": reason })));
        }
        ids.push(coid);
    }
    Ok(ids)
}

/// An entry the broker refused (or cancelled with nothing filled) opened nothing:
/// the pipeline's cooldown in its instrument goes back to the last entry that
/// did open (or works on), or ends, so the next signal is not refused for a
/// position that never was.
pub(super) fn restore_cooldown(tx: &rusqlite::Transaction<'_>, coid: &str) -> rusqlite::Result<()> {
    let Some((pipeline, instrument, opens)): Option<(String, String, bool)> = tx
        .row(
            "SELECT pipeline, instrument, opens FROM orders WHERE client_order_id = ?1",
            [coid],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?
    else {
        return Ok(());
    };
    if !opens {
        return Ok(());
    }
    let last: Option<i64> = tx.row(
        "SELECT MAX(not_before) FROM orders WHERE pipeline = ?1 AND instrument = ?2 AND opens = 1 AND state != 'rejected'
         AND NOT (state IN ('cancelled', 'expired') AND CAST(COALESCE(filled_qty, '0') AS REAL) = 0)",
        [&pipeline, &instrument],
        |r| r.get(0),
    )?;
    match last {
        Some(ts) => tx.exec(
            "UPDATE entries SET ts = ?3 WHERE pipeline = ?1 AND instrument = ?2",
            params![pipeline, instrument, ts],
        )?,
        None => tx.exec(
            "DELETE FROM entries WHERE pipeline = ?1 AND instrument = ?2",
            [&pipeline, &instrument],
        )?,
    };
    Ok(())
}

/// What the risk checks need, read inside the deciding transaction.
#[allow(clippy::too_many_arguments)]
pub(super) fn self_risk_context(
    tx: &rusqlite::Transaction<'_>,
    calendar: &crate::domain::calendar::Calendar,
    last: &HashMap<String, (i64, Decimal)>,
    account: &crate::config::Account,
    pipeline: &str,
    instrument: &str,
    now_ms: i64,
    price: Option<Decimal>,
    position: Decimal,
) -> rusqlite::Result<risk::RiskContext> {
    let id = account.id.get_ref();
    let day = crate::domain::time::ist_day(now_ms);
    let realized: Option<String> = tx
        .row(
            "SELECT realized FROM daily_pnl WHERE account = ?1 AND day = ?2",
            params![id, day],
            |r| r.get(0),
        )
        .optional()?;
    let mut daily_pnl = opt_dec(realized.as_deref())?.unwrap_or_default();
    let mut other_open_positions = 0;
    let mut stmt =
        tx.prepare_cached("SELECT instrument, qty, lots FROM positions WHERE account = ?1")?;
    let rows = stmt.query_map([id], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    for row in rows {
        let (instr, qty, lots) = row?;
        let p = Position {
            qty: dec(&qty)?,
            lots: lots_of(&lots)?,
            realized: Decimal::ZERO,
        };
        if p.qty.is_zero() {
            continue;
        }
        if instr != instrument {
            other_open_positions += 1;
        }
        if let Some((_, mark)) = last.get(&instr) {
            daily_pnl += p.unrealized(*mark);
        }
    }
    // The exchange's order-rate threshold is per segment: NSE's cash and F&O are counted apart.
    let segment = crate::domain::Segment::of(instrument);
    let mut stmt = tx.prepare_cached("SELECT not_before, instrument FROM orders WHERE account = ?1 AND not_before > ?2 AND not_before <= ?3")?;
    let recent_orders_ms = stmt
        .query_map(params![id, now_ms - 1000, now_ms], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?
        .filter_map(|row| match row {
            Ok((ts, instr)) => (crate::domain::Segment::of(&instr) == segment).then_some(Ok(ts)),
            Err(e) => Some(Err(e)),
        })
        .collect::<rusqlite::Result<Vec<i64>>>()?;
    let last_entry_ms: Option<i64> = tx
        .row(
            "SELECT ts FROM entries WHERE pipeline = ?1 AND instrument = ?2",
            params![pipeline, instrument],
            |r| r.get(0),
        )
        .optional()?;
    let session = calendar.entry_hours(day);
    Ok(risk::RiskContext {
        now_ms,
        price,
        position,
        other_open_positions,
        daily_pnl,
        capital: account.capital,
        recent_orders_ms,
        last_entry_ms,
        session,
        expiry_day: crate::domain::contracts::expiry_day(instrument),
    })
}

/// Record that the daily-loss breaker tripped for `account` today; true the first time.
fn trip_breaker(
    tx: &rusqlite::Transaction<'_>,
    account: &str,
    now_ms: i64,
) -> rusqlite::Result<bool> {
    let key = format!("breaker/{account}/{}", crate::domain::time::ist_day(now_ms));
    Ok(tx.exec(
        "INSERT OR IGNORE INTO settings (key, value) VALUES (?1, 'tripped')",
        [key],
    )? == 1)
}
