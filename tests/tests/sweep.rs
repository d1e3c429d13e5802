//! `tradehost sweep` and `tradehost data import` driven through the binary:
//! every row of a sweep is what a single `backtest` with those parameters
//! gives; the table is the same on one thread or two; a walk-forward's
//! in-sample runs are a sweep of its train days and its stitched equity adds
//! up to its windows; Parquet data backtests exactly as its CSV; bad input
//! is refused by name. On the real NSE files too, when present.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rust_decimal::Decimal;
use tradehost_tests::{arg, plugin, shared_data, tradehost_fails as failure, tradehost_ok as ok};

fn generated(days: u32) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(&[
        "generate",
        "--out",
        arg(&data),
        "--days",
        &days.to_string(),
        "--chain-days",
        "1",
        "--seed",
        "11",
    ]);
    (dir, data.join("nifty_1m.csv"))
}

/// A CSV as rows of named fields.
fn table(path: &Path) -> Vec<HashMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap()
        .split(',')
        .map(str::to_owned)
        .collect();
    lines
        .map(|l| header.iter().cloned().zip(fields(l)).collect())
        .collect()
}

/// The fields of a CSV line, quotes ("a, b" and "" inside them) undone.
fn fields(line: &str) -> Vec<String> {
    let (mut out, mut field, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut field)),
            _ => field.push(c),
        }
    }
    out.push(field);
    out
}

fn summary(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap()
}

fn dec(text: &str) -> Decimal {
    text.parse()
        .unwrap_or_else(|_| panic!("{text:?} is not a decimal"))
}

/// The float columns are written with six decimals.
fn close(a: &str, b: f64) -> bool {
    (a.parse::<f64>().unwrap() - b).abs() < 1e-5
}

#[test]
fn every_row_is_the_single_backtest_with_those_parameters() {
    let (dir, data) = generated(12);
    let out = dir.path().join("sweep");
    let ma = plugin("ma-crossover");
    let stdout = ok(&[
        "sweep",
        "--plugin",
        arg(&ma),
        "--data",
        arg(&data),
        "--grid",
        "fast=5..11:3",
        "--grid",
        "slow=30,45",
        "--out",
        arg(&out),
        "--rank",
        "sharpe",
        "--mode",
        "both",
        "--qty",
        "3",
        "--slippage-bps",
        "2",
        "--square-off",
        "15:15",
        "--stop-loss-pct",
        "0.4",
    ]);
    assert!(stdout.contains("6 combinations"), "{stdout}");
    let rows = table(&out.join("results.csv"));
    assert_eq!(rows.len(), 6);
    let mut sharpe_before = f64::INFINITY;
    for (n, row) in rows.iter().enumerate() {
        assert_eq!(row["rank"], (n + 1).to_string());
        assert_eq!(row["error"], "");
        let sharpe: f64 = row["sharpe"].parse().unwrap();
        assert!(
            sharpe <= sharpe_before,
            "ranked by sharpe, best first: {rows:?}"
        );
        sharpe_before = sharpe;
        let single = dir.path().join(format!("single-{n}"));
        ok(&[
            "backtest",
            "--plugin",
            arg(&ma),
            "--data",
            arg(&data),
            "--param",
            &format!("fast={}", row["fast"]),
            "--param",
            &format!("slow={}", row["slow"]),
            "--out",
            arg(&single),
            "--mode",
            "both",
            "--qty",
            "3",
            "--slippage-bps",
            "2",
            "--square-off",
            "15:15",
            "--stop-loss-pct",
            "0.4",
        ]);
        let s = summary(&single);
        let at = format!("fast={} slow={}", row["fast"], row["slow"]);
        assert_eq!(row["trades"], s["trades"].to_string(), "{at}");
        assert_eq!(row["signals"], s["signals"].to_string(), "{at}");
        assert_eq!(
            dec(&row["net_pnl"]),
            dec(s["net_pnl"].as_str().unwrap()),
            "{at}"
        );
        assert_eq!(
            dec(&row["max_drawdown"]),
            dec(s["max_drawdown"].as_str().unwrap()),
            "{at}"
        );
        for key in [
            "sharpe",
            "win_rate",
            "return_pct",
            "exposure_pct",
            "max_drawdown_pct",
        ] {
            assert!(
                close(&row[key], s[key].as_f64().unwrap()),
                "{at}: {key} {} against {}",
                row[key],
                s[key]
            );
        }
        assert!(
            s["trades"].as_u64().unwrap() > 0,
            "{at}: a sweep of no trades would prove little"
        );
    }
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        html.contains("sharpe by fast (across) and slow (down)")
            && html.contains("Equity of the best runs")
            && !html.contains("<script")
    );
    // Four cells of the heatmap, one per (fast, slow), each titled with its parameters.
    assert_eq!(
        html.matches("<rect x=").count(),
        7,
        "six heatmap cells and the equity chart's frame"
    );
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("sweep.json")).unwrap()).unwrap();
    assert_eq!(info["combinations"], 6);
    assert_eq!(info["grid"]["fast"], serde_json::json!(["5", "8", "11"]));

    // The Parquet table holds the CSV's rows: read with the parquet crate's own row reader.
    let file = std::fs::File::open(out.join("results.parquet")).unwrap();
    let reader = parquet::file::serialized_reader::SerializedFileReader::new(file).unwrap();
    let parquet_rows: Vec<String> = parquet::file::reader::FileReader::get_row_iter(&reader, None)
        .unwrap()
        .map(|r| r.unwrap().to_string())
        .collect();
    assert_eq!(parquet_rows.len(), 6);
    for (row, pq) in rows.iter().zip(&parquet_rows) {
        assert!(
            pq.contains(&format!("fast: {},", row["fast"]))
                && pq.contains(&format!("slow: {},", row["slow"])),
            "{pq} against {row:?}"
        );
        assert!(pq.contains(&format!("trades: {},", row["trades"])), "{pq}");
        let pnl = dec(&row["net_pnl"]);
        assert!(
            pq.contains(&format!("net_pnl: {}", pnl.round_dp(4)))
                || pq.contains(&format!("net_pnl: {pnl}")),
            "{pq}: net_pnl {pnl}"
        );
    }
}

