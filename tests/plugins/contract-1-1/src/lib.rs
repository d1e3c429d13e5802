//! Implements `tradehost:strategy@1.1.0` from the WIT file as it was released
//! (`host/wit/contract-1.1.0`), as a plugin built before 1.2 was: on an option
//! chain it bids for the underlying at the first call's last price (a 1.1
//! limit order, good for the day), and says how many strikes it saw.

#![allow(missing_docs, unsafe_code)]

#[cfg(target_arch = "wasm32")]
mod plugin {
    wit_bindgen::generate!({ path: "../../../host/wit/contract-1.1.0", world: "strategy-plugin" });

    use exports::tradehost::strategy::strategy::Guest;
    use tradehost::strategy::types::{
        BatchSignal, Candle, CandleBatch, OptionChain, OrderType, PluginInfo, Side, Signal, Tick,
        Timer, Validity,
    };

    struct V11;

    impl Guest for V11 {
        fn describe() -> PluginInfo {
            PluginInfo {
                name: "contract-1-1".into(),
                version: "1.1.0".into(),
            }
        }
        fn init(_: Vec<(String, String)>) -> Result<(), String> {
            Ok(())
        }
        fn on_candle(_: Candle) -> Vec<Signal> {
            Vec::new()
        }
        fn on_candles(_: CandleBatch) -> Vec<BatchSignal> {
            Vec::new()
        }
        fn on_tick(_: Tick) -> Vec<Signal> {
            Vec::new()
        }
        fn on_option_chain(c: OptionChain) -> Vec<Signal> {
            let Some(expiry) = c.expiries.first() else {
                return Vec::new();
            };
            let Some((strike, leg)) = expiry
                .strikes
                .iter()
                .find_map(|r| r.ce.as_ref().map(|l| (r.strike, l)))
            else {
                return Vec::new();
            };
            vec![Signal {
                instrument: c.underlying.clone(),
                side: Side::Buy,
                reason: format!(
                    "contract 1.1 saw {} strikes, the first call at {strike}",
                    expiry.strikes.len()
                ),
                stop_loss: None,
                target: None,
                strength: None,
                order: OrderType::Limit(leg.last),
                validity: Validity::Day,
            }]
        }
        fn on_timer(_: Timer) -> Vec<Signal> {
            Vec::new()
        }
        fn snapshot() -> Vec<u8> {
            Vec::new()
        }
        fn restore(_: Vec<u8>) -> Result<(), String> {
            Ok(())
        }
    }

    export!(V11);
}
