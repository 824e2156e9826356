"""nftables over netlink with pyroute2: encode `rules` data into messages, decode dumps back.

`NftSession(sock)` wraps pyroute2's nftables socket around a NETLINK_NETFILTER socket already bound
to the pod netns (see `netns.py`). `commit(batch)` sends one atomic transaction (begin, messages,
end); `dump()` returns our tables as `rules.Table` values decoded from the kernel's own dump.

Who calls it: `cni_plugin.redirect.apply`. Invariants: all messages use the `inet` family;
`encode_rule(decode_rule(x)) == x` for every expression kind in `rules.py`; an expression we do
not know decodes to `None`, which makes the table compare unequal (so it gets replaced).
"""

from __future__ import annotations

import socket
import struct
import threading
from typing import Any

from pyroute2.netlink import (
    NETLINK_NETFILTER,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_REQUEST,
)
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.nfnetlink import NFNL_SUBSYS_NFTABLES, nfgen_msg
from pyroute2.netlink.nfnetlink import nftsocket as nfts
from pyroute2.netlink.nlsocket import AsyncNetlinkSocket
from pyroute2.nftables.main import AsyncNFTables, NFTables

from cni_plugin.errors import RedirectError
from cni_plugin.redirect import rules as R

NFPROTO_INET = 1
_BATCH_BEGIN = 0x10
_BATCH_END = 0x11
_VERDICTS = {"accept": 1, "jump": -3}
_VERDICT_NAMES = {"NF_ACCEPT": "accept", "NFT_JUMP": "jump"}


class _AsyncNft(AsyncNFTables):  # type: ignore[misc]
    """pyroute2's async nftables socket, but on a socket we created inside the pod netns."""

    def __init__(self, sock: socket.socket) -> None:
        AsyncNetlinkSocket.__init__(self, family=NETLINK_NETFILTER, use_socket=sock)
        self.register_policy({
            (x | (NFNL_SUBSYS_NFTABLES << 8)): y for x, y in self.policy.items()
        })
        self._proto_version = 1
        self._attr_revision = 0
        self._nfgen_family = NFPROTO_INET
        self._ts = threading.local()
        self._write_lock = threading.RLock()


class NftSession(NFTables):  # type: ignore[misc]
    """Synchronous nftables access on a given netlink socket (family inet)."""

    def __init__(self, sock: socket.socket) -> None:
        self.asyncore = _AsyncNft(sock)
        self.asyncore.local.keep_event_loop = True
        self.asyncore.event_loop.run_until_complete(self.asyncore.setup_endpoint())

    def commit(self, messages: list[Any]) -> None:
        """Send `messages` as one transaction; the kernel applies all or nothing."""
        begin, end = nfgen_msg(), nfgen_msg()
        for msg, kind in ((begin, _BATCH_BEGIN), (end, _BATCH_END)):
            msg["res_id"] = NFNL_SUBSYS_NFTABLES
            msg["header"]["type"] = kind
            msg["header"]["flags"] = NLM_F_REQUEST

        async def send() -> None:
            async for _ in self.asyncore.nlm_request_batch([begin, *messages, end]):
                pass

        try:
            self._run_with_cleanup(send)
        except NetlinkError as exc:
            raise RedirectError(f"nftables transaction rejected by the kernel: {exc}") from exc

    def dump(self) -> dict[str, R.Table]:
        """Our tables (by name) as currently installed, decoded into `rules` data."""
        try:
            tables = [t.get_attr("NFTA_TABLE_NAME") for t in self.get_tables()]
            chains = self.get_chains()
            rule_msgs = self.get_rules()
        except NetlinkError as exc:
            raise RedirectError(f"cannot dump nftables state: {exc}") from exc
        result: dict[str, R.Table] = {}
        for name in tables:
            if name not in R.OUR_TABLES:
                continue
            table_chains = tuple(
                _decode_chain(c) for c in chains if c.get_attr("NFTA_CHAIN_TABLE") == name
            )
            table_rules = tuple(
                _decode_rule(r) for r in rule_msgs if r.get_attr("NFTA_RULE_TABLE") == name
            )
            result[name] = R.Table(name, table_chains, table_rules)
        return result


# ---------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------
def _msg(cls: Any, kind: int, attrs: list[tuple[str, Any]], flags: int = 0) -> Any:
    msg = cls()
    msg["attrs"] = attrs
    msg["header"]["type"] = (NFNL_SUBSYS_NFTABLES << 8) | kind
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK | flags
    msg["nfgen_family"] = NFPROTO_INET
    return msg


def _expr(name: str, **data: Any) -> dict[str, Any]:
    attrs = [(f"NFTA_{name.upper()}_{key.upper()}", value) for key, value in data.items()]
    return {"attrs": [("NFTA_EXPR_NAME", name), ("NFTA_EXPR_DATA", {"attrs": attrs})]}


def _value(data: bytes) -> dict[str, Any]:
    return {"attrs": [("NFTA_DATA_VALUE", data)]}