#[test]
fn the_table_is_the_same_on_one_thread_or_two_and_failures_are_rows() {
    let (dir, data) = generated(6);
    let ma = plugin("ma-crossover");
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    let grid = dir.path().join("grid.toml");
    // ma-crossover refuses fast >= slow: those combinations are rows with their reason, ranked last.
    std::fs::write(&grid, "fast = \"5..45:20\"\nslow = [20, 40]\n").unwrap();
    ok(&[
        "sweep",
        "--plugin",
        arg(&ma),
        "--data",
        arg(&data),
        "--grid-file",
        arg(&grid),
        "--out",
        arg(&one),
        "--threads",
        "1",
    ]);
    ok(&[
        "sweep",
        "--plugin",
        arg(&ma),
        "--data",
        arg(&data),
        "--grid-file",
        arg(&grid),
        "--out",
        arg(&two),
        "--threads",
        "2",
    ]);
    let (a, b) = (
        std::fs::read_to_string(one.join("results.csv")).unwrap(),
        std::fs::read_to_string(two.join("results.csv")).unwrap(),
    );
    assert_eq!(a, b);
    let rows = table(&one.join("results.csv"));
    assert_eq!(rows.len(), 6);
    let failed: Vec<_> = rows.iter().filter(|r| !r["error"].is_empty()).collect();
    assert_eq!(failed.len(), 3, "25/20, 45/20 and 45/40: {rows:?}");
    assert!(
        failed
            .iter()
            .all(|r| r["fast"].parse::<u32>().unwrap() >= r["slow"].parse::<u32>().unwrap()),
        "{failed:?}"
    );
    assert!(
        rows[3..]
            .iter()
            .all(|r| r["error"].contains("must be greater than fast")),
        "failures rank last, with the plugin's reason: {rows:?}"
    );
    assert!(rows[..3].iter().all(|r| r["error"].is_empty()));

    // Mistakes are refused, named, before any work.
    let out = dir.path().join("bad");
    for (args, says) in [
        (
            vec!["--grid", "fast=9..5"],
            "--grid \"fast=9..5\": end 5 is below start 9",
        ),
        (vec!["--grid", "fast"], "expected name="),
        (
            vec!["--grid", "fast=5,6", "--param", "fast=7"],
            "--param fast: fast is also swept",
        ),
        (
            vec!["--grid", "fast=5,6", "--heatmap", "fast,slow"],
            "\"slow\" is not swept",
        ),
        (
            vec!["--grid", "fast=5,6", "--walk-forward", "train=60d"],
            "give train=<days>d and test=<days>d",
        ),
        (
            vec!["--grid", "fast=5,6", "--walk-forward", "train=60d,test=20d"],
            "fewer than one window",
        ),
        (vec![], "nothing to sweep"),
    ] {
        let mut all = vec![
            "sweep",
            "--plugin",
            arg(&ma),
            "--data",
            arg(&data),
            "--out",
            arg(&out),
        ];
        all.extend(args);
        let e = failure(&all);
        assert!(e.contains(says), "{all:?}: {e}");
    }
    let e = failure(&[
        "sweep",
        "--plugin",
        arg(&ma),
        "--data",
        arg(&data),
        "--out",
        arg(&out),
        "--grid",
        "fast=50,60",
        "--param",
        "slow=10",
    ]);
    assert!(e.contains("every combination failed"), "{e}");
}

