//! Market data is checked before it is believed.
//!
//! A price of zero, a negative one, one off the tick grid or one far from the
//! instrument's last accepted price, a timestamp far from the host's clock or
//! older than the last one accepted: each is refused here, with the
//! instrument and the field named, and never reaches a strategy, a fill or an
//! exit. Every broker feed and the Redis feed pass their ticks through a
//! [`PriceGuard`]; the order side passes the prices it decides on through one
//! too, so a bad message published straight onto the bus is refused as well.

use std::collections::HashMap;

use rust_decimal::Decimal;

use crate::bus::message::check_ts;
use crate::config::MarketSection;

/// What a price must satisfy (`[market]` in `pipelines.toml`, and a source's `max_skew_secs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardRules {
    /// Prices of an instrument whose tick is not known must be whole multiples of this
    /// (`[market] tick`, an explicit override); `None`: they are not checked against a
    /// grid; zero turns every tick check off.
    pub tick: Option<Decimal>,
    /// The tick of named instruments (`[market] ticks`), over what a master says.
    pub ticks: std::sync::Arc<std::collections::BTreeMap<String, Decimal>>,
    /// A price more than this many percent away from its instrument's last
    /// accepted price is refused; zero turns the check off. Options are
    /// exempt: they can double in a minute.
    pub band_pct: Decimal,
    /// No NSE instrument trades above this.
    pub max_price: Decimal,
    /// A timestamp further than this from the host's clock is refused; zero
    /// turns the check off (replays of recorded sessions).
    pub max_skew_ms: i64,
    /// Refuse a timestamp older than the instrument's last accepted one.
    pub in_order: bool,
    /// When the market trades (a feed's silence outside it is no alarm).
    pub calendar: std::sync::Arc<crate::domain::calendar::Calendar>,
}

impl Default for GuardRules {
    fn default() -> Self {
        Self::from_config(&MarketSection::default(), 5)
    }
}

impl GuardRules {
    /// The rules of `[market]` for a feed whose timestamps may be
    /// `max_skew_secs` from the host's clock (0: unchecked).
    #[must_use]
    pub fn from_config(market: &MarketSection, max_skew_secs: u64) -> Self {
        Self {
            tick: market.tick,
            ticks: std::sync::Arc::new(market.ticks.clone()),
            band_pct: market.band_pct,
            max_price: market.max_price,
            max_skew_ms: i64::try_from(max_skew_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
            in_order: true,
            calendar: market.calendar.clone(),
        }
    }
}

/// Why a market message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Zero or negative.
    #[error("{instrument}: {field} {value} is not a positive price")]
    NotPositive {
        /// Instrument.
        instrument: String,
        /// Which price.
        field: &'static str,
        /// Its value.
        value: Decimal,
    },
    /// Not a multiple of the tick.
    #[error("{instrument}: {field} {value} is off the {tick} tick grid")]
    OffTick {
        /// Instrument.
        instrument: String,
        /// Which price.
        field: &'static str,
        /// Its value.
        value: Decimal,
        /// The tick.
        tick: Decimal,
    },
    /// Beyond the ceiling.
    #[error("{instrument}: {field} {value} is above the ceiling of {max}")]
    TooHigh {
        /// Instrument.
        instrument: String,
        /// Which price.
        field: &'static str,
        /// Its value.
        value: Decimal,
        /// The ceiling.
        max: Decimal,
    },
    /// Too far from the last accepted price.
    #[error(
        "{instrument}: {field} {value} is more than {band_pct}% away from the last price {last}"
    )]
    OutsideBand {
        /// Instrument.
        instrument: String,
        /// Which price.
        field: &'static str,
        /// Its value.
        value: Decimal,
        /// The last accepted price.
        last: Decimal,
        /// The band.
        band_pct: Decimal,
    },
    /// Not a time an exchange could have stamped, or too far from the host's clock.
    #[error("{instrument}: {reason}")]
    BadTime {
        /// Instrument.
        instrument: String,
        /// What is wrong with `ts`.
        reason: String,
    },
    /// Older than the last accepted message of the instrument.
    #[error("{instrument}: ts {ts} is older than the last accepted {last}")]
    OutOfOrder {
        /// Instrument.
        instrument: String,
        /// Its time.
        ts: i64,
        /// The last accepted time.
        last: i64,
    },
}

impl Refused {
    /// The field at fault (`last`, `bid`, `ts`, ...).
    #[must_use]
    pub fn field(&self) -> &'static str {
        match self {
            Self::NotPositive { field, .. }
            | Self::OffTick { field, .. }
            | Self::TooHigh { field, .. }
            | Self::OutsideBand { field, .. } => field,
            Self::BadTime { .. } | Self::OutOfOrder { .. } => "ts",
        }
    }

    /// The instrument at fault.
    #[must_use]
    pub fn instrument(&self) -> &str {
        match self {
            Self::NotPositive { instrument, .. }
            | Self::OffTick { instrument, .. }
            | Self::TooHigh { instrument, .. }
            | Self::OutsideBand { instrument, .. }
            | Self::BadTime { instrument, .. }
            | Self::OutOfOrder { instrument, .. } => instrument,
        }
    }
}

