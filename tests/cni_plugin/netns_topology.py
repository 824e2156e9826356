"""Test helper: a "node" netns and a "pod" netns joined by a veth pair, built with pyroute2.

Topology: node `veth-<id>` 10.77.0.1/24 (fd77::1/64) ⇄ pod `eth0` 10.77.0.2/24 (fd77::2/64), pod
default route via the node. Namespaces are named after the test and deleted afterwards. Sockets
inside a namespace come from pyroute2's netns-aware `create_socket` (independent of the code under
test). `observe_*` helpers only read (nft list / pyroute2 dumps).
"""

from __future__ import annotations

import os
import socket
import subprocess
import zlib
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2 import netns as pnetns

NODE_IP = "10.77.0.1"
POD_IP = "10.77.0.2"
NODE_IP6 = "fd77::1"
POD_IP6 = "fd77::2"
SO_ORIGINAL_DST = 80
IP_TRANSPARENT = 19
IFA_F_NODAD = 0x02  # usable at once: no duplicate-address detection (linux/if_addr.h)


@dataclass
class Topology:
    node: str
    pod: str

    @property
    def pod_path(self) -> str:
        return f"/var/run/netns/{self.pod}"

    @property
    def node_path(self) -> str:
        return f"/var/run/netns/{self.node}"

    def sock(self, ns: str, kind: int = socket.SOCK_STREAM,
             family: int = socket.AF_INET) -> socket.socket:
        sock = pnetns.create_socket(ns, family, kind)
        sock.settimeout(5)
        return sock

    def listen(self, ns: str, port: int, addr: str = "0.0.0.0") -> socket.socket:
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        sock = self.sock(ns, family=family)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((addr, port))
        sock.listen(8)
        return sock


def make_topology(test_name: str, wire: bool = True) -> Topology:
    tag = f"{zlib.crc32(f'{test_name}@{os.getpid()}'.encode()):08x}"[:6]
    topo = Topology(node=f"cnin-{tag}", pod=f"cnip-{tag}")
    for name in (topo.node, topo.pod):
        if os.path.exists(f"/var/run/netns/{name}"):
            pnetns.remove(name)
        pnetns.create(name)
    if not wire:
        return topo
    veth = f"veth-{tag}"
    with IPRoute(netns=topo.node) as ipr:
        ipr.link("add", ifname=veth, kind="veth", peer="eth0")
        peer = ipr.link_lookup(ifname="eth0")[0]
        ipr.link("set", index=peer, net_ns_fd=topo.pod)
        idx = ipr.link_lookup(ifname=veth)[0]
        ipr.addr("add", index=idx, address=NODE_IP, prefixlen=24)
        ipr.addr("add", index=idx, address=NODE_IP6, prefixlen=64, flags=IFA_F_NODAD)
        ipr.link("set", index=idx, state="up")
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
    with IPRoute(netns=topo.pod) as ipr:
        idx = ipr.link_lookup(ifname="eth0")[0]
        ipr.addr("add", index=idx, address=POD_IP, prefixlen=24)
        ipr.addr("add", index=idx, address=POD_IP6, prefixlen=64, flags=IFA_F_NODAD)
        ipr.link("set", index=idx, state="up")
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        ipr.route("add", dst="0.0.0.0/0", gateway=NODE_IP)
        ipr.route("add", dst="::/0", gateway=NODE_IP6, family=socket.AF_INET6)
    return topo


def destroy_topology(topo: Topology) -> None:
    for name in (topo.pod, topo.node):
        if os.path.exists(f"/var/run/netns/{name}"):
            pnetns.remove(name)


def observe_nft(ns: str) -> str:
    """`nft list ruleset` inside `ns` (observation only)."""
    proc = subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "ruleset"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"nft list ruleset in {ns} failed: {proc.stderr}")
    return proc.stdout


def observe_routing(ns: str) -> tuple[list[tuple], list[tuple]]:
    """All ip rules and all routes of every table and family, normalised for comparison."""
    with IPRoute(netns=ns) as ipr:
        ip_rules = sorted(
            (m["family"], m["table"], tuple(sorted((k, str(v)) for k, v in m["attrs"])))
            for fam in (socket.AF_INET, socket.AF_INET6) for m in ipr.get_rules(family=fam))
        routes = sorted(
            (m["family"], m["type"], m["dst_len"], m.get_attr("RTA_TABLE"),
             str(m.get_attr("RTA_DST")), m.get_attr("RTA_OIF"))
            for fam in (socket.AF_INET, socket.AF_INET6)
            for m in ipr.route("dump", family=fam)
            if not _kernel_link_local(m))
    return ip_rules, routes


def _kernel_link_local(route: Any) -> bool:
    """IPv6 link-local and multicast routes the kernel adds on its own once a link's address
    finishes duplicate-address detection, at a moment no test controls: never ours, so they
    are left out of before/after comparisons."""
    dst = str(route.get_attr("RTA_DST") or "")
    return route["family"] == socket.AF_INET6 and dst.startswith(("fe80:", "ff00:"))


def original_dst(sock: socket.socket) -> tuple[str, int]:
    """The pre-REDIRECT destination of an accepted connection (IPv4 or IPv6 socket option 80)."""
    if sock.family == socket.AF_INET6:
        raw = sock.getsockopt(socket.IPPROTO_IPV6, SO_ORIGINAL_DST, 28)  # sockaddr_in6
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), int.from_bytes(raw[2:4], "big")
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)  # sockaddr_in
    return socket.inet_ntoa(raw[4:8]), int.from_bytes(raw[2:4], "big")
