"""One HTTP request through the waypoint: authorize, route, fault, forward (retries, timeouts),
mirror, modify the response, stream it back, record telemetry. The trio orchestration of the
pure cores.

Who calls it: `waypoint.proxy.downstream` for every request head of a tunnel
(`await handler.handle(ctx, request, writer, body)`; `body` is the `ReplayBody` of a
streamed request body), HTTP/1.1 and HTTP/2 alike; it always answers through the
`ResponseWriter` (a local answer whole, a backend's response as head, chunks and end), then
records telemetry, and never raises for a peer's or a backend's fault.

Order (Envoy's waypoint filter chain, AMBIENT-INTERNALS §2.7, docs/waypoint.md):
1. L7 authorization on the head (`waypoint.policy.evaluate`, source = the tunnel's mTLS
   peer) → 403;
2. routing (`waypoint.routing.route_request`; a Service without RouteConfiguration or a
   pod-addressed tunnel goes to itself) → local answers (404, 500 with the reason, redirect,
   fault abort);
3. fault delay, then attempts: endpoint by least request (outlier-ejected and already-tried
   hosts avoided), `backend_timeout` per attempt (504 UT), retries per `decide_retry` on the
   response head with jittered back-off (a streamed body only while it fits the 1 MiB retry
   buffer; an answer that came before the upload ended first stops that upload), all inside
   `request_timeout` (504 UT; Gateway API's `timeouts.request` covers the whole exchange,
   fault delay included; both timeouts also bound the streamed response body, like Envoy's,
   which is cut when they expire). No response after the last attempt: 503 (UF/URX);
4. mirrors (`waypoint.proxy.mirror`): copies fire and forget (`<authority>-shadow`, Envoy's
   convention), their answers ignored; response header modifiers; the response body copied
   as it arrives; telemetry once it ended (istio_requests_total etc. with reporter
   `waypoint`, one access-log line, one SERVER span whose context goes upstream).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import typing
import uuid
from collections.abc import Callable

import trio

from meshcore.telemetry import (
    AccessLog,
    MeshMetrics,
    Protocol,
    Reporter,
    RequestEntry,
    ResponseFlags,
    Tracing,
    TracingConfig,
    traffic_labels,
)
from meshcore.wds import Endpoint, Service, Workload
from waypoint.errors import UpstreamError
from waypoint.http import HttpRequest, HttpResponse
from waypoint.http.messages import Headers
from waypoint.policy import DENIED_BODY, Decision, RequestAttributes, applicable, evaluate
from waypoint.proxy.body import BodyAborted, ReplayBody
from waypoint.proxy.context import TunnelContext
from waypoint.proxy.mirror import shadow_authority, start_mirror
from waypoint.proxy.response import UpstreamResponse
from waypoint.proxy.upstream import Upstreams, host_key, upstream_http2
from waypoint.resilience import Outcome, decide_retry
from waypoint.routing import (
    DEFAULT_RETRY,
    Backend,
    Forward,
    LocalResponse,
    Request,
    modify_headers,
    route_request,
)
from waypoint.state import WaypointState

log = logging.getLogger("waypoint.request")


@dataclasses.dataclass
class Observers:
    metrics: MeshMetrics = dataclasses.field(default_factory=lambda: MeshMetrics("waypoint"))
    access_log: AccessLog = dataclasses.field(default_factory=AccessLog)
    tracing: Tracing = dataclasses.field(default_factory=lambda: Tracing(TracingConfig()))


class ResponseWriter(typing.Protocol):
    """How the downstream side writes one response (HTTP/1.1 or HTTP/2 stream)."""

    async def whole(self, response: HttpResponse) -> None: ...  # a local answer, body included
    # A streamed one: head, body chunks (waiting for the client), end. `flush=False` when the
    # next part is ready at once: the writer may keep it for one write with what follows.
    async def head(self, response: HttpResponse, *, flush: bool = True) -> None: ...
    async def data(self, data: bytes, *, flush: bool = True) -> None: ...
    async def end(self, trailers: Headers) -> None: ...
    async def abort(self) -> None: ...  # the body broke off: reset / close, no clean end


@dataclasses.dataclass
class _Result:
    response: HttpResponse
    flags: str = ResponseFlags.NONE
    route: str | None = None
    endpoint: Endpoint | None = None
    service: Service | None = None
    error: str | None = None
    upstream: UpstreamResponse | None = None  # the body still to stream, if from a backend
    deadline: float = math.inf  # when streaming the body must have ended (timeouts)


class RequestHandler:
    def __init__(self, state: Callable[[], WaypointState], waypoint: str, upstreams: Upstreams,
                 observers: Observers, mirror_nursery: trio.Nursery,
                 rng: random.Random | None = None) -> None:
        self.state = state
        self.waypoint = waypoint  # "ns/name" of this waypoint Gateway
        self.upstreams = upstreams
        self.observers = observers
        self.mirror_nursery = mirror_nursery
        self.rng = rng or random.Random()

    def authorize(self, ctx: TunnelContext, req: HttpRequest | None,
                  state: WaypointState) -> Decision:
        attrs = RequestAttributes(
            req.method if req else "", req.path if req else "", req.authority if req else "",
            req.headers if req else (), source_identity=ctx.peer_identity,
            destination_port=ctx.port, source_ip=ctx.source_ip, remote_ip=ctx.source_ip,
            destination_ip=ctx.dest_ip)
        return evaluate(attrs, applicable(state.policies.values(), self.waypoint, ctx.hostname))

    async def handle(self, ctx: TunnelContext, req: HttpRequest, writer: ResponseWriter,
                     body: ReplayBody | None = None) -> HttpResponse:
        """Answer `req` through `writer` (the head as soon as it is decided, the body as it
        streams from the backend), then record telemetry (after the response left, so
        logging never delays it). Returns the response head; exceptions come only from the
        writer (the downstream broke)."""
        start = trio.current_time()
        state = self.state()
        body = body or ReplayBody(None, req.body, req.trailers)
        decision = self.authorize(ctx, req, state)  # on the head, before any body
        grpc = req.is_grpc
        with self.observers.tracing.request_span(
                req.method, traceparent=req.header("traceparent"),
                tracestate=req.header("tracestate"),
                attributes={"http.method": req.method, "http.url": req.path,
                            "upstream_cluster": ctx.hostname or None}) as span:
            if not decision.allowed:
                # Envoy's RBAC filter sets no response flag: the 403 and the decision tell.
                result = _Result(HttpResponse.local(403, DENIED_BODY), error=str(decision))
            else:
                upstream_headers = tuple(
                    (n, v) for n, v in req.headers if n not in ("traceparent", "tracestate"))
                upstream_headers += tuple(span.headers())
                if req.header("x-request-id") is None:
                    upstream_headers += (("x-request-id", str(uuid.uuid4())),)
                try:
                    result = await self._route_and_forward(
                        ctx, dataclasses.replace(req, headers=upstream_headers), state, body)
                except BodyAborted as exc:
                    result = _Result(HttpResponse.local(exc.status or 400, str(exc)),
                                     ResponseFlags.DOWNSTREAM_CONNECTION_TERMINATION
                                     if exc.status is None else ResponseFlags.NONE,
                                     error=str(exc))
            sent = result.response
            try:
                sent = await self._respond(result, writer)
            finally:
                if result.upstream is not None:
                    await result.upstream.aclose()
                span.set_attributes({"http.status_code": sent.status, "route": result.route})
                cut = result.upstream is not None and result.flags != ResponseFlags.NONE
                if sent.status >= 500 or cut:  # cut: the body broke off after the head
                    span.fail(result.error or f"status {sent.status}")
                self._record(ctx, req, result, sent, body.received, decision, start,
                             span.trace_id, grpc)
        return result.response

    async def _respond(self, result: _Result, writer: ResponseWriter) -> HttpResponse:
        """Write the response; a backend's body streams under the remaining timeouts (Envoy's
        route and per-try timeouts cover the whole response). Returns what was sent, body
        size in `body` length terms via `UpstreamResponse.body_bytes`, trailers included."""
        up = result.upstream
        if up is None:
            await writer.whole(result.response)
            return result.response
        await writer.head(result.response, flush=not up.ready())
        broke = False
        with trio.move_on_at(result.deadline) as scope:
            try:
                while data := await up.read():
                    await writer.data(data, flush=not up.ready())
            except UpstreamError as exc:
                result.flags, result.error, broke = exc.flags, str(exc), True
            except BodyAborted as exc:  # the client's request body broke off mid-stream
                result.flags = ResponseFlags.DOWNSTREAM_CONNECTION_TERMINATION
                result.error, broke = str(exc), True
        if scope.cancelled_caught:
            result.flags = ResponseFlags.UPSTREAM_TIMEOUT
            result.error = "timeout while streaming the response body"
            broke = True
        if broke:
            await writer.abort()
        else:
            await writer.end(up.trailers)
        return dataclasses.replace(result.response, trailers=up.trailers)

    # ---- routing and forwarding -------------------------------------------------------
    async def _route_and_forward(self, ctx: TunnelContext, req: HttpRequest,
                                 state: WaypointState, body: ReplayBody) -> _Result:
        request = Request(req.method, req.path, req.authority, req.headers, req.scheme)
        service = ctx.service
        if service is None:  # pod-addressed: straight to that pod, default retries
            return await self._forward_to_workload(ctx, req, state, body)
        table = state.routes.get(service.key)
        if table is not None:
            plan = route_request(table, request, ctx.port, self.rng)
        else:
            plan = Forward(request, Backend(service.namespace, service.name, service.hostname,
                                            ctx.port), "", -1, retry=DEFAULT_RETRY)
        if isinstance(plan, LocalResponse):
            flags = ResponseFlags.NO_ROUTE if plan.status == 404 else (
                "FI" if "fault injection" in plan.reason else ResponseFlags.NONE)
            error = plan.reason if plan.status >= 400 else None
            if plan.status >= 500:
                log.warning("local %d for %s %s: %s", plan.status, req.method, req.path,
                            plan.reason)
            return _Result(HttpResponse.local(plan.status, plan.reason if plan.status >= 400
                                              else "", plan.headers), flags,
                           error=error, service=service)
        return await self._forward(ctx, req, plan, state, body)

    def _backend_service(self, state: WaypointState, b: Backend) -> Service | None:
        return state.wds.services.get(f"{b.namespace}/{b.hostname}")

    async def _forward(self, ctx: TunnelContext, req: HttpRequest, plan: Forward,
                       state: WaypointState, body: ReplayBody) -> _Result:
        route = plan.route or None
        service = self._backend_service(state, plan.backend)
        if service is None:
            reason = (f"backend Service {plan.backend.namespace}/{plan.backend.hostname} is not "
                      "known to the waypoint")
            return _Result(HttpResponse.local(500, reason), ResponseFlags.NO_ROUTE, route,
                           error=reason)
        r = plan.request
        out = dataclasses.replace(req, method=r.method, path=r.path, authority=r.authority,
                                  headers=r.headers)
        for backend, mreq in plan.mirrors:
            start_mirror(self.upstreams, self.mirror_nursery, state.wds,
                         self._backend_service(state, backend), backend, dataclasses.replace(
                             out, path=mreq.path, headers=mreq.headers,
                             authority=shadow_authority(mreq.authority)), body)
        deadline = (trio.current_time() + plan.request_timeout
                    if plan.request_timeout else float("inf"))
        result = _Result(HttpResponse.local(504, "upstream request timeout"),
                         ResponseFlags.UPSTREAM_TIMEOUT, route, service=service,
                         error="request timeout (timeouts.request) expired")
        with trio.move_on_at(deadline):
            if plan.delay:
                await trio.sleep(plan.delay)
            result = await self._attempts(out, plan, service, state, route, body)
        result.deadline = min(result.deadline, deadline)
        if plan.response_headers and result.response.status:
            headers = result.response.headers
            for mod in plan.response_headers:
                headers = modify_headers(headers, mod)
            result.response = dataclasses.replace(result.response, headers=headers)
        return result

    async def _attempts(self, req: HttpRequest, plan: Forward, service: Service,
                        state: WaypointState, route: str | None, body: ReplayBody) -> _Result:
        policy = plan.retry or DEFAULT_RETRY
        tried: set[str] = set()
        retries = 0
        total = len(state.wds.endpoints.get(service.key, {}))
        up: UpstreamResponse | None = None
        try:
            while True:
                endpoint = self.upstreams.choose(state.wds, service, plan.backend.port,
                                                 frozenset(tried))
                if endpoint is None:
                    reason = f"no healthy upstream for {service.key} port {plan.backend.port}"
                    return _Result(HttpResponse.local(503, "no healthy upstream"),
                                   ResponseFlags.NO_HEALTHY_UPSTREAM, route, service=service,
                                   error=reason)
                key = host_key(endpoint)
                tried.add(key)
                attempt_req = dataclasses.replace(
                    req, headers=(*req.headers, ("x-envoy-attempt-count", str(retries + 1))))
                error: UpstreamError | None = None
                with trio.move_on_after(plan.backend_timeout or math.inf) as scope:
                    attempt_deadline = scope.deadline
                    try:
                        up = await self.upstreams.attempt(
                            endpoint, attempt_req, upstream_http2(service, plan.backend.port, req),
                            body.reader)
                    except UpstreamError as exc:
                        error = exc
                timed_out = scope.cancelled_caught
                response = up.head if up is not None else None
                self.upstreams.record(service.key, key,
                                      response.status if response else None, total)
                if response is not None:
                    outcome = Outcome(status=response.status, grpc_status=response.grpc_status)
                else:
                    outcome = Outcome(reset="timeout" if timed_out else
                                      (error.reset if error else "reset"))
                decision = decide_retry(policy, retries, outcome, self.rng)
                if decision.retry and up is not None:  # an early answer: stop its upload
                    await up.stop_upload()  # first (the body may grow until it stopped)
                if not decision.retry or not body.replayable:  # Envoy: not past the buffer
                    break
                if up is not None:
                    await up.aclose()
                    up = None
                retries += 1
                log.debug("retry %d of %s %s to %s: %s", retries, req.method, req.path,
                          service.key, decision.reason)
                await trio.sleep(decision.backoff)
            if up is not None:
                result = _Result(up.head, ResponseFlags.NONE, route, endpoint, service,
                                 upstream=up, deadline=attempt_deadline)
                up = None
                return result
        finally:
            if up is not None:  # cancelled (request timeout) with a response in hand
                await up.aclose()
        if timed_out:
            return _Result(HttpResponse.local(504, "upstream request timeout"),
                           ResponseFlags.UPSTREAM_TIMEOUT, route, endpoint, service,
                           error=f"backend timeout (timeouts.backendRequest) at {key}")
        flags = (ResponseFlags.UPSTREAM_RETRY_LIMIT_EXCEEDED if retries
                 else (error.flags if error else ResponseFlags.UPSTREAM_CONNECTION_FAILURE))
        return _Result(HttpResponse.local(503, "upstream connect error or disconnect/reset "
                                          "before headers"), flags, route, endpoint, service,
                       error=str(error) if error else "no response")

    async def _forward_to_workload(self, ctx: TunnelContext, req: HttpRequest,
                                   state: WaypointState, body: ReplayBody) -> _Result:
        w = ctx.workload
        assert w is not None
        endpoint = Endpoint(w, ctx.dest_ip, ctx.port)
        up: UpstreamResponse | None = None
        error: UpstreamError | None = None
        for attempt in range(DEFAULT_RETRY.attempts + 1):
            try:
                up = await self.upstreams.attempt(endpoint, req, req.is_grpc, body.reader)
            except UpstreamError as exc:
                error, up = exc, None
            outcome = (Outcome(status=up.head.status) if up is not None
                       else Outcome(reset=error.reset if error else "reset"))
            decision = decide_retry(DEFAULT_RETRY, attempt, outcome, self.rng)
            if decision.retry and up is not None:
                await up.stop_upload()
            if not decision.retry or not body.replayable:
                break
            if up is not None:
                await up.aclose()
                up = None
            await trio.sleep(decision.backoff)
        if up is not None:
            return _Result(up.head, endpoint=endpoint, upstream=up)
        return _Result(HttpResponse.local(503, "upstream connect error"),
                       error.flags if error else ResponseFlags.UPSTREAM_CONNECTION_FAILURE,
                       endpoint=endpoint, error=str(error))

    # ---- telemetry -------------------------------------------------------------------
    def _record(self, ctx: TunnelContext, req: HttpRequest, result: _Result,
                resp: HttpResponse, request_bytes: int, decision: Decision, start: float,
                trace_id: str, grpc: bool) -> None:
        dest: Workload | None = result.endpoint.workload if result.endpoint else ctx.workload
        response_bytes = (result.upstream.body_bytes if result.upstream is not None
                          else len(resp.body))
        labels = traffic_labels(
            reporter=Reporter.WAYPOINT, destination=dest,
            destination_service=result.service or ctx.service,
            source_identity=ctx.peer_identity, peer=ctx.peer, mtls=True,
            request_protocol=Protocol.GRPC if grpc else Protocol.HTTP,
        ).with_outcome(result.flags, resp.status,
                       (resp.grpc_status if resp.grpc_status is not None else "")
                       if grpc else None)
        duration_ms = (trio.current_time() - start) * 1000
        self.observers.metrics.http.record(labels, duration_ms=duration_ms,
                                           request_bytes=request_bytes,
                                           response_bytes=response_bytes)
        self.observers.access_log.request_complete(RequestEntry(
            labels=labels, src_addr=ctx.source_addr or ctx.peer_addr, method=req.method,
            path=req.path, authority=req.authority, status=resp.status,
            duration_ms=duration_ms, request_bytes=request_bytes,
            response_bytes=response_bytes, route=result.route,
            upstream=host_key(result.endpoint) if result.endpoint else None,
            error=result.error, decision=decision, trace_id=trace_id))
