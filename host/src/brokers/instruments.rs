//! The instrument master: the brokers' instrument CSVs loaded into a
//! symbol → token map, so that every order resolves in O(1) and an unknown
//! symbol is refused before anything is sent.
//!
//! Kite's CSV (`GET /instruments`): `instrument_token, exchange_token,
//! tradingsymbol, name, last_price, expiry, strike, tick_size, lot_size,
//! instrument_type, segment, exchange`. Upstox's: `instrument_key,
//! exchange_token, tradingsymbol, name, last_price, expiry, strike, tick_size,
//! lot_size, instrument_type, option_type, exchange`. Columns are found by
//! name, so either order works. Keys are `EQ:<symbol>` and `FO:<symbol>`;
//! values `<token>|<lot size>` and, after a tab, the broker's trading symbol.
//!
//! Each broker names F&O contracts its own way: Kite monthly `NIFTY24MAR20800CE`
//! and weekly `NIFTY2432120800CE`, Upstox `NIFTY 20800 CE 28 MAR 24`. Ours is
//! OpenAlgo's, `NIFTY28MAR2420800CE` (underlying, expiry `DDMMMYY`, strike,
//! CE/PE; `NIFTY28MAR24FUT`). A contract is therefore never recognised by its
//! name: from each row's underlying, expiry, strike and type our symbol is made,
//! and keyed to the broker's own trading symbol, which is what its orders carry.
//! (The broker's name is keyed too, so either can be asked for.) With a Redis bus the map is the hash
//! `<prefix>:instruments:<broker>`, replaced atomically on each load; with the
//! embedded bus it is in memory.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use rust_decimal::Decimal;

use super::Segment;
use crate::bus::Bus;

/// One instrument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instrument {
    /// The broker's token (Kite: `instrument_token`; Upstox: `instrument_key`).
    pub token: String,
    /// Units per lot (1 for equity).
    pub lot_size: u64,
    /// The broker's own trading symbol (Kite's `NIFTY24MAR20800CE` for our `NIFTY28MAR2420800CE`).
    pub symbol: String,
    /// The exchange's tick, as the master gives it (`tick_size`); `None` when it does not.
    pub tick: Option<Decimal>,
}

