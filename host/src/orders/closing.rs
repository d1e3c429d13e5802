//! Closing positions the host decides itself, in the journal: the managed
//! exit armed by a fill, the square-off (the rule shared with the backtest,
//! the orders it makes, entries cancelled before it), and the closing orders'
//! keys, so that each is placed once.

use super::*;

impl OrderManager {
    /// Move the managed exits of `quote`'s instrument, square off intraday
    /// positions at the account's square-off time, and record the closing
    /// orders; returns the events to publish.
    pub(super) fn manage_exits(
        config: &Config,
        tx: &rusqlite::Transaction<'_>,
        ts: i64,
        quote: &crate::bus::message::Quote,
    ) -> rusqlite::Result<Vec<Outcome>> {
        let mut out = Vec::new();
        type ExitRow = (
            String,
            bool,
            Option<String>,
            Option<String>,
            Option<String>,
            String,
            bool,
            bool,
            String,
        );
        let rows: Vec<ExitRow> = {
            let mut stmt = tx.prepare_cached(
                "SELECT e.account, e.long, e.stop, e.target, e.trail_pct, e.best, e.trailed, e.triggered, p.qty FROM exits e
                 JOIN positions p ON p.account = e.account AND p.instrument = e.instrument WHERE e.instrument = ?1",
            )?;

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
                    r.get(8)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?
        };
        for (account, long, stop, target, trail, best, trailed, triggered, qty) in rows {
            let qty = dec(&qty)?;
            if qty.is_zero() {
                continue;
            }
            let cfg = config.account(&account);
            let slippage = cfg.map(|a| a.slippage_bps).unwrap_or_default();
            let mis = cfg.is_some_and(|a| a.product == crate::domain::Product::Mis);
            if let Some(due) = cfg
                .map(|a| square_off_due(tx, config, a, &account, &quote.instrument, qty, ts))
                .transpose()?
                .flatten()
            {
                out.extend(due.queue(
                    tx,
                    config,
                    &account,
                    &quote.instrument,
                    qty,
                    slippage,
                    Some(quote.close),
                )?);
                continue;
            }
            if triggered {
                continue;
            }
            let mut exit = exits::ManagedExit {
                long,
                stop: opt_dec(stop.as_deref())?,
                target: opt_dec(target.as_deref())?,
                trail_pct: opt_dec(trail.as_deref())?.filter(|p| *p > Decimal::ZERO),
                best: dec(&best)?,
                trailed,
                triggered,
                tick: crate::domain::money::tick_of(&quote.instrument),
            };
            // Intraday positions trail the side they would close at: a long the best bid, a
            // short the best ask; delivery positions (and quotes without depth) the last price.
            let touch = if long { quote.bid } else { quote.ask };
            let trail_price = if mis {
                touch.unwrap_or(quote.close)
            } else {
                quote.close
            };
            let reason = exit.on_price(quote.high, quote.low, trail_price);
            save_exit(tx, &account, &quote.instrument, &exit)?;
            if let Some(reason) = reason {
                let key = format!("{reason}/{account}/{}/{ts}", quote.instrument);
                let (new, sliced) = queue_close(
                    tx,
                    Some(config),
                    &account,
                    &quote.instrument,
                    qty,
                    &key,
                    reason,
                    ts,
                    slippage,
                )?;
                out.extend(sliced);
                if new {
                    out.push(Outcome::Event(Event::ExitTriggered {
                        account: account.clone(),
                        instrument: quote.instrument.clone(),
                        reason: reason.to_owned(),
                        stop: exit.stop.map(|d| d.to_string()),
                        target: exit.target.map(|d| d.to_string()),
                        price: quote.close.to_string(),
                        qty: qty.abs().to_string(),
                    }));
                }
            }
        }
        Ok(out)
    }
}

