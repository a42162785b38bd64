"""Batch reconciliation: candles recomputed from the lake's trades (the truth) against the
lake's candles (their current revision), bar by bar and field by field; and the same for
quote bars from the lake's quotes.

DuckDB does the heavy part, with partition pruning on `date` (and `resolution` for the
candles), so millions of trades take seconds. The truth is computed straight from the
trades at each resolution, late trades included: that is what the market did.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from candlewax.records import DEFAULT_ALERT_FIELDS, DRIFT_FIELDS, QUOTE_DRIFT_FIELDS
from candlewax.text import formatted
from config.durations import parse_duration_ms
from sinks.lake import require_lake, scan, scan_parameters

MISSING, EXTRA, CHANGED = "missing", "extra", "changed"


@dataclass(frozen=True)
class ReconcileScope:
    """What to compare: a time range (window starts in [start, end)), symbols, resolutions."""

    resolutions: tuple[str, ...] = ("1s", "10s", "1m")
    start_ms: int | None = None
    end_ms: int | None = None
    symbols: tuple[str, ...] = ()
    threshold: float = 0.005  # relative drift that fails the run
    fields: tuple[str, ...] = DEFAULT_ALERT_FIELDS  # fields the threshold applies to
    tolerance: float = 1e-9  # below this, float sums count as equal
    quotes: bool = False  # quote bars from quotes, not candles from trades

    @property
    def compared(self) -> tuple[str, ...]:
        """The fields compared bar by bar."""
        return QUOTE_DRIFT_FIELDS if self.quotes else DRIFT_FIELDS

    @property
    def datasets(self) -> tuple[str, str]:
        """The truth's dataset and the bars' dataset."""
        return ("quotes", "quote_bars") if self.quotes else ("trades", "candles")


@dataclass
class Reconciliation:
    summary: dict[str, Any]
    bars: pl.DataFrame  # the differing bars, with truth, emitted and drift per field
    worst: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.summary["bars_beyond_threshold"])


def _date(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d")


def _filters(
    scope: ReconcileScope, time_column: str, width_ms: int, parameters: dict[str, Any]
) -> str:
    """SQL conditions on partitions and time (the date bounds let DuckDB prune files);
    their values go into `parameters`, never into the SQL text."""
    conditions = ["true"]
    if scope.start_ms is not None:
        start = scope.start_ms - scope.start_ms % width_ms
        parameters[f"start_date_{width_ms}"] = _date(start)
        parameters[f"start_{width_ms}"] = start
        conditions += [
            f"date >= $start_date_{width_ms}",
            f"{time_column} >= epoch_ms($start_{width_ms})",
        ]
    if scope.end_ms is not None:
        parameters["end_date"], parameters["end"] = _date(scope.end_ms), scope.end_ms
        conditions += ["date <= $end_date", f"{time_column} < epoch_ms($end)"]
    if scope.symbols:
        parameters["symbols"] = list(scope.symbols)
        conditions.append("symbol in (select unnest($symbols))")
    return " and ".join(conditions)


def truth_candles(
    con: duckdb.DuckDBPyConnection, lake: Path, scope: ReconcileScope
) -> pl.DataFrame:
    """OHLCV per bar from every trade in the lake; ties on `ts` go by arrival (`seq`)."""
    parameters: dict[str, Any] = scan_parameters(lake, "trades")
    described = con.execute(f"describe select * from {scan('trades')}", parameters).fetchall()
    order = "ts, seq" if "seq" in {row[0] for row in described} else "ts"
    parts = []
    for index, name in enumerate(scope.resolutions):
        width = parse_duration_ms(name)
        parameters[f"resolution_{index}"] = name
        parts.append(f"""
            select symbol, $resolution_{index} as resolution,
                   (epoch_ms(ts) // {width}) * {width} as window_start,
                   first(price order by {order}) as open, max(price) as high,
                   min(price) as low, last(price order by {order}) as close,
                   sum(size) as volume, sum(price * size) / sum(size) as vwap,
                   count(*) as trade_count
            from {scan("trades")}
            where {_filters(scope, "ts", width, parameters)}
            group by all""")
    return con.sql(" union all ".join(parts), params=parameters).pl().with_columns(_bar_id())


def truth_quote_bars(
    con: duckdb.DuckDBPyConnection, lake: Path, scope: ReconcileScope
) -> pl.DataFrame:
    """Quote bars per window from every quote in the lake (late ones included), in event
    time order (ties by arrival, `seq`): each quote in force until the symbol's next quote
    or the window's end, the quote before a window's first from the window's start."""
    parameters: dict[str, Any] = scan_parameters(lake, "quotes")
    order = "t, seq"
    parts = []
    for index, name in enumerate(scope.resolutions):
        width = parse_duration_ms(name)
        parameters[f"resolution_{index}"] = name
        parts.append(f"""
            select symbol, $resolution_{index} as resolution, window_start,
                   first(mid order by {order}) as open, max(mid) as high, min(mid) as low,
                   last(mid order by {order}) as close,
                   last(bid order by {order}) as bid_close,
                   last(ask order by {order}) as ask_close,
                   min(spread) as spread_min, max(spread) as spread_max,
                   avg(spread) as spread_mean,
                   (sum(spread * (least(coalesce(next_t, window_start + {width}),
                                        window_start + {width}) - t))
                    + first(coalesce(before * (t - window_start), 0) order by {order}))
                   / (sum(least(coalesce(next_t, window_start + {width}),
                                window_start + {width}) - t)
                      + first(if(before is null, 0, t - window_start) order by {order}))
                   as spread_twa,
                   count(*) as quote_count
            from (
                select *, (t // {width}) * {width} as window_start
                from quoted
                where {_filters(scope, "ts", width, parameters)}
            )
            group by all""")
    sql = f"""
        with quoted as (
            select symbol, date, ts, epoch_ms(ts) as t, seq, bid, ask,
                   bid * 0.5 + ask * 0.5 as mid, ask - bid as spread,
                   lead(epoch_ms(ts)) over w as next_t, lag(ask - bid) over w as before
            from {scan("quotes")}
            window w as (partition by symbol order by epoch_ms(ts), seq)
        )
        {" union all ".join(parts)}"""
    return con.sql(sql, params=parameters).pl().with_columns(_bar_id())


def emitted_candles(
    con: duckdb.DuckDBPyConnection, lake: Path, scope: ReconcileScope
) -> pl.DataFrame:
    """The lake's bars (candles, or quote bars) at their current revision (the highest
    per `bar_id`)."""
    dataset = scope.datasets[1]
    if not list((lake / dataset).rglob("*.parquet")):
        schema = {f: pl.Float64 for f in scope.compared}
        return pl.DataFrame(schema={"bar_id": pl.String, **schema})
    coarsest = max(parse_duration_ms(r) for r in scope.resolutions)
    parameters: dict[str, Any] = {
        **scan_parameters(lake, dataset),
        "resolutions": list(scope.resolutions),
    }
    where = _filters(scope, "window_start", coarsest, parameters)
    return con.sql(
        f"""
        select bar_id, symbol, resolution, epoch_ms(window_start) as window_start, revision,
               {", ".join(scope.compared)}
        from {scan(dataset)}
        where resolution in (select unnest($resolutions)) and {where}
        qualify row_number() over (partition by bar_id order by revision desc) = 1""",
        params=parameters,
    ).pl()


def _bar_id() -> pl.Expr:
    return formatted("{}:{}:{}", "symbol", "resolution", "window_start").alias("bar_id")


def compare(truth: pl.DataFrame, emitted: pl.DataFrame, scope: ReconcileScope) -> pl.DataFrame:
    """Every bar of either side with its status and the relative drift of each field."""
    compared = scope.compared
    joined = truth.select("bar_id", "symbol", "resolution", "window_start", *compared).join(
        emitted.select("bar_id", "symbol", "resolution", "window_start", "revision", *compared),
        on="bar_id",
        how="full",
        suffix="_emitted",
        coalesce=True,
    )
    drifts = []
    for name in compared:
        truth_value, emitted_value = (
            pl.col(name).cast(pl.Float64),
            pl.col(f"{name}_emitted").cast(pl.Float64),
        )
        drift = (
            pl.when(truth_value.is_null() | emitted_value.is_null())
            .then(1.0)
            .when(truth_value == emitted_value)
            .then(0.0)
            .when(truth_value == 0)
            .then(1.0)
            .otherwise((emitted_value - truth_value).abs() / truth_value.abs())
        )
        drifts.append(drift.alias(f"drift_{name}"))
    status = (
        pl.when(pl.col("revision").is_null())
        .then(pl.lit(MISSING))
        .when(pl.col("open").is_null())
        .then(pl.lit(EXTRA))
        .when(pl.max_horizontal([pl.col(f"drift_{f}") for f in compared]) > scope.tolerance)
        .then(pl.lit(CHANGED))
        .otherwise(pl.lit("equal"))
    )
    return (
        joined.with_columns(
            pl.coalesce("symbol", "symbol_emitted").alias("symbol"),
            pl.coalesce("resolution", "resolution_emitted").alias("resolution"),
            pl.coalesce("window_start", "window_start_emitted").alias("window_start"),
        )
        .drop("symbol_emitted", "resolution_emitted", "window_start_emitted")
        .with_columns(drifts)
        .with_columns(
            pl.max_horizontal([pl.col(f"drift_{f}") for f in scope.fields]).alias("max_drift"),
            status.alias("status"),
        )
        .sort("bar_id")
    )


def reconcile(lake: Path, scope: ReconcileScope) -> Reconciliation:
    lake = require_lake(lake)
    source = scope.datasets[0]
    if not list((lake / source).rglob("*.parquet")):
        raise FileNotFoundError(
            f"{lake}: no Parquet files under {source}/ (is it a candlewax lake"
            + (" with the quotes branch?)" if scope.quotes else "?)")
        )
    began = time.perf_counter()
    con = duckdb.connect()
    truth = (truth_quote_bars if scope.quotes else truth_candles)(con, lake, scope)
    emitted = emitted_candles(con, lake, scope)
    parameters: dict[str, Any] = scan_parameters(lake, source)
    widest = max(parse_duration_ms(r) for r in scope.resolutions)
    where = _filters(scope, "ts", widest, parameters)
    trades_row = con.execute(
        f"select count(*) from {scan(source)} where {where}", parameters
    ).fetchone()
    bars = compare(truth, emitted, scope)
    seconds = time.perf_counter() - began
    differing = bars.filter(pl.col("status") != "equal")
    beyond = bars.filter(pl.col("max_drift") > scope.threshold)
    quantiles = (
        bars.select(
            pl.col("max_drift").quantile(0.5).alias("p50"),
            pl.col("max_drift").quantile(0.95).alias("p95"),
            pl.col("max_drift").quantile(0.99).alias("p99"),
            pl.col("max_drift").max().alias("max"),
        ).to_dicts()[0]
        if bars.height
        else {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
    )
    counts = dict(differing.group_by("status").len().iter_rows())
    by_resolution = {
        res: dict(part.group_by("status").len().iter_rows())
        for (res,), part in bars.partition_by("resolution", as_dict=True).items()
    }
    summary = {
        "lake": str(lake),
        "scope": {
            "resolutions": list(scope.resolutions),
            "start": None if scope.start_ms is None else _iso(scope.start_ms),
            "end": None if scope.end_ms is None else _iso(scope.end_ms),
            "symbols": list(scope.symbols) or "all",
            "threshold": scope.threshold,
            "fields": list(scope.fields),
        },
        "trades" if not scope.quotes else "quotes": int(trades_row[0]) if trades_row else 0,
        "bars": scope.datasets[1],
        "truth_bars": truth.height,
        "emitted_bars": emitted.height,
        "equal": bars.height - differing.height,
        MISSING: counts.get(MISSING, 0),
        EXTRA: counts.get(EXTRA, 0),
        CHANGED: counts.get(CHANGED, 0),
        "by_resolution": by_resolution,
        "drift": quantiles,
        "bars_beyond_threshold": beyond.height,
        "seconds": round(seconds, 3),
    }
    worst = (
        differing.sort("max_drift", descending=True)
        .head(10)
        .select("bar_id", "status", "max_drift", *[f"drift_{f}" for f in scope.fields])
        .to_dicts()
    )
    return Reconciliation(summary=summary, bars=differing, worst=worst)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat().replace("+00:00", "Z")
