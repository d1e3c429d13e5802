//! Stops that survive the host. When a live position has a stop, a protective
//! order rests at the broker at that stop: an SL-M where the exchange takes one, an
//! SL (stop-limit, its limit the account's buffer beyond the trigger) on options,
//! where NSE refuses stop-loss-market orders; for a delivery (CNC) position it is a
//! GTT (Kite, Upstox, OpenAlgo), which outlives the session (an SL-M is a day order).
//! If the host dies, the stop still stands. As the managed exit's stop tightens (a
//! trailing stop), the protective order is modified to follow it, throttled, never
//! loosened; its quantity follows the position (slices filling one by one). The
//! journal keeps the terms the broker *took* (`trigger_price`, `limit_price`, updated
//! from its answer) apart from those asked and not yet taken (`wanted_*`), and counts
//! the modifications the broker took against its budget per order (Kite: 25): near
//! it, the order is cancelled and, once the cancel is confirmed, a fresh one placed
//! (the host's own managed exit guards the moment between; two stops never rest at
//! once). A refused modification is an alert, and the order is replaced the same way.
//! A refused placement is classified: a permanent refusal (an order type, a price
//! band, margin) is not tried again for that position and raises one alert saying
//! the broker holds no stop (the managed exit guards it); a transient one backs off.
//! When the host closes the position itself (a target, a square-off, a flatten, its
//! own stop), it cancels the protective order first and sends its close only once
//! the broker has said what became of it: cancelled (the close goes, for what is
//! still held) or filled (the position is gone, and the close with it). Everything
//! is journaled first, so a restart finds the protective order (by its client order
//! id in the broker's book) instead of placing a second one.

use super::*;
use crate::brokers::OrderKind;
use crate::brokers::live::{LiveCancel, LiveModify};

/// The `pipeline` of a protective stop order.
pub const PROTECTIVE: &str = "protective-stop";

/// Whether a broker keeps good-till-triggered stops the host can place (each adapter's GTT).
fn gtt_broker(broker: &str) -> bool {
    crate::domain::Capabilities::of(broker).is_some_and(|c| c.gtt)
}

/// Least exchange time between two modifications of one protective order.
const MODIFY_EVERY_MS: i64 = 2_000;

/// A protective order still working (or recorded and not yet sent).
struct Resting {
    coid: String,
    /// `buy` or `sell`: the side that closes the position it protects.
    side: String,
    qty: Decimal,
    /// Its trigger as last asked (taken by the broker or not yet).
    trigger: Decimal,
    modified_at: Option<i64>,
    state: String,
    /// Modifications the broker took.
    modifications: i64,
    /// A GTT (a delivery position's stop), rather than a day order.
    gtt: bool,
}

fn resting(
    tx: &rusqlite::Transaction<'_>,
    account: &str,
    instrument: &str,
) -> rusqlite::Result<Option<Resting>> {
    type Row = (
        String,
        String,
        Option<String>,
        Option<i64>,
        String,
        String,
        i64,
        Option<String>,
    );
    let row: Option<Row> = tx
        .row(
            "SELECT client_order_id, COALESCE(wanted_qty, qty), COALESCE(wanted_trigger, trigger_price), modified_at, state, side, modifications, validity FROM orders WHERE account = ?1 AND instrument = ?2 AND pipeline = 'protective-stop'
             AND state IN ('new', 'submitted', 'accepted', 'triggered', 'partially_filled', 'pending_cancel') ORDER BY rowid DESC LIMIT 1",
            [account, instrument],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?)),
        )
        .optional()?;
    row.map(
        |(coid, qty, trigger, modified_at, state, side, modifications, validity)| {
            let trigger = opt_dec(trigger.as_deref())?.ok_or_else(|| {
                journal::corrupt("protective stop trigger", &format!("{coid}: none"))
            })?;
            Ok(Resting {
                qty: dec(&qty)?,
                trigger,
                coid,
                side,
                modified_at,
                state,
                modifications,
                gtt: validity.as_deref() == Some("GTT"),
            })
        },
    )
    .transpose()
}

