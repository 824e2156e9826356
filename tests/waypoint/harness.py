"""A waypoint under test on loopback: backends behind a real HBONE server, a real client pool.

Used by the waypoint component tests. Layout (all on 127.0.0.0/8, no root needed):
* backend pods 127.0.0.1x: an h11 (HTTP/1.1) or h2 (HTTP/2, gRPC-ish) app on the target port
  `env.target_port`, and one `serve_hbone` (listeners on every pod IP, port `env.hbone_port`)
  presenting each pod's certificate and dialing the app it is asked for;
* the waypoint (`serve_waypoint`) on 127.0.0.1, identity shop/waypoint, state from a
  `WaypointStore` the test feeds with workload-API and route/policy protos;
* clients: `env.tunnel(authority)` opens an HBONE CONNECT to the waypoint with the
  productpage identity (as ztunnel does, authority = the Service VIP:port); `clients.py`
  speaks HTTP inside it (`h1_exchange` with h11, `H2Session` with h2).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import ipaddress
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import h11
import trio

from meshcore.hbone_trio import ConnectOutcome, ConnectRequest, open_hbone_client, serve_hbone
from meshcore.protos.ambient.waypoint import v1 as pb
from meshcore.protos.istio import workload as wl
from meshcore.wds import ResourceUpdate
from meshcore.xds.types import TYPE_ADDRESS
from tests.meshcore.hbone_trio import certs
from tests.waypoint import clients
from waypoint.http import Limits
from waypoint.proxy.handler import Observers
from waypoint.proxy.server import serve_waypoint
from waypoint.proxy.upstream import UpstreamConfig
from waypoint.state import TYPE_L7_AUTHORIZATION, TYPE_ROUTE_CONFIGURATION, WaypointStore

NS = "shop"
WAYPOINT = certs.cached("waypoint", NS)
CLIENT = certs.cached("productpage", NS)
VIPS = {"reviews": "10.96.0.10", "reviews-v2": "10.96.0.11", "grpc": "10.96.0.12",
        "tcp-echo": "10.96.0.13", "ghost": "10.96.0.14"}
SERVICE_PORT = 9080


def host(name: str) -> str:
    return f"{name}.{NS}.svc.cluster.local"


def key(name: str) -> str:
    return f"{NS}/{host(name)}"


@dataclasses.dataclass
class Pod:
    name: str
    service: str
    ip: str
    kind: str = "h1"  # h1 | h2 | tcp
    hits: list[dict[str, object]] = dataclasses.field(default_factory=list)
    fail_first: int = 0  # answer 503 to this many requests first
    hit: trio.Event = dataclasses.field(default_factory=trio.Event)  # set by the first request
    connections: int = 0  # app connections accepted (one per upstream tunnel)
    # HTTP/1.1 app: "" keep-alive; "header": answer `connection: close`; "after": close the
    # socket after each response (an idle timeout of 0); "drop-second": the second request
    # of a connection gets the connection closed instead of an answer.
    h1_close: str = ""
    h2_max_streams: int = 0  # HTTP/2 app: MAX_CONCURRENT_STREAMS (0: h2's default)
    h2_hold: int = 0  # HTTP/2 app: hold every answer until this many requests arrived in all
    received: int = 0  # HTTP/2 app: requests received (all connections)
    released: trio.Event = dataclasses.field(default_factory=trio.Event)  # h2_hold reached
    max_open: int = 0  # HTTP/2 app: most streams seen open at once on one connection
    h2_goaway_after: int = 0  # HTTP/2 app: GOAWAY (NO_ERROR) after answering this many
    # "sse" / "h2stream" apps: send the first event/message, wait for `proceed`, send the last.
    proceed: trio.Event = dataclasses.field(default_factory=trio.Event)
    # A test's own app (overrides `kind`): called with the pod and each accepted connection.
    app: Callable[[Pod, trio.SocketStream], Awaitable[None]] | None = None


Response = tuple[int, dict[str, str], bytes]


def app_response(pod: Pod, method: str, path: str, headers: dict[str, str],
                 body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """What a backend pod answers: JSON echo; /status/<n> answers n; fail_first 503s."""
    pod.hits.append({"method": method, "path": path, "headers": headers, "body": body})
    pod.hit.set()
    if path == "/sha256":  # large uploads: answer the digest instead of echoing
        return 200, [("content-type", "text/plain")], hashlib.sha256(body).hexdigest().encode()
    if pod.fail_first > 0:
        pod.fail_first -= 1
        return 503, [("content-type", "text/plain")], b"flaky\n"
    status = 200
    if path.startswith("/status/"):
        status = int(path.split("/")[2])
    out = json.dumps({"pod": pod.name, "method": method, "path": path, "headers": headers,
                      "body": body.decode("latin-1")}).encode()
    return status, [("content-type", "application/json"), ("x-pod", pod.name)], out


async def serve_h1_app(pod: Pod, stream: trio.SocketStream) -> None:
    conn = h11.Connection(h11.SERVER)
    pod.connections += 1
    served = 0
    with contextlib.suppress(trio.BrokenResourceError, h11.RemoteProtocolError):
        while True:
            head, body = None, bytearray()
            while True:
                ev = conn.next_event()
                if ev is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    conn.receive_data(data)
                    if not data and conn.their_state is h11.IDLE:
                        return
                    continue
                if isinstance(ev, h11.Request):
                    head = ev
                elif isinstance(ev, h11.Data):
                    body += ev.data
                elif isinstance(ev, h11.EndOfMessage | h11.ConnectionClosed):
                    break
            if head is None:
                return
            served += 1
            if pod.h1_close == "drop-second" and served == 2:
                pod.hits.append({"dropped": head.target.decode()})
                await stream.aclose()
                return
            hs = {n.decode(): v.decode() for n, v in head.headers}
            status, rh, rb = app_response(pod, head.method.decode(), head.target.decode(), hs,
                                          bytes(body))
            if pod.h1_close == "header":
                rh.append(("connection", "close"))
            await stream.send_all(conn.send(h11.Response(
                status_code=status, headers=[*rh, ("content-length", str(len(rb)))])))
            await stream.send_all(conn.send(h11.Data(data=rb)) + conn.send(h11.EndOfMessage()))
            if pod.h1_close == "after":
                await stream.aclose()
                return
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()


async def serve_h2_app(pod: Pod, stream: trio.SocketStream) -> None:
    """A gRPC-ish HTTP/2 server: echoes the body, ends with trailers grpc-status 0."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False,
                                                                header_encoding="utf-8"))
    if pod.h2_max_streams:
        conn.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: pod.h2_max_streams})
    conn.initiate_connection()
    pod.connections += 1
    await stream.send_all(conn.data_to_send())
    heads: dict[int, dict[str, str]] = {}
    bodies: dict[int, bytearray] = {}
    ready: list[int] = []
    lock = trio.Lock()

    answered = 0
    gone = trio.Event()  # GOAWAY sent: stop reading (h2 refuses frames after it)

    async def answer() -> None:
        nonlocal answered
        async with lock:
            answered += len(ready)
            for sid in ready:
                hs = heads.pop(sid)
                body = bytes(bodies.pop(sid))
                pod.hits.append({"method": hs[":method"], "path": hs[":path"],
                                 "headers": hs, "body": body})
                conn.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc"),
                                        ("x-pod", pod.name)])
                conn.send_data(sid, body)
                conn.send_headers(sid, [("grpc-status", "0"), ("grpc-message", "ok")],
                                  end_stream=True)
            ready.clear()
            await stream.send_all(conn.data_to_send())
            if pod.h2_goaway_after and answered >= pod.h2_goaway_after:
                conn.close_connection()  # graceful GOAWAY, then this connection ends
                await stream.send_all(conn.data_to_send())
                gone.set()

    async def answer_when_released() -> None:
        await pod.released.wait()
        await answer()

    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError,
                             h2.exceptions.ProtocolError):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(answer_when_released)
            while not gone.is_set() and (data := await stream.receive_some(65536)):
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        heads[ev.stream_id] = dict(ev.headers)  # type: ignore[arg-type]
                        bodies[ev.stream_id] = bytearray()
                        pod.max_open = max(pod.max_open, conn.open_inbound_streams)
                    elif isinstance(ev, h2.events.DataReceived):
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                        bodies[ev.stream_id] += ev.data
                    elif isinstance(ev, h2.events.StreamEnded):
                        ready.append(ev.stream_id)
                        pod.received += 1
                if pod.received >= pod.h2_hold:
                    pod.released.set()
                if pod.released.is_set():
                    await answer()
                else:
                    async with lock:
                        await stream.send_all(conn.data_to_send())
            nursery.cancel_scope.cancel()


