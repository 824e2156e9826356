"""The agent's ZDS server against a scripted ztunnel peer on a real SOCK_SEQPACKET socket."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from cni_plugin.agent.zds_server import ZdsServer, ZtunnelUnavailable, serve_zds
from meshcore.zds import codec
from meshcore.zds.seqpacket import recv_datagram_async, send_datagram_async

pytestmark = pytest.mark.trio

POD = codec.AddWorkload("uid-1", "web-1", "shop", "web")


@pytest.fixture
async def zds(nursery: trio.Nursery) -> AsyncIterator[tuple[ZdsServer, str]]:
    """A ZDS server listening on a fresh socket path."""
    # A short /tmp path: unix socket paths are limited to 108 bytes (tmp_path can be longer).
    directory = tempfile.mkdtemp(prefix="zds-")
    path = os.path.join(directory, "ztunnel.sock")
    server = ZdsServer()
    await nursery.start(serve_zds, path, server)
    yield server, path
    shutil.rmtree(directory, ignore_errors=True)


async def _connect(path: str) -> trio.socket.SocketType:
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    await sock.connect(path)
    return sock


async def _expect(sock: trio.socket.SocketType) -> tuple[codec.Request, list[int]]:
    received = await recv_datagram_async(sock)
    assert received is not None
    data, fds = received
    return codec.decode_request(data, len(fds)), fds


async def _ack(sock: trio.socket.SocketType, error: str = "") -> None:
    await send_datagram_async(sock, codec.encode_response(codec.Ack(error)))


def _same_netns(fd: int) -> bool:
    return os.fstat(fd).st_ino == os.stat("/proc/self/ns/net").st_ino


async def test_snapshot_then_add_and_del(zds: tuple[ZdsServer, str], nursery: trio.Nursery) -> None:
    """A known pod is sent (with its netns fd) in the snapshot; later adds and dels flow."""
    server, path = zds
    netns = os.open("/proc/self/ns/net", os.O_RDONLY)
    with pytest.raises(ZtunnelUnavailable, match="no ztunnel"):
        await server.add_workload(POD, netns)  # remembered for the snapshot
    zt = await _connect(path)
    await send_datagram_async(zt, codec.encode_hello())
    message, fds = await _expect(zt)
    assert message == POD and len(fds) == 1 and _same_netns(fds[0])
    os.close(fds[0])
    await _ack(zt)
    assert await _expect(zt) == (codec.SnapshotSent(), [])
    await _ack(zt)

    second = codec.AddWorkload("uid-2", "api-1", "shop", "api")
    result: list[codec.Ack] = []

    async def add() -> None:
        result.append(await server.add_workload(second, netns))

    nursery.start_soon(add)
    message, fds = await _expect(zt)
    assert message == second and _same_netns(fds[0])
    os.close(fds[0])
    await _ack(zt, "failure to start proxy")
    await trio.testing.wait_all_tasks_blocked()
    assert result == [codec.Ack("failure to start proxy")]

    nursery.start_soon(server.del_workload, "uid-1")
    assert await _expect(zt) == (codec.DelWorkload("uid-1"), [])
    await _ack(zt)
    os.close(netns)
    zt.close()


@pytest.mark.parametrize("first", [
    pytest.param(b"\xff\xff\xff", id="garbage"),
    pytest.param(b"", id="empty-hello"),
    pytest.param(codec.encode_response(codec.Ack()), id="ack-instead-of-hello"),
])
async def test_bad_hello_closes_connection(zds: tuple[ZdsServer, str], first: bytes) -> None:
    """Anything but a V1 hello as the first datagram closes that connection."""
    _, path = zds
    zt = await _connect(path)
    await send_datagram_async(zt, first)
    assert await recv_datagram_async(zt) is None
    zt.close()


async def test_unsolicited_datagram_closes_connection(zds: tuple[ZdsServer, str]) -> None:
    """After the snapshot, a datagram nobody asked for closes the connection."""
    server, path = zds
    zt = await _connect(path)
    await send_datagram_async(zt, codec.encode_hello())
    assert await _expect(zt) == (codec.SnapshotSent(), [])
    await _ack(zt)
    await trio.testing.wait_all_tasks_blocked()
    assert server.connected == 1
    await send_datagram_async(zt, b"garbage")
    assert await recv_datagram_async(zt) is None
    await trio.testing.wait_all_tasks_blocked()
    assert server.connected == 0
    zt.close()
