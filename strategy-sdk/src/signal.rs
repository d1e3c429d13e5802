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

/// How a signal's order is priced (contract 1.1). The host rounds each price to
/// the instrument's tick so that an order never pays more than it asks.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum OrderType {
    /// At the market.
    #[default]
    Market,
    /// At this price or better: a buy fills only when the market trades below it.
    Limit(f64),
    /// When the market trades at the trigger, at the market.
    Stop(f64),
    /// When the market trades at `trigger`, a limit at `limit`.
    StopLimit {
        /// Where it triggers.
        trigger: f64,
        /// The limit once triggered.
        limit: f64,
    },
}

/// How long a signal's order works (contract 1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Validity {
    /// Until the session ends.
    #[default]
    Day,
    /// Fills on the first price after the signal, or is cancelled.
    Ioc,
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
    /// How its order is priced.
    pub order: OrderType,
    /// How long its order works.
    pub validity: Validity,
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

    /// Emit a buy signal; chain `.stop_loss()`, `.target()`, `.strength()`, and
    /// `.limit()`, `.stop()`, `.stop_limit()`, `.ioc()` for its order, on the result.
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
        let signal = Signal {
            instrument: instrument.to_owned(),
            side,
            reason,
            stop_loss: None,
            target: None,
            strength: None,
            order: OrderType::Market,
            validity: Validity::Day,
        };
        self.items.push((self.bar_index, signal));
        let last = self.items.len() - 1;
        SignalBuilder {
            signal: &mut self.items[last].1,
        }
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

    /// Its order is a limit at `price` (at that price or better).
    pub fn limit(self, price: f64) -> Self {
        self.signal.order = OrderType::Limit(price);
        self
    }

    /// Its order is a stop: at the market once the market trades at `trigger`.
    pub fn stop(self, trigger: f64) -> Self {
        self.signal.order = OrderType::Stop(trigger);
        self
    }

    /// Its order is a stop-limit: a limit at `limit` once the market trades at `trigger`.
    pub fn stop_limit(self, trigger: f64, limit: f64) -> Self {
        self.signal.order = OrderType::StopLimit { trigger, limit };
        self
    }

    /// Its order fills on the first price after the signal or is cancelled.
    pub fn ioc(self) -> Self {
        self.signal.validity = Validity::Ioc;
        self
    }
}
