//! OpenAlgo: one REST API in front of some 30 Indian brokers.
//!
//! Every call is a `POST /api/v1/<name>` with a JSON body carrying `apikey`
//! (and `strategy`, which names us in OpenAlgo's logs). Success is
//! `{"status":"success",…}`; errors are `{"status":"error","message":…}` with
//! HTTP 400 (bad input), 403 (bad key or no broker session) or 500. Numbers
//! arrive as numbers or strings.
//!
//! OpenAlgo's order book keeps no client tag, so after an ambiguous placement
//! the order is recognised by symbol, side and quantity among the orders not
//! already claimed by another of ours (the journal's broker ids, also after a
//! restart) and not older than our submission: sound because one account's
//! orders are placed one at a time, never two of the same shape in flight.
//!
//! A delivery position's protective stop is a GTT (`placegttorder`, SINGLE, its
//! trigger in `triggerprice_sl` when it fires on a fall, `triggerprice_tg` on a rise;
//! `modifygttorder`, `cancelgttorder`, `gttorderbook`), journaled as
//! `gtt:<trigger_id>`. The GTT book lists only triggers that can still fire: one gone
//! from it is followed to the order it placed as [`super::gtt`] says.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::Client;
use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::http::{self, Answer};
// OpenAlgo stamps orders to the second, on its own clock: an order stamped up to
// `CLOCK_SLACK_MS` before our submission may still be ours.
use super::gtt::{CLOCK_SLACK_MS, GTT_PREFIX, Vanished};
use super::{
    BoxFuture, Broker, BrokerError, BrokerOrder, BrokerStatus, OrderRequest, Secret, TokenCell,
    number, text,
};
use crate::domain::OrderSide;

/// The OpenAlgo adapter.
/// `Debug` is derived: its credentials print as `Secret(***)`.
#[derive(Debug)]
pub struct OpenAlgo {
    client: Client,
    base: String,
    api_key: TokenCell,
    strategy: String,
    vanished: Vanished,
}

/// OpenAlgo's default local address.
pub const DEFAULT_URL: &str = "http://127.0.0.1:5000";

impl OpenAlgo {
    /// An adapter for the OpenAlgo server at `base`; `strategy` names our orders there.
    ///
    /// # Errors
    /// When the HTTP client cannot start.
    pub fn new(
        base: &str,
        api_key: Secret,
        strategy: &str,
        timeout: Duration,
    ) -> Result<Self, BrokerError> {
        Ok(Self {
            client: http::client(timeout)?,
            base: http::base(base),
            api_key: TokenCell::new(api_key),
            strategy: strategy.to_owned(),
            vanished: Vanished::default(),
        })
    }

    async fn call(&self, name: &str, mut body: Value) -> Result<Value, BrokerError> {
        let key = self.api_key.get();
        if let Some(b) = body.as_object_mut() {
            b.insert("apikey".into(), Value::String(key.expose().to_owned()));
        }
        Self::read(
            http::send(
                self.client
                    .post(format!("{}/api/v1/{name}", self.base))
                    .json(&body),
            )
            .await?,
        )
    }

