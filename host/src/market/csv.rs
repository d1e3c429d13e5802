//! CSV readers for the formats NSE data comes in:
//!
//! - `Instrument,Date,Time,Open,High,Low,Close[,Volume][,OI]` (date `YYYYMMDD`, time `HH:MM` IST);
//! - `timestamp,open,high,low,close[,volume][,oi]` (ISO-8601; further columns ignored);
//! - option chain, long format: `timestamp,expiry,strike,option_type,close[,volume][,oi]`.
//!
//! Columns are found by name, case-insensitively. Every error names the file,
//! the line and the field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rust_decimal::Decimal;

use super::clock::{parse_compact_date_time, parse_date, parse_iso};
use super::session::Session;
use super::{Bar, CandleSeries, ExpiryChain, MarketData, OptionChain, OptionLeg, StrikeRow};

/// Why a data file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MarketDataError {
    /// The file could not be read at all.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The header matches none of the formats.
    #[error(
        "{path}:1: unrecognised header {header:?}; expected `Instrument,Date,Time,Open,High,Low,Close[,Volume]`, `timestamp,open,high,low,close[,volume]` or `timestamp,expiry,strike,option_type,close[,volume][,oi]`"
    )]
    UnknownFormat {
        /// The file.
        path: PathBuf,
        /// The header line.
        header: String,
    },
    /// A row has fewer fields than the header.
    #[error("{path}:{line}: expected {expected} fields as in the header, found {found}")]
    Columns {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Fields in the header.
        expected: usize,
        /// Fields in this row.
        found: usize,
    },
    /// A field does not hold what its column says.
    #[error("{path}:{line}: field `{field}`: {reason} (got {value:?})")]
    Field {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The column's name.
        field: String,
        /// The offending text.
        value: String,
        /// What was expected.
        reason: String,
    },
    /// A Parquet file that is not a candle file, or breaks a rule a bar must keep.
    #[error("{path}: {reason}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file has a header and nothing usable.
    #[error("{path}: no data rows{detail}")]
    NoRows {
        /// The file.
        path: PathBuf,
        /// Why, when rows existed but were all filtered out.
        detail: String,
    },
}

/// How to read a file.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Instrument name to use instead of the file's (or the file name's).
    pub instrument: Option<String>,
    /// Keep only bars inside this session; `None` keeps everything.
    pub session: Option<Session>,
    /// Candles of the underlying, for the spot price of option-chain snapshots.
    /// Without them the spot is estimated by put-call parity.
    pub underlying: Option<CandleSeries>,
}

/// A file read into memory.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The events.
    pub data: MarketData,
    /// Data rows in the file.
    pub rows: usize,
    /// Rows dropped because they were outside the session.
    pub outside_session: usize,
}

enum Format {
    DateTime {
        instrument: usize,
        date: usize,
        time: usize,
    },
    Timestamp {
        ts: usize,
    },
}

struct Columns {
    names: Vec<String>,
}

impl Columns {
    fn find(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n.eq_ignore_ascii_case(name))
    }
}

struct Row<'a> {
    path: &'a Path,
    line: usize,
    fields: Vec<&'a str>,
    names: &'a [String],
}

impl Row<'_> {
    fn err(&self, col: usize, reason: impl Into<String>) -> MarketDataError {
        MarketDataError::Field {
            path: self.path.to_owned(),
            line: self.line,
            field: self.names.get(col).cloned().unwrap_or_default(),
            value: self.fields.get(col).copied().unwrap_or_default().to_owned(),
            reason: reason.into(),
        }
    }

    fn text(&self, col: usize) -> &str {
        self.fields.get(col).copied().unwrap_or_default().trim()
    }

    fn decimal(&self, col: usize) -> Result<Decimal, MarketDataError> {
        Decimal::from_str(self.text(col)).map_err(|_| self.err(col, "expected a decimal number"))
    }

    fn price(&self, col: usize) -> Result<Decimal, MarketDataError> {
        let v = self.decimal(col)?;
        if v.is_sign_negative() {
            Err(self.err(col, "a price cannot be negative"))
        } else {
            Ok(v)
        }
    }

    fn count(&self, col: Option<usize>) -> Result<u64, MarketDataError> {
        let Some(col) = col else { return Ok(0) };
        let text = self.text(col);
        if text.is_empty() {
            return Ok(0);
        }
        // Vendors write whole quantities as `23230.0` now and then.
        let whole = text.strip_suffix(".0").unwrap_or(text);
        whole
            .parse()
            .map_err(|_| self.err(col, "expected a whole, non-negative quantity"))
    }
}

