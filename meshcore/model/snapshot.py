"""`ClusterModel`: one immutable snapshot of every object a config source knows.

Built by config sources (istiod_lite.config) and read by the translator and the CNI agent.
Per-kind maps keyed by (namespace, name) ("" namespace for cluster-scoped kinds). Updates
(`with_object`, `without`) return a new snapshot that shares every untouched kind's map with
the old one, so an update costs O(objects of that kind). Lookups are pure functions.
Invariant: a snapshot never changes after construction; `revision` grows with each change.

Derived indexes (sorted order per kind, objects per namespace, pods per node) are built lazily,
at most once per snapshot, and cached on it (`_derived`, not part of equality). Each index
depends on one kind's map only, so `with_object`/`without` carry over the indexes of the kinds
they did not touch. Lookups hand out fresh lists (callers may mutate them) or read-only tuples.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

from meshcore.model._fields import EMPTY, empty_map
from meshcore.model.core import ModelObject, Namespace, Node, Pod, Service
from meshcore.model.enrollment import EnrollmentDecision, enrollment_decision, selects
from meshcore.model.parse import KINDS

Key = tuple[str, str]
_EMPTY_KIND: Mapping[Key, ModelObject] = MappingProxyType({})


@dataclasses.dataclass(frozen=True, slots=True)
class ClusterModel:
    objects_by_kind: Mapping[str, Mapping[Key, ModelObject]] = empty_map()
    revision: int = 0
    system_namespace: str = "istio-system"
    # (kind, index name) -> index over objects_by_kind[kind]; filled lazily, never compared.
    _derived: dict[tuple[str, str], Any] = dataclasses.field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False)

    @classmethod
    def from_objects(cls, objects: Iterable[ModelObject], *,
                     system_namespace: str = "istio-system") -> ClusterModel:
        """Build a snapshot; a later object with the same kind/key replaces an earlier one."""
        by_kind: dict[str, dict[Key, ModelObject]] = {}
        for obj in objects:
            by_kind.setdefault(obj.kind, {})[obj.key] = obj
        frozen = {k: MappingProxyType(v) for k, v in by_kind.items()}
        return cls(MappingProxyType(frozen), 0, system_namespace)

    # -- updates ------------------------------------------------------------------------------
    def with_object(self, obj: ModelObject) -> ClusterModel:
        """A snapshot with `obj` added or replaced (self if nothing changed)."""
        current = self.objects_by_kind.get(obj.kind, _EMPTY_KIND)
        if current.get(obj.key) == obj:
            return self
        updated = dict(current)
        updated[obj.key] = obj
        return self._replace_kind(obj.kind, updated)

    def without(self, kind: str, namespace: str, name: str) -> ClusterModel:
        """A snapshot without that object (self if it was absent)."""
        current = self.objects_by_kind.get(kind, _EMPTY_KIND)
        if (namespace, name) not in current:
            return self
        updated = dict(current)
        del updated[namespace, name]
        return self._replace_kind(kind, updated)

    def _replace_kind(self, kind: str, objects: dict[Key, ModelObject]) -> ClusterModel:
        kinds = dict(self.objects_by_kind)
        kinds[kind] = MappingProxyType(objects)
        out = ClusterModel(MappingProxyType(kinds), self.revision + 1, self.system_namespace)
        out._derived.update((k, v) for k, v in self._derived.items() if k[0] != kind)
        return out

    def _index(self, kind: str, name: str, build: Callable[[], Any]) -> Any:
        """The cached index `name` over `kind` (built on first use; depends on that kind
        only, which is what lets `_replace_kind` carry it over)."""
        key = (kind, name)
        try:
            return self._derived[key]
        except KeyError:
            value = self._derived[key] = build()
            return value

    # -- lookups ------------------------------------------------------------------------------
    def of_kind(self, kind: str) -> Mapping[Key, ModelObject]:
        return self.objects_by_kind.get(kind, _EMPTY_KIND)

    def get(self, kind: str, namespace: str, name: str) -> ModelObject | None:
        return self.of_kind(kind).get((namespace, name))

    def sorted(self, kind: str) -> list[ModelObject]:
        """Objects of a kind ordered by (namespace, name): the deterministic iteration order."""
        return list(self.sorted_tuple(kind))

    def sorted_tuple(self, kind: str) -> tuple[ModelObject, ...]:
        """`sorted(kind)` as a shared read-only tuple (no copy; cached on the snapshot)."""
        def build() -> tuple[ModelObject, ...]:
            objs = self.of_kind(kind)
            return tuple(objs[k] for k in sorted(objs))
        return self._index(kind, "sorted", build)  # type: ignore[no-any-return]

    def in_namespace(self, kind: str, namespace: str) -> tuple[ModelObject, ...]:
        """Objects of a kind in one namespace, ordered by name (cached index)."""
        def build() -> Mapping[str, tuple[ModelObject, ...]]:
            out: dict[str, list[ModelObject]] = {}
            for obj in self.sorted_tuple(kind):
                out.setdefault(obj.namespace, []).append(obj)
            return {ns: tuple(objs) for ns, objs in out.items()}
        return self._index(kind, "by_namespace", build).get(namespace, ())  # type: ignore[no-any-return]

    def all_objects(self) -> Iterator[ModelObject]:
        for kind in KINDS:
            yield from self.sorted(kind)

    def __len__(self) -> int:
        return sum(len(v) for v in self.objects_by_kind.values())

    @property
    def pods(self) -> list[Pod]:
        return self.sorted("Pod")  # type: ignore[return-value]

    @property
    def services(self) -> list[Service]:
        return self.sorted("Service")  # type: ignore[return-value]

    def namespace(self, name: str) -> Namespace | None:
        return self.get("Namespace", "", name)  # type: ignore[return-value]

    def node(self, name: str) -> Node | None:
        return self.get("Node", "", name)  # type: ignore[return-value]

    def namespace_labels(self, name: str) -> Mapping[str, str]:
        ns = self.namespace(name)
        return ns.labels if ns is not None else EMPTY

    def pods_on_node(self, node: str) -> list[Pod]:
        """Pods scheduled on `node`, in (namespace, name) order (cached index)."""
        def build() -> Mapping[str, tuple[Pod, ...]]:
            out: dict[str, list[Pod]] = {}
            for pod in self.sorted_tuple("Pod"):
                assert isinstance(pod, Pod)
                out.setdefault(pod.node_name, []).append(pod)
            return {n: tuple(pods) for n, pods in out.items()}
        return list(self._index("Pod", "by_node", build).get(node, ()))

    def pods_in_namespace(self, namespace: str) -> list[Pod]:
        return list(self.in_namespace("Pod", namespace))  # type: ignore[arg-type]

    def services_in_namespace(self, namespace: str) -> list[Service]:
        return list(self.in_namespace("Service", namespace))  # type: ignore[arg-type]

    def pods_matching(self, namespace: str, selector: Mapping[str, str] | None, *,
                      empty_selects_all: bool = False) -> list[Pod]:
        """Pods in `namespace` selected by `selector`. Services select nothing with an empty
        selector (Kubernetes semantics); policies pass `empty_selects_all=True`."""
        if selector is None or (not selector and not empty_selects_all):
            return []
        return [p for p in self.in_namespace("Pod", namespace)  # type: ignore[misc]
                if selects(selector, p.labels)]

    def enrollment(self, pod: Pod) -> EnrollmentDecision:
        return enrollment_decision(pod, self.namespace_labels(pod.namespace),
                                   system_namespace=self.system_namespace)

    def is_enrolled(self, pod: Pod) -> bool:
        """Should this pod be captured (CNI enablement selectors, AMBIENT-INTERNALS §5.7)?"""
        return self.enrollment(pod).enrolled
