"""`candlewax simulate`: a realistic multi-symbol trade stream, with faults, to Kafka,
an NDJSON file or standard output. The same generator feeds the flow's `simulator`
source (`CANDLEWAX_SOURCE=simulator`)."""

from __future__ import annotations

import argparse
import sys

from config.durations import parse_duration_ms
from config.settings import Settings, parse_epoch_ms
from sources.simulator import SimulatorConfig, TradeSimulator
from tools.message_outputs import (
    add_output_arguments,
    chosen_topic,
    describe,
    open_output,
    send_all,
)
from tools.progress import Progress


def add_arguments(parser: argparse.ArgumentParser, settings: Settings) -> None:
    amount = parser.add_argument_group("how much")
    amount.add_argument(
        "--count",
        type=int,
        default=100_000,
        help="trades to generate (default 100000; 0 = no count limit)",
    )
    amount.add_argument(
        "--duration",
        type=parse_duration_ms,
        default=0,
        help="event time to cover, e.g. 10m (default: no time limit)",
    )
    amount.add_argument(
        "--endless",
        action="store_true",
        help="never stop; every --cycle trades the price levels drift and "
        "the activity changes, so no two cycles repeat",
    )
    amount.add_argument(
        "--cycle", type=int, default=100_000, help="endless runs: trades per cycle (default 100000)"
    )

    market = parser.add_argument_group("the market")
    market.add_argument("--symbols", type=int, default=8, help="number of symbols (default 8)")
    market.add_argument(
        "--rate",
        type=float,
        default=2_000.0,
        help="trades per second of event time, all symbols (default 2000)",
    )
    market.add_argument("--seed", type=int, default=7, help="random seed: same seed, same stream")
    market.add_argument(
        "--start",
        type=parse_epoch_ms,
        default=None,
        help="event time of the first trade, epoch ms or ISO (default: now)",
    )
    market.add_argument(
        "--speed",
        type=float,
        default=0.0,
        help="pacing: 0 = as fast as possible (default), 1 = real time, N = N x real time",
    )
    market.add_argument(
        "--lateness",
        type=parse_duration_ms,
        default=1_000,
        help="the flow's allowed lateness, so disorder stays within it and "
        "late trades go beyond it (default 1s)",
    )

    faults = parser.add_argument_group("faults (shares of trades, 0 to 1)")
    faults.add_argument(
        "--duplicates", type=float, default=0.0, help="trades re-sent with the same trade_id"
    )
    faults.add_argument(
        "--disorder", type=float, default=0.0, help="trades delayed within the allowed lateness"
    )
    faults.add_argument("--late", type=float, default=0.0, help="trades delayed beyond it")
    faults.add_argument(
        "--malformed",
        type=float,
        default=0.0,
        help="messages replaced by every kind the contract rejects",
    )
    faults.add_argument(
        "--fat-finger",
        type=float,
        default=0.0,
        help="prices far off the market (x0.1, x0.5, x2, x10)",
    )
    faults.add_argument("--future", type=float, default=0.0, help="timestamps in the future")
    faults.add_argument(
        "--future-offset",
        type=parse_duration_ms,
        default=7_200_000,
        help="how far in the future (default 2h: beyond the contract's bound)",
    )
    faults.add_argument(
        "--noise",
        type=float,
        default=0.0,
        help="share of the whole stream that is order-book noise "
        "(type add/cancel/modify), e.g. 0.98",
    )

    quotes = parser.add_argument_group("quotes")
    quotes.add_argument(
        "--quotes",
        action="store_true",
        help="send the top-of-book quotes of the same markets instead of their trades (the "
        "same seed and rate give the quotes of the trades a run without it sends), to the "
        "quotes topic unless --topic names one",
    )
    quotes.add_argument(
        "--quotes-per-trade",
        type=float,
        default=settings.sim_quotes_per_trade,
        help="quotes per trade on average (default %(default)s)",
    )
    quotes.add_argument("--crossed", type=float, default=0.0, help="crossed books (bid > ask)")
    quotes.add_argument("--locked", type=float, default=0.0, help="locked books (bid = ask)")

    add_output_arguments(parser, settings)


def config_from(args: argparse.Namespace) -> SimulatorConfig:
    if args.noise >= 1:
        raise SystemExit("candlewax simulate: --noise must be below 1 (a share of the stream)")
    return SimulatorConfig(
        symbols=args.symbols,
        trades=0 if args.endless else args.count,
        duration_ms=0 if args.endless else args.duration,
        rate=args.rate,
        speed=args.speed,
        seed=args.seed,
        start_ms=args.start,
        cycle_trades=args.cycle,
        allowed_lateness_ms=args.lateness,
        duplicate_rate=args.duplicates,
        disorder_rate=args.disorder,
        late_rate=args.late,
        malformed_rate=args.malformed,
        fat_finger_rate=args.fat_finger,
        future_rate=args.future,
        future_offset_ms=args.future_offset,
        noise_share=args.noise,
        kind="quote" if args.quotes else "trade",
        quotes_per_trade=args.quotes_per_trade,
        crossed_rate=args.crossed,
        locked_rate=args.locked,
    )


def run(args: argparse.Namespace) -> int:
    config = config_from(args)
    simulator = TradeSimulator(config)
    topic = chosen_topic(args, args.quotes)
    output = open_output(args.brokers, topic, args.output, paced=args.speed > 0)
    progress = Progress(
        f"simulate -> {describe(args.brokers, topic, args.output)}",
        total=config.trades or None,
        unit="trades",
    )
    send_all(simulator.messages(), output, progress, config.speed, lambda: simulator.emitted_trades)
    what = "the quotes of " if args.quotes else ""
    print(
        f"sent {output.sent:,} messages ({what}{simulator.emitted_trades:,} trades, "
        f"{len(simulator.symbols)} symbols, seed {config.seed})",
        file=sys.stderr,
    )
    return 0
