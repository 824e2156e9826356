"""Failures and lifecycle: the control plane down, a ztunnel restarted, a pod deleted.

Manifest sets `base` + `enrolled` + `doomed` (namespace shop enrolled, one extra pod to delete).
Times to recover are measured and printed (`-s` shows them), never asserted.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time

import pytest

from ambientctl.sandbox import Sandbox
from ambientctl.sandbox.kernel import link_names, list_netns, socket_in_netns
from ambientctl.sandbox.probes import tcp_open
from ambientctl.sandbox.topology import ISTIOD_IP, ISTIOD_PORT
from e2e import mesh
from e2e.conftest import NEEDS_ROOT

pytestmark = [pytest.mark.netns, pytest.mark.slow, NEEDS_ROOT]
SANDBOX_SETS = ("base", "enrolled", "doomed")
TCP_ECHO_VIP, ECHO_VIP = "10.96.0.11", "10.96.0.10"
HBONE_PORTS = {15001, 15006, 15008}


def _xds_connected(sb: Sandbox, node: str) -> bool:
    return bool(mesh.config_dump(sb, node)["xds"]["statistics"]["connected"])


def _echo_line(sock: socket.socket, text: bytes) -> bytes:
    sock.sendall(text)
    got = b""
    while len(got) < len(text):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def test_istiod_stopped_existing_and_new_connections_keep_working(sandbox: Sandbox):
    """With istiod-lite stopped (both ztunnels see the xDS stream gone), an open connection
    keeps relaying and new connections between known workloads, including a first connection
    for a new identity pair, still work on the last good config and cached certificates."""
    sock = socket_in_netns(sandbox.pod_netns("shop/client"))
    try:
        sock.settimeout(5)
        sock.connect((TCP_ECHO_VIP, 9000))
        assert _echo_line(sock, b"before ") == b"before "
        assert sandbox.stop("istiod")
        assert not tcp_open(sandbox.topology.underlay_netns, ISTIOD_IP, ISTIOD_PORT)
        for node in ("node1", "node2"):
            mesh.poll_until(lambda node=node: not _xds_connected(sandbox, node), timeout=15,
                            what=f"ztunnel on {node} to notice istiod is gone")
        assert _echo_line(sock, b"during") == b"during"  # the existing connection
        assert mesh.http_json(sandbox, "shop/client", ECHO_VIP, 80)["pod"].startswith("shop/")
        doc = mesh.http_json(sandbox, "shop/capture", sandbox.pod_ip("shop/echo-2"), 8080)
        assert doc["peer"].split(":")[0] == sandbox.pod_ip("shop/capture")  # new pair, mTLS
        got = mesh.tcp_exchange(sandbox, "shop/client", TCP_ECHO_VIP, 9000, b"new")
        assert got.echoed(b"new"), got
    finally:
        sock.close()
        sandbox.restart("istiod")
        sandbox.wait_ready(timeout=30)
    for node in ("node1", "node2"):
        mesh.poll_until(lambda node=node: _xds_connected(sandbox, node), timeout=30,
                        what=f"ztunnel on {node} to reconnect to istiod")
    mesh.wait_converged(sandbox)


def test_ztunnel_restart_new_connections_work_and_pods_are_served_again(sandbox: Sandbox):
    """Restart node2's ztunnel: it re-receives its pods from the node agent (ZDS snapshot) and
    new connections to them work again; the time this took is printed."""
    node2_pods = sorted(p.key for p in sandbox.topology.pods if p.node == "node2")
    started = time.monotonic()
    sandbox.restart("ztunnel-node2")

    def works() -> bool:
        return mesh.tcp_exchange(sandbox, "shop/client", TCP_ECHO_VIP, 9000, b"again",
                                 timeout=2).echoed(b"again")

    mesh.poll_until(works, timeout=30, what="a new connection to tcp-echo on node2")
    first_ok = time.monotonic() - started

    def served() -> list[str]:
        return sorted(p["uid"] for p in mesh.config_dump(sandbox, "node2")["pods"]
                      if p["serving"])

    mesh.poll_until(lambda: served() == node2_pods, timeout=30, what="node2's pods served",
                    last=served)
    all_served = time.monotonic() - started
    sandbox.wait_ready(timeout=30)
    doc = mesh.http_json(sandbox, "shop/client", sandbox.pod_ip("shop/echo-2"), 8080)
    assert doc["peer"].split(":")[0] == sandbox.pod_ip("shop/client")
    print(f"\nztunnel-node2 restart: first new connection OK after {first_ok:.2f}s, "
          f"{len(node2_pods)} pods served again after {all_served:.2f}s")


def _in_held_netns(fd: int, *argv: str) -> str:
    """Run an observation tool inside the namespace behind our open fd (its name is gone)."""
    return subprocess.run(["nsenter", f"--net=/proc/{os.getpid()}/fd/{fd}", *argv],
                          capture_output=True, text=True, timeout=10, check=True).stdout


def _listening_ports(fd: int) -> set[int]:
    out = _in_held_netns(fd, "ss", "-Htln")
    return {int(line.split()[3].rsplit(":", 1)[1]) for line in out.splitlines() if line.strip()}


def test_deleted_pod_loses_its_rules_listeners_and_certificate(sandbox: Sandbox):
    """Delete shop/doomed (CNI DEL, Pod removed): its in-pod rules and ztunnel's listeners in
    its netns are gone, ztunnel forgets the pod, its workload and its certificate, and the node
    has no veth or route left for it. The pod is re-created afterwards."""
    pod, identity = "shop/doomed", "spiffe://cluster.local/ns/shop/sa/doomed"
    ip, netns, veth = (sandbox.pod_ip(pod), sandbox.pod_netns(pod),
                       sandbox.topology.pod(pod).host_veth)
    assert mesh.http_json(sandbox, "shop/client", ip, 8080)["pod"] == pod
    dump = mesh.config_dump(sandbox, "node2")
    assert pod in {p["uid"] for p in dump["pods"]}
    assert identity in {c["identity"] for c in dump["certificates"]}
    held = os.open(f"/var/run/netns/{netns}", os.O_RDONLY)  # keeps the netns alive to look in
    deleted = False
    try:
        assert "istio-ambient-nat" in _in_held_netns(held, "nft", "list", "tables")
        assert _listening_ports(held) >= HBONE_PORTS
        assert sandbox.delete(pod) == pod
        deleted = True
        assert netns not in list_netns()
        assert "istio-ambient" not in _in_held_netns(held, "nft", "list", "tables")
        mesh.poll_until(lambda: not HBONE_PORTS & _listening_ports(held), timeout=10,
                        what="ztunnel to close its listeners in the deleted pod's netns",
                        last=lambda: _listening_ports(held))

        def forgotten() -> bool:
            d = mesh.config_dump(sandbox, "node2")
            return (pod not in {p["uid"] for p in d["pods"]}
                    and "doomed" not in {w["name"] for w in d["workloads"]})

        mesh.poll_until(forgotten, timeout=15, what="node2's ztunnel to forget shop/doomed",
                        last=lambda: mesh.config_dump(sandbox, "node2")["pods"])
        mesh.wait_converged(sandbox)
        mesh.poll_until(lambda: identity not in {
            c["identity"] for c in mesh.config_dump(sandbox, "node2")["certificates"]},
            timeout=5, what=f"node2's ztunnel to drop the certificate of {identity}")
        os.close(held)  # the last reference: the kernel now destroys the netns and the veth
        held = -1
        mesh.poll_until(lambda: veth not in link_names(sandbox.node_netns("node2")), timeout=10,
                        what=f"the node end {veth} of the pod's veth to go")
        got = mesh.tcp_exchange(sandbox, "shop/client", ip, 8080, b"GET / HTTP/1.0\r\n\r\n",
                                timeout=3)
        assert not got.data, got  # nothing answers at the old address
        assert pod not in {p.key for p in sandbox.topology.pods}
    finally:
        if held >= 0:
            os.close(held)
        if deleted:
            with contextlib.suppress(Exception):
                sandbox.apply(mesh.MANIFESTS / "doomed" / "doomed.yaml")
    mesh.wait_redirection(sandbox, [pod], "enabled")
    assert mesh.http_json(sandbox, "shop/client", sandbox.pod_ip(pod), 8080)["pod"] == pod
