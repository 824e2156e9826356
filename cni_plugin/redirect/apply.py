"""Install, check and remove the in-pod redirection inside a pod's network namespace.

`install(netns, config)` makes the pod netns hold exactly `rules.build_ruleset(config)`:
- nftables: our tables are dumped and compared with the desired ones; equal → nothing is sent;
  otherwise one atomic transaction deletes whatever of ours exists and creates the desired tables
  (so a partial or stale install is replaced, never merged);
- policy routing (`ip rule` and the `local` default route in table 100) is added when missing.
Order: routes, then ip rules, then nftables (capture starts only once the return path exists). If
any step fails, everything of ours is removed again and the error re-raised: a failed install
leaves the pod as it was. `remove(netns)` deletes our tables, ip rules and routes, touching nothing
else; a netns that no longer exists counts as removed.

Who calls it: the node agent (`cni_plugin.agent.server`), tests. Blocking (netlink round trips,
a thread per netns entry): trio callers wrap it in `trio.to_thread.run_sync`. Programs the kernel
only through pyroute2 (netlink); never shells out.
"""

from __future__ import annotations

import socket
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink import NETLINK_NETFILTER, NETLINK_ROUTE
from pyroute2.netlink.exceptions import NetlinkError

from cni_plugin.errors import NetnsNotFoundError, RedirectError
from cni_plugin.redirect import nftnl
from cni_plugin.redirect import rules as R
from cni_plugin.redirect.netns import NetnsRef, netlink_sockets, netns_inode, own_netns_inode

RTN_LOCAL = 2
RT_SCOPE_HOST = 254
RTPROT_BOOT = 3


