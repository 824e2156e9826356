"""The ztunnel rollout decision: which node's ztunnel to replace next, or why we wait or pause.

Called by the kopf handlers (`handlers.py`) whenever a ztunnel pod, node or the Mesh changes
(and on a timer, for deadlines); they gather `NodeZtunnel` records (`observe_node`), call
`decide_rollout`, delete the pods named in `replace` and write `condition` to the Mesh status.

The ztunnel DaemonSet uses `updateStrategy: OnDelete`, so a new template version reaches a node
only when we delete that node's pod. Rules, in order:
1. A node is *done* when its pod runs the desired version, is Ready, and carries the
   `ambient-py.io/zds-synced` annotation (it re-received its pods from the CNI agent).
2. A node with the desired version that is not done is *in progress* - unless its pod reports a
   failure (crash loop, image pull, ...) or has not become done within the progress deadline;
   then it has *failed*. A node whose pod is terminating or missing is in progress.
3. Any failed node pauses the rollout (Progressing=False, reason RolloutPaused, the message names
   the node and why); nothing more is replaced until it recovers or the version changes.
4. Otherwise nodes on another version are replaced, not-Ready ones first, then by node name,
   while (in-progress nodes + replacements) <= maxUnavailable.
5. All nodes done: Progressing=False, reason RolloutComplete.
Pure: no I/O, no clock (the caller passes `now`).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from istiod_lite.operator import components as c

FAILURE_REASONS = frozenset({"CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull",
                             "CreateContainerConfigError", "CreateContainerError",
                             "InvalidImageName", "RunContainerError"})


class NodeState(enum.Enum):
    DONE = "done"
    IN_PROGRESS = "in-progress"
    FAILED = "failed"
    OUTDATED = "outdated"


@dataclass(frozen=True)
class NodeZtunnel:
    """What we observed about one node's ztunnel pod (`pod=None`: none scheduled yet)."""

    node: str
    pod: str | None = None
    version: str | None = None
    ready: bool = False
    synced: bool = False
    terminating: bool = False
    started_at: float | None = None  # pod creation, seconds since the epoch
    failure: str | None = None  # e.g. "CrashLoopBackOff: back-off restarting failed container"


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True" / "False" / "Unknown"
    reason: str
    message: str


@dataclass(frozen=True)
class RolloutDecision:
    replace: tuple[NodeZtunnel, ...]  # delete these pods now (their nodes get the new version)
    condition: Condition  # the Mesh's `Progressing` condition
    updated: int  # nodes done on the desired version
    total: int
    paused_on: str | None = None  # the failed node, when paused


def classify(n: NodeZtunnel, desired: str, deadline_seconds: int, now: float) -> NodeState:
    """Rules 1 and 2 for one node."""
    if n.pod is None or n.terminating:
        return NodeState.IN_PROGRESS
    if n.version != desired:
        return NodeState.OUTDATED
    if n.ready and n.synced:
        return NodeState.DONE
    if n.failure is not None:
        return NodeState.FAILED
    if n.started_at is not None and now - n.started_at > deadline_seconds:
        return NodeState.FAILED
    return NodeState.IN_PROGRESS


def why_failed(n: NodeZtunnel, deadline_seconds: int) -> str:
    """The human reason for a failed node, with the likely fix."""
    if n.failure is not None:
        return f"ztunnel pod {n.pod} failed: {n.failure}"
    if not n.ready:
        return (f"ztunnel pod {n.pod} not Ready after {deadline_seconds}s "
                f"(see `kubectl logs {n.pod}` and its readiness probe on :{c.ZTUNNEL_READY_PORT})")
    return (f"ztunnel pod {n.pod} is Ready but has not re-received its pods from the CNI agent "
            f"within {deadline_seconds}s (no {c.ZDS_SYNCED_ANNOTATION} annotation); "
            f"is the {c.CNI_NAME} agent running on {n.node}?")


