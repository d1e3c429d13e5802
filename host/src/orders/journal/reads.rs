//! The journal read from outside the order manager: the console's and an operator's view
//! of positions, exits, orders and watchers, through one read-only connection. Each row is
//! parsed once into its type; a cell its column cannot hold (a hand-edited or damaged
//! journal) is an error naming the table, the column, the row's key and the text, never a
//! default.

use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::time::Duration;

use rusqlite::OptionalExtension as _;
use rust_decimal::Decimal;

use crate::domain::OrderSide;

/// A journal that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// SQLite could not open or query it.
    #[error("journal {path}: {source}")]
    Sqlite {
        /// The journal.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// A cell its column cannot hold.
    #[error("journal {path}: {table}.{column} of {key}: {text:?} is not valid")]
    Corrupt {
        /// The journal.
        path: PathBuf,
        /// Its table.
        table: &'static str,
        /// Its column.
        column: &'static str,
        /// The row's key.
        key: String,
        /// The text found.
        text: String,
    },
}

/// A position as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PositionRow {
    /// The account.
    pub account: String,
    /// The instrument.
    pub instrument: String,
    /// Units held, negative for a short; zero once closed (its realized P&L stays).
    pub qty: Decimal,
    /// The average price of what is held.
    pub avg_price: Decimal,
    /// Realized P&L so far.
    pub realized: Decimal,
}

/// A position's armed exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitRow {
    /// The stop-loss level.
    pub stop: Option<Decimal>,
    /// The target level.
    pub target: Option<Decimal>,
    /// The trailing distance, percent.
    pub trailing_pct: Option<Decimal>,
    /// The best price since entry (the trail's anchor).
    pub best: Decimal,
}

/// An order, its terms and where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRow {
    /// Its id.
    pub client_order_id: String,
    /// The account.
    pub account: String,
    /// The pipeline (or the host's reason: `stop-loss`, `square-off`, …).
    pub pipeline: String,
    /// The instrument.
    pub instrument: String,
    /// Buy or sell.
    pub side: OrderSide,
    /// Units asked.
    pub qty: Decimal,
    /// Its state-machine state.
    pub state: String,
    /// The average fill price, once filled (or in part).
    pub fill_price: Option<Decimal>,
    /// Units filled so far, where the journal has counted them.
    pub filled_qty: Option<Decimal>,
    /// `MARKET`, `LIMIT`, `SL` or `SL-M`.
    pub order_type: String,
    /// Its limit.
    pub price: Option<Decimal>,
    /// Its trigger.
    pub trigger: Option<Decimal>,
    /// The order it is a slice of.
    pub parent: Option<String>,
    /// The broker's id for it.
    pub broker_order_id: Option<String>,
    /// The signal it carries out.
    pub signal_id: String,
}

/// One step of an order's state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransitionRow {
    /// The state before.
    pub from: String,
    /// The event.
    pub event: String,
    /// The state after.
    pub to: String,
    /// When, ms since the epoch.
    pub at: i64,
}

/// A level watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatcherRow {
    /// Its id (its `watch` command's).
    pub watch_id: String,
    /// The account.
    pub account: String,
    /// The instrument watched.
    pub instrument: String,
    /// The level.
    pub level: Decimal,
    /// Crossing up (else down).
    pub up: bool,
    /// The order's side.
    pub side: OrderSide,
    /// The order's instrument.
    pub order_instrument: String,
    /// The order's units.
    pub qty: Decimal,
    /// `armed`, `fired`, `cancelled`.
    pub state: String,
    /// When it fired.
    pub fired_ts: Option<i64>,
}

/// One fill from the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FillRow {
    /// Account.
    pub account: String,
    /// Instrument.
    pub instrument: String,
    /// +1 buy, −1 sell.
    pub sign: i8,
    /// Units.
    pub qty: Decimal,
    /// Price.
    pub price: Decimal,
    /// Exchange time, ms.
    pub ts: i64,
    /// What placed the order: a pipeline, or `stop-loss`, `square-off`, `flatten`…
    pub source: String,
}

/// A signal as the journal recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalRow {
    /// Its id, `<pipeline>/<plugin>@<version>/<ts>/<n>`.
    pub signal_id: String,
    /// Start of the bar whose close produced it.
    pub ts: i64,
    /// Pipeline.
    pub pipeline: String,
    /// Instrument.
    pub instrument: String,
    /// `buy`, `sell` or `exit`.
    pub side: String,
    /// The price it was seen at.
    pub price: Option<Decimal>,
    /// The strategy's reason.
    pub reason: String,
}

