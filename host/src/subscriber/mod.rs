//! The subscriber: reads the signal log and the price stream ([`log`]),
//! merges them in event time ([`merge`]), and turns one signal into an order
//! intent per account, by the account's mode (long only, short only, both)
//! and sizing, naming each order with a client id derived from (signal,
//! account) so that the same signal can never become two orders for one
//! account. The order manager records the intents and the service
//! acknowledges the log entries once they are.

pub mod log;
pub mod merge;

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use sha2::{Digest, Sha256};

use crate::config::{Account, Sizing};
pub use crate::domain::{OrderSide, PositionMode};

/// What an account should do about a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intent {
    /// Direction.
    pub side: OrderSide,
    /// Units, > 0.
    pub qty: Decimal,
}

/// The client order id of `signal_id` for `account`: `th` and 18 hex digits
/// of SHA-256, 20 characters, within every broker's tag limit (Kite: 20).
#[must_use]
pub fn client_order_id(signal_id: &str, account: &str) -> String {
    let digest = Sha256::digest(format!("{signal_id}\u{1f}{account}").as_bytes());
    let hex: String = digest.iter().take(9).map(|b| format!("{b:02x}")).collect();
    format!("th{hex}")
}

/// What an account's sizing needs: its mode, its sizing rule and its capital.
/// An account gives them; a single-plugin backtest makes its own.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    /// Which positions signals may open.
    pub mode: PositionMode,
    /// How large a new position is.
    pub sizing: &'a Sizing,
    /// The capital the sizing is a share of.
    pub capital: Decimal,
    /// The lot of the contract traded, where the contract rules know it.
    pub lot: Option<u64>,
}

impl<'a> From<&'a Account> for Rules<'a> {
    fn from(a: &'a Account) -> Self {
        Self {
            mode: a.mode,
            sizing: &a.sizing,
            capital: a.capital,
            lot: None,
        }
    }
}

/// Why an account's sizing refuses a signal. Every one is permanent for that
/// signal (the same signal would be refused again): the decision records it
/// as a `sizing` refusal and nothing is retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizingError {
    /// Percent or risk sizing, and the signal carries no (positive) price.
    #[error("{0} sizing needs the signal's price")]
    NoPrice(&'static str),
    /// Risk sizing, and the signal carries no stop-loss.
    #[error("risk sizing needs a stop-loss on the signal")]
    NoStop,
    /// Risk sizing, and the stop-loss is the price itself.
    #[error("risk sizing: the stop-loss equals the price")]
    StopAtPrice,
    /// Lots sizing, and neither the contract rules nor the account know the lot.
    #[error(
        "lots sizing: the lot of {0} is not known; list its underlying's lots in [market] contracts or set lot_size"
    )]
    NoLot(String),
    /// The rule gives no whole unit.
    #[error("sizing gives {0} units; the capital is too small for this instrument")]
    TooSmall(Decimal),
    /// The numbers do not fit a decimal (an absurd price or stop on the signal).
    #[error("sizing cannot compute a size from a price of {price} and a stop of {stop:?}")]
    OutOfRange {
        /// The signal's price.
        price: Decimal,
        /// The signal's stop-loss.
        stop: Option<Decimal>,
    },
}

/// Units for a new position of `account` at `price`, with the signal's `stop`.
/// Checked arithmetic: a signal's numbers are input and never panic the order side.
///
/// # Errors
/// When the sizing rule cannot be applied (no price, no stop for risk sizing,
/// numbers out of range, or a size that rounds to zero).
pub fn position_size<'a>(
    account: impl Into<Rules<'a>>,
    price: Option<Decimal>,
    stop: Option<Decimal>,
) -> Result<Decimal, SizingError> {
    let account: Rules<'a> = account.into();
    let share = |percent: &Decimal, per_unit: Decimal| {
        account
            .capital
            .checked_mul(*percent)
            .and_then(|v| v.checked_div(Decimal::ONE_HUNDRED))
            .and_then(|v| v.checked_div(per_unit))
            .map(|q| q.floor())
    };
    let qty = match account.sizing {
        Sizing::Fixed { qty } => Decimal::from(*qty),
        Sizing::Lots { lots, lot_size } => {
            let lot = account
                .lot
                .or(*lot_size)
                .ok_or_else(|| SizingError::NoLot("this contract".into()))?;
            Decimal::from(lots.saturating_mul(lot))
        }
        Sizing::Percent { percent } => {
            let price = price
                .filter(|p| *p > Decimal::ZERO)
                .ok_or(SizingError::NoPrice("percent"))?;
            share(percent, price).ok_or(SizingError::OutOfRange { price, stop })?
        }
        Sizing::Risk { percent } => {
            let price = price
                .filter(|p| *p > Decimal::ZERO)
                .ok_or(SizingError::NoPrice("risk"))?;
            let stop_loss = stop.ok_or(SizingError::NoStop)?;
            let per_unit = price
                .checked_sub(stop_loss)
                .ok_or(SizingError::OutOfRange { price, stop })?
                .abs();
            if per_unit.is_zero() {
                return Err(SizingError::StopAtPrice);
            }
            share(percent, per_unit).ok_or(SizingError::OutOfRange { price, stop })?
        }
    };
    if qty <= Decimal::ZERO {
        return Err(SizingError::TooSmall(qty));
    }
    Ok(qty)
}

