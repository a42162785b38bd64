"""Dataflow definitions (wiring only): `python -m bytewax.run flows.ohlcv`."""

import candlewax  # noqa: F401  (first: it tunes polars' allocator before polars loads)