def encode_expr(e: R.Expr) -> dict[str, Any]:
    """One `rules` expression as a pyroute2 nft_expr attribute tree."""
    meta_keys = {m.name: m.value for m in nfts.Meta}
    ct_keys = {v: k for k, v in nfts.nft_contains_expr.nft_expr.nft_ct.keys.ops.items()}
    match e:
        case R.Meta(key):
            return _expr("meta", key=meta_keys[key], dreg=1)
        case R.MetaSet(key):
            return _expr("meta", key=meta_keys[key], sreg=1)
        case R.Payload(base, offset, length):
            return _expr("payload", dreg=1, base=base, offset=offset, len=length)
        case R.Bitwise(mask, xor):
            return _expr("bitwise", sreg=1, dreg=1, len=4,
                         mask=_value(struct.pack("=I", mask)), xor=_value(struct.pack("=I", xor)))
        case R.Cmp(op, data):
            return _expr("cmp", sreg=1, op=0 if op == "eq" else 1, data=_value(data))
        case R.Ct(key):
            return _expr("ct", key=ct_keys[key], dreg=1)
        case R.CtSet(key):
            return _expr("ct", key=ct_keys[key], sreg=1)
        case R.Immediate(data):
            return _expr("immediate", dreg=1, data=_value(data))
        case R.Counter():
            return {"attrs": [("NFTA_EXPR_NAME", "counter")]}
        case R.Verdict(kind, chain):
            verdict: list[tuple[str, Any]] = [("NFTA_VERDICT_CODE", _VERDICTS[kind])]
            if chain:
                verdict.append(("NFTA_VERDICT_CHAIN", chain))
            return _expr("immediate", dreg=0,
                         data={"attrs": [("NFTA_DATA_VERDICT", {"attrs": verdict})]})
        case R.Redirect():
            return _expr("redir", reg_proto_min=1, flags={"NF_NAT_RANGE_PROTO_SPECIFIED"})
        case R.Lookup(set_name):
            return _expr("lookup", set=set_name, sreg=1)
        case R.Snat(family):
            return _expr("nat", type=0, family=family, reg_addr_min=1)  # 0: NFT_NAT_SNAT
    raise TypeError(f"unknown expression {e!r}")


def table_messages(table: R.Table) -> list[Any]:
    """NEWTABLE, NEWCHAIN for each chain, NEWRULE for each rule (install order)."""
    msgs = [_msg(nfts.nft_table_msg, nfts.NFT_MSG_NEWTABLE, [
        ("NFTA_TABLE_NAME", table.name), ("NFTA_TABLE_USERDATA", table.comment),
    ], NLM_F_CREATE)]
    for chain in table.chains:
        attrs: list[tuple[str, Any]] = [("NFTA_CHAIN_TABLE", table.name),
                                        ("NFTA_CHAIN_NAME", chain.name)]
        if chain.hook is not None:
            attrs += [
                ("NFTA_CHAIN_HOOK", {"attrs": [("NFTA_HOOK_HOOKNUM", chain.hook),
                                               ("NFTA_HOOK_PRIORITY", chain.priority)]}),
                ("NFTA_CHAIN_TYPE", chain.type),
                ("NFTA_CHAIN_POLICY", 1),  # accept
            ]
        msgs.append(_msg(nfts.nft_chain_msg, nfts.NFT_MSG_NEWCHAIN, attrs, NLM_F_CREATE))
    for set_id, nft_set in enumerate(table.sets, start=1):
        msgs += set_messages(table.name, nft_set, set_id)
    for rule in table.rules:
        msgs.append(_msg(nfts.nft_rule_msg, nfts.NFT_MSG_NEWRULE, [
            ("NFTA_RULE_TABLE", table.name), ("NFTA_RULE_CHAIN", rule.chain),
            ("NFTA_RULE_EXPRESSIONS", [encode_expr(e) for e in rule.exprs]),
        ], NLM_F_CREATE | 0x800))  # NLM_F_APPEND
    return msgs


def set_messages(table: str, nft_set: R.NftSet, set_id: int) -> list[Any]:
    """NEWSET, then NEWSETELEM with its elements (if any); rules refer to the set by name."""
    msgs = [_msg(nfts.nft_set_msg, nfts.NFT_MSG_NEWSET, [
        ("NFTA_SET_TABLE", table), ("NFTA_SET_NAME", nft_set.name),
        ("NFTA_SET_KEY_TYPE", nft_set.key_type), ("NFTA_SET_KEY_LEN", nft_set.key_len),
        ("NFTA_SET_ID", set_id),
    ], NLM_F_CREATE)]
    if nft_set.elements:
        msgs.append(_msg(nfts.nft_set_elem_list_msg, nfts.NFT_MSG_NEWSETELEM, [
            ("NFTA_SET_ELEM_LIST_TABLE", table), ("NFTA_SET_ELEM_LIST_SET", nft_set.name),
            ("NFTA_SET_ELEM_LIST_ELEMENTS", [
                {"attrs": [("NFTA_SET_ELEM_KEY", _value(key))]} for key in nft_set.elements]),
        ], NLM_F_CREATE))
    return msgs


