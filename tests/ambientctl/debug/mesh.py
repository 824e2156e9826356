"""A small manifest folder for the debugging-command tests, plus extra manifests per case, and a
`Nodes` resolver standing in for the sandbox's (node-a at a loopback port, shop/client on it).

Namespaces `shop` and `ops` are ambient, `legacy` is not. Pods carry what the node agent and the
sandbox would write (pod IP, Ready, `ambient.istio.io/redirection: enabled` when captured).
shop/web-1 and web-2 back Service shop/web (VIP 10.96.0.10, port 80 -> named port http = 8080).
"""

from __future__ import annotations

from pathlib import Path

from ambientctl.debug.errors import DebugError

NAMESPACES = """
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: ops, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: legacy}
---
apiVersion: v1
kind: Namespace
metadata: {name: istio-system}
"""

SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, targetPort: http}]
"""


def pod(namespace: str, name: str, ip: str, *, sa: str = "default", app: str = "",
        captured: bool = True, node: str = "node-a", port: int = 8080,
        extra_labels: str = "") -> str:
    labels = f"app: {app}, " if app else ""
    annotations = "annotations: {ambient.istio.io/redirection: enabled}" if captured else ""
    return f"""
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {namespace}
  labels: {{{labels}{extra_labels}}}
  {annotations}
spec:
  nodeName: {node}
  serviceAccountName: {sa}
  containers: [{{name: main, ports: [{{name: http, containerPort: {port}}}]}}]
status:
  podIP: {ip}
  phase: Running
  conditions: [{{type: Ready, status: "True"}}]
"""


PODS = "---".join([
    pod("shop", "web-1", "10.1.0.10", sa="web", app="web"),
    pod("shop", "web-2", "10.1.0.11", sa="web", app="web", node="node-b"),
    pod("shop", "client", "10.1.0.20", sa="client", app="client"),
    pod("ops", "tool", "10.2.0.5", sa="tool", app="tool"),
    pod("legacy", "old", "10.3.0.5", sa="old", app="old", captured=False),
])


def make_folder(root: Path, *extra: str) -> str:
    """Write the base mesh and `extra` manifests (one file each) under `root`; return its path."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "namespaces.yaml").write_text(NAMESPACES)
    (root / "service.yaml").write_text(SERVICE)
    (root / "pods.yaml").write_text(PODS)
    for i, text in enumerate(extra):
        (root / f"extra-{i}.yaml").write_text(text)
    return str(root)


class Nodes:
    """A `Resolver` for tests: node-a is the admin endpoint at 127.0.0.1:`port`; only pod
    shop/client has a known node (node-a)."""

    def __init__(self, port: int) -> None:
        self.port = port

    def admin_address(self, node: str) -> tuple[str, int]:
        if node != "node-a":
            raise DebugError(f"no node {node!r} in the sandbox (nodes: node-a)")
        return "127.0.0.1", self.port

    def node_of(self, pod: str) -> str:
        if pod != "shop/client":
            raise DebugError(f"pod {pod!r} is not in the sandbox")
        return "node-a"
