"""Benchmarks: `python -m bench.<name>` (see the README's figures table)."""

# First: the package tunes polars' and numpy's native libraries before they load.
import candlewax  # noqa: F401
