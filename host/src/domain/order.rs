//! How an order is priced and how long it works: the words a strategy's signal, the
//! journal, the paper venue and every broker adapter share.

use rust_decimal::Decimal;

use super::OrderSide;
use super::position::fill_price;

/// How an order is priced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OrderKind {
    /// At the market (with the account's market protection).
    #[default]
    Market,
    /// At `price` or better.
    Limit {
        /// The limit.
        price: Decimal,
    },
    /// A stop: when the market trades at `trigger`, a limit order at `price`.
    StopLimit {
        /// Where it triggers.
        trigger: Decimal,
        /// The limit once triggered.
        price: Decimal,
    },
    /// A stop: when the market trades at `trigger`, a market order.
    StopMarket {
        /// Where it triggers.
        trigger: Decimal,
    },
}

impl OrderKind {
    /// `MARKET`, `LIMIT`, `SL`, `SL-M`: Kite's, Upstox's and OpenAlgo's word alike.
    #[must_use]
    pub fn code(self) -> &'static str {
        match self {
            Self::Market => "MARKET",
            Self::Limit { .. } => "LIMIT",
            Self::StopLimit { .. } => "SL",
            Self::StopMarket { .. } => "SL-M",
        }
    }

    /// The limit price, where there is one.
    #[must_use]
    pub fn price(self) -> Option<Decimal> {
        match self {
            Self::Limit { price } | Self::StopLimit { price, .. } => Some(price),
            _ => None,
        }
    }

    /// The trigger price, for stops.
    #[must_use]
    pub fn trigger(self) -> Option<Decimal> {
        match self {
            Self::StopLimit { trigger, .. } | Self::StopMarket { trigger } => Some(trigger),
            _ => None,
        }
    }

    /// From the journal's columns: `order_type` (`None`: market), `limit_price`, `trigger_price`.
    #[must_use]
    pub fn from_parts(
        code: Option<&str>,
        price: Option<Decimal>,
        trigger: Option<Decimal>,
    ) -> Option<Self> {
        match (code.unwrap_or("MARKET"), price, trigger) {
            ("MARKET", ..) => Some(Self::Market),
            ("LIMIT", Some(price), _) => Some(Self::Limit { price }),
            ("SL", Some(price), Some(trigger)) => Some(Self::StopLimit { trigger, price }),
            ("SL-M", _, Some(trigger)) => Some(Self::StopMarket { trigger }),
            _ => None,
        }
    }
}

/// One order of a basket, a manual ticket or a watcher: what, which way, how many,
/// and how it is priced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leg {
    /// Instrument, e.g. `NIFTY28MAR2420800CE`.
    pub instrument: String,
    /// Buy or sell.
    pub side: OrderSide,
    /// Units.
    pub qty: Decimal,
    /// At the market, a limit or a stop.
    pub kind: OrderKind,
    /// A day order or IOC.
    pub validity: Validity,
    /// The managed exit's stop for the position it opens, as a signal's `stop_loss`.
    pub stop_loss: Option<Decimal>,
    /// The managed exit's target for the position it opens.
    pub target: Option<Decimal>,
}

impl Leg {
    /// A market day order.
    #[must_use]
    pub fn market(instrument: impl Into<String>, side: OrderSide, qty: Decimal) -> Self {
        Self {
            instrument: instrument.into(),
            side,
            qty,
            kind: OrderKind::Market,
            validity: Validity::Day,
            stop_loss: None,
            target: None,
        }
    }
}

/// How long an order lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Validity {
    /// Until the end of the session.
    #[default]
    Day,
    /// Immediate or cancel.
    Ioc,
    /// Good till triggered: a standing stop at the broker that outlives the session (Kite's
    /// GTT), for a delivery position's protective stop. Never a strategy's.
    Gtt,
}

