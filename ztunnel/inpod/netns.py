"""Create sockets inside pod network namespaces, from one dedicated thread.

In the in-pod model ztunnel opens its listeners (15001/15006/15008) and its upstream sockets
inside each enrolled pod's network namespace, whose file descriptor arrives over ZDS. A socket
belongs to the namespace it was created in, for life; only `socket()` needs the switch.

`setns(2)` changes the namespace of the calling *thread*, so switching on trio's thread would be
visible to everything else running there. Instead one worker thread (`NetnsSocketFactory`, over
`meshcore.netns.NetnsWorker`) does all switching: for each job it enters the pod namespace, runs
a short synchronous function (create, set options, bind), and returns to the host namespace in
`finally`, with nothing else running on that thread in between. If it cannot return, the thread
is no longer trustworthy: it stops and a fresh worker takes over the queue. A fd that is not a
namespace fails that job with `NetnsError`; the worker stays in the host namespace and carries
on. This module adds the trio side and ztunnel's errors; the switching lives in meshcore.

Callers (the per-pod proxy in ztunnel) `await factory.run(netns_fd, fn, *args)` from trio.
"""

from __future__ import annotations

import concurrent.futures
import socket
from collections.abc import Callable
from typing import Any, TypeVar

import trio

from meshcore import netns as mesh_netns
from ztunnel.errors import ZtunnelError

T = TypeVar("T")
# ztunnel marks every socket it creates for a pod so the in-pod rules let it through.
ZTUNNEL_MARK = 0x539


class NetnsError(ZtunnelError):
    """Entering or leaving a pod network namespace failed."""


class NetnsSocketFactory:
    """Runs namespace-scoped socket setup on a dedicated thread. Close with `close()`."""

    def __init__(self) -> None:
        self._worker = mesh_netns.NetnsWorker("ztunnel-netns")

    async def run(self, netns_fd: int, fn: Callable[..., T], *args: Any) -> T:
        """Run the synchronous `fn(*args)` inside the namespace `netns_fd` and return its result."""
        future = self._submit(netns_fd, fn, args)
        done = trio.Event()
        token = trio.lowlevel.current_trio_token()
        future.add_done_callback(lambda _f: token.run_sync_soon(done.set))
        with trio.CancelScope(shield=True):
            # Socket creation is a few syscalls; never abandon a job holding a half-made socket.
            await done.wait()
        return _result(netns_fd, future)

    def run_sync(self, netns_fd: int, fn: Callable[..., T], *args: Any) -> T:
        """Blocking variant for non-trio callers (tests, the CNI agent)."""
        return _result(netns_fd, self._submit(netns_fd, fn, args))  # result() blocks

    def close(self) -> None:
        self._worker.close()

    def _submit(self, netns_fd: int, fn: Callable[..., T],
                args: tuple[Any, ...]) -> concurrent.futures.Future[T]:
        try:
            return self._worker.submit(netns_fd, fn, *args)
        except mesh_netns.NetnsWorkerClosed:
            raise NetnsError("netns socket factory is closed") from None


def _result(netns_fd: int, future: concurrent.futures.Future[T]) -> T:
    """The job's result (waits for it). Failing to enter, or a closed factory, becomes
    ztunnel's NetnsError; the job's own exceptions pass unchanged."""
    try:
        return future.result()
    except mesh_netns.NetnsWorkerClosed:
        raise NetnsError("netns socket factory is closed") from None
    except mesh_netns.NetnsError as exc:
        raise NetnsError(f"cannot enter pod network namespace (fd {netns_fd}): {exc}") from exc


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
