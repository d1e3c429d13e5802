//! The paper broker's fill rules: a market order fills at the open of the
//! first bar (or the first tick) that starts after its signal, moved against
//! the trader by the account's slippage and rounded to the 0.05 tick.

use rust_decimal::Decimal;

use crate::subscriber::OrderSide;

/// NSE tick size.
pub const TICK: Decimal = Decimal::from_parts(5, 0, 0, false, 2);

/// The fill price of a market order on a bar opening at `open`.
#[must_use]
pub fn fill_price(side: OrderSide, open: Decimal, slippage_bps: Decimal) -> Decimal {
    let slip = open * slippage_bps / Decimal::from(10_000);
    let raw = match side {
        OrderSide::Buy => open + slip,
        OrderSide::Sell => open - slip,
    };
    // Round away from the trader: a buy never fills below the slipped price, a sell never above.
    let ticks = raw / TICK;
    let ticks = match side {
        OrderSide::Buy => ticks.ceil(),
        OrderSide::Sell => ticks.floor(),
    };
    (ticks * TICK).max(TICK).normalize()
}

/// Units bought (or sold short) at one price, still open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lot {
    /// Units, > 0.
    pub qty: Decimal,
    /// Entry price.
    pub price: Decimal,
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
    /// The position after a fill of `qty` units at `price`.
    #[must_use]
    pub fn apply_fill(mut self, side: OrderSide, qty: Decimal, price: Decimal) -> Self {
        let opening = self.qty.is_zero() || (self.qty > Decimal::ZERO) == (side == OrderSide::Buy);
        if opening {
            self.lots.push_back(Lot { qty, price });
            self.qty += qty * side.sign();
            return self;
        }
        let direction = if self.qty > Decimal::ZERO { Decimal::ONE } else { Decimal::NEGATIVE_ONE };
        let mut remaining = qty;
        while remaining > Decimal::ZERO {
            let Some(lot) = self.lots.front_mut() else { break };
            let closing = remaining.min(lot.qty);
            self.realized += (price - lot.price) * closing * direction;
            lot.qty -= closing;
            remaining -= closing;
            self.qty -= closing * direction;
            if lot.qty.is_zero() {
                self.lots.pop_front();
            }
        }
        if remaining > Decimal::ZERO {
            // Through zero: the rest opens a position the other way.
            self.lots.push_back(Lot { qty: remaining, price });
            self.qty += remaining * side.sign();
        }
        self
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
        let direction = if self.qty < Decimal::ZERO { Decimal::NEGATIVE_ONE } else { Decimal::ONE };
        self.lots.iter().map(|l| (last - l.price) * l.qty * direction).sum()
    }

    /// Lots as text for the journal: `qty@price;qty@price`.
    #[must_use]
    pub fn lots_text(&self) -> String {
        self.lots.iter().map(|l| format!("{}@{}", l.qty, l.price)).collect::<Vec<_>>().join(";")
    }

    /// Parse [`Position::lots_text`].
    #[must_use]
    pub fn parse_lots(text: &str) -> std::collections::VecDeque<Lot> {
        text.split(';')
            .filter_map(|l| {
                let (q, p) = l.split_once('@')?;
                Some(Lot { qty: q.parse().ok()?, price: p.parse().ok()? })
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
        assert_eq!(fill_price(OrderSide::Buy, dec!(21712.75), dec!(0)), dec!(21712.75));
        // 2 bps of 21712.75 = 4.34255 -> 21717.09255 -> up to 21717.10
        assert_eq!(fill_price(OrderSide::Buy, dec!(21712.75), dec!(2)), dec!(21717.10));
        assert_eq!(fill_price(OrderSide::Sell, dec!(21712.75), dec!(2)), dec!(21708.40));
    }

    #[test]
    fn positions_are_fifo_and_exact() {
        use OrderSide::{Buy, Sell};
        let p = Position::default().apply_fill(Buy, dec!(2), dec!(100)).apply_fill(Buy, dec!(1), dec!(110));
        assert_eq!((p.qty, p.avg_price(), p.realized), (dec!(3), dec!(103.33), dec!(0)));
        // Sell 1 at 120: matched against the first lot (100), not the average.
        let p = p.apply_fill(Sell, dec!(1), dec!(120));
        assert_eq!((p.qty, p.realized, p.lots_text()), (dec!(2), dec!(20), "1@100;1@110".to_owned()));
        // Sell 4 at 120 from +2: close 1@100 and 1@110 (+30), open short 2 at 120.
        let p = p.apply_fill(Sell, dec!(4), dec!(120));
        assert_eq!((p.qty, p.realized, p.lots_text()), (dec!(-2), dec!(50), "2@120".to_owned()));
        assert_eq!(p.unrealized(dec!(110)), dec!(20));
        let p = p.apply_fill(Buy, dec!(2), dec!(125));
        assert_eq!((p.qty, p.realized, p.lots.len()), (dec!(0), dec!(40), 0));
        let parsed = Position::parse_lots("1@100;2.5@110.05");
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[1], Lot { qty: dec!(2.5), price: dec!(110.05) });
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
                p = p.apply_fill(side, qty, price);
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
