//! Drives a [`Strategy`] through the contract's calls. The WASM glue and the
//! host's native runner both go through here, so a strategy behaves the same
//! compiled either way.

use crate::{Bars, Candle, OptionChain, Params, Signals, Strategy, Tick, Timer};

/// A strategy and its output buffer, from `init` to the last event.
pub struct Driver<S> {
    name: &'static str,
    version: &'static str,
    strategy: Option<S>,
    signals: Signals,
}

impl<S: Strategy> Driver<S> {
    /// A driver for plugin `name` at `version`, not yet initialised.
    #[must_use]
    pub fn new(name: &'static str, version: &'static str) -> Self {
        Self {
            name,
            version,
            strategy: None,
            signals: Signals::new(),
        }
    }

    /// The plugin's name.
    #[must_use]
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The plugin's version.
    #[must_use]
    pub fn version(&self) -> &'static str {
        self.version
    }

    /// Build the strategy from `params`; an error message names the bad parameter.
    pub fn init(&mut self, params: Params) -> Result<(), String> {
        self.strategy = Some(S::new(&params).map_err(|e| e.to_string())?);
        Ok(())
    }

    fn ready(&mut self) -> (&mut S, &mut Signals) {
        self.signals.drain().for_each(drop);
        match self.strategy.as_mut() {
            Some(s) => (s, &mut self.signals),
            // The host always calls init first; an event before it is a host bug,
            // and trapping (which is what a panic is in WASM) is the honest answer.
            None => panic!("{}: event delivered before init", self.name),
        }
    }

    /// Handle one candle; the returned buffer holds its signals.
    pub fn on_candle(&mut self, candle: &Candle<'_>) -> &mut Signals {
        let (s, out) = self.ready();
        s.on_candle(candle, out);
        out
    }

    /// Handle a batch of bars; each signal carries the index of its bar.
    pub fn on_candles(
        &mut self,
        instrument: &str,
        timeframe_secs: u32,
        bars: Bars<'_>,
    ) -> &mut Signals {
        let (s, out) = self.ready();
        s.on_candles(instrument, timeframe_secs, bars, out);
        out
    }

    /// Handle one tick.
    pub fn on_tick(&mut self, tick: &Tick<'_>) -> &mut Signals {
        let (s, out) = self.ready();
        s.on_tick(tick, out);
        out
    }

    /// Handle one option-chain snapshot.
    pub fn on_option_chain(&mut self, chain: &OptionChain) -> &mut Signals {
        let (s, out) = self.ready();
        s.on_option_chain(chain, out);
        out
    }

    /// Handle a timer.
    pub fn on_timer(&mut self, timer: &Timer<'_>) -> &mut Signals {
        let (s, out) = self.ready();
        s.on_timer(timer, out);
        out
    }

    /// The strategy's snapshot (empty before init).
    #[must_use]
    pub fn snapshot(&self) -> Vec<u8> {
        self.strategy
            .as_ref()
            .map(Strategy::snapshot)
            .unwrap_or_default()
    }

    /// Restore a snapshot into the initialised strategy.
    pub fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        match self.strategy.as_mut() {
            Some(s) => s.restore(state),
            None => Err("restore called before init".into()),
        }
    }
}
