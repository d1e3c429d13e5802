//! Exchange clock: IST timestamps to and from epoch milliseconds, without a
//! date-time dependency (the formulas are Howard Hinnant's civil-date ones).

pub use strategy_sdk::time::{IST_OFFSET_MS, format_hhmm, ist_day, ist_minute_of_day, parse_hhmm};

const DAY_MS: i64 = 86_400_000;

/// Milliseconds since the Unix epoch, now: the process's wall clock (the exchange's clock is
/// the time the data carries; this one stamps what the process does, and times it out).
#[must_use]
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
#[must_use]
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (days since 1970-01-01).
#[must_use]
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    // Both are provably small and positive: day in 1..=31, month in 1..=12.
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (
        if month <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        month,
        day,
    )
}

fn valid_date(year: i64, month: u32, day: u32) -> bool {
    (1..=12).contains(&month)
        && day >= 1
        && civil_from_days(days_from_civil(year, month, day)) == (year, month, day)
}

/// Epoch milliseconds of an IST wall-clock time.
#[must_use]
pub fn ist_to_epoch_ms(year: i64, month: u32, day: u32, minute_of_day: u32, second: u32) -> i64 {
    days_from_civil(year, month, day) * DAY_MS
        + i64::from(minute_of_day) * 60_000
        + i64::from(second) * 1000
        - IST_OFFSET_MS
}

/// Parse `YYYYMMDD` and `HH:MM` (or `HH:MM:SS`) as IST.
#[must_use]
pub fn parse_compact_date_time(date: &str, time: &str) -> Option<i64> {
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let year: i64 = date[0..4].parse().ok()?;
    let month: u32 = date[4..6].parse().ok()?;
    let day: u32 = date[6..8].parse().ok()?;
    let (minute, second) = parse_time(time)?;
    valid_date(year, month, day).then(|| ist_to_epoch_ms(year, month, day, minute, second))
}

fn parse_time(time: &str) -> Option<(u32, u32)> {
    match time.len() {
        5 => Some((parse_hhmm(time)?, 0)),
        8 => {
            let second: u32 = time.get(6..8)?.parse().ok()?;
            (time.as_bytes().get(5) == Some(&b':') && second < 60).then_some(())?;
            Some((parse_hhmm(time.get(0..5)?)?, second))
        }
        _ => None,
    }
}

/// Parse `YYYY-MM-DD` into a day number.
#[must_use]
pub fn parse_date(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let year: i64 = text[0..4].parse().ok()?;
    let month: u32 = text[5..7].parse().ok()?;
    let day: u32 = text[8..10].parse().ok()?;
    valid_date(year, month, day).then(|| days_from_civil(year, month, day))
}

/// Parse an ISO-8601 timestamp: `2025-08-20T09:15:00+05:30`, `...Z`, or with
/// no offset (then IST), with a `T` or a space between date and time.
#[must_use]
pub fn parse_iso(text: &str) -> Option<i64> {
    let text = text.trim();
    let day = parse_date(text.get(0..10)?)?;
    let sep = text.as_bytes().get(10)?;
    if *sep != b'T' && *sep != b' ' {
        return None;
    }
    let rest = &text[11..];
    let (clock, offset_ms) = if let Some(clock) = rest.strip_suffix('Z') {
        (clock, 0)
    } else if rest.len() > 8 && matches!(rest.as_bytes()[rest.len() - 6], b'+' | b'-') {
        let (clock, off) = rest.split_at(rest.len() - 6);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        (clock, sign * i64::from(parse_hhmm(&off[1..])?) * 60_000)
    } else if rest.len() > 8 && matches!(rest.as_bytes()[rest.len() - 5], b'+' | b'-') {
        // `+0530`, as Kite writes it.
        let (clock, off) = rest.split_at(rest.len() - 5);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let hhmm = format!("{}:{}", off.get(1..3)?, off.get(3..5)?);
        (clock, sign * i64::from(parse_hhmm(&hhmm)?) * 60_000)
    } else {
        (rest, IST_OFFSET_MS)
    };
    let (minute, second) = parse_time(clock.split('.').next()?)?;
    Some(day * DAY_MS + i64::from(minute) * 60_000 + i64::from(second) * 1000 - offset_ms)
}

/// `2024-01-01T09:15:00+05:30`.
#[must_use]
pub fn format_iso_ist(ts_ms: i64) -> String {
    let local = ts_ms.saturating_add(IST_OFFSET_MS);
    let (y, m, d) = civil_from_days(local.div_euclid(DAY_MS));
    let ms_of_day = local.rem_euclid(DAY_MS);
    let (h, min, s) = (
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1000 % 60,
    );
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}+05:30")
}

/// `2024-01-01` (the IST date).
#[must_use]
pub fn format_ist_date(ts_ms: i64) -> String {
    let (y, m, d) = civil_from_days(ist_day(ts_ms));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Day of week of an IST day number, 0 = Monday .. 6 = Sunday.
#[must_use]
pub fn weekday(day: i64) -> u32 {
    // 1970-01-01 was a Thursday.
    (day + 3).rem_euclid(7) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_known_instants() {
        let ts = parse_compact_date_time("20240101", "09:15");
        assert_eq!(ts, Some(1_704_080_700_000));
        assert_eq!(parse_iso("2024-01-01T09:15:00+05:30"), ts);
        assert_eq!(parse_iso("2024-01-01T03:45:00Z"), ts);
        assert_eq!(parse_iso("2024-01-01T09:15:00+0530"), ts, "Kite's offset");
        assert_eq!(parse_iso("2024-01-01 09:15:00"), ts);
        assert_eq!(
            format_iso_ist(1_704_080_700_000),
            "2024-01-01T09:15:00+05:30"
        );
        assert_eq!(format_ist_date(1_704_080_700_000), "2024-01-01");
        assert_eq!(
            weekday(ist_day(1_704_080_700_000)),
            0,
            "2024-01-01 was a Monday"
        );
        for days in [-1000, 0, 19_723, 20_000, 60_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn refuses_malformed() {
        for (date, time) in [
            ("20240230", "09:15"),
            ("2024011", "09:15"),
            ("20240101", "9:15"),
            ("20240101", "09:15:61"),
            ("2024O101", "09:15"),
        ] {
            assert_eq!(parse_compact_date_time(date, time), None, "{date} {time}");
        }
        for text in [
            "2024-01-01",
            "2024-01-01T25:00:00+05:30",
            "2024/01/01T09:15:00",
            "2024-02-30T09:15:00Z",
        ] {
            assert_eq!(parse_iso(text), None, "{text}");
        }
    }
}
