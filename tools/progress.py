"""Progress of long runs on standard error: count, rate, and ETA when the end is known.

One line every few seconds (not a redrawn bar), so it reads the same in a terminal, a
log file and CI output.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(
        self,
        label: str,
        total: int | None = None,
        every_s: float = 2.0,
        stream: TextIO | None = None,
        unit: str = "messages",
    ):
        self.label = label
        self.total = total
        self.every_s = every_s
        self.stream = stream if stream is not None else sys.stderr
        self.unit = unit
        self.count = 0
        self.started = time.monotonic()
        self._next_report = self.started + every_s

    def update(self, count: int) -> None:
        self.count = count
        now = time.monotonic()
        if now >= self._next_report:
            self._next_report = now + self.every_s
            self.report(now)

    def line(self, now: float | None = None) -> str:
        elapsed = max(1e-9, (now or time.monotonic()) - self.started)
        rate = self.count / elapsed
        text = f"{self.label}: {self.count:,} {self.unit}, {rate:,.0f}/s"
        if self.total:
            share = self.count / self.total
            remaining = (self.total - self.count) / rate if rate > 0 else float("inf")
            eta = f"{remaining:,.0f} s" if remaining != float("inf") else "?"
            text += f", {share:.0%} of {self.total:,}, ETA {eta}"
        return text

    def report(self, now: float | None = None) -> None:
        print(self.line(now), file=self.stream, flush=True)

    def done(self) -> float:
        """Print the final line; return the elapsed seconds."""
        now = time.monotonic()
        print(self.line(now) + " - done", file=self.stream, flush=True)
        return now - self.started
