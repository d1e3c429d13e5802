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

/// A position: signed quantity, average price, realised P&L.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    /// Units; negative is short.
    pub qty: Decimal,
    /// Average entry price of the open units.
    pub avg_price: Decimal,
    /// Realised profit and loss.
    pub realized: Decimal,
}

impl Position {
    /// The position after a fill of `qty` units at `price`.
    #[must_use]
    pub fn apply_fill(self, side: OrderSide, qty: Decimal, price: Decimal) -> Self {
        let signed = qty * side.sign();
        let mut next = self;
        if self.qty.is_zero() || self.qty.is_sign_positive() == signed.is_sign_positive() {
            let total = self.qty + signed;
            next.avg_price = (self.avg_price * self.qty.abs() + price * qty) / total.abs();
            next.qty = total;
            return next;
        }
        let closing = qty.min(self.qty.abs());
        let direction = if self.qty > Decimal::ZERO { Decimal::ONE } else { Decimal::NEGATIVE_ONE };
        next.realized += (price - self.avg_price) * closing * direction;
        next.qty = self.qty + closing * side.sign();
        let remaining = qty - closing;
        if remaining > Decimal::ZERO {
            next.qty = remaining * side.sign();
            next.avg_price = price;
        } else if next.qty.is_zero() {
            next.avg_price = Decimal::ZERO;
        }
        next
    }

    /// Unrealised P&L at `last`.
    #[must_use]
    pub fn unrealized(&self, last: Decimal) -> Decimal {
        (last - self.avg_price) * self.qty
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
    fn positions_average_and_realise() {
        use OrderSide::{Buy, Sell};
        let p = Position::default().apply_fill(Buy, dec!(2), dec!(100)).apply_fill(Buy, dec!(2), dec!(110));
        assert_eq!((p.qty, p.avg_price, p.realized), (dec!(4), dec!(105), dec!(0)));
        let p = p.apply_fill(Sell, dec!(1), dec!(120));
        assert_eq!((p.qty, p.avg_price, p.realized), (dec!(3), dec!(105), dec!(15)));
        // Sell 5 from +3: close 3 (+45 at 120), open short 2 at 120.
        let p = p.apply_fill(Sell, dec!(5), dec!(120));
        assert_eq!((p.qty, p.avg_price, p.realized), (dec!(-2), dec!(120), dec!(60)));
        assert_eq!(p.unrealized(dec!(110)), dec!(20));
        let p = p.apply_fill(Buy, dec!(2), dec!(125));
        assert_eq!((p.qty, p.avg_price, p.realized), (dec!(0), dec!(0), dec!(50)));
    }
}