def decide_rollout(nodes: Sequence[NodeZtunnel], *, desired: str, max_unavailable: int,
                   deadline_seconds: int, now: float) -> RolloutDecision:
    """Rules 3-5 over every node; `max_unavailable` is already resolved to a count >= 1."""
    states = {n.node: classify(n, desired, deadline_seconds, now) for n in nodes}
    total = len(nodes)
    updated = sum(1 for s in states.values() if s is NodeState.DONE)
    failed = sorted((n for n in nodes if states[n.node] is NodeState.FAILED), key=_by_node)
    if failed:
        first = failed[0]
        more = f" (and {len(failed) - 1} more node(s))" if len(failed) > 1 else ""
        msg = (f"rollout to {desired} paused at node {first.node}: "
               f"{why_failed(first, deadline_seconds)}{more}; {updated}/{total} nodes updated")
        return RolloutDecision((), Condition("Progressing", "False", "RolloutPaused", msg),
                               updated, total, paused_on=first.node)
    if updated == total:
        msg = f"all {total} node(s) run ztunnel {desired}"
        return RolloutDecision((), Condition("Progressing", "False", "RolloutComplete", msg),
                               updated, total)
    busy = [n for n in nodes if states[n.node] is NodeState.IN_PROGRESS]
    outdated = sorted((n for n in nodes if states[n.node] is NodeState.OUTDATED),
                      key=lambda n: (n.ready, n.node))
    budget = max(0, max_unavailable - len(busy))
    replace = tuple(outdated[:budget])
    moving = sorted([*(n.node for n in busy), *(n.node for n in replace)])
    msg = (f"rolling ztunnel to {desired}: {updated}/{total} nodes updated; "
           f"in progress: {', '.join(moving) or 'none'}")
    if not replace and outdated:
        msg += f"; waiting for {', '.join(n.node for n in busy)} before the next node"
    return RolloutDecision(replace, Condition("Progressing", "True", "RollingOut", msg),
                           updated, total)


def observe_node(node: str, pod: Mapping[str, Any] | None) -> NodeZtunnel:
    """Turn a node's ztunnel pod (as the API returns it) into a `NodeZtunnel`."""
    if pod is None:
        return NodeZtunnel(node)
    meta = pod.get("metadata", {})
    status = pod.get("status", {}) or {}
    ready = any(cond.get("type") == "Ready" and cond.get("status") == "True"
                for cond in status.get("conditions", []) or [])
    failure = None
    for cs in status.get("containerStatuses", []) or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in FAILURE_REASONS:
            failure = f"{waiting['reason']}: {waiting.get('message', '').strip()}".rstrip(": ")
            break
    if status.get("phase") == "Failed":
        failure = failure or f"pod phase Failed: {status.get('reason') or 'unknown reason'}"
    return NodeZtunnel(
        node=node, pod=meta.get("name"),
        version=(meta.get("labels") or {}).get(c.VERSION_LABEL),
        ready=ready,
        synced=c.ZDS_SYNCED_ANNOTATION in (meta.get("annotations") or {}),
        terminating=bool(meta.get("deletionTimestamp")),
        started_at=_timestamp(meta.get("creationTimestamp")),
        failure=failure)


def observe_cluster(nodes: Sequence[Mapping[str, Any]],
                    pods: Sequence[Mapping[str, Any]]) -> list[NodeZtunnel]:
    """One `NodeZtunnel` per node that takes part in the rollout, sorted by node name.

    A node takes part when it is Ready or has a ztunnel pod: a NotReady node without one
    cannot start a pod and must not hold the rollout. Where a node has two pods (the old one
    terminating, the new one created), the one not terminating counts.
    """
    by_node: dict[str, Mapping[str, Any]] = {}
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        current = by_node.get(node) if node else None
        if node and (current is None or current["metadata"].get("deletionTimestamp")):
            by_node[node] = pod
    out = []
    for node in sorted(nodes, key=lambda n: n["metadata"]["name"]):
        name = node["metadata"]["name"]
        ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in (node.get("status") or {}).get("conditions") or [])
        if ready or name in by_node:
            out.append(observe_node(name, by_node.get(name)))
    return out


def _timestamp(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _by_node(n: NodeZtunnel) -> str:
    return n.node
