//! The recorder: what a broker source received (ticks and option-chain
//! snapshots), written to daily files so a live session can be replayed exactly.
//!
//! One gzip-compressed CSV per pipeline, IST day and process start,
//! `<record_dir>/<YYYY-MM-DD>/<pipeline>.<HHMMSSmmm>.ticks.csv.gz`, with the columns
//! `ts_ms,instrument,last,bid,ask,day_volume,oi,refused` (`refused` is empty
//! for a tick that was believed, else why the guard refused it), and beside it
//! `….chains.csv.gz` with `ts_ms,underlying,spot,expiry,strike,option_type,last,oi,volume`,
//! a row per strike and side of each snapshot, and `….bars.csv.gz` with
//! `ts_ms,instrument,timeframe_secs,open,high,low,close,volume,oi`: the bars read back
//! from the broker after a disconnection (they had no tick to record). CSV.gz was
//! chosen over Parquet: a tick is appended as it arrives, a file written by
//! a process that is killed stays readable up to its last flush (gzip members
//! are flushed every second), and `flate2` is small next to `arrow`. Each
//! start writes a file of its own (appending to one a killed process left
//! unfinished would make the rest unreadable); a replay of the day's folder
//! reads them all and merges the ticks by exchange time.

use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use rust_decimal::Decimal;

use super::clock::format_ist_date;
use super::feed::FeedTick;
use super::{ExpiryChain, Greeks, OptionChain, OptionLeg, StrikeRow};

/// The header of a tick file.
pub const TICK_HEADER: &str = "ts_ms,instrument,last,bid,ask,day_volume,oi,refused";

/// The header of an option-chain file: one row per strike and side of each snapshot.
pub const CHAIN_HEADER: &str =
    "ts_ms,underlying,spot,expiry,strike,option_type,last,oi,volume,delta,gamma,theta,vega,iv";

/// The header of an option-chain file recorded before the legs carried greeks (read as ever).
pub const CHAIN_HEADER_NO_GREEKS: &str =
    "ts_ms,underlying,spot,expiry,strike,option_type,last,oi,volume";

/// The header of a file of bars read back from the broker after a gap.
pub const BAR_HEADER: &str = "ts_ms,instrument,timeframe_secs,open,high,low,close,volume,oi";

/// One gzip CSV per IST day, opened on the first line, flushed on demand.
#[derive(Debug)]
struct DailyFile {
    dir: PathBuf,
    /// `<pipeline>.<start>.<kind>.csv.gz`.
    stem: String,
    /// The first line of a new file (none for JSON lines).
    header: Option<&'static str>,
    day: String,
    out: Option<GzEncoder<File>>,
    dirty: bool,
}

impl DailyFile {
    fn path(&self, now_ms: i64) -> PathBuf {
        self.dir.join(format_ist_date(now_ms)).join(&self.stem)
    }

    fn write_line(&mut self, now_ms: i64, line: &str) -> std::io::Result<()> {
        let day = format_ist_date(now_ms);
        if self.out.is_none() || day != self.day {
            self.close()?;
            let path = self.path(now_ms);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let fresh = !path.exists();
            let file = OpenOptions::new().create(true).append(true).open(&path)?;
            let mut enc = GzEncoder::new(file, Compression::fast());
            if let (true, Some(header)) = (fresh, self.header) {
                writeln!(enc, "{header}")?;
            }
            self.day = day;
            self.out = Some(enc);
        }
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| std::io::Error::other("recorder not open"))?;
        writeln!(out, "{line}")?;
        self.dirty = true;
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.dirty {
            if let Some(out) = self.out.as_mut() {
                out.flush()?;
            }
            self.dirty = false;
        }
        Ok(())
    }

    fn close(&mut self) -> std::io::Result<()> {
        if let Some(out) = self.out.take() {
            out.finish()?;
        }
        self.dirty = false;
        Ok(())
    }
}

