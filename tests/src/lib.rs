//! Shared helpers for the workspace integration tests: where the built
//! plugins and the `tradehost` binary are, the real market data when it is
//! present, and scratch folders.

use std::path::{Path, PathBuf};

pub mod brokers;
pub mod kite_ticker;
pub mod upstox_feed;

/// The folder holding every test plugin, built by this crate's `build.rs`.
#[must_use]
pub fn plugin_dir() -> PathBuf {
    PathBuf::from(env!("TRADEHOST_PLUGIN_DIR"))
}

/// A built plugin by crate name (`ma-crossover` → `ma_crossover.wasm`).
#[must_use]
pub fn plugin(crate_name: &str) -> PathBuf {
    plugin_dir().join(format!("{}.wasm", crate_name.replace('-', "_")))
}

/// The `tradehost` binary next to the test executables (`target/<profile>/tradehost`).
///
/// # Panics
/// When it has not been built; the README's test command builds it first.
#[must_use]
pub fn tradehost_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("TRADEHOST_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."));
    let bin = profile_dir.join("tradehost");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build --release -p tradehost` (the README's test command does), or set TRADEHOST_BIN",
        bin.display()
    );
    bin
}

/// Run the binary with `args` on paper and the in-process bus (whatever the
/// environment says); its stdout.
///
/// # Panics
/// When it fails: with its output.
pub fn tradehost_ok(args: &[&str]) -> String {
    let out = std::process::Command::new(tradehost_bin())
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("REDIS_URL")
        .env_remove("TRADING_MODE")
        .output()
        .expect("running tradehost");
    assert!(
        out.status.success(),
        "tradehost {args:?}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run the binary with `args` as [`tradehost_ok`] does, expecting it to fail; its stderr.
///
/// # Panics
/// When it succeeds.
pub fn tradehost_fails(args: &[&str]) -> String {
    let out = std::process::Command::new(tradehost_bin())
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("REDIS_URL")
        .env_remove("TRADING_MODE")
        .output()
        .expect("running tradehost");
    assert!(
        !out.status.success(),
        "tradehost {args:?} should have failed:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A path as `&str` for an argument list.
///
/// # Panics
/// On a path that is not UTF-8 (never in a temp folder).
#[must_use]
pub fn arg(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// A file of the real NSE data in `../shared/data/market`, or `None` (with a
/// notice on stderr) on a machine without it.
#[must_use]
pub fn shared_data(file: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/market")
        .join(file);
    if path.exists() {
        Some(path)
    } else {
        eprintln!(
            "notice: {} not found; skipping the real-data part of this test",
            path.display()
        );
        None
    }
}

/// A `redis-server` of our own on a free port, in a temporary folder,
/// stopped when dropped. Tests never touch a Redis they did not start.
pub struct RedisServer {
    child: std::process::Child,
    port: u16,
    durable: bool,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Start one (nothing kept on disk) and wait until it answers `PING`.
    ///
    /// # Panics
    /// When `redis-server` is missing (the README's test command installs it) or does not start.
    #[must_use]
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// Start one that keeps its data in an append-only file synced on every
    /// write, so a [`RedisServer::crash`] and [`RedisServer::restart`] lose nothing it acknowledged.
    ///
    /// # Panics
    /// As [`RedisServer::start`].
    #[must_use]
    pub fn start_durable() -> Self {
        Self::start_with(true)
    }

    fn spawn(port: u16, dir: &Path, durable: bool) -> std::process::Child {
        let persistence: &[&str] = if durable {
            &["--appendonly", "yes", "--appendfsync", "always"]
        } else {
            &["--appendonly", "no"]
        };
        std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(persistence)
            .arg("--dir")
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect(
                "redis-server is not installed; run the README's test command, which installs it",
            )
    }

    fn start_with(durable: bool) -> Self {
        for _ in 0..20 {
            let dir = tempfile::tempdir().expect("temp dir");
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free port");
            let child = Self::spawn(port, dir.path(), durable);
            let mut server = Self {
                child,
                port,
                durable,
                dir,
            };
            if server.wait_up() {
                return server;
            }
            let _ = server.child.kill();
        }
        panic!("redis-server did not start");
    }

    fn wait_up(&mut self) -> bool {
        for _ in 0..250 {
            if self.ping() {
                return true;
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                return false; // the port was taken between our check and its bind
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        false
    }

    /// Kill it with SIGKILL, as a crash would.
    pub fn crash(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Start it again on the same port and folder (its data back if durable).
    ///
    /// # Panics
    /// When it does not come back.
    pub fn restart(&mut self) {
        self.child = Self::spawn(self.port, self.dir.path(), self.durable);
        assert!(
            self.wait_up(),
            "redis-server did not restart on port {}",
            self.port
        );
    }

    fn ping(&self) -> bool {
        use std::io::{Read as _, Write as _};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(std::time::Duration::from_millis(200)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    /// `redis://127.0.0.1:<port>`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `pipelines.toml` in a temp folder whose plugin folder is the built test
