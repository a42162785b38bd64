"""PostgreSQL serving tables: the current version of every candle and quote bar, and every
drift record, for applications that query a database rather than read a topic.

Tables (`candles`, `quote_bars`, `drift`, `quote_drift`) have the records' columns, with
timestamps as `timestamptz`; their DDL is made here from the record definitions (one
source of truth) and checked in as `schemas/postgres.sql` (`python -m sinks.postgres`
prints it). The flow creates whichever of them are missing when it starts.

Writes are batched and idempotent. A background thread per sink partition takes every
batch that has queued up, COPYs it (CSV, encoded by polars in one call) into a temporary
staging table and upserts it in one statement, all in one transaction:

- a bar (`candles`, `quote_bars`, primary key `bar_id`) is replaced only by a *higher*
  `revision`, so a replay, a resume after a crash or a batch sent twice changes nothing,
  and a restated candle replaces the one before it;
- a drift record (primary key: the bar, its count of late trades or quotes and the
  event time of the late one) is written once; the same record again is a no-op.

Nothing counts as written before its transaction commits. The sink is a partitioned
Bytewax sink: its recovery snapshot holds the batches not yet committed (the one being
written and the ones queued), so a snapshot never waits for the database and a resumed
flow writes them again. When the server goes away (restart, failover, network) the
batch is retried on a new connection, with backoff, for up to
`CANDLEWAX_SERVING_RETRY_TIMEOUT`; meanwhile batches queue up to a bound, after which the
flow waits. An error retrying cannot fix (a wrong password, a missing privilege, a table
with other columns) stops the flow at once with one line naming the table.

Why not partitioned by day: the contract's primary key is `bar_id`, and a partitioned
table's primary key must contain the partition column. The tables are time-indexed
instead, the way their queries go: `(symbol, resolution, window_start DESC)` for "the
latest bars of a symbol" and a range of one symbol, and a BRIN index on `window_start`
(a few pages for millions of rows, since rows arrive in time order) for a time range of
every symbol and for retention (`DELETE ... WHERE window_start < ...`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any

import polars as pl
import psycopg
import pyarrow as pa
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from candlewax.failures import OutputError, PipelineError, fail, failure, redact
from candlewax.metrics import SERVING_PENDING, SERVING_RETRIES, SERVING_ROWS
from candlewax.records import (
    TIMESTAMP_MS,
    Candle,
    DriftRecord,
    QuoteBar,
    QuoteDriftRecord,
    candle_frame,
    concat_frames,
    finite,
    quote_bar_frame,
)
from sinks.retrying import Retrying

log = logging.getLogger(__name__)

_PG_TYPES = {
    pa.string(): "text",
    TIMESTAMP_MS: "timestamptz",
    pa.float64(): "double precision",
    pa.int64(): "bigint",
    pa.bool_(): "boolean",
}
# Only these field types are never null; a float may be null (not finite, see `finite`).
_NOT_NULL_TYPES = {"str", "int", "bool"}
_NULL = r"\N"  # the NULL of the COPY data: an empty string stays an empty string


@dataclass(frozen=True)
class ServingTable:
    """One serving table: the record it holds, its key, and how a newer row wins."""

    name: str
    record: Any  # a `candlewax.records` record class (its Arrow schema and fields)
    key: tuple[str, ...]
    revisioned: bool  # replaced only by a higher `revision`; else written once
    to_frame: Callable[[Sequence[Any]], pl.DataFrame]  # the flow's batches -> record frame
    comment: str
    indexes: tuple[tuple[str, str], ...]  # (name suffix, index definition)

    @cached_property
    def columns(self) -> list[tuple[str, str, bool]]:
        """(name, PostgreSQL type, not null) of every column, in the record's order."""
        types = {f.name: str(f.type) for f in fields(self.record)}
        return [
            (f.name, _PG_TYPES[f.type], types[f.name] in _NOT_NULL_TYPES or f.name in self.key)
            for f in self.record.ARROW_SCHEMA
        ]

    @cached_property
    def timestamps(self) -> tuple[str, ...]:
        return tuple(self.record.TIMESTAMP_FIELDS)

    def ddl(self) -> list[str]:
        """The statements that create the table and its indexes (each if missing)."""
        columns = ",\n".join(
            f"    {name} {kind}{' NOT NULL' if not_null else ''}"
            for name, kind, not_null in self.columns
        )
        key = ", ".join(self.key)
        statements = [
            f"CREATE TABLE IF NOT EXISTS {self.name} (\n{columns},\n    PRIMARY KEY ({key})\n)",
            f"COMMENT ON TABLE {self.name} IS '{self.comment}'",
        ]
        for suffix, definition in self.indexes:
            statements.append(
                f"CREATE INDEX IF NOT EXISTS {self.name}_{suffix} ON {self.name} {definition}"
            )
        return statements

    @property
    def staging(self) -> str:
        return f"candlewax_stage_{self.name}"

    @cached_property
    def staging_ddl(self) -> str:
        """A temporary table of the session that a batch is COPYed into: the record's
        columns as the flow has them (timestamps in epoch ms), emptied at every commit."""
        columns = ", ".join(
            f"{name} {'bigint' if name in self.timestamps else kind}"
            for name, kind, _ in self.columns
        )
        return (
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {self.staging} ({columns}) ON COMMIT DELETE ROWS"
        )

    @cached_property
    def copy_sql(self) -> str:
        names = ", ".join(name for name, _, _ in self.columns)
        return f"COPY {self.staging} ({names}) FROM STDIN (FORMAT csv, NULL '{_NULL}')"

    @cached_property
    def upsert_sql(self) -> str:
        """One statement: each row of the staged batch (one per key, see `csv`) inserted,
        or replacing the stored one (a bar: only by a higher revision)."""
        names = [name for name, _, _ in self.columns]
        selected = ", ".join(
            f"timestamptz 'epoch' + {name} * interval '1 millisecond'"
            if name in self.timestamps
            else name
            for name in names
        )
        key = ", ".join(self.key)
        updates = ", ".join(f"{name} = EXCLUDED.{name}" for name in names if name not in self.key)
        statement = (
            f"INSERT INTO {self.name} AS stored ({', '.join(names)})\n"
            f"SELECT {selected} FROM {self.staging}\n"
            f"ON CONFLICT ({key}) "
        )
        if self.revisioned:
            return statement + f"DO UPDATE SET {updates}\nWHERE stored.revision < EXCLUDED.revision"
        return statement + "DO NOTHING"

    def csv(self, frame: pl.DataFrame) -> bytes:
        """A frame of the record's columns as the COPY data, in one call, one row per key:
        a bar at its highest revision (of equal ones the first, as if written one by one),
        a drift record the first time (the same key is the same record). Done here, in
        polars on the writer's thread, the server's upsert needs no sort."""
        names = [name for name, _, _ in self.columns]
        rows = finite(frame.select(names))
        if rows.select(pl.struct(self.key).n_unique()).item() < rows.height:
            if self.revisioned:
                rows = rows.sort("revision", descending=True, maintain_order=True)
            rows = rows.unique(list(self.key), keep="first", maintain_order=True)
        return rows.write_csv(include_header=False, null_value=_NULL).encode()


