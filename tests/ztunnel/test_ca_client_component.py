"""Component: the real CA (grpclib over TLS on loopback) and the real manager via the bridge."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from istiod_lite.ca.authority import CertificateAuthority
from istiod_lite.ca.authz import (
    NodeProxyCaller,
    StaticPlacement,
    StaticTokenTable,
    TokenGrant,
    WorkloadCaller,
)
from istiod_lite.ca.server import RunningCa, serve_ca
from istiod_lite.ca.service import CertificateService
from meshcore import pki
from meshcore.grpc_bridge import open_asyncio_bridge
from meshcore.identity import SpiffeId
from meshcore.workload_identity.ca_client import CaClient, CaClientConfig
from meshcore.workload_identity.manager import CertificateManager
from ztunnel.errors import (
    CaUnavailableError,
    CertificateRefusedError,
    CertificateUnavailableError,
    WorkloadIdentityConfigError,
)

pytestmark = pytest.mark.trio

ALICE = SpiffeId("cluster.local", "shop", "alice")
BOB = SpiffeId("cluster.local", "shop", "bob")


class RecordingTable(StaticTokenTable):
    """The sandbox's token table, remembering the clusterid each call presented."""

    cluster_ids: list[str | None]

    async def authenticate(self, token: str, *, cluster_id: str | None):  # type: ignore[no-untyped-def]
        self.cluster_ids.append(cluster_id)
        return await super().authenticate(token, cluster_id=cluster_id)


@asynccontextmanager
async def running_ca(
    tmp_path: Path,
) -> AsyncIterator[tuple[RunningCa, CertificateService, RecordingTable]]:
    """The CA on its own asyncio thread (as istiod would be its own process)."""
    authority = CertificateAuthority(
        pki.new_root("cluster.local", lifetime=dt.timedelta(days=30), now=dt.datetime.now(dt.UTC))
    )
    tokens = RecordingTable(
        {
            "node-a-token": TokenGrant(NodeProxyCaller("node-a")),
            "alice-token": TokenGrant(WorkloadCaller(ALICE)),
        }
    )
    tokens.cluster_ids = []
    service = CertificateService(authority, tokens, StaticPlacement.of([("node-a", ALICE)]))
    async with open_asyncio_bridge() as ca_loop:
        running = await ca_loop.call(
            functools.partial(serve_ca, service, authority, host="127.0.0.1", port=0)
        )
        (tmp_path / "root-cert.pem").write_text(running.root_pem)
        try:
            yield running, service, tokens
        finally:
            await ca_loop.call(running.__aexit__, None, None, None)


def config(tmp_path: Path, running: RunningCa, token: str, **kw: object) -> CaClientConfig:
    (tmp_path / "istio-token").write_text(token + "\n")
    return CaClientConfig(
        root_cert_path=tmp_path / "root-cert.pem",
        token_path=tmp_path / "istio-token",
        host="127.0.0.1",
        port=running.port,
        **kw,  # type: ignore[arg-type]
    )


async def test_manager_obtains_allowed_identity_and_is_refused_forbidden(tmp_path: Path) -> None:
    """Node proxy gets a pod-on-node identity; another identity fails naming it and the reason."""
    async with running_ca(tmp_path) as (running, service, tokens), open_asyncio_bridge() as bridge:
        client = CaClient(config(tmp_path, running, "node-a-token"), bridge)
        manager = CertificateManager(client.fetch_certificate)
        async with trio.open_nursery() as nursery:
            await nursery.start(manager.run)
            with trio.fail_after(10):
                creds = await manager.wait_credentials(ALICE)
                with pytest.raises(CertificateUnavailableError) as caught:
                    await manager.wait_credentials(BOB)
            nursery.cancel_scope.cancel()
        await client.aclose()
    leaf = pki.load_pem_chain(creds.chain_pem)[0]
    leaf.verify_directly_issued_by(pki.load_pem_chain(creds.roots_pem)[0])
    assert pki.spiffe_ids_of(leaf) == [ALICE]
    assert creds.roots_pem.decode() == running.root_pem
    refused = caught.value.cause
    assert isinstance(refused, CertificateRefusedError)
    assert refused.identity == BOB and refused.reason == "PERMISSION_DENIED"
    assert "node-a" in refused.detail
    assert service.statistics().issued == 1
    assert tokens.cluster_ids == ["Kubernetes", "Kubernetes"]


