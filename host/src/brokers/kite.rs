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
pub use super::gtt::GTT_PREFIX;
/// An order Kite sliced (`autoslice`) as the journal keeps it: `slice:<parent>:<child>,<child>…`,
/// with `!<n>` after the children when Kite refused n of the slices. The router handles it as
/// one order; the adapter reads and cancels its children.
pub const SLICED_PREFIX: &str = "slice:";
/// How far beyond its trigger a stop GTT's limit sits when the account gives no protection.
const GTT_DEFAULT_PROTECTION_PCT: u32 = 2;

impl Kite {
    /// An adapter for `base` (e.g. [`DEFAULT_URL`]).
    ///
    /// # Errors
    /// When the HTTP client cannot start.
    pub fn new(
        base: &str,
        api_key: Secret,
        access_token: Secret,
        timeout: Duration,
    ) -> Result<Self, BrokerError> {
        Ok(Self {
            client: http::client(timeout)?,
            base: http::base(base),
            api_key,
            access_token: TokenCell::new(access_token),
        })
    }

    fn auth(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let token = self.access_token.get();
        r.header("X-Kite-Version", "3").header(
            "Authorization",
            format!("token {}:{}", self.api_key.expose(), token.expose()),
        )
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
        if matches!(
            order.kind,
            super::OrderKind::Market | super::OrderKind::StopMarket { .. }
        ) {
            // -1: Kite's automatic protection; 1..100: that percentage. 0 is refused by Kite.
            form.push((
                "market_protection",
                if order.protection_pct > rust_decimal::Decimal::ZERO {
                    order.protection_pct.normalize().to_string()
                } else {
                    "-1".to_owned()
                },
            ));
        }
        form
    }

