//! Live order routing: one worker per live account, between the order
//! manager (which journals) and the account's [`Broker`].
//!
//! The order manager records a live order as `submitted` before it is handed
//! here, so a crash at any point leaves an order that is looked for in the
//! broker's book before it is placed again. Each worker:
//! - resolves the symbol in the instrument master first: an unknown symbol or
//!   a quantity that is not a whole number of lots is refused before anything is sent;
//! - places one order at a time, in order;
//! - on a definite rejection, reports it;
//! - on a timeout, a 429 or a 5xx, waits (the broker's `Retry-After`, else an
//!   exponential back-off), then looks for the client order id in the order
//!   book, and places the order again only if it is not there. A lookup that
//!   cannot be made is retried; the order is never placed blind;
//! - on a token error, pauses this account only (others go on), raises an
//!   alert, keeps its orders, and resumes when a new token arrives;
//! - polls its working orders until they are filled, rejected or cancelled,
//!   and reads them at once when the broker pushes an order update ([`LiveRouter::poke`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rust_decimal::Decimal;
use tokio::sync::mpsc;

use super::instruments::InstrumentMaster;
use super::{
    Broker, BrokerError, BrokerStatus, OrderKind, OrderRequest, Secret, Segment, Validity,
};
use crate::domain::OrderSide;
use crate::domain::Product;

/// An order for a live account, as the journal holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveOrder {
    /// Our id.
    pub client_order_id: String,
    /// Account.
    pub account: String,
    /// Instrument (our symbol, the exchange's trading symbol).
    pub instrument: String,
    /// Buy or sell.
    pub side: OrderSide,
    /// Units.
    pub qty: Decimal,
    /// The last price seen when it was decided (for the protection collar).
    pub reference_price: Option<Decimal>,
    /// Handed over by this process right after it was recorded: certainly not
    /// yet sent. After a restart it is not, and is looked for first.
    pub fresh: bool,
    /// The broker's id, once it accepted the order.
    pub broker_order_id: Option<String>,
    /// When it was handed to the broker (ms since the epoch, wall clock): the
    /// broker's book holds it no earlier than this, and an unfilled entry is cancelled by it.
    pub submitted_at: i64,
    /// Units the journal already holds as filled (the broker's cumulative count).
    pub filled_qty: Decimal,
    /// The journal holds a cancel request for it.
    pub cancel_requested: bool,
    /// It opens or adds to a position (a signal's order), as opposed to a close the
    /// host made (an exit, a square-off): only entries are cancelled when they do not fill.
    pub entry: bool,
    /// Market, limit or stop (a protective stop is `StopMarket`).
    pub kind: OrderKind,
    /// DAY or IOC (GTT for a delivery position's protective stop where the broker has GTTs).
    pub validity: Validity,
    /// How its margin is checked before it is sent (an F&O entry).
    pub margin_scope: MarginScope,
    /// Sent whole for the broker to slice (Kite's `autoslice`; the account's setting).
    pub autoslice: bool,
}

/// How a live order's margin is checked: alone; with the other legs of its basket (the
/// first leg sent carries them, so a hedged basket is judged as the broker judges it, not
/// leg by leg); or not again (a later leg of a basket checked whole).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum MarginScope {
    /// The order alone.
    #[default]
    Alone,
    /// With these other legs: instrument, side, units.
    Basket(Vec<(String, OrderSide, Decimal)>),
    /// Checked with its basket already.
    Checked,
}

impl LiveOrder {
    /// A new entry, handed over now (certainly not yet sent), nothing filled.
    #[must_use]
    pub fn new(
        client_order_id: &str,
        account: &str,
        instrument: &str,
        side: OrderSide,
        qty: Decimal,
        reference_price: Option<Decimal>,
    ) -> Self {
        Self {
            client_order_id: client_order_id.to_owned(),
            account: account.to_owned(),
            instrument: instrument.to_owned(),
            side,
            qty,
            reference_price,
            fresh: true,
            broker_order_id: None,
            submitted_at: crate::domain::time::now_ms(),
            filled_qty: Decimal::ZERO,
            cancel_requested: false,
            entry: true,
            kind: OrderKind::Market,
            validity: Validity::Day,
            margin_scope: MarginScope::Alone,
            autoslice: false,
        }
    }
}

/// The order manager wants a working order cancelled (an entry still open at the
/// square-off): the router asks the broker and reports what it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveCancel {
    /// The account that holds it.
    pub account: String,
    /// Our id.
    pub client_order_id: String,
    /// Why, for the journal and the operator.
    pub reason: String,
}

/// The order manager moved a working order's terms (a protective stop tightened,
/// or its quantity following the position): the router changes it at the broker,
/// again on every poll until the broker takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveModify {
    /// The account that holds it.
    pub account: String,
    /// Our id.
    pub client_order_id: String,
    /// The new kind (its prices).
    pub kind: OrderKind,
    /// The new quantity.
    pub qty: Decimal,
}

/// What a broker said, for the order manager to journal.
#[derive(Debug, Clone, PartialEq)]
pub enum LiveUpdate {
    /// The broker has the order.
    Accepted {
        /// Our id.
        client_order_id: String,
        /// The broker's id.
        broker_order_id: String,
    },
    /// Refused (by us before sending, by the broker or the exchange).
    Rejected {
        /// Our id.
        client_order_id: String,
        /// Why.
        reason: String,
    },
    /// Part of it filled; the rest works on. Counts are cumulative, so a report
    /// read twice (or again after a restart) records nothing twice.
    PartFilled {
        /// Our id.
        client_order_id: String,
        /// Units filled so far.
        filled_qty: Decimal,
        /// Their average price.
        price: Decimal,
    },
    /// Completely filled.
    Filled {
        /// Our id.
        client_order_id: String,
        /// Units filled in all.
        qty: Decimal,
        /// Average price.
        price: Decimal,
    },
    /// We asked the broker to cancel it (an entry that did not fill in time); fills may still come.
    CancelRequested {
        /// Our id.
        client_order_id: String,
        /// Why.
        reason: String,
    },
    /// The broker took new terms for a working order (a protective stop's trigger moved):
    /// they are what it holds now.
    Modified {
        /// Our id.
        client_order_id: String,
        /// Its kind and prices now.
        kind: OrderKind,
        /// Its quantity now.
        qty: Decimal,
    },
    /// The broker refused new terms for an order that is still working: it holds the old ones.
    ModifyRefused {
        /// Our id.
        client_order_id: String,
        /// What the broker said.
        reason: String,
    },
    /// Cancelled, perhaps after a partial fill (or rejected after one).
    Cancelled {
        /// Our id.
        client_order_id: String,
        /// Units filled before the cancel, in all.
        filled_qty: Decimal,
        /// Their average price.
        price: Option<Decimal>,
        /// The broker's message.
        reason: String,
    },
}

