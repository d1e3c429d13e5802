//! Limit, stop and stop-limit orders on the paper venue, their validity, and the
//! trader's `modify` and `cancel`.

use super::*;
use crate::bus::message::OrderTerms;

fn priced(
    ts: i64,
    side: &str,
    kind: &str,
    price: Option<rust_decimal::Decimal>,
    trigger: Option<rust_decimal::Decimal>,
    validity: Option<&str>,
) -> SignalMessage {
    SignalMessage {
        order: Some(OrderTerms {
            kind: kind.into(),
            price,
            trigger,
            validity: validity.map(Into::into),
        }),
        ..signal(ts, side)
    }
}

/// A bar of NIFTY with its range.
fn bar(
    ts: i64,
    open: rust_decimal::Decimal,
    high: rust_decimal::Decimal,
    low: rust_decimal::Decimal,
) -> QuotesMessage {
    let ts = BASE + ts;
    QuotesMessage {
        v: SCHEMA_VERSION,
        kind: "quotes".into(),
        id: format!("p/{ts}"),
        ts,
        quotes: vec![Quote {
            instrument: "NIFTY".into(),
            open,
            high,
            low,
            close: open,
            bid: None,
            ask: None,
        }],
        after_signal: None,
        last: false,
    }
}

fn a1_order(signal_id: &str) -> String {
    client_order_id(signal_id, "a1")
}

