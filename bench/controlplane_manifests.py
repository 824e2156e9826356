"""The control-plane benchmark's mesh: a manifest folder generated from a size, and its edits.

`generate(Scale)` is a pure function from a size to a manifest folder (relative path -> YAML
documents): `Scale()` is 1000 pods over 20 nodes and 20 ambient namespaces, 10 Services per
namespace each selecting 5 pods, and 100 AuthorizationPolicies of mixed scope (5 mesh-wide in
the root namespace, per namespace one namespace-wide DENY and 3-4 selector-scoped ALLOWs with
principals, namespaces, ipBlocks and ports). One file per namespace and kind, like `kubectl get
-o yaml` dumps. Edits: `bump_pod_version` (pod label `version`, which is the workload's
canonical revision) and `toggle_policy_port` rewrite one file; `write_folder` / `write_file`
replace files atomically, as an editor or a kubectl dump would.

Who calls it: `bench.controlplane_section` (the measurements), the incremental-translation
equivalence test (`tests/istiod_lite/model/test_incremental.py`), `tests/bench`.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import yaml

Doc = dict[str, Any]
Folder = dict[str, list[Doc]]  # relative path -> documents

ROOT_NS = "istio-system"
CLUSTER = "Kubernetes"
REDIRECTION = "ambient.istio.io/redirection"
SNAPSHOT_MARK = "bench-snapshot"


@dataclasses.dataclass(frozen=True)
class Scale:
    pods: int = 1000
    nodes: int = 20
    namespaces: int = 20
    services: int = 200
    policies: int = 100
    mesh_wide_policies: int = 5

    def __post_init__(self) -> None:
        if self.pods % self.services or self.services % self.namespaces:
            raise ValueError(f"{self}: pods must split evenly over services, services over "
                             "namespaces")
        if self.nodes > 250 or self.pods // self.nodes > 250:
            raise ValueError(f"{self}: pod IPs are 10.244.<node>.<n>, both at most 250")


def namespace_name(i: int) -> str:
    return f"team-{i:02d}"


def _labels(app: str, version: str) -> dict[str, str]:
    return {"app": app, "version": version}


def generate(scale: Scale = Scale()) -> Folder:
    """A manifest folder of the given size (pure; deterministic)."""
    per_ns_services = scale.services // scale.namespaces
    pods_per_service = scale.pods // scale.services
    folder: Folder = {
        "cluster/namespaces.yaml": [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ROOT_NS}},
            *[{"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": namespace_name(n),
                            "labels": {"istio.io/dataplane-mode": "ambient"}}}
              for n in range(scale.namespaces)]],
        "cluster/nodes.yaml": [
            {"apiVersion": "v1", "kind": "Node",
             "metadata": {"name": f"node-{k}", "labels": {
                 "topology.kubernetes.io/region": "region-1",
                 "topology.kubernetes.io/zone": f"zone-{k % 3}"}}}
            for k in range(scale.nodes)],
    }
    pod_index = 0
    for n in range(scale.namespaces):
        ns = namespace_name(n)
        pods: list[Doc] = []
        services: list[Doc] = []
        for s in range(per_ns_services):
            app = f"svc-{s}"
            services.append({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": app, "namespace": ns},
                "spec": {"clusterIP": f"10.96.{n}.{s + 1}", "selector": {"app": app},
                         "ports": [{"name": "http", "port": 80, "targetPort": "http"},
                                   {"name": "tcp-admin", "port": 9090, "targetPort": 9090}]}})
            for p in range(pods_per_service):
                node, slot = pod_index % scale.nodes, pod_index // scale.nodes
                pod_index += 1
                pods.append({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": f"{app}-{p}", "namespace": ns,
                                 "labels": _labels(app, "v1"),
                                 "annotations": {REDIRECTION: "enabled"}},
                    "spec": {"nodeName": f"node-{node}", "serviceAccountName": app,
                             "containers": [{"name": "app", "image": "app:1", "ports": [
                                 {"name": "http", "containerPort": 8080},
                                 {"containerPort": 9090}]}]},
                    "status": {"phase": "Running", "podIP": f"10.244.{node}.{slot + 1}",
                               "podIPs": [{"ip": f"10.244.{node}.{slot + 1}"}],
                               "conditions": [{"type": "Ready", "status": "True"}]}})
        folder[f"{ns}/pods.yaml"] = pods
        folder[f"{ns}/services.yaml"] = services
    _add_policies(folder, scale)
    return folder


def _add_policies(folder: Folder, scale: Scale) -> None:
    per_ns_services = scale.services // scale.namespaces
    folder[f"{ROOT_NS}/policies.yaml"] = [
        _policy(ROOT_NS, f"mesh-{i}", None, "DENY" if i % 2 else "ALLOW",
                [{"from": [{"source": {"ipBlocks": [f"192.168.{i}.0/24"]}}],
                  "to": [{"operation": {"ports": [str(9000 + i)]}}]}])
        for i in range(scale.mesh_wide_policies)]
    remaining = scale.policies - scale.mesh_wide_policies
    for i in range(remaining):
        n = i % scale.namespaces
        ns, k = namespace_name(n), i // scale.namespaces
        if k == 0:  # one namespace-wide DENY per namespace
            doc = _policy(ns, "deny-external", None, "DENY",
                          [{"from": [{"source": {"notIpBlocks": ["10.0.0.0/8"]}}]}])
        else:
            target = f"svc-{k % per_ns_services}"
            peer = namespace_name((n + k) % scale.namespaces)
            doc = _policy(ns, f"allow-{target}-{k}", {"app": target}, "ALLOW",
                          [{"from": [{"source": {
                              "principals": [f"cluster.local/ns/{ns}/sa/svc-{k - 1}"]}},
                                     {"source": {"namespaces": [peer]}}],
                            "to": [{"operation": {"ports": ["8080"]}}]}])
        folder.setdefault(f"{ns}/policies.yaml", []).append(doc)


def _policy(ns: str, name: str, selector: Mapping[str, str] | None, action: str,
            rules: list[Doc]) -> Doc:
    spec: Doc = {"action": action, "rules": rules}
    if selector is not None:
        spec["selector"] = {"matchLabels": dict(selector)}
    return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def render(docs: list[Doc]) -> str:
    return yaml.dump_all(docs, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper),
                         sort_keys=False)


def write_folder(folder: Folder, root: pathlib.Path) -> None:
    for rel, docs in folder.items():
        write_file(root / rel, render(docs))


def write_file(path: pathlib.Path, text: str) -> None:
    """Replace `path` atomically (temp file + rename), as an editor or kubectl dump would."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@dataclasses.dataclass(frozen=True)
