//! The payoff of an option basket: at expiry (exact: piecewise linear in the
//! underlying, so its extremes and breakevens are found at the strikes and by
//! the slope beyond them, not on a grid), and today by Black-76 with each leg's
//! implied volatility solved from its price. For the page's chart and figures;
//! the orders themselves are priced by the market.

use serde::{Deserialize, Serialize};

/// A basket to value.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// The underlying's forward (the future, or spot for a near expiry).
    pub underlying: f64,
    /// Calendar days to expiry (fractions allowed).
    pub days_to_expiry: f64,
    /// The annual risk-free rate, continuously compounded (default 6.5 %).
    #[serde(default = "rate")]
    pub rate: f64,
    /// The legs.
    pub legs: Vec<Leg>,
}

fn rate() -> f64 {
    0.065
}

/// One option leg.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Leg {
    /// Strike.
    pub strike: f64,
    /// `CE` or `PE`.
    pub kind: String,
    /// `buy` or `sell`.
    pub side: String,
    /// Units (lots × lot size).
    pub qty: f64,
    /// Its price (premium) per unit.
    pub price: f64,
}

/// What the page shows.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Payoff {
    /// Premium received (positive) or paid (negative), for the whole basket.
    pub net_premium: f64,
    /// The most it can make at expiry; `None`: unlimited.
    pub max_profit: Option<f64>,
    /// The most it can lose at expiry, as a positive number; `None`: unlimited.
    pub max_loss: Option<f64>,
    /// Underlying prices at expiry where it breaks even, ascending.
    pub breakevens: Vec<f64>,
    /// Each leg's implied volatility (annual, 0.15 = 15 %).
    pub implied_vols: Vec<f64>,
    /// `[underlying, P&L at expiry, P&L today]` across the chart.
    pub curve: Vec<[f64; 3]>,
}

/// The standard normal CDF, from [`erf`].
fn norm_cdf(x: f64) -> f64 {
    if x >= 0.0 {
        0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2))
    } else {
        0.5 * (1.0 - erf(-x / std::f64::consts::SQRT_2))
    }
}

/// erf(x) for x ≥ 0 by its series of positive terms,
/// erf(x) = 2/√π · e^(−x²) · Σ 2ⁿ x^(2n+1) / (1·3·…·(2n+1)): no cancellation, so
/// accurate to about 1e-15 absolute wherever it is summed to the end (beyond x = 6 it is 1).
fn erf(x: f64) -> f64 {
    if !x.is_finite() || x >= 6.0 {
        return 1.0;
    }
    let (mut term, mut sum) = (x, x);
    let mut n = 0.0;
    while term > sum * 1e-17 && n < 1000.0 {
        n += 1.0;
        term *= 2.0 * x * x / (2.0 * n + 1.0);
        sum += term;
    }
    (2.0 / std::f64::consts::PI.sqrt() * (-x * x).exp() * sum).min(1.0)
}

/// Black-76: the price of a call (`call`) or put struck at `k` on forward `f`, `t`
/// years out, volatility `sigma`, discounted at `r`.
#[must_use]
pub fn black76(call: bool, f: f64, k: f64, t: f64, sigma: f64, r: f64) -> f64 {
    let discount = (-r * t).exp();
    if t <= 0.0 || sigma <= 0.0 {
        let intrinsic = if call { f - k } else { k - f };
        return discount * intrinsic.max(0.0);
    }
    let sd = sigma * t.sqrt();
    let d1 = ((f / k).ln() + 0.5 * sd * sd) / sd;
    let d2 = d1 - sd;
    if call {
        discount * (f * norm_cdf(d1) - k * norm_cdf(d2))
    } else {
        discount * (k * norm_cdf(-d2) - f * norm_cdf(-d1))
    }
}

