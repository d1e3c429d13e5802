//! On every option chain, buys the at-the-money call of the nearest expiry and
//! puts what it was told of that call in the reason: its last price and, where
//! the chain has them, its greeks (`delta=… gamma=… theta=… vega=… iv=…`), or
//! `no greeks`. The tests read the reason to see what reached the strategy.

use strategy_sdk::{OptionChain, OptionKind, ParamError, Params, Signals, Strategy, option_symbol};

/// The strategy.
#[derive(Debug, Clone, Default)]
pub struct ChainGreeks;

impl Strategy for ChainGreeks {
    fn new(params: &Params) -> Result<Self, ParamError> {
        params.reject_unknown(&[])?;
        Ok(Self)
    }

    fn on_option_chain(&mut self, chain: &OptionChain, signals: &mut Signals) {
        let Some(expiry) = chain.nearest() else {
            return;
        };
        let Some(atm) = expiry.atm(chain.spot) else {
            return;
        };
        let Some(leg) = atm.ce else {
            return;
        };
        let Some(symbol) = option_symbol(
            &chain.underlying,
            &expiry.expiry,
            atm.strike,
            OptionKind::Ce,
        ) else {
            return;
        };
        let told = leg.greeks.map_or_else(
            || "no greeks".to_owned(),
            |g| {
                format!(
                    "delta={} gamma={} theta={} vega={} iv={}",
                    g.delta, g.gamma, g.theta, g.vega, g.iv
                )
            },
        );
        signals.buy(
            &symbol,
            format!("ATM {} last={} {told}", atm.strike, leg.last),
        );
    }
}

strategy_sdk::register_strategy!(ChainGreeks);
