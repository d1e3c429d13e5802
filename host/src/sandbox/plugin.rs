//! A compiled plugin and its running instances.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker, ResourceTable, types::ComponentItem};
use wasmtime::{Engine, ResourceLimiter, Store, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::compat::Bindings;
use super::{
    CONTRACT_PACKAGE, CONTRACT_VERSION, SandboxError, SandboxLimits, StrategyPlugin, Version,
    bindings_1_0, bindings_1_1, tradehost, wit,
};

/// A plugin that passed the checks and was compiled.
#[derive(Clone)]
pub struct Plugin {
    path: PathBuf,
    file_name: String,
    contract: Version,
    sha256: String,
    component: Component,
    from_cache: bool,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("path", &self.path)
            .field("contract", &self.contract)
            .field("sha256", &self.sha256)
            .finish()
    }
}

const WASM_MAGIC: &[u8; 4] = b"\0asm";
const CORE_MODULE_VERSION: [u8; 4] = [1, 0, 0, 0];

impl Plugin {
    pub(super) fn compile(
        engine: &Engine,
        path: &Path,
        bytes: &[u8],
        cache: Option<&Path>,
    ) -> Result<Self, SandboxError> {
        let invalid = |reason: String| SandboxError::Invalid {
            path: path.to_owned(),
            reason,
        };
        match bytes.get(..8) {
            Some(head) if head.starts_with(WASM_MAGIC) => {
                if head[4..8] == CORE_MODULE_VERSION {
                    return Err(invalid(
                        "this is a core WebAssembly module, not a component; build the strategy with `--target wasm32-wasip2`".into(),
                    ));
                }
            }
            _ => {
                return Err(invalid(format!(
                    "not a WebAssembly file ({} bytes, no \\0asm header); is it truncated or mis-named?",
                    bytes.len()
                )));
            }
        }
        let sha256 = hex(&Sha256::digest(bytes));
        let cached = cache.and_then(|dir| cache::load(engine, dir, &sha256));
        let from_cache = cached.is_some();
        let component = match cached {
            Some(c) => c,
            None => Component::from_binary(engine, bytes)
                .map_err(|e| invalid(format!("corrupt or invalid component: {e:#}")))?,
        };
        let contract = contract_version(engine, &component).map_err(invalid)?;
        if !contract.runs_on(CONTRACT_VERSION) {
            return Err(SandboxError::Incompatible {
                path: path.to_owned(),
                found: contract,
                supported: CONTRACT_VERSION,
            });
        }
        if let (Some(dir), false) = (cache, from_cache) {
            cache::store(engine, dir, &sha256, &component);
        }
        let file_name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        Ok(Self {
            path: path.to_owned(),
            file_name,
            contract,
            sha256,
            component,
            from_cache,
        })
    }

    /// Whether the compiled code came from the cache.
    #[must_use]
    pub fn from_cache(&self) -> bool {
        self.from_cache
    }

    /// Where it was loaded from.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file name, used to tag messages until the plugin has described itself.
    #[must_use]
    pub fn file_name(&self) -> &str {
        &self.file_name
    }

    /// The contract version it implements.
    #[must_use]
    pub fn contract(&self) -> Version {
        self.contract
    }

    /// SHA-256 of the file, hex.
    #[must_use]
    pub fn sha256(&self) -> &str {
        &self.sha256
    }
}

/// Compiled plugins on disk: `<sha256 of the .wasm>-<engine settings>.cwasm`
/// with a `.sha256` of the compiled bytes beside it, checked before loading.
mod cache {
    use std::hash::{Hash as _, Hasher as _};
    use std::path::{Path, PathBuf};

    use sha2::{Digest as _, Sha256};
    use wasmtime::Engine;
    use wasmtime::component::Component;

    fn file(engine: &Engine, dir: &Path, sha256: &str) -> PathBuf {
        // Compiled code is only valid for the same wasmtime and the same engine settings.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        dir.join(format!("{sha256}-{:016x}.cwasm", h.finish()))
    }