impl Validity {
    /// `DAY` or `IOC`.
    #[must_use]
    pub fn code(self) -> &'static str {
        match self {
            Self::Day => "DAY",
            Self::Ioc => "IOC",
            Self::Gtt => "GTT",
        }
    }
}

impl Validity {
    /// Parse [`Validity::code`] (`None`: DAY).
    #[must_use]
    pub fn parse(code: Option<&str>) -> Option<Self> {
        match code.unwrap_or("DAY") {
            "DAY" => Some(Self::Day),
            "IOC" => Some(Self::Ioc),
            "GTT" => Some(Self::Gtt),
            _ => None,
        }
    }
}

impl OrderKind {
    /// Its prices on the exchange's tick, never worse than asked: a buy's limit
    /// down and a sell's up; a buy stop's trigger up and a sell stop's down (a
    /// stop never triggers before its level). A price too large to round is kept.
    #[must_use]
    pub fn on_tick(self, side: super::OrderSide) -> Self {
        self.on_tick_of(side, super::money::TICK)
    }

    /// [`Self::on_tick`] on `tick`'s grid (an instrument's own tick).
    #[must_use]
    pub fn on_tick_of(self, side: super::OrderSide, tick: Decimal) -> Self {
        use OrderSide::{Buy, Sell};
        let step = |p: Decimal, up: bool| super::money::on_grid(p, tick, up);
        let limit = |p| step(p, side == Sell);
        let trigger = |p| step(p, side == Buy);
        match self {
            Self::Market => Self::Market,
            Self::Limit { price } => Self::Limit {
                price: limit(price),
            },
            Self::StopLimit { trigger: t, price } => Self::StopLimit {
                trigger: trigger(t),
                price: limit(price),
            },
            Self::StopMarket { trigger: t } => Self::StopMarket {
                trigger: trigger(t),
            },
        }
    }

    /// The price the order can at worst trade at, where it names one: its limit,
    /// else its trigger (a stop-market's fill may be worse by the slippage).
    #[must_use]
    pub fn named_price(self) -> Option<Decimal> {
        self.price().or_else(|| self.trigger())
    }
}

/// The refusal of a stop-loss-market order on an option, as Kite words it (NSE stopped
/// taking SL-M orders on index and stock options in September 2021; the exchange itself
/// answers "16052: Function not available"). The paper venue refuses with the same text.
pub const SL_M_ON_OPTIONS: &str = "Stoploss Market orders (SL-M) are blocked for F&O contracts as they have been discontinued by the exchange. Try placing SL-M order with market protection enabled.";

/// What the exchange refuses of `kind` on `instrument` before it can rest, in the
/// brokers' words (the paper venue and the host's own protective stops follow it):
/// `None` when the exchange takes it.
#[must_use]
pub fn exchange_refusal(instrument: &str, kind: OrderKind) -> Option<&'static str> {
    match kind {
        OrderKind::StopMarket { .. } if super::contracts::is_option(instrument) => {
            Some(SL_M_ON_OPTIONS)
        }
        _ => None,
    }
}

/// What a venue knows of a contract when it takes an order: each fact where a broker's
/// instrument master, the exchange's published lists or the configuration gave it (an
/// unknown fact refuses nothing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContractFacts {
    /// Its price step.
    pub tick: Option<Decimal>,
    /// Units per lot (a derivative's).
    pub lot: Option<u64>,
    /// The largest quantity one order may carry.
    pub freeze: Option<u64>,
    /// The day's circuit limits (its price band): the lowest and highest price the exchange
    /// takes an order at today.
    pub circuit: Option<(Decimal, Decimal)>,
}

/// The day's circuit limits of a price band of `pct` percent around `prev_close`, on
/// `tick`'s grid inside the band (NSE's: the previous close ± the band, rounded in).
#[must_use]
pub fn circuit_limits(
    prev_close: Decimal,
    pct: Decimal,
    tick: Decimal,
) -> Option<(Decimal, Decimal)> {
    let width = prev_close
        .checked_mul(pct)?
        .checked_div(Decimal::ONE_HUNDRED)?;
    let lower = super::money::on_grid(prev_close.checked_sub(width)?, tick, true);
    let upper = super::money::on_grid(prev_close.checked_add(width)?, tick, false);
    (lower > Decimal::ZERO && lower <= upper).then_some((lower, upper))
}

