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
use tradehost::brokers::instruments::InstrumentMaster;
use tradehost::brokers::kite::Kite;
use tradehost::brokers::live::{AccountLink, LiveRouter, LiveUpdate, RouterOutput, RouterSettings};
use tradehost::brokers::{Broker, BrokerError, OrderRequest, Secret, Segment};
use tradehost::bus::Bus;
use tradehost::bus::message::{SCHEMA_VERSION, SignalMessage};
use tradehost::config::{Config, Product};
use tradehost::orders::OrderManager;
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
    }
    let kite: Arc<dyn Broker> = Arc::new(Kite::new(&mock.url, Secret::new("kite-key"), Secret::new("kite-token"), Duration::from_secs(2)).unwrap());
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
    };
    assert!(matches!(kite.place(&whole).await, Err(BrokerError::Rejected(m)) if m.contains("freeze")), "the mock enforces the freeze quantity");

    let config = Arc::new(Config::parse(&dir.path().join("pipelines.toml"), CONFIG).unwrap());
    let journal = dir.path().join("journal.sqlite");
    let mut om = OrderManager::open(&journal, config.clone(), "live").unwrap();
    om.set_live_accounts(HashSet::from(["kite-1".to_owned()]));
    om.on_signal(&signal()).unwrap();
    let orders = om.take_live_orders();
    assert_eq!(orders.iter().map(|o| o.qty).collect::<Vec<_>>(), vec![dec!(1800), dec!(1800), dec!(1400)], "5,000 in slices of whole lots no larger than 1,800");

    let master = InstrumentMaster::new(Bus::embedded("exchange-rules"));
    let csv = dir.path().join("kite.csv");
    std::fs::write(&csv, KITE_CSV).unwrap();
    master.load("kite", arg(&csv)).await.unwrap();
    let account = &config.accounts[0];
    let link = AccountLink { account: "kite-1".into(), broker: kite.clone(), product: Product::Mis, protection_pct: Decimal::from(2), algo_id: account.algo_id.clone(), orders_per_sec: account.risk.max_orders_per_sec, margin_check: account.margin_check };
    let settings = RouterSettings { poll: Duration::from_millis(20), backoff: Duration::from_millis(20), max_backoff: Duration::from_millis(200), max_attempts: 6, cancel_after: None, absent_reads: 3 };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let router = LiveRouter::start(vec![link], master, settings, tx);
    let ids: Vec<String> = orders.iter().map(|o| o.client_order_id.clone()).collect();
    for o in orders {
        assert!(router.send(o));
    }
    // Each slice accepted and filled; the journal takes every report.
    let mut filled = 0;
    while filled < 3 {
        let update = match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await.expect("the router reports").expect("open") {
            RouterOutput::Update(u) => u,
            RouterOutput::Notice(_) => continue,
        };
        if matches!(update, LiveUpdate::Rejected { .. }) {
            panic!("{update:?}");
        }
        filled += usize::from(matches!(update, LiveUpdate::Filled { .. }));
        om.on_live_update(&update).unwrap();
    }
    assert_eq!(om.positions_of("kite-1").unwrap()["NIFTY28MAR2420800CE"], dec!(5000));

    let s = mock.state();
    let sent: Vec<(Option<String>, Decimal, Option<String>, String)> = s.orders.iter().map(|o| (o.tag.clone(), o.qty, o.fields.get("algo_id").cloned(), o.symbol.clone())).collect();
    assert_eq!(sent.len(), 3, "{sent:?}");
    for ((tag, _, algo, symbol), id) in sent.iter().zip(&ids) {
        assert_eq!((tag.as_deref(), algo.as_deref(), symbol.as_str()), (Some(id.as_str()), Some("NSE-ALGO-0042"), KITE_SYMBOL));
    }
    // Two a second: the third placement waits for the first to be a second old.
    let placed: Vec<std::time::Instant> = s.requests.iter().filter(|r| r.method == "POST" && r.path.starts_with("/orders/regular")).map(|r| r.at).collect();
    assert_eq!(placed.len(), 4, "the refused whole order and three slices");
    assert!(placed[3].duration_since(placed[1]) >= Duration::from_millis(990), "paced: {:?}", placed[3].duration_since(placed[1]));
    drop(s);
    drop(om);

    // The audit export: the decision's three slices, each naming its parent, the plugin build and the algo id.
    let csv = tradehost_ok(&["audit", "--journal", arg(&journal)]);
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap_or_else(|| panic!("no {name} column"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 3, "{csv}");
    let parent = tradehost::subscriber::client_order_id(&signal().id, "kite-1");
    for (row, id) in rows.iter().zip(&ids) {
        assert_eq!(row[col("client_order_id")], id.as_str(), "{csv}");
        assert_eq!(row[col("parent_order_id")], parent.as_str());
        assert_eq!((row[col("algo_id")], row[col("exchange")], row[col("state")], row[col("decision")]), ("NSE-ALGO-0042", "NFO", "filled", "order"));
        assert_eq!((row[col("plugin")], row[col("plugin_version")], row[col("plugin_sha256")]), ("ma-crossover", "0.1.0", "ab".repeat(32).as_str()));
        assert_eq!(row[col("exchange_time")], "2024-03-01T10:00:00.000+05:30");
        assert!(!row[col("broker_order_id")].is_empty());
    }
    assert_eq!(rows.iter().map(|r| r[col("qty")]).collect::<Vec<_>>(), vec!["1800", "1800", "1400"]);
    // One day only, or none.
    assert_eq!(tradehost_ok(&["audit", "--journal", arg(&journal), "--day", "2024-03-04"]).lines().count(), 1, "the header alone");
}
