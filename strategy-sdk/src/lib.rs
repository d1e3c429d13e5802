//! # strategy-sdk: write tradehost strategies in plain Rust
//!
//! A strategy is a type that implements [`Strategy`]: it is built from the
//! pipeline's [`Params`], sees market events ([`Candle`], [`Tick`],
//! [`OptionChain`], [`Timer`]) and pushes [`Signal`]s into a [`Signals`]
//! buffer. It never sizes, risks or places orders: the host does that.
//!
//! One line turns it into a tradehost plugin when the crate is compiled for
//! `wasm32-wasip2`; natively the same type can be unit-tested with `cargo test`
//! and driven by the host for benchmarks and equivalence checks.
//!
//! ```
//! use strategy_sdk::{Candle, Params, ParamError, Signals, Strategy, indicators::Sma};
//!
//! struct AboveAverage { sma: Sma }
//!
//! impl Strategy for AboveAverage {
//!     fn new(params: &Params) -> Result<Self, ParamError> {
//!         Ok(Self { sma: Sma::new(params.get("window", 20)?) })
//!     }
//!     fn on_candle(&mut self, candle: &Candle<'_>, signals: &mut Signals) {
//!         if let Some(avg) = self.sma.update(candle.close) {
//!             if candle.close > avg * 1.01 {
//!                 signals.buy(candle.instrument, "1% above its average");
//!             }
//!         }
//!     }
//! }
//!
//! strategy_sdk::register_strategy!(AboveAverage);
//! ```
//!
//! The WIT contract lives in `wit/strategy.wit`; its generated bindings stay
//! inside this crate, so a strategy crate never mentions `wit-bindgen`.

mod driver;
pub mod indicators;
pub mod log;
mod market;
mod params;
mod per_instrument;
mod signal;
pub mod state;
pub mod time;

pub use driver::Driver;
pub use market::{
    Bar, Bars, BarsIter, Candle, ExpiryChain, Greeks, OptionChain, OptionKind, OptionLeg,
    StrikeRow, Tick, Timer, option_symbol,
};
pub use params::{ParamError, Params};
pub use per_instrument::PerInstrument;
pub use signal::{OrderType, Side, Signal, SignalBuilder, Signals, Validity};

/// The version of the WIT package this SDK builds plugins against.
pub const CONTRACT_VERSION: &str = "1.2.0";

/// A trading strategy. Every event handler has a default that does nothing,
/// so a strategy implements only the events it trades on.
pub trait Strategy: Sized + 'static {
    /// Build the strategy from the pipeline's parameters. Refuse unknown or
    /// malformed parameters here: the host then refuses the plugin with the message.
    fn new(params: &Params) -> Result<Self, ParamError>;

    /// A bar closed.
    fn on_candle(&mut self, _candle: &Candle<'_>, _signals: &mut Signals) {}

    /// Many consecutive bars of one instrument, as a view over the batch's
    /// columns (see [`Bars`]). The default calls [`Strategy::on_candle`] for
    /// each, tagging signals with the bar's index.
    fn on_candles(
        &mut self,
        instrument: &str,
        timeframe_secs: u32,
        bars: Bars<'_>,
        signals: &mut Signals,
    ) {
        // A batch longer than u32::MAX bars cannot cross the WIT boundary, so the index fits.
        let mut i = 0u32;
        bars.iter().for_each(|bar| {
            signals.set_bar_index(i);
            self.on_candle(
                &Candle {
                    instrument,
                    timeframe_secs,
                    bar,
                },
                signals,
            );
            i = i.saturating_add(1);
        });
    }

    /// A quote changed.
    fn on_tick(&mut self, _tick: &Tick<'_>, _signals: &mut Signals) {}

    /// A new option-chain snapshot.
    fn on_option_chain(&mut self, _chain: &OptionChain, _signals: &mut Signals) {}

    /// A host timer fired.
    fn on_timer(&mut self, _timer: &Timer<'_>, _signals: &mut Signals) {}

    /// The state a new version needs to continue; empty means "nothing to carry".
    fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }

    /// Continue from a snapshot. The default accepts only an empty one; an
    /// error makes the host warm the new version up from recent candles.
    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        if state.is_empty() {
            Ok(())
        } else {
            Err("this strategy does not restore snapshots".into())
        }
    }
}

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod __guest;

// The generated export macro names the bindings by absolute path, which must
// also resolve inside this crate.
#[cfg(target_arch = "wasm32")]
extern crate self as strategy_sdk;

/// Export a [`Strategy`] as a tradehost plugin. Put it once in the strategy
/// crate's `lib.rs`; it does nothing unless the target is `wasm32`.
#[macro_export]
macro_rules! register_strategy {
    ($strategy:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct TradehostPlugin;

            ::std::thread_local! {
                static DRIVER: ::std::cell::RefCell<$crate::Driver<$strategy>> =
                    ::std::cell::RefCell::new($crate::Driver::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION")));
            }

            impl $crate::__guest::Guest for TradehostPlugin {
                fn describe() -> $crate::__guest::PluginInfo {
                    DRIVER.with_borrow(|d| $crate::__guest::describe(d))
                }
                fn init(params: ::std::vec::Vec<(::std::string::String, ::std::string::String)>) -> ::std::result::Result<(), ::std::string::String> {
                    DRIVER.with_borrow_mut(|d| d.init($crate::Params::new(params)))
                }
                fn on_candle(candle: $crate::__guest::Candle) -> ::std::vec::Vec<$crate::__guest::Signal> {
                    DRIVER.with_borrow_mut(|d| $crate::__guest::on_candle(d, candle))
                }
                fn on_candles(batch: $crate::__guest::CandleBatch) -> ::std::vec::Vec<$crate::__guest::BatchSignal> {
                    DRIVER.with_borrow_mut(|d| $crate::__guest::on_candles(d, batch))
                }
                fn on_tick(tick: $crate::__guest::Tick) -> ::std::vec::Vec<$crate::__guest::Signal> {
                    DRIVER.with_borrow_mut(|d| $crate::__guest::on_tick(d, tick))
                }
                fn on_option_chain(chain: $crate::__guest::OptionChain) -> ::std::vec::Vec<$crate::__guest::Signal> {
                    DRIVER.with_borrow_mut(|d| $crate::__guest::on_option_chain(d, chain))
                }
                fn on_timer(timer: $crate::__guest::Timer) -> ::std::vec::Vec<$crate::__guest::Signal> {
                    DRIVER.with_borrow_mut(|d| $crate::__guest::on_timer(d, timer))
                }
                fn snapshot() -> ::std::vec::Vec<u8> {
                    DRIVER.with_borrow(|d| d.snapshot())
                }
                fn restore(state: ::std::vec::Vec<u8>) -> ::std::result::Result<(), ::std::string::String> {
                    DRIVER.with_borrow_mut(|d| d.restore(&state))
                }
            }

            $crate::__guest::bindings::__export_plugin!(TradehostPlugin with_types_in $crate::__guest::bindings);
        };
    };
}
