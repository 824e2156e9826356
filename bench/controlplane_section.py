"""The control-plane benchmark (issue 3 §6): istiod-lite serving a 1000-pod mesh to 10 ztunnels.

Who calls it: `bench.sections` (section "controlplane"); it returns a `SectionResult` that
`bench.report` prints and writes as JSON. `python -m bench.controlplane_section istiod ARGS`
is how it starts istiod-lite (see "istiod" below).

Manifests: `bench.controlplane_manifests` (a 1000-pod folder generated from a `Scale`, and the
two kinds of edit the run times).

istiod: the real `istiod_lite.__main__.main` in its own process (so its RSS is its own), with
one addition: its folder source is `TimedFolderSource`, which prints `bench-snapshot
<CLOCK_MONOTONIC>` on stderr each time a new snapshot leaves the folder scan. That splits
"file written -> all clients" into "file written -> istiod saw it" (the 200 ms poll plus the
scan) and "istiod saw it -> all clients" (translate, diff, serialize, debounce, push, client
apply). CLOCK_MONOTONIC is system-wide, so both processes' clocks compare.

Clients: 10 real `meshcore.xds.client.XdsClient`s over TLS in this process (asyncio), node ids
like ztunnels on node-0..9, subscribed to Address and Authorization. Each handler applies the
delta to a `meshcore.wds.Store` (what ztunnel's config client does) and stamps arrival (handler
entry) and applied (after the store) per resource; the ACK goes out when the handler returns.
Caveat: the 10 clients share one Python process (one GIL, 2 cores), so their decode work is
serialized, unlike 10 ztunnels on 10 nodes; the figures are an upper bound for that part.

Case `inproc`: an `XdsServer` on a TLS gRPC port in this process and the same clients; each
edit is scanned and translated untimed, then timed from `set_all_resources` to every client
having applied it and to the server holding every ACK (`wait_settled`): the push alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import pathlib
import re
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Any

from bench.controlplane_manifests import (
    ROOT_NS,
    SNAPSHOT_MARK,
    Change,
    Folder,
    Scale,
    bump_pod_version,
    generate,
    render,
    toggle_policy_port,
    write_file,
    write_folder,
)
from bench.procstat import cpu_seconds, peak_rss_bytes
from bench.report import Metric, SectionResult


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def snapshot_times(log_text: str) -> list[float]:
    """The CLOCK_MONOTONIC stamps of `bench-snapshot` lines in istiod's stderr."""
    return [float(m) for m in re.findall(rf"^{SNAPSHOT_MARK} ([0-9.]+)$", log_text, re.M)]


def first_after(stamps: list[float], t: float) -> float | None:
    later = [s for s in stamps if s >= t]
    return min(later) if later else None


# --- running it: istiod-lite in a subprocess, 10 Delta xDS clients here -------------------

METRICS = [
    Metric("ready", "istiod start -> first snapshot served", "s"),
    Metric("initial", "initial full push: clients start -> all hold everything", "ms"),
    Metric("write_p50", "edit: file write -> all clients applied, p50", "ms"),
    Metric("write_p95", "edit: file write -> all clients applied, p95", "ms"),
    Metric("detect_p50", "edit: istiod's scan saw it -> all clients applied, p50", "ms"),
    Metric("detect_p95", "edit: istiod's scan saw it -> all clients applied, p95", "ms"),
    Metric("recv_p50", "edit: scan / set_all_resources -> all clients received, p50", "ms"),
    Metric("push_p50", "edit: set_all_resources -> all clients applied, p50", "ms"),
    Metric("ack_p50", "edit: set_all_resources -> server has every ACK, p50", "ms"),
    Metric("ack_p95", "edit: set_all_resources -> server has every ACK, p95", "ms"),
    Metric("poll_p50", "edit: file write -> istiod saw it, p50", "ms"),
    Metric("scan", "in-process: folder scan after an edit, median", "ms"),
    Metric("translate", "in-process: translate() of the whole model, median", "ms"),
    Metric("set_all", "in-process: XdsServer.set_all_resources(), median", "ms"),
    Metric("cpu_initial", "istiod CPU during the initial push", "ms"),
    Metric("cpu_change", "istiod CPU per edit (incl. polls meanwhile)", "ms"),
    Metric("cpu_idle", "istiod CPU while idle (200 ms folder polls)", "%"),
    Metric("rss", "istiod RSS after the initial push", "MiB"),
    Metric("hwm", "istiod peak RSS (VmHWM) at the end", "MiB"),
]
CASES = {"istiod": "istiod-lite process", "inproc": "XdsServer in-process",
         "goal": "goal (issue 3)"}
