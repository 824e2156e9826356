"""`istiod_lite.kube.KubeApi`, the only API writer, against kmock's emulated API."""

from __future__ import annotations

import socket

import kopf
import pytest

from istiod_lite.config.kube.kinds import BY_KIND
from istiod_lite.kube import KubeApi, KubeApiError
from tests.istiod_lite.kube import factories as f
from tests.istiod_lite.kube.conftest import api_for, resource_key

AP = BY_KIND["AuthorizationPolicy"]
CONDITION = {"type": "Accepted", "status": "False", "reason": "Invalid", "message": "bad"}


@pytest.mark.asyncio
async def test_patch_status_merges_into_the_object(cluster):
    """A status merge patch lands on the object; spec is untouched."""
    key = (resource_key("authorizationpolicies"), "shop", "p")
    cluster.objects[key] = f.authorization_policy("shop", "p")
    async with api_for(cluster) as api:
        out = await api.patch_status(AP, "shop", "p", {"status": {"conditions": [CONDITION]}})
    assert out["status"]["conditions"] == [CONDITION]
    stored = cluster.objects[key]
    assert stored["status"]["conditions"] == [CONDITION]
    assert stored["spec"]["action"] == "DENY"
    request = next(iter(cluster["patch"]))
    assert request.subresource == "status" and request.name == "p"
    assert request.headers["Content-Type"] == "application/merge-patch+json"


@pytest.mark.asyncio
async def test_create_event_posts_to_the_namespace(cluster):
    """Events are created in the namespace their metadata names."""
    event = {"apiVersion": "v1", "kind": "Event",
             "metadata": {"name": "w.1", "namespace": "shop"}, "reason": "InvalidConfig"}
    async with api_for(cluster) as api:
        await api.create_event(event)
    assert cluster.objects["v1/events", "shop", "w.1"]["reason"] == "InvalidConfig"


@pytest.mark.asyncio
async def test_forbidden_is_not_retryable_and_points_at_rbac(cluster):
    """A 403 names the request and the RBAC document; retrying will not help."""
    cluster.objects[resource_key("authorizationpolicies"), "shop", "p"] = \
        f.authorization_policy("shop", "p")
    cluster["patch"] << 403 << {"kind": "Status", "reason": "Forbidden", "message": "no"}
    async with api_for(cluster) as api:
        with pytest.raises(KubeApiError) as info:
            await api.patch_status(AP, "shop", "p", {"status": {}})
    err = info.value
    assert err.status == 403 and not err.retryable
    assert "PATCH /apis/security.istio.io/v1/namespaces/shop/authorizationpolicies/p/status" \
        in str(err)
    assert "docs/kubernetes-source.md" in str(err)


@pytest.mark.asyncio
async def test_unauthorized_logs_in_again_once(cluster):
    """A 401 calls the login function again and retries the request once."""
    cluster.objects[resource_key("authorizationpolicies"), "shop", "p"] = \
        f.authorization_policy("shop", "p")
    cluster["patch"][:1] << 401
    logins = []
    url = str(cluster.url)

    def login() -> kopf.ConnectionInfo:
        logins.append(url)
        return kopf.ConnectionInfo(server=url, token=f"token-{len(logins)}")

    async with KubeApi(login) as api:
        await api.patch_status(AP, "shop", "p", {"status": {"conditions": [CONDITION]}})
    assert len(logins) == 2
    tokens = [r.headers.get("Authorization") for r in cluster["patch"]]
    assert tokens == ["Bearer token-1", "Bearer token-2"]


@pytest.mark.asyncio
async def test_unreachable_api_server_is_retryable():
    """A connection failure is reported as status 0, retryable."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        api = KubeApi(lambda: kopf.ConnectionInfo(server=f"http://127.0.0.1:{port}"))
        async with api:
            with pytest.raises(KubeApiError) as info:
                await api.create_event({"metadata": {"namespace": "shop"}})
    assert info.value.status == 0 and info.value.retryable
