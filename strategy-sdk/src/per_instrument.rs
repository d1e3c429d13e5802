//! State kept per instrument, for strategies that trade several symbols.

/// A small map from instrument to state, tuned for the common case of the
/// same instrument arriving many times in a row (one pipeline, one symbol).
#[derive(Debug, Clone, Default)]
pub struct PerInstrument<T> {
    entries: Vec<(String, T)>,
    last: usize,
}

impl<T> PerInstrument<T> {
    /// An empty map.
    #[must_use]
    pub fn new() -> Self {
        Self {
            entries: Vec::new(),
            last: 0,
        }
    }

    /// The state of `instrument`, created with `make` on first sight.
    pub fn get_or_insert_with(&mut self, instrument: &str, make: impl FnOnce() -> T) -> &mut T {
        let hit = match self.entries.get(self.last) {
            Some((name, _)) if name == instrument => Some(self.last),
            _ => self.entries.iter().position(|(name, _)| name == instrument),
        };
        let index = hit.unwrap_or_else(|| {
            self.entries.push((instrument.to_owned(), make()));
            self.entries.len() - 1
        });
        self.last = index;
        &mut self.entries[index].1
    }

    /// Set the state of `instrument`, replacing any it had.
    pub fn insert(&mut self, instrument: &str, value: T) {
        match self.entries.iter_mut().find(|(name, _)| name == instrument) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((instrument.to_owned(), value)),
        }
    }

    /// Every instrument and its state.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &T)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Forget everything.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.last = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_separate_state() {
        let mut m = PerInstrument::new();
        *m.get_or_insert_with("A", || 0) += 1;
        *m.get_or_insert_with("B", || 10) += 1;
        *m.get_or_insert_with("A", || 0) += 1;
        let all: Vec<_> = m.iter().map(|(k, v)| (k.to_owned(), *v)).collect();
        assert_eq!(all, vec![("A".to_owned(), 2), ("B".to_owned(), 11)]);
    }
}