/// `(time, qty, price)` of each fill of `coid`.
fn fills_at(om: &OrderManager, coid: &str) -> Vec<(i64, String, String)> {
    let mut stmt = om
        .db
        .prepare("SELECT ts, qty, price FROM fills WHERE client_order_id = ?1 ORDER BY seq")
        .unwrap();
    stmt.query_map([coid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<rusqlite::Result<Vec<_>>>()
        .unwrap()
}

fn position(om: &OrderManager, account: &str) -> rusqlite::Result<String> {
    om.db.query_row(
        "SELECT qty FROM positions WHERE account = ?1 AND instrument = 'NIFTY'",
        [account],
        |r| r.get(0),
    )
}

const MIN: i64 = 60_000;

#[test]
fn a_limit_that_the_market_only_touches_never_fills_and_expires_with_its_day() {
    let dir = tempfile::tempdir().unwrap();
    let mut om = manager(dir.path());
    let s = priced(0, "buy", "LIMIT", Some(dec!(95)), None, None);
    let out = om.on_signal(&s).unwrap();
    assert_eq!(
        states(&out),
        [
            "a1 submitted buy",
            "a1 accepted buy",
            "a2 submitted buy",
            "a2 accepted buy"
        ]
    );
    let coid = a1_order(&s.id);
    // The order says what it is.
    let accepted: Value = out
        .iter()
        .find_map(|o| match o {
            Outcome::Order(j) if j.contains("\"accepted\"") => serde_json::from_str(j).ok(),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        (
            accepted["order_type"].as_str(),
            accepted["limit_price"].as_str()
        ),
        (Some("LIMIT"), Some("95")),
        "{accepted}"
    );
    // Above the limit, then down to it exactly: a touch, not a trade through.
    for (k, low) in [(1, dec!(97)), (2, dec!(95)), (3, dec!(95.05))] {
        let out = om
            .on_quotes(&bar(k * MIN, dec!(99), dec!(100), low))
            .unwrap();
        assert!(
            states(&out).is_empty(),
            "bar {k} (low {low}) filled nothing: {:?}",
            states(&out)
        );
    }
    assert_eq!(state_of(&om, &coid).0, "accepted");
    assert!(position(&om, "a1").is_err(), "nothing held");
    // The next day's first bar trades far below: the day order is gone by then.
    let out = om
        .on_quotes(&bar(86_400_000, dec!(90), dec!(91), dec!(89)))
        .unwrap();
    assert_eq!(states(&out), ["a1 expired buy", "a2 expired buy"]);
    assert_eq!(state_of(&om, &coid).0, "expired");
    assert!(position(&om, "a1").is_err());
    // It opened nothing: the pipeline's cooldown is given back.
    let entries: i64 = om
        .db
        .query_row("SELECT COUNT(*) FROM entries", [], |r| r.get(0))
        .unwrap();
    assert_eq!(entries, 0);
}

#[test]
fn a_limit_fills_at_its_price_when_traded_through_and_at_a_better_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut om = manager(dir.path());
    let s = priced(0, "buy", "LIMIT", Some(dec!(95.03)), None, None);
    om.on_signal(&s).unwrap();
    // 95.03 is not a price NSE takes: a buy's limit goes down to 95.
    let coid = a1_order(&s.id);
    let limit: String = om
        .db
        .query_row(
            "SELECT limit_price FROM orders WHERE client_order_id = ?1",
            [&coid],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(limit, "95");
    let out = om
        .on_quotes(&bar(MIN, dec!(99), dec!(100), dec!(94.5)))
        .unwrap();
    assert_eq!(states(&out), ["a1 filled buy", "a2 filled buy"]);
    assert_eq!(
        fills_at(&om, &coid),
        vec![(BASE + MIN, "2".to_owned(), "95".to_owned())]
    );
    // A sell limit above a gap-up open fills at that open, not at the limit.
    let s = priced(2 * MIN, "sell", "LIMIT", Some(dec!(101)), None, None);
    om.on_signal(&s).unwrap();
    om.on_quotes(&bar(3 * MIN, dec!(103), dec!(104), dec!(102)))
        .unwrap();
    assert_eq!(
        fills_at(&om, &a1_order(&s.id)),
        vec![(BASE + 3 * MIN, "4".to_owned(), "103".to_owned())],
        "a1 (mode both) reverses: 2 + 2"
    );
}

#[test]
fn stops_trigger_at_their_level_and_a_stop_limit_above_its_limit_rests() {
    let dir = tempfile::tempdir().unwrap();
    let mut om = manager(dir.path());
    let stop = priced(0, "buy", "SL-M", None, Some(dec!(105)), None);
    om.on_signal(&stop).unwrap();
    let coid = a1_order(&stop.id);
    assert!(
        states(
            &om.on_quotes(&bar(MIN, dec!(100), dec!(104.95), dec!(99)))
                .unwrap()
        )
        .is_empty(),
        "below the trigger"
    );
    om.on_quotes(&bar(2 * MIN, dec!(101), dec!(105), dec!(100)))
        .unwrap();
    assert_eq!(
        fills_at(&om, &coid),
        vec![(BASE + 2 * MIN, "2".to_owned(), "105".to_owned())],
        "a1 has no slippage: at the trigger"
    );
    // A sell stop-limit: triggers at 100, limit 99.5. The bar gaps down to 98 at its open
    // and never comes back above 99.5: triggered, resting as a limit.
    let sl = priced(
        3 * MIN,
        "sell",
        "SL",
        Some(dec!(99.5)),
        Some(dec!(100)),
        None,
    );
    om.on_signal(&sl).unwrap();
    let coid = a1_order(&sl.id);
    let out = om
        .on_quotes(&bar(4 * MIN, dec!(98), dec!(99.5), dec!(97)))
        .unwrap();
    assert!(
        states(&out).contains(&"a1 triggered sell".to_owned()),
        "{:?}",
        states(&out)
    );
    assert_eq!(state_of(&om, &coid).0, "triggered");
    // The next bar trades above the limit: filled at it.
    om.on_quotes(&bar(5 * MIN, dec!(99), dec!(99.8), dec!(98.5)))
        .unwrap();
    assert_eq!(
        fills_at(&om, &coid),
        vec![(BASE + 5 * MIN, "4".to_owned(), "99.5".to_owned())]
    );
}

#[test]
fn an_ioc_limit_not_filled_by_the_first_price_is_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let mut om = manager(dir.path());
    let s = priced(0, "buy", "LIMIT", Some(dec!(95)), None, Some("IOC"));
    om.on_signal(&s).unwrap();
    let out = om
        .on_quotes(&bar(MIN, dec!(99), dec!(100), dec!(96)))
        .unwrap();
    assert_eq!(states(&out), ["a1 expired buy", "a2 expired buy"]);
    // The second bar would have filled a day order: not this one.
    assert!(
        states(
            &om.on_quotes(&bar(2 * MIN, dec!(94), dec!(95), dec!(90)))
                .unwrap()
        )
        .is_empty()
    );
    assert!(position(&om, "a1").is_err());
}

#[test]
fn a_signal_decided_after_its_bars_went_by_is_worked_against_them_in_order() {
    // Prices and signals travel apart: the same fills whichever came first.
    let run = |signal_first: bool| {
        let dir = tempfile::tempdir().unwrap();
        let mut om = manager(dir.path());
        let s = priced(0, "buy", "LIMIT", Some(dec!(95)), None, None);
        let bars = [
            bar(MIN, dec!(99), dec!(100), dec!(96)),
            bar(2 * MIN, dec!(97), dec!(98), dec!(94)),
            bar(3 * MIN, dec!(93), dec!(94), dec!(90)),
        ];
        if signal_first {
            om.on_signal(&s).unwrap();
        }
        for b in &bars {
            om.on_quotes(b).unwrap();
        }
        if !signal_first {
            om.on_signal(&s).unwrap();
        }
        fills_at(&om, &a1_order(&s.id))
    };
    let first = run(true);
    assert_eq!(
        first,
        vec![(BASE + 2 * MIN, "2".to_owned(), "95".to_owned())],
        "the second bar traded through 95"
    );
    assert_eq!(run(false), first);
}

#[test]
fn a_resting_limit_survives_a_restart_and_each_bar_is_worked_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = priced(0, "buy", "SL", Some(dec!(105)), Some(dec!(104)), None);
    let coid;
    {
        let mut om = manager(dir.path());
        om.on_signal(&s).unwrap();
        coid = a1_order(&s.id);
        // Gapped to 106 at the open, above the 105 limit, never back below it: triggered.
        om.on_quotes(&bar(MIN, dec!(106), dec!(107), dec!(105.5)))
            .unwrap();
        assert_eq!(state_of(&om, &coid).0, "triggered");
    }
    let mut om = manager(dir.path());
    // The same bar again (a replay after the restart, or a second pipeline): nothing new.
    assert!(
        states(
            &om.on_quotes(&bar(MIN, dec!(106), dec!(107), dec!(104)))
                .unwrap()
        )
        .is_empty()
    );
    om.on_quotes(&bar(2 * MIN, dec!(105.5), dec!(106), dec!(104.9)))
        .unwrap();
    assert_eq!(
        fills_at(&om, &coid),
        vec![(BASE + 2 * MIN, "2".to_owned(), "105".to_owned())]
    );
}

#[test]
fn a_trader_moves_a_working_limit_or_cancels_it_by_command() {
    let dir = tempfile::tempdir().unwrap();
    let mut om = manager(dir.path());
    let s = priced(0, "buy", "LIMIT", Some(dec!(95)), None, None);
    om.on_signal(&s).unwrap();
    let (a1, a2) = (a1_order(&s.id), client_order_id(&s.id, "a2"));
    // Nothing to move on a market order, nothing but a price above zero, and not an unknown order.
    assert!(
        om.modify_order(&a1, None, None, "c0")
            .unwrap()
            .unwrap_err()
            .contains("price")
    );
    assert!(
        om.modify_order(&a1, Some(dec!(-1)), None, "c0")
            .unwrap()
            .unwrap_err()
            .contains("above zero")
    );
    assert!(
        om.modify_order(&a1, None, Some(dec!(99)), "c0")
            .unwrap()
            .unwrap_err()
            .contains("no trigger")
    );
    assert!(
        om.cancel_order("nope", "c0")
            .unwrap()
            .unwrap_err()
            .contains("no order")
    );
    let out = om
        .modify_order(&a1, Some(dec!(98.97)), None, "c1")
        .unwrap()
        .unwrap();
    let (name, body) = &events(&out)[0];
    assert_eq!(
        (*name, body["price"].as_str(), body["by"].as_str()),
        ("order_modified", Some("98.95"), Some("c1")),
        "on the tick, downwards for a buy"
    );
    let out = om.cancel_order(&a2, "c2").unwrap().unwrap();
    assert_eq!(states(&out), ["a2 pending_cancel buy", "a2 cancelled buy"]);
    assert!(
        om.cancel_order(&a2, "c3")
            .unwrap()
            .unwrap_err()
            .contains("is cancelled")
    );
    // 98.9 trades through the moved limit: a1 fills there; a2's order is gone.
    let out = om
        .on_quotes(&bar(MIN, dec!(99.5), dec!(100), dec!(98.9)))
        .unwrap();
    assert_eq!(states(&out), ["a1 filled buy"]);
    assert_eq!(
        fills_at(&om, &a1),
        vec![(BASE + MIN, "2".to_owned(), "98.95".to_owned())]
    );
    let market = signal(2 * MIN, "sell");
    om.on_signal(&market).unwrap();
    let sell = a1_order(&market.id);
    assert!(
        om.modify_order(&sell, Some(dec!(99)), None, "c4")
            .unwrap()
            .unwrap_err()
            .contains("market order")
    );
}

#[test]
fn a_limit_entry_still_resting_at_the_square_off_is_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let mut om = manager(dir.path());
    // 15:10 IST: a buy limit far below the market; 15:15 is the paper account's square-off.
    let at_1510 = 5 * 3_600_000 + 10 * MIN;
    let s = priced(at_1510, "buy", "LIMIT", Some(dec!(50)), None, None);
    om.on_signal(&s).unwrap();
    om.on_quotes(&bar(at_1510 + MIN, dec!(99), dec!(100), dec!(98)))
        .unwrap();
    let out = om
        .on_quotes(&bar(at_1510 + 5 * MIN, dec!(99), dec!(100), dec!(98)))
        .unwrap();
    assert!(
        states(&out).contains(&"a1 cancelled buy".to_owned()),
        "{:?}",
        states(&out)
    );
}