#[test]
fn walk_forward_is_a_sweep_of_each_train_window_and_its_test_days_add_up() {
    let (dir, data) = generated(10);
    let ma = plugin("ma-crossover");
    let out = dir.path().join("wf");
    let stdout = ok(&[
        "sweep",
        "--plugin",
        arg(&ma),
        "--data",
        arg(&data),
        "--grid",
        "fast=5,9",
        "--grid",
        "slow=30,50",
        "--walk-forward",
        "train=4d,test=2d",
        "--out",
        arg(&out),
    ]);
    assert!(stdout.contains("walk-forward over 3 windows"), "{stdout}");
    let windows = table(&out.join("walk_forward.csv"));
    assert_eq!(windows.len(), 3);
    assert_eq!(
        windows
            .iter()
            .map(|w| (w["train_days"].as_str(), w["test_days"].as_str()))
            .collect::<Vec<_>>(),
        [("4", "2"); 3]
    );

    // Window 1's in-sample runs are a plain sweep of its four train days.
    let text = std::fs::read_to_string(&data).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let bars_per_day = 375;
    let train: Vec<&str> = lines.take(4 * bars_per_day).collect();
    let train_file = dir.path().join("train.csv");
    std::fs::write(&train_file, format!("{header}\n{}\n", train.join("\n"))).unwrap();
    let plain = dir.path().join("plain");
    ok(&[
        "sweep",
        "--plugin",
        arg(&ma),
        "--data",
        arg(&train_file),
        "--grid",
        "fast=5,9",
        "--grid",
        "slow=30,50",
        "--out",
        arg(&plain),
    ]);
    let in_sample: Vec<String> = std::fs::read_to_string(out.join("in_sample.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|l| l.strip_prefix("1,"))
        .map(str::to_owned)
        .collect();
    let plain_rows: Vec<String> = std::fs::read_to_string(plain.join("results.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(str::to_owned)
        .collect();
    assert_eq!(in_sample, plain_rows);
    // Its winner is the plain sweep's best.
    let best = &table(&plain.join("results.csv"))[0];
    assert_eq!(
        (windows[0]["fast"].as_str(), windows[0]["slow"].as_str()),
        (best["fast"].as_str(), best["slow"].as_str())
    );
    assert_eq!(windows[0]["is_net_pnl"], best["net_pnl"]);

    // The stitched out-of-sample curve ends at the sum of the windows' out-of-sample P&L.
    let oos: Decimal = windows.iter().map(|w| dec(&w["oos_net_pnl"])).sum();
    let equity = table(&out.join("oos_equity.csv"));
    assert_eq!(
        dec(&equity.last().unwrap()["equity"]) - Decimal::from(1_000_000),
        oos
    );
    assert_eq!(equity.len(), 6, "two test days a window, three windows");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        html.contains("in-sample against out-of-sample") && html.contains("Out-of-sample equity")
    );
}

#[test]
fn parquet_data_backtests_exactly_as_its_csv() {
    let (dir, data) = generated(5);
    let pq = dir.path().join("pq");
    let stdout = ok(&["data", "import", arg(&data), "--out", arg(&pq)]);
    assert!(stdout.contains("1875 bars of NIFTY"), "{stdout}");
    let file = pq.join("nifty_1m.parquet");
    let ma = plugin("ma-crossover");
    let (a, b) = (dir.path().join("csv"), dir.path().join("parquet"));
    for (data, out) in [(&data, &a), (&file, &b)] {
        ok(&[
            "backtest",
            "--plugin",
            arg(&ma),
            "--data",
            arg(data),
            "--out",
            arg(out),
            "--param",
            "fast=5",
            "--param",
            "slow=20",
            "--mode",
            "both",
            "--slippage-bps",
            "3",
        ]);
    }
    for name in ["signals.csv", "trades.csv", "fills.csv"] {
        let (x, y) = (
            std::fs::read_to_string(a.join(name)).unwrap(),
            std::fs::read_to_string(b.join(name)).unwrap(),
        );
        assert!(x.lines().count() > 10, "{name}: too few lines to compare");
        assert_eq!(x, y, "{name}");
    }
    // An option chain too, with its underlying's candles (both as Parquet): the same signals, trades and fills.
    let chain_csv = data.with_file_name("nifty_optionchain_1m.csv");
    let stdout = ok(&["data", "import", arg(&chain_csv), "--out", arg(&pq)]);
    assert!(
        stdout.contains("375 option-chain snapshots of NIFTY"),
        "{stdout}"
    );
    let oi = plugin("oi-crossover");
    let (c, d) = (
        dir.path().join("chain-csv"),
        dir.path().join("chain-parquet"),
    );
    for (chain, underlying, out) in [
        (&chain_csv, &data, &c),
        (&pq.join("nifty_optionchain_1m.parquet"), &file, &d),
    ] {
        ok(&[
            "backtest",
            "--plugin",
            arg(&oi),
            "--data",
            arg(chain),
            "--underlying",
            arg(underlying),
            "--out",
            arg(out),
        ]);
    }
    for name in ["signals.csv", "trades.csv", "fills.csv"] {
        let (x, y) = (
            std::fs::read_to_string(c.join(name)).unwrap(),
            std::fs::read_to_string(d.join(name)).unwrap(),
        );
        assert!(x.lines().count() > 2, "{name}: too few lines to compare");
        assert_eq!(x, y, "{name}");
    }
    // Bad input: a CSV error names file and line and writes nothing; a file that is not ours is named.
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "timestamp,open,high,low,close\n2024-01-01T09:15:00+05:30,100,101,99,100\n2024-01-01T09:16:00+05:30,100,99,101,100\n").unwrap();
    let e = failure(&["data", "import", arg(&bad), "--out", arg(&pq)]);
    assert!(e.contains("bad.csv:3"), "{e}");
    assert!(!pq.join("bad.parquet").exists());
    let truncated = dir.path().join("cut.parquet");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let e = failure(&[
        "backtest",
        "--plugin",
        arg(&ma),
        "--data",
        arg(&truncated),
        "--out",
        arg(&b),
    ]);
    assert!(e.contains("cut.parquet"), "{e}");
    let other = dir.path().join("results.parquet");
    std::fs::copy(&file, &other).unwrap();
    let results = dir.path().join("sweep");
    ok(&[
        "sweep",
        "--plugin",
        arg(&ma),
        "--data",
        arg(&file),
        "--grid",
        "fast=5,6",
        "--param",
        "slow=20",
        "--out",
        arg(&results),
    ]);
    let e = failure(&[
        "backtest",
        "--plugin",
        arg(&ma),
        "--data",
        arg(&results.join("results.parquet")),
        "--out",
        arg(&b),
    ]);
    assert!(e.contains("not a tradehost candle file"), "{e}");
}

#[test]
fn sweep_and_walk_forward_on_real_nse_minutes() {
    let Some(nifty) = shared_data("nifty50_1m_2024-01_2024-08.csv") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ma = plugin("ma-crossover");
    let pq = dir.path().join("pq");
    ok(&["data", "import", arg(&nifty), "--out", arg(&pq)]);
    let file = pq.join("nifty50_1m_2024-01_2024-08.parquet");
    let out = dir.path().join("sweep");
    ok(&[
        "sweep",
        "--plugin",
        arg(&ma),
        "--data",
        arg(&file),
        "--grid",
        "fast=5..14:3",
        "--grid",
        "slow=40..85:15",
        "--out",
        arg(&out),
    ]);
    let best = &table(&out.join("results.csv"))[0];
    let single = dir.path().join("single");
    ok(&[
        "backtest",
        "--plugin",
        arg(&ma),
        "--data",
        arg(&nifty),
        "--param",
        &format!("fast={}", best["fast"]),
        "--param",
        &format!("slow={}", best["slow"]),
        "--out",
        arg(&single),
    ]);
    let s = summary(&single);
    assert_eq!(dec(&best["net_pnl"]), dec(s["net_pnl"].as_str().unwrap()));
    assert_eq!(best["trades"], s["trades"].to_string());
    let wf = dir.path().join("wf");
    let stdout = ok(&[
        "sweep",
        "--plugin",
        arg(&ma),
        "--data",
        arg(&file),
        "--grid",
        "fast=5..14:3",
        "--grid",
        "slow=40..85:15",
        "--walk-forward",
        "train=60d,test=20d",
        "--out",
        arg(&wf),
    ]);
    assert!(stdout.contains("walk-forward over 4 windows"), "{stdout}");
}

#[test]
fn a_pipeline_sweep_trades_each_combination_through_the_order_manager() {
    let (dir, data) = generated(4);
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines.toml");
    let plugins = tradehost_tests::plugin_dir();
    let out = dir.path().join("sweep");
    ok(&[
        "sweep",
        "--config",
        arg(&config),
        "--pipeline",
        "nifty-ma",
        "--plugin-dir",
        arg(&plugins),
        "--data",
        arg(&data),
        "--grid",
        "slow=30,50",
        "--out",
        arg(&out),
    ]);
    let rows = table(&out.join("results.csv"));
    assert_eq!(rows.len(), 2);
    // The pipeline's own parameters (fast=10, slow=50), backtested as configured: the same account P&L.
    let single = dir.path().join("single");
    ok(&[
        "backtest",
        "--config",
        arg(&config),
        "--pipeline",
        "nifty-ma",
        "--plugin-dir",
        arg(&plugins),
        "--data",
        arg(&data),
        "--out",
        arg(&single),
    ]);
    let s = summary(&single);
    let row = rows.iter().find(|r| r["slow"] == "50").unwrap();
    assert_eq!(
        dec(&row["net_pnl"]),
        dec(s["accounts"]["paper-long"]["realized"].as_str().unwrap())
    );
    assert_eq!(
        row["trades"],
        s["accounts"]["paper-long"]["round_trips"].to_string()
    );
    // The other one was really given slow=30: its own run folder says so.
    let other = rows.iter().find(|r| r["slow"] == "30").unwrap();
    assert_ne!(other["net_pnl"], row["net_pnl"]);
    let narrowed = std::fs::read_to_string(out.join("runs/1/pipelines.toml")).unwrap();
    assert!(narrowed.contains("slow = \"30\""), "{narrowed}");
    let e = failure(&[
        "backtest",
        "--config",
        arg(&config),
        "--pipeline",
        "nifty-ma",
        "--plugin-dir",
        arg(&plugins),
        "--data",
        arg(&data),
        "--trade-from",
        "2024-13-01",
        "--out",
        arg(&single),
    ]);
    assert!(
        e.contains("--trade-from \"2024-13-01\": expected a date like 2024-03-01"),
        "{e}"
    );
}

#[test]
fn a_pipeline_walks_forward_through_the_order_manager() {
    let (dir, data) = generated(6);
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines.toml");
    let plugins = tradehost_tests::plugin_dir();
    let out = dir.path().join("wf");
    let grid = ["--grid", "slow=30,50"];
    let stdout = ok(&[
        &[
            "sweep",
            "--config",
            arg(&config),
            "--pipeline",
            "nifty-ma",
            "--plugin-dir",
            arg(&plugins),
            "--data",
            arg(&data),
            "--walk-forward",
            "train=3d,test=1d",
            "--out",
            arg(&out),
        ][..],
        &grid,
    ]
    .concat());
    assert!(stdout.contains("walk-forward over 3 windows"), "{stdout}");
    let windows = table(&out.join("walk_forward.csv"));
    assert_eq!(windows.len(), 3);

    // Window 1's in-sample runs are a plain pipeline sweep of its three train days.
    let text = std::fs::read_to_string(&data).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let days: Vec<&str> = lines.collect();
    let train_file = dir.path().join("train.csv");
    std::fs::write(
        &train_file,
        format!("{header}\n{}\n", days[..3 * 375].join("\n")),
    )
    .unwrap();
    let plain = dir.path().join("plain");
    ok(&[
        &[
            "sweep",
            "--config",
            arg(&config),
            "--pipeline",
            "nifty-ma",
            "--plugin-dir",
            arg(&plugins),
            "--data",
            arg(&train_file),
            "--out",
            arg(&plain),
        ][..],
        &grid,
    ]
    .concat());
    let in_sample: Vec<String> = std::fs::read_to_string(out.join("in_sample.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|l| l.strip_prefix("1,"))
        .map(str::to_owned)
        .collect();
    let plain_rows: Vec<String> = std::fs::read_to_string(plain.join("results.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(str::to_owned)
        .collect();
    assert_eq!(in_sample, plain_rows);
    let best = &table(&plain.join("results.csv"))[0];
    assert_eq!(windows[0]["slow"], best["slow"]);

    // Its out-of-sample run traded only on the test day, with the train days as warm-up: its
    // signals from then on are those of the whole four days backtested untouched.
    let oos = out.join("runs/w1/out-of-sample");
    let test_date = days[3 * 375][..10].to_owned();
    let fills = std::fs::read_to_string(oos.join("fills.csv")).unwrap();
    assert!(
        fills.lines().count() > 1 && fills.lines().skip(1).all(|l| l.starts_with(&test_date)),
        "only the test day {test_date} trades:\n{fills}"
    );
    // Named as the original, so the instrument is NIFTY too.
    std::fs::create_dir_all(dir.path().join("window")).unwrap();
    let window_file = dir.path().join("window/nifty_1m.csv");
    std::fs::write(
        &window_file,
        format!("{header}\n{}\n", days[..4 * 375].join("\n")),
    )
    .unwrap();
    let whole = dir.path().join("whole");
    ok(&[
        "backtest",
        "--config",
        arg(&config),
        "--pipeline",
        "nifty-ma",
        "--plugin-dir",
        arg(&plugins),
        "--data",
        arg(&window_file),
        "--param",
        &format!("slow={}", best["slow"]),
        "--out",
        arg(&whole),
    ]);
    let on_test_day = |path: &Path| -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .filter(|l| l.contains(&test_date))
            .map(str::to_owned)
            .collect()
    };
    let want = on_test_day(&whole.join("signals.csv"));
    assert!(!want.is_empty(), "the strategy signals on the test day");
    assert_eq!(on_test_day(&oos.join("signals.csv")), want);
    assert_eq!(
        std::fs::read_to_string(oos.join("signals.csv"))
            .unwrap()
            .lines()
            .count()
            - 1,
        want.len(),
        "no signal before the test day"
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("Out-of-sample equity"));
}

/// A vendor's chain file writes `77.5` beside `74.15`: through Parquet the prices come back as
/// written, so the backtest's files are the same byte for byte.
#[test]
fn a_real_option_chain_backtests_the_same_from_parquet() {
    let (Some(chain), Some(eq)) = (
        shared_data("heromotoco_optionchain_oi_1m_2025-08-20.csv"),
        shared_data("heromotoco_eq_1m_2025-08-20.csv"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pq = dir.path().join("pq");
    ok(&["data", "import", arg(&chain), arg(&eq), "--out", arg(&pq)]);
    let oi = plugin("oi-crossover");
    let (a, b) = (dir.path().join("csv"), dir.path().join("parquet"));
    ok(&[
        "backtest",
        "--plugin",
        arg(&oi),
        "--data",
        arg(&chain),
        "--underlying",
        arg(&eq),
        "--out",
        arg(&a),
    ]);
    let (pq_chain, pq_eq) = (
        pq.join("heromotoco_optionchain_oi_1m_2025-08-20.parquet"),
        pq.join("heromotoco_eq_1m_2025-08-20.parquet"),
    );
    ok(&[
        "backtest",
        "--plugin",
        arg(&oi),
        "--data",
        arg(&pq_chain),
        "--underlying",
        arg(&pq_eq),
        "--out",
        arg(&b),
    ]);
    for name in ["signals.csv", "trades.csv", "fills.csv"] {
        let (x, y) = (
            std::fs::read_to_string(a.join(name)).unwrap(),
            std::fs::read_to_string(b.join(name)).unwrap(),
        );
        assert!(x.lines().count() > 2, "{name}: too few lines to compare");
        assert_eq!(x, y, "{name}");
    }
}
