//! Signals: what a strategy returns.

/// Direction of a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// Go long, or close a short.
    Buy,
    /// Go short, or close a long.
    Sell,
    /// Close whatever is open in the instrument.
    Exit,
}

impl Side {
    /// `buy`, `sell` or `exit`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Buy => "buy",
            Self::Sell => "sell",
            Self::Exit => "exit",
        }
    }
}

/// A trading signal. The host decides size, risk and execution.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    /// Trading symbol the signal is about.
    pub instrument: String,
    /// Buy, sell or exit.
    pub side: Side,
    /// Why, in a few words.
    pub reason: String,
    /// Price at which the position should be stopped out.
    pub stop_loss: Option<f64>,
    /// Price at which profit should be taken.
    pub target: Option<f64>,
    /// Conviction in [0, 1].
    pub strength: Option<f64>,
}

/// The signals a strategy emits while handling one event (or one batch).
///
/// Each entry remembers the index of the bar that produced it, so a batch
/// can be mapped back to event times.
#[derive(Debug, Default)]
pub struct Signals {
    items: Vec<(u32, Signal)>,
    bar_index: u32,
}

impl Signals {
    /// An empty buffer.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Emit a buy signal; chain `.stop_loss()`, `.target()`, `.strength()` on the result.
    pub fn buy(&mut self, instrument: &str, reason: impl Into<String>) -> SignalBuilder<'_> {
        self.push(instrument, Side::Buy, reason.into())
    }

    /// Emit a sell signal.
    pub fn sell(&mut self, instrument: &str, reason: impl Into<String>) -> SignalBuilder<'_> {
        self.push(instrument, Side::Sell, reason.into())
    }

    /// Emit an exit signal.
    pub fn exit(&mut self, instrument: &str, reason: impl Into<String>) -> SignalBuilder<'_> {
        self.push(instrument, Side::Exit, reason.into())
    }

    fn push(&mut self, instrument: &str, side: Side, reason: String) -> SignalBuilder<'_> {
        let signal = Signal { instrument: instrument.to_owned(), side, reason, stop_loss: None, target: None, strength: None };
        self.items.push((self.bar_index, signal));
        let last = self.items.len() - 1;
        SignalBuilder { signal: &mut self.items[last].1 }
    }

    /// Number of signals emitted so far.
    #[must_use]
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when nothing was emitted.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The signals with the index of the bar that produced each one.
    #[must_use]
    pub fn as_slice(&self) -> &[(u32, Signal)] {
        &self.items
    }

    /// Take the signals out, leaving the buffer empty.
    pub fn drain(&mut self) -> impl Iterator<Item = (u32, Signal)> + '_ {
        self.bar_index = 0;
        self.items.drain(..)
    }

    /// Set the bar index that the next signals are tagged with (used by batch drivers).
    pub fn set_bar_index(&mut self, index: u32) {
        self.bar_index = index;
    }
}

/// Adds the optional parts of a signal just emitted.
pub struct SignalBuilder<'a> {
    signal: &'a mut Signal,
}

impl SignalBuilder<'_> {
    /// Stop-loss price.
    pub fn stop_loss(self, price: f64) -> Self {
        self.signal.stop_loss = Some(price);
        self
    }

    /// Target price.
    pub fn target(self, price: f64) -> Self {
        self.signal.target = Some(price);
        self
    }

    /// Conviction in [0, 1]; values outside are clamped.
    pub fn strength(self, strength: f64) -> Self {
        self.signal.strength = Some(strength.clamp(0.0, 1.0));
        self
    }
}
