//! Brokers: where orders go. One trait, [`Broker`], for every venue: the
//! paper broker, and the live adapters for OpenAlgo (a gateway to some 30
//! Indian brokers), Zerodha Kite Connect v3 and Upstox v3.
//!
//! The adapters only speak their API. What to do when a call fails is decided
//! once, in [`live`], for all of them: a definite rejection ends the order, a
//! token error pauses the account, and anything ambiguous (a timeout, a 429, a
//! 5xx) is followed by a look in the broker's order book for our client order
//! id before any retry. Never a blind retry.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::Value;

use crate::domain::OrderSide;
use crate::domain::Product;

pub mod feeds;
pub mod gtt;
pub mod http;
pub mod instruments;
pub mod kite;
pub mod live;
pub mod openalgo;
pub mod paper;
pub mod secrets;
pub mod upstox;

pub use secrets::Secret;

/// A boxed future, so that [`Broker`] can be used as `dyn Broker`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub use crate::domain::Segment;

pub use crate::domain::order::{OrderKind, Validity};

/// An order for a live broker: a market order with market protection unless `kind` says otherwise.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderRequest {
    /// Our id; carried in the broker's `tag` where it has one.
    pub client_order_id: String,
    /// When we handed it to the broker (ms since the epoch): a broker without tags
    /// (OpenAlgo) never takes an older order in its book for this one.
    pub submitted_at: Option<i64>,
    /// The exchange trading symbol.
    pub symbol: String,
    /// Equity or F&O.
    pub segment: Segment,
    /// The instrument token from the instrument master (Upstox needs it).
    pub token: Option<String>,
    /// Buy or sell.
    pub side: OrderSide,
    /// Units.
    pub qty: Decimal,
    /// Intraday or delivery (carry, for F&O).
    pub product: Product,
    /// The last price seen, for the protection collar of brokers that take a limit price.
    pub reference_price: Option<Decimal>,
    /// Market protection, percent; -1 = the broker's automatic protection (Kite).
    pub protection_pct: Decimal,
    /// The regulator's algo id for the account's strategies (Kite's `algo_id`).
    pub algo_id: Option<String>,
    /// Market, limit, or a stop.
    pub kind: OrderKind,
    /// Day or IOC.
    pub validity: Validity,
    /// Kite: let the broker slice it above the freeze quantity (`autoslice=true`).
    pub autoslice: bool,
}

impl OrderRequest {
    /// `BUY` or `SELL`, as every adapter spells it.
    #[must_use]
    pub fn action(&self) -> &'static str {
        match self.side {
            OrderSide::Buy => "BUY",
            OrderSide::Sell => "SELL",
        }
    }

    /// The exchange in Kite's codes, which OpenAlgo uses too: `NSE` or `NFO`.
    #[must_use]
    pub fn exchange(&self) -> &'static str {
        match self.segment {
            Segment::Equity => "NSE",
            Segment::Derivative => "NFO",
        }
    }

    /// The product in Kite's codes, which OpenAlgo uses too: `MIS` intraday, `CNC`
    /// equity delivery, `NRML` F&O carried overnight.
    #[must_use]
    pub fn product_code(&self) -> &'static str {
        match (self.product, self.segment) {
            (Product::Mis, _) => "MIS",
            (Product::Cnc, Segment::Equity) => "CNC",
            (Product::Cnc, Segment::Derivative) => "NRML",
        }
    }

    /// The protective limit price of a market order: `pct` through the reference price,
    /// on the instrument's tick (its master's, else the 0.05 grid) toward the market, so
    /// that a buy never pays more than the collar.
    #[must_use]
    pub fn protection_limit(&self) -> Option<Decimal> {
        let reference = self.reference_price?;
        let pct = if self.protection_pct > Decimal::ZERO {
            self.protection_pct
        } else {
            Decimal::from(2)
        };
        let factor = match self.side {
            OrderSide::Buy => Decimal::ONE_HUNDRED.checked_add(pct)?,
            OrderSide::Sell => Decimal::ONE_HUNDRED.checked_sub(pct)?,
        }
        .checked_div(Decimal::ONE_HUNDRED)?;
        let tick = crate::domain::money::tick_of(&self.symbol);
        let raw = reference.checked_mul(factor)?;
        let limit = crate::domain::money::on_grid(raw, tick, self.side == OrderSide::Sell);
        Some(limit.round_dp(2).max(tick))
    }
}

