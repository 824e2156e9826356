"""The one error the object model raises: an object (or one of its fields) is invalid.

Raised by `parse_object` (meshcore.model.parse) at the single gate where plain dicts from a
manifest file or the Kubernetes API become typed model objects. It is the *author's* fault
(the manifest), never ours: config sources report it (log line, status condition) and keep
the last good version of that object. The message names the kind, namespace/name and the
field, e.g. `AuthorizationPolicy shop/deny-all: spec.action: unknown value "ALLOWW"
(expected ALLOW, DENY, AUDIT, CUSTOM)`.
"""

from __future__ import annotations

from meshcore.errors import MeshCoreError


class ModelError(MeshCoreError):
    """Base of errors raised by meshcore.model."""


class InvalidObjectError(ModelError, ValueError):
    """A manifest object is malformed or unsupported; carries where, so it can be reported."""

    def __init__(self, kind: str, namespace: str, name: str, field: str, message: str) -> None:
        self.kind = kind or "<unknown kind>"
        self.namespace = namespace
        self.name = name
        self.field = field
        self.message = message
        super().__init__(str(self))

    @property
    def ref(self) -> str:
        """`ns/name` for namespaced objects, `name` for cluster-scoped ones."""
        name = self.name or "<unnamed>"
        return f"{self.namespace}/{name}" if self.namespace else name

    def __str__(self) -> str:
        where = f"{self.field}: " if self.field else ""
        return f"{self.kind} {self.ref}: {where}{self.message}"

    def __reduce__(self) -> tuple[type, tuple[str, str, str, str, str]]:
        # keeps pickling/copying working with the 5-argument constructor
        return (type(self), (self.kind, self.namespace, self.name, self.field, self.message))
