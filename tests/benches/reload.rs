//! Hot reload costs, in one run on this machine.
//!
//! `cargo bench -p tradehost-tests --bench reload` (or `scripts/bench`).
//!
//! 1. Compile + instantiate time of each bundled plugin: cold (no cache) and
//!    from the compiled-code cache, as a ratio.
//! 2. The longest extra delay any event sees while a plugin is swapped
//!    (snapshot, restore, replace, between two events), over 20 swaps under
//!    load, next to the mean time one event takes through the pipeline.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tradehost::bus::Bus;
use tradehost::engine::pipeline::{self, Control, PipelineSpec, PipelineStats, Swap};
use tradehost::monitor::Events;
use tradehost::sandbox::{Sandbox, SandboxLimits};
use tradehost_tests::plugin;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn compile_times() {
    println!("compile + instantiate, cold and from the compiled-code cache:");
    println!(
        "{:<14} {:>12} {:>12} {:>12} {:>10}",
        "plugin", "cold ms", "cached ms", "instance ms", "speed-up"
    );
    let dir = tempfile::tempdir().unwrap();
    for name in ["ma-crossover", "rsi", "orb", "oi-crossover"] {
        let bytes = std::fs::read(plugin(name)).unwrap();
        let cold = {
            let sandbox = Sandbox::new(SandboxLimits::live()).unwrap();
            let t = Instant::now();
            let p = sandbox.load_bytes(Path::new("p.wasm"), &bytes).unwrap();
            assert!(!p.from_cache());
            t.elapsed()
        };
        let cache = dir.path().join(name);
        // Fill the cache, then load from it in a fresh sandbox (a restart).
        drop(
            Sandbox::new(SandboxLimits::live())
                .unwrap()
                .with_cache(cache.clone())
                .load_bytes(Path::new("p.wasm"), &bytes)
                .unwrap(),
        );
        let sandbox = Sandbox::new(SandboxLimits::live())
            .unwrap()
            .with_cache(cache);
        let t = Instant::now();
        let p = sandbox.load_bytes(Path::new("p.wasm"), &bytes).unwrap();
        let cached = t.elapsed();
        assert!(p.from_cache());
        let t = Instant::now();
        let _instance = sandbox.instantiate(&p, &[]).unwrap();
        let instantiate = t.elapsed();
        println!(
            "{name:<14} {:>12.2} {:>12.2} {:>12.3} {:>9.0}x",
            ms(cold),
            ms(cached),
            ms(instantiate),
            cold.as_secs_f64() / cached.as_secs_f64()
        );
    }
}

fn spec(days: u32, speed: f64) -> PipelineSpec {
    PipelineSpec {
        id: "bench".into(),
        plugin_path: plugin("ma-crossover"),
        params: vec![],
        symbols: vec!["NIFTY".into()],
        timeframe_secs: 60,
        source: tradehost::config::Source::Synthetic {
            seed: 5,
            days,
            speed,
            start_price: 21_700.0,
            option_chain: false,
        },
        user: None,
        limits: SandboxLimits::live(),
        warmup_candles: 500,
        guard: tradehost::market::guard::GuardRules::default(),
        prices_kept: 100_000,
        trade_from_ms: None,
        record_dir: None,
    }
}

async fn swap_delay() {
    let sandbox = Arc::new(Sandbox::new(SandboxLimits::live()).unwrap());
    let loaded = sandbox.load_file(&plugin("ma-crossover")).unwrap();

    // Baseline: the mean time per event of the same pipeline, unpaced, without swaps.
    let days = 60;
    let run = |speed: f64| {
        let bus = Bus::embedded("trading");
        let events = Events::new(bus.clone(), "engine");
        let (control_tx, control) = tokio::sync::watch::channel(Control::Run);
        let (swap_tx, swaps) = tokio::sync::mpsc::channel(4);
        let stats = Arc::new(PipelineStats::default());
        let task = tokio::spawn(pipeline::run(
            spec(days, speed),
            loaded.clone(),
            sandbox.clone(),
            bus.clone(),
            events,
            control,
            swaps,
            stats.clone(),
            None,
        ));
        (bus, control_tx, swap_tx, stats, task)
    };
    let (_bus, _c, _s, _stats, task) = run(0.0);
    let t = Instant::now();
    task.await.unwrap();
    let per_event = t.elapsed() / (days * 375);

    // Swaps under a paced load of 5,000 events a second.
    let (bus, _c, swap_tx, stats, task) = run(5_000.0 * 60.0);
    let mut seen = bus.subscribe(&["trading:events".to_owned()]).await.unwrap();
    let mut pauses = Vec::new();
    for n in 0..20u8 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut bytes = std::fs::read(plugin("ma-crossover")).unwrap();
        bytes.extend([0, 10, 1, b'x', n, n, n, n, n, n, n, n]);
        let p = sandbox.load_bytes(Path::new("v.wasm"), &bytes).unwrap();
        let instance = sandbox.instantiate(&p, &[]).unwrap();
        if swap_tx
            .send(Swap {
                instance,
                sha256: p.sha256().to_owned(),
                cause: "bench".into(),
            })
            .await
            .is_err()
        {
            break;
        }
    }
    task.await.unwrap();
    while let Ok(Some((_, payload))) =
        tokio::time::timeout(Duration::from_millis(100), seen.recv()).await
    {
        let v: serde_json::Value = serde_json::from_str(&payload).unwrap_or_default();
        if v["event"] == "plugin_swapped" {
            pauses.push(Duration::from_micros(v["pause_us"].as_u64().unwrap_or(0)));
        }
    }
    let longest = pauses.iter().max().copied().unwrap_or_default();
    println!(
        "\nswaps under load (5,000 events/s, {} swaps, state carried by snapshot):",
        pauses.len()
    );
    println!(
        "  mean time per event through the pipeline   {:>10.1} µs (baseline)",
        per_event.as_secs_f64() * 1e6
    );
    println!(
        "  longest extra delay from a swap             {:>10.1} µs ({:.1}x one event)",
        longest.as_secs_f64() * 1e6,
        longest.as_secs_f64() / per_event.as_secs_f64()
    );
    println!(
        "  events {} / swaps {}",
        stats.events_in.load(std::sync::atomic::Ordering::Relaxed),
        stats.swaps.load(std::sync::atomic::Ordering::Relaxed)
    );
}

fn main() {
    compile_times();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(swap_delay());
}
