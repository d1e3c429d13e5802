//! Parameter sweeps and walk-forward analysis of one plugin.
//!
//! The data is read once and shared, read-only, by every run; each
//! combination of the [`Grid`] gets an instance of its own in the one
//! compiled plugin and is backtested by [`super::run`] exactly as `tradehost
//! backtest --param …` would, on a pool of worker threads (one per core by
//! default). Results come back in the grid's order whatever the threads did,
//! so the same grid and data give the same table on every run.
//!
//! Walk-forward: the data's trading days are cut into windows (`train` days
//! followed by `test` days, moved on by `step`); on each, the grid is swept
//! over the train days, the best combination by the chosen metric is then
//! traded on the test days alone (it sees the train days first as its
//! warm-up, but trades none of them), and those out-of-sample days are
//! stitched into one equity curve.

use rayon::prelude::*;
use rust_decimal::Decimal;

use super::grid::Grid;
use super::{BacktestConfig, EquityPoint, Prepared, Summary};
use crate::domain::time::ist_day;
use crate::market::{CandleSeries, MarketData};
use crate::sandbox::{Plugin, Sandbox};

/// What ranks the runs: the larger the better (drawdowns are ≤ 0, so the
/// shallowest ranks first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[clap(rename_all = "snake_case")]
pub enum Metric {
    /// Realised P&L.
    NetPnl,
    /// Annualised Sharpe ratio of daily returns.
    Sharpe,
    /// Share of winning trades.
    WinRate,
    /// Largest peak-to-trough fall (the shallowest first).
    MaxDrawdown,
    /// Share of the bars with a position open.
    Exposure,
    /// Closed trades.
    Trades,
}

impl Metric {
    /// The metric of a summary, as a number to compare.
    #[must_use]
    pub fn of(self, s: &Summary) -> f64 {
        use rust_decimal::prelude::ToPrimitive;
        match self {
            Self::NetPnl => s.net_pnl.to_f64().unwrap_or(0.0),
            Self::Sharpe => s.sharpe,
            Self::WinRate => s.win_rate,
            Self::MaxDrawdown => s.max_drawdown.to_f64().unwrap_or(0.0),
            Self::Exposure => s.exposure_pct.unwrap_or(0.0),
            Self::Trades => s.trades as f64,
        }
    }

    /// The column name it has in `results.csv`.
    #[must_use]
    pub fn column(self) -> &'static str {
        match self {
            Self::NetPnl => "net_pnl",
            Self::Sharpe => "sharpe",
            Self::WinRate => "win_rate",
            Self::MaxDrawdown => "max_drawdown",
            Self::Exposure => "exposure_pct",
            Self::Trades => "trades",
        }
    }
}

/// What one combination's backtest gave.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The headline numbers, as `summary.json` of a single backtest has them.
    pub summary: Summary,
    /// Daily equity.
    pub equity: Vec<EquityPoint>,
}

/// One combination of a sweep.
#[derive(Debug, Clone)]
pub struct Run {
    /// Its place in the grid's order.
    pub index: usize,
    /// One value per axis of the grid.
    pub values: Vec<String>,
    /// Its backtest, or why there is none (the plugin refused the parameters,
    /// ran out of its budget, trapped…).
    pub outcome: Result<Outcome, String>,
}

/// The plugin, its fixed parameters, the grid and the trading rules of a sweep.
#[derive(Debug, Clone, Copy)]
pub struct Sweep<'a> {
    /// Instantiates the plugin.
    pub sandbox: &'a Sandbox,
    /// Compiled once.
    pub plugin: &'a Plugin,
    /// Parameters every run gets.
    pub fixed: &'a [(String, String)],
    /// The parameters swept.
    pub grid: &'a Grid,
    /// The account's rules, as `backtest` takes them.
    pub config: &'a BacktestConfig,
}

