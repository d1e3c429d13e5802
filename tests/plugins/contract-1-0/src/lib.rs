//! Implements `tradehost:strategy@1.0.0` from the WIT file as it was released
//! (`host/wit/contract-1.0.0`), as a plugin built before 1.1 was: it buys on
//! its third candle and exits on its sixth, and logs through the 1.0 `log` import.

#![allow(missing_docs, unsafe_code)]

#[cfg(target_arch = "wasm32")]
mod plugin {
    wit_bindgen::generate!({ path: "../../../host/wit/contract-1.0.0", world: "strategy-plugin" });

    use std::cell::Cell;

    use exports::tradehost::strategy::strategy::Guest;
    use tradehost::strategy::log::{Level, log};
    use tradehost::strategy::types::{
        BatchSignal, Candle, CandleBatch, OptionChain, PluginInfo, Side, Signal, Tick, Timer,
    };

    thread_local! {
        static SEEN: Cell<u32> = const { Cell::new(0) };
    }

    fn seen(instrument: &str) -> Vec<Signal> {
        let n = SEEN.with(|s| {
            s.set(s.get() + 1);
            s.get()
        });
        let signal = |side, reason: &str| Signal {
            instrument: instrument.to_owned(),
            side,
            reason: reason.to_owned(),
            stop_loss: None,
            target: None,
            strength: None,
        };
        match n {
            3 => {
                log(Level::Info, "contract 1.0 plugin: buying");
                vec![signal(Side::Buy, "contract 1.0 buy")]
            }
            6 => vec![signal(Side::Exit, "contract 1.0 exit")],
            _ => Vec::new(),
        }
    }

    struct V1;

    impl Guest for V1 {
        fn describe() -> PluginInfo {
            PluginInfo {
                name: "contract-1-0".into(),
                version: "1.0.0".into(),
            }
        }
        fn init(_: Vec<(String, String)>) -> Result<(), String> {
            Ok(())
        }
        fn on_candle(c: Candle) -> Vec<Signal> {
            seen(&c.instrument)
        }
        fn on_candles(batch: CandleBatch) -> Vec<BatchSignal> {
            let mut out = Vec::new();
            for i in 0..batch.ts.len() {
                let bar_index = u32::try_from(i).unwrap_or(u32::MAX);
                out.extend(
                    seen(&batch.instrument)
                        .into_iter()
                        .map(|signal| BatchSignal { bar_index, signal }),
                );
            }
            out
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
            SEEN.with(Cell::get).to_le_bytes().to_vec()
        }
        fn restore(state: Vec<u8>) -> Result<(), String> {
            let bytes: [u8; 4] = state
                .try_into()
                .map_err(|_| "expected 4 bytes".to_owned())?;
            SEEN.with(|s| s.set(u32::from_le_bytes(bytes)));
            Ok(())
        }
    }

    export!(V1);
}
