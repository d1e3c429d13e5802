//! Hot reload while markets are open: plugin files dropped, replaced,
//! broken and deleted, `pipelines.toml` edited, under load; and hostile
//! plugins beside a healthy pipeline.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::Value;
use tradehost::bus::Bus;
use tradehost::engine::pipeline::{self, Control, PipelineEnd, PipelineSpec, PipelineStats, Swap};
use tradehost::monitor::Events;
use tradehost::sandbox::{CpuBudget, Sandbox, SandboxLimits};
use tradehost_tests::{Collector, RedisServer, plugin, tradehost_bin};

/// The same component with a custom section appended: a different file (and
/// hash) with the same code, as a rebuild of the same version would be.
fn variant(crate_name: &str, n: u8) -> Vec<u8> {
    let mut bytes = std::fs::read(plugin(crate_name)).unwrap();
    let name = b"tradehost-test";
    let payload = [n; 8];
    let size = 1 + name.len() + payload.len();
    bytes.extend([
        0u8,
        u8::try_from(size).unwrap(),
        u8::try_from(name.len()).unwrap(),
    ]);
    bytes.extend(name);
    bytes.extend(payload);
    bytes
}

fn config_text(dir: &Path, pipelines: &str) -> String {
    format!(
        "[host]\nplugin_dir = {:?}\njournal = {:?}\nheartbeat_secs = 1\n\n[bus]\nclaim_idle_ms = 1000\n\n[[accounts]]\nid = \"acct\"\ncapital = 1000000\n\n{pipelines}",
        dir.join("plugins").display().to_string(),
        dir.join("journal.sqlite").display().to_string()
    )
}

fn pipeline(id: &str, plugin: &str, fast: u32, speed: u32) -> String {
    format!(
        "[[pipelines]]\nid = \"{id}\"\nplugin = \"{plugin}\"\nsymbols = [\"NIFTY\"]\naccounts = [\"acct\"]\nsource = {{ kind = \"synthetic\", seed = 3, days = 60, speed = {speed} }}\n[pipelines.params]\nfast = {fast}\nslow = 20\n"
    )
}