    fn read(answer: Answer) -> Result<Value, BrokerError> {
        if answer.status.is_success() && answer.body["status"] == "success" {
            return Ok(answer.body["data"].clone());
        }
        let message = http::message(&answer);
        // Kite's caps on one order's modifications (25) and on a day's order requests come
        // as a NetworkException, but asking again cannot pass: they are refusals.
        if message.starts_with("Maximum allowed order") {
            return Err(BrokerError::Rejected(message));
        }
        match (answer.body["error_type"].as_str(), answer.status.as_u16()) {
            (Some("TokenException"), _) | (None, 403) => Err(BrokerError::Token(message)),
            (
                Some(
                    "InputException"
                    | "OrderException"
                    | "MarginException"
                    | "HoldingException"
                    | "PermissionException",
                ),
                _,
            ) => Err(BrokerError::Rejected(message)),
            (Some("NetworkException" | "DataException" | "GeneralException"), _) => {
                Err(BrokerError::Unavailable(message))
            }
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
    pub async fn quotes(
        &self,
        instruments: &[String],
    ) -> Result<serde_json::Map<String, Value>, BrokerError> {
        let mut out = serde_json::Map::new();
        for (i, chunk) in instruments.chunks(QUOTES_PER_CALL).enumerate() {
            if i > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let query: Vec<(&str, &str)> = chunk.iter().map(|c| ("i", c.as_str())).collect();
            let data = Self::read(
                http::send(
                    self.auth(
                        self.client
                            .get(format!("{}/quote", self.base))
                            .query(&query),
                    ),
                )
                .await?,
            )?;
            match data {
                Value::Object(quotes) => out.extend(quotes),
                Value::Null => {}
                other => {
                    return Err(BrokerError::Protocol(format!(
                        "quotes: data is {other}, not an object"
                    )));
                }
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
    pub async fn option_chain(
        &self,
        spot: &str,
        contracts: &[super::instruments::OptionContract],
    ) -> Result<
        (
            rust_decimal::Decimal,
            Vec<crate::market::StrikeRow>,
            Vec<(rust_decimal::Decimal, bool, String)>,
        ),
        BrokerError,
    > {
        use crate::market::{OptionLeg, StrikeRow};
        let mut asked: Vec<String> = contracts
            .iter()
            .map(|c| format!("NFO:{}", c.symbol))
            .collect();
        asked.push(spot.to_owned());
        let quotes = self.quotes(&asked).await?;
        let price = |v: &Value, what: &str| {
            super::number(v)
                .map(|d| d.round_dp(4).normalize())
                .filter(|d| *d >= rust_decimal::Decimal::ZERO)
                .ok_or_else(|| {
                    BrokerError::Protocol(format!("quote of {what}: last_price {v} is not a price"))
                })
        };
        let spot_price = quotes
            .get(spot)
            .map(|q| price(&q["last_price"], spot))
            .transpose()?
            .ok_or_else(|| BrokerError::Protocol(format!("no quote for {spot}")))?;
        let whole = |v: &Value| {
            v.as_f64()
                .filter(|n| n.is_finite() && *n >= 0.0)
                .map_or(0, |n| n as u64)
        };
        let mut rows: Vec<StrikeRow> = Vec::new();
        let mut tokens = Vec::with_capacity(contracts.len());
        for (c, key) in contracts.iter().zip(&asked) {
            tokens.push((c.strike, c.call, c.token.clone()));
            let leg = match quotes.get(key) {
                Some(q) => Some(OptionLeg {
                    last: price(&q["last_price"], key)?,
                    oi: whole(&q["oi"]),
                    volume: whole(&q["volume"]),
                    greeks: None,
                }),
                None => None,
            };
            let row = match rows.iter_mut().find(|r| r.strike == c.strike) {
                Some(row) => row,
                None => {
                    rows.push(StrikeRow {
                        strike: c.strike,
                        ce: None,
                        pe: None,
                    });
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
    pub async fn minute_candles(
        &self,
        instrument_token: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<crate::market::Bar>, BrokerError> {
        let stamp = |ts: i64| {
            crate::domain::time::format_iso_ist(ts)
                .get(0..19)
                .unwrap_or_default()
                .replace('T', " ")
        };
        let last = to.saturating_sub(60_000).max(from);
        let url = format!(
            "{}/instruments/historical/{}/minute",
            self.base,
            http::path_segment(instrument_token)
        );
        let data = Self::read(
            http::send(self.auth(self.client.get(url).query(&[
                ("from", stamp(from)),
                ("to", stamp(last)),
                ("oi", "1".to_owned()),
            ])))
            .await?,
        )?;
        let rows = data["candles"]
            .as_array()
            .ok_or_else(|| BrokerError::Protocol("historical data without candles".into()))?;
        super::candle_rows(
            &format!("kite candle of {instrument_token}"),
            rows,
            from,
            to,
        )
    }

    pub(crate) fn order(v: &Value) -> Option<BrokerOrder> {
        BrokerOrder::from_tagged(v, "tradingsymbol")
    }

    /// The form of a single-leg GTT for a stop `order`: the condition at its trigger, and a LIMIT
    /// order beyond the trigger by the account's market protection (a GTT places only limits).
    fn gtt_form(order: &OrderRequest) -> Result<Vec<(&'static str, String)>, BrokerError> {
        use rust_decimal::Decimal;
        let trigger = order.kind.trigger().ok_or_else(|| {
            BrokerError::Rejected(format!(
                "{}: a GTT needs a trigger price",
                order.client_order_id
            ))
        })?;
        let limit = match order.kind {
            super::OrderKind::StopLimit { price, .. } => price,
            _ => {
                let pct = if order.protection_pct > Decimal::ZERO {
                    order.protection_pct
                } else {
                    Decimal::from(GTT_DEFAULT_PROTECTION_PCT)
                };
                let away = trigger * pct / Decimal::from(100);
                let raw = if order.side == super::OrderSide::Sell {
                    trigger - away
                } else {
                    trigger + away
                };
                // Away from the market to the tick: the limit never narrows the protection.
                let tick = crate::domain::money::tick_of(&order.symbol);
                crate::domain::money::on_grid(raw, tick, order.side == super::OrderSide::Buy)
                    .max(tick)
            }
        };
        let qty = rust_decimal::prelude::ToPrimitive::to_u64(&order.qty).ok_or_else(|| {
            BrokerError::Rejected(format!("quantity {} cannot be sent", order.qty))
        })?;
        let number = |d: Decimal| {
            serde_json::from_str::<Value>(&d.normalize().to_string()).unwrap_or(Value::Null)
        };
        // Kite reads the trigger's direction from `last_price`: on the far side of the trigger
        // from where the stop fires, whatever the (perhaps stale) price the order was decided at.
        let tick = crate::domain::money::tick_of(&order.symbol);
        let last = match (order.side, order.reference_price) {
            (super::OrderSide::Sell, Some(p)) => p.max(trigger + tick),
            (super::OrderSide::Sell, None) => trigger + tick,
            (super::OrderSide::Buy, Some(p)) => p.min(trigger - tick).max(tick),
            (super::OrderSide::Buy, None) => (trigger - tick).max(tick),
        };
        let condition = serde_json::json!({ "exchange": order.exchange(), "tradingsymbol": order.symbol, "trigger_values": [number(trigger)], "last_price": number(last) });
        let orders = serde_json::json!([{
            "exchange": order.exchange(), "tradingsymbol": order.symbol, "transaction_type": order.action(), "quantity": qty,
            "order_type": "LIMIT", "product": order.product_code(), "price": number(limit),
        }]);
        Ok(vec![
            ("type", "single".to_owned()),
            ("condition", condition.to_string()),
            ("orders", orders.to_string()),
        ])
    }

    /// An order Kite sliced, as one order: the units its slices filled at their average
    /// price; complete when every slice is and none was refused; when all are done
    /// otherwise, cancelled (what filled stands) or, nothing filled and all refused, rejected.
    async fn sliced_status(&self, id: &str) -> Result<BrokerOrder, BrokerError> {
        use super::BrokerStatus::{Cancelled, Complete, Open, Rejected};
        let (children, refused) = parse_sliced(id)
            .ok_or_else(|| BrokerError::Protocol(format!("{id}: not a sliced order's id")))?;
        let mut parts = Vec::with_capacity(children.len());
        for child in &children {
            parts.push(self.status(child).await?);
        }
        let first = parts
            .first()
            .cloned()
            .ok_or_else(|| BrokerError::Protocol(format!("{id}: no slices")))?;
        let (filled, average) = slices_filled(&parts);
        let done = parts.iter().all(|p| p.status != Open);
        let status = if !done {
            Open
        } else if refused == 0 && parts.iter().all(|p| p.status == Complete) {
            Complete
        } else if filled.is_zero() && parts.iter().all(|p| p.status == Rejected) {
            Rejected
        } else {
            Cancelled
        };
        let messages: Vec<String> = parts
            .iter()
            .filter(|p| !p.message.is_empty())
            .map(|p| format!("{}: {}", p.order_id, p.message))
            .collect();
        let refused_note = if refused > 0 {
            format!("{refused} slice(s) refused by Kite; ")
        } else {
            String::new()
        };
        Ok(BrokerOrder {
            order_id: id.to_owned(),
            tag: first.tag.clone(),
            status,
            filled_qty: filled,
            average_price: average,
            message: format!("{refused_note}{}", messages.join("; "))
                .trim_end_matches("; ")
                .to_owned(),
            symbol: first.symbol.clone(),
            side: first.side,
            qty: parts.iter().map(|p| p.qty).sum(),
            placed_at: first.placed_at,
        })
    }

    /// A GTT as the router sees an order: working while active; once triggered, the order it
    /// placed (its fills); deleted, cancelled or expired: cancelled; rejected or disabled, or an
    /// order that failed to go: rejected with Kite's reason.
    async fn gtt_status(&self, id: &str, v: &Value) -> Result<BrokerOrder, BrokerError> {
        let leg = &v["orders"][0];
        let mut o = BrokerOrder {
            order_id: id.to_owned(),
            tag: None,
            status: super::BrokerStatus::Open,
            filled_qty: rust_decimal::Decimal::ZERO,
            average_price: None,
            message: String::new(),
            symbol: v["condition"]["tradingsymbol"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            side: leg["transaction_type"]
                .as_str()
                .and_then(|s| super::OrderSide::parse(&s.to_ascii_lowercase())),
            qty: super::number(&leg["quantity"]).unwrap_or_default(),
            placed_at: v["created_at"].as_str().and_then(super::ist_timestamp),
        };
        match v["status"].as_str().unwrap_or_default() {
            "triggered" => {
                let result = &leg["result"]["order_result"];
                match (
                    result["status"].as_str(),
                    text(&result["order_id"]).filter(|i| !i.is_empty()),
                ) {
                    (_, Some(order_id)) => {
                        let placed = self.status(&order_id).await?;
                        o.status = placed.status;
                        o.filled_qty = placed.filled_qty;
                        o.average_price = placed.average_price;
                        o.message = format!("GTT triggered: order {order_id} {}", placed.message)
                            .trim_end()
                            .to_owned();
                    }
                    (Some("failed"), None) => {
                        o.status = super::BrokerStatus::Rejected;
                        o.message = format!(
                            "GTT triggered, its order failed: {}",
                            result["rejection_reason"]
                                .as_str()
                                .unwrap_or("no reason given")
                        );
                    }
                    // Triggered, its order on its way.
                    _ => {}
                }
            }
            "cancelled" | "deleted" | "expired" => {
                o.status = super::BrokerStatus::Cancelled;
                o.message = format!("GTT {}", v["status"].as_str().unwrap_or_default());
            }
            "rejected" | "disabled" => {
                o.status = super::BrokerStatus::Rejected;
                o.message = format!("GTT {}", v["status"].as_str().unwrap_or_default());
            }
            _ => {}
        }
        Ok(o)
    }
}

impl Broker for Kite {
    fn name(&self) -> &'static str {
        "kite"
    }

    fn check_session(&self) -> BoxFuture<'_, Result<String, BrokerError>> {
        Box::pin(async move {
            let data = Self::read(
                http::send(self.auth(self.client.get(format!("{}/user/profile", self.base))))
                    .await?,
            )?;
            Ok(data["user_id"].as_str().unwrap_or("?").to_owned())
        })
    }

    fn place<'a>(&'a self, order: &'a OrderRequest) -> BoxFuture<'a, Result<String, BrokerError>> {
        Box::pin(async move {
            if order.validity == super::Validity::Gtt {
                // `POST /gtt/triggers`: a standing trigger (Kite's GTTs take no tag; the journal keeps its id).
                let data = Self::read(
                    http::send(
                        self.auth(self.client.post(format!("{}/gtt/triggers", self.base)))
                            .form(&Self::gtt_form(order)?),
                    )
                    .await?,
                )?;
                return text(&data["trigger_id"])
                    .map(|id| format!("{GTT_PREFIX}{id}"))
                    .ok_or_else(|| BrokerError::Protocol("no trigger_id in the answer".into()));
            }
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
            if order.autoslice {
                form.push(("autoslice", "true".to_owned()));
            }
            let data = Self::read(
                http::send(
                    self.auth(self.client.post(format!("{}/orders/regular", self.base)))
                        .form(&form),
                )
                .await?,
            )?;
            let parent = text(&data["order_id"])
                .ok_or_else(|| BrokerError::Protocol("no order_id in the answer".into()))?;
            match data["children"].as_array() {
                // Sliced by Kite: each child placed (its order_id) or refused (its error).
                Some(children) if order.autoslice => {
                    let placed: Vec<String> = children
                        .iter()
                        .filter_map(|c| text(&c["order_id"]))
                        .filter(|id| !id.is_empty())
                        .collect();
                    let refused: Vec<&Value> = children
                        .iter()
                        .filter(|c| text(&c["order_id"]).is_none_or(|id| id.is_empty()))
                        .collect();
                    if placed.is_empty() {
                        let why = refused.first().map_or_else(
                            || "no slice placed".to_owned(),
                            |c| {
                                c["error"]["message"]
                                    .as_str()
                                    .or(c["error"].as_str())
                                    .unwrap_or("no slice placed")
                                    .to_owned()
                            },
                        );
                        return Err(BrokerError::Rejected(why));
                    }
                    Ok(sliced_id(&parent, &placed, refused.len()))
                }
                _ => Ok(parent),
            }
        })
    }

    fn modify<'a>(
        &'a self,
        order_id: &'a str,
        order: &'a OrderRequest,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            if order_id.starts_with(SLICED_PREFIX) {
                return Err(BrokerError::Rejected(
                    "an order Kite sliced cannot be modified: cancel it and place it again".into(),
                ));
            }
            if let Some(id) = order_id.strip_prefix(GTT_PREFIX) {
                let url = format!("{}/gtt/triggers/{}", self.base, http::path_segment(id));
                Self::read(
                    http::send(
                        self.auth(self.client.put(url))
                            .form(&Self::gtt_form(order)?),
                    )
                    .await?,
                )?;
                return Ok(());
            }
            Self::read(
                http::send(
                    self.auth(
                        self.client
                            .put(format!("{}/orders/regular/{order_id}", self.base)),
                    )
                    .form(&Self::terms(order)),
                )
                .await?,
            )?;
            Ok(())
        })
    }

    fn find<'a>(
        &'a self,
        order: &'a OrderRequest,
        claimed: &'a HashSet<String>,
    ) -> BoxFuture<'a, Result<Option<BrokerOrder>, BrokerError>> {
        Box::pin(async move {
            if order.validity == super::Validity::Gtt {
                // GTTs carry no tag: ours is the unclaimed one for this symbol, side, quantity and
                // trigger placed no earlier than we sent it.
                let data = Self::read(
                    http::send(self.auth(self.client.get(format!("{}/gtt/triggers", self.base))))
                        .await?,
                )?;
                let triggers = data
                    .as_array()
                    .ok_or_else(|| BrokerError::Protocol("the GTT book is not a list".into()))?;
                let since = order.submitted_at.map(|t| t - 1_000);
                for v in triggers {
                    let Some(id) = text(&v["id"]).map(|id| format!("{GTT_PREFIX}{id}")) else {
                        continue;
                    };
                    let leg = &v["orders"][0];
                    let same = v["condition"]["tradingsymbol"].as_str()
                        == Some(order.symbol.as_str())
                        && leg["transaction_type"].as_str() == Some(order.action())
                        && super::number(&leg["quantity"]) == Some(order.qty)
                        && v["condition"]["trigger_values"]
                            .get(0)
                            .and_then(super::number)
                            == order.kind.trigger()
                        && since.is_none_or(|t| {
                            v["created_at"]
                                .as_str()
                                .and_then(super::ist_timestamp)
                                .is_some_and(|at| at >= t)
                        });
                    if same && !claimed.contains(&id) {
                        return self.gtt_status(&id, v).await.map(Some);
                    }
                }
                return Ok(None);
            }
            let data = Self::read(
                http::send(self.auth(self.client.get(format!("{}/orders", self.base)))).await?,
            )?;
            let orders = data
                .as_array()
                .ok_or_else(|| BrokerError::Protocol("the order book is not a list".into()))?;
            let ours = |v: &&Value| {
                v["tag"].as_str() == Some(order.client_order_id.as_str())
                    || v["tags"].as_array().is_some_and(|t| {
                        t.iter()
                            .any(|t| t.as_str() == Some(order.client_order_id.as_str()))
                    })
            };
            if order.autoslice {
                // Kite's slices each carry our tag: together, they are our order.
                let children: Vec<String> = orders
                    .iter()
                    .filter(ours)
                    .filter_map(Self::order)
                    .map(|o| o.order_id)
                    .collect();
                if children.is_empty() {
                    return Ok(None);
                }
                return self
                    .sliced_status(&sliced_id("?", &children, 0))
                    .await
                    .map(Some);
            }
            super::our_row(
                orders.iter().find(ours),
                &order.client_order_id,
                Self::order,
            )
        })
    }

    fn status<'a>(&'a self, order_id: &'a str) -> BoxFuture<'a, Result<BrokerOrder, BrokerError>> {
        Box::pin(async move {
            if let Some(id) = order_id.strip_prefix(GTT_PREFIX) {
                let data = Self::read(
                    http::send(self.auth(self.client.get(format!(
                        "{}/gtt/triggers/{}",
                        self.base,
                        http::path_segment(id)
                    ))))
                    .await?,
                )?;
                return self.gtt_status(order_id, &data).await;
            }
            if order_id.starts_with(SLICED_PREFIX) {
                return self.sliced_status(order_id).await;
            }
            let data = Self::read(
                http::send(self.auth(self.client.get(format!("{}/orders/{order_id}", self.base))))
                    .await?,
            )?;
            // The order's history, oldest first: its state is the last entry.
            data.as_array()
                .and_then(|h| h.last())
                .and_then(Self::order)
                .ok_or_else(|| BrokerError::Protocol(format!("order {order_id}: empty history")))
        })
    }

    fn cancel<'a>(&'a self, order_id: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            if let Some(id) = order_id.strip_prefix(GTT_PREFIX) {
                Self::read(
                    http::send(self.auth(self.client.delete(format!(
                        "{}/gtt/triggers/{}",
                        self.base,
                        http::path_segment(id)
                    ))))
                    .await?,
                )?;
                return Ok(());
            }
            if let Some((children, _)) = parse_sliced(order_id) {
                // Every slice still working is cancelled; the filled ones stand.
                for child in children {
                    if self.status(child).await?.status == super::BrokerStatus::Open {
                        Self::read(
                            http::send(self.auth(self.client.delete(format!(
                                "{}/orders/regular/{}",
                                self.base,
                                http::path_segment(child)
                            ))))
                            .await?,
                        )?;
                    }
                }
                return Ok(());
            }
            Self::read(
                http::send(
                    self.auth(
                        self.client
                            .delete(format!("{}/orders/regular/{order_id}", self.base)),
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

    /// `GET /portfolio/positions`: the `net` positions.
    /// `POST /margins/orders` (the order's `total`), or for a basket `POST /margins/basket`
    /// with the positions considered (its `final.total`, hedges netted), against
    /// `GET /user/margins/equity` (`net`).
    fn margin<'a>(
        &'a self,
        orders: &'a [OrderRequest],
    ) -> BoxFuture<'a, Result<Option<super::Margin>, BrokerError>> {
        Box::pin(async move {
            let mut body = Vec::with_capacity(orders.len());
            let float = |d: rust_decimal::Decimal| rust_decimal::prelude::ToPrimitive::to_f64(&d);
            for order in orders {
                // The order as it will go: its own type and prices (a limit at its limit, a
                // stop at its trigger), a market order at the price it was decided at.
                let price = order
                    .kind
                    .price()
                    .or(match order.kind {
                        super::OrderKind::Market => order.reference_price,
                        _ => None,
                    })
                    .and_then(float)
                    .unwrap_or(0.0);
                let trigger = order.kind.trigger().and_then(float).unwrap_or(0.0);
                let qty =
                    rust_decimal::prelude::ToPrimitive::to_u64(&order.qty).ok_or_else(|| {
                        BrokerError::Rejected(format!("quantity {} cannot be sent", order.qty))
                    })?;
                body.push(serde_json::json!({
                    "exchange": order.exchange(), "tradingsymbol": order.symbol, "transaction_type": order.action(), "variety": "regular",
                    "product": order.product_code(), "order_type": order.kind.code(), "quantity": qty, "price": price, "trigger_price": trigger,
                }));
            }
            let required = if orders.len() > 1 {
                let url = format!("{}/margins/basket", self.base);
                let data = Self::read(
                    http::send(
                        self.auth(
                            self.client
                                .post(url)
                                .query(&[("consider_positions", "true")]),
                        )
                        .json(&body),
                    )
                    .await?,
                )?;
                super::number(&data["final"]["total"]).ok_or_else(|| {
                    BrokerError::Protocol("no final.total in the basket margins".into())
                })?
            } else {
                let data = Self::read(
                    http::send(
                        self.auth(self.client.post(format!("{}/margins/orders", self.base)))
                            .json(&body),
                    )
                    .await?,
                )?;
                data.as_array()
                    .map(|rows| {
                        rows.iter()
                            .filter_map(|r| super::number(&r["total"]))
                            .sum::<rust_decimal::Decimal>()
                    })
                    .ok_or_else(|| BrokerError::Protocol("order margins are not a list".into()))?
            };
            let funds = Self::read(
                http::send(
                    self.auth(
                        self.client
                            .get(format!("{}/user/margins/equity", self.base)),
                    ),
                )
                .await?,
            )?;
            let available = super::number(&funds["net"])
                .ok_or_else(|| BrokerError::Protocol("no net in the equity margins".into()))?;
            Ok(Some(super::Margin {
                required,
                available,
            }))
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
                            .get(format!("{}/portfolio/positions", self.base)),
                    ),
                )
                .await?,
            )?;
            let rows = data["net"]
                .as_array()
                .ok_or_else(|| BrokerError::Protocol("positions without a net list".into()))?;
            super::position_rows(rows, &["tradingsymbol"])
        })
    }
}

/// The journal's id of an order Kite sliced into `children` (`refused` slices not placed).
fn sliced_id(parent: &str, children: &[String], refused: usize) -> String {
    let mut id = format!("{SLICED_PREFIX}{parent}:{}", children.join(","));
    if refused > 0 {
        id.push_str(&format!("!{refused}"));
    }
    id
}

/// The children and the count of refused slices of a [`sliced_id`].
/// What Kite's slices of one order filled together, and at what average: `None` while any
/// slice with fills has no average yet (the order is read again, never averaged in at 0).
fn slices_filled(parts: &[BrokerOrder]) -> (rust_decimal::Decimal, Option<rust_decimal::Decimal>) {
    let filled: rust_decimal::Decimal = parts.iter().map(|p| p.filled_qty).sum();
    let value: Option<rust_decimal::Decimal> = parts
        .iter()
        .filter(|p| !p.filled_qty.is_zero())
        .map(|p| p.average_price.and_then(|a| p.filled_qty.checked_mul(a)))
        .sum();
    let average = value
        .filter(|_| !filled.is_zero())
        .and_then(|v| v.checked_div(filled))
        .map(|p| p.round_dp(4).normalize());
    (filled, average)
}

fn parse_sliced(id: &str) -> Option<(Vec<&str>, usize)> {
    let rest = id.strip_prefix(SLICED_PREFIX)?;
    let (_, children) = rest.split_once(':')?;
    let (children, refused) = match children.split_once('!') {
        Some((c, n)) => (c, n.parse().ok()?),
        None => (children, 0),
    };
    let children: Vec<&str> = children.split(',').filter(|c| !c.is_empty()).collect();
    (!children.is_empty()).then_some((children, refused))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_slice_filled_without_an_average_leaves_the_order_unpriced() {
        use rust_decimal::Decimal;
        let slice = |filled: i64, average: Option<i64>| super::BrokerOrder {
            filled_qty: Decimal::from(filled),
            average_price: average.map(Decimal::from),
            ..super::BrokerOrder::working(
                "1",
                &crate::brokers::OrderRequest {
                    client_order_id: "th1".into(),
                    submitted_at: None,
                    symbol: "X".into(),
                    segment: crate::brokers::Segment::Derivative,
                    token: None,
                    side: crate::domain::OrderSide::Buy,
                    qty: Decimal::from(1800),
                    product: crate::domain::Product::Mis,
                    reference_price: None,
                    protection_pct: Decimal::ONE,
                    algo_id: None,
                    kind: crate::brokers::OrderKind::Market,
                    validity: crate::brokers::Validity::Day,
                    autoslice: true,
                },
            )
        };
        assert_eq!(
            super::slices_filled(&[
                slice(1800, Some(100)),
                slice(900, Some(103)),
                slice(0, None)
            ]),
            (Decimal::from(2700), Some(Decimal::from(101)))
        );
        assert_eq!(
            super::slices_filled(&[slice(1800, Some(100)), slice(900, None)]),
            (Decimal::from(2700), None),
            "never averaged in at 0"
        );
    }

    #[test]
    fn a_sliced_orders_id_names_its_children_and_its_refused_slices() {
        let id = super::sliced_id(
            "250408000000001",
            &["250408000000002".into(), "250408000000003".into()],
            1,
        );
        assert_eq!(
            id,
            "slice:250408000000001:250408000000002,250408000000003!1"
        );
        assert_eq!(
            super::parse_sliced(&id),
            Some((vec!["250408000000002", "250408000000003"], 1))
        );
        assert_eq!(super::parse_sliced("slice:1:"), None);
        assert_eq!(super::parse_sliced("gtt:5"), None);
    }
}
