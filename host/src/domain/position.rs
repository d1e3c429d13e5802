//! The one fill-price rule and the one position every stage uses: a market
//! order fills at the open of the first bar (or the first tick) that starts
//! after its signal, moved against the trader by the account's slippage and
//! rounded to the 0.05 tick; a position is FIFO lots, and realised P&L is the
//! sum of its closed lots, exactly. The order manager's paper venue, the
//! backtest and `tradehost report` all use these.

use rust_decimal::Decimal;

use super::OrderSide;
use super::money::TICK;

/// The fill price of a market order on a bar opening at `open`. Without
/// slippage it is the open itself (a price the exchange printed); slipped, it
/// goes onto the instrument's `tick` (a non-positive one: [`TICK`]), away from the trader.
#[must_use]
pub fn fill_price(side: OrderSide, open: Decimal, slippage_bps: Decimal, tick: Decimal) -> Decimal {
    if slippage_bps.is_zero() {
        return open;
    }
    let tick = if tick > Decimal::ZERO { tick } else { TICK };
    let slip = open * slippage_bps / Decimal::from(10_000);
    let raw = match side {
        OrderSide::Buy => open + slip,
        OrderSide::Sell => open - slip,
    };
    // Round away from the trader: a buy never fills below the slipped price, a sell never above.
    let ticks = raw / tick;
    let ticks = match side {
        OrderSide::Buy => ticks.ceil(),
        OrderSide::Sell => ticks.floor(),
    };
    (ticks * tick).max(tick).normalize()
}

/// Units bought (or sold short) at one price, still open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lot {
    /// Units, > 0.
    pub qty: Decimal,
    /// Entry price.
    pub price: Decimal,
    /// Entry time, ms (0 where a journal from before entry times were kept has none).
    pub ts: i64,
}

/// Units of a lot closed by a fill: one round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed {
    /// The lot was long (closed by a sell).
    pub long: bool,
    /// Units closed, > 0.
    pub qty: Decimal,
    /// Entry price and time of the lot.
    pub entry_price: Decimal,
    /// Entry time, ms.
    pub entry_ts: i64,
    /// Price and time of the closing fill.
    pub exit_price: Decimal,
    /// Exit time, ms.
    pub exit_ts: i64,
    /// Realised P&L of these units.
    pub pnl: Decimal,
}

/// A position kept as FIFO lots, so realised P&L is exact: closing units are
/// matched against the oldest open units, and no average price is ever
/// divided out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Position {
    /// Units; negative is short.
    pub qty: Decimal,
    /// Open lots, oldest first; all long or all short, as `qty` says.
    pub lots: std::collections::VecDeque<Lot>,
    /// Realised profit and loss.
    pub realized: Decimal,
}

impl Position {
    /// The position after a fill of `qty` units at `price` at `ts`.
    #[must_use]
    pub fn apply_fill(mut self, side: OrderSide, qty: Decimal, price: Decimal, ts: i64) -> Self {
        self.fill(side, qty, price, ts);
        self
    }

    /// Apply a fill of `qty` units at `price` at `ts`: it closes the oldest
    /// open lots of the other side first (returned, oldest first), and what is
    /// left opens a lot of its own.
    pub fn fill(&mut self, side: OrderSide, qty: Decimal, price: Decimal, ts: i64) -> Vec<Closed> {
        let mut closed = Vec::new();
        let opening = self.qty.is_zero() || (self.qty > Decimal::ZERO) == (side == OrderSide::Buy);
        if opening {
            self.lots.push_back(Lot { qty, price, ts });
            self.qty += qty * side.sign();
            return closed;
        }
        let long = self.qty > Decimal::ZERO;
        let direction = if long {
            Decimal::ONE
        } else {
            Decimal::NEGATIVE_ONE
        };
        let mut remaining = qty;
        while remaining > Decimal::ZERO {
            let Some(lot) = self.lots.front_mut() else {
                break;
            };
            let closing = remaining.min(lot.qty);
            let pnl = (price - lot.price) * closing * direction;
            self.realized += pnl;
            closed.push(Closed {
                long,
                qty: closing,
                entry_price: lot.price,
                entry_ts: lot.ts,
                exit_price: price,
                exit_ts: ts,
                pnl,
            });
            lot.qty -= closing;
            remaining -= closing;
            self.qty -= closing * direction;
            if lot.qty.is_zero() {
                self.lots.pop_front();
            }
        }
        if remaining > Decimal::ZERO {
            // Through zero: the rest opens a position the other way.
            self.lots.push_back(Lot {
                qty: remaining,
                price,
                ts,
            });
            self.qty += remaining * side.sign();
        }
        closed
    }

