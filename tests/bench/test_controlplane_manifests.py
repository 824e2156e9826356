"""The control-plane benchmark's manifest generator, edits and aggregation (no timings)."""

from __future__ import annotations

import collections
import pathlib

import pytest

from bench import controlplane_manifests as cm
from bench import controlplane_section as cp
from istiod_lite.translate import MeshConfig, translate
from meshcore.model.folder import scan_folder
from meshcore.xds.types import TYPE_ADDRESS, TYPE_AUTHORIZATION

SMALL = cm.Scale(pods=100, nodes=4, namespaces=4, services=20, policies=12,
                 mesh_wide_policies=2)


def _kinds(folder: cm.Folder) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = collections.defaultdict(list)
    for docs in folder.values():
        for doc in docs:
            out[doc["kind"]].append(doc)
    return out


def _translated(folder: cm.Folder, root: pathlib.Path) -> dict[str, dict[str, bytes]]:
    cm.write_folder(folder, root)
    state = scan_folder(str(root), None)
    assert state.diagnostics == ()
    resources = translate(state.model, MeshConfig())
    assert resources.statuses == ()
    return {t: {name: bytes(msg) for name, msg in resources.by_type_url[t].items()}
            for t in (TYPE_ADDRESS, TYPE_AUTHORIZATION)}


def test_default_scale_has_the_issue_sizes() -> None:
    """The default folder has 1000 pods on 20 nodes, 200 services, 100 policies, 20 namespaces."""
    kinds = _kinds(cm.generate())
    assert len(kinds["Pod"]) == 1000
    assert len(kinds["Service"]) == 200
    assert len(kinds["AuthorizationPolicy"]) == 100
    assert len(kinds["Namespace"]) == 21  # 20 ambient ones and the root namespace
    per_node = collections.Counter(p["spec"]["nodeName"] for p in kinds["Pod"])
    assert sorted(per_node.values()) == [50] * 20


def test_pod_ips_and_cluster_ips_are_unique() -> None:
    """No two pods share an IP and no two services share a cluster IP."""
    kinds = _kinds(cm.generate())
    pod_ips = [p["status"]["podIP"] for p in kinds["Pod"]]
    vips = [s["spec"]["clusterIP"] for s in kinds["Service"]]
    assert len(set(pod_ips)) == len(pod_ips)
    assert len(set(vips)) == len(vips)


def test_every_service_selects_five_pods_of_its_namespace() -> None:
    """Each Service's selector matches exactly pods_per_service pods in its namespace."""
    kinds = _kinds(cm.generate())
    for svc in kinds["Service"]:
        selected = [p for p in kinds["Pod"]
                    if p["metadata"]["namespace"] == svc["metadata"]["namespace"]
                    and svc["spec"]["selector"].items() <= p["metadata"]["labels"].items()]
        assert len(selected) == 5, svc["metadata"]


def test_policies_mix_scopes_and_actions() -> None:
    """Policies are mesh-wide (root namespace), namespace-wide and selector-scoped, ALLOW and
    DENY."""
    policies = _kinds(cm.generate())["AuthorizationPolicy"]
    root = [p for p in policies if p["metadata"]["namespace"] == cm.ROOT_NS]
    ns_wide = [p for p in policies
               if p["metadata"]["namespace"] != cm.ROOT_NS and "selector" not in p["spec"]]
    scoped = [p for p in policies if "selector" in p["spec"]]
    assert (len(root), len(ns_wide), len(scoped)) == (5, 20, 75)
    assert {p["spec"]["action"] for p in policies} == {"ALLOW", "DENY"}
    names = [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in policies]
    assert len(set(names)) == len(names)


def test_generate_is_deterministic() -> None:
    """Two calls give the same folder (runs compare)."""
    assert cm.generate(SMALL) == cm.generate(SMALL)


def test_default_folder_translates_cleanly(tmp_path: pathlib.Path) -> None:
    """The default folder parses without diagnostics and gives 1200 Addresses, 100 policies."""
    cm.write_folder(cm.generate(), tmp_path)
    assert cp.expected_counts(tmp_path) == {TYPE_ADDRESS: 1200, TYPE_AUTHORIZATION: 100}


