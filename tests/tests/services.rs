//! Every long-running process is a service: it stays up with nothing to do,
//! stops cleanly on SIGTERM or a `shutdown` command, survives Redis
//! connection resets and a Redis crash and restart, and after a SIGKILL of
//! the orders process makes exactly the fills an undisturbed run makes.
//! Real processes, a real `redis-server`, real SQLite.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tradehost_tests::{Collector, RedisServer, check_journal, tradehost_bin, write_config};

fn body(days: u32, speed: f64) -> String {
    format!(
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
product = "mis"
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
    )
}

fn spawn(config: &Path, url: &str, args: &[&str], stderr: Option<&Path>) -> Child {
    let mut cmd = Command::new(tradehost_bin());
    cmd.args(["run", "--quiet", "--config"])
        .arg(config)
        .args(args)
        .env("REDIS_URL", url)
        .env("RUST_LOG", "error")
        .env_remove("TRADING_MODE")
        .stdout(Stdio::null());
    match stderr {
        Some(path) => cmd.stderr(std::fs::File::create(path).expect("stderr file")),
        None => cmd.stderr(Stdio::null()),
    };
    cmd.spawn().expect("starting tradehost")
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn sigterm(child: &Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
}

fn count(db: &Path, sql: &str) -> i64 {
    let db = rusqlite::Connection::open(db).expect("journal");
    db.query_row(sql, [], |r| r.get(0)).unwrap_or(0)
}

fn expected_signals(days: u32) -> i64 {
    tradehost_tests::native_ma_signals(
        2,
        days,
        &[
            ("fast".to_owned(), "5".to_owned()),
            ("slow".to_owned(), "20".to_owned()),
        ],
    ) as i64
}

/// Every signal id in the log, in order.
fn logged_signal_ids(url: &str) -> Vec<String> {
    let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg("trading:signals:log")
        .arg("-")
        .arg("+")
        .query(&mut con)
        .unwrap();
    entries
        .ids
        .iter()
        .map(|e| match e.map.get("signal") {
            Some(redis::Value::BulkString(b)) => serde_json::from_slice::<serde_json::Value>(b)
                .ok()
                .and_then(|v| v["id"].as_str().map(str::to_owned))
                .unwrap_or_default(),
            _ => String::new(),
        })
        .collect()
}

/// One order manager per consumer name: a second orders process with its own journal but the
/// same `--consumer` is refused naming the first (its journal and pid), while a restart of the
/// first on its own journal after a SIGKILL takes the name over at once.
#[test]
fn a_second_orders_process_under_the_same_consumer_name_is_refused() {
    let server = RedisServer::start();
    let collector = Collector::start(&server.url());
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &body(1, 0.0), 1);
    let url = server.url();
    let (first_journal, other_journal) = (dir.path().join("a.sqlite"), dir.path().join("b.sqlite"));
    let journal = |p: &Path| p.display().to_string();
    let first_args = ["--role", "orders", "--journal", &journal(&first_journal)];
    let mut first = spawn(&config, &url, &first_args, None);
    let started = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            let up = collector
                .of("trading:events", "event")
                .iter()
                .filter(|v| v["event"] == "orders_started")
                .count();
            if up >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    };
    assert!(started(1), "the first orders process started");

    let err = dir.path().join("second.err");
    let mut second = spawn(
        &config,
        &url,
        &["--role", "orders", "--journal", &journal(&other_journal)],
        Some(&err),
    );
    let status = wait_exit(&mut second, Duration::from_secs(15)).expect("the second run exits");
    assert!(!status.success(), "the second run is refused");
    let stderr = std::fs::read_to_string(&err).unwrap();
    assert!(
        stderr.contains("consumer \"orders-1\" of the signal log's group")
            && stderr.contains(&format!(
                "journal {} pid {}",
                journal(&first_journal),
                first.id()
            )),
        "{stderr}"
    );
    assert!(first.try_wait().unwrap().is_none(), "the first trades on");

    // SIGKILL: nothing releases the lease; a restart on the same journal takes it over.
    first.kill().unwrap();
    first.wait().unwrap();
    let mut again = spawn(&config, &url, &first_args, None);
    assert!(
        started(2),
        "the restart on the same journal is not kept waiting"
    );
    assert!(again.try_wait().unwrap().is_none());
    sigterm(&again);
    assert!(
        wait_exit(&mut again, Duration::from_secs(15)).is_some_and(|s| s.success()),
        "it stops cleanly"
    );
}

