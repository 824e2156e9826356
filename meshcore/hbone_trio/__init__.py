"""trio I/O for HBONE: TLS stream, connection driver, client pool, server and relay.

The sans-IO HTTP/2 core is `meshcore.hbone`; TLS settings and identity checks are
`meshcore.tlsconfig`. See docs/hbone-data-path.md for the design and performance notes.
"""

from meshcore.hbone_trio.client import (
    ClientConfig,
    HboneConnectError,
    HboneHandshakeError,
    HboneStatusError,
    SocketFactory,
    default_socket_factory,
    dial_hbone,
)
from meshcore.hbone_trio.connection import HboneTrioConnection, KeepaliveConfig
from meshcore.hbone_trio.errors import ConnectionLostError, HboneTrioError, StreamResetError
from meshcore.hbone_trio.meter import RelayMeter
from meshcore.hbone_trio.pool import HboneClient, PoolKey, PoolStatistics, open_hbone_client
from meshcore.hbone_trio.relay import RelayResult, relay
from meshcore.hbone_trio.server import (
    ConnectOutcome,
    ConnectRequest,
    ServerConfig,
    parse_authority,
    serve_hbone,
)
from meshcore.hbone_trio.tls_stream import TlsHandshakeError, TlsStream
from meshcore.hbone_trio.tunnel import TunnelStream

__all__ = [
    "ClientConfig",
    "ConnectOutcome",
    "ConnectRequest",
    "ConnectionLostError",
    "HboneClient",
    "HboneConnectError",
    "HboneHandshakeError",
    "HboneStatusError",
    "HboneTrioConnection",
    "HboneTrioError",
    "KeepaliveConfig",
    "PoolKey",
    "PoolStatistics",
    "RelayMeter",
    "RelayResult",
    "ServerConfig",
    "SocketFactory",
    "StreamResetError",
    "TlsHandshakeError",
    "TlsStream",
    "TunnelStream",
    "default_socket_factory",
    "dial_hbone",
    "open_hbone_client",
    "parse_authority",
    "relay",
    "serve_hbone",
]
