//! Portfolio backtests: several pipelines in one backtest, sharing an account
//! (its capital, position limit and breaker) through the one order core, merged
//! in event time. The same data gives the same fills on every run, the same as
//! a paper `run` of those pipelines; without a rule that binds, the portfolio
//! is its pipelines side by side; with one, the rule acts across them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tradehost_tests::{arg as s, plugin_dir, tradehost_fails as fails, tradehost_ok as ok};

/// Two SMA-crossover pipelines (NIFTY, BANKNIFTY) trading for one account.
fn config(dir: &Path, max_open_positions: u32) -> PathBuf {
    let text = format!(
        r#"[host]
plugin_dir = {plugins:?}
journal = {journal:?}

[[accounts]]
id = "shared"
broker = "paper"
capital = 5000000
mode = "both"
sizing = {{ kind = "fixed", qty = 10 }}
risk = {{ max_open_positions = {max_open_positions}, cooldown_secs = 0 }}

[[accounts]]
id = "nifty-only"
broker = "paper"
capital = 1000000
mode = "long"
sizing = {{ kind = "fixed", qty = 5 }}

{pipelines}
[[pipelines]]
id = "live"
plugin = "ma_crossover.wasm"
symbols = ["NIFTY"]
timeframe = "1m"
accounts = ["shared"]
source = {{ kind = "redis" }}
"#,
        plugins = s(&plugin_dir()),
        journal = s(&dir.join("run-journal.sqlite")),
        pipelines = two_pipelines((0.0, 0.0), r#""shared", "nifty-only""#),
    );
    let path = dir.join(format!("portfolio-{max_open_positions}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn summary(out: &Path) -> serde_json::Value {
    serde_json::from_str(&read(&out.join("summary.json"))).unwrap()
}

/// The fills of `fills.csv` as (ts, account, instrument, signed qty) rows.
fn fills(csv: &str) -> Vec<(String, String, String, i64)> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no {name} in {header:?}"))
    };
    let (ts, account, instrument, side, qty) = (
        col("ts"),
        col("account"),
        col("instrument"),
        col("side"),
        col("qty"),
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let q: i64 = f[qty].parse().unwrap();
            (
                f[ts].to_owned(),
                f[account].to_owned(),
                f[instrument].to_owned(),
                if f[side] == "buy" { q } else { -q },
            )
        })
        .collect()
}

