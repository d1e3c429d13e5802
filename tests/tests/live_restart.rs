//! A live run killed (SIGKILL) with orders in every state at a broker server
//! (OpenAlgo, Kite, Upstox, each as its API answers): accepted and working, one
//! placed whose answer never came (`submitted`), and more waiting their turn.
//! The restart places nothing twice: the working ones are polled, the
//! unanswered one is found in the book (never the older order of the same
//! shape someone placed by hand, nor one already matched), the rest are placed
//! once, each still with its protection; and the end state is the broker's.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use tradehost_tests::brokers::{Fault, Flavor, MockOrder, MockServer, Script, Step};
use tradehost_tests::{RedisServer, tradehost_bin};

/// One broker's side of the test: its server, the account's configuration and credentials,
/// and how an order of ours shows its protection.
struct Venue {
    flavor: Flavor,
    account: &'static str,
    /// `(api_key, access_token)`; OpenAlgo's key is its whole login.
    key: &'static str,
    token: &'static str,
    /// The account's broker lines, then `[live]` lines beyond the shared ones.
    broker_lines: &'static str,
    live_lines: &'static str,
    /// The instrument master file the account needs, if any: (file name, text).
    master: Option<(&'static str, &'static str)>,
    /// Whether an order carries its protection (a limit at the collar, or Kite's market protection).
    protected: fn(&MockOrder) -> bool,
}

const OPENALGO: Venue = Venue {
    flavor: Flavor::OpenAlgo,
    account: "oa-1",
    key: "openalgo-key-restart",
    token: "",
    broker_lines: "broker = \"openalgo\"",
    live_lines: "",
    master: None,
    protected: |o| o.fields.get("pricetype").map(String::as_str) == Some("LIMIT"),
};

const KITE: Venue = Venue {
    flavor: Flavor::Kite,
    account: "kite-1",
    key: "kite-key-restart",
    token: "kite-token-restart",
    broker_lines: "broker = \"kite\"",
    live_lines: "instruments = { kite = \"kite.csv\" }",
    master: Some((
        "kite.csv",
        "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,lot_size,instrument_type,segment,exchange\n738561,2885,RELIANCE,\"RELIANCE INDUSTRIES\",0,,0,0.05,1,EQ,NSE,NSE\n",
    )),
    // A market order with a protection percentage Kite accepts (never 0, which Kite refuses).
    protected: |o| {
        o.fields.get("order_type").map(String::as_str) == Some("MARKET")
            && o.fields.get("market_protection").is_some_and(|m| m != "0")
    },
};

const UPSTOX: Venue = Venue {
    flavor: Flavor::Upstox,
    account: "up-1",
    key: "",
    token: "upstox-token-restart",
    broker_lines: "broker = \"upstox\"",
    live_lines: "instruments = { upstox = \"upstox.csv\" }",
    master: Some((
        "upstox.csv",
        "instrument_key,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,lot_size,instrument_type,option_type,exchange\nNSE_EQ|INE002A01018,2885,RELIANCE,RELIANCE INDUSTRIES,0,,,0.05,1,EQUITY,,NSE_EQ\n",
    )),
    protected: |o| {
        o.fields.get("order_type").map(String::as_str) == Some("LIMIT")
            && o.fields
                .get("price")
                .and_then(|p| p.parse::<f64>().ok())
                .is_some_and(|p| p > 0.0)
    },
};

fn journal_count(path: &std::path::Path, sql: &str) -> i64 {
    rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|db| db.query_row(sql, [], |r| r.get(0)))
        .unwrap_or(0)
}

#[test]
fn a_live_run_killed_with_orders_in_flight_places_nothing_twice_at_openalgo() {
    killed_with_orders_in_flight(&OPENALGO);
}

#[test]
fn a_live_run_killed_with_orders_in_flight_places_nothing_twice_at_kite() {
    killed_with_orders_in_flight(&KITE);
}

