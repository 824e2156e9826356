"""Errors of the Delta xDS client side (shared by ztunnel and the waypoint).

`ResourceRejected` is what a delta handler raises when it cannot apply a response (the
server's fault: a bad resource); the client answers with a NACK carrying `str(error)` and the
proxy keeps its last good state. `meshcore.wds.ConversionError` is one.
Kept free of grpclib so trio-side code can import it.
"""

from __future__ import annotations

from meshcore.errors import MeshCoreError


class XdsError(MeshCoreError):
    """Base of the xDS client's errors."""


class ResourceRejected(XdsError):
    """Raised by a delta handler: the resources cannot be applied; the client NACKs with str()."""


class XdsResponseError(ResourceRejected):
    """The server sent a response that breaks the protocol (server's fault); NACKed."""
