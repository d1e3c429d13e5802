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

pub mod exits;
pub mod report;
pub mod risk;
pub mod service;
pub mod state;

use crate::brokers::paper::{Position, fill_price};
use crate::bus::message::{QuotesMessage, SignalMessage, envelope, now_ms};
use crate::config::Config;
use crate::brokers::live::{LiveOrder, LiveUpdate};
use crate::subscriber::{Intent, OrderSide, client_order_id, intent};

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

impl OrderError {
    /// Whether trying again may succeed: the journal busy or locked by another
    /// connection, or an I/O failure (a full or failing disk). A constraint or a
    /// value that does not fit fails the same way every time.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        use rusqlite::ErrorCode as C;
        match self {
            Self::Journal { source: rusqlite::Error::SqliteFailure(e, _), .. } => {
                matches!(e.code, C::DatabaseBusy | C::DatabaseLocked | C::SystemIoFailure | C::DiskFull | C::CannotOpen | C::OutOfMemory)
            }
            Self::Journal { .. } => false,
        }
    }
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
CREATE INDEX IF NOT EXISTS orders_open ON orders (state, instrument);
CREATE INDEX IF NOT EXISTS orders_by_account_time ON orders (account, not_before);
CREATE INDEX IF NOT EXISTS paper_open ON paper_book (state, instrument);
CREATE INDEX IF NOT EXISTS fills_by_position ON fills (account, instrument, ts);
";

/// A journal value its column cannot hold (a hand-edited or damaged journal):
/// an error naming it, never a default that would move money.
fn corrupt(what: &str, text: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, format!("the journal's {what} {text:?} is not valid").into())
}

/// A decimal column.
fn dec(text: &str) -> rusqlite::Result<Decimal> {
    Decimal::from_str(text).map_err(|_| corrupt("number", text))
}

/// An optional decimal column.
fn opt_dec(text: Option<&str>) -> rusqlite::Result<Option<Decimal>> {
    text.map(dec).transpose()
}

/// An order side column.
fn side_of(text: &str) -> rusqlite::Result<OrderSide> {
    OrderSide::parse(text).ok_or_else(|| corrupt("order side", text))
}

