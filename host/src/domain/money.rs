//! Money: decimal amounts read from any input as exact decimals, never through a float's digits.

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer};

/// The host's own grid for the prices it sets where an instrument's tick is not known
/// (stops, limits, paper fills): 0.05, a multiple of every NSE tick below ₹1,000 (0.01 for
/// stocks under ₹250 since June 2024, 0.05 for options and most stocks). The exchange's
/// tick of an instrument comes from its broker's instrument master ([`known_tick`]).
pub const TICK: Decimal = Decimal::from_parts(5, 0, 0, false, 2);

/// The ticks the exchange gives instruments, as the brokers' instrument masters list them
/// (`tick_size`), by trading symbol: what this process has read, shared by its feeds, its
/// price guards and its live orders.
static TICKS: super::learned::ByName<Decimal> = super::learned::ByName::new();

/// The ticks configured by name (`[market] ticks`): over what a master says.
static CONFIGURED: super::learned::ByName<Decimal> = super::learned::ByName::new();

/// Record the exchange's tick of each `(symbol, tick)` (an instrument master just read).
pub fn learn_ticks(known: impl IntoIterator<Item = (String, Decimal)>) {
    TICKS.extend(known.into_iter().filter(|(_, t)| *t > Decimal::ZERO));
}

/// Replace the configured ticks (a configuration just loaded).
pub fn set_tick_overrides(configured: impl IntoIterator<Item = (String, Decimal)>) {
    CONFIGURED.replace(configured.into_iter().filter(|(_, t)| *t > Decimal::ZERO));
}

/// The exchange's tick of `symbol`: configured, else as an instrument master gave it;
/// `None` when unknown (nothing is then refused for being off a grid the host would only guess).
#[must_use]
pub fn known_tick(symbol: &str) -> Option<Decimal> {
    CONFIGURED.get(symbol).or_else(|| TICKS.get(symbol))
}

/// The grid the host puts `symbol`'s prices on (its stops, limits, paper fills): the
/// instrument's own tick where known, else [`TICK`].
#[must_use]
pub fn tick_of(symbol: &str) -> Decimal {
    known_tick(symbol).unwrap_or(TICK)
}

/// `price` on `tick`'s grid, down (`up` false) or up; kept as it is when it cannot be.
#[must_use]
pub fn on_grid(price: Decimal, tick: Decimal, up: bool) -> Decimal {
    if tick <= Decimal::ZERO {
        return price;
    }
    price
        .checked_div(tick)
        .and_then(|n| if up { n.ceil() } else { n.floor() }.checked_mul(tick))
        .map_or(price, |d| d.normalize())
}

/// `price` at the nearest [`TICK`] (a level the host sets itself: a stop, a target).
#[must_use]
pub fn to_tick(price: Decimal) -> Decimal {
    to_tick_of(price, TICK)
}

/// `price` at the nearest multiple of `tick`; kept as it is when it cannot be.
#[must_use]
pub fn to_tick_of(price: Decimal, tick: Decimal) -> Decimal {
    if tick <= Decimal::ZERO {
        return price;
    }
    price
        .checked_div(tick)
        .and_then(|n| n.round().checked_mul(tick))
        .map_or(price, |d| d.normalize())
}

/// A decimal from a JSON string or number, exactly.
///
/// # Errors
/// Anything that is not a decimal number.
pub fn de_decimal<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(i64),
        Float(f64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Int(i) => Ok(Decimal::from(i)),
        // Through the shortest decimal text, so 0.1 stays 0.1.
        Raw::Float(f) => f.to_string().parse().map_err(serde::de::Error::custom),
        Raw::Text(t) => t
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("expected a decimal number, got {t:?}"))),
    }
}

/// [`de_decimal`] for an optional field.
///
/// # Errors
/// Anything present that is not a decimal number.
pub fn de_opt_decimal<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
    #[derive(Deserialize)]
    struct Wrap(#[serde(deserialize_with = "de_decimal")] Decimal);
    Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    #[test]
    fn levels_go_to_the_nearest_tick() {
        assert_eq!(super::to_tick(dec!(21346.07)), dec!(21346.05));
        assert_eq!(super::to_tick(dec!(21346.08)), dec!(21346.1));
        assert_eq!(super::to_tick(dec!(99.999)), dec!(100));
        // A ₹1,000+ stock ticks in 0.10, a sub-₹250 one in 0.01.
        assert_eq!(super::to_tick_of(dec!(1502.06), dec!(0.1)), dec!(1502.1));
        assert_eq!(super::to_tick_of(dec!(21.4349), dec!(0.01)), dec!(21.43));
    }
}
