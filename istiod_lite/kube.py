"""The one module of istiod_lite that writes to the Kubernetes API (CONVENTIONS #11).

Callers: the Kubernetes config source (`istiod_lite.config.kubernetes`: status conditions and
Events for invalid objects) and, later, the operator. kopf does the reading (list/watch); it
gets its credentials from the same `KubeApi.relogin`, so both sides share one login.
`KubeApi` is a small asyncio/aiohttp client over a `kopf.ConnectionInfo` (server, CA, token or
client certificate); `login_from_environment` finds one in-cluster (service account) or from a
kubeconfig, using kopf's own login helpers.

Errors: `KubeApiError` says whether retrying can help (`retryable`: 5xx, 429, connection
failures) and names the request. A 401 triggers one fresh login and one retry (rotated
service-account tokens).
Invariants: one aiohttp session per login, created lazily in the loop that first uses it, so
one `KubeApi` serves one event loop (the config source's lives on its kopf thread); close()
is idempotent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import kopf

from istiod_lite.config.kube.kinds import WatchedKind
from istiod_lite.errors import IstiodLiteError

log = logging.getLogger("istiod_lite.kube")
MERGE_PATCH = "application/merge-patch+json"
USER_AGENT = "istiod-lite"


class KubeApiError(IstiodLiteError):
    """A Kubernetes API request failed (status 0: we could not reach the API server)."""

    def __init__(self, method: str, path: str, status: int, reason: str, message: str) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.reason = reason
        self.message = message
        super().__init__(str(self))

    @property
    def retryable(self) -> bool:
        return self.status == 0 or self.status == 429 or self.status >= 500

    def __str__(self) -> str:
        what = f"HTTP {self.status} {self.reason}" if self.status else self.reason
        hint = ""
        if self.status == 403:
            hint = " (does the istiod-lite ClusterRole grant this verb? see " \
                   "docs/kubernetes-source.md)"
        return f"{self.method} {self.path}: {what}: {self.message}{hint}"


class KubeLoginError(IstiodLiteError):
    """No Kubernetes credentials were found (not in a pod, no kubeconfig)."""


def login_from_environment() -> kopf.ConnectionInfo:
    """In-cluster service-account credentials, else the current kubeconfig context."""
    settings = kopf.OperatorSettings()
    info = kopf.login_with_service_account(settings=settings) or \
        kopf.login_with_kubeconfig(settings=settings)
    if info is None:
        raise KubeLoginError("no Kubernetes credentials: not running in a pod with a service "
                             "account token, and neither $KUBECONFIG nor ~/.kube/config exists")
    return info


class KubeApi:
    """Writes to the API with the credentials `login` returns (called again after a 401)."""

    def __init__(self, login: Callable[[], kopf.ConnectionInfo] = login_from_environment, *,
                 timeout: float = 30.0) -> None:
        self._login_fn = login
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._info: kopf.ConnectionInfo | None = None
        self._session: aiohttp.ClientSession | None = None

    def credentials(self) -> kopf.ConnectionInfo:
        """The current credentials (logging in on first use)."""
        if self._info is None:
            self._info = self._login_fn()
        return self._info

    async def relogin(self) -> kopf.ConnectionInfo:
        """Call the login function again (after a 401; kopf's login handler calls this)."""
        info = self._login_fn()
        if info != self._info:
            await self.close()
        self._info = info
        return info

    async def patch_status(self, watched: WatchedKind, namespace: str, name: str,
                           patch: Mapping[str, Any]) -> dict[str, Any]:
        """Merge-patch the object's `status` subresource; returns the patched object."""
        path = watched.path(namespace, name, "status")
        return await self.request("PATCH", path, body=patch, content_type=MERGE_PATCH)

    async def create_event(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """Create a core/v1 Event in the namespace named by its metadata."""
        namespace = event["metadata"]["namespace"]
        return await self.request("POST", f"/api/v1/namespaces/{namespace}/events", body=event)

    async def request(self, method: str, path: str, *, body: Mapping[str, Any] | None = None,
                      content_type: str = "application/json") -> dict[str, Any]:
        """One API call; JSON in and out. Raises KubeApiError."""
        for attempt in (1, 2):
            session = self._ensure_session()
            url = self.credentials().server.rstrip("/") + path
            headers = {"Content-Type": content_type} if body is not None else {}
            try:
                async with session.request(method, url, json=body, headers=headers) as rsp:
                    if rsp.status == 401 and attempt == 1:
                        log.info("%s %s: 401 Unauthorized; logging in again", method, path)
                        await self.relogin()
                        continue
                    payload = await _json(rsp)
                    if rsp.status >= 400:
                        raise KubeApiError(method, path, rsp.status,
                                           str(payload.get("reason") or rsp.reason or ""),
                                           str(payload.get("message") or ""))
                    return payload
            except aiohttp.ClientError as exc:
                raise KubeApiError(method, path, 0, "API server unreachable",
                                   f"{type(exc).__name__}: {exc}") from exc
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            info = self.credentials()
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=info.as_ssl_context()),
                headers={**info.as_http_headers(), "User-Agent": USER_AGENT},
                timeout=self._timeout, trust_env=info.trust_env)
        return self._session

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def __aenter__(self) -> KubeApi:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def _json(rsp: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        payload = await rsp.json(content_type=None)
    except (ValueError, aiohttp.ContentTypeError):
        text = await rsp.text()
        return {"message": text[:200]}
    return payload if isinstance(payload, dict) else {}
