//! `/metrics`: what the console sees on the bus, in Prometheus' text format
//! (`prometheus-client`, the Prometheus project's own Rust client). Counters of the
//! messages it sees, and what each service reports in its heartbeat: latency
//! histograms (tick to signal per pipeline, signal to order, journal commit), each
//! pipeline's feed staleness and its plugin's fuel and memory, Redis reconnects.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::Value;

type Labels = Vec<(String, String)>;

/// A histogram as a heartbeat carries it (see `domain::stats::Histogram::to_json`).
#[derive(Debug, Clone, Default)]
struct Reported {
    bounds_us: Vec<u64>,
    counts: Vec<u64>,
    sum_us: u64,
}

impl Reported {
    fn of(v: &Value) -> Option<Self> {
        let list = |k: &str| {
            v[k].as_array()
                .map(|a| a.iter().filter_map(Value::as_u64).collect::<Vec<u64>>())
        };
        let (bounds_us, counts) = (list("bounds_us")?, list("counts")?);
        (counts.len() == bounds_us.len() + 1).then(|| Self {
            bounds_us,
            counts,
            sum_us: v["sum_us"].as_u64().unwrap_or(0),
        })
    }

    fn encode(
        &self,
        family: &mut prometheus_client::encoding::MetricEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        #[allow(clippy::cast_precision_loss)]
        let seconds = |us: u64| us as f64 / 1e6;
        let buckets: Vec<(f64, u64)> = self
            .bounds_us
            .iter()
            .map(|b| seconds(*b))
            .chain(std::iter::once(f64::MAX))
            .zip(self.counts.iter().copied())
            .collect();
        let count = self.counts.iter().fold(0u64, |a, c| a.saturating_add(*c));
        family.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            seconds(self.sum_us),
            count,
            &buckets,
            None,
        )
    }
}

/// The latest each service reported in its heartbeat.
#[derive(Debug, Default)]
struct Heartbeats {
    tick_to_signal: std::collections::BTreeMap<String, Reported>,
    last_event_wall_ms: std::collections::BTreeMap<String, i64>,
    fuel: std::collections::BTreeMap<String, u64>,
    memory: std::collections::BTreeMap<String, u64>,
    busy_us: std::collections::BTreeMap<String, u64>,
    signal_to_order: Option<Reported>,
    journal_commit: Option<Reported>,
    reconnects: std::collections::BTreeMap<String, u64>,
}

/// A collector over [`Heartbeats`]: encoded at each scrape.
#[derive(Debug, Default)]
struct FromHeartbeats(std::sync::Mutex<Heartbeats>);

impl prometheus_client::collector::Collector for FromHeartbeats {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::metrics::MetricType::{Counter as C, Gauge as G, Histogram as H};
        let Ok(h) = self.0.lock() else { return Ok(()) };
        let now = crate::domain::time::now_ms();
        {
            let mut m = encoder.encode_descriptor(
                "tradehost_tick_to_signal_seconds",
                "From a pipeline taking a market event to its signal on the bus",
                None,
                H,
            )?;
            for (p, hist) in &h.tick_to_signal {
                hist.encode(&mut m.encode_family(&label("pipeline", p))?)?;
            }
        }
        for (name, help, hist) in [
            (
                "tradehost_signal_to_order_seconds",
                "From the orders service taking a signal off the log to its orders on the bus",
                &h.signal_to_order,
            ),
            (
                "tradehost_journal_commit_seconds",
                "Commit times of the orders journal",
                &h.journal_commit,
            ),
        ] {
            if let Some(hist) = hist {
                hist.encode(&mut encoder.encode_descriptor(name, help, None, H)?)?;
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "tradehost_feed_staleness_seconds",
                "Time since a pipeline last took a market event (wall clock)",
                None,
                G,
            )?;
            for (p, at) in h.last_event_wall_ms.iter().filter(|(_, at)| **at > 0) {
                #[allow(clippy::cast_precision_loss)]
                let age = now.saturating_sub(*at).max(0) as f64 / 1000.0;
                m.encode_family(&label("pipeline", p))?.encode_gauge(&age)?;
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "tradehost_plugin_fuel",
                "Fuel a pipeline's strategy instance has burned",
                None,
                C,
            )?;
            for (p, fuel) in &h.fuel {
                m.encode_family(&label("pipeline", p))?
                    .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(
                        fuel, None,
                    )?;
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "tradehost_plugin_busy_seconds",
                "Time a pipeline's strategy instance has spent in its calls",
                None,
                C,
            )?;
            for (p, us) in &h.busy_us {
                #[allow(clippy::cast_precision_loss)]
                let seconds = *us as f64 / 1e6;
                m.encode_family(&label("pipeline", p))?
                    .encode_counter::<prometheus_client::encoding::NoLabelSet, _, f64>(
                        &seconds, None,
                    )?;
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "tradehost_plugin_memory_bytes",
                "Linear memory a pipeline's strategy holds",
                None,
                G,
            )?;
            for (p, bytes) in &h.memory {
                m.encode_family(&label("pipeline", p))?
                    .encode_gauge(bytes)?;
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "tradehost_redis_reconnects",
                "Times Redis came back after it was found away, per service",
                None,
                C,
            )?;
            for (role, n) in &h.reconnects {
                m.encode_family(&label("service", role))?
                    .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(n, None)?;
            }
        }
        Ok(())
    }
}

