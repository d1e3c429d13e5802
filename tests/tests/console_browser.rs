//! The web console in a real browser: Debian's headless `chromium` driven over WebDriver
//! (`chromedriver`, `fantoccini`) against a real `tradehost run` (paper, a synthetic
//! market, `[console] listen`). Log in; see signals arrive without reloading; place a
//! manual order with a double click and see one order, filled; build a short straddle and
//! read its max profit, max loss and breakevens off the page (worked out by hand below);
//! place a limit ticket and cancel it; pick NIFTY's option chain and buy the call at the
//! money with a click; arm and cancel a level watcher, and one that fires; flatten; a
//! viewer sees no trader controls and is refused.
//! Screenshots of each step go to `target/console-screenshots/`. `./scripts/test`
//! installs chromium and chromedriver; without them (and not on CI) this says so and skips.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tradehost_tests::{
    Killed as Stop, console_password_hash as hash, free_port, tradehost_bin, write_config,
};

/// Poll `script` (a JS expression) in the page until it is true.
async fn until(c: &Client, script: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        if c.execute(&format!("return !!({script});"), vec![])
            .await
            .ok()
            == Some(Value::Bool(true))
        {
            return;
        }
        if Instant::now() > deadline {
            shot(c, "failed").await;
            let text = c.execute("return document.getElementById('ticket-state').textContent + ' | ' + document.getElementById('orders').innerText + ' | ' + document.body.innerText;", vec![]).await.unwrap_or_default();
            panic!(
                "{what}: not seen in 45 s; the page says: {}",
                text.as_str()
                    .unwrap_or_default()
                    .chars()
                    .take(1500)
                    .collect::<String>()
            );
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Wait until the order `sql` finds for `param` (its state) is filled.
async fn until_filled(db: &rusqlite::Connection, sql: &str, param: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state: Option<String> = db.query_row(sql, [param], |r| r.get(0)).ok();
        if state.as_deref() == Some("filled") {
            return;
        }
        assert!(Instant::now() < deadline, "{what} did not fill: {state:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn shot(c: &Client, name: &str) {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(format!("{name}.png")),
        c.screenshot().await.unwrap(),
    )
    .unwrap();
}

async fn log_in(c: &Client, user: &str, password: &str) {
    c.find(Locator::Id("user"))
        .await
        .unwrap()
        .send_keys(user)
        .await
        .unwrap();
    c.find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys(password)
        .await
        .unwrap();
    c.find(Locator::Id("login-button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        c,
        &format!("document.getElementById('who').textContent.startsWith('{user} (')"),
        "logged in",
    )
    .await;
}

async fn set(c: &Client, id: &str, value: &str) {
    let e = c.find(Locator::Id(id)).await.unwrap();
    e.clear().await.unwrap();
    e.send_keys(value).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trader_and_a_viewer_in_a_real_browser() {
    let (chromium, chromedriver) = ("/usr/bin/chromium", "chromedriver");
    if !std::path::Path::new(chromium).exists()
        || Command::new(chromedriver)
            .arg("--version")
            .output()
            .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs the browser tests: ./scripts/test installs chromium and chromium-driver"
        );
        eprintln!(
            "console_browser: chromium or chromedriver missing (./scripts/test installs them); skipped"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(
        dir.path(),
        &format!(
            r#"
[console]
listen = "127.0.0.1:{port}"

[[accounts]]
id = "paper-1"
capital = 10000000
mode = "long"
sizing = {{ kind = "fixed", qty = 10 }}
risk = {{ cooldown_secs = 0 }}

[[pipelines]]
id = "nifty-ma"
plugin = "ma_crossover.wasm"
symbols = ["NIFTY"]
accounts = ["paper-1"]
source = {{ kind = "synthetic", seed = 3, days = 5, speed = 300 }}
[pipelines.params]
fast = 5
slow = 20

# The same market with its option chain: the basket builder's strikes and prices.
[[pipelines]]
id = "nifty-oi"
plugin = "oi_crossover.wasm"
symbols = ["NIFTY"]
accounts = ["paper-1"]
source = {{ kind = "synthetic", seed = 3, days = 5, speed = 300, option_chain = true }}
"#
        ),
        1,
    );
    std::fs::write(
        dir.path().join("secrets.toml"),
        format!("[console.users.asha]\npassword_hash = \"{}\"\nrole = \"trader\"\n\n[console.users.vik]\npassword_hash = \"{}\"\nrole = \"viewer\"\n", hash("asha-pass-123"), hash("vik-pass-456")),
    )
    .unwrap();
    let _run = Stop(
        Command::new(tradehost_bin())
            .args(["run", "--quiet", "--config"])
            .arg(&config)
            .env_remove("REDIS_URL")
            .env_remove("TRADEHOST_SECRETS")
            .env_remove("TRADING_MODE")
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let driver_port = free_port();
    let _driver = Stop(
        Command::new(chromedriver)
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let profile = tempfile::tempdir().unwrap();
    let caps = json!({ "goog:chromeOptions": { "binary": chromium, "args": [
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--window-size=1280,1800", format!("--user-data-dir={}", profile.path().display()),
    ] } });
    let caps = caps.as_object().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    let c = loop {
        match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{driver_port}"))
            .await
        {
            Ok(c) => break c,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "chromedriver did not start a session: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let base = format!("http://127.0.0.1:{port}/");
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(&base).await.is_err() {
        assert!(Instant::now() < deadline, "run did not serve the console");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    c.goto(&base).await.unwrap();
    shot(&c, "01-login").await;
    log_in(&c, "asha", "asha-pass-123").await;
    // Signals and fills arrive without a reload.
    until(
        &c,
        "document.querySelector('#feed .signal') !== null",
        "a signal on the live feed",
    )
    .await;
    until(&c, "[...document.querySelectorAll('#orders td.state')].some(td => td.textContent === 'filled')", "a filled order").await;
    shot(&c, "02-live").await;

    // A manual order, double-clicked: one order, and it fills.
    set(&c, "t-instrument", "NIFTY").await;
    set(&c, "t-qty", "2").await;
    let place = c.find(Locator::Id("t-submit")).await.unwrap();
    place.click().await.unwrap();
    place.click().await.unwrap();
    until(
        &c,
        "document.getElementById('ticket-state').textContent.startsWith('order filled')",
        "the ticket filled",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let db = rusqlite::Connection::open(dir.path().join("journal.sqlite")).unwrap();
    let manual: Vec<(String, String)> = db
        .prepare("SELECT qty, state FROM orders WHERE pipeline = 'basket'")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(
        manual,
        vec![("2".to_owned(), "filled".to_owned())],
        "a double click is one order"
    );
    shot(&c, "03-ticket").await;

    // A limit ticket far below the market: it works at its price, unfilled, until cancelled from the orders table.
    c.find(Locator::Id("t-type"))
        .await
        .unwrap()
        .select_by_label("LIMIT")
        .await
        .unwrap();
    until(&c, "!document.getElementById('t-price').classList.contains('hidden') && document.getElementById('t-trigger').classList.contains('hidden')", "the limit price box").await;
    set(&c, "t-price", "1").await;
    c.find(Locator::Id("t-submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(&c, "document.getElementById('ticket-state').textContent.startsWith('order accepted (LIMIT 1)')", "the limit ticket working").await;
    shot(&c, "03b-limit").await;
    c.find(Locator::Css("#orders button[data-cancel]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        &c,
        "document.getElementById('ticket-state').textContent.startsWith('order cancelled')",
        "the limit ticket cancelled",
    )
    .await;
    let limit: (String, String, String) =
        db.query_row("SELECT order_type, limit_price, state FROM orders WHERE pipeline = 'basket' AND order_type IS NOT NULL", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap();
    assert_eq!(
        limit,
        ("LIMIT".to_owned(), "1".to_owned(), "cancelled".to_owned())
    );

    // A short straddle from the template: sell 75 of the 25,000 CE at 180 and of the PE at 170.
    // By hand: credit (180 + 170) × 75 = 26,250, the most it can make; unlimited loss; it breaks
    // even 350 either side of the strike, at 24,650 and 25,350.
    set(&c, "b-underlying", "25000").await;
    set(&c, "b-days", "7").await;
    c.execute("const t = document.getElementById('b-template'); t.value = 'straddle'; t.dispatchEvent(new Event('change'));", vec![]).await.unwrap();
    c.execute(
        "const p = document.querySelectorAll('#b-legs tr.leg .price'); p[0].value = '180'; p[1].value = '170'; document.querySelectorAll('#b-legs tr.leg .qty').forEach((q) => q.value = '75');",
        vec![],
    )
    .await
    .unwrap();
    c.find(Locator::Id("b-value"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        &c,
        "document.getElementById('max-loss') !== null",
        "the payoff figures",
    )
    .await;
    let text = |id: &'static str| {
        let c = c.clone();
        async move { c.find(Locator::Id(id)).await.unwrap().text().await.unwrap() }
    };
    assert_eq!(text("net-premium").await, "26,250");
    assert_eq!(text("max-profit").await, "26,250");
    assert_eq!(text("max-loss").await, "unlimited");
    assert_eq!(text("breakevens").await, "24650, 25350");
    let curve: i64 = c
        .execute(
            "return document.querySelectorAll('#payoff polyline').length;",
            vec![],
        )
        .await
        .unwrap()
        .as_i64()
        .unwrap();
    assert_eq!(curve, 2, "the payoff at expiry and today");
    shot(&c, "04-straddle").await;

    // From the option chain: pick NIFTY, buy the call at the money with one click; the leg
    // carries our name of the contract and its last price, and the basket fills.
    c.execute(
        "document.querySelectorAll('#b-legs tr.leg').forEach((r) => r.remove());",
        vec![],
    )
    .await
    .unwrap();
    until(
        &c,
        "[...document.querySelectorAll('#b-chain option')].some(o => o.textContent === 'NIFTY')",
        "NIFTY among the chains",
    )
    .await;
    c.find(Locator::Id("b-chain"))
        .await
        .unwrap()
        .select_by_label("NIFTY")
        .await
        .unwrap();
    until(&c, "document.querySelector('#b-chain-table tr.atm') !== null && document.getElementById('b-expiry').options.length > 0", "the chain table").await;
    until(&c, "[...document.querySelectorAll('#b-chain-table tr.atm td')].filter(td => /^[0-9.]+$/.test(td.textContent)).length === 3", "the chain's prices at the money").await;
    shot(&c, "04b-chain").await;
    c.find(Locator::Css(
        "#b-chain-table tr.atm button[data-leg='CE buy']",
    ))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    let leg = c.execute("const r = document.querySelector('#b-legs tr.leg'); return [r.querySelector('.symbol').value, r.querySelector('.price').value, r.querySelector('.strike').value];", vec![]).await.unwrap();
    let (symbol, price, strike) = (
        leg[0].as_str().unwrap().to_owned(),
        leg[1].as_str().unwrap().to_owned(),
        leg[2].as_str().unwrap().to_owned(),
    );
    let atm_ce: String = c
        .execute(
            "return document.querySelectorAll('#b-chain-table tr.atm td')[1].textContent;",
            vec![],
        )
        .await
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        symbol.starts_with("NIFTY")
            && symbol.ends_with(&format!("{strike}CE"))
            && symbol.len() == "NIFTY".len() + 7 + strike.len() + 2,
        "{symbol}"
    );
    assert_eq!(price, atm_ce, "the leg's price is the chain's");
    c.find(Locator::Id("b-send"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        &c,
        "document.getElementById('basket-state').textContent.startsWith('sent')",
        "the basket sent",
    )
    .await;
    until_filled(
        &db,
        "SELECT state FROM orders WHERE pipeline = 'basket' AND instrument = ?1",
        &symbol,
        "the call from the chain",
    )
    .await;

    // A level watcher, armed then cancelled.
    set(&c, "w-instrument", "NIFTY").await;
    set(&c, "w-level", "99999999").await;
    c.find(Locator::Id("w-submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(&c, "[...document.querySelectorAll('#watchers td.state')].some(td => td.textContent === 'armed')", "the watcher armed").await;
    shot(&c, "05-watcher").await;
    c.find(Locator::Css("#watchers button[data-unwatch]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(&c, "[...document.querySelectorAll('#watchers td.state')].some(td => td.textContent === 'cancelled')", "the watcher cancelled").await;
    // A trap just above the market: the first bar that reaches it fires it, once, and its order fills.
    let spot: f64 = c
        .execute(
            "return fetch('/api/chain?underlying=NIFTY').then(r => r.json()).then(c => c.spot);",
            vec![],
        )
        .await
        .unwrap()
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    set(&c, "w-level", &format!("{:.2}", spot + 3.0)).await;
    c.find(Locator::Id("w-submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(&c, "[...document.querySelectorAll('#watchers td.state')].some(td => td.textContent === 'fired')", "the watcher fired").await;
    shot(&c, "05b-fired").await;
    let fired: (String, i64) = db
        .query_row(
            "SELECT watch_id, fired_ts FROM watchers WHERE state = 'fired'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    until_filled(
        &db,
        "SELECT state FROM orders WHERE signal_id LIKE 'basket/' || ?1 || '/%'",
        &fired.0,
        "the watcher's order",
    )
    .await;

    // Flatten the account (after confirming): the flatten shows on the feed and the position goes.
    until(
        &c,
        "document.querySelector('#accounts table.positions td') !== null",
        "a position",
    )
    .await;
    c.find(Locator::Css("button[data-flatten='paper-1']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.accept_alert().await.unwrap();
    until(&c, "[...document.querySelectorAll('#feed div')].some(d => d.textContent.startsWith('console_action') && d.textContent.includes('flatten'))", "the flatten on the feed").await;
    shot(&c, "06-flattened").await;

    // A viewer: no trader controls, and the server refuses an action sent anyway.
    c.find(Locator::Id("logout"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        &c,
        "!document.getElementById('login').classList.contains('hidden')",
        "the login form again",
    )
    .await;
    log_in(&c, "vik", "vik-pass-456").await;
    until(&c, "document.getElementById('ticket-panel').classList.contains('hidden') && document.getElementById('kill').classList.contains('hidden')", "trader controls hidden").await;
    let status = c
        .execute("return fetch('/api/command', { method: 'POST', headers: { 'content-type': 'application/json', 'x-csrf-token': csrf }, body: JSON.stringify({ cmd: 'kill' }) }).then(r => r.status);", vec![])
        .await
        .unwrap();
    assert_eq!(status, json!(403));
    shot(&c, "07-viewer").await;
    c.close().await.unwrap();
}