@pytest.mark.parametrize("edit", [
    pytest.param(cm.bump_pod_version, id="pod-version-label"),
    pytest.param(cm.toggle_policy_port, id="policy-port"),
])
def test_an_edit_changes_exactly_the_named_resource(tmp_path: pathlib.Path, edit) -> None:
    """After an edit, translation differs from before in the one resource the Change names."""
    folder = cm.generate(SMALL)
    before = _translated(folder, tmp_path / "a")
    for step in range(3):
        change = edit(folder, step, SMALL)
        after = _translated(folder, tmp_path / f"b{step}")
        changed = {(t, n) for t in after for n in after[t] if after[t][n] != before[t].get(n)}
        assert changed == {(change.type_url, change.resource)}
        assert after[change.type_url].keys() == before[change.type_url].keys()
        before = after


def test_edits_rewrite_only_the_named_file() -> None:
    """A Change names the file holding the edited object; other files stay as they were."""
    folder = cm.generate(SMALL)
    original = {path: cm.render(docs) for path, docs in folder.items()}
    change = cm.toggle_policy_port(folder, 1, SMALL)
    differs = {p for p, docs in folder.items() if cm.render(docs) != original[p]}
    assert differs == {change.path}


def test_scale_refuses_uneven_splits() -> None:
    """A size whose pods do not split evenly over services is refused with the reason."""
    with pytest.raises(ValueError, match="split evenly"):
        cm.Scale(pods=1001)


@pytest.mark.parametrize(("values", "p", "expected"), [
    pytest.param([5.0], 50, 5.0, id="single"),
    pytest.param([1.0, 2.0, 3.0, 4.0], 50, 2.0, id="even-median-lower"),
    pytest.param([float(i) for i in range(1, 21)], 95, 19.0, id="p95-of-20"),
    pytest.param([3.0, 1.0, 2.0], 100, 3.0, id="max"),
])
def test_percentile_is_nearest_rank(values: list[float], p: float, expected: float) -> None:
    """Nearest-rank percentile over unsorted input."""
    assert cp.percentile(values, p) == expected


def test_snapshot_stamps_are_read_from_istiod_output() -> None:
    """Only whole `bench-snapshot <t>` lines count; the first stamp at or after t is chosen."""
    log = ("2026 INFO istiod_lite: serving\nbench-snapshot 10.5\n"
           "x bench-snapshot 11.0\nbench-snapshot 12.25\n")
    stamps = cp.snapshot_times(log)
    assert stamps == [10.5, 12.25]
    assert cp.first_after(stamps, 11.0) == 12.25
    assert cp.first_after(stamps, 13.0) is None


def test_summarize_reports_ms_mib_and_breakdown_medians() -> None:
    """Summary figures come from the steps (nearest rank) and the in-process breakdown."""
    raw = {
        "ready_s": 1.5, "initial_ms": 900.0, "idle_cpu_pct": 2.0, "cpu_initial_ms": 700.0,
        "rss_after_initial": 64 * cp.MIB, "hwm": 70 * cp.MIB,
        "breakdown": [{"scan_ms": 1.0, "translate_ms": 300.0, "set_all_ms": 80.0},
                      {"scan_ms": 3.0, "translate_ms": 100.0, "set_all_ms": 60.0}],
        "steps": [{"write_ms": 300.0, "cpu_ms": 10.0, "poll_ms": 150.0, "detect_ms": 150.0,
                   "recv_ms": 140.0},
                  {"write_ms": 200.0, "cpu_ms": 30.0}],  # istiod's stamp was not found
    }
    s = cp.summarize(raw)
    assert (s["write_p50"], s["write_p95"], s["detect_p50"], s["poll_p50"]) == \
        (200.0, 300.0, 150.0, 150.0)
    assert (s["rss"], s["hwm"], s["translate"], s["cpu_change"]) == (64, 70, 200.0, 20.0)


def test_summarize_inproc_reports_push_and_ack_percentiles() -> None:
    """The in-process case's figures: push (applied) p50, received p50, ACK p50 and p95."""
    raw = {"initial_ms": 5000.0, "steps": [
        {"push_ms": float(i), "recv_ms": float(i) - 1, "ack_ms": float(i) + 2}
        for i in range(1, 21)]}
    s = cp.summarize_inproc(raw)
    assert s == {"initial": 5000.0, "push_p50": 10.0, "recv_p50": 9.0, "ack_p50": 12.0,
                 "ack_p95": 21.0}
