"""The CNI benchmark (issue 4): wall time of `ambient-cni` ADD / DEL including the agent round trip.

Who calls it: `bench.sections` (section "cni"); it returns a `SectionResult` that `bench.report`
prints and writes as JSON. `tests/cni_plugin/bench_add.py` is the colleague's original script
(same measurement with the in-process agent server; kept for its users).

Topology (made and removed here, root): a "node" netns and a "pod" netns joined by a veth pair
(`tests.cni_plugin.netns_topology`, pod 10.77.0.2/24). The plugin is the installed `ambient-cni`
console script, executed as a runtime does: CNI_* in the environment, the network config (with
a `prevResult` naming the pod's IP) on stdin, stdout parsed. Each round is ADD (installs the
rules in the pod netns), ADD again (rules already in place: dump and compare) and DEL (removes
them); each figure is process start to exit, measured here.

Cases:
- `agent`: the node agent as deployed, its own process (`ambient-cni agent --no-zds`, manifest
  folder listing the pod on this node in an ambient namespace): ADD goes through the reconciler
  (the pod must be in the config model), installs the rules and writes the pod's status
  overlay. No ztunnel (`--no-zds`), so ADD does not wait for a ZDS ack: that hand-off is not in
  these figures.
- `server`: the agent's plugin-facing server alone (`serve_agent(Agent())`, enroll-all policy)
  on a thread of this process, as in the colleague's script.
- `plugin`: the executable without an agent: interpreter start (`python -c pass` with the same
  venv), `CNI_COMMAND=VERSION` (start, import, answer, exit) and `-X importtime` of the
  plugin's module (cumulative).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from bench.report import Metric, SectionResult

METRICS = [
    Metric("add_p50", "ADD that installs the rules, p50", "ms"),
    Metric("add_p90", "ADD that installs the rules, p90", "ms"),
    Metric("add_again_p50", "ADD with the rules already in place, p50", "ms"),
    Metric("del_p50", "DEL, p50", "ms"),
    Metric("del_p90", "DEL, p90", "ms"),
    Metric("version_p50", "VERSION (start, import, answer, exit), p50", "ms"),
    Metric("python_p50", "bare interpreter start (python -c pass), p50", "ms"),
    Metric("import_ms", "import cni_plugin.__main__ (-X importtime, cumulative)", "ms"),
]
CASES = {"agent": "agent process", "server": "agent server in-process", "plugin": "plugin alone",
         "goal": "goal (issue 4)"}
RUNNABLE = ("agent", "server", "plugin")
GOALS = {"add_p50": 150.0, "add_p90": 150.0}
NODE = "bench-node"
POD_NS, POD_NAME, POD_UID = "bench", "pod-0", "0b0e0c0d-0000-4000-8000-000000000001"
COMMANDS = ("ADD", "ADD again", "DEL")


@dataclasses.dataclass(frozen=True)
class Settings:
    rounds: int = 20
    timeout: float = 30.0


class CniBenchError(Exception):
    """The plugin or the agent failed; the message carries its output."""


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def summarize(times: dict[str, list[float]]) -> dict[str, float]:
    """Summary figures (ms) from per-command wall times {"ADD": [...], "ADD again": [...], ...}."""
    out: dict[str, float] = {}
    for command, prefix in (("ADD", "add"), ("ADD again", "add_again"), ("DEL", "del")):
        values = times.get(command, [])
        if values:
            out[f"{prefix}_p50"] = statistics.median(values)
            out[f"{prefix}_p90"] = percentile(values, 90)
    return out


def importtime_ms(stderr: str, module: str) -> float:
    """The cumulative import time of `module` from `python -X importtime` output, in ms."""
    for line in stderr.splitlines():
        m = re.match(r"import time:\s+\d+\s+\|\s+(\d+)\s+\|\s*(\S+)\s*$", line)
        if m and m.group(2) == module:
            return int(m.group(1)) / 1000
    raise ValueError(f"no importtime line for {module}")


def plugin_config(agent_socket: str, log_file: str, pod_ip: str, gateway: str) -> bytes:
    prev = {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0"}],
            "ips": [{"address": f"{pod_ip}/24", "gateway": gateway, "interface": 0}]}
    return json.dumps({"cniVersion": "1.0.0", "name": "bench", "type": "ambient-cni",
                       "agentSocket": agent_socket, "logFile": log_file,
                       "prevResult": prev}).encode()


def pod_manifest(pod_ip: str) -> str:
    """The agent's config source: an ambient namespace and the pod, scheduled on NODE."""
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": POD_NS, "labels": {"istio.io/dataplane-mode": "ambient"}}},
        {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": POD_NAME, "namespace": POD_NS, "uid": POD_UID},
         "spec": {"nodeName": NODE, "containers": [{"name": "app", "image": "app:1"}]},
         "status": {"phase": "Running", "podIP": pod_ip, "podIPs": [{"ip": pod_ip}]}}]})


