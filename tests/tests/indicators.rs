//! The SDK's indicators against TA-Lib. The fixture holds TA-Lib 0.8.2's
//! SMA, EMA and RSI for the first three days of the synthetic NIFTY series
//! (`tradehost generate --days 3 --seed 42`), written by
//! `scripts/check-talib.py --write-fixture`; the same script checks the real
//! NSE files when TA-Lib is installed.

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use strategy_sdk::indicators::{Ema, Rsi, Sma};
use tradehost::market::synthetic::{self, CandleSpec};

const FIXTURE: &str = include_str!("../fixtures/talib_nifty_synthetic_seed42.csv");

#[test]
fn sma_ema_rsi_match_talib() {
    let series = synthetic::candles(&CandleSpec {
        with_volume: true,
        ..CandleSpec::nifty_like(42, 3)
    });
    let rows: Vec<Vec<&str>> = FIXTURE
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(
        rows.len(),
        series.bars.len(),
        "the fixture and the generator disagree on length"
    );
    let (mut sma10, mut sma50, mut ema10, mut ema50, mut rsi14) = (
        Sma::new(10),
        Sma::new(50),
        Ema::new(10),
        Ema::new(50),
        Rsi::new(14),
    );
    let mut compared = 0;
    for (i, (bar, row)) in series.bars.iter().zip(&rows).enumerate() {
        assert_eq!(
            bar.close,
            row[0].parse::<Decimal>().unwrap(),
            "row {i}: the generator no longer produces the fixture's closes"
        );
        let close = bar.close.to_f64().unwrap();
        let ours = [
            sma10.update(close),
            sma50.update(close),
            ema10.update(close),
            ema50.update(close),
            rsi14.update(close),
        ];
        for (j, (mine, theirs)) in ours.iter().zip(&row[1..]).enumerate() {
            let theirs: Option<f64> = (!theirs.is_empty()).then(|| theirs.parse().unwrap());
            match (mine, theirs) {
                (Some(a), Some(b)) => {
                    let scale = if j == 4 { 100.0 } else { close };
                    assert!(
                        (a - b).abs() <= 1e-9 * scale,
                        "row {i} column {}: ours {a}, TA-Lib {b}",
                        j + 1
                    );
                    compared += 1;
                }
                (a, b) => assert_eq!(
                    a.is_some(),
                    b.is_some(),
                    "row {i} column {}: warm-up differs (ours {a:?}, TA-Lib {b:?})",
                    j + 1
                ),
            }
        }
    }
    assert!(compared > 5000, "only {compared} values compared");
}
