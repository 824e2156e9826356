"""HTTP echo server: answers every request with JSON describing what it saw.

Response body: `{"pod", "method", "path", "headers": {...}, "peer": "ip:port",
"local": "ip:port", "body_bytes"}`. `peer` is the address the server's socket saw, which shows
whether the request came straight from the client pod or through a proxy. Threaded stdlib
server, one listener per port. Called by `ambientctl.sandbox.apps.__main__`.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _handler(pod: str) -> type[BaseHTTPRequestHandler]:
    class Echo(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "ambient-sandbox-echo/1"

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            host, port = self.client_address[:2]
            lhost, lport = self.connection.getsockname()[:2]
            body = json.dumps({
                "pod": pod, "method": self.command, "path": self.path,
                "headers": {k: v for k, v in self.headers.items()},
                "peer": f"{host}:{port}", "local": f"{lhost}:{lport}", "body_bytes": length,
            }, indent=1).encode() + b"\n"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
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
