"""The in-pod redirection rule set as pure data (no I/O, no pyroute2).

`build_ruleset(RedirectConfig)` returns a frozen `RuleSet`: the nftables tables/chains/rules that
capture the pod's TCP for ztunnel (Istio's `native_nftables` form, AMBIENT-INTERNALS §5.4.4) plus
the policy-routing rule and local route that transparent inbound proxying needs (§5.4.2).

Who calls it: `cni_plugin.redirect.apply` (turns it into netlink messages inside a pod netns and
compares it against what the kernel dumps back), `describe.py` (a readable listing), tests.

Invariants:
- Every rule is a tuple of low-level expressions (`Meta`, `Payload`, `Bitwise`, `Cmp`, `Ct`, ...)
  that map 1:1 onto nftables netlink expressions, in the order the kernel evaluates them; the
  kernel dumps them back in the same shape, so "installed == desired" is plain equality.
- Ports, marks and addresses come from the constants below (REFERENCE.md §1, §5); ztunnel's own
  traffic (mark 0x539/0xfff) is never redirected.
- IPv6 rules and routes appear only when `RedirectConfig.ipv6` is set; DNS capture (port 15053 and
  the `raw` table's conntrack zone rules) only when `dns_capture` is set.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

# ---------------------------------------------------------------------------------------------
# Constants (Istio cni/pkg/config: InpodMark, InpodMask, InpodTProxyMark, RouteTableInbound, ...)
# ---------------------------------------------------------------------------------------------
INPOD_MARK = 0x539
INPOD_MASK = 0xFFF
TPROXY_MARK = 0x111
TPROXY_MASK = 0xFFF
ROUTE_TABLE = 100
RULE_PRIORITY = 32764
OUTBOUND_PORT = 15001
INBOUND_PLAINTEXT_PORT = 15006
HBONE_PORT = 15008
DNS_PORT = 15053
PROBE_IPV4 = "169.254.7.127"
PROBE_IPV6 = "fd16:9254:7127:1337:ffff:ffff:ffff:ffff"

NAT_TABLE = "istio-ambient-nat"
MANGLE_TABLE = "istio-ambient-mangle"
RAW_TABLE = "istio-ambient-raw"
OUR_TABLES = (NAT_TABLE, MANGLE_TABLE, RAW_TABLE)
TABLE_COMMENT = "ambient-py in-pod redirection; do not edit"

# nftables numeric codes used below (linux/netfilter/nf_tables.h, linux/netfilter.h)
NFPROTO_IPV4 = 2
NFPROTO_IPV6 = 10
HOOK_PREROUTING = 0
HOOK_OUTPUT = 3
PAYLOAD_NETWORK = 1
PAYLOAD_TRANSPORT = 2


# ---------------------------------------------------------------------------------------------
# Expressions (one per nftables netlink expression; registers are always reg 1)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Meta:
    """`meta load <key> => reg 1`; key is a name from pyroute2's Meta enum (NFT_META_*)."""

    key: str


@dataclass(frozen=True)
class MetaSet:
    """`meta set <key> with reg 1`."""

    key: str


@dataclass(frozen=True)
class Payload:
    """`payload load <length>b @ <base> header + <offset> => reg 1`."""

    base: int
    offset: int
    length: int


@dataclass(frozen=True)
class Bitwise:
    """`reg 1 = (reg 1 & mask) ^ xor` over 4-byte host-order marks."""

    mask: int
    xor: int = 0


@dataclass(frozen=True)
class Cmp:
    """`cmp eq|neq reg 1 <data>`."""

    op: str  # "eq" or "neq"
    data: bytes


@dataclass(frozen=True)
class Ct:
    """`ct load <key> => reg 1`; key is a name like NFT_CT_MARK."""

    key: str


@dataclass(frozen=True)
class CtSet:
    """`ct set <key> with reg 1`."""

    key: str


@dataclass(frozen=True)
class Immediate:
    """`immediate reg 1 <data>` (data loaded for a following redir/ct set)."""

    data: bytes


@dataclass(frozen=True)
class Counter:
    """`counter` (packet/byte counts; compared by presence only)."""


@dataclass(frozen=True)
class Verdict:
    """`immediate reg 0 <verdict>`: "accept" or "jump" (with `chain`)."""

    kind: str
    chain: str = ""


@dataclass(frozen=True)
class Redirect:
    """`redir proto_min reg 1` after an Immediate holding the big-endian port."""


@dataclass(frozen=True)
class Lookup:
    """`lookup reg 1 set <set_name>` (the rule goes on only if reg 1 is in the set)."""

    set_name: str


@dataclass(frozen=True)
class Snat:
    """`nat snat <family> addr_min reg 1` after an Immediate holding the source address."""

    family: int


Expr = (
    Meta | MetaSet | Payload | Bitwise | Cmp | Ct | CtSet | Immediate | Counter | Verdict
    | Redirect | Lookup | Snat
)


