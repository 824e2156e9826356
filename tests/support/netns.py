"""Real network namespaces for tests and benchmarks, programmed through pyroute2.

Who calls it: the pytest fixtures in `tests/support/fixtures.py`, the interop tests and
`bench/`. What it hands out: `Netns` handles (create a socket, run a callable or start a
subprocess inside the namespace) and `NetnsPair`, two namespaces joined by a veth pair.

Invariants:
- Switching namespace is per thread (setns(2) acts on the calling thread). `in_netns()` saves the
  thread's own namespace from /proc/thread-self (not /proc/self, which names the main thread),
  switches, and restores in `finally`; nothing inside may await, and it is only ever used to
  create sockets or fork a child, which keep the namespace they were made in. The switching
  itself is `meshcore.netns` (`entered`, `call_in_netns`); this module adds names and errors.
- Everything made here is removed by `delete_netns`/the context managers even when the body
  raises: leftover processes inside the namespace are killed by pid, then the namespace (and
  with it its veth ends) is deleted.
- Interface names are at most 15 bytes (IFNAMSIZ); veth pairs are created inside the first
  namespace with the peer placed straight into the second, so names never touch the root
  namespace and concurrent test runs cannot collide on them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
import re
import secrets
import signal
import subprocess
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns

from meshcore import netns as mesh_netns

NETNS_RUN_DIR = mesh_netns.NETNS_RUN_DIR
IFNAMSIZ_MAX = 15

T = TypeVar("T")
# A namespace operation failed; the message names the namespace and what to check. Entering
# raises meshcore's subclasses (NetnsNotFoundError, NetnsEnterError, NetnsRestoreError).
NetnsError = mesh_netns.NetnsError


def unique_name(tag: str, *, limit: int = 24) -> str:
    """A short, unique namespace name derived from `tag` (for example the test's name)."""
    slug = re.sub(r"[^a-z0-9]+", "-", tag.lower()).strip("-") or "ns"
    return f"t-{slug[: limit - 7].rstrip('-')}-{secrets.token_hex(2)}"


def in_netns(name: str) -> contextlib.AbstractContextManager[None]:
    """Run the body with the *current thread* inside netns `name`; restore it afterwards.

    Synchronous only: no await inside (a trio task switch would run other tasks in the
    wrong namespace). Sockets created inside stay in `name` after the block.
    """
    return mesh_netns.entered(mesh_netns.named_netns(name))


def call_in_netns(name: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call `fn` on a fresh thread that lives in netns `name`; return its result or raise."""
    return mesh_netns.call_in_netns(mesh_netns.named_netns(name), fn, *args,
                                    thread_name=f"netns-{name}", **kwargs)


@dataclasses.dataclass(frozen=True)
class Netns:
    """A named network namespace made by `create_netns`."""

    name: str

    @property
    def path(self) -> str:
        return mesh_netns.named_netns(self.name)

    def enter(self) -> contextlib.AbstractContextManager[None]:
        """`in_netns(self.name)`: switch the current thread for a synchronous block."""
        return in_netns(self.name)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return call_in_netns(self.name, fn, *args, **kwargs)

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a subprocess inside the namespace (forked from a thread switched into it).

        The child's pid is the program itself (no `ip netns exec` in between), so its
        /proc/<pid> statistics describe the program.
        """
        with self.enter():
            return subprocess.Popen(list(argv), **kwargs)

    def run(
        self, argv: Sequence[str], *, timeout: float | None = None, **kwargs: Any
    ) -> subprocess.CompletedProcess[Any]:
        """Like `subprocess.run` with output captured as text, the child inside the namespace.

        Only the fork happens in the namespace; waiting happens back in the caller's own, so a
        long wait never leaves the thread switched. On timeout the child is killed and
        `subprocess.TimeoutExpired` raised.
        """
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        kwargs.setdefault("text", True)
        proc = self.popen(argv, **kwargs)
        with proc:
            try:
                out, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                raise
        return subprocess.CompletedProcess(list(argv), proc.returncode, out, err)

    def iproute(self) -> IPRoute:
        """A pyroute2 IPRoute bound to this namespace (close it, or use it in `with`)."""
        return IPRoute(netns=self.name)

    def pids(self) -> list[int]:
        """Processes currently inside the namespace."""
        return pr_netns.ns_pids().get(self.name, [])

    def set_link_up(self, ifname: str) -> None:
        with self.iproute() as ipr:
            ipr.link("set", index=_index(ipr, ifname, self.name), state="up")

    def add_address(self, ifname: str, address: str, prefixlen: int) -> None:
        with self.iproute() as ipr:
            ipr.addr("add", index=_index(ipr, ifname, self.name), address=address,
                     prefixlen=prefixlen)

    def add_route(self, dst: str, gateway: str | None = None, ifname: str | None = None) -> None:
        """Add a route (`dst` in CIDR form or "default") via a gateway and/or an interface."""
        spec: dict[str, Any] = {"dst": "0.0.0.0/0" if dst == "default" else dst}
        if gateway:
            spec["gateway"] = gateway
        with self.iproute() as ipr:
            if ifname:
                spec["oif"] = _index(ipr, ifname, self.name)
            ipr.route("add", **spec)


def _index(ipr: IPRoute, ifname: str, ns: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise NetnsError(f"no interface {ifname!r} in netns {ns!r}")
    return int(found[0])


def create_netns(name: str) -> Netns:
    """Create netns `name` with its loopback up. Raises NetnsError if it already exists."""
    if name in pr_netns.listnetns():
        raise NetnsError(f"network namespace {name!r} already exists; remove it with "
                         f"`ip netns del {name}` if it is a leftover")
    pr_netns.create(name)
    ns = Netns(name)
    try:
        ns.set_link_up("lo")
    except BaseException:
        delete_netns(ns)
        raise
    return ns


def delete_netns(ns: Netns) -> None:
    """Kill whatever still runs inside `ns` (by pid), then delete the namespace. Idempotent."""
    if ns.name not in pr_netns.listnetns():
        return
    for pid in ns.pids():
        if pid == os.getpid():
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    pr_netns.remove(ns.name)


@contextlib.contextmanager
def netns(tag: str) -> Iterator[Netns]:
    """A fresh namespace named after `tag`, deleted on exit."""
    ns = create_netns(unique_name(tag))
    try:
        yield ns
    finally:
        delete_netns(ns)


def add_veth(a: Netns, b: Netns, if_a: str, if_b: str, *, mtu: int | None = None) -> None:
    """A veth pair with end `if_a` in `a` and `if_b` in `b` (both left down)."""
    for ifname in (if_a, if_b):
        if len(ifname.encode()) > IFNAMSIZ_MAX:
            raise NetnsError(f"interface name {ifname!r} is longer than {IFNAMSIZ_MAX} bytes")
    extra: dict[str, Any] = {"mtu": mtu} if mtu else {}
    with a.iproute() as ipr:
        ipr.link("add", ifname=if_a, kind="veth",
                 peer={"ifname": if_b, "net_ns_fd": b.name, **extra}, **extra)


@dataclasses.dataclass(frozen=True)
class NetnsPair:
    """Two namespaces joined by one veth pair, addressed in one /24 (or /64)."""

    a: Netns
    b: Netns
    if_a: str
    if_b: str
    ip_a: str
    ip_b: str
    prefixlen: int


def link_pair(
    a: Netns,
    b: Netns,
    *,
    subnet: str = "10.250.0.0/24",
    if_a: str = "veth-a",
    if_b: str = "veth-b",
    mtu: int | None = None,
) -> NetnsPair:
    """Join `a` and `b` with a veth pair using the first two host addresses of `subnet`."""
    net = ipaddress.ip_network(subnet)
    hosts = net.hosts()
    ip_a, ip_b = str(next(hosts)), str(next(hosts))
    add_veth(a, b, if_a, if_b, mtu=mtu)
    a.add_address(if_a, ip_a, net.prefixlen)
    b.add_address(if_b, ip_b, net.prefixlen)
    a.set_link_up(if_a)
    b.set_link_up(if_b)
    return NetnsPair(a, b, if_a, if_b, ip_a, ip_b, net.prefixlen)


@contextlib.contextmanager
def netns_pair(tag: str, **link_kwargs: Any) -> Iterator[NetnsPair]:
    """Two fresh namespaces named after `tag`, joined by a veth pair; all removed on exit."""
    base = unique_name(tag)
    made: list[Netns] = []
    try:
        made.append(create_netns(f"{base}-a"))
        made.append(create_netns(f"{base}-b"))
        yield link_pair(made[0], made[1], **link_kwargs)
    finally:
        for ns in reversed(made):
            delete_netns(ns)
