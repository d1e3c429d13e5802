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
//! replay runs and however loaded the machine. What may wait for something
//! that will never come (a price message trimmed away before it was read) goes
//! through after [`PRICE_WAIT`], counted only while the readers have caught up
//! with their streams: a backlog is never a missing counterpart.

use std::collections::{HashSet, VecDeque};
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
}

/// A price message read from the stream, waiting for the signal logged before it.
#[derive(Debug)]
pub struct HeldPrices {
    /// The prices.
    pub quotes: QuotesMessage,
    /// Its entry in the price stream (the cursor to record with it).
    pub entry_id: Option<String>,
    since: Instant,
}

#[derive(Debug)]
struct HeldSignal {
    entry: LogEntry,
    /// Pipeline, instrument and time; `None` for a malformed entry (let through to be reported).
    key: Option<(String, String, i64)>,
    since: Instant,
}

/// Signals and prices held until their turn.
#[derive(Debug, Default)]
pub struct Merge {
    signals: VecDeque<HeldSignal>,
    prices: VecDeque<HeldPrices>,
}

impl Merge {
    /// Hold a batch read from the signal log.
    pub fn hold_signals(&mut self, batch: Vec<LogEntry>) {
        let now = Instant::now();
        self.signals.extend(batch.into_iter().map(|entry| {
            let key = SignalMessage::parse(&entry.payload).ok().map(|s| (s.pipeline, s.instrument, s.ts));
            HeldSignal { entry, key, since: now }
        }));
    }

    /// Hold a price message read from the stream (as entry `entry_id`).
    pub fn hold_prices(&mut self, quotes: QuotesMessage, entry_id: Option<String>) {
        self.prices.push_back(HeldPrices { quotes, entry_id, since: Instant::now() });
    }

    /// Signals held.
    #[must_use]
    pub fn held_signals(&self) -> usize {
        self.signals.len()
    }

    /// Price messages held.
    #[must_use]
    pub fn held_prices(&self) -> usize {
        self.prices.len()
    }