fn start(dir: &Path, url: &str) -> Child {
    Command::new(tradehost_bin())
        .args(["run", "--quiet", "--wait-for-plugins", "--config"])
        .arg(dir.join("pipelines.toml"))
        .env("REDIS_URL", url)
        .env("RUST_LOG", "warn")
        .env_remove("TRADING_MODE")
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

fn event(c: &Collector, name: &str, pred: impl Fn(&Value) -> bool) -> Value {
    c.wait_for(Duration::from_secs(20), |_, v| {
        v["event"] == name && pred(v)
    })
    .unwrap_or_else(|| {
        let seen: Vec<String> = c
            .of("trading:events", "event")
            .iter()
            .map(|e| e.to_string())
            .collect();
        panic!("no {name} event; saw:\n{}", seen.join("\n"))
    })
}

#[test]
fn plugin_files_dropped_replaced_broken_and_deleted() {
    let server = RedisServer::start();
    let c = Collector::start(&server.url());
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(plugin("rsi"), plugins.join("steady.wasm")).unwrap();
    let body = format!(
        "{}\n{}",
        pipeline("hot", "strat.wasm", 5, 3000),
        pipeline("steady", "steady.wasm", 5, 3000).replace("fast = 5\nslow = 20\n", "")
    );
    std::fs::write(
        dir.path().join("pipelines.toml"),
        config_text(dir.path(), &body),
    )
    .unwrap();
    let child = start(dir.path(), &server.url());

    event(&c, "pipeline_waiting", |v| v["pipeline"] == "hot");
    event(&c, "pipeline_started", |v| v["pipeline"] == "steady");

    // Drop it in: registered, and the waiting pipeline starts.
    let v1 = variant("ma-crossover", 1);
    std::fs::write(plugins.join("strat.wasm"), &v1).unwrap();
    let registered = event(&c, "plugin_registered", |v| v["file"] == "strat.wasm");
    event(&c, "pipeline_started", |v| v["pipeline"] == "hot");
    // The engine's heartbeats carry the pipelines; the orders role's, interleaved with them, do not.
    let hot_events_in = || {
        c.of("trading:events", "heartbeat")
            .iter()
            .rfind(|h| h["role"] == "engine")
            .map(|h| h["pipelines"]["hot"]["events_in"].as_u64().unwrap_or(0))
            .unwrap_or(0)
    };
    // Trading before the swap, so there is state to carry over.
    let more_than = |n: u64| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let now = hot_events_in();
            if now > n {
                return now;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the hot pipeline took no bars beyond {n}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    more_than(0);

    // A copy in progress, then the rest: only the whole file is loaded, and swapped with its state.
    let v2 = variant("ma-crossover", 2);
    let mut f = std::fs::File::create(plugins.join("strat.wasm")).unwrap();
    std::io::Write::write_all(&mut f, &v2[..v2.len() / 3]).unwrap();
    std::io::Write::flush(&mut f).unwrap();
    std::thread::sleep(Duration::from_millis(30));
    std::io::Write::write_all(&mut f, &v2[v2.len() / 3..]).unwrap();
    drop(f);
    let swapped = event(&c, "plugin_swapped", |v| v["pipeline"] == "hot");
    assert_eq!(swapped["old_sha256"], registered["sha256"]);
    assert_ne!(swapped["new_sha256"], swapped["old_sha256"]);
    assert_eq!(swapped["state"], "snapshot", "{swapped}");
    assert_eq!(
        (
            swapped["old_version"].as_str(),
            swapped["new_version"].as_str()
        ),
        (Some("0.1.0"), Some("0.1.0"))
    );

    // Broken files are refused and the running version keeps running.
    for (bytes, reason) in [
        (
            b"random bytes with a .wasm name".to_vec(),
            "not a WebAssembly file",
        ),
        (v2[..v2.len() / 2].to_vec(), "corrupt or invalid component"),
        (
            std::fs::read(plugin("future-contract")).unwrap(),
            "tradehost:strategy@2.0.0",
        ),
    ] {
        std::fs::write(plugins.join("strat.wasm"), &bytes).unwrap();
        let refused = event(&c, "plugin_refused", |v| {
            v["file"] == "strat.wasm" && v["reason"].as_str().is_some_and(|r| r.contains(reason))
        });
        assert!(
            refused["reason"].as_str().unwrap().contains("strat.wasm"),
            "{refused}"
        );
    }
    assert_eq!(
        c.of("trading:events", "event")
            .iter()
            .filter(|e| e["event"] == "plugin_swapped")
            .count(),
        1,
        "no refused file was swapped in"
    );
    // The running version kept trading.
    more_than(hot_events_in());

    // Deleted: the pipeline stops cleanly; the neighbour carries on.
    std::fs::remove_file(plugins.join("strat.wasm")).unwrap();
    event(&c, "plugin_removed", |v| v["file"] == "strat.wasm");
    event(&c, "pipeline_stopped", |v| v["pipeline"] == "hot");
    assert!(
        !c.of("trading:events", "event")
            .iter()
            .any(|e| e["event"] == "pipeline_stopped" && e["pipeline"] == "steady")
    );
    stop(child);
}

#[test]
fn config_edits_apply_live_or_are_refused() {
    let server = RedisServer::start();
    let c = Collector::start(&server.url());
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(plugin("ma-crossover"), plugins.join("ma.wasm")).unwrap();
    let path = dir.path().join("pipelines.toml");
    let a = pipeline("a", "ma.wasm", 5, 3000);
    let b = pipeline("b", "ma.wasm", 7, 3000);
    std::fs::write(&path, config_text(dir.path(), &format!("{a}\n{b}"))).unwrap();
    let child = start(dir.path(), &server.url());
    event(&c, "pipeline_started", |v| v["pipeline"] == "a");
    event(&c, "pipeline_started", |v| v["pipeline"] == "b");

    // Change a's params, remove b, add c.
    let a2 = pipeline("a", "ma.wasm", 6, 3000);
    let cc = pipeline("c", "ma.wasm", 8, 3000);
    std::fs::write(&path, config_text(dir.path(), &format!("{a2}\n{cc}"))).unwrap();
    let applied = event(&c, "config_applied", |_| true);
    assert_eq!(applied["added"], serde_json::json!(["c"]));
    assert_eq!(applied["removed"], serde_json::json!(["b"]));
    assert_eq!(applied["updated"], serde_json::json!(["a"]));
    let swapped = event(&c, "plugin_swapped", |v| v["pipeline"] == "a");
    assert_eq!(swapped["cause"], "config changed");
    assert!(
        swapped["state"].as_str().unwrap().starts_with("warm-up"),
        "SMA(6) cannot restore SMA(5)'s state: {swapped}"
    );
    event(&c, "pipeline_started", |v| v["pipeline"] == "c");
    event(&c, "pipeline_stopped", |v| v["pipeline"] == "b");

    // A broken edit: refused with its place, the running configuration untouched.
    std::fs::write(
        &path,
        config_text(dir.path(), &format!("{a2}\n{cc}")).replace("fast = 8", "fast = [8]"),
    )
    .unwrap();
    let refused = event(&c, "config_refused", |_| true);
    let error = refused["error"].as_str().unwrap();
    assert!(
        error.contains("pipelines.toml:")
            && error.contains("pipelines[1].params.fast: must be a string, number or boolean"),
        "{error}"
    );
    assert!(refused["line"].as_u64().unwrap() > 0 && refused["column"].as_u64().unwrap() > 0);
    assert_eq!(
        c.of("trading:events", "event")
            .iter()
            .filter(|e| e["event"] == "config_applied")
            .count(),
        1
    );

    // Fixed again, and a reload on demand.
    std::fs::write(&path, config_text(dir.path(), &format!("{a2}\n{cc}"))).unwrap();
    let mut con = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let _: i64 = redis::cmd("PUBLISH")
        .arg("trading:commands")
        .arg(r#"{"v":1,"type":"command","id":"r1","cmd":"reload"}"#)
        .query(&mut con)
        .unwrap();
    let ack = c.wait_for(Duration::from_secs(10), |_, v| {
        v["type"] == "command_ack" && v["command_id"] == "r1" && v["role"] == "host"
    });
    assert_eq!(ack.expect("reload acknowledged")["ok"], true);
    stop(child);
}

fn spec(
    id: &str,
    crate_name: &str,
    params: &[(String, String)],
    days: u32,
    speed: f64,
    limits: SandboxLimits,
) -> PipelineSpec {
    PipelineSpec {
        id: id.into(),
        plugin_path: plugin(crate_name),
        params: params.to_vec(),
        symbols: vec!["NIFTY".into()],
        timeframe_secs: 60,
        source: tradehost::config::Source::Synthetic {
            seed: 3,
            days,
            speed,
            start_price: 21_700.0,
            option_chain: false,
        },
        user: None,
        limits,
        warmup_candles: 200,
        guard: tradehost::market::guard::GuardRules::default(),
        prices_kept: 100_000,
        trade_from_ms: None,
        record_dir: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_beat_lost_while_swapping_under_load() {
    let params = vec![
        ("fast".to_owned(), "5".to_owned()),
        ("slow".to_owned(), "20".to_owned()),
    ];
    let days = 120;
    let events_total = days as usize * 375;
    let expected = tradehost_tests::native_ma_signals(3, days, &params);
    let sandbox = Arc::new(Sandbox::new(SandboxLimits::live()).unwrap());
    let bus = Bus::embedded("trading");
    let events = Events::new(bus.clone(), "engine");
    let mut seen = bus.subscribe(&["trading:events".to_owned()]).await.unwrap();
    let loaded = sandbox.load_file(&plugin("ma-crossover")).unwrap();
    let (control_tx, control) = tokio::sync::watch::channel(Control::Run);
    let (swap_tx, swaps) = tokio::sync::mpsc::channel(4);
    let stats = Arc::new(PipelineStats::default());
    // 15,000 one-minute bars a second: a steady load above the 10,000 the test needs.
    let s = spec(
        "load",
        "ma-crossover",
        &params,
        days,
        15_000.0 * 60.0,
        SandboxLimits::live(),
    );
    let started = Instant::now();
    let task = tokio::spawn(pipeline::run(
        s,
        loaded,
        sandbox.clone(),
        bus.clone(),
        events,
        control,
        swaps,
        stats.clone(),
        None,
    ));
    let mut swaps_sent = 0;
    for n in 0..8u8 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if task.is_finished() {
            break;
        }
        let bytes = variant("ma-crossover", n);
        let p = sandbox.load_bytes(Path::new("strat.wasm"), &bytes).unwrap();
        let instance = sandbox.instantiate(&p, &params).unwrap();
        if swap_tx
            .send(Swap {
                instance,
                sha256: p.sha256().to_owned(),
                cause: "test".into(),
            })
            .await
            .is_err()
        {
            break; // the run ended first
        }
        swaps_sent += 1;
    }
    assert_eq!(task.await.unwrap(), PipelineEnd::Finished);
    let elapsed = started.elapsed();
    drop(control_tx);
    // How fast it went is the reload benchmark's business; here only that swaps came mid-run.
    let _ = elapsed;
    // The last swap can race the run's end: queued after the last bar was read, it is never applied.
    let applied = usize::try_from(stats.swaps.load(Ordering::Relaxed)).unwrap();
    assert!(applied >= 3, "only {applied} swaps happened during the run");
    assert!(
        applied == swaps_sent || applied + 1 == swaps_sent,
        "{applied} of {swaps_sent} swaps applied"
    );
    assert_eq!(
        stats.events_in.load(Ordering::Relaxed),
        events_total as u64,
        "every event processed exactly once"
    );
    assert_eq!(stats.events_skipped.load(Ordering::Relaxed), 0);
    assert_eq!(
        stats.signals_refused.load(Ordering::Relaxed),
        0,
        "no signal emitted twice"
    );
    assert_eq!(
        stats.signals_out.load(Ordering::Relaxed) as usize,
        expected,
        "the same signals as one uninterrupted native run"
    );
    assert_eq!(bus.log_len().await.unwrap(), expected);
    let mut states = Vec::new();
    while let Ok(Some((_, payload))) =
        tokio::time::timeout(Duration::from_millis(100), seen.recv()).await
    {
        let v: Value = serde_json::from_str(&payload).unwrap();
        if v["event"] == "plugin_swapped" {
            states.push(v["state"].as_str().unwrap_or("").to_owned());
        }
    }
    assert_eq!(
        states,
        vec!["snapshot".to_owned(); applied],
        "state carried by snapshot every time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugins_are_quarantined_with_back_off_and_the_neighbour_is_untouched() {
    let healthy_params = vec![
        ("fast".to_owned(), "5".to_owned()),
        ("slow".to_owned(), "20".to_owned()),
    ];
    let days = 4; // 1500 bars
    let expected = tradehost_tests::native_ma_signals(3, days, &healthy_params);
    let sandbox = Arc::new(Sandbox::new(SandboxLimits::live()).unwrap());
    for behaviour in [
        "loop-on-candle",
        "loop-in-init",
        "memory-bomb",
        "recursion",
        "panic",
        "trap-after",
        "flood",
    ] {
        // Each behaviour meets its own guard: the memory bomb's sixteen 1 MiB allocations get
        // the time to reach the memory cap on a loaded machine, rather than the 20 ms budget first.
        let per_event = Duration::from_millis(if behaviour == "memory-bomb" {
            2_000
        } else {
            20
        });
        let limits = SandboxLimits {
            cpu: CpuBudget::Time { per_event },
            memory_bytes: 16 << 20,
            ..SandboxLimits::live()
        };
        let bus = Bus::embedded("trading");
        let mut seen = bus.subscribe(&["trading:events".to_owned()]).await.unwrap();
        let events = Events::new(bus.clone(), "engine");
        let hostile_params = vec![
            ("behaviour".to_owned(), behaviour.to_owned()),
            ("n".to_owned(), "3".to_owned()),
        ];
        // Both fed at the same pace: about 4.5 s of bars.
        let speed = 20_000.0;
        let run = |id: &'static str, crate_name: &'static str, params: Vec<(String, String)>| {
            let (sandbox, bus, events) = (sandbox.clone(), bus.clone(), events.clone());
            let stats = Arc::new(PipelineStats::default());
            let s = spec(id, crate_name, &params, days, speed, limits.clone());
            let plugin = sandbox.load_file(&s.plugin_path).unwrap();
            let (_control_tx, control) = tokio::sync::watch::channel(Control::Run);
            let (_swap_tx, swaps) = tokio::sync::mpsc::channel(1);
            let st = stats.clone();
            let task = tokio::spawn(async move {
                let _keep = (_control_tx, _swap_tx);
                pipeline::run(s, plugin, sandbox, bus, events, control, swaps, st, None).await
            });
            (task, stats)
        };
        let (healthy, healthy_stats) = run("healthy", "ma-crossover", healthy_params.clone());
        let (hostile, hostile_stats) = run("hostile", "hostile", hostile_params);
        assert_eq!(healthy.await.unwrap(), PipelineEnd::Finished, "{behaviour}");
        assert_eq!(
            hostile.await.unwrap(),
            PipelineEnd::Finished,
            "{behaviour}: a failing plugin never takes its pipeline down for good"
        );
        assert_eq!(
            healthy_stats.events_in.load(Ordering::Relaxed),
            u64::from(days) * 375,
            "{behaviour}: the neighbour saw every event"
        );
        assert_eq!(
            healthy_stats.signals_out.load(Ordering::Relaxed) as usize,
            expected,
            "{behaviour}: and gave every signal"
        );
        assert!(
            hostile_stats.events_skipped.load(Ordering::Relaxed) > 0,
            "{behaviour}: events were skipped while quarantined"
        );
        let mut failures = Vec::new();
        while let Ok(Some((_, payload))) =
            tokio::time::timeout(Duration::from_millis(50), seen.recv()).await
        {
            let v: Value = serde_json::from_str(&payload).unwrap();
            if v["event"] == "plugin_failed" && v["pipeline"] == "hostile" {
                failures.push((
                    v["quarantined_for_ms"].as_u64().unwrap_or(0),
                    v["error"].as_str().unwrap_or("").to_owned(),
                ));
            }
            assert!(
                !(v["event"] == "plugin_failed" && v["pipeline"] == "healthy"),
                "{behaviour}: the healthy plugin failed: {v}"
            );
        }
        assert!(
            failures.len() >= 2,
            "{behaviour}: expected repeated failures, got {failures:?}"
        );
        let backoffs: Vec<u64> = failures.iter().map(|f| f.0).collect();
        assert_eq!(
            &backoffs[..3.min(backoffs.len())],
            &[1000, 2000, 4000][..3.min(backoffs.len())],
            "{behaviour}: back-off doubles from 1 s"
        );
        let first = &failures[0].1;
        let want = match behaviour {
            "loop-on-candle" => "on-candle exceeded its CPU budget",
            "loop-in-init" => "init exceeded its CPU budget",
            "memory-bomb" => "hit the memory cap",
            "recursion" => "call stack exhausted",
            "panic" => "hostile plugin panicked on purpose",
            "trap-after" => "trap after 3 good events",
            _ => "signals, more than the limit",
        };
        assert!(first.contains(want), "{behaviour}: {first}");
    }
}
