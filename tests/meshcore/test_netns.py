"""meshcore.netns: setns, netns fds, entering and coming back, worker threads (real namespaces)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator

import pytest

from meshcore import netns
from tests.support.netns import Netns


def here() -> int:
    """The calling thread's netns inode."""
    return os.stat("/proc/thread-self/ns/net").st_ino


@pytest.fixture
def pipe_fd() -> Iterator[int]:
    r, w = os.pipe()
    try:
        yield r
    finally:
        os.close(r)
        os.close(w)


@pytest.fixture
def ns(netns_factory: Callable[[str], Netns]) -> Netns:
    return netns_factory("m")


@pytest.fixture
def ns_fd(ns: Netns) -> Iterator[int]:
    fd = os.open(ns.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def test_missing_path_is_not_found_and_named() -> None:
    """Opening or entering a path that does not exist names it; the thread stays home."""
    before = here()
    with pytest.raises(netns.NetnsNotFoundError, match="/var/run/netns/nope-x does not exist"):
        netns.open_netns("/var/run/netns/nope-x")
    with pytest.raises(netns.NetnsNotFoundError, match="nope-x"), \
            netns.entered("/var/run/netns/nope-x"):
        pass
    assert here() == before


def test_entering_what_is_not_a_netns_fails_without_moving(tmp_path, pipe_fd: int) -> None:
    """A plain file or a pipe is 'not a network namespace'; the thread stays where it was."""
    plain = tmp_path / "leftover"
    plain.touch()
    before = here()
    with pytest.raises(netns.NetnsNotFoundError, match="leftover is not a network namespace"), \
            netns.entered(str(plain)):
        pass
    with pytest.raises(netns.NetnsNotFoundError, match=f"fd {pipe_fd} is not a network"):
        netns.enter(pipe_fd)
    assert here() == before


@pytest.mark.parametrize(("path", "message"), [
    pytest.param("/proc/self/ns/uts", "type 0x4000000, not a network namespace", id="uts-ns"),
    pytest.param("/dev/null", "not a namespace", id="device"),
])
def test_check_netns_fd_refuses_other_fds(path: str, message: str) -> None:
    """check_netns_fd accepts a netns fd and names what else it was given."""
    good = netns.open_netns("/proc/self/ns/net")
    other = os.open(path, os.O_RDONLY)
    try:
        netns.check_netns_fd(good)
        with pytest.raises(netns.NetnsNotFoundError, match=message):
            netns.check_netns_fd(other, path)
    finally:
        os.close(good)
        os.close(other)


def test_inodes_tell_namespaces_apart() -> None:
    """netns_inode of a path, of a fd and of the calling thread agree for the same netns."""
    fd = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        assert netns.netns_inode(fd) == netns.netns_inode("/proc/self/ns/net")
        assert netns.thread_netns_inode() == netns.netns_inode(fd)  # main thread
        assert netns.netns_inode("/proc/self/ns/net") != os.stat("/proc/self/ns/uts").st_ino
    finally:
        os.close(fd)


@pytest.mark.netns
def test_entered_switches_the_thread_and_restores_even_on_error(ns: Netns, ns_fd: int) -> None:
    """Inside the block the thread is in the netns (by path or fd); after it, home again."""
    before = here()
    with netns.entered(ns.path):
        assert here() == os.fstat(ns_fd).st_ino
    assert here() == before
    with pytest.raises(RuntimeError, match="boom"), netns.entered(ns_fd):
        assert here() == os.fstat(ns_fd).st_ino
        raise RuntimeError("boom")
    assert here() == before


@pytest.mark.netns
def test_entered_reports_a_thread_that_cannot_come_back(ns: Netns, pipe_fd: int) -> None:
    """With a home that is no netns, leaving fails as NetnsRestoreError (on a throwaway thread)."""
    seen: list[BaseException] = []

    def stuck() -> None:
        try:
            with netns.entered(ns.path, home=pipe_fd):
                pass
        except BaseException as exc:
            seen.append(exc)

    thread = threading.Thread(target=stuck)
    thread.start()
    thread.join()
    assert len(seen) == 1 and isinstance(seen[0], netns.NetnsRestoreError)
    assert ns.path in str(seen[0])


@pytest.mark.netns
def test_call_in_netns_runs_on_another_thread_inside(ns: Netns, ns_fd: int) -> None:
    """call_in_netns returns what fn computed inside; the caller never moves; errors pass."""
    before = here()
    inode, name = netns.call_in_netns(
        ns.path, lambda: (here(), threading.current_thread().name), thread_name="t-in")
    assert (inode, name) == (os.fstat(ns_fd).st_ino, "t-in")
    assert netns.call_in_netns(ns_fd, here) == inode
    with pytest.raises(KeyError, match="inside"):
        netns.call_in_netns(ns.path, lambda: {}["inside"])
    with pytest.raises(netns.NetnsNotFoundError):
        netns.call_in_netns("/var/run/netns/nope-x", here)
    assert here() == before


@pytest.mark.netns
def test_worker_runs_jobs_inside_and_goes_home(ns_fd: int, pipe_fd: int) -> None:
    """Jobs see their netns; the worker returns home; a bad fd or an error fails one job only."""
    worker = netns.NetnsWorker("t-worker")
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        assert worker.call(ns_fd, here) == os.fstat(ns_fd).st_ino
        assert worker.call(home, here) == os.fstat(home).st_ino
        with pytest.raises(netns.NetnsNotFoundError):
            worker.call(pipe_fd, here)
        with pytest.raises(ZeroDivisionError):
            worker.call(ns_fd, lambda: 1 / 0)
        assert worker.call(ns_fd, lambda: threading.current_thread().name) == "t-worker"
    finally:
        worker.close()
        os.close(home)
    with pytest.raises(netns.NetnsWorkerClosed):
        worker.submit(ns_fd, here)


@pytest.mark.netns
def test_worker_that_cannot_come_back_retires(ns_fd: int, pipe_fd: int) -> None:
    """A worker whose way home fails ends; a fresh thread serves the next job, from home."""
    worker = netns.NetnsWorker()
    saved_home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    home_fd = worker._home  # fault injection: the next way home leads to a pipe

    def break_home() -> threading.Thread:
        os.dup2(pipe_fd, home_fd)
        return threading.current_thread()

    try:
        first = worker.call(ns_fd, break_home)
        first.join(timeout=30)  # it retires instead of waiting for the next job
        assert not first.is_alive()
        os.dup2(saved_home, home_fd)
        second, inside = worker.call(ns_fd, lambda: (threading.current_thread(), here()))
        assert second is not first and inside == os.fstat(ns_fd).st_ino
        assert worker.call(saved_home, here) == os.fstat(saved_home).st_ino
    finally:
        worker.close()
        os.close(saved_home)
