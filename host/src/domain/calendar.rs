//! The exchange's trading calendar: which days NSE opens, and when. Holidays and
//! special sessions (Muhurat trading, a late open, an early close) are data, one
//! TOML file a year (`calendars/nse-<year>.toml`, bundled in the binary; a
//! configuration may add or replace years). Weekends are closed unless a file
//! lists a session on them; every other weekday is a regular 09:15–15:30 session.
//!
//! Times an account sets for a regular day (its entry window, its square-off) are
//! carried to a special session by [`Hours::shift`]: a time before noon keeps its
//! distance from the open, a later one its distance from the close, so a 15:15
//! square-off is fifteen minutes before any session's close.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::time::{
    civil_from_days, days_from_civil, format_hhmm, ist_day, ist_minute_of_day, parse_date,
    parse_hhmm, weekday,
};

/// A day's trading hours, IST minutes of the day: `[open, close)`, less a pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hours {
    /// The first minute of trading.
    pub open: u32,
    /// The first minute after it.
    pub close: u32,
    /// `[from, until)` within the session when nothing trades (the 2024 Saturday sessions
    /// moved from NSE's primary site to its disaster-recovery site between 10:00 and 11:30).
    pub pause: Option<(u32, u32)>,
}

/// A regular NSE session: 09:15–15:30.
pub const REGULAR: Hours = Hours::new(9 * 60 + 15, 15 * 60 + 30);

impl Hours {
    /// `[open, close)` without a pause.
    #[must_use]
    pub const fn new(open: u32, close: u32) -> Self {
        Self {
            open,
            close,
            pause: None,
        }
    }

    /// Whether `minute` is within trading.
    #[must_use]
    pub fn contains(self, minute: u32) -> bool {
        (self.open..self.close).contains(&minute)
            && !self
                .pause
                .is_some_and(|(from, until)| (from..until).contains(&minute))
    }

    /// A time set for a regular session, carried to this one: before noon it keeps
    /// its distance from the open, from noon its distance from the close; within the session.
    #[must_use]
    pub fn shift(self, regular_minute: u32) -> u32 {
        if self == REGULAR {
            return regular_minute;
        }
        let moved = if regular_minute < 12 * 60 {
            self.open
                .saturating_add(regular_minute.saturating_sub(REGULAR.open))
        } else {
            self.close
                .saturating_sub(REGULAR.close.saturating_sub(regular_minute))
        };
        moved.clamp(self.open, self.close)
    }
}

/// The first day (2025-09-01) NSE's index options expire on Tuesdays; before it, Thursdays.
const TUESDAY_EXPIRIES_FROM: (i64, u32, u32) = (2025, 9, 1);

/// The weekday (0 = Monday) NSE's weekly index options expire on, on `day`.
#[must_use]
pub fn index_expiry_weekday(day: i64) -> u32 {
    let (y, m, d) = TUESDAY_EXPIRIES_FROM;
    if day >= days_from_civil(y, m, d) {
        1
    } else {
        3
    }
}

/// What a listed day is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Day {
    /// Closed, for this reason.
    Holiday(String),
    /// Open at these hours (a special session), named.
    Session(String, Hours),
}

/// A calendar file or entry that could not be read: where, and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}:{line}: {field}: {message}")]
pub struct CalendarError {
    /// The file.
    pub source_name: String,
    /// 1-based line (0: the file as a whole).
    pub line: usize,
    /// The entry's field.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// What a day in a year with no calendar file is (`[market] unknown_year`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownYear {
    /// Weekdays are regular sessions, weekends closed (its holidays are not known).
    #[default]
    Weekdays,
    /// Prices still flow, but no entry is taken: a day the host cannot vouch for.
    Refuse,
}

impl UnknownYear {
    /// As written in the configuration.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Weekdays => "weekdays",
            Self::Refuse => "refuse",
        }
    }
}

