"""The sandbox's address and name plan (pure)."""

from __future__ import annotations

import ipaddress

import pytest

from ambientctl.sandbox.errors import SandboxConfigError
from ambientctl.sandbox.topology import check_sandbox_name, plan

PODS = [("shop", "echo-1", "node1"), ("shop", "echo-2", "node2"), ("shop", "client", ""),
        ("default", "a", ""), ("default", "b", ""), ("shop", "tcp", "node2")]


def test_nodes_get_underlay_ips_and_disjoint_pod_cidrs():
    """Node i is node<i> at 172.30.0.<10+i> with pod CIDR 10.10.<i>.0/24 and gateway .1."""
    topo = plan("sb", 3, [])
    assert [(n.name, n.netns, n.ip, n.pod_cidr, n.gateway) for n in topo.nodes] == [
        ("node1", "amb-sb-node1", "172.30.0.11", "10.10.1.0/24", "10.10.1.1"),
        ("node2", "amb-sb-node2", "172.30.0.12", "10.10.2.0/24", "10.10.2.1"),
        ("node3", "amb-sb-node3", "172.30.0.13", "10.10.3.0/24", "10.10.3.1"),
    ]
    assert topo.underlay_netns == "amb-sb-underlay"


def test_pods_get_unique_ips_inside_their_nodes_cidr():
    """Every pod's IP is unique, not the gateway, and inside its node's pod CIDR."""
    topo = plan("sb", 2, PODS)
    ips = [p.ip for p in topo.pods]
    assert len(set(ips)) == len(ips) == len(PODS)
    for pod in topo.pods:
        node = topo.node(pod.node)
        assert ipaddress.ip_address(pod.ip) in ipaddress.ip_network(node.pod_cidr)
        assert pod.ip != node.gateway
        assert pod.netns == f"amb-sb-pod-{pod.namespace}-{pod.name}"
        assert len(pod.host_veth) <= 15


def test_node_name_is_honoured_and_the_rest_is_balanced():
    """Pods naming a node land there; unpinned pods go to the emptiest node."""
    topo = plan("sb", 2, PODS)
    where = {p.key: p.node for p in topo.pods}
    assert where["shop/echo-1"] == "node1"
    assert where["shop/echo-2"] == where["shop/tcp"] == "node2"
    counts = [sum(p.node == n.name for p in topo.pods) for n in topo.nodes]
    assert counts == [3, 3]


def test_plan_is_deterministic_and_keeps_fixed_pods():
    """Re-planning with the running pods fixed keeps their addresses and veths."""
    first = plan("sb", 2, PODS[:3])
    again = plan("sb", 2, PODS, fixed={p.key: p for p in first.pods})
    assert plan("sb", 2, PODS[:3]) == first
    kept = {p.key: p for p in again.pods}
    for p in first.pods:
        assert kept[p.key] == p
    assert len({p.host_veth for p in again.pods}) == len(PODS)
    assert len({p.ip for p in again.pods}) == len(PODS)


@pytest.mark.parametrize(("nodes", "pods", "message"), [
    pytest.param(0, [], "--nodes must be between", id="no-nodes"),
    pytest.param(2, [("shop", "x", "node7")], "spec.nodeName 'node7' is not a sandbox node",
                 id="unknown-node"),
    pytest.param(1, [("a-b", "c", ""), ("a", "b-c", "")], "would share the names",
                 id="name-clash"),
])
def test_bad_plans_are_refused_with_the_fix(nodes, pods, message):
    """A plan that cannot work names the offending input."""
    with pytest.raises(SandboxConfigError, match=message):
        plan("sb", nodes, pods)


@pytest.mark.parametrize("name", [
    pytest.param("", id="empty"), pytest.param("a-b", id="dash"),
    pytest.param("UPPER", id="upper"), pytest.param("x" * 13, id="too-long"),
])
def test_sandbox_names_that_could_clash_are_refused(name):
    """Names must be 1-12 lowercase letters/digits so prefixes never overlap."""
    with pytest.raises(SandboxConfigError, match="not valid"):
        check_sandbox_name(name)


def test_pod_lookup_by_name_or_namespace_and_name():
    """`pod()` accepts NS/NAME, NAME when unique, and explains ambiguity."""
    topo = plan("sb", 1, [("a", "web", ""), ("b", "web", ""), ("a", "db", "")])
    assert topo.pod("db").key == "a/db"
    assert topo.pod("b/web").namespace == "b"
    with pytest.raises(SandboxConfigError, match="ambiguous"):
        topo.pod("web")
    with pytest.raises(SandboxConfigError, match="no pod"):
        topo.pod("nope")
