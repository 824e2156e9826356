"""Request mirroring (Gateway API `RequestMirror`, Istio's `mirror`): fire-and-forget copies.

Who calls it: `waypoint.proxy.handler` once per mirror of a routed request, before the
request's own attempts. What it hands to: `Upstreams.attempt` (one exchange on the pool, like
an attempt, without retries) in a task of the handler's mirror nursery; the answer is read
and dropped (so the connection can be reused), failures are only logged.
Envoy's conventions: the copy goes to `<authority>-shadow`; a streamed request body is
copied once it ended and only if it was kept (≤ the 1 MiB retry buffer, like Envoy's buffer
limit for shadows); a mirror gives up after 30 s. Invariant: nothing here ever affects the
client's response.
"""

from __future__ import annotations

import dataclasses
import logging

import trio

from meshcore.wds import Service, Snapshot
from waypoint.http import HttpRequest
from waypoint.proxy.body import ReplayBody
from waypoint.proxy.response import UpstreamResponse
from waypoint.proxy.upstream import Upstreams, upstream_http2
from waypoint.routing import Backend

log = logging.getLogger("waypoint.request")
MIRROR_TIMEOUT = 30.0


def shadow_authority(authority: str) -> str:
    """`host:port` → `host-shadow:port` (Envoy's shadow host naming)."""
    host, sep, port = authority.rpartition(":")
    if sep and port.isdigit() and not authority.endswith("]"):
        return f"{host}-shadow:{port}"
    return f"{authority}-shadow"


def start_mirror(upstreams: Upstreams, nursery: trio.Nursery, snapshot: Snapshot,
                 service: Service | None, backend: Backend, req: HttpRequest,
                 body: ReplayBody) -> None:
    """Fire and forget a copy of `req` to `service` (the mirror backend's Service, None if
    the waypoint does not know it: skipped)."""
    if service is None:
        log.info("mirror to %s/%s skipped: unknown Service", backend.namespace,
                 backend.hostname)
        return
    endpoint = upstreams.choose(snapshot, service, backend.port)
    if endpoint is None:
        return
    svc = service

    async def send() -> None:
        up: UpstreamResponse | None = None
        copy = req
        try:
            with trio.move_on_after(MIRROR_TIMEOUT):
                if req.streamed:
                    await body.done.wait()
                    whole = body.whole()
                    if whole is None:
                        log.debug("mirror to %s skipped: body not kept", svc.key)
                        return
                    copy = dataclasses.replace(req, streamed=False, body=whole,
                                               trailers=body.trailers, length=None)
                up = await upstreams.attempt(endpoint, copy,
                                             upstream_http2(svc, backend.port, req))
                await up.drain()  # read, so the connection can be reused
        except Exception as exc:  # a mirror's failure never matters to the client
            log.debug("mirror to %s failed: %s", svc.key, exc)
        finally:
            if up is not None:
                await up.aclose()

    nursery.start_soon(send)
