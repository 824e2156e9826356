"""The proxy's workload state: one updater, immutable indexed snapshots.

Who calls it: the xDS client's delta handler (on the asyncio bridge thread in ztunnel and the
waypoint; see `ztunnel/config_client.py`) calls `Store.apply(...)` once per Delta xDS
response. What it hands to: the returned `Snapshot`, which is immutable and safe to pass
to the trio data path and to keep for as long as a connection needs it.

Invariants:
* One writer: only `Store.apply` changes the state, and it is synchronous.
* All-or-nothing per response: every resource is converted first (raising
  `ConversionError` with the resource name); only when all succeed is a new Snapshot
  built. On error the previous snapshot stays current, and the caller NACKs.
* A Snapshot never changes after it is published: its mappings are read-only views over
  dicts that the store copies (copy-on-write, per apply) and never touches again.
* Indexes are consistent with `workloads` / `services` / `policies` in every snapshot.

An empty delta for a type already synced returns the current snapshot unchanged (same object,
same generation). Removing a name that is not known is ignored (the server may re-send removals
after a reconnect). An Address resource's name must equal the workload uid or `ns/hostname`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

import betterproto

from meshcore.protos.istio import security as security_pb
from meshcore.protos.istio import workload as workload_pb
from meshcore.wds._gate import IPAddress
from meshcore.wds.authorization import Authorization, Scope
from meshcore.wds.errors import ConversionError
from meshcore.wds.workload import NetworkMode, Service, Workload, address_from_proto
from meshcore.xds.types import TYPE_ADDRESS, TYPE_AUTHORIZATION

_EMPTY: Mapping[Any, Any] = MappingProxyType({})


def _empty() -> Any:
    return dataclasses.field(default_factory=lambda: _EMPTY)


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    """One consistent view of the mesh as this proxy knows it. Read-only.

    Attributes:
        generation: number of successful applies so far (0 = nothing received).
        synced_types: type URLs for which at least one response was applied.
        workloads: by uid.
        workloads_by_address: by (network, IP); host-network workloads are not indexed. When
            several workloads claim one IP (a pod IP reused before the old pod is gone), the
            latest written wins, and removing it falls back to another claimant.
        services: by `ns/hostname`.
        services_by_vip: by (network, VIP) -> services sharing that VIP, sorted by key.
        services_by_vip_port: by (network, VIP, service port) -> the first service (by key).
        endpoints: service key -> {uid: Workload} of workloads listing it in `services`.
        policies: by `ns/name`.
        global_policies: keys of GLOBAL-scope policies, sorted.
        namespace_policies: namespace -> keys of its NAMESPACE-scope policies, sorted.
    """

    generation: int = 0
    synced_types: frozenset[str] = frozenset()
    workloads: Mapping[str, Workload] = _empty()
    workloads_by_address: Mapping[tuple[str, IPAddress], Workload] = _empty()
    services: Mapping[str, Service] = _empty()
    services_by_vip: Mapping[tuple[str, IPAddress], tuple[Service, ...]] = _empty()
    services_by_vip_port: Mapping[tuple[str, IPAddress, int], Service] = _empty()
    endpoints: Mapping[str, Mapping[str, Workload]] = _empty()
    policies: Mapping[str, Authorization] = _empty()
    global_policies: tuple[str, ...] = ()
    namespace_policies: Mapping[str, tuple[str, ...]] = _empty()
    address_claims: Mapping[tuple[str, IPAddress], frozenset[str]] = _empty()  # -> uids


@dataclasses.dataclass(frozen=True, slots=True)
class ResourceUpdate:
    """One resource of a delta as the store needs it: name and serialized proto."""

    name: str
    value: bytes


class Store:
    """The single updater of a proxy's workload state."""

    def __init__(self) -> None:
        self._snapshot = Snapshot()

    @property
    def snapshot(self) -> Snapshot:
        """The current snapshot (never mutated; replaced by apply)."""
        return self._snapshot

    def apply(
        self, type_url: str, upserts: Iterable[ResourceUpdate], removed: Iterable[str] = ()
    ) -> Snapshot:
        """Apply one Delta xDS response atomically and return the new snapshot.

        Raises:
            ConversionError: some resource is invalid (or the type is unknown); nothing changed.
        """
        removed = tuple(removed)
        upserts = tuple(upserts)
        if not upserts and not removed and type_url in self._snapshot.synced_types:
            return self._snapshot  # e.g. the empty first response after a resume: no change
        if type_url == TYPE_ADDRESS:
            converted = [(u.name, _decode_address(u)) for u in upserts]
            nxt = _apply_addresses(self._snapshot, converted, removed)
        elif type_url == TYPE_AUTHORIZATION:
            policies = [(u.name, _decode_authorization(u)) for u in upserts]
            nxt = _apply_policies(self._snapshot, policies, removed)
        else:
            raise ConversionError("resource", "", "type_url", f"unsupported type {type_url!r}")
        self._snapshot = dataclasses.replace(
            nxt,
            generation=self._snapshot.generation + 1,
            synced_types=self._snapshot.synced_types | {type_url},
        )
        return self._snapshot


def _decode_address(u: ResourceUpdate) -> Workload | Service:
    try:
        msg = workload_pb.Address().parse(u.value)
    except Exception as e:  # betterproto raises assorted errors on bad bytes
        raise ConversionError("Address", u.name, "", f"undecodable protobuf: {e}") from e
    return address_from_proto(msg, resource=u.name)