/// Keep the managed exit in line with a fill: a new (or reversed) position
/// gets one from its order's stop and target and the account's exit rules
/// (stored on the order's account row by `set_exit_rules`); a closed one loses it.
pub(super) fn arm_exit(
    tx: &rusqlite::Transaction<'_>,
    coid: &str,
    account: &str,
    instrument: &str,
    before: &Decimal,
    after: &Position,
    price: Decimal,
) -> rusqlite::Result<()> {
    let opened = before.is_zero() || before.is_sign_positive() != after.qty.is_sign_positive();
    if after.qty.is_zero() || opened {
        // A broker's refusal of a protective stop belongs to the position it was for.
        tx.exec(
            "DELETE FROM stop_refusals WHERE account = ?1 AND instrument = ?2",
            [account, instrument],
        )?;
    }
    if after.qty.is_zero() {
        tx.exec(
            "DELETE FROM exits WHERE account = ?1 AND instrument = ?2",
            [account, instrument],
        )?;
        return Ok(());
    }
    if !opened {
        return Ok(());
    }
    let (stop, target): (Option<String>, Option<String>) = tx.row(
        "SELECT stop_loss, target FROM orders WHERE client_order_id = ?1",
        [coid],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let rules: Option<String> = tx
        .row(
            "SELECT value FROM settings WHERE key = ?1",
            [format!("exits/{account}")],
            |r| r.get(0),
        )
        .optional()?;
    let rules: Vec<Decimal> = rules
        .as_deref()
        .unwrap_or("0,0,0")
        .split(',')
        .map(dec)
        .collect::<rusqlite::Result<_>>()?;
    let (sl_pct, tp_pct, trail_pct) = (
        rules.first().copied().unwrap_or_default(),
        rules.get(1).copied().unwrap_or_default(),
        rules.get(2).copied().unwrap_or_default(),
    );
    let rules = crate::config::ExitRules {
        stop_loss_pct: sl_pct,
        target_pct: tp_pct,
        trailing_pct: trail_pct,
        ..crate::config::ExitRules::default()
    };
    let exit = exits::ManagedExit::arm(
        after.qty > Decimal::ZERO,
        price,
        opt_dec(stop.as_deref())?,
        opt_dec(target.as_deref())?,
        &rules,
        crate::domain::money::tick_of(instrument),
    );
    save_exit(tx, account, instrument, &exit)
}

pub(super) fn save_exit(
    tx: &rusqlite::Transaction<'_>,
    account: &str,
    instrument: &str,
    e: &exits::ManagedExit,
) -> rusqlite::Result<()> {
    tx.exec(
        "INSERT INTO exits (account, instrument, long, stop, target, trail_pct, best, trailed, triggered) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT(account, instrument) DO UPDATE SET long = ?3, stop = ?4, target = ?5, trail_pct = ?6, best = ?7, trailed = ?8, triggered = ?9",
        params![
            account,
            instrument,
            e.long,
            e.stop.map(|d| d.to_string()),
            e.target.map(|d| d.to_string()),
            e.trail_pct.map(|d| d.to_string()),
            e.best.to_string(),
            e.trailed,
            e.triggered
        ],
    )?;
    Ok(())
}

/// The start (ms since the epoch) of IST day `day`: the square-off's due times are minutes after it.
fn ist_midnight(day: i64) -> i64 {
    day.saturating_mul(86_400_000)
        .saturating_sub(crate::domain::time::IST_OFFSET_MS)
}

/// An intraday close the clock calls for.
pub(super) struct SquareOff {
    /// `square-off` (the day's time has come) or `carried` (left open from an earlier day).
    reason: &'static str,
    key: String,
    /// The moment it is due: the paper fill is the first price after it.
    not_before: i64,
}

impl SquareOff {
    /// Record the closing order (once per key) and mark the exit as done; the events to publish.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn queue(
        &self,
        tx: &rusqlite::Transaction<'_>,
        config: &Config,
        account: &str,
        instrument: &str,
        qty: Decimal,
        slippage: Decimal,
        price: Option<Decimal>,
    ) -> rusqlite::Result<Vec<Outcome>> {
        tx.exec(
            "UPDATE exits SET triggered = 1 WHERE account = ?1 AND instrument = ?2",
            [account, instrument],
        )?;
        let (new, sliced) = queue_close(
            tx,
            Some(config),
            account,
            instrument,
            qty,
            &self.key,
            self.reason,
            self.not_before,
            slippage,
        )?;
        if !new {
            return Ok(Vec::new());
        }
        let (account, instrument, reason, price, qty, due) = (
            account.to_owned(),
            instrument.to_owned(),
            self.reason.to_owned(),
            price.map(|p| p.to_string()),
            qty.abs().to_string(),
            self.not_before,
        );
        let mut out = vec![Outcome::Event(Event::SquareOff {
            account: account.clone(),
            instrument: instrument.clone(),
            reason: reason.clone(),
            price: price.clone(),
            qty: qty.clone(),
            due,
        })];
        out.extend(sliced);
        if self.reason == "carried" {
            let detail =
                "an intraday position was left open past its session; squared off at the open"
                    .to_owned();
            out.push(Outcome::Event(Event::PositionCarried {
                account,
                instrument,
                reason,
                price,
                qty,
                due,
                detail,
            }));
        }
        Ok(out)
    }
}