#[test]
fn a_portfolio_decides_the_same_every_run_and_its_position_limit_acts_across_pipelines() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(&["generate", "--out", s(&data), "--days", "4", "--seed", "9"]);
    let config = config(dir.path(), 1);
    let (nifty, bank) = (data.join("nifty_1m.csv"), data.join("banknifty_1m.csv"));
    let nifty_arg = format!("nifty={}", s(&nifty));
    let bank_arg = format!("bank={}", s(&bank));

    let mut runs = Vec::new();
    for n in 0..3 {
        let out = dir.path().join(format!("bt{n}"));
        let printed = ok(&[
            "backtest",
            "--config",
            s(&config),
            "--pipeline",
            "nifty",
            "--pipeline",
            "bank",
            "--data",
            &nifty_arg,
            "--data",
            &bank_arg,
            "--out",
            s(&out),
        ]);
        assert!(
            printed.contains("nifty,bank on ") && printed.contains(": shared: "),
            "{printed}"
        );
        runs.push(out);
    }
    let first = read(&runs[0].join("fills.csv"));
    for out in &runs[1..] {
        assert_eq!(
            read(&out.join("fills.csv")),
            first,
            "the same fills on every run"
        );
        assert_eq!(
            read(&out.join("signals.csv")),
            read(&runs[0].join("signals.csv"))
        );
    }
    let rows = fills(&first);
    let traded: std::collections::BTreeSet<&str> = rows
        .iter()
        .filter(|r| r.1 == "shared")
        .map(|r| r.2.as_str())
        .collect();
    assert_eq!(
        traded.len(),
        2,
        "both pipelines trade for the shared account: {traded:?}"
    );

    // The limit of one open position holds across the pipelines: after each moment's fills.
    let mut net: BTreeMap<&str, i64> = BTreeMap::new();
    for (i, r) in rows.iter().enumerate().filter(|(_, r)| r.1 == "shared") {
        *net.entry(r.2.as_str()).or_default() += r.3;
        let moment_over = rows[i + 1..]
            .iter()
            .find(|n| n.1 == "shared")
            .is_none_or(|n| n.0 != r.0);
        if moment_over {
            let open: Vec<_> = net.iter().filter(|(_, q)| **q != 0).collect();
            assert!(
                open.len() <= 1,
                "two positions open after {}: {open:?}",
                r.0
            );
        }
    }
    let s0 = summary(&runs[0]);
    let refused = &s0["accounts"]["shared"]["refused"];
    assert!(
        refused["max_open_positions"].as_u64().unwrap_or(0) > 0,
        "the limit refused entries of one pipeline while the other's position was open: {refused}"
    );
    assert_eq!(s0["pipelines"], serde_json::json!(["nifty", "bank"]));
    assert_eq!(
        s0["accounts"]["shared"]["summary"]["strategy"]
            .as_str()
            .map(|p| p.contains('+')),
        Some(true),
        "{}",
        s0["accounts"]["shared"]["summary"]
    );
    // The NIFTY-only account sees NIFTY's signals alone.
    assert!(
        rows.iter()
            .filter(|r| r.1 == "nifty-only")
            .all(|r| r.2 == "NIFTY")
    );

    // A paper `run` of the same pipelines on the same data fills the same, line by line.
    let run_config = dir.path().join("run.toml");
    let text = read(&config)
        .replace("source = { kind = \"synthetic\", seed = 2, days = 3, speed = 0 }", &format!("source = {{ kind = \"replay\", files = [{:?}], speed = 0 }}", s(&nifty)))
        .replace("source = { kind = \"synthetic\", seed = 13, days = 3, speed = 0, start_price = 48200 }", &format!("source = {{ kind = \"replay\", files = [{:?}], speed = 0 }}", s(&bank)));
    let text = text[..text.rfind("[[pipelines]]").unwrap()].to_owned();
    std::fs::write(&run_config, text).unwrap();
    ok(&[
        "run",
        "--quiet",
        "--until-idle",
        "1",
        "--config",
        s(&run_config),
    ]);
    let run_fills = dir.path().join("run-fills.csv");
    ok(&[
        "report",
        "--journal",
        s(&dir.path().join("run-journal.sqlite")),
        "--fills-csv",
        s(&run_fills),
    ]);
    let run = read(&run_fills);
    for (i, (a, b)) in run.lines().zip(first.lines()).enumerate() {
        assert_eq!(a, b, "line {} differs (run, then backtest)", i + 1);
    }
    assert_eq!(run.lines().count(), first.lines().count());

    // Each pipeline's own configured source when no data is given (`a,b` names both).
    let own = [dir.path().join("own0"), dir.path().join("own1")];
    for out in &own {
        ok(&[
            "backtest",
            "--config",
            s(&config),
            "--pipeline",
            "nifty,bank",
            "--out",
            s(out),
        ]);
    }
    let own_fills = read(&own[0].join("fills.csv"));
    assert!(own_fills.lines().count() > 2, "{own_fills}");
    assert_eq!(read(&own[1].join("fills.csv")), own_fills);

    // Bad arguments are named, and nothing runs.
    let bad = dir.path().join("bad");
    let e = fails(&[
        "backtest",
        "--config",
        s(&config),
        "--pipeline",
        "nifty",
        "--pipeline",
        "nifty",
        "--out",
        s(&bad),
    ]);
    assert!(e.contains("--pipeline nifty: given twice"), "{e}");
    let e = fails(&[
        "backtest",
        "--config",
        s(&config),
        "--pipeline",
        "nifty,bank",
        "--data",
        &format!("nope={}", s(&nifty)),
        "--out",
        s(&bad),
    ]);
    assert!(
        e.contains("\"nope\" is not one of the pipelines backtested (nifty, bank)"),
        "{e}"
    );
    let e = fails(&[
        "backtest",
        "--config",
        s(&config),
        "--pipeline",
        "nifty,live",
        "--out",
        s(&bad),
    ]);
    assert!(
        e.contains(
            "pipeline \"live\" reads a live feed; give it data to replay: --data live=<file>"
        ),
        "{e}"
    );
    let e = fails(&[
        "backtest",
        "--config",
        s(&config),
        "--pipeline",
        "nifty,bank",
        "--data",
        s(&nifty),
        "--data",
        s(&bank),
        "--out",
        s(&bad),
    ]);
    assert!(
        e.contains("name the pipeline of each (PIPELINE=FILE)"),
        "{e}"
    );
    assert!(!bad.join("fills.csv").exists());
}