async def serve_sse_app(pod: Pod, stream: trio.SocketStream) -> None:
    """Server-sent events over HTTP/1.1: `data: 1`, then (after `pod.proceed`) `data: 2`,
    chunked, then the end."""
    conn = h11.Connection(h11.SERVER)
    pod.connections += 1
    with contextlib.suppress(trio.BrokenResourceError, h11.RemoteProtocolError):
        while not isinstance(ev := conn.next_event(), h11.EndOfMessage):
            if ev is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
        pod.hits.append({"sse": True})
        await stream.send_all(conn.send(h11.Response(status_code=200, headers=[
            ("content-type", "text/event-stream"), ("transfer-encoding", "chunked")])))
        await stream.send_all(conn.send(h11.Data(data=b"data: 1\n\n")))
        await pod.proceed.wait()
        await stream.send_all(conn.send(h11.Data(data=b"data: 2\n\n"))
                              + conn.send(h11.EndOfMessage()))


async def serve_h2_stream_app(pod: Pod, stream: trio.SocketStream) -> None:
    """gRPC-style server streaming over HTTP/2 (one call): message 1, then (after
    `pod.proceed`) message 2 and trailers grpc-status 0."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False,
                                                                header_encoding="utf-8"))
    conn.initiate_connection()
    pod.connections += 1
    await stream.send_all(conn.data_to_send())
    with contextlib.suppress(trio.BrokenResourceError, h2.exceptions.ProtocolError):
        sid = 0
        while not sid:
            for ev in conn.receive_data(await stream.receive_some(65536)):
                if isinstance(ev, h2.events.DataReceived):
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded):
                    sid = ev.stream_id
            await stream.send_all(conn.data_to_send())
        pod.hits.append({"stream": sid})
        conn.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
        conn.send_data(sid, b"message-1")
        await stream.send_all(conn.data_to_send())
        await pod.proceed.wait()
        conn.send_data(sid, b"message-2")
        conn.send_headers(sid, [("grpc-status", "0")], end_stream=True)
        await stream.send_all(conn.data_to_send())
        while data := await stream.receive_some(65536):  # until the waypoint lets go
            conn.receive_data(data)
            await stream.send_all(conn.data_to_send())


async def serve_h2_echo_app(pod: Pod, stream: trio.SocketStream) -> None:
    """Bidirectional streaming over HTTP/2: every DATA frame is echoed at once, the end of
    the request ends the response with grpc-status 0."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False,
                                                                header_encoding="utf-8"))
    conn.initiate_connection()
    pod.connections += 1
    await stream.send_all(conn.data_to_send())
    with contextlib.suppress(trio.BrokenResourceError, h2.exceptions.ProtocolError):
        while data := await stream.receive_some(65536):
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.RequestReceived):
                    pod.hits.append({"stream": ev.stream_id})
                    conn.send_headers(ev.stream_id, [(":status", "200"),
                                                     ("content-type", "application/grpc")])
                elif isinstance(ev, h2.events.DataReceived):
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    conn.send_data(ev.stream_id, ev.data)
                elif isinstance(ev, h2.events.StreamEnded):
                    conn.send_headers(ev.stream_id, [("grpc-status", "0")], end_stream=True)
            await stream.send_all(conn.data_to_send())