/// Square-off orders tried per position and day: a square-off refused by the
/// broker is placed again (a new order) up to this many times in all.
pub(super) const SQUARE_OFF_TRIES: i64 = 3;

/// The square-off rule, the same for the order manager and the backtest: an
/// intraday position (last filled at `last_fill`) is due to close at `now`
/// `carried` when it was left open from an earlier day (from the session's
/// open: its first price fills it), or `square-off` from the account's
/// `square_off` minute on. Returns the reason and the moment it is due (the
/// fill is the first price after it). A regular session; see [`square_off_rule_in`].
#[must_use]
pub fn square_off_rule(
    square_off: u32,
    now: i64,
    last_fill: Option<i64>,
) -> Option<(&'static str, i64)> {
    square_off_rule_in(crate::domain::calendar::REGULAR, square_off, now, last_fill)
}

/// [`square_off_rule`] on a day of trading `hours`, `square_off` already carried to them.
#[must_use]
pub fn square_off_rule_in(
    hours: crate::domain::calendar::Hours,
    square_off: u32,
    now: i64,
    last_fill: Option<i64>,
) -> Option<(&'static str, i64)> {
    use crate::domain::time::{ist_day, ist_minute_of_day};
    let (day, minute) = (ist_day(now), ist_minute_of_day(now));
    let midnight = ist_midnight(day);
    if minute >= hours.open && last_fill.is_some_and(|t| ist_day(t) < day) {
        return Some(("carried", midnight + i64::from(hours.open) * 60_000 - 1));
    }
    (minute >= square_off && minute >= hours.open.min(square_off))
        .then(|| ("square-off", midnight + i64::from(square_off) * 60_000))
}

/// When `account`'s intraday positions in `instrument` are squared off on `now`'s
/// day: the day's trading hours and the square-off minute of the instrument's
/// segment carried to them. `None` for delivery accounts and on a day the market
/// is closed (a holiday: no square-off orders).
pub(super) fn square_off_today(
    config: &Config,
    account: &crate::config::Account,
    instrument: &str,
    now: i64,
) -> Option<(crate::domain::calendar::Hours, u32)> {
    if account.product != crate::domain::Product::Mis {
        return None;
    }
    let hours = config
        .market
        .calendar
        .hours(crate::domain::time::ist_day(now))?;
    let square_off = account.square_off_minute(crate::domain::Segment::of(instrument))?;
    Some((hours, hours.shift(square_off)))
}

