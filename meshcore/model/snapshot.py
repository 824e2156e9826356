"""`ClusterModel`: one immutable snapshot of every object a config source knows.

Built by config sources (istiod_lite.config) and read by the translator and the CNI agent.
Per-kind maps keyed by (namespace, name) ("" namespace for cluster-scoped kinds). Updates
(`with_object`, `without`) return a new snapshot that shares every untouched kind's map with
the old one, so an update costs O(objects of that kind). Lookups are pure functions.
Invariant: a snapshot never changes after construction; `revision` grows with each change.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType

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
        return ClusterModel(MappingProxyType(kinds), self.revision + 1, self.system_namespace)

    # -- lookups ------------------------------------------------------------------------------
    def of_kind(self, kind: str) -> Mapping[Key, ModelObject]:
        return self.objects_by_kind.get(kind, _EMPTY_KIND)

    def get(self, kind: str, namespace: str, name: str) -> ModelObject | None:
        return self.of_kind(kind).get((namespace, name))

    def sorted(self, kind: str) -> list[ModelObject]:
        """Objects of a kind ordered by (namespace, name): the deterministic iteration order."""
        objs = self.of_kind(kind)
        return [objs[k] for k in sorted(objs)]

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
        return [p for p in self.pods if p.node_name == node]

    def pods_matching(self, namespace: str, selector: Mapping[str, str] | None, *,
                      empty_selects_all: bool = False) -> list[Pod]:
        """Pods in `namespace` selected by `selector`. Services select nothing with an empty
        selector (Kubernetes semantics); policies pass `empty_selects_all=True`."""
        if selector is None or (not selector and not empty_selects_all):
            return []
        return [p for p in self.pods if p.namespace == namespace and selects(selector, p.labels)]

    def enrollment(self, pod: Pod) -> EnrollmentDecision:
        return enrollment_decision(pod, self.namespace_labels(pod.namespace),
                                   system_namespace=self.system_namespace)

    def is_enrolled(self, pod: Pod) -> bool:
        """Should this pod be captured (CNI enablement selectors, AMBIENT-INTERNALS §5.7)?"""
        return self.enrollment(pod).enrolled