/// The trading days of the years it knows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Calendar {
    days: BTreeMap<i64, Day>,
    years: BTreeSet<i64>,
    /// Years whose file is not yet the exchange's own list (`provisional = true`).
    provisional: BTreeSet<i64>,
    unknown_year: UnknownYear,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    year: toml::Spanned<i64>,
    /// Not yet the exchange's own list (derived before its circular).
    #[serde(default)]
    provisional: bool,
    #[serde(default)]
    holiday: Vec<Entry>,
    #[serde(default)]
    session: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    date: toml::Spanned<String>,
    name: String,
    #[serde(default)]
    open: Option<toml::Spanned<String>>,
    #[serde(default)]
    close: Option<toml::Spanned<String>>,
    /// `HH:MM-HH:MM` within a session when nothing trades.
    #[serde(default)]
    pause: Option<toml::Spanned<String>>,
}

/// The years of the bundled calendars (`calendars/nse-<year>.toml`).
pub const BUNDLED_YEARS: [i64; 4] = [2024, 2025, 2026, 2027];

/// The calendars bundled in the binary.
const BUNDLED: [(&str, &str); 4] = [
    (
        "calendars/nse-2024.toml",
        include_str!("../../../calendars/nse-2024.toml"),
    ),
    (
        "calendars/nse-2025.toml",
        include_str!("../../../calendars/nse-2025.toml"),
    ),
    (
        "calendars/nse-2026.toml",
        include_str!("../../../calendars/nse-2026.toml"),
    ),
    (
        "calendars/nse-2027.toml",
        include_str!("../../../calendars/nse-2027.toml"),
    ),
];

impl Calendar {
    /// NSE's calendar as bundled (the years of `calendars/`).
    ///
    /// # Panics
    /// Never: the bundled files are checked by a unit test.
    #[must_use]
    pub fn nse() -> Self {
        let mut c = Self::default();
        for (name, text) in BUNDLED {
            match Self::parse(name, text) {
                Ok(year) => c.extend(year),
                Err(e) => tracing::error!("bundled calendar: {e}"),
            }
        }
        c
    }

    /// Read one year's file; `source_name` names it in errors.
    ///
    /// # Errors
    /// Not TOML, an unknown field, a date that is not `YYYY-MM-DD` of the file's
    /// year, a session without `open` and `close` or with `close` not after `open`,
    /// a holiday with times, a day listed twice.
    pub fn parse(source_name: &str, text: &str) -> Result<Self, CalendarError> {
        let line_of = |offset: usize| {
            text.get(..offset)
                .map_or(0, |t| t.matches('\n').count() + 1)
        };
        let err = |offset: usize, field: &str, message: String| CalendarError {
            source_name: source_name.to_owned(),
            line: line_of(offset),
            field: field.to_owned(),
            message,
        };
        let file: File = toml::from_str(text).map_err(|e| {
            err(
                e.span().map_or(0, |s| s.start),
                "(file)",
                e.message().trim().to_owned(),
            )
        })?;
        let year = *file.year.get_ref();
        if !(1990..=2200).contains(&year) {
            return Err(err(
                file.year.span().start,
                "year",
                format!("{year} is not a calendar year"),
            ));
        }
        let mut c = Self {
            days: BTreeMap::new(),
            years: BTreeSet::from([year]),
            provisional: if file.provisional {
                BTreeSet::from([year])
            } else {
                BTreeSet::new()
            },
            unknown_year: UnknownYear::default(),
        };
        for (kind, entries) in [("holiday", file.holiday), ("session", file.session)] {
            for e in entries {
                let at = e.date.span().start;
                let day = parse_date(e.date.get_ref()).ok_or_else(|| {
                    err(
                        at,
                        &format!("{kind}.date"),
                        format!("{:?}: expected YYYY-MM-DD", e.date.get_ref()),
                    )
                })?;
                if !(days_from_civil(year, 1, 1)..days_from_civil(year + 1, 1, 1)).contains(&day) {
                    return Err(err(
                        at,
                        &format!("{kind}.date"),
                        format!("{} is not in {year}, the file's year", e.date.get_ref()),
                    ));
                }
                let time = |t: &Option<toml::Spanned<String>>,
                            field: &str|
                 -> Result<Option<u32>, CalendarError> {
                    t.as_ref()
                        .map(|t| {
                            parse_hhmm(t.get_ref()).ok_or_else(|| {
                                err(
                                    t.span().start,
                                    &format!("{kind}.{field}"),
                                    format!("{:?}: expected HH:MM", t.get_ref()),
                                )
                            })
                        })
                        .transpose()
                };
                let (open, close) = (time(&e.open, "open")?, time(&e.close, "close")?);
                let pause = e
                    .pause
                    .as_ref()
                    .map(|p| {
                        let bad = |why: &str| {
                            err(
                                p.span().start,
                                &format!("{kind}.pause"),
                                format!("{:?}: {why}", p.get_ref()),
                            )
                        };
                        let (from, until) = p
                            .get_ref()
                            .split_once('-')
                            .and_then(|(a, b)| Some((parse_hhmm(a.trim())?, parse_hhmm(b.trim())?)))
                            .ok_or_else(|| bad("expected HH:MM-HH:MM"))?;
                        let inside = open.zip(close).is_some_and(|(o, c)| o < from && from < until && until < c);
                        if inside { Ok((from, until)) } else { Err(bad("a pause lies inside its session, after the open and before the close")) }
                    })
                    .transpose()?;
                let entry = match (kind, open, close) {
                    ("holiday", None, None) if pause.is_none() => Day::Holiday(e.name),
                    ("holiday", ..) => {
                        return Err(err(
                            at,
                            "holiday",
                            format!(
                                "{}: a holiday has no open or close; list a shortened day as a [[session]]",
                                e.date.get_ref()
                            ),
                        ));
                    }
                    (_, Some(open), Some(close)) if open < close => {
                        Day::Session(e.name, Hours { open, close, pause })
                    }
                    (_, Some(_), Some(_)) => {
                        return Err(err(
                            at,
                            "session.close",
                            format!("{}: the close is not after the open", e.date.get_ref()),
                        ));
                    }
                    _ => {
                        return Err(err(
                            at,
                            "session",
                            format!(
                                "{}: a session needs both open and close (HH:MM)",
                                e.date.get_ref()
                            ),
                        ));
                    }
                };
                if c.days.insert(day, entry).is_some() {
                    return Err(err(
                        at,
                        &format!("{kind}.date"),
                        format!("{} is listed twice", e.date.get_ref()),
                    ));
                }
            }
        }
        Ok(c)
    }

