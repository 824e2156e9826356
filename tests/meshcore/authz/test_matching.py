"""Match semantics, field by field and structure by structure (AMBIENT-INTERNALS §7.1).

Each case is one Match (in a one-group, one-Rules policy) against one connection. The default
connection is `spiffe://cluster.local/ns/shop/sa/front` from 10.0.0.9 to 10.244.1.5:8080.
"""

from __future__ import annotations

from typing import Any

import pytest

from meshcore.authz import ConnectionAttributes, match_policy
from meshcore.wds.authorization import Group, Match, Rules
from tests.meshcore.authz.builders import ALLOW_ALL, conn, group, match, plaintext, policy

OTHER_TD = "spiffe://other.example/ns/shop/sa/front"
OPS = "spiffe://cluster.local/ns/ops/sa/deployer"
V6 = {"src": "fd00::9", "dst": "fd00:1::5"}

P = pytest.param
FIELD_CASES = [
    # principals: compared without spiffe://, never hit without an identity
    P({"principals": ["cluster.local/ns/shop/sa/front"]}, conn(), True, id="principal-exact-hit"),
    P({"principals": ["cluster.local/ns/shop/sa/back"]}, conn(), False, id="principal-exact-miss"),
    P({"principals": ["spiffe://cluster.local/ns/shop/sa/front"]}, conn(), False,
      id="principal-with-scheme-never-matches"),
    P({"principals": ["cluster.local/ns/shop/sa/front"]}, plaintext(), False,
      id="principal-exact-plaintext"),
    P({"principals": ["cluster.local/ns/shop/*"]}, conn(), True, id="principal-prefix-hit"),
    P({"principals": ["cluster.local/ns/ops/*"]}, conn(), False, id="principal-prefix-miss"),
    P({"principals": ["*/sa/front"]}, conn(), True, id="principal-suffix-hit"),
    P({"principals": ["*/sa/admin"]}, conn(), False, id="principal-suffix-miss"),
    P({"principals": ["*"]}, conn(), True, id="principal-presence-hit"),
    P({"principals": ["*"]}, plaintext(), False, id="principal-presence-plaintext"),
    P({"principals": ["other.example/ns/shop/sa/front"]}, conn(OTHER_TD), True,
      id="principal-other-trust-domain"),
    P({"principals": ["cluster.local/ns/shop/sa/front"]}, conn(OTHER_TD), False,
      id="principal-trust-domain-matters"),
    P({"principals": ["cluster.local/ns/ops/sa/deployer", "*/sa/front"]}, conn(), True,
      id="principal-any-of-list"),
    P({"not_principals": ["cluster.local/ns/shop/sa/front"]}, conn(), False,
      id="not-principal-hit"),
    P({"not_principals": ["cluster.local/ns/shop/sa/back"]}, conn(), True,
      id="not-principal-miss"),
    P({"not_principals": ["cluster.local/ns/shop/sa/front"]}, plaintext(), True,
      id="not-principal-plaintext"),
    P({"not_principals": ["*"]}, plaintext(), True, id="not-principal-presence-plaintext"),
    P({"not_principals": ["*"]}, conn(), False, id="not-principal-presence-identity"),
    P({"principals": ["cluster.local/*"], "not_principals": ["*/sa/front"]}, conn(), False,
      id="principal-positive-and-negative"),
    # namespaces: from the identity; "" without one
    P({"namespaces": ["shop"]}, conn(), True, id="namespace-exact-hit"),
    P({"namespaces": ["ops"]}, conn(), False, id="namespace-exact-miss"),
    P({"namespaces": ["shop"]}, plaintext(), False, id="namespace-plaintext"),
    P({"namespaces": ["sh*"]}, conn(), True, id="namespace-prefix-hit"),
    P({"namespaces": ["istio-*"]}, conn(), False, id="namespace-prefix-miss"),
    P({"namespaces": ["*op"]}, conn(), True, id="namespace-suffix-hit"),
    P({"namespaces": ["*-system"]}, conn(), False, id="namespace-suffix-miss"),
    P({"namespaces": ["*"]}, conn(), True, id="namespace-presence-hit"),
    P({"namespaces": ["*"]}, plaintext(), False, id="namespace-presence-plaintext"),
    P({"namespaces": ["shop"]}, conn(OTHER_TD), True, id="namespace-ignores-trust-domain"),
    P({"not_namespaces": ["shop"]}, conn(), False, id="not-namespace-hit"),
    P({"not_namespaces": ["ops"]}, conn(), True, id="not-namespace-miss"),
    P({"not_namespaces": ["shop", "*"]}, plaintext(), True, id="not-namespace-plaintext"),
    P({"namespaces": ["s*"], "not_namespaces": ["shop"]}, conn(), False,
      id="namespace-positive-and-negative"),
    # service accounts: namespace + name from the identity; trust domain ignored
    P({"service_accounts": ["shop/front"]}, conn(), True, id="sa-hit"),
    P({"service_accounts": ["ops/front"]}, conn(), False, id="sa-wrong-namespace"),
    P({"service_accounts": ["shop/back"]}, conn(), False, id="sa-wrong-name"),
    P({"service_accounts": ["shop/front"]}, plaintext(), False, id="sa-plaintext"),
    P({"service_accounts": ["shop/front"]}, conn(OTHER_TD), True, id="sa-ignores-trust-domain"),
    P({"service_accounts": ["ops/deployer", "shop/front"]}, conn(), True, id="sa-any-of-list"),
    P({"not_service_accounts": ["shop/front"]}, conn(), False, id="not-sa-hit"),
    P({"not_service_accounts": ["shop/back"]}, conn(), True, id="not-sa-miss"),
    P({"not_service_accounts": ["shop/front"]}, plaintext(), True, id="not-sa-plaintext"),
    # source IPs: the TCP peer
    P({"source_ips": ["10.0.0.9/32"]}, conn(), True, id="src-ip-host-hit"),
    P({"source_ips": ["10.0.0.0/24"]}, conn(), True, id="src-ip-cidr-hit"),
    P({"source_ips": ["10.0.1.0/24"]}, conn(), False, id="src-ip-cidr-miss"),
    P({"source_ips": ["10.0.0.9/8"]}, conn(src="10.200.0.1"), True, id="src-ip-host-bits-kept"),
    P({"source_ips": ["0.0.0.0/0"]}, conn(), True, id="src-ip-v4-any"),
    P({"source_ips": ["0.0.0.0/0"]}, conn(**V6), False, id="src-ip-v4-any-not-v6"),
    P({"source_ips": ["fd00::/64"]}, conn(**V6), True, id="src-ip-v6-hit"),
    P({"source_ips": ["fd01::/64"]}, conn(**V6), False, id="src-ip-v6-miss"),
    P({"source_ips": ["::/0"]}, conn(), False, id="src-ip-v6-any-not-v4"),
    P({"source_ips": ["10.0.0.0/24"]}, conn(src="::ffff:10.0.0.9"), True,
      id="src-ip-v4-mapped-canonical"),
    P({"source_ips": ["10.0.0.9/32"]}, plaintext(), True, id="src-ip-plaintext"),
    P({"not_source_ips": ["10.0.0.0/24"]}, conn(), False, id="not-src-ip-hit"),
    P({"not_source_ips": ["10.0.1.0/24"]}, conn(), True, id="not-src-ip-miss"),
    P({"source_ips": ["10.0.0.0/8"], "not_source_ips": ["10.0.0.9/32"]}, conn(), False,
      id="src-ip-positive-and-negative"),
    # destination IPs: the resolved pod IP
    P({"destination_ips": ["10.244.1.5/32"]}, conn(), True, id="dst-ip-hit"),
    P({"destination_ips": ["10.244.2.0/24"]}, conn(), False, id="dst-ip-miss"),
    P({"destination_ips": ["fd00:1::/48"]}, conn(**V6), True, id="dst-ip-v6-hit"),
    P({"destination_ips": ["10.244.0.0/16"]}, conn(**V6), False, id="dst-ip-family-mismatch"),
    P({"not_destination_ips": ["10.244.1.5/32"]}, conn(), False, id="not-dst-ip-hit"),
    P({"not_destination_ips": ["10.244.2.0/24"]}, conn(), True, id="not-dst-ip-miss"),
    # destination ports: the target port
    P({"destination_ports": [8080]}, conn(), True, id="port-hit"),
    P({"destination_ports": [80, 443]}, conn(), False, id="port-miss"),
    P({"destination_ports": [80, 8080]}, conn(), True, id="port-any-of-list"),
    P({"destination_ports": [15008]}, conn(), False, id="port-never-hbone"),
    P({"not_destination_ports": [8080]}, conn(), False, id="not-port-hit"),
    P({"not_destination_ports": [9090]}, conn(), True, id="not-port-miss"),
    P({"destination_ports": [8080], "not_destination_ports": [8080]}, conn(), False,
      id="port-positive-and-negative"),
    # fields are AND-ed
    P({"principals": ["*"], "destination_ports": [8080], "source_ips": ["10.0.0.0/8"],
       "namespaces": ["shop"], "service_accounts": ["shop/front"],
       "destination_ips": ["10.244.1.5/32"]}, conn(), True, id="all-fields-hit"),
    P({"principals": ["*"], "destination_ports": [9090]}, conn(), False,
      id="one-field-misses"),
    P({"namespaces": ["shop"], "not_source_ips": ["10.0.0.9/32"]}, conn(), False,
      id="one-negative-hits"),
    # ztunnel detail: namespaces compare "" without identity, so an empty prefix hits
    P({"namespaces": [""]}, plaintext(), True, id="namespace-empty-exact-plaintext-edge"),
]


