"""Dataflow definitions (wiring only): `python -m bytewax.run flows.ohlcv`."""
