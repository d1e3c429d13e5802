//! Zerodha Kite Connect v3.
//!
//! Every request carries `X-Kite-Version: 3` and `Authorization: token
//! api_key:access_token`. Orders are form-encoded to `POST /orders/regular`,
//! with our client order id in `tag` (at most 20 characters, which ours are)
//! and `market_protection` on market orders (Kite refuses market orders
//! without it). Errors are `{"status":"error","message","error_type"}`:
//! `TokenException` (403) ends the session, `InputException` and
//! `OrderException` are refusals, `NetworkException` (503), `DataException`
//! (502) and `GeneralException` (500) leave the outcome unknown.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::Client;
use serde_json::Value;

use super::http::{self, Answer};
use super::{BoxFuture, Broker, BrokerError, BrokerOrder, OrderRequest, Secret, TokenCell, text};

/// The Kite Connect adapter.
/// `Debug` is derived: its credentials print as `Secret(***)`.
#[derive(Debug)]
pub struct Kite {
    client: Client,
    base: String,
    api_key: Secret,
    access_token: TokenCell,
}

/// Kite's production API.
pub const DEFAULT_URL: &str = "https://api.kite.trade";
/// Instruments per `GET /quote` call (Kite's limit).
pub const QUOTES_PER_CALL: usize = 500;
/// Kite's ticker address (`api_key` and `access_token` are added as query parameters).
pub const DEFAULT_WS_URL: &str = "wss://ws.kite.trade";

impl Kite {
    /// An adapter for `base` (e.g. [`DEFAULT_URL`]).
    ///
    /// # Errors
    /// When the HTTP client cannot start.
    pub fn new(base: &str, api_key: Secret, access_token: Secret, timeout: Duration) -> Result<Self, BrokerError> {
        Ok(Self { client: http::client(timeout)?, base: http::base(base), api_key, access_token: TokenCell::new(access_token) })
    }

    fn auth(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let token = self.access_token.get();
        r.header("X-Kite-Version", "3").header("Authorization", format!("token {}:{}", self.api_key.expose(), token.expose()))
    }

    /// Read an answer: `data` on success, the right error otherwise.
    /// What a placement and a modification share: type, quantity, product, validity,
    /// prices, and market protection for the orders that go at the market (MARKET, SL-M).
    fn terms(order: &OrderRequest) -> Vec<(&'static str, String)> {
        let mut form = vec![
            ("order_type", order.kind.code().to_owned()),
            ("quantity", order.qty.normalize().to_string()),
            ("product", order.product_code().to_owned()),
            ("validity", order.validity.code().to_owned()),
        ];
        if let Some(price) = order.kind.price() {
            form.push(("price", price.normalize().to_string()));
        }
        if let Some(trigger) = order.kind.trigger() {
            form.push(("trigger_price", trigger.normalize().to_string()));
        }
        if matches!(order.kind, super::OrderKind::Market | super::OrderKind::StopMarket { .. }) {
            // -1: Kite's automatic protection; 1..100: that percentage. 0 is refused by Kite.
            form.push(("market_protection", if order.protection_pct > rust_decimal::Decimal::ZERO { order.protection_pct.normalize().to_string() } else { "-1".to_owned() }));
        }
        form
    }

    fn read(answer: Answer) -> Result<Value, BrokerError> {
        if answer.status.is_success() && answer.body["status"] == "success" {
            return Ok(answer.body["data"].clone());
        }
        let message = http::message(&answer);
        match (answer.body["error_type"].as_str(), answer.status.as_u16()) {
            (Some("TokenException"), _) | (None, 403) => Err(BrokerError::Token(message)),
            (Some("InputException" | "OrderException" | "MarginException" | "HoldingException" | "PermissionException"), _) => Err(BrokerError::Rejected(message)),
            (Some("NetworkException" | "DataException" | "GeneralException"), _) => Err(BrokerError::Unavailable(message)),
            (_, 400..=499) => Err(BrokerError::Rejected(message)),
            (_, 500..=599) => Err(http::server_error(&answer)),
            _ => Err(BrokerError::Protocol(message)),
        }
    }

    /// Full market quotes, `GET /quote?i=EXCHANGE:SYMBOL&i=…`, at most [`QUOTES_PER_CALL`] a
    /// call and one call a second (Kite's documented limits): each instrument asked for that
    /// Kite has data for, keyed as asked (`NFO:NIFTY24MAR20800CE`). Unknown or expired
    /// instruments are simply absent, as in Kite's answer.
    ///
    /// # Errors
    /// The first call that fails.
    pub async fn quotes(&self, instruments: &[String]) -> Result<serde_json::Map<String, Value>, BrokerError> {
        let mut out = serde_json::Map::new();
        for (i, chunk) in instruments.chunks(QUOTES_PER_CALL).enumerate() {
            if i > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let query: Vec<(&str, &str)> = chunk.iter().map(|c| ("i", c.as_str())).collect();
            let data = Self::read(http::send(self.auth(self.client.get(format!("{}/quote", self.base)).query(&query))).await?)?;
            match data {
                Value::Object(quotes) => out.extend(quotes),
                Value::Null => {}
                other => return Err(BrokerError::Protocol(format!("quotes: data is {other}, not an object"))),
            }
        }
        Ok(out)
    }

