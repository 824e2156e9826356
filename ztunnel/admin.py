"""ztunnel's admin (15000), readiness (15021) and metrics (15020) endpoints.

Called by `ztunnel.app`, which passes an `AdminView`: callables returning the current immutable
state (config snapshot, certificates, pods served, readiness). Handlers only read; changing the
log level (`POST /logging?level=debug` or `?<logger>=<level>`) is the one write, and it only
touches Python's logging configuration.

`/config_dump` has the sections `ambientctl ztunnel-config` reads: `workloads`, `services`,
`policies`, `certificates` (identity, expiry, state), `pods` (served by this node), `xds`
(connection and counters) and `node`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Any

from meshcore.admin import AdminResponse, Route
from meshcore.admin.http import AdminRequest
from meshcore.admin.jsonable import to_jsonable
from meshcore.wds import Snapshot

_LEVELS = {"trace": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO,
           "warning": logging.WARNING, "warn": logging.WARNING, "error": logging.ERROR,
           "off": logging.CRITICAL + 10}


@dataclasses.dataclass(frozen=True)
class AdminView:
    node: str
    snapshot: Callable[[], Snapshot]
    certificates: Callable[[], list[dict[str, Any]]]
    xds: Callable[[], dict[str, Any]]
    pods: Callable[[], list[dict[str, Any]]] = list
    ready: Callable[[], tuple[bool, str]] = lambda: (True, "")
    metrics_text: Callable[[], str] | None = None


def config_dump(view: AdminView) -> dict[str, Any]:
    snap = view.snapshot()
    return {
        "node": view.node,
        "generation": snap.generation,
        "workloads": [to_jsonable(w) for _, w in sorted(snap.workloads.items())],
        "services": [to_jsonable(s) for _, s in sorted(snap.services.items())],
        "policies": [to_jsonable(p) for _, p in sorted(snap.policies.items())],
        "certificates": view.certificates(),
        "pods": view.pods(),
        "xds": view.xds(),
    }


def admin_routes(view: AdminView) -> Mapping[str, Route]:
    def dump(_req: AdminRequest) -> AdminResponse:
        return AdminResponse.json(config_dump(view))

    def logging_route(req: AdminRequest) -> AdminResponse:
        if req.method == "POST" and req.query:
            for name, level in req.query.items():
                if level.lower() not in _LEVELS:
                    return AdminResponse.text(
                        f"unknown level {level!r}; use one of {', '.join(_LEVELS)}\n", 400)
                target = logging.getLogger() if name == "level" else logging.getLogger(name)
                target.setLevel(_LEVELS[level.lower()])
        root = logging.getLogger()
        levels = {"root": logging.getLevelName(root.level)}
        for name, logger in sorted(logging.Logger.manager.loggerDict.items()):
            if isinstance(logger, logging.Logger) and logger.level != logging.NOTSET:
                levels[name] = logging.getLevelName(logger.level)
        return AdminResponse.json(levels)

    return {"/config_dump": dump, "/logging": logging_route,
            **readiness_routes(view), **metrics_routes(view)}


def readiness_routes(view: AdminView) -> Mapping[str, Route]:
    def ready(_req: AdminRequest) -> AdminResponse:
        ok, why = view.ready()
        if ok:
            return AdminResponse.text("ready\n")
        return AdminResponse.text(f"not ready: {why}\n", 503)

    return {"/healthz/ready": ready}


def metrics_routes(view: AdminView) -> Mapping[str, Route]:
    def metrics(_req: AdminRequest) -> AdminResponse:
        if view.metrics_text is None:
            return AdminResponse.text("metrics are not enabled\n", 404)
        return AdminResponse(200, view.metrics_text().encode(), "text/plain; version=0.0.4")

    return {"/metrics": metrics, "/stats/prometheus": metrics}
