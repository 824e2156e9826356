"""The seam between the ZDS workload manager and a pod's proxy: what a per-pod proxy looks like.

The workload manager (`ztunnel.inpod.workload_manager`) receives pods over ZDS and, for each,
asks a `PodProxyFactory` for a `PodProxy`, then runs `serve()` in its own nursery. The factory is
supplied by whoever owns the data path (outbound / inbound handlers); `ztunnel.inpod.pod_listeners`
provides `ListenerPodProxy`, which binds the three in-pod listeners and only needs connection
handlers.

Contract of a `PodProxy` (the manager relies on it):
- `serve(task_status=...)` binds its listeners inside the pod netns (through `PodNetns.run`) and
  calls `task_status.started()` only once every listener is bound; an exception before that is a
  start failure (the manager NACKs and retries). After `started()` it serves until `drain` has
  finished or the task is cancelled.
- `drain(deadline, task_status=...)` closes the listeners, then calls `task_status.started()`
  (so "stopped accepting" is observable), lets open connections finish until the trio time
  `deadline`, then ends them and returns.
The manager owns the netns fd: it stays open while the proxy runs and is closed after `serve`
has returned, so `PodNetns.run` is valid for the whole life of the proxy.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import trio

from ztunnel.errors import ZtunnelError
from ztunnel.inpod.netns import NetnsSocketFactory

T = TypeVar("T")


class InpodError(ZtunnelError):
    """Base of errors of the in-pod (ZDS) machinery."""


class ProxyStartError(InpodError):
    """The proxy for pod `uid` could not start (listeners not bound); transient, retried."""

    def __init__(self, pod: PodInfo, cause: str) -> None:
        super().__init__(f"failure to start proxy for pod {pod.display} (uid {pod.uid}): {cause}")
        self.pod = pod
        self.cause = cause


@dataclass(frozen=True)
class PodInfo:
    """What ZDS tells us about an enrolled pod (`uid` is the Kubernetes pod UID)."""

    uid: str
    name: str = ""
    namespace: str = ""
    service_account: str = ""
    netns_inode: int = 0

    @property
    def display(self) -> str:
        return f"{self.namespace or '?'}/{self.name or '?'}"


@dataclass(frozen=True)
class PodNetns:
    """The pod's network namespace: its fd (owned by the manager), inode, and socket factory."""

    fd: int
    inode: int
    sockets: NetnsSocketFactory

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run the synchronous `fn(*args)` inside this pod's netns (create and bind a socket)."""
        return await self.sockets.run(self.fd, fn, *args)


class PodProxy(Protocol):
    """One pod's proxy: see the module docstring for the contract."""

    async def serve(self, *, task_status: trio.TaskStatus[None] = ...) -> None: ...

    async def drain(self, deadline: float, *, task_status: trio.TaskStatus[None] = ...) -> None:
        ...


PodProxyFactory = Callable[[PodInfo, PodNetns], Awaitable[PodProxy]]
