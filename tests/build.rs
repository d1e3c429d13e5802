//! Builds every plugin the tests load (the bundled strategies and the hostile
//! ones) for `wasm32-wasip2`, so `cargo test` alone exercises real components.
//!
//! The nested cargo uses its own target directory: the outer build holds the
//! lock on the main one.

use std::path::PathBuf;
use std::process::Command;

const PLUGINS: &[&str] = &[
    "ma-crossover",
    "rsi",
    "oi-crossover",
    "orb",
    "hostile",
    "future-contract",
    "contract-1-0",
    "contract-1-1",
    "order-types",
    "chain-greeks",
];

fn main() {
    let manifest =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into()));
    let root = manifest
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.clone());
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("plugin-build");
    for dir in [
        "strategies",
        "strategy-sdk",
        "tests/plugins",
        "host/wit",
        "Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--profile",
            "plugin",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        // Under `cargo clippy` the lint driver wraps every workspace crate; the plugins
        // are built, not linted, here (the workspace's clippy run lints their sources).
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("CLIPPY_ARGS")
        .env_remove("CLIPPY_CONF_DIR");
    for p in PLUGINS {
        cmd.args(["-p", p]);
    }
    let status = cmd.status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "building the test plugins failed ({s}); is the wasm32-wasip2 target installed? `rustup target add wasm32-wasip2` (the README's commands do it)"
        ),
        Err(e) => panic!("could not run cargo to build the test plugins: {e}"),
    }
    let out = target.join("wasm32-wasip2").join("plugin");
    println!("cargo:rustc-env=TRADEHOST_PLUGIN_DIR={}", out.display());
}
