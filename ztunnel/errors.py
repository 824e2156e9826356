"""Errors of the node proxy (`ztunnel`): one base class, subclasses say whose fault.

Identity errors (`IdentityError` and below) live with the CA client and certificate manager in
`meshcore.workload_identity.errors` (the waypoint uses them too) and are re-exported here.
"""

from __future__ import annotations

from meshcore.workload_identity.errors import (
    CaResponseError,
    CaUnavailableError,
    CertificateRefusedError,
    CertificateUnavailableError,
    IdentityError,
    WorkloadIdentityConfigError,
)

__all__ = [
    "CaResponseError", "CaUnavailableError", "CertificateRefusedError",
    "CertificateUnavailableError", "IdentityError", "WorkloadIdentityConfigError",
    "ZtunnelConfigError", "ZtunnelError",
]


class ZtunnelError(Exception):
    """Base of every error raised by ztunnel."""


class ZtunnelConfigError(ZtunnelError):
    """Our own settings are unusable (missing token or root file); fix the config, not retry."""


