//! Opening-range breakout.
//!
//! The opening range is made of the bars starting at `session_open` (09:15)
//! up to, not including, `session_open + range_minutes` (09:30). From then on,
//! the first bar whose close is strictly above the range high is a buy, the
//! first whose close is strictly below the range low a sell, with the
//! stop-loss at the other side of the range. One breakout a day by default;
//! with `max_breakouts` > 1 a later break must be in the other direction.
//!
//! Params: `range_minutes` (15), `session_open` ("09:15"), `max_breakouts`
//! (1), `volume_multiplier` (0 = off; else the breakout bar's volume must be at
//! least this multiple of the range's average bar volume), `target_multiple`
//! (0 = no target; else target = entry ± multiple × range height).

use strategy_sdk::state::{StateReader, StateWriter};
use strategy_sdk::time::{SessionClock, format_hhmm, parse_hhmm};
use strategy_sdk::{Candle, ParamError, Params, PerInstrument, Side, Signals, Strategy};

#[derive(Debug, Clone, Default)]
struct Day {
    day: i64,
    high: f64,
    low: f64,
    range_bars: u64,
    range_volume: u64,
    breakouts: u32,
    last_side: Option<Side>,
}

/// The strategy.
#[derive(Debug, Clone)]
pub struct OpeningRangeBreakout {
    open_minute: u32,
    range_minutes: u32,
    max_breakouts: u32,
    volume_multiplier: f64,
    target_multiple: f64,
    days: PerInstrument<Day>,
    clock: SessionClock,
}

const STATE_VERSION: u8 = 1;

fn volume_confirms(multiplier: f64, day: &Day, volume: u64) -> bool {
    if multiplier <= 0.0 {
        return true;
    }
    let average = day.range_volume as f64 / day.range_bars as f64;
    average > 0.0 && volume as f64 >= multiplier * average
}

impl Strategy for OpeningRangeBreakout {
    fn new(params: &Params) -> Result<Self, ParamError> {
        params.reject_unknown(&[
            "range_minutes",
            "session_open",
            "max_breakouts",
            "volume_multiplier",
            "target_multiple",
        ])?;
        let range_minutes: u32 = params.get("range_minutes", 15)?;
        if range_minutes == 0 || range_minutes > 375 {
            return Err(ParamError::new(
                "range_minutes",
                format!("must be within 1..=375, got {range_minutes}"),
            ));
        }
        let open = params.get("session_open", String::from("09:15"))?;
        let open_minute = parse_hhmm(&open).ok_or_else(|| {
            ParamError::new("session_open", format!("expected HH:MM, got {open:?}"))
        })?;
        let max_breakouts: u32 = params.get("max_breakouts", 1)?;
        let volume_multiplier: f64 = params.get("volume_multiplier", 0.0)?;
        let target_multiple: f64 = params.get("target_multiple", 0.0)?;
        // Negated on purpose: NaN is refused too.
        #[allow(clippy::neg_cmp_op_on_partial_ord)]
        if !(volume_multiplier >= 0.0) {
            return Err(ParamError::new(
                "volume_multiplier",
                "must be 0 (off) or positive",
            ));
        }
        #[allow(clippy::neg_cmp_op_on_partial_ord)]
        if !(target_multiple >= 0.0) {
            return Err(ParamError::new(
                "target_multiple",
                "must be 0 (off) or positive",
            ));
        }
        Ok(Self {
            open_minute,
            range_minutes,
            max_breakouts,
            volume_multiplier,
            target_multiple,
            days: PerInstrument::new(),
            clock: SessionClock::new(),
        })
    }

