"""kmock fixtures for the shared Kubernetes client: an emulated API with pods, namespaces,
events and a ClusterRole kind; `client_for(cluster)` makes a `KubeClient` pointed at it.

Includes the fix for kmock 0.8's URL parser, which cannot address the `namespaces` resource
itself (`/api/v1/namespaces[/<name>]` is read as "a namespace, no resource").
"""

from __future__ import annotations

from typing import Any

import kopf
import pytest
import pytest_asyncio

from meshcore.kube import KubeClient
from tests.support.kmock_fixes import fix_namespaces_path


@pytest.fixture()
def _namespaces_path_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    fix_namespaces_path(monkeypatch)


@pytest_asyncio.fixture()
async def cluster(kmock: Any, _namespaces_path_fix: None) -> Any:
    verbs = {"list", "watch", "get", "patch", "create", "delete"}
    kmock.resources["v1/pods"] = kmock.ResourceInfo(kind="Pod", namespaced=True, verbs=verbs,
                                                     subresources={"status"})
    kmock.resources["v1/namespaces"] = kmock.ResourceInfo(kind="Namespace", namespaced=False,
                                                           verbs=verbs)
    kmock.resources["v1/events"] = kmock.ResourceInfo(kind="Event", namespaced=True,
                                                       verbs={"create", "list"})
    kmock.resources["rbac.authorization.k8s.io/v1/clusterroles"] = kmock.ResourceInfo(
        kind="ClusterRole", namespaced=False, verbs=verbs)
    return kmock


def client_for(cluster: Any, **kwargs: Any) -> KubeClient:
    url = str(cluster.url)
    return KubeClient(lambda: kopf.ConnectionInfo(server=url), **kwargs)


def pod(namespace: str, name: str, *, node: str = "n1", uid: str = "",
        labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"namespace": namespace, "name": name, "uid": uid or f"uid-{name}",
                         "labels": labels or {}},
            "spec": {"nodeName": node, "serviceAccountName": "default"},
            "status": {"phase": "Running", "podIP": "10.1.0.5",
                       "podIPs": [{"ip": "10.1.0.5"}]}}
