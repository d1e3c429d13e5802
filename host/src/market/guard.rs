//! Market data is checked before it is believed.
//!
//! A price of zero, a negative one, one off the tick grid or one far from the
//! instrument's last accepted price, a timestamp far from the host's clock or
//! older than the last one accepted: each is refused here, with the
//! instrument and the field named, and never reaches a strategy, a fill or an
//! exit. Every broker feed and the Redis feed pass their ticks through a
//! [`PriceGuard`]; the order side passes the prices it decides on through one
//! too, so a bad message published straight onto the bus is refused as well.
//!
//! The band re-anchors. A price beyond `band_pct` of the last accepted one is
//! refused, but remembered as a candidate level: when `gap_ticks` ticks in a
//! row (or `gap_secs` of exchange time) hold that level, it is a real move (a
//! results-day gap, a stock without circuit limits) and is accepted as a
//! [`Gap`]. After `stale_secs` with no accepted price (an outage, the night)
//! the next price sets the level afresh. Neither ever goes beyond the day's
//! circuit limits where the exchange gives them, nor beyond `sanity_multiple`
//! of the reference (the exchange's previous close, else the last accepted
//! price): a burst of absurd prices is refused however long it lasts.

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
    /// Ticks in a row at a new level beyond the band that make it a gap (at least 1).
    pub gap_ticks: u32,
    /// Exchange time at a new level beyond the band that makes it a gap, ms.
    pub gap_ms: i64,
    /// Silence after which the next price sets the level afresh, ms (0: never).
    pub stale_ms: i64,
    /// No price beyond this multiple of the reference, or below the reference over
    /// it (options exempt); zero turns it off.
    pub sanity_multiple: Decimal,
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
            gap_ticks: market.gap_ticks.max(1),
            gap_ms: i64::from(market.gap_secs).saturating_mul(1000),
            stale_ms: i64::from(market.stale_secs).saturating_mul(1000),
            sanity_multiple: market.sanity_multiple,
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
    /// Beyond the day's circuit limits the exchange gave.
    #[error("{instrument}: {field} {value} is outside the circuit limits {lower}..{upper}")]
    OutsideCircuit {
        /// Instrument.
        instrument: String,
        /// Which price.
        field: &'static str,
        /// Its value.
        value: Decimal,
        /// The lower circuit.
        lower: Decimal,
        /// The upper circuit.
        upper: Decimal,
    },
    /// Beyond the sanity bound: never believed, however long it persists.
    #[error(
        "{instrument}: {field} {value} is beyond {multiple}x of the reference {reference}: never believed"
    )]
    Absurd {
        /// Instrument.
        instrument: String,
        /// Which price.
        field: &'static str,
        /// Its value.
        value: Decimal,
        /// The reference (the previous close, else the last accepted price).
        reference: Decimal,
        /// The bound.
        multiple: Decimal,
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
            | Self::OutsideBand { field, .. }
            | Self::OutsideCircuit { field, .. }
            | Self::Absurd { field, .. } => field,
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
            | Self::OutsideCircuit { instrument, .. }
            | Self::Absurd { instrument, .. }
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

/// A move beyond the band taken as real: the band's level re-anchored on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// Instrument.
    pub instrument: String,
    /// The level before (the last accepted price).
    pub from: Decimal,
    /// The level now.
    pub to: Decimal,
    /// Why it was believed: held for so many ticks or seconds, or after a silence.
    pub why: String,
    /// How many ticks at the new level were refused before it was believed (the feed puts
    /// them back into their candles: the gap's first minute opens where the market did).
    pub earlier: u32,
}

impl Gap {
    /// Its `price_gap` event, as `source` saw it.
    #[must_use]
    pub fn event(&self, source: impl Into<String>) -> crate::bus::events::Event {
        crate::bus::events::Event::PriceGap {
            source: source.into(),
            instrument: crate::bus::message::printable(&self.instrument, 40),
            from: self.from.to_string(),
            to: self.to.to_string(),
            why: self.why.clone(),
        }
    }
}

/// The exchange's own reference for an instrument's prices: its previous close
/// and the day's circuit limits, where a feed or master gives them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reference {
    /// Previous close.
    pub close: Option<Decimal>,
    /// The day's lower and upper circuit limits.
    pub circuit: Option<(Decimal, Decimal)>,
}

