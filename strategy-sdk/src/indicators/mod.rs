//! Indicators in plain Rust, checked against TA-Lib.
//!
//! Each indicator is a small state machine: `update` takes the next value and
//! returns the indicator's value once it has seen enough input.

mod average;
mod crossover;
pub mod patterns;
mod rsi;
mod vwap;

pub use average::{Ema, Sma};
pub use crossover::{Cross, Crossover};
pub use rsi::Rsi;
pub use vwap::SessionVwap;
