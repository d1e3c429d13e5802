//! The sandbox against real plugins: bundled strategies load, incompatible or
//! broken files are refused with messages that say why, and hostile plugins
//! are stopped within their budget without disturbing a healthy neighbour.

use std::path::Path;
use std::time::{Duration, Instant};

use tradehost::engine::StrategyRunner;
use tradehost::sandbox::{CpuBudget, PluginInstance, Sandbox, SandboxError, SandboxLimits};
use tradehost_tests::plugin;

fn bar(i: i64) -> strategy_sdk::Bar {
    // 2024-01-01 09:15 IST onwards; a zig-zag so averages cross.
    let close = 100.0 + ((i * 7) % 13) as f64 - ((i * 3) % 5) as f64;
    strategy_sdk::Bar {
        ts: 1_704_080_700_000 + i * 60_000,
        open: close,
        high: close + 1.0,
        low: close - 1.0,
        close,
        volume: 10,
        oi: 0,
    }
}

fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn fuel_sandbox() -> Sandbox {
    sandbox_with_fuel(5_000_000)
}

/// Enough fuel that the limit under test (memory, signal count) is reached first.
fn sandbox_with_fuel(per_event: u64) -> Sandbox {
    Sandbox::new(SandboxLimits {
        cpu: CpuBudget::Fuel { per_event },
        memory_bytes: 32 << 20,
        ..SandboxLimits::backtest()
    })
    .unwrap()
}

fn time_sandbox() -> Sandbox {
    Sandbox::new(SandboxLimits {
        cpu: CpuBudget::Time {
            per_event: Duration::from_millis(100),
        },
        memory_bytes: 32 << 20,
        ..SandboxLimits::live()
    })
    .unwrap()
}

fn hostile(sandbox: &Sandbox, behaviour: &str) -> Result<PluginInstance, SandboxError> {
    let p = sandbox.load_file(&plugin("hostile")).unwrap();
    sandbox.instantiate(&p, &params(&[("behaviour", behaviour), ("n", "3")]))
}

#[test]
fn bundled_plugins_load_and_describe_themselves() {
    let sandbox = fuel_sandbox();
    for (crate_name, init) in [
        ("ma-crossover", vec![]),
        ("rsi", vec![]),
        ("oi-crossover", vec![]),
        ("orb", vec![]),
    ] {
        let p = sandbox.load_file(&plugin(crate_name)).unwrap();
        assert_eq!(p.contract().to_string(), "1.2.0");
        assert_eq!(p.sha256().len(), 64);
        let instance = sandbox.instantiate(&p, &init).unwrap();
        assert_eq!((instance.name(), instance.version()), (crate_name, "0.1.0"));
    }
}