impl Sweep<'_> {
    /// The parameters of combination `index`: the fixed ones, then the grid's.
    #[must_use]
    pub fn params(&self, index: usize) -> Vec<(String, String)> {
        let mut params = self.fixed.to_vec();
        params.extend(
            self.grid
                .names()
                .zip(self.grid.combination(index))
                .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        params
    }

    /// Backtest combination `index` on `data` with `config`.
    fn one(&self, index: usize, data: &Prepared<'_>, config: &BacktestConfig) -> Run {
        let values = self.grid.values(index);
        let outcome = self
            .sandbox
            .instantiate(self.plugin, &self.params(index))
            .and_then(|mut strategy| super::run_prepared(&mut strategy, data, config, |_| {}))
            .map(|r| Outcome {
                summary: r.summary,
                equity: r.equity,
            })
            .map_err(|e| e.to_string());
        Run {
            index,
            values,
            outcome,
        }
    }

    /// Backtest every combination on `data`, spread over `pool`'s threads;
    /// `done` is called after each. The runs come back in the grid's order.
    pub fn run(
        &self,
        pool: &rayon::ThreadPool,
        data: &MarketData,
        done: &(dyn Fn() + Sync),
    ) -> Vec<Run> {
        let data = Prepared::new(data);
        let data = &data;
        pool.install(|| {
            (0..self.grid.len())
                .into_par_iter()
                .map(|i| {
                    let run = self.one(i, data, self.config);
                    done();
                    run
                })
                .collect()
        })
    }
}

/// The order of `runs` by `metric`, best first: runs that failed last, ties
/// in the grid's order. Returns indexes into `runs`.
#[must_use]
pub fn ranking(runs: &[Run], metric: Metric) -> Vec<usize> {
    let key = |r: &Run| {
        r.outcome
            .as_ref()
            .ok()
            .map(|o| metric.of(&o.summary))
            .filter(|v| v.is_finite())
    };
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by(|&a, &b| {
        let (ka, kb) = (key(&runs[a]), key(&runs[b]));
        match (ka, kb) {
            (Some(x), Some(y)) => y.total_cmp(&x),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        }
        .then(runs[a].index.cmp(&runs[b].index))
    });
    order
}

/// Train and test window lengths, in trading days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkForward {
    /// Days the grid is swept on.
    pub train: usize,
    /// Days the winner then trades.
    pub test: usize,
    /// Days from one window to the next (the test length unless given).
    pub step: usize,
}

impl WalkForward {
    /// Parse `train=60d,test=20d[,step=20d]`.
    ///
    /// # Errors
    /// What is wrong, naming the part.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (mut train, mut test, mut step) = (None, None, None);
        for part in text.split(',').map(str::trim) {
            let Some((key, value)) = part.split_once('=') else {
                return Err(format!(
                    "--walk-forward {text:?}: {part:?}: expected key=<days>d"
                ));
            };
            let days = value.trim().strip_suffix('d').unwrap_or(value.trim());
            let days: usize = days.parse().ok().filter(|d| *d > 0).ok_or_else(|| format!("--walk-forward {text:?}: {key}={value}: expected a positive number of trading days like 20d"))?;
            match key.trim() {
                "train" => train = Some(days),
                "test" => test = Some(days),
                "step" => step = Some(days),
                other => {
                    return Err(format!(
                        "--walk-forward {text:?}: unknown {other:?} (train, test, step)"
                    ));
                }
            }
        }
        match (train, test) {
            (Some(train), Some(test)) => Ok(Self {
                train,
                test,
                step: step.unwrap_or(test),
            }),
            _ => Err(format!(
                "--walk-forward {text:?}: give train=<days>d and test=<days>d"
            )),
        }
    }

    /// The windows over `days` trading days: (first train day, first test day, end), as day positions.
    #[must_use]
    pub fn windows(&self, days: usize) -> Vec<(usize, usize, usize)> {
        let mut out = Vec::new();
        let mut start = 0usize;
        while let Some(end) = start
            .checked_add(self.train)
            .and_then(|t| t.checked_add(self.test))
        {
            if end > days {
                break;
            }
            out.push((start, start + self.train, end));
            start = match start.checked_add(self.step) {
                Some(s) => s,
                None => break,
            };
        }
        out
    }
}