/// Read a candle or option-chain CSV, detecting its format from the header.
pub fn load(path: &Path, options: &LoadOptions) -> Result<Loaded, MarketDataError> {
    if super::parquet::is_parquet(path) {
        return load_parquet(path, options);
    }
    let text = std::fs::read_to_string(path).map_err(|source| MarketDataError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text, options)
}

/// A candle file in Parquet (`tradehost data import`), filtered as a CSV is.
fn load_parquet(path: &Path, options: &LoadOptions) -> Result<Loaded, MarketDataError> {
    if super::parquet::format_of(path).as_deref() == Some(super::parquet::CHAINS_FORMAT) {
        return super::parquet::read_chains(path, options);
    }
    let mut series = super::parquet::read_candles(path)?;
    let rows = series.bars.len();
    if let Some(session) = options.session {
        series.bars.retain(|b| session.contains(b.ts_ms));
    }
    let outside = rows - series.bars.len();
    if series.bars.is_empty() {
        let detail = if rows > 0 {
            format!(": all {rows} rows are outside the session")
        } else {
            String::new()
        };
        return Err(MarketDataError::NoRows {
            path: path.to_owned(),
            detail,
        });
    }
    if let Some(name) = &options.instrument {
        series.instrument.clone_from(name);
    } else if series.instrument.is_empty() {
        series.instrument = instrument_from_path(path);
    }
    Ok(Loaded {
        data: MarketData::Candles(series),
        rows,
        outside_session: outside,
    })
}

/// Parse CSV text; `path` is only used in messages.
pub fn parse(path: &Path, text: &str, options: &LoadOptions) -> Result<Loaded, MarketDataError> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')));
    let header = lines
        .by_ref()
        .map(|(_, l)| l)
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    let columns = Columns {
        names: header.split(',').map(|s| s.trim().to_owned()).collect(),
    };
    let unknown = || MarketDataError::UnknownFormat {
        path: path.to_owned(),
        header: header.to_owned(),
    };
    let rows = lines.filter(|(_, l)| !l.trim().is_empty());

    if let (Some(ts), Some(expiry), Some(strike), Some(kind)) = (
        columns.find("timestamp"),
        columns.find("expiry"),
        columns.find("strike"),
        columns.find("option_type"),
    ) {
        let last = columns
            .find("close")
            .or_else(|| columns.find("last"))
            .ok_or_else(unknown)?;
        let cols = ChainColumns {
            ts,
            expiry,
            strike,
            kind,
            last,
            volume: columns.find("volume"),
            oi: columns.find("oi"),
        };
        return parse_chain(path, rows, &columns, &cols, options);
    }
    let format = match (
        columns.find("instrument"),
        columns.find("date"),
        columns.find("time"),
        columns.find("timestamp"),
    ) {
        (Some(instrument), Some(date), Some(time), _) => Format::DateTime {
            instrument,
            date,
            time,
        },
        (_, _, _, Some(ts)) => Format::Timestamp { ts },
        _ => return Err(unknown()),
    };
    let ohlc = ["open", "high", "low", "close"].map(|n| columns.find(n));
    let [Some(open), Some(high), Some(low), Some(close)] = ohlc else {
        return Err(unknown());
    };
    let (volume, oi) = (columns.find("volume"), columns.find("oi"));

    let mut bars: Vec<Bar> = Vec::with_capacity(text.len() / 48);
    let (mut total, mut outside) = (0usize, 0usize);
    let mut file_instrument: Option<String> = None;
    for (line, raw) in rows {
        total += 1;
        let row = split(path, line, raw, &columns)?;
        let ts_ms = match format {
            Format::DateTime {
                instrument,
                date,
                time,
            } => {
                if file_instrument.is_none() {
                    file_instrument = Some(row.text(instrument).to_owned());
                }
                parse_compact_date_time(row.text(date), row.text(time)).ok_or_else(|| {
                    let bad_date = parse_compact_date_time(row.text(date), "00:00").is_none();
                    if bad_date {
                        row.err(date, "expected a date YYYYMMDD")
                    } else {
                        row.err(time, "expected a time HH:MM")
                    }
                })?
            }
            Format::Timestamp { ts } => parse_iso(row.text(ts)).ok_or_else(|| {
                row.err(
                    ts,
                    "expected an ISO-8601 time like 2025-08-20T09:15:00+05:30",
                )
            })?,
        };
        if options.session.is_some_and(|s| !s.contains(ts_ms)) {
            outside += 1;
            continue;
        }
        let bar = Bar {
            ts_ms,
            open: row.price(open)?,
            high: row.price(high)?,
            low: row.price(low)?,
            close: row.price(close)?,
            volume: row.count(volume)?,
            oi: row.count(oi)?,
        };
        if bar.high < bar.open.max(bar.close).max(bar.low) {
            return Err(row.err(high, "high is below open, low or close"));
        }
        if bar.low > bar.open.min(bar.close) {
            return Err(row.err(low, "low is above open or close"));
        }
        if let Some(prev) = bars.last()
            && bar.ts_ms <= prev.ts_ms
        {
            let col = match format {
                Format::DateTime { time, .. } => time,
                Format::Timestamp { ts } => ts,
            };
            return Err(row.err(col, "bars must be in strictly increasing time order"));
        }
        bars.push(bar);
    }
    if bars.is_empty() {
        let detail = if total > 0 {
            format!(": all {total} rows are outside the session")
        } else {
            String::new()
        };
        return Err(MarketDataError::NoRows {
            path: path.to_owned(),
            detail,
        });
    }
    let instrument = options
        .instrument
        .clone()
        .or(file_instrument)
        .unwrap_or_else(|| instrument_from_path(path));
    let timeframe_secs = infer_timeframe_secs(&bars);
    Ok(Loaded {
        data: MarketData::Candles(CandleSeries {
            instrument,
            timeframe_secs,
            bars,
        }),
        rows: total,
        outside_session: outside,
    })
}

