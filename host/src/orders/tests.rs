//! The order manager against a real SQLite journal in a temp folder.

use std::path::Path;
use std::sync::Arc;

use rust_decimal_macros::dec;

use super::*;
use crate::bus::message::{Quote, SCHEMA_VERSION};

const CONFIG: &str = r#"
[[accounts]]
id = "a1"
capital = 100000
mode = "both"
sizing = { kind = "fixed", qty = 2 }
slippage_bps = 0
risk = { cooldown_secs = 0 }

[[accounts]]
id = "a2"
capital = 100000
mode = "long"
sizing = { kind = "fixed", qty = 1 }
risk = { cooldown_secs = 0 }

[[pipelines]]
id = "p"
plugin = "ma_crossover.wasm"
symbols = ["NIFTY"]
accounts = ["a1", "a2"]
source = { kind = "redis" }
"#;

fn manager(dir: &Path) -> OrderManager {
    let config = Arc::new(Config::parse(Path::new("pipelines.toml"), CONFIG).unwrap());
    OrderManager::open(
        &dir.join("journal.sqlite"),
        config,
        crate::domain::TradingMode::Paper,
    )
    .unwrap()
}

/// 2024-01-01 10:00 IST: inside the entry window. Test times are offsets from it.
const BASE: i64 = 1_704_083_400_000;

fn signal(ts: i64, side: &str) -> SignalMessage {
    let ts = BASE + ts;
    SignalMessage {
        v: SCHEMA_VERSION,
        kind: "signal".into(),
        id: SignalMessage::make_id("p", "ma", "0.1.0", ts, 0),
        ts,
        pipeline: "p".into(),
        plugin: "ma".into(),
        plugin_version: "0.1.0".into(),
        instrument: "NIFTY".into(),
        side: side.into(),
        reason: "test".into(),
        price: Some(dec!(100)),
        stop_loss: None,
        target: None,
        strength: None,
        plugin_sha256: None,
        order: None,
    }
}

fn quotes(ts: i64, open: rust_decimal::Decimal) -> QuotesMessage {
    let ts = BASE + ts;
    QuotesMessage {
        v: SCHEMA_VERSION,
        kind: "quotes".into(),
        id: format!("p/{ts}"),
        ts,
        quotes: vec![Quote {
            instrument: "NIFTY".into(),
            open,
            high: open,
            low: open,
            close: open,
            bid: None,
            ask: None,
        }],
        after_signal: None,
        last: false,
    }
}

fn states(out: &[Outcome]) -> Vec<String> {
    out.iter()
        .filter_map(|o| match o {
            Outcome::Order(json) => {
                let v: Value = serde_json::from_str(json).ok()?;
                Some(format!(
                    "{} {} {}",
                    v["account"].as_str()?,
                    v["state"].as_str()?,
                    v["side"].as_str()?
                ))
            }
            Outcome::Event(..) => None,
        })
        .collect()
}

#[test]
fn a_signal_becomes_one_order_per_account_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut om = manager(dir.path());
    let out = om.on_signal(&signal(1000, "buy")).unwrap();
    assert_eq!(
        states(&out),
        vec![
            "a1 submitted buy",
            "a1 accepted buy",
            "a2 submitted buy",
            "a2 accepted buy"
        ]
    );
    assert!(
        om.on_signal(&signal(1000, "buy")).unwrap().is_empty(),
        "a redelivered signal changes nothing"
    );
    // A quote at the signal's own time must not fill (no look-ahead); the next one does.
    assert!(states(&om.on_quotes(&quotes(1000, dec!(99))).unwrap()).is_empty());
    assert_eq!(
        states(&om.on_quotes(&quotes(2000, dec!(101))).unwrap()),
        vec!["a1 filled buy", "a2 filled buy"]
    );
    let summary = om.accounts_summary().unwrap();
    assert_eq!(summary["a1"]["positions"]["NIFTY"], "2");
    assert_eq!(summary["a2"]["positions"]["NIFTY"], "1");
}

#[test]
fn modes_reverse_or_close_and_pnl_adds_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut om = manager(dir.path());
    om.on_signal(&signal(1000, "buy")).unwrap();
    om.on_quotes(&quotes(2000, dec!(100))).unwrap();
    om.on_signal(&signal(3000, "sell")).unwrap();
    let out = om.on_quotes(&quotes(4000, dec!(110))).unwrap();
    assert_eq!(states(&out), vec!["a1 filled sell", "a2 filled sell"]);
    let summary = om.accounts_summary().unwrap();
    // a1 (both): +2 at 100, sells 4 at 110 -> realised 20, short 2.
    assert_eq!(
        (
            summary["a1"]["realized"].as_str(),
            summary["a1"]["positions"]["NIFTY"].as_str()
        ),
        (Some("20"), Some("-2"))
    );
    // a2 (long): +1 at 100, sold at 110 -> realised 10, flat.
    assert_eq!(summary["a2"]["realized"], "10");
    assert!(
        summary["a2"]["positions"]
            .as_object()
            .is_some_and(serde_json::Map::is_empty)
    );
    om.on_quotes(&quotes(5000, dec!(105))).unwrap();
    assert_eq!(
        om.accounts_summary().unwrap()["a1"]["unrealized"],
        "10",
        "short 2 from 110 marked at 105"
    );
}

#[test]
fn a_signal_handled_after_the_next_price_still_fills_at_that_price() {
    let dir = tempfile::tempdir().unwrap();
    let mut om = manager(dir.path());
    om.on_quotes(&quotes(1000, dec!(99))).unwrap();
    om.on_quotes(&quotes(2000, dec!(101))).unwrap();
    om.on_quotes(&quotes(3000, dec!(105))).unwrap();
    let out = om.on_signal(&signal(1000, "buy")).unwrap();
    assert_eq!(
        states(&out),
        vec![
            "a1 submitted buy",
            "a1 accepted buy",
            "a1 filled buy",
            "a2 submitted buy",
            "a2 accepted buy",
            "a2 filled buy"
        ]
    );
    let filled: String = om
        .db
        .query_row(
            "SELECT fill_price FROM orders WHERE account = 'a1'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        filled, "101",
        "the first price after the signal, not the latest"
    );
}

#[test]
fn kill_switch_refuses_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let om = manager(dir.path());
        om.set_kill_switch(true).unwrap();
    }
    let mut om = manager(dir.path());
    assert!(om.kill_switch().unwrap());
    let out = om.on_signal(&signal(1000, "buy")).unwrap();
    assert!(states(&out).is_empty());
    assert!(out.iter().any(|o| matches!(o, Outcome::Event(crate::bus::events::Event::OrderRefused { rule, .. }) if rule == "kill_switch")));
    om.set_kill_switch(false).unwrap();
    assert!(
        om.on_signal(&signal(1000, "buy")).unwrap().is_empty(),
        "the refusal was the decision for this signal"
    );
    assert_eq!(
        states(&om.on_signal(&signal(1500, "buy")).unwrap()).len(),
        4
    );
}

#[test]
fn recorded_but_unsent_orders_are_sent_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut om = manager(dir.path());
        om.on_signal(&signal(1000, "buy")).unwrap();
        // Simulate a crash between the decision and the broker: back to 'new'.
        om.db
            .execute("UPDATE orders SET state = 'new'", [])
            .unwrap();
        om.db
            .execute("DELETE FROM paper_book WHERE account = 'a2'", [])
            .unwrap();
    }
    let mut om = manager(dir.path());
    let out = om.submit_new().unwrap();
    assert_eq!(
        states(&out),
        vec![
            "a1 submitted buy",
            "a1 accepted buy",
            "a2 submitted buy",
            "a2 accepted buy"
        ]
    );
    let book: i64 = om
        .db
        .query_row("SELECT COUNT(*) FROM paper_book", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        book, 2,
        "the paper book is keyed by client order id: no duplicate"
    );
}

#[test]
fn flatten_closes_every_position() {
    let dir = tempfile::tempdir().unwrap();
    let mut om = manager(dir.path());
    om.on_signal(&signal(1000, "buy")).unwrap();
    om.on_quotes(&quotes(2000, dec!(100))).unwrap();
    let out = om.flatten("a1", "cmd-1").unwrap();
    assert_eq!(states(&out), vec!["a1 submitted sell", "a1 accepted sell"]);
    om.on_quotes(&quotes(3000, dec!(104))).unwrap();
    let s = om.accounts_summary().unwrap();
    assert_eq!(
        (
            s["a1"]["realized"].as_str(),
            s["a2"]["positions"]["NIFTY"].as_str()
        ),
        (Some("8"), Some("1"))
    );
}

#[test]
fn every_transition_is_journaled_and_impossible_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut om = manager(dir.path());
    om.on_signal(&signal(1000, "buy")).unwrap();
    om.on_quotes(&quotes(2000, dec!(101))).unwrap();
    let coid: String = om
        .db
        .query_row(
            "SELECT client_order_id FROM orders WHERE account = 'a1'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let path: Vec<(String, String, String)> = om
        .db
        .prepare("SELECT from_state, event, to_state FROM transitions WHERE client_order_id = ?1 ORDER BY seq")
        .unwrap()
        .query_map([&coid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    let want = [
        ("new", "Submit", "submitted"),
        ("submitted", "Accept", "accepted"),
        ("accepted", "Fill", "filled"),
    ];
    assert_eq!(
        path,
        want.map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()))
            .to_vec()
    );
    // A second fill for the same order (a broker's duplicate report): refused, nothing changes.
    let tx = om.db.transaction().unwrap();
    let refused = record_fill(
        &tx,
        &coid,
        "a1",
        "NIFTY",
        OrderSide::Buy,
        dec!(2),
        dec!(150),
        BASE + 3000,
        state::OrderEvent::Fill,
    )
    .unwrap();
    assert_eq!(
        refused.unwrap_err().to_string(),
        "Fill is not possible for an order that is filled"
    );
    tx.commit().unwrap();
    assert_eq!(
        om.accounts_summary().unwrap()["a1"]["positions"]["NIFTY"],
        "2",
        "the position did not change"
    );
}

fn events(out: &[Outcome]) -> Vec<(&'static str, Value)> {
    out.iter()
        .filter_map(|o| {
            if let Outcome::Event(e) = o {
                Some((e.name(), e.fields()))
            } else {
                None
            }
        })
        .collect()
}

#[test]
fn a_stop_loss_from_the_signal_fires_once_and_closes_the_position() {
    let dir = tempfile::tempdir().unwrap();
    let mut om = manager(dir.path());
    let mut s = signal(1000, "buy");
    s.stop_loss = Some(dec!(95));
    om.on_signal(&s).unwrap();
    om.on_quotes(&quotes(60_000, dec!(100))).unwrap(); // filled at 100
    assert!(events(&om.on_quotes(&quotes(120_000, dec!(97))).unwrap()).is_empty());
    let out = om.on_quotes(&quotes(180_000, dec!(94))).unwrap();
    let fired = events(&out);
    assert_eq!(
        fired.iter().filter(|(n, _)| *n == "exit_triggered").count(),
        2,
        "one per account"
    );
    assert!(
        fired
            .iter()
            .all(|(_, v)| v["reason"] == "stop-loss" && v["stop"] == "95"),
        "{fired:?}"
    );
    assert!(
        events(&om.on_quotes(&quotes(240_000, dec!(90))).unwrap()).is_empty(),
        "fires once"
    );
    // The exit order filled at the next price: flat, and the loss realised.
    let summary = om.accounts_summary().unwrap();
    assert_eq!(
        (
            summary["a1"]["realized"].as_str(),
            summary["a2"]["realized"].as_str()
        ),
        (Some("-20"), Some("-10"))
    );
    assert!(
        summary["a1"]["positions"]
            .as_object()
            .is_some_and(serde_json::Map::is_empty)
    );
}

#[test]
fn a_sources_end_marks_its_pipeline_finished_and_moves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut om = manager(dir.path());
    om.on_signal(&signal(0, "buy")).unwrap();
    om.on_quotes(&quotes(60_000, dec!(100))).unwrap();
    let before = om.accounts_summary().unwrap();
    // An end stamped well past the square-off (a source that ended with no event is stamped now).
    let end = QuotesMessage {
        quotes: Vec::new(),
        last: true,
        ..quotes(400 * 60_000, dec!(1))
    };
    assert!(
        om.on_quotes_at(&end, Some("7-0")).unwrap().is_empty(),
        "no square-off, no fill, no event"
    );
    assert!(om.is_finished("p"));
    assert_eq!(
        om.pipeline_clock("p"),
        Some(BASE + 60_000),
        "the pipeline's clock stays at its last price"
    );
    assert_eq!(om.accounts_summary().unwrap(), before);
    assert_eq!(
        om.price_cursors().unwrap().0.get("p").map(String::as_str),
        Some("7-0"),
        "its place in the stream is recorded"
    );
    // The pipeline's prices again (a replay started over): no longer finished.
    om.on_quotes(&quotes(120_000, dec!(101))).unwrap();
    assert!(!om.is_finished("p"));
}

