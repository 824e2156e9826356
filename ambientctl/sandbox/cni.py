"""Calling the CNI plugin chain for a pod exactly as a container runtime does.

Who calls it: `ambientctl.sandbox.core` after it has played the *primary* plugin itself (veth,
addresses, routes). This module then executes the chained `ambient-cni` executable, found by its
`type` on `CNI_PATH`, with the runtime's environment (CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS,
CNI_IFNAME, CNI_ARGS with K8S_POD_*, CNI_PATH) and the network config on stdin, carrying a
`prevResult` that describes what the primary plugin made. Result or spec error object is read
from stdout (exit status 0 / non-zero), as libcni does.

Invariants: the stdin config is the one `conflist()` builds for the node; commands are never
retried here (the caller decides); the plugin's stderr is kept for error messages.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from typing import Any

from ambientctl.sandbox.errors import SandboxError
from ambientctl.sandbox.topology import PodPlan

CNI_VERSION = "1.0.0"
PLUGIN_TYPE = "ambient-cni"


class CniCallError(SandboxError):
    """The plugin returned a CNI error object (or garbage); carries code/msg/details."""

    def __init__(self, command: str, pod: str, code: int, msg: str, details: str = "") -> None:
        self.command, self.pod, self.code, self.msg, self.details = command, pod, code, msg, details
        super().__init__(f"CNI {command} for pod {pod} failed with code {code}: {msg}"
                         + (f" ({details})" if details else ""))


@dataclasses.dataclass(frozen=True)
class CniNode:
    """The per-node CNI settings (what a node's /etc/cni/net.d conflist would hold)."""

    agent_socket: str
    log_file: str
    cni_path: str = dataclasses.field(default_factory=lambda: os.path.dirname(sys.executable))

    def plugin_config(self, prev_result: dict[str, Any] | None,
                      version: str = CNI_VERSION) -> dict[str, Any]:
        config: dict[str, Any] = {
            "cniVersion": version, "name": "ambient-sandbox", "type": PLUGIN_TYPE,
            "agentSocket": self.agent_socket, "logFile": self.log_file, "logLevel": "info",
            "agentTimeoutSeconds": 10,
        }
        if prev_result is not None:
            config["prevResult"] = prev_result
        return config


def prev_result(pod: PodPlan, gateway: str, netns_path: str) -> dict[str, Any]:
    """What the primary plugin (the sandbox itself) reports for the pod's interface."""
    return {
        "cniVersion": CNI_VERSION,
        "interfaces": [{"name": pod.host_veth}, {"name": pod.ifname, "sandbox": netns_path}],
        "ips": [{"address": f"{pod.ip}/32", "gateway": gateway, "interface": 1}],
        "routes": [{"dst": "0.0.0.0/0", "gw": gateway}],
        "dns": {},
    }


def container_id(sandbox: str, pod: PodPlan) -> str:
    return f"amb-{sandbox}-{pod.namespace}-{pod.name}"


def invoke(node: CniNode, command: str, *, pod: PodPlan | None = None, sandbox: str = "",
           netns_path: str = "", uid: str = "", prev: dict[str, Any] | None = None,
           version: str = CNI_VERSION, timeout: float = 30.0) -> dict[str, Any]:
    """Run one CNI command; the parsed stdout on success, CniCallError otherwise."""
    plugin = shutil.which(PLUGIN_TYPE, path=node.cni_path)
    what = pod.key if pod else "-"
    if plugin is None:
        raise CniCallError(command, what, 5, f"plugin {PLUGIN_TYPE!r} not found on CNI_PATH "
                           f"{node.cni_path}", "is ambient-py installed in this environment?")
    env = {"CNI_COMMAND": command, "CNI_PATH": node.cni_path,
           "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if pod is not None:
        args = [("IgnoreUnknown", "1"), ("K8S_POD_NAMESPACE", pod.namespace),
                ("K8S_POD_NAME", pod.name),
                ("K8S_POD_INFRA_CONTAINER_ID", container_id(sandbox, pod))]
        if uid:
            args.append(("K8S_POD_UID", uid))
        env.update({"CNI_CONTAINERID": container_id(sandbox, pod), "CNI_NETNS": netns_path,
                    "CNI_IFNAME": pod.ifname, "CNI_ARGS": ";".join(f"{k}={v}" for k, v in args)})
    stdin = b"" if command == "VERSION" else json.dumps(node.plugin_config(prev, version)).encode()
    try:
        proc = subprocess.run([plugin], input=stdin, env=env, capture_output=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise CniCallError(command, what, 5, f"the plugin did not answer within {timeout:.0f}s",
                           "is the node agent stuck? see its log") from exc
    out = proc.stdout.decode(errors="replace").strip()
    try:
        result = json.loads(out) if out else {}
    except json.JSONDecodeError:
        result = None
    if proc.returncode != 0 or not isinstance(result, dict):
        if isinstance(result, dict) and "code" in result:
            raise CniCallError(command, what, int(result.get("code", 0)),
                               str(result.get("msg", "")), str(result.get("details", "")))
        raise CniCallError(command, what, 999, f"exit status {proc.returncode}, stdout {out!r}",
                           proc.stderr.decode(errors="replace").strip()[-500:])
    return result
