//! The strategy engine: feeds market events to a strategy and turns what it
//! returns into [`Signal`]s with exact prices.
//!
//! A strategy is anything that implements [`StrategyRunner`]: a sandboxed
//! [`PluginInstance`], or a [`Native`] build of the same code (for
//! benchmarks and for checking that both give the same signals).

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use strategy_sdk::{Driver, Params, Strategy};

pub mod pipeline;
pub mod service;
pub mod supervisor;
pub mod watch;

use crate::domain::order::{OrderKind, Validity};
use crate::market;
use crate::sandbox::{PluginInstance, SandboxError, wit};

pub use strategy_sdk::Side;

/// A signal as the host handles it: prices are exact decimals.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    /// Start of the bar (or time of the event) that produced it.
    pub ts_ms: i64,
    /// The instrument to trade.
    pub instrument: String,
    /// Buy, sell or exit.
    pub side: Side,
    /// The strategy's reason.
    pub reason: String,
    /// Stop-loss price.
    pub stop_loss: Option<Decimal>,
    /// Target price.
    pub target: Option<Decimal>,
    /// Conviction in [0, 1].
    pub strength: Option<f64>,
    /// How its order is priced (exact, not yet on the tick: the order side rounds it).
    pub order: OrderKind,
    /// How long its order works.
    pub validity: Validity,
}

/// Decimal places kept from a strategy's `f64` price: enough for any NSE
/// tick (0.05, 0.0025 for currency) without inventing precision.
pub const SIGNAL_PRICE_DP: u32 = 4;

impl Signal {
    /// Convert a strategy's signal; a non-finite or negative stop or target refuses it.
    ///
    /// # Errors
    /// A message naming the bad field.
    pub fn from_strategy(ts_ms: i64, s: strategy_sdk::Signal) -> Result<Self, String> {
        let price = |field: &str, v: Option<f64>| -> Result<Option<Decimal>, String> {
            v.map(|x| {
                Decimal::from_f64_retain(x)
                    .filter(|d| !d.is_sign_negative())
                    .map(|d| d.round_dp(SIGNAL_PRICE_DP).normalize())
                    .ok_or_else(|| {
                        format!(
                            "signal for {}: {field} {x} is not a finite, non-negative price",
                            s.instrument
                        )
                    })
            })
            .transpose()
        };
        let stop_loss = price("stop-loss", s.stop_loss)?;
        let target = price("target", s.target)?;
        if s.instrument.trim().is_empty() {
            return Err("signal with an empty instrument".into());
        }
        let strength = s
            .strength
            .filter(|x| x.is_finite())
            .map(|x| x.clamp(0.0, 1.0));
        // An order's price must be a price: finite and above zero.
        let order_price = |field: &str, x: f64| -> Result<Decimal, String> {
            price(field, Some(x))?
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    format!(
                        "signal for {}: {field} {x} is not a price above zero",
                        s.instrument
                    )
                })
        };
        let order = match s.order {
            strategy_sdk::OrderType::Market => OrderKind::Market,
            strategy_sdk::OrderType::Limit(p) => OrderKind::Limit {
                price: order_price("limit", p)?,
            },
            strategy_sdk::OrderType::Stop(t) => OrderKind::StopMarket {
                trigger: order_price("stop trigger", t)?,
            },
            strategy_sdk::OrderType::StopLimit { trigger, limit } => OrderKind::StopLimit {
                trigger: order_price("stop trigger", trigger)?,
                price: order_price("stop limit", limit)?,
            },
        };
        let validity = match s.validity {
            strategy_sdk::Validity::Day => Validity::Day,
            strategy_sdk::Validity::Ioc => Validity::Ioc,
        };
        Ok(Self {
            ts_ms,
            instrument: s.instrument,
            side: s.side,
            reason: s.reason,
            stop_loss,
            target,
            strength,
            order,
            validity,
        })
    }
}

