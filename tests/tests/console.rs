//! The web console over HTTP: a real `tradehost run` (paper, a synthetic market) and a
//! real `tradehost console`, on a Redis server the test starts. No session: 401; a wrong
//! or missing CSRF token: 403; a viewer acting: 403; a login flood: 429. A trader's
//! manual order, sent twice with one request id, is one order, and it fills; the live
//! feed shows signals as they happen; `/metrics` counts them; no response ever carries a
//! password, a hash or a broker credential.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tradehost_tests::{
    Collector, Killed as Stop, RedisServer, console_password_hash as hash, free_port,
    tradehost_bin, write_config,
};

const TRADER_PASSWORD: &str = "correct horse battery staple";
const VIEWER_PASSWORD: &str = "viewer-only-pass-42";
const BROKER_KEY: &str = "sk-live-BROKERKEY-9f8e7d";

/// `tradehost <args> --config <config>`, on the Redis at `redis` (else its embedded bus),
/// paper, the secrets file beside the config.
fn tradehost(args: &[&str], config: &std::path::Path, redis: Option<&str>) -> Child {
    let mut cmd = Command::new(tradehost_bin());
    cmd.args(args)
        .arg("--config")
        .arg(config)
        .env_remove("TRADEHOST_SECRETS")
        .env_remove("TRADING_MODE")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    match redis {
        Some(url) => cmd.env("REDIS_URL", url),
        None => cmd.env_remove("REDIS_URL"),
    };
    cmd.spawn().unwrap()
}

/// Every response seen, to be searched for secrets at the end.
#[derive(Default)]
struct Seen(Vec<String>);

struct Web {
    http: reqwest::Client,
    base: String,
}

