//! The exchange's and the regulator's rules on the live path, against a local
//! server that answers as Kite Connect's documented API does (and refuses an order
//! above the contract's freeze quantity, as NSE does): a 5,000-unit NIFTY order
//! decided by the order manager reaches the broker as paced slices below the
//! freeze limit, each with its own tag and the account's algo id; the audit
//! export names every slice with its parent, the plugin's build and the algo id.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::json;
use tradehost::brokers::instruments::InstrumentMaster;
use tradehost::brokers::kite::Kite;
use tradehost::brokers::live::{AccountLink, LiveRouter, LiveUpdate, RouterOutput, RouterSettings};
use tradehost::brokers::{Broker, BrokerError, OrderRequest, Secret, Segment};
use tradehost::bus::Bus;
use tradehost::bus::events::Event;
use tradehost::bus::message::{SCHEMA_VERSION, SignalMessage};
use tradehost::config::{Config, Product};
use tradehost::orders::{OrderManager, Outcome};
use tradehost::subscriber::OrderSide;
use tradehost_tests::brokers::{Flavor, MockServer};
use tradehost_tests::{arg, tradehost_ok};

/// Kite's own name of our `NIFTY28MAR2420800CE`, and its instrument dump (lots of 50).
const KITE_SYMBOL: &str = "NIFTY24MAR20800CE";
const KITE_CSV: &str = "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,lot_size,instrument_type,segment,exchange
12345678,48225,NIFTY24MAR20800CE,\"NIFTY\",0,2024-03-28,20800,0.05,50,CE,NFO-OPT,NFO
";

const CONFIG: &str = r#"
[[accounts]]
id = "kite-1"
broker = "kite"
capital = 100000000
mode = "long"
algo_id = "NSE-ALGO-0042"
sizing = { kind = "lots", lots = 100, lot_size = 50 }
risk = { cooldown_secs = 0, max_orders_per_sec = 2 }

[[pipelines]]
id = "nifty-opt"
plugin = "ma_crossover.wasm"
symbols = ["NIFTY28MAR2420800CE"]
accounts = ["kite-1"]
source = { kind = "redis" }
"#;

/// 2024-03-01 10:00 IST, a Friday.
const T: i64 = 1_709_267_400_000;

/// The `rel` pipeline's buy of `instrument` at `T`.
fn rel_signal(instrument: &str) -> SignalMessage {
    let mut s = signal();
    (s.pipeline, s.instrument, s.id) = (
        "rel".into(),
        instrument.into(),
        SignalMessage::make_id("rel", "ma-crossover", "0.1.0", T, 0),
    );
    s
}

fn signal() -> SignalMessage {
    SignalMessage {
        v: SCHEMA_VERSION,
        kind: "signal".into(),
        id: SignalMessage::make_id("nifty-opt", "ma-crossover", "0.1.0", T, 0),
        ts: T,
        pipeline: "nifty-opt".into(),
        plugin: "ma-crossover".into(),
        plugin_version: "0.1.0".into(),
        instrument: "NIFTY28MAR2420800CE".into(),
        side: "buy".into(),
        reason: "test".into(),
        price: Some(dec!(100)),
        stop_loss: None,
        target: None,
        strength: None,
        plugin_sha256: Some("ab".repeat(32)),
        order: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5000_nifty_order_reaches_kite_as_paced_slices_below_the_freeze_with_the_algo_id() {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockServer::start(Flavor::Kite, "kite-key", "kite-token");
    {
        let mut s = mock.state();
        s.tradable = vec![KITE_SYMBOL.into()];
        s.freeze.insert(KITE_SYMBOL.into(), dec!(1800));
        s.ltp.insert(KITE_SYMBOL.into(), dec!(100));
    }
    let kite: Arc<dyn Broker> = Arc::new(
        Kite::new(
            &mock.url,
            Secret::new("kite-key"),
            Secret::new("kite-token"),
            Duration::from_secs(2),
        )
        .unwrap(),
    );
    // The mock is the exchange: one order of 5,000 is refused.
    let whole = OrderRequest {
        client_order_id: "th000000000000000000".into(),
        submitted_at: None,
        symbol: KITE_SYMBOL.into(),
        segment: Segment::Derivative,
        token: None,
        side: OrderSide::Buy,
        qty: dec!(5000),
        product: Product::Mis,
        reference_price: Some(dec!(100)),
        protection_pct: Decimal::from(2),
        algo_id: None,
        kind: tradehost::brokers::OrderKind::Market,
        validity: tradehost::brokers::Validity::Day,
        autoslice: false,
    };
    assert!(
        matches!(kite.place(&whole).await, Err(BrokerError::Rejected(m)) if m.contains("allowed by the exchanges")),
        "the mock enforces the freeze quantity"
    );

    let config = Arc::new(Config::parse(&dir.path().join("pipelines.toml"), CONFIG).unwrap());
    let journal = dir.path().join("journal.sqlite");
    let mut om = OrderManager::open(
        &journal,
        config.clone(),
        tradehost::domain::TradingMode::Live,
    )
    .unwrap();
    om.set_live_accounts(HashSet::from(["kite-1".to_owned()]));
    om.on_signal(&signal()).unwrap();
    let orders = om.take_live_orders();
    assert_eq!(
        orders.iter().map(|o| o.qty).collect::<Vec<_>>(),
        vec![dec!(1800), dec!(1800), dec!(1400)],
        "5,000 in slices of whole lots no larger than 1,800"
    );

    let account = &config.accounts[0];
    let link = AccountLink {
        account: "kite-1".into(),
        broker: kite.clone(),
        product: Product::Mis,
        protection_pct: Decimal::from(2),
        algo_id: account.algo_id.clone(),
        orders_per_sec: account.risk.max_orders_per_sec,
        margin_check: account.margin_check,
    };
    let (router, mut rx) = kite_router(dir.path(), "exchange-rules", KITE_CSV, link, None).await;
    let ids: Vec<String> = orders.iter().map(|o| o.client_order_id.clone()).collect();
    for o in orders {
        assert!(router.send(o));
    }
    // Each slice accepted and filled; the journal takes every report.
    let mut filled = 0;
    while filled < 3 {
        let update = match tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("the router reports")
            .expect("open")
        {
            RouterOutput::Update(u) => u,
            RouterOutput::Notice(_) => continue,
        };
        if matches!(update, LiveUpdate::Rejected { .. }) {
            panic!("{update:?}");
        }
        filled += usize::from(matches!(update, LiveUpdate::Filled { .. }));
        om.on_live_update(&update).unwrap();
    }
    assert_eq!(
        om.positions_of("kite-1").unwrap()["NIFTY28MAR2420800CE"],
        dec!(5000)
    );

    let s = mock.state();
    let sent: Vec<(Option<String>, Decimal, Option<String>, String)> = s
        .orders
        .iter()
        .map(|o| {
            (
                o.tag.clone(),
                o.qty,
                o.fields.get("algo_id").cloned(),
                o.symbol.clone(),
            )
        })
        .collect();
    assert_eq!(sent.len(), 3, "{sent:?}");
    for ((tag, _, algo, symbol), id) in sent.iter().zip(&ids) {
        assert_eq!(
            (tag.as_deref(), algo.as_deref(), symbol.as_str()),
            (Some(id.as_str()), Some("NSE-ALGO-0042"), KITE_SYMBOL)
        );
    }
    // Two a second: the third placement waits for the first to be a second old.
    let placed: Vec<std::time::Instant> = s
        .requests
        .iter()
        .filter(|r| r.method == "POST" && r.path.starts_with("/orders/regular"))
        .map(|r| r.at)
        .collect();
    assert_eq!(placed.len(), 4, "the refused whole order and three slices");
    assert!(
        placed[3].duration_since(placed[1]) >= Duration::from_millis(990),
        "paced: {:?}",
        placed[3].duration_since(placed[1])
    );
    drop(s);
    drop(om);

    // The audit export: the decision's three slices, each naming its parent, the plugin build and the algo id.
    let csv = tradehost_ok(&["audit", "--journal", arg(&journal)]);
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no {name} column"))
    };
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 3, "{csv}");
    let parent = tradehost::subscriber::client_order_id(&signal().id, "kite-1");
    for (row, id) in rows.iter().zip(&ids) {
        assert_eq!(row[col("client_order_id")], id.as_str(), "{csv}");
        assert_eq!(row[col("parent_order_id")], parent.as_str());
        assert_eq!(
            (
                row[col("algo_id")],
                row[col("exchange")],
                row[col("state")],
                row[col("decision")]
            ),
            ("NSE-ALGO-0042", "NFO", "filled", "order")
        );
        assert_eq!(
            (
                row[col("plugin")],
                row[col("plugin_version")],
                row[col("plugin_sha256")]
            ),
            ("ma-crossover", "0.1.0", "ab".repeat(32).as_str())
        );
        assert_eq!(row[col("exchange_time")], "2024-03-01T10:00:00.000+05:30");
        assert!(!row[col("broker_order_id")].is_empty());
    }
    assert_eq!(
        rows.iter().map(|r| r[col("qty")]).collect::<Vec<_>>(),
        vec!["1800", "1800", "1400"]
    );
    // One day only, or none.
    assert_eq!(
        tradehost_ok(&["audit", "--journal", arg(&journal), "--day", "2024-03-04"])
            .lines()
            .count(),
        1,
        "the header alone"
    );
}

const PROTECTED: &str = r#"
[[accounts]]
id = "kite-1"
broker = "kite"
capital = 1000000
mode = "long"
product = "cnc"
sizing = { kind = "fixed", qty = 10 }
risk = { cooldown_secs = 0 }
exits = { stop_loss_pct = 2, trailing_pct = 1 }

[[pipelines]]
id = "rel"
plugin = "ma_crossover.wasm"
symbols = ["RELIANCE"]
accounts = ["kite-1"]
source = { kind = "redis" }
"#;

const RELIANCE_CSV: &str = "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,lot_size,instrument_type,segment,exchange
738561,2885,RELIANCE,\"RELIANCE INDUSTRIES\",0,,0,0.05,1,EQ,NSE,NSE
";

/// A router for one account at Kite, with the instrument dump `csv` loaded as Kite's master.
async fn kite_router(
    dir: &std::path::Path,
    bus: &str,
    csv: &str,
    link: AccountLink,
    cancel_after: Option<Duration>,
) -> (
    LiveRouter,
    tokio::sync::mpsc::UnboundedReceiver<RouterOutput>,
) {
    live_router(dir, bus, Some(("kite", csv)), link, cancel_after).await
}

