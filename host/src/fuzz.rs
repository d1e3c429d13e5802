//! Arbitrary input, tried at scale: every decoder of outside input gets raw
//! bytes or text and structured values built from its own fields, and must
//! answer with a value or an error, never a panic. CI runs a short pass;
//! `scripts/fuzz` runs millions of cases (`TRADEHOST_FUZZ_CASES` per target).
//!
//! Targets: `pipelines.toml`; the signal, quotes, market and command messages;
//! the candle and option-chain CSV readers; each broker's order answers and
//! instrument master; the Kite, Upstox and OpenAlgo market-data frames; the
//! price guard; and a strategy's signal crossing the WIT boundary.

use std::path::Path;

use proptest::prelude::*;
use rust_decimal::Decimal;
use serde_json::{Value, json};

/// Cases per target: `TRADEHOST_FUZZ_CASES`, else a short pass for CI.
fn config() -> ProptestConfig {
    let cases = std::env::var("TRADEHOST_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Numbers at the edges: zero, negative, huge, fractional, non-finite as text.
fn edge_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        Just(json!(0)),
        Just(json!(-1)),
        Just(json!(i64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!("1e308")),
        Just(json!("NaN")),
        Just(json!("-0.05")),
        Just(json!("79228162514264337593543950335")),
        "[0-9.eE+-]{0,30}".prop_map(Value::from),
    ]
}

/// A JSON value of any shape, leaning to numbers and short strings.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        edge_number(),
        ".{0,12}".prop_map(Value::from)
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect()))
        ]
    })
}

/// An object with these keys (each present or not), valued anyhow.
fn object_of(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    prop::collection::vec(
        prop::option::of(prop_oneof![
            any_json(),
            edge_number(),
            ".{0,16}".prop_map(Value::from)
        ]),
        keys.len(),
    )
    .prop_map(move |vals| {
        Value::Object(
            keys.iter()
                .zip(vals)
                .filter_map(|(k, v)| v.map(|v| ((*k).to_owned(), v)))
                .collect(),
        )
    })
}

