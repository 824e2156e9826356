"""Small-message round-trip latency: `python -m bench.pingpong serve|client ...`.

Who calls it: the HBONE benchmark section starts `serve` in namespace B (once per run) and
`client` in namespace A against each path's entry address, so every path is measured by the
same client against the same server, each in its own process, away from the orchestrator.

The client opens one TCP connection, does `--warmup` round trips that are not recorded (they
include the tunnel set-up), then `--count` recorded ones: send `--size` bytes, read `--size`
bytes back. It prints one JSON object: count, p50_us, p90_us, p99_us, mean_us, max_us.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import socket
import statistics
import sys
import time

from tests.support.echo import EchoServer


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        raise ValueError("no samples")
    rank = math.ceil(fraction * len(sorted_values))  # 1-based nearest rank
    return sorted_values[max(1, min(rank, len(sorted_values))) - 1]


def run_client(host: str, port: int, *, count: int, size: int, warmup: int) -> dict[str, float]:
    message = b"p" * size
    samples: list[float] = []
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray(size)
        view = memoryview(buf)
        for i in range(warmup + count):
            start = time.perf_counter_ns()
            sock.sendall(message)
            got = 0
            while got < size:
                n = sock.recv_into(view[got:], size - got)
                if n == 0:
                    raise ConnectionError(f"peer closed after {i} round trips")
                got += n
            if i >= warmup:
                samples.append((time.perf_counter_ns() - start) / 1000)
    samples.sort()
    return {
        "count": len(samples),
        "size": size,
        "p50_us": percentile(samples, 0.50),
        "p90_us": percentile(samples, 0.90),
        "p99_us": percentile(samples, 0.99),
        "mean_us": statistics.fmean(samples),
        "max_us": samples[-1],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pingpong")
    sub = parser.add_subparsers(dest="mode", required=True)
    serve = sub.add_parser("serve", help="echo server (runs until killed)")
    serve.add_argument("--host", required=True)
    serve.add_argument("--port", type=int, required=True)
    client = sub.add_parser("client", help="measure round trips and print JSON")
    client.add_argument("--host", required=True)
    client.add_argument("--port", type=int, required=True)
    client.add_argument("--count", type=int, default=5000)
    client.add_argument("--size", type=int, default=64)
    client.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args(argv)
    if args.mode == "serve":
        server = EchoServer(args.host, args.port)
        print(f"listening on {server.address}", flush=True)
        try:
            while True:
                signal.pause()  # serve until SIGTERM/SIGKILL from the benchmark
        except KeyboardInterrupt:
            server.close()
        return
    result = run_client(args.host, args.port, count=args.count, size=args.size,
                        warmup=args.warmup)
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
