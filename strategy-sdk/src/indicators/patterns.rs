//! Candle patterns of a scalping engine, as pure functions of bars.
//!
//! Definitions (all on one bar unless said):
//! - **hammer**: lower shadow ≥ 2 × body and upper shadow ≤ 10% of the range;
//!   **shooting star** the mirror image.
//! - **bullish engulfing**: the previous bar is bearish, this one bullish, and
//!   its body covers the previous body and is larger; **bearish** the mirror.
//! - **inside bar**: high strictly below and low strictly above the previous bar's.
//! - **strong candle**: body > 60% of the range.
//! - **range compression** (NR-n): the last bar's range is strictly the
//!   narrowest of the last `n` bars.
//!
//! A bar with no range (high == low) is none of these.

use crate::market::Bar;

fn upper_shadow(b: &Bar) -> f64 {
    b.high - b.open.max(b.close)
}

fn lower_shadow(b: &Bar) -> f64 {
    b.open.min(b.close) - b.low
}

/// Long lower shadow, small body at the top.
#[must_use]
pub fn is_hammer(b: &Bar) -> bool {
    let range = b.range();
    range > 0.0 && lower_shadow(b) >= 2.0 * b.body() && upper_shadow(b) <= 0.1 * range
}

/// Long upper shadow, small body at the bottom.
#[must_use]
pub fn is_shooting_star(b: &Bar) -> bool {
    let range = b.range();
    range > 0.0 && upper_shadow(b) >= 2.0 * b.body() && lower_shadow(b) <= 0.1 * range
}

/// A bullish body that swallows the previous bearish body.
#[must_use]
pub fn is_bullish_engulfing(prev: &Bar, cur: &Bar) -> bool {
    prev.close < prev.open
        && cur.close > cur.open
        && cur.open <= prev.close
        && cur.close >= prev.open
        && cur.body() > prev.body()
}

/// A bearish body that swallows the previous bullish body.
#[must_use]
pub fn is_bearish_engulfing(prev: &Bar, cur: &Bar) -> bool {
    prev.close > prev.open
        && cur.close < cur.open
        && cur.open >= prev.close
        && cur.close <= prev.open
        && cur.body() > prev.body()
}

/// This bar's range lies strictly inside the previous one.
#[must_use]
pub fn is_inside_bar(prev: &Bar, cur: &Bar) -> bool {
    cur.high < prev.high && cur.low > prev.low
}

/// Body larger than 60% of the range.
#[must_use]
pub fn is_strong_candle(b: &Bar) -> bool {
    let range = b.range();
    range > 0.0 && b.body() > 0.6 * range
}

/// NR-n: the last of `bars` has strictly the smallest range of them; false
/// with fewer than two bars.
#[must_use]
pub fn is_range_compression(bars: &[Bar]) -> bool {
    match bars.split_last() {
        Some((last, rest)) if !rest.is_empty() => rest.iter().all(|b| last.range() < b.range()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(open: f64, high: f64, low: f64, close: f64) -> Bar {
        Bar {
            ts: 0,
            open,
            high,
            low,
            close,
            volume: 0,
            oi: 0,
        }
    }

    #[test]
    fn single_bar_patterns() {
        // (bar, hammer, shooting star, strong)
        let cases = [
            (b(99.0, 100.0, 90.0, 100.0), true, false, false), // body 1, lower 9, upper 0
            (b(100.0, 100.5, 90.0, 99.0), true, false, false), // body 1, lower 9, upper 0.5 <= 1.05
            (b(100.0, 101.5, 90.0, 99.0), false, false, false), // upper 1.5 > 10% of 11.5
            (b(91.0, 100.0, 90.0, 90.0), false, true, false),
            (b(90.0, 100.0, 90.0, 97.0), false, false, true), // body 7 of 10
            (b(90.0, 100.0, 90.0, 96.0), false, false, false), // body 6 is not > 6
            (b(90.0, 90.0, 90.0, 90.0), false, false, false), // no range
        ];
        for (i, (bar, hammer, star, strong)) in cases.iter().enumerate() {
            assert_eq!(is_hammer(bar), *hammer, "hammer {i}");
            assert_eq!(is_shooting_star(bar), *star, "star {i}");
            assert_eq!(is_strong_candle(bar), *strong, "strong {i}");
        }
    }

    #[test]
    fn two_bar_patterns() {
        let down = b(105.0, 106.0, 99.0, 100.0);
        let up_engulf = b(99.5, 107.0, 99.0, 106.0);
        let up_small = b(101.0, 104.0, 100.5, 104.0);
        assert!(is_bullish_engulfing(&down, &up_engulf));
        assert!(!is_bullish_engulfing(&down, &up_small));
        assert!(!is_bearish_engulfing(&down, &up_engulf));
        let up = b(100.0, 106.0, 99.0, 105.0);
        let down_engulf = b(105.5, 106.0, 98.0, 99.0);
        assert!(is_bearish_engulfing(&up, &down_engulf));
        assert!(!is_bullish_engulfing(&up, &down_engulf));
        // identical bodies do not engulf
        assert!(!is_bearish_engulfing(&up, &b(105.0, 106.0, 99.0, 100.0)));
        assert!(is_inside_bar(&down, &b(101.0, 105.0, 100.0, 102.0)));
        assert!(
            !is_inside_bar(&down, &b(101.0, 106.0, 100.0, 102.0)),
            "equal high is not inside"
        );
    }

    #[test]
    fn range_compression_nr4() {
        let bars = [
            b(0.0, 10.0, 0.0, 5.0),
            b(0.0, 8.0, 0.0, 5.0),
            b(0.0, 9.0, 0.0, 5.0),
            b(0.0, 7.0, 0.0, 5.0),
        ];
        assert!(is_range_compression(&bars));
        assert!(!is_range_compression(&bars[..3]));
        let tie = [b(0.0, 7.0, 0.0, 5.0), b(0.0, 7.0, 0.0, 5.0)];
        assert!(!is_range_compression(&tie));
        assert!(!is_range_compression(&bars[..1]));
    }
}