/// plugins and whose journal lives in the temp folder. `body` holds the
/// accounts and pipelines.
#[must_use]
pub fn write_config(dir: &Path, body: &str, heartbeat_secs: u64) -> PathBuf {
    let path = dir.join("pipelines.toml");
    let text = format!(
        "[host]\nplugin_dir = {:?}\njournal = {:?}\nheartbeat_secs = {heartbeat_secs}\n\n[bus]\nclaim_idle_ms = 1000\n\n{body}",
        plugin_dir().display().to_string(),
        dir.join("journal.sqlite").display().to_string()
    );
    std::fs::write(&path, text).expect("writing the config");
    path
}

/// Every message on `trading:*` of a Redis server, collected by a thread.
pub struct Collector {
    messages: std::sync::Arc<std::sync::Mutex<Vec<(String, serde_json::Value)>>>,
}

impl Collector {
    /// Start collecting from `url`; returns once subscribed.
    ///
    /// # Panics
    /// When Redis cannot be reached.
    #[must_use]
    pub fn start(url: &str) -> Self {
        let messages = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = messages.clone();
        let client = redis::Client::open(url).expect("redis url");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut con = client.get_connection().expect("redis connection");
            let mut pubsub = con.as_pubsub();
            pubsub.psubscribe("trading:*").expect("psubscribe");
            let _ = ready_tx.send(());
            while let Ok(msg) = pubsub.get_message() {
                let payload: String = msg.get_payload().unwrap_or_default();
                let value =
                    serde_json::from_str(&payload).unwrap_or(serde_json::Value::String(payload));
                if let Ok(mut m) = sink.lock() {
                    m.push((msg.get_channel_name().to_owned(), value));
                }
            }
        });
        ready_rx.recv().expect("collector thread");
        Self { messages }
    }

    /// The collected messages, shared with another thread.
    #[must_use]
    pub fn shared(&self) -> std::sync::Arc<std::sync::Mutex<Vec<(String, serde_json::Value)>>> {
        self.messages.clone()
    }

    /// A copy of what has arrived so far.
    #[must_use]
    pub fn messages(&self) -> Vec<(String, serde_json::Value)> {
        self.messages.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Messages on `channel` whose `type` is `kind`.
    #[must_use]
    pub fn of(&self, channel: &str, kind: &str) -> Vec<serde_json::Value> {
        self.messages()
            .into_iter()
            .filter(|(c, v)| c == channel && v["type"] == kind)
            .map(|(_, v)| v)
            .collect()
    }

    /// Wait up to `timeout` for a message matching `pred`.
    #[must_use]
    pub fn wait_for(
        &self,
        timeout: std::time::Duration,
        pred: impl Fn(&str, &serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Some((_, v)) = self.messages().into_iter().find(|(c, v)| pred(c, v)) {
                return Some(v);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        None
    }
}

/// Journal invariants: every position is the sum of its fills; the paper
/// broker's book and the journal's orders agree; every order's fills add up
/// to what it filled.
///
/// # Panics
/// When an invariant does not hold (this is a test helper).
pub fn check_journal(db: &rusqlite::Connection) {
    let count = |sql: &str| {
        db.query_row(sql, [], |r| r.get::<_, i64>(0))
            .expect("count")
    };
    check_positions(db);
    assert_eq!(
        count("SELECT COUNT(*) FROM paper_book"),
        count("SELECT COUNT(*) FROM orders WHERE state != 'new'"),
        "paper book vs journal"
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM paper_book WHERE state = 'filled'"),
        count("SELECT COUNT(*) FROM orders WHERE state = 'filled'"),
        "fills: paper book vs journal"
    );
}

/// Journal invariants whatever the broker: every position is the sum of its
/// fills, every order's fills add up to what it filled, no decision made twice.
///
/// # Panics
/// When an invariant does not hold.
pub fn check_positions(db: &rusqlite::Connection) {
    use std::collections::HashMap;
    let count = |sql: &str| {
        db.query_row(sql, [], |r| r.get::<_, i64>(0))
            .expect("count")
    };
    let mut sums: HashMap<(String, String), rust_decimal::Decimal> = HashMap::new();
    let mut stmt = db
        .prepare("SELECT account, instrument, side, qty FROM fills")
        .expect("fills");
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })
        .expect("fills");
    for row in rows {
        let (a, i, side, qty) = row.expect("row");
        let q: rust_decimal::Decimal = qty.parse().expect("qty");
        *sums.entry((a, i)).or_default() += if side == "buy" { q } else { -q };
    }
    let mut stmt = db
        .prepare("SELECT account, instrument, qty FROM positions")
        .expect("positions");
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .expect("positions");
    for row in rows {
        let (a, i, qty) = row.expect("row");
        let held: rust_decimal::Decimal = qty.parse().expect("qty");
        assert_eq!(
            sums.get(&(a.clone(), i.clone()))
                .copied()
                .unwrap_or_default(),
            held,
            "position {a} {i} is not the sum of its fills"
        );
    }
    // Each order's fills add up to what it filled: all of it when filled, the part the broker
    // reported (`filled_qty`) when partly filled or cancelled after a part, nothing otherwise.
    let mut stmt = db
        .prepare("SELECT client_order_id, state, qty, filled_qty FROM orders")
        .expect("orders");
    let orders = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
            ))
        })
        .expect("orders")
        .map(|r| r.expect("row"))
        .collect::<Vec<_>>();
    let mut filled: HashMap<String, rust_decimal::Decimal> = HashMap::new();
    let mut stmt = db
        .prepare("SELECT client_order_id, qty FROM fills")
        .expect("fills");
    for row in stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .expect("fills")
    {
        let (coid, qty) = row.expect("row");
        *filled.entry(coid).or_default() += qty.parse::<rust_decimal::Decimal>().expect("qty");
    }
    for (coid, state, qty, reported) in &orders {
        let got = filled.get(coid).copied().unwrap_or_default();
        let reported = reported
            .as_deref()
            .map(|q| q.parse::<rust_decimal::Decimal>().expect("filled_qty"));
        let want = match state.as_str() {
            "filled" => reported.unwrap_or_else(|| qty.parse().expect("qty")),
            "partially_filled" | "pending_cancel" | "cancelled" => reported.unwrap_or_default(),
            _ => rust_decimal::Decimal::ZERO,
        };
        assert_eq!(
            got, want,
            "order {coid} ({state}, {qty}): its fills add up to {got}, not {want}"
        );
    }
    assert_eq!(
        count(
            "SELECT COUNT(*) FROM fills WHERE client_order_id NOT IN (SELECT client_order_id FROM orders)"
        ),
        0,
        "fills of orders the journal does not hold"
    );
    // One order per decision: a signal decided twice for an account would show here.
    assert_eq!(
        count(
            "SELECT COUNT(*) FROM (SELECT signal_id, account FROM orders GROUP BY signal_id, account HAVING COUNT(*) > 1)"
        ),
        0,
        "an order twice"
    );
}