/// Where a broker order is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerStatus {
    /// Working (including the broker's transient states).
    Open,
    /// Completely filled.
    Complete,
    /// Refused by the broker or the exchange.
    Rejected,
    /// Cancelled (any partial fill stands).
    Cancelled,
}

/// An order as the broker reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerOrder {
    /// The broker's order id.
    pub order_id: String,
    /// Our client order id, where the broker keeps a tag.
    pub tag: Option<String>,
    /// Status.
    pub status: BrokerStatus,
    /// Units filled so far.
    pub filled_qty: Decimal,
    /// Average fill price.
    pub average_price: Option<Decimal>,
    /// The broker's status message (a rejection's reason).
    pub message: String,
    /// Trading symbol.
    pub symbol: String,
    /// Buy or sell.
    pub side: Option<OrderSide>,
    /// Units ordered.
    pub qty: Decimal,
    /// When the broker took it (ms since the epoch), where its book says.
    pub placed_at: Option<i64>,
}

/// A broker call that did not succeed. Messages are scrubbed of secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// The session is gone (expired or revoked token): pause the account.
    #[error("session refused: {0}")]
    Token(String),
    /// A definite refusal (HTTP 400 and the like): the order does not exist.
    #[error("rejected: {0}")]
    Rejected(String),
    /// HTTP 429.
    #[error("rate limited{}", .0.map(|d| format!(" (retry after {} ms)", d.as_millis())).unwrap_or_default())]
    RateLimited(Option<Duration>),
    /// No answer in time: the call may or may not have happened.
    #[error("timed out")]
    Timeout,
    /// A 5xx, a dropped connection: the call may or may not have happened.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// An answer we could not read.
    #[error("unexpected answer: {0}")]
    Protocol(String),
}

impl BrokerError {
    /// After this, a placement may have happened: look before retrying.
    #[must_use]
    pub fn is_ambiguous(&self) -> bool {
        matches!(
            self,
            Self::RateLimited(_) | Self::Timeout | Self::Unavailable(_) | Self::Protocol(_)
        )
    }
}

/// A venue that takes orders.
pub trait Broker: Send + Sync {
    /// `openalgo`, `kite`, `upstox`, `paper`.
    fn name(&self) -> &'static str;

    /// Check that the session is usable; returns who is logged in.
    fn check_session(&self) -> BoxFuture<'_, Result<String, BrokerError>>;

    /// Place a market order; returns the broker's order id.
    fn place<'a>(&'a self, order: &'a OrderRequest) -> BoxFuture<'a, Result<String, BrokerError>>;

    /// Look for `order` in today's order book (by its tag where the broker
    /// keeps one), skipping broker ids already `claimed` by other orders.
    fn find<'a>(
        &'a self,
        order: &'a OrderRequest,
        claimed: &'a HashSet<String>,
    ) -> BoxFuture<'a, Result<Option<BrokerOrder>, BrokerError>>;

    /// The current state of a placed order.
    fn status<'a>(&'a self, order_id: &'a str) -> BoxFuture<'a, Result<BrokerOrder, BrokerError>>;

    /// The current state of a placed order, told what it was placed for: a GTT the
    /// broker stops listing once it fires is followed to the order it placed, found in
    /// the book by `order`'s shape among the orders not `claimed` (Upstox, OpenAlgo).
    fn follow<'a>(
        &'a self,
        order_id: &'a str,
        order: &'a OrderRequest,
        claimed: &'a HashSet<String>,
    ) -> BoxFuture<'a, Result<BrokerOrder, BrokerError>> {
        let _ = (order, claimed);
        self.status(order_id)
    }

    /// Cancel a working order.
    fn cancel<'a>(&'a self, order_id: &'a str) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Change a working order to `order`'s quantity, kind and prices (a stop's trigger moved).
    fn modify<'a>(
        &'a self,
        order_id: &'a str,
        order: &'a OrderRequest,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        let _ = (order_id, order);
        Box::pin(async {
            Err(BrokerError::Rejected(format!(
                "{} cannot modify orders",
                self.name()
            )))
        })
    }

    /// Replace the access token (a new day's login), without a restart.
    fn set_token(&self, token: Secret);

    /// Net quantity per trading symbol as the broker holds it today, for reconciliation.
    fn positions(&self) -> BoxFuture<'_, Result<Vec<(String, Decimal)>, BrokerError>>;

    /// The margin `orders` need together (one order, or a basket's legs, hedges counted as
    /// the broker counts them) and what the account has free, from the broker's margin
    /// calculator and funds (`None`: the broker has no margin API).
    fn margin<'a>(
        &'a self,
        orders: &'a [OrderRequest],
    ) -> BoxFuture<'a, Result<Option<Margin>, BrokerError>> {
        let _ = orders;
        Box::pin(async { Ok(None) })
    }
}

