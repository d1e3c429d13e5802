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
    OrderManager::open(&dir.join("journal.sqlite"), config, "paper").unwrap()
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
    }
}

fn quotes(ts: i64, open: rust_decimal::Decimal) -> QuotesMessage {
    let ts = BASE + ts;
    QuotesMessage { v: SCHEMA_VERSION, kind: "quotes".into(), id: format!("p/{ts}"), ts, quotes: vec![Quote { instrument: "NIFTY".into(), open, high: open, low: open, close: open, bid: None }], after_signal: None }
}

fn states(out: &[Outcome]) -> Vec<String> {
    out.iter()
        .filter_map(|o| match o {
            Outcome::Order(json) => {
                let v: Value = serde_json::from_str(json).ok()?;
                Some(format!("{} {} {}", v["account"].as_str()?, v["state"].as_str()?, v["side"].as_str()?))
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
    assert_eq!(states(&out), vec!["a1 submitted buy", "a1 accepted buy", "a2 submitted buy", "a2 accepted buy"]);
    assert!(om.on_signal(&signal(1000, "buy")).unwrap().is_empty(), "a redelivered signal changes nothing");
    // A quote at the signal's own time must not fill (no look-ahead); the next one does.
    assert!(states(&om.on_quotes(&quotes(1000, dec!(99))).unwrap()).is_empty());
    assert_eq!(states(&om.on_quotes(&quotes(2000, dec!(101))).unwrap()), vec!["a1 filled buy", "a2 filled buy"]);
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
    assert_eq!((summary["a1"]["realized"].as_str(), summary["a1"]["positions"]["NIFTY"].as_str()), (Some("20"), Some("-2")));
    // a2 (long): +1 at 100, sold at 110 -> realised 10, flat.
    assert_eq!(summary["a2"]["realized"], "10");
    assert!(summary["a2"]["positions"].as_object().is_some_and(serde_json::Map::is_empty));
    om.on_quotes(&quotes(5000, dec!(105))).unwrap();
    assert_eq!(om.accounts_summary().unwrap()["a1"]["unrealized"], "10", "short 2 from 110 marked at 105");
}

#[test]
fn a_signal_handled_after_the_next_price_still_fills_at_that_price() {
    let dir = tempfile::tempdir().unwrap();
    let mut om = manager(dir.path());
    om.on_quotes(&quotes(1000, dec!(99))).unwrap();
    om.on_quotes(&quotes(2000, dec!(101))).unwrap();
    om.on_quotes(&quotes(3000, dec!(105))).unwrap();
    let out = om.on_signal(&signal(1000, "buy")).unwrap();
    assert_eq!(states(&out), vec!["a1 submitted buy", "a1 accepted buy", "a1 filled buy", "a2 submitted buy", "a2 accepted buy", "a2 filled buy"]);
    let filled: String = om.db.query_row("SELECT fill_price FROM orders WHERE account = 'a1'", [], |r| r.get(0)).unwrap();
    assert_eq!(filled, "101", "the first price after the signal, not the latest");
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
    assert!(out.iter().any(|o| matches!(o, Outcome::Event("order_refused", v) if v["rule"] == "kill_switch")));
    om.set_kill_switch(false).unwrap();
    assert!(om.on_signal(&signal(1000, "buy")).unwrap().is_empty(), "the refusal was the decision for this signal");
    assert_eq!(states(&om.on_signal(&signal(1500, "buy")).unwrap()).len(), 4);
}

#[test]
fn recorded_but_unsent_orders_are_sent_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut om = manager(dir.path());
        om.on_signal(&signal(1000, "buy")).unwrap();
        // Simulate a crash between the decision and the broker: back to 'new'.
        om.db.execute("UPDATE orders SET state = 'new'", []).unwrap();
        om.db.execute("DELETE FROM paper_book WHERE account = 'a2'", []).unwrap();
    }
    let mut om = manager(dir.path());
    let out = om.submit_new().unwrap();
    assert_eq!(states(&out), vec!["a1 submitted buy", "a1 accepted buy", "a2 submitted buy", "a2 accepted buy"]);
    let book: i64 = om.db.query_row("SELECT COUNT(*) FROM paper_book", [], |r| r.get(0)).unwrap();
    assert_eq!(book, 2, "the paper book is keyed by client order id: no duplicate");
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
    assert_eq!((s["a1"]["realized"].as_str(), s["a2"]["positions"]["NIFTY"].as_str()), (Some("8"), Some("1")));
}

#[test]
fn every_transition_is_journaled_and_impossible_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut om = manager(dir.path());
    om.on_signal(&signal(1000, "buy")).unwrap();
    om.on_quotes(&quotes(2000, dec!(101))).unwrap();
    let coid: String = om.db.query_row("SELECT client_order_id FROM orders WHERE account = 'a1'", [], |r| r.get(0)).unwrap();
    let path: Vec<(String, String, String)> = om
        .db
        .prepare("SELECT from_state, event, to_state FROM transitions WHERE client_order_id = ?1 ORDER BY seq")
        .unwrap()
        .query_map([&coid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    let want = [("new", "Submit", "submitted"), ("submitted", "Accept", "accepted"), ("accepted", "Fill", "filled")];
    assert_eq!(path, want.map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned())).to_vec());
    // A second fill for the same order (a broker's duplicate report): refused, nothing changes.
    let tx = om.db.transaction().unwrap();
    let refused = record_fill(&tx, &coid, "a1", "NIFTY", OrderSide::Buy, dec!(2), dec!(150), BASE + 3000, state::OrderEvent::Fill).unwrap();
    assert_eq!(refused.unwrap_err().to_string(), "Fill is not possible for an order that is filled");
    tx.commit().unwrap();
    assert_eq!(om.accounts_summary().unwrap()["a1"]["positions"]["NIFTY"], "2", "the position did not change");
}

