"""The Mesh's status: conditions from what the operator observed, with reasons and messages.

Called by the kopf handlers after each reconcile or rollout step; the result is merge-patched
into the Mesh's `status` subresource by `api.patch_status`. Pure (the caller passes `now`).

Conditions (Kubernetes style: type, status, reason, message, lastTransitionTime,
observedGeneration):
* `Accepted` - the spec is valid (False/InvalidSpec names the field; nothing is created).
* `ControlPlaneReady`, `ZtunnelReady`, `CNIReady` - the component's workload is available.
* `Progressing` - the ztunnel rollout (`rollout.RolloutDecision.condition`): True/RollingOut,
  False/RolloutComplete or False/RolloutPaused (node and reason in the message).
* `Ready` - Accepted, all three components ready and the rollout not paused.
Invariant: lastTransitionTime changes only when a condition's status changes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from istiod_lite.operator.rollout import Condition, RolloutDecision


@dataclass(frozen=True)
class Observed:
    """Workload status as read from the API (None: the object does not exist yet)."""

    istiod: Mapping[str, Any] | None
    ztunnel: Mapping[str, Any] | None
    cni: Mapping[str, Any] | None


def deployment_condition(kind: str, obj: Mapping[str, Any] | None) -> Condition:
    if obj is None:
        return Condition(kind, "False", "NotCreated", "the Deployment does not exist yet")
    want = (obj.get("spec") or {}).get("replicas", 1)
    ready = (obj.get("status") or {}).get("readyReplicas", 0) or 0
    if ready >= want:
        return Condition(kind, "True", "Available", f"{ready}/{want} replicas ready")
    return Condition(kind, "False", "Unavailable", f"{ready}/{want} replicas ready")


def daemonset_condition(kind: str, obj: Mapping[str, Any] | None) -> Condition:
    if obj is None:
        return Condition(kind, "False", "NotCreated", "the DaemonSet does not exist yet")
    st = obj.get("status") or {}
    want = st.get("desiredNumberScheduled")
    ready = st.get("numberReady", 0) or 0
    if want is None:
        return Condition(kind, "Unknown", "Pending", "the DaemonSet has not been scheduled yet")
    if ready >= want:
        return Condition(kind, "True", "Available", f"{ready}/{want} nodes ready")
    return Condition(kind, "False", "Unavailable", f"{ready}/{want} nodes ready")


def invalid_spec_conditions(problem: str) -> list[Condition]:
    return [Condition("Accepted", "False", "InvalidSpec", problem),
            Condition("Ready", "False", "InvalidSpec", f"the spec is invalid: {problem}")]


def mesh_conditions(observed: Observed, rollout: RolloutDecision | None) -> list[Condition]:
    """All conditions of an accepted Mesh."""
    parts = [deployment_condition("ControlPlaneReady", observed.istiod),
             daemonset_condition("ZtunnelReady", observed.ztunnel),
             daemonset_condition("CNIReady", observed.cni)]
    conds = [Condition("Accepted", "True", "Valid", "the spec is valid"), *parts]
    if rollout is not None:
        conds.append(rollout.condition)
    not_ready = [p for p in parts if p.status != "True"]
    if rollout is not None and rollout.paused_on is not None:
        conds.append(Condition("Ready", "False", "RolloutPaused", rollout.condition.message))
    elif not_ready:
        msg = "; ".join(f"{p.type}: {p.message}" for p in not_ready)
        conds.append(Condition("Ready", "False", "ComponentsNotReady", msg))
    else:
        conds.append(Condition("Ready", "True", "Ready", "control plane, ztunnel and CNI ready"))
    return conds


def render_conditions(conds: Sequence[Condition], previous: Sequence[Mapping[str, Any]],
                      *, generation: int | None, now: dt.datetime) -> list[dict[str, Any]]:
    """Conditions as API dicts, keeping lastTransitionTime when the status did not change."""
    before = {p.get("type"): p for p in previous or ()}
    stamp = now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = []
    for cond in conds:
        prev = before.get(cond.type)
        since = prev.get("lastTransitionTime") if prev and prev.get("status") == cond.status \
            else stamp
        item: dict[str, Any] = {"type": cond.type, "status": cond.status, "reason": cond.reason,
                                "message": cond.message, "lastTransitionTime": since}
        if generation is not None:
            item["observedGeneration"] = generation
        out.append(item)
    return out
