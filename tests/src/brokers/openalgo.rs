//! The local OpenAlgo server's routes: OpenAlgo REST API v1, as documented at docs.openalgo.in: JSON bodies carrying the
//! `apikey`, `{status, data}` answers.

use super::*;

/// Answer `r` (its path without the query: `route`; its body as JSON: `body_json`).
pub(super) fn route(s: &mut State, r: &Request, route: &str, body_json: &Value) -> Reply {
    match (r.method.as_str(), route) {
        ("POST", "/api/v1/placegttorder") => match openalgo_gtt(
            body_json,
            s.ltp
                .get(body_json["symbol"].as_str().unwrap_or_default())
                .copied(),
        ) {
            Ok(mut g) => {
                s.gtt_seq += 1;
                g.id = 100_000 + s.gtt_seq;
                g.created_at = s.clock.clone().unwrap_or_else(ist_now);
                let key = gtt_key(Flavor::OpenAlgo, g.id);
                s.gtts.push(g);
                (200, json!({ "status": "success", "trigger_id": key }), None)
            }
            Err(m) => refusal(Flavor::OpenAlgo, &m),
        },
        ("POST", "/api/v1/modifygttorder") => {
            fire_gtts(s);
            let key = text_of(&body_json["trigger_id"]);
            let Some(at) = s
                .gtts
                .iter()
                .position(|g| gtt_key(Flavor::OpenAlgo, g.id) == key && g.status == "active")
            else {
                return refusal(Flavor::OpenAlgo, "GTT trigger not found or not active");
            };
            match openalgo_gtt(body_json, s.ltp.get(&s.gtts[at].symbol).copied()) {
                Ok(new) => {
                    let id = s.gtts[at].id;
                    let g = &mut s.gtts[at];
                    (g.trigger, g.limit, g.last_price, g.qty) =
                        (new.trigger, new.limit, new.last_price, new.qty);
                    s.gtt_modifications.push((id, new.trigger));
                    (200, json!({ "status": "success", "trigger_id": key }), None)
                }
                Err(m) => refusal(Flavor::OpenAlgo, &m),
            }
        }
        ("POST", "/api/v1/cancelgttorder") => {
            fire_gtts(s);
            let key = text_of(&body_json["trigger_id"]);
            match s
                .gtts
                .iter_mut()
                .find(|g| gtt_key(Flavor::OpenAlgo, g.id) == key && g.status == "active")
            {
                Some(g) => {
                    g.status = "deleted".into();
                    (200, json!({ "status": "success", "trigger_id": key }), None)
                }
                None => refusal(Flavor::OpenAlgo, "GTT trigger not found or not active"),
            }
        }
        ("POST", "/api/v1/gttorderbook") => {
            fire_gtts(s);
            let num = |d: Decimal| d.to_string().parse::<f64>().unwrap_or(0.0);
            let active: Vec<Value> = s
                .gtts
                .iter()
                .filter(|g| g.status == "active")
                .map(|g| {
                    let (pricetype, price) = if g.limit.is_zero() { ("MARKET", 0.0) } else { ("LIMIT", num(g.limit)) };
                    json!({
                        "trigger_id": gtt_key(Flavor::OpenAlgo, g.id), "trigger_type": "single", "status": "active", "symbol": g.symbol, "exchange": "NSE",
                        "trigger_prices": [num(g.trigger)], "last_price": num(g.last_price),
                        "legs": [{ "action": g.side, "quantity": whole(g.qty), "price": price, "pricetype": pricetype, "product": "CNC" }],
                        "created_at": g.created_at, "updated_at": "", "expires_at": "",
                    })
                })
                .collect();
            (200, json!({ "status": "success", "data": active }), None)
        }
        ("POST", "/api/v1/expiry") => match (
            body_json["symbol"].as_str(),
            body_json["exchange"].as_str(),
            body_json["instrumenttype"].as_str(),
        ) {
            (Some(symbol), Some("NFO" | "BFO"), Some("options" | "futures")) => (
                200,
                json!({ "status": "success", "message": format!("Found {} expiry dates for {symbol} options in NFO", s.expiries.len()), "data": s.expiries }),
                None,
            ),
            _ => (
                400,
                json!({ "status": "error", "message": "symbol, exchange (NFO/BFO) and instrumenttype (options/futures) are required" }),
                None,
            ),
        },
        ("POST", "/api/v1/optionchain") => match (
            body_json["underlying"].as_str(),
            body_json["exchange"].as_str(),
            body_json["expiry_date"].as_str(),
        ) {
            (Some(underlying), Some("NSE_INDEX" | "NSE" | "BSE_INDEX" | "BSE"), Some(expiry)) => {
                match s.option_chain.get(expiry) {
                    Some(chain) => (
                        200,
                        json!({ "status": "success", "underlying": underlying, "underlying_ltp": s.underlying_ltp, "expiry_date": expiry, "chain": chain }),
                        None,
                    ),
                    None => (
                        400,
                        json!({ "status": "error", "message": format!("No option contracts for {underlying} expiring {expiry}") }),
                        None,
                    ),
                }
            }
            _ => (
                400,
                json!({ "status": "error", "message": "underlying, exchange and expiry_date (DDMMMYY) are required" }),
                None,
            ),
        },
        ("POST", "/api/v1/history") => {
            let field = |k: &str| body_json[k].as_str().map(str::to_owned);
            let valid_date = |d: &Option<String>| {
                d.as_ref().is_some_and(|d| {
                    d.len() == 10 && d.as_bytes()[4] == b'-' && d.as_bytes()[7] == b'-'
                })
            };
            let (start, end) = (field("start_date"), field("end_date"));
            match (field("symbol"), field("exchange"), field("interval")) {
                (Some(symbol), Some(exchange), Some(interval))
                    if valid_date(&start)
                        && valid_date(&end)
                        && ["1m", "3m", "5m", "10m", "15m", "30m", "1h", "D"]
                            .contains(&interval.as_str()) =>
                {
                    let (start, end) = (start.unwrap_or_default(), end.unwrap_or_default());
                    let rows: Vec<Value> = s
                        .candles
                        .get(&format!("{exchange}:{symbol}"))
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|r| {
                            r["timestamp"]
                                .as_str()
                                .and_then(|t| t.get(0..10))
                                .is_some_and(|d| d >= start.as_str() && d <= end.as_str())
                        })
                        .collect();
                    (200, json!({ "status": "success", "data": rows }), None)
                }
                _ => (
                    400,
                    json!({ "status": "error", "message": "symbol, exchange, interval, start_date and end_date (YYYY-MM-DD) are required" }),
                    None,
                ),
            }
        }
        ("POST", "/api/v1/modifyorder") => {
            let b = body_json.clone();
            for k in [
                "strategy",
                "orderid",
                "symbol",
                "action",
                "exchange",
                "pricetype",
                "product",
                "quantity",
                "price",
            ] {
                if b.get(k).is_none() {
                    return refusal(
                        Flavor::OpenAlgo,
                        &format!("Missing mandatory field(s): {k}"),
                    );
                }
            }
            let id = b["orderid"]
                .as_str()
                .map_or_else(|| b["orderid"].to_string(), str::to_owned);
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
                |id| json!({ "status": "success", "orderid": id }),
            )
        }
        // The margin calculators and funds, in each API's documented shape.
        ("POST", "/api/v1/margin") => {
            let positions = body_json["positions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if positions.is_empty() {
                return refusal(Flavor::OpenAlgo, "positions: at least one is required");
            }
            let mut total = Decimal::ZERO;
            for p in &positions {
                for k in [
                    "symbol",
                    "exchange",
                    "action",
                    "quantity",
                    "product",
                    "pricetype",
                ] {
                    if p.get(k).is_none() {
                        return refusal(
                            Flavor::OpenAlgo,
                            &format!("Missing mandatory field(s): {k}"),
                        );
                    }
                }
                let Some(qty) = p["quantity"].as_str().and_then(|q| q.parse::<u64>().ok()) else {
                    return refusal(Flavor::OpenAlgo, "quantity must be a whole number");
                };
                total += s.margin_per_unit * Decimal::from(qty);
            }
            let sides: Vec<&str> = positions
                .iter()
                .filter_map(|p| p["action"].as_str())
                .collect();
            let total = hedged(s, total, &sides).to_string();
            (
                200,
                json!({ "status": "success", "data": { "total_margin_required": total, "span_margin": total, "exposure_margin": "0" } }),
                None,
            )
        }
        ("POST", "/api/v1/funds") => {
            let free = s.funds.to_string();
            (
                200,
                json!({ "status": "success", "data": { "availablecash": free, "collateral": "0.00", "m2mrealized": "0.00", "m2munrealized": "0.00", "utiliseddebits": "0.00" } }),
                None,
            )
        }
        ("POST", "/api/v1/ping") => (
            200,
            json!({ "status": "success", "data": { "message": "pong", "broker": "zerodha" } }),
            None,
        ),
        ("POST", "/api/v1/placeorder" | "/api/v1/placesmartorder") => {
            let b = body_json;
            for k in [
                "strategy",
                "symbol",
                "action",
                "exchange",
                "pricetype",
                "product",
                "quantity",
            ] {
                if b.get(k).is_none() {
                    return refusal(
                        Flavor::OpenAlgo,
                        &format!("Missing mandatory field(s): {k}"),
                    );
                }
            }
            // OpenAlgo's schema: enums exact; numbers as numbers or numeric strings.
            for (k, allowed) in [
                ("action", &["BUY", "SELL"][..]),
                (
                    "exchange",
                    &["NSE", "NFO", "BSE", "BFO", "CDS", "BCD", "MCX"][..],
                ),
                ("pricetype", &["MARKET", "LIMIT", "SL", "SL-M"][..]),
                ("product", &["MIS", "CNC", "NRML"][..]),
            ] {
                if !b[k].as_str().is_some_and(|v| allowed.contains(&v)) {
                    return refusal(
                        Flavor::OpenAlgo,
                        &format!(
                            "Validation error: {{'{k}': ['Must be one of: {}.']}}",
                            allowed.join(", ")
                        ),
                    );
                }
            }
            let numeric = |v: &Value| {
                v.is_null()
                    || v.as_f64().is_some()
                    || v.as_str().is_some_and(|t| t.trim().parse::<f64>().is_ok())
            };
            let quantity = b["quantity"].as_u64().or_else(|| {
                b["quantity"]
                    .as_str()
                    .and_then(|q| q.trim().parse::<u64>().ok())
            });
            if quantity.is_none_or(|q| q == 0)
                || !numeric(&b["price"])
                || !numeric(&b["trigger_price"])
            {
                return refusal(
                    Flavor::OpenAlgo,
                    "Validation error: {'quantity': ['Not a valid integer.']}",
                );
            }
            if b["pricetype"] == "SL-M"
                && b["exchange"] == "NFO"
                && b["symbol"].as_str().is_some_and(is_option)
            {
                // OpenAlgo relays the broker's refusal (here Zerodha's) with its status.
                return refusal(Flavor::OpenAlgo, SL_M_BLOCKED);
            }
            if b["pricetype"] == "LIMIT"
                && b["price"]
                    .as_str()
                    .and_then(|p| p.parse::<f64>().ok())
                    .or(b["price"].as_f64())
                    .is_none_or(|p| p <= 0.0)
            {
                return refusal(Flavor::OpenAlgo, "Price is required for LIMIT orders");
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
            let (symbol, side, qty) = (
                fields["symbol"].clone(),
                fields["action"].clone(),
                fields["quantity"].clone(),
            );
            place(
                s,
                fields,
                None,
                &symbol,
                &side,
                &qty,
                |id| json!({ "status": "success", "orderid": id }),
            )
        }
        ("POST", "/api/v1/orderstatus") => {
            match body_json["orderid"].as_str().and_then(|id| poll(s, id)) {
                Some(o) => {
                    // OpenAlgo's `orderstatus_service.py`: a complete order's average price is the
                    // first matching tradebook row's; anything else reports 0.0.
                    let mut data = openalgo_order(&o);
                    data["average_price"] = json!(if o.status == "COMPLETE" {
                        float(o.trades_or_fill().first().map(|t| t.1))
                    } else {
                        0.0
                    });
                    (200, json!({ "status": "success", "data": data }), None)
                }
                None => refusal(Flavor::OpenAlgo, "Order not found"),
            }
        }
        ("POST", "/api/v1/orderbook") => {
            let orders: Vec<Value> = book(s).iter().map(openalgo_order).collect();
            let count = |st: &str| {
                s.orders
                    .iter()
                    .filter(|o| o.status.eq_ignore_ascii_case(st))
                    .count() as f64
            };
            let stats = json!({ "total_buy_orders": s.orders.iter().filter(|o| o.side == "BUY").count() as f64, "total_sell_orders": s.orders.iter().filter(|o| o.side == "SELL").count() as f64, "total_completed_orders": count("COMPLETE"), "total_open_orders": count("OPEN"), "total_rejected_orders": count("REJECTED") });
            (
                200,
                json!({ "status": "success", "data": { "orders": orders, "statistics": stats } }),
                None,
            )
        }
        ("POST", "/api/v1/cancelorder") => {
            let id = body_json["orderid"].as_str().unwrap_or_default().to_owned();
            cancel(s, &id, |id| json!({ "status": "success", "orderid": id }))
        }
        // One row per trade (OpenAlgo's tradebook over Zerodha's: `average_price` is the
        // trade's price); its order status carries no filled quantity.
        ("POST", "/api/v1/tradebook") => {
            let data: Vec<Value> = s
                .orders
                .iter()
                .flat_map(|o| o.trades_or_fill().into_iter().map(move |t| (o, t)))
                .map(|(o, (q, p))| {
                    let avg = p.to_string().parse::<f64>().unwrap_or(0.0);
                    let qty = q.to_string().parse::<f64>().unwrap_or(0.0);
                    json!({ "action": o.side, "average_price": avg, "exchange": o.fields.get("exchange"), "orderid": o.id, "product": o.fields.get("product"),
                        "quantity": qty, "symbol": o.symbol, "timestamp": o.placed_at.split(' ').nth(1).unwrap_or_default(), "trade_value": avg * qty })
                })
                .collect();
            (200, json!({ "status": "success", "data": data }), None)
        }
        ("POST", "/api/v1/positionbook") => {
            let data: Vec<Value> = net_positions(s).into_iter().map(|(sym, q)| {
                let (avg, ltp) = (net_average(s, &sym, q), s.ltp.get(&sym).map_or(0.0, |p| p.to_string().parse::<f64>().unwrap_or(0.0)));
                json!({ "symbol": sym, "exchange": "NSE", "product": "MIS", "quantity": q.to_string(), "average_price": format!("{avg:.2}"), "ltp": format!("{ltp:.2}"), "pnl": "0.00" })
            }).collect();
            (200, json!({ "status": "success", "data": data }), None)
        }
        _ => not_found(r),
    }
}