/// Whether `account`'s intraday position in `instrument` must be closed at `now`:
/// at or after the account's square-off time, or, from the session's open, when
/// it was opened on an earlier day. Never while an order is working on it (an
/// entry being cancelled at the square-off, a close on its way): the close then
/// covers what that order leaves. A position that is still open after its
/// square-off (a close refused, a cancelled entry that filled a part meanwhile)
/// is closed again, up to [`SQUARE_OFF_TRIES`] orders a day.
#[allow(clippy::too_many_arguments)]
pub(super) fn square_off_due(
    tx: &rusqlite::Transaction<'_>,
    config: &Config,
    account: &crate::config::Account,
    account_id: &str,
    instrument: &str,
    qty: Decimal,
    now: i64,
) -> rusqlite::Result<Option<SquareOff>> {
    use crate::domain::time::{ist_day, ist_minute_of_day};
    let (day, minute) = (ist_day(now), ist_minute_of_day(now));
    // A short option on its expiry day, from the account's `expiry_square_off`, whatever the product.
    let expiring = config.market.calendar.hours(day).and_then(|hours| {
        let at = hours.shift(crate::domain::time::parse_hhmm(
            &account.exits.expiry_square_off,
        )?);
        let option = crate::domain::contracts::is_option(instrument);
        (option
            && qty < Decimal::ZERO
            && crate::domain::contracts::expiry_day(instrument) == Some(day)
            && minute >= at)
            .then_some(at)
    });
    let intraday = square_off_today(config, account, instrument, now)
        .filter(|(hours, square_off)| minute >= hours.open.min(*square_off));
    if expiring.is_none() && intraday.is_none() {
        return Ok(None);
    }
    // A protective stop resting at the broker is not in the way: the close cancels it first.
    let working: i64 = tx.row(
        "SELECT COUNT(*) FROM orders WHERE account = ?1 AND instrument = ?2 AND pipeline != 'protective-stop' AND state IN ('new', 'submitted', 'accepted', 'triggered', 'partially_filled', 'pending_cancel')",
        [account_id, instrument],
        |r| r.get(0),
    )?;
    if working > 0 {
        return Ok(None);
    }
    if let Some(at) = expiring {
        let midnight = ist_midnight(day);
        return Ok(Some(SquareOff {
            reason: "expiry",
            key: format!("expiry/{account_id}/{instrument}/{day}"),
            not_before: midnight + i64::from(at) * 60_000,
        }));
    }
    let Some((hours, square_off)) = intraday else {
        return Ok(None);
    };
    let last_fill: Option<i64> = tx.row(
        "SELECT MAX(ts) FROM fills WHERE account = ?1 AND instrument = ?2",
        [account_id, instrument],
        |r| r.get(0),
    )?;
    match square_off_rule_in(hours, square_off, now, last_fill) {
        None => Ok(None),
        Some(("carried", not_before)) => Ok(Some(SquareOff {
            reason: "carried",
            key: format!("carried/{account_id}/{instrument}/{day}"),
            not_before,
        })),
        Some((reason, due)) => {
            let key = format!("square-off/{account_id}/{instrument}/{day}");
            let tried: i64 = tx.row(
                "SELECT COUNT(*) FROM orders WHERE account = ?1 AND instrument = ?2 AND pipeline = 'square-off' AND (signal_id = ?3 OR signal_id LIKE ?3 || '/%')",
                [account_id, instrument, &key],
                |r| r.get(0),
            )?;
            if tried >= SQUARE_OFF_TRIES {
                return Ok(None);
            }
            let key = if tried == 0 {
                key
            } else {
                format!("{key}/{}", tried + 1)
            };
            Ok(Some(SquareOff {
                reason,
                key,
                not_before: if tried == 0 { due } else { due.max(now) },
            }))
        }
    }
}