/// The modifications a broker takes per order: Kite documents 25; OpenAlgo passes
/// them to the broker behind it, which may be Zerodha, so the same. `None`: no
/// documented limit (Upstox).
#[must_use]
pub fn modify_budget(broker: &str) -> Option<i64> {
    crate::domain::Capabilities::of(broker)?.modification_budget
}

/// The protective order for a position in `instrument` closed by `side` at `trigger`:
/// an SL-M where the exchange takes it, else (options) an SL whose limit lies
/// `buffer_pct` of the trigger beyond it; on the tick, never worse than asked.
#[must_use]
pub fn protective_kind(
    instrument: &str,
    side: OrderSide,
    trigger: Decimal,
    buffer_pct: Decimal,
) -> OrderKind {
    let market = OrderKind::StopMarket { trigger };
    let tick = crate::domain::money::tick_of(instrument);
    if crate::domain::order::exchange_refusal(instrument, market).is_none() {
        return market.on_tick_of(side, tick);
    }
    let buffer = trigger
        .checked_mul(buffer_pct)
        .and_then(|b| b.checked_div(Decimal::ONE_HUNDRED))
        .unwrap_or_default();
    let price = match side {
        OrderSide::Sell => trigger.checked_sub(buffer).unwrap_or(trigger),
        OrderSide::Buy => trigger.checked_add(buffer).unwrap_or(trigger),
    }
    .max(tick);
    OrderKind::StopLimit { trigger, price }.on_tick_of(side, tick)
}

/// Whether a broker's refusal of a protective order may pass if it is tried again
/// later (the exchange or the broker busy), as opposed to a refusal of the order itself
/// (its type, a price band, margin, a blocked contract) that placing it again would repeat.
#[must_use]
pub fn refusal_is_transient(reason: &str) -> bool {
    let r = reason.to_ascii_lowercase();
    [
        "try again",
        "try later",
        "temporar",
        "too many",
        "rate limit",
        "timed out",
        "timeout",
        "not connected",
        "unavailable",
        "being processed",
    ]
    .iter()
    .any(|w| r.contains(w))
}

/// Back-off before a protective order refused for a transient reason is tried again:
/// 5 s of exchange time, doubling with each refusal, at most 5 minutes.
fn retry_after_ms(tries: i64) -> i64 {
    5_000_i64
        .saturating_mul(1_i64 << tries.clamp(0, 6))
        .min(300_000)
}

