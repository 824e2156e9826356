"""Errors of the control plane (`istiod_lite`): one base class, subclasses say whose fault.

Raised by the CA (`istiod_lite.ca`) and, later, the other control-plane subsystems. A refusal
of a client's request is not an error of ours: the CA answers it with a gRPC status built from a
`Refusal` (see `istiod_lite.ca.authz`), not with an exception from this module.
"""

from __future__ import annotations


class IstiodLiteError(Exception):
    """Base of every error raised by istiod_lite."""


class CaConfigError(IstiodLiteError):
    """The operator's CA material or settings are unusable (missing, corrupt, mismatched files).

    Not retryable: the message names the file or Secret key and what to fix.
    """


class CaSigningError(IstiodLiteError):
    """The CA was asked to sign something its invariants forbid (a bug in the caller).

    The service checks every request before signing; reaching this means a check was skipped.
    """