/// A broker's instrument file that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}:{line}: {field}: {message}")]
pub struct MasterError {
    /// The file or URL.
    pub source_name: String,
    /// 1-based line.
    pub line: usize,
    /// The column.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn split_csv(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// Parse a Kite or Upstox instrument CSV (`broker` says which) into `(key, value)` pairs.
///
/// # Errors
/// A missing column or a row without a token, with its line.
pub fn parse(
    broker: &str,
    source_name: &str,
    text: &str,
) -> Result<Vec<(String, String)>, MasterError> {
    let err = |line: usize, field: &str, message: String| MasterError {
        source_name: source_name.to_owned(),
        line,
        field: field.to_owned(),
        message,
    };
    let mut lines = text.lines().enumerate();
    let header = lines
        .next()
        .map(|(_, h)| split_csv(h.trim_start_matches('\u{feff}')))
        .unwrap_or_default();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h.trim() == name)
            .ok_or_else(|| err(1, name, format!("no {name} column in the header")))
    };
    let token_col = col(if broker == "upstox" {
        "instrument_key"
    } else {
        "instrument_token"
    })?;
    let (symbol_col, exchange_col, lot_col) =
        (col("tradingsymbol")?, col("exchange")?, col("lot_size")?);
    let segment_col = header.iter().position(|h| h.trim() == "segment");
    let tick_col = header.iter().position(|h| h.trim() == "tick_size");
    let optional = |name: &str| header.iter().position(|h| h.trim() == name);
    let (name_col, expiry_col, strike_col, type_col, option_col) = (
        optional("name"),
        optional("expiry"),
        optional("strike"),
        optional("instrument_type"),
        optional("option_type"),
    );
    let mut out = Vec::new();
    // The options of each underlying by expiry, for chains made from the master (Kite's).
    let mut chains: std::collections::BTreeMap<(String, String), Vec<OptionContract>> =
        std::collections::BTreeMap::new();
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let row = split_csv(line);
        let get = |c: usize| row.get(c).map(|s| s.trim()).unwrap_or_default();
        let exchange = get(exchange_col);
        // Kite: NSE / NFO (indices: segment INDICES); Upstox: NSE_EQ / NSE_FO / NSE_INDEX.
        let index = (exchange == "NSE" && segment_col.is_some_and(|c| get(c) == "INDICES"))
            || exchange == "NSE_INDEX";
        let segment = match exchange {
            _ if index => None,
            "NSE" | "NSE_EQ" => Some(Segment::Equity),
            "NFO" | "NSE_FO" => Some(Segment::Derivative),
            _ => continue, // other exchanges: not traded here
        };
        let token = get(token_col);
        if token.is_empty() {
            return Err(err(i + 1, &header[token_col], "empty".into()));
        }
        let symbol = get(symbol_col);
        // Indices are not tradable, but their ticks feed strategies: `IX:` keys, for feeds only.
        let Some(segment) = segment else {
            out.push((format!("{INDEX_KEY}:{symbol}"), format!("{token}|1")));
            continue;
        };
        // A lot that does not read is an error naming the row, never a lot of 1.
        let lot = get(lot_col)
            .parse::<Decimal>()
            .ok()
            .filter(|l| *l >= Decimal::ONE && l.fract().is_zero())
            .and_then(|l| u64::try_from(l).ok())
            .ok_or_else(|| {
                err(
                    i + 1,
                    &header[lot_col],
                    format!(
                        "{:?} is not a lot size (a whole number of units)",
                        get(lot_col)
                    ),
                )
            })?;
        // The tick, where the master gives one: a value that does not read is an error, an
        // empty one unknown (never a guess).
        let tick = match tick_col.map(get).filter(|t| !t.is_empty()) {
            None => String::new(),
            Some(t) => match Decimal::from_str_exact(t) {
                Ok(d) if d > Decimal::ZERO => d.normalize().to_string(),
                Ok(_) => String::new(),
                Err(_) => {
                    return Err(err(i + 1, "tick_size", format!("{t:?} is not a tick size")));
                }
            },
        };
        let value = format!("{token}|{lot}\t{symbol}\t{tick}");
        if segment == Segment::Derivative {
            let field = |c: Option<usize>| c.map(get).unwrap_or_default();
            // Kite: instrument_type CE / PE / FUT; Upstox: OPTIDX + option_type CE / PE, FUTIDX / FUTSTK.
            let kind = match (field(option_col), field(type_col)) {
                (o @ ("CE" | "PE"), _) => o,
                (_, t @ ("CE" | "PE")) => t,
                (_, t) if t.starts_with("FUT") => "FUT",
                _ => "",
            };
            if let Some(ours) =
                contract_symbol(field(name_col), field(expiry_col), field(strike_col), kind)
            {
                if ours != symbol {
                    out.push((format!("{}:{ours}", segment.key()), value.clone()));
                }
                if let (Some(expiry), Ok(strike), "CE" | "PE") = (
                    iso_date(field(expiry_col)),
                    Decimal::from_str_exact(field(strike_col)),
                    kind,
                ) {
                    let contract = OptionContract {
                        strike: strike.normalize(),
                        call: kind == "CE",
                        token: token.to_owned(),
                        symbol: symbol.to_owned(),
                    };
                    chains
                        .entry((field(name_col).trim_matches('"').to_owned(), expiry))
                        .or_default()
                        .push(contract);
                }
            }
        }
        out.push((format!("{}:{symbol}", segment.key()), value));
    }
    let mut expiries: std::collections::BTreeMap<String, Vec<String>> =
        std::collections::BTreeMap::new();
    for ((underlying, expiry), mut contracts) in chains {
        contracts.sort_by_key(|a| (a.strike, !a.call));
        let listed: Vec<String> = contracts
            .iter()
            .map(|c| {
                format!(
                    "{}\t{}\t{}\t{}",
                    c.strike,
                    if c.call { "CE" } else { "PE" },
                    c.token,
                    c.symbol
                )
            })
            .collect();
        out.push((
            format!("{CHAIN_KEY}:{underlying}:{expiry}"),
            listed.join("\n"),
        ));
        expiries.entry(underlying).or_default().push(expiry);
    }
    for (underlying, dates) in expiries {
        out.push((format!("{EXPIRIES_KEY}:{underlying}"), dates.join(",")));
    }
    Ok(out)
}