#[test]
fn a_live_run_killed_with_orders_in_flight_places_nothing_twice_at_upstox() {
    killed_with_orders_in_flight(&UPSTOX);
}

fn killed_with_orders_in_flight(v: &Venue) {
    let redis = RedisServer::start();
    let broker = match v.flavor {
        Flavor::OpenAlgo => MockServer::start(v.flavor, "", v.key),
        _ => MockServer::start(v.flavor, v.key, v.token),
    };
    let symbol = if v.flavor == Flavor::Upstox {
        "NSE_EQ|INE002A01018"
    } else {
        "RELIANCE"
    };
    {
        let mut s = broker.state();
        // Upstox's positions name the instrument key's trading symbol.
        s.symbols
            .insert("NSE_EQ|INE002A01018".into(), "RELIANCE".into());
        // Orders stay working until the test says otherwise; the third placement is taken but answered too late.
        s.default_script = Some(Script {
            steps: vec![Step::Open; 100_000],
            ..Script::default()
        });
        s.faults.extend([
            Fault::SlowAccept(Duration::ZERO),
            Fault::SlowAccept(Duration::ZERO),
            Fault::SlowAccept(Duration::from_secs(30)),
        ]);
        // Bought by hand an hour earlier, the same shape as ours.
        s.orders.push(MockOrder {
            id: "manual-1".into(),
            symbol: symbol.into(),
            side: "BUY".into(),
            qty: Decimal::from(10),
            status: "COMPLETE".into(),
            average_price: Some(Decimal::from(990)),
            filled: Decimal::from(10),
            placed_at: tradehost_tests::brokers::ist_stamp(
                i64::try_from(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_millis(),
                )
                .unwrap()
                    - 3_600_000,
            ),
            fields: [
                ("exchange".to_owned(), "NSE".to_owned()),
                ("product".to_owned(), "CNC".to_owned()),
            ]
            .into(),
            ..MockOrder::default()
        });
    }
    let dir = tempfile::tempdir().unwrap();
    if let Some((file, text)) = v.master {
        std::fs::write(dir.path().join(file), text).unwrap();
    }
    // RELIANCE swinging ±20 around 1000: a fast/slow crossover every hour or so. Order updates
    // are polled: the pushes are tested elsewhere, and no connection may leave the machine.
    let account = format!(
        "id = \"{}\"\n{}\nbase_url = \"{}\"\norder_updates = \"poll\"\ncapital = 10000000\nmode = \"long\"\nproduct = \"cnc\"\nsizing = {{ kind = \"fixed\", qty = 10 }}\nrisk = {{ cooldown_secs = 0 }}",
        v.account, v.broker_lines, broker.url
    );
    let live = format!(
        "timeout_ms = 5000\npoll_ms = 50\nbackoff_ms = 50\ncancel_after_secs = 0\n{}",
        v.live_lines
    );
    let config = tradehost_tests::reliance_day_config(
        dir.path(),
        |i| 1000.0 + 20.0 * (f64::from(i) / 15.0).sin(),
        &live,
        v.account,
        &account,
    );
    let prefix = format!(
        "TRADEHOST_{}",
        v.account.to_ascii_uppercase().replace('-', "_")
    );
    let run = |args: &[&str]| {
        Command::new(tradehost_bin())
            .args(["run", "--quiet", "--config"])
            .arg(&config)
            .args(args)
            .env("REDIS_URL", redis.url())
            .env("TRADING_MODE", "live")
            .env_remove("TRADEHOST_SECRETS")
            .env(format!("{prefix}_API_KEY"), v.key)
            .env(format!("{prefix}_ACCESS_TOKEN"), v.token)
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
        && journal_count(
            &journal,
            "SELECT COUNT(*) FROM orders WHERE state = 'accepted'",
        ) >= 2
        && journal_count(&journal, "SELECT COUNT(*) FROM orders") >= 4)
    {
        assert!(
            Instant::now() < deadline,
            "the run did not get two orders accepted and a third sent"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let states: Vec<String> = rusqlite::Connection::open(&journal)
        .unwrap()
        .prepare("SELECT state FROM orders ORDER BY rowid")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    // The buys went out; each exit waits, unsent, for the buy it was sized against to settle
    // at the broker (a buy refused after acceptance must not leave a long-only account short).
    let sent: Vec<&str> = states
        .iter()
        .map(String::as_str)
        .filter(|s| *s != "new")
        .collect();
    assert_eq!(
        &sent[..3],
        ["accepted", "accepted", "submitted"],
        "killed with orders accepted and one unanswered: {states:?}"
    );
    assert!(
        states.iter().any(|s| s == "new"),
        "and more decided, waiting their turn: {states:?}"
    );

    // While it was down the working orders filled; from now on every order fills at once,
    // at the market's last price.
    {
        let mut s = broker.state();
        s.default_script = None;
        s.ltp.insert(symbol.into(), Decimal::from(1001));
        for o in s.orders.iter_mut().filter(|o| o.status == "OPEN") {
            // Filled at the exchange before the restart: the broker's positions hold them.
            o.status = "COMPLETE".into();
            o.filled = o.qty;
            o.average_price = Some(Decimal::from(1001));
            o.trades = vec![(o.qty, Decimal::from(1001))];
            o.script = None;
        }
    }
    let events = tradehost_tests::Collector::start(&redis.url());
    let second = run(&["--until-idle", "2"]).wait_with_output().unwrap();
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );

    let db = rusqlite::Connection::open(&journal).unwrap();
    let orders: Vec<(String, String, Option<String>)> = db
        .prepare("SELECT client_order_id, state, broker_order_id FROM orders ORDER BY rowid")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(orders.iter().all(|o| o.1 == "filled"), "{orders:?}");
    let ids: std::collections::HashSet<&str> =
        orders.iter().filter_map(|o| o.2.as_deref()).collect();
    assert_eq!(
        ids.len(),
        orders.len(),
        "each order its own broker order: {orders:?}"
    );
    assert!(
        !ids.contains("manual-1"),
        "the order placed by hand is never taken for ours"
    );
    let s = broker.state();
    assert_eq!(
        s.orders.len(),
        orders.len() + 1,
        "one broker order per journal order, and the manual one"
    );
    // Placed after the restart too, every order kept its protection.
    assert!(
        s.orders
            .iter()
            .filter(|o| o.id != "manual-1")
            .all(v.protected),
        "{:?}",
        s.orders.iter().map(|o| &o.fields).collect::<Vec<_>>()
    );
    // The end state is the broker's, less what was bought by hand.
    let net: Decimal = s
        .orders
        .iter()
        .filter(|o| o.id != "manual-1")
        .map(|o| if o.side == "BUY" { o.filled } else { -o.filled })
        .sum();
    let held: Option<String> = db
        .query_row(
            "SELECT qty FROM positions WHERE account = ?1 AND instrument = 'RELIANCE'",
            [v.account],
            |r| r.get(0),
        )
        .ok();
    assert_eq!(held.map_or(Decimal::ZERO, |q| q.parse().unwrap()), net);
    drop(s);
    tradehost_tests::check_positions(&db);
    // The restart read back what its orders did while it was down before it compared positions
    // with the broker's: a mismatch it raises is the order bought by hand, never the fills it
    // had not journaled yet (compared first, as before, the broker held 10 more per order).
    let mismatches: Vec<serde_json::Value> = events
        .messages()
        .into_iter()
        .filter(|(_, m)| m["event"] == "position_mismatch")
        .map(|(_, m)| m)
        .collect();
    for m in &mismatches {
        let (journal, broker): (Decimal, Decimal) = (
            m["journal"].as_str().unwrap().parse().unwrap(),
            m["broker_qty"].as_str().unwrap().parse().unwrap(),
        );
        assert_eq!(broker - journal, Decimal::from(10), "{m}");
    }
}
