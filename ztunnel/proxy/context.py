"""What the per-pod handlers share: the node-wide `ProxyContext` and the per-pod `PodContext`.

Who builds it: ztunnel's main builds one `ProxyContext` (config feed, certificate manager, TLS
context cache, metrics, access log, settings) and hands `pod_proxy.pod_proxy_factory(ctx)` to the
workload manager; each `PodProxy` makes one `PodContext` (the pod, its netns, its HBONE pool,
its tracked inbound connections). The handlers (`outbound`, `inbound`, `inbound_plaintext`) read
both; nothing here does I/O except `wait_local_workload` (waits on the config feed).

Invariants: the context never changes after construction (settings are frozen); the config feed
hands out immutable snapshots, read once per connection; `local_workload` is memoised per
snapshot object, so a lookup is a dict hit except right after an update.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Protocol

import trio

from meshcore import tlsconfig
from meshcore.hbone_trio import ClientConfig, HboneClient, ServerConfig
from meshcore.identity import SpiffeId
from meshcore.telemetry import AccessLog, TcpRecorder, Tracing, TracingConfig
from meshcore.wds import Snapshot, Workload
from ztunnel.inpod.pod import PodInfo, PodNetns
from ztunnel.proxy.errors import SourceWorkloadUnknownError

log = logging.getLogger(__name__)

OUTBOUND_PORT = 15001
INBOUND_PLAINTEXT_PORT = 15006
INBOUND_HBONE_PORT = 15008
ILLEGAL_PORTS = frozenset({OUTBOUND_PORT, INBOUND_PLAINTEXT_PORT, INBOUND_HBONE_PORT})


class SnapshotSource(Protocol):
    """The config feed (`ztunnel.config_client.ConfigClient` has this shape)."""

    def current(self) -> Snapshot: ...

    async def wait_for(self, predicate: Callable[[Snapshot], bool]) -> Snapshot: ...


class CredentialSource(Protocol):
    """The certificate manager (`meshcore.workload_identity.manager.CertificateManager`)."""

    async def wait_credentials(self, identity: SpiffeId) -> tlsconfig.WorkloadCredentials: ...

    def prefetch(self, identity: SpiffeId) -> None:
        """Start fetching `identity`'s certificate now (a pod with it was added)."""

    def forget(self, identity: SpiffeId) -> None:
        """Stop keeping `identity`'s certificate (no local pod runs as it any more)."""


class IdentityUsers:
    """How many local pod proxies run as each identity, so the last one to stop can drop the
    certificate (ztunnel forgets identities no local workload uses; AMBIENT-INTERNALS §3.5).
    Touched only from the trio thread."""

    def __init__(self) -> None:
        self._counts: dict[SpiffeId, int] = {}

    def acquire(self, identity: SpiffeId) -> bool:
        """Count one more user; True if it is the first."""
        self._counts[identity] = self._counts.get(identity, 0) + 1
        return self._counts[identity] == 1

    def release(self, identity: SpiffeId) -> bool:
        """Count one user less; True if it was the last."""
        left = self._counts.get(identity, 0) - 1
        if left > 0:
            self._counts[identity] = left
            return False
        self._counts.pop(identity, None)
        return True


@dataclasses.dataclass(frozen=True)
class ProxySettings:
    """Timeouts and limits of the data path (ztunnel's defaults)."""

    connect_timeout: float = 10.0  # TCP connect to an app or a passthrough destination
    local_workload_wait: float = 5.0  # ztunnel waits this long for its pod to appear in xDS
    credentials_timeout: float = 10.0
    idle_timeout: float | None = None  # relay idle timeout; None = none (ztunnel has none)
    illegal_ports: frozenset[int] = ILLEGAL_PORTS
    hbone_client: ClientConfig = dataclasses.field(default_factory=ClientConfig)
    hbone_server: ServerConfig = dataclasses.field(default_factory=ServerConfig)
    trust_domain: str = "cluster.local"


@dataclasses.dataclass(frozen=True)
class ProxyContext:
    """Node-wide dependencies of every pod proxy."""

    config: SnapshotSource
    certificates: CredentialSource
    settings: ProxySettings = dataclasses.field(default_factory=ProxySettings)
    tls_contexts: tlsconfig.TlsContextCache = dataclasses.field(
        default_factory=tlsconfig.TlsContextCache
    )
    metrics: TcpRecorder | None = None
    access_log: AccessLog = dataclasses.field(default_factory=AccessLog)
    identity_users: IdentityUsers = dataclasses.field(default_factory=IdentityUsers)
    # A span per tunnelled connection when tracing is configured (Istio's ztunnel has none).
    tracing: Tracing = dataclasses.field(default_factory=lambda: Tracing(TracingConfig()))


def find_local_workload(snapshot: Snapshot, pod: PodInfo) -> Workload | None:
    """The Workload the control plane publishes for `pod` (same namespace and name; the
    service account must match when ZDS gave one). Pure; O(workloads)."""
    for workload in snapshot.workloads.values():
        if workload.namespace != pod.namespace or workload.name != pod.name:
            continue
        if pod.service_account and workload.identity.service_account != pod.service_account:
            continue
        return workload
    return None


class PodContext:
    """One pod's view: who it is, where its sockets are made, its pool and its connections."""

    def __init__(self, ctx: ProxyContext, pod: PodInfo, netns: PodNetns) -> None:
        self.ctx = ctx
        self.pod = pod
        self.netns = netns
        self.client: HboneClient | None = None  # set by PodProxy.serve while serving
        self._memo: tuple[Snapshot, Workload | None] | None = None

    @property
    def settings(self) -> ProxySettings:
        return self.ctx.settings

    def local_workload(self, snapshot: Snapshot | None = None) -> Workload | None:
        """This pod's Workload in `snapshot` (default: the current one), or None."""
        snap = snapshot if snapshot is not None else self.ctx.config.current()
        memo = self._memo
        if memo is not None and memo[0] is snap:
            return memo[1]
        found = find_local_workload(snap, self.pod)
        self._memo = (snap, found)
        return found

    async def wait_local_workload(self) -> Workload:
        """This pod's Workload, waiting up to `local_workload_wait` for it to appear."""
        found = self.local_workload()
        if found is not None:
            return found
        with trio.move_on_after(self.settings.local_workload_wait):
            snap = await self.ctx.config.wait_for(lambda s: self.local_workload(s) is not None)
            found = self.local_workload(snap)
        if found is None:
            raise SourceWorkloadUnknownError(
                f"pod {self.pod.display} is not in the workload state after"
                f" {self.settings.local_workload_wait:g}s; is it enrolled and is istiod reachable?"
            )
        return found

    def identity(self) -> SpiffeId:
        """The pod's SPIFFE identity: from its Workload if known, else from the ZDS info."""
        workload = self.local_workload()
        if workload is not None:
            return workload.identity
        return SpiffeId.for_workload(
            self.pod.namespace, self.pod.service_account, self.settings.trust_domain
        )
