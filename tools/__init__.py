"""The `candlewax` command and its sub-commands (one module each), with their pure cores."""

# First: the package tunes polars' and numpy's native libraries before they load.
import candlewax  # noqa: F401