/// Key prefix of an underlying's options of one expiry (`OC:NIFTY:2024-03-28`): one
/// `strike, CE|PE, token, broker's symbol` line (tab-separated) per contract, strikes ascending.
const CHAIN_KEY: &str = "OC";
/// Key prefix of an underlying's option expiries (`OX:NIFTY`): `YYYY-MM-DD`, ascending, comma-separated.
const EXPIRIES_KEY: &str = "OX";

/// Whether a map key is an index of the master rather than an instrument.
fn is_index_key(key: &str) -> bool {
    key.split_once(':')
        .is_some_and(|(prefix, _)| prefix == CHAIN_KEY || prefix == EXPIRIES_KEY)
}

/// One option contract of the master, for chains made from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionContract {
    /// The strike.
    pub strike: Decimal,
    /// A call (CE), or a put (PE).
    pub call: bool,
    /// The broker's token.
    pub token: String,
    /// The broker's trading symbol.
    pub symbol: String,
}

/// A master's expiry (`YYYY-MM-DD`, or Upstox's `DD-MM-YYYY`) as `YYYY-MM-DD`.
fn iso_date(expiry: &str) -> Option<String> {
    let parts: Vec<&str> = expiry.trim().split('-').collect();
    let (y, m, d) = match parts.as_slice() {
        [y, m, d] if y.len() == 4 => (*y, *m, *d),
        [d, m, y] if y.len() == 4 => (*y, *m, *d),
        _ => return None,
    };
    let (y, m, d): (u32, u32, u32) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    ((1..=12).contains(&m) && (1..=31).contains(&d)).then(|| format!("{y:04}-{m:02}-{d:02}"))
}

/// Key prefix of indices (quoted on feeds, never ordered).
pub const INDEX_KEY: &str = "IX";

/// The brokers' names of the NSE indices our symbols mean.
const INDEX_NAMES: [(&str, &str); 5] = [
    ("NIFTY", "NIFTY 50"),
    ("BANKNIFTY", "NIFTY BANK"),
    ("FINNIFTY", "NIFTY FIN SERVICE"),
    ("MIDCPNIFTY", "NIFTY MID SELECT"),
    ("INDIAVIX", "INDIA VIX"),
];

/// Our name of a contract (OpenAlgo's): `NIFTY28MAR2420800CE`, `NIFTY28MAR24FUT`, from a
/// master row's underlying, expiry (`YYYY-MM-DD`, or Upstox's `DD-MM-YYYY`), strike and kind.
#[must_use]
pub fn contract_symbol(underlying: &str, expiry: &str, strike: &str, kind: &str) -> Option<String> {
    let underlying = underlying.trim().trim_matches('"');
    if underlying.is_empty() || underlying.contains(' ') || kind.is_empty() {
        return None;
    }
    let date = super::compact_date(&iso_date(expiry)?)?;
    if kind == "FUT" {
        return Some(format!("{underlying}{date}FUT"));
    }
    let strike = Decimal::from_str_exact(strike.trim())
        .ok()
        .filter(|s| *s > Decimal::ZERO)?
        .normalize();
    Some(format!("{underlying}{date}{strike}{kind}"))
}

fn decode(value: &str) -> Instrument {
    // Upstox tokens hold a `|` themselves (`NSE_EQ|INE002A01018`): the lot is after the last one.
    let (value, rest) = value.split_once('\t').unwrap_or((value, ""));
    let (symbol, tick) = rest.split_once('\t').unwrap_or((rest, ""));
    let (token, lot) = value.rsplit_once('|').unwrap_or((value, "1"));
    Instrument {
        token: token.to_owned(),
        lot_size: lot.parse().unwrap_or(1),
        symbol: symbol.to_owned(),
        tick: Decimal::from_str_exact(tick)
            .ok()
            .filter(|t| *t > Decimal::ZERO),
    }
}

/// One broker's map: `EQ:<symbol>` → `<token>|<lot size>`.
type Map = HashMap<String, String>;

/// The maps of every broker in use: in Redis with a Redis bus, in memory otherwise.
#[derive(Debug, Clone)]
pub struct InstrumentMaster {
    bus: Bus,
    memory: Arc<RwLock<HashMap<String, Arc<Map>>>>,
}

impl InstrumentMaster {
    /// A master keeping its maps on `bus` (Redis) or in memory (embedded).
    #[must_use]
    pub fn new(bus: Bus) -> Self {
        Self {
            bus,
            memory: Arc::default(),
        }
    }

    fn key(&self, broker: &str) -> String {
        format!("{}:instruments:{broker}", self.bus.channels().prefix())
    }

