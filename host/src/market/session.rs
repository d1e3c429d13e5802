//! The NSE cash and F&O session: bars starting 09:15 ≤ t < 15:30 IST.
//! Anything outside (a 09:14 pre-open print, junk after the close on a
//! special Saturday session) is dropped before a strategy sees it.

use super::clock::{format_hhmm, ist_minute_of_day, parse_hhmm};

/// A trading session as IST minutes since midnight, `[open, close)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    /// First minute a bar may start at.
    pub open_minute: u32,
    /// First minute a bar may no longer start at.
    pub close_minute: u32,
}

impl Default for Session {
    fn default() -> Self {
        Self::NSE
    }
}

impl Session {
    /// 09:15–15:30 IST.
    pub const NSE: Self = Self {
        open_minute: 555,
        close_minute: 930,
    };

    /// Parse `HH:MM-HH:MM`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (open, close) = text
            .split_once('-')
            .ok_or_else(|| format!("expected HH:MM-HH:MM, got {text:?}"))?;
        let open_minute = parse_hhmm(open).ok_or_else(|| format!("bad session open {open:?}"))?;
        let close_minute =
            parse_hhmm(close).ok_or_else(|| format!("bad session close {close:?}"))?;
        if close_minute <= open_minute {
            return Err(format!("session close {close} is not after open {open}"));
        }
        Ok(Self {
            open_minute,
            close_minute,
        })
    }

    /// Whether a bar starting at `ts_ms` lies inside the session.
    #[must_use]
    pub fn contains(&self, ts_ms: i64) -> bool {
        (self.open_minute..self.close_minute).contains(&ist_minute_of_day(ts_ms))
    }
}

impl std::fmt::Display for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}-{}",
            format_hhmm(self.open_minute),
            format_hhmm(self.close_minute)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::parse_compact_date_time;

    #[test]
    fn nse_session_bounds() {
        let at = |t| parse_compact_date_time("20240120", t).unwrap_or(0);
        let cases = [
            ("09:14", false),
            ("09:15", true),
            ("12:00", true),
            ("15:29", true),
            ("15:30", false),
            ("18:16", false),
        ];
        for (t, inside) in cases {
            assert_eq!(Session::NSE.contains(at(t)), inside, "{t}");
        }
    }

    #[test]
    fn parse_session() {
        assert_eq!(Session::parse("09:15-15:30"), Ok(Session::NSE));
        assert_eq!(
            Session::parse("09:55-15:31")
                .map(|s| s.to_string())
                .as_deref(),
            Ok("09:55-15:31")
        );
        assert!(Session::parse("15:30-09:15").is_err());
        assert!(Session::parse("0915-1530").is_err());
    }
}
