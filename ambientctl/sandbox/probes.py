"""Readiness checks run from inside a namespace: TCP connect and a tiny HTTP GET.

Who calls it: `ambientctl.sandbox.core` (waiting for components and apps, `status`). Sockets
are created inside the target netns on a short-lived thread (`kernel.socket_in_netns`) and
used from the caller's thread; nothing else runs in the namespace.
Invariants: every probe has a timeout and returns a value, never raises on network errors.
"""

from __future__ import annotations

from ambientctl.sandbox.kernel import socket_in_netns


def tcp_open(netns: str, host: str, port: int, timeout: float = 1.0) -> bool:
    """True if a TCP connection to host:port from inside `netns` succeeds."""
    try:
        sock = socket_in_netns(netns)
    except OSError:
        return False
    with sock:
        sock.settimeout(timeout)
        try:
            sock.connect((host, port))
        except OSError:
            return False
    return True


def http_get(netns: str, host: str, port: int, path: str,
             timeout: float = 1.0) -> tuple[int, str] | None:
    """(status, body) of `GET path` (HTTP/1.0) from inside `netns`; None if unreachable."""
    try:
        sock = socket_in_netns(netns)
    except OSError:
        return None
    with sock:
        sock.settimeout(timeout)
        try:
            sock.connect((host, port))
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            chunks = []
            while data := sock.recv(65536):
                chunks.append(data)
        except OSError:
            return None
    raw = b"".join(chunks).decode(errors="replace")
    head, _, body = raw.partition("\r\n\r\n")
    try:
        status = int(head.split(" ", 2)[1])
    except (IndexError, ValueError):
        return None
    return status, body
