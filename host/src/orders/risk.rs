//! The risk engine: checks in front of every order, per account, with safe
//! defaults. Each refusal names its rule. Rules that limit exposure apply to
//! orders that open or add to a position; an order that only reduces one is
//! always let through (refusing a stop-loss exit would add risk, not remove it).

use rust_decimal::Decimal;

use crate::domain::calendar::Hours;
use crate::domain::time::{format_hhmm, ist_minute_of_day};
use crate::subscriber::Intent;

pub use crate::config::RiskLimits;

/// Why an order was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The rule's name, as in the configuration.
    pub rule: &'static str,
    /// What exactly was wrong.
    pub reason: String,
}

/// What the checks need to know about the account at the moment of the order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiskContext {
    /// Exchange time of the signal, ms.
    pub now_ms: i64,
    /// The signal's price.
    pub price: Option<Decimal>,
    /// Signed position in the instrument, including open orders.
    pub position: Decimal,
    /// Instruments with a position (or open orders) other than this one.
    pub other_open_positions: usize,
    /// Realised plus unrealised P&L of the account today.
    pub daily_pnl: Decimal,
    /// The account's capital.
    pub capital: Decimal,
    /// Exchange times of the account's recent orders in the instrument's segment, ms.
    pub recent_orders_ms: Vec<i64>,
    /// Exchange time of the last entry by this pipeline in this instrument.
    pub last_entry_ms: Option<i64>,
    /// Today's trading hours per the calendar, or why the market is closed today.
    pub session: Result<Hours, String>,
    /// The expiry day of the instrument (days since 1970-01-01), for a derivative.
    pub expiry_day: Option<i64>,
}

/// Whether `intent` opens or adds to a position (rather than only reducing one).
#[must_use]
pub fn is_entry(position: Decimal, intent: &Intent) -> bool {
    let after = position + intent.qty * intent.side.sign();
    after.abs() > position.abs()
        || (after.is_sign_negative() != position.is_sign_negative()
            && !after.is_zero()
            && !position.is_zero())
}

