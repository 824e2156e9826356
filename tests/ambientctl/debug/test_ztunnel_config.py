"""`ambientctl ztunnel-config` against a real ztunnel admin endpoint on loopback."""

from __future__ import annotations

import functools
import io
import json
from pathlib import Path
from typing import Any

import pytest
import trio

from ambientctl.debug import main, tables
from ambientctl.debug.admin_client import parse_address
from ambientctl.debug.errors import DebugError
from ambientctl.debug.state import load_folder
from meshcore.admin import serve_admin
from tests.ambientctl.debug.mesh import Nodes, make_folder
from tests.ambientctl.debug.test_why import ALLOW_CLIENT, pa
from ztunnel.admin import AdminView, admin_routes

CERTS = [{"identity": "spiffe://cluster.local/ns/shop/sa/web", "state": "valid",
          "expiry": "2026-11-26T17:00:00+00:00"},
         {"identity": "spiffe://cluster.local/ns/shop/sa/client", "state": "pending",
          "expiry": None}]

EXPECTED = {
    "workloads": """\
NAME    NAMESPACE  IP         NODE    IDENTITY                                  PROTOCOL  WAYPOINT
old     legacy     10.3.0.5   node-a  spiffe://cluster.local/ns/legacy/sa/old   TCP       -
tool    ops        10.2.0.5   node-a  spiffe://cluster.local/ns/ops/sa/tool     HBONE     -
client  shop       10.1.0.20  node-a  spiffe://cluster.local/ns/shop/sa/client  HBONE     -
web-1   shop       10.1.0.10  node-a  spiffe://cluster.local/ns/shop/sa/web     HBONE     -
web-2   shop       10.1.0.11  node-b  spiffe://cluster.local/ns/shop/sa/web     HBONE     -""",
    "services": """\
HOSTNAME                    VIPS        PORTS     ENDPOINTS  WAYPOINT
web.shop.svc.cluster.local  10.96.0.10  80:named  2/2        -""",
    "policies": """\
NAME                                        SCOPE              ACTION  RULES
istio-system/istio_converted_static_strict  WORKLOAD_SELECTOR  DENY    1
shop/allow-client                           WORKLOAD_SELECTOR  ALLOW   1""",
    "certificates": """\
IDENTITY                                  STATE    EXPIRY
spiffe://cluster.local/ns/shop/sa/web     valid    2026-11-26T17:00:00+00:00
spiffe://cluster.local/ns/shop/sa/client  pending  -""",
}


def _view(tmp_path: Path) -> AdminView:
    state = load_folder(make_folder(tmp_path / "m", ALLOW_CLIENT, pa("strict", "STRICT")))
    return AdminView(node="node-a", snapshot=lambda: state.snapshot,
                     certificates=lambda: CERTS, xds=lambda: {"address": "istiod:15010"})


async def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await trio.to_thread.run_sync(functools.partial(main, argv, out=out, err=err))
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("section", tables.SECTIONS)
@pytest.mark.trio
async def test_tables_from_a_live_admin_endpoint(tmp_path: Path, section: str) -> None:
    """Each section prints as an aligned table with the expected rows."""
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_admin, admin_routes(_view(tmp_path)), "127.0.0.1", 0)
        code, out, err = await _run(["ztunnel-config", section, "--admin", f"127.0.0.1:{port}"])
        nursery.cancel_scope.cancel()
    assert (code, err) == (0, "")
    assert out == EXPECTED[section] + "\n"


@pytest.mark.trio
async def test_json_is_the_dump_section(tmp_path: Path) -> None:
    """-o json prints the section exactly as the admin endpoint serves it."""
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_admin, admin_routes(_view(tmp_path)), "127.0.0.1", 0)
        code, out, _ = await _run(["ztunnel-config", "workloads", "--admin",
                                   f"127.0.0.1:{port}", "-o", "json"])
        nursery.cancel_scope.cancel()
    workloads: list[dict[str, Any]] = json.loads(out)
    assert code == 0
    web1 = next(w for w in workloads if w["name"] == "web-1")
    assert web1["identity"] == "spiffe://cluster.local/ns/shop/sa/web"
    assert web1["authorization_policies"] == [
        "shop/allow-client", "istio-system/istio_converted_static_strict"]


@pytest.mark.trio
async def test_node_resolution_and_unreachable_admin(tmp_path: Path) -> None:
    """--node goes through the resolver; a closed port names the node and the next step."""
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_admin, admin_routes(_view(tmp_path)), "127.0.0.1", 0)
        out = io.StringIO()
        code = await trio.to_thread.run_sync(functools.partial(
            main, ["ztunnel-config", "certificates", "--node", "node-a"], out=out,
            resolver=Nodes(port)))
        nursery.cancel_scope.cancel()
    assert code == 0 and out.getvalue() == EXPECTED["certificates"] + "\n"
    err = io.StringIO()
    code = await trio.to_thread.run_sync(functools.partial(
        main, ["ztunnel-config", "workloads", "--node", "node-a"], err=err,
        resolver=Nodes(port)))  # the server is gone: nothing listens there now
    assert code == 2
    assert f"cannot reach ztunnel admin at 127.0.0.1:{port}" in err.getvalue()
    assert "is ztunnel running on node node-a? try `ambientctl sandbox status`" in err.getvalue()
    err = io.StringIO()
    code = await trio.to_thread.run_sync(functools.partial(
        main, ["ztunnel-config", "workloads", "--node", "node-a"], err=err))
    assert code == 2 and "--admin HOST:PORT" in err.getvalue()


def test_parse_address() -> None:
    """HOST:PORT, [v6]:PORT and a bare host (default port 15000)."""
    assert parse_address("127.0.0.1:15000") == ("127.0.0.1", 15000)
    assert parse_address("[::1]:9") == ("::1", 9)
    assert parse_address("ztunnel") == ("ztunnel", 15000)
    with pytest.raises(DebugError, match="not a TCP port"):
        parse_address("h:99999")