pub use crate::domain::contracts::is_option;

/// Whether `symbol` names an index (`NIFTY`, `BANKNIFTY`, `NIFTY 50`, ...):
/// index values are computed to 0.01, not traded on the 0.05 tick.
#[must_use]
pub fn is_index(symbol: &str) -> bool {
    const INDICES: [&str; 9] = [
        "NIFTY",
        "BANKNIFTY",
        "FINNIFTY",
        "MIDCPNIFTY",
        "NIFTYNXT50",
        "SENSEX",
        "BANKEX",
        "INDIAVIX",
        "INDIA VIX",
    ];
    INDICES.contains(&symbol) || symbol.contains(' ')
}

/// Checks the messages of a feed, remembering each instrument's last
/// accepted time and price.
#[derive(Debug, Clone, Default)]
pub struct PriceGuard {
    rules: GuardRules,
    last: HashMap<String, (i64, Decimal)>,
}

impl PriceGuard {
    /// A guard applying `rules`.
    #[must_use]
    pub fn new(rules: GuardRules) -> Self {
        Self {
            rules,
            last: HashMap::new(),
        }
    }

    /// The rules in force.
    #[must_use]
    pub fn rules(&self) -> &GuardRules {
        &self.rules
    }

    /// Check one message of `instrument` at `ts` carrying `prices` (the first
    /// is its last or close price, remembered when accepted); `now_ms` is the
    /// host's clock. Nothing is remembered from a refused message.
    ///
    /// # Errors
    /// The first rule it breaks.
    pub fn check(
        &mut self,
        instrument: &str,
        ts: i64,
        prices: &[(&'static str, Decimal)],
        now_ms: i64,
    ) -> Result<(), Refused> {
        let bad_time = |reason: String| Refused::BadTime {
            instrument: instrument.to_owned(),
            reason,
        };
        check_ts("ts", ts).map_err(bad_time)?;
        if self.rules.max_skew_ms > 0 {
            let skew = ts.saturating_sub(now_ms).saturating_abs();
            if skew > self.rules.max_skew_ms {
                return Err(bad_time(format!(
                    "ts {ts} is {skew} ms from the host clock (at most {} ms allowed)",
                    self.rules.max_skew_ms
                )));
            }
        }
        let last = self.last.get(instrument).copied();
        if let Some((last_ts, _)) = last.filter(|(last_ts, _)| self.rules.in_order && ts < *last_ts)
        {
            return Err(Refused::OutOfOrder {
                instrument: instrument.to_owned(),
                ts,
                last: last_ts,
            });
        }
        for &(field, value) in prices {
            self.check_price(instrument, field, value, last.map(|(_, p)| p))?;
        }
        if let Some(&(_, first)) = prices.first() {
            self.last.insert(instrument.to_owned(), (ts, first));
        }
        Ok(())
    }

    fn check_price(
        &self,
        instrument: &str,
        field: &'static str,
        value: Decimal,
        last: Option<Decimal>,
    ) -> Result<(), Refused> {
        let instrument = || instrument.to_owned();
        if value <= Decimal::ZERO {
            return Err(Refused::NotPositive {
                instrument: instrument(),
                field,
                value,
            });
        }
        if value > self.rules.max_price {
            return Err(Refused::TooHigh {
                instrument: instrument(),
                field,
                value,
                max: self.rules.max_price,
            });
        }
        // The instrument's own tick where it is known (configured, or from its broker's
        // master; an index is computed to 0.01), else the explicit override, else none:
        // a price is never refused for being off a grid the host would only guess.
        if self.rules.tick != Some(Decimal::ZERO) {
            let name = instrument();
            let tick = self
                .rules
                .ticks
                .get(&name)
                .copied()
                .or_else(|| crate::domain::money::known_tick(&name))
                .or_else(|| is_index(&name).then(|| Decimal::new(1, 2)))
                .or(self.rules.tick)
                .filter(|t| *t > Decimal::ZERO);
            if let Some(tick) = tick
                && !(value % tick).is_zero()
            {
                return Err(Refused::OffTick {
                    instrument: name,
                    field,
                    value,
                    tick,
                });
            }
        }
        let band = self.rules.band_pct;
        if let Some(last) = last.filter(|_| band > Decimal::ZERO && !is_option(&instrument())) {
            // value and last are both within (0, max_price]: no overflow.
            let moved_pct = ((value - last).abs() * Decimal::ONE_HUNDRED) / last;
            if moved_pct > band {
                return Err(Refused::OutsideBand {
                    instrument: instrument(),
                    field,
                    value,
                    last,
                    band_pct: band,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    const T0: i64 = 1_704_080_700_000; // 2024-01-01 09:15 IST

    fn guard() -> PriceGuard {
        PriceGuard::new(GuardRules {
            max_skew_ms: 5_000,
            ..GuardRules::default()
        })
    }

    #[test]
    fn refuses_each_kind_of_bad_price() {
        let mut g = guard();
        assert_eq!(
            g.check("NIFTY", T0, &[("last", dec!(21700.05))], T0),
            Ok(())
        );
        for (ts, price, field, kind) in [
            (T0 + 1, dec!(0), "last", "not a positive price"),
            (T0 + 1, dec!(-5), "last", "not a positive price"),
            (T0 + 1, dec!(1e15), "last", "ceiling"),
            (T0 + 1, dec!(21700.035), "last", "tick grid"),
            (T0 + 1, dec!(30000), "last", "away from the last price"),
            (T0 - 1, dec!(21700), "ts", "older than"),
            (T0 + 60_000, dec!(21700), "ts", "from the host clock"),
            (i64::MAX, dec!(21700), "ts", "plausible"),
            (4_102_444_800_000, dec!(21700), "ts", "plausible"),
        ] {
            let e = g.check("NIFTY", ts, &[("last", price)], T0).unwrap_err();
            assert_eq!((e.field(), e.instrument()), (field, "NIFTY"), "{e}");
            assert!(e.to_string().contains(kind), "{e} should say {kind}");
        }
        // Nothing refused was remembered: the last price is still the first one.
        assert_eq!(
            g.check("NIFTY", T0 + 2, &[("last", dec!(21750))], T0),
            Ok(())
        );
    }

    #[test]
    fn each_instrument_trades_on_its_own_tick_and_none_is_guessed() {
        // As an instrument master gives them: RELIANCE on 0.05, YES BANK (under ₹250) on 0.01.
        crate::domain::money::learn_ticks([
            ("GUARDTEST-RELIANCE".to_owned(), dec!(0.05)),
            ("GUARDTEST-YESBANK".to_owned(), dec!(0.01)),
        ]);
        let mut g = guard();
        assert!(
            g.check("GUARDTEST-RELIANCE", T0, &[("last", dec!(2450.03))], T0)
                .unwrap_err()
                .to_string()
                .contains("off the 0.05 tick")
        );
        g.check("GUARDTEST-RELIANCE", T0, &[("last", dec!(2450.05))], T0)
            .unwrap();
        // 1,141 of 1,499 such ticks were refused on a fixed 0.05 grid.
        g.check("GUARDTEST-YESBANK", T0, &[("last", dec!(18.37))], T0)
            .unwrap();
        assert!(
            g.check("GUARDTEST-YESBANK", T0 + 1, &[("last", dec!(18.375))], T0)
                .unwrap_err()
                .to_string()
                .contains("off the 0.01 tick")
        );
        // An instrument whose tick is not known is not held to a guessed grid.
        g.check("GUARDTEST-UNKNOWN", T0, &[("last", dec!(101.37))], T0)
            .unwrap();
        // Indices are computed to the paisa.
        g.check("NIFTY 50", T0, &[("last", dec!(24123.47))], T0)
            .unwrap();
        g.check("BANKNIFTY", T0, &[("last", dec!(48123.01))], T0)
            .unwrap();
        // `[market] ticks` names an instrument's tick; `[market] tick` is the explicit
        // grid of the rest.
        let mut strict = PriceGuard::new(GuardRules {
            tick: Some(dec!(0.05)),
            ticks: std::sync::Arc::new([("GUARDTEST-IRFC".to_owned(), dec!(0.01))].into()),
            ..GuardRules::default()
        });
        strict
            .check("GUARDTEST-IRFC", T0, &[("last", dec!(121.37))], T0)
            .unwrap();
        assert!(
            strict
                .check("GUARDTEST-UNKNOWN", T0, &[("last", dec!(101.37))], T0)
                .is_err()
        );
    }

    #[test]
    fn every_field_is_checked_and_named() {
        let mut g = guard();
        let e = g
            .check("NIFTY", T0, &[("last", dec!(100)), ("bid", dec!(0))], T0)
            .unwrap_err();
        assert_eq!(e.field(), "bid");
    }

    #[test]
    fn options_may_double_and_checks_can_be_turned_off() {
        let mut g = guard();
        g.check("NIFTY28MAR2420800CE", T0, &[("last", dec!(5))], T0)
            .unwrap();
        g.check("NIFTY28MAR2420800CE", T0 + 1, &[("last", dec!(12.50))], T0)
            .unwrap();
        let mut replay = PriceGuard::new(GuardRules {
            max_skew_ms: 0,
            tick: Some(Decimal::ZERO),
            ..GuardRules::default()
        });
        replay
            .check(
                "NIFTY",
                T0 - 86_400_000 * 365,
                &[("last", dec!(21700.03))],
                T0,
            )
            .unwrap();
        assert!(
            is_option("BANKNIFTY24MAR48000PE") && !is_option("NIFTY") && !is_option("RELIANCE-EQ")
        );
    }
}