/// One account's share of a signal: its position before it (filled plus working orders,
/// signed) and what its sizing and mode make of the signal.
#[derive(Debug)]
pub struct Share<'a> {
    /// The account.
    pub account: &'a Account,
    /// Its effective position in the signal's instrument.
    pub effective: Decimal,
    /// The order its rules ask for (`None`: nothing to do), or why it cannot be sized.
    pub intent: Result<Option<Intent>, SizingError>,
}

/// Fan a signal out to its pipeline's accounts, in the configured order: each account
/// configured, not yet `decided` for this signal (a signal read again after a restart is
/// decided once per account), once, with its `position` and its intent. The order manager
/// then applies the risk rules to each share and records it.
///
/// # Errors
/// The first `decided` or `position` that fails.
pub fn fan_out<'a, E>(
    config: &'a crate::config::Config,
    pipeline: &crate::config::Pipeline,
    signal: &crate::bus::message::SignalMessage,
    mut decided: impl FnMut(&str) -> Result<bool, E>,
    mut position: impl FnMut(&str) -> Result<Decimal, E>,
) -> Result<Vec<Share<'a>>, E> {
    let mut shares: Vec<Share<'a>> = Vec::with_capacity(pipeline.accounts.len());
    for id in pipeline.accounts.iter().map(|a| a.get_ref()) {
        let Some(account) = config.account(id) else {
            continue;
        };
        if shares.iter().any(|s| s.account.id.get_ref() == id) || decided(id)? {
            continue;
        }
        let effective = position(id)?;
        // Lots are the contract's, by its expiry: they change between expiries.
        let rules = Rules {
            lot: account.lot_of(&config.market.contract_rules, &signal.instrument, signal.ts),
            ..Rules::from(account)
        };
        let intent = intent(
            rules,
            &signal.side,
            effective,
            signal.price,
            signal.stop_loss,
        )
        .map_err(|e| match e {
            SizingError::NoLot(_) => SizingError::NoLot(signal.instrument.clone()),
            other => other,
        });
        shares.push(Share {
            account,
            effective,
            intent,
        });
    }
    Ok(shares)
}

/// The order (if any) that moves `account` from its `effective` position
/// (filled plus open orders, signed) as `signal_side` asks, under its mode.
///
/// # Errors
/// A refusal from [`position_size`] when a new position must be opened.
pub fn intent<'a>(
    account: impl Into<Rules<'a>>,
    signal_side: &str,
    effective: Decimal,
    price: Option<Decimal>,
    stop: Option<Decimal>,
) -> Result<Option<Intent>, SizingError> {
    let account: Rules<'a> = account.into();
    let zero = Decimal::ZERO;
    let open = |side| position_size(account, price, stop).map(|qty| Some(Intent { side, qty }));
    let close = |side| {
        Ok(Some(Intent {
            side,
            qty: effective.abs(),
        }))
    };
    match (signal_side, account.mode) {
        ("exit", _) if effective > zero => close(OrderSide::Sell),
        ("exit", _) if effective < zero => close(OrderSide::Buy),
        ("buy", PositionMode::Long | PositionMode::Both) if effective == zero => {
            open(OrderSide::Buy)
        }
        ("buy", PositionMode::Both) if effective < zero => {
            // Reverse: cover the short and open the long in one order.
            let qty = position_size(account, price, stop)?;
            Ok(Some(Intent {
                side: OrderSide::Buy,
                qty: qty
                    .checked_add(effective.abs())
                    .ok_or(SizingError::TooSmall(qty))?,
            }))
        }
        ("buy", PositionMode::Short) if effective < zero => close(OrderSide::Buy),
        ("sell", PositionMode::Short | PositionMode::Both) if effective == zero => {
            open(OrderSide::Sell)
        }
        ("sell", PositionMode::Both) if effective > zero => {
            let qty = position_size(account, price, stop)?;
            Ok(Some(Intent {
                side: OrderSide::Sell,
                qty: qty
                    .checked_add(effective)
                    .ok_or(SizingError::TooSmall(qty))?,
            }))
        }
        ("sell", PositionMode::Long) if effective > zero => close(OrderSide::Sell),
        _ => Ok(None),
    }
}