def _decode_authorization(u: ResourceUpdate) -> Authorization:
    try:
        msg = security_pb.Authorization().parse(u.value)
    except Exception as e:
        raise ConversionError("Authorization", u.name, "", f"undecodable protobuf: {e}") from e
    return Authorization.from_proto(msg, resource=u.name)


class _AddressIndexes:
    """Copy-on-write working set for one apply of Address resources."""

    def __init__(self, s: Snapshot) -> None:
        self.workloads = dict(s.workloads)
        self.by_address = dict(s.workloads_by_address)
        self.claims = dict(s.address_claims)
        self.services = dict(s.services)
        self.by_vip = dict(s.services_by_vip)
        self.by_vip_port = dict(s.services_by_vip_port)
        self.endpoints: dict[str, Mapping[str, Workload]] = dict(s.endpoints)
        self._copied: dict[str, dict[str, Workload]] = {}

    def _endpoints_of(self, key: str) -> dict[str, Workload]:
        if key not in self._copied:
            self._copied[key] = dict(self.endpoints.get(key, {}))
        return self._copied[key]

    def remove(self, name: str) -> None:
        old_workload = self.workloads.pop(name, None)
        if old_workload is not None:
            for addr in _address_keys(old_workload):
                others = self.claims.get(addr, frozenset()) - {name}
                if others:
                    self.claims[addr] = others
                else:
                    self.claims.pop(addr, None)
                if (w := self.by_address.get(addr)) is not None and w.uid == name:
                    if others:
                        self.by_address[addr] = self.workloads[min(others)]
                    else:
                        del self.by_address[addr]
            for entry in old_workload.services:
                self._endpoints_of(entry.service).pop(name, None)
        old_service = self.services.pop(name, None)
        if old_service is not None:
            self._reindex_vips(old_service)

    def add_workload(self, w: Workload) -> None:
        self.workloads[w.uid] = w
        for addr in _address_keys(w):
            self.by_address[addr] = w
            self.claims[addr] = self.claims.get(addr, frozenset()) | {w.uid}
        for entry in w.services:
            self._endpoints_of(entry.service)[w.uid] = w

    def add_service(self, s: Service) -> None:
        self.services[s.key] = s
        self._reindex_vips(s)

    def _reindex_vips(self, s: Service) -> None:
        """Recompute the VIP indexes for every VIP of `s` from `self.services`."""
        for vip in s.addresses:
            key = (vip.network, vip.address)
            sharing = sorted(
                (other for other in self.services.values()
                 if any((a.network, a.address) == key for a in other.addresses)),
                key=lambda o: o.key,
            )
            for port in s.ports:
                self.by_vip_port.pop((*key, port.service_port), None)
            if sharing:
                self.by_vip[key] = tuple(sharing)
            else:
                self.by_vip.pop(key, None)
            for other in reversed(sharing):  # first by key wins
                for port in other.ports:
                    self.by_vip_port[(*key, port.service_port)] = other

    def finish(self, base: Snapshot) -> Snapshot:
        for key, members in self._copied.items():
            if members:
                self.endpoints[key] = MappingProxyType(members)
            else:
                self.endpoints.pop(key, None)
        return dataclasses.replace(
            base,
            workloads=MappingProxyType(self.workloads),
            workloads_by_address=MappingProxyType(self.by_address),
            address_claims=MappingProxyType(self.claims),
            services=MappingProxyType(self.services),
            services_by_vip=MappingProxyType(self.by_vip),
            services_by_vip_port=MappingProxyType(self.by_vip_port),
            endpoints=MappingProxyType(self.endpoints),
        )


def _address_keys(w: Workload) -> list[tuple[str, IPAddress]]:
    if w.network_mode is NetworkMode.HOST_NETWORK:
        return []
    return [(w.network, ip) for ip in w.addresses]


def _apply_addresses(
    s: Snapshot, upserts: list[tuple[str, Workload | Service]], removed: tuple[str, ...]
) -> Snapshot:
    work = _AddressIndexes(s)
    for name in removed:
        work.remove(name)
    for name, item in upserts:
        work.remove(name)
        if isinstance(item, Workload):
            work.add_workload(item)
        else:
            work.add_service(item)
    return work.finish(s)


def _apply_policies(
    s: Snapshot, upserts: list[tuple[str, Authorization]], removed: tuple[str, ...]
) -> Snapshot:
    policies = dict(s.policies)
    for name in removed:
        policies.pop(name, None)
    for name, policy in upserts:
        policies[name] = policy
    global_keys = sorted(k for k, p in policies.items() if p.scope is Scope.GLOBAL)
    by_ns: dict[str, list[str]] = {}
    for key in sorted(policies):
        p = policies[key]
        if p.scope is Scope.NAMESPACE:
            by_ns.setdefault(p.namespace, []).append(key)
    return dataclasses.replace(
        s,
        policies=MappingProxyType(policies),
        global_policies=tuple(global_keys),
        namespace_policies=MappingProxyType({ns: tuple(k) for ns, k in by_ns.items()}),
    )


def to_update(name: str, message: betterproto.Message) -> ResourceUpdate:
    """Build a ResourceUpdate from a proto (tests and local config sources)."""
    return ResourceUpdate(name, bytes(message))
