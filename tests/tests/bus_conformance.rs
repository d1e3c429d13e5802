//! One conformance suite, run against both bus implementations: the
//! embedded one and Redis (a `redis-server` the test starts on a free port).

use std::collections::HashSet;
use std::time::Duration;

use tradehost::bus::Bus;
use tradehost_tests::RedisServer;

const GROUP: &str = "orders";

async fn recv(s: &mut tradehost::bus::Subscription) -> Option<(String, String)> {
    tokio::time::timeout(Duration::from_secs(5), s.recv())
        .await
        .ok()
        .flatten()
}

async fn publish_subscribe(bus: Bus) {
    let mut all = bus.subscribe(&["trading:*".to_owned()]).await.unwrap();
    let mut events = bus.subscribe(&["trading:events".to_owned()]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await; // Redis: let the subscription settle
    bus.publish("trading:orders", "o1").await.unwrap();
    bus.publish("trading:events", "e1").await.unwrap();
    bus.publish("elsewhere:events", "x").await.unwrap();
    assert_eq!(
        recv(&mut all).await,
        Some(("trading:orders".into(), "o1".into()))
    );
    assert_eq!(
        recv(&mut all).await,
        Some(("trading:events".into(), "e1".into()))
    );
    assert_eq!(
        recv(&mut events).await,
        Some(("trading:events".into(), "e1".into())),
        "exact-name subscriptions see only their channel"
    );
}

async fn signals_are_logged_once_and_published(bus: Bus) {
    let mut signals = bus
        .subscribe(&["trading:signals".to_owned()])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(bus.append_signal("p/a@1/100/0", "s1").await.unwrap());
    assert!(bus.append_signal("p/a@1/100/1", "s2").await.unwrap());
    assert!(
        !bus.append_signal("p/a@1/100/0", "s1 again").await.unwrap(),
        "a replayed id is not logged again"
    );
    assert_eq!(bus.log_len().await.unwrap(), 2);
    let got = tokio::time::timeout(Duration::from_secs(5), signals.recv())
        .await
        .unwrap();
    assert_eq!(got, Some(("trading:signals".into(), "s1".into())));
}

async fn group_delivers_each_entry_once_and_keeps_unacked(bus: Bus) {
    bus.ensure_group(GROUP).await.unwrap();
    bus.ensure_group(GROUP).await.unwrap(); // idempotent
    for i in 0..5 {
        bus.append_signal(&format!("id{i}"), &format!("s{i}"))
            .await
            .unwrap();
    }
    let first = bus
        .read_new(GROUP, "a", 3, Duration::from_millis(100))
        .await
        .unwrap();
    let rest = bus
        .read_new(GROUP, "b", 10, Duration::from_millis(100))
        .await
        .unwrap();
    let payloads: Vec<_> = first
        .iter()
        .chain(&rest)
        .map(|e| e.payload.clone())
        .collect();
    assert_eq!(payloads, vec!["s0", "s1", "s2", "s3", "s4"]);
    assert!(
        bus.read_new(GROUP, "a", 10, Duration::from_millis(100))
            .await
            .unwrap()
            .is_empty(),
        "nothing is delivered twice"
    );
    assert_eq!(bus.pending_count(GROUP).await.unwrap(), 5);
    bus.ack(GROUP, &first[0].entry_id).await.unwrap();
    let pending_a: Vec<_> = bus
        .read_pending(GROUP, "a", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.payload)
        .collect();
    assert_eq!(
        pending_a,
        vec!["s1", "s2"],
        "a consumer sees its own unacknowledged entries again after a restart"
    );
    assert_eq!(bus.pending_count(GROUP).await.unwrap(), 4);
    assert_eq!(bus.undelivered_count(GROUP).await.unwrap(), 0);
}

async fn stale_entries_are_taken_over(bus: Bus) {
    bus.ensure_group(GROUP).await.unwrap();
    bus.append_signal("x1", "s1").await.unwrap();
    let dead = bus
        .read_new(GROUP, "dead", 10, Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert!(
        bus.claim_stale(GROUP, "alive", Duration::from_secs(60), 10)
            .await
            .unwrap()
            .is_empty(),
        "not idle long enough"
    );
    tokio::time::sleep(Duration::from_millis(120)).await;
    let claimed = bus
        .claim_stale(GROUP, "alive", Duration::from_millis(100), 10)
        .await
        .unwrap();
    assert_eq!(
        claimed
            .iter()
            .map(|e| e.payload.as_str())
            .collect::<Vec<_>>(),
        vec!["s1"]
    );
    assert_eq!(bus.read_pending(GROUP, "alive", 10).await.unwrap().len(), 1);
    assert!(
        bus.read_pending(GROUP, "dead", 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn blocking_read_wakes_on_append(bus: Bus) {
    bus.ensure_group(GROUP).await.unwrap();
    let reader = {
        let bus = bus.clone();
        tokio::spawn(async move {
            bus.read_new(GROUP, "a", 10, Duration::from_secs(10))
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    bus.append_signal("late", "s-late").await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .expect("the blocked read must wake")
        .unwrap();
    assert_eq!(
        got.iter().map(|e| e.payload.as_str()).collect::<Vec<_>>(),
        vec!["s-late"]
    );
}

async fn many_signals_in_order(bus: Bus) {
    bus.ensure_group(GROUP).await.unwrap();
    for i in 0..500 {
        bus.append_signal(&format!("m{i}"), &format!("{i}"))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    while seen.len() < 500 {
        let batch = bus
            .read_new(GROUP, "c", 64, Duration::from_millis(200))
            .await
            .unwrap();
        assert!(!batch.is_empty(), "stalled after {}", seen.len());
        for e in batch {
            seen.push(e.payload.parse::<usize>().unwrap());
            bus.ack(GROUP, &e.entry_id).await.unwrap();
        }
    }
    assert_eq!(seen, (0..500).collect::<Vec<_>>());
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 500);
    assert_eq!(bus.pending_count(GROUP).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_trims_only_acknowledged_signals() {
    let server = RedisServer::start();
    let bus = Bus::redis(&server.url(), "trading").await.unwrap();
    bus.ensure_group(GROUP).await.unwrap();
    assert_eq!(
        bus.trim_log(GROUP).await.unwrap(),
        0,
        "nothing delivered yet"
    );
    for i in 0..5 {
        bus.append_signal(&format!("t{i}"), &format!("s{i}"))
            .await
            .unwrap();
    }
    let got = bus
        .read_new(GROUP, "a", 10, Duration::from_millis(100))
        .await
        .unwrap();
    for e in &got[..3] {
        bus.ack(GROUP, &e.entry_id).await.unwrap();
    }
    assert_eq!(
        bus.trim_log(GROUP).await.unwrap(),
        3,
        "the three acknowledged ones go"
    );
    assert_eq!(bus.log_len().await.unwrap(), 2);
    let pending: Vec<_> = bus
        .read_pending(GROUP, "a", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.payload)
        .collect();
    assert_eq!(
        pending,
        vec!["s3", "s4"],
        "the unacknowledged ones stay, still pending"
    );
    for e in &got[3..] {
        bus.ack(GROUP, &e.entry_id).await.unwrap();
    }
    assert_eq!(
        bus.trim_log(GROUP).await.unwrap(),
        1,
        "all acknowledged: everything before the last delivered goes"
    );
    assert!(
        !bus.append_signal("t1", "s1 again").await.unwrap(),
        "trimming does not forget which ids were seen"
    );
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(tradehost::bus::Bus::embedded("trading")).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let server = super::RedisServer::start();
                    super::$name(tradehost::bus::Bus::redis(&server.url(), "trading").await.unwrap()).await;
                }
            )*
        }
    };
}

conformance!(
    publish_subscribe,
    signals_are_logged_once_and_published,
    group_delivers_each_entry_once_and_keeps_unacked,
    stale_entries_are_taken_over,
    blocking_read_wakes_on_append,
    many_signals_in_order,
);