    /// One-minute candles of `instrument` (`EXCHANGE:SYMBOL`) starting in `[from, to)` (ms):
    /// `POST /api/v1/history` with `interval = "1m"` over the IST days they span; each row
    /// `{timestamp, open, high, low, close, volume, oi?}`, the time as `2025-04-01 09:15:00+05:30`
    /// (or epoch seconds, as some versions send it).
    ///
    /// # Errors
    /// The broker's refusal, or a row that is not a candle.
    pub async fn minute_candles(
        &self,
        instrument: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<crate::market::Bar>, BrokerError> {
        let (exchange, symbol) = instrument.split_once(':').unwrap_or(("NSE", instrument));
        let day = crate::domain::time::format_ist_date;
        let v = self.call("history", json!({ "symbol": symbol, "exchange": exchange, "interval": "1m", "start_date": day(from), "end_date": day(to.saturating_sub(1).max(from)) })).await?;
        let what = format!("openalgo candle of {instrument}");
        let mut bars = Vec::new();
        for row in v["data"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let ts = match &row["timestamp"] {
                Value::String(t) => crate::domain::time::parse_iso(t),
                Value::Number(n) => n.as_i64().and_then(|secs| secs.checked_mul(1000)),
                _ => None,
            };
            let ts = ts.ok_or_else(|| {
                BrokerError::Protocol(format!("{what}: candle {row} has no time"))
            })?;
            if ts < from || ts >= to {
                continue;
            }
            bars.push(super::candle(
                &what,
                ts,
                [&row["open"], &row["high"], &row["low"], &row["close"]],
                &row["volume"],
                &row["oi"],
            )?);
        }
        bars.sort_by_key(|b| b.ts_ms);
        bars.dedup_by_key(|b| b.ts_ms);
        Ok(bars)
    }

    /// The option expiries of `underlying` (`POST /api/v1/expiry`, `DD-MMM-YY`), as `YYYY-MM-DD`, nearest first.
    ///
    /// # Errors
    /// The broker's refusal, or a date that does not read.
    pub async fn option_expiries(&self, underlying: &str) -> Result<Vec<String>, BrokerError> {
        let v = self
            .call(
                "expiry",
                json!({ "symbol": underlying, "exchange": "NFO", "instrumenttype": "options" }),
            )
            .await?;
        let mut out = Vec::new();
        for d in v["data"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let text = d.as_str().unwrap_or_default();
            out.push(iso_date(text).ok_or_else(|| {
                BrokerError::Protocol(format!("expiry {text:?} is not DD-MMM-YY"))
            })?);
        }
        out.sort();
        Ok(out)
    }

    /// The option chain of `underlying` at `expiry` (`YYYY-MM-DD`), `POST /api/v1/optionchain`:
    /// the spot, per strike each side's last price, OI and volume, and each side's feed
    /// instrument (`NFO:<symbol>`) as `(strike, is_call, instrument)`.
    ///
    /// # Errors
    /// The broker's refusal, or a strike without a number.
    pub async fn option_chain(
        &self,
        underlying: &str,
        expiry: &str,
    ) -> Result<
        (
            Decimal,
            Vec<crate::market::StrikeRow>,
            Vec<(Decimal, bool, String)>,
        ),
        BrokerError,
    > {
        use crate::market::{OptionLeg, StrikeRow};
        use rust_decimal::prelude::FromPrimitive as _;
        let exchange =
            if crate::market::feed::openalgo::instrument(underlying).starts_with("NSE_INDEX:") {
                "NSE_INDEX"
            } else {
                "NSE"
            };
        let compact = super::compact_date(expiry)
            .ok_or_else(|| BrokerError::Protocol(format!("expiry {expiry:?} is not YYYY-MM-DD")))?;
        let v = self
            .call(
                "optionchain",
                json!({ "underlying": underlying, "exchange": exchange, "expiry_date": compact }),
            )
            .await?;
        let dec = |v: &Value, what: &str| {
            v.as_f64()
                .and_then(Decimal::from_f64)
                .map(|d| d.round_dp(4).normalize())
                .ok_or_else(|| {
                    BrokerError::Protocol(format!(
                        "option chain of {underlying}: {what} {v} is not a number"
                    ))
                })
        };
        let whole = |v: &Value| {
            v.as_f64()
                .filter(|n| n.is_finite() && *n >= 0.0)
                .map_or(0, |n| n as u64)
        };
        let spot = dec(&v["underlying_ltp"], "underlying_ltp")?;
        let (mut rows, mut tokens) = (Vec::new(), Vec::new());
        for row in v["chain"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let strike = dec(&row["strike"], "strike")?;
            let mut legs = [None, None];
            for (i, (side, call)) in [("ce", true), ("pe", false)].into_iter().enumerate() {
                let leg = &row[side];
                if leg.is_null() {
                    continue;
                }
                legs[i] = Some(OptionLeg {
                    last: dec(&leg["ltp"], "ltp")?,
                    oi: whole(&leg["oi"]),
                    volume: whole(&leg["volume"]),
                    greeks: None,
                });
                if let Some(symbol) = leg["symbol"].as_str() {
                    tokens.push((strike, call, format!("NFO:{symbol}")));
                }
            }
            rows.push(StrikeRow {
                strike,
                ce: legs[0],
                pe: legs[1],
            });
        }
        rows.sort_by_key(|r| r.strike);
        Ok((spot, rows, tokens))
    }

    fn read(answer: Answer) -> Result<Value, BrokerError> {
        if answer.status.is_success() && answer.body["status"] == "success" {
            return Ok(answer.body.clone());
        }
        let message = http::message(&answer);
        match answer.status.as_u16() {
            401 | 403 => Err(BrokerError::Token(message)),
            400..=499 => Err(BrokerError::Rejected(message)),
            500..=599 => Err(http::server_error(&answer)),
            // 200 with "status": "error": the broker behind OpenAlgo said no.
            _ if answer.body["status"] == "error" => Err(BrokerError::Rejected(message)),
            _ => Err(BrokerError::Protocol(message)),
        }
    }

    pub(crate) fn order(v: &Value) -> Option<BrokerOrder> {
        let status = BrokerStatus::from_word(v["order_status"].as_str()?);
        let qty = number(&v["quantity"]).unwrap_or_default();
        Some(BrokerOrder {
            order_id: text(&v["orderid"])?,
            tag: None,
            status,
            // OpenAlgo reports no filled quantity: a complete order filled all of it.
            filled_qty: if status == BrokerStatus::Complete {
                qty
            } else {
                number(&v["filled_quantity"]).unwrap_or_default()
            },
            // Never the order's limit as its fill price; and for a finished order only the
            // tradebook's average counts (see [`Broker::status`]).
            average_price: number(&v["average_price"]).filter(|p| !p.is_zero()),
            message: v["rejection_reason"]
                .as_str()
                .or_else(|| v["message"].as_str())
                .unwrap_or_default()
                .to_owned(),
            symbol: v["symbol"].as_str().unwrap_or_default().to_owned(),
            side: v["action"]
                .as_str()
                .and_then(|s| OrderSide::parse(&s.to_ascii_lowercase())),
            qty,
            placed_at: v["timestamp"].as_str().and_then(super::ist_timestamp),
        })
    }

    fn fields(&self, order: &OrderRequest) -> Value {
        // Market protection: a limit order at the protection price when we know the market.
        let (pricetype, price, trigger) = match order.kind {
            super::OrderKind::Market => match order.protection_limit() {
                Some(limit) => ("LIMIT", limit.to_string(), "0".to_owned()),
                None => ("MARKET", "0".to_owned(), "0".to_owned()),
            },
            kind => (
                kind.code(),
                kind.price()
                    .map_or_else(|| "0".to_owned(), |p| p.normalize().to_string()),
                kind.trigger()
                    .map_or_else(|| "0".to_owned(), |t| t.normalize().to_string()),
            ),
        };
        json!({
            "strategy": self.strategy,
            "symbol": order.symbol,
            "action": order.action(),
            "exchange": order.exchange(),
            "pricetype": pricetype,
            "product": order.product_code(),
            "quantity": order.qty.normalize().to_string(),
            "price": price,
            "trigger_price": trigger,
            "disclosed_quantity": "0",
        })
    }

    /// The units filled of `order_id` and their average price, from the tradebook
    /// (one row per trade, or one per order: both add up).
    async fn fills(&self, order_id: &str) -> Result<Option<(Decimal, Decimal)>, BrokerError> {
        let answer = self.call("tradebook", json!({})).await?;
        let (mut qty, mut value) = (Decimal::ZERO, Decimal::ZERO);
        for t in answer["data"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            if text(&t["orderid"]).as_deref() != Some(order_id) {
                continue;
            }
            let (Some(q), Some(p)) = (
                number(&t["quantity"]).filter(|q| *q > Decimal::ZERO),
                number(&t["average_price"]).filter(|p| *p > Decimal::ZERO),
            ) else {
                return Err(BrokerError::Protocol(format!(
                    "order {order_id}: a tradebook row without a quantity and price: {t}"
                )));
            };
            let (Some(q2), Some(v2)) = (
                qty.checked_add(q),
                q.checked_mul(p).and_then(|v| value.checked_add(v)),
            ) else {
                return Err(BrokerError::Protocol(format!(
                    "order {order_id}: tradebook numbers out of range"
                )));
            };
            (qty, value) = (q2, v2);
        }
        Ok((qty > Decimal::ZERO)
            .then(|| {
                value
                    .checked_div(qty)
                    .map(|a| (qty, a.round_dp(4).normalize()))
            })
            .flatten())
    }

    /// A single-trigger GTT for a stop `order` (`placegttorder`'s and `modifygttorder`'s
    /// body): the trigger below the market (`triggerprice_sl`) for a sell, above it
    /// (`triggerprice_tg`) for a buy; a market order when it fires (OpenAlgo protects it
    /// where the broker takes only limits), or the stop-limit's limit.
    fn gtt_body(&self, order: &OrderRequest) -> Result<Value, BrokerError> {
        let trigger = order.kind.trigger().ok_or_else(|| {
            BrokerError::Rejected(format!(
                "{}: a GTT needs a trigger price",
                order.client_order_id
            ))
        })?;
        let float = |what: &str, d: Decimal| {
            rust_decimal::prelude::ToPrimitive::to_f64(&d.normalize())
                .filter(|f| f.is_finite() && *f >= 0.0)
                .ok_or_else(|| {
                    BrokerError::Rejected(format!(
                        "{}: {what} {d} cannot be sent",
                        order.client_order_id
                    ))
                })
        };
        let quantity = Some(order.qty.normalize())
            .filter(|q| q.fract().is_zero() && *q > Decimal::ZERO)
            .and_then(|q| rust_decimal::prelude::ToPrimitive::to_u64(&q));
        let Some(quantity) = quantity else {
            return Err(BrokerError::Rejected(format!(
                "{}: quantity {} is not a whole number of units",
                order.client_order_id, order.qty
            )));
        };
        let (pricetype, price) = match order.kind.price() {
            Some(p) => ("LIMIT", float("limit price", p)?),
            None => ("MARKET", 0.0),
        };
        let trigger = float("trigger price", trigger)?;
        let (sl, tg) = if order.side == OrderSide::Sell {
            (trigger, 0.0)
        } else {
            (0.0, trigger)
        };
        Ok(json!({
            "strategy": self.strategy,
            "trigger_type": "SINGLE",
            "exchange": order.exchange(),
            "symbol": order.symbol,
            "action": order.action(),
            "product": order.product_code(),
            "quantity": quantity,
            "pricetype": pricetype,
            "price": price,
            "triggerprice_sl": sl,
            "triggerprice_tg": tg,
            "stoploss": null,
            "target": null,
        }))
    }

    /// The active GTTs (`gttorderbook`).
    async fn gtt_book(&self) -> Result<Vec<Value>, BrokerError> {
        let answer = self.call("gttorderbook", json!({})).await?;
        answer["data"]
            .as_array()
            .cloned()
            .ok_or_else(|| BrokerError::Protocol("the GTT book is not a list".into()))
    }

    /// `placesmartorder`: an order sized so that the position becomes
    /// `position_size` (0 closes it), OpenAlgo working out the quantity.
    ///
    /// # Errors
    /// As [`Broker::place`].
    pub async fn place_smart(
        &self,
        order: &OrderRequest,
        position_size: rust_decimal::Decimal,
    ) -> Result<String, BrokerError> {
        let mut body = self.fields(order);
        body["position_size"] = Value::String(position_size.normalize().to_string());
        let answer = self.call("placesmartorder", body).await?;
        text(&answer["orderid"])
            .ok_or_else(|| BrokerError::Protocol("no orderid in the answer".into()))
    }
}

impl Broker for OpenAlgo {
    fn name(&self) -> &'static str {
        "openalgo"
    }

