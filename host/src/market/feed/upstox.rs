//! Upstox's Market Data Feed V3.
//!
//! The address is one-time: `GET /v3/feed/market-data-feed/authorize` (Bearer
//! token) answers `{"status":"success","data":{"authorized_redirect_uri":"wss://…"}}`,
//! asked again for every connection (the brokers stage's connector does it).
//! Requests are JSON sent as **binary** frames:
//! `{"guid":"…","method":"sub","data":{"mode":"full","instrumentKeys":[…]}}`.
//! Market data comes as binary protobuf `FeedResponse` messages of Upstox's
//! published `MarketDataFeedV3.proto`; the messages below carry its field
//! numbers, decoded with `prost`. A feed is keyed by instrument key
//! (`NSE_INDEX|Nifty 50`, `NSE_FO|48225`); `full` mode gives the last price
//! and last trade time (`ltpc`), five levels of depth, the day's volume
//! (`vtt`) and OI for a market instrument, and `ltpc` and OHLC for an index.
//! One connection in `full` mode carries at most 2,000 instruments.

use prost::Message as _;
use rust_decimal::Decimal;
use rust_decimal::prelude::FromPrimitive as _;

use super::{DecodeError, FeedItem, FeedTick};
use crate::market::Greeks;

/// Most instruments one connection may subscribe in `full` mode.
pub const MAX_PER_CONNECTION: usize = 2_000;
/// Most market-data connections per user.
pub const MAX_CONNECTIONS: usize = 2;

/// `LTPC`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Ltpc {
    /// Last traded price.
    #[prost(double, tag = "1")]
    pub ltp: f64,
    /// Last trade time, ms since the epoch.
    #[prost(int64, tag = "2")]
    pub ltt: i64,
    /// Last traded quantity.
    #[prost(int64, tag = "3")]
    pub ltq: i64,
    /// Previous close.
    #[prost(double, tag = "4")]
    pub cp: f64,
}

/// `Quote`: one depth level.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Quote {
    /// Bid quantity.
    #[prost(int64, tag = "1")]
    pub bid_q: i64,
    /// Bid price.
    #[prost(double, tag = "2")]
    pub bid_p: f64,
    /// Ask quantity.
    #[prost(int64, tag = "3")]
    pub ask_q: i64,
    /// Ask price.
    #[prost(double, tag = "4")]
    pub ask_p: f64,
}

/// `MarketLevel`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MarketLevel {
    /// Depth, best first.
    #[prost(message, repeated, tag = "1")]
    pub bid_ask_quote: Vec<Quote>,
}

/// `OptionGreeks`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OptionGreeks {
    /// Delta.
    #[prost(double, tag = "1")]
    pub delta: f64,
    /// Theta.
    #[prost(double, tag = "2")]
    pub theta: f64,
    /// Gamma.
    #[prost(double, tag = "3")]
    pub gamma: f64,
    /// Vega.
    #[prost(double, tag = "4")]
    pub vega: f64,
    /// Rho.
    #[prost(double, tag = "5")]
    pub rho: f64,
}

/// `MarketFullFeed` (the fields used here; others are skipped by the decoder).
#[derive(Clone, PartialEq, prost::Message)]
pub struct MarketFullFeed {
    /// Last price and time.
    #[prost(message, optional, tag = "1")]
    pub ltpc: Option<Ltpc>,
    /// Depth.
    #[prost(message, optional, tag = "2")]
    pub market_level: Option<MarketLevel>,
    /// An option's greeks.
    #[prost(message, optional, tag = "3")]
    pub option_greeks: Option<OptionGreeks>,
    /// Volume traded today.
    #[prost(int64, tag = "6")]
    pub vtt: i64,
    /// Open interest.
    #[prost(double, tag = "7")]
    pub oi: f64,
    /// An option's implied volatility.
    #[prost(double, tag = "8")]
    pub iv: f64,
}

/// `IndexFullFeed`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IndexFullFeed {
    /// Last value and time.
    #[prost(message, optional, tag = "1")]
    pub ltpc: Option<Ltpc>,
}

