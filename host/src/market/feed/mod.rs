//! Broker market feeds: ticks (and order postbacks) over each broker's
//! WebSocket, decoded from its documented wire format.
//!
//! This module knows wire formats and sockets, not credentials or instrument
//! masters: those belong to the brokers stage, which hands a [`FeedPlan`]
//! down (the instruments as broker tokens, and a [`Connector`] that yields
//! the address to open, credentials included, each time a connection is
//! made). [`socket::run`] keeps the connections up: one per
//! [`Wire::max_per_connection`] instruments, reconnecting with back-off and
//! subscribing again after every reconnect.

pub mod kite;
pub mod openalgo;
pub mod socket;
pub mod upstox;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use rust_decimal::Decimal;

/// One price update as a broker sent it, keyed by the broker's token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedTick {
    /// The broker's instrument token.
    pub token: String,
    /// Exchange time, ms since the epoch; `None` for packets that carry none
    /// (Kite's LTP and quote modes): those never make a candle.
    pub ts_ms: Option<i64>,
    /// Last traded price.
    pub last: Decimal,
    /// Best bid.
    pub bid: Option<Decimal>,
    /// Best ask.
    pub ask: Option<Decimal>,
    /// Volume traded today (cumulative).
    pub day_volume: Option<u64>,
    /// Open interest.
    pub oi: Option<u64>,
    /// The previous session's close, where the packet carries it: the price band's
    /// reference (see `market::guard`).
    pub prev_close: Option<Decimal>,
    /// An option's greeks, where the packet carries them (Upstox's `option_greeks` mode).
    pub greeks: Option<super::Greeks>,
}

/// What one frame held.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedItem {
    /// A price.
    Tick(FeedTick),
    /// An order update pushed by the broker (its own JSON).
    Order(serde_json::Value),
    /// The broker reported an error on the socket.
    BrokerError(String),
}

/// A frame that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// A request to send on a feed's socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
}

/// Which broker's wire format a feed speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// Kite Connect's binary ticker.
    Kite,
    /// Upstox's Market Data Feed V3 (protobuf).
    Upstox,
    /// OpenAlgo's WebSocket proxy (JSON).
    OpenAlgo,
}

impl Wire {
    /// The wire of `broker` (a name from `[[accounts]] broker`), if it has a feed here.
    #[must_use]
    pub fn of(broker: &str) -> Option<Self> {
        use crate::domain::BrokerKind;
        match BrokerKind::parse(broker)? {
            BrokerKind::Kite => Some(Self::Kite),
            BrokerKind::Upstox => Some(Self::Upstox),
            BrokerKind::OpenAlgo => Some(Self::OpenAlgo),
            BrokerKind::Paper => None,
        }
    }

    /// The broker it is the feed of.
    #[must_use]
    pub fn broker(self) -> crate::domain::BrokerKind {
        use crate::domain::BrokerKind;
        match self {
            Self::Kite => BrokerKind::Kite,
            Self::Upstox => BrokerKind::Upstox,
            Self::OpenAlgo => BrokerKind::OpenAlgo,
        }
    }

    /// Its name.
    #[must_use]
    pub fn name(self) -> &'static str {
        self.broker().as_str()
    }

    /// Least time between two historical-data requests (the read-back of missed bars):
    /// Kite allows 3 a second (kept a little under); Upstox 50 a second but 500 a minute
    /// (so 8 a second);
    /// OpenAlgo 50 a second itself (`API_RATE_LIMIT`), but it passes them to a broker
    /// behind it, of which Zerodha's 3 a second is the tightest.
    #[must_use]
    pub fn history_every(self) -> std::time::Duration {
        match self {
            Self::Kite | Self::OpenAlgo => std::time::Duration::from_millis(350),
            Self::Upstox => std::time::Duration::from_millis(125),
        }
    }

    /// Most instruments one connection may carry.
    #[must_use]
    pub fn max_per_connection(self) -> usize {
        match self {
            Self::Kite => kite::MAX_PER_CONNECTION,
            Self::Upstox => upstox::MAX_PER_CONNECTION,
            Self::OpenAlgo => openalgo::MAX_PER_CONNECTION,
        }
    }

    /// Most connections one account may hold.
    #[must_use]
    pub fn max_connections(self) -> usize {
        match self {
            Self::Kite => kite::MAX_CONNECTIONS,
            Self::Upstox => upstox::MAX_CONNECTIONS,
            Self::OpenAlgo => openalgo::MAX_CONNECTIONS,
        }
    }

    /// The requests that subscribe `tokens`.
    #[must_use]
    pub fn subscribe(self, tokens: &[String]) -> Vec<Outbound> {
        match self {
            Self::Kite => kite::subscribe(tokens)
                .into_iter()
                .map(Outbound::Text)
                .collect(),
            Self::Upstox => vec![Outbound::Binary(upstox::subscribe(tokens))],
            Self::OpenAlgo => vec![Outbound::Text(openalgo::subscribe(tokens))],
        }
    }

    /// The requests that subscribe the options `tokens` of a chain's strikes: at Upstox in
    /// `option_greeks` mode (price, best bid and ask, volume, OI and the greeks), elsewhere
    /// as any instrument.
    #[must_use]
    pub fn subscribe_options(self, tokens: &[String]) -> Vec<Outbound> {
        match self {
            Self::Upstox => vec![Outbound::Binary(upstox::subscribe_in(
                tokens,
                upstox::Mode::OptionGreeks,
            ))],
            other => other.subscribe(tokens),
        }
    }

    /// The requests that unsubscribe `tokens`.
    #[must_use]
    pub fn unsubscribe(self, tokens: &[String]) -> Vec<Outbound> {
        match self {
            Self::Kite => vec![Outbound::Text(kite::unsubscribe(tokens))],
            Self::Upstox => vec![Outbound::Binary(upstox::unsubscribe(tokens))],
            Self::OpenAlgo => vec![Outbound::Text(openalgo::unsubscribe(tokens))],
        }
    }

    /// Decode a binary frame into `out`.
    ///
    /// # Errors
    /// A frame that does not follow the format; `out` keeps what came before the fault.
    pub fn decode_binary(self, frame: &[u8], out: &mut Vec<FeedItem>) -> Result<(), DecodeError> {
        match self {
            Self::Kite => kite::decode_binary(frame, out),
            Self::Upstox => upstox::decode_binary(frame, out),
            Self::OpenAlgo => Err(DecodeError(format!(
                "a binary frame of {} bytes; OpenAlgo sends JSON text",
                frame.len()
            ))),
        }
    }

    /// Decode a text frame.
    ///
    /// # Errors
    /// A frame that does not follow the format.
    pub fn decode_text(self, frame: &str) -> Result<Option<FeedItem>, DecodeError> {
        match self {
            Self::Kite => kite::decode_text(frame),
            // Market data only as protobuf; text carries the portfolio stream's order updates.
            Self::Upstox => upstox::decode_text(frame),
            Self::OpenAlgo => openalgo::decode_text(frame),
        }
    }
}

