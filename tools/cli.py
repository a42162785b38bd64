"""The `candlewax` command: tools around the candle flow."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from candlewax.failures import redact
from config.settings import SettingsError, load_settings, unknown_variables
from tools import dashboard, demo, dlq, drift, profile, reconcile, recovery_init, replay, simulate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="candlewax",
        description="Real-time OHLCV candles with Bytewax. The flow itself runs with "
        "`python -m bytewax.run flows.ohlcv`; these are the tools around it.",
    )
    try:
        settings = load_settings(for_flow=False)  # the defaults of every option
    except SettingsError as exc:
        print(f"candlewax: {redact(str(exc))}", file=sys.stderr)
        return 2
    for warning in unknown_variables():
        print(f"candlewax: warning: {warning}", file=sys.stderr)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo_parser = commands.add_parser(
        "demo",
        help="run the main job end to end on an embedded Kafka broker",
        description=demo.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_arguments(demo_parser, settings)
    demo_parser.set_defaults(run=demo.run)

    for name, module, summary in (
        ("simulate", simulate, "generate a realistic trade stream with faults"),
        ("replay", replay, "publish historical trades from files, in event-time order"),
        ("profile", profile, "report the data quality of a trade file or the lake"),
        ("reconcile", reconcile, "compare the lake's candles with candles recomputed from trades"),
        ("drift", drift, "show the recent drift records and alerts from the lake"),
        ("dlq", dlq, "dead-lettered messages: stats, show, and redrive once fixed"),
        ("dashboard", dashboard, "a live candle chart and the pipeline's health in a browser"),
        ("recovery-init", recovery_init, "create this process's Bytewax recovery partitions"),
    ):
        sub = commands.add_parser(
            name,
            help=summary,
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub, settings)
        sub.set_defaults(run=module.run)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.run(args))
    except BrokenPipeError:
        # The reader went away (`candlewax simulate | head`): not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
