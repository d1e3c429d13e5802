//! Exchange time. NSE runs on IST (UTC+05:30) and labels bars by their start minute.

/// IST offset from UTC, in milliseconds.
pub const IST_OFFSET_MS: i64 = 19_800_000;
const DAY_MS: i64 = 86_400_000;

/// Days since 1970-01-01 in IST: changes at IST midnight.
#[must_use]
pub fn ist_day(ts_ms: i64) -> i64 {
    ts_ms.saturating_add(IST_OFFSET_MS).div_euclid(DAY_MS)
}

/// Minutes since IST midnight (09:15 is 555).
#[must_use]
pub fn ist_minute_of_day(ts_ms: i64) -> u32 {
    // rem_euclid of a positive modulus is in [0, DAY_MS), so the cast cannot truncate.
    (ts_ms.saturating_add(IST_OFFSET_MS).rem_euclid(DAY_MS) / 60_000) as u32
}

/// `"HH:MM"` as minutes since midnight; `None` unless a valid 24-hour time.
#[must_use]
pub fn parse_hhmm(text: &str) -> Option<u32> {
    let (h, m) = text.trim().split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

/// Minutes since midnight as `"HH:MM"`.
#[must_use]
pub fn format_hhmm(minutes: u32) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

/// IST day and minute of successive timestamps, without a division per call
/// when they arrive in order (as bars do): only a new day costs a division.
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionClock {
    day: i64,
    day_start_ms: i64,
}

impl SessionClock {
    /// A clock that has seen nothing.
    #[must_use]
    pub fn new() -> Self {
        Self {
            day: i64::MIN,
            day_start_ms: i64::MIN,
        }
    }

    /// `(ist_day, minute_of_day)` of `ts_ms`, the same as [`ist_day`] and [`ist_minute_of_day`].
    pub fn split(&mut self, ts_ms: i64) -> (i64, u32) {
        let into_day = ts_ms.wrapping_sub(self.day_start_ms);
        if !(0..DAY_MS).contains(&into_day) {
            self.day = ist_day(ts_ms);
            self.day_start_ms = self
                .day
                .saturating_mul(DAY_MS)
                .saturating_sub(IST_OFFSET_MS);
            return (self.day, ist_minute_of_day(ts_ms));
        }
        // Within a day the offset fits in u32 milliseconds, and u32 division by a
        // constant compiles to a multiply everywhere.
        (self.day, into_day as u32 / 60_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ist_clock() {
        // 2024-01-01T09:15:00+05:30 == 2024-01-01T03:45:00Z
        let ts = 1_704_080_700_000;
        assert_eq!(ist_minute_of_day(ts), 9 * 60 + 15);
        assert_eq!(ist_day(ts), 19_723);
        // 23:59 IST is still the same IST day; 00:00 IST the next one.
        assert_eq!(ist_day(ts + (14 * 60 + 44) * 60_000), 19_723);
        assert_eq!(ist_day(ts + (14 * 60 + 45) * 60_000), 19_724);
    }

    #[test]
    fn session_clock_matches_the_plain_functions() {
        let mut clock = SessionClock::new();
        let start = 1_704_080_700_000 - 10 * DAY_MS;
        // In order, out of order, across midnights and years.
        let mut ts: Vec<i64> = (0..5_000).map(|i| start + i * 7_919_000).collect();
        ts.extend([start, start - 1, start + 86_399_999, 0, -1, 1_000]);
        for t in ts {
            assert_eq!(clock.split(t), (ist_day(t), ist_minute_of_day(t)), "{t}");
        }
    }

    #[test]
    fn hhmm() {
        let cases = [
            ("09:15", Some(555)),
            ("15:30", Some(930)),
            ("9:15", None),
            ("24:00", None),
            ("09:60", None),
            ("x", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_hhmm(text), want, "{text}");
        }
        assert_eq!(format_hhmm(555), "09:15");
    }
}