fn split<'a>(
    path: &'a Path,
    line: usize,
    raw: &'a str,
    columns: &'a Columns,
) -> Result<Row<'a>, MarketDataError> {
    let fields: Vec<&str> = raw.split(',').collect();
    if fields.len() < columns.names.len() {
        return Err(MarketDataError::Columns {
            path: path.to_owned(),
            line,
            expected: columns.names.len(),
            found: fields.len(),
        });
    }
    Ok(Row {
        path,
        line,
        fields,
        names: &columns.names,
    })
}

/// `heromotoco_eq_1m_2025-08-20.csv` → `HEROMOTOCO`.
#[must_use]
pub fn instrument_from_path(path: &Path) -> String {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("UNKNOWN");
    stem.split(['_', '-', '.'])
        .next()
        .unwrap_or(stem)
        .to_ascii_uppercase()
}

/// The most common gap between consecutive bars, in seconds (60 for one-minute data).
fn infer_timeframe_secs(bars: &[Bar]) -> u32 {
    let mut gaps: BTreeMap<i64, usize> = BTreeMap::new();
    for pair in bars.windows(2).take(10_000) {
        *gaps.entry(pair[1].ts_ms - pair[0].ts_ms).or_default() += 1;
    }
    let most = gaps
        .into_iter()
        .max_by_key(|(gap, n)| (*n, -gap))
        .map_or(60_000, |(gap, _)| gap);
    u32::try_from(most / 1000).unwrap_or(60).max(1)
}

struct ChainColumns {
    ts: usize,
    expiry: usize,
    strike: usize,
    kind: usize,
    last: usize,
    volume: Option<usize>,
    oi: Option<usize>,
}

type Snapshot = BTreeMap<String, BTreeMap<Decimal, StrikeRow>>;

