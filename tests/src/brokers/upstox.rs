//! The local Upstox server's routes: Upstox API v2/v3, as documented at upstox.com/developer/api-documentation: JSON bodies,
//! `Bearer` authorisation, `{status, data}` answers.

use super::*;

/// Answer `r` (its path without the query: `route`; its body as JSON: `body_json`).
pub(super) fn route(s: &mut State, r: &Request, route: &str, body_json: &Value) -> Reply {
    match (r.method.as_str(), route) {
        ("POST", "/v3/order/gtt/place") => match upstox_gtt(body_json, None) {
            Ok(mut g) => {
                if !s.tradable.is_empty() && !s.tradable.contains(&g.symbol) {
                    return refusal(Flavor::Upstox, "Invalid instrument key");
                }
                s.gtt_seq += 1;
                g.id = 100_000 + s.gtt_seq;
                g.created_at = s.clock.clone().unwrap_or_else(ist_now);
                let key = gtt_key(Flavor::Upstox, g.id);
                s.gtts.push(g);
                (
                    200,
                    json!({ "status": "success", "data": { "gtt_order_ids": [key] }, "metadata": { "latency": 31 } }),
                    None,
                )
            }
            Err(m) => refusal(Flavor::Upstox, &m),
        },
        ("PUT", "/v3/order/gtt/modify") => {
            fire_gtts(s);
            let key = body_json["gtt_order_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let Some(at) = s
                .gtts
                .iter()
                .position(|g| gtt_key(Flavor::Upstox, g.id) == key)
            else {
                return refusal(Flavor::Upstox, "Invalid GTT order id");
            };
            if s.gtts[at].status != "active" {
                return refusal(
                    Flavor::Upstox,
                    "GTT order cannot be modified: it is not active",
                );
            }
            match upstox_gtt(body_json, Some(&s.gtts[at])) {
                Ok(new) => {
                    let id = s.gtts[at].id;
                    let g = &mut s.gtts[at];
                    (g.trigger, g.last_price, g.qty) = (new.trigger, new.last_price, new.qty);
                    s.gtt_modifications.push((id, new.trigger));
                    (
                        200,
                        json!({ "status": "success", "data": { "gtt_order_ids": [key] }, "metadata": { "latency": 28 } }),
                        None,
                    )
                }
                Err(m) => refusal(Flavor::Upstox, &m),
            }
        }
        ("DELETE", "/v3/order/gtt/cancel") => {
            fire_gtts(s);
            let key = body_json["gtt_order_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            match s
                .gtts
                .iter_mut()
                .find(|g| gtt_key(Flavor::Upstox, g.id) == key)
            {
                Some(g) if g.status == "active" => {
                    g.status = "cancelled".into();
                    (
                        200,
                        json!({ "status": "success", "data": { "gtt_order_ids": [key] }, "metadata": { "latency": 22 } }),
                        None,
                    )
                }
                Some(_) => refusal(
                    Flavor::Upstox,
                    "GTT order cannot be cancelled: it is not active",
                ),
                None => refusal(Flavor::Upstox, "Invalid GTT order id"),
            }
        }
        ("GET", "/v3/order/gtt") => {
            fire_gtts(s);
            // "The Get GTT API does not support retrieving completed GTT orders."
            let shown: Vec<Value> = s
                .gtts
                .iter()
                .filter(|g| !gtt_completed(s, g))
                .map(|g| upstox_gtt_json(s, g))
                .collect();
            match query(&r.path, "gtt_order_id") {
                Some(key) => match shown
                    .into_iter()
                    .find(|g| g["gtt_order_id"] == key.as_str())
                {
                    Some(g) => ok_kite(json!([g])),
                    None => refusal(Flavor::Upstox, "GTT order not found"),
                },
                None => ok_kite(Value::Array(shown)),
            }
        }
        // OpenAlgo's GTTs: SINGLE triggers, the trigger below the market in `triggerprice_sl`
        // or above it in `triggerprice_tg`; the GTT book lists only active ones.
        ("GET", "/v2/portfolio/short-term-positions") => {
            let rows: Vec<Value> = net_positions(s)
                .into_iter()
                .map(|(token, q)| {
                    let symbol = s.symbols.get(&token).cloned().unwrap_or_else(|| token.clone());
                    json!({ "trading_symbol": symbol, "instrument_token": token, "exchange": "NSE", "product": "I", "quantity": q.to_string().parse::<i64>().unwrap_or(0), "average_price": net_average(s, &token, q), "pnl": 0.0 })
                })
                .collect();
            ok_kite(Value::Array(rows))
        }
        // Upstox's documented answer carries the address under both spellings.
        ("GET", "/v3/feed/market-data-feed/authorize") => match &s.feed_url {
            Some(url) => {
                ok_kite(json!({ "authorized_redirect_uri": url, "authorizedRedirectUri": url }))
            }
            None => (
                500,
                json!({ "status": "error", "errors": [{ "errorCode": "UDAPI100500", "message": "feed unavailable" }] }),
                None,
            ),
        },
        ("GET", "/v2/feed/portfolio-stream-feed/authorize") => {
            match (&s.portfolio_url, query(&r.path, "update_types")) {
                (Some(url), Some(_)) => {
                    ok_kite(json!({ "authorized_redirect_uri": url, "authorizedRedirectUri": url }))
                }
                (_, None) => (
                    400,
                    json!({ "status": "error", "errors": [{ "errorCode": "UDAPI1154", "message": "update_types is required" }] }),
                    None,
                ),
                (None, _) => (
                    500,
                    json!({ "status": "error", "errors": [{ "errorCode": "UDAPI100500", "message": "stream unavailable" }] }),
                    None,
                ),
            }
        }
        ("GET", p) if p.starts_with("/v3/historical-candle/intraday/") => {
            // `/v3/historical-candle/intraday/:instrument_key/:unit/:interval`, today's candles, newest first.
            let parts: Vec<String> = p
                .trim_start_matches("/v3/historical-candle/intraday/")
                .split('/')
                .map(decode)
                .collect();
            match parts.as_slice() {
                [key, unit, interval]
                    if unit == "minutes"
                        && interval
                            .parse::<u32>()
                            .is_ok_and(|i| (1..=300).contains(&i)) =>
                {
                    let mut rows = s.candles.get(key).cloned().unwrap_or_default();
                    rows.reverse();
                    ok_kite(json!({ "candles": rows }))
                }
                _ => (
                    400,
                    json!({ "status": "error", "errors": [{ "errorCode": "UDAPI1148", "message": "Invalid unit or interval" }] }),
                    None,
                ),
            }
        }
        ("GET", "/v2/option/contract") => ok_kite(Value::Array(s.option_contracts.clone())),
        ("GET", "/v2/option/chain") => match query(&r.path, "expiry_date") {
            Some(e) => ok_kite(Value::Array(
                s.option_chain.get(&e).cloned().unwrap_or_default(),
            )),
            None => (
                400,
                json!({ "status": "error", "errors": [{ "errorCode": "UDAPI1088", "message": "expiry_date is required" }] }),
                None,
            ),
        },
        ("GET", "/v2/user/profile") => ok_kite(
            json!({ "user_id": "UP1234", "user_name": "Test Trader", "broker": "UPSTOX", "is_active": true }),
        ),
        ("POST", "/v3/order/place") => {
            let b = body_json;
            for k in [
                "quantity",
                "product",
                "validity",
                "price",
                "instrument_token",
                "order_type",
                "transaction_type",
                "disclosed_quantity",
                "trigger_price",
                "is_amo",
            ] {
                if b.get(k).is_none() {
                    return refusal(Flavor::Upstox, &format!("{k} is required"));
                }
            }
            // Upstox's documented types: numbers as JSON numbers, booleans as booleans, enums exact.
            let typed = b["quantity"].as_u64().is_some_and(|q| q > 0)
                && b["price"].is_number()
                && b["disclosed_quantity"].is_number()
                && b["trigger_price"].is_number()
                && b["is_amo"].is_boolean()
                && b.get("slice").is_none_or(Value::is_boolean)
                && b.get("tag").is_none_or(Value::is_string)
                && b["instrument_token"].is_string();
            if !typed {
                return refusal(Flavor::Upstox, "Invalid input: a field has the wrong type");
            }
            for (k, allowed) in [
                ("product", &["I", "D", "MTF"][..]),
                ("validity", &["DAY", "IOC"][..]),
                ("order_type", &["MARKET", "LIMIT", "SL", "SL-M"][..]),
                ("transaction_type", &["BUY", "SELL"][..]),
            ] {
                if !b[k].as_str().is_some_and(|v| allowed.contains(&v)) {
                    return refusal(Flavor::Upstox, &format!("Invalid {k}"));
                }
            }
            if b["order_type"] == "LIMIT" && b["price"].as_f64().is_none_or(|p| p <= 0.0) {
                return refusal(Flavor::Upstox, "Price is required for a limit order");
            }
            let token = b["instrument_token"].as_str().unwrap_or_default();
            if b["order_type"] == "SL-M"
                && (is_option(token) || s.symbols.get(token).is_some_and(|sym| is_option(sym)))
            {
                return refusal(Flavor::Upstox, UPSTOX_SL_M_BLOCKED);
            }
            if !s.tradable.is_empty()
                && !b["instrument_token"]
                    .as_str()
                    .is_some_and(|t| s.tradable.iter().any(|x| x == t))
            {
                return refusal(Flavor::Upstox, "Invalid instrument key");
            }
            let fields: HashMap<String, String> = b
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| {
                            (
                                k.clone(),
                                v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let symbol = fields["instrument_token"].clone();
            let qty = fields["quantity"].clone();
            let side = fields["transaction_type"].clone();
            place(
                s,
                fields,
                b["tag"].as_str().map(str::to_owned),
                &symbol,
                &side,
                &qty,
                |id| json!({ "status": "success", "data": { "order_ids": [id] }, "metadata": { "latency": 12 } }),
            )
        }
        ("GET", "/v2/order/details") => {
            match query(&r.path, "order_id").and_then(|id| poll(s, &id)) {
                Some(o) => ok_kite(upstox_order(&o)),
                None => refusal(Flavor::Upstox, "Order not found"),
            }
        }
        ("GET", "/v2/order/retrieve-all") => {
            ok_kite(Value::Array(book(s).iter().map(upstox_order).collect()))
        }
        ("DELETE", "/v3/order/cancel") => {
            let id = query(&r.path, "order_id").unwrap_or_default();
            cancel(
                s,
                &id,
                |id| json!({ "status": "success", "data": { "order_ids": [id] }, "metadata": { "latency": 9 } }),
            )
        }
        // Modifying a working order: its new terms replace the old ones.
        ("PUT", "/v3/order/modify") => {
            let b = body_json.clone();
            let Some(id) = b["order_id"].as_str().map(str::to_owned) else {
                return refusal(Flavor::Upstox, "order_id is required");
            };
            for (k, number) in [
                ("quantity", true),
                ("price", true),
                ("trigger_price", true),
                ("validity", false),
                ("order_type", false),
            ] {
                if b.get(k).is_some_and(|v| {
                    if number {
                        !v.is_number()
                    } else {
                        !v.is_string()
                    }
                }) {
                    return refusal(Flavor::Upstox, &format!("{k} has the wrong type"));
                }
            }
            let fields: HashMap<String, String> = b
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| {
                            (
                                k.clone(),
                                v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            modify(
                s,
                &id,
                fields,
                |id| json!({ "status": "success", "data": { "order_ids": [id] }, "metadata": { "latency": 10 } }),
            )
        }
        ("POST", "/v2/charges/margin") => {
            let items = body_json["instruments"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if items.is_empty() || items.len() > 20 {
                return refusal(Flavor::Upstox, "instruments: 1 to 20 allowed");
            }
            let mut total = Decimal::ZERO;
            let mut margins = Vec::new();
            for i in &items {
                let (Some(_), Some(qty), Some(_), Some(_)) = (
                    i["instrument_key"].as_str(),
                    i["quantity"].as_u64(),
                    i["transaction_type"].as_str(),
                    i["product"].as_str(),
                ) else {
                    return refusal(
                        Flavor::Upstox,
                        "instrument_key, quantity, transaction_type and product are required",
                    );
                };
                let m = s.margin_per_unit * Decimal::from(qty);
                total += m;
                let m = m.to_string().parse::<f64>().unwrap_or(0.0);
                margins.push(json!({ "span_margin": m, "exposure_margin": 0, "equity_margin": 0, "net_buy_premium": 0, "additional_margin": 0, "total_margin": m, "tender_margin": 0 }));
            }
            let sides: Vec<&str> = items
                .iter()
                .filter_map(|i| i["transaction_type"].as_str())
                .collect();
            let final_margin = hedged(s, total, &sides)
                .to_string()
                .parse::<f64>()
                .unwrap_or(0.0);
            let total = total.to_string().parse::<f64>().unwrap_or(0.0);
            ok_kite(
                json!({ "margins": margins, "required_margin": total, "final_margin": final_margin }),
            )
        }
        ("GET", "/v2/user/get-funds-and-margin") => {
            let free = s.funds.to_string().parse::<f64>().unwrap_or(0.0);
            ok_kite(
                json!({ "equity": { "used_margin": 0, "payin_amount": 0, "span_margin": 0, "adhoc_margin": 0, "notional_cash": 0, "available_margin": free, "exposure_margin": 0 } }),
            )
        }
        _ => not_found(r),
    }
}

/// Upstox's order (`GET /v2/order/details`, `/v2/order/retrieve-all`).
fn upstox_order(o: &MockOrder) -> Value {
    json!({
        "order_id": o.id, "status": o.status.to_ascii_lowercase(), "tag": o.tag, "instrument_token": o.symbol,
        "trading_symbol": o.symbol, "transaction_type": o.side, "order_type": o.fields.get("order_type"),
        "quantity": whole(o.qty), "filled_quantity": whole(o.filled), "pending_quantity": if o.status == "OPEN" { whole(o.qty - o.filled) } else { 0 },
        "average_price": float(o.average_price), "price": o.fields.get("price").and_then(|p| p.parse::<f64>().ok()).unwrap_or(0.0),
        "status_message": if o.message.is_empty() { Value::Null } else { Value::String(o.message.clone()) },
        "validity": "DAY", "product": o.fields.get("product"), "order_timestamp": o.placed_at, "is_amo": false,
    })
}

/// A single-leg GTT from Upstox's place or modify body, checked as Upstox documents it:
/// `type` SINGLE, a whole `quantity`, one `ENTRY` rule `ABOVE` or `BELOW` a positive
/// `trigger_price`; placing also takes `product` (I or D), `instrument_token` and
/// `transaction_type`. Its market fires when the last price crosses the trigger that way.
fn upstox_gtt(b: &Value, was: Option<&MockGtt>) -> Result<MockGtt, String> {
    if b["type"] != "SINGLE" {
        return Err("Invalid type: only SINGLE is taken here".into());
    }
    let qty = b["quantity"]
        .as_u64()
        .filter(|q| *q > 0)
        .map(Decimal::from)
        .ok_or("Invalid quantity")?;
    let rules = b["rules"]
        .as_array()
        .filter(|r| r.len() == 1)
        .ok_or("A SINGLE GTT takes one rule")?;
    let rule = &rules[0];
    if rule["strategy"] != "ENTRY" {
        return Err("Invalid strategy: a SINGLE GTT's rule is its ENTRY".into());
    }
    let trigger = rule["trigger_price"]
        .as_f64()
        .filter(|p| *p > 0.0)
        .and_then(|p| Decimal::from_str_exact(&p.to_string()).ok())
        .ok_or("Invalid trigger_price")?;
    let last_price = match rule["trigger_type"].as_str() {
        Some("BELOW") => trigger + Decimal::ONE,
        Some("ABOVE") => (trigger - Decimal::ONE).max(Decimal::new(5, 2)),
        _ => return Err("Invalid trigger_type".into()),
    };
    let (symbol, side) = match was {
        Some(g) => (g.symbol.clone(), g.side.clone()),
        None => {
            if !b["product"].as_str().is_some_and(|p| p == "I" || p == "D") {
                return Err("Invalid product".into());
            }
            let side = b["transaction_type"]
                .as_str()
                .filter(|t| *t == "BUY" || *t == "SELL")
                .ok_or("Invalid transaction_type")?;
            (
                b["instrument_token"]
                    .as_str()
                    .ok_or("instrument_token is required")?
                    .to_owned(),
                side.to_owned(),
            )
        }
    };
    Ok(MockGtt {
        id: 0,
        status: "active".into(),
        symbol,
        side,
        qty,
        trigger,
        limit: Decimal::ZERO,
        last_price,
        created_at: String::new(),
        order_id: None,
    })
}

/// A GTT as Upstox's `GET /v3/order/gtt` writes it (times in microseconds).
fn upstox_gtt_json(s: &State, g: &MockGtt) -> Value {
    let status = match (g.status.as_str(), &g.order_id) {
        ("active", _) => "SCHEDULED",
        ("cancelled", _) => "CANCELLED",
        (_, Some(id))
            if s.orders
                .iter()
                .any(|o| &o.id == id && o.status == "COMPLETE") =>
        {
            "COMPLETED"
        }
        _ => "TRIGGERED",
    };
    let created = tradehost::brokers::ist_timestamp(&g.created_at).unwrap_or(0) * 1_000;
    json!({
        "type": "SINGLE", "exchange": "NSE_EQ", "quantity": whole(g.qty), "product": "D",
        "rules": [{ "strategy": "ENTRY", "status": status, "message": null, "trigger_type": if g.last_price > g.trigger { "BELOW" } else { "ABOVE" },
                    "trigger_price": g.trigger.to_string().parse::<f64>().unwrap_or(0.0), "transaction_type": g.side, "order_id": g.order_id }],
        "trading_symbol": g.symbol, "instrument_token": g.symbol, "gtt_order_id": gtt_key(Flavor::Upstox, g.id),
        "expires_at": created + 365 * 86_400_000_000, "created_at": created,
    })
}

/// Whether the order a triggered GTT placed is complete (Upstox then stops returning the GTT).
fn gtt_completed(s: &State, g: &MockGtt) -> bool {
    g.order_id.as_ref().is_some_and(|id| {
        s.orders
            .iter()
            .any(|o| &o.id == id && o.status == "COMPLETE")
    })
}

/// One row of Upstox's option chain (`GET /v2/option/chain`) as its documentation shows it.
#[must_use]
pub fn upstox_chain_row(
    expiry: &str,
    strike: f64,
    spot: f64,
    ce: (f64, f64),
    pe: (f64, f64),
) -> Value {
    let side = |key: &str, (ltp, oi): (f64, f64)| {
        json!({
            "instrument_key": key,
            "market_data": { "ltp": ltp, "volume": 1200, "oi": oi, "close_price": ltp, "bid_price": ltp - 0.05, "bid_qty": 75, "ask_price": ltp + 0.05, "ask_qty": 75, "prev_oi": oi },
            "option_greeks": { "vega": 10.2, "theta": -5.1, "gamma": 0.001, "delta": 0.5, "iv": 14.3, "pop": 50.0 }
        })
    };
    json!({
        "expiry": expiry, "pcr": 1.1, "strike_price": strike, "underlying_key": "NSE_INDEX|Nifty 50", "underlying_spot_price": spot,
        "call_options": side(&format!("NSE_FO|{}", strike as u64 * 10 + 1), ce),
        "put_options": side(&format!("NSE_FO|{}", strike as u64 * 10 + 2), pe),
    })
}

/// Two strikes of a NIFTY chain expiring `expiry` around a spot of 21,712.5, as Upstox's
/// `/v2/option/chain` answers: 21,700 (CE 110.2, OI 60,000; PE 96, OI 70,000) and 21,800
/// (CE 55, OI 90,000; PE 140.35, OI 40,000), each side with Upstox's greeks.
#[must_use]
pub fn upstox_nifty_rows(expiry: &str) -> Vec<Value> {
    vec![
        upstox_chain_row(
            expiry,
            21_800.0,
            21_712.5,
            (55.0, 90_000.0),
            (140.35, 40_000.0),
        ),
        upstox_chain_row(
            expiry,
            21_700.0,
            21_712.5,
            (110.2, 60_000.0),
            (96.0, 70_000.0),
        ),
    ]
}