#[test]
fn an_idle_orders_process_stays_up_and_stops_cleanly_on_sigterm_or_a_shutdown_command() {
    let server = RedisServer::start();
    let collector = Collector::start(&server.url());
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &body(1, 0.0), 1);
    let url = server.url();

    let mut orders = spawn(&config, &url, &["--role", "orders"], None);
    assert!(
        collector
            .wait_for(Duration::from_secs(15), |_, v| v["event"]
                == "orders_started")
            .is_some(),
        "the orders role started"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        orders.try_wait().unwrap().is_none(),
        "an orders process with nothing to do stays up"
    );
    let heartbeats = collector
        .of("trading:events", "heartbeat")
        .iter()
        .filter(|h| h["role"] == "orders")
        .count();
    assert!(
        heartbeats >= 2,
        "it keeps beating while idle ({heartbeats} heartbeats)"
    );
    let asked = Instant::now();
    sigterm(&orders);
    let status =
        wait_exit(&mut orders, Duration::from_secs(5)).expect("stopped within 5 s of SIGTERM");
    assert!(status.success(), "SIGTERM is a clean stop: {status}");
    eprintln!(
        "orders stopped {} ms after SIGTERM",
        asked.elapsed().as_millis()
    );

    // The engine role too stays up once its source has run out, until told to stop.
    let mut engine = spawn(&config, &url, &["--role", "engine"], None);
    let mut orders = spawn(&config, &url, &["--role", "orders"], None);
    assert!(
        collector
            .wait_for(Duration::from_secs(15), |_, v| v["event"]
                == "pipeline_finished")
            .is_some(),
        "the synthetic day ran out"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        engine.try_wait().unwrap().is_none(),
        "the engine stays up after its sources end (config edits and commands may start more)"
    );
    let mut con = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let _: i64 = redis::cmd("PUBLISH")
        .arg("trading:commands")
        .arg(r#"{"v":1,"type":"command","id":"bye","cmd":"shutdown"}"#)
        .query(&mut con)
        .unwrap();
    for (role, child) in [("engine", &mut engine), ("orders", &mut orders)] {
        let status = wait_exit(child, Duration::from_secs(5))
            .unwrap_or_else(|| panic!("{role} did not stop within 5 s of the shutdown command"));
        assert!(status.success(), "{role}: {status}");
        let ack = collector.wait_for(Duration::from_secs(2), |_, v| {
            v["type"] == "command_ack" && v["command_id"] == "bye" && v["role"] == role
        });
        assert_eq!(
            ack.map(|a| a["ok"].clone()),
            Some(serde_json::Value::Bool(true)),
            "{role} acknowledged the shutdown"
        );
    }
    let expected = expected_signals(1);
    assert_eq!(
        count(
            &dir.path().join("journal.sqlite"),
            "SELECT COUNT(*) FROM decisions"
        ),
        expected * 2,
        "every signal was decided before the stop"
    );
}

#[test]
fn redis_connection_resets_and_a_redis_crash_lose_and_double_nothing() {
    let mut server = RedisServer::start_durable();
    let dir = tempfile::tempdir().unwrap();
    let days = 4;
    // About 12 s of market: long enough for the faults to land mid-run.
    let speed = 60.0 * f64::from(days * 375) / 12.0;
    let config = write_config(dir.path(), &body(days, speed), 1);
    let url = server.url();
    let (engine_err, orders_err) = (dir.path().join("engine.err"), dir.path().join("orders.err"));
    let mut engine = spawn(
        &config,
        &url,
        &["--role", "engine", "--until-idle", "1"],
        Some(&engine_err),
    );
    let mut orders = spawn(&config, &url, &["--role", "orders"], Some(&orders_err));
    let journal = dir.path().join("journal.sqlite");

    std::thread::sleep(Duration::from_secs(3));
    // Every connection reset by the server while Redis itself stays up.
    for kind in ["normal", "pubsub"] {
        let mut con = redis::Client::open(url.as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        let killed: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg(kind)
            .arg("SKIPME")
            .arg("yes")
            .query(&mut con)
            .unwrap();
        assert!(killed > 0, "no {kind} connection to reset");
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        engine.try_wait().unwrap().is_none() && orders.try_wait().unwrap().is_none(),
        "both processes survive the connection resets"
    );
    let decided_before_crash = count(&journal, "SELECT COUNT(*) FROM decisions");
    // Redis killed, and back 3 s later with its append-only file.
    server.crash();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        engine.try_wait().unwrap().is_none() && orders.try_wait().unwrap().is_none(),
        "both processes wait out the outage"
    );
    server.restart();

    let status = wait_exit(&mut engine, Duration::from_secs(90))
        .expect("the engine finished its run after the outage");
    assert!(
        status.success(),
        "engine: {status}\n{}",
        std::fs::read_to_string(&engine_err).unwrap_or_default()
    );
    let expected = expected_signals(days);
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&journal, "SELECT COUNT(*) FROM decisions") < expected * 2
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        orders.try_wait().unwrap().is_none(),
        "the orders process is still up"
    );
    sigterm(&orders);
    assert!(
        wait_exit(&mut orders, Duration::from_secs(5)).is_some_and(|s| s.success()),
        "orders stopped cleanly"
    );

    let ids = logged_signal_ids(&url);
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a signal logged twice");
    assert_eq!(
        ids.len() as i64,
        expected,
        "every signal reached the log once"
    );
    let decided = count(&journal, "SELECT COUNT(*) FROM decisions");
    assert!(
        decided_before_crash < decided,
        "decisions went on after the outage ({decided_before_crash} before, {decided} after)"
    );
    assert_eq!(
        decided,
        expected * 2,
        "a decision for every signal and account: none lost"
    );
    check_journal(&rusqlite::Connection::open(&journal).unwrap());
    let said = std::fs::read_to_string(&orders_err).unwrap_or_default();
    assert!(
        said.contains("Redis connection lost") && said.contains("Redis is back after"),
        "the outage is told:\n{said}"
    );
}