/// A header line then rows of fields drawn from numbers, dates and junk.
fn csv_text(headers: &'static [&'static str]) -> impl Strategy<Value = String> {
    let field = prop_oneof![
        "[0-9]{1,6}(\\.[0-9]{1,3})?",
        "-?[0-9]{1,20}",
        "20[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:00\\+05:30",
        "20[0-9]{6}",
        "[0-2][0-9]:[0-5][0-9]",
        "(CE|PE|ce|pe|XX)",
        ".{0,8}",
        Just(String::new()),
    ];
    let row = prop::collection::vec(field, 0..headers.len() + 2).prop_map(|f| f.join(","));
    prop::collection::vec(row, 0..12)
        .prop_map(move |rows| format!("{}\n{}\n", headers.join(","), rows.join("\n")))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn pipelines_toml_any_text(text in ".{0,400}") {
        let _ = crate::config::Config::parse(Path::new("pipelines.toml"), &text);
    }

    #[test]
    fn pipelines_toml_the_bundled_file_with_one_value_changed(at in 0usize..5000, junk in prop_oneof![".{0,12}", "-?[0-9]{1,25}(\\.[0-9]{0,5})?", Just("\"\"".to_owned()), Just("nan".to_owned()), Just("[[".to_owned())]) {
        let text = include_str!("../../pipelines.toml");
        let mut at = at % text.len();
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        // Replace from `at` to the end of its line: a value, a key or a table header changes.
        let end = text[at..].find('\n').map_or(text.len(), |n| at + n);
        let changed = format!("{}{junk}{}", &text[..at], &text[end..]);
        let _ = crate::config::Config::parse(Path::new("pipelines.toml"), &changed);
    }

    #[test]
    fn bus_messages_any_text(text in ".{0,300}") {
        use crate::bus::message::{CommandMessage, MarketMessage, QuotesMessage, SignalMessage};
        let _ = SignalMessage::parse(&text);
        let _ = QuotesMessage::parse(&text);
        let _ = MarketMessage::parse(&text);
        let _ = CommandMessage::parse(&text);
    }

    #[test]
    fn bus_messages_structured(
        signal in object_of(&["v", "type", "id", "ts", "pipeline", "plugin", "plugin_version", "instrument", "side", "reason", "price", "stop_loss", "target", "strength"]),
        quotes in object_of(&["v", "type", "id", "ts", "quotes", "after_signal"]),
        quote in object_of(&["instrument", "open", "high", "low", "close", "bid"]),
        market in object_of(&["v", "type", "kind", "id", "instrument", "ts", "price", "open", "high", "low", "close", "volume", "oi", "bid", "ask"]),
        command in object_of(&["v", "type", "id", "cmd", "pipeline", "account", "access_token", "on", "legs", "unwind", "basket_id"]),
    ) {
        use crate::bus::message::{CommandMessage, MarketMessage, QuotesMessage, SignalMessage};
        let with = |mut v: Value, kind: &str| {
            if let Some(o) = v.as_object_mut() {
                o.entry("v").or_insert(json!(1));
                o.entry("type").or_insert(json!(kind));
            }
            v.to_string()
        };
        let _ = SignalMessage::parse(&with(signal, "signal"));
        let mut quotes = quotes;
        if let Some(o) = quotes.as_object_mut() {
            o.insert("quotes".into(), json!([quote]));
        }
        let _ = QuotesMessage::parse(&with(quotes, "quotes"));
        let _ = MarketMessage::parse(&with(market, "market"));
        if let Ok(m) = CommandMessage::parse(&with(command, "command")) {
            let _ = m.command();
        }
    }

    #[test]
    fn candle_and_chain_csv(
        candles in csv_text(&["timestamp", "open", "high", "low", "close", "volume", "oi"]),
        dated in csv_text(&["Instrument", "Date", "Time", "Open", "High", "Low", "Close", "Volume"]),
        chain in csv_text(&["timestamp", "expiry", "strike", "option_type", "close", "volume", "oi"]),
        raw in ".{0,300}",
    ) {
        use crate::market::csv::{LoadOptions, parse};
        for text in [&candles, &dated, &chain, &raw] {
            let _ = parse(Path::new("fuzz.csv"), text, &LoadOptions::default());
        }
    }

    #[test]
    fn broker_order_answers(
        kite in object_of(&["order_id", "tag", "status", "filled_quantity", "pending_quantity", "cancelled_quantity", "average_price", "status_message", "tradingsymbol", "transaction_type", "quantity", "order_timestamp"]),
        upstox in object_of(&["order_id", "tag", "status", "filled_quantity", "pending_quantity", "average_price", "status_message", "trading_symbol", "transaction_type", "quantity", "order_timestamp", "instrument_token"]),
        openalgo in object_of(&["orderid", "order_status", "status", "quantity", "average_price", "price", "symbol", "action", "timestamp", "rejection_reason"]),
    ) {
        let _ = crate::brokers::kite::Kite::order(&kite);
        let _ = crate::brokers::upstox::Upstox::order(&upstox);
        let _ = crate::brokers::openalgo::OpenAlgo::order(&openalgo);
    }

    #[test]
    fn instrument_masters(
        kite in csv_text(&["instrument_token", "exchange_token", "tradingsymbol", "name", "last_price", "expiry", "strike", "tick_size", "lot_size", "instrument_type", "segment", "exchange"]),
        upstox in csv_text(&["instrument_key", "exchange_token", "tradingsymbol", "name", "last_price", "expiry", "strike", "tick_size", "lot_size", "instrument_type", "option_type", "exchange"]),
        raw in ".{0,300}",
    ) {
        for (broker, text) in [("kite", &kite), ("upstox", &upstox), ("kite", &raw), ("upstox", &raw)] {
            let _ = crate::brokers::instruments::parse(broker, "fuzz.csv", text);
        }
    }

    #[test]
    fn market_data_frames(bytes in prop::collection::vec(any::<u8>(), 0..400), text in ".{0,300}", json in any_json()) {
        use crate::market::feed::Wire as Protocol;
        for p in [Protocol::Kite, Protocol::Upstox, Protocol::OpenAlgo] {
            let mut out = Vec::new();
            let _ = p.decode_binary(&bytes, &mut out);
            let _ = p.decode_text(&text);
            let _ = p.decode_text(&json.to_string());
        }
    }

    #[test]
    fn kite_binary_frames_of_the_right_shape(packets in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..5), lens in prop::collection::vec(any::<u16>(), 0..5)) {
        // Kite's layout: a packet count, then per packet its length and body; lengths that lie.
        let mut frame = u16::try_from(packets.len()).unwrap_or(0).to_be_bytes().to_vec();
        for (i, p) in packets.iter().enumerate() {
            let len = lens.get(i).copied().unwrap_or_else(|| u16::try_from(p.len()).unwrap_or(u16::MAX));
            frame.extend(len.to_be_bytes());
            frame.extend(p);
        }
        let mut out = Vec::new();
        let _ = crate::market::feed::Wire::Kite.decode_binary(&frame, &mut out);
    }

    #[test]
    fn price_guard(ts in any::<i64>(), now in any::<i64>(), price in edge_number(), last in edge_number(), instrument in "[A-Z0-9]{1,24}") {
        let mut guard = crate::market::guard::PriceGuard::new(crate::market::guard::GuardRules::default());
        let dec = |v: &Value| v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()).parse::<Decimal>().unwrap_or(Decimal::MAX);
        let _ = guard.check(&instrument, ts, &[("close", dec(&last))], now);
        let _ = guard.check(&instrument, ts.saturating_add(60_000), &[("close", dec(&price)), ("open", Decimal::MIN)], now);
    }

    #[test]
    fn a_strategy_signal_across_the_wit_boundary(
        ts in any::<i64>(),
        stop in prop::option::of(any::<f64>()),
        target in prop::option::of(any::<f64>()),
        strength in prop::option::of(any::<f64>()),
        instrument in ".{0,40}",
        reason in ".{0,40}",
        limit in prop::option::of(any::<f64>()),
        trigger in any::<f64>(),
    ) {
        let order = match limit {
            Some(limit) if trigger.is_sign_negative() => strategy_sdk::OrderType::Limit(limit),
            Some(limit) => strategy_sdk::OrderType::StopLimit { trigger, limit },
            None => strategy_sdk::OrderType::Stop(trigger),
        };
        let s = strategy_sdk::Signal { instrument, side: strategy_sdk::Side::Buy, reason, stop_loss: stop, target, strength, order, validity: strategy_sdk::Validity::Day };
        if let Ok(signal) = crate::engine::Signal::from_strategy(ts, s) {
            prop_assert!(signal.stop_loss.is_none_or(|p| !p.is_sign_negative()));
            prop_assert!(signal.target.is_none_or(|p| !p.is_sign_negative()));
            // Every price of its order is a price above zero, and rounds to the tick without a panic.
            prop_assert!(signal.order.named_price().is_some_and(|p| p > rust_decimal::Decimal::ZERO));
            let _ = signal.order.on_tick(crate::domain::OrderSide::Buy);
            let _ = signal.order.on_tick(crate::domain::OrderSide::Sell);
        }
    }

    #[test]
    fn journal_and_time_text(text in ".{0,40}") {
        let _ = crate::brokers::paper::Position::parse_lots(&text);
        let _ = crate::domain::time::parse_iso(&text);
        let _ = crate::domain::time::parse_date(&text);
        let _ = crate::domain::time::parse_hhmm(&text);
        let _ = crate::config::parse_timeframe(&text);
        let _ = crate::market::session::Session::parse(&text);
    }
}

#[test]
fn a_timeframe_ending_in_a_wide_character_is_refused_not_a_panic() {
    // Found by `journal_and_time_text`: the unit was cut at a byte, not a character.
    assert_eq!(crate::config::parse_timeframe("5🍪"), None);
    assert_eq!(crate::config::parse_timeframe("5m"), Some(300));
    let text = include_str!("../../pipelines.toml").replacen(
        "timeframe = \"5m\"",
        "timeframe = \"5🍪\"",
        1,
    );
    let err = crate::config::Config::parse(Path::new("pipelines.toml"), &text)
        .expect_err("refused")
        .to_string();
    assert!(err.contains("timeframe"), "{err}");
}