#[test]
fn the_next_signal_replaces_a_resting_limit_and_an_exit_never_sells_what_was_never_bought() {
    let dir = tempfile::tempdir().unwrap();
    let mut om = manager(dir.path());
    let s = priced(0, "buy", "LIMIT", Some(dec!(95)), None, None);
    om.on_signal(&s).unwrap();
    om.on_quotes(&bar(MIN, dec!(99), dec!(100), dec!(98)))
        .unwrap();
    // The strategy gives up: its exit cancels the resting buy and sells nothing.
    let exit = signal(2 * MIN, "exit");
    let out = om.on_signal(&exit).unwrap();
    assert_eq!(
        states(&out),
        [
            "a1 pending_cancel buy",
            "a1 cancelled buy",
            "a2 pending_cancel buy",
            "a2 cancelled buy"
        ]
    );
    om.on_quotes(&bar(3 * MIN, dec!(90), dec!(91), dec!(89)))
        .unwrap();
    assert!(
        position(&om, "a1").is_err() && position(&om, "a2").is_err(),
        "nothing bought, nothing sold"
    );
    // A second limit replaces the first: one order works, at the new price.
    let first = priced(4 * MIN, "buy", "LIMIT", Some(dec!(80)), None, None);
    om.on_signal(&first).unwrap();
    let second = priced(5 * MIN, "buy", "LIMIT", Some(dec!(85)), None, None);
    om.on_signal(&second).unwrap();
    assert_eq!(state_of(&om, &a1_order(&first.id)).0, "cancelled");
    om.on_quotes(&bar(6 * MIN, dec!(86), dec!(87), dec!(84)))
        .unwrap();
    assert_eq!(
        fills_at(&om, &a1_order(&second.id)),
        vec![(BASE + 6 * MIN, "2".to_owned(), "85".to_owned())]
    );
    assert_eq!(position(&om, "a1").unwrap(), "2");
}

