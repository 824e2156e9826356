"""HTTP echo server: answers every request with JSON describing what it saw.

Response body: `{"pod", "method", "path", "headers": {...}, "peer": "ip:port",
"local": "ip:port", "body_bytes"}`. `peer` is the address the server's socket saw, which shows
whether the request came straight from the client pod or through a proxy. Threaded stdlib
server, one listener per port. Called by `ambientctl.sandbox.apps.__main__`.

Failing on demand (for retry tests): a request whose query has `fail=N&key=K` is answered
`503` (body `failing K`) for the first N requests carrying that key, then normally; counts are
per listener and key. Every request is logged with its status code.

Streaming (server-sent events, for proving a proxy streams instead of buffering):
`GET /events?key=K&count=N` answers `text/event-stream` in chunked encoding; the first event
(`data: {"pod", "event": 1}`) leaves at once, the other N-1 only after `GET /release?key=K`
reached this same listener (or 30 s passed), then the stream ends. A proxy that buffered whole
responses would never show the first event before the release.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class _Failures:
    """How many requests each `key` has seen; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: Counter[str] = Counter()

    def should_fail(self, path: str) -> str | None:
        """The key when this request is one of its first `fail` requests, else None."""
        query = parse_qs(urlsplit(path).query)
        key, fail = query.get("key", [""])[0], query.get("fail", ["0"])[0]
        if not key or not fail.isdigit():
            return None
        with self._lock:
            self._seen[key] += 1
            return key if self._seen[key] <= int(fail) else None


RELEASE_WAIT = 30.0  # seconds a held event stream waits for its release


class _Gates:
    """Per-key events that hold an event stream until its release arrives; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gates: dict[str, threading.Event] = {}

    def gate(self, key: str) -> threading.Event:
        with self._lock:
            return self._gates.setdefault(key, threading.Event())

    def release(self, key: str) -> None:
        self.gate(key).set()


def _handler(pod: str) -> type[BaseHTTPRequestHandler]:
    failures = _Failures()
    gates = _Gates()

    class Echo(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "ambient-sandbox-echo/1"
        # Buffered: head and body leave in one write (flushed after each request). Unbuffered,
        # the body waits behind Nagle for the ACK of the head, which a delayed ACK holds 40 ms.
        wbufsize = -1

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            if (key := failures.should_fail(self.path)) is not None:
                self._send(503, f"failing {key}\n".encode(), "text/plain")
                return
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            if url.path in ("/events", "/release") and not query.get("key", [""])[0]:
                self._send(400, b"missing ?key=\n", "text/plain")
                return
            if url.path == "/release":
                gates.release(query["key"][0])
                self._send(200, b"released\n", "text/plain")
                return
            if url.path == "/events":
                count = query.get("count", ["3"])[0]
                self._events(query["key"][0], int(count) if count.isdigit() else 3)
                return
            host, port = self.client_address[:2]
            lhost, lport = self.connection.getsockname()[:2]
            body = json.dumps({
                "pod": pod, "method": self.command, "path": self.path,
                "headers": {k: v for k, v in self.headers.items()},
                "peer": f"{host}:{port}", "local": f"{lhost}:{lport}", "body_bytes": length,
            }, indent=1).encode() + b"\n"
            self._send(200, body, "application/json")

        def _events(self, key: str, count: int) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            gate = gates.gate(key)
            for n in range(1, count + 1):
                if n == 2:
                    gate.wait(RELEASE_WAIT)
                event = f"data: {json.dumps({'pod': pod, 'event': n})}\n\n".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                self.wfile.flush()  # each event leaves now (the writer is buffered)
            self.wfile.write(b"0\r\n\r\n")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _answer

        def log_message(self, format: str, *args: object) -> None:
            print(f"{self.client_address[0]} {format % args}", flush=True)

    return Echo


def serve(ports: list[int], pod: str) -> None:
    servers = []
    for port in ports:
        server = ThreadingHTTPServer(("0.0.0.0", port), _handler(pod))
        server.daemon_threads = True
        servers.append(server)
        print(f"http-echo {pod} listening on :{port}", flush=True)
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers[1:]]
    for t in threads:
        t.start()
    servers[0].serve_forever()
