//! OpenAlgo's WebSocket (`ws://<host>:8765`), one protocol in front of many
//! Indian brokers.
//!
//! From OpenAlgo's WebSocket documentation: a session begins with
//! `{"action":"authenticate","api_key":"…"}` (the connector supplies it, as
//! it holds the key); a subscription is
//! `{"action":"subscribe","mode":3,"depth":5,"symbols":[{"exchange":"NSE","symbol":"RELIANCE"}]}`
//! (mode 1 LTP, 2 quote, 3 depth: depth carries the volume, the book and the
//! time); updates are JSON text
//! `{"type":"market_data","symbol":"RELIANCE","exchange":"NSE","mode":3,"data":{"ltp":…,"volume":…,"depth":{"buy":[{"price":…}],"sell":[…]},"ltt":<last trade time>,"timestamp":<epoch ms>}}`
//! (`ltt` the exchange's time, `timestamp` the proxy's: see `exchange_time`).
//! Instruments are named `EXCHANGE:SYMBOL` (OpenAlgo's own symbols, which
//! ours are): `NSE`, `NFO` for futures and options, `NSE_INDEX` for indices.
//! Order updates: `{"action":"subscribe_orders"}` (account-wide, no symbols),
//! then `{"type":"order_update","orderid","symbol","exchange","action","quantity",
//! "order_status","filled_quantity","pending_quantity","average_price","rejection_reason",…}`
//! for every status change of the account's orders.

use rust_decimal::Decimal;
use rust_decimal::prelude::FromPrimitive as _;
use serde_json::Value;

use super::{DecodeError, FeedItem, FeedTick};

/// Most symbols OpenAlgo's proxy takes on one connection (its default `MAX_SYMBOLS_PER_WEBSOCKET`).
pub const MAX_PER_CONNECTION: usize = 1_000;
/// Most connections (its default `MAX_WEBSOCKET_CONNECTIONS`).
pub const MAX_CONNECTIONS: usize = 3;
/// The proxy's default address.
pub const DEFAULT_WS_URL: &str = "ws://127.0.0.1:8765";

/// The indices our symbols name.
const INDICES: [&str; 5] = ["NIFTY", "BANKNIFTY", "FINNIFTY", "MIDCPNIFTY", "INDIAVIX"];

/// `EXCHANGE:SYMBOL` of one of our symbols: an index, a contract (`…FUT`, `…CE`, `…PE`), else an NSE stock.
#[must_use]
pub fn instrument(symbol: &str) -> String {
    let s = symbol.trim().to_ascii_uppercase();
    let derivative = s.ends_with("FUT")
        || ((s.ends_with("CE") || s.ends_with("PE")) && s.chars().any(|c| c.is_ascii_digit()));
    let exchange = if INDICES.contains(&s.as_str()) {
        "NSE_INDEX"
    } else if derivative {
        "NFO"
    } else {
        "NSE"
    };
    format!("{exchange}:{}", symbol.trim())
}

/// The first message of a session.
#[must_use]
pub fn authenticate(api_key: &str) -> String {
    serde_json::json!({ "action": "authenticate", "api_key": api_key }).to_string()
}

/// The request for the account's order updates (`order_update` messages; no instruments).
#[must_use]
pub fn subscribe_orders() -> String {
    serde_json::json!({ "action": "subscribe_orders" }).to_string()
}

fn symbols(instruments: &[String]) -> Vec<Value> {
    instruments
        .iter()
        .map(|i| {
            let (exchange, symbol) = i.split_once(':').unwrap_or(("NSE", i.as_str()));
            serde_json::json!({ "exchange": exchange, "symbol": symbol })
        })
        .collect()
}

/// The request that subscribes `instruments` (`EXCHANGE:SYMBOL`) in depth mode.
#[must_use]
pub fn subscribe(instruments: &[String]) -> String {
    serde_json::json!({ "action": "subscribe", "mode": 3, "depth": 5, "symbols": symbols(instruments) }).to_string()
}

/// The request that unsubscribes `instruments`.
#[must_use]
pub fn unsubscribe(instruments: &[String]) -> String {
    serde_json::json!({ "action": "unsubscribe", "mode": 3, "symbols": symbols(instruments) })
        .to_string()
}