@dataclass(frozen=True)
class NftSet:
    """A named set of fixed-size keys (`key_type` is nft's datatype id, e.g. 7 = ipv4_addr)."""

    name: str
    key_type: int
    key_len: int
    elements: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class Chain:
    """A chain; base chains carry hook/type/priority, regular chains leave them None."""

    name: str
    hook: int | None = None
    type: str | None = None
    priority: int | None = None


@dataclass(frozen=True)
class Rule:
    """One rule appended to `chain`; `why` is documentation (not installed)."""

    chain: str
    exprs: tuple[Expr, ...]
    why: str = ""


@dataclass(frozen=True)
class Table:
    """An `inet` table with its chains, sets and rules in installation order."""

    name: str
    chains: tuple[Chain, ...]
    rules: tuple[Rule, ...]
    sets: tuple[NftSet, ...] = ()
    comment: str = TABLE_COMMENT


@dataclass(frozen=True)
class IpRule:
    """`ip [-6] rule add fwmark <mark>/<mask> pref <priority> lookup <table>`."""

    family: int
    fwmark: int
    fwmask: int
    priority: int
    table: int


@dataclass(frozen=True)
class LocalRoute:
    """`ip [-6] route add local <default> dev lo table <table>`."""

    family: int
    table: int


@dataclass(frozen=True)
class RuleSet:
    """Everything the redirection installs inside one pod netns."""

    tables: tuple[Table, ...]
    ip_rules: tuple[IpRule, ...]
    routes: tuple[LocalRoute, ...]


@dataclass(frozen=True)
class RedirectConfig:
    """Per-pod knobs. `ipv6`: the pod has IPv6 addresses; `dns_capture`: redirect DNS to 15053;
    `inbound_capture`: False is Istio's "ingress mode" (no 15006 redirect, no probe accept)."""

    ipv6: bool = False
    dns_capture: bool = False
    inbound_capture: bool = True


# ---------------------------------------------------------------------------------------------
# Matchers: small builders returning expression tuples (what `nft` would generate)
# ---------------------------------------------------------------------------------------------
def _u32(value: int) -> bytes:
    return struct.pack("=I", value)


def _port(port: int) -> bytes:
    return struct.pack(">H", port)


def l4proto(proto: int) -> tuple[Expr, ...]:
    return (Meta("NFT_META_L4PROTO"), Cmp("eq", bytes([proto])))


def nfproto(family: int) -> tuple[Expr, ...]:
    return (Meta("NFT_META_NFPROTO"), Cmp("eq", bytes([family])))


def _addr(family: int, addr: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if family == NFPROTO_IPV6 else socket.AF_INET, addr)


def daddr(family: int, addr: str, op: str = "eq") -> tuple[Expr, ...]:
    raw = _addr(family, addr)
    offset = 24 if family == NFPROTO_IPV6 else 16
    return (*nfproto(family), Payload(PAYLOAD_NETWORK, offset, len(raw)), Cmp(op, raw))


def saddr(family: int, addr: str, op: str = "eq") -> tuple[Expr, ...]:
    raw = _addr(family, addr)
    offset = 8 if family == NFPROTO_IPV6 else 12
    return (*nfproto(family), Payload(PAYLOAD_NETWORK, offset, len(raw)), Cmp(op, raw))


def dport(proto: int, port: int, op: str = "eq") -> tuple[Expr, ...]:
    return (*l4proto(proto), Payload(PAYLOAD_TRANSPORT, 2, 2), Cmp(op, _port(port)))


def sport(proto: int, port: int, op: str = "eq") -> tuple[Expr, ...]:
    return (*l4proto(proto), Payload(PAYLOAD_TRANSPORT, 0, 2), Cmp(op, _port(port)))


def mark(value: int, mask: int, op: str = "eq") -> tuple[Expr, ...]:
    return (Meta("NFT_META_MARK"), Bitwise(mask), Cmp(op, _u32(value)))


def ct_mark(value: int, mask: int, op: str = "eq") -> tuple[Expr, ...]:
    return (Ct("NFT_CT_MARK"), Bitwise(mask), Cmp(op, _u32(value)))


def oifname(name: str, op: str = "eq") -> tuple[Expr, ...]:
    return (Meta("NFT_META_OIFNAME"), Cmp(op, name.encode().ljust(16, b"\0")))


def redirect(port: int) -> tuple[Expr, ...]:
    return (Counter(), Immediate(_port(port)), Redirect())


def accept() -> tuple[Expr, ...]:
    return (Counter(), Verdict("accept"))


def jump(chain: str) -> tuple[Expr, ...]:
    return (Verdict("jump", chain),)


TCP = socket.IPPROTO_TCP
UDP = socket.IPPROTO_UDP


def _loopback(family: int) -> str:
    return "::1" if family == NFPROTO_IPV6 else "127.0.0.1"


def _probe(family: int) -> str:
    return PROBE_IPV6 if family == NFPROTO_IPV6 else PROBE_IPV4


# ---------------------------------------------------------------------------------------------
# The rule set
# ---------------------------------------------------------------------------------------------
def _skeleton(hook_type: str, prio: int, output_type: str | None = None) -> tuple[Chain, ...]:
    return (
        Chain("prerouting", HOOK_PREROUTING, hook_type, prio),
        Chain("output", HOOK_OUTPUT, output_type or hook_type, prio),
        Chain("istio-prerouting"),
        Chain("istio-output"),
    )