impl Drop for DailyFile {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// `HHMMSSmmm` (IST) now: each process start writes files of its own.
fn started_stamp() -> String {
    let now = crate::domain::time::now_ms();
    let hms = super::clock::format_iso_ist(now)
        .get(11..19)
        .unwrap_or("000000")
        .replace(':', "");
    format!("{hms}{:03}", now.rem_euclid(1000))
}

/// Appends the order updates an account's broker pushed, as JSON lines, to
/// `<dir>/<day>/orders-<account>.<start>.jsonl.gz`.
#[derive(Debug)]
pub struct OrderUpdateRecorder(DailyFile);

impl OrderUpdateRecorder {
    /// A recorder for `account`; nothing is opened until the first update.
    #[must_use]
    pub fn new(dir: &Path, account: &str) -> Self {
        Self(DailyFile {
            dir: dir.to_owned(),
            stem: format!("orders-{account}.{}.jsonl.gz", started_stamp()),
            header: None,
            day: String::new(),
            out: None,
            dirty: false,
        })
    }

    /// Record one update as received at `now_ms`, and make it readable at once (updates are few).
    ///
    /// # Errors
    /// The file cannot be created or written.
    pub fn record(&mut self, now_ms: i64, update: &serde_json::Value) -> std::io::Result<()> {
        let line = serde_json::json!({ "received_ms": now_ms, "update": update }).to_string();
        self.0.write_line(now_ms, &line)?;
        self.0.flush()
    }
}

/// Appends one pipeline's ticks and option chains to its files of the day.
#[derive(Debug)]
pub struct TickRecorder {
    ticks: DailyFile,
    chains: DailyFile,
    bars: DailyFile,
}

impl TickRecorder {
    /// A recorder writing `<dir>/<day>/<name>.<start>.ticks.csv.gz` (and `.chains.csv.gz`); nothing is opened until the first line.
    #[must_use]
    pub fn new(dir: &Path, name: &str) -> Self {
        let file = |kind: &str, header| DailyFile {
            dir: dir.to_owned(),
            stem: format!("{name}.{}.{kind}.csv.gz", started_stamp()),
            header: Some(header),
            day: String::new(),
            out: None,
            dirty: false,
        };
        Self {
            ticks: file("ticks", TICK_HEADER),
            chains: file("chains", CHAIN_HEADER),
            bars: file("bars", BAR_HEADER),
        }
    }

    /// The tick file of the IST day of `now_ms`.
    #[must_use]
    pub fn path(&self, now_ms: i64) -> PathBuf {
        self.ticks.path(now_ms)
    }

    /// Record `tick` of `instrument`, received at `now_ms` (host clock, picks the day's file).
    ///
    /// # Errors
    /// The file cannot be created or written.
    pub fn record(
        &mut self,
        now_ms: i64,
        instrument: &str,
        tick: &FeedTick,
        refused: Option<&str>,
    ) -> std::io::Result<()> {
        let opt = |d: Option<Decimal>| d.map(|d| d.to_string()).unwrap_or_default();
        let num = |n: Option<u64>| n.map(|n| n.to_string()).unwrap_or_default();
        // The refusal is free text: commas and quotes would break the row.
        let refused = refused
            .map(|r| r.replace([',', '"', '\n', '\r'], " "))
            .unwrap_or_default();
        let line = format!(
            "{},{instrument},{},{},{},{},{},{refused}",
            tick.ts_ms.unwrap_or(0),
            tick.last,
            opt(tick.bid),
            opt(tick.ask),
            num(tick.day_volume),
            num(tick.oi)
        );
        self.ticks.write_line(now_ms, &line)
    }

    /// Record an option-chain snapshot, taken at `now_ms`.
    ///
    /// # Errors
    /// The file cannot be created or written.
    pub fn record_chain(&mut self, now_ms: i64, chain: &OptionChain) -> std::io::Result<()> {
        for e in &chain.expiries {
            for row in &e.strikes {
                for (kind, leg) in [("CE", row.ce), ("PE", row.pe)] {
                    let Some(leg) = leg else { continue };
                    let greeks = leg.greeks.map_or_else(
                        || ",,,,".to_owned(),
                        |g| format!("{},{},{},{},{}", g.delta, g.gamma, g.theta, g.vega, g.iv),
                    );
                    let line = format!(
                        "{},{},{},{},{},{kind},{},{},{},{greeks}",
                        chain.ts_ms,
                        chain.underlying,
                        chain.spot,
                        e.expiry,
                        row.strike,
                        leg.last,
                        leg.oi,
                        leg.volume
                    );
                    self.chains.write_line(now_ms, &line)?;
                }
            }
        }
        Ok(())
    }