/// The console's counters.
pub(super) struct Metrics {
    registry: Registry,
    signals: Family<Labels, Counter>,
    events: Family<Labels, Counter>,
    orders: Family<Labels, Counter>,
    refusals: Family<Labels, Counter>,
    fills: Family<Labels, Counter>,
    actions: Family<Labels, Counter>,
    logins_refused: Family<Labels, Counter>,
    last_message: Gauge<f64, std::sync::atomic::AtomicU64>,
    heartbeats: std::sync::Arc<FromHeartbeats>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let m = Self {
            signals: Family::default(),
            events: Family::default(),
            orders: Family::default(),
            refusals: Family::default(),
            fills: Family::default(),
            actions: Family::default(),
            logins_refused: Family::default(),
            last_message: Gauge::default(),
            heartbeats: std::sync::Arc::default(),
            registry: Registry::default(),
        };
        registry.register_collector(Box::new(m.heartbeats.clone()));
        registry.register(
            "tradehost_signals",
            "Signals published, per pipeline",
            m.signals.clone(),
        );
        registry.register(
            "tradehost_events",
            "Events published, per event name",
            m.events.clone(),
        );
        registry.register(
            "tradehost_order_transitions",
            "Order messages, per state reached",
            m.orders.clone(),
        );
        registry.register(
            "tradehost_refusals",
            "Orders and signals refused, per rule",
            m.refusals.clone(),
        );
        registry.register("tradehost_fills", "Fills, per account", m.fills.clone());
        registry.register(
            "tradehost_console_actions",
            "Actions taken in the console, per action",
            m.actions.clone(),
        );
        registry.register(
            "tradehost_console_logins_refused",
            "Console logins refused, per reason",
            m.logins_refused.clone(),
        );
        registry.register(
            "tradehost_last_message_timestamp_seconds",
            "When the console last saw a message on the bus (wall clock)",
            m.last_message.clone(),
        );
        Self { registry, ..m }
    }
}

fn label(key: &str, value: &str) -> Labels {
    vec![(key.to_owned(), crate::bus::message::printable(value, 64))]
}

