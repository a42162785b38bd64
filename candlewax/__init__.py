"""candlewax: real-time OHLCV candles from market trades, built on Bytewax."""

import os

from candlewax.heap import bound_glibc_heap_blocks

__version__ = "0.1.0"

# polars allocates with a jemalloc of its own, which it tells to hand pages back to the
# system 0.5 s after they are freed (1 s for those it only advised away); the flow then
# faults them in again for the next batch: on a 2 M-trade file ~160,000 page faults,
# ~0.5 s of the kernel's time (a tenth of the run's CPU). Pages free for less than 5 s
# are kept for reuse instead (~120,000 faults on a first run, half as many after; the
# memory still goes back once the flow is quiet). polars appends this variable to its
# own settings when it loads (later settings win) and jemalloc reads the result once:
# the entry packages (`flows`, `tools`, `bench`) import this package first. A value
# already in the environment wins (here and below).
os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:5000,muzzy_decay_ms:5000")
# numpy's OpenBLAS starts a thread per core when numpy loads, and they spin before they
# sleep: 0.2 s of CPU at every start (0.08 s with one). Nothing here multiplies matrices.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# glibc's malloc: blocks of 16 MiB and more get pages of their own, handed back when
# freed, instead of a glibc threshold that rises to 32 MiB as the flow frees large
# blocks, and up to 32 MiB free at the heap's top is kept for the next batch
# (`candlewax.heap`); `MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_` in the
# environment win.
bound_glibc_heap_blocks()
