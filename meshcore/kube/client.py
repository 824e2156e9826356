"""The one Kubernetes API client of ambient-py (asyncio, aiohttp), shared by every component.

Callers: istiod_lite's Kubernetes config source (status conditions, Events) and CA
(TokenReview, pod look-ups), the operator (get/list/apply/delete), the CNI node agent (pod and
namespace list/watch, the redirection annotation). kopf, where a component uses it for watching,
gets its credentials from the same `KubeClient.credentials()` / `relogin()`.

`KubeClient` wraps a `kopf.ConnectionInfo` (server, CA, token or client certificate);
`login_from_environment` finds one in-cluster (service account) or from a kubeconfig, using
kopf's own login helpers. Paths of kinds come from `resources` (extendable per client).

Errors: `KubeApiError` names the request and says whether retrying can help (`retryable`:
unreachable, 409, 429, 5xx); a 403 carries the component's RBAC hint. A 401 triggers one fresh
login and one retry (rotated service-account tokens). `KubeLoginError`: no credentials at all.
Invariants: one aiohttp session per login, created lazily in the loop that first uses it, so
one client serves one event loop; `close()` is idempotent; `apply` sends nothing when the live
object already contains the desired fields (no write storms).
"""

from __future__ import annotations

import builtins
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp
import kopf

from meshcore.errors import MeshCoreError
from meshcore.kube.resources import BUILTIN_KINDS, Kind, api_path, contains

log = logging.getLogger("meshcore.kube")
MERGE_PATCH = "application/merge-patch+json"


class KubeError(MeshCoreError):
    """Base of the Kubernetes client's errors."""


class KubeLoginError(KubeError):
    """No Kubernetes credentials were found (not in a pod, no kubeconfig)."""


class KubeApiError(KubeError):
    """A Kubernetes API request failed (status 0: we could not reach the API server)."""

    def __init__(self, method: str, path: str, status: int, reason: str, message: str,
                 *, forbidden_hint: str = "") -> None:
        self.method = method
        self.path = path
        self.status = status
        self.reason = reason
        self.message = message
        self.forbidden_hint = forbidden_hint
        super().__init__(str(self))

    @property
    def retryable(self) -> bool:
        """Can the same request succeed later? (unreachable, conflict, throttled, 5xx)"""
        return self.status in (0, 409, 429) or self.status >= 500

    def __str__(self) -> str:
        what = f"HTTP {self.status} {self.reason}".rstrip() if self.status \
            else f"unreachable: {self.reason}"
        hint = f" ({self.forbidden_hint})" if self.status == 403 and self.forbidden_hint else ""
        return f"{self.method} {self.path}: {what}: {self.message}{hint}"


def login_from_environment() -> kopf.ConnectionInfo:
    """In-cluster service-account credentials, else the current kubeconfig context."""
    settings = kopf.OperatorSettings()
    info = kopf.login_with_service_account(settings=settings) or \
        kopf.login_with_kubeconfig(settings=settings)
    if info is None:
        raise KubeLoginError("no Kubernetes credentials: not running in a pod with a service "
                             "account token, and neither $KUBECONFIG nor ~/.kube/config exists")
    return info


