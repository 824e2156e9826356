"""Readiness of each sandbox component, and waiting for it with a deadline.

Who calls it: `core.Sandbox.up`/`wait_ready` (through `wait_for`) and `report` (status). Each
check returns `(ready, reason)`; the reason is what `up` prints when the deadline passes:
- istiod: root certificate written and 172.30.0.1:15012 accepting (from the underlay netns);
- CNI agent: CNI `STATUS` through the real plugin executable succeeds (as a runtime asks);
- ztunnel: `GET /healthz/ready` on 127.0.0.1:15021 inside the node netns returns 200;
- app: every TCP port of the pod accepts a connection inside the pod netns.
`wait_for` fails at once when the component's process has exited, with its last log lines.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ambientctl.sandbox import cni, procs
from ambientctl.sandbox.errors import ComponentFailedError
from ambientctl.sandbox.pods import AppSpec
from ambientctl.sandbox.probes import http_get, tcp_open
from ambientctl.sandbox.topology import ISTIOD_IP, ISTIOD_PORT, NodePlan, PodPlan

if TYPE_CHECKING:
    from ambientctl.sandbox.core import Sandbox

Check = Callable[[], tuple[bool, str]]
POLL = 0.1


def istiod_ready(sb: Sandbox) -> tuple[bool, str]:
    if not sb.root_cert.exists():
        return False, f"root certificate {sb.root_cert} not written yet"
    if not tcp_open(sb.topology.underlay_netns, ISTIOD_IP, ISTIOD_PORT):
        return False, f"nothing listens on {ISTIOD_IP}:{ISTIOD_PORT}"
    return True, ""


def agent_ready(sb: Sandbox, node: NodePlan) -> tuple[bool, str]:
    try:
        cni.invoke(sb.cni_node(node), "STATUS", version="1.1.0", timeout=5)
    except cni.CniCallError as exc:
        return False, f"CNI STATUS: {exc.msg}"
    return True, ""


def ztunnel_ready(sb: Sandbox, node: NodePlan) -> tuple[bool, str]:
    got = http_get(node.netns, "127.0.0.1", 15021, "/healthz/ready")
    if got is None:
        return False, "readiness endpoint 127.0.0.1:15021 not answering"
    status, body = got
    return status == 200, f"/healthz/ready: {status} {body.strip()[:200]}"


def app_ready(pod: PodPlan, spec: AppSpec) -> tuple[bool, str]:
    for port in spec.ports:
        if not tcp_open(pod.netns, "127.0.0.1", port):
            return False, f"{spec.app} not listening on port {port}"
    return True, ""


def wait_for(sb: Sandbox, component: str, deadline: float, check: Check) -> None:
    """Poll `check` until ready; ComponentFailedError if the process dies or time runs out."""
    while True:
        if procs.alive(sb.state, component) is None:
            raise ComponentFailedError(component, "the process exited",
                                       procs.tail(sb.state.log_file(component)))
        ok, reason = check()
        if ok:
            return
        if time.monotonic() > deadline:
            raise ComponentFailedError(component, f"not ready by the deadline ({reason})",
                                       procs.tail(sb.state.log_file(component)))
        time.sleep(POLL)