impl Metrics {
    /// Count one bus message.
    pub fn observe(&self, v: &Value) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.last_message.set(now);
        match v["type"].as_str().unwrap_or_default() {
            "signal" => {
                self.signals
                    .get_or_create(&label("pipeline", v["pipeline"].as_str().unwrap_or("?")))
                    .inc();
            }
            "order" => {
                let state = v["state"].as_str().unwrap_or("?");
                self.orders.get_or_create(&label("state", state)).inc();
                if state == "filled" {
                    self.fills
                        .get_or_create(&label("account", v["account"].as_str().unwrap_or("?")))
                        .inc();
                }
            }
            "heartbeat" => self.heartbeat(v),
            _ => {
                if let Some(event) = v["event"].as_str() {
                    self.events.get_or_create(&label("event", event)).inc();
                    if let Some(rule) = v["rule"].as_str() {
                        self.refusals.get_or_create(&label("rule", rule)).inc();
                    }
                }
            }
        }
    }

    /// Keep what a service's heartbeat reports.
    fn heartbeat(&self, v: &Value) {
        let Ok(mut h) = self.heartbeats.0.lock() else {
            return;
        };
        let role = crate::bus::message::printable(v["role"].as_str().unwrap_or("?"), 32);
        if let Some(n) = v["redis_reconnects"].as_u64() {
            h.reconnects.insert(role, n);
        }
        for (p, stats) in v["pipelines"].as_object().into_iter().flatten().take(500) {
            if let Some(r) = Reported::of(&stats["tick_to_signal"]) {
                h.tick_to_signal.insert(p.clone(), r);
            }
            if let Some(at) = stats["last_event_wall_ms"].as_i64() {
                h.last_event_wall_ms.insert(p.clone(), at);
            }
            if let Some(f) = stats["fuel_total"].as_u64() {
                h.fuel.insert(p.clone(), f);
            }
            if let Some(m) = stats["memory_bytes"].as_u64() {
                h.memory.insert(p.clone(), m);
            }
            if let Some(us) = stats["busy_us"].as_u64() {
                h.busy_us.insert(p.clone(), us);
            }
        }
        if let Some(r) = Reported::of(&v["signal_to_order"]) {
            h.signal_to_order = Some(r);
        }
        if let Some(r) = Reported::of(&v["journal_commit"]) {
            h.journal_commit = Some(r);
        }
    }

    /// Count an action taken in the console.
    pub fn action(&self, action: &str) {
        self.actions.get_or_create(&label("action", action)).inc();
    }

    /// Count a refused login.
    pub fn login_refused(&self, reason: &str) {
        self.logins_refused
            .get_or_create(&label("reason", reason))
            .inc();
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn heartbeats_become_histograms_gauges_and_counters() {
        let m = Metrics::default();
        let hist = crate::domain::stats::Histogram::new();
        hist.observe(std::time::Duration::from_micros(80));
        hist.observe(std::time::Duration::from_millis(3));
        let now = crate::domain::time::now_ms();
        m.observe(&json!({ "type": "heartbeat", "role": "engine", "redis_reconnects": 2,
            "pipelines": { "nifty-ma": { "tick_to_signal": hist.to_json(), "last_event_wall_ms": now - 4_000, "fuel_total": 123_456, "memory_bytes": 1_114_112, "busy_us": 2_500_000 } } }));
        m.observe(&json!({ "type": "heartbeat", "role": "orders", "redis_reconnects": 0, "signal_to_order": hist.to_json(), "journal_commit": hist.to_json() }));
        let text = m.render();
        for line in [
            "tradehost_tick_to_signal_seconds_count{pipeline=\"nifty-ma\"} 2",
            "tradehost_tick_to_signal_seconds_bucket{le=\"0.0001\",pipeline=\"nifty-ma\"} 1",
            "tradehost_tick_to_signal_seconds_bucket{le=\"0.005\",pipeline=\"nifty-ma\"} 2",
            "tradehost_tick_to_signal_seconds_bucket{le=\"+Inf\",pipeline=\"nifty-ma\"} 2",
            "tradehost_signal_to_order_seconds_count 2",
            "tradehost_journal_commit_seconds_sum 0.00308",
            "tradehost_plugin_fuel_total{pipeline=\"nifty-ma\"} 123456",
            "tradehost_plugin_memory_bytes{pipeline=\"nifty-ma\"} 1114112",
            "tradehost_plugin_busy_seconds_total{pipeline=\"nifty-ma\"} 2.5",
            "tradehost_redis_reconnects_total{service=\"engine\"} 2",
            "tradehost_redis_reconnects_total{service=\"orders\"} 0",
        ] {
            assert!(text.contains(line), "{line} not in:\n{text}");
        }
        let stale: f64 = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("tradehost_feed_staleness_seconds{pipeline=\"nifty-ma\"} ")
            })
            .unwrap()
            .parse()
            .unwrap();
        assert!((4.0..60.0).contains(&stale), "{stale}");
        assert!(text.trim_end().ends_with("# EOF"));
    }
}