/// A router for one account, with `master` (a broker and its instrument dump) loaded.
async fn live_router(
    dir: &std::path::Path,
    bus: &str,
    master_csv: Option<(&str, &str)>,
    link: AccountLink,
    cancel_after: Option<Duration>,
) -> (
    LiveRouter,
    tokio::sync::mpsc::UnboundedReceiver<RouterOutput>,
) {
    let master = InstrumentMaster::new(Bus::embedded(bus));
    if let Some((broker, csv)) = master_csv {
        let path = dir.join(format!("{broker}.csv"));
        std::fs::write(&path, csv).unwrap();
        master.load(broker, arg(&path)).await.unwrap();
    }
    let settings = RouterSettings {
        poll: Duration::from_millis(20),
        backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        max_attempts: 6,
        cancel_after,
        absent_reads: 3,
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    (LiveRouter::start(vec![link], master, settings, tx), rx)
}

/// Everything the router says until `done` holds, journaled as it comes; then what the
/// order manager hands back to the router (new orders, cancels, modifications) goes out.
/// Returns what the order manager made of it.
async fn pump(
    om: &mut OrderManager,
    router: &LiveRouter,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<RouterOutput>,
    mut done: impl FnMut(&LiveUpdate) -> bool,
) -> Vec<Outcome> {
    let mut out = Vec::new();
    loop {
        let update = match tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("the router reports")
            .expect("open")
        {
            RouterOutput::Update(u) => u,
            RouterOutput::Notice(_) => continue,
        };
        out.extend(om.on_live_update(&update).unwrap());
        hand_over(om, router);
        if done(&update) {
            return out;
        }
    }
}

/// What the router says, journaled, until the order manager's journal satisfies `settled`.
async fn until(
    om: &mut OrderManager,
    router: &LiveRouter,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<RouterOutput>,
    mut settled: impl FnMut(&OrderManager) -> bool,
) -> Vec<Outcome> {
    let mut out = Vec::new();
    hand_over(om, router);
    while !settled(om) {
        let update = match tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("the router reports before the journal settles")
            .expect("open")
        {
            RouterOutput::Update(u) => u,
            RouterOutput::Notice(_) => continue,
        };
        out.extend(om.on_live_update(&update).unwrap());
        hand_over(om, router);
    }
    out
}

/// The events among `out`.
fn events(out: &[Outcome]) -> Vec<&Event> {
    out.iter()
        .filter_map(|o| match o {
            Outcome::Event(e) => Some(e),
            Outcome::Order(_) => None,
        })
        .collect()
}

fn hand_over(om: &mut OrderManager, router: &LiveRouter) {
    for o in om.take_live_orders() {
        assert!(router.send(o));
    }
    for c in om.take_live_cancels() {
        assert!(router.cancel(c));
    }
    for m in om.take_live_modifies() {
        assert!(router.modify(m));
    }
}

fn quote(ts: i64, price: Decimal) -> tradehost::bus::message::QuotesMessage {
    quote_of("RELIANCE", ts, price)
}

fn quote_of(instrument: &str, ts: i64, price: Decimal) -> tradehost::bus::message::QuotesMessage {
    let q = tradehost::bus::message::Quote {
        instrument: instrument.into(),
        open: price,
        high: price,
        low: price,
        close: price,
        bid: None,
        ask: None,
    };
    tradehost::bus::message::QuotesMessage {
        v: SCHEMA_VERSION,
        kind: "quotes".into(),
        id: format!("{instrument}/{ts}"),
        ts,
        quotes: vec![q],
        after_signal: None,
        last: false,
    }
}

/// RELIANCE at 100 a minute before `T`, then the strategy buys: the entry fills and the
/// position's protective stop is accepted at the broker.
async fn enter_reliance_at_100(
    om: &mut OrderManager,
    router: &LiveRouter,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<RouterOutput>,
) {
    let s = rel_signal("RELIANCE");
    om.on_quotes(&quote(T - 60_000, dec!(100))).unwrap();
    om.on_signal(&s).unwrap();
    hand_over(om, router);
    pump(om, router, rx, |u| matches!(u, LiveUpdate::Filled { .. })).await;
    pump(om, router, rx, |u| matches!(u, LiveUpdate::Accepted { .. })).await;
}

/// The price (at the mock under `key`, and in the quotes) rises to 103, then 106, a minute
/// apart; each time the trail tightens the stop and the broker's protective order follows
/// (`changes` counts the broker's modifications). Returns the exchange time reached.
async fn trail_to_106(
    om: &mut OrderManager,
    router: &LiveRouter,
    mock: &MockServer,
    key: &str,
    changes: impl Fn(&MockServer) -> usize,
) -> i64 {
    let mut t = T;
    for price in [dec!(103), dec!(106)] {
        t += 60_000;
        mock.state().ltp.insert(key.into(), price);
        let want = changes(mock) + 1;
        om.on_quotes(&quote(t, price)).unwrap();
        hand_over(om, router);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while changes(mock) < want {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the broker's protective order modified at {price}: {:?}",
                mock.state()
                    .requests
                    .iter()
                    .map(|r| format!("{} {} {}", r.method, r.path, r.body))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_position_keeps_a_protective_stop_at_the_broker_that_trails_and_is_cancelled_before_the_host_exits()
 {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockServer::start_kind(Flavor::Kite, "kite-key", "kite-token");
    mock.state().ltp.insert("RELIANCE".into(), dec!(100));
    let kite: Arc<dyn Broker> = Arc::new(
        Kite::new(
            &mock.url,
            Secret::new("kite-key"),
            Secret::new("kite-token"),
            Duration::from_secs(2),
        )
        .unwrap(),
    );
    // Intraday: the protective stop is an SL-M, a day order (a delivery position's is a GTT, below).
    let config = Arc::new(
        Config::parse(
            &dir.path().join("pipelines.toml"),
            &PROTECTED.replace("product = \"cnc\"", "product = \"mis\""),
        )
        .unwrap(),
    );
    let mut om = OrderManager::open(
        &dir.path().join("journal.sqlite"),
        config,
        tradehost::domain::TradingMode::Live,
    )
    .unwrap();
    om.set_live_accounts(HashSet::from(["kite-1".to_owned()]));
    let link = AccountLink {
        account: "kite-1".into(),
        broker: kite,
        product: Product::Mis,
        protection_pct: Decimal::from(2),
        algo_id: None,
        orders_per_sec: 10,
        margin_check: true,
    };
    let (router, mut rx) = kite_router(dir.path(), "protective", RELIANCE_CSV, link, None).await;

    // The entry fills at 100: the stop is 99 (the 1 % trail is tighter than the 2 % stop), and an SL-M rests at the broker there.
    enter_reliance_at_100(&mut om, &router, &mut rx).await;
    let protective = {
        let st = mock.state();
        assert_eq!(st.orders.len(), 2, "the entry and its protective stop");
        let p = st.orders[1].clone();
        assert_eq!(
            (
                p.fields["order_type"].as_str(),
                p.fields["trigger_price"].as_str(),
                p.side.as_str(),
                p.qty,
                p.status.as_str()
            ),
            ("SL-M", "99", "SELL", dec!(10), "TRIGGER PENDING")
        );
        p
    };
    // The price rises: the trail tightens the stop, and the broker's order follows, twice.
    let mut t = trail_to_106(&mut om, &router, &mock, "RELIANCE", |m| {
        m.state().modifications.len()
    })
    .await;
    // A dip that keeps above the stop loosens nothing.
    t += 60_000;
    mock.state().ltp.insert("RELIANCE".into(), dec!(105.5));
    om.on_quotes(&quote(t, dec!(105.5))).unwrap();
    hand_over(&mut om, &router);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let triggers: Vec<String> = mock
        .state()
        .modifications
        .iter()
        .map(|(id, f)| {
            assert_eq!(id, &protective.id);
            f["trigger_price"].clone()
        })
        .collect();
    assert_eq!(
        triggers,
        vec!["101.95", "104.95"],
        "1 % behind 103 and 106, to the tick; never loosened"
    );
    // The host flattens the account: the protective stop is cancelled first, then the close goes.
    om.flatten("kite-1", "cmd-1").unwrap();
    hand_over(&mut om, &router);
    assert_eq!(
        mock.state().orders.len(),
        2,
        "the close waits for the cancel"
    );
    pump(&mut om, &router, &mut rx, |u| {
        matches!(u, LiveUpdate::Filled { .. })
    })
    .await;
    let st = mock.state();
    assert_eq!(
        st.orders
            .iter()
            .map(|o| (o.side.as_str(), o.status.as_str()))
            .collect::<Vec<_>>(),
        vec![
            ("BUY", "COMPLETE"),
            ("SELL", "CANCELLED"),
            ("SELL", "COMPLETE")
        ]
    );
    let cancel_at = st
        .requests
        .iter()
        .position(|r| r.method == "DELETE")
        .expect("a cancel");
    let close_at = st
        .requests
        .iter()
        .rposition(|r| r.method == "POST" && r.path.starts_with("/orders/regular"))
        .unwrap();
    assert!(
        cancel_at < close_at,
        "cancelled before the close was placed"
    );
    drop(st);
    assert!(om.positions_of("kite-1").unwrap().is_empty());
}

#[test]
fn the_host_killed_with_a_delivery_position_open_leaves_its_gtt_stop_standing_and_a_restart_places_no_second()
 {
    use std::process::{Command, Stdio};
    let redis = tradehost_tests::RedisServer::start();
    let broker = MockServer::start_kind(Flavor::Kite, "kite-key-protect", "kite-token-protect");
    broker.state().ltp.insert("RELIANCE".into(), dec!(960));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kite.csv"), RELIANCE_CSV).unwrap();
    // RELIANCE falls for an hour, then rises all day: one crossover up, no way down. A
    // delivery position opens once and stays, its 5 % stop resting at the broker.
    let account = format!(
        "id = \"kite-1\"\nbroker = \"kite\"\nbase_url = \"{}\"\norder_updates = \"poll\"\ncapital = 10000000\nmode = \"long\"\nproduct = \"cnc\"\nsizing = {{ kind = \"fixed\", qty = 10 }}\nrisk = {{ cooldown_secs = 0 }}\nexits = {{ stop_loss_pct = 5 }}",
        broker.url
    );
    let live = "timeout_ms = 5000\npoll_ms = 50\nbackoff_ms = 50\ncancel_after_secs = 0\ninstruments = { kite = \"kite.csv\" }";
    let config = tradehost_tests::reliance_day_config(
        dir.path(),
        |i| {
            if i < 60 {
                1000.0 - f64::from(i)
            } else {
                940.0 + f64::from(i - 60)
            }
        },
        live,
        "kite-1",
        &account,
    );
    let run = |args: &[&str]| {
        Command::new(tradehost_tests::tradehost_bin())
            .args(["run", "--quiet", "--config"])
            .arg(&config)
            .args(args)
            .env("REDIS_URL", redis.url())
            .env("TRADING_MODE", "live")
            .env_remove("TRADEHOST_SECRETS")
            .env("TRADEHOST_KITE_1_API_KEY", "kite-key-protect")
            .env("TRADEHOST_KITE_1_ACCESS_TOKEN", "kite-token-protect")
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // A delivery position: its stop is a GTT, which outlives the session as well as the host.
    let stops = |b: &MockServer| b.state().gtts.clone();
    let mut first = run(&[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while stops(&broker).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no protective stop reached the broker"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    first.kill().unwrap(); // SIGKILL: no goodbye, nothing cancelled
    first.wait().unwrap();
    let resting = stops(&broker);
    assert_eq!(resting.len(), 1);
    let entry = broker
        .state()
        .orders
        .iter()
        .find(|o| o.side == "BUY")
        .cloned()
        .expect("the entry");
    let fill = entry.average_price.expect("the entry filled");
    let p = &resting[0];
    assert_eq!(
        (p.status.as_str(), p.side.as_str(), p.qty),
        ("active", "SELL", dec!(10)),
        "the stop stands at the broker with the host gone"
    );
    let trigger = p.trigger;
    assert!(
        trigger < fill && trigger >= fill * dec!(0.94),
        "5 % under the fill {fill}: {trigger}"
    );
    assert!(
        p.last_price > trigger,
        "it fires when the price falls to the trigger: {p:?}"
    );
    assert!(
        p.limit < trigger && p.limit >= trigger * dec!(0.97),
        "its limit 2 % (the account's protection) under the trigger: {p:?}"
    );

    // The restart finds it (by its id, or, never journaled, by its terms) and places no second one.
    let second = run(&["--until-idle", "2"]).wait_with_output().unwrap();
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let after = stops(&broker);
    assert_eq!(
        after.len(),
        1,
        "one protective stop at the broker: {after:?}"
    );
    assert_eq!(
        (after[0].status.as_str(), after[0].trigger),
        ("active", trigger),
        "still resting, at the same trigger"
    );
    let db = rusqlite::Connection::open(dir.path().join("journal.sqlite")).unwrap();
    let journaled: Vec<(String, String, Option<String>)> = db
        .prepare("SELECT client_order_id, state, broker_order_id FROM orders WHERE pipeline = 'protective-stop'")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(journaled.len(), 1, "{journaled:?}");
    assert_eq!(
        (journaled[0].1.as_str(), journaled[0].2.clone()),
        ("accepted", Some(format!("gtt:{}", after[0].id)))
    );
    let held: String = db
        .query_row(
            "SELECT qty FROM positions WHERE account = 'kite-1' AND instrument = 'RELIANCE'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(held.parse::<Decimal>().unwrap(), dec!(10));
}

/// A strategy's limit entry at Kite: it rests below the market (not cancelled as a stale
/// market entry would be), the trader moves it with a `modify` and it fills when the market
/// comes to it; a second one the trader cancels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_entry_rests_at_kite_is_moved_by_hand_fills_when_reached_and_another_is_cancelled()
{
    use tradehost::bus::message::OrderTerms;
    let dir = tempfile::tempdir().unwrap();
    let mock = MockServer::start(Flavor::Kite, "kite-key", "kite-token");
    mock.state().ltp.insert("RELIANCE".into(), dec!(100));
    mock.state().limits_rest = true;
    let kite: Arc<dyn Broker> = Arc::new(
        Kite::new(
            &mock.url,
            Secret::new("kite-key"),
            Secret::new("kite-token"),
            Duration::from_secs(2),
        )
        .unwrap(),
    );
    let config = Arc::new(
        Config::parse(
            &dir.path().join("pipelines.toml"),
            &PROTECTED.replace("exits = { stop_loss_pct = 2, trailing_pct = 1 }", ""),
        )
        .unwrap(),
    );
    let mut om = OrderManager::open(
        &dir.path().join("journal.sqlite"),
        config,
        tradehost::domain::TradingMode::Live,
    )
    .unwrap();
    om.set_live_accounts(HashSet::from(["kite-1".to_owned()]));
    // Stale market entries are cancelled after 300 ms here: a limit is not one.
    let link = AccountLink {
        account: "kite-1".into(),
        broker: kite,
        product: Product::Cnc,
        protection_pct: Decimal::from(2),
        algo_id: None,
        orders_per_sec: 10,
        margin_check: true,
    };
    let (router, mut rx) = kite_router(
        dir.path(),
        "limit-entry",
        RELIANCE_CSV,
        link,
        Some(Duration::from_millis(300)),
    )
    .await;

    let limit_signal = |ts: i64, price: Decimal| {
        let mut s = signal();
        (s.pipeline, s.instrument, s.ts, s.id) = (
            "rel".into(),
            "RELIANCE".into(),
            ts,
            SignalMessage::make_id("rel", "ma-crossover", "0.1.0", ts, 0),
        );
        s.order = Some(OrderTerms {
            kind: "LIMIT".into(),
            price: Some(price),
            trigger: None,
            validity: None,
        });
        s
    };
    om.on_quotes(&quote(T - 60_000, dec!(100))).unwrap();
    let s = limit_signal(T, dec!(95.02));
    om.on_signal(&s).unwrap();
    hand_over(&mut om, &router);
    pump(&mut om, &router, &mut rx, |u| {
        matches!(u, LiveUpdate::Accepted { .. })
    })
    .await;
    {
        let st = mock.state();
        assert_eq!(st.orders.len(), 1);
        let o = &st.orders[0];
        assert_eq!(
            (
                o.fields["order_type"].as_str(),
                o.fields["price"].as_str(),
                o.status.as_str()
            ),
            ("LIMIT", "95", "OPEN"),
            "a buy's limit down to the tick, resting"
        );
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        mock.state().orders[0].status,
        "OPEN",
        "not cancelled for want of a fill"
    );
    assert!(mock.state().requests.iter().all(|r| r.method != "DELETE"));

    // The trader moves it up to 97.5: the broker's order follows.
    let coid = tradehost::subscriber::client_order_id(&s.id, "kite-1");
    let out = om
        .modify_order(&coid, Some(dec!(97.5)), None, "cmd-m")
        .unwrap()
        .unwrap();
    assert_eq!(out.len(), 1, "an order_modified event");
    hand_over(&mut om, &router);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while mock.state().modifications.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "modified at the broker"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(mock.state().modifications[0].1["price"], "97.5");
    // The market comes down to 97: filled there.
    mock.state().ltp.insert("RELIANCE".into(), dec!(97));
    pump(&mut om, &router, &mut rx, |u| {
        matches!(u, LiveUpdate::Filled { .. })
    })
    .await;
    assert_eq!(
        om.positions_of("kite-1").unwrap().get("RELIANCE"),
        Some(&dec!(10))
    );

    // A sell limit far above, to close: the trader cancels it.
    let mut s2 = limit_signal(T + 120_000, dec!(150));
    s2.side = "sell".into();
    om.on_signal(&s2).unwrap();
    hand_over(&mut om, &router);
    pump(&mut om, &router, &mut rx, |u| {
        matches!(u, LiveUpdate::Accepted { .. })
    })
    .await;
    let coid2 = tradehost::subscriber::client_order_id(&s2.id, "kite-1");
    assert_eq!(
        om.cancel_order(&coid2, "cmd-c").unwrap(),
        Ok(vec![]),
        "asked of the broker; the journal follows its report"
    );
    hand_over(&mut om, &router);
    pump(&mut om, &router, &mut rx, |u| {
        matches!(u, LiveUpdate::Cancelled { .. })
    })
    .await;
    assert_eq!(mock.state().orders[1].status, "CANCELLED");
    assert!(
        om.cancel_order(&coid2, "cmd-c2")
            .unwrap()
            .unwrap_err()
            .contains("cancelled")
    );
    assert_eq!(
        om.positions_of("kite-1").unwrap().get("RELIANCE"),
        Some(&dec!(10)),
        "the cancelled close sold nothing"
    );
}

/// A delivery position's protective stop at Kite is a GTT (an SL-M would lapse at the
/// close): placed at the stop, modified as the trail tightens, and when the market falls
/// to it Kite places its order, which fills and closes the position in the journal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_position_is_protected_by_a_gtt_that_trails_and_closes_it_when_the_market_falls()
{
    let dir = tempfile::tempdir().unwrap();
    let mock = MockServer::start_kind(Flavor::Kite, "kite-key", "kite-token");
    mock.state().ltp.insert("RELIANCE".into(), dec!(100));
    let kite: Arc<dyn Broker> = Arc::new(
        Kite::new(
            &mock.url,
            Secret::new("kite-key"),
            Secret::new("kite-token"),
            Duration::from_secs(2),
        )
        .unwrap(),
    );
    let config = Arc::new(Config::parse(&dir.path().join("pipelines.toml"), PROTECTED).unwrap());
    let mut om = OrderManager::open(
        &dir.path().join("journal.sqlite"),
        config,
        tradehost::domain::TradingMode::Live,
    )
    .unwrap();
    om.set_live_accounts(HashSet::from(["kite-1".to_owned()]));
    let link = AccountLink {
        account: "kite-1".into(),
        broker: kite,
        product: Product::Cnc,
        protection_pct: Decimal::from(2),
        algo_id: None,
        orders_per_sec: 10,
        margin_check: true,
    };
    let (router, mut rx) = kite_router(dir.path(), "gtt", RELIANCE_CSV, link, None).await;

    enter_reliance_at_100(&mut om, &router, &mut rx).await;
    {
        let st = mock.state();
        assert_eq!(st.orders.len(), 1, "the entry; the stop is no order");
        assert_eq!(st.gtts.len(), 1);
        let g = &st.gtts[0];
        // The trail (1 %) is tighter than the stop (2 %): 99; its limit 2 % lower, to the tick.
        assert_eq!(
            (
                g.status.as_str(),
                g.side.as_str(),
                g.qty,
                g.trigger,
                g.limit
            ),
            ("active", "SELL", dec!(10), dec!(99), dec!(97))
        );
        assert!(g.last_price > g.trigger, "fires on a fall");
        let post = st
            .requests
            .iter()
            .find(|r| r.method == "POST" && r.path == "/gtt/triggers")
            .expect("placed");
        assert!(
            post.body.contains("type=single")
                && post.body.contains("condition=")
                && post.body.contains("orders="),
            "{}",
            post.body
        );
    }
    trail_to_106(&mut om, &router, &mock, "RELIANCE", |m| {
        m.state().gtt_modifications.len()
    })
    .await;
    let triggers: Vec<Decimal> = mock
        .state()
        .gtt_modifications
        .iter()
        .map(|(_, t)| *t)
        .collect();
    assert_eq!(
        triggers,
        vec![dec!(101.95), dec!(104.95)],
        "1 % behind 103 and 106, to the tick"
    );
    // The market falls through the stop with the host running or not: Kite places the order; it fills.
    mock.state().ltp.insert("RELIANCE".into(), dec!(104));
    pump(&mut om, &router, &mut rx, |u| {
        matches!(u, LiveUpdate::Filled { .. })
    })
    .await;
    let st = mock.state();
    assert_eq!(st.gtts[0].status, "triggered");
    let placed = st
        .orders
        .iter()
        .find(|o| Some(&o.id) == st.gtts[0].order_id.as_ref())
        .expect("the GTT's order");
    assert_eq!(
        (
            placed.side.as_str(),
            placed.status.as_str(),
            placed.average_price
        ),
        ("SELL", "COMPLETE", Some(dec!(104)))
    );
    drop(st);
    assert!(
        om.positions_of("kite-1").unwrap().is_empty(),
        "the GTT's fill closed the position"
    );
}

/// A strategy's reversal (`mode = "both"`) or exit decided while the protective stop rests
/// waits for its cancel; the stop fills first, so the reversal sells only the new short, not
/// the long the stop already sold, and the exit sells nothing (no accidental short).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reversal_or_exit_that_waited_on_a_protective_stop_that_filled_sells_only_what_is_left_to_do()
 {
    for (mode, side) in [("both", "sell"), ("long", "exit")] {
        let dir = tempfile::tempdir().unwrap();
        let mock = MockServer::start_kind(Flavor::Kite, "kite-key", "kite-token");
        mock.state().ltp.insert("RELIANCE".into(), dec!(100));
        let kite: Arc<dyn Broker> = Arc::new(
            Kite::new(
                &mock.url,
                Secret::new("kite-key"),
                Secret::new("kite-token"),
                Duration::from_secs(2),
            )
            .unwrap(),
        );
        let body = PROTECTED
            .replace("product = \"cnc\"", "product = \"mis\"")
            .replace("mode = \"long\"", &format!("mode = \"{mode}\""));
        let config = Arc::new(Config::parse(&dir.path().join("pipelines.toml"), &body).unwrap());
        let mut om = OrderManager::open(
            &dir.path().join("journal.sqlite"),
            config,
            tradehost::domain::TradingMode::Live,
        )
        .unwrap();
        om.set_live_accounts(HashSet::from(["kite-1".to_owned()]));
        let link = AccountLink {
            account: "kite-1".into(),
            broker: kite,
            product: Product::Mis,
            protection_pct: Decimal::from(2),
            algo_id: None,
            orders_per_sec: 10,
            margin_check: true,
        };
        let (router, mut rx) = kite_router(
            dir.path(),
            &format!("waited-{side}"),
            RELIANCE_CSV,
            link,
            None,
        )
        .await;
        enter_reliance_at_100(&mut om, &router, &mut rx).await;
        assert_eq!(
            mock.state().orders[1].status,
            "TRIGGER PENDING",
            "the protective SL-M rests"
        );

        // The strategy reverses (long 10 → short 10: one sell of 20) or exits (a sell of 10)
        // while the stop rests: held for the stop's cancel.
        let mut next = signal();
        (next.pipeline, next.instrument, next.side, next.ts) =
            ("rel".into(), "RELIANCE".into(), side.into(), T + 60_000);
        next.id = SignalMessage::make_id("rel", "ma-crossover", "0.1.0", next.ts, 1);
        om.on_signal(&next).unwrap();
        assert_eq!(mock.state().orders.len(), 2, "{side}: it waits");
        // Before the cancel reaches the broker, the market falls through the stop: it fills.
        mock.state().ltp.insert("RELIANCE".into(), dec!(98));
        pump(&mut om, &router, &mut rx, |u| {
            matches!(u, LiveUpdate::Filled { .. })
        })
        .await;
        if side == "sell" {
            pump(&mut om, &router, &mut rx, |u| {
                matches!(u, LiveUpdate::Filled { .. })
            })
            .await;
        } else {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let st = mock.state();
        let sells: Vec<(Decimal, &str)> = st
            .orders
            .iter()
            .filter(|o| o.side == "SELL")
            .map(|o| (o.qty, o.status.as_str()))
            .collect();
        let (want, held) = if side == "sell" {
            (
                vec![(dec!(10), "COMPLETE"), (dec!(10), "COMPLETE")],
                Some(dec!(-10)),
            )
        } else {
            (vec![(dec!(10), "COMPLETE")], None)
        };
        assert_eq!(
            sells, want,
            "{side}: the stop sold the long; what is left of the strategy's order, and no more"
        );
        drop(st);
        assert_eq!(
            om.positions_of("kite-1").unwrap().get("RELIANCE").copied(),
            held,
            "{side}"
        );
        let db = rusqlite::Connection::open(dir.path().join("journal.sqlite")).unwrap();
        let (qty, state): (String, String) = db
            .query_row(
                "SELECT qty, state FROM orders WHERE pipeline = 'rel' AND side = 'sell'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        let want = if side == "sell" {
            ("10", "filled")
        } else {
            ("10", "cancelled")
        };
        assert_eq!(
            (qty.as_str(), state.as_str()),
            want,
            "{side}: the strategy's order as journaled"
        );
    }
}

/// Upstox's instrument master row for RELIANCE: its orders and GTTs name it by this key.
const UPSTOX_RELIANCE: &str = "NSE_EQ|INE002A01018";
const UPSTOX_CSV: &str = "instrument_key,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,lot_size,instrument_type,option_type,exchange
NSE_EQ|INE002A01018,2885,RELIANCE,RELIANCE INDUSTRIES,0,,,0.05,1,EQUITY,,NSE_EQ
";

/// A mock broker of `flavor` and an adapter logged in to it (Upstox or OpenAlgo).
fn gtt_broker(flavor: Flavor) -> (MockServer, Arc<dyn Broker>, &'static str) {
    match flavor {
        Flavor::Upstox => {
            let mock = MockServer::start_kind(Flavor::Upstox, "", "upstox-token-gtt");
            let b = tradehost::brokers::upstox::Upstox::new(
                &mock.url,
                Secret::new("upstox-token-gtt"),
                Duration::from_secs(2),
            )
            .unwrap();
            (mock, Arc::new(b), UPSTOX_RELIANCE)
        }
        _ => {
            let mock = MockServer::start_kind(Flavor::OpenAlgo, "", "openalgo-key-gtt");
            let b = tradehost::brokers::openalgo::OpenAlgo::new(
                &mock.url,
                Secret::new("openalgo-key-gtt"),
                "tradehost",
                Duration::from_secs(2),
            )
            .unwrap();
            (mock, Arc::new(b), "RELIANCE")
        }
    }
}

/// At Upstox and OpenAlgo, as at Kite: a delivery position's stop is a GTT, placed in each
/// broker's documented form, modified as the trail tightens, and then either cancelled
/// before the host's own close goes, or fired by a fall (the order it placed closes the
/// position; OpenAlgo's GTT book no longer lists a fired GTT, so its order is found by its shape).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_stop_at_upstox_and_openalgo_is_a_gtt_that_trails_and_is_cancelled_before_a_close_or_fires_on_a_fall()
 {
    for flavor in [Flavor::Upstox, Flavor::OpenAlgo] {
        for flatten in [true, false] {
            let name = if flavor == Flavor::Upstox {
                "upstox"
            } else {
                "openalgo"
            };
            let dir = tempfile::tempdir().unwrap();
            let (mock, broker, key) = gtt_broker(flavor);
            mock.state().ltp.insert(key.into(), dec!(100));
            let config = Arc::new(
                Config::parse(
                    &dir.path().join("pipelines.toml"),
                    &PROTECTED.replace("broker = \"kite\"", &format!("broker = \"{name}\"")),
                )
                .unwrap(),
            );
            let mut om = OrderManager::open(
                &dir.path().join("journal.sqlite"),
                config,
                tradehost::domain::TradingMode::Live,
            )
            .unwrap();
            om.set_live_accounts(HashSet::from(["kite-1".to_owned()]));
            let link = AccountLink {
                account: "kite-1".into(),
                broker,
                product: Product::Cnc,
                protection_pct: Decimal::from(2),
                algo_id: None,
                orders_per_sec: 10,
                margin_check: false,
            };
            let master = (flavor == Flavor::Upstox).then_some(("upstox", UPSTOX_CSV));
            let (router, mut rx) = live_router(
                dir.path(),
                &format!("gtt-{name}-{flatten}"),
                master,
                link,
                None,
            )
            .await;

            enter_reliance_at_100(&mut om, &router, &mut rx).await;
            {
                let st = mock.state();
                assert_eq!(
                    st.orders.len(),
                    1,
                    "{name}: the entry; the stop is no order"
                );
                assert_eq!(st.gtts.len(), 1, "{name}");
                let g = &st.gtts[0];
                assert_eq!(
                    (
                        g.status.as_str(),
                        g.side.as_str(),
                        g.qty,
                        g.trigger,
                        g.symbol.as_str()
                    ),
                    ("active", "SELL", dec!(10), dec!(99), key),
                    "{name}"
                );
                assert!(g.last_price > g.trigger, "{name}: fires on a fall");
                let (path, want) = match flavor {
                    Flavor::Upstox => (
                        "/v3/order/gtt/place",
                        json!({ "type": "SINGLE", "product": "D", "transaction_type": "SELL", "instrument_token": key, "rules": [{ "strategy": "ENTRY", "trigger_type": "BELOW", "trigger_price": 99.0 }] }),
                    ),
                    _ => (
                        "/api/v1/placegttorder",
                        json!({ "trigger_type": "SINGLE", "product": "CNC", "action": "SELL", "symbol": "RELIANCE", "exchange": "NSE", "pricetype": "MARKET", "triggerprice_sl": 99.0, "triggerprice_tg": 0.0 }),
                    ),
                };
                let post = st
                    .requests
                    .iter()
                    .find(|r| r.path == path)
                    .unwrap_or_else(|| panic!("{name}: placed at {path}"));
                let body: serde_json::Value = serde_json::from_str(&post.body).unwrap();
                for (k, v) in want.as_object().unwrap() {
                    assert_eq!(&body[k], v, "{name}: {k} in {}", post.body);
                }
            }
            // The trail tightens the GTT twice.
            trail_to_106(&mut om, &router, &mock, key, |m| {
                m.state().gtt_modifications.len()
            })
            .await;
            let triggers: Vec<Decimal> = mock
                .state()
                .gtt_modifications
                .iter()
                .map(|(_, t)| *t)
                .collect();
            assert_eq!(
                triggers,
                vec![dec!(101.95), dec!(104.95)],
                "{name}: 1 % behind 103 and 106, to the tick"
            );
            if flatten {
                // The host closes the position: the GTT is cancelled first, then the close goes.
                om.flatten("kite-1", "cmd-1").unwrap();
                hand_over(&mut om, &router);
                pump(&mut om, &router, &mut rx, |u| {
                    matches!(u, LiveUpdate::Filled { .. })
                })
                .await;
                let st = mock.state();
                assert_ne!(st.gtts[0].status, "active", "{name}: the GTT is gone");
                assert_eq!(
                    st.orders
                        .iter()
                        .map(|o| (o.side.as_str(), o.status.as_str()))
                        .collect::<Vec<_>>(),
                    vec![("BUY", "COMPLETE"), ("SELL", "COMPLETE")],
                    "{name}"
                );
                let cancel_at = st
                    .requests
                    .iter()
                    .position(|r| {
                        r.path.contains("cancelgttorder")
                            || r.path.starts_with("/v3/order/gtt/cancel")
                    })
                    .expect("the GTT cancelled");
                let close_at = st
                    .requests
                    .iter()
                    .rposition(|r| r.path.ends_with("/placeorder") || r.path == "/v3/order/place")
                    .unwrap();
                assert!(
                    cancel_at < close_at,
                    "{name}: cancelled before the close was placed"
                );
            } else {
                // The market falls through the stop: the broker places the order; it fills.
                mock.state().ltp.insert(key.into(), dec!(104));
                pump(&mut om, &router, &mut rx, |u| {
                    matches!(u, LiveUpdate::Filled { .. })
                })
                .await;
                let st = mock.state();
                assert_eq!(st.gtts[0].status, "triggered", "{name}");
                let placed = st
                    .orders
                    .iter()
                    .find(|o| Some(&o.id) == st.gtts[0].order_id.as_ref())
                    .expect("the GTT's order");
                assert_eq!(
                    (
                        placed.side.as_str(),
                        placed.status.as_str(),
                        placed.average_price
                    ),
                    ("SELL", "COMPLETE", Some(dec!(104))),
                    "{name}"
                );
            }
            assert!(
                om.positions_of("kite-1").unwrap().is_empty(),
                "{name}: the position is closed"
            );
        }
    }
}

/// A GTT that fired and filled while no one was looking (the host down): Upstox no longer
/// returns a completed GTT and OpenAlgo's GTT book no longer lists a fired one, so each is
/// followed to the order it placed, found by its shape. A GTT the host cancelled is
/// cancelled at once; one gone at the broker with no order after it, after a few reads.
/// A restart that never journaled a GTT's id finds it by its terms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gtt_that_fired_unseen_is_followed_to_its_order_and_one_found_by_its_terms_after_a_restart()
 {
    use tradehost::brokers::{BrokerStatus, OrderKind, Validity};
    for flavor in [Flavor::Upstox, Flavor::OpenAlgo] {
        let (mock, broker, key) = gtt_broker(flavor);
        mock.state().ltp.insert(key.into(), dec!(100));
        let now = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap();
        let req = |coid: &str, trigger: Decimal| OrderRequest {
            client_order_id: coid.into(),
            submitted_at: Some(now),
            symbol: "RELIANCE".into(),
            segment: Segment::Equity,
            token: (flavor == Flavor::Upstox).then(|| UPSTOX_RELIANCE.to_owned()),
            side: OrderSide::Sell,
            qty: dec!(10),
            product: Product::Cnc,
            reference_price: Some(dec!(100)),
            protection_pct: Decimal::from(2),
            algo_id: None,
            kind: OrderKind::StopMarket { trigger },
            validity: Validity::Gtt,
            autoslice: false,
        };
        let none = HashSet::new();
        let first = req("th-gtt-1", dec!(99));
        let id = broker.place(&first).await.unwrap();
        assert!(id.starts_with("gtt:"), "{id}");
        // A restart that never journaled the id finds it by its terms; claimed, it is not found again.
        let found = broker
            .find(&first, &none)
            .await
            .unwrap()
            .expect("found by its terms");
        assert_eq!(
            (found.order_id.as_str(), found.status),
            (id.as_str(), BrokerStatus::Open)
        );
        assert_eq!(
            broker
                .find(&first, &HashSet::from([id.clone()]))
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            broker
                .find(&req("th-gtt-x", dec!(98)), &none)
                .await
                .unwrap(),
            None,
            "another trigger is another GTT"
        );

        // It fires and its order fills, unseen; then the market comes back.
        mock.state().ltp.insert(key.into(), dec!(98.5));
        let _ = broker.status(&id).await; // the broker's own read fires it
        let child = mock.state().gtts[0].order_id.clone().expect("fired");
        let _ = broker.status(&child).await; // and the exchange fills it
        mock.state().ltp.insert(key.into(), dec!(100));
        assert_eq!(
            mock.state()
                .orders
                .iter()
                .find(|o| o.id == child)
                .map(|o| o.status.clone())
                .as_deref(),
            Some("COMPLETE")
        );
        let followed = broker.follow(&id, &first, &none).await.unwrap();
        assert_eq!(
            (followed.status, followed.filled_qty, followed.average_price),
            (BrokerStatus::Complete, dec!(10), Some(dec!(98.5))),
            "{flavor:?}: {followed:?}"
        );
        assert!(followed.message.contains(&child), "{}", followed.message);

        // Cancelled by the host: cancelled at the first read.
        let second = req("th-gtt-2", dec!(97));
        let id2 = broker.place(&second).await.unwrap();
        broker.cancel(&id2).await.unwrap();
        assert_eq!(
            broker
                .follow(&id2, &second, &HashSet::from([child.clone()]))
                .await
                .unwrap()
                .status,
            BrokerStatus::Cancelled
        );

        // Deleted at the broker by hand, no order after it.
        let third = req("th-gtt-3", dec!(96));
        let id3 = broker.place(&third).await.unwrap();
        mock.state().gtts.last_mut().unwrap().status = if flavor == Flavor::Upstox {
            "cancelled".into()
        } else {
            "deleted".into()
        };
        let mut reads = Vec::new();
        for _ in 0..3 {
            reads.push(
                broker
                    .follow(&id3, &third, &HashSet::from([child.clone()]))
                    .await
                    .unwrap()
                    .status,
            );
        }
        match flavor {
            // Upstox says so in the GTT's rule.
            Flavor::Upstox => assert_eq!(reads, vec![BrokerStatus::Cancelled; 3]),
            // OpenAlgo's book just stops listing it: working until a few reads find no order from it.
            _ => assert_eq!(
                reads,
                vec![
                    BrokerStatus::Open,
                    BrokerStatus::Open,
                    BrokerStatus::Cancelled
                ]
            ),
        }
    }
}

/// An account that lets Kite slice: the 5,000-unit order goes whole with `autoslice=true`,
/// Kite places three slices below the freeze quantity (each with the order's tag), and the
/// journal keeps one order, filled in full once every slice is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_that_lets_kite_slice_sends_the_order_whole_and_follows_its_slices() {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockServer::start(Flavor::Kite, "kite-key", "kite-token");
    {
        let mut s = mock.state();
        s.tradable = vec![KITE_SYMBOL.into()];
        s.freeze.insert(KITE_SYMBOL.into(), dec!(1800));
        s.ltp.insert(KITE_SYMBOL.into(), dec!(100));
    }
    let kite: Arc<dyn Broker> = Arc::new(
        Kite::new(
            &mock.url,
            Secret::new("kite-key"),
            Secret::new("kite-token"),
            Duration::from_secs(2),
        )
        .unwrap(),
    );
    let config = Arc::new(
        Config::parse(
            &dir.path().join("pipelines.toml"),
            &CONFIG.replace(
                "algo_id = \"NSE-ALGO-0042\"",
                "algo_id = \"NSE-ALGO-0042\"\nautoslice = true",
            ),
        )
        .unwrap(),
    );
    assert!(config.accounts[0].autoslice);
    let mut om = OrderManager::open(
        &dir.path().join("journal.sqlite"),
        config.clone(),
        tradehost::domain::TradingMode::Live,
    )
    .unwrap();
    om.set_live_accounts(HashSet::from(["kite-1".to_owned()]));
    om.on_signal(&signal()).unwrap();
    let orders = om.take_live_orders();
    assert_eq!(
        orders
            .iter()
            .map(|o| (o.qty, o.autoslice))
            .collect::<Vec<_>>(),
        vec![(dec!(5000), true)],
        "one order, for Kite to slice"
    );

    let account = &config.accounts[0];
    let link = AccountLink {
        account: "kite-1".into(),
        broker: kite,
        product: Product::Mis,
        protection_pct: Decimal::from(2),
        algo_id: account.algo_id.clone(),
        orders_per_sec: account.risk.max_orders_per_sec,
        margin_check: false,
    };
    let (router, mut rx) = kite_router(dir.path(), "autoslice", KITE_CSV, link, None).await;
    let coid = orders[0].client_order_id.clone();
    for o in orders {
        assert!(router.send(o));
    }
    pump(&mut om, &router, &mut rx, |u| {
        matches!(u, LiveUpdate::Filled { .. } | LiveUpdate::Rejected { .. })
    })
    .await;
    assert_eq!(
        om.positions_of("kite-1").unwrap()["NIFTY28MAR2420800CE"],
        dec!(5000)
    );
    let s = mock.state();
    let posts: Vec<&str> = s
        .requests
        .iter()
        .filter(|r| r.method == "POST" && r.path.starts_with("/orders/regular"))
        .map(|r| r.body.as_str())
        .collect();
    assert_eq!(posts.len(), 1, "one placement: {posts:?}");
    assert!(
        posts[0].contains("autoslice=true") && posts[0].contains("quantity=5000"),
        "{}",
        posts[0]
    );
    assert_eq!(
        s.orders
            .iter()
            .map(|o| (o.qty, o.tag.as_deref()))
            .collect::<Vec<_>>(),
        vec![
            (dec!(1800), Some(coid.as_str())),
            (dec!(1800), Some(coid.as_str())),
            (dec!(1400), Some(coid.as_str()))
        ]
    );
    drop(s);
    let db = rusqlite::Connection::open(dir.path().join("journal.sqlite")).unwrap();
    let (state, broker_id, slice): (String, String, String) = db
        .query_row(
            "SELECT state, broker_order_id, slice FROM orders",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((state.as_str(), slice.as_str()), ("filled", "auto"));
    assert!(
        broker_id.starts_with("slice:") && broker_id.matches(',').count() == 2,
        "the three slices named: {broker_id}"
    );
}

/// A Kite account at the mock, an order manager in live mode for it, and its router.
async fn kite_rig(
    dir: &std::path::Path,
    bus: &str,
    config: &str,
    csv: &str,
    product: Product,
) -> (
    MockServer,
    OrderManager,
    LiveRouter,
    tokio::sync::mpsc::UnboundedReceiver<RouterOutput>,
) {
    let mock = MockServer::start_kind(Flavor::Kite, "kite-key", "kite-token");
    let kite: Arc<dyn Broker> = Arc::new(
        Kite::new(
            &mock.url,
            Secret::new("kite-key"),
            Secret::new("kite-token"),
            Duration::from_secs(2),
        )
        .unwrap(),
    );
    let config = Arc::new(Config::parse(&dir.join("pipelines.toml"), config).unwrap());
    let mut om = OrderManager::open(
        &dir.join("journal.sqlite"),
        config,
        tradehost::domain::TradingMode::Live,
    )
    .unwrap();
    om.set_live_accounts(HashSet::from(["kite-1".to_owned()]));
    let link = AccountLink {
        account: "kite-1".into(),
        broker: kite,
        product,
        protection_pct: Decimal::from(2),
        algo_id: None,
        orders_per_sec: 10,
        margin_check: false,
    };
    let (router, rx) = kite_router(dir, bus, csv, link, None).await;
    (mock, om, router, rx)
}

/// An SL-M on the NIFTY option placed straight at the Kite server `mock`: what Kite answers.
async fn sl_m_on_the_option(
    mock: &MockServer,
    side: OrderSide,
    trigger: Decimal,
) -> Result<String, BrokerError> {
    Kite::new(
        &mock.url,
        Secret::new("kite-key"),
        Secret::new("kite-token"),
        Duration::from_secs(2),
    )
    .unwrap()
    .place(&OrderRequest {
        client_order_id: "probe".into(),
        submitted_at: None,
        symbol: KITE_SYMBOL.into(),
        segment: Segment::Derivative,
        token: None,
        side,
        qty: dec!(50),
        product: Product::Mis,
        reference_price: Some(dec!(100)),
        protection_pct: dec!(2),
        algo_id: None,
        kind: tradehost::brokers::OrderKind::StopMarket { trigger },
        validity: tradehost::brokers::Validity::Day,
        autoslice: false,
    })
    .await
}

const OPTION_PROTECTED: &str = r#"
[[accounts]]
id = "kite-1"
broker = "kite"
capital = 10000000
mode = "long"
product = "mis"
sizing = { kind = "fixed", qty = 50 }
risk = { cooldown_secs = 0 }
exits = { stop_loss_pct = 10, trailing_pct = 10 }

[[pipelines]]
id = "nifty-opt"
plugin = "ma_crossover.wasm"
symbols = ["NIFTY28MAR2420800CE"]
accounts = ["kite-1"]
source = { kind = "redis" }
"#;

/// NSE refuses stop-loss-market orders on options (and Kite answers with an input error):
/// an option position's protective stop rests as an SL, its limit the account's buffer
/// below the trigger, and trails as one; the broker never has to refuse it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_option_position_rests_an_sl_stop_at_a_broker_that_refuses_sl_m() {
    let dir = tempfile::tempdir().unwrap();
    let (mock, mut om, router, mut rx) = kite_rig(
        dir.path(),
        "option-sl",
        OPTION_PROTECTED,
        KITE_CSV,
        Product::Mis,
    )
    .await;
    // The mock refuses an SL-M on the option as Kite does.
    let refused = sl_m_on_the_option(&mock, OrderSide::Sell, dec!(90)).await;
    assert!(
        matches!(&refused, Err(BrokerError::Rejected(m)) if m.contains("SL-M")),
        "{refused:?}"
    );
    mock.state().orders.clear();
    mock.state().ltp.insert(KITE_SYMBOL.into(), dec!(100));
    om.on_quotes(&quote_of("NIFTY28MAR2420800CE", T - 60_000, dec!(100)))
        .unwrap();
    om.on_signal(&signal()).unwrap();
    hand_over(&mut om, &router);
    pump(&mut om, &router, &mut rx, |u| {
        matches!(u, LiveUpdate::Filled { .. })
    })
    .await;
    let out = pump(&mut om, &router, &mut rx, |u| {
        matches!(u, LiveUpdate::Accepted { .. } | LiveUpdate::Rejected { .. })
    })
    .await;
    assert!(
        !events(&out).iter().any(|e| matches!(
            e,
            Event::OrderRejected { .. } | Event::ProtectiveStopRefused { .. }
        )),
        "{out:?}"
    );
    {
        let st = mock.state();
        assert_eq!(st.orders.len(), 2, "the entry and its protective stop");
        let p = &st.orders[1];
        assert_eq!(
            (
                p.fields["order_type"].as_str(),
                p.fields["trigger_price"].as_str(),
                p.fields["price"].as_str(),
                p.side.as_str(),
                p.status.as_str()
            ),
            ("SL", "90", "85.5", "SELL", "TRIGGER PENDING"),
            "a stop-limit at the 10 % stop, its limit 5 % of the trigger below it"
        );
    }
    // The premium rises: the trail moves the SL, trigger and limit together, on the tick.
    let mut t = T;
    for price in [dec!(110), dec!(121.3)] {
        t += 60_000;
        mock.state().ltp.insert(KITE_SYMBOL.into(), price);
        om.on_quotes(&quote_of("NIFTY28MAR2420800CE", t, price))
            .unwrap();
        hand_over(&mut om, &router);
        pump(&mut om, &router, &mut rx, |u| {
            matches!(
                u,
                LiveUpdate::Modified { .. } | LiveUpdate::ModifyRefused { .. }
            )
        })
        .await;
    }
    let st = mock.state();
    let moved: Vec<(&str, &str, &str)> = st
        .modifications
        .iter()
        .map(|(_, f)| {
            (
                f["order_type"].as_str(),
                f["trigger_price"].as_str(),
                f["price"].as_str(),
            )
        })
        .collect();
    // 10 % behind 110 is 99, its limit 5 % below: 94.05; behind 121.3 is 109.17, down to the
    // tick 109.15, its limit 103.6925, up to the tick (a sell's limit never worse): 103.7.
    assert_eq!(
        moved,
        vec![("SL", "99", "94.05"), ("SL", "109.15", "103.7")]
    );
    assert!(
        st.orders.iter().all(|o| o.status != "REJECTED"),
        "nothing refused"
    );
    drop(st);
    let stops = om.protective_stops("kite-1").unwrap();
    assert_eq!(stops.len(), 1);
    assert_eq!(
        (
            stops[0].trigger,
            stops[0].price,
            stops[0].wanted_trigger,
            stops[0].modifications
        ),
        (Some(dec!(109.15)), Some(dec!(103.7)), None, 2),
        "the journal holds what the broker took"
    );
}

/// A protective stop the broker refuses for good (here the circuit limit) is not placed
/// again at every price: one alert says the broker holds no stop, and the host's own
/// managed exit still closes the position at the stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protective_stop_refused_for_good_is_one_alert_and_the_managed_exit_still_guards() {
    let dir = tempfile::tempdir().unwrap();
    let (mock, mut om, router, mut rx) = kite_rig(
        dir.path(),
        "stop-refused",
        &PROTECTED.replace("product = \"cnc\"", "product = \"mis\""),
        RELIANCE_CSV,
        Product::Mis,
    )
    .await;
    mock.state().ltp.insert("RELIANCE".into(), dec!(100));
    let circuit = "Trigger price for stoploss sell orders cannot be below the lower circuit price. Please try placing the order with trigger price above 99.50.";
    let s = rel_signal("RELIANCE");
    om.on_quotes(&quote(T - 60_000, dec!(100))).unwrap();
    om.on_signal(&s).unwrap();
    hand_over(&mut om, &router);
    pump(&mut om, &router, &mut rx, |u| {
        matches!(u, LiveUpdate::Filled { .. })
    })
    .await;
    // Refused only once the entry filled: the next placement is the protective stop.
    mock.state()
        .faults
        .push_back(tradehost_tests::brokers::Fault::Reject(circuit.into()));
    let mut out = pump(&mut om, &router, &mut rx, |u| {
        matches!(u, LiveUpdate::Rejected { .. })
    })
    .await;
    // Ten more bars above the stop: nothing is placed again.
    let mut t = T;
    for i in 0..10 {
        t += 60_000;
        let price = dec!(100) + Decimal::from(i % 2) / dec!(10);
        mock.state().ltp.insert("RELIANCE".into(), price);
        out.extend(om.on_quotes(&quote(t, price)).unwrap());
        hand_over(&mut om, &router);
    }
    assert!(rx.try_recv().is_err(), "the router had nothing more to do");
    let refusals: Vec<&Event> = events(&out)
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                Event::ProtectiveStopRefused { .. } | Event::OrderRejected { .. }
            )
        })
        .collect();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert!(
        matches!(refusals[0], Event::ProtectiveStopRefused { permanent: true, reason, .. } if reason.contains("lower circuit")),
        "{refusals:?}"
    );
    assert!(refusals[0].is_alert());
    let placements = mock
        .state()
        .requests
        .iter()
        .filter(|r| r.method == "POST" && r.path.starts_with("/orders/regular"))
        .count();
    assert_eq!(placements, 2, "the entry and one try of its stop");
    // The market falls through the stop (99): the host's own exit closes the position.
    t += 60_000;
    mock.state().ltp.insert("RELIANCE".into(), dec!(98.5));
    om.on_quotes(&quote(t, dec!(98.5))).unwrap();
    until(&mut om, &router, &mut rx, |om| {
        om.positions_of("kite-1").unwrap().is_empty()
    })
    .await;
    let st = mock.state();
    let last = st.orders.last().unwrap();
    assert_eq!(
        (
            last.side.as_str(),
            last.status.as_str(),
            last.fields["order_type"].as_str()
        ),
        ("SELL", "COMPLETE", "MARKET")
    );
}

/// Kite takes 25 modifications of one order. A session that trails the stop 40 times keeps
/// the broker's stop where the journal says it is: near the budget the protective order is
/// cancelled and a fresh one placed (never two resting), and a modification the broker
/// refuses anyway is an alert, with the journal still showing the stop the broker holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_trailed_forty_times_at_kite_stays_where_the_journal_says() {
    let dir = tempfile::tempdir().unwrap();
    let (mock, mut om, router, mut rx) = kite_rig(
        dir.path(),
        "forty",
        &PROTECTED.replace("product = \"cnc\"", "product = \"mis\""),
        RELIANCE_CSV,
        Product::Mis,
    )
    .await;
    mock.state().ltp.insert("RELIANCE".into(), dec!(100));
    enter_reliance_at_100(&mut om, &router, &mut rx).await;
    let resting = |mock: &MockServer| -> Vec<(String, Decimal)> {
        mock.state()
            .orders
            .iter()
            .filter(|o| o.status == "TRIGGER PENDING")
            .map(|o| {
                (
                    o.id.clone(),
                    o.fields["trigger_price"].parse::<Decimal>().unwrap(),
                )
            })
            .collect()
    };
    let mut out = Vec::new();
    let mut t = T;
    for i in 1..=40 {
        // A rising market, a price 3 s of exchange time apart (the trail moves at most every 2 s).
        t += 3_000;
        let price = dec!(100) + Decimal::from(i);
        mock.state().ltp.insert("RELIANCE".into(), price);
        out.extend(om.on_quotes(&quote(t, price)).unwrap());
        // 1 % behind, at the nearest tick (as the existing trail test's 101.95 and 104.95).
        let want = ((price * dec!(0.99) / dec!(0.05)).round() * dec!(0.05)).normalize();
        out.extend(
            until(&mut om, &router, &mut rx, |om| {
                om.protective_stops("kite-1").unwrap().iter().any(|p| {
                    p.state == "accepted" && p.trigger == Some(want) && p.wanted_trigger.is_none()
                })
            })
            .await,
        );
        let at_broker = resting(&mock);
        assert_eq!(
            at_broker.len(),
            1,
            "one resting stop at {price}: {at_broker:?}"
        );
        assert_eq!(
            at_broker[0].1, want,
            "the broker's stop is the journal's at {price}"
        );
    }
    {
        let st = mock.state();
        let mut per_order: std::collections::HashMap<&str, usize> = Default::default();
        for (id, _) in &st.modifications {
            *per_order.entry(id.as_str()).or_default() += 1;
        }
        assert!(
            per_order.values().all(|n| *n < 25),
            "never at Kite's cap: {per_order:?}"
        );
        let placed_stops = st
            .orders
            .iter()
            .filter(|o| o.fields["order_type"] == "SL-M")
            .count();
        assert!(placed_stops >= 2, "replaced at least once: {placed_stops}");
    }
    assert!(
        events(&out)
            .iter()
            .any(|e| matches!(e, Event::ProtectiveStop { action, .. } if action == "replacing"))
    );
    assert!(
        !events(&out).iter().any(|e| matches!(
            e,
            Event::OrderModifyRefused { .. } | Event::OrderRejected { .. }
        )),
        "nothing refused"
    );

    // Someone used the resting stop's modifications elsewhere (Kite's web, another app): the
    // next is refused. The journal keeps the stop the broker holds, an alert says so, and the
    // stop is replaced at the new level.
    let (id, held) = resting(&mock)[0].clone();
    {
        let mut st = mock.state();
        for _ in 0..25 {
            st.modifications.push((id.clone(), Default::default()));
        }
    }
    t += 3_000;
    let price = dec!(145);
    mock.state().ltp.insert("RELIANCE".into(), price);
    om.on_quotes(&quote(t, price)).unwrap();
    let out = until(&mut om, &router, &mut rx, |om| {
        om.protective_stops("kite-1")
            .unwrap()
            .iter()
            .any(|p| p.state == "accepted" && p.trigger == Some(dec!(143.55)))
    })
    .await;
    let refused: Vec<&Event> = events(&out)
        .into_iter()
        .filter(|e| matches!(e, Event::OrderModifyRefused { .. }))
        .collect();
    assert_eq!(refused.len(), 1, "{out:?}");
    assert!(refused[0].is_alert());
    assert!(
        matches!(refused[0], Event::OrderModifyRefused { held_trigger: Some(h), reason, .. }
            if *h == held.to_string() && reason.contains("Maximum allowed order modifications")),
        "{refused:?}"
    );
    let at_broker = resting(&mock);
    assert_eq!(at_broker.len(), 1);
    assert_eq!(at_broker[0].1, dec!(143.55));
    assert_ne!(at_broker[0].0, id, "a fresh order");
}

/// A paper account holding the option pipeline's account (`OPTION_PROTECTED` on paper), the
/// option last at 100 a minute before the signals' time.
fn paper_option_account(dir: &std::path::Path) -> OrderManager {
    let config = Arc::new(
        Config::parse(
            &dir.join("pipelines.toml"),
            &OPTION_PROTECTED.replace("broker = \"kite\"", "broker = \"paper\""),
        )
        .unwrap(),
    );
    let mut om = OrderManager::open(
        &dir.join("journal.sqlite"),
        config,
        tradehost::domain::TradingMode::Paper,
    )
    .unwrap();
    om.on_quotes(&quote_of("NIFTY28MAR2420800CE", T - 60_000, dec!(100)))
        .unwrap();
    om
}

/// The order messages among `out`, as JSON.
fn order_messages(out: &[Outcome]) -> Vec<serde_json::Value> {
    out.iter()
        .filter_map(|o| match o {
            Outcome::Order(m) => serde_json::from_str::<serde_json::Value>(m).ok(),
            Outcome::Event(_) => None,
        })
        .collect()
}

/// The paper venue refuses what the exchange refuses, in the broker's words: an SL-M on
/// an option is rejected on paper with the text Kite answers it with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paper_run_refuses_an_sl_m_on_an_option_with_the_brokers_text() {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockServer::start(Flavor::Kite, "kite-key", "kite-token");
    let live = sl_m_on_the_option(&mock, OrderSide::Buy, dec!(105)).await;
    let Err(BrokerError::Rejected(live_text)) = live else {
        panic!("Kite refuses an SL-M on an option: {live:?}")
    };
    let mut om = paper_option_account(dir.path());
    let mut s = signal();
    s.order = Some(tradehost::bus::message::OrderTerms {
        kind: "SL-M".into(),
        price: None,
        trigger: Some(dec!(105)),
        validity: None,
    });
    let out = om.on_signal(&s).unwrap();
    let rejected: Vec<serde_json::Value> = order_messages(&out)
        .into_iter()
        .filter(|m| m["state"] == "rejected")
        .collect();
    assert_eq!(rejected.len(), 1, "{out:?}");
    // The broker's words, as the live journal keeps them (there after the HTTP status).
    let paper_text = rejected[0]["reason"].as_str().unwrap();
    assert!(
        paper_text.contains("SL-M") && live_text.ends_with(paper_text),
        "paper {paper_text:?}, live {live_text:?}"
    );
    // An SL (stop-limit) on the same option is taken.
    s.id = SignalMessage::make_id("nifty-opt", "ma-crossover", "0.1.0", T + 60_000, 0);
    s.ts = T + 60_000;
    s.order = Some(tradehost::bus::message::OrderTerms {
        kind: "SL".into(),
        price: Some(dec!(106)),
        trigger: Some(dec!(105)),
        validity: None,
    });
    om.on_quotes(&quote_of("NIFTY28MAR2420800CE", T, dec!(100)))
        .unwrap();
    let out = om.on_signal(&s).unwrap();
    assert!(
        out.iter()
            .any(|o| matches!(o, Outcome::Order(m) if m.contains("\"accepted\""))),
        "{out:?}"
    );
}

/// NSE's limit price protection on options, as the paper venue and Kite apply it: a limit
/// 50 % above a ₹100 option's last price is cancelled by the exchange at Kite (taken, then
/// `CANCELLED` with Zerodha's words) and refused on paper with the same words; one within
/// the 40 % band is taken by both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_outside_the_options_price_protection_is_refused_on_paper_as_kite_cancels_it() {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockServer::start(Flavor::Kite, "kite-key", "kite-token");
    mock.state().ltp.insert(KITE_SYMBOL.into(), dec!(100));
    let kite = Kite::new(
        &mock.url,
        Secret::new("kite-key"),
        Secret::new("kite-token"),
        Duration::from_secs(2),
    )
    .unwrap();
    let limit_at = |price| mis_buy_limit(KITE_SYMBOL, dec!(50), price, dec!(100));
    let far = kite
        .place(&limit_at(dec!(150)))
        .await
        .expect("taken at first");
    // The exchange's cancel is what the first read of the order shows.
    let far = kite.status(&far).await.unwrap();
    assert_eq!(
        far.status,
        tradehost::brokers::BrokerStatus::Cancelled,
        "{far:?}"
    );
    let live_text = far.message;
    assert!(
        live_text.contains("limit price protection"),
        "{live_text:?}"
    );
    let near = kite.place(&limit_at(dec!(139))).await.expect("taken");
    let near = kite.status(&near).await.unwrap();
    assert_ne!(
        near.status,
        tradehost::brokers::BrokerStatus::Cancelled,
        "{near:?}"
    );

    let mut om = paper_option_account(dir.path());
    let mut s = signal();
    s.order = Some(tradehost::bus::message::OrderTerms {
        kind: "LIMIT".into(),
        price: Some(dec!(150)),
        trigger: None,
        validity: None,
    });
    let out = order_messages(&om.on_signal(&s).unwrap());
    let rejected: Vec<_> = out.iter().filter(|m| m["state"] == "rejected").collect();
    assert_eq!(rejected.len(), 1, "{out:?}");
    assert_eq!(rejected[0]["reason"].as_str(), Some(live_text.as_str()));
    s.id = SignalMessage::make_id("nifty-opt", "ma-crossover", "0.1.0", T + 60_000, 0);
    s.ts = T + 60_000;
    s.order = Some(tradehost::bus::message::OrderTerms {
        kind: "LIMIT".into(),
        price: Some(dec!(139)),
        trigger: None,
        validity: None,
    });
    let out = order_messages(&om.on_signal(&s).unwrap());
    assert!(out.iter().any(|m| m["state"] == "accepted"), "{out:?}");
}

/// OpenAlgo's order status prices a complete order at its first trade (its server reads the
/// first matching tradebook row); an order filled in three trades is booked at the average of
/// all three, from the tradebook, and the journal's fill says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openalgo_order_filled_in_three_trades_is_booked_at_the_tradebooks_average() {
    use tradehost_tests::brokers::{Script, Step};
    let dir = tempfile::tempdir().unwrap();
    let mock = MockServer::start(Flavor::OpenAlgo, "", "oa-key");
    mock.state().scripts.push_back(Script {
        steps: vec![
            Step::Fill(dec!(4), dec!(100)),
            Step::Fill(dec!(4), dec!(101)),
            Step::Fill(dec!(2), dec!(102.5)),
        ],
        ..Script::default()
    });
    let oa: Arc<dyn Broker> = Arc::new(
        tradehost::brokers::openalgo::OpenAlgo::new(
            &mock.url,
            Secret::new("oa-key"),
            "tradehost",
            Duration::from_secs(2),
        )
        .unwrap(),
    );
    let config = Arc::new(
        Config::parse(
            &dir.path().join("pipelines.toml"),
            &PROTECTED
                .replace("broker = \"kite\"", "broker = \"openalgo\"")
                .replace("product = \"cnc\"", "product = \"mis\"")
                .replace("exits = { stop_loss_pct = 2, trailing_pct = 1 }", ""),
        )
        .unwrap(),
    );
    let journal = dir.path().join("journal.sqlite");
    let mut om =
        OrderManager::open(&journal, config, tradehost::domain::TradingMode::Live).unwrap();
    om.set_live_accounts(HashSet::from(["kite-1".to_owned()]));
    let link = AccountLink {
        account: "kite-1".into(),
        broker: oa,
        product: Product::Mis,
        protection_pct: Decimal::from(2),
        algo_id: None,
        orders_per_sec: 10,
        margin_check: false,
    };
    let (router, mut rx) = live_router(dir.path(), "oa-trades", None, link, None).await;
    mock.state().ltp.insert("RELIANCE".into(), dec!(100));
    let s = rel_signal("RELIANCE");
    om.on_quotes(&quote(T - 60_000, dec!(100))).unwrap();
    om.on_signal(&s).unwrap();
    hand_over(&mut om, &router);
    let mut filled = None;
    pump(&mut om, &router, &mut rx, |u| {
        if let LiveUpdate::Filled { qty, price, .. } = u {
            filled = Some((*qty, *price));
            true
        } else {
            false
        }
    })
    .await;
    // (4 × 100 + 4 × 101 + 2 × 102.5) / 10; OpenAlgo's own order status says 100.
    assert_eq!(filled, Some((dec!(10), dec!(100.9))));
    let fills = tradehost::orders::report::read_fills(&journal).unwrap();
    let total: Decimal = fills.iter().map(|f| f.qty * f.price).sum();
    assert_eq!(fills.iter().map(|f| f.qty).sum::<Decimal>(), dec!(10));
    assert_eq!(
        total,
        dec!(1009),
        "the journal holds the broker's trades' value"
    );
}

