//! Tick frame → order request on the wire, through the real binary in live mode: a local
//! Kite ticker sends full-mode frames at 50,000 ticks a second across 500 instruments; one of
//! them (`S0`) alternates up and down every exchange minute so that ma-crossover (fast 1, slow
//! 2) signals at every bar close, while the other 499 tick at a constant price (equal averages
//! are a tie, never a cross). Exchange time runs at `BENCH_MINUTES_PER_SEC` minutes a second
//! (default 1: every instrument closes a bar a second, 500 bars a second in all, each a price
//! the orders side journals), so a bar of `S0` closes on the first frame carrying its next
//! minute; the latency of an order is
//! from the moment that frame was handed to the socket to the moment the order's request
//! reached the local Kite Connect server: feed decode, candle, strategy in its sandbox, signal
//! log, subscriber, risk, journal commit, router, HTTP. Next to it, as the baseline of the same
//! run: a bare WebSocket echo round trip over loopback with frames of the same size.
//!
//! `cargo bench -p tradehost-tests --bench feed_to_order` (or `scripts/bench`). `BENCH_SECS`
//! sets the length (default 30 s).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;
use tradehost_tests::brokers::{Flavor, MockServer};
use tradehost_tests::kite_ticker::{Full, KiteTicker, Push, message};
use tradehost_tests::{plugin_dir, tradehost_bin};

const INSTRUMENTS: u32 = 500;
const PER_FRAME: u32 = 100;
const FRAMES_PER_SEC: u32 = 500; // 50,000 ticks a second

/// 2024-01-01 09:15 IST.
const T0: u32 = 1_704_080_700;

