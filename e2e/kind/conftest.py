"""Fixtures of the kind e2e suite: one cluster per session with the images, the chart and a Mesh.

`mesh_cluster` creates the kind cluster (e2e/kind/kind-config.yaml), builds the image twice
(tags e2e-1 and e2e-2, for the rollout test) and loads it, installs the Gateway API CRDs, the
operator chart (helm, or the subset renderer + kubectl when helm is absent), the Mesh, and the
sample apps, and waits until the Mesh is Ready. KEEP_CLUSTER=1 keeps the cluster afterwards.
Only the tests that need a cluster use it; the offline checks run everywhere.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
import yaml

from . import cluster as k
from .chart_render import render_chart


@pytest.fixture(scope="session")
def mesh_cluster() -> Iterator[None]:
    why = k.missing_tools()
    if why is not None:
        pytest.skip(f"kind e2e needs Docker and kind: {why}")
    k.run("kind", "delete", "cluster", "--name", k.CLUSTER, check=False)
    k.run("kind", "create", "cluster", "--config", str(k.HERE / "kind-config.yaml"),
          "--wait", "120s", timeout=600)
    try:
        for tag in ("e2e-1", "e2e-2"):
            k.run("docker", "build", "-t", f"{k.IMAGE}:{tag}", ".", timeout=1200)
            k.run("kind", "load", "docker-image", f"{k.IMAGE}:{tag}", "--name", k.CLUSTER,
                  timeout=600)
        k.kubectl("apply", "-f", k.GATEWAY_API_CRDS, timeout=120)
        chart = k.ROOT / "charts" / "ambient-py-operator"
        sets = {"image": {"tag": "e2e-1", "pullPolicy": "Never"},
                "gatewayClass": {"create": True}}
        if shutil.which("helm"):
            k.run("helm", "--kube-context", f"kind-{k.CLUSTER}", "install", "ambient-py",
                  str(chart), "--namespace", "ambient-py", "--create-namespace",
                  "--set", "image.tag=e2e-1", "--set", "image.pullPolicy=Never",
                  "--set", "gatewayClass.create=true", "--wait", timeout=300)
        else:
            docs = render_chart(chart, release="ambient-py", namespace="ambient-py", values=sets)
            k.kubectl("create", "namespace", "ambient-py")
            k.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
        k.kubectl("-n", "ambient-py", "rollout", "status", "deploy/ambient-py", "--timeout=180s",
                  timeout=200)
        k.kubectl("apply", "-f", str(k.HERE / "manifests" / "mesh.yaml"))
        k.wait_for("Mesh Ready", lambda: (k.mesh_condition("Ready") or {}).get("status")
                   == "True", timeout=300)
        k.kubectl("apply", "-f", str(k.HERE / "manifests" / "apps.yaml"))
        for app in ("server", "client"):
            k.kubectl("-n", "shop", "rollout", "status", f"deploy/{app}", "--timeout=180s",
                      timeout=200)
        yield
    finally:
        if not os.environ.get("KEEP_CLUSTER"):
            k.run("kind", "delete", "cluster", "--name", k.CLUSTER, check=False)
