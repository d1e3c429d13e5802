//! `tradehost run` with a `broker` source: the real binary takes NIFTY ticks
//! from a local Kite ticker (no Redis feed, no feeder to write), trades them
//! on paper, records them, and a replay of the recording gives the same
//! signals and fills.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tradehost::market::source::{MarketEvent, synthetic_events};
use tradehost_tests::kite_ticker::{KiteTicker, Push, index_packet, message};
use tradehost_tests::{plugin_dir, tradehost_bin};

/// Kite's instrument dump: the index row (segment INDICES) the feed subscribes.
const KITE_INSTRUMENTS: &str = "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,lot_size,instrument_type,segment,exchange
256265,1001,NIFTY 50,\"NIFTY 50\",0,,0,0,0,EQ,INDICES,NSE
738561,2885,RELIANCE,\"RELIANCE INDUSTRIES\",0,,0,0.05,1,EQ,NSE,NSE
";

fn config(dir: &Path, source: &str, ws_url: &str) -> std::path::PathBuf {
    let text = format!(
        r#"[host]
plugin_dir = {plugins:?}
journal = {journal:?}
heartbeat_secs = 1
record_dir = "rec"

[live]
instruments = {{ kite = "kite-instruments.csv" }}

[[accounts]]
id = "kite-1"
broker = "kite"
ws_url = "{ws_url}"
capital = 1000000
sizing = {{ kind = "fixed", qty = 10 }}
product = "cnc"

[[pipelines]]
id = "nifty-live"
plugin = "ma_crossover.wasm"
symbols = ["NIFTY"]
accounts = ["kite-1"]
source = {source}
[pipelines.params]
fast = 5
slow = 20
"#,
        plugins = plugin_dir().display().to_string(),
        journal = dir.join("journal.sqlite").display().to_string(),
    );
    std::fs::write(dir.join("kite-instruments.csv"), KITE_INSTRUMENTS).unwrap();
    let path = dir.join("pipelines.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Kills the process if the test fails before it is stopped.
struct Reaper(Option<std::process::Child>);

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn rows(db: &Path, sql: &str) -> Vec<String> {
    let db = rusqlite::Connection::open(db).unwrap();
    let mut stmt = db.prepare(sql).unwrap();
    stmt.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn count(db: &Path, sql: &str) -> i64 {
    rusqlite::Connection::open(db)
        .and_then(|c| c.query_row(sql, [], |r| r.get(0)))
        .unwrap_or(0)
}

/// `tradehost run` of `cfg` on paper with the embedded bus, with `secrets` in its
/// environment, as a service: the child (killed if the test fails) and its pid.
fn paper_service(cfg: &Path, secrets: &[(&str, &str)]) -> (Reaper, u32) {
    let mut cmd = Command::new(tradehost_bin());
    cmd.args(["run", "--quiet", "--config"])
        .arg(cfg)
        .env_remove("REDIS_URL")
        .env_remove("TRADING_MODE")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in secrets {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let pid = child.id();
    (Reaper(Some(child)), pid)
}

/// The native signals of ma-crossover (5/20) on the seed-2 synthetic day.
fn native_day_signals() -> usize {
    let native = tradehost_tests::native_ma_signals(
        2,
        1,
        &[
            ("fast".to_owned(), "5".to_owned()),
            ("slow".to_owned(), "20".to_owned()),
        ],
    );
    assert!(native > 4, "the day has signals: {native}");
    native
}

/// Wait up to a minute for `n` decisions in `journal`.
async fn decided(journal: &Path, n: usize, who: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(journal, "SELECT COUNT(*) FROM decisions") < n as i64 {
        assert!(
            Instant::now() < deadline,
            "{who} decided {} of {n} signals",
            count(journal, "SELECT COUNT(*) FROM decisions")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_kite_feed_trades_on_paper_and_replays_the_same() {
    let ticker = KiteTicker::start("key1", "tok1").await;
    let live_dir = tempfile::tempdir().unwrap();
    let source = r#"{ kind = "broker", account = "kite-1", max_skew_secs = 0, stale_secs = 0 }"#;
    let cfg = config(live_dir.path(), source, &ticker.url());
    let (mut child, pid) = paper_service(
        &cfg,
        &[
            ("TRADEHOST_KITE_1_API_KEY", "key1"),
            ("TRADEHOST_KITE_1_ACCESS_TOKEN", "tok1"),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while ticker.seen(|s| s.requests.get(&0).map_or(0, Vec::len)) < 2 {
        assert!(Instant::now() < deadline, "the run never subscribed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        ticker.seen(|s| s.requests[&0][0].clone()),
        serde_json::json!({ "a": "subscribe", "v": [256_265] }),
        "NIFTY resolves to Kite's NIFTY 50 index"
    );

    // One synthetic day as the exchange would tick it: open, high, low, close of each minute.
    let events = synthetic_events(&["NIFTY".to_owned()], 2, 1, 21_700.0, false, 60);
    let mut bars = Vec::new();
    for e in &events {
        let MarketEvent::Candle { bar, .. } = e else {
            continue;
        };
        let secs = u32::try_from(bar.ts_ms / 1000).unwrap();
        let paise = |d: rust_decimal::Decimal| {
            u32::try_from((d * rust_decimal::Decimal::from(100)).trunc().mantissa()).unwrap()
        };
        let packets = [
            (bar.open, 0),
            (bar.high, 15),
            (bar.low, 30),
            (bar.close, 59),
        ]
        .map(|(p, s)| index_packet(256_265, paise(p.normalize()), secs + s));
        ticker.push(Push::Binary(message(&packets)));
        bars.push(bar);
        if bars.len() % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let native = native_day_signals();
    let journal = live_dir.path().join("journal.sqlite");
    decided(&journal, native, "the live run").await;
    // Let the last fills land, then stop it as a service is stopped.
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(
        &journal,
        "SELECT COUNT(*) FROM orders WHERE state = 'accepted'",
    ) > 1
    {
        assert!(Instant::now() < deadline, "orders left unfilled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let out = child.0.take().unwrap().wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let live_signals = rows(
        &journal,
        "SELECT signal_id FROM decisions ORDER BY signal_id",
    );
    let live_fills = rows(
        &journal,
        "SELECT ts || ' ' || side || ' ' || qty || ' ' || price FROM fills ORDER BY ts",
    );
    assert_eq!(
        live_signals.len(),
        native,
        "one decision per signal, as many as the strategy gives natively on the same bars"
    );
    assert!(!live_fills.is_empty());

    // The recording, replayed through the replay source, trades the same.
    let days: Vec<_> = std::fs::read_dir(live_dir.path().join("rec"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(days.len(), 1, "one day recorded");
    let replay_dir = tempfile::tempdir().unwrap();
    let source = format!(
        "{{ kind = \"replay\", files = [{:?}] }}",
        days[0].display().to_string()
    );
    let cfg = config(replay_dir.path(), &source, "ws://127.0.0.1:9");
    let out = Command::new(tradehost_bin())
        .args(["run", "--quiet", "--until-idle", "0.5", "--config"])
        .arg(&cfg)
        .env_remove("REDIS_URL")
        .env_remove("TRADING_MODE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let journal = replay_dir.path().join("journal.sqlite");
    assert_eq!(
        rows(
            &journal,
            "SELECT signal_id FROM decisions ORDER BY signal_id"
        ),
        live_signals
    );
    let replay_fills = rows(
        &journal,
        "SELECT ts || ' ' || side || ' ' || qty || ' ' || price FROM fills ORDER BY ts",
    );
    assert_eq!(
        replay_fills[..live_fills.len().min(replay_fills.len())],
        live_fills[..live_fills.len().min(replay_fills.len())]
    );
    assert!(
        replay_fills.len().abs_diff(live_fills.len()) <= 1,
        "the same fills (the last order may wait for a price the live run stopped before)"
    );
}

/// Live mode with nothing but the broker: ticks from a local Kite ticker, orders to a local
/// Kite Connect server, and fills learned from the order postbacks the ticker pushes. Polling
/// is set to ten minutes, so every fill after the first can only come from a push. On the way
/// the broker drops every connection (the feed and the order stream come back and subscribe
/// again), and the session expires (orders are held, and resume once a new token arrives over
/// `trading:commands`; the next drop reconnects with it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_mode_on_broker_sockets_learns_fills_from_postbacks() {
    use tradehost_tests::brokers::{Flavor, MockServer};
    use tradehost_tests::kite_ticker::Full;
    use tradehost_tests::{Collector, RedisServer};
    const RELIANCE: u32 = 738_561;
    let redis = RedisServer::start();
    let collector = Collector::start(&redis.url());
    let ticker = KiteTicker::start("key1", "tok1").await;
    let rest = MockServer::start(Flavor::Kite, "key1", "tok1");
    // The session ends after the fourth order (a login elsewhere): the next call fails.
    rest.state().expire_after = Some(4);
    // NIFTY's weekly options (Kite's names from its rules), quoted by the broker for the option
    // chains of a second pipeline: calls and puts hold the same OI, so the chains move no signal.
    let option_token =
        |k: u32, call: bool| ((90_000 + k / 100 * 10 + if call { 1 } else { 2 }) << 8) | 2;
    let mut master = KITE_INSTRUMENTS.to_owned();
    {
        let mut s = rest.state();
        s.quotes.insert(
            "NSE:NIFTY 50".into(),
            tradehost_tests::brokers::kite_quote(256_265, 21_712.5, 0, 0),
        );
        for k in [21_600_u32, 21_700, 21_800] {
            for (kind, call) in [("CE", true), ("PE", false)] {
                let token = option_token(k, call);
                master.push_str(&format!("{token},1,NIFTY99D24{k}{kind},\"NIFTY\",0,2099-12-24,{k},0.05,75,{kind},NFO-OPT,NFO\n"));
                s.quotes.insert(
                    format!("NFO:NIFTY99D24{k}{kind}"),
                    tradehost_tests::brokers::kite_quote(u64::from(token), 100.0, 50_000, 1_000),
                );
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kite-instruments.csv"), master).unwrap();
    let text = format!(
        r#"[host]
plugin_dir = {plugins:?}
journal = {journal:?}
heartbeat_secs = 1
record_dir = "rec"

[live]
timeout_ms = 2000
poll_ms = 600000
instruments = {{ kite = "kite-instruments.csv" }}

[[accounts]]
id = "kite-1"
broker = "kite"
base_url = "{rest}"
ws_url = "{ws}"
capital = 10000000
sizing = {{ kind = "fixed", qty = 10 }}
product = "cnc"

[[pipelines]]
id = "reliance-live"
plugin = "ma_crossover.wasm"
symbols = ["RELIANCE"]
accounts = ["kite-1"]
source = {{ kind = "broker", account = "kite-1", max_skew_secs = 0, stale_secs = 0 }}
[pipelines.params]
fast = 5
slow = 20

[[pipelines]]
id = "nifty-chain"
plugin = "oi_crossover.wasm"
symbols = ["NIFTY"]
accounts = ["kite-1"]
source = {{ kind = "broker", account = "kite-1", max_skew_secs = 0, stale_secs = 0, chain_secs = 1, strikes = 1 }}
"#,
        plugins = plugin_dir().display().to_string(),
        journal = dir.path().join("journal.sqlite").display().to_string(),
        rest = rest.url,
        ws = ticker.url(),
    );
    let cfg = dir.path().join("pipelines.toml");
    std::fs::write(&cfg, text).unwrap();
    let mut child = Reaper(Some(
        Command::new(tradehost_bin())
            .args(["run", "--config"])
            .arg(&cfg)
            .env("REDIS_URL", redis.url())
            .env_remove("TRADEHOST_SECRETS")
            .env("TRADING_MODE", "live")
            .env("RUST_LOG", "warn")
            .env("TRADEHOST_KITE_1_API_KEY", "key1")
            .env("TRADEHOST_KITE_1_ACCESS_TOKEN", "tok1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let pid = child
        .0
        .as_ref()
        .map(std::process::Child::id)
        .unwrap_or_default();
    // Two connections: the pipeline's feed (subscribing RELIANCE) and the order stream (subscribing nothing).
    let deadline = Instant::now() + Duration::from_secs(60);
    while ticker.seen(|s| s.connections) < 2
        || !ticker.seen(|s| s.requests.values().any(|r| r.len() >= 2))
    {
        assert!(
            Instant::now() < deadline,
            "the run did not open its feed and its order stream"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let subscribed: Vec<serde_json::Value> =
        ticker.seen(|s| s.requests.values().flatten().cloned().collect());
    assert!(
        subscribed.contains(&serde_json::json!({ "a": "subscribe", "v": [RELIANCE] })),
        "{subscribed:?}"
    );

    let events = synthetic_events(&["RELIANCE".to_owned()], 4, 1, 1_300.0, false, 60);
    // The packet's close is the previous session's: here, where the day started.
    let previous_close = 130_000;
    let mut pushed = std::collections::HashSet::new();
    let journal = dir.path().join("journal.sqlite");
    let postbacks = |pushed: &mut std::collections::HashSet<String>| {
        // Kite's postback for every order the broker holds that we have not told of yet.
        let orders: Vec<(String, Option<String>)> = rest
            .state()
            .orders
            .iter()
            .map(|o| (o.id.clone(), o.tag.clone()))
            .collect();
        for (id, tag) in orders {
            if pushed.insert(id.clone()) {
                let data = serde_json::json!({ "order_id": id, "status": "COMPLETE", "tag": tag, "tradingsymbol": "RELIANCE", "exchange": "NSE", "filled_quantity": 10, "pending_quantity": 0 });
                ticker.push(Push::Text(
                    serde_json::json!({ "type": "order", "data": data }).to_string(),
                ));
            }
        }
    };
    let event = |name: &str| {
        collector
            .of("trading:events", "event")
            .into_iter()
            .filter(|e| e["event"] == name)
            .count()
    };
    let mut renewed = false;
    for (n, e) in events.iter().enumerate() {
        let MarketEvent::Candle { bar, .. } = e else {
            continue;
        };
        let secs = u32::try_from(bar.ts_ms / 1000).unwrap();
        let paise = |d: rust_decimal::Decimal| {
            u32::try_from((d * rust_decimal::Decimal::from(100)).trunc().mantissa()).unwrap()
        };
        rest.state().ltp.insert("RELIANCE".into(), bar.close);
        let packets: Vec<Vec<u8>> = [
            (bar.open, 0),
            (bar.high, 15),
            (bar.low, 30),
            (bar.close, 59),
        ]
        .iter()
        .map(|(p, s)| {
            Full {
                token: RELIANCE,
                last_paise: paise(*p),
                close_paise: previous_close,
                volume: 1_000 + secs % 1_000,
                oi: 0,
                exchange_secs: secs + s,
                bid_paise: paise(*p) - 5,
                ask_paise: paise(*p) + 5,
            }
            .packet()
        })
        .collect();
        ticker.push(Push::Binary(message(&packets)));
        // A paced market: a minute every 20 ms, postbacks as orders appear.
        tokio::time::sleep(Duration::from_millis(20)).await;
        postbacks(&mut pushed);
        if n == 120 {
            // The broker drops every connection: both come back by themselves.
            ticker.push(Push::Drop);
            let deadline = Instant::now() + Duration::from_secs(30);
            while event("feed_reconnected") < 1
                || !collector
                    .of("trading:events", "event")
                    .iter()
                    .any(|e| e["event"] == "order_stream_connected" && e["reconnect"] == true)
            {
                assert!(
                    Instant::now() < deadline,
                    "the feed and the order stream did not come back"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        if !renewed && event("token_expired") > 0 {
            // A new day's token, everywhere at once: the broker, its ticker, and the host over the commands channel.
            rest.state().token = "tok2".into();
            ticker.set_token("tok2");
            let mut con = redis::Client::open(redis.url())
                .unwrap()
                .get_connection()
                .unwrap();
            let command = r#"{"v":1,"type":"command","id":"tok-1","cmd":"token","account":"kite-1","access_token":"tok2"}"#;
            let _: i64 = redis::cmd("PUBLISH")
                .arg("trading:commands")
                .arg(command)
                .query(&mut con)
                .unwrap();
            renewed = true;
        }
        if n == 300 {
            // A second drop, after the renewal: the reconnections must use the new token.
            assert!(renewed, "the session expired before the second drop");
            ticker.push(Push::Drop);
        }
    }
    let native = tradehost_tests::native_ma_signals_for(
        4,
        1,
        1_300.0,
        &[
            ("fast".to_owned(), "5".to_owned()),
            ("slow".to_owned(), "20".to_owned()),
        ],
    );
    assert!(native > 4, "the day has signals: {native}");
    // Every order the run placed fills, although no poll came in ten minutes.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        postbacks(&mut pushed);
        let placed = rest.state().orders.len() as i64;
        // Orders with a fill (the broker fills them in parts).
        let filled = count(
            &journal,
            "SELECT COUNT(DISTINCT client_order_id) FROM fills",
        );
        if placed > 2
            && filled == placed
            && count(&journal, "SELECT COUNT(*) FROM decisions") == native as i64
            && event("feed_reconnected") >= 2
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{filled} of {placed} orders filled; {} of {native} signals decided; {} feed reconnections",
            count(&journal, "SELECT COUNT(*) FROM decisions"),
            event("feed_reconnected")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        count(&journal, "SELECT COUNT(*) FROM orders"),
        rest.state().orders.len() as i64,
        "every journal order reached the broker once"
    );
    assert_eq!(event("token_expired"), 1);
    assert!(event("token_renewed") >= 1, "resumed without a restart");
    // The second drop came after the renewal: its reconnections were refused by nobody.
    assert_eq!(
        ticker.seen(|s| s.refused),
        0,
        "every reconnection used a token the broker took"
    );
    // Each order was placed once and read at most a few times: pushes, not polls.
    let polls: u32 = rest
        .state()
        .orders
        .iter()
        .map(|o| o.polls)
        .max()
        .unwrap_or(0);
    assert!(polls <= 3, "an order was read {polls} times");
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let out = child.0.take().unwrap().wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        event("order_update") > 0 && event("order_stream_connected") >= 2,
        "the order stream was followed, and came back after the drop"
    );
    assert!(
        event("orders_synced") >= 2,
        "each connection of the order stream synced the working orders before decisions went on"
    );
    // The option chains came from the broker too: quoted over the master's contracts, handed to
    // the second pipeline's strategy, and the options around the money subscribed on the ticker.
    assert!(
        rest.state()
            .requests
            .iter()
            .any(|r| r.path.starts_with("/quote?") && r.path.contains("NIFTY99D2421700CE")),
        "Kite quotes asked for the chain"
    );
    let chain_beats = collector
        .of("trading:events", "heartbeat")
        .into_iter()
        .filter(|h| h["role"] == "engine")
        .filter_map(|h| h["pipelines"]["nifty-chain"]["events_in"].as_u64())
        .max()
        .unwrap_or(0);
    assert!(
        chain_beats >= 2,
        "the chains reached the strategy ({chain_beats} events)"
    );
    let moved = collector
        .of("trading:events", "event")
        .into_iter()
        .find(|e| e["event"] == "strikes_moved" && e["pipeline"] == "nifty-chain")
        .expect("the strikes around the money");
    assert_eq!(
        moved["options"],
        serde_json::json!([
            "NIFTY24DEC9921600CE",
            "NIFTY24DEC9921600PE",
            "NIFTY24DEC9921700CE",
            "NIFTY24DEC9921700PE",
            "NIFTY24DEC9921800CE",
            "NIFTY24DEC9921800PE"
        ])
    );
    let subscribed: Vec<serde_json::Value> =
        ticker.seen(|s| s.requests.values().flatten().cloned().collect());
    assert!(
        subscribed.iter().any(|r| r["a"] == "subscribe"
            && r["v"]
                .as_array()
                .is_some_and(|v| v.contains(&serde_json::json!(option_token(21_700, true))))),
        "the ATM call on the ticker"
    );
    let published: String = collector
        .messages()
        .iter()
        .filter(|(c, _)| c != "trading:commands")
        .map(|(c, v)| format!("{c} {v}\n"))
        .collect();
    for secret in ["tok1", "tok2", "key1"] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret) && !published.contains(secret),
            "a credential leaked"
        );
    }
    // The postbacks were recorded as received, beside the ticks.
    let day = std::fs::read_dir(dir.path().join("rec"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let orders_file = std::fs::read_dir(&day)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("orders-kite-1."))
        })
        .expect("an order-update recording");
    let text = std::io::read_to_string(flate2::read::MultiGzDecoder::new(
        std::fs::File::open(&orders_file).unwrap(),
    ))
    .unwrap();
    let recorded: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recorded.len(), pushed.len(), "one line per postback");
    assert!(
        recorded
            .iter()
            .all(|r| r["update"]["status"] == "COMPLETE" && r["received_ms"].as_i64().is_some())
    );
}

#[test]
fn the_live_example_config_is_valid_as_written() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/live.toml");
    let config = tradehost::config::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let sources: Vec<_> = config.pipelines.iter().map(|p| p.source.clone()).collect();
    assert!(
        sources
            .iter()
            .all(|s| matches!(s, tradehost::config::Source::Broker { .. })),
        "{sources:?}"
    );
    assert!(matches!(
        &sources[1],
        tradehost::config::Source::Broker {
            chain_secs: 60,
            strikes: 5,
            ..
        }
    ));
    assert_eq!(
        config
            .accounts
            .iter()
            .map(|a| a.broker.get_ref().as_str())
            .collect::<Vec<_>>(),
        ["kite", "upstox"]
    );
}

/// A recorded day replayed through an OpenAlgo WebSocket after market hours makes the
/// backtest's signals: each tick is timed by its `ltt` (the exchange's time of the trade),
/// not by the `timestamp` OpenAlgo's proxy stamps when it relays it (here 20:00 IST, after
/// the close: on the proxy's clock no tick would fall in a session and no bar would be made).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_replayed_through_openalgo_after_hours_makes_the_backtests_signals() {
    let ws = KiteTicker::start_with(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"[host]
plugin_dir = {plugins:?}
journal = {journal:?}
heartbeat_secs = 1

[[accounts]]
id = "oa-1"
broker = "openalgo"
ws_url = "{ws}"
capital = 1000000
sizing = {{ kind = "fixed", qty = 10 }}
product = "cnc"

[[pipelines]]
id = "nifty-oa"
plugin = "ma_crossover.wasm"
symbols = ["NIFTY"]
accounts = ["oa-1"]
source = {{ kind = "broker", account = "oa-1", max_skew_secs = 0, stale_secs = 0 }}
[pipelines.params]
fast = 5
slow = 20
"#,
        plugins = plugin_dir().display().to_string(),
        journal = dir.path().join("journal.sqlite").display().to_string(),
        ws = ws.url(),
    );
    let cfg = dir.path().join("pipelines.toml");
    std::fs::write(&cfg, text).unwrap();
    let (mut child, pid) = paper_service(&cfg, &[("TRADEHOST_OA_1_API_KEY", "oa-key-123")]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while ws.seen(|s| s.requests.get(&0).map_or(0, Vec::len)) < 2 {
        assert!(Instant::now() < deadline, "the run never subscribed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        ws.seen(|s| s.requests[&0][1]["symbols"].clone()),
        serde_json::json!([{ "exchange": "NSE_INDEX", "symbol": "NIFTY" }])
    );
    ws.push(Push::Text(
        serde_json::json!({ "type": "auth", "status": "success", "message": "Authentication successful" })
            .to_string(),
    ));
    let events = synthetic_events(&["NIFTY".to_owned()], 2, 1, 21_700.0, false, 60);
    let mut n = 0;
    for e in &events {
        let MarketEvent::Candle { bar, .. } = e else {
            continue;
        };
        // The proxy relays it at 20:00 IST the same day, in milliseconds as its server does.
        let relayed = bar.ts_ms - bar.ts_ms.rem_euclid(86_400_000) + 14 * 3_600_000 + 1_800_000;
        for (p, s) in [
            (bar.open, 0),
            (bar.high, 15),
            (bar.low, 30),
            (bar.close, 59),
        ] {
            let frame = serde_json::json!({ "type": "market_data", "symbol": "NIFTY", "exchange": "NSE_INDEX", "mode": 1, "broker": "zerodha",
                "data": { "ltp": p.normalize().to_string().parse::<f64>().unwrap(), "ltt": bar.ts_ms + s * 1000, "timestamp": relayed } });
            ws.push(Push::Text(frame.to_string()));
        }
        n += 1;
        if n % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let native = native_day_signals();
    let journal = dir.path().join("journal.sqlite");
    decided(&journal, native, "the OpenAlgo run").await;
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let out = child.0.take().unwrap().wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The same signals as the backtest of the same bars: their ids carry the bar times.
    let replay_dir = tempfile::tempdir().unwrap();
    let cfg = config(
        replay_dir.path(),
        r#"{ kind = "synthetic", seed = 2, days = 1, start_price = 21700.0 }"#,
        "ws://127.0.0.1:9",
    );
    let out = Command::new(tradehost_bin())
        .args(["run", "--quiet", "--until-idle", "0.5", "--config"])
        .arg(&cfg)
        .env_remove("REDIS_URL")
        .env_remove("TRADING_MODE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let times = |db: &Path| {
        rows(db, "SELECT signal_id FROM decisions ORDER BY signal_id")
            .into_iter()
            .map(|id| id.split('/').skip(1).collect::<Vec<_>>().join("/"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        times(&journal),
        times(&replay_dir.path().join("journal.sqlite")),
        "signal by signal, the backtest's (event time and sequence)"
    );
}

/// Upstox's instrument master: the NIFTY 50 index the chain's spot is.
const UPSTOX_INSTRUMENTS: &str = "instrument_key,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,lot_size,instrument_type,option_type,exchange
NSE_INDEX|Nifty 50,,NIFTY,Nifty 50,0,,,0,,INDEX,,NSE_INDEX
";

/// An option-chain pipeline on an Upstox account, run as a service: its strategy is handed the
/// greeks of the chain's own answer first, then, once the call around the money ticks on the
/// socket in `option_greeks` mode, the greeks of that tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstox_option_chain_pipeline_hands_its_strategy_the_greeks() {
    use tradehost_tests::brokers::{Flavor, MockServer, upstox_nifty_rows};
    use tradehost_tests::upstox_feed::{GreeksUpdate, greeks_frame};
    let ws = KiteTicker::start_with(&[("code", "g1")]).await;
    let rest = MockServer::start_kind(Flavor::Upstox, "", "up-tok");
    let today = tradehost::market::clock::format_ist_date(tradehost::domain::time::now_ms());
    {
        let mut s = rest.state();
        s.feed_url = Some(format!("{}/feeds?code=g1", ws.url()));
        s.option_contracts =
            vec![serde_json::json!({ "expiry": today, "instrument_key": "NSE_FO|2" })];
        s.option_chain
            .insert(today.clone(), upstox_nifty_rows(&today));
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("upstox.csv"), UPSTOX_INSTRUMENTS).unwrap();
    let journal = dir.path().join("journal.sqlite");
    let text = format!(
        r#"[host]
plugin_dir = {plugins:?}
journal = {journal:?}
heartbeat_secs = 1

[live]
instruments = {{ upstox = "upstox.csv" }}

[[accounts]]
id = "up-1"
broker = "upstox"
base_url = "{rest}"
capital = 1000000

[[pipelines]]
id = "greeks"
plugin = "chain_greeks.wasm"
symbols = ["NIFTY"]
accounts = ["up-1"]
source = {{ kind = "broker", account = "up-1", max_skew_secs = 0, stale_secs = 0, chain_secs = 1, strikes = 1 }}
"#,
        plugins = plugin_dir().display().to_string(),
        journal = journal.display().to_string(),
        rest = rest.url,
    );
    let cfg = dir.path().join("pipelines.toml");
    std::fs::write(&cfg, text).unwrap();
    let (mut child, pid) = paper_service(&cfg, &[("TRADEHOST_UP_1_ACCESS_TOKEN", "up-tok")]);
    // The signals the strategy gave, once the journal has its tables.
    let reasons = || {
        if count(&journal, "SELECT COUNT(*) FROM signals") == 0 {
            return Vec::new();
        }
        rows(
            &journal,
            "SELECT reason FROM signals ORDER BY ts, signal_id",
        )
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !reasons().iter().any(|r| r.contains("delta=")) {
        assert!(
            Instant::now() < deadline,
            "no signal with greeks: {:?}",
            reasons()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        reasons()[0]
            .starts_with("ATM 21700 last=110.2 delta=0.5 gamma=0.001 theta=-5.1 vega=10.2 iv=14.3"),
        "the chain's own greeks: {:?}",
        reasons()
    );
    // The strikes around the money go on the socket in option_greeks mode.
    let requests = || ws.seen(|s| s.requests.values().flatten().cloned().collect::<Vec<_>>());
    while !requests()
        .iter()
        .any(|r| r["data"]["mode"] == "option_greeks")
    {
        assert!(Instant::now() < deadline, "{:?}", requests());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let now = tradehost::domain::time::now_ms();
    ws.push(Push::Binary(greeks_frame(&[GreeksUpdate {
        key: "NSE_FO|217001",
        ltp: 112.5,
        ltt_ms: now,
        vtt: 800,
        oi: 61_000.0,
        greeks: (0.56, 0.0007, -11.75, 11.5, 15.25),
    }])));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !reasons().iter().any(|r| r.contains("delta=0.56")) {
        assert!(
            Instant::now() < deadline,
            "the tick's greeks never reached the strategy: {:?}",
            reasons()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        reasons()
            .iter()
            .any(|r| r.ends_with("delta=0.56 gamma=0.0007 theta=-11.75 vega=11.5 iv=15.25")),
        "{:?}",
        reasons()
    );
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let out = child.0.take().unwrap().wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