/// One walk-forward window.
#[derive(Debug, Clone)]
pub struct Window {
    /// First and last event time of the train days.
    pub train: (i64, i64),
    /// First and last event time of the test days.
    pub test: (i64, i64),
    /// Train days, test days.
    pub days: (usize, usize),
    /// Every combination on the train days, in the grid's order.
    pub in_sample: Vec<Run>,
    /// The winner's index in `in_sample`, if any run succeeded.
    pub best: Option<usize>,
    /// The winner on the test days.
    pub out_of_sample: Option<Result<Outcome, String>>,
}

/// The event times of `data`.
fn times(data: &MarketData) -> Vec<i64> {
    match data {
        MarketData::Candles(s) => s.bars.iter().map(|b| b.ts_ms).collect(),
        MarketData::Chains(c) => c.iter().map(|c| c.ts_ms).collect(),
    }
}

/// Where each trading day starts: event positions, one per IST day, and the total.
fn day_starts(data: &MarketData) -> Vec<usize> {
    let ts = times(data);
    let mut starts = Vec::new();
    let mut last = None;
    for (i, t) in ts.iter().enumerate() {
        let day = ist_day(*t);
        if last != Some(day) {
            starts.push(i);
            last = Some(day);
        }
    }
    starts
}

/// How many trading days (IST dates) `data` covers.
#[must_use]
pub fn trading_days(data: &MarketData) -> usize {
    day_starts(data).len()
}

/// Events `from..to` of `data`, as data of their own.
fn slice(data: &MarketData, from: usize, to: usize) -> MarketData {
    match data {
        MarketData::Candles(s) => MarketData::Candles(CandleSeries {
            instrument: s.instrument.clone(),
            timeframe_secs: s.timeframe_secs,
            bars: s.bars[from..to].to_vec(),
        }),
        MarketData::Chains(c) => MarketData::Chains(c[from..to].to_vec()),
    }
}

impl Sweep<'_> {
    /// Walk forward over `data`: per window, the sweep on its train days, the
    /// winner by `metric` on its test days. The sweeps share `pool`.
    ///
    /// # Errors
    /// When the data has fewer trading days than one window.
    pub fn walk_forward(
        &self,
        pool: &rayon::ThreadPool,
        data: &MarketData,
        wf: WalkForward,
        metric: Metric,
        done: &(dyn Fn() + Sync),
    ) -> Result<Vec<Window>, String> {
        walk_forward_with(
            data,
            wf,
            metric,
            self.config,
            |train, _| self.run(pool, train, done),
            |index, window, test_from, _| {
                let config = BacktestConfig {
                    trade_from_ms: Some(test_from),
                    ..self.config.clone()
                };
                let run = self.one(index, &Prepared::new(window), &config);
                done();
                run
            },
        )
    }
}

