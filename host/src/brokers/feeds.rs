//! What a `broker` market source needs from the brokers stage: the account's
//! credentials, its feed address, and each symbol's token from the
//! instrument master, made into a [`FeedPlan`] for the market stage.
//!
//! It also follows the order updates brokers push ([`order_streams`]).
//!
//! Credentials are read again for every connection (a token renewed in the
//! environment, the secrets file or by a `token` command is used on the next
//! reconnect) and go only into the address handed to the socket.

use std::collections::HashSet;
use std::sync::Arc;

use crate::domain::BrokerKind;
use tokio::sync::{Mutex, watch};

use super::instruments::InstrumentMaster;
use super::live::LiveRouter;
use super::secrets::{Secret, SecretStore};
use super::{kite, openalgo, upstox};
use crate::bus::Bus;
use crate::bus::events::Event;
use crate::config::{Config, OrderUpdates};
use crate::market::feed::FeedItem;
use crate::market::feed::openalgo as openalgo_feed;
use crate::market::feed::socket::{self, SocketEvent, SocketSettings};
use crate::market::feed::{
    Backfill, ChainResolver, ChainSnapshot, ChainSource, Connector, FeedAddress, FeedPlan,
    FeedResolver, Wire,
};
use crate::market::recorder::OrderUpdateRecorder;
use crate::market::{ExpiryChain, OptionChain};

pub use crate::domain::secret::TokenOverrides;

/// The token a `token` command handed over for `account`, if any (it wins over the secrets).
fn overridden(tokens: &TokenOverrides, account: &str) -> Option<Secret> {
    tokens.read().ok().and_then(|t| t.get(account).cloned())
}

/// An Upstox adapter for account `a` (its `base_url`, `[live] timeout_ms`) with `token`.
fn upstox_adapter(
    config: &Config,
    a: &crate::config::Account,
    token: Secret,
) -> Result<Arc<upstox::Upstox>, String> {
    let base = a
        .base_url
        .clone()
        .unwrap_or_else(|| upstox::DEFAULT_URL.to_owned());
    upstox::Upstox::new(
        &base,
        token,
        std::time::Duration::from_millis(config.live.timeout_ms),
    )
    .map(Arc::new)
    .map_err(|e| e.to_string())
}

/// A resolver reading accounts from the newest configuration in `configs`.
#[must_use]
pub fn resolver(
    configs: watch::Receiver<Arc<Config>>,
    bus: Bus,
    tokens: TokenOverrides,
) -> FeedResolver {
    let master = InstrumentMaster::new(bus);
    let loaded: Arc<Mutex<HashSet<String>>> = Arc::default();
    Arc::new(move |account: String, symbols: Vec<String>| {
        let (config, master, loaded, tokens) = (
            configs.borrow().clone(),
            master.clone(),
            loaded.clone(),
            tokens.clone(),
        );
        Box::pin(async move { plan(&config, &master, &loaded, tokens, &account, &symbols).await })
    })
}

