//! `tradehost report`: per account and IST day, FIFO P&L rebuilt from the
//! journal's fills (realised, unrealised at the last fill price, charges),
//! the round-trip trades as CSV, and `fills.csv`: the one fills format a run's
//! journal and a backtest both write, so the two compare line by line.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use rust_decimal::Decimal;

use super::journal::reads::JournalReader;
pub use super::journal::reads::{FillRow, SignalRow};

use crate::domain::OrderSide;
use crate::domain::position::Position;
use crate::domain::time::{format_iso_ist, ist_day};

/// A matched entry and exit (FIFO).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundTrip {
    /// Account.
    pub account: String,
    /// Instrument.
    pub instrument: String,
    /// `long` or `short`.
    pub side: &'static str,
    /// Units.
    pub qty: Decimal,
    /// Entry time.
    pub entry_ts: i64,
    /// Entry price.
    pub entry_price: Decimal,
    /// Exit time.
    pub exit_ts: i64,
    /// Exit price.
    pub exit_price: Decimal,
    /// Realised P&L.
    pub pnl: Decimal,
    /// What closed it.
    pub exit_by: String,
}

/// A day of one account.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Day {
    /// Realised P&L of trips closed that day.
    pub realized: Decimal,
    /// Fills that day.
    pub fills: usize,
    /// Charges that day.
    pub charges: Decimal,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    /// Account → IST day (days since epoch) → figures.
    pub days: BTreeMap<String, BTreeMap<i64, Day>>,
    /// Account → unrealised P&L of open lots at each instrument's last fill price.
    pub unrealized: BTreeMap<String, Decimal>,
    /// Every round trip, in order of exit.
    pub trips: Vec<RoundTrip>,
    /// Account → risk rule → orders it refused.
    pub refusals: BTreeMap<String, BTreeMap<String, usize>>,
}

/// Read the refused decisions of a journal: account → rule → count.
///
/// # Errors
/// The journal cannot be read.
pub fn read_refusals(journal: &Path) -> anyhow::Result<BTreeMap<String, BTreeMap<String, usize>>> {
    let mut out: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for (account, outcome) in JournalReader::open_file(journal)?.refusals()? {
        let rule = outcome
            .split_once('[')
            .and_then(|(_, r)| r.split_once(']'))
            .map_or("other", |(r, _)| r)
            .to_owned();
        *out.entry(account).or_default().entry(rule).or_default() += 1;
    }
    Ok(out)
}

/// A CSV field, quoted when it holds a comma, a quote or a line break.
#[must_use]
pub fn csv_field(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\"")).into()
    } else {
        text.into()
    }
}

/// Read the signals a journal recorded, in time order (none from a journal
/// kept before signals were recorded).
///
/// # Errors
/// The journal cannot be read, or a price is damaged.
pub fn read_signals(journal: &Path) -> anyhow::Result<Vec<SignalRow>> {
    Ok(JournalReader::open_file(journal)?.signals()?)
}

/// `signals.csv`, in the columns a single-plugin backtest writes: `ts,instrument,side,price,reason`.
#[must_use]
pub fn signals_csv(rows: &[SignalRow]) -> String {
    let mut out = String::from("ts,instrument,side,price,reason\n");
    for s in rows {
        out += &format!(
            "{},{},{},{},{}\n",
            format_iso_ist(s.ts),
            csv_field(&s.instrument),
            csv_field(&s.side),
            s.price.map(|p| p.to_string()).unwrap_or_default(),
            csv_field(&s.reason)
        );
    }
    out
}

/// Read the fills of a journal in the order they happened.
///
/// # Errors
/// The journal cannot be read (named with its path), or a fill is damaged.
pub fn read_fills(journal: &Path) -> anyhow::Result<Vec<FillRow>> {
    Ok(JournalReader::open_file(journal)?.fills()?)
}

/// FIFO-match the fills into round trips and daily figures, with the one
/// [`Position`] the order manager and the backtest keep.
#[must_use]
pub fn build(fills: &[FillRow], charges_per_order: Decimal) -> Report {
    let mut report = Report::default();
    let mut positions: HashMap<(String, String), Position> = HashMap::new();
    let mut last_price: HashMap<(String, String), Decimal> = HashMap::new();
    for f in fills {
        let key = (f.account.clone(), f.instrument.clone());
        last_price.insert(key.clone(), f.price);
        let day = report
            .days
            .entry(f.account.clone())
            .or_default()
            .entry(ist_day(f.ts))
            .or_default();
        day.fills += 1;
        day.charges += charges_per_order;
        let side = if f.sign > 0 {
            OrderSide::Buy
        } else {
            OrderSide::Sell
        };
        for c in positions
            .entry(key)
            .or_default()
            .fill(side, f.qty, f.price, f.ts)
        {
            day.realized += c.pnl;
            report.trips.push(RoundTrip {
                account: f.account.clone(),
                instrument: f.instrument.clone(),
                side: if c.long { "long" } else { "short" },
                qty: c.qty,
                entry_ts: c.entry_ts,
                entry_price: c.entry_price,
                exit_ts: c.exit_ts,
                exit_price: c.exit_price,
                pnl: c.pnl,
                exit_by: f.source.clone(),
            });
        }
    }
    for ((account, instrument), position) in positions {
        let mark = last_price
            .get(&(account.clone(), instrument))
            .copied()
            .unwrap_or_default();
        *report.unrealized.entry(account).or_default() += position.unrealized(mark);
    }
    report
}

