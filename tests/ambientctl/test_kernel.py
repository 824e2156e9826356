"""The sandbox's netns helpers over `meshcore.netns`: names, KernelError, sockets, pids (root)."""

from __future__ import annotations

import fcntl
import os
import secrets
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ambientctl.sandbox import kernel
from ambientctl.sandbox.errors import SandboxError

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
]

SIOCGSKNS = 0x894C  # ioctl: a fd for the network namespace a socket lives in


def here() -> int:
    """The calling thread's netns inode."""
    return os.stat("/proc/thread-self/ns/net").st_ino


def socket_netns(sock: socket.socket) -> int:
    """The inode of the namespace `sock` was created in."""
    fd = fcntl.ioctl(sock.fileno(), SIOCGSKNS)
    try:
        return os.fstat(fd).st_ino
    finally:
        os.close(fd)


@pytest.fixture
def ns() -> Iterator[str]:
    name = f"t-kern-{secrets.token_hex(3)}"
    kernel.create_netns(name)
    try:
        yield name
    finally:
        kernel.delete_netns(name)


def test_names_inodes_and_create_twice(ns: str) -> None:
    """A created namespace is listed, has its path and inode; creating it again is refused."""
    assert ns in kernel.list_netns()
    assert kernel.netns_path(ns) == f"/var/run/netns/{ns}"
    assert kernel.netns_inode(ns) == os.stat(kernel.netns_path(ns)).st_ino != here()
    with pytest.raises(kernel.KernelError, match="already exists"):
        kernel.create_netns(ns)
    assert kernel.link_names(ns) == ["lo"]


def test_in_netns_switches_the_thread_and_comes_back(ns: str) -> None:
    """Inside the block the thread is in `ns` (loopback up); afterwards it is back home."""
    home = here()
    with kernel.in_netns(ns):
        assert here() == kernel.netns_inode(ns)
    assert here() == home


def test_sockets_and_calls_land_in_the_namespace(ns: str) -> None:
    """socket_in_netns / call_in_netns run in `ns` on another thread; the caller never moves."""
    home = here()
    with kernel.socket_in_netns(ns, socket.AF_INET, socket.SOCK_DGRAM) as sock:
        assert socket_netns(sock) == kernel.netns_inode(ns)
        assert sock.type == socket.SOCK_DGRAM
    assert kernel.call_in_netns(ns, lambda a, *, b: (here(), a + b), 1, b=2) == (
        kernel.netns_inode(ns), 3)
    with pytest.raises(ZeroDivisionError):  # the function's own errors pass unchanged
        kernel.call_in_netns(ns, lambda: 1 // 0)
    assert here() == home
    kernel.write_sysctl(ns, "net.ipv4.ip_forward", "1")
    forward = Path("/proc/sys/net/ipv4/ip_forward")
    assert kernel.call_in_netns(ns, forward.read_text) == "1\n"


def test_enter_for_exec_moves_the_thread_for_good(ns: str) -> None:
    """enter_netns_for_exec leaves the (throwaway) thread inside `ns`."""
    seen: list[int] = []

    def run() -> None:
        kernel.enter_netns_for_exec(ns)
        seen.append(here())

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == [kernel.netns_inode(ns)]


def test_missing_namespace_is_a_kernel_error_naming_it() -> None:
    """Every entry point names a missing namespace with a SandboxError, as before."""
    gone = f"t-gone-{secrets.token_hex(3)}"
    message = f"network namespace {gone!r} does not exist"
    for call in (lambda: kernel.in_netns(gone).__enter__(),
                 lambda: kernel.enter_netns_for_exec(gone),
                 lambda: kernel.call_in_netns(gone, int),
                 lambda: kernel.socket_in_netns(gone)):
        with pytest.raises(kernel.KernelError, match=message) as exc:
            call()
        assert isinstance(exc.value, SandboxError)
    assert kernel.netns_inode(gone) is None
    assert kernel.delete_netns(gone) is False


def test_pids_in_netns_finds_a_child_started_inside(ns: str) -> None:
    """A process forked inside `ns` is found by the namespace's inode (we never are)."""
    with kernel.in_netns(ns):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        inode = kernel.netns_inode(ns)
        assert inode is not None
        assert kernel.pids_in_netns({inode}) == [child.pid]
        assert os.getpid() not in kernel.pids_in_netns({here()})
    finally:
        child.kill()
        child.wait()
