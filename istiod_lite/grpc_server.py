"""A grpclib Server whose `close()` also closes established connections.

grpclib's `Server.close()` stops accepting and cancels running calls, but idle HTTP/2
connections stay open and keep serving new calls (asyncio.Server has no `close_clients()`
before Python 3.13): a "stopped" istiod-lite would still issue certificates and push config.
We record each connection's protocol (grpclib's `_protocol_factory` is the one place they are
created) and close them all on `close()`. Used by `istiod_lite.ca.server.serve_grpc`.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

from grpclib._typing import IServable
from grpclib.protocol import H2Protocol
from grpclib.server import Server


class ClosingServer(Server):
    def __init__(self, services: Sequence[IServable]) -> None:
        super().__init__(services)
        self._protocols: weakref.WeakSet[H2Protocol] = weakref.WeakSet()

    def _protocol_factory(self) -> H2Protocol:
        protocol = super()._protocol_factory()
        self._protocols.add(protocol)
        return protocol

    def close(self) -> None:
        super().close()
        for protocol in list(self._protocols):
            if hasattr(protocol, "processor"):  # set once the connection was made
                protocol.processor.close("server closed")
