//! Brokers: where orders go. The paper broker fills from market data; live
//! brokers (OpenAlgo, Kite Connect, Upstox) come behind the same rules.

pub mod paper;
