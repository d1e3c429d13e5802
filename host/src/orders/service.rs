//! The orders service: the subscriber's readers and merge
//! ([`crate::subscriber`]) feeding the order manager, the acknowledgements
//! once its decisions are recorded, the live router, and the orders side's commands. `tradehost run` wires it
//! to the bus and the brokers (its `orders` role).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::{OrderManager, Outcome};
use crate::brokers::live::{LiveRouter, RouterOutput};
use crate::bus::events::{Event, Events};
use crate::bus::message::{
    Command, CommandMessage, Quote, QuotesMessage, SignalMessage, printable,
};
use crate::bus::{Bus, LogEntry, Subscription};
use crate::config::Config;
use crate::market::guard::{GuardRules, PriceGuard};

pub use crate::subscriber::log::GROUP;
use crate::subscriber::log::{AtEnd, spawn_log_reader, spawn_price_reader};
use crate::subscriber::merge::{Clocks, Merge, PRICE_WAIT, Pick};

pub use crate::bus::Lifecycle;

/// What the orders service needs beyond the configuration.
pub struct OrdersSettings {
    /// The journal file.
    pub journal: PathBuf,
    /// This process's name in the consumer group; kept across restarts.
    pub consumer: String,
    /// `paper` or `live`.
    pub mode: crate::domain::TradingMode,
    /// Batch replays: stop after this long with nothing left to do.
    pub until_idle: Option<Duration>,
    /// How the journal meets the disk ([`crate::orders::Durability::Scratch`] for backtests).
    pub durability: crate::orders::Durability,
}

/// The prices of a quote, as the guard checks them (close first: it is remembered).
fn quote_prices(q: &Quote) -> Vec<(&'static str, rust_decimal::Decimal)> {
    let mut prices = vec![
        ("close", q.close),
        ("open", q.open),
        ("high", q.high),
        ("low", q.low),
    ];
    prices.extend(q.bid.map(|b| ("bid", b)));
    prices.extend(q.ask.map(|a| ("ask", a)));
    prices
}

/// What the order loop hands to its outbox: sent in order, off the loop, so
/// the journal never waits on a network round trip.
enum Out {
    Outcomes(Vec<Outcome>),
    /// A signal's decisions, with when its log entry was taken: the time to its orders
    /// on the bus is [`SIGNAL_TO_ORDER`].
    Decided(Vec<Outcome>, std::time::Instant),
    Ack(String),
}

/// From a signal taken off the log to its orders on the bus, in this process.
pub static SIGNAL_TO_ORDER: crate::domain::stats::Histogram =
    crate::domain::stats::Histogram::new();

fn spawn_outbox(bus: Bus, events: Events) -> (mpsc::UnboundedSender<Out>, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Out>();
    let task = tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            match out {
                Out::Outcomes(o) => publish(&bus, &events, o).await,
                Out::Decided(o, taken) => {
                    let ordered = o.iter().any(|o| matches!(o, Outcome::Order(_)));
                    publish(&bus, &events, o).await;
                    if ordered {
                        SIGNAL_TO_ORDER.observe(taken.elapsed());
                    }
                }
                Out::Ack(entry_id) => {
                    if let Err(e) = bus.ack(GROUP, &entry_id).await {
                        // Not acknowledged: it comes back after a restart, and its recorded decisions make that harmless.
                        tracing::warn!("acknowledging {entry_id}: {e}");
                    }
                }
            }
        }
    });
    (tx, task)
}

async fn publish(bus: &Bus, events: &Events, outcomes: Vec<Outcome>) {
    for o in outcomes {
        match o {
            Outcome::Order(json) => {
                if let Err(e) = bus.publish(&bus.channels().orders(), &json).await {
                    tracing::warn!("publishing an order event: {e}");
                }
            }
            Outcome::Event(event) => events.publish(&event).await,
        }
    }
}

/// Where an earlier run applied the price stream up to, per pipeline (see
/// [`OrderManager::price_cursors`]).
struct PriceCursors {
    by_pipeline: HashMap<String, (u64, u64)>,
    /// An older journal's one cursor, for the pipelines without their own.
    legacy: Option<(u64, u64)>,
}

impl PriceCursors {
    fn of(om: &OrderManager) -> Result<Self, crate::orders::OrderError> {
        let (by_pipeline, legacy) = om.price_cursors()?;
        Ok(Self {
            by_pipeline: by_pipeline
                .iter()
                .map(|(p, c)| (p.clone(), stream_id(c)))
                .collect(),
            legacy: legacy.as_deref().map(stream_id),
        })
    }

    /// The furthest entry applied for any pipeline: beyond it, nothing was.
    fn furthest(&self) -> Option<(u64, u64)> {
        self.by_pipeline.values().copied().chain(self.legacy).max()
    }

    fn applied(&self, pipeline: &str, entry: (u64, u64)) -> bool {
        self.by_pipeline
            .get(pipeline)
            .copied()
            .or(self.legacy)
            .is_some_and(|c| entry <= c)
    }
}

