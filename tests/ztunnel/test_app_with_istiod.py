"""A ztunnel connected to a real istiod-lite process shows the model in /config_dump."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from ztunnel.app import Ztunnel, run
from ztunnel.config import ZtunnelConfig

pytestmark = pytest.mark.trio

MANIFESTS = """
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec: {clusterIP: 10.96.0.10, selector: {app: cart}, ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Pod
metadata: {name: cart-1, namespace: shop, uid: u1, labels: {app: cart}}
spec: {nodeName: node-a, serviceAccountName: cart, containers: [{name: app, image: x}]}
status: {podIP: 10.1.0.5, phase: Running}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


async def _wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    with trio.fail_after(20):
        while True:
            assert proc.poll() is None, "istiod-lite exited early"
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.05)  # polling a port that is not open yet, with a deadline
                continue
            await stream.aclose()
            return


async def test_config_dump_shows_the_model_from_istiod(tmp_path: Path) -> None:
    """ztunnel subscribes over TLS xDS; /config_dump lists pod and service; readiness is 200."""
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "shop.yaml").write_text(MANIFESTS)
    (tmp_path / "tokens.yaml").write_text("- {token: node-a-token, node: node-a}\n")
    (tmp_path / "token").write_text("node-a-token\n")
    port = _free_port()
    log = open(tmp_path / "istiod.log", "wb")  # noqa: SIM115 (closed in finally)
    proc = subprocess.Popen(
        [sys.executable, "-m", "istiod_lite", "--manifests", str(manifests),
         "--ca-dir", str(tmp_path / "ca"), "--tokens", str(tmp_path / "tokens.yaml"),
         "--listen", f"127.0.0.1:{port}", "--ip", "127.0.0.1",
         "--root-cert-out", str(tmp_path / "root-cert.pem")],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        await _wait_listening(port, proc)
        config = ZtunnelConfig(
            node_name="node-a", xds_address=("127.0.0.1", port), ca_address=("127.0.0.1", port),
            root_cert=tmp_path / "root-cert.pem", token_file=tmp_path / "token", zds_socket=None,
            admin_address=("127.0.0.1", 0), metrics_address=("127.0.0.1", 0),
            readiness_address=("127.0.0.1", 0),
        )
        async with trio.open_nursery() as nursery:
            zt: Ztunnel = await nursery.start(run, config)
            with trio.fail_after(20):
                await zt.config_client.wait_synced()
            status, body = await trio.to_thread.run_sync(_get, zt.admin_port, "/config_dump")
            assert status == 200
            dump = json.loads(body)
            assert [w["name"] for w in dump["workloads"]] == ["cart-1"]
            assert dump["workloads"][0]["identity"] == "spiffe://cluster.local/ns/shop/sa/cart"
            assert [s["hostname"] for s in dump["services"]] == ["cart.shop.svc.cluster.local"]
            status, _ = await trio.to_thread.run_sync(_get, zt.readiness_port, "/healthz/ready")
            assert status == 200
            nursery.cancel_scope.cancel()
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
        print((tmp_path / "istiod.log").read_text())