    /// Add `other`'s years, replacing any year both have.
    pub fn extend(&mut self, other: Self) {
        for year in &other.years {
            let (from, to) = (
                days_from_civil(*year, 1, 1),
                days_from_civil(year + 1, 1, 1),
            );
            self.days.retain(|d, _| !(from..to).contains(d));
            self.provisional.remove(year);
        }
        self.years.extend(other.years);
        self.provisional.extend(other.provisional);
        self.days.extend(other.days);
    }

    /// Whether a file for `year` was read (other years: weekdays open, weekends closed).
    #[must_use]
    pub fn knows(&self, year: i64) -> bool {
        self.years.contains(&year)
    }

    /// The year of IST day `day`, when the calendar has no file for it.
    #[must_use]
    pub fn unknown_year_of(&self, day: i64) -> Option<i64> {
        let (year, ..) = civil_from_days(day);
        (!self.knows(year)).then_some(year)
    }

    /// The year of IST day `day`, when its file is provisional (not yet the exchange's list).
    #[must_use]
    pub fn provisional_year_of(&self, day: i64) -> Option<i64> {
        let (year, ..) = civil_from_days(day);
        self.provisional.contains(&year).then_some(year)
    }

    /// What a day of a year without a file is.
    #[must_use]
    pub fn unknown_year(&self) -> UnknownYear {
        self.unknown_year
    }

    /// Set what a day of a year without a file is.
    pub fn set_unknown_year(&mut self, policy: UnknownYear) {
        self.unknown_year = policy;
    }

    /// The hours entries may be taken in on IST day `day`, or why none may: a
    /// holiday, a weekend, or a year without a file under the `refuse` policy.
    ///
    /// # Errors
    /// Why the day takes no entries.
    pub fn entry_hours(&self, day: i64) -> Result<Hours, String> {
        if let Some(year) = self.unknown_year_of(day)
            && self.unknown_year == UnknownYear::Refuse
        {
            return Err(format!(
                "{year} has no trading calendar file ([market] unknown_year = \"refuse\")"
            ));
        }
        self.hours(day)
            .ok_or_else(|| self.closed_because(day).unwrap_or_else(|| "closed".into()))
    }