RUNNABLE = ("istiod", "inproc")
GOALS = {k: 100.0 for k in ("write_p50", "write_p95", "detect_p50", "detect_p95", "ack_p50",
                            "ack_p95")}
MIB = 1024 * 1024
SERVER_NAME = "istiod.istio-system.svc"


@dataclasses.dataclass(frozen=True)
class Settings:
    scale: Scale = dataclasses.field(default_factory=Scale)
    clients: int = 10
    changes: int = 20  # per kind (pod label, policy): 2 x changes edits in all
    idle: float = 2.0  # seconds of idle CPU measurement
    timeout: float = 120.0


class BenchClient:
    """One ztunnel-like Delta xDS client: applies every delta to a `meshcore.wds.Store` and
    stamps, per resource name, its version and when it arrived / was applied."""

    def __init__(self, index: int, port: int, tls: ssl.SSLContext, expected: Mapping[str, int],
                 progress: asyncio.Event) -> None:
        from meshcore.protos.envoy.config.core.v3 import Node
        from meshcore.wds.store import Store
        from meshcore.xds.client import XdsClient, tcp_channel
        from meshcore.xds.types import ZTUNNEL_TYPES, NodeId

        self.store = Store()
        self.expected = dict(expected)
        self.progress = progress
        self.versions: dict[str, dict[str, str]] = {t: {} for t in ZTUNNEL_TYPES}
        self.received: dict[str, float] = {}
        self.applied: dict[str, float] = {}
        self.synced_at: float | None = None
        node = NodeId("ztunnel", f"10.200.0.{index + 1}", f"ztunnel-{index}", ROOT_NS)
        self.client = XdsClient(tcp_channel("127.0.0.1", port, ssl=tls, server_name=SERVER_NAME),
                                node=Node(id=str(node)), type_urls=ZTUNNEL_TYPES,
                                handler=self._handle)

    def _handle(self, delta: Any) -> None:
        from meshcore.wds.store import ResourceUpdate

        arrived = time.monotonic()
        self.store.apply(delta.type_url, [ResourceUpdate(r.name, r.value) for r in delta.resources],
                         delta.removed)
        done = time.monotonic()
        versions = self.versions[delta.type_url]
        for r in delta.resources:
            versions[r.name] = r.version
            self.received[r.name] = arrived
            self.applied[r.name] = done
        for name in delta.removed:
            versions.pop(name, None)
        if self.synced_at is None and all(
                len(self.versions[t]) >= n for t, n in self.expected.items()):
            self.synced_at = done
        self.progress.set()


def expected_counts(manifests: pathlib.Path) -> dict[str, int]:
    """How many resources of each type istiod-lite should serve for this folder (translated
    here with the same code), and a check that the manifests are clean."""
    from istiod_lite.translate import MeshConfig, translate
    from meshcore.model.folder import scan_folder

    state = scan_folder(str(manifests), None)
    if state.diagnostics:
        raise RuntimeError(f"generated manifests have problems: {state.diagnostics[:3]}")
    resources = translate(state.model, MeshConfig())
    if resources.statuses:
        raise RuntimeError(f"generated manifests translate with statuses: "
                           f"{resources.statuses[:3]}")
    from meshcore.xds.types import ZTUNNEL_TYPES

    return {t: len(resources.by_type_url[t]) for t in ZTUNNEL_TYPES}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextlib.contextmanager
def _istiod(workdir: pathlib.Path, manifests: pathlib.Path) -> Iterator[tuple[Any, dict]]:
    ports = {"grpc": _free_port(), "ready": _free_port()}
    log = open(workdir / "istiod.log", "w")  # noqa: SIM115 (closed in finally)
    argv = [sys.executable, "-m", "bench.controlplane_section", "istiod",
            "--manifests", str(manifests), "--ca-dir", str(workdir / "ca"),
            "--listen", f"127.0.0.1:{ports['grpc']}", "--ip", "127.0.0.1",
            "--root-cert-out", str(workdir / "root.pem"),
            "--ready", f"127.0.0.1:{ports['ready']}"]
    repo = pathlib.Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=repo)
    try:
        yield proc, ports
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"pid {pid} has no VmRSS")


