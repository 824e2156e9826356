"""Create sockets inside pod network namespaces, from one dedicated thread.

In the in-pod model ztunnel opens its listeners (15001/15006/15008) and its upstream sockets
inside each enrolled pod's network namespace, whose file descriptor arrives over ZDS. A socket
belongs to the namespace it was created in, for life; only `socket()` needs the switch.

`setns(2)` changes the namespace of the calling *thread*, so switching on trio's thread would be
visible to everything else running there. Instead one worker thread (`NetnsSocketFactory`) does
all switching: for each job it enters the pod namespace, runs a short synchronous function
(create, set options, bind), and returns to the host namespace in `finally`, with nothing else
running on that thread in between. If it cannot return, the thread is no longer trustworthy: it
stops and a fresh worker takes over the queue. A fd that is not a namespace fails that job with
`NetnsError`; the worker stays in the host namespace and carries on. (`os.setns` appeared in
Python 3.12; on 3.11 we call libc's setns through ctypes.)

Callers (the per-pod proxy in ztunnel) `await factory.run(netns_fd, fn, *args)` from trio.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import os
import queue
import socket
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import trio

from ztunnel.errors import ZtunnelError

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
# ztunnel marks every socket it creates for a pod so the in-pod rules let it through.
ZTUNNEL_MARK = 0x539


class NetnsError(ZtunnelError):
    """Entering or leaving a pod network namespace failed."""


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int, nstype: int) -> None:
    """setns(2); `os.setns` only exists from Python 3.12, so call libc on older versions."""
    if hasattr(os, "setns"):
        os.setns(fd, nstype)
        return
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


_Job = tuple[int, Callable[..., Any], tuple[Any, ...], concurrent.futures.Future[Any]]


class NetnsSocketFactory:
    """Runs namespace-scoped socket setup on a dedicated thread. Close with `close()`."""

    def __init__(self) -> None:
        self._host_netns = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    async def run(self, netns_fd: int, fn: Callable[..., T], *args: Any) -> T:
        """Run the synchronous `fn(*args)` inside the namespace `netns_fd` and return its result."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._submit((netns_fd, fn, args, future))
        done = trio.Event()
        token = trio.lowlevel.current_trio_token()
        future.add_done_callback(lambda _f: token.run_sync_soon(done.set))
        with trio.CancelScope(shield=True):
            # Socket creation is a few syscalls; never abandon a job holding a half-made socket.
            await done.wait()
        return future.result()

    def run_sync(self, netns_fd: int, fn: Callable[..., T], *args: Any) -> T:
        """Blocking variant for non-trio callers (tests, the CNI agent)."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._submit((netns_fd, fn, args, future))
        return future.result()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread, self._thread = self._thread, None
            self._jobs.put(None)
        if thread is not None:
            thread.join()  # outside the lock: a stuck worker may take it to hand over
        os.close(self._host_netns)

    def _submit(self, job: _Job) -> None:
        with self._lock:
            if self._closed:
                raise NetnsError("netns socket factory is closed")
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._work, name="ztunnel-netns", daemon=True
                )
                self._thread.start()
            self._jobs.put(job)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            netns_fd, fn, args, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                _setns(netns_fd, CLONE_NEWNET)
            except BaseException as exc:
                future.set_exception(NetnsError(
                    f"cannot enter pod network namespace (fd {netns_fd}): {exc}"))
                continue
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the awaiting caller, not swallowed
                future.set_exception(exc)
            else:
                future.set_result(result)
            finally:
                try:
                    _setns(self._host_netns, CLONE_NEWNET)
                except BaseException:
                    # Stuck in a pod namespace: this thread stops; a fresh one takes the queue.
                    self._replace_worker()
                    return

    def _replace_worker(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._thread = threading.Thread(target=self._work, name="ztunnel-netns", daemon=True)
            self._thread.start()


def new_socket(
    family: int = socket.AF_INET,
    type_: int = socket.SOCK_STREAM,
    *,
    mark: int | None = ZTUNNEL_MARK,
    transparent: bool = False,
    reuse_port: bool = False,
    bind: tuple[str, int] | None = None,
    listen_backlog: int | None = None,
) -> socket.socket:
    """Create (and optionally bind/listen) a non-blocking socket in the *current* namespace.

    Meant to run inside `NetnsSocketFactory.run`. `mark` sets SO_MARK (the in-pod rules exempt
    0x539); `transparent` sets IP_TRANSPARENT so the socket may bind a non-local address (the
    original client IP when dialing the app) or accept redirected traffic.
    """
    sock = socket.socket(family, type_)
    try:
        sock.setblocking(False)
        if mark is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
        if transparent:
            level = socket.IPPROTO_IPV6 if family == socket.AF_INET6 else socket.SOL_IP
            opt = 75 if family == socket.AF_INET6 else 19  # IPV6_TRANSPARENT / IP_TRANSPARENT
            sock.setsockopt(level, opt, 1)
        if bind is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(bind)
        if listen_backlog is not None:
            sock.listen(listen_backlog)
        if type_ == socket.SOCK_STREAM:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except BaseException:
        sock.close()
        raise
    return sock
