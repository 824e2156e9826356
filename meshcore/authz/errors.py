"""Errors of the L4 authorization evaluator (`meshcore.authz`).

The evaluator itself cannot fail on valid inputs: every policy reaching it went through
`Authorization.from_proto`. The only error is a caller building a `ConnectionAttributes`
from something that is not a connection (a port out of range, an IP that is a string): that
is our fault (a bug in the proxy code that built it), never the peer's, so it is not retried.
"""

from __future__ import annotations

from meshcore.errors import MeshCoreError


class AuthzError(MeshCoreError):
    """Base of the authorization evaluator's errors."""


class InvalidConnectionError(AuthzError, ValueError):
    """A `ConnectionAttributes` field has a value no real connection can have.

    Attributes:
        field: the offending field name ("destination_port").
        reason: what is wrong, in words.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(
            f"invalid ConnectionAttributes.{field}: {reason} "
            "(the caller built the connection attributes wrongly; this is a proxy bug)"
        )
