"""kmock fixtures for the operator: an emulated API serving every kind it touches, and a
running operator (the real kopf reactor with our registry) against it.

`cluster`: kmock's `KubernetesEmulator` with the kinds declared (plus a fix for kmock 0.8's URL
parser, which cannot address `/api/v1/namespaces[/<name>]`). `operator`: starts
`kopf.operator(registry=build_registry(...))` in a task and stops it with a deadline.
Helpers wait on the API's own watch streams (no sleeps), with DEADLINE as the only timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import kopf
import pytest
import pytest_asyncio

from istiod_lite.operator import api, controller, handlers
from tests.support.kmock_fixes import fix_namespaces_path

DEADLINE = 15.0  # seconds; never reached when it works
NOW = 1_800_000_000.0  # the operator's clock in these tests (deadlines are relative to it)

RESOURCES = {  # kmock key -> (kind, namespaced, subresources)
    "ambient-py.io/v1alpha1/meshes": ("Mesh", False, {"status"}),
    "gateway.networking.k8s.io/v1/gateways": ("Gateway", True, {"status"}),
    "v1/namespaces": ("Namespace", False, set()),
    "v1/nodes": ("Node", False, set()),
    "v1/pods": ("Pod", True, {"status"}),
    "v1/secrets": ("Secret", True, set()),
    "v1/configmaps": ("ConfigMap", True, set()),
    "v1/services": ("Service", True, {"status"}),
    "v1/serviceaccounts": ("ServiceAccount", True, set()),
    "v1/events": ("Event", True, set()),
    "apps/v1/deployments": ("Deployment", True, {"status"}),
    "apps/v1/daemonsets": ("DaemonSet", True, {"status"}),
    "rbac.authorization.k8s.io/v1/clusterroles": ("ClusterRole", False, set()),
    "rbac.authorization.k8s.io/v1/clusterrolebindings": ("ClusterRoleBinding", False, set()),
    "rbac.authorization.k8s.io/v1/roles": ("Role", True, set()),
    "rbac.authorization.k8s.io/v1/rolebindings": ("RoleBinding", True, set()),
    "apiextensions.k8s.io/v1/customresourcedefinitions": ("CustomResourceDefinition", False,
                                                         set()),
}
KEY_OF_KIND = {kind: key for key, (kind, _, _) in RESOURCES.items()}


@pytest.fixture()
def _namespaces_path_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    fix_namespaces_path(monkeypatch)


@pytest_asyncio.fixture()
async def cluster(kmock: Any, _namespaces_path_fix: None) -> Any:
    verbs = {"list", "watch", "get", "create", "patch", "delete"}
    for key, (kind, namespaced, subs) in RESOURCES.items():
        kmock.resources[key] = kmock.ResourceInfo(kind=kind, namespaced=namespaced,
                                                  verbs=verbs, subresources=subs)
    return kmock


def seed(cluster: Any, *objects: dict[str, Any]) -> None:
    """Store objects in the emulator directly (they exist before the operator starts)."""
    for obj in objects:
        meta = obj["metadata"]
        cluster.objects[KEY_OF_KIND[obj["kind"]], meta.get("namespace"), meta["name"]] = obj


def stored(cluster: Any, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
    """The emulator's current copy of an object (None if absent or deleted)."""
    plural = KEY_OF_KIND[kind].rsplit("/", 1)[1]
    for (res, ns, obj_name), obj in list(cluster.objects.items()):
        if (res.plural, ns, obj_name) == (plural, namespace, name) and not obj.deleted:
            return dict(obj.raw)
    return None


def stored_objects(cluster: Any) -> set[tuple[str, str | None, str]]:
    """(plural, namespace, name) of every object the emulator holds (not deleted)."""
    return {(res.plural, ns, name) for (res, ns, name), obj in list(cluster.objects.items())
            if not obj.deleted}


@pytest_asyncio.fixture()
async def operator(cluster: Any) -> AsyncIterator[Callable[..., Any]]:
    """A factory: `await operator(clock=...)` starts the operator against `cluster`.

    kopf runs on a thread with its own loop: `kopf.operator()` cancels every task created in
    its loop after it started, which would include pytest-asyncio's teardown task.
    """
    url = str(cluster.url)
    runs: list[tuple[threading.Event, threading.Thread, list[BaseException]]] = []

    async def start(*, clock: Callable[[], float] = lambda: NOW) -> controller.Operator:
        client = api.Api(login=lambda: kopf.ConnectionInfo(server=url))
        op = controller.Operator(client, clock=clock)
        registry = handlers.build_registry(op, rollout_interval=3600)
        settings = handlers.default_settings(post_events=False)
        settings.queueing.idle_timeout = 0.2  # idle workers go at once: fast, clean stop
        settings.queueing.exit_timeout = 0.2
        stop = threading.Event()
        errors: list[BaseException] = []

        async def main() -> None:
            try:
                await kopf.operator(
                    registry=registry, settings=settings,
                    clusterwide=True, standalone=True, stop_flag=stop)
            finally:
                await client.close()

        def thread_main() -> None:
            try:
                asyncio.run(main())
            except BaseException as exc:  # reported by the fixture's teardown
                errors.append(exc)

        thread = threading.Thread(target=thread_main, name="operator", daemon=True)
        thread.start()
        runs.append((stop, thread, errors))
        return op

    logging.getLogger("kopf").setLevel(logging.WARNING)
    yield start
    for stop, thread, errors in runs:
        stop.set()
        await asyncio.to_thread(thread.join, DEADLINE)
        assert not thread.is_alive(), "the operator did not stop within the deadline"
        assert not errors, errors


async def watch_until(cluster: Any, path: str,
                      predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Watch `path` (as `kubectl get -w` does) until an object satisfies `predicate`."""
    async with asyncio.timeout(DEADLINE), cluster.get(path, params={"watch": "true"}) as rsp:
        async for line in rsp.content:
            if line.strip():
                event = json.loads(line)
                if event.get("type") != "DELETED" and predicate(event["object"]):
                    return event["object"]
    raise AssertionError(f"watch of {path} ended")


async def api_call(cluster: Any, method: str, path: str, body: Any = None,
                   content_type: str = "application/json") -> Any:
    """One request to the emulated API (as kubectl would make it); fails on HTTP errors."""
    kwargs: dict[str, Any] = {}
    if body is not None:
        kwargs = {"json": body, "headers": {"Content-Type": content_type}}
    async with cluster.request(method, path, **kwargs) as rsp:
        payload = await rsp.json(content_type=None)
        assert rsp.status < 400, (method, path, rsp.status, payload)
        return payload


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    conds = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conds if c.get("type") == type_), None)


def has_condition(type_: str, status: str, reason: str | None = None
                  ) -> Callable[[dict[str, Any]], bool]:
    def check(obj: dict[str, Any]) -> bool:
        cond = condition(obj, type_)
        return cond is not None and cond["status"] == status and \
            (reason is None or cond["reason"] == reason)
    return check
