"""Incremental translation equals full translation, and reuses what did not change.

The property: for random edit sequences (objects removed, restored, copied, relabelled,
reselected, re-moded) over rich universes (every golden case, the waypoint route and L7
policy fixtures, and all of them merged), `IncrementalTranslator.translate` returns exactly
what a fresh `translate` returns: the same resource names in the same order, byte-identical
messages, the same status messages. Plus: the edits the control-plane benchmark makes
re-translate exactly one resource and hand back every other message object unchanged; and
the snapshot's cached indexes agree with plain filtering after updates.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.controlplane_manifests import Scale, generate
from istiod_lite.translate import IncrementalTranslator, MeshConfig, ResourceSet, translate
from meshcore.model import ClusterModel, InvalidObjectError, ModelObject, parse_object, selects

TESTS = Path(__file__).parents[2]
GOLDEN = Path(__file__).parent / "golden"
WAYPOINT_GOLDEN = TESTS / "waypoint" / "golden"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]


def _universes() -> dict[str, tuple[list[dict[str, Any]], MeshConfig]]:
    out: dict[str, tuple[list[dict[str, Any]], MeshConfig]] = {}
    merged: list[dict[str, Any]] = []
    for case in sorted(p for p in GOLDEN.iterdir() if (p / "input.yaml").exists()):
        mesh_file = case / "mesh.yaml"
        mesh = (MeshConfig(**yaml.safe_load(mesh_file.read_text())) if mesh_file.exists()
                else MeshConfig())
        docs = _docs(case / "input.yaml")
        out[case.name] = (docs, mesh)
        if not mesh_file.exists():
            merged += docs
    for name in ("routes", "l7_policies"):
        docs = _docs(WAYPOINT_GOLDEN / f"{name}.yaml")
        out[f"waypoint-{name}"] = (docs, MeshConfig())
        merged += docs
    out["merged"] = (merged, MeshConfig())
    return out


UNIVERSES = _universes()


def _label_pool() -> list[tuple[str, str]]:
    pool = {("istio.io/use-waypoint", "none"), ("istio.io/use-waypoint", "waypoint"),
            ("istio.io/use-waypoint", "shared"), ("istio.io/use-waypoint-namespace", "infra"),
            ("istio.io/waypoint-for", "workload"), ("istio.io/waypoint-for", "all"),
            ("istio.io/dataplane-mode", "ambient"), ("networking.istio.io/tunnel", "http"),
            ("istio.io/ingress-use-waypoint", "true"), ("version", "v2"),
            ("topology.kubernetes.io/zone", "zone-b")}

    def walk(value: Any, key: str = "") -> None:
        if isinstance(value, dict):
            if key in ("labels", "selector", "matchLabels"):
                pool.update((k, v) for k, v in value.items() if isinstance(v, str))
            for k, v in value.items():
                walk(v, k)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    for docs, _ in UNIVERSES.values():
        walk(docs)
    return sorted(pool)


LABELS = _label_pool()
ANNOTATIONS = [("ambient.istio.io/redirection", "enabled"),
               ("ambient.istio.io/redirection", "disabled"),
               ("networking.istio.io/traffic-distribution", "PreferClose"),
               ("istio.io/dry-run", "true"), ("service.istio.io/workload-name", "wl")]


def _mutate(doc: dict[str, Any], how: int, label: tuple[str, str],
            annotation: tuple[str, str]) -> dict[str, Any]:
    """One small edit of a manifest (`how` picks which), on a deep copy."""
    doc = copy.deepcopy(doc)
    meta = doc.setdefault("metadata", {})
    spec = doc.get("spec") if isinstance(doc.get("spec"), dict) else None
    kind = doc.get("kind")
    how %= 9
    if how == 0:
        meta.setdefault("labels", {})[label[0]] = label[1]
    elif how == 1:
        (meta.get("labels") or {}).pop(label[0], None)
        labels = meta.get("labels") or {}
        if labels:
            labels.pop(sorted(labels)[0])
    elif how == 2:
        meta.setdefault("annotations", {})[annotation[0]] = annotation[1]
    elif how == 3 and spec is not None and kind == "Service":
        spec["selector"] = {label[0]: label[1]}
    elif how == 3 and spec is not None and kind in ("AuthorizationPolicy", "PeerAuthentication"):
        if "targetRefs" not in spec and "targetRef" not in spec:
            spec["selector"] = {"matchLabels": {label[0]: label[1]}}
    elif how == 4 and spec is not None:
        spec.pop("selector", None)
    elif how == 5 and spec is not None and kind == "PeerAuthentication":
        spec["mtls"] = {"mode": ["STRICT", "PERMISSIVE", "DISABLE", "UNSET"][len(label[1]) % 4]}
    elif how == 5 and spec is not None and kind == "AuthorizationPolicy":
        spec["action"] = "DENY" if spec.get("action", "ALLOW") == "ALLOW" else "ALLOW"
    elif how == 6 and kind == "Pod":
        status = doc.setdefault("status", {})
        if status.pop("podIP", None) is None:
            status["podIP"] = "10.9.9.9"
        status.pop("podIPs", None)
    elif how == 7 and kind == "Pod" and spec is not None:
        spec["nodeName"] = "node-2" if spec.get("nodeName") != "node-2" else "node-1"
    elif how == 8:
        meta["name"] = f"{meta.get('name', 'x')}-copy"
    return doc


def _parse(doc: dict[str, Any]) -> ModelObject | None:
    try:
        return parse_object(doc)
    except InvalidObjectError:
        return None


def _wire(rs: ResourceSet) -> tuple[Any, ...]:
    return ({t: [(n, bytes(m)) for n, m in v.items()] for t, v in rs.by_type_url.items()},
            rs.statuses)


OPS = st.lists(st.tuples(st.sampled_from(["apply", "remove", "mutate"]),
                         st.integers(0, 10_000), st.integers(0, 8),
                         st.sampled_from(LABELS), st.sampled_from(ANNOTATIONS)),
               min_size=1, max_size=14)


@pytest.mark.parametrize("universe", sorted(UNIVERSES))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS)
def test_incremental_equals_full(universe: str, ops: list[tuple[Any, ...]]) -> None:
    """After every random edit, the incremental translation is identical to a fresh one."""
    docs, mesh = UNIVERSES[universe]
    current = list(docs)
    objects = [o for o in map(_parse, docs) if o is not None]
    model = ClusterModel.from_objects(objects, system_namespace=mesh.root_namespace)
    translator = IncrementalTranslator()
    assert _wire(translator.translate(model, mesh)) == _wire(translate(model, mesh))
    for op, index, how, label, annotation in ops:
        i = index % len(docs)
        if op == "apply":
            obj, current[i] = _parse(docs[i]), docs[i]
        elif op == "mutate":
            current[i] = _mutate(current[i], how, label, annotation)
            obj = _parse(current[i])
        else:
            obj = _parse(current[i])
            if obj is not None:
                model = model.without(obj.kind, obj.namespace, obj.name)
            obj = None
        if obj is not None:
            model = model.with_object(obj)
        assert _wire(translator.translate(model, mesh)) == _wire(translate(model, mesh)), \
            (op, i, how, label, annotation)


def _bench_model() -> tuple[ClusterModel, dict[str, list[dict[str, Any]]]]:
    folder = generate(Scale(pods=40, nodes=4, namespaces=4, services=8, policies=12,
                            mesh_wide_policies=2))
    objects = [parse_object(d) for docs in folder.values() for d in docs]
    return ClusterModel.from_objects(objects), folder


@pytest.mark.parametrize("edit", [pytest.param("pod-label", id="pod-label"),
                                  pytest.param("policy-port", id="policy-port")])
def test_benchmark_edit_reuses_every_other_message(edit: str) -> None:
    """A pod label or policy port edit re-translates that one resource; every other message
    is the very object of the previous result (so the xDS cache skips serializing it)."""
    model, folder = _bench_model()
    translator = IncrementalTranslator()
    before = translator.translate(model)
    if edit == "pod-label":
        doc = copy.deepcopy(folder["team-01/pods.yaml"][2])
        doc["metadata"]["labels"]["version"] = "v9"
        changed = f"Kubernetes//Pod/team-01/{doc['metadata']['name']}"
    else:
        doc = copy.deepcopy(next(p for p in folder["team-01/policies.yaml"]
                                 if "selector" in p["spec"]))
        doc["spec"]["rules"][0]["to"][0]["operation"]["ports"] = ["8081"]
        changed = f"team-01/{doc['metadata']['name']}"
    after = translator.translate(model.with_object(parse_object(doc)))
    stats = translator.last_stats
    assert stats is not None and stats.total_misses == 1
    for type_url, resources in after.by_type_url.items():
        old = before.by_type_url[type_url]
        assert list(resources) == list(old)
        for name, message in resources.items():
            assert (message is old[name]) == (name != changed), name
    assert _wire(after) == _wire(translate(model.with_object(parse_object(doc))))


def test_unchanged_model_returns_the_previous_result() -> None:
    """Translating the same snapshot again hands back the same ResourceSet."""
    model, _ = _bench_model()
    translator = IncrementalTranslator()
    assert translator.translate(model) is translator.translate(model)


def test_other_mesh_config_discards_the_memo() -> None:
    """A different MeshConfig re-translates everything (no stale cluster id or domain)."""
    model, _ = _bench_model()
    translator = IncrementalTranslator()
    translator.translate(model)
    other = MeshConfig(cluster_id="other", cluster_domain="corp.local")
    assert _wire(translator.translate(model, other)) == _wire(translate(model, other))
    assert translator.last_stats is not None and sum(translator.last_stats.hits.values()) == 0


@settings(max_examples=20, deadline=None)
@given(ops=OPS)
def test_snapshot_indexes_agree_with_filtering(ops: list[tuple[Any, ...]]) -> None:
    """pods_on_node / pods_matching / in_namespace / sorted equal plain filters of the
    objects, also after updates that carry indexes of untouched kinds over."""
    docs, _ = UNIVERSES["merged"]
    model = ClusterModel.from_objects(o for o in map(_parse, docs) if o is not None)
    for op, index, how, label, annotation in ops:
        model.pods_on_node("node-1")  # build indexes before the update
        model.in_namespace("Service", "shop")
        obj = _parse(_mutate(docs[index % len(docs)], how, label, annotation))
        if obj is None:
            continue
        model = (model.with_object(obj) if op != "remove"
                 else model.without(obj.kind, obj.namespace, obj.name))
        pods = [model.of_kind("Pod")[k] for k in sorted(model.of_kind("Pod"))]
        assert model.pods == pods
        for node in {p.node_name for p in pods} | {"nowhere"}:
            assert model.pods_on_node(node) == [p for p in pods if p.node_name == node]
        for ns in {o.namespace for o in model.all_objects()}:
            assert model.pods_matching(ns, {label[0]: label[1]}) == [
                p for p in pods if p.namespace == ns and selects({label[0]: label[1]},
                                                                 p.labels)]
            for kind in ("Service", "Pod", "AuthorizationPolicy"):
                assert list(model.in_namespace(kind, ns)) == [
                    o for o in model.sorted(kind) if o.namespace == ns]
