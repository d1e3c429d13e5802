//! Moving-average crossover: buy when the fast average crosses above the
//! slow one, sell when it crosses below.
//!
//! Params: `kind` = `sma` | `ema` (default `sma`), `fast` (10), `slow` (50).

use strategy_sdk::indicators::{Cross, Crossover, Ema, Sma};
use strategy_sdk::state::{StateReader, StateWriter};
use strategy_sdk::{Candle, ParamError, Params, PerInstrument, Signals, Strategy};

/// Which average to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Simple.
    Sma,
    /// Exponential, TA-Lib seeded.
    Ema,
}

#[derive(Debug, Clone)]
enum Average {
    Sma(Sma),
    Ema(Ema),
}

impl Average {
    fn new(kind: Kind, n: usize) -> Self {
        match kind {
            Kind::Sma => Self::Sma(Sma::new(n)),
            Kind::Ema => Self::Ema(Ema::new(n)),
        }
    }

    fn update(&mut self, x: f64) -> Option<f64> {
        match self {
            Self::Sma(a) => a.update(x),
            Self::Ema(a) => a.update(x),
        }
    }

    fn save(&self, w: &mut StateWriter) {
        match self {
            Self::Sma(a) => a.save(w),
            Self::Ema(a) => a.save(w),
        }
    }

    fn load(&mut self, r: &mut StateReader<'_>) -> Result<(), strategy_sdk::state::StateError> {
        match self {
            Self::Sma(a) => a.load(r),
            Self::Ema(a) => a.load(r),
        }
    }
}

#[derive(Debug, Clone)]
struct Lines {
    fast: Average,
    slow: Average,
    cross: Crossover,
}

/// The strategy.
#[derive(Debug, Clone)]
pub struct MaCrossover {
    kind: Kind,
    fast: usize,
    slow: usize,
    lines: PerInstrument<Lines>,
}

const STATE_VERSION: u8 = 1;

impl MaCrossover {
    fn fresh_lines(&self) -> Lines {
        Self::lines_of(self.kind, self.fast, self.slow)
    }

    fn lines_of(kind: Kind, fast: usize, slow: usize) -> Lines {
        Lines {
            fast: Average::new(kind, fast),
            slow: Average::new(kind, slow),
            cross: Crossover::new(),
        }
    }

    fn label(&self) -> &'static str {
        match self.kind {
            Kind::Sma => "SMA",
            Kind::Ema => "EMA",
        }
    }
}

impl Strategy for MaCrossover {
    fn new(params: &Params) -> Result<Self, ParamError> {
        params.reject_unknown(&["kind", "fast", "slow"])?;
        let kind = match params
            .get("kind", String::from("sma"))?
            .to_ascii_lowercase()
            .as_str()
        {
            "sma" => Kind::Sma,
            "ema" => Kind::Ema,
            other => {
                return Err(ParamError::new(
                    "kind",
                    format!("expected `sma` or `ema`, got {other:?}"),
                ));
            }
        };
        let fast: usize = params.get("fast", 10)?;
        let slow: usize = params.get("slow", 50)?;
        if fast == 0 {
            return Err(ParamError::new("fast", "must be at least 1"));
        }
        if slow <= fast {
            return Err(ParamError::new(
                "slow",
                format!("must be greater than fast ({fast}), got {slow}"),
            ));
        }
        Ok(Self {
            kind,
            fast,
            slow,
            lines: PerInstrument::new(),
        })
    }

