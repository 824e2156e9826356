"""Entry point of the sample apps and the client tools (see the package docstring)."""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import urllib.request


def _client_get(url: str, timeout: float, headers: list[str]) -> int:
    req = urllib.request.Request(url)
    for h in headers:
        k, _, v = h.partition(":")
        req.add_header(k.strip(), v.strip())
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            sys.stdout.write(resp.read().decode(errors="replace"))
            return 0
    except OSError as exc:
        print(f"get {url}: {exc}", file=sys.stderr)
        return 1


def _client_tcp(target: str, text: str, timeout: float) -> int:
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as sock:
            sock.sendall(text.encode())
            sock.shutdown(socket.SHUT_WR)
            chunks = []
            while data := sock.recv(65536):
                chunks.append(data)
        sys.stdout.write(b"".join(chunks).decode(errors="replace"))
        return 0
    except OSError as exc:
        print(f"tcp {target}: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ambientctl.sandbox.apps",
                                description="ambient-py sandbox sample apps and client tools")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("http-echo", "tcp-echo"):
        s = sub.add_parser(name, help=f"run the {name} server")
        s.add_argument("--port", type=int, action="append", required=True)
        s.add_argument("--pod", default="", help="NS/NAME reported in responses")
    sub.add_parser("sleep", help="do nothing until terminated (a client pod)")
    g = sub.add_parser("get", help="HTTP GET a URL and print the body")
    g.add_argument("url")
    g.add_argument("-H", "--header", action="append", default=[])
    g.add_argument("--timeout", type=float, default=5.0)
    t = sub.add_parser("tcp", help="send TEXT to HOST:PORT, half-close, print the answer")
    t.add_argument("target")
    t.add_argument("text")
    t.add_argument("--timeout", type=float, default=5.0)
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if args.cmd == "http-echo":
        from ambientctl.sandbox.apps import http_echo
        http_echo.serve(args.port, args.pod)
    elif args.cmd == "tcp-echo":
        from ambientctl.sandbox.apps import tcp_echo
        tcp_echo.serve(args.port, args.pod)
    elif args.cmd == "sleep":
        signal.pause()
    elif args.cmd == "get":
        return _client_get(args.url, args.timeout, args.header)
    elif args.cmd == "tcp":
        return _client_tcp(args.target, args.text, args.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
