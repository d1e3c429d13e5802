//! Exits the host manages for every position: a stop-loss, a target, and a
//! trailing stop that follows the best price since entry, only ever
//! tightens, and fires once (after which the exit is `triggered` and blocks
//! a second one).

use rust_decimal::Decimal;

use crate::config::ExitRules;

/// How a fired exit fills: the one switch between a backtest and a live
/// account, in the one exit rule both use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExitFill {
    /// At the level the bar touched, or at the open when the bar gapped
    /// through it (a backtest: the level is known inside the bar).
    AtLevel,
    /// A market order on the next price (paper and live: the host learns of
    /// the touch from a price that has passed, and can only send an order).
    NextPrice,
}

/// The managed exit of one position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedExit {
    /// Long (true) or short.
    pub long: bool,
    /// Current stop price: the signal's, tightened by the trail.
    pub stop: Option<Decimal>,
    /// Target price.
    pub target: Option<Decimal>,
    /// Trailing distance in percent; `None` for no trail.
    pub trail_pct: Option<Decimal>,
    /// Best price since entry (highest for a long, lowest for a short).
    pub best: Decimal,
    /// Whether the stop was moved by the trail (for the exit's reason).
    pub trailed: bool,
    /// Fired already.
    pub triggered: bool,
    /// The instrument's tick: the levels it sets go onto it.
    pub tick: Decimal,
}

impl ManagedExit {
    /// The exit of a position entered at `entry`, its levels on the 0.05 grid.
    #[must_use]
    pub fn new(
        long: bool,
        entry: Decimal,
        stop: Option<Decimal>,
        target: Option<Decimal>,
        trail_pct: Option<Decimal>,
    ) -> Self {
        Self::on_grid(
            long,
            entry,
            stop,
            target,
            trail_pct,
            crate::domain::money::TICK,
        )
    }

    /// [`Self::new`] for an instrument whose levels go onto `tick`.
    fn on_grid(
        long: bool,
        entry: Decimal,
        stop: Option<Decimal>,
        target: Option<Decimal>,
        trail_pct: Option<Decimal>,
        tick: Decimal,
    ) -> Self {
        let mut exit = Self {
            long,
            stop,
            target,
            trail_pct: trail_pct.filter(|p| *p > Decimal::ZERO),
            best: entry,
            trailed: false,
            triggered: false,
            tick,
        };
        exit.trail(entry);
        exit.trailed = false;
        exit
    }

    /// The exit of a position just opened at `entry`: the signal's stop and
    /// target, or else the account's percentages away from the entry (on the
    /// instrument's `tick`, as the exchange prices them), and its trailing stop.
    #[must_use]
    pub fn arm(
        long: bool,
        entry: Decimal,
        stop: Option<Decimal>,
        target: Option<Decimal>,
        rules: &ExitRules,
        tick: Decimal,
    ) -> Self {
        let away = |pct: Decimal, up: bool| {
            (!pct.is_zero()).then(|| {
                crate::domain::money::to_tick_of(
                    entry * (Decimal::ONE_HUNDRED + if up { pct } else { -pct })
                        / Decimal::ONE_HUNDRED,
                    tick,
                )
            })
        };
        let stop = stop.or_else(|| away(rules.stop_loss_pct, !long));
        let target = target.or_else(|| away(rules.target_pct, long));
        Self::on_grid(long, entry, stop, target, Some(rules.trailing_pct), tick)
    }

    /// The price an exit that fired for `reason` on a bar opening at `open`
    /// fills at, before slippage: `None` with [`ExitFill::NextPrice`] (the
    /// order waits for the next price). Call it right after [`Self::on_price`]
    /// fired: the levels are still those in force before the bar.
    #[must_use]
    pub fn fill_price(&self, reason: &str, open: Decimal, how: ExitFill) -> Option<Decimal> {
        if how == ExitFill::NextPrice {
            return None;
        }
        let (level, adverse) = if reason == "target" {
            (self.target?, false)
        } else {
            (self.stop?, true)
        };
        // A long's stop below, its target above; a gap through either fills at the open.
        Some(if self.long == adverse {
            open.min(level)
        } else {
            open.max(level)
        })
    }

    fn trail(&mut self, price: Decimal) {
        let Some(pct) = self.trail_pct else { return };
        let better = if self.long {
            price > self.best
        } else {
            price < self.best
        };
        if better {
            self.best = price;
        }
        let distance = self.best * pct / Decimal::ONE_HUNDRED;
        let candidate = if self.long {
            self.best - distance
        } else {
            self.best + distance
        };
        // Only ever tighten: up for a long, down for a short.
        let tighter = match self.stop {
            None => true,
            Some(s) => (self.long && candidate > s) || (!self.long && candidate < s),
        };
        if tighter {
            self.stop = Some(crate::domain::money::to_tick_of(candidate, self.tick));
            self.trailed = true;
        }
    }

