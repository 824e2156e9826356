"""The ztunnel process: config from istiod (xDS), certificates from the CA, pods from the node
agent (ZDS), and the per-pod L4 proxies; plus admin, metrics and readiness endpoints.

Called by `ztunnel.__main__`. Structure (one trio nursery, everything owned by it):

- the asyncio bridge (`meshcore.grpc_bridge`) hosts the grpclib clients (xDS, CA);
- `ConfigClient` keeps the latest workload-API snapshot; the data path reads it per connection
  and keeps serving the last good one when istiod is unreachable;
- `CertificateManager` fetches and renews one certificate per identity served on this node;
- the in-pod workload manager (when a ZDS socket is configured) receives pods and their network
  namespaces from the node agent and starts a proxy per pod;
- admin (15000, localhost), metrics (15020) and readiness (15021) endpoints.

Readiness (`/healthz/ready`) turns green once the first xDS snapshot is applied and, with ZDS,
the agent's first snapshot of pods has been processed (AMBIENT-INTERNALS §1).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from typing import Any

import trio

from meshcore.admin import serve_admin
from meshcore.admin.jsonable import to_jsonable
from meshcore.grpc_bridge import AsyncioBridge, open_asyncio_bridge
from meshcore.kube import KubeClient
from meshcore.protos.envoy.config.core.v3 import Node
from meshcore.telemetry import Tracing, TracingConfig
from meshcore.telemetry.access_log import AccessLog
from meshcore.telemetry.metrics import MeshMetrics
from meshcore.workload_identity.ca_client import CaClient, CaClientConfig
from meshcore.workload_identity.manager import CertificateManager
from meshcore.xds.client import tcp_channel
from ztunnel.admin import AdminView, admin_routes, metrics_routes, readiness_routes
from ztunnel.config import ZtunnelConfig
from ztunnel.config_client import ConfigClient
from ztunnel.inpod.netns import NetnsSocketFactory
from ztunnel.inpod.workload_manager import WorkloadManager, WorkloadManagerConfig
from ztunnel.proxy.context import ProxyContext, ProxySettings
from ztunnel.proxy.pod_proxy import pod_proxy_factory
from ztunnel.sync_report import report_when_synced

log = logging.getLogger("ztunnel")


def _istiod_tls(config: ZtunnelConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(config.root_cert))
    context.set_alpn_protocols(["h2"])
    return context


def _token_reader(config: ZtunnelConfig) -> Callable[[], str]:
    # Re-read on every (re)connect: projected service-account tokens rotate.
    return lambda: config.token_file.read_text().strip()


class Ztunnel:
    """The running parts of one ztunnel, for the admin view and for tests."""

    def __init__(self, config: ZtunnelConfig, bridge: AsyncioBridge) -> None:
        self.config = config
        self.bridge = bridge
        host, port = config.xds_address
        self.config_client = ConfigClient(
            tcp_channel(host, port, ssl=_istiod_tls(config), server_name=config.istiod_server_name),
            node=Node(id=config.xds_node_id),
            token_provider=_token_reader(config),
            metadata={"clusterid": config.cluster_id},
        )
        ca_host, ca_port = config.ca_address
        self.ca_client = CaClient(
            CaClientConfig(
                root_cert_path=config.root_cert, token_path=config.token_file, host=ca_host,
                port=ca_port, server_name=config.istiod_server_name,
                cluster_id=config.cluster_id,
            ),
            bridge,
        )
        self.certificates = CertificateManager(self.ca_client.fetch_certificate)
        self.metrics = MeshMetrics("ztunnel")
        self.netns_sockets = NetnsSocketFactory()
        self.pod_source: WorkloadManager | None = None
        # Off unless OTEL_* configures an exporter (docs/observability.md).
        self.tracing = Tracing(TracingConfig.from_env("ztunnel"))
        if config.zds_socket is not None:
            context = ProxyContext(
                config=self.config_client, certificates=self.certificates,
                metrics=self.metrics.tcp, access_log=AccessLog(config.access_log_format),
                settings=ProxySettings(trust_domain=config.trust_domain),
                tracing=self.tracing,
            )
            self.pod_source = WorkloadManager(
                pod_proxy_factory(context), self.netns_sockets,
                WorkloadManagerConfig(socket_path=str(config.zds_socket)),
            )
            self.metrics.watch_workload_manager(self.pod_source.statistics)
        self.admin_port = self.metrics_port = self.readiness_port = 0  # bound ports

    def ready(self) -> tuple[bool, str]:
        if not self.config_client.current().synced_types:
            return False, "waiting for the first configuration from istiod (xDS)"
        if self.pod_source is not None and not self.pod_source.ready:
            return False, "waiting for the node agent's snapshot of pods (ZDS)"
        return True, ""

    def certificate_dump(self) -> list[dict[str, Any]]:
        out = []
        for identity in sorted(self.certificates.identities()):
            creds = self.certificates.credentials_nowait(identity)
            out.append({
                "identity": identity.uri,
                "state": "valid" if creds is not None else "pending",
                "expiry": creds.not_after.isoformat() if creds is not None else None,
            })
        return out

    def xds_dump(self) -> dict[str, Any]:
        host, port = self.config.xds_address
        return {"address": f"{host}:{port}",
                "statistics": to_jsonable(self.config_client.statistics())}

    def pods_dump(self) -> list[dict[str, Any]]:
        if self.pod_source is None:
            return []
        return [{"uid": uid, **to_jsonable(state)}
                for uid, state in sorted(self.pod_source.pods().items())]

    def admin_view(self) -> AdminView:
        return AdminView(
            node=self.config.node_name,
            snapshot=self.config_client.current,
            certificates=self.certificate_dump,
            xds=self.xds_dump,
            pods=self.pods_dump,
            ready=self.ready,
            metrics_text=self.metrics.render,
        )


async def run(
    config: ZtunnelConfig,
    *,
    task_status: trio.TaskStatus[Ztunnel] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ztunnel until cancelled; `task_status.started(ztunnel)` once endpoints listen."""
    async with open_asyncio_bridge() as bridge, trio.open_nursery() as nursery:
        zt = Ztunnel(config, bridge)
        await nursery.start(zt.config_client.run, bridge)
        await nursery.start(zt.certificates.run)
        if zt.pod_source is not None:
            await nursery.start(zt.pod_source.run)
            if config.report_zds_sync:
                pods = zt.pod_source
                nursery.start_soon(
                    report_when_synced, bridge, lambda: KubeClient(user_agent="ztunnel"),
                    config.pod_namespace, config.pod_name, pods.wait_ready,
                    lambda: len(pods.pods()),
                )
        view = zt.admin_view()
        zt.admin_port = await nursery.start(serve_admin, admin_routes(view), *config.admin_address)
        zt.metrics_port = await nursery.start(
            serve_admin, metrics_routes(view), *config.metrics_address)
        zt.readiness_port = await nursery.start(
            serve_admin, readiness_routes(view), *config.readiness_address)
        log.info("ztunnel on node %s: xDS/CA at %s:%d, admin on %s:%d",
                 config.node_name, *config.xds_address, config.admin_address[0], zt.admin_port)
        task_status.started(zt)
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await zt.ca_client.aclose()
            zt.netns_sockets.close()
            zt.metrics.shutdown()
            zt.tracing.shutdown()