/// `FullFeed`: a market or an index.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FullFeed {
    /// The `FullFeedUnion` oneof.
    #[prost(oneof = "FullFeedUnion", tags = "1, 2")]
    pub full_feed_union: Option<FullFeedUnion>,
}

/// `FullFeed.FullFeedUnion`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum FullFeedUnion {
    /// `marketFF`.
    #[prost(message, tag = "1")]
    MarketFf(MarketFullFeed),
    /// `indexFF`.
    #[prost(message, tag = "2")]
    IndexFf(IndexFullFeed),
}

/// `FirstLevelWithGreeks` (option_greeks mode; the fields used here).
#[derive(Clone, PartialEq, prost::Message)]
pub struct FirstLevelWithGreeks {
    /// Last price and time.
    #[prost(message, optional, tag = "1")]
    pub ltpc: Option<Ltpc>,
    /// Best bid and ask.
    #[prost(message, optional, tag = "2")]
    pub first_depth: Option<Quote>,
    /// The greeks.
    #[prost(message, optional, tag = "3")]
    pub option_greeks: Option<OptionGreeks>,
    /// Volume traded today.
    #[prost(int64, tag = "4")]
    pub vtt: i64,
    /// Open interest.
    #[prost(double, tag = "5")]
    pub oi: f64,
    /// Implied volatility.
    #[prost(double, tag = "6")]
    pub iv: f64,
}

/// `Feed`: one instrument's update.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Feed {
    /// The `FeedUnion` oneof.
    #[prost(oneof = "FeedUnion", tags = "1, 2, 3")]
    pub feed_union: Option<FeedUnion>,
    /// `RequestMode`.
    #[prost(int32, tag = "4")]
    pub request_mode: i32,
}

/// `Feed.FeedUnion`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum FeedUnion {
    /// `ltpc` mode.
    #[prost(message, tag = "1")]
    Ltpc(Ltpc),
    /// `full` mode.
    #[prost(message, tag = "2")]
    FullFeed(FullFeed),
    /// `option_greeks` mode.
    #[prost(message, tag = "3")]
    FirstLevelWithGreeks(FirstLevelWithGreeks),
}

/// `FeedResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FeedResponse {
    /// `Type`: 0 initial feed, 1 live feed, 2 market info.
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    /// Updates by instrument key.
    #[prost(map = "string, message", tag = "2")]
    pub feeds: std::collections::HashMap<String, Feed>,
    /// Server time, ms.
    #[prost(int64, tag = "3")]
    pub current_ts: i64,
}

fn price(key: &str, field: &str, v: f64) -> Result<Decimal, DecodeError> {
    Decimal::from_f64(v)
        .map(|d| d.round_dp(4).normalize())
        .ok_or_else(|| DecodeError(format!("{key}: {field} {v} is not a number")))
}

fn opt_price(key: &str, field: &str, v: f64) -> Result<Option<Decimal>, DecodeError> {
    if v == 0.0 {
        Ok(None)
    } else {
        price(key, field, v).map(Some)
    }
}

