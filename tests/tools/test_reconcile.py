"""Reconciliation finds exactly the planted differences; drift alerts follow the settings."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import polars as pl
import pytest

from sinks.lake import CANDLES, QUOTE_BARS, LakeRows, LakeWriter
from tests import factories
from tests.factories import T0, faulty_stream
from tests.flow_runs import run_flow
from tests.processes import candlewax, lake_table, run_flow_processes
from tools.bar_truth import ReconcileScope, reconcile


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    """A lake written by the flow with restatement on: its candles equal the truth."""
    root = tmp_path_factory.mktemp("lake")
    source = root / "trades.ndjson"
    source.write_bytes(b"\n".join(faulty_stream(20_000, seed=8)) + b"\n")
    run_flow_processes(
        {
            "CANDLEWAX_SOURCE": "file",
            "CANDLEWAX_SOURCE_PATH": str(source),
            "CANDLEWAX_LAKE_DIR": str(root / "lake"),
            "CANDLEWAX_RESTATEMENT": "true",
            "CANDLEWAX_RESTATEMENT_HORIZON": "1h",
        }
    )
    return root / "lake"


def planted(lake, tmp_path):
    """A copy of the lake with one bar missing, one extra, two changed (one of them in a
    newer revision) and one re-emitted unchanged in a newer revision."""
    copy = tmp_path / "planted"
    shutil.copytree(lake, copy)
    candles = lake_table(copy, "candles")
    current = candles.sort("revision").unique("bar_id", keep="last").sort("bar_id")
    ones = current.filter(pl.col("resolution") == "1s")
    missing, changed, revised, unchanged = ones.get_column("bar_id").to_list()[10:14]
    extra_row = ones.filter(pl.col("bar_id") == missing).with_columns(
        pl.lit("NOPE-USD").alias("symbol"), pl.lit(f"NOPE-USD:1s:{T0}").alias("bar_id")
    )
    rows = pl.concat(
        [
            candles.filter(pl.col("bar_id") != missing),
            extra_row.select(candles.columns),
            ones.filter(pl.col("bar_id") == revised)
            .with_columns(pl.col("close") * 1.003, pl.col("revision") + 7)
            .select(candles.columns),
            ones.filter(pl.col("bar_id") == unchanged)
            .with_columns(pl.col("revision") + 1)
            .select(candles.columns),
        ]
    ).with_columns(
        pl.when(pl.col("bar_id") == changed)
        .then(pl.col("volume") * 1.5)
        .otherwise(pl.col("volume"))
    )
    shutil.rmtree(copy / "candles")
    writer = LakeWriter(
        copy, replace(CANDLES, to_frame=lambda frames: frames[0]), writer_id="planted"
    )
    writer.add([rows.drop("date")])
    writer.flush()
    return copy, {"missing": missing, "extra": f"NOPE-USD:1s:{T0}", "changed": {changed, revised}}


def test_the_flow_with_restatement_leaves_nothing_to_reconcile(lake):
    result = reconcile(lake, ReconcileScope())
    s = result.summary
    assert s["trades"] > 19_000 and s["truth_bars"] == s["emitted_bars"] == s["equal"] > 300
    assert (s["missing"], s["extra"], s["changed"], s["bars_beyond_threshold"]) == (0, 0, 0, 0)


def test_reconciliation_finds_exactly_the_planted_differences(lake, tmp_path):
    copy, plants = planted(lake, tmp_path)
    result = reconcile(copy, ReconcileScope())
    by_status = {
        status: set(part.get_column("bar_id"))
        for (status,), part in result.bars.partition_by("status", as_dict=True).items()
    }
    assert by_status == {
        "missing": {plants["missing"]},
        "extra": {plants["extra"]},
        "changed": plants["changed"],
    }
    drifts = {row["bar_id"]: row for row in result.bars.iter_rows(named=True)}
    volume_bar = (
        plants["changed"] - {b for b in plants["changed"] if drifts[b]["drift_close"]}
    ).pop()
    assert drifts[volume_bar]["drift_volume"] == pytest.approx(0.5)
    close_bar = (plants["changed"] - {volume_bar}).pop()
    assert drifts[close_bar]["drift_close"] == pytest.approx(0.003)
    assert drifts[close_bar]["revision"] == 7
    # 0.3 % is within the 0.5 % threshold; missing, extra and +50 % volume are not
    assert result.summary["bars_beyond_threshold"] == 3


def test_the_command_gates_on_the_threshold_and_writes_json_and_parquet(lake, tmp_path):
    copy, plants = planted(lake, tmp_path)
    failing = candlewax(
        "reconcile",
        "--lake",
        str(copy),
        "--json",
        str(tmp_path / "r.json"),
        "--bars",
        str(tmp_path / "bars.parquet"),
        check=False,
    )
    assert failing.returncode == 1
    assert "missing 1, extra 1, changed 2" in failing.stdout and "worst bars" in failing.stdout
    summary = json.loads((tmp_path / "r.json").read_text())
    assert summary["bars_beyond_threshold"] == 3 and summary["worst"][0]["max_drift"] == 1.0
    assert pl.read_parquet(tmp_path / "bars.parquet").height == 4
    # a range and symbols that hold none of the planted bars pass
    symbols = {b.split(":")[0] for b in [plants["missing"], *plants["changed"]]} | {"NOPE-USD"}
    others = sorted(
        {b.split(":")[0] for b in lake_table(lake, "candles").get_column("bar_id")} - symbols
    )
    clean = candlewax("reconcile", "--lake", str(copy), "--symbols", ",".join(others), check=False)
    assert clean.returncode == 0, clean.stdout
    assert candlewax("reconcile", "--lake", str(tmp_path / "nothing"), check=False).returncode == 2


@pytest.mark.parametrize(
    ("overrides", "alerts_expected"),
    [
        ({"drift_threshold": 50.0}, False),
        ({"drift_threshold": 1e-6}, True),
        ({"drift_alert_fields": "trade_count"}, True),
    ],
)
def test_drift_alerts_fire_and_stay_quiet_as_configured(overrides, alerts_expected, workers):
    stream = faulty_stream(10_000, seed=12)
    result = run_flow(stream, factories.settings(**overrides), workers=workers)
    threshold = overrides.get("drift_threshold", 0.005)
    fields = overrides.get("drift_alert_fields", "open,high,low,close,volume,vwap").split(",")
    assert result.drift, "the stream has late trades"
    for record in result.drift:
        worst = max(getattr(record, f"drift_{f}") for f in fields)
        assert record.alert == (worst > threshold), record.bar_id
        assert record.drifted_fields == ",".join(
            f for f in fields if getattr(record, f"drift_{f}") > threshold
        )
    assert any(r.alert for r in result.drift) is alerts_expected
    summary = result.metrics.summary()
    assert summary["drift_alerts"] == sum(r.alert for r in result.drift)
    assert sum(summary["drift_alerts_by_symbol"].values()) == summary["drift_alerts"]
    assert summary["late_by_lateness_s"]["+Inf"] == summary["late"]


def test_the_drift_command_lists_bars_and_alerts(lake):
    result = candlewax("drift", "--lake", str(lake), "--limit", "5")
    records = lake_table(lake, "drift")
    assert (
        f"{records.height:,} drift records for {records.get_column('bar_id').n_unique():,} bars"
        in result.stdout
    )
    assert len(result.stdout.splitlines()) == 1 + 2 + 5
    alerts = candlewax("drift", "--lake", str(lake), "--alerts", "--limit", "1000").stdout
    rows = alerts.splitlines()[3:]
    assert rows and all(line.rstrip().endswith("True") for line in rows)
    assert len(rows) == records.filter(pl.col("alert")).get_column("bar_id").n_unique()


def test_quote_bars_reconcile_against_the_lake_quotes_and_a_changed_bar_is_found(tmp_path):
    # Late quotes with restatement on: the published bars are the full view, which is what
    # the truth recomputed in SQL from the lake's quotes must give.
    from tests.operators.test_quote_windows import quote_stream

    trades, quotes = tmp_path / "trades.ndjson", tmp_path / "quotes.ndjson"
    trades.write_bytes(b"\n".join(faulty_stream(2_000, seed=3)) + b"\n")
    quotes.write_bytes(b"\n".join(quote_stream(6_000, seed=4, symbols=3)) + b"\n")
    lake = tmp_path / "lake"
    run_flow_processes(
        {
            "CANDLEWAX_SOURCE": "file",
            "CANDLEWAX_SOURCE_PATH": str(trades),
            "CANDLEWAX_QUOTES_SOURCE": "file",
            "CANDLEWAX_QUOTES_SOURCE_PATH": str(quotes),
            "CANDLEWAX_LAKE_DIR": str(lake),
            "CANDLEWAX_RESTATEMENT": "true",
            "CANDLEWAX_RESTATEMENT_HORIZON": "1h",
        }
    )
    scope = ReconcileScope(quotes=True, fields=("open", "close", "spread_mean", "spread_twa"))
    result = reconcile(lake, scope)
    summary = result.summary
    assert lake_table(lake, "quotes").filter("late").height > 0
    assert summary["truth_bars"] == summary["emitted_bars"] == summary["equal"] > 3_000
    assert not result.failed

    bars = lake_table(lake, "quote_bars")
    victim = bars.filter(pl.col("resolution") == "10s").get_column("bar_id").sort()[5]
    changed = bars.filter(pl.col("bar_id") == victim).with_columns(
        pl.col("spread_twa") * 1.02, pl.col("revision") + 9
    )
    writer = LakeWriter(lake, QUOTE_BARS, writer_id="planted")
    writer.add([LakeRows(changed.drop("date").select(bars.drop("date").columns))])
    writer.close()
    again = reconcile(lake, scope)
    assert again.failed and again.summary["changed"] == 1
    assert again.worst[0]["bar_id"] == victim
    assert again.worst[0]["drift_spread_twa"] == pytest.approx(0.02)
    out = candlewax("reconcile", "--lake", str(lake), "--quotes", check=False)
    assert out.returncode == 1 and "reconciled quote_bars against" in out.stdout
