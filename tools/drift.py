"""`candlewax drift`: the recent drift records and alerts in the lake, as a table.

One row per bar (its newest drift record: all late trades so far), newest first: which
bar, which fields drifted beyond the threshold and by how much, how many late trades and
how late the latest was, and the revision that carries the correction (with
restatement on).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import duckdb

from config.durations import parse_duration_ms
from config.settings import Settings
from sinks.lake import require_lake, scan, scan_parameters
from tools.message_outputs import add_lake_argument
from tools.tables import print_table

COLUMNS = (
    ("detected", "detected"),
    ("bar_id", "bar"),
    ("late_trades", "late"),
    ("max_lateness_s", "lateness s"),
    ("max_drift_pct", "max drift %"),
    ("drifted_fields", "fields beyond threshold"),
    ("revision", "rev"),
    ("alert", "alert"),
)


def add_arguments(parser: argparse.ArgumentParser, settings: Settings) -> None:
    add_lake_argument(parser, settings)
    parser.add_argument("--alerts", action="store_true", help="only bars that raised an alert")
    parser.add_argument("--symbol", help="only this symbol")
    parser.add_argument("--resolution", help="only this resolution (1s, 10s, 1m, ...)")
    parser.add_argument(
        "--since",
        type=parse_duration_ms,
        default=None,
        help="only drift detected within this much event time before the newest (e.g. 15m)",
    )
    parser.add_argument("--limit", type=int, default=20, help="rows to show (default 20)")


def query(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    source = scan("drift")
    parameters: dict[str, Any] = scan_parameters(args.lake, "drift")
    conditions = ["true"]
    if args.symbol:
        parameters["symbol"] = args.symbol
        conditions.append("symbol = $symbol")
    if args.resolution:
        parameters["resolution"] = args.resolution
        conditions.append("resolution = $resolution")
    if args.since is not None:
        parameters["since"] = int(args.since)
        conditions.append(
            f"detected_event_ts >= (select max(detected_event_ts) from {source}) "
            "- to_milliseconds($since)"
        )
    where = " and ".join(conditions)
    con = duckdb.connect()
    newest_per_bar = f"""
        select * from {source} where {where}
        qualify row_number() over (
            partition by bar_id order by late_trades desc, revision desc
        ) = 1"""
    parameters["limit"] = int(args.limit)
    fetched = con.execute(
        f"""
        select strftime(detected_event_ts, '%Y-%m-%d %H:%M:%S') as detected, bar_id,
               late_trades, round(max_lateness_ms / 1000, 3) as max_lateness_s,
               round(max_drift * 100, 4) as max_drift_pct, drifted_fields, revision, alert
        from ({newest_per_bar})
        where {"alert" if args.alerts else "true"}
        order by detected_event_ts desc, max_drift desc
        limit $limit""",
        parameters,
    ).fetchall()
    del parameters["limit"]
    totals = con.execute(
        f"""
        select count(*), count(distinct bar_id), count(*) filter (where alert),
               count(distinct bar_id) filter (where alert)
        from {source} where {where}""",
        parameters,
    ).fetchone()
    assert totals is not None
    columns = [c for c, _ in COLUMNS]
    rows = [dict(zip(columns, row, strict=True)) for row in fetched]
    summary = {
        "records": totals[0],
        "bars": totals[1],
        "alert_records": totals[2],
        "alert_bars": totals[3],
    }
    return rows, summary


def render(rows: list[dict[str, Any]], out=sys.stdout) -> None:
    cells = [[("-" if row[c] is None else str(row[c])) for c, _ in COLUMNS] for row in rows]
    print_table([title for _, title in COLUMNS], cells, out)


def run(args: argparse.Namespace) -> int:
    try:
        require_lake(args.lake)
    except FileNotFoundError as exc:
        print(f"candlewax drift: {exc}", file=sys.stderr)
        return 2
    if not list((args.lake / "drift").rglob("*.parquet")):
        print(f"no drift records in {args.lake}/drift: no late trades so far", file=sys.stderr)
        return 0
    try:
        rows, summary = query(args)
    except duckdb.Error as exc:
        print(f"candlewax drift: {exc}", file=sys.stderr)
        return 2
    print(
        f"{summary['records']:,} drift records for {summary['bars']:,} bars; "
        f"{summary['alert_records']:,} alerts on {summary['alert_bars']:,} bars "
        f"(newest record per bar below, newest first)"
    )
    render(rows)
    return 0
