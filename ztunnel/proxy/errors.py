"""Errors of ztunnel's per-pod data path (`ztunnel.proxy`): one base, subclasses say whose fault.

Raised by the pure next-hop choice (`next_hop.build_request`) and by the handlers; the handlers
turn them into an access-log `error` and a closed (or reset) app connection, or an HBONE status.
Every message names the address or object concerned and, where one is known, the fix.
"""

from __future__ import annotations

from ztunnel.errors import ZtunnelError


class ProxyError(ZtunnelError):
    """Base of the data-path errors; `response_flags` is the Istio metric flag it maps to."""

    response_flags = "CONNECT"


class IllegalDestinationError(ProxyError):
    """The app (or a peer) dialed ztunnel itself (a self-call loop) or an address we never proxy."""


class NoHealthyUpstreamError(ProxyError):
    """A service (or waypoint) the mesh knows has no usable endpoint for the port dialed.

    The control plane's fault or a transient state (pods starting); retrying may help.
    """


class UnsupportedDestinationError(ProxyError):
    """The destination needs a protocol this ztunnel cannot speak (LEGACY_ISTIO_MTLS, a
    workload on another network needing double HBONE)."""


class SourceWorkloadUnknownError(ProxyError):
    """The pod this proxy serves is not (yet) in the workload state from the control plane."""


class NotRedirectedError(ProxyError):
    """An accepted connection has no original destination (it was not REDIRECTed here)."""