fn parse_chain<'a>(
    path: &Path,
    rows: impl Iterator<Item = (usize, &'a str)>,
    columns: &Columns,
    cols: &ChainColumns,
    options: &LoadOptions,
) -> Result<Loaded, MarketDataError> {
    let mut chains = ChainBuilder::default();
    let (mut total, mut outside) = (0usize, 0usize);
    for (line, raw) in rows {
        total += 1;
        let row = split(path, line, raw, columns)?;
        let ts_ms = parse_iso(row.text(cols.ts))
            .ok_or_else(|| row.err(cols.ts, "expected an ISO-8601 time"))?;
        if options.session.is_some_and(|s| !s.contains(ts_ms)) {
            outside += 1;
            continue;
        }
        let expiry = row.text(cols.expiry);
        let expiry_day =
            parse_date(expiry).ok_or_else(|| row.err(cols.expiry, "expected a date YYYY-MM-DD"))?;
        let strike = row.price(cols.strike)?;
        let leg = OptionLeg {
            last: row.price(cols.last)?,
            oi: row.count(cols.oi)?,
            volume: row.count(cols.volume)?,
            greeks: None,
        };
        let call = match row.text(cols.kind).to_ascii_uppercase().as_str() {
            "CE" | "C" | "CALL" => true,
            "PE" | "P" | "PUT" => false,
            _ => return Err(row.err(cols.kind, "expected CE or PE")),
        };
        chains.add(ts_ms, (expiry, expiry_day), strike, call, leg);
    }
    chains.finish(path, (total, outside), options)
}

/// Option-chain snapshots gathered from long-format rows (one leg a row), as a
/// CSV or a Parquet chain file holds them.
#[derive(Debug, Default)]
pub(super) struct ChainBuilder {
    snapshots: BTreeMap<i64, Snapshot>,
}

impl ChainBuilder {
    /// One leg: at `ts_ms`, of the expiry (`YYYY-MM-DD`, its day number), the strike, a call or a put.
    /// A leg of an expired contract is not part of the chain.
    pub(super) fn add(
        &mut self,
        ts_ms: i64,
        (expiry, expiry_day): (&str, i64),
        strike: Decimal,
        call: bool,
        leg: OptionLeg,
    ) {
        if expiry_day < super::clock::ist_day(ts_ms) {
            return;
        }
        let strike = strike.normalize();
        let entry = self
            .snapshots
            .entry(ts_ms)
            .or_default()
            .entry(expiry.to_owned())
            .or_default()
            .entry(strike)
            .or_insert(StrikeRow {
                strike,
                ce: None,
                pe: None,
            });
        if call {
            entry.ce = Some(leg);
        } else {
            entry.pe = Some(leg);
        }
    }

    /// The snapshots in time order, each with its spot price: from `options.underlying`'s
    /// candles, else put-call parity. `rows` is (rows read, rows outside the session).
    pub(super) fn finish(
        self,
        path: &Path,
        (total, outside): (usize, usize),
        options: &LoadOptions,
    ) -> Result<Loaded, MarketDataError> {
        if self.snapshots.is_empty() {
            let detail = if total > 0 {
                format!(": all {total} rows are outside the session or expired")
            } else {
                String::new()
            };
            return Err(MarketDataError::NoRows {
                path: path.to_owned(),
                detail,
            });
        }
        let underlying = options
            .instrument
            .clone()
            .unwrap_or_else(|| instrument_from_path(path));
        let mut chains = Vec::with_capacity(self.snapshots.len());
        for (ts_ms, expiries) in self.snapshots {
            let expiries: Vec<ExpiryChain> = expiries
                .into_iter()
                .map(|(expiry, strikes)| ExpiryChain {
                    expiry,
                    strikes: strikes.into_values().collect(),
                })
                .collect();
            let spot = options
                .underlying
                .as_ref()
                .and_then(|u| spot_from_candles(u, ts_ms))
                .or_else(|| expiries.first().and_then(spot_from_parity));
            let Some(spot) = spot else {
                return Err(MarketDataError::NoRows {
                    path: path.to_owned(),
                    detail: format!(
                        ": cannot tell the spot price at {}: no underlying candles and no strike with both CE and PE prices",
                        super::clock::format_iso_ist(ts_ms)
                    ),
                });
            };
            chains.push(OptionChain {
                underlying: underlying.clone(),
                ts_ms,
                spot,
                expiries,
            });
        }
        Ok(Loaded {
            data: MarketData::Chains(chains),
            rows: total,
            outside_session: outside,
        })
    }
}

