"""The ZDS workload manager end to end: a fake agent on a real SEQPACKET socket, real pod netns.

Each test creates pod namespaces, plays the agent with `FakeAgent` (real netns fds over
SCM_RIGHTS), and checks the listeners the manager opened by connecting from inside the pod
netns (and from the host, where nothing may answer). Root required (`netns` mark).
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import pytest
import trio

from meshcore.zds import codec
from tests.support.netns import Netns
from tests.ztunnel.inpod.fake_agent import AgentConnection, FakeAgent
from tests.ztunnel.inpod.probes import Proxies, fds_to, greet_in, refused_in
from ztunnel.inpod.netns import ZTUNNEL_MARK, NetnsSocketFactory
from ztunnel.inpod.pod import PodInfo, PodNetns
from ztunnel.inpod.pod_listeners import ListenerPodProxy
from ztunnel.inpod.workload_manager import WorkloadManager, WorkloadManagerConfig

pytestmark = [pytest.mark.netns, pytest.mark.trio]

TIMEOUT = 10
CONFIG: dict[str, float] = dict(retry_interval=0.2, backoff_initial=0.01, backoff_max=0.2,
                               drain_timeout=1.0)


@dataclass
class Rig:
    agent: FakeAgent
    proxies: Proxies
    nursery: trio.Nursery
    sockets: NetnsSocketFactory
    config: WorkloadManagerConfig
    manager: WorkloadManager = field(init=False)
    scope: trio.CancelScope = field(init=False)
    stopped: trio.Event = field(init=False)  # set once the manager's run() has returned

    async def connect(self) -> AgentConnection:
        with trio.fail_after(TIMEOUT):
            return await self.agent.accept()

    async def start_manager(self) -> None:
        """Start a (new) ztunnel's workload manager; `scope.cancel()` stops it."""
        manager = WorkloadManager(self.proxies, self.sockets, self.config)
        scope, stopped = trio.CancelScope(), trio.Event()

        async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                with scope:
                    await manager.run(task_status=task_status)
            finally:
                stopped.set()

        await self.nursery.start(run)
        self.manager, self.scope, self.stopped = manager, scope, stopped


@pytest.fixture
def sock_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="zds-")  # short: unix socket paths are limited to 107 bytes
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def pods(netns_factory: Callable[[str], Netns]) -> tuple[Netns, Netns]:
    return netns_factory("a"), netns_factory("b")


@pytest.fixture
async def rig(sock_dir: str) -> AsyncIterator[Rig]:
    sockets = NetnsSocketFactory()
    agent = FakeAgent(os.path.join(sock_dir, "ztunnel.sock"))
    await agent.listen()
    config = WorkloadManagerConfig(socket_path=agent.path, **CONFIG)
    try:
        async with trio.open_nursery() as nursery:
            rig = Rig(agent, Proxies(), nursery, sockets, config)
            await rig.start_manager()
            yield rig
            nursery.cancel_scope.cancel()
    finally:
        agent.close()
        sockets.close()


def snapshot_of(*items: tuple[str, Netns]) -> list[tuple[str, str, str]]:
    return [(uid, f"pod-{uid}", ns.path) for uid, ns in items]


# ---- tests ---------------------------------------------------------------------------------
async def test_snapshot_opens_listeners_inside_each_pod_netns(
        rig: Rig, pods: tuple[Netns, Netns]) -> None:
    """A snapshot of two pods: each is acked after its listeners are bound in its own netns."""
    a, b = pods
    with trio.fail_after(TIMEOUT):
        conn = await rig.connect()
        assert not rig.manager.statistics().ready
        acks = await conn.snapshot(snapshot_of(("a", a), ("b", b)))
        assert acks == [codec.Ack()] * 3
        await rig.manager.wait_ready()
        for ns, name in ((a, "pod-a"), (b, "pod-b")):
            assert await greet_in(ns, 15008) == f"hbone:{name}\n".encode()
            assert await greet_in(ns, 15006) == f"in:{name}\n".encode()
            assert await greet_in(ns, 15001) == f"out:{name}\n".encode()
        assert await refused_in(None, 15008)  # nothing on the host
    listeners = rig.proxies.made["a"].listeners
    assert listeners is not None and listeners.transparent
    for listener in listeners.all():
        assert listener.socket.getsockopt(socket.SOL_SOCKET, socket.SO_MARK) == ZTUNNEL_MARK
        assert listener.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
    stats = rig.manager.statistics()
    assert (stats.active_proxy_count, stats.pending_proxy_count,
            stats.proxies_started_total, stats.proxies_stopped_total) == (2, 0, 2, 0)
    assert stats.connected and stats.ready and stats.connections_total == 1


