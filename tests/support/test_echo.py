"""The threaded echo server and the concurrent write/read helper (tests/support/echo.py)."""

from __future__ import annotations

import socket

from tests.support.echo import echo_roundtrip, echo_server, random_payload


def test_echo_is_byte_exact_on_loopback() -> None:
    """4 MiB sent with a half-close come back identical, and the server counts the connection."""
    payload = random_payload(4 * 1024 * 1024, marker=b"MARK")
    with echo_server() as server:
        with socket.create_connection(server.address, timeout=10) as sock:
            assert echo_roundtrip(sock, payload) == payload
        assert server.connections_served == 1