/// Walk forward over `data` with any way of running: `sweep(train, n)` runs every
/// combination on window `n`'s train days; `one(index, window, test_from, n)` runs
/// combination `index` on the window's days, trading from `test_from` (the days
/// before are warm-up). One window's days are copied out at a time.
///
/// # Errors
/// When the data has fewer trading days than one window.
pub fn walk_forward_with(
    data: &MarketData,
    wf: WalkForward,
    metric: Metric,
    config: &BacktestConfig,
    sweep: impl Fn(&MarketData, usize) -> Vec<Run>,
    one: impl Fn(usize, &MarketData, i64, usize) -> Run,
) -> Result<Vec<Window>, String> {
    let starts = day_starts(data);
    let windows = wf.windows(starts.len());
    if windows.is_empty() {
        return Err(format!(
            "--walk-forward: the data has {} trading days, fewer than one window (train {} + test {})",
            starts.len(),
            wf.train,
            wf.test
        ));
    }
    let ts = times(data);
    let at = |day: usize| starts.get(day).copied().unwrap_or(ts.len());
    let mut out = Vec::with_capacity(windows.len());
    for (n, &(a, b, c)) in windows.iter().enumerate() {
        let train = slice(data, at(a), at(b));
        let in_sample = sweep(&train, n);
        drop(train);
        let best = ranking(&in_sample, metric)
            .first()
            .copied()
            .filter(|&i| in_sample[i].outcome.is_ok());
        // Out-of-sample: the winner sees the train days as warm-up and trades the test days.
        let out_of_sample = best.map(|i| {
            let test_from = ts[at(b)];
            let window = slice(data, at(a), at(c));
            let run = one(in_sample[i].index, &window, test_from, n);
            run.outcome
                .map(|o| test_days_only(o, test_from, at(c) - at(b), window.len(), config))
        });
        out.push(Window {
            train: (ts[at(a)], ts[at(b) - 1]),
            test: (ts[at(b)], ts[at(c) - 1]),
            days: (b - a, c - b),
            in_sample,
            best,
            out_of_sample,
        });
    }
    Ok(out)
}

/// An out-of-sample run's outcome over its test days alone. Every trade, and the bar-by-bar
/// drawdown, fall in the test days already (nothing is traded before them); what the flat
/// warm-up days would skew is dropped or made again: the daily equity and its Sharpe, the
/// span, the exposure.
fn test_days_only(
    o: Outcome,
    test_from: i64,
    test_events: usize,
    all_events: usize,
    config: &BacktestConfig,
) -> Outcome {
    let equity: Vec<EquityPoint> = o
        .equity
        .into_iter()
        .filter(|p| p.ts_ms >= test_from)
        .collect();
    let mut summary = o.summary;
    summary.sharpe = super::equity_sharpe(config.capital, &equity);
    summary.events = test_events;
    summary.first_ts = Some(crate::domain::time::format_iso_ist(test_from));
    summary.exposure_pct = summary.exposure_pct.map(|pct| {
        if test_events == 0 {
            0.0
        } else {
            pct * all_events as f64 / test_events as f64
        }
    });
    Outcome { summary, equity }
}

/// The out-of-sample days of every window as one equity curve: each window's
/// gains added on to where the last one ended.
#[must_use]
pub fn stitched(windows: &[Window], capital: Decimal) -> Vec<EquityPoint> {
    let mut out = Vec::new();
    let mut base = capital;
    let mut peak = capital;
    for w in windows {
        let Some(Ok(o)) = &w.out_of_sample else {
            continue;
        };
        let mut last = capital;
        for p in &o.equity {
            let equity = base + (p.equity - capital);
            peak = peak.max(equity);
            out.push(EquityPoint {
                ts_ms: p.ts_ms,
                equity,
                drawdown: equity - peak,
            });
            last = p.equity;
        }
        base += last - capital;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_forward_windows() {
        let wf = WalkForward::parse("train=60d,test=20d").unwrap();
        assert_eq!(
            wf,
            WalkForward {
                train: 60,
                test: 20,
                step: 20
            }
        );
        assert_eq!(wf.windows(100), [(0, 60, 80), (20, 80, 100)]);
        assert_eq!(wf.windows(79), []);
        let wf = WalkForward::parse("train=3d, test=1d, step=2d").unwrap();
        assert_eq!(wf.windows(8), [(0, 3, 4), (2, 5, 6), (4, 7, 8)]);
        for bad in [
            "train=60d",
            "train=0d,test=1d",
            "train=x,test=1d",
            "train=5d,test=1d,hold=2d",
            "60d",
        ] {
            assert!(WalkForward::parse(bad).is_err(), "{bad}");
        }
    }
}
