//! The generated WIT bindings and the conversions between them and the SDK's
//! types. Private to the SDK: strategy crates reach it only through
//! `register_strategy!`.

#![allow(missing_docs, unsafe_code)]

pub use wit_bindgen;

pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "strategy-plugin",
        pub_export_macro: true,
        export_macro_name: "__export_plugin",
        runtime_path: "::strategy_sdk::__guest::wit_bindgen::rt",
    });
}

use bindings::exports::tradehost::strategy::strategy as exports;
use bindings::tradehost::strategy::log as host_log;
use bindings::tradehost::strategy::types as wit;

pub use exports::Guest;
pub use wit::{BatchSignal, Candle, CandleBatch, OptionChain, PluginInfo, Signal, Tick, Timer};

use crate::{Driver, Strategy};

pub fn log(level: crate::log::Level, message: &str) {
    use crate::log::Level as L;
    let level = match level {
        L::Trace => host_log::Level::Trace,
        L::Debug => host_log::Level::Debug,
        L::Info => host_log::Level::Info,
        L::Warn => host_log::Level::Warn,
        L::Error => host_log::Level::Error,
    };
    host_log::log(level, message);
}

pub fn describe<S: Strategy>(d: &Driver<S>) -> PluginInfo {
    PluginInfo {
        name: d.name().to_owned(),
        version: d.version().to_owned(),
    }
}

fn bar(b: &wit::Bar) -> crate::Bar {
    crate::Bar {
        ts: b.ts,
        open: b.open,
        high: b.high,
        low: b.low,
        close: b.close,
        volume: b.volume,
        oi: b.oi,
    }
}

fn signal(s: crate::Signal) -> Signal {
    let side = match s.side {
        crate::Side::Buy => wit::Side::Buy,
        crate::Side::Sell => wit::Side::Sell,
        crate::Side::Exit => wit::Side::Exit,
    };
    let order = match s.order {
        crate::OrderType::Market => wit::OrderType::Market,
        crate::OrderType::Limit(price) => wit::OrderType::Limit(price),
        crate::OrderType::Stop(trigger) => wit::OrderType::Stop(trigger),
        crate::OrderType::StopLimit { trigger, limit } => {
            wit::OrderType::StopLimit(wit::StopLimit { trigger, limit })
        }
    };
    let validity = match s.validity {
        crate::Validity::Day => wit::Validity::Day,
        crate::Validity::Ioc => wit::Validity::Ioc,
    };
    Signal {
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

fn signals(out: &mut crate::Signals) -> Vec<Signal> {
    out.drain().map(|(_, s)| signal(s)).collect()
}

pub fn on_candle<S: Strategy>(d: &mut Driver<S>, c: Candle) -> Vec<Signal> {
    let candle = crate::Candle {
        instrument: &c.instrument,
        timeframe_secs: c.timeframe_secs,
        bar: bar(&c.bar),
    };
    signals(d.on_candle(&candle))
}

pub fn on_candles<S: Strategy>(d: &mut Driver<S>, batch: CandleBatch) -> Vec<BatchSignal> {
    // The strategy reads the columns as they crossed the wall: no bar is copied to make the view.
    // Ragged columns are a host bug; trapping says so instead of trading on misaligned bars.
    let bars = crate::Bars::columns(
        &batch.ts,
        &batch.open,
        &batch.high,
        &batch.low,
        &batch.close,
        &batch.volume,
        &batch.oi,
    )
    .expect("candle batch columns differ in length");
    d.on_candles(&batch.instrument, batch.timeframe_secs, bars)
        .drain()
        .map(|(bar_index, s)| BatchSignal {
            bar_index,
            signal: signal(s),
        })
        .collect()
}

pub fn on_tick<S: Strategy>(d: &mut Driver<S>, t: Tick) -> Vec<Signal> {
    let tick = crate::Tick {
        instrument: &t.instrument,
        ts: t.ts,
        last: t.last,
        bid: t.bid,
        ask: t.ask,
        volume: t.volume,
        open_interest: t.open_interest,
    };
    signals(d.on_tick(&tick))
}

pub fn on_option_chain<S: Strategy>(d: &mut Driver<S>, c: OptionChain) -> Vec<Signal> {
    let leg = |l: &wit::OptionLeg| crate::OptionLeg {
        last: l.last,
        oi: l.oi,
        volume: l.volume,
        greeks: l.greeks.map(|g| crate::Greeks {
            delta: g.delta,
            gamma: g.gamma,
            theta: g.theta,
            vega: g.vega,
            iv: g.iv,
        }),
    };
    let chain = crate::OptionChain {
        underlying: c.underlying,
        ts: c.ts,
        spot: c.spot,
        expiries: c
            .expiries
            .into_iter()
            .map(|e| crate::ExpiryChain {
                expiry: e.expiry,
                strikes: e
                    .strikes
                    .iter()
                    .map(|r| crate::StrikeRow {
                        strike: r.strike,
                        ce: r.ce.as_ref().map(leg),
                        pe: r.pe.as_ref().map(leg),
                    })
                    .collect(),
            })
            .collect(),
    };
    signals(d.on_option_chain(&chain))
}

pub fn on_timer<S: Strategy>(d: &mut Driver<S>, t: Timer) -> Vec<Signal> {
    signals(d.on_timer(&crate::Timer {
        ts: t.ts,
        name: &t.name,
    }))
}
