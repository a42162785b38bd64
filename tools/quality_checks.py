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


# --- quotes ------------------------------------------------------------------------------
BOOK_FAULTS = ("crossed_book", "locked_book")


@dataclass(frozen=True)
class QuoteOptions:
    # A spread outlier is wider than `spread_factor` times the median spread of the
    # symbol's previous `spread_quotes` quotes (the guard's rolling median, on spreads).
    spread_quotes: int = 50
    spread_factor: float = 10.0


@dataclass
class QuoteQualityReport:
    source: str
    overview: dict[str, Any]
    per_symbol: list[dict[str, Any]]
    book_faults: list[dict[str, Any]]
    spread_outliers: list[dict[str, Any]]
    spread_outlier_examples: list[dict[str, Any]]
    rejected: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def book_faults(faults: pl.DataFrame) -> list[dict[str, Any]]:
    """Crossed and locked books per symbol, from the rejected quotes (`raw`, `reason`):
    the contract turns them away, so they are counted from their original bytes."""
    found = faults.filter(pl.col("reason").is_in(BOOK_FAULTS))
    if found.height == 0:
        return []
    symbol = pl.col("raw").cast(pl.String, strict=False).str.json_path_match("$.symbol")
    return (
        found.with_columns(symbol.fill_null("?").alias("symbol"))
        .group_by("symbol")
        .agg(
            (pl.col("reason") == "crossed_book").sum().alias("crossed"),
            (pl.col("reason") == "locked_book").sum().alias("locked"),
        )
        .sort("symbol")
        .to_dicts()
    )


def spread_outliers(
    quotes: pl.DataFrame, options: QuoteOptions
) -> tuple[pl.DataFrame, list[dict[str, Any]]]:
    """Quotes whose spread is more than `spread_factor` times the median spread of the
    symbol's previous quotes (the fat-finger guard's rolling median, `reference_prices`,
    over spreads in arrival order)."""
    ordered = with_arrival(quotes).with_columns((pl.col("ask") - pl.col("bid")).alias("spread"))
    reference = np.full(ordered.height, np.nan)
    for _, part in ordered.group_by("symbol", maintain_order=True):
        rows = part.get_column("arrival").to_numpy()
        spreads = part.get_column("spread").to_numpy()
        reference[rows] = reference_prices(spreads, 0, options.spread_quotes)
    spread = ordered.get_column("spread").to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = spread / reference
        outlier = ratio > options.spread_factor
    scored = ordered.with_columns(
        pl.Series("reference_spread", reference, nan_to_null=True),
        pl.Series("ratio", ratio, nan_to_null=True),
        pl.Series("outlier", outlier),
    )
    summary = (
        scored.group_by("symbol")
        .agg(
            pl.col("outlier").sum().alias("spread_outliers"),
            pl.col("ratio").max().alias("max_ratio"),
        )
        .sort("symbol")
        .to_dicts()
    )
    return scored, summary


def quote_profile(
    quotes: pl.DataFrame,
    faults: pl.DataFrame,
    options: QuoteOptions,
    *,
    source: str,
    rows: int,
    rejected: dict[str, int] | None = None,
    skipped: dict[str, int] | None = None,
) -> QuoteQualityReport:
    """Every quote check: quotes (valid, arrival order: `symbol, ts, bid, ask, ...`) and
    the rejected ones (`raw`, `reason`) for the crossed and locked books."""
    scored, outlier_rows = spread_outliers(quotes, options)
    bps = (pl.col("spread") / ((pl.col("bid") + pl.col("ask")) / 2) * 1e4).alias("bps")
    per_symbol_rows = (
        scored.with_columns(bps)
        .group_by("symbol")
        .agg(
            pl.len().alias("quotes"),
            pl.col("ts").min().alias("first_ms"),
            pl.col("ts").max().alias("last_ms"),
            pl.col("bps").median().alias("median_spread_bps"),
            pl.col("bps").quantile(0.99).alias("p99_spread_bps"),
            (pl.col("spread") == 0).sum().alias("locked_accepted"),
        )
        .sort("symbol")
        .to_dicts()
    )
    for row in per_symbol_rows:
        row["first"], row["last"] = iso(row.pop("first_ms")), iso(row.pop("last_ms"))
    examples = (
        scored.filter("outlier")
        .sort("ratio", descending=True)
        .head(10)
        .select("symbol", "ts", "bid", "ask", "spread", "reference_spread", "ratio")
        .with_columns(pl.col("ts").map_elements(iso, return_dtype=pl.String).alias("at"))
        .drop("ts")
        .to_dicts()
    )
    faults_by_symbol = book_faults(faults)
    first = quotes.get_column("ts").min() if quotes.height else None
    last = quotes.get_column("ts").max() if quotes.height else None
    overview = {
        "rows": rows,
        "valid_quotes": quotes.height,
        "symbols": quotes.get_column("symbol").n_unique() if quotes.height else 0,
        "first": iso(first),  # type: ignore[arg-type]
        "last": iso(last),  # type: ignore[arg-type]
        "crossed_books": sum(r["crossed"] for r in faults_by_symbol),
        "locked_books": sum(r["locked"] for r in faults_by_symbol),
        "spread_outliers": int(scored.get_column("outlier").sum()),
        "spread_outlier_rule": (
            f"spread > {options.spread_factor} x the median spread of the previous "
            f"{options.spread_quotes} quotes"
        ),
        "rejected": sum((rejected or {}).values()),
        "skipped": sum((skipped or {}).values()),
    }
    return QuoteQualityReport(
        source=source,
        overview=overview,
        per_symbol=per_symbol_rows,
        book_faults=faults_by_symbol,
        spread_outliers=outlier_rows,
        spread_outlier_examples=examples,
        rejected=[
            {"reason": k, "rows": v}
            for k, v in sorted((rejected or {}).items(), key=lambda kv: -kv[1])
        ],
        skipped=[
            {"reason": k, "rows": v}
            for k, v in sorted((skipped or {}).items(), key=lambda kv: -kv[1])
        ],
    )
