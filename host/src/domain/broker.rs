//! The brokers an account may name, and what each can do: the one place that says which
//! broker keeps GTTs, reads an instrument master, pushes order updates or serves a market
//! feed. Configuration validation, the order side and the adapters' registry ask
//! [`BrokerKind::capabilities`] instead of matching broker names.

use serde::{Deserialize, Serialize};

/// A broker an account trades through (`paper`: the host's own venue).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BrokerKind {
    /// The paper venue.
    Paper,
    /// OpenAlgo, the open-source bridge to many Indian brokers.
    OpenAlgo,
    /// Zerodha's Kite Connect.
    Kite,
    /// Upstox.
    Upstox,
}

/// What a broker can do, as its API documents it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::struct_excessive_bools)] // each is one documented capability
pub struct Capabilities {
    /// Orders go to a broker (not the paper venue).
    pub live: bool,
    /// A market-data WebSocket a `broker` source can read.
    pub market_feed: bool,
    /// An option chain (a `broker` source's `chain_secs`).
    pub option_chain: bool,
    /// An instrument master the host reads (`[live] instruments`), so symbols, lots and
    /// ticks are resolved before an order is sent.
    pub instrument_master: bool,
    /// Slices an order above the freeze quantity itself (`autoslice`).
    pub autoslice: bool,
    /// Keeps good-till-triggered stops the host can place (delivery protective stops).
    pub gtt: bool,
    /// Modifications it takes per order, where documented.
    pub modification_budget: Option<i64>,
    /// Its own intraday square-off of F&O is after equity's, so the host's default F&O
    /// square-off is later too (Zerodha: 15:25 against 15:20).
    pub later_fno_square_off: bool,
}

impl Capabilities {
    /// What the broker named `name` can do (`None`: no broker has that name).
    #[must_use]
    pub fn of(name: &str) -> Option<Self> {
        BrokerKind::parse(name).map(BrokerKind::capabilities)
    }
}

impl BrokerKind {
    /// Every broker, in the order the configuration's errors list them.
    pub const ALL: [Self; 4] = [Self::Paper, Self::OpenAlgo, Self::Kite, Self::Upstox];

    /// Its name in `pipelines.toml`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Paper => "paper",
            Self::OpenAlgo => "openalgo",
            Self::Kite => "kite",
            Self::Upstox => "upstox",
        }
    }

    /// The broker named `name` in `pipelines.toml`.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Every broker's name, comma-separated (for errors).
    #[must_use]
    pub fn names() -> String {
        Self::ALL.map(Self::as_str).join(", ")
    }

    /// What it can do.
    #[must_use]
    pub fn capabilities(self) -> Capabilities {
        let live = Capabilities {
            live: true,
            market_feed: true,
            option_chain: true,
            instrument_master: false,
            autoslice: false,
            gtt: true,
            modification_budget: None,
            later_fno_square_off: false,
        };
        match self {
            Self::Paper => Capabilities {
                live: false,
                market_feed: false,
                option_chain: false,
                gtt: false,
                ..live
            },
            // OpenAlgo passes modifications to the broker behind it, which may be Zerodha.
            Self::OpenAlgo => Capabilities {
                modification_budget: Some(25),
                ..live
            },
            Self::Kite => Capabilities {
                instrument_master: true,
                autoslice: true,
                modification_budget: Some(25),
                later_fno_square_off: true,
                ..live
            },
            Self::Upstox => Capabilities {
                instrument_master: true,
                ..live
            },
        }
    }
}

impl std::fmt::Display for BrokerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_broker_reads_back_from_its_name_and_nothing_else_does() {
        for kind in BrokerKind::ALL {
            assert_eq!(BrokerKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(BrokerKind::parse("zerodha"), None);
        assert_eq!(
            Capabilities::of("kite"),
            Some(BrokerKind::Kite.capabilities())
        );
        assert_eq!(Capabilities::of("zerodha"), None);
        assert_eq!(BrokerKind::parse("Kite"), None);
        assert_eq!(BrokerKind::names(), "paper, openalgo, kite, upstox");
    }

    #[test]
    fn the_paper_venue_has_no_broker_capability() {
        let paper = BrokerKind::Paper.capabilities();
        assert!(!paper.live && !paper.market_feed && !paper.gtt && !paper.autoslice);
        assert_eq!(paper.modification_budget, None);
        let live: Vec<BrokerKind> = BrokerKind::ALL
            .into_iter()
            .filter(|k| k.capabilities().instrument_master)
            .collect();
        assert_eq!(live, vec![BrokerKind::Kite, BrokerKind::Upstox]);
    }
}
