"""Delta xDS, client side (shared by ztunnel and the waypoint), plus names shared with the server.

Submodules: `types` (type URLs, node ids) and `errors` are import-safe anywhere (no grpclib);
`protocol.DeltaClientProtocol` is the sans-IO state machine; `client.XdsClient` runs it over
grpclib (asyncio) with reconnects; import those two explicitly. See docs/xds.md.
"""

from meshcore.xds.errors import ResourceRejected, XdsError, XdsResponseError
from meshcore.xds.types import (
    TYPE_ADDRESS,
    TYPE_AUTHORIZATION,
    TYPE_WORKLOAD,
    ZTUNNEL_TYPES,
    NodeId,
)

__all__ = [
    "TYPE_ADDRESS",
    "TYPE_AUTHORIZATION",
    "TYPE_WORKLOAD",
    "ZTUNNEL_TYPES",
    "NodeId",
    "ResourceRejected",
    "XdsError",
    "XdsResponseError",
]
