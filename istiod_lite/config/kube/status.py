"""How the Kubernetes source reports an invalid object on the object itself (pure reconcilers).

Called by `istiod_lite.config.kubernetes` after each cache update; it hands the results to
`meshcore.kube.KubeClient`, the one Kubernetes API client. (HTTPRoute `status.parents` is
`route_status`.)
* Istio CRDs (`kinds.WatchedKind.conditions`: AuthorizationPolicy, PeerAuthentication): a
  `status.conditions` entry of type `Accepted` — `False`/`Invalid` with the diagnostic as
  message while the object is invalid, flipped to `True`/`Accepted` once it is fixed. Objects
  we never marked invalid are left alone (we write status only to report a problem).
* Other kinds (core kinds, Gateway API, whose status belongs to other controllers): one
  `Warning` Kubernetes Event (reason `InvalidConfig`) each time the object's problem changes.
Invariants: `condition_patch` returns None when the object already says what we would write,
so patching never loops on the MODIFIED event our own patch causes. Other condition types in
the list are kept as they are (a merge patch replaces the whole list).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from istiod_lite.config.kube.kinds import WatchedKind
from istiod_lite.config.source import Diagnostic

CONDITION_TYPE = "Accepted"
REASON_INVALID = "Invalid"
REASON_ACCEPTED = "Accepted"
EVENT_REASON = "InvalidConfig"
COMPONENT = "istiod-lite"
_MAX_MESSAGE = 1024  # the API server truncates longer Event messages anyway


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def condition_patch(watched: WatchedKind, body: Mapping[str, Any],
                    diagnostic: Diagnostic | None, *, now: str) -> dict[str, Any] | None:
    """The merge patch for the `status` subresource, or None if nothing needs writing.

    `diagnostic` is the object's current problem (None: it is valid); `now` is an RFC 3339
    timestamp for `lastTransitionTime`.
    """
    if not watched.conditions:
        return None
    raw = _mapping(body.get("status")).get("conditions")
    conditions = [c for c in raw if isinstance(c, Mapping)] if isinstance(raw, list) else []
    current = next((c for c in conditions if c.get("type") == CONDITION_TYPE), None)
    if diagnostic is None:
        ours = current is not None and current.get("status") == "False" and \
            current.get("reason") == REASON_INVALID
        if not ours:
            return None
        desired: dict[str, Any] = {"type": CONDITION_TYPE, "status": "True",
                                   "reason": REASON_ACCEPTED,
                                   "message": "the object is valid and in use"}
    else:
        desired = {"type": CONDITION_TYPE, "status": "False", "reason": REASON_INVALID,
                   "message": diagnostic.message[:_MAX_MESSAGE]}
    generation = _mapping(body.get("metadata")).get("generation")
    if isinstance(generation, int) and generation > 0:
        desired["observedGeneration"] = generation
    if current is not None and all(current.get(k) == v for k, v in desired.items()):
        return None
    if current is not None and current.get("status") == desired["status"]:
        desired["lastTransitionTime"] = current.get("lastTransitionTime") or now
    else:
        desired["lastTransitionTime"] = now
    if current is None:
        updated = [dict(c) for c in conditions] + [desired]
    else:
        updated = [desired if c is current else dict(c) for c in conditions]
    return {"status": {"conditions": updated}}


def warning_event(watched: WatchedKind, body: Mapping[str, Any], diagnostic: Diagnostic | None,
                  previous: Diagnostic | None, *, now: str) -> dict[str, Any] | None:
    """A core/v1 Event body reporting a new or changed problem, or None.

    Only for kinds without our status condition; only when `diagnostic` differs from the
    object's `previous` one (so one event per problem, not one per watch event). Events of
    cluster-scoped objects go to the `default` namespace, as kubectl does.
    """
    if watched.conditions or diagnostic is None or diagnostic == previous:
        return None
    meta = _mapping(body.get("metadata"))
    name = meta.get("name") if isinstance(meta.get("name"), str) else ""
    namespace = meta.get("namespace") if watched.namespaced else None
    if not name:
        return None
    involved: dict[str, Any] = {"apiVersion": watched.api_version, "kind": watched.kind,
                                "name": name}
    if namespace:
        involved["namespace"] = namespace
    for src, dst in (("uid", "uid"), ("resourceVersion", "resourceVersion")):
        if isinstance(meta.get(src), str):
            involved[dst] = meta[src]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{name}.", "namespace": namespace or "default"},
        "involvedObject": involved,
        "type": "Warning",
        "reason": EVENT_REASON,
        "message": diagnostic.message[:_MAX_MESSAGE],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