/// The journal, read-only.
pub struct JournalReader {
    db: rusqlite::Connection,
    path: PathBuf,
}

impl JournalReader {
    /// Open the journal at `path` read-only; `None` when there is none yet, or it has not
    /// made its tables (a journal that is starting reads as empty).
    ///
    /// # Errors
    /// SQLite cannot open or read it.
    pub fn open(path: &Path) -> Result<Option<Self>, ReadError> {
        if !path.exists() {
            return Ok(None);
        }
        let reader = Self {
            db: rusqlite::Connection::open_with_flags(
                path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .map_err(|source| ReadError::Sqlite {
                path: path.to_owned(),
                source,
            })?,
            path: path.to_owned(),
        };
        reader
            .db
            .busy_timeout(Duration::from_secs(2))
            .map_err(reader.sqlite())?;
        let ready = reader.has_tables(&["orders", "positions"])?;
        Ok(ready.then_some(reader))
    }

    /// Open the journal at `path` read-only, whatever it holds (a read of a table it lacks
    /// is then an error naming the journal): for a report asked of this very file.
    ///
    /// # Errors
    /// SQLite cannot open it.
    pub fn open_file(path: &Path) -> Result<Self, ReadError> {
        let db =
            rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .map_err(|source| ReadError::Sqlite {
                    path: path.to_owned(),
                    source,
                })?;
        Ok(Self {
            db,
            path: path.to_owned(),
        })
    }

    fn sqlite(&self) -> impl Fn(rusqlite::Error) -> ReadError + '_ {
        |source| ReadError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn has_tables(&self, names: &[&str]) -> Result<bool, ReadError> {
        let mut found = 0;
        for name in names {
            let n: i64 = self
                .db
                .query_row(
                    "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                    [name],
                    |r| r.get(0),
                )
                .map_err(self.sqlite())?;
            found += n;
        }
        Ok(usize::try_from(found).is_ok_and(|f| f == names.len()))
    }

    fn corrupt(
        &self,
        table: &'static str,
        column: &'static str,
        key: &str,
        text: &str,
    ) -> ReadError {
        ReadError::Corrupt {
            path: self.path.clone(),
            table,
            column,
            key: key.to_owned(),
            text: text.to_owned(),
        }
    }

    fn dec(
        &self,
        (table, column, key): (&'static str, &'static str, &str),
        text: &str,
    ) -> Result<Decimal, ReadError> {
        Decimal::from_str(text).map_err(|_| self.corrupt(table, column, key, text))
    }

    fn opt_dec(
        &self,
        at: (&'static str, &'static str, &str),
        text: Option<&str>,
    ) -> Result<Option<Decimal>, ReadError> {
        text.map(|t| self.dec(at, t)).transpose()
    }

    fn side(
        &self,
        (table, column, key): (&'static str, &'static str, &str),
        text: &str,
    ) -> Result<OrderSide, ReadError> {
        OrderSide::parse(text).ok_or_else(|| self.corrupt(table, column, key, text))
    }

    /// Every position, by account and instrument.
    ///
    /// # Errors
    /// SQLite fails, or a cell is not valid.
    pub fn positions(&self) -> Result<Vec<PositionRow>, ReadError> {
        let mut stmt = self
            .db
            .prepare("SELECT account, instrument, qty, avg_price, realized FROM positions ORDER BY account, instrument")
            .map_err(self.sqlite())?;
        let raw = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })
            .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
            .map_err(self.sqlite())?;
        raw.into_iter()
            .map(|(account, instrument, qty, avg, realized)| {
                let key = format!("{account} {instrument}");
                Ok(PositionRow {
                    qty: self.dec(("positions", "qty", &key), &qty)?,
                    avg_price: self.dec(("positions", "avg_price", &key), &avg)?,
                    realized: self.dec(("positions", "realized", &key), &realized)?,
                    account,
                    instrument,
                })
            })
            .collect()
    }

    /// The exits armed for `account`'s position in `instrument`, if any.
    ///
    /// # Errors
    /// SQLite fails, or a cell is not valid.
    pub fn exit_of(&self, account: &str, instrument: &str) -> Result<Option<ExitRow>, ReadError> {
        type Raw = (Option<String>, Option<String>, Option<String>, String);
        let raw: Option<Raw> = self
            .db
            .query_row(
                "SELECT stop, target, trail_pct, best FROM exits WHERE account = ?1 AND instrument = ?2",
                [account, instrument],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .map_err(self.sqlite())?;
        let key = format!("{account} {instrument}");
        raw.map(|(stop, target, trail, best)| {
            Ok(ExitRow {
                stop: self.opt_dec(("exits", "stop", &key), stop.as_deref())?,
                target: self.opt_dec(("exits", "target", &key), target.as_deref())?,
                trailing_pct: self.opt_dec(("exits", "trail_pct", &key), trail.as_deref())?,
                best: self.dec(("exits", "best", &key), &best)?,
            })
        })
        .transpose()
    }

    /// The latest `limit` orders, newest first.
    ///
    /// # Errors
    /// SQLite fails, or a cell is not valid.
    pub fn recent_orders(&self, limit: u32) -> Result<Vec<OrderRow>, ReadError> {
        type Raw = ([String; 7], [Option<String>; 7], String);
        let mut stmt = self
            .db
            .prepare(
                "SELECT client_order_id, account, pipeline, instrument, side, qty, state, fill_price, filled_qty, order_type, limit_price, trigger_price, parent, broker_order_id, signal_id
                 FROM orders ORDER BY rowid DESC LIMIT ?1",
            )
            .map_err(self.sqlite())?;
        let raw: Vec<Raw> = stmt
            .query_map([limit], |r| {
                Ok((
                    [
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ],
                    [
                        r.get(7)?,
                        r.get(8)?,
                        r.get(9)?,
                        r.get(10)?,
                        r.get(11)?,
                        r.get(12)?,
                        r.get(13)?,
                    ],
                    r.get(14)?,
                ))
            })
            .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
            .map_err(self.sqlite())?;
        raw.into_iter()
            .map(
                |(
                    [coid, account, pipeline, instrument, side, qty, state],
                    [fill, filled, kind, price, trigger, parent, broker],
                    signal_id,
                )| {
                    let at = |column| ("orders", column, coid.as_str());
                    Ok(OrderRow {
                        side: self.side(at("side"), &side)?,
                        qty: self.dec(at("qty"), &qty)?,
                        fill_price: self.opt_dec(at("fill_price"), fill.as_deref())?,
                        filled_qty: self.opt_dec(at("filled_qty"), filled.as_deref())?,
                        order_type: kind.unwrap_or_else(|| "MARKET".to_owned()),
                        price: self.opt_dec(at("limit_price"), price.as_deref())?,
                        trigger: self.opt_dec(at("trigger_price"), trigger.as_deref())?,
                        client_order_id: coid.clone(),
                        account,
                        pipeline,
                        instrument,
                        state,
                        parent,
                        broker_order_id: broker,
                        signal_id,
                    })
                },
            )
            .collect()
    }

    /// The state-machine steps of the order `client_order_id`, in order.
    ///
    /// # Errors
    /// SQLite fails.
    pub fn history(&self, client_order_id: &str) -> Result<Vec<TransitionRow>, ReadError> {
        let mut stmt = self
            .db
            .prepare_cached("SELECT from_state, event, to_state, at FROM transitions WHERE client_order_id = ?1 ORDER BY seq")
            .map_err(self.sqlite())?;
        stmt.query_map([client_order_id], |r| {
            Ok(TransitionRow {
                from: r.get(0)?,
                event: r.get(1)?,
                to: r.get(2)?,
                at: r.get(3)?,
            })
        })
        .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
        .map_err(self.sqlite())
    }

    /// The latest `limit` level watchers, newest first (none in a journal from before them).
    ///
    /// # Errors
    /// SQLite fails, or a cell is not valid.
    pub fn watchers(&self, limit: u32) -> Result<Vec<WatcherRow>, ReadError> {
        if !self.has_tables(&["watchers"])? {
            return Ok(Vec::new());
        }
        type Raw = ([String; 7], bool, Option<i64>);
        let mut stmt = self
            .db
            .prepare("SELECT watch_id, account, instrument, level, side, order_instrument, qty, up, fired_ts, state FROM watchers ORDER BY rowid DESC LIMIT ?1")
            .map_err(self.sqlite())?;
        let raw: Vec<(Raw, String)> = stmt
            .query_map([limit], |r| {
                Ok((
                    (
                        [
                            r.get(0)?,
                            r.get(1)?,
                            r.get(2)?,
                            r.get(3)?,
                            r.get(4)?,
                            r.get(5)?,
                            r.get(6)?,
                        ],
                        r.get(7)?,
                        r.get(8)?,
                    ),
                    r.get(9)?,
                ))
            })
            .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
            .map_err(self.sqlite())?;
        raw.into_iter()
            .map(
                |(
                    ([id, account, instrument, level, side, order_instrument, qty], up, fired_ts),
                    state,
                )| {
                    let at = |column| ("watchers", column, id.as_str());
                    Ok(WatcherRow {
                        level: self.dec(at("level"), &level)?,
                        side: self.side(at("side"), &side)?,
                        qty: self.dec(at("qty"), &qty)?,
                        watch_id: id.clone(),
                        account,
                        instrument,
                        up,
                        order_instrument,
                        state,
                        fired_ts,
                    })
                },
            )
            .collect()
    }

    /// Every fill, in the order it happened.
    ///
    /// # Errors
    /// SQLite fails (a file that is no journal has no `fills`), or a cell is not valid.
    pub fn fills(&self) -> Result<Vec<FillRow>, ReadError> {
        type Raw = ([String; 5], i64, String);
        let mut stmt = self
            .db
            .prepare("SELECT f.account, f.instrument, f.side, f.qty, f.price, f.ts, o.pipeline, f.client_order_id, f.seq FROM fills f JOIN orders o USING (client_order_id) ORDER BY f.ts, f.rowid")
            .map_err(self.sqlite())?;
        let raw: Vec<(Raw, String, i64)> = stmt
            .query_map([], |r| {
                Ok((
                    (
                        [r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?],
                        r.get(5)?,
                        r.get(6)?,
                    ),
                    r.get(7)?,
                    r.get(8)?,
                ))
            })
            .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
            .map_err(self.sqlite())?;
        raw.into_iter()
            .map(
                |(([account, instrument, side, qty, price], ts, pipeline), coid, seq)| {
                    let key = format!("{coid} #{seq}");
                    Ok(FillRow {
                        sign: match self.side(("fills", "side", &key), &side)? {
                            OrderSide::Buy => 1,
                            OrderSide::Sell => -1,
                        },
                        qty: self.dec(("fills", "qty", &key), &qty)?,
                        price: self.dec(("fills", "price", &key), &price)?,
                        account,
                        instrument,
                        ts,
                        source: pipeline,
                    })
                },
            )
            .collect()
    }

    /// The signals recorded, in time order (none in a journal from before they were).
    ///
    /// # Errors
    /// SQLite fails, or a price is not valid.
    pub fn signals(&self) -> Result<Vec<SignalRow>, ReadError> {
        if !self.has_tables(&["signals"])? {
            return Ok(Vec::new());
        }
        type Raw = (i64, [String; 3], Option<String>, String, String);
        let mut stmt = self
            .db
            .prepare("SELECT ts, pipeline, instrument, side, price, reason, signal_id FROM signals ORDER BY ts, signal_id")
            .map_err(self.sqlite())?;
        let raw: Vec<Raw> = stmt
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    [r.get(1)?, r.get(2)?, r.get(3)?],
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })
            .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
            .map_err(self.sqlite())?;
        raw.into_iter()
            .map(
                |(ts, [pipeline, instrument, side], price, reason, signal_id)| {
                    Ok(SignalRow {
                        price: self.opt_dec(("signals", "price", &signal_id), price.as_deref())?,
                        signal_id,
                        ts,
                        pipeline,
                        instrument,
                        side,
                        reason,
                    })
                },
            )
            .collect()
    }

    /// The decisions a risk rule refused: `(account, outcome)`, the outcome naming the rule
    /// in brackets (`refused [max_positions] …`).
    ///
    /// # Errors
    /// SQLite fails.
    pub fn refusals(&self) -> Result<Vec<(String, String)>, ReadError> {
        let mut stmt = self
            .db
            .prepare("SELECT account, outcome FROM decisions WHERE outcome LIKE 'refused%'")
            .map_err(self.sqlite())?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
            .map_err(self.sqlite())
    }
}