/// A position's lots column.
fn lots_of(text: &str) -> rusqlite::Result<std::collections::VecDeque<crate::brokers::paper::Lot>> {
    Position::parse_lots(text).ok_or_else(|| corrupt("position lots", text))
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
    /// Signals decided (or skipped) by this process, for `is_decided`.
    decided: std::collections::HashSet<String>,
    /// Time of the latest price message from each pipeline.
    pipeline_clock: HashMap<String, i64>,
    /// Accounts whose orders go to a live broker (see [`crate::brokers::live`]).
    live: std::collections::HashSet<String>,
    /// Live orders recorded as submitted, waiting to be handed to the router.
    handoff: Vec<LiveOrder>,
    /// Live orders to cancel, waiting to be handed to the router.
    cancels: Vec<crate::brokers::live::LiveCancel>,
    /// Orders whose cancel was handed over (asked once).
    cancel_asked: std::collections::HashSet<String>,
    /// The latest price time seen, and when it came (for [`OrderManager::market_clock`]).
    seen: Option<(i64, std::time::Instant)>,
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
        Self::migrate_fills(&db).map_err(err)?;
        db.execute_batch(SCHEMA).map_err(err)?;
        // Columns added after the first release of the journal, added where missing (any
        // other failure is the journal's and stops the start).
        // `filled_qty` is the broker's cumulative count (partial fills), `reference_price` the
        // price the order was decided at (its protection collar, also after a restart),
        // `submitted_at` when it was handed to the broker (an order book entry older than that is not ours),
        // `opens` whether a signal's order opened or added to a position (it starts the pipeline's cooldown).
        for column in ["stop_loss TEXT", "target TEXT", "broker_order_id TEXT", "filled_qty TEXT", "reference_price TEXT", "submitted_at INTEGER", "opens INTEGER NOT NULL DEFAULT 0"] {
            let name = column.split(' ').next().unwrap_or(column);
            let present: bool = db.query_row("SELECT COUNT(*) > 0 FROM pragma_table_info('orders') WHERE name = ?1", [name], |r| r.get(0)).map_err(err)?;
            if !present {
                db.execute(&format!("ALTER TABLE orders ADD COLUMN {column}"), []).map_err(err)?;
            }
        }
        let om = Self { db, path: p, config, mode, last: HashMap::new(), recent: HashMap::new(), decided: std::collections::HashSet::new(), pipeline_clock: HashMap::new(), live: std::collections::HashSet::new(), handoff: Vec::new(), cancels: Vec::new(), cancel_asked: std::collections::HashSet::new(), seen: None };
        om.store_exit_rules()?;
        Ok(om)
    }

    /// Journals from before partial fills kept one fill per order (`client_order_id` the key):
    /// their fills move, in order, to the table that keeps each part.
    fn migrate_fills(db: &Connection) -> rusqlite::Result<()> {
        let sql: Option<String> = db.query_row("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'fills'", [], |r| r.get(0)).optional()?;
        if sql.is_none_or(|s| s.contains("seq")) {
            return Ok(());
        }
        db.execute_batch(
            "BEGIN;
             ALTER TABLE fills RENAME TO fills_v1;
             CREATE TABLE fills (
                client_order_id TEXT NOT NULL, seq INTEGER NOT NULL, account TEXT NOT NULL, instrument TEXT NOT NULL,
                side TEXT NOT NULL, qty TEXT NOT NULL, price TEXT NOT NULL, ts INTEGER NOT NULL, PRIMARY KEY (client_order_id, seq));
             INSERT INTO fills SELECT client_order_id, 1, account, instrument, side, qty, price, ts FROM fills_v1 ORDER BY rowid;
             DROP TABLE fills_v1;
             COMMIT;",
        )
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> OrderError + '_ {
        |source| OrderError::Journal { path: self.path.clone(), source }
    }

    /// Whether a signal has been decided, by this process or (per the journal) an earlier one.
    #[must_use]
    pub fn is_decided(&self, signal_id: &str) -> bool {
        self.decided.contains(signal_id)
            || self.db.query_row("SELECT 1 FROM decisions WHERE signal_id = ?1 LIMIT 1", [signal_id], |_| Ok(())).optional().ok().flatten().is_some()
    }

    /// Remember that a signal needs no decision (malformed, unknown pipeline).
    pub fn mark_decided(&mut self, signal_id: &str) {
        self.decided.insert(signal_id.to_owned());
    }

    /// Time of the latest price message from `pipeline` (whose id is `<pipeline>/<ts>`).
    #[must_use]
    pub fn pipeline_clock(&self, pipeline: &str) -> Option<i64> {
        self.pipeline_clock.get(pipeline).copied()
    }

    /// Time of the latest price seen for `instrument`.
    #[must_use]
    pub fn price_clock(&self, instrument: &str) -> Option<i64> {
        self.last.get(instrument).map(|(ts, _)| *ts)
    }

    /// Replace the configuration (accounts, pipelines) used for new decisions.
    pub fn set_config(&mut self, config: std::sync::Arc<Config>) {
        self.config = config;
        if let Err(e) = self.store_exit_rules() {
            tracing::error!("storing the new exit rules: {e}");
        }
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
        let mut qty = opt_dec(held.as_deref())?.unwrap_or_default();
        // Working orders count with what is left of them: their filled part is in the position.
        let mut stmt = tx.prepare_cached(
            "SELECT side, qty, filled_qty FROM orders WHERE account = ?1 AND instrument = ?2 AND state IN ('new', 'submitted', 'accepted', 'partially_filled', 'pending_cancel')",
        )?;
        let open = stmt.query_map([account, instrument], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<String>>(2)?)))?;
        for o in open {
            let (side, q, filled) = o?;
            let left = (dec(&q)? - opt_dec(filled.as_deref())?.unwrap_or_default()).max(Decimal::ZERO);
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
                // In live mode an account configured for a broker that is not connected
                // (added by a reload) must not quietly trade on paper.
                let unrouted = self.mode == "live" && account.broker.get_ref() != "paper" && !self.live.contains(account_id);
                let mut rule = if killed { "kill_switch" } else if unrouted { "broker" } else { "sizing" };
                let effective = Self::effective_position(&tx, account_id, &s.instrument)?;
                let decision = if killed {
                    Err("the kill switch is on".to_owned())
                } else if unrouted {
                    Err(format!("broker {} is not connected for this account; restart to connect it", account.broker.get_ref()))
                } else {
                    match intent(account, &s.side, effective, s.price, s.stop_loss) {
                        Ok(Some(i)) => {
                            let ctx = self_risk_context(&tx, &self.last, account, &s.pipeline, &s.instrument, s.ts, s.price, effective)?;
                            match risk::check(&account.risk, &ctx, &i) {
                                Ok(()) => Ok(Some(i)),
                                Err(refusal) => {
                                    rule = refusal.rule;
                                    if refusal.rule == "max_daily_loss" && trip_breaker(&tx, account_id, s.ts)? {
                                        out.push(Outcome::Event("risk_breaker", json!({ "account": account_id, "rule": "max_daily_loss", "daily_pnl": ctx.daily_pnl.to_string(), "detail": "only reducing orders until tomorrow" })));
                                    }
                                    Err(refusal.reason)
                                }
                            }
                        }
                        other => other,
                    }
                };
                let (outcome, coid) = match decision {
                    Ok(Some(i)) => {
                        let opens = risk::is_entry(effective, &i);
                        if opens {
                            tx.execute(
                                "INSERT INTO entries (pipeline, instrument, ts) VALUES (?1, ?2, ?3) ON CONFLICT(pipeline, instrument) DO UPDATE SET ts = MAX(ts, ?3)",
                                params![s.pipeline, s.instrument, s.ts],
                            )?;
                        }
                        let coid = client_order_id(&s.id, account_id);
                        tx.execute(
                            "INSERT OR IGNORE INTO orders (client_order_id, signal_id, account, pipeline, instrument, side, qty, state, not_before, slippage_bps, created_at, updated_at, stop_loss, target, opens)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'new', ?8, ?9, ?10, ?10, ?11, ?12, ?13)",
                            params![
                                coid, s.id, account_id, s.pipeline, s.instrument, i.side.as_str(), i.qty.to_string(), s.ts, account.slippage_bps.to_string(), now,
                                s.stop_loss.map(|d| d.to_string()), s.target.map(|d| d.to_string()), opens
                            ],
                        )?;
                        (format!("order {} {} {}", i.side.as_str(), i.qty, s.instrument), Some(coid))
                    }
                    Ok(None) => ("nothing to do".to_owned(), None),
                    Err(reason) => {
                        out.push(Outcome::Event("order_refused", json!({ "signal_id": s.id, "account": account_id, "reason": reason, "rule": rule })));
                        (format!("refused [{rule}]: {reason}"), None)
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
        let transitions = Self::submit_in(&tx, &self.recent, &self.live, &self.last, &mut self.handoff).map_err(jerr)?;
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
        let transitions = Self::submit_in(&tx, &self.recent, &self.live, &self.last, &mut self.handoff).map_err(jerr)?;
        tx.commit().map_err(jerr)?;
        transitions.into_iter().map(|(coid, state, extra)| self.order_message(&coid, state, extra).map(Outcome::Order)).collect()
    }

    /// Route `accounts` to live brokers: their orders are recorded as submitted
    /// and handed out by [`OrderManager::take_live_orders`] instead of filling on paper.
    pub fn set_live_accounts(&mut self, accounts: std::collections::HashSet<String>) {
        self.live = accounts;
    }

    /// Live orders recorded as submitted since the last call, for the router.
    pub fn take_live_orders(&mut self) -> Vec<LiveOrder> {
        std::mem::take(&mut self.handoff)
    }

    /// The live orders to cancel (entries still working at the square-off), for the router.
    pub fn take_live_cancels(&mut self) -> Vec<crate::brokers::live::LiveCancel> {
        std::mem::take(&mut self.cancels)
    }

    /// After a restart: every live order the journal holds as sent but not
    /// finished. Those without a broker id may or may not have reached the
    /// broker, so the router looks for them before placing them.
    ///
    /// # Errors
    /// A journal failure.
    pub fn recover_live_orders(&self) -> Result<Vec<LiveOrder>, OrderError> {
        let mut stmt = self
            .db
            .prepare(
                "SELECT client_order_id, account, instrument, side, qty, broker_order_id, reference_price, submitted_at, filled_qty, state, pipeline FROM orders
                 WHERE state IN ('submitted', 'accepted', 'partially_filled', 'pending_cancel') ORDER BY rowid",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| {
                let text = |i: usize| r.get::<_, Option<String>>(i);
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?, r.get::<_, String>(4)?, text(5)?, text(6)?, r.get::<_, Option<i64>>(7)?, text(8)?, r.get::<_, String>(9)?, r.get::<_, String>(10)?))
            })
            .map_err(self.err())?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(self.err())?;
        rows.into_iter()
            .filter(|r| self.live.contains(&r.1))
            .map(|(coid, account, instrument, side, qty, broker_order_id, reference, submitted_at, filled, state, pipeline)| {
                // The price it was decided at, as journaled: its protection stands after a restart.
                let reference_price = opt_dec(reference.as_deref())?.or_else(|| self.last.get(&instrument).map(|(_, p)| *p));
                Ok(LiveOrder {
                    side: side_of(&side)?,
                    qty: dec(&qty)?,
                    filled_qty: opt_dec(filled.as_deref())?.unwrap_or_default(),
                    client_order_id: coid,
                    account,
                    instrument,
                    reference_price,
                    fresh: false,
                    broker_order_id,
                    submitted_at: submitted_at.unwrap_or(0),
                    cancel_requested: state == "pending_cancel",
                    entry: !CLOSE_REASONS.contains(&pipeline.as_str()),
                })
            })
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(self.err())
    }

    /// Every broker order id the journal has matched to one of `account`'s orders:
    /// after a restart none of them may be taken for another order.
    ///
    /// # Errors
    /// A journal failure.
    pub fn broker_order_ids(&self, account: &str) -> Result<Vec<String>, OrderError> {
        let mut stmt = self.db.prepare("SELECT broker_order_id FROM orders WHERE account = ?1 AND broker_order_id IS NOT NULL").map_err(self.err())?;
        let ids = stmt.query_map([account], |r| r.get(0)).map_err(self.err())?.collect::<rusqlite::Result<Vec<String>>>().map_err(self.err())?;
        Ok(ids)
    }

    /// Record what a live broker reported about an order.
    ///
    /// # Errors
    /// A journal failure: nothing of it is then recorded, and the router's
    /// next poll reports it again.
    pub fn on_live_update(&mut self, update: &LiveUpdate) -> Result<Vec<Outcome>, OrderError> {
        let path = self.path.clone();
        let jerr = |source| OrderError::Journal { path: path.clone(), source };
        let tx = self.db.transaction().map_err(jerr)?;
        let mut transitions: Vec<(String, &'static str, Value)> = Vec::new();
        let mut out = Vec::new();
        let refused = |coid: &str, e: state::InvalidTransition| Outcome::Event("order_transition_refused", json!({ "client_order_id": coid, "reason": e.to_string() }));
        match update {
            LiveUpdate::Accepted { client_order_id: coid, broker_order_id } => {
                tx.execute("UPDATE orders SET broker_order_id = ?2 WHERE client_order_id = ?1", params![coid, broker_order_id]).map_err(jerr)?;
                match advance(&tx, coid, state::OrderEvent::Accept).map_err(jerr)? {
                    Ok(to) => transitions.push((coid.clone(), to.as_str(), json!({ "broker_order_id": broker_order_id }))),
                    Err(e) => out.push(refused(coid, e)),
                }
            }
            LiveUpdate::Rejected { client_order_id: coid, reason } => match advance(&tx, coid, state::OrderEvent::Reject).map_err(jerr)? {
                Ok(to) => {
                    transitions.push((coid.clone(), to.as_str(), json!({ "reason": reason })));
                    out.push(Outcome::Event("order_rejected", json!({ "client_order_id": coid, "reason": reason, "alert": true })));
                    restore_cooldown(&tx, coid).map_err(jerr)?;
                }
                Err(e) => out.push(refused(coid, e)),
            },
            LiveUpdate::CancelRequested { client_order_id: coid, reason } => match advance(&tx, coid, state::OrderEvent::CancelRequest).map_err(jerr)? {
                Ok(to) => transitions.push((coid.clone(), to.as_str(), json!({ "reason": reason }))),
                Err(e) => out.push(refused(coid, e)),
            },
            LiveUpdate::PartFilled { client_order_id: coid, filled_qty, price } => {
                Self::fill_to(&tx, &self.last, coid, *filled_qty, Some(*price), None, &mut transitions, &mut out).map_err(jerr)?;
            }
            LiveUpdate::Filled { client_order_id: coid, qty, price } => {
                Self::fill_to(&tx, &self.last, coid, *qty, Some(*price), Some(state::OrderEvent::Fill), &mut transitions, &mut out).map_err(jerr)?;
            }
            LiveUpdate::Cancelled { client_order_id: coid, filled_qty, price, reason } => {
                Self::fill_to(&tx, &self.last, coid, *filled_qty, *price, None, &mut transitions, &mut out).map_err(jerr)?;
                match advance(&tx, coid, state::OrderEvent::Cancel).map_err(jerr)? {
                    Ok(to) => {
                        transitions.push((coid.clone(), to.as_str(), json!({ "reason": reason, "filled_qty": filled_qty.to_string() })));
                        restore_cooldown(&tx, coid).map_err(jerr)?;
                    }
                    Err(e) => out.push(refused(coid, e)),
                }
            }
        }
        out.extend(advance_baskets(&tx, &self.config, &self.last, self.last.values().map(|(t, _)| *t).max().unwrap_or_else(now_ms)).map_err(jerr)?);
        transitions.extend(Self::submit_in(&tx, &self.recent, &self.live, &self.last, &mut self.handoff).map_err(jerr)?);
        tx.commit().map_err(jerr)?;
        let mut msgs = Vec::new();
        for (coid, state, extra) in transitions {
            msgs.push(Outcome::Order(self.order_message(&coid, state, extra)?));
        }
        msgs.extend(out);
        Ok(msgs)
    }

    /// Bring a live order's fills up to the broker's cumulative `filled` at average
    /// `average`: the part not yet journaled is recorded as one fill, at the price
    /// that makes the journal's average the broker's. A report that says no more than
    /// the journal has (a repeat, a stale read, after a restart) adds nothing. With
    /// `last` (the broker says complete) the order ends filled.
    #[allow(clippy::too_many_arguments)]
    fn fill_to(
        tx: &rusqlite::Transaction<'_>,
        last_prices: &HashMap<String, (i64, Decimal)>,
        coid: &str,
        filled: Decimal,
        average: Option<Decimal>,
        last: Option<state::OrderEvent>,
        transitions: &mut Vec<(String, &'static str, Value)>,
        out: &mut Vec<Outcome>,
    ) -> rusqlite::Result<()> {
        let refused = |e: state::InvalidTransition| Outcome::Event("order_transition_refused", json!({ "client_order_id": coid, "reason": e.to_string() }));
        let row: Option<(String, String, String, i64, String, Option<String>, Option<String>)> = tx
            .query_row("SELECT account, instrument, side, not_before, qty, filled_qty, fill_price FROM orders WHERE client_order_id = ?1", [coid], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
            })
            .optional()?;
        let Some((account, instrument, side, not_before, qty, before, before_avg)) = row else { return Ok(()) };
        let before = opt_dec(before.as_deref())?.unwrap_or_default();
        let part = filled.checked_sub(before).unwrap_or_default();
        let complete = last.is_some();
        if part > Decimal::ZERO {
            let Some(average) = average.filter(|p| *p > Decimal::ZERO) else {
                out.push(Outcome::Event("order_transition_refused", json!({ "client_order_id": coid, "reason": format!("{filled} filled without an average price") })));
                return Ok(());
            };
            // average × filled = before_avg × before + price × part
            let before_avg = opt_dec(before_avg.as_deref())?.unwrap_or(average);
            // Checked: the broker's numbers are input, and an absurd one must not panic.
            let price = if before.is_zero() {
                Some(average)
            } else {
                average.checked_mul(filled).zip(before_avg.checked_mul(before)).and_then(|(all, had)| all.checked_sub(had)).and_then(|v| v.checked_div(part)).map(|p| p.round_dp(4).normalize())
            };
            let Some(price) = price.filter(|p| *p > Decimal::ZERO) else {
                out.push(Outcome::Event("order_transition_refused", json!({ "client_order_id": coid, "reason": format!("{filled} filled at an average of {average} does not follow from the {before} already filled at {before_avg}") })));
                return Ok(());
            };
            // Market time, like paper fills: the day's P&L and exits follow the prices' clock.
            let ts = last_prices.get(&instrument).map_or(not_before, |(t, _)| (*t).max(not_before));
            let side = side_of(&side)?;
            let whole = complete || filled >= dec(&qty)?;
            let event = if whole { state::OrderEvent::Fill } else { state::OrderEvent::PartialFill };
            match record_fill(tx, coid, &account, &instrument, side, part, price, ts, event)? {
                Ok(()) => {
                    tx.execute("UPDATE orders SET filled_qty = ?2, fill_price = ?3 WHERE client_order_id = ?1", params![coid, filled.to_string(), average.to_string()])?;
                    let state = tx.query_row("SELECT state FROM orders WHERE client_order_id = ?1", [coid], |r| r.get::<_, String>(0))?;
                    let state = state::OrderState::parse(&state).map_or("partially_filled", state::OrderState::as_str);
                    transitions.push((coid.to_owned(), state, json!({ "price": price.to_string(), "fill_ts": ts, "fill_qty": part.to_string(), "filled_qty": filled.to_string(), "average_price": average.to_string() })));
                }
                Err(e) => out.push(refused(e)),
            }
        } else if complete {
            // Complete with nothing new (its last part was reported as a partial fill).
            match advance(tx, coid, state::OrderEvent::Fill)? {
                Ok(to) => transitions.push((coid.to_owned(), to.as_str(), json!({ "filled_qty": filled.to_string() }))),
                Err(e) if e.from == state::OrderState::Filled => {}
                Err(e) => out.push(refused(e)),
            }
        }
        Ok(())
    }

    /// Inside `tx`: hand every `new` order to the paper book, accept it, and
    /// fill it at once when the first price after its signal has already gone by.
    fn submit_in(
        tx: &rusqlite::Transaction<'_>,
        recent: &Recent,
        live: &std::collections::HashSet<String>,
        last: &HashMap<String, (i64, Decimal)>,
        handoff: &mut Vec<LiveOrder>,
    ) -> rusqlite::Result<Vec<(String, &'static str, Value)>> {
        let new: Vec<(String, String, String, String, String, i64, String, String)> = {
            let mut stmt = tx.prepare_cached(
                "SELECT client_order_id, account, instrument, side, qty, not_before, slippage_bps, pipeline FROM orders WHERE state = 'new' ORDER BY rowid",
            )?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows
        };
        let mut transitions = Vec::new();
        for (coid, account, instrument, side, qty, not_before, slippage, pipeline) in new {
            if live.contains(&account) {
                // A live account's order: recorded as submitted before the broker call
                // (a restart then looks for it in the broker's book before placing it again),
                // with the price it was decided at and when it went out.
                let side = side_of(&side)?;
                if let Ok(to) = advance(tx, &coid, state::OrderEvent::Submit)? {
                    transitions.push((coid.clone(), to.as_str(), json!({})));
                    let reference_price = last.get(&instrument).map(|(_, p)| *p);
                    let submitted_at = now_ms();
                    tx.execute(
                        "UPDATE orders SET reference_price = ?2, submitted_at = ?3 WHERE client_order_id = ?1",
                        params![coid, reference_price.map(|p| p.to_string()), submitted_at],
                    )?;
                    handoff.push(LiveOrder {
                        client_order_id: coid,
                        account,
                        instrument,
                        side,
                        qty: dec(&qty)?,
                        reference_price,
                        fresh: true,
                        broker_order_id: None,
                        submitted_at,
                        filled_qty: Decimal::ZERO,
                        cancel_requested: false,
                        entry: !CLOSE_REASONS.contains(&pipeline.as_str()),
                    });
                }
                continue;
            }
            tx.execute(
                "INSERT OR IGNORE INTO paper_book (client_order_id, account, instrument, side, qty, not_before, state) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'open')",
                params![coid, account, instrument, side, qty, not_before],
            )?;
            for event in [state::OrderEvent::Submit, state::OrderEvent::Accept] {
                if let Ok(to) = advance(tx, &coid, event)? {
                    transitions.push((coid.clone(), to.as_str(), json!({})));
                }
            }
            if let Some((ts, open)) = first_price_after(recent, &instrument, not_before) {
                let side = side_of(&side)?;
                let price = fill_price(side, open, dec(&slippage)?);
                match record_fill(tx, &coid, &account, &instrument, side, dec(&qty)?, price, ts, state::OrderEvent::Fill)? {
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
        self.on_quotes_at(q, None)
    }

    /// Where the price stream was last applied up to (an entry id), per the journal.
    ///
    /// # Errors
    /// A journal failure.
    pub fn price_cursor(&self) -> Result<Option<String>, OrderError> {
        self.db.query_row("SELECT value FROM settings WHERE key = 'price_cursor'", [], |r| r.get(0)).optional().map_err(self.err())
    }

    /// Take in prices an earlier run already applied (up to its journaled
    /// price cursor): they rebuild the last prices, the recent opens and the
    /// pipeline clocks, and move nothing in the journal.
    pub fn observe_quotes(&mut self, q: &QuotesMessage) {
        let _ = self.observe(q);
    }

    /// Remember the prices of `q` (last price, recent opens, its pipeline's
    /// clock); returns, per quote, whether it is newer than any seen for its instrument.
    fn observe(&mut self, q: &QuotesMessage) -> Vec<bool> {
        // Only a price newer than any seen for its instrument may move exits: the same
        // instrument's prices can arrive from pipelines running at different paces,
        // and a stale one must never trigger a stop on today's position.
        if let Some((pipeline, _)) = q.id.rsplit_once('/') {
            let clock = self.pipeline_clock.entry(pipeline.to_owned()).or_insert(q.ts);
            *clock = (*clock).max(q.ts);
        }
        if self.seen.is_none_or(|(ts, _)| q.ts > ts) {
            self.seen = Some((q.ts, std::time::Instant::now()));
        }
        let fresh: Vec<bool> = q.quotes.iter().map(|quote| self.last.get(&quote.instrument).is_none_or(|(ts, _)| q.ts > *ts)).collect();
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
        fresh
    }

    /// [`OrderManager::on_quotes`] for the entry `cursor` of the price stream:
    /// the cursor is committed with what the prices did, so after a crash the
    /// stream is resumed exactly after the last price applied.
    ///
    /// # Errors
    /// A journal failure.
    pub fn on_quotes_at(&mut self, q: &QuotesMessage, cursor: Option<&str>) -> Result<Vec<Outcome>, OrderError> {
        let fresh = self.observe(q);
        let path = self.path.clone();
        let jerr = |source| OrderError::Journal { path: path.clone(), source };
        let config = self.config.clone();
        let tx = self.db.transaction().map_err(jerr)?;
        if let Some(cursor) = cursor {
            tx.execute("INSERT INTO settings (key, value) VALUES ('price_cursor', ?1) ON CONFLICT(key) DO UPDATE SET value = ?1", [cursor]).map_err(jerr)?;
        }
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
                let side = side_of(&side).map_err(jerr)?;
                // The first price after the signal, which is not always this message: the
                // same instrument's prices can come from pipelines running at different paces.
                let (ts, open) = first_price_after(&self.recent, &quote.instrument, not_before).unwrap_or((q.ts, quote.open));
                let price = fill_price(side, open, dec(&slippage).map_err(jerr)?);
                match record_fill(&tx, &coid, &account, &quote.instrument, side, dec(&qty).map_err(jerr)?, price, ts, state::OrderEvent::Fill).map_err(jerr)? {
                    Ok(()) => filled.push((coid, json!({ "price": price.to_string(), "fill_ts": ts }))),
                    Err(refused) => {
                        // Reported, never applied: the paper book keeps the order as it was.
                        tracing::error!("order {coid}: fill refused: {refused}");
                        refusals.push(Outcome::Event("order_transition_refused", json!({ "client_order_id": coid, "reason": refused.to_string() })));
                    }
                }
            }
        }
        let mut exit_events = Vec::new();
        let priced: Vec<&str> = q.quotes.iter().zip(&fresh).filter(|(_, fresh)| **fresh).map(|(quote, _)| quote.instrument.as_str()).collect();
        let cancelled = cancel_entries_at_square_off(&tx, &config, &self.live, &mut self.cancel_asked, &mut self.cancels, q.ts, Some(&priced)).map_err(jerr)?;
        for (quote, _) in q.quotes.iter().zip(&fresh).filter(|(_, fresh)| **fresh) {
            exit_events.extend(Self::manage_exits(&config, &tx, q.ts, quote).map_err(jerr)?);
        }
        exit_events.extend(advance_baskets(&tx, &config, &self.last, q.ts).map_err(jerr)?);
        let mut transitions = cancelled;
        transitions.extend(Self::submit_in(&tx, &self.recent, &self.live, &self.last, &mut self.handoff).map_err(jerr)?);
        tx.commit().map_err(jerr)?;
        refusals.extend(exit_events);
        for (coid, state, extra) in transitions {
            refusals.push(Outcome::Order(self.order_message(&coid, state, extra)?));
        }
        let mut out: Vec<Outcome> = filled.into_iter().map(|(coid, extra)| self.order_message(&coid, "filled", extra).map(Outcome::Order)).collect::<Result<_, _>>()?;
        out.extend(refusals);
        Ok(out)
    }

    /// Move the managed exits of `quote`'s instrument, square off intraday
    /// positions at the account's square-off time, and record the closing
    /// orders; returns the events to publish.
    fn manage_exits(config: &Config, tx: &rusqlite::Transaction<'_>, ts: i64, quote: &crate::bus::message::Quote) -> rusqlite::Result<Vec<Outcome>> {
        let mut out = Vec::new();
        let rows: Vec<(String, bool, Option<String>, Option<String>, Option<String>, String, bool, bool, String)> = {
            let mut stmt = tx.prepare_cached(
                "SELECT e.account, e.long, e.stop, e.target, e.trail_pct, e.best, e.trailed, e.triggered, p.qty FROM exits e
                 JOIN positions p ON p.account = e.account AND p.instrument = e.instrument WHERE e.instrument = ?1",
            )?;
            let rows = stmt
                .query_map([&quote.instrument], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows
        };
        for (account, long, stop, target, trail, best, trailed, triggered, qty) in rows {
            let qty = dec(&qty)?;
            if qty.is_zero() {
                continue;
            }
            let cfg = config.account(&account);
            let slippage = cfg.map(|a| a.slippage_bps).unwrap_or_default();
            let mis = cfg.is_some_and(|a| a.product == crate::domain::Product::Mis);
            if let Some(due) = cfg.map(|a| square_off_due(tx, a, &account, &quote.instrument, ts)).transpose()?.flatten() {
                out.extend(due.queue(tx, &account, &quote.instrument, qty, slippage, Some(quote.close))?);
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
            };
            // Intraday positions trail the side they would close at: a long the best bid, a
            // short the best ask; delivery positions (and quotes without depth) the last price.
            let touch = if long { quote.bid } else { quote.ask };
            let trail_price = if mis { touch.unwrap_or(quote.close) } else { quote.close };
            let reason = exit.on_price(quote.high, quote.low, trail_price);
            save_exit(tx, &account, &quote.instrument, &exit)?;
            if let Some(reason) = reason {
                let key = format!("{reason}/{account}/{}/{ts}", quote.instrument);
                if queue_close(tx, &account, &quote.instrument, qty, &key, reason, ts, slippage)? {
                    out.push(Outcome::Event(
                        "exit_triggered",
                        json!({ "account": account, "instrument": quote.instrument, "reason": reason, "stop": exit.stop.map(|d| d.to_string()), "target": exit.target.map(|d| d.to_string()), "price": quote.close.to_string(), "qty": qty.abs().to_string() }),
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Square off by the clock, not only on the next price: every intraday
    /// position still open at its account's square-off time on `now`'s day, and
    /// every one left open from an earlier day (flagged, closed at the open). The
    /// orders are the ones a price at that moment would make (same key, same
    /// time), so a timer and a price never close a position twice, and a replay
    /// fills them the same whichever came first.
    ///
    /// # Errors
    /// A journal failure: nothing is then recorded.
    pub fn on_clock(&mut self, now: i64) -> Result<Vec<Outcome>, OrderError> {
        let path = self.path.clone();
        let jerr = |source| OrderError::Journal { path: path.clone(), source };
        let config = self.config.clone();
        let tx = self.db.transaction().map_err(jerr)?;
        let mut transitions = cancel_entries_at_square_off(&tx, &config, &self.live, &mut self.cancel_asked, &mut self.cancels, now, None).map_err(jerr)?;
        let rows: Vec<(String, String, String)> = {
            let mut stmt = tx.prepare_cached("SELECT account, instrument, qty FROM positions WHERE qty != '0' ORDER BY account, instrument").map_err(jerr)?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).map_err(jerr)?.collect::<rusqlite::Result<Vec<_>>>().map_err(jerr)?;
            rows
        };
        let mut out = Vec::new();
        for (account, instrument, qty) in rows {
            let qty = dec(&qty).map_err(jerr)?;
            let Some(cfg) = config.account(&account).filter(|_| !qty.is_zero()) else { continue };
            if let Some(due) = square_off_due(&tx, cfg, &account, &instrument, now).map_err(jerr)? {
                let price = self.last.get(&instrument).map(|(_, p)| *p);
                out.extend(due.queue(&tx, &account, &instrument, qty, cfg.slippage_bps, price).map_err(jerr)?);
            }
        }
        transitions.extend(Self::submit_in(&tx, &self.recent, &self.live, &self.last, &mut self.handoff).map_err(jerr)?);
        tx.commit().map_err(jerr)?;
        for (coid, state, extra) in transitions {
            out.push(Outcome::Order(self.order_message(&coid, state, extra)?));
        }
        Ok(out)
    }

    /// The market's time as the prices tell it: a bar labelled `t` has closed, so it
    /// is at least a minute later, plus the wall time since it came. `None` before any price.
    #[must_use]
    pub fn market_clock(&self) -> Option<i64> {
        let (ts, at) = self.seen?;
        Some(ts.saturating_add(60_000).saturating_add(i64::try_from(at.elapsed().as_millis()).unwrap_or(i64::MAX)))
    }

    /// Wall time since the last new price.
    #[must_use]
    pub fn prices_quiet_for(&self) -> Option<std::time::Duration> {
        self.seen.map(|(_, at)| at.elapsed())
    }

    fn store_exit_rules(&self) -> Result<(), OrderError> {
        for a in &self.config.accounts {
            let e = &a.exits;
            self.db
                .execute(
                    "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2",
                    [format!("exits/{}", a.id.get_ref()), format!("{},{},{}", e.stop_loss_pct, e.target_pct, e.trailing_pct)],
                )
                .map_err(self.err())?;
        }
        Ok(())
    }

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
            return Ok(vec![Outcome::Event("basket_failed", json!({ "basket": basket.id, "reason": format!("unknown account {:?}", basket.account) }))]);
        };
        let ts = basket.legs.iter().filter_map(|l| self.last.get(&l.instrument).map(|(t, _)| *t)).max().unwrap_or_else(now_ms);
        let tx = self.db.transaction().map_err(jerr)?;
        let inserted = tx
            .execute("INSERT OR IGNORE INTO baskets (basket_id, account, state, unwind, ts) VALUES (?1, ?2, 'buying', ?3, ?4)", params![basket.id, basket.account, basket.unwind_on_failure, ts])
            .map_err(jerr)?;
        let mut out = Vec::new();
        if inserted == 1 {
            for (i, leg) in basket.legs.iter().enumerate() {
                tx.execute(
                    "INSERT INTO basket_legs (basket_id, idx, instrument, side, qty, state) VALUES (?1, ?2, ?3, ?4, ?5, 'waiting')",
                    params![basket.id, i64::try_from(i).unwrap_or(i64::MAX), leg.instrument, leg.side.as_str(), leg.qty.to_string()],
                )
                .map_err(jerr)?;
            }
            out.push(Outcome::Event("basket_placed", json!({ "basket": basket.id, "account": basket.account, "legs": basket.legs.len() })));
            out.extend(send_legs(&tx, &self.last, &account, &basket.id, OrderSide::Buy, ts).map_err(jerr)?);
        }
        let transitions = Self::submit_in(&tx, &self.recent, &self.live, &self.last, &mut self.handoff).map_err(jerr)?;
        tx.commit().map_err(jerr)?;
        for (coid, state, extra) in transitions {
            out.push(Outcome::Order(self.order_message(&coid, state, extra)?));
        }
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
        let slippage = self.config.account(account).map(|a| a.slippage_bps).unwrap_or_default();
        let path = self.path.clone();
        let jerr = |source| OrderError::Journal { path: path.clone(), source };
        let tx = self.db.transaction().map_err(jerr)?;
        for (instrument, qty) in positions {
            let qty = dec(&qty).map_err(jerr)?;
            if qty.is_zero() {
                continue;
            }
            let not_before = self.last.get(&instrument).map_or(0, |(ts, _)| *ts);
            queue_close(&tx, account, &instrument, qty, &format!("flatten/{command_id}/{instrument}"), "flatten", not_before, slippage).map_err(jerr)?;
        }
        tx.commit().map_err(jerr)?;
        self.submit_new()
    }

    /// `account`'s open positions per the journal: instrument → net units.
    ///
    /// # Errors
    /// A journal failure.
    pub fn positions_of(&self, account: &str) -> Result<HashMap<String, Decimal>, OrderError> {
        let mut stmt = self.db.prepare("SELECT instrument, qty FROM positions WHERE account = ?1").map_err(self.err())?;
        let rows = stmt.query_map([account], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))).map_err(self.err())?;
        let mut out = HashMap::new();
        for row in rows {
            let (instrument, qty) = row.map_err(self.err())?;
            let qty = dec(&qty).map_err(self.err())?;
            if !qty.is_zero() {
                out.insert(instrument, qty);
            }
        }
        Ok(out)
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
            let p = (|| Ok::<_, rusqlite::Error>(Position { qty: dec(&qty)?, lots: lots_of(&lots)?, realized: dec(&realized)? }))().map_err(self.err())?;
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
            "open_orders": one("SELECT COUNT(*) FROM orders WHERE state IN ('new', 'submitted', 'accepted', 'pending_cancel')")?,
            "fills": one("SELECT COUNT(*) FROM fills")?,
            "refusals": one("SELECT COUNT(*) FROM decisions WHERE outcome LIKE 'refused%'")?,
        }))
    }
}

