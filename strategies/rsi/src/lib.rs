//! RSI reversal: buy when Wilder's RSI crosses back above the oversold line
//! (previous ≤ 30 < current), sell when it crosses back below the overbought
//! line (previous ≥ 70 > current).
//!
//! Params: `period` (14), `oversold` (30), `overbought` (70).

use strategy_sdk::indicators::Rsi;
use strategy_sdk::state::{StateReader, StateWriter};
use strategy_sdk::{Candle, ParamError, Params, PerInstrument, Signals, Strategy};

#[derive(Debug, Clone)]
struct Track {
    rsi: Rsi,
    prev: Option<f64>,
}

/// The strategy.
#[derive(Debug, Clone)]
pub struct RsiReversal {
    period: usize,
    oversold: f64,
    overbought: f64,
    tracks: PerInstrument<Track>,
}

const STATE_VERSION: u8 = 1;

impl Strategy for RsiReversal {
    fn new(params: &Params) -> Result<Self, ParamError> {
        params.reject_unknown(&["period", "oversold", "overbought"])?;
        let period: usize = params.get("period", 14)?;
        let oversold: f64 = params.get("oversold", 30.0)?;
        let overbought: f64 = params.get("overbought", 70.0)?;
        if period == 0 {
            return Err(ParamError::new("period", "must be at least 1"));
        }
        if !(0.0..=100.0).contains(&oversold) {
            return Err(ParamError::new(
                "oversold",
                format!("must be within 0..=100, got {oversold}"),
            ));
        }
        if !(oversold..=100.0).contains(&overbought) || overbought <= oversold {
            return Err(ParamError::new(
                "overbought",
                format!("must be within {oversold}..=100 and above oversold, got {overbought}"),
            ));
        }
        Ok(Self {
            period,
            oversold,
            overbought,
            tracks: PerInstrument::new(),
        })
    }

    fn on_candle(&mut self, candle: &Candle<'_>, signals: &mut Signals) {
        let (period, lo, hi) = (self.period, self.oversold, self.overbought);
        let track = self.tracks.get_or_insert_with(candle.instrument, || Track {
            rsi: Rsi::new(period),
            prev: None,
        });
        let Some(now) = track.rsi.update(candle.close) else {
            return;
        };
        if let Some(prev) = track.prev.replace(now) {
            if prev <= lo && now > lo {
                signals.buy(
                    candle.instrument,
                    format!("RSI({period}) rose back above {lo} ({now:.2})"),
                );
            } else if prev >= hi && now < hi {
                signals.sell(
                    candle.instrument,
                    format!("RSI({period}) fell back below {hi} ({now:.2})"),
                );
            }
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut w = StateWriter::new();
        w.u8(STATE_VERSION).u64(self.tracks.iter().count() as u64);
        for (instrument, t) in self.tracks.iter() {
            w.str(instrument);
            t.rsi.save(&mut w);
            w.opt_f64(t.prev);
        }
        w.finish()
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        let mut r = StateReader::new(state);
        r.version(STATE_VERSION)?;
        let mut restored = PerInstrument::new();
        for _ in 0..r.u64()? {
            let instrument = r.str()?;
            let mut rsi = Rsi::new(self.period);
            rsi.load(&mut r)?;
            let prev = r.opt_f64()?;
            restored.insert(&instrument, Track { rsi, prev });
        }
        r.finish()?;
        self.tracks = restored;
        Ok(())
    }
}

strategy_sdk::register_strategy!(RsiReversal);

#[cfg(test)]
mod tests {
    use super::*;
    use strategy_sdk::{Bar, Side};

    fn run(p: &[(&str, &str)], closes: &[f64]) -> Vec<(usize, Side)> {
        let params = Params::new(
            p.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        let mut s = RsiReversal::new(&params).unwrap();
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
    fn buys_on_recovery_and_sells_on_fade() {
        // RSI(2): falls to 0 on steady declines, jumps above 30 on a strong up move.
        let closes = [10.0, 9.0, 8.0, 7.0, 9.0, 11.0, 13.0, 11.0];
        // idx2: 0; idx3: 0; idx4: gain 2 -> avgG 1, avgL .5 -> 66.7 (buy, prev 0 <= 30)
        // idx5,6: 100 (>=70); idx7: loss 2 -> avgG 1.x ... falls below 70 -> sell
        assert_eq!(
            run(&[("period", "2")], &closes),
            vec![(4, Side::Buy), (7, Side::Sell)]
        );
    }

    #[test]
    fn bad_params() {
        for (k, v) in [
            ("period", "0"),
            ("oversold", "-1"),
            ("overbought", "20"),
            ("overbought", "30"),
            ("perod", "3"),
        ] {
            let err = RsiReversal::new(&Params::new(vec![(k.into(), v.into())])).unwrap_err();
            assert_eq!(err.key, k, "{err}");
        }
        assert!(RsiReversal::new(&Params::default()).is_ok());
    }
}
