//! The main job is deterministic: the bundled `pipelines.toml` (four pipelines,
//! seeded synthetic markets, paper, in-process bus, a fresh journal) run six
//! times, half of them with every core kept busy by other threads, gives the
//! same decisions, orders, fills, positions and P&L every time. The order side
//! merges signals and prices by event time, not by which task ran first.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tradehost_tests::{plugin_dir, tradehost_bin};

const RUNS: usize = 6;

/// The repository's `pipelines.toml` with its plugins and journal in `dir`.
fn bundled_config(dir: &Path) -> std::path::PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text =
        std::fs::read_to_string(repo.join("pipelines.toml")).expect("the bundled pipelines.toml");
    let text = text
        .replace(
            "plugin_dir = \"plugins\"",
            &format!("plugin_dir = {:?}", plugin_dir().display().to_string()),
        )
        .replace(
            "journal = \"out/journal.sqlite\"",
            &format!(
                "journal = {:?}",
                dir.join("journal.sqlite").display().to_string()
            ),
        );
    assert!(
        text.contains(&dir.display().to_string()),
        "pipelines.toml changed shape"
    );
    let path = dir.join("pipelines.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Everything a run decided and did, without wall-clock columns.
fn outcome(journal: &Path) -> Vec<String> {
    let db = rusqlite::Connection::open(journal).unwrap();
    let mut rows = Vec::new();
    for (name, sql) in [
        (
            "decision",
            "SELECT signal_id, account, outcome, COALESCE(client_order_id, '') FROM decisions ORDER BY signal_id, account",
        ),
        (
            "order",
            "SELECT client_order_id, account, pipeline, instrument, side, qty, state, not_before FROM orders ORDER BY client_order_id",
        ),
        (
            "fill",
            "SELECT client_order_id, seq, account, instrument, side, qty, price, ts FROM fills ORDER BY client_order_id, seq",
        ),
        (
            "position",
            "SELECT account, instrument, qty, avg_price, realized FROM positions ORDER BY account, instrument",
        ),
        (
            "daily",
            "SELECT account, day, realized FROM daily_pnl ORDER BY account, day",
        ),
    ] {
        let mut stmt = db.prepare(sql).unwrap();
        let n = stmt.column_count();
        let found = stmt
            .query_map([], |r| {
                let cols: Vec<String> = (0..n)
                    .map(|i| {
                        r.get::<_, rusqlite::types::Value>(i)
                            .map(|v| format!("{v:?}"))
                    })
                    .collect::<Result<_, _>>()?;
                Ok(format!("{name} {}", cols.join(" | ")))
            })
            .unwrap()
            .map(Result::unwrap);
        rows.extend(found);
    }
    rows
}

/// Keep every core busy twice over until dropped (the order side then runs
/// seconds behind the engine, as on a loaded CI machine).
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        let threads = (0..2 * cores)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(
                            x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1),
                        );
                    }
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[test]
fn the_demo_gives_the_same_orders_fills_and_pnl_on_every_run_loaded_or_not() {
    let mut first: Option<Vec<String>> = None;
    for run in 0..RUNS {
        let dir = tempfile::tempdir().unwrap();
        let config = bundled_config(dir.path());
        let load = (run % 2 == 1).then(Load::start);
        let out = Command::new(tradehost_bin())
            .args(["run", "--quiet", "--until-idle", "1", "--config"])
            .arg(&config)
            .env_remove("REDIS_URL")
            .env_remove("TRADING_MODE")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        drop(load);
        assert!(
            out.status.success(),
            "run {run}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let got = outcome(&dir.path().join("journal.sqlite"));
        assert!(
            got.iter().filter(|r| r.starts_with("fill ")).count() > 50,
            "run {run}: the demo trades"
        );
        match &first {
            None => first = Some(got),
            Some(want) => {
                let missing: Vec<_> = want.iter().filter(|r| !got.contains(r)).take(5).collect();
                let extra: Vec<_> = got.iter().filter(|r| !want.contains(r)).take(5).collect();
                assert!(
                    missing.is_empty() && extra.is_empty() && got.len() == want.len(),
                    "run {run} differs from run 0:\nonly in run 0: {missing:#?}\nonly in run {run}: {extra:#?}"
                );
            }
        }
    }
}