async fn plan(
    config: &Config,
    master: &InstrumentMaster,
    loaded: &Mutex<HashSet<String>>,
    tokens: TokenOverrides,
    account: &str,
    symbols: &[String],
) -> Result<FeedPlan, String> {
    let a = config
        .account(account)
        .ok_or_else(|| format!("source account {account:?} is not configured"))?;
    let broker = a.broker.get_ref().clone();
    let wire = Wire::of(&broker)
        .ok_or_else(|| format!("account {account}: broker {broker} has no market feed"))?;
    let instruments = match wire {
        // OpenAlgo names instruments by its own symbols, which ours are: no master to read.
        Wire::OpenAlgo => symbols
            .iter()
            .map(|s| (s.clone(), openalgo_feed::instrument(s)))
            .collect(),
        // An order stream subscribes nothing: no master needed.
        Wire::Kite | Wire::Upstox if symbols.is_empty() => Vec::new(),
        Wire::Kite | Wire::Upstox => {
            tokens_from_master(config, master, loaded, &broker, account, symbols).await?
        }
    };
    let store = Arc::new(SecretStore::beside(config).map_err(|e| e.to_string())?);
    let (id, name) = (
        account.to_owned(),
        a.credentials.clone().unwrap_or_else(|| account.to_owned()),
    );
    let backfill =
        (!symbols.is_empty()).then(|| backfill(config, a, wire, store.clone(), tokens.clone()));
    let ws_url = a.ws_url.clone();
    let connect: Connector = match wire {
        Wire::Kite => Arc::new(move || {
            let c = store.credentials(&id, &name);
            let token = overridden(&tokens, &id).or(c.access_token);
            let mut url = ws_url
                .clone()
                .unwrap_or_else(|| kite::DEFAULT_WS_URL.to_owned());
            // `wss://ws.kite.trade?…` has no path; a WebSocket request needs one.
            if !url
                .split_once("://")
                .is_some_and(|(_, rest)| rest.contains('/'))
            {
                url.push('/');
            }
            let result = match (c.api_key, token) {
                (Some(key), Some(token)) => Ok(FeedAddress::url(format!(
                    "{url}{}api_key={}&access_token={}",
                    if url.contains('?') { '&' } else { '?' },
                    key.expose(),
                    token.expose()
                ))),
                _ => Err(format!(
                    "account {id}: the kite feed needs an api_key and an access_token"
                )),
            };
            Box::pin(async move { result })
        }),
        Wire::Upstox => {
            let c = store.credentials(&id, &name);
            let token = overridden(&tokens, &id)
                .or(c.access_token)
                .ok_or_else(|| format!("account {id}: the upstox feed needs an access_token"))?;
            let adapter = upstox_adapter(config, a, token)?;
            Arc::new(move || {
                let (adapter, tokens, id, fixed) =
                    (adapter.clone(), tokens.clone(), id.clone(), ws_url.clone());
                Box::pin(async move {
                    if let Some(url) = fixed {
                        return Ok(FeedAddress::url(url));
                    }
                    // A token handed over by a command since the last connection.
                    if let Some(t) = overridden(&tokens, &id) {
                        crate::brokers::Broker::set_token(adapter.as_ref(), t);
                    }
                    adapter
                        .authorize_feed()
                        .await
                        .map(FeedAddress::url)
                        .map_err(|e| format!("authorizing the upstox feed: {e}"))
                })
            })
        }
        Wire::OpenAlgo => {
            let url = ws_url.unwrap_or_else(|| openalgo_feed::DEFAULT_WS_URL.to_owned());
            // No instruments: the account's order stream (`subscribe_orders` after the login).
            let orders = symbols.is_empty();
            Arc::new(move || {
                let c = store.credentials(&id, &name);
                // OpenAlgo's API key is its whole login; a `token` command may replace it.
                let key = overridden(&tokens, &id).or(c.api_key);
                let result = key
                    .map(|k| FeedAddress {
                        url: url.clone(),
                        login: std::iter::once(openalgo_feed::authenticate(k.expose()))
                            .chain(orders.then(openalgo_feed::subscribe_orders))
                            .collect(),
                    })
                    .ok_or_else(|| format!("account {id}: the openalgo feed needs an api_key"));
                Box::pin(async move { result })
            })
        }
    };
    Ok(FeedPlan {
        account: account.to_owned(),
        wire,
        instruments,
        connect,
        backfill,
    })
}

