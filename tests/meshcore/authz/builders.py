"""Terse builders for the authz tests: policies in AuthorizationPolicy notation, connections."""

from __future__ import annotations

import ipaddress
from typing import Any

from meshcore.authz import ConnectionAttributes
from meshcore.identity import SpiffeId
from meshcore.wds.authorization import (
    Action,
    Authorization,
    Cidr,
    Group,
    Match,
    Rules,
    Scope,
    ServiceAccountMatch,
    StringMatch,
    StringMatchKind,
)
from meshcore.wds.workload import Workload

ALLOW = Action.ALLOW
DENY = Action.DENY
FRONT = "spiffe://cluster.local/ns/shop/sa/front"


def sm(text: str) -> StringMatch:
    """`*` presence, `*x` suffix, `x*` prefix, else exact (istiod's conversion)."""
    if text == "*":
        return StringMatch(StringMatchKind.PRESENCE)
    if text.startswith("*"):
        return StringMatch(StringMatchKind.SUFFIX, text[1:])
    if text.endswith("*"):
        return StringMatch(StringMatchKind.PREFIX, text[:-1])
    return StringMatch(StringMatchKind.EXACT, text)


def cidr(text: str) -> Cidr:
    return Cidr(ipaddress.ip_network(text, strict=False))


def sa(text: str) -> ServiceAccountMatch:
    ns, _, name = text.partition("/")
    return ServiceAccountMatch(ns, name)


_CONVERT = {"namespaces": sm, "principals": sm, "source_ips": cidr, "destination_ips": cidr,
            "destination_ports": int, "service_accounts": sa}


def match(**fields: Any) -> Match:
    """`match(principals=["a*"], not_destination_ports=[80])`: values in policy notation."""
    out = {}
    for name, values in fields.items():
        convert = _CONVERT[name.removeprefix("not_")]
        out[name] = tuple(convert(v) for v in values)
    return Match(**out)


def policy(name: str = "p", namespace: str = "shop", *, action: Action = ALLOW,
           scope: Scope = Scope.NAMESPACE, groups: tuple[Group, ...] | None = None,
           dry_run: bool = False, **match_fields: Any) -> Authorization:
    """A policy; with `match_fields`, one group with one Rules with that one Match."""
    if groups is None:
        groups = (Group((Rules((match(**match_fields),)),)),) if match_fields else ()
    return Authorization(name, namespace, scope, action, groups, dry_run)


def group(*rules: tuple[Match, ...]) -> Group:
    """`group((m1, m2), (m3,))`: Rules [m1 OR m2] AND [m3]."""
    return Group(tuple(Rules(r) for r in rules))


ALLOW_ALL = Group(())  # a group with no Rules matches everything


def workload(name: str = "web-1", namespace: str = "shop", *, ip: str = "10.244.1.5",
             service_account: str = "web", policies: tuple[str, ...] = ()) -> Workload:
    return Workload(
        uid=f"Kubernetes//Pod/{namespace}/{name}", name=name, namespace=namespace,
        identity=SpiffeId("cluster.local", namespace, service_account),
        addresses=(ipaddress.ip_address(ip),), authorization_policies=policies,
    )


WEB = workload()


def conn(identity: str | None = FRONT, src: str = "10.0.0.9", dst: str = "10.244.1.5",
         port: int = 8080, destination: Workload = WEB) -> ConnectionAttributes:
    return ConnectionAttributes(
        source_identity=None if identity is None else SpiffeId.parse(identity),
        source_ip=ipaddress.ip_address(src),
        destination_ip=ipaddress.ip_address(dst),
        destination_port=port,
        destination=destination,
    )


def plaintext(**kw: Any) -> ConnectionAttributes:
    return conn(identity=None, **kw)
