//! Starting live trading: credentials, session checks, instrument masters,
//! the router, and the Telegram notifier. Fails safe: any live account that
//! cannot trade stops the start, with every problem listed at once.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use tokio::sync::mpsc;

use crate::brokers::instruments::InstrumentMaster;
use crate::brokers::live::{AccountLink, LiveRouter, RouterOutput, RouterSettings};
use crate::brokers::secrets::{SecretStore, env_stem};
use crate::brokers::{Broker, BrokerError, kite, openalgo, upstox};
use crate::bus::Bus;
use crate::bus::events::{Event, Events};
use crate::config::{Account, Config};
use crate::domain::{BrokerKind, Capabilities};

/// A started router and what it reports.
pub struct Live {
    /// The router.
    pub router: LiveRouter,
    /// Its reports.
    pub reports: mpsc::UnboundedReceiver<RouterOutput>,
}

fn adapter(
    account: &Account,
    store: &SecretStore,
    timeout: Duration,
) -> Result<Arc<dyn Broker>, String> {
    let id = account.id.get_ref();
    let name = account.credentials.clone().unwrap_or_else(|| id.clone());
    let c = store.credentials(id, &name);
    let stem = env_stem(&name);
    let missing = |what: &str| {
        format!(
            "account {id} ({}): no {what}: set TRADEHOST_{stem}_{} or [accounts.{name}] {what} in the secrets file",
            account.broker.get_ref(),
            what.to_uppercase()
        )
    };
    let base = account.base_url.clone();
    // The registry: the one place an adapter is built for a broker.
    let broker: Arc<dyn Broker> = match account.kind() {
        Some(BrokerKind::Kite) => {
            let key = c.api_key.ok_or_else(|| missing("api_key"))?;
            let token = c.access_token.ok_or_else(|| missing("access_token"))?;
            Arc::new(
                kite::Kite::new(
                    base.as_deref().unwrap_or(kite::DEFAULT_URL),
                    key,
                    token,
                    timeout,
                )
                .map_err(|e| e.to_string())?,
            )
        }
        Some(BrokerKind::Upstox) => {
            let token = c.access_token.ok_or_else(|| missing("access_token"))?;
            Arc::new(
                upstox::Upstox::new(
                    base.as_deref().unwrap_or(upstox::DEFAULT_URL),
                    token,
                    timeout,
                )
                .map_err(|e| e.to_string())?,
            )
        }
        Some(BrokerKind::OpenAlgo) => {
            let key = c.api_key.ok_or_else(|| missing("api_key"))?;
            Arc::new(
                openalgo::OpenAlgo::new(
                    base.as_deref().unwrap_or(openalgo::DEFAULT_URL),
                    key,
                    "tradehost",
                    timeout,
                )
                .map_err(|e| e.to_string())?,
            )
        }
        Some(BrokerKind::Paper) | None => {
            return Err(format!(
                "account {id}: {} is not a live broker",
                account.broker.get_ref()
            ));
        }
    };
    Ok(broker)
}

/// The longest wait between two session checks of a broker that does not answer at start.
const UNREACHABLE_MAX_WAIT: Duration = Duration::from_secs(30);