/// An order priced beyond the day's circuit limits `(lower, upper)`, as Kite refuses it
/// (its limit price, then its trigger): `None` when within them.
#[must_use]
pub fn circuit_refusal(kind: OrderKind, (lower, upper): (Decimal, Decimal)) -> Option<String> {
    if let Some(price) = kind.price() {
        if price < lower {
            return Some(format!(
                "Your order price is lower than the current lower circuit limit of {lower:.2}. Place an order within the daily range."
            ));
        }
        if price > upper {
            return Some(format!(
                "Your order price is higher than the current upper circuit limit of {upper:.2}. Place an order within the daily range."
            ));
        }
    }
    match kind.trigger() {
        Some(t) if t < lower => Some(TRIGGER_BELOW_LOWER_CIRCUIT.to_owned()),
        Some(t) if t > upper => Some(TRIGGER_ABOVE_UPPER_CIRCUIT.to_owned()),
        _ => None,
    }
}

/// A stop whose trigger lies below the lower circuit, as Zerodha words the refusal.
pub const TRIGGER_BELOW_LOWER_CIRCUIT: &str =
    "Trigger price for stoploss sell orders cannot be below the lower circuit price.";

/// A stop whose trigger lies above the upper circuit, as Zerodha words the refusal.
pub const TRIGGER_ABOVE_UPPER_CIRCUIT: &str =
    "Trigger price for stoploss buy orders cannot be above the upper circuit price.";

/// Whether `qty` is a whole number of lots of `lot_size` (any quantity is, in lots of 1).
#[must_use]
pub fn whole_lots(qty: Decimal, lot_size: u64) -> bool {
    lot_size <= 1
        || qty
            .checked_rem(Decimal::from(lot_size))
            .is_some_and(|r| r.is_zero())
}

/// A quantity that is not a whole number of lots, as the host words it (it never sends one).
#[must_use]
pub fn lot_refusal(instrument: &str, qty: Decimal, lot: u64) -> String {
    format!("quantity {qty} of {instrument} is not a whole number of lots of {lot}")
}

/// NSE's limit price protection for options: a limit within ₹20 of the last price when
/// that is ₹50 or less, else within 40 % of it. Zerodha's words for the exchange's cancel.
pub const OUTSIDE_LPP: &str = "The order was cancelled by the exchange because the price is outside the current allowed limit price protection range";

/// Whether `limit` lies outside NSE's limit price protection range around `last` (options).
#[must_use]
pub fn outside_lpp(limit: Decimal, last: Decimal) -> bool {
    let width = if last <= Decimal::from(50) {
        Decimal::from(20)
    } else {
        last.checked_mul(Decimal::new(4, 1)).unwrap_or(Decimal::MAX)
    };
    let low = last.checked_sub(width).unwrap_or(Decimal::MIN);
    let high = last.checked_add(width).unwrap_or(Decimal::MAX);
    limit < low || limit > high
}

