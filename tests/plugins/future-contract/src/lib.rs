//! Implements `tradehost:strategy@2.0.0`, which no host of contract 1.x may load.

#![allow(missing_docs, unsafe_code)]

#[cfg(target_arch = "wasm32")]
mod plugin {
    wit_bindgen::generate!({ path: "wit", world: "strategy-plugin" });

    use exports::tradehost::strategy::strategy::Guest;
    use tradehost::strategy::types::{
        BatchSignal, Candle, CandleBatch, OptionChain, PluginInfo, Signal, Tick, Timer,
    };

    struct Future;

    impl Guest for Future {
        fn describe() -> PluginInfo {
            PluginInfo {
                name: "future-contract".into(),
                version: "2.0.0".into(),
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
        fn on_option_chain(_: OptionChain) -> Vec<Signal> {
            Vec::new()
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

    export!(Future);
}