/// Notional value of `qty` at `price`, for reports.
#[must_use]
pub fn notional(qty: Decimal, price: Decimal) -> f64 {
    (qty * price).to_f64().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;
    use toml::Spanned;

    fn account(mode: PositionMode, sizing: Sizing) -> Account {
        Account {
            id: Spanned::new(0..0, "a".into()),
            broker: Spanned::new(0..0, "paper".into()),
            base_url: None,
            ws_url: None,
            order_updates: crate::config::OrderUpdates::Push,
            credentials: None,
            market_protection_pct: dec!(2),
            notify: None,
            capital: dec!(100000),
            mode,
            sizing,
            slippage_bps: Decimal::ZERO,
            product: crate::domain::Product::Mis,
            square_off: None,
            algo_id: None,
            margin_check: true,
            autoslice: false,
            risk: crate::config::RiskLimits::default(),
            exits: crate::config::ExitRules::default(),
        }
    }

    #[test]
    fn modes_table() {
        use OrderSide::{Buy, Sell};
        use PositionMode::{Both, Long, Short};
        let fixed = Sizing::Fixed { qty: 2 };
        let cases = [
            (Long, "buy", dec!(0), Some((Buy, dec!(2)))),
            (Long, "buy", dec!(2), None),
            (Long, "sell", dec!(2), Some((Sell, dec!(2)))),
            (Long, "sell", dec!(0), None),
            (Short, "sell", dec!(0), Some((Sell, dec!(2)))),
            (Short, "buy", dec!(-2), Some((Buy, dec!(2)))),
            (Short, "buy", dec!(0), None),
            (Both, "buy", dec!(-2), Some((Buy, dec!(4)))),
            (Both, "sell", dec!(2), Some((Sell, dec!(4)))),
            (Both, "sell", dec!(-2), None),
            (Long, "exit", dec!(3), Some((Sell, dec!(3)))),
            (Short, "exit", dec!(-3), Some((Buy, dec!(3)))),
            (Both, "exit", dec!(0), None),
        ];
        for (mode, side, effective, want) in cases {
            let got = intent(
                &account(mode, fixed.clone()),
                side,
                effective,
                Some(dec!(100)),
                None,
            )
            .unwrap();
            assert_eq!(
                got.map(|i| (i.side, i.qty)),
                want,
                "{mode:?} {side} from {effective}"
            );
        }
    }

    #[test]
    fn sizing_table() {
        let cases = [
            (Sizing::Fixed { qty: 3 }, Some(dec!(100)), None, Ok(dec!(3))),
            (
                Sizing::Lots {
                    lots: 2,
                    lot_size: Some(75),
                },
                None,
                None,
                Ok(dec!(150)),
            ),
            // 10% of 100000 at 333 = 30.03 -> 30
            (
                Sizing::Percent { percent: dec!(10) },
                Some(dec!(333)),
                None,
                Ok(dec!(30)),
            ),
            // risk 1% = 1000 over a 25-point stop = 40
            (
                Sizing::Risk { percent: dec!(1) },
                Some(dec!(500)),
                Some(dec!(475)),
                Ok(dec!(40)),
            ),
            (
                Sizing::Risk { percent: dec!(1) },
                Some(dec!(500)),
                None,
                Err("risk sizing needs a stop-loss on the signal".to_owned()),
            ),
            (
                Sizing::Risk { percent: dec!(1) },
                None,
                Some(dec!(475)),
                Err("risk sizing needs the signal's price".to_owned()),
            ),
            (
                Sizing::Risk { percent: dec!(1) },
                Some(dec!(500)),
                Some(dec!(500)),
                Err("risk sizing: the stop-loss equals the price".to_owned()),
            ),
            (
                Sizing::Percent { percent: dec!(1) },
                Some(dec!(5000)),
                None,
                Err(
                    "sizing gives 0 units; the capital is too small for this instrument".to_owned(),
                ),
            ),
            // Absurd numbers on a signal: a refusal, never a panic.
            (
                Sizing::Risk { percent: dec!(1) },
                Some(Decimal::MAX),
                Some(Decimal::MIN),
                Err(format!(
                    "sizing cannot compute a size from a price of {} and a stop of Some({})",
                    Decimal::MAX,
                    Decimal::MIN
                )),
            ),
            (
                Sizing::Percent { percent: dec!(1) },
                Some(Decimal::new(1, 28)),
                None,
                Err(format!(
                    "sizing cannot compute a size from a price of {} and a stop of None",
                    Decimal::new(1, 28)
                )),
            ),
        ];
        for (sizing, price, stop, want) in cases {
            assert_eq!(
                position_size(&account(PositionMode::Long, sizing.clone()), price, stop)
                    .map_err(|e| e.to_string()),
                want,
                "{sizing:?}"
            );
        }
    }

    #[test]
    fn client_ids_are_stable_short_and_distinct() {
        let a = client_order_id("p/ma@0.1.0/1/0", "acct-1");
        assert_eq!(a, client_order_id("p/ma@0.1.0/1/0", "acct-1"));
        assert_eq!(a.len(), 20);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, client_order_id("p/ma@0.1.0/1/0", "acct-2"));
        assert_ne!(a, client_order_id("p/ma@0.1.0/1/1", "acct-1"));
    }
    #[test]
    fn a_signal_fans_out_to_each_account_not_yet_decided_once_with_its_own_position() {
        let text = "[[accounts]]\nid = \"a1\"\ncapital = 100000\nmode = \"both\"\nsizing = { kind = \"fixed\", qty = 2 }\n\n[[accounts]]\nid = \"a2\"\ncapital = 100000\nmode = \"long\"\nsizing = { kind = \"fixed\", qty = 1 }\n\n[[accounts]]\nid = \"a3\"\ncapital = 100000\n\n[[pipelines]]\nid = \"p\"\nplugin = \"ma_crossover.wasm\"\nsymbols = [\"NIFTY\"]\naccounts = [\"a1\", \"a2\", \"a3\"]\nsource = { kind = \"redis\" }\n";
        let config =
            crate::config::Config::parse(std::path::Path::new("pipelines.toml"), text).unwrap();
        let pipeline = config.pipeline("p").unwrap().clone();
        let signal = crate::bus::message::SignalMessage {
            v: crate::bus::message::SCHEMA_VERSION,
            kind: "signal".into(),
            id: "p/1".into(),
            ts: 1_704_083_400_000,
            pipeline: "p".into(),
            plugin: "ma".into(),
            plugin_version: "0.1.0".into(),
            instrument: "NIFTY".into(),
            side: "sell".into(),
            reason: "test".into(),
            price: Some(dec!(100)),
            stop_loss: None,
            target: None,
            strength: None,
            plugin_sha256: None,
            order: None,
        };
        let positions = |a: &str| -> Result<Decimal, String> {
            Ok(if a == "a1" { dec!(2) } else { Decimal::ZERO })
        };
        // a3 was decided before a restart: not again.
        let shares = fan_out(
            &config,
            &pipeline,
            &signal,
            |a| Ok::<_, String>(a == "a3"),
            positions,
        )
        .unwrap();
        let seen: Vec<(&str, Decimal, Option<Decimal>)> = shares
            .iter()
            .map(|s| {
                (
                    s.account.id.get_ref().as_str(),
                    s.effective,
                    s.intent
                        .as_ref()
                        .ok()
                        .and_then(|i| i.as_ref().map(|i| i.qty)),
                )
            })
            .collect();
        // a1 (both ways, long 2) reverses: sells 4; a2 (long only, flat) does nothing on a sell.
        assert_eq!(
            seen,
            [("a1", dec!(2), Some(dec!(4))), ("a2", dec!(0), None)]
        );
        let failed = fan_out(
            &config,
            &pipeline,
            &signal,
            |_| Err::<bool, _>("journal gone".to_owned()),
            positions,
        );
        assert_eq!(failed.unwrap_err(), "journal gone");
    }
}
