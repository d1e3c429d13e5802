//! `tradehost run` as users run it: the real binary, real plugins, a real
//! SQLite journal, and a real `redis-server` for the Redis paths.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tradehost::engine::{Native, StrategyRunner, sdk_chain};
use tradehost::market::source::{MarketEvent, synthetic_events};
use tradehost_tests::{Collector, RedisServer, check_journal, tradehost_bin, write_config};

const ACCOUNTS: &str = r#"
[[accounts]]
id = "long-1"
capital = 1000000
mode = "long"
sizing = { kind = "fixed", qty = 10 }

[[accounts]]
id = "both-1"
capital = 2000000
mode = "both"
sizing = { kind = "lots", lots = 1, lot_size = 75 }
slippage_bps = 2
"#;

fn ma_pipeline(speed: u32, days: u32) -> String {
    format!(
        r#"
[[pipelines]]
id = "nifty-ma"
plugin = "ma_crossover.wasm"
symbols = ["NIFTY"]
accounts = ["long-1", "both-1"]
user = "asha"
source = {{ kind = "synthetic", seed = 2, days = {days}, speed = {speed} }}
[pipelines.params]
fast = 5
slow = 20
"#
    )
}

const OI_PIPELINE: &str = r#"
[[pipelines]]
id = "nifty-oi"
plugin = "oi_crossover.wasm"
symbols = ["NIFTY"]
accounts = ["both-1"]
source = { kind = "synthetic", seed = 2, days = 1, option_chain = true }
"#;

fn expected_signals(days: u32) -> usize {
    tradehost_tests::native_ma_signals(
        2,
        days,
        &[
            ("fast".to_owned(), "5".to_owned()),
            ("slow".to_owned(), "20".to_owned()),
        ],
    )
}

fn expected_oi_signals() -> usize {
    let mut oi = Native::<oi_crossover::OiCrossover>::new("oi-crossover", "0.1.0", &[]).unwrap();
    synthetic_events(&["NIFTY".to_owned()], 2, 1, 21_700.0, true, 60)
        .iter()
        .map(|e| match e {
            MarketEvent::Chain(c) => oi.on_option_chain(&sdk_chain(c)).unwrap().len(),
            MarketEvent::Candle { .. } => 0,
        })
        .sum()
}

/// A batch run: it ends once every source has run out and every signal is decided.
fn run(config: &Path, envs: &[(&str, &str)], extra: &[&str]) -> Output {
    let mut cmd = Command::new(tradehost_bin());
    cmd.args(["run", "--until-idle", "0.5", "--config"])
        .arg(config)
        .args(extra)
        .env_remove("REDIS_URL")
        .env_remove("TRADING_MODE")
        .env("RUST_LOG", "warn");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("running tradehost")
}

fn spawn(config: &Path, envs: &[(&str, &str)], extra: &[&str]) -> Child {
    let mut cmd = Command::new(tradehost_bin());
    cmd.args(["run", "--config"])
        .arg(config)
        .args(extra)
        .env_remove("REDIS_URL")
        .env_remove("TRADING_MODE")
        .env("RUST_LOG", "warn");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting tradehost")
}

fn journal(dir: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.join("journal.sqlite")).unwrap()
}

