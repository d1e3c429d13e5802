//! One fills format: `backtest --out DIR` writes `DIR/fills.csv`, and
//! `report --fills-csv` writes the same columns from a run's journal. A run of
//! a pipeline whose account trades as the single-plugin backtest does (one
//! unit, long only, filled at the next price's open, no slippage, no exits and
//! no limits in the way) gives the same file, line for line, on generated data.

use tradehost_tests::{arg as s, plugin, plugin_dir, tradehost_ok as ok};

#[test]
fn a_backtest_and_a_paper_run_of_the_same_data_write_the_same_fills() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(&["generate", "--out", s(&data), "--days", "8", "--chain-days", "1", "--seed", "11"]);
    let csv = data.join("nifty_1m.csv");

    let out = dir.path().join("bt");
    ok(&["backtest", "--plugin", s(&plugin("ma-crossover")), "--data", s(&csv), "--param", "fast=5", "--param", "slow=20", "--out", s(&out)]);
    let backtest = std::fs::read_to_string(out.join("fills.csv")).unwrap();

    let config = dir.path().join("pipelines.toml");
    std::fs::write(
        &config,
        format!(
            r#"[host]
plugin_dir = {plugins:?}
journal = "journal.sqlite"

[[accounts]]
id = "backtest"
capital = 1000000000
mode = "long"
product = "cnc"
sizing = {{ kind = "fixed", qty = 1 }}
slippage_bps = 0
risk = {{ cooldown_secs = 0, entry_window = "00:00-23:59", max_orders_per_sec = 1000 }}

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
        ),
    )
    .unwrap();
    ok(&["run", "--quiet", "--until-idle", "1", "--config", s(&config)]);
    let fills = dir.path().join("fills.csv");
    let printed = ok(&["report", "--journal", s(&dir.path().join("journal.sqlite")), "--fills-csv", s(&fills)]);
    assert!(printed.contains("backtest"), "{printed}");
    let run = std::fs::read_to_string(&fills).unwrap();

    assert!(backtest.starts_with("ts,account,instrument,side,qty,price,reason\n"), "{backtest}");
    assert!(backtest.lines().count() > 10, "the crossover trades on eight days: {backtest}");
    let (b, r): (Vec<&str>, Vec<&str>) = (backtest.lines().collect(), run.lines().collect());
    for (i, (x, y)) in b.iter().zip(&r).enumerate() {
        assert_eq!(x, y, "line {} differs (backtest, then run)", i + 1);
    }
    assert_eq!(b.len(), r.len(), "backtest:\n{backtest}\nrun:\n{run}");
}
