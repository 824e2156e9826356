"""Errors of the proxy-side workload state (`meshcore.wds`).

`ConversionError` is raised by the one `from_proto` gate per type when a resource from the
control plane cannot become an internal type. It is the control plane's fault (a bad
resource), and the xDS client turns it into a NACK carrying `str(error)`, keeping the last
good state. The message names the resource and the field, so the istiod_lite log line that
records the NACK points at what to fix.
"""

from __future__ import annotations

from meshcore.errors import MeshCoreError
from meshcore.xds.errors import ResourceRejected


class WdsError(MeshCoreError):
    """Base of the proxy-side workload-state errors."""


class ConversionError(WdsError, ResourceRejected, ValueError):
    """A workload-API resource is invalid; raised at the from_proto gate, answered with a NACK.

    Attributes:
        kind: "Workload", "Service", "Address" or "Authorization".
        resource: the resource name (workload uid, `ns/hostname`, `ns/name`), or "" if unknown.
        field: dotted path of the offending field ("addresses[1]"), or "" for the whole resource.
        reason: what is wrong, in words.
    """

    def __init__(self, kind: str, resource: str, field: str, reason: str) -> None:
        self.kind = kind
        self.resource = resource
        self.field = field
        self.reason = reason
        where = f" field {field}" if field else ""
        super().__init__(f"invalid {kind} {resource!r}{where}: {reason}")