    /// Nothing held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.signals.is_empty() && self.prices.is_empty()
    }

    /// The price message first in line, when its turn has come; apply it, then [`Merge::pop_prices`].
    #[must_use]
    pub fn ready_prices(&self, clocks: &impl Clocks, expire: bool) -> Option<&HeldPrices> {
        let h = self.prices.front()?;
        let ready = h.quotes.after_signal.as_deref().is_none_or(|id| clocks.is_decided(id)) || (expire && h.since.elapsed() >= PRICE_WAIT);
        ready.then_some(h)
    }

    /// Drop the price message first in line (applied).
    pub fn pop_prices(&mut self) {
        self.prices.pop_front();
    }

    /// The next signal whose turn has come, in log order per pipeline; a
    /// pipeline waiting for its prices does not hold up the others. With
    /// `expire` (the readers caught up for [`PRICE_WAIT`]), one held that long
    /// goes through anyway.
    pub fn take_signal(&mut self, clocks: &impl Clocks, expire: bool) -> Option<LogEntry> {
        let mut blocked: HashSet<&str> = HashSet::new();
        let mut found = None;
        for (i, h) in self.signals.iter().enumerate() {
            let Some((pipeline, instrument, ts)) = &h.key else {
                found = Some(i);
                break;
            };
            let priced = clocks.pipeline_clock(pipeline).is_some_and(|t| t >= *ts) || clocks.price_clock(instrument).is_some_and(|t| t >= *ts);
            let ready = priced || (expire && h.since.elapsed() >= PRICE_WAIT);
            if ready && !blocked.contains(pipeline.as_str()) {
                found = Some(i);
                break;
            }
            blocked.insert(pipeline);
        }
        self.signals.remove(found?).map(|h| h.entry)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;
    use crate::bus::message::{Quote, SCHEMA_VERSION};

    #[derive(Default)]
    struct Side {
        decided: HashSet<String>,
        pipelines: HashMap<String, i64>,
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
    }

    /// Minute `n` of 2024-01-01's session.
    fn t(n: i64) -> i64 {
        1_704_080_700_000 + n * 60_000
    }

    fn signal(pipeline: &str, n: i64) -> LogEntry {
        let ts = t(n);
        let id = format!("{pipeline}/s@1/{ts}/0");
        let payload = serde_json::json!({ "v": SCHEMA_VERSION, "type": "signal", "id": id, "ts": ts, "pipeline": pipeline, "plugin": "s", "plugin_version": "1",
            "instrument": "NIFTY", "side": "buy", "reason": "" })
        .to_string();
        LogEntry { entry_id: format!("{pipeline}-{n}"), payload }
    }

    fn prices(pipeline: &str, n: i64, after: Option<i64>) -> QuotesMessage {
        let ts = t(n);
        let q = Quote { instrument: "NIFTY".into(), open: 1.into(), high: 1.into(), low: 1.into(), close: 1.into(), bid: None, ask: None };
        QuotesMessage { v: SCHEMA_VERSION, kind: "quotes".into(), id: format!("{pipeline}/{ts}"), ts, quotes: vec![q], after_signal: after.map(|n| format!("{pipeline}/s@1/{}/0", t(n))) }
    }

    #[test]
    fn each_waits_for_its_counterpart_whatever_the_order_of_arrival() {
        let mut side = Side::default();
        let mut m = Merge::default();
        // The signal of bar 2 and the prices of bar 3 arrive before the prices of bar 2.
        m.hold_signals(vec![signal("a", 2)]);
        m.hold_prices(prices("a", 3, Some(2)), None);
        assert!(m.take_signal(&side, false).is_none(), "the strategy's prices have not been applied");
        assert!(m.ready_prices(&side, false).is_none(), "bar 3 waits for the signal of bar 2");
        // Even after the wait, as long as the readers have not caught up.
        m.hold_prices(prices("a", 2, None), None);
        assert!(m.ready_prices(&side, false).is_none(), "in stream order: bar 3 is first in line");
        side.pipelines.insert("a".into(), t(2));
        let e = m.take_signal(&side, false).expect("priced");
        side.decided.insert(serde_json::from_str::<serde_json::Value>(&e.payload).unwrap()["id"].as_str().unwrap().to_owned());
        assert_eq!(m.ready_prices(&side, false).map(|h| h.quotes.ts), Some(t(3)));
        m.pop_prices();
        assert_eq!(m.ready_prices(&side, false).map(|h| h.quotes.ts), Some(t(2)));
        m.pop_prices();
        assert!(m.is_empty());
    }

    #[test]
    fn a_waiting_pipeline_holds_only_its_own_signals_in_order() {
        let mut side = Side::default();
        side.pipelines.insert("b".into(), t(10));
        let mut m = Merge::default();
        m.hold_signals(vec![signal("a", 5), signal("b", 5), signal("a", 1), signal("b", 6)]);
        let ids: Vec<String> = std::iter::from_fn(|| m.take_signal(&side, false)).map(|e| e.entry_id).collect();
        assert_eq!(ids, ["b-5", "b-6"], "b's signals go; a's later signal does not overtake its earlier one");
        assert_eq!(m.held_signals(), 2);
        side.pipelines.insert("a".into(), t(5));
        let ids: Vec<String> = std::iter::from_fn(|| m.take_signal(&side, false)).map(|e| e.entry_id).collect();
        assert_eq!(ids, ["a-5", "a-1"]);
    }

    #[test]
    fn a_malformed_signal_is_let_through_to_be_reported() {
        let mut m = Merge::default();
        m.hold_signals(vec![LogEntry { entry_id: "1-0".into(), payload: "{not json".into() }]);
        assert_eq!(m.take_signal(&Side::default(), false).map(|e| e.entry_id), Some("1-0".into()));
    }
}
