//! The crash test: the orders process is killed with SIGKILL at random
//! moments, at least 20 times, while the engine keeps producing signals, and
//! restarted each time. Afterwards: no signal lost, no order placed twice,
//! every position the sum of its fills, the journal and the paper broker in
//! agreement. `CRASH_KILLS` sets the number of kills; `scripts/crash-test`
//! runs it with output.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tradehost_tests::{Collector, RedisServer, check_journal, tradehost_bin, write_config};

fn spawn(config: &std::path::Path, url: &str, args: &[&str]) -> Child {
    Command::new(tradehost_bin())
        .args(["run", "--quiet", "--config"])
        .arg(config)
        .args(args)
        .env("REDIS_URL", url)
        .env("RUST_LOG", "error")
        .env_remove("TRADING_MODE")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting tradehost")
}

#[test]
fn orders_survive_sigkill_at_random_points() {
    let kills: usize = std::env::var("CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
        .max(20);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(7, |d| d.as_nanos() as u64);
    eprintln!("crash test: {kills} kills, seed {seed} (kill points are drawn from it)");
    let mut rng = tradehost::market::synthetic::Rng::new(seed);

    let days = 4;
    let bars = days * 375;
    // Long enough for every kill cycle (about 0.75 s each) with room to spare.
    let duration_s = kills as f64 * 0.75 + 3.0;
    let speed = 60.0 * f64::from(bars) / duration_s;
    let body = format!(
        r#"
[[accounts]]
id = "long-1"
capital = 10000000
mode = "long"
sizing = {{ kind = "fixed", qty = 10 }}
risk = {{ cooldown_secs = 0 }}

[[accounts]]
id = "both-1"
capital = 20000000
mode = "both"
sizing = {{ kind = "lots", lots = 1, lot_size = 75 }}
risk = {{ cooldown_secs = 0 }}
exits = {{ trailing_pct = 0.3 }}

[[pipelines]]
id = "nifty-ma"
plugin = "ma_crossover.wasm"
symbols = ["NIFTY"]
accounts = ["long-1", "both-1"]
source = {{ kind = "synthetic", seed = 2, days = {days}, speed = {speed} }}
[pipelines.params]
fast = 5
slow = 20
"#
    );
    let server = RedisServer::start();
    let collector = Collector::start(&server.url());
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &body, 1);
    let url = server.url();
    let mut engine = spawn(&config, &url, &["--role", "engine", "--until-idle", "1"]);
    let orders_args = ["--role", "orders", "--until-idle", "3"];
    let started = || {
        collector
            .of("trading:events", "event")
            .iter()
            .filter(|e| e["event"] == "orders_started")
            .count()
    };
    // Most kills land after the process has announced itself (mid-order, mid-publish); every
    // fifth lands at a random moment from its spawn, which on a loaded machine is often its
    // start-up (reconcile, price warm-up, resending). Counting only the first kind as starts
    // keeps "it really restarted" true however slowly a loaded machine starts a process.
    let mut announced = 0;
    for k in 0..kills {
        let before = started();
        let mut orders = spawn(&config, &url, &orders_args);
        if k % 5 == 2 {
            std::thread::sleep(Duration::from_millis(rng.next_u64() % 500));
        } else {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while started() == before {
                assert!(
                    std::time::Instant::now() < deadline,
                    "orders process {k} did not start within 30 s"
                );
                assert!(
                    orders.try_wait().unwrap().is_none(),
                    "orders process {k} exited before it started"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            announced += 1;
            std::thread::sleep(Duration::from_millis(rng.next_u64() % 600));
        }
        orders.kill().unwrap(); // SIGKILL: mid-transaction, mid-publish, wherever it is
        orders.wait().unwrap();
        if k % 5 == 4 {
            eprintln!("  {} kills done", k + 1);
        }
    }
    assert!(
        engine.wait().unwrap().success(),
        "the engine finished its run"
    );
    let last = spawn(&config, &url, &orders_args).wait().unwrap();
    assert!(
        last.success(),
        "the last orders process drained the log and exited"
    );

    let params = vec![
        ("fast".to_owned(), "5".to_owned()),
        ("slow".to_owned(), "20".to_owned()),
    ];
    let expected = tradehost_tests::native_ma_signals(2, days, &params) as i64;
    let mut con = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    // Counted as added, not as still there: the orders role trims acknowledged entries.
    let info: std::collections::HashMap<String, redis::Value> = redis::cmd("XINFO")
        .arg("STREAM")
        .arg("trading:signals:log")
        .query(&mut con)
        .unwrap();
    let added = match info.get("entries-added") {
        Some(redis::Value::Int(n)) => *n,
        other => panic!("XINFO STREAM without entries-added: {other:?}"),
    };
    assert_eq!(added, expected, "every signal reached the log once");
    let pending: redis::Value = redis::cmd("XPENDING")
        .arg("trading:signals:log")
        .arg("orders")
        .query(&mut con)
        .unwrap();
    assert!(
        matches!(&pending, redis::Value::Array(v) if v.first() == Some(&redis::Value::Int(0))),
        "unacknowledged entries: {pending:?}"
    );

    let db = rusqlite::Connection::open(dir.path().join("journal.sqlite")).unwrap();
    let decisions: i64 = db
        .query_row("SELECT COUNT(*) FROM decisions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        decisions,
        expected * 2,
        "a decision for every signal and account: no signal lost"
    );
    check_journal(&db);
    let mut accepted: HashMap<String, usize> = HashMap::new();
    for o in collector
        .of("trading:orders", "order")
        .iter()
        .filter(|o| o["state"] == "accepted")
    {
        *accepted
            .entry(o["client_order_id"].as_str().unwrap_or("").to_owned())
            .or_default() += 1;
    }
    assert!(
        accepted.values().all(|n| *n == 1),
        "orders accepted twice: {:?}",
        accepted.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
    let starts = collector
        .of("trading:events", "event")
        .iter()
        .filter(|e| e["event"] == "orders_started")
        .count();
    assert!(
        starts > announced,
        "the orders role really restarted ({starts} starts for {kills} kills, {announced} seen before their kill, and the last)"
    );
    let orders: i64 = db
        .query_row("SELECT COUNT(*) FROM orders", [], |r| r.get(0))
        .unwrap();
    eprintln!(
        "crash test: {expected} signals, {decisions} decisions, {orders} orders, {starts} orders processes, all consistent"
    );
}
