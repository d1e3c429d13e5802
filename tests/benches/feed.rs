//! Broker feed decoding, in one run on this machine: Kite ticker frames
//! (full-mode packets, 100 to a frame, built as the documentation lays them
//! out) decoded into ticks, and those ticks built into one-minute candles;
//! next to, as the baseline of the same run, the JSON tick messages an
//! external feeder publishes on `trading:market:<symbol>` parsed by the
//! Redis source. Figures are per core (one thread).
//!
//! `cargo bench -p tradehost-tests --bench feed` (or `scripts/bench`).

use std::time::Instant;

use tradehost::bus::message::MarketMessage;
use tradehost::market::feed::{FeedItem, Wire};
use tradehost::market::source::CandleBuilder;
use tradehost_tests::kite_ticker::{Full, message};

const TICKS: u32 = 1_000_000;
const PER_FRAME: u32 = 100;
const INSTRUMENTS: u32 = 500;
/// 2024-01-01 09:15 IST.
const T0: u32 = 1_704_080_700;

fn main() {
    let frames: Vec<Vec<u8>> = (0..TICKS / PER_FRAME)
        .map(|f| {
            let packets: Vec<Vec<u8>> = (0..PER_FRAME)
                .map(|i| {
                    let n = f * PER_FRAME + i;
                    let token = ((n % INSTRUMENTS) + 1) << 8 | 2;
                    // 1,000,000 ticks over 500 instruments: 2,000 each, spread over the session.
                    Full {
                        token,
                        last_paise: 2_170_000 + (n % 997) * 5,
                        close_paise: 2_165_000,
                        volume: n,
                        oi: 0,
                        exchange_secs: T0 + n / 50,
                        bid_paise: 2_169_995,
                        ask_paise: 2_170_005,
                    }
                    .packet()
                })
                .collect();
            message(&packets)
        })
        .collect();
    let bytes: usize = frames.iter().map(Vec::len).sum();

    let started = Instant::now();
    let mut items = Vec::with_capacity(PER_FRAME as usize);
    let mut decoded = 0usize;
    let mut builders: Vec<CandleBuilder> = (0..INSTRUMENTS)
        .map(|i| CandleBuilder::new(&format!("S{i}"), 60))
        .collect();
    let mut candles = 0usize;
    let mut decode_time = std::time::Duration::ZERO;
    for frame in &frames {
        let t = Instant::now();
        items.clear();
        if Wire::Kite.decode_binary(frame, &mut items).is_err() {
            eprintln!("a frame did not decode");
            return;
        }
        decode_time += t.elapsed();
        for item in &items {
            if let FeedItem::Tick(tick) = item {
                decoded += 1;
                let i = tick
                    .token
                    .parse::<u32>()
                    .map_or(0, |t| ((t >> 8) - 1) as usize)
                    % INSTRUMENTS as usize;
                candles += usize::from(
                    builders[i]
                        .tick(
                            tick.ts_ms.unwrap_or(0),
                            tick.last,
                            tick.day_volume.unwrap_or(0),
                            0,
                        )
                        .is_some(),
                );
            }
        }
    }
    let total = started.elapsed();

    // Baseline: the same number of ticks as JSON messages of an external feed.
    let json: Vec<String> = (0..TICKS)
        .map(|n| format!(r#"{{"v":1,"type":"tick","id":"t{n}","ts":{},"symbol":"S{}","last":"{}.{:02}","volume":{n},"bid":"21699.95","ask":"21700.05"}}"#, (u64::from(T0) + u64::from(n / 50)) * 1000, n % INSTRUMENTS, 21_700 + n % 997 / 20, (n % 20) * 5))
        .collect();
    let t = Instant::now();
    let mut parsed = 0usize;
    for m in &json {
        parsed += usize::from(MarketMessage::parse(m).is_ok());
    }
    let json_time = t.elapsed();

    let rate = |n: usize, d: std::time::Duration| n as f64 / d.as_secs_f64().max(1e-9);
    println!(
        "Kite ticker frames: {decoded} full-mode ticks in {} frames ({:.1} MB)",
        frames.len(),
        bytes as f64 / 1e6
    );
    println!(
        "  decode only:            {:>12.0} ticks/s",
        rate(decoded, decode_time)
    );
    println!(
        "  decode + candles:       {:>12.0} ticks/s ({candles} one-minute candles closed)",
        rate(decoded, total)
    );
    println!(
        "JSON ticks (baseline):    {:>12.0} ticks/s ({parsed} parsed)",
        rate(parsed, json_time)
    );
    println!(
        "ratio, Kite decode / JSON parse: {:.1}x",
        rate(decoded, decode_time) / rate(parsed, json_time).max(1e-9)
    );
    if decoded != TICKS as usize || parsed != TICKS as usize {
        eprintln!("warning: decoded {decoded} and parsed {parsed} of {TICKS}");
    }
}
