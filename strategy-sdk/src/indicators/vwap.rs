use crate::market::Bar;
use crate::time::ist_day;

/// Session VWAP: Σ(typical price × volume) / Σ volume since the IST day began.
/// `None` until the session has traded volume (an index has none).
#[derive(Debug, Clone, Default)]
pub struct SessionVwap {
    day: Option<i64>,
    price_volume: f64,
    volume: f64,
}

impl SessionVwap {
    /// A VWAP that has seen nothing.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed the next bar; resets when the bar starts a new IST day.
    pub fn update(&mut self, bar: &Bar) -> Option<f64> {
        let day = ist_day(bar.ts);
        if self.day != Some(day) {
            *self = Self {
                day: Some(day),
                ..Self::default()
            };
        }
        let volume = bar.volume as f64;
        self.price_volume += bar.typical_price() * volume;
        self.volume += volume;
        self.value()
    }

    /// The current VWAP.
    #[must_use]
    pub fn value(&self) -> Option<f64> {
        (self.volume > 0.0).then(|| self.price_volume / self.volume)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY1_0915: i64 = 1_704_080_700_000;
    const DAY_MS: i64 = 86_400_000;

    fn bar(ts: i64, high: f64, low: f64, close: f64, volume: u64) -> Bar {
        Bar {
            ts,
            open: close,
            high,
            low,
            close,
            volume,
            oi: 0,
        }
    }

    #[test]
    fn vwap_table_resets_daily() {
        let mut vwap = SessionVwap::new();
        let cases = [
            (bar(DAY1_0915, 12.0, 8.0, 10.0, 100), Some(10.0)),
            // tp 12 x 300: (1000 + 3600) / 400
            (bar(DAY1_0915 + 60_000, 13.0, 11.0, 12.0, 300), Some(11.5)),
            (bar(DAY1_0915 + 120_000, 13.0, 11.0, 12.0, 0), Some(11.5)),
            // next day: only its own bars count
            (bar(DAY1_0915 + DAY_MS, 21.0, 19.0, 20.0, 0), None),
            (
                bar(DAY1_0915 + DAY_MS + 60_000, 21.0, 19.0, 20.0, 5),
                Some(20.0),
            ),
        ];
        for (i, (b, want)) in cases.iter().enumerate() {
            assert_eq!(vwap.update(b), *want, "bar {i}");
        }
    }
}