/// A level beyond the band, waiting to be held long enough to be believed.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    level: Decimal,
    since: i64,
    ticks: u32,
}

/// What the guard remembers of one instrument.
#[derive(Debug, Clone, Default)]
struct Seen {
    /// The last accepted time and price.
    last: Option<(i64, Decimal)>,
    candidate: Option<Candidate>,
    reference: Reference,
    /// The IST day of the reference's close.
    reference_day: Option<i64>,
}

/// Checks the messages of a feed, remembering each instrument's last
/// accepted time and price.
#[derive(Debug, Clone, Default)]
pub struct PriceGuard {
    rules: GuardRules,
    seen: HashMap<String, Seen>,
}

impl PriceGuard {
    /// A guard applying `rules`.
    #[must_use]
    pub fn new(rules: GuardRules) -> Self {
        Self {
            rules,
            seen: HashMap::new(),
        }
    }

    /// The rules in force.
    #[must_use]
    pub fn rules(&self) -> &GuardRules {
        &self.rules
    }

    /// Tell the guard the exchange's reference for `instrument` at `ts` (a feed's
    /// quote packet or a master); a part that is `None` leaves what was known. The
    /// previous close is the day's first one seen: a packet later that day cannot move
    /// it (a corrupt packet would otherwise carry its own absurd reference).
    pub fn set_reference(&mut self, instrument: &str, ts: i64, reference: Reference) {
        let seen = self.seen.entry(instrument.to_owned()).or_default();
        let valid = |p: &Decimal| *p > Decimal::ZERO;
        let day = crate::domain::time::ist_day(ts);
        if let Some(close) = reference.close.filter(valid)
            && seen.reference_day != Some(day)
        {
            seen.reference.close = Some(close);
            seen.reference_day = Some(day);
        }
        if let Some((lo, hi)) = reference
            .circuit
            .filter(|(lo, hi)| valid(lo) && valid(hi) && lo <= hi)
        {
            seen.reference.circuit = Some((lo, hi));
        }
    }

