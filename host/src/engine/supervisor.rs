//! The engine's supervisor: one slot per configured pipeline, the registry of
//! compiled plugins in the plugin folder, and everything that changes them
//! while markets are open: a dropped, replaced or deleted `.wasm`, an edited
//! `pipelines.toml`, and the start/stop/pause/resume commands.
//!
//! A new or changed file is compiled (the cache makes an unchanged one
//! free) and validated against every pipeline that uses it — contract,
//! instantiation, `init` with that pipeline's params — in the background;
//! only then is it handed to the running pipeline, which swaps it in between
//! two events. A file that fails leaves the running version untouched.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::pipeline::{self, Control, PipelineEnd, PipelineSpec, PipelineStats, Swap};
use crate::bus::Bus;
use crate::bus::events::{Event, Events};
use crate::bus::message::{PipelineAction, Target};
use crate::config::Config;
use crate::market::feed::BrokerLinks;
use crate::sandbox::{Plugin, Sandbox};

struct Slot {
    spec: PipelineSpec,
    control: watch::Sender<Control>,
    swaps: mpsc::Sender<Swap>,
    stats: Arc<PipelineStats>,
    task: Option<JoinHandle<PipelineEnd>>,
    state: String,
    /// Why it is waiting or failed.
    reason: Option<String>,
}