_BAR_INDEXES = (
    ("symbol_time", "(symbol, resolution, window_start DESC)"),
    ("time_brin", "USING brin (window_start)"),
)
_DRIFT_INDEXES = (
    ("symbol_time", "(symbol, window_start DESC)"),
    ("time_brin", "USING brin (window_start)"),
    ("alerts", "(detected_event_ts DESC) WHERE alert"),
)


def _drift_frame(record: Any) -> Callable[[Sequence[Any]], pl.DataFrame]:
    def to_frame(frames: Sequence[pl.DataFrame]) -> pl.DataFrame:
        return concat_frames(frames).select(list(record.frame_schema()))

    return to_frame


CANDLES = ServingTable(
    "candles",
    Candle,
    ("bar_id",),
    True,
    candle_frame,
    "candlewax: the current (highest) revision of every candle",
    _BAR_INDEXES,
)
QUOTE_BARS = ServingTable(
    "quote_bars",
    QuoteBar,
    ("bar_id",),
    True,
    quote_bar_frame,
    "candlewax: the current (highest) revision of every quote bar",
    _BAR_INDEXES,
)
DRIFT = ServingTable(
    "drift",
    DriftRecord,
    ("bar_id", "late_trades", "detected_event_ts"),
    False,
    _drift_frame(DriftRecord),
    "candlewax: every drift record; the current drift of a bar is its row with the most "
    "late_trades",
    _DRIFT_INDEXES,
)
QUOTE_DRIFT = ServingTable(
    "quote_drift",
    QuoteDriftRecord,
    ("bar_id", "late_quotes", "detected_event_ts"),
    False,
    _drift_frame(QuoteDriftRecord),
    "candlewax: every quote drift record",
    _DRIFT_INDEXES,
)
TABLES = {t.name: t for t in (CANDLES, QUOTE_BARS, DRIFT, QUOTE_DRIFT)}


