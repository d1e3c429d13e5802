//! One fills format: `backtest --out DIR` writes `DIR/fills.csv`, and
//! `report --fills-csv` writes the same columns from a run's journal. A run of
//! a pipeline whose account trades as the single-plugin backtest does gives
//! the same file, line for line, on generated data: with the backtest's
//! defaults (one unit, long only, the next open, no slippage, no exits), and
//! with an intraday account's rules (reversals, slippage, a stop-loss and a
//! trailing stop filled on the next price, the 15:15 square-off), since the
//! backtest applies the order manager's own rules.

use tradehost_tests::{arg as s, plugin, plugin_dir, tradehost_ok as ok};

/// The single-plugin backtest's flags, and the account of a run that trades the same way.
struct Case {
    name: &'static str,
    flags: &'static [&'static str],
    account: &'static str,
}

const CASES: [Case; 2] = [
    Case {
        name: "the defaults: one unit, long only, the next open, no slippage, no exits",
        flags: &[],
        account: r#"mode = "long"
product = "cnc"
sizing = { kind = "fixed", qty = 1 }
slippage_bps = 0
risk = { cooldown_secs = 0, entry_window = "00:00-23:59", max_orders_per_sec = 1000 }"#,
    },
    Case {
        name: "an intraday account: reversals, slippage on the tick, a stop and a trailing stop, the 15:15 square-off",
        flags: &[
            "--mode",
            "both",
            "--qty",
            "3",
            "--slippage-bps",
            "5",
            "--stop-loss-pct",
            "0.4",
            "--trailing-pct",
            "0.3",
            "--square-off",
            "15:15",
            "--exit-fill",
            "next-price",
        ],
        account: r#"mode = "both"
product = "mis"
square_off = "15:15"
sizing = { kind = "fixed", qty = 3 }
slippage_bps = 5
exits = { stop_loss_pct = 0.4, trailing_pct = 0.3 }
risk = { cooldown_secs = 0, entry_window = "09:15-15:15", max_orders_per_sec = 1000 }"#,
    },
];

#[test]
fn a_backtest_and_a_paper_run_of_the_same_data_write_the_same_fills() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(&[
        "generate",
        "--out",
        s(&data),
        "--days",
        "8",
        "--chain-days",
        "1",
        "--seed",
        "11",
    ]);
    let csv = data.join("nifty_1m.csv");

    for (n, case) in CASES.iter().enumerate() {
        let out = dir.path().join(format!("bt{n}"));
        let wasm = plugin("ma-crossover");
        let mut args = vec![
            "backtest",
            "--plugin",
            s(&wasm),
            "--data",
            s(&csv),
            "--param",
            "fast=5",
            "--param",
            "slow=20",
            "--out",
            s(&out),
        ];
        args.extend(case.flags);
        ok(&args);
        let backtest = std::fs::read_to_string(out.join("fills.csv")).unwrap();

        let run_dir = dir.path().join(format!("run{n}"));
        std::fs::create_dir_all(&run_dir).unwrap();
        let config = run_dir.join("pipelines.toml");
        std::fs::write(
            &config,
            format!(
                r#"[host]
plugin_dir = {plugins:?}
journal = "journal.sqlite"

[[accounts]]
id = "backtest"
capital = 1000000000
{account}

[[pipelines]]
id = "nifty-ma"
plugin = "ma_crossover.wasm"
symbols = ["NIFTY"]
accounts = ["backtest"]
source = {{ kind = "replay", files = [{csv:?}], speed = 0 }}
[pipelines.params]
fast = 5
slow = 20
"#,
                plugins = s(&plugin_dir()),
                csv = s(&csv),
                account = case.account,
            ),
        )
        .unwrap();
        ok(&[
            "run",
            "--quiet",
            "--until-idle",
            "1",
            "--config",
            s(&config),
        ]);
        let fills = run_dir.join("fills.csv");
        let printed = ok(&[
            "report",
            "--journal",
            s(&run_dir.join("journal.sqlite")),
            "--fills-csv",
            s(&fills),
        ]);
        assert!(printed.contains("backtest"), "{printed}");
        let run = std::fs::read_to_string(&fills).unwrap();

        assert!(
            backtest.starts_with("ts,account,instrument,side,qty,price,reason\n"),
            "{backtest}"
        );
        assert!(
            backtest.lines().count() > 10,
            "{}: the crossover trades on eight days: {backtest}",
            case.name
        );
        let (b, r): (Vec<&str>, Vec<&str>) = (backtest.lines().collect(), run.lines().collect());
        for (i, (x, y)) in b.iter().zip(&r).enumerate() {
            assert_eq!(
                x,
                y,
                "{}: line {} differs (backtest, then run)",
                case.name,
                i + 1
            );
        }
        assert_eq!(
            b.len(),
            r.len(),
            "{}: backtest:\n{backtest}\nrun:\n{run}",
            case.name
        );
        if n == 1 {
            // The rules this case is about did act.
            for reason in ["square-off", "trailing-stop", "signal"] {
                assert!(
                    backtest.contains(&format!(",{reason}\n")),
                    "{}: no {reason} fill:\n{backtest}",
                    case.name
                );
            }
            assert!(
                backtest.lines().any(|l| l.contains(",6,")),
                "{}: no reversal:\n{backtest}",
                case.name
            );
        }
    }
}