/// OpenAlgo's order (`orderstatus`, `orderbook` rows): quantity a string, prices numbers,
/// the time as `08-Apr-2025 13:58:03`, and no filled quantity (that is in the tradebook).
fn openalgo_order(o: &MockOrder) -> Value {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (date, time) = o
        .placed_at
        .split_once(' ')
        .unwrap_or(("1970-01-01", "00:00:00"));
    let parts: Vec<&str> = date.split('-').collect();
    let month = parts
        .get(1)
        .and_then(|m| m.parse::<usize>().ok())
        .and_then(|m| MONTHS.get(m.wrapping_sub(1)))
        .copied()
        .unwrap_or("Jan");
    let stamp = format!(
        "{}-{month}-{} {time}",
        parts.get(2).copied().unwrap_or("01"),
        parts.first().copied().unwrap_or("1970")
    );
    json!({
        "action": o.side, "symbol": o.symbol, "exchange": o.fields.get("exchange"), "orderid": o.id,
        "product": o.fields.get("product"), "quantity": o.qty.to_string(),
        "price": o.fields.get("price").and_then(|p| p.parse::<f64>().ok()).unwrap_or(0.0),
        "pricetype": o.fields.get("pricetype"), "order_status": o.status.to_ascii_lowercase(), "trigger_price": 0.0,
        "average_price": float(o.average_price), "timestamp": stamp,
    })
}

