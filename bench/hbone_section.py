"""The HBONE data-plane benchmark: direct TCP vs an Envoy HBONE pair vs our HBONE pair.

Who calls it: `bench.sections` (registered as section "hbone"); it returns a `SectionResult` that
`bench.report` prints and writes as JSON.

Topology (made and removed here): namespaces A and B joined by a veth pair; in B the ping-pong
echo server (port 9000, its own process) and, per iperf3 test, a one-off iperf3 server (5201).
Per case the path's entry is in A: direct TCP dials B itself; a proxied case starts a client
proxy in A (listeners 127.0.0.1:15001 → B:5201 and :15002 → B:9000) and a server proxy in B on
B:15008.

Per repetition every available case is measured in turn (cases interleaved, so slow drifts of
a shared machine hit all of them alike): iperf3 with 1 and with 4 streams (client in A, `-J`),
proxy CPU (utime+stime) over those transfers per GB moved, then ping-pong round trips; each
proxy's peak RSS (VmHWM) is read before it stops. Summary figures are medians over repetitions
(peak RSS: the maximum).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

from bench.launchers import (
    REPO_ROOT,
    EnvoyPairLauncher,
    OursPairLauncher,
    PairLauncher,
    ProxyPairSpec,
    RunningPair,
    Tunnel,
)
from bench.procstat import ProcError, cpu_seconds, peak_rss_bytes, wait_listening
from bench.report import Metric, SectionResult
from tests.support.creds import TestPki
from tests.support.envoy import EnvoyError
from tests.support.netns import NetnsPair, netns_pair

IPERF_PORT = 5201
PING_PORT = 9000
HBONE_PORT = 15008
CLIENT_IPERF_PORT = 15001
CLIENT_PING_PORT = 15002
GB = 1e9

METRICS = [
    Metric("tput1", "iperf3, 1 stream", "Gbit/s", higher_is_better=True),
    Metric("tput4", "iperf3, 4 streams", "Gbit/s", higher_is_better=True),
    Metric("p50", "round trip p50 (64 B)", "µs"),
    Metric("p99", "round trip p99 (64 B)", "µs"),
    Metric("p50_added", "p50 added over direct TCP (64 B)", "µs"),
    Metric("cpu_client", "client proxy CPU per GB", "CPU-s"),
    Metric("cpu_server", "server proxy CPU per GB", "CPU-s"),
    Metric("rss_client", "client proxy peak RSS", "MiB"),
    Metric("rss_server", "server proxy peak RSS", "MiB"),
]


class BenchError(Exception):
    """A measurement tool failed; the message carries its output."""


# What ends one case (recorded as failed) without ending the others.
CASE_FAILURES = (BenchError, ProcError, EnvoyError, OSError, json.JSONDecodeError)


@dataclasses.dataclass(frozen=True)
class Settings:
    duration: float = 5.0
    runs: int = 3
    ping_count: int = 5000
    ping_warmup: int = 200
    ping_size: int = 64
    concurrency: int = 1


@dataclasses.dataclass(frozen=True)
class Path:
    """Where a case's traffic enters in namespace A, and the proxies to measure."""

    iperf: tuple[str, int]
    ping: tuple[str, int]
    pair: RunningPair | None


@dataclasses.dataclass
class Topology:
    pair: NetnsPair
    pki: TestPki
    workdir: pathlib.Path


class DirectCase:
    name = "direct"
    label = "direct TCP"

    def unavailable_reason(self) -> str | None:
        return None

    @contextlib.contextmanager
    def open(self, topo: Topology, settings: Settings) -> Iterator[Path]:
        yield Path((topo.pair.ip_b, IPERF_PORT), (topo.pair.ip_b, PING_PORT), None)


