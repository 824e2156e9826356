"""`ambientctl sandbox` end to end with the real components: up, traffic, status, down (root)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ambientctl.sandbox import Sandbox
from ambientctl.sandbox.checks import wait_converged
from ambientctl.sandbox.core import EXAMPLES
from ambientctl.sandbox.errors import SandboxStateError
from ambientctl.sandbox.kernel import addresses, link_names, list_netns
from ambientctl.sandbox.probes import http_get

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox needs root (network namespaces)"),
]

EXTRA_PODS = """\
apiVersion: v1
kind: Namespace
metadata:
  name: mesh
  labels: {istio.io/dataplane-mode: ambient}
---
apiVersion: v1
kind: Pod
metadata: {name: echo-3, namespace: mesh, labels: {app: echo}}
spec:
  containers: [{name: echo, ports: [{name: http, containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata:
  name: client-2
  namespace: mesh
  annotations: {sandbox.ambient-py.io/app: client}
spec:
  nodeName: node2
  containers: [{name: client}]
"""


def _sandbox_processes(name: str) -> list[str]:
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if f"/{name}/" in cmd:
                out.append(cmd)
    return out


@pytest.fixture(scope="module")
def state_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sandbox-state")


@pytest.fixture(scope="module")
def sandbox(state_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    folder = tmp_path_factory.mktemp("manifests")
    shutil.copytree(EXAMPLES, folder, dirs_exist_ok=True)
    (folder / "mesh.yaml").write_text(EXTRA_PODS)  # 2 pods enrolled from the start
    sb = Sandbox(f"t{secrets.token_hex(3)}", state_root=state_root)
    lines: list[str] = []
    try:
        took = sb.up(nodes=2, manifests=folder, timeout=60, progress=lines.append)
        print(f"\nsandbox up with 2 nodes and {len(sb.topology.pods)} pods: {took:.2f}s")
        print("\n".join(lines))
        yield sb
    finally:
        sb.down()


def test_namespaces_links_and_addresses_exist(sandbox: Sandbox):
    """Underlay, 2 nodes and 6 pods exist as netns, wired and addressed per the plan."""
    topo = sandbox.topology
    assert len(topo.pods) == 6
    names = set(list_netns())
    assert {topo.underlay_netns, *(n.netns for n in topo.nodes),
            *(p.netns for p in topo.pods)} <= names
    assert ("br0", "172.30.0.1", 24) in addresses(topo.underlay_netns)
    for node in topo.nodes:
        assert ("eth0", node.ip, 24) in addresses(node.netns)
        assert {p.host_veth for p in topo.pods if p.node == node.name} <= set(
            link_names(node.netns))
    for pod in topo.pods:
        assert ("eth0", pod.ip, 32) in addresses(pod.netns)


def test_http_between_pods_on_different_nodes(sandbox: Sandbox):
    """client (node1) → echo-2 (node2): the echo server answers and saw the client's pod IP."""
    target = sandbox.pod_ip("shop/echo-2")
    assert sandbox.node_of("shop/client") != sandbox.node_of("shop/echo-2")
    out = sandbox.exec("shop/client", [sys.executable, "-m", "ambientctl.sandbox.apps", "get",
                                       f"http://{target}:8080/hello", "-H", "X-Test: 1"])
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["pod"] == "shop/echo-2"
    assert doc["headers"]["X-Test"] == "1"
    assert doc["peer"].split(":")[0] == sandbox.pod_ip("shop/client")


def test_http_and_tcp_on_the_same_node_and_across(sandbox: Sandbox):
    """client → echo-1 (same node) over HTTP and client-2 → tcp-echo (node2) over TCP."""
    out = sandbox.exec("shop/client", [sys.executable, "-m", "ambientctl.sandbox.apps", "get",
                                       f"http://{sandbox.pod_ip('echo-1')}:8080/"])
    assert json.loads(out.stdout)["pod"] == "shop/echo-1"
    out = sandbox.exec("client-2", [sys.executable, "-m", "ambientctl.sandbox.apps", "tcp",
                                    f"{sandbox.pod_ip('tcp-echo')}:9000", "ping-42"])
    assert out.stdout == "ping-42"


def test_enrolled_at_cni_add_and_mixed_traffic(sandbox: Sandbox):
    """Pods of the labelled namespace are `enabled` right after up; meshed ↔ plain both work."""
    st = {p["pod"]: p for p in sandbox.status()["pods"]}
    assert {k: v["redirection"] for k, v in st.items() if k.startswith("mesh/")} == {
        "mesh/client-2": "enabled", "mesh/echo-3": "enabled"}
    assert {v["redirection"] for k, v in st.items() if k.startswith("shop/")} == {"-"}
    get = [sys.executable, "-m", "ambientctl.sandbox.apps", "get"]
    # meshed client → plain server (outbound captured, passthrough) and plain → meshed
    out = sandbox.exec("mesh/client-2", [*get, f"http://{sandbox.pod_ip('shop/echo-1')}:8080/"])
    assert json.loads(out.stdout)["pod"] == "shop/echo-1", out.stderr
    out = sandbox.exec("shop/client", [*get, f"http://{sandbox.pod_ip('mesh/echo-3')}:8080/"])
    assert json.loads(out.stdout)["pod"] == "mesh/echo-3", out.stderr
    # meshed → meshed: through both ztunnels
    out = sandbox.exec("mesh/client-2", [*get, f"http://{sandbox.pod_ip('mesh/echo-3')}:8080/"])
    doc = json.loads(out.stdout)
    assert doc["pod"] == "mesh/echo-3"
    assert doc["peer"].split(":")[0] == sandbox.pod_ip("mesh/client-2")


def test_pod_status_overlay_tells_the_control_plane(sandbox: Sandbox):
    """Every pod has IP, node, Ready and the netns annotation in the folder's status."""
    from meshcore.model.folder import scan_folder

    model = scan_folder(sandbox.manifests).model
    for pod in sandbox.topology.pods:
        mp = model.get("Pod", pod.namespace, pod.name)
        assert mp is not None and mp.pod_ips == (pod.ip,) and mp.node_name == pod.node
        assert mp.ready and mp.phase == "Running"
        assert mp.meta.annotations["ambient-py.io/netns"] == f"/var/run/netns/{pod.netns}"


def test_status_reports_nodes_pods_and_healthy_components(sandbox: Sandbox):
    """`status` (API and CLI) lists both nodes, all pods, 9+ components, all ready."""
    st = sandbox.status()
    assert [n["name"] for n in st["nodes"]] == ["node1", "node2"]
    assert len(st["pods"]) == 6 and all(p["running"] for p in st["pods"])
    assert {c["name"] for c in st["components"]} >= {
        "istiod", "ztunnel-node1", "ztunnel-node2", "cni-agent-node1", "cni-agent-node2"}
    assert st["healthy"], [c for c in st["components"] if not c["ready"]]
    cli = _cli(sandbox, "status")
    assert cli.returncode == 0, cli.stderr
    assert "shop/echo-2" in cli.stdout and "ztunnel-node2" in cli.stdout
    assert "healthy" in cli.stdout


def test_cli_exec_and_logs(sandbox: Sandbox):
    """`exec POD -- CMD` runs inside the pod netns; `logs` prints a component's log."""
    ip = sandbox.pod_ip("shop/echo-1")  # binding to it works only inside that pod's netns
    out = _cli(sandbox, "exec", "shop/echo-1", "--", sys.executable, "-c",
               f"import socket; socket.socket().bind(({ip!r}, 0)); print('bound')")
    assert out.returncode == 0 and out.stdout.strip() == "bound", out.stderr
    logs = _cli(sandbox, "logs", "ztunnel-node1")
    assert logs.returncode == 0 and "ztunnel on node node1" in logs.stdout


def test_debug_commands_reach_a_sandbox_node(sandbox: Sandbox):
    """`ambientctl ztunnel-config workloads --node node1` reads that node's ztunnel admin."""
    env = {**os.environ, "AMBIENT_SANDBOX_STATE": str(sandbox.state.path.parent),
           "AMBIENT_SANDBOX": sandbox.name}
    out = subprocess.run([sys.executable, "-m", "ambientctl", "ztunnel-config", "workloads",
                          "--node", "node1"], capture_output=True, text=True, env=env,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line.split() for line in out.stdout.splitlines()[1:]}
    assert rows["echo-3"][2] == sandbox.pod_ip("mesh/echo-3") and "HBONE" in rows["echo-3"]
    assert "HBONE" not in rows["echo-1"]  # shop is not enrolled
    bad = subprocess.run([sys.executable, "-m", "ambientctl", "ztunnel-config", "workloads",
                          "--node", "node9"], capture_output=True, text=True, env=env,
                         timeout=60, check=False)
    assert bad.returncode == 2 and "no node 'node9'" in bad.stderr


@pytest.mark.parametrize(("src", "dst"), [
    pytest.param("mesh/client-2", "mesh/echo-3:8080", id="captured-to-captured"),
    pytest.param("shop/client", "mesh/echo-3:8080", id="plain-to-captured"),
    pytest.param("mesh/client-2", "shop/echo-1:8080", id="captured-to-plain"),
])
def test_why_live_from_the_nodes_ztunnel_agrees_with_the_folder(sandbox: Sandbox, src: str,
                                                                 dst: str):
    """`why` read from the real ztunnel (SRC's node, and --node node1) says what -f says."""
    env = {**os.environ, "AMBIENT_SANDBOX_STATE": str(sandbox.state.path.parent),
           "AMBIENT_SANDBOX": sandbox.name}
    base = [sys.executable, "-m", "ambientctl", "why", src, dst, "-o", "json"]
    runs = {}
    for how, extra in (("folder", ["-f", str(sandbox.manifests)]), ("auto", []),
                       ("node1", ["--node", "node1"])):
        out = subprocess.run([*base, *extra], capture_output=True, text=True, env=env,
                             timeout=60, check=False)
        assert out.returncode == 0, (how, out.stderr)
        runs[how] = json.loads(out.stdout)
    assert runs["folder"]["state"].startswith(f"manifest folder {sandbox.manifests}")
    assert runs["auto"]["state"].startswith(f"live: ztunnel on node {sandbox.node_of(src)} ")
    assert runs["node1"]["state"].startswith("live: ztunnel on node node1 ")
    keys = ("outcome", "reason", "policy", "transport", "enforced_at", "peer_identity", "path",
            "source", "destination", "evaluation")
    want = {k: runs["folder"][k] for k in keys}
    assert {k: runs["auto"][k] for k in keys} == want
    assert {k: runs["node1"][k] for k in keys} == want


def test_up_twice_is_refused(sandbox: Sandbox, state_root: Path):
    """A second `up` of the same sandbox fails and says to run `down` first."""
    with pytest.raises(SandboxStateError, match="down"):
        Sandbox(sandbox.name, state_root=state_root).up(nodes=1)


def _cli(sb: Sandbox, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AMBIENT_SANDBOX_STATE": str(sb.state.path.parent)}
    return subprocess.run([sys.executable, "-m", "ambientctl", "sandbox", "--name", sb.name,
                           *args], capture_output=True, text=True, env=env, timeout=60,
                          check=False)


def test_down_leaves_nothing_even_after_a_lost_journal(tmp_path: Path):
    """After down: no amb-<name>- netns, no processes, no state dir; a second down is a no-op.

    A pod is added with `apply` first; then the journal is deleted before `down` (as after a
    crash while writing it): namespaces are still found by prefix, processes by netns."""
    sb = Sandbox(f"d{secrets.token_hex(3)}", state_root=tmp_path)
    manifests = tmp_path / "m"
    shutil.copytree(EXAMPLES, manifests)
    sb.up(nodes=2, manifests=manifests, timeout=60)
    extra = tmp_path / "web.yaml"
    extra.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: shop}\n"
                     "spec: {containers: [{name: w, ports: [{containerPort: 8000}]}]}\n")
    assert sb.apply(extra) == ["shop/web"]  # applied pods are created like those of `up`
    out = sb.exec("shop/client", [sys.executable, "-m", "ambientctl.sandbox.apps", "get",
                                  f"http://{sb.pod_ip('shop/web')}:8000/"])
    assert json.loads(out.stdout)["pod"] == "shop/web"
    assert _sandbox_processes(sb.name)
    status_dir = manifests / ".status"
    assert status_dir.is_dir()
    sb.state.journal_file.unlink()
    assert Sandbox(sb.name, state_root=tmp_path).down() is True
    prefix = f"amb-{sb.name}-"
    assert [n for n in list_netns() if n.startswith(prefix)] == []
    deadline = time.monotonic() + 10
    while _sandbox_processes(sb.name) and time.monotonic() < deadline:
        time.sleep(0.05)  # SIGKILLed processes may take a moment to be reaped by init
    assert _sandbox_processes(sb.name) == []
    assert not sb.state.path.exists()
    assert Sandbox(sb.name, state_root=tmp_path).down() is False


LABELLED = """\
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels: {istio.io/dataplane-mode: ambient}
"""


def _mtls_connections_seen_by(sb: Sandbox, node: str, source_workload: str) -> int:
    """Sum of istio_tcp_connections_opened_total (reporter=destination, mutual_tls) on a node."""
    got = http_get(sb.node_netns(node), "127.0.0.1", 15020, "/metrics")
    assert got is not None and got[0] == 200
    total = 0
    for line in got[1].splitlines():
        if (line.startswith("istio_tcp_connections_opened_total{")
                and 'reporter="destination"' in line
                and f'source_workload="{source_workload}"' in line
                and 'connection_security_policy="mutual_tls"' in line):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def test_labelling_the_namespace_enrolls_running_pods_and_traffic_is_mtls(tmp_path: Path):
    """`apply` a labelled Namespace: pods become `enabled`; pod IP and VIP calls go over mTLS."""
    sb = Sandbox(f"e{secrets.token_hex(3)}", state_root=tmp_path)
    manifests = tmp_path / "m"
    shutil.copytree(EXAMPLES, manifests)
    try:
        sb.up(nodes=2, manifests=manifests, timeout=60)
        label = tmp_path / "namespaces.yaml"
        label.write_text(LABELLED)
        sb.apply(label)
        deadline = time.monotonic() + 10  # the agent acts within ~1 s of the change
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            states = {p["pod"]: p["redirection"] for p in sb.status()["pods"]}
            if set(states.values()) == {"enabled"}:
                break
            time.sleep(0.2)
        assert set(states.values()) == {"enabled"}, states
        # `enabled` is written by the agent; the ztunnels learn it from istiod a moment later.
        # Until then the client's ztunnel still sees a plain-TCP destination and passes through.
        wait_converged(sb)
        before = _mtls_connections_seen_by(sb, "node2", "client")
        get = [sys.executable, "-m", "ambientctl.sandbox.apps", "get"]
        out = sb.exec("shop/client", [*get, f"http://{sb.pod_ip('shop/echo-2')}:8080/"])
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout)
        assert doc["pod"] == "shop/echo-2"
        assert doc["peer"].split(":")[0] == sb.pod_ip("shop/client")  # in-pod: real source IP
        assert _mtls_connections_seen_by(sb, "node2", "client") == before + 1
        out = sb.exec("shop/client", [sys.executable, "-m", "ambientctl.sandbox.apps", "tcp",
                                      "10.96.0.11:9000", "via-vip"])  # the tcp-echo Service VIP
        assert out.stdout == "via-vip", out.stderr
    finally:
        sb.down()


def test_up_that_does_not_get_ready_names_the_component_and_down_cleans(tmp_path: Path):
    """A deadline that cannot be met fails `up` naming istiod and its logs command; exit 1."""
    name = f"f{secrets.token_hex(3)}"
    env = {**os.environ, "AMBIENT_SANDBOX_STATE": str(tmp_path)}
    run = [sys.executable, "-m", "ambientctl", "sandbox", "--name", name]
    manifests = tmp_path / "m"
    shutil.copytree(EXAMPLES, manifests)
    out = subprocess.run([*run, "up", "-f", str(manifests), "--timeout", "0.001"],
                         capture_output=True, text=True, env=env, timeout=60, check=False)
    try:
        assert out.returncode == 1
        assert "istiod did not come up: not ready by the deadline" in out.stderr
        assert "ambientctl sandbox logs istiod" in out.stderr
        assert "down" in out.stderr
    finally:
        down = subprocess.run([*run, "down"], capture_output=True, text=True, env=env,
                              timeout=60, check=False)
    assert down.returncode == 0, down.stderr
    assert [n for n in list_netns() if n.startswith(f"amb-{name}-")] == []
    assert not (tmp_path / name).exists()
    assert not (manifests / ".status").exists()