class _Session:
    """Netlink handles (rtnetlink + nftables) bound to one pod netns; a context manager."""

    def __init__(self, netns: NetnsRef) -> None:
        if netns_inode(netns) == own_netns_inode():
            raise RedirectError(
                f"refusing to program {netns}: it is the agent's own (node) network namespace; "
                "is CNI_NETNS the pod's netns?", netns=str(netns))
        route_sock, nf_sock = netlink_sockets(netns, (NETLINK_ROUTE, NETLINK_NETFILTER))
        self.netns = str(netns)
        try:
            self.ipr = IPRoute(use_socket=route_sock)
        except BaseException:
            route_sock.close()
            nf_sock.close()
            raise
        try:
            self.nft = nftnl.NftSession(nf_sock)
        except BaseException:
            self.ipr.close()
            nf_sock.close()
            raise

    def __enter__(self) -> _Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.nft.close()
        self.ipr.close()

    # -- policy routing ----------------------------------------------------------------------
    def _lo_index(self) -> int:
        found = self.ipr.link_lookup(ifname="lo")
        if not found:
            raise RedirectError(f"no 'lo' interface in {self.netns}", netns=self.netns)
        return int(found[0])

    def find_ip_rule(self, want: R.IpRule) -> Any | None:
        for msg in self.ipr.get_rules(family=want.family):
            if (msg.get_attr("FRA_FWMARK") == want.fwmark
                    and msg.get_attr("FRA_FWMASK") == want.fwmask
                    and msg.get_attr("FRA_PRIORITY") == want.priority
                    and (msg.get_attr("FRA_TABLE") or msg["table"]) == want.table):
                return msg
        return None

    def find_route(self, want: R.LocalRoute) -> Any | None:
        lo = self._lo_index()
        for msg in self.ipr.route("dump", family=want.family, table=want.table):
            if (msg["type"] == RTN_LOCAL and msg["dst_len"] == 0
                    and msg.get_attr("RTA_OIF") == lo):
                return msg
        return None

    def _route_args(self, want: R.LocalRoute) -> dict[str, Any]:
        dst = "::/0" if want.family == socket.AF_INET6 else "0.0.0.0/0"
        return {"family": want.family, "dst": dst, "type": RTN_LOCAL, "scope": RT_SCOPE_HOST,
                "oif": self._lo_index(), "table": want.table, "proto": RTPROT_BOOT}

    def _rule_args(self, want: R.IpRule) -> dict[str, Any]:
        return {"family": want.family, "fwmark": want.fwmark, "fwmask": want.fwmask,
                "priority": want.priority, "table": want.table}

    def add_routing(self, ruleset: R.RuleSet) -> None:
        try:
            for route in ruleset.routes:
                if self.find_route(route) is None:
                    self.ipr.route("add", **self._route_args(route))
            for rule in ruleset.ip_rules:
                if self.find_ip_rule(rule) is None:
                    self.ipr.rule("add", **self._rule_args(rule))
        except NetlinkError as exc:
            raise RedirectError(
                f"adding the policy routing (ip rule fwmark {R.TPROXY_MARK:#x}, local route in "
                f"table {R.ROUTE_TABLE}) in {self.netns} failed: {exc}; does something else in the "
                f"pod use route table {R.ROUTE_TABLE}, or is 'lo' missing?",
                netns=self.netns) from exc

    def remove_routing(self) -> bool:
        changed = False
        for af in (socket.AF_INET, socket.AF_INET6):
            rule = R.IpRule(af, R.TPROXY_MARK, R.TPROXY_MASK, R.RULE_PRIORITY, R.ROUTE_TABLE)
            while self.find_ip_rule(rule) is not None:
                self.ipr.rule("del", **self._rule_args(rule))
                changed = True
            route = R.LocalRoute(af, R.ROUTE_TABLE)
            if self.find_route(route) is not None:
                self.ipr.route("del", **self._route_args(route))
                changed = True
        return changed

    # -- nftables ----------------------------------------------------------------------------
    def nft_matches(self, ruleset: R.RuleSet) -> bool:
        have = {name: nftnl.comparable(t) for name, t in self.nft.dump().items()}
        want = {t.name: nftnl.comparable(t) for t in ruleset.tables}
        return have == want

    def replace_tables(self, ruleset: R.RuleSet) -> None:
        msgs: list[Any] = []
        for name in R.OUR_TABLES:
            msgs += nftnl.delete_table_messages(name)
        for table in ruleset.tables:
            msgs += nftnl.table_messages(table)
        self.nft.commit(msgs)

    def remove_tables(self) -> bool:
        present = [name for name in self.nft.dump() if name in R.OUR_TABLES]
        if present:
            msgs: list[Any] = []
            for name in present:
                msgs += nftnl.delete_table_messages(name)
            self.nft.commit(msgs)
        return bool(present)

    def routing_matches(self, ruleset: R.RuleSet) -> bool:
        return (all(self.find_route(r) is not None for r in ruleset.routes)
                and all(self.find_ip_rule(r) is not None for r in ruleset.ip_rules))


def install(netns: NetnsRef, config: R.RedirectConfig) -> bool:
    """Make `netns` hold exactly the redirection for `config`; True if anything changed."""
    ruleset = R.build_ruleset(config)
    with _Session(netns) as session:
        try:
            routing_ok = session.routing_matches(ruleset)
            if routing_ok and session.nft_matches(ruleset):
                return False
            if not routing_ok:
                session.add_routing(ruleset)
            if not session.nft_matches(ruleset):
                session.replace_tables(ruleset)
            return True
        except BaseException:
            _remove_quietly(session)
            raise


def _remove_quietly(session: _Session) -> None:
    try:
        session.remove_tables()
        session.remove_routing()
    except (RedirectError, NetlinkError, OSError):
        pass  # the original error is the one worth reporting


def remove(netns: NetnsRef) -> bool:
    """Delete our tables, ip rules and routes from `netns`; True if anything was there."""
    try:
        session = _Session(netns)
    except NetnsNotFoundError:
        return False
    with session:
        try:
            changed = session.remove_tables()
            return session.remove_routing() or changed
        except NetlinkError as exc:
            raise RedirectError(f"removing redirection from {netns} failed: {exc}",
                                netns=str(netns)) from exc


def is_installed(netns: NetnsRef, config: R.RedirectConfig) -> bool:
    """True when `netns` holds exactly the redirection for `config` (CNI CHECK)."""
    ruleset = R.build_ruleset(config)
    with _Session(netns) as session:
        return session.routing_matches(ruleset) and session.nft_matches(ruleset)