/// A number sent as a JSON number or a string.
fn number(v: &Value) -> Option<f64> {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

fn price(what: &str, field: &str, v: &Value) -> Result<Option<Decimal>, DecodeError> {
    if v.is_null() {
        return Ok(None);
    }
    let n = number(v).ok_or_else(|| DecodeError(format!("{what}: {field} {v} is not a number")))?;
    Decimal::from_f64(n)
        .map(|d| Some(d.round_dp(4).normalize()))
        .ok_or_else(|| DecodeError(format!("{what}: {field} {n} is not a number")))
}

/// Decode a text message: market data, an error, or an acknowledgement (nothing).
///
/// # Errors
/// Text that is not JSON, or market data without a symbol or a last price.
pub fn decode_text(text: &str) -> Result<Option<FeedItem>, DecodeError> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| DecodeError(format!("text message is not JSON: {e}")))?;
    let kind = v.get("type").and_then(Value::as_str).unwrap_or_default();
    if kind == "error" || v.get("status").and_then(Value::as_str) == Some("error") {
        let message = v
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| v.to_string(), str::to_owned);
        return Ok(Some(FeedItem::BrokerError(message)));
    }
    if kind == "order_update" {
        return Ok(Some(FeedItem::Order(v)));
    }
    if kind != "market_data" {
        return Ok(None); // auth and subscription acknowledgements
    }
    let (Some(symbol), Some(exchange)) = (
        v.get("symbol").and_then(Value::as_str),
        v.get("exchange").and_then(Value::as_str),
    ) else {
        return Err(DecodeError(
            "market_data without symbol and exchange".into(),
        ));
    };
    let what = format!("{exchange}:{symbol}");
    let data = v.get("data").unwrap_or(&Value::Null);
    let last = price(&what, "ltp", data.get("ltp").unwrap_or(&Value::Null))?
        .ok_or_else(|| DecodeError(format!("{what}: market_data without ltp")))?;
    let best = |side: &str| {
        data.get("depth")
            .and_then(|d| d.get(side))
            .and_then(|l| l.get(0))
            .and_then(|q| q.get("price"))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let whole = |field: &str| {
        data.get(field)
            .and_then(number)
            .filter(|n| n.is_finite() && *n >= 0.0)
            .map(|n| n as u64)
    };
    Ok(Some(FeedItem::Tick(FeedTick {
        token: what.clone(),
        ts_ms: exchange_time(data),
        last,
        bid: price(&what, "depth.buy[0].price", &best("buy"))?.filter(|p| !p.is_zero()),
        ask: price(&what, "depth.sell[0].price", &best("sell"))?.filter(|p| !p.is_zero()),
        day_volume: whole("volume"),
        oi: whole("oi"),
        prev_close: None,
        greeks: None,
    })))
}