    /// Record a bar of `instrument` read back from the broker after a gap, at `now_ms`.
    ///
    /// # Errors
    /// The file cannot be created or written.
    pub fn record_bar(
        &mut self,
        now_ms: i64,
        instrument: &str,
        timeframe_secs: u32,
        bar: &super::Bar,
    ) -> std::io::Result<()> {
        let line = format!(
            "{},{instrument},{timeframe_secs},{},{},{},{},{},{}",
            bar.ts_ms, bar.open, bar.high, bar.low, bar.close, bar.volume, bar.oi
        );
        self.bars.write_line(now_ms, &line)
    }

    /// Make what was recorded readable even if the process dies now.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.ticks.flush()?;
        self.chains.flush()?;
        self.bars.flush()
    }
}

/// One recorded tick that was believed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedTick {
    /// Our symbol.
    pub instrument: String,
    /// Exchange time.
    pub ts_ms: i64,
    /// Last price.
    pub last: Decimal,
    /// Best bid.
    pub bid: Option<Decimal>,
    /// Best ask.
    pub ask: Option<Decimal>,
    /// Cumulative day volume.
    pub day_volume: u64,
    /// Open interest.
    pub oi: u64,
}

/// A tick file that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {field}: {message}", path.display())]
pub struct TickFileError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line (0: the file itself).
    pub line: usize,
    /// The column.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Whether `path` names a recorded tick file.
#[must_use]
pub fn is_tick_file(path: &Path) -> bool {
    path.to_string_lossy().ends_with(".ticks.csv.gz")
}

/// Read the believed ticks of a recorded file, in the order they came.
/// A file cut short by a killed process is read up to its last whole row.
///
/// # Errors
/// A file that cannot be opened, a wrong header, or a row that does not parse, named by line and column.
pub fn read_ticks(path: &Path) -> Result<Vec<RecordedTick>, TickFileError> {
    let err = |line: usize, field: &str, message: String| TickFileError {
        path: path.to_owned(),
        line,
        field: field.to_owned(),
        message,
    };
    let mut out = Vec::new();
    for (n, line) in rows(path, TICK_HEADER)? {
        let cols: Vec<&str> = line.split(',').collect();
        let [ts, instrument, last, bid, ask, volume, oi, refused] = cols.as_slice() else {
            return Err(err(n, "row", format!("{} columns, expected 8", cols.len())));
        };
        if !refused.is_empty() {
            continue;
        }
        let dec = |field: &str, v: &str| {
            v.parse::<Decimal>()
                .map_err(|e| err(n, field, format!("{v:?}: {e}")))
        };
        let opt = |field: &str, v: &str| {
            if v.is_empty() {
                Ok(None)
            } else {
                dec(field, v).map(Some)
            }
        };
        let int = |field: &str, v: &str| {
            if v.is_empty() {
                Ok(0)
            } else {
                v.parse::<u64>()
                    .map_err(|e| err(n, field, format!("{v:?}: {e}")))
            }
        };
        out.push(RecordedTick {
            instrument: (*instrument).to_owned(),
            ts_ms: ts
                .parse()
                .map_err(|e| err(n, "ts_ms", format!("{ts:?}: {e}")))?,
            last: dec("last", last)?,
            bid: opt("bid", bid)?,
            ask: opt("ask", ask)?,
            day_volume: int("day_volume", volume)?,
            oi: int("oi", oi)?,
        });
    }
    Ok(out)
}

/// The rows of a recorded file after its `header`, numbered from line 2, up to the last whole
/// one (a file cut off by a killed process: what came before stands; killed before its first
/// flush: no rows).
///
/// # Errors
/// A file that cannot be opened, or a header other than `header`.
fn rows(
    path: &Path,
    header: &str,
) -> Result<impl Iterator<Item = (usize, String)> + use<>, TickFileError> {
    rows_of(path, &[header]).map(|(_, rows)| rows)
}

