"""The one-updater store: atomic deltas, immutable snapshots, consistent indexes, lookups."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshcore.protos.istio import security as sec
from meshcore.protos.istio import workload as wl
from meshcore.wds import (
    ConversionError,
    ServiceDestination,
    Store,
    WorkloadDestination,
    find_destination,
    policies_for,
    select_endpoint,
)
from meshcore.wds.store import ResourceUpdate, to_update
from meshcore.xds.types import TYPE_ADDRESS, TYPE_AUTHORIZATION
from tests.meshcore.wds.factories import (
    address_of,
    pod_uid,
    policy,
    service,
    service_key,
    workload,
)

IP = ipaddress.ip_address
WEB = service_key("web")


def updates(*items: wl.Workload | wl.Service) -> list[ResourceUpdate]:
    return [to_update(*address_of(i)) for i in items]


def populated() -> Store:
    store = Store()
    store.apply(TYPE_ADDRESS, updates(
        service("web", vip="10.96.0.10", ports=[(80, 8080), (81, 0)]),
        workload("web-1", address="10.0.0.1", services={WEB: [(80, 8080), (81, 9001)]}),
        workload("web-2", address="10.0.0.2", services={WEB: [(80, 8080)]}),
        workload("db-1", address="10.0.0.9", policies=("shop/sel",)),
    ))
    store.apply(TYPE_AUTHORIZATION, [
        to_update("istio-system/global", policy("global", "istio-system", scope=sec.Scope.GLOBAL)),
        to_update("shop/ns-wide", policy("ns-wide")),
        to_update("other/ns-wide", policy("ns-wide", "other")),
        to_update("shop/sel", policy("sel", scope=sec.Scope.WORKLOAD_SELECTOR)),
    ])
    return store


def test_indexes_after_apply() -> None:
    """Workloads by uid and (network, IP), services by key, VIP and VIP:port, endpoints."""
    snap = populated().snapshot
    assert snap.generation == 2
    assert snap.synced_types == {TYPE_ADDRESS, TYPE_AUTHORIZATION}
    assert snap.workloads_by_address[("", IP("10.0.0.2"))].uid == pod_uid("shop", "web-2")
    assert snap.services_by_vip_port[("", IP("10.96.0.10"), 80)].key == WEB
    assert [s.key for s in snap.services_by_vip[("", IP("10.96.0.10"))]] == [WEB]
    assert set(snap.endpoints[WEB]) == {pod_uid("shop", "web-1"), pod_uid("shop", "web-2")}
    assert snap.global_policies == ("istio-system/global",)
    assert snap.namespace_policies["shop"] == ("shop/ns-wide",)


def test_bad_resource_rejects_the_whole_delta_and_keeps_the_snapshot() -> None:
    """One invalid resource in a response changes nothing (all-or-nothing)."""
    store = populated()
    before = store.snapshot
    bad = ResourceUpdate("Kubernetes//Pod/shop/x", bytes(wl.Address(workload=wl.Workload(
        uid="Kubernetes//Pod/shop/x", namespace="shop", addresses=[b"\x01"]))))
    with pytest.raises(ConversionError, match="addresses"):
        store.apply(TYPE_ADDRESS, [*updates(workload("new", address="10.0.0.50")), bad],
                    removed=[pod_uid("shop", "web-1")])
    assert store.snapshot is before
    assert pod_uid("shop", "new") not in store.snapshot.workloads
    assert pod_uid("shop", "web-1") in store.snapshot.workloads


def test_undecodable_bytes_are_a_conversion_error() -> None:
    """Garbage bytes in an Any are rejected naming the resource."""
    with pytest.raises(ConversionError, match="shop/p"):
        Store().apply(TYPE_AUTHORIZATION, [ResourceUpdate("shop/p", b"\xff\xff\xff")])


def test_snapshots_are_immutable_and_independent() -> None:
    """A published snapshot never changes when later deltas are applied."""
    store = populated()
    old = store.snapshot
    store.apply(TYPE_ADDRESS, updates(workload("web-3", address="10.0.0.3",
                                               services={WEB: [(80, 8080)]})),
                removed=[pod_uid("shop", "web-1")])
    assert pod_uid("shop", "web-1") in old.workloads and len(old.endpoints[WEB]) == 2
    assert set(store.snapshot.endpoints[WEB]) == {pod_uid("shop", "web-2"),
                                                  pod_uid("shop", "web-3")}
    with pytest.raises(TypeError):
        old.workloads["x"] = None  # type: ignore[index]


def test_removal_and_update_keep_indexes_consistent() -> None:
    """Moving an IP and removing a service updates every index; unknown removals are ignored."""
    store = populated()
    store.apply(TYPE_ADDRESS, updates(workload("web-2", address="10.0.0.22")),
                removed=[WEB, "never/existed"])
    snap = store.snapshot
    assert ("", IP("10.0.0.2")) not in snap.workloads_by_address
    assert snap.workloads_by_address[("", IP("10.0.0.22"))].name == "web-2"
    assert ("", IP("10.96.0.10")) not in snap.services_by_vip
    assert ("", IP("10.96.0.10"), 80) not in snap.services_by_vip_port
    assert set(snap.endpoints[WEB]) == {pod_uid("shop", "web-1")}  # web-2 no longer backs it


def test_unsupported_type_is_rejected() -> None:
    """A type URL the store does not know is a ConversionError."""
    with pytest.raises(ConversionError, match="unsupported type"):
        Store().apply("type.googleapis.com/istio.workload.Workload", [])


FIND = [
    pytest.param("10.96.0.10", "service", WEB, id="service VIP"),
    pytest.param("10.0.0.2", "workload", pod_uid("shop", "web-2"), id="pod IP"),
    pytest.param("192.0.2.1", None, None, id="unknown IP is passthrough"),
]


@pytest.mark.parametrize(("dest", "kind", "key"), FIND)
def test_find_destination(dest: str, kind: str | None, key: str | None) -> None:
    """Service VIP first, then workload IP, else None."""
    got = find_destination(populated().snapshot, IP(dest), 80)
    if kind is None:
        assert got is None
    elif kind == "service":
        assert isinstance(got, ServiceDestination) and got.service.key == key
    else:
        assert isinstance(got, WorkloadDestination) and got.workload.uid == key


def test_find_destination_prefers_the_callers_namespace() -> None:
    """Two services sharing a VIP: the one in the source namespace wins."""
    store = Store()
    store.apply(TYPE_ADDRESS, updates(service("a", "zzz", vip="10.96.1.1"),
                                      service("a", "aaa", vip="10.96.1.1")))
    got = find_destination(store.snapshot, IP("10.96.1.1"), 80, source_namespace="zzz")
    assert isinstance(got, ServiceDestination) and got.service.namespace == "zzz"
    got = find_destination(store.snapshot, IP("10.96.1.1"), 80, source_namespace="none")
    assert isinstance(got, ServiceDestination) and got.service.namespace == "aaa"


def first(candidates, weights):
    """A deterministic chooser: the first candidate in uid order."""
    return min(candidates, key=lambda e: e.workload.uid)


SELECT = [
    pytest.param(80, {"web-1": 8080, "web-2": 8080}, id="numeric target port"),
    pytest.param(81, {"web-1": 9001}, id="named port resolved per workload"),
    pytest.param(82, {}, id="port the service lacks"),
]


@pytest.mark.parametrize(("port", "expected"), SELECT)
def test_select_endpoint_candidates(port: int, expected: dict[str, int]) -> None:
    """Candidates are the endpoints that have the port, with their target ports."""
    snap = populated().snapshot
    seen: dict[str, int] = {}

    def record(candidates, weights):
        seen.update({e.workload.name: e.port for e in candidates})
        return candidates[0]

    got = select_endpoint(snap, snap.services[WEB], port, choose=record)
    assert seen == expected
    assert (got is None) == (not expected)


def test_select_endpoint_skips_unhealthy_and_weights_by_capacity() -> None:
    """Unhealthy pods are not candidates; weights are the capacities."""
    store = populated()
    store.apply(TYPE_ADDRESS, updates(
        workload("web-1", address="10.0.0.1", services={WEB: [(80, 8080)]},
                 status=wl.WorkloadStatus.UNHEALTHY),
        workload("web-2", address="10.0.0.2", services={WEB: [(80, 8080)]}, capacity=5),
    ))
    calls = []

    def record(candidates, weights):
        calls.append(([e.workload.name for e in candidates], list(weights)))
        return candidates[0]

    snap = store.snapshot
    got = select_endpoint(snap, snap.services[WEB], 80, choose=record)
    assert calls == [(["web-2"], [5])]
    assert got is not None and got.ip == IP("10.0.0.2") and got.port == 8080


def test_select_endpoint_strict_locality() -> None:
    """STRICT load balancing keeps only endpoints matching every preferred scope."""
    store = Store()
    lb = wl.LoadBalancing(routing_preference=[wl.LoadBalancingScope.ZONE],
                          mode=wl.LoadBalancingMode.STRICT)
    store.apply(TYPE_ADDRESS, updates(
        service("web", load_balancing=lb),
        workload("near", address="10.0.0.1", services={WEB: [(80, 8080)]},
                 locality=wl.Locality(zone="z1")),
        workload("far", address="10.0.0.2", services={WEB: [(80, 8080)]},
                 locality=wl.Locality(zone="z2")),
        workload("client", "other", address="10.0.1.1", locality=wl.Locality(zone="z1")),
    ))
    snap = store.snapshot
    src = snap.workloads[pod_uid("other", "client")]
    got = select_endpoint(snap, snap.services[WEB], 80, source=src, choose=first)
    assert got is not None and got.workload.name == "near"


def test_policies_for_global_namespace_and_selector() -> None:
    """Global + own-namespace + referenced selector policies apply; others do not."""
    snap = populated().snapshot
    db = snap.workloads[pod_uid("shop", "db-1")]
    web = snap.workloads[pod_uid("shop", "web-1")]
    assert [p.key for p in policies_for(snap, db)] == [
        "istio-system/global", "shop/ns-wide", "shop/sel"]
    assert [p.key for p in policies_for(snap, web)] == ["istio-system/global", "shop/ns-wide"]


def rebuilt_indexes(snap):
    """The indexes recomputed from scratch from workloads and services (the oracle)."""
    by_address = {}
    for w in sorted(snap.workloads.values(), key=lambda w: w.uid):
        for a in w.addresses:
            by_address.setdefault((w.network, a), set()).add(w.uid)
    by_vip: dict = {}
    for s in snap.services.values():
        for vip in s.addresses:
            by_vip.setdefault((vip.network, vip.address), []).append(s.key)
    by_vip_port = {}
    for key, members in by_vip.items():
        for skey in sorted(members, reverse=True):
            for port in snap.services[skey].ports:
                by_vip_port[(*key, port.service_port)] = skey
    endpoints: dict = {}
    for w in snap.workloads.values():
        for entry in w.services:
            endpoints.setdefault(entry.service, set()).add(w.uid)
    return by_address, {k: sorted(v) for k, v in by_vip.items()}, by_vip_port, endpoints


_IPS = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
_VIPS = ["10.96.0.1", "10.96.0.2"]
_SVCS = ["a", "b", "c"]
# Plain tuples (protos are built in the test: hypothesis cannot introspect betterproto oneofs).
_upsert_workload = st.tuples(
    st.just("w"), st.integers(0, 3), st.sampled_from(_IPS),
    st.frozensets(st.sampled_from(_SVCS), max_size=2),
)
_upsert_service = st.tuples(
    st.just("s"), st.sampled_from(_SVCS), st.sampled_from(_VIPS), st.sampled_from([80, 81]),
)
_removal = st.one_of(
    st.builds(lambda n: pod_uid("shop", f"w{n}"), st.integers(0, 3)),
    st.builds(service_key, st.sampled_from(_SVCS)),
)


def build(spec: tuple) -> wl.Workload | wl.Service:
    if spec[0] == "w":
        _, n, address, svcs = spec
        return workload(f"w{n}", address=address,
                        services={service_key(s): [(80, 8080)] for s in sorted(svcs)})
    _, name, vip, port = spec
    return service(name, vip=vip, ports=[(port, 8080)])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.lists(st.one_of(_upsert_workload, _upsert_service), max_size=4),
                          st.lists(_removal, max_size=2)), max_size=8))
def test_indexes_always_match_a_rebuild(deltas) -> None:
    """After any sequence of deltas every index equals one rebuilt from scratch."""
    store = Store()
    for upserts, removed in deltas:
        items = [build(spec) for spec in upserts]
        store.apply(TYPE_ADDRESS, updates(*{address_of(i)[0]: i for i in items}.values()),
                    removed)
        snap = store.snapshot
        by_address, by_vip, by_vip_port, endpoints = rebuilt_indexes(snap)
        # Shared pod IPs: the index holds one of the claimants (last writer wins).
        assert {k: w.uid for k, w in snap.workloads_by_address.items()}.keys() == by_address.keys()
        for key, w in snap.workloads_by_address.items():
            assert w.uid in by_address[key] and snap.workloads[w.uid] is w
        assert {k: [s.key for s in v] for k, v in snap.services_by_vip.items()} == by_vip
        assert {k: s.key for k, s in snap.services_by_vip_port.items()} == by_vip_port
        assert {k: set(v) for k, v in snap.endpoints.items()} == endpoints