/// Decode one binary `FeedResponse` into ticks keyed by instrument key, in key order.
///
/// # Errors
/// A frame that is not a `FeedResponse`, or a price that is not a number.
pub fn decode_binary(frame: &[u8], out: &mut Vec<FeedItem>) -> Result<(), DecodeError> {
    let msg =
        FeedResponse::decode(frame).map_err(|e| DecodeError(format!("not a FeedResponse: {e}")))?;
    let mut keys: Vec<&String> = msg.feeds.keys().collect();
    // A protobuf map has no order; sorting keeps what follows repeatable.
    keys.sort();
    for key in keys {
        let Some(feed) = msg.feeds.get(key) else {
            continue;
        };
        let greeks = |g: Option<&OptionGreeks>, iv: f64| {
            g.and_then(|g| Greeks::from_f64(g.delta, g.gamma, g.theta, g.vega, iv))
        };
        let (ltpc, depth, vtt, oi, greeks) = match &feed.feed_union {
            Some(FeedUnion::Ltpc(l)) => (Some(l), None, None, None, None),
            Some(FeedUnion::FullFeed(FullFeed {
                full_feed_union: Some(FullFeedUnion::MarketFf(m)),
            })) => (
                m.ltpc.as_ref(),
                m.market_level
                    .as_ref()
                    .and_then(|l| l.bid_ask_quote.first()),
                Some(m.vtt),
                Some(m.oi),
                greeks(m.option_greeks.as_ref(), m.iv),
            ),
            Some(FeedUnion::FullFeed(FullFeed {
                full_feed_union: Some(FullFeedUnion::IndexFf(i)),
            })) => (i.ltpc.as_ref(), None, None, None, None),
            Some(FeedUnion::FirstLevelWithGreeks(g)) => (
                g.ltpc.as_ref(),
                g.first_depth.as_ref(),
                Some(g.vtt),
                Some(g.oi),
                greeks(g.option_greeks.as_ref(), g.iv),
            ),
            _ => (None, None, None, None, None),
        };
        let Some(ltpc) = ltpc else { continue };
        let ts = if ltpc.ltt > 0 {
            ltpc.ltt
        } else {
            msg.current_ts
        };
        out.push(FeedItem::Tick(FeedTick {
            token: key.clone(),
            ts_ms: (ts > 0).then_some(ts),
            last: price(key, "ltp", ltpc.ltp)?,
            bid: depth
                .map(|q| opt_price(key, "bidP", q.bid_p))
                .transpose()?
                .flatten(),
            ask: depth
                .map(|q| opt_price(key, "askP", q.ask_p))
                .transpose()?
                .flatten(),
            day_volume: vtt.and_then(|v| u64::try_from(v).ok()),
            oi: oi.filter(|o| o.is_finite() && *o >= 0.0).map(|o| o as u64),
            // A close that does not parse is no reason to lose the tick: the band has no reference.
            prev_close: opt_price(key, "cp", ltpc.cp)
                .ok()
                .flatten()
                .filter(|c| *c > Decimal::ZERO),
            greeks,
        }));
    }
    Ok(())
}

/// Decode a text message: the portfolio stream's order updates
/// (`{"update_type":"order","order_id":…,"status":…,"tag":…,…}`); the market feed sends none.
///
/// # Errors
/// Text that is not JSON.
pub fn decode_text(text: &str) -> Result<Option<FeedItem>, DecodeError> {
    let v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| DecodeError(format!("text message is not JSON: {e}")))?;
    Ok(
        (v.get("update_type").and_then(serde_json::Value::as_str) == Some("order"))
            .then_some(FeedItem::Order(v)),
    )
}

/// A subscription mode of the V3 feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `ltpc`: last price, time, quantity and previous close.
    Ltpc,
    /// `full`: five levels of depth, OHLC, volume, OI (and an option's greeks).
    Full,
    /// `option_greeks`: an option's last price, best bid and ask, volume, OI, greeks and IV.
    OptionGreeks,
}

impl Mode {
    /// The mode's name in a request.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ltpc => "ltpc",
            Self::Full => "full",
            Self::OptionGreeks => "option_greeks",
        }
    }
}

/// The request that subscribes `keys` in full mode (sent as a binary frame).
#[must_use]
pub fn subscribe(keys: &[String]) -> Vec<u8> {
    subscribe_in(keys, Mode::Full)
}

/// The request that subscribes `keys` in `mode` (sent as a binary frame).
#[must_use]
pub fn subscribe_in(keys: &[String], mode: Mode) -> Vec<u8> {
    serde_json::json!({ "guid": "tradehost-sub", "method": "sub", "data": { "mode": mode.as_str(), "instrumentKeys": keys } }).to_string().into_bytes()
}

