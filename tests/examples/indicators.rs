//! Print the SDK's indicator values for a candle CSV, one row per bar:
//! `ts,close,sma10,sma50,ema10,ema50,rsi14` (empty until an indicator has
//! enough input). `scripts/check-talib.py` compares them with TA-Lib.
//!
//! `cargo run --release -p tradehost-tests --example indicators -- <candles.csv>`

use std::io::Write as _;

use rust_decimal::prelude::ToPrimitive;
use strategy_sdk::indicators::{Ema, Rsi, Sma};
use tradehost::market::MarketData;
use tradehost::market::csv::{LoadOptions, load};

fn cell(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.10}")).unwrap_or_default()
}

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: indicators <candles.csv>"))?;
    let MarketData::Candles(series) = load(path.as_ref(), &LoadOptions::default())?.data else {
        anyhow::bail!("{path}: expected candles, found an option chain");
    };
    let (mut sma10, mut sma50, mut ema10, mut ema50, mut rsi14) = (
        Sma::new(10),
        Sma::new(50),
        Ema::new(10),
        Ema::new(50),
        Rsi::new(14),
    );
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    writeln!(out, "ts,close,sma10,sma50,ema10,ema50,rsi14")?;
    for bar in &series.bars {
        let close = bar.close.to_f64().unwrap_or(f64::NAN);
        let row = [
            sma10.update(close),
            sma50.update(close),
            ema10.update(close),
            ema50.update(close),
            rsi14.update(close),
        ];
        writeln!(
            out,
            "{},{},{}",
            bar.ts_ms,
            bar.close,
            row.map(cell).join(",")
        )?;
    }
    Ok(())
}
