"""Proxy-side workload state: frozen internal types, the one-updater store, pure lookups.

Protos from the control plane enter through one `from_proto` gate per type (raising
`ConversionError`); `Store.apply` turns each Delta xDS response into a new immutable
`Snapshot`; `lookup` answers "where does this connection go" and "which policies apply".
"""

from meshcore.wds.authorization import (
    Action,
    Authorization,
    Cidr,
    Group,
    Match,
    Rules,
    Scope,
    ServiceAccountMatch,
    StringMatch,
    StringMatchKind,
)
from meshcore.wds.errors import ConversionError, WdsError
from meshcore.wds.lookup import (
    Endpoint,
    ServiceDestination,
    WorkloadDestination,
    find_destination,
    policies_for,
    select_endpoint,
)
from meshcore.wds.store import ResourceUpdate, Snapshot, Store
from meshcore.wds.workload import (
    GatewayAddress,
    IPAddress,
    NamespacedHostname,
    NetworkAddress,
    Port,
    Service,
    TunnelProtocol,
    Workload,
    WorkloadStatus,
)

__all__ = [
    "Action",
    "Authorization",
    "Cidr",
    "ConversionError",
    "Endpoint",
    "GatewayAddress",
    "Group",
    "IPAddress",
    "Match",
    "NamespacedHostname",
    "NetworkAddress",
    "Port",
    "ResourceUpdate",
    "Rules",
    "Scope",
    "Service",
    "ServiceAccountMatch",
    "ServiceDestination",
    "Snapshot",
    "Store",
    "StringMatch",
    "StringMatchKind",
    "TunnelProtocol",
    "WdsError",
    "Workload",
    "WorkloadDestination",
    "WorkloadStatus",
    "find_destination",
    "policies_for",
    "select_endpoint",
]