async def _wait(progress: asyncio.Event, done: Any, limit: float, what: str) -> None:
    try:
        async with asyncio.timeout(limit):
            while not done():
                progress.clear()
                await progress.wait()
    except TimeoutError:
        raise RuntimeError(f"timed out after {limit:.0f} s waiting for {what}") from None


def breakdown(scale: Scale, root: pathlib.Path, edits: int) -> list[dict[str, float]]:
    """Where istiod's time per edit goes, in this process: after each pod-label edit, the
    incremental folder scan, `translate()` of the whole model, and `set_all_resources` on an
    `XdsServer` without clients (diff, versions, serialization). Milliseconds per edit."""
    from istiod_lite.translate import MeshConfig, translate
    from istiod_lite.xds import XdsServer
    from meshcore.model.folder import scan_folder

    folder = generate(scale)
    write_folder(folder, root)
    state = scan_folder(str(root), None)
    server = XdsServer()
    server.set_all_resources(translate(state.model, MeshConfig()).by_type_url)
    rows = []
    for step in range(edits):
        change = bump_pod_version(folder, step, scale)
        write_file(root / change.path, render(folder[change.path]))
        t0 = time.perf_counter()
        state = scan_folder(str(root), state)
        t1 = time.perf_counter()
        resources = translate(state.model, MeshConfig())
        t2 = time.perf_counter()
        server.set_all_resources(resources.by_type_url)
        t3 = time.perf_counter()
        rows.append({"scan_ms": (t1 - t0) * 1e3, "translate_ms": (t2 - t1) * 1e3,
                     "set_all_ms": (t3 - t2) * 1e3})
    server.close()
    return rows