/// What an order needs against what the account has, rupees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Margin {
    /// The margin the order would block.
    pub required: Decimal,
    /// The margin free to use.
    pub available: Decimal,
}

impl Margin {
    /// How much is missing, when the order needs more than is free.
    #[must_use]
    pub fn shortfall(&self) -> Option<Decimal> {
        (self.required > self.available).then(|| self.required - self.available)
    }
}

impl BrokerStatus {
    /// A broker's status word: `complete`, `rejected`, `cancelled` (any case); anything
    /// else (OPEN, TRIGGER PENDING, PUT ORDER REQ RECEIVED, VALIDATION PENDING, …) is working.
    #[must_use]
    pub fn from_word(word: &str) -> Self {
        match word.to_ascii_lowercase().as_str() {
            "complete" => Self::Complete,
            "rejected" => Self::Rejected,
            "cancelled" | "canceled" => Self::Cancelled,
            _ => Self::Open,
        }
    }
}

impl BrokerOrder {
    /// `order` as the broker's order `id`, just taken: working, nothing filled yet.
    #[must_use]
    pub fn working(id: &str, order: &OrderRequest) -> Self {
        Self {
            order_id: id.to_owned(),
            tag: None,
            status: BrokerStatus::Open,
            filled_qty: Decimal::ZERO,
            average_price: None,
            message: String::new(),
            symbol: order.symbol.clone(),
            side: Some(order.side),
            qty: order.qty,
            placed_at: order.submitted_at,
        }
    }

    /// An order in the shape Kite and Upstox share (`order_id`, `status`, `tag`,
    /// `filled_quantity`, `average_price`, `status_message`, `transaction_type`,
    /// `quantity`), its symbol under `symbol_key`.
    #[must_use]
    pub fn from_tagged(v: &Value, symbol_key: &str) -> Option<Self> {
        Some(Self {
            order_id: text(&v["order_id"])?,
            tag: v["tag"].as_str().map(str::to_owned),
            status: BrokerStatus::from_word(v["status"].as_str()?),
            // Counts that do not read are no order at all (never 0 units filled).
            filled_qty: number(&v["filled_quantity"])?,
            average_price: number(&v["average_price"]).filter(|p| !p.is_zero()),
            message: v["status_message"].as_str().unwrap_or_default().to_owned(),
            symbol: v[symbol_key].as_str().unwrap_or_default().to_owned(),
            side: v["transaction_type"]
                .as_str()
                .and_then(|s| OrderSide::parse(&s.to_ascii_lowercase())),
            qty: number(&v["quantity"])?,
            placed_at: v["order_timestamp"].as_str().and_then(ist_timestamp),
        })
    }
}