fn events(out: &[Outcome]) -> Vec<(&'static str, Value)> {
    out.iter().filter_map(|o| if let Outcome::Event(n, v) = o { Some((*n, v.clone())) } else { None }).collect()
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
    assert_eq!(fired.iter().filter(|(n, _)| *n == "exit_triggered").count(), 2, "one per account");
    assert!(fired.iter().all(|(_, v)| v["reason"] == "stop-loss" && v["stop"] == "95"), "{fired:?}");
    assert!(events(&om.on_quotes(&quotes(240_000, dec!(90))).unwrap()).is_empty(), "fires once");
    // The exit order filled at the next price: flat, and the loss realised.
    let summary = om.accounts_summary().unwrap();
    assert_eq!((summary["a1"]["realized"].as_str(), summary["a2"]["realized"].as_str()), (Some("-20"), Some("-10")));
    assert!(summary["a1"]["positions"].as_object().is_some_and(serde_json::Map::is_empty));
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
    assert_eq!(events(&out).iter().filter(|(n, _)| *n == "square_off").count(), 2);
    om.on_quotes(&quotes(316 * 60_000, dec!(103))).unwrap();
    let summary = om.accounts_summary().unwrap();
    assert_eq!(summary["a1"]["realized"], "6", "bought at 100, squared off at the 15:16 open of 103");
    // After the window no new entries.
    let out = om.on_signal(&signal(317 * 60_000, "buy")).unwrap();
    assert!(events(&out).iter().all(|(n, v)| *n == "order_refused" && v["rule"] == "entry_window"), "{:?}", events(&out));
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
    assert_eq!(om.accounts_summary().unwrap()["a1"]["positions"]["NIFTY"], "2");
    assert_eq!(events(&om.on_quotes(&quotes(12 * 60_000, dec!(94))).unwrap()).len(), 2, "a current one does");
}

