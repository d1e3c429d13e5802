//! Telegram alerts: fills, stops hit, risk breakers tripped, plugins failed,
//! tokens expired, orders rejected and positions that disagree with the broker, read off the bus and sent through the
//! Bot API (`POST <base>/bot<token>/sendMessage`).
//!
//! Alerts are routed to the `[telegram] chat_id` and to each account's
//! `[accounts.notify] telegram_chat`, each with its own choice of alert kinds.
//! Every chat is rate-limited (`min_interval_ms` between messages, Telegram's
//! `retry_after` obeyed on a 429); alerts that pile up beyond `queue` are
//! dropped oldest first and counted in the next message. The bot token lives
//! in the URL, so no error that could carry the URL is ever printed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::bus::Subscription;
use crate::config::{Config, TelegramSection};
use crate::domain::Secret;
use crate::domain::secret::scrub;

/// One alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// `fill`, `stop`, `breaker`, `plugin_failed`, `token_expired`, `rejected`, `position_mismatch`.
    pub kind: &'static str,
    /// The account it concerns, if one.
    pub account: Option<String>,
    /// The pipeline it concerns, if one.
    pub pipeline: Option<String>,
    /// The message.
    pub text: String,
}

fn s(v: &Value, k: &str) -> String {
    match &v[k] {
        Value::String(t) => t.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The alert a bus message (order or event) carries, if any.
#[must_use]
pub fn alert_of(payload: &str) -> Option<Alert> {
    let v: Value = serde_json::from_str(payload).ok()?;
    let account = v["account"].as_str().map(str::to_owned);
    let pipeline = v["pipeline"].as_str().map(str::to_owned);
    let (kind, text) = match (v["type"].as_str()?, v["event"].as_str().unwrap_or_default()) {
        ("order", _) if v["state"] == "filled" => (
            "fill",
            format!(
                "Filled [{}] {}: {} {} {} @ {}",
                s(&v, "mode"),
                s(&v, "account"),
                s(&v, "side").to_uppercase(),
                s(&v, "qty"),
                s(&v, "instrument"),
                s(&v, "price")
            ),
        ),
        ("event", "exit_triggered") if s(&v, "reason").contains("stop") => (
            "stop",
            format!(
                "Stop hit {}: {} {} at {} (stop {})",
                s(&v, "account"),
                s(&v, "reason"),
                s(&v, "instrument"),
                s(&v, "price"),
                s(&v, "stop")
            ),
        ),
        ("event", "risk_breaker") => (
            "breaker",
            format!(
                "Risk breaker tripped {}: {} (day P&L {}); {}",
                s(&v, "account"),
                s(&v, "rule"),
                s(&v, "daily_pnl"),
                s(&v, "detail")
            ),
        ),
        ("event", "plugin_failed") => (
            "plugin_failed",
            format!("Plugin failed in {}: {}", s(&v, "pipeline"), s(&v, "error")),
        ),
        ("event", "token_expired") => (
            "token_expired",
            format!(
                "Token expired {} ({}): orders paused until a new token arrives on the commands channel. {}",
                s(&v, "account"),
                s(&v, "broker"),
                s(&v, "reason")
            ),
        ),
        ("event", "order_rejected") => (
            "rejected",
            format!(
                "Order rejected {}: {}",
                s(&v, "client_order_id"),
                s(&v, "reason")
            ),
        ),
        ("event", "position_carried") => (
            "position_carried",
            format!(
                "Intraday position carried {} in {}: {} left open past its session; squared off at the open",
                s(&v, "account"),
                s(&v, "instrument"),
                s(&v, "qty")
            ),
        ),
        ("event", "journal_full") => (
            "journal_full",
            format!(
                "Journal disk full: {} cannot be written ({}); nothing is decided or sent until space is made",
                s(&v, "journal"),
                s(&v, "item")
            ),
        ),
        ("event", "position_mismatch") => (
            "position_mismatch",
            format!(
                "Position mismatch {} in {}: journal {}, {} {}",
                s(&v, "account"),
                s(&v, "instrument"),
                s(&v, "journal"),
                s(&v, "broker"),
                s(&v, "broker_qty")
            ),
        ),
        _ => return None,
    };
    Some(Alert {
        kind,
        account,
        pipeline,
        text: scrub(&text),
    })
}

/// Where alerts go: chat → (kinds, accounts it follows; `None` = all).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Routes(Vec<(String, HashSet<String>, Option<HashSet<String>>)>);

impl Routes {
    /// The routes a configuration asks for.
    #[must_use]
    pub fn of(config: &Config) -> Self {
        let mut routes = Vec::new();
        if let Some(chat) = config.telegram.as_ref().and_then(|t| t.chat_id.clone()) {
            routes.push((
                chat,
                config
                    .telegram
                    .as_ref()
                    .map(|t| t.events.iter().cloned().collect())
                    .unwrap_or_default(),
                None,
            ));
        }
        for a in &config.accounts {
            if let Some(n) = &a.notify {
                routes.push((
                    n.telegram_chat.clone(),
                    n.events.iter().cloned().collect(),
                    Some(HashSet::from([a.id.get_ref().clone()])),
                ));
            }
        }
        Self(routes)
    }

    /// The chats `alert` goes to. A pipeline's alert goes to the chats of its accounts.
    #[must_use]
    pub fn chats(&self, alert: &Alert, config: &Config) -> Vec<String> {
        let accounts: Vec<String> = match (&alert.account, &alert.pipeline) {
            (Some(a), _) => vec![a.clone()],
            (None, Some(p)) => config
                .pipeline(p)
                .map(|p| p.accounts.iter().map(|a| a.get_ref().clone()).collect())
                .unwrap_or_default(),
            (None, None) => Vec::new(),
        };
        let mut out: Vec<String> = Vec::new();
        for (chat, kinds, follows) in &self.0 {
            let follows_it = follows
                .as_ref()
                .is_none_or(|f| accounts.iter().any(|a| f.contains(a)));
            if kinds.contains(alert.kind) && follows_it && !out.contains(chat) {
                out.push(chat.clone());
            }
        }
        out
    }
}

/// The Bot API client.
/// `Debug` is derived: its credentials print as `Secret(***)`.
#[derive(Debug)]
pub struct Telegram {
    client: reqwest::Client,
    base: String,
    token: Secret,
}

/// A send that did not go through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// 429: wait this long.
    RetryAfter(Duration),
    /// Anything else (scrubbed, without the URL).
    Failed(String),
}

impl Telegram {
    /// A client for the Bot API at `base` with bot `token`.
    ///
    /// # Errors
    /// When the HTTP client cannot start.
    pub fn new(base: &str, token: Secret) -> anyhow::Result<Self> {
        let client = crate::brokers::http::client(Duration::from_secs(10))
            .map_err(|e| anyhow::anyhow!("telegram: {e}"))?;
        Ok(Self {
            client,
            base: base.trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// Send `text` to `chat`.
    ///
    /// # Errors
    /// [`SendError`].
    pub async fn send(&self, chat: &str, text: &str) -> Result<(), SendError> {
        let url = format!("{}/bot{}/sendMessage", self.base, self.token.expose());
        let body = json!({ "chat_id": chat, "text": text, "disable_web_page_preview": true });
        let response = self
            .client
            .post(url)
            .json(&body)
            .send()
            .await
            .map_err(|e| SendError::Failed(scrub(&e.without_url().to_string())))?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() && answer["ok"] == true {
            return Ok(());
        }
        if status.as_u16() == 429 {
            let secs = answer["parameters"]["retry_after"].as_u64().unwrap_or(1);
            return Err(SendError::RetryAfter(Duration::from_secs(secs.min(300))));
        }
        Err(SendError::Failed(scrub(&format!(
            "HTTP {}: {}",
            status.as_u16(),
            answer["description"].as_str().unwrap_or("")
        ))))
    }
}

/// Alerts taken in and not yet sent (or dropped): a process about to exit waits for them.
pub type Pending = std::sync::Arc<std::sync::atomic::AtomicUsize>;

/// Read alerts off `sub` (orders and events) and send them, rate-limited per chat.
pub async fn run(
    telegram: Telegram,
    settings: TelegramSection,
    config: tokio::sync::watch::Receiver<std::sync::Arc<Config>>,
    sub: Subscription,
) {
    run_counted(telegram, settings, config, sub, Pending::default()).await;
}

/// [`run`], counting what is still to be sent in `pending`.
pub async fn run_counted(
    telegram: Telegram,
    settings: TelegramSection,
    mut config: tokio::sync::watch::Receiver<std::sync::Arc<Config>>,
    mut sub: Subscription,
    pending: Pending,
) {
    let mut senders: HashMap<String, mpsc::Sender<String>> = HashMap::new();
    let telegram = std::sync::Arc::new(telegram);
    while let Some((_, payload)) = sub.recv().await {
        let Some(alert) = alert_of(&payload) else {
            continue;
        };
        let current = config.borrow_and_update().clone();
        for chat in Routes::of(&current).chats(&alert, &current) {
            let tx = senders.entry(chat.clone()).or_insert_with(|| {
                spawn_chat(telegram.clone(), chat.clone(), &settings, pending.clone())
            });
            pending.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if tx.send(alert.text.clone()).await.is_err() {
                pending.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    }
}

/// One chat's sender: a queue, the minimum interval, 429s obeyed.
fn spawn_chat(
    telegram: std::sync::Arc<Telegram>,
    chat: String,
    settings: &TelegramSection,
    pending: Pending,
) -> mpsc::Sender<String> {
    let (tx, mut rx) = mpsc::channel::<String>(1024);
    let (interval, cap) = (
        Duration::from_millis(settings.min_interval_ms),
        settings.queue.max(1),
    );
    tokio::spawn(async move {
        let mut queue: VecDeque<String> = VecDeque::new();
        let mut dropped = 0usize;
        let mut next = tokio::time::Instant::now();
        loop {
            // Take in everything waiting; drop the oldest beyond the cap.
            if queue.is_empty() {
                match rx.recv().await {
                    Some(t) => queue.push_back(t),
                    None => return,
                }
            }
            while let Ok(t) = rx.try_recv() {
                queue.push_back(t);
            }
            while queue.len() > cap {
                queue.pop_front();
                dropped += 1;
                pending.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }
            tokio::time::sleep_until(next).await;
            let Some(text) = queue.front().cloned() else {
                continue;
            };
            let text = if dropped > 0 {
                format!("{text}\n({dropped} earlier alerts dropped by the rate limit)")
            } else {
                text
            };
            match telegram.send(&chat, &text).await {
                Ok(()) => {
                    queue.pop_front();
                    pending.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    dropped = 0;
                    next = tokio::time::Instant::now() + interval;
                }
                Err(SendError::RetryAfter(wait)) => {
                    next = tokio::time::Instant::now() + wait.max(interval)
                }
                Err(SendError::Failed(e)) => {
                    tracing::warn!("telegram: {e}");
                    queue.pop_front();
                    pending.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    next = tokio::time::Instant::now() + interval;
                }
            }
        }
    });
    tx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_messages_become_alerts() {
        let fill = r#"{"v":1,"type":"order","id":"x/filled","ts":1,"mode":"live","account":"kite-main","side":"buy","qty":"50","instrument":"NIFTY","state":"filled","price":"22010.5"}"#;
        let a = alert_of(fill).unwrap();
        assert_eq!((a.kind, a.account.as_deref()), ("fill", Some("kite-main")));
        assert_eq!(a.text, "Filled [live] kite-main: BUY 50 NIFTY @ 22010.5");
        let accepted = fill.replace("\"filled\"", "\"accepted\"");
        assert_eq!(alert_of(&accepted), None);
        let carried = r#"{"v":1,"type":"event","id":"e","ts":1,"event":"position_carried","account":"a","instrument":"NIFTY","qty":"75","alert":true}"#;
        assert_eq!(
            alert_of(carried).map(|a| (a.kind, a.account)),
            Some(("position_carried", Some("a".to_owned())))
        );
        let stop = r#"{"v":1,"type":"event","id":"e","ts":1,"event":"exit_triggered","account":"a","instrument":"NIFTY","reason":"stop-loss","price":"100","stop":"101"}"#;
        assert_eq!(alert_of(stop).unwrap().kind, "stop");
        let target = stop.replace("stop-loss", "target");
        assert_eq!(alert_of(&target), None);
        let failed = r#"{"v":1,"type":"event","id":"e","ts":1,"event":"plugin_failed","pipeline":"nifty-ma","error":"trap"}"#;
        assert_eq!(
            alert_of(failed).unwrap().pipeline.as_deref(),
            Some("nifty-ma")
        );
    }
}
