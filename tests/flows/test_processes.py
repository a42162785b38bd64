"""`python -m bytewax.run flows.ohlcv` over a file: 1 worker, 2 workers, 2 processes agree."""

from __future__ import annotations

import pytest

from tests.factories import T0
from tests.flows.test_ohlcv_flow import RESOLUTIONS, faulty_stream
from tests.processes import lake_candles, lake_table, run_flow_processes
from tests.reference import reference_candles

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trades_file(tmp_path_factory):
    messages = faulty_stream(20_000, seed=4)
    path = tmp_path_factory.mktemp("input") / "trades.ndjson"
    path.write_bytes(b"\n".join(m.replace(b"\n", b" ") for m in messages) + b"\n")
    return path, messages


def run_file_flow(path, lake, **scale):
    env = {
        "CANDLEWAX_SOURCE": "file",
        "CANDLEWAX_SOURCE_PATH": str(path),
        "CANDLEWAX_LAKE_DIR": str(lake),
        "CANDLEWAX_BATCH_SIZE": "3000",
    }
    return run_flow_processes(env, **scale)


def test_workers_and_processes_write_the_same_candles_to_the_lake(trades_file, tmp_path):
    path, messages = trades_file
    logs = run_file_flow(path, tmp_path / "one")
    assert "run summary" in logs[0] and "they add up" in logs[0]
    single = lake_candles(tmp_path / "one")
    run_file_flow(path, tmp_path / "two_workers", workers=2)
    run_file_flow(path, tmp_path / "two_processes", processes=2)
    assert lake_candles(tmp_path / "two_workers") == single
    assert lake_candles(tmp_path / "two_processes") == single

    expected = reference_candles(messages, 1_000, RESOLUTIONS, ts_max=T0 + 10**9)
    assert [row[0] for row in single] == expected.get_column("bar_id").to_list()
    dlq = lake_table(tmp_path / "two_processes", "dlq")
    assert dlq.height > 0 and set(dlq.columns) >= {"raw", "reason", "field", "source", "date"}
    assert all(s.startswith(f"file:{path}@") for s in dlq.get_column("source"))
