//! Exchange time. NSE runs on IST (UTC+05:30) and labels bars by their start minute.

/// IST offset from UTC, in milliseconds.
pub const IST_OFFSET_MS: i64 = 19_800_000;
const DAY_MS: i64 = 86_400_000;

/// Days since 1970-01-01 in IST: changes at IST midnight.
#[must_use]
pub fn ist_day(ts_ms: i64) -> i64 {
    (ts_ms + IST_OFFSET_MS).div_euclid(DAY_MS)
}

/// Minutes since IST midnight (09:15 is 555).
#[must_use]
pub fn ist_minute_of_day(ts_ms: i64) -> u32 {
    // rem_euclid of a positive modulus is in [0, DAY_MS), so the cast cannot truncate.
    ((ts_ms + IST_OFFSET_MS).rem_euclid(DAY_MS) / 60_000) as u32
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
    fn hhmm() {
        let cases = [("09:15", Some(555)), ("15:30", Some(930)), ("9:15", None), ("24:00", None), ("09:60", None), ("x", None)];
        for (text, want) in cases {
            assert_eq!(parse_hhmm(text), want, "{text}");
        }
        assert_eq!(format_hhmm(555), "09:15");
    }
}
