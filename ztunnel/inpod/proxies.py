"""The table of pods ztunnel serves in-pod: one running (or pending) proxy per pod uid.

Who calls it: only `ztunnel.inpod.workload_manager`, from its one session task (the single writer
of this table), carrying out the actions of `protocol_state.step`. It runs each pod's
`PodProxy.serve()` and `drain()` in the nursery given to it (the manager's), so pods keep being
served while the ZDS connection is down.

Invariants:
- At most one entry per uid; an entry owns its netns fd and closes it exactly once: when a
  pending entry is dropped, or after its proxy's `serve()` has returned.
- `start` answers "" once the proxy reported its listeners bound, else the NACK text; a failed
  pod stays in the table as pending (fd kept) and `retry_pending` starts it again.
- `stop` returns once the proxy's listeners are closed; draining its open connections continues
  in the background until `drain_timeout`, then they are cancelled.
- A proxy whose `serve()` fails or returns while its pod is still wanted is logged and turns
  pending (retried); it never crashes the manager. If that happens right at `started()`, `start`
  reports it as a start failure (NACK).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import trio

from ztunnel.inpod.netns import NetnsSocketFactory
from ztunnel.inpod.pod import PodInfo, PodNetns, PodProxy, PodProxyFactory, ProxyStartError
from ztunnel.inpod.protocol_state import PodStatus

log = logging.getLogger(__name__)


@dataclass
class _Pod:
    info: PodInfo
    fd: int
    proxy: PodProxy | None = None  # None: pending
    scope: trio.CancelScope | None = None
    finished: trio.Event | None = None  # set once serve() has returned
    last_error: str = ""


@dataclass(frozen=True)
class PodState:
    """Read-only view of one pod for statistics / admin."""

    info: PodInfo
    serving: bool
    last_error: str


class _Status:
    """Wraps a TaskStatus to remember whether `started()` was called."""

    def __init__(self, inner: trio.TaskStatus[None],
                 on_started: Callable[[], None] = lambda: None) -> None:
        self.inner = inner
        self.called = False
        self._on_started = on_started

    def started(self, value: None = None) -> None:
        self.called = True
        self._on_started()
        self.inner.started(value)


class PodProxies:
    def __init__(self, nursery: trio.Nursery, factory: PodProxyFactory,
                 sockets: NetnsSocketFactory, *, start_timeout: float, drain_timeout: float,
                 on_change: Callable[[], None] = lambda: None) -> None:
        self._nursery = nursery
        self._factory = factory
        self._sockets = sockets
        self._start_timeout = start_timeout
        self._drain_timeout = drain_timeout
        self._on_change = on_change
        self._pods: dict[str, _Pod] = {}
        self.started_total = 0
        self.stopped_total = 0
        self.draining = 0  # stopped proxies whose connections are still draining

    # ---- queries ---------------------------------------------------------------------------
    def status(self, uid: str, inode: int | None = None) -> PodStatus:
        pod = self._pods.get(uid)
        if pod is None:
            return PodStatus.ABSENT
        if pod.proxy is None:
            return PodStatus.PENDING
        if inode is not None and inode != pod.info.netns_inode:
            return PodStatus.SERVING_OTHER_NETNS
        return PodStatus.SERVING

    def states(self) -> dict[str, PodState]:
        return {uid: PodState(p.info, p.proxy is not None, p.last_error)
                for uid, p in self._pods.items()}

    @property
    def active(self) -> int:
        return sum(1 for p in self._pods.values() if p.proxy is not None)

    @property
    def pending(self) -> int:
        return sum(1 for p in self._pods.values() if p.proxy is None)

    # ---- changes (single writer: the manager's session task) -------------------------------
    async def start(self, info: PodInfo, fd: int) -> str:
        """Take ownership of `fd`; (re)start pod `info.uid`. "" = ACK, else the NACK text."""
        old = self._pods.pop(info.uid, None)
        if old is not None:
            await self._retire(old)
        pod = _Pod(info, fd)
        self._pods[info.uid] = pod
        return await self._launch(pod)

    async def stop(self, uid: str) -> None:
        pod = self._pods.pop(uid, None)
        if pod is not None:
            await self._retire(pod)
            self._on_change()

    async def stop_unnamed(self, named: Iterable[str]) -> list[str]:
        keep = set(named)
        dropped = [uid for uid in self._pods if uid not in keep]
        for uid in dropped:
            log.info("pod %s not in the agent's snapshot; stopping its proxy",
                     self._pods[uid].info.display)
            await self.stop(uid)
        return dropped

    async def retry_pending(self) -> None:
        for pod in [p for p in self._pods.values() if p.proxy is None]:
            if self._pods.get(pod.info.uid) is pod:
                error = await self._launch(pod)
                if error:
                    log.warning("retry: %s", error)

    def close_all_fds(self) -> None:
        """After the nursery has ended (every serve() returned): release every netns fd."""
        for pod in self._pods.values():
            os.close(pod.fd)
        self._pods.clear()

    # ---- internals -------------------------------------------------------------------------
    async def _launch(self, pod: _Pod) -> str:
        netns = PodNetns(pod.fd, pod.info.netns_inode, self._sockets)
        try:
            with trio.fail_after(self._start_timeout):
                proxy = await self._factory(pod.info, netns)
                await self._nursery.start(self._run, pod, proxy)
        except trio.TooSlowError:
            pod.last_error = str(ProxyStartError(
                pod.info, f"listeners not bound within {self._start_timeout:g} s"))
        except ProxyStartError as exc:
            pod.last_error = str(exc)
        except Exception as exc:  # a proxy failing to start must not take ztunnel down
            log.debug("proxy start for %s failed", pod.info.display, exc_info=True)
            pod.last_error = str(ProxyStartError(pod.info, f"{type(exc).__name__}: {exc}"))
        else:
            if pod.proxy is not proxy:  # it failed right after reporting started
                log.warning("%s", pod.last_error)
                return pod.last_error
            pod.last_error = ""
            self.started_total += 1
            log.info("pod %s (uid %s): proxy started", pod.info.display, pod.info.uid)
            self._on_change()
            return ""
        log.warning("%s", pod.last_error)
        self._on_change()
        return pod.last_error

    async def _run(self, pod: _Pod, proxy: PodProxy, *,
                   task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        def bound() -> None:
            pod.proxy = proxy  # at started(), before serve() can run on (or fail)

        status = _Status(task_status, bound)
        pod.finished = trio.Event()
        try:
            with trio.CancelScope() as scope:
                pod.scope = scope
                try:
                    await proxy.serve(task_status=status)
                    reason = "proxy stopped on its own"
                except Exception as exc:
                    if not status.called:
                        raise  # a start failure: nursery.start() re-raises it to _launch
                    log.exception("pod %s: proxy failed; will restart it", pod.info.display)
                    reason = f"proxy failed after it started: {type(exc).__name__}: {exc}"
                if self._pods.get(pod.info.uid) is pod and pod.proxy is proxy:
                    pod.proxy = None  # still wanted: pending, retry_pending starts it again
                    pod.last_error = str(ProxyStartError(pod.info, reason))
                    self._on_change()
        finally:
            pod.finished.set()

    async def _retire(self, pod: _Pod) -> None:
        """Stop `pod` (already out of the table): drain in the background, close its fd after."""
        if pod.proxy is None:
            os.close(pod.fd)
            return
        self.stopped_total += 1
        log.info("pod %s (uid %s): draining proxy", pod.info.display, pod.info.uid)
        await self._nursery.start(self._drain, pod)

    async def _drain(self, pod: _Pod, *,
                     task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        assert pod.proxy is not None and pod.scope is not None and pod.finished is not None
        status = _Status(task_status)
        deadline = trio.current_time() + self._drain_timeout
        self.draining += 1
        try:
            with trio.move_on_at(deadline + 1.0):
                await pod.proxy.drain(deadline, task_status=status)
        except Exception:
            log.exception("pod %s: drain failed; cancelling its proxy", pod.info.display)
        finally:
            if not status.called:
                task_status.started()
            pod.scope.cancel()
            with trio.CancelScope(shield=True):
                await pod.finished.wait()
            os.close(pod.fd)
            self.draining -= 1
            self._on_change()
