use crate::state::{StateError, StateReader, StateWriter};

/// Simple moving average over the last `n` values.
#[derive(Debug, Clone)]
pub struct Sma {
    window: Vec<f64>,
    next: usize,
    filled: bool,
    sum: f64,
}

impl Sma {
    /// An SMA over `n` values; `n` of 0 is treated as 1.
    #[must_use]
    pub fn new(n: usize) -> Self {
        Self {
            window: vec![0.0; n.max(1)],
            next: 0,
            filled: false,
            sum: 0.0,
        }
    }

    /// The window length.
    #[must_use]
    pub fn period(&self) -> usize {
        self.window.len()
    }

    /// Feed the next value; `Some(average)` once `n` values have been seen.
    pub fn update(&mut self, x: f64) -> Option<f64> {
        let n = self.window.len();
        let old = std::mem::replace(&mut self.window[self.next], x);
        self.sum += x - old;
        self.next += 1;
        if self.next == n {
            self.next = 0;
            self.filled = true;
            // A running sum drifts by rounding over millions of bars; re-adding the window
            // once per lap keeps it exact to the last ulp at O(1) amortised cost.
            self.sum = self.window.iter().sum();
        }
        self.value()
    }

    /// The current average, once the window is full.
    #[must_use]
    pub fn value(&self) -> Option<f64> {
        self.filled.then(|| self.sum / self.window.len() as f64)
    }

    /// Append this indicator's state to a snapshot.
    pub fn save(&self, w: &mut StateWriter) {
        w.f64s(&self.window)
            .u64(self.next as u64)
            .bool(self.filled)
            .f64(self.sum);
    }

    /// Restore the state written by [`Sma::save`] into an SMA of the same period.
    pub fn load(&mut self, r: &mut StateReader<'_>) -> Result<(), StateError> {
        let window = r.f64s()?;
        if window.len() != self.window.len() {
            return Err(StateError(format!(
                "SMA period {} in snapshot, {} configured",
                window.len(),
                self.window.len()
            )));
        }
        let next = usize::try_from(r.u64()?).ok().filter(|n| *n < window.len());
        self.next = next.ok_or_else(|| StateError("SMA cursor out of range".into()))?;
        self.window = window;
        self.filled = r.bool()?;
        self.sum = r.f64()?;
        Ok(())
    }
}

/// Exponential moving average, seeded like TA-Lib: the first value, at the
/// `n`-th input, is the simple average of the first `n` inputs; after that
/// `ema += (x - ema) * 2 / (n + 1)`.
#[derive(Debug, Clone)]
pub struct Ema {
    n: usize,
    alpha: f64,
    seen: usize,
    seed_sum: f64,
    value: Option<f64>,
}

impl Ema {
    /// An EMA of period `n`; `n` of 0 is treated as 1.
    #[must_use]
    pub fn new(n: usize) -> Self {
        let n = n.max(1);
        Self {
            n,
            alpha: 2.0 / (n as f64 + 1.0),
            seen: 0,
            seed_sum: 0.0,
            value: None,
        }
    }

    /// The period.
    #[must_use]
    pub fn period(&self) -> usize {
        self.n
    }

    /// Feed the next value; `Some(ema)` from the `n`-th value on.
    pub fn update(&mut self, x: f64) -> Option<f64> {
        match self.value {
            Some(prev) => self.value = Some((x - prev) * self.alpha + prev),
            None => {
                self.seen += 1;
                self.seed_sum += x;
                if self.seen == self.n {
                    self.value = Some(self.seed_sum / self.n as f64);
                }
            }
        }
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
            .u64(self.seen as u64)
            .f64(self.seed_sum)
            .opt_f64(self.value);
    }

    /// Restore the state written by [`Ema::save`] into an EMA of the same period.
    pub fn load(&mut self, r: &mut StateReader<'_>) -> Result<(), StateError> {
        let n = r.u64()?;
        if n != self.n as u64 {
            return Err(StateError(format!(
                "EMA period {n} in snapshot, {} configured",
                self.n
            )));
        }
        self.seen =
            usize::try_from(r.u64()?).map_err(|_| StateError("EMA count overflows".into()))?;
        self.seed_sum = r.f64()?;
        self.value = r.opt_f64()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(mut f: impl FnMut(f64) -> Option<f64>, xs: &[f64]) -> Vec<Option<f64>> {
        xs.iter().map(|x| f(*x)).collect()
    }

    /// A table row: the period, the inputs, the outputs expected.
    type Case<'a> = (usize, &'a [f64], &'a [Option<f64>]);

    #[test]
    fn sma_table() {
        let cases: [Case<'_>; 3] = [
            (
                3,
                &[1.0, 2.0, 3.0, 4.0, 5.0],
                &[None, None, Some(2.0), Some(3.0), Some(4.0)],
            ),
            (1, &[7.0, 8.0], &[Some(7.0), Some(8.0)]),
            (
                2,
                &[10.0, 20.0, 40.0, 10.0],
                &[None, Some(15.0), Some(30.0), Some(25.0)],
            ),
        ];
        for (n, xs, want) in cases {
            let mut sma = Sma::new(n);
            assert_eq!(run(|x| sma.update(x), xs), want, "SMA({n})");
        }
    }

    #[test]
    fn ema_table_uses_talib_seeding() {
        let cases: [Case<'_>; 2] = [
            (
                3,
                &[1.0, 2.0, 3.0, 4.0, 5.0],
                &[None, None, Some(2.0), Some(3.0), Some(4.0)],
            ),
            // seed = (2+4+6)/3 = 4; k = 0.5: 4 + (8-4)/2 = 6; 6 + (4-6)/2 = 5
            (
                3,
                &[2.0, 4.0, 6.0, 8.0, 4.0],
                &[None, None, Some(4.0), Some(6.0), Some(5.0)],
            ),
        ];
        for (n, xs, want) in cases {
            let mut ema = Ema::new(n);
            assert_eq!(run(|x| ema.update(x), xs), want, "EMA({n})");
        }
    }

    #[test]
    fn sma_does_not_drift_over_a_million_updates() {
        let mut sma = Sma::new(50);
        let mut last = None;
        for i in 0..1_000_000u64 {
            last = sma.update(40_000.0 + (i % 997) as f64 * 0.05);
        }
        let exact: f64 = (1_000_000u64 - 50..1_000_000)
            .map(|i| 40_000.0 + (i % 997) as f64 * 0.05)
            .sum::<f64>()
            / 50.0;
        let got = last.unwrap_or(f64::NAN);
        assert!((got - exact).abs() < 1e-9, "{got} vs {exact}");
    }

    #[test]
    fn snapshots_round_trip() {
        let mut a = Sma::new(4);
        let mut e = Ema::new(4);
        for x in [1.0, 5.0, 2.0, 8.0, 3.0, 9.0] {
            a.update(x);
            e.update(x);
        }
        let mut w = StateWriter::new();
        a.save(&mut w);
        e.save(&mut w);
        let bytes = w.finish();
        let (mut b, mut f) = (Sma::new(4), Ema::new(4));
        let mut r = StateReader::new(&bytes);
        b.load(&mut r).unwrap();
        f.load(&mut r).unwrap();
        r.finish().unwrap();
        for x in [4.0, 6.0, 1.0] {
            assert_eq!(a.update(x), b.update(x));
            assert_eq!(e.update(x), f.update(x));
        }
        assert!(Sma::new(5).load(&mut StateReader::new(&bytes)).is_err());
    }
}
