//! Limit and stop entries through the whole path: a contract-1.1 plugin asks for
//! them, `tradehost run` (paper, replay) works them on the paper venue, and the
//! pipeline backtest and the single-plugin backtest fill them the same. Where an
//! entry fills is checked against the data file itself: the first bar after the
//! signal that trades through the limit, read here from the CSV, not from the host.

use std::path::Path;

use rust_decimal::Decimal;
use tradehost_tests::{arg as s, plugin, plugin_dir, tradehost_ok as ok};

/// `(ts text, open, high, low, close)` of each bar of a generated candle file.
fn bars(file: &Path) -> Vec<(String, Decimal, Decimal, Decimal, Decimal)> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no {name} in {header:?}"))
    };
    let (ts, o, h, l, c) = (
        col("timestamp"),
        col("open"),
        col("high"),
        col("low"),
        col("close"),
    );
    lines
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            let d = |i: usize| f[i].parse::<Decimal>().unwrap();
            (f[ts].to_owned(), d(o), d(h), d(l), d(c))
        })
        .collect()
}

fn config(dir: &Path, data: &Path, order: &str, offset: &str, exit_bar: u32) -> std::path::PathBuf {
    let path = dir.join("run.toml");
    let text = format!(
        r#"[host]
plugin_dir = {plugins:?}
journal = {journal:?}
heartbeat_secs = 1

[[accounts]]
id = "paper"
capital = 10000000
mode = "long"
product = "cnc"
sizing = {{ kind = "fixed", qty = 50 }}
slippage_bps = 0

[[pipelines]]
id = "entries"
plugin = "order_types.wasm"
symbols = ["NIFTY"]
accounts = ["paper"]
timeframe = "1m"
source = {{ kind = "replay", files = [{data:?}], speed = 0 }}
[pipelines.params]
order = "{order}"
offset = "{offset}"
entry_bar = "30"
exit_bar = "{exit_bar}"
"#,
        plugins = s(&plugin_dir()),
        journal = s(&dir.join("journal.sqlite")),
        data = s(data),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// The run's fills (`report --fills-csv`), and each order's state.
fn run(dir: &Path, config: &Path) -> (String, Vec<(String, String)>) {
    ok(&["run", "--quiet", "--until-idle", "1", "--config", s(config)]);
    let fills = dir.join("fills.csv");
    ok(&[
        "report",
        "--journal",
        s(&dir.join("journal.sqlite")),
        "--fills-csv",
        s(&fills),
    ]);
    let db = rusqlite::Connection::open(dir.join("journal.sqlite")).unwrap();
    let mut stmt = db
        .prepare("SELECT COALESCE(order_type, 'MARKET'), state FROM orders ORDER BY rowid")
        .unwrap();
    let orders = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<Vec<_>>>()
        .unwrap();
    (std::fs::read_to_string(fills).unwrap(), orders)
}

#[test]
fn a_limit_entry_fills_where_the_data_trades_through_it_the_same_in_a_run_and_both_backtests() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(&[
        "generate",
        "--out",
        s(&data),
        "--days",
        "2",
        "--chain-days",
        "1",
        "--seed",
        "11",
    ]);
    let file = data.join("nifty_1m.csv");
    let bars = bars(&file);

    // The oracle: the 30th bar's close less 3, down to the tick; the first later bar
    // that opens below it fills at that open, one that trades below it at the limit.
    let tick = Decimal::new(5, 2);
    let limit = ((bars[29].4 - Decimal::from(3)) / tick).floor() * tick;
    let (at, price) = bars[30..]
        .iter()
        .take_while(|b| b.0[..10] == bars[29].0[..10])
        .find_map(|b| {
            if b.1 < limit {
                Some((b.0.clone(), b.1))
            } else if b.3 < limit {
                Some((b.0.clone(), limit))
            } else {
                None
            }
        })
        .expect("seed 11 trades through the limit on its first day");

    let work = dir.path().join("run");
    std::fs::create_dir_all(&work).unwrap();
    let cfg = config(&work, &file, "limit", "3", 200);
    let (fills, orders) = run(&work, &cfg);
    let lines: Vec<&str> = fills.lines().collect();
    assert_eq!(lines[0], "ts,account,instrument,side,qty,price,reason");
    let entry: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(
        (entry[0], entry[3], entry[4]),
        (at.as_str(), "buy", "50"),
        "{fills}"
    );
    assert_eq!(entry[5].parse::<Decimal>().unwrap(), price, "{fills}");
    assert_eq!(orders[0], ("LIMIT".to_owned(), "filled".to_owned()));

    // The pipeline backtest: the same fills, line by line.
    let out = dir.path().join("bt");
    ok(&[
        "backtest",
        "--config",
        s(&cfg),
        "--pipeline",
        "entries",
        "--plugin-dir",
        s(&plugin_dir()),
        "--data",
        s(&file),
        "--out",
        s(&out),
    ]);
    assert_eq!(
        std::fs::read_to_string(out.join("fills.csv")).unwrap(),
        fills
    );

    // The single-plugin backtest, by its own engine and the same venue rules: the same
    // times, sides, quantities and prices (its account has another name).
    let single = dir.path().join("single");
    ok(&[
        "backtest",
        "--plugin",
        s(&plugin("order-types")),
        "--data",
        s(&file),
        "--out",
        s(&single),
        "--qty",
        "50",
        "--slippage-bps",
        "0",
        "--param",
        "order=limit",
        "--param",
        "offset=3",
        "--param",
        "entry_bar=30",
        "--param",
        "exit_bar=200",
    ]);
    let strip = |csv: &str| {
        csv.lines()
            .map(|l| {
                l.split(',')
                    .enumerate()
                    .filter(|(i, _)| *i != 1)
                    .map(|(_, f)| f)
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect::<Vec<_>>()
    };
    let single_fills = std::fs::read_to_string(single.join("fills.csv")).unwrap();
    assert_eq!(
        strip(&single_fills),
        strip(&fills),
        "single-plugin backtest, then the run"
    );
}

#[test]
fn a_limit_the_market_never_reaches_is_never_filled_and_expires_with_its_day_or_goes_with_an_exit()
{
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(&[
        "generate",
        "--out",
        s(&data),
        "--days",
        "2",
        "--chain-days",
        "1",
        "--seed",
        "11",
    ]);
    let file = data.join("nifty_1m.csv");
    // 2,000 points below NIFTY: never traded through in two days.
    let work = dir.path().join("expires");
    std::fs::create_dir_all(&work).unwrap();
    let (fills, orders) = run(&work, &config(&work, &file, "limit", "2000", 0));
    assert_eq!(fills.lines().count(), 1, "no fill: {fills}");
    // The entry expired at the next day's first bar.
    assert_eq!(
        orders,
        vec![("LIMIT".to_owned(), "expired".to_owned())],
        "{orders:?}"
    );
    // With an exit signal while it rests, the exit cancels it and sells nothing.
    let work = dir.path().join("exit");
    std::fs::create_dir_all(&work).unwrap();
    let (fills, orders) = run(&work, &config(&work, &file, "limit", "2000", 200));
    assert_eq!(fills.lines().count(), 1, "no fill: {fills}");
    assert_eq!(
        orders,
        vec![("LIMIT".to_owned(), "cancelled".to_owned())],
        "{orders:?}"
    );
}
