//! Upstox Market Data Feed V3 frames for the tests, transcribed here from
//! Upstox's published `MarketDataFeedV3.proto` (message and field numbers as
//! published; only the messages the tests send), independently of the host's
//! decoder, and encoded with `prost`.

use std::collections::HashMap;

use prost::Message as _;

/// `LTPC { double ltp = 1; int64 ltt = 2; int64 ltq = 3; double cp = 4; }`
#[derive(Clone, PartialEq, prost::Message)]
pub struct Ltpc {
    /// Last price.
    #[prost(double, tag = "1")]
    pub ltp: f64,
    /// Last trade time, ms.
    #[prost(int64, tag = "2")]
    pub ltt: i64,
    /// Last quantity.
    #[prost(int64, tag = "3")]
    pub ltq: i64,
    /// Previous close.
    #[prost(double, tag = "4")]
    pub cp: f64,
}

/// `Quote { int64 bidQ = 1; double bidP = 2; int64 askQ = 3; double askP = 4; }`
#[derive(Clone, PartialEq, prost::Message)]
pub struct Quote {
    /// Bid quantity.
    #[prost(int64, tag = "1")]
    pub bid_q: i64,
    /// Bid.
    #[prost(double, tag = "2")]
    pub bid_p: f64,
    /// Ask quantity.
    #[prost(int64, tag = "3")]
    pub ask_q: i64,
    /// Ask.
    #[prost(double, tag = "4")]
    pub ask_p: f64,
}

/// `MarketLevel { repeated Quote bidAskQuote = 1; }`
#[derive(Clone, PartialEq, prost::Message)]
pub struct MarketLevel {
    /// Depth.
    #[prost(message, repeated, tag = "1")]
    pub bid_ask_quote: Vec<Quote>,
}

/// `MarketFullFeed { LTPC ltpc = 1; MarketLevel marketLevel = 2; …; double atp = 5; int64 vtt = 6; double oi = 7; … }`
#[derive(Clone, PartialEq, prost::Message)]
pub struct MarketFullFeed {
    /// Last price and time.
    #[prost(message, optional, tag = "1")]
    pub ltpc: Option<Ltpc>,
    /// Depth.
    #[prost(message, optional, tag = "2")]
    pub market_level: Option<MarketLevel>,
    /// Average traded price.
    #[prost(double, tag = "5")]
    pub atp: f64,
    /// Volume traded today.
    #[prost(int64, tag = "6")]
    pub vtt: i64,
    /// Open interest.
    #[prost(double, tag = "7")]
    pub oi: f64,
    /// Total buy quantity.
    #[prost(double, tag = "9")]
    pub tbq: f64,
}

/// `IndexFullFeed { LTPC ltpc = 1; MarketOHLC marketOHLC = 2; }` (OHLC left out).
#[derive(Clone, PartialEq, prost::Message)]
pub struct IndexFullFeed {
    /// Last value and time.
    #[prost(message, optional, tag = "1")]
    pub ltpc: Option<Ltpc>,
}

/// `FullFeed { oneof FullFeedUnion { MarketFullFeed marketFF = 1; IndexFullFeed indexFF = 2; } }`
#[derive(Clone, PartialEq, prost::Message)]
pub struct FullFeed {
    /// The oneof.
    #[prost(oneof = "FullFeedUnion", tags = "1, 2")]
    pub union: Option<FullFeedUnion>,
}

/// `FullFeedUnion`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum FullFeedUnion {
    /// `marketFF`.
    #[prost(message, tag = "1")]
    Market(MarketFullFeed),
    /// `indexFF`.
    #[prost(message, tag = "2")]
    Index(IndexFullFeed),
}

/// `OptionGreeks { double delta = 1; double theta = 2; double gamma = 3; double vega = 4; double rho = 5; }`
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

/// `FirstLevelWithGreeks { LTPC ltpc = 1; Quote firstDepth = 2; OptionGreeks optionGreeks = 3;
/// int64 vtt = 4; double oi = 5; double iv = 6; }` (what `option_greeks` mode sends).
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

/// `Feed { oneof FeedUnion { LTPC ltpc = 1; FullFeed fullFeed = 2; FirstLevelWithGreeks
/// firstLevelWithGreeks = 3; } RequestMode requestMode = 4; }`
#[derive(Clone, PartialEq, prost::Message)]
pub struct Feed {
    /// The oneof.
    #[prost(oneof = "FeedUnion", tags = "1, 2, 3")]
    pub union: Option<FeedUnion>,
    /// `ltpc` 0, `full_d5` 1, `option_greeks` 2, `full_d30` 3.
    #[prost(int32, tag = "4")]
    pub request_mode: i32,
}

