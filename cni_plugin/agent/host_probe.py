"""Keep the node's kubelet-probe exemption in step with the pods this agent enrolled (trio).

`HostProbe.sync(ips)` installs `redirect.host_rules` for exactly `ips` (the enrolled pods' IPs)
when they differ from what was last installed; the reconciler calls it right before a pod's
annotation says `enabled` (Istio's order: probe IPs in, then the annotation) and after every
pass and removal. A failure is logged and retried on the next pass (the last installed set keeps
working meanwhile). `find_kubelet_uid(proc_root)` is how the kubelet's user is found: the first
process named `kubelet` or `kubelite` with "kubelet" in its command line, or `k3s` (which embeds
the kubelet), as Istio's agent does; None when there is none (the caller falls back to root).

Who calls it: `cni_plugin.agent.app` (builds it), `cni_plugin.agent.reconciler` (syncs it).
Invariant: one install at a time (a lock), each computed from the IPs current when it starts.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import trio

from cni_plugin.errors import RedirectError
from cni_plugin.redirect import host_apply
from cni_plugin.redirect.host_rules import HostProbeConfig

log = logging.getLogger(__name__)

# (process name, must "kubelet" appear in its command line?)
KUBELET_PROCESSES = (("kubelet", True), ("kubelite", True), ("k3s", False))


def find_kubelet_uid(proc_root: str = "/proc") -> int | None:
    """The real uid of the node's kubelet process, or None if none is visible in `proc_root`."""
    root = Path(proc_root)
    try:
        pids = [p for p in os.listdir(root) if p.isdigit()]
    except OSError:
        return None
    found: dict[str, int] = {}
    for pid in pids:
        try:
            comm = (root / pid / "comm").read_text().strip()
            wanted = dict(KUBELET_PROCESSES).get(comm)
            if wanted is None or comm in found:
                continue
            if wanted and b"kubelet" not in (root / pid / "cmdline").read_bytes().lower():
                continue
            status = (root / pid / "status").read_text()
        except OSError:
            continue  # the process ended while we looked
        for line in status.splitlines():
            if line.startswith("Uid:"):
                found[comm] = int(line.split()[1])
    return next((found[name] for name, _ in KUBELET_PROCESSES if name in found), None)


class HostProbe:
    """The node's probe exemption as last installed by this agent."""

    def __init__(self, netns: str, kubelet_uid: int) -> None:
        self.netns = netns
        self.kubelet_uid = kubelet_uid
        self.installed: frozenset[str] | None = None  # None: not yet installed by us
        self.failures = 0
        self._lock = trio.Lock()

    async def sync(self, current_ips: Callable[[], frozenset[str]]) -> None:
        """Install the exemption for `current_ips()` unless that is what is installed."""
        async with self._lock:
            ips = current_ips()
            if ips == self.installed:
                return
            config = HostProbeConfig(self.kubelet_uid, ips)
            try:
                await trio.to_thread.run_sync(host_apply.install, self.netns, config)
            except (RedirectError, OSError) as exc:
                self.failures += 1
                log.error("kubelet probe exemption for %d pod IP(s) not installed in %s: %s "
                          "(retrying on the next pass)", len(ips), self.netns, exc)
                return
            log.info("kubelet probe exemption (uid %d) now covers %d pod IP(s)",
                     self.kubelet_uid, len(ips))
            self.installed = ips
