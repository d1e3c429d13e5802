//! Kite Connect's ticker (`wss://ws.kite.trade?api_key=…&access_token=…`).
//!
//! The wire format, from Kite's WebSocket documentation and the official
//! Python client's ticker: a binary message is a 2-byte big-endian packet
//! count, then for each packet a 2-byte length and the packet. Packets are
//! told apart by length: 8 bytes LTP (token, last price), 28 and 32 an index
//! quote and full (last, high, low, open, close, change, full: exchange time
//! at 28), 44 a quote (last, last quantity, average price, volume, buy and
//! sell quantities, open, high, low, close), 184 full (the quote, then last
//! trade time 44, OI 48, OI day high and low, exchange time 60, and five buy
//! then five sell depth entries of 12 bytes: quantity, price, orders, padding).
//! Every field is a big-endian unsigned 32-bit integer; prices are paise
//! (divided by 100; currency segments by 10^7 and BSE currency by 10^4, from
//! the segment in the token's low byte). Times are Unix seconds. A 1-byte
//! message is a heartbeat. Text messages are JSON: `{"type":"order","data":…}`
//! (an order postback), `{"type":"error","data":"…"}`, `{"type":"message",…}`.
//!
//! Requests are JSON text: `{"a":"subscribe","v":[tokens]}` and
//! `{"a":"mode","v":["full",[tokens]]}`. One connection carries at most 3,000
//! instruments; an API key may open three connections.

use rust_decimal::Decimal;

use super::{DecodeError, FeedItem, FeedTick};

/// Most instruments one ticker connection may subscribe (Kite's documented limit).
pub const MAX_PER_CONNECTION: usize = 3_000;
/// Most ticker connections per API key.
pub const MAX_CONNECTIONS: usize = 3;

const SEGMENT_CDS: u32 = 3;
const SEGMENT_BCD: u32 = 6;

fn be_u32(p: &[u8], at: usize) -> Result<u32, DecodeError> {
    p.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| DecodeError(format!("packet of {} bytes has no field at {at}", p.len())))
}

fn be_u16(p: &[u8], at: usize) -> Result<u16, DecodeError> {
    p.get(at..at + 2)
        .and_then(|b| b.try_into().ok())
        .map(u16::from_be_bytes)
        .ok_or_else(|| {
            DecodeError(format!(
                "message of {} bytes ends inside a length at {at}",
                p.len()
            ))
        })
}

/// Decimal places of a price in `token`'s segment.
fn scale(token: u32) -> u32 {
    match token & 0xff {
        SEGMENT_CDS => 7,
        SEGMENT_BCD => 4,
        _ => 2,
    }
}

/// Decode one binary message into `out` (ticks keyed by the decimal token).
/// A heartbeat adds nothing.
///
/// # Errors
/// A message whose packet count or lengths run past its end, or a packet of
/// a length Kite does not send; `out` keeps the packets decoded before it.
pub fn decode_binary(msg: &[u8], out: &mut Vec<FeedItem>) -> Result<(), DecodeError> {
    if msg.len() < 2 {
        return Ok(()); // heartbeat
    }
    let count = be_u16(msg, 0)?;
    let mut at = 2usize;
    for i in 0..count {
        let len = usize::from(be_u16(msg, at)?);
        let start = at + 2;
        let packet = msg.get(start..start + len).ok_or_else(|| DecodeError(format!("packet {i} of {count} says {len} bytes but the message ends {} bytes after it starts", msg.len().saturating_sub(start))))?;
        out.push(FeedItem::Tick(decode_packet(packet)?));
        at = start + len;
    }
    Ok(())
}

/// Decode one packet.
///
/// # Errors
/// A length Kite does not send.
pub fn decode_packet(p: &[u8]) -> Result<FeedTick, DecodeError> {
    let token = be_u32(p, 0)?;
    let sc = scale(token);
    let price = |at: usize| -> Result<Decimal, DecodeError> {
        Ok(Decimal::new(i64::from(be_u32(p, at)?), sc))
    };
    let secs = |at: usize| -> Result<Option<i64>, DecodeError> {
        Ok(Some(i64::from(be_u32(p, at)?).saturating_mul(1000)).filter(|t| *t > 0))
    };
    let mut tick = FeedTick {
        token: token.to_string(),
        last: price(4)?,
        ..FeedTick::default()
    };
    match p.len() {
        8 => {}
        28 | 32 => {
            tick.prev_close = Some(price(20)?).filter(|c| *c > Decimal::ZERO);
            if p.len() == 32 {
                tick.ts_ms = secs(28)?;
            }
        }
        44 | 184 => {
            tick.day_volume = Some(u64::from(be_u32(p, 16)?));
            tick.prev_close = Some(price(40)?).filter(|c| *c > Decimal::ZERO);
            if p.len() == 184 {
                tick.oi = Some(u64::from(be_u32(p, 48)?));
                tick.ts_ms = secs(60)?;
                // Depth: five buy entries from 64, then five sell entries, 12 bytes each.
                let (bid_qty, ask_qty) = (be_u32(p, 64)?, be_u32(p, 64 + 5 * 12)?);
                tick.bid = (bid_qty > 0).then(|| price(68)).transpose()?;
                tick.ask = (ask_qty > 0).then(|| price(64 + 5 * 12 + 4)).transpose()?;
            }
        }
        n => {
            return Err(DecodeError(format!(
                "instrument {token}: a packet of {n} bytes is none of Kite's (8, 28, 32, 44, 184)"
            )));
        }
    }
    Ok(tick)
}

