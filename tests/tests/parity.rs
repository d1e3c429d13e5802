//! Backtest/paper parity: every bundled pipeline, replayed through `tradehost
//! run` (paper, `replay` source, `speed = 0`) and through `tradehost backtest
//! --config pipelines.toml --pipeline <id>`, gives the same fills line by line
//! (`report --fills-csv` against the backtest's `fills.csv`): the same
//! entries, exits, square-offs and prices, so the same P&L. The pipeline
//! backtest's signals are the single-plugin backtest's, and its per-account
//! pages show the same realised P&L as its summary.

use std::path::{Path, PathBuf};

use tradehost_tests::{arg as s, plugin_dir, tradehost_ok as ok};

/// The bundled configuration's text, and each `[[pipelines]]` block of it by id.
fn bundled() -> (PathBuf, String, Vec<(String, String)>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let head = text.split("[[pipelines]]").next().unwrap().to_owned();
    let blocks = text
        .split("[[pipelines]]")
        .skip(1)
        .map(|b| {
            let id = b
                .lines()
                .find_map(|l| l.strip_prefix("id = "))
                .unwrap()
                .trim_matches('"')
                .to_owned();
            (id, format!("[[pipelines]]{b}"))
        })
        .collect();
    (path, head, blocks)
}

#[test]
fn every_bundled_pipeline_fills_the_same_in_a_paper_run_and_its_backtest() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(&[
        "generate",
        "--out",
        s(&data),
        "--days",
        "6",
        "--chain-days",
        "2",
        "--seed",
        "5",
    ]);
    let (config, head, blocks) = bundled();
    assert_eq!(blocks.len(), 4, "the bundled pipelines");
    for (id, block) in blocks {
        // The data each replays: its underlying's candles, or the option chain over NIFTY's.
        let (file, underlying) = match id.as_str() {
            "nifty-oi" => (
                data.join("nifty_optionchain_1m.csv"),
                Some(data.join("nifty_1m.csv")),
            ),
            "banknifty-rsi" => (data.join("banknifty_1m.csv"), None),
            _ => (data.join("nifty_1m.csv"), None),
        };
        let work = dir.path().join(&id);
        std::fs::create_dir_all(&work).unwrap();

        // `run`: the bundled accounts and this pipeline, its source a replay of the file.
        let source = match &underlying {
            Some(u) => format!(
                "source = {{ kind = \"replay\", files = [{:?}], underlying = {:?}, speed = 0 }}",
                s(&file),
                s(u)
            ),
            None => format!(
                "source = {{ kind = \"replay\", files = [{:?}], speed = 0 }}",
                s(&file)
            ),
        };
        let block: String = block
            .lines()
            .map(|l| {
                if l.starts_with("source = ") {
                    source.clone()
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let head = head
            .replace(
                "plugin_dir = \"plugins\"",
                &format!("plugin_dir = {:?}", s(&plugin_dir())),
            )
            .replace(
                "journal = \"out/journal.sqlite\"",
                &format!("journal = {:?}", s(&work.join("journal.sqlite"))),
            );
        let run_config = work.join("run.toml");
        std::fs::write(&run_config, format!("{head}{block}\n")).unwrap();
        ok(&[
            "run",
            "--quiet",
            "--until-idle",
            "1",
            "--config",
            s(&run_config),
        ]);
        let run_fills = work.join("run-fills.csv");
        ok(&[
            "report",
            "--journal",
            s(&work.join("journal.sqlite")),
            "--fills-csv",
            s(&run_fills),
        ]);

        // `backtest --config`: the bundled file itself, unchanged but for where the plugins are.
        let out = work.join("bt");
        // Its plugin from the build (a clean checkout has none installed in `plugins/`).
        let plugins = plugin_dir();
        let mut args = vec![
            "backtest",
            "--config",
            s(&config),
            "--pipeline",
            &id,
            "--plugin-dir",
            s(&plugins),
            "--data",
            s(&file),
            "--out",
            s(&out),
        ];
        if let Some(u) = &underlying {
            args.extend(["--underlying", s(u)]);
        }
        let printed = ok(&args);
        assert!(printed.contains(&format!("{id} on ")), "{printed}");

        let (run, bt) = (
            std::fs::read_to_string(&run_fills).unwrap(),
            std::fs::read_to_string(out.join("fills.csv")).unwrap(),
        );
        assert!(run.lines().count() > 2, "{id} trades on six days:\n{run}");
        let (r, b): (Vec<&str>, Vec<&str>) = (run.lines().collect(), bt.lines().collect());
        for (i, (x, y)) in r.iter().zip(&b).enumerate() {
            assert_eq!(x, y, "{id}: line {} differs (run, then backtest)", i + 1);
        }
        assert_eq!(r.len(), b.len(), "{id}: run\n{run}\nbacktest\n{bt}");
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap())
                .unwrap();
        let accounts = summary["accounts"].as_object().unwrap();
        assert_eq!(accounts.len(), 1, "{id}: its own account");
        let fills: u64 = accounts
            .values()
            .map(|a| a["fills"].as_u64().unwrap())
            .sum();
        assert!(
            fills > 0 && fills as usize >= r.len() - 1,
            "{id}: {summary}"
        );

        // The per-account page states the account's realised P&L.
        for (account, a) in accounts {
            let page = std::fs::read_to_string(out.join(format!("report-{account}.html"))).unwrap();
            let realized = a["realized"].as_str().unwrap();
            assert!(
                page.contains(&format!("\">{realized}</div>")),
                "{id}: {account}'s page does not show realised {realized}"
            );
        }
        // What the strategy said is what the single-plugin backtest of the same plugin, params
        // and data says (at the pipeline's own one-minute timeframe).
        let signals = std::fs::read_to_string(out.join("signals.csv")).unwrap();
        assert_eq!(
            summary["signals"].as_u64().unwrap() as usize,
            signals.lines().count() - 1,
            "{id}"
        );
        if block.contains("timeframe = \"1m\"") {
            let wasm = block
                .lines()
                .find_map(|l| l.strip_prefix("plugin = "))
                .unwrap()
                .trim_matches('"');
            let wasm = plugin_dir().join(wasm);
            let params: Vec<String> = block
                .split("[pipelines.params]")
                .nth(1)
                .unwrap_or("")
                .lines()
                .filter_map(|l| l.split_once(" = "))
                .map(|(k, v)| format!("{}={}", k.trim(), v.trim().trim_matches('"')))
                .collect();
            let single = work.join("single");
            let mut args = vec![
                "backtest",
                "--plugin",
                s(&wasm),
                "--data",
                s(&file),
                "--out",
                s(&single),
            ];
            for p in &params {
                args.extend(["--param", p.as_str()]);
            }
            if let Some(u) = &underlying {
                args.extend(["--underlying", s(u)]);
            }
            ok(&args);
            let want = std::fs::read_to_string(single.join("signals.csv")).unwrap();
            assert!(want.lines().count() > 1, "{id} signals");
            assert_eq!(
                signals, want,
                "{id}: the pipeline's signals, then the single-plugin backtest's"
            );
        }
    }
}
