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