/// A SINGLE GTT from OpenAlgo's place or modify body, checked as its documentation says:
/// CNC or NRML (never MIS), a positive whole quantity, exactly one of `triggerprice_sl`
/// (below the last price) and `triggerprice_tg` (above it), `price` the limit (0 at the market).
fn openalgo_gtt(b: &Value, ltp: Option<Decimal>) -> Result<MockGtt, String> {
    let dec = |v: &Value| {
        v.as_f64()
            .or_else(|| v.as_str().and_then(|t| t.parse().ok()))
            .and_then(|x| Decimal::from_str_exact(&x.to_string()).ok())
            .unwrap_or_default()
    };
    for k in [
        "strategy",
        "trigger_type",
        "exchange",
        "symbol",
        "action",
        "product",
        "quantity",
        "price",
    ] {
        if b.get(k).is_none_or(Value::is_null) {
            return Err(format!("{k}: Missing data for required field."));
        }
    }
    if b["trigger_type"] != "SINGLE" {
        return Err("trigger_type: only SINGLE is taken here".into());
    }
    if !b["product"]
        .as_str()
        .is_some_and(|p| p == "CNC" || p == "NRML")
    {
        return Err(
            "GTT supports only CNC (delivery) or NRML (overnight F&O); MIS is intraday-only."
                .into(),
        );
    }
    let qty = dec(&b["quantity"]);
    if qty <= Decimal::ZERO {
        return Err("Quantity must be a positive number".into());
    }
    if !qty.fract().is_zero() {
        return Err("Fractional quantity is not allowed for non-crypto exchanges".into());
    }
    let side = b["action"]
        .as_str()
        .filter(|t| *t == "BUY" || *t == "SELL")
        .ok_or("action: must be BUY or SELL")?;
    let (sl, tg) = (dec(&b["triggerprice_sl"]), dec(&b["triggerprice_tg"]));
    let (trigger, below) = match (sl > Decimal::ZERO, tg > Decimal::ZERO) {
        (true, false) => (sl, true),
        (false, true) => (tg, false),
        _ => return Err(
            "triggerprice_sl: SINGLE GTT requires a positive triggerprice_sl or triggerprice_tg"
                .into(),
        ),
    };
    if let Some(last) = ltp {
        if below && trigger >= last {
            return Err("triggerprice_sl: the trigger must sit below the last price".into());
        }
        if !below && trigger <= last {
            return Err("triggerprice_tg: the trigger must sit above the last price".into());
        }
    }
    let limit = if b["pricetype"] == "LIMIT" {
        dec(&b["price"])
    } else {
        Decimal::ZERO
    };
    let last_price = ltp.unwrap_or(if below {
        trigger + Decimal::ONE
    } else {
        trigger - Decimal::ONE
    });
    Ok(MockGtt {
        id: 0,
        status: "active".into(),
        symbol: b["symbol"].as_str().unwrap_or_default().to_owned(),
        side: side.to_owned(),
        qty,
        trigger,
        limit,
        last_price,
        created_at: String::new(),
        order_id: None,
    })
}

/// A JSON string or number as text.
fn text_of(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

/// One strike of OpenAlgo's option chain (`/api/v1/optionchain`) as its documentation shows it.
#[must_use]
pub fn openalgo_chain_row(
    symbol_prefix: &str,
    strike: f64,
    ce: (f64, f64),
    pe: (f64, f64),
) -> Value {
    let side = |kind: &str, (ltp, oi): (f64, f64)| {
        json!({ "symbol": format!("{symbol_prefix}{}{kind}", strike as u64), "label": "ATM", "ltp": ltp, "bid": ltp - 0.05, "ask": ltp + 0.05,
            "open": ltp, "high": ltp, "low": ltp, "prev_close": ltp, "volume": 1_195_800, "oi": oi, "lotsize": 65, "tick_size": 0.05 })
    };
    json!({ "strike": strike, "ce": side("CE", ce), "pe": side("PE", pe) })
}