async def test_del_closes_listener_and_drains_open_connections(
        rig: Rig, pods: tuple[Netns, Netns]) -> None:
    """Del: acked once the listener is closed; a connection already open keeps working."""
    a, b = pods
    with trio.fail_after(TIMEOUT):
        conn = await rig.connect()
        await conn.snapshot(snapshot_of(("a", a), ("b", b)))

        def open_and_hold() -> socket.socket:
            held = socket.create_connection(("127.0.0.1", 15008), timeout=3)
            held.settimeout(3)
            assert held.recv(100) == b"hbone:pod-a\n"
            return held

        held = await trio.to_thread.run_sync(a.call, open_and_hold)
        try:
            assert await conn.request(codec.DelWorkload("a")) == codec.Ack()
            assert await refused_in(a)
            assert await greet_in(b) == b"hbone:pod-b\n"

            def echo() -> bytes:
                held.sendall(b"still here")
                return held.recv(100)

            assert await trio.to_thread.run_sync(echo) == b"still here"  # draining, not cut
            assert rig.manager.statistics().draining_proxy_count == 1
            # At the drain deadline (1 s here) ztunnel closes what is still open.
            assert await trio.to_thread.run_sync(held.recv, 100) == b""
            await rig.manager.wait_drained()
            assert fds_to(a) == 0
        finally:
            held.close()
        assert await conn.request(codec.DelWorkload("never-seen")) == codec.Ack()
    stats = rig.manager.statistics()
    assert (stats.active_proxy_count, stats.proxies_stopped_total) == (1, 1)


async def test_agent_restart_resyncs_by_snapshot(rig: Rig, pods: tuple[Netns, Netns]) -> None:
    """Agent restart: pods served meanwhile; a new snapshot without b drains b, keeps a as is."""
    a, b = pods
    with trio.fail_after(TIMEOUT):
        conn = await rig.connect()
        await conn.snapshot(snapshot_of(("a", a), ("b", b)))
        conn.close()
        rig.agent.close()
        assert await greet_in(a) == b"hbone:pod-a\n"  # still served with the agent gone
        await rig.agent.listen()
        conn = await rig.connect()
        acks = await conn.snapshot(snapshot_of(("a", a)))
        assert acks == [codec.Ack()] * 2
        assert await refused_in(b)
        assert await greet_in(a) == b"hbone:pod-a\n"
        await rig.manager.wait_drained()
    stats = rig.manager.statistics()
    assert (stats.active_proxy_count, stats.proxies_started_total,
            stats.proxies_stopped_total) == (1, 2, 1)
    assert stats.connections_total == 2
    assert fds_to(a) == 1 and fds_to(b) == 0  # re-sent fd of a was closed, b's released


async def test_keep_in_snapshot_keeps_a_pod_without_a_new_fd(
        rig: Rig, pods: tuple[Netns, Netns]) -> None:
    """After an agent restart, Keep (no fd) spares a served pod; the unnamed one is drained."""
    a, b = pods
    with trio.fail_after(TIMEOUT):
        conn = await rig.connect()
        await conn.snapshot(snapshot_of(("a", a), ("b", b)))
        conn.close()
        conn = await rig.connect()
        assert await conn.request(codec.KeepWorkload("a")) == codec.Ack()
        assert await conn.request(codec.SnapshotSent()) == codec.Ack()
        assert await greet_in(a) == b"hbone:pod-a\n"
        assert await refused_in(b)
    stats = rig.manager.statistics()
    assert (stats.active_proxy_count, stats.proxies_started_total) == (1, 2)