def _time_plugin(plugin: str, command: str, conf: bytes, env: dict[str, str],
                 timeout: float) -> float:
    start = time.perf_counter()
    proc = subprocess.run([plugin], input=conf, capture_output=True, timeout=timeout,
                          env={**env, "CNI_COMMAND": command})
    elapsed = (time.perf_counter() - start) * 1000
    if proc.returncode != 0:
        raise CniBenchError(f"ambient-cni {command} exited {proc.returncode}: "
                            f"{proc.stdout.decode(errors='replace')} "
                            f"{proc.stderr.decode(errors='replace')}")
    return elapsed


def _wait_socket(path: str, alive: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.connect(path)
                return
            except OSError:
                pass
        if not alive():
            raise CniBenchError(f"the agent exited before listening on {path}")
        if time.monotonic() > deadline:
            raise CniBenchError(f"the agent is not listening on {path} after {timeout:.0f} s")
        time.sleep(0.02)


@contextlib.contextmanager
def _agent_process(directory: str, sock: str, pod_ip: str, timeout: float) -> Iterator[None]:
    manifests = os.path.join(directory, "manifests")
    os.makedirs(manifests)
    pathlib.Path(manifests, "pod.yaml").write_text(pod_manifest(pod_ip))
    log_path = os.path.join(directory, "agent.log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [_plugin_path(), "agent", "--node", NODE, "--manifests", manifests,
             "--agent-socket", sock, "--no-zds", "--log-level", "warning"],
            stdout=log, stderr=subprocess.STDOUT)
    try:
        try:
            _wait_socket(sock, lambda: proc.poll() is None, timeout)
        except CniBenchError as exc:
            raise CniBenchError(f"{exc}: {pathlib.Path(log_path).read_text()[-2000:]}") from exc
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def _agent_server(directory: str, sock: str, pod_ip: str, timeout: float) -> Iterator[None]:
    import trio

    from cni_plugin.agent.server import Agent, serve_agent

    ready = threading.Event()
    token: list[trio.lowlevel.TrioToken] = []
    cancel = trio.CancelScope()

    async def agent() -> None:
        with cancel:
            async with trio.open_nursery() as nursery:
                await nursery.start(serve_agent, sock, Agent())
                token.append(trio.lowlevel.current_trio_token())
                ready.set()

    thread = threading.Thread(target=trio.run, args=(agent,), daemon=True)
    thread.start()
    if not ready.wait(timeout):
        raise CniBenchError("the in-process agent server did not start")
    try:
        yield
    finally:
        trio.from_thread.run_sync(cancel.cancel, trio_token=token[0])
        thread.join(timeout)


def _plugin_path() -> str:
    from tests.cni_plugin.cni_runner import find_plugin

    return find_plugin("ambient-cni")