/// The close of the last underlying bar that started at or before `ts_ms`.
fn spot_from_candles(series: &CandleSeries, ts_ms: i64) -> Option<Decimal> {
    let idx = series.bars.partition_point(|b| b.ts_ms <= ts_ms);
    idx.checked_sub(1).map(|i| series.bars[i].close)
}

/// Put-call parity near the money: spot ≈ K + C − P at the strike where the
/// call and put prices are closest (ignoring carry, which is small intraday
/// for near expiries).
fn spot_from_parity(chain: &ExpiryChain) -> Option<Decimal> {
    chain
        .strikes
        .iter()
        .filter_map(|r| match (r.ce, r.pe) {
            (Some(c), Some(p)) if c.last > Decimal::ZERO && p.last > Decimal::ZERO => {
                Some((r.strike, c.last, p.last))
            }
            _ => None,
        })
        .min_by_key(|(_, c, p)| (*c - *p).abs())
        .map(|(k, c, p)| k + c - p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn load_text(text: &str, options: &LoadOptions) -> Result<Loaded, MarketDataError> {
        parse(Path::new("data/nifty_test.csv"), text, options)
    }

    fn nse() -> LoadOptions {
        LoadOptions {
            session: Some(Session::NSE),
            ..LoadOptions::default()
        }
    }

    #[test]
    fn date_time_format_with_session_filter() {
        let text = "Instrument,Date,Time,Open,High,Low,Close\n\
                    NIFTY,20240120,09:14,1,1,1,1\n\
                    NIFTY,20240120,09:15,21727.75,21737.35,21701.80,21712.00\n\
                    NIFTY,20240120,09:16,21711.50,21720.00,21695.35,21695.65\n\
                    NIFTY,20240120,18:16,1,1,1,1\n";
        let loaded = load_text(text, &nse()).unwrap();
        assert_eq!((loaded.rows, loaded.outside_session), (4, 2));
        let MarketData::Candles(s) = loaded.data else {
            panic!("candles expected")
        };
        assert_eq!(s.instrument, "NIFTY");
        assert_eq!(s.timeframe_secs, 60);
        assert_eq!(s.bars.len(), 2);
        assert_eq!(s.bars[0].open, dec!(21727.75));
        assert_eq!(s.bars[1].close, dec!(21695.65));
    }

    #[test]
    fn timestamp_format_with_volume_and_extra_columns() {
        let text = "timestamp,open,high,low,close,volume,vendor_bar_vwap\n\
                    2025-08-20T09:15:00+05:30,5118.6,5146.7,5118.2,5131.6,23230,5135.35\n\
                    2025-08-20T09:16:00+05:30,5131.6,5140.0,5120.0,5125.0,1200.0,5130\n";
        let loaded = parse(Path::new("x/heromotoco_eq_1m.csv"), text, &nse()).unwrap();
        let MarketData::Candles(s) = loaded.data else {
            panic!("candles expected")
        };
        assert_eq!(s.instrument, "HEROMOTOCO");
        assert_eq!(
            s.bars.iter().map(|b| b.volume).collect::<Vec<_>>(),
            vec![23230, 1200]
        );
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let header = "Instrument,Date,Time,Open,High,Low,Close\n";
        let cases = [
            (
                "NIFTY,20240101,09:15,abc,2,1,1\n",
                "data/nifty_test.csv:2: field `Open`: expected a decimal number (got \"abc\")",
            ),
            (
                "NIFTY,20241301,09:15,1,2,1,1\n",
                "data/nifty_test.csv:2: field `Date`",
            ),
            (
                "NIFTY,20240101,9:15,1,2,1,1\n",
                "data/nifty_test.csv:2: field `Time`",
            ),
            (
                "NIFTY,20240101,09:15,1,2,1\n",
                "data/nifty_test.csv:2: expected 7 fields as in the header, found 6",
            ),
            (
                "NIFTY,20240101,09:15,1,0.5,1,1\n",
                "field `High`: high is below",
            ),
            (
                "NIFTY,20240101,09:15,1,2,1.5,1\n",
                "field `Low`: low is above",
            ),
            (
                "NIFTY,20240101,09:16,1,2,1,1\nNIFTY,20240101,09:15,1,2,1,1\n",
                "data/nifty_test.csv:3: field `Time`: bars must be in strictly increasing",
            ),
            (
                "NIFTY,20240101,09:15,-1,2,-1,1\n",
                "field `Open`: a price cannot be negative",
            ),
        ];
        for (rows, want) in cases {
            let err = load_text(&format!("{header}{rows}"), &nse())
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{err}\n  does not contain\n{want}");
        }
        let err = load_text("a,b,c\n1,2,3\n", &nse()).unwrap_err().to_string();
        assert!(
            err.starts_with("data/nifty_test.csv:1: unrecognised header"),
            "{err}"
        );
        let err = load_text(&format!("{header}NIFTY,20240101,18:00,1,2,1,1\n"), &nse())
            .unwrap_err()
            .to_string();
        assert!(err.contains("all 1 rows are outside the session"), "{err}");
    }

    #[test]
    fn option_chain_long_format() {
        let text = "timestamp,expiry,strike,option_type,close,volume,oi\n\
                    2025-08-20T09:15:00+05:30,2025-08-28,5100.0,CE,60.0,10,300\n\
                    2025-08-20T09:15:00+05:30,2025-08-28,5100.0,PE,40.0,5,900\n\
                    2025-08-20T09:15:00+05:30,2025-08-28,5000.0,PE,10.0,5,100\n\
                    2025-08-20T09:15:00+05:30,2025-09-30,5100.0,CE,150.0,1,50\n\
                    2025-08-20T09:15:00+05:30,2025-08-14,5100.0,CE,150.0,1,50\n\
                    2025-08-20T09:16:00+05:30,2025-08-28,5100.0,CE,61.0,10,310\n\
                    2025-08-20T09:16:00+05:30,2025-08-28,5100.0,PE,39.0,5,900\n";
        let loaded = parse(Path::new("heromotoco_optionchain.csv"), text, &nse()).unwrap();
        let MarketData::Chains(chains) = loaded.data else {
            panic!("chains expected")
        };
        assert_eq!(chains.len(), 2);
        let first = &chains[0];
        assert_eq!(first.underlying, "HEROMOTOCO");
        assert_eq!(
            first
                .expiries
                .iter()
                .map(|e| e.expiry.as_str())
                .collect::<Vec<_>>(),
            vec!["2025-08-28", "2025-09-30"],
            "expired dropped, nearest first"
        );
        assert_eq!(first.expiries[0].strikes.len(), 2);
        assert_eq!(first.expiries[0].strikes[1].ce.map(|l| l.oi), Some(300));
        // parity at 5100: 5100 + 60 - 40
        assert_eq!(first.spot, dec!(5120));
        assert_eq!(chains[1].spot, dec!(5122));
        let legs: Vec<String> = first.legs().map(|(s, _)| s).collect();
        assert!(
            legs.contains(&"HEROMOTOCO28AUG255100CE".to_owned()),
            "{legs:?}"
        );

        let bad = "timestamp,expiry,strike,option_type,close\n2025-08-20T09:15:00+05:30,2025-08-28,5100,XX,1\n";
        let err = parse(Path::new("c.csv"), bad, &nse())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("c.csv:2: field `option_type`: expected CE or PE"),
            "{err}"
        );
    }

    #[test]
    fn underlying_candles_give_the_spot() {
        let text = "timestamp,expiry,strike,option_type,close\n2025-08-20T09:16:00+05:30,2025-08-28,5100,CE,60\n";
        let bars = vec![Bar {
            ts_ms: parse_iso("2025-08-20T09:15:00+05:30").unwrap_or(0),
            open: dec!(1),
            high: dec!(1),
            low: dec!(1),
            close: dec!(5133.5),
            volume: 0,
            oi: 0,
        }];
        let options = LoadOptions {
            underlying: Some(CandleSeries {
                instrument: "H".into(),
                timeframe_secs: 60,
                bars,
            }),
            ..nse()
        };
        let loaded = parse(Path::new("h.csv"), text, &options).unwrap();
        let MarketData::Chains(chains) = loaded.data else {
            panic!("chains expected")
        };
        assert_eq!(chains[0].spot, dec!(5133.5));
    }
}
