"""What happens when an input or output fails: one line for the operator, nothing lost.

An exception raised into Bytewax from a sink or source becomes a Rust panic, a chain of
tracebacks, and (when a `close()` raises again during the unwinding) an abort with exit
134. Worse, the other partitions' `close()` run during that unwinding and write rows
after the failure. So the flow's inputs and outputs report a failure they cannot recover
from through `fail`:

- run as a command (`python -m bytewax.run flows.ohlcv`, which calls
  `exit_on_failure()`), `fail` logs one line naming the input or output and the cause,
  removes half-written files (the cleanups registered here), and ends the process with a
  non-zero code. No recovery snapshot covers the failed epoch, so a restart after the
  fault is fixed resumes from the last one and loses nothing;
- used as a library (tests, notebooks), `fail` raises the error.

Every line goes through `redact`, which hides the secrets registered at start-up
(passwords in settings), wherever a library might echo them.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import NoReturn

log = logging.getLogger("candlewax")

EXIT_FAILURE = 1
EXIT_USAGE = 2  # a setting or the environment is wrong: fixing it is the user's move
EXIT_STOPPED = 130  # stopped by Ctrl-C before the flow ran


class PipelineError(RuntimeError):
    """An input or output the flow cannot go on without has failed."""

    def __init__(self, what: str, cause: str, exit_code: int = EXIT_FAILURE):
        super().__init__(f"{what}: {cause}")
        self.what = what
        self.cause = cause
        self.exit_code = exit_code


class OutputError(PipelineError):
    """Writing to a sink failed (lake not writable, disk full, Kafka topic invalid...)."""


class InputError(PipelineError):
    """Reading the source failed (broker unreachable past the timeout, topic missing...)."""


class _FailurePolicy:
    def __init__(self) -> None:
        self.exit_process = False
        self.failure: str | None = None
        self.failed_at: float | None = None  # `time.monotonic()` when it was reported
        self.cleanups: list[Callable[[], Callable[[], None] | None]] = []
        self.secrets: set[str] = set()
        self.lock = threading.Lock()


_policy = _FailurePolicy()


def exit_on_failure(enabled: bool = True) -> None:
    """Make `fail` end the process (the flow run as a command) instead of raising."""
    _policy.exit_process = enabled


def on_failure(cleanup: Callable[[], None]) -> None:
    """Run `cleanup` (quickly, without raising) before a failing process ends. A bound
    method is held weakly: registering does not keep its object alive."""
    if hasattr(cleanup, "__self__"):
        _policy.cleanups.append(weakref.WeakMethod(cleanup))  # type: ignore[arg-type]
    else:
        _policy.cleanups.append(lambda: cleanup)


def failure() -> str | None:
    """The first failure reported in this process, if any."""
    return _policy.failure


def failed_at() -> float | None:
    """When (`time.monotonic()`) the first failure was reported, if one was: what a
    cleanup may still wait for is counted from it, so cleanups together stay brief."""
    return _policy.failed_at if _policy.failure is not None else None


def fail(error: PipelineError) -> NoReturn:
    """Report `error`: end the process with one line (command) or raise it (library)."""
    with _policy.lock:
        first = _policy.failure is None
        if first:
            _policy.failure = redact(str(error))
            _policy.failed_at = time.monotonic()
    if not _policy.exit_process:
        raise error
    if first:
        log.error("stopped: %s", redact(str(error)))
        for reference in _policy.cleanups:
            try:
                cleanup = reference()
                if cleanup is not None:
                    cleanup()
            except Exception:  # a cleanup must never hide the failure
                pass
        for handler in logging.getLogger().handlers + log.handlers:
            handler.flush()
        sys.stderr.flush()
        os._exit(error.exit_code)
    # Another thread is already ending the process: wait for it, never return.
    threading.Event().wait()
    raise error  # unreachable


def add_secret(value: str | None) -> None:
    """A value that must never appear in a log line, an error or a metric."""
    if value and len(value) >= 3:
        _policy.secrets.add(value)


def redact(text: str) -> str:
    """`text` with every registered secret, and any `password=`/`secret` value, masked."""
    for secret in sorted(_policy.secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return _URL_PASSWORD.sub(r"\1***@", _PASSWORD_VALUE.sub(r"\1***", text))


# The password of a URL: `postgresql://user:PASSWORD@host`, `redis://:PASSWORD@host`.
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]+@")
_PASSWORD_VALUE = re.compile(
    r"""((?:password|secret|sasl\.jaas\.config)["']?\s*[:=]\s*["']?)[^"',}\s]+""", re.I
)


class RedactingFilter(logging.Filter):
    """Masks secrets in every record a handler emits (librdkafka's lines included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True
