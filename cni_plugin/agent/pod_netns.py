"""Finding the network namespace of a pod that no CNI ADD announced to this agent.

Pods already running when their namespace gets labelled, or when the agent (re)starts, were never
(or no longer are) announced by a CNI ADD; the agent must find their netns itself.

Manifest-folder world (the local sandbox) — the rule the sandbox satisfies:
  a pod's netns is the path in the pod annotation `ambient-py.io/netns` (NETNS_ANNOTATION),
  e.g. `/run/netns/<name>`, written into the pod status overlay next to the pod IP with
  `write_pod_status(dir, ns, name, annotations={"ambient-py.io/netns": path}, ...)`
  when the sandbox creates the pod's netns (and dropped with the overlay when it deletes it).
  The path must be absolute and name a network namespace when the agent looks; otherwise the
  pod counts as not discoverable (logged, retried on the next model change).

Kubernetes world (as Istio's `cni/pkg/nodeagent/podcgroups.go`): scan `/proc/<pid>/cgroup` for
the pod UID (cgroupfs `.../pod<uid>/<container>`; systemd `...-pod<uid with _>.slice/...`),
skip processes in the agent's own (host) netns (host-network pods), and use
`/proc/<pid>/ns/net` of the lowest such pid (normally the pause container). The agent runs in the
host PID namespace; `proc_root` is configurable for tests and for `/host/proc` mounts.

Who calls it: `cni_plugin.agent.reconciler` through a `NetnsFinder`. Reads files only.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Collection, Iterable, Mapping
from typing import Protocol

from meshcore.model import Pod

NETNS_ANNOTATION = "ambient-py.io/netns"
NS_GET_NSTYPE = 0xB703
CLONE_NEWNET = 0x40000000

PodKey = tuple[str, str]

# A pod UID in a cgroup path: "pod" + 36-char UUID with "-" (cgroupfs) or "_" (systemd).
_POD_UID = re.compile(
    r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})(?![0-9a-f])")


def is_netns(path: str) -> bool:
    """True when `path` opens and is a network namespace (NS_GET_NSTYPE)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return bool(fcntl.ioctl(fd, NS_GET_NSTYPE) == CLONE_NEWNET)
    except OSError:
        return False
    finally:
        os.close(fd)


def netns_from_annotation(pod: Pod) -> str | None:
    """The sandbox rule: the absolute path in `ambient-py.io/netns`, if it is a netns now."""
    path = pod.annotations.get(NETNS_ANNOTATION, "")
    if not path.startswith("/") or not is_netns(path):
        return None
    return path


def pod_uid_from_cgroup(text: str) -> str | None:
    """The pod UID in the content of a `/proc/<pid>/cgroup` file (None: not a pod process)."""
    for line in text.splitlines():
        match = _POD_UID.search(line.rpartition(":")[2])
        if match:
            return match.group(1).replace("_", "-")
    return None


def scan_proc(proc_root: str = "/proc", uids: Collection[str] | None = None, *,
              host_netns: str = "/proc/self/ns/net") -> dict[str, str]:
    """pod UID → `<proc_root>/<pid>/ns/net` for pods with a process outside the host netns
    (only the UIDs in `uids`, when given); the lowest pid wins."""
    try:
        host_inode = os.stat(host_netns).st_ino
    except OSError:
        host_inode = -1
    found: dict[str, tuple[int, str]] = {}
    try:
        entries = os.listdir(proc_root)
    except OSError:
        return {}
    for entry in entries:
        if not entry.isdigit():
            continue
        base = os.path.join(proc_root, entry)
        try:
            with open(os.path.join(base, "cgroup"), encoding="utf-8", errors="replace") as f:
                uid = pod_uid_from_cgroup(f.read())
            if uid is None or (uids is not None and uid not in uids):
                continue
            netns = os.path.join(base, "ns", "net")
            if os.stat(netns).st_ino == host_inode:
                continue  # host-network pod: never enrolled
        except OSError:
            continue  # the process ended while we looked
        pid = int(entry)
        if uid not in found or pid < found[uid][0]:
            found[uid] = (pid, netns)
    return {uid: path for uid, (_, path) in found.items()}


class NetnsFinder(Protocol):
    """Finds the netns of pods not announced by CNI ADD; returns the ones it found."""

    def find(self, pods: Iterable[Pod]) -> Mapping[PodKey, str]: ...


class AnnotationFinder:
    """Manifest-folder source: the `ambient-py.io/netns` annotation (see module docstring)."""

    def find(self, pods: Iterable[Pod]) -> Mapping[PodKey, str]:
        found = {}
        for pod in pods:
            path = netns_from_annotation(pod)
            if path is not None:
                found[pod.namespace, pod.name] = path
        return found


class ProcFinder:
    """Kubernetes source: one /proc scan per call, matched on the pods' UIDs."""

    def __init__(self, proc_root: str = "/proc") -> None:
        self.proc_root = proc_root

    def find(self, pods: Iterable[Pod]) -> Mapping[PodKey, str]:
        by_uid = {p.meta.uid: (p.namespace, p.name) for p in pods if p.meta.uid}
        if not by_uid:
            return {}
        found = scan_proc(self.proc_root, set(by_uid),
                          host_netns=os.path.join(self.proc_root, "self", "ns", "net"))
        return {by_uid[uid]: path for uid, path in found.items()}