/// The engine role's state.
pub struct Supervisor {
    config: Arc<Config>,
    sandbox: Arc<Sandbox>,
    bus: Bus,
    events: Events,
    plugins: HashMap<String, Plugin>,
    refused: HashMap<String, String>,
    /// Why each refused file was refused.
    refusals: HashMap<String, String>,
    slots: BTreeMap<String, Slot>,
    /// Resolves broker sources (set by the caller that knows the brokers).
    feeds: Option<BrokerLinks>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn file_name(spec: &PipelineSpec) -> String {
    spec.plugin_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl Supervisor {
    /// A supervisor for `config`'s pipelines; nothing runs until [`Supervisor::start`].
    #[must_use]
    pub fn new(config: Arc<Config>, sandbox: Arc<Sandbox>, bus: Bus, events: Events) -> Self {
        Self {
            config,
            sandbox,
            bus,
            events,
            plugins: HashMap::new(),
            refused: HashMap::new(),
            refusals: HashMap::new(),
            slots: BTreeMap::new(),
            feeds: None,
        }
    }

    /// Let pipelines with a `broker` source resolve their feeds through `feeds`.
    #[must_use]
    pub fn with_feeds(mut self, feeds: BrokerLinks) -> Self {
        self.feeds = Some(feeds);
        self
    }

    /// The plugin folder.
    #[must_use]
    pub fn plugin_dir(&self) -> PathBuf {
        self.config.resolve(&self.config.host.plugin_dir)
    }

    /// Compile the plugin folder and start every pipeline whose plugin is there.
    pub async fn start(&mut self) {
        self.rescan_plugins().await;
        let specs: Vec<PipelineSpec> = self
            .config
            .pipelines
            .iter()
            .map(|p| PipelineSpec::from_config(&self.config, p))
            .collect();
        for spec in specs {
            if !self.slots.contains_key(&spec.id) {
                self.start_slot(spec).await;
            }
        }
    }

    async fn start_slot(&mut self, spec: PipelineSpec) {
        let (control, control_rx) = watch::channel(Control::Run);
        let (swaps, swaps_rx) = mpsc::channel(4);
        let stats = Arc::new(PipelineStats::default());
        let id = spec.id.clone();
        let (task, state, reason) = match self.plugins.get(&file_name(&spec)) {
            Some(plugin) => {
                let run = pipeline::run(
                    spec.clone(),
                    plugin.clone(),
                    self.sandbox.clone(),
                    self.bus.clone(),
                    self.events.clone(),
                    control_rx,
                    swaps_rx,
                    stats.clone(),
                    self.feeds.clone(),
                );
                (Some(tokio::spawn(run)), "running", None)
            }
            None => {
                let file = file_name(&spec);
                let reason = match self.refusals.get(&file) {
                    Some(why) => format!("plugin {file} was refused: {why}"),
                    None => format!(
                        "plugin {file} is not in the plugin folder {}",
                        self.plugin_dir().display()
                    ),
                };
                self.events
                    .publish(&Event::PipelineWaiting {
                        pipeline: id.clone(),
                        plugin: file.clone(),
                        reason: reason.clone(),
                    })
                    .await;
                (None, "waiting", Some(reason))
            }
        };
        self.slots.insert(
            id,
            Slot {
                spec,
                control,
                swaps,
                stats,
                task,
                state: state.into(),
                reason,
            },
        );
    }

    async fn stop_slot(&mut self, id: &str, state: &str) {
        if let Some(slot) = self.slots.get_mut(id) {
            let _ = slot.control.send(Control::Stop);
            if let Some(task) = slot.task.take() {
                let _ = task.await;
            }
            slot.state = state.into();
        }
    }

    /// Bring the registry in line with the plugin folder: compile new and
    /// changed files, hand validated new versions to their pipelines, start
    /// pipelines that were waiting, stop the ones whose file is gone.
    pub async fn rescan_plugins(&mut self) {
        let dir = self.plugin_dir();
        let mut present: HashMap<String, PathBuf> = HashMap::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".wasm")
                    && !name.starts_with('.')
                    && entry.file_type().is_ok_and(|t| t.is_file())
                {
                    present.insert(name, entry.path());
                }
            }
        }
        let gone: Vec<String> = self
            .plugins
            .keys()
            .filter(|k| !present.contains_key(*k))
            .cloned()
            .collect();
        for name in gone {
            self.plugins.remove(&name);
            self.events
                .publish(&Event::PluginRemoved { file: name.clone() })
                .await;
            let users: Vec<String> = self
                .slots
                .iter()
                .filter(|(_, s)| file_name(&s.spec) == name && s.task.is_some())
                .map(|(k, _)| k.clone())
                .collect();
            for id in users {
                self.stop_slot(&id, "waiting").await;
            }
        }
        self.refused.retain(|k, _| present.contains_key(k));
        self.refusals.retain(|k, _| present.contains_key(k));
        let mut names: Vec<_> = present.into_iter().collect();
        names.sort();
        for (name, path) in names {
            let Some(bytes) = read_settled(&path).await else {
                continue;
            };
            let sha = sha256_hex(&bytes);
            if self.plugins.get(&name).is_some_and(|p| p.sha256() == sha)
                || self.refused.get(&name) == Some(&sha)
            {
                continue;
            }
            let sandbox = self.sandbox.clone();
            let loaded = tokio::task::block_in_place(|| sandbox.load_bytes(&path, &bytes));
            match loaded {
                Err(e) => {
                    self.refused.insert(name.clone(), sha.clone());
                    self.refusals.insert(name.clone(), e.to_string());
                    self.events
                        .publish(&Event::PluginRefused {
                            pipeline: None,
                            file: Some(name.clone()),
                            sha256: Some(sha.clone()),
                            reason: e.to_string(),
                        })
                        .await;
                }
                Ok(plugin) => {
                    self.events
                        .publish(&Event::PluginRegistered {
                            file: name.clone(),
                            sha256: sha.clone(),
                            contract: plugin.contract().to_string(),
                            from_cache: plugin.from_cache(),
                        })
                        .await;
                    self.refused.remove(&name);
                    self.refusals.remove(&name);
                    self.plugins.insert(name.clone(), plugin.clone());
                    self.hand_over(&name, &plugin, "file changed").await;
                }
            }
        }
    }

    /// Validate `plugin` for every pipeline using `file` and send it to the running ones;
    /// start the waiting ones.
    async fn hand_over(&mut self, file: &str, plugin: &Plugin, cause: &str) {
        let ids: Vec<String> = self
            .slots
            .iter()
            .filter(|(_, s)| file_name(&s.spec) == file)
            .map(|(k, _)| k.clone())
            .collect();
        for id in ids {
            let Some(slot) = self.slots.get(&id) else {
                continue;
            };
            if slot.task.is_none() {
                if slot.state == "waiting" {
                    let spec = slot.spec.clone();
                    self.start_slot(spec).await;
                }
                continue;
            }
            let spec = slot.spec.clone();
            self.send_swap(&spec, plugin, cause).await;
        }
    }

    async fn send_swap(&self, spec: &PipelineSpec, plugin: &Plugin, cause: &str) {
        let sandbox = self.sandbox.clone();
        match tokio::task::block_in_place(|| {
            sandbox.instantiate_with(plugin, &spec.params, &spec.limits)
        }) {
            Ok(instance) => {
                let Some(slot) = self.slots.get(&spec.id) else {
                    return;
                };
                let swap = Swap {
                    instance,
                    sha256: plugin.sha256().to_owned(),
                    cause: cause.to_owned(),
                };
                if slot.swaps.send(swap).await.is_err() {
                    self.events
                        .publish(&Event::PluginRefused {
                            pipeline: Some(spec.id.clone()),
                            file: None,
                            sha256: None,
                            reason: "the pipeline ended before the new version arrived".into(),
                        })
                        .await;
                }
            }
            Err(e) => {
                self.events
                    .publish(&Event::PluginRefused {
                        pipeline: Some(spec.id.clone()),
                        file: Some(file_name(spec)),
                        sha256: Some(plugin.sha256().to_owned()),
                        reason: e.to_string(),
                    })
                    .await;
            }
        }
    }

    /// Apply a new, already validated configuration: pipelines added, removed
    /// or changed are started, stopped or updated; the others are not touched.
    pub async fn apply_config(&mut self, new: Arc<Config>) {
        let old_ids: Vec<String> = self.slots.keys().cloned().collect();
        let new_specs: BTreeMap<String, PipelineSpec> = new
            .pipelines
            .iter()
            .map(|p| (p.id.get_ref().clone(), PipelineSpec::from_config(&new, p)))
            .collect();
        self.config = new;
        let (mut added, mut removed, mut swapped, mut restarted) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for id in old_ids.iter().filter(|id| !new_specs.contains_key(*id)) {
            self.stop_slot(id, "removed").await;
            self.slots.remove(id);
            removed.push(id.clone());
        }
        for (id, spec) in new_specs {
            let Some(slot) = self.slots.get_mut(&id) else {
                self.start_slot(spec).await;
                added.push(id);
                continue;
            };
            if slot.spec == spec {
                continue;
            }
            if slot.spec.same_feed(&spec) && slot.task.is_some() {
                slot.spec = spec.clone();
                if let Some(plugin) = self.plugins.get(&file_name(&spec)).cloned() {
                    self.send_swap(&spec, &plugin, "config changed").await;
                }
                swapped.push(id);
            } else {
                self.stop_slot(&id, "restarting").await;
                self.start_slot(spec).await;
                restarted.push(id);
            }
        }
        self.events
            .publish(&Event::ConfigApplied {
                added,
                removed,
                updated: swapped,
                restarted,
            })
            .await;
    }

    /// Start, stop, pause or resume the pipelines of `target`; acknowledged under `command_id`.
    pub async fn command(&mut self, command_id: &str, action: PipelineAction, target: &Target) {
        let name = match action {
            PipelineAction::Start => "start",
            PipelineAction::Stop => "stop",
            PipelineAction::Pause => "pause",
            PipelineAction::Resume => "resume",
        };
        let ids = match self.targets(target) {
            Ok(ids) => ids,
            Err(e) => return self.events.ack(command_id, name, false, &e).await,
        };
        let mut done = Vec::new();
        for id in &ids {
            let Some(slot) = self.slots.get_mut(id) else {
                continue;
            };
            let running = slot.task.is_some();
            match action {
                PipelineAction::Pause if running => {
                    let _ = slot.control.send(Control::Pause);
                    slot.state = "paused".into();
                    self.events
                        .publish(&Event::PipelinePaused {
                            pipeline: id.clone(),
                        })
                        .await;
                }
                PipelineAction::Resume if running => {
                    let _ = slot.control.send(Control::Run);
                    slot.state = "running".into();
                    self.events
                        .publish(&Event::PipelineResumed {
                            pipeline: id.clone(),
                        })
                        .await;
                }
                PipelineAction::Stop if running => self.stop_slot(id, "stopped").await,
                PipelineAction::Start if !running => {
                    let spec = self.config.pipeline(id).map_or_else(
                        || slot.spec.clone(),
                        |p| PipelineSpec::from_config(&self.config, p),
                    );
                    self.start_slot(spec).await;
                }
                _ => continue,
            }
            done.push(id.clone());
        }
        let detail = if done.is_empty() {
            format!("nothing to {name} in {ids:?}")
        } else {
            format!("{name} {}", done.join(", "))
        };
        self.events.ack(command_id, name, true, &detail).await;
    }

    fn targets(&self, target: &Target) -> Result<Vec<String>, String> {
        match target {
            Target::All => Ok(self.slots.keys().cloned().collect()),
            Target::Pipeline(p) => self
                .slots
                .contains_key(p)
                .then(|| vec![p.clone()])
                .ok_or_else(|| format!("unknown pipeline {p:?}")),
            Target::User(user) => {
                let ids: Vec<String> = self
                    .slots
                    .iter()
                    .filter(|(_, s)| s.spec.user.as_deref() == Some(user.as_str()))
                    .map(|(k, _)| k.clone())
                    .collect();
                if ids.is_empty() {
                    Err(format!("no pipeline belongs to user {user:?}"))
                } else {
                    Ok(ids)
                }
            }
        }
    }

    /// Collect ended pipelines; true when every pipeline has finished or failed
    /// (none is running, waiting for its plugin, or stopped by a command).
    pub async fn reap(&mut self) -> bool {
        for slot in self.slots.values_mut() {
            if slot.task.as_ref().is_some_and(JoinHandle::is_finished)
                && let Some(task) = slot.task.take()
            {
                slot.state = match task.await {
                    Ok(PipelineEnd::Finished) => "finished".into(),
                    Ok(PipelineEnd::Stopped) => "stopped".into(),
                    Ok(PipelineEnd::Failed(reason)) => {
                        slot.reason = Some(reason.to_string());
                        "failed".into()
                    }
                    Err(e) => {
                        slot.reason = Some(e.to_string());
                        "failed".into()
                    }
                };
            }
        }
        !self.slots.is_empty()
            && self
                .slots
                .values()
                .all(|s| matches!(s.state.as_str(), "finished" | "failed"))
    }

    /// When no pipeline runs or can run (each failed to start or waits for a
    /// plugin that is missing or refused): what stops each one. `None` while
    /// anything runs, finished, or was stopped or paused by a command.
    #[must_use]
    pub fn nothing_trades(&self) -> Option<Vec<String>> {
        let stuck = !self.slots.is_empty()
            && self
                .slots
                .values()
                .all(|s| matches!(s.state.as_str(), "failed" | "waiting"));
        stuck.then(|| {
            self.slots
                .iter()
                .map(|(id, s)| {
                    format!("pipeline {id}: {}", s.reason.as_deref().unwrap_or(&s.state))
                })
                .collect()
        })
    }

    /// Pipeline states and counters, for heartbeats.
    #[must_use]
    pub fn heartbeat(&self) -> Value {
        let pipelines: serde_json::Map<String, Value> = self
            .slots
            .iter()
            .map(|(id, s)| {
                (
                    id.clone(),
                    json!({
                        "state": s.state,
                        "events_in": s.stats.events_in.load(Ordering::Relaxed),
                        "signals_out": s.stats.signals_out.load(Ordering::Relaxed),
                        "signals_suppressed": s.stats.signals_suppressed.load(Ordering::Relaxed),
                        "events_skipped": s.stats.events_skipped.load(Ordering::Relaxed),
                        "swaps": s.stats.swaps.load(Ordering::Relaxed),
                        "restarts": s.stats.restarts.load(Ordering::Relaxed),
                        "buffered": s.stats.buffered.load(Ordering::Relaxed),
                        "bus_retries": s.stats.retries.load(Ordering::Relaxed),
                        "entries_held": s.stats.entries_held.load(Ordering::Relaxed),
                        "stale": s.stats.stale.lock().map(|st| st.iter().cloned().collect::<Vec<_>>()).unwrap_or_default(),
                        "tick_to_signal": s.stats.tick_to_signal.to_json(),
                        "last_event_wall_ms": s.stats.last_event_wall_ms.load(Ordering::Relaxed),
                        "fuel_total": s.stats.fuel_total.load(Ordering::Relaxed),
                        "memory_bytes": s.stats.memory_bytes.load(Ordering::Relaxed),
                        "busy_us": s.stats.busy_us.load(Ordering::Relaxed),
                        "reason": s.reason,
                    }),
                )
            })
            .collect();
        json!({ "pipelines": pipelines, "plugins": self.plugins.iter().map(|(k, p)| (k.clone(), Value::String(p.sha256().to_owned()))).collect::<serde_json::Map<_, _>>() })
    }

    /// Stop everything.
    pub async fn shutdown(&mut self) {
        // All told first, then all awaited: each may take a moment to hand its
        // last prices to the bus, and a stop must not add those moments up.
        for slot in self.slots.values() {
            let _ = slot.control.send(Control::Stop);
        }
        for slot in self.slots.values_mut() {
            if let Some(task) = slot.task.take() {
                let _ = task.await;
            }
        }
    }
}

/// The file's bytes once it has stopped changing: a copy in progress is
/// read again on the next notification instead of being compiled half-written.
async fn read_settled(path: &std::path::Path) -> Option<Vec<u8>> {
    let before = std::fs::metadata(path).ok()?;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let bytes = std::fs::read(path).ok()?;
    let after = std::fs::metadata(path).ok()?;
    let same = before.len() == after.len()
        && before.modified().ok() == after.modified().ok()
        && bytes.len() as u64 == after.len();
    same.then_some(bytes)
}
