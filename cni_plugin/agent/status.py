"""Where the agent records a pod's enrollment: the `ambient.istio.io/redirection` annotation.

`StatusWriter.set_redirection(namespace, name, value)` sets the annotation to `enabled` /
`pending`, or removes it (value None). Implementations:
- `FolderStatusWriter` (manifest-folder source): the pod status overlay
  `<dir>/.status/pods/<ns>.<name>.yaml` through `meshcore.model.pod_status.write_pod_status`
  (atomic, flock-serialised; a removal is stored as `null` so it also hides a value written in
  the manifest by hand);
- Kubernetes: not implemented yet. It must merge-patch `metadata.annotations` through the
  `pods/status` subresource, as Istio's agent does, and ignore 404 (pod already gone). The only
  Kubernetes client in the repository today is istiod_lite's (asyncio, and cni_plugin may not
  import istiod_lite); it needs a shared, trio-usable client in meshcore first.

Who calls it: `cni_plugin.agent.reconciler`, from a worker thread (writes block).
"""

from __future__ import annotations

import os
from typing import Protocol

from meshcore.model import REDIRECTION_ANNOTATION
from meshcore.model.pod_status import write_pod_status


class StatusWriter(Protocol):
    def set_redirection(self, namespace: str, name: str, value: str | None) -> None: ...


class FolderStatusWriter:
    """Writes the annotation into the manifest folder's pod status overlay."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.fspath(root)

    def set_redirection(self, namespace: str, name: str, value: str | None) -> None:
        if value is None:
            write_pod_status(self.root, namespace, name,
                             remove_annotations=[REDIRECTION_ANNOTATION])
        else:
            write_pod_status(self.root, namespace, name,
                             annotations={REDIRECTION_ANNOTATION: value})
