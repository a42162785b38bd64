"""Throwaway PostgreSQL and Redis servers for the demo and the tests, from Debian's packages.

`LocalPostgres` makes a new cluster with `initdb` in a temporary directory and runs its
`postgres` on a free loopback port; `LocalRedis` runs `redis-server` the same way, with
no persistence and a random password. Both are child processes that end with the
program (more exactly, the thread) that started them (`tools.children.stop_with_parent`),
and `stop()` removes their directory.

PostgreSQL refuses to run as root, so as root the server (and `initdb`) run as the
`postgres` user that Debian's package creates; the cluster's superuser is `candlewax`
with a random password (scram-sha-256 over TCP), so a DSN here carries a real secret.
The cluster runs with `fsync=off` (a throwaway; a commit still survives the server
process being killed, only not a crash of the machine).

Users with their own servers never need this: they set `CANDLEWAX_POSTGRES_DSN` and
`CANDLEWAX_REDIS_URL`.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from tools.broker import accepts, free_port
from tools.children import stop_with_parent

log = logging.getLogger(__name__)

POSTGRES_USER = "candlewax"
POSTGRES_DATABASE = "candlewax"


def postgres_bin_dir() -> Path | None:
    """Where `initdb` and `postgres` are: on PATH, or Debian's newest
    `/usr/lib/postgresql/<version>/bin` (Debian keeps them off PATH)."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name.split(".")[0]),
    )
    return Path(found[-1]).parent if found else None


def postgres_available() -> str | None:
    """None when a local PostgreSQL server can run here, else why not."""
    if postgres_bin_dir() is None:
        return "PostgreSQL server not installed (Debian: apt-get install postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run PostgreSQL as"
    return None


def redis_available() -> str | None:
    """None when a local Redis server can run here, else why not."""
    if shutil.which("redis-server") is None:
        return "Redis server not installed (Debian: apt-get install redis-server)"
    return None