#[test]
fn intraday_positions_are_squared_off_at_15_15() {
    let dir = tempfile::tempdir().unwrap();
    let mut om = manager(dir.path());
    om.on_signal(&signal(0, "buy")).unwrap();
    om.on_quotes(&quotes(60_000, dec!(100))).unwrap();
    // 10:00 + 5h14m = 15:14: nothing; 15:15: square-off.
    assert!(events(&om.on_quotes(&quotes(314 * 60_000, dec!(101))).unwrap()).is_empty());
    let out = om.on_quotes(&quotes(315 * 60_000, dec!(102))).unwrap();
    assert_eq!(
        events(&out)
            .iter()
            .filter(|(n, _)| *n == "square_off")
            .count(),
        2
    );
    om.on_quotes(&quotes(316 * 60_000, dec!(103))).unwrap();
    let summary = om.accounts_summary().unwrap();
    assert_eq!(
        summary["a1"]["realized"], "6",
        "bought at 100, squared off at the 15:16 open of 103"
    );
    // After the window no new entries.
    let out = om.on_signal(&signal(317 * 60_000, "buy")).unwrap();
    assert!(
        events(&out)
            .iter()
            .all(|(n, v)| *n == "order_refused" && v["rule"] == "entry_window"),
        "{:?}",
        events(&out)
    );
}

#[test]
fn a_stale_price_from_a_slower_pipeline_never_moves_an_exit() {
    let dir = tempfile::tempdir().unwrap();
    let mut om = manager(dir.path());
    let mut s = signal(10 * 60_000, "buy");
    s.stop_loss = Some(dec!(95));
    om.on_signal(&s).unwrap();
    om.on_quotes(&quotes(11 * 60_000, dec!(100))).unwrap();
    // A lagging pipeline's price from before the position existed, far below the stop.
    assert!(events(&om.on_quotes(&quotes(60_000, dec!(80))).unwrap()).is_empty());
    assert_eq!(
        om.accounts_summary().unwrap()["a1"]["positions"]["NIFTY"],
        "2"
    );
    assert_eq!(
        events(&om.on_quotes(&quotes(12 * 60_000, dec!(94))).unwrap()).len(),
        2,
        "a current one does"
    );
}

fn quotes_for(ts: i64, prices: &[(&str, rust_decimal::Decimal)]) -> QuotesMessage {
    let ts = BASE + ts;
    let quotes = prices
        .iter()
        .map(|(i, p)| Quote {
            instrument: (*i).into(),
            open: *p,
            high: *p,
            low: *p,
            close: *p,
            bid: None,
            ask: None,
        })
        .collect();
    QuotesMessage {
        v: SCHEMA_VERSION,
        kind: "quotes".into(),
        id: format!("q/{ts}"),
        ts,
        quotes,
        after_signal: None,
        last: false,
    }
}

const CONDOR: [(&str, rust_decimal::Decimal); 4] = [
    ("N100PE", dec!(5)),
    ("N120CE", dec!(6)),
    ("N105PE", dec!(20)),
    ("N115CE", dec!(22)),
];

fn condor(id: &str, sell_qty: rust_decimal::Decimal) -> Basket {
    let leg = |instrument: &str, side, qty| BasketLeg::market(instrument, side, qty);
    Basket {
        id: id.into(),
        account: "a1".into(),
        // Given sells first on purpose: buys must still go first.
        legs: vec![
            leg("N105PE", OrderSide::Sell, sell_qty),
            leg("N115CE", OrderSide::Sell, sell_qty),
            leg("N100PE", OrderSide::Buy, dec!(50)),
            leg("N120CE", OrderSide::Buy, dec!(50)),
        ],
        unwind_on_failure: true,
    }
}

