"""The node agent's plugin-facing server (trio): receives CNI events and programs the pod netns.

`serve_agent(path, agent, task_status=...)` listens on a unix stream socket and answers one
`agent_protocol` request per connection. `Agent.handle(request)` does the work:
- add:   `decide(request)` (the enrollment policy; `enroll_all` until the config-source driven
         decision lands) → `apply.install` in a worker thread → pod remembered as enrolled;
- del:   `apply.remove` if the netns still exists (gone counts as done) → pod forgotten;
- check: the rules for the decided config are exactly in place;
- status: the agent answers, so ADD can be served.
With a `ZdsServer`, add also hands the netns fd to ztunnel (AddWorkload) and waits for its ack
(no ack → error 11, rules stay: "pending"); del sends DelWorkload to every ztunnel.
Errors become CNI codes: netns gone → 3, transient → 11, anything else → 5 with the message.
With `pods` (a `PodService`: the label-driven `reconciler.Reconciler`), add / del / check are
handed to it instead: it decides from the config source and owns the pod table and ZDS calls;
`decide` and `zds` are then unused.

Who calls it: the node-agent process (and the sandbox); the ZDS hand-off to ztunnel hooks in after
`install` (see DESIGN.md §3 Enrollment). Kernel work is blocking netlink, so it runs in
`trio.to_thread.run_sync` under a small CapacityLimiter; handlers close their streams in `finally`.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import trio

from cni_plugin.agent.zds_server import ZdsServer, ZtunnelUnavailable
from cni_plugin.agent_protocol import (
    AgentRequest,
    AgentResponse,
    LineBuffer,
    decode_request,
    encode_response,
)
from cni_plugin.errors import NetnsNotFoundError, ProtocolError, RedirectError
from cni_plugin.redirect import apply
from cni_plugin.redirect.rules import RedirectConfig
from meshcore.zds import codec as zds_codec

log = logging.getLogger(__name__)

READ_TIMEOUT = 5.0
UNKNOWN_CONTAINER = 3
IO_FAILURE = 5
DECODE_FAILURE = 6
TRY_AGAIN_LATER = 11

Decide = Callable[[AgentRequest], RedirectConfig | None]


def enroll_all(request: AgentRequest) -> RedirectConfig | None:
    """Enrol every Kubernetes pod; IPv6 rules when the pod got an IPv6 address."""
    if not request.pod.name:
        return None
    return RedirectConfig(ipv6=any(":" in ip.address for ip in request.ips))


class PodService(Protocol):
    """What serves CNI events when enrollment is label-driven (`reconciler.Reconciler`)."""

    async def cni_add(self, request: AgentRequest) -> AgentResponse: ...
    async def cni_del(self, request: AgentRequest) -> AgentResponse: ...
    async def cni_check(self, request: AgentRequest) -> AgentResponse: ...


@dataclass(frozen=True)
class EnrolledPod:
    uid: str
    name: str
    namespace: str
    netns: str
    config: RedirectConfig


class Agent:
    """Handles plugin requests; one writer (`handle`) for the enrolled-pod table."""

    def __init__(self, decide: Decide = enroll_all, max_threads: int = 4,
                 zds: ZdsServer | None = None, pods: PodService | None = None) -> None:
        self._decide = decide
        self._service = pods
        self._zds = zds
        self._limiter = trio.CapacityLimiter(max_threads)
        self._netns_locks: dict[str, trio.Lock] = {}
        self.pods: dict[str, EnrolledPod] = {}  # key: container id

    async def handle(self, request: AgentRequest) -> AgentResponse:
        """Answer one request; never raises (a failure is an error response)."""
        lock = self._netns_locks.setdefault(request.netns, trio.Lock())
        try:
            async with lock:  # one operation per pod netns at a time
                if self._service is not None and request.op in ("add", "del", "check"):
                    handler = {"add": self._service.cni_add, "del": self._service.cni_del,
                               "check": self._service.cni_check}[request.op]
                    return await handler(request)
                if request.op == "add":
                    return await self._add(request)
                if request.op == "del":
                    return await self._del(request)
                if request.op == "check":
                    return await self._check(request)
                return AgentResponse(ok=True)
        except NetnsNotFoundError as exc:
            return AgentResponse(ok=False, code=UNKNOWN_CONTAINER, msg=str(exc),
                                 details="the pod sandbox's network namespace is gone")
        except RedirectError as exc:
            return AgentResponse(ok=False, code=TRY_AGAIN_LATER if exc.retryable else IO_FAILURE,
                                 msg=f"in-pod redirection failed for {_pod(request)}",
                                 details=str(exc))
        except Exception as exc:  # a bug or an unexpected kernel answer: report, keep serving
            log.exception("agent request %s for %s failed", request.op, _pod(request))
            return AgentResponse(ok=False, code=IO_FAILURE,
                                 msg=f"node agent failed on {request.op} for {_pod(request)}",
                                 details=f"{exc!r}; see the agent log")
        finally:
            if not lock.locked() and not lock.statistics().tasks_waiting:
                self._netns_locks.pop(request.netns, None)

    async def _run(self, fn: Callable[..., object], *args: object) -> object:
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    async def _add(self, request: AgentRequest) -> AgentResponse:
        config = self._decide(request)
        if config is None:
            return AgentResponse(ok=True, enrolled=False)
        # One fd for rules and ztunnel alike: both act on the same netns even if the path is
        # unmounted meanwhile (then the netns, rules included, dies with the last reference).
        netns_fd = _open_netns(request.netns)
        try:
            changed = bool(await self._run(apply.install, netns_fd, config))
            self.pods[request.container_id] = EnrolledPod(
                request.pod.uid, request.pod.name, request.pod.namespace, request.netns, config)
            failure = await self._send_to_ztunnel(request, netns_fd) if self._zds else ""
        finally:
            os.close(netns_fd)
        if failure:
            return AgentResponse(
                ok=False, code=TRY_AGAIN_LATER,
                msg=f"{_pod(request)}: rules are in place but ztunnel has not taken the pod",
                details=f"{failure}; the pod stays pending until ztunnel acknowledges it")
        log.info("enrolled %s netns=%s changed=%s", _pod(request), request.netns, changed)
        return AgentResponse(ok=True, enrolled=True, changed=changed)

    async def _send_to_ztunnel(self, request: AgentRequest, netns_fd: int) -> str:
        """AddWorkload with the netns fd; returns "" on ACK, else what went wrong."""
        assert self._zds is not None
        add = zds_codec.AddWorkload(request.pod.uid or request.container_id, request.pod.name,
                                    request.pod.namespace)
        try:
            ack = await self._zds.add_workload(add, netns_fd)
        except ZtunnelUnavailable as exc:
            return str(exc)
        return "" if ack.ok else f"ztunnel NACKed the pod: {ack.error}"

    async def _del(self, request: AgentRequest) -> AgentResponse:
        known = self.pods.pop(request.container_id, None)
        if self._zds is not None and known is not None:
            await self._zds.del_workload(known.uid or request.container_id)
        netns = request.netns or (known.netns if known else "")
        changed = bool(await self._run(apply.remove, netns)) if netns else False
        return AgentResponse(ok=True, enrolled=False, changed=changed)

    async def _check(self, request: AgentRequest) -> AgentResponse:
        config = self._decide(request)
        if config is None:
            return AgentResponse(ok=True, enrolled=False)
        if await self._run(apply.is_installed, request.netns, config):
            return AgentResponse(ok=True, enrolled=True)
        return AgentResponse(ok=False, code=IO_FAILURE,
                             msg=f"in-pod redirection rules of {_pod(request)} are missing or "
                                 "differ from the expected set",
                             details="the agent re-installs them on the next ADD or restart")


def _open_netns(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NetnsNotFoundError(
            f"network namespace {path} does not exist (pod sandbox already gone?)",
            netns=path) from None
    except OSError as exc:
        raise RedirectError(f"cannot open network namespace {path}: {exc}", netns=path) from exc


def _pod(request: AgentRequest) -> str:
    return f"pod {request.pod.namespace}/{request.pod.name} ({request.container_id[:12]})"


async def _serve_one(agent: Agent, stream: trio.SocketStream) -> None:
    try:
        buffer = LineBuffer()
        with trio.move_on_after(READ_TIMEOUT):
            while (line := buffer.next_line()) is None:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                buffer.feed(chunk)
        if line is None:
            return
        try:
            response = await agent.handle(decode_request(line))
        except ProtocolError as exc:
            response = AgentResponse(ok=False, code=DECODE_FAILURE, msg=str(exc))
        await stream.send_all(encode_response(response))
    except ProtocolError as exc:
        log.warning("closing agent connection: %s", exc)
    except trio.BrokenResourceError:
        pass
    finally:
        await stream.aclose()


def _prepare_socket_path(path: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if os.path.exists(path):
        os.unlink(path)


async def serve_agent(path: str, agent: Agent, *,
                      task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve plugin requests on unix socket `path` (a stale file is replaced); runs forever."""
    _prepare_socket_path(path)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(path)
    os.chmod(path, 0o600)
    sock.listen(64)
    listener = trio.SocketListener(sock)

    async def handler(stream: trio.SocketStream) -> None:
        await _serve_one(agent, stream)

    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, handler, [listener])
            task_status.started(path)
    finally:
        await listener.aclose()
