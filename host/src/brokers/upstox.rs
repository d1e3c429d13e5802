//! Upstox v3.
//!
//! `POST /v3/order/place` (JSON, `Authorization: Bearer <token>`) answers
//! `{"status":"success","data":{"order_ids":[…]}}`; `DELETE
//! /v3/order/cancel?order_id=`; `GET /v2/order/details?order_id=` and `GET
//! /v2/order/retrieve-all` read orders; `GET /v2/user/profile` checks the
//! session; `GET /v3/feed/market-data-feed/authorize` hands out a one-time
//! market-feed address (`/v2/feed/portfolio-stream-feed/authorize` one of
//! the order-update stream); `GET /v2/option/contract` and `/v2/option/chain`
//! give an underlying's expiries and its option chain. Instruments are named by `instrument_token` (`NSE_EQ|INE…`) from
//! the instrument master; our client order id travels in `tag`. Errors are
//! `{"status":"error","errors":[{"errorCode","message",…}]}`; 401 is an
//! invalid or expired token. A market order is sent as a limit order at the
//! protection price (a collar), which is what market protection is.
//!
//! A delivery position's protective stop is a GTT (`POST /v3/order/gtt/place`, one
//! `ENTRY` rule `BELOW` or `ABOVE` its trigger; `PUT /v3/order/gtt/modify`; `DELETE
//! /v3/order/gtt/cancel`; `GET /v3/order/gtt?gtt_order_id=`), journaled as
//! `gtt:<gtt_order_id>`. Its rule names the order it placed once triggered; a GTT
//! Upstox no longer returns is followed as [`super::gtt`] says.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::Client;
use serde_json::{Value, json};

use super::gtt::{GTT_PREFIX, Vanished};
use super::http::{self, Answer};
use super::{
    BoxFuture, Broker, BrokerError, BrokerOrder, BrokerStatus, OrderRequest, Secret, TokenCell,
    text,
};
use crate::domain::Product;

/// The Upstox adapter.
/// `Debug` is derived: its credentials print as `Secret(***)`.
#[derive(Debug)]
pub struct Upstox {
    client: Client,
    base: String,
    access_token: TokenCell,
    vanished: Vanished,
}

/// Upstox's production API.
pub const DEFAULT_URL: &str = "https://api.upstox.com";

