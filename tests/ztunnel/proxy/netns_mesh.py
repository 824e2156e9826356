"""The namespace mesh of the data-path component tests: topology, apps, mesh state, proxies.

Topology (one host netns plays both nodes' ztunnels): pod A (client, 10.61.1.2), pod B (server:
a trio TCP echo recording its peers, 10.61.2.2) and a non-mesh netns C (10.61.3.2), each joined
to a router netns by a veth pair. A and B get the real in-pod redirection
(`cni_plugin.redirect.apply.install`); their proxies (`ztunnel.proxy.pod_proxy.PodProxy`, bound
through the workload manager's listener code) run in the test's trio loop with a hand-built
snapshot and certificates from `meshcore.pki`. Apps use plain sockets made inside their netns.
The `topology` fixture is in this folder's conftest.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable, Iterator

import trio

from cni_plugin.redirect import apply
from cni_plugin.redirect.rules import RedirectConfig
from meshcore.identity import SpiffeId
from meshcore.protos.istio import security as sec
from meshcore.telemetry import AccessLog, MeshMetrics, Tracing, TracingConfig
from meshcore.tlsconfig import WorkloadCredentials
from meshcore.wds import Snapshot
from tests.meshcore.hbone_trio.certs import credentials
from tests.support.netns import Netns, add_veth
from tests.ztunnel.proxy.builders import (
    ConfigFeed,
    ip,
    policy,
    service,
    service_key,
    workload,
)
from ztunnel.inpod.netns import NetnsSocketFactory
from ztunnel.inpod.pod import PodInfo, PodNetns
from ztunnel.proxy.context import ProxyContext
from ztunnel.proxy.pod_proxy import PodProxy

A_IP, B_IP, C_IP = "10.61.1.2", "10.61.2.2", "10.61.3.2"
A_IP6, B_IP6 = "fd61:1::2", "fd61:2::2"
VIP = "10.96.0.10"
APP_PORT = 8080
C_PORT = 9090
SVC = service_key("echo")
TIMEOUT = 10


# ---- topology ---------------------------------------------------------------------------------
IFA_F_NODAD = 0x02  # no duplicate address detection: v6 addresses usable at once


def _forwarding_on() -> None:
    for path in ("/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"):
        with open(path, "w") as f:
            f.write("1")


def _add_v6(ns: Netns, ifname: str, address: str) -> None:
    with ns.iproute() as ipr:
        index = ipr.link_lookup(ifname=ifname)[0]
        ipr.addr("add", index=index, address=address, prefixlen=64, flags=IFA_F_NODAD)


def build_topology(netns_factory: Callable[[str], Netns]) -> dict[str, Netns]:
    """Router R with pods A, B and non-mesh C on three dual-stack subnets (10.61.N.0/24,
    fd61:N::/64); A and B have the in-pod redirection for both families."""
    router = netns_factory("r")
    router.call(_forwarding_on)
    made = {}
    for i, name in enumerate(("a", "b", "c"), start=1):
        ns = netns_factory(name)
        add_veth(router, ns, f"r-{name}", "eth0")
        router.add_address(f"r-{name}", f"10.61.{i}.1", 24)
        ns.add_address("eth0", f"10.61.{i}.2", 24)
        _add_v6(router, f"r-{name}", f"fd61:{i}::1")
        _add_v6(ns, "eth0", f"fd61:{i}::2")
        router.set_link_up(f"r-{name}")
        ns.set_link_up("eth0")
        ns.add_route("default", gateway=f"10.61.{i}.1")
        with ns.iproute() as ipr:
            ipr.route("add", dst="::/0", gateway=f"fd61:{i}::1", family=socket.AF_INET6)
        made[name] = ns
    for name in ("a", "b"):
        apply.install(made[name].path, RedirectConfig(ipv6=True))
    return made


# ---- apps -------------------------------------------------------------------------------------
class Echo:
    """A trio TCP echo server inside a netns; `peers` records every client address it saw."""

    def __init__(self, ns: Netns, port: int) -> None:
        self.ns, self.port = ns, port
        self.peers: list[str] = []

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        raw = self.ns.call(socket.create_server, ("::", self.port), family=socket.AF_INET6,
                           dualstack_ipv6=True)
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(raw))
        task_status.started()
        await trio.serve_listeners(self._echo, [listener])

    async def _echo(self, stream: trio.SocketStream) -> None:
        peer = ipaddress.ip_address(stream.socket.getpeername()[0])
        mapped = peer.ipv4_mapped if isinstance(peer, ipaddress.IPv6Address) else None
        self.peers.append(str(mapped or peer))
        async with stream:
            with contextlib.suppress(trio.BrokenResourceError):
                async for chunk in stream:
                    await stream.send_all(chunk)
                await stream.send_eof()


async def app_connect(ns: Netns, ip: str, port: int) -> trio.SocketStream:
    """A plain (unmarked) app socket made inside `ns`, connected to ip:port."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = trio.socket.from_stdlib_socket(ns.call(socket.socket, family))
    await sock.connect((ip, port))
    return trio.SocketStream(sock)


async def roundtrip(stream: trio.SocketStream, payload: bytes) -> bytes:
    """Send `payload`, half-close, read everything back (the echo)."""
    got = bytearray()
    async with trio.open_nursery() as nursery:

        async def write() -> None:
            await stream.send_all(payload)
            await stream.send_eof()

        nursery.start_soon(write)
        async for chunk in stream:
            got += chunk
    return bytes(got)