async def test_token_is_reread_for_every_call(tmp_path: Path) -> None:
    """Replacing the token file changes what the next call presents."""
    async with running_ca(tmp_path) as (running, _, _), open_asyncio_bridge() as bridge:
        cfg = config(tmp_path, running, "alice-token", impersonate=False)
        client = CaClient(cfg, bridge)
        key = pki.new_private_key()
        with trio.fail_after(10):
            chain = await client.fetch_certificate(ALICE, pki.build_csr(key, ALICE))
            cfg.token_path.write_text("revoked-token")
            with pytest.raises(CertificateRefusedError) as caught:
                await client.fetch_certificate(ALICE, pki.build_csr(key, ALICE))
        await client.aclose()
    assert pki.spiffe_ids_of(pki.load_pem_chain(chain[0])[0]) == [ALICE]
    assert caught.value.reason == "UNAUTHENTICATED"


async def test_unreachable_ca_is_a_typed_retryable_error(tmp_path: Path) -> None:
    """Nothing listening on the CA port gives CaUnavailableError naming the identity."""
    async with running_ca(tmp_path) as (running, _, _):
        port = running.port
    async with open_asyncio_bridge() as bridge:
        cfg = CaClientConfig(
            root_cert_path=tmp_path / "root-cert.pem",
            token_path=tmp_path / "token",
            host="127.0.0.1",
            port=port,
        )
        cfg.token_path.write_text("t")
        client = CaClient(cfg, bridge)
        with trio.fail_after(10), pytest.raises(CaUnavailableError) as caught:
            await client.fetch_certificate(ALICE, pki.build_csr(pki.new_private_key(), ALICE))
        await client.aclose()
    assert caught.value.identity == ALICE


async def test_missing_token_file_is_a_config_error(tmp_path: Path) -> None:
    """An unreadable token file is our configuration's fault and names the path."""
    async with open_asyncio_bridge() as bridge:
        cfg = CaClientConfig(
            root_cert_path=tmp_path / "root-cert.pem", token_path=tmp_path / "no-such-token"
        )
        client = CaClient(cfg, bridge)
        with pytest.raises(WorkloadIdentityConfigError, match="no-such-token"):
            await client.fetch_certificate(ALICE, pki.build_csr(pki.new_private_key(), ALICE))


async def test_wrong_server_name_is_refused_by_tls(tmp_path: Path) -> None:
    """The client verifies istiod's name: a CA presenting another name is unreachable to it."""
    async with running_ca(tmp_path) as (running, service, _), open_asyncio_bridge() as bridge:
        cfg = config(tmp_path, running, "node-a-token", server_name="evil.example")
        client = CaClient(cfg, bridge)
        with trio.fail_after(10), pytest.raises(CaUnavailableError, match="SSL"):
            await client.fetch_certificate(ALICE, pki.build_csr(pki.new_private_key(), ALICE))
        await client.aclose()
    assert service.statistics().issued == 0


async def test_client_reconnects_after_ca_restart(tmp_path: Path) -> None:
    """The reused channel recovers when the CA restarts on the same port with the same root."""
    authority = CertificateAuthority(
        pki.new_root("cluster.local", lifetime=dt.timedelta(days=30), now=dt.datetime.now(dt.UTC))
    )
    tokens = StaticTokenTable({"alice-token": TokenGrant(WorkloadCaller(ALICE))})
    service = CertificateService(authority, tokens, StaticPlacement.of([]))
    (tmp_path / "root-cert.pem").write_text(authority.root_pem)
    key = pki.new_private_key()
    async with open_asyncio_bridge() as ca_loop, open_asyncio_bridge() as bridge:
        first = await ca_loop.call(
            functools.partial(serve_ca, service, authority, host="127.0.0.1", port=0)
        )
        client = CaClient(config(tmp_path, first, "alice-token", impersonate=False), bridge)
        with trio.fail_after(10):
            await client.fetch_certificate(ALICE, pki.build_csr(key, ALICE))
            await ca_loop.call(first.__aexit__, None, None, None)
            with pytest.raises(CaUnavailableError):
                await client.fetch_certificate(ALICE, pki.build_csr(key, ALICE))
            second = await ca_loop.call(
                functools.partial(serve_ca, service, authority, host="127.0.0.1", port=first.port)
            )
            try:
                await client.fetch_certificate(ALICE, pki.build_csr(key, ALICE))
            finally:
                await ca_loop.call(second.__aexit__, None, None, None)
        await client.aclose()
    assert service.statistics().issued == 2
