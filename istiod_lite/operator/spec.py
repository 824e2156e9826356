"""The `Mesh` resource's spec: parsed and validated into frozen dataclasses, or refused.

Called by the kopf handlers (`handlers.py`) before anything is reconciled, and by tests. The
CRD's OpenAPI schema (charts/ambient-py-operator/crds/) catches most mistakes at admission;
this module is the authority all the same (an API server without schema enforcement, or an
old CRD, must not make the operator half-create a mesh). A refusal is `MeshSpecError`, which
names the field (`spec.ztunnel.rollout.maxUnavailable`) and what would be accepted; the
handler turns it into the `Accepted=False` condition and creates nothing.

Invariants: every MeshSpec field is validated; defaults are stated once, here (the CRD schema
and chart values repeat them for `kubectl explain`, tests check they agree).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from istiod_lite.errors import IstiodLiteError

DEFAULT_HUB = "ambient-py"
DEFAULT_IMAGE_NAME = "ambient-py"
DEFAULT_NAMESPACE = "istio-system"
DEFAULT_TRUST_DOMAIN = "cluster.local"
DEFAULT_LOG_LEVEL = "info"
DEFAULT_PROGRESS_DEADLINE = 300
LOG_LEVELS = ("debug", "info", "warning", "error")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")

_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
_PERCENT = re.compile(r"^([0-9]{1,3})%$")


class MeshSpecError(IstiodLiteError):
    """The user's Mesh spec is invalid (their fault; not retried until the spec changes)."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


