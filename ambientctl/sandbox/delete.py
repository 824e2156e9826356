"""Deleting one pod of a running sandbox, the way kubelet and the container runtime do.

Who calls it: `Sandbox.delete(pod)` (the e2e suite's "pod deleted" test, the demo). Order, as on
a node when a Pod object is deleted: the runtime calls the CNI chain with `DEL` (the real
`ambient-cni` plugin asks the node agent, which removes its in-pod rules and sends `DelWorkload`
to ztunnel, so ztunnel closes the pod's listeners and drops its proxy); the app is stopped;
the Pod disappears from the config source (its document is removed from the manifest folder
and its status overlay deleted, so istiod-lite stops pushing the workload); finally the pod's
network namespace goes, and with it the veth pair and the node's /32 route to the pod.

Invariants: the journal forgets the pod only after its netns is gone, so a crash half-way
leaves a record `down` still cleans; a CNI DEL error is raised (the pod stays, as a runtime
retries DEL) unless the node agent is not running (then there is nothing to undo on its side).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ambientctl.sandbox import cni, kernel, procs
from ambientctl.sandbox.errors import PodSetupError
from ambientctl.sandbox.progress import Progress
from ambientctl.sandbox.waypoints import component
from meshcore.model.pod_status import STATUS_DIR, remove_pod_status

if TYPE_CHECKING:
    from ambientctl.sandbox.core import Sandbox

_EXTENSIONS = (".yaml", ".yml")


def delete_pod(sb: Sandbox, ref: str, progress: Progress) -> str:
    """Delete pod `ref` (`ns/name` or a unique name); return its `ns/name` key."""
    topo = sb.topology
    pod = topo.pod(ref)
    node = topo.node(pod.node)
    path = kernel.netns_path(pod.netns)
    if procs.alive(sb.state, f"cni-agent-{node.name}") is not None:
        try:
            cni.invoke(sb.cni_node(node), "DEL", pod=pod, sandbox=sb.name, netns_path=path)
        except cni.CniCallError as exc:
            raise PodSetupError(f"pod {pod.key}: {exc}\n  see: ambientctl sandbox logs "
                                f"cni-agent-{pod.node}") from exc
        progress(f"CNI DEL {pod.key}")
    for comp in (f"app-{pod.namespace}-{pod.name}", component(pod.namespace, pod.name)):
        procs.stop(sb.state, comp, grace=2.0)  # the waypoint process too, for a waypoint pod
        sb.state.journal.get("components", {}).pop(comp, None)
    sb.state.save()
    removed = remove_pod_documents(sb.manifests, pod.namespace, pod.name)
    remove_pod_status(sb.manifests, pod.namespace, pod.name)
    progress(f"removed Pod {pod.key} from {', '.join(map(str, removed)) or 'the manifests'}")
    inode = kernel.netns_inode(pod.netns)
    if inode is not None:
        stray = kernel.pids_in_netns({inode})
        if stray:
            procs.terminate(stray, grace=2.0)
    kernel.delete_netns(pod.netns)
    sb.state.journal.get("pods", {}).pop(pod.key, None)
    with contextlib.suppress(ValueError):
        sb.state.journal.get("netns", []).remove(pod.netns)
    sb.state.save()
    progress(f"deleted network namespace {pod.netns}")
    return pod.key


def _is_pod(doc: Any, namespace: str, name: str) -> bool:
    if not isinstance(doc, dict) or doc.get("kind") != "Pod":
        return False
    meta = doc.get("metadata") or {}
    return meta.get("name") == name and (meta.get("namespace") or "default") == namespace


def remove_pod_documents(folder: Path, namespace: str, name: str) -> list[Path]:
    """Remove the Pod's YAML document from every file of `folder` that holds it.

    A file holding only that Pod is deleted; otherwise it is rewritten without it (comments
    of such a file are lost). Returns the files changed.
    """
    changed = []
    for file in sorted(folder.rglob("*")):
        rel = file.relative_to(folder)
        if (file.suffix not in _EXTENSIONS or not file.is_file()
                or any(part.startswith(".") for part in rel.parts) or rel.parts[0] == STATUS_DIR):
            continue
        try:
            docs = list(yaml.safe_load_all(file.read_text()))
        except (OSError, yaml.YAMLError):
            continue
        keep = [d for d in docs if d is not None and not _is_pod(d, namespace, name)]
        if len(keep) == len([d for d in docs if d is not None]):
            continue
        if keep:
            file.write_text(yaml.safe_dump_all(keep, sort_keys=False))
        else:
            file.unlink()
        changed.append(file)
    return changed