/// How many signals `ma-crossover` with `params` gives natively on the synthetic
/// NIFTY days `(seed, days)`: what a run of the same data through the sandbox,
/// the bus and any number of crashes or swaps must also give.
///
/// # Panics
/// When the params are refused (a test's own mistake).
#[must_use]
pub fn native_ma_signals(seed: u64, days: u32, params: &[(String, String)]) -> usize {
    native_ma_signals_for(seed, days, 21_700.0, params)
}

/// Signals of native ma-crossover on the seeded synthetic series starting at `start_price`.
///
/// # Panics
/// Params the strategy refuses.
#[must_use]
pub fn native_ma_signals_for(
    seed: u64,
    days: u32,
    start_price: f64,
    params: &[(String, String)],
) -> usize {
    use tradehost::engine::{Native, StrategyRunner, sdk_bar};
    use tradehost::market::source::{MarketEvent, synthetic_events};
    let mut ma =
        Native::<ma_crossover::MaCrossover>::new("ma-crossover", "0.1.0", params).expect("params");
    synthetic_events(&["NIFTY".to_owned()], seed, days, start_price, false, 60)
        .iter()
        .map(|e| match e {
            MarketEvent::Candle { bar, .. } => ma
                .on_candle("NIFTY", 60, &sdk_bar(bar))
                .map_or(0, |s| s.len()),
            MarketEvent::Chain(_) => 0,
        })
        .sum()
}