/// What the exchange (or the broker for it) refuses of an order of `qty` `instrument`
/// priced as `kind`, given the contract's `facts` and its `last` price, in the brokers'
/// words, in the order Kite checks them: the order type, the tick of its prices, the day's
/// circuit limits, whole lots, the freeze quantity, then the option's limit price
/// protection. `None`: taken.
#[must_use]
pub fn venue_refusal(
    instrument: &str,
    qty: Decimal,
    kind: OrderKind,
    facts: ContractFacts,
    last: Option<Decimal>,
) -> Option<String> {
    if let Some(refusal) = exchange_refusal(instrument, kind) {
        return Some(refusal.to_owned());
    }
    if let Some(tick) = facts.tick.filter(|t| *t > Decimal::ZERO) {
        for (price, what) in [(kind.price(), "price"), (kind.trigger(), "trigger price")] {
            if price.is_some_and(|p| p.checked_rem(tick).is_none_or(|r| !r.is_zero())) {
                return Some(format!(
                    "Tick size for this script is {tick:.2}. Kindly enter {what} in the multiple of tick size for this script"
                ));
            }
        }
    }
    if let Some(refusal) = facts.circuit.and_then(|band| circuit_refusal(kind, band)) {
        return Some(refusal);
    }
    if let Some(lot) = facts.lot
        && !whole_lots(qty, lot)
    {
        return Some(lot_refusal(instrument, qty, lot));
    }
    if let Some(freeze) = facts.freeze
        && qty > Decimal::from(freeze)
    {
        let lot = Decimal::from(facts.lot.filter(|l| *l > 1).unwrap_or(1));
        let lots = |q: Decimal| q.checked_div(lot).unwrap_or(q).trunc();
        let freeze = Decimal::from(freeze);
        return Some(format!(
            "The order quantity {qty} ({} lots) is higher than the maximum quantity of {freeze} ({} lots) allowed by the exchanges. Please reduce the order quantity or use iceberg orders.",
            lots(qty),
            lots(freeze)
        ));
    }
    if let (OrderKind::Limit { price }, Some(last)) = (kind, last)
        && super::contracts::is_option(instrument)
        && outside_lpp(price, last)
    {
        return Some(OUTSIDE_LPP.to_owned());
    }
    None
}

// The rules a venue fills by (the paper venue and the backtester alike):
// - A **market** order fills at the open of the first bar after its signal (slippage and
//   the 0.05 tick by `fill_price`).
// - A **limit** fills only when the market trades *through* it: a buy when a bar opens
//   below the limit (at that open) or trades below it (at the limit); a sell the other
//   way. A bar that only touches the limit fills nothing. No slippage: a limit never
//   fills worse than itself.
// - A **stop** (SL-M) triggers when a bar trades at its trigger (a buy at or above, a
//   sell at or below) and fills at market: at the open if the bar gapped through it,
//   else at the trigger, with slippage.
// - A **stop-limit** (SL) triggers as a stop, then works as a limit: it fills at the
//   trigger (or the gapped open) when that is within its limit, else it rests as a
//   limit from the next bar on (the path inside the bar after a trigger is unknown).
// - **IOC**: what the first bar after the signal does not fill is cancelled.
//   **DAY**: a limit or stop not filled on its signal's day expires at the next day's first bar.

/// One bar of an instrument, as a venue works an order against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PriceBar {
    /// Start of the bar.
    pub ts: i64,
    /// Open.
    pub open: Decimal,
    /// High.
    pub high: Decimal,
    /// Low.
    pub low: Decimal,
}

/// A working order's terms, as a venue (paper, the backtester) works it.
#[derive(Debug, Clone, Copy)]
pub struct Working {
    /// Buy or sell.
    pub side: OrderSide,
    /// How it is priced.
    pub kind: OrderKind,
    /// How long it works.
    pub validity: Validity,
    /// Slippage of a market fill, basis points.
    pub slippage_bps: Decimal,
    /// Its signal's time: only later bars work it.
    pub not_before: i64,
    /// A stop-limit whose trigger was reached.
    pub triggered: bool,
    /// The instrument's tick: a slipped fill goes onto it.
    pub tick: Decimal,
}

/// What one bar does to a working order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Filled at this price.
    Fill(Decimal),
    /// A stop-limit's trigger reached; it rests as a limit.
    Trigger,
    /// Its validity ran out: cancelled by the venue.
    Expire,
    /// Still working.
    Rest,
}