class KubeClient:
    """JSON requests with the credentials `login` returns (called again after a 401)."""

    def __init__(self, login: Callable[[], kopf.ConnectionInfo] = login_from_environment, *,
                 user_agent: str = "ambient-py", forbidden_hint: str = "",
                 kinds: Mapping[str, Kind] = BUILTIN_KINDS, timeout: float = 30.0) -> None:
        self._login_fn = login
        self.user_agent = user_agent
        self.forbidden_hint = forbidden_hint
        self.kinds = kinds
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._info: kopf.ConnectionInfo | None = None
        self._session: aiohttp.ClientSession | None = None

    # -- credentials -------------------------------------------------------------------------
    def credentials(self) -> kopf.ConnectionInfo:
        """The current credentials (logging in on first use)."""
        if self._info is None:
            self._info = self._login_fn()
        return self._info

    async def relogin(self) -> kopf.ConnectionInfo:
        """Call the login function again (after a 401; kopf's login handlers call this)."""
        info = self._login_fn()
        if info != self._info:
            await self.close()
        self._info = info
        return info

    # -- paths -------------------------------------------------------------------------------
    def path(self, kind: str, namespace: str | None = None, name: str | None = None,
             subresource: str | None = None) -> str:
        """The API path of a collection or object of `kind` (a key of `self.kinds`)."""
        return api_path(self.kinds[kind], namespace, name, subresource)

    def path_of(self, obj: Mapping[str, Any], subresource: str | None = None) -> str:
        meta = obj["metadata"]
        return self.path(obj["kind"], meta.get("namespace"), meta["name"], subresource)

    # -- verbs -------------------------------------------------------------------------------
    async def get(self, path: str) -> dict[str, Any] | None:
        """The object at `path`, or None when it does not exist."""
        try:
            return await self.request("GET", path)
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def list(self, path: str, *, label_selector: str | None = None,
                   field_selector: str | None = None) -> list[dict[str, Any]]:
        """The items of a collection (one page: our collections are small)."""
        body = await self.list_with_version(path, label_selector=label_selector,
                                            field_selector=field_selector)
        return body[0]

    async def list_with_version(self, path: str, *, label_selector: str | None = None,
                                field_selector: str | None = None,
                                ) -> tuple[builtins.list[dict[str, Any]], str]:
        """The items and the list's resourceVersion (where a following `watch` starts)."""
        body = await self.request("GET", path, params=_selectors(label_selector, field_selector))
        version = str((body.get("metadata") or {}).get("resourceVersion") or "")
        return list(body.get("items") or []), version

    async def watch(self, path: str, *, resource_version: str = "",
                    label_selector: str | None = None, field_selector: str | None = None,
                    timeout_seconds: int = 300) -> AsyncIterator[dict[str, Any]]:
        """Watch events (`{"type": ADDED|MODIFIED|DELETED|BOOKMARK|ERROR, "object": ...}`)
        until the server ends the stream; an `ERROR` event (e.g. 410 Gone) is yielded as is."""
        params = {**_selectors(label_selector, field_selector), "watch": "true",
                  "timeoutSeconds": str(timeout_seconds)}
        if resource_version:
            params["resourceVersion"] = resource_version
        session = self._ensure_session()
        url = self.credentials().server.rstrip("/") + path
        timeout = aiohttp.ClientTimeout(total=None, sock_read=timeout_seconds + 30)
        try:
            async with session.get(url, params=params, timeout=timeout) as rsp:
                if rsp.status >= 400:
                    raise await self._error("GET", path, rsp)
                async for line in rsp.content:
                    if line.strip():
                        try:
                            event = json.loads(line)
                        except ValueError:
                            log.warning("watch %s: skipping an unreadable line", path)
                            continue
                        if isinstance(event, dict):
                            yield event
        except aiohttp.ClientError as exc:
            raise KubeApiError("GET", path, 0, "API server unreachable",
                               f"{type(exc).__name__}: {exc}") from exc

    async def create(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        meta = manifest["metadata"]
        return await self.request("POST", self.path(manifest["kind"], meta.get("namespace")),
                                  body=manifest)

    async def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Create the object, or merge-patch it when it differs from `manifest`."""
        live = await self.get(self.path_of(manifest))
        if live is None:
            log.info("creating %s %s", manifest["kind"], manifest["metadata"]["name"])
            return await self.create(manifest)
        if contains(live, manifest):
            return live
        log.info("updating %s %s", manifest["kind"], manifest["metadata"]["name"])
        return await self.merge_patch(self.path_of(manifest), manifest)

    async def create_if_missing(self, manifest: Mapping[str, Any]) -> bool:
        """Create the object unless it exists (never modifies it); True when created."""
        if await self.get(self.path_of(manifest)) is not None:
            return False
        try:
            await self.create(manifest)
        except KubeApiError as exc:
            if exc.status == 409:  # created meanwhile: fine, we never overwrite
                return False
            raise
        return True

    async def delete(self, path: str) -> bool:
        """Delete the object; False when it was already gone."""
        try:
            await self.request("DELETE", path)
        except KubeApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def merge_patch(self, path: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """JSON merge patch (RFC 7386) of the object (or subresource) at `path`."""
        return await self.request("PATCH", path, body=patch, content_type=MERGE_PATCH)

    async def patch_status(self, obj: Mapping[str, Any], status: Mapping[str, Any]
                           ) -> dict[str, Any]:
        """Merge `status` into the object's `status` subresource."""
        return await self.merge_patch(self.path_of(obj, "status"), {"status": status})

    async def create_event(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """Create a core/v1 Event in the namespace named by its metadata."""
        namespace = event["metadata"]["namespace"]
        return await self.request("POST", f"/api/v1/namespaces/{namespace}/events", body=event)

    async def request(self, method: str, path: str, *, body: Any = None,
                      params: Mapping[str, str] | None = None,
                      content_type: str = "application/json") -> dict[str, Any]:
        """One API call; JSON in and out. Raises KubeApiError."""
        for attempt in (1, 2):
            session = self._ensure_session()
            url = self.credentials().server.rstrip("/") + path
            headers = {"Content-Type": content_type} if body is not None else {}
            try:
                async with session.request(method, url, json=body, headers=headers,
                                           params=params or None) as rsp:
                    if rsp.status == 401 and attempt == 1:
                        log.info("%s %s: 401 Unauthorized; logging in again", method, path)
                        await self.relogin()
                        continue
                    if rsp.status >= 400:
                        raise await self._error(method, path, rsp)
                    return await _json(rsp)
            except aiohttp.ClientError as exc:
                raise KubeApiError(method, path, 0, "API server unreachable",
                                   f"{type(exc).__name__}: {exc}") from exc
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def _error(self, method: str, path: str, rsp: aiohttp.ClientResponse) -> KubeApiError:
        payload = await _json(rsp)
        return KubeApiError(method, path, rsp.status,
                            str(payload.get("reason") or rsp.reason or ""),
                            str(payload.get("message") or ""),
                            forbidden_hint=self.forbidden_hint)

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            info = self.credentials()
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=info.as_ssl_context()),
                headers={**info.as_http_headers(), "User-Agent": self.user_agent},
                timeout=self._timeout, trust_env=info.trust_env)
        return self._session

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def _selectors(label_selector: str | None, field_selector: str | None) -> dict[str, str]:
    return {k: v for k, v in (("labelSelector", label_selector),
                              ("fieldSelector", field_selector)) if v}


async def _json(rsp: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        payload = await rsp.json(content_type=None)
    except (ValueError, aiohttp.ContentTypeError):
        text = await rsp.text()
        return {"message": text[:200]}
    return payload if isinstance(payload, dict) else {}