impl Report {
    /// The table a trader reads.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = format!(
            "{:<16} {:<10} {:>6} {:>14} {:>10} {:>14}\n",
            "account", "day", "fills", "realised", "charges", "net"
        );
        for (account, days) in &self.days {
            let (mut r, mut c) = (Decimal::ZERO, Decimal::ZERO);
            for (day, d) in days {
                let date =
                    &format_iso_ist(day * 86_400_000 - crate::domain::time::IST_OFFSET_MS)[..10];
                out += &format!(
                    "{account:<16} {date:<10} {:>6} {:>14} {:>10} {:>14}\n",
                    d.fills,
                    d.realized,
                    d.charges,
                    d.realized - d.charges
                );
                r += d.realized;
                c += d.charges;
            }
            let u = self.unrealized.get(account).copied().unwrap_or_default();
            out += &format!(
                "{account:<16} {:<10} {:>6} {:>14} {:>10} {:>14}   unrealised {u} at the last fill prices\n",
                "total",
                "",
                r,
                c,
                r - c
            );
        }
        out += "\nround trips by what closed them, and orders refused by risk rule:\n";
        let accounts: std::collections::BTreeSet<&String> =
            self.days.keys().chain(self.refusals.keys()).collect();
        for account in accounts {
            let mut by: BTreeMap<&str, (usize, Decimal)> = BTreeMap::new();
            for t in self.trips.iter().filter(|t| &t.account == account) {
                let e = by.entry(t.exit_by.as_str()).or_default();
                e.0 += 1;
                e.1 += t.pnl;
            }
            let exits: Vec<String> = by
                .iter()
                .map(|(k, (n, pnl))| format!("{k} {n} ({pnl})"))
                .collect();
            let refused: Vec<String> = self
                .refusals
                .get(account)
                .map(|m| m.iter().map(|(k, n)| format!("{k} {n}")).collect())
                .unwrap_or_default();
            out += &format!(
                "{account:<16} closed by: {}\n{:<16} refused:   {}\n",
                exits.join(", "),
                "",
                if refused.is_empty() {
                    "none".to_owned()
                } else {
                    refused.join(", ")
                }
            );
        }
        out
    }

    /// Round trips as CSV.
    #[must_use]
    pub fn trips_csv(&self) -> String {
        let mut out = String::from(
            "account,instrument,side,qty,entry_ts,entry_price,exit_ts,exit_price,pnl,exit_by\n",
        );
        for t in &self.trips {
            out += &format!(
                "{},{},{},{},{},{},{},{},{},{}\n",
                t.account,
                t.instrument,
                t.side,
                t.qty,
                format_iso_ist(t.entry_ts),
                t.entry_price,
                format_iso_ist(t.exit_ts),
                t.exit_price,
                t.pnl,
                t.exit_by
            );
        }
        out
    }
}

/// One line of `fills.csv`: `ts,account,instrument,side,qty,price,reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FillLine {
    /// Exchange time, ms (written as IST ISO 8601).
    pub ts: i64,
    /// Account.
    pub account: String,
    /// Instrument.
    pub instrument: String,
    /// `buy` or `sell`.
    pub side: &'static str,
    /// Units.
    pub qty: Decimal,
    /// Price.
    pub price: Decimal,
    /// `signal` for an order a signal made, else what closed the position:
    /// `stop-loss`, `target`, `trailing-stop`, `square-off`, `carried`, `flatten`, `basket-unwind`.
    pub reason: String,
}

impl From<&FillRow> for FillLine {
    fn from(f: &FillRow) -> Self {
        let reason = if super::CLOSE_REASONS.contains(&f.source.as_str()) {
            f.source.clone()
        } else {
            "signal".to_owned()
        };
        Self {
            ts: f.ts,
            account: f.account.clone(),
            instrument: f.instrument.clone(),
            side: if f.sign > 0 { "buy" } else { "sell" },
            qty: f.qty,
            price: f.price,
            reason,
        }
    }
}