    /// Average entry price of the open units, to the paisa (for display only).
    #[must_use]
    pub fn avg_price(&self) -> Decimal {
        let units: Decimal = self.lots.iter().map(|l| l.qty).sum();
        if units.is_zero() {
            return Decimal::ZERO;
        }
        (self.lots.iter().map(|l| l.qty * l.price).sum::<Decimal>() / units).round_dp(2)
    }

    /// Unrealised P&L at `last`, exact.
    #[must_use]
    pub fn unrealized(&self, last: Decimal) -> Decimal {
        let direction = if self.qty < Decimal::ZERO {
            Decimal::NEGATIVE_ONE
        } else {
            Decimal::ONE
        };
        self.lots
            .iter()
            .map(|l| (last - l.price) * l.qty * direction)
            .sum()
    }

    /// Lots as text for the journal: `qty@price@ts;qty@price@ts`.
    #[must_use]
    pub fn lots_text(&self) -> String {
        self.lots
            .iter()
            .map(|l| format!("{}@{}@{}", l.qty, l.price, l.ts))
            .collect::<Vec<_>>()
            .join(";")
    }

    /// Parse [`Position::lots_text`] (also `qty@price`, as journals kept them
    /// before entry times: those lots have time 0).
    #[must_use]
    pub fn parse_lots(text: &str) -> Option<std::collections::VecDeque<Lot>> {
        text.split(';')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let mut parts = l.split('@');
                let (qty, price) = (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
                let ts = parts.next().map_or(Some(0), |t| t.parse().ok())?;
                parts.next().is_none().then_some(Lot { qty, price, ts })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn fills_slip_against_the_trader_on_the_tick() {
        assert_eq!(
            fill_price(OrderSide::Buy, dec!(21712.75), dec!(0), TICK),
            dec!(21712.75)
        );
        assert_eq!(
            fill_price(OrderSide::Buy, dec!(101.2345), dec!(0), TICK),
            dec!(101.2345),
            "no slippage: the printed open"
        );
        assert_eq!(
            fill_price(OrderSide::Sell, dec!(0.02), dec!(1), TICK),
            dec!(0.05),
            "never below one tick"
        );
        // 2 bps of 21712.75 = 4.34255 -> 21717.09255 -> up to 21717.10
        assert_eq!(
            fill_price(OrderSide::Buy, dec!(21712.75), dec!(2), TICK),
            dec!(21717.10)
        );
        assert_eq!(
            fill_price(OrderSide::Sell, dec!(21712.75), dec!(2), TICK),
            dec!(21708.40)
        );
        // A sub-₹250 stock on its 0.01 tick; a ₹1,000+ one on 0.10.
        assert_eq!(
            fill_price(OrderSide::Buy, dec!(21.43), dec!(10), dec!(0.01)),
            dec!(21.46)
        );
        assert_eq!(
            fill_price(OrderSide::Sell, dec!(1502.35), dec!(2), dec!(0.1)),
            dec!(1502)
        );
    }

    #[test]
    fn positions_are_fifo_and_exact() {
        use OrderSide::{Buy, Sell};
        let p = Position::default()
            .apply_fill(Buy, dec!(2), dec!(100), 0)
            .apply_fill(Buy, dec!(1), dec!(110), 0);
        assert_eq!(
            (p.qty, p.avg_price(), p.realized),
            (dec!(3), dec!(103.33), dec!(0))
        );
        // Sell 1 at 120: matched against the first lot (100), not the average.
        let p = p.apply_fill(Sell, dec!(1), dec!(120), 0);
        assert_eq!(
            (p.qty, p.realized, p.lots_text()),
            (dec!(2), dec!(20), "1@100@0;1@110@0".to_owned())
        );
        // Sell 4 at 120 from +2: close 1@100 and 1@110 (+30), open short 2 at 120.
        let p = p.apply_fill(Sell, dec!(4), dec!(120), 0);
        assert_eq!(
            (p.qty, p.realized, p.lots_text()),
            (dec!(-2), dec!(50), "2@120@0".to_owned())
        );
        assert_eq!(p.unrealized(dec!(110)), dec!(20));
        let p = p.apply_fill(Buy, dec!(2), dec!(125), 0);
        assert_eq!((p.qty, p.realized, p.lots.len()), (dec!(0), dec!(40), 0));
        let parsed = Position::parse_lots("1@100;2.5@110.05@1704081480000").unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(
            parsed[0],
            Lot {
                qty: dec!(1),
                price: dec!(100),
                ts: 0
            },
            "a lot from before entry times"
        );
        assert_eq!(
            parsed[1],
            Lot {
                qty: dec!(2.5),
                price: dec!(110.05),
                ts: 1_704_081_480_000
            }
        );
        assert_eq!(Position::parse_lots("1@100@5@6"), None);
        assert_eq!(Position::parse_lots("").map(|l| l.len()), Some(0), "flat");
        assert_eq!(
            Position::parse_lots("1@100;x@1"),
            None,
            "a damaged lot is not dropped quietly"
        );
    }

    #[test]
    fn a_fill_reports_the_lots_it_closes_oldest_first() {
        use OrderSide::{Buy, Sell};
        let mut p = Position::default();
        assert!(p.fill(Buy, dec!(2), dec!(100), 1).is_empty());
        assert!(p.fill(Buy, dec!(1), dec!(110), 2).is_empty());
        let closed = p.fill(Sell, dec!(4), dec!(105), 3);
        assert_eq!(closed.len(), 2);
        assert_eq!(
            (
                closed[0].long,
                closed[0].qty,
                closed[0].entry_ts,
                closed[0].pnl
            ),
            (true, dec!(2), 1, dec!(10))
        );
        assert_eq!(
            (
                closed[1].qty,
                closed[1].entry_price,
                closed[1].exit_ts,
                closed[1].pnl
            ),
            (dec!(1), dec!(110), 3, dec!(-5))
        );
        assert_eq!(
            (p.qty, p.realized, p.lots_text()),
            (dec!(-1), dec!(5), "1@105@3".to_owned())
        );
        let closed = p.fill(Buy, dec!(1), dec!(100), 4);
        assert_eq!((closed[0].long, closed[0].pnl), (false, dec!(5)));
    }

    proptest::proptest! {
        /// A position is the sum of its fills, and realised plus unrealised P&L
        /// equals the cash flow marked at the last price, exactly.
        #[test]
        fn position_is_the_sum_of_its_fills(fills in proptest::collection::vec((proptest::bool::ANY, 1u32..20, 9_000u32..11_000), 1..60), last in 9_000u32..11_000) {
            let mut p = Position::default();
            let (mut units, mut cash) = (Decimal::ZERO, Decimal::ZERO);
            for (buy, qty, price) in fills {
                let side = if buy { OrderSide::Buy } else { OrderSide::Sell };
                let (qty, price) = (Decimal::from(qty), Decimal::new(i64::from(price), 1));
                p = p.apply_fill(side, qty, price, 0);
                units += qty * side.sign();
                cash -= qty * price * side.sign();
            }
            let last = Decimal::new(i64::from(last), 1);
            proptest::prop_assert_eq!(p.qty, units);
            proptest::prop_assert_eq!(p.lots.iter().map(|l| l.qty).sum::<Decimal>(), units.abs());
            proptest::prop_assert_eq!(p.realized + p.unrealized(last), cash + units * last);
        }
    }
}
