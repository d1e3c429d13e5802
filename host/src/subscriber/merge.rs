//! The merge of the signal log and the price stream in event time.
//!
//! Prices and signals travel on different streams and may arrive in any
//! order. The engine logs, per pipeline, the prices of a bar, then the
//! signals of that bar, then the next bar's prices, which name the signal
//! logged before them. A signal waits until its pipeline's prices (or its
//! instrument's) have reached the signal's time (the prices the strategy
//! saw); a price message waits until the signal its pipeline logged just
//! before it is decided. So a decision never sees a stop or square-off caused
//! by later prices, nor misses one caused by earlier ones, however fast a
//! replay runs and however loaded the machine.
//!
//! Across pipelines, the replays (every source that is not a live feed) are
//! merged in event time too: what pipeline A did at time t goes only when
//! every other replay has passed t (or has ended), in the order (time, prices
//! before signals, pipeline id). Two replays sharing an account (one
//! position limit, one daily-loss breaker, one capital) so decide the same on
//! every run, whichever pipeline ran ahead. A live feed's pipelines take their
//! turn as they arrive: their time is the wall clock's.
//!
//! What may wait for something that will never come (a price message trimmed
//! away before it was read, a replay paused or quarantined) goes through after
//! [`PRICE_WAIT`], counted only while the readers have caught up with their
//! streams: a backlog is never a missing counterpart.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use crate::bus::LogEntry;
use crate::bus::message::{QuotesMessage, SignalMessage};

/// How long something held waits for its counterpart once the readers have
/// caught up (see the module's documentation).
pub const PRICE_WAIT: Duration = Duration::from_secs(10);

/// What the merge needs to know of the order side's progress.
pub trait Clocks {
    /// Whether the signal has been decided (for every account).
    fn is_decided(&self, signal_id: &str) -> bool;
    /// Time of the latest price message applied from `pipeline`.
    fn pipeline_clock(&self, pipeline: &str) -> Option<i64>;
    /// Time of the latest price applied for `instrument`.
    fn price_clock(&self, instrument: &str) -> Option<i64>;
    /// Whether `pipeline`'s source has ended (its last price message is applied).
    fn is_finished(&self, pipeline: &str) -> bool;
}

/// A price message read from the stream, waiting for the signal logged before it.
#[derive(Debug)]
pub struct HeldPrices {
    /// The prices.
    pub quotes: QuotesMessage,
    /// Its entry in the price stream (the cursor to record with it).
    pub entry_id: Option<String>,
    since: Instant,
    arrival: u64,
}

#[derive(Debug)]
struct HeldSignal {
    entry: LogEntry,
    instrument: String,
    ts: i64,
    since: Instant,
    arrival: u64,
}

/// One pipeline's held prices and signals, each in the order they were logged.
#[derive(Debug, Default)]
struct Queue {
    prices: VecDeque<HeldPrices>,
    signals: VecDeque<HeldSignal>,
}

/// What goes next (see [`Merge::pick`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    /// The first price message held for this pipeline: apply it, then [`Merge::pop_prices`].
    Prices(String),
    /// The first signal held for this pipeline: [`Merge::pop_signal`] and decide it.
    Signal(String),
    /// A signal log entry that is not a signal: [`Merge::pop_malformed`] and report it.
    Malformed,
}

/// Where an item stands in event time: time, prices (0) before signals (1), pipeline.
type Key<'a> = (i64, u8, &'a str);

/// The key of a pipeline's end: after everything else it did, and after every other replay.
const END: i64 = i64::MAX;

/// Signals and prices held until their turn.
#[derive(Debug, Default)]
pub struct Merge {
    queues: BTreeMap<String, Queue>,
    malformed: VecDeque<LogEntry>,
    /// Pipelines merged with each other in event time (the replays).
    ordered: HashSet<String>,
    arrivals: u64,
    signals: usize,
    prices: usize,
}

impl Merge {
    /// The pipelines merged with each other in event time (every replay of the
    /// configuration); the others take their turn as they arrive.
    pub fn set_ordered(&mut self, pipelines: impl IntoIterator<Item = String>) {
        self.ordered = pipelines.into_iter().collect();
    }