/// Ticks timed by the proxy's own clock for want of the exchange's (`ltt`).
static PROXY_TIMED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The exchange's time of a tick, ms: `ltt` (the last trade time the upstream broker gives,
/// in seconds from some and milliseconds from others, told apart by size). OpenAlgo's own
/// `timestamp` is the proxy's clock when it relayed the tick (`time.time()` in its server),
/// so it is only the fallback, counted and warned about: candles built on it follow the
/// relay, not the exchange.
fn exchange_time(data: &Value) -> Option<i64> {
    let epoch = |field: &str| {
        data.get(field)
            .and_then(number)
            .filter(|t| t.is_finite() && *t > 0.0 && *t < 9.0e15)
    };
    // Seconds until the year 5138; anything larger is milliseconds.
    if let Some(ltt) = epoch("ltt") {
        return Some(if ltt < 1.0e11 {
            (ltt * 1000.0).round() as i64
        } else {
            ltt as i64
        });
    }
    let relayed = epoch("timestamp")?;
    let n = PROXY_TIMED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    if n == 1 || n.is_multiple_of(10_000) {
        tracing::warn!(
            ticks = n,
            "OpenAlgo ticks without `ltt`: timed by the proxy's clock (`timestamp`), not the exchange's"
        );
    }
    Some(relayed as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchanges_follow_the_symbol() {
        assert_eq!(instrument("NIFTY"), "NSE_INDEX:NIFTY");
        assert_eq!(instrument("NIFTY28MAR2420800CE"), "NFO:NIFTY28MAR2420800CE");
        assert_eq!(instrument("BANKNIFTY24MARFUT"), "NFO:BANKNIFTY24MARFUT");
        assert_eq!(instrument("RELIANCE"), "NSE:RELIANCE");
    }

    #[test]
    fn depth_updates_decode_and_acknowledgements_do_not() {
        let m = r#"{"type":"market_data","symbol":"RELIANCE","exchange":"NSE","mode":3,"data":{"ltp":1187.75,"volume":14414545,"depth":{"buy":[{"price":1187.70,"quantity":886}],"sell":[{"price":"1187.80","quantity":767}]},"timestamp":1712572800000}}"#;
        let Some(FeedItem::Tick(t)) = decode_text(m).unwrap() else {
            panic!("a tick")
        };
        assert_eq!(
            (
                t.token.as_str(),
                t.last,
                t.bid,
                t.ask,
                t.day_volume,
                t.ts_ms
            ),
            (
                "NSE:RELIANCE",
                Decimal::new(118_775, 2),
                Some(Decimal::new(11_877, 1)),
                Some(Decimal::new(11_878, 1)),
                Some(14_414_545),
                Some(1_712_572_800_000)
            )
        );
        assert_eq!(
            decode_text(r#"{"type":"auth","status":"success"}"#).unwrap(),
            None
        );
        assert!(
            matches!(decode_text(r#"{"type":"error","message":"Invalid API key"}"#).unwrap(), Some(FeedItem::BrokerError(m)) if m == "Invalid API key")
        );
        assert!(
            decode_text(
                r#"{"type":"market_data","symbol":"X","exchange":"NSE","data":{"ltp":"abc"}}"#
            )
            .is_err()
        );
        assert!(decode_text("not json").is_err());
        let update = r#"{"type":"order_update","user_id":"u1","mode":"live","broker":"zerodha","orderid":"250408000989443","symbol":"RELIANCE","exchange":"NSE","action":"BUY","quantity":10,"price":0.0,"trigger_price":0.0,"pricetype":"MARKET","product":"MIS","order_status":"complete","filled_quantity":10,"pending_quantity":0,"average_price":1187.75,"rejection_reason":""}"#;
        assert!(
            matches!(decode_text(update).unwrap(), Some(FeedItem::Order(v)) if v["orderid"] == "250408000989443")
        );
        assert_eq!(subscribe_orders(), r#"{"action":"subscribe_orders"}"#);
    }

    #[test]
    fn ticks_are_timed_by_the_exchanges_ltt_not_the_proxys_clock() {
        let at = |data: &str| {
            let m = format!(
                r#"{{"type":"market_data","symbol":"RELIANCE","exchange":"NSE","mode":3,"data":{data}}}"#
            );
            match decode_text(&m).unwrap() {
                Some(FeedItem::Tick(t)) => t.ts_ms,
                other => panic!("a tick: {other:?}"),
            }
        };
        // Relayed at 20:00 IST (a replay after hours); traded at 10:00 IST.
        let relayed = 1_712_586_600_000_i64;
        assert_eq!(
            at(&format!(
                r#"{{"ltp":1187.75,"ltt":1712550600,"timestamp":{relayed}}}"#
            )),
            Some(1_712_550_600_000),
            "ltt in seconds"
        );
        assert_eq!(
            at(&format!(
                r#"{{"ltp":1187.75,"ltt":1712550600250,"timestamp":{relayed}}}"#
            )),
            Some(1_712_550_600_250),
            "ltt in milliseconds"
        );
        assert_eq!(
            at(&format!(r#"{{"ltp":1187.75,"timestamp":{relayed}}}"#)),
            Some(relayed),
            "no ltt: the proxy's clock, as a fallback"
        );
        assert_eq!(
            at(r#"{"ltp":1187.75}"#),
            None,
            "no time at all: none made up"
        );
    }
}