/// The request that unsubscribes `keys` (sent as a binary frame).
#[must_use]
pub fn unsubscribe(keys: &[String]) -> Vec<u8> {
    serde_json::json!({ "guid": "tradehost-unsub", "method": "unsub", "data": { "instrumentKeys": keys } }).to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_and_a_market_feed_decode_and_garbage_is_refused() {
        let mut feeds = std::collections::HashMap::new();
        let ltpc = |ltp, ltt| {
            Some(Ltpc {
                ltp,
                ltt,
                ltq: 0,
                cp: 0.0,
            })
        };
        feeds.insert(
            "NSE_INDEX|Nifty 50".to_owned(),
            Feed {
                feed_union: Some(FeedUnion::FullFeed(FullFeed {
                    full_feed_union: Some(FullFeedUnion::IndexFf(IndexFullFeed {
                        ltpc: ltpc(21_700.05, 1_704_080_701_000),
                    })),
                })),
                request_mode: 1,
            },
        );
        let depth = MarketLevel {
            bid_ask_quote: vec![Quote {
                bid_q: 75,
                bid_p: 21_760.0,
                ask_q: 50,
                ask_p: 21_760.5,
            }],
        };
        let market = MarketFullFeed {
            ltpc: ltpc(21_760.25, 1_704_080_702_000),
            market_level: Some(depth),
            option_greeks: None,
            vtt: 1_500,
            oi: 9_000.0,
            iv: 0.0,
        };
        feeds.insert(
            "NSE_FO|48225".to_owned(),
            Feed {
                feed_union: Some(FeedUnion::FullFeed(FullFeed {
                    full_feed_union: Some(FullFeedUnion::MarketFf(market)),
                })),
                request_mode: 1,
            },
        );
        let bytes = FeedResponse {
            r#type: 1,
            feeds,
            current_ts: 1_704_080_703_000,
        }
        .encode_to_vec();
        let mut out = Vec::new();
        decode_binary(&bytes, &mut out).unwrap();
        let ticks: Vec<&FeedTick> = out
            .iter()
            .filter_map(|i| {
                if let FeedItem::Tick(t) = i {
                    Some(t)
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(ticks[0].token, "NSE_FO|48225");
        assert_eq!(
            (
                ticks[0].last,
                ticks[0].bid,
                ticks[0].day_volume,
                ticks[0].oi
            ),
            (
                Decimal::new(2_176_025, 2),
                Some(Decimal::from(21_760)),
                Some(1_500),
                Some(9_000)
            )
        );
        assert_eq!(
            (ticks[1].last, ticks[1].ts_ms),
            (Decimal::new(2_170_005, 2), Some(1_704_080_701_000))
        );
        assert!(decode_binary(&[0xff, 0xff, 0xff], &mut out).is_err());
    }

    #[test]
    fn an_option_greeks_update_carries_its_greeks_and_iv() {
        let first = FirstLevelWithGreeks {
            ltpc: Some(Ltpc {
                ltp: 110.25,
                ltt: 1_704_080_702_000,
                ltq: 75,
                cp: 98.0,
            }),
            first_depth: None,
            option_greeks: Some(OptionGreeks {
                delta: 0.5312,
                theta: -11.75,
                gamma: 0.00071,
                vega: 11.5,
                rho: 0.02,
            }),
            vtt: 800,
            oi: 61_000.0,
            iv: 15.25,
        };
        let feeds = std::collections::HashMap::from([(
            "NSE_FO|217001".to_owned(),
            Feed {
                feed_union: Some(FeedUnion::FirstLevelWithGreeks(first)),
                request_mode: 2,
            },
        )]);
        let bytes = FeedResponse {
            r#type: 1,
            feeds,
            current_ts: 0,
        }
        .encode_to_vec();
        let mut out = Vec::new();
        decode_binary(&bytes, &mut out).unwrap();
        let Some(FeedItem::Tick(t)) = out.first() else {
            panic!("{out:?}")
        };
        let g = t.greeks.unwrap();
        assert_eq!(
            (g.delta, g.gamma, g.theta, g.vega, g.iv),
            (
                Decimal::new(5312, 4),
                Decimal::new(71, 5),
                Decimal::new(-1175, 2),
                Decimal::new(115, 1),
                Decimal::new(1525, 2)
            )
        );
        assert_eq!((t.oi, t.day_volume), (Some(61_000), Some(800)));
        assert_eq!(
            String::from_utf8(subscribe_in(&["NSE_FO|217001".into()], Mode::OptionGreeks)).unwrap(),
            r#"{"data":{"instrumentKeys":["NSE_FO|217001"],"mode":"option_greeks"},"guid":"tradehost-sub","method":"sub"}"#
        );
    }
}
