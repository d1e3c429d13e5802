/// Direction of a crossover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cross {
    /// The fast line moved above the slow one.
    Up,
    /// The fast line moved below the slow one.
    Down,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Relation {
    Above,
    Below,
}

/// Detects crossovers between a fast and a slow line.
///
/// Equal lines are a tie, not a cross: the helper remembers the last strict
/// relation and reports a cross only when the opposite strict relation
/// appears, so `below, equal, above` is one cross up and `above, equal,
/// above` is none. Lines closer than `1e-9 × |price|` count as equal, so
/// rounding noise in averages of 2-decimal prices cannot flip a decision.
#[derive(Debug, Clone, Default)]
pub struct Crossover {
    last: Option<Relation>,
}

/// Relative distance under which two averages are considered equal.
pub const TIE_TOLERANCE: f64 = 1e-9;

impl Crossover {
    /// A detector that has seen nothing.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed the next pair of values; returns a cross when one happened.
    pub fn update(&mut self, fast: f64, slow: f64) -> Option<Cross> {
        let tolerance = TIE_TOLERANCE * fast.abs().max(slow.abs());
        let diff = fast - slow;
        let now = if diff > tolerance {
            Relation::Above
        } else if diff < -tolerance {
            Relation::Below
        } else {
            return None;
        };
        match self.last.replace(now) {
            Some(Relation::Below) if now == Relation::Above => Some(Cross::Up),
            Some(Relation::Above) if now == Relation::Below => Some(Cross::Down),
            _ => None,
        }
    }

    /// Whether the fast line is currently above (`Some(true)`), below, or unknown.
    #[must_use]
    pub fn is_above(&self) -> Option<bool> {
        self.last.map(|r| r == Relation::Above)
    }

    /// Encode the state as a byte for snapshots.
    #[must_use]
    pub fn to_byte(&self) -> u8 {
        match self.last {
            None => 0,
            Some(Relation::Above) => 1,
            Some(Relation::Below) => 2,
        }
    }

    /// Decode a byte written by [`Crossover::to_byte`].
    #[must_use]
    pub fn from_byte(b: u8) -> Option<Self> {
        let last = match b {
            0 => None,
            1 => Some(Relation::Above),
            2 => Some(Relation::Below),
            _ => return None,
        };
        Some(Self { last })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table row: its name, the (fast, slow) inputs, the crosses expected.
    type Case<'a> = (&'a str, &'a [(f64, f64)], &'a [Option<Cross>]);

    #[test]
    fn crossover_table() {
        let cases: [Case<'_>; 5] = [
            (
                "simple up",
                &[(1.0, 2.0), (3.0, 2.0)],
                &[None, Some(Cross::Up)],
            ),
            (
                "through a tie",
                &[(1.0, 2.0), (2.0, 2.0), (3.0, 2.0)],
                &[None, None, Some(Cross::Up)],
            ),
            (
                "touch and back is no cross",
                &[(3.0, 2.0), (2.0, 2.0), (3.0, 2.0)],
                &[None, None, None],
            ),
            (
                "first relation is no cross",
                &[(3.0, 2.0), (1.0, 2.0)],
                &[None, Some(Cross::Down)],
            ),
            (
                "rounding noise is a tie",
                &[
                    (21_700.1, 21_700.2),
                    (21_700.15 + 1e-11, 21_700.15),
                    (21_700.15 - 1e-11, 21_700.15),
                ],
                &[None, None, None],
            ),
        ];
        for (name, pairs, want) in cases {
            let mut c = Crossover::new();
            let got: Vec<_> = pairs.iter().map(|(f, s)| c.update(*f, *s)).collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn byte_round_trip() {
        let mut c = Crossover::new();
        c.update(1.0, 2.0);
        let mut d = Crossover::from_byte(c.to_byte()).unwrap();
        assert_eq!(d.update(3.0, 2.0), Some(Cross::Up));
        assert!(Crossover::from_byte(9).is_none());
    }
}
