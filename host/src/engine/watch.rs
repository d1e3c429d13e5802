//! File watching: the plugin folder and the configuration file, with a
//! debouncer so that one save (or one copy) is one notification.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify_debouncer_full::notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tokio::sync::mpsc;

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Something in the plugin folder.
    Plugins,
    /// The configuration file.
    Config,
}

/// A running watcher; dropping it stops watching.
pub struct Watcher {
    _debouncer: Debouncer<notify_debouncer_full::notify::RecommendedWatcher, RecommendedCache>,
}

/// Watch `plugin_dir` (created if missing) and the folder of `config` (editors
/// replace files by renaming), sending a [`Change`] per debounced burst.
///
/// # Errors
/// When the operating system refuses to watch a folder.
pub fn watch(
    plugin_dir: &Path,
    config: &Path,
    tx: mpsc::Sender<Change>,
) -> anyhow::Result<Watcher> {
    std::fs::create_dir_all(plugin_dir)?;
    let plugin_dir_abs = std::fs::canonicalize(plugin_dir)?;
    let config_abs: PathBuf = std::fs::canonicalize(config).unwrap_or_else(|_| config.to_owned());
    let config_name = config_abs.file_name().map(ToOwned::to_owned);
    let config_dir = config_abs.parent().map(Path::to_path_buf);
    let config_abs_for_events = config_abs.clone();
    let mut debouncer = new_debouncer(
        Duration::from_millis(200),
        None,
        move |result: DebounceEventResult| {
            let Ok(events) = result else { return };
            let (mut plugins, mut cfg) = (false, false);
            for event in events {
                for path in &event.paths {
                    if path.parent().is_some_and(|p| p == plugin_dir_abs) {
                        plugins = true;
                    }
                    if path.file_name().map(ToOwned::to_owned) == config_name
                        && path.parent() == config_abs_for_events.parent()
                    {
                        cfg = true;
                    }
                }
            }
            // A full channel already holds a pending rescan of the same kind: nothing is lost.
            if plugins {
                let _ = tx.try_send(Change::Plugins);
            }
            if cfg {
                let _ = tx.try_send(Change::Config);
            }
        },
    )?;
    // Absolute paths, so that the events' paths compare with the ones above.
    debouncer.watch(
        std::fs::canonicalize(plugin_dir)?,
        RecursiveMode::NonRecursive,
    )?;
    if let Some(parent) = config_dir {
        debouncer.watch(parent, RecursiveMode::NonRecursive)?;
    }
    Ok(Watcher {
        _debouncer: debouncer,
    })
}