/// Something to tell the operator (an event on `<prefix>:events`).
#[derive(Debug, Clone, PartialEq)]
pub enum LiveNotice {
    /// The account's session is gone: paused until a new token arrives.
    TokenExpired {
        /// Account.
        account: String,
        /// Broker.
        broker: &'static str,
        /// What the broker said (scrubbed).
        reason: String,
    },
    /// A new token was checked and the account trades again.
    Resumed {
        /// Account.
        account: String,
        /// Broker.
        broker: &'static str,
    },
    /// A new token did not pass the session check: still paused.
    TokenRefused {
        /// Account.
        account: String,
        /// Broker.
        broker: &'static str,
        /// What the broker said.
        reason: String,
    },
    /// The broker says an order is complete but gives no average price: nothing is
    /// journaled (a guessed price would be a wrong fill); it is read again at every poll.
    Unpriced {
        /// Account.
        account: String,
        /// The order.
        client_order_id: String,
    },
    /// The working orders were read against the broker's book after the order stream
    /// (re)connected (every update that brought comes before this).
    Synced {
        /// Account.
        account: String,
        /// Broker.
        broker: &'static str,
        /// Working orders read.
        orders: usize,
        /// Whether every one was read (false: the broker did not answer, or the session is gone).
        complete: bool,
    },
    /// A call failed ambiguously and is being checked and retried.
    Retrying {
        /// Account.
        account: String,
        /// The order.
        client_order_id: String,
        /// What happened.
        reason: String,
        /// Milliseconds until the next try.
        wait_ms: u64,
    },
}

/// What the router sends back.
#[derive(Debug, Clone, PartialEq)]
pub enum RouterOutput {
    /// To journal.
    Update(LiveUpdate),
    /// To publish.
    Notice(LiveNotice),
}

/// A live account: its broker and how it trades.
#[derive(Clone)]
pub struct AccountLink {
    /// Account id.
    pub account: String,
    /// Its broker.
    pub broker: Arc<dyn Broker>,
    /// Intraday or delivery.
    pub product: Product,
    /// Market protection, percent (-1: the broker's automatic protection).
    pub protection_pct: Decimal,
    /// The regulator's algo id, sent with each order where the broker takes one.
    pub algo_id: Option<String>,
    /// Placements a second per exchange segment (the slices of a large order are paced by it).
    pub orders_per_sec: usize,
    /// Check F&O entries against the broker's margin calculator before placing them.
    pub margin_check: bool,
}

impl std::fmt::Debug for AccountLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountLink")
            .field("account", &self.account)
            .field("broker", &self.broker.name())
            .finish_non_exhaustive()
    }
}

/// A position on which the journal and the broker disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// Trading symbol.
    pub instrument: String,
    /// Net units per the journal.
    pub journal: Decimal,
    /// Net units per the broker.
    pub broker: Decimal,
}

/// Compare the journal's positions of an account with its broker's: every
/// symbol either side holds, where the quantities differ (a manual trade, an
/// order placed while the host was down, a fill the journal missed).
///
/// # Errors
/// The broker's position book could not be read.
pub async fn reconcile(
    broker: &dyn Broker,
    journal: &HashMap<String, Decimal>,
) -> Result<Vec<Mismatch>, BrokerError> {
    reconcile_named(broker, journal, &HashMap::new()).await
}

/// [`reconcile`] where the broker names some instruments its own way
/// (`theirs` → ours: Kite's `NIFTY24MAR20800CE` is our `NIFTY28MAR2420800CE`).
///
/// # Errors
/// The broker's position book could not be read.
pub async fn reconcile_named(
    broker: &dyn Broker,
    journal: &HashMap<String, Decimal>,
    ours: &HashMap<String, String>,
) -> Result<Vec<Mismatch>, BrokerError> {
    let mut held: HashMap<String, Decimal> = HashMap::new();
    for (symbol, qty) in broker.positions().await? {
        let symbol = ours.get(&symbol).cloned().unwrap_or(symbol);
        *held.entry(symbol).or_default() += qty;
    }
    let mut symbols: Vec<&String> = journal.keys().chain(held.keys()).collect();
    symbols.sort();
    symbols.dedup();
    Ok(symbols
        .into_iter()
        .filter_map(|s| {
            let (j, b) = (
                journal.get(s).copied().unwrap_or_default(),
                held.get(s).copied().unwrap_or_default(),
            );
            (j != b).then(|| Mismatch {
                instrument: s.clone(),
                journal: j,
                broker: b,
            })
        })
        .collect())
}

/// Timings of the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouterSettings {
    /// How often working orders are polled.
    pub poll: Duration,
    /// First back-off after an ambiguous failure; doubles up to `max_backoff`.
    pub backoff: Duration,
    /// Longest back-off.
    pub max_backoff: Duration,
    /// Placements of one order before it is given up (each after a look in the book).
    pub max_attempts: u32,
    /// An entry still working this long after it was sent is cancelled (its protection
    /// limit was never reached: the market moved away). `None`: never.
    pub cancel_after: Option<Duration>,
    /// Reads of the order book, a back-off apart, that must all miss an order before
    /// it is taken as not placed (brokers' books lag behind their acknowledgements).
    pub absent_reads: u32,
}

impl Default for RouterSettings {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(1000),
            backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(8),
            max_attempts: 6,
            cancel_after: Some(Duration::from_secs(60)),
            absent_reads: 3,
        }
    }
}

/// Cancels refused by the broker before the order is left to finish by itself.
const CANCEL_TRIES: u32 = 3;

/// Polls a change of terms is tried for when the broker does not answer, before it is
/// reported refused.
const MODIFY_TRIES: u32 = 5;

enum Msg {
    /// Broker ids the journal already matched to our orders (sent first after a restart).
    Claimed(Vec<String>),
    Order(LiveOrder),
    Token(Secret),
    /// The broker pushed an order update (or a stream reconnected): read the working orders now.
    Poke,
    /// Cancel this order (queued or working), for this reason.
    Cancel(String, String),
    /// Change a working order's terms (a protective stop's trigger and quantity).
    Modify(LiveModify),
    /// The order stream (re)connected: read every working order before anything is placed,
    /// then say so ([`LiveNotice::Synced`]).
    Sync,
}

/// The workers of every live account.
#[derive(Clone)]
pub struct LiveRouter {
    senders: HashMap<String, mpsc::UnboundedSender<Msg>>,
    brokers: Vec<(String, Arc<dyn Broker>)>,
    open: Arc<AtomicUsize>,
    master: InstrumentMaster,
    /// Accounts whose order stream (re)connected and whose working orders have not been
    /// read since, with when that began: no decision is made until they are.
    syncing: Arc<std::sync::Mutex<HashMap<String, std::time::Instant>>>,
}

