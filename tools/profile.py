"""`candlewax profile`: the data quality of a trade file or of the lake's `trades/`.

Gaps per symbol at several thresholds, price outliers against a rolling median (the
fat-finger check), duplicates by trade id and by fingerprint, out-of-order arrivals and
their depth, and rows rejected or skipped by reason. Writes a report a person reads
(Markdown, or HTML for a `.html` name) and the same figures as JSON; optionally the
clean trades as Parquet (valid, first copy of each trade id, outliers removed, in
event-time order).

`--quotes`: the file's quotes (or the lake's `quotes/`) instead: quotes and spreads per
symbol (median and p99 in basis points), crossed and locked books (which the quote
contract rejects, counted from their original bytes), and spread outliers (a spread
many times the median of the symbol's previous spreads).
"""

from __future__ import annotations

import argparse
import dataclasses
import html
import json
import sys
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from config.durations import parse_duration_ms
from config.settings import Settings
from operators.price_guard import OutlierRule
from sinks.lake import require_lake, scan, scan_parameters
from sources.formats import read_market_file
from sources.formats.common import CONTRACT_COLUMNS
from tools.file_reading import add_reading_arguments, read_options
from tools.progress import Progress
from tools.quality_checks import (
    BOOK_FAULTS,
    QualityOptions,
    QualityReport,
    QuoteOptions,
    QuoteQualityReport,
    first_copies,
    profile,
    quote_profile,
)


def add_arguments(parser: argparse.ArgumentParser, settings: Settings) -> None:
    parser.add_argument(
        "path",
        type=Path,
        metavar="FILE_OR_LAKE",
        help="a trade file (any replay format) or a lake directory (its trades/ and dlq/ are read)",
    )
    checks = parser.add_argument_group("checks")
    checks.add_argument(
        "--gaps", default="500ms,5s,30s", help="gap thresholds per symbol (default 500ms,5s,30s)"
    )
    checks.add_argument(
        "--outlier-trades",
        type=int,
        default=settings.outlier_trades,
        help="reference price: median of the previous N trades, as the flow's fat-finger "
        f"guard (default CANDLEWAX_OUTLIER_TRADES, now {settings.outlier_trades})",
    )
    checks.add_argument(
        "--outlier-threshold",
        type=float,
        default=settings.outlier_threshold,
        help="relative deviation from the reference that is an outlier; 0 = no check "
        f"(default CANDLEWAX_OUTLIER_THRESHOLD, now {settings.outlier_threshold})",
    )
    checks.add_argument(
        "--quotes",
        action="store_true",
        help="profile the quotes (book tickers, bid/ask columns, quote messages; a lake's "
        "quotes/) instead of the trades: spreads, crossed/locked books, spread outliers",
    )
    checks.add_argument(
        "--spread-factor",
        type=float,
        default=10.0,
        help="--quotes: a spread outlier is wider than this many times the median of the "
        "symbol's previous spreads (default %(default)s)",
    )
    checks.add_argument(
        "--spread-quotes",
        type=int,
        default=50,
        help="--quotes: how many previous spreads the median is over (default %(default)s)",
    )
    out = parser.add_argument_group("outputs")
    out.add_argument(
        "--report",
        type=Path,
        help="report file: .md (Markdown) or .html (default: Markdown on standard output)",
    )
    out.add_argument("--json", type=Path, help="the same figures as JSON")
    out.add_argument("--clean", type=Path, help="write the clean trades as Parquet")
    add_reading_arguments(parser, title="reading (files)")


