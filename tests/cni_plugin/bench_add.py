"""Benchmark (not a test): wall time of `ambient-cni` ADD/ADD/DEL against a real agent, as root.

Run: `/work/venv/bin/python -m tests.cni_plugin.bench_add [rounds]`. Builds a node/pod netns pair,
serves the agent on a thread, execs the console script like a runtime and prints medians. The
plugin log line of each call also records its in-process time.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import trio

from cni_plugin.agent.server import Agent, serve_agent
from tests.cni_plugin.cni_runner import find_plugin
from tests.cni_plugin.netns_topology import NODE_IP, POD_IP, destroy_topology, make_topology


def main(rounds: int) -> None:
    topo = make_topology("bench")
    directory = tempfile.mkdtemp(prefix="acni-")
    sock = os.path.join(directory, "agent.sock")
    ready = threading.Event()

    async def agent() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_agent, sock, Agent())
            ready.set()

    threading.Thread(target=trio.run, args=(agent,), daemon=True).start()
    ready.wait()
    prev = {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0"}],
            "ips": [{"address": f"{POD_IP}/24", "gateway": NODE_IP, "interface": 0}]}
    conf = json.dumps({"cniVersion": "1.0.0", "name": "bench", "type": "ambient-cni",
                       "agentSocket": sock, "logFile": os.path.join(directory, "log"),
                       "prevResult": prev}).encode()
    env = {"CNI_CONTAINERID": "c", "CNI_NETNS": topo.pod_path, "CNI_IFNAME": "eth0",
           "CNI_ARGS": "K8S_POD_NAME=a;K8S_POD_NAMESPACE=b;K8S_POD_UID=u",
           "CNI_PATH": "/usr/lib/cni"}
    times: dict[str, list[float]] = {"ADD (installs)": [], "ADD (already in place)": [],
                                     "DEL": []}
    plugin = find_plugin("ambient-cni")
    try:
        for _ in range(rounds):
            for command, key in zip(("ADD", "ADD", "DEL"), times, strict=True):
                start = time.perf_counter()
                proc = subprocess.run([plugin], input=conf, capture_output=True,
                                      env={**env, "CNI_COMMAND": command})
                times[key].append((time.perf_counter() - start) * 1000)
                assert proc.returncode == 0, proc.stdout
        for key, values in times.items():
            print(f"{key:24} median {statistics.median(values):6.1f} ms  "
                  f"min {min(values):6.1f}  max {max(values):6.1f}")
    finally:
        destroy_topology(topo)
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