async def serve_tcp_echo(pod: Pod, stream: trio.SocketStream) -> None:
    with contextlib.suppress(trio.BrokenResourceError):
        while data := await stream.receive_some(65536):
            pod.hits.append({"bytes": len(data)})
            await stream.send_all(data)
        await stream.send_eof()


def workload_proto(pod: Pod, target_port: int) -> wl.Workload:
    return wl.Workload(
        uid=f"Kubernetes//Pod/{NS}/{pod.name}", name=pod.name, namespace=NS,
        addresses=[ipaddress.ip_address(pod.ip).packed],
        tunnel_protocol=wl.TunnelProtocol.HBONE, service_account=pod.service,
        workload_name=pod.name, canonical_name=pod.service, canonical_revision="v1",
        services={key(pod.service): wl.PortList(ports=[
            wl.Port(service_port=SERVICE_PORT, target_port=target_port)])})


def service_proto(name: str, target_port: int, protocol: int = 0) -> wl.Service:
    return wl.Service(
        name=name, namespace=NS, hostname=host(name),
        addresses=[wl.NetworkAddress(address=ipaddress.ip_address(VIPS[name]).packed)],
        ports=[wl.Port(service_port=SERVICE_PORT, target_port=target_port,
                       app_protocol=protocol)])  # type: ignore[arg-type]