impl Web {
    async fn call(
        &self,
        seen: &mut Seen,
        method: &str,
        path: &str,
        cookie: Option<&str>,
        csrf: Option<&str>,
        body: Option<Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut req = match method {
            "POST" => self.http.post(format!("{}{path}", self.base)),
            _ => self.http.get(format!("{}{path}", self.base)),
        };
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        if let Some(t) = csrf {
            req = req.header("x-csrf-token", t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let (status, headers) = (r.status().as_u16(), r.headers().clone());
        let text = r.text().await.unwrap();
        seen.0.push(format!("{headers:?} {text}"));
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn login(
        &self,
        seen: &mut Seen,
        user: &str,
        password: &str,
    ) -> (u16, Option<String>, Value) {
        let (status, headers, body) = self
            .call(
                seen,
                "POST",
                "/api/login",
                None,
                None,
                Some(json!({ "user": user, "password": password })),
            )
            .await;
        let cookie = headers
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (status, cookie, body)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_guards_its_doors_places_a_ticket_once_and_never_sends_a_secret() {
    let redis = RedisServer::start();
    let collector = Collector::start(&redis.url());
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        r#"
[[accounts]]
id = "paper-1"
capital = 10000000
mode = "long"
sizing = { kind = "fixed", qty = 10 }
risk = { cooldown_secs = 0 }

[[pipelines]]
id = "nifty-ma"
plugin = "ma_crossover.wasm"
symbols = ["NIFTY"]
accounts = ["paper-1"]
source = { kind = "synthetic", seed = 3, days = 2, speed = 600 }
[pipelines.params]
fast = 5
slow = 20
"#,
        1,
    );
    let (trader_hash, viewer_hash) = (hash(TRADER_PASSWORD), hash(VIEWER_PASSWORD));
    std::fs::write(
        dir.path().join("secrets.toml"),
        format!("[accounts.kite-x]\napi_key = \"{BROKER_KEY}\"\n\n[console.users.asha]\npassword_hash = \"{trader_hash}\"\nrole = \"trader\"\n\n[console.users.vik]\npassword_hash = \"{viewer_hash}\"\nrole = \"viewer\"\n"),
    )
    .unwrap();
    let port = free_port();
    let url = redis.url();
    let spawn = |args: &[&str]| tradehost(args, &config, Some(&url));
    let _run = Stop(spawn(&["run", "--quiet"]));
    let listen = format!("127.0.0.1:{port}");
    let _console = Stop(spawn(&["console", "--listen", &listen]));
    let web = Web {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
        base: format!("http://{listen}"),
    };
    let mut seen = Seen::default();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = web.http.get(&web.base).send().await {
            assert_eq!(r.status().as_u16(), 200);
            let page = r.text().await.unwrap();
            assert!(page.contains("tradehost console"));
            break;
        }
        assert!(Instant::now() < deadline, "the console did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // No session: 401, for reading and for acting.
    for (method, path) in [
        ("GET", "/api/state"),
        ("GET", "/api/events"),
        ("GET", "/api/session"),
        ("POST", "/api/command"),
        ("POST", "/api/orders"),
    ] {
        let (status, _, _) = web
            .call(
                &mut seen,
                method,
                path,
                None,
                None,
                Some(json!({ "cmd": "kill" })),
            )
            .await;
        assert_eq!(status, 401, "{method} {path}");
    }
    assert_eq!(web.login(&mut seen, "asha", "wrong").await.0, 401);
    assert_eq!(web.login(&mut seen, "nobody", TRADER_PASSWORD).await.0, 401);

    // The trader logs in: an HttpOnly, SameSite=Strict cookie (not Secure over plain HTTP) and a CSRF token.
    let (status, cookie, body) = web.login(&mut seen, "asha", TRADER_PASSWORD).await;
    assert_eq!(status, 200, "{body}");
    let cookie = cookie.expect("a session cookie");
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict")
            && !cookie.contains("Secure"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_owned();
    let csrf = body["csrf"].as_str().unwrap().to_owned();
    assert_eq!(body["role"], "trader");

    // Acting without the CSRF token, or with another: 403, and nothing reaches the bus.
    assert_eq!(
        web.call(
            &mut seen,
            "POST",
            "/api/command",
            Some(&session),
            None,
            Some(json!({ "cmd": "kill" }))
        )
        .await
        .0,
        403
    );
    assert_eq!(
        web.call(
            &mut seen,
            "POST",
            "/api/command",
            Some(&session),
            Some("0123456789abcdef"),
            Some(json!({ "cmd": "kill" }))
        )
        .await
        .0,
        403
    );
    // Commands the page may not send, and bad ones, are refused naming why.
    let (status, _, body) = web
        .call(
            &mut seen,
            "POST",
            "/api/command",
            Some(&session),
            Some(&csrf),
            Some(json!({ "cmd": "shutdown" })),
        )
        .await;
    assert_eq!(
        (
            status,
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("not allowed"))
        ),
        (400, true),
        "{body}"
    );
    let (status, _, body) = web
        .call(
            &mut seen,
            "POST",
            "/api/command",
            Some(&session),
            Some(&csrf),
            Some(json!({ "cmd": "flatten" })),
        )
        .await;
    assert_eq!(
        (
            status,
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("account"))
        ),
        (400, true),
        "{body}"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        collector.of("trading:commands", "command").is_empty(),
        "nothing was sent yet"
    );

    // The live feed: signals appear as they happen.
    let mut events = web
        .http
        .get(format!("{}/api/events", web.base))
        .header("cookie", &session)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status().as_u16(), 200);
    assert!(
        events.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut stream = String::new();
    let deadline = Instant::now() + Duration::from_secs(45);
    while !stream.contains("\"type\":\"signal\"") {
        assert!(
            Instant::now() < deadline,
            "no signal on the live feed: {}",
            &stream[..stream.len().min(2000)]
        );
        if let Ok(Ok(Some(chunk))) =
            tokio::time::timeout(Duration::from_secs(5), events.chunk()).await
        {
            stream.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    seen.0.push(stream.clone());
    drop(events);

    // A manual order, sent twice with one request id (a double click), and once more
    // concurrently (a second tab): one order, and it fills.
    let ticket = json!({ "request_id": "ticket-0001-abc", "account": "paper-1", "instrument": "NIFTY", "side": "buy", "qty": "3", "stop_loss": "1", "target": "99999999" });
    let (mut s1, mut s2, mut s3) = (Seen::default(), Seen::default(), Seen::default());
    let (a, b, c) = tokio::join!(
        web.call(
            &mut s1,
            "POST",
            "/api/orders",
            Some(&session),
            Some(&csrf),
            Some(ticket.clone())
        ),
        web.call(
            &mut s2,
            "POST",
            "/api/orders",
            Some(&session),
            Some(&csrf),
            Some(ticket.clone())
        ),
        web.call(
            &mut s3,
            "POST",
            "/api/orders",
            Some(&session),
            Some(&csrf),
            Some(ticket.clone())
        ),
    );
    seen.0.extend(s1.0.into_iter().chain(s2.0).chain(s3.0));
    assert_eq!((a.0, b.0, c.0), (202, 202, 202), "{:?}", (a.2, b.2, c.2));
    let db_path = dir.path().join("journal.sqlite");
    let deadline = Instant::now() + Duration::from_secs(30);
    let manual = loop {
        let rows: Vec<(String, String, String)> = rusqlite::Connection::open(&db_path)
            .and_then(|db| {
                db.prepare("SELECT qty, state, side FROM orders WHERE pipeline = 'basket' AND account = 'paper-1'")?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .unwrap_or_default();
        if rows.iter().any(|r| r.1 == "filled") {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "the manual order did not fill: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        manual,
        vec![("3".to_owned(), "filled".to_owned(), "buy".to_owned())],
        "one order for three submissions of one ticket"
    );
    let (status, _, state) = web
        .call(&mut seen, "GET", "/api/state", Some(&session), None, None)
        .await;
    assert_eq!(status, 200);
    assert!(
        state["orders"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["pipeline"] == "basket"
                && o["state"] == "filled"
                && o["history"].as_array().is_some_and(|h| !h.is_empty())),
        "{state}"
    );
    assert!(
        state["pipelines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["pipeline"] == "nifty-ma")
    );

    // A limit ticket far below the market works at its price, unfilled, until the trader cancels it.
    let limit = json!({ "request_id": "ticket-0002-lim", "account": "paper-1", "instrument": "NIFTY", "side": "buy", "qty": "2", "order_type": "LIMIT", "price": "1" });
    assert_eq!(
        web.call(
            &mut seen,
            "POST",
            "/api/orders",
            Some(&session),
            Some(&csrf),
            Some(limit)
        )
        .await
        .0,
        202
    );
    let bad = json!({ "request_id": "ticket-0003-bad", "account": "paper-1", "instrument": "NIFTY", "side": "buy", "qty": "2", "order_type": "SL" , "price": "1" });
    let (status, _, body) = web
        .call(
            &mut seen,
            "POST",
            "/api/orders",
            Some(&session),
            Some(&csrf),
            Some(bad),
        )
        .await;
    assert_eq!(
        (
            status,
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("SL needs a trigger"))
        ),
        (400, true),
        "{body}"
    );
    let limit_order = |state: &Value| {
        state["orders"].as_array().and_then(|o| {
            o.iter()
                .find(|o| o["pipeline"] == "basket" && o["order_type"] == "LIMIT")
                .cloned()
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let working = loop {
        let (_, _, state) = web
            .call(&mut seen, "GET", "/api/state", Some(&session), None, None)
            .await;
        if let Some(o) = limit_order(&state).filter(|o| o["state"] == "accepted") {
            break o;
        }
        assert!(
            Instant::now() < deadline,
            "the limit ticket is not working: {}",
            state["orders"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        (
            working["price"].as_str(),
            working["qty"].as_str(),
            working["fill_price"].is_null()
        ),
        (Some("1"), Some("2"), true),
        "{working}"
    );
    let coid = working["client_order_id"].as_str().unwrap().to_owned();
    assert_eq!(
        web.call(
            &mut seen,
            "POST",
            "/api/command",
            Some(&session),
            Some(&csrf),
            Some(json!({ "cmd": "cancel", "client_order_id": coid }))
        )
        .await
        .0,
        202
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, _, state) = web
            .call(&mut seen, "GET", "/api/state", Some(&session), None, None)
            .await;
        if limit_order(&state).is_some_and(|o| o["state"] == "cancelled") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the limit ticket was not cancelled: {}",
            state["orders"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let over = collector
        .wait_for(Duration::from_secs(15), |_, v| {
            v["basket"] == "order-ticket-0002-lim"
                && v["event"].as_str().is_some_and(|e| e != "basket_placed")
        })
        .expect("the ticket's end");
    assert_eq!(
        (over["event"].as_str(), over.get("alert")),
        (Some("basket_cancelled"), None),
        "a trader's cancel is not a failure: {over}"
    );

    // The viewer watches but cannot act.
    let (status, viewer_cookie, body) = web.login(&mut seen, "vik", VIEWER_PASSWORD).await;
    assert_eq!((status, body["role"].as_str()), (200, Some("viewer")));
    let viewer = viewer_cookie.unwrap().split(';').next().unwrap().to_owned();
    let viewer_csrf = body["csrf"].as_str().unwrap().to_owned();
    assert_eq!(
        web.call(&mut seen, "GET", "/api/state", Some(&viewer), None, None)
            .await
            .0,
        200
    );
    for (path, b) in [
        (
            "/api/command",
            json!({ "cmd": "flatten", "account": "paper-1" }),
        ),
        ("/api/orders", ticket.clone()),
    ] {
        let (status, _, body) = web
            .call(
                &mut seen,
                "POST",
                path,
                Some(&viewer),
                Some(&viewer_csrf),
                Some(b),
            )
            .await;
        assert_eq!(status, 403, "{path}: {body}");
    }

    // A level watcher: armed through the page, kept in the journal, listed, cancelled; a viewer cannot arm one.
    let trap = json!({ "request_id": "trap-0001-abc", "account": "paper-1", "instrument": "NIFTY", "direction": "up", "level": "10000000", "side": "buy", "qty": "1" });
    assert_eq!(
        web.call(
            &mut seen,
            "POST",
            "/api/watchers",
            Some(&viewer),
            Some(&viewer_csrf),
            Some(trap.clone())
        )
        .await
        .0,
        403
    );
    assert_eq!(
        web.call(
            &mut seen,
            "POST",
            "/api/watchers",
            Some(&session),
            Some(&csrf),
            Some(trap)
        )
        .await
        .0,
        202
    );
    let watcher_state = |state: Value| {
        state["watchers"].as_array().and_then(|w| {
            w.iter()
                .find(|w| w["watch_id"] == "watch-trap-0001-abc")
                .map(|w| w["state"].as_str().unwrap_or("").to_owned())
        })
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, _, state) = web
            .call(&mut seen, "GET", "/api/state", Some(&session), None, None)
            .await;
        if watcher_state(state.clone()).as_deref() == Some("armed") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the watcher was not armed: {}",
            state["watchers"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        web.call(
            &mut seen,
            "POST",
            "/api/watchers/cancel",
            Some(&session),
            Some(&csrf),
            Some(json!({ "watch_id": "watch-trap-0001-abc" }))
        )
        .await
        .0,
        202
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, _, state) = web
            .call(&mut seen, "GET", "/api/state", Some(&session), None, None)
            .await;
        if watcher_state(state.clone()).as_deref() == Some("cancelled") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the watcher was not cancelled: {}",
            state["watchers"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The trader flattens: the command goes on the bus, and the action is an event naming her.
    let (status, _, body) = web
        .call(
            &mut seen,
            "POST",
            "/api/command",
            Some(&session),
            Some(&csrf),
            Some(json!({ "cmd": "flatten", "account": "paper-1" })),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let sent = collector
        .wait_for(Duration::from_secs(10), |c, v| {
            c == "trading:commands" && v["cmd"] == "flatten"
        })
        .expect("the flatten command on the bus");
    assert_eq!(sent["account"], "paper-1");
    let did = collector
        .wait_for(Duration::from_secs(10), |_, v| {
            v["event"] == "console_action" && v["action"] == "flatten"
        })
        .expect("the action as an event");
    assert_eq!(
        (did["user"].as_str(), did["access"].as_str()),
        (Some("asha"), Some("trader"))
    );
    let sent: Vec<Value> = collector
        .of("trading:commands", "command")
        .into_iter()
        .filter(|c| c["id"] == "order-ticket-0001-abc")
        .collect();
    assert_eq!(
        sent.len(),
        3,
        "each submission reached the bus; the order manager placed one"
    );
    assert_eq!(
        sent[0]["legs"],
        json!([{ "instrument": "NIFTY", "side": "buy", "qty": "3", "stop_loss": "1", "target": "99999999" }]),
        "the ticket's bracket goes with its leg"
    );

    // Metrics.
    let (status, _, metrics) = web
        .call(&mut seen, "GET", "/metrics", None, None, None)
        .await;
    let text = metrics.as_str().unwrap_or_default().to_owned();
    assert_eq!(status, 200);
    assert!(
        text.contains("tradehost_signals_total{pipeline=\"nifty-ma\"}"),
        "{text}"
    );
    assert!(
        text.contains("tradehost_console_actions_total{action=\"order\"} 4"),
        "three submissions of one ticket and a limit ticket: {text}"
    );
    assert!(
        text.contains("tradehost_order_transitions_total{state=\"filled\"}"),
        "{text}"
    );
    // What the services report in their heartbeats: latencies, staleness, the plugin's fuel and memory, reconnects.
    let count = |text: &str, prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let (_, _, metrics) = web
            .call(&mut seen, "GET", "/metrics", None, None, None)
            .await;
        let text = metrics.as_str().unwrap_or_default().to_owned();
        let reported = [
            "tradehost_tick_to_signal_seconds_count{pipeline=\"nifty-ma\"} ",
            "tradehost_signal_to_order_seconds_count ",
            "tradehost_journal_commit_seconds_count ",
            "tradehost_plugin_busy_seconds_total{pipeline=\"nifty-ma\"} ",
            "tradehost_plugin_memory_bytes{pipeline=\"nifty-ma\"} ",
        ];
        if reported
            .iter()
            .all(|p| count(&text, p).is_some_and(|n| n > 0.0))
        {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the heartbeats' metrics are missing or zero:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        count(
            &text,
            "tradehost_feed_staleness_seconds{pipeline=\"nifty-ma\"} "
        )
        .is_some(),
        "{text}"
    );
    // A live pipeline's budget is in time: its fuel is reported, and is zero.
    assert_eq!(
        count(&text, "tradehost_plugin_fuel_total{pipeline=\"nifty-ma\"} "),
        Some(0.0),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("tradehost_redis_reconnects_total{service=")),
        "{text}"
    );

    // A login flood from one address: after five failures in a minute (two above, three
    // here), 429, even with the right password.
    for _ in 0..3 {
        assert_eq!(web.login(&mut seen, "asha", "guess").await.0, 401);
    }
    let (status, _, _) = web
        .call(
            &mut seen,
            "POST",
            "/api/login",
            None,
            None,
            Some(json!({ "user": "asha", "password": TRADER_PASSWORD })),
        )
        .await;
    assert_eq!(status, 429);

    // No secret in anything the console sent.
    for text in &seen.0 {
        for secret in [
            TRADER_PASSWORD,
            VIEWER_PASSWORD,
            BROKER_KEY,
            trader_hash.as_str(),
            viewer_hash.as_str(),
            "$argon2",
        ] {
            assert!(
                !text.contains(secret),
                "a response carries a secret ({}…): {}",
                &secret[..6],
                &text[..text.len().min(300)]
            );
        }
    }
}

/// `[console] listen` serves the console from `run` itself, on its embedded bus: the demo's way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_the_console_on_its_embedded_bus_when_the_config_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(
        dir.path(),
        &format!(
            r#"
[console]
listen = "127.0.0.1:{port}"

[live]
instruments = {{ kite = "instruments.csv" }}

[[accounts]]
id = "paper-1"
capital = 10000000
mode = "both"
sizing = {{ kind = "lots", lots = 1, lot_size = 50 }}

[[pipelines]]
id = "nifty-ma"
plugin = "ma_crossover.wasm"
symbols = ["NIFTY"]
accounts = ["paper-1"]
source = {{ kind = "synthetic", seed = 3, days = 2, speed = 600 }}

[[pipelines]]
id = "nifty-oi"
plugin = "oi_crossover.wasm"
symbols = ["NIFTY"]
accounts = ["paper-1"]
source = {{ kind = "synthetic", seed = 2, days = 2, speed = 600, option_chain = true }}
"#
        ),
        1,
    );
    // A broker's instrument master, in Kite's documented CSV layout (`GET /instruments`).
    std::fs::write(
        dir.path().join("instruments.csv"),
        "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,lot_size,instrument_type,segment,exchange\n\
         738561,2885,RELIANCE,\"RELIANCE INDUSTRIES\",0,,0,0.05,1,EQ,NSE,NSE\n\
         256265,1001,NIFTY 50,\"NIFTY 50\",0,,0,0,0,EQ,INDICES,NSE\n\
         12345678,48225,NIFTY40JAN26000CE,\"NIFTY\",0,2040-01-26,26000,0.05,65,CE,NFO-OPT,NFO\n\
         12345679,48226,NIFTY40JAN26000PE,\"NIFTY\",0,2040-01-26,26000,0.05,65,PE,NFO-OPT,NFO\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("secrets.toml"),
        format!(
            "[console.users.asha]\npassword_hash = \"{}\"\nrole = \"trader\"\n",
            hash(TRADER_PASSWORD)
        ),
    )
    .unwrap();
    let _run = Stop(tradehost(&["run", "--quiet"], &config, None));
    let web = Web {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
        base: format!("http://127.0.0.1:{port}"),
    };
    let mut seen = Seen::default();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (cookie, _) = loop {
        if let Ok(r) = web
            .http
            .post(format!("{}/api/login", web.base))
            .json(&json!({ "user": "asha", "password": TRADER_PASSWORD }))
            .send()
            .await
        {
            assert_eq!(r.status().as_u16(), 200);
            let cookie = r.headers()["set-cookie"]
                .to_str()
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .to_owned();
            break (cookie, r.text().await.unwrap());
        }
        assert!(Instant::now() < deadline, "run did not serve the console");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Signals reach the page's state from the embedded bus.
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let (status, _, state) = web
            .call(&mut seen, "GET", "/api/state", Some(&cookie), None, None)
            .await;
        assert_eq!(status, 200, "{state}");
        if state["pipelines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["pipeline"] == "nifty-ma" && p["last_signal"].is_object())
        {
            break;
        }
        assert!(Instant::now() < deadline, "no signal seen: {state}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // The symbol box completes from the instrument master, ours and the broker's names.
    let (status, _, found) = web
        .call(
            &mut seen,
            "GET",
            "/api/instruments?q=reli",
            Some(&cookie),
            None,
            None,
        )
        .await;
    assert_eq!(
        (status, found["instruments"].clone()),
        (200, json!(["RELIANCE"])),
        "{found}"
    );
    let (_, _, found) = web
        .call(
            &mut seen,
            "GET",
            "/api/instruments?q=NIFTY26JAN40",
            Some(&cookie),
            None,
            None,
        )
        .await;
    assert_eq!(
        found["instruments"],
        json!(["NIFTY26JAN4026000CE", "NIFTY26JAN4026000PE"]),
        "our names of the master's contracts"
    );

    // The option chain the basket builder picks from: the synthetic chain's quoted
    // strikes with their prices, and the master's expiry, listed though unquoted.
    let deadline = Instant::now() + Duration::from_secs(30);
    let chain = loop {
        let (_, _, chain) = web
            .call(
                &mut seen,
                "GET",
                "/api/chain?underlying=NIFTY",
                Some(&cookie),
                None,
                None,
            )
            .await;
        if chain["rows"].as_array().is_some_and(|r| {
            r.iter()
                .any(|r| r["ce"]["last"].is_string() && r["pe"]["last"].is_string())
        }) {
            break chain;
        }
        assert!(Instant::now() < deadline, "no option chain: {chain}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let expiries: Vec<String> = serde_json::from_value(chain["expiries"].clone()).unwrap();
    assert!(
        expiries.len() >= 2 && expiries.last().map(String::as_str) == Some("2040-01-26"),
        "{expiries:?}"
    );
    assert_eq!(
        chain["expiry"],
        expiries[0].as_str(),
        "the nearest expiry first"
    );
    let spot: f64 = chain["spot"].as_str().unwrap().parse().unwrap();
    let days: f64 = chain["days_to_expiry"].as_str().unwrap().parse().unwrap();
    assert!(spot > 1000.0 && (0.0..=40.0).contains(&days), "{chain}");
    let lot = chain["lot_size"].as_u64().unwrap();
    assert_eq!(
        lot, 50,
        "the account's lot: the bundled contract rules list NIFTY's from late 2024, the synthetic market is in January 2024"
    );
    // The row at the money: its contracts' names are ours, and they trade.
    let rows = chain["rows"].as_array().unwrap();
    let atm = rows
        .iter()
        .filter(|r| r["ce"]["last"].is_string() && r["pe"]["last"].is_string())
        .min_by(|a, b| {
            let d =
                |r: &Value| (r["strike"].as_str().unwrap().parse::<f64>().unwrap() - spot).abs();
            d(a).total_cmp(&d(b))
        });
    let atm = atm.unwrap();
    let (ce, pe) = (
        atm["ce"]["symbol"].as_str().unwrap().to_owned(),
        atm["pe"]["symbol"].as_str().unwrap().to_owned(),
    );
    assert!(
        ce.starts_with("NIFTY") && ce.ends_with(&format!("{}CE", atm["strike"].as_str().unwrap())),
        "{ce}"
    );
    let (_, _, session) = web
        .call(&mut seen, "GET", "/api/session", Some(&cookie), None, None)
        .await;
    let csrf = session["csrf"].as_str().unwrap().to_owned();
    let straddle = json!({ "request_id": "straddle-0001", "account": "paper-1", "legs": [
        { "instrument": ce, "side": "sell", "qty": lot.to_string() }, { "instrument": pe, "side": "sell", "qty": lot.to_string() } ] });
    let (status, _, body) = web
        .call(
            &mut seen,
            "POST",
            "/api/baskets",
            Some(&cookie),
            Some(&csrf),
            Some(straddle),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, _, state) = web
            .call(&mut seen, "GET", "/api/state", Some(&cookie), None, None)
            .await;
        let filled: Vec<&str> = state["orders"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["pipeline"] == "basket" && o["state"] == "filled")
            .filter_map(|o| o["instrument"].as_str())
            .collect();
        if filled.contains(&ce.as_str()) && filled.contains(&pe.as_str()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the straddle from the chain did not fill: {}",
            state["orders"]
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
