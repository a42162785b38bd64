"""The dashboard in a real browser (headless Chromium) against a running live demo.

Skipped, saying why, where Chromium or chromedriver is not installed (`.ci/run` installs
Debian's `chromium` and `chromium-driver`). With SCREENSHOTS_DIR=DIR the test
saves the README's screenshots there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.browser import Browser, missing
from tests.factories import T0
from tests.processes import ROOT
from tests.tools.test_dashboard import Server, candle, lake_only, write_lake
from tools.broker import free_port

pytestmark = [
    pytest.mark.broker,
    pytest.mark.slow,
    pytest.mark.skipif(missing() is not None, reason=str(missing())),
]
STATE = "return window.candlewax ? window.candlewax.state() : null"


class LiveDemo:
    """`candlewax demo --live` in its own session; its output collected as it comes."""

    def __init__(self, output: Path):
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CANDLEWAX_")}
        command = [sys.executable, "-m", "tools.cli", "demo", "--live", "--output", str(output)]
        command += ["--port", str(self.port), "--symbols", "3", "--rate", "600", "--workers", "1"]
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**env, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.decode(errors="replace").rstrip())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def wait_until_serving(self, at_least: int, timeout_s: float = 90.0) -> list[str]:
        """Until the dashboard knows `at_least` symbols (the flow wrote their candles: the
        first candles out may be of one symbol only)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "\n".join(self.lines)
            if any("dashboard: http://" in line for line in self.lines):
                with urllib.request.urlopen(self.url + "api/config", timeout=5) as response:
                    symbols = json.loads(response.read())["symbols"]
                if len(symbols) >= at_least:
                    return symbols
            time.sleep(0.5)
        raise TimeoutError("the live demo never served candles:\n" + "\n".join(self.lines))

    def interrupt(self, timeout_s: float = 90.0) -> int:
        self.process.send_signal(signal.SIGINT)  # what Ctrl-C in its terminal sends
        return self.process.wait(timeout_s)


def screenshots() -> Path | None:
    directory = os.environ.get("SCREENSHOTS_DIR")
    return Path(directory) if directory else None


def test_a_newcomer_watches_candles_form_and_switches_resolution(tmp_path):
    demo = LiveDemo(tmp_path / "demo")
    try:
        symbols = demo.wait_until_serving(at_least=2)
        symbol = sorted(symbols)[1]  # not the one the page would pick by itself
        with Browser() as browser:
            browser.open(f"{demo.url}#symbol={symbol}&resolution=1s")
            state = browser.wait_for(
                STATE.replace("return ", "const s = ")
                + "; return s && !s.loading && s.closed >= 3 && s.lastForming ? s : null",
                timeout_s=60,
            )
            assert state["symbol"] == symbol and state["resolution"] == "1s"
            ticker = browser.run("return document.getElementById('last-close').textContent")
            assert ticker.startswith(f"{symbol} 1s close ")
            assert browser.run("return document.querySelectorAll('#chart canvas').length") > 0

            # The forming candle moves: two looks 0.5 s apart differ (a few tries, so one
            # pause of the flow is not a failure; every try is two looks 0.5 s apart).
            for _ in range(3):
                first = browser.run(STATE)["lastForming"]
                time.sleep(0.5)
                second = browser.run(STATE)["lastForming"]
                if first != second:
                    break
            assert first != second, f"the forming candle stood still: {first}"
            if screenshots():  # with a minute of history: the README's pictures
                browser.wait_for(
                    STATE.replace("return ", "const s = ") + "; return s.closed >= 70", 120
                )
                browser.screenshot(screenshots() / "dashboard-1s.png")

            browser.click('#resolutions button[data-resolution="10s"]')
            state = browser.wait_for(
                STATE.replace("return ", "const s = ")
                + "; return s && s.resolution === '10s' && !s.loading && s.closed + s.forming >= 2"
                + " ? s : null",
                timeout_s=40,
            )
            pressed = browser.run(
                "return document.querySelector('#resolutions [aria-pressed=true]').textContent"
            )
            assert pressed == "10s" and state["lastTime"] % 10 == 0, "10 s windows shown"
            if screenshots():
                time.sleep(2)
                browser.screenshot(screenshots() / "dashboard-10s.png")

            severe = [e for e in browser.console() if e["level"] == "SEVERE"]
            assert severe == [] and browser.run(STATE)["errors"] == []
    finally:
        code = demo.interrupt()
    assert code == 0, "\n".join(demo.lines)
    assert any("stopped: flow (lake flushed)" in line for line in demo.lines)


def test_whatever_a_record_holds_is_shown_as_text_never_as_markup(tmp_path):
    hostile = '<img src=x onerror="window.pwned=1">'
    write_lake(tmp_path, [{**candle(T0, 1.0), "symbol": hostile, "bar_id": f"{hostile}:1s:{T0}"}])
    with Server(lake_only(tmp_path)) as server, Browser() as browser:
        browser.open(f"http://127.0.0.1:{server.port}/")
        browser.wait_for(
            STATE.replace("return ", "const s = ") + "; return s && !s.loading && s.closed === 1"
        )
        assert browser.run("return document.getElementById('symbol').value") == hostile
        assert hostile in browser.run("return document.getElementById('last-close').textContent")
        assert browser.run("return document.querySelectorAll('header img').length") == 0
        assert browser.run("return window.pwned === undefined")
