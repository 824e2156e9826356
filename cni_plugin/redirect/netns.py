"""Open netlink sockets bound to another network namespace (CONVENTIONS.md #10).

`netlink_sockets(netns)` enters the target netns on a fresh, dedicated OS thread, creates the
sockets there and switches back; nothing else happens while inside. A socket keeps the netns it was
created in, so the caller then programs the pod's kernel from any thread of its own netns. If
switching back fails the thread simply ends (setns is per thread), so the process never runs in the
wrong namespace.

Who calls it: `cni_plugin.redirect.apply`. Hands back plain `socket.socket` objects owned by the
caller. Also `netns_inode()` to tell namespaces apart (the node's own netns is refused upstream).
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import threading

from cni_plugin.errors import NetnsNotFoundError, RedirectError

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)

NetnsRef = str | int  # a path like /var/run/netns/x or /proc/<pid>/ns/net, or an open fd


def _open(netns: NetnsRef) -> int:
    if isinstance(netns, int):
        return os.dup(netns)
    try:
        return os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NetnsNotFoundError(
            f"network namespace {netns} does not exist (pod sandbox already gone?)", netns=netns
        ) from None
    except OSError as exc:
        raise RedirectError(f"cannot open network namespace {netns}: {exc}", netns=netns) from exc


def netns_inode(netns: NetnsRef) -> int:
    """The inode that identifies the namespace (equal inodes = same netns)."""
    fd = _open(netns)
    try:
        return os.fstat(fd).st_ino
    finally:
        os.close(fd)


def own_netns_inode() -> int:
    """Inode of the calling thread's network namespace."""
    return os.stat("/proc/thread-self/ns/net").st_ino


def netlink_sockets(netns: NetnsRef, protocols: tuple[int, ...]) -> list[socket.socket]:
    """One AF_NETLINK socket per protocol number, all living in `netns`."""
    target = _open(netns)
    result: list[socket.socket] = []
    failure: list[BaseException] = []

    def enter_create_restore() -> None:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if _libc.setns(target, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                if err == errno.EINVAL:
                    failure.append(NetnsNotFoundError(
                        f"{netns} is not a network namespace", netns=str(netns)))
                else:
                    failure.append(RedirectError(
                        f"setns({netns}) failed: {os.strerror(err)} (running as root?)",
                        netns=str(netns)))
                return
            try:
                for proto in protocols:
                    result.append(socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, proto))
            except OSError as exc:
                failure.append(RedirectError(f"netlink socket in {netns}: {exc}",
                                             netns=str(netns)))
            finally:
                if _libc.setns(home, CLONE_NEWNET) != 0:
                    # This thread ends right after; setns is per thread, nothing else ran here.
                    failure.append(RedirectError("could not switch back to the agent's netns"))
        finally:
            os.close(home)

    try:
        thread = threading.Thread(target=enter_create_restore, name="netns-enter", daemon=True)
        thread.start()
        thread.join()
    finally:
        os.close(target)
    if failure:
        for sock in result:
            sock.close()
        raise failure[0]
    return result
