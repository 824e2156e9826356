"""TCP echo server: writes back every byte it reads, one thread per connection.

Called by `ambientctl.sandbox.apps.__main__`; one listener per port.
"""

from __future__ import annotations

import socketserver
import threading


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def serve(ports: list[int], pod: str) -> None:
    servers = [_Server(("0.0.0.0", port), _Echo) for port in ports]
    for port in ports:
        print(f"tcp-echo {pod} listening on :{port}", flush=True)
    for s in servers[1:]:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    servers[0].serve_forever()