/// The one-time address in an authorize answer (Upstox sends it under both spellings).
fn redirect_uri(data: &Value, what: &str) -> Result<String, BrokerError> {
    data["authorized_redirect_uri"]
        .as_str()
        .or_else(|| data["authorizedRedirectUri"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| {
            BrokerError::Protocol(format!(
                "the {what} authorize answer has no authorized_redirect_uri"
            ))
        })
}

impl Upstox {
    /// An adapter for `base` (e.g. [`DEFAULT_URL`]).
    ///
    /// # Errors
    /// When the HTTP client cannot start.
    pub fn new(base: &str, access_token: Secret, timeout: Duration) -> Result<Self, BrokerError> {
        Ok(Self {
            client: http::client(timeout)?,
            base: http::base(base),
            access_token: TokenCell::new(access_token),
            vanished: Vanished::default(),
        })
    }

    /// A one-time address of the Market Data Feed V3
    /// (`GET /v3/feed/market-data-feed/authorize`), asked for each connection.
    ///
    /// # Errors
    /// The broker's refusal (an expired token is [`BrokerError::Token`]) or an answer without the address.
    pub async fn authorize_feed(&self) -> Result<String, BrokerError> {
        let answer = http::send(
            self.auth(
                self.client
                    .get(format!("{}/v3/feed/market-data-feed/authorize", self.base)),
            ),
        )
        .await?;
        redirect_uri(&Self::read(answer)?, "feed")
    }

    /// A one-time address of the portfolio stream with order updates
    /// (`GET /v2/feed/portfolio-stream-feed/authorize?update_types=order`), asked for each connection.
    ///
    /// # Errors
    /// The broker's refusal or an answer without the address.
    pub async fn authorize_order_stream(&self) -> Result<String, BrokerError> {
        let request = self
            .client
            .get(format!(
                "{}/v2/feed/portfolio-stream-feed/authorize",
                self.base
            ))
            .query(&[("update_types", "order")]);
        redirect_uri(
            &Self::read(http::send(self.auth(request)).await?)?,
            "portfolio stream",
        )
    }

    /// The nearest expiry on or after `today` (`YYYY-MM-DD`) of the options on
    /// `underlying` (an instrument key), from `GET /v2/option/contract`.
    ///
    /// # Errors
    /// The broker's refusal.
    pub async fn nearest_expiry(
        &self,
        underlying: &str,
        today: &str,
    ) -> Result<Option<String>, BrokerError> {
        let answer = http::send(
            self.auth(
                self.client
                    .get(format!("{}/v2/option/contract", self.base))
                    .query(&[("instrument_key", underlying)]),
            ),
        )
        .await?;
        let data = Self::read(answer)?;
        let mut expiries: Vec<&str> = data
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c["expiry"].as_str())
                    .filter(|e| *e >= today)
                    .collect()
            })
            .unwrap_or_default();
        expiries.sort_unstable();
        Ok(expiries.first().map(|e| (*e).to_owned()))
    }

    /// The option chain of `underlying` (an instrument key) for `expiry`, from
    /// `GET /v2/option/chain`: the spot and, per strike, each side's last price, OI and volume;
    /// and each side's instrument key as `(strike, is_call, key)`.
    ///
    /// # Errors
    /// The broker's refusal, or a strike without a number.
    pub async fn option_chain(
        &self,
        underlying: &str,
        expiry: &str,
    ) -> Result<
        (
            rust_decimal::Decimal,
            Vec<crate::market::StrikeRow>,
            Vec<(rust_decimal::Decimal, bool, String)>,
        ),
        BrokerError,
    > {
        use crate::market::{OptionLeg, StrikeRow};
        use rust_decimal::prelude::FromPrimitive as _;
        let answer = http::send(
            self.auth(
                self.client
                    .get(format!("{}/v2/option/chain", self.base))
                    .query(&[("instrument_key", underlying), ("expiry_date", expiry)]),
            ),
        )
        .await?;
        let data = Self::read(answer)?;
        let dec = |v: &Value, what: &str| {
            v.as_f64()
                .and_then(rust_decimal::Decimal::from_f64)
                .map(|d| d.round_dp(4).normalize())
                .ok_or_else(|| {
                    BrokerError::Protocol(format!(
                        "option chain of {underlying}: {what} {v} is not a number"
                    ))
                })
        };
        let leg = |side: &Value| -> Result<Option<OptionLeg>, BrokerError> {
            let m = &side["market_data"];
            if m.is_null() {
                return Ok(None);
            }
            let whole = |v: &Value| {
                v.as_f64()
                    .filter(|n| n.is_finite() && *n >= 0.0)
                    .map_or(0, |n| n as u64)
            };
            // `option_greeks`: {vega, theta, gamma, delta, iv, pop}; a leg without them has none.
            let g = &side["option_greeks"];
            let num = |k: &str| g[k].as_f64();
            let greeks = (|| {
                crate::market::Greeks::from_f64(
                    num("delta")?,
                    num("gamma")?,
                    num("theta")?,
                    num("vega")?,
                    num("iv")?,
                )
            })();
            Ok(Some(OptionLeg {
                last: dec(&m["ltp"], "ltp")?,
                oi: whole(&m["oi"]),
                volume: whole(&m["volume"]),
                greeks,
            }))
        };
        let mut spot = rust_decimal::Decimal::ZERO;
        let mut rows = Vec::new();
        let mut keys = Vec::new();
        for row in data.as_array().map(Vec::as_slice).unwrap_or_default() {
            spot = dec(&row["underlying_spot_price"], "underlying_spot_price")?;
            let strike = dec(&row["strike_price"], "strike_price")?;
            for (side, call) in [("call_options", true), ("put_options", false)] {
                if let Some(key) = row[side]["instrument_key"].as_str() {
                    keys.push((strike, call, key.to_owned()));
                }
            }
            rows.push(StrikeRow {
                strike,
                ce: leg(&row["call_options"])?,
                pe: leg(&row["put_options"])?,
            });
        }
        rows.sort_by_key(|r| r.strike);
        Ok((spot, rows, keys))
    }

    /// Today's one-minute candles of `instrument_key` starting in `[from, to)` (ms):
    /// `GET /v3/historical-candle/intraday/:instrument_key/minutes/1`, rows
    /// `[time, open, high, low, close, volume, oi]` newest first.
    ///
    /// # Errors
    /// The broker's refusal, or a row that is not a candle.
    pub async fn minute_candles(
        &self,
        instrument_key: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<crate::market::Bar>, BrokerError> {
        let key = http::path_segment(instrument_key);
        let data = Self::read(
            http::send(self.auth(self.client.get(format!(
                "{}/v3/historical-candle/intraday/{key}/minutes/1",
                self.base
            ))))
            .await?,
        )?;
        let rows = data["candles"]
            .as_array()
            .ok_or_else(|| BrokerError::Protocol("intraday candles without candles".into()))?;
        super::candle_rows(
            &format!("upstox candle of {instrument_key}"),
            rows,
            from,
            to,
        )
    }

    /// The regulator's algo id of the account's strategies, in Upstox's `X-Algo-Name`
    /// header (its SDK's `algo_name` on place, modify and cancel).
    fn algo(r: reqwest::RequestBuilder, order: &OrderRequest) -> reqwest::RequestBuilder {
        match &order.algo_id {
            Some(id) => r.header("X-Algo-Name", id.as_str()),
            None => r,
        }
    }

    fn auth(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let token = self.access_token.get();
        r.bearer_auth(token.expose())
            .header("Accept", "application/json")
    }

    /// What a placement and a modification share: quantity, product, validity, type and
    /// prices. Upstox takes JSON numbers: a whole quantity, and prices a double holds
    /// exactly to the paisa; anything else is refused here, never sent as 0. A market
    /// order goes as a limit at the protection price when the market is known.
    fn terms(order: &OrderRequest) -> Result<Value, BrokerError> {
        let (order_type, price, trigger) = match order.kind {
            super::OrderKind::Market => match order.protection_limit() {
                Some(limit) => ("LIMIT", limit, rust_decimal::Decimal::ZERO),
                None => (
                    "MARKET",
                    rust_decimal::Decimal::ZERO,
                    rust_decimal::Decimal::ZERO,
                ),
            },
            kind => (
                kind.code(),
                kind.price().unwrap_or_default(),
                kind.trigger().unwrap_or_default(),
            ),
        };
        let quantity = Some(order.qty.normalize())
            .filter(|q| q.fract().is_zero() && *q > rust_decimal::Decimal::ZERO)
            .and_then(|q| rust_decimal::prelude::ToPrimitive::to_u64(&q));
        let Some(quantity) = quantity else {
            return Err(BrokerError::Rejected(format!(
                "{}: quantity {} is not a whole number of units",
                order.client_order_id, order.qty
            )));
        };
        let number = |what: &str, p: rust_decimal::Decimal| {
            rust_decimal::prelude::ToPrimitive::to_f64(&p)
                .filter(|p| p.is_finite() && *p >= 0.0)
                .ok_or_else(|| {
                    BrokerError::Rejected(format!(
                        "{}: {what} {p} cannot be sent",
                        order.client_order_id
                    ))
                })
        };
        Ok(json!({
            "quantity": quantity,
            "product": if order.product == Product::Mis { "I" } else { "D" },
            "validity": order.validity.code(),
            "price": number("limit price", price)?,
            "order_type": order_type,
            "disclosed_quantity": 0,
            "trigger_price": number("trigger price", trigger)?,
        }))
    }

    fn read(answer: Answer) -> Result<Value, BrokerError> {
        if answer.status.is_success() && answer.body["status"] == "success" {
            return Ok(answer.body["data"].clone());
        }
        let message = http::message(&answer);
        let code = answer.body["errors"][0]["error_code"]
            .as_str()
            .or_else(|| answer.body["errors"][0]["errorCode"].as_str())
            .unwrap_or_default();
        match answer.status.as_u16() {
            401 => Err(BrokerError::Token(message)),
            // UDAPI100050: "Invalid token used to access API", whatever the status.
            _ if code == "UDAPI100050" => Err(BrokerError::Token(message)),
            400..=499 => Err(BrokerError::Rejected(message)),
            500..=599 => Err(http::server_error(&answer)),
            _ => Err(BrokerError::Protocol(message)),
        }
    }

    pub(crate) fn order(v: &Value) -> Option<BrokerOrder> {
        // The order book says `trading_symbol`; older answers `tradingsymbol`.
        BrokerOrder::from_tagged(
            v,
            if v.get("trading_symbol").is_some() {
                "trading_symbol"
            } else {
                "tradingsymbol"
            },
        )
    }

    /// A single-leg GTT for a stop `order`: one `ENTRY` rule that fires when the market
    /// falls to the trigger (a sell) or rises to it (a buy); Upstox places it at the market.
    fn gtt_body(order: &OrderRequest) -> Result<Value, BrokerError> {
        let trigger = order.kind.trigger().ok_or_else(|| {
            BrokerError::Rejected(format!(
                "{}: a GTT needs a trigger price",
                order.client_order_id
            ))
        })?;
        let terms = Self::terms(&OrderRequest {
            kind: super::OrderKind::StopMarket { trigger },
            ..order.clone()
        })?;
        Ok(json!({
            "type": "SINGLE",
            "quantity": terms["quantity"],
            "product": terms["product"],
            "rules": [{ "strategy": "ENTRY", "trigger_type": if order.side == super::OrderSide::Sell { "BELOW" } else { "ABOVE" }, "trigger_price": terms["trigger_price"] }],
        }))
    }

    /// A GTT as Upstox details it, as the router sees an order: working while scheduled;
    /// once its rule has placed an order, that order (its fills); cancelled or expired:
    /// cancelled; failed: rejected with Upstox's message.
    async fn gtt_status(&self, id: &str, v: &Value) -> Result<BrokerOrder, BrokerError> {
        let rules = v["rules"].as_array().map(Vec::as_slice).unwrap_or_default();
        let rule = rules
            .iter()
            .find(|r| r["strategy"] == "ENTRY")
            .or(rules.first())
            .unwrap_or(&Value::Null);
        let mut o = BrokerOrder {
            order_id: id.to_owned(),
            tag: None,
            status: BrokerStatus::Open,
            filled_qty: rust_decimal::Decimal::ZERO,
            average_price: None,
            message: String::new(),
            symbol: v["instrument_token"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            side: rule["transaction_type"]
                .as_str()
                .and_then(|s| super::OrderSide::parse(&s.to_ascii_lowercase())),
            qty: super::number(&v["quantity"]).unwrap_or_default(),
            placed_at: v["created_at"].as_i64().map(|us| us / 1_000),
        };
        let status = rule["status"].as_str().unwrap_or_default();
        match (text(&rule["order_id"]).filter(|i| !i.is_empty()), status) {
            (Some(order_id), _) => {
                let placed = self.status(&order_id).await?;
                o.status = placed.status;
                o.filled_qty = placed.filled_qty;
                o.average_price = placed.average_price;
                o.message = format!("GTT triggered: order {order_id} {}", placed.message)
                    .trim_end()
                    .to_owned();
            }
            (None, "CANCELLED" | "EXPIRED") => {
                o.status = BrokerStatus::Cancelled;
                o.message = format!("GTT {}", status.to_ascii_lowercase());
            }
            (None, "FAILED") => {
                o.status = BrokerStatus::Rejected;
                o.message = format!(
                    "GTT failed: {}",
                    rule["message"].as_str().unwrap_or("no reason given")
                );
            }
            // Scheduled, pending, or triggered with its order on the way.
            _ => {}
        }
        Ok(o)
    }

    /// Today's orders as the order book lists them, its instrument key as the symbol
    /// (what a GTT's order is known by).
    async fn book_by_key(&self) -> Result<Vec<BrokerOrder>, BrokerError> {
        let data = Self::read(
            http::send(
                self.auth(
                    self.client
                        .get(format!("{}/v2/order/retrieve-all", self.base)),
                ),
            )
            .await?,
        )?;
        let orders = data
            .as_array()
            .ok_or_else(|| BrokerError::Protocol("the order book is not a list".into()))?;
        Ok(orders
            .iter()
            .filter_map(|v| BrokerOrder::from_tagged(v, "instrument_token"))
            .collect())
    }
}

impl Broker for Upstox {
    fn name(&self) -> &'static str {
        "upstox"
    }

    fn check_session(&self) -> BoxFuture<'_, Result<String, BrokerError>> {
        Box::pin(async move {
            let data = Self::read(
                http::send(self.auth(self.client.get(format!("{}/v2/user/profile", self.base))))
                    .await?,
            )?;
            Ok(data["user_id"].as_str().unwrap_or("?").to_owned())
        })
    }

    fn place<'a>(&'a self, order: &'a OrderRequest) -> BoxFuture<'a, Result<String, BrokerError>> {
        Box::pin(async move {
            let token = order.token.as_deref().ok_or_else(|| {
                BrokerError::Rejected(format!(
                    "{}: no instrument_token (not in the Upstox instrument master)",
                    order.symbol
                ))
            })?;
            if order.validity == super::Validity::Gtt {
                let mut body = Self::gtt_body(order)?;
                body["instrument_token"] = json!(token);
                body["transaction_type"] = json!(order.action());
                let data = Self::read(
                    http::send(
                        self.auth(
                            self.client
                                .post(format!("{}/v3/order/gtt/place", self.base)),
                        )
                        .json(&body),
                    )
                    .await?,
                )?;
                return data["gtt_order_ids"]
                    .get(0)
                    .and_then(text)
                    .map(|id| format!("{GTT_PREFIX}{id}"))
                    .ok_or_else(|| BrokerError::Protocol("no gtt_order_ids in the answer".into()));
            }
            let mut body = Self::terms(order)?;
            body["tag"] = json!(order.client_order_id);
            body["instrument_token"] = json!(token);
            body["transaction_type"] = json!(order.action());
            body["is_amo"] = json!(false);
            body["slice"] = json!(false);
            let data = Self::read(
                http::send(
                    Self::algo(
                        self.auth(self.client.post(format!("{}/v3/order/place", self.base))),
                        order,
                    )
                    .json(&body),
                )
                .await?,
            )?;
            data["order_ids"]
                .get(0)
                .and_then(text)
                .ok_or_else(|| BrokerError::Protocol("no order_ids in the answer".into()))
        })
    }

    fn find<'a>(
        &'a self,
        order: &'a OrderRequest,
        claimed: &'a HashSet<String>,
    ) -> BoxFuture<'a, Result<Option<BrokerOrder>, BrokerError>> {
        Box::pin(async move {
            if order.validity == super::Validity::Gtt {
                // GTTs carry no tag: ours is the unclaimed one for this instrument, side,
                // quantity and trigger created no earlier than we sent it.
                let data = Self::read(
                    http::send(self.auth(self.client.get(format!("{}/v3/order/gtt", self.base))))
                        .await?,
                )?;
                let gtts = data
                    .as_array()
                    .ok_or_else(|| BrokerError::Protocol("the GTT list is not a list".into()))?;
                let since = order.submitted_at.map(|t| t - super::gtt::CLOCK_SLACK_MS);
                for v in gtts {
                    let Some(id) = text(&v["gtt_order_id"]).map(|id| format!("{GTT_PREFIX}{id}"))
                    else {
                        continue;
                    };
                    let rule = v["rules"]
                        .as_array()
                        .and_then(|r| r.iter().find(|r| r["strategy"] == "ENTRY"))
                        .unwrap_or(&Value::Null);
                    let same = v["instrument_token"].as_str() == order.token.as_deref()
                        && rule["transaction_type"].as_str() == Some(order.action())
                        && super::number(&v["quantity"]) == Some(order.qty)
                        && super::number(&rule["trigger_price"]) == order.kind.trigger()
                        && since.is_none_or(|t| {
                            v["created_at"].as_i64().is_some_and(|us| us / 1_000 >= t)
                        });
                    if same && !claimed.contains(&id) {
                        return self.gtt_status(&id, v).await.map(Some);
                    }
                }
                return Ok(None);
            }
            let data = Self::read(
                http::send(
                    self.auth(
                        self.client
                            .get(format!("{}/v2/order/retrieve-all", self.base)),
                    ),
                )
                .await?,
            )?;
            let orders = data
                .as_array()
                .ok_or_else(|| BrokerError::Protocol("the order book is not a list".into()))?;
            let coid = order.client_order_id.as_str();
            super::our_row(
                orders.iter().find(|v| v["tag"].as_str() == Some(coid)),
                coid,
                Self::order,
            )
        })
    }

    fn status<'a>(&'a self, order_id: &'a str) -> BoxFuture<'a, Result<BrokerOrder, BrokerError>> {
        Box::pin(async move {
            if let Some(id) = order_id.strip_prefix(GTT_PREFIX) {
                let data = Self::read(
                    http::send(
                        self.auth(
                            self.client
                                .get(format!("{}/v3/order/gtt", self.base))
                                .query(&[("gtt_order_id", id)]),
                        ),
                    )
                    .await?,
                )?;
                let v = data
                    .as_array()
                    .and_then(|d| d.first())
                    .ok_or_else(|| BrokerError::Protocol(format!("GTT {id}: not returned")))?;
                return self.gtt_status(order_id, v).await;
            }
            let data = Self::read(
                http::send(
                    self.auth(
                        self.client
                            .get(format!("{}/v2/order/details", self.base))
                            .query(&[("order_id", order_id)]),
                    ),
                )
                .await?,
            )?;
            Self::order(&data).ok_or_else(|| {
                BrokerError::Protocol(format!("order {order_id}: unreadable details"))
            })
        })
    }

    /// A GTT Upstox no longer returns (it does not return completed ones): the order its
    /// rule placed, found in the book by its shape.
    fn follow<'a>(
        &'a self,
        order_id: &'a str,
        order: &'a OrderRequest,
        claimed: &'a HashSet<String>,
    ) -> BoxFuture<'a, Result<BrokerOrder, BrokerError>> {
        Box::pin(async move {
            if !order_id.starts_with(GTT_PREFIX) {
                return self.status(order_id).await;
            }
            if let Some(child) = self.vanished.placed(order_id) {
                let placed = self.status(&child).await?;
                return Ok(self.vanished.verdict(order_id, order, Some(placed)));
            }
            match self.status(order_id).await {
                Err(BrokerError::Rejected(_) | BrokerError::Protocol(_)) => {}
                read => return read,
            }
            let book = self.book_by_key().await?;
            let child = match super::gtt::placed_by(&book, order, claimed) {
                Some(c) => Some(self.status(&c.order_id).await?),
                None => None,
            };
            Ok(self.vanished.verdict(order_id, order, child))
        })
    }

    fn cancel<'a>(&'a self, order_id: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            if let Some(id) = order_id.strip_prefix(GTT_PREFIX) {
                Self::read(
                    http::send(
                        self.auth(
                            self.client
                                .delete(format!("{}/v3/order/gtt/cancel", self.base)),
                        )
                        .json(&json!({ "gtt_order_id": id })),
                    )
                    .await?,
                )?;
                self.vanished.cancelled(order_id);
                return Ok(());
            }
            Self::read(
                http::send(
                    self.auth(
                        self.client
                            .delete(format!("{}/v3/order/cancel", self.base))
                            .query(&[("order_id", order_id)]),
                    ),
                )
                .await?,
            )?;
            Ok(())
        })
    }

    fn set_token(&self, token: Secret) {
        self.access_token.set(token);
    }

    /// `GET /v2/portfolio/short-term-positions`.
    /// `POST /v2/charges/margin` (`final_margin`, after hedge benefits) against
    /// `GET /v2/user/get-funds-and-margin?segment=SEC` (`equity.available_margin`).
    /// `POST /v2/charges/margin` with every order as an instrument (its `final_margin` nets
    /// a basket's hedges), against the funds' free equity margin.
    fn margin<'a>(
        &'a self,
        orders: &'a [OrderRequest],
    ) -> BoxFuture<'a, Result<Option<super::Margin>, BrokerError>> {
        Box::pin(async move {
            let mut instruments = Vec::with_capacity(orders.len());
            for order in orders {
                let token = order.token.clone().ok_or_else(|| {
                    BrokerError::Rejected(format!("{}: no instrument key", order.symbol))
                })?;
                let qty =
                    rust_decimal::prelude::ToPrimitive::to_u64(&order.qty).ok_or_else(|| {
                        BrokerError::Rejected(format!("quantity {} cannot be sent", order.qty))
                    })?;
                let mut instrument = json!({ "instrument_key": token, "quantity": qty, "transaction_type": order.action(), "product": if order.product == Product::Mis { "I" } else { "D" } });
                if let Some(price) = order
                    .reference_price
                    .and_then(|p| rust_decimal::prelude::ToPrimitive::to_f64(&p))
                {
                    instrument["price"] = json!(price);
                }
                instruments.push(instrument);
            }
            let data = Self::read(
                http::send(
                    self.auth(self.client.post(format!("{}/v2/charges/margin", self.base)))
                        .json(&json!({ "instruments": instruments })),
                )
                .await?,
            )?;
            let required = super::number(&data["final_margin"])
                .or_else(|| super::number(&data["required_margin"]))
                .ok_or_else(|| {
                    BrokerError::Protocol("no final_margin in the margin answer".into())
                })?;
            let funds = Self::read(
                http::send(self.auth(self.client.get(format!(
                    "{}/v2/user/get-funds-and-margin?segment=SEC",
                    self.base
                ))))
                .await?,
            )?;
            let available =
                super::number(&funds["equity"]["available_margin"]).ok_or_else(|| {
                    BrokerError::Protocol("no equity.available_margin in the funds".into())
                })?;
            Ok(Some(super::Margin {
                required,
                available,
            }))
        })
    }

    fn modify<'a>(
        &'a self,
        order_id: &'a str,
        order: &'a OrderRequest,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            if let Some(id) = order_id.strip_prefix(GTT_PREFIX) {
                let mut body = Self::gtt_body(order)?;
                body["gtt_order_id"] = json!(id);
                if let Some(b) = body.as_object_mut() {
                    b.remove("product");
                }
                Self::read(
                    http::send(
                        self.auth(
                            self.client
                                .put(format!("{}/v3/order/gtt/modify", self.base)),
                        )
                        .json(&body),
                    )
                    .await?,
                )?;
                return Ok(());
            }
            let mut body = Self::terms(order)?;
            body["order_id"] = json!(order_id);
            Self::read(
                http::send(
                    Self::algo(
                        self.auth(self.client.put(format!("{}/v3/order/modify", self.base))),
                        order,
                    )
                    .json(&body),
                )
                .await?,
            )?;
            Ok(())
        })
    }

    fn positions(
        &self,
    ) -> BoxFuture<'_, Result<Vec<(String, rust_decimal::Decimal)>, BrokerError>> {
        Box::pin(async move {
            let data = Self::read(
                http::send(
                    self.auth(
                        self.client
                            .get(format!("{}/v2/portfolio/short-term-positions", self.base)),
                    ),
                )
                .await?,
            )?;
            let rows = data
                .as_array()
                .ok_or_else(|| BrokerError::Protocol("positions are not a list".into()))?;
            super::position_rows(rows, &["trading_symbol", "tradingsymbol"])
        })
    }
}
