"""Errors of the waypoint's L7 authorization gate (`waypoint.policy`).

`PolicyConfigError` is raised by `L7Policy.from_proto` for a resource the evaluator cannot use
(unknown enum, bad CIDR). The control plane's fault; as a `ResourceRejected` the xDS client
NACKs it and the waypoint keeps its last good policies. Evaluation never raises.
"""

from __future__ import annotations

from meshcore.xds.errors import ResourceRejected


class PolicyConfigError(ResourceRejected, ValueError):
    """An L7Authorization is invalid. Attributes: resource (`ns/name`), field, reason."""

    def __init__(self, resource: str, field: str, reason: str) -> None:
        self.resource = resource
        self.field = field
        self.reason = reason
        where = f" field {field}" if field else ""
        super().__init__(f"invalid L7Authorization {resource!r}{where}: {reason}")
