//! `TRADING_MODE=live` end to end: the bundled pipelines, their accounts moved
//! to Kite, Upstox and OpenAlgo served by local brokers answering as the
//! documented APIs do, a real Redis, real plugins, a real journal, and a
//! Telegram server. The run survives an expired token (renewed over
//! `trading:commands`), a burst of 429s and a timed-out placement that the
//! broker had taken, without a restart; every order is placed once; and no
//! credential appears in anything the process printed or published.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use tradehost_tests::brokers::{Fault, Flavor, MockOrder, MockServer};
use tradehost_tests::{Collector, RedisServer, tradehost_bin};

const KITE_KEY: &str = "kite-api-key-e2e-7731";
const KITE_TOKEN: &str = "kite-access-token-day1-5521";
const KITE_TOKEN_2: &str = "kite-access-token-day2-9034";
const UPSTOX_TOKEN: &str = "upstox-access-token-e2e-4410";
const OPENALGO_KEY: &str = "openalgo-apikey-e2e-6620";
const BOT_TOKEN: &str = "123456:telegram-bot-token-e2e";

/// The repository's `pipelines.toml`, with its accounts on live brokers and shorter days.
fn bundled_config_live(
    dir: &Path,
    kite: &str,
    kite_ws: &str,
    upstox: &str,
    openalgo: &str,
    telegram: &str,
) -> std::path::PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text =
        std::fs::read_to_string(repo.join("pipelines.toml")).expect("the bundled pipelines.toml");
    let mut text = text
        .replace(
            "plugin_dir = \"plugins\"",
            &format!(
                "plugin_dir = {:?}",
                tradehost_tests::plugin_dir().display().to_string()
            ),
        )
        .replace(
            "journal = \"out/journal.sqlite\"",
            &format!(
                "journal = {:?}",
                dir.join("journal.sqlite").display().to_string()
            ),
        )
        .replace("days = 10", "days = 3")
        .replace("days = 2", "days = 1");
    let brokers = [
        (
            "paper-long",
            format!(
                "broker = \"kite\"\nbase_url = \"{kite}\"\nws_url = \"{kite_ws}\"\ncredentials = \"kite-main\"\nnotify = {{ telegram_chat = \"1001\", events = [\"fill\", \"token_expired\"] }}"
            ),
        ),
        // Upstox is polled here (its 429 burst is the point); its pushed updates are tested in broker_feed.rs.
        (
            "paper-bank",
            format!("broker = \"upstox\"\nbase_url = \"{upstox}\"\norder_updates = \"poll\""),
        ),
        (
            "paper-intraday",
            format!("broker = \"openalgo\"\nbase_url = \"{openalgo}\""),
        ),
        (
            "paper-fno",
            format!("broker = \"openalgo\"\nbase_url = \"{openalgo}\""),
        ),
    ];
    for (id, broker) in brokers {
        let from = format!("id = \"{id}\"\nbroker = \"paper\"");
        assert!(text.contains(&from), "pipelines.toml changed shape: {id}");
        text = text.replace(&from, &format!("id = \"{id}\"\n{broker}"));
    }
    text.push_str(&format!(
        "\n[live]\ntimeout_ms = 1000\npoll_ms = 30\nbackoff_ms = 40\ninstruments = {{ kite = \"kite.csv\", upstox = \"upstox.csv\" }}\n\n[telegram]\nbase_url = \"{telegram}\"\nchat_id = \"2002\"\nevents = [\"token_expired\", \"breaker\", \"plugin_failed\", \"position_mismatch\"]\nmin_interval_ms = 20\n"
    ));
    std::fs::write(
        dir.join("kite.csv"),
        "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,lot_size,instrument_type,segment,exchange\n256265,1001,NIFTY,\"NIFTY\",0,,0,0.05,1,EQ,NSE,NSE\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("upstox.csv"),
        "instrument_key,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,lot_size,instrument_type,option_type,exchange\nNSE_EQ|BANKNIFTY,2002,BANKNIFTY,BANKNIFTY,0,,,0.05,1,EQUITY,,NSE_EQ\n",
    )
    .unwrap();
    let path = dir.join("pipelines.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn count(db: &rusqlite::Connection, sql: &str) -> i64 {
    db.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn live_mode_trades_the_bundled_pipelines_through_three_brokers() {
    let redis = RedisServer::start();
    let collector = Collector::start(&redis.url());
    let kite = MockServer::start(Flavor::Kite, KITE_KEY, KITE_TOKEN);
    let upstox = MockServer::start(Flavor::Upstox, "", UPSTOX_TOKEN);
    let openalgo = MockServer::start(Flavor::OpenAlgo, "", OPENALGO_KEY);
    let telegram = MockServer::start(Flavor::Telegram, "", BOT_TOKEN);
    telegram.state().per_second = 5; // Telegram's limits, tighter: the notifier must obey 429s
    // Kite's session ends after its third order; OpenAlgo's first placement times out although taken.
    kite.state().expire_after = Some(3);
    openalgo
        .state()
        .faults
        .push_back(Fault::SlowAccept(Duration::from_millis(3000)));
    upstox
        .state()
        .faults
        .extend([Fault::RateLimit, Fault::RateLimit, Fault::RateLimit]);
    // A position bought by hand at the broker before the start: reconciliation must flag it.
    {
        let mut u = upstox.state();
        u.symbols
            .insert("NSE_EQ|INE062A01020".into(), "SBIN".into());
        u.orders.push(MockOrder {
            id: "manual-1".into(),
            fields: std::collections::HashMap::new(),
            tag: None,
            symbol: "NSE_EQ|INE062A01020".into(),
            side: "BUY".into(),
            qty: Decimal::from(10),
            status: "COMPLETE".into(),
            average_price: Some(Decimal::from(600)),
            polls: 1,
            filled: Decimal::from(10),
            ..MockOrder::default()
        });
    }

    let dir = tempfile::tempdir().unwrap();
    // Kite's ticker too: the order stream (postbacks) runs beside the polling this test relies on.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ticker = rt.block_on(tradehost_tests::kite_ticker::KiteTicker::start(
        KITE_KEY, KITE_TOKEN,
    ));
    let config = bundled_config_live(
        dir.path(),
        &kite.url,
        &ticker.url(),
        &upstox.url,
        &openalgo.url,
        &telegram.url,
    );
    std::fs::write(dir.path().join("secrets.toml"), format!("[accounts.kite-main]\napi_key = \"{KITE_KEY}\"\naccess_token = \"{KITE_TOKEN}\"\n\n[telegram]\nbot_token = \"{BOT_TOKEN}\"\n")).unwrap();
    let mut child = Command::new(tradehost_bin())
        .args(["run", "--until-idle", "1", "--config"])
        .arg(&config)
        .env_remove("TRADEHOST_SECRETS")
        .env("TRADING_MODE", "live")
        .env("REDIS_URL", redis.url())
        .env("RUST_LOG", "info")
        .env("TRADEHOST_PAPER_BANK_ACCESS_TOKEN", UPSTOX_TOKEN)
        .env("TRADEHOST_PAPER_INTRADAY_API_KEY", OPENALGO_KEY)
        .env("TRADEHOST_PAPER_FNO_API_KEY", OPENALGO_KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (stdout, stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out_reader =
        std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let err_reader =
        std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());

    // The market, as the exchange sees it: each broker fills at the last price on the quotes channel.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let feeder = {
        let (collector_msgs, kite, upstox, openalgo, done) = (
            collector_handle(&collector),
            kite.clone(),
            upstox.clone(),
            openalgo.clone(),
            done.clone(),
        );
        std::thread::spawn(move || {
            let mut seen = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let msgs = collector_msgs();
                for (channel, v) in msgs.iter().skip(seen) {
                    if channel != "trading:quotes" {
                        continue;
                    }
                    for q in v["quotes"].as_array().into_iter().flatten() {
                        let (Some(sym), Some(close)) = (
                            q["instrument"].as_str(),
                            q["close"].as_str().and_then(|c| c.parse::<Decimal>().ok()),
                        ) else {
                            continue;
                        };
                        kite.state().ltp.insert(sym.to_owned(), close);
                        openalgo.state().ltp.insert(sym.to_owned(), close);
                        upstox.state().ltp.insert(format!("NSE_EQ|{sym}"), close);
                    }
                }
                seen = msgs.len();
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };

    // The token expires mid-run: the account pauses with an alert; a new token on the commands channel resumes it.
    let expired = collector
        .wait_for(Duration::from_secs(120), |c, v| {
            c == "trading:events" && v["event"] == "token_expired"
        })
        .expect("the token expiry is announced");
    assert_eq!(
        (
            expired["account"].as_str(),
            expired["broker"].as_str(),
            expired["alert"].as_bool()
        ),
        (Some("paper-long"), Some("kite"), Some(true))
    );
    // Pacing, not a wait for a condition: the account stays paused for a moment of the market
    // (orders decided meanwhile are held, none lost); whether one comes depends on the day's data.
    std::thread::sleep(Duration::from_millis(300));
    kite.state().token = KITE_TOKEN_2.into();
    // The new session's token is the ticker's too (the order stream reconnects with it when it drops).
    ticker.set_token(KITE_TOKEN_2);
    let mut con = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let command = format!(
        r#"{{"v":1,"type":"command","id":"tok-1","cmd":"token","account":"paper-long","access_token":"{KITE_TOKEN_2}"}}"#
    );
    let _: i64 = redis::cmd("PUBLISH")
        .arg("trading:commands")
        .arg(&command)
        .query(&mut con)
        .unwrap();
    assert!(
        collector
            .wait_for(Duration::from_secs(30), |c, v| c == "trading:events"
                && v["event"] == "token_renewed")
            .is_some(),
        "resumed without a restart"
    );

    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the live run did not finish");
        std::thread::sleep(Duration::from_millis(50));
    };
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    feeder.join().unwrap();
    let (stdout, stderr) = (out_reader.join().unwrap(), err_reader.join().unwrap());
    assert!(status.success(), "{stdout}\n{stderr}");
    for line in [
        "TRADING_MODE=live",
        "LIVE account paper-long: kite session ok (user AB1234)",
        "LIVE account paper-bank: upstox session ok",
        "LIVE account paper-intraday: openalgo session ok",
        "kite instrument master: 1 instruments",
        "Telegram alerts on",
    ] {
        assert!(stdout.contains(line), "{line:?} missing from:\n{stdout}");
    }

    // Every decided order reached its broker once and filled; nothing is left in flight. The
    // protective stops the exits rested at OpenAlgo were cancelled before the host closed
    // each position itself (or filled), and none is left resting after the square-off.
    let db = rusqlite::Connection::open(dir.path().join("journal.sqlite")).unwrap();
    // Any still resting protects a position still held.
    let protective: Vec<(String, String, String, String)> = db
        .prepare("SELECT o.state, o.side, o.account, COALESCE(p.qty, '0') FROM orders o LEFT JOIN positions p ON p.account = o.account AND p.instrument = o.instrument WHERE o.pipeline = 'protective-stop'")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (state, side, account, held) in &protective {
        let held: f64 = held.parse().unwrap();
        let protects = if side == "sell" {
            held > 0.0
        } else {
            held < 0.0
        };
        assert!(
            state == "cancelled" || state == "filled" || (state == "accepted" && protects),
            "{account}: {protective:?}"
        );
    }
    let per_account = |a: &str| {
        count(
            &db,
            &format!("SELECT COUNT(*) FROM orders WHERE account = '{a}'"),
        )
    };
    assert!(
        per_account("paper-long") > 3
            && per_account("paper-bank") > 0
            && per_account("paper-intraday") + per_account("paper-fno") > 0
    );
    let in_flight: Vec<(String, String, String, String)> = db
        .prepare("SELECT account, pipeline, signal_id, state FROM orders WHERE state NOT IN ('filled', 'rejected') AND NOT (state = 'cancelled' AND pipeline IN ('protective-stop', 'stop-loss', 'target', 'trailing-stop', 'square-off', 'carried', 'flatten')) AND NOT (state = 'accepted' AND pipeline = 'protective-stop')
             AND NOT (state = 'cancelled' AND waits_for IN (SELECT client_order_id FROM orders WHERE state = 'filled'))")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    // A strategy's exit that waited on its position's protective stop is withdrawn when the
    // stop filled meanwhile (a race of the broker's fill and the host's cancel): nothing is
    // left to sell, and selling anyway would open a short nobody asked for.
    let withdrawn_exits = count(
        &db,
        "SELECT COUNT(*) FROM orders WHERE state = 'cancelled' AND waits_for IS NOT NULL AND broker_order_id IS NULL",
    );
    let stops_filled = count(
        &db,
        "SELECT COUNT(*) FROM orders o WHERE o.state = 'cancelled' AND o.waits_for IS NOT NULL AND broker_order_id IS NULL AND EXISTS (SELECT 1 FROM fills f WHERE f.client_order_id = o.waits_for)",
    );
    assert_eq!(
        withdrawn_exits, stops_filled,
        "an exit withdrawn unsent is one whose protective stop filled"
    );
    let history = |signal: &str| -> Vec<String> {
        db.prepare("SELECT t.from_state || ' -' || t.event || '-> ' || t.to_state || ' @' || t.at || ' ' || COALESCE(o.order_type, 'MARKET') || ' ' || o.side || ' ' || o.qty || ' waits_for=' || COALESCE(o.waits_for, '-') FROM transitions t JOIN orders o USING (client_order_id) WHERE o.signal_id = ?1 ORDER BY t.seq")
            .unwrap()
            .query_map([signal], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(
        in_flight,
        vec![],
        "nothing in flight: {:?}",
        in_flight.iter().map(|o| history(&o.2)).collect::<Vec<_>>()
    );
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM orders WHERE state = 'rejected'"),
        0,
        "nothing refused: every symbol is in the masters"
    );
    // The brokers fill in parts: every filled order's parts add up to what it filled (a
    // protective stop the broker completed at its old size before a resize reached it fills
    // less than the size the journal asked for; the managed exit closes the rest), and no
    // part is booked for an order that did not fill.
    assert_eq!(
        count(&db, "SELECT COUNT(DISTINCT client_order_id) FROM fills"),
        count(&db, "SELECT COUNT(*) FROM orders WHERE state = 'filled'")
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM orders o WHERE o.state = 'filled' AND (SELECT SUM(CAST(f.qty AS REAL)) FROM fills f WHERE f.client_order_id = o.client_order_id) != CAST(COALESCE(o.filled_qty, o.qty) AS REAL)"
        ),
        0,
        "each filled order's parts add up to it: {:?}",
        db.prepare("SELECT o.client_order_id || ' ' || o.pipeline || ' ' || o.account || ' qty ' || o.qty || ' filled ' || COALESCE(o.filled_qty, '-') || ' parts ' || (SELECT GROUP_CONCAT(f.qty || '@' || f.price) FROM fills f WHERE f.client_order_id = o.client_order_id) FROM orders o WHERE o.state = 'filled'")
            .unwrap()
            .query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(Result::unwrap)
            .collect::<Vec<_>>()
    );
    assert!(
        count(&db, "SELECT COUNT(*) FROM fills")
            > count(&db, "SELECT COUNT(*) FROM orders WHERE state = 'filled'"),
        "the brokers filled some orders in parts"
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM orders WHERE broker_order_id IS NULL AND state != 'cancelled'"
        ),
        0,
        "withdrawn before sending, or sent"
    );
    let at = |m: &MockServer| {
        m.state()
            .orders
            .iter()
            .filter(|o| o.id != "manual-1")
            .count() as i64
    };
    // Orders withdrawn before they were sent (a protective stop or a close made needless) never reached a broker.
    let sent = |a: &str| {
        count(
            &db,
            &format!(
                "SELECT COUNT(*) FROM orders WHERE account = '{a}' AND broker_order_id IS NOT NULL"
            ),
        )
    };
    // paper-long holds delivery positions: their protective stops at Kite are GTTs, not orders.
    assert_eq!(
        at(&kite) + kite.state().gtts.len() as i64,
        sent("paper-long"),
        "kite: one broker order (or GTT) per journal order"
    );
    assert_eq!(
        kite.state().gtts.len() as i64,
        count(
            &db,
            "SELECT COUNT(*) FROM orders WHERE account = 'paper-long' AND pipeline = 'protective-stop' AND broker_order_id LIKE 'gtt:%'"
        ),
        "every GTT is a journaled protective stop"
    );
    assert_eq!(
        at(&upstox),
        sent("paper-bank"),
        "upstox: one broker order per journal order"
    );
    assert_eq!(
        at(&openalgo),
        sent("paper-intraday") + sent("paper-fno"),
        "openalgo: one broker order per journal order"
    );
    for m in [&kite, &upstox] {
        let s = m.state();
        let ours: Vec<_> = s
            .orders
            .iter()
            .filter(|o| o.id != "manual-1")
            .map(|o| o.tag.clone())
            .collect();
        let tags: std::collections::HashSet<_> = ours.iter().cloned().collect();
        assert_eq!(tags.len(), ours.len(), "tags are unique");
    }
    // Fills are the broker's prices, and positions follow them.
    let filled_at_broker: i64 = count(
        &db,
        "SELECT COUNT(DISTINCT client_order_id) FROM fills f JOIN orders o USING (client_order_id) WHERE o.account = 'paper-long' AND CAST(f.price AS REAL) > 1000",
    );
    assert_eq!(
        filled_at_broker,
        count(
            &db,
            "SELECT COUNT(*) FROM orders WHERE account = 'paper-long' AND state = 'filled'"
        ),
        "kite fills at the market the mock saw"
    );
    tradehost_tests::check_positions(&db);

    // The instrument master lives in Redis when Redis is the bus.
    let token: Option<String> = redis::cmd("HGET")
        .arg("trading:instruments:kite")
        .arg("EQ:NIFTY")
        .query(&mut con)
        .unwrap();
    assert_eq!(
        token.as_deref(),
        Some("256265|1\tNIFTY\t0.05"),
        "token|lot, then Kite's own trading symbol and the tick"
    );
    let token: Option<String> = redis::cmd("HGET")
        .arg("trading:instruments:upstox")
        .arg("EQ:BANKNIFTY")
        .query(&mut con)
        .unwrap();
    assert_eq!(
        token.as_deref(),
        Some("NSE_EQ|BANKNIFTY|1\tBANKNIFTY\t0.05")
    );

    // What the operator saw: the pause, the retries, the resume.
    let events: Vec<serde_json::Value> = collector.of("trading:events", "event");
    let named = |n: &str| {
        events
            .iter()
            .filter(|e| e["event"] == n)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert!(named("broker_retry").iter().any(|e| {
        e["account"] == "paper-bank"
            && e["reason"]
                .as_str()
                .unwrap_or_default()
                .starts_with("rate limited")
    }));
    assert!(
        named("broker_retry")
            .iter()
            .any(|e| e["reason"] == "timed out"),
        "the slow OpenAlgo placement was retried by looking first"
    );
    assert_eq!(named("token_expired").len(), 1);
    assert!(
        named("order_stream_connected")
            .iter()
            .any(|e| e["account"] == "paper-long"),
        "Kite's order postbacks are followed beside the polling"
    );
    assert_eq!(
        ticker.seen(|s| s.refused),
        0,
        "the order stream connected with the account's credentials"
    );
    // Reconciliation at the start: the hand-bought SBIN at Upstox is flagged; the others agree.
    let mismatches = named("position_mismatch");
    assert_eq!(mismatches.len(), 1, "{mismatches:?}");
    assert_eq!(
        (
            mismatches[0]["account"].as_str(),
            mismatches[0]["instrument"].as_str(),
            mismatches[0]["journal"].as_str(),
            mismatches[0]["broker_qty"].as_str()
        ),
        (Some("paper-bank"), Some("SBIN"), Some("0"), Some("10"))
    );
    assert!(
        stdout.contains("paper-long: positions agree with kite (0 open)"),
        "{stdout}"
    );
    let orders: Vec<serde_json::Value> = collector.of("trading:orders", "order");
    assert!(orders.iter().all(|o| o["mode"] == "live"));

    // Telegram: every fill and the token alert in the account's chat, the token alert in the desk's
    // chat; the process sent its queued alerts before it exited.
    let messages = telegram.state().messages.clone();
    let fills_sent = messages
        .iter()
        .filter(|(c, t)| c == "1001" && t.starts_with("Filled [live] paper-long"))
        .count();
    assert_eq!(
        fills_sent,
        usize::try_from(count(
            &db,
            "SELECT COUNT(*) FROM orders WHERE account = 'paper-long' AND state = 'filled'"
        ))
        .unwrap(),
        "one alert per fill, none lost at exit"
    );
    assert!(
        messages
            .iter()
            .any(|(c, t)| c == "1001" && t.starts_with("Filled [live] paper-long")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|(c, t)| c == "1001" && t.starts_with("Token expired paper-long")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|(c, t)| c == "2002" && t.starts_with("Token expired paper-long")),
        "{messages:?}"
    );
    assert!(
        !messages
            .iter()
            .any(|(c, t)| c == "2002" && t.starts_with("Filled")),
        "the desk chat did not ask for fills"
    );
    assert!(
        messages.iter().any(|(c, t)| c == "2002"
            && t == "Position mismatch paper-bank in SBIN: journal 0, upstox 10"),
        "{messages:?}"
    );

    // Nothing secret in anything printed, published or sent.
    let published: String = collector
        .messages()
        .iter()
        .filter(|(c, _)| c != "trading:commands")
        .map(|(c, v)| format!("{c} {v}\n"))
        .collect();
    let telegram_text: String = messages.iter().map(|(_, t)| format!("{t}\n")).collect();
    for secret in [
        KITE_KEY,
        KITE_TOKEN,
        KITE_TOKEN_2,
        UPSTOX_TOKEN,
        OPENALGO_KEY,
        BOT_TOKEN,
    ] {
        for (what, text) in [
            ("stdout", &stdout),
            ("stderr", &stderr),
            ("the bus", &published),
            ("telegram", &telegram_text),
        ] {
            assert!(!text.contains(secret), "a secret leaked into {what}");
        }
    }
}

fn collector_handle(
    collector: &Collector,
) -> impl Fn() -> Vec<(String, serde_json::Value)> + Send + 'static {
    let shared = collector.shared();
    move || shared.lock().map(|m| m.clone()).unwrap_or_default()
}

