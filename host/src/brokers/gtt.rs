//! Good-till-triggered stops: what the adapters share.
//!
//! A GTT is journaled under the id `gtt:<the broker's id>`, so the router handles it
//! as any order: polled, modified, cancelled. Kite keeps a triggered GTT in its book
//! with the order it placed. Upstox and OpenAlgo list only GTTs that can still fire
//! (Upstox "does not support retrieving completed GTT orders"; OpenAlgo's
//! `gttorderbook` leaves out triggered, cancelled and expired ones), so a GTT gone from
//! the list either placed its order, found in the order book by its shape (symbol,
//! side, quantity, placed no earlier than the GTT and not another order of ours), or
//! was cancelled or expired. `Vanished` tells the two apart and remembers the order.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use super::{BrokerOrder, BrokerStatus, OrderRequest};

/// A GTT's id as the journal keeps it: `gtt:<the broker's id>`.
pub const GTT_PREFIX: &str = "gtt:";

/// Brokers stamp orders to the second on their own clocks: an order stamped up to this
/// much before our submission may still be the one our GTT placed.
pub(crate) const CLOCK_SLACK_MS: i64 = 2_000;

/// Reads of a GTT gone from the list, with no order of its shape in the book, after
/// which it is taken as cancelled or expired at the broker (a triggered GTT's order can
/// reach the book a moment after the GTT leaves the list). One the host cancelled
/// itself is cancelled at the first such read.
const ABSENT_READS: u32 = 3;

/// What an adapter remembers of GTTs no longer listed.
#[derive(Debug, Default)]
pub(crate) struct Vanished {
    /// GTTs the host cancelled (their `gtt:` ids).
    cancelled: Mutex<HashSet<String>>,
    /// Reads of each GTT gone with no order found.
    absent: Mutex<HashMap<String, u32>>,
    /// The order each triggered GTT placed.
    placed: Mutex<HashMap<String, String>>,
}

impl Vanished {
    /// The host cancelled GTT `id`.
    pub fn cancelled(&self, id: &str) {
        if let Ok(mut c) = self.cancelled.lock() {
            c.insert(id.to_owned());
        }
    }

    /// The order GTT `id` placed, once found.
    pub fn placed(&self, id: &str) -> Option<String> {
        self.placed.lock().ok()?.get(id).cloned()
    }

    /// What became of GTT `id`, no longer listed, for `order`: the order it placed
    /// (`child`, read in full by the caller) or, none found, cancelled; until then working.
    pub fn verdict(
        &self,
        id: &str,
        order: &OrderRequest,
        child: Option<BrokerOrder>,
    ) -> BrokerOrder {
        let mut o = BrokerOrder::working(id, order);
        if let Some(child) = child {
            if let Ok(mut p) = self.placed.lock() {
                p.insert(id.to_owned(), child.order_id.clone());
            }
            o.status = child.status;
            o.filled_qty = child.filled_qty;
            o.average_price = child.average_price;
            o.message = format!("GTT triggered: order {} {}", child.order_id, child.message)
                .trim_end()
                .to_owned();
            return o;
        }
        let ours = self.cancelled.lock().is_ok_and(|c| c.contains(id));
        let reads = self.absent.lock().map_or(ABSENT_READS, |mut a| {
            let n = a.entry(id.to_owned()).or_default();
            *n += 1;
            *n
        });
        if ours || reads >= ABSENT_READS {
            o.status = BrokerStatus::Cancelled;
            o.message = if ours {
                "GTT cancelled".into()
            } else {
                "GTT no longer active at the broker and no order from it: cancelled or expired there".into()
            };
        } else {
            o.message = "GTT no longer listed; looking for the order it placed".into();
        }
        o
    }
}

