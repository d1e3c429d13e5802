//! The words every stage shares, at the bottom of the layer order (see
//! DESIGN.md): order side, product, position mode, credentials, money, the
//! FIFO position and its fill rule, and IST time. Nothing here imports another module of the crate.

pub mod broker;
pub mod calendar;
pub mod contracts;
pub mod learned;
pub mod money;
pub mod order;
pub mod position;
pub mod secret;
pub mod stats;
pub mod time;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

pub use broker::{BrokerKind, Capabilities};
pub use secret::Secret;

/// Direction of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderSide {
    /// Buy.
    Buy,
    /// Sell.
    Sell,
}

impl OrderSide {
    /// `buy` or `sell`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Buy => "buy",
            Self::Sell => "sell",
        }
    }

    /// +1 for a buy, −1 for a sell.
    #[must_use]
    pub fn sign(self) -> Decimal {
        match self {
            Self::Buy => Decimal::ONE,
            Self::Sell => Decimal::NEGATIVE_ONE,
        }
    }

    /// Parse `buy` / `sell`.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "buy" => Some(Self::Buy),
            "sell" => Some(Self::Sell),
            _ => None,
        }
    }
}

/// Where the accounts' orders go (`TRADING_MODE`): on paper, or to the brokers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TradingMode {
    /// Every account trades on the paper venue.
    Paper,
    /// Accounts that name a live broker trade there.
    Live,
}

impl TradingMode {
    /// `paper` or `live`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Paper => "paper",
            Self::Live => "live",
        }
    }

    /// Parse `paper` / `live`.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "paper" => Some(Self::Paper),
            "live" => Some(Self::Live),
            _ => None,
        }
    }
}

impl std::fmt::Display for TradingMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which positions signals may open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PositionMode {
    /// Buy opens a long, sell closes it.
    Long,
    /// Sell opens a short, buy closes it.
    Short,
    /// Buy goes long, sell goes short.
    Both,
}

/// Intraday or delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Product {
    /// Intraday: squared off by the host; trailing stops follow the best bid.
    Mis,
    /// Delivery: carried overnight; trailing stops follow the last price.
    Cnc,
}

/// Which exchange segment an instrument trades on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Segment {
    /// Cash equity (NSE).
    Equity,
    /// Futures and options (NFO).
    Derivative,
}

impl Segment {
    /// `NIFTY28MAR2420800CE`, `BANKNIFTY24MARFUT` → derivatives; anything else → equity.
    #[must_use]
    pub fn of(symbol: &str) -> Self {
        let s = symbol.trim().to_ascii_uppercase();
        if contracts::is_option(&s) || s.ends_with("FUT") {
            Self::Derivative
        } else {
            Self::Equity
        }
    }

    /// The exchange's code: `NSE` (cash) or `NFO` (F&O).
    #[must_use]
    pub fn exchange(self) -> &'static str {
        match self {
            Self::Equity => "NSE",
            Self::Derivative => "NFO",
        }
    }

    /// The key prefix in the instrument master.
    #[must_use]
    pub fn key(self) -> &'static str {
        match self {
            Self::Equity => "EQ",
            Self::Derivative => "FO",
        }
    }
}