def schema_ddl() -> str:
    """Every serving table's DDL, as `schemas/postgres.sql` holds it."""
    parts = [
        "-- candlewax serving tables (PostgreSQL 13+). Generated from candlewax/records.py by",
        "-- `python -m sinks.postgres`; the flow creates the missing ones when it starts.",
        "",
    ]
    for table in TABLES.values():
        parts.extend(f"{statement};\n" for statement in table.ddl())
    return "\n".join(parts)


# --- connecting ----------------------------------------------------------------------
# Errors no retry can fix (libpq gives no SQLSTATE for a refused connection, only text).
_FATAL_CONNECT = (
    "password authentication failed",
    "does not exist",
    "no pg_hba.conf entry",
    "authentication failed",
    "permission denied",
    "invalid connection option",
    "invalid dsn",
    'missing "="',
)


def retryable(error: BaseException) -> bool:
    """Whether writing the batch again, on a new connection, may succeed: the server
    restarting or unreachable, a dropped connection, a serialization failure."""
    if isinstance(error, psycopg.errors.TransactionRollback):
        return True
    if isinstance(error, (psycopg.OperationalError, psycopg.InterfaceError)):
        text = str(error).lower()
        return not any(marker.lower() in text for marker in _FATAL_CONNECT)
    return False


@dataclass(frozen=True)
class PostgresTarget:
    """Where the serving tables are: a libpq connection string or URI, and a password
    given apart (a Kubernetes secret) when it is not in the DSN."""

    dsn: str
    password: str | None = None
    retry_timeout_ms: int = 300_000

    def connect(self) -> psycopg.Connection[Any]:
        extra: dict[str, Any] = {
            "application_name": "candlewax",
            "connect_timeout": 10,
            # A server that vanished without closing the connection is noticed in
            # about 30 s rather than the kernel's default of hours.
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
            "tcp_user_timeout": 30_000,
        }
        if self.password:
            extra["password"] = self.password
        return psycopg.connect(self.dsn, autocommit=True, **extra)


def create_tables(connection: psycopg.Connection[Any], tables: Sequence[ServingTable]) -> None:
    """Create the tables that are missing (under a lock, so workers starting together do
    not race). A table that exists is left alone: a role without CREATE can write to
    tables an administrator made from `schemas/postgres.sql`."""
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(hashtext('candlewax serving tables'))")
        for table in tables:
            found = connection.execute("SELECT to_regclass(%s)", (table.name,)).fetchone()
            if found is None or found[0] is None:
                for statement in table.ddl():
                    connection.execute(statement.encode())
                log.info("created PostgreSQL table %s", table.name)


