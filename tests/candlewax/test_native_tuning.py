"""The candlewax package sets polars' allocator and numpy's OpenBLAS up before either
loads, through the environment they read once; a value the user set wins."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.processes import ROOT

TUNED = ("_RJEM_MALLOC_CONF", "OPENBLAS_NUM_THREADS")
PROBE = (
    "import json, os, sys\n"
    "import {entry}\n"
    "print(json.dumps([os.environ.get(name) for name in {names!r}]))\n"
)


def _seen_by(entry: str, **env: str) -> list[str | None]:
    clean = {k: v for k, v in os.environ.items() if k not in TUNED}
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(entry=entry, names=TUNED)],
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return json.loads(result.stdout)


OURS = "dirty_decay_ms:5000,muzzy_decay_ms:5000"


@pytest.mark.parametrize("entry", ["flows.ohlcv", "tools.cli", "bench.common"])
def test_each_entry_point_sets_the_native_libraries_up_before_they_load(entry):
    # polars puts its own settings first when it loads: jemalloc takes the last of each.
    allocator, blas = _seen_by(entry)
    assert allocator is not None and allocator.endswith("," + OURS)
    assert blas == "1"


def test_a_value_the_user_set_wins():
    allocator, blas = _seen_by(
        "flows.ohlcv", _RJEM_MALLOC_CONF="narenas:1", OPENBLAS_NUM_THREADS="2"
    )
    assert allocator is not None and allocator.endswith(",narenas:1") and OURS not in allocator
    assert blas == "2"


def test_the_package_comes_before_polars_and_numpy_in_every_entry_package():
    for package in ("flows", "tools", "bench"):
        source = (ROOT / package / "__init__.py").read_text()
        imports = [line for line in source.splitlines() if line.startswith(("import", "from"))]
        assert imports[0] == "import candlewax  # noqa: F401", package