@dataclass(frozen=True)
class Resources:
    requests: tuple[tuple[str, str], ...] = ()
    limits: tuple[tuple[str, str], ...] = ()

    def manifest(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        if self.requests:
            out["requests"] = dict(self.requests)
        if self.limits:
            out["limits"] = dict(self.limits)
        return out


@dataclass(frozen=True)
class Component:
    image: str
    version: str
    log_level: str
    resources: Resources = field(default_factory=Resources)


@dataclass(frozen=True)
class RolloutPolicy:
    max_unavailable: int | None = 1  # absolute; None when given as a percentage
    max_unavailable_percent: int | None = None
    progress_deadline_seconds: int = DEFAULT_PROGRESS_DEADLINE

    def budget(self, nodes: int) -> int:
        """How many nodes may be without a ready, synced ztunnel at once (at least 1)."""
        if self.max_unavailable_percent is not None:
            return max(1, math.floor(nodes * self.max_unavailable_percent / 100))
        return max(1, self.max_unavailable or 1)


@dataclass(frozen=True)
class MeshSpec:
    namespace: str
    trust_domain: str
    image_pull_policy: str
    istiod: Component
    istiod_replicas: int
    ztunnel: Component
    rollout: RolloutPolicy
    cni: Component
    cni_bin_dir: str
    cni_conf_dir: str
    waypoint: Component


def parse_mesh_spec(spec: Mapping[str, Any] | None) -> MeshSpec:
    """Validate a Mesh `spec` (as the API returns it) → MeshSpec; MeshSpecError names the field."""
    s = _mapping(spec or {}, "spec")
    _no_unknown(s, "spec", {"version", "hub", "image", "imagePullPolicy", "namespace",
                            "trustDomain", "logLevel", "istiod", "ztunnel", "cni", "waypoint"})
    version = _str(s, "spec", "version", None)
    if version is None:
        raise MeshSpecError("spec.version", "required: the image tag of the components, "
                                            "e.g. \"0.1.0\"")
    _match(_TAG, version, "spec.version", "an image tag ([A-Za-z0-9_.-], at most 128 chars)")
    hub = _str(s, "spec", "hub", DEFAULT_HUB)
    _match(_IMAGE, hub, "spec.hub", "an image repository prefix such as \"ghcr.io/acme\"")
    image = _str(s, "spec", "image", None)
    if image is not None:
        _match(_IMAGE, image, "spec.image", "an image reference without a tag")
    base_image = image or f"{hub}/{DEFAULT_IMAGE_NAME}"
    namespace = _str(s, "spec", "namespace", DEFAULT_NAMESPACE)
    _match(_DNS_LABEL, namespace, "spec.namespace", "a namespace name (RFC 1123 label)")
    trust_domain = _str(s, "spec", "trustDomain", DEFAULT_TRUST_DOMAIN)
    _match(_DOMAIN, trust_domain, "spec.trustDomain", "a lower-case DNS name, e.g. cluster.local")
    pull = _str(s, "spec", "imagePullPolicy", "IfNotPresent")
    _one_of(pull, PULL_POLICIES, "spec.imagePullPolicy")
    log_level = _str(s, "spec", "logLevel", DEFAULT_LOG_LEVEL)
    _one_of(log_level, LOG_LEVELS, "spec.logLevel")

    def component(key: str, extra: set[str]) -> tuple[Component, Mapping[str, Any]]:
        where = f"spec.{key}"
        c = _mapping(s.get(key) or {}, where)
        _no_unknown(c, where, {"version", "logLevel", "resources", *extra})
        v = _str(c, where, "version", version)
        _match(_TAG, v, f"{where}.version", "an image tag")
        lvl = _str(c, where, "logLevel", log_level)
        _one_of(lvl, LOG_LEVELS, f"{where}.logLevel")
        res = _resources(c.get("resources"), f"{where}.resources")
        return Component(image=f"{base_image}:{v}", version=v, log_level=lvl, resources=res), c

    istiod, istiod_raw = component("istiod", {"replicas"})
    replicas = _int(istiod_raw, "spec.istiod", "replicas", 1, minimum=1)
    ztunnel, zt_raw = component("ztunnel", {"rollout"})
    rollout = _rollout(zt_raw.get("rollout"), "spec.ztunnel.rollout")
    cni, cni_raw = component("cni", {"binDir", "confDir"})
    bin_dir = _path(cni_raw, "spec.cni", "binDir", "/opt/cni/bin")
    conf_dir = _path(cni_raw, "spec.cni", "confDir", "/etc/cni/net.d")
    waypoint, _ = component("waypoint", set())
    return MeshSpec(namespace=namespace, trust_domain=trust_domain, image_pull_policy=pull,
                    istiod=istiod, istiod_replicas=replicas, ztunnel=ztunnel, rollout=rollout,
                    cni=cni, cni_bin_dir=bin_dir, cni_conf_dir=conf_dir, waypoint=waypoint)


def _rollout(raw: Any, where: str) -> RolloutPolicy:
    r = _mapping(raw or {}, where)
    _no_unknown(r, where, {"maxUnavailable", "progressDeadlineSeconds"})
    deadline = _int(r, where, "progressDeadlineSeconds", DEFAULT_PROGRESS_DEADLINE, minimum=10)
    mu = r.get("maxUnavailable", 1)
    if isinstance(mu, str):
        m = _PERCENT.match(mu)
        if not m or not 1 <= int(m.group(1)) <= 100:
            raise MeshSpecError(f"{where}.maxUnavailable",
                                f"{mu!r} is not a count >= 1 or a percentage 1%..100%")
        return RolloutPolicy(None, int(m.group(1)), deadline)
    if isinstance(mu, bool) or not isinstance(mu, int) or mu < 1:
        raise MeshSpecError(f"{where}.maxUnavailable",
                            f"{mu!r} is not a count >= 1 or a percentage such as \"25%\"")
    return RolloutPolicy(mu, None, deadline)


def _resources(raw: Any, where: str) -> Resources:
    r = _mapping(raw or {}, where)
    _no_unknown(r, where, {"requests", "limits"})
    parts: dict[str, tuple[tuple[str, str], ...]] = {}
    for key in ("requests", "limits"):
        m = _mapping(r.get(key) or {}, f"{where}.{key}")
        items = []
        for name, value in sorted(m.items()):
            text = str(value) if isinstance(value, int | float) and not isinstance(value, bool) \
                else value
            if not isinstance(text, str) or not _QUANTITY.match(text):
                raise MeshSpecError(f"{where}.{key}.{name}",
                                    f"{value!r} is not a quantity such as \"100m\" or \"128Mi\"")
            items.append((str(name), text))
        parts[key] = tuple(items)
    return Resources(requests=parts["requests"], limits=parts["limits"])


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise MeshSpecError(where, f"must be an object, got {type(value).__name__}")
    return value


def _no_unknown(m: Mapping[str, Any], where: str, known: set[str]) -> None:
    unknown = sorted(set(m) - known)
    if unknown:
        raise MeshSpecError(f"{where}.{unknown[0]}",
                            f"unknown field; known fields: {', '.join(sorted(known))}")


def _str(m: Mapping[str, Any], where: str, key: str, default: str | None) -> Any:
    value = m.get(key, default)
    if value is not None and not isinstance(value, str):
        raise MeshSpecError(f"{where}.{key}", f"must be a string, got {value!r}")
    return value


def _int(m: Mapping[str, Any], where: str, key: str, default: int, *, minimum: int) -> int:
    value = m.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise MeshSpecError(f"{where}.{key}", f"must be an integer >= {minimum}, got {value!r}")
    return value


def _path(m: Mapping[str, Any], where: str, key: str, default: str) -> str:
    value = _str(m, where, key, default)
    if not value.startswith("/") or ".." in value.split("/"):
        raise MeshSpecError(f"{where}.{key}", f"{value!r} is not an absolute host path")
    return str(value)


def _match(pattern: re.Pattern[str], value: str, where: str, expected: str) -> None:
    if not pattern.match(value):
        raise MeshSpecError(where, f"{value!r} is not {expected}")


def _one_of(value: str, allowed: tuple[str, ...], where: str) -> None:
    if value not in allowed:
        raise MeshSpecError(where, f"{value!r} is not one of {', '.join(allowed)}")
