"""Delta ADS server for the Istio workload API (ztunnel and waypoint configuration).

`XdsServer` (grpclib service) + `ResourceCache` (content-hash versions) + the sans-IO
per-stream state machine `ClientStream`. Feed it with `XdsServer.set_resources(type_url,
{name: message})`. See docs/xds.md.
"""

from istiod_lite.xds.cache import CacheChange, CachedResource, ResourceCache, content_version
from istiod_lite.xds.errors import XdsProtocolError, XdsServerError
from istiod_lite.xds.server import (
    ClientStatistics,
    DebounceConfig,
    LatencySummary,
    XdsServer,
    XdsServerStatistics,
)
from istiod_lite.xds.subscription import (
    Ack,
    ClientStream,
    Nack,
    NodeInfo,
    ResourceFilter,
    StaleNonce,
    Step,
)

__all__ = [
    "Ack",
    "CacheChange",
    "CachedResource",
    "ClientStatistics",
    "ClientStream",
    "DebounceConfig",
    "LatencySummary",
    "Nack",
    "NodeInfo",
    "ResourceCache",
    "ResourceFilter",
    "StaleNonce",
    "Step",
    "XdsProtocolError",
    "XdsServer",
    "XdsServerError",
    "XdsServerStatistics",
    "content_version",
]
