//! Plugins of an earlier minor contract: their bindings, and the conversions
//! between their types and the current ones. A 1.0 plugin gets the same events
//! (the event types did not change) and its signals go at the market, for the day.

use wasmtime::Store;

use super::plugin::HostState;
use super::{StrategyPlugin, bindings_1_0, wit};

use bindings_1_0::tradehost::strategy::types as v1_0;

/// A plugin's bindings, by the contract it was built against.
pub(crate) enum Bindings {
    /// The current contract.
    Current(StrategyPlugin),
    /// Contract 1.0.
    V1_0(bindings_1_0::StrategyPlugin),
}

impl Bindings {
    pub(crate) fn describe(&self, s: &mut Store<HostState>) -> wasmtime::Result<wit::PluginInfo> {
        match self {
            Self::Current(b) => b.tradehost_strategy_strategy().call_describe(s),
            Self::V1_0(b) => {
                b.tradehost_strategy_strategy()
                    .call_describe(s)
                    .map(|i| wit::PluginInfo {
                        name: i.name,
                        version: i.version,
                    })
            }
        }
    }

    pub(crate) fn init(
        &self,
        s: &mut Store<HostState>,
        params: &[(String, String)],
    ) -> wasmtime::Result<Result<(), String>> {
        match self {
            Self::Current(b) => b.tradehost_strategy_strategy().call_init(s, params),
            Self::V1_0(b) => b.tradehost_strategy_strategy().call_init(s, params),
        }
    }

    pub(crate) fn on_candle(
        &self,
        s: &mut Store<HostState>,
        c: &wit::Candle,
    ) -> wasmtime::Result<Vec<wit::Signal>> {
        match self {
            Self::Current(b) => b.tradehost_strategy_strategy().call_on_candle(s, c),
            Self::V1_0(b) => {
                let c = v1_0::Candle {
                    instrument: c.instrument.clone(),
                    timeframe_secs: c.timeframe_secs,
                    bar: bar(&c.bar),
                };
                Ok(b.tradehost_strategy_strategy()
                    .call_on_candle(s, &c)?
                    .into_iter()
                    .map(signal)
                    .collect())
            }
        }
    }

    pub(crate) fn on_candles(
        &self,
        s: &mut Store<HostState>,
        batch: &wit::CandleBatch,
    ) -> wasmtime::Result<Vec<wit::BatchSignal>> {
        match self {
            Self::Current(b) => b.tradehost_strategy_strategy().call_on_candles(s, batch),
            Self::V1_0(b) => {
                let batch = v1_0::CandleBatch {
                    instrument: batch.instrument.clone(),
                    timeframe_secs: batch.timeframe_secs,
                    ts: batch.ts.clone(),
                    open: batch.open.clone(),
                    high: batch.high.clone(),
                    low: batch.low.clone(),
                    close: batch.close.clone(),
                    volume: batch.volume.clone(),
                    oi: batch.oi.clone(),
                };
                let out = b.tradehost_strategy_strategy().call_on_candles(s, &batch)?;
                Ok(out
                    .into_iter()
                    .map(|bs| wit::BatchSignal {
                        bar_index: bs.bar_index,
                        signal: signal(bs.signal),
                    })
                    .collect())
            }
        }
    }

    pub(crate) fn on_option_chain(
        &self,
        s: &mut Store<HostState>,
        c: &wit::OptionChain,
    ) -> wasmtime::Result<Vec<wit::Signal>> {
        match self {
            Self::Current(b) => b.tradehost_strategy_strategy().call_on_option_chain(s, c),
            Self::V1_0(b) => {
                let leg = |l: &wit::OptionLeg| v1_0::OptionLeg {
                    last: l.last,
                    oi: l.oi,
                    volume: l.volume,
                };
                let chain = v1_0::OptionChain {
                    underlying: c.underlying.clone(),
                    ts: c.ts,
                    spot: c.spot,
                    expiries: c
                        .expiries
                        .iter()
                        .map(|e| v1_0::ExpiryChain {
                            expiry: e.expiry.clone(),
                            strikes: e
                                .strikes
                                .iter()
                                .map(|r| v1_0::StrikeRow {
                                    strike: r.strike,
                                    ce: r.ce.as_ref().map(leg),
                                    pe: r.pe.as_ref().map(leg),
                                })
                                .collect(),
                        })
                        .collect(),
                };
                Ok(b.tradehost_strategy_strategy()
                    .call_on_option_chain(s, &chain)?
                    .into_iter()
                    .map(signal)
                    .collect())
            }
        }
    }

    pub(crate) fn snapshot(&self, s: &mut Store<HostState>) -> wasmtime::Result<Vec<u8>> {
        match self {
            Self::Current(b) => b.tradehost_strategy_strategy().call_snapshot(s),
            Self::V1_0(b) => b.tradehost_strategy_strategy().call_snapshot(s),
        }
    }

    pub(crate) fn restore(
        &self,
        s: &mut Store<HostState>,
        state: &[u8],
    ) -> wasmtime::Result<Result<(), String>> {
        match self {
            Self::Current(b) => b.tradehost_strategy_strategy().call_restore(s, state),
            Self::V1_0(b) => b.tradehost_strategy_strategy().call_restore(s, state),
        }
    }
}

fn bar(b: &wit::Bar) -> v1_0::Bar {
    v1_0::Bar {
        ts: b.ts,
        open: b.open,
        high: b.high,
        low: b.low,
        close: b.close,
        volume: b.volume,
        oi: b.oi,
    }
}

/// A 1.0 signal: at the market, for the day.
fn signal(s: v1_0::Signal) -> wit::Signal {
    let side = match s.side {
        v1_0::Side::Buy => wit::Side::Buy,
        v1_0::Side::Sell => wit::Side::Sell,
        v1_0::Side::Exit => wit::Side::Exit,
    };
    wit::Signal {
        instrument: s.instrument,
        side,
        reason: s.reason,
        stop_loss: s.stop_loss,
        target: s.target,
        strength: s.strength,
        order: wit::OrderType::Market,
        validity: wit::Validity::Day,
    }
}

impl bindings_1_0::tradehost::strategy::log::Host for HostState {
    fn log(&mut self, level: bindings_1_0::tradehost::strategy::log::Level, message: String) {
        use super::tradehost::strategy::log::{Host, Level};
        use bindings_1_0::tradehost::strategy::log::Level as L;
        let level = match level {
            L::Trace => Level::Trace,
            L::Debug => Level::Debug,
            L::Info => Level::Info,
            L::Warn => Level::Warn,
            L::Error => Level::Error,
        };
        Host::log(self, level, message);
    }
}

impl v1_0::Host for HostState {}
