"""Network-namespace switching, done once: setns, netns fds, and running code inside a netns.

Who calls it: ztunnel's `NetnsSocketFactory` (a `NetnsWorker` creating pod sockets), the CNI
redirection (`call_in_netns` to open netlink sockets in a pod netns), the test/bench support
(`entered` / `call_in_netns` by namespace name), and `ambientctl sandbox` (named namespaces
under /var/run/netns: `named_netns`, `socket_in_netns`, `enter_for_good`, `pids_in_netns`).
What it hands back: whatever the function run inside returns (sockets keep the namespace they
were created in, for life), or typed errors.

Invariants (CONVENTIONS.md #10):
- setns(2) acts on the calling *thread*. Code switches only on a thread it owns (a fresh one,
  or `NetnsWorker`'s), runs one short synchronous function there with no await, and switches
  back in `finally`. "Back" is the thread's own namespace read from /proc/thread-self (not
  /proc/self, which names the main thread), or the worker's home namespace.
- A thread that cannot switch back is never reused: a `call_in_netns` thread ends anyway; a
  `NetnsWorker` thread retires and a fresh one takes over its queue. The caller still learns
  the outcome (`NetnsRestoreError` from `entered`/`call_in_netns`).
- Failing to enter leaves the thread where it was. A path that does not exist, or a fd that
  is not a network namespace, is `NetnsNotFoundError`; any other refusal (EPERM: not root)
  is `NetnsEnterError`. Exceptions of the function itself reach the caller unchanged.

Imports only the standard library (the CNI package uses it; no trio, no pyroute2). `os.setns`
exists from Python 3.12; on 3.11 libc's setns is called through ctypes.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import errno
import fcntl
import os
import queue
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from meshcore.errors import MeshCoreError

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
NS_GET_NSTYPE = 0xB703  # ioctl: the CLONE_NEW* type of a namespace fd
THREAD_NETNS = "/proc/thread-self/ns/net"
NETNS_RUN_DIR = "/var/run/netns"  # where `ip netns` and pyroute2 bind-mount named namespaces

NetnsRef = str | int  # a path (/var/run/netns/x, /proc/<pid>/ns/net) or an open fd

_libc = ctypes.CDLL(None, use_errno=True)


class NetnsError(MeshCoreError):
    """A network-namespace operation failed; `netns` names the namespace (path or fd)."""

    def __init__(self, message: str, *, netns: str = "") -> None:
        super().__init__(message)
        self.netns = netns


class NetnsNotFoundError(NetnsError):
    """The namespace does not exist (any more), or the path/fd is not a network namespace."""


class NetnsEnterError(NetnsError):
    """setns(2) into an existing namespace was refused (typically EPERM: not root)."""


class NetnsRestoreError(NetnsError):
    """The thread could not switch back to its own namespace; it is not used again."""


class NetnsWorkerClosed(NetnsError):
    """A job was submitted to a `NetnsWorker` after `close()`."""


def _describe(netns: NetnsRef) -> str:
    return f"fd {netns}" if isinstance(netns, int) else str(netns)


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    """setns(2) for the calling thread; raises OSError. (`os.setns` only from Python 3.12.)"""
    if hasattr(os, "setns"):
        os.setns(fd, nstype)
        return
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def open_netns(netns: NetnsRef) -> int:
    """A new close-on-exec fd for `netns` (a path is opened, a fd duplicated); close it."""
    what = _describe(netns)
    try:
        if isinstance(netns, int):
            return os.dup(netns)
        return os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NetnsNotFoundError(f"network namespace {what} does not exist",
                                 netns=what) from None
    except OSError as exc:
        raise NetnsError(f"cannot open network namespace {what}: {exc}", netns=what) from exc


def named_netns(name: str) -> str:
    """The path of the named namespace `name` (`/var/run/netns/<name>`, as `ip netns` uses)."""
    return os.path.join(NETNS_RUN_DIR, name)


def check_netns_fd(fd: int, what: str = "") -> None:
    """Raise `NetnsNotFoundError` unless `fd` refers to a network namespace (NS_GET_NSTYPE)."""
    what = what or f"fd {fd}"
    try:
        kind = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError as exc:
        raise NetnsNotFoundError(f"{what} is not a namespace: {exc.strerror}",
                                 netns=what) from None
    if kind != CLONE_NEWNET:
        raise NetnsNotFoundError(f"{what} is a namespace of type {kind:#x}, not a network "
                                 "namespace", netns=what)


def netns_inode(netns: NetnsRef) -> int:
    """The inode that identifies the namespace (equal inodes = same netns)."""
    fd = open_netns(netns)
    try:
        return os.fstat(fd).st_ino
    finally:
        os.close(fd)


def pids_in_netns(inodes: set[int]) -> list[int]:
    """Pids of the processes whose network namespace is one of `inodes` (never our own pid).

    Processes that end or cannot be inspected while /proc is read are skipped.
    """
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


def thread_netns_inode() -> int:
    """Inode of the calling thread's network namespace."""
    return os.stat(THREAD_NETNS).st_ino


