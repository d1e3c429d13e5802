//! The journal's schema, its typed column conversions (a value a column cannot
//! hold is an error naming it, never a default), and the two writes every
//! order goes through: a state-machine transition and a fill.

use super::*;

pub mod reads;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS signals (
    signal_id TEXT PRIMARY KEY, ts INTEGER NOT NULL, pipeline TEXT NOT NULL, instrument TEXT NOT NULL,
    side TEXT NOT NULL, price TEXT, stop_loss TEXT, target TEXT, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS decisions (
    signal_id TEXT NOT NULL, account TEXT NOT NULL, outcome TEXT NOT NULL,
    client_order_id TEXT, at INTEGER NOT NULL, PRIMARY KEY (signal_id, account));
CREATE TABLE IF NOT EXISTS orders (
    client_order_id TEXT PRIMARY KEY, signal_id TEXT NOT NULL, account TEXT NOT NULL,
    pipeline TEXT NOT NULL, instrument TEXT NOT NULL, side TEXT NOT NULL, qty TEXT NOT NULL,
    state TEXT NOT NULL, not_before INTEGER NOT NULL, slippage_bps TEXT NOT NULL,
    fill_price TEXT, fill_ts INTEGER, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS fills (
    client_order_id TEXT NOT NULL, seq INTEGER NOT NULL, account TEXT NOT NULL, instrument TEXT NOT NULL,
    side TEXT NOT NULL, qty TEXT NOT NULL, price TEXT NOT NULL, ts INTEGER NOT NULL, PRIMARY KEY (client_order_id, seq));
CREATE TABLE IF NOT EXISTS positions (
    account TEXT NOT NULL, instrument TEXT NOT NULL, qty TEXT NOT NULL, avg_price TEXT NOT NULL,
    realized TEXT NOT NULL, lots TEXT NOT NULL DEFAULT '', PRIMARY KEY (account, instrument));
CREATE TABLE IF NOT EXISTS paper_book (
    client_order_id TEXT PRIMARY KEY, account TEXT NOT NULL, instrument TEXT NOT NULL,
    side TEXT NOT NULL, qty TEXT NOT NULL, not_before INTEGER NOT NULL, state TEXT NOT NULL,
    fill_price TEXT, fill_ts INTEGER);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS watchers (
    watch_id TEXT PRIMARY KEY, account TEXT NOT NULL, instrument TEXT NOT NULL, level TEXT NOT NULL, up INTEGER NOT NULL,
    side TEXT NOT NULL, order_instrument TEXT NOT NULL, qty TEXT NOT NULL, state TEXT NOT NULL, reference TEXT,
    fired_ts INTEGER, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS baskets (
    basket_id TEXT PRIMARY KEY, account TEXT NOT NULL, state TEXT NOT NULL, unwind INTEGER NOT NULL, ts INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS basket_legs (
    basket_id TEXT NOT NULL, idx INTEGER NOT NULL, instrument TEXT NOT NULL, side TEXT NOT NULL, qty TEXT NOT NULL,
    client_order_id TEXT, state TEXT NOT NULL, PRIMARY KEY (basket_id, idx));
CREATE TABLE IF NOT EXISTS exits (
    account TEXT NOT NULL, instrument TEXT NOT NULL, long INTEGER NOT NULL, stop TEXT, target TEXT, trail_pct TEXT,
    best TEXT NOT NULL, trailed INTEGER NOT NULL, triggered INTEGER NOT NULL, PRIMARY KEY (account, instrument));
CREATE TABLE IF NOT EXISTS daily_pnl (
    account TEXT NOT NULL, day INTEGER NOT NULL, realized TEXT NOT NULL, PRIMARY KEY (account, day));
CREATE TABLE IF NOT EXISTS entries (
    pipeline TEXT NOT NULL, instrument TEXT NOT NULL, ts INTEGER NOT NULL, PRIMARY KEY (pipeline, instrument));
CREATE TABLE IF NOT EXISTS transitions (
    client_order_id TEXT NOT NULL, seq INTEGER NOT NULL, from_state TEXT NOT NULL, event TEXT NOT NULL,
    to_state TEXT NOT NULL, at INTEGER NOT NULL, PRIMARY KEY (client_order_id, seq));
CREATE TABLE IF NOT EXISTS stop_refusals (
    account TEXT NOT NULL, instrument TEXT NOT NULL, reason TEXT NOT NULL, permanent INTEGER NOT NULL,
    tries INTEGER NOT NULL, retry_at INTEGER NOT NULL, PRIMARY KEY (account, instrument));
CREATE INDEX IF NOT EXISTS orders_open ON orders (state, instrument);
CREATE INDEX IF NOT EXISTS orders_by_account_time ON orders (account, not_before);
CREATE INDEX IF NOT EXISTS paper_open ON paper_book (state, instrument);
CREATE INDEX IF NOT EXISTS fills_by_position ON fills (account, instrument, ts);
";

/// Commit times of this process's journal, for the metrics.
pub static COMMIT_TIMES: crate::domain::stats::Histogram = crate::domain::stats::Histogram::new();

/// Commit `tx`, timed into [`COMMIT_TIMES`] (a durable journal waits for the disk here).
pub(super) fn commit(tx: rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    let started = std::time::Instant::now();
    let done = tx.commit();
    COMMIT_TIMES.observe(started.elapsed());
    done
}

/// Statements through the connection's cache: the journal runs the same few dozen
/// statements for every price and decision, and parsing them each time was most of a
/// backtest's journal time.
pub(super) trait Cached {
    /// `execute`, prepared once.
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
    /// `query_row`, prepared once.
    fn row<T, P: rusqlite::Params, F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>>(
        &self,
        sql: &str,
        params: P,
        f: F,
    ) -> rusqlite::Result<T>;
}

impl Cached for rusqlite::Connection {
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    fn row<T, P: rusqlite::Params, F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>>(
        &self,
        sql: &str,
        params: P,
        f: F,
    ) -> rusqlite::Result<T> {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

/// A journal value its column cannot hold (a hand-edited or damaged journal):
/// an error naming it, never a default that would move money.
pub(super) fn corrupt(what: &str, text: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("the journal's {what} {text:?} is not valid").into(),
    )
}

/// A decimal column.
pub(super) fn dec(text: &str) -> rusqlite::Result<Decimal> {
    Decimal::from_str(text).map_err(|_| corrupt("number", text))
}

/// An optional decimal column.
pub(super) fn opt_dec(text: Option<&str>) -> rusqlite::Result<Option<Decimal>> {
    text.map(dec).transpose()
}

/// An order side column.
pub(super) fn side_of(text: &str) -> rusqlite::Result<OrderSide> {
    OrderSide::parse(text).ok_or_else(|| corrupt("order side", text))
}

/// A position's lots column.
pub(super) fn lots_of(
    text: &str,
) -> rusqlite::Result<std::collections::VecDeque<crate::brokers::paper::Lot>> {
    Position::parse_lots(text).ok_or_else(|| corrupt("position lots", text))
}

/// Move an order through the state machine inside `tx`, appending the
/// transition to the journal. A transition the table refuses changes nothing
/// and comes back as the inner error.
pub(super) fn advance(
    tx: &rusqlite::Transaction<'_>,
    coid: &str,
    event: state::OrderEvent,
) -> rusqlite::Result<Result<state::OrderState, state::InvalidTransition>> {
    let current: String = tx.row(
        "SELECT state FROM orders WHERE client_order_id = ?1",
        [coid],
        |r| r.get(0),
    )?;
    let from = state::OrderState::parse(&current)
        .ok_or_else(|| corrupt(&format!("state of order {coid}"), &current))?;
    let to = match state::transition(from, event) {
        Ok(to) => to,
        Err(e) => return Ok(Err(e)),
    };
    let now = now_ms();
    tx.exec(
        "INSERT INTO transitions (client_order_id, seq, from_state, event, to_state, at)
         VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM transitions WHERE client_order_id = ?1), ?2, ?3, ?4, ?5)",
        params![coid, from.as_str(), format!("{event:?}"), to.as_str(), now],
    )?;
    tx.exec(
        "UPDATE orders SET state = ?2, updated_at = ?3 WHERE client_order_id = ?1",
        params![coid, to.as_str(), now],
    )?;
    Ok(Ok(to))
}

/// Withdraw an order on the paper venue (`sent`), or a live one never sent: its paper book
/// entry cancelled and the order taken through its cancel. Returns the states it passed.
pub(super) fn withdraw(
    tx: &rusqlite::Transaction<'_>,
    coid: &str,
    sent: bool,
) -> rusqlite::Result<Vec<&'static str>> {
    tx.exec(
        "UPDATE paper_book SET state = 'cancelled' WHERE client_order_id = ?1 AND state = 'open'",
        [coid],
    )?;
    let events: &[state::OrderEvent] = if !sent {
        &[state::OrderEvent::Cancel]
    } else {
        &[state::OrderEvent::CancelRequest, state::OrderEvent::Cancel]
    };
    let mut passed = Vec::with_capacity(events.len());
    for event in events {
        if let Ok(to) = advance(tx, coid, *event)? {
            passed.push(to.as_str());
        }
    }
    Ok(passed)
}

/// Record a fill inside `tx`, whole (`Fill`) or partial (`PartialFill`): the
/// fill, the position it changes, the paper book and the order.
#[allow(clippy::too_many_arguments)]
pub(super) fn record_fill(
    tx: &rusqlite::Transaction<'_>,
    coid: &str,
    account: &str,
    instrument: &str,
    side: OrderSide,
    qty: Decimal,
    price: Decimal,
    ts: i64,
    event: state::OrderEvent,
) -> rusqlite::Result<Result<(), state::InvalidTransition>> {
    // The state machine first: a fill for an order that cannot take one changes nothing.
    if let Err(refused) = advance(tx, coid, event)? {
        return Ok(Err(refused));
    }
    let held: Option<(String, String, String)> = tx
        .row(
            "SELECT qty, realized, lots FROM positions WHERE account = ?1 AND instrument = ?2",
            [account, instrument],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let before = match held {
        Some((q, r, lots)) => Position {
            qty: dec(&q)?,
            lots: lots_of(&lots)?,
            realized: dec(&r)?,
        },
        None => Position::default(),
    };
    let (realized_before, before_qty) = (before.realized, before.qty);
    let after = before.apply_fill(side, qty, price, ts);
    let day = crate::domain::time::ist_day(ts);
    let today: Option<String> = tx
        .row(
            "SELECT realized FROM daily_pnl WHERE account = ?1 AND day = ?2",
            params![account, day],
            |r| r.get(0),
        )
        .optional()?;
    let today = opt_dec(today.as_deref())?.unwrap_or_default() + (after.realized - realized_before);
    tx.exec(
        "INSERT INTO daily_pnl (account, day, realized) VALUES (?1, ?2, ?3) ON CONFLICT(account, day) DO UPDATE SET realized = ?3",
        params![account, day, today.to_string()],
    )?;
    tx.exec(
        "INSERT INTO positions (account, instrument, qty, avg_price, realized, lots) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(account, instrument) DO UPDATE SET qty = ?3, avg_price = ?4, realized = ?5, lots = ?6",
        params![account, instrument, after.qty.to_string(), after.avg_price().to_string(), after.realized.to_string(), after.lots_text()],
    )?;
    arm_exit(tx, coid, account, instrument, &before_qty, &after, price)?;
    tx.exec(
        "INSERT INTO fills (client_order_id, seq, account, instrument, side, qty, price, ts)
         VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM fills WHERE client_order_id = ?1), ?2, ?3, ?4, ?5, ?6, ?7)",
        params![coid, account, instrument, side.as_str(), qty.to_string(), price.to_string(), ts],
    )?;
    tx.exec("UPDATE paper_book SET state = 'filled', fill_price = ?2, fill_ts = ?3 WHERE client_order_id = ?1", params![coid, price.to_string(), ts])?;
    tx.exec(
        "UPDATE orders SET fill_price = ?2, fill_ts = ?3 WHERE client_order_id = ?1",
        params![coid, price.to_string(), ts],
    )?;
    Ok(Ok(()))
}
