"""`down`: remove everything a sandbox made; idempotent and safe after a crash at any point.

Who calls it: `Sandbox.down()`. Order: CNI DEL for each pod while its node agent still runs
(as a runtime tearing down pod sandboxes; best effort), stop every recorded process (pid +
start time), kill anything else still inside one of the sandbox's namespaces (e.g. `exec`
leftovers), delete every netns whose name has the sandbox's prefix (recorded or not), remove
the pod status overlays the sandbox wrote (or the whole `.status/` if it created it), then the
state dir. Each step tolerates what is already gone, so running it twice is a no-op.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ambientctl.sandbox import cni, kernel, procs
from ambientctl.sandbox.topology import PodPlan, netns_prefix
from meshcore.model.pod_status import STATUS_DIR, pod_status_path

if TYPE_CHECKING:
    from ambientctl.sandbox.core import Sandbox


def teardown(sb: Sandbox, progress: Callable[[str], None]) -> bool:
    journal = sb.state.load()
    did = False
    pods = journal.get("pods", {})
    for key, pod in pods.items():
        comp = f"cni-agent-{pod['node']}"
        if procs.alive(sb.state, comp) is None:
            continue
        node_dir = sb.state.node_dir(pod["node"])
        node = cni.CniNode(agent_socket=str(node_dir / "cni-agent.sock"),
                           log_file=str(node_dir / "cni.log"))
        with contextlib.suppress(cni.CniCallError):
            cni.invoke(node, "DEL", pod=PodPlan(**pod), sandbox=sb.name,
                       netns_path=kernel.netns_path(pod["netns"]), timeout=10)
            progress(f"CNI DEL {key}")
    for comp in procs.components(sb.state):
        if procs.stop(sb.state, comp):
            progress(f"stopped {comp}")
            did = True
    prefix = netns_prefix(sb.name)
    ours = sorted(set(journal.get("netns", [])) | {
        n for n in kernel.list_netns() if n.startswith(prefix)})
    inodes = {i for n in ours if (i := kernel.netns_inode(n)) is not None}
    stray = kernel.pids_in_netns(inodes) if inodes else []
    if stray:
        procs.terminate(stray, grace=2.0)
        progress(f"killed {len(stray)} leftover process(es) in the sandbox's namespaces")
        did = True
    deleted = [name for name in ours if kernel.delete_netns(name)]
    if deleted:
        progress(f"deleted {len(deleted)} network namespace(s) {prefix}*")
        did = True
    manifests = journal.get("manifests")
    if manifests:
        did |= _remove_overlays(Path(manifests), pods, bool(journal.get("created_status_dir")))
    if sb.state.path.exists():
        shutil.rmtree(sb.state.path, ignore_errors=True)
        progress(f"removed {sb.state.path}")
        did = True
    sb.state.journal = {}
    return did


def _remove_overlays(folder: Path, pods: dict[str, dict[str, str]], created: bool) -> bool:
    status = folder / STATUS_DIR
    if created and status.exists():
        shutil.rmtree(status, ignore_errors=True)
        return True
    did = False
    for pod in pods.values():
        path = pod_status_path(folder, pod["namespace"], pod["name"])
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            did = True
    return did