def enter(fd: int, what: str = "") -> None:
    """Switch the calling thread into the netns `fd` for good (the thread stays there).

    Raises `NetnsNotFoundError` (not a network namespace) or `NetnsEnterError`; on failure the
    thread is where it was. Prefer `entered` / `call_in_netns`, which come back.
    """
    what = what or f"fd {fd}"
    try:
        setns(fd)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.EBADF):
            raise NetnsNotFoundError(f"{what} is not a network namespace",
                                     netns=what) from None
        raise NetnsEnterError(f"setns({what}) failed: {exc.strerror} (running as root?)",
                              netns=what) from None


def enter_for_good(netns: NetnsRef) -> None:
    """`enter` by path or fd: move the calling thread into `netns` and leave it there.

    For a thread (or a one-shot CLI process) that is about to `exec` or to make its one
    request inside `netns`; errors as for `open_netns` and `enter`.
    """
    what = _describe(netns)
    fd = open_netns(netns)
    try:
        enter(fd, what)
    finally:
        os.close(fd)


@contextlib.contextmanager
def entered(netns: NetnsRef, *, home: int | None = None) -> Iterator[None]:
    """The calling thread inside `netns` for a synchronous block, then back (never await inside).

    "Back" is `home` (a netns fd the caller keeps open) or else the thread's own namespace
    when entering. Raises `NetnsRestoreError` if it cannot come back: that thread must not run
    anything else (a fresh thread ends; a worker retires).
    """
    what = _describe(netns)
    back = os.open(THREAD_NETNS, os.O_RDONLY | os.O_CLOEXEC) if home is None else home
    try:
        if isinstance(netns, int):
            enter(netns, what)
        else:
            target = open_netns(netns)
            try:
                enter(target, what)
            finally:
                os.close(target)
        try:
            yield
        finally:
            try:
                setns(back)
            except OSError as exc:
                raise NetnsRestoreError(
                    f"could not switch back from {what} to the thread's own network "
                    f"namespace: {exc.strerror}", netns=what) from None
    finally:
        if home is None:
            os.close(back)


def call_in_netns(netns: NetnsRef, fn: Callable[..., T], *args: Any,
                  thread_name: str = "netns-call", **kwargs: Any) -> T:
    """Run `fn(*args, **kwargs)` on a fresh thread inside `netns`; return its result or raise.

    Blocks the caller until the thread ends (the caller's own thread never switches).
    """
    box: dict[str, Any] = {}

    def runner() -> None:
        try:
            with entered(netns):
                box["result"] = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the caller below
            box["error"] = exc

    thread = threading.Thread(target=runner, name=thread_name, daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box.pop("error")
    return box["result"]  # type: ignore[no-any-return]


def socket_in_netns(netns: NetnsRef, family: int = socket.AF_INET,
                    kind: int = socket.SOCK_STREAM, *, thread_name: str = "netns-socket"
                    ) -> socket.socket:
    """A socket created inside `netns` on a fresh thread (it stays there; use it anywhere)."""
    return call_in_netns(netns, socket.socket, family, kind, thread_name=thread_name)


_Job = tuple[int, Callable[..., Any], tuple[Any, ...], concurrent.futures.Future[Any]]


class NetnsWorker:
    """One long-lived thread that runs jobs inside namespaces given by fd. `close()` it.

    Its home is the namespace of the thread that created it; after every job the worker goes
    back there. If it cannot, it retires and a fresh thread takes over the queue.
    """

    def __init__(self, name: str = "netns-worker") -> None:
        self._name = name
        self._home = os.open(THREAD_NETNS, os.O_RDONLY | os.O_CLOEXEC)
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, netns_fd: int, fn: Callable[..., T], *args: Any
               ) -> concurrent.futures.Future[T]:
        """Queue `fn(*args)` to run inside `netns_fd` (the caller keeps the fd open until done)."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise NetnsWorkerClosed(f"{self._name} is closed", netns=f"fd {netns_fd}")
            if self._thread is None or not self._thread.is_alive():
                self._start_thread()
            self._jobs.put((netns_fd, fn, args, future))
        return future

    def call(self, netns_fd: int, fn: Callable[..., T], *args: Any) -> T:
        """`submit` and wait for the result (blocking)."""
        return self.submit(netns_fd, fn, *args).result()

    def close(self) -> None:
        """Stop the thread after the queued jobs; further `submit`s raise. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread, self._thread = self._thread, None
            self._jobs.put(None)
        if thread is not None:
            thread.join()  # outside the lock: a retiring worker takes it to hand over
        os.close(self._home)

    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
        self._thread.start()

    def _work(self) -> None:
        # Where the thread starts does not matter: every job enters its namespace first.
        while (job := self._jobs.get()) is not None:
            netns_fd, fn, args, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                with entered(netns_fd, home=self._home):
                    try:
                        result = fn(*args)
                    except BaseException as exc:  # handed to the waiting caller
                        future.set_exception(exc)
                    else:
                        future.set_result(result)
            except NetnsRestoreError:
                self._retire()  # the job's outcome is already in its future
                return
            except NetnsError as exc:  # could not enter: this job fails, the thread is fine
                future.set_exception(exc)

    def _retire(self) -> None:
        """This thread is stuck in a foreign namespace: it stops; a fresh one takes the queue."""
        with self._lock:
            if not self._closed:
                self._start_thread()
                return
        # Closed meanwhile: nobody will run what is still queued; fail it rather than hang.
        while (job := self._jobs.get()) is not None:
            if job[3].set_running_or_notify_cancel():
                job[3].set_exception(NetnsWorkerClosed(f"{self._name} closed before the job ran"))