/// A live day in a temp folder: RELIANCE one-minute bars for 2024-01-02,
/// 09:15 to 15:14 IST, closing at `price(minute index)`, replayed into one
/// account (`account`, a TOML `[[accounts]]` body with `id = "<account_id>"`)
/// traded by ma-crossover (3/8); `live` is the `[live]` body. Writes
/// `RELIANCE.csv` and `pipelines.toml`; returns the configuration's path.
///
/// # Panics
/// When the folder cannot be written.
#[must_use]
pub fn reliance_day_config(
    dir: &Path,
    price: impl Fn(u32) -> f64,
    live: &str,
    account_id: &str,
    account: &str,
) -> PathBuf {
    let mut csv = String::from("timestamp,open,high,low,close,volume\n");
    for i in 0..360u32 {
        let (minute, p) = (9 * 60 + 15 + i, price(i));
        csv += &format!(
            "2024-01-02T{:02}:{:02}:00+05:30,{p:.2},{:.2},{:.2},{p:.2},1000\n",
            minute / 60,
            minute % 60,
            p + 0.5,
            p - 0.5
        );
    }
    std::fs::write(dir.join("RELIANCE.csv"), csv).expect("writing the day");
    let text = format!(
        "[host]\nplugin_dir = {plugins:?}\njournal = \"journal.sqlite\"\nheartbeat_secs = 1\n\n[live]\n{live}\n\n[[accounts]]\n{account}\n\n[[pipelines]]\nid = \"reliance\"\nplugin = \"ma_crossover.wasm\"\nsymbols = [\"RELIANCE\"]\naccounts = [\"{account_id}\"]\nsource = {{ kind = \"replay\", files = [\"RELIANCE.csv\"] }}\n[pipelines.params]\nfast = 3\nslow = 8\n",
        plugins = plugin_dir().display().to_string(),
    );
    let path = dir.join("pipelines.toml");
    std::fs::write(&path, text).expect("writing the config");
    path
}

/// A child process killed (and reaped) when dropped: a failing test leaves none behind.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port nothing listens on now, on 127.0.0.1.
///
/// # Panics
/// When no port can be bound.
#[must_use]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The argon2 hash `tradehost console --hash-password` prints for `password`.
///
/// # Panics
/// When the binary fails or prints something else.
#[must_use]
pub fn console_password_hash(password: &str) -> String {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new(tradehost_bin())
        .args(["console", "--hash-password"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("tradehost console --hash-password");
    writeln!(child.stdin.take().expect("stdin"), "{password}").expect("writing the password");
    let out = child.wait_with_output().expect("its output");
    assert!(
        out.status.success(),
        "tradehost console --hash-password failed"
    );
    let text = String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();
    assert!(
        text.starts_with("$argon2id$"),
        "not an argon2id hash: {text}"
    );
    text
}
