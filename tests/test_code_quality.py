"""The code stays lint-clean, type-checked and layered (ruff, mypy and import-linter,
configured in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["candlewax", "config", "flows", "operators", "sources", "sinks", "tools"]
TYPE_CHECKED = [*PACKAGES, "bench"]  # the benches too: their figures are the README's


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_finds_nothing():
    pytest.importorskip("ruff")
    lint = run(sys.executable, "-m", "ruff", "check", ".")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    style = run(sys.executable, "-m", "ruff", "format", "--check", ".")
    assert style.returncode == 0, style.stdout + style.stderr


def test_mypy_finds_nothing():
    pytest.importorskip("mypy")
    result = run(sys.executable, "-m", "mypy", *TYPE_CHECKED)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_layers_import_only_downward():
    """commands (tools) -> flows -> sources | sinks -> operators -> config -> foundation
    (candlewax): the contract in pyproject.toml, checked by import-linter."""
    pytest.importorskip("importlinter")
    result = run(str(Path(sys.executable).parent / "lint-imports"))
    assert result.returncode == 0, result.stdout[-3000:]