impl LiveRouter {
    /// Start one worker per account; their reports go to `out`.
    #[must_use]
    pub fn start(
        links: Vec<AccountLink>,
        master: InstrumentMaster,
        settings: RouterSettings,
        out: mpsc::UnboundedSender<RouterOutput>,
    ) -> Self {
        let open = Arc::new(AtomicUsize::new(0));
        let mut senders = HashMap::new();
        let brokers = links
            .iter()
            .map(|l| (l.account.clone(), l.broker.clone()))
            .collect();
        let instruments = master.clone();
        for link in links {
            let (tx, rx) = mpsc::unbounded_channel();
            senders.insert(link.account.clone(), tx);
            let worker = Worker {
                link,
                master: master.clone(),
                settings,
                out: out.clone(),
                open: open.clone(),
                claimed: HashSet::new(),
                paused: None,
                placed: HashMap::new(),
                stops: std::sync::Mutex::default(),
            };
            tokio::spawn(worker.run(rx));
        }
        Self {
            senders,
            brokers,
            open,
            master: instruments,
            syncing: Arc::default(),
        }
    }

    /// Compare `account`'s journal positions (`journal`, by our symbols) with its
    /// broker's, each contract under the broker's own name where its master has one.
    ///
    /// # Errors
    /// The broker's position book could not be read.
    pub async fn reconcile(
        &self,
        account: &str,
        journal: &HashMap<String, Decimal>,
    ) -> Result<Vec<Mismatch>, BrokerError> {
        let Some((_, broker)) = self.brokers.iter().find(|(a, _)| a == account) else {
            return Ok(Vec::new());
        };
        let mut ours = HashMap::new();
        if crate::domain::Capabilities::of(broker.name()).is_some_and(|c| c.instrument_master) {
            for symbol in journal.keys() {
                if let Ok(Some(i)) = self
                    .master
                    .resolve(broker.name(), Segment::of(symbol), symbol)
                    .await
                    && !i.symbol.is_empty()
                    && i.symbol != *symbol
                {
                    ours.insert(i.symbol, symbol.clone());
                }
            }
        }
        reconcile_named(broker.as_ref(), journal, &ours).await
    }

    /// Each live account's broker.
    #[must_use]
    pub fn brokers(&self) -> &[(String, Arc<dyn Broker>)] {
        &self.brokers
    }

    /// The accounts it routes.
    #[must_use]
    pub fn accounts(&self) -> HashSet<String> {
        self.senders.keys().cloned().collect()
    }

    /// Tell `account`'s worker the broker ids the journal already matched (after a restart,
    /// before the recovered orders): a lookup never takes one of them for another order.
    pub fn claimed(&self, account: &str, ids: Vec<String>) -> bool {
        self.senders
            .get(account)
            .is_some_and(|tx| tx.send(Msg::Claimed(ids)).is_ok())
    }