@pytest.mark.parametrize(("fields", "connection", "expected"), FIELD_CASES)
def test_single_match(fields: dict[str, Any], connection: ConnectionAttributes,
                      expected: bool) -> None:
    """A one-Match policy matches the connection exactly when ztunnel's would."""
    pol = policy(**fields)
    assert (match_policy(pol, connection) is not None) is expected
    trace: list = []
    assert (match_policy(pol, connection, trace) is not None) is expected


def test_principal_empty_prefix_never_hits_without_identity() -> None:
    """A prefix "" principal hits every identity but not plaintext (no spiffe:// to strip)."""
    from meshcore.wds.authorization import StringMatch, StringMatchKind

    m = Match(principals=(StringMatch(StringMatchKind.PREFIX, ""),))
    pol = policy(groups=(Group((Rules((m,)),)),))
    assert match_policy(pol, conn()) == 0
    assert match_policy(pol, plaintext()) is None


EMPTY = Match()
HIT = match(principals=["*"])
MISS = match(destination_ports=[1])
STRUCTURE_CASES = [
    P((), None, id="zero-groups-never-match"),
    P((ALLOW_ALL,), 0, id="group-without-rules-matches-all"),
    P((Group((Rules(()),)),), 0, id="rules-without-matches-matches-all"),
    P((group((EMPTY,)),), None, id="only-empty-match-matches-nothing"),
    P((group((EMPTY, EMPTY)),), None, id="only-empty-matches-match-nothing"),
    P((group((EMPTY, HIT)),), 0, id="empty-match-skipped-hit-counts"),
    P((group((EMPTY, MISS)),), None, id="empty-match-skipped-miss-counts"),
    P((group((MISS, HIT)),), 0, id="matches-or-ed"),
    P((group((MISS, MISS)),), None, id="matches-or-ed-all-miss"),
    P((group((HIT,), (HIT,)),), 0, id="rules-and-ed"),
    P((group((HIT,), (MISS,)),), None, id="rules-and-ed-one-misses"),
    P((group((HIT,), (EMPTY,)),), None, id="rules-and-ed-empty-clause-fails"),
    P((group((HIT,), ()),), 0, id="rules-and-ed-no-match-clause-passes"),
    P((group((MISS,)), group((HIT,))), 1, id="groups-or-ed-second"),
    P((group((HIT,)), ALLOW_ALL), 0, id="groups-first-match-wins"),
    P((group((MISS,)), group((EMPTY,))), None, id="groups-all-miss"),
]


@pytest.mark.parametrize(("groups", "expected"), STRUCTURE_CASES)
def test_structure(groups: tuple[Group, ...], expected: int | None) -> None:
    """Groups OR, Rules AND, Matches OR with empty ones skipped; zero groups never match."""
    pol = policy(groups=groups)
    assert match_policy(pol, conn()) == expected
    trace: list = []
    assert match_policy(pol, conn(), trace) == expected
    assert len(trace) == len(groups)
    assert [g.index for g in trace if g.matched][:1] == ([] if expected is None else [expected])