/// At an intraday account's square-off time, its entries still working are
/// cancelled before the position is closed: a paper order here, a live one by
/// asking the broker through `cancels` (once per order; the router reports what
/// the broker then did). Only entries decided within `[live] cancel_after_secs`
/// of `now` by the market's time: older ones are the router's to cancel for
/// want of a fill (by the wall clock), and a replay that runs the market faster
/// than a broker answers does not cancel what the broker simply has not filled
/// yet; the square-off then waits for them. `now` is the clock's time (every instrument) or a
/// price's (only the instruments in `priced`: pipelines replay at their own
/// pace, and one instrument's 15:15 is not another's). Returns the journal's transitions.
#[allow(clippy::too_many_arguments)]
pub(super) fn cancel_entries_at_square_off(
    tx: &rusqlite::Transaction<'_>,
    config: &Config,
    live: &std::collections::HashSet<String>,
    asked: &mut std::collections::HashSet<String>,
    cancels: &mut Vec<crate::brokers::live::LiveCancel>,
    now: i64,
    priced: Option<&[&str]>,
) -> rusqlite::Result<Vec<(String, &'static str, Value)>> {
    use crate::domain::time::{ist_day, ist_minute_of_day};
    let minute = ist_minute_of_day(now);
    let Some(hours) = config.market.calendar.hours(ist_day(now)) else {
        return Ok(Vec::new());
    };
    let any_due = |a: &crate::config::Account| {
        a.product == crate::domain::Product::Mis
            && a.earliest_square_off()
                .is_some_and(|sq| minute >= hours.shift(sq))
    };
    if !config.accounts.iter().any(any_due) {
        return Ok(Vec::new());
    }
    let due = |a: &crate::config::Account, instrument: &str| {
        square_off_today(config, a, instrument, now).is_some_and(|(_, sq)| minute >= sq)
    };
    let working: Vec<(String, String, String, i64, String)> = {
        let mut stmt = tx.prepare_cached(
            "SELECT client_order_id, account, pipeline, not_before, instrument FROM orders WHERE state IN ('submitted', 'accepted', 'triggered', 'partially_filled') ORDER BY rowid",
        )?;

        stmt.query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?
    };
    // An order asked about is remembered only while it still works without a journaled
    // cancel request: once the router has reported the request it leaves this list.
    asked.retain(|c| working.iter().any(|w| &w.0 == c));
    let mut transitions = Vec::new();
    let reason = "square-off: an entry still working at the account's square-off time";
    let recent = match config.live.cancel_after_secs {
        0 => i64::MAX,
        secs => i64::try_from(secs)
            .unwrap_or(i64::MAX)
            .saturating_mul(1_000),
    };
    for (coid, account, pipeline, decided, instrument) in working {
        if CLOSE_REASONS.contains(&pipeline.as_str())
            || decided > now
            || (live.contains(&account) && now.saturating_sub(decided) > recent)
            || priced.is_some_and(|p| !p.contains(&instrument.as_str()))
            || !config
                .account(&account)
                .is_some_and(|a| due(a, &instrument))
        {
            continue;
        }
        if live.contains(&account) {
            if asked.insert(coid.clone()) {
                cancels.push(crate::brokers::live::LiveCancel {
                    account,
                    client_order_id: coid,
                    reason: reason.to_owned(),
                });
            }
            continue;
        }
        // The paper venue cancels at once.
        for to in journal::withdraw(tx, &coid, true)? {
            transitions.push((coid.clone(), to, json!({ "reason": reason })));
        }
    }
    Ok(transitions)
}

/// The `pipeline` of the orders the host makes itself to close a position
/// (never cancelled for want of a fill: a close that does not fill keeps working).
pub const CLOSE_REASONS: [&str; 10] = [
    super::reconcile::RECONCILE,
    "stop-loss",
    "target",
    "trailing-stop",
    "square-off",
    "carried",
    "expiry",
    "flatten",
    "basket-unwind",
    "protective-stop",
];

/// Record a market order that closes `account`'s position in `instrument`
/// (an exit, a square-off, a flatten), keyed so that it is placed once; sliced
/// above the freeze quantity under `config`'s rules (`None`: never). Returns
/// whether it is new, and the slicing's event.
#[allow(clippy::too_many_arguments)]
pub(super) fn queue_close(
    tx: &rusqlite::Transaction<'_>,
    config: Option<&Config>,
    account: &str,
    instrument: &str,
    qty: Decimal,
    key: &str,
    reason: &str,
    not_before: i64,
    slippage: Decimal,
) -> rusqlite::Result<(bool, Option<Outcome>)> {
    let side = if qty > Decimal::ZERO {
        OrderSide::Sell
    } else {
        OrderSide::Buy
    };
    let coid = client_order_id(key, account);
    let order = super::slicing::NewOrder {
        coid: &coid,
        signal_id: key,
        account,
        pipeline: reason,
        instrument,
        side,
        qty: qty.abs(),
        not_before,
        slippage,
        stop_loss: None,
        target: None,
        opens: false,
        kind: Default::default(),
        validity: Default::default(),
        pace_from: 0,
    };
    super::slicing::record_order(tx, config, &order)
}