fn token(i: u32) -> u32 {
    ((i + 1) << 8) | 1
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Round trips of `n` frames of `size` bytes to a loopback echo server.
async fn echo_baseline(n: usize, size: usize) -> Vec<Duration> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        if let Ok((stream, _)) = listener.accept().await
            && let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await
        {
            while let Some(Ok(m)) = ws.next().await {
                if m.is_binary() && ws.send(m).await.is_err() {
                    break;
                }
            }
        }
    });
    let Ok((mut ws, _)) = tokio_tungstenite::connect_async(format!("ws://{addr}/")).await else {
        return Vec::new();
    };
    let payload = vec![7u8; size];
    let mut rtts = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        if ws
            .send(Message::Binary(payload.clone().into()))
            .await
            .is_err()
        {
            break;
        }
        match ws.next().await {
            Some(Ok(_)) => rtts.push(t.elapsed()),
            _ => break,
        }
    }
    server.abort();
    rtts.sort_unstable();
    rtts
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let secs: u32 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30)
        .clamp(3, 60);
    let minutes_per_sec: u32 = std::env::var("BENCH_MINUTES_PER_SEC")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .clamp(1, 10);
    let frames_per_minute = FRAMES_PER_SEC / minutes_per_sec;
    let frame_bytes = 2 + PER_FRAME as usize * (2 + 184);
    let echo = echo_baseline(2_000, frame_bytes).await;

    let ticker = KiteTicker::start("bench-key", "bench-token").await;
    let rest = MockServer::start(Flavor::Kite, "bench-key", "bench-token");
    // The path to the broker is measured, not Kite's order rate (500 bars a second cross).
    rest.state().orders_per_second = 0;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut csv = String::from(
        "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,lot_size,instrument_type,segment,exchange\n",
    );
    for i in 0..INSTRUMENTS {
        csv.push_str(&format!(
            "{},{i},S{i},S{i},0,,0,0.05,1,EQ,NSE,NSE\n",
            token(i)
        ));
    }
    std::fs::write(dir.path().join("kite.csv"), csv).expect("write");
    let symbols: Vec<String> = (0..INSTRUMENTS).map(|i| format!("\"S{i}\"")).collect();
    let config = format!(
        "[host]\nplugin_dir = {:?}\njournal = {:?}\nheartbeat_secs = 5\n\n[live]\npoll_ms = 5\ninstruments = {{ kite = \"kite.csv\" }}\n\n[[accounts]]\nid = \"bench\"\nbroker = \"kite\"\nbase_url = \"{}\"\nws_url = \"{}\"\ncapital = 100000000\nproduct = \"cnc\"\nsizing = {{ kind = \"fixed\", qty = 1 }}\nrisk = {{ cooldown_secs = 0, max_orders_per_sec = 1000 }}\n\n[[pipelines]]\nid = \"bench\"\nplugin = \"ma_crossover.wasm\"\nsymbols = [{}]\naccounts = [\"bench\"]\nsource = {{ kind = \"broker\", account = \"bench\", max_skew_secs = 0, stale_secs = 0 }}\n[pipelines.params]\nfast = 1\nslow = 2\n",
        plugin_dir().display().to_string(),
        dir.path().join("journal.sqlite").display().to_string(),
        rest.url,
        ticker.url(),
        symbols.join(", ")
    );
    let cfg = dir.path().join("pipelines.toml");
    std::fs::write(&cfg, config).expect("write");
    let mut child = Command::new(tradehost_bin())
        .args(["run", "--quiet", "--config"])
        .arg(&cfg)
        .env_remove("REDIS_URL")
        .env("TRADING_MODE", "live")
        .env("RUST_LOG", "error")
        .env("TRADEHOST_BENCH_API_KEY", "bench-key")
        .env("TRADEHOST_BENCH_ACCESS_TOKEN", "bench-token")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting tradehost");
    let ready = Instant::now();
    while !ticker.seen(|s| s.requests.values().any(|r| r.len() >= 2)) {
        if ready.elapsed() > Duration::from_secs(60) {
            eprintln!(
                "the run never subscribed; is the binary built (cargo build --release -p tradehost)?"
            );
            let _ = child.kill();
            let _ = child.wait();
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The market: frame f carries instruments (100 f .. 100 f + 99) mod 500, so S0 is in every
    // fifth frame; minute m spans `frames_per_minute` frames.
    let mut bar_closes: Vec<Instant> = Vec::new();
    let total = secs * FRAMES_PER_SEC;
    let mut pace =
        tokio::time::interval(Duration::from_micros(1_000_000 / u64::from(FRAMES_PER_SEC)));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut s0_minute = None;
    for f in 0..total {
        pace.tick().await;
        let minute = f / frames_per_minute;
        let secs_in = (f % frames_per_minute) * 60 / frames_per_minute;
        let exchange = T0 + minute * 60 + secs_in;
        let packets: Vec<Vec<u8>> = (0..PER_FRAME)
            .map(|k| {
                let i = (f * PER_FRAME + k) % INSTRUMENTS;
                // S0: up one minute, down the next; the rest flat.
                let rupees = if i == 0 {
                    if minute.is_multiple_of(2) { 1_010 } else { 990 }
                } else {
                    1_000
                };
                Full {
                    token: token(i),
                    last_paise: rupees * 100,
                    close_paise: 100_000,
                    volume: f,
                    oi: 0,
                    exchange_secs: exchange,
                    bid_paise: rupees * 100 - 5,
                    ask_paise: rupees * 100 + 5,
                }
                .packet()
            })
            .collect();
        let closes_bar =
            (f * PER_FRAME).is_multiple_of(INSTRUMENTS) && s0_minute.is_some_and(|m| m != minute);
        if (f * PER_FRAME).is_multiple_of(INSTRUMENTS) {
            s0_minute = Some(minute);
        }
        let frame = message(&packets);
        if closes_bar {
            bar_closes.push(Instant::now());
        }
        ticker.push(Push::Binary(frame));
    }
    let sent_for = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();

    // Each order is matched to the last bar close sent before it arrived (bars are 100 ms or more
    // apart; an order later than that is counted against the next close, so the tail is a floor).
    let arrivals: Vec<Instant> = rest
        .state()
        .requests
        .iter()
        .filter(|r| r.method == "POST" && r.path.starts_with("/orders/"))
        .map(|r| r.at)
        .collect();
    let mut latencies: Vec<Duration> = arrivals
        .iter()
        .filter_map(|a| {
            bar_closes
                .iter()
                .rev()
                .find(|c| *c <= a)
                .map(|c| a.duration_since(*c))
        })
        .collect();
    latencies.sort_unstable();
    let rate = f64::from(total * PER_FRAME) / sent_for.as_secs_f64().max(1e-9);
    println!(
        "tick frame → order request, tradehost live mode over a local Kite ticker + Kite Connect server"
    );
    println!(
        "  market: {} ticks in {:.1} s ({rate:.0} ticks/s; aim 50,000) across {INSTRUMENTS} instruments, {minutes_per_sec} exchange minute(s) a second ({} bars/s in all), {} bar closes of S0",
        total * PER_FRAME,
        sent_for.as_secs_f64(),
        INSTRUMENTS * minutes_per_sec,
        bar_closes.len()
    );
    println!("  orders placed: {}", latencies.len());
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    let (e50, e99) = (percentile(&echo, 0.5), percentile(&echo, 0.99));
    println!(
        "  tick → order: p50 {:.2} ms, p99 {:.2} ms",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    println!(
        "  baseline, bare WebSocket echo of a {frame_bytes}-byte frame: p50 {:.3} ms, p99 {:.3} ms",
        e50.as_secs_f64() * 1e3,
        e99.as_secs_f64() * 1e3
    );
    if !echo.is_empty() && !latencies.is_empty() {
        println!(
            "  ratio to the echo: p50 {:.0}x, p99 {:.0}x",
            p50.as_secs_f64() / e50.as_secs_f64().max(1e-9),
            p99.as_secs_f64() / e99.as_secs_f64().max(1e-9)
        );
    }
    if latencies.is_empty() {
        eprintln!("warning: no order reached the broker; the figures above are empty");
    }
}