fn instruments_ordered(om: &OrderManager) -> Vec<(String, String, String)> {
    om.db
        .prepare("SELECT instrument, side, state FROM orders ORDER BY rowid")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

#[test]
fn an_iron_condor_buys_its_wings_first_then_sells() {
    let dir = tempfile::tempdir().unwrap();
    let mut om = manager(dir.path());
    om.on_quotes(&quotes_for(0, &CONDOR)).unwrap();
    let out = om.place_basket(&condor("ic-1", dec!(50))).unwrap();
    assert!(events(&out).iter().any(|(n, _)| *n == "basket_placed"));
    let sent: Vec<_> = instruments_ordered(&om)
        .into_iter()
        .map(|(i, s, _)| (i, s))
        .collect();
    assert_eq!(
        sent,
        vec![
            ("N100PE".into(), "buy".into()),
            ("N120CE".into(), "buy".into())
        ],
        "only the buy legs are out"
    );
    om.on_quotes(&quotes_for(60_000, &CONDOR)).unwrap(); // buys fill; sells go out
    assert_eq!(instruments_ordered(&om).len(), 4);
    let out = om.on_quotes(&quotes_for(120_000, &CONDOR)).unwrap(); // sells fill
    assert!(
        events(&out)
            .iter()
            .any(|(n, v)| *n == "basket_complete" && v["basket"] == "ic-1"),
        "{:?}",
        events(&out)
    );
    assert!(
        instruments_ordered(&om)
            .iter()
            .all(|(_, _, st)| st == "filled")
    );
    assert!(
        om.place_basket(&condor("ic-1", dec!(50)))
            .unwrap()
            .iter()
            .all(|o| !matches!(o, Outcome::Order(_))),
        "placing it again changes nothing"
    );
}

#[test]
fn a_failed_leg_stops_the_basket_alerts_and_unwinds() {
    let dir = tempfile::tempdir().unwrap();
    let mut om = manager(dir.path());
    om.on_quotes(&quotes_for(0, &CONDOR)).unwrap();
    om.place_basket(&condor("ic-2", dec!(20000))).unwrap(); // sells above max_order_qty (10,000)
    let out = om.on_quotes(&quotes_for(60_000, &CONDOR)).unwrap();
    let failed: Vec<_> = events(&out)
        .into_iter()
        .filter(|(n, _)| *n == "basket_failed")
        .collect();
    assert_eq!(failed.len(), 1, "{:?}", events(&out));
    assert!(
        failed[0].1["reason"]
            .as_str()
            .unwrap()
            .contains("max_order_qty"),
        "{}",
        failed[0].1
    );
    assert_eq!(
        failed[0].1["unwinding"],
        serde_json::json!(["N100PE", "N120CE"])
    );
    om.on_quotes(&quotes_for(120_000, &CONDOR)).unwrap(); // the unwinding orders fill
    let orders = instruments_ordered(&om);
    assert!(
        !orders
            .iter()
            .any(|(i, s, _)| s == "sell" && (i == "N105PE" || i == "N115CE")),
        "no sell leg was sent: {orders:?}"
    );
    let positions = om.accounts_summary().unwrap();
    assert!(
        positions["a1"]["positions"]
            .as_object()
            .is_some_and(serde_json::Map::is_empty),
        "unwound: {positions}"
    );
}

#[test]
fn a_manual_limit_ticket_works_at_its_price_and_a_stop_waits_for_its_trigger_across_a_restart() {
    use crate::domain::order::{OrderKind, Validity};
    let dir = tempfile::tempdir().unwrap();
    let mut om = manager(dir.path());
    om.on_quotes(&quotes_for(0, &[("NIFTY", dec!(100))]))
        .unwrap();
    let ticket = |id: &str, side, kind| Basket {
        id: id.into(),
        account: "a1".into(),
        legs: vec![BasketLeg {
            kind,
            validity: Validity::Day,
            ..BasketLeg::market("NIFTY", side, dec!(2))
        }],
        unwind_on_failure: false,
    };
    om.place_basket(&ticket(
        "order-limit",
        OrderSide::Buy,
        OrderKind::Limit { price: dec!(98) },
    ))
    .unwrap();
    let terms: (String, String, Option<String>) = om
        .db
        .query_row(
            "SELECT order_type, limit_price, trigger_price FROM orders WHERE pipeline = 'basket'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        terms,
        ("LIMIT".into(), "98".into(), None),
        "the ticket's terms reach the order"
    );
    om.on_quotes(&quotes_for(60_000, &[("NIFTY", dec!(99))]))
        .unwrap();
    assert_eq!(
        instruments_ordered(&om)[0].2,
        "accepted",
        "a buy limit at 98 does not fill at 99"
    );
    drop(om);
    let mut om = manager(dir.path());
    om.on_quotes(&quotes_for(120_000, &[("NIFTY", dec!(97.5))]))
        .unwrap();
    let fill: String = om
        .db
        .query_row(
            "SELECT fill_price FROM orders WHERE pipeline = 'basket'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        fill, "97.5",
        "filled, after a restart, at the better price the market opened at below its limit"
    );
    // A sell stop below the market: nothing until the trigger trades.
    om.place_basket(&ticket(
        "order-stop",
        OrderSide::Sell,
        OrderKind::StopMarket { trigger: dec!(95) },
    ))
    .unwrap();
    om.on_quotes(&quotes_for(180_000, &[("NIFTY", dec!(96))]))
        .unwrap();
    assert_eq!(instruments_ordered(&om)[1].2, "accepted");
    om.on_quotes(&quotes_for(240_000, &[("NIFTY", dec!(94))]))
        .unwrap();
    assert_eq!(instruments_ordered(&om)[1].2, "filled");
    assert!(
        om.accounts_summary().unwrap()["a1"]["positions"]
            .as_object()
            .is_some_and(serde_json::Map::is_empty)
    );
    // A ticket with its own bracket: the position it opens gets that stop and target.
    let bracket = Basket {
        id: "order-bracket".into(),
        account: "a1".into(),
        legs: vec![BasketLeg {
            stop_loss: Some(dec!(90)),
            target: Some(dec!(104)),
            ..BasketLeg::market("NIFTY", OrderSide::Buy, dec!(2))
        }],
        unwind_on_failure: false,
    };
    om.place_basket(&bracket).unwrap();
    om.on_quotes(&quotes_for(250_000, &[("NIFTY", dec!(95))]))
        .unwrap();
    let exit: (Option<String>, Option<String>) = om
        .db
        .query_row(
            "SELECT stop, target FROM exits WHERE account = 'a1' AND instrument = 'NIFTY'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        exit,
        (Some("90".into()), Some("104".into())),
        "the ticket's bracket is the managed exit"
    );
    om.on_quotes(&quotes_for(260_000, &[("NIFTY", dec!(104.5))]))
        .unwrap();
    om.on_quotes(&quotes_for(270_000, &[("NIFTY", dec!(104.5))]))
        .unwrap();
    assert!(
        om.accounts_summary().unwrap()["a1"]["positions"]
            .as_object()
            .is_some_and(serde_json::Map::is_empty),
        "the target took it out"
    );
    // A ticket the trader cancels is over, as asked: not a failed basket, not an alert.
    om.place_basket(&ticket(
        "order-cancel",
        OrderSide::Buy,
        OrderKind::Limit { price: dec!(50) },
    ))
    .unwrap();
    let coid: String = om
        .db
        .query_row(
            "SELECT client_order_id FROM orders WHERE signal_id = 'basket/order-cancel/0'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(om.cancel_order(&coid, "console-abc").unwrap().is_ok());
    let out = events(
        &om.on_quotes(&quotes_for(300_000, &[("NIFTY", dec!(104))]))
            .unwrap(),
    );
    let over: Vec<_> = out
        .iter()
        .filter(|(n, _)| n.starts_with("basket_"))
        .collect();
    assert_eq!(over.len(), 1, "{out:?}");
    assert_eq!(
        (
            over[0].0,
            over[0].1["reason"].as_str(),
            over[0].1.get("alert")
        ),
        (
            "basket_cancelled",
            Some("leg 0 (buy 2 NIFTY) cancelled by command console-abc"),
            None
        ),
        "{out:?}"
    );
    let state: String = om
        .db
        .query_row(
            "SELECT state FROM baskets WHERE basket_id = 'order-cancel'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(state, "cancelled");
}

fn live_manager(dir: &Path) -> OrderManager {
    let text = CONFIG.replacen("id = \"a1\"\n", "id = \"a1\"\nbroker = \"kite\"\n", 1);
    let config = Arc::new(Config::parse(Path::new("pipelines.toml"), &text).unwrap());
    OrderManager::open(
        &dir.join("journal.sqlite"),
        config,
        crate::domain::TradingMode::Live,
    )
    .unwrap()
}

fn state_of(om: &OrderManager, coid: &str) -> (String, Option<String>) {
    om.db
        .query_row(
            "SELECT state, broker_order_id FROM orders WHERE client_order_id = ?1",
            [coid],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
}

#[test]
fn live_orders_are_journaled_as_submitted_before_the_broker_and_recovered_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut om = live_manager(dir.path());
    om.set_live_accounts(std::collections::HashSet::from(["a1".to_owned()]));
    om.on_quotes(&quotes(0, dec!(100))).unwrap();
    let out = om.on_signal(&signal(60_000, "buy")).unwrap();
    assert_eq!(
        states(&out),
        vec!["a1 submitted buy", "a2 submitted buy", "a2 accepted buy"],
        "a1 goes to its broker, a2 to paper"
    );
    let handed = om.take_live_orders();
    assert_eq!(handed.len(), 1);
    let coid = handed[0].client_order_id.clone();
    assert!(
        handed[0].fresh
            && handed[0].account == "a1"
            && handed[0].qty == dec!(2)
            && handed[0].reference_price == Some(dec!(100))
    );
    assert!(om.take_live_orders().is_empty(), "handed over once");
    // A paper price does not fill a live order.
    om.on_quotes(&quotes(120_000, dec!(101))).unwrap();
    assert_eq!(state_of(&om, &coid).0, "submitted");
    drop(om);

    // The process dies before the broker answered: the restart hands it over again, to be looked for first.
    let mut om = live_manager(dir.path());
    om.set_live_accounts(std::collections::HashSet::from(["a1".to_owned()]));
    let recovered = om.recover_live_orders().unwrap();
    assert_eq!(recovered.len(), 1);
    assert!(
        !recovered[0].fresh
            && recovered[0].broker_order_id.is_none()
            && recovered[0].client_order_id == coid
    );
    // No price seen since the restart, yet it keeps the price it was decided at: its protection limit.
    assert_eq!(recovered[0].reference_price, Some(dec!(100)));
    om.on_live_update(&LiveUpdate::Accepted {
        client_order_id: coid.clone(),
        broker_order_id: "250408000000001".into(),
    })
    .unwrap();
    assert_eq!(
        state_of(&om, &coid),
        ("accepted".into(), Some("250408000000001".into()))
    );
    // Accepted orders come back with their broker id (to be polled, never placed).
    assert_eq!(
        om.recover_live_orders().unwrap()[0]
            .broker_order_id
            .as_deref(),
        Some("250408000000001")
    );
    let out = om
        .on_live_update(&LiveUpdate::Filled {
            client_order_id: coid.clone(),
            qty: dec!(2),
            price: dec!(100.5),
        })
        .unwrap();
    assert_eq!(states(&out), vec!["a1 filled buy"]);
    assert_eq!(
        om.accounts_summary().unwrap()["a1"]["positions"]["NIFTY"],
        "2"
    );
    assert!(om.recover_live_orders().unwrap().is_empty());
    // A late report the state machine refuses changes nothing and is reported.
    let out = om
        .on_live_update(&LiveUpdate::Rejected {
            client_order_id: coid.clone(),
            reason: "late".into(),
        })
        .unwrap();
    assert!(
        events(&out)
            .iter()
            .any(|(n, _)| *n == "order_transition_refused")
    );
    assert_eq!(state_of(&om, &coid).0, "filled");

    // A sell cancelled after a partial fill: the filled part stands.
    om.on_signal(&signal(180_000, "sell")).unwrap();
    let sell = om.take_live_orders().pop().unwrap();
    om.on_live_update(&LiveUpdate::Accepted {
        client_order_id: sell.client_order_id.clone(),
        broker_order_id: "250408000000002".into(),
    })
    .unwrap();
    let out = om
        .on_live_update(&LiveUpdate::Cancelled {
            client_order_id: sell.client_order_id.clone(),
            filled_qty: dec!(1),
            price: Some(dec!(102)),
            reason: "IOC remainder".into(),
        })
        .unwrap();
    assert_eq!(
        states(&out),
        vec!["a1 partially_filled sell", "a1 cancelled sell"]
    );
    assert_eq!(
        om.accounts_summary().unwrap()["a1"]["positions"]["NIFTY"],
        "1"
    );
}

#[test]
fn a_live_account_without_a_connected_broker_is_refused_not_papered() {
    let dir = tempfile::tempdir().unwrap();
    let mut om = live_manager(dir.path()); // live mode, a1 on kite, but no router connected it
    om.on_quotes(&quotes(0, dec!(100))).unwrap();
    let out = om.on_signal(&signal(60_000, "buy")).unwrap();
    let refused: Vec<_> = events(&out)
        .into_iter()
        .filter(|(n, v)| *n == "order_refused" && v["account"] == "a1")
        .collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].1["rule"], "broker");
    assert_eq!(states(&out), vec!["a2 submitted buy", "a2 accepted buy"]);
}

fn fills_of(om: &OrderManager, coid: &str) -> Vec<(i64, String, String)> {
    let mut stmt = om
        .db
        .prepare("SELECT seq, qty, price FROM fills WHERE client_order_id = ?1 ORDER BY seq")
        .unwrap();
    stmt.query_map([coid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<rusqlite::Result<Vec<_>>>()
        .unwrap()
}

/// a1 live, one buy of 2 sent and accepted; its client order id.
fn live_buy(om: &mut OrderManager, at: i64) -> String {
    om.set_live_accounts(std::collections::HashSet::from(["a1".to_owned()]));
    om.on_quotes(&quotes(at - 60_000, dec!(100))).unwrap();
    om.on_signal(&signal(at, "buy")).unwrap();
    let coid = om.take_live_orders().pop().unwrap().client_order_id;
    om.on_live_update(&LiveUpdate::Accepted {
        client_order_id: coid.clone(),
        broker_order_id: format!("b{at}"),
    })
    .unwrap();
    coid
}

#[test]
fn partial_fills_are_journaled_as_they_come_and_a_repeated_report_adds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut om = live_manager(dir.path());
    let coid = live_buy(&mut om, 60_000);
    let out = om
        .on_live_update(&LiveUpdate::PartFilled {
            client_order_id: coid.clone(),
            filled_qty: dec!(1),
            price: dec!(100),
        })
        .unwrap();
    assert_eq!(states(&out), vec!["a1 partially_filled buy"]);
    assert_eq!(
        om.accounts_summary().unwrap()["a1"]["positions"]["NIFTY"],
        "1",
        "the position follows the filled part"
    );
    assert!(
        states(
            &om.on_live_update(&LiveUpdate::PartFilled {
                client_order_id: coid.clone(),
                filled_qty: dec!(1),
                price: dec!(100)
            })
            .unwrap()
        )
        .is_empty()
    );
    // After a restart the order comes back with what is already filled and its decided price.
    let recovered = om.recover_live_orders().unwrap();
    assert_eq!(
        (
            recovered[0].filled_qty,
            recovered[0].reference_price,
            recovered[0].entry
        ),
        (dec!(1), Some(dec!(100)), true)
    );
    // Complete at an average of 100.50: the second unit cost 101.
    let out = om
        .on_live_update(&LiveUpdate::Filled {
            client_order_id: coid.clone(),
            qty: dec!(2),
            price: dec!(100.5),
        })
        .unwrap();
    assert_eq!(states(&out), vec!["a1 filled buy"]);
    assert_eq!(
        fills_of(&om, &coid),
        vec![(1, "1".into(), "100".into()), (2, "1".into(), "101".into())]
    );
    assert_eq!(
        om.accounts_summary().unwrap()["a1"]["positions"]["NIFTY"],
        "2"
    );
    // A buy signal now finds the position full: nothing more is ordered.
    let out = om.on_signal(&signal(180_000, "buy")).unwrap();
    assert!(
        !states(&out).iter().any(|s| s.starts_with("a1")),
        "{:?}",
        states(&out)
    );
}

#[test]
fn a_partly_filled_order_counts_only_its_rest_as_working() {
    let dir = tempfile::tempdir().unwrap();
    let mut om = live_manager(dir.path());
    let coid = live_buy(&mut om, 60_000);
    om.on_live_update(&LiveUpdate::PartFilled {
        client_order_id: coid.clone(),
        filled_qty: dec!(1),
        price: dec!(100),
    })
    .unwrap();
    // Position 1 filled + 1 working = the intended 2: a sell signal reverses from 2, not from 3,
    // once the buy has settled.
    om.on_signal(&signal(120_000, "sell")).unwrap();
    assert!(
        om.take_live_orders().is_empty(),
        "the sell waits for the buy"
    );
    om.on_live_update(&LiveUpdate::Filled {
        client_order_id: coid,
        qty: dec!(2),
        price: dec!(100),
    })
    .unwrap();
    let sell = om.take_live_orders().pop().unwrap();
    assert_eq!(sell.qty, dec!(4), "from +2 (1 held, 1 working) to -2");
}

fn live_long_manager(dir: &Path) -> OrderManager {
    let text = CONFIG
        .replacen("id = \"a1\"\n", "id = \"a1\"\nbroker = \"kite\"\n", 1)
        .replacen("mode = \"both\"", "mode = \"long\"", 1);
    let config = Arc::new(Config::parse(Path::new("pipelines.toml"), &text).unwrap());
    OrderManager::open(
        &dir.join("journal.sqlite"),
        config,
        crate::domain::TradingMode::Live,
    )
    .unwrap()
}

fn position_of(om: &OrderManager, account: &str) -> Value {
    om.accounts_summary().unwrap()[account]["positions"]["NIFTY"].clone()
}

#[test]
fn an_exit_sized_against_a_buy_the_broker_then_rejects_sells_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut om = live_long_manager(dir.path());
    let buy = live_buy(&mut om, 60_000);
    // The exit is decided while the accepted buy is still a position to come.
    om.on_signal(&signal(120_000, "sell")).unwrap();
    assert!(
        om.take_live_orders().is_empty(),
        "the exit waits for the buy"
    );
    // The broker's RMS refuses the buy after accepting it.
    let out = om
        .on_live_update(&LiveUpdate::Rejected {
            client_order_id: buy,
            reason: "RMS:Margin Exceeds".into(),
        })
        .unwrap();
    assert!(
        om.take_live_orders().is_empty(),
        "no sell for a long that never opened"
    );
    assert_eq!(states(&out), vec!["a1 rejected buy", "a1 cancelled sell"]);
    let reason = out
        .iter()
        .find_map(|o| match o {
            Outcome::Order(json) => {
                let v: Value = serde_json::from_str(json).ok()?;
                (v["side"] == "sell").then(|| v["reason"].as_str().map(str::to_owned))?
            }
            Outcome::Event(..) => None,
        })
        .unwrap_or_default();
    assert!(
        reason.contains("ended rejected with 0 of 2 filled"),
        "{reason}"
    );
    assert_eq!(position_of(&om, "a1"), Value::Null, "flat, never short");
    // The next entry is the whole 2 again, and its exit goes out at once once it filled.
    om.on_signal(&signal(180_000, "buy")).unwrap();
    let again = om.take_live_orders().pop().unwrap();
    assert_eq!(again.qty, dec!(2));
    om.on_live_update(&LiveUpdate::Filled {
        client_order_id: again.client_order_id,
        qty: dec!(2),
        price: dec!(100),
    })
    .unwrap();
    om.on_signal(&signal(240_000, "sell")).unwrap();
    assert_eq!(om.take_live_orders().pop().map(|o| o.qty), Some(dec!(2)));
}

#[test]
fn held_exits_behind_a_rejected_entry_and_a_filled_one_end_flat() {
    let dir = tempfile::tempdir().unwrap();
    let mut om = live_long_manager(dir.path());
    let buy1 = live_buy(&mut om, 60_000);
    om.on_signal(&signal(120_000, "sell")).unwrap();
    assert!(om.take_live_orders().is_empty(), "sell 2 waits for buy 1");
    // A new entry while the exit waits, and its exit.
    om.on_signal(&signal(180_000, "buy")).unwrap();
    let buy3 = om.take_live_orders().pop().expect("buy 3 goes");
    om.on_live_update(&LiveUpdate::Accepted {
        client_order_id: buy3.client_order_id.clone(),
        broker_order_id: "b3".into(),
    })
    .unwrap();
    om.on_signal(&signal(240_000, "sell")).unwrap();
    assert!(om.take_live_orders().is_empty(), "sell 4 waits too");
    // Buy 1 is refused: sell 2 has nothing to close; sell 4 still waits for buy 3.
    let out = om
        .on_live_update(&LiveUpdate::Rejected {
            client_order_id: buy1,
            reason: "RMS:Margin Exceeds".into(),
        })
        .unwrap();
    assert_eq!(states(&out), vec!["a1 rejected buy", "a1 cancelled sell"]);
    assert!(om.take_live_orders().is_empty());
    // Buy 3 fills: sell 4 closes it.
    om.on_live_update(&LiveUpdate::Filled {
        client_order_id: buy3.client_order_id,
        qty: dec!(2),
        price: dec!(100),
    })
    .unwrap();
    let sell4 = om.take_live_orders().pop().expect("sell 4 goes");
    assert_eq!(sell4.qty, dec!(2));
    om.on_live_update(&LiveUpdate::Filled {
        client_order_id: sell4.client_order_id,
        qty: dec!(2),
        price: dec!(101),
    })
    .unwrap();
    assert_eq!(
        position_of(&om, "a1"),
        Value::Null,
        "flat, as the strategy is"
    );
}

#[test]
fn a_held_exit_goes_for_what_the_earlier_buy_filled_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut om = live_long_manager(dir.path());
    let buy = live_buy(&mut om, 60_000);
    om.on_signal(&signal(120_000, "sell")).unwrap();
    assert!(om.take_live_orders().is_empty());
    drop(om);
    // A restart in between: the exit is still held, and the buy's end releases it.
    let mut om = live_long_manager(dir.path());
    om.set_live_accounts(std::collections::HashSet::from(["a1".to_owned()]));
    om.submit_new().unwrap();
    assert!(
        om.take_live_orders().is_empty(),
        "still waiting after the restart"
    );
    om.on_live_update(&LiveUpdate::PartFilled {
        client_order_id: buy.clone(),
        filled_qty: dec!(1),
        price: dec!(100),
    })
    .unwrap();
    assert!(
        om.take_live_orders().is_empty(),
        "a part fill has not settled it"
    );
    om.on_live_update(&LiveUpdate::Cancelled {
        client_order_id: buy,
        filled_qty: dec!(1),
        price: Some(dec!(100)),
        reason: "IOC remainder".into(),
    })
    .unwrap();
    let sell = om.take_live_orders().pop().expect("the exit goes");
    assert_eq!(
        sell.qty,
        dec!(1),
        "the one unit that filled, not the two decided"
    );
}

