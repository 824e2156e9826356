"""The sample apps over loopback: HTTP echo reports headers and peer, TCP echo echoes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def app(request: pytest.FixtureRequest) -> Iterator[int]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ambientctl.sandbox.apps", request.param,
                             f"--port={port}", "--pod=test/app"], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()  # printed once the listener is bound
        assert f"listening on :{port}" in line
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=5)


@pytest.mark.parametrize("app", ["http-echo"], indirect=True)
def test_http_echo_returns_headers_and_the_peer_it_saw(app: int):
    """The JSON body names the pod, echoes request headers and the client's address."""
    with socket.socket() as client:
        client.bind(("127.0.0.1", 0))
        client_port = client.getsockname()[1]
        client.connect(("127.0.0.1", app))
        client.sendall(b"GET /x?y=1 HTTP/1.1\r\nHost: h\r\nX-Probe: 42\r\nConnection: close"
                       b"\r\n\r\n")
        data = b""
        while chunk := client.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    doc = json.loads(body)
    assert doc["pod"] == "test/app" and doc["path"] == "/x?y=1" and doc["method"] == "GET"
    assert doc["headers"]["X-Probe"] == "42"
    assert doc["peer"] == f"127.0.0.1:{client_port}"
    assert doc["local"] == f"127.0.0.1:{app}"


@pytest.mark.parametrize("app", ["tcp-echo"], indirect=True)
def test_tcp_echo_writes_back_what_it_reads(app: int):
    """Bytes sent come back unchanged; half-close ends the exchange."""
    payload = bytes(range(256)) * 100
    with socket.create_connection(("127.0.0.1", app), timeout=5) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := s.recv(65536):
            got += chunk
    assert got == payload


@pytest.mark.parametrize("app", ["http-echo"], indirect=True)
def test_client_tool_get_prints_the_body(app: int):
    """`apps get URL` (the client pod's tool) prints the server's answer."""
    out = subprocess.run([sys.executable, "-m", "ambientctl.sandbox.apps", "get",
                          f"http://127.0.0.1:{app}/hello", "-H", "X-A: b"],
                         capture_output=True, text=True, timeout=30, check=True)
    doc = json.loads(out.stdout)
    assert doc["path"] == "/hello" and doc["headers"]["X-A"] == "b"


@pytest.mark.parametrize("app", ["http-echo"], indirect=True)
def test_http_echo_event_stream_holds_the_rest_until_released(app: int):
    """/events sends event 1 at once in chunked encoding and the others only after /release
    with the same key; the stream then ends with the last chunk."""
    import h11

    conn = h11.Connection(h11.CLIENT)
    got: list[bytes] = []
    with socket.create_connection(("127.0.0.1", app), timeout=10) as s:
        s.sendall(conn.send(h11.Request(method="GET", target="/events?key=k7&count=3",
                                        headers=[("host", "h")]))
                  + conn.send(h11.EndOfMessage()))
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(s.recv(65536))
            elif isinstance(event, h11.Response):
                assert (event.status_code, dict(event.headers)[b"transfer-encoding"]) == (
                    200, b"chunked")
            elif isinstance(event, h11.Data):
                got.append(bytes(event.data))
                if len(got) == 1:
                    with socket.create_connection(("127.0.0.1", app), timeout=5) as r:
                        r.sendall(b"GET /release?key=k7 HTTP/1.0\r\n\r\n")
                        assert r.recv(100).startswith(b"HTTP/1.1 200")
            elif isinstance(event, h11.EndOfMessage):
                break
    events = [json.loads(g.removeprefix(b"data: ")) for g in got]
    assert [e["event"] for e in events] == [1, 2, 3] and events[0]["pod"] == "test/app"
