//! A strategy that misbehaves on purpose, to prove the sandbox holds.
//!
//! `behaviour` (param) picks the misdeed: `ok`, `idle` (does nothing: the
//! benchmark's measure of the sandbox's own cost), `every-bar` (alternating
//! buys and sells, for latency benchmarks), `loop-on-candle`,
//! `loop-in-init`, `memory-bomb`, `recursion`, `panic`, `trap-after` (with
//! `n` good events first), `flood`, `read-file`, `read-env`, `clock`, `socket`.
//! Probes report what they saw as the reason of an `exit` signal on `PROBE`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use strategy_sdk::{Candle, ParamError, Params, Signals, Strategy};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Ok,
    Idle,
    EveryBar,
    LoopOnCandle,
    MemoryBomb,
    Recursion,
    Panic,
    TrapAfter,
    Flood,
    ReadFile,
    ReadEnv,
    Clock,
    Socket,
}

/// The misbehaving strategy.
pub struct Hostile {
    behaviour: Behaviour,
    n: u64,
    seen: u64,
    hoard: Vec<Vec<u8>>,
}

#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    // black_box keeps the optimiser from turning this into a loop.
    black_box(depth) + recurse(black_box(depth + 1))
}

impl Strategy for Hostile {
    fn new(params: &Params) -> Result<Self, ParamError> {
        let behaviour = params.get("behaviour", String::from("ok"))?;
        if behaviour == "loop-in-init" {
            let mut x = 0u64;
            loop {
                x = black_box(x.wrapping_add(1));
            }
        }
        let behaviour = match behaviour.as_str() {
            "ok" => Behaviour::Ok,
            "idle" => Behaviour::Idle,
            "every-bar" => Behaviour::EveryBar,
            "loop-on-candle" => Behaviour::LoopOnCandle,
            "memory-bomb" => Behaviour::MemoryBomb,
            "recursion" => Behaviour::Recursion,
            "panic" => Behaviour::Panic,
            "trap-after" => Behaviour::TrapAfter,
            "flood" => Behaviour::Flood,
            "read-file" => Behaviour::ReadFile,
            "read-env" => Behaviour::ReadEnv,
            "clock" => Behaviour::Clock,
            "socket" => Behaviour::Socket,
            other => {
                return Err(ParamError::new(
                    "behaviour",
                    format!("unknown behaviour {other:?}"),
                ));
            }
        };
        Ok(Self {
            behaviour,
            n: params.get("n", 3)?,
            seen: 0,
            hoard: Vec::new(),
        })
    }

    fn on_candle(&mut self, candle: &Candle<'_>, signals: &mut Signals) {
        self.seen += 1;
        match self.behaviour {
            Behaviour::Idle => {}
            // Buy and sell on alternate bars: an order on every bar, for latency benchmarks.
            Behaviour::EveryBar => {
                if self.seen % 2 == 1 {
                    signals.buy(candle.instrument, "every bar");
                } else {
                    signals.sell(candle.instrument, "every bar");
                }
            }
            Behaviour::LoopOnCandle => {
                let mut x = 0u64;
                loop {
                    x = black_box(x.wrapping_add(1));
                }
            }
            Behaviour::MemoryBomb => loop {
                self.hoard.push(black_box(vec![1u8; 1 << 20]));
            },
            Behaviour::Recursion => {
                black_box(recurse(0));
            }
            Behaviour::Panic => panic!("hostile plugin panicked on purpose"),
            Behaviour::TrapAfter if self.seen > self.n => {
                panic!("trap after {} good events", self.n)
            }
            Behaviour::Flood => {
                for _ in 0..10_000 {
                    signals.buy(candle.instrument, "flood");
                }
            }
            Behaviour::ReadFile => {
                let seen = match std::fs::read_to_string("/etc/passwd") {
                    Ok(text) => format!("read-file: READ {} bytes", text.len()),
                    Err(e) => format!("read-file: denied ({e})"),
                };
                signals.exit("PROBE", seen);
            }
            Behaviour::ReadEnv => {
                let vars: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
                signals.exit("PROBE", format!("read-env: {} vars {:?}", vars.len(), vars));
            }
            Behaviour::Clock => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(u64::MAX);
                signals.exit("PROBE", format!("clock: {now}"));
            }
            Behaviour::Socket => {
                let seen = match std::net::TcpStream::connect("127.0.0.1:6379") {
                    Ok(_) => "socket: CONNECTED".to_owned(),
                    Err(e) => format!("socket: denied ({e})"),
                };
                signals.exit("PROBE", seen);
            }
            _ => {
                if self.seen.is_multiple_of(10) {
                    signals.buy(candle.instrument, format!("healthy tick {}", self.seen));
                }
            }
        }
    }
}

strategy_sdk::register_strategy!(Hostile);
