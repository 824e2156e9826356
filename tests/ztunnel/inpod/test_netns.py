"""NetnsSocketFactory and new_socket against real network namespaces (root)."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator

import pytest
import trio

from tests.support.netns import Netns
from ztunnel.inpod.netns import ZTUNNEL_MARK, NetnsError, NetnsSocketFactory, new_socket

pytestmark = [pytest.mark.netns]


def _netns_inode_of_thread() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


@pytest.fixture
def factory() -> Iterator[NetnsSocketFactory]:
    made = NetnsSocketFactory()
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def pod(netns_factory: Callable[[str], Netns]) -> Iterator[tuple[Netns, int]]:
    ns = netns_factory("pod")
    fd = os.open(ns.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        yield ns, fd
    finally:
        os.close(fd)


@pytest.mark.trio
async def test_run_executes_inside_the_pod_netns_and_returns(
        factory: NetnsSocketFactory, pod: tuple[Netns, int]) -> None:
    """`run` executes the function in the pod netns; trio's own thread never leaves the host."""
    _, fd = pod
    host = _netns_inode_of_thread()
    inside = await factory.run(fd, _netns_inode_of_thread)
    assert inside == os.fstat(fd).st_ino != host
    assert _netns_inode_of_thread() == host
    # The worker returned to the host netns: a job with the host fd sees the host.
    host_fd = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        assert await factory.run(host_fd, _netns_inode_of_thread) == host
    finally:
        os.close(host_fd)


@pytest.mark.trio
async def test_socket_made_inside_stays_in_the_pod_netns(
        factory: NetnsSocketFactory, pod: tuple[Netns, int]) -> None:
    """A listener bound via the factory is reachable from the pod netns, not from the host."""
    ns, fd = pod
    sock = await factory.run(fd, lambda: new_socket(bind=("127.0.0.1", 0), listen_backlog=8))
    try:
        port = sock.getsockname()[1]
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_MARK) == ZTUNNEL_MARK
        assert sock.getblocking() is False

        def connect() -> None:
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                pass

        await trio.to_thread.run_sync(ns.call, connect)
        with pytest.raises(ConnectionRefusedError):
            await trio.to_thread.run_sync(connect)
    finally:
        sock.close()


def test_new_socket_options() -> None:
    """new_socket applies mark, transparency and SO_REUSEPORT; mark=None leaves SO_MARK unset."""
    sock = new_socket(transparent=True, reuse_port=True, bind=("127.0.0.1", 0),
                      listen_backlog=4)
    plain = new_socket(mark=None)
    try:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_MARK) == ZTUNNEL_MARK
        assert sock.getsockopt(socket.SOL_IP, 19) == 1  # IP_TRANSPARENT
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        assert plain.getsockopt(socket.SOL_SOCKET, socket.SO_MARK) == 0
    finally:
        sock.close()
        plain.close()


@pytest.mark.trio
async def test_errors_inside_are_raised_to_the_caller(
        factory: NetnsSocketFactory, pod: tuple[Netns, int]) -> None:
    """An exception in the job reaches the awaiting caller; the worker stays usable."""
    _, fd = pod
    blocker = await factory.run(fd, lambda: new_socket(bind=("127.0.0.1", 0), listen_backlog=1))
    try:
        port = blocker.getsockname()[1]
        with pytest.raises(OSError, match="in use"):
            await factory.run(fd, lambda: new_socket(bind=("127.0.0.1", port),
                                                     listen_backlog=1))
        assert await factory.run(fd, _netns_inode_of_thread) == os.fstat(fd).st_ino
    finally:
        blocker.close()


@pytest.mark.trio
async def test_bad_fd_is_a_netns_error(factory: NetnsSocketFactory) -> None:
    """A fd that is not a namespace fails the job with NetnsError, not a crash of the thread."""
    r, w = os.pipe()
    try:
        with pytest.raises(NetnsError, match="cannot enter"):
            await factory.run(r, _netns_inode_of_thread)
    finally:
        os.close(r)
        os.close(w)


def test_run_sync_and_close(pod: tuple[Netns, int]) -> None:
    """run_sync works from plain threads; after close() the factory refuses new jobs."""
    _, fd = pod
    made = NetnsSocketFactory()
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(
        made.run_sync(fd, _netns_inode_of_thread))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [os.fstat(fd).st_ino] * 4
    made.close()
    with pytest.raises(NetnsError, match="closed"):
        made.run_sync(fd, _netns_inode_of_thread)