/// Keep the managed exit in line with a fill: a new (or reversed) position
/// gets one from its order's stop and target and the account's exit rules
/// (stored on the order's account row by `set_exit_rules`); a closed one loses it.
fn arm_exit(tx: &rusqlite::Transaction<'_>, coid: &str, account: &str, instrument: &str, before: &Decimal, after: &Position, price: Decimal) -> rusqlite::Result<()> {
    if after.qty.is_zero() {
        tx.execute("DELETE FROM exits WHERE account = ?1 AND instrument = ?2", [account, instrument])?;
        return Ok(());
    }
    let opened = before.is_zero() || before.is_sign_positive() != after.qty.is_sign_positive();
    if !opened {
        return Ok(());
    }
    let (stop, target): (Option<String>, Option<String>) =
        tx.query_row("SELECT stop_loss, target FROM orders WHERE client_order_id = ?1", [coid], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let rules: Option<String> = tx.query_row("SELECT value FROM settings WHERE key = ?1", [format!("exits/{account}")], |r| r.get(0)).optional()?;
    let rules: Vec<Decimal> = rules.as_deref().unwrap_or("0,0,0").split(',').map(dec).collect::<rusqlite::Result<_>>()?;
    let (sl_pct, tp_pct, trail_pct) = (rules.first().copied().unwrap_or_default(), rules.get(1).copied().unwrap_or_default(), rules.get(2).copied().unwrap_or_default());
    let rules = crate::config::ExitRules { stop_loss_pct: sl_pct, target_pct: tp_pct, trailing_pct: trail_pct };
    let exit = exits::ManagedExit::arm(after.qty > Decimal::ZERO, price, opt_dec(stop.as_deref())?, opt_dec(target.as_deref())?, &rules);
    save_exit(tx, account, instrument, &exit)
}

fn save_exit(tx: &rusqlite::Transaction<'_>, account: &str, instrument: &str, e: &exits::ManagedExit) -> rusqlite::Result<()> {
    tx.execute(
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

/// The minute (IST) the NSE session opens: 09:15.
pub const SESSION_OPEN_MINUTE: u32 = 9 * 60 + 15;

/// An intraday close the clock calls for.
struct SquareOff {
    /// `square-off` (the day's time has come) or `carried` (left open from an earlier day).
    reason: &'static str,
    key: String,
    /// The moment it is due: the paper fill is the first price after it.
    not_before: i64,
}

impl SquareOff {
    /// Record the closing order (once per key) and mark the exit as done; the events to publish.
    fn queue(&self, tx: &rusqlite::Transaction<'_>, account: &str, instrument: &str, qty: Decimal, slippage: Decimal, price: Option<Decimal>) -> rusqlite::Result<Vec<Outcome>> {
        tx.execute("UPDATE exits SET triggered = 1 WHERE account = ?1 AND instrument = ?2", [account, instrument])?;
        if !queue_close(tx, account, instrument, qty, &self.key, self.reason, self.not_before, slippage)? {
            return Ok(Vec::new());
        }
        let body = json!({ "account": account, "instrument": instrument, "reason": self.reason, "price": price.map(|p| p.to_string()), "qty": qty.abs().to_string(), "due": self.not_before });
        let mut out = vec![Outcome::Event("square_off", body.clone())];
        if self.reason == "carried" {
            let mut alert = body;
            alert["alert"] = json!(true);
            alert["detail"] = json!("an intraday position was left open past its session; squared off at the open");
            out.push(Outcome::Event("position_carried", alert));
        }
        Ok(out)
    }
}

/// An entry the broker refused (or cancelled with nothing filled) opened nothing:
/// the pipeline's cooldown in its instrument goes back to the last entry that
/// did open (or works on), or ends, so the next signal is not refused for a
/// position that never was.
fn restore_cooldown(tx: &rusqlite::Transaction<'_>, coid: &str) -> rusqlite::Result<()> {
    let Some((pipeline, instrument, opens)): Option<(String, String, bool)> =
        tx.query_row("SELECT pipeline, instrument, opens FROM orders WHERE client_order_id = ?1", [coid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional()?
    else {
        return Ok(());
    };
    if !opens {
        return Ok(());
    }
    let last: Option<i64> = tx.query_row(
        "SELECT MAX(not_before) FROM orders WHERE pipeline = ?1 AND instrument = ?2 AND opens = 1 AND state != 'rejected'
         AND NOT (state IN ('cancelled', 'expired') AND CAST(COALESCE(filled_qty, '0') AS REAL) = 0)",
        [&pipeline, &instrument],
        |r| r.get(0),
    )?;
    match last {
        Some(ts) => tx.execute("UPDATE entries SET ts = ?3 WHERE pipeline = ?1 AND instrument = ?2", params![pipeline, instrument, ts])?,
        None => tx.execute("DELETE FROM entries WHERE pipeline = ?1 AND instrument = ?2", [&pipeline, &instrument])?,
    };
    Ok(())
}

/// Square-off orders tried per position and day: a square-off refused by the
/// broker is placed again (a new order) up to this many times in all.
const SQUARE_OFF_TRIES: i64 = 3;

/// Whether `account`'s intraday position in `instrument` must be closed at `now`:
/// at or after the account's square-off time, or, from the session's open, when
/// it was opened on an earlier day. Never while an order is working on it (an
/// entry being cancelled at the square-off, a close on its way): the close then
/// covers what that order leaves. A position that is still open after its
/// square-off (a close refused, a cancelled entry that filled a part meanwhile)
/// is closed again, up to [`SQUARE_OFF_TRIES`] orders a day.
/// The square-off rule, the same for the order manager and the backtest: an
/// intraday position (last filled at `last_fill`) is due to close at `now`
/// `carried` when it was left open from an earlier day (from the session's
/// open: its first price fills it), or `square-off` from the account's
/// `square_off` minute on. Returns the reason and the moment it is due (the
/// fill is the first price after it).
#[must_use]
pub fn square_off_rule(square_off: u32, now: i64, last_fill: Option<i64>) -> Option<(&'static str, i64)> {
    use crate::domain::time::{IST_OFFSET_MS, ist_day, ist_minute_of_day};
    let (day, minute) = (ist_day(now), ist_minute_of_day(now));
    let midnight = day.saturating_mul(86_400_000).saturating_sub(IST_OFFSET_MS);
    if minute >= SESSION_OPEN_MINUTE && last_fill.is_some_and(|t| ist_day(t) < day) {
        return Some(("carried", midnight + i64::from(SESSION_OPEN_MINUTE) * 60_000 - 1));
    }
    (minute >= square_off && minute >= SESSION_OPEN_MINUTE.min(square_off)).then(|| ("square-off", midnight + i64::from(square_off) * 60_000))
}

fn square_off_due(tx: &rusqlite::Transaction<'_>, account: &crate::config::Account, account_id: &str, instrument: &str, now: i64) -> rusqlite::Result<Option<SquareOff>> {
    use crate::domain::time::{ist_day, ist_minute_of_day, parse_hhmm};
    if account.product != crate::domain::Product::Mis {
        return Ok(None);
    }
    let Some(square_off) = parse_hhmm(&account.square_off) else { return Ok(None) };
    if ist_minute_of_day(now) < SESSION_OPEN_MINUTE.min(square_off) {
        return Ok(None);
    }
    let working: i64 = tx.query_row(
        "SELECT COUNT(*) FROM orders WHERE account = ?1 AND instrument = ?2 AND state IN ('new', 'submitted', 'accepted', 'partially_filled', 'pending_cancel')",
        [account_id, instrument],
        |r| r.get(0),
    )?;
    if working > 0 {
        return Ok(None);
    }
    let last_fill: Option<i64> = tx.query_row("SELECT MAX(ts) FROM fills WHERE account = ?1 AND instrument = ?2", [account_id, instrument], |r| r.get(0))?;
    let day = ist_day(now);
    match square_off_rule(square_off, now, last_fill) {
        None => Ok(None),
        Some(("carried", not_before)) => Ok(Some(SquareOff { reason: "carried", key: format!("carried/{account_id}/{instrument}/{day}"), not_before })),
        Some((reason, due)) => {
            let key = format!("square-off/{account_id}/{instrument}/{day}");
            let tried: i64 = tx.query_row(
                "SELECT COUNT(*) FROM orders WHERE account = ?1 AND instrument = ?2 AND pipeline = 'square-off' AND (signal_id = ?3 OR signal_id LIKE ?3 || '/%')",
                [account_id, instrument, &key],
                |r| r.get(0),
            )?;
            if tried >= SQUARE_OFF_TRIES {
                return Ok(None);
            }
            let key = if tried == 0 { key } else { format!("{key}/{}", tried + 1) };
            Ok(Some(SquareOff { reason, key, not_before: if tried == 0 { due } else { due.max(now) } }))
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
fn cancel_entries_at_square_off(
    tx: &rusqlite::Transaction<'_>,
    config: &Config,
    live: &std::collections::HashSet<String>,
    asked: &mut std::collections::HashSet<String>,
    cancels: &mut Vec<crate::brokers::live::LiveCancel>,
    now: i64,
    priced: Option<&[&str]>,
) -> rusqlite::Result<Vec<(String, &'static str, Value)>> {
    use crate::domain::time::{ist_minute_of_day, parse_hhmm};
    let minute = ist_minute_of_day(now);
    let due = |a: &crate::config::Account| a.product == crate::domain::Product::Mis && parse_hhmm(&a.square_off).is_some_and(|sq| minute >= sq);
    if !config.accounts.iter().any(due) {
        return Ok(Vec::new());
    }
    let working: Vec<(String, String, String, i64, String)> = {
        let mut stmt = tx.prepare_cached(
            "SELECT client_order_id, account, pipeline, not_before, instrument FROM orders WHERE state IN ('submitted', 'accepted', 'partially_filled') ORDER BY rowid",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?.collect::<rusqlite::Result<Vec<_>>>()?;
        rows
    };
    // An order asked about is remembered only while it still works without a journaled
    // cancel request: once the router has reported the request it leaves this list.
    asked.retain(|c| working.iter().any(|w| &w.0 == c));
    let mut transitions = Vec::new();
    let reason = "square-off: an entry still working at the account's square-off time";
    let recent = match config.live.cancel_after_secs {
        0 => i64::MAX,
        secs => i64::try_from(secs).unwrap_or(i64::MAX).saturating_mul(1_000),
    };
    for (coid, account, pipeline, decided, instrument) in working {
        if CLOSE_REASONS.contains(&pipeline.as_str())
            || decided > now
            || (live.contains(&account) && now.saturating_sub(decided) > recent)
            || priced.is_some_and(|p| !p.contains(&instrument.as_str()))
            || !config.account(&account).is_some_and(due)
        {
            continue;
        }
        if live.contains(&account) {
            if asked.insert(coid.clone()) {
                cancels.push(crate::brokers::live::LiveCancel { account, client_order_id: coid, reason: reason.to_owned() });
            }
            continue;
        }
        // The paper venue cancels at once.
        tx.execute("UPDATE paper_book SET state = 'cancelled' WHERE client_order_id = ?1 AND state = 'open'", [&coid])?;
        for event in [state::OrderEvent::CancelRequest, state::OrderEvent::Cancel] {
            if let Ok(to) = advance(tx, &coid, event)? {
                transitions.push((coid.clone(), to.as_str(), json!({ "reason": reason })));
            }
        }
    }
    Ok(transitions)
}

/// The `pipeline` of the orders the host makes itself to close a position
/// (never cancelled for want of a fill: a close that does not fill keeps working).
pub const CLOSE_REASONS: [&str; 7] = ["stop-loss", "target", "trailing-stop", "square-off", "carried", "flatten", "basket-unwind"];

/// Record a market order that closes `account`'s position in `instrument`
/// (an exit, a square-off, a flatten), keyed so that it is placed once.
#[allow(clippy::too_many_arguments)]
fn queue_close(tx: &rusqlite::Transaction<'_>, account: &str, instrument: &str, qty: Decimal, key: &str, reason: &str, not_before: i64, slippage: Decimal) -> rusqlite::Result<bool> {
    let side = if qty > Decimal::ZERO { OrderSide::Sell } else { OrderSide::Buy };
    let coid = client_order_id(key, account);
    let now = now_ms();
    Ok(tx.execute(
        "INSERT OR IGNORE INTO orders (client_order_id, signal_id, account, pipeline, instrument, side, qty, state, not_before, slippage_bps, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'new', ?8, ?9, ?10, ?10)",
        params![coid, key, account, reason, instrument, side.as_str(), qty.abs().to_string(), not_before, slippage.to_string(), now],
    )? == 1)
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
fn send_legs(
    tx: &rusqlite::Transaction<'_>,
    last: &HashMap<String, (i64, Decimal)>,
    account: &crate::config::Account,
    basket_id: &str,
    side: OrderSide,
    ts: i64,
) -> rusqlite::Result<Vec<Outcome>> {
    let legs: Vec<(i64, String, String)> = {
        let mut stmt = tx.prepare_cached("SELECT idx, instrument, qty FROM basket_legs WHERE basket_id = ?1 AND side = ?2 AND state = 'waiting' ORDER BY idx")?;
        let rows = stmt.query_map(params![basket_id, side.as_str()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<rusqlite::Result<Vec<_>>>()?;
        rows
    };
    let id = account.id.get_ref();
    for (idx, instrument, qty) in legs {
        let intent = Intent { side, qty: dec(&qty)? };
        let position = OrderManager::effective_position(tx, id, &instrument)?;
        let price = last.get(&instrument).map(|(_, p)| *p);
        let ctx = self_risk_context(tx, last, account, &format!("basket/{basket_id}"), &instrument, ts, price, position)?;
        if let Err(refusal) = risk::check(&account.risk, &ctx, &intent) {
            tx.execute("UPDATE basket_legs SET state = 'refused' WHERE basket_id = ?1 AND idx = ?2", params![basket_id, idx])?;
            return fail_basket(tx, basket_id, &format!("leg {idx} ({} {qty} {instrument}) refused by {}: {}", side.as_str(), refusal.rule, refusal.reason), ts);
        }
        let key = format!("basket/{basket_id}/{idx}");
        let coid = client_order_id(&key, id);
        tx.execute(
            "INSERT OR IGNORE INTO orders (client_order_id, signal_id, account, pipeline, instrument, side, qty, state, not_before, slippage_bps, created_at, updated_at)
             VALUES (?1, ?2, ?3, 'basket', ?4, ?5, ?6, 'new', ?7, ?8, ?9, ?9)",
            params![coid, key, id, instrument, side.as_str(), qty, ts, account.slippage_bps.to_string(), now_ms()],
        )?;
        tx.execute("UPDATE basket_legs SET state = 'sent', client_order_id = ?3 WHERE basket_id = ?1 AND idx = ?2", params![basket_id, idx, coid])?;
    }
    Ok(Vec::new())
}

/// Stop a basket: no more legs; an alert; the filled legs closed if it asked.
fn fail_basket(tx: &rusqlite::Transaction<'_>, basket_id: &str, reason: &str, ts: i64) -> rusqlite::Result<Vec<Outcome>> {
    let (account, unwind): (String, bool) = tx.query_row("SELECT account, unwind FROM baskets WHERE basket_id = ?1", [basket_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    tx.execute("UPDATE basket_legs SET state = 'not_sent' WHERE basket_id = ?1 AND state = 'waiting'", [basket_id])?;
    let filled: Vec<(i64, String, String, String)> = {
        let mut stmt = tx.prepare_cached(
            "SELECT l.idx, l.instrument, l.side, l.qty FROM basket_legs l JOIN orders o USING (client_order_id) WHERE l.basket_id = ?1 AND o.state = 'filled' ORDER BY l.idx",
        )?;
        let rows = stmt.query_map([basket_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?.collect::<rusqlite::Result<Vec<_>>>()?;
        rows
    };
    let mut unwound = Vec::new();
    if unwind {
        for (idx, instrument, side, qty) in &filled {
            // Close what the leg opened: the opposite side, same quantity.
            let signed = dec(qty)? * side_of(side)?.sign();
            queue_close(tx, &account, instrument, signed, &format!("unwind/{basket_id}/{idx}"), "basket-unwind", ts, Decimal::ZERO)?;
            unwound.push(instrument.clone());
        }
    }
    tx.execute("UPDATE baskets SET state = ?2 WHERE basket_id = ?1", params![basket_id, if unwind { "unwinding" } else { "failed" }])?;
    Ok(vec![Outcome::Event("basket_failed", json!({ "basket": basket_id, "account": account, "reason": reason, "unwinding": unwound, "alert": true }))])
}

/// After fills: a basket whose buy legs are all filled sends its sell legs; one
/// whose legs are all filled is complete.
fn advance_baskets(tx: &rusqlite::Transaction<'_>, config: &Config, last: &HashMap<String, (i64, Decimal)>, ts: i64) -> rusqlite::Result<Vec<Outcome>> {
    let open: Vec<(String, String, String)> = {
        let mut stmt = tx.prepare_cached("SELECT basket_id, account, state FROM baskets WHERE state IN ('buying', 'selling')")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<rusqlite::Result<Vec<_>>>()?;
        rows
    };
    let mut out = Vec::new();
    for (basket_id, account_id, state) in open {
        let side = if state == "buying" { "buy" } else { "sell" };
        let unfilled: i64 = tx.query_row(
            "SELECT COUNT(*) FROM basket_legs l LEFT JOIN orders o USING (client_order_id) WHERE l.basket_id = ?1 AND l.side = ?2 AND (o.state IS NULL OR o.state != 'filled')",
            params![basket_id, side],
            |r| r.get(0),
        )?;
        if unfilled > 0 {
            continue;
        }
        if state == "buying" {
            tx.execute("UPDATE baskets SET state = 'selling' WHERE basket_id = ?1", [&basket_id])?;
            if let Some(account) = config.account(&account_id) {
                out.extend(send_legs(tx, last, account, &basket_id, OrderSide::Sell, ts)?);
            }
        } else {
            tx.execute("UPDATE baskets SET state = 'complete' WHERE basket_id = ?1", [&basket_id])?;
            out.push(Outcome::Event("basket_complete", json!({ "basket": basket_id, "account": account_id })));
        }
    }
    Ok(out)
}

/// What the risk checks need, read inside the deciding transaction.
#[allow(clippy::too_many_arguments)]
fn self_risk_context(
    tx: &rusqlite::Transaction<'_>,
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
    let realized: Option<String> = tx.query_row("SELECT realized FROM daily_pnl WHERE account = ?1 AND day = ?2", params![id, day], |r| r.get(0)).optional()?;
    let mut daily_pnl = opt_dec(realized.as_deref())?.unwrap_or_default();
    let mut other_open_positions = 0;
    let mut stmt = tx.prepare_cached("SELECT instrument, qty, lots FROM positions WHERE account = ?1")?;
    let rows = stmt.query_map([id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?;
    for row in rows {
        let (instr, qty, lots) = row?;
        let p = Position { qty: dec(&qty)?, lots: lots_of(&lots)?, realized: Decimal::ZERO };
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
    let mut stmt = tx.prepare_cached("SELECT not_before FROM orders WHERE account = ?1 AND not_before > ?2 AND not_before <= ?3")?;
    let recent_orders_ms = stmt.query_map(params![id, now_ms - 1000, now_ms], |r| r.get(0))?.collect::<rusqlite::Result<Vec<i64>>>()?;
    let last_entry_ms: Option<i64> =
        tx.query_row("SELECT ts FROM entries WHERE pipeline = ?1 AND instrument = ?2", params![pipeline, instrument], |r| r.get(0)).optional()?;
    Ok(risk::RiskContext { now_ms, price, position, other_open_positions, daily_pnl, capital: account.capital, recent_orders_ms, last_entry_ms })
}

/// Record that the daily-loss breaker tripped for `account` today; true the first time.
fn trip_breaker(tx: &rusqlite::Transaction<'_>, account: &str, now_ms: i64) -> rusqlite::Result<bool> {
    let key = format!("breaker/{account}/{}", crate::domain::time::ist_day(now_ms));
    Ok(tx.execute("INSERT OR IGNORE INTO settings (key, value) VALUES (?1, 'tripped')", [key])? == 1)
}

/// Move an order through the state machine inside `tx`, appending the
/// transition to the journal. A transition the table refuses changes nothing
/// and comes back as the inner error.
fn advance(tx: &rusqlite::Transaction<'_>, coid: &str, event: state::OrderEvent) -> rusqlite::Result<Result<state::OrderState, state::InvalidTransition>> {
    let current: String = tx.query_row("SELECT state FROM orders WHERE client_order_id = ?1", [coid], |r| r.get(0))?;
    let from = state::OrderState::parse(&current).ok_or_else(|| corrupt(&format!("state of order {coid}"), &current))?;
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

/// Record a fill inside `tx`, whole (`Fill`) or partial (`PartialFill`): the
/// fill, the position it changes, the paper book and the order.
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
    event: state::OrderEvent,
) -> rusqlite::Result<Result<(), state::InvalidTransition>> {
    // The state machine first: a fill for an order that cannot take one changes nothing.
    if let Err(refused) = advance(tx, coid, event)? {
        return Ok(Err(refused));
    }
    let held: Option<(String, String, String)> = tx
        .query_row("SELECT qty, realized, lots FROM positions WHERE account = ?1 AND instrument = ?2", [account, instrument], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let before = match held {
        Some((q, r, lots)) => Position { qty: dec(&q)?, lots: lots_of(&lots)?, realized: dec(&r)? },
        None => Position::default(),
    };
    let (realized_before, before_qty) = (before.realized, before.qty);
    let after = before.apply_fill(side, qty, price, ts);
    let day = crate::domain::time::ist_day(ts);
    let today: Option<String> = tx.query_row("SELECT realized FROM daily_pnl WHERE account = ?1 AND day = ?2", params![account, day], |r| r.get(0)).optional()?;
    let today = opt_dec(today.as_deref())?.unwrap_or_default() + (after.realized - realized_before);
    tx.execute(
        "INSERT INTO daily_pnl (account, day, realized) VALUES (?1, ?2, ?3) ON CONFLICT(account, day) DO UPDATE SET realized = ?3",
        params![account, day, today.to_string()],
    )?;
    tx.execute(
        "INSERT INTO positions (account, instrument, qty, avg_price, realized, lots) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(account, instrument) DO UPDATE SET qty = ?3, avg_price = ?4, realized = ?5, lots = ?6",
        params![account, instrument, after.qty.to_string(), after.avg_price().to_string(), after.realized.to_string(), after.lots_text()],
    )?;
    arm_exit(tx, coid, account, instrument, &before_qty, &after, price)?;
    tx.execute(
        "INSERT INTO fills (client_order_id, seq, account, instrument, side, qty, price, ts)
         VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM fills WHERE client_order_id = ?1), ?2, ?3, ?4, ?5, ?6, ?7)",
        params![coid, account, instrument, side.as_str(), qty.to_string(), price.to_string(), ts],
    )?;
    tx.execute("UPDATE paper_book SET state = 'filled', fill_price = ?2, fill_ts = ?3 WHERE client_order_id = ?1", params![coid, price.to_string(), ts])?;
    tx.execute("UPDATE orders SET fill_price = ?2, fill_ts = ?3 WHERE client_order_id = ?1", params![coid, price.to_string(), ts])?;
    Ok(Ok(()))
}

#[cfg(test)]
mod tests;
