"""`candlewax reconcile`: recompute candles from the lake's trades and compare them with
the lake's candles (current revision); `--quotes`: quote bars from the lake's quotes.
Prints a summary, writes the same as JSON and the differing bars as Parquet, and exits 1
when any bar drifts beyond the threshold, so it can gate a job (0 = all within, 2 =
could not run)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from candlewax.records import DRIFT_FIELDS, QUOTE_ALERT_FIELDS, QUOTE_DRIFT_FIELDS
from config.durations import format_duration
from config.settings import Settings, parse_epoch_ms
from tools.bar_truth import ReconcileScope, reconcile
from tools.message_outputs import add_lake_argument


def add_arguments(parser: argparse.ArgumentParser, settings: Settings) -> None:
    add_lake_argument(parser, settings)
    parser.add_argument(
        "--start", type=parse_epoch_ms, help="first window start, epoch ms or ISO (UTC)"
    )
    parser.add_argument("--end", type=parse_epoch_ms, help="windows starting before this")
    parser.add_argument("--symbols", default="", help="comma-separated symbols (default all)")
    parser.add_argument(
        "--resolutions",
        default=",".join(format_duration(ms) for ms in settings.resolutions),
        help="resolutions to compare (default %(default)s, from CANDLEWAX_RESOLUTIONS)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=settings.drift_threshold,
        help="relative drift of a bar that fails the run (default %(default)s, from "
        "CANDLEWAX_DRIFT_THRESHOLD)",
    )
    parser.add_argument(
        "--fields",
        default=",".join(settings.drift_alert_fields),
        help="fields the threshold applies to (default %(default)s, from "
        "CANDLEWAX_DRIFT_ALERT_FIELDS); "
        "missing and extra bars always count",
    )
    parser.add_argument(
        "--quotes",
        action="store_true",
        help="reconcile quote bars against the lake's quotes (fields: "
        f"{', '.join(QUOTE_DRIFT_FIELDS)}; the threshold applies to "
        f"{', '.join(QUOTE_ALERT_FIELDS)} unless --fields says)",
    )
    parser.set_defaults(candle_fields_default=",".join(settings.drift_alert_fields))
    parser.add_argument("--json", type=Path, help="write the summary and worst bars as JSON")
    parser.add_argument("--bars", type=Path, help="write the differing bars as Parquet")


def scope_from(args: argparse.Namespace) -> ReconcileScope:
    fields = tuple(f.strip() for f in args.fields.split(",") if f.strip())
    known = QUOTE_DRIFT_FIELDS if args.quotes else DRIFT_FIELDS
    if args.quotes and args.fields == args.candle_fields_default:
        fields = QUOTE_ALERT_FIELDS
    unknown = set(fields) - set(known)
    if unknown:
        raise ValueError(f"--fields: unknown {sorted(unknown)}; expected {', '.join(known)}")
    return ReconcileScope(
        resolutions=tuple(r.strip() for r in args.resolutions.split(",") if r.strip()),
        start_ms=args.start,
        end_ms=args.end,
        symbols=tuple(s.strip() for s in args.symbols.split(",") if s.strip()),
        threshold=args.threshold,
        fields=fields,
        quotes=args.quotes,
    )


def print_summary(summary: dict, worst: list[dict], out=sys.stdout) -> None:
    s = summary
    source = "quotes" if "quotes" in s else "trades"
    print(
        f"reconciled {s['bars']} against {s[source]:,} {source} in {s['lake']} "
        f"in {s['seconds']:.2f} s",
        file=out,
    )
    print(
        f"  bars: truth {s['truth_bars']:,}, emitted {s['emitted_bars']:,}, equal {s['equal']:,}, "
        f"missing {s['missing']:,}, extra {s['extra']:,}, changed {s['changed']:,}",
        file=out,
    )
    for resolution, counts in sorted(s["by_resolution"].items()):
        print(
            f"    {resolution:>4}: " + ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())),
            file=out,
        )
    d = s["drift"]
    print(
        f"  drift per bar: p50 {d['p50']:.4%}, p95 {d['p95']:.4%}, p99 {d['p99']:.4%}, "
        f"max {d['max']:.4%}",
        file=out,
    )
    print(
        f"  beyond the {s['scope']['threshold']:.2%} threshold: "
        f"{s['bars_beyond_threshold']:,} bars",
        file=out,
    )
    if worst:
        print("  worst bars:", file=out)
        for bar in worst:
            fields = ", ".join(
                f"{k[6:]} {v:.3%}" for k, v in bar.items() if k.startswith("drift_") and v
            )
            print(
                f"    {bar['bar_id']:<40} {bar['status']:<8} {bar['max_drift']:.3%}  {fields}",
                file=out,
            )


def run(args: argparse.Namespace) -> int:
    try:
        result = reconcile(args.lake, scope_from(args))
    except (OSError, ValueError, duckdb_errors()) as exc:
        print(f"candlewax reconcile: {exc}", file=sys.stderr)
        return 2
    print_summary(result.summary, result.worst)
    if args.json:
        args.json.write_text(json.dumps({**result.summary, "worst": result.worst}, indent=2))
    if args.bars:
        result.bars.write_parquet(args.bars, compression="zstd")
    return 1 if result.failed else 0


def duckdb_errors() -> type[Exception]:
    import duckdb

    return duckdb.Error
