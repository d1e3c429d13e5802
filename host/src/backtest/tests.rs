//! Backtest rules, one scenario each, with a scripted strategy.

use rust_decimal::Decimal;
use rust_decimal_macros::dec;

use super::*;
use crate::engine::Side;
use crate::market::{Bar, CandleSeries};

/// Emits the scripted signal at each listed bar index.
struct Script {
    at: Vec<(usize, Side, Option<f64>)>,
    seen: usize,
}

impl StrategyRunner for Script {
    fn name(&self) -> &str {
        "script"
    }
    fn version(&self) -> &str {
        "0"
    }
    fn on_candle(
        &mut self,
        instrument: &str,
        tf: u32,
        bar: &strategy_sdk::Bar,
    ) -> Result<Vec<strategy_sdk::Signal>, SandboxError> {
        Ok(self
            .on_candles(instrument, tf, std::slice::from_ref(bar))?
            .into_iter()
            .map(|(_, s)| s)
            .collect())
    }
    fn on_candles(
        &mut self,
        instrument: &str,
        _: u32,
        bars: &[strategy_sdk::Bar],
    ) -> Result<Vec<(u32, strategy_sdk::Signal)>, SandboxError> {
        let start = self.seen;
        self.seen += bars.len();
        Ok(self
            .at
            .iter()
            .filter(|(i, _, _)| (start..self.seen).contains(i))
            .map(|(i, side, stop)| {
                let s = strategy_sdk::Signal {
                    instrument: instrument.into(),
                    side: *side,
                    reason: "script".into(),
                    stop_loss: *stop,
                    target: None,
                    strength: None,
                    order: strategy_sdk::OrderType::Market,
                    validity: strategy_sdk::Validity::Day,
                };
                ((*i - start) as u32, s)
            })
            .collect())
    }
    fn on_option_chain(
        &mut self,
        _: &strategy_sdk::OptionChain,
    ) -> Result<Vec<strategy_sdk::Signal>, SandboxError> {
        Ok(vec![])
    }
    fn snapshot(&mut self) -> Result<Vec<u8>, SandboxError> {
        Ok(vec![])
    }
    fn restore(&mut self, _: &[u8]) -> Result<Result<(), String>, SandboxError> {
        Ok(Ok(()))
    }
}

/// 2024-01-01 09:15 IST.
const T0: i64 = 1_704_080_700_000;

/// Bars one minute apart from `start_ts`, each (open, high, low, close).
fn series(start_ts: i64, ohlc: &[(i64, i64, i64, i64)]) -> MarketData {
    let bars = ohlc
        .iter()
        .enumerate()
        .map(|(i, (o, h, l, c))| Bar {
            ts_ms: start_ts + i as i64 * 60_000,
            open: Decimal::from(*o),
            high: Decimal::from(*h),
            low: Decimal::from(*l),
            close: Decimal::from(*c),
            volume: 0,
            oi: 0,
        })
        .collect();
    MarketData::Candles(CandleSeries {
        instrument: "NIFTY".into(),
        timeframe_secs: 60,
        bars,
    })
}

fn flat(prices: &[i64]) -> Vec<(i64, i64, i64, i64)> {
    prices.iter().map(|p| (*p, *p, *p, *p)).collect()
}

fn trades(
    data: &MarketData,
    at: Vec<(usize, Side, Option<f64>)>,
    config: &BacktestConfig,
) -> Vec<(i64, i64, TradeSide, Decimal, Decimal, Decimal, String)> {
    let mut s = Script { at, seen: 0 };
    let result = run(&mut s, data, config, |_| {}).unwrap();
    result
        .trades
        .iter()
        .map(|t| {
            (
                (t.entry_ts_ms - T0) / 60_000,
                (t.exit_ts_ms - T0) / 60_000,
                t.side,
                t.entry_price,
                t.exit_price,
                t.pnl,
                t.exit_reason.clone(),
            )
        })
        .collect()
}

#[test]
fn long_mode_fills_at_next_open() {
    let data = series(T0, &flat(&[100, 101, 102, 103, 104, 105]));
    for batch in [1, 2, 4096] {
        let config = BacktestConfig {
            batch,
            ..BacktestConfig::default()
        };
        let got = trades(
            &data,
            vec![
                (1, Side::Buy, None),
                (2, Side::Buy, None),
                (3, Side::Sell, None),
                (4, Side::Sell, None),
            ],
            &config,
        );
        assert_eq!(
            got,
            vec![(
                2,
                4,
                TradeSide::Long,
                dec!(102),
                dec!(104),
                dec!(2),
                "signal".into()
            )],
            "batch {batch}"
        );
    }
}