/// Something that turns market events into signals.
pub trait StrategyRunner {
    /// The strategy's name.
    fn name(&self) -> &str;
    /// The strategy's version.
    fn version(&self) -> &str;
    /// One bar of `instrument`.
    ///
    /// # Errors
    /// When a sandboxed strategy fails (see [`SandboxError`]).
    fn on_candle(
        &mut self,
        instrument: &str,
        timeframe_secs: u32,
        bar: &strategy_sdk::Bar,
    ) -> Result<Vec<strategy_sdk::Signal>, SandboxError>;
    /// Many bars of `instrument` in one call; each signal comes with the index of its bar.
    ///
    /// # Errors
    /// As [`StrategyRunner::on_candle`].
    fn on_candles(
        &mut self,
        instrument: &str,
        timeframe_secs: u32,
        bars: &[strategy_sdk::Bar],
    ) -> Result<Vec<(u32, strategy_sdk::Signal)>, SandboxError>;
    /// One option-chain snapshot.
    ///
    /// # Errors
    /// As [`StrategyRunner::on_candle`].
    fn on_option_chain(
        &mut self,
        chain: &strategy_sdk::OptionChain,
    ) -> Result<Vec<strategy_sdk::Signal>, SandboxError>;
    /// The strategy's state.
    ///
    /// # Errors
    /// As [`StrategyRunner::on_candle`].
    fn snapshot(&mut self) -> Result<Vec<u8>, SandboxError>;
    /// Continue from a snapshot; the inner error is the strategy refusing it.
    ///
    /// # Errors
    /// As [`StrategyRunner::on_candle`].
    fn restore(&mut self, state: &[u8]) -> Result<Result<(), String>, SandboxError>;
}

/// A host bar as a strategy sees it.
#[must_use]
pub fn sdk_bar(b: &market::Bar) -> strategy_sdk::Bar {
    strategy_sdk::Bar {
        ts: b.ts_ms,
        open: b.open.to_f64().unwrap_or(f64::NAN),
        high: b.high.to_f64().unwrap_or(f64::NAN),
        low: b.low.to_f64().unwrap_or(f64::NAN),
        close: b.close.to_f64().unwrap_or(f64::NAN),
        volume: b.volume,
        oi: b.oi,
    }
}

/// A host option chain as a strategy sees it.
#[must_use]
pub fn sdk_chain(c: &market::OptionChain) -> strategy_sdk::OptionChain {
    let f = |d: Decimal| d.to_f64().unwrap_or(f64::NAN);
    let leg = |l: &market::OptionLeg| strategy_sdk::OptionLeg {
        last: f(l.last),
        oi: l.oi,
        volume: l.volume,
        greeks: l.greeks.map(|g| strategy_sdk::Greeks {
            delta: f(g.delta),
            gamma: f(g.gamma),
            theta: f(g.theta),
            vega: f(g.vega),
            iv: f(g.iv),
        }),
    };
    strategy_sdk::OptionChain {
        underlying: c.underlying.clone(),
        ts: c.ts_ms,
        spot: f(c.spot),
        expiries: c
            .expiries
            .iter()
            .map(|e| strategy_sdk::ExpiryChain {
                expiry: e.expiry.clone(),
                strikes: e
                    .strikes
                    .iter()
                    .map(|r| strategy_sdk::StrikeRow {
                        strike: f(r.strike),
                        ce: r.ce.as_ref().map(leg),
                        pe: r.pe.as_ref().map(leg),
                    })
                    .collect(),
            })
            .collect(),
    }
}

fn from_wit(s: wit::Signal) -> strategy_sdk::Signal {
    let side = match s.side {
        wit::Side::Buy => Side::Buy,
        wit::Side::Sell => Side::Sell,
        wit::Side::Exit => Side::Exit,
    };
    let order = match s.order {
        wit::OrderType::Market => strategy_sdk::OrderType::Market,
        wit::OrderType::Limit(p) => strategy_sdk::OrderType::Limit(p),
        wit::OrderType::Stop(t) => strategy_sdk::OrderType::Stop(t),
        wit::OrderType::StopLimit(sl) => strategy_sdk::OrderType::StopLimit {
            trigger: sl.trigger,
            limit: sl.limit,
        },
    };
    let validity = match s.validity {
        wit::Validity::Day => strategy_sdk::Validity::Day,
        wit::Validity::Ioc => strategy_sdk::Validity::Ioc,
    };
    strategy_sdk::Signal {
        instrument: s.instrument,
        side,
        reason: s.reason,
        stop_loss: s.stop_loss,
        target: s.target,
        strength: s.strength,
        order,
        validity,
    }
}

