//! # tradehost
//!
//! A trading host for NSE equity and F&O whose strategies are WebAssembly
//! components. Data flows through one module per stage, in this order, and a
//! module imports only from the stages before it (`tests/tests/layers.rs`
//! checks it): [`domain`] (the shared words: order side, product, position
//! mode, `Secret`, money and IST time) → [`config`] → [`bus`] → [`market`] →
//! [`sandbox`] → [`engine`] → [`subscriber`] → [`brokers`] → [`orders`] →
//! [`notify`] / [`monitor`]; [`backtest`] and [`cli`] drive the stages.
//!
//! - [`market`] reads candles and option chains (CSV files, or a seeded
//!   synthetic market) and keeps only bars inside the 09:15–15:30 IST session;
//! - [`sandbox`] compiles strategy plugins and runs each in its own wasmtime
//!   store with a CPU budget and a memory cap, refusing plugins of an
//!   incompatible contract version;
//! - [`engine`] drives a strategy (sandboxed, or native for benchmarks) with
//!   market events and turns what it returns into signals with exact prices;
//! - [`backtest`] replays a data file through a strategy, fills its signals at
//!   the next bar's open and writes signals, trades, a summary and an HTML report.
//!
//! Prices and money are `rust_decimal::Decimal` throughout; strategies see
//! `f64` only for their indicators.
//!
//! ```no_run
//! use tradehost::{backtest, market, sandbox};
//! # fn main() -> anyhow::Result<()> {
//! let sandbox = sandbox::Sandbox::new(sandbox::SandboxLimits::backtest())?;
//! let plugin = sandbox.load_file("plugins/ma_crossover.wasm".as_ref())?;
//! let mut strategy = sandbox.instantiate(&plugin, &[("fast".into(), "10".into())])?;
//! let data = market::csv::load("nifty.csv".as_ref(), &market::csv::LoadOptions::default())?;
//! let result = backtest::run(&mut strategy, &data.data, &backtest::BacktestConfig::default(), |_| {})?;
//! println!("{} trades, P&L {}", result.trades.len(), result.summary.net_pnl);
//! # Ok(()) }
//! ```

pub mod backtest;
pub mod brokers;
pub mod bus;
pub mod cli;
pub mod config;
pub mod console;
pub mod domain;
pub mod engine;
#[cfg(test)]
mod fuzz;
pub mod market;
pub mod monitor;
pub mod notify;
pub mod orders;
pub mod sandbox;
pub mod subscriber;
