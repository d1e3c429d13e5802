//! Per-plugin resource limits, with defaults safe for a trading host.

use std::time::Duration;

/// How a call's CPU use is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuBudget {
    /// Deterministic: instructions ("fuel") per event; a call gets
    /// `per_event × max(1, events in the call)`.
    Fuel {
        /// Fuel per event.
        per_event: u64,
    },
    /// Wall clock per event; a call gets `per_event × max(1, events in the call)`,
    /// rounded up to whole milliseconds.
    Time {
        /// Time per event.
        per_event: Duration,
    },
}

impl CpuBudget {
    /// Fuel units for a call handling `events` events.
    #[must_use]
    pub fn fuel_for(self, events: usize) -> u64 {
        match self {
            Self::Fuel { per_event } => per_event.saturating_mul(events.max(1) as u64),
            Self::Time { .. } => u64::MAX,
        }
    }

    /// Epoch ticks (milliseconds) for a call handling `events` events.
    #[must_use]
    pub fn ticks_for(self, events: usize) -> u64 {
        match self {
            Self::Time { per_event } => {
                let total =
                    per_event.saturating_mul(u32::try_from(events.max(1)).unwrap_or(u32::MAX));
                u64::try_from(total.as_millis()).unwrap_or(u64::MAX).max(1)
            }
            Self::Fuel { .. } => u64::MAX,
        }
    }

    /// The budget of a call with `events` events, for messages.
    #[must_use]
    pub fn describe(self, events: usize) -> String {
        match self {
            Self::Fuel { .. } => format!("{} instructions of fuel", self.fuel_for(events)),
            Self::Time { .. } => format!("{} ms", self.ticks_for(events)),
        }
    }
}

/// Limits applied to every instance of a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxLimits {
    /// CPU per call.
    pub cpu: CpuBudget,
    /// How many events' worth of CPU `init` (and instantiation) may use.
    pub init_events: usize,
    /// Linear memory per instance, in bytes.
    pub memory_bytes: usize,
    /// WebAssembly stack, in bytes: deep recursion traps instead of
    /// overflowing the host's stack.
    pub stack_bytes: usize,
    /// Most signals one event may produce; a batch may produce this many per bar.
    pub max_signals_per_event: usize,
    /// Most log lines one call may write; the rest are counted and dropped.
    pub max_log_lines_per_call: usize,
}

impl SandboxLimits {
    /// Deterministic limits for backtests: fuel budgets.
    #[must_use]
    pub fn backtest() -> Self {
        Self {
            cpu: CpuBudget::Fuel {
                per_event: 20_000_000,
            },
            ..Self::live()
        }
    }

    /// Limits for live trading: 50 ms of CPU per event.
    #[must_use]
    pub fn live() -> Self {
        Self {
            cpu: CpuBudget::Time {
                per_event: Duration::from_millis(50),
            },
            init_events: 20,
            memory_bytes: 64 << 20,
            stack_bytes: 512 << 10,
            max_signals_per_event: 16,
            max_log_lines_per_call: 100,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_scale_with_events() {
        let fuel = CpuBudget::Fuel { per_event: 1000 };
        assert_eq!(
            (fuel.fuel_for(0), fuel.fuel_for(1), fuel.fuel_for(4096)),
            (1000, 1000, 4_096_000)
        );
        let time = CpuBudget::Time {
            per_event: Duration::from_micros(300),
        };
        assert_eq!((time.ticks_for(1), time.ticks_for(10)), (1, 3));
        assert_eq!(fuel.describe(2), "2000 instructions of fuel");
    }
}
