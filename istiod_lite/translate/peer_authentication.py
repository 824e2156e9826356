"""PeerAuthentication → ztunnel authorizations (AMBIENT-INTERNALS §7.3), as istiod does it.

Called by translator.py. Pure. ztunnel has no PeerAuthentication type; istiod expresses it as
DENY authorizations (`[is] .../ambient/authorization.go`, `policies.go`):
* `static_strict_policy`: `<root>/istio_converted_static_strict`, WORKLOAD_SELECTOR, DENY,
  one Match `not_principals: [presence]` (deny connections without a peer identity); sent
  whenever any PeerAuthentication exists, and referenced by workloads whose effective mode
  (mesh → namespace → workload; UNSET inherits) is STRICT;
* `convert_port_level`: a workload-selector policy outside the root namespace with
  `portLevelMtls` becomes `<ns>/converted_peer_authentication_<name>`, with per-port groups
  (STRICT ports: no identity on that port ⇒ deny; PERMISSIVE/DISABLE exceptions under a STRICT
  parent: `not_destination_ports`), merged with the parent's strictness when needed;
* `workload_policy_names`: which of those a workload lists in `authorization_policies`.
DISABLE behaves like PERMISSIVE. Conflicts at one level: the oldest policy wins (ties, common
in manifest folders without timestamps, break by namespace/name).
"""

from __future__ import annotations

from collections.abc import Iterable

import betterproto.lib.google.protobuf as pb

from istiod_lite.translate.mesh import MeshConfig
from meshcore.model import PeerAuthentication, Pod, selects
from meshcore.protos.istio.security import (
    Action,
    Authorization,
    Group,
    Match,
    Rules,
    Scope,
    StringMatch,
)

STATIC_STRICT_NAME = "istio_converted_static_strict"
CONVERTED_PREFIX = "converted_peer_authentication_"


def _no_identity(port: int | None = None) -> Match:
    m = Match(not_principals=[StringMatch(presence=pb.Empty())])
    if port is not None:
        m.destination_ports = [port]
    return m


def static_strict_policy(mesh: MeshConfig) -> Authorization:
    return Authorization(name=STATIC_STRICT_NAME, namespace=mesh.root_namespace,
                         scope=Scope.WORKLOAD_SELECTOR, action=Action.DENY,
                         groups=[Group(rules=[Rules(matches=[_no_identity()])])])


def converted_name(pa: PeerAuthentication) -> str:
    return CONVERTED_PREFIX + pa.name


def _oldest(pas: Iterable[PeerAuthentication]) -> PeerAuthentication | None:
    return min(pas, key=lambda p: (p.meta.creation_timestamp, p.namespace, p.name), default=None)


def _strict(pa: PeerAuthentication | None) -> bool:
    return pa is not None and pa.mode == "STRICT"


def _unset(pa: PeerAuthentication | None) -> bool:
    return pa is None or pa.mode == "UNSET"


def _is_level_policy(pa: PeerAuthentication) -> bool:
    """Mesh- or namespace-level (no selector, or an empty one)."""
    return not pa.selector


def parents(all_pas: list[PeerAuthentication], namespace: str, mesh: MeshConfig
            ) -> tuple[PeerAuthentication | None, PeerAuthentication | None]:
    """(namespace-level, mesh-level) policies in effect for `namespace`."""
    ns_pol = _oldest(p for p in all_pas if p.namespace == namespace and _is_level_policy(p)
                     and namespace != mesh.root_namespace)
    root_pol = _oldest(p for p in all_pas
                       if p.namespace == mesh.root_namespace and _is_level_policy(p))
    return ns_pol, root_pol


