//! The order manager: every decision, order, fill and position change is
//! written to a SQLite journal (WAL) before it is acted on, so a process
//! killed at any point restarts where it stopped and never places an order
//! twice.
//!
//! Per signal and account it records one decision (an order, nothing to do,
//! or a refusal) in one transaction; only then is the order sent to the
//! broker, and only after every account's decision is committed is the
//! signal acknowledged on the bus. On start, orders recorded but not yet
//! accepted by the broker are sent again; the paper broker's book is keyed
//! by client order id, so a repeat is a no-op.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

use rusqlite::{Connection, OptionalExtension, params};
use rust_decimal::Decimal;
use serde_json::{Value, json};

pub mod state;

use crate::brokers::paper::{Position, fill_price};
use crate::bus::message::{QuotesMessage, SignalMessage, envelope, now_ms};
use crate::config::Config;
use crate::subscriber::{OrderSide, client_order_id, intent};

/// A journal failure.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// SQLite refused.
    #[error("journal {path}: {source}")]
    Journal {
        /// The journal file.
        path: String,
        /// The SQLite error.
        source: rusqlite::Error,
    },
}

/// Something to publish after a journal write: `(channel kind, JSON)`.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// An order lifecycle message for `<prefix>:orders`.
    Order(String),
    /// An event (name, fields) for `<prefix>:events`.
    Event(&'static str, Value),
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS decisions (
    signal_id TEXT NOT NULL, account TEXT NOT NULL, outcome TEXT NOT NULL,
    client_order_id TEXT, at INTEGER NOT NULL, PRIMARY KEY (signal_id, account));
CREATE TABLE IF NOT EXISTS orders (
    client_order_id TEXT PRIMARY KEY, signal_id TEXT NOT NULL, account TEXT NOT NULL,
    pipeline TEXT NOT NULL, instrument TEXT NOT NULL, side TEXT NOT NULL, qty TEXT NOT NULL,
    state TEXT NOT NULL, not_before INTEGER NOT NULL, slippage_bps TEXT NOT NULL,
    fill_price TEXT, fill_ts INTEGER, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS fills (
    client_order_id TEXT PRIMARY KEY, account TEXT NOT NULL, instrument TEXT NOT NULL,
    side TEXT NOT NULL, qty TEXT NOT NULL, price TEXT NOT NULL, ts INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS positions (
    account TEXT NOT NULL, instrument TEXT NOT NULL, qty TEXT NOT NULL, avg_price TEXT NOT NULL,
    realized TEXT NOT NULL, lots TEXT NOT NULL DEFAULT '', PRIMARY KEY (account, instrument));
CREATE TABLE IF NOT EXISTS paper_book (
    client_order_id TEXT PRIMARY KEY, account TEXT NOT NULL, instrument TEXT NOT NULL,
    side TEXT NOT NULL, qty TEXT NOT NULL, not_before INTEGER NOT NULL, state TEXT NOT NULL,
    fill_price TEXT, fill_ts INTEGER);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS transitions (
    client_order_id TEXT NOT NULL, seq INTEGER NOT NULL, from_state TEXT NOT NULL, event TEXT NOT NULL,
    to_state TEXT NOT NULL, at INTEGER NOT NULL, PRIMARY KEY (client_order_id, seq));
CREATE INDEX IF NOT EXISTS orders_open ON orders (state, instrument);
CREATE INDEX IF NOT EXISTS paper_open ON paper_book (state, instrument);
";

fn dec(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap_or_default()
}

/// The order manager of one process (the orders role).
pub struct OrderManager {
    db: Connection,
    path: String,
    config: std::sync::Arc<Config>,
    mode: &'static str,
    last: HashMap<String, (i64, Decimal)>,
    /// Recent opens per instrument: an order recorded after the first price
    /// following its signal has already gone by (prices and signals travel
    /// separately) still fills at that price, so paper fills do not depend on
    /// which message happened to be handled first.
    recent: Recent,
}

/// Recent `(ts, open)` prices per instrument, oldest first.
type Recent = HashMap<String, std::collections::VecDeque<(i64, Decimal)>>;

/// Prices kept per instrument for late orders.
const RECENT_PRICES: usize = 4096;

impl std::fmt::Debug for OrderManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderManager").field("path", &self.path).field("mode", &self.mode).finish_non_exhaustive()
    }
}

impl OrderManager {
    /// Open (or create) the journal at `path`.
    ///
    /// # Errors
    /// When SQLite cannot open or set it up.
    pub fn open(path: &Path, config: std::sync::Arc<Config>, mode: &'static str) -> Result<Self, OrderError> {
        let p = path.display().to_string();
        let err = |source| OrderError::Journal { path: p.clone(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        let db = Connection::open(path).map_err(err)?;
        // WAL: readers never block the writer; FULL: a committed decision survives a crash.
        db.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        db.pragma_update(None, "synchronous", "FULL").map_err(err)?;
        db.busy_timeout(std::time::Duration::from_secs(5)).map_err(err)?;
        db.execute_batch(SCHEMA).map_err(err)?;
        Ok(Self { db, path: p, config, mode, last: HashMap::new(), recent: HashMap::new() })
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> OrderError + '_ {
        |source| OrderError::Journal { path: self.path.clone(), source }
    }

    /// Replace the configuration (accounts, pipelines) used for new decisions.
    pub fn set_config(&mut self, config: std::sync::Arc<Config>) {
        self.config = config;
    }

    /// Whether the kill switch is on (persisted: a restart does not release it).
    ///
    /// # Errors
    /// A journal failure.
    pub fn kill_switch(&self) -> Result<bool, OrderError> {
        let v: Option<String> = self.db.query_row("SELECT value FROM settings WHERE key = 'kill'", [], |r| r.get(0)).optional().map_err(self.err())?;
        Ok(v.as_deref() == Some("on"))
    }

    /// Turn the kill switch on or off.
    ///
    /// # Errors
    /// A journal failure.
    pub fn set_kill_switch(&self, on: bool) -> Result<(), OrderError> {
        self.db
            .execute("INSERT INTO settings (key, value) VALUES ('kill', ?1) ON CONFLICT(key) DO UPDATE SET value = ?1", [if on { "on" } else { "off" }])
            .map(|_| ())
            .map_err(self.err())
    }

    fn order_message(&self, coid: &str, state: &str, extra: Value) -> Result<String, OrderError> {
        let row = self
            .db
            .query_row(
                "SELECT signal_id, account, pipeline, instrument, side, qty FROM orders WHERE client_order_id = ?1",
                [coid],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?, r.get::<_, String>(4)?, r.get::<_, String>(5)?)),
            )
            .map_err(self.err())?;
        let mut body = json!({
            "mode": self.mode, "client_order_id": coid, "signal_id": row.0, "account": row.1, "pipeline": row.2,
            "instrument": row.3, "side": row.4, "qty": row.5, "state": state,
        });
        if let (Some(b), Value::Object(e)) = (body.as_object_mut(), extra) {
            b.extend(e);
        }
        Ok(envelope("order", &format!("{coid}/{state}"), now_ms(), body))
    }

    fn effective_position(tx: &rusqlite::Transaction<'_>, account: &str, instrument: &str) -> rusqlite::Result<Decimal> {
        let held: Option<String> =
            tx.query_row("SELECT qty FROM positions WHERE account = ?1 AND instrument = ?2", [account, instrument], |r| r.get(0)).optional()?;
        let mut qty = held.as_deref().map(dec).unwrap_or_default();
        let mut stmt = tx.prepare_cached("SELECT side, qty FROM orders WHERE account = ?1 AND instrument = ?2 AND state IN ('new', 'accepted')")?;
        let open = stmt.query_map([account, instrument], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        for o in open {
            let (side, q) = o?;
            qty += dec(&q) * OrderSide::parse(&side).map_or(Decimal::ZERO, OrderSide::sign);
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
        let Some(pipeline) = self.config.pipeline(&s.pipeline).cloned() else {
            out.push(Outcome::Event("signal_refused", json!({ "signal_id": s.id, "reason": format!("unknown pipeline {:?}", s.pipeline), "rule": "config" })));
            return Ok(out);
        };
        let killed = self.kill_switch()?;
        let now = now_ms();
        let config = self.config.clone();
        let path = self.path.clone();
        let jerr = |source| OrderError::Journal { path: path.clone(), source };
        let tx = self.db.transaction().map_err(jerr)?;
        let result: rusqlite::Result<()> = (|| {
            for account_id in pipeline.accounts.iter().map(|a| a.get_ref()) {
                let done: Option<String> =
                    tx.query_row("SELECT outcome FROM decisions WHERE signal_id = ?1 AND account = ?2", [&s.id, account_id], |r| r.get(0)).optional()?;
                if done.is_some() {
                    continue;
                }
                let Some(account) = config.account(account_id) else { continue };
                let decision = if killed {
                    Err("the kill switch is on".to_owned())
                } else {
                    let effective = Self::effective_position(&tx, account_id, &s.instrument)?;
                    intent(account, &s.side, effective, s.price, s.stop_loss)
                };
                let (outcome, coid) = match decision {
                    Ok(Some(i)) => {
                        let coid = client_order_id(&s.id, account_id);
                        tx.execute(
                            "INSERT OR IGNORE INTO orders (client_order_id, signal_id, account, pipeline, instrument, side, qty, state, not_before, slippage_bps, created_at, updated_at)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'new', ?8, ?9, ?10, ?10)",
                            params![coid, s.id, account_id, s.pipeline, s.instrument, i.side.as_str(), i.qty.to_string(), s.ts, account.slippage_bps.to_string(), now],
                        )?;
                        (format!("order {} {} {}", i.side.as_str(), i.qty, s.instrument), Some(coid))
                    }
                    Ok(None) => ("nothing to do".to_owned(), None),
                    Err(reason) => {
                        let rule = if killed { "kill_switch" } else { "sizing" };
                        out.push(Outcome::Event("order_refused", json!({ "signal_id": s.id, "account": account_id, "reason": reason, "rule": rule })));
                        (format!("refused: {reason}"), None)
                    }
                };
                tx.execute(
                    "INSERT INTO decisions (signal_id, account, outcome, client_order_id, at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![s.id, account_id, outcome, coid, now],
                )?;
            }
            Ok(())
        })();
        result.map_err(jerr)?;
        // Decisions and the broker hand-off in one commit: one fsync per signal.
        let transitions = Self::submit_in(&tx, &self.recent).map_err(jerr)?;
        tx.commit().map_err(jerr)?;
        for (coid, state, extra) in transitions {
            out.push(Outcome::Order(self.order_message(&coid, state, extra)?));
        }
        Ok(out)
    }

    /// Send every recorded-but-unsent order to the (paper) broker, in one
    /// transaction. Idempotent: the paper book is keyed by client order id.
    ///
    /// # Errors
    /// A journal failure: then nothing of this call is committed.
    pub fn submit_new(&mut self) -> Result<Vec<Outcome>, OrderError> {
        let path = self.path.clone();
        let jerr = |source| OrderError::Journal { path: path.clone(), source };
        let tx = self.db.transaction().map_err(jerr)?;
        let transitions = Self::submit_in(&tx, &self.recent).map_err(jerr)?;
        tx.commit().map_err(jerr)?;
        transitions.into_iter().map(|(coid, state, extra)| self.order_message(&coid, state, extra).map(Outcome::Order)).collect()
    }

    /// Inside `tx`: hand every `new` order to the paper book, accept it, and
    /// fill it at once when the first price after its signal has already gone by.
    fn submit_in(tx: &rusqlite::Transaction<'_>, recent: &Recent) -> rusqlite::Result<Vec<(String, &'static str, Value)>> {
        let new: Vec<(String, String, String, String, String, i64, String)> = {
            let mut stmt = tx.prepare_cached(
                "SELECT client_order_id, account, instrument, side, qty, not_before, slippage_bps FROM orders WHERE state = 'new' ORDER BY rowid",
            )?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows
        };
        let mut transitions = Vec::new();
        for (coid, account, instrument, side, qty, not_before, slippage) in new {
            tx.execute(
                "INSERT OR IGNORE INTO paper_book (client_order_id, account, instrument, side, qty, not_before, state) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'open')",
                params![coid, account, instrument, side, qty, not_before],
            )?;
            for event in [state::OrderEvent::Submit, state::OrderEvent::Accept] {
                if let Ok(to) = advance(tx, &coid, event)? {
                    transitions.push((coid.clone(), to.as_str(), json!({})));
                }
            }
            if let (Some((ts, open)), Some(side)) = (first_price_after(recent, &instrument, not_before), OrderSide::parse(&side)) {
                let price = fill_price(side, open, dec(&slippage));
                match record_fill(tx, &coid, &account, &instrument, side, dec(&qty), price, ts)? {
                    Ok(()) => transitions.push((coid, "filled", json!({ "price": price.to_string(), "fill_ts": ts }))),
                    Err(refused) => tracing::error!("order {coid}: fill refused: {refused}"),
                }
            }
        }
        Ok(transitions)
    }

    /// Take in prices: fill open paper orders whose signal came before them,
    /// and remember the last price of each instrument for marks.
    ///
    /// # Errors
    /// A journal failure.
    pub fn on_quotes(&mut self, q: &QuotesMessage) -> Result<Vec<Outcome>, OrderError> {
        for quote in &q.quotes {
            let entry = self.last.entry(quote.instrument.clone()).or_insert((q.ts, quote.close));
            if q.ts >= entry.0 {
                *entry = (q.ts, quote.close);
            }
            let recent = self.recent.entry(quote.instrument.clone()).or_default();
            if recent.back().is_none_or(|(ts, _)| q.ts > *ts) {
                if recent.len() == RECENT_PRICES {
                    recent.pop_front();
                }
                recent.push_back((q.ts, quote.open));
            }
        }
        let path = self.path.clone();
        let jerr = |source| OrderError::Journal { path: path.clone(), source };
        let tx = self.db.transaction().map_err(jerr)?;
        let mut filled = Vec::new();
        let mut refusals = Vec::new();
        for quote in &q.quotes {
            let open: Vec<(String, String, String, String, String, i64)> = {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT p.client_order_id, p.account, p.side, p.qty, o.slippage_bps, p.not_before FROM paper_book p JOIN orders o USING (client_order_id)
                         WHERE p.state = 'open' AND p.instrument = ?1 AND p.not_before < ?2 ORDER BY p.rowid",
                    )
                    .map_err(jerr)?;
                let rows = stmt
                    .query_map(params![quote.instrument, q.ts], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
                    .map_err(jerr)?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(jerr)?;
                rows
            };
            for (coid, account, side, qty, slippage, not_before) in open {
                let Some(side) = OrderSide::parse(&side) else { continue };
                // The first price after the signal, which is not always this message: the
                // same instrument's prices can come from pipelines running at different paces.
                let (ts, open) = first_price_after(&self.recent, &quote.instrument, not_before).unwrap_or((q.ts, quote.open));
                let price = fill_price(side, open, dec(&slippage));
                match record_fill(&tx, &coid, &account, &quote.instrument, side, dec(&qty), price, ts).map_err(jerr)? {
                    Ok(()) => filled.push((coid, json!({ "price": price.to_string(), "fill_ts": ts }))),
                    Err(refused) => {
                        // Reported, never applied: the paper book keeps the order as it was.
                        tracing::error!("order {coid}: fill refused: {refused}");
                        refusals.push(Outcome::Event("order_transition_refused", json!({ "client_order_id": coid, "reason": refused.to_string() })));
                    }
                }
            }
        }
        tx.commit().map_err(jerr)?;
        let mut out: Vec<Outcome> = filled.into_iter().map(|(coid, extra)| self.order_message(&coid, "filled", extra).map(Outcome::Order)).collect::<Result<_, _>>()?;
        out.extend(refusals);
        Ok(out)
    }

    /// Close every position of `account` with market orders, named after the command.
    ///
    /// # Errors
    /// A journal failure.
    pub fn flatten(&mut self, account: &str, command_id: &str) -> Result<Vec<Outcome>, OrderError> {
        let positions: Vec<(String, String)> = {
            let mut stmt = self.db.prepare("SELECT instrument, qty FROM positions WHERE account = ?1").map_err(self.err())?;
            let rows = stmt
                .query_map([account], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(self.err())?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(self.err())?;
            rows
        };
        let now = now_ms();
        for (instrument, qty) in positions {
            let qty = dec(&qty);
            if qty.is_zero() {
                continue;
            }
            let side = if qty > Decimal::ZERO { OrderSide::Sell } else { OrderSide::Buy };
            let signal_id = format!("flatten/{command_id}/{instrument}");
            let coid = client_order_id(&signal_id, account);
            let not_before = self.last.get(&instrument).map_or(0, |(ts, _)| *ts);
            let slippage = self.config.account(account).map(|a| a.slippage_bps).unwrap_or_default();
            self.db
                .execute(
                    "INSERT OR IGNORE INTO orders (client_order_id, signal_id, account, pipeline, instrument, side, qty, state, not_before, slippage_bps, created_at, updated_at)
                     VALUES (?1, ?2, ?3, 'flatten', ?4, ?5, ?6, 'new', ?7, ?8, ?9, ?9)",
                    params![coid, signal_id, account, instrument, side.as_str(), qty.abs().to_string(), not_before, slippage.to_string(), now],
                )
                .map_err(self.err())?;
        }
        self.submit_new()
    }

    /// Per account: realised and unrealised P&L and positions, for heartbeats and reports.
    ///
    /// # Errors
    /// A journal failure.
    pub fn accounts_summary(&self) -> Result<Value, OrderError> {
        let mut out = serde_json::Map::new();
        for account in &self.config.accounts {
            out.insert(account.id.get_ref().clone(), json!({ "realized": "0", "unrealized": "0", "positions": {} }));
        }
        let mut stmt = self.db.prepare("SELECT account, instrument, qty, lots, realized FROM positions ORDER BY account, instrument").map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?, r.get::<_, String>(4)?)))
            .map_err(self.err())?;
        let mut totals: HashMap<String, (Decimal, Decimal, serde_json::Map<String, Value>)> = HashMap::new();
        for row in rows {
            let (account, instrument, qty, lots, realized) = row.map_err(self.err())?;
            let p = Position { qty: dec(&qty), lots: Position::parse_lots(&lots), realized: dec(&realized) };
            let t = totals.entry(account).or_default();
            t.0 += p.realized;
            if let Some((_, last)) = self.last.get(&instrument) {
                t.1 += p.unrealized(*last);
            }
            if !p.qty.is_zero() {
                t.2.insert(instrument, Value::String(p.qty.to_string()));
            }
        }
        for (account, (realized, unrealized, positions)) in totals {
            out.insert(account, json!({ "realized": realized.to_string(), "unrealized": unrealized.to_string(), "positions": positions }));
        }
        Ok(Value::Object(out))
    }

    /// Counts of decisions, orders by state, and fills.
    ///
    /// # Errors
    /// A journal failure.
    pub fn counts(&self) -> Result<Value, OrderError> {
        let one = |sql: &str| self.db.query_row(sql, [], |r| r.get::<_, i64>(0)).map_err(self.err());
        Ok(json!({
            "decisions": one("SELECT COUNT(*) FROM decisions")?,
            "orders": one("SELECT COUNT(*) FROM orders")?,
            "open_orders": one("SELECT COUNT(*) FROM orders WHERE state IN ('new', 'accepted')")?,
            "fills": one("SELECT COUNT(*) FROM fills")?,
            "refusals": one("SELECT COUNT(*) FROM decisions WHERE outcome LIKE 'refused:%'")?,
        }))
    }
}

/// Move an order through the state machine inside `tx`, appending the
/// transition to the journal. A transition the table refuses changes nothing
/// and comes back as the inner error.
fn advance(tx: &rusqlite::Transaction<'_>, coid: &str, event: state::OrderEvent) -> rusqlite::Result<Result<state::OrderState, state::InvalidTransition>> {
    let current: String = tx.query_row("SELECT state FROM orders WHERE client_order_id = ?1", [coid], |r| r.get(0))?;
    let from = state::OrderState::parse(&current).unwrap_or(state::OrderState::New);
    let to = match state::transition(from, event) {
        Ok(to) => to,
        Err(e) => return Ok(Err(e)),
    };
    let now = now_ms();
    tx.execute(
        "INSERT INTO transitions (client_order_id, seq, from_state, event, to_state, at)
         VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM transitions WHERE client_order_id = ?1), ?2, ?3, ?4, ?5)",
        params![coid, from.as_str(), format!("{event:?}"), to.as_str(), now],
    )?;
    tx.execute("UPDATE orders SET state = ?2, updated_at = ?3 WHERE client_order_id = ?1", params![coid, to.as_str(), now])?;
    Ok(Ok(to))
}