#[test]
fn a_cancel_that_races_a_fill_keeps_every_fill() {
    let dir = tempfile::tempdir().unwrap();
    let mut om = live_manager(dir.path());
    let coid = live_buy(&mut om, 60_000);
    let out = om
        .on_live_update(&LiveUpdate::CancelRequested {
            client_order_id: coid.clone(),
            reason: "not filled 60 s after it was sent".into(),
        })
        .unwrap();
    assert_eq!(states(&out), vec!["a1 pending_cancel buy"]);
    assert!(
        om.recover_live_orders().unwrap()[0].cancel_requested,
        "a restart does not ask again"
    );
    om.on_live_update(&LiveUpdate::PartFilled {
        client_order_id: coid.clone(),
        filled_qty: dec!(1),
        price: dec!(100),
    })
    .unwrap();
    assert_eq!(state_of(&om, &coid).0, "pending_cancel");
    // The fill won the race.
    om.on_live_update(&LiveUpdate::Filled {
        client_order_id: coid.clone(),
        qty: dec!(2),
        price: dec!(100),
    })
    .unwrap();
    assert_eq!(state_of(&om, &coid).0, "filled");
    assert_eq!(
        om.accounts_summary().unwrap()["a1"]["positions"]["NIFTY"],
        "2"
    );
    // And one cancelled after its partial fill keeps the part.
    om.on_signal(&signal(180_000, "sell")).unwrap();
    let sell = om.take_live_orders().pop().unwrap().client_order_id;
    om.on_live_update(&LiveUpdate::Accepted {
        client_order_id: sell.clone(),
        broker_order_id: "b2".into(),
    })
    .unwrap();
    om.on_live_update(&LiveUpdate::CancelRequested {
        client_order_id: sell.clone(),
        reason: "stale".into(),
    })
    .unwrap();
    let out = om
        .on_live_update(&LiveUpdate::Cancelled {
            client_order_id: sell.clone(),
            filled_qty: dec!(1),
            price: Some(dec!(99)),
            reason: "cancelled by us".into(),
        })
        .unwrap();
    assert_eq!(
        states(&out),
        vec!["a1 pending_cancel sell", "a1 cancelled sell"]
    );
    assert_eq!(
        om.accounts_summary().unwrap()["a1"]["positions"]["NIFTY"],
        "1"
    );
}

#[test]
fn a_rejection_after_acceptance_unwinds_the_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut om = live_manager(dir.path());
    let coid = live_buy(&mut om, 60_000);
    let out = om
        .on_live_update(&LiveUpdate::Rejected {
            client_order_id: coid.clone(),
            reason: "RMS: margin exceeds".into(),
        })
        .unwrap();
    assert_eq!(states(&out), vec!["a1 rejected buy"]);
    assert!(
        events(&out)
            .iter()
            .any(|(n, v)| *n == "order_rejected" && v["alert"] == true)
    );
    assert!(
        om.accounts_summary().unwrap()["a1"]["positions"]
            .as_object()
            .is_some_and(serde_json::Map::is_empty)
    );
    // Nothing of it is counted any more: the next buy signal orders the full 2 again.
    om.on_signal(&signal(120_000, "buy")).unwrap();
    assert_eq!(om.take_live_orders().pop().map(|o| o.qty), Some(dec!(2)));
}

#[test]
fn the_clock_squares_off_when_the_last_price_of_the_day_is_15_14() {
    let dir = tempfile::tempdir().unwrap();
    let mut om = manager(dir.path());
    om.on_signal(&signal(0, "buy")).unwrap();
    om.on_quotes(&quotes(60_000, dec!(100))).unwrap();
    // The day's last price: 15:14 (BASE is 10:00).
    assert!(events(&om.on_quotes(&quotes(314 * 60_000, dec!(101))).unwrap()).is_empty());
    assert!(
        om.on_clock(BASE + 314 * 60_000 + 59_000)
            .unwrap()
            .is_empty(),
        "15:14:59: not yet"
    );
    let out = om.on_clock(BASE + 315 * 60_000 + 3_000).unwrap();
    let squared: Vec<_> = events(&out)
        .into_iter()
        .filter(|(n, _)| *n == "square_off")
        .collect();
    assert_eq!(squared.len(), 2, "one per account");
    assert!(
        squared.iter().all(|(_, v)| v["due"] == BASE + 315 * 60_000),
        "{squared:?}"
    );
    assert!(om.on_clock(BASE + 316 * 60_000).unwrap().is_empty(), "once");
    // A late 15:15 price makes the same orders, not new ones.
    assert!(
        events(&om.on_quotes(&quotes(315 * 60_000, dec!(102))).unwrap())
            .iter()
            .all(|(n, _)| *n != "square_off")
    );
    om.on_quotes(&quotes(316 * 60_000, dec!(103))).unwrap();
    assert_eq!(
        om.accounts_summary().unwrap()["a1"]["realized"],
        "6",
        "filled at the first price after 15:15, as a price at 15:15 would have"
    );
}

#[test]
fn a_position_left_open_overnight_is_flagged_and_squared_off_at_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut om = manager(dir.path());
    om.on_signal(&signal(0, "buy")).unwrap();
    om.on_quotes(&quotes(60_000, dec!(100))).unwrap();
    // Nothing after 11:00 that day, and no clock ran (the process was down).
    const NEXT_OPEN: i64 = 86_400_000 - 45 * 60_000; // 09:15 the next day
    let out = om.on_quotes(&quotes(NEXT_OPEN, dec!(97))).unwrap();
    let carried: Vec<_> = events(&out)
        .into_iter()
        .filter(|(n, _)| *n == "position_carried")
        .collect();
    assert_eq!(carried.len(), 2);
    assert!(carried.iter().all(|(_, v)| v["alert"] == true));
    // Closed at the session's first price, the 09:15 open.
    let summary = om.accounts_summary().unwrap();
    assert_eq!(summary["a1"]["realized"], "-6");
    assert!(
        summary["a1"]["positions"]
            .as_object()
            .is_some_and(serde_json::Map::is_empty)
    );
}

#[test]
fn a_journal_with_one_fill_per_order_is_carried_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.sqlite");
    {
        let db = Connection::open(&path).unwrap();
        db.execute_batch(
            "CREATE TABLE fills (client_order_id TEXT PRIMARY KEY, account TEXT NOT NULL, instrument TEXT NOT NULL, side TEXT NOT NULL, qty TEXT NOT NULL, price TEXT NOT NULL, ts INTEGER NOT NULL);
             INSERT INTO fills VALUES ('x1', 'a1', 'NIFTY', 'buy', '2', '100', 5), ('x0', 'a1', 'NIFTY', 'sell', '2', '101', 9);",
        )
        .unwrap();
    }
    let config = Arc::new(Config::parse(Path::new("pipelines.toml"), CONFIG).unwrap());
    let om = OrderManager::open(&path, config, crate::domain::TradingMode::Paper).unwrap();
    let rows: Vec<(String, i64, String)> = om
        .db
        .prepare("SELECT client_order_id, seq, price FROM fills ORDER BY rowid")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        rows,
        vec![
            ("x1".into(), 1, "100".into()),
            ("x0".into(), 1, "101".into())
        ]
    );
}

