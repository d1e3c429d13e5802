//! Money: decimal amounts read from any input as exact decimals, never through a float's digits.

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer};

/// NSE tick size: every price the exchange takes is a multiple of 0.05.
pub const TICK: Decimal = Decimal::from_parts(5, 0, 0, false, 2);

/// `price` at the nearest tick (a level the host sets itself: a stop, a target).
#[must_use]
pub fn to_tick(price: Decimal) -> Decimal {
    ((price / TICK).round() * TICK).normalize()
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
    }
}