    /// The years it knows.
    #[must_use]
    pub fn years(&self) -> Vec<i64> {
        self.years.iter().copied().collect()
    }

    /// The trading hours of IST day `day` (days since 1970-01-01); `None` when closed.
    #[must_use]
    pub fn hours(&self, day: i64) -> Option<Hours> {
        match self.days.get(&day) {
            Some(Day::Holiday(_)) => None,
            Some(Day::Session(_, hours)) => Some(*hours),
            None if weekday(day) >= 5 => None,
            None => Some(REGULAR),
        }
    }

    /// Why day `day` is closed (`Republic Day`, `a Sunday`); `None` when it trades.
    #[must_use]
    pub fn closed_because(&self, day: i64) -> Option<String> {
        match self.days.get(&day) {
            Some(Day::Holiday(name)) => Some(name.clone()),
            Some(Day::Session(..)) => None,
            None => match weekday(day) {
                5 => Some("a Saturday".into()),
                6 => Some("a Sunday".into()),
                _ => None,
            },
        }
    }

    /// A listed special session on `day`, by name.
    #[must_use]
    pub fn session_name(&self, day: i64) -> Option<&str> {
        match self.days.get(&day) {
            Some(Day::Session(name, _)) => Some(name),
            _ => None,
        }
    }

    /// Whether the market trades at `ts_ms`.
    #[must_use]
    pub fn is_open(&self, ts_ms: i64) -> bool {
        self.hours(ist_day(ts_ms))
            .is_some_and(|h| h.contains(ist_minute_of_day(ts_ms)))
    }

    /// The weekly index expiry on or after `day`: the expiry weekday of its week
    /// (Tuesday from September 2025, Thursday before), or the trading day before
    /// it when that is a holiday.
    #[must_use]
    pub fn weekly_expiry(&self, day: i64) -> i64 {
        let mut week_start = day - i64::from(weekday(day));
        loop {
            let nominal = week_start + i64::from(index_expiry_weekday(week_start));
            let mut expiry = nominal;
            while self.hours(expiry).is_none() && expiry > nominal - 7 {
                expiry -= 1;
            }
            if expiry >= day {
                return expiry;
            }
            week_start += 7;
        }
    }