#[test]
fn live_mode_refuses_to_start_without_credentials_or_a_session() {
    let kite = MockServer::start(Flavor::Kite, KITE_KEY, KITE_TOKEN);
    let dir = tempfile::tempdir().unwrap();
    let config = bundled_config_live(
        dir.path(),
        &kite.url,
        "ws://127.0.0.1:9",
        "http://127.0.0.1:9",
        "http://127.0.0.1:9",
        "http://127.0.0.1:9",
    );
    let run = |envs: &[(&str, &str)]| {
        let mut cmd = Command::new(tradehost_bin());
        cmd.args(["run", "--config"])
            .arg(&config)
            .env("TRADING_MODE", "live")
            .env_remove("REDIS_URL")
            .env_remove("TRADEHOST_SECRETS");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    // No credentials at all: every live account is named, with where its secret goes.
    let out = run(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("TRADING_MODE=live refused to start"), "{err}");
    assert!(
        err.contains("account paper-long (kite): no api_key: set TRADEHOST_KITE_MAIN_API_KEY"),
        "{err}"
    );
    assert!(
        err.contains(
            "account paper-bank (upstox): no access_token: set TRADEHOST_PAPER_BANK_ACCESS_TOKEN"
        ),
        "{err}"
    );
    // Credentials, but a wrong token, and brokers that do not answer: refused, the token not shown.
    let out = run(&[
        ("TRADEHOST_KITE_MAIN_API_KEY", KITE_KEY),
        ("TRADEHOST_KITE_MAIN_ACCESS_TOKEN", "kite-stale-token-0000"),
        ("TRADEHOST_PAPER_BANK_ACCESS_TOKEN", UPSTOX_TOKEN),
        ("TRADEHOST_PAPER_INTRADAY_API_KEY", OPENALGO_KEY),
        ("TRADEHOST_PAPER_FNO_API_KEY", OPENALGO_KEY),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("account paper-long (kite): session check failed: session refused: HTTP 403: Incorrect `api_key` or `access_token`."), "{err}");
    assert!(
        err.contains("account paper-bank (upstox): session check failed: unavailable"),
        "{err}"
    );
    for secret in [
        KITE_KEY,
        "kite-stale-token-0000",
        UPSTOX_TOKEN,
        OPENALGO_KEY,
    ] {
        assert!(!err.contains(secret) && !String::from_utf8_lossy(&out.stdout).contains(secret));
    }
    assert!(!dir.path().join("journal.sqlite").exists(), "nothing ran");
}
