//! `tradehost generate` and `tradehost backtest` driven as a user would:
//! through the binary, on generated data, and on the real NSE files when
//! `../shared/data/market` is present.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rust_decimal::Decimal;
use tradehost_tests::{plugin, shared_data, tradehost_bin};

fn tradehost(args: &[&str]) -> Output {
    Command::new(tradehost_bin())
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running tradehost")
}

fn ok(args: &[&str]) -> String {
    let out = tradehost(args);
    assert!(
        out.status.success(),
        "tradehost {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn failure(args: &[&str]) -> String {
    let out = tradehost(args);
    assert!(
        !out.status.success(),
        "tradehost {args:?} should have failed"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn generated() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(&[
        "generate",
        "--out",
        data.to_str().unwrap(),
        "--days",
        "20",
        "--chain-days",
        "2",
        "--seed",
        "7",
    ]);
    (dir, data)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Checks the four outputs agree with each other; returns the summary.
fn check_outputs(out: &Path) -> serde_json::Value {
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let trades = std::fs::read_to_string(out.join("trades.csv")).unwrap();
    let mut lines = trades.lines();
    assert_eq!(
        lines.next(),
        Some("entry_ts,exit_ts,side,qty,entry_price,exit_price,pnl,instrument,exit_reason")
    );
    let pnl: Decimal = lines
        .map(|l| l.split(',').nth(6).unwrap().parse::<Decimal>().unwrap())
        .sum();
    let net: Decimal = summary["net_pnl"].as_str().unwrap().parse().unwrap();
    assert_eq!(pnl, net, "trades.csv does not add up to summary.json");
    assert_eq!(
        trades.lines().count() - 1,
        summary["trades"].as_u64().unwrap() as usize
    );
    let signals = std::fs::read_to_string(out.join("signals.csv")).unwrap();
    assert!(signals.starts_with("ts,instrument,side,price,reason\n"));
    assert_eq!(
        signals.lines().count() - 1,
        summary["signals"].as_u64().unwrap() as usize
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        html.contains("<svg")
            && html.contains("Equity")
            && html.contains("Drawdown")
            && html.contains("<h2>Trades</h2>")
    );
    assert!(
        !html.contains("<script"),
        "the report must be self-contained and static"
    );
    summary
}

#[test]
fn generate_is_deterministic() {
    let (a, da) = generated();
    let (_b, db) = generated();
    for f in [
        "nifty_1m.csv",
        "banknifty_1m.csv",
        "nifty_optionchain_1m.csv",
    ] {
        let (x, y) = (
            std::fs::read(da.join(f)).unwrap(),
            std::fs::read(db.join(f)).unwrap(),
        );
        assert!(x.len() > 1000, "{f} is nearly empty");
        assert_eq!(x, y, "{f} differs between two runs with the same seed");
    }
    drop(a);
}

#[test]
fn every_bundled_strategy_backtests_on_generated_data() {
    let (dir, data) = generated();
    let runs: [(&str, Vec<&str>); 4] = [
        ("ma-crossover", vec!["--data", "nifty_1m.csv"]),
        ("rsi", vec!["--data", "banknifty_1m.csv", "--mode", "both"]),
        (
            "orb",
            vec![
                "--data",
                "nifty_1m.csv",
                "--square-off",
                "15:15",
                "--param",
                "target_multiple=2",
            ],
        ),
        (
            "oi-crossover",
            vec![
                "--data",
                "nifty_optionchain_1m.csv",
                "--underlying",
                "nifty_1m.csv",
                "--qty",
                "75",
            ],
        ),
    ];
    for (name, args) in runs {
        let out = dir.path().join(format!("out-{name}"));
        let mut full = vec![
            "backtest".to_owned(),
            "--plugin".into(),
            s(&plugin(name)).into(),
            "--out".into(),
            s(&out).into(),
        ];
        full.extend(args.iter().map(|a| {
            if a.ends_with(".csv") {
                s(&data.join(a)).to_owned()
            } else {
                (*a).to_owned()
            }
        }));
        let stdout = ok(&full.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(stdout.contains(&format!("{name} 0.1.0 on")), "{stdout}");
        let summary = check_outputs(&out);
        assert!(
            summary["trades"].as_u64().unwrap() > 0,
            "{name} made no trades: {summary}"
        );
        assert_eq!(summary["run"]["contract"], "1.2.0");
    }
}

#[test]
fn mistakes_are_reported_with_file_line_and_field() {
    let (dir, data) = generated();
    let out = dir.path().join("out");
    let nifty = data.join("nifty_1m.csv");
    let rsi = plugin("rsi");

    let bad_csv = dir.path().join("bad.csv");
    std::fs::write(&bad_csv, "timestamp,open,high,low,close,volume\n2024-01-01T09:15:00+05:30,1,2,1,1,5\n2024-01-01T09:16:00+05:30,1,2,x,1,5\n").unwrap();
    let err = failure(&[
        "backtest",
        "--plugin",
        s(&rsi),
        "--data",
        s(&bad_csv),
        "--out",
        s(&out),
    ]);
    assert!(
        err.contains(&format!(
            "{}:3: field `low`: expected a decimal number (got \"x\")",
            bad_csv.display()
        )),
        "{err}"
    );

    let err = failure(&[
        "backtest",
        "--plugin",
        s(&rsi),
        "--data",
        s(&nifty),
        "--out",
        s(&out),
        "--param",
        "period=0",
    ]);
    assert!(err.contains("param `period`: must be at least 1"), "{err}");

    let err = failure(&[
        "backtest",
        "--plugin",
        s(&rsi),
        "--data",
        s(&nifty),
        "--out",
        s(&out),
        "--param",
        "period",
    ]);
    assert!(err.contains("expected key=value"), "{err}");

    let corrupt = dir.path().join("corrupt.wasm");
    std::fs::write(&corrupt, b"definitely not wasm").unwrap();
    let err = failure(&[
        "backtest",
        "--plugin",
        s(&corrupt),
        "--data",
        s(&nifty),
        "--out",
        s(&out),
    ]);
    assert!(
        err.contains("corrupt.wasm") && err.contains("not a WebAssembly file"),
        "{err}"
    );

    let err = failure(&[
        "backtest",
        "--plugin",
        s(&plugin("future-contract")),
        "--data",
        s(&nifty),
        "--out",
        s(&out),
    ]);
    assert!(
        err.contains("tradehost:strategy@2.0.0") && err.contains("1.2.0"),
        "{err}"
    );

    let err = failure(&[
        "backtest",
        "--plugin",
        s(&rsi),
        "--data",
        s(&nifty),
        "--out",
        s(&out),
        "--square-off",
        "3pm",
    ]);
    assert!(err.contains("--square-off \"3pm\""), "{err}");
    assert!(
        !out.exists(),
        "nothing may be written when the run is refused"
    );
}

#[test]
fn hostile_plugin_fails_the_backtest_naming_it() {
    let (dir, data) = generated();
    let err = failure(&[
        "backtest",
        "--plugin",
        s(&plugin("hostile")),
        "--data",
        s(&data.join("nifty_1m.csv")),
        "--out",
        s(&dir.path().join("o")),
        "--param",
        "behaviour=loop-on-candle",
        "--fuel-per-event",
        "1000000",
        "--batch",
        "1",
    ]);
    assert!(
        err.contains("plugin hostile: on-candle exceeded its CPU budget"),
        "{err}"
    );
}

/// The bundled strategies on the real NSE files: all four outputs, and the
/// ORB's opening ranges match a third party's table for the same days.
#[test]
fn real_nse_data() {
    let (Some(nifty), Some(bank), Some(y2009), Some(chain), Some(hero)) = (
        shared_data("nifty50_1m_2024-01_2024-08.csv"),
        shared_data("banknifty_1m_2024-01_2024-08.csv"),
        shared_data("nifty50_1m_2009.csv"),
        shared_data("heromotoco_optionchain_oi_1m_2025-08-20.csv"),
        shared_data("heromotoco_eq_1m_2025-08-20.csv"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (name, data, extra) in [
        ("ma-crossover", &nifty, vec![]),
        ("rsi", &bank, vec!["--instrument", "BANKNIFTY"]),
        (
            "orb",
            &nifty,
            vec!["--square-off", "15:15", "--mode", "both"],
        ),
        (
            "orb",
            &y2009,
            vec!["--param", "session_open=09:55", "--mode", "both"],
        ),
        ("ma-crossover", &y2009, vec!["--param", "kind=ema"]),
        ("oi-crossover", &chain, vec!["--underlying", s(&hero)]),
    ] {
        let out = dir.path().join(format!(
            "{name}-{}",
            data.file_stem().unwrap().to_string_lossy()
        ));
        let mut args = vec![
            "backtest",
            "--plugin",
            s(&plugin(name)).to_owned().leak(),
            "--data",
            s(data),
            "--out",
            s(&out),
        ];
        args.extend(extra);
        ok(&args);
        let summary = check_outputs(&out);
        assert!(
            summary["signals"].as_u64().unwrap() > 0,
            "{name} on {}: {summary}",
            data.display()
        );
        if data == &nifty {
            // The 2024 file has Saturday sessions with junk bars up to 18:16: the filter drops them.
            assert!(
                summary["run"]["rows_outside_session"].as_u64().unwrap() >= 167,
                "{summary}"
            );
        }
    }

    let Some(third_party) = shared_data("thirdparty_orb0930_nifty50_2024.csv") else {
        return;
    };
    // Their range includes the 09:30 bar; ours (as the issue defines it) stops
    // before it. Where their extreme was set at 09:30 ours must lie inside it;
    // anywhere else the two must be equal.
    let ranges: HashMap<String, [(Decimal, bool); 2]> = std::fs::read_to_string(third_party)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let date = format!("{}-{}-{}", &f[0][0..4], &f[0][4..6], &f[0][6..8]);
            (
                date,
                [
                    (f[4].parse().unwrap(), f[5] == "09:30"),
                    (f[2].parse().unwrap(), f[3] == "09:30"),
                ],
            )
        })
        .collect();
    let signals = std::fs::read_to_string(
        dir.path()
            .join("orb-nifty50_1m_2024-01_2024-08/signals.csv"),
    )
    .unwrap();
    let (mut compared, mut exact) = (0, 0);
    for line in signals.lines().skip(1) {
        let date = &line[..10];
        let (low, high) = line
            .rsplit("range ")
            .next()
            .unwrap()
            .split_once('-')
            .unwrap();
        let (low, high): (Decimal, Decimal) = (low.parse().unwrap(), high.parse().unwrap());
        let Some([(their_low, low_at_0930), (their_high, high_at_0930)]) = ranges.get(date) else {
            continue;
        };
        if *low_at_0930 {
            assert!(low >= *their_low, "{date}")
        } else {
            assert_eq!(low, *their_low, "{date} low")
        }
        if *high_at_0930 {
            assert!(high <= *their_high, "{date}")
        } else {
            assert_eq!(high, *their_high, "{date} high")
        }
        compared += 1;
        exact += usize::from(!low_at_0930 && !high_at_0930);
    }
    assert!(exact > 100, "only {exact} days compared exactly");
    assert!(compared > 100, "only {compared} days compared");
}