/// The one-minute bars a feed missed, from the account's broker: Kite's historical candles,
/// Upstox's intraday candles, OpenAlgo's history; with the credentials of the moment.
fn backfill(
    config: &Config,
    a: &crate::config::Account,
    wire: Wire,
    store: Arc<SecretStore>,
    tokens: TokenOverrides,
) -> Backfill {
    let (id, name) = (
        a.id.get_ref().clone(),
        a.credentials
            .clone()
            .unwrap_or_else(|| a.id.get_ref().clone()),
    );
    let base = a.base_url.clone();
    let timeout = std::time::Duration::from_millis(config.live.timeout_ms);
    Arc::new(move |token: String, from: i64, to: i64| {
        let c = store.credentials(&id, &name);
        let handed_over = overridden(&tokens, &id);
        let (base, id) = (base.clone(), id.clone());
        Box::pin(async move {
            let bars = match wire {
                Wire::Kite => {
                    let (Some(key), Some(token_now)) = (c.api_key, handed_over.or(c.access_token))
                    else {
                        return Err(format!(
                            "account {id}: kite candles need an api_key and an access_token"
                        ));
                    };
                    let adapter = kite::Kite::new(
                        base.as_deref().unwrap_or(kite::DEFAULT_URL),
                        key,
                        token_now,
                        timeout,
                    )
                    .map_err(|e| e.to_string())?;
                    adapter.minute_candles(&token, from, to).await
                }
                Wire::Upstox => {
                    let token_now = handed_over.or(c.access_token).ok_or_else(|| {
                        format!("account {id}: upstox candles need an access_token")
                    })?;
                    let adapter = upstox::Upstox::new(
                        base.as_deref().unwrap_or(upstox::DEFAULT_URL),
                        token_now,
                        timeout,
                    )
                    .map_err(|e| e.to_string())?;
                    adapter.minute_candles(&token, from, to).await
                }
                Wire::OpenAlgo => {
                    let key = handed_over
                        .or(c.api_key)
                        .ok_or_else(|| format!("account {id}: openalgo candles need an api_key"))?;
                    let adapter = openalgo::OpenAlgo::new(
                        base.as_deref().unwrap_or(openalgo::DEFAULT_URL),
                        key,
                        "tradehost",
                        timeout,
                    )
                    .map_err(|e| e.to_string())?;
                    adapter.minute_candles(&token, from, to).await
                }
            };
            bars.map_err(|e| e.to_string())
        })
    })
}

/// `(symbol, token)` of each symbol from `broker`'s instrument master, read once per process.
async fn tokens_from_master(
    config: &Config,
    master: &InstrumentMaster,
    loaded: &Mutex<HashSet<String>>,
    broker: &str,
    account: &str,
    symbols: &[String],
) -> Result<Vec<(String, String)>, String> {
    {
        // The daily refresh of the orders side keeps a Redis hash fresh; here it is read at the first feed's start.
        let mut done = loaded.lock().await;
        if !done.contains(broker) {
            let source = config.live.instruments.get(broker).ok_or_else(|| format!("account {account}: a {broker} feed needs the instrument master: set [live] instruments.{broker}"))?;
            let source = config.resolve_source(source);
            master
                .load(broker, &source)
                .await
                .map_err(|e| format!("{broker} instrument master: {e}"))?;
            done.insert(broker.to_owned());
        }
    }
    let mut instruments = Vec::with_capacity(symbols.len());
    let mut unknown = Vec::new();
    for symbol in symbols {
        match master
            .feed_token(broker, symbol)
            .await
            .map_err(|e| e.to_string())?
        {
            Some(token) => instruments.push((symbol.clone(), token)),
            None => unknown.push(symbol.as_str()),
        }
    }
    if !unknown.is_empty() {
        return Err(format!(
            "account {account}: not in the {broker} instrument master: {}",
            unknown.join(", ")
        ));
    }
    Ok(instruments)
}

/// What an order stream reports, for the events channel.
pub type StreamEvents = Arc<dyn Fn(Event) + Send + Sync>;

