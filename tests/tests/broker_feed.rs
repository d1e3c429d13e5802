//! Broker market feeds against a local Kite ticker that speaks the documented
//! wire format: subscription and mode requests, candles from full-mode ticks
//! by exchange time, a half frame and a malformed packet, a reconnect
//! mid-stream with resubscription and no duplicate bar, a stale feed, refused
//! prices, 5,000 instruments over two connections, and the recorder read back
//! by the replay source.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rust_decimal::Decimal;
use tokio::sync::mpsc;
use tradehost::market::feed::socket::SocketSettings;
use tradehost::market::feed::{Connector, FeedAddress, FeedPlan, Wire};
use tradehost::market::guard::GuardRules;
use tradehost::market::recorder::TickRecorder;
use tradehost::market::source::{
    BrokerFeedOptions, MarketEvent, StaleSet, broker_feed, load_replay,
};
use tradehost_tests::kite_ticker::{Full, KiteTicker, Push, index_packet, ltp_packet, message};

/// 2024-01-01 09:15:00 IST (a Monday), Unix seconds.
const T0: u32 = 1_704_080_700;
const NIFTY_FUT: u32 = 12_345_602; // segment byte 2: NFO
const NIFTY_INDEX: u32 = 256_265;

type Reports = Arc<Mutex<Vec<(String, serde_json::Value)>>>;

/// A configuration in `dir` whose accounts' secrets are `secrets` (a secrets file readable by
/// its owner only), loaded; with the watch the resolvers read it from (keep the sender).
fn configured(
    dir: &std::path::Path,
    secrets: &str,
    text: &str,
) -> (
    std::sync::Arc<tradehost::config::Config>,
    tokio::sync::watch::Sender<std::sync::Arc<tradehost::config::Config>>,
    tokio::sync::watch::Receiver<std::sync::Arc<tradehost::config::Config>>,
) {
    let path = dir.join("secrets.toml");
    std::fs::write(&path, secrets).unwrap();
    std::fs::set_permissions(
        &path,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
    )
    .unwrap();
    let cfg_path = dir.join("pipelines.toml");
    std::fs::write(&cfg_path, text).unwrap();
    let config = std::sync::Arc::new(
        tradehost::config::Config::load(&cfg_path).unwrap_or_else(|e| panic!("{e}")),
    );
    let (keep, configs) = tokio::sync::watch::channel(config.clone());
    (config, keep, configs)
}