/// A fill as the journal keeps it: `(client order id, instrument, side, qty, price, ts)`.
type FillRow = (String, String, String, String, String, i64);

/// Every fill, and each account's realised P&L.
fn fills_and_pnl(journal: &Path) -> (Vec<FillRow>, Vec<(String, String, String)>) {
    let db = rusqlite::Connection::open(journal).unwrap();
    let mut fills: Vec<_> = db
        .prepare("SELECT client_order_id, instrument, side, qty, price, ts FROM fills ORDER BY client_order_id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    fills.sort();
    let pnl = db
        .prepare("SELECT account, instrument, realized FROM positions ORDER BY account, instrument")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    (fills, pnl)
}

fn one_run(days: u32, speed: f64, kills: usize, seed: u64) -> (PathBuf, tempfile::TempDir) {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &body(days, speed), 1);
    let url = server.url();
    let mut engine = spawn(
        &config,
        &url,
        &["--role", "engine", "--until-idle", "1"],
        None,
    );
    let mut rng = tradehost::market::synthetic::Rng::new(seed);
    let orders_args = ["--role", "orders", "--until-idle", "2"];
    for _ in 0..kills {
        let mut orders = spawn(&config, &url, &orders_args, None);
        std::thread::sleep(Duration::from_millis(200 + rng.next_u64() % 600));
        orders.kill().unwrap(); // SIGKILL, wherever it is
        orders.wait().unwrap();
        // Down for a while: prices and signals go by that it must not miss.
        std::thread::sleep(Duration::from_millis(rng.next_u64() % 400));
    }
    assert!(
        wait_exit(&mut engine, Duration::from_secs(120)).is_some_and(|s| s.success()),
        "the engine finished"
    );
    let last = spawn(&config, &url, &orders_args, None).wait().unwrap();
    assert!(
        last.success(),
        "the last orders process drained everything and exited"
    );
    drop(server);
    (dir.path().join("journal.sqlite"), dir)
}

#[test]
fn sigkill_of_the_orders_process_ten_times_changes_no_fill_and_no_pnl() {
    let days = 3;
    let (calm, _calm_dir) = one_run(days, 0.0, 0, 1);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(7, |d| d.as_nanos() as u64);
    eprintln!("kill points drawn from seed {seed}");
    // About 9 s of market for ten kill cycles.
    let speed = 60.0 * f64::from(days * 375) / 9.0;
    let (killed, _killed_dir) = one_run(days, speed, 10, seed);
    let (calm_fills, calm_pnl) = fills_and_pnl(&calm);
    let (killed_fills, killed_pnl) = fills_and_pnl(&killed);
    assert!(
        calm_fills.len() > 20,
        "the undisturbed run trades ({} fills)",
        calm_fills.len()
    );
    let missing: Vec<_> = calm_fills
        .iter()
        .filter(|f| !killed_fills.contains(f))
        .take(5)
        .collect();
    let extra: Vec<_> = killed_fills
        .iter()
        .filter(|f| !calm_fills.contains(f))
        .take(5)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "fills differ after the kills: undisturbed only {missing:?}; killed only {extra:?}"
    );
    assert_eq!(calm_fills.len(), killed_fills.len());
    assert_eq!(
        calm_pnl, killed_pnl,
        "the same realised P&L per account and instrument"
    );
    check_journal(&rusqlite::Connection::open(&killed).unwrap());
}

