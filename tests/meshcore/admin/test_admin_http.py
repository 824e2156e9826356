"""The admin HTTP server answers routes over real loopback sockets (stdlib client as the peer)."""

import http.client
import json

import pytest
import trio

from meshcore.admin.http import AdminRequest, AdminResponse, serve_admin

pytestmark = pytest.mark.trio


def _get(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


async def test_routes_queries_404_and_handler_errors() -> None:
    """Known paths answer, the query string reaches the handler, unknown paths 404, bugs 500."""
    seen: list[AdminRequest] = []

    def echo(req: AdminRequest) -> AdminResponse:
        seen.append(req)
        return AdminResponse.json({"q": dict(req.query), "body": req.body.decode()})

    def broken(req: AdminRequest) -> AdminResponse:
        raise RuntimeError("bug")

    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_admin, {"/echo": echo, "/broken": broken}, "127.0.0.1", 0)
        status, body = await trio.to_thread.run_sync(_get, port, "POST", "/echo?level=debug", b"x")
        assert status == 200
        assert json.loads(body) == {"q": {"level": "debug"}, "body": "x"}
        status, body = await trio.to_thread.run_sync(_get, port, "GET", "/nope")
        assert status == 404 and b"/echo" in body
        status, _ = await trio.to_thread.run_sync(_get, port, "GET", "/broken")
        assert status == 500
        nursery.cancel_scope.cancel()
    assert seen[0].method == "POST"