def _jumps() -> tuple[Rule, ...]:
    return (
        Rule("prerouting", jump("istio-prerouting"), "enter our prerouting chain"),
        Rule("output", jump("istio-output"), "enter our output chain"),
    )


def build_ruleset(config: RedirectConfig) -> RuleSet:
    """The complete desired state for one pod netns."""
    families = (NFPROTO_IPV4, NFPROTO_IPV6) if config.ipv6 else (NFPROTO_IPV4,)
    not_ztunnel = mark(INPOD_MARK, INPOD_MASK, "neq")

    nat: list[Rule] = list(_jumps())
    if config.inbound_capture:
        for fam in families:
            nat.append(Rule(
                "istio-prerouting",
                (*l4proto(TCP), *saddr(fam, _probe(fam)), *accept()),
                "kubelet probes (SNATed to the probe address on the node) bypass ztunnel",
            ))
    for fam in families:
        nat.append(Rule(
            "istio-output",
            (*l4proto(TCP), *daddr(fam, _probe(fam)), *accept()),
            "replies/connections to the probe address are not captured",
        ))
    if config.inbound_capture:
        for fam in families:
            nat.append(Rule(
                "istio-prerouting",
                (*daddr(fam, _loopback(fam), "neq"), *dport(TCP, HBONE_PORT, "neq"), *not_ztunnel,
                 *redirect(INBOUND_PLAINTEXT_PORT)),
                "inbound plaintext TCP to ztunnel's 15006 (15008 HBONE goes straight through)",
            ))
    if config.dns_capture:
        nat.append(Rule(
            "istio-output",
            (*oifname("lo", "neq"), *not_ztunnel, *dport(UDP, 53), *redirect(DNS_PORT)),
            "the app's DNS over UDP to ztunnel's DNS proxy",
        ))
        for fam in families:
            nat.append(Rule(
                "istio-output",
                (*daddr(fam, _loopback(fam), "neq"), *dport(TCP, 53), *not_ztunnel,
                 *redirect(DNS_PORT)),
                "the app's DNS over TCP to ztunnel's DNS proxy",
            ))
    nat.append(Rule(
        "istio-output",
        (*l4proto(TCP), *mark(TPROXY_MARK, TPROXY_MASK), *accept()),
        "replies on connections ztunnel opened to the app (connmark restored) are not captured",
    ))
    for fam in families:
        nat.append(Rule(
            "istio-output",
            (*oifname("lo"), *daddr(fam, _loopback(fam), "neq"), *accept()),
            "the pod talking to itself via its own IP is not captured",
        ))
    for fam in families:
        nat.append(Rule(
            "istio-output",
            (*l4proto(TCP), *daddr(fam, _loopback(fam), "neq"), *not_ztunnel,
             *redirect(OUTBOUND_PORT)),
            "every other outbound TCP to ztunnel's 15001 (original dst via SO_ORIGINAL_DST)",
        ))

    mangle = (
        *_jumps(),
        Rule(
            "istio-prerouting",
            (*mark(INPOD_MARK, INPOD_MASK), Counter(), Ct("NFT_CT_MARK"),
             Bitwise(0xFFFFFFFF & ~TPROXY_MASK, TPROXY_MARK), CtSet("NFT_CT_MARK")),
            "remember ztunnel's connections: packet mark 0x539 => connmark 0x111",
        ),
        Rule(
            "istio-output",
            (*ct_mark(TPROXY_MARK, TPROXY_MASK), Counter(), Ct("NFT_CT_MARK"),
             MetaSet("NFT_META_MARK")),
            "restore the connmark onto replies so they route via table 100 to ztunnel",
        ),
    )
    tables = [
        Table(NAT_TABLE, _skeleton("nat", -100), tuple(nat)),
        Table(MANGLE_TABLE, _skeleton("filter", -150, "route"), mangle),
    ]
    if config.dns_capture:
        zone1 = (Counter(), Immediate(struct.pack("=H", 1)), CtSet("NFT_CT_ZONE"))
        tables.append(Table(RAW_TABLE, _skeleton("filter", -300), (
            *_jumps(),
            Rule("istio-output", (*dport(UDP, 53), *mark(INPOD_MARK, INPOD_MASK), *zone1),
                 "ztunnel's upstream DNS in conntrack zone 1 (no tuple clash with the app's)"),
            Rule("istio-prerouting", (*sport(UDP, 53), *not_ztunnel, *zone1),
                 "DNS replies to ztunnel in conntrack zone 1"),
        )))
    afs = (socket.AF_INET, socket.AF_INET6) if config.ipv6 else (socket.AF_INET,)
    return RuleSet(
        tables=tuple(tables),
        ip_rules=tuple(IpRule(af, TPROXY_MARK, TPROXY_MASK, RULE_PRIORITY, ROUTE_TABLE)
                       for af in afs),
        routes=tuple(LocalRoute(af, ROUTE_TABLE) for af in afs),
    )
