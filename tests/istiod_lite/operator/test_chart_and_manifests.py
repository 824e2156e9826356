"""The Helm chart renders (helm if present, else the strict subset renderer) and every object
the chart and the operator produce validates against the Kubernetes 1.30 schemas."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from e2e.kind.chart_render import UnsupportedTemplate, render_chart, render_template
from istiod_lite.operator import reconcile, rootcert, waypoints
from istiod_lite.operator.spec import parse_mesh_spec
from tests.istiod_lite.operator import factories as f
from tests.istiod_lite.operator.conftest import RESOURCES, stored

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="pip install kubernetes-validate (schemas of the K8s API)")

CHART = Path(__file__).resolve().parents[3] / "charts" / "ambient-py-operator"
K8S_VERSION = "1.30"
# Kinds the bundled schemas do not know (CRD-defined): checked by the tests below instead.
CUSTOM_KINDS = {"Mesh", "GatewayClass"}
ALL_ON = {"mesh": {"create": True}, "gatewayClass": {"create": True},
          "operator": {"logVerbose": True}}


def validate(obj: dict) -> None:
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


@pytest.mark.parametrize("values", [pytest.param({}, id="defaults"),
                                    pytest.param(ALL_ON, id="everything-on")])
def test_chart_renders_and_validates(values):
    """Every rendered core object passes strict schema validation (unknown fields fail)."""
    docs = render_chart(CHART, values=values)
    kinds = [d["kind"] for d in docs]
    assert kinds[0] == "CustomResourceDefinition"
    assert {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment"} <= set(kinds)
    for doc in docs:
        if doc["kind"] not in CUSTOM_KINDS:
            validate(doc)


def test_chart_mesh_passes_the_operators_own_validation():
    """The Mesh the chart can create is accepted by the operator's spec parser."""
    mesh = next(d for d in render_chart(CHART, values=ALL_ON) if d["kind"] == "Mesh")
    assert parse_mesh_spec(mesh["spec"]).trust_domain == "cluster.local"