/// The order a GTT for `order` placed, among `book`: of its symbol (or instrument
/// token), side and quantity, not `claimed` by another of ours, placed no earlier than
/// the GTT was sent; the earliest such.
pub(crate) fn placed_by<'a>(
    book: impl IntoIterator<Item = &'a BrokerOrder>,
    order: &OrderRequest,
    claimed: &HashSet<String>,
) -> Option<&'a BrokerOrder> {
    let not_before = order.submitted_at.map(|t| t - CLOCK_SLACK_MS);
    book.into_iter()
        .filter(|o| {
            let named =
                o.symbol == order.symbol || order.token.as_deref() == Some(o.symbol.as_str());
            let recent = match (not_before, o.placed_at) {
                (Some(limit), Some(at)) => at >= limit,
                (Some(_), None) => false,
                (None, _) => true,
            };
            named
                && recent
                && o.side == Some(order.side)
                && o.qty == order.qty
                && !claimed.contains(&o.order_id)
        })
        .min_by_key(|o| o.placed_at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::OrderSide;
    use rust_decimal::Decimal;

    fn req() -> OrderRequest {
        OrderRequest {
            client_order_id: "c1".into(),
            submitted_at: Some(1_000_000),
            symbol: "RELIANCE".into(),
            segment: crate::domain::Segment::Equity,
            token: None,
            side: OrderSide::Sell,
            qty: Decimal::from(10),
            product: crate::domain::Product::Cnc,
            reference_price: None,
            protection_pct: Decimal::ZERO,
            algo_id: None,
            kind: crate::domain::order::OrderKind::StopMarket {
                trigger: Decimal::from(99),
            },
            validity: crate::domain::order::Validity::Gtt,
            autoslice: false,
        }
    }

    fn book_order(id: &str, at: i64, qty: i64) -> BrokerOrder {
        BrokerOrder {
            order_id: id.into(),
            tag: None,
            status: BrokerStatus::Complete,
            filled_qty: Decimal::from(qty),
            average_price: Some(Decimal::from(99)),
            message: String::new(),
            symbol: "RELIANCE".into(),
            side: Some(OrderSide::Sell),
            qty: Decimal::from(qty),
            placed_at: Some(at),
        }
    }

    #[test]
    fn the_gtts_order_is_the_earliest_unclaimed_one_of_its_shape_since_it_was_sent() {
        let book = [
            book_order("old", 990_000, 10),
            book_order("other-qty", 1_100_000, 5),
            book_order("later", 1_200_000, 10),
            book_order("first", 1_050_000, 10),
        ];
        assert_eq!(
            placed_by(&book, &req(), &HashSet::new()).map(|o| o.order_id.as_str()),
            Some("first")
        );
        assert_eq!(
            placed_by(&book, &req(), &HashSet::from(["first".to_owned()]))
                .map(|o| o.order_id.as_str()),
            Some("later")
        );
        assert_eq!(
            placed_by(&book[..2], &req(), &HashSet::new()),
            None,
            "an older order, or another quantity, is not its order"
        );
    }

    #[test]
    fn a_vanished_gtt_is_cancelled_at_once_when_ours_and_after_some_reads_otherwise() {
        let v = Vanished::default();
        assert_eq!(v.verdict("gtt:1", &req(), None).status, BrokerStatus::Open);
        assert_eq!(v.verdict("gtt:1", &req(), None).status, BrokerStatus::Open);
        assert_eq!(
            v.verdict("gtt:1", &req(), None).status,
            BrokerStatus::Cancelled
        );
        v.cancelled("gtt:2");
        assert_eq!(
            v.verdict("gtt:2", &req(), None).status,
            BrokerStatus::Cancelled
        );
        let filled = v.verdict("gtt:3", &req(), Some(book_order("77", 1_050_000, 10)));
        assert_eq!(
            (filled.status, filled.filled_qty, filled.order_id.as_str()),
            (BrokerStatus::Complete, Decimal::from(10), "gtt:3")
        );
        assert_eq!(v.placed("gtt:3").as_deref(), Some("77"));
    }
}
