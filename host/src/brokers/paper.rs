//! The paper broker's fill rules: a market order fills at the open of the
//! first bar (or the first tick) that starts after its signal, moved against
//! the trader by the account's slippage and rounded to the 0.05 tick.

use rust_decimal::Decimal;

use crate::domain::OrderSide;

pub use crate::domain::money::TICK;

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
    pub fn parse_lots(text: &str) -> Option<std::collections::VecDeque<Lot>> {
        text.split(';')
            .filter(|l| !l.is_empty())
            .map(|l| {
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
        let parsed = Position::parse_lots("1@100;2.5@110.05").unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[1], Lot { qty: dec!(2.5), price: dec!(110.05) });
        assert_eq!(Position::parse_lots("").map(|l| l.len()), Some(0), "flat");
        assert_eq!(Position::parse_lots("1@100;x@1"), None, "a damaged lot is not dropped quietly");
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

/// The paper broker seen through the [`super::Broker`] trait: a simulated
/// venue that takes market orders and fills them at the open of the next
/// price it is given, with slippage. The order manager's paper accounts fill
/// inside the journal instead (the same [`fill_price`] rule, in the same
/// transaction as the decision); this one lets the live routing in
/// [`super::live`] be exercised, and dry-run a live account's routing, without a network.
#[derive(Debug, Default)]
pub struct PaperBroker {
    book: std::sync::Mutex<Vec<super::BrokerOrder>>,
    slippage_bps: Decimal,
}

impl PaperBroker {
    /// A venue filling with `slippage_bps` against the trader.
    #[must_use]
    pub fn new(slippage_bps: Decimal) -> Self {
        Self { book: std::sync::Mutex::default(), slippage_bps }
    }

    /// A new price for `symbol`: every open order in it fills at `open`.
    pub fn on_price(&self, symbol: &str, open: Decimal) {
        let Ok(mut book) = self.book.lock() else { return };
        for o in book.iter_mut().filter(|o| o.symbol == symbol && o.status == super::BrokerStatus::Open) {
            // An order whose side is not known is never filled as one.
            let Some(side) = o.side else {
                tracing::error!("paper order {} in {symbol} has no side: not filled", o.order_id);
                continue;
            };
            o.average_price = Some(fill_price(side, open, self.slippage_bps));
            o.filled_qty = o.qty;
            o.status = super::BrokerStatus::Complete;
        }
    }

    fn with_book<T>(&self, f: impl FnOnce(&mut Vec<super::BrokerOrder>) -> T) -> Result<T, super::BrokerError> {
        self.book.lock().map(|mut b| f(&mut b)).map_err(|_| super::BrokerError::Unavailable("paper book poisoned".into()))
    }
}

impl super::Broker for PaperBroker {
    fn name(&self) -> &'static str {
        "paper"
    }

    fn check_session(&self) -> super::BoxFuture<'_, Result<String, super::BrokerError>> {
        Box::pin(async { Ok("paper".to_owned()) })
    }

    fn place<'a>(&'a self, order: &'a super::OrderRequest) -> super::BoxFuture<'a, Result<String, super::BrokerError>> {
        Box::pin(async move {
            self.with_book(|book| {
                // Keyed by client order id, like the journal's paper book: a repeat is a no-op.
                if let Some(o) = book.iter().find(|o| o.tag.as_deref() == Some(order.client_order_id.as_str())) {
                    return o.order_id.clone();
                }
                let id = format!("paper-{}", book.len() + 1);
                book.push(super::BrokerOrder {
                    order_id: id.clone(),
                    tag: Some(order.client_order_id.clone()),
                    status: super::BrokerStatus::Open,
                    filled_qty: Decimal::ZERO,
                    average_price: None,
                    message: String::new(),
                    symbol: order.symbol.clone(),
                    side: Some(order.side),
                    qty: order.qty,
                    placed_at: Some(crate::bus::message::now_ms()),
                });
                id
            })
        })
    }

    fn find<'a>(
        &'a self,
        order: &'a super::OrderRequest,
        _claimed: &'a std::collections::HashSet<String>,
    ) -> super::BoxFuture<'a, Result<Option<super::BrokerOrder>, super::BrokerError>> {
        Box::pin(async move { self.with_book(|book| book.iter().find(|o| o.tag.as_deref() == Some(order.client_order_id.as_str())).cloned()) })
    }

    fn status<'a>(&'a self, order_id: &'a str) -> super::BoxFuture<'a, Result<super::BrokerOrder, super::BrokerError>> {
        Box::pin(async move {
            self.with_book(|book| book.iter().find(|o| o.order_id == order_id).cloned())?
                .ok_or_else(|| super::BrokerError::Rejected(format!("no paper order {order_id}")))
        })
    }

    fn cancel<'a>(&'a self, order_id: &'a str) -> super::BoxFuture<'a, Result<(), super::BrokerError>> {
        Box::pin(async move {
            self.with_book(|book| match book.iter_mut().find(|o| o.order_id == order_id) {
                Some(o) if o.status == super::BrokerStatus::Open => {
                    o.status = super::BrokerStatus::Cancelled;
                    Ok(())
                }
                Some(_) => Err(super::BrokerError::Rejected(format!("order {order_id} is no longer open"))),
                None => Err(super::BrokerError::Rejected(format!("no paper order {order_id}"))),
            })?
        })
    }

    fn set_token(&self, _token: super::Secret) {}

    fn positions(&self) -> super::BoxFuture<'_, Result<Vec<(String, Decimal)>, super::BrokerError>> {
        Box::pin(async move {
            self.with_book(|book| {
                let mut net: Vec<(String, Decimal)> = Vec::new();
                for o in book.iter().filter(|o| !o.filled_qty.is_zero()) {
                    let q = o.filled_qty * o.side.map_or(Decimal::ZERO, OrderSide::sign);
                    match net.iter_mut().find(|(s, _)| *s == o.symbol) {
                        Some((_, n)) => *n += q,
                        None => net.push((o.symbol.clone(), q)),
                    }
                }
                net
            })
        })
    }
}
