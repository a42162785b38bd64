"""Shared fixtures: worker counts, the embedded broker, a trade file for process runs.
Plain helpers live in modules of their own (`factories`, `flow_runs`, `processes`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.factories import faulty_stream

# Tests never pick up a developer's CANDLEWAX_* variables or .env file.
for _name in [n for n in os.environ if n.startswith("CANDLEWAX_")]:
    del os.environ[_name]


@pytest.fixture(params=[1, 2], ids=["1-worker", "2-workers"])
def workers(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture(scope="session")
def broker() -> Iterator[Any]:
    """A real Kafka-protocol broker (Tansu) on a free loopback port, for the whole session."""
    from tools.broker import EmbeddedBroker

    with EmbeddedBroker() as running:
        yield running


@pytest.fixture
def broker_behind_proxy() -> Iterator[Any]:
    """A broker of its own (Tansu) that clients reach through a proxy a test can cut or
    hold (`tests.tcp_proxy`): `(broker, proxy)`."""
    from tests.tcp_proxy import TcpProxy
    from tools.broker import EmbeddedBroker, free_port

    proxy = TcpProxy(upstream_port=free_port())
    proxy.start()
    with EmbeddedBroker(port=proxy.upstream_port, advertised_port=proxy.port) as running:
        yield running, proxy
        # Its connections closed before the broker stops: Tansu waits 5 s for open ones.
        proxy.release()
        proxy.cut()


@pytest.fixture(scope="module")
def trades_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[bytes]]:
    """An NDJSON file of a faulty simulated stream, and its messages."""
    messages = faulty_stream(20_000, seed=4)
    path = tmp_path_factory.mktemp("input") / "trades.ndjson"
    path.write_bytes(b"\n".join(m.replace(b"\n", b" ") for m in messages) + b"\n")
    return path, messages


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """A throwaway PostgreSQL cluster (Debian's `postgresql`) on a free loopback port."""
    from tools.stores import LocalPostgres, postgres_available

    missing = postgres_available()
    if missing:
        pytest.skip(missing)
    with LocalPostgres() as server:
        yield server


@pytest.fixture
def postgres_dsn(postgres_server: Any, request: pytest.FixtureRequest) -> str:
    """A new, empty database on the session's PostgreSQL server, for one test."""
    import re

    import psycopg

    name = "t_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:50]
    with psycopg.connect(postgres_server.admin_dsn("postgres"), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {name}")
    return postgres_server.admin_dsn(name)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Any]:
    """A throwaway `redis-server` on a free loopback port, no persistence."""
    from tools.stores import LocalRedis, redis_available

    missing = redis_available()
    if missing:
        pytest.skip(missing)
    with LocalRedis() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: Any) -> str:
    """The session's Redis, emptied for one test."""
    import redis

    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return str(redis_server.url)