/// [`rows`] of a file that may have any of `headers`; which one it has (its index).
fn rows_of(
    path: &Path,
    headers: &[&str],
) -> Result<(usize, impl Iterator<Item = (usize, String)> + use<>), TickFileError> {
    let header = headers.first().copied().unwrap_or_default();
    let err = |field: &str, message: String| TickFileError {
        path: path.to_owned(),
        line: if field == "file" { 0 } else { 1 },
        field: field.to_owned(),
        message,
    };
    let file = File::open(path).map_err(|e| err("file", e.to_string()))?;
    let mut lines = BufReader::new(MultiGzDecoder::new(file)).lines();
    let mut which = 0;
    let complete = match lines.next() {
        Some(Ok(h)) if headers.contains(&h.as_str()) => {
            which = headers.iter().position(|x| *x == h).unwrap_or(0);
            true
        }
        Some(Ok(h)) => {
            return Err(err(
                "header",
                format!(
                    "expected {header:?}, found {:?}",
                    crate::bus::message::printable(&h, 120)
                ),
            ));
        }
        Some(Err(_)) | None => false,
    };
    Ok((
        which,
        lines
            .take_while(move |_| complete)
            .map_while(Result::ok)
            .enumerate()
            .map(|(i, l)| (i + 2, l)),
    ))
}

/// Whether `path` names a file of bars read back after a gap.
#[must_use]
pub fn is_bar_file(path: &Path) -> bool {
    path.to_string_lossy().ends_with(".bars.csv.gz")
}

/// Read the bars of a file written by [`TickRecorder::record_bar`]: `(instrument, timeframe, bar)`.
///
/// # Errors
/// A file that cannot be opened, a wrong header, or a row that does not parse, named by line and column.
pub fn read_bars(path: &Path) -> Result<Vec<(String, u32, super::Bar)>, TickFileError> {
    let err = |line: usize, field: &str, message: String| TickFileError {
        path: path.to_owned(),
        line,
        field: field.to_owned(),
        message,
    };
    let mut out = Vec::new();
    for (n, line) in rows(path, BAR_HEADER)? {
        let cols: Vec<&str> = line.split(',').collect();
        let [ts, instrument, tf, open, high, low, close, volume, oi] = cols.as_slice() else {
            return Err(err(n, "row", format!("{} columns, expected 9", cols.len())));
        };
        let dec = |field: &str, v: &str| {
            v.parse::<Decimal>()
                .map_err(|e| err(n, field, format!("{v:?}: {e}")))
        };
        let int = |field: &str, v: &str| {
            v.parse::<u64>()
                .map_err(|e| err(n, field, format!("{v:?}: {e}")))
        };
        let bar = super::Bar {
            ts_ms: ts
                .parse()
                .map_err(|e| err(n, "ts_ms", format!("{ts:?}: {e}")))?,
            open: dec("open", open)?,
            high: dec("high", high)?,
            low: dec("low", low)?,
            close: dec("close", close)?,
            volume: int("volume", volume)?,
            oi: int("oi", oi)?,
        };
        let tf: u32 = tf
            .parse()
            .map_err(|e| err(n, "timeframe_secs", format!("{tf:?}: {e}")))?;
        out.push(((*instrument).to_owned(), tf, bar));
    }
    Ok(out)
}

/// A leg's recorded greeks: five empty columns (or none, in an older file) are none.
fn greeks_of(cols: &[&str]) -> Result<Option<Greeks>, (&'static str, String)> {
    if cols.iter().all(|c| c.is_empty()) {
        return Ok(None);
    }
    let names = ["delta", "gamma", "theta", "vega", "iv"];
    let mut v = [Decimal::ZERO; 5];
    for (i, name) in names.into_iter().enumerate() {
        let text = cols.get(i).copied().unwrap_or_default();
        v[i] = text
            .parse::<Decimal>()
            .map_err(|e| (name, format!("{text:?}: {e}")))?;
    }
    let [delta, gamma, theta, vega, iv] = v;
    Ok(Some(Greeks {
        delta,
        gamma,
        theta,
        vega,
        iv,
    }))
}

