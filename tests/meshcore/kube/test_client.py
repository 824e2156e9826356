"""`meshcore.kube.KubeClient`, the one Kubernetes API client, against kmock's emulated API."""

from __future__ import annotations

import asyncio
import socket

import kopf
import pytest

from meshcore.kube import BUILTIN_KINDS, KubeApiError, KubeClient, api_path, contains
from tests.meshcore.kube.conftest import client_for, pod

PODS = "v1/pods"


@pytest.mark.parametrize(("kind", "ns", "name", "sub", "expected"), [
    pytest.param("Pod", "shop", None, None, "/api/v1/namespaces/shop/pods", id="collection"),
    pytest.param("Pod", "shop", "web", "status", "/api/v1/namespaces/shop/pods/web/status",
                 id="subresource"),
    pytest.param("Pod", None, None, None, "/api/v1/pods", id="all-namespaces"),
    pytest.param("ClusterRole", "ignored", "r", None,
                 "/apis/rbac.authorization.k8s.io/v1/clusterroles/r", id="cluster-scoped"),
    pytest.param("TokenReview", None, None, None,
                 "/apis/authentication.k8s.io/v1/tokenreviews", id="tokenreview"),
])
def test_api_paths(kind, ns, name, sub, expected):
    """Paths follow /api/v1 for the core group, /apis/<group>/<version> otherwise."""
    assert api_path(BUILTIN_KINDS[kind], ns, name, sub) == expected


@pytest.mark.parametrize(("live", "desired", "expected"), [
    pytest.param({"a": 1, "b": 2}, {"a": 1}, True, id="subset"),
    pytest.param({"a": {"x": 1}}, {"a": {"x": 2}}, False, id="nested-differs"),
    pytest.param({"l": [1, 2]}, {"l": [1]}, False, id="lists-whole"),
    pytest.param({}, {"a": None}, False, id="missing-key"),
])
def test_contains(live, desired, expected):
    """`contains` is a recursive subset test with lists compared whole."""
    assert contains(live, desired) is expected


@pytest.mark.asyncio
async def test_merge_patch_of_status_lands_on_the_object(cluster):
    """A merge patch on pods/status changes the annotation; spec is untouched."""
    cluster.objects[PODS, "shop", "web"] = pod("shop", "web")
    async with client_for(cluster) as api:
        out = await api.merge_patch(api.path("Pod", "shop", "web", "status"),
                                    {"metadata": {"annotations": {"a": "b"}}})
    assert out["metadata"]["annotations"] == {"a": "b"}
    assert cluster.objects[PODS, "shop", "web"]["spec"]["nodeName"] == "n1"
    request = next(iter(cluster["patch"]))
    assert request.subresource == "status" and request.name == "web"
    assert request.headers["Content-Type"] == "application/merge-patch+json"


@pytest.mark.asyncio
async def test_create_event_posts_to_the_namespace(cluster):
    """Events are created in the namespace their metadata names."""
    event = {"apiVersion": "v1", "kind": "Event",
             "metadata": {"name": "w.1", "namespace": "shop"}, "reason": "InvalidConfig"}
    async with client_for(cluster) as api:
        await api.create_event(event)
    assert cluster.objects["v1/events", "shop", "w.1"]["reason"] == "InvalidConfig"


@pytest.mark.asyncio
async def test_apply_creates_then_patches_only_on_difference(cluster):
    """apply: POST when missing, nothing when contained, PATCH when different."""
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "r"}, "rules": []}
    async with client_for(cluster) as api:
        await api.apply(role)
        await api.apply(role)
        await api.apply({**role, "rules": [{"verbs": ["get"]}]})
        assert await api.get(api.path("ClusterRole", name="missing")) is None
    assert len(list(cluster["post"])) == 1 and len(list(cluster["patch"])) == 1
    stored = cluster.objects["rbac.authorization.k8s.io/v1/clusterroles", None, "r"]
    assert stored["rules"] == [{"verbs": ["get"]}]


@pytest.mark.asyncio
async def test_list_with_field_selector_and_delete(cluster):
    """list passes the field selector; delete reports whether the object was there."""
    cluster.objects[PODS, "shop", "a"] = pod("shop", "a", node="n1")
    async with client_for(cluster) as api:
        items = await api.list(api.path("Pod"), field_selector="spec.nodeName=n1")
        assert [p["metadata"]["name"] for p in items] == ["a"]
        assert await api.delete(api.path("Pod", "shop", "a")) is True
        assert await api.delete(api.path("Pod", "shop", "a")) is False
    get = next(r for r in cluster["get"] if r.params)
    assert get.params["fieldSelector"] == "spec.nodeName=n1"


@pytest.mark.asyncio
async def test_watch_yields_events_after_the_list(cluster):
    """watch() streams ADDED/MODIFIED events of objects changed after the list."""
    async with client_for(cluster) as api:
        _, version = await api.list_with_version(api.path("Pod"))
        seen: list[tuple[str, str]] = []

        async def consume() -> None:
            async for event in api.watch(api.path("Pod"), resource_version=version):
                seen.append((event["type"], event["object"]["metadata"]["name"]))
                if len(seen) == 1:
                    return

        task = asyncio.create_task(consume())
        await api.create(pod("shop", "w"))
        async with asyncio.timeout(10):
            await task
    assert seen == [("ADDED", "w")]


@pytest.mark.asyncio
async def test_forbidden_is_not_retryable_and_carries_the_hint(cluster):
    """A 403 names the request and the component's RBAC hint; retrying will not help."""
    cluster.objects[PODS, "shop", "web"] = pod("shop", "web")
    cluster["patch"] << 403 << {"kind": "Status", "reason": "Forbidden", "message": "no"}
    async with client_for(cluster, forbidden_hint="see docs/cni.md") as api:
        with pytest.raises(KubeApiError) as info:
            await api.merge_patch(api.path("Pod", "shop", "web", "status"), {})
    err = info.value
    assert err.status == 403 and not err.retryable
    assert "PATCH /api/v1/namespaces/shop/pods/web/status: HTTP 403 Forbidden" in str(err)
    assert str(err).endswith("(see docs/cni.md)")


@pytest.mark.asyncio
async def test_unauthorized_logs_in_again_once(cluster):
    """A 401 calls the login function again and retries the request once."""
    cluster.objects[PODS, "shop", "web"] = pod("shop", "web")
    cluster["patch"][:1] << 401
    logins = []
    url = str(cluster.url)

    def login() -> kopf.ConnectionInfo:
        logins.append(url)
        return kopf.ConnectionInfo(server=url, token=f"token-{len(logins)}")

    async with KubeClient(login) as api:
        await api.merge_patch(api.path("Pod", "shop", "web"), {"metadata": {"labels": {}}})
    assert len(logins) == 2
    tokens = [r.headers.get("Authorization") for r in cluster["patch"]]
    assert tokens == ["Bearer token-1", "Bearer token-2"]


@pytest.mark.asyncio
async def test_unreachable_api_server_is_retryable():
    """A connection failure is reported as status 0, retryable."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        api = KubeClient(lambda: kopf.ConnectionInfo(server=f"http://127.0.0.1:{port}"))
        async with api:
            with pytest.raises(KubeApiError) as info:
                await api.create_event({"metadata": {"namespace": "shop"}})
    assert info.value.status == 0 and info.value.retryable
