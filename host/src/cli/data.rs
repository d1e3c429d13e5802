//! `tradehost data import <csv>... --out <dir>`: candle and option-chain CSVs validated once
//! (the same file:line errors a backtest gives) and written as Parquet, which
//! `backtest`, `sweep` and replays read directly, many times faster.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::Subcommand;

use crate::market::MarketData;
use crate::market::csv::{LoadOptions, load};

/// `tradehost data …`.
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Convert candle and option-chain CSV files to Parquet (`<out>/<file name>.parquet`), every row kept.
    Import {
        /// The CSV files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The folder to write into.
        #[arg(long)]
        out: PathBuf,
        /// Instrument name, instead of the file's (one file only).
        #[arg(long)]
        instrument: Option<String>,
    },
}

/// Run it.
///
/// # Errors
/// A file that cannot be read (named with its line and field) or written; nothing
/// is written for a file that fails.
pub fn run(command: &DataCommand) -> anyhow::Result<()> {
    let DataCommand::Import {
        files,
        out,
        instrument,
    } = command;
    if instrument.is_some() && files.len() > 1 {
        bail!(
            "--instrument names one file's instrument; {} files were given",
            files.len()
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for file in files {
        let started = Instant::now();
        let loaded = load(
            file,
            &LoadOptions {
                instrument: instrument.clone(),
                ..LoadOptions::default()
            },
        )?;
        let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("data");
        let target = out.join(format!("{stem}.parquet"));
        // Written beside and renamed: a failed write leaves no half file under the final name.
        let partial = out.join(format!(".{stem}.parquet.partial"));
        let what = match &loaded.data {
            MarketData::Candles(series) => {
                crate::market::parquet::write_candles(&partial, series)?;
                format!("{} bars of {}", series.bars.len(), series.instrument)
            }
            MarketData::Chains(chains) => {
                crate::market::parquet::write_chains(&partial, chains)?;
                format!(
                    "{} option-chain snapshots of {}",
                    chains.len(),
                    chains
                        .first()
                        .map(|c| c.underlying.as_str())
                        .unwrap_or_default()
                )
            }
        };
        std::fs::rename(&partial, &target)
            .with_context(|| format!("renaming {} to {}", partial.display(), target.display()))?;
        let (csv, pq) = (
            std::fs::metadata(file).map(|m| m.len()).unwrap_or(0),
            std::fs::metadata(&target).map(|m| m.len()).unwrap_or(0),
        );
        println!(
            "{} -> {}: {what}, {} KiB -> {} KiB ({:.2}s)",
            file.display(),
            target.display(),
            csv / 1024,
            pq / 1024,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