/// Check an order against the limits.
///
/// # Errors
/// The first rule it breaks.
pub fn check(limits: &RiskLimits, ctx: &RiskContext, intent: &Intent) -> Result<(), Refusal> {
    let refuse = |rule, reason: String| Err(Refusal { rule, reason });
    if !is_entry(ctx.position, intent) {
        return Ok(());
    }
    let max_loss = if limits.max_daily_loss.is_zero() {
        ctx.capital * Decimal::new(2, 2)
    } else {
        limits.max_daily_loss
    };
    if ctx.daily_pnl <= -max_loss {
        return refuse(
            "max_daily_loss",
            format!(
                "today's P&L {} has reached the daily loss limit of {max_loss}; only reducing orders until tomorrow",
                ctx.daily_pnl
            ),
        );
    }
    let hours = match &ctx.session {
        Ok(hours) => *hours,
        Err(why) => {
            return refuse(
                "holiday",
                format!(
                    "{} is not a trading day ({why})",
                    crate::domain::time::format_ist_date(ctx.now_ms)
                ),
            );
        }
    };
    let minute = ist_minute_of_day(ctx.now_ms);
    // On a special session (Muhurat, a late open, an early close) the window moves with it.
    match limits
        .window()
        .map(|(open, close)| (hours.shift(open), hours.shift(close)))
    {
        Some((open, close)) if (open..close).contains(&minute) => {}
        Some(_) if hours == crate::domain::calendar::REGULAR => {
            return refuse(
                "entry_window",
                format!(
                    "{} is outside the entry window {}",
                    format_hhmm(minute),
                    limits.entry_window
                ),
            );
        }
        Some((open, close)) => {
            let session = format!("{}-{}", format_hhmm(hours.open), format_hhmm(hours.close));
            return refuse(
                "entry_window",
                format!(
                    "{} is outside the entry window {}, {}-{} in today's session {session}",
                    format_hhmm(minute),
                    limits.entry_window,
                    format_hhmm(open),
                    format_hhmm(close)
                ),
            );
        }
        None => {
            return refuse(
                "entry_window",
                format!("entry_window {:?} is not HH:MM-HH:MM", limits.entry_window),
            );
        }
    }
    if let Some(after) = crate::domain::time::parse_hhmm(&limits.expiry_no_entry_after)
        && ctx.expiry_day == Some(crate::domain::time::ist_day(ctx.now_ms))
        && minute >= hours.shift(after)
    {
        return refuse(
            "expiry_day",
            format!(
                "{} on its expiry day is past expiry_no_entry_after {}",
                format_hhmm(minute),
                limits.expiry_no_entry_after
            ),
        );
    }
    if let Some(last) = ctx.last_entry_ms {
        let since = ctx.now_ms - last;
        if since >= 0
            && since
                < i64::try_from(limits.cooldown_secs)
                    .unwrap_or(i64::MAX)
                    .saturating_mul(1000)
        {
            return refuse(
                "cooldown",
                format!(
                    "the last entry in this instrument from this pipeline was {}s ago; the cooldown is {}s",
                    since / 1000,
                    limits.cooldown_secs
                ),
            );
        }
    }
    if intent.qty > Decimal::from(limits.max_order_qty) {
        return refuse(
            "max_order_qty",
            format!(
                "{} units is more than the {} allowed in one order",
                intent.qty, limits.max_order_qty
            ),
        );
    }
    let max_notional = if limits.max_order_notional.is_zero() {
        ctx.capital
    } else {
        limits.max_order_notional
    };
    if let Some(price) = ctx.price {
        let notional = intent.qty * price;
        if notional > max_notional {
            return refuse(
                "max_order_notional",
                format!(
                    "{} × {price} = {notional} is more than the {max_notional} allowed in one order",
                    intent.qty
                ),
            );
        }
    }
    let after = (ctx.position + intent.qty * intent.side.sign()).abs();
    if after > Decimal::from(limits.max_position_qty) {
        return refuse(
            "max_position_qty",
            format!(
                "the position would be {after} units, more than the {} allowed in one instrument",
                limits.max_position_qty
            ),
        );
    }
    if ctx.position.is_zero() && ctx.other_open_positions >= limits.max_open_positions {
        return refuse(
            "max_open_positions",
            format!(
                "{} positions are open, the most allowed",
                ctx.other_open_positions
            ),
        );
    }
    let window_start = ctx.now_ms - 1000;
    let in_last_second = ctx
        .recent_orders_ms
        .iter()
        .filter(|t| **t > window_start && **t <= ctx.now_ms)
        .count();
    if in_last_second >= limits.max_orders_per_sec {
        return refuse(
            "order_rate",
            format!(
                "{in_last_second} orders in the last second in this segment; the limit is {} a second per segment",
                limits.max_orders_per_sec
            ),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::OrderSide;
    use rust_decimal_macros::dec;

    /// 2024-01-01 10:00 IST.
    const T: i64 = 1_704_083_400_000;

    fn ctx() -> RiskContext {
        RiskContext {
            now_ms: T,
            price: Some(dec!(100)),
            position: dec!(0),
            other_open_positions: 0,
            daily_pnl: dec!(0),
            capital: dec!(100000),
            recent_orders_ms: vec![],
            last_entry_ms: None,
            session: Ok(crate::domain::calendar::REGULAR),
            expiry_day: None,
        }
    }

    fn buy(qty: i64) -> Intent {
        Intent {
            side: OrderSide::Buy,
            qty: Decimal::from(qty),
        }
    }

    fn rule(limits: &RiskLimits, ctx: &RiskContext, intent: &Intent) -> Option<&'static str> {
        check(limits, ctx, intent).err().map(|r| r.rule)
    }

    #[test]
    fn a_normal_order_passes() {
        assert_eq!(rule(&RiskLimits::default(), &ctx(), &buy(10)), None);
    }

    #[test]
    fn max_order_qty() {
        let l = RiskLimits {
            max_order_qty: 5,
            ..RiskLimits::default()
        };
        assert_eq!(rule(&l, &ctx(), &buy(6)), Some("max_order_qty"));
        assert_eq!(rule(&l, &ctx(), &buy(5)), None);
    }

    #[test]
    fn max_order_notional_defaults_to_capital() {
        assert_eq!(
            rule(&RiskLimits::default(), &ctx(), &buy(1001)),
            Some("max_order_notional"),
            "1001 × 100 > 100000"
        );
        let l = RiskLimits {
            max_order_notional: dec!(500),
            ..RiskLimits::default()
        };
        assert_eq!(rule(&l, &ctx(), &buy(6)), Some("max_order_notional"));
    }

    #[test]
    fn max_position_qty_counts_what_is_held() {
        let l = RiskLimits {
            max_position_qty: 10,
            ..RiskLimits::default()
        };
        assert_eq!(
            rule(
                &l,
                &RiskContext {
                    position: dec!(8),
                    ..ctx()
                },
                &buy(3)
            ),
            Some("max_position_qty")
        );
        assert_eq!(
            rule(
                &l,
                &RiskContext {
                    position: dec!(8),
                    ..ctx()
                },
                &buy(2)
            ),
            None
        );
    }

    #[test]
    fn max_open_positions_applies_to_new_instruments_only() {
        let l = RiskLimits {
            max_open_positions: 2,
            ..RiskLimits::default()
        };
        assert_eq!(
            rule(
                &l,
                &RiskContext {
                    other_open_positions: 2,
                    ..ctx()
                },
                &buy(1)
            ),
            Some("max_open_positions")
        );
        assert_eq!(
            rule(
                &l,
                &RiskContext {
                    other_open_positions: 2,
                    position: dec!(1),
                    ..ctx()
                },
                &buy(1)
            ),
            None,
            "adding to an open one"
        );
    }

    #[test]
    fn max_daily_loss_leaves_only_reducing_orders() {
        let lost = RiskContext {
            daily_pnl: dec!(-2000),
            position: dec!(5),
            ..ctx()
        };
        assert_eq!(
            rule(&RiskLimits::default(), &lost, &buy(1)),
            Some("max_daily_loss"),
            "2% of 100000"
        );
        let sell_down = Intent {
            side: OrderSide::Sell,
            qty: dec!(5),
        };
        assert_eq!(
            rule(&RiskLimits::default(), &lost, &sell_down),
            None,
            "closing is always allowed"
        );
        assert_eq!(
            rule(
                &RiskLimits::default(),
                &RiskContext {
                    daily_pnl: dec!(-1999.99),
                    ..ctx()
                },
                &buy(1)
            ),
            None
        );
    }

    #[test]
    fn order_rate() {
        let busy = RiskContext {
            recent_orders_ms: (0..10).map(|i| T - 900 + i).collect(),
            ..ctx()
        };
        assert_eq!(
            rule(&RiskLimits::default(), &busy, &buy(1)),
            Some("order_rate")
        );
        let earlier = RiskContext {
            recent_orders_ms: (0..10).map(|i| T - 2000 + i).collect(),
            ..ctx()
        };
        assert_eq!(rule(&RiskLimits::default(), &earlier, &buy(1)), None);
    }

    #[test]
    fn no_entries_on_a_holiday_and_the_window_moves_with_a_special_session() {
        let closed = RiskContext {
            session: Err("Republic Day".into()),
            ..ctx()
        };
        let refusal = check(&RiskLimits::default(), &closed, &buy(1)).unwrap_err();
        assert_eq!(
            (refusal.rule, refusal.reason.as_str()),
            ("holiday", "2024-01-01 is not a trading day (Republic Day)")
        );
        let sell_down = Intent {
            side: OrderSide::Sell,
            qty: dec!(5),
        };
        assert_eq!(
            rule(
                &RiskLimits::default(),
                &RiskContext {
                    position: dec!(5),
                    ..closed
                },
                &sell_down
            ),
            None,
            "reducing is never refused"
        );
        // Muhurat 18:00-19:00: the 09:15-15:15 window becomes 18:00-18:45.
        let muhurat = |minute: i64| RiskContext {
            now_ms: T - 600 * 60_000 + minute * 60_000,
            session: Ok(Hours::new(18 * 60, 19 * 60)),
            ..ctx()
        };
        assert_eq!(
            rule(&RiskLimits::default(), &muhurat(18 * 60 + 10), &buy(1)),
            None,
            "18:10"
        );
        assert_eq!(
            rule(&RiskLimits::default(), &muhurat(10 * 60), &buy(1)),
            Some("entry_window"),
            "10:00 is before the session"
        );
        let late = check(&RiskLimits::default(), &muhurat(18 * 60 + 50), &buy(1)).unwrap_err();
        assert_eq!(
            late.reason,
            "18:50 is outside the entry window 09:15-15:15, 18:00-18:45 in today's session 18:00-19:00"
        );
    }

    #[test]
    fn no_entry_in_a_contract_late_on_its_expiry_day() {
        let l = RiskLimits {
            expiry_no_entry_after: "09:45".into(),
            ..RiskLimits::default()
        };
        let today = crate::domain::time::ist_day(T);
        let expiring = RiskContext {
            expiry_day: Some(today),
            ..ctx()
        };
        let refusal = check(&l, &expiring, &buy(1)).unwrap_err();
        assert_eq!(
            (refusal.rule, refusal.reason.as_str()),
            (
                "expiry_day",
                "10:00 on its expiry day is past expiry_no_entry_after 09:45"
            )
        );
        assert_eq!(
            rule(
                &l,
                &RiskContext {
                    expiry_day: Some(today + 7),
                    ..ctx()
                },
                &buy(1)
            ),
            None,
            "next week's contract"
        );
        assert_eq!(
            rule(&RiskLimits::default(), &expiring, &buy(1)),
            None,
            "off by default"
        );
    }

    #[test]
    fn entry_window() {
        let at = |minutes_after_0915: i64| RiskContext {
            now_ms: T - 45 * 60_000 + minutes_after_0915 * 60_000,
            ..ctx()
        };
        assert_eq!(
            rule(&RiskLimits::default(), &at(-1), &buy(1)),
            Some("entry_window"),
            "09:14"
        );
        assert_eq!(rule(&RiskLimits::default(), &at(0), &buy(1)), None, "09:15");
        assert_eq!(
            rule(&RiskLimits::default(), &at(359), &buy(1)),
            None,
            "15:14"
        );
        assert_eq!(
            rule(&RiskLimits::default(), &at(360), &buy(1)),
            Some("entry_window"),
            "15:15"
        );
        let exit = Intent {
            side: OrderSide::Sell,
            qty: dec!(1),
        };
        assert_eq!(
            rule(
                &RiskLimits::default(),
                &RiskContext {
                    position: dec!(1),
                    ..at(370)
                },
                &exit
            ),
            None,
            "exits any time"
        );
    }

    #[test]
    fn cooldown() {
        let recent = RiskContext {
            last_entry_ms: Some(T - 299_000),
            ..ctx()
        };
        assert_eq!(
            rule(&RiskLimits::default(), &recent, &buy(1)),
            Some("cooldown")
        );
        assert_eq!(
            rule(
                &RiskLimits::default(),
                &RiskContext {
                    last_entry_ms: Some(T - 300_000),
                    ..ctx()
                },
                &buy(1)
            ),
            None
        );
    }

    #[test]
    fn reversals_are_entries() {
        let rev = Intent {
            side: OrderSide::Sell,
            qty: dec!(4),
        };
        assert!(is_entry(dec!(2), &rev));
        assert!(!is_entry(
            dec!(2),
            &Intent {
                side: OrderSide::Sell,
                qty: dec!(2)
            }
        ));
        assert!(is_entry(dec!(0), &rev));
    }
}
