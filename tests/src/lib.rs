//! Shared helpers for the workspace integration tests: where the built
//! plugins and the `tradehost` binary are, the real market data when it is
//! present, and scratch folders.

use std::path::{Path, PathBuf};

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
    let profile_dir = exe.parent().and_then(Path::parent).unwrap_or(Path::new("."));
    let bin = profile_dir.join("tradehost");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build --release -p tradehost` (the README's test command does), or set TRADEHOST_BIN",
        bin.display()
    );
    bin
}

/// A file of the real NSE data in `../shared/data/market`, or `None` (with a
/// notice on stderr) on a machine without it.
#[must_use]
pub fn shared_data(file: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/market").join(file);
    if path.exists() {
        Some(path)
    } else {
        eprintln!("notice: {} not found; skipping the real-data part of this test", path.display());
        None
    }
}

/// A `redis-server` of our own on a free port, in a temporary folder,
/// stopped when dropped. Tests never touch a Redis they did not start.
pub struct RedisServer {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Start one and wait until it answers `PING`.
    ///
    /// # Panics
    /// When `redis-server` is missing (the README's test command installs it) or does not start.
    #[must_use]
    pub fn start() -> Self {
        for _ in 0..20 {
            let dir = tempfile::tempdir().expect("temp dir");
            let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port");
            let child = std::process::Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir"])
                .arg(dir.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("redis-server is not installed; run the README's test command, which installs it");
            let mut server = Self { child, port, _dir: dir };
            for _ in 0..100 {
                if server.ping() {
                    return server;
                }
                if let Ok(Some(_)) = server.child.try_wait() {
                    break; // the port was taken between our check and its bind: try another
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let _ = server.child.kill();
        }
        panic!("redis-server did not start");
    }

    fn ping(&self) -> bool {
        use std::io::{Read as _, Write as _};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else { return false };
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