class Change:
    """One manifest edit: the file it rewrites and the xDS resource whose version it changes."""

    kind: str  # "pod" or "policy"
    path: str
    resource: str
    type_url: str


def bump_pod_version(folder: Folder, step: int, scale: Scale = Scale()) -> Change:
    """Set pod #step's `version` label to v<step+2> (in place); names the changed workload."""
    from meshcore.xds.types import TYPE_ADDRESS

    ns = namespace_name(step % scale.namespaces)
    pods = folder[f"{ns}/pods.yaml"]
    pod = pods[(step // scale.namespaces) % len(pods)]
    pod["metadata"]["labels"]["version"] = f"v{step + 2}"
    name = pod["metadata"]["name"]
    return Change("pod", f"{ns}/pods.yaml", f"{CLUSTER}//Pod/{ns}/{name}", TYPE_ADDRESS)


def toggle_policy_port(folder: Folder, step: int, scale: Scale = Scale()) -> Change:
    """Flip one selector-scoped ALLOW policy's port 8080 <-> 8081 (in place)."""
    from meshcore.xds.types import TYPE_AUTHORIZATION

    ns = namespace_name(step % scale.namespaces)
    policies = [p for p in folder[f"{ns}/policies.yaml"] if "selector" in p["spec"]]
    policy = policies[(step // scale.namespaces) % len(policies)]
    op = policy["spec"]["rules"][0]["to"][0]["operation"]
    op["ports"] = ["8081" if op["ports"] == ["8080"] else "8080"]
    return Change("policy", f"{ns}/policies.yaml", f"{ns}/{policy['metadata']['name']}",
                  TYPE_AUTHORIZATION)
