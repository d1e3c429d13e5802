//! A live run killed (SIGKILL) with orders in every state at an OpenAlgo
//! server: accepted and working, one placed whose answer never came
//! (`submitted`), and more waiting their turn. The restart places nothing
//! twice: the working ones are polled, the unanswered one is found in the
//! book (never the older order of the same shape someone placed by hand, nor
//! one already matched), the rest are placed once, each still with its
//! protection limit; and the end state is the broker's.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use tradehost_tests::brokers::{Fault, Flavor, MockOrder, MockServer, Script, Step};
use tradehost_tests::{RedisServer, tradehost_bin};

const KEY: &str = "openalgo-key-restart";

fn journal_count(path: &std::path::Path, sql: &str) -> i64 {
    rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).and_then(|db| db.query_row(sql, [], |r| r.get(0))).unwrap_or(0)
}

#[test]
fn a_live_run_killed_with_orders_in_flight_places_nothing_twice() {
    let redis = RedisServer::start();
    let broker = MockServer::start(Flavor::OpenAlgo, "", KEY);
    {
        let mut s = broker.state();
        // Orders stay working until the test says otherwise; the third placement is taken but answered too late.
        s.default_script = Some(Script { steps: vec![Step::Open; 100_000], ..Script::default() });
        s.faults.extend([Fault::SlowAccept(Duration::ZERO), Fault::SlowAccept(Duration::ZERO), Fault::SlowAccept(Duration::from_secs(30))]);
        // Bought by hand an hour earlier, the same shape as ours.
        s.orders.push(MockOrder {
            id: "manual-1".into(),
            symbol: "RELIANCE".into(),
            side: "BUY".into(),
            qty: Decimal::from(10),
            status: "COMPLETE".into(),
            average_price: Some(Decimal::from(990)),
            filled: Decimal::from(10),
            placed_at: tradehost_tests::brokers::ist_stamp(i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()).unwrap() - 3_600_000),
            fields: [("exchange".to_owned(), "NSE".to_owned()), ("product".to_owned(), "CNC".to_owned())].into(),
            ..MockOrder::default()
        });
    }
    let dir = tempfile::tempdir().unwrap();
    // RELIANCE swinging ±20 around 1000: a fast/slow crossover every hour or so.
    let account = format!(
        "id = \"oa-1\"\nbroker = \"openalgo\"\nbase_url = \"{}\"\ncapital = 10000000\nmode = \"long\"\nproduct = \"cnc\"\nsizing = {{ kind = \"fixed\", qty = 10 }}\nrisk = {{ cooldown_secs = 0 }}",
        broker.url
    );
    let live = "timeout_ms = 5000\npoll_ms = 50\nbackoff_ms = 50\ncancel_after_secs = 0";
    let config = tradehost_tests::reliance_day_config(dir.path(), |i| 1000.0 + 20.0 * (f64::from(i) / 15.0).sin(), live, "oa-1", &account);
    let run = |args: &[&str]| {
        Command::new(tradehost_bin())
            .args(["run", "--quiet", "--config"])
            .arg(&config)
            .args(args)
            .env("REDIS_URL", redis.url())
            .env("TRADING_MODE", "live")
            .env_remove("TRADEHOST_SECRETS")
            .env("TRADEHOST_OA_1_API_KEY", KEY)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let journal = dir.path().join("journal.sqlite");
    let mut first = run(&[]);
    // Until two orders are accepted, the third was taken by the broker without an answer, and a fourth is decided.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(broker.state().orders.len() >= 4
        && journal_count(&journal, "SELECT COUNT(*) FROM orders WHERE state = 'accepted'") >= 2
        && journal_count(&journal, "SELECT COUNT(*) FROM orders") >= 4)
    {
        assert!(Instant::now() < deadline, "the run did not get two orders accepted and a third sent");
        std::thread::sleep(Duration::from_millis(20));
    }
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let states: Vec<String> = rusqlite::Connection::open(&journal).unwrap().prepare("SELECT state FROM orders ORDER BY rowid").unwrap().query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
    assert_eq!(&states[..3], ["accepted", "accepted", "submitted"], "killed with orders accepted and one unanswered: {states:?}");
    assert!(states.len() > 3, "and more decided, waiting their turn: {states:?}");

    // While it was down the working orders filled; from now on every order fills at once.
    {
        let mut s = broker.state();
        s.default_script = None;
        for o in s.orders.iter_mut().filter(|o| o.status == "OPEN") {
            o.script = Some(Script { steps: vec![Step::Fill(o.qty, Decimal::from(1001))], ..Script::default() });
        }
    }
    let second = run(&["--until-idle", "2"]).wait_with_output().unwrap();
    assert!(second.status.success(), "{}", String::from_utf8_lossy(&second.stderr));

    let db = rusqlite::Connection::open(&journal).unwrap();
    let orders: Vec<(String, String, Option<String>)> =
        db.prepare("SELECT client_order_id, state, broker_order_id FROM orders ORDER BY rowid").unwrap().query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect();
    assert!(orders.iter().all(|o| o.1 == "filled"), "{orders:?}");
    let ids: std::collections::HashSet<&str> = orders.iter().filter_map(|o| o.2.as_deref()).collect();
    assert_eq!(ids.len(), orders.len(), "each order its own broker order: {orders:?}");
    assert!(!ids.contains("manual-1"), "the order placed by hand is never taken for ours");
    let s = broker.state();
    assert_eq!(s.orders.len(), orders.len() + 1, "one broker order per journal order, and the manual one");
    // Placed after the restart too, every order kept its protection: a limit at the collar.
    assert!(s.orders.iter().filter(|o| o.id != "manual-1").all(|o| o.fields.get("pricetype").map(String::as_str) == Some("LIMIT")), "{:?}", s.orders.iter().map(|o| o.fields.get("pricetype")).collect::<Vec<_>>());
    // The end state is the broker's, less what was bought by hand.
    let net: Decimal = s.orders.iter().filter(|o| o.id != "manual-1").map(|o| if o.side == "BUY" { o.filled } else { -o.filled }).sum();
    let held: Option<String> = db.query_row("SELECT qty FROM positions WHERE account = 'oa-1' AND instrument = 'RELIANCE'", [], |r| r.get(0)).ok();
    assert_eq!(held.map_or(Decimal::ZERO, |q| q.parse().unwrap()), net);
    drop(s);
    tradehost_tests::check_positions(&db);
}
