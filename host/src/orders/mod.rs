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

pub mod audit;
mod baskets;
mod closing;
mod decisions;
pub mod exits;
pub mod journal;
mod manual;
mod paper;
pub mod protect;
pub mod reconcile;
pub mod report;
pub mod risk;
pub mod service;
mod settle;
pub mod slicing;
pub mod state;
mod watchers;

use baskets::advance_baskets;
pub use baskets::{Basket, BasketLeg};
pub use closing::{CLOSE_REASONS, square_off_rule, square_off_rule_in};
use closing::{arm_exit, cancel_entries_at_square_off, queue_close, square_off_due};
use decisions::{restore_cooldown, self_risk_context};
use journal::{Cached as _, SCHEMA, advance, dec, lots_of, opt_dec, record_fill, side_of};
pub use watchers::Watcher;

use crate::brokers::live::{LiveOrder, LiveUpdate};
use crate::brokers::paper::Position;
use crate::bus::events::Event;
use crate::bus::message::{QuotesMessage, SignalMessage, envelope};
use crate::config::Config;
use crate::domain::time::now_ms;
use crate::subscriber::{Intent, OrderSide, Share, client_order_id, fan_out};

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
    /// Whether the disk under the journal is full (retried, but an alert: someone must act).
    #[must_use]
    pub fn is_disk_full(&self) -> bool {
        matches!(
            self,
            Self::Journal {
                source: rusqlite::Error::SqliteFailure(e, _),
                ..
            } if e.code == rusqlite::ErrorCode::DiskFull
        )
    }

    /// The journal file at fault.
    #[must_use]
    pub fn journal(&self) -> &str {
        match self {
            Self::Journal { path, .. } => path,
        }
    }

    /// Whether trying again may succeed: the journal busy or locked by another
    /// connection, or an I/O failure (a full or failing disk). A constraint or a
    /// value that does not fit fails the same way every time.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        use rusqlite::ErrorCode as C;
        match self {
            Self::Journal {
                source: rusqlite::Error::SqliteFailure(e, _),
                ..
            } => {
                matches!(
                    e.code,
                    C::DatabaseBusy
                        | C::DatabaseLocked
                        | C::SystemIoFailure
                        | C::DiskFull
                        | C::CannotOpen
                        | C::OutOfMemory
                )
            }
            Self::Journal { .. } => false,
        }
    }
}

/// Something to publish after a journal write.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// An order lifecycle message for `<prefix>:orders`.
    Order(String),
    /// An event for `<prefix>:events`.
    Event(Event),
}

/// The order manager of one process (the orders role).
pub struct OrderManager {
    db: Connection,
    path: String,
    /// In memory until [`OrderManager::save`] writes it to `path`.
    scratch: bool,
    /// The kill switch turned on while the journal could not record it (a full disk):
    /// honoured at once, written when the journal takes writes again.
    kill_now: std::sync::Arc<std::sync::atomic::AtomicBool>,
    config: std::sync::Arc<Config>,
    mode: crate::domain::TradingMode,
    last: HashMap<String, (i64, Decimal)>,
    /// Each instrument's previous close, for the paper venue's price bands.
    closes: paper::Closes,
    /// Recent opens per instrument: an order recorded after the first price
    /// following its signal has already gone by (prices and signals travel
    /// separately) still fills at that price, so paper fills do not depend on
    /// which message happened to be handled first.
    recent: Recent,
    /// Signals decided (or skipped) by this process, for `is_decided`.
    decided: std::collections::HashSet<String>,
    /// Time of the latest price message from each pipeline.
    pipeline_clock: HashMap<String, i64>,
    /// Pipelines whose source has ended (see `QuotesMessage::last`).
    finished: std::collections::HashSet<String>,
    /// Accounts whose orders go to a live broker (see [`crate::brokers::live`]).
    live: std::collections::HashSet<String>,
    /// Live orders recorded as submitted, waiting to be handed to the router.
    handoff: Vec<LiveOrder>,
    /// Live orders to cancel, waiting to be handed to the router.
    cancels: Vec<crate::brokers::live::LiveCancel>,
    /// Orders whose cancel was handed over (asked once).
    cancel_asked: std::collections::HashSet<String>,
    /// Working orders whose terms changed (protective stops), waiting to be handed to the router.
    modifies: Vec<crate::brokers::live::LiveModify>,
    /// The latest price time seen, and when it came (for [`OrderManager::market_clock`]).
    seen: Option<(i64, std::time::Instant)>,
    /// Years whose calendar is unknown or provisional, already told (once a year).
    calendar_told: std::collections::BTreeSet<i64>,
}

/// An order's kind from its journal columns (`order_type`, `limit_price`, `trigger_price`).
fn order_kind(
    coid: &str,
    (code, price, trigger): &(Option<String>, Option<String>, Option<String>),
) -> rusqlite::Result<crate::brokers::OrderKind> {
    crate::brokers::OrderKind::from_parts(
        code.as_deref(),
        opt_dec(price.as_deref())?,
        opt_dec(trigger.as_deref())?,
    )
    .ok_or_else(|| {
        journal::corrupt(
            "order type",
            &format!("{coid}: {code:?} {price:?} {trigger:?}"),
        )
    })
}

/// An order's validity from its journal column (`None`: DAY).
fn order_validity(coid: &str, code: Option<&str>) -> rusqlite::Result<crate::brokers::Validity> {
    crate::brokers::Validity::parse(code)
        .ok_or_else(|| journal::corrupt("order validity", &format!("{coid}: {code:?}")))
}

/// Recent bars per instrument, oldest first (the paper venue works its orders against them).
type Recent = HashMap<String, std::collections::VecDeque<crate::domain::order::PriceBar>>;

/// Prices kept per instrument for late orders.
const RECENT_PRICES: usize = 4096;

impl std::fmt::Debug for OrderManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderManager")
            .field("path", &self.path)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// How a journal meets the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Every commit is on disk before the next step (`run`, paper or live).
    Durable,
    /// In memory, written to the path once at the end ([`OrderManager::save`]): a
    /// backtest's journal is an output, and a crash means running it again.
    Scratch,
}

