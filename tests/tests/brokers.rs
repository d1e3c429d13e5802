//! Each live adapter against a local server answering as the broker's
//! documented API does: success, rejection, 429, timeout, expired token, and
//! a placement that timed out although the broker took the order. Then the
//! router over the real adapters: never a blind retry, a token error pauses
//! one account until a new token arrives.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rust_decimal::Decimal;
use tradehost::brokers::instruments::InstrumentMaster;
use tradehost::brokers::kite::Kite;
use tradehost::brokers::live::{
    AccountLink, LiveNotice, LiveOrder, LiveRouter, LiveUpdate, RouterOutput, RouterSettings,
};
use tradehost::brokers::openalgo::OpenAlgo;
use tradehost::brokers::upstox::Upstox;
use tradehost::brokers::{Broker, BrokerError, BrokerStatus, OrderRequest, Secret, Segment};
use tradehost::bus::Bus;
use tradehost::config::Product;
use tradehost::subscriber::OrderSide;
use tradehost_tests::brokers::{Fault, Flavor, MockServer};

const TIMEOUT: Duration = Duration::from_millis(1000);

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn request(coid: &str, symbol: &str, token: Option<&str>) -> OrderRequest {
    OrderRequest {
        client_order_id: coid.into(),
        submitted_at: None,
        symbol: symbol.into(),
        segment: Segment::of(symbol),
        token: token.map(str::to_owned),
        side: OrderSide::Buy,
        qty: Decimal::from(5),
        product: Product::Mis,
        reference_price: Some(d("1186.00")),
        protection_pct: Decimal::from(2),
        algo_id: None,
        kind: tradehost::brokers::OrderKind::Market,
        validity: tradehost::brokers::Validity::Day,
        autoslice: false,
    }
}

