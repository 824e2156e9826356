"""The Kubernetes source's cache: watch events in, an immutable `ClusterModel` out (pure).

Called by the kopf handlers in `istiod_lite.config.kubernetes`, one event at a time, from the
single asyncio loop that runs kopf (the source is the only writer of its `KubeCache`). Each
call returns a new `KubeCache` plus what happened to that one object, which the source turns
into a `ConfigSnapshot` (source.py) and, for invalid objects, a status report (status.py).

Per-object last-good rules (the same as the manifest-folder source):
* a valid object replaces its previous version in the model;
* an invalid object keeps its last good version in the model (diagnostic "keeping its last
  good version"); one never seen valid is left out (diagnostic "object rejected");
* deletion removes the object and its diagnostic;
* an object `kinds.wanted` does not want is treated as deleted.
Invariants: at most one diagnostic per object; every update touches one object only, so a
snapshot costs O(objects of that kind) (ClusterModel.with_object/without).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from istiod_lite.config.kube.kinds import WatchedKind, wanted
from istiod_lite.config.source import ConfigSnapshot, Diagnostic
from meshcore.model import ClusterModel, InvalidObjectError, identify, parse_object

ObjKey = tuple[str, str, str]  # (kind, namespace, name); namespace "" for cluster-scoped kinds
_NO_DIAGNOSTICS: Mapping[ObjKey, Diagnostic] = MappingProxyType({})


@dataclasses.dataclass(frozen=True, slots=True)
class KubeCache:
    model: ClusterModel
    diagnostics: Mapping[ObjKey, Diagnostic] = dataclasses.field(
        default_factory=lambda: _NO_DIAGNOSTICS)

    @classmethod
    def empty(cls, system_namespace: str = "istio-system") -> KubeCache:
        return cls(ClusterModel(system_namespace=system_namespace))

    @property
    def snapshot(self) -> ConfigSnapshot:
        """The model and the diagnostics ordered by (kind, namespace, name)."""
        diags = tuple(self.diagnostics[k] for k in sorted(self.diagnostics))
        return ConfigSnapshot(self.model, diags)


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """The cache after one event, and that object's diagnostic before and after it."""

    cache: KubeCache
    key: ObjKey
    diagnostic: Diagnostic | None = None
    previous: Diagnostic | None = None


def with_type_meta(watched: WatchedKind, body: Mapping[str, Any]) -> dict[str, Any]:
    """A shallow copy of `body` with `apiVersion` and `kind` filled in from the resource.

    Items of a list response carry neither on the real API (kopf copies the list's, when it
    has them); the resource we watched says what they are.
    """
    doc = dict(body)
    doc.setdefault("apiVersion", watched.api_version)
    doc.setdefault("kind", watched.kind)
    return doc


def object_key(watched: WatchedKind, body: Mapping[str, Any]) -> ObjKey:
    kind, namespace, name = identify(with_type_meta(watched, body))
    return (kind, namespace if watched.namespaced else "", name)


def upsert(cache: KubeCache, watched: WatchedKind, body: Mapping[str, Any]) -> Outcome:
    """Apply an added/modified (or initially listed) object."""
    if not wanted(watched.kind, body):
        return remove(cache, watched, body)
    doc = with_type_meta(watched, body)
    key = object_key(watched, body)
    previous = cache.diagnostics.get(key)
    try:
        obj = parse_object(doc)
    except InvalidObjectError as err:
        kept = cache.model.get(*key) is not None
        what = "keeping its last good version" if kept else "object rejected"
        diag = Diagnostic.from_error(err, f"{err}; {what}")
        return Outcome(_with_diagnostic(cache, key, diag), key, diag, previous)
    model = cache.model.with_object(obj)
    diags = _without_key(cache.diagnostics, key)
    if model is cache.model and diags is cache.diagnostics:
        return Outcome(cache, key, None, previous)
    return Outcome(KubeCache(model, diags), key, None, previous)


def remove(cache: KubeCache, watched: WatchedKind, body: Mapping[str, Any]) -> Outcome:
    """Apply a deletion: the object and its diagnostic go away."""
    key = object_key(watched, body)
    previous = cache.diagnostics.get(key)
    model = cache.model.without(*key)
    diags = _without_key(cache.diagnostics, key)
    if model is cache.model and diags is cache.diagnostics:
        return Outcome(cache, key, None, previous)
    return Outcome(KubeCache(model, diags), key, None, previous)


def _with_diagnostic(cache: KubeCache, key: ObjKey, diag: Diagnostic) -> KubeCache:
    if cache.diagnostics.get(key) == diag:
        return cache
    diags = dict(cache.diagnostics)
    diags[key] = diag
    return KubeCache(cache.model, MappingProxyType(diags))


def _without_key(diags: Mapping[ObjKey, Diagnostic], key: ObjKey) -> Mapping[ObjKey, Diagnostic]:
    if key not in diags:
        return diags
    rest = dict(diags)
    del rest[key]
    return MappingProxyType(rest)