/// A protective order `coid` was refused by the broker: recorded against its position, so
/// that a permanent refusal is not repeated (the host's managed exit guards the position)
/// and a transient one is tried again after a back-off. Returns the event to publish;
/// `None` when `coid` is not a protective stop.
pub(super) fn refused(
    tx: &rusqlite::Transaction<'_>,
    coid: &str,
    reason: &str,
    now: i64,
) -> rusqlite::Result<Option<Event>> {
    let row: Option<(String, String)> = tx
        .row(
            "SELECT account, instrument FROM orders WHERE client_order_id = ?1 AND pipeline = ?2",
            [coid, PROTECTIVE],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((account, instrument)) = row else {
        return Ok(None);
    };
    let permanent = !refusal_is_transient(reason);
    let tries: i64 = tx
        .row(
            "SELECT tries FROM stop_refusals WHERE account = ?1 AND instrument = ?2",
            [&account, &instrument],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0);
    // For a permanent refusal, when it was refused (it is never tried again).
    let retry_at = if permanent {
        now
    } else {
        now.saturating_add(retry_after_ms(tries))
    };
    tx.exec(
        "INSERT INTO stop_refusals (account, instrument, reason, permanent, tries, retry_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(account, instrument) DO UPDATE SET reason = ?3, permanent = ?4, tries = ?5, retry_at = ?6",
        params![account, instrument, reason, permanent, tries.saturating_add(1), retry_at],
    )?;
    let detail = if permanent {
        "the broker holds no stop for this position: it is not placed again; the host's own managed exit guards it"
            .to_owned()
    } else {
        format!(
            "placed again after {} s of exchange time; meanwhile the host's own managed exit guards the position",
            retry_after_ms(tries) / 1000
        )
    };
    Ok(Some(Event::ProtectiveStopRefused {
        account,
        instrument,
        client_order_id: coid.to_owned(),
        reason: reason.to_owned(),
        permanent,
        detail,
    }))
}

/// Keep every live position's protective stop in line with its managed exit: record
/// one where a position with a stop has none (unless the broker refused it for good, or
/// a transient refusal's back-off runs), tighten (and resize) one whose exit moved, at
/// most every [`MODIFY_EVERY_MS`] of exchange time, or replace it when its broker's
/// modification budget is nearly spent. `now` is the market's time.
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
        let Some(cfg) = config
            .account(&account)
            .filter(|a| a.exits.broker_stop && live.contains(&account))
        else {
            continue;
        };
        if triggered {
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
        let kind = protective_kind(&instrument, side, stop, cfg.exits.stop_limit_buffer_pct);
        let text = |d: Option<Decimal>| d.map(|v| v.to_string());
        match resting(tx, &account, &instrument)? {
            None => {
                // Refused by the broker for this position: for good, or until its back-off ends.
                let refusal: Option<(bool, i64)> = tx
                    .row(
                        "SELECT permanent, retry_at FROM stop_refusals WHERE account = ?1 AND instrument = ?2",
                        [&account, &instrument],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                if refusal.is_some_and(|(permanent, retry_at)| permanent || now < retry_at) {
                    continue;
                }
                let n: i64 = tx.row("SELECT COUNT(*) FROM orders WHERE account = ?1 AND instrument = ?2 AND pipeline = 'protective-stop'", [&account, &instrument], |r| r.get(0))?;
                let key = format!("protect/{account}/{instrument}/{}", n + 1);
                let coid = client_order_id(&key, &account);
                // A delivery position's stop must outlive the session: a GTT where the broker has one.
                let gtt =
                    cfg.product == crate::domain::Product::Cnc && gtt_broker(cfg.broker.get_ref());
                let (kind, validity) = if gtt {
                    (
                        OrderKind::StopMarket { trigger: stop }
                            .on_tick_of(side, crate::domain::money::tick_of(&instrument)),
                        Some("GTT"),
                    )
                } else {
                    (kind, None)
                };
                tx.exec(
                    "INSERT OR IGNORE INTO orders (client_order_id, signal_id, account, pipeline, instrument, side, qty, state, not_before, slippage_bps, created_at, updated_at,
                         algo_id, order_type, limit_price, trigger_price, modified_at, validity)
                     VALUES (?1, ?2, ?3, 'protective-stop', ?4, ?5, ?6, 'new', ?7, '0', ?8, ?8, (SELECT value FROM settings WHERE key = 'algo/' || ?3), ?9, ?10, ?11, NULL, ?12)",
                    params![coid, key, account, instrument, side.as_str(), want.to_string(), now, now_ms(), kind.code(), text(kind.price()), text(kind.trigger()), validity],
                )?;
                out.push(Outcome::Event(Event::ProtectiveStop {
                    account: account.clone(),
                    instrument: instrument.clone(),
                    client_order_id: coid,
                    trigger: text(kind.trigger()).unwrap_or_default(),
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
                let gtt = r.gtt;
                let kind = if gtt {
                    OrderKind::StopMarket { trigger }
                        .on_tick_of(side, crate::domain::money::tick_of(&instrument))
                } else {
                    protective_kind(&instrument, side, trigger, cfg.exits.stop_limit_buffer_pct)
                };
                if r.state == "new" {
                    // Not sent yet: it goes out with these terms.
                    tx.exec("UPDATE orders SET order_type = ?2, limit_price = ?3, trigger_price = ?4, qty = ?5, modified_at = ?6, updated_at = ?7 WHERE client_order_id = ?1",
                        params![r.coid, kind.code(), text(kind.price()), text(kind.trigger()), want.to_string(), now, now_ms()])?;
                } else if !gtt
                    && modify_budget(cfg.broker.get_ref())
                        .is_some_and(|budget| r.modifications.saturating_add(1) >= budget)
                {
                    // One modification left: the order is cancelled instead and, once the broker
                    // confirms it, a fresh one placed at the stop (the managed exit guards the moment between).
                    if asked.insert(r.coid.clone()) {
                        cancels.push(LiveCancel {
                            account: account.clone(),
                            client_order_id: r.coid.clone(),
                            reason: format!(
                                "{} of its broker's modifications used: replaced by a fresh protective stop",
                                r.modifications
                            ),
                        });
                        out.push(Outcome::Event(Event::ProtectiveStop {
                            account: account.clone(),
                            instrument: instrument.clone(),
                            client_order_id: r.coid,
                            trigger: trigger.to_string(),
                            qty: want.to_string(),
                            action: "replacing".into(),
                        }));
                    }
                    continue;
                } else {
                    // Asked, not yet taken: the journal's trigger and quantity stay the broker's
                    // until it answers.
                    tx.exec("UPDATE orders SET wanted_trigger = ?2, wanted_price = ?3, wanted_qty = ?4, modified_at = ?5, updated_at = ?6 WHERE client_order_id = ?1",
                        params![r.coid, text(kind.trigger()), text(kind.price()), want.to_string(), now, now_ms()])?;
                    modifies.push(LiveModify {
                        account: account.clone(),
                        client_order_id: r.coid.clone(),
                        kind,
                        qty: want,
                    });
                }
                out.push(Outcome::Event(Event::ProtectiveStop {
                    account: account.clone(),
                    instrument: instrument.clone(),
                    client_order_id: r.coid,
                    trigger: text(kind.trigger()).unwrap_or_default(),
                    qty: want.to_string(),
                    action: "moved".into(),
                }));
            }
        }
    }
    Ok(out)
}

/// The broker took new terms for `coid`: the journal's terms become them (what the broker
/// holds), its count of modifications grows, and terms asked for are cleared once taken.
pub(super) fn modified(
    tx: &rusqlite::Transaction<'_>,
    coid: &str,
    kind: OrderKind,
    qty: Decimal,
) -> rusqlite::Result<Option<Event>> {
    let account: Option<String> = tx
        .row(
            "SELECT account FROM orders WHERE client_order_id = ?1",
            [coid],
            |r| r.get(0),
        )
        .optional()?;
    let Some(account) = account else {
        return Ok(None);
    };
    let text = |d: Option<Decimal>| d.map(|v| v.to_string());
    let (price, trigger) = (text(kind.price()), text(kind.trigger()));
    tx.exec(
        "UPDATE orders SET order_type = ?2, limit_price = ?3, trigger_price = ?4, qty = ?5, modifications = modifications + 1,
             wanted_trigger = CASE WHEN wanted_trigger IS ?4 THEN NULL ELSE wanted_trigger END,
             wanted_price = CASE WHEN wanted_trigger IS NULL OR wanted_trigger IS ?4 THEN NULL ELSE wanted_price END,
             wanted_qty = CASE WHEN wanted_qty IS ?5 THEN NULL ELSE wanted_qty END,
             updated_at = ?6 WHERE client_order_id = ?1",
        params![coid, kind.code(), price, trigger, qty.to_string(), now_ms()],
    )?;
    Ok(Some(Event::OrderModified {
        account,
        client_order_id: coid.to_owned(),
        order_type: kind.code().to_owned(),
        trigger,
        price,
        qty: qty.to_string(),
        by: None,
    }))
}

/// The broker refused new terms for `coid`, still working: the journal keeps the terms the
/// broker holds, and says so in an alert. A protective stop that could not follow its exit
/// is cancelled and, once the cancel is confirmed, placed afresh at the stop (the host's
/// managed exit guards the moment between); the terms asked stay recorded meanwhile, so the
/// refused change is not asked again. Any other order keeps its old terms.
pub(super) fn modify_refused(
    tx: &rusqlite::Transaction<'_>,
    coid: &str,
    reason: &str,
    asked: &mut std::collections::HashSet<String>,
    cancels: &mut Vec<LiveCancel>,
) -> rusqlite::Result<Option<Event>> {
    type Row = (
        String,
        String,
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let row: Option<Row> = tx
        .row(
            "SELECT account, instrument, pipeline, state, trigger_price, limit_price, wanted_trigger FROM orders WHERE client_order_id = ?1",
            [coid],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)),
        )
        .optional()?;
    let Some((account, instrument, pipeline, state, held_trigger, held_price, wanted_trigger)) =
        row
    else {
        return Ok(None);
    };
    let working = matches!(
        state.as_str(),
        "submitted" | "accepted" | "triggered" | "partially_filled"
    );
    let detail = if pipeline == PROTECTIVE && working {
        if asked.insert(coid.to_owned()) {
            cancels.push(LiveCancel {
                account: account.clone(),
                client_order_id: coid.to_owned(),
                reason: format!(
                    "its modification was refused ({reason}): replaced by a fresh protective stop"
                ),
            });
        }
        "the broker holds the old stop: it is cancelled and, once the broker confirms it, a fresh one is placed at the stop; the host's managed exit guards the position meanwhile"
    } else {
        tx.exec(
            "UPDATE orders SET wanted_trigger = NULL, wanted_price = NULL, wanted_qty = NULL WHERE client_order_id = ?1",
            [coid],
        )?;
        "the order keeps the terms the broker holds"
    };
    Ok(Some(Event::OrderModifyRefused {
        account,
        instrument,
        client_order_id: coid.to_owned(),
        reason: reason.to_owned(),
        held_trigger,
        held_price,
        wanted_trigger,
        detail: detail.to_owned(),
    }))
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

/// A protective stop as the journal holds it: the terms the broker took, and those asked
/// and not yet taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectiveStop {
    /// Our id.
    pub client_order_id: String,
    /// The instrument it protects.
    pub instrument: String,
    /// Its state (`accepted`, `cancelled`, …).
    pub state: String,
    /// `SL` or `SL-M`.
    pub order_type: String,
    /// The trigger the broker holds.
    pub trigger: Option<Decimal>,
    /// The limit the broker holds (an SL).
    pub price: Option<Decimal>,
    /// A trigger asked for and not yet taken.
    pub wanted_trigger: Option<Decimal>,
    /// Modifications the broker took.
    pub modifications: i64,
}

impl OrderManager {
    /// `account`'s protective stops, oldest first.
    ///
    /// # Errors
    /// A journal failure, or a value the journal cannot hold.
    pub fn protective_stops(&self, account: &str) -> Result<Vec<ProtectiveStop>, OrderError> {
        let mut stmt = self
            .db
            .prepare(
                "SELECT client_order_id, instrument, state, order_type, trigger_price, limit_price, wanted_trigger, modifications FROM orders
                 WHERE account = ?1 AND pipeline = 'protective-stop' ORDER BY rowid",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map([account], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, i64>(7)?,
                ))
            })
            .map_err(self.err())?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(self.err())?;
        rows.into_iter()
            .map(
                |(coid, instrument, state, code, trigger, price, wanted, modifications)| {
                    Ok(ProtectiveStop {
                        order_type: code
                            .ok_or_else(|| journal::corrupt("protective stop order type", &coid))?,
                        trigger: opt_dec(trigger.as_deref())?,
                        price: opt_dec(price.as_deref())?,
                        wanted_trigger: opt_dec(wanted.as_deref())?,
                        client_order_id: coid,
                        instrument,
                        state,
                        modifications,
                    })
                },
            )
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(self.err())
    }

    /// The modifications of working orders since the last call, for the router.
    pub fn take_live_modifies(&mut self) -> Vec<LiveModify> {
        std::mem::take(&mut self.modifies)
    }
}
