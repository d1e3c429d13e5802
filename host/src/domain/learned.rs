//! Facts this process has learned about instruments by name (a master's ticks and lots,
//! the configured ticks), shared by every stage that prices or sizes an order.

use std::collections::HashMap;
use std::sync::{OnceLock, PoisonError, RwLock};

/// A process-wide map from an instrument's name to a fact about it.
#[derive(Debug)]
pub struct ByName<V>(OnceLock<RwLock<HashMap<String, V>>>);

impl<V: Copy> ByName<V> {
    /// Nothing learned yet (usable as a `static`).
    #[must_use]
    pub const fn new() -> Self {
        Self(OnceLock::new())
    }

    fn map(&self) -> &RwLock<HashMap<String, V>> {
        self.0.get_or_init(Default::default)
    }

    /// The fact about `name`, if learned.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<V> {
        self.map()
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .copied()
    }

    /// Learn `entries`, over what was known of the same names.
    pub fn extend(&self, entries: impl IntoIterator<Item = (String, V)>) {
        self.map()
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(entries);
    }

    /// Forget everything and learn `entries` instead.
    pub fn replace(&self, entries: impl IntoIterator<Item = (String, V)>) {
        *self.map().write().unwrap_or_else(PoisonError::into_inner) = entries.into_iter().collect();
    }
}

impl<V: Copy> Default for ByName<V> {
    fn default() -> Self {
        Self::new()
    }
}
