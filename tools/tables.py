"""Plain-text tables for the tools' terminal output: a header row, a rule, left-aligned
columns as wide as their widest cell."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import IO


def print_table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], out: IO[str] | None = None
) -> None:
    out = out or sys.stdout
    cells = [list(row) for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)), file=out)
