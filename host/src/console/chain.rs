//! The option chain the basket builder picks legs from: each underlying's strikes by
//! expiry with the last price of each call and put, gathered from the prices on the bus
//! (a pipeline on an option-chain source publishes every quoted contract), and the
//! strikes the brokers' instrument masters list (`[live] instruments`), quoted or not.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rust_decimal::Decimal;
use serde_json::{Value, json};

use crate::brokers::instruments::{Catalog, contract_symbol};
use crate::config::Config;
use crate::domain::contracts::option_name;

/// Underlyings, expiries per underlying and strikes per expiry kept: a flood of names
/// cannot grow the console without bound.
const MAX_UNDERLYINGS: usize = 64;
const MAX_EXPIRIES: usize = 16;
const MAX_STRIKES: usize = 600;

/// One underlying's quoted options: expiry → strike → (call, put) last prices.
#[derive(Debug, Default)]
struct Quoted {
    ts: i64,
    expiries: BTreeMap<String, BTreeMap<Decimal, [Option<Decimal>; 2]>>,
}

/// The quoted options seen on the bus, by underlying.
#[derive(Debug, Default)]
pub(super) struct Chains {
    by_underlying: HashMap<String, Quoted>,
}

impl Chains {
    /// Take one price; false when `instrument` is not an option.
    pub(super) fn take(&mut self, instrument: &str, price: Decimal, ts: i64) -> bool {
        let Some(name) = option_name(instrument) else {
            return false;
        };
        if !self.by_underlying.contains_key(&name.underlying)
            && self.by_underlying.len() >= MAX_UNDERLYINGS
        {
            return true;
        }
        let quoted = self.by_underlying.entry(name.underlying).or_default();
        quoted.ts = quoted.ts.max(ts);
        if !quoted.expiries.contains_key(&name.expiry) && quoted.expiries.len() >= MAX_EXPIRIES {
            // The earliest expiry makes room (it is the one that has gone or goes first).
            let Some(first) = quoted.expiries.keys().next().cloned() else {
                return true;
            };
            if first > name.expiry {
                return true;
            }
            quoted.expiries.remove(&first);
        }
        let strikes = quoted.expiries.entry(name.expiry).or_default();
        if strikes.contains_key(&name.strike) || strikes.len() < MAX_STRIKES {
            strikes.entry(name.strike).or_default()[usize::from(!name.call)] = Some(price);
        }
        true
    }
}

/// The close of `expiry` (`YYYY-MM-DD`), 15:30 IST, in ms since the epoch.
fn expiry_close_ms(expiry: &str) -> Option<i64> {
    let day = crate::domain::time::parse_date(expiry)?;
    Some(day * 86_400_000 + (15 * 60 + 30) * 60_000 - crate::domain::time::IST_OFFSET_MS)
}

/// The lot of `symbol`: the broker's master, else the exchange's contract rules, else
/// the lot size of an account whose pipelines trade `underlying`, else 1.
fn lot_of(config: &Config, catalog: &Catalog, underlying: &str, symbol: &str) -> u64 {
    if let Some(lot) = catalog
        .lots
        .get(symbol)
        .copied()
        .or_else(|| config.market.contract_rules.lot_size(symbol))
    {
        return lot;
    }
    config
        .pipelines
        .iter()
        .filter(|p| p.symbols.get_ref().iter().any(|s| s == underlying))
        .flat_map(|p| p.accounts.iter())
        .filter_map(|a| {
            config.account(a.get_ref()).and_then(|a| {
                a.lot_of(
                    &config.market.contract_rules,
                    symbol,
                    crate::domain::time::now_ms(),
                )
            })
        })
        .next()
        .unwrap_or(1)
}

