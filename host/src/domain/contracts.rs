//! The exchange's contract rules that change by circular, kept as data
//! (`contracts/nse.toml`, bundled; `[market] contracts` replaces it): the freeze
//! quantity of each underlying's derivatives, index and stock (an order above it is
//! sliced), and the lot size of their contracts by expiry (sizing in lots uses the lot of the
//! contract traded: NIFTY's went from 75 to 65 for the 2026 contracts).
//!
//! Contracts are named as OpenAlgo names them (`NIFTY28MAR2420800CE`,
//! `NIFTY28MAR24FUT`): the underlying, then the expiry `DDMMMYY`.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::Deserialize;

use super::time::{days_from_civil, parse_date};

/// The rules of one exchange's contracts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContractRules {
    freeze: BTreeMap<String, u64>,
    /// Per underlying: `(first expiry day, lot)`, ascending.
    lots: BTreeMap<String, Vec<(i64, u64)>>,
    /// Per cash symbol: its daily price band, percent either side of the previous close.
    bands: BTreeMap<String, Decimal>,
}

/// A rules file that could not be read: where, and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}:{line}: {field}: {message}")]
pub struct ContractsError {
    /// The file.
    pub source_name: String,
    /// 1-based line.
    pub line: usize,
    /// The field.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    freeze: BTreeMap<String, toml::Spanned<i64>>,
    #[serde(default)]
    lot: Vec<LotEntry>,
    #[serde(default)]
    band: BTreeMap<String, toml::Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LotEntry {
    underlying: String,
    from: toml::Spanned<String>,
    lot: toml::Spanned<i64>,
}

/// The lots the brokers' instrument masters list, by our contract name: what this
/// process has read (the master is the truth for a listed contract; the rules file
/// is the fallback for contracts no master was read for, as in a backtest).
static MASTER_LOTS: super::learned::ByName<u64> = super::learned::ByName::new();

/// Record the lot of each derivative contract in `known` (an instrument master just
/// read); stocks and indices (lot 1, or no expiry in the name) are not contracts here.
pub fn learn_lots(known: impl IntoIterator<Item = (String, u64)>) {
    MASTER_LOTS.extend(
        known
            .into_iter()
            .filter(|(symbol, lot)| *lot > 0 && expiry_day(symbol).is_some()),
    );
}

/// The lot an instrument master gave the contract `symbol`, if one was read.
#[must_use]
pub fn master_lot(symbol: &str) -> Option<u64> {
    MASTER_LOTS.get(symbol)
}

const BUNDLED: &str = include_str!("../../../contracts/nse.toml");

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];

/// Whether `symbol` names an option (`…CE`, `…PE` with a strike): ours, OpenAlgo's and
/// the brokers' own names alike (`NIFTY24MAR20800CE`).
#[must_use]
pub fn is_option(symbol: &str) -> bool {
    let s = symbol.trim();
    (s.ends_with("CE") || s.ends_with("PE")) && s.bytes().any(|b| b.is_ascii_digit())
}

/// The underlying of a derivative's name (`NIFTY` of `NIFTY28MAR2420800CE`): the
/// letters before its expiry. `None` for a name without one (an equity, an index).
#[must_use]
pub fn underlying(symbol: &str) -> Option<&str> {
    // The expiry: two digits of day, a month's three letters, two digits of year; the
    // underlying is what comes before the first such run (`NIFTYNXT50` holds digits itself).
    let b = symbol.as_bytes();
    (1..b.len().saturating_sub(6))
        .find(|&at| {
            b[at].is_ascii_digit()
                && b[at + 1].is_ascii_digit()
                && MONTHS
                    .iter()
                    .any(|m| symbol.get(at + 2..at + 5) == Some(*m))
                && b[at + 5].is_ascii_digit()
                && b[at + 6].is_ascii_digit()
        })
        .map(|at| &symbol[..at])
}

