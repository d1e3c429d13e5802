//! Monitoring: events and heartbeats on `<prefix>:events`, and the
//! `tradehost monitor` view that reads them back.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write as _;

use serde_json::{Value, json};

use crate::brokers::secrets::scrub;
use crate::bus::message::{MAX_ID_CHARS, envelope, event_id, now_ms, printable};
use crate::bus::{Bus, Subscription};

/// Publishes events for one role of the process.
#[derive(Debug, Clone)]
pub struct Events {
    bus: Bus,
    role: &'static str,
}

impl Events {
    /// Events from `role` (`engine`, `orders`, `host`) on `bus`.
    #[must_use]
    pub fn new(bus: Bus, role: &'static str) -> Self {
        Self { bus, role }
    }

    /// The bus events go to.
    #[must_use]
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Publish event `name` with `fields` (a JSON object); also logged.
    pub async fn emit(&self, name: &str, fields: Value) {
        let mut body = json!({ "event": name, "role": self.role });
        if let (Some(b), Value::Object(f)) = (body.as_object_mut(), fields) {
            b.extend(f);
        }
        let body = scrub_value(body);
        tracing::info!(target: "events", event = name, "{body}");
        let msg = envelope("event", &event_id(self.role), now_ms(), body);
        if let Err(e) = self.bus.publish(&self.bus.channels().events(), &msg).await {
            tracing::warn!("could not publish event {name}: {e}");
        }
    }

    /// Publish an `error` message: malformed input, a failure that changed nothing.
    pub async fn error(&self, source: &str, reason: &str) {
        let reason = &printable(&scrub(reason), EVENT_TEXT_CHARS);
        let source = &printable(source, EVENT_TEXT_CHARS);
        tracing::warn!(target: "events", source, "{reason}");
        let msg = envelope("error", &event_id(self.role), now_ms(), json!({ "source": source, "reason": reason, "role": self.role }));
        let _ = self.bus.publish(&self.bus.channels().events(), &msg).await;
    }

    /// Acknowledge a command.
    pub async fn ack(&self, command_id: &str, cmd: &str, ok: bool, detail: &str) {
        let detail = &printable(&scrub(detail), EVENT_TEXT_CHARS);
        let (command_id, cmd) = (&printable(&scrub(command_id), MAX_ID_CHARS), &printable(cmd, MAX_ID_CHARS));
        let msg = envelope(
            "command_ack",
            &format!("ack/{command_id}/{}", self.role),
            now_ms(),
            json!({ "command_id": command_id, "cmd": cmd, "ok": ok, "detail": detail, "role": self.role }),
        );
        tracing::info!(target: "events", command_id, cmd, ok, "{detail}");
        let _ = self.bus.publish(&self.bus.channels().events(), &msg).await;
    }

    /// Publish a heartbeat with `body` (counters, P&L, pipeline states).
    pub async fn heartbeat(&self, body: Value) {
        let mut b = json!({ "role": self.role });
        if let (Some(m), Value::Object(f)) = (b.as_object_mut(), body) {
            m.extend(f);
        }
        let msg = envelope("heartbeat", &event_id(self.role), now_ms(), b);
        let _ = self.bus.publish(&self.bus.channels().events(), &msg).await;
    }
}

/// Longest string an event carries: an event echoes input (a command id, a
/// broker's error text), and a 10 MB id must not become a 20 MB event.
const EVENT_TEXT_CHARS: usize = 2_000;

/// `v` with every string scrubbed of known secrets (first: a cut could split
/// a secret so that the scrubber no longer sees it), then made printable and capped.
fn scrub_value(v: Value) -> Value {
    match v {
        Value::String(s) => Value::String(printable(&scrub(&s), EVENT_TEXT_CHARS)),
        Value::Array(a) => Value::Array(a.into_iter().map(scrub_value).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, scrub_value(v))).collect()),
        other => other,
    }
}

/// What `tradehost monitor` has seen so far.
#[derive(Debug, Default)]
pub struct MonitorView {
    pipelines: BTreeMap<String, Value>,
    accounts: BTreeMap<String, Value>,
    signals: VecDeque<String>,
    orders: VecDeque<String>,
    notices: VecDeque<String>,
    mode: Option<String>,
}

const KEEP: usize = 12;

fn push(list: &mut VecDeque<String>, line: String) {
    if list.len() == KEEP {
        list.pop_front();
    }
    list.push_back(line);
}

/// Longest field shown in a line: ids and free text come from the bus and can be anything.
const FIELD_CHARS: usize = 200;

/// A field of a message, safe for the terminal (control characters escaped, length capped).
fn s(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::String(t) => printable(t, FIELD_CHARS),
        Value::Null => String::new(),
        other => printable(&other.to_string(), FIELD_CHARS),
    }
}