/// `fills.csv`: sorted by time then account (stable: fills of one moment keep
/// their order), with the parts of one trade at one moment and price merged
/// into one line (a reversal a backtest books as a close and an open, and a
/// run as one order, read the same).
#[must_use]
pub fn fills_csv(mut lines: Vec<FillLine>) -> String {
    lines.sort_by(|a, b| (a.ts, &a.account).cmp(&(b.ts, &b.account)));
    let mut merged: Vec<FillLine> = Vec::with_capacity(lines.len());
    for line in lines {
        match merged.last_mut() {
            Some(last)
                if (
                    last.ts,
                    &last.account,
                    &last.instrument,
                    last.side,
                    last.price,
                    &last.reason,
                ) == (
                    line.ts,
                    &line.account,
                    &line.instrument,
                    line.side,
                    line.price,
                    &line.reason,
                ) =>
            {
                last.qty += line.qty;
            }
            _ => merged.push(line),
        }
    }
    let mut out = String::from("ts,account,instrument,side,qty,price,reason\n");
    for l in merged {
        out += &format!(
            "{},{},{},{},{},{},{}\n",
            format_iso_ist(l.ts),
            l.account,
            l.instrument,
            l.side,
            l.qty.normalize(),
            l.price.normalize(),
            l.reason
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn fills_csv_sorts_by_time_then_account_and_merges_the_parts_of_one_trade() {
        let line =
            |ts: i64, account: &str, side: &'static str, qty: Decimal, reason: &str| FillLine {
                ts: D1 + ts,
                account: account.into(),
                instrument: "NIFTY".into(),
                side,
                qty,
                price: dec!(100.50),
                reason: reason.into(),
            };
        let csv = fills_csv(vec![
            line(60_000, "b", "buy", dec!(1), "signal"),
            line(60_000, "a", "sell", dec!(2), "signal"),
            line(60_000, "a", "sell", dec!(2.0), "signal"),
            line(0, "b", "buy", dec!(1), "signal"),
            line(60_000, "a", "sell", dec!(1), "stop-loss"),
        ]);
        assert_eq!(
            csv,
            "ts,account,instrument,side,qty,price,reason\n\
             2024-01-01T10:00:00+05:30,b,NIFTY,buy,1,100.5,signal\n\
             2024-01-01T10:01:00+05:30,a,NIFTY,sell,4,100.5,signal\n\
             2024-01-01T10:01:00+05:30,a,NIFTY,sell,1,100.5,stop-loss\n\
             2024-01-01T10:01:00+05:30,b,NIFTY,buy,1,100.5,signal\n"
        );
        let from_journal = FillLine::from(&FillRow {
            account: "a".into(),
            instrument: "X".into(),
            sign: -1,
            qty: dec!(1),
            price: dec!(1),
            ts: 0,
            source: "nifty-ma".into(),
        });
        assert_eq!(
            (from_journal.side, from_journal.reason.as_str()),
            ("sell", "signal"),
            "a pipeline's order is a signal's"
        );
    }

    const D1: i64 = 1_704_083_400_000; // 2024-01-01 10:00 IST
    const DAY: i64 = 86_400_000;

    fn fill(sign: i8, qty: Decimal, price: Decimal, ts: i64, source: &str) -> FillRow {
        FillRow {
            account: "a".into(),
            instrument: "NIFTY".into(),
            sign,
            qty,
            price,
            ts,
            source: source.into(),
        }
    }

    #[test]
    fn fifo_by_day_with_charges() {
        let fills = [
            fill(1, dec!(2), dec!(100), D1, "p"),
            fill(1, dec!(1), dec!(110), D1 + 60_000, "p"),
            fill(-1, dec!(2), dec!(120), D1 + DAY, "p"), // closes the first lot: +40 on day 2
            fill(-1, dec!(2), dec!(105), D1 + DAY + 60_000, "stop-loss"), // closes 1 @110 (-5), opens short 1 @105
            fill(1, dec!(1), dec!(100), D1 + 2 * DAY, "square-off"),      // covers: +5 on day 3
        ];
        let r = build(&fills, dec!(20));
        let days: Vec<(i64, Decimal, usize, Decimal)> = r.days["a"]
            .iter()
            .map(|(d, v)| (*d - ist_day(D1), v.realized, v.fills, v.charges))
            .collect();
        assert_eq!(
            days,
            vec![
                (0, dec!(0), 2, dec!(40)),
                (1, dec!(35), 2, dec!(40)),
                (2, dec!(5), 1, dec!(20))
            ]
        );
        assert_eq!(r.trips.len(), 3);
        assert_eq!(
            (r.trips[1].side, r.trips[1].pnl, r.trips[1].exit_by.as_str()),
            ("long", dec!(-5), "stop-loss")
        );
        assert_eq!(r.trips[2].side, "short");
        assert_eq!(r.unrealized["a"], dec!(0));
        assert!(r.render().contains("2024-01-02") && r.trips_csv().lines().count() == 4);
        let open = build(&fills[..2], dec!(0));
        assert_eq!(
            open.unrealized["a"],
            dec!(20),
            "2 @100 marked at the last fill 110"
        );
    }
}
