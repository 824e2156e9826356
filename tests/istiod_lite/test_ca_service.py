"""IstioCertificateService in-process (grpclib ChannelFor): tokens, statuses, counters."""

from __future__ import annotations

import datetime as dt

import pytest
from betterproto.lib.google.protobuf import Struct, Value
from grpclib import GRPCError
from grpclib.const import Status
from grpclib.testing import ChannelFor

from istiod_lite.ca.authority import CertificateAuthority
from istiod_lite.ca.authz import (
    NodeProxyCaller,
    Refusal,
    RefusalReason,
    StaticPlacement,
    StaticTokenTable,
    TokenGrant,
    WorkloadCaller,
)
from istiod_lite.ca.service import CertificateService
from meshcore import pki
from meshcore.identity import SpiffeId
from meshcore.protos.istio.v1.auth import IstioCertificateRequest, IstioCertificateServiceStub

NOW = dt.datetime.now(dt.UTC)
ALICE = SpiffeId("cluster.local", "shop", "alice")
BOB = SpiffeId("cluster.local", "shop", "bob")


class SpyAuthority(CertificateAuthority):
    """The real authority, recording what it was asked to sign."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.signed: list[SpiffeId] = []

    def sign(self, csr_pem, requested_identity, validity_seconds):  # type: ignore[no-untyped-def]
        self.signed.append(requested_identity)
        return super().sign(csr_pem, requested_identity, validity_seconds)


def make_service() -> tuple[CertificateService, SpyAuthority]:
    root = pki.new_root("cluster.local", lifetime=dt.timedelta(days=30), now=NOW)
    authority = SpyAuthority(root)
    tokens = StaticTokenTable(
        {
            "alice-token": TokenGrant(WorkloadCaller(ALICE)),
            "node-a-token": TokenGrant(NodeProxyCaller("node-a")),
            "stale-token": TokenGrant(
                NodeProxyCaller("node-a"), expires_at=NOW - dt.timedelta(seconds=1)
            ),
        }
    )
    return CertificateService(authority, tokens, StaticPlacement.of([("node-a", ALICE)])), authority


def request(csr_for: SpiffeId, impersonate: SpiffeId | None = None) -> IstioCertificateRequest:
    req = IstioCertificateRequest(csr=pki.build_csr(pki.new_private_key(), csr_for).decode())
    if impersonate is not None:
        req.metadata = Struct(fields={"ImpersonatedIdentity": Value(string_value=impersonate.uri)})
    return req


def auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}", "clusterid": "Kubernetes"}


@pytest.mark.asyncio
async def test_workload_gets_its_own_identity() -> None:
    """A workload token yields a [leaf, root] chain whose leaf names the workload."""
    service, authority = make_service()
    async with ChannelFor([service]) as channel:
        reply = await IstioCertificateServiceStub(channel).create_certificate(
            request(ALICE), metadata=auth("alice-token")
        )
    leaf = pki.load_pem_chain(reply.cert_chain[0])[0]
    assert pki.spiffe_ids_of(leaf) == [ALICE]
    assert reply.cert_chain[-1] == authority.root_pem
    assert service.statistics().issued == 1
    assert service.statistics().refused_total == 0


@pytest.mark.asyncio
async def test_node_proxy_gets_identity_of_pod_on_its_node() -> None:
    """A node-proxy token with ImpersonatedIdentity of a local pod gets that identity."""
    service, authority = make_service()
    async with ChannelFor([service]) as channel:
        reply = await IstioCertificateServiceStub(channel).create_certificate(
            request(ALICE, impersonate=ALICE), metadata=auth("node-a-token")
        )
    assert pki.spiffe_ids_of(pki.load_pem_chain(reply.cert_chain[0])[0]) == [ALICE]
    assert authority.signed == [ALICE]


@pytest.mark.parametrize(
    ("metadata", "req", "status", "reason", "words"),
    [
        pytest.param({}, request(ALICE), Status.UNAUTHENTICATED, RefusalReason.NO_TOKEN,
                     "authorization", id="no token"),
        pytest.param(auth("who"), request(ALICE), Status.UNAUTHENTICATED,
                     RefusalReason.UNKNOWN_TOKEN, "not known", id="unknown token"),
        pytest.param(auth("stale-token"), request(ALICE, ALICE), Status.UNAUTHENTICATED,
                     RefusalReason.EXPIRED_TOKEN, "expired", id="expired token"),
        pytest.param(auth("alice-token"), IstioCertificateRequest(csr="junk"),
                     Status.INVALID_ARGUMENT, RefusalReason.BAD_CSR, "CSR", id="bad csr"),
        pytest.param(auth("alice-token"),
                     request(SpiffeId("other.td", "shop", "alice")),
                     Status.INVALID_ARGUMENT, RefusalReason.WRONG_TRUST_DOMAIN,
                     "trust domain", id="wrong trust domain"),
        pytest.param(auth("node-a-token"), request(BOB, impersonate=ALICE),
                     Status.INVALID_ARGUMENT, RefusalReason.CSR_IDENTITY_MISMATCH,
                     str(BOB), id="csr san differs from requested"),
        pytest.param(auth("alice-token"), request(BOB, impersonate=BOB),
                     Status.PERMISSION_DENIED, RefusalReason.IDENTITY_NOT_ALLOWED,
                     str(BOB), id="workload asks for another"),
        pytest.param(auth("node-a-token"), request(BOB, impersonate=BOB),
                     Status.PERMISSION_DENIED, RefusalReason.NOT_ON_NODE,
                     "node-a", id="node proxy for pod elsewhere"),
    ],
)
@pytest.mark.asyncio
async def test_refusals_have_precise_status_and_issue_nothing(
    metadata: dict[str, str],
    req: IstioCertificateRequest,
    status: Status,
    reason: RefusalReason,
    words: str,
) -> None:
    """Each refusal class answers its gRPC status and message, counts its reason, signs nothing."""
    service, authority = make_service()
    async with ChannelFor([service]) as channel:
        with pytest.raises(GRPCError) as caught:
            await IstioCertificateServiceStub(channel).create_certificate(req, metadata=metadata)
    assert caught.value.status is status
    assert words in (caught.value.message or "")
    stats = service.statistics()
    assert stats.issued == 0
    assert dict(stats.refused) == {reason: 1}
    assert authority.signed == []


@pytest.mark.asyncio
async def test_statistics_accumulate() -> None:
    """Counters add up across calls on one service."""
    service, _ = make_service()
    async with ChannelFor([service]) as channel:
        stub = IstioCertificateServiceStub(channel)
        for _ in range(2):
            await stub.create_certificate(request(ALICE), metadata=auth("alice-token"))
        with pytest.raises(GRPCError):
            await stub.create_certificate(request(ALICE), metadata=auth("nope"))
    stats = service.statistics()
    assert (stats.issued, stats.refused_total) == (2, 1)
    assert stats.refused[RefusalReason.UNKNOWN_TOKEN] == 1


class ClusterAwareAuthenticator:
    """A TokenAuthenticator that accepts one token only when asked for one cluster."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str | None]] = []

    async def authenticate(
        self, token: str, *, cluster_id: str | None
    ) -> WorkloadCaller | Refusal:
        self.asked.append((token, cluster_id))
        if (token, cluster_id) == ("alice-token", "east"):
            return WorkloadCaller(ALICE)
        return Refusal(RefusalReason.UNKNOWN_TOKEN, f"token unknown in cluster {cluster_id}")


@pytest.mark.asyncio
async def test_authenticator_seam_gets_token_and_clusterid() -> None:
    """Any TokenAuthenticator plugs in; it sees the bearer token and the clusterid metadata."""
    root = pki.new_root("cluster.local", lifetime=dt.timedelta(days=30), now=NOW)
    authenticator = ClusterAwareAuthenticator()
    service = CertificateService(
        CertificateAuthority(root), authenticator, StaticPlacement.of([])
    )
    async with ChannelFor([service]) as channel:
        stub = IstioCertificateServiceStub(channel)
        await stub.create_certificate(
            request(ALICE), metadata={"authorization": "Bearer alice-token", "clusterid": "east"}
        )
        with pytest.raises(GRPCError) as caught:
            await stub.create_certificate(
                request(ALICE), metadata={"authorization": "Bearer alice-token"}
            )
    assert authenticator.asked == [("alice-token", "east"), ("alice-token", None)]
    assert caught.value.status is Status.UNAUTHENTICATED