# --- writing -------------------------------------------------------------------------
class PostgresWriter:
    """Writes one table's batches on a background thread, one transaction per write.

    The flow's thread only queues batches (`add`); the thread writes everything queued
    at once (up to `max_write_rows`), so a write carries what arrived while the last one
    ran. `pending()` is what is not committed yet. More than `max_pending_rows` queued
    makes `add` wait: a database that cannot keep up slows the flow, it never grows
    memory without bound.
    """

    def __init__(
        self,
        target: PostgresTarget,
        table: ServingTable,
        *,
        max_pending_rows: int = 500_000,
        max_write_rows: int = 200_000,
        on_error: Callable[[PipelineError], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.target = target
        self.table = table
        self.max_pending_rows = max_pending_rows
        self.max_write_rows = max_write_rows
        self.rows_written = 0  # committed
        self._on_error = on_error
        self._state = threading.Condition()
        self._queued: list[Any] = []
        self._queued_rows = 0
        self._in_flight: list[Any] = []
        self._closing = False
        self._abandoned = False
        self._error: PipelineError | None = None
        self._connection: psycopg.Connection[Any] | None = None
        self._what = f"PostgreSQL table {table.name!r}"
        self._retrying = Retrying(
            self._what,
            retryable,
            target.retry_timeout_ms / 1000,
            after_failure=self._disconnect,
            on_retry=SERVING_RETRIES.labels("postgres", table.name).inc,
            sleep=sleep,
        )
        self._pending_gauge = SERVING_PENDING.labels("postgres", table.name)
        self._thread = threading.Thread(
            target=self._run, name=f"postgres-{table.name}", daemon=True
        )
        self._thread.start()

    def add(self, records: Sequence[Any]) -> None:
        rows = sum(len(record) for record in records)
        if not rows:
            return
        with self._state:
            self._raise_error()
            self._queued.extend(records)
            self._queued_rows += rows
            self._pending_gauge.inc(rows)
            self._state.notify_all()
            while self._queued_rows > self.max_pending_rows and self._error is None:
                self._state.wait(0.5)
            self._raise_error()

    def pending(self) -> list[Any]:
        """The batches not committed yet: the write in flight, then the queue."""
        with self._state:
            self._raise_error()
            return [*self._in_flight, *self._queued]

    def flush(self) -> None:
        """Return once everything added so far is committed."""
        with self._state:
            while (self._queued or self._in_flight) and self._error is None:
                self._state.wait(0.5)
            self._raise_error()

    def close(self) -> None:
        with self._state:
            self._closing = True
            self._state.notify_all()
        self._thread.join()
        self._raise_error()

    def abandon(self) -> None:
        """The flow is failing: write nothing more (a resume writes it all again)."""
        with self._state:
            self._abandoned = self._closing = True
            self._state.notify_all()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            while True:
                with self._state:
                    while not self._queued and not self._closing:
                        self._state.wait()
                    if self._abandoned or not self._queued:
                        return
                    taken, rows = 0, 0
                    while taken < len(self._queued) and (not taken or rows < self.max_write_rows):
                        rows += len(self._queued[taken])
                        taken += 1
                    self._in_flight = self._queued[:taken]
                    del self._queued[:taken]
                    self._queued_rows -= rows
                self._write(self._in_flight, rows)
                with self._state:
                    self._in_flight = []
                    self._pending_gauge.dec(rows)
                    self._state.notify_all()
        except Exception as unexpected:
            error = (
                unexpected
                if isinstance(unexpected, PipelineError)
                else OutputError(self._what, redact(f"{type(unexpected).__name__}: {unexpected}"))
            )
            with self._state:
                self._error = error
                self._state.notify_all()
            if self._on_error is not None:
                self._on_error(error)
        finally:
            self._disconnect()

    def _write(self, records: list[Any], rows: int) -> None:
        data = self.table.csv(self.table.to_frame(records))
        if not self._retrying.run(
            lambda: self._commit(data), f"the batch of {rows} rows", lambda: self._abandoned
        ):
            return
        self.rows_written += rows
        SERVING_ROWS.labels("postgres", self.table.name).inc(rows)

    def _commit(self, data: bytes) -> None:
        if self._connection is None or self._connection.closed:
            connection = self.target.connect()
            create_tables(connection, [self.table])
            connection.execute(self.table.staging_ddl)
            self._connection = connection
        connection = self._connection
        with connection.transaction(), connection.cursor() as cursor:
            with cursor.copy(self.table.copy_sql) as copy:
                copy.write(data)
            cursor.execute(self.table.upsert_sql.encode())

    def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            # A connection that broke may fail to close: it is gone either way.
            with contextlib.suppress(Exception):
                connection.close()


@dataclass(frozen=True)
class PostgresWriterState:
    """A partition in a recovery snapshot: the batches it had not committed."""

    pending: list[Any]


class _PostgresPartition(StatefulSinkPartition[Any, PostgresWriterState]):
    def __init__(self, writer: PostgresWriter):
        self.writer = writer

    def write_batch(self, values: list[Any]) -> None:
        try:
            self.writer.add(values)
        except PipelineError as error:
            fail(error)

    def snapshot(self) -> PostgresWriterState:
        try:
            return PostgresWriterState(self.writer.pending())
        except PipelineError as error:
            fail(error)

    def close(self) -> None:
        if failure() is not None:
            self.writer.abandon()  # after a failure nothing more is written
            return
        try:
            self.writer.close()
        except PipelineError as error:
            fail(error)


def _report(error: PipelineError) -> None:
    # Run as a command: one line, and the process ends. As a library: the flow's thread
    # raises it at its next call.
    with contextlib.suppress(PipelineError):
        fail(error)


class PostgresSink(FixedPartitionedSink[Any, PostgresWriterState]):
    """`partitions` writers (connections) of one serving table, spread over the workers;
    items are `(symbol, batch)`, so a symbol's rows always go through the same writer
    and its revisions are committed in order."""

    def __init__(self, target: PostgresTarget, table: ServingTable, partitions: int = 2):
        self.target = target
        self.table = table
        self.partitions = partitions

    def list_parts(self) -> list[str]:
        return [f"{self.table.name}-{index}" for index in range(self.partitions)]

    def build_part(
        self, step_id: str, for_part: str, resume_state: PostgresWriterState | None
    ) -> _PostgresPartition:
        writer = PostgresWriter(self.target, self.table, on_error=_report)
        if resume_state is not None and resume_state.pending:
            writer.add(resume_state.pending)  # not committed before the snapshot: again
        return _PostgresPartition(writer)


if __name__ == "__main__":
    print(schema_ddl(), end="")