#[test]
fn both_mode_reverses_and_end_of_data_closes() {
    let data = series(T0, &flat(&[100, 101, 102, 103, 104, 99]));
    let config = BacktestConfig {
        mode: PositionMode::Both,
        qty: 2,
        ..BacktestConfig::default()
    };
    let got = trades(
        &data,
        vec![(0, Side::Buy, None), (2, Side::Sell, None)],
        &config,
    );
    assert_eq!(
        got,
        vec![
            (
                1,
                3,
                TradeSide::Long,
                dec!(101),
                dec!(103),
                dec!(4),
                "signal".into()
            ),
            (
                3,
                5,
                TradeSide::Short,
                dec!(103),
                dec!(99),
                dec!(8),
                "end of data".into()
            ),
        ]
    );
}

#[test]
fn short_mode_ignores_buys_when_flat() {
    let data = series(T0, &flat(&[100, 101, 102, 103]));
    let config = BacktestConfig {
        mode: PositionMode::Short,
        ..BacktestConfig::default()
    };
    let got = trades(
        &data,
        vec![
            (0, Side::Buy, None),
            (0, Side::Sell, None),
            (1, Side::Buy, None),
        ],
        &config,
    );
    assert_eq!(
        got,
        vec![(
            1,
            2,
            TradeSide::Short,
            dec!(101),
            dec!(102),
            dec!(-1),
            "signal".into()
        )]
    );
}

#[test]
fn stop_loss_fills_at_stop_or_gap_open() {
    // Entry at bar 1 open 100 with stop 95; bar 2 trades down to 94: out at 95.
    let data = series(
        T0,
        &[
            (100, 100, 100, 100),
            (100, 101, 99, 100),
            (99, 99, 94, 96),
            (96, 96, 96, 96),
        ],
    );
    let got = trades(
        &data,
        vec![(0, Side::Buy, Some(95.0))],
        &BacktestConfig::default(),
    );
    assert_eq!(
        got,
        vec![(
            1,
            2,
            TradeSide::Long,
            dec!(100),
            dec!(95),
            dec!(-5),
            "stop-loss".into()
        )]
    );
    // Gap below the stop: out at the open.
    let data = series(
        T0,
        &[(100, 100, 100, 100), (100, 101, 99, 100), (90, 92, 89, 91)],
    );
    let got = trades(
        &data,
        vec![(0, Side::Buy, Some(95.0))],
        &BacktestConfig::default(),
    );
    assert_eq!(
        got,
        vec![(
            1,
            2,
            TradeSide::Long,
            dec!(100),
            dec!(90),
            dec!(-10),
            "stop-loss".into()
        )]
    );
}

#[test]
fn square_off_closes_and_blocks_late_entries() {
    // Bars 15:13, 15:14, 15:15, 15:16, then next day 09:15.
    let t1513 = T0 + (6 * 60 - 2) * 60_000;
    let mut bars = match series(t1513, &flat(&[100, 101, 102, 103])) {
        MarketData::Candles(s) => s.bars,
        MarketData::Chains(_) => unreachable!(),
    };
    bars.push(Bar {
        ts_ms: T0 + 86_400_000,
        ..bars[0]
    });
    let data = MarketData::Candles(CandleSeries {
        instrument: "NIFTY".into(),
        timeframe_secs: 60,
        bars,
    });
    let config = BacktestConfig {
        square_off_minute: Some(15 * 60 + 15),
        ..BacktestConfig::default()
    };
    let got = trades(
        &data,
        vec![
            (0, Side::Buy, None),
            (2, Side::Buy, None),
            (3, Side::Buy, None),
        ],
        &config,
    );
    assert_eq!(got.len(), 1, "{got:?}");
    // Due at 15:15, filled as the order manager fills it: at the first price after, the 15:16 open.
    assert_eq!(
        (got[0].0, got[0].1, got[0].3, got[0].4, got[0].6.as_str()),
        (359, 361, dec!(101), dec!(103), "square-off")
    );
}

#[test]
fn a_position_the_short_day_leaves_open_is_closed_at_the_next_open() {
    // A day that stops at 09:17 (a DR-drill session): carried, closed at the next session's first open.
    let mut bars = match series(T0, &flat(&[100, 101, 102])) {
        MarketData::Candles(s) => s.bars,
        MarketData::Chains(_) => unreachable!(),
    };
    bars.push(Bar {
        ts_ms: T0 + 86_400_000,
        open: dec!(90),
        high: dec!(90),
        low: dec!(90),
        close: dec!(90),
        volume: 0,
        oi: 0,
    });
    let data = MarketData::Candles(CandleSeries {
        instrument: "NIFTY".into(),
        timeframe_secs: 60,
        bars,
    });
    let config = BacktestConfig {
        square_off_minute: Some(15 * 60 + 15),
        ..BacktestConfig::default()
    };
    let got = trades(&data, vec![(0, Side::Buy, None)], &config);
    assert_eq!(
        got,
        vec![(
            1,
            1440,
            TradeSide::Long,
            dec!(101),
            dec!(90),
            dec!(-11),
            "carried".into()
        )]
    );
}

