//! The 15:15 square-off by the clock, through the real binary on a live
//! broker: the day's last price is 15:14 (a feed gap, data that stops), yet
//! the intraday position is squared off at 15:15 without waiting for a price
//! that never comes, and the run ends flat at the broker as in its journal;
//! and an entry still working at 15:15 is cancelled at the broker first (Kite,
//! Upstox and OpenAlgo servers in turn), so the square-off closes exactly what it filled.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use tradehost_tests::brokers::{Flavor, MockServer, Script, Step};
use tradehost_tests::{Collector, RedisServer, tradehost_bin};

/// One broker's side: its server flavour, the account's lines and credentials, the instrument
/// master it needs, and how its order names the symbol and the side.
struct Venue {
    flavor: Flavor,
    account: &'static str,
    key: &'static str,
    token: &'static str,
    broker: &'static str,
    master: Option<(&'static str, &'static str, &'static str)>,
    /// The symbol the broker's orders and LTP use.
    symbol: &'static str,
    /// The request field that carries the side.
    side_field: &'static str,
}

const KITE: Venue = Venue {
    flavor: Flavor::Kite,
    account: "kite-mis",
    key: "kite-key-sq",
    token: "kite-token-sq",
    broker: "kite",
    master: Some((
        "kite",
        "kite.csv",
        "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,lot_size,instrument_type,segment,exchange\n738561,2885,RELIANCE,\"RELIANCE INDUSTRIES\",0,,0,0.05,1,EQ,NSE,NSE\n",
    )),
    symbol: "RELIANCE",
    side_field: "transaction_type",
};

const UPSTOX: Venue = Venue {
    flavor: Flavor::Upstox,
    account: "up-mis",
    key: "",
    token: "upstox-token-sq",
    broker: "upstox",
    master: Some((
        "upstox",
        "upstox.csv",
        "instrument_key,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,lot_size,instrument_type,option_type,exchange\nNSE_EQ|INE002A01018,2885,RELIANCE,RELIANCE INDUSTRIES,0,,,0.05,1,EQUITY,,NSE_EQ\n",
    )),
    symbol: "NSE_EQ|INE002A01018",
    side_field: "transaction_type",
};

const OPENALGO: Venue = Venue {
    flavor: Flavor::OpenAlgo,
    account: "oa-mis",
    key: "openalgo-key-sq",
    token: "",
    broker: "openalgo",
    master: None,
    symbol: "RELIANCE",
    side_field: "action",
};

fn server(v: &Venue) -> MockServer {
    match v.flavor {
        Flavor::OpenAlgo => MockServer::start(v.flavor, "", v.key),
        _ => MockServer::start(v.flavor, v.key, v.token),
    }
}

/// 2024-01-02 15:15 IST.
const DUE: i64 = 1_704_188_700_000;

/// A RELIANCE day priced by `price` for `v`'s intraday account at `server` (its master
/// written beside it): the configuration's path.
fn mis_day(
    v: &Venue,
    server: &MockServer,
    dir: &std::path::Path,
    price: impl Fn(u32) -> f64,
) -> std::path::PathBuf {
    let mut instruments = String::new();
    if let Some((broker, file, text)) = v.master {
        std::fs::write(dir.join(file), text).unwrap();
        instruments = format!("\ninstruments = {{ {broker} = \"{file}\" }}");
    }
    // Entries are cancelled at the square-off, not for want of a fill before it.
    let account = format!(
        "id = \"{}\"\nbroker = \"{}\"\nbase_url = \"{}\"\norder_updates = \"poll\"\ncapital = 10000000\nmode = \"long\"\nproduct = \"mis\"\nsquare_off = \"15:15\"\nsizing = {{ kind = \"fixed\", qty = 10 }}\nrisk = {{ cooldown_secs = 0 }}",
        v.account, v.broker, server.url
    );
    tradehost_tests::reliance_day_config(
        dir,
        price,
        &format!("timeout_ms = 1000\npoll_ms = 30\ncancel_after_secs = 3600{instruments}"),
        v.account,
        &account,
    )
}

/// `tradehost run` for `v`'s account, live on `redis`, with its credentials.
fn live_run(v: &Venue, config: &std::path::Path, redis: &RedisServer) -> Command {
    let prefix = format!(
        "TRADEHOST_{}",
        v.account.to_ascii_uppercase().replace('-', "_")
    );
    let mut c = Command::new(tradehost_bin());
    c.arg("run")
        .arg("--config")
        .arg(config)
        .env("REDIS_URL", redis.url())
        .env("TRADING_MODE", "live")
        .env_remove("TRADEHOST_SECRETS")
        .env(format!("{prefix}_API_KEY"), v.key)
        .env(format!("{prefix}_ACCESS_TOKEN"), v.token)
        .env("RUST_LOG", "warn");
    c
}

/// A live run at `v`'s broker of a RELIANCE day whose last price is 15:14 and whose late rise buys.
fn run_day(v: &Venue, kite: &MockServer, redis: &RedisServer, dir: &std::path::Path) {
    kite.state()
        .ltp
        .insert(v.symbol.into(), Decimal::from(1019));
    // Flat, a dip, then a rise late in the day: a fast/slow crossover buys and the position is open at the last bar.
    let config = mis_day(v, kite, dir, |i| match i {
        0..300 => 1000.0,
        300..320 => 1000.0 - f64::from(i - 299),
        _ => 980.0 + f64::from(i - 319),
    });
    let started = Instant::now();
    let out = live_run(v, &config, redis)
        .args(["--until-idle", "4"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "the run ended"
    );
}

/// What the broker holds, net per symbol, leaving out the flat ones.
fn held_at(kite: &MockServer) -> Vec<(String, i64)> {
    let s = kite.state();
    let mut net = std::collections::BTreeMap::new();
    for o in s.orders.iter() {
        let q = i64::try_from(o.filled.mantissa()).unwrap() / 10i64.pow(o.filled.scale());
        *net.entry(o.symbol.clone()).or_insert(0) += if o.side == "BUY" { q } else { -q };
    }
    net.into_iter().filter(|(_, q)| *q != 0).collect()
}

/// A live start while the broker is down (every connection closed unanswered, as a server
/// restarting does) is no refusal: the run says so (`broker_unreachable`, on stderr and the
/// bus), asks again with back-off, and once the broker answers it trades the day.
#[test]
fn a_live_start_with_the_broker_down_waits_and_then_trades() {
    let redis = RedisServer::start();
    let collector = Collector::start(&redis.url());
    let kite = server(&KITE);
    kite.restart_for(Duration::from_secs(3));
    let dir = tempfile::tempdir().unwrap();
    kite.state()
        .ltp
        .insert(KITE.symbol.into(), Decimal::from(1019));
    let config = mis_day(&KITE, &kite, dir.path(), |i| match i {
        0..300 => 1000.0,
        300..320 => 1000.0 - f64::from(i - 299),
        _ => 980.0 + f64::from(i - 319),
    });
    let out = live_run(&KITE, &config, &redis)
        .args(["--until-idle", "4"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("LIVE account kite-mis (kite): the broker does not answer"),
        "{stderr}"
    );
    let waits: Vec<serde_json::Value> = collector
        .of("trading:events", "event")
        .into_iter()
        .filter(|e| e["event"] == "broker_unreachable")
        .collect();
    assert!(!waits.is_empty(), "the wait is told on the bus");
    assert_eq!(waits[0]["account"], "kite-mis");
    let backoff: Vec<u64> = waits.iter().filter_map(|e| e["wait_ms"].as_u64()).collect();
    assert!(
        backoff.windows(2).all(|w| w[1] >= w[0]),
        "backing off: {backoff:?}"
    );
    assert!(
        !kite.state().orders.is_empty(),
        "it traded once the broker answered"
    );
    assert!(held_at(&kite).is_empty(), "and ended the day flat");
}

#[test]
fn an_intraday_position_whose_last_price_is_15_14_is_squared_off_at_15_15() {
    let redis = RedisServer::start();
    let collector = Collector::start(&redis.url());
    let kite = server(&KITE);
    let dir = tempfile::tempdir().unwrap();
    run_day(&KITE, &kite, &redis, dir.path());

    let db = rusqlite::Connection::open(dir.path().join("journal.sqlite")).unwrap();
    let orders: Vec<(String, String, String, i64)> = db
        .prepare("SELECT pipeline, side, state, not_before FROM orders ORDER BY rowid")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let entries: Vec<_> = orders.iter().filter(|o| o.0 == "reliance").collect();
    let rejected: Vec<String> = collector
        .of("trading:events", "event")
        .iter()
        .filter(|e| e["event"] == "order_rejected")
        .map(|e| e.to_string())
        .collect();
    assert!(
        !entries.is_empty() && entries.iter().all(|o| o.1 == "buy" && o.2 == "filled"),
        "the late rise buys: {orders:?} {rejected:?}"
    );
    let closes: Vec<_> = orders.iter().filter(|o| o.0 == "square-off").collect();
    assert_eq!(closes.len(), 1, "{orders:?}");
    assert_eq!(
        (closes[0].1.as_str(), closes[0].2.as_str(), closes[0].3),
        ("sell", "filled", DUE),
        "squared off at 15:15 although no price came after 15:14"
    );
    let events = collector.of("trading:events", "event");
    let squared: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "square_off")
        .collect();
    assert_eq!(squared.len(), 1, "{squared:?}");
    assert_eq!(
        (
            squared[0]["account"].as_str(),
            squared[0]["reason"].as_str(),
            squared[0]["due"].as_i64()
        ),
        (Some("kite-mis"), Some("square-off"), Some(DUE))
    );

    // The end state, exactly as the broker holds it: flat on both sides.
    let held: i64 = db
        .query_row("SELECT COUNT(*) FROM positions WHERE qty != '0'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(held, 0);
    let broker = held_at(&kite);
    assert_eq!(broker, vec![], "the broker holds nothing either");
    let at_broker = kite.state().orders.len();
    assert_eq!(
        at_broker,
        orders.len(),
        "one broker order per journal order"
    );
    tradehost_tests::check_positions(&db);
}

#[test]
fn an_entry_still_working_at_15_15_is_cancelled_at_the_broker_and_its_filled_part_squared_off_at_kite()
 {
    entry_working_at_square_off(&KITE);
}

#[test]
fn an_entry_still_working_at_15_15_is_cancelled_at_the_broker_and_its_filled_part_squared_off_at_upstox()
 {
    entry_working_at_square_off(&UPSTOX);
}

#[test]
fn an_entry_still_working_at_15_15_is_cancelled_at_the_broker_and_its_filled_part_squared_off_at_openalgo()
 {
    entry_working_at_square_off(&OPENALGO);
}

fn entry_working_at_square_off(v: &Venue) {
    let redis = RedisServer::start();
    let collector = Collector::start(&redis.url());
    let kite = server(v);
    // The entry fills 4 of its 10 at the first read and then works on, unfilled.
    kite.state().scripts.push_back(Script {
        steps: vec![Step::Fill(Decimal::from(4), Decimal::from(1001))],
        ..Script::default()
    });
    let dir = tempfile::tempdir().unwrap();
    run_day(v, &kite, &redis, dir.path());

    let db = rusqlite::Connection::open(dir.path().join("journal.sqlite")).unwrap();
    let orders: Vec<(String, String, String, String, String)> = db
        .prepare("SELECT pipeline, side, state, qty, filled_qty FROM orders ORDER BY rowid")
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get::<_, Option<String>>(4)?.unwrap_or_default(),
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let entry: Vec<_> = orders.iter().filter(|o| o.0 == "reliance").collect();
    assert_eq!(entry.len(), 1, "{orders:?}");
    assert_eq!(
        (
            entry[0].1.as_str(),
            entry[0].2.as_str(),
            entry[0].3.as_str(),
            entry[0].4.as_str()
        ),
        ("buy", "cancelled", "10", "4"),
        "{orders:?}"
    );
    let closes: Vec<_> = orders.iter().filter(|o| o.0 == "square-off").collect();
    assert_eq!(closes.len(), 1, "{orders:?}");
    assert_eq!(
        (
            closes[0].1.as_str(),
            closes[0].2.as_str(),
            closes[0].3.as_str()
        ),
        ("sell", "filled", "4"),
        "the square-off closes what the entry filled"
    );

    // The broker was asked to cancel, for the square-off, before the close was placed.
    let s = kite.state();
    assert_eq!(s.orders.len(), 2);
    assert_eq!(
        (
            s.orders[0].status.as_str(),
            s.orders[1].fields.get(v.side_field).map(String::as_str)
        ),
        ("CANCELLED", Some("SELL"))
    );
    drop(s);
    let events = collector.of("trading:orders", "order");
    let asked = events
        .iter()
        .find(|e| e["state"] == "pending_cancel")
        .expect("a cancel request is journaled");
    assert!(
        asked["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("square-off")),
        "{asked}"
    );
    assert_eq!(held_at(&kite), vec![], "the broker holds nothing");
    let held: i64 = db
        .query_row("SELECT COUNT(*) FROM positions WHERE qty != '0'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(held, 0);
    tradehost_tests::check_positions(&db);
}

/// libfaketime's preload library, which the README's test command installs (Debian's
/// `faketime`): the process under test sees the wall clock the test sets.
fn libfaketime() -> std::path::PathBuf {
    let found = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|d| d.path().join("faketime/libfaketime.so.1"))
        .chain([std::path::PathBuf::from(
            "/usr/lib/faketime/libfaketime.so.1",
        )])
        .find(|p| p.exists());
    found.expect("libfaketime (Debian's faketime package; ./scripts/test installs it)")
}

/// A live run of `v`'s RELIANCE day at `kite` whose data stops at 14:14 (flat, a dip, then a
/// rise: a crossover buys around 13:00): the position is bought and still open when it ends.
/// Returns the configuration's path.
fn bought_until_14_14(v: &Venue, kite: &MockServer, dir: &std::path::Path) -> std::path::PathBuf {
    kite.state()
        .ltp
        .insert(v.symbol.into(), Decimal::from(1019));
    let config = mis_day(v, kite, dir, |i| match i {
        0..200 => 1000.0,
        200..220 => 1000.0 - f64::from(i - 199),
        _ => 980.0 + f64::from(i - 219),
    });
    let csv = dir.join("RELIANCE.csv");
    let day: Vec<String> = std::fs::read_to_string(&csv)
        .unwrap()
        .lines()
        .take(301)
        .map(str::to_owned)
        .collect();
    std::fs::write(&csv, day.join("\n") + "\n").unwrap();
    let redis = RedisServer::start();
    let first = live_run(v, &config, &redis)
        .args(["--until-idle", "3"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(held_at(kite), vec![("RELIANCE".to_owned(), 10)], "bought");
    config
}

/// The orders process restarted at 15:14:55 with its feed down (a fresh Redis, no price at all
/// since the start) still squares the intraday position off at 15:15 by the calendar's wall
/// clock, at the market with the broker's protection: the market clock that prices give is
/// not there to wait for.
#[test]
fn an_orders_process_restarted_at_15_14_with_the_feed_down_still_squares_off() {
    let v = &KITE;
    let kite = server(v);
    let dir = tempfile::tempdir().unwrap();
    let config = bought_until_14_14(v, &kite, dir.path());
    let tradehost = |redis: &RedisServer| {
        let mut c = live_run(v, &config, redis);
        c.stdout(Stdio::null()).stderr(Stdio::piped());
        c
    };
    let placed = kite.state().orders.len();

    // The orders process starts again at 15:14:55 IST on that day (09:44:55 UTC), its Redis
    // new and its feed down: no price comes at all.
    let redis = RedisServer::start();
    let mut orders = tradehost_tests::Killed(
        tradehost(&redis)
            .args(["--role", "orders"])
            .env("LD_PRELOAD", libfaketime())
            .env("FAKETIME", "@2024-01-02 09:44:55")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .env("TZ", "UTC")
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !held_at(&kite).is_empty() {
        assert!(
            Instant::now() < deadline,
            "no square-off by the wall clock: {:?}",
            kite.state()
                .orders
                .iter()
                .map(|o| (&o.side, &o.status))
                .collect::<Vec<_>>()
        );
        assert!(
            orders.0.try_wait().unwrap().is_none(),
            "the orders process stays up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = kite.state();
    assert_eq!(s.orders.len(), placed + 1, "one close");
    let close = s.orders.last().unwrap();
    assert_eq!(
        (
            close.side.as_str(),
            close.fields.get("order_type").map(String::as_str)
        ),
        ("SELL", Some("MARKET")),
        "at the market: no price is known"
    );
    assert!(
        close
            .fields
            .get("market_protection")
            .is_some_and(|m| m != "0"),
        "with the broker's market protection: {:?}",
        close.fields
    );
    drop(s);
    let _ = orders.0.kill();
    let _ = orders.0.wait();
    let db = rusqlite::Connection::open(dir.path().join("journal.sqlite")).unwrap();
    let closes: Vec<(String, String)> = db
        .prepare("SELECT pipeline, state FROM orders WHERE side = 'sell'")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(closes, vec![("square-off".to_owned(), "filled".to_owned())]);
}

/// The broker is the truth at the square-off: a position the broker closed itself while the
/// host ran on (its risk system, or the trader at its terminal) is not closed a second time.
/// From 15:15 the orders side reads its orders back, finds the broker flat, brings the journal
/// down to it (a `reconcile` fill and its alert), and sends the broker nothing.
#[test]
fn a_position_the_broker_closed_itself_is_not_squared_off_again_at_15_15() {
    use std::io::BufRead as _;
    let v = &KITE;
    let kite = server(v);
    let dir = tempfile::tempdir().unwrap();
    let config = bought_until_14_14(v, &kite, dir.path());

    // The orders process runs on from 15:14:05 IST (a loaded machine may take half a minute to
    // start it); its positions agree with the broker's.
    let redis = RedisServer::start();
    let mut orders = tradehost_tests::Killed(
        live_run(v, &config, &redis)
            .args(["--role", "orders"])
            .env("LD_PRELOAD", libfaketime())
            .env("FAKETIME", "@2024-01-02 09:44:05")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .env("TZ", "UTC")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    let stdout = orders.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            sink.lock().unwrap().push(line);
        }
    });
    let said = |what: &str| lines.lock().unwrap().iter().any(|l| l.contains(what));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !said("positions agree with kite") {
        assert!(
            Instant::now() < deadline,
            "no start-up check: {:?}",
            lines.lock().unwrap()
        );
        assert!(
            orders.0.try_wait().unwrap().is_none(),
            "the orders process stays up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Before 15:15 the broker squares the position off itself.
    assert_eq!(kite.state().square_off_intraday(), 1);
    assert!(held_at(&kite).is_empty());
    let placed = kite.state().orders.len();
    let journal = dir.path().join("journal.sqlite");
    let reconciled = || -> Vec<(String, String)> {
        let db = rusqlite::Connection::open(&journal).unwrap();
        db.prepare("SELECT side, qty FROM orders WHERE pipeline = 'reconcile' AND state = 'filled'")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    // 15:15 comes about a minute after the start.
    let deadline = Instant::now() + Duration::from_secs(120);
    while reconciled().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the journal was not brought to the broker at 15:15; the broker has {:?}; the host said {:?}",
            kite.state()
                .orders
                .iter()
                .map(|o| (&o.id, &o.side, &o.status))
                .collect::<Vec<_>>(),
            lines.lock().unwrap()
        );
        assert!(
            orders.0.try_wait().unwrap().is_none(),
            "the orders process stays up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(reconciled(), vec![("sell".to_owned(), "10".to_owned())]);
    assert!(said("square-off at 15:15"), "{:?}", lines.lock().unwrap());
    // The clock's square-off ticks every second from here on: the next few find nothing to close.
    let watch_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < watch_until {
        assert_eq!(
            kite.state().orders.len(),
            placed,
            "no second close at the broker"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(held_at(&kite).is_empty(), "the account stays flat");
    let _ = orders.0.kill();
    let _ = orders.0.wait();
}
