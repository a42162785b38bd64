"""Dataflow definitions (wiring only): `python -m bytewax.run flows.ohlcv`."""

# First: the package tunes polars' and numpy's native libraries before they load.
import candlewax  # noqa: F401
