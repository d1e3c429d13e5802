//! The engine service: the pipelines of the configuration under their
//! supervisor, kept up to date with the plugin folder and the configuration,
//! answering the engine's commands, until told to stop (or, for a batch
//! replay, until every source has run out). `tradehost run` wires it to the
//! bus beside the orders service (`crate::orders::service`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::supervisor::Supervisor;
use super::watch::Change;
use crate::bus::events::{Event, Events};
use crate::bus::message::{Command, CommandMessage};
use crate::bus::{Bus, Lifecycle, Subscription};
use crate::config::Config;
use crate::domain::secret::TokenOverrides;
use crate::market::feed::BrokerLinks;
use crate::sandbox::{Sandbox, SandboxLimits};

/// Run the engine: `changes` are the plugin folder's, `configs` the valid
/// configurations as they come, `commands` the command channel; `feeds` reach
/// the brokers for `broker` sources, and a `token` command's token goes into
/// `feed_tokens` for their next connection.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    config: Arc<Config>,
    bus: Bus,
    mut life: Lifecycle,
    mut changes: mpsc::Receiver<Change>,
    mut configs: watch::Receiver<Arc<Config>>,
    mut commands: Subscription,
    feeds: BrokerLinks,
    feed_tokens: TokenOverrides,
) -> anyhow::Result<()> {
    let events = Events::new(bus.clone(), "engine");
    let cache = config
        .resolve(&config.host.journal)
        .parent()
        .map(|d| d.join("plugin-cache"))
        .unwrap_or_else(|| PathBuf::from("plugin-cache"));
    let sandbox = Arc::new(Sandbox::new(SandboxLimits::live())?.with_cache(cache));
    let mut engine =
        Supervisor::new(config.clone(), sandbox, bus.clone(), events.clone()).with_feeds(feeds);
    engine.start().await;
    let mut heartbeat =
        tokio::time::interval(Duration::from_secs(config.host.heartbeat_secs.max(1)));
    let mut reap = tokio::time::interval(Duration::from_millis(100));
    let mut said_waiting = false;
    let mut outcome = Ok(());
    loop {
        tokio::select! {
            _ = life.shutdown.changed() => break,
            change = changes.recv() => {
                if change == Some(Change::Plugins) {
                    engine.rescan_plugins().await;
                }
            }
            changed = configs.changed() => {
                if changed.is_ok() {
                    let new = configs.borrow_and_update().clone();
                    engine.apply_config(new).await;
                }
            }
            msg = commands.recv() => {
                // A Redis subscription reconnects by itself; `None` only when the bus is gone.
                let Some((_, payload)) = msg else { break };
                match CommandMessage::parse(&payload).map(|m| { let c = m.command(); (m, c) }) {
                    Ok((m, Ok(Command::Reload))) => {
                        engine.rescan_plugins().await;
                        events.ack(&m.id, &m.cmd, true, "plugin folder rescanned").await;
                    }
                    Ok((m, Ok(Command::Shutdown))) => {
                        events.ack(&m.id, &m.cmd, true, "engine stopping").await;
                        let _ = life.stop.send(true);
                    }
                    Ok((_, Ok(Command::Token { account, access_token }))) => {
                        // The orders side checks the session and acknowledges; the feeds use the token on their next connection.
                        if let Ok(mut t) = feed_tokens.write() {
                            t.insert(account, access_token);
                        }
                    }
                    Ok((m, Ok(Command::Pipelines { action, target }))) => engine.command(&m.id, action, &target).await,
                    // An engine command without what it needs is the engine's to refuse; the rest are the orders side's.
                    Ok((m, Err(e))) if Command::ENGINE.contains(&m.cmd.as_str()) => events.ack(&m.id, &m.cmd, false, &e).await,
                    Ok(_) => {}
                    Err(e) => events.error("commands", &format!("malformed command ignored: {e}")).await,
                }
            }
            _ = heartbeat.tick() => events.heartbeat(engine.heartbeat()).await,
            _ = reap.tick() => {
                let all_ended = engine.reap().await;
                if let Some(reasons) = engine.nothing_trades() {
                    if !life.wait_for_plugins {
                        outcome = Err(anyhow::anyhow!("no pipeline can trade:\n  {}\n(--wait-for-plugins keeps running until a plugin is dropped in)", reasons.join("\n  ")));
                        break;
                    }
                    if !said_waiting {
                        eprintln!("tradehost: waiting: no pipeline can trade yet:\n  {}", reasons.join("\n  "));
                        said_waiting = true;
                    }
                } else {
                    said_waiting = false;
                }
                if all_ended && life.until_idle {
                    break; // a batch replay: every source ran out
                }
            }
        }
    }
    engine.shutdown().await;
    // The final states; not waited for beyond a moment when the bus is away.
    let _ =
        tokio::time::timeout(Duration::from_secs(1), events.heartbeat(engine.heartbeat())).await;
    outcome
}

/// Reloads the configuration when its file changes or a `reload` command asks:
/// a valid one is handed to both roles, an invalid one refused with its place
/// while the old one keeps running.
pub async fn config_watch(
    path: PathBuf,
    events: Events,
    tx: watch::Sender<Arc<Config>>,
    mut changes: mpsc::Receiver<Change>,
    mut reloads: mpsc::Receiver<String>,
) {
    loop {
        let command_id = tokio::select! {
            change = changes.recv() => match change {
                Some(_) => None,
                None => return,
            },
            id = reloads.recv() => match id {
                Some(id) => Some(id),
                None => return,
            },
        };
        match Config::load(&path) {
            Ok(new) => {
                let changed = **tx.borrow() != new;
                if changed {
                    let _ = tx.send(Arc::new(new));
                }
                if let Some(id) = command_id {
                    events
                        .ack(
                            &id,
                            "reload",
                            true,
                            if changed {
                                "configuration reloaded"
                            } else {
                                "configuration unchanged"
                            },
                        )
                        .await;
                }
            }
            Err(e) => {
                events
                    .publish(&Event::ConfigRefused {
                        file: path.display().to_string(),
                        error: e.to_string(),
                        line: e.line,
                        column: e.column,
                        field: e.field.clone(),
                    })
                    .await;
                if let Some(id) = command_id {
                    events.ack(&id, "reload", false, &e.to_string()).await;
                }
            }
        }
    }
}