#[test]
fn the_daily_loss_breaker_trips_once_lets_exits_pass_and_resets_the_next_day() {
    let dir = tempfile::tempdir().unwrap();
    // a1 may lose 100 a day; cnc, so its position is carried overnight.
    let text = CONFIG.replacen(
        "risk = { cooldown_secs = 0 }\n",
        "risk = { cooldown_secs = 0, max_daily_loss = 100 }\nproduct = \"cnc\"\n",
        1,
    );
    let config = Arc::new(Config::parse(Path::new("pipelines.toml"), &text).unwrap());
    let mut om = OrderManager::open(
        &dir.path().join("journal.sqlite"),
        config,
        crate::domain::TradingMode::Paper,
    )
    .unwrap();
    let mut buy = signal(0, "buy");
    buy.stop_loss = Some(dec!(30));
    om.on_signal(&buy).unwrap();
    om.on_quotes(&quotes(60_000, dec!(100))).unwrap(); // a1 long 2 at 100, stop 30
    // Down 60 a unit: unrealised -120 on a1 trips the breaker at the next entry, once.
    om.on_quotes(&quotes(120_000, dec!(40))).unwrap();
    let refused = |out: &[Outcome]| {
        events(out)
            .into_iter()
            .filter(|(n, v)| *n == "order_refused" && v["account"] == "a1")
            .map(|(_, v)| v["rule"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
    };
    let trips = |out: &[Outcome]| {
        events(out)
            .iter()
            .filter(|(n, _)| *n == "risk_breaker")
            .count()
    };
    // A reversal to short is an entry: refused.
    let out = om.on_signal(&signal(180_000, "sell")).unwrap();
    assert_eq!(
        (refused(&out), trips(&out)),
        (vec!["max_daily_loss".to_owned()], 1)
    );
    let out = om.on_signal(&signal(240_000, "sell")).unwrap();
    assert_eq!(
        (refused(&out), trips(&out)),
        (vec!["max_daily_loss".to_owned()], 0),
        "trips once a day"
    );
    // The next day (the position carried, still 120 down): the breaker counts it and trips again, once.
    const DAY: i64 = 86_400_000;
    om.on_quotes(&quotes(DAY - 30 * 60_000, dec!(40))).unwrap(); // 09:30 the next day
    let out = om.on_signal(&signal(DAY - 29 * 60_000, "sell")).unwrap();
    assert_eq!(
        (refused(&out), trips(&out)),
        (vec!["max_daily_loss".to_owned()], 1),
        "a new day, a new trip: the carried loss counts"
    );
    // While it holds entries, the stop still fires and its close fills.
    let out = om.on_quotes(&quotes(DAY - 20 * 60_000, dec!(25))).unwrap();
    assert!(
        events(&out)
            .iter()
            .any(|(n, v)| *n == "exit_triggered" && v["account"] == "a1"),
        "{:?}",
        events(&out)
    );
    om.on_quotes(&quotes(DAY - 19 * 60_000, dec!(25))).unwrap();
    assert!(
        om.accounts_summary().unwrap()["a1"]["positions"]
            .as_object()
            .is_some_and(serde_json::Map::is_empty)
    );
    // The day after: nothing lost yet today, and a1 trades again.
    om.on_quotes(&quotes(2 * DAY - 30 * 60_000, dec!(25)))
        .unwrap();
    let out = om.on_signal(&signal(2 * DAY - 29 * 60_000, "buy")).unwrap();
    assert!(
        refused(&out).is_empty() && states(&out).iter().any(|s| s.starts_with("a1")),
        "{:?}",
        events(&out)
    );
}

#[test]
fn a_reload_that_brings_the_square_off_forward_closes_open_positions() {
    let dir = tempfile::tempdir().unwrap();
    let mut om = manager(dir.path());
    om.on_signal(&signal(0, "buy")).unwrap();
    om.on_quotes(&quotes(60_000, dec!(100))).unwrap();
    assert!(events(&om.on_quotes(&quotes(120_000, dec!(101))).unwrap()).is_empty());
    // 10:02: the trader moves a1's square-off to 10:30 and caps its position at 1.
    let text = CONFIG.replacen(
        "risk = { cooldown_secs = 0 }\n",
        "risk = { cooldown_secs = 0, max_position_qty = 1 }\nsquare_off = \"10:30\"\n",
        1,
    );
    om.set_config(Arc::new(
        Config::parse(Path::new("pipelines.toml"), &text).unwrap(),
    ));
    // Tighter risk: a2 may still add; a1 may not reverse to -2 (|position| 2 > 1).
    let out = om.on_signal(&signal(180_000, "sell")).unwrap();
    assert!(
        events(&out).iter().any(|(n, v)| *n == "order_refused"
            && v["account"] == "a1"
            && v["rule"] == "max_position_qty"),
        "{:?}",
        events(&out)
    );
    // The clock passes 10:30: a1 is squared off; a2 (15:15) is not.
    let out = om.on_clock(BASE + 30 * 60_000).unwrap();
    let squared: Vec<_> = events(&out)
        .into_iter()
        .filter(|(n, _)| *n == "square_off")
        .map(|(_, v)| v["account"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(squared, vec!["a1".to_owned()]);
}

#[test]
fn two_pipelines_on_one_account_and_instrument_share_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{CONFIG}\n[[pipelines]]\nid = \"q\"\nplugin = \"ma_crossover.wasm\"\nsymbols = [\"NIFTY\"]\naccounts = [\"a1\"]\nsource = {{ kind = \"redis\" }}\n"
    );
    let config = Arc::new(Config::parse(Path::new("pipelines.toml"), &text).unwrap());
    let mut om = OrderManager::open(
        &dir.path().join("journal.sqlite"),
        config,
        crate::domain::TradingMode::Paper,
    )
    .unwrap();
    om.on_signal(&signal(0, "buy")).unwrap();
    om.on_quotes(&quotes(60_000, dec!(100))).unwrap();
    // q also says buy: a1 already holds its 2, so nothing more is ordered.
    let mut q = signal(120_000, "buy");
    (q.pipeline, q.id) = (
        "q".into(),
        SignalMessage::make_id("q", "ma", "0.1.0", BASE + 120_000, 0),
    );
    assert!(states(&om.on_signal(&q).unwrap()).is_empty());
    // q says sell: a1 (both modes) reverses the one shared position, from 2 to -2.
    let mut q = signal(180_000, "sell");
    (q.pipeline, q.id) = (
        "q".into(),
        SignalMessage::make_id("q", "ma", "0.1.0", BASE + 180_000, 0),
    );
    om.on_signal(&q).unwrap();
    om.on_quotes(&quotes(240_000, dec!(101))).unwrap();
    let summary = om.accounts_summary().unwrap();
    assert_eq!(
        (
            summary["a1"]["positions"]["NIFTY"].as_str(),
            summary["a1"]["realized"].as_str()
        ),
        (Some("-2"), Some("2"))
    );
}

#[test]
fn an_absurd_fill_report_is_refused_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut om = live_manager(dir.path());
    let coid = live_buy(&mut om, 60_000);
    om.on_live_update(&LiveUpdate::PartFilled {
        client_order_id: coid.clone(),
        filled_qty: dec!(1),
        price: dec!(100),
    })
    .unwrap();
    // An average that cannot be: the rest would have to have filled at a negative price.
    let out = om
        .on_live_update(&LiveUpdate::PartFilled {
            client_order_id: coid.clone(),
            filled_qty: dec!(2),
            price: dec!(10),
        })
        .unwrap();
    assert!(
        events(&out)
            .iter()
            .any(|(n, _)| *n == "order_transition_refused")
    );
    // Numbers past what a decimal holds.
    let out = om
        .on_live_update(&LiveUpdate::Filled {
            client_order_id: coid.clone(),
            qty: Decimal::MAX,
            price: Decimal::MAX,
        })
        .unwrap();
    assert!(
        events(&out)
            .iter()
            .any(|(n, _)| *n == "order_transition_refused")
    );
    let out = om
        .on_live_update(&LiveUpdate::PartFilled {
            client_order_id: coid.clone(),
            filled_qty: Decimal::MIN,
            price: dec!(100),
        })
        .unwrap();
    assert!(states(&out).is_empty(), "less than already filled: nothing");
    assert_eq!(
        om.accounts_summary().unwrap()["a1"]["positions"]["NIFTY"],
        "1",
        "nothing of any of them recorded"
    );
}

#[test]
fn entries_still_working_at_the_square_off_are_cancelled_before_the_position_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let mut om = live_manager(dir.path());
    // 15:14:30: a1 (live) buys 2, one fills, the rest works on; a2 (paper) has seen no price since.
    let coid = live_buy(&mut om, 314 * 60_000 + 30_000);
    om.on_live_update(&LiveUpdate::PartFilled {
        client_order_id: coid.clone(),
        filled_qty: dec!(1),
        price: dec!(100),
    })
    .unwrap();
    let paper: String = om
        .db
        .query_row(
            "SELECT client_order_id FROM orders WHERE account = 'a2'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(state_of(&om, &paper).0, "accepted");
    assert!(
        om.on_clock(BASE + 314 * 60_000 + 50_000)
            .unwrap()
            .is_empty()
            && om.take_live_cancels().is_empty(),
        "15:14:50: nothing yet"
    );

    // 15:15: the paper entry is cancelled at once, the live one asked of the broker (once),
    // and nothing is squared off while it works.
    let out = om.on_clock(BASE + 315 * 60_000 + 1_000).unwrap();
    assert_eq!(
        states(&out),
        vec!["a2 pending_cancel buy", "a2 cancelled buy"]
    );
    let cancels = om.take_live_cancels();
    assert_eq!(
        cancels
            .iter()
            .map(|c| (c.account.as_str(), c.client_order_id.as_str()))
            .collect::<Vec<_>>(),
        vec![("a1", coid.as_str())]
    );
    assert!(cancels[0].reason.starts_with("square-off"));
    assert!(events(&om.on_clock(BASE + 315 * 60_000 + 2_000).unwrap()).is_empty());
    assert!(om.take_live_cancels().is_empty(), "asked once");
    om.on_quotes(&quotes(315 * 60_000, dec!(101))).unwrap();
    assert_eq!(
        state_of(&om, &paper).0,
        "cancelled",
        "a price after it fills nothing"
    );

    // The broker cancels the rest: the filled unit is squared off.
    om.on_live_update(&LiveUpdate::CancelRequested {
        client_order_id: coid.clone(),
        reason: cancels[0].reason.clone(),
    })
    .unwrap();
    om.on_live_update(&LiveUpdate::Cancelled {
        client_order_id: coid.clone(),
        filled_qty: dec!(1),
        price: Some(dec!(100)),
        reason: "cancelled".into(),
    })
    .unwrap();
    let out = om.on_clock(BASE + 315 * 60_000 + 3_000).unwrap();
    let squared: Vec<_> = events(&out)
        .into_iter()
        .filter(|(n, _)| *n == "square_off")
        .collect();
    assert_eq!(squared.len(), 1, "{out:?}");
    assert_eq!(
        (
            squared[0].1["account"].as_str(),
            squared[0].1["qty"].as_str()
        ),
        (Some("a1"), Some("1"))
    );

    // A square-off the broker refuses is placed again, up to three orders in all.
    for round in 0..3 {
        let close = om.take_live_orders().pop().expect("a square-off order");
        assert_eq!(
            (close.qty, close.side, close.entry),
            (dec!(1), OrderSide::Sell, false)
        );
        om.on_live_update(&LiveUpdate::Rejected {
            client_order_id: close.client_order_id,
            reason: "RMS: blocked".into(),
        })
        .unwrap();
        let again = events(
            &om.on_clock(BASE + 315 * 60_000 + 4_000 + round * 1_000)
                .unwrap(),
        )
        .into_iter()
        .filter(|(n, _)| *n == "square_off")
        .count();
        assert_eq!(again, if round < 2 { 1 } else { 0 }, "round {round}");
    }
    assert!(om.take_live_orders().is_empty());
}

#[test]
fn a_damaged_journal_value_is_an_error_naming_it_never_a_default() {
    let dir = tempfile::tempdir().unwrap();
    let mut om = live_manager(dir.path());
    let coid = live_buy(&mut om, 60_000);
    // A side the journal cannot hold: the fill is not booked as a buy, it is an error naming the value.
    om.db
        .execute(
            "UPDATE orders SET side = 'sideways' WHERE client_order_id = ?1",
            [&coid],
        )
        .unwrap();
    let err = om
        .on_live_update(&LiveUpdate::Filled {
            client_order_id: coid.clone(),
            qty: dec!(2),
            price: dec!(100),
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"sideways\""), "{err}");
    assert!(fills_of(&om, &coid).is_empty(), "nothing was recorded");
    // An unknown state: refused, naming the order, not taken for `new`.
    om.db
        .execute(
            "UPDATE orders SET side = 'buy', state = 'limbo' WHERE client_order_id = ?1",
            [&coid],
        )
        .unwrap();
    let err = om
        .on_live_update(&LiveUpdate::Filled {
            client_order_id: coid.clone(),
            qty: dec!(2),
            price: dec!(100),
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains("limbo") && err.contains(&coid), "{err}");
    // A position quantity that is not a number: the summary fails instead of showing 0.
    om.db
        .execute(
            "UPDATE orders SET state = 'accepted' WHERE client_order_id = ?1",
            [&coid],
        )
        .unwrap();
    om.on_live_update(&LiveUpdate::Filled {
        client_order_id: coid.clone(),
        qty: dec!(2),
        price: dec!(100),
    })
    .unwrap();
    om.db
        .execute("UPDATE positions SET qty = 'two' WHERE account = 'a1'", [])
        .unwrap();
    let err = om.accounts_summary().unwrap_err().to_string();
    assert!(err.contains("\"two\""), "{err}");
    om.db
        .execute(
            "UPDATE positions SET qty = '2', lots = '2@x' WHERE account = 'a1'",
            [],
        )
        .unwrap();
    assert!(
        om.accounts_summary()
            .unwrap_err()
            .to_string()
            .contains("2@x")
    );
}

#[test]
fn an_entry_the_broker_refused_does_not_start_the_cooldown() {
    let dir = tempfile::tempdir().unwrap();
    let text = CONFIG
        .replacen("id = \"a1\"\n", "id = \"a1\"\nbroker = \"kite\"\n", 1)
        .replacen(
            "risk = { cooldown_secs = 0 }",
            "risk = { cooldown_secs = 1800 }",
            1,
        )
        // The cooldown is the pipeline's in an instrument, over its accounts: a1 alone here.
        .replacen("accounts = [\"a1\", \"a2\"]", "accounts = [\"a1\"]", 1);
    let config = Arc::new(Config::parse(Path::new("pipelines.toml"), &text).unwrap());
    let mut om = OrderManager::open(
        &dir.path().join("journal.sqlite"),
        config,
        crate::domain::TradingMode::Live,
    )
    .unwrap();
    let coid = live_buy(&mut om, 60_000);
    om.on_live_update(&LiveUpdate::Rejected {
        client_order_id: coid,
        reason: "RMS: margin".into(),
    })
    .unwrap();
    // A minute later the same signal again: it opened nothing before, so it may now.
    let out = om.on_signal(&signal(120_000, "buy")).unwrap();
    assert!(
        !events(&out)
            .iter()
            .any(|(n, v)| *n == "order_refused" && v["account"] == "a1"),
        "{out:?}"
    );
    let again = om
        .take_live_orders()
        .pop()
        .expect("an order")
        .client_order_id;
    // This one fills: the cooldown runs from it, and a re-entry after an exit is refused.
    om.on_live_update(&LiveUpdate::Accepted {
        client_order_id: again.clone(),
        broker_order_id: "b2".into(),
    })
    .unwrap();
    om.on_live_update(&LiveUpdate::Filled {
        client_order_id: again,
        qty: dec!(2),
        price: dec!(100),
    })
    .unwrap();
    om.on_signal(&signal(180_000, "exit")).unwrap();
    let exit = om.take_live_orders().pop().unwrap().client_order_id;
    om.on_live_update(&LiveUpdate::Accepted {
        client_order_id: exit.clone(),
        broker_order_id: "b3".into(),
    })
    .unwrap();
    om.on_live_update(&LiveUpdate::Filled {
        client_order_id: exit,
        qty: dec!(2),
        price: dec!(101),
    })
    .unwrap();
    let out = om.on_signal(&signal(240_000, "buy")).unwrap();
    assert!(
        events(&out)
            .iter()
            .any(|(n, v)| *n == "order_refused" && v["account"] == "a1" && v["rule"] == "cooldown"),
        "{out:?}"
    );
}

#[test]
fn an_intraday_short_trails_the_best_ask_and_a_long_the_best_bid() {
    let dir = tempfile::tempdir().unwrap();
    let text = CONFIG
        .replacen(
            "risk = { cooldown_secs = 0 }",
            "risk = { cooldown_secs = 0 }\nexits = { trailing_pct = 1 }",
            1,
        )
        .replacen("accounts = [\"a1\", \"a2\"]", "accounts = [\"a1\"]", 1);
    let config = Arc::new(Config::parse(Path::new("pipelines.toml"), &text).unwrap());
    let mut om = OrderManager::open(
        &dir.path().join("journal.sqlite"),
        config,
        crate::domain::TradingMode::Paper,
    )
    .unwrap();
    let stop = |om: &OrderManager| -> String {
        om.db
            .query_row("SELECT stop FROM exits WHERE account = 'a1'", [], |r| {
                r.get(0)
            })
            .unwrap()
    };
    let touch = |ts: i64, close: rust_decimal::Decimal, bid, ask| {
        let mut q = quotes(ts, close);
        q.quotes[0].bid = bid;
        q.quotes[0].ask = ask;
        q
    };
    // Short 2 at 100 (a1 is intraday, trails 1%).
    om.on_signal(&signal(0, "sell")).unwrap();
    om.on_quotes(&quotes(60_000, dec!(100))).unwrap();
    // The last trade is 97.50 but a buy to cover would pay the ask, 98: the stop follows 98 (+1%, on the tick).
    om.on_quotes(&touch(
        120_000,
        dec!(97.5),
        Some(dec!(97.45)),
        Some(dec!(98)),
    ))
    .unwrap();
    assert_eq!(stop(&om), "99", "98 + 1% = 98.98, on the tick 99.00");
    // Long again: now the bid leads.
    om.on_signal(&signal(180_000, "buy")).unwrap();
    om.on_quotes(&quotes(240_000, dec!(100))).unwrap();
    om.on_quotes(&touch(
        300_000,
        dec!(103),
        Some(dec!(102)),
        Some(dec!(103.05)),
    ))
    .unwrap();
    assert_eq!(
        stop(&om),
        "101",
        "102 - 1% = 100.98, at the nearest tick 101.00"
    );
}

/// A manager whose configuration (`CONFIG` with `extra` after its accounts' lines) reads a
/// calendar for 2024 written beside it: 2024-01-02 a holiday, Saturday 2024-01-06 a
/// Muhurat-like session 18:00–19:00.
fn manager_with_calendar(dir: &Path, square_off: &str) -> OrderManager {
    manager_on_calendar(dir, square_off, CONFIG)
}

/// [`manager_with_calendar`] with the accounts and pipelines of `config`.
fn manager_on_calendar(dir: &Path, square_off: &str, config: &str) -> OrderManager {
    std::fs::write(
        dir.join("nse-2024.toml"),
        "year = 2024\n[[holiday]]\ndate = \"2024-01-02\"\nname = \"Test holiday\"\n[[session]]\ndate = \"2024-01-06\"\nname = \"Muhurat\"\nopen = \"18:00\"\nclose = \"19:00\"\n",
    )
    .unwrap();
    let text = format!(
        "[market]\ncalendars = [\"nse-2024.toml\"]\n{}",
        config.replacen(
            "slippage_bps = 0\n",
            &format!("slippage_bps = 0\nsquare_off = {square_off}\n"),
            1
        )
    );
    let config = Arc::new(Config::parse(&dir.join("pipelines.toml"), &text).unwrap());
    OrderManager::open(
        &dir.join("journal.sqlite"),
        config,
        crate::domain::TradingMode::Paper,
    )
    .unwrap()
}

/// IST `2024-01-<day> HH:MM` in ms.
fn at(day: u32, hh: u32, mm: u32) -> i64 {
    crate::domain::time::ist_to_epoch_ms(2024, 1, day, hh * 60 + mm, 0)
}

fn quote_of(instrument: &str, ts: i64, price: rust_decimal::Decimal) -> QuotesMessage {
    QuotesMessage {
        v: SCHEMA_VERSION,
        kind: "quotes".into(),
        id: format!("p/{ts}"),
        ts,
        quotes: vec![Quote {
            instrument: instrument.into(),
            open: price,
            high: price,
            low: price,
            close: price,
            bid: None,
            ask: None,
        }],
        after_signal: None,
        last: false,
    }
}

#[test]
fn a_holiday_takes_no_entries_and_makes_no_square_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut om = manager_with_calendar(dir.path(), "\"15:15\"");
    om.on_signal(&signal(0, "buy")).unwrap();
    om.on_quotes(&quotes(60_000, dec!(100))).unwrap();
    // Nothing more on the 1st (the process was down at 15:15); the 2nd is a holiday.
    assert!(
        om.on_clock(at(2, 15, 20)).unwrap().is_empty(),
        "no square-off order on a holiday"
    );
    let mut holiday = signal(at(2, 10, 0) - BASE, "buy");
    holiday.instrument = "BANKNIFTY".into();
    let out = om.on_signal(&holiday).unwrap();
    let refused: Vec<_> = events(&out)
        .into_iter()
        .filter(|(n, _)| *n == "order_refused")
        .map(|(_, v)| (v["rule"].clone(), v["reason"].clone()))
        .collect();
    assert_eq!(refused.len(), 2, "both accounts: {out:?}");
    assert_eq!(
        refused[0],
        (
            json!("holiday"),
            json!("2024-01-02 is not a trading day (Test holiday)")
        )
    );
    // The next trading day's open closes what was carried over.
    let out = om.on_clock(at(3, 9, 15)).unwrap();
    assert_eq!(
        events(&out)
            .into_iter()
            .filter(|(n, _)| *n == "position_carried")
            .count(),
        2
    );
}

#[test]
fn a_special_session_moves_the_entry_window_and_the_square_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut om = manager_with_calendar(dir.path(), "\"15:15\"");
    let refused = |out: &[Outcome]| {
        events(out)
            .into_iter()
            .filter(|(n, _)| *n == "order_refused")
            .map(|(_, v)| v["rule"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
    };
    // A Saturday: closed, except for the listed session.
    assert_eq!(
        refused(&om.on_signal(&signal(at(6, 10, 0) - BASE, "buy")).unwrap()),
        vec!["entry_window", "entry_window"],
        "10:00 is not in the session"
    );
    assert!(
        refused(&om.on_signal(&signal(at(6, 18, 10) - BASE, "buy")).unwrap()).is_empty(),
        "18:10 is"
    );
    om.on_quotes(&quotes(at(6, 18, 11) - BASE, dec!(100)))
        .unwrap();
    assert_eq!(
        om.accounts_summary().unwrap()["a1"]["positions"]["NIFTY"],
        "2"
    );
    // A 15:15 square-off is fifteen minutes before the close: 18:45.
    assert!(om.on_clock(at(6, 18, 44)).unwrap().is_empty());
    let squared = events(&om.on_clock(at(6, 18, 45)).unwrap())
        .into_iter()
        .filter(|(n, _)| *n == "square_off")
        .count();
    assert_eq!(squared, 2);
}

#[test]
fn each_segment_squares_off_at_its_own_time() {
    let dir = tempfile::tempdir().unwrap();
    // Whole lots of the option (50 for the January 2024 contracts): the venue takes nothing else.
    let mut om = manager_on_calendar(
        dir.path(),
        "{ equity = \"15:10\", derivative = \"15:20\" }",
        &CONFIG
            .replace("qty = 2 }", "qty = 50 }")
            .replace("qty = 1 }", "qty = 50 }"),
    );
    let option = "NIFTY04JAN2421600CE";
    let mut s = signal(0, "buy");
    om.on_signal(&s).unwrap();
    s.instrument = option.into();
    s.id = SignalMessage::make_id("p", "ma", "0.1.0", s.ts, 1);
    om.on_signal(&s).unwrap();
    om.on_quotes(&quotes(60_000, dec!(100))).unwrap();
    om.on_quotes(&quote_of(option, BASE + 60_000, dec!(50)))
        .unwrap();
    let a1 = |om: &OrderManager| om.positions_of("a1").unwrap();
    assert_eq!(a1(&om).len(), 2);
    let closed = |out: Vec<Outcome>| {
        events(&out)
            .into_iter()
            .filter(|(n, v)| *n == "square_off" && v["account"] == "a1")
            .map(|(_, v)| v["instrument"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        closed(om.on_clock(at(1, 15, 10)).unwrap()),
        vec!["NIFTY"],
        "equity at 15:10"
    );
    assert!(closed(om.on_clock(at(1, 15, 19)).unwrap()).is_empty());
    assert_eq!(
        closed(om.on_clock(at(1, 15, 20)).unwrap()),
        vec![option],
        "F&O at 15:20"
    );
}

const SLICED: &str = r#"
[[accounts]]
id = "big"
capital = 100000000
mode = "both"
sizing = { kind = "lots", lots = 100 }
risk = { cooldown_secs = 0, max_orders_per_sec = 2 }

[[pipelines]]
id = "p"
plugin = "ma_crossover.wasm"
symbols = ["NIFTY25APR2422500CE"]
accounts = ["big"]
source = { kind = "redis" }
"#;

#[test]
fn an_order_above_the_freeze_quantity_goes_out_in_paced_slices_and_exits_follow_what_filled() {
    let dir = tempfile::tempdir().unwrap();
    let config = Arc::new(Config::parse(Path::new("pipelines.toml"), SLICED).unwrap());
    let mut om = OrderManager::open(
        &dir.path().join("journal.sqlite"),
        config,
        crate::domain::TradingMode::Paper,
    )
    .unwrap();
    let option = "NIFTY25APR2422500CE";
    let mut s = signal(0, "buy");
    s.instrument = option.into();
    s.stop_loss = Some(dec!(90));
    let out = om.on_signal(&s).unwrap();
    // 200 lots of 25 = 5,000, above NIFTY's 1,800: 1,800 + 1,800 + 1,400.
    let sliced: Vec<_> = events(&out)
        .into_iter()
        .filter(|(n, _)| *n == "order_sliced")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(sliced.len(), 1, "{out:?}");
    assert_eq!(
        (
            sliced[0]["qty"].as_str(),
            sliced[0]["slices"].as_u64(),
            sliced[0]["freeze_qty"].as_u64()
        ),
        (Some("5000"), Some(3), Some(1800))
    );
    let parent = client_order_id(&s.id, "big");
    type Row = (String, String, Option<String>, Option<String>, i64);
    let rows: Vec<Row> = {
        let mut stmt = om
            .db
            .prepare(
                "SELECT client_order_id, qty, parent, slice, not_before FROM orders ORDER BY slice",
            )
            .unwrap();
        stmt.query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
    };
    let qty: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(qty, vec!["1800", "1800", "1400"]);
    assert!(
        rows.iter().all(|r| r.2.as_deref() == Some(parent.as_str())),
        "each names its parent"
    );
    assert_eq!(
        rows.iter()
            .map(|r| r.3.clone().unwrap_or_default())
            .collect::<Vec<_>>(),
        vec!["1/3", "2/3", "3/3"]
    );
    let ids: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        ids,
        vec![
            slicing::slice_id(&parent, 1),
            slicing::slice_id(&parent, 2),
            slicing::slice_id(&parent, 3)
        ],
        "ids derived from the parent's"
    );
    assert!(
        ids.iter().all(|id| id.len() <= 20),
        "within a broker tag's 20 characters"
    );
    // Two a second: the third slice is due a second after the signal.
    assert_eq!(
        rows.iter().map(|r| r.4 - s.ts).collect::<Vec<_>>(),
        vec![0, 0, 1000]
    );
    // A price 500 ms after the signal fills the first two; the third is not yet due.
    let out = om
        .on_quotes(&quote_of(option, s.ts + 500, dec!(100)))
        .unwrap();
    let progress: Vec<(String, String)> = out
        .iter()
        .filter_map(|o| match o {
            Outcome::Order(json) => serde_json::from_str::<Value>(json).ok().map(|v| {
                (
                    v["slice"].as_str().unwrap_or_default().to_owned(),
                    v["parent_filled"].as_str().unwrap_or_default().to_owned(),
                )
            }),
            Outcome::Event(..) => None,
        })
        .collect();
    // Messages go out after the commit: each tells where the whole order stands then.
    assert_eq!(
        progress,
        vec![
            ("1/3".to_owned(), "3600".to_owned()),
            ("2/3".to_owned(), "3600".to_owned())
        ],
        "the parent's completion travels with each fill"
    );
    assert_eq!(om.positions_of("big").unwrap()[option], dec!(3600));
    // The stop fires on what filled: one close of 3,600, itself sliced (1,800 + 1,800).
    let out = om
        .on_quotes(&quote_of(option, s.ts + 700, dec!(89)))
        .unwrap();
    let triggered: Vec<_> = events(&out)
        .into_iter()
        .filter(|(n, _)| *n == "exit_triggered")
        .map(|(_, v)| v["qty"].clone())
        .collect();
    assert_eq!(triggered, vec![json!("3600")]);
    let closes: Vec<String> = {
        let mut stmt = om
            .db
            .prepare("SELECT qty FROM orders WHERE pipeline = 'stop-loss' ORDER BY slice")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    };
    assert_eq!(closes, vec!["1800", "1800"]);
    // A redelivered signal records nothing again.
    assert!(om.on_signal(&s).unwrap().is_empty());
    assert_eq!(
        om.db
            .query_row(
                "SELECT COUNT(*) FROM orders WHERE parent = ?1",
                [&parent],
                |r| r.get::<_, i64>(0)
            )
            .unwrap(),
        3
    );
}

#[test]
fn a_lot_size_change_between_two_expiries_sizes_each_contract_by_its_own_lot() {
    let dir = tempfile::tempdir().unwrap();
    let text = SLICED
        .replace("lots = 100", "lots = 2")
        .replace("capital = 100000000", "capital = 10000000");
    let config = Arc::new(Config::parse(Path::new("pipelines.toml"), &text).unwrap());
    let mut om = OrderManager::open(
        &dir.path().join("journal.sqlite"),
        config,
        crate::domain::TradingMode::Paper,
    )
    .unwrap();
    let qty_for = |om: &mut OrderManager, instrument: &str, seq: usize| {
        // A second apart: the account's order rate is 2 a second.
        let mut s = signal(i64::try_from(seq).unwrap_or(0) * 1_000, "buy");
        s.instrument = instrument.into();
        s.id = SignalMessage::make_id("p", "ma", "0.1.0", s.ts, seq);
        let out = om.on_signal(&s).unwrap();
        let refused: Vec<_> = events(&out)
            .into_iter()
            .filter(|(n, _)| *n == "order_refused")
            .map(|(_, v)| v["reason"].as_str().unwrap_or_default().to_owned())
            .collect();
        let qty: Option<String> = om
            .db
            .query_row(
                "SELECT qty FROM orders WHERE instrument = ?1",
                [instrument],
                |r| r.get(0),
            )
            .optional()
            .unwrap();
        (qty, refused)
    };
    assert_eq!(
        qty_for(&mut om, "NIFTY30DEC2526000CE", 0).0.as_deref(),
        Some("150"),
        "2 lots of 75: the last 2025 expiry"
    );
    assert_eq!(
        qty_for(&mut om, "NIFTY06JAN2626000CE", 1).0.as_deref(),
        Some("130"),
        "2 lots of 65: the first 2026 expiry"
    );
    let banknifty = qty_for(&mut om, "BANKNIFTY27JAN2660000CE", 2);
    assert_eq!(
        banknifty.0.as_deref(),
        Some("60"),
        "2 lots of 30, BANKNIFTY's lot from the Jan 2026 monthly (NSE/FAOP/70616): {banknifty:?}"
    );
    assert_eq!(
        qty_for(&mut om, "BANKNIFTY30DEC2560000CE", 4).0.as_deref(),
        Some("70"),
        "2 lots of 35: the last monthly at the old lot"
    );
    let (qty, refused) = qty_for(&mut om, "RELIANCE27JAN261500CE", 3);
    assert_eq!(qty, None);
    assert_eq!(
        refused,
        vec![
            "lots sizing: the lot of RELIANCE27JAN261500CE is not known; list its underlying's lots in [market] contracts or set lot_size"
        ]
    );
}

#[test]
fn a_banknifty_position_sized_in_lots_uses_the_masters_lot_for_its_expiry() {
    let dir = tempfile::tempdir().unwrap();
    // A rules file from before NSE/FAOP/70616 (BANKNIFTY at 35 for every later expiry);
    // the broker's master, read this morning, lists the contract at 30.
    let contracts = dir.path().join("stale.toml");
    std::fs::write(
        &contracts,
        "[freeze]\nBANKNIFTY = 600\n[[lot]]\nunderlying = \"BANKNIFTY\"\nfrom = \"2025-07-01\"\nlot = 35\n",
    )
    .unwrap();
    let text = SLICED
        .replace("lots = 100", "lots = 2")
        .replace("capital = 100000000", "capital = 10000000")
        .replace("NIFTY25APR2422500CE", "BANKNIFTY24FEB2661000CE")
        .replace(
            "[[accounts]]",
            &format!(
                "[market]\ncontracts = {:?}\n\n[[accounts]]",
                contracts.display().to_string()
            ),
        );
    let config = Arc::new(Config::parse(&dir.path().join("pipelines.toml"), &text).unwrap());
    let mut om = OrderManager::open(
        &dir.path().join("journal.sqlite"),
        config,
        crate::domain::TradingMode::Paper,
    )
    .unwrap();
    let qty = |om: &mut OrderManager, instrument: &str, seq: usize| -> Option<String> {
        let mut s = signal(i64::try_from(seq).unwrap_or(0) * 1_000, "buy");
        s.instrument = instrument.into();
        s.id = SignalMessage::make_id("p", "ma", "0.1.0", s.ts, seq);
        om.on_signal(&s).unwrap();
        om.db
            .query_row(
                "SELECT qty FROM orders WHERE instrument = ?1",
                [instrument],
                |r| r.get(0),
            )
            .optional()
            .unwrap()
    };
    // No master read for it: the rules file's lot.
    assert_eq!(
        qty(&mut om, "BANKNIFTY24MAR2661000CE", 0).as_deref(),
        Some("70")
    );
    crate::domain::contracts::learn_lots([("BANKNIFTY24FEB2661000CE".to_owned(), 30)]);
    assert_eq!(
        qty(&mut om, "BANKNIFTY24FEB2661000CE", 2).as_deref(),
        Some("60"),
        "2 lots of the master's 30, not the stale file's 35"
    );
}

#[test]
fn short_options_are_bought_back_on_their_expiry_day_and_late_entries_in_them_refused() {
    let dir = tempfile::tempdir().unwrap();
    // Whole lots of the option (50 for the January 2024 contracts).
    let text = CONFIG
        .replace("qty = 2 }", "qty = 50 }")
        .replace("qty = 1 }", "qty = 50 }")
        .replacen(
            "slippage_bps = 0\n",
            "slippage_bps = 0\nproduct = \"cnc\"\nexits = { expiry_square_off = \"15:00\" }\n",
            1,
        )
        .replacen(
            "risk = { cooldown_secs = 0 }",
            "risk = { cooldown_secs = 0, expiry_no_entry_after = \"14:00\" }",
            1,
        );
    let config = Arc::new(Config::parse(Path::new("pipelines.toml"), &text).unwrap());
    let mut om = OrderManager::open(
        &dir.path().join("journal.sqlite"),
        config,
        crate::domain::TradingMode::Paper,
    )
    .unwrap();
    // NIFTY's 4 January 2024 options, on 4 January (a Thursday expiry).
    let (short, long) = ("NIFTY04JAN2421600CE", "NIFTY04JAN2421600PE");
    let on = |instrument: &str, side: &str, hh: u32, mm: u32, seq: usize| {
        let mut s = signal(at(4, hh, mm) - BASE, side);
        s.instrument = instrument.into();
        s.id = SignalMessage::make_id("p", "ma", "0.1.0", s.ts, seq);
        s
    };
    om.on_signal(&on(short, "sell", 10, 0, 0)).unwrap();
    om.on_signal(&on(long, "buy", 10, 0, 1)).unwrap();
    om.on_quotes(&quote_of(short, at(4, 10, 1), dec!(50)))
        .unwrap();
    om.on_quotes(&quote_of(long, at(4, 10, 1), dec!(40)))
        .unwrap();
    assert_eq!(om.positions_of("a1").unwrap()[short], dec!(-50));
    // After 14:00, no new position in an expiring contract.
    let late = om
        .on_signal(&on("NIFTY04JAN2421700CE", "buy", 14, 5, 2))
        .unwrap();
    let rules: Vec<_> = events(&late)
        .into_iter()
        .filter(|(n, _)| *n == "order_refused")
        .map(|(_, v)| (v["account"].clone(), v["rule"].clone()))
        .collect();
    assert_eq!(
        rules,
        vec![(json!("a1"), json!("expiry_day"))],
        "a2 has no such rule"
    );
    assert!(om.on_clock(at(4, 14, 59)).unwrap().is_empty());
    let out = om.on_clock(at(4, 15, 0)).unwrap();
    let closed: Vec<_> = events(&out)
        .into_iter()
        .filter(|(n, _)| *n == "square_off")
        .map(|(_, v)| {
            (
                v["account"].clone(),
                v["instrument"].clone(),
                v["reason"].clone(),
            )
        })
        .collect();
    assert_eq!(
        closed,
        vec![(json!("a1"), json!(short), json!("expiry"))],
        "the short only, on a delivery account: the long is left to expire"
    );
    om.on_quotes(&quote_of(short, at(4, 15, 1), dec!(30)))
        .unwrap();
    assert!(!om.positions_of("a1").unwrap().contains_key(short));
    assert!(om.on_clock(at(4, 15, 5)).unwrap().is_empty(), "once");
}

mod order_types;

/// A short straddle of 3,600 NIFTY units a leg (above the 1,800 freeze): each leg goes out as
/// two slices; the basket waits for every slice of its buy legs, then sends the sells.
#[test]
fn a_basket_leg_above_the_freeze_quantity_goes_out_in_slices_and_counts_as_filled_when_all_are() {
    let dir = tempfile::tempdir().unwrap();
    let config = Arc::new(Config::parse(Path::new("pipelines.toml"), SLICED).unwrap());
    let mut om = OrderManager::open(
        &dir.path().join("journal.sqlite"),
        config,
        crate::domain::TradingMode::Paper,
    )
    .unwrap();
    let legs = [
        ("NIFTY25APR2422500CE", dec!(100)),
        ("NIFTY25APR2422500PE", dec!(90)),
        ("NIFTY25APR2422000PE", dec!(40)),
    ];
    om.on_quotes(&quotes_for(0, &legs)).unwrap();
    let leg = |instrument: &str, side, qty| BasketLeg::market(instrument, side, qty);
    let basket = Basket {
        id: "straddle-1".into(),
        account: "big".into(),
        legs: vec![
            leg("NIFTY25APR2422500CE", OrderSide::Sell, dec!(3600)),
            leg("NIFTY25APR2422500PE", OrderSide::Sell, dec!(3600)),
            leg("NIFTY25APR2422000PE", OrderSide::Buy, dec!(3600)),
        ],
        unwind_on_failure: true,
    };
    let out = om.place_basket(&basket).unwrap();
    let sliced: Vec<_> = events(&out)
        .into_iter()
        .filter(|(n, _)| *n == "order_sliced")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(sliced.len(), 1, "the buy leg is sliced: {out:?}");
    assert_eq!(
        (
            sliced[0]["slices"].as_u64(),
            sliced[0]["freeze_qty"].as_u64()
        ),
        (Some(2), Some(1800))
    );
    let rows = |om: &OrderManager| -> Vec<(String, String, String, String)> {
        om.db
            .prepare("SELECT instrument, side, qty, state FROM orders ORDER BY rowid")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    };
    assert_eq!(
        rows(&om)
            .iter()
            .map(|r| (r.1.as_str(), r.2.as_str()))
            .collect::<Vec<_>>(),
        vec![("buy", "1800"), ("buy", "1800")],
        "only the buy leg's two slices"
    );
    let out = om.on_quotes(&quotes_for(60_000, &legs)).unwrap(); // the slices fill: the sells go, sliced
    assert!(
        !events(&out).iter().any(|(n, _)| *n == "basket_failed"),
        "{:?}",
        events(&out)
    );
    let now = rows(&om);
    assert_eq!(
        now.iter()
            .filter(|r| r.1 == "sell")
            .map(|r| r.2.as_str())
            .collect::<Vec<_>>(),
        vec!["1800", "1800", "1800", "1800"],
        "{now:?}"
    );
    // Two legs of two slices at 2 orders a second: paced, never refused by the order rate.
    let due: Vec<i64> = om
        .db
        .prepare("SELECT not_before FROM orders WHERE side = 'sell' ORDER BY rowid")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(
        due.iter().map(|t| t - due[0]).collect::<Vec<_>>(),
        vec![0, 0, 1000, 1000]
    );
    let out = om.on_quotes(&quotes_for(120_000, &legs)).unwrap();
    let out = if events(&out).iter().any(|(n, _)| *n == "basket_complete") {
        out
    } else {
        om.on_quotes(&quotes_for(180_000, &legs)).unwrap()
    };
    assert!(
        events(&out)
            .iter()
            .any(|(n, v)| *n == "basket_complete" && v["basket"] == "straddle-1"),
        "{:?}",
        events(&out)
    );
    let positions = om.positions_of("big").unwrap();
    assert_eq!(
        (
            positions["NIFTY25APR2422500CE"],
            positions["NIFTY25APR2422500PE"],
            positions["NIFTY25APR2422000PE"]
        ),
        (dec!(-3600), dec!(-3600), dec!(3600))
    );
}

/// A live basket whose leg the broker rejects stops there: no sell leg goes, and with
/// `unwind` the buy leg that filled is closed.
#[test]
fn a_basket_leg_the_broker_rejects_fails_the_basket_and_unwinds_what_filled() {
    let dir = tempfile::tempdir().unwrap();
    let mut om = live_manager(dir.path());
    om.set_live_accounts(std::collections::HashSet::from(["a1".to_owned()]));
    om.on_quotes(&quotes_for(0, &CONDOR)).unwrap();
    om.place_basket(&condor("ic-live", dec!(50))).unwrap();
    let buys = om.take_live_orders();
    assert_eq!(
        buys.iter()
            .map(|o| o.instrument.as_str())
            .collect::<Vec<_>>(),
        vec!["N100PE", "N120CE"]
    );
    om.on_live_update(&LiveUpdate::Accepted {
        client_order_id: buys[0].client_order_id.clone(),
        broker_order_id: "b1".into(),
    })
    .unwrap();
    om.on_live_update(&LiveUpdate::Filled {
        client_order_id: buys[0].client_order_id.clone(),
        qty: dec!(50),
        price: dec!(5),
    })
    .unwrap();
    let out = om
        .on_live_update(&LiveUpdate::Rejected {
            client_order_id: buys[1].client_order_id.clone(),
            reason: "RMS: margin exceeds".into(),
        })
        .unwrap();
    let failed: Vec<_> = events(&out)
        .into_iter()
        .filter(|(n, _)| *n == "basket_failed")
        .collect();
    assert_eq!(failed.len(), 1, "{:?}", events(&out));
    assert!(
        failed[0].1["reason"]
            .as_str()
            .unwrap()
            .contains("leg 3 (buy 50 N120CE) rejected at the broker"),
        "{}",
        failed[0].1
    );
    assert_eq!(failed[0].1["unwinding"], serde_json::json!(["N100PE"]));
    let unwind = om.take_live_orders();
    assert_eq!(
        unwind
            .iter()
            .map(|o| (o.instrument.as_str(), o.side, o.qty))
            .collect::<Vec<_>>(),
        vec![("N100PE", OrderSide::Sell, dec!(50))],
        "no sell leg; the filled wing closed"
    );
}

/// A trap: "when NIFTY crosses 105 up, buy 3". Armed at 100, it waits through 103, fires
/// on the first bar that reaches 105 (its order goes like any basket and fills), never
/// again, and stays fired across a restart; one disarmed never fires; one armed above
/// the level waits until the price has come to its side first.
#[test]
fn a_level_watcher_fires_once_on_the_first_crossing_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut om = manager(dir.path());
    om.on_quotes(&quotes(0, dec!(100))).unwrap();
    let w = |id: &str, level, up| Watcher {
        id: id.into(),
        account: "a1".into(),
        instrument: "NIFTY".into(),
        level,
        up,
        leg: BasketLeg::market("NIFTY", OrderSide::Buy, dec!(3)),
    };
    let armed = om
        .arm_watcher(&w("trap-up", dec!(105), true))
        .unwrap()
        .unwrap();
    assert_eq!(
        events(&armed).iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        vec!["watcher_armed"]
    );
    assert!(
        om.arm_watcher(&w("trap-up", dec!(105), true))
            .unwrap()
            .unwrap()
            .is_empty(),
        "armed once per id"
    );
    om.arm_watcher(&w("trap-cancelled", dec!(104), true))
        .unwrap()
        .unwrap();
    assert!(om.disarm_watcher("trap-cancelled").unwrap().is_ok());
    assert!(
        om.disarm_watcher("trap-cancelled")
            .unwrap()
            .unwrap_err()
            .contains("has cancelled")
    );
    assert!(
        om.arm_watcher(&Watcher {
            account: "nobody".into(),
            ..w("x", dec!(1), true)
        })
        .unwrap()
        .unwrap_err()
        .contains("unknown account")
    );
    // Armed while the price is above its level: a crossing up needs the price below it first.
    om.arm_watcher(&w("trap-late", dec!(98), true))
        .unwrap()
        .unwrap();
    om.on_quotes(&quotes(60_000, dec!(103))).unwrap();
    let basket_orders = |om: &OrderManager| -> i64 {
        om.db
            .query_row(
                "SELECT COUNT(*) FROM orders WHERE pipeline = 'basket'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    assert_eq!(
        basket_orders(&om),
        0,
        "103 crosses neither 104 (disarmed) nor 105, and 98 was armed above"
    );
    let out = om.on_quotes(&quotes(120_000, dec!(105.5))).unwrap();
    let fired: Vec<_> = events(&out)
        .into_iter()
        .filter(|(n, _)| *n == "watcher_fired")
        .map(|(_, v)| v["watch_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(fired, vec!["trap-up"]);
    assert_eq!(basket_orders(&om), 1);
    om.on_quotes(&quotes(180_000, dec!(106))).unwrap(); // the trap's order fills
    assert_eq!(om.positions_of("a1").unwrap()["NIFTY"], dec!(3));
    drop(om);
    // Restarted: it stays fired; a dip and a new rise fire nothing more, but the late trap,
    // now that the price has been below its level, fires on the way back up.
    let mut om = manager(dir.path());
    om.on_quotes(&quotes(240_000, dec!(97))).unwrap();
    let out = om.on_quotes(&quotes(300_000, dec!(106))).unwrap();
    let fired: Vec<_> = events(&out)
        .into_iter()
        .filter(|(n, _)| *n == "watcher_fired")
        .map(|(_, v)| v["watch_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(fired, vec!["trap-late"]);
    assert_eq!(basket_orders(&om), 2);
    let states: Vec<(String, String)> = om
        .db
        .prepare("SELECT watch_id, state FROM watchers ORDER BY watch_id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(
        states,
        vec![
            ("trap-cancelled".into(), "cancelled".into()),
            ("trap-late".into(), "fired".into()),
            ("trap-up".into(), "fired".into())
        ]
    );
}

/// A protective stop resized at the broker (52 to 104 after the entry's second half filled)
/// keeps the quantity the broker holds until the broker takes the new one: a restart asks
/// again for the new terms, and a fill at the old size leaves the journal consistent.
#[test]
fn a_resized_stop_keeps_the_brokers_quantity_until_the_broker_takes_the_new_one() {
    use crate::domain::order::OrderKind;
    let dir = tempfile::tempdir().unwrap();
    let mut om = live_manager(dir.path());
    om.set_live_accounts(std::collections::HashSet::from(["a1".to_owned()]));
    // As `protect` leaves it once the resize is asked: the broker's terms, and the wanted ones.
    om.db
        .execute(
            "INSERT INTO orders (client_order_id, signal_id, account, pipeline, instrument, side, qty, state, not_before, slippage_bps, created_at, updated_at, order_type, trigger_price, wanted_trigger, wanted_qty)
             VALUES ('ps1', 'k', 'a1', 'protective-stop', 'NIFTY', 'sell', '52', 'accepted', 0, '0', 0, 0, 'SL-M', '95', '96', '104')",
            [],
        )
        .unwrap();
    let asked = om.pending_modifies().unwrap();
    assert_eq!(
        asked
            .iter()
            .map(|m| (m.client_order_id.as_str(), m.qty, m.kind.trigger()))
            .collect::<Vec<_>>(),
        vec![("ps1", dec!(104), Some(dec!(96)))],
        "a restart asks again for what was wanted"
    );
    let held = |om: &OrderManager| -> (String, Option<String>) {
        om.db
            .query_row(
                "SELECT qty, wanted_qty FROM orders WHERE client_order_id = 'ps1'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
    };
    assert_eq!(held(&om), ("52".into(), Some("104".into())));
    om.on_live_update(&LiveUpdate::Modified {
        client_order_id: "ps1".into(),
        kind: OrderKind::StopMarket { trigger: dec!(96) },
        qty: dec!(104),
    })
    .unwrap();
    assert_eq!(
        held(&om),
        ("104".into(), None),
        "taken: the journal holds it"
    );
    assert!(om.pending_modifies().unwrap().is_empty());
}

/// The journal read from outside (the console's view) comes back typed, and a damaged
/// cell is an error naming its table, column and row, never a zero.
#[test]
fn the_journal_reads_back_typed_and_a_bad_cell_names_itself() {
    use crate::orders::journal::reads::{JournalReader, ReadError};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.sqlite");
    assert!(
        JournalReader::open(&path).unwrap().is_none(),
        "no journal yet"
    );
    let mut om = manager(dir.path());
    om.on_signal(&signal(1000, "buy")).unwrap();
    om.on_quotes(&quotes(2000, dec!(101))).unwrap();
    let journal = JournalReader::open(&path).unwrap().unwrap();
    let positions = journal.positions().unwrap();
    assert_eq!(
        positions
            .iter()
            .map(|p| (p.account.as_str(), p.instrument.as_str(), p.qty))
            .collect::<Vec<_>>(),
        vec![("a1", "NIFTY", dec!(2)), ("a2", "NIFTY", dec!(1))]
    );
    assert!(positions[0].avg_price > dec!(100), "{positions:?}");
    let orders = journal.recent_orders(10).unwrap();
    assert_eq!(orders.len(), 2);
    assert!(
        orders
            .iter()
            .all(|o| o.side == OrderSide::Buy && o.state == "filled" && o.fill_price.is_some())
    );
    let steps: Vec<String> = journal
        .history(&orders[0].client_order_id)
        .unwrap()
        .into_iter()
        .map(|t| t.to)
        .collect();
    assert_eq!(
        steps.last().map(String::as_str),
        Some("filled"),
        "{steps:?}"
    );
    assert!(journal.watchers(10).unwrap().is_empty());
    let fills = journal.fills().unwrap();
    assert_eq!(
        fills
            .iter()
            .map(|f| (f.account.as_str(), f.sign, f.qty, f.source.as_str()))
            .collect::<Vec<_>>(),
        vec![("a1", 1, dec!(2), "p"), ("a2", 1, dec!(1), "p")]
    );
    assert_eq!(journal.signals().unwrap().len(), 1);
    assert!(journal.refusals().unwrap().is_empty());

    // Someone edits the journal by hand.
    om.db
        .execute("UPDATE positions SET qty = 'ten' WHERE account = 'a2'", [])
        .unwrap();
    om.db
        .execute("UPDATE fills SET price = '' WHERE account = 'a1'", [])
        .unwrap();
    assert!(matches!(
        journal.fills().unwrap_err(),
        ReadError::Corrupt {
            table: "fills",
            column: "price",
            ..
        }
    ));
    let err = journal.positions().unwrap_err();
    assert!(
        matches!(&err, ReadError::Corrupt { table: "positions", column: "qty", key, text, .. } if key == "a2 NIFTY" && text == "ten"),
        "{err}"
    );
    assert!(
        err.to_string()
            .ends_with("positions.qty of a2 NIFTY: \"ten\" is not valid"),
        "{err}"
    );
}