async def test_readd_same_netns_is_idempotent_other_netns_replaces(
        rig: Rig, pods: tuple[Netns, Netns]) -> None:
    """Re-add with the same netns inode changes nothing; with another inode the proxy moves."""
    a, b = pods
    with trio.fail_after(TIMEOUT):
        conn = await rig.connect()
        await conn.snapshot(snapshot_of(("a", a)))
        first = rig.proxies.made["a"]
        assert await conn.add("a", "pod-a", a.path) == codec.Ack()
        assert rig.proxies.made["a"] is first
        assert rig.manager.statistics().proxies_started_total == 1
        assert fds_to(a) == 1
        # The pod's sandbox was recreated: same uid, a different netns.
        assert await conn.add("a", "pod-a", b.path) == codec.Ack()
        assert await refused_in(a)
        assert await greet_in(b) == b"hbone:pod-a\n"
        await rig.manager.wait_drained()
    stats = rig.manager.statistics()
    assert (stats.active_proxy_count, stats.proxies_started_total,
            stats.proxies_stopped_total) == (1, 2, 1)
    assert fds_to(a) == 0 and fds_to(b) == 1


@pytest.mark.parametrize("bad", [
    pytest.param("garbage", id="not-protobuf"),
    pytest.param("add-without-fd", id="add-without-netns-fd"),
    pytest.param("keep-after-snapshot", id="keep-after-snapshot"),
    pytest.param("snapshot-twice", id="second-snapshot-sent"),
])
async def test_protocol_error_closes_and_reconnects(
        rig: Rig, pods: tuple[Netns, Netns], bad: str) -> None:
    """A protocol error: NACK with a reason, connection closed, reconnect, snapshot resent."""
    a, b = pods
    with trio.fail_after(TIMEOUT):
        conn = await rig.connect()
        await conn.snapshot(snapshot_of(("a", a), ("b", b)))
        if bad == "garbage":
            await conn.send_raw(b"\xff\xff\xff\xff garbage")
        elif bad == "add-without-fd":
            await conn.send_raw(codec.encode_request(codec.AddWorkload("c", "pod-c")))
        elif bad == "keep-after-snapshot":
            await conn.send_raw(codec.encode_request(codec.KeepWorkload("a")))
        else:
            await conn.send_raw(codec.encode_request(codec.SnapshotSent()))
        nack = await conn.response()
        assert not nack.ok and nack.error
        await conn.expect_closed()
        assert await greet_in(a) == b"hbone:pod-a\n"  # the pods are not affected
        conn = await rig.connect()  # ztunnel came back and said hello
        assert await conn.snapshot(snapshot_of(("a", a))) == [codec.Ack()] * 2
        assert await refused_in(b)
    stats = rig.manager.statistics()
    assert stats.protocol_errors_total == 1 and stats.connections_total == 2
    assert stats.proxies_started_total == 2


async def test_bind_failure_is_nacked_then_retried(rig: Rig, pods: tuple[Netns, Netns]) -> None:
    """Port 15008 taken in the pod: NACK naming it, nothing half-bound, pod started on retry."""
    a, _ = pods

    def occupy() -> socket.socket:
        blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        blocker.bind(("0.0.0.0", 15008))
        blocker.listen(1)
        return blocker

    blocker = await trio.to_thread.run_sync(a.call, occupy)
    with trio.fail_after(TIMEOUT):
        try:
            conn = await rig.connect()
            acks = await conn.snapshot(snapshot_of(("a", a)))
            assert acks[1] == codec.Ack()  # SnapshotSent itself is fine
            assert "failure to start proxy" in acks[0].error
            assert "15008" in acks[0].error and "pod ns1/pod-a" in acks[0].error
            assert rig.manager.statistics().pending_proxy_count == 1
            assert rig.manager.pods()["a"].last_error == acks[0].error
            assert await refused_in(a, 15001)  # the listeners that did bind were closed
        finally:
            blocker.close()
        await rig.manager.wait_serving("a")
        assert await greet_in(a) == b"hbone:pod-a\n"
    stats = rig.manager.statistics()
    assert (stats.active_proxy_count, stats.pending_proxy_count) == (1, 0)
    assert fds_to(a) == 1