    fn check_session(&self) -> BoxFuture<'_, Result<String, BrokerError>> {
        Box::pin(async move {
            let answer = self.call("ping", json!({})).await?;
            Ok(answer["data"]["broker"]
                .as_str()
                .unwrap_or("openalgo")
                .to_owned())
        })
    }

    fn place<'a>(&'a self, order: &'a OrderRequest) -> BoxFuture<'a, Result<String, BrokerError>> {
        Box::pin(async move {
            if order.validity == super::Validity::Gtt {
                let answer = self.call("placegttorder", self.gtt_body(order)?).await?;
                return text(&answer["trigger_id"])
                    .map(|id| format!("{GTT_PREFIX}{id}"))
                    .ok_or_else(|| BrokerError::Protocol("no trigger_id in the answer".into()));
            }
            let answer = self.call("placeorder", self.fields(order)).await?;
            text(&answer["orderid"])
                .ok_or_else(|| BrokerError::Protocol("no orderid in the answer".into()))
        })
    }

    fn find<'a>(
        &'a self,
        order: &'a OrderRequest,
        claimed: &'a HashSet<String>,
    ) -> BoxFuture<'a, Result<Option<BrokerOrder>, BrokerError>> {
        Box::pin(async move {
            if order.validity == super::Validity::Gtt {
                // Ours is the unclaimed GTT for this symbol, side, quantity and trigger created
                // no earlier than we sent it.
                let since = order.submitted_at.map(|t| t - CLOCK_SLACK_MS);
                for v in self.gtt_book().await? {
                    let Some(id) = text(&v["trigger_id"]).map(|id| format!("{GTT_PREFIX}{id}"))
                    else {
                        continue;
                    };
                    let leg = &v["legs"][0];
                    let same = v["symbol"].as_str() == Some(order.symbol.as_str())
                        && leg["action"].as_str() == Some(order.action())
                        && number(&leg["quantity"]) == Some(order.qty)
                        && v["trigger_prices"].get(0).and_then(number) == order.kind.trigger()
                        && since.is_none_or(|t| {
                            v["created_at"]
                                .as_str()
                                .and_then(super::ist_timestamp)
                                .is_some_and(|at| at >= t)
                        });
                    if same && !claimed.contains(&id) {
                        return Ok(Some(BrokerOrder::working(&id, order)));
                    }
                }
                return Ok(None);
            }
            let answer = self.call("orderbook", json!({})).await?;
            let orders = answer["data"]["orders"]
                .as_array()
                .ok_or_else(|| BrokerError::Protocol("the order book has no orders list".into()))?;
            // Newest last in OpenAlgo's book: take the latest unclaimed order of this shape,
            // and never one the broker took before we sent ours (a manual order, an earlier
            // one of the same shape): its time must not be older than our submission.
            let not_before = order.submitted_at.map(|t| t - CLOCK_SLACK_MS);
            Ok(orders.iter().rev().filter_map(Self::order).find(|o| {
                let recent = match (not_before, o.placed_at) {
                    (Some(limit), Some(at)) => at >= limit,
                    (Some(_), None) => false, // undated: cannot be told from an older order
                    (None, _) => true,
                };
                recent
                    && !claimed.contains(&o.order_id)
                    && o.symbol == order.symbol
                    && o.side == Some(order.side)
                    && o.qty == order.qty
            }))
        })
    }

    fn status<'a>(&'a self, order_id: &'a str) -> BoxFuture<'a, Result<BrokerOrder, BrokerError>> {
        Box::pin(async move {
            if let Some(id) = order_id.strip_prefix(GTT_PREFIX) {
                // Without what it was placed for, a GTT is known only while listed ([`Broker::follow`] knows more).
                let v = self
                    .gtt_book()
                    .await?
                    .into_iter()
                    .find(|v| text(&v["trigger_id"]).as_deref() == Some(id))
                    .ok_or_else(|| {
                        BrokerError::Protocol(format!("GTT {id}: no longer in the GTT book"))
                    })?;
                let leg = &v["legs"][0];
                return Ok(BrokerOrder {
                    order_id: order_id.to_owned(),
                    tag: None,
                    status: BrokerStatus::Open,
                    filled_qty: Decimal::ZERO,
                    average_price: None,
                    message: String::new(),
                    symbol: v["symbol"].as_str().unwrap_or_default().to_owned(),
                    side: leg["action"]
                        .as_str()
                        .and_then(|s| OrderSide::parse(&s.to_ascii_lowercase())),
                    qty: number(&leg["quantity"]).unwrap_or_default(),
                    placed_at: v["created_at"].as_str().and_then(super::ist_timestamp),
                });
            }
            let answer = self
                .call(
                    "orderstatus",
                    json!({ "strategy": self.strategy, "orderid": order_id }),
                )
                .await?;
            let mut order = Self::order(&answer["data"]).ok_or_else(|| {
                BrokerError::Protocol(format!("order {order_id}: unreadable status"))
            })?;
            if order.status == BrokerStatus::Complete {
                // OpenAlgo's order status gives a complete order the price of the first
                // tradebook row that matches it (`orderstatus_service.py`), not the average of
                // its trades: the average is the tradebook's, over all of them. Until the
                // tradebook holds every unit (or when it cannot be read), the order has no
                // price yet and is read again: never booked at a guess.
                order.average_price = match self.fills(order_id).await {
                    Ok(Some((qty, average))) if qty == order.qty => Some(average),
                    _ => None,
                };
                return Ok(order);
            }
            // OpenAlgo's order status carries no filled quantity: the tradebook has the fills.
            // For a working order a failed read only delays the news; for a finished one
            // the part filled must be known, so the read is retried.
            match self.fills(order_id).await {
                Ok(Some((qty, average))) => {
                    order.filled_qty = qty;
                    order.average_price = Some(average);
                }
                Ok(None) => {}
                Err(e) if order.status != BrokerStatus::Open => return Err(e),
                Err(_) => {}
            }
            Ok(order)
        })
    }

    /// A GTT while the GTT book lists it is working; gone from it, the order it placed
    /// (found in the order book by its shape, its fills from the tradebook), or cancelled.
    fn follow<'a>(
        &'a self,
        order_id: &'a str,
        order: &'a OrderRequest,
        claimed: &'a HashSet<String>,
    ) -> BoxFuture<'a, Result<BrokerOrder, BrokerError>> {
        Box::pin(async move {
            let Some(id) = order_id.strip_prefix(GTT_PREFIX) else {
                return self.status(order_id).await;
            };
            let child = match self.vanished.placed(order_id) {
                Some(child) => Some(self.status(&child).await?),
                None => {
                    if self
                        .gtt_book()
                        .await?
                        .iter()
                        .any(|v| text(&v["trigger_id"]).as_deref() == Some(id))
                    {
                        return Ok(BrokerOrder::working(order_id, order));
                    }
                    let answer = self.call("orderbook", json!({})).await?;
                    let book: Vec<BrokerOrder> = answer["data"]["orders"]
                        .as_array()
                        .map(|o| o.iter().filter_map(Self::order).collect())
                        .unwrap_or_default();
                    match super::gtt::placed_by(&book, order, claimed) {
                        Some(c) => Some(self.status(&c.order_id).await?),
                        None => None,
                    }
                }
            };
            Ok(self.vanished.verdict(order_id, order, child))
        })
    }

    fn cancel<'a>(&'a self, order_id: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            if let Some(id) = order_id.strip_prefix(GTT_PREFIX) {
                self.call(
                    "cancelgttorder",
                    json!({ "strategy": self.strategy, "trigger_id": id }),
                )
                .await?;
                self.vanished.cancelled(order_id);
                return Ok(());
            }
            self.call(
                "cancelorder",
                json!({ "strategy": self.strategy, "orderid": order_id }),
            )
            .await?;
            Ok(())
        })
    }

    fn set_token(&self, token: Secret) {
        self.api_key.set(token);
    }

    /// `positionbook`; quantities may arrive as strings.
    /// `POST /api/v1/margin` (`total_margin_required`) against `POST /api/v1/funds` (`availablecash`).
    /// `margin` with every order as a position (a basket's margin, hedges netted), against `funds`.
    fn margin<'a>(
        &'a self,
        orders: &'a [OrderRequest],
    ) -> BoxFuture<'a, Result<Option<super::Margin>, BrokerError>> {
        Box::pin(async move {
            let positions: Vec<serde_json::Value> = orders
                .iter()
                .map(|order| {
                    let (pricetype, price) = match order.reference_price {
                        Some(p) => ("LIMIT", p.to_string()),
                        None => ("MARKET", "0".to_owned()),
                    };
                    json!({ "symbol": order.symbol, "exchange": order.exchange(), "action": order.action(), "quantity": order.qty.normalize().to_string(), "product": order.product_code(), "pricetype": pricetype, "price": price })
                })
                .collect();
            let answer = self
                .call("margin", json!({ "positions": positions }))
                .await?;
            let required = number(&answer["data"]["total_margin_required"]).ok_or_else(|| {
                BrokerError::Protocol("no total_margin_required in the margin answer".into())
            })?;
            let funds = self.call("funds", json!({})).await?;
            let available = number(&funds["data"]["availablecash"])
                .ok_or_else(|| BrokerError::Protocol("no availablecash in the funds".into()))?;
            Ok(Some(super::Margin {
                required,
                available,
            }))
        })
    }

    /// `modifyorder`: the order's full terms with its id.
    fn modify<'a>(
        &'a self,
        order_id: &'a str,
        order: &'a OrderRequest,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            if let Some(id) = order_id.strip_prefix(GTT_PREFIX) {
                let mut body = self.gtt_body(order)?;
                body["trigger_id"] = json!(id);
                self.call("modifygttorder", body).await?;
                return Ok(());
            }
            let mut body = self.fields(order);
            body["orderid"] = json!(order_id);
            self.call("modifyorder", body).await?;
            Ok(())
        })
    }

    fn positions(
        &self,
    ) -> BoxFuture<'_, Result<Vec<(String, rust_decimal::Decimal)>, BrokerError>> {
        Box::pin(async move {
            let answer = self.call("positionbook", json!({})).await?;
            let rows = answer["data"]
                .as_array()
                .ok_or_else(|| BrokerError::Protocol("the position book is not a list".into()))?;
            super::position_rows(rows, &["symbol"])
        })
    }
}

/// `10-JUL-25` → `2025-07-10`.
fn iso_date(text: &str) -> Option<String> {
    let mut parts = text.trim().split('-');
    let (day, month, year) = (parts.next()?, parts.next()?, parts.next()?);
    let m = super::MONTHS
        .iter()
        .position(|x| x.eq_ignore_ascii_case(month))?
        + 1;
    let (d, y): (u32, u32) = (day.parse().ok()?, year.parse().ok()?);
    (parts.next().is_none() && (1..=31).contains(&d) && y < 100)
        .then(|| format!("20{y:02}-{m:02}-{d:02}"))
}

#[cfg(test)]
mod date_tests {
    #[test]
    fn openalgo_dates_read_both_ways() {
        assert_eq!(super::iso_date("10-JUL-25").as_deref(), Some("2025-07-10"));
        assert_eq!(super::iso_date("31-dec-26").as_deref(), Some("2026-12-31"));
        assert_eq!(super::iso_date("2025-07-10"), None);
        assert_eq!(
            crate::brokers::compact_date("2025-12-30").as_deref(),
            Some("30DEC25")
        );
        assert_eq!(crate::brokers::compact_date("2025-13-30"), None);
    }
}