/// Follow the order updates each live account's broker pushes (Kite: order
/// postbacks on a ticker connection of its own, subscribed to nothing; Upstox:
/// its portfolio stream with `update_types=order`; OpenAlgo: `order_update`
/// messages on its WebSocket after `subscribe_orders`), for
/// accounts with `order_updates = "push"`. A pushed update makes the router
/// read that account's working orders at once (the broker's status call stays
/// the one the journal trusts), and so does every (re)connect, so orders that
/// changed while the stream was down are synced. Polling goes on as the fallback.
#[must_use]
pub fn order_streams(
    config: &Config,
    configs: watch::Receiver<Arc<Config>>,
    bus: Bus,
    router: &LiveRouter,
    tokens: TokenOverrides,
    on_event: StreamEvents,
) -> Vec<tokio::task::JoinHandle<()>> {
    let resolve = resolver(configs, bus, tokens.clone());
    let mut tasks = Vec::new();
    for (account, broker) in router.brokers() {
        let Some(a) = config
            .account(account)
            .filter(|a| a.order_updates == OrderUpdates::Push)
        else {
            continue;
        };
        // Kite pushes order updates on its ticker, Upstox on its portfolio stream, OpenAlgo on
        // its WebSocket (`subscribe_orders`).
        let upstox_stream = match BrokerKind::parse(broker.name()) {
            Some(BrokerKind::Kite | BrokerKind::OpenAlgo) => None,
            Some(BrokerKind::Upstox) => match upstox_stream(config, a, tokens.clone()) {
                Ok(c) => Some(c),
                Err(e) => {
                    on_event(Event::feed_error(format!("order stream of {account}"), e));
                    continue;
                }
            },
            _ => continue,
        };
        let (resolve, router, on_event, account) = (
            resolve.clone(),
            router.clone(),
            on_event.clone(),
            account.clone(),
        );
        let mut recorder = config
            .host
            .record_dir
            .as_ref()
            .map(|d| OrderUpdateRecorder::new(&config.resolve(d), &account));
        tasks.push(tokio::spawn(async move {
            let plan = match upstox_stream {
                Some(connect) => FeedPlan {
                    account: account.clone(),
                    wire: Wire::Upstox,
                    instruments: Vec::new(),
                    connect,
                    backfill: None,
                },
                None => match resolve(account.clone(), Vec::new()).await {
                    Ok(p) => p,
                    Err(e) => {
                        on_event(Event::feed_error(format!("order stream of {account}"), e));
                        return;
                    }
                },
            };
            let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
            let sockets = tokio::spawn(socket::run(plan, SocketSettings::default(), tx));
            while let Some(event) = rx.recv().await {
                match event {
                    SocketEvent::Item(FeedItem::Order(update)) => {
                        // Recorded before it is acted on: a fill it causes is never missing from the recording.
                        if let Some(Err(e)) = recorder
                            .as_mut()
                            .map(|r| r.record(crate::domain::time::now_ms(), &update))
                        {
                            on_event(Event::feed_error(
                                "recorder",
                                format!(
                                    "recording order updates of {account}: {e}; recording stops"
                                ),
                            ));
                            recorder = None;
                        }
                        router.poke(&account);
                        // Kite and Upstox: `order_id`, `status`, `tag`; OpenAlgo: `orderid`, `order_status`.
                        let field = |keys: &[&str]| {
                            keys.iter()
                                .find_map(|k| update.get(*k).cloned())
                                .unwrap_or(serde_json::Value::Null)
                        };
                        on_event(Event::OrderUpdate {
                            account: account.clone(),
                            order_id: field(&["order_id", "orderid"]),
                            status: field(&["status", "order_status"]),
                            tag: field(&["tag"]),
                        });
                    }
                    SocketEvent::Up { reconnect, .. } => {
                        // Updates may have been missed while it was down: nothing is decided
                        // until the working orders are read against the broker's book.
                        router.sync(&account);
                        on_event(Event::OrderStreamConnected {
                            account: account.clone(),
                            reconnect,
                        });
                    }
                    SocketEvent::Down { reason, .. } => on_event(Event::OrderStreamDown {
                        account: account.clone(),
                        reason,
                    }),
                    SocketEvent::Item(FeedItem::BrokerError(e)) => on_event(Event::feed_error(
                        format!("order stream of {account}"),
                        crate::bus::message::printable(&e, 300),
                    )),
                    SocketEvent::Item(FeedItem::Tick(_)) | SocketEvent::Malformed { .. } => {}
                }
            }
            sockets.abort();
        }));
    }
    tasks
}

/// A chain resolver reading accounts from the newest configuration in `configs`:
/// Upstox's `/v2/option/chain` for the underlying's instrument key, OpenAlgo's
/// `/api/v1/optionchain`, or Kite's quotes (`/quote`) over the contracts of the
/// instrument master, at the given expiry or the nearest one (moved to the next after it passes).
#[must_use]
pub fn chain_resolver(
    configs: watch::Receiver<Arc<Config>>,
    bus: Bus,
    tokens: TokenOverrides,
) -> ChainResolver {
    let master = InstrumentMaster::new(bus);
    let loaded: Arc<Mutex<HashSet<String>>> = Arc::default();
    Arc::new(
        move |account: String, underlying: String, expiry: Option<String>| {
            let (config, master, loaded, tokens) = (
                configs.borrow().clone(),
                master.clone(),
                loaded.clone(),
                tokens.clone(),
            );
            Box::pin(async move {
                chain_source(
                    &config, &master, &loaded, &tokens, &account, underlying, expiry,
                )
                .await
            })
        },
    )
}

