//! The live order path against brokers that behave like real ones, through the
//! real adapters and router: partial fills over several reads, an entry
//! cancelled when it does not fill (and the cancel that loses the race to a
//! fill), a rejection after acceptance, a restart with orders submitted and
//! accepted while the broker's book lags, an older OpenAlgo order of the same
//! shape, a broker restarting mid-order, and F&O contracts under each broker's
//! own names. The servers check the documented types and values and refuse
//! what the real APIs refuse.

use std::sync::Arc;
use std::time::Duration;

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tradehost::brokers::instruments::InstrumentMaster;
use tradehost::brokers::kite::Kite;
use tradehost::brokers::live::{
    AccountLink, LiveOrder, LiveRouter, LiveUpdate, RouterOutput, RouterSettings,
};
use tradehost::brokers::openalgo::OpenAlgo;
use tradehost::brokers::upstox::Upstox;
use tradehost::brokers::{Broker, Secret};
use tradehost::bus::Bus;
use tradehost::config::Product;
use tradehost::subscriber::OrderSide;
use tradehost_tests::brokers::{Flavor, MockOrder, MockServer, Script, Step};

const TIMEOUT: Duration = Duration::from_millis(1000);

/// Kite's instrument dump names contracts its own way: monthly `NIFTY24MAR20800CE`
/// (year, month), weekly `NIFTY2432120800PE` (year, month digit, day), futures `NIFTY24MARFUT`.
fn kite_contract(expiry: (u32, u32, u32), strike: u32, kind: &str, weekly: bool) -> String {
    const MONTHS: [&str; 12] = [
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ];
    let (y, m, d) = expiry;
    if weekly {
        let month = match m {
            10 => "O".to_owned(),
            11 => "N".to_owned(),
            12 => "D".to_owned(),
            m => m.to_string(),
        };
        format!("NIFTY{:02}{month}{d:02}{strike}{kind}", y % 100)
    } else {
        format!(
            "NIFTY{:02}{}{strike}{kind}",
            y % 100,
            MONTHS[m as usize - 1]
        )
    }
}

fn kite_csv() -> String {
    let monthly = kite_contract((2024, 3, 28), 20800, "CE", false);
    let weekly = kite_contract((2024, 3, 21), 20800, "PE", true);
    format!(
        "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,lot_size,instrument_type,segment,exchange
738561,2885,RELIANCE,\"RELIANCE INDUSTRIES\",0,,0,0.05,1,EQ,NSE,NSE
12345678,48225,{monthly},\"NIFTY\",0,2024-03-28,20800,0.05,50,CE,NFO-OPT,NFO
12345679,48226,{weekly},\"NIFTY\",0,2024-03-21,20800,0.05,50,PE,NFO-OPT,NFO
"
    )
}

/// Upstox's names: `NIFTY 20800 CE 28 MAR 24`, addressed by instrument key.
const UPSTOX_CSV: &str = "instrument_key,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,lot_size,instrument_type,option_type,exchange
NSE_EQ|INE002A01018,2885,RELIANCE,RELIANCE INDUSTRIES,0,,,0.05,1,EQUITY,,NSE_EQ
NSE_FO|48225,48225,NIFTY 20800 CE 28 MAR 24,NIFTY,0,2024-03-28,20800,0.05,50,OPTIDX,CE,NSE_FO
";

struct Venue {
    mock: MockServer,
    broker: Arc<dyn Broker>,
    /// How the broker's book names RELIANCE.
    reliance: &'static str,
    _dir: tempfile::TempDir,
    master: InstrumentMaster,
}