    /// Read `source` (a path, or an `http(s)://` URL) for `broker` and replace its map.
    /// Returns how many instruments it holds.
    ///
    /// # Errors
    /// A source that cannot be read or parsed; the old map stays.
    pub async fn load(&self, broker: &str, source: &str) -> anyhow::Result<usize> {
        let entries = parse(broker, source, &read_source(source).await?)?;
        let n = entries.iter().filter(|(k, _)| !is_index_key(k)).count();
        // The exchange's tick of each instrument, under our name and the broker's own.
        crate::domain::money::learn_ticks(
            entries
                .iter()
                .filter(|(k, _)| !is_index_key(k))
                .flat_map(|(k, v)| {
                    let i = decode(v);
                    let ours = k.split_once(':').map_or(k.as_str(), |(_, s)| s).to_owned();
                    i.tick
                        .into_iter()
                        .flat_map(move |t| [(ours.clone(), t), (i.symbol.clone(), t)])
                }),
        );
        // The lot of each derivative contract, under our name: sizing in lots follows it.
        crate::domain::contracts::learn_lots(entries.iter().filter(|(k, _)| !is_index_key(k)).map(
            |(k, v)| {
                let ours = k.split_once(':').map_or(k.as_str(), |(_, s)| s);
                (ours.to_owned(), decode(v).lot_size)
            },
        ));
        if !self.bus.replace_hash(&self.key(broker), &entries).await? {
            let map: HashMap<String, String> = entries.into_iter().collect();
            if let Ok(mut m) = self.memory.write() {
                m.insert(broker.to_owned(), Arc::new(map));
            }
        }
        Ok(n)
    }

    /// Resolve `symbol` in `segment` for `broker`.
    ///
    /// # Errors
    /// A Redis failure (the caller retries; it is not an unknown symbol).
    pub async fn resolve(
        &self,
        broker: &str,
        segment: Segment,
        symbol: &str,
    ) -> anyhow::Result<Option<Instrument>> {
        Ok(self
            .get(broker, &format!("{}:{symbol}", segment.key()))
            .await?
            .as_deref()
            .map(decode))
    }
}

impl InstrumentMaster {
    /// The token a market feed subscribes for `symbol`: a stock or contract,
    /// else an index under its own or the broker's name (`NIFTY` is Kite's `NIFTY 50`).
    ///
    /// # Errors
    /// A Redis failure.
    pub async fn feed_token(&self, broker: &str, symbol: &str) -> anyhow::Result<Option<String>> {
        if let Some(i) = self.resolve(broker, Segment::of(symbol), symbol).await? {
            return Ok(Some(i.token));
        }
        let alias = INDEX_NAMES
            .iter()
            .find(|(ours, _)| *ours == symbol)
            .map(|(_, theirs)| *theirs);
        for name in std::iter::once(symbol).chain(alias) {
            if let Some(v) = self.get(broker, &format!("{INDEX_KEY}:{name}")).await? {
                return Ok(Some(decode(&v).token));
            }
        }
        Ok(None)
    }

    /// The option expiries of `underlying` in `broker`'s master, ascending (`YYYY-MM-DD`).
    ///
    /// # Errors
    /// A Redis failure.
    pub async fn option_expiries(
        &self,
        broker: &str,
        underlying: &str,
    ) -> anyhow::Result<Vec<String>> {
        let listed = self
            .get(broker, &format!("{EXPIRIES_KEY}:{underlying}"))
            .await?
            .unwrap_or_default();
        Ok(listed
            .split(',')
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
            .collect())
    }

    /// The options of `underlying` expiring on `expiry` in `broker`'s master, strikes ascending.
    ///
    /// # Errors
    /// A Redis failure.
    pub async fn option_contracts(
        &self,
        broker: &str,
        underlying: &str,
        expiry: &str,
    ) -> anyhow::Result<Vec<OptionContract>> {
        let listed = self
            .get(broker, &format!("{CHAIN_KEY}:{underlying}:{expiry}"))
            .await?
            .unwrap_or_default();
        Ok(listed
            .lines()
            .filter_map(|line| {
                let mut f = line.split('\t');
                let (strike, kind, token, symbol) = (f.next()?, f.next()?, f.next()?, f.next()?);
                Some(OptionContract {
                    strike: Decimal::from_str_exact(strike).ok()?,
                    call: kind == "CE",
                    token: token.to_owned(),
                    symbol: symbol.to_owned(),
                })
            })
            .collect())
    }