fn count(db: &rusqlite::Connection, sql: &str) -> i64 {
    db.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn embedded_run_trades_every_signal_for_every_account() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!("{ACCOUNTS}{}{OI_PIPELINE}", ma_pipeline(0, 3)),
        5,
    );
    let out = run(&config, &[], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("TRADING_MODE=paper") && stdout.contains("embedded bus"),
        "{stdout}"
    );
    assert!(
        stdout.contains("signal  nifty-ma") && stdout.contains("order   long-1"),
        "signals and orders are printed:\n{stdout}"
    );
    assert!(
        stdout.contains("long-1") && stdout.contains("realised"),
        "the P&L summary is printed:\n{stdout}"
    );
    let (ma, oi) = (expected_signals(3) as i64, expected_oi_signals() as i64);
    assert!(ma > 20 && oi > 4, "{ma} {oi}");
    let db = journal(dir.path());
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM decisions"),
        ma * 2 + oi,
        "one decision per signal and account"
    );
    // long-1 is long-only: it opens on a buy and closes on a sell, so it trades at most every signal.
    assert!(count(&db, "SELECT COUNT(*) FROM orders WHERE account = 'long-1'") <= ma);
    assert!(
        count(
            &db,
            "SELECT COUNT(*) FROM orders WHERE account = 'both-1' AND instrument LIKE 'NIFTY%CE' OR instrument LIKE 'NIFTY%PE'"
        ) > 0,
        "option orders"
    );
    assert!(
        count(&db, "SELECT COUNT(*) FROM orders WHERE state = 'accepted'") <= 3,
        "all but the last signals' orders fill"
    );
    check_journal(&db);
}

#[test]
fn redis_run_shows_everything_on_the_channels() {
    let server = RedisServer::start();
    let collector = Collector::start(&server.url());
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &format!("{ACCOUNTS}{}", ma_pipeline(0, 2)), 1);
    let out = run(&config, &[("REDIS_URL", &server.url())], &["--quiet"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("redis bus"));
    let expected = expected_signals(2);
    let signals = collector.wait_for(Duration::from_secs(5), |_, _| {
        collector.of("trading:signals", "signal").len() >= expected
    });
    assert!(
        signals.is_some(),
        "expected {expected} signals on trading:signals, saw {}",
        collector.of("trading:signals", "signal").len()
    );
    let mut con = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let len: usize = redis::cmd("XLEN")
        .arg("trading:signals:log")
        .query(&mut con)
        .unwrap();
    assert_eq!(len, expected, "the durable log holds each signal once");
    let orders = collector.of("trading:orders", "order");
    assert!(
        orders
            .iter()
            .any(|o| o["state"] == "filled" && o["mode"] == "paper" && o["price"].is_string()),
        "{orders:?}"
    );
    let signal = &collector.of("trading:signals", "signal")[0];
    for field in [
        "v",
        "type",
        "id",
        "ts",
        "pipeline",
        "plugin",
        "plugin_version",
        "instrument",
        "side",
        "reason",
        "price",
    ] {
        assert!(!signal[field].is_null(), "signal without {field}: {signal}");
    }
    let events: Vec<String> = collector
        .of("trading:events", "event")
        .iter()
        .map(|e| e["event"].as_str().unwrap_or("").to_owned())
        .collect();
    for want in [
        "orders_started",
        "plugin_loaded",
        "pipeline_started",
        "pipeline_finished",
    ] {
        assert!(events.iter().any(|e| e == want), "no {want} in {events:?}");
    }
    let heartbeats = collector.of("trading:events", "heartbeat");
    assert!(
        heartbeats
            .iter()
            .any(|h| h["role"] == "orders" && h["accounts"]["long-1"]["realized"].is_string()),
        "{heartbeats:?}"
    );
    assert!(
        heartbeats
            .iter()
            .any(|h| h["role"] == "engine" && h["pipelines"]["nifty-ma"]["state"].is_string()),
        "{heartbeats:?}"
    );
}

fn publish(url: &str, payload: &str) {
    let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
    let _: i64 = redis::cmd("PUBLISH")
        .arg("trading:commands")
        .arg(payload)
        .query(&mut con)
        .unwrap();
}

fn ack(collector: &Collector, id: &str, role: &str) -> serde_json::Value {
    collector
        .wait_for(Duration::from_secs(10), |_, v| {
            v["type"] == "command_ack" && v["command_id"] == id && v["role"] == role
        })
        .unwrap_or_else(|| panic!("no ack for {id} from {role}"))
}

