"""Errors of workload-identity handling (CA client, certificate manager).

Every error carries the SPIFFE identity concerned; subclasses say whose fault it is.
Shared by ztunnel and the waypoint, which both obtain certificates from the CA.
"""

from __future__ import annotations

from meshcore.errors import MeshCoreError
from meshcore.identity import SpiffeId


class WorkloadIdentityConfigError(MeshCoreError):
    """Our own settings are unusable (missing token or root file); fix the config, not retry."""


class IdentityError(MeshCoreError):
    """A certificate for `identity` could not be obtained."""

    def __init__(self, identity: SpiffeId, message: str) -> None:
        super().__init__(f"{identity}: {message}")
        self.identity = identity


class CertificateRefusedError(IdentityError):
    """The CA refused to issue `identity`: `reason` is the gRPC status name, `detail` its message.

    The CA's policy (or our token) is at fault; retrying only helps once that changes (for
    example when the workload is scheduled on this node).
    """

    def __init__(self, identity: SpiffeId, reason: str, detail: str) -> None:
        super().__init__(identity, f"CA refused the certificate ({reason}): {detail}")
        self.reason = reason
        self.detail = detail


class CaUnavailableError(IdentityError):
    """The CA could not be reached or failed (network, TLS, UNAVAILABLE); retry with back-off."""


class CaResponseError(IdentityError):
    """The CA answered with something unusable (wrong identity, bad chain); the CA is at fault."""


class CertificateUnavailableError(IdentityError):
    """No valid certificate exists for `identity` and the latest attempt failed (`cause`)."""

    def __init__(self, identity: SpiffeId, message: str, cause: BaseException | None) -> None:
        super().__init__(identity, message)
        self.cause = cause