class ProxiedCase:
    def __init__(self, launcher: PairLauncher, label: str) -> None:
        self.launcher = launcher
        self.name = launcher.name
        self.label = label

    def unavailable_reason(self) -> str | None:
        return self.launcher.unavailable_reason()

    @contextlib.contextmanager
    def open(self, topo: Topology, settings: Settings) -> Iterator[Path]:
        ip_b = topo.pair.ip_b
        spec = ProxyPairSpec(
            client_ns=topo.pair.a, server_ns=topo.pair.b, server_listen=(ip_b, HBONE_PORT),
            tunnels=(Tunnel(("127.0.0.1", CLIENT_IPERF_PORT), f"{ip_b}:{IPERF_PORT}"),
                     Tunnel(("127.0.0.1", CLIENT_PING_PORT), f"{ip_b}:{PING_PORT}")),
            client_tls=topo.pki.issue(topo.pki.identity("bench-a", "client")),
            server_tls=topo.pki.issue(topo.pki.identity("bench-b", "server")),
            workdir=topo.workdir / self.name, concurrency=settings.concurrency,
        )
        running = self.launcher.start(spec)
        try:
            yield Path(("127.0.0.1", CLIENT_IPERF_PORT), ("127.0.0.1", CLIENT_PING_PORT), running)
        except Exception as exc:
            exc.logs = running.log_tail() + socket_states(topo)  # type: ignore[attr-defined]
            raise
        finally:
            running.stop()


CASES: dict[str, DirectCase | ProxiedCase] = {
    "direct": DirectCase(),
    "envoy": ProxiedCase(EnvoyPairLauncher(), "Envoy 1.40 HBONE pair"),
    "ours": ProxiedCase(OursPairLauncher(), "ours (trio HBONE pair)"),
}


def socket_states(topo: Topology) -> str:
    """`ss -tnpi` in both namespaces: where bytes sit when a path stalls (observation only)."""
    parts = []
    for ns in (topo.pair.a, topo.pair.b):
        done = ns.run(["ss", "-tnpi"], timeout=30)
        parts.append(f"--- ss -tnpi in {ns.name} ---\n{done.stdout}{done.stderr}")
    return "\n" + "\n".join(parts)