/// Decode a text message: an order postback, an error, or a notice.
///
/// # Errors
/// Text that is not JSON or not an object with a `type`.
pub fn decode_text(text: &str) -> Result<Option<FeedItem>, DecodeError> {
    let v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| DecodeError(format!("text message is not JSON: {e}")))?;
    let kind = v
        .get("type")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| DecodeError("text message has no \"type\"".into()))?;
    Ok(match kind {
        "order" => v
            .get("data")
            .filter(|d| d.is_object())
            .map(|d| FeedItem::Order(d.clone())),
        "error" => Some(FeedItem::BrokerError(
            v.get("data")
                .map(|d| d.as_str().map_or_else(|| d.to_string(), str::to_owned))
                .unwrap_or_default(),
        )),
        _ => None,
    })
}

/// Tokens as Kite takes them: numbers.
fn numbers(tokens: &[String]) -> Vec<serde_json::Value> {
    tokens
        .iter()
        .map(|t| {
            t.parse::<u64>().map_or_else(
                |_| serde_json::Value::from(t.as_str()),
                serde_json::Value::from,
            )
        })
        .collect()
}

/// The requests that subscribe `tokens` in full mode (exchange time, volume, OI and depth).
#[must_use]
pub fn subscribe(tokens: &[String]) -> Vec<String> {
    let numbers = numbers(tokens);
    vec![
        serde_json::json!({ "a": "subscribe", "v": numbers }).to_string(),
        serde_json::json!({ "a": "mode", "v": ["full", numbers] }).to_string(),
    ]
}

/// The request that unsubscribes `tokens`.
#[must_use]
pub fn unsubscribe(tokens: &[String]) -> String {
    serde_json::json!({ "a": "unsubscribe", "v": numbers(tokens) }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(p: &mut Vec<u8>, v: u32) {
        p.extend_from_slice(&v.to_be_bytes());
    }

    #[test]
    fn every_packet_length_decodes_and_strangers_are_refused() {
        let mut ltp = Vec::new();
        put(&mut ltp, 408_065);
        put(&mut ltp, 152_045);
        let t = decode_packet(&ltp).unwrap();
        assert_eq!(
            (t.token.as_str(), t.last, t.ts_ms),
            ("408065", Decimal::new(152_045, 2), None)
        );
        let mut cds = Vec::new();
        put(&mut cds, (1 << 8) | SEGMENT_CDS);
        put(&mut cds, 834_250_000);
        assert_eq!(
            decode_packet(&cds).unwrap().last,
            Decimal::new(834_250_000, 7)
        );
        let mut index = ltp.clone();
        for v in [1, 2, 3, 4, 5, 1_704_080_700] {
            put(&mut index, v);
        }
        assert_eq!(
            decode_packet(&index).unwrap().ts_ms,
            Some(1_704_080_700_000)
        );
        assert!(decode_packet(&ltp[..7]).is_err());
        let mut odd = ltp.clone();
        odd.push(0);
        assert!(decode_packet(&odd).unwrap_err().0.contains("9 bytes"));
    }

    #[test]
    fn a_message_that_runs_past_its_end_keeps_what_came_before() {
        let mut msg = vec![0, 2, 0, 8];
        put(&mut msg, 1);
        put(&mut msg, 100);
        msg.extend_from_slice(&[0, 8, 0, 0]);
        let mut out = Vec::new();
        assert!(decode_binary(&msg, &mut out).is_err());
        assert_eq!(out.len(), 1);
        assert!(decode_binary(&[0], &mut out).is_ok(), "a heartbeat");
        assert_eq!(out.len(), 1);
    }
}