fn wit_chain(c: &strategy_sdk::OptionChain) -> wit::OptionChain {
    let leg = |l: &strategy_sdk::OptionLeg| wit::OptionLeg {
        last: l.last,
        oi: l.oi,
        volume: l.volume,
        greeks: l.greeks.map(|g| wit::Greeks {
            delta: g.delta,
            gamma: g.gamma,
            theta: g.theta,
            vega: g.vega,
            iv: g.iv,
        }),
    };
    wit::OptionChain {
        underlying: c.underlying.clone(),
        ts: c.ts,
        spot: c.spot,
        expiries: c
            .expiries
            .iter()
            .map(|e| wit::ExpiryChain {
                expiry: e.expiry.clone(),
                strikes: e
                    .strikes
                    .iter()
                    .map(|r| wit::StrikeRow {
                        strike: r.strike,
                        ce: r.ce.as_ref().map(leg),
                        pe: r.pe.as_ref().map(leg),
                    })
                    .collect(),
            })
            .collect(),
    }
}

impl StrategyRunner for PluginInstance {
    fn name(&self) -> &str {
        PluginInstance::name(self)
    }

    fn version(&self) -> &str {
        PluginInstance::version(self)
    }

    fn on_candle(
        &mut self,
        instrument: &str,
        timeframe_secs: u32,
        bar: &strategy_sdk::Bar,
    ) -> Result<Vec<strategy_sdk::Signal>, SandboxError> {
        let candle = wit::Candle {
            instrument: instrument.to_owned(),
            timeframe_secs,
            bar: crate::sandbox::plugin_bar(bar),
        };
        let out = self.call("on-candle", 1, |b, s| b.on_candle(s, &candle))?;
        self.check_flood("on-candle", out.len(), 1)?;
        Ok(out.into_iter().map(from_wit).collect())
    }

    fn on_candles(
        &mut self,
        instrument: &str,
        timeframe_secs: u32,
        bars: &[strategy_sdk::Bar],
    ) -> Result<Vec<(u32, strategy_sdk::Signal)>, SandboxError> {
        // Seven tight passes beat one pass with seven pushes: `collect` on an
        // exact-size iterator skips the capacity checks (measured by the bench).
        let batch = wit::CandleBatch {
            instrument: instrument.to_owned(),
            timeframe_secs,
            ts: bars.iter().map(|b| b.ts).collect(),
            open: bars.iter().map(|b| b.open).collect(),
            high: bars.iter().map(|b| b.high).collect(),
            low: bars.iter().map(|b| b.low).collect(),
            close: bars.iter().map(|b| b.close).collect(),
            volume: bars.iter().map(|b| b.volume).collect(),
            oi: bars.iter().map(|b| b.oi).collect(),
        };
        let out = self.call("on-candles", bars.len(), |b, s| b.on_candles(s, &batch))?;
        self.check_flood("on-candles", out.len(), bars.len())?;
        let max_index = bars.len();
        let mut signals = Vec::with_capacity(out.len());
        for bs in out {
            if bs.bar_index as usize >= max_index {
                return Err(SandboxError::Trapped {
                    plugin: self.name().to_owned(),
                    call: "on-candles",
                    reason: format!(
                        "returned a signal for bar {} of a batch of {max_index}",
                        bs.bar_index
                    ),
                });
            }
            signals.push((bs.bar_index, from_wit(bs.signal)));
        }
        Ok(signals)
    }

    fn on_option_chain(
        &mut self,
        chain: &strategy_sdk::OptionChain,
    ) -> Result<Vec<strategy_sdk::Signal>, SandboxError> {
        let chain = wit_chain(chain);
        let out = self.call("on-option-chain", 1, |b, s| b.on_option_chain(s, &chain))?;
        self.check_flood("on-option-chain", out.len(), 1)?;
        Ok(out.into_iter().map(from_wit).collect())
    }

    fn snapshot(&mut self) -> Result<Vec<u8>, SandboxError> {
        self.call("snapshot", 1, |b, s| b.snapshot(s))
    }

    fn restore(&mut self, state: &[u8]) -> Result<Result<(), String>, SandboxError> {
        self.call("restore", 1, |b, s| b.restore(s, state))
    }
}

/// A strategy compiled into the host: the baseline WASM is measured against,
/// and the reference for "same strategy, same signals".
pub struct Native<S> {
    driver: Driver<S>,
}