def delete_table_messages(name: str) -> list[Any]:
    """Delete `name` whether or not it exists (create-then-delete in the same transaction)."""
    return [
        _msg(nfts.nft_table_msg, nfts.NFT_MSG_NEWTABLE, [("NFTA_TABLE_NAME", name)], NLM_F_CREATE),
        _msg(nfts.nft_table_msg, nfts.NFT_MSG_DELTABLE, [("NFTA_TABLE_NAME", name)]),
    ]


# ---------------------------------------------------------------------------------------------
# Decoding (kernel dump -> rules data); unknown shapes decode to None
# ---------------------------------------------------------------------------------------------
def _decode_chain(msg: Any) -> R.Chain:
    hook = msg.get_attr("NFTA_CHAIN_HOOK")
    if hook is None:
        return R.Chain(msg.get_attr("NFTA_CHAIN_NAME"))
    return R.Chain(msg.get_attr("NFTA_CHAIN_NAME"), hook.get_attr("NFTA_HOOK_HOOKNUM"),
                   msg.get_attr("NFTA_CHAIN_TYPE"), hook.get_attr("NFTA_HOOK_PRIORITY"))


def _decode_rule(msg: Any) -> R.Rule:
    exprs = tuple(decode_expr(e) for e in msg.get_attr("NFTA_RULE_EXPRESSIONS") or ())
    return R.Rule(msg.get_attr("NFTA_RULE_CHAIN"), exprs)  # type: ignore[arg-type]


def _data(node: Any, name: str) -> Any:
    value = node.get_attr(name)
    return value.get_attr("NFTA_DATA_VALUE") if value is not None else None


def decode_expr(expr: Any) -> R.Expr | None:
    """One dumped nft_expr back into `rules` data (None for anything we never install)."""
    name = expr.get_attr("NFTA_EXPR_NAME")
    d = expr.get_attr("NFTA_EXPR_DATA")
    if name == "counter":
        return R.Counter()
    if d is None:
        return None
    reg_to = d.get_attr(f"NFTA_{name.upper()}_DREG")
    if name == "meta":
        key = d.get_attr("NFTA_META_KEY")
        return R.Meta(key) if reg_to is not None else R.MetaSet(key)
    if name == "ct":
        key = d.get_attr("NFTA_CT_KEY")
        return R.Ct(key) if reg_to is not None else R.CtSet(key)
    if name == "payload":
        base = {"NFT_PAYLOAD_NETWORK_HEADER": 1, "NFT_PAYLOAD_TRANSPORT_HEADER": 2}
        return R.Payload(base.get(d.get_attr("NFTA_PAYLOAD_BASE"), -1),
                         d.get_attr("NFTA_PAYLOAD_OFFSET"), d.get_attr("NFTA_PAYLOAD_LEN"))
    if name == "bitwise":
        mask, xor = _data(d, "NFTA_BITWISE_MASK"), _data(d, "NFTA_BITWISE_XOR")
        if d.get_attr("NFTA_BITWISE_LEN") != 4 or mask is None or xor is None:
            return None
        return R.Bitwise(struct.unpack("=I", mask)[0], struct.unpack("=I", xor)[0])
    if name == "cmp":
        ops = {"NFT_CMP_EQ": "eq", "NFT_CMP_NEQ": "neq"}
        op = ops.get(d.get_attr("NFTA_CMP_OP"))
        return R.Cmp(op, _data(d, "NFTA_CMP_DATA")) if op else None
    if name == "immediate":
        data = d.get_attr("NFTA_IMMEDIATE_DATA")
        verdict = data.get_attr("NFTA_DATA_VERDICT") if data is not None else None
        if verdict is None:
            return R.Immediate(_data(d, "NFTA_IMMEDIATE_DATA"))
        kind = _VERDICT_NAMES.get(verdict.get_attr("NFTA_VERDICT_CODE"))
        return R.Verdict(kind, verdict.get_attr("NFTA_VERDICT_CHAIN") or "") if kind else None
    if name == "redir":
        return R.Redirect()
    if name == "lookup":
        return R.Lookup(d.get_attr("NFTA_LOOKUP_SET"))
    if name == "nat" and d.get_attr("NFTA_NAT_TYPE") == "NFT_NAT_SNAT":
        return R.Snat(d.get_attr("NFTA_NAT_FAMILY"))
    return None


def comparable(table: R.Table) -> tuple[str, frozenset[R.Chain], tuple[R.Rule, ...]]:
    """A form where dumped and desired tables compare equal: chains as a set, rules grouped per
    chain in evaluation order (a stable sort), documentation dropped."""
    ordered = sorted(table.rules, key=lambda r: r.chain)
    return table.name, frozenset(table.chains), tuple(R.Rule(r.chain, r.exprs) for r in ordered)