/// The documented-API suite every adapter must pass.
async fn suite(broker: &dyn Broker, mock: &MockServer, req: &OrderRequest) {
    // Session.
    assert!(broker.check_session().await.is_ok());

    // Success: placed, found by our id, filled on the exchange.
    mock.state().ltp.insert(
        req.token.clone().unwrap_or_else(|| req.symbol.clone()),
        d("1187.5"),
    );
    let id = broker.place(req).await.expect("placed");
    let found = broker
        .find(req, &HashSet::new())
        .await
        .unwrap()
        .expect("in the order book");
    assert_eq!(found.order_id, id);
    let filled = broker.status(&id).await.unwrap();
    assert_eq!(filled.status, BrokerStatus::Complete);
    assert_eq!(filled.filled_qty, Decimal::from(5));
    assert_eq!(filled.average_price, Some(d("1187.5")));

    // The position book shows the fill, under the trading symbol.
    let held = broker.positions().await.unwrap();
    assert_eq!(held, vec![(req.symbol.clone(), Decimal::from(5))]);

    // Rejection: a definite refusal, with the broker's message.
    mock.state().faults.push_back(Fault::Reject(
        "Insufficient funds. Required margin is 95417.84".into(),
    ));
    match broker.place(req).await {
        Err(BrokerError::Rejected(m)) => assert!(
            m.contains("Insufficient funds") && m.contains("HTTP 400"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }

    // 429: rate limited, nothing taken.
    let before = mock.state().orders.len();
    mock.state().faults.push_back(Fault::RateLimit);
    assert!(matches!(
        broker.place(req).await,
        Err(BrokerError::RateLimited(_))
    ));
    assert_eq!(mock.state().orders.len(), before);

    // 5xx: ambiguous.
    mock.state().faults.push_back(Fault::ServerError);
    let e = broker.place(req).await.unwrap_err();
    assert!(
        matches!(e, BrokerError::Unavailable(_)) && e.is_ambiguous(),
        "{e:?}"
    );

    // Timeout: the broker took the order but the answer never came in time.
    let slow = OrderRequest {
        client_order_id: format!("{}s", req.client_order_id),
        ..req.clone()
    };
    mock.state()
        .faults
        .push_back(Fault::SlowAccept(TIMEOUT * 3));
    assert_eq!(broker.place(&slow).await, Err(BrokerError::Timeout));
    let claimed: HashSet<String> = HashSet::from([id.clone()]);
    let exists = broker
        .find(&slow, &claimed)
        .await
        .unwrap()
        .expect("the timed-out order exists");
    assert_ne!(exists.order_id, id);

    // Cancel: a filled order cannot be cancelled.
    assert!(matches!(
        broker.cancel(&id).await,
        Err(BrokerError::Rejected(_))
    ));

    // Expired token: every call says so; a new token brings the session back.
    mock.state().token = "rotated-elsewhere".into();
    assert!(matches!(
        broker.place(req).await,
        Err(BrokerError::Token(_))
    ));
    assert!(matches!(
        broker.check_session().await,
        Err(BrokerError::Token(_))
    ));
    mock.state().token = "fresh-token-0042".into();
    broker.set_token(Secret::new("fresh-token-0042"));
    assert!(
        broker.check_session().await.is_ok(),
        "resumed with the new token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kite_connect_v3() {
    let mock = MockServer::start_kind(Flavor::Kite, "kite-api-key-1", "kite-token-1111");
    let kite = Kite::new(
        &mock.url,
        Secret::new("kite-api-key-1"),
        Secret::new("kite-token-1111"),
        TIMEOUT,
    )
    .unwrap();
    let req = request("th00000000000000k1", "RELIANCE", None);
    suite(&kite, &mock, &req).await;
    let s = mock.state();
    let placed = s
        .requests
        .iter()
        .find(|r| r.path == "/orders/regular")
        .unwrap();
    assert_eq!(placed.headers["x-kite-version"], "3");
    assert_eq!(
        placed.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    let first = &s.orders[0].fields;
    assert_eq!(first["tag"], "th00000000000000k1");
    assert_eq!(first["order_type"], "MARKET");
    assert_eq!(
        first["market_protection"], "2",
        "market orders carry market protection"
    );
    assert_eq!(
        (
            first["exchange"].as_str(),
            first["product"].as_str(),
            first["transaction_type"].as_str()
        ),
        ("NSE", "MIS", "BUY")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstox_v3() {
    let mock = MockServer::start_kind(Flavor::Upstox, "", "upstox-token-2222");
    mock.state()
        .symbols
        .insert("NSE_EQ|INE002A01018".into(), "RELIANCE".into());
    let upstox = Upstox::new(&mock.url, Secret::new("upstox-token-2222"), TIMEOUT).unwrap();
    let req = request(
        "th00000000000000u1",
        "RELIANCE",
        Some("NSE_EQ|INE002A01018"),
    );
    suite(&upstox, &mock, &req).await;
    {
        let s = mock.state();
        let first = &s.orders[0].fields;
        assert_eq!(first["instrument_token"], "NSE_EQ|INE002A01018");
        assert_eq!(first["tag"], "th00000000000000u1");
        // Market protection as a collar: a limit 2% through the last price, on the tick.
        assert_eq!(
            (first["order_type"].as_str(), first["price"].as_str()),
            ("LIMIT", "1209.7")
        );
        assert_eq!(first["product"], "I");
    }
    // No instrument token: refused before anything is sent.
    let before = mock.state().requests.len();
    assert!(matches!(
        upstox
            .place(&request("th00000000000000u9", "NOSUCH", None))
            .await,
        Err(BrokerError::Rejected(_))
    ));
    assert_eq!(mock.state().requests.len(), before);
    // A quantity that is not a whole number is refused naming the order, never sent as 0.
    let half = OrderRequest {
        qty: d("1.5"),
        ..request(
            "th00000000000000u8",
            "RELIANCE",
            Some("NSE_EQ|INE002A01018"),
        )
    };
    match upstox.place(&half).await {
        Err(BrokerError::Rejected(reason)) => assert!(
            reason.contains("th00000000000000u8") && reason.contains("1.5"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(mock.state().requests.len(), before);
    // The regulator's algo id goes in Upstox's `X-Algo-Name` header (its SDK's `algo_name`).
    let algo = OrderRequest {
        algo_id: Some("NSE-ALGO-0042".into()),
        ..request(
            "th00000000000000u7",
            "RELIANCE",
            Some("NSE_EQ|INE002A01018"),
        )
    };
    upstox.place(&algo).await.unwrap();
    let s = mock.state();
    let placed = s
        .requests
        .iter()
        .rfind(|r| r.path.starts_with("/v3/order/place"))
        .unwrap();
    assert_eq!(
        placed.headers.get("x-algo-name").map(String::as_str),
        Some("NSE-ALGO-0042")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openalgo_v1() {
    let mock = MockServer::start_kind(Flavor::OpenAlgo, "", "openalgo-key-3333");
    let oa = OpenAlgo::new(
        &mock.url,
        Secret::new("openalgo-key-3333"),
        "tradehost",
        TIMEOUT,
    )
    .unwrap();
    let req = request("th00000000000000o1", "RELIANCE", None);
    suite(&oa, &mock, &req).await;
    {
        let s = mock.state();
        let placed: serde_json::Value = serde_json::from_str(
            &s.requests
                .iter()
                .find(|r| r.path == "/api/v1/placeorder")
                .unwrap()
                .body,
        )
        .unwrap();
        assert_eq!(placed["strategy"], "tradehost");
        assert_eq!(placed["quantity"], "5", "OpenAlgo takes numbers as strings");
        assert_eq!(
            (placed["pricetype"].as_str(), placed["price"].as_str()),
            (Some("LIMIT"), Some("1209.7"))
        );
    }
    // placesmartorder: sized by OpenAlgo to reach the position.
    let id = oa.place_smart(&req, Decimal::ZERO).await.unwrap();
    assert!(
        mock.state()
            .requests
            .iter()
            .any(|r| r.path == "/api/v1/placesmartorder"
                && r.body.contains("\"position_size\":\"0\""))
    );
    assert!(!id.is_empty());
    // Reconciliation: the journal thinks 3 RELIANCE and 2 TCS; the broker holds 5 RELIANCE.
    let journal = std::collections::HashMap::from([
        ("RELIANCE".to_owned(), Decimal::from(3)),
        ("TCS".to_owned(), Decimal::from(2)),
    ]);
    let mismatches = tradehost::brokers::live::reconcile(&oa, &journal)
        .await
        .unwrap();
    assert_eq!(
        mismatches,
        vec![
            tradehost::brokers::live::Mismatch {
                instrument: "RELIANCE".into(),
                journal: Decimal::from(3),
                broker: Decimal::from(5)
            },
            tradehost::brokers::live::Mismatch {
                instrument: "TCS".into(),
                journal: Decimal::from(2),
                broker: Decimal::ZERO
            },
        ]
    );
    let agreed = std::collections::HashMap::from([("RELIANCE".to_owned(), Decimal::from(5))]);
    assert!(
        tradehost::brokers::live::reconcile(&oa, &agreed)
            .await
            .unwrap()
            .is_empty()
    );
}

fn master_with(broker: &str, csv: &str) -> (InstrumentMaster, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{broker}.csv"));
    std::fs::write(&path, csv).unwrap();
    let master = InstrumentMaster::new(Bus::embedded("t"));
    let rt = tokio::runtime::Handle::current();
    let n =
        tokio::task::block_in_place(|| rt.block_on(master.load(broker, path.to_str().unwrap())))
            .unwrap();
    assert!(n > 0);
    (master, dir)
}

const KITE_CSV: &str = "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,lot_size,instrument_type,segment,exchange
738561,2885,RELIANCE,\"RELIANCE INDUSTRIES\",0,,0,0.05,1,EQ,NSE,NSE
12345678,48225,NIFTY28MAR2420800CE,\"NIFTY\",0,2024-03-28,20800,0.05,50,CE,NFO-OPT,NFO
";

fn live_order(coid: &str, instrument: &str, qty: u32) -> LiveOrder {
    LiveOrder::new(
        coid,
        "kite-main",
        instrument,
        OrderSide::Buy,
        Decimal::from(qty),
        Some(d("1186")),
    )
}

async fn next_update(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<RouterOutput>,
    notices: &mut Vec<LiveNotice>,
) -> LiveUpdate {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("the router answers")
            .expect("open")
        {
            RouterOutput::Update(u) => return u,
            RouterOutput::Notice(n) => notices.push(n),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_never_places_blind_and_a_token_error_pauses_one_account() {
    let mock = MockServer::start_kind(Flavor::Kite, "kite-api-key-9", "kite-token-9999");
    // The market the exchange fills at.
    mock.state().ltp.insert("RELIANCE".into(), d("1186"));
    let kite: Arc<dyn Broker> = Arc::new(
        Kite::new(
            &mock.url,
            Secret::new("kite-api-key-9"),
            Secret::new("kite-token-9999"),
            TIMEOUT,
        )
        .unwrap(),
    );
    let (master, _dir) = master_with("kite", KITE_CSV);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let settings = RouterSettings {
        poll: Duration::from_millis(20),
        backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        max_attempts: 6,
        cancel_after: None,
        absent_reads: 3,
    };
    let link = AccountLink {
        account: "kite-main".into(),
        broker: kite,
        product: Product::Mis,
        protection_pct: Decimal::from(2),
        algo_id: None,
        orders_per_sec: 10,
        margin_check: true,
    };
    let router = LiveRouter::start(vec![link], master, settings, tx);
    let mut notices = Vec::new();

    // 1. The placement times out, but the broker took it: found by tag, not placed again.
    mock.state()
        .faults
        .push_back(Fault::SlowAccept(TIMEOUT * 3));
    router.send(live_order("th0000000000000001", "RELIANCE", 5));
    let LiveUpdate::Accepted {
        broker_order_id, ..
    } = next_update(&mut rx, &mut notices).await
    else {
        panic!("accepted")
    };
    assert_eq!(mock.state().orders.len(), 1, "one order at the broker");
    assert_eq!(mock.state().orders[0].id, broker_order_id);
    assert!(matches!(
        next_update(&mut rx, &mut notices).await,
        LiveUpdate::Filled { .. }
    ));
    assert!(
        notices
            .iter()
            .any(|n| matches!(n, LiveNotice::Retrying { reason, .. } if reason == "timed out"))
    );

    // 2. A burst of 429s (placements and look-ups alike): one order in the end.
    mock.state().rate_limit_next = 4;
    router.send(live_order("th0000000000000002", "RELIANCE", 5));
    assert!(matches!(
        next_update(&mut rx, &mut notices).await,
        LiveUpdate::Accepted { .. }
    ));
    assert!(matches!(
        next_update(&mut rx, &mut notices).await,
        LiveUpdate::Filled { .. }
    ));
    assert_eq!(
        mock.state()
            .orders
            .iter()
            .filter(|o| o.tag.as_deref() == Some("th0000000000000002"))
            .count(),
        1
    );
    assert!(notices.iter().any(
        |n| matches!(n, LiveNotice::Retrying { reason, .. } if reason.starts_with("rate limited"))
    ));

    // 3. A 500 on placement that did not take the order: looked for, not found, placed again once.
    mock.state().faults.push_back(Fault::ServerError);
    router.send(live_order("th0000000000000003", "RELIANCE", 5));
    assert!(matches!(
        next_update(&mut rx, &mut notices).await,
        LiveUpdate::Accepted { .. }
    ));
    assert!(matches!(
        next_update(&mut rx, &mut notices).await,
        LiveUpdate::Filled { .. }
    ));
    assert_eq!(
        mock.state()
            .orders
            .iter()
            .filter(|o| o.tag.as_deref() == Some("th0000000000000003"))
            .count(),
        1
    );

    // 4. Unknown symbol, and a quantity that is not whole lots: refused, nothing sent.
    let sent = mock.state().requests.len();
    router.send(live_order("th0000000000000004", "NOSUCH", 5));
    let LiveUpdate::Rejected { reason, .. } = next_update(&mut rx, &mut notices).await else {
        panic!("rejected")
    };
    assert!(reason.contains("unknown symbol NOSUCH"), "{reason}");
    router.send(live_order("th0000000000000005", "NIFTY28MAR2420800CE", 70));
    let LiveUpdate::Rejected { reason, .. } = next_update(&mut rx, &mut notices).await else {
        panic!("rejected")
    };
    assert!(
        reason.contains("not a whole number of lots of 50"),
        "{reason}"
    );
    assert_eq!(
        mock.state().requests.len(),
        sent,
        "nothing reached the broker"
    );

    // 5. The token expires: the account pauses, holds its order, and resumes on a new token.
    mock.state().token = "kite-token-rotated".into();
    router.send(live_order("th0000000000000006", "RELIANCE", 5));
    let paused = loop {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap()
        {
            RouterOutput::Notice(n @ LiveNotice::TokenExpired { .. }) => break n,
            RouterOutput::Notice(_) => {}
            RouterOutput::Update(u) => panic!("nothing may happen while the token is bad: {u:?}"),
        }
    };
    assert!(
        matches!(paused, LiveNotice::TokenExpired { ref account, broker: "kite", .. } if account == "kite-main")
    );
    assert_eq!(router.open_orders(), 1, "the order is held, not lost");
    mock.state().token = "kite-token-new-day".into();
    assert!(router.token("kite-main", Secret::new("kite-token-new-day")));
    assert!(matches!(
        next_update(&mut rx, &mut notices).await,
        LiveUpdate::Accepted { .. }
    ));
    assert!(
        notices
            .iter()
            .any(|n| matches!(n, LiveNotice::Resumed { .. }))
    );
    assert!(matches!(
        next_update(&mut rx, &mut notices).await,
        LiveUpdate::Filled { .. }
    ));
    // The count drops just after the report is sent (so a report is never unaccounted for).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while router.open_orders() > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(router.open_orders(), 0);
    assert!(
        !router.token("nobody", Secret::new("whatever-token")),
        "unknown accounts are refused"
    );

    // 6. The placement times out although taken, and the session dies before the look-up:
    //    after the new token, the order is looked for (and found), not placed a second time.
    mock.state()
        .faults
        .push_back(Fault::SlowAccept(TIMEOUT * 3));
    mock.state().expire_after = Some(1);
    router.send(live_order("th0000000000000007", "RELIANCE", 5));
    loop {
        match tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .unwrap()
            .unwrap()
        {
            RouterOutput::Notice(LiveNotice::TokenExpired { .. }) => break,
            RouterOutput::Notice(_) => {}
            RouterOutput::Update(u) => panic!("nothing may happen while the token is bad: {u:?}"),
        }
    }
    mock.state().token = "kite-token-third-day".into();
    assert!(router.token("kite-main", Secret::new("kite-token-third-day")));
    assert!(matches!(
        next_update(&mut rx, &mut notices).await,
        LiveUpdate::Accepted { .. }
    ));
    assert!(matches!(
        next_update(&mut rx, &mut notices).await,
        LiveUpdate::Filled { .. }
    ));
    assert_eq!(
        mock.state()
            .orders
            .iter()
            .filter(|o| o.tag.as_deref() == Some("th0000000000000007"))
            .count(),
        1,
        "placed once"
    );

    // Every order placed exactly once.
    let s = mock.state();
    let mut tags: Vec<&str> = s.orders.iter().filter_map(|o| o.tag.as_deref()).collect();
    tags.sort_unstable();
    let unique: HashSet<&str> = tags.iter().copied().collect();
    assert_eq!(tags.len(), unique.len(), "{tags:?}");
    assert_eq!(unique.len(), 5);
}

fn fill_message(n: usize) -> String {
    serde_json::json!({ "v": 1, "type": "order", "id": format!("th{n}/filled"), "ts": 1, "mode": "live", "account": "acct-1", "side": "buy", "qty": "5", "instrument": "RELIANCE", "state": "filled", "price": "1187.5" }).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_alerts_are_routed_rate_limited_and_never_lost_silently() {
    let telegram = MockServer::start_kind(Flavor::Telegram, "", "4242:bot-token-telegram-test");
    telegram.state().per_second = 1; // Telegram answers 429 with retry_after = 1 beyond this
    let text = format!(
        "[telegram]\nbase_url = \"{}\"\nchat_id = \"desk\"\nevents = [\"token_expired\"]\nmin_interval_ms = 0\nqueue = 3\n\n[[accounts]]\nid = \"acct-1\"\ncapital = 100000\nnotify = {{ telegram_chat = \"acct-chat\", events = [\"fill\", \"token_expired\"] }}\n",
        telegram.url
    );
    let config = Arc::new(
        tradehost::config::Config::parse(std::path::Path::new("pipelines.toml"), &text).unwrap(),
    );
    let bus = Bus::embedded("trading");
    let sub = bus
        .subscribe(&[bus.channels().orders(), bus.channels().events()])
        .await
        .unwrap();
    let client = tradehost::notify::Telegram::new(
        &telegram.url,
        Secret::new("4242:bot-token-telegram-test"),
    )
    .unwrap();
    let (_tx, rx) = tokio::sync::watch::channel(config.clone());
    tokio::spawn(tradehost::notify::run(
        client,
        config.telegram.clone().unwrap(),
        rx,
        sub,
    ));

    let expired = serde_json::json!({ "v": 1, "type": "event", "id": "e1", "ts": 1, "event": "token_expired", "account": "acct-1", "broker": "kite", "reason": "HTTP 403" }).to_string();
    bus.publish(&bus.channels().events(), &expired)
        .await
        .unwrap();
    for n in 0..10 {
        bus.publish(&bus.channels().orders(), &fill_message(n))
            .await
            .unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        let both = {
            let s = telegram.state();
            s.messages
                .iter()
                .any(|(_, t)| t.contains("earlier alerts dropped"))
                && s.messages.iter().any(|(c, _)| c == "desk")
        };
        if both {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = telegram.state();
    let to = |chat: &str| {
        s.messages
            .iter()
            .filter(|(c, _)| c == chat)
            .map(|(_, t)| t.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        to("desk").len(),
        1,
        "the desk asked for token alerts only: {:?}",
        to("desk")
    );
    assert!(to("desk")[0].starts_with("Token expired acct-1 (kite)"));
    let account = to("acct-chat");
    assert!(
        account
            .iter()
            .any(|t| t.starts_with("Filled [live] acct-1: BUY 5 RELIANCE @ 1187.5")),
        "{account:?}"
    );
    // At most a queue's worth waits; what was dropped is counted, never silently lost.
    assert!(account.len() < 11, "{account:?}");
    assert!(
        account
            .iter()
            .any(|t| t.contains("earlier alerts dropped by the rate limit")),
        "{account:?}"
    );
    // Telegram's 429s were met and obeyed: no two sends to the mock within its window succeeded past its limit.
    assert!(
        s.requests.len() > s.messages.len(),
        "some sends were refused with 429 and retried"
    );
    assert!(
        s.requests
            .iter()
            .all(|r| r.path == "/bot4242:bot-token-telegram-test/sendMessage")
    );
}