impl OrderManager {
    /// Open (or create) the journal at `path`.
    ///
    /// # Errors
    /// When SQLite cannot open or set it up.
    pub fn open(
        path: &Path,
        config: std::sync::Arc<Config>,
        mode: crate::domain::TradingMode,
    ) -> Result<Self, OrderError> {
        Self::open_with(path, config, mode, Durability::Durable)
    }

    /// Write a scratch journal (a backtest's, kept in memory) to its path, replacing what
    /// is there; nothing to do for a durable one, which is on disk at every commit.
    ///
    /// # Errors
    /// The file cannot be replaced or written.
    pub fn save(&self) -> Result<(), OrderError> {
        if !self.scratch {
            return Ok(());
        }
        let path = Path::new(&self.path);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.path));
        }
        self.db
            .execute("VACUUM INTO ?1", [&self.path])
            .map(|_| ())
            .map_err(self.err())
    }

    /// Open (or create) the journal at `path`, as durable as `durability` says.
    ///
    /// # Errors
    /// When SQLite cannot open or set it up.
    pub fn open_with(
        path: &Path,
        config: std::sync::Arc<Config>,
        mode: crate::domain::TradingMode,
        durability: Durability,
    ) -> Result<Self, OrderError> {
        let p = path.display().to_string();
        let err = |source| OrderError::Journal {
            path: p.clone(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        // A scratch journal lives in memory and is written to `path` at the end (`save`).
        let db = match durability {
            Durability::Durable => Connection::open(path),
            Durability::Scratch => Connection::open_in_memory(),
        }
        .map_err(err)?;
        match durability {
            // WAL: readers never block the writer; FULL: a committed decision survives a crash.
            Durability::Durable => {
                db.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
                db.pragma_update(None, "synchronous", "FULL").map_err(err)?;
            }
            // The same schema and statements in memory: nothing waits for the disk.
            Durability::Scratch => {}
        }
        db.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        // Every statement the journal runs stays prepared (see `journal::Cached`).
        db.set_prepared_statement_cache_capacity(128);
        Self::migrate_fills(&db).map_err(err)?;
        // The schema and its added columns in one transaction: a reader (the console, a
        // report) sees no journal or a whole one, never tables without their columns.
        db.execute_batch("BEGIN IMMEDIATE").map_err(err)?;
        if let Err(e) = Self::make_schema(&db).and_then(|()| db.execute_batch("COMMIT")) {
            let _ = db.execute_batch("ROLLBACK");
            return Err(err(e));
        }
        let om = Self {
            db,
            path: p,
            scratch: durability == Durability::Scratch,
            kill_now: std::sync::Arc::default(),
            config,
            mode,
            last: HashMap::new(),
            closes: HashMap::new(),
            recent: HashMap::new(),
            decided: std::collections::HashSet::new(),
            pipeline_clock: HashMap::new(),
            finished: std::collections::HashSet::new(),
            live: std::collections::HashSet::new(),
            handoff: Vec::new(),
            cancels: Vec::new(),
            cancel_asked: std::collections::HashSet::new(),
            calendar_told: std::collections::BTreeSet::new(),
            modifies: Vec::new(),
            seen: None,
        };
        om.store_exit_rules()?;
        Ok(om)
    }

    /// The journal's tables, the columns added since its first release, and its indexes.
    fn make_schema(db: &Connection) -> rusqlite::Result<()> {
        db.execute_batch(SCHEMA)?;
        // Columns added after the first release of the journal, added where missing (any
        // other failure is the journal's and stops the start).
        // `filled_qty` is the broker's cumulative count (partial fills), `reference_price` the
        // price the order was decided at (its protection collar, also after a restart),
        // `submitted_at` when it was handed to the broker (an order book entry older than that is not ours),
        // `opens` whether a signal's order opened or added to a position (it starts the pipeline's cooldown).
        // `algo_id` the regulator's id of the account's strategies when the order was made, and a
        // signal's plugin, version and sha256, for the audit export. `waits_for`: the protective
        // stop a strategy's exit or reversal waited on (what it filled meanwhile is not sold twice).
        // A basket leg's order terms: a manual ticket may be a limit or a stop; `cancelled_by`
        // the command that cancelled its order (a trader's cancel is not the broker's); its
        // `stop_loss` and `target`, a manual ticket's bracket for the managed exit.
        // `wanted_trigger`/`wanted_price`/`wanted_qty`: terms asked of the broker for a working order and
        // not yet taken (`trigger_price`/`limit_price` are what the broker holds);
        // `modifications` how many changes the broker took (its budget per order).
        // `settles_after`: the earlier working order on the other side a live order waits to
        // see settled, `settle_target` the position it was decided to reach (see `settle`).
        let added = [
            ("orders", "stop_loss TEXT"),
            ("orders", "target TEXT"),
            ("orders", "broker_order_id TEXT"),
            ("orders", "filled_qty TEXT"),
            ("orders", "reference_price TEXT"),
            ("orders", "submitted_at INTEGER"),
            ("orders", "opens INTEGER NOT NULL DEFAULT 0"),
            ("orders", "algo_id TEXT"),
            ("orders", "parent TEXT"),
            ("orders", "slice TEXT"),
            ("orders", "order_type TEXT"),
            ("orders", "limit_price TEXT"),
            ("orders", "trigger_price TEXT"),
            ("orders", "modified_at INTEGER"),
            ("orders", "validity TEXT"),
            ("orders", "waits_for TEXT"),
            ("orders", "wanted_trigger TEXT"),
            ("orders", "wanted_price TEXT"),
            ("orders", "modifications INTEGER NOT NULL DEFAULT 0"),
            ("orders", "wanted_qty TEXT"),
            ("orders", "settles_after TEXT"),
            ("orders", "settle_target TEXT"),
            ("paper_book", "seen_ts INTEGER"),
            ("paper_book", "triggered INTEGER NOT NULL DEFAULT 0"),
            ("signals", "plugin TEXT"),
            ("signals", "plugin_version TEXT"),
            ("signals", "plugin_sha256 TEXT"),
            ("basket_legs", "order_type TEXT"),
            ("basket_legs", "limit_price TEXT"),
            ("basket_legs", "trigger_price TEXT"),
            ("basket_legs", "validity TEXT"),
            ("basket_legs", "cancelled_by TEXT"),
            ("basket_legs", "stop_loss TEXT"),
            ("basket_legs", "target TEXT"),
        ];
        for (table, column) in added {
            let name = column.split(' ').next().unwrap_or(column);
            let present: bool = db.row(
                "SELECT COUNT(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
                [table, name],
                |r| r.get(0),
            )?;
            if !present {
                db.exec(&format!("ALTER TABLE {table} ADD COLUMN {column}"), [])?;
            }
        }
        // A sliced order's children by their parent (a basket leg's slices).
        db.execute_batch("CREATE INDEX IF NOT EXISTS orders_by_parent ON orders (parent)")
    }

    /// Journals from before partial fills kept one fill per order (`client_order_id` the key):
    /// their fills move, in order, to the table that keeps each part.
    fn migrate_fills(db: &Connection) -> rusqlite::Result<()> {
        let sql: Option<String> = db
            .row(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'fills'",
                [],
                |r| r.get(0),
            )
            .optional()?;
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
        |source| OrderError::Journal {
            path: self.path.clone(),
            source,
        }
    }

    /// Whether a signal has been decided, by this process or (per the journal) an earlier one.
    #[must_use]
    pub fn is_decided(&self, signal_id: &str) -> bool {
        self.decided.contains(signal_id)
            || self
                .db
                .row(
                    "SELECT 1 FROM decisions WHERE signal_id = ?1 LIMIT 1",
                    [signal_id],
                    |_| Ok(()),
                )
                .optional()
                .ok()
                .flatten()
                .is_some()
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
        let v: Option<String> = self
            .db
            .row("SELECT value FROM settings WHERE key = 'kill'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(self.err())?;
        Ok(v.as_deref() == Some("on") || self.kill_now.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// Turn the kill switch on or off.
    ///
    /// # Errors
    /// A journal failure.
    pub fn set_kill_switch(&self, on: bool) -> Result<(), OrderError> {
        self.db
            .exec("INSERT INTO settings (key, value) VALUES ('kill', ?1) ON CONFLICT(key) DO UPDATE SET value = ?1", [if on { "on" } else { "off" }])
            .map_err(self.err())?;
        self.kill_now.store(on, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// The kill switch in memory, for the command reader to turn on while the journal cannot
    /// be written (every decision reads it; [`OrderManager::set_kill_switch`] records it).
    #[must_use]
    pub fn kill_flag(&self) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
        self.kill_now.clone()
    }

    /// For a slice: its parent, its place (`2/3`), and the parent's quantity and what of it has filled.
    fn parent_progress(
        &self,
        coid: &str,
    ) -> Result<Option<(String, String, Decimal, Decimal)>, OrderError> {
        let row: Option<(Option<String>, Option<String>)> = self
            .db
            .row(
                "SELECT parent, slice FROM orders WHERE client_order_id = ?1",
                [coid],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(self.err())?;
        let Some((Some(parent), slice)) = row else {
            return Ok(None);
        };
        let mut stmt = self.db.prepare_cached("SELECT o.qty, (SELECT group_concat(f.qty, ' ') FROM fills f WHERE f.client_order_id = o.client_order_id) FROM orders o WHERE o.parent = ?1").map_err(self.err())?;
        let rows = stmt
            .query_map([&parent], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
            })
            .map_err(self.err())?;
        let (mut qty, mut filled) = (Decimal::ZERO, Decimal::ZERO);
        for row in rows {
            let (q, fills) = row.map_err(self.err())?;
            qty += dec(&q).map_err(self.err())?;
            for f in fills.as_deref().unwrap_or_default().split_whitespace() {
                filled += dec(f).map_err(self.err())?;
            }
        }
        Ok(Some((parent, slice.unwrap_or_default(), qty, filled)))
    }

    fn order_message(&self, coid: &str, state: &str, extra: Value) -> Result<String, OrderError> {
        let row = self
            .db
            .row(
                "SELECT signal_id, account, pipeline, instrument, side, qty, order_type, limit_price, trigger_price, validity FROM orders WHERE client_order_id = ?1",
                [coid],
                |r| {
                    let terms = (r.get::<_, Option<String>>(6)?, r.get::<_, Option<String>>(7)?, r.get::<_, Option<String>>(8)?, r.get::<_, Option<String>>(9)?);
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?, r.get::<_, String>(4)?, r.get::<_, String>(5)?, terms))
                },
            )
            .map_err(self.err())?;
        let mut body = json!({
            "mode": self.mode, "client_order_id": coid, "signal_id": row.0, "account": row.1, "pipeline": row.2,
            "instrument": row.3, "side": row.4, "qty": row.5, "state": state,
        });
        // A limit or a stop says so, with its prices; a market day order says nothing more.
        if let Some(b) = body.as_object_mut() {
            let (order_type, limit, trigger, validity) = row.6;
            for (key, value) in [
                ("order_type", order_type),
                ("limit_price", limit),
                ("trigger_price", trigger),
                ("validity", validity),
            ] {
                if let Some(v) = value {
                    b.insert(key.to_owned(), json!(v));
                }
            }
        }
        if let (Some(b), Value::Object(e)) = (body.as_object_mut(), extra) {
            b.extend(e);
        }
        // A slice of a larger order: where the whole order stands.
        if let (Some(b), Some((parent, slice, qty, filled))) =
            (body.as_object_mut(), self.parent_progress(coid)?)
        {
            b.extend([
                ("parent".to_owned(), json!(parent)),
                ("slice".to_owned(), json!(slice)),
                ("parent_qty".to_owned(), json!(qty.to_string())),
                ("parent_filled".to_owned(), json!(filled.to_string())),
            ]);
        }
        Ok(envelope(
            "order",
            &format!("{coid}/{state}"),
            now_ms(),
            body,
        ))
    }

    /// Send every recorded-but-unsent order to the (paper) broker, in one
    /// transaction. Idempotent: the paper book is keyed by client order id.
    ///
    /// # Errors
    /// A journal failure: then nothing of this call is committed.
    pub fn submit_new(&mut self) -> Result<Vec<Outcome>, OrderError> {
        let path = self.path.clone();
        let jerr = |source| OrderError::Journal {
            path: path.clone(),
            source,
        };
        let tx = self.db.transaction().map_err(jerr)?;
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
        transitions
            .into_iter()
            .map(|(coid, state, extra)| self.order_message(&coid, state, extra).map(Outcome::Order))
            .collect()
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
                "SELECT client_order_id, account, instrument, side, qty, broker_order_id, reference_price, submitted_at, filled_qty, state, pipeline, order_type, limit_price, trigger_price, validity, slice FROM orders
                 WHERE state IN ('submitted', 'accepted', 'triggered', 'partially_filled', 'pending_cancel') ORDER BY rowid",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| {
                let text = |i: usize| r.get::<_, Option<String>>(i);
                let kind = (text(11)?, text(12)?, text(13)?);
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    text(5)?,
                    text(6)?,
                    r.get::<_, Option<i64>>(7)?,
                    text(8)?,
                    r.get::<_, String>(9)?,
                    r.get::<_, String>(10)?,
                    kind,
                    text(14)?,
                    text(15)?,
                ))
            })
            .map_err(self.err())?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(self.err())?;
        rows.into_iter()
            .filter(|r| self.live.contains(&r.1))
            .map(
                |(
                    coid,
                    account,
                    instrument,
                    side,
                    qty,
                    broker_order_id,
                    reference,
                    submitted_at,
                    filled,
                    state,
                    pipeline,
                    kind,
                    validity,
                    slice,
                )| {
                    let kind = order_kind(&coid, &kind)?;
                    let validity = order_validity(&coid, validity.as_deref())?;
                    // The price it was decided at, as journaled: its protection stands after a restart.
                    let reference_price = opt_dec(reference.as_deref())?
                        .or_else(|| self.last.get(&instrument).map(|(_, p)| *p));
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
                        kind,
                        validity,
                        // Not fresh: its margin is never asked again.
                        margin_scope: crate::brokers::live::MarginScope::Alone,
                        autoslice: slice.as_deref() == Some(slicing::AUTOSLICE),
                    })
                },
            )
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(self.err())
    }

    /// After a restart: the changes of terms asked of a broker and not taken when the last
    /// run stopped (`wanted_*`), to be asked again (the terms it holds are asked for nothing:
    /// each change counts against the broker's budget per order).
    ///
    /// # Errors
    /// A journal failure.
    pub fn pending_modifies(&self) -> Result<Vec<crate::brokers::live::LiveModify>, OrderError> {
        let mut stmt = self
            .db
            .prepare(
                "SELECT client_order_id, account, COALESCE(wanted_qty, qty), order_type, COALESCE(wanted_price, limit_price), COALESCE(wanted_trigger, trigger_price) FROM orders
                 WHERE state IN ('submitted', 'accepted', 'triggered', 'partially_filled') AND (wanted_trigger IS NOT NULL OR wanted_price IS NOT NULL OR wanted_qty IS NOT NULL) ORDER BY rowid",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    (r.get(3)?, r.get(4)?, r.get(5)?),
                ))
            })
            .map_err(self.err())?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(self.err())?;
        rows.into_iter()
            .filter(|r| self.live.contains(&r.1))
            .map(|(coid, account, qty, kind)| {
                Ok(crate::brokers::live::LiveModify {
                    kind: order_kind(&coid, &kind)?,
                    qty: dec(&qty)?,
                    client_order_id: coid,
                    account,
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
        let ids = stmt
            .query_map([account], |r| r.get(0))
            .map_err(self.err())?
            .collect::<rusqlite::Result<Vec<String>>>()
            .map_err(self.err())?;
        Ok(ids)
    }

    /// Record what a live broker reported about an order.
    ///
    /// # Errors
    /// A journal failure: nothing of it is then recorded, and the router's
    /// next poll reports it again.
    pub fn on_live_update(&mut self, update: &LiveUpdate) -> Result<Vec<Outcome>, OrderError> {
        let path = self.path.clone();
        let jerr = |source| OrderError::Journal {
            path: path.clone(),
            source,
        };
        // The market's time: the latest price's, else the wall clock.
        let market_now = self
            .last
            .values()
            .map(|(t, _)| *t)
            .max()
            .unwrap_or_else(now_ms);
        let tx = self.db.transaction().map_err(jerr)?;
        let mut transitions: Vec<(String, &'static str, Value)> = Vec::new();
        let mut out = Vec::new();
        let refused = |coid: &str, e: state::InvalidTransition| {
            Outcome::Event(Event::OrderTransitionRefused {
                client_order_id: coid.to_owned(),
                reason: e.to_string(),
            })
        };
        match update {
            LiveUpdate::Accepted {
                client_order_id: coid,
                broker_order_id,
            } => {
                tx.exec(
                    "UPDATE orders SET broker_order_id = ?2 WHERE client_order_id = ?1",
                    params![coid, broker_order_id],
                )
                .map_err(jerr)?;
                match advance(&tx, coid, state::OrderEvent::Accept).map_err(jerr)? {
                    Ok(to) => transitions.push((
                        coid.clone(),
                        to.as_str(),
                        json!({ "broker_order_id": broker_order_id }),
                    )),
                    Err(e) => out.push(refused(coid, e)),
                }
            }
            LiveUpdate::Rejected {
                client_order_id: coid,
                reason,
            } => match advance(&tx, coid, state::OrderEvent::Reject).map_err(jerr)? {
                Ok(to) => {
                    transitions.push((coid.clone(), to.as_str(), json!({ "reason": reason })));
                    // A protective stop's refusal is recorded against its position (one alert
                    // that says what guards it), not raised again at every price.
                    match protect::refused(&tx, coid, reason, market_now).map_err(jerr)? {
                        Some(event) => out.push(Outcome::Event(event)),
                        None => out.push(Outcome::Event(Event::OrderRejected {
                            client_order_id: coid.to_string(),
                            reason: reason.to_string(),
                        })),
                    }
                    restore_cooldown(&tx, coid).map_err(jerr)?;
                }
                Err(e) => out.push(refused(coid, e)),
            },
            LiveUpdate::CancelRequested {
                client_order_id: coid,
                reason,
            } => match advance(&tx, coid, state::OrderEvent::CancelRequest).map_err(jerr)? {
                Ok(to) => {
                    transitions.push((coid.clone(), to.as_str(), json!({ "reason": reason })))
                }
                Err(e) => out.push(refused(coid, e)),
            },
            LiveUpdate::PartFilled {
                client_order_id: coid,
                filled_qty,
                price,
            } => {
                Self::fill_to(
                    &tx,
                    &self.last,
                    coid,
                    *filled_qty,
                    Some(*price),
                    None,
                    &mut transitions,
                    &mut out,
                )
                .map_err(jerr)?;
            }
            LiveUpdate::Filled {
                client_order_id: coid,
                qty,
                price,
            } => {
                Self::fill_to(
                    &tx,
                    &self.last,
                    coid,
                    *qty,
                    Some(*price),
                    Some(state::OrderEvent::Fill),
                    &mut transitions,
                    &mut out,
                )
                .map_err(jerr)?;
            }
            LiveUpdate::Modified {
                client_order_id: coid,
                kind,
                qty,
            } => out.extend(
                protect::modified(&tx, coid, *kind, *qty)
                    .map_err(jerr)?
                    .map(Outcome::Event),
            ),
            LiveUpdate::ModifyRefused {
                client_order_id: coid,
                reason,
            } => out.extend(
                protect::modify_refused(
                    &tx,
                    coid,
                    reason,
                    &mut self.cancel_asked,
                    &mut self.cancels,
                )
                .map_err(jerr)?
                .map(Outcome::Event),
            ),
            LiveUpdate::Cancelled {
                client_order_id: coid,
                filled_qty,
                price,
                reason,
            } => {
                Self::fill_to(
                    &tx,
                    &self.last,
                    coid,
                    *filled_qty,
                    *price,
                    None,
                    &mut transitions,
                    &mut out,
                )
                .map_err(jerr)?;
                match advance(&tx, coid, state::OrderEvent::Cancel).map_err(jerr)? {
                    Ok(to) => {
                        transitions.push((
                            coid.clone(),
                            to.as_str(),
                            json!({ "reason": reason, "filled_qty": filled_qty.to_string() }),
                        ));
                        restore_cooldown(&tx, coid).map_err(jerr)?;
                    }
                    Err(e) => out.push(refused(coid, e)),
                }
            }
        }
        out.extend(advance_baskets(&tx, &self.config, &self.last, market_now).map_err(jerr)?);
        out.extend(
            protect::protect(
                &tx,
                &self.config,
                &self.live,
                market_now,
                &mut self.modifies,
                &mut self.cancel_asked,
                &mut self.cancels,
            )
            .map_err(jerr)?,
        );
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
        let refused = |e: state::InvalidTransition| {
            Outcome::Event(Event::OrderTransitionRefused {
                client_order_id: coid.to_owned(),
                reason: e.to_string(),
            })
        };
        type OrderRow = (
            String,
            String,
            String,
            i64,
            String,
            Option<String>,
            Option<String>,
        );
        let row: Option<OrderRow> = tx
            .row("SELECT account, instrument, side, not_before, qty, filled_qty, fill_price FROM orders WHERE client_order_id = ?1", [coid], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
            })
            .optional()?;
        let Some((account, instrument, side, not_before, qty, before, before_avg)) = row else {
            return Ok(());
        };
        let before = opt_dec(before.as_deref())?.unwrap_or_default();
        let part = filled.checked_sub(before).unwrap_or_default();
        let complete = last.is_some();
        if part > Decimal::ZERO {
            let Some(average) = average.filter(|p| *p > Decimal::ZERO) else {
                out.push(Outcome::Event(Event::OrderTransitionRefused {
                    client_order_id: coid.to_owned(),
                    reason: format!("{filled} filled without an average price"),
                }));
                return Ok(());
            };
            // average × filled = before_avg × before + price × part
            let before_avg = opt_dec(before_avg.as_deref())?.unwrap_or(average);
            // Checked: the broker's numbers are input, and an absurd one must not panic.
            let price = if before.is_zero() {
                Some(average)
            } else {
                average
                    .checked_mul(filled)
                    .zip(before_avg.checked_mul(before))
                    .and_then(|(all, had)| all.checked_sub(had))
                    .and_then(|v| v.checked_div(part))
                    .map(|p| p.round_dp(4).normalize())
            };
            let Some(price) = price.filter(|p| *p > Decimal::ZERO) else {
                out.push(Outcome::Event(Event::OrderTransitionRefused { client_order_id: coid.to_owned(), reason: format!("{filled} filled at an average of {average} does not follow from the {before} already filled at {before_avg}") }));
                return Ok(());
            };
            // Market time, like paper fills: the day's P&L and exits follow the prices' clock.
            let ts = last_prices
                .get(&instrument)
                .map_or(not_before, |(t, _)| (*t).max(not_before));
            let side = side_of(&side)?;
            let whole = complete || filled >= dec(&qty)?;
            let event = if whole {
                state::OrderEvent::Fill
            } else {
                state::OrderEvent::PartialFill
            };
            match record_fill(
                tx,
                coid,
                &account,
                &instrument,
                side,
                part,
                price,
                ts,
                event,
            )? {
                Ok(()) => {
                    tx.exec("UPDATE orders SET filled_qty = ?2, fill_price = ?3 WHERE client_order_id = ?1", params![coid, filled.to_string(), average.to_string()])?;
                    let state = tx.row(
                        "SELECT state FROM orders WHERE client_order_id = ?1",
                        [coid],
                        |r| r.get::<_, String>(0),
                    )?;
                    let state = state::OrderState::parse(&state)
                        .map_or("partially_filled", state::OrderState::as_str);
                    transitions.push((coid.to_owned(), state, json!({ "price": price.to_string(), "fill_ts": ts, "fill_qty": part.to_string(), "filled_qty": filled.to_string(), "average_price": average.to_string() })));
                }
                Err(e) => out.push(refused(e)),
            }
        } else if complete {
            // Complete with nothing new (its last part was reported as a partial fill).
            match advance(tx, coid, state::OrderEvent::Fill)? {
                Ok(to) => transitions.push((
                    coid.to_owned(),
                    to.as_str(),
                    json!({ "filled_qty": filled.to_string() }),
                )),
                Err(e) if e.from == state::OrderState::Filled => {}
                Err(e) => out.push(refused(e)),
            }
        }
        Ok(())
    }

    /// Inside `tx`: hand every `new` order to the paper book, accept it, and
    /// fill it at once when the first price after its signal has already gone by.
    #[allow(clippy::too_many_arguments)] // the manager's fields it reads, split for the borrow of `tx`
    fn submit_in(
        tx: &rusqlite::Transaction<'_>,
        recent: &Recent,
        live: &std::collections::HashSet<String>,
        last: &HashMap<String, (i64, Decimal)>,
        closes: &paper::Closes,
        rules: &crate::domain::contracts::ContractRules,
        handoff: &mut Vec<LiveOrder>,
        asked: &mut std::collections::HashSet<String>,
        cancels: &mut Vec<crate::brokers::live::LiveCancel>,
    ) -> rusqlite::Result<Vec<(String, &'static str, Value)>> {
        type NewOrder = (
            String,
            String,
            String,
            String,
            String,
            i64,
            String,
            String,
            (Option<String>, Option<String>, Option<String>),
            (Option<String>, Option<String>),
        );
        let new: Vec<NewOrder> = {
            let mut stmt = tx.prepare_cached(
                "SELECT client_order_id, account, instrument, side, qty, not_before, slippage_bps, pipeline, order_type, limit_price, trigger_price, validity, slice FROM orders WHERE state = 'new' ORDER BY rowid",
            )?;

            stmt.query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    (r.get(8)?, r.get(9)?, r.get(10)?),
                    (
                        r.get::<_, Option<String>>(11)?,
                        r.get::<_, Option<String>>(12)?,
                    ),
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?
        };
        let mut transitions = Vec::new();
        for (
            coid,
            account,
            instrument,
            side,
            qty,
            not_before,
            _slippage,
            pipeline,
            kind,
            (validity, slice),
        ) in new
        {
            if live.contains(&account) {
                // A live account's order: recorded as submitted before the broker call
                // (a restart then looks for it in the broker's book before placing it again),
                // with the price it was decided at and when it went out.
                let side = side_of(&side)?;
                let mut qty = qty;
                if pipeline != protect::PROTECTIVE {
                    let close = CLOSE_REASONS.contains(&pipeline.as_str());
                    // Sized against an earlier order on the other side the broker has not
                    // settled, it waits, then goes for what still takes the account where it
                    // was decided to go. `Ok(None)`: wait; `Err`: nothing left to do.
                    let settled = if !close && pipeline != "basket" && slice.is_none() {
                        settle::settle_first(tx, &coid, &account, &instrument, side, dec(&qty)?)?
                    } else {
                        Ok(Some(dec(&qty)?))
                    };
                    // An order that reduces a position waits for the position's protective
                    // stop to be cancelled; a close then closes only what is still held.
                    let released = match settled {
                        Ok(Some(settled_qty)) => {
                            qty = settled_qty.to_string();
                            protect::release_close(
                                tx,
                                &coid,
                                &account,
                                &instrument,
                                side,
                                settled_qty,
                                close,
                                asked,
                                cancels,
                            )?
                        }
                        other => other,
                    };
                    match released {
                        Ok(None) => continue,
                        Ok(Some(left)) => {
                            if left != dec(&qty)? {
                                qty = left.to_string();
                                tx.exec(
                                    "UPDATE orders SET qty = ?2 WHERE client_order_id = ?1",
                                    params![coid, qty],
                                )?;
                            }
                        }
                        Err(reason) => {
                            if let Ok(to) = advance(tx, &coid, state::OrderEvent::Cancel)? {
                                transitions.push((
                                    coid.clone(),
                                    to.as_str(),
                                    json!({ "reason": reason }),
                                ));
                            }
                            continue;
                        }
                    }
                }
                if let Ok(to) = advance(tx, &coid, state::OrderEvent::Submit)? {
                    transitions.push((coid.clone(), to.as_str(), json!({})));
                    let reference_price = last.get(&instrument).map(|(_, p)| *p);
                    let submitted_at = now_ms();
                    tx.exec(
                        "UPDATE orders SET reference_price = ?2, submitted_at = ?3 WHERE client_order_id = ?1",
                        params![coid, reference_price.map(|p| p.to_string()), submitted_at],
                    )?;
                    let kind = order_kind(&coid, &kind)?;
                    let validity = order_validity(&coid, validity.as_deref())?;
                    let margin_scope = if pipeline == "basket" {
                        baskets::margin_scope(tx, &coid)?
                    } else {
                        crate::brokers::live::MarginScope::Alone
                    };
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
                        kind,
                        validity,
                        margin_scope,
                        autoslice: slice.as_deref() == Some(slicing::AUTOSLICE),
                    });
                }
                continue;
            }
            // The paper venue refuses what the exchange refuses, in the brokers' words.
            let facts = paper::facts_of(rules, closes, &instrument);
            if let Some(refusal) = crate::domain::order::venue_refusal(
                &instrument,
                dec(&qty)?,
                order_kind(&coid, &kind)?,
                facts,
                last.get(&instrument).map(|(_, p)| *p),
            ) {
                for event in [state::OrderEvent::Submit, state::OrderEvent::Reject] {
                    if let Ok(to) = advance(tx, &coid, event)? {
                        transitions.push((coid.clone(), to.as_str(), json!({ "reason": refusal })));
                    }
                }
                decisions::restore_cooldown(tx, &coid)?;
                continue;
            }
            tx.exec(
                "INSERT OR IGNORE INTO paper_book (client_order_id, account, instrument, side, qty, not_before, state) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'open')",
                params![coid, account, instrument, side, qty, not_before],
            )?;
            for event in [state::OrderEvent::Submit, state::OrderEvent::Accept] {
                if let Ok(to) = advance(tx, &coid, event)? {
                    transitions.push((coid.clone(), to.as_str(), json!({})));
                }
            }
            // Worked at once against the prices that came after its signal and have gone by.
            let (filled, moved, _refused) =
                paper::work_open_orders(tx, recent, &instrument, Some(&coid))?;
            transitions.extend(moved);
            transitions.extend(
                filled
                    .into_iter()
                    .map(|(coid, extra)| (coid, "filled", extra)),
            );
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

    /// Where each pipeline's prices in the price stream were last applied up to
    /// (an entry id per pipeline), and the single cursor an older journal kept
    /// for every pipeline alike, per the journal. Pipelines merged in event time
    /// are applied out of the stream's order, so each has its own.
    ///
    /// # Errors
    /// A journal failure.
    pub fn price_cursors(&self) -> Result<(HashMap<String, String>, Option<String>), OrderError> {
        let mut stmt = self
            .db
            .prepare("SELECT key, value FROM settings WHERE key LIKE 'price_cursor%'")
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(self.err())?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(self.err())?;
        let mut by_pipeline = HashMap::new();
        let mut legacy = None;
        for (key, value) in rows {
            match key.strip_prefix("price_cursor/") {
                Some(pipeline) => {
                    by_pipeline.insert(pipeline.to_owned(), value);
                }
                None if key == "price_cursor" => legacy = Some(value),
                None => {}
            }
        }
        Ok((by_pipeline, legacy))
    }

    /// Whether `pipeline`'s source has ended (its last price message applied).
    #[must_use]
    pub fn is_finished(&self, pipeline: &str) -> bool {
        self.finished.contains(pipeline)
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
        let pipeline = q.pipeline();
        if q.last {
            // The end of a source: no price, and no time to move a clock to.
            self.finished.insert(pipeline.to_owned());
            return Vec::new();
        }
        if !self.finished.is_empty() {
            self.finished.remove(pipeline);
        }
        let clock = self
            .pipeline_clock
            .entry(pipeline.to_owned())
            .or_insert(q.ts);
        *clock = (*clock).max(q.ts);
        if self.seen.is_none_or(|(ts, _)| q.ts > ts) {
            self.seen = Some((q.ts, std::time::Instant::now()));
        }
        let fresh: Vec<bool> = q
            .quotes
            .iter()
            .map(|quote| {
                self.last
                    .get(&quote.instrument)
                    .is_none_or(|(ts, _)| q.ts > *ts)
            })
            .collect();
        for quote in &q.quotes {
            let entry = self
                .last
                .entry(quote.instrument.clone())
                .or_insert((q.ts, quote.close));
            if q.ts >= entry.0 {
                // The first price of a later day makes the day before's last its close.
                if crate::domain::time::ist_day(q.ts) > crate::domain::time::ist_day(entry.0) {
                    self.closes.insert(quote.instrument.clone(), entry.1);
                }
                *entry = (q.ts, quote.close);
            }
            let recent = self.recent.entry(quote.instrument.clone()).or_default();
            if recent.back().is_none_or(|b| q.ts > b.ts) {
                if recent.len() == RECENT_PRICES {
                    recent.pop_front();
                }
                recent.push_back(crate::domain::order::PriceBar {
                    ts: q.ts,
                    open: quote.open,
                    high: quote.high,
                    low: quote.low,
                });
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
    pub fn on_quotes_at(
        &mut self,
        q: &QuotesMessage,
        cursor: Option<&str>,
    ) -> Result<Vec<Outcome>, OrderError> {
        let fresh = self.observe(q);
        let path = self.path.clone();
        let jerr = |source| OrderError::Journal {
            path: path.clone(),
            source,
        };
        let config = self.config.clone();
        let tx = self.db.transaction().map_err(jerr)?;
        if let Some(cursor) = cursor {
            tx.exec("INSERT INTO settings (key, value) VALUES ('price_cursor/' || ?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2", [q.pipeline(), cursor]).map_err(jerr)?;
        }
        if q.last {
            // A source's end moves nothing: only its place in the stream is recorded.
            journal::commit(tx).map_err(jerr)?;
            return Ok(Vec::new());
        }
        let mut filled = Vec::new();
        let mut refusals = Vec::new();
        let mut worked = Vec::new();
        for quote in &q.quotes {
            let (done, moved, refused) =
                paper::work_open_orders(&tx, &self.recent, &quote.instrument, None)
                    .map_err(jerr)?;
            filled.extend(done);
            worked.extend(moved);
            refusals.extend(refused);
        }
        let mut exit_events = Vec::new();
        let priced: Vec<&str> = q
            .quotes
            .iter()
            .zip(&fresh)
            .filter(|(_, fresh)| **fresh)
            .map(|(quote, _)| quote.instrument.as_str())
            .collect();
        let cancelled = cancel_entries_at_square_off(
            &tx,
            &config,
            &self.live,
            &mut self.cancel_asked,
            &mut self.cancels,
            q.ts,
            Some(&priced),
        )
        .map_err(jerr)?;
        for (quote, _) in q.quotes.iter().zip(&fresh).filter(|(_, fresh)| **fresh) {
            exit_events.extend(Self::manage_exits(&config, &tx, q.ts, quote).map_err(jerr)?);
            exit_events
                .extend(watchers::fire(&tx, &config, &self.last, quote, q.ts).map_err(jerr)?);
        }
        exit_events.extend(advance_baskets(&tx, &config, &self.last, q.ts).map_err(jerr)?);
        exit_events.extend(
            protect::protect(
                &tx,
                &config,
                &self.live,
                q.ts,
                &mut self.modifies,
                &mut self.cancel_asked,
                &mut self.cancels,
            )
            .map_err(jerr)?,
        );
        let mut transitions = worked;
        transitions.extend(cancelled);
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
        refusals.extend(exit_events);
        for (coid, state, extra) in transitions {
            refusals.push(Outcome::Order(self.order_message(&coid, state, extra)?));
        }
        let mut out: Vec<Outcome> = filled
            .into_iter()
            .map(|(coid, extra)| {
                self.order_message(&coid, "filled", extra)
                    .map(Outcome::Order)
            })
            .collect::<Result<_, _>>()?;
        out.extend(refusals);
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
        let jerr = |source| OrderError::Journal {
            path: path.clone(),
            source,
        };
        let config = self.config.clone();
        let tx = self.db.transaction().map_err(jerr)?;
        let mut transitions = cancel_entries_at_square_off(
            &tx,
            &config,
            &self.live,
            &mut self.cancel_asked,
            &mut self.cancels,
            now,
            None,
        )
        .map_err(jerr)?;
        let rows: Vec<(String, String, String)> = {
            let mut stmt = tx.prepare_cached("SELECT account, instrument, qty FROM positions WHERE qty != '0' ORDER BY account, instrument").map_err(jerr)?;

            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .map_err(jerr)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(jerr)?
        };
        let mut out = Vec::new();
        for (account, instrument, qty) in rows {
            let qty = dec(&qty).map_err(jerr)?;
            let Some(cfg) = config.account(&account).filter(|_| !qty.is_zero()) else {
                continue;
            };
            if let Some(due) =
                square_off_due(&tx, &config, cfg, &account, &instrument, qty, now).map_err(jerr)?
            {
                let price = self.last.get(&instrument).map(|(_, p)| *p);
                out.extend(
                    due.queue(
                        &tx,
                        &config,
                        &account,
                        &instrument,
                        qty,
                        cfg.slippage_bps,
                        price,
                    )
                    .map_err(jerr)?,
                );
            }
        }
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

    /// The market's time as the prices tell it: a bar labelled `t` has closed, so it
    /// is at least a minute later, plus the wall time since it came. `None` before any price.
    #[must_use]
    pub fn market_clock(&self) -> Option<i64> {
        let (ts, at) = self.seen?;
        Some(
            ts.saturating_add(60_000)
                .saturating_add(i64::try_from(at.elapsed().as_millis()).unwrap_or(i64::MAX)),
        )
    }

    /// Wall time since the last new price.
    #[must_use]
    pub fn prices_quiet_for(&self) -> Option<std::time::Duration> {
        self.seen.map(|(_, at)| at.elapsed())
    }

    fn store_exit_rules(&self) -> Result<(), OrderError> {
        for a in &self.config.accounts {
            // Orders take the account's algo id from here as they are recorded (`ALGO_ID`).
            let key = format!("algo/{}", a.id.get_ref());
            match &a.algo_id {
                Some(id) => self.db.exec("INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2", [&key, id]),
                None => self.db.exec("DELETE FROM settings WHERE key = ?1", [&key]),
            }
            .map_err(self.err())?;
            let e = &a.exits;
            self.db
                .exec(
                    "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2",
                    [format!("exits/{}", a.id.get_ref()), format!("{},{},{}", e.stop_loss_pct, e.target_pct, e.trailing_pct)],
                )
                .map_err(self.err())?;
        }
        Ok(())
    }

    /// Close every position of `account` with market orders, named after the command.
    ///
    /// # Errors
    /// A journal failure.
    pub fn flatten(&mut self, account: &str, command_id: &str) -> Result<Vec<Outcome>, OrderError> {
        let positions: Vec<(String, String)> = {
            let mut stmt = self
                .db
                .prepare("SELECT instrument, qty FROM positions WHERE account = ?1")
                .map_err(self.err())?;

            stmt.query_map([account], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(self.err())?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(self.err())?
        };
        let slippage = self
            .config
            .account(account)
            .map(|a| a.slippage_bps)
            .unwrap_or_default();
        let path = self.path.clone();
        let jerr = |source| OrderError::Journal {
            path: path.clone(),
            source,
        };
        let tx = self.db.transaction().map_err(jerr)?;
        let mut out = Vec::new();
        for (instrument, qty) in positions {
            let qty = dec(&qty).map_err(jerr)?;
            if qty.is_zero() {
                continue;
            }
            let not_before = self.last.get(&instrument).map_or(0, |(ts, _)| *ts);
            let (_, sliced) = queue_close(
                &tx,
                Some(&self.config),
                account,
                &instrument,
                qty,
                &format!("flatten/{command_id}/{instrument}"),
                "flatten",
                not_before,
                slippage,
            )
            .map_err(jerr)?;
            out.extend(sliced);
        }
        journal::commit(tx).map_err(jerr)?;
        out.extend(self.submit_new()?);
        Ok(out)
    }

    /// The instruments in which `account` has an order at its broker that may fill any moment
    /// (a resting protective stop not counted): their positions are not compared with the
    /// broker's until it settles, as a fill on its way would read as a difference.
    ///
    /// # Errors
    /// A journal failure.
    pub fn instruments_in_flight(
        &self,
        account: &str,
    ) -> Result<std::collections::HashSet<String>, OrderError> {
        let mut stmt = self
            .db
            .prepare(
                "SELECT DISTINCT instrument FROM orders WHERE account = ?1
                   AND state IN ('submitted', 'accepted', 'partially_filled', 'triggered', 'pending_cancel')
                   AND NOT (pipeline = ?2 AND state = 'accepted')",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map(params![account, protect::PROTECTIVE], |r| r.get(0))
            .map_err(self.err())?
            .collect::<rusqlite::Result<std::collections::HashSet<String>>>()
            .map_err(self.err())?;
        Ok(rows)
    }

    /// `account`'s open positions per the journal: instrument → net units.
    ///
    /// # Errors
    /// A journal failure.
    pub fn positions_of(&self, account: &str) -> Result<HashMap<String, Decimal>, OrderError> {
        let mut stmt = self
            .db
            .prepare("SELECT instrument, qty FROM positions WHERE account = ?1")
            .map_err(self.err())?;
        let rows = stmt
            .query_map([account], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(self.err())?;
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
            out.insert(
                account.id.get_ref().clone(),
                json!({ "realized": "0", "unrealized": "0", "positions": {} }),
            );
        }
        let mut stmt = self.db.prepare("SELECT account, instrument, qty, lots, realized FROM positions ORDER BY account, instrument").map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })
            .map_err(self.err())?;
        let mut totals: HashMap<String, (Decimal, Decimal, serde_json::Map<String, Value>)> =
            HashMap::new();
        for row in rows {
            let (account, instrument, qty, lots, realized) = row.map_err(self.err())?;
            let p = (|| {
                Ok::<_, rusqlite::Error>(Position {
                    qty: dec(&qty)?,
                    lots: lots_of(&lots)?,
                    realized: dec(&realized)?,
                })
            })()
            .map_err(self.err())?;
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
        let one = |sql: &str| {
            self.db
                .row(sql, [], |r| r.get::<_, i64>(0))
                .map_err(self.err())
        };
        Ok(json!({
            "decisions": one("SELECT COUNT(*) FROM decisions")?,
            "orders": one("SELECT COUNT(*) FROM orders")?,
            "open_orders": one("SELECT COUNT(*) FROM orders WHERE state IN ('new', 'submitted', 'accepted', 'pending_cancel')")?,
            "fills": one("SELECT COUNT(*) FROM fills")?,
            "refusals": one("SELECT COUNT(*) FROM decisions WHERE outcome LIKE 'refused%'")?,
        }))
    }
}

#[cfg(test)]
mod tests;
