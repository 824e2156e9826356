"""The assembled istiod-lite: manifests in; workload API over TLS xDS and node-scoped certs out."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import textwrap
from pathlib import Path

import pytest
from betterproto.lib.google.protobuf import Struct, Value
from grpclib import GRPCError
from grpclib.client import Channel
from grpclib.const import Status

from istiod_lite.app import IstiodConfig, RunningIstiod, run
from meshcore import pki
from meshcore.identity import SpiffeId
from meshcore.protos.envoy.config.core.v3 import Node
from meshcore.protos.istio.v1.auth import IstioCertificateRequest, IstioCertificateServiceStub
from meshcore.protos.istio.workload import Address
from meshcore.xds.client import XdsClient, tcp_channel
from meshcore.xds.protocol import ReceivedDelta
from meshcore.xds.types import TYPE_ADDRESS, TYPE_AUTHORIZATION

MANIFESTS = """
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: cart, namespace: shop, uid: u1}
spec: {nodeName: node-a, serviceAccountName: cart, containers: [{name: app, image: x}]}
status: {podIP: 10.1.0.5, phase: Running}
---
apiVersion: v1
kind: Pod
metadata: {name: pay, namespace: shop, uid: u2}
spec: {nodeName: node-b, serviceAccountName: pay, containers: [{name: app, image: x}]}
status: {podIP: 10.2.0.5, phase: Running}
"""


@contextlib.asynccontextmanager
async def istiod(tmp_path: Path):
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "shop.yaml").write_text(MANIFESTS)
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text("- {token: node-a-token, node: node-a}\n")
    config = IstiodConfig(
        manifests=manifests, ca_dir=tmp_path / "ca", tokens_file=tokens, host="127.0.0.1",
        port=0, root_cert_out=tmp_path / "root-cert.pem", ip_addresses=("127.0.0.1",),
    )
    ready: asyncio.Future[RunningIstiod] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run(config, on_ready=ready.set_result))
    try:
        running = await asyncio.wait_for(asyncio.shield(ready), 10)
        yield running, manifests, config.root_cert_out
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def client_tls(root: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(root))
    ctx.set_alpn_protocols(["h2"])
    return ctx


async def ask_certificate(port: int, root: Path, identity: SpiffeId) -> list[str]:
    channel = Channel("127.0.0.1", port, ssl=client_tls(root))
    try:
        stub = IstioCertificateServiceStub(channel)
        request = IstioCertificateRequest(
            csr=pki.build_csr(pki.new_private_key(), identity).decode(),
            metadata=Struct(fields={"ImpersonatedIdentity": Value(string_value=identity.uri)}),
        )
        response = await stub.create_certificate(
            request, metadata={"authorization": "Bearer node-a-token"}, timeout=10,
        )
        return response.cert_chain
    finally:
        channel.close()


@pytest.mark.asyncio
async def test_node_proxy_gets_only_identities_of_pods_on_its_node(tmp_path: Path) -> None:
    """ztunnel of node-a obtains cart's identity (scheduled there) but not pay's (on node-b)."""
    async with istiod(tmp_path) as (running, _, root):
        port = running.grpc.port
        chain = await ask_certificate(port, root, SpiffeId("cluster.local", "shop", "cart"))
        leaf = pki.load_pem_chain(chain[0])[0]
        assert pki.spiffe_ids_of(leaf) == [SpiffeId("cluster.local", "shop", "cart")]
        with pytest.raises(GRPCError) as refused:
            await ask_certificate(port, root, SpiffeId("cluster.local", "shop", "pay"))
        assert refused.value.status is Status.PERMISSION_DENIED
        assert "node-a" in str(refused.value.message)


@pytest.mark.asyncio
async def test_xds_client_receives_model_and_follows_edits(tmp_path: Path) -> None:
    """A Delta xDS client over TLS gets both pods, then sees a new pod after a file edit."""
    async with istiod(tmp_path) as (running, manifests, root):
        names: set[str] = set()
        changed = asyncio.Event()

        def handler(delta: ReceivedDelta) -> None:
            if delta.type_url == TYPE_ADDRESS:
                for res in delta.resources:
                    address = Address().parse(res.value)
                    names.add(address.workload.name)
                changed.set()

        client = XdsClient(
            tcp_channel("127.0.0.1", running.grpc.port, ssl=client_tls(root),
                        server_name="istiod.istio-system.svc"),
            node=Node(id="ztunnel~127.0.0.1~ztunnel-a.istio-system~istio-system.svc.cluster.local"),
            type_urls=[TYPE_ADDRESS, TYPE_AUTHORIZATION],
            handler=handler,
        )
        task = asyncio.create_task(client.run())
        try:
            async with asyncio.timeout(10):
                while names != {"cart", "pay"}:
                    changed.clear()
                    await changed.wait()
                (manifests / "more.yaml").write_text(textwrap.dedent("""
                    apiVersion: v1
                    kind: Pod
                    metadata: {name: ship, namespace: shop, uid: u3}
                    spec: {nodeName: node-a, containers: [{name: app, image: x}]}
                    status: {podIP: 10.1.0.6, phase: Running}
                """))
                while "ship" not in names:
                    changed.clear()
                    await changed.wait()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest.mark.asyncio
async def test_readiness_endpoint_turns_green_after_first_snapshot(tmp_path: Path) -> None:
    """GET /ready answers 200 once istiod-lite serves its first snapshot; other paths 404."""
    import dataclasses
    import socket as socket_module

    with socket_module.socket() as s:
        s.bind(("127.0.0.1", 0))
        ready_port = s.getsockname()[1]
    manifests = tmp_path / "m"
    manifests.mkdir()
    (manifests / "shop.yaml").write_text(MANIFESTS)
    config = IstiodConfig(manifests=manifests, ca_dir=tmp_path / "ca", host="127.0.0.1", port=0,
                          ready_address=("127.0.0.1", ready_port))
    ready: asyncio.Future[RunningIstiod] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run(dataclasses.replace(config), on_ready=ready.set_result))
    try:
        await asyncio.wait_for(asyncio.shield(ready), 10)

        async def get(path: str) -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", ready_port)
            writer.write(f"GET {path} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
            data = await reader.read()
            writer.close()
            return data

        assert (await get("/ready")).startswith(b"HTTP/1.1 200")
        assert (await get("/nope")).startswith(b"HTTP/1.1 404")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
