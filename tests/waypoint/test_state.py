"""The waypoint's config store: four resource types, all-or-nothing applies, NACK errors."""

from __future__ import annotations

import pytest

from meshcore.protos.ambient.waypoint import v1 as pb
from meshcore.wds import ResourceUpdate
from meshcore.xds.errors import ResourceRejected
from meshcore.xds.types import TYPE_ADDRESS
from waypoint.state import (
    TYPE_L7_AUTHORIZATION,
    TYPE_ROUTE_CONFIGURATION,
    WAYPOINT_TYPES,
    WaypointStore,
)

GOOD = pb.RouteConfiguration(name="shop/r.shop.svc.cluster.local", hostname="r.shop.svc",
                             routes=[pb.HttpRoute(namespace="shop", name="r", rules=[
                                 pb.RouteRule(matches=[pb.RouteMatch()])])])
BAD = pb.RouteConfiguration(name="shop/bad", routes=[pb.HttpRoute(
    namespace="shop", name="bad", rules=[pb.RouteRule(matches=[pb.RouteMatch(
        path=pb.PathMatch(type=pb.PathMatchType.REGULAR_EXPRESSION, value="("))])])])
POLICY = pb.L7Authorization(name="p", namespace="shop", waypoints=["shop/waypoint"])


def test_all_types_sync_and_removals_apply() -> None:
    """Each subscribed type marks itself synced; a removal drops the named resource."""
    store = WaypointStore()
    store.apply(TYPE_ADDRESS, [])
    store.apply("type.googleapis.com/istio.security.Authorization", [])
    store.apply(TYPE_ROUTE_CONFIGURATION, [ResourceUpdate(GOOD.name, bytes(GOOD))])
    state = store.apply(TYPE_L7_AUTHORIZATION, [ResourceUpdate("shop/p", bytes(POLICY))])
    assert state.synced_types == frozenset(WAYPOINT_TYPES)
    assert list(state.routes) == [GOOD.name] and list(state.policies) == ["shop/p"]
    state = store.apply(TYPE_ROUTE_CONFIGURATION, [], [GOOD.name])
    assert not state.routes


@pytest.mark.parametrize(("type_url", "value"), [
    pytest.param(TYPE_ROUTE_CONFIGURATION, bytes(BAD), id="uncompilable-regex"),
    pytest.param(TYPE_ROUTE_CONFIGURATION, b"\xff\xff\xff", id="undecodable"),
    pytest.param(TYPE_L7_AUTHORIZATION, b"\xff\xff\xff", id="undecodable-policy"),
    pytest.param("type.googleapis.com/unknown.Type", b"", id="unknown-type"),
])
def test_bad_resources_are_rejected_and_state_kept(type_url: str, value: bytes) -> None:
    """A bad resource raises ResourceRejected (the xDS client NACKs) and nothing changes,
    not even the good resource in the same response."""
    store = WaypointStore()
    before = store.apply(TYPE_ROUTE_CONFIGURATION, [ResourceUpdate(GOOD.name, bytes(GOOD))])
    with pytest.raises(ResourceRejected):
        store.apply(type_url, [ResourceUpdate("shop/other", bytes(GOOD)),
                               ResourceUpdate("shop/bad", value)])
    assert store.state is before