def convert_port_level(pa: PeerAuthentication, ns_pol: PeerAuthentication | None,
                       root_pol: PeerAuthentication | None, mesh: MeshConfig
                       ) -> Authorization | None:
    if pa.namespace == mesh.root_namespace or pa.selector is None or not pa.port_level_mtls:
        return None
    mode = pa.mode
    rules: list[Rules] = []
    groups: list[Group] = []
    if mode == "STRICT":
        rules.append(Rules(matches=[_no_identity()]))
    found_non_strict = False
    for port, port_mode in pa.port_level_mtls:
        if port_mode == "STRICT":
            parent_strict = (mode == "STRICT"
                             or (mode == "UNSET" and _strict(ns_pol))
                             or (mode == "UNSET" and _unset(ns_pol) and _strict(root_pol)))
            if parent_strict:
                continue  # already enforced by the parent's strictness
            groups.append(Group(rules=[Rules(matches=[_no_identity(port)])]))
        elif port_mode in ("PERMISSIVE", "DISABLE"):
            if mode in ("PERMISSIVE", "DISABLE"):
                continue
            if mode == "UNSET" and ((ns_pol is not None and not _strict(ns_pol))
                                    or (ns_pol is None and root_pol is not None
                                        and not _strict(root_pol))
                                    or (ns_pol is None and root_pol is None)):
                continue
            found_non_strict = True
            rules.append(Rules(matches=[Match(not_destination_ports=[port])]))
    if mode == "STRICT" and not found_non_strict:
        return None  # plain STRICT: the static policy covers it
    if not rules and not groups:
        return None
    merge = ((_strict(root_pol) and (_unset(ns_pol) or _strict(ns_pol))) or _strict(ns_pol))
    if merge and found_non_strict:
        rules.append(Rules(matches=[_no_identity()]))
    if rules:
        groups.append(Group(rules=rules))
    return Authorization(name=converted_name(pa), namespace=pa.namespace,
                         scope=Scope.WORKLOAD_SELECTOR, action=Action.DENY, groups=groups)


def workload_policy_names(pod: Pod, all_pas: list[PeerAuthentication],
                          mesh: MeshConfig) -> list[str]:
    """The PeerAuthentication-derived policy names a workload references (sorted)."""
    applicable = [p for p in all_pas
                  if (p.namespace == mesh.root_namespace and p.selector is None)
                  or (p.namespace == pod.namespace
                      and (p.selector is None or selects(p.selector, pod.labels)))]
    mesh_pol = _oldest(p for p in applicable
                       if _is_level_policy(p) and p.namespace == mesh.root_namespace)
    ns_pol = _oldest(p for p in applicable
                     if _is_level_policy(p) and p.namespace != mesh.root_namespace)
    wl_pol = _oldest(p for p in applicable
                     if not _is_level_policy(p) and p.namespace != mesh.root_namespace)
    strict = _strict(mesh_pol)
    if ns_pol is not None and not _unset(ns_pol):
        strict = _strict(ns_pol)
    port_key = ""
    if wl_pol is not None:
        if wl_pol.mode == "STRICT":
            strict = True
        elif wl_pol.mode in ("PERMISSIVE", "DISABLE"):
            strict = False
        if wl_pol.port_level_mtls:
            modes = [m for _, m in wl_pol.port_level_mtls]
            key = f"{wl_pol.namespace}/{converted_name(wl_pol)}"
            if wl_pol.mode == "STRICT":
                if any(m in ("PERMISSIVE", "DISABLE") for m in modes):
                    port_key, strict = key, False
            elif wl_pol.mode in ("PERMISSIVE", "DISABLE"):
                if "STRICT" in modes:
                    port_key = key
            elif strict:
                if "PERMISSIVE" in modes:
                    port_key, strict = key, False
            elif "STRICT" in modes:
                port_key = key
    names = set()
    if strict:
        names.add(f"{mesh.root_namespace}/{STATIC_STRICT_NAME}")
    if port_key:
        names.add(port_key)
    return sorted(names)


class PeerAuthIndex:
    """PeerAuthentications grouped by namespace, so per-namespace questions cost O(policies
    there) instead of O(all policies). Answers equal `parents` / the inputs of
    `workload_policy_names` over the whole list (they filter by namespace themselves)."""

    def __init__(self, all_pas: Iterable[PeerAuthentication], mesh: MeshConfig) -> None:
        self._mesh = mesh
        self._by_ns: dict[str, list[PeerAuthentication]] = {}
        for pa in all_pas:
            self._by_ns.setdefault(pa.namespace, []).append(pa)
        self._root = self._by_ns.get(mesh.root_namespace, [])
        self._root_level = tuple(p for p in self._root if p.selector is None)
        self._parents: dict[str, tuple[PeerAuthentication | None,
                                       PeerAuthentication | None]] = {}

    def parents(self, namespace: str
                ) -> tuple[PeerAuthentication | None, PeerAuthentication | None]:
        """`parents(all_pas, namespace, mesh)`."""
        found = self._parents.get(namespace)
        if found is None:
            found = self._parents[namespace] = parents(
                self._by_ns.get(namespace, []) + self._root, namespace, self._mesh)
        return found

    def workload_candidates(self, namespace: str) -> tuple[PeerAuthentication, ...]:
        """Every policy `workload_policy_names` may apply to a pod in `namespace` (passing
        these instead of all policies gives the same answer)."""
        own = tuple(self._by_ns.get(namespace, ()))
        return own if namespace == self._mesh.root_namespace else own + self._root_level