struct Feed {
    candles: mpsc::Receiver<MarketEvent>,
    reports: Reports,
    stale: StaleSet,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn plan(url: &str, instruments: Vec<(String, String)>) -> FeedPlan {
    let url = format!("{url}/?api_key=key1&access_token=tok1");
    let connect: Connector = Arc::new(move || {
        let url = url.clone();
        Box::pin(async move { Ok(FeedAddress::url(url)) })
    });
    FeedPlan {
        account: "kite-1".into(),
        wire: Wire::Kite,
        instruments,
        connect,
        backfill: None,
    }
}

fn start(plan: FeedPlan, stale_secs: u64, recorder: Option<TickRecorder>) -> Feed {
    start_with_chain(plan, stale_secs, recorder, None, 0)
}

fn start_with_chain(
    plan: FeedPlan,
    stale_secs: u64,
    recorder: Option<TickRecorder>,
    chain: Option<(tradehost::market::feed::ChainSource, Duration)>,
    strikes: usize,
) -> Feed {
    let (tx, candles) = mpsc::channel(100_000);
    let reports: Reports = Arc::default();
    let stale = StaleSet::default();
    let options = BrokerFeedOptions {
        timeframe_secs: 60,
        // A historical day replayed through the socket: no clock-skew check.
        rules: GuardRules {
            max_skew_ms: 0,
            ..GuardRules::default()
        },
        stale_secs,
        recorder,
        socket: SocketSettings {
            idle: Duration::from_secs(5),
            first_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
        },
        chain,
        strikes,
    };
    let (r, s) = (reports.clone(), stale.clone());
    let task = tokio::spawn(async move {
        broker_feed(
            plan,
            options,
            s,
            &tx,
            move |e: tradehost::bus::events::Event| {
                r.lock().unwrap().push((e.name().to_owned(), e.fields()))
            },
        )
        .await
        .map_err(|e| e.to_string())
    });
    Feed {
        candles,
        reports,
        stale,
        task,
    }
}

impl Feed {
    async fn wait_report(&self, kind: &str, n: usize) -> Vec<serde_json::Value> {
        for _ in 0..400 {
            let found: Vec<serde_json::Value> = self
                .reports
                .lock()
                .unwrap()
                .iter()
                .filter(|(k, _)| k == kind)
                .map(|(_, v)| v.clone())
                .collect();
            if found.len() >= n {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "no {n} {kind} reports in 10 s; got {:?}",
            self.reports.lock().unwrap()
        );
    }

    async fn candle(&mut self) -> (String, tradehost::market::Bar, Option<Decimal>) {
        match tokio::time::timeout(Duration::from_secs(10), self.candles.recv()).await {
            Ok(Some(MarketEvent::Candle {
                instrument,
                bar,
                bid,
                ..
            })) => (instrument, bar, bid),
            other => panic!("expected a candle, got {other:?}"),
        }
    }
}

async fn wait_until(what: &str, f: impl Fn() -> bool) {
    for _ in 0..400 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

fn full(token: u32, rupees: u32, volume: u32, secs: u32) -> Vec<u8> {
    full_closed_at(token, rupees, 0, volume, secs)
}

/// A full packet whose `close` (the previous session's) is `close_rupees` (0: none sent).
fn full_closed_at(token: u32, rupees: u32, close_rupees: u32, volume: u32, secs: u32) -> Vec<u8> {
    Full {
        token,
        last_paise: rupees * 100,
        close_paise: close_rupees * 100,
        volume,
        oi: 7_500,
        exchange_secs: secs,
        bid_paise: rupees * 100 - 5,
        ask_paise: rupees * 100 + 5,
    }
    .packet()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kite_ticks_become_candles_through_faults() {
    let ticker = KiteTicker::start("key1", "tok1").await;
    let dir = tempfile::tempdir().unwrap();
    let instruments = vec![
        ("NIFTY24JANFUT".to_owned(), NIFTY_FUT.to_string()),
        ("NIFTY".to_owned(), NIFTY_INDEX.to_string()),
    ];
    let mut feed = start(
        plan(&ticker.url(), instruments),
        0,
        Some(TickRecorder::new(dir.path(), "kite-test")),
    );
    feed.wait_report("feed_connected", 1).await;

    // The documented requests: subscribe, then full mode, tokens as numbers.
    wait_until("the subscription", || {
        ticker.seen(|s| s.requests.get(&0).is_some_and(|r| r.len() >= 2))
    })
    .await;
    let requests = ticker.seen(|s| s.requests.get(&0).cloned().unwrap_or_default());
    assert_eq!(
        requests[0],
        serde_json::json!({ "a": "subscribe", "v": [NIFTY_FUT, NIFTY_INDEX] })
    );
    assert_eq!(
        requests[1],
        serde_json::json!({ "a": "mode", "v": ["full", [NIFTY_FUT, NIFTY_INDEX]] })
    );

    // Minute 09:15: three ticks in one message, a heartbeat, an index tick, an LTP packet (no time: no candle).
    ticker.push(Push::Binary(message(&[
        full(NIFTY_FUT, 21_700, 1_000, T0 + 1),
        full(NIFTY_FUT, 21_750, 1_600, T0 + 20),
        full(NIFTY_FUT, 21_690, 1_900, T0 + 59),
    ])));
    ticker.push(Push::Binary(vec![0]));
    ticker.push(Push::Binary(message(&[
        index_packet(NIFTY_INDEX, 2_170_000, T0 + 2),
        ltp_packet(NIFTY_FUT, 9_999_900),
    ])));
    // A malformed packet (13 bytes) and a half frame (two packets announced, one there): the good one before the fault stands.
    let mut odd = full(NIFTY_FUT, 21_700, 1_900, T0 + 59);
    odd.truncate(13);
    ticker.push(Push::Binary(message(&[odd])));
    let mut half = message(&[full(NIFTY_FUT, 21_720, 2_000, T0 + 59)]);
    half[1] = 2;
    ticker.push(Push::Binary(half));
    // A price of zero is refused, never a bar's low.
    ticker.push(Push::Binary(message(&[Full {
        token: NIFTY_FUT,
        last_paise: 0,
        close_paise: 2_165_000,
        volume: 2_000,
        oi: 0,
        exchange_secs: T0 + 59,
        bid_paise: 0,
        ask_paise: 0,
    }
    .packet()])));
    // 09:16 closes 09:15.
    ticker.push(Push::Binary(message(&[full(
        NIFTY_FUT,
        21_730,
        2_300,
        T0 + 61,
    )])));

    let (instrument, bar, bid) = feed.candle().await;
    assert_eq!(instrument, "NIFTY24JANFUT");
    assert_eq!(bar.ts_ms, i64::from(T0) * 1000);
    assert_eq!(
        (bar.open, bar.high, bar.low, bar.close),
        (
            Decimal::from(21_700),
            Decimal::from(21_750),
            Decimal::from(21_690),
            Decimal::from(21_720)
        )
    );
    assert_eq!(
        bar.volume, 1_000,
        "volume is the day volume's rise within the bar (1,000 → 2,000)"
    );
    assert_eq!(bar.oi, 7_500);
    assert_eq!(
        bid,
        Some(Decimal::new(2_171_995, 2)),
        "the best bid of the bar's last tick"
    );
    let errors = feed.wait_report("error", 2).await;
    let text = serde_json::to_string(&errors).unwrap();
    assert!(
        text.contains("13 bytes"),
        "the malformed packet is reported: {text}"
    );
    assert!(
        text.contains("NIFTY24JANFUT: last 0.00 is not a positive price"),
        "the zero price is refused by instrument and field: {text}"
    );

    // Drop the connection mid-minute: the client reconnects and subscribes again; the
    // broker's snapshot repeats the last tick, which makes no second bar.
    ticker.push(Push::Drop);
    feed.wait_report("feed_down", 1).await;
    feed.wait_report("feed_reconnected", 1).await;
    wait_until("the resubscription", || {
        ticker.seen(|s| s.requests.get(&1).is_some_and(|r| r.len() >= 2))
    })
    .await;
    assert_eq!(
        ticker.seen(|s| s.requests[&1][0].clone()),
        serde_json::json!({ "a": "subscribe", "v": [NIFTY_FUT, NIFTY_INDEX] })
    );
    ticker.push(Push::Binary(message(&[
        full(NIFTY_FUT, 21_730, 2_300, T0 + 61),
        full(NIFTY_FUT, 21_740, 2_400, T0 + 90),
    ])));
    ticker.push(Push::Binary(message(&[full(
        NIFTY_FUT,
        21_745,
        2_500,
        T0 + 121,
    )])));
    let gap = feed.wait_report("feed_gap", 1).await;
    assert_eq!(gap[0]["bar_ts"], i64::from(T0 + 60) * 1000);
    assert_eq!(gap[0]["straddles"], true);
    // The index's 09:15 bar closes when the feed's time passes 09:16 + 2 s.
    let mut bars = Vec::new();
    while bars.len() < 2 {
        let (i, b, _) = feed.candle().await;
        bars.push((i, b.ts_ms, b.open, b.close));
    }
    bars.sort();
    assert_eq!(
        bars[0],
        (
            "NIFTY".into(),
            i64::from(T0) * 1000,
            Decimal::from(21_700),
            Decimal::from(21_700)
        )
    );
    assert_eq!(
        bars[1],
        (
            "NIFTY24JANFUT".into(),
            i64::from(T0 + 60) * 1000,
            Decimal::from(21_730),
            Decimal::from(21_740)
        ),
        "one 09:16 bar across the reconnect"
    );
    assert!(feed.candles.try_recv().is_err(), "no duplicate bar");

    // The recording replays to the same bars.
    drop(feed);
    // One folder: the host's IST day of the recording.
    let day = std::fs::read_dir(dir.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let replayed = load_replay(&[day], None, 60).unwrap();
    let replayed: Vec<(String, i64, Decimal, Decimal)> = replayed
        .iter()
        .filter_map(|e| match e {
            MarketEvent::Candle {
                instrument, bar, ..
            } => Some((instrument.clone(), bar.ts_ms, bar.open, bar.close)),
            MarketEvent::Chain(_) => None,
        })
        .collect();
    assert!(
        replayed.contains(&bars[0]) && replayed.contains(&bars[1]),
        "{replayed:?}"
    );
    assert!(
        replayed.iter().any(|b| b.0 == "NIFTY24JANFUT"
            && b.1 == i64::from(T0) * 1000
            && b.3 == Decimal::from(21_720)),
        "the first bar, refused tick left out: {replayed:?}"
    );
}

/// The price band re-anchors on a real move and never on a burst of absurd prices: through
/// the Kite ticker (its full packets carry the previous close, ₹21,650), fifty ticks in a row
/// at ten times the price are refused throughout and reach no candle; a 25 % move that holds
/// for five ticks is a `price_gap` and the candles go on at the new level; the first tick
/// after an hour's outage, 22 % away, is a gap at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_band_re_anchors_on_a_gap_and_never_on_absurd_ticks() {
    let ticker = KiteTicker::start("key1", "tok1").await;
    let instruments = vec![("NIFTY24JANFUT".to_owned(), NIFTY_FUT.to_string())];
    let mut feed = start(plan(&ticker.url(), instruments), 0, None);
    feed.wait_report("feed_connected", 1).await;
    wait_until("the subscription", || {
        ticker.seen(|s| s.requests.get(&0).is_some_and(|r| r.len() >= 2))
    })
    .await;
    let send = |ticks: &[(u32, u32)]| {
        let packets: Vec<Vec<u8>> = ticks
            .iter()
            .enumerate()
            .map(|(i, (rupees, secs))| {
                full_closed_at(NIFTY_FUT, *rupees, 21_650, 1_000 + i as u32, *secs)
            })
            .collect();
        ticker.push(Push::Binary(message(&packets)));
    };
    send(&[(21_700, T0 + 1), (21_710, T0 + 30)]);
    // 09:16: fifty ticks at ten times the price, one a second, then a true one.
    let absurd: Vec<(u32, u32)> = (0..50).map(|n| (217_000, T0 + 61 + n)).collect();
    send(&absurd);
    send(&[(21_705, T0 + 111)]);
    // 09:17: results: 25 % up, held for five ticks.
    send(&[
        (27_125, T0 + 121),
        (27_130, T0 + 122),
        (27_120, T0 + 123),
        (27_125, T0 + 124),
        (27_125, T0 + 125),
        (27_150, T0 + 150),
    ]);
    send(&[(27_160, T0 + 181)]);
    // An hour's outage; the first tick after it is 22 % lower.
    send(&[
        (21_000, T0 + 3_781),
        (21_010, T0 + 3_810),
        (21_020, T0 + 3_845),
    ]);

    let mut bars = Vec::new();
    while bars.len() < 5 {
        let (_, b, _) = feed.candle().await;
        bars.push((
            b.ts_ms / 1000 - i64::from(T0),
            b.open,
            b.high,
            b.low,
            b.close,
        ));
    }
    bars.sort();
    let d = Decimal::from;
    assert_eq!(
        bars,
        vec![
            (0, d(21_700), d(21_710), d(21_700), d(21_710)),
            (60, d(21_705), d(21_705), d(21_705), d(21_705)),
            // Every tick of the gap's minute, the four refused until it was believed too:
            // the bar a backtest of these ticks makes (its low is the third tick's).
            (120, d(27_125), d(27_150), d(27_120), d(27_150)),
            (180, d(27_160), d(27_160), d(27_160), d(27_160)),
            (3_780, d(21_000), d(21_010), d(21_000), d(21_010)),
        ],
        "no absurd price in any bar; the gap's bars at their new level, from its first tick"
    );
    let gaps = feed.wait_report("price_gap", 2).await;
    assert_eq!(
        (gaps[0]["from"].as_str(), gaps[0]["to"].as_str()),
        (Some("21705.00"), Some("27125.00")),
        "{gaps:?}"
    );
    assert!(
        gaps[0]["why"].as_str().unwrap().contains("5 ticks"),
        "{gaps:?}"
    );
    assert_eq!(
        (gaps[1]["from"].as_str(), gaps[1]["to"].as_str()),
        (Some("27160.00"), Some("21000.00")),
        "{gaps:?}"
    );
    assert!(
        gaps[1]["why"]
            .as_str()
            .unwrap()
            .contains("3600 s without one"),
        "{gaps:?}"
    );
    let errors = feed.wait_report("error", 1).await;
    let text = serde_json::to_string(&errors).unwrap();
    assert!(
        text.contains("217000.00 is beyond 3x of the reference 21650.00: never believed"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_feed_is_stale_until_ticks_come_again() {
    let ticker = KiteTicker::start("key1", "tok1").await;
    let feed = start(
        plan(
            &ticker.url(),
            vec![("NIFTY".into(), NIFTY_INDEX.to_string())],
        ),
        1,
        None,
    );
    feed.wait_report("feed_connected", 1).await;
    ticker.push(Push::Binary(message(&[index_packet(
        NIFTY_INDEX,
        2_170_000,
        T0 + 600,
    )])));
    // Heartbeats keep the socket up, but no price comes: stale in market hours (by the feed's time).
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        ticker.push(Push::Binary(vec![0]));
    }
    let stale = feed.wait_report("feed_stale", 1).await;
    assert_eq!(stale[0]["alert"], true);
    assert!(
        feed.stale.lock().unwrap().contains("NIFTY"),
        "entries on NIFTY are held"
    );
    assert_eq!(ticker.open(), 1, "heartbeats kept the connection");
    ticker.push(Push::Binary(message(&[index_packet(
        NIFTY_INDEX,
        2_170_500,
        T0 + 602,
    )])));
    feed.wait_report("feed_fresh", 1).await;
    assert!(feed.stale.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_instruments_over_two_connections() {
    let ticker = KiteTicker::start("key1", "tok1").await;
    let instruments: Vec<(String, String)> = (0..5_000u32)
        .map(|i| (format!("S{i}"), ((i + 1) << 8 | 1).to_string()))
        .collect();
    let mut feed = start(plan(&ticker.url(), instruments), 0, None);
    feed.wait_report("feed_connected", 2).await;
    wait_until("both subscriptions", || {
        ticker.seen(|s| s.requests.len() == 2 && s.requests.values().all(|r| r.len() >= 2))
    })
    .await;
    let mut sizes: Vec<usize> = ticker.seen(|s| {
        s.requests
            .values()
            .map(|r| r[0]["v"].as_array().map_or(0, Vec::len))
            .collect()
    });
    sizes.sort_unstable();
    assert_eq!(
        sizes,
        vec![2_000, 3_000],
        "Kite allows 3,000 instruments a connection"
    );
    // One tick per instrument in 09:15, then one in 09:16: 5,000 bars. Both connections
    // get every push, so each bar's ticks arrive twice (same time): still one bar each.
    for minute in 0..2u32 {
        for chunk in (0..5_000u32).collect::<Vec<_>>().chunks(500) {
            let packets: Vec<Vec<u8>> = chunk
                .iter()
                .map(|i| {
                    full(
                        (i + 1) << 8 | 1,
                        100 + minute,
                        10 * (minute + 1),
                        T0 + 60 * minute + 1,
                    )
                })
                .collect();
            ticker.push(Push::Binary(message(&packets)));
        }
    }
    let mut seen = std::collections::HashSet::new();
    while seen.len() < 5_000 {
        let (i, b, _) = feed.candle().await;
        assert_eq!(b.ts_ms, i64::from(T0) * 1000);
        assert!(seen.insert(i), "one bar per instrument");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_refused_and_retried_without_leaking_it() {
    let ticker = KiteTicker::start("key1", "other-token").await;
    let feed = start(
        plan(
            &ticker.url(),
            vec![("NIFTY".into(), NIFTY_INDEX.to_string())],
        ),
        0,
        None,
    );
    let down = feed.wait_report("feed_down", 2).await;
    let text = serde_json::to_string(&down).unwrap();
    assert!(text.contains("403"), "{text}");
    assert!(
        !text.contains("tok1") && !text.contains("key1"),
        "credentials never reach a report: {text}"
    );
    ticker.set_token("tok1");
    feed.wait_report("feed_connected", 1).await;
    assert!(ticker.seen(|s| s.refused) >= 2);
}

/// Upstox's instrument master: an index and a future, keys as Upstox names them.
const UPSTOX_INSTRUMENTS: &str = "instrument_key,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,lot_size,instrument_type,option_type,exchange
NSE_INDEX|Nifty 50,,NIFTY,Nifty 50,0,,,0,,INDEX,,NSE_INDEX
NSE_FO|48225,48225,NIFTY24JANFUT,NIFTY,0,2024-01-25,,0.05,50,FUTIDX,,NSE_FO
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstox_v3_protobuf_ticks_through_a_one_time_address() {
    use tradehost_tests::brokers::{Flavor, MockServer};
    use tradehost_tests::upstox_feed::{index_frame, market_frame};
    let ws = KiteTicker::start_with(&[("requestId", "r1"), ("code", "one-time-1")]).await;
    let rest = MockServer::start_kind(Flavor::Upstox, "", "up-tok");
    rest.state().feed_url = Some(format!(
        "{}/market-data-feeder/v3/upstox-developer-api/feeds?requestId=r1&code=one-time-1",
        ws.url()
    ));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("upstox.csv"), UPSTOX_INSTRUMENTS).unwrap();
    let text = format!(
        "[live]\ninstruments = {{ upstox = \"upstox.csv\" }}\n\n[[accounts]]\nid = \"up-1\"\nbroker = \"upstox\"\nbase_url = \"{}\"\ncapital = 100000\n\n[[pipelines]]\nid = \"p\"\nplugin = \"ma_crossover.wasm\"\nsymbols = [\"NIFTY24JANFUT\", \"NIFTY\"]\naccounts = [\"up-1\"]\nsource = {{ kind = \"broker\", account = \"up-1\" }}\n",
        rest.url
    );
    let (_config, _keep, configs) = configured(
        dir.path(),
        "[accounts.up-1]\naccess_token = \"up-tok\"\n",
        &text,
    );
    let resolve = tradehost::brokers::feeds::resolver(
        configs,
        tradehost::bus::Bus::embedded("t"),
        Default::default(),
    );
    let plan = resolve("up-1".into(), vec!["NIFTY24JANFUT".into(), "NIFTY".into()])
        .await
        .unwrap();
    assert_eq!(
        plan.instruments,
        vec![
            ("NIFTY24JANFUT".to_owned(), "NSE_FO|48225".to_owned()),
            ("NIFTY".to_owned(), "NSE_INDEX|Nifty 50".to_owned())
        ]
    );
    let mut feed = start(plan, 0, None);
    feed.wait_report("feed_connected", 1).await;
    wait_until("the subscription", || {
        ws.seen(|s| s.requests.get(&0).is_some_and(|r| !r.is_empty()))
    })
    .await;
    let sub = ws.seen(|s| s.requests[&0][0].clone());
    assert_eq!(
        (sub["method"].as_str(), sub["data"]["mode"].as_str()),
        (Some("sub"), Some("full"))
    );
    assert_eq!(
        sub["data"]["instrumentKeys"],
        serde_json::json!(["NSE_FO|48225", "NSE_INDEX|Nifty 50"])
    );
    assert_eq!(
        ws.seen(|s| s.binary_requests),
        1,
        "Upstox takes requests as binary frames"
    );
    let authorize = |r: &tradehost_tests::brokers::Request| {
        r.path.starts_with("/v3/feed/market-data-feed/authorize")
            && r.headers.get("authorization").map(String::as_str) == Some("Bearer up-tok")
    };
    assert_eq!(
        rest.state()
            .requests
            .iter()
            .filter(|r| authorize(r))
            .count(),
        1
    );

    let t0 = i64::from(T0) * 1000;
    ws.push(Push::Binary(market_frame(&[(
        "NSE_FO|48225",
        21_760.0,
        t0 + 1_000,
        1_000,
        21_759.95,
        21_760.05,
    )])));
    ws.push(Push::Binary(market_frame(&[(
        "NSE_FO|48225",
        21_790.5,
        t0 + 30_000,
        1_400,
        21_790.0,
        21_791.0,
    )])));
    ws.push(Push::Binary(index_frame(
        "NSE_INDEX|Nifty 50",
        21_700.05,
        t0 + 2_000,
    )));
    ws.push(Push::Binary(vec![0x0a, 0xff, 0x01]));
    ws.push(Push::Binary(market_frame(&[(
        "NSE_FO|48225",
        21_770.0,
        t0 + 59_000,
        1_900,
        21_769.95,
        21_770.05,
    )])));
    ws.push(Push::Binary(market_frame(&[(
        "NSE_FO|48225",
        21_780.0,
        t0 + 61_000,
        2_000,
        21_779.95,
        21_780.05,
    )])));
    let (instrument, bar, bid) = feed.candle().await;
    assert_eq!(instrument, "NIFTY24JANFUT");
    assert_eq!(
        (
            bar.ts_ms, bar.open, bar.high, bar.low, bar.close, bar.volume, bar.oi
        ),
        (
            t0,
            Decimal::from(21_760),
            Decimal::new(217_905, 1),
            Decimal::from(21_760),
            Decimal::from(21_770),
            900,
            12_000
        )
    );
    assert_eq!(bid, Some(Decimal::new(2_176_995, 2)));
    let errors = feed.wait_report("error", 1).await;
    assert!(
        serde_json::to_string(&errors)
            .unwrap()
            .contains("not a FeedResponse"),
        "{errors:?}"
    );

    // A drop: the next connection asks for a new one-time address first.
    ws.push(Push::Drop);
    feed.wait_report("feed_reconnected", 1).await;
    assert_eq!(
        rest.state()
            .requests
            .iter()
            .filter(|r| authorize(r))
            .count(),
        2
    );
    wait_until("the resubscription", || {
        ws.seen(|s| s.requests.get(&1).is_some_and(|r| !r.is_empty()))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openalgo_depth_updates_after_authentication() {
    // OpenAlgo's proxy: no credentials in the address; the API key is the first message.
    let ws = KiteTicker::start_with(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[[accounts]]\nid = \"oa-1\"\nbroker = \"openalgo\"\nws_url = \"{}\"\ncapital = 100000\n\n[[pipelines]]\nid = \"p\"\nplugin = \"ma_crossover.wasm\"\nsymbols = [\"RELIANCE\", \"NIFTY\"]\naccounts = [\"oa-1\"]\nsource = {{ kind = \"broker\", account = \"oa-1\", max_skew_secs = 0 }}\n",
        ws.url()
    );
    let (_config, _keep, configs) = configured(
        dir.path(),
        "[accounts.oa-1]\napi_key = \"oa-key-123\"\n",
        &text,
    );
    let resolve = tradehost::brokers::feeds::resolver(
        configs,
        tradehost::bus::Bus::embedded("t"),
        Default::default(),
    );
    let plan = resolve("oa-1".into(), vec!["RELIANCE".into(), "NIFTY".into()])
        .await
        .unwrap();
    let mut feed = start(plan, 0, None);
    feed.wait_report("feed_connected", 1).await;
    wait_until("authentication and subscription", || {
        ws.seen(|s| s.requests.get(&0).is_some_and(|r| r.len() >= 2))
    })
    .await;
    let requests = ws.seen(|s| s.requests[&0].clone());
    assert_eq!(
        requests[0],
        serde_json::json!({ "action": "authenticate", "api_key": "oa-key-123" })
    );
    assert_eq!(requests[1]["action"], "subscribe");
    assert_eq!(requests[1]["mode"], 3);
    assert_eq!(
        requests[1]["symbols"],
        serde_json::json!([{ "exchange": "NSE", "symbol": "RELIANCE" }, { "exchange": "NSE_INDEX", "symbol": "NIFTY" }])
    );

    let t0 = i64::from(T0) * 1000;
    // As OpenAlgo's depth documentation shows a market_data message: `ltt` the exchange's
    // time of the trade, `timestamp` the proxy's clock when it relayed it (now, hours later).
    let relayed = tradehost::domain::time::now_ms();
    let tick = |ltp: f64, volume: u64, ts: i64| {
        serde_json::json!({ "type": "market_data", "symbol": "RELIANCE", "exchange": "NSE", "mode": 3, "broker": "zerodha",
            "data": { "ltp": ltp, "ltq": 100, "open": 1172.0, "high": 1196.6, "low": 1163.3, "close": 1165.7, "volume": volume,
                "totalbuyqty": 591_351, "totalsellqty": 835_701,
                "depth": { "buy": [{ "price": ltp - 0.05, "quantity": 886, "orders": 4 }], "sell": [{ "price": ltp + 0.05, "quantity": 767, "orders": 3 }] },
                "ltt": ts, "timestamp": relayed } })
        .to_string()
    };
    ws.push(Push::Text(serde_json::json!({ "type": "auth", "status": "success", "message": "Authentication successful" }).to_string()));
    ws.push(Push::Text(tick(1187.75, 14_414_545, t0 + 1_000)));
    ws.push(Push::Text(tick(1190.0, 14_415_000, t0 + 40_000)));
    ws.push(Push::Text("{not json".into()));
    ws.push(Push::Text(tick(1188.5, 14_415_500, t0 + 61_000)));
    let (instrument, bar, bid) = feed.candle().await;
    assert_eq!(instrument, "RELIANCE");
    assert_eq!(
        (bar.ts_ms, bar.open, bar.high, bar.close, bar.volume),
        (
            t0,
            Decimal::new(118_775, 2),
            Decimal::from(1190),
            Decimal::from(1190),
            455
        )
    );
    assert_eq!(bid, Some(Decimal::new(118_995, 2)));
    let errors = feed.wait_report("error", 1).await;
    assert!(
        serde_json::to_string(&errors).unwrap().contains("not JSON"),
        "{errors:?}"
    );
    // A refusal from the proxy is reported as the broker's error.
    ws.push(Push::Text(
        serde_json::json!({ "type": "error", "message": "Invalid API key" }).to_string(),
    ));
    let errors = feed.wait_report("error", 2).await;
    assert!(
        serde_json::to_string(&errors)
            .unwrap()
            .contains("Invalid API key"),
        "{errors:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstox_option_chains_come_with_the_ticks() {
    use tradehost_tests::brokers::{Flavor, MockServer, upstox_chain_row, upstox_nifty_rows};
    use tradehost_tests::upstox_feed::{GreeksUpdate, greeks_frame};
    let ws = KiteTicker::start_with(&[("code", "c1")]).await;
    let rest = MockServer::start_kind(Flavor::Upstox, "", "up-tok");
    let today = tradehost::market::clock::format_ist_date(tradehost::domain::time::now_ms());
    {
        let mut s = rest.state();
        s.feed_url = Some(format!("{}/feeds?code=c1", ws.url()));
        // An expired contract, the nearest live one, and a later one: the nearest on or after today is taken.
        s.option_contracts = vec![
            serde_json::json!({ "expiry": "2024-01-04", "instrument_key": "NSE_FO|1" }),
            serde_json::json!({ "expiry": "2099-12-31", "instrument_key": "NSE_FO|3" }),
            serde_json::json!({ "expiry": today, "instrument_key": "NSE_FO|2" }),
        ];
        s.option_chain
            .insert(today.clone(), upstox_nifty_rows(&today));
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("upstox.csv"), UPSTOX_INSTRUMENTS).unwrap();
    let text = format!(
        "[live]\ninstruments = {{ upstox = \"upstox.csv\" }}\n\n[[accounts]]\nid = \"up-1\"\nbroker = \"upstox\"\nbase_url = \"{}\"\ncapital = 100000\n\n[[pipelines]]\nid = \"p\"\nplugin = \"oi_crossover.wasm\"\nsymbols = [\"NIFTY\"]\naccounts = [\"up-1\"]\nsource = {{ kind = \"broker\", account = \"up-1\", chain_secs = 1 }}\n",
        rest.url
    );
    let (_config, _keep, configs) = configured(
        dir.path(),
        "[accounts.up-1]\naccess_token = \"up-tok\"\n",
        &text,
    );
    let bus = tradehost::bus::Bus::embedded("t");
    let plan = tradehost::brokers::feeds::resolver(
        configs.clone(),
        bus.clone(),
        Default::default(),
    )("up-1".into(), vec!["NIFTY".into()])
    .await
    .unwrap();
    let chain = tradehost::brokers::feeds::chain_resolver(configs, bus, Default::default())(
        "up-1".into(),
        "NIFTY".into(),
        None,
    )
    .await
    .unwrap();
    let rec_dir = tempfile::tempdir().unwrap();
    // ATM ± 1 strike: the options around the money are subscribed on the feed too.
    let mut feed = start_with_chain(
        plan,
        0,
        Some(TickRecorder::new(rec_dir.path(), "p")),
        Some((chain, Duration::from_millis(200))),
        1,
    );
    let mut snapshots = Vec::new();
    while snapshots.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(10), feed.candles.recv()).await {
            Ok(Some(MarketEvent::Chain(c))) => snapshots.push(c),
            other => panic!("expected option chains, got {other:?}"),
        }
    }
    let requests = || ws.seen(|s| s.requests.get(&0).cloned().unwrap_or_default());
    wait_until("the strikes around the money", || requests().len() >= 2).await;
    assert_eq!(requests()[1]["method"], "sub");
    // The index in full mode; the options in option_greeks mode, which carries their greeks.
    assert_eq!(
        (
            &requests()[0]["data"]["mode"],
            &requests()[1]["data"]["mode"]
        ),
        (
            &serde_json::json!("full"),
            &serde_json::json!("option_greeks")
        )
    );
    assert_eq!(
        requests()[1]["data"]["instrumentKeys"],
        serde_json::json!([
            "NSE_FO|217001",
            "NSE_FO|217002",
            "NSE_FO|218001",
            "NSE_FO|218002"
        ]),
        "ATM 21,700 (spot 21,712.5) and one strike either side there is"
    );
    // An option tick makes a candle under the option's own symbol; its greeks go into the
    // next chain, fresher than the chain's own.
    let t0 = i64::from(T0) * 1000;
    let update = |ltp, at, vtt, greeks| GreeksUpdate {
        key: "NSE_FO|217001",
        ltp,
        ltt_ms: t0 + at,
        vtt,
        oi: 61_000.0,
        greeks,
    };
    ws.push(Push::Binary(greeks_frame(&[update(
        110.0,
        1_000,
        500,
        (0.53, 0.0007, -11.5, 11.25, 15.5),
    )])));
    ws.push(Push::Binary(greeks_frame(&[update(
        112.5,
        61_000,
        800,
        (0.56, 0.0007, -11.75, 11.5, 15.25),
    )])));
    let option_bar = loop {
        match tokio::time::timeout(Duration::from_secs(10), feed.candles.recv()).await {
            Ok(Some(MarketEvent::Candle {
                instrument, bar, ..
            })) => break (instrument, bar),
            Ok(Some(MarketEvent::Chain(_))) => {}
            other => panic!("expected the option's candle, got {other:?}"),
        }
    };
    assert!(
        option_bar.0.starts_with("NIFTY") && option_bar.0.ends_with("21700CE"),
        "{}",
        option_bar.0
    );
    assert_eq!(
        (option_bar.1.open, option_bar.1.volume),
        (Decimal::from(110), 0)
    );
    let greeks_of = |c: &tradehost::market::OptionChain, call: bool| {
        let row = c.expiries[0]
            .strikes
            .iter()
            .find(|r| r.strike == Decimal::from(21_700))
            .copied()
            .unwrap();
        let leg = if call { row.ce } else { row.pe };
        leg.and_then(|l| l.greeks).map(|g| {
            (
                g.delta.to_string(),
                g.gamma.to_string(),
                g.theta.to_string(),
                g.vega.to_string(),
                g.iv.to_string(),
            )
        })
    };
    let s = |v: [&str; 5]| {
        Some((
            v[0].into(),
            v[1].into(),
            v[2].into(),
            v[3].into(),
            v[4].into(),
        ))
    };
    let fresh = loop {
        match tokio::time::timeout(Duration::from_secs(10), feed.candles.recv()).await {
            Ok(Some(MarketEvent::Chain(c))) => break c,
            Ok(Some(_)) => {}
            other => panic!("expected a chain after the option's ticks, got {other:?}"),
        }
    };
    assert_eq!(
        greeks_of(&fresh, true),
        s(["0.56", "0.0007", "-11.75", "11.5", "15.25"]),
        "the call's greeks from its last tick"
    );
    assert_eq!(
        greeks_of(&fresh, false),
        s(["0.5", "0.001", "-5.1", "10.2", "14.3"]),
        "the put, with no tick, keeps the chain's"
    );
    assert_eq!(
        greeks_of(&snapshots[0], true),
        s(["0.5", "0.001", "-5.1", "10.2", "14.3"]),
        "before any tick, the chain's own greeks"
    );
    // The spot moves up: the strikes move with it (the old ones unsubscribed first).
    {
        let mut s = rest.state();
        let rows = [21_700.0, 21_800.0, 21_900.0, 22_000.0]
            .map(|k| upstox_chain_row(&today, k, 21_990.0, (50.0, 1_000.0), (50.0, 1_000.0)));
        s.option_chain.insert(today.clone(), rows.to_vec());
    }
    wait_until("the strikes to move", || requests().len() >= 4).await;
    assert_eq!(
        requests()[2],
        serde_json::json!({ "guid": "tradehost-unsub", "method": "unsub", "data": { "instrumentKeys": ["NSE_FO|217001", "NSE_FO|217002", "NSE_FO|218001", "NSE_FO|218002"] } })
    );
    assert_eq!(
        requests()[3]["data"]["instrumentKeys"],
        serde_json::json!([
            "NSE_FO|219001",
            "NSE_FO|219002",
            "NSE_FO|220001",
            "NSE_FO|220002"
        ])
    );
    let moved = feed.wait_report("strikes_moved", 2).await;
    assert_eq!(moved[1]["spot"], "21990");
    // 21,700 left the window: its call's greeks are the chain's again, not its last tick's.
    let after = loop {
        match tokio::time::timeout(Duration::from_secs(10), feed.candles.recv()).await {
            Ok(Some(MarketEvent::Chain(c))) if c.spot == Decimal::from(21_990) => break c,
            Ok(Some(_)) => {}
            other => panic!("expected the chain around 21,990, got {other:?}"),
        }
    };
    assert_eq!(
        greeks_of(&after, true),
        s(["0.5", "0.001", "-5.1", "10.2", "14.3"]),
        "no stale greeks from a strike no longer subscribed"
    );
    snapshots.truncate(2);
    let c = &snapshots[0];
    assert_eq!(
        (c.underlying.as_str(), c.spot, c.expiries.len()),
        ("NIFTY", Decimal::new(217_125, 1), 1)
    );
    assert_eq!(
        c.expiries[0].expiry, today,
        "the nearest expiry on or after today"
    );
    let strikes: Vec<_> = c.expiries[0]
        .strikes
        .iter()
        .map(|r| {
            (
                r.strike,
                r.ce.map(|l| (l.last, l.oi)),
                r.pe.map(|l| (l.last, l.oi)),
            )
        })
        .collect();
    assert_eq!(
        strikes,
        vec![
            (
                Decimal::from(21_700),
                Some((Decimal::new(1102, 1), 60_000)),
                Some((Decimal::from(96), 70_000))
            ),
            (
                Decimal::from(21_800),
                Some((Decimal::from(55), 90_000)),
                Some((Decimal::new(14_035, 2), 40_000))
            ),
        ],
        "strikes ascending, each side's last price and OI"
    );
    let asked: Vec<String> = rest
        .state()
        .requests
        .iter()
        .filter(|r| r.path.starts_with("/v2/option/chain"))
        .map(|r| r.path.clone())
        .collect();
    assert!(
        asked.len() >= 2
            && asked
                .iter()
                .all(|p| p.contains("instrument_key=NSE_INDEX%7CNifty+50")
                    || p.contains("instrument_key=NSE_INDEX%7CNifty%2050")),
        "{asked:?}"
    );
    // A chain the broker cannot give is reported; the feed goes on.
    rest.state().option_chain.clear();
    let errors = feed.wait_report("error", 1).await;
    assert!(
        serde_json::to_string(&errors)
            .unwrap()
            .contains("no strikes"),
        "{errors:?}"
    );
    // The recording replays the same snapshots.
    drop(feed);
    let day = std::fs::read_dir(rec_dir.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let replayed: Vec<_> = load_replay(&[day], None, 60)
        .unwrap()
        .into_iter()
        .filter_map(|e| {
            if let MarketEvent::Chain(c) = e {
                Some(c)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(
        replayed[..2],
        snapshots[..],
        "recorded chains replay as they came"
    );
}

/// Upstox's order updates on its portfolio stream, through the real router: with polling set
/// to ten minutes, an order is read (and its fill journaled) only because the update was pushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstox_order_updates_come_on_the_portfolio_stream() {
    use tradehost::brokers::Secret;
    use tradehost::brokers::live::{AccountLink, LiveOrder, LiveUpdate};
    use tradehost_tests::brokers::{Flavor, MockServer};
    let ws = KiteTicker::start_with(&[("code", "p1")]).await;
    let rest = MockServer::start_kind(Flavor::Upstox, "", "up-tok");
    rest.state().portfolio_url = Some(format!(
        "{}/portfolio-stream-feeder/v2/upstox-developer-api/feeds?requestId=r9&code=p1",
        ws.url()
    ));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("upstox.csv"), "instrument_key,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,lot_size,instrument_type,option_type,exchange\nNSE_EQ|INE002A01018,2885,RELIANCE,RELIANCE INDUSTRIES,0,,,0.05,1,EQUITY,,NSE_EQ\n").unwrap();
    let text = format!(
        "[live]\ninstruments = {{ upstox = \"upstox.csv\" }}\n\n[[accounts]]\nid = \"up-1\"\nbroker = \"upstox\"\nbase_url = \"{}\"\ncapital = 100000\n",
        rest.url
    );
    let (config, _keep, configs) = configured(
        dir.path(),
        "[accounts.up-1]\naccess_token = \"up-tok\"\n",
        &text,
    );
    let bus = tradehost::bus::Bus::embedded("t");
    let master = tradehost::brokers::instruments::InstrumentMaster::new(bus.clone());
    master
        .load("upstox", dir.path().join("upstox.csv").to_str().unwrap())
        .await
        .unwrap();
    let adapter = std::sync::Arc::new(
        tradehost::brokers::upstox::Upstox::new(
            &rest.url,
            Secret::new("up-tok"),
            Duration::from_secs(2),
        )
        .unwrap(),
    );
    let link = AccountLink {
        account: "up-1".into(),
        broker: adapter,
        product: tradehost::config::Product::Mis,
        protection_pct: Decimal::from(2),
        algo_id: None,
        orders_per_sec: 10,
        margin_check: true,
    };
    let (router, mut out, reports, streams) =
        router_with_streams(link, master, &config, configs, bus);
    assert_eq!(streams.len(), 1, "one order stream for the Upstox account");
    wait_until("the order stream", || {
        reports
            .lock()
            .unwrap()
            .iter()
            .any(|(k, _)| k == "order_stream_connected")
    })
    .await;
    assert!(rest.state().requests.iter().any(|r| {
        r.path
            .starts_with("/v2/feed/portfolio-stream-feed/authorize?update_types=order")
    }));

    let order = |coid: &str| {
        LiveOrder::new(
            coid,
            "up-1",
            "RELIANCE",
            tradehost::subscriber::OrderSide::Buy,
            Decimal::from(10),
            Some(Decimal::from(1300)),
        )
    };
    // The first order is read on the router's first poll; the second only if a push says so.
    assert!(router.send(order("c1")));
    assert!(matches!(
        next_update(&mut out).await.unwrap(),
        LiveUpdate::Accepted { .. }
    ));
    assert!(matches!(
        next_update(&mut out).await.unwrap(),
        LiveUpdate::Filled { .. }
    ));
    assert!(router.send(order("c2")));
    let LiveUpdate::Accepted {
        broker_order_id, ..
    } = next_update(&mut out).await.unwrap()
    else {
        panic!("accepted")
    };
    // As Upstox's order update on the portfolio stream reads.
    let update = serde_json::json!({ "update_type": "order", "user_id": "UP1234", "exchange": "NSE", "instrument_key": "NSE_EQ|INE002A01018", "trading_symbol": "RELIANCE",
        "product": "I", "order_type": "LIMIT", "average_price": 1300.0, "price": 1326.0, "quantity": 10, "filled_quantity": 10, "pending_quantity": 0,
        "transaction_type": "BUY", "status": "complete", "order_id": broker_order_id, "tag": "c2", "order_timestamp": "2024-01-01 09:16:02" });
    ws.push(Push::Text(update.to_string()));
    let filled = next_update(&mut out)
        .await
        .expect("the push makes the router read the order now");
    assert!(
        matches!(filled, LiveUpdate::Filled { ref client_order_id, .. } if client_order_id == "c2"),
        "{filled:?}"
    );
    wait_until("the order_update report", || {
        reports
            .lock()
            .unwrap()
            .iter()
            .any(|(k, v)| k == "order_update" && v["status"] == "complete" && v["tag"] == "c2")
    })
    .await;
    for t in streams {
        t.abort();
    }
}

async fn next_update(
    out: &mut tokio::sync::mpsc::UnboundedReceiver<tradehost::brokers::live::RouterOutput>,
) -> Result<tradehost::brokers::live::LiveUpdate, tokio::time::error::Elapsed> {
    use tradehost::brokers::live::RouterOutput;
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match out.recv().await {
                Some(RouterOutput::Update(u)) => return u,
                Some(RouterOutput::Notice(_)) => {}
                None => panic!("router closed"),
            }
        }
    })
    .await
}

/// A `broker` source of NIFTY for `account` (its configuration `accounts`, its secrets
/// `secrets`) with option chains every `every` and ATM ± 1 on the feed; and its first chain.
async fn nifty_chain_feed(
    dir: &std::path::Path,
    account: &str,
    accounts: &str,
    secrets: &str,
    every: Duration,
) -> (Feed, tradehost::market::OptionChain) {
    let text = format!(
        "{accounts}\n[[pipelines]]\nid = \"p\"\nplugin = \"oi_crossover.wasm\"\nsymbols = [\"NIFTY\"]\naccounts = [\"{account}\"]\nsource = {{ kind = \"broker\", account = \"{account}\", chain_secs = 1, strikes = 1 }}\n"
    );
    let (_config, _keep, configs) = configured(dir, secrets, &text);
    let bus = tradehost::bus::Bus::embedded("t");
    let plan = tradehost::brokers::feeds::resolver(
        configs.clone(),
        bus.clone(),
        Default::default(),
    )(account.into(), vec!["NIFTY".into()])
    .await
    .unwrap();
    let chain = tradehost::brokers::feeds::chain_resolver(configs, bus, Default::default())(
        account.into(),
        "NIFTY".into(),
        None,
    )
    .await
    .unwrap();
    let mut feed = start_with_chain(plan, 0, None, Some((chain, every)), 1);
    match tokio::time::timeout(Duration::from_secs(10), feed.candles.recv()).await {
        Ok(Some(MarketEvent::Chain(c))) => (feed, c),
        other => panic!("expected an option chain, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openalgo_option_chains_and_the_strikes_around_the_money() {
    use tradehost_tests::brokers::{Flavor, MockServer, openalgo_chain_row};
    let ws = KiteTicker::start_with(&[]).await;
    let rest = MockServer::start_kind(Flavor::OpenAlgo, "", "oa-key-123");
    {
        let mut s = rest.state();
        // Nearest first, as OpenAlgo lists them; one already past.
        s.expiries = vec!["04-JAN-24".into(), "30-DEC-99".into()];
        s.underlying_ltp = 26_215.55;
        s.option_chain.insert(
            "30DEC99".into(),
            [26_100.0, 26_200.0, 26_300.0, 26_400.0]
                .iter()
                .map(|k| openalgo_chain_row("NIFTY30DEC99", *k, (400.0, 1_000.0), (200.0, 2_000.0)))
                .collect(),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let account = format!(
        "[[accounts]]\nid = \"oa-1\"\nbroker = \"openalgo\"\nbase_url = \"{}\"\nws_url = \"{}\"\ncapital = 100000\n",
        rest.url,
        ws.url()
    );
    let (_feed, c) = nifty_chain_feed(
        dir.path(),
        "oa-1",
        &account,
        "[accounts.oa-1]\napi_key = \"oa-key-123\"\n",
        Duration::from_millis(200),
    )
    .await;
    assert_eq!(
        (
            c.spot,
            c.expiries[0].expiry.as_str(),
            c.expiries[0].strikes.len()
        ),
        (Decimal::new(2_621_555, 2), "2099-12-30", 4),
        "the nearest expiry not yet past"
    );
    assert_eq!(
        c.expiries[0].strikes[0].ce.map(|l| (l.last, l.oi)),
        Some((Decimal::from(400), 1_000))
    );
    // ATM 26,200 (spot 26,215.55) and one strike either side, on the feed as OpenAlgo names them.
    let requests = || ws.seen(|s| s.requests.get(&0).cloned().unwrap_or_default());
    wait_until("the strikes around the money", || {
        requests()
            .iter()
            .filter(|r| r["action"] == "subscribe")
            .count()
            >= 2
    })
    .await;
    let sub = requests()
        .into_iter()
        .filter(|r| r["action"] == "subscribe")
        .nth(1)
        .unwrap();
    let symbols: Vec<String> = sub["symbols"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{}:{}",
                s["exchange"].as_str().unwrap(),
                s["symbol"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        symbols,
        [
            "NFO:NIFTY30DEC9926100CE",
            "NFO:NIFTY30DEC9926100PE",
            "NFO:NIFTY30DEC9926200CE",
            "NFO:NIFTY30DEC9926200PE",
            "NFO:NIFTY30DEC9926300CE",
            "NFO:NIFTY30DEC9926300PE"
        ]
    );
    let asked = rest
        .state()
        .requests
        .iter()
        .filter(|r| r.path == "/api/v1/optionchain")
        .map(|r| r.body.clone())
        .next()
        .unwrap();
    let asked: serde_json::Value = serde_json::from_str(&asked).unwrap();
    assert_eq!(
        (
            asked["underlying"].as_str(),
            asked["exchange"].as_str(),
            asked["expiry_date"].as_str(),
            asked["apikey"].as_str()
        ),
        (
            Some("NIFTY"),
            Some("NSE_INDEX"),
            Some("30DEC99"),
            Some("oa-key-123")
        )
    );
}

/// Spot moving three strikes re-centres the options followed: the new strikes are subscribed,
/// the old ones unsubscribed, the bar an old strike had in progress goes out, and its builder
/// is dropped: a late tick of it is a tick of an instrument no longer followed, no bar.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_moving_three_strikes_re_centres_the_subscriptions_and_drops_the_old_builders() {
    use tradehost_tests::brokers::{Flavor, MockServer, openalgo_chain_row};
    let ws = KiteTicker::start_with(&[]).await;
    let rest = MockServer::start_kind(Flavor::OpenAlgo, "", "oa-key-123");
    {
        let mut s = rest.state();
        s.expiries = vec!["30-DEC-99".into()];
        s.underlying_ltp = 26_215.55;
        s.option_chain.insert(
            "30DEC99".into(),
            (0..8)
                .map(|k| {
                    openalgo_chain_row(
                        "NIFTY30DEC99",
                        26_100.0 + 100.0 * f64::from(k),
                        (400.0, 1_000.0),
                        (200.0, 2_000.0),
                    )
                })
                .collect(),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let account = format!(
        "[[accounts]]\nid = \"oa-1\"\nbroker = \"openalgo\"\nbase_url = \"{}\"\nws_url = \"{}\"\ncapital = 100000\n",
        rest.url,
        ws.url()
    );
    let (mut feed, _) = nifty_chain_feed(
        dir.path(),
        "oa-1",
        &account,
        "[accounts.oa-1]\napi_key = \"oa-key-123\"\n",
        Duration::from_millis(200),
    )
    .await;
    let actions = |action: &str| -> Vec<Vec<String>> {
        ws.seen(|s| s.requests.get(&0).cloned().unwrap_or_default())
            .into_iter()
            .filter(|r| r["action"] == action)
            .map(|r| {
                r["symbols"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|s| s["symbol"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .collect()
    };
    wait_until("the strikes around 26,200", || {
        actions("subscribe").len() >= 2
    })
    .await;
    let old = "NIFTY30DEC9926100CE";
    assert!(actions("subscribe")[1].contains(&old.to_owned()));
    ws.push(Push::Text(
        serde_json::json!({ "type": "auth", "status": "success" }).to_string(),
    ));
    let tick = |symbol: &str, ltp: f64, secs: u32| {
        serde_json::json!({ "type": "market_data", "symbol": symbol, "exchange": "NFO", "mode": 1,
            "data": { "ltp": ltp, "ltt": i64::from(T0 + secs) * 1000, "timestamp": i64::from(T0 + secs) * 1000 } })
        .to_string()
    };
    // 26,100 CE trades in 09:15; then the spot moves three strikes up.
    ws.push(Push::Text(tick(old, 400.0, 1)));
    ws.push(Push::Text(tick(old, 401.5, 20)));
    wait_until("the tick taken", || {
        feed.reports
            .lock()
            .unwrap()
            .iter()
            .all(|(k, _)| k != "error")
    })
    .await;
    rest.state().underlying_ltp = 26_515.0;
    let moved = feed.wait_report("strikes_moved", 2).await;
    assert_eq!(
        moved[1]["options"],
        serde_json::json!([
            "NIFTY30DEC9926400CE",
            "NIFTY30DEC9926400PE",
            "NIFTY30DEC9926500CE",
            "NIFTY30DEC9926500PE",
            "NIFTY30DEC9926600CE",
            "NIFTY30DEC9926600PE"
        ])
    );
    wait_until("the old strikes unsubscribed", || {
        actions("unsubscribe")
            .iter()
            .any(|u| u.contains(&old.to_owned()))
    })
    .await;
    // The old strike's bar in progress goes out as it was when it left.
    let bar = loop {
        match tokio::time::timeout(Duration::from_secs(10), feed.candles.recv()).await {
            Ok(Some(MarketEvent::Candle {
                instrument, bar, ..
            })) if instrument == old => break bar,
            Ok(Some(_)) => {}
            other => panic!("expected {old}'s last bar, got {other:?}"),
        }
    };
    assert_eq!(
        (bar.ts_ms, bar.open, bar.close),
        (
            i64::from(T0) * 1000,
            Decimal::from(400),
            Decimal::new(4015, 1)
        )
    );
    // A late tick of it makes no bar: it is no longer followed.
    ws.push(Push::Text(tick(old, 402.0, 70)));
    ws.push(Push::Text(tick(old, 403.0, 130)));
    let errors = feed.wait_report("error", 1).await;
    assert!(
        serde_json::to_string(&errors)
            .unwrap()
            .contains(&format!("token NFO:{old} that was not subscribed")),
        "{errors:?}"
    );
    // Chains keep coming every 200 ms: watch what the feed hands on over the next five.
    let mut chains = 0;
    while chains < 5 {
        match tokio::time::timeout(Duration::from_secs(10), feed.candles.recv()).await {
            Ok(Some(MarketEvent::Candle { instrument, .. })) => {
                assert_ne!(instrument, old, "no bar of a strike no longer followed");
            }
            Ok(Some(MarketEvent::Chain(_))) => chains += 1,
            other => panic!("the feed stopped: {other:?}"),
        }
    }
}

/// Kite has no option-chain call: the chain is the instrument master's contracts of the
/// nearest expiry not yet past, quoted (`GET /quote`) with the index; the options around the
/// money are subscribed on the ticker by their instrument tokens. Kite's contract names are
/// written here from Kite's naming rules (weekly `NIFTY99D2426100CE`: year, month letter,
/// day), not by the code under test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kite_option_chains_from_the_master_and_quotes() {
    use tradehost_tests::brokers::{Flavor, MockServer, kite_quote};
    let ticker = KiteTicker::start("key1", "tok1").await;
    let rest = MockServer::start_kind(Flavor::Kite, "key1", "tok1");
    let strikes = [26_100_u32, 26_200, 26_300, 26_400];
    // Tokens end in Kite's NFO segment byte (2); above it, a number per expiry, strike and side.
    let token =
        |base: u32, k: u32, call: bool| ((base + k / 100 * 10 + if call { 1 } else { 2 }) << 8) | 2;
    let mut master = String::from(
        "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,lot_size,instrument_type,segment,exchange\n256265,1001,NIFTY 50,\"NIFTY 50\",0,,0,0,0,EQ,INDICES,NSE\n",
    );
    master.push_str(
        "7000001,1,NIFTY2410426100CE,\"NIFTY\",0,2024-01-04,26100,0.05,75,CE,NFO-OPT,NFO\n",
    );
    for k in strikes {
        for (kind, call) in [("CE", true), ("PE", false)] {
            master.push_str(&format!(
                "{},1,NIFTY99D24{k}{kind},\"NIFTY\",0,2099-12-24,{k},0.05,75,{kind},NFO-OPT,NFO\n",
                token(90_000, k, call)
            ));
            master.push_str(&format!(
                "{},1,NIFTY99DEC{k}{kind},\"NIFTY\",0,2099-12-31,{k},0.05,75,{kind},NFO-OPT,NFO\n",
                token(80_000, k, call)
            ));
        }
    }
    {
        let mut s = rest.state();
        s.quotes
            .insert("NSE:NIFTY 50".into(), kite_quote(256_265, 26_215.55, 0, 0));
        for k in strikes {
            let dist = f64::from(k) - 26_215.55;
            s.quotes.insert(
                format!("NFO:NIFTY99D24{k}CE"),
                kite_quote(
                    u64::from(token(90_000, k, true)),
                    (200.0 - dist / 2.0).max(5.0),
                    10_000 + u64::from(k),
                    5_000,
                ),
            );
            // The farthest put has no quote: that side is left out.
            if k != 26_400 {
                s.quotes.insert(
                    format!("NFO:NIFTY99D24{k}PE"),
                    kite_quote(
                        u64::from(token(90_000, k, false)),
                        (200.0 + dist / 2.0).max(5.0),
                        20_000 + u64::from(k),
                        6_000,
                    ),
                );
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kite.csv"), master).unwrap();
    let account = format!(
        "[live]\ninstruments = {{ kite = \"kite.csv\" }}\n\n[[accounts]]\nid = \"kite-1\"\nbroker = \"kite\"\nbase_url = \"{}\"\nws_url = \"{}\"\ncapital = 100000\n",
        rest.url,
        ticker.url()
    );
    let (mut feed, c) = nifty_chain_feed(
        dir.path(),
        "kite-1",
        &account,
        "[accounts.kite-1]\napi_key = \"key1\"\naccess_token = \"tok1\"\n",
        Duration::from_millis(300),
    )
    .await;
    assert_eq!(
        (c.underlying.as_str(), c.spot, c.expiries[0].expiry.as_str()),
        ("NIFTY", Decimal::new(2_621_555, 2), "2099-12-24"),
        "the nearest expiry not yet past"
    );
    let rows: Vec<_> = c.expiries[0]
        .strikes
        .iter()
        .map(|r| {
            (
                r.strike,
                r.ce.map(|l| (l.last, l.oi, l.volume)),
                r.pe.map(|l| (l.last, l.oi)),
            )
        })
        .collect();
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert_eq!(
        rows[1],
        (
            Decimal::from(26_200),
            Some((Decimal::new(207_775, 3), 36_200, 5_000)),
            Some((Decimal::new(192_225, 3), 46_200))
        )
    );
    assert_eq!(rows[3].2, None, "a side Kite did not quote is absent");
    // What was asked: the weekly contracts under Kite's names and the index under Kite's name.
    let asked: Vec<String> = rest
        .state()
        .requests
        .iter()
        .filter(|r| r.path.starts_with("/quote?"))
        .map(|r| r.path.clone())
        .collect();
    let first = &asked[0];
    assert!(
        first.contains("i=NFO%3ANIFTY99D2426100CE") || first.contains("i=NFO:NIFTY99D2426100CE"),
        "{first}"
    );
    assert!(
        first.contains("NIFTY%2050") || first.contains("NIFTY+50"),
        "the spot as Kite names the index: {first}"
    );
    assert!(!first.contains("DEC26"), "only the nearest expiry: {first}");
    // ATM 26,200 and one strike either side subscribed by token after the underlying.
    let subscribed = || {
        ticker
            .seen(|s| s.requests.get(&0).cloned().unwrap_or_default())
            .into_iter()
            .filter(|r| r["a"] == "subscribe")
            .collect::<Vec<_>>()
    };
    wait_until("the strikes around the money", || subscribed().len() >= 2).await;
    let mut tokens: Vec<u64> = subscribed()[1]["v"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(serde_json::Value::as_u64)
        .collect();
    tokens.sort_unstable();
    let mut wanted: Vec<u64> = [26_100, 26_200, 26_300]
        .iter()
        .flat_map(|k| [token(90_000, *k, true), token(90_000, *k, false)])
        .map(u64::from)
        .collect();
    wanted.sort_unstable();
    assert_eq!(tokens, wanted);
    // An option tick makes a candle under our name of the contract.
    let t = token(90_000, 26_200, true);
    ticker.push(Push::Binary(message(&[full(t, 208, 100, T0 + 1)])));
    ticker.push(Push::Binary(message(&[full(t, 209, 200, T0 + 61)])));
    let instrument = loop {
        match tokio::time::timeout(Duration::from_secs(10), feed.candles.recv()).await {
            Ok(Some(MarketEvent::Candle { instrument, .. })) => break instrument,
            Ok(Some(MarketEvent::Chain(_))) => {}
            other => panic!("expected the option's candle, got {other:?}"),
        }
    };
    assert_eq!(instrument, "NIFTY24DEC9926200CE");
}

/// Kite's order stream drops while a working order fills at the broker (no postback reaches
/// us, polling is ten minutes away). When the stream is back, the working orders are read
/// against the broker's book before anything else: the fill is reported, then `Synced`, and
/// until the orders side has taken it the router says the account is syncing (the orders
/// service decides nothing meanwhile).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnected_order_stream_syncs_the_working_orders_first() {
    use tradehost::brokers::live::{LiveNotice, LiveOrder, LiveUpdate, RouterOutput};
    use tradehost_tests::brokers::{Script, Step};
    let mut rig = kite_rig(Some(Duration::from_secs(60))).await;
    let KiteRig {
        ticker,
        rest,
        router,
        out,
        ..
    } = &mut rig;
    let next = router_next;

    // An order still open at its first read (the router's first poll, at once), filled at the next.
    rest.state().scripts.push_back(Script {
        steps: vec![
            Step::Open,
            Step::Fill(Decimal::from(10), Decimal::from(1_300)),
        ],
        ..Script::default()
    });
    assert!(router.send(LiveOrder::new(
        "c1",
        "kite-1",
        "RELIANCE",
        tradehost::subscriber::OrderSide::Buy,
        Decimal::from(10),
        Some(Decimal::from(1_300))
    )));
    assert!(matches!(
        next(out).await,
        RouterOutput::Update(LiveUpdate::Accepted { .. })
    ));
    wait_until("the first poll", || {
        rest.state().orders.first().is_some_and(|o| o.polls >= 1)
    })
    .await;
    // The stream drops; the fill's postback is lost with it.
    ticker.push(Push::Drop);
    let filled = next(out).await;
    assert!(
        matches!(&filled, RouterOutput::Update(LiveUpdate::Filled { client_order_id, qty, .. }) if client_order_id == "c1" && *qty == Decimal::from(10)),
        "the sync reads the fill: {filled:?}"
    );
    assert_eq!(
        router.syncing().map(|(a, _)| a).as_deref(),
        Some("kite-1"),
        "decisions wait while the sync's reports are on their way"
    );
    assert_eq!(
        next(out).await,
        RouterOutput::Notice(LiveNotice::Synced {
            account: "kite-1".into(),
            broker: "kite",
            orders: 1,
            complete: true
        }),
        "after every update it brought"
    );
    assert!(router.synced("kite-1").is_some());
    assert!(router.syncing().is_none());
    assert_eq!(ticker.seen(|s| s.connections), 2, "the stream reconnected");
}

/// OpenAlgo's order updates: its WebSocket is asked for them (`subscribe_orders` after the
/// login, as its proxy documents), and an `order_update` message makes the router read the
/// order at once, although polling is ten minutes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openalgo_order_updates_come_on_its_websocket() {
    use tradehost::brokers::Secret;
    use tradehost::brokers::live::{AccountLink, LiveNotice, LiveOrder, LiveUpdate, RouterOutput};
    use tradehost_tests::brokers::{Flavor, MockServer, Script, Step};
    async fn next(out: &mut tokio::sync::mpsc::UnboundedReceiver<RouterOutput>) -> RouterOutput {
        tokio::time::timeout(Duration::from_secs(10), out.recv())
            .await
            .expect("the router reports")
            .expect("the router is up")
    }
    let ws = KiteTicker::start_with(&[]).await;
    let rest = MockServer::start_kind(Flavor::OpenAlgo, "", "oa-key-123");
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[[accounts]]\nid = \"oa-1\"\nbroker = \"openalgo\"\nbase_url = \"{}\"\nws_url = \"{}\"\ncapital = 100000\n",
        rest.url,
        ws.url()
    );
    let (config, _keep, configs) = configured(
        dir.path(),
        "[accounts.oa-1]\napi_key = \"oa-key-123\"\n",
        &text,
    );
    let bus = tradehost::bus::Bus::embedded("t");
    let master = tradehost::brokers::instruments::InstrumentMaster::new(bus.clone());
    let adapter = Arc::new(
        tradehost::brokers::openalgo::OpenAlgo::new(
            &rest.url,
            Secret::new("oa-key-123"),
            "tradehost",
            Duration::from_secs(2),
        )
        .unwrap(),
    );
    let link = AccountLink {
        account: "oa-1".into(),
        broker: adapter,
        product: tradehost::config::Product::Mis,
        protection_pct: Decimal::from(2),
        algo_id: None,
        orders_per_sec: 10,
        margin_check: true,
    };
    let (router, mut out, reports, streams) =
        router_with_streams(link, master, &config, configs, bus);
    assert_eq!(
        streams.len(),
        1,
        "one order stream for the OpenAlgo account"
    );
    assert_eq!(
        next(&mut out).await,
        RouterOutput::Notice(LiveNotice::Synced {
            account: "oa-1".into(),
            broker: "openalgo",
            orders: 0,
            complete: true
        })
    );
    let _ = router.synced("oa-1");
    wait_until("the order subscription", || {
        ws.seen(|s| s.requests.get(&0).is_some_and(|r| r.len() >= 2))
    })
    .await;
    let asked = ws.seen(|s| s.requests.get(&0).cloned().unwrap_or_default());
    assert_eq!(
        asked,
        [
            serde_json::json!({ "action": "authenticate", "api_key": "oa-key-123" }),
            serde_json::json!({ "action": "subscribe_orders" })
        ]
    );

    rest.state().scripts.push_back(Script {
        steps: vec![Step::Fill(Decimal::from(10), Decimal::new(118_775, 2))],
        ..Script::default()
    });
    assert!(router.send(LiveOrder::new(
        "c1",
        "oa-1",
        "RELIANCE",
        tradehost::subscriber::OrderSide::Buy,
        Decimal::from(10),
        Some(Decimal::from(1_188))
    )));
    let RouterOutput::Update(LiveUpdate::Accepted {
        broker_order_id, ..
    }) = next(&mut out).await
    else {
        panic!("accepted")
    };
    // As OpenAlgo's proxy relays an order-status change (fields and types of its OrderUpdateEvent).
    let update = serde_json::json!({ "type": "order_update", "user_id": "trader1", "mode": "live", "broker": "zerodha", "orderid": broker_order_id, "symbol": "RELIANCE", "exchange": "NSE",
        "action": "BUY", "quantity": 10, "price": 0.0, "trigger_price": 0.0, "pricetype": "MARKET", "product": "MIS", "order_status": "complete", "filled_quantity": 10, "pending_quantity": 0,
        "average_price": 1187.75, "rejection_reason": "" });
    ws.push(Push::Text(update.to_string()));
    let filled = next(&mut out).await;
    assert!(
        matches!(&filled, RouterOutput::Update(LiveUpdate::Filled { client_order_id, price, .. }) if client_order_id == "c1" && *price == Decimal::new(118_775, 2)),
        "the push makes the router read the order now: {filled:?}"
    );
    wait_until("the order_update report", || {
        reports.lock().unwrap().iter().any(|(k, v)| {
            k == "order_update"
                && v["status"] == "complete"
                && v["order_id"] == broker_order_id.as_str()
        })
    })
    .await;
    for t in streams {
        t.abort();
    }
}

/// A feed down for several minutes: after the reconnect, the whole bars with no tick are read
/// back from Kite's historical candles (only those: from the bar after the last tick to the bar
/// of the first tick after the gap) and handed on in time order, between the bar the drop
/// interrupted and the first bar after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bars_missed_while_the_feed_was_down_are_read_back_from_the_broker() {
    use tradehost_tests::brokers::{Flavor, MockServer};
    const RELIANCE: u32 = 738_561;
    let ticker = KiteTicker::start("key1", "tok1").await;
    let rest = MockServer::start_kind(Flavor::Kite, "key1", "tok1");
    let minute = |m: u32, o: f64, h: f64, l: f64, c: f64, v: u64| {
        serde_json::json!([format!("2024-01-01T09:{m:02}:00+0530"), o, h, l, c, v, 0])
    };
    rest.state().candles.insert(
        RELIANCE.to_string(),
        vec![
            minute(16, 1_301.0, 1_302.0, 1_300.0, 1_301.5, 900),
            minute(17, 1_301.5, 1_304.0, 1_301.0, 1_303.0, 1_100),
            minute(18, 1_303.0, 1_306.5, 1_302.5, 1_306.0, 1_250),
            minute(19, 1_306.0, 1_306.0, 1_299.0, 1_300.5, 1_400),
            minute(20, 1_300.5, 1_301.0, 1_299.5, 1_300.0, 700),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kite.csv"), "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,lot_size,instrument_type,segment,exchange\n738561,2885,RELIANCE,\"RELIANCE INDUSTRIES\",0,,0,0.05,1,EQ,NSE,NSE\n").unwrap();
    let text = format!(
        "[live]\ninstruments = {{ kite = \"kite.csv\" }}\n\n[[accounts]]\nid = \"kite-1\"\nbroker = \"kite\"\nbase_url = \"{}\"\nws_url = \"{}\"\ncapital = 100000\n",
        rest.url,
        ticker.url()
    );
    let (_config, _keep, configs) = configured(
        dir.path(),
        "[accounts.kite-1]\napi_key = \"key1\"\naccess_token = \"tok1\"\n",
        &text,
    );
    let plan = tradehost::brokers::feeds::resolver(
        configs,
        tradehost::bus::Bus::embedded("t"),
        Default::default(),
    )("kite-1".into(), vec!["RELIANCE".into()])
    .await
    .unwrap();
    assert!(
        plan.backfill.is_some(),
        "a broker feed reads missed bars back"
    );
    let rec_dir = tempfile::tempdir().unwrap();
    let mut feed = start(plan, 0, Some(TickRecorder::new(rec_dir.path(), "p")));
    feed.wait_report("feed_connected", 1).await;
    wait_until("the subscription", || {
        ticker.seen(|s| s.requests.get(&0).is_some_and(|r| r.len() >= 2))
    })
    .await;
    // 09:15 and the start of 09:16; then the feed is gone until 09:20.
    ticker.push(Push::Binary(message(&[
        full(RELIANCE, 1_300, 10_000, T0 + 1),
        full(RELIANCE, 1_301, 10_400, T0 + 30),
    ])));
    ticker.push(Push::Binary(message(&[full(
        RELIANCE,
        1_302,
        10_900,
        T0 + 61,
    )])));
    let (_, first, _) = feed.candle().await;
    assert_eq!(first.ts_ms, i64::from(T0) * 1000);
    ticker.push(Push::Drop);
    feed.wait_report("feed_reconnected", 1).await;
    wait_until("the resubscription", || {
        ticker.seen(|s| s.requests.get(&1).is_some_and(|r| r.len() >= 2))
    })
    .await;
    ticker.push(Push::Binary(message(&[full(
        RELIANCE,
        1_300,
        15_000,
        T0 + 305,
    )])));
    ticker.push(Push::Binary(message(&[full(
        RELIANCE,
        1_299,
        15_300,
        T0 + 365,
    )])));
    let mut bars = Vec::new();
    for _ in 0..5 {
        bars.push(feed.candle().await.1);
    }
    let starts: Vec<i64> = bars
        .iter()
        .map(|b| (b.ts_ms / 1000 - i64::from(T0)) / 60)
        .collect();
    assert_eq!(
        starts,
        [1, 2, 3, 4, 5],
        "09:16 (interrupted), 09:17-09:19 (read back), 09:20: every minute once, in order"
    );
    assert_eq!(
        (bars[0].open, bars[0].close),
        (Decimal::from(1_302), Decimal::from(1_302)),
        "the interrupted bar is the feed's own"
    );
    assert_eq!(
        (
            bars[1].open,
            bars[1].high,
            bars[1].low,
            bars[1].close,
            bars[1].volume
        ),
        (
            Decimal::new(13_015, 1),
            Decimal::from(1_304),
            Decimal::from(1_301),
            Decimal::from(1_303),
            1_100
        )
    );
    assert_eq!(
        (bars[3].low, bars[3].close, bars[3].volume),
        (Decimal::from(1_299), Decimal::new(13_005, 1), 1_400)
    );
    assert_eq!(
        (bars[4].open, bars[4].close),
        (Decimal::from(1_300), Decimal::from(1_300)),
        "09:20 from its tick"
    );
    let filled = feed.wait_report("feed_backfilled", 1).await;
    assert_eq!(
        (filled[0]["instrument"].as_str(), filled[0]["bars"].as_u64()),
        (Some("RELIANCE"), Some(3))
    );
    // Asked as Kite documents it: the token, minute candles, the range in IST, with OI.
    let asked: Vec<String> = rest
        .state()
        .requests
        .iter()
        .filter(|r| r.path.starts_with("/instruments/historical/"))
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(
        asked[0].starts_with("/instruments/historical/738561/minute?")
            && asked[0].contains("from=2024-01-01+09%3A17%3A00")
            && asked[0].contains("to=2024-01-01+09%3A19%3A00")
            && asked[0].contains("oi=1"),
        "{}",
        asked[0]
    );
    // The recording holds the bars read back beside the ticks: the day replays to the same bars.
    let live: Vec<tradehost::market::Bar> = std::iter::once(first).chain(bars).collect();
    let replay = || {
        let day = std::fs::read_dir(rec_dir.path()).ok()?.next()?.ok()?.path();
        let events = load_replay(&[day], None, 60).ok()?;
        Some(
            events
                .into_iter()
                .filter_map(|e| {
                    if let MarketEvent::Candle { bar, .. } = e {
                        Some(bar)
                    } else {
                        None
                    }
                })
                .collect::<Vec<tradehost::market::Bar>>(),
        )
    };
    // The recorder flushes every quarter second: wait until the last tick is readable.
    wait_until("the recording", || {
        replay().is_some_and(|r| r.len() > live.len())
    })
    .await;
    drop(feed);
    let replayed = replay().unwrap();
    assert_eq!(
        replayed[..live.len()],
        live[..],
        "replayed as it was handed on live"
    );
}

/// The same read-back from Upstox (today's intraday candles, newest first, by instrument key)
/// and OpenAlgo (`/api/v1/history`, rows with their time as text): only the bars asked for,
/// ascending; a candle that cannot be one is refused with the instrument and the field.
/// The read-back runs beside the feed: 200 instruments miss two minutes while the socket is
/// down; their bars are read back one request at a time, no faster than Kite's 3 a second
/// (the local server answers 429 beyond it, as Kite does), while a canary instrument that
/// missed nothing goes on making bars and the stale alarm still goes off. Every instrument's
/// bars reach the pipeline once each, in time order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_flow_while_200_instruments_are_read_back_at_the_brokers_pace() {
    use tradehost_tests::brokers::{Flavor, MockServer};
    const N: u32 = 200;
    let token = |i: u32| (i + 1) << 8 | 1; // NSE cash
    let canary = token(N);
    let ticker = KiteTicker::start("key1", "tok1").await;
    let rest = MockServer::start_kind(Flavor::Kite, "key1", "tok1");
    assert_eq!(
        rest.state().history_per_second,
        3,
        "Kite's documented limit"
    );
    let mut master = String::from(
        "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,lot_size,instrument_type,segment,exchange\n",
    );
    for i in 0..=N {
        master.push_str(&format!(
            "{},{i},S{i},\"S{i}\",0,,0,0.05,1,EQ,NSE,NSE\n",
            token(i)
        ));
        let minute = |m: u32| {
            serde_json::json!([
                format!("2024-01-01T09:{m:02}:00+0530"),
                100.0,
                101.0,
                99.0,
                100.5,
                500,
                0
            ])
        };
        rest.state()
            .candles
            .insert(token(i).to_string(), vec![minute(16), minute(17)]);
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kite.csv"), master).unwrap();
    let text = format!(
        "[live]\ninstruments = {{ kite = \"kite.csv\" }}\n\n[[accounts]]\nid = \"kite-1\"\nbroker = \"kite\"\nbase_url = \"{}\"\nws_url = \"{}\"\ncapital = 100000\n",
        rest.url,
        ticker.url()
    );
    let (_config, _keep, configs) = configured(
        dir.path(),
        "[accounts.kite-1]\napi_key = \"key1\"\naccess_token = \"tok1\"\n",
        &text,
    );
    let symbols: Vec<String> = (0..=N).map(|i| format!("S{i}")).collect();
    let plan = tradehost::brokers::feeds::resolver(
        configs,
        tradehost::bus::Bus::embedded("t"),
        Default::default(),
    )("kite-1".into(), symbols)
    .await
    .unwrap();
    let mut feed = start(plan, 1, None);
    feed.wait_report("feed_connected", 1).await;
    wait_until("the subscription", || {
        ticker.seen(|s| s.requests.get(&0).is_some_and(|r| r.len() >= 2))
    })
    .await;
    let push = |which: &[u32], secs: u32| {
        let packets: Vec<Vec<u8>> = which
            .iter()
            .map(|t| full(*t, 100, 1_000 + secs, secs))
            .collect();
        for chunk in packets.chunks(100) {
            ticker.push(Push::Binary(message(chunk)));
        }
    };
    let all: Vec<u32> = (0..N).map(token).collect();
    // 09:15 for everyone; the canary also ticks in 09:17, just before the drop.
    push(&all, T0 + 1);
    push(&[canary], T0 + 1);
    push(&[canary], T0 + 121);
    ticker.push(Push::Drop);
    feed.wait_report("feed_reconnected", 1).await;
    wait_until("the resubscription", || {
        ticker.seen(|s| s.requests.get(&1).is_some_and(|r| r.len() >= 2))
    })
    .await;
    // 09:18: the first tick after the gap; 09:16 and 09:17 are read back for the 200.
    push(&all, T0 + 181);
    push(&[canary], T0 + 181);
    push(&[canary], T0 + 241);
    let history = || rest.state().history_requests_at.len();
    // The canary's bars come while the read-back has barely begun.
    let mut canary_bars = Vec::new();
    let mut others: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
    while canary_bars.len() < 3 {
        let (instrument, bar, _) = feed.candle().await;
        let minute = (bar.ts_ms / 1000 - i64::from(T0)) / 60;
        if instrument == format!("S{N}") {
            canary_bars.push(minute);
        } else {
            others.entry(instrument).or_default().push(minute);
        }
    }
    assert_eq!(canary_bars, [0, 2, 3], "09:15, 09:17, 09:18 of the canary");
    assert!(
        history() < 100,
        "the canary waited for no read-back ({} done)",
        history()
    );
    // Silence: the stale alarm goes off while the read-back goes on.
    feed.wait_report("feed_stale", 1).await;
    assert!(
        history() < usize::try_from(N).unwrap(),
        "stale before the read-back ended"
    );
    // Then every instrument's bars, once each, in order.
    while others.values().map(Vec::len).sum::<usize>() < usize::try_from(N * 4).unwrap() {
        let (instrument, bar, _) =
            match tokio::time::timeout(Duration::from_secs(90), feed.candles.recv()).await {
                Ok(Some(MarketEvent::Candle {
                    instrument, bar, ..
                })) => (instrument, bar, ()),
                other => panic!(
                    "expected the bars read back, got {other:?} after {} requests",
                    history()
                ),
            };
        let minute = (bar.ts_ms / 1000 - i64::from(T0)) / 60;
        if instrument == format!("S{N}") {
            assert_eq!(minute, 4, "the canary's 09:19, closed by the clock");
            continue;
        }
        others.entry(instrument).or_default().push(minute);
    }
    assert_eq!(others.len(), usize::try_from(N).unwrap());
    for (instrument, minutes) in &others {
        assert_eq!(
            minutes,
            &[0, 1, 2, 3],
            "{instrument}: 09:15, 09:16-09:17 read back, 09:18"
        );
    }
    // Paced: one request at a time, each at least a third of a second after the last, and
    // none refused with a 429.
    let at = rest.state().history_requests_at.clone();
    assert_eq!(
        at.len(),
        usize::try_from(N).unwrap(),
        "one request each, none retried"
    );
    let closest = at
        .windows(2)
        .map(|w| w[1].duration_since(w[0]))
        .min()
        .unwrap();
    assert!(
        closest >= Duration::from_millis(300),
        "requests {closest:?} apart"
    );
    assert!(
        !feed
            .reports
            .lock()
            .unwrap()
            .iter()
            .any(|(k, v)| k == "error" && v.to_string().contains("could not be read")),
        "no read-back refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_bars_from_upstox_and_openalgo() {
    use tradehost_tests::brokers::{Flavor, MockServer};
    // 09:mm on T0's day.
    let t = |m: u32| i64::from(T0) * 1000 + (i64::from(m) - 15) * 60_000;
    let up = MockServer::start_kind(Flavor::Upstox, "", "up-tok");
    let rows = |fmt: &dyn Fn(u32) -> String| {
        (16..=20)
            .map(|m| {
                serde_json::json!([
                    fmt(m),
                    21_700.0 + f64::from(m),
                    21_710.0 + f64::from(m),
                    21_690.0 + f64::from(m),
                    21_705.0 + f64::from(m),
                    1_000 + m,
                    7_500
                ])
            })
            .collect::<Vec<_>>()
    };
    up.state().candles.insert(
        "NSE_FO|48225".into(),
        rows(&|m| format!("2024-01-01T09:{m:02}:00+05:30")),
    );
    let oa = MockServer::start_kind(Flavor::OpenAlgo, "", "oa-key-123");
    {
        let mut s = oa.state();
        let row = |m: u32, low: f64| serde_json::json!({ "timestamp": format!("2024-01-01 09:{m:02}:00+05:30"), "open": 1_300.0, "high": 1_305.0, "low": low, "close": 1_302.0, "volume": 400 + m });
        s.candles.insert(
            "NSE:RELIANCE".into(),
            vec![
                row(16, 1_299.0),
                row(17, 1_298.5),
                row(18, 1_297.0),
                row(19, 1_296.0),
            ],
        );
        // A row whose low is above its close: not a candle.
        s.candles.insert("NSE:SBIN".into(), vec![row(17, 1_303.0)]);
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("upstox.csv"), UPSTOX_INSTRUMENTS).unwrap();
    let text = format!(
        "[live]\ninstruments = {{ upstox = \"upstox.csv\" }}\n\n[[accounts]]\nid = \"up-1\"\nbroker = \"upstox\"\nbase_url = \"{}\"\ncapital = 100000\n\n[[accounts]]\nid = \"oa-1\"\nbroker = \"openalgo\"\nbase_url = \"{}\"\ncapital = 100000\n",
        up.url, oa.url
    );
    let (_config, _keep, configs) = configured(
        dir.path(),
        "[accounts.up-1]\naccess_token = \"up-tok\"\n\n[accounts.oa-1]\napi_key = \"oa-key-123\"\n",
        &text,
    );
    let resolve = tradehost::brokers::feeds::resolver(
        configs,
        tradehost::bus::Bus::embedded("t"),
        Default::default(),
    );
    let upstox = resolve("up-1".into(), vec!["NIFTY24JANFUT".into()])
        .await
        .unwrap();
    let bars = (upstox.backfill.unwrap())(upstox.instruments[0].1.clone(), t(17), t(20))
        .await
        .unwrap();
    assert_eq!(
        bars.iter().map(|b| b.ts_ms).collect::<Vec<_>>(),
        [t(17), t(18), t(19)],
        "ascending, only [from, to)"
    );
    assert_eq!(
        (bars[0].open, bars[0].close, bars[0].volume, bars[0].oi),
        (Decimal::from(21_717), Decimal::from(21_722), 1_017, 7_500)
    );
    assert!(
        up.state()
            .requests
            .iter()
            .any(|r| r.path == "/v3/historical-candle/intraday/NSE_FO%7C48225/minutes/1"),
        "the key encoded in the path"
    );

    let openalgo = resolve("oa-1".into(), vec!["RELIANCE".into(), "SBIN".into()])
        .await
        .unwrap();
    let fill = openalgo.backfill.unwrap();
    let bars = fill(openalgo.instruments[0].1.clone(), t(17), t(19))
        .await
        .unwrap();
    assert_eq!(
        bars.iter()
            .map(|b| (b.ts_ms, b.low, b.volume))
            .collect::<Vec<_>>(),
        [
            (t(17), Decimal::new(12_985, 1), 417),
            (t(18), Decimal::from(1_297), 418)
        ]
    );
    let asked: serde_json::Value = serde_json::from_str(
        &oa.state()
            .requests
            .iter()
            .find(|r| r.path == "/api/v1/history")
            .unwrap()
            .body,
    )
    .unwrap();
    assert_eq!(
        (
            asked["symbol"].as_str(),
            asked["exchange"].as_str(),
            asked["interval"].as_str(),
            asked["start_date"].as_str(),
            asked["end_date"].as_str()
        ),
        (
            Some("RELIANCE"),
            Some("NSE"),
            Some("1m"),
            Some("2024-01-01"),
            Some("2024-01-01")
        )
    );
    let refused = fill(openalgo.instruments[1].1.clone(), t(17), t(19))
        .await
        .unwrap_err();
    assert!(
        refused.contains("NSE:SBIN") && refused.contains("low 1303"),
        "{refused}"
    );
}

/// Partial fills learned from pushes: Kite's postbacks say a working order filled in part, then
/// in full; each push makes the router read the order (polling is ten minutes away), and the
/// fills are reported as they come, cumulative, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_fills_come_by_push() {
    use tradehost::brokers::live::{LiveOrder, LiveUpdate, RouterOutput};
    use tradehost_tests::brokers::{Script, Step};
    let mut rig = kite_rig(None).await;
    let KiteRig {
        ticker,
        rest,
        router,
        out,
        ..
    } = &mut rig;
    let next = router_next;

    // Open at the first read (the router's first poll), 4 of 10 at the next, the rest after.
    rest.state().scripts.push_back(Script {
        steps: vec![
            Step::Open,
            Step::Fill(Decimal::from(4), Decimal::from(1_300)),
            Step::Fill(Decimal::from(6), Decimal::from(1_302)),
        ],
        ..Script::default()
    });
    assert!(router.send(LiveOrder::new(
        "c1",
        "kite-1",
        "RELIANCE",
        tradehost::subscriber::OrderSide::Buy,
        Decimal::from(10),
        Some(Decimal::from(1_300))
    )));
    let RouterOutput::Update(LiveUpdate::Accepted {
        broker_order_id, ..
    }) = next(out).await
    else {
        panic!("accepted")
    };
    wait_until("the first poll", || {
        rest.state().orders.first().is_some_and(|o| o.polls >= 1)
    })
    .await;
    // Kite's postback (an `order` text message on the ticker socket), as its documentation shows it.
    let postback = |status: &str, filled: u32, pending: u32| {
        serde_json::json!({ "type": "order", "data": { "order_id": broker_order_id, "status": status, "tag": "c1", "tradingsymbol": "RELIANCE", "exchange": "NSE", "transaction_type": "BUY", "quantity": 10, "filled_quantity": filled, "pending_quantity": pending, "average_price": 1300.0 } }).to_string()
    };
    ticker.push(Push::Text(postback("OPEN", 4, 6)));
    let part = next(out).await;
    assert_eq!(
        part,
        RouterOutput::Update(LiveUpdate::PartFilled {
            client_order_id: "c1".into(),
            filled_qty: Decimal::from(4),
            price: Decimal::from(1_300)
        }),
        "the first push: 4 filled so far"
    );
    ticker.push(Push::Text(postback("COMPLETE", 10, 0)));
    let done = next(out).await;
    // The broker's average over both parts: (4 x 1300 + 6 x 1302) / 10.
    assert_eq!(
        done,
        RouterOutput::Update(LiveUpdate::Filled {
            client_order_id: "c1".into(),
            qty: Decimal::from(10),
            price: Decimal::new(13_012, 1)
        }),
        "the second: all of it, at the broker's average"
    );
    assert_eq!(
        rest.state().orders[0].polls,
        3,
        "read once per push after the first poll, never more"
    );
}

/// A Kite account's live router (polling ten minutes away, `cancel_after` as given) with its
/// order stream on a local ticker and REST server, RELIANCE in its master, past the first
/// connection's sync (nothing working yet: `Synced` with no order, and the hold released).
struct KiteRig {
    ticker: KiteTicker,
    rest: tradehost_tests::brokers::MockServer,
    router: tradehost::brokers::live::LiveRouter,
    out: tokio::sync::mpsc::UnboundedReceiver<tradehost::brokers::live::RouterOutput>,
    streams: Vec<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for KiteRig {
    fn drop(&mut self) {
        self.streams.iter().for_each(tokio::task::JoinHandle::abort);
    }
}

async fn kite_rig(cancel_after: Option<Duration>) -> KiteRig {
    use tradehost::brokers::Secret;
    use tradehost::brokers::live::{
        AccountLink, LiveNotice, LiveRouter, RouterOutput, RouterSettings,
    };
    use tradehost_tests::brokers::{Flavor, MockServer};
    let ticker = KiteTicker::start("key1", "tok1").await;
    let rest = MockServer::start_kind(Flavor::Kite, "key1", "tok1");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kite.csv"), "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,lot_size,instrument_type,segment,exchange\n738561,2885,RELIANCE,\"RELIANCE INDUSTRIES\",0,,0,0.05,1,EQ,NSE,NSE\n").unwrap();
    let text = format!(
        "[live]\ninstruments = {{ kite = \"kite.csv\" }}\n\n[[accounts]]\nid = \"kite-1\"\nbroker = \"kite\"\nbase_url = \"{}\"\nws_url = \"{}\"\ncapital = 100000\n",
        rest.url,
        ticker.url()
    );
    let (config, _keep, configs) = configured(
        dir.path(),
        "[accounts.kite-1]\napi_key = \"key1\"\naccess_token = \"tok1\"\n",
        &text,
    );
    let bus = tradehost::bus::Bus::embedded("t");
    let master = tradehost::brokers::instruments::InstrumentMaster::new(bus.clone());
    master
        .load("kite", dir.path().join("kite.csv").to_str().unwrap())
        .await
        .unwrap();
    let adapter = Arc::new(
        tradehost::brokers::kite::Kite::new(
            &rest.url,
            Secret::new("key1"),
            Secret::new("tok1"),
            Duration::from_secs(2),
        )
        .unwrap(),
    );
    let link = AccountLink {
        account: "kite-1".into(),
        broker: adapter,
        product: tradehost::config::Product::Mis,
        protection_pct: Decimal::from(2),
        algo_id: None,
        orders_per_sec: 10,
        margin_check: true,
    };
    let (tx, mut out) = tokio::sync::mpsc::unbounded_channel();
    let router = LiveRouter::start(
        vec![link],
        master,
        RouterSettings {
            poll: Duration::from_secs(600),
            cancel_after,
            ..RouterSettings::default()
        },
        tx,
    );
    let streams = tradehost::brokers::feeds::order_streams(
        &config,
        configs,
        bus,
        &router,
        Default::default(),
        Arc::new(|_| {}),
    );
    // The first connection syncs too.
    assert_eq!(
        router_next(&mut out).await,
        RouterOutput::Notice(LiveNotice::Synced {
            account: "kite-1".into(),
            broker: "kite",
            orders: 0,
            complete: true
        })
    );
    assert!(router.synced("kite-1").is_some() && router.syncing().is_none());
    KiteRig {
        ticker,
        rest,
        router,
        out,
        streams,
        _dir: dir,
    }
}

async fn router_next(
    out: &mut tokio::sync::mpsc::UnboundedReceiver<tradehost::brokers::live::RouterOutput>,
) -> tradehost::brokers::live::RouterOutput {
    tokio::time::timeout(Duration::from_secs(10), out.recv())
        .await
        .expect("the router reports")
        .expect("the router is up")
}

/// A live router for `link` (polling ten minutes away) and the order streams of `config`,
/// their reports collected.
fn router_with_streams(
    link: tradehost::brokers::live::AccountLink,
    master: tradehost::brokers::instruments::InstrumentMaster,
    config: &tradehost::config::Config,
    configs: tokio::sync::watch::Receiver<std::sync::Arc<tradehost::config::Config>>,
    bus: tradehost::bus::Bus,
) -> (
    tradehost::brokers::live::LiveRouter,
    tokio::sync::mpsc::UnboundedReceiver<tradehost::brokers::live::RouterOutput>,
    Reports,
    Vec<tokio::task::JoinHandle<()>>,
) {
    use tradehost::brokers::live::{LiveRouter, RouterSettings};
    let (tx, out) = tokio::sync::mpsc::unbounded_channel();
    let router = LiveRouter::start(
        vec![link],
        master,
        RouterSettings {
            poll: Duration::from_secs(600),
            ..RouterSettings::default()
        },
        tx,
    );
    let reports: Reports = Arc::default();
    let r2 = reports.clone();
    let on_event: tradehost::brokers::feeds::StreamEvents =
        Arc::new(move |e: tradehost::bus::events::Event| {
            r2.lock().unwrap().push((e.name().to_owned(), e.fields()))
        });
    let streams = tradehost::brokers::feeds::order_streams(
        config,
        configs,
        bus,
        &router,
        Default::default(),
        on_event,
    );
    (router, out, reports, streams)
}
