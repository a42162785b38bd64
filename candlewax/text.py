"""Text built from columns: `formatted` does what `pl.format` does, without its panic.

`pl.format` (polars 2.1) panics on columns held in several chunks when a chunk between
two that have rows is empty (`assertion failed: i < self.len()`): what filtering a
frame made of several batches gives. The fat-finger guard's dead-letter records of a
step that took two batches at once stopped the flow so. `pl.concat_str`, the same text
in one expression, does not.
"""

from __future__ import annotations

import polars as pl


def formatted(template: str, *arguments: pl.Expr | str) -> pl.Expr:
    """The text of `template` with each `{}` replaced by the next argument's value (a
    column name or an expression, as `pl.format` takes them); null where one is null."""
    pieces = template.split("{}")
    if len(pieces) != len(arguments) + 1:
        raise ValueError(f"{template!r} has {len(pieces) - 1} places for {len(arguments)} values")
    parts: list[pl.Expr] = [pl.lit(pieces[0])] if pieces[0] else []
    for argument, piece in zip(arguments, pieces[1:], strict=True):
        parts.append(pl.col(argument) if isinstance(argument, str) else argument)
        if piece:
            parts.append(pl.lit(piece))
    return pl.concat_str(parts)
