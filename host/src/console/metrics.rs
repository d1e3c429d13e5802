//! `/metrics`: what the console sees on the bus, in Prometheus' text format
//! (`prometheus-client`, the Prometheus project's own Rust client).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::Value;

type Labels = Vec<(String, String)>;

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
            registry: Registry::default(),
        };
        registry.register("tradehost_signals", "Signals published, per pipeline", m.signals.clone());
        registry.register("tradehost_events", "Events published, per event name", m.events.clone());
        registry.register("tradehost_order_transitions", "Order messages, per state reached", m.orders.clone());
        registry.register("tradehost_refusals", "Orders and signals refused, per rule", m.refusals.clone());
        registry.register("tradehost_fills", "Fills, per account", m.fills.clone());
        registry.register("tradehost_console_actions", "Actions taken in the console, per action", m.actions.clone());
        registry.register("tradehost_console_logins_refused", "Console logins refused, per reason", m.logins_refused.clone());
        registry.register("tradehost_last_message_timestamp_seconds", "When the console last saw a message on the bus (wall clock)", m.last_message.clone());
        Self { registry, ..m }
    }
}

fn label(key: &str, value: &str) -> Labels {
    vec![(key.to_owned(), crate::bus::message::printable(value, 64))]
}

impl Metrics {
    /// Count one bus message.
    pub fn observe(&self, v: &Value) {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        self.last_message.set(now);
        match v["type"].as_str().unwrap_or_default() {
            "signal" => {
                self.signals.get_or_create(&label("pipeline", v["pipeline"].as_str().unwrap_or("?"))).inc();
            }
            "order" => {
                let state = v["state"].as_str().unwrap_or("?");
                self.orders.get_or_create(&label("state", state)).inc();
                if state == "filled" {
                    self.fills.get_or_create(&label("account", v["account"].as_str().unwrap_or("?"))).inc();
                }
            }
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

    /// Count an action taken in the console.
    pub fn action(&self, action: &str) {
        self.actions.get_or_create(&label("action", action)).inc();
    }

    /// Count a refused login.
    pub fn login_refused(&self, reason: &str) {
        self.logins_refused.get_or_create(&label("reason", reason)).inc();
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
