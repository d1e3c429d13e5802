//! The sandbox: each strategy runs as a WebAssembly component in its own
//! wasmtime store, with a WASI context that grants nothing, a CPU budget per
//! call and a memory cap per instance. A plugin that traps, loops or
//! over-allocates comes back as a [`SandboxError`] naming it; the host never
//! panics on its account.
//!
//! CPU budgets come in two kinds. **Fuel** counts instructions: the same
//! plugin on the same data always stops at the same point, which a backtest
//! needs. **Time** (epoch interruption) bounds wall-clock time at a lower
//! per-instruction cost, which live trading needs; a tick thread advances the
//! engine's epoch every millisecond.

mod compat;
mod limits;
mod plugin;

pub use limits::{CpuBudget, SandboxLimits};
pub(crate) use plugin::plugin_bar;
pub use plugin::{Plugin, PluginInstance, PluginUsage};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine};

/// Host-side bindings of the WIT contract, generated from `strategy-sdk/wit`.
mod bindings {
    #![allow(missing_docs)]
    wasmtime::component::bindgen!({
        path: "../strategy-sdk/wit",
        world: "strategy-plugin",
    });
}

/// Bindings of contract 1.0 (`host/wit/contract-1.0.0`, the file as it was
/// released), so a plugin built against it runs unchanged on this host.
mod bindings_1_0 {
    #![allow(missing_docs)]
    wasmtime::component::bindgen!({
        path: "wit/contract-1.0.0",
        world: "strategy-plugin",
    });
}

/// Bindings of contract 1.1 (`host/wit/contract-1.1.0`, the file as it was released).
mod bindings_1_1 {
    #![allow(missing_docs)]
    wasmtime::component::bindgen!({
        path: "wit/contract-1.1.0",
        world: "strategy-plugin",
    });
}

use bindings::StrategyPlugin;
pub(crate) use bindings::tradehost;
pub(crate) use bindings::tradehost::strategy::types as wit;

/// The contract version this host implements.
pub const CONTRACT_VERSION: Version = Version {
    major: 1,
    minor: 2,
    patch: 0,
};
/// The WIT package of the contract.
pub const CONTRACT_PACKAGE: &str = "tradehost:strategy";

/// A semantic version of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    /// Breaking changes.
    pub major: u64,
    /// Additions.
    pub minor: u64,
    /// Fixes.
    pub patch: u64,
}