fn venue(flavor: Flavor) -> Venue {
    let dir = tempfile::tempdir().unwrap();
    let master = InstrumentMaster::new(Bus::embedded("order-path"));
    let rt = tokio::runtime::Handle::current();
    let load = |broker: &str, text: &str| {
        let path = dir.path().join(format!("{broker}.csv"));
        std::fs::write(&path, text).unwrap();
        let (master, broker, path) = (
            master.clone(),
            broker.to_owned(),
            path.display().to_string(),
        );
        tokio::task::block_in_place(|| {
            rt.block_on(async move { master.load(&broker, &path).await.unwrap() })
        });
    };
    let (mock, broker, reliance): (MockServer, Arc<dyn Broker>, _) = match flavor {
        Flavor::Kite => {
            let mock = MockServer::start(Flavor::Kite, "kite-key-op", "kite-token-op");
            load("kite", &kite_csv());
            mock.state().tradable = vec![
                "RELIANCE".into(),
                kite_contract((2024, 3, 28), 20800, "CE", false),
                kite_contract((2024, 3, 21), 20800, "PE", true),
            ];
            let b = Kite::new(
                &mock.url,
                Secret::new("kite-key-op"),
                Secret::new("kite-token-op"),
                TIMEOUT,
            )
            .unwrap();
            (mock, Arc::new(b), "RELIANCE")
        }
        Flavor::Upstox => {
            let mock = MockServer::start(Flavor::Upstox, "", "upstox-token-op");
            load("upstox", UPSTOX_CSV);
            mock.state().tradable = vec!["NSE_EQ|INE002A01018".into(), "NSE_FO|48225".into()];
            let b = Upstox::new(&mock.url, Secret::new("upstox-token-op"), TIMEOUT).unwrap();
            (mock, Arc::new(b), "NSE_EQ|INE002A01018")
        }
        _ => {
            let mock = MockServer::start(Flavor::OpenAlgo, "", "openalgo-key-op");
            let b = OpenAlgo::new(
                &mock.url,
                Secret::new("openalgo-key-op"),
                "tradehost",
                TIMEOUT,
            )
            .unwrap();
            (mock, Arc::new(b), "RELIANCE")
        }
    };
    // The exchange's market: every instrument last traded at 100 (a market order fills there).
    {
        let mut st = mock.state();
        let symbols: Vec<String> = st
            .tradable
            .iter()
            .cloned()
            .chain(["RELIANCE", "NIFTY28MAR2420800CE", "NIFTY21MAR2420800PE"].map(String::from))
            .collect();
        for symbol in symbols {
            st.ltp.entry(symbol).or_insert(dec!(100));
        }
    }
    Venue {
        mock,
        broker,
        reliance,
        _dir: dir,
        master,
    }
}

fn settings(cancel_after: Option<Duration>) -> RouterSettings {
    RouterSettings {
        poll: Duration::from_millis(20),
        backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        max_attempts: 6,
        cancel_after,
        absent_reads: 3,
    }
}

fn start(
    v: &Venue,
    settings: RouterSettings,
) -> (
    LiveRouter,
    tokio::sync::mpsc::UnboundedReceiver<RouterOutput>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let link = AccountLink {
        account: "acct".into(),
        broker: v.broker.clone(),
        product: Product::Mis,
        protection_pct: Decimal::from(2),
        algo_id: None,
        orders_per_sec: 10,
        margin_check: true,
    };
    (
        LiveRouter::start(vec![link], v.master.clone(), settings, tx),
        rx,
    )
}

fn order(coid: &str, instrument: &str, qty: u32) -> LiveOrder {
    LiveOrder::new(
        coid,
        "acct",
        instrument,
        OrderSide::Buy,
        Decimal::from(qty),
        Some(dec!(100)),
    )
}

/// The router's next report to the journal (notices are skipped).
async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<RouterOutput>) -> LiveUpdate {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("the router reports")
            .expect("open")
        {
            RouterOutput::Update(u) => return u,
            RouterOutput::Notice(_) => {}
        }
    }
}

/// The router's next report past the part fills an order goes through at the brokers, which
/// fill a market order in parts by default (each part more than the last).
async fn filled(rx: &mut tokio::sync::mpsc::UnboundedReceiver<RouterOutput>) -> LiveUpdate {
    let mut so_far = Decimal::ZERO;
    loop {
        match next(rx).await {
            LiveUpdate::PartFilled { filled_qty, .. } => {
                assert!(
                    filled_qty > so_far,
                    "a part fill adds: {filled_qty} after {so_far}"
                );
                so_far = filled_qty;
            }
            other => return other,
        }
    }
}

/// The router counts an order finished just after its last report is sent: wait for that.
async fn settled(router: &LiveRouter) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while router.open_orders() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} orders still open",
            router.open_orders()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

