"""The resource cache behind the Delta ADS server: desired state per type, content-hash versions.

Who calls it: `XdsServer.set_resources(type_url, {name: message})` (the translation layer
hands the full desired state of one type); the per-stream state machines
(`istiod_lite.xds.subscription`) read `resources(type_url)` to compute what each client lacks.

Invariants:
* `Resource.version` is a content hash (first 16 hex digits of the SHA-256 of the serialized
  message), so an unchanged resource keeps its version across restarts of istiod_lite and a
  reconnecting client's `initial_resource_versions` can be trusted. (betterproto serializes
  map fields in insertion order, so two equal messages built with different map orders get
  different versions; that costs one redundant push, never a wrong one.)
* Messages handed to `set_resources` must not be mutated afterwards: passing the very same
  object again is taken as "unchanged" without re-serializing it (a translation layer that
  reuses message objects for unchanged resources makes a full `set_resources` cheap).
* Each entry's `Resource` proto (name, version, Any) is built once and shared by all streams.
* `generation` increases by one for every `set_resources` call that changed anything; a call
  that changes nothing returns the current generation and triggers no push.
* The cache is synchronous and owned by the asyncio loop thread; it never awaits.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Mapping
from types import MappingProxyType

import betterproto
from betterproto.lib.google.protobuf import Any as AnyProto

from meshcore.protos.envoy.service.discovery.v3 import Resource
from meshcore.xds.types import TYPE_PREFIX

_KEEP_CHANGE_TIMES = 4096


@dataclasses.dataclass(frozen=True, slots=True)
class CachedResource:
    name: str
    version: str
    proto: Resource  # shared; never mutated after construction
    message: betterproto.Message  # what set_resources was given (identity fast path)


@dataclasses.dataclass(frozen=True, slots=True)
class CacheChange:
    """What one `set_resources` call changed."""

    type_url: str
    generation: int
    changed: frozenset[str]
    removed: frozenset[str]

    @property
    def empty(self) -> bool:
        return not self.changed and not self.removed


def content_version(value: bytes) -> str:
    """The version string for a serialized resource."""
    return hashlib.sha256(value).hexdigest()[:16]


class ResourceCache:
    """Desired resources per type URL, with content-hash versions and a change generation."""

    def __init__(self) -> None:
        self._types: dict[str, Mapping[str, CachedResource]] = {}
        self._generation = 0
        self._changed_at: dict[int, float] = {0: time.monotonic()}

    @property
    def generation(self) -> int:
        return self._generation

    def resources(self, type_url: str) -> Mapping[str, CachedResource]:
        """The current resources of `type_url` (read-only; replaced, not mutated, on change)."""
        return self._types.get(type_url, MappingProxyType({}))

    def changed_at(self, generation: int) -> float | None:
        """`time.monotonic()` when `generation` was reached (recent generations only)."""
        return self._changed_at.get(generation)

    def type_urls(self) -> tuple[str, ...]:
        return tuple(self._types)

    def set_resources(
        self, type_url: str, resources: Mapping[str, betterproto.Message]
    ) -> CacheChange:
        """Replace the desired state of `type_url`; return what changed (versions by content)."""
        if not type_url.startswith(TYPE_PREFIX):
            raise ValueError(f"type URL {type_url!r} does not start with {TYPE_PREFIX!r}")
        old = self._types.get(type_url, {})
        new: dict[str, CachedResource] = {}
        changed = set()
        for name, message in resources.items():
            previous = old.get(name)
            if previous is not None and previous.message is message:
                new[name] = previous  # the very same object: unchanged, skip serializing
                continue
            value = bytes(message)
            version = content_version(value)
            if previous is not None and previous.version == version:
                new[name] = dataclasses.replace(previous, message=message)
                continue
            proto = Resource(
                name=name, version=version, resource=AnyProto(type_url=type_url, value=value)
            )
            new[name] = CachedResource(name, version, proto, message)
            changed.add(name)
        removed = frozenset(old.keys() - new.keys())
        if not changed and not removed:
            return CacheChange(type_url, self._generation, frozenset(), frozenset())
        self._types[type_url] = MappingProxyType(new)
        self._generation += 1
        self._changed_at[self._generation] = time.monotonic()
        self._changed_at.pop(self._generation - _KEEP_CHANGE_TIMES, None)
        return CacheChange(type_url, self._generation, frozenset(changed), removed)