    /// An option chain from quotes (Kite has no chain call): `spot` (`NSE:NIFTY 50`) and each
    /// of `contracts` (one expiry's, from the instrument master) quoted on `NFO`; per strike,
    /// each side's last price, OI and volume, a side Kite has no quote for left out; and each
    /// side's instrument token as `(strike, is_call, token)`.
    ///
    /// # Errors
    /// The broker's refusal, no quote for the spot, or a price that is not a number.
    pub async fn option_chain(&self, spot: &str, contracts: &[super::instruments::OptionContract]) -> Result<(rust_decimal::Decimal, Vec<crate::market::StrikeRow>, Vec<(rust_decimal::Decimal, bool, String)>), BrokerError> {
        use crate::market::{OptionLeg, StrikeRow};
        let mut asked: Vec<String> = contracts.iter().map(|c| format!("NFO:{}", c.symbol)).collect();
        asked.push(spot.to_owned());
        let quotes = self.quotes(&asked).await?;
        let price = |v: &Value, what: &str| {
            super::number(v).map(|d| d.round_dp(4).normalize()).filter(|d| *d >= rust_decimal::Decimal::ZERO).ok_or_else(|| BrokerError::Protocol(format!("quote of {what}: last_price {v} is not a price")))
        };
        let spot_price = quotes.get(spot).map(|q| price(&q["last_price"], spot)).transpose()?.ok_or_else(|| BrokerError::Protocol(format!("no quote for {spot}")))?;
        let whole = |v: &Value| v.as_f64().filter(|n| n.is_finite() && *n >= 0.0).map_or(0, |n| n as u64);
        let mut rows: Vec<StrikeRow> = Vec::new();
        let mut tokens = Vec::with_capacity(contracts.len());
        for (c, key) in contracts.iter().zip(&asked) {
            tokens.push((c.strike, c.call, c.token.clone()));
            let leg = match quotes.get(key) {
                Some(q) => Some(OptionLeg { last: price(&q["last_price"], key)?, oi: whole(&q["oi"]), volume: whole(&q["volume"]) }),
                None => None,
            };
            let row = match rows.iter_mut().find(|r| r.strike == c.strike) {
                Some(row) => row,
                None => {
                    rows.push(StrikeRow { strike: c.strike, ce: None, pe: None });
                    let last = rows.len() - 1;
                    &mut rows[last]
                }
            };
            if c.call {
                row.ce = leg;
            } else {
                row.pe = leg;
            }
        }
        rows.retain(|r| r.ce.is_some() || r.pe.is_some());
        rows.sort_by_key(|r| r.strike);
        Ok((spot_price, rows, tokens))
    }

    /// One-minute candles of `instrument_token` starting in `[from, to)` (ms), with OI:
    /// `GET /instruments/historical/:token/minute?from=…&to=…&oi=1` (IST `yyyy-mm-dd hh:mm:ss`,
    /// both ends inclusive; rows `[time, open, high, low, close, volume, oi]`).
    ///
    /// # Errors
    /// The broker's refusal, or a row that is not a candle.
    pub async fn minute_candles(&self, instrument_token: &str, from: i64, to: i64) -> Result<Vec<crate::market::Bar>, BrokerError> {
        let stamp = |ts: i64| crate::domain::time::format_iso_ist(ts).get(0..19).unwrap_or_default().replace('T', " ");
        let last = to.saturating_sub(60_000).max(from);
        let url = format!("{}/instruments/historical/{}/minute", self.base, http::path_segment(instrument_token));
        let data = Self::read(http::send(self.auth(self.client.get(url).query(&[("from", stamp(from)), ("to", stamp(last)), ("oi", "1".to_owned())]))).await?)?;
        let rows = data["candles"].as_array().ok_or_else(|| BrokerError::Protocol("historical data without candles".into()))?;
        super::candle_rows(&format!("kite candle of {instrument_token}"), rows, from, to)
    }

    pub(crate) fn order(v: &Value) -> Option<BrokerOrder> {
        BrokerOrder::from_tagged(v, "tradingsymbol")
    }
}

