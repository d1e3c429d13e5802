//! The paper broker: the fill rules are [`crate::domain::position`]'s (one
//! rule for the order manager's paper venue, the backtest and the report).

use rust_decimal::Decimal;

use crate::domain::OrderSide;
pub use crate::domain::money::TICK;
pub use crate::domain::position::{Lot, Position, fill_price};

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
        Self {
            book: std::sync::Mutex::default(),
            slippage_bps,
        }
    }

    /// A new price for `symbol`: every open order in it fills at `open`.
    pub fn on_price(&self, symbol: &str, open: Decimal) {
        let Ok(mut book) = self.book.lock() else {
            return;
        };
        for o in book
            .iter_mut()
            .filter(|o| o.symbol == symbol && o.status == super::BrokerStatus::Open)
        {
            // An order whose side is not known is never filled as one.
            let Some(side) = o.side else {
                tracing::error!(
                    "paper order {} in {symbol} has no side: not filled",
                    o.order_id
                );
                continue;
            };
            o.average_price = Some(fill_price(
                side,
                open,
                self.slippage_bps,
                crate::domain::money::tick_of(symbol),
            ));
            o.filled_qty = o.qty;
            o.status = super::BrokerStatus::Complete;
        }
    }

    fn with_book<T>(
        &self,
        f: impl FnOnce(&mut Vec<super::BrokerOrder>) -> T,
    ) -> Result<T, super::BrokerError> {
        self.book
            .lock()
            .map(|mut b| f(&mut b))
            .map_err(|_| super::BrokerError::Unavailable("paper book poisoned".into()))
    }
}

impl super::Broker for PaperBroker {
    fn name(&self) -> &'static str {
        "paper"
    }

    fn check_session(&self) -> super::BoxFuture<'_, Result<String, super::BrokerError>> {
        Box::pin(async { Ok("paper".to_owned()) })
    }

    fn place<'a>(
        &'a self,
        order: &'a super::OrderRequest,
    ) -> super::BoxFuture<'a, Result<String, super::BrokerError>> {
        Box::pin(async move {
            self.with_book(|book| {
                // Keyed by client order id, like the journal's paper book: a repeat is a no-op.
                if let Some(o) = book
                    .iter()
                    .find(|o| o.tag.as_deref() == Some(order.client_order_id.as_str()))
                {
                    return o.order_id.clone();
                }
                let id = format!("paper-{}", book.len() + 1);
                book.push(super::BrokerOrder {
                    tag: Some(order.client_order_id.clone()),
                    placed_at: Some(crate::domain::time::now_ms()),
                    ..super::BrokerOrder::working(&id, order)
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
        Box::pin(async move {
            self.with_book(|book| {
                book.iter()
                    .find(|o| o.tag.as_deref() == Some(order.client_order_id.as_str()))
                    .cloned()
            })
        })
    }

    fn status<'a>(
        &'a self,
        order_id: &'a str,
    ) -> super::BoxFuture<'a, Result<super::BrokerOrder, super::BrokerError>> {
        Box::pin(async move {
            self.with_book(|book| book.iter().find(|o| o.order_id == order_id).cloned())?
                .ok_or_else(|| super::BrokerError::Rejected(format!("no paper order {order_id}")))
        })
    }

    fn cancel<'a>(
        &'a self,
        order_id: &'a str,
    ) -> super::BoxFuture<'a, Result<(), super::BrokerError>> {
        Box::pin(async move {
            self.with_book(
                |book| match book.iter_mut().find(|o| o.order_id == order_id) {
                    Some(o) if o.status == super::BrokerStatus::Open => {
                        o.status = super::BrokerStatus::Cancelled;
                        Ok(())
                    }
                    Some(_) => Err(super::BrokerError::Rejected(format!(
                        "order {order_id} is no longer open"
                    ))),
                    None => Err(super::BrokerError::Rejected(format!(
                        "no paper order {order_id}"
                    ))),
                },
            )?
        })
    }

    fn set_token(&self, _token: super::Secret) {}

    fn positions(
        &self,
    ) -> super::BoxFuture<'_, Result<Vec<(String, Decimal)>, super::BrokerError>> {
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