async def test_ztunnel_restart_receives_snapshot_again(
        rig: Rig, pods: tuple[Netns, Netns]) -> None:
    """ztunnel restart: the old manager leaves nothing behind, the new one serves the snapshot."""
    a, b = pods
    with trio.fail_after(TIMEOUT):
        conn = await rig.connect()
        await conn.snapshot(snapshot_of(("a", a), ("b", b)))
        rig.scope.cancel()  # ztunnel goes away
        await conn.expect_closed()
        await rig.stopped.wait()
        assert await refused_in(a) and await refused_in(b)
        assert fds_to(a) == 0 and fds_to(b) == 0
        await rig.start_manager()  # ...and comes back; the agent re-sends its snapshot
        conn = await rig.connect()
        assert not rig.manager.statistics().ready
        assert await conn.snapshot(snapshot_of(("a", a), ("b", b))) == [codec.Ack()] * 3
        await rig.manager.wait_ready()
        assert await greet_in(a) == b"hbone:pod-a\n"
        assert await greet_in(b) == b"hbone:pod-b\n"
    assert fds_to(a) == 1 and fds_to(b) == 1
    assert rig.manager.statistics().active_proxy_count == 2


class _CrashOnce:
    """A PodProxy (the seam's test twin) that fails once after starting, when `crash` is set."""

    def __init__(self, inner: ListenerPodProxy, crash: trio.Event, crashed: trio.Event) -> None:
        self.inner, self.crash, self.crashed = inner, crash, crashed

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        if self.crashed.is_set():
            await self.inner.serve(task_status=task_status)
            return
        task_status.started()
        try:
            if not self.crash.is_set():
                await self.crash.wait()
            raise RuntimeError("handler bug")
        finally:
            self.crashed.set()

    async def drain(self, deadline: float, *,
                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.inner.drain(deadline, task_status=task_status)


@pytest.mark.parametrize("immediately", [
    pytest.param(True, id="right-after-started-is-nacked"),
    pytest.param(False, id="later-turns-pending"),
])
async def test_proxy_failing_after_start_is_restarted(
        sock_dir: str, pods: tuple[Netns, Netns], immediately: bool) -> None:
    """A proxy that dies after it started turns pending and is started again by the retry."""
    a, _ = pods
    crash, crashed = trio.Event(), trio.Event()
    if immediately:
        crash.set()
    plain = Proxies()

    async def factory(pod: PodInfo, netns: PodNetns) -> _CrashOnce:
        return _CrashOnce(await plain(pod, netns), crash, crashed)

    sockets = NetnsSocketFactory()
    agent = FakeAgent(os.path.join(sock_dir, "ztunnel.sock"))
    await agent.listen()
    manager = WorkloadManager(factory, sockets, WorkloadManagerConfig(
        socket_path=agent.path, **CONFIG))
    try:
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                await nursery.start(manager.run)
                conn = await agent.accept()
                add_ack, snapshot_ack = await conn.snapshot(snapshot_of(("a", a)))
                assert snapshot_ack.ok
                if immediately:
                    assert "proxy failed after it started: RuntimeError" in add_ack.error
                else:
                    assert add_ack.ok
                    crash.set()
                await crashed.wait()
                assert manager.statistics().pending_proxy_count == 1
                await manager.wait_serving("a")
                assert await greet_in(a) == b"hbone:pod-a\n"
                assert manager.statistics().proxies_started_total == (1 if immediately else 2)
                nursery.cancel_scope.cancel()
    finally:
        agent.close()
        sockets.close()
    assert fds_to(a) == 0
