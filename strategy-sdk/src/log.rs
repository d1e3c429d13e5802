//! Logging from inside a strategy. In a plugin the messages go to the host's
//! tracing, tagged with the plugin's name; natively they go to the logger set
//! with [`set_native_logger`], or nowhere.

use std::sync::OnceLock;

/// Severity of a log message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Very detailed.
    Trace,
    /// Diagnostic.
    Debug,
    /// Normal operation.
    Info,
    /// Something looks wrong.
    Warn,
    /// Something failed.
    Error,
}

static NATIVE: OnceLock<fn(Level, &str)> = OnceLock::new();

/// Where log messages go when the strategy runs natively (tests, benchmarks).
/// Only the first call has an effect.
pub fn set_native_logger(logger: fn(Level, &str)) {
    let _ = NATIVE.set(logger);
}

/// Log a message at `level`.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::__guest::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    if let Some(logger) = NATIVE.get() {
        logger(level, message);
    }
}

/// Log at info level.
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Log at warn level.
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Log at debug level.
pub fn debug(message: &str) {
    log(Level::Debug, message);
}