impl MonitorView {
    /// Take in one message; returns a one-line rendering of it.
    pub fn apply(&mut self, channel: &str, payload: &str) -> String {
        let Ok(v) = serde_json::from_str::<Value>(payload) else {
            let line = format!("{}: (not JSON) {}", printable(channel, FIELD_CHARS), printable(payload, FIELD_CHARS));
            push(&mut self.notices, line.clone());
            return line;
        };
        let time = crate::market::clock::format_iso_ist(v["ts"].as_i64().unwrap_or(0));
        match v["type"].as_str().unwrap_or("") {
            "signal" => {
                let line = format!(
                    "{} {} {} {} @ {} — {}",
                    &time[..19.min(time.len())],
                    s(&v, "pipeline"),
                    s(&v, "instrument"),
                    s(&v, "side"),
                    s(&v, "price"),
                    s(&v, "reason")
                );
                push(&mut self.signals, line.clone());
                line
            }
            "order" => {
                self.mode = Some(s(&v, "mode"));
                let line = format!(
                    "{} {} {} {} {} {} {}{}",
                    s(&v, "account"),
                    s(&v, "state"),
                    s(&v, "instrument"),
                    s(&v, "side"),
                    s(&v, "qty"),
                    s(&v, "client_order_id"),
                    v["price"].as_str().map(|p| format!("@ {p}")).unwrap_or_default(),
                    v["reason"].as_str().map(|r| format!(" ({r})")).unwrap_or_default()
                );
                push(&mut self.orders, line.clone());
                line
            }
            "heartbeat" => {
                if let Some(p) = v["pipelines"].as_object() {
                    self.pipelines.extend(p.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                if let Some(a) = v["accounts"].as_object() {
                    self.accounts.extend(a.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                if let Some(m) = v["mode"].as_str() {
                    self.mode = Some(m.to_owned());
                }
                format!("heartbeat from {}", s(&v, "role"))
            }
            kind => {
                let detail = match kind {
                    "event" => format!("{} {}", s(&v, "event"), s(&v, "pipeline")),
                    "command_ack" => format!("ack {} {} ok={} {}", s(&v, "command_id"), s(&v, "cmd"), s(&v, "ok"), s(&v, "detail")),
                    "error" => format!("ERROR {}: {}", s(&v, "source"), s(&v, "reason")),
                    _ => printable(payload, FIELD_CHARS),
                };
                let line = format!("{} {kind}: {detail}", &time[..19.min(time.len())]);
                if let (Some(p), "event") = (v["pipeline"].as_str(), kind) {
                    let state = self.pipelines.entry(p.to_owned()).or_insert_with(|| json!({}));
                    state["last_event"] = Value::String(s(&v, "event"));
                }
                push(&mut self.notices, line.clone());
                line
            }
        }
    }

    /// The whole screen.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = format!("tradehost monitor — mode {}\n\nPIPELINES\n", self.mode.as_deref().unwrap_or("?"));
        for (id, p) in &self.pipelines {
            let id = printable(id, 40);
            out += &format!(
                "  {id:<20} {:<10} events {:>8} signals {:>6} {}\n",
                s(p, "state"),
                s(p, "events_in"),
                s(p, "signals_out"),
                p["last_event"].as_str().unwrap_or("")
            );
        }
        out += "\nACCOUNTS (P&L)\n";
        for (id, a) in &self.accounts {
            let id = printable(id, 40);
            out += &format!("  {id:<20} realised {:>12} unrealised {:>12} positions {}\n", s(a, "realized"), s(a, "unrealized"), s(a, "positions"));
        }
        for (title, list) in [("LATEST SIGNALS", &self.signals), ("LATEST ORDERS", &self.orders), ("EVENTS", &self.notices)] {
            out += &format!("\n{title}\n");
            for line in list {
                out += &format!("  {line}\n");
            }
        }
        out
    }
}

/// Follow every channel and show a live view (a terminal) or one line per
/// message (a pipe), or the raw JSON with `raw`.
pub async fn follow(mut sub: Subscription, raw: bool) {
    use std::io::IsTerminal as _;
    let tty = std::io::stdout().is_terminal() && !raw;
    let mut view = MonitorView::default();
    let mut redraw = tokio::time::interval(std::time::Duration::from_millis(500));
    loop {
        tokio::select! {
            msg = sub.recv() => {
                let Some((channel, payload)) = msg else {
                    println!("monitor: the bus connection closed");
                    return;
                };
                let line = view.apply(&channel, &payload);
                if raw {
                    println!("{} {}", printable(&channel, FIELD_CHARS), printable(&payload, usize::MAX));
                } else if !tty {
                    println!("{line}");
                }
            }
            _ = redraw.tick(), if tty => {
                let mut out = std::io::stdout().lock();
                let _ = write!(out, "\x1b[2J\x1b[H{}", view.render());
                let _ = out.flush();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_keeps_pipelines_accounts_and_latest_lines() {
        let mut view = MonitorView::default();
        let hb = r#"{"v":1,"type":"heartbeat","id":"h","ts":0,"role":"orders","mode":"paper","accounts":{"paper-1":{"realized":"12.5","unrealized":"-3","positions":{"NIFTY":"1"}}}}"#;
        view.apply("trading:events", hb);
        let line = view.apply("trading:signals", r#"{"v":1,"type":"signal","id":"s","ts":0,"pipeline":"p1","instrument":"NIFTY","side":"buy","price":"100","reason":"why"}"#);
        assert!(line.contains("p1 NIFTY buy @ 100 — why"), "{line}");
        view.apply("trading:events", r#"{"v":1,"type":"error","id":"e","ts":0,"source":"commands","reason":"bad json"}"#);
        view.apply("trading:events", "not json");
        let screen = view.render();
        for want in ["mode paper", "paper-1", "realised         12.5", "NIFTY buy", "ERROR commands: bad json", "(not JSON)"] {
            assert!(screen.contains(want), "{want:?} missing from\n{screen}");
        }
    }
}
