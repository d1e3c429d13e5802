//! The same strategy compiled natively and to WASM gives identical signals on
//! the same data, per event and batched; a snapshot taken in one WASM
//! instance and restored in another continues as if nothing happened.

use tradehost::engine::{Native, StrategyRunner, sdk_bar, sdk_chain};
use tradehost::market::synthetic::{self, CandleSpec};
use tradehost::sandbox::{Sandbox, SandboxLimits};
use tradehost_tests::plugin;

type Tagged = Vec<(usize, strategy_sdk::Signal)>;

fn per_event(runner: &mut dyn StrategyRunner, bars: &[strategy_sdk::Bar]) -> Tagged {
    let mut out = Vec::new();
    for (i, b) in bars.iter().enumerate() {
        out.extend(
            runner
                .on_candle("NIFTY", 60, b)
                .unwrap()
                .into_iter()
                .map(|s| (i, s)),
        );
    }
    out
}

fn batched(runner: &mut dyn StrategyRunner, bars: &[strategy_sdk::Bar], batch: usize) -> Tagged {
    let mut out = Vec::new();
    for (c, chunk) in bars.chunks(batch).enumerate() {
        out.extend(
            runner
                .on_candles("NIFTY", 60, chunk)
                .unwrap()
                .into_iter()
                .map(|(j, s)| (c * batch + j as usize, s)),
        );
    }
    out
}

fn native(name: &str, params: &[(String, String)]) -> Box<dyn StrategyRunner> {
    match name {
        "ma-crossover" => Box::new(
            Native::<ma_crossover::MaCrossover>::new("ma-crossover", "0.1.0", params).unwrap(),
        ),
        "rsi" => Box::new(Native::<rsi::RsiReversal>::new("rsi", "0.1.0", params).unwrap()),
        "orb" => {
            Box::new(Native::<orb::OpeningRangeBreakout>::new("orb", "0.1.0", params).unwrap())
        }
        "oi-crossover" => Box::new(
            Native::<oi_crossover::OiCrossover>::new("oi-crossover", "0.1.0", params).unwrap(),
        ),
        other => panic!("no native build of {other}"),
    }
}

fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn candle_strategies_agree_native_wasm_and_batched() {
    let series = synthetic::candles(&CandleSpec {
        with_volume: true,
        ..CandleSpec::nifty_like(11, 30)
    });
    let bars: Vec<strategy_sdk::Bar> = series.bars.iter().map(sdk_bar).collect();
    let sandbox = Sandbox::new(SandboxLimits::backtest()).unwrap();
    let cases = [
        ("ma-crossover", params(&[])),
        (
            "ma-crossover",
            params(&[("kind", "ema"), ("fast", "5"), ("slow", "21")]),
        ),
        ("rsi", params(&[])),
        (
            "orb",
            params(&[
                ("max_breakouts", "2"),
                ("target_multiple", "1.5"),
                ("volume_multiplier", "1.2"),
            ]),
        ),
    ];
    for (name, p) in cases {
        let want = per_event(native(name, &p).as_mut(), &bars);
        assert!(
            want.len() >= 10,
            "{name} {p:?}: only {} signals on 30 days; the comparison would prove little",
            want.len()
        );
        let plugin = sandbox.load_file(&plugin(name)).unwrap();
        let mut wasm = sandbox.instantiate(&plugin, &p).unwrap();
        assert_eq!(
            per_event(&mut wasm, &bars),
            want,
            "{name} {p:?}: WASM per event"
        );
        for batch in [7, 4096] {
            let mut wasm = sandbox.instantiate(&plugin, &p).unwrap();
            assert_eq!(
                batched(&mut wasm, &bars, batch),
                want,
                "{name} {p:?}: WASM batch {batch}"
            );
        }
        assert_eq!(
            batched(native(name, &p).as_mut(), &bars, 500),
            want,
            "{name} {p:?}: native batch"
        );
    }
}

#[test]
fn oi_crossover_agrees_native_and_wasm() {
    let series = synthetic::candles(&CandleSpec::nifty_like(5, 3));
    let chains = synthetic::option_chains(&series, 5, 1);
    let sandbox = Sandbox::new(SandboxLimits::backtest()).unwrap();
    let plugin = sandbox.load_file(&plugin("oi-crossover")).unwrap();
    let mut wasm = sandbox.instantiate(&plugin, &[]).unwrap();
    let mut native = native("oi-crossover", &[]);
    let (mut want, mut got) = (Vec::new(), Vec::new());
    for chain in &chains {
        let c = sdk_chain(chain);
        want.extend(native.on_option_chain(&c).unwrap());
        got.extend(wasm.on_option_chain(&c).unwrap());
    }
    assert!(want.len() >= 4, "only {} signals", want.len());
    assert_eq!(got, want);
}

#[test]
fn snapshots_carry_state_between_wasm_instances() {
    let series = synthetic::candles(&CandleSpec::nifty_like(21, 10));
    let bars: Vec<strategy_sdk::Bar> = series.bars.iter().map(sdk_bar).collect();
    let half = bars.len() / 2 + 17;
    let sandbox = Sandbox::new(SandboxLimits::backtest()).unwrap();
    for name in ["ma-crossover", "rsi", "orb"] {
        let plugin = sandbox.load_file(&plugin(name)).unwrap();
        let want = per_event(&mut sandbox.instantiate(&plugin, &[]).unwrap(), &bars);
        let mut first = sandbox.instantiate(&plugin, &[]).unwrap();
        let mut got = per_event(&mut first, &bars[..half]);
        let state = first.snapshot().unwrap();
        assert!(!state.is_empty(), "{name} snapshot is empty");
        let mut second = sandbox.instantiate(&plugin, &[]).unwrap();
        second.restore(&state).unwrap().unwrap();
        got.extend(
            per_event(&mut second, &bars[half..])
                .into_iter()
                .map(|(i, s)| (i + half, s)),
        );
        assert_eq!(got, want, "{name}");
        let refused = sandbox
            .instantiate(&plugin, &[])
            .unwrap()
            .restore(b"garbage")
            .unwrap();
        assert!(refused.is_err(), "{name} accepted a garbage snapshot");
    }
}
