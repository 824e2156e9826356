"""`Sandbox`: the whole mesh on one machine in network namespaces (the Python API).

Who calls it: `ambientctl.__main__` (the `ambientctl sandbox ...` CLI is a thin layer over this),
the demo and the e2e suite. It builds the topology (`topology` plan, `pods`/`kernel` wiring),
starts the processes (`procs`): istiod-lite in the underlay netns on 172.30.0.1:15012, one CNI
node agent and one ztunnel per node netns (like host-network DaemonSets), then for each Pod of
the manifest folder plays the runtime: primary-CNI wiring, pod status overlay (IP, node, netns
annotation), the chained `ambient-cni` ADD, the sample app, and finally Ready. Waypoint
Gateways get the operator's objects and a `waypoint` process (`waypoints`); `delete` removes a
pod as kubelet would (`delete`).

Invariants:
- Every namespace, process and file is recorded in the state journal *before* the next step,
  so `down()` after a crash at any point removes everything (it also deletes any netns with
  the sandbox's prefix and kills any process still inside one of them).
- `up()` returns only when every component answers its readiness check; otherwise it raises
  `ComponentFailedError` naming the component (and leaves things in place for `logs`).
- Nothing here waits by sleeping for a fixed time: waits poll a condition until a deadline.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from ambientctl.sandbox import cni, kernel, procs, waypoints
from ambientctl.sandbox.errors import (
    NotRootError,
    PodSetupError,
    SandboxConfigError,
    SandboxStateError,
)
from ambientctl.sandbox.pods import AppSpec, app_spec, wire_node, wire_pod
from ambientctl.sandbox.progress import Progress, Steps, quiet
from ambientctl.sandbox.readiness import (
    agent_ready,
    app_ready,
    istiod_ready,
    wait_for,
    ztunnel_ready,
)
from ambientctl.sandbox.state import StateDir
from ambientctl.sandbox.topology import (
    BRIDGE,
    ISTIOD_IP,
    ISTIOD_PORT,
    UNDERLAY_CIDR,
    NodePlan,
    PodPlan,
    Topology,
    check_sandbox_name,
    netns_prefix,
    plan,
)
from meshcore.model.core import Pod
from meshcore.model.folder import scan_folder
from meshcore.model.pod_status import STATUS_DIR, remove_pod_status, write_pod_status

NETNS_ANNOTATION = "ambient-py.io/netns"
REDIRECTION_ANNOTATION = "ambient.istio.io/redirection"
DEFAULT_NAME = "sb"
UNIX_PATH_MAX = 107  # sun_path is 108 bytes including the NUL
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "sandbox"


def require_root() -> None:
    if os.geteuid() != 0:
        raise NotRootError(
            "ambientctl sandbox needs root: it creates network namespaces under /run/netns, "
            "veth pairs and nftables rules inside pod namespaces. Run it with sudo (rootless "
            "mode with user namespaces is not supported yet; see docs/sandbox.md).")


class Sandbox:
    """One named sandbox. `Sandbox(name)` is cheap; it reads its journal when present."""

    def __init__(self, name: str = DEFAULT_NAME, *, state_root: Path | None = None) -> None:
        self.name = check_sandbox_name(name)
        self.state = StateDir(name, state_root)
        self.state.load()

    # -- what it is ----------------------------------------------------------------------
    @property
    def topology(self) -> Topology:
        j = self.state.journal
        if "nodes" not in j:
            raise SandboxStateError(f"sandbox {self.name!r} is not up "
                                    "(run `ambientctl sandbox up`)")
        return plan(self.name, j["nodes"], [],
                    fixed={k: PodPlan(**v) for k, v in j.get("pods", {}).items()})

    @property
    def manifests(self) -> Path:
        return Path(self.state.journal["manifests"])

    def is_up(self) -> bool:
        return "nodes" in self.state.journal

    def pod_ip(self, pod: str) -> str:
        return self.topology.pod(pod).ip

    def pod_netns(self, pod: str) -> str:
        return self.topology.pod(pod).netns

    def node_netns(self, node: str) -> str:
        return self.topology.node(node).netns

    def node_of(self, pod: str) -> str:
        return self.topology.pod(pod).node

    def components(self) -> list[str]:
        return list(self.state.journal.get("components", {}))

    def log_path(self, component: str) -> Path:
        if component not in self.state.journal.get("components", {}):
            raise SandboxConfigError(f"no component {component!r} in sandbox {self.name!r}; "
                                     f"components: {', '.join(self.components()) or 'none'}")
        return self.state.log_file(component)

    # -- up ------------------------------------------------------------------------------
    def up(self, *, nodes: int = 2, manifests: Path | None = None, timeout: float = 60.0,
           progress: Progress = quiet) -> float:
        """Build and start everything; return the seconds it took. Raises on any failure."""
        require_root()
        leftovers = [n for n in kernel.list_netns() if n.startswith(netns_prefix(self.name))]
        if self.state.exists() or leftovers:
            raise SandboxStateError(
                f"sandbox {self.name!r} already exists (state {self.state.path}"
                f"{', namespaces ' + ', '.join(leftovers) if leftovers else ''}); "
                "run `ambientctl sandbox down` first")
        started = time.monotonic()
        source = self._source_folder(manifests)
        model_pods = self._read_pods(source)  # validate everything before creating anything
        for pod in model_pods:
            app_spec(pod)
        topo = plan(self.name, nodes, [(p.meta.namespace, p.meta.name, p.node_name)
                                       for p in model_pods])
        longest = self.state.node_dir(f"node{nodes}") / "cni-agent.sock"
        if len(str(longest).encode()) > UNIX_PATH_MAX:
            raise SandboxConfigError(
                f"unix socket path {longest} is longer than {UNIX_PATH_MAX} bytes; use a "
                "shorter state dir (AMBIENT_SANDBOX_STATE) or sandbox name")
        self.state.create()
        self.state.journal = {"name": self.name}
        folder = self._prepare_folder(source, copy=manifests is None)
        self.state.record("nodes", nodes)
        if waypoints.materialize(self, folder):  # the operator's objects for each waypoint
            model_pods = self._read_pods(folder)
            topo = plan(self.name, nodes, [(p.meta.namespace, p.meta.name, p.node_name)
                                           for p in model_pods])
        deadline = time.monotonic() + timeout
        step = Steps(progress)
        with step(f"underlay network {topo.underlay_netns} and {nodes} node namespace(s)"):
            self._build_network(topo)
        with step(f"istiod-lite (xDS + CA) on {ISTIOD_IP}:{ISTIOD_PORT}"):
            self._start_istiod(folder)
            wait_for(self, "istiod", deadline, lambda: istiod_ready(self))
        with step("CNI node agent and ztunnel on every node"):
            for node in topo.nodes:
                self._start_node(node, folder)
            for node in topo.nodes:
                wait_for(self, f"cni-agent-{node.name}", deadline,
                         partial(agent_ready, self, node))
                wait_for(self, f"ztunnel-{node.name}", deadline,
                         partial(ztunnel_ready, self, node))
        by_key = {f"{p.meta.namespace}/{p.meta.name}": p for p in model_pods}
        if topo.pods:
            with step(f"{len(topo.pods)} pod(s): netns, CNI ADD, app"):
                self._start_pods(topo, by_key, deadline)
        with step("control plane config pushed to every ztunnel"):
            # Pods' IPs and enrollment reach ztunnels asynchronously; traffic sent before this
            # would meet "no healthy upstream". Local import: checks builds on Sandbox.
            from ambientctl.sandbox.checks import wait_converged
            wait_converged(self, timeout=max(1.0, deadline - time.monotonic()))
        took = time.monotonic() - started
        self.state.record("up_seconds", round(took, 3))
        progress(f"sandbox {self.name!r} is ready in {took:.1f}s "
                 f"(state and logs in {self.state.path})")
        return took

    @staticmethod
    def _source_folder(manifests: Path | None) -> Path:
        if manifests is None:
            if not EXAMPLES.is_dir():
                raise SandboxConfigError(f"the bundled examples are not at {EXAMPLES}; "
                                         "pass a manifest folder with -f DIR")
            return EXAMPLES
        if not manifests.is_dir():
            raise SandboxConfigError(f"-f {manifests}: not a directory of manifests")
        return manifests.resolve()

    def _prepare_folder(self, source: Path, *, copy: bool) -> Path:
        folder = source
        if copy:  # the bundled examples are copied, so the repository stays untouched
            folder = self.state.path / "manifests"
            shutil.copytree(source, folder, ignore=shutil.ignore_patterns(".*"))
        self.state.record("manifests", str(folder))
        self.state.record("created_status_dir", not (folder / STATUS_DIR).exists())
        return folder

    def _read_pods(self, folder: Path) -> list[Pod]:
        fs = scan_folder(folder)
        errors = [d for d in fs.diagnostics if d.severity == "error"]
        if errors:
            raise SandboxConfigError("the manifest folder has errors:\n" + "\n".join(
                f"  {d.file}:{d.line}: {d.message}" for d in errors))
        return [p for p in fs.model.pods if not p.host_network and not p.terminal]

    def _build_network(self, topo: Topology) -> None:
        kernel.create_netns(topo.underlay_netns)
        self.state.append("netns", topo.underlay_netns)
        kernel.add_bridge(topo.underlay_netns, BRIDGE, ISTIOD_IP, UNDERLAY_CIDR.prefixlen)
        for node in topo.nodes:
            self.state.append("netns", node.netns)
            wire_node(topo.underlay_netns, node, topo.nodes, BRIDGE, UNDERLAY_CIDR.prefixlen)

    # -- components ----------------------------------------------------------------------
    def _start(self, component: str, argv: Sequence[str], netns: str | None) -> None:
        comps = self.state.journal.setdefault("components", {})
        comps[component] = {"argv": list(argv), "netns": netns}
        self.state.save()
        procs.start(self.state, component, argv, netns=netns)

    def restart(self, component: str) -> None:
        """Stop a component and start it again with the same command (e.g. a ztunnel)."""
        spec = self.state.journal.get("components", {}).get(component)
        if spec is None:
            raise SandboxConfigError(f"no component {component!r} in sandbox {self.name!r}")
        procs.stop(self.state, component)
        procs.start(self.state, component, spec["argv"], netns=spec["netns"])

    def stop(self, component: str) -> bool:
        """Stop one component (its pid file goes; `restart` brings it back)."""
        return procs.stop(self.state, component)

    def _start_istiod(self, folder: Path) -> None:
        tokens = []
        token_dir = self.state.path / "tokens"
        token_dir.mkdir(exist_ok=True)
        for node in range(1, self.state.journal["nodes"] + 1):
            token = secrets.token_hex(24)
            (token_dir / f"node{node}.token").write_text(token + "\n")
            tokens.append({"token": token, "node": f"node{node}"})
        tokens += waypoints.token_entries(self, waypoints.gateways(folder))
        (self.state.path / "tokens.yaml").write_text(yaml.safe_dump(tokens))
        self._start("istiod", [
            sys.executable, "-m", "istiod_lite", "--manifests", str(folder),
            "--ca-dir", str(self.state.path / "ca"), "--tokens",
            str(self.state.path / "tokens.yaml"), "--listen", f"{ISTIOD_IP}:{ISTIOD_PORT}",
            "--ip", ISTIOD_IP, "--root-cert-out", str(self.root_cert)],
            netns=self.topology.underlay_netns)

    @property
    def root_cert(self) -> Path:
        return self.state.path / "root-cert.pem"

    def cni_node(self, node: NodePlan) -> cni.CniNode:
        d = self.state.node_dir(node.name)
        return cni.CniNode(agent_socket=str(d / "cni-agent.sock"), log_file=str(d / "cni.log"))

    def _start_node(self, node: NodePlan, folder: Path) -> None:
        d = self.state.node_dir(node.name)
        d.mkdir(parents=True, exist_ok=True)
        self._start(f"cni-agent-{node.name}", [
            sys.executable, "-m", "cni_plugin", "agent", "--node", node.name,
            "--manifests", str(folder), "--agent-socket", str(d / "cni-agent.sock"),
            "--zds-socket", str(d / "ztunnel.sock")], netns=node.netns)
        self._start(f"ztunnel-{node.name}", [
            sys.executable, "-m", "ztunnel", "--node", node.name,
            "--xds-address", f"{ISTIOD_IP}:{ISTIOD_PORT}", "--root-cert", str(self.root_cert),
            "--token-file", str(self.state.path / "tokens" / f"{node.name}.token"),
            "--zds-socket", str(d / "ztunnel.sock"), "--admin", "127.0.0.1:15000",
            "--metrics", "0.0.0.0:15020", "--readiness", "0.0.0.0:15021",
            "--instance-ip", node.ip], netns=node.netns)

    # -- pods ----------------------------------------------------------------------------
    def _start_pods(self, topo: Topology, model: dict[str, Pod], deadline: float) -> None:
        apps: list[tuple[PodPlan, AppSpec]] = []
        for pod in topo.pods:
            if pod.key in self.state.journal.get("pods", {}):
                continue
            spec = app_spec(model[pod.key])
            self._create_pod(topo, pod, model[pod.key], spec)
            apps.append((pod, spec))
        for pod, spec in apps:
            comp = f"app-{pod.namespace}-{pod.name}"
            wait_for(self, comp, deadline, partial(app_ready, pod, spec))
            waypoints.start_if_waypoint(self, pod, model[pod.key].meta.labels, deadline)
            write_pod_status(self.manifests, pod.namespace, pod.name, ready=True)

    def _create_pod(self, topo: Topology, pod: PodPlan, model_pod: Pod, spec: AppSpec) -> None:
        node = topo.node(pod.node)
        pods = self.state.journal.setdefault("pods", {})
        pods[pod.key] = {f: getattr(pod, f) for f in PodPlan.__dataclass_fields__}
        self.state.append("netns", pod.netns)
        try:
            wire_pod(node, pod)
        except kernel.KernelError as exc:
            raise PodSetupError(f"pod {pod.key}: wiring its netns failed: {exc}") from exc
        path = kernel.netns_path(pod.netns)
        remove_pod_status(self.manifests, pod.namespace, pod.name)  # a fresh pod, no stale status
        write_pod_status(self.manifests, pod.namespace, pod.name, pod_ip=pod.ip,
                         node=pod.node, phase="Running", ready=False,
                         annotations={NETNS_ANNOTATION: path})
        try:
            cni.invoke(self.cni_node(node), "ADD", pod=pod, sandbox=self.name,
                       netns_path=path, uid=model_pod.meta.uid,
                       prev=cni.prev_result(pod, node.gateway, path))
        except cni.CniCallError as exc:
            raise PodSetupError(
                f"pod {pod.key} on {pod.node}: {exc}\n  see: ambientctl sandbox logs "
                f"cni-agent-{pod.node} (and ztunnel-{pod.node})") from exc
        self._start(f"app-{pod.namespace}-{pod.name}", spec.argv(pod.key), netns=pod.netns)

    def apply(self, file: Path, *, timeout: float = 30.0,
              progress: Progress = quiet) -> list[str]:
        """Copy a manifest into the folder; start any new Pods it adds. Returns their keys."""
        require_root()
        if not self.is_up():
            raise SandboxStateError(f"sandbox {self.name!r} is not up")
        if not file.is_file():
            raise SandboxConfigError(f"-f {file}: no such file")
        dest = self.manifests / file.name
        shutil.copyfile(file, dest)
        progress(f"applied {file} as {dest}")
        new_gateways = waypoints.materialize(self, self.manifests)
        if new_gateways:  # istiod-lite reads the tokens file when it starts
            waypoints.add_tokens(self, new_gateways)
            self.wait_ready(timeout=timeout)
        pods = self._read_pods(self.manifests)
        current = self.topology
        topo = plan(self.name, len(current.nodes),
                    [(p.meta.namespace, p.meta.name, p.node_name) for p in pods],
                    fixed={p.key: p for p in current.pods})
        new = [p.key for p in topo.pods if p.key not in self.state.journal.get("pods", {})]
        if new:
            with Steps(progress)(f"{len(new)} new pod(s): {', '.join(new)}"):
                self._start_pods(topo, {f"{p.meta.namespace}/{p.meta.name}": p for p in pods},
                                 time.monotonic() + timeout)
        return new

    def delete(self, pod: str, *, progress: Progress = quiet) -> str:
        """Delete one pod as kubelet would (CNI DEL, app stopped, Pod gone, netns removed)."""
        from ambientctl.sandbox.delete import delete_pod

        require_root()
        return delete_pod(self, pod, progress)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until every component and app answers its readiness check (or raise)."""
        deadline = time.monotonic() + timeout
        topo = self.topology
        wait_for(self, "istiod", deadline, lambda: istiod_ready(self))
        for node in topo.nodes:
            wait_for(self, f"cni-agent-{node.name}", deadline, partial(agent_ready, self, node))
            wait_for(self, f"ztunnel-{node.name}", deadline, partial(ztunnel_ready, self, node))

    # -- using it ------------------------------------------------------------------------
    def popen(self, pod: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start `argv` inside the pod's network namespace (the caller waits/kills it)."""
        with kernel.in_netns(self.pod_netns(pod)):
            return subprocess.Popen(list(argv), **kwargs)

    def exec(self, pod: str, argv: Sequence[str], *, timeout: float | None = 30.0,
             **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Run `argv` in the pod's netns; output captured as text (like subprocess.run)."""
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        kwargs.setdefault("text", True)
        proc = self.popen(pod, argv, **kwargs)
        with proc:
            try:
                out, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                raise
        return subprocess.CompletedProcess(list(argv), proc.returncode, out, err)

    def exec_replace(self, pod: str, argv: Sequence[str]) -> None:
        """Become `argv` inside the pod's netns (the CLI's `exec`; never returns)."""
        kernel.enter_netns_for_exec(self.pod_netns(pod))
        try:
            os.execvp(argv[0], list(argv))
        except OSError as exc:
            raise SandboxConfigError(f"exec {argv[0]!r} in pod {pod}: {exc}") from exc

    # -- status and down -----------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        from ambientctl.sandbox.report import collect_status

        return collect_status(self)

    def down(self, *, progress: Progress = quiet) -> bool:
        """Remove every namespace, process, rule and file of this sandbox; False if none."""
        from ambientctl.sandbox.teardown import teardown

        require_root()
        waypoints.cleanup(self.state.load())
        return teardown(self, progress)
