"""`candlewax profile`: the data quality of a trade file or of the lake's `trades/`.

Gaps per symbol at several thresholds, price outliers against a rolling median (the
fat-finger check), duplicates by trade id and by fingerprint, out-of-order arrivals and
their depth, and rows rejected or skipped by reason. Writes a report a person reads
(Markdown, or HTML for a `.html` name) and the same figures as JSON; optionally the
clean trades as Parquet (valid, first copy of each trade id, outliers removed, in
event-time order).
"""

from __future__ import annotations

import argparse
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
from tools.quality_checks import QualityOptions, QualityReport, first_copies, profile


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


def markdown(report: QualityReport) -> str:
    lines = [f"# Data quality: {report.source}", ""]
    lines += [f"- **{k.replace('_', ' ')}**: {_cell(v)}" for k, v in report.overview.items()]
    for title, key in SECTIONS:
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


def to_html(report: QualityReport) -> str:
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
    for title, key in SECTIONS:
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


def run(args: argparse.Namespace) -> int:
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
    text = to_html(report) if args.report and args.report.suffix == ".html" else markdown(report)
    if args.report:
        args.report.write_text(text)
        print(f"report: {args.report}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    if args.json:
        args.json.write_text(json.dumps(report.as_dict(), indent=2, default=str))
        print(f"figures: {args.json}", file=sys.stderr)
    if args.clean:
        clean(scored).write_parquet(args.clean, compression="zstd")
        print(f"clean trades: {args.clean}", file=sys.stderr)
    progress.done()
    return 0