/// The volatility at which Black-76 gives `price` (bisection: the price rises with it).
fn implied_vol(call: bool, f: f64, k: f64, t: f64, r: f64, price: f64) -> Option<f64> {
    let (mut lo, mut hi) = (1e-4, 5.0);
    if price < black76(call, f, k, t, lo, r) - 1e-9 || price > black76(call, f, k, t, hi, r) {
        return None;
    }
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if black76(call, f, k, t, mid, r) < price {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(0.5 * (lo + hi))
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Value `req`.
///
/// # Errors
/// A leg that is not a call or put, bought or sold, with a positive strike, quantity and
/// price; a price no volatility gives (below its discounted intrinsic value); no legs.
pub fn payoff(req: &Request) -> Result<Payoff, String> {
    let finite = |x: f64| x.is_finite();
    if req.legs.is_empty() || req.legs.len() > 20 {
        return Err("a basket has 1 to 20 legs".into());
    }
    if !finite(req.underlying)
        || req.underlying <= 0.0
        || !finite(req.days_to_expiry)
        || req.days_to_expiry < 0.0
        || req.days_to_expiry > 3660.0
        || !finite(req.rate)
        || req.rate.abs() > 1.0
    {
        return Err(
            "underlying must be positive, days_to_expiry 0 to 3660, rate between -1 and 1".into(),
        );
    }
    let t = req.days_to_expiry / 365.0;
    let mut legs = Vec::with_capacity(req.legs.len());
    let mut vols = Vec::with_capacity(req.legs.len());
    for (i, l) in req.legs.iter().enumerate() {
        let call = match l.kind.as_str() {
            "CE" => true,
            "PE" => false,
            other => return Err(format!("leg {}: kind {other:?}: CE or PE", i + 1)),
        };
        let sign = match l.side.as_str() {
            "buy" => 1.0,
            "sell" => -1.0,
            other => return Err(format!("leg {}: side {other:?}: buy or sell", i + 1)),
        };
        if ![l.strike, l.qty, l.price].into_iter().all(finite)
            || l.strike <= 0.0
            || l.qty <= 0.0
            || l.price < 0.0
        {
            return Err(format!(
                "leg {}: strike and qty must be positive, price not negative",
                i + 1
            ));
        }
        let vol = if t > 0.0 {
            implied_vol(call, req.underlying, l.strike, t, req.rate, l.price)
                .ok_or_else(|| format!("leg {} ({} {}): price {} is below its value at any volatility (intrinsic {:.2})", i + 1, l.strike, l.kind, l.price, black76(call, req.underlying, l.strike, t, 0.0, req.rate)))?
        } else {
            0.0
        };
        vols.push((vol * 10_000.0).round() / 10_000.0);
        legs.push((call, sign * l.qty, l.strike, l.price, vol));
    }
    let at_expiry = |s: f64| {
        legs.iter()
            .map(|(call, q, k, p, _)| q * ((if *call { s - k } else { k - s }).max(0.0) - p))
            .sum::<f64>()
    };
    let today = |s: f64| {
        legs.iter()
            .map(|(call, q, k, p, v)| q * (black76(*call, s, *k, t, *v, req.rate) - p))
            .sum::<f64>()
    };
    let net_premium = -legs.iter().map(|(_, q, _, p, _)| q * p).sum::<f64>();
    // Piecewise linear: its kinks are the strikes; beyond the last, the calls' net quantity is the slope.
    let mut knots: Vec<f64> = std::iter::once(0.0)
        .chain(legs.iter().map(|l| l.2))
        .collect();
    knots.sort_by(f64::total_cmp);
    knots.dedup();
    let slope_up: f64 = legs.iter().filter(|l| l.0).map(|l| l.1).sum();
    let values: Vec<f64> = knots.iter().map(|&s| at_expiry(s)).collect();
    let top = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let bottom = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max_profit = (slope_up <= 1e-12).then(|| round2(top));
    let max_loss = (slope_up >= -1e-12).then(|| round2((-bottom).max(0.0)));
    let mut breakevens = Vec::new();
    for w in knots.windows(2).zip(values.windows(2)) {
        let ([a, b], [va, vb]) = (w.0, w.1) else {
            continue;
        };
        if *va == 0.0 {
            breakevens.push(*a);
        } else if va.signum() != vb.signum() && *vb != 0.0 {
            breakevens.push(a + (b - a) * (va / (va - vb)));
        }
    }
    let (last_k, last_v) = (knots[knots.len() - 1], values[values.len() - 1]);
    if last_v == 0.0 {
        breakevens.push(last_k);
    } else if slope_up.abs() > 1e-12 && (-last_v / slope_up) > 0.0 {
        breakevens.push(last_k - last_v / slope_up);
    }
    breakevens.dedup_by(|a, b| (*a - *b).abs() < 1e-9);
    let (lo, hi) = (
        knots
            .iter()
            .copied()
            .filter(|k| *k > 0.0)
            .fold(req.underlying, f64::min)
            * 0.85,
        knots.iter().copied().fold(req.underlying, f64::max) * 1.15,
    );
    let curve = (0..=120)
        .map(|i| {
            let s = lo + (hi - lo) * f64::from(i) / 120.0;
            [round2(s), round2(at_expiry(s)), round2(today(s))]
        })
        .collect();
    Ok(Payoff {
        net_premium: round2(net_premium),
        max_profit,
        max_loss,
        breakevens: breakevens.into_iter().map(round2).collect(),
        implied_vols: vols,
        curve,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leg(strike: f64, kind: &str, side: &str, qty: f64, price: f64) -> Leg {
        Leg {
            strike,
            kind: kind.into(),
            side: side.into(),
            qty,
            price,
        }
    }

    #[test]
    fn black76_matches_a_hand_computed_price_and_put_call_parity() {
        // F = K = 100, one year, 20 %, r = 0: 100 × (2N(0.1) − 1) = 7.965567…
        assert!((black76(true, 100.0, 100.0, 1.0, 0.2, 0.0) - 7.965_567_455_405_804).abs() < 1e-9);
        // C − P = e^{−rT}(F − K).
        let (c, p) = (
            black76(true, 25_000.0, 24_800.0, 0.05, 0.14, 0.065),
            black76(false, 25_000.0, 24_800.0, 0.05, 0.14, 0.065),
        );
        assert!((c - p - (-0.065_f64 * 0.05).exp() * 200.0).abs() < 1e-7);
        assert!((norm_cdf(1.959_963_984_540_054) - 0.975).abs() < 1e-12);
    }

    #[test]
    fn implied_volatility_gives_back_the_price() {
        let price = black76(false, 25_000.0, 24_500.0, 7.0 / 365.0, 0.17, 0.065);
        let vol = implied_vol(false, 25_000.0, 24_500.0, 7.0 / 365.0, 0.065, price).unwrap();
        assert!((vol - 0.17).abs() < 1e-6, "{vol}");
        assert_eq!(
            implied_vol(true, 25_000.0, 24_000.0, 0.02, 0.065, 10.0),
            None,
            "below intrinsic"
        );
    }

    #[test]
    fn a_short_straddle_earns_its_premium_at_most_loses_without_limit_and_breaks_even_a_premium_away()
     {
        // Sell 75 NIFTY 25000 CE at 180 and 75 PE at 170: credit 350 × 75 = 26,250.
        let req = Request {
            underlying: 25_000.0,
            days_to_expiry: 7.0,
            rate: 0.065,
            legs: vec![
                leg(25_000.0, "CE", "sell", 75.0, 180.0),
                leg(25_000.0, "PE", "sell", 75.0, 170.0),
            ],
        };
        let p = payoff(&req).unwrap();
        assert_eq!(
            (p.net_premium, p.max_profit, p.max_loss),
            (26_250.0, Some(26_250.0), None)
        );
        assert_eq!(p.breakevens, vec![24_650.0, 25_350.0]);
        assert!(
            p.implied_vols.iter().all(|v| *v > 0.05 && *v < 0.5),
            "{:?}",
            p.implied_vols
        );
        // Today, before expiry, at the strike the straddle is worth something: less than the whole credit is earned.
        let mid = p
            .curve
            .iter()
            .min_by(|a, b| (a[0] - 25_000.0).abs().total_cmp(&(b[0] - 25_000.0).abs()))
            .unwrap();
        assert!(mid[2] < mid[1], "{mid:?}");
    }

    #[test]
    fn an_iron_condor_has_a_limited_loss_between_its_wings() {
        // Buy 24500 PE @ 40, sell 24700 PE @ 90, sell 25300 CE @ 85, buy 25500 CE @ 35; 75 each.
        let req = Request {
            underlying: 25_000.0,
            days_to_expiry: 10.0,
            rate: 0.065,
            legs: vec![
                leg(24_500.0, "PE", "buy", 75.0, 40.0),
                leg(24_700.0, "PE", "sell", 75.0, 90.0),
                leg(25_300.0, "CE", "sell", 75.0, 85.0),
                leg(25_500.0, "CE", "buy", 75.0, 35.0),
            ],
        };
        let p = payoff(&req).unwrap();
        // Credit 100 a unit: 7,500; wings 200 wide: the worst is (200 − 100) × 75 = 7,500.
        assert_eq!(
            (p.net_premium, p.max_profit, p.max_loss),
            (7_500.0, Some(7_500.0), Some(7_500.0))
        );
        assert_eq!(p.breakevens, vec![24_600.0, 25_400.0]);
    }

    #[test]
    fn bad_legs_are_refused_by_name() {
        let bad = Request {
            underlying: 25_000.0,
            days_to_expiry: 7.0,
            rate: 0.065,
            legs: vec![leg(25_000.0, "XX", "sell", 75.0, 1.0)],
        };
        assert!(payoff(&bad).unwrap_err().contains("leg 1: kind \"XX\""));
        let cheap = Request {
            underlying: 25_000.0,
            days_to_expiry: 7.0,
            rate: 0.065,
            legs: vec![leg(24_000.0, "CE", "buy", 75.0, 10.0)],
        };
        assert!(
            payoff(&cheap)
                .unwrap_err()
                .contains("below its value at any volatility")
        );
        let nan = Request {
            underlying: f64::NAN,
            days_to_expiry: 7.0,
            rate: 0.065,
            legs: vec![leg(24_000.0, "CE", "buy", 75.0, 10.0)],
        };
        assert!(payoff(&nan).is_err());
    }
}
