"""The operator's only Kubernetes API client: get, list, apply (create or merge-patch), delete.

Called by the kopf handlers (`handlers.py`) with manifests from the pure reconcilers; kopf
itself does the watching. A small asyncio/aiohttp client over a `kopf.ConnectionInfo` (the
operator's login handler hands kopf the same credentials), so tests point it at kmock.

Errors: `ApiError` carries the HTTP status and says whether a retry can help (`retryable`:
unreachable, 409, 429, 5xx); handlers turn it into `kopf.TemporaryError` or
`kopf.PermanentError`. Invariants: `apply` never sends a request when the live object already
contains the desired fields (no write storms); paths come only from `KINDS`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import kopf

from istiod_lite.errors import IstiodLiteError
from istiod_lite.operator import components as c

log = logging.getLogger("istiod_lite.operator.api")
MERGE_PATCH = "application/merge-patch+json"

# kind -> (apiVersion, plural, namespaced)
KINDS: dict[str, tuple[str, str, bool]] = {
    "Namespace": ("v1", "namespaces", False),
    "Node": ("v1", "nodes", False),
    "Pod": ("v1", "pods", True),
    "Secret": ("v1", "secrets", True),
    "Service": ("v1", "services", True),
    "ServiceAccount": ("v1", "serviceaccounts", True),
    "Deployment": ("apps/v1", "deployments", True),
    "DaemonSet": ("apps/v1", "daemonsets", True),
    "ClusterRole": ("rbac.authorization.k8s.io/v1", "clusterroles", False),
    "ClusterRoleBinding": ("rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    "Role": ("rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": ("rbac.authorization.k8s.io/v1", "rolebindings", True),
    c.MESH_KIND: (f"{c.GROUP}/{c.VERSION}", c.MESH_PLURAL, False),
    "Gateway": ("gateway.networking.k8s.io/v1", "gateways", True),
}


class ApiError(IstiodLiteError):
    """A request to the Kubernetes API failed (status 0: unreachable)."""

    def __init__(self, method: str, path: str, status: int, message: str) -> None:
        self.method, self.path, self.status, self.message = method, path, status, message
        hint = " (does the operator's ClusterRole allow this?)" if status == 403 else ""
        super().__init__(f"{method} {path}: HTTP {status or 'unreachable'}: {message}{hint}")

    @property
    def retryable(self) -> bool:
        return self.status in (0, 409, 429) or self.status >= 500


def path(kind: str, namespace: str | None = None, name: str | None = None,
         subresource: str | None = None) -> str:
    """The API path of a collection or an object of `kind`."""
    api_version, plural, namespaced = KINDS[kind]
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    if namespaced and namespace:
        base += f"/namespaces/{namespace}"
    out = f"{base}/{plural}"
    if name:
        out += f"/{name}"
    if subresource:
        out += f"/{subresource}"
    return out


def path_of(obj: Mapping[str, Any], subresource: str | None = None) -> str:
    meta = obj["metadata"]
    return path(obj["kind"], meta.get("namespace"), meta["name"], subresource)


def contains(live: Any, desired: Any) -> bool:
    """True when every field of `desired` is in `live` with equal value (lists compared whole)."""
    if isinstance(desired, Mapping):
        return isinstance(live, Mapping) and all(
            k in live and contains(live[k], v) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(live, list) and len(live) == len(desired) and all(
            contains(a, b) for a, b in zip(live, desired, strict=True))
    return bool(live == desired)


def login_from_environment() -> kopf.ConnectionInfo:
    """In-cluster service-account credentials, else the current kubeconfig context."""
    settings = kopf.OperatorSettings()
    info = kopf.login_with_service_account(settings=settings) or \
        kopf.login_with_kubeconfig(settings=settings)
    if info is None:
        raise ApiError("LOGIN", "-", 0, "no credentials: not in a pod with a service account "
                                        "token, and no $KUBECONFIG or ~/.kube/config")
    return info


class Api:
    """JSON requests with the credentials `login` returns; one aiohttp session per login."""

    def __init__(self, login: Callable[[], kopf.ConnectionInfo] = login_from_environment, *,
                 timeout: float = 30.0) -> None:
        self._login = login
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._info: kopf.ConnectionInfo | None = None
        self._session: aiohttp.ClientSession | None = None

    def credentials(self) -> kopf.ConnectionInfo:
        if self._info is None:
            self._info = self._login()
        return self._info

    async def get(self, api_path: str) -> dict[str, Any] | None:
        """The object at `api_path`, or None when it does not exist."""
        try:
            return await self.request("GET", api_path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def list(self, api_path: str, *, label_selector: str | None = None,
                   field_selector: str | None = None) -> list[dict[str, Any]]:
        params = {k: v for k, v in (("labelSelector", label_selector),
                                    ("fieldSelector", field_selector)) if v}
        body = await self.request("GET", api_path, params=params)
        return list(body.get("items") or [])

    async def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Create the object, or merge-patch it when it differs from `manifest`."""
        live = await self.get(path_of(manifest))
        if live is None:
            meta = manifest["metadata"]
            log.info("creating %s %s", manifest["kind"], meta["name"])
            return await self.request("POST", path(manifest["kind"], meta.get("namespace")),
                                      body=manifest)
        if contains(live, manifest):
            return live
        log.info("updating %s %s", manifest["kind"], manifest["metadata"]["name"])
        return await self.request("PATCH", path_of(manifest), body=manifest,
                                  content_type=MERGE_PATCH)

    async def create_if_missing(self, manifest: Mapping[str, Any]) -> bool:
        """Create the object unless it exists (never modifies it); True when created."""
        if await self.get(path_of(manifest)) is not None:
            return False
        meta = manifest["metadata"]
        try:
            await self.request("POST", path(manifest["kind"], meta.get("namespace")),
                               body=manifest)
        except ApiError as exc:
            if exc.status == 409:  # created meanwhile: fine, we never overwrite
                return False
            raise
        return True

    async def delete(self, api_path: str) -> bool:
        """Delete the object; False when it was already gone."""
        try:
            await self.request("DELETE", api_path)
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def patch_status(self, obj: Mapping[str, Any], status: Mapping[str, Any]) -> None:
        await self.request("PATCH", path_of(obj, "status"), body={"status": status},
                           content_type=MERGE_PATCH)

    async def request(self, method: str, api_path: str, *, body: Any = None,
                      params: Mapping[str, str] | None = None,
                      content_type: str = "application/json") -> dict[str, Any]:
        session = self._ensure_session()
        url = self.credentials().server.rstrip("/") + api_path
        headers = {"Content-Type": content_type} if body is not None else {}
        try:
            async with session.request(method, url, json=body, headers=headers,
                                       params=params or None) as rsp:
                try:
                    payload = await rsp.json(content_type=None)
                except ValueError:
                    payload = {"message": (await rsp.text())[:200]}
                if rsp.status == 401:
                    self._info = None  # next call logs in again (rotated token)
                    await self.close()
                if rsp.status >= 400:
                    msg = payload.get("message", "") if isinstance(payload, dict) else ""
                    raise ApiError(method, api_path, rsp.status, str(msg or rsp.reason))
                return payload if isinstance(payload, dict) else {}
        except aiohttp.ClientError as exc:
            raise ApiError(method, api_path, 0, f"{type(exc).__name__}: {exc}") from exc

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            info = self.credentials()
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=info.as_ssl_context()),
                headers={**info.as_http_headers(), "User-Agent": "ambient-py-operator"},
                timeout=self._timeout, trust_env=info.trust_env)
        return self._session

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