/// Our order `coid` in the book row `row` (the one that carries our tag), read by `read`:
/// `Ok(None)` when no row is ours; a row of ours that does not read is an error, never
/// "absent" (which would place the order twice).
///
/// # Errors
/// Our row does not read.
pub fn our_row(
    row: Option<&Value>,
    coid: &str,
    read: impl Fn(&Value) -> Option<BrokerOrder>,
) -> Result<Option<BrokerOrder>, BrokerError> {
    row.map(|v| {
        read(v).ok_or_else(|| {
            BrokerError::Protocol(format!("order book: the row of {coid} does not read: {v}"))
        })
    })
    .transpose()
}

/// Month abbreviations as Indian brokers and exchanges print them.
pub(crate) const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];

/// `2025-12-30` → `30DEC25`: OpenAlgo's expiry dates, and the date in our contract names.
#[must_use]
pub fn compact_date(iso: &str) -> Option<String> {
    let mut parts = iso.split('-');
    let (year, month, day) = (parts.next()?, parts.next()?, parts.next()?);
    let m: usize = month.parse().ok()?;
    Some(format!(
        "{day}{}{}",
        MONTHS.get(m.checked_sub(1)?)?,
        year.get(2..)?
    ))
}

/// One historical candle checked: positive prices, the high the highest and the low the
/// lowest, volume and OI whole and not negative; `what` names it in the error.
///
/// # Errors
/// A value that is not a number, or a candle that cannot be.
pub fn candle(
    what: &str,
    ts_ms: i64,
    ohlc: [&Value; 4],
    volume: &Value,
    oi: &Value,
) -> Result<crate::market::Bar, BrokerError> {
    let mut p = [Decimal::ZERO; 4];
    for (slot, (v, field)) in p
        .iter_mut()
        .zip(ohlc.iter().zip(["open", "high", "low", "close"]))
    {
        *slot = number(v)
            .filter(|d| *d > Decimal::ZERO)
            .ok_or_else(|| BrokerError::Protocol(format!("{what}: {field} {v} is not a price")))?
            .round_dp(4)
            .normalize();
    }
    let [open, high, low, close] = p;
    if high < open.max(close).max(low) || low > open.min(close) {
        return Err(BrokerError::Protocol(format!(
            "{what}: high {high} and low {low} do not hold open {open} and close {close}"
        )));
    }
    let whole = |v: &Value, field: &str| -> Result<u64, BrokerError> {
        if v.is_null() {
            return Ok(0);
        }
        number(v)
            .filter(|d| *d >= Decimal::ZERO && d.fract().is_zero())
            .and_then(|d| u64::try_from(d).ok())
            .ok_or_else(|| {
                BrokerError::Protocol(format!("{what}: {field} {v} is not a whole number"))
            })
    };
    Ok(crate::market::Bar {
        ts_ms,
        open,
        high,
        low,
        close,
        volume: whole(volume, "volume")?,
        oi: whole(oi, "oi")?,
    })
}

/// Historical candles as Kite and Upstox send them, `[timestamp, open, high, low, close,
/// volume, oi?]` with an ISO time and offset, those starting in `[from, to)`, ascending.
///
/// # Errors
/// A row that is not a candle.
pub fn candle_rows(
    what: &str,
    rows: &[Value],
    from: i64,
    to: i64,
) -> Result<Vec<crate::market::Bar>, BrokerError> {
    let mut bars = Vec::new();
    for row in rows {
        let r = row.as_array().map(Vec::as_slice).unwrap_or_default();
        let ts = r
            .first()
            .and_then(Value::as_str)
            .and_then(crate::domain::time::parse_iso)
            .ok_or_else(|| {
                BrokerError::Protocol(format!("{what}: candle {row} has no ISO time"))
            })?;
        if ts < from || ts >= to {
            continue;
        }
        let null = Value::Null;
        let at = |i: usize| r.get(i).unwrap_or(&null);
        bars.push(candle(
            what,
            ts,
            [at(1), at(2), at(3), at(4)],
            at(5),
            at(6),
        )?);
    }
    bars.sort_by_key(|b| b.ts_ms);
    bars.dedup_by_key(|b| b.ts_ms);
    Ok(bars)
}

