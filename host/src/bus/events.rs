//! The event publisher: events, errors, command acknowledgements and heartbeats
//! on `<prefix>:events`, scrubbed of secrets and capped in length.

use serde_json::{Value, json};

use crate::bus::message::{MAX_ID_CHARS, envelope, event_id, now_ms, printable};
use crate::bus::Bus;
use crate::domain::secret::scrub;

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