def test_chart_operator_image_defaults_to_app_version():
    """Without image.tag the operator image uses the chart's appVersion."""
    dep = next(d for d in render_chart(CHART) if d["kind"] == "Deployment")
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    image = dep["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"ambient-py/ambient-py:{app_version}"


def test_crd_schema_defaults_match_the_operator():
    """The CRD's defaults are the ones spec.py applies."""
    crd = next(d for d in render_chart(CHART) if d["kind"] == "CustomResourceDefinition")
    props = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    mesh = parse_mesh_spec({"version": "1"})
    assert props["properties"]["namespace"]["default"] == mesh.namespace
    assert props["properties"]["trustDomain"]["default"] == mesh.trust_domain
    assert props["required"] == ["version"]


@pytest.mark.parametrize("template, error", [
    pytest.param("{{ range .Values.x }}{{ end }}", "range", id="range"),
    pytest.param("{{ include \"x\" . }}", "include", id="include"),
    pytest.param("{{ .Values.x | upper }}", "upper", id="unknown-function"),
    pytest.param("{{ if .Values.x }}", "missing", id="unterminated-if"),
])
def test_renderer_refuses_constructs_outside_its_subset(template, error):
    """The subset renderer fails loudly instead of rendering unknown syntax wrongly."""
    with pytest.raises(UnsupportedTemplate, match=error):
        render_template(template, {"Values": {"x": [1]}})


def test_renderer_trimming_and_truthiness_follow_go_templates():
    """`{{-`/`-}}` trim whitespace; empty maps and strings are false; default picks the value."""
    tpl = ("a:\n  {{- if .Values.e }}\n  no\n  {{- else }}\n  yes{{ end }} "
           "{{ .Values.s | default \"d\" | quote }}")
    assert render_template(tpl, {"Values": {"e": {}, "s": ""}}) == 'a:\n  yes "d"'


@pytest.mark.skipif(shutil.which("helm") is None,
                    reason="helm binary not installed: the subset renderer stands in for it")
def test_subset_renderer_matches_helm_template():
    """With helm installed, `helm template` yields the same objects as the subset renderer."""
    args = ["helm", "template", "ambient-py", str(CHART), "--namespace", "ambient-py",
            "--include-crds", "--set", "mesh.create=true", "--set", "gatewayClass.create=true",
            "--set", "operator.logVerbose=true"]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    helm_docs = [d for d in yaml.safe_load_all(out) if d]
    key = lambda d: (d["kind"], d["metadata"]["name"])  # noqa: E731
    assert sorted(helm_docs, key=key) == sorted(render_chart(CHART, values=ALL_ON), key=key)


def test_operator_manifests_validate_against_kubernetes_schemas():
    """Everything reconcile_mesh, the waypoint controller and rootcert create validates."""
    mesh = parse_mesh_spec({"version": "0.1.0", "ztunnel": {"resources": {
        "requests": {"cpu": "100m", "memory": "64Mi"}}}})
    owner = reconcile.Owner("default", "uid-1")
    objs = [reconcile.namespace(mesh), reconcile.ca_secret(mesh, owner, b"c", b"k"),
            *reconcile.reconcile_mesh(mesh, owner),
            *waypoints.reconcile_waypoint(f.waypoint_gateway(), mesh).objects,
            rootcert.root_cert_configmap("shop", "-----BEGIN CERTIFICATE-----\n", owner)]
    assert len(objs) > 12
    for obj in objs:
        validate(obj)


HELM_LIB = os.environ.get("AMBIENT_PY_HELM_LIB")
needs_helm_lib = pytest.mark.skipif(
    not HELM_LIB, reason="set AMBIENT_PY_HELM_LIB to Helm's Go library (libhelm_sdkpy.so from "
                         "the helm-sdkpy wheel) to check the chart with real Helm")


def helm_shim(*args: str, timeout: float = 120) -> dict:
    """Run e2e/kind/helm_shim.py in a subprocess (Go reads HELM_DRIVER when loaded)."""
    env = {**os.environ, "HELM_DRIVER": "memory"}
    proc = subprocess.run([sys.executable, "-m", "e2e.kind.helm_shim", *args], env=env,
                          cwd=CHART.parents[1], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


@needs_helm_lib
def test_real_helm_lint_passes():
    """Helm's own linter (its Go code, through helm-sdkpy's C shim) finds no warning or error."""
    report = helm_shim("lint", str(CHART))
    assert report["TotalChartsLinted"] == 1
    # Helm severities: 1 info, 2 warning, 3 error.
    assert max(m["Severity"] for m in report["Messages"]) < 2, report


@needs_helm_lib
@pytest.mark.asyncio
async def test_real_helm_install_renders_what_the_subset_renderer_renders(cluster, tmp_path):
    """`helm install` (real Helm) into kmock sends the same objects the subset renderer makes."""
    extra = {"gateway.networking.k8s.io/v1/gatewayclasses": "GatewayClass"}
    verbs = {"list", "watch", "get", "create", "patch", "delete", "update"}
    for key, kind in extra.items():
        cluster.resources[key] = cluster.ResourceInfo(kind=kind, namespaced=False, verbs=verbs)
    # kmock 0.8 reports Kubernetes 1.26 and a core groupVersion of "/v1": answer as 1.30 does.
    cluster["get /version"] << {"major": "1", "minor": "30", "gitVersion": "v1.30.0",
                                "platform": "linux/amd64"}
    core = [{"name": key.split("/")[1], "kind": kind, "namespaced": namespaced,
             "singularName": "", "verbs": sorted(verbs)}
            for key, (kind, namespaced, _) in RESOURCES.items() if key.count("/") == 1]
    cluster["get /api/v1"] << {"kind": "APIResourceList", "apiVersion": "v1",
                               "groupVersion": "v1", "resources": core}
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
        "clusters": [{"name": "kmock", "cluster": {"server": str(cluster.url)}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "u"}}]}))
    result = await asyncio.to_thread(helm_shim, "install", str(CHART), "--kubeconfig",
                                     str(kubeconfig), "--values", json.dumps(ALL_ON))
    helm_docs = [d for d in yaml.safe_load_all(result["manifest"]) if d]
    mine = [d for d in render_chart(CHART, values=ALL_ON)
            if d["kind"] != "CustomResourceDefinition"]  # Helm keeps crds/ out of the manifest
    key = lambda d: (d["kind"], d["metadata"]["name"])  # noqa: E731
    assert sorted(helm_docs, key=key) == sorted(mine, key=key)
    assert stored(cluster, "CustomResourceDefinition", None, "meshes.ambient-py.io") is not None


def test_schema_validation_rejects_a_broken_object():
    """The validator used above does fail: an unknown field in a Deployment is refused."""
    mesh = parse_mesh_spec({"version": "0.1.0"})
    dep = next(o for o in reconcile.reconcile_mesh(mesh, reconcile.Owner("m", "u"))
               if o["kind"] == "Deployment")
    dep["spec"]["template"]["spec"]["containers"][0]["commandz"] = ["x"]
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(dep)
