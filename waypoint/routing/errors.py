"""Errors of the waypoint's route configuration gate (`waypoint.routing`).

`RouteConfigError` is raised by `RouteTable.from_proto` when a RouteConfiguration from the
control plane cannot become internal types (a regex that does not compile, a zero
denominator). It is the control plane's fault; as a `ResourceRejected` the xDS client NACKs
it with `str(error)` and the waypoint keeps its last good routes. Route matching itself never
raises on valid tables.
"""

from __future__ import annotations

from meshcore.xds.errors import ResourceRejected


class RouteConfigError(ResourceRejected, ValueError):
    """A RouteConfiguration is invalid. Attributes: resource (its name), field, reason."""

    def __init__(self, resource: str, field: str, reason: str) -> None:
        self.resource = resource
        self.field = field
        self.reason = reason
        where = f" field {field}" if field else ""
        super().__init__(f"invalid RouteConfiguration {resource!r}{where}: {reason}")