#[test]
fn summary_adds_up() {
    let data = series(T0, &flat(&[100, 101, 105, 103, 100, 104, 102]));
    let mut s = Script {
        at: vec![
            (0, Side::Buy, None),
            (2, Side::Sell, None),
            (3, Side::Buy, None),
            (4, Side::Sell, None),
            (6, Side::Buy, Some(f64::NAN)),
        ],
        seen: 0,
    };
    let r = run(&mut s, &data, &BacktestConfig::default(), |_| {}).unwrap();
    // long 101 -> 103 (+2), long 100 -> 104 (+4)
    assert_eq!(
        r.trades.iter().map(|t| t.pnl).collect::<Vec<_>>(),
        vec![dec!(2), dec!(4)]
    );
    assert_eq!(
        r.summary.net_pnl,
        r.trades.iter().map(|t| t.pnl).sum::<Decimal>()
    );
    assert_eq!(
        (r.summary.wins, r.summary.losses, r.summary.win_rate),
        (2, 0, 1.0)
    );
    assert_eq!((r.summary.signals, r.summary.signals_rejected), (4, 1));
    // Peak 1_000_004 at bar 2 (long from 101 at 105), trough 1_000_002 at bar 3.
    assert_eq!(r.summary.max_drawdown, dec!(-2));
    assert_eq!(r.summary.final_equity, dec!(1_000_006));
}

#[test]
fn sharpe_of_known_returns() {
    assert_eq!(sharpe(&[0.01]), 0.0);
    assert_eq!(sharpe(&[0.01, 0.01]), 0.0, "no variance");
    let s = sharpe(&[0.01, -0.01, 0.02]);
    // mean 0.00667, sd 0.01528 -> 0.4364 * 15.875
    assert!((s - 6.928).abs() < 0.01, "{s}");
}

#[test]
fn slippage_and_the_trailing_stop_are_the_accounts_rules() {
    // Bought at the bar-1 open of 100 plus 10 bps (100.10, on the tick); the 2% trail follows
    // the closes up to 110 (stop 107.80); bar 4 falls through it: out at the stop less 10 bps, floored to the tick.
    let data = series(
        T0,
        &flat(&[100, 100, 105, 110])
            .into_iter()
            .chain([(109, 109, 107, 108), (108, 108, 108, 108)])
            .collect::<Vec<_>>(),
    );
    let exits = crate::config::ExitRules {
        trailing_pct: dec!(2),
        ..crate::config::ExitRules::default()
    };
    let config = BacktestConfig {
        slippage_bps: dec!(10),
        exits,
        ..BacktestConfig::default()
    };
    let got = trades(&data, vec![(0, Side::Buy, None)], &config);
    assert_eq!(
        got,
        vec![(
            1,
            4,
            TradeSide::Long,
            dec!(100.10),
            dec!(107.65),
            dec!(7.55),
            "trailing-stop".into()
        )]
    );
}

#[test]
fn an_account_stop_percentage_applies_when_the_signal_sets_none() {
    let data = series(
        T0,
        &[
            (100, 100, 100, 100),
            (100, 100, 100, 100),
            (99, 99, 98, 98),
            (98, 98, 98, 98),
        ],
    );
    let exits = crate::config::ExitRules {
        stop_loss_pct: dec!(1),
        ..crate::config::ExitRules::default()
    };
    let got = trades(
        &data,
        vec![(0, Side::Buy, None)],
        &BacktestConfig {
            exits: exits.clone(),
            ..BacktestConfig::default()
        },
    );
    assert_eq!(
        got,
        vec![(
            1,
            2,
            TradeSide::Long,
            dec!(100),
            dec!(99),
            dec!(-1),
            "stop-loss".into()
        )]
    );
    // The signal's own stop wins over the percentage.
    let got = trades(
        &data,
        vec![(0, Side::Buy, Some(97.0))],
        &BacktestConfig {
            exits,
            ..BacktestConfig::default()
        },
    );
    assert_eq!(
        got,
        vec![(
            1,
            3,
            TradeSide::Long,
            dec!(100),
            dec!(98),
            dec!(-2),
            "end of data".into()
        )]
    );
}
