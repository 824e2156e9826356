"""The CA client: one CreateCertificate call per CSR, over grpclib on the asyncio bridge.

Who calls it: `CertificateManager` (trio) through `CaClient.fetch_certificate(identity, csr)`,
which matches the manager's injectable `CaCall`. The gRPC call itself is asyncio (grpclib) and
runs on the loop thread of `meshcore.grpc_bridge` via `bridge.call`; this is the one module of
the identity package that touches asyncio-only code, and only in `_CaChannel`, whose methods
run on the loop thread (the trio side never touches the channel).

Per call (as ztunnel, AMBIENT-INTERNALS §3.3): the bearer token is re-read from its file (it is
a projected token that the kubelet rotates); metadata `authorization: Bearer <token>` and
`clusterid`; `ImpersonatedIdentity = <identity>` in the request's Struct when acting for pods
(`impersonate=True`, ztunnel's shared mode); `validity_duration` as configured. The channel (TLS
to the CA, trusting the root file, verifying `server_name`) is opened on first use and reused.

Hands back the chain (leaf first, root last) after checking the leaf's identity is the one
asked for. Errors, all carrying the identity: `CertificateRefusedError` (the CA said no:
INVALID_ARGUMENT / UNAUTHENTICATED / PERMISSION_DENIED), `CaUnavailableError` (network, TLS,
timeouts, other statuses), `CaResponseError` (a wrong answer), `WorkloadIdentityConfigError`
(token or root file unreadable).
"""

from __future__ import annotations

import dataclasses
import ssl
from pathlib import Path

import trio
from betterproto.lib.google.protobuf import Struct, Value
from grpclib import GRPCError
from grpclib.client import Channel
from grpclib.config import Configuration
from grpclib.const import Status
from grpclib.exceptions import StreamTerminatedError

from meshcore import pki
from meshcore.grpc_bridge import AsyncioBridge
from meshcore.identity import SpiffeId
from meshcore.protos.istio.v1.auth import IstioCertificateRequest, IstioCertificateServiceStub
from meshcore.workload_identity.errors import (
    CaResponseError,
    CaUnavailableError,
    CertificateRefusedError,
    WorkloadIdentityConfigError,
)

DEFAULT_CA_PORT = 15012
CA_SERVER_NAME = "istiod.istio-system.svc"
IMPERSONATED_IDENTITY = "ImpersonatedIdentity"
_REFUSALS = {Status.INVALID_ARGUMENT, Status.UNAUTHENTICATED, Status.PERMISSION_DENIED}


@dataclasses.dataclass(frozen=True)
class CaClientConfig:
    """Where the CA is and how we authenticate to it."""

    root_cert_path: Path
    token_path: Path
    host: str = "localhost"
    port: int = DEFAULT_CA_PORT
    server_name: str = CA_SERVER_NAME
    cluster_id: str = "Kubernetes"
    validity_seconds: int = 86400
    impersonate: bool = True
    timeout: float = 10.0


class CaClient:
    """Trio-facing CA client; the grpclib channel lives on the bridge's asyncio thread."""

    def __init__(self, config: CaClientConfig, bridge: AsyncioBridge) -> None:
        self._config = config
        self._bridge = bridge
        self._channel: _CaChannel | None = None

    async def fetch_certificate(self, identity: SpiffeId, csr_pem: bytes) -> list[str]:
        """Ask the CA to sign `csr_pem` for `identity`; return the chain, leaf first."""
        token = await _read_text(self._config.token_path, "CA token")
        if self._channel is None:
            root_pem = await _read_text(self._config.root_cert_path, "CA root certificate")
            if self._channel is None:  # a concurrent call may have opened it meanwhile
                context = _client_ssl_context(root_pem, self._config)
                self._channel = _CaChannel(self._config, context)
        chain = await self._bridge.call(
            self._channel.create_certificate, identity, csr_pem.decode("ascii"), token.strip()
        )
        _check_leaf(identity, chain)
        return chain

    async def aclose(self) -> None:
        """Close the channel (on the loop thread)."""
        if self._channel is not None:
            channel, self._channel = self._channel, None
            await self._bridge.call(channel.close)


class _CaChannel:
    """The asyncio side: owns the grpclib Channel; every method runs on the loop thread."""

    def __init__(self, config: CaClientConfig, context: ssl.SSLContext) -> None:
        self._config = config
        self._context = context
        self._channel: Channel | None = None

    async def create_certificate(self, identity: SpiffeId, csr: str, token: str) -> list[str]:
        config = self._config
        if self._channel is None:
            self._channel = Channel(
                config.host,
                config.port,
                ssl=self._context,
                config=Configuration(ssl_target_name_override=config.server_name),
            )
        request = IstioCertificateRequest(csr=csr, validity_duration=config.validity_seconds)
        if config.impersonate:
            request.metadata = Struct(
                fields={IMPERSONATED_IDENTITY: Value(string_value=identity.uri)}
            )
        metadata = {"authorization": f"Bearer {token}", "clusterid": config.cluster_id}
        stub = IstioCertificateServiceStub(self._channel)
        try:
            response = await stub.create_certificate(
                request, timeout=config.timeout, metadata=metadata
            )
        except GRPCError as exc:
            if exc.status in _REFUSALS:
                raise CertificateRefusedError(identity, exc.status.name, exc.message or "") from exc
            raise CaUnavailableError(
                identity, f"CA at {self._where()} failed: {exc.status.name} {exc.message}"
            ) from exc
        except (OSError, StreamTerminatedError) as exc:  # includes ssl.SSLError, TimeoutError
            raise CaUnavailableError(
                identity, f"CA at {self._where()} unreachable: {type(exc).__name__}: {exc}"
            ) from exc
        return list(response.cert_chain)

    async def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def _where(self) -> str:
        return f"{self._config.host}:{self._config.port}"


def _client_ssl_context(root_pem: str, config: CaClientConfig) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=root_pem)
    except (ssl.SSLError, ValueError) as exc:
        raise WorkloadIdentityConfigError(
            f"CA root certificate {config.root_cert_path} is not usable PEM: {exc}"
        ) from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["h2"])
    return context


def _check_leaf(identity: SpiffeId, chain: list[str]) -> None:
    if len(chain) < 2:
        raise CaResponseError(
            identity, f"CA returned a chain of {len(chain)} element(s); expected leaf ... root"
        )
    try:
        leaf = pki.load_pem_chain(chain[0])[0]
    except (pki.PkiError, IndexError) as exc:
        raise CaResponseError(identity, f"CA returned an unreadable leaf: {exc}") from exc
    found = pki.spiffe_ids_of(leaf)
    if found[:1] != [identity]:
        shown = ", ".join(map(str, found)) or "no SPIFFE identity"
        raise CaResponseError(identity, f"CA returned a certificate for {shown}")


async def _read_text(path: Path, what: str) -> str:
    try:
        return await trio.Path(path).read_text()
    except OSError as exc:
        raise WorkloadIdentityConfigError(f"cannot read {what} file {path}: {exc}") from exc
