"""The operator's kinds and its API client (the shared `meshcore.kube.KubeClient`).

Called by the kopf handlers (`handlers.py`) and `controller.py`, which apply manifests from the
pure reconcilers; kopf itself does the watching. This module holds no HTTP code: it adds the
Mesh and ConfigMap kinds to the shared kind table, fixes the operator's user agent and 403
hint, and keeps the names the operator uses (`Api`, `ApiError`, `path`, `path_of`, `contains`).

Errors: `ApiError` (= `KubeApiError`) says whether a retry can help (`retryable`: unreachable,
409, 429, 5xx); handlers turn it into `kopf.TemporaryError` or `kopf.PermanentError`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import kopf

from istiod_lite.operator import components as c
from meshcore.kube import (
    BUILTIN_KINDS,
    Kind,
    KubeApiError,
    KubeClient,
    api_path,
    contains,
    login_from_environment,
)

ApiError = KubeApiError
KINDS: Mapping[str, Kind] = {
    **BUILTIN_KINDS,
    "ConfigMap": Kind("v1", "configmaps", True),
    c.MESH_KIND: Kind(f"{c.GROUP}/{c.VERSION}", c.MESH_PLURAL, False),
}
FORBIDDEN_HINT = "does the operator's ClusterRole allow this?"

__all__ = ["KINDS", "Api", "ApiError", "contains", "path", "path_of"]


def path(kind: str, namespace: str | None = None, name: str | None = None,
         subresource: str | None = None) -> str:
    """The API path of a collection or an object of `kind`."""
    return api_path(KINDS[kind], namespace, name, subresource)


def path_of(obj: Mapping[str, Any], subresource: str | None = None) -> str:
    meta = obj["metadata"]
    return path(obj["kind"], meta.get("namespace"), meta["name"], subresource)


def Api(login: Callable[[], kopf.ConnectionInfo] = login_from_environment, *,
        timeout: float = 30.0) -> KubeClient:
    """The operator's client: the shared one, with the Mesh kind and the operator's hint."""
    return KubeClient(login, user_agent="ambient-py-operator", forbidden_hint=FORBIDDEN_HINT,
                      kinds=KINDS, timeout=timeout)
