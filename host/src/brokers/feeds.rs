//! What a `broker` market source needs from the brokers stage: the account's
//! credentials, its feed address, and each symbol's token from the
//! instrument master, made into a [`FeedPlan`] for the market stage.
//!
//! Credentials are read again for every connection (a token renewed in the
//! environment, the secrets file or by a `token` command is used on the next
//! reconnect) and go only into the address handed to the socket.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use tokio::sync::{Mutex, watch};

use super::instruments::InstrumentMaster;
use super::{kite, upstox};
use super::secrets::{Secret, SecretStore};
use crate::bus::Bus;
use crate::config::Config;
use crate::market::feed::{Connector, FeedPlan, FeedResolver, Wire};

/// Tokens handed over by `token` commands, newest first over the secrets.
pub type TokenOverrides = Arc<RwLock<HashMap<String, Secret>>>;

/// A resolver reading accounts from the newest configuration in `configs`.
#[must_use]
pub fn resolver(configs: watch::Receiver<Arc<Config>>, bus: Bus, tokens: TokenOverrides) -> FeedResolver {
    let master = InstrumentMaster::new(bus);
    let loaded: Arc<Mutex<HashSet<String>>> = Arc::default();
    Arc::new(move |account: String, symbols: Vec<String>| {
        let (config, master, loaded, tokens) = (configs.borrow().clone(), master.clone(), loaded.clone(), tokens.clone());
        Box::pin(async move { plan(&config, &master, &loaded, tokens, &account, &symbols).await })
    })
}

async fn plan(config: &Config, master: &InstrumentMaster, loaded: &Mutex<HashSet<String>>, tokens: TokenOverrides, account: &str, symbols: &[String]) -> Result<FeedPlan, String> {
    let a = config.account(account).ok_or_else(|| format!("source account {account:?} is not configured"))?;
    let broker = a.broker.get_ref().clone();
    let wire = Wire::of(&broker).ok_or_else(|| format!("account {account}: broker {broker} has no market feed in this version (kite and upstox have)"))?;
    {
        // The master is read once per process and broker (the daily refresh of the orders side keeps a Redis hash fresh).
        let mut done = loaded.lock().await;
        if !done.contains(&broker) {
            let source = config.live.instruments.get(&broker).ok_or_else(|| format!("account {account}: a {broker} feed needs the instrument master: set [live] instruments.{broker}"))?;
            let source = if source.starts_with("http://") || source.starts_with("https://") { source.clone() } else { config.resolve(std::path::Path::new(source)).display().to_string() };
            master.load(&broker, &source).await.map_err(|e| format!("{broker} instrument master: {e}"))?;
            done.insert(broker.clone());
        }
    }
    let mut instruments = Vec::with_capacity(symbols.len());
    let mut unknown = Vec::new();
    for symbol in symbols {
        match master.feed_token(&broker, symbol).await.map_err(|e| e.to_string())? {
            Some(token) => instruments.push((symbol.clone(), token)),
            None => unknown.push(symbol.as_str()),
        }
    }
    if !unknown.is_empty() {
        return Err(format!("account {account}: not in the {broker} instrument master: {}", unknown.join(", ")));
    }
    let store = SecretStore::load(config.path.parent().unwrap_or_else(|| std::path::Path::new("."))).map_err(|e| e.to_string())?;
    let name = a.credentials.clone().unwrap_or_else(|| account.to_owned());
    let ws_url = a.ws_url.clone();
    let (id, name) = (account.to_owned(), name);
    let connect: Connector = match wire {
        Wire::Kite => Arc::new(move || {
            let c = store.credentials(&id, &name);
            let token = tokens.read().ok().and_then(|t| t.get(&id).cloned()).or(c.access_token);
            let mut url = ws_url.clone().unwrap_or_else(|| kite::DEFAULT_WS_URL.to_owned());
            // `wss://ws.kite.trade?…` has no path; a WebSocket request needs one.
            if !url.split_once("://").is_some_and(|(_, rest)| rest.contains('/')) {
                url.push('/');
            }
            let result = match (c.api_key, token) {
                (Some(key), Some(token)) => Ok(format!("{url}{}api_key={}&access_token={}", if url.contains('?') { '&' } else { '?' }, key.expose(), token.expose())),
                _ => Err(format!("account {id}: the kite feed needs an api_key and an access_token")),
            };
            Box::pin(async move { result })
        }),
        Wire::Upstox => {
            let c = store.credentials(&id, &name);
            let token = tokens.read().ok().and_then(|t| t.get(&id).cloned()).or(c.access_token).ok_or_else(|| format!("account {id}: the upstox feed needs an access_token"))?;
            let base = a.base_url.clone().unwrap_or_else(|| upstox::DEFAULT_URL.to_owned());
            let adapter = Arc::new(upstox::Upstox::new(&base, token, std::time::Duration::from_millis(config.live.timeout_ms)).map_err(|e| e.to_string())?);
            Arc::new(move || {
                let (adapter, tokens, id, fixed) = (adapter.clone(), tokens.clone(), id.clone(), ws_url.clone());
                Box::pin(async move {
                    if let Some(url) = fixed {
                        return Ok(url);
                    }
                    // A token handed over by a command since the last connection.
                    if let Some(t) = tokens.read().ok().and_then(|t| t.get(&id).cloned()) {
                        crate::brokers::Broker::set_token(adapter.as_ref(), t);
                    }
                    adapter.authorize_feed().await.map_err(|e| format!("authorizing the upstox feed: {e}"))
                })
            })
        }
    };
    Ok(FeedPlan { account: account.to_owned(), wire, instruments, connect })
}