    fn on_candle(&mut self, candle: &Candle<'_>, signals: &mut Signals) {
        let (today, minute) = self.clock.split(candle.ts);
        let (open_minute, range_end) = (self.open_minute, self.open_minute + self.range_minutes);
        let (max_breakouts, volume_multiplier, target_multiple) = (
            self.max_breakouts,
            self.volume_multiplier,
            self.target_multiple,
        );
        let day = self
            .days
            .get_or_insert_with(candle.instrument, Day::default);
        if day.day != today {
            *day = Day {
                day: today,
                high: f64::NEG_INFINITY,
                low: f64::INFINITY,
                ..Day::default()
            };
        }
        if (open_minute..range_end).contains(&minute) {
            day.high = day.high.max(candle.high);
            day.low = day.low.min(candle.low);
            day.range_bars += 1;
            day.range_volume += candle.volume;
            return;
        }
        if minute < range_end || day.range_bars == 0 || day.breakouts >= max_breakouts {
            return;
        }
        let side = if candle.close > day.high {
            Side::Buy
        } else if candle.close < day.low {
            Side::Sell
        } else {
            return;
        };
        if day.last_side == Some(side) || !volume_confirms(volume_multiplier, day, candle.volume) {
            return;
        }
        let height = day.high - day.low;
        let range = format!(
            "{}-{} range {:.2}-{:.2}",
            format_hhmm(open_minute),
            format_hhmm(range_end),
            day.low,
            day.high
        );
        let (built, stop, target) = match side {
            Side::Buy => (
                signals.buy(
                    candle.instrument,
                    format!("close {:.2} broke above the {range}", candle.close),
                ),
                day.low,
                candle.close + target_multiple * height,
            ),
            _ => (
                signals.sell(
                    candle.instrument,
                    format!("close {:.2} broke below the {range}", candle.close),
                ),
                day.high,
                candle.close - target_multiple * height,
            ),
        };
        let built = built.stop_loss(stop);
        if target_multiple > 0.0 {
            built.target(target);
        }
        day.breakouts += 1;
        day.last_side = Some(side);
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut w = StateWriter::new();
        w.u8(STATE_VERSION).u64(self.days.iter().count() as u64);
        for (instrument, d) in self.days.iter() {
            let side = match d.last_side {
                None => 0,
                Some(Side::Buy) => 1,
                Some(_) => 2,
            };
            w.str(instrument)
                .i64(d.day)
                .f64(d.high)
                .f64(d.low)
                .u64(d.range_bars)
                .u64(d.range_volume)
                .u64(u64::from(d.breakouts))
                .u8(side);
        }
        w.finish()
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        let mut r = StateReader::new(state);
        r.version(STATE_VERSION)?;
        let mut restored = PerInstrument::new();
        for _ in 0..r.u64()? {
            let instrument = r.str()?;
            let day = Day {
                day: r.i64()?,
                high: r.f64()?,
                low: r.f64()?,
                range_bars: r.u64()?,
                range_volume: r.u64()?,
                breakouts: u32::try_from(r.u64()?)
                    .map_err(|_| "snapshot: breakout count overflows")?,
                last_side: match r.u8()? {
                    0 => None,
                    1 => Some(Side::Buy),
                    2 => Some(Side::Sell),
                    other => return Err(format!("snapshot: bad side {other}")),
                },
            };
            restored.insert(&instrument, day);
        }
        r.finish()?;
        self.days = restored;
        Ok(())
    }
}

strategy_sdk::register_strategy!(OpeningRangeBreakout);

#[cfg(test)]
mod tests {
    use super::*;
    use strategy_sdk::Bar;

    /// 2024-01-01T09:15+05:30
    const DAY1_0915: i64 = 1_704_080_700_000;

    fn bar(day: i64, minute_after_0915: i64, high: f64, low: f64, close: f64, volume: u64) -> Bar {
        Bar {
            ts: DAY1_0915 + day * 86_400_000 + minute_after_0915 * 60_000,
            open: close,
            high,
            low,
            close,
            volume,
            oi: 0,
        }
    }