impl Version {
    /// Parse `1.2.3`.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split('.').map(|p| p.parse::<u64>().ok());
        let v = Self {
            major: parts.next()??,
            minor: parts.next()??,
            patch: parts.next()??,
        };
        parts.next().is_none().then_some(v)
    }

    /// Whether a plugin built against `self` can run on a host implementing `host`:
    /// same major version (for 0.x the same minor), and not newer than the host.
    #[must_use]
    pub fn runs_on(self, host: Self) -> bool {
        let same_line = if host.major == 0 {
            self.major == 0 && self.minor == host.minor
        } else {
            self.major == host.major
        };
        same_line && self <= host
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// What went wrong with a plugin.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The file could not be read.
    #[error("loading {path}: {source}")]
    Read {
        /// The plugin file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The bytes are not a usable component.
    #[error("loading {path}: {reason}")]
    Invalid {
        /// The plugin file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The plugin implements a contract version this host cannot run.
    #[error("loading {path}: it implements {CONTRACT_PACKAGE}@{found}, but this host supports {CONTRACT_PACKAGE}@{supported} (plugins of {}.x up to {supported}); rebuild it against strategy-sdk for contract {supported}", supported.major)]
    Incompatible {
        /// The plugin file.
        path: PathBuf,
        /// Its contract version.
        found: Version,
        /// The host's.
        supported: Version,
    },
    /// Instantiation or `init` failed.
    #[error("plugin {plugin}: {stage} failed: {reason}")]
    Refused {
        /// The plugin's name.
        plugin: String,
        /// `instantiate` or `init`.
        stage: &'static str,
        /// Why.
        reason: String,
    },
    /// A call ran out of its CPU budget and was stopped.
    #[error("plugin {plugin}: {call} exceeded its CPU budget ({budget}) and was stopped")]
    CpuBudget {
        /// The plugin's name.
        plugin: String,
        /// Which export.
        call: &'static str,
        /// The budget, human-readable.
        budget: String,
    },
    /// A call tried to grow memory past the cap and died of it.
    #[error("plugin {plugin}: {call} hit the memory cap of {cap_bytes} bytes and was stopped")]
    MemoryCap {
        /// The plugin's name.
        plugin: String,
        /// Which export.
        call: &'static str,
        /// The cap.
        cap_bytes: usize,
    },
    /// A call trapped (a panic, stack overflow, bad memory access…).
    #[error("plugin {plugin}: {call} trapped: {reason}")]
    Trapped {
        /// The plugin's name.
        plugin: String,
        /// Which export.
        call: &'static str,
        /// The trap.
        reason: String,
    },
    /// A call returned more signals than allowed.
    #[error("plugin {plugin}: {call} returned {count} signals, more than the limit of {limit}")]
    SignalFlood {
        /// The plugin's name.
        plugin: String,
        /// Which export.
        call: &'static str,
        /// How many it returned.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// The instance died earlier and cannot be called again.
    #[error("plugin {plugin}: stopped after an earlier failure; it must be restarted")]
    Stopped {
        /// The plugin's name.
        plugin: String,
    },
}

/// Compiles plugins and creates their instances. One per process (or per
/// budget kind): compiled code is tied to its engine.
pub struct Sandbox {
    engine: Engine,
    linker: Arc<Linker<plugin::HostState>>,
    limits: SandboxLimits,
    ticker_stop: Option<Arc<AtomicBool>>,
    cache_dir: Option<PathBuf>,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(stop) = &self.ticker_stop {
            stop.store(true, Ordering::Relaxed);
        }
    }
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// How often the epoch advances when budgets are in time.
const EPOCH_TICK: Duration = Duration::from_millis(1);

impl Sandbox {
    /// A sandbox whose instances get `limits`.
    ///
    /// # Errors
    /// When wasmtime cannot create an engine for this machine.
    pub fn new(limits: SandboxLimits) -> anyhow::Result<Self> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.max_wasm_stack(limits.stack_bytes);
        match limits.cpu {
            CpuBudget::Fuel { .. } => {
                config.consume_fuel(true);
            }
            CpuBudget::Time { .. } => {
                config.epoch_interruption(true);
            }
        }
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        StrategyPlugin::add_to_linker::<_, HasSelf<plugin::HostState>>(&mut linker, |state| state)?;
        bindings_1_0::StrategyPlugin::add_to_linker::<_, HasSelf<plugin::HostState>>(
            &mut linker,
            |state| state,
        )?;
        bindings_1_1::StrategyPlugin::add_to_linker::<_, HasSelf<plugin::HostState>>(
            &mut linker,
            |state| state,
        )?;
        let ticker_stop = matches!(limits.cpu, CpuBudget::Time { .. }).then(|| {
            let stop = Arc::new(AtomicBool::new(false));
            let (engine, flag) = (engine.clone(), stop.clone());
            std::thread::Builder::new()
                .name("wasm-epoch".into())
                .spawn(move || {
                    while !flag.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map(|_| stop)
        });
        let ticker_stop = ticker_stop.transpose()?;
        Ok(Self {
            engine,
            linker: Arc::new(linker),
            limits,
            ticker_stop,
            cache_dir: None,
        })
    }

    /// Keep compiled plugins in `dir`, keyed by the file's content hash and this
    /// engine's settings, so a restart or a reload of an unchanged file does not recompile.
    #[must_use]
    pub fn with_cache(mut self, dir: PathBuf) -> Self {
        self.cache_dir = Some(dir);
        self
    }

    /// The limits every instance gets.
    #[must_use]
    pub fn limits(&self) -> &SandboxLimits {
        &self.limits
    }

    /// Read, check and compile a plugin file.
    ///
    /// # Errors
    /// [`SandboxError::Read`], [`SandboxError::Invalid`] (not a component, corrupt,
    /// not a strategy) or [`SandboxError::Incompatible`] (wrong contract version).
    pub fn load_file(&self, path: &Path) -> Result<Plugin, SandboxError> {
        let bytes = std::fs::read(path).map_err(|source| SandboxError::Read {
            path: path.to_owned(),
            source,
        })?;
        self.load_bytes(path, &bytes)
    }

    /// Check and compile a plugin from its bytes; `path` names it in messages.
    ///
    /// # Errors
    /// As [`Sandbox::load_file`].
    pub fn load_bytes(&self, path: &Path, bytes: &[u8]) -> Result<Plugin, SandboxError> {
        Plugin::compile(&self.engine, path, bytes, self.cache_dir.as_deref())
    }

    /// Instantiate a compiled plugin and call its `init` with `params`.
    ///
    /// # Errors
    /// [`SandboxError::Refused`] when instantiation or `init` fails, or a budget
    /// error when `init` runs out of CPU or memory.
    pub fn instantiate(
        &self,
        plugin: &Plugin,
        params: &[(String, String)],
    ) -> Result<PluginInstance, SandboxError> {
        PluginInstance::new(&self.engine, &self.linker, plugin, &self.limits, params)
    }

    /// Like [`Sandbox::instantiate`], with limits of the pipeline's own (the
    /// budget's kind, fuel or time, and the stack stay the sandbox's).
    ///
    /// # Errors
    /// As [`Sandbox::instantiate`].
    pub fn instantiate_with(
        &self,
        plugin: &Plugin,
        params: &[(String, String)],
        limits: &SandboxLimits,
    ) -> Result<PluginInstance, SandboxError> {
        let limits = SandboxLimits {
            stack_bytes: self.limits.stack_bytes,
            ..limits.clone()
        };
        PluginInstance::new(&self.engine, &self.linker, plugin, &limits, params)
    }
}
