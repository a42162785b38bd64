"""A loopback TCP proxy that a test can cut and restore: a network outage between the
flow and a broker that keeps running (Tansu's memory storage would not survive a restart).
It can also hold: connections stay open and nothing goes through (a broker that stops
answering), until released."""

from __future__ import annotations

import contextlib
import socket
import threading

from tools.broker import free_port


class TcpProxy:
    def __init__(self, upstream_port: int, port: int | None = None):
        self.upstream_port = upstream_port
        self.port = port or free_port()
        self._listener: socket.socket | None = None
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()
        self._flowing = threading.Event()
        self._flowing.set()

    def start(self) -> TcpProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def cut(self) -> None:
        """Refuse new connections and drop every open one."""
        with self._lock:
            listener, self._listener = self._listener, None
            connections, self._connections = self._connections, []
        if listener is not None:
            listener.close()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()

    restore = start

    def hold(self) -> None:
        """Keep every connection open and forward nothing: requests go unanswered."""
        self._flowing.clear()

    def release(self) -> None:
        """Forward again, what was held first."""
        self._flowing.set()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._connections += [client, upstream]
            for source, target in ((client, upstream), (upstream, client)):
                pump = threading.Thread(
                    target=_pump, args=(source, target, self._flowing), daemon=True
                )
                pump.start()


def _pump(source: socket.socket, target: socket.socket, flowing: threading.Event) -> None:
    try:
        while data := source.recv(65536):
            flowing.wait()
            target.sendall(data)
    except OSError:
        pass
    finally:
        # Shut down, not only closed: the other direction's thread is blocked reading one
        # of these sockets, and a close alone neither wakes it nor ends the connection
        # (the broker then kept it open, and took 5 s to stop).
        for end in (source, target):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                end.close()
