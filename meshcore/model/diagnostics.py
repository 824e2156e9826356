"""`Diagnostic`: one problem with the user's config, as config sources report it.

Produced by the manifest-folder core (meshcore.model.folder) and by istiod_lite's config
sources; logged and kept for status reporting (a status condition on Kubernetes). It is the
config author's fault, never ours, and names the file/line or the object (kind, ns/name, field).
"""

from __future__ import annotations

import dataclasses

from meshcore.model.errors import InvalidObjectError


@dataclasses.dataclass(frozen=True, slots=True)
class Diagnostic:
    severity: str  # "error" (object or file rejected) | "warning" (accepted with a caveat)
    message: str
    file: str = ""  # path relative to the source root, when the source is a folder
    line: int = 0
    kind: str = ""
    namespace: str = ""
    name: str = ""
    field: str = ""

    @classmethod
    def from_error(cls, err: InvalidObjectError, message: str, *, file: str = "",
                   line: int = 0) -> Diagnostic:
        return cls("error", message, file, line, err.kind, err.namespace, err.name, err.field)

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}: " if self.file and self.line else (
            f"{self.file}: " if self.file else "")
        return f"{where}{self.message}"