    fn on_candle(&mut self, candle: &Candle<'_>, signals: &mut Signals) {
        let (label, kind, fast_n, slow_n) = (self.label(), self.kind, self.fast, self.slow);
        // Built only the first time an instrument is seen, never per candle.
        let lines = self
            .lines
            .get_or_insert_with(candle.instrument, || Self::lines_of(kind, fast_n, slow_n));
        let fast = lines.fast.update(candle.close);
        let slow = lines.slow.update(candle.close);
        let (Some(fast), Some(slow)) = (fast, slow) else {
            return;
        };
        match lines.cross.update(fast, slow) {
            Some(Cross::Up) => {
                signals.buy(
                    candle.instrument,
                    format!("{label}({fast_n}) crossed above {label}({slow_n})"),
                );
            }
            Some(Cross::Down) => {
                signals.sell(
                    candle.instrument,
                    format!("{label}({fast_n}) crossed below {label}({slow_n})"),
                );
            }
            None => {}
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut w = StateWriter::new();
        w.u8(STATE_VERSION).u64(self.lines.iter().count() as u64);
        for (instrument, lines) in self.lines.iter() {
            w.str(instrument);
            lines.fast.save(&mut w);
            lines.slow.save(&mut w);
            w.u8(lines.cross.to_byte());
        }
        w.finish()
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        let mut r = StateReader::new(state);
        r.version(STATE_VERSION)?;
        let count = r.u64()?;
        let mut restored = PerInstrument::new();
        for _ in 0..count {
            let instrument = r.str()?;
            let mut lines = self.fresh_lines();
            lines.fast.load(&mut r)?;
            lines.slow.load(&mut r)?;
            lines.cross = Crossover::from_byte(r.u8()?).ok_or("snapshot: bad crossover state")?;
            restored.insert(&instrument, lines);
        }
        r.finish()?;
        self.lines = restored;
        Ok(())
    }
}

strategy_sdk::register_strategy!(MaCrossover);

#[cfg(test)]
mod tests {
    use super::*;
    use strategy_sdk::{Bar, Side};

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params::new(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    fn feed(s: &mut MaCrossover, closes: &[f64]) -> Vec<(usize, Side)> {
        let mut out = Vec::new();
        for (i, c) in closes.iter().enumerate() {
            let mut sig = Signals::new();
            let bar = Bar {
                ts: i as i64 * 60_000,
                open: *c,
                high: *c,
                low: *c,
                close: *c,
                volume: 0,
                oi: 0,
            };
            s.on_candle(
                &Candle {
                    instrument: "X",
                    timeframe_secs: 60,
                    bar,
                },
                &mut sig,
            );
            out.extend(sig.as_slice().iter().map(|(_, s)| (i, s.side)));
        }
        out
    }

    #[test]
    fn crosses_both_ways() {
        let mut s = MaCrossover::new(&params(&[("fast", "2"), ("slow", "3")])).unwrap();
        // fast/slow: idx2 (2.5, 2) above; idx3 (1.5, 1.67) below -> sell; idx4 (4.5, 4) above -> buy
        assert_eq!(
            feed(&mut s, &[1.0, 2.0, 3.0, 0.0, 9.0]),
            vec![(3, Side::Sell), (4, Side::Buy)]
        );
    }

    #[test]
    fn equal_averages_are_a_tie() {
        let mut s = MaCrossover::new(&params(&[("fast", "1"), ("slow", "2")])).unwrap();
        // above, tie, above: no signal at all
        assert_eq!(feed(&mut s, &[1.0, 2.0, 2.0, 3.0]), vec![]);
    }

    #[test]
    fn bad_params_are_named() {
        let cases = [
            (&[("slow", "5"), ("fast", "10")][..], "slow"),
            (&[("fast", "0")][..], "fast"),
            (&[("kind", "wma")][..], "kind"),
            (&[("fsat", "3")][..], "fsat"),
            (&[("fast", "ten")][..], "fast"),
        ];
        for (p, key) in cases {
            let err = MaCrossover::new(&params(p)).unwrap_err();
            assert_eq!(err.key, key, "{err}");
        }
    }

    #[test]
    fn snapshot_restores_mid_stream() {
        let closes: Vec<f64> = (0..200)
            .map(|i| 100.0 + ((i * 37) % 23) as f64 - (i % 7) as f64)
            .collect();
        let p = params(&[("kind", "ema"), ("fast", "3"), ("slow", "8")]);
        let mut whole = MaCrossover::new(&p).unwrap();
        let all = feed(&mut whole, &closes);
        let mut first = MaCrossover::new(&p).unwrap();
        let mut got = feed(&mut first, &closes[..100]);
        let mut second = MaCrossover::new(&p).unwrap();
        second.restore(&first.snapshot()).unwrap();
        got.extend(
            feed(&mut second, &closes[100..])
                .into_iter()
                .map(|(i, s)| (i + 100, s)),
        );
        assert!(!all.is_empty());
        assert_eq!(got, all);
        assert!(second.restore(&[9]).is_err());
    }
}