#[test]
fn bad_params_are_refused_at_init_naming_the_param() {
    let sandbox = fuel_sandbox();
    let p = sandbox.load_file(&plugin("ma-crossover")).unwrap();
    let err = sandbox
        .instantiate(&p, &params(&[("fast", "50"), ("slow", "10")]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ma_crossover.wasm")
            && err.contains("init failed")
            && err.contains("param `slow`"),
        "{err}"
    );
}

#[test]
fn incompatible_contract_is_refused_naming_both_versions() {
    let err = fuel_sandbox()
        .load_file(&plugin("future-contract"))
        .unwrap_err();
    assert!(matches!(err, SandboxError::Incompatible { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("future_contract.wasm")
            && msg.contains("tradehost:strategy@2.0.0")
            && msg.contains("tradehost:strategy@1.2.0"),
        "{msg}"
    );
}

#[test]
fn a_plugin_built_against_contract_1_0_runs_unchanged_and_its_signals_go_at_the_market() {
    let sandbox = fuel_sandbox();
    let p = sandbox.load_file(&plugin("contract-1-0")).unwrap();
    assert_eq!(p.contract().to_string(), "1.0.0");
    let mut instance = sandbox.instantiate(&p, &[]).unwrap();
    assert_eq!(
        (instance.name(), instance.version()),
        ("contract-1-0", "1.0.0")
    );
    let bar = |i: i64| strategy_sdk::Bar {
        ts: 1_704_083_400_000 + i * 60_000,
        open: 100.0,
        high: 101.0,
        low: 99.0,
        close: 100.5,
        volume: 10,
        oi: 0,
    };
    let mut signals = Vec::new();
    for i in 0..4 {
        signals.extend(instance.on_candle("NIFTY", 60, &bar(i)).unwrap());
    }
    assert_eq!(signals.len(), 1, "{signals:?}");
    assert_eq!(
        (signals[0].side, signals[0].reason.as_str()),
        (strategy_sdk::Side::Buy, "contract 1.0 buy")
    );
    assert_eq!(
        (signals[0].order, signals[0].validity),
        (strategy_sdk::OrderType::Market, strategy_sdk::Validity::Day)
    );
    // Batches and snapshots cross the same way.
    let bars: Vec<_> = (4..6).map(bar).collect();
    let batch = instance.on_candles("NIFTY", 60, &bars).unwrap();
    assert_eq!(batch.len(), 1);
    assert_eq!((batch[0].0, batch[0].1.side), (1, strategy_sdk::Side::Exit));
    let state = instance.snapshot().unwrap();
    assert_eq!(state, 6u32.to_le_bytes().to_vec());
    assert_eq!(instance.restore(&state).unwrap(), Ok(()));
}

#[test]
fn a_1_1_plugin_asks_for_limit_stop_and_stop_limit_entries() {
    let sandbox = fuel_sandbox();
    let p = sandbox.load_file(&plugin("order-types")).unwrap();
    let bar = |i: i64| strategy_sdk::Bar {
        ts: 1_704_083_400_000 + i * 60_000,
        open: 100.0,
        high: 101.0,
        low: 99.0,
        close: 100.0,
        volume: 10,
        oi: 0,
    };
    for (order, validity, want) in [
        ("limit", "day", strategy_sdk::OrderType::Limit(98.0)),
        ("stop", "ioc", strategy_sdk::OrderType::Stop(102.0)),
        (
            "stop-limit",
            "day",
            strategy_sdk::OrderType::StopLimit {
                trigger: 102.0,
                limit: 102.5,
            },
        ),
    ] {
        let mut instance = sandbox
            .instantiate(
                &p,
                &params(&[
                    ("order", order),
                    ("offset", "2"),
                    ("validity", validity),
                    ("entry_bar", "1"),
                ]),
            )
            .unwrap();
        let out = instance.on_candle("NIFTY", 60, &bar(0)).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].order, want, "{order}");
        let ioc = if validity == "ioc" {
            strategy_sdk::Validity::Ioc
        } else {
            strategy_sdk::Validity::Day
        };
        assert_eq!(out[0].validity, ioc);
    }
    let err = sandbox
        .instantiate(&p, &params(&[("order", "iceberg")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("param `order`"), "{err}");
}

#[test]
fn broken_files_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(plugin("rsi")).unwrap();
    let mut random = vec![0u8; 4096];
    let mut x = 0x1234_5678u32;
    for b in &mut random {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated.wasm",
            good[..good.len() / 2].to_vec(),
            "corrupt or invalid component",
        ),
        ("random.wasm", random, "not a WebAssembly file"),
        ("empty.wasm", Vec::new(), "not a WebAssembly file"),
        (
            "core.wasm",
            b"\0asm\x01\0\0\0".to_vec(),
            "core WebAssembly module, not a component",
        ),
    ];
    let sandbox = fuel_sandbox();
    for (name, bytes, want) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = sandbox.load_file(&path).unwrap_err().to_string();
        assert!(err.contains(name) && err.contains(want), "{name}: {err}");
    }
    let err = sandbox
        .load_file(Path::new("/nonexistent/x.wasm"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/x.wasm"), "{err}");
}

/// Calls `on-candle` once and returns the error it must produce.
fn first_error(instance: &mut PluginInstance) -> SandboxError {
    match instance.on_candle("NIFTY", 60, &bar(0)) {
        Ok(s) => panic!("expected a failure, got {} signals", s.len()),
        Err(e) => e,
    }
}

#[test]
fn infinite_loops_are_stopped_by_fuel_and_by_time() {
    for sandbox in [fuel_sandbox(), time_sandbox()] {
        let started = Instant::now();
        let err = first_error(&mut hostile(&sandbox, "loop-on-candle").unwrap());
        assert!(
            matches!(
                err,
                SandboxError::CpuBudget {
                    call: "on-candle",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains("plugin hostile: on-candle exceeded its CPU budget"),
            "{err}"
        );
        // A liveness bound, not a benchmark: the loop must not hang the host.
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "took {:?}",
            started.elapsed()
        );

        let err = hostile(&sandbox, "loop-in-init").unwrap_err();
        assert!(
            matches!(err, SandboxError::CpuBudget { call: "init", .. }),
            "{err:?}"
        );
    }
}

#[test]
fn memory_bombs_hit_the_cap() {
    let sandbox = sandbox_with_fuel(2_000_000_000);
    let err = first_error(&mut hostile(&sandbox, "memory-bomb").unwrap());
    assert!(
        matches!(err, SandboxError::MemoryCap { cap_bytes, .. } if cap_bytes == 32 << 20),
        "{err:?}"
    );
}

#[test]
fn recursion_and_panics_trap_with_their_story() {
    let sandbox = fuel_sandbox();
    let err = first_error(&mut hostile(&sandbox, "recursion").unwrap());
    assert!(
        matches!(err, SandboxError::Trapped { .. })
            && err.to_string().contains("call stack exhausted"),
        "{err}"
    );
    let err = first_error(&mut hostile(&sandbox, "panic").unwrap());
    assert!(
        err.to_string()
            .contains("hostile plugin panicked on purpose"),
        "{err}"
    );
}

#[test]
fn a_trap_after_good_events_stops_the_instance_for_good() {
    let sandbox = fuel_sandbox();
    let mut instance = hostile(&sandbox, "trap-after").unwrap();
    for i in 0..3 {
        instance.on_candle("NIFTY", 60, &bar(i)).unwrap();
    }
    let err = instance.on_candle("NIFTY", 60, &bar(3)).unwrap_err();
    assert!(
        err.to_string().contains("trap after 3 good events"),
        "{err}"
    );
    assert!(instance.is_stopped());
    assert!(matches!(
        instance.on_candle("NIFTY", 60, &bar(4)),
        Err(SandboxError::Stopped { .. })
    ));
}

#[test]
fn signal_floods_are_refused() {
    let sandbox = sandbox_with_fuel(500_000_000);
    let err = first_error(&mut hostile(&sandbox, "flood").unwrap());
    assert!(
        matches!(
            err,
            SandboxError::SignalFlood {
                count: 10_000,
                limit: 16,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn the_sandbox_grants_no_files_env_clock_or_network() {
    let sandbox = fuel_sandbox();
    let probe = |behaviour: &str| {
        let mut instance = hostile(&sandbox, behaviour).unwrap();
        let signals = instance.on_candle("NIFTY", 60, &bar(0)).unwrap();
        assert_eq!(signals.len(), 1, "{behaviour}");
        signals[0].reason.clone()
    };
    let file = probe("read-file");
    assert!(file.starts_with("read-file: denied"), "{file}");
    assert_eq!(probe("read-env"), "read-env: 0 vars []");
    assert_eq!(probe("clock"), "clock: 0");
    let socket = probe("socket");
    assert!(socket.starts_with("socket: denied"), "{socket}");
}

#[test]
fn a_healthy_neighbour_is_not_disturbed() {
    let sandbox = fuel_sandbox();
    let p = sandbox.load_file(&plugin("ma-crossover")).unwrap();
    let fast = params(&[("fast", "3"), ("slow", "8")]);
    let mut alone = sandbox.instantiate(&p, &fast).unwrap();
    let mut beside = sandbox.instantiate(&p, &fast).unwrap();
    let mut bad: Vec<PluginInstance> = [
        "loop-on-candle",
        "memory-bomb",
        "panic",
        "flood",
        "recursion",
    ]
    .iter()
    .map(|b| hostile(&sandbox, b).unwrap())
    .collect();
    let (mut want, mut got) = (Vec::new(), Vec::new());
    for i in 0..300 {
        want.extend(alone.on_candle("NIFTY", 60, &bar(i)).unwrap());
        for h in &mut bad {
            let _ = h.on_candle("NIFTY", 60, &bar(i));
        }
        got.extend(beside.on_candle("NIFTY", 60, &bar(i)).unwrap());
    }
    assert!(!want.is_empty());
    assert_eq!(got, want);
    assert!(bad.iter().all(PluginInstance::is_stopped));
}

/// A one-strike NIFTY chain whose call has greeks.
fn chain_with_greeks() -> strategy_sdk::OptionChain {
    let greeks = strategy_sdk::Greeks {
        delta: 0.52,
        gamma: 0.0004,
        theta: -12.5,
        vega: 10.25,
        iv: 14.3,
    };
    let leg = |last: f64, greeks| strategy_sdk::OptionLeg {
        last,
        oi: 60_000,
        volume: 1_200,
        greeks,
    };
    strategy_sdk::OptionChain {
        underlying: "NIFTY".into(),
        ts: 1_704_083_400_000,
        spot: 21_712.5,
        expiries: vec![strategy_sdk::ExpiryChain {
            expiry: "2024-01-04".into(),
            strikes: vec![strategy_sdk::StrikeRow {
                strike: 21_700.0,
                ce: Some(leg(110.2, Some(greeks))),
                pe: Some(leg(96.0, None)),
            }],
        }],
    }
}

#[test]
fn a_1_2_plugin_reads_an_option_legs_greeks_and_a_1_1_plugin_runs_without_them() {
    use tradehost::engine::StrategyRunner as _;
    let sandbox = fuel_sandbox();
    let chain = chain_with_greeks();
    let p = sandbox.load_file(&plugin("chain-greeks")).unwrap();
    assert_eq!(p.contract().to_string(), "1.2.0");
    let mut current = sandbox.instantiate(&p, &[]).unwrap();
    let got = current.on_option_chain(&chain).unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        got[0].reason,
        "ATM 21700 last=110.2 delta=0.52 gamma=0.0004 theta=-12.5 vega=10.25 iv=14.3"
    );
    // Without greeks the strategy is told so, not handed zeros.
    let mut bare = chain.clone();
    bare.expiries[0].strikes[0].ce.as_mut().unwrap().greeks = None;
    assert_eq!(
        current.on_option_chain(&bare).unwrap()[0].reason,
        "ATM 21700 last=110.2 no greeks"
    );

    // A plugin built against 1.1 sees the same chain without greeks and keeps its limit order.
    let old = sandbox.load_file(&plugin("contract-1-1")).unwrap();
    assert_eq!(old.contract().to_string(), "1.1.0");
    let mut old = sandbox.instantiate(&old, &[]).unwrap();
    assert_eq!((old.name(), old.version()), ("contract-1-1", "1.1.0"));
    let got = old.on_option_chain(&chain).unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0].reason.as_str(), got[0].order, got[0].validity),
        (
            "contract 1.1 saw 1 strikes, the first call at 21700",
            strategy_sdk::OrderType::Limit(110.2),
            strategy_sdk::Validity::Day
        )
    );
}
