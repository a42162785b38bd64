"""The `candlewax` command and its sub-commands (one module each), with their pure cores."""

import candlewax  # noqa: F401  (first: it tunes polars' allocator before polars loads)
