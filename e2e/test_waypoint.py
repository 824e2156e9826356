"""A waypoint in the sandbox: the Gateway of class istio-waypoint gets its Service, Pod and a
real `waypoint` process; ztunnels send the bound Service's traffic through it, and its
HTTPRoute splits requests by weight.

Manifest sets `base` + `enrolled` + `waypoint` (Service shop/echo bound to waypoint shop/waypoint,
HTTPRoute echo-split: echo-v1 weight 1, echo-v2 weight 3).
"""

from __future__ import annotations

import importlib.util

import pytest

from ambientctl.sandbox import Sandbox
from e2e import mesh
from e2e.conftest import NEEDS_ROOT

pytestmark = [
    pytest.mark.netns, NEEDS_ROOT,
    pytest.mark.skipif(importlib.util.find_spec("waypoint.__main__") is None,
                       reason="the waypoint program is not part of this build"),
]
SANDBOX_SETS = ("base", "enrolled", "waypoint")
ECHO_VIP = "10.96.0.10"
REQUESTS = 80


def test_waypoint_runs_as_the_operator_would_create_it(sandbox: Sandbox):
    """The generated Pod runs the waypoint process (component waypoint-shop-waypoint, ready),
    unenrolled (waypoints are never captured), and ztunnels know its Service."""
    assert "waypoint-shop-waypoint" in sandbox.components()
    comps = {c["name"]: c for c in sandbox.status()["components"]}
    assert comps["waypoint-shop-waypoint"]["ready"], comps["waypoint-shop-waypoint"]
    assert mesh.redirection(sandbox, "shop/waypoint") == ""
    services = {s["hostname"] for s in mesh.config_dump(sandbox, "node1")["services"]}
    assert "waypoint.shop.svc.cluster.local" in services


def test_http_route_splits_by_weight_through_the_waypoint(sandbox: Sandbox):
    """80 requests to the echo VIP all arrive from the waypoint's IP and split about 1:3
    between echo-1 (v1) and echo-2 (v2): echo-2 gets 60 ± 4 sd (sd 3.9), echo-1 at least one."""
    waypoint_ip = sandbox.pod_ip("shop/waypoint")
    docs = [mesh.http_json(sandbox, "shop/client", ECHO_VIP, 80) for _ in range(REQUESTS)]
    assert {d["peer"].split(":")[0] for d in docs} == {waypoint_ip}
    v2 = sum(d["pod"] == "shop/echo-2" for d in docs)
    v1 = sum(d["pod"] == "shop/echo-1" for d in docs)
    print(f"\nsplit through the waypoint: echo-1 {v1}, echo-2 {v2} of {REQUESTS} (weights 1:3)")
    assert v1 + v2 == REQUESTS and v1 >= 1
    assert 45 <= v2 <= 75
