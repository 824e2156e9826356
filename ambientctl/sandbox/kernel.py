"""Network namespaces, links, addresses, routes and sysctls for the sandbox, through pyroute2.

Who calls it: `ambientctl.sandbox.core` (building and tearing down the topology) and the
process supervisor (forking a child inside a namespace). Nothing here shells out to `ip`.

Invariants:
- Switching namespace is per thread (setns acts on the calling thread). `in_netns()` saves
  /proc/thread-self/ns/net, switches, and restores in `finally`. It is used only to create a
  socket, fork a child or open a /proc/sys file; those keep the namespace they were made in.
- veth pairs are created inside the first namespace with the peer placed straight into the
  second, so interface names never touch the root namespace.
- `delete_netns` is idempotent (no error when the namespace is already gone).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns

from ambientctl.sandbox.errors import SandboxError

NETNS_RUN_DIR = "/var/run/netns"
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")


class KernelError(SandboxError):
    """A namespace or link operation failed; names the namespace/interface."""


def netns_path(name: str) -> str:
    return os.path.join(NETNS_RUN_DIR, name)


def list_netns() -> list[str]:
    return list(pr_netns.listnetns())


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise KernelError(f"setns into {what} failed: {os.strerror(err)} (are we root?)")


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """The current *thread* inside netns `name` for a synchronous block (never await inside)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        try:
            target = os.open(netns_path(name), os.O_RDONLY)
        except FileNotFoundError as exc:
            raise KernelError(f"network namespace {name!r} does not exist") from exc
        try:
            _setns(target, f"netns {name!r}")
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own, "the thread's original netns")
    finally:
        os.close(own)


def enter_netns_for_exec(name: str) -> None:
    """Move the calling thread into netns `name` for good (right before `os.exec*`, or in a
    CLI process that makes one request there and exits: `resolver.SandboxResolver`)."""
    try:
        fd = os.open(netns_path(name), os.O_RDONLY)
    except FileNotFoundError as exc:
        raise KernelError(f"network namespace {name!r} does not exist") from exc
    try:
        _setns(fd, f"netns {name!r}")
    finally:
        os.close(fd)


def call_in_netns(name: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call `fn` on a fresh thread switched into netns `name`; return its result or raise."""
    box: dict[str, Any] = {}

    def runner() -> None:
        try:
            with in_netns(name):
                box["result"] = fn(*args, **kwargs)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=runner, name=f"netns-{name}")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]  # type: ignore[no-any-return]


def socket_in_netns(name: str, family: int = socket.AF_INET,
                    kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A socket created inside netns `name` (it stays there; use it from any thread)."""
    return call_in_netns(name, socket.socket, family, kind)


def create_netns(name: str) -> None:
    """Create netns `name` with loopback up; KernelError if it exists already."""
    if name in list_netns():
        raise KernelError(f"network namespace {name!r} already exists (a leftover? "
                          "`ambientctl sandbox down` removes the sandbox's namespaces)")
    pr_netns.create(name)
    with IPRoute(netns=name) as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")


def delete_netns(name: str) -> bool:
    """Delete netns `name`; False if it did not exist."""
    if name not in list_netns():
        return False
    pr_netns.remove(name)
    return True


def netns_inode(name: str) -> int | None:
    try:
        return os.stat(netns_path(name)).st_ino
    except FileNotFoundError:
        return None


def pids_in_netns(inodes: set[int]) -> list[int]:
    """Processes whose network namespace is one of `inodes` (never ourselves)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino in inodes:
                out.append(int(entry))
        except OSError:
            continue
    return out


def _index(ipr: IPRoute, ifname: str, ns: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise KernelError(f"no interface {ifname!r} in netns {ns!r}")
    return int(found[0])


def add_bridge(ns: str, bridge: str, address: str, prefixlen: int) -> None:
    with IPRoute(netns=ns) as ipr:
        ipr.link("add", ifname=bridge, kind="bridge")
        idx = _index(ipr, bridge, ns)
        ipr.addr("add", index=idx, address=address, prefixlen=prefixlen)
        ipr.link("set", index=idx, state="up")


def add_veth(ns_a: str, if_a: str, ns_b: str, if_b: str) -> None:
    """A veth pair `if_a` in `ns_a` and `if_b` in `ns_b` (both down)."""
    for ifname in (if_a, if_b):
        if len(ifname.encode()) > 15:
            raise KernelError(f"interface name {ifname!r} is longer than 15 bytes")
    with IPRoute(netns=ns_a) as ipr:
        ipr.link("add", ifname=if_a, kind="veth", peer={"ifname": if_b, "net_ns_fd": ns_b})


def enslave(ns: str, ifname: str, bridge: str) -> None:
    with IPRoute(netns=ns) as ipr:
        ipr.link("set", index=_index(ipr, ifname, ns), master=_index(ipr, bridge, ns),
                 state="up")


def configure_link(ns: str, ifname: str, addresses: list[tuple[str, int]]) -> None:
    """Add addresses to `ifname` and bring it up."""
    with IPRoute(netns=ns) as ipr:
        idx = _index(ipr, ifname, ns)
        for address, prefixlen in addresses:
            ipr.addr("add", index=idx, address=address, prefixlen=prefixlen)
        ipr.link("set", index=idx, state="up")


def add_route(ns: str, dst: str, *, gateway: str | None = None, ifname: str | None = None,
              onlink: bool = False) -> None:
    """Add a route (`dst` as CIDR or "default") via a gateway and/or out of an interface."""
    spec: dict[str, Any] = {"dst": "0.0.0.0/0" if dst == "default" else dst}
    if gateway:
        spec["gateway"] = gateway
    with IPRoute(netns=ns) as ipr:
        if ifname:
            spec["oif"] = _index(ipr, ifname, ns)
            if not gateway:
                spec["scope"] = 253  # link
        if onlink:
            spec["flags"] = 4  # RTNH_F_ONLINK
        ipr.route("add", **spec)


def link_names(ns: str) -> list[str]:
    with IPRoute(netns=ns) as ipr:
        return [link.get_attr("IFLA_IFNAME") for link in ipr.get_links()]


def addresses(ns: str) -> list[tuple[str, str, int]]:
    """(ifname, address, prefixlen) of every IPv4 address in `ns`."""
    with IPRoute(netns=ns) as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        return [(names.get(a["index"], "?"), a.get_attr("IFA_ADDRESS"), a["prefixlen"])
                for a in ipr.get_addr(family=socket.AF_INET)]


def write_sysctl(ns: str, key: str, value: str) -> None:
    """Write /proc/sys/<key> as seen from inside `ns` (per-netns sysctls such as ip_forward)."""
    path = "/proc/sys/" + key.replace(".", "/")

    def write() -> None:
        with open(path, "w") as f:
            f.write(value)

    call_in_netns(ns, write)
