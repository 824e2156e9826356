"""The desired rule set as data, and its netlink encoding (no kernel needed)."""

from __future__ import annotations

import socket

import pytest
from pyroute2.netlink.nfnetlink import nftsocket as nfts

from cni_plugin.redirect import nftnl
from cni_plugin.redirect import rules as R
from cni_plugin.redirect.describe import describe

CONFIGS = [
    pytest.param(R.RedirectConfig(), id="ipv4"),
    pytest.param(R.RedirectConfig(ipv6=True), id="dual-stack"),
    pytest.param(R.RedirectConfig(dns_capture=True), id="dns"),
    pytest.param(R.RedirectConfig(inbound_capture=False), id="ingress-mode"),
]


def _ports(ruleset: R.RuleSet) -> set[int]:
    return {int.from_bytes(r.exprs[-2].data, "big") for t in ruleset.tables for r in t.rules
            if r.exprs[-1] == R.Redirect() and isinstance(r.exprs[-2], R.Immediate)}


@pytest.mark.parametrize("config, tables, ports", [
    pytest.param(R.RedirectConfig(), {R.NAT_TABLE, R.MANGLE_TABLE}, {15001, 15006}, id="default"),
    pytest.param(R.RedirectConfig(dns_capture=True), set(R.OUR_TABLES), {15001, 15006, 15053},
                 id="dns"),
    pytest.param(R.RedirectConfig(inbound_capture=False), {R.NAT_TABLE, R.MANGLE_TABLE}, {15001},
                 id="ingress-mode"),
])
def test_tables_and_redirect_ports(config: R.RedirectConfig, tables: set[str],
                                   ports: set[int]) -> None:
    """Which tables exist and which ports traffic is redirected to follow the config."""
    ruleset = R.build_ruleset(config)
    assert {t.name for t in ruleset.tables} == tables
    assert _ports(ruleset) == ports


def test_policy_routing_per_family() -> None:
    """fwmark 0x111/0xfff → table 100 at pref 32764, per address family in use."""
    v4 = R.build_ruleset(R.RedirectConfig())
    assert v4.ip_rules == (R.IpRule(socket.AF_INET, 0x111, 0xFFF, 32764, 100),)
    assert v4.routes == (R.LocalRoute(socket.AF_INET, 100),)
    dual = R.build_ruleset(R.RedirectConfig(ipv6=True))
    assert {r.family for r in dual.ip_rules} == {r.family for r in dual.routes} == {
        socket.AF_INET, socket.AF_INET6}


def test_every_redirect_spares_ztunnel_mark() -> None:
    """Each REDIRECT rule also requires mark & 0xfff != 0x539 (ztunnel's own traffic)."""
    spare = (R.Meta("NFT_META_MARK"), R.Bitwise(0xFFF), R.Cmp("neq", (0x539).to_bytes(4, "little")))
    for table in R.build_ruleset(R.RedirectConfig(ipv6=True, dns_capture=True)).tables:
        for rule in table.rules:
            if R.Redirect() in rule.exprs:
                assert any(rule.exprs[i:i + 3] == spare for i in range(len(rule.exprs))), rule.why


def test_hbone_port_exempt_from_inbound_capture() -> None:
    """The inbound redirect rule excludes destination port 15008."""
    nat = R.build_ruleset(R.RedirectConfig()).tables[0]
    (inbound,) = [r for r in nat.rules if R.Immediate((15006).to_bytes(2, "big")) in r.exprs]
    assert R.Cmp("neq", (15008).to_bytes(2, "big")) in inbound.exprs


@pytest.mark.parametrize("config", CONFIGS)
def test_netlink_encoding_round_trips(config: R.RedirectConfig) -> None:
    """Every rule encodes to netlink bytes that pyroute2 decodes back to the same expressions."""
    for table in R.build_ruleset(config).tables:
        for msg in nftnl.table_messages(table):
            msg.encode()
            if not isinstance(msg, nfts.nft_rule_msg):
                continue
            echoed = nfts.nft_rule_msg(msg.data)
            echoed.decode()
            want = [r for r in table.rules if r.chain == msg.get_attr("NFTA_RULE_CHAIN")]
            got = nftnl._decode_rule(echoed)
            assert got.exprs in [r.exprs for r in want]


def test_description_names_every_rule_purpose() -> None:
    """The readable listing carries each rule's purpose and the policy routing."""
    ruleset = R.build_ruleset(R.RedirectConfig(dns_capture=True))
    text = describe(ruleset)
    for table in ruleset.tables:
        for rule in table.rules:
            assert rule.why in text
    assert "fwmark 0x111/0xfff pref 32764 lookup 100" in text