/// Whether `path` names a recorded option-chain file.
#[must_use]
pub fn is_chain_file(path: &Path) -> bool {
    path.to_string_lossy().ends_with(".chains.csv.gz")
}

/// Read the snapshots of a recorded option-chain file, in the order they were taken.
/// A file cut short by a killed process is read up to its last whole row.
///
/// # Errors
/// A file that cannot be opened, a wrong header, or a row that does not parse, named by line and column.
pub fn read_chains(path: &Path) -> Result<Vec<OptionChain>, TickFileError> {
    let err = |line: usize, field: &str, message: String| TickFileError {
        path: path.to_owned(),
        line,
        field: field.to_owned(),
        message,
    };
    let mut out: Vec<OptionChain> = Vec::new();
    let (which, lines) = rows_of(path, &[CHAIN_HEADER, CHAIN_HEADER_NO_GREEKS])?;
    let columns = if which == 0 { 14 } else { 9 };
    for (n, line) in lines {
        let cols: Vec<&str> = line.split(',').collect();
        if cols.len() != columns {
            return Err(err(
                n,
                "row",
                format!("{} columns, expected {columns}", cols.len()),
            ));
        }
        let [ts, underlying, spot, expiry, strike, kind, last, oi, volume] = &cols[..9] else {
            return Err(err(n, "row", format!("{} columns, expected 9", cols.len())));
        };
        let dec = |field: &str, v: &str| {
            v.parse::<Decimal>()
                .map_err(|e| err(n, field, format!("{v:?}: {e}")))
        };
        let int = |field: &str, v: &str| {
            v.parse::<u64>()
                .map_err(|e| err(n, field, format!("{v:?}: {e}")))
        };
        let ts: i64 = ts
            .parse()
            .map_err(|e| err(n, "ts_ms", format!("{ts:?}: {e}")))?;
        let (strike, leg) = (
            dec("strike", strike)?,
            OptionLeg {
                last: dec("last", last)?,
                oi: int("oi", oi)?,
                volume: int("volume", volume)?,
                greeks: greeks_of(&cols[9..]).map_err(|(field, m)| err(n, field, m))?,
            },
        );
        let same = out
            .last()
            .is_some_and(|c| c.ts_ms == ts && c.underlying == *underlying);
        if !same {
            out.push(OptionChain {
                underlying: (*underlying).to_owned(),
                ts_ms: ts,
                spot: dec("spot", spot)?,
                expiries: Vec::new(),
            });
        }
        let Some(chain) = out.last_mut() else {
            continue;
        };
        if chain.expiries.last().is_none_or(|e| e.expiry != *expiry) {
            chain.expiries.push(ExpiryChain {
                expiry: (*expiry).to_owned(),
                strikes: Vec::new(),
            });
        }
        let Some(exp) = chain.expiries.last_mut() else {
            continue;
        };
        if exp.strikes.last().is_none_or(|r| r.strike != strike) {
            exp.strikes.push(StrikeRow {
                strike,
                ce: None,
                pe: None,
            });
        }
        let Some(row) = exp.strikes.last_mut() else {
            continue;
        };
        match *kind {
            "CE" => row.ce = Some(leg),
            "PE" => row.pe = Some(leg),
            other => {
                return Err(err(
                    n,
                    "option_type",
                    format!("{other:?}: expected CE or PE"),
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_read_back_and_refusals_are_kept_apart() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = 1_704_080_700_000;
        let tick = |ts: i64, last: i64| FeedTick {
            token: "1".into(),
            ts_ms: Some(ts),
            last: Decimal::from(last),
            bid: Some(Decimal::from(last - 1)),
            day_volume: Some(10),
            ..FeedTick::default()
        };
        let mut r = TickRecorder::new(dir.path(), "p");
        r.record(t0, "NIFTY", &tick(t0, 100), None).unwrap();
        r.record(
            t0,
            "NIFTY",
            &tick(t0 + 1, 0),
            Some("NIFTY: last 0 is not a positive price, really"),
        )
        .unwrap();
        r.flush().unwrap();
        let path = r.path(t0);
        // Flushed but not finished, as a killed process leaves it: readable.
        let copy = dir.path().join("killed.ticks.csv.gz");
        std::fs::copy(&path, &copy).unwrap();
        assert_eq!(read_ticks(&copy).unwrap().len(), 1);
        r.record(t0, "NIFTY", &tick(t0 + 2, 101), None).unwrap();
        drop(r);
        let ticks = read_ticks(&path).unwrap();
        assert_eq!(
            ticks
                .iter()
                .map(|t| (t.ts_ms - t0, t.last))
                .collect::<Vec<_>>(),
            vec![(0, Decimal::from(100)), (2, Decimal::from(101))]
        );
        assert_eq!(ticks[0].bid, Some(Decimal::from(99)));
        assert!(path.to_string_lossy().contains("2024-01-01"));
    }
}

#[cfg(test)]
mod chain_tests {
    use super::*;

    #[test]
    fn a_bad_row_is_named_by_line_and_column_and_a_stranger_by_its_header() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            let mut enc = GzEncoder::new(File::create(&path).unwrap(), Compression::fast());
            enc.write_all(text.as_bytes()).unwrap();
            enc.finish().unwrap();
            path
        };
        let ticks = write(
            "a.ticks.csv.gz",
            &format!(
                "{TICK_HEADER}\n1704080700000,NIFTY,21700,,,,,\n1704080701000,NIFTY,abc,,,,,\n"
            ),
        );
        let e = read_ticks(&ticks).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (3, "last"), "{e}");
        let chains = write("b.chains.csv.gz", "ts,what\n1,2\n");
        assert_eq!(read_chains(&chains).unwrap_err().field, "header");
    }

    #[test]
    fn chains_are_read_back_as_they_were_taken() {
        let dir = tempfile::tempdir().unwrap();
        let leg = |last: i64, oi: u64| {
            Some(OptionLeg {
                last: Decimal::from(last),
                oi,
                volume: 5,
                // Upstox's greeks where a source gives them, none where it does not.
                greeks: (last > 100)
                    .then(|| Greeks::from_f64(0.5123, 0.00041, -12.25, 10.2, 14.3).unwrap()),
            })
        };
        let chain = |ts: i64, spot: i64| OptionChain {
            underlying: "NIFTY".into(),
            ts_ms: ts,
            spot: Decimal::from(spot),
            expiries: vec![ExpiryChain {
                expiry: "2024-01-04".into(),
                strikes: vec![
                    StrikeRow {
                        strike: Decimal::from(21_700),
                        ce: leg(110, 60_000),
                        pe: leg(96, 70_000),
                    },
                    StrikeRow {
                        strike: Decimal::from(21_800),
                        ce: leg(55, 90_000),
                        pe: None,
                    },
                ],
            }],
        };
        let t0 = 1_704_080_700_000;
        let mut r = TickRecorder::new(dir.path(), "p");
        let (a, b) = (chain(t0, 21_712), chain(t0 + 60_000, 21_750));
        r.record_chain(t0, &a).unwrap();
        r.record_chain(t0, &b).unwrap();
        drop(r);
        let file = std::fs::read_dir(dir.path().join(format_ist_date(t0)))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| is_chain_file(p))
            .unwrap();
        let read = read_chains(&file).unwrap();
        assert_eq!(read, vec![a, b]);
        assert_eq!(
            read[0].expiries[0].strikes[0]
                .ce
                .and_then(|l| l.greeks)
                .map(|g| (g.delta, g.iv)),
            Some((Decimal::new(5123, 4), Decimal::new(143, 1)))
        );
        // A file recorded before legs had greeks reads as it did, without them.
        let old = dir.path().join("old.chains.csv.gz");
        let mut enc = GzEncoder::new(File::create(&old).unwrap(), Compression::fast());
        enc.write_all(
            format!("{CHAIN_HEADER_NO_GREEKS}\n{t0},NIFTY,21712,2024-01-04,21700,CE,110,60000,5\n")
                .as_bytes(),
        )
        .unwrap();
        enc.finish().unwrap();
        let old = read_chains(&old).unwrap();
        assert_eq!(
            old[0].expiries[0].strikes[0].ce.map(|l| l.greeks),
            Some(None)
        );
    }
}