async def _measure(settings: Settings, workdir: pathlib.Path) -> dict[str, Any]:
    folder = generate(settings.scale)
    manifests = workdir / "manifests"
    write_folder(folder, manifests)
    expected = expected_counts(manifests)
    out: dict[str, Any] = {"expected": expected, "steps": [], "breakdown": breakdown(
        settings.scale, workdir / "breakdown", max(3, settings.changes // 2))}
    with _istiod(workdir, manifests) as (proc, ports):
        started = time.monotonic()
        while not await asyncio.to_thread(_ready, ports["ready"]):
            if proc.poll() is not None:
                raise RuntimeError(f"istiod-lite exited ({proc.returncode}): "
                                   f"{(workdir / 'istiod.log').read_text()[-2000:]}")
            if time.monotonic() - started > settings.timeout:
                raise RuntimeError("istiod-lite not ready in time")
            await asyncio.sleep(0.02)
        out["ready_s"] = time.monotonic() - started
        tls = ssl.create_default_context(cafile=str(workdir / "root.pem"))
        tls.set_alpn_protocols(["h2"])
        progress = asyncio.Event()
        clients = [BenchClient(i, ports["grpc"], tls, expected, progress)
                   for i in range(settings.clients)]
        cpu0 = cpu_seconds(proc.pid)
        t0 = time.monotonic()
        tasks = [asyncio.create_task(c.client.run()) for c in clients]
        try:
            await _wait(progress, lambda: all(c.synced_at for c in clients), settings.timeout,
                        "the initial push")
            out["initial_ms"] = (max(c.synced_at or 0 for c in clients) - t0) * 1000
            out["initial_per_client_ms"] = sorted(((c.synced_at or 0) - t0) * 1000
                                                  for c in clients)
            out["cpu_initial_ms"] = (cpu_seconds(proc.pid) - cpu0) * 1e3
            out["rss_after_initial"] = _rss_bytes(proc.pid)
            cpu0 = cpu_seconds(proc.pid)
            await asyncio.sleep(settings.idle)
            out["idle_cpu_pct"] = (cpu_seconds(proc.pid) - cpu0) / settings.idle * 100
            for step in range(settings.changes):
                for edit in (bump_pod_version, toggle_policy_port):
                    out["steps"].append(await _one_change(
                        settings, workdir, manifests, folder, edit(folder, step, settings.scale),
                        proc.pid, clients, progress))
            out["hwm"] = peak_rss_bytes(proc.pid)
            out["client_stats"] = [dataclasses.asdict(c.client.statistics()) for c in clients]
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    out["istiod_log_tail"] = (workdir / "istiod.log").read_text()[-3000:]
    return out


async def _one_change(settings: Settings, workdir: pathlib.Path, manifests: pathlib.Path,
                      folder: Folder, change: Change, pid: int, clients: list[BenchClient],
                      progress: asyncio.Event) -> dict[str, Any]:
    old = [c.versions[change.type_url].get(change.resource) for c in clients]
    if None in old:
        raise RuntimeError(f"{change.resource} is not on every client before the edit")
    cpu0 = cpu_seconds(pid)
    write_file(manifests / change.path, render(folder[change.path]))
    written = time.monotonic()
    await _wait(progress, lambda: all(
        c.versions[change.type_url].get(change.resource) not in (None, v)
        for c, v in zip(clients, old, strict=True)), settings.timeout,
        f"every client to get the new {change.resource}")
    cpu = cpu_seconds(pid) - cpu0
    applied = max(c.applied[change.resource] for c in clients)
    received = max(c.received[change.resource] for c in clients)
    seen = first_after(snapshot_times((workdir / "istiod.log").read_text()), written)
    row = {"kind": change.kind, "resource": change.resource, "write_ms": (applied - written) * 1e3,
           "cpu_ms": cpu * 1e3}
    if seen is not None and seen <= applied:
        row.update(poll_ms=(seen - written) * 1e3, detect_ms=(applied - seen) * 1e3,
                   recv_ms=(received - seen) * 1e3)
    return row


def summarize(raw: Mapping[str, Any]) -> dict[str, float]:
    """Summary figures (ms, MiB, %) from one `_measure` result."""
    steps = raw["steps"]

    def col(key: str) -> list[float]:
        return [s[key] for s in steps if key in s]

    out = {"ready": raw["ready_s"], "initial": raw["initial_ms"],
           "cpu_idle": raw["idle_cpu_pct"], "rss": raw["rss_after_initial"] / MIB,
           "hwm": raw["hwm"] / MIB, "cpu_initial": raw["cpu_initial_ms"]}
    for key in ("scan", "translate", "set_all"):
        out[key] = statistics.median(row[f"{key}_ms"] for row in raw["breakdown"])
    if steps:
        out.update(write_p50=percentile(col("write_ms"), 50),
                   write_p95=percentile(col("write_ms"), 95),
                   cpu_change=statistics.median(col("cpu_ms")))
    if col("detect_ms"):
        out.update(detect_p50=percentile(col("detect_ms"), 50),
                   detect_p95=percentile(col("detect_ms"), 95),
                   recv_p50=percentile(col("recv_ms"), 50),
                   poll_p50=percentile(col("poll_ms"), 50))
    return out


async def _measure_inproc(settings: Settings, workdir: pathlib.Path) -> dict[str, Any]:
    """The push alone: an `XdsServer` on a TLS gRPC port in this process, the same clients;
    each edit is scanned and translated first (untimed), then timed from `set_all_resources`
    to every client having applied it, and to the server holding every ACK (`wait_settled`).
    Server and clients share this process: their CPU competes (upper bound)."""
    from istiod_lite.ca.authority import CertificateAuthority
    from istiod_lite.ca.roots import load_or_create_root
    from istiod_lite.ca.server import serve_grpc
    from istiod_lite.translate import MeshConfig, translate
    from istiod_lite.xds import XdsServer
    from meshcore.model.folder import scan_folder
    from meshcore.xds.types import ZTUNNEL_TYPES

    folder = generate(settings.scale)
    manifests = workdir / "manifests"
    write_folder(folder, manifests)
    state = scan_folder(str(manifests), None)
    xds = XdsServer()
    xds.set_all_resources(translate(state.model, MeshConfig()).by_type_url)
    root = load_or_create_root(workdir / "ca", trust_domain="cluster.local")
    authority = CertificateAuthority(root, trust_domain="cluster.local")
    grpc = await serve_grpc([xds], authority, host="127.0.0.1", port=0,
                            ip_addresses=["127.0.0.1"])
    (workdir / "root.pem").write_text(authority.root_pem)
    tls = ssl.create_default_context(cafile=str(workdir / "root.pem"))
    tls.set_alpn_protocols(["h2"])
    progress = asyncio.Event()
    expected = {t: len(xds.cache.resources(t)) for t in ZTUNNEL_TYPES}
    clients = [BenchClient(i, grpc.port, tls, expected, progress)
               for i in range(settings.clients)]
    out: dict[str, Any] = {"expected": expected, "steps": []}
    t0 = time.monotonic()
    tasks = [asyncio.create_task(c.client.run()) for c in clients]
    try:
        await _wait(progress, lambda: all(c.synced_at for c in clients), settings.timeout,
                    "the initial push")
        out["initial_ms"] = (max(c.synced_at or 0 for c in clients) - t0) * 1000
        await xds.wait_settled(clients=settings.clients, type_urls=ZTUNNEL_TYPES)
        for step in range(settings.changes):
            for edit in (bump_pod_version, toggle_policy_port):
                change = edit(folder, step, settings.scale)
                write_file(manifests / change.path, render(folder[change.path]))
                state = scan_folder(str(manifests), state)
                resources = translate(state.model, MeshConfig()).by_type_url
                old = [c.versions[change.type_url][change.resource] for c in clients]
                start = time.monotonic()
                generation = xds.set_all_resources(resources)
                await _wait(progress, lambda change=change, old=old: all(
                    c.versions[change.type_url].get(change.resource) not in (None, v)
                    for c, v in zip(clients, old, strict=True)), settings.timeout,
                    f"every client to get the new {change.resource}")
                applied = max(c.applied[change.resource] for c in clients)
                received = max(c.received[change.resource] for c in clients)
                async with asyncio.timeout(settings.timeout):
                    await xds.wait_settled(generation)
                out["steps"].append({
                    "kind": change.kind, "resource": change.resource,
                    "push_ms": (applied - start) * 1e3, "recv_ms": (received - start) * 1e3,
                    "ack_ms": (time.monotonic() - start) * 1e3})
        out["server_stats"] = _jsonable(xds.statistics())
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        xds.close()
        grpc.close()
        await grpc.wait_closed()
    return out


def _jsonable(stats: Any) -> Any:
    return json.loads(json.dumps(dataclasses.asdict(stats), default=str))


def summarize_inproc(raw: Mapping[str, Any]) -> dict[str, float]:
    """Summary figures (ms) of the in-process case."""
    steps = raw["steps"]
    out = {"initial": raw["initial_ms"]}
    if steps:
        ack = [s["ack_ms"] for s in steps]
        out.update(push_p50=percentile([s["push_ms"] for s in steps], 50),
                   recv_p50=percentile([s["recv_ms"] for s in steps], 50),
                   ack_p50=percentile(ack, 50), ack_p95=percentile(ack, 95))
    return out


def run(cases: list[str], settings: Settings = Settings()) -> SectionResult:
    unknown = [c for c in cases if c not in RUNNABLE]
    if unknown:
        raise ValueError(f"controlplane: unknown cases {unknown}; known: {list(RUNNABLE)}")
    s = settings.scale
    result = SectionResult(
        name="controlplane",
        title=f"Control plane: {s.pods} pods / {s.services} services / {s.policies} policies, "
              f"{settings.clients} Delta xDS clients over TLS",
        metrics=METRICS, cases={c: CASES[c] for c in (*cases, "goal")}, references=["goal"],
        settings={"clients": settings.clients, "edits": 2 * settings.changes,
                  "nodes": s.nodes, "namespaces": s.namespaces},
        summary={"goal": dict(GOALS)})
    for case in cases:
        measure = _measure if case == "istiod" else _measure_inproc
        with tempfile.TemporaryDirectory(prefix="bench-cp-") as tmp:
            try:
                raw = asyncio.run(measure(settings, pathlib.Path(tmp)))
            except (RuntimeError, OSError) as exc:
                result.failed[case] = str(exc)
                continue
        result.raw[case] = [raw]
        result.summary[case] = summarize(raw) if case == "istiod" else summarize_inproc(raw)
    return result


def _istiod_main(argv: list[str]) -> int:
    """`python -m istiod_lite ARGV`, its folder source stamping each new snapshot on stderr."""
    import istiod_lite.app as app
    from istiod_lite.__main__ import main
    from istiod_lite.config import ManifestFolderSource

    class TimedFolderSource(ManifestFolderSource):
        async def watch(self):  # type: ignore[no-untyped-def,override]
            async for snapshot in super().watch():
                print(f"{SNAPSHOT_MARK} {time.monotonic():.6f}", file=sys.stderr, flush=True)
                yield snapshot

    app.ManifestFolderSource = TimedFolderSource  # type: ignore[misc]
    return main(argv)


if __name__ == "__main__":
    if sys.argv[1:2] != ["istiod"]:
        sys.exit("usage: python -m bench.controlplane_section istiod ISTIOD-LITE-ARGS")
    sys.exit(_istiod_main(sys.argv[2:]))
