//! Money: decimal amounts read from any input as exact decimals, never through a float's digits.

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer};

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
        Raw::Text(t) => t.trim().parse().map_err(|_| serde::de::Error::custom(format!("expected a decimal number, got {t:?}"))),
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
