//! Open-interest crossover on an option chain.
//!
//! Net OI = Σ PE OI − Σ CE OI over the nearest expiry. Put writers piling in
//! is read as support (bullish), call writers as resistance (bearish). The
//! regime flips with hysteresis `h` (default 2000 contracts): bullish when net
//! OI moves from below −h to above +h, bearish the other way; readings in
//! between change nothing, so noise around zero cannot whipsaw.
//!
//! On a flip the strategy exits the option it holds and buys the at-the-money
//! option of the nearest expiry: a CE when bullish, a PE when bearish.
//!
//! Params: `hysteresis` (2000).

use strategy_sdk::state::{StateReader, StateWriter};
use strategy_sdk::{
    OptionChain, OptionKind, ParamError, Params, PerInstrument, Signals, Strategy, option_symbol,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Regime {
    Unknown,
    Below,
    Above,
}

#[derive(Debug, Clone)]
struct Book {
    regime: Regime,
    held: Option<String>,
}

/// The strategy.
#[derive(Debug, Clone)]
pub struct OiCrossover {
    hysteresis: i64,
    books: PerInstrument<Book>,
}

const STATE_VERSION: u8 = 1;

impl Strategy for OiCrossover {
    fn new(params: &Params) -> Result<Self, ParamError> {
        params.reject_unknown(&["hysteresis"])?;
        let hysteresis: i64 = params.get("hysteresis", 2000)?;
        if hysteresis < 0 {
            return Err(ParamError::new(
                "hysteresis",
                format!("must be 0 or more contracts, got {hysteresis}"),
            ));
        }
        Ok(Self {
            hysteresis,
            books: PerInstrument::new(),
        })
    }

    fn on_option_chain(&mut self, chain: &OptionChain, signals: &mut Signals) {
        let Some(expiry) = chain.nearest() else {
            return;
        };
        let net = expiry.net_oi();
        let h = self.hysteresis;
        let book = self.books.get_or_insert_with(&chain.underlying, || Book {
            regime: Regime::Unknown,
            held: None,
        });
        let now = if net > h {
            Regime::Above
        } else if net < -h {
            Regime::Below
        } else {
            return;
        };
        let previous = std::mem::replace(&mut book.regime, now);
        let kind = match (previous, now) {
            (Regime::Below, Regime::Above) => OptionKind::Ce,
            (Regime::Above, Regime::Below) => OptionKind::Pe,
            _ => return,
        };
        let Some(atm) = expiry.atm(chain.spot) else {
            return;
        };
        let Some(symbol) = option_symbol(&chain.underlying, &expiry.expiry, atm.strike, kind)
        else {
            return;
        };
        let mood = if kind == OptionKind::Ce {
            "bullish"
        } else {
            "bearish"
        };
        if let Some(held) = book.held.take() {
            signals.exit(&held, format!("net OI {net} turned {mood}"));
        }
        signals.buy(
            &symbol,
            format!(
                "net OI {net} crossed {}{h} ({mood}); ATM {} at spot {:.2}",
                if kind == OptionKind::Ce { "+" } else { "-" },
                atm.strike,
                chain.spot
            ),
        );
        book.held = Some(symbol);
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut w = StateWriter::new();
        w.u8(STATE_VERSION).u64(self.books.iter().count() as u64);
        for (underlying, b) in self.books.iter() {
            let regime = match b.regime {
                Regime::Unknown => 0,
                Regime::Below => 1,
                Regime::Above => 2,
            };
            w.str(underlying)
                .u8(regime)
                .str(b.held.as_deref().unwrap_or(""));
        }
        w.finish()
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        let mut r = StateReader::new(state);
        r.version(STATE_VERSION)?;
        let mut restored = PerInstrument::new();
        for _ in 0..r.u64()? {
            let underlying = r.str()?;
            let regime = match r.u8()? {
                0 => Regime::Unknown,
                1 => Regime::Below,
                2 => Regime::Above,
                other => return Err(format!("snapshot: bad regime {other}")),
            };
            let held = Some(r.str()?).filter(|s| !s.is_empty());
            restored.insert(&underlying, Book { regime, held });
        }
        r.finish()?;
        self.books = restored;
        Ok(())
    }
}

strategy_sdk::register_strategy!(OiCrossover);

#[cfg(test)]
mod tests {
    use super::*;
    use strategy_sdk::{ExpiryChain, OptionLeg, Side, StrikeRow};

    fn chain(spot: f64, ce_oi: u64, pe_oi: u64) -> OptionChain {
        let leg = |oi| {
            Some(OptionLeg {
                last: 10.0,
                oi,
                volume: 0,
                greeks: None,
            })
        };
        let near = ExpiryChain {
            expiry: "2025-08-28".into(),
            strikes: vec![
                StrikeRow {
                    strike: 5000.0,
                    ce: leg(ce_oi),
                    pe: leg(pe_oi),
                },
                StrikeRow {
                    strike: 5100.0,
                    ce: leg(0),
                    pe: leg(0),
                },
            ],
        };
        // A far expiry with huge OI must be ignored.
        let far = ExpiryChain {
            expiry: "2025-09-30".into(),
            strikes: vec![StrikeRow {
                strike: 5000.0,
                ce: leg(1_000_000),
                pe: leg(0),
            }],
        };
        OptionChain {
            underlying: "HEROMOTOCO".into(),
            ts: 0,
            spot,
            expiries: vec![near, far],
        }
    }

    fn run(steps: &[(f64, u64, u64)]) -> Vec<(usize, Side, String)> {
        let mut s = OiCrossover::new(&Params::default()).unwrap();
        let mut out = Vec::new();
        for (i, (spot, ce, pe)) in steps.iter().enumerate() {
            let mut sig = Signals::new();
            s.on_option_chain(&chain(*spot, *ce, *pe), &mut sig);
            out.extend(
                sig.as_slice()
                    .iter()
                    .map(|(_, s)| (i, s.side, s.instrument.clone())),
            );
        }
        out
    }

    #[test]
    fn flips_with_hysteresis_and_names_the_atm_option() {
        let got = run(&[
            (5010.0, 0, 1000), // +1000: inside the band, nothing known
            (5010.0, 3000, 0), // -3000: below, first regime, no signal
            (5010.0, 0, 1500), // +1500: inside the band, nothing
            (5070.0, 0, 2500), // +2500: bullish flip; ATM 5100
            (5070.0, 0, 9000), // still above: nothing
            (5020.0, 2001, 0), // -2001: bearish flip; exit the CE, buy the PE at 5000
        ]);
        assert_eq!(
            got,
            vec![
                (3, Side::Buy, "HEROMOTOCO28AUG255100CE".to_owned()),
                (5, Side::Exit, "HEROMOTOCO28AUG255100CE".to_owned()),
                (5, Side::Buy, "HEROMOTOCO28AUG255000PE".to_owned()),
            ]
        );
    }

    #[test]
    fn exactly_h_is_inside_the_band() {
        assert!(run(&[(5000.0, 2000, 0), (5000.0, 0, 2000), (5000.0, 2000, 0)]).is_empty());
    }

    #[test]
    fn snapshot_round_trip() {
        let mut a = OiCrossover::new(&Params::default()).unwrap();
        let mut sig = Signals::new();
        a.on_option_chain(&chain(5000.0, 5000, 0), &mut sig);
        let mut b = OiCrossover::new(&Params::default()).unwrap();
        b.restore(&a.snapshot()).unwrap();
        b.on_option_chain(&chain(5000.0, 0, 5000), &mut sig);
        assert_eq!(
            sig.len(),
            1,
            "restored regime is Below, so this is a bullish flip"
        );
        assert!(b.restore(&[1, 1, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }
}