/// A derivative's name as its underlying, its expiry's `(year, month, day)` and what
/// follows (`20800CE`, `FUT`).
fn name_parts(symbol: &str) -> Option<(&str, (i64, u32, u32), &str)> {
    let name = underlying(symbol)?;
    let date = symbol.get(name.len()..name.len() + 7)?;
    let day: u32 = date
        .get(0..2)?
        .parse()
        .ok()
        .filter(|d| (1..=31).contains(d))?;
    let month = u32::try_from(MONTHS.iter().position(|m| date.get(2..5) == Some(*m))? + 1).ok()?;
    let year: i64 = date.get(5..7)?.parse().ok()?;
    Some((
        name,
        (2000 + year, month, day),
        symbol.get(name.len() + 7..)?,
    ))
}

/// The expiry day (days since 1970-01-01) of a derivative's name: `28MAR24` of `NIFTY28MAR2420800CE`.
#[must_use]
pub fn expiry_day(symbol: &str) -> Option<i64> {
    let (_, (year, month, day), _) = name_parts(symbol)?;
    Some(days_from_civil(year, month, day))
}

/// An option's name taken apart: `NIFTY28MAR2420800CE` is NIFTY's 20800 call of 2024-03-28.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionName {
    /// The underlying.
    pub underlying: String,
    /// The expiry, `YYYY-MM-DD`.
    pub expiry: String,
    /// The strike.
    pub strike: Decimal,
    /// A call (CE), else a put (PE).
    pub call: bool,
}

/// The parts of an option's name (`None` for anything else: an equity, a future).
#[must_use]
pub fn option_name(symbol: &str) -> Option<OptionName> {
    let (name, (year, month, day), rest) = name_parts(symbol)?;
    let (rest, call) = match rest {
        r if r.ends_with("CE") => (r.strip_suffix("CE")?, true),
        r if r.ends_with("PE") => (r.strip_suffix("PE")?, false),
        _ => return None,
    };
    let strike = Decimal::from_str_exact(rest)
        .ok()
        .filter(|s| *s > Decimal::ZERO && !rest.starts_with('+'))?;
    Some(OptionName {
        underlying: name.to_owned(),
        expiry: format!("{year:04}-{month:02}-{day:02}"),
        strike: strike.normalize(),
        call,
    })
}

impl ContractRules {
    /// NSE's, as bundled (`contracts/nse.toml`).
    #[must_use]
    pub fn nse() -> Self {
        Self::parse("contracts/nse.toml", BUNDLED).unwrap_or_else(|e| {
            tracing::error!("bundled contract rules: {e}");
            Self::default()
        })
    }