/// Read the retained prices up to the furthest an earlier run applied: what it
/// applied goes back into `om`'s memory (last prices, recent opens, pipeline
/// clocks, ended pipelines), so a restarted process decides on exactly what the
/// undisturbed one knew; what it had not applied yet (another pipeline's prices,
/// merged later in event time) comes back to be applied. Returns those entries
/// and the last entry read (where the price reader goes on), or `None` when
/// told to stop.
async fn warm_prices(
    bus: &Bus,
    om: &mut OrderManager,
    cursors: &PriceCursors,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<(Vec<LogEntry>, String)> {
    let mut pending = Vec::new();
    let mut after = "0".to_owned();
    let Some(target) = cursors.furthest() else {
        return Some((pending, after));
    };
    let mut backoff = Duration::from_millis(100);
    loop {
        if *shutdown.borrow() {
            return None;
        }
        match bus
            .read_quotes(&after, 2048, Duration::from_millis(1))
            .await
        {
            Ok(entries) => {
                if entries.is_empty() {
                    return Some((pending, after)); // nothing beyond: the stream ends there
                }
                for e in entries {
                    let id = stream_id(&e.entry_id);
                    if id > target {
                        return Some((pending, after));
                    }
                    match QuotesMessage::parse(&e.payload) {
                        Ok(q) if cursors.applied(q.pipeline(), id) => om.observe_quotes(&q),
                        _ => pending.push(e.clone()),
                    }
                    after = e.entry_id;
                }
            }
            Err(e) => {
                tracing::warn!("reading prices to warm up: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// A stream entry id (`<ms>-<seq>`) as a comparable pair.
fn stream_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// Run a bus call until Redis answers it, retrying with back-off (100 ms doubling to
/// 2 s) while it is away; `None` when told to stop meanwhile.
async fn while_redis_away<T, F: std::future::Future<Output = Result<T, crate::bus::BusError>>>(
    shutdown: &mut watch::Receiver<bool>,
    what: &str,
    mut call: impl FnMut() -> F,
) -> Option<T> {
    let mut backoff = Duration::from_millis(100);
    loop {
        match call().await {
            Ok(answer) => return Some(answer),
            Err(e) => {
                tracing::warn!("{what}: {e}; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return None,
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Create the consumer group, retrying while Redis is away; false when told to stop meanwhile.
async fn ensure_group(bus: &Bus, shutdown: &mut watch::Receiver<bool>) -> bool {
    while_redis_away(shutdown, "creating the consumer group", || {
        bus.ensure_group(GROUP)
    })
    .await
    .is_some()
}

/// Ends its tasks when dropped (the order streams end with the orders role).
struct AbortOnDrop(Vec<JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// The orders service: reads the signal log and the price stream in event
/// order, decides each signal for every account, journals and places the
/// orders (paper, or through the live router), manages exits and square-offs,
/// and answers the orders side's commands, until told to stop (or, with
/// `until_idle`, until everything is decided). Returns the final summary.
///
/// # Errors
/// A journal that cannot be opened or read.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    config: Arc<Config>,
    bus: Bus,
    settings: OrdersSettings,
    commands_in: Subscription,
    mut life: Lifecycle,
    mut engine_done: watch::Receiver<bool>,
    mut configs: watch::Receiver<Arc<Config>>,
    reload: mpsc::Sender<String>,
    live: Option<(LiveRouter, mpsc::UnboundedReceiver<RouterOutput>)>,
) -> anyhow::Result<Value> {
    let events = Events::new(bus.clone(), "orders");
    let journal = settings.journal.clone();
    let mut om = tokio::task::block_in_place(|| {
        OrderManager::open_with(&journal, config.clone(), settings.mode, settings.durability)
    })
    .with_context(|| format!("opening the journal {}", journal.display()))?;
    let (router, mut reports) = match live {
        Some((router, reports)) => (Some(router), Some(reports)),
        None => (None, None),
    };
    if let Some(r) = &router {
        om.set_live_accounts(r.accounts());
        // The broker ids already matched stay matched; then the live orders a previous run
        // left unfinished: found, polled, or looked for before placing.
        for account in r.accounts() {
            r.claimed(&account, om.broker_order_ids(&account)?);
        }
        for order in om.recover_live_orders()? {
            r.send(order);
        }
        // A change of terms the broker had not taken when the last run stopped is asked again.
        for m in om.pending_modifies()? {
            r.modify(m);
        }
        // Read back every order in flight before anything is decided; the positions follow
        // (compared with the broker's once that read-back is journaled: comparing before would
        // raise a false alarm for every fill that happened while the host was down).
        for account in r.accounts() {
            r.sync(&account);
        }
    }
    // Order updates the brokers push; each (re)connection also syncs the open orders.
    let stream_tokens = crate::brokers::feeds::TokenOverrides::default();
    let _streams = AbortOnDrop(match &router {
        Some(r) => {
            let ev = events.clone();
            let on_event: crate::brokers::feeds::StreamEvents = Arc::new(move |event| {
                let ev = ev.clone();
                tokio::spawn(async move { ev.publish(&event).await });
            });
            crate::brokers::feeds::order_streams(
                &config,
                configs.clone(),
                bus.clone(),
                r,
                stream_tokens.clone(),
                on_event,
            )
        }
        None => Vec::new(),
    });
    let summary = |om: &OrderManager| -> anyhow::Result<Value> {
        Ok(
            json!({ "mode": settings.mode, "accounts": om.accounts_summary()?, "counters": om.counts()? }),
        )
    };
    if !ensure_group(&bus, &mut life.shutdown).await {
        return summary(&om);
    }
    // One process per consumer name: two reading as one would split and re-decide its signals.
    let lease = ConsumerLease::new(&bus, &settings.consumer, &journal);
    match lease.take(&bus, &mut life.shutdown).await {
        Ok(true) => {}
        Ok(false) => return summary(&om),
        Err(other) => anyhow::bail!(
            "consumer {:?} of the signal log's group {GROUP} is in use by another tradehost process ({other}): one order manager per consumer (two would split and decide the same signals); stop it first, or give this run its own --consumer",
            settings.consumer
        ),
    }
    let _lease_keeper = AbortOnDrop(vec![lease.keep(bus.clone(), events.clone())]);
    // The prices an earlier run applied, back into memory; then the stream from there on.
    let cursors = PriceCursors::of(&om)?;
    let cursor = cursors.furthest().map(|(ms, seq)| format!("{ms}-{seq}"));
    let Some((unapplied, read_up_to)) =
        warm_prices(&bus, &mut om, &cursors, &mut life.shutdown).await
    else {
        return summary(&om);
    };
    // Orders recorded before a crash but never sent: send them now.
    publish(
        &bus,
        &events,
        tokio::task::block_in_place(|| om.submit_new())?,
    )
    .await;
    events
        .publish(&Event::OrdersStarted {
            consumer: settings.consumer.clone(),
            journal: journal.display().to_string(),
            mode: settings.mode.as_str().to_owned(),
            kill_switch: om.kill_switch()?,
            price_cursor: cursor.clone(),
        })
        .await;
    // A service that runs into a year its calendar does not know says so at start;
    // a replay's years are told as its signals reach them.
    let today = crate::domain::time::ist_day(crate::domain::time::now_ms());
    if let Some((_, doubt)) =
        Event::calendar_doubt(&config.market.calendar, today, "the host's clock at start")
    {
        events.publish(&doubt).await;
    }

    let (outbox, outbox_task) = spawn_outbox(bus.clone(), events.clone());
    let (tx, mut rx) = mpsc::channel::<Vec<LogEntry>>(64);
    let (log_end, prices_end) = (AtEnd::default(), AtEnd::default());
    let reader = spawn_log_reader(
        bus.clone(),
        settings.consumer.clone(),
        Duration::from_millis(config.bus.claim_idle_ms.max(100)),
        tx,
        log_end.clone(),
    );
    let (prices_tx, mut prices) = mpsc::channel::<Vec<LogEntry>>(8);
    let price_reader = spawn_price_reader(bus.clone(), read_up_to, prices_tx, prices_end.clone());
    // Since when everything logged and priced has been read and handed over: only
    // then can a held signal's prices (or a price's signal) be missing rather than queued.
    let mut caught_up_since: Option<tokio::time::Instant> = None;
    // The square-off by the clock is for prices that follow the wall clock (a feed,
    // or a live account); a replay's time is what its prices say, on any machine.
    let wall_clock = settings.mode == crate::domain::TradingMode::Live
        || config.pipelines.iter().any(|p| p.source.is_live());
    let mut heartbeat =
        tokio::time::interval(Duration::from_secs(config.host.heartbeat_secs.max(1)));
    let mut idle_check = tokio::time::interval(Duration::from_millis(200));
    let mut clock = tokio::time::interval(Duration::from_secs(1));
    clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut trim = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(60),
        Duration::from_secs(60),
    );
    let mut last_work = tokio::time::Instant::now();
    // Prices of several pipelines interleave and replays carry old times: only
    // the price rules apply here, not the clock or the order of arrival.
    let mut price_guard = PriceGuards::new(&config.market);
    // Signals waiting for their prices, and prices for their signals, the replays
    // merged with each other in event time (see `subscriber::merge`).
    let mut merge = Merge::default();
    merge.set_ordered(replays(&config));
    take_prices(unapplied, &mut merge, &mut price_guard, &events).await;
    let mut stop = Wait::new(life.shutdown.clone());
    // Commands come through a reader that answers what cannot wait while the journal is stuck.
    let (cmd_tx, mut commands) = mpsc::unbounded_channel();
    let command_reader = spawn_command_reader(
        commands_in,
        cmd_tx,
        stop.stuck.clone(),
        om.kill_flag(),
        life.stop.clone(),
        events.clone(),
    );
    // The square-offs (account, IST day, minute) whose broker check has been asked for.
    let mut checked: std::collections::HashSet<(String, i64, u32)> = Default::default();
    // The position differences already told, so a check that finds the same one again (a
    // position bought by hand, found at every sync) does not alert the trader again.
    let mut mismatches_told = Told::default();
    loop {
        if let Some(r) = &router {
            square_off_checks(r, &config, &mut checked);
        }
        if !(log_end.get() && prices_end.get() && rx.is_empty() && prices.is_empty()) {
            caught_up_since = None;
        } else if caught_up_since.is_none() {
            caught_up_since = Some(tokio::time::Instant::now());
        }
        let expire = caught_up_since.is_some_and(|t| t.elapsed() >= PRICE_WAIT);
        // An order stream that (re)connected: nothing is decided until its account's working
        // orders are read against the broker's book (or that takes longer than SYNC_WAIT).
        let held = match router
            .as_ref()
            .and_then(crate::brokers::live::LiveRouter::syncing)
        {
            Some((account, waited)) if waited >= SYNC_WAIT => {
                if let Some(r) = &router {
                    let _ = r.synced(&account);
                }
                let waited_ms = u64::try_from(waited.as_millis()).unwrap_or(u64::MAX);
                events.publish(&Event::OrderSyncOverdue { account, waited_ms, detail: "its broker did not answer in time; decisions go on, its orders are read at the next poll".into() }).await;
                true
            }
            Some(_) => true,
            None => false,
        };
        if let Some(r) = &router {
            for order in om.take_live_orders() {
                r.send(order);
            }
            for cancel in om.take_live_cancels() {
                r.cancel(cancel);
            }
            for modify in om.take_live_modifies() {
                r.modify(modify);
            }
        }
        tokio::select! {
            _ = life.shutdown.changed() => break,
            report = async { match reports.as_mut() { Some(r) => r.recv().await, None => std::future::pending().await } } => {
                let Some(report) = report else { continue };
                last_work = tokio::time::Instant::now();
                match report {
                    crate::brokers::live::RouterOutput::Update(update) => {
                        // What the broker did must be recorded: retried rather than lost.
                        if let Some(out) = until_recorded(&events, "a broker report", &mut stop, || om.on_live_update(&update)).await {
                            let _ = outbox.send(Out::Outcomes(out));
                        }
                    }
                    crate::brokers::live::RouterOutput::Notice(notice) => {
                        let synced = match &notice {
                            crate::brokers::live::LiveNotice::Synced { account, complete, .. } => Some((account.clone(), *complete)),
                            _ => None,
                        };
                        live_notice(&events, notice, router.as_ref()).await;
                        if let Some((account, complete)) = synced {
                            // Its orders in flight are read back and journaled (at the start, or
                            // after its order stream reconnected): now its positions, unless the
                            // read-back could not be made whole.
                            if complete && let Some(r) = &router {
                                let journal = om.positions_of(&account)?;
                                let in_flight = om.instruments_in_flight(&account)?;
                                // Where the journal holds more than the broker, the broker is the
                                // truth: the journal comes down to it before anything is placed.
                                for m in reconcile_positions(r, &account, &journal, &in_flight, &mut mismatches_told, &events).await {
                                    if let Some(out) = until_recorded(&events, "a position resolved toward the broker", &mut stop, || om.resolve_to_broker(&account, &m.instrument, m.broker)).await {
                                        let _ = outbox.send(Out::Outcomes(out));
                                    }
                                }
                            }
                            release(&mut merge, &mut om, &outbox, &events, &mut stop, expire).await;
                        }
                    }
                }
            }
            batch = rx.recv() => {
                let Some(batch) = batch else { break };
                last_work = tokio::time::Instant::now();
                merge.hold_signals(batch);
                if !held {
                    release(&mut merge, &mut om, &outbox, &events, &mut stop, expire).await;
                }
            }
            batch = prices.recv() => {
                let Some(batch) = batch else { break };
                last_work = tokio::time::Instant::now();
                take_prices(batch, &mut merge, &mut price_guard, &events).await;
                if !held {
                    release(&mut merge, &mut om, &outbox, &events, &mut stop, expire).await;
                }
            }
            msg = commands.recv() => {
                // The reader ends only when the bus is gone.
                let Some(Forwarded { payload, acked }) = msg else { break };
                if let Ok(m) = CommandMessage::parse(&payload) {
                    match m.command() {
                        Ok(Command::Token { account, access_token }) => {
                            // The order streams use it on their next connection; the router below checks it.
                            if let Ok(mut t) = stream_tokens.write() {
                                t.insert(account, access_token);
                            }
                        }
                        Ok(Command::Reload) => {
                            let _ = reload.try_send(m.id);
                            continue;
                        }
                        Ok(Command::Shutdown) => {
                            events.ack(&m.id, &m.cmd, true, "orders stopping after the decision in flight").await;
                            let _ = life.stop.send(true);
                            continue;
                        }
                        _ => {}
                    }
                }
                let current = configs.borrow().clone();
                orders_command(&payload, &current, &mut om, &bus, &events, router.as_ref(), acked).await;
            }
            changed = configs.changed() => {
                if changed.is_ok() {
                    let config = configs.borrow_and_update().clone();
                    merge.set_ordered(replays(&config));
                    om.set_config(config);
                }
            }
            _ = trim.tick() => {
                match bus.trim_log(GROUP).await {
                    Ok(n) if n > 0 => tracing::debug!("trimmed {n} acknowledged signals from the log"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("trimming the signal log: {e}"),
                }
            }
            _ = heartbeat.tick() => {
                let body = json!({
                    "mode": settings.mode, "accounts": om.accounts_summary()?, "counters": om.counts()?, "kill_switch": om.kill_switch()?,
                    "held_signals": merge.held_signals(), "held_prices": merge.held_prices(),
                    "signal_to_order": SIGNAL_TO_ORDER.to_json(), "journal_commit": crate::orders::journal::COMMIT_TIMES.to_json(),
                });
                events.heartbeat(body).await;
            }
            _ = clock.tick() => {
                // Square-off by the clock when the prices stop (a feed gap at 15:14, a position
                // left open overnight). Only with nothing held and the prices quiet: what it
                // records is what the next price would record, so a replay decides the same.
                // A live account squares off by the calendar's wall clock even when no price has
                // come since the start (a restart at 15:14 with the feed down): the close goes at
                // the market with the broker's protection.
                let live_unpriced = router.is_some() && om.prices_quiet_for().is_none();
                let quiet = wall_clock && (live_unpriced || om.prices_quiet_for().is_some_and(|d| d >= CLOCK_QUIET));
                let now = om.market_clock().or_else(|| live_unpriced.then(crate::domain::time::now_ms));
                if quiet && !held && merge.is_empty() && rx.is_empty() && prices.is_empty()
                    && let Some(now) = now
                    && let Some(out) = until_recorded(&events, "the square-off clock", &mut stop, || om.on_clock(now)).await
                {
                    if !out.is_empty() {
                        last_work = tokio::time::Instant::now();
                    }
                    let _ = outbox.send(Out::Outcomes(out));
                }
            }
            _ = idle_check.tick() => {
                if !held {
                    release(&mut merge, &mut om, &outbox, &events, &mut stop, expire).await;
                }
                let Some(until_idle) = settings.until_idle else { continue };
                let quiet_for = last_work.elapsed();
                let live_busy = router.as_ref().is_some_and(|r| r.open_orders() > 0) || reports.as_ref().is_some_and(|r| !r.is_empty());
                let local_drained = !live_busy && merge.is_empty() && rx.is_empty() && prices.is_empty();
                // A count the bus cannot give (an outage) is not "drained".
                let drained = local_drained && matches!(bus.undelivered_count(GROUP).await, Ok(0)) && matches!(bus.pending_count(GROUP).await, Ok(0));
                let engine_over = *engine_done.borrow_and_update();
                if drained && engine_over && quiet_for >= until_idle {
                    break; // a batch replay: the engine is done and every signal is handled
                }
            }
        }
    }
    reader.abort();
    price_reader.abort();
    command_reader.abort();
    drop(outbox);
    // Everything decided is published and acknowledged before we go, unless
    // the bus is away: then what was not acknowledged comes back on restart,
    // and its recorded decisions make that harmless.
    if tokio::time::timeout(Duration::from_secs(2), outbox_task)
        .await
        .is_err()
    {
        eprintln!(
            "tradehost: the bus did not take the last order events in 2 s; unacknowledged signals are decided again (from the journal) on restart"
        );
    }
    // A backtest's journal, kept in memory, is written out now.
    tokio::task::block_in_place(|| om.save())
        .with_context(|| format!("writing the journal {}", journal.display()))?;
    let summary = summary(&om)?;
    let _ = tokio::time::timeout(Duration::from_secs(1), events.heartbeat(summary.clone())).await;
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        bus.release_lease(&lease.key, &lease.holder),
    )
    .await;
    Ok(summary)
}

/// The lease on this process's consumer name in the signal log's group.
struct ConsumerLease {
    key: String,
    /// `host H journal J pid P`.
    holder: String,
    /// A holder with this process's host and journal is gone: the journal's lock is ours.
    predecessor: String,
}

impl ConsumerLease {
    /// Lost unless renewed within this (a killed holder frees its name after it).
    const TTL: Duration = Duration::from_secs(10);
    const RENEW: Duration = Duration::from_secs(3);

    fn new(bus: &Bus, consumer: &str, journal: &std::path::Path) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "an unnamed host".into());
        let journal = std::path::absolute(journal).unwrap_or_else(|_| journal.to_path_buf());
        let predecessor = format!("host {host} journal {} pid ", journal.display());
        Self {
            key: bus.channels().consumer_lease(GROUP, consumer),
            holder: format!("{predecessor}{}", std::process::id()),
            predecessor,
        }
    }

    /// Take the lease, retrying while Redis is away: `Ok(false)` when told to stop
    /// meanwhile, `Err(holder)` when another process holds it.
    async fn take(&self, bus: &Bus, shutdown: &mut watch::Receiver<bool>) -> Result<bool, String> {
        let held = while_redis_away(shutdown, "taking the consumer lease", || {
            bus.hold_lease(&self.key, &self.holder, Self::TTL, &self.predecessor)
        })
        .await;
        match held {
            None => Ok(false),
            Some(None) => Ok(true),
            Some(Some(other)) => Err(printable(&other, 300)),
        }
    }

    /// Renew the lease until aborted; a lease found in other hands is an alert each time
    /// it changes hands (a Redis restart loses it: it is simply taken again).
    fn keep(&self, bus: Bus, events: Events) -> JoinHandle<()> {
        let (key, holder, predecessor) = (
            self.key.clone(),
            self.holder.clone(),
            self.predecessor.clone(),
        );
        tokio::spawn(async move {
            let mut told: Option<String> = None;
            let mut every = tokio::time::interval(Self::RENEW);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                match bus.hold_lease(&key, &holder, Self::TTL, &predecessor).await {
                    Ok(None) => told = None,
                    Ok(Some(other)) if told.as_ref() != Some(&other) => {
                        events.error("orders", &format!("the consumer lease {key} is held by another process ({other}): two order managers read as one consumer; stop one")).await;
                        told = Some(other);
                    }
                    Ok(Some(_)) => {}
                    Err(e) => tracing::debug!("renewing the consumer lease: {e}"),
                }
            }
        })
    }
}

/// How long decisions wait for a live account's order sync after its stream (re)connected.
const SYNC_WAIT: Duration = Duration::from_secs(10);

/// How long the prices must have been quiet before the clock squares off on its own.
const CLOCK_QUIET: Duration = Duration::from_secs(2);

/// Let held signals and prices through in the order the engine produced them
/// (see [`crate::subscriber::merge`]): first the price messages whose signal is
/// decided, then the signals whose prices are applied, until nothing moves.
/// With `expire` (the readers caught up for [`PRICE_WAIT`]), anything held that
/// long goes through anyway.
async fn release(
    merge: &mut Merge,
    om: &mut OrderManager,
    outbox: &mpsc::UnboundedSender<Out>,
    events: &Events,
    stop: &mut Wait,
    expire: bool,
) {
    while let Some(pick) = merge.pick(&*om, expire) {
        let entry = match pick {
            Pick::Prices(pipeline) => {
                let Some(h) = merge.prices_of(&pipeline) else {
                    return;
                };
                // Recorded with the price cursor, or retried: a price skipped here would be a stop never fired.
                let applied = until_recorded(
                    events,
                    &format!("prices {}", printable(&h.quotes.id, 80)),
                    stop,
                    || om.on_quotes_at(&h.quotes, h.entry_id.as_deref()),
                )
                .await;
                let Some(out) = applied else { return }; // stopping: the price is applied again after the restart
                let _ = outbox.send(Out::Outcomes(out));
                merge.pop_prices(&pipeline);
                continue;
            }
            Pick::Signal(pipeline) => merge.pop_signal(&pipeline),
            Pick::Malformed => merge.pop_malformed(),
        };
        let Some(entry) = entry else { return };
        if !handle_entry(om, outbox, events, &entry, stop).await {
            return; // stopping: the entry stays unacknowledged and comes back after the restart
        }
    }
}

/// The pipelines the order side merges in event time with each other: every
/// one whose source is not a live feed (see [`crate::subscriber::merge`]).
fn replays(config: &Config) -> Vec<String> {
    config
        .pipelines
        .iter()
        .filter(|p| !p.source.is_live())
        .map(|p| p.id.get_ref().clone())
        .collect()
}

/// The orders side's price checks. A feed's prices (a `broker` or `redis` source) were
/// checked by the engine where the ticks came in, band and gap included: here they are
/// checked again for what a price can never be (not positive, off its tick, beyond the
/// sanity bound), not against the band, so a gap the feed believed moves fills and stops
/// from its first bar. A replay's prices (a file, the synthetic market) are checked here
/// only, band included. Prices of several pipelines interleave and replays carry old times:
/// neither checks the clock or the order of arrival.
struct PriceGuards {
    replays: PriceGuard,
    fed: PriceGuard,
}

impl PriceGuards {
    fn new(market: &crate::config::MarketSection) -> Self {
        let rules = GuardRules {
            max_skew_ms: 0,
            in_order: false,
            ..GuardRules::from_config(market, 0)
        };
        let fed = GuardRules {
            band_pct: rust_decimal::Decimal::ZERO,
            ..rules.clone()
        };
        Self {
            replays: PriceGuard::new(rules),
            fed: PriceGuard::new(fed),
        }
    }
}

/// Hold price stream entries for their turn: what the price guard refuses is
/// taken out (and reported) first, a malformed entry is reported and skipped.
async fn take_prices(
    batch: Vec<LogEntry>,
    merge: &mut Merge,
    guards: &mut PriceGuards,
    events: &Events,
) {
    for entry in batch {
        match QuotesMessage::parse(&entry.payload) {
            Ok(mut q) => {
                let price_guard = if merge.is_ordered(q.pipeline()) {
                    &mut guards.replays
                } else {
                    &mut guards.fed
                };
                // A price the guard refuses never moves a fill, a stop or a mark.
                let (mut refused, mut gaps) = (Vec::new(), Vec::new());
                q.quotes.retain(|quote| {
                    match price_guard.check(&quote.instrument, q.ts, &quote_prices(quote), 0) {
                        Ok(gap) => {
                            gaps.extend(gap);
                            true
                        }
                        Err(r) => {
                            refused.push(r);
                            false
                        }
                    }
                });
                for gap in gaps {
                    events.publish(&gap.event("quotes")).await;
                }
                for r in refused {
                    events
                        .publish(&Event::PriceRefused {
                            source: "quotes".into(),
                            message: printable(&q.id, 80),
                            instrument: printable(r.instrument(), 40),
                            field: r.field().to_owned(),
                            reason: r.to_string(),
                        })
                        .await;
                    events
                        .error(
                            "quotes",
                            &format!("price refused in {}: {r}", printable(&q.id, 80)),
                        )
                        .await;
                }
                merge.hold_prices(q, Some(entry.entry_id));
            }
            Err(e) => {
                events
                    .error(
                        "quotes",
                        &format!("malformed prices in {} ignored: {e}", entry.entry_id),
                    )
                    .await
            }
        }
    }
}

impl Clocks for OrderManager {
    fn is_decided(&self, signal_id: &str) -> bool {
        Self::is_decided(self, signal_id)
    }

    fn pipeline_clock(&self, pipeline: &str) -> Option<i64> {
        Self::pipeline_clock(self, pipeline)
    }

    fn price_clock(&self, instrument: &str) -> Option<i64> {
        Self::price_clock(self, instrument)
    }

    fn is_finished(&self, pipeline: &str) -> bool {
        Self::is_finished(self, pipeline)
    }
}

/// What a journal write being retried watches: the stop, and where it tells the command
/// reader that the journal is stuck (its path), so a trader's commands are answered meanwhile.
pub(crate) struct Wait {
    stop: watch::Receiver<bool>,
    stuck: Arc<std::sync::Mutex<Option<String>>>,
}

impl Wait {
    fn new(stop: watch::Receiver<bool>) -> Self {
        Self {
            stop,
            stuck: Arc::default(),
        }
    }

    fn set_stuck(&self, journal: Option<&str>) {
        if let Ok(mut s) = self.stuck.lock() {
            *s = journal.map(str::to_owned);
        }
    }
}

/// A command for the order loop; `acked` when the reader already answered it.
struct Forwarded {
    payload: String,
    acked: bool,
}

/// Read the commands channel for the order loop. While the journal is stuck (a write being
/// retried, see [`until_recorded`]) the loop cannot answer, so this answers what cannot wait:
/// `kill` is honoured at once in memory (and recorded by the loop once it can), `shutdown`
/// stops the process, and what needs the journal to record orders (`flatten`, `release`, a
/// basket, a watcher, a cancel or a change) is refused naming the journal. The rest (a
/// token, a reload, the engine's) waits for the loop, in order.
fn spawn_command_reader(
    mut commands: Subscription,
    out: mpsc::UnboundedSender<Forwarded>,
    stuck: Arc<std::sync::Mutex<Option<String>>>,
    kill: Arc<std::sync::atomic::AtomicBool>,
    stop: Arc<watch::Sender<bool>>,
    events: Events,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        // A Redis subscription reconnects by itself; `None` only when the bus is gone.
        while let Some((_, payload)) = commands.recv().await {
            let journal = stuck.lock().ok().and_then(|s| s.clone());
            let parsed = CommandMessage::parse(&payload).ok();
            let (Some(journal), Some(m)) = (journal, parsed) else {
                if out
                    .send(Forwarded {
                        payload,
                        acked: false,
                    })
                    .is_err()
                {
                    return;
                }
                continue;
            };
            let acked = match m.command() {
                Ok(Command::KillSwitch { on: true }) => {
                    kill.store(true, std::sync::atomic::Ordering::SeqCst);
                    let detail = format!(
                        "kill switch on: no new orders until released (held in memory while the journal {journal} cannot be written; recorded once it can)"
                    );
                    events.ack(&m.id, &m.cmd, true, &detail).await;
                    true
                }
                Ok(Command::Shutdown) => {
                    events
                        .ack(
                            &m.id,
                            &m.cmd,
                            true,
                            "orders stopping; the write in retry is redone after the restart",
                        )
                        .await;
                    let _ = stop.send(true);
                    continue;
                }
                Ok(
                    Command::KillSwitch { on: false }
                    | Command::Flatten { .. }
                    | Command::Basket { .. }
                    | Command::CancelOrder { .. }
                    | Command::ModifyOrder { .. }
                    | Command::Watch { .. }
                    | Command::Unwatch { .. },
                ) => {
                    let detail = format!(
                        "the journal {journal} cannot be written (see the journal_full alert): {} needs it to record its orders; send it again once the journal takes writes",
                        m.cmd
                    );
                    events.ack(&m.id, &m.cmd, false, &detail).await;
                    continue;
                }
                _ => false,
            };
            if out.send(Forwarded { payload, acked }).is_err() {
                return;
            }
        }
    })
}

/// Run a journal write until it succeeds: what it records (a decision, a
/// broker's report, prices) must never be dropped. A transient failure (the
/// journal busy or locked, an I/O error) is retried with back-off; a permanent
/// one (a constraint, a value that does not fit) is reported once and the item
/// parked: `Some(empty)`, so it is not retried forever. `None` when the process
/// is told to stop meanwhile (the item is redone after the restart).
async fn until_recorded(
    events: &Events,
    what: &str,
    wait: &mut Wait,
    write: impl FnMut() -> Result<Vec<Outcome>, crate::orders::OrderError>,
) -> Option<Vec<Outcome>> {
    let out = retry_write(events, what, wait, write).await;
    wait.set_stuck(None);
    out
}

async fn retry_write(
    events: &Events,
    what: &str,
    wait: &mut Wait,
    mut write: impl FnMut() -> Result<Vec<Outcome>, crate::orders::OrderError>,
) -> Option<Vec<Outcome>> {
    let mut delay = Duration::from_millis(100);
    let mut reported = false;
    loop {
        match tokio::task::block_in_place(&mut write) {
            Ok(out) => return Some(out),
            Err(e) if e.is_transient() => {
                if *wait.stop.borrow() {
                    return None;
                }
                if !reported {
                    // The commands are answered meanwhile by the reader (see `spawn_command_reader`).
                    wait.set_stuck(Some(e.journal()));
                    if e.is_disk_full() {
                        // Not a blink: space must be made. An alert naming the journal's file.
                        events
                            .publish(&Event::JournalFull {
                                journal: e.journal().to_owned(),
                                item: what.to_owned(),
                                error: e.to_string(),
                            })
                            .await;
                    }
                    events
                        .error("orders", &format!("recording {what}: {e}; retrying"))
                        .await;
                    reported = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = wait.stop.changed() => return None,
                }
                if *wait.stop.borrow() {
                    return None;
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                events
                    .publish(&Event::Parked {
                        item: what.to_owned(),
                        error: e.to_string(),
                        detail: "a permanent journal error: the item is set aside, not retried"
                            .into(),
                    })
                    .await;
                return Some(Vec::new());
            }
        }
    }
}

/// Decide one log entry; false when stopping before it was recorded.
async fn handle_entry(
    om: &mut OrderManager,
    outbox: &mpsc::UnboundedSender<Out>,
    events: &Events,
    entry: &LogEntry,
    stop: &mut Wait,
) -> bool {
    match SignalMessage::parse(&entry.payload) {
        Ok(signal) => {
            let taken = std::time::Instant::now();
            // The journal is the one thing that must work: keep the entry
            // unacknowledged and try again rather than lose the signal.
            match until_recorded(
                events,
                &format!("signal {}", printable(&signal.id, 200)),
                stop,
                || om.on_signal(&signal),
            )
            .await
            {
                Some(out) => {
                    let _ = outbox.send(Out::Decided(out, taken));
                }
                None => return false,
            }
        }
        Err(e) => {
            events
                .error(
                    "signal log",
                    &format!("entry {} is malformed and was skipped: {e}", entry.entry_id),
                )
                .await
        }
    }
    if let Ok(id) = serde_json::from_str::<Value>(&entry.payload)
        .map(|v| v["id"].as_str().unwrap_or_default().to_owned())
    {
        om.mark_decided(&id);
    }
    // After the decisions are committed, never before.
    let _ = outbox.send(Out::Ack(entry.entry_id.clone()));
    true
}

/// The broker is the truth before a square-off: from each live account's square-off minute
/// (per segment, by the wall clock) its orders are read back once that day, and its
/// positions then compared with its broker's and resolved toward them (a [`crate::brokers::live::LiveNotice::Synced`]),
/// before anything else is decided. A position the broker squared off itself, or the trader
/// closed at the broker, is then not closed a second time: the close is only for what the
/// broker still holds.
fn square_off_checks(
    router: &LiveRouter,
    config: &crate::config::Config,
    checked: &mut std::collections::HashSet<(String, i64, u32)>,
) {
    use crate::domain::Segment;
    use crate::domain::time::{ist_day, ist_minute_of_day};
    let now = crate::domain::time::now_ms();
    let (day, minute) = (ist_day(now), ist_minute_of_day(now));
    for (account, _) in router.brokers() {
        let Some(cfg) = config.account(account) else {
            continue;
        };
        for due in [Segment::Equity, Segment::Derivative]
            .into_iter()
            .filter_map(|s| cfg.square_off_minute(s))
        {
            if due <= minute && checked.insert((account.clone(), day, due)) {
                println!(
                    "tradehost: {account}: square-off at {}: reading its orders and positions back from the broker first",
                    crate::domain::time::format_hhmm(due)
                );
                router.sync(account);
            }
        }
    }
}

/// The position differences told, by account and instrument: (journal, broker).
type Told = HashMap<(String, String), (rust_decimal::Decimal, rust_decimal::Decimal)>;

/// Compare each live account's journal positions with its broker's, and raise
/// an alert for every difference (a manual trade, an order placed while the
/// host was down) once, until it changes or goes away. Trading goes on: the trader decides (a `flatten`, a fix at the broker).
async fn reconcile_positions(
    router: &crate::brokers::live::LiveRouter,
    account: &str,
    journal: &HashMap<String, rust_decimal::Decimal>,
    in_flight: &std::collections::HashSet<String>,
    told: &mut Told,
    events: &Events,
) -> Vec<crate::brokers::live::Mismatch> {
    let mut found = Vec::new();
    for (_, broker) in router.brokers().iter().filter(|(a, _)| a == account) {
        // An order still working may have filled at the broker with its report on the way:
        // its instrument is compared at the next check, once it settles.
        match router.reconcile(account, journal).await.map(|m| {
            m.into_iter()
                .filter(|m| !in_flight.contains(&m.instrument))
                .collect::<Vec<_>>()
        }) {
            Ok(mismatches) if mismatches.is_empty() => {
                told.retain(|(a, _), _| a != account);
                println!(
                    "tradehost: {account}: positions agree with {} ({} open)",
                    broker.name(),
                    journal.len()
                );
            }
            Ok(mismatches) => {
                told.retain(|(a, i), _| {
                    a != account || mismatches.iter().any(|m| &m.instrument == i)
                });
                for m in mismatches {
                    let key = (account.to_owned(), m.instrument.clone());
                    if told.insert(key, (m.journal, m.broker)) == Some((m.journal, m.broker)) {
                        // Told already, and unchanged: still resolved toward the broker, not said again.
                        found.push(m);
                        continue;
                    }
                    println!(
                        "tradehost: {account}: position mismatch in {}: journal {}, {} {}",
                        m.instrument,
                        m.journal,
                        broker.name(),
                        m.broker
                    );
                    events
                        .publish(&Event::PositionMismatch {
                            account: account.to_owned(),
                            broker: broker.name().to_owned(),
                            instrument: m.instrument.clone(),
                            journal: m.journal.to_string(),
                            broker_qty: m.broker.to_string(),
                        })
                        .await;
                    found.push(m);
                }
            }
            Err(e) => {
                events
                    .publish(&Event::ReconcileFailed {
                        account: account.to_owned(),
                        broker: broker.name().to_owned(),
                        error: e.to_string(),
                    })
                    .await
            }
        }
    }
    found
}

/// Publish what the live router reports to the operator.
async fn live_notice(
    events: &Events,
    notice: crate::brokers::live::LiveNotice,
    router: Option<&crate::brokers::live::LiveRouter>,
) {
    use crate::brokers::live::LiveNotice as N;
    match notice {
        N::Synced {
            account,
            broker,
            orders,
            complete,
        } => {
            // Every update the sync brought came before this notice and is journaled.
            let waited = router
                .and_then(|r| r.synced(&account))
                .map_or(0, |w| u64::try_from(w.as_millis()).unwrap_or(u64::MAX));
            events
                .publish(&Event::OrdersSynced {
                    account,
                    broker: broker.to_owned(),
                    orders,
                    complete,
                    waited_ms: waited,
                })
                .await;
        }
        N::TokenExpired {
            account,
            broker,
            reason,
        } => {
            let detail =
                "orders for this account are held until a token command brings a new token"
                    .to_owned();
            events
                .publish(&Event::TokenExpired {
                    account,
                    broker: broker.to_owned(),
                    reason,
                    detail,
                })
                .await;
        }
        N::Resumed { account, broker } => {
            events
                .publish(&Event::TokenRenewed {
                    account,
                    broker: broker.to_owned(),
                })
                .await
        }
        N::TokenRefused {
            account,
            broker,
            reason,
        } => {
            events
                .publish(&Event::TokenRefused {
                    account,
                    broker: broker.to_owned(),
                    reason,
                })
                .await
        }
        N::Unpriced {
            account,
            client_order_id,
        } => {
            let detail = "the broker reports it complete without an average price; nothing is journaled until it gives one".to_owned();
            events
                .publish(&Event::OrderUnpriced {
                    account,
                    client_order_id,
                    detail,
                })
                .await;
        }
        N::Retrying {
            account,
            client_order_id,
            reason,
            wait_ms,
        } => {
            events
                .publish(&Event::BrokerRetry {
                    account,
                    client_order_id,
                    reason,
                    wait_ms,
                })
                .await;
        }
    }
}

async fn orders_command(
    payload: &str,
    config: &Config,
    om: &mut OrderManager,
    bus: &Bus,
    events: &Events,
    router: Option<&crate::brokers::live::LiveRouter>,
    acked: bool,
) {
    let cmd = match CommandMessage::parse(payload) {
        Ok(c) => c,
        Err(e) => {
            events
                .error("commands", &format!("malformed command ignored: {e}"))
                .await;
            return;
        }
    };
    let command = match cmd.command() {
        Ok(c) => c,
        // The engine's commands are the engine's to refuse.
        Err(_) if Command::ENGINE.contains(&cmd.cmd.as_str()) => return,
        Err(e) => return events.ack(&cmd.id, &cmd.cmd, false, &e).await,
    };
    let result: Result<String, String> = match command {
        Command::Flatten { account } if config.account(&account).is_some() => {
            match tokio::task::block_in_place(|| om.flatten(&account, &cmd.id)) {
                Ok(out) => {
                    let n = out
                        .iter()
                        .filter(|o| matches!(o, Outcome::Order(j) if j.contains("\"accepted\"")))
                        .count();
                    publish(bus, events, out).await;
                    Ok(format!("flattening {account}: {n} closing orders"))
                }
                Err(e) => Err(e.to_string()),
            }
        }
        Command::Flatten { account } => Err(format!("unknown account {account:?}")),
        Command::Basket {
            account,
            legs,
            unwind,
        } => {
            let basket = crate::orders::Basket {
                id: cmd.id.clone(),
                account,
                legs,
                unwind_on_failure: unwind,
            };
            match tokio::task::block_in_place(|| om.place_basket(&basket)) {
                Ok(out) => {
                    let failed = out.iter().any(|o| {
                        matches!(
                            o,
                            Outcome::Event(crate::bus::events::Event::BasketFailed { .. })
                        )
                    });
                    publish(bus, events, out).await;
                    if failed {
                        Err(format!("basket {} failed; see basket_failed", cmd.id))
                    } else {
                        Ok(format!("basket {} placed: buy legs first", cmd.id))
                    }
                }
                Err(e) => Err(e.to_string()),
            }
        }
        Command::Watch {
            account,
            instrument,
            level,
            up,
            leg,
        } => {
            let w = crate::orders::Watcher {
                id: cmd.id.clone(),
                account,
                instrument,
                level,
                up,
                leg,
            };
            match tokio::task::block_in_place(|| om.arm_watcher(&w)) {
                Ok(Ok(out)) => {
                    publish(bus, events, out).await;
                    Ok(format!(
                        "watcher {} armed: {} crossing {} {}",
                        w.id,
                        w.instrument,
                        if w.up { "up" } else { "down" },
                        w.level
                    ))
                }
                Ok(Err(why)) => Err(why),
                Err(e) => Err(e.to_string()),
            }
        }
        Command::Unwatch { watch_id } => {
            match tokio::task::block_in_place(|| om.disarm_watcher(&watch_id)) {
                Ok(Ok(out)) => {
                    publish(bus, events, out).await;
                    Ok(format!("watcher {watch_id} cancelled"))
                }
                Ok(Err(why)) => Err(why),
                Err(e) => Err(e.to_string()),
            }
        }
        Command::CancelOrder { client_order_id } => {
            match tokio::task::block_in_place(|| om.cancel_order(&client_order_id, &cmd.id)) {
                Ok(Ok(out)) => {
                    let done = !out.is_empty();
                    publish(bus, events, out).await;
                    Ok(if done {
                        format!("order {client_order_id} cancelled")
                    } else {
                        format!("cancel of {client_order_id} sent to the broker")
                    })
                }
                Ok(Err(why)) => Err(why),
                Err(e) => Err(e.to_string()),
            }
        }
        Command::ModifyOrder {
            client_order_id,
            price,
            trigger,
        } => match tokio::task::block_in_place(|| {
            om.modify_order(&client_order_id, price, trigger, &cmd.id)
        }) {
            Ok(Ok(out)) => {
                publish(bus, events, out).await;
                Ok(format!("order {client_order_id}: new terms recorded"))
            }
            Ok(Err(why)) => Err(why),
            Err(e) => Err(e.to_string()),
        },
        Command::KillSwitch { on } => match om.set_kill_switch(on) {
            Ok(()) => {
                events
                    .publish(&Event::KillSwitch {
                        on,
                        command_id: cmd.id.clone(),
                    })
                    .await;
                Ok(if on {
                    "kill switch on: no new orders until released".into()
                } else {
                    "kill switch released".into()
                })
            }
            Err(e) => Err(e.to_string()),
        },
        Command::Token {
            account,
            access_token,
        } => match router {
            Some(r) if r.token(&account, access_token) => {
                Ok(format!("new token for {account}: checking the session"))
            }
            Some(_) => Err(format!("{account} is not a live account")),
            None => Err("not in live mode: tokens are for live accounts".into()),
        },
        Command::Pipelines { .. } | Command::Reload | Command::Shutdown => return, // the engine's and the host's
    };
    match result {
        // Answered already by the command reader (a kill while the journal was stuck).
        _ if acked => {}
        Ok(detail) => events.ack(&cmd.id, &cmd.cmd, true, &detail).await,
        Err(detail) => events.ack(&cmd.id, &cmd.cmd, false, &detail).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two bars of RELIANCE, the second 25 % above the first (beyond the 20 % band), from a
    /// feed's pipeline and from a replay's: the feed's gap bar moves orders from its first
    /// bar (the engine believed it where the ticks came in); the replay's is held back by the
    /// band until it persists.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_gap_the_feed_believed_moves_orders_from_its_first_bar() {
        let bus = Bus::embedded("t");
        let events = Events::new(bus.clone(), "orders");
        let mut guards = PriceGuards::new(&crate::config::MarketSection::default());
        let mut merge = Merge::default();
        merge.set_ordered(["replay".to_owned()]);
        let entry = |pipeline: &str, minute: i64, price: i64| {
            let ts = 1_704_083_400_000 + minute * 60_000;
            let p = rust_decimal::Decimal::from(price);
            let q = QuotesMessage {
                v: crate::bus::message::SCHEMA_VERSION,
                kind: "quotes".into(),
                id: format!("{pipeline}/{ts}"),
                ts,
                quotes: vec![Quote {
                    instrument: "RELIANCE".into(),
                    open: p,
                    high: p,
                    low: p,
                    close: p,
                    bid: None,
                    ask: None,
                }],
                after_signal: None,
                last: false,
            };
            LogEntry {
                entry_id: format!("{ts}-0"),
                payload: serde_json::to_string(&q).unwrap(),
            }
        };
        let batch = vec![
            entry("feed", 0, 1_000),
            entry("replay", 0, 1_000),
            entry("feed", 1, 1_250),
            entry("replay", 1, 1_250),
            // Three times the price is never believed, from either.
            entry("feed", 2, 3_900),
            entry("replay", 2, 3_900),
        ];
        take_prices(batch, &mut merge, &mut guards, &events).await;
        let priced = |merge: &mut Merge, pipeline: &str| {
            let mut out = Vec::new();
            while let Some(h) = merge.pop_prices(pipeline) {
                out.push(
                    h.quotes
                        .quotes
                        .iter()
                        .map(|q| q.close.to_string())
                        .collect::<Vec<_>>(),
                );
            }
            out
        };
        let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            priced(&mut merge, "feed"),
            vec![s(&["1000"]), s(&["1250"]), s(&[])]
        );
        assert_eq!(
            priced(&mut merge, "replay"),
            vec![s(&["1000"]), s(&[]), s(&[])]
        );
    }

    /// A full disk under the journal is an alert naming the journal's file, not a silent retry;
    /// the write is retried until space is made.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_disk_is_an_alert_naming_the_journal() {
        let bus = Bus::embedded("t");
        let mut sub = bus.subscribe(&[bus.channels().events()]).await.unwrap();
        let events = Events::new(bus.clone(), "orders");
        let (_stop_tx, stop) = watch::channel(false);
        let mut wait = Wait::new(stop);
        let mut failures = 2;
        let out = until_recorded(&events, "a signal", &mut wait, || {
            if failures == 0 {
                return Ok(Vec::new());
            }
            failures -= 1;
            Err(crate::orders::OrderError::Journal {
                path: "/var/tradehost/journal.sqlite".into(),
                source: rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
                    Some("database or disk is full".into()),
                ),
            })
        })
        .await;
        assert_eq!(out, Some(Vec::new()), "retried until it was written");
        let (_, first) = tokio::time::timeout(Duration::from_secs(5), sub.recv())
            .await
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_str(&first).unwrap();
        assert_eq!(
            (
                v["event"].as_str(),
                v["journal"].as_str(),
                v["alert"].as_bool()
            ),
            (
                Some("journal_full"),
                Some("/var/tradehost/journal.sqlite"),
                Some(true)
            ),
            "{v}"
        );
    }
}