#[test]
fn without_a_rule_that_binds_a_portfolio_is_its_pipelines_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(&["generate", "--out", s(&data), "--days", "3", "--seed", "4"]);
    let config = config(dir.path(), 10);
    let (nifty, bank) = (
        format!("nifty={}", s(&data.join("nifty_1m.csv"))),
        format!("bank={}", s(&data.join("banknifty_1m.csv"))),
    );
    let both = dir.path().join("both");
    ok(&[
        "backtest",
        "--config",
        s(&config),
        "--pipeline",
        "nifty",
        "--pipeline",
        "bank",
        "--data",
        &nifty,
        "--data",
        &bank,
        "--out",
        s(&both),
    ]);
    let mut alone = Vec::new();
    for (id, data) in [("nifty", &nifty), ("bank", &bank)] {
        let out = dir.path().join(id);
        ok(&[
            "backtest",
            "--config",
            s(&config),
            "--pipeline",
            id,
            "--data",
            data,
            "--out",
            s(&out),
        ]);
        alone.push(out);
    }
    // Every fill of each pipeline alone, and nothing else (in time order, the file's own).
    let portfolio = read(&both.join("fills.csv"));
    let mut want: Vec<String> = alone
        .iter()
        .flat_map(|o| {
            read(&o.join("fills.csv"))
                .lines()
                .skip(1)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    let mut got: Vec<String> = portfolio.lines().skip(1).map(str::to_owned).collect();
    assert!(got.len() > 4, "{portfolio}");
    want.sort();
    got.sort();
    assert_eq!(got, want);
    let realized = |v: &serde_json::Value| {
        v["accounts"]["shared"]["realized"]
            .as_str()
            .unwrap()
            .parse::<rust_decimal::Decimal>()
            .unwrap()
    };
    let (sb, sn, sk) = (summary(&both), summary(&alone[0]), summary(&alone[1]));
    assert_eq!(
        realized(&sb),
        realized(&sn) + realized(&sk),
        "the shared account's P&L is the sum of its pipelines'"
    );
    assert_eq!(
        sb["signals"].as_u64(),
        Some(sn["signals"].as_u64().unwrap() + sk["signals"].as_u64().unwrap())
    );
}

/// The NIFTY and BANKNIFTY SMA-crossover pipelines, NIFTY's trading for `nifty_accounts`,
/// BANKNIFTY's for `shared`; `speeds` pace their synthetic markets (0: full speed).
fn two_pipelines(speeds: (f64, f64), nifty_accounts: &str) -> String {
    let (nifty, bank) = speeds;
    format!(
        r#"
[[pipelines]]
id = "nifty"
plugin = "ma_crossover.wasm"
symbols = ["NIFTY"]
accounts = [{nifty_accounts}]
source = {{ kind = "synthetic", seed = 2, days = 3, speed = {nifty} }}
[pipelines.params]
fast = 5
slow = 20

[[pipelines]]
id = "bank"
plugin = "ma_crossover.wasm"
symbols = ["BANKNIFTY"]
accounts = ["shared"]
source = {{ kind = "synthetic", seed = 13, days = 3, speed = {bank}, start_price = 48200 }}
[pipelines.params]
fast = 8
slow = 30
"#
    )
}

/// Two pipelines on one account with a position limit and a trailing stop.
fn shared_account(speeds: (f64, f64)) -> String {
    let accounts = r#"
[[accounts]]
id = "shared"
capital = 5000000
mode = "both"
sizing = { kind = "fixed", qty = 10 }
risk = { max_open_positions = 1, cooldown_secs = 0 }
exits = { trailing_pct = 0.3 }
"#;
    format!("{accounts}{}", two_pipelines(speeds, r#""shared""#))
}

#[test]
fn a_portfolio_whose_orders_process_is_killed_at_random_decides_as_an_undisturbed_run() {
    use std::process::{Command, Stdio};
    use tradehost_tests::{RedisServer, write_config};

    // Undisturbed: one process, the in-process bus, as fast as it goes.
    let calm = tempfile::tempdir().unwrap();
    let config = write_config(calm.path(), &shared_account((0.0, 0.0)), 1);
    ok(&[
        "run",
        "--quiet",
        "--until-idle",
        "1",
        "--config",
        s(&config),
    ]);
    let want = calm.path().join("fills.csv");
    ok(&[
        "report",
        "--journal",
        s(&calm.path().join("journal.sqlite")),
        "--fills-csv",
        s(&want),
    ]);
    let want = read(&want);
    assert!(want.lines().count() > 10, "{want}");

    // Over Redis, the orders process SIGKILLed 10 times while the engine plays NIFTY's
    // three days in ~4 s and BANKNIFTY's in ~8 s: NIFTY's prices wait for BANKNIFTY's
    // to catch up, so they are applied after later entries of the stream.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(7, |d| d.as_nanos() as u64);
    eprintln!("portfolio kill test: seed {seed}");
    let mut rng = tradehost::market::synthetic::Rng::new(seed);
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &shared_account((60.0 * 3.0 * 375.0 / 4.0, 60.0 * 3.0 * 375.0 / 8.0)),
        1,
    );
    let spawn = |args: &[&str]| {
        Command::new(tradehost_tests::tradehost_bin())
            .args(["run", "--quiet", "--config", s(&config)])
            .args(args)
            .env("REDIS_URL", server.url())
            .env("RUST_LOG", "error")
            .env_remove("TRADING_MODE")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut engine = spawn(&["--role", "engine", "--until-idle", "1"]);
    for _ in 0..10 {
        let mut orders = spawn(&["--role", "orders", "--until-idle", "3"]);
        std::thread::sleep(std::time::Duration::from_millis(200 + rng.next_u64() % 600));
        orders.kill().unwrap();
        orders.wait().unwrap();
    }
    assert!(engine.wait().unwrap().success());
    assert!(
        spawn(&["--role", "orders", "--until-idle", "3"])
            .wait()
            .unwrap()
            .success(),
        "the last orders process drained and exited"
    );
    let got = dir.path().join("fills.csv");
    ok(&[
        "report",
        "--journal",
        s(&dir.path().join("journal.sqlite")),
        "--fills-csv",
        s(&got),
    ]);
    let got = read(&got);
    for (i, (a, b)) in got.lines().zip(want.lines()).enumerate() {
        assert_eq!(a, b, "line {} differs (killed, then undisturbed)", i + 1);
    }
    assert_eq!(got.lines().count(), want.lines().count());
}
