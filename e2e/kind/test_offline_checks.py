"""What of the kind suite can be checked without a cluster: script syntax, manifests parse
and validate against the Kubernetes schemas, the Mesh is one the operator accepts."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from istiod_lite.operator.spec import parse_mesh_spec

from . import cluster as k

MANIFESTS = sorted((k.HERE / "manifests").glob("*.yaml"))
CRD_KINDS = {"Mesh", "AuthorizationPolicy", "PeerAuthentication", "Gateway", "HTTPRoute"}


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")
def test_run_script_parses():
    """`bash -n` accepts run.sh."""
    subprocess.run(["bash", "-n", str(k.HERE / "run.sh")], check=True)


@pytest.mark.parametrize("path", [pytest.param(p, id=p.name) for p in MANIFESTS])
def test_manifests_parse_and_validate(path):
    """Each manifest parses; core kinds pass strict Kubernetes 1.30 schema validation."""
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            assert doc["apiVersion"].split("/")[0] in (
                "ambient-py.io", "security.istio.io", "gateway.networking.k8s.io")
        else:
            kv.validate(doc, "1.30", strict=True)


def test_mesh_manifest_is_accepted_by_the_operator():
    """The suite's Mesh passes the operator's own validation."""
    mesh = yaml.safe_load((k.HERE / "manifests" / "mesh.yaml").read_text())
    spec = parse_mesh_spec(mesh["spec"])
    assert spec.ztunnel.version == "e2e-1" and spec.image_pull_policy == "Never"


def test_kind_config_has_two_workers():
    """Client and server need different nodes: the kind config has two labelled workers."""
    cfg = yaml.safe_load((k.HERE / "kind-config.yaml").read_text())
    roles = [n.get("labels", {}).get("ambient-py.io/e2e-role") for n in cfg["nodes"]
             if n["role"] == "worker"]
    assert sorted(roles) == ["client", "server"]


def test_sample_apps_are_pinned_to_different_nodes():
    """server and client select different worker roles and use the locally loaded image."""
    docs = [d for d in yaml.safe_load_all((k.HERE / "manifests" / "apps.yaml").read_text())]
    deps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    sel = {n: d["spec"]["template"]["spec"]["nodeSelector"] for n, d in deps.items()}
    assert sel["server"] != sel["client"]
    for d in deps.values():
        assert d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] == "Never"


def test_dockerfile_copies_exist_and_are_not_ignored():
    """Every COPY source of the Dockerfile exists and .dockerignore does not exclude it."""
    dockerfile = (k.ROOT / "Dockerfile").read_text().splitlines()
    ignored = {line.strip() for line in (k.ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    sources = [src for line in dockerfile if line.startswith("COPY ") and "--from" not in line
               for src in line.split()[1:-1]]
    assert "istiod_lite" in sources and "pyproject.toml" in sources
    for src in sources:
        assert (k.ROOT / src).exists(), src
        assert src not in ignored, src
