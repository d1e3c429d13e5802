use crate::state::{StateError, StateReader, StateWriter};

/// Wilder's RSI, seeded like TA-Lib: the first value comes at input index `n`
/// (the `n + 1`-th price) from the simple averages of the first `n` changes,
/// then averages are smoothed as `avg = (avg * (n - 1) + change) / n`.
/// When both averages are zero (a flat market) the value is 0, as in TA-Lib.
#[derive(Debug, Clone)]
pub struct Rsi {
    n: usize,
    prev: Option<f64>,
    changes: usize,
    avg_gain: f64,
    avg_loss: f64,
    value: Option<f64>,
}

impl Rsi {
    /// An RSI of period `n`; `n` of 0 is treated as 1.
    #[must_use]
    pub fn new(n: usize) -> Self {
        Self {
            n: n.max(1),
            prev: None,
            changes: 0,
            avg_gain: 0.0,
            avg_loss: 0.0,
            value: None,
        }
    }

    /// Feed the next price; `Some(rsi)` in [0, 100] once `n` changes have been seen.
    pub fn update(&mut self, price: f64) -> Option<f64> {
        let prev = self.prev.replace(price)?;
        let change = price - prev;
        let (gain, loss) = if change > 0.0 {
            (change, 0.0)
        } else {
            (0.0, -change)
        };
        let n = self.n as f64;
        self.changes += 1;
        if self.changes <= self.n {
            // Seeding: plain sums, divided once at the n-th change, exactly as TA-Lib does.
            self.avg_gain += gain;
            self.avg_loss += loss;
            if self.changes < self.n {
                return None;
            }
            self.avg_gain /= n;
            self.avg_loss /= n;
        } else {
            self.avg_gain = (self.avg_gain * (n - 1.0) + gain) / n;
            self.avg_loss = (self.avg_loss * (n - 1.0) + loss) / n;
        }
        let total = self.avg_gain + self.avg_loss;
        self.value = Some(if total == 0.0 {
            0.0
        } else {
            100.0 * self.avg_gain / total
        });
        self.value
    }

    /// The current value, once seeded.
    #[must_use]
    pub fn value(&self) -> Option<f64> {
        self.value
    }

    /// Append this indicator's state to a snapshot.
    pub fn save(&self, w: &mut StateWriter) {
        w.u64(self.n as u64)
            .opt_f64(self.prev)
            .u64(self.changes as u64)
            .f64(self.avg_gain)
            .f64(self.avg_loss)
            .opt_f64(self.value);
    }

    /// Restore the state written by [`Rsi::save`] into an RSI of the same period.
    pub fn load(&mut self, r: &mut StateReader<'_>) -> Result<(), StateError> {
        let n = r.u64()?;
        if n != self.n as u64 {
            return Err(StateError(format!(
                "RSI period {n} in snapshot, {} configured",
                self.n
            )));
        }
        self.prev = r.opt_f64()?;
        self.changes =
            usize::try_from(r.u64()?).map_err(|_| StateError("RSI count overflows".into()))?;
        self.avg_gain = r.f64()?;
        self.avg_loss = r.f64()?;
        self.value = r.opt_f64()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsi_table_hand_checked() {
        // changes: +1 +1 -1 +2 -1
        // idx3: gain 2/3, loss 1/3 -> 66.67
        // idx4: gain (2/3*2+2)/3 = 10/9, loss (1/3*2)/3 = 2/9 -> 83.33
        // idx5: gain 20/27, loss 13/27 -> 60.61
        let prices = [10.0, 11.0, 12.0, 11.0, 13.0, 12.0];
        let want = [
            None,
            None,
            None,
            Some(200.0 / 3.0),
            Some(250.0 / 3.0),
            Some(2000.0 / 33.0),
        ];
        let mut rsi = Rsi::new(3);
        for (i, (p, w)) in prices.iter().zip(want).enumerate() {
            let got = rsi.update(*p);
            match (got, w) {
                (Some(g), Some(w)) => assert!((g - w).abs() < 1e-9, "idx {i}: {g} vs {w}"),
                (g, w) => assert_eq!(g, w, "idx {i}"),
            }
        }
    }

    #[test]
    fn flat_and_one_way_markets() {
        let mut flat = Rsi::new(2);
        assert_eq!(
            [5.0, 5.0, 5.0].map(|p| flat.update(p)),
            [None, None, Some(0.0)]
        );
        let mut up = Rsi::new(2);
        assert_eq!(
            [1.0, 2.0, 3.0, 4.0].map(|p| up.update(p)),
            [None, None, Some(100.0), Some(100.0)]
        );
        let mut down = Rsi::new(2);
        assert_eq!(
            [4.0, 3.0, 2.0].map(|p| down.update(p)),
            [None, None, Some(0.0)]
        );
    }
}
