"""Data-quality checks of a trade feed, as batch computations over a polars frame.

The frame holds trades in arrival order with columns `symbol, ts (epoch ms), price,
size, trade_id, side`. Each check returns plain rows (lists of dicts) so the same
figures go into a Markdown/HTML report and a JSON document.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from candlewax.records import TRADE
from operators.price_guard import OutlierRule, deviations, reference_prices


@dataclass(frozen=True)
class QualityOptions:
    gap_thresholds_ms: tuple[int, ...] = (500, 5_000, 30_000)
    # The fat-finger guard's rule (`operators.price_guard`): an outlier strays by more
    # than the threshold (a fraction) from the median of the previous N trades.
    outlier_trades: int = 50
    outlier_threshold: float = 0.1


@dataclass
class QualityReport:
    source: str
    overview: dict[str, Any]
    per_symbol: list[dict[str, Any]]
    gaps: list[dict[str, Any]]
    outliers: list[dict[str, Any]]
    outlier_examples: list[dict[str, Any]]
    duplicates: list[dict[str, Any]]
    id_sequence: list[dict[str, Any]]
    out_of_order: list[dict[str, Any]]
    rejected: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return str(
        pl.Series([ms]).cast(pl.Datetime("ms", "UTC")).dt.to_string("%Y-%m-%dT%H:%M:%S%.3fZ")[0]
    )


def with_arrival(trades: pl.DataFrame) -> pl.DataFrame:
    return trades.with_row_index("arrival")


def per_symbol(trades: pl.DataFrame) -> list[dict[str, Any]]:
    rows = (
        trades.group_by("symbol")
        .agg(
            pl.len().alias("trades"),
            pl.col("ts").min().alias("first"),
            pl.col("ts").max().alias("last"),
            pl.col("price").min().alias("low"),
            pl.col("price").max().alias("high"),
            pl.col("size").sum().alias("volume"),
        )
        .with_columns(((pl.col("last") - pl.col("first")) / 1000).alias("span_s"))
        .sort("symbol")
        .to_dicts()
    )
    return [{**row, "first": iso(row["first"]), "last": iso(row["last"])} for row in rows]


def gaps(trades: pl.DataFrame, thresholds_ms: tuple[int, ...]) -> list[dict[str, Any]]:
    """Silences between consecutive trades of a symbol (in event time) at each threshold."""
    gap = (
        trades.sort("symbol", "ts")
        .with_columns(
            (pl.col("ts") - pl.col("ts").shift(1).over("symbol")).alias("gap_ms"),
            pl.col("ts").shift(1).over("symbol").alias("from_ms"),
        )
        .drop_nulls("gap_ms")
    )
    symbols = trades.select(pl.col("symbol").unique().sort())
    rows = []
    for threshold in thresholds_ms:
        found = gap.filter(pl.col("gap_ms") >= threshold)
        longest = found.sort("gap_ms", descending=True).unique("symbol", keep="first")
        counts = found.group_by("symbol").agg(
            pl.len().alias("gaps"), pl.col("gap_ms").sum().alias("silent_ms")
        )
        joined = symbols.join(counts, on="symbol", how="left").join(
            longest.select("symbol", "gap_ms", "from_ms"), on="symbol", how="left"
        )
        for row in joined.iter_rows(named=True):
            rows.append(
                {
                    "symbol": row["symbol"],
                    "threshold_ms": threshold,
                    "gaps": row["gaps"] or 0,
                    "silent_s": (row["silent_ms"] or 0) / 1000,
                    "longest_ms": row["gap_ms"],
                    "longest_from": iso(row["from_ms"]),
                }
            )
    return rows


def first_copies() -> pl.Expr:
    """Whether each trade is the first copy of its (symbol, trade_id); trades without an
    id all are (the flow's dedupe, in file order)."""
    return pl.col("trade_id").is_null() | pl.struct("symbol", "trade_id").is_first_distinct()


def outliers(
    trades: pl.DataFrame, options: QualityOptions
) -> tuple[pl.DataFrame, list[dict[str, Any]]]:
    """Trades whose price strays from the median of the symbol's previous trades: the
    flow's fat-finger guard (`operators.price_guard`, the same function), over the first
    copy of each trade id in arrival order, as the guard sees them after dedupe.

    Returns the trades with `reference`, `deviation` and `outlier` columns, and a summary
    per symbol.
    """
    rule = OutlierRule(threshold=options.outlier_threshold, trades=options.outlier_trades)
    ordered = with_arrival(trades).with_columns(first_copies().alias("_first_copy"))
    reference = np.full(ordered.height, np.nan)
    checked = ordered.filter("_first_copy").select("symbol", "arrival", "price")
    for _, part in checked.group_by("symbol", maintain_order=True):
        rows = part.get_column("arrival").to_numpy()
        reference[rows] = reference_prices(part.get_column("price").to_numpy(), 0, rule.trades)
    deviation = deviations(ordered.get_column("price").to_numpy(), reference)
    with np.errstate(invalid="ignore"):
        outlier = (deviation > rule.threshold) if rule.enabled else np.zeros(len(reference), bool)
    scored = ordered.drop("_first_copy").with_columns(
        pl.Series("reference", reference, nan_to_null=True),
        pl.Series("deviation", deviation, nan_to_null=True),
        pl.Series("outlier", outlier),
    )
    summary = (
        scored.group_by("symbol")
        .agg(
            pl.col("outlier").sum().alias("outliers"),
            pl.col("deviation").max().alias("max_deviation"),
            pl.col("deviation").quantile(0.99).alias("p99_deviation"),
        )
        .sort("symbol")
        .to_dicts()
    )
    return scored, summary


def duplicates(trades: pl.DataFrame) -> list[dict[str, Any]]:
    """Extra copies per symbol: same `trade_id`, and same fingerprint (the columns the
    flow's fingerprint dedupe uses: identical trades that real markets do produce, so a
    hint, not an error)."""
    by_id = (
        trades.filter(pl.col("trade_id").is_not_null())
        .group_by("symbol")
        .agg((pl.len() - pl.col("trade_id").n_unique()).alias("by_trade_id"))
    )
    fingerprint = [c for c in TRADE.fingerprint_columns if c in trades.columns]
    by_print = trades.group_by("symbol").agg(
        (pl.len() - pl.struct(fingerprint).n_unique()).alias("by_fingerprint")
    )
    return by_print.join(by_id, on="symbol", how="left").fill_null(0).sort("symbol").to_dicts()


def id_sequence(trades: pl.DataFrame) -> list[dict[str, Any]]:
    """For venues with consecutive integer trade ids (Binance, most exchanges): ids
    missing between the first and the last, i.e. trades the feed lost."""
    numeric = trades.with_columns(
        pl.col("trade_id").cast(pl.String).str.to_integer(strict=False).alias("id_number")
    ).filter(pl.col("id_number").is_not_null())
    return (
        numeric.group_by("symbol")
        .agg(
            pl.col("id_number").min().alias("first_id"),
            pl.col("id_number").max().alias("last_id"),
            pl.col("id_number").n_unique().alias("distinct_ids"),
        )
        .with_columns(
            (pl.col("last_id") - pl.col("first_id") + 1 - pl.col("distinct_ids")).alias(
                "missing_ids"
            )
        )
        .sort("symbol")
        .to_dicts()
    )


def out_of_order(trades: pl.DataFrame) -> list[dict[str, Any]]:
    """Trades that arrived after a later one of their symbol; depth = how far behind."""
    depth = (pl.col("ts").cum_max().over("symbol") - pl.col("ts")).alias("depth_ms")
    scored = trades.with_columns(depth)
    late = scored.filter(pl.col("depth_ms") > 0)
    return (
        scored.group_by("symbol")
        .agg(pl.len().alias("trades"))
        .join(
            late.group_by("symbol").agg(
                pl.len().alias("out_of_order"),
                pl.col("depth_ms").max().alias("max_depth_ms"),
                pl.col("depth_ms").median().alias("median_depth_ms"),
                pl.col("depth_ms").quantile(0.99).alias("p99_depth_ms"),
            ),
            on="symbol",
            how="left",
        )
        .with_columns(pl.col("out_of_order").fill_null(0))
        .sort("symbol")
        .to_dicts()
    )


def profile(
    trades: pl.DataFrame,
    options: QualityOptions,
    *,
    source: str,
    rows: int,
    rejected: dict[str, int] | None = None,
    skipped: dict[str, int] | None = None,
    filtered: int = 0,
) -> tuple[QualityReport, pl.DataFrame]:
    """Every check over `trades`; also returns the trades scored for outliers."""
    scored, outlier_rows = outliers(trades, options)
    examples = (
        scored.filter(pl.col("outlier"))
        .sort("deviation", descending=True)
        .head(10)
        .select("symbol", "ts", "price", "reference", "deviation", "trade_id")
        .with_columns(pl.col("ts").map_elements(iso, return_dtype=pl.String).alias("at"))
        .drop("ts")
        .to_dicts()
    )
    first = trades.get_column("ts").min() if trades.height else None
    last = trades.get_column("ts").max() if trades.height else None
    overview = {
        "rows": rows,
        "valid_trades": trades.height,
        "symbols": trades.get_column("symbol").n_unique() if trades.height else 0,
        "first": iso(first),  # type: ignore[arg-type]
        "last": iso(last),  # type: ignore[arg-type]
        "span_s": ((last - first) / 1000) if trades.height else 0,  # type: ignore[operator]
        "rejected": sum((rejected or {}).values()),
        "skipped": sum((skipped or {}).values()),
        "filtered": filtered,
        "outlier_rule": (
            f"|price / median of the previous {options.outlier_trades} trades - 1| > "
            f"{options.outlier_threshold}"
            if options.outlier_threshold
            else "off (threshold 0)"
        ),
    }
    report = QualityReport(
        source=source,
        overview=overview,
        per_symbol=per_symbol(trades),
        gaps=gaps(trades, options.gap_thresholds_ms),
        outliers=outlier_rows,
        outlier_examples=examples,
        duplicates=duplicates(trades),
        id_sequence=id_sequence(trades),
        out_of_order=out_of_order(trades),
        rejected=[
            {"reason": k, "rows": v}
            for k, v in sorted((rejected or {}).items(), key=lambda kv: -kv[1])
        ],
        skipped=[
            {"reason": k, "rows": v}
            for k, v in sorted((skipped or {}).items(), key=lambda kv: -kv[1])
        ],
    )
    return report, scored
