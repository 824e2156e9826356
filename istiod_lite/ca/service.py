"""The gRPC service `istio.v1.auth.IstioCertificateService/CreateCertificate` (grpclib, asyncio).

Served by `server.py` (TLS on 15012) or in-process by tests (`grpclib.testing.ChannelFor`).
Per request: bearer token from the `authorization` metadata → `TokenAuthenticator` → the
protobuf gate `authz.ask_from_request` → `authz.decide` → `CertificateAuthority.sign`. Hands
the chain back in `IstioCertificateResponse.cert_chain` (leaf first, root last).

We implement `__mapping__` ourselves instead of subclassing the generated
`IstioCertificateServiceBase`, whose handler passes only the message: we need the call's
metadata (token, `clusterid`) and peer (for the log line of a refusal).

Invariants: nothing is signed unless every check passed; every request ends as exactly one of
issued / refused(reason) in `statistics()`; a refusal is a `GRPCError` whose status is the
reason's class (INVALID_ARGUMENT, UNAUTHENTICATED, PERMISSION_DENIED) and whose message is the
refusal's, which names the identity, node or header at fault.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import types
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import grpclib.const
from grpclib import GRPCError
from grpclib.const import Status

from istiod_lite.ca import authz
from istiod_lite.ca.authority import CertificateAuthority
from meshcore.protos.istio.v1.auth import IstioCertificateRequest, IstioCertificateResponse

if TYPE_CHECKING:
    import grpclib.server

log = logging.getLogger(__name__)

CREATE_CERTIFICATE = "/istio.v1.auth.IstioCertificateService/CreateCertificate"


@dataclasses.dataclass(frozen=True)
class CaStatistics:
    """Counters since start: certificates issued, requests refused by reason."""

    issued: int
    refused: Mapping[authz.RefusalReason, int]

    @property
    def refused_total(self) -> int:
        return sum(self.refused.values())


class CertificateService:
    """IstioCertificateService backed by a `CertificateAuthority` and an authorization policy."""

    def __init__(
        self,
        authority: CertificateAuthority,
        authenticator: authz.TokenAuthenticator,
        may_node_serve: authz.NodeServes,
    ) -> None:
        self._authority = authority
        self._authenticator = authenticator
        self._may_node_serve = may_node_serve
        self._issued = 0
        self._refused: collections.Counter[authz.RefusalReason] = collections.Counter()

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        return {
            CREATE_CERTIFICATE: grpclib.const.Handler(
                self._create_certificate,
                grpclib.const.Cardinality.UNARY_UNARY,
                IstioCertificateRequest,
                IstioCertificateResponse,
            )
        }

    def statistics(self) -> CaStatistics:
        return CaStatistics(self._issued, types.MappingProxyType(dict(self._refused)))

    async def create_certificate(
        self, request: IstioCertificateRequest, metadata: Mapping[str, Any]
    ) -> list[str] | authz.Refusal:
        """Decide and, when allowed, sign one request; `metadata` is the call's metadata."""
        token = authz.bearer_token(_single(metadata, "authorization"))
        if isinstance(token, authz.Refusal):
            return self._refuse(token)
        caller = await self._authenticator.authenticate(
            token, cluster_id=_single(metadata, "clusterid")
        )
        if isinstance(caller, authz.Refusal):
            return self._refuse(caller)
        ask = authz.ask_from_request(request)
        if isinstance(ask, authz.Refusal):
            return self._refuse(ask)
        decision = authz.decide(
            ask,
            caller,
            trust_domain=self._authority.trust_domain,
            may_node_serve=self._may_node_serve,
        )
        if isinstance(decision, authz.Refusal):
            return self._refuse(decision)
        chain = self._authority.sign(ask.csr_pem, decision.identity, ask.validity_seconds)
        self._issued += 1
        log.info("issued certificate for %s to %s", decision.identity, decision.caller)
        return chain

    async def _create_certificate(
        self, stream: grpclib.server.Stream[IstioCertificateRequest, IstioCertificateResponse]
    ) -> None:
        request = await stream.recv_message()
        assert request is not None  # grpclib guarantees one message for UNARY_UNARY
        outcome = await self.create_certificate(request, stream.metadata or {})
        if isinstance(outcome, authz.Refusal):
            log.warning(
                "refused certificate request from %s: %s (%s)",
                stream.peer.addr(), outcome.reason.value, outcome.message,
            )
            raise GRPCError(Status[outcome.reason.refusal_class.value], outcome.message)
        await stream.send_message(IstioCertificateResponse(cert_chain=outcome))

    def _refuse(self, refusal: authz.Refusal) -> authz.Refusal:
        self._refused[refusal.reason] += 1
        return refusal


def _single(metadata: Mapping[str, Any], key: str) -> str | None:
    value = metadata.get(key)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes):  # binary metadata only arrives for "-bin" keys
        return value.decode("ascii", "replace")
    return str(value)