impl<S: Strategy> Native<S> {
    /// Build the strategy `name` at `version` with `params`.
    ///
    /// # Errors
    /// The strategy's refusal of its parameters.
    pub fn new(
        name: &'static str,
        version: &'static str,
        params: &[(String, String)],
    ) -> Result<Self, String> {
        let mut driver = Driver::new(name, version);
        driver.init(Params::new(params.to_vec()))?;
        Ok(Self { driver })
    }
}

impl<S: Strategy> StrategyRunner for Native<S> {
    fn name(&self) -> &str {
        self.driver.name()
    }

    fn version(&self) -> &str {
        self.driver.version()
    }

    fn on_candle(
        &mut self,
        instrument: &str,
        timeframe_secs: u32,
        bar: &strategy_sdk::Bar,
    ) -> Result<Vec<strategy_sdk::Signal>, SandboxError> {
        let candle = strategy_sdk::Candle {
            instrument,
            timeframe_secs,
            bar: *bar,
        };
        Ok(self
            .driver
            .on_candle(&candle)
            .drain()
            .map(|(_, s)| s)
            .collect())
    }

    fn on_candles(
        &mut self,
        instrument: &str,
        timeframe_secs: u32,
        bars: &[strategy_sdk::Bar],
    ) -> Result<Vec<(u32, strategy_sdk::Signal)>, SandboxError> {
        Ok(self
            .driver
            .on_candles(instrument, timeframe_secs, strategy_sdk::Bars::rows(bars))
            .drain()
            .collect())
    }

    fn on_option_chain(
        &mut self,
        chain: &strategy_sdk::OptionChain,
    ) -> Result<Vec<strategy_sdk::Signal>, SandboxError> {
        Ok(self
            .driver
            .on_option_chain(chain)
            .drain()
            .map(|(_, s)| s)
            .collect())
    }

    fn snapshot(&mut self) -> Result<Vec<u8>, SandboxError> {
        Ok(self.driver.snapshot())
    }

    fn restore(&mut self, state: &[u8]) -> Result<Result<(), String>, SandboxError> {
        Ok(self.driver.restore(state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sdk_signal(stop: Option<f64>) -> strategy_sdk::Signal {
        strategy_sdk::Signal {
            instrument: "NIFTY".into(),
            side: Side::Buy,
            reason: "r".into(),
            stop_loss: stop,
            target: None,
            strength: Some(2.0),
            order: strategy_sdk::OrderType::Market,
            validity: strategy_sdk::Validity::Day,
        }
    }

    #[test]
    fn an_order_price_must_be_a_price_above_zero() {
        let with = |order| strategy_sdk::Signal {
            order,
            ..sdk_signal(None)
        };
        let s = Signal::from_strategy(
            0,
            with(strategy_sdk::OrderType::StopLimit {
                trigger: 101.0,
                limit: 101.5,
            }),
        )
        .unwrap();
        assert_eq!(
            s.order,
            OrderKind::StopLimit {
                trigger: Decimal::new(101, 0),
                price: Decimal::new(1015, 1)
            }
        );
        for (bad, field) in [
            (strategy_sdk::OrderType::Limit(0.0), "limit"),
            (strategy_sdk::OrderType::Limit(f64::NAN), "limit"),
            (strategy_sdk::OrderType::Stop(-5.0), "stop trigger"),
            (
                strategy_sdk::OrderType::StopLimit {
                    trigger: 100.0,
                    limit: f64::INFINITY,
                },
                "stop limit",
            ),
        ] {
            let err = Signal::from_strategy(0, with(bad)).unwrap_err();
            assert!(err.contains(field) && err.contains("NIFTY"), "{err}");
        }
    }

    #[test]
    fn signal_prices_become_exact_decimals() {
        let s = Signal::from_strategy(0, sdk_signal(Some(21_684.75))).unwrap();
        assert_eq!(s.stop_loss, Some(Decimal::new(2_168_475, 2)));
        assert_eq!(s.strength, Some(1.0), "clamped");
        let s = Signal::from_strategy(0, sdk_signal(Some(0.1 + 0.2))).unwrap();
        assert_eq!(
            s.stop_loss,
            Some(Decimal::new(3, 1)),
            "float noise rounded away"
        );
        for bad in [f64::NAN, f64::INFINITY, -1.0] {
            let err = Signal::from_strategy(0, sdk_signal(Some(bad))).unwrap_err();
            assert!(err.contains("stop-loss"), "{err}");
        }
    }
}
