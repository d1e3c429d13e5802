//! The live order path, in one run on this machine: orders through the router
//! (placed, polled, filled) against a local Kite Connect server over loopback
//! HTTP, next to the same router over the in-memory paper venue. The ratio of
//! acknowledgement times is what a placement's HTTP round trip and JSON cost on
//! top of the routing itself; fills also wait for the next status poll. A real
//! broker adds its network and matching time on top of both.
//!
//! `cargo bench -p tradehost-tests --bench live` (or `scripts/bench`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use tradehost::brokers::instruments::InstrumentMaster;
use tradehost::brokers::kite::Kite;
use tradehost::brokers::live::{
    AccountLink, LiveOrder, LiveRouter, LiveUpdate, RouterOutput, RouterSettings,
};
use tradehost::brokers::paper::PaperBroker;
use tradehost::brokers::{Broker, Secret};
use tradehost::bus::Bus;
use tradehost::config::Product;
use tradehost::subscriber::OrderSide;
use tradehost_tests::brokers::{Flavor, MockServer};

const ORDERS: usize = 500;

struct Run {
    /// Hand-over to the broker's acknowledgement: the placement round trip.
    accepted: Vec<Duration>,
    /// Hand-over to the recorded fill: adds the wait for the next status poll.
    filled: Vec<Duration>,
    total: Duration,
}

/// Send `ORDERS` orders one after another; time each from hand-over to its fill.
async fn run(broker: Arc<dyn Broker>, master: InstrumentMaster, fill: impl Fn()) -> Run {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let settings = RouterSettings {
        poll: Duration::from_millis(1),
        ..RouterSettings::default()
    };
    let link = AccountLink {
        account: "bench".into(),
        broker,
        product: Product::Mis,
        protection_pct: Decimal::from(2),
        algo_id: None,
        orders_per_sec: 10,
        margin_check: true,
    };
    let router = LiveRouter::start(vec![link], master, settings, tx);
    let (mut accepted, mut filled) = (Vec::with_capacity(ORDERS), Vec::with_capacity(ORDERS));
    let started = Instant::now();
    for i in 0..ORDERS {
        let t = Instant::now();
        router.send(LiveOrder::new(
            &format!("th{i:018x}"),
            "bench",
            "RELIANCE",
            if i % 2 == 0 {
                OrderSide::Buy
            } else {
                OrderSide::Sell
            },
            Decimal::from(5),
            Some(Decimal::from(1186)),
        ));
        loop {
            match rx.recv().await.expect("router") {
                RouterOutput::Update(LiveUpdate::Accepted { .. }) => {
                    accepted.push(t.elapsed());
                    fill();
                }
                RouterOutput::Update(LiveUpdate::Filled { .. }) => break,
                RouterOutput::Update(other) => panic!("{other:?}"),
                RouterOutput::Notice(n) => panic!("{n:?}"),
            }
        }
        filled.push(t.elapsed());
    }
    Run {
        accepted,
        filled,
        total: started.elapsed(),
    }
}

fn quantile(sorted: &[Duration], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn report(name: &str, mut r: Run) -> f64 {
    r.accepted.sort_unstable();
    r.filled.sort_unstable();
    let rate = ORDERS as f64 / r.total.as_secs_f64();
    println!(
        "{name:<28} {rate:>9.0} {:>11.3} {:>11.3} {:>11.3} {:>11.3}",
        quantile(&r.accepted, 0.5),
        quantile(&r.accepted, 0.99),
        quantile(&r.filled, 0.5),
        quantile(&r.filled, 0.99)
    );
    quantile(&r.accepted, 0.5)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("kite.csv");
    std::fs::write(&csv, "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,lot_size,instrument_type,segment,exchange\n738561,2885,RELIANCE,RELIANCE,0,,0,0.05,1,EQ,NSE,NSE\n").unwrap();
    let master = InstrumentMaster::new(Bus::embedded("bench"));
    master.load("kite", csv.to_str().unwrap()).await.unwrap();

    println!(
        "{ORDERS} orders, one at a time; ms from hand-over to the broker's acknowledgement and to the fill (status polled every 1 ms):"
    );
    println!(
        "{:<28} {:>9} {:>11} {:>11} {:>11} {:>11}",
        "venue", "orders/s", "ack p50", "ack p99", "fill p50", "fill p99"
    );
    // Baseline: the in-memory venue, filled as soon as the router has the order.
    let paper = Arc::new(PaperBroker::new(Decimal::ZERO));
    let venue = paper.clone();
    let base = report(
        "paper venue (in memory)",
        run(paper, master.clone(), move || {
            venue.on_price("RELIANCE", Decimal::from(1186))
        })
        .await,
    );
    // Kite Connect over loopback HTTP: place, then the first status poll completes it.
    let mock = MockServer::start(Flavor::Kite, "bench-key-000001", "bench-token-000001");
    {
        // The market the orders fill at; the router is measured, not Kite's order rate.
        let mut s = mock.state();
        s.ltp.insert("RELIANCE".into(), Decimal::from(1186));
        s.orders_per_second = 0;
    }
    let kite = Arc::new(
        Kite::new(
            &mock.url,
            Secret::new("bench-key-000001"),
            Secret::new("bench-token-000001"),
            Duration::from_secs(5),
        )
        .unwrap(),
    );
    let live = report("kite (local HTTP server)", run(kite, master, || {}).await);
    assert_eq!(mock.state().orders.len(), ORDERS, "each order placed once");
    println!(
        "placement round trip, kite over local HTTP / in-memory venue (p50): {:.0}x",
        live / base
    );
}
