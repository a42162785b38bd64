"""The `candlewax` command: tools around the candle flow."""

from __future__ import annotations

import argparse
import logging

from candlewax import demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="candlewax",
        description="Real-time OHLCV candles with Bytewax. The flow itself runs with "
        "`python -m bytewax.run flows.ohlcv`; these are the tools around it.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo_parser = commands.add_parser(
        "demo",
        help="run the main job end to end on an embedded Kafka broker",
        description=demo.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_arguments(demo_parser)
    demo_parser.set_defaults(run=demo.run)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return int(args.run(args))


if __name__ == "__main__":
    raise SystemExit(main())
