"""End to end: a real istiod-lite (subprocess, manifest folder) feeds the waypoint process
(`waypoint.app.run`) over xDS and signs its certificate; requests through it are routed by an
HTTPRoute and denied by an L7 AuthorizationPolicy."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from meshcore import pki
from tests.meshcore.hbone_trio import certs
from tests.waypoint.clients import h1_exchange
from tests.waypoint.harness import Env, default_pods, host, waypoint_env
from waypoint.app import Waypoint, run
from waypoint.config import WaypointConfig

pytestmark = pytest.mark.trio


def manifests(env: Env) -> str:
    pods = "".join(f"""
---
apiVersion: v1
kind: Pod
metadata: {{name: {p.name}, namespace: shop, uid: uid-{p.name},
           labels: {{app: reviews, version: {"v2" if "v2" in p.name else "v1"}}}}}
spec: {{nodeName: node-a, serviceAccountName: {p.service}, containers: [{{name: app, image: x}}]}}
status: {{podIP: {p.ip}, phase: Running,
         conditions: [{{type: Ready, status: "True"}}]}}""" for p in env.pods.values())
    return f"""
apiVersion: v1
kind: Namespace
metadata: {{name: shop, labels: {{istio.io/dataplane-mode: ambient,
                                  istio.io/use-waypoint: waypoint}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: waypoint, namespace: shop}}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{{name: mesh, port: 15008, protocol: HBONE}}]
---
apiVersion: v1
kind: Service
metadata: {{name: reviews, namespace: shop}}
spec: {{selector: {{app: reviews, version: v1}}, clusterIP: 10.96.0.10,
        ports: [{{name: http, port: 9080, targetPort: {env.target_port}}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: reviews-v2, namespace: shop}}
spec: {{selector: {{app: reviews, version: v2}}, clusterIP: 10.96.0.11,
        ports: [{{name: http, port: 9080, targetPort: {env.target_port}}}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: reviews, namespace: shop}}
spec:
  parentRefs: [{{group: "", kind: Service, name: reviews, port: 9080}}]
  rules:
  - matches: [{{headers: [{{name: x-version, value: v2}}]}}]
    backendRefs: [{{name: reviews-v2, port: 9080}}]
  - backendRefs: [{{name: reviews, port: 9080}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: no-admin, namespace: shop}}
spec:
  targetRefs: [{{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}}]
  action: DENY
  rules: [{{to: [{{operation: {{paths: ["/admin/*"]}}}}]}}]
{pods}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


async def test_waypoint_fed_by_istiod_routes_and_denies(tmp_path: Path) -> None:
    """istiod-lite's HTTPRoute sends x-version: v2 to reviews-v2 and the rest to reviews; its
    DENY policy answers 403 on /admin/*; readiness and /config_dump reflect the config."""
    root = certs.root("cluster.local")  # the cache key of the harness certificates
    (tmp_path / "ca.pem").write_bytes(pki.cert_pem(root.certificate))
    (tmp_path / "ca-key.pem").write_bytes(pki.private_key_pem(root.key))
    (tmp_path / "tokens.yaml").write_text(
        "- {token: wp-token, identity: spiffe://cluster.local/ns/shop/sa/waypoint}\n")
    (tmp_path / "token").write_text("wp-token\n")
    port = _free_port()
    pods = [p for p in default_pods() if p.service in ("reviews", "reviews-v2")]
    async with waypoint_env(pods, with_waypoint=False) as env:
        folder = tmp_path / "manifests"
        folder.mkdir()
        (folder / "shop.yaml").write_text(manifests(env))
        log = open(tmp_path / "istiod.log", "wb")  # noqa: SIM115 (closed in finally)
        proc = subprocess.Popen(
            [sys.executable, "-m", "istiod_lite", "--manifests", str(folder),
             "--ca-cert", str(tmp_path / "ca.pem"), "--ca-key", str(tmp_path / "ca-key.pem"),
             "--tokens", str(tmp_path / "tokens.yaml"), "--listen", f"127.0.0.1:{port}",
             "--ip", "127.0.0.1", "--root-cert-out", str(tmp_path / "root-cert.pem")],
            stdout=log, stderr=subprocess.STDOUT)
        try:
            await _wait_listening(port, proc)
            config = WaypointConfig(
                name="waypoint", namespace="shop", identity=certs.sa("waypoint", "shop"),
                xds_address=("127.0.0.1", port), ca_address=("127.0.0.1", port),
                root_cert=tmp_path / "root-cert.pem", token_file=tmp_path / "token",
                listen=("127.0.0.1", 0), admin_address=("127.0.0.1", 0),
                metrics_address=("127.0.0.1", 0), readiness_address=("127.0.0.1", 0),
                upstream_hbone_port=env.hbone_port)
            async with trio.open_nursery() as nursery:
                wp: Waypoint = await nursery.start(run, config)
                with trio.fail_after(20):
                    await wp.config_client.wait_synced()
                    await wp.credentials()
                status, _ = await trio.to_thread.run_sync(_get, wp.readiness_port,
                                                          "/healthz/ready")
                assert status == 200
                env.waypoint_addr = ("127.0.0.1", wp.hbone_port)
                async with env.tunnel("reviews") as t:
                    results = await h1_exchange(t, [
                        ("GET", "/", host("reviews"), [("x-version", "v2")], b""),
                        ("GET", "/", host("reviews"), [], b""),
                        ("GET", "/admin/users", host("reviews"), [], b"")])
                status, body = await trio.to_thread.run_sync(_get, wp.admin_port,
                                                             "/config_dump")
                nursery.cancel_scope.cancel()
        finally:
            proc.terminate()
            proc.wait(10)
            log.close()
            print((tmp_path / "istiod.log").read_text())
    (v2, v1, admin) = results
    assert json.loads(v2[2])["pod"] == "reviews-v2-1"
    assert json.loads(v1[2])["pod"] in ("reviews-1", "reviews-2")
    assert admin[0] == 403
    dump = json.loads(body)
    assert "shop/reviews.shop.svc.cluster.local" in dump["routes"]
    assert [p["name"] for p in dump["l7_policies"]] == ["shop/no-admin"]
    assert dump["certificate"]["state"] == "valid"
