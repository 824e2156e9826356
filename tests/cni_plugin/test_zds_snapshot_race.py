"""ZDS server: pods added or deleted while a ztunnel receives its snapshot are never lost."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pytest
import trio
import trio.testing

from cni_plugin.agent import zds_server
from cni_plugin.agent.zds_server import ZdsServer, ZtunnelUnavailable, serve_zds
from meshcore.zds import codec
from tests.cni_plugin.zds_peer import ScriptedZtunnel

pytestmark = pytest.mark.trio

FIRST = codec.AddWorkload("uid-1", "web-1", "shop", "web")
SECOND = codec.AddWorkload("uid-2", "api-1", "shop", "api")


async def test_add_and_del_during_snapshot(nursery: trio.Nursery, tmp_path: Path) -> None:
    """An add and a del issued mid-snapshot reach that ztunnel right after SnapshotSent;
    `on_snapshot` reports the snapshot's acks."""
    reported: list[Mapping[str, codec.Ack]] = []
    server = ZdsServer(on_snapshot=reported.append)
    path = str(tmp_path / "ztunnel.sock")
    await nursery.start(serve_zds, path, server)
    netns = os.open("/proc/self/ns/net", os.O_RDONLY)
    with pytest.raises(ZtunnelUnavailable):
        await server.add_workload(FIRST, netns)
    zt = await ScriptedZtunnel.connect(path)
    message, _ = await zt.expect()
    assert message == FIRST  # snapshot in progress: the ack is held back

    results: list[codec.Ack] = []

    async def add() -> None:
        results.append(await server.add_workload(SECOND, netns))

    nursery.start_soon(add)
    nursery.start_soon(server.del_workload, "uid-1")
    await trio.testing.wait_all_tasks_blocked()
    await zt.ack("failure to start proxy")
    assert await zt.expect() == (codec.SnapshotSent(), None)
    await zt.ack()
    later = []
    for _ in range(2):  # one request outstanding at a time: ack each before the next
        later.append((await zt.expect())[0])
        await zt.ack()
    assert sorted(later, key=repr) == [SECOND, codec.DelWorkload("uid-1")]
    await trio.testing.wait_all_tasks_blocked()
    assert results == [codec.Ack()]
    assert reported == [{"uid-1": codec.Ack("failure to start proxy")}]
    os.close(netns)
    zt.close()


async def test_ack_timeout_drops_connection(nursery: trio.Nursery, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing ack drops the connection (a late ack must not answer the next request)."""
    monkeypatch.setattr(zds_server, "ACK_TIMEOUT", 0.1)
    server = ZdsServer()
    path = str(tmp_path / "ztunnel.sock")
    await nursery.start(serve_zds, path, server)
    zt = await ScriptedZtunnel.connect(path)
    assert await zt.receive_snapshot() == {}
    await trio.testing.wait_all_tasks_blocked()
    netns = os.open("/proc/self/ns/net", os.O_RDONLY)
    with pytest.raises(ZtunnelUnavailable, match="connection dropped"):
        await server.add_workload(FIRST, netns)
    assert (await zt.expect())[0] == FIRST
    assert await zt.wait_closed()
    await trio.testing.wait_all_tasks_blocked()
    assert server.connected == 0
    assert server.known_uids == {"uid-1"}  # still in the next ztunnel's snapshot
    os.close(netns)
    zt.close()
