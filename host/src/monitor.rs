//! Monitoring: the `tradehost monitor` view that reads back the events and
//! heartbeats on `<prefix>:events` (published by [`crate::bus::events`]).

use std::collections::{BTreeMap, VecDeque};
use std::io::Write as _;

use serde_json::{Value, json};

use crate::bus::Subscription;
pub use crate::bus::events::Events;
use crate::bus::message::printable;

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
            let line = format!(
                "{}: (not JSON) {}",
                printable(channel, FIELD_CHARS),
                printable(payload, FIELD_CHARS)
            );
            push(&mut self.notices, line.clone());
            return line;
        };
        let time = crate::domain::time::format_iso_ist(v["ts"].as_i64().unwrap_or(0));
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
                    v["price"]
                        .as_str()
                        .map(|p| format!("@ {p}"))
                        .unwrap_or_default(),
                    v["reason"]
                        .as_str()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                );
                push(&mut self.orders, line.clone());
                line
            }
            "heartbeat" => {
                if let Some(p) = v["pipelines"].as_object() {
                    self.pipelines
                        .extend(p.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                if let Some(a) = v["accounts"].as_object() {
                    self.accounts
                        .extend(a.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                if let Some(m) = v["mode"].as_str() {
                    self.mode = Some(m.to_owned());
                }
                format!("heartbeat from {}", s(&v, "role"))
            }
            kind => {
                let detail = match kind {
                    "event" => format!("{} {}", s(&v, "event"), s(&v, "pipeline")),
                    "command_ack" => format!(
                        "ack {} {} ok={} {}",
                        s(&v, "command_id"),
                        s(&v, "cmd"),
                        s(&v, "ok"),
                        s(&v, "detail")
                    ),
                    "error" => format!("ERROR {}: {}", s(&v, "source"), s(&v, "reason")),
                    _ => printable(payload, FIELD_CHARS),
                };
                let line = format!("{} {kind}: {detail}", &time[..19.min(time.len())]);
                if let (Some(p), "event") = (v["pipeline"].as_str(), kind) {
                    let state = self
                        .pipelines
                        .entry(p.to_owned())
                        .or_insert_with(|| json!({}));
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
        let mut out = format!(
            "tradehost monitor — mode {}\n\nPIPELINES\n",
            self.mode.as_deref().unwrap_or("?")
        );
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
            out += &format!(
                "  {id:<20} realised {:>12} unrealised {:>12} positions {}\n",
                s(a, "realized"),
                s(a, "unrealized"),
                s(a, "positions")
            );
        }
        for (title, list) in [
            ("LATEST SIGNALS", &self.signals),
            ("LATEST ORDERS", &self.orders),
            ("EVENTS", &self.notices),
        ] {
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
        view.apply(
            "trading:events",
            r#"{"v":1,"type":"error","id":"e","ts":0,"source":"commands","reason":"bad json"}"#,
        );
        view.apply("trading:events", "not json");
        let screen = view.render();
        for want in [
            "mode paper",
            "paper-1",
            "realised         12.5",
            "NIFTY buy",
            "ERROR commands: bad json",
            "(not JSON)",
        ] {
            assert!(screen.contains(want), "{want:?} missing from\n{screen}");
        }
    }
}