    fn run(p: &[(&str, &str)], bars: &[Bar]) -> Vec<(usize, Side, Option<f64>, Option<f64>)> {
        let params = Params::new(
            p.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        let mut s = OpeningRangeBreakout::new(&params).unwrap();
        let mut out = Vec::new();
        for (i, b) in bars.iter().enumerate() {
            let mut sig = Signals::new();
            s.on_candle(
                &Candle {
                    instrument: "NIFTY",
                    timeframe_secs: 60,
                    bar: *b,
                },
                &mut sig,
            );
            out.extend(
                sig.as_slice()
                    .iter()
                    .map(|(_, s)| (i, s.side, s.stop_loss, s.target)),
            );
        }
        out
    }

    fn day_with_range(day: i64) -> Vec<Bar> {
        // 09:15..09:29: range 100-110
        (0..15)
            .map(|m| {
                bar(
                    day,
                    m,
                    if m == 3 { 110.0 } else { 105.0 },
                    if m == 7 { 100.0 } else { 104.0 },
                    104.5,
                    10,
                )
            })
            .collect()
    }

    #[test]
    fn breaks_out_once_a_day_with_stop_at_the_other_side() {
        let mut bars = day_with_range(0);
        bars.push(bar(0, 15, 110.0, 104.0, 110.0, 10)); // 09:30: close == high: not strictly above
        bars.push(bar(0, 16, 111.0, 104.0, 110.5, 10)); // 09:31: buy
        bars.push(bar(0, 17, 99.0, 98.0, 98.5, 10)); // below: but one breakout a day
        bars.extend(day_with_range(1));
        bars.push(bar(1, 15, 101.0, 98.0, 99.0, 10)); // next day 09:30: sell
        let got = run(&[], &bars);
        assert_eq!(
            got,
            vec![
                (16, Side::Buy, Some(100.0), None),
                (33, Side::Sell, Some(110.0), None)
            ]
        );
    }

    #[test]
    fn range_bars_never_trigger_and_reversal_needs_max_breakouts() {
        let mut bars = day_with_range(0);
        bars[14] = bar(0, 14, 130.0, 104.0, 129.0, 10); // 09:29 is inside the range
        bars.push(bar(0, 15, 131.0, 104.0, 130.5, 10)); // 09:30 buy over 130
        bars.push(bar(0, 16, 131.0, 104.0, 131.0, 10)); // still above: same side, no repeat
        bars.push(bar(0, 17, 99.0, 98.0, 98.0, 10)); // reversal
        let one = run(&[], &bars);
        assert_eq!(
            one.iter().map(|s| (s.0, s.1)).collect::<Vec<_>>(),
            vec![(15, Side::Buy)]
        );
        let two = run(&[("max_breakouts", "2"), ("target_multiple", "1")], &bars);
        assert_eq!(
            two,
            vec![
                (15, Side::Buy, Some(100.0), Some(160.5)),
                (17, Side::Sell, Some(130.0), Some(68.0))
            ]
        );
    }

    #[test]
    fn volume_confirmation() {
        let mut bars = day_with_range(0);
        bars.push(bar(0, 15, 112.0, 104.0, 111.0, 15)); // 1.5x average of 10: refused at 2x
        bars.push(bar(0, 16, 112.0, 104.0, 111.0, 20)); // 2x: accepted
        assert_eq!(
            run(&[("volume_multiplier", "2")], &bars)
                .iter()
                .map(|s| s.0)
                .collect::<Vec<_>>(),
            vec![16]
        );
        assert_eq!(
            run(&[], &bars).iter().map(|s| s.0).collect::<Vec<_>>(),
            vec![15]
        );
    }

    #[test]
    fn configurable_session_and_bad_params() {
        // A 09:55 session (NIFTY 2009): nothing trades with the default open, something with 09:55.
        let bars: Vec<Bar> = (40..60)
            .map(|m| {
                bar(
                    0,
                    m,
                    if m == 50 { 200.0 } else { 105.0 },
                    100.0,
                    if m == 58 { 201.0 } else { 104.0 },
                    0,
                )
            })
            .collect();
        assert!(run(&[], &bars).is_empty());
        assert_eq!(
            run(&[("session_open", "09:55")], &bars)
                .iter()
                .map(|s| s.0)
                .collect::<Vec<_>>(),
            vec![18]
        );
        for (k, v) in [
            ("range_minutes", "0"),
            ("session_open", "9.15"),
            ("volume_multiplier", "-1"),
            ("rnage", "1"),
        ] {
            let err =
                OpeningRangeBreakout::new(&Params::new(vec![(k.into(), v.into())])).unwrap_err();
            assert_eq!(err.key, k);
        }
    }
}