/// The first known price of `instrument` later than `ts`.
fn first_price_after(recent: &Recent, instrument: &str, ts: i64) -> Option<(i64, Decimal)> {
    let prices = recent.get(instrument)?;
    prices.get(prices.partition_point(|(t, _)| *t <= ts)).copied()
}

/// Record a fill inside `tx`: the fill, the position it changes, the paper book and the order.
#[allow(clippy::too_many_arguments)]
fn record_fill(
    tx: &rusqlite::Transaction<'_>,
    coid: &str,
    account: &str,
    instrument: &str,
    side: OrderSide,
    qty: Decimal,
    price: Decimal,
    ts: i64,
) -> rusqlite::Result<Result<(), state::InvalidTransition>> {
    // The state machine first: a fill for an order that cannot take one changes nothing.
    if let Err(refused) = advance(tx, coid, state::OrderEvent::Fill)? {
        return Ok(Err(refused));
    }
    let held: Option<(String, String, String)> = tx
        .query_row("SELECT qty, realized, lots FROM positions WHERE account = ?1 AND instrument = ?2", [account, instrument], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let before = held.map_or_else(Position::default, |(q, r, lots)| Position { qty: dec(&q), lots: Position::parse_lots(&lots), realized: dec(&r) });
    let after = before.apply_fill(side, qty, price);
    tx.execute(
        "INSERT INTO positions (account, instrument, qty, avg_price, realized, lots) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(account, instrument) DO UPDATE SET qty = ?3, avg_price = ?4, realized = ?5, lots = ?6",
        params![account, instrument, after.qty.to_string(), after.avg_price().to_string(), after.realized.to_string(), after.lots_text()],
    )?;
    tx.execute(
        "INSERT INTO fills (client_order_id, account, instrument, side, qty, price, ts) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![coid, account, instrument, side.as_str(), qty.to_string(), price.to_string(), ts],
    )?;
    tx.execute("UPDATE paper_book SET state = 'filled', fill_price = ?2, fill_ts = ?3 WHERE client_order_id = ?1", params![coid, price.to_string(), ts])?;
    tx.execute("UPDATE orders SET fill_price = ?2, fill_ts = ?3 WHERE client_order_id = ?1", params![coid, price.to_string(), ts])?;
    Ok(Ok(()))
}

#[cfg(test)]
mod tests;
