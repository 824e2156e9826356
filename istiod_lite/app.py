"""The istiod-lite process: config source → model → workload API → Delta xDS, plus the CA.

Called by `istiod_lite.__main__`. One asyncio program:

- a config source (the manifest folder today; Kubernetes via kopf when `--kubernetes`) yields
  immutable `ConfigSnapshot`s;
- each snapshot is translated (`istiod_lite.translate.IncrementalTranslator`: only objects whose
  inputs changed are re-translated, the rest keep their message objects) and handed to the
  `XdsServer` as the full desired state per type URL (the server diffs, versions and pushes
  deltas, debounced; reused message objects are not serialized again);
- the same snapshot feeds the CA's node rule: a ztunnel may obtain an identity only if a
  non-terminal pod with that namespace and service account is scheduled on its node;
- CA and xDS share one TLS gRPC port (15012), as in istiod;
- a source that writes route status (`RouteStatusSink`: the Kubernetes source) gets the
  HTTPRoute statuses of each snapshot (`RouteStatusFeed`, after the xDS update).

Invariant: a snapshot that fails to translate never reaches the server; the last good state keeps
being served (translation reports per-object problems as status messages, it does not raise
for user input).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from istiod_lite.ca.authority import CertificateAuthority
from istiod_lite.ca.authz import StaticTokenTable, TokenAuthenticator
from istiod_lite.ca.roots import load_or_create_root, load_root_files
from istiod_lite.ca.server import RunningCa, serve_grpc
from istiod_lite.ca.service import CertificateService
from istiod_lite.config import ManifestFolderSource
from istiod_lite.config.kube.route_status import RouteStatusFeed
from istiod_lite.config.source import ConfigSnapshot, ConfigSource, RouteStatusSink
from istiod_lite.errors import CaConfigError
from istiod_lite.readiness import serve_readiness
from istiod_lite.tokens import load_token_table
from istiod_lite.translate import IncrementalTranslator, MeshConfig
from istiod_lite.translate.route_status import route_statuses
from istiod_lite.xds import XdsServer
from meshcore.identity import SpiffeId
from meshcore.model import ClusterModel

log = logging.getLogger("istiod_lite")


@dataclasses.dataclass(frozen=True)
class IstiodConfig:
    manifests: Path | None
    ca_dir: Path | None
    tokens_file: Path | None = None
    host: str = "0.0.0.0"
    port: int = 15012
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    dns_names: Sequence[str] = ()
    ip_addresses: Sequence[str] = ()
    root_cert_out: Path | None = None
    # A root provided from outside (a mounted Secret) instead of one kept in ca_dir.
    ca_cert: Path | None = None
    ca_key: Path | None = None
    ready_address: tuple[str, int] | None = None


class ModelPlacement:
    """The CA's node rule over the latest model snapshot (`NodeServes`)."""

    def __init__(self) -> None:
        self.model: ClusterModel | None = None

    def __call__(self, node: str, identity: SpiffeId) -> bool:
        model = self.model
        if model is None:
            return False
        return any(
            pod.namespace == identity.namespace
            and pod.service_account == identity.service_account
            and not pod.terminal
            for pod in model.pods_on_node(node)
        )


@dataclasses.dataclass
class RunningIstiod:
    grpc: RunningCa
    xds: XdsServer
    ca: CertificateService
    placement: ModelPlacement
    translator: IncrementalTranslator = dataclasses.field(default_factory=IncrementalTranslator)


def _authenticator(config: IstiodConfig) -> TokenAuthenticator:
    if config.tokens_file is None:
        log.warning("no --tokens file: every certificate request will be refused (UNAUTHENTICATED)")
        return StaticTokenTable({})
    return load_token_table(config.tokens_file)


def apply_snapshot(running: RunningIstiod, snapshot: ConfigSnapshot, mesh: MeshConfig) -> None:
    """Make the xDS server and the CA's node rule reflect `snapshot`.

    Translation is incremental (`running.translator` keeps the previous result), so a snapshot
    costs in proportion to what changed, plus one cheap pass over the model."""
    resources = running.translator.translate(snapshot.model, mesh)
    for status in resources.statuses:
        log.warning("%s", status)
    running.xds.set_all_resources(resources.by_type_url)
    running.placement.model = snapshot.model


async def run(
    config: IstiodConfig,
    *,
    source: ConfigSource | None = None,
    on_ready: Callable[[RunningIstiod], None] | None = None,
    authenticator: TokenAuthenticator | None = None,
) -> None:
    """Serve until cancelled. `on_ready` is called once the first snapshot is being served."""
    if config.ca_cert is not None and config.ca_key is not None:
        root = load_root_files(config.ca_cert, config.ca_key)
    elif config.ca_dir is not None:
        root = load_or_create_root(config.ca_dir, trust_domain=config.mesh.trust_domain)
    else:
        raise CaConfigError("istiod-lite needs a CA root: --ca-dir DIR or --ca-cert/--ca-key")
    authority = CertificateAuthority(root, trust_domain=config.mesh.trust_domain)
    if config.root_cert_out is not None:
        config.root_cert_out.parent.mkdir(parents=True, exist_ok=True)
        config.root_cert_out.write_text(authority.root_pem)
    if source is None:
        if config.manifests is None:
            raise ValueError("istiod-lite needs a config source: --manifests DIR")
        source = ManifestFolderSource(config.manifests)
    placement = ModelPlacement()
    ca = CertificateService(
        authority, authenticator if authenticator is not None else _authenticator(config),
        placement)
    xds = XdsServer()
    grpc = await serve_grpc(
        [ca, xds], authority, host=config.host, port=config.port,
        dns_names=config.dns_names, ip_addresses=config.ip_addresses,
    )
    running = RunningIstiod(grpc, xds, ca, placement)
    served_once = False
    readiness = None
    if config.ready_address is not None:
        readiness = await serve_readiness(*config.ready_address, lambda: served_once)
    log.info("istiod-lite serving xDS and CA on %s:%d (trust domain %s)",
             config.host, grpc.port, config.mesh.trust_domain)
    route_feed = RouteStatusFeed(source, route_statuses) \
        if isinstance(source, RouteStatusSink) else None
    try:
        first = True
        async for snapshot in source.watch():
            apply_snapshot(running, snapshot, config.mesh)
            if route_feed is not None:
                route_feed(snapshot.model, config.mesh)
            if first:
                first = False
                served_once = True
                model = snapshot.model
                log.info("first config snapshot served: %d pods, %d services, %d policies",
                         len(model.of_kind("Pod")), len(model.of_kind("Service")),
                         len(model.of_kind("AuthorizationPolicy")))
                if on_ready is not None:
                    on_ready(running)
    finally:
        if readiness is not None:
            readiness.close()
        xds.close()
        grpc.close()
        await asyncio.shield(grpc.wait_closed())
