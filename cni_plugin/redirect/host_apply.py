"""Install and remove the node's kubelet-probe exemption (`host_rules`) in the node netns.

`install(netns, config)` replaces our `inet istio-ambient-nat` table in `netns` with
`host_rules.build_host_table(config)` in one atomic transaction (delete-if-present, then create
table, chain, sets with their elements, rules): there is never a moment without the rule, and a
stale or foreign-edited table is replaced, not merged. `remove(netns)` deletes that table and
nothing else. Existing probe connections keep their NAT binding (it lives in conntrack).

Who calls it: the node agent (`cni_plugin.agent.host_probe`), from a worker thread; tests.
`netns` is normally the agent's own (the node's: the agent runs with host networking).
Programs the kernel only through pyroute2 (netlink).
"""

from __future__ import annotations

from typing import Any

from pyroute2.netlink import NETLINK_NETFILTER

from cni_plugin.redirect import nftnl
from cni_plugin.redirect.host_rules import HOST_TABLE, HostProbeConfig, build_host_table
from cni_plugin.redirect.netns import NetnsRef, netlink_sockets


def _session(netns: NetnsRef) -> nftnl.NftSession:
    (sock,) = netlink_sockets(netns, (NETLINK_NETFILTER,))
    try:
        return nftnl.NftSession(sock)
    except BaseException:
        sock.close()
        raise


def install(netns: NetnsRef, config: HostProbeConfig) -> None:
    """Make `netns` hold exactly the probe exemption for `config` (atomic replace)."""
    msgs: list[Any] = nftnl.delete_table_messages(HOST_TABLE)
    msgs += nftnl.table_messages(build_host_table(config))
    session = _session(netns)
    try:
        session.commit(msgs)
    finally:
        session.close()


def remove(netns: NetnsRef) -> bool:
    """Delete the probe exemption table from `netns`; True if it was there."""
    session = _session(netns)
    try:
        present = HOST_TABLE in session.dump()
        if present:
            session.commit(nftnl.delete_table_messages(HOST_TABLE))
        return present
    finally:
        session.close()
