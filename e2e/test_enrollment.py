"""Enrollment by namespace label, without restarting pods, and unenrollment back to plain TCP.

The sandbox starts with namespace `shop` outside the mesh. Labelling it (a manifest change, as
`kubectl label` on a cluster) must enroll the running pods: the node agents install the in-pod
rules and hand the pods to ztunnel, the app processes keep running (same pid and start time),
and traffic between them becomes mTLS. Removing the label must undo all of it.
"""

from __future__ import annotations

import secrets

import pytest

from ambientctl.sandbox import Sandbox
from ambientctl.sandbox.procs import read_pid
from e2e import mesh
from e2e.conftest import NEEDS_ROOT

pytestmark = [pytest.mark.netns, pytest.mark.slow, NEEDS_ROOT]
SANDBOX_SETS = ("base",)

SHOP = ["shop/client", "shop/capture", "shop/echo-1", "shop/echo-2", "shop/tcp-echo"]
ISTIO_SYSTEM = "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: istio-system}\n"
LABELLED = mesh.enrolled_namespace("shop") + ISTIO_SYSTEM
MTLS_OPENED = "istio_tcp_connections_opened_total"


def _mtls_seen_by_destination(sb: Sandbox, node: str) -> float:
    return mesh.total(mesh.scrape(sb, node), MTLS_OPENED, reporter="destination",
                      source_workload="client", connection_security_policy="mutual_tls")


def _app_pids(sb: Sandbox) -> dict[str, tuple[int, str] | None]:
    return {p: read_pid(sb.state, f"app-{p.replace('/', '-')}") for p in SHOP}


def test_labelling_the_namespace_enrolls_running_pods_without_restart(sandbox: Sandbox):
    """Label shop: its running pods become `enabled` with in-pod rules, the apps keep their
    processes, and client → echo-2 (other node) goes over mTLS with the real client IP."""
    assert {p: mesh.redirection(sandbox, p) for p in SHOP} == dict.fromkeys(SHOP, "")
    pids = _app_pids(sandbox)
    echo2 = sandbox.pod_ip("shop/echo-2")
    before = _mtls_seen_by_destination(sandbox, "node2")
    doc = mesh.http_json(sandbox, "shop/client", echo2, 8080)  # plain TCP still works
    assert doc["pod"] == "shop/echo-2"
    assert _mtls_seen_by_destination(sandbox, "node2") == before
    with mesh.applied(sandbox, "namespaces.yaml", LABELLED):
        mesh.wait_redirection(sandbox, SHOP, "enabled")
        assert _app_pids(sandbox) == pids  # same processes: nothing was restarted
        for pod in SHOP:
            assert "istio-ambient-nat" in mesh.nft_tables(sandbox, pod), pod
        doc = mesh.http_json(sandbox, "shop/client", echo2, 8080)
        assert doc["pod"] == "shop/echo-2"
        assert doc["peer"].split(":")[0] == sandbox.pod_ip("shop/client")
        mesh.poll_until(lambda: _mtls_seen_by_destination(sandbox, "node2") == before + 1,
                        timeout=5, what="node2's ztunnel to count the mTLS connection",
                        last=lambda: _mtls_seen_by_destination(sandbox, "node2"))
    mesh.wait_redirection(sandbox, SHOP, "")


def test_removing_the_label_returns_pods_to_plain_tcp(sandbox: Sandbox):
    """Unlabel shop: annotations and in-pod rules go, ztunnel drops the pods, and the bytes
    between nodes are plaintext again (the marker is seen on the wire; no new mTLS count)."""
    with mesh.applied(sandbox, "namespaces.yaml", LABELLED):
        mesh.wait_redirection(sandbox, SHOP, "enabled")
        served = {p["uid"] for n in ("node1", "node2")
                  for p in mesh.config_dump(sandbox, n)["pods"]}
        assert set(SHOP) <= served  # ztunnel serves every pod (uid ns/name)
    mesh.wait_redirection(sandbox, SHOP, "")
    for pod in SHOP:
        assert "istio-ambient" not in mesh.nft_tables(sandbox, pod), pod
    for node in ("node1", "node2"):
        mesh.poll_until(lambda node=node: not mesh.config_dump(sandbox, node)["pods"],
                        timeout=10, what=f"ztunnel on {node} to drop the pods",
                        last=lambda node=node: mesh.config_dump(sandbox, node)["pods"])
    before = _mtls_seen_by_destination(sandbox, "node2")
    marker = f"PLAINTEXT-MARKER-{secrets.token_hex(8)}".encode()
    client, server = sandbox.pod_ip("shop/client"), sandbox.pod_ip("shop/tcp-echo")
    with mesh.uplink_capture(sandbox, "node1", (client, server)) as cap:
        got = mesh.tcp_exchange(sandbox, "shop/client", server, 9000, marker)
    assert got.echoed(marker), got
    assert cap.lossless
    to_server = [f for k, f in cap.flows().items() if k.dport == 9000]
    assert to_server and all(f.complete for f in to_server)
    assert any(marker in f.data for f in to_server)  # plain TCP, straight to the app port
    assert _mtls_seen_by_destination(sandbox, "node2") == before