#[test]
fn a_live_basket_is_margined_whole_by_its_first_leg_and_its_later_legs_are_not_checked_again() {
    use crate::brokers::live::MarginScope;
    let dir = tempfile::tempdir().unwrap();
    let mut om = live_manager(dir.path());
    om.set_live_accounts(std::collections::HashSet::from(["a1".to_owned()]));
    om.on_quotes(&quotes_for(0, &CONDOR)).unwrap();
    let out = om.place_basket(&condor("ic-1", dec!(50))).unwrap();
    let buys = om.take_live_orders();
    assert!(
        events(&out).iter().any(|(n, _)| *n == "basket_placed"),
        "{:?}",
        events(&out)
    );
    assert_eq!(buys.len(), 2, "the buy legs first");
    let sells = |scope: &MarginScope| match scope {
        MarginScope::Basket(legs) => legs
            .iter()
            .map(|(i, s, q)| format!("{} {i} {q}", s.as_str()))
            .collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    // The first leg sent carries the other three; the second buy was checked with it.
    assert_eq!(
        sells(&buys[0].margin_scope),
        ["sell N105PE 50", "sell N115CE 50", "buy N120CE 50"]
    );
    assert_eq!(buys[1].margin_scope, MarginScope::Checked);
    for o in &buys {
        om.on_live_update(&LiveUpdate::Accepted {
            client_order_id: o.client_order_id.clone(),
            broker_order_id: format!("b-{}", o.client_order_id),
        })
        .unwrap();
        om.on_live_update(&LiveUpdate::Filled {
            client_order_id: o.client_order_id.clone(),
            qty: o.qty,
            price: dec!(10),
        })
        .unwrap();
    }
    om.on_quotes(&quotes_for(MIN, &CONDOR)).unwrap();
    let later = om.take_live_orders();
    assert_eq!(
        later
            .iter()
            .map(|o| (o.side, o.margin_scope.clone()))
            .collect::<Vec<_>>(),
        vec![
            (OrderSide::Sell, MarginScope::Checked),
            (OrderSide::Sell, MarginScope::Checked)
        ]
    );
    // An order of no basket is checked alone.
    om.on_signal(&signal(2 * MIN, "buy")).unwrap();
    assert!(
        om.take_live_orders()
            .iter()
            .all(|o| o.margin_scope == MarginScope::Alone)
    );
}