def iperf3(topo: Topology, entry: tuple[str, int], streams: int, duration: float) -> dict[str, Any]:
    """One iperf3 test against a fresh one-off server in B (`-s -1`), client in A.

    A server per test: a long-lived iperf3 server sometimes still holds the previous test when
    the next client arrives ("the server is busy running a test"), which is iperf3's race, not
    the path's.
    """
    server = topo.pair.b.popen(
        ["iperf3", "-s", "-1", "-B", topo.pair.ip_b, "-p", str(IPERF_PORT)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(server.pid, {IPERF_PORT}, what="iperf3 server")
        argv = ["iperf3", "-c", entry[0], "-p", str(entry[1]), "-t", f"{duration:g}",
                "-P", str(streams), "-J"]
        try:
            done = topo.pair.a.run(argv, timeout=duration + 30)
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"iperf3 -P {streams} via {entry} did not finish within "
                             f"{duration + 30:g} s (is the path stalled?)") from exc
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()
    try:
        result = json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        raise BenchError(f"iperf3 printed no JSON: {done.stdout[-500:]}{done.stderr}") from exc
    if "error" in result:
        raise BenchError(f"iperf3 via {entry}: {result['error']}")
    received = result["end"]["sum_received"]
    return {"bits_per_second": received["bits_per_second"], "bytes": received["bytes"]}


def pingpong(topo: Topology, entry: tuple[str, int], settings: Settings) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench.pingpong", "client", "--host", entry[0],
            "--port", str(entry[1]), "--count", str(settings.ping_count),
            "--warmup", str(settings.ping_warmup), "--size", str(settings.ping_size)]
    try:
        done = topo.pair.a.run(argv, timeout=300, cwd=REPO_ROOT)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"ping-pong client via {entry} did not finish within 300 s") from exc
    if done.returncode != 0:
        raise BenchError(f"ping-pong client via {entry} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def measure(topo: Topology, path: Path, settings: Settings) -> dict[str, Any]:
    pids = path.pair.pids() if path.pair else {}
    cpu_before = {role: cpu_seconds(pid) for role, pid in pids.items()}
    tput = {n: iperf3(topo, path.iperf, n, settings.duration) for n in (1, 4)}
    moved = sum(t["bytes"] for t in tput.values())
    sample: dict[str, Any] = {
        "tput1": tput[1]["bits_per_second"] / 1e9,
        "tput4": tput[4]["bits_per_second"] / 1e9,
        "bytes": moved,
    }
    for role, pid in pids.items():
        sample[f"cpu_{role}"] = (cpu_seconds(pid) - cpu_before[role]) / (moved / GB)
    ping = pingpong(topo, path.ping, settings)
    sample.update(p50=ping["p50_us"], p99=ping["p99_us"], ping=ping)
    for role, pid in pids.items():
        sample[f"rss_{role}"] = peak_rss_bytes(pid) / 2**20
    return sample


def add_latency_over_direct(samples: dict[str, list[dict[str, Any]]]) -> None:
    """Set `p50_added` (p50 minus direct TCP's p50 in the same repetition) on every proxied
    sample: issue 2's latency goal is about the latency a proxy pair adds, and the same
    repetition's direct figure cancels the machine's drift."""
    direct = samples.get("direct", [])
    for name, runs in samples.items():
        if name == "direct":
            continue
        for rep, sample in enumerate(runs):
            if rep < len(direct) and "p50" in sample and "p50" in direct[rep]:
                sample["p50_added"] = sample["p50"] - direct[rep]["p50"]


@contextlib.contextmanager
def topology(workdir: pathlib.Path) -> Iterator[Topology]:
    with netns_pair("bench") as pair:
        ping_server = pair.b.popen(
            [sys.executable, "-m", "bench.pingpong", "serve", "--host", pair.ip_b,
             "--port", str(PING_PORT)], cwd=REPO_ROOT, stdout=subprocess.DEVNULL)
        try:
            wait_listening(ping_server.pid, {PING_PORT}, what="ping-pong server")
            yield Topology(pair, TestPki(workdir / "pki"), workdir)
        finally:
            ping_server.kill()
            ping_server.wait()


def run(case_names: list[str], settings: Settings, log: Any = print) -> SectionResult:
    unknown = [n for n in case_names if n not in CASES]
    if unknown:
        raise BenchError(f"unknown cases {unknown}; known: {sorted(CASES)}")
    cases = [CASES[n] for n in case_names]
    result = SectionResult(
        name="hbone", title="HBONE data plane (two namespaces, veth)", metrics=METRICS,
        cases={c.name: c.label for c in cases}, references=["direct", "envoy"],
        settings=dataclasses.asdict(settings),
    )
    available = []
    for case in cases:
        reason = case.unavailable_reason()
        if reason:
            result.unavailable[case.name] = reason
            log(f"[hbone] {case.name}: not available: {reason}")
        else:
            available.append(case)
    samples: dict[str, list[dict[str, Any]]] = {c.name: [] for c in available}
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, topology(pathlib.Path(tmp)) as topo:
        for rep in range(settings.runs):
            for case in available:
                if case.name in result.failed:
                    continue
                log(f"[hbone] run {rep + 1}/{settings.runs}: {case.name}")
                try:
                    with case.open(topo, settings) as path:
                        samples[case.name].append(measure(topo, path, settings))
                except CASE_FAILURES as exc:
                    result.failed[case.name] = f"run {rep + 1}: {exc}\n{getattr(exc, 'logs', '')}"
                    log(f"[hbone] {case.name} failed in run {rep + 1}: {exc}")
    add_latency_over_direct(samples)
    for name, runs in samples.items():
        if name in result.failed:
            continue
        result.raw[name] = runs
        for metric in METRICS:
            values = [r[metric.key] for r in runs if metric.key in r]
            if values:
                agg = max if metric.key.startswith("rss_") else statistics.median
                result.summary.setdefault(name, {})[metric.key] = agg(values)
    return result