    /// The broker's own name of `symbol` when it is an index (`NIFTY` is Kite's `NIFTY 50`).
    ///
    /// # Errors
    /// A Redis failure.
    pub async fn index_name(&self, broker: &str, symbol: &str) -> anyhow::Result<Option<String>> {
        let alias = INDEX_NAMES
            .iter()
            .find(|(ours, _)| *ours == symbol)
            .map(|(_, theirs)| *theirs);
        for name in alias.into_iter().chain(std::iter::once(symbol)) {
            if self
                .get(broker, &format!("{INDEX_KEY}:{name}"))
                .await?
                .is_some()
            {
                return Ok(Some(name.to_owned()));
            }
        }
        Ok(None)
    }

    async fn get(&self, broker: &str, field: &str) -> anyhow::Result<Option<String>> {
        if matches!(self.bus, Bus::Redis(_)) {
            return Ok(self.bus.hash_get(&self.key(broker), field).await?);
        }
        let map = self.memory.read().ok().and_then(|m| m.get(broker).cloned());
        Ok(map.and_then(|m| m.get(field).cloned()))
    }
}

/// The text of an instrument file: a path, or an `http(s)://` URL.
///
/// # Errors
/// One that cannot be read, named.
pub async fn read_source(source: &str) -> anyhow::Result<String> {
    if source.starts_with("http://") || source.starts_with("https://") {
        let client = super::http::client(std::time::Duration::from_secs(60))?;
        let answer = client
            .get(source)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{source}: {}", e.without_url()))?;
        if !answer.status().is_success() {
            anyhow::bail!("{source}: HTTP {}", answer.status());
        }
        Ok(answer
            .text()
            .await
            .map_err(|e| anyhow::anyhow!("{source}: {}", e.without_url()))?)
    } else {
        std::fs::read_to_string(Path::new(source)).map_err(|e| anyhow::anyhow!("{source}: {e}"))
    }
}

/// What a person picks from, out of the masters: every tradable name (ours and the
/// broker's), each one's lot, and each underlying's listed option strikes by expiry (the
/// console's symbol box and basket builder).
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Tradable names and indices, sorted.
    pub symbols: std::collections::BTreeSet<String>,
    /// Units per lot, by name.
    pub lots: HashMap<String, u64>,
    /// `(underlying, expiry)` → `(strike, call)`, strikes ascending.
    pub options: std::collections::BTreeMap<(String, String), Vec<(Decimal, bool)>>,
}