/// Connect every live account: refuse to start if any lacks credentials, has its
/// session refused, or needs an instrument master that does not load. A broker that
/// does not answer (refused connection, timeout, 5xx, 429) is waited for, with back-off
/// and a `broker_unreachable` event each time, as a service waits; `Ok(None)` when
/// told to stop meanwhile.
///
/// # Errors
/// Every problem found, one per line.
pub async fn connect(
    config: &Config,
    bus: &Bus,
    events: &Events,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Option<Live>> {
    let store = SecretStore::beside(config)?;
    let timeout = Duration::from_millis(config.live.timeout_ms);
    let mut problems = Vec::new();
    let mut links = Vec::new();
    let mut asking: Vec<(&Account, Arc<dyn Broker>)> = Vec::new();
    for account in config
        .accounts
        .iter()
        .filter(|a| a.kind() != Some(BrokerKind::Paper))
    {
        match adapter(account, &store, timeout) {
            Ok(b) => asking.push((account, b)),
            Err(e) => problems.push(e),
        }
    }
    // Every session is checked; brokers that did not answer are asked again, with back-off,
    // unless something was refused for good: then the start is refused at once.
    let mut wait = Duration::from_millis(config.live.backoff_ms.max(100));
    let mut attempt = 0u32;
    while !asking.is_empty() {
        attempt = attempt.saturating_add(1);
        let mut silent = Vec::new();
        for (account, broker) in asking.drain(..) {
            let id = account.id.get_ref();
            match tokio::time::timeout(timeout + Duration::from_secs(1), broker.check_session())
                .await
            {
                Ok(Ok(user)) => {
                    println!(
                        "tradehost: LIVE account {id}: {} session ok (user {user})",
                        broker.name()
                    );
                    links.push(AccountLink {
                        account: id.clone(),
                        broker,
                        product: account.product,
                        protection_pct: account.market_protection_pct,
                        algo_id: account.algo_id.clone(),
                        orders_per_sec: account.risk.max_orders_per_sec,
                        margin_check: account.margin_check,
                    });
                }
                Ok(Err(
                    e @ (BrokerError::Timeout
                    | BrokerError::Unavailable(_)
                    | BrokerError::RateLimited(_)),
                )) => silent.push((account, broker, e.to_string())),
                Err(_) => silent.push((account, broker, "timed out".to_owned())),
                Ok(Err(e)) => problems.push(format!(
                    "account {id} ({}): session check failed: {e}",
                    broker.name()
                )),
            }
        }
        if silent.is_empty() {
            break;
        }
        if !problems.is_empty() {
            problems.extend(silent.iter().map(|(account, broker, reason)| {
                format!(
                    "account {} ({}): session check failed: {reason}",
                    account.id.get_ref(),
                    broker.name()
                )
            }));
            break;
        }
        let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        for (account, broker, reason) in &silent {
            eprintln!(
                "tradehost: LIVE account {} ({}): the broker does not answer ({reason}); asking again in {wait_ms} ms",
                account.id.get_ref(),
                broker.name()
            );
            events
                .publish(&Event::BrokerUnreachable {
                    account: account.id.get_ref().clone(),
                    broker: broker.name().to_owned(),
                    reason: crate::bus::message::printable(reason, 300),
                    attempt,
                    wait_ms,
                })
                .await;
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return Ok(None),
        }
        wait = (wait * 2).min(UNREACHABLE_MAX_WAIT);
        asking = silent.into_iter().map(|(a, b, _)| (a, b)).collect();
    }
    let master = InstrumentMaster::new(bus.clone());
    let needed: BTreeSet<&str> = links
        .iter()
        .map(|l| l.broker.name())
        .filter(|b| Capabilities::of(b).is_some_and(|c| c.instrument_master))
        .collect();
    for broker in &needed {
        match config.live.instruments.get(*broker) {
            None => problems.push(format!("{broker} accounts need an instrument master: set [live] instruments.{broker} to the instrument CSV (a path or URL)")),
            Some(source) => {
                let source = config.resolve_source(source);
                match master.load(broker, &source).await {
                    Ok(n) => println!("tradehost: {broker} instrument master: {n} instruments from {source} ({})", if matches!(bus, Bus::Redis(_)) { "Redis hash" } else { "memory" }),
                    Err(e) => problems.push(format!("{broker} instrument master: {e}")),
                }
            }
        }
    }
    if !problems.is_empty() {
        bail!(
            "TRADING_MODE=live refused to start:\n  {}",
            problems.join("\n  ")
        );
    }
    if links.is_empty() {
        println!(
            "tradehost: TRADING_MODE=live but no account names a live broker: every account trades on paper"
        );
    }
    let paper: Vec<&str> = config
        .accounts
        .iter()
        .filter(|a| a.kind() == Some(BrokerKind::Paper))
        .map(|a| a.id.get_ref().as_str())
        .collect();
    if !paper.is_empty() {
        println!(
            "tradehost: paper accounts (broker = \"paper\"): {}",
            paper.join(", ")
        );
    }
    let live = config.live.clone();
    tokio::spawn(refresh_daily(
        config.clone(),
        master.clone(),
        needed.iter().map(|b| (*b).to_owned()).collect(),
        events.clone(),
    ));
    let settings = RouterSettings {
        poll: Duration::from_millis(live.poll_ms),
        backoff: Duration::from_millis(live.backoff_ms),
        max_backoff: Duration::from_millis(live.backoff_ms.saturating_mul(32).max(1_000)),
        max_attempts: live.max_attempts,
        cancel_after: (live.cancel_after_secs > 0)
            .then(|| Duration::from_secs(live.cancel_after_secs)),
        absent_reads: live.absent_reads.max(1),
    };
    let (tx, reports) = mpsc::unbounded_channel();
    Ok(Some(Live {
        router: LiveRouter::start(links, master, settings, tx),
        reports,
    }))
}

/// Milliseconds from `now_ms` to the next `hhmm` (minute of the IST day).
#[must_use]
pub fn until_next(now_ms: i64, minute: i64) -> i64 {
    const DAY: i64 = 86_400_000;
    let ist = (now_ms + crate::domain::time::IST_OFFSET_MS).rem_euclid(DAY);
    let wait = (minute * 60_000 - ist).rem_euclid(DAY);
    if wait == 0 { DAY } else { wait }
}

/// Reload the instrument masters every day at `[live] refresh_at` (IST).
async fn refresh_daily(
    config: Config,
    master: InstrumentMaster,
    brokers: Vec<String>,
    events: Events,
) {
    let minute =
        crate::domain::time::parse_hhmm(&config.live.refresh_at).map_or(8 * 60 + 15, i64::from);
    loop {
        let wait = until_next(crate::domain::time::now_ms(), minute);
        tokio::time::sleep(Duration::from_millis(u64::try_from(wait).unwrap_or(0))).await;
        for broker in &brokers {
            let Some(source) = config.live.instruments.get(broker) else {
                continue;
            };
            let source = config.resolve_source(source);
            match master.load(broker, &source).await {
                Ok(n) => {
                    events
                        .publish(&crate::bus::events::Event::InstrumentsRefreshed {
                            broker: broker.to_string(),
                            instruments: n,
                        })
                        .await
                }
                // The old map stays in use; the alert says the day's new listings are missing.
                Err(e) => {
                    events
                        .publish(&crate::bus::events::Event::InstrumentsRefreshFailed {
                            broker: broker.to_string(),
                            error: e.to_string(),
                        })
                        .await
                }
            }
        }
    }
}

/// Start the Telegram notifier if `[telegram]` or any `[accounts.notify]` asks for it;
/// returns its count of alerts still to send.
///
/// # Errors
/// A secrets file that does not parse.
pub async fn start_notifier(
    config: &Config,
    bus: &Bus,
    configs: tokio::sync::watch::Receiver<Arc<Config>>,
) -> anyhow::Result<Option<crate::notify::Pending>> {
    let wanted = config
        .telegram
        .as_ref()
        .is_some_and(|t| t.chat_id.is_some())
        || config.accounts.iter().any(|a| a.notify.is_some());
    if !wanted {
        return Ok(None);
    }
    let store = SecretStore::beside(config)?;
    let Some(token) = store.telegram_token() else {
        eprintln!(
            "tradehost: Telegram alerts are configured but there is no bot token (TRADEHOST_TELEGRAM_BOT_TOKEN or [telegram] bot_token in the secrets file): alerts are off"
        );
        return Ok(None);
    };
    let settings = config.telegram.clone().unwrap_or_default();
    let telegram = crate::notify::Telegram::new(&settings.base_url, token)?;
    let c = bus.channels();
    let sub = bus.subscribe(&[c.orders(), c.events()]).await?;
    println!("tradehost: Telegram alerts on");
    let pending = crate::notify::Pending::default();
    tokio::spawn(crate::notify::run_counted(
        telegram,
        settings,
        configs,
        sub,
        pending.clone(),
    ));
    Ok(Some(pending))
}

#[cfg(test)]
mod tests {
    use super::until_next;

    #[test]
    fn the_next_refresh_is_within_a_day() {
        // 2024-03-28 08:00 IST = 02:30 UTC.
        let at_8 = 1_711_593_000_000;
        assert_eq!(until_next(at_8, 8 * 60 + 15), 15 * 60_000);
        assert_eq!(until_next(at_8, 8 * 60), 86_400_000);
        assert_eq!(until_next(at_8, 7 * 60), 23 * 3_600_000);
    }
}
