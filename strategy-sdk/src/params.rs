//! The pipeline's `params` table, as the strategy receives it.

use std::fmt;
use std::str::FromStr;

/// Why a parameter was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    /// The parameter's name.
    pub key: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "param `{}`: {}", self.key, self.reason)
    }
}

impl std::error::Error for ParamError {}

impl ParamError {
    /// An error about `key`.
    pub fn new(key: &str, reason: impl Into<String>) -> Self {
        Self {
            key: key.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Key/value parameters; values arrive as strings (`"10"`, `"true"`, `"ema"`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Parameters from key/value pairs; a later duplicate key wins.
    #[must_use]
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        Self { pairs }
    }

    /// The raw string of `key`, if given.
    #[must_use]
    pub fn raw(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `key` parsed as `T`, or `default` when absent; a value that does not parse is an error.
    pub fn get<T: FromStr>(&self, key: &str, default: T) -> Result<T, ParamError> {
        match self.raw(key) {
            None => Ok(default),
            Some(raw) => raw.trim().parse().map_err(|_| {
                ParamError::new(
                    key,
                    format!("expected {}, got {raw:?}", std::any::type_name::<T>()),
                )
            }),
        }
    }

    /// Refuse any key not in `known`, so that a typo in `pipelines.toml` is caught at load.
    pub fn reject_unknown(&self, known: &[&str]) -> Result<(), ParamError> {
        match self
            .pairs
            .iter()
            .find(|(k, _)| !known.contains(&k.as_str()))
        {
            None => Ok(()),
            Some((k, _)) => Err(ParamError::new(
                k,
                format!("unknown parameter; expected one of: {}", known.join(", ")),
            )),
        }
    }

    /// All pairs, in the order given.
    #[must_use]
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params::new(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn parses_defaults_and_errors() {
        let p = params(&[
            ("fast", "12"),
            ("kind", "ema"),
            ("bad", "x1"),
            ("fast", "13"),
        ]);
        assert_eq!(p.get("fast", 10usize), Ok(13));
        assert_eq!(p.get("slow", 50usize), Ok(50));
        assert_eq!(p.get("kind", String::from("sma")).as_deref(), Ok("ema"));
        let err = p.get("bad", 1.0f64).unwrap_err();
        assert_eq!(err.key, "bad");
        assert!(err.to_string().contains("\"x1\""), "{err}");
    }

    #[test]
    fn unknown_keys_are_named() {
        let p = params(&[("fast", "1"), ("slwo", "2")]);
        let err = p.reject_unknown(&["fast", "slow"]).unwrap_err();
        assert_eq!(err.key, "slwo");
        assert!(p.reject_unknown(&["fast", "slow", "slwo"]).is_ok());
    }
}
