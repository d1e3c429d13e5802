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
            let form = [
                ("tradingsymbol", order.symbol.clone()),
                ("exchange", order.exchange().to_owned()),
                ("transaction_type", order.action().to_owned()),
                ("order_type", "MARKET".to_owned()),
                ("quantity", order.qty.normalize().to_string()),
                ("product", order.product_code().to_owned()),
                ("validity", "DAY".to_owned()),
                // -1: Kite's automatic protection; 1..100: that percentage. 0 is refused by Kite.
                ("market_protection", if order.protection_pct > rust_decimal::Decimal::ZERO { order.protection_pct.normalize().to_string() } else { "-1".to_owned() }),
                ("tag", order.client_order_id.clone()),
            ];
            let data = Self::read(http::send(self.auth(self.client.post(format!("{}/orders/regular", self.base))).form(&form)).await?)?;
            text(&data["order_id"]).ok_or_else(|| BrokerError::Protocol("no order_id in the answer".into()))
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
    fn positions(&self) -> BoxFuture<'_, Result<Vec<(String, rust_decimal::Decimal)>, BrokerError>> {
        Box::pin(async move {
            let data = Self::read(http::send(self.auth(self.client.get(format!("{}/portfolio/positions", self.base)))).await?)?;
            let rows = data["net"].as_array().ok_or_else(|| BrokerError::Protocol("positions without a net list".into()))?;
            Ok(rows.iter().filter_map(|p| Some((p["tradingsymbol"].as_str()?.to_owned(), super::number(&p["quantity"])?))).collect())
        })
    }
}
