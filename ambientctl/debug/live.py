"""The mesh state `why` works on, read back from a running ztunnel's admin `/config_dump`.

Called by the `why` command (`--ztunnel-admin HOST:PORT`, or `--node NODE` in the sandbox).
What it hands back: a `MeshState` whose `snapshot` is rebuilt from the dump's `workloads`,
`services` and `policies` sections, and whose `model` is None (there are no manifests behind it).

How: ztunnel's dump is `meshcore.admin.jsonable.to_jsonable` over its frozen `meshcore.wds`
types. Each entry is turned back into the workload-API proto it came from (`istio.workload.
Address`, `istio.security.Authorization`), and those protos are applied to a fresh
`meshcore.wds.Store`, the one updater ztunnel uses. So every object crosses into the frozen types
at the data path's own `from_proto` gates (validated, `ConversionError` on nonsense), and the
snapshot's indexes are built by the same code as ztunnel's.

Invariants: nothing is guessed. A section or field the rebuild needs that the dump lacks is a
`SourceError` naming the entry and the missing fields; enum names, IPs and identities that do not
parse are `SourceError`s too. Fields the frozen types do not hold (proto `extensions`) are not
in the dump and not needed by the data path.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import betterproto.lib.google.protobuf as pb_protobuf

from ambientctl.debug import admin_client
from ambientctl.debug.errors import SourceError
from ambientctl.debug.state import MeshState, snapshot_of
from istiod_lite.translate import MeshConfig, ResourceSet
from meshcore.identity import InvalidIdentityError, SpiffeId
from meshcore.protos.istio import security as sec_pb
from meshcore.protos.istio import workload as wl_pb
from meshcore.wds import ConversionError, Service, Workload
from meshcore.wds import authorization as wds_authz
from meshcore.wds import workload as wds_wl

E = TypeVar("E", bound=enum.Enum)
SECTIONS = ("workloads", "services", "policies")


class _Entry:
    """One dump entry (a JSON object) with field access that names what is missing."""

    def __init__(self, data: Any, what: str, required: tuple[str, ...]) -> None:
        if not isinstance(data, Mapping):
            raise SourceError(f"/config_dump {what} is not a JSON object")
        missing = [f for f in required if f not in data]
        if missing:
            raise SourceError(f"/config_dump {what} lacks {', '.join(missing)}: cannot rebuild "
                              "ztunnel's state from it (is the ztunnel older than this "
                              "ambientctl?)")
        self.data = data
        self.what = what

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def sub(self, key: str, cls: Any) -> _Entry:
        return _Entry(self.data[key], f"{self.what}.{key}", _fields(cls))

    def enum(self, key: str, cls: type[E]) -> E:
        return _enum(self.data[key], cls, f"{self.what}.{key}")

    def ip(self, key: str) -> bytes:
        return _ip(self.data[key], f"{self.what}.{key}")


def _named(raw: Any, fallback: str, kind: str, *keys: str) -> str:
    """How a top-level entry is named in errors: by its resource name when the dump has it."""
    if isinstance(raw, Mapping) and all(isinstance(raw.get(k), str) for k in keys):
        return f"{kind} {'/'.join(raw[k] for k in keys)!r}"
    return fallback


def _fields(cls: Any) -> tuple[str, ...]:
    """The fields a frozen `meshcore.wds` type holds: all of them must be in its dump entry."""
    return tuple(f.name for f in dataclasses.fields(cls))


def _enum(value: Any, cls: type[E], what: str) -> E:
    try:
        return cls[str(value)]
    except KeyError:
        raise SourceError(f"/config_dump {what}: {value!r} is not a {cls.__name__} "
                          f"(one of {', '.join(m.name for m in cls)})") from None


def _ip(value: Any, what: str) -> bytes:
    try:
        return ipaddress.ip_address(str(value)).packed
    except ValueError:
        raise SourceError(f"/config_dump {what}: {value!r} is not an IP address") from None


def _gateway(entry: _Entry, key: str) -> wl_pb.GatewayAddress | None:
    if entry[key] is None:
        return None
    gw = entry.sub(key, wds_wl.GatewayAddress)
    dest = gw["destination"]
    if isinstance(dest, Mapping) and "hostname" in dest:
        d = gw.sub("destination", wds_wl.NamespacedHostname)
        return wl_pb.GatewayAddress(
            hostname=wl_pb.NamespacedHostname(d["namespace"], d["hostname"]),
            hbone_mtls_port=int(gw["hbone_mtls_port"]))
    d = gw.sub("destination", wds_wl.NetworkAddress)
    return wl_pb.GatewayAddress(address=wl_pb.NetworkAddress(d["network"], d.ip("address")),
                                hbone_mtls_port=int(gw["hbone_mtls_port"]))


def _ports(entry: _Entry, key: str) -> list[wl_pb.Port]:
    out = []
    for i, raw in enumerate(entry[key]):
        p = _Entry(raw, f"{entry.what}.{key}[{i}]", _fields(wds_wl.Port))
        out.append(wl_pb.Port(int(p["service_port"]), int(p["target_port"]),
                              wl_pb.AppProtocol(p.enum("app_protocol", wds_wl.AppProtocol))))
    return out


def workload_proto(raw: Any, index: int) -> wl_pb.Workload:
    """A dumped `meshcore.wds.Workload` as the `istio.workload.Workload` it was made from."""
    w = _Entry(raw, _named(raw, f"workloads[{index}]", "workload", "uid"), _fields(Workload))
    try:
        identity = SpiffeId.parse(str(w["identity"]))
    except InvalidIdentityError as e:
        raise SourceError(f"/config_dump {w.what}.identity: {e}") from None
    if identity.namespace != w["namespace"]:
        raise SourceError(f"/config_dump {w.what}: identity {identity} is not in namespace "
                          f"{w['namespace']!r}; the workload API cannot express that")
    msg = wl_pb.Workload(
        uid=w["uid"], name=w["name"], namespace=w["namespace"],
        addresses=[_ip(a, f"{w.what}.addresses[{i}]") for i, a in enumerate(w["addresses"])],
        hostname=w["hostname"], network=w["network"],
        tunnel_protocol=wl_pb.TunnelProtocol(w.enum("tunnel_protocol", wds_wl.TunnelProtocol)),
        trust_domain=identity.trust_domain, service_account=identity.service_account,
        node=w["node"], canonical_name=w["canonical_name"],
        canonical_revision=w["canonical_revision"],
        workload_type=wl_pb.WorkloadType(w.enum("workload_type", wds_wl.WorkloadType)),
        workload_name=w["workload_name"], native_tunnel=bool(w["native_tunnel"]),
        authorization_policies=[str(p) for p in w["authorization_policies"]],
        status=wl_pb.WorkloadStatus(w.enum("status", wds_wl.WorkloadStatus)),
        cluster_id=w["cluster_id"],
        network_mode=wl_pb.NetworkMode(w.enum("network_mode", wds_wl.NetworkMode)),
        capacity=int(w["capacity"]))
    for key in ("waypoint", "network_gateway"):
        if (gw := _gateway(w, key)) is not None:
            setattr(msg, key, gw)
    if w["application_tunnel"] is not None:
        at = w.sub("application_tunnel", wds_wl.ApplicationTunnel)
        msg.application_tunnel = wl_pb.ApplicationTunnel(
            wl_pb.ApplicationTunnelProtocol(
                at.enum("protocol", wds_wl.ApplicationTunnelProtocol)), int(at["port"]))
    loc = w.sub("locality", wds_wl.Locality)
    if any(loc[f] for f in ("region", "zone", "subzone")):
        msg.locality = wl_pb.Locality(loc["region"], loc["zone"], loc["subzone"])
    for i, raw_sp in enumerate(w["services"]):
        sp = _Entry(raw_sp, f"{w.what}.services[{i}]", _fields(wds_wl.ServicePorts))
        msg.services[str(sp["service"])] = wl_pb.PortList(_ports(sp, "ports"))
    return msg


def service_proto(raw: Any, index: int) -> wl_pb.Service:
    """A dumped `meshcore.wds.Service` as the `istio.workload.Service` it was made from."""
    s = _Entry(raw, _named(raw, f"services[{index}]", "service", "namespace", "hostname"),
               _fields(Service))
    addresses = []
    for i, raw_a in enumerate(s["addresses"]):
        a = _Entry(raw_a, f"{s.what}.addresses[{i}]", _fields(wds_wl.NetworkAddress))
        addresses.append(wl_pb.NetworkAddress(a["network"], a.ip("address")))
    msg = wl_pb.Service(
        name=s["name"], namespace=s["namespace"], hostname=s["hostname"], addresses=addresses,
        ports=_ports(s, "ports"), subject_alt_names=[str(n) for n in s["subject_alt_names"]],
        ip_families=wl_pb.IpFamilies(s.enum("ip_families", wds_wl.IpFamilies)),
        canonical=bool(s["canonical"]), ingress_use_waypoint=bool(s["ingress_use_waypoint"]))
    if (gw := _gateway(s, "waypoint")) is not None:
        msg.waypoint = gw
    if s["load_balancing"] is not None:
        lb = s.sub("load_balancing", wds_wl.LoadBalancing)
        msg.load_balancing = wl_pb.LoadBalancing(
            [wl_pb.LoadBalancingScope(_enum(v, wds_wl.LoadBalancingScope,
                                            f"{lb.what}.routing_preference[{i}]"))
             for i, v in enumerate(lb["routing_preference"])],
            wl_pb.LoadBalancingMode(lb.enum("mode", wds_wl.LoadBalancingMode)),
            wl_pb.LoadBalancingHealthPolicy(lb.enum("health_policy", wds_wl.HealthPolicy)))
    return msg


def _string_match(raw: Any, what: str) -> sec_pb.StringMatch:
    m = _Entry(raw, what, _fields(wds_authz.StringMatch))
    kind = m.enum("kind", wds_authz.StringMatchKind)
    if kind is wds_authz.StringMatchKind.PRESENCE:
        return sec_pb.StringMatch(presence=pb_protobuf.Empty())
    value = str(m["value"])
    if kind is wds_authz.StringMatchKind.PREFIX:
        return sec_pb.StringMatch(prefix=value)
    if kind is wds_authz.StringMatchKind.SUFFIX:
        return sec_pb.StringMatch(suffix=value)
    return sec_pb.StringMatch(exact=value)


def _cidr(raw: Any, what: str) -> sec_pb.Address:
    c = _Entry(raw, what, _fields(wds_authz.Cidr))
    try:
        net = ipaddress.ip_network(str(c["network"]))
    except ValueError:
        raise SourceError(f"/config_dump {what}: {c['network']!r} is not a CIDR") from None
    return sec_pb.Address(net.network_address.packed, net.prefixlen)


def _match(m: _Entry) -> sec_pb.Match:
    def each(key: str, conv: Callable[[Any, str], Any]) -> list[Any]:
        return [conv(v, f"{m.what}.{key}[{i}]") for i, v in enumerate(m[key])]

    def account(raw: Any, what: str) -> sec_pb.ServiceAccountMatch:
        a = _Entry(raw, what, _fields(wds_authz.ServiceAccountMatch))
        return sec_pb.ServiceAccountMatch(a["namespace"], a["service_account"])

    fields: dict[str, Any] = {}
    for key in ("namespaces", "not_namespaces", "principals", "not_principals"):
        fields[key] = each(key, _string_match)
    for key in ("source_ips", "not_source_ips", "destination_ips", "not_destination_ips"):
        fields[key] = each(key, _cidr)
    for key in ("destination_ports", "not_destination_ports"):
        fields[key] = [int(p) for p in m[key]]
    for key in ("service_accounts", "not_service_accounts"):
        fields[key] = each(key, account)
    return sec_pb.Match(**fields)


def policy_proto(raw: Any, index: int) -> sec_pb.Authorization:
    """A dumped `meshcore.wds.Authorization` as the `istio.security.Authorization` proto."""
    p = _Entry(raw, _named(raw, f"policies[{index}]", "policy", "namespace", "name"),
               _fields(wds_authz.Authorization))
    groups = []
    for g, raw_g in enumerate(p["groups"]):
        group = _Entry(raw_g, f"{p.what}.groups[{g}]", _fields(wds_authz.Group))
        rules = []
        for r, raw_r in enumerate(group["rules"]):
            rule = _Entry(raw_r, f"{group.what}.rules[{r}]", _fields(wds_authz.Rules))
            rules.append(sec_pb.Rules([
                _match(_Entry(raw_m, f"{rule.what}.matches[{i}]", _fields(wds_authz.Match)))
                for i, raw_m in enumerate(rule["matches"])]))
        groups.append(sec_pb.Group(rules))
    return sec_pb.Authorization(
        name=p["name"], namespace=p["namespace"],
        scope=sec_pb.Scope(p.enum("scope", wds_authz.Scope)),
        action=sec_pb.Action(p.enum("action", wds_authz.Action)),
        groups=groups, dry_run=bool(p["dry_run"]))


def resources_from_dump(dump: Mapping[str, Any]) -> ResourceSet:
    """The dump's workloads, services and policies as the protos istiod pushed (by name)."""
    missing = [s for s in SECTIONS if not isinstance(dump.get(s), list)]
    if missing:
        raise SourceError(f"the /config_dump has no {', '.join(missing)} section(s) (lists); "
                          "is that a ztunnel admin endpoint?")
    addresses: dict[str, wl_pb.Address] = {}
    for i, raw in enumerate(dump["workloads"]):
        w = workload_proto(raw, i)
        addresses[w.uid] = wl_pb.Address(workload=w)
    for i, raw in enumerate(dump["services"]):
        s = service_proto(raw, i)
        addresses[f"{s.namespace}/{s.hostname}"] = wl_pb.Address(service=s)
    policies = {}
    for i, raw in enumerate(dump["policies"]):
        p = policy_proto(raw, i)
        policies[f"{p.namespace}/{p.name}"] = p
    return ResourceSet(addresses=addresses, authorizations=policies)


def state_from_dump(dump: Mapping[str, Any], mesh: MeshConfig, *, where: str) -> MeshState:
    """A MeshState over the state held by the ztunnel that served `dump` (no model)."""
    resources = resources_from_dump(dump)
    try:
        snapshot = snapshot_of(resources)
    except ConversionError as e:
        raise SourceError(f"the /config_dump from {where} does not convert back into ztunnel's "
                          f"types: {e}") from e
    node = dump.get("node") or "?"
    source = (f"live: ztunnel on node {node} (admin {where} /config_dump, generation "
              f"{dump.get('generation', '?')})")
    return MeshState(None, mesh, resources, snapshot, source=source)


def load_live(host: str, port: int, mesh: MeshConfig, *, node: str | None = None) -> MeshState:
    """Fetch `/config_dump` from a ztunnel admin endpoint and rebuild its state."""
    dump = admin_client.fetch_config_dump(host, port, node=node)
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return state_from_dump(dump, mesh, where=where)