/// The broker is the truth for positions: Zerodha squared the intraday position off itself
/// while the host was down. After the restart the journal is brought down to the broker's
/// (flat) position, with an alert, and the next morning's open makes no "carried" close,
/// which on a flat account would open a short nobody asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_the_broker_squared_off_while_the_host_was_down_gets_no_carried_close() {
    let dir = tempfile::tempdir().unwrap();
    let config = PROTECTED
        .replace("product = \"cnc\"", "product = \"mis\"")
        .replace("exits = { stop_loss_pct = 2, trailing_pct = 1 }", "");
    let (mock, mut om, router, mut rx) = kite_rig(
        dir.path(),
        "squared-by-broker",
        &config,
        RELIANCE_CSV,
        Product::Mis,
    )
    .await;
    mock.state().ltp.insert("RELIANCE".into(), dec!(100));
    let s = rel_signal("RELIANCE");
    om.on_quotes(&quote(T - 60_000, dec!(100))).unwrap();
    om.on_signal(&s).unwrap();
    hand_over(&mut om, &router);
    pump(&mut om, &router, &mut rx, |u| {
        matches!(u, LiveUpdate::Filled { .. })
    })
    .await;
    assert_eq!(
        om.positions_of("kite-1").unwrap().get("RELIANCE"),
        Some(&dec!(10))
    );
    // The host goes down; at 15:20 by its own clock Zerodha squares the MIS position off
    // itself (the clock is set to just before the cut-off; it runs on from there).
    drop((om, router, rx));
    {
        let mut st = mock.state();
        st.ltp.insert("RELIANCE".into(), dec!(101));
        assert!(st.orders.iter().all(|o| !o.id.starts_with("auto-sq")));
        st.set_market_time(tradehost::market::clock::ist_to_epoch_ms(
            2024,
            1,
            2,
            15 * 60 + 19,
            59,
        ));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !mock
        .state()
        .orders
        .iter()
        .any(|o| o.id.starts_with("auto-sq"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the broker's clock passed 15:20 and squared nothing off"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    {
        let st = mock.state();
        let auto: Vec<_> = st
            .orders
            .iter()
            .filter(|o| o.id.starts_with("auto-sq"))
            .collect();
        assert_eq!(auto.len(), 1, "one square-off per position");
        assert_eq!((auto[0].side.as_str(), auto[0].filled), ("SELL", dec!(10)));
    }
    // The next morning the host starts again on its journal.
    let config = Arc::new(Config::parse(&dir.path().join("pipelines.toml"), &config).unwrap());
    let mut om = OrderManager::open(
        &dir.path().join("journal.sqlite"),
        config,
        tradehost::domain::TradingMode::Live,
    )
    .unwrap();
    om.set_live_accounts(HashSet::from(["kite-1".to_owned()]));
    let kite: Arc<dyn Broker> = Arc::new(
        Kite::new(
            &mock.url,
            Secret::new("kite-key"),
            Secret::new("kite-token"),
            Duration::from_secs(2),
        )
        .unwrap(),
    );
    let link = AccountLink {
        account: "kite-1".into(),
        broker: kite,
        product: Product::Mis,
        protection_pct: Decimal::from(2),
        algo_id: None,
        orders_per_sec: 10,
        margin_check: false,
    };
    let (router, _rx) =
        kite_router(dir.path(), "squared-by-broker-2", RELIANCE_CSV, link, None).await;
    let mismatches = router
        .reconcile("kite-1", &om.positions_of("kite-1").unwrap())
        .await
        .unwrap();
    assert_eq!(mismatches.len(), 1, "{mismatches:?}");
    let out = om
        .resolve_to_broker("kite-1", "RELIANCE", mismatches[0].broker)
        .unwrap();
    let resolved: Vec<&Event> = events(&out)
        .into_iter()
        .filter(|e| matches!(e, Event::PositionResolved { .. }))
        .collect();
    assert_eq!(resolved.len(), 1, "{out:?}");
    assert!(resolved[0].is_alert());
    assert!(om.positions_of("kite-1").unwrap().is_empty());
    // A second look changes nothing: the journal is the broker's now.
    assert!(
        router
            .reconcile("kite-1", &om.positions_of("kite-1").unwrap())
            .await
            .unwrap()
            .is_empty()
    );
    // Monday 2024-03-04 09:16 IST, the first minute after the open: nothing is carried.
    let monday_open = T + 3 * 86_400_000 - 44 * 60_000;
    let out = om.on_clock(monday_open).unwrap();
    assert!(
        !events(&out)
            .iter()
            .any(|e| matches!(e, Event::PositionCarried { .. } | Event::SquareOff { .. })),
        "{out:?}"
    );
    hand_over(&mut om, &router);
    let orders_at_broker = mock.state().orders.len();
    assert_eq!(
        orders_at_broker, 2,
        "the entry and the broker's own square-off, nothing new"
    );
}

/// NSE ticks stocks under ₹250 in ₹0.01 (since June 2024); the broker's instrument master
/// says so per contract. Its prices pass the guard on that tick (on a fixed 0.05 grid most
/// were refused and the stock hardly traded), and a limit goes to Kite at the paisa asked,
/// which Kite, serving the same master, takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_under_250_trades_on_the_tick_its_master_gives() {
    const YES_CSV: &str = "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,lot_size,instrument_type,segment,exchange
3050241,11915,YESBANK,\"YES BANK\",0,,0,0.01,1,EQ,NSE,NSE
";
    let dir = tempfile::tempdir().unwrap();
    let config = PROTECTED
        .replace("product = \"cnc\"", "product = \"mis\"")
        .replace("exits = { stop_loss_pct = 2, trailing_pct = 1 }", "")
        .replace("symbols = [\"RELIANCE\"]", "symbols = [\"YESBANK\"]");
    let (mock, mut om, router, mut rx) =
        kite_rig(dir.path(), "yesbank", &config, YES_CSV, Product::Mis).await;
    {
        let mut st = mock.state();
        st.ticks.insert("YESBANK".into(), dec!(0.01));
        st.ltp.insert("YESBANK".into(), dec!(18.37));
    }
    // The price guard (the engine's and the orders side's) takes the paisa.
    let mut guard = tradehost::market::guard::PriceGuard::new(
        tradehost::market::guard::GuardRules::from_config(
            &tradehost::config::MarketSection::default(),
            0,
        ),
    );
    for (i, p) in [dec!(18.37), dec!(18.41), dec!(18.38)]
        .into_iter()
        .enumerate()
    {
        guard
            .check("YESBANK", T + i64::try_from(i).unwrap(), &[("last", p)], T)
            .unwrap();
    }
    assert!(
        guard
            .check("YESBANK", T + 9, &[("last", dec!(18.375))], T)
            .is_err(),
        "off its own tick"
    );
    let mut s = rel_signal("YESBANK");
    s.order = Some(tradehost::bus::message::OrderTerms {
        kind: "LIMIT".into(),
        price: Some(dec!(18.37)),
        trigger: None,
        validity: None,
    });
    om.on_quotes(&quote_of("YESBANK", T - 60_000, dec!(18.37)))
        .unwrap();
    om.on_signal(&s).unwrap();
    hand_over(&mut om, &router);
    let out = pump(&mut om, &router, &mut rx, |u| {
        matches!(u, LiveUpdate::Accepted { .. } | LiveUpdate::Rejected { .. })
    })
    .await;
    assert!(
        !events(&out)
            .iter()
            .any(|e| matches!(e, Event::OrderRejected { .. })),
        "{out:?}"
    );
    let st = mock.state();
    assert_eq!(st.orders.len(), 1);
    assert_eq!(
        st.orders[0].fields.get("price").map(String::as_str),
        Some("18.37"),
        "the paisa asked, not the 0.05 grid's 18.35"
    );
}

