#!/usr/bin/env python3
"""Compare the SDK's SMA, EMA and RSI with TA-Lib on candle CSV files.

    pip install TA-Lib numpy
    scripts/check-talib.py ../shared/data/market/nifty50_1m_2024-01_2024-08.csv ...
    scripts/check-talib.py --write-fixture tests/fixtures/talib_nifty_synthetic_seed42.csv out/data/nifty_1m.csv

Our values come from `cargo run --example indicators` (the SDK code the
strategies run). Exits non-zero when any value differs from TA-Lib by more
than 1e-9 of the price (RSI: 1e-9 of its 0-100 scale). With --write-fixture,
TA-Lib's values for the first file are written for the Rust test suite.
"""
import csv
import io
import subprocess
import sys

import numpy as np
import talib

COLUMNS = [("sma10", lambda c: talib.SMA(c, 10)), ("sma50", lambda c: talib.SMA(c, 50)),
           ("ema10", lambda c: talib.EMA(c, 10)), ("ema50", lambda c: talib.EMA(c, 50)),
           ("rsi14", lambda c: talib.RSI(c, 14))]


def ours(path):
    out = subprocess.run(["cargo", "run", "-q", "--release", "-p", "tradehost-tests", "--example", "indicators", "--", path],
                         check=True, capture_output=True, text=True).stdout
    return list(csv.DictReader(io.StringIO(out)))


def main(argv):
    fixture = None
    if argv[:1] == ["--write-fixture"]:
        fixture, argv = argv[1], argv[2:]
    worst = 0.0
    for path in argv:
        rows = ours(path)
        close = np.array([float(r["close"]) for r in rows])
        ref = {name: f(close) for name, f in COLUMNS}
        for name, _ in COLUMNS:
            mine = np.array([float(r[name]) if r[name] else np.nan for r in rows])
            both = ~np.isnan(ref[name]) & ~np.isnan(mine)
            if not np.array_equal(np.isnan(ref[name]), np.isnan(mine)):
                first = int(np.argmax(np.isnan(ref[name]) != np.isnan(mine)))
                print(f"{path}: {name}: warm-up differs from TA-Lib at row {first}")
                worst = float("inf")
            # RSI is in points (0..100); the averages are compared relative to the price.
            scale = 100.0 if name.startswith("rsi") else close[both]
            diff = np.max(np.abs(mine[both] - ref[name][both]) / scale) if both.any() else 0.0
            worst = max(worst, diff)
            unit = "/ 100" if name.startswith("rsi") else "/ price"
            print(f"{path}: {name}: {both.sum()} values, max |ours - TA-Lib| {unit} = {diff:.2e}")
        if fixture and path == argv[0]:
            with open(fixture, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["close"] + [n for n, _ in COLUMNS])
                for i, c in enumerate(close):
                    w.writerow([rows[i]["close"]] + ["" if np.isnan(ref[n][i]) else repr(float(ref[n][i])) for n, _ in COLUMNS])
            print(f"wrote {fixture} from TA-Lib {talib.__version__}")
    if worst > 1e-9:
        sys.exit(f"differences above 1e-9 of the price: {worst:.2e}")


if __name__ == "__main__":
    main(sys.argv[1:])