/// A small tmpfs mounted for a test, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    /// `None` where this user may not mount (not root): the test says so and skips.
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(dir).ok()?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .ok()?;
        status.success().then(|| Self(dir.to_owned()))
    }

    /// Write a file until the disk refuses more; its path.
    fn fill(&self) -> PathBuf {
        use std::io::Write as _;
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).expect("filler");
        let chunk = vec![7u8; 16 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The journal on a filesystem that fills up under a running service: the write is an alert
/// naming the journal and is retried; meanwhile `kill` is carried out at once (signals decided
/// after it are refused), `flatten` is refused naming the journal, and once space is made the
/// kill is recorded and everything waiting is decided, nothing lost.
#[test]
fn kill_is_carried_out_while_the_journal_sits_on_a_full_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(&dir.path().join("disk"), "6m") else {
        eprintln!("skipped: mounting a small tmpfs needs root (CI has it)");
        return;
    };
    let server = RedisServer::start();
    let collector = Collector::start(&server.url());
    let url = server.url();
    // Two days at a bar every 100 ms: signals keep coming for over a minute.
    let config = write_config(dir.path(), &body(2, 600.0), 1);
    let journal = disk.0.join("journal.sqlite");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!(
            "{:?}",
            dir.path().join("journal.sqlite").display().to_string()
        ),
        &format!("{:?}", journal.display().to_string()),
    );
    std::fs::write(&config, text).unwrap();
    // Killed if the test fails half-way (its disk would otherwise keep it waiting for space).
    struct Reaped(Child);
    impl Drop for Reaped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut run = Reaped(spawn(&config, &url, &[], None));
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&journal, "SELECT COUNT(*) FROM decisions") < 2 {
        assert!(Instant::now() < deadline, "no decision in a minute");
        assert!(run.0.try_wait().unwrap().is_none(), "the run ended early");
        std::thread::sleep(Duration::from_millis(100));
    }
    let filler = disk.fill();
    let full = collector
        .wait_for(Duration::from_secs(30), |_, v| v["event"] == "journal_full")
        .expect("a journal_full alert once the disk is full");
    assert_eq!(
        (full["journal"].as_str(), full["alert"].as_bool()),
        (Some(journal.display().to_string().as_str()), Some(true)),
        "{full}"
    );
    let decided_while_full = count(&journal, "SELECT COUNT(*) FROM decisions");

    let mut con = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let mut publish = |payload: &str| {
        let _: i64 = redis::cmd("PUBLISH")
            .arg("trading:commands")
            .arg(payload)
            .query(&mut con)
            .unwrap();
    };
    let ack = |id: &str| {
        collector
            .wait_for(Duration::from_secs(5), |_, v| {
                v["type"] == "command_ack" && v["command_id"] == id && v["role"] == "orders"
            })
            .unwrap_or_else(|| panic!("no answer to {id} within 5 s while the journal is full"))
    };
    publish(r#"{"v":1,"type":"command","id":"k1","cmd":"kill"}"#);
    let kill = ack("k1");
    assert_eq!(kill["ok"], true, "{kill}");
    assert!(
        kill["detail"]
            .as_str()
            .is_some_and(|d| d.contains("held in memory") && d.contains("journal.sqlite")),
        "{kill}"
    );
    publish(r#"{"v":1,"type":"command","id":"f1","cmd":"flatten","account":"both-1"}"#);
    let flatten = ack("f1");
    assert_eq!(flatten["ok"], false, "{flatten}");
    assert!(
        flatten["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&journal.display().to_string())),
        "refused naming the journal: {flatten}"
    );
    assert!(run.0.try_wait().unwrap().is_none(), "alive on a full disk");
    assert_eq!(
        count(&journal, "SELECT COUNT(*) FROM decisions"),
        decided_while_full,
        "nothing is written while the disk is full"
    );

    // Space is made: the kill is recorded, and what waited is decided under it.
    std::fs::remove_file(&filler).unwrap();
    let refused = collector
        .wait_for(Duration::from_secs(60), |_, v| {
            v["event"] == "order_refused" && v["rule"] == "kill_switch"
        })
        .expect("signals after the kill are refused by it");
    assert_eq!(refused["rule"], "kill_switch", "{refused}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(
        &journal,
        "SELECT COUNT(*) FROM settings WHERE key = 'kill' AND value = 'on'",
    ) != 1
    {
        assert!(Instant::now() < deadline, "the kill was never recorded");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        count(
            &journal,
            "SELECT COUNT(*) FROM orders o JOIN decisions d ON o.signal_id = d.signal_id AND o.account = d.account WHERE d.outcome LIKE 'refused [kill_switch]%'"
        ),
        0,
        "no order for a signal refused by the kill"
    );
    sigterm(&run.0);
    let status = wait_exit(&mut run.0, Duration::from_secs(10)).expect("stopped on SIGTERM");
    assert!(status.success(), "{status}");
    check_journal(&rusqlite::Connection::open(&journal).unwrap());
}