/// Where an account's option chains come from.
enum ChainBroker {
    /// Upstox, by the underlying's instrument key.
    Upstox(Arc<upstox::Upstox>, String),
    /// OpenAlgo, by the underlying's own symbol.
    OpenAlgo(Arc<openalgo::OpenAlgo>),
    /// Kite, which has no chain call: the contracts from the instrument master, quoted
    /// with the spot (`NSE:NIFTY 50`).
    Kite(Arc<kite::Kite>, InstrumentMaster, String),
}

impl ChainBroker {
    fn set_token(&self, token: Secret) {
        match self {
            Self::Upstox(a, _) => crate::brokers::Broker::set_token(a.as_ref(), token),
            Self::OpenAlgo(a) => crate::brokers::Broker::set_token(a.as_ref(), token),
            Self::Kite(a, ..) => crate::brokers::Broker::set_token(a.as_ref(), token),
        }
    }

    async fn nearest_expiry(
        &self,
        underlying: &str,
        today: &str,
    ) -> Result<Option<String>, String> {
        match self {
            Self::Upstox(a, key) => a
                .nearest_expiry(key, today)
                .await
                .map_err(|e| e.to_string()),
            Self::OpenAlgo(a) => Ok(a
                .option_expiries(underlying)
                .await
                .map_err(|e| e.to_string())?
                .into_iter()
                .find(|e| e.as_str() >= today)),
            Self::Kite(_, master, _) => Ok(master
                .option_expiries("kite", underlying)
                .await
                .map_err(|e| e.to_string())?
                .into_iter()
                .find(|e| e.as_str() >= today)),
        }
    }

