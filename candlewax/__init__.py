"""candlewax: real-time OHLCV candles from market trades, built on Bytewax."""

import os

__version__ = "0.1.0"

# polars allocates with a jemalloc of its own, which hands pages back to the system once
# they have been free for a moment, then faults them in again for the next batch: on a
# 2 M-trade file ~160,000 page faults, ~0.5 s of the kernel's time (a tenth of the run's
# CPU). Pages free for less than 5 s are kept for reuse instead (~120,000 faults on a
# first run, half as many after; the memory still goes back once the flow is quiet).
# jemalloc reads this once, when polars loads: the entry packages (`flows`, `tools`,
# `bench`) import this package first. A value already in the environment wins.
os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:5000,muzzy_decay_ms:5000")
