"""Upstream side: endpoint choice (least request + outlier detection) and one HBONE attempt.

Who calls it: `waypoint.proxy.handler` per attempt (`choose`, then `attempt`, then `record`)
and for mirrors. What it hands to: an `UpstreamResponse` (head, streamed body), or an
`UpstreamError` (no response; `reset` is the retry reason, `flags` the Envoy response flag).

Endpoints come from the workload API (`meshcore.wds.select_endpoint`, which applies target
ports, health and locality); among them the outlier detector's ejected hosts are skipped
(unless all are ejected: Envoy's panic mode, traffic goes everywhere) and
`pick_least_request` chooses by the in-flight counts kept here. HBONE endpoints are reached
through the pooled `HboneClient` with the waypoint's own certificate: address
`<pod IP>:15008`, `:authority` `<pod IP>:<target port>`, expected identity the pod's
(AMBIENT-INTERNALS §2.7); `tunnel_protocol` NONE endpoints get plain TCP. Each attempt is
one exchange on a pooled HTTP connection (`waypoint.proxy.pool`: keep-alive HTTP/1.1 tunnels,
multiplexed HTTP/2 ones); TCP relays (`open_stream`) get a tunnel of their own.
State: `active` (in-flight per host) and one `OutlierDetector` per service, replaced on every
`record` (single trio thread, this object is the only writer).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import random
from collections.abc import Awaitable, Callable, Sequence

import trio

from meshcore.hbone_trio import (
    ConnectionLostError,
    HboneClient,
    HboneConnectError,
    HboneHandshakeError,
    HboneStatusError,
)
from meshcore.tlsconfig import WorkloadCredentials
from meshcore.wds import Endpoint, Service, Snapshot, TunnelProtocol, select_endpoint
from meshcore.wds.workload import AppProtocol
from meshcore.workload_identity.errors import CertificateUnavailableError
from waypoint.errors import UpstreamError
from waypoint.http import HttpRequest, Limits
from waypoint.proxy.body import BodyReader
from waypoint.proxy.pool import PoolConfig, UpstreamPool
from waypoint.proxy.response import UpstreamResponse
from waypoint.resilience import OutlierConfig, OutlierDetector, classify, pick_least_request

log = logging.getLogger("waypoint.upstream")
HBONE_PORT = 15008


def upstream_http2(service: Service, port: int, req: HttpRequest) -> bool:
    """HTTP/2 to the pods when the Service port says HTTP2/gRPC; HTTP/1.1 when it says
    HTTP/1.1; undeclared: HTTP/2 for gRPC requests (they need it), else HTTP/1.1 (what most
    apps speak; declare `appProtocol: http2` for h2c-only apps)."""
    p = service.port(port)
    if p is not None and p.app_protocol in (AppProtocol.HTTP2, AppProtocol.GRPC):
        return True
    if p is not None and p.app_protocol is AppProtocol.HTTP11:
        return False
    return req.is_grpc


def host_key(e: Endpoint) -> str:
    ip = str(e.ip)
    return f"[{ip}]:{e.port}" if ":" in ip else f"{ip}:{e.port}"


@dataclasses.dataclass(frozen=True)
class UpstreamConfig:
    hbone_port: int = HBONE_PORT
    connect_timeout: float = 10.0
    outlier: OutlierConfig = dataclasses.field(default_factory=OutlierConfig)
    limits: Limits = dataclasses.field(default_factory=Limits)
    pool: PoolConfig = dataclasses.field(default_factory=PoolConfig)


class Upstreams:
    def __init__(self, hbone: HboneClient,
                 credentials: Callable[[], Awaitable[WorkloadCredentials]],
                 config: UpstreamConfig | None = None,
                 rng: random.Random | None = None, *, pool: UpstreamPool) -> None:
        self.hbone = hbone
        self.credentials = credentials
        self.config = config or UpstreamConfig()
        self.pool = pool
        self.rng = rng or random.Random()
        self.active: dict[str, int] = {}
        self.detectors: dict[str, OutlierDetector] = {}

    # ---- choice -------------------------------------------------------------------------
    def choose(self, snapshot: Snapshot, service: Service, port: int,
               exclude: frozenset[str] = frozenset()) -> Endpoint | None:
        """An endpoint of `service` for service `port`, avoiding ejected and `exclude`d hosts
        (previous attempts of this request) when others exist."""
        detector = self._detector(service.key, trio.current_time())

        def pick(candidates: Sequence[Endpoint], _weights: Sequence[int]) -> Endpoint:
            keys = [host_key(c) for c in candidates]
            ok = set(detector.available(keys)) - exclude
            usable = [c for c, k in zip(candidates, keys, strict=True) if k in ok]
            if not usable:  # everything ejected or tried: Envoy's panic mode
                usable = [c for c, k in zip(candidates, keys, strict=True)
                          if k not in exclude] or list(candidates)
            chosen = pick_least_request(usable, lambda e: self.active.get(host_key(e), 0),
                                        self.rng)
            assert chosen is not None
            return chosen

        return select_endpoint(snapshot, service, port, choose=pick)

    def _detector(self, service_key: str, now: float) -> OutlierDetector:
        d = self.detectors.get(service_key)
        if d is None:
            d = self.detectors[service_key] = OutlierDetector(self.config.outlier)
        elif d.ejected():
            d = self.detectors[service_key] = d.tick(now)
        return d

    def record(self, service_key: str, host: str, status: int | None, total_hosts: int) -> None:
        """Feed the outcome of one attempt (status None: no response) to outlier detection."""
        now = trio.current_time()
        d = self._detector(service_key, now)
        self.detectors[service_key] = d.record(host, classify(status), now, total_hosts)

    def ejected(self, service_key: str) -> frozenset[str]:
        d = self.detectors.get(service_key)
        return d.ejected() if d is not None else frozenset()

    # ---- one attempt --------------------------------------------------------------------
    async def attempt(self, endpoint: Endpoint, request: HttpRequest, http2: bool = False,
                      body: Callable[[], BodyReader] | None = None) -> UpstreamResponse:
        """Send `request` to `endpoint` once, over HTTP/2 if `http2`, else HTTP/1.1, on a
        pooled connection (`waypoint.proxy.pool`); the response once its head arrived (the
        caller reads its body or closes it). In-flight counts cover the head only."""
        key = host_key(endpoint)
        self.active[key] = self.active.get(key, 0) + 1
        try:
            pool_key = (key, "h2" if http2 else "h1", endpoint.workload.identity.uri)
            return await self.pool.exchange(
                pool_key, functools.partial(self.open_stream, endpoint, key), request, body)
        finally:
            self.active[key] -= 1
            if not self.active[key]:
                del self.active[key]

    async def open_stream(self, endpoint: Endpoint, key: str) -> trio.abc.Stream:
        """A byte stream to `endpoint`: an HBONE tunnel, or TCP for non-mesh pods."""
        w = endpoint.workload
        try:
            with trio.fail_after(self.config.connect_timeout):
                if w.tunnel_protocol is TunnelProtocol.HBONE:
                    creds = await self.credentials()
                    return await self.hbone.connect(
                        (str(endpoint.ip), self.config.hbone_port), key, creds, [w.identity])
                return await trio.open_tcp_stream(str(endpoint.ip), endpoint.port)
        except (HboneConnectError, HboneHandshakeError, HboneStatusError, OSError,
                trio.TooSlowError, ConnectionLostError, CertificateUnavailableError) as exc:
            raise UpstreamError(f"cannot reach {w.namespace}/{w.name} at {key}: {exc}",
                                reset="connect-failure", flags="UF", upstream=key) from exc

    def statistics(self) -> dict[str, object]:
        return {"active": dict(self.active),
                "ejected": {k: sorted(d.ejected()) for k, d in self.detectors.items()
                            if d.ejected()},
                "pool": dataclasses.asdict(self.hbone.statistics()),
                "http_pool": self.pool.statistics()}


