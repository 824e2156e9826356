"""A readable listing of a `rules.RuleSet` (one line per rule with its purpose).

Who calls it: docs, logs and debugging (`python -m cni_plugin.redirect.describe` prints the
default and the dual-stack+DNS rule sets). Pure; no I/O besides that `__main__` print.
"""

from __future__ import annotations

import ipaddress
import socket

from cni_plugin.redirect.rules import (
    PAYLOAD_NETWORK,
    Bitwise,
    Cmp,
    Counter,
    Ct,
    CtSet,
    Expr,
    Immediate,
    Meta,
    MetaSet,
    Payload,
    Redirect,
    RedirectConfig,
    RuleSet,
    Verdict,
    build_ruleset,
)

_PROTOS = {6: "tcp", 17: "udp"}
_FAMILIES = {2: "ipv4", 10: "ipv6"}


def _render_exprs(exprs: tuple[Expr, ...]) -> str:
    out: list[str] = []
    loaded = ""  # what register 1 holds, to print the next comparison's data readably
    for e in exprs:
        match e:
            case Meta(key) | Ct(key):
                loaded = key.split("_")[-1].lower()
                out.append(f"{'ct' if isinstance(e, Ct) else 'meta'} {loaded}")
            case Payload(base, offset, _):
                if base == PAYLOAD_NETWORK:
                    loaded = "addr"
                    out.append("ip saddr" if offset in (8, 12) else "ip daddr")
                else:
                    loaded = "port"
                    out.append("th sport" if offset == 0 else "th dport")
            case Bitwise(mask, xor):
                out.append(f"& {mask:#x}" + (f" | {xor:#x}" if xor else ""))
            case Cmp(op, data):
                out.append(f"{'==' if op == 'eq' else '!='} {_render_data(data, loaded)}")
            case Immediate(data):
                loaded = "port" if len(data) == 2 and data[0] else "int"
                out.append(f"load {_render_data(data, loaded)}")
            case Counter():
                out.append("counter")
            case Verdict(kind, chain):
                out.append(f"{kind} {chain}".strip())
            case Redirect():
                out.append("redirect")
            case MetaSet(key):
                out.append(f"-> meta {key.split('_')[-1].lower()}")
            case CtSet(key):
                out.append(f"-> ct {key.split('_')[-1].lower()}")
    return " ".join(out)


def _render_data(data: bytes, loaded: str) -> str:
    if loaded == "addr":
        return str(ipaddress.ip_address(data))
    if loaded == "port":
        return str(int.from_bytes(data, "big"))
    if loaded == "l4proto":
        return _PROTOS.get(data[0], str(data[0]))
    if loaded == "nfproto":
        return _FAMILIES.get(data[0], str(data[0]))
    if loaded == "oifname":
        return data.rstrip(b"\0").decode()
    return f"{int.from_bytes(data, 'little'):#x}"


def describe(ruleset: RuleSet) -> str:
    """A readable listing of the rule set (one line per rule, with its purpose)."""
    lines: list[str] = []
    for table in ruleset.tables:
        lines.append(f"table inet {table.name}")
        for chain in table.chains:
            base = f" (type {chain.type} hook {chain.hook} priority {chain.priority})"
            lines.append(f"  chain {chain.name}{base if chain.hook is not None else ''}")
            for rule in (r for r in table.rules if r.chain == chain.name):
                lines.append(f"    {_render_exprs(rule.exprs)}    # {rule.why}")
    for ip_rule in ruleset.ip_rules:
        lines.append(f"ip rule fwmark {ip_rule.fwmark:#x}/{ip_rule.fwmask:#x} pref "
                     f"{ip_rule.priority} lookup {ip_rule.table} (family {ip_rule.family})")
    for route in ruleset.routes:
        dst = "::/0" if route.family == socket.AF_INET6 else "0.0.0.0/0"
        lines.append(f"ip route local {dst} dev lo table {route.table}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(describe(build_ruleset(RedirectConfig())))
    print()
    print(describe(build_ruleset(RedirectConfig(ipv6=True, dns_capture=True))))