    /// Whether `pipeline` is merged in event time (a replay: its source is not a live feed).
    #[must_use]
    pub fn is_ordered(&self, pipeline: &str) -> bool {
        self.ordered.contains(pipeline)
    }

    fn arrival(&mut self) -> u64 {
        self.arrivals += 1;
        self.arrivals
    }

    /// Hold a batch read from the signal log.
    pub fn hold_signals(&mut self, batch: Vec<LogEntry>) {
        let since = Instant::now();
        for entry in batch {
            match SignalMessage::parse(&entry.payload) {
                Ok(s) => {
                    let arrival = self.arrival();
                    self.queues
                        .entry(s.pipeline)
                        .or_default()
                        .signals
                        .push_back(HeldSignal {
                            entry,
                            instrument: s.instrument,
                            ts: s.ts,
                            since,
                            arrival,
                        });
                    self.signals += 1;
                }
                Err(_) => self.malformed.push_back(entry),
            }
        }
    }

    /// Hold a price message read from the stream (as entry `entry_id`).
    pub fn hold_prices(&mut self, quotes: QuotesMessage, entry_id: Option<String>) {
        let arrival = self.arrival();
        let pipeline = quotes.pipeline().to_owned();
        self.queues
            .entry(pipeline)
            .or_default()
            .prices
            .push_back(HeldPrices {
                quotes,
                entry_id,
                since: Instant::now(),
                arrival,
            });
        self.prices += 1;
    }

    /// Signals held.
    #[must_use]
    pub fn held_signals(&self) -> usize {
        self.signals + self.malformed.len()
    }

    /// Price messages held.
    #[must_use]
    pub const fn held_prices(&self) -> usize {
        self.prices
    }

