"""The waypoint benchmark (issue 6): HTTP requests/s and latency through ztunnel + waypoint,
through ztunnel only, and through an Envoy HTTP proxy doing the same weighted routing.

Who calls it: `bench.sections` (section "waypoint"); it returns a `SectionResult` that
`bench.report` prints and writes as JSON. Needs root (it brings up a 2-node sandbox from the
e2e manifest sets `base` + `enrolled` + `waypoint` and always takes it down).

Cases (each: one client in pod shop/client, one HTTP/1.1 keep-alive connection, requests one
after another for `duration` seconds; latency is request sent to response complete):
- `ztunnel`: to Service echo-v1 (10.96.0.21, not bound to the waypoint): client ztunnel →
  HBONE → echo-1's ztunnel. The reference of the ratios.
- `waypoint`: to Service echo (10.96.0.10, bound to waypoint shop/waypoint, HTTPRoute 1:3 over
  echo-v1/echo-v2): client ztunnel → HBONE → waypoint → HBONE → echo's ztunnel.
- `envoy`: to an Envoy (1 worker) in the client pod on 127.0.0.1:10080 with the same 1:3
  weighted route to the echo-v1/echo-v2 VIPs; Envoy's upstream connections go through the
  client's ztunnel like the app's own, so this is "ztunnel + an Envoy L7 hop".
Each case checks who answered (the waypoint's IP as peer only in `waypoint`).
"""

from __future__ import annotations

import dataclasses
import shutil
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import h11

from ambientctl.sandbox import Sandbox
from ambientctl.sandbox.kernel import socket_in_netns
from bench.report import Metric, SectionResult
from tests.support.envoy import EnvoyProcess, _address
from tests.support.netns import Netns

MANIFESTS = Path(__file__).resolve().parent.parent / "e2e" / "manifests"
SETS = ("base", "enrolled", "waypoint")
METRICS = [
    Metric("rps", "requests/s (1 keep-alive connection)", "req/s", higher_is_better=True),
    Metric("p50", "latency p50", "ms"),
    Metric("p99", "latency p99", "ms"),
]
CASES = {"ztunnel": "ztunnel only", "waypoint": "ztunnel + waypoint",
         "envoy": "ztunnel + Envoy HTTP proxy"}
TARGETS = {"ztunnel": ("10.96.0.21", 80), "waypoint": ("10.96.0.10", 80),
           "envoy": ("127.0.0.1", 10080)}


@dataclasses.dataclass(frozen=True)
class Settings:
    duration: float = 5.0


def _get(sock: socket.socket, conn: h11.Connection, host: str) -> int:
    sock.sendall(conn.send(h11.Request(method="GET", target="/", headers=[("host", host)]))
                 + conn.send(h11.EndOfMessage()))
    status = 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(sock.recv(65536))
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.EndOfMessage):
            conn.start_next_cycle()
            return status
        elif isinstance(event, h11.ConnectionClosed):
            raise ConnectionError(f"{host} closed the keep-alive connection")


def _measure(sb: Sandbox, target: tuple[str, int], duration: float) -> dict[str, Any]:
    sock = socket_in_netns(sb.pod_netns("shop/client"))
    conn, host = h11.Connection(h11.CLIENT), f"{target[0]}:{target[1]}"
    with sock:
        sock.settimeout(10)
        sock.connect(target)
        for _ in range(50):  # warm-up: connections, pools, routes
            _get(sock, conn, host)
        times: list[float] = []
        bad = 0
        end = time.monotonic() + duration
        while (start := time.perf_counter()) and time.monotonic() < end:
            status = _get(sock, conn, host)
            times.append((time.perf_counter() - start) * 1000)
            bad += status != 200
    times.sort()
    if bad:
        raise ConnectionError(f"{bad} of {len(times)} requests to {host} were not 200")
    return {"requests": len(times), "seconds": duration, "rps": len(times) / duration,
            "p50": statistics.median(times), "p99": times[int(len(times) * 0.99) - 1]}


def _envoy_config() -> dict[str, Any]:
    def cluster(name: str, vip: str) -> dict[str, Any]:
        return {"name": name, "type": "STATIC", "connect_timeout": "5s",
                "load_assignment": {"cluster_name": name, "endpoints": [
                    {"lb_endpoints": [{"endpoint": {"address": _address(vip, 80)}}]}]}}
    hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network."
                    "http_connection_manager.v3.HttpConnectionManager",
           "stat_prefix": "bench", "codec_type": "HTTP1",
           "route_config": {"virtual_hosts": [{"name": "echo", "domains": ["*"], "routes": [{
               "match": {"prefix": "/"},
               "route": {"weighted_clusters": {"clusters": [
                   {"name": "echo-v1", "weight": 1}, {"name": "echo-v2", "weight": 3}]}}}]}]},
           "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
               "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}
    return {"admin": {"address": _address("127.0.0.1", 0)},
            "static_resources": {
                "listeners": [{"name": "http", "address": _address("127.0.0.1", 10080),
                               "filter_chains": [{"filters": [{
                                   "name": "envoy.filters.network.http_connection_manager",
                                   "typed_config": hcm}]}]}],
                "clusters": [cluster("echo-v1", "10.96.0.21"), cluster("echo-v2", "10.96.0.22")]}}


def run(cases: list[str], settings: Settings = Settings()) -> SectionResult:
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        raise ValueError(f"waypoint: unknown cases {unknown}; known: {list(CASES)}")
    result = SectionResult(
        name="waypoint", title="L7: ztunnel + waypoint vs ztunnel only vs ztunnel + Envoy",
        metrics=METRICS, cases={c: CASES[c] for c in cases},
        references=["ztunnel"] if "ztunnel" in cases else [],
        settings={"duration": settings.duration, "connections": 1})
    with tempfile.TemporaryDirectory() as tmp:
        folder, state = Path(tmp) / "manifests", Path(tmp) / "state"
        folder.mkdir()
        state.mkdir()
        for s in SETS:
            shutil.copytree(MANIFESTS / s, folder, dirs_exist_ok=True)
        sb = Sandbox("benchwp", state_root=state)
        envoy: EnvoyProcess | None = None
        try:
            sb.up(nodes=2, manifests=folder, timeout=90)
            if "envoy" in cases:
                envoy = EnvoyProcess(_envoy_config(), Path(tmp) / "envoy", name="envoy",
                                     netns=Netns(sb.pod_netns("shop/client")),
                                     log_level="warning").start()
            for case in cases:
                try:
                    raw = _measure(sb, TARGETS[case], settings.duration)
                except OSError as exc:
                    result.failed[case] = str(exc)
                    continue
                result.raw[case] = [raw]
                result.summary[case] = {k: raw[k] for k in ("rps", "p50", "p99")}
        finally:
            if envoy is not None:
                envoy.stop()
            sb.down()
    return result
