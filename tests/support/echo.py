"""A threaded TCP echo server and a byte-exact bulk transfer check, for tests and benchmarks.

Who calls it: interop tests (as the destination behind an HBONE server) and `bench/` (the
ping-pong latency target). Threads rather than trio so it can live in any namespace and run
beside trio or asyncio code under test without sharing their event loop.

Invariants: `EchoServer` binds inside the given namespace (socket created there, threads run
anywhere); `close()` stops accepting, shuts every live connection and joins the threads.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
from collections.abc import Iterator

from tests.support.netns import Netns

CHUNK = 256 * 1024


class EchoServer:
    """Echo every byte back on every accepted connection until the peer half-closes."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, netns: Netns | None = None):
        def make() -> socket.socket:
            sock = socket.create_server((host, port), backlog=128)
            return sock

        self._listener = netns.call(make) if netns else make()
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self.connections_served = 0
        acceptor = threading.Thread(target=self._accept_loop, name="echo-accept", daemon=True)
        acceptor.start()
        self._threads.append(acceptor)

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self._closed:
                    conn.close()
                    return
                self._conns.add(conn)
                self.connections_served += 1
                worker = threading.Thread(target=self._serve, args=(conn,), daemon=True)
                self._threads.append(worker)
            worker.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            while data := conn.recv(CHUNK):
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns = list(self._conns)
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> EchoServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def echo_server(host: str = "127.0.0.1", port: int = 0, *,
                netns: Netns | None = None) -> Iterator[EchoServer]:
    server = EchoServer(host, port, netns=netns)
    try:
        yield server
    finally:
        server.close()


def echo_roundtrip(sock: socket.socket, payload: bytes) -> bytes:
    """Send `payload` while reading the echo concurrently, half-close, return all bytes read.

    Writing on a thread while reading here avoids the deadlock where both directions' buffers
    fill up. The caller compares the result with `payload` (byte-exact, both ways).
    """
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            view = memoryview(payload)
            for start in range(0, len(view), CHUNK):
                sock.sendall(view[start : start + CHUNK])
            sock.shutdown(socket.SHUT_WR)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=writer, name="echo-writer")
    thread.start()
    received = bytearray()
    try:
        while data := sock.recv(CHUNK):
            received += data
    finally:
        thread.join()
    if errors:
        raise errors[0]
    return bytes(received)


def random_payload(size: int, marker: bytes = b"") -> bytes:
    """`size` random bytes, with `marker` repeated at a few places if given."""
    data = bytearray(os.urandom(size))
    if marker:
        for offset in (0, size // 3, size // 2, size - len(marker)):
            data[offset : offset + len(marker)] = marker
    return bytes(data)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
