"""The ambient-py operator (kopf): Mesh → control plane, ztunnel and CNI DaemonSets; waypoints.

Layout (CONVENTIONS #11): `handlers.py` (kopf decorators only) → `controller.py` (glue:
observe, decide, apply) → pure `spec.py`, `reconcile.py`, `rollout.py`, `status.py`,
`waypoints.py`; `api.py` configures the shared API client (`meshcore.kube`).
`components.py` is the one place that spells each component's command line. Run it with
`python -m istiod_lite.operator`; docs/operator.md describes the Mesh resource.
"""