    /// A new bar (or tick: high = low = last). The stop and target in force
    /// before the bar are checked first (the stop before the target, the
    /// conservative order when both are touched), then the trail follows
    /// `trail_price` (the best bid intraday, the last price for delivery).
    /// Returns the exit's reason the one time it fires.
    pub fn on_price(
        &mut self,
        high: Decimal,
        low: Decimal,
        trail_price: Decimal,
    ) -> Option<&'static str> {
        if self.triggered {
            return None;
        }
        let stop_hit = self
            .stop
            .is_some_and(|s| if self.long { low <= s } else { high >= s });
        let target_hit = self
            .target
            .is_some_and(|t| if self.long { high >= t } else { low <= t });
        if stop_hit || target_hit {
            self.triggered = true;
            return Some(match (stop_hit, self.trailed) {
                (true, true) => "trailing-stop",
                (true, false) => "stop-loss",
                _ => "target",
            });
        }
        self.trail(trail_price);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    #[test]
    fn stop_target_and_trail() {
        let mut e = ManagedExit::new(true, dec!(100), Some(dec!(95)), Some(dec!(110)), None);
        assert_eq!(e.on_price(dec!(104), dec!(96), dec!(103)), None);
        assert_eq!(e.on_price(dec!(103), dec!(94), dec!(95)), Some("stop-loss"));
        assert_eq!(e.on_price(dec!(90), dec!(80), dec!(85)), None, "fires once");

        let mut t = ManagedExit::new(true, dec!(100), None, None, Some(dec!(2)));
        assert_eq!(t.stop, Some(dec!(98)));
        assert_eq!(t.on_price(dec!(110), dec!(105), dec!(110)), None);
        assert_eq!(t.stop, Some(dec!(107.80)));
        assert_eq!(
            t.on_price(dec!(109), dec!(107.9), dec!(108)),
            None,
            "the stop never loosens"
        );
        assert_eq!(t.stop, Some(dec!(107.80)));
        assert_eq!(
            t.on_price(dec!(108), dec!(107), dec!(107)),
            Some("trailing-stop")
        );

        let mut s = ManagedExit::new(
            false,
            dec!(100),
            Some(dec!(104)),
            Some(dec!(90)),
            Some(dec!(1)),
        );
        assert_eq!(
            s.stop,
            Some(dec!(101)),
            "a 1% trail is tighter than the 104 stop"
        );
        assert_eq!(s.on_price(dec!(100.5), dec!(89), dec!(95)), Some("target"));
    }

    #[test]
    fn armed_from_the_account_rules_and_filled_at_the_level_or_the_gap() {
        let rules = ExitRules {
            stop_loss_pct: dec!(1),
            target_pct: dec!(2),
            trailing_pct: dec!(0),
            ..ExitRules::default()
        };
        let e = ManagedExit::arm(true, dec!(100.03), None, None, &rules, dec!(0.05));
        assert_eq!(
            (e.stop, e.target),
            (Some(dec!(99.05)), Some(dec!(102.05))),
            "on the tick"
        );
        // A ₹1,000+ stock ticks in 0.10: its levels go onto that grid, not 0.05's.
        let e = ManagedExit::arm(true, dec!(1503.37), None, None, &rules, dec!(0.1));
        assert_eq!((e.stop, e.target), (Some(dec!(1488.3)), Some(dec!(1533.4))));
        let e = ManagedExit::arm(false, dec!(100), Some(dec!(103)), None, &rules, dec!(0.05));
        assert_eq!(
            (e.stop, e.target),
            (Some(dec!(103)), Some(dec!(98))),
            "the signal's stop wins"
        );

        let mut long = ManagedExit::new(true, dec!(100), Some(dec!(95)), Some(dec!(110)), None);
        let reason = long.on_price(dec!(101), dec!(94), dec!(96)).unwrap();
        assert_eq!(
            long.fill_price(reason, dec!(99), ExitFill::AtLevel),
            Some(dec!(95))
        );
        assert_eq!(
            long.fill_price(reason, dec!(93), ExitFill::AtLevel),
            Some(dec!(93)),
            "gapped below the stop"
        );
        assert_eq!(long.fill_price(reason, dec!(99), ExitFill::NextPrice), None);
        assert_eq!(
            long.fill_price("target", dec!(111), ExitFill::AtLevel),
            Some(dec!(111)),
            "gapped above the target"
        );
        let short = ManagedExit::new(false, dec!(100), Some(dec!(105)), Some(dec!(90)), None);
        assert_eq!(
            short.fill_price("stop-loss", dec!(104), ExitFill::AtLevel),
            Some(dec!(105))
        );
        assert_eq!(
            short.fill_price("stop-loss", dec!(107), ExitFill::AtLevel),
            Some(dec!(107))
        );
        assert_eq!(
            short.fill_price("target", dec!(92), ExitFill::AtLevel),
            Some(dec!(90))
        );
        assert_eq!(
            short.fill_price("target", dec!(88), ExitFill::AtLevel),
            Some(dec!(88))
        );
    }

    proptest! {
        /// For any price path, a long's trailing stop never moves down, and
        /// exactly one exit is sent once the path crosses it.
        #[test]
        fn a_long_trailing_stop_only_rises_and_fires_once(
            path in proptest::collection::vec(9_000u32..11_000, 1..200),
            trail in 1u32..50,
        ) {
            let entry = Decimal::new(10_000, 1);
            let mut exit = ManagedExit::new(true, entry, None, None, Some(Decimal::new(i64::from(trail), 1)));
            let mut last_stop = exit.stop;
            let mut fired = 0;
            let mut crossed = false;
            for p in path {
                let price = Decimal::new(i64::from(p), 1);
                let stop_before = exit.stop;
                if stop_before.is_some_and(|s| price <= s) {
                    crossed = true;
                }
                if exit.on_price(price, price, price).is_some() {
                    fired += 1;
                }
                prop_assert!(exit.stop >= last_stop, "the stop moved down: {:?} -> {:?}", last_stop, exit.stop);
                last_stop = exit.stop;
            }
            prop_assert_eq!(fired, usize::from(crossed));
        }
    }
}
