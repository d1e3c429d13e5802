//! Plugins of an earlier minor contract: their bindings, and the conversions
//! between their types and the current ones. A 1.0 plugin gets the same events
//! (its option legs without greeks) and its signals go at the market, for the
//! day; a 1.1 plugin gets option legs without greeks and keeps its order terms.

use wasmtime::Store;

use super::plugin::HostState;
use super::{StrategyPlugin, bindings_1_0, bindings_1_1, wit};

use bindings_1_0::tradehost::strategy::types as v1_0;
use bindings_1_1::tradehost::strategy::types as v1_1;

/// A plugin's bindings, by the contract it was built against.
pub(crate) enum Bindings {
    /// The current contract.
    Current(StrategyPlugin),
    /// Contract 1.1.
    V1_1(bindings_1_1::StrategyPlugin),
    /// Contract 1.0.
    V1_0(bindings_1_0::StrategyPlugin),
}

/// The events as an earlier contract's types. 1.0 and 1.1 have the same event records
/// (an option leg without greeks); only the types their bindings generate differ.
macro_rules! events_in {
    ($name:ident, $($types:ident)::+) => {
        mod $name {
            use super::wit;
            use $($types)::+ as v;

            pub(super) fn bar(b: &wit::Bar) -> v::Bar {
                v::Bar {
                    ts: b.ts,
                    open: b.open,
                    high: b.high,
                    low: b.low,
                    close: b.close,
                    volume: b.volume,
                    oi: b.oi,
                }
            }

            pub(super) fn candle(c: &wit::Candle) -> v::Candle {
                v::Candle {
                    instrument: c.instrument.clone(),
                    timeframe_secs: c.timeframe_secs,
                    bar: bar(&c.bar),
                }
            }

            pub(super) fn batch(b: &wit::CandleBatch) -> v::CandleBatch {
                v::CandleBatch {
                    instrument: b.instrument.clone(),
                    timeframe_secs: b.timeframe_secs,
                    ts: b.ts.clone(),
                    open: b.open.clone(),
                    high: b.high.clone(),
                    low: b.low.clone(),
                    close: b.close.clone(),
                    volume: b.volume.clone(),
                    oi: b.oi.clone(),
                }
            }

            /// The chain without its greeks, which the contract does not have.
            pub(super) fn chain(c: &wit::OptionChain) -> v::OptionChain {
                let leg = |l: &wit::OptionLeg| v::OptionLeg {
                    last: l.last,
                    oi: l.oi,
                    volume: l.volume,
                };
                v::OptionChain {
                    underlying: c.underlying.clone(),
                    ts: c.ts,
                    spot: c.spot,
                    expiries: c
                        .expiries
                        .iter()
                        .map(|e| v::ExpiryChain {
                            expiry: e.expiry.clone(),
                            strikes: e
                                .strikes
                                .iter()
                                .map(|r| v::StrikeRow {
                                    strike: r.strike,
                                    ce: r.ce.as_ref().map(leg),
                                    pe: r.pe.as_ref().map(leg),
                                })
                                .collect(),
                        })
                        .collect(),
                }
            }
        }
    };
}

events_in!(to_v1_0, super::bindings_1_0::tradehost::strategy::types);
events_in!(to_v1_1, super::bindings_1_1::tradehost::strategy::types);

impl Bindings {
    pub(crate) fn describe(&self, s: &mut Store<HostState>) -> wasmtime::Result<wit::PluginInfo> {
        match self {
            Self::Current(b) => b.tradehost_strategy_strategy().call_describe(s),
            Self::V1_1(b) => {
                b.tradehost_strategy_strategy()
                    .call_describe(s)
                    .map(|i| wit::PluginInfo {
                        name: i.name,
                        version: i.version,
                    })
            }
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
            Self::V1_1(b) => b.tradehost_strategy_strategy().call_init(s, params),
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
            Self::V1_1(b) => Ok(b
                .tradehost_strategy_strategy()
                .call_on_candle(s, &to_v1_1::candle(c))?
                .into_iter()
                .map(signal_1_1)
                .collect()),
            Self::V1_0(b) => Ok(b
                .tradehost_strategy_strategy()
                .call_on_candle(s, &to_v1_0::candle(c))?
                .into_iter()
                .map(signal_1_0)
                .collect()),
        }
    }