/// The limit rule: a buy fills when the bar opens or trades below `limit`, a sell above.
fn through(side: OrderSide, limit: Decimal, b: &PriceBar) -> Option<Decimal> {
    match side {
        OrderSide::Buy if b.open < limit => Some(b.open),
        OrderSide::Buy if b.low < limit => Some(limit),
        OrderSide::Sell if b.open > limit => Some(b.open),
        OrderSide::Sell if b.high > limit => Some(limit),
        _ => None,
    }
}

/// The stop rule: the price the market is at when `trigger` is reached in `b`, if it is.
fn reached(side: OrderSide, trigger: Decimal, b: &PriceBar) -> Option<Decimal> {
    match side {
        OrderSide::Buy if b.open >= trigger => Some(b.open),
        OrderSide::Buy if b.high >= trigger => Some(trigger),
        OrderSide::Sell if b.open <= trigger => Some(b.open),
        OrderSide::Sell if b.low <= trigger => Some(trigger),
        _ => None,
    }
}

/// Whether `price` is within `limit` for `side`.
fn within(side: OrderSide, price: Decimal, limit: Decimal) -> bool {
    match side {
        OrderSide::Buy => price <= limit,
        OrderSide::Sell => price >= limit,
    }
}

/// What bar `b` (later than the order's signal) does to an order of terms `t`;
/// `first`: `b` is the first bar after its signal (an IOC's only chance).
pub fn work(t: &Working, b: &PriceBar, first: bool) -> Work {
    use super::time::ist_day;
    if t.kind == OrderKind::Market {
        return Work::Fill(fill_price(t.side, b.open, t.slippage_bps, t.tick));
    }
    if t.validity == Validity::Day && ist_day(b.ts) > ist_day(t.not_before) {
        return Work::Expire;
    }
    let done = match t.kind {
        OrderKind::Market => None,
        OrderKind::Limit { price } => through(t.side, price, b).map(Work::Fill),
        OrderKind::StopMarket { trigger } => reached(t.side, trigger, b)
            .map(|at| Work::Fill(fill_price(t.side, at, t.slippage_bps, t.tick))),
        OrderKind::StopLimit { price, .. } if t.triggered => {
            through(t.side, price, b).map(Work::Fill)
        }
        OrderKind::StopLimit { trigger, price } => reached(t.side, trigger, b).map(|at| {
            let market = fill_price(t.side, at, t.slippage_bps, t.tick);
            if within(t.side, market, price) {
                Work::Fill(market)
            } else if at == b.open {
                // Triggered at the open: the rest of the bar came after the trigger.
                through(t.side, price, b).map_or(Work::Trigger, Work::Fill)
            } else {
                Work::Trigger
            }
        }),
    };
    match done {
        Some(w @ Work::Fill(_)) => w,
        _ if t.validity == Validity::Ioc && first => Work::Expire,
        Some(w) => w,
        None => Work::Rest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::OrderSide::{Buy, Sell};
    use rust_decimal_macros::dec;

    #[test]
    fn prices_go_to_the_tick_never_worse_than_asked() {
        assert_eq!(
            OrderKind::Limit {
                price: dec!(100.07)
            }
            .on_tick(Buy),
            OrderKind::Limit {
                price: dec!(100.05)
            }
        );
        assert_eq!(
            OrderKind::Limit {
                price: dec!(100.07)
            }
            .on_tick(Sell),
            OrderKind::Limit { price: dec!(100.1) }
        );
        assert_eq!(
            OrderKind::StopMarket {
                trigger: dec!(100.01)
            }
            .on_tick(Buy),
            OrderKind::StopMarket {
                trigger: dec!(100.05)
            }
        );
        assert_eq!(
            OrderKind::StopMarket {
                trigger: dec!(100.01)
            }
            .on_tick(Sell),
            OrderKind::StopMarket { trigger: dec!(100) }
        );
        assert_eq!(
            OrderKind::StopLimit {
                trigger: dec!(99.99),
                price: dec!(100.12)
            }
            .on_tick(Buy),
            OrderKind::StopLimit {
                trigger: dec!(100),
                price: dec!(100.1)
            }
        );
        // Too large to round: kept, never a panic.
        assert_eq!(
            OrderKind::Limit {
                price: Decimal::MAX
            }
            .on_tick(Sell),
            OrderKind::Limit {
                price: Decimal::MAX
            }
        );
    }

    const DAY: i64 = 86_400_000;
    const T: i64 = 1_704_772_800_000; // 2024-01-09 09:30 IST

    fn bar(ts: i64, open: Decimal, high: Decimal, low: Decimal) -> PriceBar {
        PriceBar {
            ts,
            open,
            high,
            low,
        }
    }

    fn terms(side: OrderSide, kind: OrderKind) -> Working {
        Working {
            side,
            kind,
            validity: Validity::Day,
            slippage_bps: Decimal::ZERO,
            not_before: T,
            triggered: false,
            tick: crate::domain::money::TICK,
        }
    }

    #[test]
    fn a_limit_fills_only_when_the_market_trades_through_it() {
        let buy = terms(OrderSide::Buy, OrderKind::Limit { price: dec!(100) });
        assert_eq!(
            work(
                &buy,
                &bar(T + 60_000, dec!(101), dec!(102), dec!(100)),
                true
            ),
            Work::Rest,
            "a touch is not a fill"
        );
        assert_eq!(
            work(
                &buy,
                &bar(T + 60_000, dec!(101), dec!(102), dec!(99.95)),
                true
            ),
            Work::Fill(dec!(100)),
            "through: at the limit"
        );
        assert_eq!(
            work(&buy, &bar(T + 60_000, dec!(98), dec!(99), dec!(97)), true),
            Work::Fill(dec!(98)),
            "gapped through: at the open"
        );
        let sell = terms(OrderSide::Sell, OrderKind::Limit { price: dec!(100) });
        assert_eq!(
            work(&sell, &bar(T + 60_000, dec!(99), dec!(100), dec!(98)), true),
            Work::Rest
        );
        assert_eq!(
            work(
                &sell,
                &bar(T + 60_000, dec!(99), dec!(100.05), dec!(98)),
                true
            ),
            Work::Fill(dec!(100))
        );
    }

    #[test]
    fn a_stop_triggers_at_its_level_and_fills_at_market() {
        let buy = Working {
            slippage_bps: dec!(10),
            ..terms(OrderSide::Buy, OrderKind::StopMarket { trigger: dec!(100) })
        };
        assert_eq!(
            work(
                &buy,
                &bar(T + 60_000, dec!(98), dec!(99.95), dec!(97)),
                true
            ),
            Work::Rest
        );
        // 10 bps of slippage on 100 is 0.10.
        assert_eq!(
            work(&buy, &bar(T + 60_000, dec!(98), dec!(100), dec!(97)), true),
            Work::Fill(dec!(100.1))
        );
        assert_eq!(
            work(
                &buy,
                &bar(T + 60_000, dec!(103), dec!(104), dec!(102)),
                true
            ),
            Work::Fill(dec!(103.15)),
            "gapped: from the open (103.103 up to the tick)"
        );
        let sell = terms(
            OrderSide::Sell,
            OrderKind::StopMarket { trigger: dec!(100) },
        );
        assert_eq!(
            work(
                &sell,
                &bar(T + 60_000, dec!(101), dec!(102), dec!(100)),
                true
            ),
            Work::Fill(dec!(100))
        );
    }

    #[test]
    fn a_stop_limit_triggers_then_works_as_a_limit() {
        let buy = terms(
            OrderSide::Buy,
            OrderKind::StopLimit {
                trigger: dec!(100),
                price: dec!(100.5),
            },
        );
        assert_eq!(
            work(&buy, &bar(T + 60_000, dec!(99), dec!(101), dec!(98)), true),
            Work::Fill(dec!(100)),
            "at the trigger, within the limit"
        );
        // Gapped above the limit at the open: it rests as a limit, and the same bar coming back below fills it.
        assert_eq!(
            work(
                &buy,
                &bar(T + 60_000, dec!(102), dec!(103), dec!(100.4)),
                true
            ),
            Work::Fill(dec!(100.5))
        );
        assert_eq!(
            work(
                &buy,
                &bar(T + 60_000, dec!(102), dec!(103), dec!(101)),
                true
            ),
            Work::Trigger
        );
        let triggered = Working {
            triggered: true,
            ..buy
        };
        assert_eq!(
            work(
                &triggered,
                &bar(T + 120_000, dec!(101), dec!(101), dec!(100.6)),
                false
            ),
            Work::Rest
        );
        assert_eq!(
            work(
                &triggered,
                &bar(T + 120_000, dec!(101), dec!(101), dec!(100.45)),
                false
            ),
            Work::Fill(dec!(100.5))
        );
    }

    #[test]
    fn validity_ends_a_working_order() {
        let ioc = Working {
            validity: Validity::Ioc,
            ..terms(OrderSide::Buy, OrderKind::Limit { price: dec!(100) })
        };
        assert_eq!(
            work(
                &ioc,
                &bar(T + 60_000, dec!(101), dec!(102), dec!(100.5)),
                true
            ),
            Work::Expire
        );
        assert_eq!(
            work(&ioc, &bar(T + 60_000, dec!(101), dec!(102), dec!(99)), true),
            Work::Fill(dec!(100))
        );
        let day = terms(OrderSide::Buy, OrderKind::Limit { price: dec!(100) });
        assert_eq!(
            work(&day, &bar(T + DAY, dec!(90), dec!(91), dec!(89)), false),
            Work::Expire,
            "not filled on its day: never the next"
        );
        // A market order is not held to its day: it takes the next price, as it always has.
        let market = terms(OrderSide::Buy, OrderKind::Market);
        assert_eq!(
            work(&market, &bar(T + DAY, dec!(90), dec!(91), dec!(89)), true),
            Work::Fill(dec!(90))
        );
    }
}

#[cfg(test)]
mod venue_tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn a_price_beyond_the_days_circuit_is_refused_as_kite_refuses_it() {
        // YESBANK closed at 20.17 on a 5 % band, on a one-paisa tick: 19.17 to 21.17.
        let band = circuit_limits(dec!(20.17), dec!(5), dec!(0.01)).unwrap();
        assert_eq!(band, (dec!(19.17), dec!(21.17)));
        let facts = ContractFacts {
            tick: Some(dec!(0.01)),
            circuit: Some(band),
            ..ContractFacts::default()
        };
        let limit = |price| OrderKind::Limit { price };
        let refused = |kind| venue_refusal("YESBANK", dec!(100), kind, facts, None);
        assert_eq!(refused(limit(dec!(21.17))), None, "at the upper limit");
        assert_eq!(refused(limit(dec!(19.17))), None, "at the lower limit");
        assert_eq!(
            refused(OrderKind::Market),
            None,
            "a market order names no price"
        );
        assert_eq!(
            refused(limit(dec!(21.18))).as_deref(),
            Some(
                "Your order price is higher than the current upper circuit limit of 21.17. Place an order within the daily range."
            )
        );
        assert_eq!(
            refused(limit(dec!(19.16))).as_deref(),
            Some(
                "Your order price is lower than the current lower circuit limit of 19.17. Place an order within the daily range."
            )
        );
        assert_eq!(
            refused(OrderKind::StopMarket { trigger: dec!(19) }).as_deref(),
            Some(TRIGGER_BELOW_LOWER_CIRCUIT)
        );
        assert_eq!(
            refused(OrderKind::StopLimit {
                trigger: dec!(21.5),
                price: dec!(21.1)
            })
            .as_deref(),
            Some(TRIGGER_ABOVE_UPPER_CIRCUIT)
        );
        // The band rounds inward onto the tick; nonsense gives none.
        assert_eq!(
            circuit_limits(dec!(101.03), dec!(10), dec!(0.05)),
            Some((dec!(90.95), dec!(111.10)))
        );
        assert_eq!(circuit_limits(dec!(10), dec!(100), dec!(0.01)), None);
        assert_eq!(circuit_limits(Decimal::MAX, dec!(20), dec!(0.01)), None);
    }

    const CALL: &str = "NIFTY06JAN2626000CE";

    #[test]
    fn a_venue_refuses_what_the_exchange_refuses_in_the_brokers_words() {
        let facts = ContractFacts {
            tick: Some(dec!(0.05)),
            lot: Some(65),
            freeze: Some(1800),
            circuit: None,
        };
        let limit = |price| OrderKind::Limit { price };
        let taken = venue_refusal(CALL, dec!(130), limit(dec!(101.05)), facts, Some(dec!(100)));
        assert_eq!(taken, None);
        assert_eq!(
            venue_refusal(
                CALL,
                dec!(65),
                OrderKind::StopMarket { trigger: dec!(90) },
                facts,
                None
            )
            .as_deref(),
            Some(SL_M_ON_OPTIONS)
        );
        assert_eq!(
            venue_refusal(CALL, dec!(65), limit(dec!(101.02)), facts, None).as_deref(),
            Some(
                "Tick size for this script is 0.05. Kindly enter price in the multiple of tick size for this script"
            )
        );
        assert_eq!(
            venue_refusal(
                "SUZLON",
                dec!(10),
                OrderKind::StopLimit {
                    trigger: dec!(54.125),
                    price: dec!(54)
                },
                ContractFacts {
                    tick: Some(dec!(0.01)),
                    ..ContractFacts::default()
                },
                None
            )
            .as_deref(),
            Some(
                "Tick size for this script is 0.01. Kindly enter trigger price in the multiple of tick size for this script"
            )
        );
        assert_eq!(
            venue_refusal(CALL, dec!(100), OrderKind::Market, facts, None).as_deref(),
            Some("quantity 100 of NIFTY06JAN2626000CE is not a whole number of lots of 65")
        );
        assert_eq!(
            venue_refusal(CALL, dec!(1950), OrderKind::Market, facts, None).as_deref(),
            Some(
                "The order quantity 1950 (30 lots) is higher than the maximum quantity of 1800 (27 lots) allowed by the exchanges. Please reduce the order quantity or use iceberg orders."
            )
        );
        // LPP: ±40 % above ₹50, ±₹20 at or below it; a market order has no limit to check.
        assert_eq!(
            venue_refusal(CALL, dec!(65), limit(dec!(140.05)), facts, Some(dec!(100))).as_deref(),
            Some(OUTSIDE_LPP)
        );
        assert_eq!(
            venue_refusal(CALL, dec!(65), limit(dec!(140)), facts, Some(dec!(100))),
            None
        );
        assert_eq!(
            venue_refusal(CALL, dec!(65), limit(dec!(0.05)), facts, Some(dec!(12))),
            None
        );
        assert_eq!(
            venue_refusal(CALL, dec!(65), limit(dec!(32.05)), facts, Some(dec!(12))).as_deref(),
            Some(OUTSIDE_LPP)
        );
        assert_eq!(
            venue_refusal(CALL, dec!(65), OrderKind::Market, facts, Some(dec!(12))),
            None
        );
        assert!(whole_lots(dec!(100), 50) && !whole_lots(dec!(70), 50) && whole_lots(dec!(7), 1));
        // Nothing known: nothing refused on a guess.
        assert_eq!(
            venue_refusal(
                "RELIANCE",
                dec!(7),
                limit(dec!(1402.33)),
                ContractFacts::default(),
                None
            ),
            None
        );
    }
}
