"""Helpers of the namespace e2e suite on top of `ambientctl.sandbox.checks`.

Who calls it: the e2e tests (`e2e/test_*.py`) and their fixture (`e2e/conftest.py`). The probes
and waits shared with the demo (traffic from a pod, `/config_dump`, `/metrics`, "converged")
live in `ambientctl.sandbox.checks` and are re-exported here; this module adds what only tests
need: starting a sandbox from manifest sets, changing the folder for one test and restoring it,
observing nftables tables, and an AF_PACKET capture on a node's underlay link
(`tests/support/capture.py`).

Invariants: `applied` always restores the folder and waits for the data path to follow, also
when the test body fails; nothing sleeps a fixed time to wait for readiness.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ambientctl.sandbox import Sandbox
from ambientctl.sandbox.checks import (
    Exchange,
    Sample,
    TrafficError,
    config_dump,
    http_json,
    poll_until,
    redirection,
    scrape,
    series,
    tcp_exchange,
    total,
    wait_converged,
    wait_redirection,
)
from tests.support.capture import PacketCapture
from tests.support.netns import Netns

__all__ = ["MANIFESTS", "Exchange", "Sample", "TrafficError", "applied", "config_dump",
           "enrolled_namespace", "http_json", "nft_tables", "poll_until", "redirection", "scrape",
           "series", "start",
           "tcp_exchange", "total", "uplink_capture", "wait_converged", "wait_redirection"]

MANIFESTS = Path(__file__).parent / "manifests"


def start(name: str, state_root: Path, folder: Path, sets: tuple[str, ...], *,
          nodes: int = 2) -> tuple[Sandbox, float]:
    """Copy the manifest sets into `folder` (later sets override files) and bring a sandbox
    up on it; `down` at once if `up` fails."""
    for s in sets:
        shutil.copytree(MANIFESTS / s, folder, dirs_exist_ok=True)
    sb = Sandbox(name, state_root=state_root)
    try:
        took = sb.up(nodes=nodes, manifests=folder, timeout=90)
    except BaseException:
        sb.down()
        raise
    return sb, took


@contextlib.contextmanager
def applied(sb: Sandbox, filename: str, text: str) -> Iterator[None]:
    """Put `text` into the folder as `filename` (like `ambientctl sandbox apply`), wait until the
    data path has it; afterwards restore the previous file (or remove it) and wait again."""
    target = sb.manifests / filename
    previous = target.read_text() if target.exists() else None
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / filename
        src.write_text(text)
        try:
            sb.apply(src)
            wait_converged(sb)
            yield
        finally:
            if previous is None:
                target.unlink(missing_ok=True)
            else:
                target.write_text(previous)
            wait_converged(sb)


def enrolled_namespace(name: str, mode: str = "ambient") -> str:
    return (f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n"
            f"  labels: {{istio.io/dataplane-mode: {mode}}}\n")


def nft_tables(sb: Sandbox, pod: str) -> str:
    """`nft list tables` inside the pod's netns (observation only)."""
    out = subprocess.run(["ip", "netns", "exec", sb.pod_netns(pod), "nft", "list", "tables"],
                         capture_output=True, text=True, timeout=10, check=True)
    return out.stdout


def uplink_capture(sb: Sandbox, node: str, hosts: tuple[str, str]) -> PacketCapture:
    """A capture on the node's underlay interface (what crosses the wire between nodes)."""
    return PacketCapture("eth0", netns=Netns(sb.node_netns(node)), hosts=hosts)