/// A boxed future, as the connector returns.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Where and how to open one connection.
#[derive(Clone, PartialEq, Eq)]
pub struct FeedAddress {
    /// The WebSocket address (Kite's carries the credentials in its query).
    pub url: String,
    /// The first messages, sent before subscribing (OpenAlgo's authentication, and on
    /// an order stream its `subscribe_orders`).
    pub login: Vec<String>,
}

impl FeedAddress {
    /// An address with no login message.
    #[must_use]
    pub fn url(url: String) -> Self {
        Self {
            url,
            login: Vec::new(),
        }
    }
}

impl fmt::Debug for FeedAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FeedAddress(***)") // both parts may hold credentials
    }
}

/// Yields the address of a new connection (credentials included: the broker
/// stage builds it, and for Upstox asks the authorize endpoint each time).
pub type Connector = Arc<dyn Fn() -> BoxFuture<Result<FeedAddress, String>> + Send + Sync>;

/// Everything a feed needs to run.
#[derive(Clone)]
pub struct FeedPlan {
    /// The account whose broker it is (for messages).
    pub account: String,
    /// The wire format.
    pub wire: Wire,
    /// `(our symbol, broker token)` of every instrument.
    pub instruments: Vec<(String, String)>,
    /// How to open a connection.
    pub connect: Connector,
    /// Where the one-minute bars missed while the feed was down are read back from
    /// (the broker's historical candles); `None`: not filled in.
    pub backfill: Option<Backfill>,
}

/// Reads one instrument's one-minute bars from the broker's historical candles:
/// `(broker token, from, to)`, bars whose start is in `[from, to)`, ascending.
pub type Backfill =
    Arc<dyn Fn(String, i64, i64) -> BoxFuture<Result<Vec<super::Bar>, String>> + Send + Sync>;

impl fmt::Debug for FeedPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The connector holds credentials: never printed.
        f.debug_struct("FeedPlan")
            .field("account", &self.account)
            .field("wire", &self.wire)
            .field("instruments", &self.instruments.len())
            .finish_non_exhaustive()
    }
}

/// Resolves a `broker` source (account, symbols) into a plan: the brokers
/// stage implements it (credentials, instrument master) and the engine calls
/// it when a pipeline with such a source starts.
pub type FeedResolver =
    Arc<dyn Fn(String, Vec<String>) -> BoxFuture<Result<FeedPlan, String>> + Send + Sync>;

/// One option-chain snapshot and the broker's token of each of its options.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainSnapshot {
    /// The chain.
    pub chain: super::OptionChain,
    /// `(strike, is_call, token)` of each option, for subscribing the strikes around the money.
    pub tokens: Vec<(Decimal, bool, String)>,
}

/// Takes one option-chain snapshot from the broker (the brokers stage builds it).
pub type ChainSource = Arc<dyn Fn() -> BoxFuture<Result<ChainSnapshot, String>> + Send + Sync>;

/// Resolves an option chain for a `broker` source with `chain_secs`: (account,
/// underlying symbol, expiry or `None` for the nearest) into a [`ChainSource`].
pub type ChainResolver = Arc<
    dyn Fn(String, String, Option<String>) -> BoxFuture<Result<ChainSource, String>> + Send + Sync,
>;

/// What the engine needs from the brokers stage to run `broker` sources.
#[derive(Clone)]
pub struct BrokerLinks {
    /// Ticks.
    pub feed: FeedResolver,
    /// Option chains.
    pub chain: ChainResolver,
}

impl fmt::Debug for BrokerLinks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BrokerLinks")
    }
}