    /// Nothing held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.held_signals() == 0 && self.prices == 0
    }

    /// What goes next, if anything's turn has come (see the module's
    /// documentation). With `expire` (the readers caught up for
    /// [`PRICE_WAIT`]), something held that long goes through anyway.
    #[must_use]
    pub fn pick(&self, clocks: &impl Clocks, expire: bool) -> Option<Pick> {
        if !self.malformed.is_empty() {
            return Some(Pick::Malformed);
        }
        let long = |since: &Instant| expire && since.elapsed() >= PRICE_WAIT;
        // Each pipeline's next item in its own order, when ready: (key, arrival, pick, held long).
        let mut free: Option<(u64, Pick)> = None;
        let mut first: Option<(Key<'_>, Pick, bool)> = None;
        let mut bounds: Vec<(&str, Option<Key<'_>>)> = Vec::new();
        for (pipeline, q) in &self.queues {
            let p = pipeline.as_str();
            let prices = q.prices.front().filter(|h| {
                h.quotes
                    .after_signal
                    .as_deref()
                    .is_none_or(|id| clocks.is_decided(id))
                    || long(&h.since)
            });
            let signal = q.signals.front().filter(|h| {
                clocks.pipeline_clock(p).is_some_and(|t| t >= h.ts)
                    || clocks.price_clock(&h.instrument).is_some_and(|t| t >= h.ts)
                    || long(&h.since)
            });
            let prices = prices.map(|h| {
                (
                    (if h.quotes.last { END } else { h.quotes.ts }, 0, p),
                    h.arrival,
                    Pick::Prices(pipeline.clone()),
                    long(&h.since),
                )
            });
            let signal = signal.map(|h| {
                (
                    (h.ts, 1, p),
                    h.arrival,
                    Pick::Signal(pipeline.clone()),
                    long(&h.since),
                )
            });
            let ready = match (prices, signal) {
                (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
                (a, b) => a.or(b),
            };
            if !self.ordered.contains(p) {
                if let Some((_, arrival, pick, _)) = ready
                    && free.as_ref().is_none_or(|(a, _)| arrival < *a)
                {
                    free = Some((arrival, pick));
                }
                continue;
            }
            let bound = match &ready {
                Some((key, ..)) => Some(*key),
                None => lower_bound(clocks, p),
            };
            if !(q.prices.is_empty() && q.signals.is_empty() && clocks.is_finished(p)) {
                bounds.push((p, bound));
            }
            if let Some((key, _, pick, held_long)) = ready
                && first.as_ref().is_none_or(|(k, ..)| key < *k)
            {
                first = Some((key, pick, held_long));
            }
        }
        if let Some((_, pick)) = free {
            return Some(pick);
        }
        // The replays that hold nothing yet still bound what the others may do.
        for p in &self.ordered {
            if !self.queues.contains_key(p) && !clocks.is_finished(p) {
                bounds.push((p.as_str(), lower_bound(clocks, p)));
            }
        }
        let (key, pick, held_long) = first?;
        let passed = bounds.iter().all(|(p, bound)| {
            *p == key.2 || bound.is_some_and(|b| b.cmp(&key) == Ordering::Greater)
        });
        (passed || held_long).then_some(pick)
    }

    /// The first price message held for `pipeline`.
    #[must_use]
    pub fn prices_of(&self, pipeline: &str) -> Option<&HeldPrices> {
        self.queues.get(pipeline)?.prices.front()
    }

    /// Take the first price message held for `pipeline` (applied).
    pub fn pop_prices(&mut self, pipeline: &str) -> Option<HeldPrices> {
        let h = self.queues.get_mut(pipeline)?.prices.pop_front()?;
        self.prices -= 1;
        self.forget_if_empty(pipeline);
        Some(h)
    }

    /// Take the first signal held for `pipeline`.
    pub fn pop_signal(&mut self, pipeline: &str) -> Option<LogEntry> {
        let h = self.queues.get_mut(pipeline)?.signals.pop_front()?;
        self.signals -= 1;
        self.forget_if_empty(pipeline);
        Some(h.entry)
    }

    /// Take the first malformed signal log entry.
    pub fn pop_malformed(&mut self) -> Option<LogEntry> {
        self.malformed.pop_front()
    }

    fn forget_if_empty(&mut self, pipeline: &str) {
        if self
            .queues
            .get(pipeline)
            .is_some_and(|q| q.prices.is_empty() && q.signals.is_empty())
        {
            self.queues.remove(pipeline);
        }
    }

    /// Take the next item whose turn has come, in the merged order: for tests
    /// and for callers that decide a signal and apply prices alike.
    pub fn take(&mut self, clocks: &impl Clocks, expire: bool) -> Option<Taken> {
        match self.pick(clocks, expire)? {
            Pick::Prices(p) => self.pop_prices(&p).map(Taken::Prices),
            Pick::Signal(p) => self.pop_signal(&p).map(Taken::Signal),
            Pick::Malformed => self.pop_malformed().map(Taken::Signal),
        }
    }
}

/// An item taken from the merge.
#[derive(Debug)]
pub enum Taken {
    /// A price message.
    Prices(HeldPrices),
    /// A signal log entry.
    Signal(LogEntry),
}

/// The least a replay holding nothing ready may still produce: the signals of
/// its last applied prices' time (nothing known when none was applied).
fn lower_bound<'a>(clocks: &impl Clocks, pipeline: &'a str) -> Option<Key<'a>> {
    clocks.pipeline_clock(pipeline).map(|t| (t, 1, pipeline))
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;
    use crate::bus::message::{Quote, SCHEMA_VERSION};

    /// The order side, as the merge sees it: what it decided and applied.
    #[derive(Default)]
    struct Side {
        decided: HashSet<String>,
        pipelines: HashMap<String, i64>,
        finished: HashSet<String>,
    }

    impl Clocks for Side {
        fn is_decided(&self, id: &str) -> bool {
            self.decided.contains(id)
        }
        fn pipeline_clock(&self, p: &str) -> Option<i64> {
            self.pipelines.get(p).copied()
        }
        fn price_clock(&self, _: &str) -> Option<i64> {
            None
        }
        fn is_finished(&self, p: &str) -> bool {
            self.finished.contains(p)
        }
    }

    impl Side {
        /// Take everything whose turn has come, doing what the order side does with it;
        /// what was taken, as `<pipeline>:<p|s><minute>`.
        fn drain(&mut self, m: &mut Merge) -> Vec<String> {
            let mut out = Vec::new();
            while let Some(t) = m.take(self, false) {
                match t {
                    Taken::Prices(h) => {
                        let p = h.quotes.pipeline().to_owned();
                        if h.quotes.last {
                            self.finished.insert(p.clone());
                            out.push(format!("{p}:end"));
                        } else {
                            self.pipelines.insert(p.clone(), h.quotes.ts);
                            out.push(format!("{p}:p{}", minute(h.quotes.ts)));
                        }
                    }
                    Taken::Signal(e) => {
                        let v: serde_json::Value = serde_json::from_str(&e.payload).unwrap();
                        self.decided.insert(v["id"].as_str().unwrap().to_owned());
                        out.push(format!(
                            "{}:s{}",
                            v["pipeline"].as_str().unwrap(),
                            minute(v["ts"].as_i64().unwrap())
                        ));
                    }
                }
            }
            out
        }
    }

    /// Minute `n` of 2024-01-01's session.
    fn t(n: i64) -> i64 {
        1_704_080_700_000 + n * 60_000
    }

    fn minute(ts: i64) -> i64 {
        (ts - t(0)) / 60_000
    }

    fn signal(pipeline: &str, n: i64) -> LogEntry {
        let ts = t(n);
        let id = format!("{pipeline}/s@1/{ts}/0");
        let payload = serde_json::json!({ "v": SCHEMA_VERSION, "type": "signal", "id": id, "ts": ts, "pipeline": pipeline, "plugin": "s", "plugin_version": "1",
            "instrument": "NIFTY", "side": "buy", "reason": "" })
        .to_string();
        LogEntry {
            entry_id: format!("{pipeline}-{n}"),
            payload,
        }
    }

    fn prices(pipeline: &str, n: i64, after: Option<i64>) -> QuotesMessage {
        let ts = t(n);
        let q = Quote {
            instrument: "NIFTY".into(),
            open: 1.into(),
            high: 1.into(),
            low: 1.into(),
            close: 1.into(),
            bid: None,
            ask: None,
        };
        QuotesMessage {
            v: SCHEMA_VERSION,
            kind: "quotes".into(),
            id: format!("{pipeline}/{ts}"),
            ts,
            quotes: vec![q],
            after_signal: after.map(|n| format!("{pipeline}/s@1/{}/0", t(n))),
            last: false,
        }
    }

    fn end(pipeline: &str, n: i64, after: Option<i64>) -> QuotesMessage {
        QuotesMessage {
            quotes: Vec::new(),
            last: true,
            ..prices(pipeline, n, after)
        }
    }

    #[test]
    fn each_waits_for_its_counterpart_whatever_the_order_of_arrival() {
        let mut side = Side::default();
        let mut m = Merge::default();
        // The signal of bar 2 and the prices of bar 3 arrive before the prices of bar 2.
        m.hold_signals(vec![signal("a", 2)]);
        m.hold_prices(prices("a", 3, Some(2)), None);
        assert!(
            m.pick(&side, false).is_none(),
            "the signal's prices are not applied, and bar 3 waits for the signal of bar 2"
        );
        m.hold_prices(prices("a", 2, None), None);
        assert!(
            m.pick(&side, false).is_none(),
            "in stream order: bar 3 is first in line"
        );
        side.pipelines.insert("a".into(), t(2));
        assert_eq!(side.drain(&mut m), ["a:s2", "a:p3", "a:p2"]);
        assert!(m.is_empty());
    }

    #[test]
    fn a_waiting_live_pipeline_holds_only_its_own_signals_in_order() {
        let mut side = Side::default();
        side.pipelines.insert("b".into(), t(10));
        let mut m = Merge::default();
        m.hold_signals(vec![
            signal("a", 5),
            signal("b", 5),
            signal("a", 1),
            signal("b", 6),
        ]);
        assert_eq!(
            side.drain(&mut m),
            ["b:s5", "b:s6"],
            "b's signals go; a's later signal does not overtake its earlier one"
        );
        assert_eq!(m.held_signals(), 2);
        side.pipelines.insert("a".into(), t(5));
        assert_eq!(side.drain(&mut m), ["a:s5", "a:s1"]);
    }

    #[test]
    fn a_malformed_signal_is_let_through_to_be_reported() {
        let mut m = Merge::default();
        m.hold_signals(vec![LogEntry {
            entry_id: "1-0".into(),
            payload: "{not json".into(),
        }]);
        assert_eq!(m.pick(&Side::default(), false), Some(Pick::Malformed));
        assert_eq!(m.pop_malformed().map(|e| e.entry_id), Some("1-0".into()));
        assert!(m.is_empty());
    }

    /// Pipeline `p`'s stream for minutes `from..=to`, with a signal on each minute in `signals`.
    fn run(p: &str, from: i64, to: i64, signals: &[i64]) -> (Vec<QuotesMessage>, Vec<LogEntry>) {
        let (mut q, mut s, mut last) = (Vec::new(), Vec::new(), None);
        for n in from..=to {
            q.push(prices(p, n, last));
            if signals.contains(&n) {
                s.push(signal(p, n));
                last = Some(n);
            }
        }
        q.push(end(p, to, last));
        (q, s)
    }

    #[test]
    fn replays_are_merged_in_event_time_whichever_ran_ahead() {
        let (qa, sa) = run("a", 1, 4, &[2, 3]);
        let (qb, sb) = run("b", 1, 4, &[2]);
        let mut orders = Vec::new();
        for b_first in [false, true] {
            let mut side = Side::default();
            let mut m = Merge::default();
            m.set_ordered(["a".to_owned(), "b".to_owned()]);
            let (first, second) = if b_first {
                ((&qb, &sb), (&qa, &sa))
            } else {
                ((&qa, &sa), (&qb, &sb))
            };
            // One pipeline's whole run arrives before anything of the other's.
            for q in first.0 {
                m.hold_prices(q.clone(), None);
            }
            m.hold_signals(first.1.clone());
            let early = side.drain(&mut m);
            assert!(
                early.is_empty(),
                "nothing goes before the other replay is heard from: {early:?}"
            );
            for q in second.0 {
                m.hold_prices(q.clone(), None);
            }
            m.hold_signals(second.1.clone());
            let taken = side.drain(&mut m);
            assert!(m.is_empty(), "everything goes in the end");
            orders.push(taken);
        }
        let want = [
            "a:p1", "b:p1", "a:p2", "b:p2", "a:s2", "b:s2", "a:p3", "b:p3", "a:s3", "a:p4", "b:p4",
            "a:end", "b:end",
        ];
        assert_eq!(
            orders[0], want,
            "time, then prices before signals, then pipeline"
        );
        assert_eq!(orders[1], want, "the same whichever arrived first");
    }

    #[test]
    fn a_replay_waits_for_the_others_only_while_they_may_still_come_before_it() {
        let mut side = Side::default();
        let mut m = Merge::default();
        m.set_ordered(["a".to_owned(), "b".to_owned()]);
        // a applied minute 3 and may still log signals of 3: b's prices of 3 go, b's signal of 3 waits.
        side.pipelines.insert("a".into(), t(3));
        m.hold_prices(prices("b", 3, None), None);
        m.hold_signals(vec![signal("b", 3)]);
        assert_eq!(side.drain(&mut m), ["b:p3"]);
        // A live pipeline is not waited for and does not wait.
        m.hold_signals(vec![signal("live", 9)]);
        side.pipelines.insert("live".into(), t(9));
        assert_eq!(side.drain(&mut m), ["live:s9"]);
        // a's signal of 3 comes, then its prices of 4: both signals of 3 go, a's prices of 4
        // wait, since b may still log more signals of 3.
        m.hold_signals(vec![signal("a", 3)]);
        m.hold_prices(prices("a", 4, Some(3)), None);
        assert_eq!(side.drain(&mut m), ["a:s3", "b:s3"]);
        m.hold_prices(prices("b", 4, Some(3)), None);
        assert_eq!(side.drain(&mut m), ["a:p4", "b:p4"]);
        // b ended: a is no longer held by it, and b's end goes after everything a does.
        m.hold_prices(end("b", 4, Some(3)), None);
        m.hold_prices(prices("a", 5, Some(3)), None);
        assert_eq!(side.drain(&mut m), ["a:p5"]);
        m.hold_prices(end("a", 5, Some(3)), None);
        assert_eq!(side.drain(&mut m), ["a:end", "b:end"]);
        assert!(m.is_empty());
    }

    #[test]
    fn a_replay_not_heard_from_holds_the_others_until_the_wait_expires() {
        let side = Side::default();
        let mut m = Merge::default();
        m.set_ordered(["a".to_owned(), "silent".to_owned()]);
        m.hold_prices(prices("a", 1, None), None);
        assert!(m.pick(&side, false).is_none());
        assert!(m.pick(&side, true).is_none(), "held only just now");
    }
}