impl Catalog {
    /// Add one master's entries (as [`parse`] made them).
    pub fn add(&mut self, entries: &[(String, String)]) {
        for (key, value) in entries {
            let Some((prefix, rest)) = key.split_once(':') else {
                continue;
            };
            match prefix {
                CHAIN_KEY => {
                    let Some((underlying, expiry)) = rest.split_once(':') else {
                        continue;
                    };
                    let list = self
                        .options
                        .entry((underlying.to_owned(), expiry.to_owned()))
                        .or_default();
                    for line in value.lines() {
                        let mut f = line.split('\t');
                        if let (Some(Ok(strike)), Some(kind)) =
                            (f.next().map(Decimal::from_str_exact), f.next())
                        {
                            list.push((strike, kind == "CE"));
                        }
                    }
                    list.sort_unstable_by_key(|(k, call)| (*k, !*call));
                    list.dedup();
                }
                EXPIRIES_KEY => {}
                _ => {
                    self.symbols.insert(rest.to_owned());
                    if prefix != INDEX_KEY {
                        self.lots.insert(rest.to_owned(), decode(value).lot_size);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KITE: &str = "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,lot_size,instrument_type,segment,exchange
738561,2885,RELIANCE,\"RELIANCE INDUSTRIES\",0,,0,0.05,1,EQ,NSE,NSE
256265,1001,NIFTY 50,\"NIFTY 50\",0,,0,0,0,EQ,INDICES,NSE
12345678,48225,NIFTY24MAR20800CE,\"NIFTY\",0,2024-03-28,20800,0.05,50,CE,NFO-OPT,NFO
12345679,48226,NIFTY2432120800PE,\"NIFTY\",0,2024-03-21,20800,0.05,50,PE,NFO-OPT,NFO
12345680,48227,NIFTY24MARFUT,\"NIFTY\",0,2024-03-28,0,0.05,50,FUT,NFO-FUT,NFO
12345681,48228,VEDL24APR292.5CE,\"VEDL\",0,2024-04-25,292.5,0.05,2000,CE,NFO-OPT,NFO
3050241,11915,YESBANK,\"YES BANK\",0,,0,0.01,1,EQ,NSE,NSE
";
    const UPSTOX: &str = "instrument_key,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,lot_size,instrument_type,option_type,exchange
NSE_EQ|INE002A01018,2885,RELIANCE,RELIANCE INDUSTRIES,0,,,0.05,1,EQUITY,,NSE_EQ
NSE_INDEX|Nifty 50,,NIFTY,Nifty 50,0,,,0,,INDEX,,NSE_INDEX
NSE_FO|48225,48225,NIFTY 20800 CE 28 MAR 24,NIFTY,0,2024-03-28,20800,0.05,50,OPTIDX,CE,NSE_FO
";

    #[tokio::test]
    async fn both_formats_resolve_and_indices_and_strangers_do_not() {
        let m = InstrumentMaster::new(Bus::embedded("t"));
        // Each contract under its own name and under ours.
        assert_eq!(m.load_text("kite", KITE), 3 + 2 * 4);
        // The exchange's tick of each, as the master lists it: YES BANK, under ₹250, ticks 0.01.
        let yes = m
            .resolve("kite", Segment::Equity, "YESBANK")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(yes.tick, Some(Decimal::new(1, 2)));
        assert_eq!(m.load_text("upstox", UPSTOX), 3 + 1);
        // The options of each underlying by expiry, for chains made from the master.
        assert_eq!(
            m.option_expiries("kite", "NIFTY").await.unwrap(),
            ["2024-03-21", "2024-03-28"]
        );
        assert_eq!(
            m.option_expiries("kite", "VEDL").await.unwrap(),
            ["2024-04-25"]
        );
        let weekly = m
            .option_contracts("kite", "NIFTY", "2024-03-21")
            .await
            .unwrap();
        assert_eq!(
            weekly,
            [OptionContract {
                strike: Decimal::from(20_800),
                call: false,
                token: "12345679".into(),
                symbol: "NIFTY2432120800PE".into()
            }]
        );
        assert_eq!(
            m.option_contracts("kite", "VEDL", "2024-04-25")
                .await
                .unwrap()[0]
                .strike,
            Decimal::new(2925, 1)
        );
        assert!(
            m.option_contracts("kite", "NIFTY", "2024-03-14")
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            m.index_name("kite", "NIFTY").await.unwrap().as_deref(),
            Some("NIFTY 50")
        );
        assert_eq!(m.index_name("kite", "RELIANCE").await.unwrap(), None);
        let r = m
            .resolve("kite", Segment::Equity, "RELIANCE")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            r,
            Instrument {
                token: "738561".into(),
                lot_size: 1,
                symbol: "RELIANCE".into(),
                tick: Some(Decimal::new(5, 2)),
            }
        );
        let o = m
            .resolve("upstox", Segment::Derivative, "NIFTY28MAR2420800CE")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            o,
            Instrument {
                token: "NSE_FO|48225".into(),
                lot_size: 50,
                symbol: "NIFTY 20800 CE 28 MAR 24".into(),
                tick: Some(Decimal::new(5, 2)),
            }
        );
        // Kite's monthly, weekly, futures and fractional-strike names, reached from ours.
        for (ours, theirs, token) in [
            ("NIFTY28MAR2420800CE", "NIFTY24MAR20800CE", "12345678"),
            ("NIFTY21MAR2420800PE", "NIFTY2432120800PE", "12345679"),
            ("NIFTY28MAR24FUT", "NIFTY24MARFUT", "12345680"),
            ("VEDL25APR24292.5CE", "VEDL24APR292.5CE", "12345681"),
        ] {
            let k = m
                .resolve("kite", Segment::Derivative, ours)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{ours}"));
            assert_eq!(
                (k.token.as_str(), k.symbol.as_str()),
                (token, theirs),
                "{ours}"
            );
            assert_eq!(
                m.resolve("kite", Segment::Derivative, theirs)
                    .await
                    .unwrap()
                    .map(|i| i.token)
                    .as_deref(),
                Some(token)
            );
        }
        assert!(
            m.resolve("kite", Segment::Derivative, "NIFTY28MAR2420900CE")
                .await
                .unwrap()
                .is_none(),
            "no such strike"
        );
        assert_eq!(
            m.resolve("upstox", Segment::Equity, "RELIANCE")
                .await
                .unwrap()
                .unwrap()
                .token,
            "NSE_EQ|INE002A01018"
        );
        assert!(
            m.resolve("kite", Segment::Equity, "NIFTY 50")
                .await
                .unwrap()
                .is_none(),
            "an index is not tradable"
        );
        assert!(
            m.resolve("kite", Segment::Equity, "NOSUCH")
                .await
                .unwrap()
                .is_none()
        );
        // …but its ticks can be followed, under our name or the broker's.
        assert_eq!(
            m.feed_token("kite", "NIFTY").await.unwrap().as_deref(),
            Some("256265")
        );
        assert_eq!(
            m.feed_token("kite", "NIFTY 50").await.unwrap().as_deref(),
            Some("256265")
        );
        assert_eq!(
            m.feed_token("upstox", "NIFTY").await.unwrap().as_deref(),
            Some("NSE_INDEX|Nifty 50")
        );
        assert_eq!(
            m.feed_token("kite", "RELIANCE").await.unwrap().as_deref(),
            Some("738561")
        );
        assert_eq!(m.feed_token("kite", "NOSUCH").await.unwrap(), None);
        assert_eq!(
            contract_symbol("NIFTY", "28-03-2024", "20800.0", "CE").as_deref(),
            Some("NIFTY28MAR2420800CE"),
            "Upstox's day-first dates"
        );
        assert_eq!(
            contract_symbol("NIFTY 50", "2024-03-28", "20800", "CE"),
            None
        );
        assert_eq!(contract_symbol("NIFTY", "2024-13-28", "20800", "CE"), None);
    }

    #[test]
    fn a_catalog_lists_names_lots_and_strikes_to_pick_from() {
        let mut c = Catalog::default();
        c.add(&parse("kite", "kite.csv", KITE).unwrap());
        for name in [
            "RELIANCE",
            "NIFTY 50",
            "NIFTY28MAR2420800CE",
            "NIFTY24MAR20800CE",
            "NIFTY28MAR24FUT",
            "VEDL25APR24292.5CE",
        ] {
            assert!(c.symbols.contains(name), "{name}: {:?}", c.symbols);
        }
        assert!(
            !c.symbols
                .iter()
                .any(|s| s.starts_with("OC:") || s.starts_with("OX:") || s.contains(':')),
            "no index key is a name: {:?}",
            c.symbols
        );
        assert_eq!(
            (
                c.lots.get("NIFTY28MAR2420800CE"),
                c.lots.get("RELIANCE"),
                c.lots.get("NIFTY 50")
            ),
            (Some(&50), Some(&1), None)
        );
        assert_eq!(
            c.options.get(&("NIFTY".into(), "2024-03-28".into())),
            Some(&vec![(Decimal::from(20_800), true)])
        );
        assert_eq!(
            c.options.get(&("VEDL".into(), "2024-04-25".into())),
            Some(&vec![(Decimal::new(2925, 1), true)])
        );
    }

    #[test]
    fn a_missing_column_is_named() {
        let e = parse(
            "kite",
            "instruments.csv",
            "instrument_token,tradingsymbol,exchange\n1,A,NSE\n",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "instruments.csv:1: lot_size: no lot_size column in the header"
        );
        let e = parse(
            "upstox",
            "u.csv",
            "instrument_key,tradingsymbol,exchange,lot_size\n,A,NSE_EQ,1\n",
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "u.csv:2: instrument_key: empty");
        // A lot that does not read is named, never taken as 1.
        let e = parse(
            "kite",
            "k.csv",
            "instrument_token,tradingsymbol,exchange,lot_size\n1,A,NSE,1\n2,B,NFO,seventy-five\n",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "k.csv:3: lot_size: \"seventy-five\" is not a lot size (a whole number of units)"
        );
    }

    impl InstrumentMaster {
        fn load_text(&self, broker: &str, text: &str) -> usize {
            let entries = parse(broker, "test", text).unwrap();
            let n = entries.iter().filter(|(k, _)| !is_index_key(k)).count();
            self.memory
                .write()
                .unwrap()
                .insert(broker.to_owned(), Arc::new(entries.into_iter().collect()));
            n
        }
    }
}