async def refused(stream: trio.SocketStream) -> bool:
    """True when the connection ends (EOF or reset) without echoing anything back."""
    try:
        await stream.send_all(b"hello?")
        data = await stream.receive_some(1024)
    except (trio.BrokenResourceError, ConnectionResetError):
        return True
    return data == b""


# ---- mesh state -------------------------------------------------------------------------------
def sid(name: str) -> SpiffeId:
    return SpiffeId("cluster.local", "shop", name)


def base_items(b_policies: tuple[str, ...] = ()) -> list:
    return [
        workload("a", address=A_IP, addresses=[ip(A_IP), ip(A_IP6)]),
        workload("b", address=B_IP, addresses=[ip(B_IP), ip(B_IP6)],
                 services={SVC: [(80, APP_PORT)]}, policies=b_policies),
        service("echo", vip=VIP, ports=[(80, APP_PORT)]),
    ]


def deny_a() -> sec.Authorization:
    return policy("deny-a", principals=("cluster.local/ns/shop/sa/a",))


def strict() -> sec.Authorization:
    presence = sec.StringMatch(presence=sec.betterproto_lib_google_protobuf.Empty())
    return sec.Authorization(
        name="istio_converted_static_strict", namespace="istio-system",
        scope=sec.Scope.WORKLOAD_SELECTOR, action=sec.Action.DENY,
        groups=[sec.Group(rules=[sec.Rules(matches=[sec.Match(not_principals=[presence])])])],
    )


class Certificates:
    """The certificate manager's role: one pki-signed credential per identity, made on demand."""

    def __init__(self) -> None:
        self.issued: dict[SpiffeId, WorkloadCredentials] = {}

    async def wait_credentials(self, identity: SpiffeId) -> WorkloadCredentials:
        self.prefetch(identity)
        await trio.lowlevel.checkpoint()
        return self.issued[identity]

    def prefetch(self, identity: SpiffeId) -> None:
        if identity not in self.issued:
            self.issued[identity] = credentials(identity)

    def forget(self, identity: SpiffeId) -> None:
        self.issued.pop(identity, None)


class AccessLines(logging.Handler):
    """Collects the `access` logger's lines; `wait_for` waits (no polling) until enough match.

    Lines are emitted on the trio thread by the handlers, so `emit` may wake trio directly.
    """

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self._lot = trio.lowlevel.ParkingLot()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        self._lot.unpark_all()

    def matching(self, *words: str) -> list[str]:
        return [line for line in self.lines if all(w in line for w in words)]

    async def wait_for(self, count: int, *words: str) -> list[str]:
        while len(found := self.matching(*words)) < count:
            await self._lot.park()
        return found


@contextlib.contextmanager
def access_lines() -> Iterator[AccessLines]:
    logger = logging.getLogger("access")
    handler, level = AccessLines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@dataclasses.dataclass
class Mesh:
    """What a running mesh exposes to a test: the config feed, the proxies and the two apps."""

    feed: ConfigFeed
    proxies: dict[str, PodProxy]
    echo_b: Echo
    echo_c: Echo
    metrics: MeshMetrics
    access: AccessLines

    def publish(self, snap: Snapshot) -> None:
        self.feed.publish(snap)


async def start_apps(nursery: trio.Nursery, topo: dict[str, Netns]) -> tuple[Echo, Echo]:
    """Echo apps in pod B (8080) and in non-mesh C (9090), served in `nursery`."""
    echo_b, echo_c = Echo(topo["b"], APP_PORT), Echo(topo["c"], C_PORT)
    await nursery.start(echo_b.serve)
    await nursery.start(echo_c.serve)
    return echo_b, echo_c


def proxy_context(feed: ConfigFeed, metrics: MeshMetrics | None = None,
                  tracing: Tracing | None = None) -> ProxyContext:
    return ProxyContext(config=feed, certificates=Certificates(), access_log=AccessLog(),
                        metrics=metrics.tcp if metrics is not None else None,
                        tracing=tracing or Tracing(TracingConfig()))


@contextlib.asynccontextmanager
async def running_mesh(topo: dict[str, Netns], snap: Snapshot,
                       tracing: Tracing | None = None) -> AsyncIterator[Mesh]:
    """Proxies for pods A and B (and echo apps in B on 8080 and C on 9090), torn down after."""
    feed = ConfigFeed(snap)
    metrics = MeshMetrics("ztunnel")
    ctx = proxy_context(feed, metrics, tracing)
    sockets = NetnsSocketFactory()
    fds = [os.open(topo[n].path, os.O_RDONLY | os.O_CLOEXEC) for n in ("a", "b")]
    try:
        with access_lines() as access:
            async with trio.open_nursery() as nursery:
                proxies = {}
                for name, fd in zip(("a", "b"), fds, strict=True):
                    info = PodInfo(f"uid-{name}", name, "shop", name, os.fstat(fd).st_ino)
                    netns = PodNetns(fd, info.netns_inode, sockets)
                    proxies[name] = PodProxy(ctx, info, netns)
                    await nursery.start(proxies[name].serve)
                echo_b, echo_c = await start_apps(nursery, topo)
                yield Mesh(feed, proxies, echo_b, echo_c, metrics, access)
                nursery.cancel_scope.cancel()
    finally:
        sockets.close()
        metrics.shutdown()
        for fd in fds:
            os.close(fd)