impl Broker for Kite {
    fn name(&self) -> &'static str {
        "kite"
    }

    fn check_session(&self) -> BoxFuture<'_, Result<String, BrokerError>> {
        Box::pin(async move {
            let data = Self::read(http::send(self.auth(self.client.get(format!("{}/user/profile", self.base)))).await?)?;
            Ok(data["user_id"].as_str().unwrap_or("?").to_owned())
        })
    }

    fn place<'a>(&'a self, order: &'a OrderRequest) -> BoxFuture<'a, Result<String, BrokerError>> {
        Box::pin(async move {
            let mut form = vec![
                ("tradingsymbol", order.symbol.clone()),
                ("exchange", order.exchange().to_owned()),
                ("transaction_type", order.action().to_owned()),
                ("tag", order.client_order_id.clone()),
            ];
            form.extend(Self::terms(order));
            // The regulator's algo framework: the exchange-approved id of the strategy (Kite Connect's `algo_id`).
            if let Some(id) = &order.algo_id {
                form.push(("algo_id", id.clone()));
            }
            let data = Self::read(http::send(self.auth(self.client.post(format!("{}/orders/regular", self.base))).form(&form)).await?)?;
            text(&data["order_id"]).ok_or_else(|| BrokerError::Protocol("no order_id in the answer".into()))
        })
    }

    fn modify<'a>(&'a self, order_id: &'a str, order: &'a OrderRequest) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            Self::read(http::send(self.auth(self.client.put(format!("{}/orders/regular/{order_id}", self.base))).form(&Self::terms(order))).await?)?;
            Ok(())
        })
    }

    fn find<'a>(&'a self, order: &'a OrderRequest, _claimed: &'a HashSet<String>) -> BoxFuture<'a, Result<Option<BrokerOrder>, BrokerError>> {
        Box::pin(async move {
            let data = Self::read(http::send(self.auth(self.client.get(format!("{}/orders", self.base)))).await?)?;
            let orders = data.as_array().ok_or_else(|| BrokerError::Protocol("the order book is not a list".into()))?;
            Ok(orders.iter().filter_map(Self::order).find(|o| o.tag.as_deref() == Some(order.client_order_id.as_str())))
        })
    }

    fn status<'a>(&'a self, order_id: &'a str) -> BoxFuture<'a, Result<BrokerOrder, BrokerError>> {
        Box::pin(async move {
            let data = Self::read(http::send(self.auth(self.client.get(format!("{}/orders/{order_id}", self.base)))).await?)?;
            // The order's history, oldest first: its state is the last entry.
            data.as_array().and_then(|h| h.last()).and_then(Self::order).ok_or_else(|| BrokerError::Protocol(format!("order {order_id}: empty history")))
        })
    }

    fn cancel<'a>(&'a self, order_id: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            Self::read(http::send(self.auth(self.client.delete(format!("{}/orders/regular/{order_id}", self.base)))).await?)?;
            Ok(())
        })
    }

    fn set_token(&self, token: Secret) {
        self.access_token.set(token);
    }

    /// `GET /portfolio/positions`: the `net` positions.
    /// `POST /margins/orders` (the order's `total`) against `GET /user/margins/equity` (`net`).
    fn margin<'a>(&'a self, order: &'a OrderRequest) -> BoxFuture<'a, Result<Option<super::Margin>, BrokerError>> {
        Box::pin(async move {
            let price = order.reference_price.and_then(|p| rust_decimal::prelude::ToPrimitive::to_f64(&p)).unwrap_or(0.0);
            let qty = rust_decimal::prelude::ToPrimitive::to_u64(&order.qty).ok_or_else(|| BrokerError::Rejected(format!("quantity {} cannot be sent", order.qty)))?;
            let body = serde_json::json!([{
                "exchange": order.exchange(), "tradingsymbol": order.symbol, "transaction_type": order.action(), "variety": "regular",
                "product": order.product_code(), "order_type": "MARKET", "quantity": qty, "price": price, "trigger_price": 0,
            }]);
            let data = Self::read(http::send(self.auth(self.client.post(format!("{}/margins/orders", self.base))).json(&body)).await?)?;
            let required = data.as_array().map(|rows| rows.iter().filter_map(|r| super::number(&r["total"])).sum::<rust_decimal::Decimal>()).ok_or_else(|| BrokerError::Protocol("order margins are not a list".into()))?;
            let funds = Self::read(http::send(self.auth(self.client.get(format!("{}/user/margins/equity", self.base)))).await?)?;
            let available = super::number(&funds["net"]).ok_or_else(|| BrokerError::Protocol("no net in the equity margins".into()))?;
            Ok(Some(super::Margin { required, available }))
        })
    }

    fn positions(&self) -> BoxFuture<'_, Result<Vec<(String, rust_decimal::Decimal)>, BrokerError>> {
        Box::pin(async move {
            let data = Self::read(http::send(self.auth(self.client.get(format!("{}/portfolio/positions", self.base)))).await?)?;
            let rows = data["net"].as_array().ok_or_else(|| BrokerError::Protocol("positions without a net list".into()))?;
            Ok(rows.iter().filter_map(|p| Some((p["tradingsymbol"].as_str()?.to_owned(), super::number(&p["quantity"])?))).collect())
        })
    }
}
