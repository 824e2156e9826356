"""The ztunnel rollout decision (pure): order, maxUnavailable, health gates, pause, completion."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from istiod_lite.operator.rollout import (
    NodeZtunnel,
    decide_rollout,
    observe_cluster,
    observe_node,
)
from tests.istiod_lite.operator import factories as f

NOW = 10_000.0


def node(name: str, version: str = "v1", *, ready: bool = True, synced: bool = True,
         started: float = NOW - 60, failure: str | None = None, pod: bool = True,
         terminating: bool = False) -> NodeZtunnel:
    return NodeZtunnel(name, f"zt-{name}" if pod else None, version if pod else None, ready,
                       synced, terminating, started, failure)


def decide(nodes, desired="v2", max_unavailable=1, deadline=300):
    return decide_rollout(nodes, desired=desired, max_unavailable=max_unavailable,
                          deadline_seconds=deadline, now=NOW)


def test_first_step_replaces_one_node_in_name_order():
    """With maxUnavailable 1 and all nodes outdated, exactly the first node is replaced."""
    d = decide([node("n2"), node("n1"), node("n3")])
    assert [n.node for n in d.replace] == ["n1"]
    assert (d.condition.status, d.condition.reason) == ("True", "RollingOut")
    assert (d.updated, d.total) == (0, 3)


@pytest.mark.parametrize("new_pod", [
    pytest.param(node("n1", "v2", ready=False, synced=False), id="new-pod-not-ready"),
    pytest.param(node("n1", "v2", ready=True, synced=False), id="ready-but-not-synced"),
    pytest.param(node("n1", pod=False), id="pod-not-recreated-yet"),
    pytest.param(node("n1", "v1", terminating=True), id="old-pod-terminating"),
])
def test_next_node_waits_for_the_previous_to_be_ready_and_synced(new_pod):
    """While n1 is not Ready+synced on the new version, n2 is not touched."""
    d = decide([new_pod, node("n2"), node("n3")])
    assert d.replace == ()
    assert d.condition.reason == "RollingOut" and "waiting for n1" in d.condition.message


def test_ready_and_synced_node_lets_the_next_one_go():
    """Once n1 runs v2, is Ready and re-received its pods, n2 is replaced."""
    d = decide([node("n1", "v2"), node("n2"), node("n3")])
    assert [n.node for n in d.replace] == ["n2"]
    assert d.updated == 1


def test_max_unavailable_allows_parallel_nodes():
    """maxUnavailable 2 with one node in progress replaces one more."""
    d = decide([node("n1", "v2", ready=False), node("n2"), node("n3"), node("n4")],
               max_unavailable=2)
    assert [n.node for n in d.replace] == ["n2"]


def test_not_ready_outdated_nodes_go_first():
    """An outdated node that is already not Ready is replaced before healthy ones."""
    d = decide([node("n1"), node("n2", ready=False)])
    assert [n.node for n in d.replace] == ["n2"]


@pytest.mark.parametrize("failing, why", [
    pytest.param(node("n1", "v2", ready=False, failure="CrashLoopBackOff: back-off"),
                 "CrashLoopBackOff", id="crash-loop"),
    pytest.param(node("n1", "v2", ready=False, started=NOW - 301), "not Ready after 300s",
                 id="not-ready-past-deadline"),
    pytest.param(node("n1", "v2", ready=True, synced=False, started=NOW - 301),
                 "has not re-received its pods", id="never-synced"),
])
def test_failing_node_pauses_with_node_and_reason(failing, why):
    """A failed node pauses the rollout; the condition names the node and why."""
    d = decide([failing, node("n2"), node("n3")])
    assert d.replace == ()
    assert (d.condition.status, d.condition.reason) == ("False", "RolloutPaused")
    assert "node n1" in d.condition.message and why in d.condition.message
    assert d.paused_on == "n1"


def test_reverting_the_version_resumes_from_the_failed_node():
    """After a pause, setting the old version back makes the failed node the next to replace."""
    d = decide([node("n1", "v2", ready=False, failure="ImagePullBackOff: nope"), node("n2"),
                node("n3")], desired="v1")
    assert [n.node for n in d.replace] == ["n1"]


def test_all_nodes_done_is_complete():
    """Every node Ready+synced on the desired version completes the rollout."""
    d = decide([node("n1", "v2"), node("n2", "v2")])
    assert (d.condition.status, d.condition.reason) == ("False", "RolloutComplete")
    assert d.replace == () and d.updated == 2


def test_observe_node_reads_pod_fields():
    """A pod from the API becomes a NodeZtunnel with version, readiness, sync and failure."""
    pod = f.ztunnel_pod("n1", "0.2.0", ready=False, synced=False, waiting="CrashLoopBackOff")
    n = observe_node("n1", pod)
    assert (n.pod, n.version, n.ready, n.synced) == ("ztunnel-n1-a", "0.2.0", False, False)
    assert n.failure.startswith("CrashLoopBackOff")
    assert observe_node("n1", f.ztunnel_pod("n1", "0.2.0")).synced is True
    assert observe_node("n2", None) == NodeZtunnel("n2")


def test_observe_cluster_skips_not_ready_nodes_without_ztunnel_and_prefers_live_pods():
    """NotReady nodes without a pod are left out; a terminating pod yields to its successor."""
    old = f.ztunnel_pod("n1", "0.1.0")
    old["metadata"]["deletionTimestamp"] = "2027-01-15T08:01:00Z"
    new = f.ztunnel_pod("n1", "0.2.0", suffix="b")
    nodes = [f.node("n2", ready=False), f.node("n1"), f.node("n3", ready=False)]
    pods = [old, new, f.ztunnel_pod("n3", "0.1.0")]
    observed = observe_cluster(nodes, pods)
    assert [(n.node, n.pod) for n in observed] == [("n1", "ztunnel-n1-b"),
                                                   ("n3", "ztunnel-n3-a")]


NODES = st.lists(st.builds(
    NodeZtunnel, node=st.sampled_from([f"n{i}" for i in range(6)]),
    pod=st.just("p"), version=st.sampled_from(["v1", "v2"]), ready=st.booleans(),
    synced=st.booleans(), terminating=st.booleans(),
    started_at=st.sampled_from([NOW - 10, NOW - 1000]),
    failure=st.sampled_from([None, "CrashLoopBackOff: x"])),
    unique_by=lambda n: n.node, max_size=6)


@given(NODES, st.integers(min_value=1, max_value=4))
def test_never_exceeds_max_unavailable_and_never_replaces_done_nodes(nodes, max_unavailable):
    """Property: replacements + in-progress <= maxUnavailable; done nodes are never replaced."""
    d = decide(nodes, max_unavailable=max_unavailable)
    in_progress = [n for n in nodes if n.terminating or (
        n.version == "v2" and not (n.ready and n.synced) and n.failure is None
        and n.started_at == NOW - 10)]
    assert len(d.replace) + len(in_progress) <= max(max_unavailable, len(in_progress))
    assert all(n.version != "v2" and not n.terminating for n in d.replace)
    if d.paused_on is not None:
        assert d.replace == ()
