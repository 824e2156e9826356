"""The waypoint process: config from istiod (xDS), its certificate from the CA, the HBONE proxy,
admin/metrics/readiness endpoints. One trio nursery owns everything.

Called by `waypoint.__main__` (and tests). Structure (mirrors `ztunnel.app`):
- the asyncio bridge hosts the grpclib clients (xDS, CA);
- `WaypointConfigClient` keeps the latest `WaypointState` (Address, Authorization,
  RouteConfiguration, L7Authorization); the proxy reads it per tunnel and request and keeps
  serving the last good one while istiod is away;
- `CertificateManager` fetches and renews the waypoint's own certificate (its own identity
  only: the CA's workload-caller path, no impersonation);
- `serve_waypoint` listens on 15008; admin 15000 (localhost), metrics 15020, readiness 15021.
Readiness (`/healthz/ready`) turns green once every subscribed type arrived and the
certificate is present. The HBONE listener starts at once; handshakes before the certificate
arrives are refused (no credentials), as Envoy's listener would not be up yet either.
"""

from __future__ import annotations

import functools
import logging
import ssl
from typing import Any

import trio

from meshcore.admin import serve_admin
from meshcore.admin.jsonable import to_jsonable
from meshcore.grpc_bridge import AsyncioBridge, open_asyncio_bridge
from meshcore.protos.envoy.config.core.v3 import Node
from meshcore.telemetry import AccessLog, MeshMetrics, Tracing, TracingConfig
from meshcore.tlsconfig import WorkloadCredentials
from meshcore.workload_identity.ca_client import CaClient, CaClientConfig
from meshcore.workload_identity.manager import CertificateManager
from meshcore.xds.client import tcp_channel
from waypoint.admin import AdminView, admin_routes, metrics_routes, readiness_routes
from waypoint.config import WaypointConfig
from waypoint.config_client import WaypointConfigClient
from waypoint.proxy.handler import Observers
from waypoint.proxy.listener import WaypointProxy
from waypoint.proxy.server import serve_waypoint
from waypoint.proxy.upstream import UpstreamConfig

log = logging.getLogger("waypoint")


def _istiod_tls(config: WaypointConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(config.root_cert))
    context.set_alpn_protocols(["h2"])
    return context


class Waypoint:
    """The running parts of one waypoint, for the admin view and for tests."""

    def __init__(self, config: WaypointConfig, bridge: AsyncioBridge) -> None:
        self.config = config
        host, port = config.xds_address
        self.config_client = WaypointConfigClient(
            tcp_channel(host, port, ssl=_istiod_tls(config),
                        server_name=config.istiod_server_name),
            node=Node(id=config.xds_node_id),
            token_provider=lambda: config.token_file.read_text().strip(),
            metadata={"clusterid": config.cluster_id},
        )
        ca_host, ca_port = config.ca_address
        self.ca_client = CaClient(CaClientConfig(
            root_cert_path=config.root_cert, token_path=config.token_file, host=ca_host,
            port=ca_port, server_name=config.istiod_server_name, cluster_id=config.cluster_id,
        ), bridge)
        self.certificates = CertificateManager(self.ca_client.fetch_certificate)
        self.observers = Observers(MeshMetrics("waypoint"), AccessLog(config.access_log_format),
                                   Tracing(TracingConfig.from_env("waypoint")))
        self.proxy: WaypointProxy | None = None
        self.hbone_port = self.admin_port = self.metrics_port = self.readiness_port = 0

    def credentials_nowait(self) -> WorkloadCredentials | None:
        return self.certificates.credentials_nowait(self.config.identity)

    async def credentials(self) -> WorkloadCredentials:
        return await self.certificates.wait_credentials(self.config.identity)

    def ready(self) -> tuple[bool, str]:
        if not self.config_client.synced:
            return False, "waiting for the first configuration from istiod (xDS)"
        if self.credentials_nowait() is None:
            return False, f"waiting for the certificate of {self.config.identity}"
        return True, ""

    def certificate_dump(self) -> dict[str, Any]:
        creds = self.credentials_nowait()
        return {"identity": self.config.identity.uri,
                "state": "valid" if creds is not None else "pending",
                "expiry": creds.not_after.isoformat() if creds is not None else None}

    def admin_view(self) -> AdminView:
        host, port = self.config.xds_address
        return AdminView(
            waypoint=self.config.gateway, identity=self.config.identity.uri,
            state=self.config_client.current, certificate=self.certificate_dump,
            xds=lambda: {"address": f"{host}:{port}",
                         "statistics": to_jsonable(self.config_client.statistics())},
            upstreams=lambda: (to_jsonable(self.proxy.downstream.handler.upstreams.statistics())
                               if self.proxy is not None else {}),
            ready=self.ready, metrics_text=self.observers.metrics.render)


async def run(config: WaypointConfig, *,
              task_status: trio.TaskStatus[Waypoint] = trio.TASK_STATUS_IGNORED) -> None:
    """Run the waypoint until cancelled; `started(waypoint)` once every endpoint listens."""
    async with open_asyncio_bridge() as bridge, trio.open_nursery() as nursery:
        wp = Waypoint(config, bridge)
        await nursery.start(wp.config_client.run, bridge)
        await nursery.start(wp.certificates.run)
        wp.certificates.prefetch(config.identity)
        listeners = await trio.open_tcp_listeners(config.listen[1], host=config.listen[0])
        wp.hbone_port = listeners[0].socket.getsockname()[1]
        wp.proxy = await nursery.start(functools.partial(
            serve_waypoint, listeners, state=wp.config_client.current, waypoint=config.gateway,
            identity=config.identity, credentials=wp.credentials,
            credentials_nowait=wp.credentials_nowait, observers=wp.observers,
            upstream=UpstreamConfig(hbone_port=config.upstream_hbone_port,
                                    limits=config.limits),
            limits=config.limits))
        view = wp.admin_view()
        wp.admin_port = await nursery.start(serve_admin, admin_routes(view),
                                            *config.admin_address)
        wp.metrics_port = await nursery.start(serve_admin, metrics_routes(view),
                                              *config.metrics_address)
        wp.readiness_port = await nursery.start(serve_admin, readiness_routes(view),
                                                *config.readiness_address)
        log.info("waypoint %s (%s) on %s:%d; xDS/CA at %s:%d", config.gateway,
                 config.identity, config.listen[0], wp.hbone_port, *config.xds_address)
        task_status.started(wp)
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await wp.ca_client.aclose()
            wp.observers.tracing.shutdown()
