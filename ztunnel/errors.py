"""Errors of the node proxy (`ztunnel`): one base class, subclasses say whose fault.

Identity errors (`IdentityError` and below) come from `ztunnel.identity` (the CA client and the
certificate manager) and always carry the SPIFFE identity concerned.
"""

from __future__ import annotations

from meshcore.identity import SpiffeId


class ZtunnelError(Exception):
    """Base of every error raised by ztunnel."""


class ZtunnelConfigError(ZtunnelError):
    """Our own settings are unusable (missing token or root file); fix the config, not retry."""


class IdentityError(ZtunnelError):
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
