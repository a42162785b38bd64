"""Read any supported market data file into validated contract trades or quotes (see the
package doc)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from candlewax.records import QUOTE, TRADE, MessageKind, RawBatch, Rejection
from operators.decode import ValidationRules, decode_batch
from sources.formats import binance, kibot, tabular
from sources.formats.common import CONTRACT_COLUMNS, QUOTE_COLUMNS, Parsed, ReadOptions
from sources.formats.compressed import base_name, read_bytes

FORMATS = ("ndjson", "csv", "parquet", "binance-csv", "binance-ws", "kibot")
# The formats whose files hold quotes (`--quotes`), besides NDJSON quote messages.
QUOTE_FORMATS = ("ndjson", "binance-ws", "kibot")


@dataclass
class MarketFile:
    """A file read and judged by the trade (or quote) contract, in file order."""

    path: Path
    format: str
    rows: int
    valid: pl.DataFrame  # valid messages: TRADE_SCHEMA (QUOTE_SCHEMA when reading quotes)
    rejections: list[Rejection]
    filtered: int
    skipped: Counter[str]
    examples: dict[str, str]

    @property
    def rejected_by_reason(self) -> Counter[str]:
        return Counter(r.reason for r in self.rejections)


def detect_format(path: Path) -> str:
    """The format from the file name, and for `.csv`/`.txt` from the first line."""
    name = base_name(path).lower()
    with open(path, "rb") as file:
        if name.endswith(".parquet") or file.read(4) == b"PAR1":
            return "parquet"
    if name.endswith((".ndjson", ".jsonl", ".json")):
        return "ndjson"
    head = read_bytes(path)[:4096].split(b"\n", 1)[0].strip()
    if head[:1].isdigit() and b" {" in head:
        return "binance-ws"
    if head.startswith(b"{"):
        return "ndjson"
    if "-trades-" in name or "-aggtrades-" in name or head.startswith(b"id,price,qty"):
        return "binance-csv"
    fields = head.split(b",")
    if len(fields) == 6 and b"/" in fields[0] and b":" in fields[1]:
        return "kibot"
    return "csv"


def read_market_file(path: Path, options: ReadOptions | None = None) -> MarketFile:
    """A file's trades, or its quotes when `options.quotes`, judged by the flow's decoder."""
    options = options or ReadOptions()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    fmt = detect_format(path) if options.format == "auto" else options.format
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if options.quotes and fmt not in QUOTE_FORMATS:
        raise ValueError(
            f"{path}: {fmt} files hold no quotes; quotes come from {', '.join(QUOTE_FORMATS)}"
        )
    kind = QUOTE if options.quotes else TRADE
    data = read_bytes(path)
    source = f"file:{path.name}"
    if fmt == "ndjson":
        lines = data.split(b"\n")
        numbered = [(n, line.rstrip(b"\r")) for n, line in enumerate(lines, 1) if line.strip()]
        values: list[bytes | None] = [line for _, line in numbered]
        positions = [n for n, _ in numbered]
        parsed = Parsed(rows=len(values), messages=pl.DataFrame())
    else:
        parsed = _ADAPTERS[fmt](data, path, options)
        values, positions = _contract_lines(parsed.messages, kind)
    batch = RawBatch(source, values, positions)
    decoded = decode_batch(batch, ValidationRules(), origin=False, kind=kind)
    return MarketFile(
        path=path,
        format=fmt,
        rows=parsed.rows,
        valid=decoded.valid,
        rejections=decoded.rejections,
        filtered=decoded.filtered,
        skipped=parsed.skipped,
        examples=parsed.examples,
    )


def contract_messages(
    path: Path, fmt: str, options: ReadOptions | None = None
) -> tuple[list[bytes | None], list[int]]:
    """The rows of a file in another format (CSV, Parquet, exchange formats) as contract
    messages with their positions (row numbers), for the flow's file source; the flow's
    decoder judges them like any message."""
    options = options or ReadOptions()
    parsed = _ADAPTERS[fmt](read_bytes(path), path, options)
    return _contract_lines(parsed.messages, QUOTE if options.quotes else TRADE)


def contract_lines(frame: pl.DataFrame, kind: MessageKind = TRADE) -> list[bytes]:
    """Rows of contract columns as JSON messages of `kind` (a missing value is JSON
    null; quotes say `"type":"quote"`)."""
    if kind is QUOTE:
        frame = frame.select(pl.lit("quote").alias("type"), *QUOTE_COLUMNS)
    else:
        frame = frame.select(CONTRACT_COLUMNS)
    return frame.write_ndjson().encode().rstrip(b"\n").split(b"\n")


def _contract_lines(frame: pl.DataFrame, kind: MessageKind) -> tuple[list[bytes | None], list[int]]:
    """Rows as contract JSON messages with their positions."""
    if frame.height == 0:
        return [], []
    lines: list[bytes | None] = list(contract_lines(frame, kind))
    return lines, frame.get_column("position").to_list()


_ADAPTERS: dict[str, Callable[[bytes, Path, ReadOptions], Parsed]] = {
    "csv": tabular.read_csv,
    "parquet": tabular.read_parquet,
    "binance-csv": binance.read_trade_csv,
    "binance-ws": binance.read_ws_capture,
    "kibot": kibot.read_ticks,
}