class _LocalServer:
    """A server process on 127.0.0.1 in a directory of its own."""

    name = "server"

    def __init__(self, port: int | None = None, nice: int = 0):
        self.port = port or free_port()
        self.nice = nice  # > 0: the server yields the CPU to the programs using it
        self.directory = Path(tempfile.mkdtemp(prefix=f"candlewax-{self.name}-"))
        self.log_path = self.directory / f"{self.name}.log"
        self._process: subprocess.Popen[bytes] | None = None

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _run_as(self) -> dict[str, Any]:
        return {}

    def _launch(self, timeout_s: float) -> None:
        with open(self.log_path, "ab") as log_file:
            self._process = subprocess.Popen(
                self._command(),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.directory,
                start_new_session=True,  # Ctrl-C stops the demo's flow first, not this
                preexec_fn=self._in_child,
                **self._run_as(),
            )
        deadline = time.monotonic() + timeout_s
        while not self._ready():
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with code {self._process.returncode}: "
                    f"{self.log_path.read_text(errors='replace')[-2000:]}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not start within {timeout_s:.0f} s")
            time.sleep(0.05)

    def _in_child(self) -> None:
        stop_with_parent()
        if self.nice:
            os.nice(self.nice)

    def _ready(self) -> bool:
        return accepts(self.port)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """End the server process now (a crash, for tests); `start()` brings it back on
        the same port with the same data."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(sig)
            self._process.wait(30)
        self._process = None

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.kill(signal.SIGTERM)
        shutil.rmtree(self.directory, ignore_errors=True)

    def start(self, timeout_s: float = 60.0) -> Any:
        raise NotImplementedError

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()


class LocalPostgres(_LocalServer):
    """A new PostgreSQL cluster on 127.0.0.1, with database `candlewax`."""

    name = "postgres"

    def __init__(self, port: int | None = None, nice: int = 0):
        super().__init__(port, nice)
        self.password = secrets.token_urlsafe(16)
        self.data = self.directory / "data"
        self._initialized = False

    @property
    def dsn(self) -> str:
        """A libpq URI with the password (a secret: never log it)."""
        return (
            f"postgresql://{POSTGRES_USER}:{self.password}@127.0.0.1:{self.port}/"
            f"{POSTGRES_DATABASE}"
        )

    @property
    def dsn_without_password(self) -> str:
        return f"postgresql://{POSTGRES_USER}@127.0.0.1:{self.port}/{POSTGRES_DATABASE}"

    def _run_as(self) -> dict[str, Any]:
        if os.geteuid() != 0:
            return {}
        user = pwd.getpwnam("postgres")
        return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}

    def _initdb(self) -> None:
        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            raise RuntimeError(postgres_available() or "no PostgreSQL server")
        run_as = self._run_as()
        if run_as:
            os.chown(self.directory, run_as["user"], run_as["group"])
        password_file = self.directory / "password"
        password_file.write_text(self.password + "\n")
        if run_as:
            os.chown(password_file, run_as["user"], run_as["group"])
        password_file.chmod(0o600)
        subprocess.run(
            [
                str(bin_dir / "initdb"),
                "--pgdata",
                str(self.data),
                "--username",
                POSTGRES_USER,
                f"--pwfile={password_file}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            cwd=self.directory,
            **run_as,
        )
        password_file.unlink()
        self._initialized = True

    def _command(self) -> list[str]:
        bin_dir = postgres_bin_dir()
        assert bin_dir is not None
        return [
            str(bin_dir / "postgres"),
            "-D",
            str(self.data),
            "-p",
            str(self.port),
            "-h",
            "127.0.0.1",
            "-k",
            str(self.directory),  # its Unix socket here, not in /var/run/postgresql
            "-c",
            "fsync=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=100",
            "-c",
            "listen_addresses=127.0.0.1",
        ]

    def _ready(self) -> bool:
        if not accepts(self.port):
            return False
        import psycopg

        try:
            with psycopg.connect(self.admin_dsn("postgres"), connect_timeout=2):
                return True
        except psycopg.OperationalError:  # starting up, or recovering after a crash
            return False

    def admin_dsn(self, database: str = POSTGRES_DATABASE) -> str:
        return f"postgresql://{POSTGRES_USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def start(self, timeout_s: float = 60.0) -> LocalPostgres:
        if not self._initialized:
            self._initdb()
        for attempt in range(10):
            try:
                self._launch(timeout_s)
                break
            except RuntimeError:
                # Just after a crash (SIGKILL) the old server's backends may still hold
                # its shared memory for a moment: the new one refuses to start. Again.
                if attempt == 9 or "shared memory" not in self.log_path.read_text(errors="replace"):
                    raise
                time.sleep(0.5)
        import psycopg

        with psycopg.connect(self.admin_dsn("postgres"), autocommit=True) as connection:
            exists = connection.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (POSTGRES_DATABASE,)
            ).fetchone()
            if not exists:
                connection.execute(f"CREATE DATABASE {POSTGRES_DATABASE}")
        log.info("local PostgreSQL on 127.0.0.1:%s, data in %s", self.port, self.data)
        return self


class LocalRedis(_LocalServer):
    """A `redis-server` on 127.0.0.1 with no persistence."""

    name = "redis"

    def __init__(self, port: int | None = None):
        super().__init__(port)
        self.password = secrets.token_urlsafe(16)

    @property
    def url(self) -> str:
        """A Redis URL with the password (a secret: never log it)."""
        return f"redis://default:{self.password}@127.0.0.1:{self.port}/0"

    def _command(self) -> list[str]:
        return [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
            "--daemonize",
            "no",
            "--requirepass",
            self.password,
        ]

    def start(self, timeout_s: float = 30.0) -> LocalRedis:
        self._launch(timeout_s)
        log.info("local Redis on 127.0.0.1:%s", self.port)
        return self
