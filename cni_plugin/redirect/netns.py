"""Open netlink sockets bound to another network namespace (CONVENTIONS.md #10).

`netlink_sockets(netns)` creates the sockets on a fresh, dedicated OS thread switched into the
target netns (`meshcore.netns.call_in_netns`: enter, create, switch back; nothing else happens
while inside). A socket keeps the netns it was created in, so the caller then programs the pod's
kernel from any thread of its own netns. If switching back fails the thread simply ends (setns is
per thread), so the process never runs in the wrong namespace; the call still fails.

Who calls it: `cni_plugin.redirect.apply` (agent side: the plugin executable never imports
this). Hands back plain `socket.socket` objects owned by the caller. Also `netns_inode()` to tell
namespaces apart (the node's own netns is refused upstream). This module only turns meshcore's
netns errors into the CNI package's (`NetnsNotFoundError`, `RedirectError`).
"""

from __future__ import annotations

import socket

from cni_plugin.errors import NetnsNotFoundError, RedirectError
from meshcore import netns as mesh_netns
from meshcore.netns import NetnsRef

__all__ = ["NetnsRef", "netlink_sockets", "netns_inode", "own_netns_inode"]


def _cni_error(exc: mesh_netns.NetnsError, netns: NetnsRef) -> RedirectError:
    if isinstance(exc, mesh_netns.NetnsNotFoundError):
        return NetnsNotFoundError(f"{exc} (pod sandbox already gone?)", netns=str(netns))
    if isinstance(exc, mesh_netns.NetnsRestoreError):
        return RedirectError("could not switch back to the agent's netns", netns=str(netns))
    return RedirectError(str(exc), netns=str(netns))


def netns_inode(netns: NetnsRef) -> int:
    """The inode that identifies the namespace (equal inodes = same netns)."""
    try:
        return mesh_netns.netns_inode(netns)
    except mesh_netns.NetnsError as exc:
        raise _cni_error(exc, netns) from None


def own_netns_inode() -> int:
    """Inode of the calling thread's network namespace."""
    return mesh_netns.thread_netns_inode()


def netlink_sockets(netns: NetnsRef, protocols: tuple[int, ...]) -> list[socket.socket]:
    """One AF_NETLINK socket per protocol number, all living in `netns`."""
    made: list[socket.socket] = []

    def create() -> None:
        for proto in protocols:
            made.append(socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, proto))

    try:
        mesh_netns.call_in_netns(netns, create, thread_name="netns-enter")
    except BaseException as exc:
        for sock in made:
            sock.close()
        if isinstance(exc, mesh_netns.NetnsError):
            raise _cni_error(exc, netns) from None
        if isinstance(exc, OSError):
            raise RedirectError(f"netlink socket in {netns}: {exc}", netns=str(netns)) from exc
        raise
    return made