    async fn chain(
        &self,
        underlying: &str,
        expiry: &str,
    ) -> Result<
        (
            rust_decimal::Decimal,
            Vec<crate::market::StrikeRow>,
            Vec<(rust_decimal::Decimal, bool, String)>,
        ),
        String,
    > {
        match self {
            Self::Upstox(a, key) => a.option_chain(key, expiry).await.map_err(|e| e.to_string()),
            Self::OpenAlgo(a) => a
                .option_chain(underlying, expiry)
                .await
                .map_err(|e| e.to_string()),
            Self::Kite(a, master, spot) => {
                let contracts = master
                    .option_contracts("kite", underlying, expiry)
                    .await
                    .map_err(|e| e.to_string())?;
                if contracts.is_empty() {
                    return Err(format!(
                        "no {underlying} options expiring {expiry} in the kite instrument master"
                    ));
                }
                a.option_chain(spot, &contracts)
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    }
}

async fn chain_source(
    config: &Config,
    master: &InstrumentMaster,
    loaded: &Mutex<HashSet<String>>,
    tokens: &TokenOverrides,
    account: &str,
    underlying: String,
    expiry: Option<String>,
) -> Result<ChainSource, String> {
    let a = config
        .account(account)
        .ok_or_else(|| format!("source account {account:?} is not configured"))?;
    let store = SecretStore::beside(config).map_err(|e| e.to_string())?;
    let name = a.credentials.clone().unwrap_or_else(|| account.to_owned());
    let c = store.credentials(account, &name);
    let timeout = std::time::Duration::from_millis(config.live.timeout_ms);
    let handed_over = overridden(tokens, account);
    let broker = match a.kind() {
        Some(BrokerKind::Upstox) => {
            let key = tokens_from_master(
                config,
                master,
                loaded,
                "upstox",
                account,
                std::slice::from_ref(&underlying),
            )
            .await?
            .remove(0)
            .1;
            let token = handed_over
                .or(c.access_token)
                .ok_or_else(|| format!("account {account}: option chains need an access_token"))?;
            ChainBroker::Upstox(upstox_adapter(config, a, token)?, key)
        }
        Some(BrokerKind::OpenAlgo) => {
            let key = handed_over
                .or(c.api_key)
                .ok_or_else(|| format!("account {account}: option chains need an api_key"))?;
            let base = a
                .base_url
                .clone()
                .unwrap_or_else(|| openalgo::DEFAULT_URL.to_owned());
            ChainBroker::OpenAlgo(Arc::new(
                openalgo::OpenAlgo::new(&base, key, "tradehost", timeout)
                    .map_err(|e| e.to_string())?,
            ))
        }
        Some(BrokerKind::Kite) => {
            // The master gives the contracts; it is loaded as a kite feed loads it.
            tokens_from_master(
                config,
                master,
                loaded,
                "kite",
                account,
                std::slice::from_ref(&underlying),
            )
            .await?;
            let spot = match master
                .index_name("kite", &underlying)
                .await
                .map_err(|e| e.to_string())?
            {
                Some(index) => format!("NSE:{index}"),
                None => format!("NSE:{underlying}"),
            };
            let token = handed_over
                .or(c.access_token)
                .ok_or_else(|| format!("account {account}: option chains need an access_token"))?;
            let key = c
                .api_key
                .ok_or_else(|| format!("account {account}: option chains need an api_key"))?;
            let base = a
                .base_url
                .clone()
                .unwrap_or_else(|| kite::DEFAULT_URL.to_owned());
            ChainBroker::Kite(
                Arc::new(kite::Kite::new(&base, key, token, timeout).map_err(|e| e.to_string())?),
                master.clone(),
                spot,
            )
        }
        Some(BrokerKind::Paper) | None => {
            return Err(format!(
                "account {account}: option chains are read from kite, upstox and openalgo accounts, not {}",
                a.broker.get_ref()
            ));
        }
    };
    let broker = Arc::new(broker);
    let fixed = expiry.is_some();
    let chosen = Arc::new(Mutex::new(expiry));
    let (tokens, id) = (tokens.clone(), account.to_owned());
    Ok(Arc::new(move || {
        let (broker, chosen, underlying, tokens, id) = (
            broker.clone(),
            chosen.clone(),
            underlying.clone(),
            tokens.clone(),
            id.clone(),
        );
        Box::pin(async move {
            if let Some(t) = overridden(&tokens, &id) {
                broker.set_token(t);
            }
            let now = crate::domain::time::now_ms();
            let today = crate::domain::time::format_ist_date(now);
            let expiry = {
                let mut e = chosen.lock().await;
                // "Nearest": chosen again once the day passes it.
                if e.as_ref()
                    .is_none_or(|x| !fixed && x.as_str() < today.as_str())
                {
                    *e = broker
                        .nearest_expiry(&underlying, &today)
                        .await
                        .map_err(|e| format!("expiries of {underlying}: {e}"))?;
                }
                e.clone().ok_or_else(|| {
                    format!("{underlying} has no option expiry on or after {today}")
                })?
            };
            let (spot, strikes, tokens) = broker
                .chain(&underlying, &expiry)
                .await
                .map_err(|e| format!("option chain of {underlying} {expiry}: {e}"))?;
            if strikes.is_empty() {
                return Err(format!("option chain of {underlying} {expiry}: no strikes"));
            }
            Ok(ChainSnapshot {
                chain: OptionChain {
                    underlying,
                    ts_ms: now,
                    spot,
                    expiries: vec![ExpiryChain { expiry, strikes }],
                },
                tokens,
            })
        })
    }))
}

/// The connector of an Upstox account's order-update stream: a one-time address each time.
fn upstox_stream(
    config: &Config,
    a: &crate::config::Account,
    tokens: TokenOverrides,
) -> Result<Connector, String> {
    let account = a.id.get_ref();
    let store = SecretStore::beside(config).map_err(|e| e.to_string())?;
    let name = a.credentials.clone().unwrap_or_else(|| account.clone());
    let token = store
        .credentials(account, &name)
        .access_token
        .ok_or_else(|| {
            format!("account {account}: the upstox order stream needs an access_token")
        })?;
    let adapter = upstox_adapter(config, a, token)?;
    let id = account.clone();
    Ok(Arc::new(move || {
        // A token handed over by a command since the last connection.
        if let Some(t) = overridden(&tokens, &id) {
            crate::brokers::Broker::set_token(adapter.as_ref(), t);
        }
        let adapter = adapter.clone();
        Box::pin(async move {
            adapter
                .authorize_order_stream()
                .await
                .map(FeedAddress::url)
                .map_err(|e| format!("authorizing the upstox order stream: {e}"))
        })
    }))
}