/// What the basket builder shows for `underlying` and `expiry` (the nearest when absent
/// or unknown): its expiries, spot, lot, days to expiry, and each strike's call and put
/// with our name and last price. Without `underlying`, just the underlyings to pick from.
pub(super) fn view(
    config: &Config,
    catalog: &Catalog,
    chains: &Chains,
    last: &HashMap<String, Decimal>,
    underlying: Option<&str>,
    expiry: Option<&str>,
) -> Value {
    let underlyings: BTreeSet<&str> = chains
        .by_underlying
        .keys()
        .map(String::as_str)
        .chain(catalog.options.keys().map(|(u, _)| u.as_str()))
        .collect();
    let Some(underlying) = underlying.filter(|u| underlyings.contains(u)) else {
        return json!({ "underlyings": underlyings });
    };
    let quoted = chains.by_underlying.get(underlying);
    let now = quoted.map_or_else(crate::domain::time::now_ms, |q| q.ts);
    // Listed expiries still open, and every quoted one.
    let mut expiries: BTreeSet<String> = catalog
        .options
        .keys()
        .filter(|(u, e)| u == underlying && expiry_close_ms(e).is_some_and(|close| close >= now))
        .map(|(_, e)| e.clone())
        .collect();
    expiries.extend(quoted.into_iter().flat_map(|q| q.expiries.keys().cloned()));
    let Some(chosen) = expiry
        .filter(|e| expiries.contains(*e))
        .map(str::to_owned)
        .or_else(|| expiries.iter().next().cloned())
    else {
        return json!({ "underlyings": underlyings, "underlying": underlying, "expiries": [] });
    };
    let mut rows: BTreeMap<Decimal, [Option<Decimal>; 2]> = quoted
        .and_then(|q| q.expiries.get(&chosen))
        .cloned()
        .unwrap_or_default();
    for (strike, _) in catalog
        .options
        .get(&(underlying.to_owned(), chosen.clone()))
        .into_iter()
        .flatten()
    {
        rows.entry(*strike).or_default();
    }
    // The spot: the underlying's own price, else put-call parity at the strike where the
    // call and the put are closest (strike + call - put).
    let parity = rows
        .iter()
        .filter_map(|(k, [c, p])| Some((*k, (*c)?, (*p)?)))
        .min_by_key(|(_, c, p)| c.checked_sub(*p).map(|d| d.abs()))
        .and_then(|(k, c, p)| k.checked_add(c).and_then(|s| s.checked_sub(p)));
    let spot = last.get(underlying).copied().or(parity);
    let days = expiry_close_ms(&chosen)
        .map(|close| Decimal::from(close.saturating_sub(now).max(0)) / Decimal::from(86_400_000));
    let side = |strike: &Decimal, kind: &str, price: Option<Decimal>| {
        let symbol = contract_symbol(underlying, &chosen, &strike.normalize().to_string(), kind);
        json!({ "symbol": symbol, "last": price.map(|p| p.normalize().to_string()) })
    };
    let any_symbol = rows
        .keys()
        .next()
        .and_then(|k| contract_symbol(underlying, &chosen, &k.normalize().to_string(), "CE"))
        .unwrap_or_default();
    json!({
        "underlyings": underlyings,
        "underlying": underlying,
        "expiries": expiries,
        "expiry": chosen,
        "ts": now,
        "spot": spot.map(|s| s.round_dp(2).normalize().to_string()),
        "spot_from": if last.contains_key(underlying) { "price" } else if spot.is_some() { "parity" } else { "none" },
        "days_to_expiry": days.map(|d| d.round_dp(3).normalize().to_string()),
        "lot_size": lot_of(config, catalog, underlying, &any_symbol),
        "rows": rows.iter().map(|(k, [c, p])| json!({ "strike": k.normalize().to_string(), "ce": side(k, "CE", *c), "pe": side(k, "PE", *p) })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn config() -> Config {
        Config::parse(
            std::path::Path::new("pipelines.toml"),
            "[[accounts]]\nid = \"f\"\ncapital = 1000000\nsizing = { kind = \"lots\", lots = 1, lot_size = 40 }\n\n[[pipelines]]\nid = \"p\"\nplugin = \"x.wasm\"\nsymbols = [\"ACME\"]\naccounts = [\"f\"]\nsource = { kind = \"synthetic\", seed = 1, days = 1 }\n",
        )
        .unwrap()
    }

    #[test]
    fn a_chain_from_quotes_has_names_prices_spot_by_parity_and_days_left() {
        let mut chains = Chains::default();
        // 2030-01-31 09:30 IST: 6 hours before that day's close.
        let ts = crate::domain::time::ist_to_epoch_ms(2030, 1, 31, 9 * 60 + 30, 0);
        for (name, price) in [
            ("ACME31JAN30100CE", dec!(6)),
            ("ACME31JAN30100PE", dec!(4)),
            ("ACME31JAN30110CE", dec!(2)),
            ("ACME31JAN30110PE", dec!(12.5)),
            ("ACME28FEB30100CE", dec!(9)),
        ] {
            assert!(chains.take(name, price, ts));
        }
        assert!(!chains.take("ACME", dec!(101), ts), "not an option");
        let v = view(
            &config(),
            &Catalog::default(),
            &chains,
            &HashMap::new(),
            Some("ACME"),
            None,
        );
        assert_eq!(v["expiries"], json!(["2030-01-31", "2030-02-28"]));
        assert_eq!(v["expiry"], "2030-01-31", "the nearest by default");
        assert_eq!(v["spot"], "102", "parity at 100: 100 + 6 - 4");
        assert_eq!(v["spot_from"], "parity");
        assert_eq!(v["days_to_expiry"], "0.25");
        assert_eq!(
            v["lot_size"], 40,
            "the account's lot for an underlying the rules do not list"
        );
        assert_eq!(
            v["rows"][1],
            json!({ "strike": "110", "ce": { "symbol": "ACME31JAN30110CE", "last": "2" }, "pe": { "symbol": "ACME31JAN30110PE", "last": "12.5" } })
        );
        let mut last = HashMap::new();
        last.insert("ACME".to_owned(), dec!(101.5));
        let feb = view(
            &config(),
            &Catalog::default(),
            &chains,
            &last,
            Some("ACME"),
            Some("2030-02-28"),
        );
        assert_eq!(
            (
                feb["spot"].as_str(),
                feb["spot_from"].as_str(),
                feb["rows"][0]["pe"]["last"].is_null()
            ),
            (Some("101.5"), Some("price"), true)
        );
        assert_eq!(
            view(
                &config(),
                &Catalog::default(),
                &chains,
                &last,
                Some("NOSUCH"),
                None
            ),
            json!({ "underlyings": ["ACME"] })
        );
    }

    #[test]
    fn listed_strikes_join_the_quoted_ones_and_a_flood_is_bounded() {
        let mut catalog = Catalog::default();
        catalog.options.insert(
            ("ACME".into(), "2030-01-31".into()),
            vec![(dec!(90), true), (dec!(90), false), (dec!(100), true)],
        );
        catalog
            .options
            .insert(("ACME".into(), "2020-01-30".into()), vec![(dec!(90), true)]);
        catalog.lots.insert("ACME31JAN3090CE".into(), 25);
        let mut chains = Chains::default();
        let ts = crate::domain::time::ist_to_epoch_ms(2030, 1, 2, 600, 0);
        chains.take("ACME31JAN30100CE", dec!(6), ts);
        let v = view(
            &config(),
            &catalog,
            &chains,
            &HashMap::new(),
            Some("ACME"),
            None,
        );
        assert_eq!(
            v["expiries"],
            json!(["2030-01-31"]),
            "an expired listing is not offered"
        );
        assert_eq!(v["rows"].as_array().unwrap().len(), 2);
        assert_eq!(
            (
                v["rows"][0]["strike"].as_str(),
                v["rows"][0]["ce"]["last"].is_null()
            ),
            (Some("90"), true)
        );
        assert_eq!(v["lot_size"], 25, "the master's lot first");
        for i in 0..2000u32 {
            chains.take(&format!("ACME31JAN30{}CE", 1000 + i), dec!(1), ts);
            let letters: String = (0..3)
                .map(|k| char::from(b'A' + u8::try_from(i / 26u32.pow(k) % 26).unwrap()))
                .collect();
            chains.take(&format!("U{letters}31JAN30100CE"), dec!(1), ts);
        }
        assert!(chains.by_underlying.len() <= MAX_UNDERLYINGS);
        assert!(chains.by_underlying["ACME"].expiries["2030-01-31"].len() <= MAX_STRIKES);
    }
}
