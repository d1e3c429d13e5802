//! The local Kite server's routes: Zerodha Kite Connect v3, as documented at kite.trade/docs/connect/v3: form-encoded
//! requests, `token api_key:access_token` authorisation, `{status, data}` answers.

use super::*;

/// Answer `r` (its path without the query: `route`).
pub(super) fn route(s: &mut State, r: &Request, route: &str) -> Reply {
    match (r.method.as_str(), route) {
        ("GET", p) if p.starts_with("/instruments/historical/") => {
            // `/instruments/historical/:instrument_token/:interval?from=yyyy-mm-dd hh:mm:ss&to=…[&oi=1]`, both ends inclusive.
            let parts: Vec<&str> = p
                .trim_start_matches("/instruments/historical/")
                .split('/')
                .collect();
            let stamp = |k: &str| {
                query(&r.path, k).filter(|t| {
                    t.len() == 19 && t.as_bytes()[10] == b' ' && t.as_bytes()[4] == b'-'
                })
            };
            let (Some(from), Some(to)) = (stamp("from"), stamp("to")) else {
                return (
                    400,
                    json!({ "status": "error", "message": "from and to must be yyyy-mm-dd hh:mm:ss", "data": null, "error_type": "InputException" }),
                    None,
                );
            };
            let interval_ok = matches!(
                parts.get(1).copied(),
                Some(
                    "minute"
                        | "day"
                        | "3minute"
                        | "5minute"
                        | "10minute"
                        | "15minute"
                        | "30minute"
                        | "60minute"
                )
            );
            if parts.len() != 2 || !interval_ok || from > to {
                return (
                    400,
                    json!({ "status": "error", "message": "invalid interval or range", "data": null, "error_type": "InputException" }),
                    None,
                );
            }
            let with_oi = query(&r.path, "oi").as_deref() == Some("1");
            let rows: Vec<Value> = s
                .candles
                .get(parts[0])
                .map(|rows| {
                    rows.iter()
                        .filter(|row| {
                            row[0].as_str().is_some_and(|t| {
                                t.get(0..19)
                                    .map(|t| t.replace('T', " "))
                                    .is_some_and(|t| t >= from && t <= to)
                            })
                        })
                        .map(|row| {
                            if with_oi {
                                row.clone()
                            } else {
                                Value::Array(
                                    row.as_array()
                                        .map(|a| a[..6.min(a.len())].to_vec())
                                        .unwrap_or_default(),
                                )
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            ok_kite(json!({ "candles": rows }))
        }
        ("GET", "/quote") => {
            // `i=EXCHANGE:TRADINGSYMBOL`, repeated; at most 500 a call. Instruments without data are left out.
            let asked: Vec<String> = r
                .path
                .split_once('?')
                .map(|(_, q)| {
                    q.split('&')
                        .filter_map(|kv| kv.split_once('='))
                        .filter(|(k, _)| *k == "i")
                        .map(|(_, v)| decode(v))
                        .collect()
                })
                .unwrap_or_default();
            if asked.is_empty() || asked.len() > 500 || asked.iter().any(|i| !i.contains(':')) {
                return (
                    400,
                    json!({ "status": "error", "message": "Invalid or too many instruments (1 to 500 EXCHANGE:TRADINGSYMBOL)", "data": null, "error_type": "InputException" }),
                    None,
                );
            }
            let data: serde_json::Map<String, Value> = asked
                .iter()
                .filter_map(|i| Some((i.clone(), s.quotes.get(i)?.clone())))
                .collect();
            ok_kite(Value::Object(data))
        }
        ("GET", "/user/profile") => {
            ok_kite(json!({ "user_id": "AB1234", "user_name": "Test Trader", "broker": "ZERODHA" }))
        }
        ("POST", "/orders/regular") => {
            let f = form(&r.body);
            for k in [
                "tradingsymbol",
                "exchange",
                "transaction_type",
                "order_type",
                "quantity",
                "product",
                "validity",
            ] {
                if !f.contains_key(k) {
                    return refusal(Flavor::Kite, &format!("Missing {k}"));
                }
            }
            if f.get("tag").is_some_and(|t| t.len() > 20) {
                return refusal(
                    Flavor::Kite,
                    "Tag length should be less than 20 characters.",
                );
            }
            // Kite Connect's documented values; anything else is an InputException.
            for (k, allowed) in [
                (
                    "exchange",
                    &["NSE", "BSE", "NFO", "CDS", "BCD", "MCX", "BFO"][..],
                ),
                ("transaction_type", &["BUY", "SELL"][..]),
                ("order_type", &["MARKET", "LIMIT", "SL", "SL-M"][..]),
                ("product", &["CNC", "NRML", "MIS", "MTF"][..]),
                ("validity", &["DAY", "IOC", "TTL"][..]),
            ] {
                if !allowed.contains(&f[k].as_str()) {
                    return refusal(Flavor::Kite, &format!("Invalid `{k}`."));
                }
            }
            if f["quantity"].parse::<u64>().is_ok_and(|q| q == 0)
                || f["quantity"].parse::<u64>().is_err()
            {
                return refusal(Flavor::Kite, "Invalid `quantity`.");
            }
            if f.get("market_protection").is_some_and(|m| {
                m.parse::<i64>()
                    .map_or(true, |m| !(m == -1 || (0..=100).contains(&m)))
            }) {
                return refusal(Flavor::Kite, "Invalid `market_protection`.");
            }
            if !s.tradable.is_empty() && !s.tradable.contains(&f["tradingsymbol"]) {
                return refusal(Flavor::Kite, "Invalid `tradingsymbol`.");
            }
            if f["order_type"] == "MARKET" && f.get("market_protection").is_none_or(|m| m == "0") {
                return refusal(
                    Flavor::Kite,
                    "Market orders without market protection are not allowed via API. Please set market protection or use a Limit order.",
                );
            }
            if let Some(tick) = s.ticks.get(&f["tradingsymbol"]).copied() {
                for (k, what) in [("price", "price"), ("trigger_price", "trigger price")] {
                    if f.get(k)
                        .and_then(|p| p.parse::<Decimal>().ok())
                        .is_some_and(|p| !(p % tick).is_zero())
                    {
                        return refusal(
                            Flavor::Kite,
                            &format!(
                                "Tick size for this script is {tick}. Kindly enter {what} in the multiple of tick size for this script"
                            ),
                        );
                    }
                }
            }
            if let Some((lower, upper)) = s.circuits.get(&f["tradingsymbol"]).copied() {
                let at = |k: &str| f.get(k).and_then(|p| p.parse::<Decimal>().ok());
                let refused = match (at("price").filter(|p| !p.is_zero()), at("trigger_price").filter(|p| !p.is_zero())) {
                    (Some(p), _) if p < lower => Some(format!("Your order price is lower than the current lower circuit limit of {lower:.2}. Place an order within the daily range.")),
                    (Some(p), _) if p > upper => Some(format!("Your order price is higher than the current upper circuit limit of {upper:.2}. Place an order within the daily range.")),
                    (_, Some(t)) if t < lower => Some("Trigger price for stoploss sell orders cannot be below the lower circuit price.".to_owned()),
                    (_, Some(t)) if t > upper => Some("Trigger price for stoploss buy orders cannot be above the upper circuit price.".to_owned()),
                    _ => None,
                };
                if let Some(text) = refused {
                    return refusal(Flavor::Kite, &text);
                }
            }
            if f["order_type"] == "SL-M" && f["exchange"] == "NFO" && is_option(&f["tradingsymbol"])
            {
                return refusal(Flavor::Kite, SL_M_BLOCKED);
            }
            if f.get("autoslice").map(String::as_str) == Some("true") {
                return autoslice(s, &f);
            }
            place(
                s,
                f.clone(),
                f.get("tag").cloned(),
                &f["tradingsymbol"],
                &f["transaction_type"],
                &f["quantity"],
                |id| json!({ "status": "success", "data": { "order_id": id } }),
            )
        }
        // GTTs (Kite's documented form: `type`, `condition` and `orders` as JSON text; only
        // LIMIT orders; `last_price` sets the direction of a single trigger).
        ("POST", "/gtt/triggers") => {
            let f = form(&r.body);
            match gtt_from_form(&f) {
                Ok(mut g) => {
                    s.gtt_seq += 1;
                    g.id = 100_000 + s.gtt_seq;
                    g.created_at = s.clock.clone().unwrap_or_else(ist_now);
                    let id = g.id;
                    s.gtts.push(g);
                    ok_kite(json!({ "trigger_id": id }))
                }
                Err(m) => refusal(Flavor::Kite, &m),
            }
        }
        ("GET", "/gtt/triggers") => {
            fire_gtts(s);
            ok_kite(Value::Array(s.gtts.iter().map(gtt_json).collect()))
        }
        (method, p) if p.starts_with("/gtt/triggers/") => {
            fire_gtts(s);
            let Ok(id) = p["/gtt/triggers/".len()..].parse::<u64>() else {
                return refusal(Flavor::Kite, "Invalid trigger id.");
            };
            let Some(at) = s.gtts.iter().position(|g| g.id == id) else {
                return refusal(Flavor::Kite, "Trigger not found.");
            };
            match method {
                "GET" => ok_kite(gtt_json(&s.gtts[at])),
                "PUT" if s.gtts[at].status == "active" => match gtt_from_form(&form(&r.body)) {
                    Ok(new) => {
                        let g = &mut s.gtts[at];
                        (g.trigger, g.limit, g.last_price, g.qty, g.side, g.symbol) = (
                            new.trigger,
                            new.limit,
                            new.last_price,
                            new.qty,
                            new.side,
                            new.symbol,
                        );
                        s.gtt_modifications.push((id, new.trigger));
                        ok_kite(json!({ "trigger_id": id }))
                    }
                    Err(m) => refusal(Flavor::Kite, &m),
                },
                "DELETE" if s.gtts[at].status == "active" => {
                    s.gtts[at].status = "deleted".into();
                    ok_kite(json!({ "trigger_id": id }))
                }
                _ => refusal(Flavor::Kite, "Trigger is not active."),
            }
        }
        // Upstox's GTTs (v3): one `ENTRY` rule for a single-leg GTT, at the market when it fires.
        ("GET", "/orders") => ok_kite(Value::Array(
            book(s).iter().map(|o| kite_order(o, &o.status)).collect(),
        )),
        ("GET", p) if p.starts_with("/orders/") => {
            let id = &p["/orders/".len()..];
            match poll(s, id) {
                Some(o) => ok_kite(json!([
                    kite_order(&o, "PUT ORDER REQ RECEIVED"),
                    kite_order(&o, "VALIDATION PENDING"),
                    kite_order(&o, &o.status)
                ])),
                None => refusal(Flavor::Kite, "Couldn't find that `order_id`."),
            }
        }
        ("DELETE", p) if p.starts_with("/orders/regular/") => cancel(
            s,
            &p["/orders/regular/".len()..],
            |id| json!({ "status": "success", "data": { "order_id": id } }),
        ),
        ("GET", "/portfolio/positions") => {
            let net: Vec<Value> = net_positions(s).into_iter().map(|(sym, q)| json!({ "tradingsymbol": sym, "exchange": "NSE", "product": "MIS", "quantity": q.to_string().parse::<i64>().unwrap_or(0), "average_price": net_average(s, &sym, q), "pnl": 0.0 })).collect();
            ok_kite(json!({ "net": net, "day": [] }))
        }
        ("PUT", p) if p.starts_with("/orders/regular/") => {
            let f = form(&r.body);
            for (k, allowed) in [
                ("order_type", &["MARKET", "LIMIT", "SL", "SL-M"][..]),
                ("validity", &["DAY", "IOC", "TTL"][..]),
            ] {
                if f.get(k).is_some_and(|v| !allowed.contains(&v.as_str())) {
                    return refusal(Flavor::Kite, &format!("Invalid `{k}`."));
                }
            }
            let id = &p["/orders/regular/".len()..];
            let option = s
                .orders
                .iter()
                .find(|o| o.id == id)
                .is_some_and(|o| is_option(&o.symbol));
            if option && f.get("order_type").is_some_and(|t| t == "SL-M") {
                return refusal(Flavor::Kite, SL_M_BLOCKED);
            }
            modify(
                s,
                id,
                f,
                |id| json!({ "status": "success", "data": { "order_id": id } }),
            )
        }
        ("POST", "/margins/orders") => {
            let Ok(Value::Array(orders)) = serde_json::from_str::<Value>(&r.body) else {
                return refusal(Flavor::Kite, "Invalid JSON: expected a list of orders");
            };
            let mut rows = Vec::new();
            for o in &orders {
                for k in [
                    "exchange",
                    "tradingsymbol",
                    "transaction_type",
                    "variety",
                    "product",
                    "order_type",
                    "quantity",
                ] {
                    if o.get(k).is_none() {
                        return refusal(Flavor::Kite, &format!("Missing {k}"));
                    }
                }
                let Some(qty) = o["quantity"].as_u64() else {
                    return refusal(Flavor::Kite, "Invalid `quantity`.");
                };
                let total = s.margin_per_unit * Decimal::from(qty);
                let total = total.to_string().parse::<f64>().unwrap_or(0.0);
                rows.push(json!({ "type": "equity", "tradingsymbol": o["tradingsymbol"], "exchange": o["exchange"], "span": total, "exposure": 0, "option_premium": 0, "additional": 0, "bo": 0, "cash": 0, "var": 0, "pnl": { "realised": 0, "unrealised": 0 }, "leverage": 1, "total": total }));
            }
            ok_kite(Value::Array(rows))
        }
        ("POST", "/margins/basket") => {
            // Kite's basket margins: `initial` the legs as if alone, `final` with the hedges (and,
            // with `consider_positions=true`, the open positions) counted.
            let Ok(Value::Array(orders)) = serde_json::from_str::<Value>(&r.body) else {
                return refusal(Flavor::Kite, "Invalid JSON: expected a list of orders");
            };
            let mut total = Decimal::ZERO;
            for o in &orders {
                for k in [
                    "exchange",
                    "tradingsymbol",
                    "transaction_type",
                    "variety",
                    "product",
                    "order_type",
                    "quantity",
                ] {
                    if o.get(k).is_none() {
                        return refusal(Flavor::Kite, &format!("Missing {k}"));
                    }
                }
                let Some(qty) = o["quantity"].as_u64() else {
                    return refusal(Flavor::Kite, "Invalid `quantity`.");
                };
                total += s.margin_per_unit * Decimal::from(qty);
            }
            let sides: Vec<&str> = orders
                .iter()
                .filter_map(|o| o["transaction_type"].as_str())
                .collect();
            let num = |d: Decimal| d.to_string().parse::<f64>().unwrap_or(0.0);
            let margin = |t: f64| json!({ "type": "", "tradingsymbol": "", "exchange": "", "span": t, "exposure": 0, "option_premium": 0, "additional": 0, "bo": 0, "cash": 0, "var": 0, "pnl": { "realised": 0, "unrealised": 0 }, "leverage": 0, "total": t });
            ok_kite(
                json!({ "initial": margin(num(total)), "final": margin(num(hedged(s, total, &sides))), "orders": [] }),
            )
        }
        ("GET", "/user/margins/equity") => {
            let net = s.funds.to_string().parse::<f64>().unwrap_or(0.0);
            ok_kite(
                json!({ "enabled": true, "net": net, "available": { "cash": net, "opening_balance": net, "live_balance": net, "collateral": 0, "intraday_payin": 0 }, "utilised": { "debits": 0, "exposure": 0, "span": 0, "option_premium": 0 } }),
            )
        }
        _ => not_found(r),
    }
}

/// Kite's order (`GET /orders`, the last entry of `GET /orders/:id`): numbers are numbers.
fn kite_order(o: &MockOrder, status: &str) -> Value {
    let shown = status == o.status;
    let filled = if shown { o.filled } else { Decimal::ZERO };
    json!({
        "order_id": o.id, "exchange_order_id": if shown && o.status != "REJECTED" { Value::String(format!("1100000{}", o.id)) } else { Value::Null },
        "status": status, "status_message": if shown && !o.message.is_empty() { Value::String(o.message.clone()) } else { Value::Null },
        "tag": o.tag, "tradingsymbol": o.symbol,
        "exchange": o.fields.get("exchange"), "transaction_type": o.side, "order_type": o.fields.get("order_type"),
        "product": o.fields.get("product"), "quantity": whole(o.qty),
        "filled_quantity": whole(filled), "pending_quantity": if shown && o.status == "OPEN" { whole(o.qty - filled) } else { 0 },
        "cancelled_quantity": if shown && o.status == "CANCELLED" { whole(o.qty - filled) } else { 0 },
        "average_price": if shown { float(o.average_price) } else { 0.0 },
        "price": 0, "trigger_price": 0, "validity": "DAY", "variety": "regular", "order_timestamp": o.placed_at,
        "market_protection": o.fields.get("market_protection").and_then(|m| m.parse::<i64>().ok()),
    })
}

/// A GTT from its form, checked as Kite checks it.
fn gtt_from_form(f: &HashMap<String, String>) -> Result<MockGtt, String> {
    if f.get("type").map(String::as_str) != Some("single") {
        return Err("Invalid `type`.".into());
    }
    let condition: Value = f
        .get("condition")
        .and_then(|c| serde_json::from_str(c).ok())
        .ok_or("Invalid `condition`.")?;
    let orders: Value = f
        .get("orders")
        .and_then(|o| serde_json::from_str(o).ok())
        .ok_or("Invalid `orders`.")?;
    let dec = |v: &Value| {
        v.as_f64()
            .and_then(|x| Decimal::from_str_exact(&x.to_string()).ok())
    };
    let trigger = condition["trigger_values"]
        .as_array()
        .filter(|t| t.len() == 1)
        .and_then(|t| dec(&t[0]))
        .ok_or("Invalid `trigger_values`.")?;
    let last_price = dec(&condition["last_price"]).ok_or("Invalid `last_price`.")?;
    if trigger == last_price {
        return Err("Trigger price cannot be the same as the last price.".into());
    }
    let leg = orders
        .as_array()
        .filter(|o| o.len() == 1)
        .map(|o| &o[0])
        .ok_or("A single trigger takes one order.")?;
    if leg["order_type"] != "LIMIT" {
        return Err("Only LIMIT orders are allowed for GTT.".into());
    }
    let symbol = condition["tradingsymbol"]
        .as_str()
        .ok_or("Invalid `tradingsymbol`.")?;
    if leg["tradingsymbol"].as_str() != Some(symbol)
        || condition["exchange"].as_str().is_none()
        || leg["exchange"] != condition["exchange"]
    {
        return Err("The order and the condition must be for the same instrument.".into());
    }
    let side = leg["transaction_type"]
        .as_str()
        .filter(|t| *t == "BUY" || *t == "SELL")
        .ok_or("Invalid `transaction_type`.")?;
    let qty = leg["quantity"]
        .as_u64()
        .filter(|q| *q > 0)
        .map(Decimal::from)
        .ok_or("Invalid `quantity`.")?;
    let limit = dec(&leg["price"])
        .filter(|p| *p > Decimal::ZERO)
        .ok_or("Invalid `price`.")?;
    if !leg["product"]
        .as_str()
        .is_some_and(|p| ["CNC", "MIS", "NRML"].contains(&p))
    {
        return Err("Invalid `product`.".into());
    }
    Ok(MockGtt {
        id: 0,
        status: "active".into(),
        symbol: symbol.to_owned(),
        side: side.to_owned(),
        qty,
        trigger,
        limit,
        last_price,
        created_at: String::new(),
        order_id: None,
    })
}

/// Kite's `autoslice=true`: an order above the freeze quantity is split into slices no
/// larger than it, each placed as an order of its own with the order's tag; the answer is
/// the parent's id and each child's. At or below the freeze, Kite refuses to slice.
fn autoslice(s: &mut State, f: &HashMap<String, String>) -> Reply {
    let symbol = f["tradingsymbol"].clone();
    let Ok(qty) = f["quantity"].parse::<Decimal>() else {
        return refusal(Flavor::Kite, "Invalid `quantity`.");
    };
    let Some(freeze) = s.freeze.get(&symbol).copied().filter(|l| qty > *l) else {
        let least = s.freeze.get(&symbol).map_or_else(
            || "the freeze quantity".to_owned(),
            |l| (l + Decimal::ONE).to_string(),
        );
        return refusal(
            Flavor::Kite,
            &format!("Quantity should be greater than or equal to {least} for order slicing."),
        );
    };
    let parent = format!("2504081{:08}", s.orders.len() + 1);
    let mut children = Vec::new();
    let mut left = qty;
    while left > Decimal::ZERO {
        let part = left.min(freeze);
        left -= part;
        let mut fields = f.clone();
        fields.remove("autoslice");
        fields.insert("quantity".into(), part.to_string());
        let (status, body, _) = place(
            s,
            fields,
            f.get("tag").cloned(),
            &symbol,
            &f["transaction_type"],
            &part.to_string(),
            |id| json!({ "order_id": id }),
        );
        children.push(if status == 200 {
            body
        } else {
            json!({ "error": { "message": body["message"], "error_type": body["error_type"] } })
        });
    }
    ok_kite(json!({ "order_id": parent, "children": children }))
}

/// A GTT as Kite's `GET /gtt/triggers/:id` writes it.
fn gtt_json(g: &MockGtt) -> Value {
    let num = |d: Decimal| d.to_string().parse::<f64>().unwrap_or(0.0);
    let result = g.order_id.as_ref().map(|id| json!({ "order_result": { "status": "success", "order_id": id, "rejection_reason": "" }, "triggered_at": num(g.trigger) }));
    json!({
        "id": g.id, "user_id": "AB1234", "parent_trigger": null, "type": "single", "created_at": g.created_at, "updated_at": g.created_at,
        "expires_at": "2027-12-31 23:59:59", "status": g.status,
        "condition": { "exchange": "NSE", "last_price": num(g.last_price), "tradingsymbol": g.symbol, "trigger_values": [num(g.trigger)], "instrument_token": 738561 },
        "orders": [{ "exchange": "NSE", "tradingsymbol": g.symbol, "product": "CNC", "order_type": "LIMIT", "transaction_type": g.side, "quantity": whole(g.qty), "price": num(g.limit), "result": result }],
        "meta": {}
    })
}

/// A full market quote as Kite's `GET /quote` documents it (`oi` is 0 for what is not F&O).
#[must_use]
pub fn kite_quote(instrument_token: u64, last_price: f64, oi: u64, volume: u64) -> Value {
    let level = |p: f64| json!({ "price": p, "quantity": 75, "orders": 1 });
    json!({
        "instrument_token": instrument_token, "timestamp": "2024-03-21 10:15:02", "last_trade_time": "2024-03-21 10:15:01",
        "last_price": last_price, "last_quantity": 75, "buy_quantity": 15_000, "sell_quantity": 12_000, "volume": volume,
        "average_price": last_price, "oi": oi, "oi_day_high": oi, "oi_day_low": oi, "net_change": 0, "lower_circuit_limit": 0.05, "upper_circuit_limit": last_price * 4.0,
        "ohlc": { "open": last_price, "high": last_price, "low": last_price, "close": last_price },
        "depth": { "buy": (0..5).map(|i| level(last_price - 0.05 * f64::from(i + 1))).collect::<Vec<_>>(), "sell": (0..5).map(|i| level(last_price + 0.05 * f64::from(i + 1))).collect::<Vec<_>>() }
    })
}
