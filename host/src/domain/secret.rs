//! A credential that never prints itself, and the scrubber that removes every
//! known credential from text the process emits.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, RwLock};

/// A credential. `Debug` shows `Secret(***)`; there is no `Display` and no
/// `Serialize`: the value leaves only through [`Secret::expose`], at the
/// point where a request is built.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wrap a value and register it for [`scrub`].
    #[must_use]
    pub fn new(value: &str) -> Self {
        register(value);
        Self(Arc::from(value))
    }

    /// The value, for a request header or body. Never format it into a message.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(Self::new(&s))
    }
}

fn registry() -> &'static RwLock<BTreeSet<String>> {
    static KNOWN: std::sync::OnceLock<RwLock<BTreeSet<String>>> = std::sync::OnceLock::new();
    KNOWN.get_or_init(|| RwLock::new(BTreeSet::new()))
}

fn register(value: &str) {
    // Very short values would scrub ordinary words; no real key is this short.
    if value.len() >= 6
        && let Ok(mut known) = registry().write()
    {
        known.insert(value.to_owned());
    }
}

/// `text` with every known secret replaced by `***`: applied to everything
/// the process logs or publishes, in case a broker echoes a token back in an
/// error message.
#[must_use]
pub fn scrub(text: &str) -> String {
    let Ok(known) = registry().read() else {
        return text.to_owned();
    };
    let mut out = text.to_owned();
    // Longest first, so a secret containing another is replaced whole.
    let mut values: Vec<&String> = known.iter().filter(|v| out.contains(v.as_str())).collect();
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    for v in values {
        out = out.replace(v.as_str(), "***");
    }
    out
}

/// Tokens handed over by `token` commands, per account; they win over the secrets.
pub type TokenOverrides = Arc<RwLock<std::collections::HashMap<String, Secret>>>;
