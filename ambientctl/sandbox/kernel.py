"""Network namespaces, links, addresses, routes and sysctls for the sandbox, through pyroute2.

Who calls it: `ambientctl.sandbox.core` (building and tearing down the topology) and the
process supervisor (forking a child inside a namespace). Nothing here shells out to `ip`.

Invariants:
- Switching namespace is `meshcore.netns` (one implementation for ztunnel, the CNI and the
  sandbox); this module names the sandbox's namespaces (`/var/run/netns/<name>`) and turns
  meshcore's `NetnsError`s into `KernelError`s (a `SandboxError`, which the CLI prints).
  `in_netns()` switches the calling thread and restores it in `finally`; it is used only to
  create a socket, fork a child or open a /proc/sys file, which keep the namespace they were
  made in.
- veth pairs are created inside the first namespace with the peer placed straight into the
  second, so interface names never touch the root namespace.
- `delete_netns` is idempotent (no error when the namespace is already gone).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns

from ambientctl.sandbox.errors import SandboxError
from meshcore import netns as mesh_netns

NETNS_RUN_DIR = mesh_netns.NETNS_RUN_DIR
T = TypeVar("T")


class KernelError(SandboxError):
    """A namespace or link operation failed; names the namespace/interface."""


def netns_path(name: str) -> str:
    return mesh_netns.named_netns(name)


def list_netns() -> list[str]:
    return list(pr_netns.listnetns())


@contextlib.contextmanager
def _as_kernel_error(name: str) -> Iterator[None]:
    """meshcore's NetnsErrors (cannot enter or come back) as the sandbox's KernelError."""
    try:
        yield
    except mesh_netns.NetnsNotFoundError as exc:
        raise KernelError(f"network namespace {name!r} does not exist") from exc
    except mesh_netns.NetnsError as exc:
        raise KernelError(f"netns {name!r}: {exc}") from exc


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """The current *thread* inside netns `name` for a synchronous block (never await inside)."""
    with _as_kernel_error(name), mesh_netns.entered(netns_path(name)):
        yield


def enter_netns_for_exec(name: str) -> None:
    """Move the calling thread into netns `name` for good (right before `os.exec*`, or in a
    CLI process that makes one request there and exits: `resolver.SandboxResolver`)."""
    with _as_kernel_error(name):
        mesh_netns.enter_for_good(netns_path(name))


def call_in_netns(name: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call `fn` on a fresh thread switched into netns `name`; return its result or raise."""
    with _as_kernel_error(name):
        return mesh_netns.call_in_netns(netns_path(name), fn, *args,
                                        thread_name=f"netns-{name}", **kwargs)


def socket_in_netns(name: str, family: int = socket.AF_INET,
                    kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A socket created inside netns `name` (it stays there; use it from any thread)."""
    with _as_kernel_error(name):
        return mesh_netns.socket_in_netns(netns_path(name), family, kind,
                                          thread_name=f"netns-{name}")


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
        return mesh_netns.netns_inode(netns_path(name))
    except mesh_netns.NetnsNotFoundError:
        return None


def pids_in_netns(inodes: set[int]) -> list[int]:
    """Processes whose network namespace is one of `inodes` (never ourselves)."""
    return mesh_netns.pids_in_netns(inodes)


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