    /// Read a rules file; `source_name` names it in errors.
    ///
    /// # Errors
    /// Not TOML, an unknown field, a freeze quantity or lot that is not a positive
    /// whole number, a `from` that is not `YYYY-MM-DD`, one `from` listed twice.
    pub fn parse(source_name: &str, text: &str) -> Result<Self, ContractsError> {
        let line_of = |offset: usize| {
            text.get(..offset)
                .map_or(0, |t| t.matches('\n').count() + 1)
        };
        let err = |offset: usize, field: &str, message: String| ContractsError {
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
        let mut rules = Self::default();
        for (name, qty) in file.freeze {
            let q = u64::try_from(*qty.get_ref())
                .ok()
                .filter(|q| *q > 0)
                .ok_or_else(|| {
                    err(
                        qty.span().start,
                        &format!("freeze.{name}"),
                        format!("{}: expected a positive quantity", qty.get_ref()),
                    )
                })?;
            rules.freeze.insert(name.to_ascii_uppercase(), q);
        }
        for entry in file.lot {
            let at = entry.from.span().start;
            let from = parse_date(entry.from.get_ref()).ok_or_else(|| {
                err(
                    at,
                    "lot.from",
                    format!("{:?}: expected YYYY-MM-DD", entry.from.get_ref()),
                )
            })?;
            let lot = u64::try_from(*entry.lot.get_ref())
                .ok()
                .filter(|l| *l > 0)
                .ok_or_else(|| {
                    err(
                        entry.lot.span().start,
                        "lot.lot",
                        format!("{}: expected a positive lot size", entry.lot.get_ref()),
                    )
                })?;
            let list = rules
                .lots
                .entry(entry.underlying.to_ascii_uppercase())
                .or_default();
            if list.iter().any(|(d, _)| *d == from) {
                return Err(err(
                    at,
                    "lot.from",
                    format!(
                        "{} {} is listed twice",
                        entry.underlying,
                        entry.from.get_ref()
                    ),
                ));
            }
            list.push((from, lot));
            list.sort_unstable();
        }
        for (name, pct) in file.band {
            let text = match pct.get_ref() {
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                other => other.to_string(),
            };
            let band = text
                .parse::<Decimal>()
                .ok()
                .filter(|p| *p > Decimal::ZERO && *p < Decimal::ONE_HUNDRED)
                .ok_or_else(|| {
                    err(
                        pct.span().start,
                        &format!("band.{name}"),
                        format!("{text}: expected a percentage above 0 and below 100"),
                    )
                })?;
            rules.bands.insert(name.to_ascii_uppercase(), band);
        }
        Ok(rules)
    }

    /// The daily price band of the cash symbol `symbol`, percent either side of its
    /// previous close, where the rules list one (NSE sets 2, 5, 10 or 20 % per security;
    /// stocks with derivatives have none, only the exchange's dynamic operating range).
    #[must_use]
    pub fn band_pct(&self, symbol: &str) -> Option<Decimal> {
        self.bands.get(symbol.trim()).copied()
    }

    /// The freeze quantity of `symbol`'s derivatives, if its underlying has one.
    #[must_use]
    pub fn freeze_qty(&self, symbol: &str) -> Option<u64> {
        self.freeze.get(underlying(symbol)?).copied()
    }

    /// The lot of `symbol` traded at `at_ms`: a contract's by its underlying and expiry; an
    /// underlying's own name (an index traded as such, as the synthetic and replayed index
    /// pipelines do) the lot of its contracts expiring from that day on.
    #[must_use]
    pub fn lot_size_at(&self, symbol: &str, at_ms: i64) -> Option<u64> {
        if let Some(lot) = self.lot_size(symbol) {
            return Some(lot);
        }
        let day = super::time::ist_day(at_ms);
        self.lots
            .get(symbol.trim())?
            .iter()
            .rev()
            .find(|(from, _)| *from <= day)
            .map(|(_, lot)| *lot)
    }

    /// The lot of the contract `symbol`: its broker's instrument master's where one was
    /// read, else by its underlying and expiry from these rules.
    #[must_use]
    pub fn lot_size(&self, symbol: &str) -> Option<u64> {
        if let Some(lot) = master_lot(symbol) {
            return Some(lot);
        }
        let expiry = expiry_day(symbol)?;
        let list = self.lots.get(underlying(symbol)?)?;
        list.iter()
            .rev()
            .find(|(from, _)| *from <= expiry)
            .map(|(_, lot)| *lot)
    }

    /// The quantities `qty` goes out as: one order when it is within `symbol`'s
    /// freeze quantity (or there is none), else slices of whole lots (`lot`) no
    /// larger than it, the last one the rest; with no lot known, slices of the freeze
    /// quantity itself.
    #[must_use]
    pub fn slices(&self, symbol: &str, qty: u64, lot: Option<u64>) -> Vec<u64> {
        let Some(freeze) = self.freeze_qty(symbol).filter(|f| qty > *f) else {
            return vec![qty];
        };
        let lot = lot.unwrap_or(1).max(1);
        let step = if freeze >= lot {
            freeze - freeze % lot
        } else {
            freeze
        };
        let mut out = Vec::with_capacity(usize::try_from(qty / step + 1).unwrap_or(0));
        let mut left = qty;
        while left > 0 {
            let part = left.min(step);
            out.push(part);
            left -= part;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_underlyings_and_expiries() {
        assert_eq!(underlying("NIFTY28MAR2420800CE"), Some("NIFTY"));
        assert_eq!(underlying("MIDCPNIFTY30DEC25FUT"), Some("MIDCPNIFTY"));
        assert_eq!(underlying("NIFTYNXT5027FEB2565000CE"), Some("NIFTYNXT50"));
        assert_eq!(underlying("NIFTY"), None);
        assert_eq!(underlying("M&M"), None);
        assert_eq!(
            expiry_day("NIFTY28MAR2420800CE"),
            Some(days_from_civil(2024, 3, 28))
        );
        assert_eq!(
            expiry_day("NIFTY06JAN26FUT"),
            Some(days_from_civil(2026, 1, 6))
        );
        assert_eq!(expiry_day("NIFTY99MAR2420800CE"), None);
    }

    #[test]
    fn takes_an_option_name_apart_and_back() {
        let n = option_name("NIFTY28MAR2420800CE").unwrap();
        assert_eq!(
            n,
            OptionName {
                underlying: "NIFTY".into(),
                expiry: "2024-03-28".into(),
                strike: Decimal::from(20_800),
                call: true
            }
        );
        let p = option_name("HEROMOTOCO28AUG25102.5PE").unwrap();
        assert_eq!(
            (p.strike, p.call, p.expiry.as_str()),
            (Decimal::new(1025, 1), false, "2025-08-28")
        );
        // Made back into the name by the SDK's own rule.
        let kind = if n.call {
            strategy_sdk::OptionKind::Ce
        } else {
            strategy_sdk::OptionKind::Pe
        };
        assert_eq!(
            strategy_sdk::option_symbol(&n.underlying, &n.expiry, 20_800.0, kind).as_deref(),
            Some("NIFTY28MAR2420800CE")
        );
        for not in [
            "NIFTY28MAR24FUT",
            "NIFTY",
            "RELIANCE",
            "NIFTY28MAR24CE",
            "NIFTY28MAR240CE",
            "NIFTY28XYZ2420800CE",
            "NIFTY32MAR2420800CE",
            "NIFTY28MAR24-5CE",
            "NIFTY28MAR2420800XE",
        ] {
            assert_eq!(option_name(not), None, "{not}");
        }
    }

    #[test]
    fn a_lot_size_changes_between_two_expiries() {
        let nse = ContractRules::nse();
        assert_eq!(
            nse.lot_size("NIFTY30DEC2526000CE"),
            Some(75),
            "the last 2025 contract"
        );
        assert_eq!(
            nse.lot_size("NIFTY06JAN2626000CE"),
            Some(65),
            "the first 2026 contract"
        );
        assert_eq!(
            nse.lot_size("NIFTY04JAN2421600CE"),
            Some(50),
            "before NSE/FAOP/61415"
        );
        assert_eq!(nse.lot_size("NIFTY30MAY2422500CE"), Some(25));
        assert_eq!(
            nse.lot_size("NIFTY28DEC2321000CE"),
            None,
            "before the file's first lot"
        );
        assert_eq!(nse.lot_size("RELIANCE"), None);
        // Every index derivative is listed, by expiry.
        for (contract, lot) in [
            ("BANKNIFTY25JAN2448000CE", 15),
            ("BANKNIFTY27FEB2548000CE", 30),
            ("BANKNIFTY31JUL2555000CE", 35),
            ("BANKNIFTY27JAN2660000CE", 30),
            ("FINNIFTY30JUL2423000CE", 25),
            ("FINNIFTY27JAN2627000CE", 60),
            ("MIDCPNIFTY29JUL2512000CE", 140),
            ("NIFTYNXT5027FEB2565000CE", 25),
        ] {
            assert_eq!(nse.lot_size(contract), Some(lot), "{contract}");
        }
    }

    #[test]
    fn an_index_traded_as_such_takes_the_lot_of_its_contracts_on_the_day() {
        let nse = ContractRules::nse();
        // 2024-01-02 and 2026-03-02, 10:00 IST.
        let (jan24, mar26) = (1_704_169_800_000, 1_772_425_800_000);
        assert_eq!(nse.lot_size_at("BANKNIFTY", jan24), Some(15));
        assert_eq!(nse.lot_size_at("BANKNIFTY", mar26), Some(30));
        assert_eq!(nse.lot_size_at("NIFTY", mar26), Some(65));
        assert_eq!(nse.lot_size_at("RELIANCE", mar26), None);
        // A contract's own expiry decides, not the day it trades.
        assert_eq!(nse.lot_size_at("NIFTY30DEC2526000CE", mar26), Some(75));
    }

    #[test]
    fn orders_above_the_freeze_are_sliced_in_whole_lots() {
        let nse = ContractRules::nse();
        assert_eq!(nse.freeze_qty("NIFTY06JAN2626000CE"), Some(1800));
        // 5,000 NIFTY in lots of 65: 1800 is 27.7 lots, so slices of 27 lots (1755).
        assert_eq!(
            nse.slices("NIFTY06JAN2626000CE", 5005, Some(65)),
            vec![1755, 1755, 1495]
        );
        assert_eq!(
            nse.slices("NIFTY06JAN2626000CE", 5000, None),
            vec![1800, 1800, 1400]
        );
        assert_eq!(
            nse.slices("NIFTY06JAN2626000CE", 1800, Some(75)),
            vec![1800],
            "at the limit: one order"
        );
        assert_eq!(
            nse.slices("RELIANCE", 50_000, None),
            vec![50_000],
            "no freeze for cash equity"
        );
    }

    #[test]
    fn stock_derivatives_have_their_freeze_and_lot_from_the_bundled_lists() {
        let nse = ContractRules::nse();
        // NSE's quantity-freeze list (Dec 2025) and market lots (Apr 2026 series).
        for (contract, freeze, lot) in [
            ("RELIANCE28APR26FUT", 15_000, 500),
            ("YESBANK26MAY2620CE", 933_000, 31_100),
            ("M&M28APR263000CE", 6_000, 200),
            ("BAJAJ-AUTO28APR26FUT", 3_000, 75),
        ] {
            assert_eq!(nse.freeze_qty(contract), Some(freeze), "{contract}");
            assert_eq!(nse.lot_size(contract), Some(lot), "{contract}");
            // The freeze is a whole number of lots, so slices are whole lots at the limit.
            assert_eq!(freeze % lot, 0, "{contract}");
        }
        assert_eq!(
            nse.lot_size("RELIANCE26MAR26FUT"),
            None,
            "a series before the bundled list: the master's, or the pipeline's lot_size"
        );
        assert_eq!(
            nse.slices("RELIANCE28APR26FUT", 40_000, Some(500)),
            vec![15_000, 15_000, 10_000]
        );
    }

    #[test]
    fn a_price_band_is_read_per_symbol_and_a_bad_one_names_its_line() {
        let rules = ContractRules::parse("c.toml", "[band]\nYESBANK = 5\nIDEA = 2.5\n").unwrap();
        assert_eq!(rules.band_pct("YESBANK"), Some(Decimal::from(5)));
        assert_eq!(rules.band_pct("IDEA"), Some(Decimal::new(25, 1)));
        assert_eq!(rules.band_pct("RELIANCE"), None);
        for bad in [
            "[band]\nYESBANK = 0\n",
            "[band]\nYESBANK = \"five\"\n",
            "[band]\nYESBANK = 100\n",
        ] {
            let e = ContractRules::parse("c.toml", bad).unwrap_err();
            assert_eq!((e.line, e.field.as_str()), (2, "band.YESBANK"), "{bad}");
        }
    }

    #[test]
    fn a_bad_file_names_its_line() {
        let e = ContractRules::parse("c.toml", "[freeze]\nNIFTY = 0\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (2, "freeze.NIFTY"));
        let e = ContractRules::parse(
            "c.toml",
            "[[lot]]\nunderlying = \"NIFTY\"\nfrom = \"2026-02-30\"\nlot = 65\n",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "c.toml:3: lot.from: \"2026-02-30\": expected YYYY-MM-DD"
        );
    }
}