    /// Hand over an order (recorded as submitted). False for an account it does not route.
    pub fn send(&self, order: LiveOrder) -> bool {
        let Some(tx) = self.senders.get(&order.account) else {
            return false;
        };
        self.open.fetch_add(1, Ordering::SeqCst);
        if tx.send(Msg::Order(order)).is_err() {
            self.open.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Ask for an order to be cancelled (see [`LiveCancel`]). False for an account it does not route.
    pub fn cancel(&self, c: LiveCancel) -> bool {
        self.senders
            .get(&c.account)
            .is_some_and(|tx| tx.send(Msg::Cancel(c.client_order_id, c.reason)).is_ok())
    }

    /// Change a working order (see [`LiveModify`]). False for an account it does not route.
    pub fn modify(&self, m: LiveModify) -> bool {
        self.senders
            .get(&m.account)
            .is_some_and(|tx| tx.send(Msg::Modify(m)).is_ok())
    }

    /// A new token for `account` (from a `token` command). False for an account it does not route.
    pub fn token(&self, account: &str, token: Secret) -> bool {
        self.senders
            .get(account)
            .is_some_and(|tx| tx.send(Msg::Token(token)).is_ok())
    }

    /// The broker pushed an order update for `account`, or its stream (re)connected:
    /// its working orders are read now instead of at the next poll. False for an account it does not route.
    pub fn poke(&self, account: &str) -> bool {
        self.senders
            .get(account)
            .is_some_and(|tx| tx.send(Msg::Poke).is_ok())
    }

    /// `account`'s order stream (re)connected: its working orders are read against the
    /// broker's book now, and until the orders side has the result ([`LiveNotice::Synced`],
    /// after every update the reading brought; then [`Self::synced`]) [`Self::syncing`] says
    /// so, and nothing else is decided. False for an account it does not route.
    pub fn sync(&self, account: &str) -> bool {
        let Some(tx) = self.senders.get(account) else {
            return false;
        };
        if let Ok(mut s) = self.syncing.lock() {
            s.entry(account.to_owned())
                .or_insert_with(std::time::Instant::now);
        }
        tx.send(Msg::Sync).is_ok()
    }

    /// The orders side has what the sync of `account` brought (or stops waiting for it):
    /// how long it waited.
    pub fn synced(&self, account: &str) -> Option<Duration> {
        self.syncing
            .lock()
            .ok()?
            .remove(account)
            .map(|since| since.elapsed())
    }

    /// The account waiting longest for its sync, and since how long.
    #[must_use]
    pub fn syncing(&self) -> Option<(String, Duration)> {
        let s = self.syncing.lock().ok()?;
        s.iter()
            .min_by_key(|(_, since)| **since)
            .map(|(a, since)| (a.clone(), since.elapsed()))
    }

    /// Orders handed over and not yet finished (filled, rejected, cancelled).
    #[must_use]
    pub fn open_orders(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

impl std::fmt::Debug for LiveRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveRouter")
            .field("accounts", &self.senders.keys().collect::<Vec<_>>())
            .field("open", &self.open)
            .finish()
    }
}

struct Worker {
    link: AccountLink,
    master: InstrumentMaster,
    settings: RouterSettings,
    out: mpsc::UnboundedSender<RouterOutput>,
    open: Arc<AtomicUsize>,
    /// Broker ids already matched to one of our orders.
    claimed: HashSet<String>,
    /// Why the account is paused, if it is.
    paused: Option<String>,
    /// When the latest placements went out, per segment (at most `orders_per_sec` a second).
    placed: HashMap<Segment, std::collections::VecDeque<tokio::time::Instant>>,
    /// Stop orders handed over (and, marked, those resting at the broker).
    stops: std::sync::Mutex<HashSet<String>>,
}

/// How a placement ended.
enum Placed {
    Accepted(String),
    Refused(String),
    TokenLost(String),
}

impl Worker {
    fn update(&self, u: LiveUpdate) {
        let done = !matches!(
            u,
            LiveUpdate::Accepted { .. }
                | LiveUpdate::PartFilled { .. }
                | LiveUpdate::CancelRequested { .. }
                | LiveUpdate::Modified { .. }
                | LiveUpdate::ModifyRefused { .. }
        );
        let coid = match &u {
            LiveUpdate::Accepted {
                client_order_id, ..
            }
            | LiveUpdate::Rejected {
                client_order_id, ..
            }
            | LiveUpdate::PartFilled {
                client_order_id, ..
            }
            | LiveUpdate::Filled {
                client_order_id, ..
            }
            | LiveUpdate::CancelRequested {
                client_order_id, ..
            }
            | LiveUpdate::Cancelled {
                client_order_id, ..
            }
            | LiveUpdate::Modified {
                client_order_id, ..
            }
            | LiveUpdate::ModifyRefused {
                client_order_id, ..
            } => client_order_id.clone(),
        };
        let accepted = matches!(u, LiveUpdate::Accepted { .. });
        let _ = self.out.send(RouterOutput::Update(u));
        // Counted down only after it is sent: at every moment an unfinished order is either
        // counted or its report is waiting in the channel, so the orders loop never sees
        // "nothing open" while a fill is still on its way. A stop resting at the broker is
        // not work in progress (it may rest for days): it stops counting once accepted.
        let mut stops = self
            .stops
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if accepted && stops.contains(&coid) {
            if stops.insert(format!("{coid}\u{1f}resting")) {
                self.open.fetch_sub(1, Ordering::SeqCst);
            }
        } else if done {
            stops.remove(&coid);
            if !stops.remove(&format!("{coid}\u{1f}resting")) {
                self.open.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// A resting stop being cancelled is work in progress again until the broker says what became of it.
    fn unrest(&self, coid: &str) {
        let mut stops = self
            .stops
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if stops.remove(&format!("{coid}\u{1f}resting")) {
            self.open.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A stop order handed over: once at the broker it no longer counts as open work.
    fn track_stop(&self, o: &LiveOrder) {
        if o.kind.trigger().is_none() {
            return;
        }
        let mut stops = self
            .stops
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        stops.insert(o.client_order_id.clone());
        // Recovered already at the broker: resting from the start.
        if o.broker_order_id.is_some()
            && stops.insert(format!("{}\u{1f}resting", o.client_order_id))
        {
            self.open.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn notice(&self, n: LiveNotice) {
        let _ = self.out.send(RouterOutput::Notice(n));
    }

    fn pause(&mut self, reason: String) {
        if self.paused.is_none() {
            self.notice(LiveNotice::TokenExpired {
                account: self.link.account.clone(),
                broker: self.link.broker.name(),
                reason: reason.clone(),
            });
        }
        self.paused = Some(reason);
    }

    fn backoff(&self, e: &BrokerError, attempt: u32) -> Duration {
        let exp = self
            .settings
            .backoff
            .saturating_mul(2u32.saturating_pow(attempt.min(16)));
        match e {
            BrokerError::RateLimited(Some(after)) => (*after).max(self.settings.backoff),
            _ => exp.min(self.settings.max_backoff),
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        let mut queue: VecDeque<LiveOrder> = VecDeque::new();
        let mut working: Vec<Working> = Vec::new();
        // Cancels asked for orders still queued that may already be at the broker.
        let mut wanted: HashMap<String, String> = HashMap::new();
        // Queued orders whose terms changed: once placed (or found), changed at the broker too.
        let mut modified: HashSet<String> = HashSet::new();
        let mut poll = tokio::time::interval(self.settings.poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let can_place = !queue.is_empty() && self.paused.is_none();
            tokio::select! {
                biased;
                msg = rx.recv() => match msg {
                    None => return,
                    Some(Msg::Claimed(ids)) => self.claimed.extend(ids),
                    Some(Msg::Order(o)) => {
                        self.track_stop(&o);
                        match o.broker_order_id.clone() {
                            Some(id) => {
                                self.claimed.insert(id.clone());
                                working.push(Working::new(o, id));
                            }
                            None => queue.push_back(o),
                        }
                    }
                    Some(Msg::Cancel(coid, reason)) => {
                        self.unrest(&coid);
                        if let Some(w) = working.iter_mut().find(|w| w.order.client_order_id == coid) {
                            w.wanted.get_or_insert(reason);
                            if self.paused.is_none() && let Err(SessionGone(reason)) = self.cancel_if_due(w).await {
                                self.pause(reason);
                            }
                        } else if let Some(i) = queue.iter().position(|o| o.client_order_id == coid) {
                            if queue[i].fresh {
                                // Never sent: nothing to ask the broker.
                                queue.remove(i);
                                self.update(LiveUpdate::CancelRequested { client_order_id: coid.clone(), reason: reason.clone() });
                                self.update(LiveUpdate::Cancelled { client_order_id: coid, filled_qty: Decimal::ZERO, price: None, reason });
                            } else {
                                // Perhaps at the broker already (a restart, a timeout): found or placed first, then cancelled.
                                wanted.insert(coid, reason);
                            }
                        }
                    }
                    Some(Msg::Modify(m)) => {
                        if let Some(w) = working.iter_mut().find(|w| w.order.client_order_id == m.client_order_id) {
                            w.order.kind = m.kind;
                            w.order.qty = m.qty;
                            w.modify_pending = true;
                            if self.paused.is_none() && let Err(SessionGone(reason)) = self.modify_if_pending(w).await {
                                self.pause(reason);
                            }
                        } else if let Some(o) = queue.iter_mut().find(|o| o.client_order_id == m.client_order_id) {
                            // Not placed yet (or being looked for): it goes out with the new terms,
                            // or, found at the broker, is changed at the next poll.
                            o.kind = m.kind;
                            o.qty = m.qty;
                            modified.insert(m.client_order_id);
                        }
                    }
                    Some(Msg::Poke) => {
                        // What the push said is read back from the broker's order book: the
                        // status call is the one the journal trusts, polled or pushed.
                        if !working.is_empty() && self.paused.is_none() {
                            self.poll(&mut working).await;
                        }
                    }
                    Some(Msg::Sync) => {
                        // Orders an earlier run may have placed without learning their id are
                        // looked for first: what they did is part of what the sync brings.
                        if self.paused.is_none() {
                            self.find_unsent(&mut queue, &mut working, &mut wanted, &mut modified).await;
                        }
                        let orders = working.len();
                        let complete = self.paused.is_none() && (working.is_empty() || self.poll(&mut working).await);
                        self.notice(LiveNotice::Synced { account: self.link.account.clone(), broker: self.link.broker.name(), orders, complete });
                    }
                    Some(Msg::Token(token)) => {
                        self.link.broker.set_token(token);
                        match self.link.broker.check_session().await {
                            Ok(_) => {
                                if self.paused.take().is_some() {
                                    self.notice(LiveNotice::Resumed { account: self.link.account.clone(), broker: self.link.broker.name() });
                                    // What happened while the session was gone, before anything new is placed.
                                    if !working.is_empty() {
                                        self.poll(&mut working).await;
                                    }
                                }
                            }
                            Err(e) => {
                                self.notice(LiveNotice::TokenRefused { account: self.link.account.clone(), broker: self.link.broker.name(), reason: e.to_string() });
                                self.paused = Some(e.to_string());
                            }
                        }
                    }
                },
                () = std::future::ready(()), if can_place => {
                    if let Some(order) = queue.front().cloned() {
                        match self.place(&order).await {
                            Placed::Accepted(id) => {
                                queue.pop_front();
                                working.push(self.accepted(order, id, &mut wanted, &mut modified));
                            }
                            Placed::Refused(reason) => {
                                queue.pop_front();
                                wanted.remove(&order.client_order_id);
                                self.update(LiveUpdate::Rejected { client_order_id: order.client_order_id.clone(), reason });
                            }
                            Placed::TokenLost(reason) => {
                                // An earlier attempt may have timed out after all: after the pause,
                                // look in the book before placing it.
                                if let Some(front) = queue.front_mut() {
                                    front.fresh = false;
                                }
                                self.pause(reason);
                            }
                        }
                    }
                }
                _ = poll.tick(), if !working.is_empty() && self.paused.is_none() => {
                    self.poll(&mut working).await;
                }
            }
        }
    }

    /// `o` is at the broker as `id` (placed, or found in its book): reported accepted, and
    /// worked from now on with the cancel and the change of terms asked while it was queued.
    fn accepted(
        &mut self,
        o: LiveOrder,
        id: String,
        wanted: &mut HashMap<String, String>,
        modified: &mut HashSet<String>,
    ) -> Working {
        self.claimed.insert(id.clone());
        self.update(LiveUpdate::Accepted {
            client_order_id: o.client_order_id.clone(),
            broker_order_id: id.clone(),
        });
        let mut w = Working::new(o, id);
        w.wanted = wanted.remove(&w.order.client_order_id);
        w.modify_pending = modified.remove(&w.order.client_order_id);
        w
    }

    /// Look in the broker's book for every queued order that may already be there (not
    /// handed over fresh: recovered after a restart, or after a timeout): one found is
    /// taken as accepted and worked from there on; one not found stays queued, to be placed.
    async fn find_unsent(
        &mut self,
        queue: &mut VecDeque<LiveOrder>,
        working: &mut Vec<Working>,
        wanted: &mut HashMap<String, String>,
        modified: &mut HashSet<String>,
    ) {
        let mut i = 0;
        while i < queue.len() {
            if queue[i].fresh {
                i += 1;
                continue;
            }
            let o = queue[i].clone();
            let Ok(req) = self.request(&o).await else {
                i += 1;
                continue;
            };
            match self.look(&o, &req).await {
                Ok(Some(id)) => {
                    queue.remove(i);
                    working.push(self.accepted(o, id, wanted, modified));
                }
                Ok(None) => {
                    // Not there: placing it is safe, and the placement needs no second look.
                    queue[i].fresh = true;
                    i += 1;
                }
                Err(SessionGone(reason)) => {
                    self.pause(reason);
                    return;
                }
            }
        }
    }

    /// Build the broker's request, refusing what must not be sent.
    async fn request(&self, o: &LiveOrder) -> Result<OrderRequest, Result<String, BrokerError>> {
        let segment = Segment::of(&o.instrument);
        let broker = self.link.broker.name();
        let (mut token, mut broker_symbol) = (None, None);
        if crate::domain::Capabilities::of(broker).is_some_and(|c| c.instrument_master) {
            match self.master.resolve(broker, segment, &o.instrument).await {
                Ok(Some(i)) => {
                    if !crate::domain::order::whole_lots(o.qty, i.lot_size) {
                        return Err(Ok(crate::domain::order::lot_refusal(
                            &o.instrument,
                            o.qty,
                            i.lot_size,
                        )));
                    }
                    token = Some(i.token);
                    broker_symbol = Some(i.symbol);
                }
                Ok(None) => {
                    return Err(Ok(format!(
                        "unknown symbol {} ({}) in the {broker} instrument master; nothing was sent",
                        o.instrument,
                        segment.key()
                    )));
                }
                Err(e) => {
                    return Err(Err(BrokerError::Unavailable(format!(
                        "instrument master: {e}"
                    ))));
                }
            }
        }
        // Kite names contracts its own way: its order carries the master's trading symbol.
        let symbol = broker_symbol
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| o.instrument.clone());
        // Prices on the instrument's own tick where its master gives one (a stock above
        // ₹1,000 ticks 0.10 since April 2025), never worse than asked.
        let kind = match crate::domain::money::known_tick(&o.instrument) {
            Some(tick) => o.kind.on_tick_of(o.side, tick),
            None => o.kind,
        };
        Ok(OrderRequest {
            client_order_id: o.client_order_id.clone(),
            submitted_at: Some(o.submitted_at).filter(|t| *t > 0),
            symbol,
            segment,
            token,
            side: o.side,
            qty: o.qty,
            product: self.link.product,
            reference_price: o.reference_price,
            protection_pct: self.link.protection_pct,
            algo_id: self.link.algo_id.clone(),
            kind,
            validity: o.validity,
            autoslice: o.autoslice,
        })
    }

    fn retrying(&self, o: &LiveOrder, e: &BrokerError, wait: Duration) {
        self.notice(LiveNotice::Retrying {
            account: self.link.account.clone(),
            client_order_id: o.client_order_id.clone(),
            reason: e.to_string(),
            wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        });
    }

    /// Wait until a placement in `segment` keeps the account within its order rate.
    async fn pace(&mut self, segment: Segment) {
        let limit = self.link.orders_per_sec.max(1);
        let recent = self.placed.entry(segment).or_default();
        let second = Duration::from_secs(1);
        while recent.front().is_some_and(|t| t.elapsed() >= second) {
            recent.pop_front();
        }
        if recent.len() >= limit
            && let Some(first) = recent.pop_front()
        {
            tokio::time::sleep_until(first + second).await;
        }
        recent.push_back(tokio::time::Instant::now());
    }

    /// Change a working order at the broker when its terms moved. What the broker took is
    /// reported ([`LiveUpdate::Modified`]: the journal's terms follow it); a refusal of an
    /// order still working is reported too ([`LiveUpdate::ModifyRefused`]: it holds the old
    /// terms), as is a change the broker could not be reached for after [`MODIFY_TRIES`]
    /// polls. A refusal for an order no longer working is left to the poll that reads it.
    async fn modify_if_pending(&mut self, w: &mut Working) -> Result<(), SessionGone> {
        if !w.modify_pending || w.cancel_done || w.wanted.is_some() {
            return Ok(());
        }
        let coid = w.order.client_order_id.clone();
        let req = match self.request(&w.order).await {
            Ok(r) => r,
            Err(Ok(reason)) => {
                w.modify_pending = false;
                self.update(LiveUpdate::ModifyRefused {
                    client_order_id: coid,
                    reason,
                });
                return Ok(());
            }
            Err(Err(_)) => return Ok(()),
        };
        // A modification counts against the order rate as a placement does.
        self.pace(req.segment).await;
        let refused = match self.link.broker.modify(&w.id, &req).await {
            Ok(()) => {
                w.modify_pending = false;
                w.modify_failures = 0;
                self.update(LiveUpdate::Modified {
                    client_order_id: coid,
                    kind: w.order.kind,
                    qty: w.order.qty,
                });
                return Ok(());
            }
            Err(BrokerError::Token(reason)) => return Err(SessionGone(reason)),
            Err(BrokerError::Rejected(reason)) => reason,
            Err(e) => {
                w.modify_failures += 1;
                if w.modify_failures < MODIFY_TRIES {
                    tracing::warn!(account = %self.link.account, "modifying {coid}: {e}; trying again at the next poll");
                    return Ok(());
                }
                format!("{e} ({MODIFY_TRIES} tries)")
            }
        };
        w.modify_pending = false;
        w.modify_failures = 0;
        // Filled or cancelled meanwhile, the poll says so; refused while it still works, the
        // broker holds the old terms, which the journal must say.
        let working = match self.link.broker.status(&w.id).await {
            Ok(b) => b.status == BrokerStatus::Open,
            Err(BrokerError::Token(reason)) => return Err(SessionGone(reason)),
            Err(_) => true,
        };
        if working {
            tracing::warn!(account = %self.link.account, "the broker refused to modify {coid}: {refused}");
            self.update(LiveUpdate::ModifyRefused {
                client_order_id: coid,
                reason: refused,
            });
        }
        Ok(())
    }

    /// Place `o`, never twice: after anything ambiguous, look before placing again.
    async fn place(&mut self, o: &LiveOrder) -> Placed {
        let req = loop {
            match self.request(o).await {
                Ok(r) => break r,
                Err(Ok(reason)) => return Placed::Refused(reason),
                Err(Err(e)) => {
                    let wait = self.backoff(&e, 1);
                    self.retrying(o, &e, wait);
                    tokio::time::sleep(wait).await;
                }
            }
        };
        let broker = self.link.broker.clone();
        // Margin before sending: an F&O entry the account cannot carry is refused here,
        // with the shortfall, rather than by the broker's RMS after the fact. A close is
        // never held back (it frees margin), nor is an order already possibly placed.
        if o.fresh
            && o.entry
            && self.link.margin_check
            && req.segment == Segment::Derivative
            && o.margin_scope != MarginScope::Checked
        {
            let mut orders = vec![req.clone()];
            if let MarginScope::Basket(legs) = &o.margin_scope {
                for (instrument, side, qty) in legs {
                    let leg = LiveOrder::new(
                        &o.client_order_id,
                        &o.account,
                        instrument,
                        *side,
                        *qty,
                        None,
                    );
                    match self.request(&leg).await {
                        Ok(r) => orders.push(r),
                        Err(Ok(reason)) => {
                            return Placed::Refused(format!("basket leg {instrument}: {reason}"));
                        }
                        // The master did not answer for a leg: the basket is judged by what could be read.
                        Err(Err(e)) => {
                            tracing::warn!(account = %self.link.account, "margin of basket leg {instrument}: {e}")
                        }
                    }
                }
            }
            let what = if orders.len() > 1 {
                "the basket"
            } else {
                "the order"
            };
            match broker.margin(&orders).await {
                Ok(Some(m)) => {
                    if let Some(short) = m.shortfall() {
                        return Placed::Refused(format!(
                            "margin: {what} needs {} and {} is free, {short} short",
                            m.required, m.available
                        ));
                    }
                }
                Ok(None) => {}
                Err(BrokerError::Token(reason)) => return Placed::TokenLost(reason),
                // The calculator did not answer: the broker's own check still stands behind the order.
                Err(e) => {
                    tracing::warn!(account = %self.link.account, "margin check of {}: {e}; placing without it", o.client_order_id)
                }
            }
        }
        let mut look_first = !o.fresh;
        let mut attempt = 0u32;
        let mut last_error = String::new();
        loop {
            if look_first {
                match self.look(o, &req).await {
                    Ok(Some(id)) => return Placed::Accepted(id),
                    Ok(None) => {}
                    Err(SessionGone(reason)) => return Placed::TokenLost(reason),
                }
            }
            if attempt >= self.settings.max_attempts {
                return Placed::Refused(format!(
                    "not placed after {attempt} attempts (last: {last_error}); not in the broker's order book"
                ));
            }
            attempt += 1;
            self.pace(req.segment).await;
            match broker.place(&req).await {
                Ok(id) => return Placed::Accepted(id),
                Err(BrokerError::Rejected(reason)) => return Placed::Refused(reason),
                Err(BrokerError::Token(reason)) => return Placed::TokenLost(reason),
                Err(e) => {
                    let wait = self.backoff(&e, attempt);
                    self.retrying(o, &e, wait);
                    last_error = e.to_string();
                    tokio::time::sleep(wait).await;
                    look_first = true;
                }
            }
        }
    }

    /// Look for `o` in the book until the book answers: `Ok(Some(id))` found,
    /// `Ok(None)` not there in `absent_reads` reads a back-off apart (a broker's
    /// book can show a new order late, and one read too early would place it
    /// twice), `Err` the session is gone.
    async fn look(
        &mut self,
        o: &LiveOrder,
        req: &OrderRequest,
    ) -> Result<Option<String>, SessionGone> {
        let mut attempt = 0u32;
        let mut absent = 0u32;
        loop {
            match self.link.broker.find(req, &self.claimed).await {
                Ok(Some(found)) => return Ok(Some(found.order_id)),
                Ok(None) => {
                    absent += 1;
                    if absent >= self.settings.absent_reads.max(1) {
                        return Ok(None);
                    }
                    tokio::time::sleep(self.backoff(&BrokerError::Timeout, absent)).await;
                }
                Err(BrokerError::Token(reason)) => return Err(SessionGone(reason)),
                Err(e) => {
                    attempt += 1;
                    let wait = self.backoff(&e, attempt);
                    self.retrying(o, &e, wait);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Read every working order's status; true when each was read.
    async fn poll(&mut self, working: &mut Vec<Working>) -> bool {
        // Changes of terms the broker has not taken yet (a protective stop's trigger).
        for w in working.iter_mut().filter(|w| w.modify_pending) {
            if let Err(SessionGone(reason)) = self.modify_if_pending(w).await {
                self.pause(reason);
                return false;
            }
        }
        let mut i = 0;
        while i < working.len() {
            let w = &mut working[i];
            let id = w.id.clone();
            // A GTT is read with what it was placed for: some brokers stop listing it once
            // it fires, and the order it placed is then found by its shape.
            let read = match w.order.validity {
                Validity::Gtt => match self.request(&w.order).await {
                    Ok(req) => self.link.broker.follow(&id, &req, &self.claimed).await,
                    Err(_) => self.link.broker.status(&id).await,
                },
                _ => self.link.broker.status(&id).await,
            };
            match read {
                Ok(b) => {
                    let coid = w.order.client_order_id.clone();
                    let update = match b.status {
                        BrokerStatus::Open => {
                            if b.filled_qty > w.order.filled_qty {
                                match b.average_price {
                                    Some(price) => {
                                        w.order.filled_qty = b.filled_qty;
                                        self.update(LiveUpdate::PartFilled {
                                            client_order_id: coid.clone(),
                                            filled_qty: b.filled_qty,
                                            price,
                                        });
                                    }
                                    None => {
                                        tracing::warn!(account = %self.link.account, "order {id}: {} filled without an average price; read again next time", b.filled_qty)
                                    }
                                }
                            }
                            None
                        }
                        BrokerStatus::Complete => match b.average_price {
                            Some(price) => Some(LiveUpdate::Filled {
                                client_order_id: coid,
                                qty: if b.filled_qty.is_zero() {
                                    w.order.qty
                                } else {
                                    b.filled_qty
                                },
                                price,
                            }),
                            None => {
                                // Filled, at a price the broker has not said yet: never journaled
                                // at a guess (nor as rejected); read again at the next poll.
                                tracing::warn!(account = %self.link.account, "order {id}: complete without an average price; read again next time");
                                if !w.unpriced_told {
                                    w.unpriced_told = true;
                                    self.notice(LiveNotice::Unpriced {
                                        account: self.link.account.clone(),
                                        client_order_id: coid,
                                    });
                                }
                                None
                            }
                        },
                        // Refused after a part filled (the rest, by the exchange): the part stands.
                        BrokerStatus::Rejected if !b.filled_qty.is_zero() => {
                            Some(LiveUpdate::Cancelled {
                                client_order_id: coid,
                                filled_qty: b.filled_qty,
                                price: b.average_price,
                                reason: format!("rejected: {}", b.message),
                            })
                        }
                        BrokerStatus::Rejected => Some(LiveUpdate::Rejected {
                            client_order_id: coid,
                            reason: if b.message.is_empty() {
                                "rejected".into()
                            } else {
                                b.message
                            },
                        }),
                        BrokerStatus::Cancelled => Some(LiveUpdate::Cancelled {
                            client_order_id: coid,
                            filled_qty: b.filled_qty,
                            price: b.average_price,
                            reason: b.message,
                        }),
                    };
                    match update {
                        Some(u) => {
                            self.update(u);
                            working.remove(i);
                        }
                        None => {
                            if let Err(SessionGone(reason)) =
                                self.cancel_if_due(&mut working[i]).await
                            {
                                self.pause(reason);
                                return false;
                            }
                            i += 1;
                        }
                    }
                }
                Err(BrokerError::Token(reason)) => {
                    self.pause(reason);
                    return false;
                }
                Err(e) => {
                    let wait = self.backoff(&e, 1);
                    tracing::warn!(account = %self.link.account, "order {id}: status: {e}");
                    if matches!(e, BrokerError::RateLimited(_)) {
                        tokio::time::sleep(wait).await;
                    }
                    return false; // the next tick tries again
                }
            }
        }
        true
    }

    /// Ask the broker to cancel a working order when the order manager wants it
    /// cancelled (an entry at the square-off) or when it is an entry still working
    /// `cancel_after` after it was sent. The journal learns of the request first;
    /// what the broker then reports (cancelled, or filled after all: the race) is
    /// read by the next poll. `Err` when the session is gone.
    async fn cancel_if_due(&mut self, w: &mut Working) -> Result<(), SessionGone> {
        if w.cancel_done {
            return Ok(());
        }
        let reason = match (&w.wanted, self.settings.cancel_after) {
            (Some(reason), _) => reason.clone(),
            // A market entry that has not filled is stale; a limit or a stop the strategy
            // asked for works until its validity ends (the broker's DAY, or the square-off).
            (None, Some(after))
                if w.order.entry
                    && w.order.kind == OrderKind::Market
                    && w.order.submitted_at > 0 =>
            {
                let age = crate::domain::time::now_ms().saturating_sub(w.order.submitted_at);
                if age < i64::try_from(after.as_millis()).unwrap_or(i64::MAX) {
                    return Ok(());
                }
                format!("not filled {} s after it was sent", after.as_secs())
            }
            _ => return Ok(()),
        };
        if !w.order.cancel_requested {
            w.order.cancel_requested = true;
            self.update(LiveUpdate::CancelRequested {
                client_order_id: w.order.client_order_id.clone(),
                reason,
            });
        }
        // A cancel counts against the order rate as a placement does.
        self.pace(Segment::of(&w.order.instrument)).await;
        match self.link.broker.cancel(&w.id).await {
            Ok(()) => w.cancel_done = true,
            Err(BrokerError::Token(reason)) => return Err(SessionGone(reason)),
            // Refused: usually filled meanwhile (the next read says so); tried again a few times.
            Err(BrokerError::Rejected(reason)) => {
                w.cancel_refusals += 1;
                w.cancel_done = w.cancel_refusals >= CANCEL_TRIES;
                tracing::info!(account = %self.link.account, "order {}: cancel refused: {reason}", w.id);
            }
            Err(e) => {
                tracing::warn!(account = %self.link.account, "order {}: cancel: {e}; tried again at the next poll", w.id)
            }
        }
        Ok(())
    }
}

/// The broker refused the session (an expired or revoked token): permanent
/// until a new token comes, so the account pauses rather than retrying. Every
/// other broker failure is transient for the router ([`BrokerError::is_ambiguous`]:
/// looked up and retried with back-off) or a definite refusal of that one order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("session refused: {0}")]
struct SessionGone(String);

/// An order the broker has, until it is finished.
struct Working {
    order: LiveOrder,
    /// The broker's id.
    id: String,
    /// The broker took our cancel (or refused it too often): not asked again.
    cancel_done: bool,
    cancel_refusals: u32,
    /// The order manager asked for it to be cancelled, for this reason.
    wanted: Option<String>,
    /// The operator was told it completed without an average price.
    unpriced_told: bool,
    /// Its terms changed and the broker has not taken the change yet.
    modify_pending: bool,
    /// Tries of the pending change the broker did not answer.
    modify_failures: u32,
}

impl Working {
    fn new(order: LiveOrder, id: String) -> Self {
        Self {
            order,
            id,
            cancel_done: false,
            cancel_refusals: 0,
            wanted: None,
            unpriced_told: false,
            modify_pending: false,
            modify_failures: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::brokers::paper::PaperBroker;
    use crate::bus::Bus;

    fn order(coid: &str, instrument: &str, fresh: bool) -> LiveOrder {
        LiveOrder {
            client_order_id: coid.into(),
            account: "a".into(),
            instrument: instrument.into(),
            side: OrderSide::Buy,
            qty: Decimal::from(2),
            reference_price: Some(Decimal::from(100)),
            fresh,
            broker_order_id: None,
            submitted_at: crate::domain::time::now_ms(),
            filled_qty: Decimal::ZERO,
            cancel_requested: false,
            entry: true,
            kind: OrderKind::Market,
            validity: Validity::Day,
            margin_scope: MarginScope::Alone,
            autoslice: false,
        }
    }

    /// The paper venue under another broker's name, its status answers passed through `edit`.
    struct Wrapped {
        paper: PaperBroker,
        name: &'static str,
        edit: Box<dyn Fn(crate::brokers::BrokerOrder) -> crate::brokers::BrokerOrder + Send + Sync>,
    }

    impl Wrapped {
        fn new(
            name: &'static str,
            edit: impl Fn(crate::brokers::BrokerOrder) -> crate::brokers::BrokerOrder
            + Send
            + Sync
            + 'static,
        ) -> Self {
            Self {
                paper: PaperBroker::new(Decimal::ZERO),
                name,
                edit: Box::new(edit),
            }
        }
    }

    impl Broker for Wrapped {
        fn name(&self) -> &'static str {
            self.name
        }
        fn check_session(&self) -> crate::brokers::BoxFuture<'_, Result<String, BrokerError>> {
            self.paper.check_session()
        }
        fn place<'a>(
            &'a self,
            o: &'a OrderRequest,
        ) -> crate::brokers::BoxFuture<'a, Result<String, BrokerError>> {
            self.paper.place(o)
        }
        fn find<'a>(
            &'a self,
            o: &'a OrderRequest,
            c: &'a HashSet<String>,
        ) -> crate::brokers::BoxFuture<'a, Result<Option<crate::brokers::BrokerOrder>, BrokerError>>
        {
            self.paper.find(o, c)
        }
        fn status<'a>(
            &'a self,
            id: &'a str,
        ) -> crate::brokers::BoxFuture<'a, Result<crate::brokers::BrokerOrder, BrokerError>>
        {
            Box::pin(async move { self.paper.status(id).await.map(|o| (self.edit)(o)) })
        }
        fn cancel<'a>(
            &'a self,
            id: &'a str,
        ) -> crate::brokers::BoxFuture<'a, Result<(), BrokerError>> {
            self.paper.cancel(id)
        }
        fn set_token(&self, _: Secret) {}
        fn positions(
            &self,
        ) -> crate::brokers::BoxFuture<'_, Result<Vec<(String, Decimal)>, BrokerError>> {
            self.paper.positions()
        }
    }

    #[tokio::test]
    async fn a_restarted_order_already_at_the_broker_is_not_placed_again() {
        let paper = Arc::new(PaperBroker::new(Decimal::ZERO));
        // Placed before the "crash": the broker has it.
        let req = OrderRequest {
            client_order_id: "th1".into(),
            submitted_at: None,
            symbol: "RELIANCE".into(),
            segment: Segment::Equity,
            token: None,
            side: OrderSide::Buy,
            qty: Decimal::from(2),
            product: Product::Mis,
            reference_price: None,
            protection_pct: Decimal::ZERO,
            algo_id: None,
            kind: crate::brokers::OrderKind::Market,
            validity: crate::brokers::Validity::Day,
            autoslice: false,
        };
        let first = paper.place(&req).await.unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let link = AccountLink {
            account: "a".into(),
            broker: paper.clone(),
            product: Product::Mis,
            protection_pct: Decimal::from(2),
            algo_id: None,
            orders_per_sec: 10,
            margin_check: true,
        };
        let settings = RouterSettings {
            poll: Duration::from_millis(10),
            ..RouterSettings::default()
        };
        let router = LiveRouter::start(
            vec![link],
            InstrumentMaster::new(Bus::embedded("t")),
            settings,
            tx,
        );
        assert!(router.send(order("th1", "RELIANCE", false)));
        assert!(router.send(order("th2", "RELIANCE", true)));
        let mut accepted = Vec::new();
        while accepted.len() < 2 {
            if let Some(RouterOutput::Update(LiveUpdate::Accepted {
                client_order_id,
                broker_order_id,
            })) = rx.recv().await
            {
                accepted.push((client_order_id, broker_order_id));
            }
        }
        assert_eq!(
            accepted[0],
            ("th1".to_owned(), first),
            "found, not placed again"
        );
        assert_eq!(accepted[1].0, "th2");
        paper.on_price("RELIANCE", Decimal::from(101));
        let mut filled = 0;
        while filled < 2 {
            if let Some(RouterOutput::Update(LiveUpdate::Filled { qty, price, .. })) =
                rx.recv().await
            {
                assert_eq!((qty, price), (Decimal::from(2), Decimal::from(101)));
                filled += 1;
            }
        }
        settled(&router).await;
    }

    /// The count drops just after the last report is sent.
    async fn settled(router: &LiveRouter) {
        for _ in 0..200 {
            if router.open_orders() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("{} orders still open", router.open_orders());
    }

    #[tokio::test]
    async fn an_unknown_symbol_is_refused_before_anything_is_sent() {
        let venue = Arc::new(Wrapped::new("kite", |o| o));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let link = AccountLink {
            account: "a".into(),
            broker: venue.clone(),
            product: Product::Mis,
            protection_pct: Decimal::from(2),
            algo_id: None,
            orders_per_sec: 10,
            margin_check: true,
        };
        let router = LiveRouter::start(
            vec![link],
            InstrumentMaster::new(Bus::embedded("t")),
            RouterSettings::default(),
            tx,
        );
        router.send(order("th9", "NOSUCH", true));
        match rx.recv().await {
            Some(RouterOutput::Update(LiveUpdate::Rejected {
                client_order_id,
                reason,
            })) => {
                assert_eq!(client_order_id, "th9");
                assert!(reason.contains("unknown symbol NOSUCH"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let req = OrderRequest {
            client_order_id: "th9".into(),
            submitted_at: None,
            symbol: "NOSUCH".into(),
            segment: Segment::Equity,
            token: None,
            side: OrderSide::Buy,
            qty: Decimal::ONE,
            product: Product::Mis,
            reference_price: None,
            protection_pct: Decimal::ZERO,
            algo_id: None,
            kind: crate::brokers::OrderKind::Market,
            validity: crate::brokers::Validity::Day,
            autoslice: false,
        };
        assert_eq!(
            venue.paper.find(&req, &HashSet::new()).await.unwrap(),
            None,
            "nothing reached the broker"
        );
    }

    #[tokio::test]
    async fn a_complete_order_without_an_average_price_is_not_journaled_at_a_guess() {
        // The broker reports the order complete twice before it says at what price.
        let reads = std::sync::atomic::AtomicU32::new(0);
        let venue = Arc::new(Wrapped::new(
            "paper",
            move |mut o: crate::brokers::BrokerOrder| {
                if o.status == BrokerStatus::Complete && reads.fetch_add(1, Ordering::SeqCst) < 2 {
                    o.average_price = None;
                }
                o
            },
        ));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let link = AccountLink {
            account: "a".into(),
            broker: venue.clone(),
            product: Product::Mis,
            protection_pct: Decimal::from(2),
            algo_id: None,
            orders_per_sec: 10,
            margin_check: true,
        };
        let settings = RouterSettings {
            poll: Duration::from_millis(10),
            ..RouterSettings::default()
        };
        let router = LiveRouter::start(
            vec![link],
            InstrumentMaster::new(Bus::embedded("t")),
            settings,
            tx,
        );
        router.send(order("th5", "RELIANCE", true));
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("the router reports")
                .expect("open")
            {
                RouterOutput::Update(LiveUpdate::Accepted { .. }) => {
                    venue.paper.on_price("RELIANCE", Decimal::from(103))
                }
                RouterOutput::Update(u @ LiveUpdate::Filled { .. }) => {
                    seen.push(format!("{u:?}"));
                    break;
                }
                other => seen.push(format!("{other:?}")),
            }
        }
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(
            seen[0].contains("Unpriced") && seen[0].contains("th5"),
            "told once: {seen:?}"
        );
        assert!(
            seen[1].contains("price: 103"),
            "the broker's price, not the reference 100: {seen:?}"
        );
        settled(&router).await;
    }
}
