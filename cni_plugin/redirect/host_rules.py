"""The node-side kubelet-probe exemption as pure data (AMBIENT-INTERNALS §5.4.3).

Why: inside an enrolled pod, inbound TCP is redirected to ztunnel (15006), where mTLS policy
applies; a kubelet health probe is plaintext from the node, so under STRICT PeerAuthentication
(or a DENY policy) every probe would fail and no pod would ever become ready. Istio's answer,
reproduced here: on the node, locally originated TCP from the kubelet's user to an enrolled pod's
IP is source-NATed to the link-local probe address `169.254.7.127` (v6:
`fd16:9254:7127:1337:ffff:ffff:ffff:ffff`), and the in-pod rules (`rules.build_ruleset`) accept
TCP from that address without redirecting it.

Shape (Istio's `native_nftables` hostprobe golden): table `inet istio-ambient-nat` in the node
netns; chain `postrouting` (nat hook postrouting, priority 100 = srcnat); sets
`istio-inpod-probes-v4` (ipv4_addr) and `istio-inpod-probes-v6` (ipv6_addr) holding the IPs of
the pods the agent enrolled; one rule per family:
`meta l4proto tcp meta skuid <kubelet uid> ip daddr @istio-inpod-probes-v4 snat to 169.254.7.127`.
`meta skuid` only matches packets that carry a local socket, so forwarded traffic (other pods,
kube-proxy, load balancers) is never touched, only the node's own processes of that user.

Who calls it: `cni_plugin.redirect.host_apply` (installs it), tests.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from cni_plugin.redirect import rules as R

HOST_TABLE = "istio-ambient-nat"
PROBE_SET_V4 = "istio-inpod-probes-v4"
PROBE_SET_V6 = "istio-inpod-probes-v6"
HOOK_POSTROUTING = 4
SRCNAT_PRIORITY = 100
HOST_TABLE_COMMENT = "ambient-py kubelet probe exemption (node); do not edit"
NFT_TYPE_IPV4_ADDR = 7  # nft's datatype ids (TYPE_IPADDR, TYPE_IP6ADDR)
NFT_TYPE_IPV6_ADDR = 8


@dataclass(frozen=True)
class HostProbeConfig:
    """What the node's probe exemption needs: the kubelet's uid and the enrolled pods' IPs."""

    kubelet_uid: int
    pod_ips: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not 0 <= self.kubelet_uid <= 0xFFFFFFFF:
            raise ValueError(f"kubelet uid {self.kubelet_uid} is not a valid uid")
        for ip in self.pod_ips:
            ipaddress.ip_address(ip)  # ValueError names the bad address


def _packed(ips: Iterable[str], af: int) -> tuple[bytes, ...]:
    return tuple(sorted(socket.inet_pton(af, ip) for ip in ips))


def _snat_rule(family: int, set_name: str, uid: int) -> R.Rule:
    offset, length = (24, 16) if family == R.NFPROTO_IPV6 else (16, 4)
    probe = R.PROBE_IPV6 if family == R.NFPROTO_IPV6 else R.PROBE_IPV4
    af = socket.AF_INET6 if family == R.NFPROTO_IPV6 else socket.AF_INET
    return R.Rule("postrouting", (
        *R.l4proto(R.TCP),
        R.Meta("NFT_META_SKUID"), R.Cmp("eq", struct.pack("=I", uid)),
        *R.nfproto(family), R.Payload(R.PAYLOAD_NETWORK, offset, length), R.Lookup(set_name),
        R.Counter(), R.Immediate(socket.inet_pton(af, probe)), R.Snat(family),
    ), f"kubelet (uid {uid}) probes to enrolled pods come from {probe}")


def build_host_table(config: HostProbeConfig) -> R.Table:
    """The complete desired `inet istio-ambient-nat` table of the node netns."""
    v4 = [ip for ip in config.pod_ips if ipaddress.ip_address(ip).version == 4]
    v6 = [ip for ip in config.pod_ips if ipaddress.ip_address(ip).version == 6]
    return R.Table(
        HOST_TABLE,
        (R.Chain("postrouting", HOOK_POSTROUTING, "nat", SRCNAT_PRIORITY),),
        (_snat_rule(R.NFPROTO_IPV4, PROBE_SET_V4, config.kubelet_uid),
         _snat_rule(R.NFPROTO_IPV6, PROBE_SET_V6, config.kubelet_uid)),
        (R.NftSet(PROBE_SET_V4, NFT_TYPE_IPV4_ADDR, 4, _packed(v4, socket.AF_INET)),
         R.NftSet(PROBE_SET_V6, NFT_TYPE_IPV6_ADDR, 16, _packed(v6, socket.AF_INET6))),
        HOST_TABLE_COMMENT,
    )
