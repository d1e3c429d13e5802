//! Research at scale, measured in one run on this machine: reading 1M bars
//! from CSV and from Parquet (`tradehost data import`), the whole
//! `tradehost backtest` process on each, its cost growth from 250k to 1M
//! bars, and `tradehost sweep` of a 100-combination grid (fast 5..14 × slow
//! 40..85 step 5) as one process on every core against the same grid as
//! separate backtest processes (the old way), with the sweep's peak memory.
//!
//! `cargo bench -p tradehost-tests --bench research` (or `scripts/bench`).
//! `BENCH_CANDLES` changes the bar count (default 1,000,000); `BENCH_GRID=small`
//! sweeps 3 × 3 instead; `BENCH_ONLY=read` stops after reading the bars.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tradehost::market::CandleSeries;
use tradehost::market::csv::{LoadOptions, load};
use tradehost::market::synthetic::{self, CandleSpec};
use tradehost_tests::{arg, plugin, tradehost_bin};

fn best_of_3(mut f: impl FnMut()) -> Duration {
    (0..3)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn tradehost(args: &[&str]) -> Duration {
    let t = Instant::now();
    let out = Command::new(tradehost_bin())
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tradehost {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed()
}

fn backtest(data: &Path, out: &Path, params: &[&str]) -> Duration {
    let ma = plugin("ma-crossover");
    let mut args = vec![
        "backtest",
        "--plugin",
        arg(&ma),
        "--data",
        arg(data),
        "--out",
        arg(out),
    ];
    for p in params {
        args.extend(["--param", p]);
    }
    tradehost(&args)
}

fn main() {
    let n: usize = std::env::var("BENCH_CANDLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let small = std::env::var("BENCH_GRID").is_ok_and(|g| g == "small");
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let days = u32::try_from(n.div_ceil(synthetic::BARS_PER_DAY as usize)).unwrap_or(u32::MAX);
    let series = synthetic::candles(&CandleSpec::nifty_like(42, days));
    let series = CandleSeries {
        bars: series.bars[..n.min(series.bars.len())].to_vec(),
        ..series
    };
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("nifty_1m.csv");
    synthetic::write_candles_csv(&csv, &series).unwrap();
    let pq_dir = dir.path().join("pq");
    tradehost(&["data", "import", arg(&csv), "--out", arg(&pq_dir)]);
    let pq = pq_dir.join("nifty_1m.parquet");
    println!("tradehost research benchmark: {n} one-minute bars, {cores} cores\n");

    println!("reading the bars (in process, validated):");
    let all = LoadOptions {
        session: None,
        ..LoadOptions::default()
    };
    let d_csv = best_of_3(|| assert_eq!(load(&csv, &all).unwrap().data.len(), n));
    let d_pq = best_of_3(|| assert_eq!(load(&pq, &all).unwrap().data.len(), n));
    println!(
        "  {:<34} {:>9.1} ms  (baseline)",
        "CSV",
        d_csv.as_secs_f64() * 1e3
    );
    println!(
        "  {:<34} {:>9.1} ms  {:.1}x faster (aim: 1M bars in at most 50 ms)",
        "Parquet",
        d_pq.as_secs_f64() * 1e3,
        d_csv.as_secs_f64() / d_pq.as_secs_f64()
    );
    if std::env::var("BENCH_ONLY").is_ok_and(|o| o == "read") {
        return;
    }

    println!("\nwhole `tradehost backtest` process, ma-crossover 10/50:");
    let out = dir.path().join("bt");
    let single_csv = best_of_3(|| {
        backtest(&csv, &out, &[]);
    });
    let single_pq = best_of_3(|| {
        backtest(&pq, &out, &[]);
    });
    println!(
        "  {:<34} {:>9.3} s  (baseline)",
        "on the CSV",
        single_csv.as_secs_f64()
    );
    println!(
        "  {:<34} {:>9.3} s  {:.2}x the CSV run (aim: 1M bars in at most 0.3 s)",
        "on the Parquet file",
        single_pq.as_secs_f64(),
        single_pq.as_secs_f64() / single_csv.as_secs_f64()
    );
    let quarter = pq_dir.join("quarter.parquet");
    let q = CandleSeries {
        bars: series.bars[..n / 4].to_vec(),
        ..series.clone()
    };
    let q_csv = dir.path().join("quarter.csv");
    synthetic::write_candles_csv(&q_csv, &q).unwrap();
    tradehost(&["data", "import", arg(&q_csv), "--out", arg(&pq_dir)]);
    let d_quarter = best_of_3(|| {
        backtest(&quarter, &out, &[]);
    });
    println!(
        "  {:<34} {:>9.3} s  time({n}) / time({}) = {:.2} (aim: at most 4.4)",
        format!("on {} bars (Parquet)", n / 4),
        d_quarter.as_secs_f64(),
        n / 4,
        single_pq.as_secs_f64() / d_quarter.as_secs_f64()
    );

    let (fast, slow) = if small {
        ("fast=5..13:4", "slow=40..80:20")
    } else {
        ("fast=5..14", "slow=40..85:5")
    };
    let combos = if small { 9 } else { 100 };
    println!("\n`tradehost sweep` of {combos} combinations ({fast} x {slow}) on the Parquet file:");
    let sweep_out = dir.path().join("sweep");
    let ma = plugin("ma-crossover");
    let d_sweep = tradehost(&[
        "sweep",
        "--plugin",
        arg(&ma),
        "--data",
        arg(&pq),
        "--grid",
        fast,
        "--grid",
        slow,
        "--out",
        arg(&sweep_out),
    ]);
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sweep_out.join("sweep.json")).unwrap())
            .unwrap();
    let rss = info["peak_rss_mib"]
        .as_f64()
        .map_or_else(|| "unknown".to_owned(), |m| format!("{m:.0} MiB"));
    // The old way: one backtest process per combination, `cores` at a time. Measured on a
    // sample of the grid's corners and scaled to the grid, so the baseline stays affordable.
    let sample: Vec<(u32, u32)> = if small {
        vec![(5, 40), (13, 80)]
    } else {
        vec![(5, 40), (14, 85), (9, 60), (12, 45)]
    };
    let mut old = Duration::ZERO;
    for (f, s) in &sample {
        old += backtest(&pq, &out, &[&format!("fast={f}"), &format!("slow={s}")]);
    }
    let old_grid = old / u32::try_from(sample.len()).unwrap_or(1)
        * u32::try_from(combos).unwrap_or(1)
        / u32::try_from(cores).unwrap_or(1);
    println!(
        "  {:<34} {:>9.2} s  (baseline: {} processes, {} sampled, {cores} at a time)",
        "separate backtest processes",
        old_grid.as_secs_f64(),
        combos,
        sample.len()
    );
    println!(
        "  {:<34} {:>9.2} s  {:.2}x faster; peak memory {rss} (aim: at most 10 s and 1 GiB for 100 on 1M bars)",
        "one sweep process",
        d_sweep.as_secs_f64(),
        old_grid.as_secs_f64() / d_sweep.as_secs_f64()
    );
}