/// `FeedUnion`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum FeedUnion {
    /// `ltpc`.
    #[prost(message, tag = "1")]
    Ltpc(Ltpc),
    /// `fullFeed`.
    #[prost(message, tag = "2")]
    Full(FullFeed),
    /// `firstLevelWithGreeks`.
    #[prost(message, tag = "3")]
    Greeks(FirstLevelWithGreeks),
}

/// `FeedResponse { Type type = 1; map<string, Feed> feeds = 2; int64 currentTs = 3; MarketInfo marketInfo = 4; }`
#[derive(Clone, PartialEq, prost::Message)]
pub struct FeedResponse {
    /// `initial_feed` 0, `live_feed` 1, `market_info` 2.
    #[prost(int32, tag = "1")]
    pub kind: i32,
    /// By instrument key.
    #[prost(map = "string, message", tag = "2")]
    pub feeds: HashMap<String, Feed>,
    /// Server time, ms.
    #[prost(int64, tag = "3")]
    pub current_ts: i64,
}

/// A live-feed frame with one full-mode market update per `(key, ltp, ltt_ms, volume, bid, ask)`.
#[must_use]
pub fn market_frame(updates: &[(&str, f64, i64, i64, f64, f64)]) -> Vec<u8> {
    let feeds = updates
        .iter()
        .map(|(key, ltp, ltt, vtt, bid, ask)| {
            let market = MarketFullFeed {
                ltpc: Some(Ltpc {
                    ltp: *ltp,
                    ltt: *ltt,
                    ltq: 75,
                    cp: 0.0,
                }),
                market_level: Some(MarketLevel {
                    bid_ask_quote: vec![Quote {
                        bid_q: 75,
                        bid_p: *bid,
                        ask_q: 50,
                        ask_p: *ask,
                    }],
                }),
                atp: *ltp,
                vtt: *vtt,
                oi: 12_000.0,
                tbq: 1_000.0,
            };
            (
                (*key).to_owned(),
                Feed {
                    union: Some(FeedUnion::Full(FullFeed {
                        union: Some(FullFeedUnion::Market(market)),
                    })),
                    request_mode: 1,
                },
            )
        })
        .collect();
    FeedResponse {
        kind: 1,
        feeds,
        current_ts: updates.first().map_or(0, |u| u.2),
    }
    .encode_to_vec()
}

/// A live-feed frame with one full-mode index update.
#[must_use]
pub fn index_frame(key: &str, value: f64, ltt_ms: i64) -> Vec<u8> {
    let index = IndexFullFeed {
        ltpc: Some(Ltpc {
            ltp: value,
            ltt: ltt_ms,
            ltq: 0,
            cp: 0.0,
        }),
    };
    let feeds = HashMap::from([(
        key.to_owned(),
        Feed {
            union: Some(FeedUnion::Full(FullFeed {
                union: Some(FullFeedUnion::Index(index)),
            })),
            request_mode: 1,
        },
    )]);
    FeedResponse {
        kind: 1,
        feeds,
        current_ts: ltt_ms,
    }
    .encode_to_vec()
}

/// One option's update in `option_greeks` mode.
#[derive(Debug, Clone, Copy)]
pub struct GreeksUpdate<'a> {
    /// Instrument key.
    pub key: &'a str,
    /// Last price.
    pub ltp: f64,
    /// Last trade time, ms.
    pub ltt_ms: i64,
    /// Volume traded today.
    pub vtt: i64,
    /// Open interest.
    pub oi: f64,
    /// `(delta, gamma, theta, vega, iv)`.
    pub greeks: (f64, f64, f64, f64, f64),
}

/// A live-feed frame of `option_greeks` mode updates.
#[must_use]
pub fn greeks_frame(updates: &[GreeksUpdate<'_>]) -> Vec<u8> {
    let feeds = updates
        .iter()
        .map(|u| {
            let (delta, gamma, theta, vega, iv) = u.greeks;
            let first = FirstLevelWithGreeks {
                ltpc: Some(Ltpc {
                    ltp: u.ltp,
                    ltt: u.ltt_ms,
                    ltq: 75,
                    cp: 0.0,
                }),
                first_depth: Some(Quote {
                    bid_q: 75,
                    bid_p: u.ltp - 0.05,
                    ask_q: 150,
                    ask_p: u.ltp + 0.05,
                }),
                option_greeks: Some(OptionGreeks {
                    delta,
                    theta,
                    gamma,
                    vega,
                    rho: 0.01,
                }),
                vtt: u.vtt,
                oi: u.oi,
                iv,
            };
            (
                u.key.to_owned(),
                Feed {
                    union: Some(FeedUnion::Greeks(first)),
                    request_mode: 2,
                },
            )
        })
        .collect();
    FeedResponse {
        kind: 1,
        feeds,
        current_ts: updates.first().map_or(0, |u| u.ltt_ms),
    }
    .encode_to_vec()
}
