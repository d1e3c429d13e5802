//! A strategy whose entry is the order type its params name, for the tests of
//! order types through the whole path (contract 1.1 → bus → order manager → venue).
//!
//! Params: `order` (`market`, `limit`, `stop`, `stop-limit`), `offset` (how far from
//! the entry bar's close the price is: a buy limit below it, a buy stop above it),
//! `limit_gap` (a stop-limit's limit above its trigger), `validity` (`day`, `ioc`),
//! `side` (`buy`, `sell`), `entry_bar` (1-based bar of the entry, default 3) and
//! `exit_bar` (bar of an exit at the market, 0 for none).

use strategy_sdk::{Candle, ParamError, Params, Signals, Strategy};

/// The strategy.
pub struct OrderTypes {
    order: String,
    offset: f64,
    limit_gap: f64,
    ioc: bool,
    sell: bool,
    entry_bar: u64,
    exit_bar: u64,
    seen: u64,
}

impl Strategy for OrderTypes {
    fn new(params: &Params) -> Result<Self, ParamError> {
        let order: String = params.get("order", "limit".to_owned())?;
        if !matches!(order.as_str(), "market" | "limit" | "stop" | "stop-limit") {
            return Err(ParamError::new(
                "order",
                format!("{order:?}: expected market, limit, stop or stop-limit"),
            ));
        }
        let validity: String = params.get("validity", "day".to_owned())?;
        let side: String = params.get("side", "buy".to_owned())?;
        Ok(Self {
            order,
            offset: params.get("offset", 1.0)?,
            limit_gap: params.get("limit_gap", 0.5)?,
            ioc: validity == "ioc",
            sell: side == "sell",
            entry_bar: params.get("entry_bar", 3)?,
            exit_bar: params.get("exit_bar", 0)?,
            seen: 0,
        })
    }

    fn on_candle(&mut self, candle: &Candle<'_>, signals: &mut Signals) {
        self.seen += 1;
        if self.seen == self.exit_bar {
            signals.exit(candle.instrument, "exit at the market");
            return;
        }
        if self.seen != self.entry_bar {
            return;
        }
        // Away from the close in the direction that makes the order wait: a buy limit
        // below, a buy stop above (a sell's the other way).
        let toward = if self.sell { 1.0 } else { -1.0 };
        let close = candle.close;
        let reason = format!("{} entry", self.order);
        let s = if self.sell {
            signals.sell(candle.instrument, reason)
        } else {
            signals.buy(candle.instrument, reason)
        };
        let s = match self.order.as_str() {
            "limit" => s.limit(close + toward * self.offset),
            "stop" => s.stop(close - toward * self.offset),
            "stop-limit" => {
                let trigger = close - toward * self.offset;
                s.stop_limit(trigger, trigger - toward * self.limit_gap)
            }
            _ => s,
        };
        if self.ioc {
            s.ioc();
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        self.seen.to_le_bytes().to_vec()
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        let bytes: [u8; 8] = state
            .try_into()
            .map_err(|_| "expected 8 bytes".to_owned())?;
        self.seen = u64::from_le_bytes(bytes);
        Ok(())
    }
}

strategy_sdk::register_strategy!(OrderTypes);