const FLAVORS: [Flavor; 3] = [Flavor::Kite, Flavor::Upstox, Flavor::OpenAlgo];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_fills_then_a_cancel_when_the_rest_does_not_fill() {
    for flavor in FLAVORS {
        let v = venue(flavor);
        // Two units, then one more, then nothing: the rest never reaches the protection limit.
        v.mock.state().scripts.push_back(Script {
            steps: vec![
                Step::Fill(dec!(2), dec!(100)),
                Step::Fill(dec!(1), dec!(101)),
            ],
            ..Script::default()
        });
        let (router, mut rx) = start(&v, settings(Some(Duration::from_secs(2))));
        router.send(order("th0000000000000p01", "RELIANCE", 5));
        let LiveUpdate::Accepted {
            broker_order_id, ..
        } = next(&mut rx).await
        else {
            panic!("{flavor:?}: accepted first")
        };
        assert_eq!(
            next(&mut rx).await,
            LiveUpdate::PartFilled {
                client_order_id: "th0000000000000p01".into(),
                filled_qty: dec!(2),
                price: dec!(100)
            },
            "{flavor:?}"
        );
        // The broker's running average: (2 × 100 + 101) / 3 = 100.33 as Kite and Upstox print
        // it; OpenAlgo's tradebook lists the two trades, averaged here to the fourth place.
        assert_eq!(
            next(&mut rx).await,
            LiveUpdate::PartFilled {
                client_order_id: "th0000000000000p01".into(),
                filled_qty: dec!(3),
                price: if flavor == Flavor::OpenAlgo {
                    dec!(100.3333)
                } else {
                    dec!(100.33)
                }
            },
            "{flavor:?}"
        );
        assert!(
            matches!(next(&mut rx).await, LiveUpdate::CancelRequested { .. }),
            "{flavor:?}"
        );
        match next(&mut rx).await {
            LiveUpdate::Cancelled {
                filled_qty, price, ..
            } => assert_eq!(
                (filled_qty, price),
                (
                    dec!(3),
                    Some(if flavor == Flavor::OpenAlgo {
                        dec!(100.3333)
                    } else {
                        dec!(100.33)
                    })
                ),
                "{flavor:?}"
            ),
            other => panic!("{flavor:?}: {other:?}"),
        }
        {
            let s = v.mock.state();
            let o = s.orders.iter().find(|o| o.id == broker_order_id).unwrap();
            assert_eq!(
                (o.status.as_str(), o.filled),
                ("CANCELLED", dec!(3)),
                "{flavor:?}"
            );
            assert_eq!(s.orders.len(), 1, "{flavor:?}: one order");
        }
        settled(&router).await;
        // What the broker holds: the three units that filled.
        assert_eq!(
            v.broker.positions().await.unwrap(),
            vec![(v.reliance.to_owned(), dec!(3))],
            "{flavor:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_that_loses_the_race_to_the_fill_reports_the_fill() {
    for flavor in FLAVORS {
        let v = venue(flavor);
        v.mock.state().scripts.push_back(Script {
            steps: vec![Step::Open],
            fill_on_cancel: Some(dec!(100.5)),
            ..Script::default()
        });
        let (router, mut rx) = start(&v, settings(Some(Duration::from_secs(1))));
        router.send(order("th0000000000000r01", "RELIANCE", 5));
        assert!(matches!(next(&mut rx).await, LiveUpdate::Accepted { .. }));
        assert!(
            matches!(next(&mut rx).await, LiveUpdate::CancelRequested { .. }),
            "{flavor:?}"
        );
        assert_eq!(
            next(&mut rx).await,
            LiveUpdate::Filled {
                client_order_id: "th0000000000000r01".into(),
                qty: dec!(5),
                price: dec!(100.5)
            },
            "{flavor:?}"
        );
        settled(&router).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_after_acceptance_ends_the_order() {
    for flavor in FLAVORS {
        let v = venue(flavor);
        v.mock.state().scripts.push_back(Script {
            steps: vec![
                Step::Open,
                Step::Open,
                Step::Reject("RMS:Margin Exceeds, Required:95417.84, Available:1200.00".into()),
            ],
            ..Script::default()
        });
        let (router, mut rx) = start(&v, settings(None));
        router.send(order("th0000000000000j01", "RELIANCE", 5));
        assert!(matches!(next(&mut rx).await, LiveUpdate::Accepted { .. }));
        match next(&mut rx).await {
            // OpenAlgo's order status carries no reason; the others name the rule.
            LiveUpdate::Rejected { reason, .. } => assert!(
                flavor == Flavor::OpenAlgo || reason.contains("RMS:Margin Exceeds"),
                "{flavor:?}: {reason}"
            ),
            other => panic!("{flavor:?}: {other:?}"),
        }
        settled(&router).await;
        assert!(v.broker.positions().await.unwrap().is_empty(), "{flavor:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_orders_submitted_and_accepted_places_nothing_twice() {
    for flavor in FLAVORS {
        let v = venue(flavor);
        let tag = |coid: &str| {
            if flavor == Flavor::OpenAlgo {
                None
            } else {
                Some(coid.to_owned())
            }
        };
        let placed =
            |id: &str, coid: &str, status: &str, filled: Decimal, placed_at: &str, hidden: u32| {
                MockOrder {
                    id: id.into(),
                    tag: tag(coid),
                    symbol: v.reliance.into(),
                    side: "BUY".into(),
                    qty: dec!(5),
                    status: status.into(),
                    average_price: (filled > Decimal::ZERO).then_some(dec!(99)),
                    filled,
                    placed_at: placed_at.into(),
                    hidden,
                    fields: [
                        ("exchange".to_owned(), "NSE".to_owned()),
                        ("product".to_owned(), "MIS".to_owned()),
                    ]
                    .into(),
                    ..MockOrder::default()
                }
            };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let stamp = tradehost_tests::brokers::ist_stamp;
        {
            let mut s = v.mock.state();
            // An order of the same shape from ten minutes before ours (a manual one): never ours.
            s.orders.push(placed(
                "2504080000000091",
                "manual",
                "COMPLETE",
                dec!(5),
                &stamp(now - 600_000),
                0,
            ));
            // The journal's first order: accepted before the crash, filled while we were down.
            s.orders.push(placed(
                "2504080000000092",
                "th0000000000000s01",
                "COMPLETE",
                dec!(5),
                &stamp(now - 5_000),
                0,
            ));
            // The second: sent just before the crash; the broker took it, its book shows it only on the third read.
            s.orders.push(placed(
                "2504080000000093",
                "th0000000000000s02",
                "OPEN",
                Decimal::ZERO,
                &stamp(now - 500),
                2,
            ));
        }
        let (router, mut rx) = start(&v, settings(None));
        // The journal's broker ids are claimed first, as `run` does at start.
        assert!(router.claimed("acct", vec!["2504080000000092".into()]));
        let mut accepted = order("th0000000000000s01", "RELIANCE", 5);
        (
            accepted.fresh,
            accepted.broker_order_id,
            accepted.submitted_at,
        ) = (false, Some("2504080000000092".into()), now - 5_500);
        let mut submitted = order("th0000000000000s02", "RELIANCE", 5);
        (submitted.fresh, submitted.submitted_at) = (false, now - 1_000);
        // The third: recorded as submitted, but the crash came before the call; only the manual order has its shape.
        let mut unsent = order("th0000000000000s03", "RELIANCE", 5);
        (unsent.fresh, unsent.submitted_at) = (false, now - 200);
        for o in [accepted, submitted, unsent] {
            router.send(o);
        }
        // Two acceptances and three fills, the fresh order's in parts.
        let mut got = Vec::new();
        while got
            .iter()
            .filter(|u| matches!(u, LiveUpdate::Filled { .. }))
            .count()
            < 3
        {
            got.push(next(&mut rx).await);
        }
        let accepted_ids: Vec<(String, String)> = got
            .iter()
            .filter_map(|u| {
                if let LiveUpdate::Accepted {
                    client_order_id,
                    broker_order_id,
                } = u
                {
                    Some((client_order_id.clone(), broker_order_id.clone()))
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(accepted_ids.len(), 2, "{flavor:?}: {got:?}");
        assert_eq!(
            accepted_ids[0],
            ("th0000000000000s02".into(), "2504080000000093".into()),
            "{flavor:?}: found in the lagging book, not placed again"
        );
        assert_eq!(accepted_ids[1].0, "th0000000000000s03");
        assert!(
            !["2504080000000091", "2504080000000092", "2504080000000093"]
                .contains(&accepted_ids[1].1.as_str()),
            "{flavor:?}: the older order of the same shape is not ours"
        );
        let fills = got
            .iter()
            .filter(|u| matches!(u, LiveUpdate::Filled { .. }))
            .count();
        assert_eq!(fills, 3, "{flavor:?}: {got:?}");
        assert_eq!(
            v.mock.state().orders.len(),
            4,
            "{flavor:?}: one new order, for the one never sent"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restarting_mid_order_loses_nothing() {
    for flavor in FLAVORS {
        let v = venue(flavor);
        v.mock.state().scripts.push_back(Script {
            steps: vec![Step::Open, Step::Fill(dec!(2), dec!(100))],
            ..Script::default()
        });
        let (router, mut rx) = start(&v, settings(None));
        router.send(order("th0000000000000b01", "RELIANCE", 5));
        assert!(matches!(next(&mut rx).await, LiveUpdate::Accepted { .. }));
        v.mock.restart_for(Duration::from_millis(600));
        // Its status reads fail while it is down; the part fills as it comes back, then the rest.
        assert_eq!(
            next(&mut rx).await,
            LiveUpdate::PartFilled {
                client_order_id: "th0000000000000b01".into(),
                filled_qty: dec!(2),
                price: dec!(100)
            },
            "{flavor:?}"
        );
        v.mock.state().orders[0]
            .script
            .as_mut()
            .unwrap()
            .steps
            .push(Step::Fill(dec!(3), dec!(102)));
        assert_eq!(
            next(&mut rx).await,
            LiveUpdate::Filled {
                client_order_id: "th0000000000000b01".into(),
                qty: dec!(5),
                price: dec!(101.2)
            },
            "{flavor:?}"
        );
        // And a placement while it is down: not lost, placed once when it is back.
        v.mock.restart_for(Duration::from_millis(600));
        router.send(order("th0000000000000b02", "RELIANCE", 5));
        assert!(
            matches!(next(&mut rx).await, LiveUpdate::Accepted { .. }),
            "{flavor:?}"
        );
        assert!(
            matches!(filled(&mut rx).await, LiveUpdate::Filled { .. }),
            "{flavor:?}"
        );
        assert_eq!(v.mock.state().orders.len(), 2, "{flavor:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn option_contracts_reach_each_broker_under_its_own_name() {
    // Kite: the monthly and the weekly contract, named as Kite names them.
    let v = venue(Flavor::Kite);
    let (router, mut rx) = start(&v, settings(None));
    router.send(order("th0000000000000f01", "NIFTY28MAR2420800CE", 50));
    router.send(order("th0000000000000f02", "NIFTY21MAR2420800PE", 100));
    let mut done = 0;
    while done < 2 {
        match next(&mut rx).await {
            LiveUpdate::Filled { .. } => done += 1,
            LiveUpdate::Accepted { .. } | LiveUpdate::PartFilled { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    let sent: Vec<(String, String)> = v
        .mock
        .state()
        .orders
        .iter()
        .map(|o| {
            (
                o.fields["tradingsymbol"].clone(),
                o.fields["exchange"].clone(),
            )
        })
        .collect();
    assert_eq!(
        sent,
        vec![
            ("NIFTY24MAR20800CE".to_owned(), "NFO".to_owned()),
            ("NIFTY2432120800PE".to_owned(), "NFO".to_owned())
        ]
    );
    // Our own symbol is not a Kite trading symbol: the exchange would refuse it.
    let direct = tradehost::brokers::OrderRequest {
        client_order_id: "th0000000000000f03".into(),
        submitted_at: None,
        symbol: "NIFTY28MAR2420800CE".into(),
        segment: tradehost::brokers::Segment::Derivative,
        token: None,
        side: OrderSide::Buy,
        qty: dec!(50),
        product: Product::Mis,
        reference_price: None,
        protection_pct: Decimal::from(2),
        algo_id: None,
        kind: tradehost::brokers::OrderKind::Market,
        validity: tradehost::brokers::Validity::Day,
        autoslice: false,
    };
    assert!(
        matches!(v.broker.place(&direct).await, Err(tradehost::brokers::BrokerError::Rejected(m)) if m.contains("tradingsymbol"))
    );
    // Reconciliation compares under the broker's names: the journal's 50 and 100 agree.
    let journal = [
        ("NIFTY28MAR2420800CE".to_owned(), dec!(50)),
        ("NIFTY21MAR2420800PE".to_owned(), dec!(100)),
    ]
    .into();
    assert_eq!(router.reconcile("acct", &journal).await.unwrap(), vec![]);

    // Upstox: by instrument key.
    let v = venue(Flavor::Upstox);
    let (router, mut rx) = start(&v, settings(None));
    router.send(order("th0000000000000f04", "NIFTY28MAR2420800CE", 50));
    assert!(matches!(next(&mut rx).await, LiveUpdate::Accepted { .. }));
    assert!(matches!(filled(&mut rx).await, LiveUpdate::Filled { .. }));
    assert_eq!(
        v.mock.state().orders[0].fields["instrument_token"],
        "NSE_FO|48225"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_refuse_what_the_real_apis_refuse() {
    // A number sent as a string, an enum spelt wrong: refused, as the real APIs refuse them.
    let v = venue(Flavor::Upstox);
    let client = reqwest::Client::new();
    let body = serde_json::json!({ "quantity": "5", "product": "I", "validity": "DAY", "price": 0, "instrument_token": "NSE_EQ|INE002A01018", "order_type": "MARKET", "transaction_type": "BUY", "disclosed_quantity": 0, "trigger_price": 0, "is_amo": false });
    let answer = client
        .post(format!("{}/v3/order/place", v.mock.url))
        .bearer_auth("upstox-token-op")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    let mut body = body;
    body["quantity"] = serde_json::json!(5);
    body["transaction_type"] = serde_json::json!("buy");
    assert_eq!(
        client
            .post(format!("{}/v3/order/place", v.mock.url))
            .bearer_auth("upstox-token-op")
            .json(&body)
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    body["transaction_type"] = serde_json::json!("BUY");
    assert_eq!(
        client
            .post(format!("{}/v3/order/place", v.mock.url))
            .bearer_auth("upstox-token-op")
            .json(&body)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let v = venue(Flavor::OpenAlgo);
    let body = serde_json::json!({ "apikey": "openalgo-key-op", "strategy": "s", "symbol": "RELIANCE", "action": "BUY", "exchange": "NSE", "pricetype": "MARKETT", "product": "MIS", "quantity": "5" });
    let answer = client
        .post(format!("{}/api/v1/placeorder", v.mock.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    assert!(v.mock.state().orders.is_empty(), "nothing taken");
    // What the adapter sends passes, its numbers as OpenAlgo's strings.
    let (router, mut rx) = start(&v, settings(None));
    router.send(order("th0000000000000v01", "RELIANCE", 5));
    assert!(matches!(next(&mut rx).await, LiveUpdate::Accepted { .. }));
    let s = v.mock.state();
    assert_eq!(
        (
            s.orders[0].fields["quantity"].as_str(),
            s.orders[0].fields["pricetype"].as_str(),
            s.orders[0].fields["price"].as_str()
        ),
        ("5", "LIMIT", "102")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_fno_entry_the_margin_does_not_cover_is_refused_with_the_shortfall_and_a_close_still_goes()
 {
    for flavor in FLAVORS {
        let v = venue(flavor);
        {
            let mut s = v.mock.state();
            // 50 units at ₹3,000 of margin each = ₹1,50,000 needed; ₹1,00,000 free.
            s.margin_per_unit = dec!(3000);
            s.funds = dec!(100000);
        }
        let (router, mut rx) = start(&v, settings(None));
        router.send(order("th0000000000000m01", "NIFTY28MAR2420800CE", 50));
        match next(&mut rx).await {
            LiveUpdate::Rejected { reason, .. } => assert_eq!(
                reason, "margin: the order needs 150000 and 100000 is free, 50000 short",
                "{flavor:?}"
            ),
            other => panic!("{flavor:?}: {other:?}"),
        }
        assert!(
            v.mock.state().orders.is_empty(),
            "{flavor:?}: nothing placed"
        );
        let calculator = if flavor == Flavor::Kite {
            "/margins/orders"
        } else if flavor == Flavor::Upstox {
            "/v2/charges/margin"
        } else {
            "/api/v1/margin"
        };
        assert!(
            v.mock
                .state()
                .requests
                .iter()
                .any(|r| r.path.starts_with(calculator)),
            "{flavor:?}: asked the broker's calculator"
        );
        // A close frees margin: it is never held back.
        let mut close = order("th0000000000000m02", "NIFTY28MAR2420800CE", 50);
        close.entry = false;
        router.send(close);
        assert!(
            matches!(next(&mut rx).await, LiveUpdate::Accepted { .. }),
            "{flavor:?}"
        );
        assert!(
            matches!(filled(&mut rx).await, LiveUpdate::Filled { .. }),
            "{flavor:?}"
        );
        // With the margin there, the entry goes.
        v.mock.state().funds = dec!(150000);
        router.send(order("th0000000000000m03", "NIFTY28MAR2420800CE", 50));
        assert!(
            matches!(next(&mut rx).await, LiveUpdate::Accepted { .. }),
            "{flavor:?}"
        );
        assert_eq!(v.mock.state().orders.len(), 2, "{flavor:?}");
        settled(&router).await;
    }
}

/// A hedged basket is judged whole, as the broker's basket calculator judges it: its first
/// leg carries the others to the calculator (Kite's `/margins/basket`, Upstox's and OpenAlgo's
/// calculators with every leg), and the later legs are not checked alone again. Leg by leg,
/// the sell would be refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hedged_basket_is_margined_whole_not_leg_by_leg() {
    use tradehost::brokers::live::MarginScope;
    for flavor in FLAVORS {
        let v = venue(flavor);
        {
            let mut s = v.mock.state();
            // Each leg alone: 50 × ₹3,000 = ₹1,50,000, more than the ₹1,00,000 free; the two
            // hedged: a fifth of their ₹3,00,000, ₹60,000.
            s.margin_per_unit = dec!(3000);
            s.funds = dec!(100000);
            s.basket_hedge = dec!(0.2);
        }
        let (router, mut rx) = start(&v, settings(None));
        let contract = "NIFTY28MAR2420800CE";
        let mut buy = order("th0000000000000b01", contract, 50);
        buy.margin_scope = MarginScope::Basket(vec![(
            contract.to_owned(),
            OrderSide::Sell,
            Decimal::from(50),
        )]);
        router.send(buy);
        assert!(
            matches!(next(&mut rx).await, LiveUpdate::Accepted { .. }),
            "{flavor:?}: the basket's margin covers it"
        );
        assert!(
            matches!(filled(&mut rx).await, LiveUpdate::Filled { .. }),
            "{flavor:?}"
        );
        let mut sell = order("th0000000000000b02", contract, 50);
        (sell.side, sell.margin_scope) = (OrderSide::Sell, MarginScope::Checked);
        router.send(sell);
        assert!(
            matches!(next(&mut rx).await, LiveUpdate::Accepted { .. }),
            "{flavor:?}: checked with its basket, not alone"
        );
        let calls: Vec<String> = v
            .mock
            .state()
            .requests
            .iter()
            .filter(|r| r.path.contains("margin") && r.method == "POST")
            .map(|r| format!("{} {}", r.path, r.body))
            .collect();
        assert_eq!(
            calls.len(),
            1,
            "{flavor:?}: one calculation, for the whole basket: {calls:?}"
        );
        if flavor == Flavor::Kite {
            assert!(
                calls[0].starts_with("/margins/basket?consider_positions=true"),
                "{calls:?}"
            );
        }
        assert!(
            calls[0].contains("BUY") && calls[0].contains("SELL"),
            "{flavor:?}: both legs asked: {calls:?}"
        );
        // The same sell alone is refused, with the shortfall.
        let mut alone = order("th0000000000000b03", contract, 50);
        alone.side = OrderSide::Sell;
        router.send(alone);
        match next(&mut rx).await {
            LiveUpdate::Rejected { reason, .. } => assert_eq!(
                reason, "margin: the order needs 150000 and 100000 is free, 50000 short",
                "{flavor:?}"
            ),
            other => panic!("{flavor:?}: {other:?}"),
        }
        settled(&router).await;
    }
}
