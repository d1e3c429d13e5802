//! The pipeline's own speed, in one run on this machine.
//!
//! `cargo bench -p tradehost-tests --bench pipeline` (or `scripts/bench`).
//!
//! 1. Latency over Redis on loopback: from a tick published on
//!    `trading:market:NIFTY` to the paper fill event it causes on
//!    `trading:orders`, through a `tradehost run` process (engine, strategy in
//!    its sandbox, signal log, order manager with its SQLite journal), p50 and
//!    p99 over 10,000 ticks at 250 a second; next to a bare Redis publish→receive round trip
//!    measured the same way in the same run, as a ratio.
//! 2. Throughput of the subscriber and paper order manager: signals per
//!    second with 100 accounts on the pipeline, against 1 account.
//!
//! `BENCH_TICKS` changes the tick count (default 10,000).

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use tradehost::bus::message::{Quote, QuotesMessage, SCHEMA_VERSION, SignalMessage};
use tradehost::config::Config;
use tradehost::orders::OrderManager;
use tradehost_tests::{RedisServer, tradehost_bin, write_config};

const T0: i64 = 1_704_080_700_000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted
        .get(((sorted.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or_default()
}

fn report(name: &str, mut lat: Vec<Duration>) -> (Duration, Duration) {
    lat.sort();
    let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
    println!(
        "{name:<44} n={:>6}  p50 {:>9.3} ms  p99 {:>9.3} ms",
        lat.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    (p50, p99)
}

/// Publish `n` messages at `rate` per second; `on_receive` matches each received one to its send time.
fn paced_publish(
    url: &str,
    channel: &str,
    n: usize,
    rate: f64,
    payload: impl Fn(usize) -> String,
    sent: &Mutex<HashMap<usize, Instant>>,
) {
    let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
    let start = Instant::now();
    for k in 0..n {
        let due = start + Duration::from_secs_f64(k as f64 / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let body = payload(k);
        sent.lock().unwrap().insert(k, Instant::now());
        let _: i64 = redis::cmd("PUBLISH")
            .arg(channel)
            .arg(body)
            .query(&mut con)
            .unwrap();
    }
}

fn subscribe(
    url: &str,
    channel: &str,
    on_message: impl Fn(serde_json::Value, Instant) + Send + 'static,
) -> std::sync::mpsc::Receiver<()> {
    let client = redis::Client::open(url).unwrap();
    let channel = channel.to_owned();
    let (ready_tx, ready) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut con = client.get_connection().unwrap();
        let mut ps = con.as_pubsub();
        ps.subscribe(&channel).unwrap();
        let _ = ready_tx.send(());
        while let Ok(msg) = ps.get_message() {
            let at = Instant::now();
            let text: String = msg.get_payload().unwrap_or_default();
            on_message(serde_json::from_str(&text).unwrap_or_default(), at);
        }
    });
    ready
}

fn latency(ticks: usize) {
    // A busy NSE instrument ticks a few times a second; 250 a second on one
    // instrument leaves the order manager (journal fsyncs included) headroom,
    // so the figure is latency, not queueing. `BENCH_RATE` changes it.
    let rate: f64 = std::env::var("BENCH_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(250.0);
    println!("latency over Redis on loopback, {ticks} ticks at {rate} a second:");
    let server = RedisServer::start();
    let url = server.url();

    // Baseline: a bare publish → receive through the same server.
    let sent = Arc::new(Mutex::new(HashMap::new()));
    let got = Arc::new(Mutex::new(Vec::new()));
    let (s2, g2) = (sent.clone(), got.clone());
    let ready = subscribe(&url, "bench:echo", move |v, at| {
        if let Some(k) = v["k"].as_u64()
            && let Some(t) = s2.lock().unwrap().get(&(k as usize))
        {
            g2.lock().unwrap().push(at - *t);
        }
    });
    ready.recv().unwrap();
    paced_publish(
        &url,
        "bench:echo",
        ticks,
        rate,
        |k| format!(r#"{{"k":{k}}}"#),
        &sent,
    );
    std::thread::sleep(Duration::from_millis(300));
    let (base50, base99) = report("bare Redis publish -> receive", got.lock().unwrap().clone());

    // The pipeline: tick k closes bar k-1, whose price fills the order of bar k-2.
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        r#"
[[accounts]]
id = "bench"
capital = 100000000
mode = "long"
product = "cnc"
# The ticks run around the clock and every bar trades: no window, no cooldown.
risk = { entry_window = "00:00-23:59", cooldown_secs = 0, max_orders_per_sec = 1000 }

[[pipelines]]
id = "latency"
plugin = "hostile.wasm"
symbols = ["NIFTY"]
accounts = ["bench"]
source = { kind = "redis", max_skew_secs = 0 }
[pipelines.params]
behaviour = "every-bar"
"#,
        60,
    );
    let sent = Arc::new(Mutex::new(HashMap::new()));
    let got = Arc::new(Mutex::new(Vec::new()));
    let (s2, g2) = (sent.clone(), got.clone());
    let ready = subscribe(&url, "trading:orders", move |v, at| {
        if v["state"] == "filled" {
            // Filled at the price of bar k-1, which tick k closed.
            if let Some(fill_ts) = v["fill_ts"].as_i64() {
                let k = ((fill_ts - T0) / 60_000 + 1) as usize;
                if let Some(t) = s2.lock().unwrap().get(&k) {
                    g2.lock().unwrap().push(at - *t);
                }
            }
        }
    });
    ready.recv().unwrap();
    let events = Arc::new(Mutex::new(false));
    let e2 = events.clone();
    let started = subscribe(&url, "trading:events", move |v, _| {
        if v["event"] == "pipeline_started" {
            *e2.lock().unwrap() = true;
        }
    });
    started.recv().unwrap();
    let mut child = Command::new(tradehost_bin())
        .args(["run", "--quiet", "--config"])
        .arg(&config)
        .env("REDIS_URL", &url)
        .env("RUST_LOG", "warn")
        .env_remove("TRADING_MODE")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let wait = Instant::now();
    while !*events.lock().unwrap() {
        assert!(
            wait.elapsed() < Duration::from_secs(30),
            "the pipeline did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    paced_publish(
        &url,
        "trading:market:NIFTY",
        ticks + 2,
        rate,
        |k| {
            format!(
                r#"{{"v":1,"type":"tick","id":"b{k}","ts":{},"symbol":"NIFTY","last":"{}"}}"#,
                T0 + k as i64 * 60_000,
                20_000 + (k % 50)
            )
        },
        &sent,
    );
    let wait = Instant::now();
    while got.lock().unwrap().len() < ticks && wait.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let lat = got.lock().unwrap().clone();
    assert!(
        lat.len() as f64 >= ticks as f64 * 0.95,
        "only {} of {ticks} fills were seen",
        lat.len()
    );
    let (p50, p99) = report("tick -> strategy -> signal -> order -> fill", lat);
    println!(
        "{:<44} p50 {:.1}x, p99 {:.1}x the bare round trip",
        "ratio",
        p50.as_secs_f64() / base50.as_secs_f64(),
        p99.as_secs_f64() / base99.as_secs_f64()
    );
}

fn manager(dir: &Path, accounts: usize) -> OrderManager {
    let mut body = String::new();
    for a in 0..accounts {
        body += &format!(
            "[[accounts]]\nid = \"a{a}\"\ncapital = 10000000\nmode = \"both\"\nproduct = \"cnc\"\nsizing = {{ kind = \"fixed\", qty = {} }}\nrisk = {{ entry_window = \"00:00-23:59\", cooldown_secs = 0, max_orders_per_sec = 100000 }}\n\n",
            1 + a % 5
        );
    }
    let list: Vec<String> = (0..accounts).map(|a| format!("\"a{a}\"")).collect();
    body += &format!(
        "[[pipelines]]\nid = \"p\"\nplugin = \"x.wasm\"\nsymbols = [\"NIFTY\"]\naccounts = [{}]\nsource = {{ kind = \"redis\" }}\n",
        list.join(", ")
    );
    let config = Arc::new(Config::parse(Path::new("bench.toml"), &body).unwrap());
    OrderManager::open(
        &dir.join("journal.sqlite"),
        config,
        tradehost::domain::TradingMode::Paper,
    )
    .unwrap()
}

fn throughput(accounts: usize, signals: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let mut om = manager(dir.path(), accounts);
    let start = Instant::now();
    for k in 0..signals {
        let ts = T0 + k as i64 * 60_000;
        let price = Decimal::from(20_000 + (k % 40) as i64);
        let s = SignalMessage {
            v: SCHEMA_VERSION,
            kind: "signal".into(),
            id: SignalMessage::make_id("p", "bench", "0", ts, 0),
            ts,
            pipeline: "p".into(),
            plugin: "bench".into(),
            plugin_version: "0".into(),
            instrument: "NIFTY".into(),
            side: if k % 2 == 0 { "buy" } else { "sell" }.into(),
            reason: "bench".into(),
            price: Some(price),
            stop_loss: None,
            target: None,
            strength: None,
            plugin_sha256: None,
            order: None,
        };
        om.on_signal(&s).unwrap();
        let q = Quote {
            instrument: "NIFTY".into(),
            open: price,
            high: price,
            low: price,
            close: price,
            bid: None,
            ask: None,
        };
        om.on_quotes(&QuotesMessage {
            v: SCHEMA_VERSION,
            kind: "quotes".into(),
            id: format!("q{k}"),
            ts: ts + 60_000,
            quotes: vec![q],
            after_signal: None,
            last: false,
        })
        .unwrap();
    }
    let elapsed = start.elapsed();
    let fills: i64 = rusqlite::Connection::open(dir.path().join("journal.sqlite"))
        .unwrap()
        .query_row("SELECT COUNT(*) FROM fills", [], |r| r.get(0))
        .unwrap();
    assert_eq!(fills as usize, signals * accounts, "every order filled");
    signals as f64 / elapsed.as_secs_f64()
}

fn main() {
    let ticks: usize = std::env::var("BENCH_TICKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    if std::env::var("BENCH_SKIP_LATENCY").is_err() {
        latency(ticks);
    }
    if std::env::var("BENCH_SKIP_THROUGHPUT").is_ok() {
        return;
    }
    println!(
        "\nsubscriber + paper order manager (decide, journal, fill), synchronous=FULL journal:"
    );
    let one = throughput(1, 400);
    let hundred = throughput(100, 100);
    println!("{:<44} {one:>10.0} signals/s", "1 account");
    println!(
        "{:<44} {hundred:>10.0} signals/s  ({:.0} orders/s; {:.2}x the 1-account rate)",
        "100 accounts",
        hundred * 100.0,
        hundred / one
    );
}