    pub(super) fn load(engine: &Engine, dir: &Path, sha256: &str) -> Option<Component> {
        let path = file(engine, dir, sha256);
        let bytes = std::fs::read(&path).ok()?;
        let want = std::fs::read_to_string(path.with_extension("sha256")).ok()?;
        if super::hex(&Sha256::digest(&bytes)) != want.trim() {
            tracing::warn!(
                "compiled-code cache {} does not match its checksum; recompiling",
                path.display()
            );
            return None;
        }
        // SAFETY: wasmtime runs deserialized code without verifying it. These bytes were
        // written by `store` below for this engine's settings, and their SHA-256 was just
        // checked, so a truncated, corrupted or swapped file never reaches wasmtime.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(engine, &bytes) };
        component
            .map_err(|e| tracing::warn!("compiled-code cache {}: {e}; recompiling", path.display()))
            .ok()
    }

    pub(super) fn store(engine: &Engine, dir: &Path, sha256: &str, component: &Component) {
        let Ok(bytes) = component.serialize() else {
            return;
        };
        let path = file(engine, dir, sha256);
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(dir)?;
            // Write then rename, so a reader never sees half a file.
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&tmp, &bytes)?;
            std::fs::write(
                path.with_extension("sha256"),
                super::hex(&Sha256::digest(&bytes)),
            )?;
            std::fs::rename(tmp, &path)
        };
        if let Err(e) = write() {
            tracing::warn!(
                "could not write the compiled-code cache {}: {e}",
                path.display()
            );
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The version of `tradehost:strategy/strategy` the component exports.
fn contract_version(engine: &Engine, component: &Component) -> Result<Version, String> {
    let prefix = format!("{CONTRACT_PACKAGE}/strategy");
    let ty = component.component_type();
    let mut exported = Vec::new();
    for (name, item) in ty.exports(engine) {
        exported.push(name.to_owned());
        if let Some(rest) = name.strip_prefix(&prefix) {
            if !matches!(item.ty, ComponentItem::ComponentInstance(_)) {
                continue;
            }
            let version = rest
                .strip_prefix('@')
                .ok_or_else(|| format!("it exports {name} without a version"))?;
            return Version::parse(version).ok_or_else(|| {
                format!("it exports {name}, whose version is not MAJOR.MINOR.PATCH")
            });
        }
    }
    Err(format!(
        "it does not export {prefix} (it exports: {}); is it a tradehost strategy built with strategy-sdk?",
        if exported.is_empty() {
            "nothing".to_owned()
        } else {
            exported.join(", ")
        }
    ))
}

/// Store data of one instance.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    plugin: Arc<str>,
    memory_bytes: usize,
    memory_denied: bool,
    /// The linear memory the plugin holds (the largest it grew to).
    memory_used: usize,
    log_lines: usize,
    max_log_lines: usize,
    dropped_log_lines: u64,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= self.memory_bytes;
        self.memory_denied |= !allowed;
        if allowed {
            self.memory_used = self.memory_used.max(desired);
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

impl tradehost::strategy::log::Host for HostState {
    fn log(&mut self, level: tradehost::strategy::log::Level, message: String) {
        use tradehost::strategy::log::Level;
        self.log_lines += 1;
        if self.log_lines > self.max_log_lines {
            self.dropped_log_lines += 1;
            return;
        }
        let message = truncate(&message, 2048);
        let plugin = &*self.plugin;
        match level {
            Level::Trace => tracing::trace!(target: "plugin", plugin, "{message}"),
            Level::Debug => tracing::debug!(target: "plugin", plugin, "{message}"),
            Level::Info => tracing::info!(target: "plugin", plugin, "{message}"),
            Level::Warn => tracing::warn!(target: "plugin", plugin, "{message}"),
            Level::Error => tracing::error!(target: "plugin", plugin, "{message}"),
        }
    }
}

impl tradehost::strategy::types::Host for HostState {}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// No real time reaches a plugin: both WASI clocks read zero, so a strategy
/// can only know the time its events carry, and a backtest and a live run
/// of the same data agree.
struct FrozenClock;

impl wasmtime_wasi::HostWallClock for FrozenClock {
    fn resolution(&self) -> std::time::Duration {
        std::time::Duration::from_secs(1)
    }
    fn now(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

impl wasmtime_wasi::HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// A running plugin: its own store, memory and budget.
pub struct PluginInstance {
    store: Store<HostState>,
    bindings: Bindings,
    limits: SandboxLimits,
    name: String,
    version: String,
    stderr: MemoryOutputPipe,
    stopped: bool,
    usage: PluginUsage,
}

/// What an instance has used, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PluginUsage {
    /// Fuel burned over every call (0 when the budget is in time).
    pub fuel_total: u64,
    /// Its linear memory, in bytes.
    pub memory_bytes: u64,
    /// Time spent in its calls, in microseconds (a live pipeline's budget is in time, not fuel).
    pub busy_us: u64,
}

impl std::fmt::Debug for PluginInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginInstance")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("stopped", &self.stopped)
            .finish()
    }
}

impl PluginInstance {
    pub(super) fn new(
        engine: &Engine,
        linker: &Linker<HostState>,
        plugin: &Plugin,
        limits: &SandboxLimits,
        params: &[(String, String)],
    ) -> Result<Self, SandboxError> {
        let stderr = MemoryOutputPipe::new(8 * 1024);
        // Nothing is granted: no preopened directories, no environment, no
        // arguments, no network, frozen clocks and a fixed "random" source.
        let wasi = WasiCtxBuilder::new()
            .stderr(stderr.clone())
            .wall_clock(FrozenClock)
            .monotonic_clock(FrozenClock)
            .secure_random(wasmtime_wasi::Deterministic::new(vec![4, 2]))
            .insecure_random(wasmtime_wasi::Deterministic::new(vec![4, 2]))
            .insecure_random_seed(42)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let state = HostState {
            wasi,
            table: ResourceTable::new(),
            plugin: Arc::from(plugin.file_name()),
            memory_bytes: limits.memory_bytes,
            memory_denied: false,
            memory_used: 0,
            log_lines: 0,
            max_log_lines: limits.max_log_lines_per_call,
            dropped_log_lines: 0,
        };
        let mut store = Store::new(engine, state);
        store.limiter(|s| s);
        let mut this_store = store;
        arm(&mut this_store, limits, limits.init_events);
        let refused = |stage, reason| SandboxError::Refused {
            plugin: plugin.file_name().to_owned(),
            stage,
            reason,
        };
        // Each plugin runs with the bindings of the contract it was built against.
        let instantiated = if plugin.contract.minor == 0 {
            bindings_1_0::StrategyPlugin::instantiate(&mut this_store, &plugin.component, linker)
                .map(Bindings::V1_0)
        } else if plugin.contract.minor == 1 {
            bindings_1_1::StrategyPlugin::instantiate(&mut this_store, &plugin.component, linker)
                .map(Bindings::V1_1)
        } else {
            StrategyPlugin::instantiate(&mut this_store, &plugin.component, linker)
                .map(Bindings::Current)
        };
        let bindings = match instantiated {
            Ok(b) => b,
            // Not a trap: the component's imports or exports do not have the shapes this
            // host's contract gives them (a plugin built from a modified or mismatched WIT).
            Err(e) if e.downcast_ref::<Trap>().is_none() => {
                return Err(refused(
                    "instantiate",
                    format!(
                        "its imports or exports do not match {CONTRACT_PACKAGE}@{} as this host defines it: {e:#}",
                        plugin.contract
                    ),
                ));
            }
            Err(e) => {
                return Err(classify(
                    plugin.file_name(),
                    "instantiate",
                    limits,
                    limits.init_events,
                    &this_store,
                    &stderr,
                    e,
                ));
            }
        };
        let mut instance = Self {
            store: this_store,
            bindings,
            limits: limits.clone(),
            name: plugin.file_name().to_owned(),
            version: String::new(),
            stderr,
            stopped: false,
            usage: PluginUsage::default(),
        };
        let info = instance.call("describe", limits.init_events, |b, s| b.describe(s))?;
        instance.name = info.name;
        instance.version = info.version;
        instance.store.data_mut().plugin = Arc::from(instance.name.as_str());
        let init = instance.call("init", limits.init_events, |b, s| b.init(s, params))?;
        init.map_err(|reason| refused("init", reason))?;
        Ok(instance)
    }

    /// The name the plugin gives itself (its crate name).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The plugin's own version.
    #[must_use]
    pub fn version(&self) -> &str {
        &self.version
    }

    /// True once a call failed: the instance must be replaced.
    #[must_use]
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Fuel burned and memory held so far.
    #[must_use]
    pub fn usage(&self) -> PluginUsage {
        self.usage
    }

    /// Log lines dropped because a call wrote more than its allowance.
    #[must_use]
    pub fn dropped_log_lines(&self) -> u64 {
        self.store.data().dropped_log_lines
    }

    /// Run one export under the budget for `events` events. Any failure stops
    /// the instance: after a trap its state cannot be trusted.
    pub(crate) fn call<R>(
        &mut self,
        call: &'static str,
        events: usize,
        f: impl FnOnce(&Bindings, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, SandboxError> {
        if self.stopped {
            return Err(SandboxError::Stopped {
                plugin: self.name.clone(),
            });
        }
        arm(&mut self.store, &self.limits, events);
        let started = std::time::Instant::now();
        let result = f(&self.bindings, &mut self.store);
        self.usage.busy_us = self
            .usage
            .busy_us
            .saturating_add(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
        if let super::CpuBudget::Fuel { .. } = self.limits.cpu {
            let used = self
                .limits
                .cpu
                .fuel_for(events)
                .saturating_sub(self.store.get_fuel().unwrap_or(0));
            self.usage.fuel_total = self.usage.fuel_total.saturating_add(used);
        }
        self.usage.memory_bytes = u64::try_from(self.store.data().memory_used).unwrap_or(u64::MAX);
        match result {
            Ok(r) => Ok(r),
            Err(e) => {
                self.stopped = true;
                Err(classify(
                    &self.name,
                    call,
                    &self.limits,
                    events,
                    &self.store,
                    &self.stderr,
                    e,
                ))
            }
        }
    }

    /// Refuse a result with more signals than `events` events may produce.
    pub(crate) fn check_flood(
        &mut self,
        call: &'static str,
        count: usize,
        events: usize,
    ) -> Result<(), SandboxError> {
        let limit = self
            .limits
            .max_signals_per_event
            .saturating_mul(events.max(1));
        if count > limit {
            self.stopped = true;
            return Err(SandboxError::SignalFlood {
                plugin: self.name.clone(),
                call,
                count,
                limit,
            });
        }
        Ok(())
    }
}

fn arm(store: &mut Store<HostState>, limits: &SandboxLimits, events: usize) {
    match limits.cpu {
        super::CpuBudget::Fuel { .. } => {
            // Only fails when fuel is not enabled, which Sandbox::new guarantees it is.
            let _ = store.set_fuel(limits.cpu.fuel_for(events));
        }
        super::CpuBudget::Time { .. } => store.set_epoch_deadline(limits.cpu.ticks_for(events)),
    }
    let data = store.data_mut();
    data.log_lines = 0;
    data.memory_denied = false;
}

fn classify(
    plugin: &str,
    call: &'static str,
    limits: &SandboxLimits,
    events: usize,
    store: &Store<HostState>,
    stderr: &MemoryOutputPipe,
    error: wasmtime::Error,
) -> SandboxError {
    let plugin = plugin.to_owned();
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel | Trap::Interrupt) => {
            return SandboxError::CpuBudget {
                plugin,
                call,
                budget: limits.cpu.describe(events),
            };
        }
        _ if store.data().memory_denied => {
            return SandboxError::MemoryCap {
                plugin,
                call,
                cap_bytes: limits.memory_bytes,
            };
        }
        _ => {}
    }
    let printed = String::from_utf8_lossy(&stderr.contents())
        .trim()
        .to_owned();
    let trap = error
        .downcast_ref::<Trap>()
        .map_or_else(|| format!("{error:#}"), ToString::to_string);
    let reason = if printed.is_empty() {
        trap
    } else {
        format!("{trap}; it printed: {}", truncate(&printed, 1024))
    };
    SandboxError::Trapped {
        plugin,
        call,
        reason,
    }
}

pub(crate) fn plugin_bar(b: &strategy_sdk::Bar) -> wit::Bar {
    wit::Bar {
        ts: b.ts,
        open: b.open,
        high: b.high,
        low: b.low,
        close: b.close,
        volume: b.volume,
        oi: b.oi,
    }
}