#[test]
fn commands_are_acknowledged_and_malformed_ones_change_nothing() {
    let server = RedisServer::start();
    let collector = Collector::start(&server.url());
    let dir = tempfile::tempdir().unwrap();
    // A bar every 20 ms: alive long enough to be steered.
    let config = write_config(
        dir.path(),
        &format!("{ACCOUNTS}{}", ma_pipeline(3_000, 3)),
        1,
    );
    let url = server.url();
    let mut child = spawn(&config, &[("REDIS_URL", url.as_str())], &["--quiet"]);
    assert!(
        collector
            .wait_for(Duration::from_secs(15), |_, v| v["event"]
                == "pipeline_started")
            .is_some()
    );

    publish(
        &url,
        r#"{"v":1,"type":"command","id":"c1","cmd":"pause","pipeline":"nifty-ma"}"#,
    );
    assert_eq!(ack(&collector, "c1", "engine")["ok"], true);
    assert!(
        collector
            .wait_for(Duration::from_secs(5), |_, v| v["event"]
                == "pipeline_paused")
            .is_some()
    );
    // The engine's own counters, from its heartbeats: while paused the bars keep coming in
    // (the strategy stays warm) and not one signal goes out.
    let paused_beat = |min_events: u64| {
        collector
            .wait_for(Duration::from_secs(10), |_, v| {
                v["type"] == "heartbeat"
                    && v["role"] == "engine"
                    && v["pipelines"]["nifty-ma"]["state"] == "paused"
                    && v["pipelines"]["nifty-ma"]["events_in"]
                        .as_u64()
                        .is_some_and(|n| n >= min_events)
            })
            .map(|v| {
                (
                    v["pipelines"]["nifty-ma"]["events_in"]
                        .as_u64()
                        .unwrap_or(0),
                    v["pipelines"]["nifty-ma"]["signals_out"]
                        .as_u64()
                        .unwrap_or(0),
                )
            })
            .expect("a heartbeat of the paused pipeline")
    };
    let (events_at_pause, signals_at_pause) = paused_beat(0);
    let (events_later, signals_later) = paused_beat(events_at_pause + 25);
    assert!(
        events_later >= events_at_pause + 25,
        "bars kept coming while paused"
    );
    assert_eq!(
        signals_later,
        signals_at_pause,
        "a paused pipeline emits no signals ({} bars seen meanwhile)",
        events_later - events_at_pause
    );

    publish(
        &url,
        r#"{"v":1,"type":"command","id":"c2","cmd":"resume","user":"asha"}"#,
    );
    assert_eq!(ack(&collector, "c2", "engine")["ok"], true);
    publish(&url, r#"{"v":1,"type":"command","id":"c3","cmd":"kill"}"#);
    assert_eq!(ack(&collector, "c3", "orders")["ok"], true);
    assert!(
        collector
            .wait_for(Duration::from_secs(10), |_, v| v["event"]
                == "order_refused"
                && v["rule"] == "kill_switch")
            .is_some(),
        "no orders while the kill switch is on"
    );
    publish(
        &url,
        r#"{"v":1,"type":"command","id":"c4","cmd":"release"}"#,
    );
    assert_eq!(ack(&collector, "c4", "orders")["ok"], true);
    publish(
        &url,
        r#"{"v":1,"type":"command","id":"c5","cmd":"flatten","account":"both-1"}"#,
    );
    assert_eq!(ack(&collector, "c5", "orders")["ok"], true);
    publish(
        &url,
        r#"{"v":1,"type":"command","id":"c6","cmd":"flatten","account":"nobody"}"#,
    );
    assert_eq!(ack(&collector, "c6", "orders")["ok"], false);
    publish(
        &url,
        r#"{"v":1,"type":"command","id":"c7","cmd":"pause","pipeline":"no-such"}"#,
    );
    assert_eq!(ack(&collector, "c7", "engine")["ok"], false);
    publish(&url, r#"{"v":1,"type":"command","id":"c8","cmd":"dance"}"#);
    assert_eq!(ack(&collector, "c8", "orders")["ok"], false);
    publish(&url, r#"{"v":1,"type":"command","cmd":"pause""#);
    assert!(
        collector
            .wait_for(Duration::from_secs(5), |_, v| v["type"] == "error"
                && v["source"] == "commands")
            .is_some()
    );
    // A basket is an entry: sent while the market's clock is well inside the entry window
    // (the replay runs a day in about eight seconds; late in the day it would be refused).
    let seen = collector.messages().len();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !collector.messages()[seen..].iter().any(|(c, v)| {
        c == "trading:quotes"
            && v["ts"].as_i64().is_some_and(|ts| {
                (570..780).contains(&tradehost::domain::time::ist_minute_of_day(ts))
            })
    }) {
        assert!(
            Instant::now() < deadline,
            "no price between 09:30 and 13:00"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    publish(
        &url,
        r#"{"v":1,"type":"command","id":"c11","cmd":"basket","account":"both-1","legs":[{"instrument":"NIFTY","side":"sell","qty":75},{"instrument":"NIFTY","side":"buy","qty":75}],"unwind":true}"#,
    );
    assert_eq!(
        ack(&collector, "c11", "orders")["detail"],
        "basket c11 placed: buy legs first"
    );
    assert!(
        collector
            .wait_for(Duration::from_secs(5), |_, v| v["event"] == "basket_placed"
                && v["basket"] == "c11")
            .is_some()
    );
    publish(
        &url,
        r#"{"v":1,"type":"command","id":"c12","cmd":"basket","account":"both-1","legs":[]}"#,
    );
    assert_eq!(ack(&collector, "c12", "orders")["ok"], false);
    publish(
        &url,
        r#"{"v":1,"type":"command","id":"c9","cmd":"stop","pipeline":"*"}"#,
    );
    assert_eq!(ack(&collector, "c9", "engine")["ok"], true);
    assert!(
        collector
            .wait_for(Duration::from_secs(5), |_, v| v["event"]
                == "pipeline_stopped")
            .is_some()
    );
    publish(
        &url,
        r#"{"v":1,"type":"command","id":"c10","cmd":"start","pipeline":"nifty-ma"}"#,
    );
    assert_eq!(ack(&collector, "c10", "engine")["detail"], "start nifty-ma");

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "tradehost did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "a SIGTERM is a clean shutdown");
    check_journal(&journal(dir.path()));
}

#[test]
fn an_external_feed_on_redis_drives_a_pipeline() {
    let server = RedisServer::start();
    let collector = Collector::start(&server.url());
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "{ACCOUNTS}\n[[pipelines]]\nid = \"feed-ma\"\nplugin = \"ma_crossover.wasm\"\nsymbols = [\"NIFTY\"]\naccounts = [\"long-1\"]\nsource = {{ kind = \"redis\", max_skew_secs = 0 }}\n[pipelines.params]\nfast = 2\nslow = 3\n"
    );
    let config = write_config(dir.path(), &body, 1);
    let url = server.url();
    let mut child = spawn(&config, &[("REDIS_URL", url.as_str())], &["--quiet"]);
    assert!(
        collector
            .wait_for(Duration::from_secs(15), |_, v| v["event"]
                == "pipeline_started")
            .is_some()
    );
    let mut con = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let t0 = 1_704_080_700_000i64;
    // The first tick until the pipeline has it: PUBLISH counts its receivers, the collector
    // (`trading:*`) and, once subscribed, the pipeline's source. Before that it reached no one else.
    let first = format!(
        r#"{{"v":1,"type":"tick","id":"t0-0","ts":{t0},"symbol":"NIFTY","last":"110","volume":0}}"#
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis::cmd("PUBLISH")
        .arg("trading:market:NIFTY")
        .arg(&first)
        .query::<i64>(&mut con)
        .unwrap()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "the pipeline never subscribed to trading:market:NIFTY"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Ticks for six minutes, falling then rising: SMA(2) crosses above SMA(3).
    let closes = [110, 108, 106, 104, 109, 115];
    for (m, close) in closes.iter().enumerate() {
        for s in 0..3 {
            if (m, s) == (0, 0) {
                continue; // sent above
            }
            let ts = t0 + m as i64 * 60_000 + s * 20_000;
            let tick = format!(
                r#"{{"v":1,"type":"tick","id":"t{m}-{s}","ts":{ts},"symbol":"NIFTY","last":"{close}","volume":{}}}"#,
                m * 100 + s as usize
            );
            let _: i64 = redis::cmd("PUBLISH")
                .arg("trading:market:NIFTY")
                .arg(tick)
                .query(&mut con)
                .unwrap();
        }
    }
    let _: i64 = redis::cmd("PUBLISH")
        .arg("trading:market:NIFTY")
        .arg("{not json")
        .query(&mut con)
        .unwrap();
    // Absurd ticks inside the 09:20 bar: each refused with an error naming the
    // instrument and the field, none reaching the candle (its close stays 115).
    let t = t0 + 5 * 60_000 + 50_000;
    let bad = [
        (
            format!(r#""ts":{t},"symbol":"NIFTY","last":"0""#),
            "last 0 is not a positive price",
        ),
        (
            format!(r#""ts":{t},"symbol":"NIFTY","last":"-5""#),
            "last -5 is not a positive price",
        ),
        (
            format!(r#""ts":{t},"symbol":"NIFTY","last":"1000000000000000""#),
            "above the ceiling",
        ),
        (
            format!(r#""ts":{t},"symbol":"NIFTY","last":"115","bid":"0""#),
            "bid 0 is not a positive price",
        ),
        (
            format!(r#""ts":{t},"symbol":"NIFTY","last":"200""#),
            "away from the last price",
        ),
        (
            r#""ts":9223372036854775807,"symbol":"NIFTY","last":"115""#.to_owned(),
            "not a plausible exchange time",
        ),
        (
            r#""ts":4102444800000,"symbol":"NIFTY","last":"115""#.to_owned(),
            "not a plausible exchange time",
        ),
        (
            format!(r#""ts":{},"symbol":"NIFTY","last":"115""#, t0),
            "older than the last accepted",
        ),
    ];
    for (body, _) in &bad {
        let tick = format!(r#"{{"v":1,"type":"tick","id":"bad",{body}}}"#);
        let _: i64 = redis::cmd("PUBLISH")
            .arg("trading:market:NIFTY")
            .arg(tick)
            .query(&mut con)
            .unwrap();
    }
    let closing = format!(
        r#"{{"v":1,"type":"tick","id":"t-last","ts":{},"symbol":"NIFTY","last":"116"}}"#,
        t0 + 6 * 60_000
    );
    let _: i64 = redis::cmd("PUBLISH")
        .arg("trading:market:NIFTY")
        .arg(closing)
        .query(&mut con)
        .unwrap();
    let signal = collector.wait_for(Duration::from_secs(10), |c, v| {
        c == "trading:signals" && v["side"] == "buy"
    });
    let signal = signal.expect("the feed's candles produced a buy");
    assert_eq!(
        signal["ts"],
        t0 + 4 * 60_000,
        "the cross happens on the 09:19 bar"
    );
    assert_eq!(signal["price"], "109");
    assert!(
        collector
            .wait_for(Duration::from_secs(5), |_, v| v["type"] == "error"
                && v["reason"].as_str().is_some_and(
                    |r| r.contains("malformed message on trading:market:NIFTY")
                ))
            .is_some()
    );
    let filled = collector.wait_for(Duration::from_secs(10), |c, v| {
        c == "trading:orders" && v["state"] == "filled"
    });
    assert_eq!(filled.expect("filled on the next bar")["price"], "115");
    for (_, why) in &bad {
        let refused = collector.wait_for(Duration::from_secs(5), |_, v| {
            v["type"] == "error"
                && v["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("NIFTY") && r.contains(why))
        });
        assert!(refused.is_some(), "no error event saying {why:?}");
    }
    // The 09:20 bar the strategy saw (and the order side priced) is made of the good ticks only.
    let bar = collector
        .wait_for(Duration::from_secs(5), |c, v| {
            c == "trading:quotes" && v["ts"] == t0 + 5 * 60_000
        })
        .expect("the 09:20 bar's prices");
    let q = &bar["quotes"][0];
    assert_eq!(
        (
            q["open"].as_str(),
            q["high"].as_str(),
            q["low"].as_str(),
            q["close"].as_str()
        ),
        (Some("115"), Some("115"), Some("115"), Some("115")),
        "{bar}"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
}

#[test]
fn live_mode_and_bad_configs_are_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &format!("{ACCOUNTS}{}", ma_pipeline(0, 1)), 5);
    // A live account without credentials: live mode does not start (tests/tests/live_run.rs covers the rest).
    let live_dir = tempfile::tempdir().unwrap();
    let live = write_config(
        live_dir.path(),
        &format!(
            "{ACCOUNTS}[[accounts]]\nid = \"kite-x\"\nbroker = \"kite\"\ncapital = 100000\n{}",
            ma_pipeline(0, 1)
        ),
        5,
    );
    let out = run(&live, &[("TRADING_MODE", "live")], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("TRADING_MODE=live refused to start")
            && err.contains("account kite-x (kite): no api_key"),
        "{err}"
    );
    assert!(
        !live_dir.path().join("journal.sqlite").exists(),
        "nothing ran"
    );
    let broker_dir = tempfile::tempdir().unwrap();
    let bad_broker = write_config(
        broker_dir.path(),
        &format!("{ACCOUNTS}{}", ma_pipeline(0, 1)).replacen(
            "id = \"long-1\"",
            "id = \"long-1\"\nbroker = \"zerodha\"",
            1,
        ),
        5,
    );
    let err = String::from_utf8_lossy(&run(&bad_broker, &[], &[]).stderr).into_owned();
    assert!(err.contains("accounts[0].broker: unknown broker \"zerodha\"; expected one of paper, openalgo, kite, upstox"), "{err}");

    let bad_dir = tempfile::tempdir().unwrap();
    let bad = write_config(
        bad_dir.path(),
        &format!("{ACCOUNTS}{}", ma_pipeline(0, 1)).replace(
            "accounts = [\"long-1\", \"both-1\"]",
            "accounts = [\"long-1\", \"nobody\"]",
        ),
        5,
    );
    let err = String::from_utf8_lossy(&run(&bad, &[], &[]).stderr).into_owned();
    assert!(
        err.contains("pipelines.toml:")
            && err.contains("pipelines[0].accounts[1]: unknown account \"nobody\""),
        "{err}"
    );

    let out = run(&config, &[], &["--role", "orders"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs a Redis bus"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn monitor_shows_what_happens_on_the_bus() {
    use std::io::{BufRead as _, BufReader};
    let server = RedisServer::start();
    let url = server.url();
    let mut child = Command::new(tradehost_bin())
        .args(["monitor", "--redis", &url, "--config", "/nonexistent.toml"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("monitor started");
    assert!(first.contains("watching trading:*"), "{first}");
    let mut con = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let messages = [
        (
            "trading:signals",
            r#"{"v":1,"type":"signal","id":"s1","ts":1704080700000,"pipeline":"nifty-ma","instrument":"NIFTY","side":"buy","price":"21700.5","reason":"cross"}"#,
        ),
        (
            "trading:orders",
            r#"{"v":1,"type":"order","id":"o1","ts":1704080760000,"mode":"paper","client_order_id":"th1","account":"acct","state":"filled","instrument":"NIFTY","side":"buy","qty":"10","price":"21701"}"#,
        ),
        (
            "trading:events",
            r#"{"v":1,"type":"error","id":"e1","ts":1704080760000,"source":"commands","reason":"bad"}"#,
        ),
    ];
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    // Publish until the monitor has seen all three (its subscription may take a moment).
    while lines.len() < 3 && Instant::now() < deadline {
        if lines.is_empty() {
            for (channel, payload) in messages {
                let _: i64 = redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(payload)
                    .query(&mut con)
                    .unwrap();
            }
        }
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            lines.push(line);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let all = lines.join("\n");
    for want in [
        "nifty-ma NIFTY buy @ 21700.5 — cross",
        "acct filled NIFTY buy 10 th1 @ 21701",
        "ERROR commands: bad",
    ] {
        assert!(all.contains(want), "{want:?} missing from:\n{all}");
    }
}

#[test]
fn a_replay_file_that_cannot_be_read_fails_the_run_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-day.csv");
    let bad = dir.path().join("bad-day.csv");
    std::fs::write(
        &bad,
        "timestamp,open,high,low,close\n2024-01-01T09:15:00+05:30,100,101,99,x\n",
    )
    .unwrap();
    for (file, says) in [(&missing, "No such file"), (&bad, "field `close`")] {
        let body = format!(
            "{ACCOUNTS}\n[[pipelines]]\nid = \"replayed\"\nplugin = \"ma_crossover.wasm\"\nsymbols = [\"NIFTY\"]\naccounts = [\"long-1\"]\nsource = {{ kind = \"replay\", files = [{:?}], speed = 0 }}\n",
            file.display().to_string()
        );
        let config = write_config(dir.path(), &body, 1);
        let out = run(&config, &[], &[]);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            !out.status.success(),
            "a run that cannot read its data does not end as a success:\n{stdout}\n{stderr}"
        );
        assert!(
            stderr.contains(&file.display().to_string()) && stderr.contains(says),
            "{stderr}"
        );
        assert!(
            stdout.contains("pipeline_failed replayed"),
            "the alert is on the events channel:\n{stdout}"
        );
        assert_eq!(
            count(&journal(dir.path()), "SELECT COUNT(*) FROM orders"),
            0
        );
    }
}

/// One order manager per journal: a second `run` on the journal of a running one is refused
/// at once, naming the journal and the process holding it, and changes nothing; once the
/// first has stopped (SIGTERM), a run on the journal goes ahead.
#[test]
fn a_second_run_on_a_journal_in_use_is_refused_naming_the_journal_and_its_process() {
    let dir = tempfile::tempdir().unwrap();
    // A live-speed day: the first run is still trading when the second starts.
    let config = write_config(dir.path(), &format!("{ACCOUNTS}{}", ma_pipeline(60, 1)), 1);
    let mut first = tradehost_tests::Killed(spawn(&config, &[], &[]));
    let lock = dir.path().join("journal.sqlite.lock");
    let pid = first.0.id().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&lock).ok().as_deref() != Some(pid.as_str()) {
        assert!(Instant::now() < deadline, "the first run holds no lock");
        assert!(
            first.0.try_wait().unwrap().is_none(),
            "the first run stays up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = run(&config, &[], &[]);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "the second run is refused");
    assert!(
        stderr.contains(&format!(
            "the journal {} is in use by another tradehost process (pid {pid})",
            dir.path().join("journal.sqlite").display()
        )),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&lock).unwrap(),
        pid,
        "the lock is still the first run's"
    );
    assert!(
        first.0.try_wait().unwrap().is_none(),
        "the first run trades on"
    );
    // SIGTERM: the first stops cleanly and lets the journal go.
    let _ = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while first.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the first run stops on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Then another run takes the journal.
    let third = tradehost_tests::Killed(spawn(&config, &[], &[]));
    let pid = third.0.id().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&lock).ok().as_deref() != Some(pid.as_str()) {
        assert!(
            Instant::now() < deadline,
            "the journal is not taken after the first stopped"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