def default_pods() -> list[Pod]:
    return [Pod("reviews-1", "reviews", "127.0.0.11"), Pod("reviews-2", "reviews", "127.0.0.12"),
            Pod("reviews-v2-1", "reviews-v2", "127.0.0.13"),
            Pod("grpc-1", "grpc", "127.0.0.14", kind="h2"),
            Pod("tcp-1", "tcp-echo", "127.0.0.15", kind="tcp")]


class Env:
    def __init__(self, pods: list[Pod]) -> None:
        self.pods = {p.name: p for p in pods}
        self.store = WaypointStore()
        self.target_port = 0
        self.hbone_port = 0
        self.waypoint_addr = ("127.0.0.1", 0)
        self.client: object = None
        self.proxy: object = None  # the WaypointProxy
        self.observers = Observers()

    def pod(self, name: str) -> Pod:
        return self.pods[name]

    def apply(self, type_url: str, items: dict[str, object], removed: Sequence[str] = ()) -> None:
        self.store.apply(type_url, [ResourceUpdate(n, bytes(m)) for n, m in items.items()],
                         removed)  # type: ignore[arg-type]

    def set_routes(self, service: str, *routes: pb.HttpRoute) -> None:
        self.apply(TYPE_ROUTE_CONFIGURATION, {key(service): pb.RouteConfiguration(
            name=key(service), waypoint=f"{NS}/waypoint", service_namespace=NS,
            service_name=service, hostname=host(service), routes=list(routes))})

    def set_policies(self, *policies: pb.L7Authorization) -> None:
        self.apply(TYPE_L7_AUTHORIZATION, {f"{p.namespace}/{p.name}": p for p in policies})

    @contextlib.asynccontextmanager
    async def tunnel(self, service: str, port: int = SERVICE_PORT,
                     creds: object = CLIENT) -> AsyncIterator[trio.abc.Stream]:
        t = await self.client.connect(  # type: ignore[attr-defined]
            self.waypoint_addr, f"{VIPS[service]}:{port}", creds, [WAYPOINT.identity],
            [("forwarded", 'for="10.1.2.3:40000"'),
             ("baggage", "k8s.namespace.name=shop,k8s.deployment.name=productpage,"
                         "service.name=productpage,service.version=v1")])
        try:
            yield t
        finally:
            await t.aclose()

    async def get(self, service: str, path: str = "/", headers: Sequence[tuple[str, str]] = (),
                  method: str = "GET", body: bytes = b"") -> Response:
        async with self.tunnel(service) as t:
            (resp,) = await clients.h1_exchange(
                t, [(method, path, host(service), headers, body)])
            return resp


async def _backend_connect(env: Env, request: ConnectRequest) -> ConnectOutcome:
    try:
        upstream = await trio.open_tcp_stream(request.host, request.port)
    except OSError as exc:
        return ConnectOutcome.unreachable(str(exc))
    return ConnectOutcome.accept(upstream)