    pub(crate) fn on_candles(
        &self,
        s: &mut Store<HostState>,
        batch: &wit::CandleBatch,
    ) -> wasmtime::Result<Vec<wit::BatchSignal>> {
        match self {
            Self::Current(b) => b.tradehost_strategy_strategy().call_on_candles(s, batch),
            Self::V1_1(b) => Ok(b
                .tradehost_strategy_strategy()
                .call_on_candles(s, &to_v1_1::batch(batch))?
                .into_iter()
                .map(|bs| wit::BatchSignal {
                    bar_index: bs.bar_index,
                    signal: signal_1_1(bs.signal),
                })
                .collect()),
            Self::V1_0(b) => Ok(b
                .tradehost_strategy_strategy()
                .call_on_candles(s, &to_v1_0::batch(batch))?
                .into_iter()
                .map(|bs| wit::BatchSignal {
                    bar_index: bs.bar_index,
                    signal: signal_1_0(bs.signal),
                })
                .collect()),
        }
    }

    pub(crate) fn on_option_chain(
        &self,
        s: &mut Store<HostState>,
        c: &wit::OptionChain,
    ) -> wasmtime::Result<Vec<wit::Signal>> {
        match self {
            Self::Current(b) => b.tradehost_strategy_strategy().call_on_option_chain(s, c),
            Self::V1_1(b) => Ok(b
                .tradehost_strategy_strategy()
                .call_on_option_chain(s, &to_v1_1::chain(c))?
                .into_iter()
                .map(signal_1_1)
                .collect()),
            Self::V1_0(b) => Ok(b
                .tradehost_strategy_strategy()
                .call_on_option_chain(s, &to_v1_0::chain(c))?
                .into_iter()
                .map(signal_1_0)
                .collect()),
        }
    }

    pub(crate) fn snapshot(&self, s: &mut Store<HostState>) -> wasmtime::Result<Vec<u8>> {
        match self {
            Self::Current(b) => b.tradehost_strategy_strategy().call_snapshot(s),
            Self::V1_1(b) => b.tradehost_strategy_strategy().call_snapshot(s),
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
            Self::V1_1(b) => b.tradehost_strategy_strategy().call_restore(s, state),
            Self::V1_0(b) => b.tradehost_strategy_strategy().call_restore(s, state),
        }
    }
}

/// A 1.1 signal, as it asked.
fn signal_1_1(s: v1_1::Signal) -> wit::Signal {
    let side = match s.side {
        v1_1::Side::Buy => wit::Side::Buy,
        v1_1::Side::Sell => wit::Side::Sell,
        v1_1::Side::Exit => wit::Side::Exit,
    };
    let order = match s.order {
        v1_1::OrderType::Market => wit::OrderType::Market,
        v1_1::OrderType::Limit(p) => wit::OrderType::Limit(p),
        v1_1::OrderType::Stop(t) => wit::OrderType::Stop(t),
        v1_1::OrderType::StopLimit(sl) => wit::OrderType::StopLimit(wit::StopLimit {
            trigger: sl.trigger,
            limit: sl.limit,
        }),
    };
    let validity = match s.validity {
        v1_1::Validity::Day => wit::Validity::Day,
        v1_1::Validity::Ioc => wit::Validity::Ioc,
    };
    wit::Signal {
        instrument: s.instrument,
        side,
        reason: s.reason,
        stop_loss: s.stop_loss,
        target: s.target,
        strength: s.strength,
        order,
        validity,
    }
}

/// A 1.0 signal: at the market, for the day.
fn signal_1_0(s: v1_0::Signal) -> wit::Signal {
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

/// The log import of an earlier contract goes where the current one does.
macro_rules! log_of {
    ($($bindings:ident)::+) => {
        impl $($bindings)::+::tradehost::strategy::log::Host for HostState {
            fn log(&mut self, level: $($bindings)::+::tradehost::strategy::log::Level, message: String) {
                use super::tradehost::strategy::log::{Host, Level};
                use $($bindings)::+::tradehost::strategy::log::Level as L;
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
    };
}

log_of!(bindings_1_0);
log_of!(bindings_1_1);

impl v1_0::Host for HostState {}
impl v1_1::Host for HostState {}