    /// `09:15-15:30`, or `closed (Republic Day)`, for messages.
    #[must_use]
    pub fn describe(&self, day: i64) -> String {
        match (self.hours(day), self.closed_because(day)) {
            (
                Some(Hours {
                    open,
                    close,
                    pause: Some((from, until)),
                }),
                _,
            ) => format!(
                "{}-{}, {}-{}",
                format_hhmm(open),
                format_hhmm(from),
                format_hhmm(until),
                format_hhmm(close)
            ),
            (Some(h), _) => format!("{}-{}", format_hhmm(h.open), format_hhmm(h.close)),
            (None, Some(why)) => format!("closed ({why})"),
            (None, None) => "closed".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(y: i64, m: u32, d: u32) -> i64 {
        days_from_civil(y, m, d)
    }

    #[test]
    fn the_bundled_files_read_and_know_their_holidays() {
        for (name, text) in BUNDLED {
            Calendar::parse(name, text).unwrap_or_else(|e| panic!("{e}"));
        }
        let c = Calendar::nse();
        assert_eq!(c.years(), BUNDLED_YEARS.to_vec());
        assert_eq!(c.hours(day(2026, 1, 26)), None);
        assert_eq!(
            c.closed_because(day(2026, 1, 26)).as_deref(),
            Some("Republic Day")
        );
        assert_eq!(c.hours(day(2026, 1, 27)), Some(REGULAR), "a Tuesday");
        assert_eq!(
            c.closed_because(day(2026, 1, 24)).as_deref(),
            Some("a Saturday")
        );
        // Muhurat 2025: a holiday with an hour of trading.
        let muhurat = c.hours(day(2025, 10, 21)).unwrap();
        assert_eq!((muhurat.open, muhurat.close), (13 * 60 + 45, 14 * 60 + 45));
        // A year without a file: weekdays trade, and the year is named as unknown.
        assert!(!c.knows(2028));
        assert_eq!(c.hours(day(2028, 1, 26)), Some(REGULAR));
        assert_eq!(c.unknown_year_of(day(2028, 1, 26)), Some(2028));
        assert_eq!(c.unknown_year_of(day(2026, 1, 27)), None);
        // 2027 is known, but only provisionally until NSE's circular.
        assert_eq!(c.provisional_year_of(day(2027, 3, 22)), Some(2027));
        assert_eq!(c.provisional_year_of(day(2026, 3, 3)), None);
        assert_eq!(c.closed_because(day(2027, 3, 22)).as_deref(), Some("Holi"));
        // Budget days on a weekend trade.
        assert_eq!(c.hours(day(2025, 2, 1)), Some(REGULAR));
        assert_eq!(c.hours(day(2026, 2, 1)), Some(REGULAR));
    }

    #[test]
    fn the_2024_saturday_sessions_trade_and_the_dr_switch_pauses() {
        let c = Calendar::nse();
        // Moved from Monday 22 January, a special holiday: a full Saturday.
        assert_eq!(c.hours(day(2024, 1, 20)), Some(REGULAR));
        assert_eq!(c.entry_hours(day(2024, 1, 20)), Ok(REGULAR));
        assert!(c.hours(day(2024, 1, 22)).is_none());
        assert_eq!(
            c.closed_because(day(2024, 1, 26)).as_deref(),
            Some("Republic Day")
        );
        // 2 March: 09:15-10:00 on the primary site, 11:30-12:30 on the recovery site.
        let dr = c.hours(day(2024, 3, 2)).expect("a session");
        for (hhmm, trades) in [
            ((9, 15), true),
            ((9, 59), true),
            ((10, 0), false),
            ((11, 29), false),
            ((11, 30), true),
            ((12, 29), true),
            ((12, 30), false),
        ] {
            assert_eq!(dr.contains(hhmm.0 * 60 + hhmm.1), trades, "{hhmm:?}");
        }
        assert_eq!(c.describe(day(2024, 5, 18)), "09:15-10:00, 11:30-12:30");
        let muhurat = c.hours(day(2024, 11, 1)).expect("Muhurat");
        assert_eq!((muhurat.open, muhurat.close), (18 * 60, 19 * 60));
    }

    #[test]
    fn a_year_without_a_file_follows_its_policy() {
        let mut c = Calendar::nse();
        let monday = day(2028, 1, 3);
        assert_eq!(c.entry_hours(monday), Ok(REGULAR), "weekdays by default");
        c.set_unknown_year(UnknownYear::Refuse);
        let e = c.entry_hours(monday).unwrap_err();
        assert!(e.contains("2028 has no trading calendar"), "{e}");
        assert_eq!(c.hours(monday), Some(REGULAR), "prices still make bars");
        assert_eq!(
            c.entry_hours(day(2026, 1, 27)),
            Ok(REGULAR),
            "a known year trades"
        );
    }

    #[test]
    fn a_pause_outside_its_session_names_its_line() {
        let e = Calendar::parse("c.toml", "year = 2027\n[[session]]\ndate = \"2027-03-06\"\nname = \"dr\"\nopen = \"09:15\"\nclose = \"12:30\"\npause = \"12:00-13:00\"\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (7, "session.pause"), "{e}");
        let e = Calendar::parse("c.toml", "year = 2027\n[[session]]\ndate = \"2027-03-06\"\nname = \"dr\"\nopen = \"09:15\"\nclose = \"12:30\"\npause = \"10:00\"\n").unwrap_err();
        assert!(e.message.contains("HH:MM-HH:MM"), "{e}");
    }

    #[test]
    fn weekly_expiries_moved_to_tuesday_in_september_2025_and_before_a_holiday() {
        let c = Calendar::nse();
        assert_eq!(
            c.weekly_expiry(day(2025, 8, 25)),
            day(2025, 8, 28),
            "a Thursday before the change"
        );
        assert_eq!(
            c.weekly_expiry(day(2025, 9, 1)),
            day(2025, 9, 2),
            "Tuesday from September 2025"
        );
        assert_eq!(
            c.weekly_expiry(day(2025, 9, 3)),
            day(2025, 9, 9),
            "after this week's: the next"
        );
        assert_eq!(
            c.weekly_expiry(day(2026, 3, 30)),
            day(2026, 3, 30),
            "Tuesday 31 March 2026 is Mahavir Jayanti: Monday"
        );
        assert_eq!(c.weekly_expiry(day(2026, 1, 26)), day(2026, 1, 27));
    }

    #[test]
    fn times_move_with_a_special_session() {
        let muhurat = Hours::new(18 * 60, 19 * 60);
        assert_eq!(
            muhurat.shift(15 * 60 + 15),
            18 * 60 + 45,
            "a square-off 15 minutes before the close stays 15 minutes before it"
        );
        assert_eq!(
            muhurat.shift(9 * 60 + 15),
            18 * 60,
            "the entry window's start is the session's open"
        );
        assert_eq!(muhurat.shift(9 * 60 + 30), 18 * 60 + 15);
        let late = Hours::new(11 * 60, 15 * 60 + 30);
        assert_eq!(late.shift(9 * 60 + 20), 11 * 60 + 5);
        assert_eq!(
            late.shift(15 * 60 + 20),
            15 * 60 + 20,
            "a regular close keeps a regular square-off"
        );
        let short = Hours::new(9 * 60 + 15, 9 * 60 + 30);
        assert_eq!(
            short.shift(11 * 60 + 59),
            9 * 60 + 30,
            "clamped to the session"
        );
        assert_eq!(REGULAR.shift(15 * 60 + 15), 15 * 60 + 15);
    }

    #[test]
    fn bad_files_name_their_line_and_field() {
        let e = Calendar::parse(
            "c.toml",
            "year = 2027\n[[holiday]]\ndate = \"2027-02-30\"\nname = \"x\"\n",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "c.toml:3: holiday.date: \"2027-02-30\": expected YYYY-MM-DD"
        );
        let e = Calendar::parse(
            "c.toml",
            "year = 2027\n[[holiday]]\ndate = \"2026-12-25\"\nname = \"x\"\n",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("c.toml:3: holiday.date: 2026-12-25 is not in 2027"),
            "{e}"
        );
        let e = Calendar::parse("c.toml", "year = 2027\n[[session]]\ndate = \"2027-11-07\"\nname = \"m\"\nopen = \"19:00\"\nclose = \"18:00\"\n").unwrap_err();
        assert_eq!(e.field, "session.close");
        let e = Calendar::parse("c.toml", "year = 2027\n[[session]]\ndate = \"2027-11-07\"\nname = \"m\"\nopen = \"25:00\"\nclose = \"18:00\"\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (5, "session.open"));
        let e = Calendar::parse("c.toml", "year = 2027\n[[holiday]]\ndate = \"2027-01-26\"\nname = \"x\"\n[[holiday]]\ndate = \"2027-01-26\"\nname = \"y\"\n").unwrap_err();
        assert!(e.message.contains("listed twice"), "{e}");
        let e = Calendar::parse("c.toml", "year = 2027\nholidays = []\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
    }

    #[test]
    fn a_later_file_replaces_its_year_only() {
        let mut c = Calendar::nse();
        c.extend(Calendar::parse("x.toml", "year = 2026\n[[session]]\ndate = \"2026-11-08\"\nname = \"Muhurat\"\nopen = \"18:00\"\nclose = \"19:00\"\n").unwrap());
        assert_eq!(
            c.hours(day(2026, 1, 26)),
            Some(REGULAR),
            "2026 is now the new file's"
        );
        assert_eq!(
            c.hours(day(2026, 11, 8)),
            Some(Hours::new(18 * 60, 19 * 60)),
            "a Sunday session"
        );
        assert_eq!(c.hours(day(2025, 12, 25)), None, "2025 untouched");
    }
}