fn quotes_for(ts: i64, prices: &[(&str, rust_decimal::Decimal)]) -> QuotesMessage {
    let ts = BASE + ts;
    let quotes = prices.iter().map(|(i, p)| Quote { instrument: (*i).into(), open: *p, high: *p, low: *p, close: *p, bid: None }).collect();
    QuotesMessage { v: SCHEMA_VERSION, kind: "quotes".into(), id: format!("q/{ts}"), ts, quotes, after_signal: None }
}

const CONDOR: [(&str, rust_decimal::Decimal); 4] = [("N100PE", dec!(5)), ("N120CE", dec!(6)), ("N105PE", dec!(20)), ("N115CE", dec!(22))];

fn condor(id: &str, sell_qty: rust_decimal::Decimal) -> Basket {
    let leg = |instrument: &str, side, qty| BasketLeg { instrument: instrument.into(), side, qty };
    Basket {
        id: id.into(),
        account: "a1".into(),
        // Given sells first on purpose: buys must still go first.
        legs: vec![leg("N105PE", OrderSide::Sell, sell_qty), leg("N115CE", OrderSide::Sell, sell_qty), leg("N100PE", OrderSide::Buy, dec!(50)), leg("N120CE", OrderSide::Buy, dec!(50))],
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
    let sent: Vec<_> = instruments_ordered(&om).into_iter().map(|(i, s, _)| (i, s)).collect();
    assert_eq!(sent, vec![("N100PE".into(), "buy".into()), ("N120CE".into(), "buy".into())], "only the buy legs are out");
    om.on_quotes(&quotes_for(60_000, &CONDOR)).unwrap(); // buys fill; sells go out
    assert_eq!(instruments_ordered(&om).len(), 4);
    let out = om.on_quotes(&quotes_for(120_000, &CONDOR)).unwrap(); // sells fill
    assert!(events(&out).iter().any(|(n, v)| *n == "basket_complete" && v["basket"] == "ic-1"), "{:?}", events(&out));
    assert!(instruments_ordered(&om).iter().all(|(_, _, st)| st == "filled"));
    assert!(om.place_basket(&condor("ic-1", dec!(50))).unwrap().iter().all(|o| !matches!(o, Outcome::Order(_))), "placing it again changes nothing");
}

#[test]
fn a_failed_leg_stops_the_basket_alerts_and_unwinds() {
    let dir = tempfile::tempdir().unwrap();
    let mut om = manager(dir.path());
    om.on_quotes(&quotes_for(0, &CONDOR)).unwrap();
    om.place_basket(&condor("ic-2", dec!(20000))).unwrap(); // sells above max_order_qty (10,000)
    let out = om.on_quotes(&quotes_for(60_000, &CONDOR)).unwrap();
    let failed: Vec<_> = events(&out).into_iter().filter(|(n, _)| *n == "basket_failed").collect();
    assert_eq!(failed.len(), 1, "{:?}", events(&out));
    assert!(failed[0].1["reason"].as_str().unwrap().contains("max_order_qty"), "{}", failed[0].1);
    assert_eq!(failed[0].1["unwinding"], serde_json::json!(["N100PE", "N120CE"]));
    om.on_quotes(&quotes_for(120_000, &CONDOR)).unwrap(); // the unwinding orders fill
    let orders = instruments_ordered(&om);
    assert!(!orders.iter().any(|(i, s, _)| s == "sell" && (i == "N105PE" || i == "N115CE")), "no sell leg was sent: {orders:?}");
    let positions = om.accounts_summary().unwrap();
    assert!(positions["a1"]["positions"].as_object().is_some_and(serde_json::Map::is_empty), "unwound: {positions}");
}

fn live_manager(dir: &Path) -> OrderManager {
    let text = CONFIG.replacen("id = \"a1\"\n", "id = \"a1\"\nbroker = \"kite\"\n", 1);
    let config = Arc::new(Config::parse(Path::new("pipelines.toml"), &text).unwrap());
    OrderManager::open(&dir.join("journal.sqlite"), config, "live").unwrap()
}

fn state_of(om: &OrderManager, coid: &str) -> (String, Option<String>) {
    om.db.query_row("SELECT state, broker_order_id FROM orders WHERE client_order_id = ?1", [coid], |r| Ok((r.get(0)?, r.get(1)?))).unwrap()
}

#[test]
fn live_orders_are_journaled_as_submitted_before_the_broker_and_recovered_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut om = live_manager(dir.path());
    om.set_live_accounts(std::collections::HashSet::from(["a1".to_owned()]));
    om.on_quotes(&quotes(0, dec!(100))).unwrap();
    let out = om.on_signal(&signal(60_000, "buy")).unwrap();
    assert_eq!(states(&out), vec!["a1 submitted buy", "a2 submitted buy", "a2 accepted buy"], "a1 goes to its broker, a2 to paper");
    let handed = om.take_live_orders();
    assert_eq!(handed.len(), 1);
    let coid = handed[0].client_order_id.clone();
    assert!(handed[0].fresh && handed[0].account == "a1" && handed[0].qty == dec!(2) && handed[0].reference_price == Some(dec!(100)));
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
    assert!(!recovered[0].fresh && recovered[0].broker_order_id.is_none() && recovered[0].client_order_id == coid);
    om.on_live_update(&LiveUpdate::Accepted { client_order_id: coid.clone(), broker_order_id: "250408000000001".into() }).unwrap();
    assert_eq!(state_of(&om, &coid), ("accepted".into(), Some("250408000000001".into())));
    // Accepted orders come back with their broker id (to be polled, never placed).
    assert_eq!(om.recover_live_orders().unwrap()[0].broker_order_id.as_deref(), Some("250408000000001"));
    let out = om.on_live_update(&LiveUpdate::Filled { client_order_id: coid.clone(), qty: dec!(2), price: dec!(100.5) }).unwrap();
    assert_eq!(states(&out), vec!["a1 filled buy"]);
    assert_eq!(om.accounts_summary().unwrap()["a1"]["positions"]["NIFTY"], "2");
    assert!(om.recover_live_orders().unwrap().is_empty());
    // A late report the state machine refuses changes nothing and is reported.
    let out = om.on_live_update(&LiveUpdate::Rejected { client_order_id: coid.clone(), reason: "late".into() }).unwrap();
    assert!(events(&out).iter().any(|(n, _)| *n == "order_transition_refused"));
    assert_eq!(state_of(&om, &coid).0, "filled");

    // A sell cancelled after a partial fill: the filled part stands.
    om.on_signal(&signal(180_000, "sell")).unwrap();
    let sell = om.take_live_orders().pop().unwrap();
    om.on_live_update(&LiveUpdate::Accepted { client_order_id: sell.client_order_id.clone(), broker_order_id: "250408000000002".into() }).unwrap();
    let out = om
        .on_live_update(&LiveUpdate::Cancelled { client_order_id: sell.client_order_id.clone(), filled_qty: dec!(1), price: Some(dec!(102)), reason: "IOC remainder".into() })
        .unwrap();
    assert_eq!(states(&out), vec!["a1 partially_filled sell", "a1 cancelled sell"]);
    assert_eq!(om.accounts_summary().unwrap()["a1"]["positions"]["NIFTY"], "1");
}

#[test]
fn a_live_account_without_a_connected_broker_is_refused_not_papered() {
    let dir = tempfile::tempdir().unwrap();
    let mut om = live_manager(dir.path()); // live mode, a1 on kite, but no router connected it
    om.on_quotes(&quotes(0, dec!(100))).unwrap();
    let out = om.on_signal(&signal(60_000, "buy")).unwrap();
    let refused: Vec<_> = events(&out).into_iter().filter(|(n, v)| *n == "order_refused" && v["account"] == "a1").collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].1["rule"], "broker");
    assert_eq!(states(&out), vec!["a2 submitted buy", "a2 accepted buy"]);
}