def load(args: argparse.Namespace) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Trades in arrival order, and what the read says about rejected/skipped rows."""
    path: Path = args.path
    if path.is_dir():
        return _load_lake(path)
    read = read_market_file(path, read_options(args))
    return read.valid, {
        "source": f"{path} ({read.format})",
        "rows": read.rows,
        "rejected": dict(read.rejected_by_reason),
        "skipped": dict(read.skipped),
        "filtered": read.filtered,
    }


def _load_lake(lake: Path) -> tuple[pl.DataFrame, dict[str, Any]]:
    require_lake(lake)
    if not list((lake / "trades").rglob("*.parquet")):
        raise FileNotFoundError(f"{lake}: no Parquet files under trades/ (is it a candlewax lake?)")
    con = duckdb.connect()
    trades = con.sql(
        "select symbol, epoch_ms(ts) as ts, price, size, trade_id, side, venue "
        f"from {scan('trades')} order by ts",
        params=scan_parameters(lake, "trades"),
    ).pl()
    rejected: dict[str, int] = {}
    if list((lake / "dlq").rglob("*.parquet")):
        rows = con.execute(
            f"select reason, count(*) from {scan('dlq')} group by reason",
            scan_parameters(lake, "dlq"),
        ).fetchall()
        rejected = {reason: int(count) for reason, count in rows}
    # The lake keeps trades deduplicated and not in arrival order: read by event time.
    return trades, {
        "source": f"lake {lake}",
        "rows": trades.height + sum(rejected.values()),
        "rejected": rejected,
        "skipped": {},
        "filtered": 0,
    }


def load_quotes(args: argparse.Namespace) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """Quotes in arrival order, the rejected ones (`raw`, `reason`), and what the read says."""
    path: Path = args.path
    if path.is_dir():
        require_lake(path)
        if not list((path / "quotes").rglob("*.parquet")):
            raise FileNotFoundError(f"{path}: no Parquet files under quotes/ (no quotes branch?)")
        con = duckdb.connect()
        quotes = con.sql(
            "select symbol, epoch_ms(ts) as ts, bid, ask, bid_size, ask_size, quote_id, venue "
            f"from {scan('quotes')} order by ts, seq",
            params=scan_parameters(path, "quotes"),
        ).pl()
        faults = pl.DataFrame(schema={"raw": pl.Binary, "reason": pl.String})
        if list((path / "dlq").rglob("*.parquet")):
            faults = con.sql(
                f"select raw, reason from {scan('dlq')} where reason in (select unnest($r))",
                params={**scan_parameters(path, "dlq"), "r": list(BOOK_FAULTS)},
            ).pl()
        rejected = dict(faults.group_by("reason").len().iter_rows())
        facts = {"source": f"lake {path}", "rows": quotes.height + faults.height}
        return quotes, faults, {**facts, "rejected": rejected, "skipped": {}}
    read = read_market_file(path, dataclasses.replace(read_options(args), quotes=True))
    faults = pl.DataFrame(
        {"raw": [r.raw for r in read.rejections], "reason": [r.reason for r in read.rejections]},
        schema={"raw": pl.Binary, "reason": pl.String},
    )
    return (
        read.valid,
        faults,
        {
            "source": f"{path} ({read.format})",
            "rows": read.rows,
            "rejected": dict(read.rejected_by_reason),
            "skipped": dict(read.skipped),
        },
    )


def clean(scored: pl.DataFrame) -> pl.DataFrame:
    """Valid trades, first copy of each (symbol, trade_id), no outliers, by event time."""
    return (
        scored.filter(first_copies() & ~pl.col("outlier"))
        .sort("ts", maintain_order=True)
        .select(CONTRACT_COLUMNS)
        .with_columns(pl.col("ts").cast(pl.Datetime("ms", "UTC")))
    )


# --- rendering -----------------------------------------------------------------------
def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != 0 and abs(value) < 0.01:
            return f"{value:.2e}"
        return f"{value:,.4f}".rstrip("0").rstrip(".")
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


SECTIONS = (
    ("Trades per symbol", "per_symbol"),
    ("Gaps (silences between consecutive trades of a symbol)", "gaps"),
    ("Price outliers (fat-finger check)", "outliers"),
    ("Largest outliers", "outlier_examples"),
    ("Duplicates (extra copies)", "duplicates"),
    ("Trade id sequence (ids missing between the first and the last)", "id_sequence"),
    ("Out-of-order arrivals", "out_of_order"),
    ("Rejected by the trade contract", "rejected"),
    ("Skipped (not trades)", "skipped"),
)


QUOTE_SECTIONS = (
    ("Quotes per symbol (spreads in basis points of the mid)", "per_symbol"),
    ("Crossed and locked books (rejected by the quote contract)", "book_faults"),
    ("Spread outliers", "spread_outliers"),
    ("Widest spread outliers", "spread_outlier_examples"),
    ("Rejected by the quote contract", "rejected"),
    ("Skipped (not quotes)", "skipped"),
)
Report = QualityReport | QuoteQualityReport


def _sections(report: Report) -> tuple[tuple[str, str], ...]:
    return QUOTE_SECTIONS if isinstance(report, QuoteQualityReport) else SECTIONS


def markdown(report: Report) -> str:
    lines = [f"# Data quality: {report.source}", ""]
    lines += [f"- **{k.replace('_', ' ')}**: {_cell(v)}" for k, v in report.overview.items()]
    for title, key in _sections(report):
        rows = getattr(report, key)
        lines += ["", f"## {title}", ""]
        if not rows:
            lines.append("none")
            continue
        columns = list(rows[0])
        lines.append("| " + " | ".join(columns) + " |")
        lines.append("|" + "---|" * len(columns))
        lines += ["| " + " | ".join(_cell(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_html(report: Report) -> str:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Data quality: {html.escape(report.source)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;"
        "margin-bottom:1.5em}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "th{background:#f3f3f3}td:first-child{text-align:left}</style></head><body>",
        f"<h1>Data quality: {html.escape(report.source)}</h1><ul>",
    ]
    parts += [
        f"<li><b>{html.escape(k.replace('_', ' '))}</b>: {html.escape(_cell(v))}</li>"
        for k, v in report.overview.items()
    ]
    parts.append("</ul>")
    for title, key in _sections(report):
        rows = getattr(report, key)
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if not rows:
            parts.append("<p>none</p>")
            continue
        columns = list(rows[0])
        parts.append(
            "<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in columns) + "</tr>"
        )
        for row in rows:
            parts.append(
                "<tr>"
                + "".join(f"<td>{html.escape(_cell(row[c]))}</td>" for c in columns)
                + "</tr>"
            )
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def run_quotes(args: argparse.Namespace) -> int:
    progress = Progress(f"profile {args.path} (quotes)", unit="quotes")
    try:
        if args.spread_factor <= 1 or args.spread_quotes < 10:
            raise ValueError("--spread-factor must be above 1 and --spread-quotes at least 10")
        quotes, faults, facts = load_quotes(args)
    except (OSError, ValueError) as exc:
        print(f"candlewax profile: {exc}", file=sys.stderr)
        return 2
    options = QuoteOptions(spread_quotes=args.spread_quotes, spread_factor=args.spread_factor)
    report = quote_profile(quotes, faults, options, **facts)
    progress.update(quotes.height)
    _write(args, report)
    progress.done()
    return 0


def _write(args: argparse.Namespace, report: Report) -> None:
    text = to_html(report) if args.report and args.report.suffix == ".html" else markdown(report)
    if args.report:
        args.report.write_text(text)
        print(f"report: {args.report}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    if args.json:
        args.json.write_text(json.dumps(report.as_dict(), indent=2, default=str))
        print(f"figures: {args.json}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    if args.quotes:
        if args.clean:
            print("candlewax profile: --clean writes trades; not with --quotes", file=sys.stderr)
            return 2
        return run_quotes(args)
    progress = Progress(f"profile {args.path}", unit="trades")
    try:
        trades, facts = load(args)
        thresholds = tuple(parse_duration_ms(t) for t in args.gaps.split(",") if t.strip())
    except (OSError, ValueError) as exc:
        print(f"candlewax profile: {exc}", file=sys.stderr)
        return 2
    try:
        options = QualityOptions(
            gap_thresholds_ms=thresholds,
            outlier_trades=args.outlier_trades,
            outlier_threshold=args.outlier_threshold,
        )
        OutlierRule(options.outlier_threshold, options.outlier_trades)  # a bad value: say so
    except ValueError as exc:
        print(f"candlewax profile: {exc}", file=sys.stderr)
        return 2
    report, scored = profile(
        trades,
        options,
        source=facts["source"],
        rows=facts["rows"],
        rejected=facts["rejected"],
        skipped=facts["skipped"],
        filtered=facts["filtered"],
    )
    progress.update(trades.height)
    _write(args, report)
    if args.clean:
        clean(scored).write_parquet(args.clean, compression="zstd")
        print(f"clean trades: {args.clean}", file=sys.stderr)
    progress.done()
    return 0
