"""Errors of the Delta ADS server (`istiod_lite.xds`).

`XdsProtocolError` is the client's fault (it broke the Delta xDS protocol); the server ends
that stream with gRPC INVALID_ARGUMENT carrying the message. Nothing here is retried.
"""

from __future__ import annotations

from istiod_lite.errors import IstiodLiteError


class XdsServerError(IstiodLiteError):
    """Base of the xDS server's errors."""


class XdsProtocolError(XdsServerError):
    """A client sent a request that breaks the Delta xDS protocol (client's fault).

    Attributes:
        node_id: the client's node id, or "" before it identified itself.
        type_url: the request's type URL, or "".
    """

    def __init__(self, message: str, *, node_id: str = "", type_url: str = "") -> None:
        self.node_id = node_id
        self.type_url = type_url
        who = f" from {node_id}" if node_id else ""
        super().__init__(f"bad DeltaDiscoveryRequest{who}: {message}")