/// NSE has ticked stocks under ₹250 in ₹0.01 since June 2024. A day of YESBANK at ₹21.xx in
/// paise (21.43, 21.38…: off the old 0.05 grid) runs live at Kite, whose master gives the 0.01
/// tick and whose server refuses any price off it: every bar is taken (none refused as off the
/// tick), and the strategy says what its backtest of the same day says, line by line.
#[test]
fn a_sub_250_stock_on_a_one_paisa_tick_trades_live_with_its_backtests_signals() {
    use std::process::{Command, Stdio};
    let redis = tradehost_tests::RedisServer::start();
    // The broker as it is: the book lags, orders fill in parts, and the first entry is
    // refused by its risk system after it was taken.
    let kite = MockServer::start(Flavor::Kite, "kite-key-yes", "kite-token-yes");
    const RMS: &str = "RMS:Margin Exceeds,Required:2143.00, Available:0.00 for entity account-XY1234 across exchange across segment across product";
    {
        let mut s = kite.state();
        s.ltp.insert("YESBANK".into(), dec!(21.43));
        s.ticks.insert("YESBANK".into(), dec!(0.01));
        // The first buy works for a hundred reads (seconds at this polling) before the risk
        // system refuses it: the replay's next signal, a sell, is decided meanwhile.
        let mut steps = vec![tradehost_tests::brokers::Step::Open; 100];
        steps.push(tradehost_tests::brokers::Step::Reject(RMS.into()));
        s.scripts.push_back(tradehost_tests::brokers::Script {
            steps,
            ..Default::default()
        });
    }
    let dir = tempfile::tempdir().unwrap();
    // A slow wave around ₹21.40, in paise: several crossovers each way.
    let mut csv = String::from("timestamp,open,high,low,close,volume\n");
    for i in 0..360u32 {
        let minute = 9 * 60 + 15 + i;
        let paise = 2140 + (37.0 * (f64::from(i) / 9.0).sin()).round() as i64;
        let p = |d: i64| format!("{}.{:02}", (paise + d) / 100, (paise + d) % 100);
        csv += &format!(
            "2024-01-02T{:02}:{:02}:00+05:30,{},{},{},{},5000\n",
            minute / 60,
            minute % 60,
            p(0),
            p(3),
            p(-2),
            p(1)
        );
    }
    let data = dir.path().join("YESBANK.csv");
    std::fs::write(&data, csv).unwrap();
    std::fs::write(
        dir.path().join("kite.csv"),
        "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,lot_size,instrument_type,segment,exchange\n3050241,11915,YESBANK,\"YES BANK\",0,,0,0.01,1,EQ,NSE,NSE\n",
    )
    .unwrap();
    // At full replay speed: the sell after the first buy is decided while that buy still
    // works at the broker, and must not go out against a buy that never fills.
    let config = dir.path().join("pipelines.toml");
    std::fs::write(
        &config,
        format!(
            "[host]\nplugin_dir = {:?}\njournal = \"journal.sqlite\"\nheartbeat_secs = 1\n\n[live]\ntimeout_ms = 2000\npoll_ms = 30\ninstruments = {{ kite = \"kite.csv\" }}\n\n[[accounts]]\nid = \"kite-yes\"\nbroker = \"kite\"\nbase_url = \"{}\"\norder_updates = \"poll\"\ncapital = 1000000\nmode = \"long\"\nproduct = \"mis\"\nsizing = {{ kind = \"fixed\", qty = 100 }}\nrisk = {{ cooldown_secs = 0 }}\n\n[[pipelines]]\nid = \"yes\"\nplugin = \"ma_crossover.wasm\"\nsymbols = [\"YESBANK\"]\naccounts = [\"kite-yes\"]\nsource = {{ kind = \"replay\", files = [\"YESBANK.csv\"] }}\n[pipelines.params]\nfast = 3\nslow = 8\n",
            tradehost_tests::plugin_dir().display().to_string(),
            kite.url
        ),
    )
    .unwrap();
    let out = Command::new(tradehost_tests::tradehost_bin())
        .args(["run", "--until-idle", "4", "--config"])
        .arg(&config)
        .env("REDIS_URL", redis.url())
        .env("TRADING_MODE", "live")
        .env_remove("TRADEHOST_SECRETS")
        .env("TRADEHOST_KITE_YES_API_KEY", "kite-key-yes")
        .env("TRADEHOST_KITE_YES_ACCESS_TOKEN", "kite-token-yes")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let said = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    // The live journal's signals, in the backtest's columns.
    let db = rusqlite::Connection::open(dir.path().join("journal.sqlite")).unwrap();
    let live: Vec<String> = db
        .prepare("SELECT ts, instrument, side, price FROM signals WHERE pipeline = 'yes' ORDER BY ts, signal_id")
        .unwrap()
        .query_map([], |r| {
            Ok(format!(
                "{},{},{},{}",
                tradehost::domain::time::format_iso_ist(r.get(0)?),
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?.unwrap_or_default()
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let bt = dir.path().join("bt");
    tradehost_tests::tradehost_ok(&[
        "backtest",
        "--config",
        tradehost_tests::arg(&config),
        "--pipeline",
        "yes",
        "--data",
        tradehost_tests::arg(&data),
        "--out",
        tradehost_tests::arg(&bt),
    ]);
    let backtest: Vec<String> = std::fs::read_to_string(bt.join("signals.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.splitn(5, ',').take(4).collect::<Vec<_>>().join(","))
        .collect();
    assert!(
        backtest.len() >= 6,
        "the wave crosses several times: {backtest:?}"
    );
    assert_eq!(live, backtest, "live signals, then the backtest's\n{said}");
    // Orders went out on the paisa grid and the broker took them, but for the one its risk
    // system refused late, which the journal keeps as refused.
    let s = kite.state();
    let buys = s.orders.iter().filter(|o| o.side == "BUY").count();
    assert!(buys >= 3, "{:?}", s.orders);
    let refused: Vec<_> = s.orders.iter().filter(|o| o.status == "REJECTED").collect();
    assert_eq!(refused.len(), 1, "{:?}", s.orders);
    assert_eq!(refused[0].message, RMS);
    assert!(
        s.orders.iter().any(|o| o.trades.len() > 1),
        "an order filled in parts: {:?}",
        s.orders
    );
    let rejected: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM orders WHERE state = 'rejected'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rejected, 1, "the late refusal is journaled");
    // The sell decided against the refused buy never went out: the long-only account was
    // never short at the broker, order by order.
    let mut held = Decimal::ZERO;
    for o in &s.orders {
        held += if o.side == "BUY" { o.filled } else { -o.filled };
        assert!(held >= Decimal::ZERO, "short at the broker: {:?}", s.orders);
    }
    let waited: String = db
        .query_row(
            "SELECT t.to_state || ' ' || o.side FROM orders o JOIN transitions t ON t.client_order_id = o.client_order_id WHERE o.side = 'sell' ORDER BY o.rowid, t.seq LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        waited, "cancelled sell",
        "the first sell waited for the buy and had nothing to close"
    );
}

/// A stock's daily price band, as the paper venue and Kite apply it: YESBANK on a 5 % band
/// closed at ₹20.20 yesterday, so today's circuit is ₹19.19 to ₹21.21 on its paisa tick. A
/// limit above it is refused by Kite and on paper in the same words; one inside is taken.
/// On the run's first day no previous close is known and nothing is refused for the band.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_beyond_the_days_circuit_is_refused_on_paper_as_kite_refuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockServer::start(Flavor::Kite, "kite-key", "kite-token");
    mock.state()
        .circuits
        .insert("YESBANK".into(), (dec!(19.19), dec!(21.21)));
    let kite = Kite::new(
        &mock.url,
        Secret::new("kite-key"),
        Secret::new("kite-token"),
        Duration::from_secs(2),
    )
    .unwrap();
    let limit_at = |price| mis_buy_limit("YESBANK", dec!(100), price, dec!(20.5));
    let live = kite.place(&limit_at(dec!(21.25))).await;
    let Err(BrokerError::Rejected(live_text)) = live else {
        panic!("Kite refuses a limit above the circuit: {live:?}")
    };
    assert!(
        kite.place(&limit_at(dec!(21.21))).await.is_ok(),
        "at the limit"
    );

    // The paper account: the band from the contract rules, the tick as YESBANK's master says.
    tradehost::domain::money::learn_ticks([("YESBANK".to_owned(), dec!(0.01))]);
    std::fs::write(dir.path().join("band.toml"), "[band]\nYESBANK = 5\n").unwrap();
    let config = format!(
        "[market]\ncontracts = \"band.toml\"\n{}",
        PROTECTED
            .replace("broker = \"kite\"", "broker = \"paper\"")
            .replace("product = \"cnc\"", "product = \"mis\"")
            .replace("exits = { stop_loss_pct = 2, trailing_pct = 1 }", "")
            .replace("symbols = [\"RELIANCE\"]", "symbols = [\"YESBANK\"]")
    );
    let config = Arc::new(Config::parse(&dir.path().join("pipelines.toml"), &config).unwrap());
    let mut om = OrderManager::open(
        &dir.path().join("journal.sqlite"),
        config,
        tradehost::domain::TradingMode::Paper,
    )
    .unwrap();
    let day = 86_400_000;
    let buy_at = |om: &mut OrderManager, ts: i64, price: Decimal| {
        let mut s = rel_signal("YESBANK");
        (s.ts, s.id) = (
            ts,
            SignalMessage::make_id("rel", "ma-crossover", "0.1.0", ts, 0),
        );
        s.order = Some(tradehost::bus::message::OrderTerms {
            kind: "LIMIT".into(),
            price: Some(price),
            trigger: None,
            validity: None,
        });
        order_messages(&om.on_signal(&s).unwrap())
    };
    // Yesterday: no close before it, so no band; yesterday's last price is 20.20.
    om.on_quotes(&quote_of("YESBANK", T - day - 60_000, dec!(20.1)))
        .unwrap();
    // (A limit far below the market: it rests, and expires with the day.)
    let out = buy_at(&mut om, T - day, dec!(15));
    assert!(
        out.iter().any(|m| m["state"] == "accepted"),
        "no previous close, no band: {out:?}"
    );
    om.on_quotes(&quote_of("YESBANK", T - day + 60_000, dec!(20.2)))
        .unwrap();
    // Today.
    om.on_quotes(&quote_of("YESBANK", T - 60_000, dec!(20.5)))
        .unwrap();
    let out = buy_at(&mut om, T, dec!(21.25));
    let rejected: Vec<_> = out.iter().filter(|m| m["state"] == "rejected").collect();
    assert_eq!(rejected.len(), 1, "{out:?}");
    let paper_text = rejected[0]["reason"].as_str().unwrap();
    assert!(
        paper_text.contains("21.21") && live_text.ends_with(paper_text),
        "paper {paper_text:?}, live {live_text:?}"
    );
    let out = buy_at(&mut om, T + 60_000, dec!(21.21));
    assert!(out.iter().any(|m| m["state"] == "accepted"), "{out:?}");
}

/// An intraday buy of `qty` `symbol` limited at `price`, the market last at `reference`, as
/// the router would hand it to an adapter.
fn mis_buy_limit(symbol: &str, qty: Decimal, price: Decimal, reference: Decimal) -> OrderRequest {
    OrderRequest {
        client_order_id: format!("lim-{price}"),
        submitted_at: None,
        symbol: symbol.into(),
        segment: Segment::of(symbol),
        token: None,
        side: OrderSide::Buy,
        qty,
        product: Product::Mis,
        reference_price: Some(reference),
        protection_pct: dec!(2),
        algo_id: None,
        kind: tradehost::brokers::OrderKind::Limit { price },
        validity: tradehost::brokers::Validity::Day,
        autoslice: false,
    }
}