    /// Check one message of `instrument` at `ts` carrying `prices` (the first
    /// is its last or close price, remembered when accepted); `now_ms` is the
    /// host's clock. Nothing is remembered from a refused message but a level
    /// beyond the band, counted towards a gap. `Ok(Some(gap))`: accepted, and the
    /// band's level moved with it.
    ///
    /// # Errors
    /// The first rule it breaks.
    pub fn check(
        &mut self,
        instrument: &str,
        ts: i64,
        prices: &[(&'static str, Decimal)],
        now_ms: i64,
    ) -> Result<Option<Gap>, Refused> {
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
        let seen = self.seen.get(instrument).cloned().unwrap_or_default();
        if let Some((last_ts, _)) = seen
            .last
            .filter(|(last_ts, _)| self.rules.in_order && ts < *last_ts)
        {
            return Err(Refused::OutOfOrder {
                instrument: instrument.to_owned(),
                ts,
                last: last_ts,
            });
        }
        for &(field, value) in prices {
            self.check_price(instrument, field, value, &seen)?;
        }
        let Some(&(first_field, first)) = prices.first() else {
            return Ok(None);
        };
        // The band: against the last accepted price, unless that is stale.
        let banded = self.rules.band_pct > Decimal::ZERO && !is_option(instrument);
        let level = seen.last.filter(|(last_ts, _)| {
            self.rules.stale_ms == 0 || ts.saturating_sub(*last_ts) < self.rules.stale_ms
        });
        let mut gap = None;
        if let Some((_, last)) = level.filter(|_| banded) {
            if self.outside_band(first, last) {
                let held = match seen.candidate {
                    Some(c) if !self.outside_band(first, c.level) && ts >= c.since => Candidate {
                        level: c.level,
                        since: c.since,
                        ticks: c.ticks.saturating_add(1),
                    },
                    _ => Candidate {
                        level: first,
                        since: ts,
                        ticks: 1,
                    },
                };
                let for_ms = ts.saturating_sub(held.since);
                if held.ticks >= self.rules.gap_ticks
                    || (held.ticks > 1 && for_ms >= self.rules.gap_ms)
                {
                    gap = Some(Gap {
                        instrument: instrument.to_owned(),
                        from: last,
                        to: first,
                        why: format!(
                            "held for {} ticks over {} s beyond the {}% band",
                            held.ticks,
                            for_ms / 1000,
                            self.rules.band_pct
                        ),
                        earlier: held.ticks.saturating_sub(1),
                    });
                } else {
                    self.seen
                        .entry(instrument.to_owned())
                        .or_default()
                        .candidate = Some(held);
                    return Err(Refused::OutsideBand {
                        instrument: instrument.to_owned(),
                        field: first_field,
                        value: first,
                        last,
                        band_pct: self.rules.band_pct,
                    });
                }
            }
        } else if let Some((last_ts, last)) = seen.last.filter(|_| banded)
            && self.outside_band(first, last)
        {
            gap = Some(Gap {
                instrument: instrument.to_owned(),
                from: last,
                to: first,
                why: format!(
                    "the first price after {} s without one",
                    ts.saturating_sub(last_ts) / 1000
                ),
                earlier: 0,
            });
        }
        // The other prices of the message against the level it sets.
        if banded {
            for &(field, value) in prices.iter().skip(1) {
                if self.outside_band(value, first) {
                    return Err(Refused::OutsideBand {
                        instrument: instrument.to_owned(),
                        field,
                        value,
                        last: first,
                        band_pct: self.rules.band_pct,
                    });
                }
            }
        }
        let entry = self.seen.entry(instrument.to_owned()).or_default();
        entry.last = Some((ts, first));
        entry.candidate = None;
        Ok(gap)
    }

    /// Whether `value` is further than the band from `level`.
    fn outside_band(&self, value: Decimal, level: Decimal) -> bool {
        // Both within (0, max_price] once checked: no overflow.
        level > Decimal::ZERO
            && ((value - level).abs() * Decimal::ONE_HUNDRED) / level > self.rules.band_pct
    }

    fn check_price(
        &self,
        instrument: &str,
        field: &'static str,
        value: Decimal,
        seen: &Seen,
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
        if let Some((lower, upper)) = seen.reference.circuit
            && (value < lower || value > upper)
        {
            return Err(Refused::OutsideCircuit {
                instrument: instrument(),
                field,
                value,
                lower,
                upper,
            });
        }
        let multiple = self.rules.sanity_multiple;
        let reference = seen.reference.close.or(seen.last.map(|(_, p)| p));
        if let Some(reference) =
            reference.filter(|_| multiple > Decimal::ONE && !is_option(&instrument()))
        {
            // reference and value are both within (0, max_price]; multiple is a config value.
            let above = value.checked_div(reference).unwrap_or(Decimal::MAX);
            let below = reference.checked_div(value).unwrap_or(Decimal::MAX);
            if above > multiple || below > multiple {
                return Err(Refused::Absurd {
                    instrument: instrument(),
                    field,
                    value,
                    reference,
                    multiple,
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
            Ok(None)
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
            Ok(None)
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

    const MIN: i64 = 60_000;

    /// The rules of a replay: no clock skew checked.
    fn replay() -> GuardRules {
        GuardRules {
            max_skew_ms: 0,
            ..GuardRules::default()
        }
    }

    #[test]
    fn a_gap_that_holds_is_believed_and_the_band_moves_with_it() {
        let mut g = guard();
        g.check("GAPTEST", T0, &[("last", dec!(100))], T0).unwrap();
        // A results-day move of 25%: refused while it might be a bad print...
        for n in 1..5 {
            let ts = T0 + n * 1000;
            let e = g
                .check("GAPTEST", ts, &[("last", dec!(125))], ts)
                .unwrap_err();
            assert!(matches!(e, Refused::OutsideBand { .. }), "{e}");
        }
        // ... and believed on the fifth tick that holds the level.
        let ts = T0 + 5_000;
        let gap = g
            .check("GAPTEST", ts, &[("last", dec!(125.5))], ts)
            .unwrap()
            .expect("a gap");
        assert_eq!((gap.from, gap.to), (dec!(100), dec!(125.5)));
        assert!(gap.why.contains("5 ticks"), "{}", gap.why);
        assert_eq!(
            gap.earlier, 4,
            "the four refused before it, for the candles"
        );
        // The band now stands at the new level: trading goes on there.
        assert_eq!(
            g.check("GAPTEST", ts + 1000, &[("last", dec!(126))], ts + 1000),
            Ok(None)
        );
        assert!(
            g.check("GAPTEST", ts + 2000, &[("last", dec!(100))], ts + 2000)
                .is_err()
        );
    }

    #[test]
    fn a_gap_is_believed_after_its_seconds_and_a_stray_print_restarts_the_count() {
        let mut g = PriceGuard::new(GuardRules {
            gap_ticks: 100,
            gap_ms: 30_000,
            ..replay()
        });
        g.check("GAPTEST", T0, &[("last", dec!(100))], 0).unwrap();
        assert!(
            g.check("GAPTEST", T0 + 1000, &[("last", dec!(75))], 0)
                .is_err()
        );
        // A tick back inside the band forgets the candidate.
        assert_eq!(
            g.check("GAPTEST", T0 + 2000, &[("last", dec!(100.5))], 0),
            Ok(None)
        );
        assert!(
            g.check("GAPTEST", T0 + 3000, &[("last", dec!(75))], 0)
                .is_err()
        );
        assert!(
            g.check("GAPTEST", T0 + 20_000, &[("last", dec!(74))], 0)
                .is_err()
        );
        let gap = g
            .check("GAPTEST", T0 + 33_000, &[("last", dec!(74.5))], 0)
            .unwrap()
            .expect("held 30 s");
        assert!(gap.why.contains("30 s"), "{}", gap.why);
    }

    #[test]
    fn the_first_price_after_a_long_silence_sets_the_level_afresh() {
        let mut g = PriceGuard::new(replay());
        g.check("GAPTEST", T0, &[("last", dec!(100))], 0).unwrap();
        // An hour's outage; the stock moved 25% meanwhile.
        let after = T0 + 60 * MIN;
        let gap = g
            .check("GAPTEST", after, &[("last", dec!(125))], 0)
            .unwrap()
            .expect("a gap after the silence");
        assert!(gap.why.contains("3600 s"), "{}", gap.why);
        // The next morning's open, 18 hours later, likewise.
        let next = after + 18 * 60 * MIN;
        assert!(
            g.check("GAPTEST", next, &[("last", dec!(90))], 0)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn absurd_prices_are_refused_however_long_they_last() {
        let mut g = guard();
        g.check("GAPTEST", T0, &[("last", dec!(100))], T0).unwrap();
        for n in 1..=50 {
            let ts = T0 + n * 1000;
            let e = g
                .check("GAPTEST", ts, &[("last", dec!(1000))], ts)
                .unwrap_err();
            assert!(matches!(e, Refused::Absurd { .. }), "tick {n}: {e}");
        }
        // Not even after a silence.
        let mut quiet = PriceGuard::new(replay());
        quiet
            .check("GAPTEST", T0, &[("last", dec!(100))], 0)
            .unwrap();
        assert!(matches!(
            quiet.check("GAPTEST", T0 + 120 * MIN, &[("last", dec!(1000))], 0),
            Err(Refused::Absurd { .. })
        ));
        // The exchange's previous close is the reference where it is known.
        quiet.set_reference(
            "GAPTEST",
            T0,
            Reference {
                close: Some(dec!(400)),
                circuit: None,
            },
        );
        // Later that day a packet cannot move it.
        quiet.set_reference(
            "GAPTEST",
            T0 + MIN,
            Reference {
                close: Some(dec!(1000)),
                circuit: None,
            },
        );
        assert_eq!(
            quiet.check("GAPTEST", T0 + 240 * MIN, &[("last", dec!(1000))], 0),
            Ok(Some(Gap {
                instrument: "GAPTEST".into(),
                from: dec!(100),
                to: dec!(1000),
                why: "the first price after 14400 s without one".into(),
                earlier: 0,
            }))
        );
    }

    #[test]
    fn no_gap_goes_beyond_the_circuit_limits() {
        let mut g = guard();
        g.set_reference(
            "GAPTEST",
            T0,
            Reference {
                close: Some(dec!(100)),
                circuit: Some((dec!(90), dec!(110))),
            },
        );
        g.check("GAPTEST", T0, &[("last", dec!(100))], T0).unwrap();
        for n in 1..=20 {
            let ts = T0 + n * 1000;
            let e = g
                .check("GAPTEST", ts, &[("last", dec!(125))], ts)
                .unwrap_err();
            assert!(matches!(e, Refused::OutsideCircuit { .. }), "{e}");
            assert!(e.to_string().contains("90..110"), "{e}");
        }
        g.check("GAPTEST", T0 + 30_000, &[("last", dec!(110))], T0 + 30_000)
            .unwrap();
    }
}
