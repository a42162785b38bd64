"""Benchmarks: `python -m bench.<name>` (see the README's figures table)."""

import candlewax  # noqa: F401  (first: it tunes polars' allocator before polars loads)