def _measure_agent(case: str, settings: Settings) -> dict[str, Any]:
    from tests.cni_plugin.netns_topology import (
        NODE_IP,
        POD_IP,
        destroy_topology,
        make_topology,
        observe_nft,
    )

    topo = make_topology(f"bench-{case}")
    directory = tempfile.mkdtemp(prefix="bench-cni-")
    sock = os.path.join(directory, "agent.sock")
    plugin_log = os.path.join(directory, "plugin.log")
    conf = plugin_config(sock, plugin_log, POD_IP, NODE_IP)
    env = {"CNI_CONTAINERID": "bench", "CNI_NETNS": topo.pod_path, "CNI_IFNAME": "eth0",
           "CNI_ARGS": f"K8S_POD_NAME={POD_NAME};K8S_POD_NAMESPACE={POD_NS};"
                       f"K8S_POD_UID={POD_UID}",
           "CNI_PATH": "/usr/lib/cni", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    start = _agent_process if case == "agent" else _agent_server
    times: dict[str, list[float]] = {c: [] for c in COMMANDS}
    try:
        with start(directory, sock, POD_IP, settings.timeout):
            plugin = _plugin_path()
            for _ in range(settings.rounds):
                for key in COMMANDS:
                    times[key].append(_time_plugin(plugin, key.split()[0], conf, env,
                                                   settings.timeout))
                    # Not timed: the ADD really installed the rules, the DEL removed them.
                    installed = "istio-ambient-nat" in observe_nft(topo.pod)
                    if installed != key.startswith("ADD"):
                        raise CniBenchError(f"after {key} the pod netns rules are "
                                            f"{'present' if installed else 'missing'}")
        log_tail = pathlib.Path(plugin_log).read_text()[-1500:] \
            if os.path.exists(plugin_log) else ""
    finally:
        destroy_topology(topo)
        shutil.rmtree(directory, ignore_errors=True)
    return {"times_ms": times, "plugin_log_tail": log_tail}


def _measure_plugin(settings: Settings) -> dict[str, Any]:
    plugin = _plugin_path()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CNI_PATH": "/usr/lib/cni"}
    conf = json.dumps({"cniVersion": "1.0.0", "name": "bench", "type": "ambient-cni"}).encode()
    version = [_time_plugin(plugin, "VERSION", conf, env, settings.timeout)
               for _ in range(settings.rounds)]
    bare = []
    for _ in range(settings.rounds):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True, timeout=settings.timeout)
        bare.append((time.perf_counter() - t0) * 1000)
    imports = []
    for _ in range(5):
        proc = subprocess.run([sys.executable, "-X", "importtime", "-c",
                               "import cni_plugin.__main__"], capture_output=True, text=True,
                              check=True, timeout=settings.timeout)
        imports.append(importtime_ms(proc.stderr, "cni_plugin.__main__"))
    return {"version_ms": version, "python_ms": bare, "import_ms": imports}


def run(cases: list[str], settings: Settings = Settings()) -> SectionResult:
    unknown = [c for c in cases if c not in RUNNABLE]
    if unknown:
        raise ValueError(f"cni: unknown cases {unknown}; known: {list(RUNNABLE)}")
    result = SectionResult(
        name="cni", title="CNI: ambient-cni executed like a runtime, into a real pod netns",
        metrics=METRICS, cases={c: CASES[c] for c in (*cases, "goal")}, references=["goal"],
        settings={"rounds": settings.rounds}, summary={"goal": dict(GOALS)})
    for case in cases:
        try:
            if case == "plugin":
                raw = _measure_plugin(settings)
                result.summary[case] = {
                    "version_p50": statistics.median(raw["version_ms"]),
                    "python_p50": statistics.median(raw["python_ms"]),
                    "import_ms": statistics.median(raw["import_ms"])}
            else:
                raw = _measure_agent(case, settings)
                result.summary[case] = summarize(raw["times_ms"])
        except (CniBenchError, OSError, subprocess.SubprocessError) as exc:
            result.failed[case] = str(exc)
            continue
        result.raw[case] = [raw]
    return result