/// A broker's order time in IST, `2024-03-28 10:15:00` (Kite, Upstox) or
/// `08-Apr-2025 13:58:03` (OpenAlgo), as ms since the epoch.
#[must_use]
pub fn ist_timestamp(text: &str) -> Option<i64> {
    let (date, time) = text.trim().split_once(' ')?;
    let d: Vec<&str> = date.split('-').collect();
    let (y, m, day): (u32, usize, u32) = match d.as_slice() {
        [y, m, day] if y.len() == 4 => (y.parse().ok()?, m.parse().ok()?, day.parse().ok()?),
        [day, m, y] if y.len() == 4 => (
            y.parse().ok()?,
            MONTHS.iter().position(|x| x.eq_ignore_ascii_case(m))? + 1,
            day.parse().ok()?,
        ),
        _ => return None,
    };
    crate::domain::time::parse_compact_date_time(&format!("{y:04}{m:02}{day:02}"), time.trim())
}

/// A credential that a new day's login replaces while requests read it.
#[derive(Debug)]
pub struct TokenCell(std::sync::RwLock<Secret>);

impl TokenCell {
    /// Holding `token`.
    #[must_use]
    pub fn new(token: Secret) -> Self {
        Self(std::sync::RwLock::new(token))
    }

    /// The current token.
    #[must_use]
    pub fn get(&self) -> Secret {
        self.0
            .read()
            .map(|t| t.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Replace it.
    pub fn set(&self, token: Secret) {
        match self.0.write() {
            Ok(mut t) => *t = token,
            Err(p) => *p.into_inner() = token,
        }
    }
}

/// A broker's position rows as `(symbol, net units)`, the symbol under the first of
/// `symbol_keys` a row has. A row whose symbol or quantity does not read is an error naming
/// it: a position left out would pass for flat, and the journal is reconciled against this.
///
/// # Errors
/// A row that does not read.
pub fn position_rows(
    rows: &[Value],
    symbol_keys: &[&str],
) -> Result<Vec<(String, Decimal)>, BrokerError> {
    rows.iter()
        .map(|p| {
            let symbol = symbol_keys.iter().find_map(|k| p[*k].as_str());
            match (symbol, number(&p["quantity"])) {
                (Some(s), Some(q)) => Ok((s.to_owned(), q)),
                _ => Err(BrokerError::Protocol(format!(
                    "a position row without a symbol and a quantity: {p}"
                ))),
            }
        })
        .collect()
}

/// A number the broker may send as a JSON number or a string (`"75"`, `"1186.0"`).
#[must_use]
pub fn number(v: &Value) -> Option<Decimal> {
    let d = match v {
        Value::Number(n) => Decimal::from_str(&n.to_string())
            .ok()
            .or_else(|| n.as_f64().and_then(|f| Decimal::try_from(f).ok())),
        Value::String(s) => Decimal::from_str(s.trim()).ok(),
        _ => None,
    };
    // One value, one text in the journal: `4.0` (a float on the wire) is 4, as `4` is.
    d.map(|d| d.normalize())
}

/// A string field that may arrive as a number (`"orderid": 2504…`).
#[must_use]
pub fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(side: OrderSide, price: &str, pct: &str) -> OrderRequest {
        OrderRequest {
            client_order_id: "th0".into(),
            submitted_at: None,
            symbol: "RELIANCE".into(),
            segment: Segment::Equity,
            token: None,
            side,
            qty: Decimal::ONE,
            product: Product::Mis,
            reference_price: Some(Decimal::from_str(price).unwrap()),
            protection_pct: Decimal::from_str(pct).unwrap(),
            algo_id: None,
            kind: OrderKind::Market,
            validity: Validity::Day,
            autoslice: false,
        }
    }

    #[test]
    fn protection_limits_sit_on_the_tick_away_from_the_market() {
        assert_eq!(
            req(OrderSide::Buy, "1186.00", "2").protection_limit(),
            Some(Decimal::from_str("1209.70").unwrap())
        );
        assert_eq!(
            req(OrderSide::Sell, "1186.00", "2").protection_limit(),
            Some(Decimal::from_str("1162.30").unwrap())
        );
        // 101.37 * 1.03 = 104.4111 → down to the tick below: a buy never pays more than the collar.
        assert_eq!(
            req(OrderSide::Buy, "101.37", "3").protection_limit(),
            Some(Decimal::from_str("104.40").unwrap())
        );
        assert_eq!(
            req(OrderSide::Sell, "101.37", "3").protection_limit(),
            Some(Decimal::from_str("98.35").unwrap())
        );
    }

    #[test]
    fn a_position_row_that_does_not_read_is_an_error_not_flat() {
        let rows = [
            serde_json::json!({ "tradingsymbol": "SBIN", "quantity": "10" }),
            serde_json::json!({ "tradingsymbol": "INFY", "quantity": "ten" }),
        ];
        assert_eq!(
            position_rows(&rows[..1], &["tradingsymbol"]),
            Ok(vec![("SBIN".to_owned(), Decimal::from(10))])
        );
        assert!(matches!(
            position_rows(&rows, &["tradingsymbol"]),
            Err(BrokerError::Protocol(m)) if m.contains("INFY")
        ));
    }

    #[test]
    fn our_order_in_a_row_that_does_not_read_is_not_absent() {
        let read = |v: &Value| BrokerOrder::from_tagged(v, "tradingsymbol");
        let row = serde_json::json!({ "order_id": "1", "status": "OPEN", "tag": "th1",
            "filled_quantity": "lots", "quantity": 10, "tradingsymbol": "X" });
        assert!(matches!(
            our_row(Some(&row), "th1", read),
            Err(BrokerError::Protocol(m)) if m.contains("th1")
        ));
        assert_eq!(our_row(None, "th1", read), Ok(None));
    }

    #[test]
    fn an_order_whose_counts_do_not_read_is_no_order() {
        let row = |filled: Value| {
            serde_json::json!({ "order_id": "1", "status": "OPEN", "tag": "th1", "filled_quantity": filled,
                "quantity": 10, "average_price": 0, "transaction_type": "BUY", "tradingsymbol": "X" })
        };
        assert_eq!(
            BrokerOrder::from_tagged(&row(serde_json::json!(4)), "tradingsymbol")
                .map(|o| o.filled_qty),
            Some(Decimal::from(4))
        );
        for bad in [serde_json::json!("four"), Value::Null] {
            assert_eq!(
                BrokerOrder::from_tagged(&row(bad.clone()), "tradingsymbol"),
                None,
                "{bad}"
            );
        }
    }

    #[test]
    fn segments_and_loose_numbers() {
        assert_eq!(Segment::of("NIFTY28MAR2420800CE"), Segment::Derivative);
        assert_eq!(Segment::of("BANKNIFTY24MARFUT"), Segment::Derivative);
        assert_eq!(Segment::of("RELIANCE"), Segment::Equity);
        assert_eq!(Segment::of("NIFTY"), Segment::Equity);
        assert_eq!(number(&serde_json::json!("75")), Some(Decimal::from(75)));
        // 13:58:03 IST is 08:28:03 UTC.
        assert_eq!(
            ist_timestamp("08-Apr-2025 13:58:03"),
            Some(1_744_100_883_000)
        );
        assert_eq!(
            ist_timestamp("2025-04-08 13:58:03"),
            Some(1_744_100_883_000)
        );
        assert_eq!(ist_timestamp("2025-04-31 13:58:03"), None);
        assert_eq!(
            number(&serde_json::json!(1186.5)),
            Some(Decimal::from_str("1186.5").unwrap())
        );
        assert_eq!(
            text(&serde_json::json!(250408000989443_u64)).as_deref(),
            Some("250408000989443")
        );
        for (word, status) in [
            ("COMPLETE", BrokerStatus::Complete),
            ("complete", BrokerStatus::Complete),
            ("REJECTED", BrokerStatus::Rejected),
            ("canceled", BrokerStatus::Cancelled),
            ("TRIGGER PENDING", BrokerStatus::Open),
            ("open", BrokerStatus::Open),
        ] {
            assert_eq!(BrokerStatus::from_word(word), status, "{word}");
        }
    }
}
