"""`candlewax dlq`: what the dead-letter queue holds, and sending it back once it is fixed.

    candlewax dlq stats   [--lake DIR | --dlq-topic T]     counts by reason, input, time
    candlewax dlq show    [--lake DIR | --dlq-topic T]     the messages: reason, position, bytes
    candlewax dlq redrive --brokers B [--topic T] [...]    send them back to the input topic

Every command reads the lake's `dlq/` (the default; it holds every message whole) or, with
`--dlq-topic`, a dead-letter topic (`trades.dlq`, `quotes.dlq`), and takes the same
filters: `--reason` (repeatable), `--input` (the topic or file the messages were read
from), `--since`/`--until` (when they were rejected: an ISO time, epoch ms, or a
duration before now such as `2h`).

`redrive` is for after a fix: a widened timestamp bound, a repaired adapter upstream, a
fat-finger threshold that was too tight. It sends each selected message to `--topic`
(default: the topic it was first read from) with its original key and value, and the
headers `candlewax.redriven_from` (its dead-letter position), `candlewax.redrive_reason`
(why it was rejected) and `candlewax.redriven_at`. Once the broker has them, it appends
one line per message to a ledger (`<lake>/redriven.ndjson` by default, `--ledger`); a
later run skips every message the ledger names, so running it twice sends nothing
twice, and two runs at once take turns (the second waits for the first to finish, then
reads what it sent). `--force` sends them again; `--dry-run` only says what it would
send.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from candlewax.records import Rejection
from config.durations import parse_duration_ms
from config.settings import Settings, parse_epoch_ms
from sinks.kafka import ProducerChannel
from sinks.lake import require_lake, scan, scan_parameters
from tools.message_outputs import add_lake_argument
from tools.tables import print_table
from tools.topics import read_topic

LEDGER = "redriven.ndjson"
_COLUMNS = list(Rejection.frame_schema())


class DlqError(Exception):
    """A problem the user can fix (no lake, no such topic, nowhere to send to)."""


# --- reading ---------------------------------------------------------------------------
def from_lake(lake: Path) -> pl.DataFrame:
    """Every dead-lettered message in the lake (`received_at` in epoch ms)."""
    require_lake(lake)
    if not list((Path(lake) / "dlq").rglob("*.parquet")):
        return pl.DataFrame(schema=Rejection.frame_schema())
    query = f"select * exclude (date) from {scan('dlq')}"
    frame = duckdb.connect().sql(query, params=scan_parameters(lake, "dlq")).pl()
    return frame.with_columns(pl.col("received_at").dt.epoch("ms")).select(_COLUMNS)


def from_topic(client_config: dict[str, Any], topic: str) -> pl.DataFrame:
    """Every message on a dead-letter topic; a value the flow cut to fit a Kafka message
    (header `candlewax.truncated`) is left out: only the lake has it whole."""
    rows = []
    for record in read_topic(client_config, topic):
        headers = record.headers
        if "candlewax.truncated" in headers:
            continue
        field = headers.get("candlewax.field")
        rows.append(
            {
                "raw": record.value,
                "reason": headers.get("candlewax.reason", b"").decode(),
                "field": field.decode() if field is not None else None,
                "detail": headers.get("candlewax.detail", b"").decode(),
                "source": headers.get("candlewax.source", b"").decode(),
                "received_at": int(headers.get("candlewax.received_at", b"0")),
                "key": record.key,
            }
        )
    return pl.DataFrame(rows, schema=Rejection.frame_schema())


# Where a message was read from, from its position: `kafka:trades/0@17` -> the topic
# `trades`; `file:/data/t.ndjson@12` -> the path; the simulator's name as it is.
_WHERE = pl.col("source").str.replace(r"@[^@]*$", "")
_FROM_KAFKA = _WHERE.str.starts_with("kafka:")
INPUT = (
    pl.when(_FROM_KAFKA)
    .then(_WHERE.str.strip_prefix("kafka:").str.replace(r"/[0-9]+$", ""))
    .otherwise(_WHERE.str.strip_prefix("file:"))
)
TOPIC = pl.when(_FROM_KAFKA).then(INPUT)  # null when not read from Kafka


def point_in_time(text: str) -> int:
    """Epoch ms from an ISO time, epoch ms, or a duration before now (`2h`, `30m`)."""
    try:
        return parse_epoch_ms(text)
    except ValueError:
        pass
    try:
        return int(time.time() * 1000) - parse_duration_ms(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected an ISO time (2024-08-09T12:00), epoch ms, or a duration "
            "before now (2h, 30m)"
        ) from None


def selected(frame: pl.DataFrame, args: argparse.Namespace) -> pl.DataFrame:
    """The messages the filters pick, oldest first."""
    conditions = []
    if args.reason:
        conditions.append(pl.col("reason").is_in(args.reason))
    if args.input:
        conditions.append(INPUT.is_in(args.input))
    if args.since is not None:
        conditions.append(pl.col("received_at") >= args.since)
    if args.until is not None:
        conditions.append(pl.col("received_at") < args.until)
    picked = frame.filter(*conditions) if conditions else frame
    return picked.sort("received_at", "source", maintain_order=True)


def load(args: argparse.Namespace) -> pl.DataFrame:
    if args.dlq_topic:
        if not args.brokers:
            raise DlqError("--dlq-topic needs --brokers (or CANDLEWAX_KAFKA_BROKERS)")
        return from_topic({"bootstrap.servers": args.brokers}, args.dlq_topic)
    try:
        return from_lake(args.lake)
    except FileNotFoundError as exc:
        raise DlqError(str(exc)) from None


# --- the commands ----------------------------------------------------------------------
def _ms(value: int | None) -> str:
    if value is None:
        return "-"
    return datetime.fromtimestamp(value / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def stats(frame: pl.DataFrame) -> pl.DataFrame:
    """Counts by reason and input, with the first and last time one was rejected."""
    return (
        frame.with_columns(input=INPUT)
        .group_by("reason", "input")
        .agg(
            pl.len().alias("messages"),
            pl.col("received_at").min().alias("first"),
            pl.col("received_at").max().alias("last"),
        )
        .sort(["messages", "reason"], descending=[True, False])
    )


def run_stats(args: argparse.Namespace, frame: pl.DataFrame) -> int:
    counts = stats(frame)
    where = f"topic {args.dlq_topic}" if args.dlq_topic else f"{args.lake}/dlq"
    if frame.height == 0:
        print(f"no dead-lettered messages in {where} (with these filters)")
        return 0
    times = frame.get_column("received_at")
    first, last = _ms(int(times.min())), _ms(int(times.max()))  # type: ignore[arg-type]
    print(f"{frame.height:,} dead-lettered messages in {where}, rejected {first} .. {last} UTC")
    rows = [
        [r["reason"], r["input"], f"{r['messages']:,}", _ms(r["first"]), _ms(r["last"])]
        for r in counts.iter_rows(named=True)
    ]
    print_table(["reason", "input", "messages", "first rejected", "last rejected"], rows)
    return 0


def shown_bytes(value: bytes | None) -> str:
    """The original bytes as text where they are text; escapes for the rest."""
    if value is None:
        return "(none)"
    return value.decode("utf-8", errors="backslashreplace").encode("unicode_escape").decode()


def run_show(args: argparse.Namespace, frame: pl.DataFrame) -> int:
    shown = frame.head(args.limit) if args.limit else frame
    for row in shown.iter_rows(named=True):
        if args.json:
            record = {
                **{k: row[k] for k in ("reason", "field", "detail", "source", "received_at")},
                "key": None if row["key"] is None else row["key"].decode(errors="backslashreplace"),
                "raw": None if row["raw"] is None else row["raw"].decode(errors="backslashreplace"),
            }
            print(json.dumps(record, ensure_ascii=False))
            continue
        field = f" field={row['field']}" if row["field"] else ""
        print(f"{_ms(row['received_at'])}  {row['reason']}{field}  {row['source']}")
        print(f"    detail: {row['detail']}")
        if row["key"] is not None:
            print(f"    key:    {shown_bytes(row['key'])}")
        print(f"    bytes:  {shown_bytes(row['raw'])}")
    if not args.json:
        more = frame.height - shown.height
        print(
            f"({shown.height:,} of {frame.height:,} shown{'; --limit 0 for all' if more else ''})"
        )
    return 0


def ledger_path(args: argparse.Namespace) -> Path:
    if args.ledger is not None:
        return Path(args.ledger)
    if args.dlq_topic:
        raise DlqError("reading a dead-letter topic: say where the ledger is (--ledger FILE)")
    return Path(args.lake) / LEDGER


def redriven_before(ledger: Path) -> set[str]:
    """The dead-letter positions the ledger says were sent back already."""
    if not ledger.exists():
        return set()
    done = set()
    for number, line in enumerate(ledger.read_text().splitlines(), 1):
        if line.strip():
            try:
                done.add(json.loads(line)["source"])
            except (ValueError, KeyError):
                raise DlqError(f"{ledger}:{number}: not a ledger line: {line[:80]!r}") from None
    return done


@contextlib.contextmanager
def ledger_taken(ledger: Path) -> Iterator[None]:
    """The ledger for this run alone (an exclusive lock on it, released on exit): two
    re-drives at once would both read it before either wrote to it, and send the same
    messages twice. A second run waits, saying so, then reads what the first wrote."""
    ledger.parent.mkdir(parents=True, exist_ok=True)
    with ledger.open("a") as held:
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"another re-drive is writing {ledger}; waiting for it", flush=True)
            fcntl.flock(held, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)


def run_redrive(args: argparse.Namespace, frame: pl.DataFrame) -> int:
    if not args.brokers:
        raise DlqError("redrive sends to Kafka: give --brokers (or CANDLEWAX_KAFKA_BROKERS)")
    ledger = ledger_path(args)
    if args.dry_run:
        return _redrive(args, frame, ledger)
    with ledger_taken(ledger):
        return _redrive(args, frame, ledger)


def _redrive(args: argparse.Namespace, frame: pl.DataFrame, ledger: Path) -> int:
    unique = frame.unique("source", keep="first", maintain_order=True)
    done = set() if args.force else redriven_before(ledger)
    todo = unique.filter(~pl.col("source").is_in(list(done)))
    skipped = unique.height - todo.height
    targets = [args.topic] * todo.height if args.topic else todo.select(TOPIC).to_series().to_list()
    nowhere = [s for s, t in zip(todo.get_column("source"), targets, strict=True) if t is None]
    if nowhere:
        raise DlqError(
            f"{len(nowhere):,} selected messages were not read from Kafka (e.g. {nowhere[0]}): "
            "name the topic to send them to with --topic"
        )
    by_topic: dict[str, int] = {}
    for target in targets:
        by_topic[target] = by_topic.get(target, 0) + 1
    plan = ", ".join(f"{n:,} to {t!r}" for t, n in sorted(by_topic.items())) or "nothing"
    note = f"; {skipped:,} re-driven before (--force sends them again)" if skipped else ""
    if args.dry_run:
        print(f"would re-drive {todo.height:,} messages: {plan}{note}")
        return 0
    now = int(time.time() * 1000)
    channels: dict[str, ProducerChannel] = {}
    client = {"bootstrap.servers": args.brokers}
    lines = []
    for row, target in zip(todo.iter_rows(named=True), targets, strict=True):
        assert target is not None
        channel = channels.get(target) or channels.setdefault(
            target, ProducerChannel(client, target)
        )
        headers = [
            ("candlewax.redriven_from", row["source"].encode()),
            ("candlewax.redrive_reason", row["reason"].encode()),
            ("candlewax.redriven_at", str(now).encode()),
        ]
        channel.send(row["key"], row["raw"], headers)
        lines.append(
            json.dumps(
                {
                    "source": row["source"],
                    "reason": row["reason"],
                    "topic": target,
                    "redriven_at": now,
                }
            )
        )
    for channel in channels.values():
        channel.deliver()  # on the broker before the ledger says so
    if lines:
        with ledger.open("a") as out:
            out.write("\n".join(lines) + "\n")
    print(f"re-drove {todo.height:,} messages: {plan}{note}; ledger {ledger}")
    return 0


COMMANDS = {"stats": run_stats, "show": run_show, "redrive": run_redrive}


def add_arguments(parser: argparse.ArgumentParser, settings: Settings) -> None:
    commands = parser.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    helps = {
        "stats": "counts by reason and input, and when they were rejected",
        "show": "the messages: reason, where they were read, their original bytes",
        "redrive": "send messages back to their input topic, once each",
    }
    for name, summary in helps.items():
        sub = commands.add_parser(name, help=summary, description=summary)
        add_lake_argument(sub, settings)
        sub.add_argument(
            "--dlq-topic",
            help="read this dead-letter topic (trades.dlq, quotes.dlq) instead of the lake",
        )
        sub.add_argument(
            "--brokers",
            default=settings.kafka_brokers or None,
            help="Kafka bootstrap servers (default %(default)s, from CANDLEWAX_KAFKA_BROKERS)",
        )
        sub.add_argument("--reason", action="append", help="only this reason (repeat for several)")
        sub.add_argument(
            "--input",
            action="append",
            help="only messages read from this topic or file (repeatable)",
        )
        sub.add_argument("--since", type=point_in_time, help="rejected at or after (ISO, ms, 2h)")
        sub.add_argument("--until", type=point_in_time, help="rejected before (ISO, ms, 2h)")
        if name == "show":
            sub.add_argument("--limit", type=int, default=20, help="messages (default 20; 0 all)")
            sub.add_argument("--json", action="store_true", help="one JSON object per line")
        if name == "redrive":
            sub.add_argument(
                "--topic", help="send every message here (default: the topic it came from)"
            )
            sub.add_argument(
                "--ledger", type=Path, help=f"what was re-driven (default <lake>/{LEDGER})"
            )
            sub.add_argument("--force", action="store_true", help="send re-driven ones again")
            sub.add_argument("--dry-run", action="store_true", help="only say what would go")


def run(args: argparse.Namespace) -> int:
    try:
        frame = selected(load(args), args)
        return COMMANDS[args.dlq_command](args, frame)
    except DlqError as exc:
        print(f"candlewax dlq {args.dlq_command}: {exc}", file=sys.stderr)
        return 2