@contextlib.asynccontextmanager
async def waypoint_env(pods: list[Pod] | None = None, *, seed: int = 7,
                       upstream: UpstreamConfig | None = None,
                       with_waypoint: bool = True,
                       limits: Limits | None = None) -> AsyncIterator[Env]:
    """Backends (always) and an in-process waypoint fed by `env.store` (unless
    `with_waypoint` is False: then the test brings its own waypoint)."""
    env = Env(pods if pods is not None else default_pods())
    pod_list = list(env.pods.values())
    async with trio.open_nursery() as nursery:
        # The app servers: the first binds port 0, the others reuse its port on their IP.
        for i, pod in enumerate(pod_list):
            serve = pod.app or {"h1": serve_h1_app, "h2": serve_h2_app, "tcp": serve_tcp_echo,
                                "sse": serve_sse_app, "h2stream": serve_h2_stream_app,
                                "h2echo": serve_h2_echo_app}[pod.kind]
            ls = await nursery.start(functools.partial(
                trio.serve_tcp, functools.partial(serve, pod), env.target_port, host=pod.ip))
            if i == 0:
                env.target_port = ls[0].socket.getsockname()[1]
        hbone_listeners = []
        creds = {}
        for pod in pod_list:
            ls = await trio.open_tcp_listeners(env.hbone_port, host=pod.ip)
            env.hbone_port = ls[0].socket.getsockname()[1]
            hbone_listeners += ls
            creds[pod.ip] = certs.cached(pod.service, NS)
        await nursery.start(serve_hbone, hbone_listeners, lambda local: creds[local[0]],
                            functools.partial(_backend_connect, env))
        if not with_waypoint:
            async with open_hbone_client() as client:
                env.client = client
                yield env
            nursery.cancel_scope.cancel()
            return
        # The mesh as the waypoint sees it.
        services = {"reviews": 0, "reviews-v2": 0, "grpc": 3, "tcp-echo": 4, "ghost": 0}
        items: dict[str, object] = {}
        for name, proto in services.items():
            items[key(name)] = wl.Address(service=service_proto(name, env.target_port, proto))
        for pod in pod_list:
            w = workload_proto(pod, env.target_port)
            items[w.uid] = wl.Address(workload=w)
        env.apply(TYPE_ADDRESS, items)
        wp_listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        env.waypoint_addr = ("127.0.0.1", wp_listeners[0].socket.getsockname()[1])

        async def creds_async() -> object:
            return WAYPOINT

        env.proxy = await nursery.start(functools.partial(
            serve_waypoint, wp_listeners, state=lambda: env.store.state,
            waypoint=f"{NS}/waypoint", identity=WAYPOINT.identity,
            credentials=creds_async, credentials_nowait=lambda: WAYPOINT,
            observers=env.observers, rng=random.Random(seed), limits=limits,
            upstream=upstream or UpstreamConfig(hbone_port=env.hbone_port,
                                                limits=limits or Limits())))
        async with open_hbone_client() as client:
            env.client = client
            yield env
        nursery.cancel_scope.cancel()


# ---- route / policy builders ---------------------------------------------------------------
def backend(name: str, weight: int = 1, **kw: object) -> pb.Backend:
    return pb.Backend(namespace=NS, name=name, hostname=host(name), port=SERVICE_PORT,
                      weight=weight, **kw)  # type: ignore[arg-type]


def prefix(path: str = "/", **kw: object) -> pb.RouteMatch:
    return pb.RouteMatch(path=pb.PathMatch(type=pb.PathMatchType.PATH_PREFIX, value=path),
                         **kw)  # type: ignore[arg-type]


def route(*rules: pb.RouteRule, name: str = "r") -> pb.HttpRoute:
    return pb.HttpRoute(namespace=NS, name=name, parent_kind=pb.ParentKind.SERVICE,
                        rules=list(rules))


def rule(*matches: pb.RouteMatch, backends: Sequence[pb.Backend] = (),
         filters: Sequence[pb.Filter] = (), **kw: object) -> pb.RouteRule:
    return pb.RouteRule(matches=list(matches) or [prefix()], backends=list(backends),
                        filters=list(filters), **kw)  # type: ignore[arg-type]


def millis(ms: int) -> pb.Duration:
    return pb.Duration(millis=ms)


Hook = Callable[[Env], None]
