"""The CA over real TLS on loopback with a real grpclib Channel."""

from __future__ import annotations

import datetime as dt
import ssl

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from grpclib.client import Channel
from grpclib.config import Configuration

from istiod_lite.ca.authority import CertificateAuthority
from istiod_lite.ca.authz import StaticPlacement, StaticTokenTable, TokenGrant, WorkloadCaller
from istiod_lite.ca.server import serve_ca
from istiod_lite.ca.service import CertificateService
from meshcore import pki
from meshcore.identity import SpiffeId
from meshcore.protos.istio.v1.auth import IstioCertificateRequest, IstioCertificateServiceStub

ALICE = SpiffeId("cluster.local", "shop", "alice")


def make() -> tuple[CertificateService, CertificateAuthority]:
    now = dt.datetime.now(dt.UTC)
    authority = CertificateAuthority(
        pki.new_root("cluster.local", lifetime=dt.timedelta(days=30), now=now)
    )
    tokens = StaticTokenTable({"alice-token": TokenGrant(WorkloadCaller(ALICE))})
    return CertificateService(authority, tokens, StaticPlacement.of([])), authority


def client_context(root_pem: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=root_pem) if root_pem else ssl.create_default_context()
    ctx.set_alpn_protocols(["h2"])
    return ctx


@pytest.mark.asyncio
async def test_issue_over_tls() -> None:
    """A client trusting the root reaches istiod.istio-system.svc and gets a verifiable leaf."""
    service, authority = make()
    async with await serve_ca(service, authority, host="127.0.0.1", port=0) as running:
        channel = Channel(
            "127.0.0.1",
            running.port,
            ssl=client_context(running.root_pem),
            config=Configuration(ssl_target_name_override="istiod.istio-system.svc"),
        )
        try:
            key = pki.new_private_key()
            before = dt.datetime.now(dt.UTC).replace(microsecond=0)
            reply = await IstioCertificateServiceStub(channel).create_certificate(
                IstioCertificateRequest(
                    csr=pki.build_csr(key, ALICE).decode(), validity_duration=3600
                ),
                metadata={"authorization": "Bearer alice-token"},
            )
            after = dt.datetime.now(dt.UTC)
        finally:
            channel.close()
    leaf, root = (pki.load_pem_chain(p)[0] for p in reply.cert_chain)
    assert root == pki.load_pem_chain(running.root_pem)[0]
    leaf.verify_directly_issued_by(root)
    assert pki.spiffe_ids_of(leaf) == [ALICE]
    assert leaf.public_key() == key.public_key()
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    hour = dt.timedelta(hours=1)
    assert before + hour <= leaf.not_valid_after_utc <= after + hour
    assert service.statistics().issued == 1


@pytest.mark.asyncio
async def test_client_not_trusting_root_fails_handshake() -> None:
    """Without our root the client refuses istiod's certificate; nothing is issued."""
    service, authority = make()
    async with await serve_ca(service, authority, host="127.0.0.1", port=0) as running:
        channel = Channel(
            "127.0.0.1",
            running.port,
            ssl=client_context(None),
            config=Configuration(ssl_target_name_override="istiod.istio-system.svc"),
        )
        try:
            with pytest.raises(ssl.SSLCertVerificationError):
                await IstioCertificateServiceStub(channel).create_certificate(
                    IstioCertificateRequest(
                        csr=pki.build_csr(pki.new_private_key(), ALICE).decode()
                    ),
                    metadata={"authorization": "Bearer alice-token"},
                )
        finally:
            channel.close()
    assert service.statistics().issued == 0
