"""Serve the CA over gRPC + TLS (port 15012 by default), asyncio.

Called by the control plane's entry point (and the component tests). `serve_ca()` issues
istiod's own serving certificate from the CA root (SAN DNS `istiod.istio-system.svc` plus the
names and IPs given), binds the socket, starts a `grpclib.server.Server` on it and returns a
`RunningCa` once listening; the caller owns it and closes it (`close()` then `wait_closed()`,
or `async with`). Closing also drops established client connections (see `istiod_lite.grpc_server`).

TLS: TLS 1.2+, ALPN `h2`, no client certificates (callers authenticate with bearer tokens).
Clients trust the CA root (`RunningCa.root_pem`) and verify the DNS name
`istiod.istio-system.svc`.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import ssl
import tempfile
from collections.abc import Sequence
from types import TracebackType

from grpclib._typing import IServable
from grpclib.server import Server

from istiod_lite.ca.authority import ISTIOD_DNS_NAME, CertificateAuthority, ServingCertificate
from istiod_lite.ca.service import CertificateService
from istiod_lite.errors import CaConfigError
from istiod_lite.grpc_server import ClosingServer

CA_PORT = 15012


@dataclasses.dataclass
class RunningCa:
    """A listening gRPC server: where it listens and what clients must trust."""

    server: Server
    host: str
    port: int
    root_pem: str

    def close(self) -> None:
        self.server.close()

    async def wait_closed(self) -> None:
        await self.server.wait_closed()

    async def __aenter__(self) -> RunningCa:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
        await self.wait_closed()


async def serve_ca(
    service: CertificateService,
    authority: CertificateAuthority,
    *,
    host: str = "0.0.0.0",
    port: int = CA_PORT,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
) -> RunningCa:
    """Start serving `service` on host:port (port 0: any free port); return once listening.

    The serving certificate carries `istiod.istio-system.svc` plus `dns_names` and
    `ip_addresses` (add the address clients dial if they verify it instead of the DNS name).
    """
    return await serve_grpc(
        [service], authority, host=host, port=port, dns_names=dns_names,
        ip_addresses=ip_addresses,
    )


async def serve_grpc(
    services: Sequence[IServable],
    authority: CertificateAuthority,
    *,
    host: str = "0.0.0.0",
    port: int = CA_PORT,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
) -> RunningCa:
    """Serve grpclib `services` over TLS with a serving certificate from `authority`.

    istiod_lite puts the CA and the xDS server on one port (15012), as istiod does.
    """
    serving = authority.issue_serving_certificate(
        dns_names=(ISTIOD_DNS_NAME, *dns_names), ip_addresses=ip_addresses
    )
    context = server_ssl_context(serving)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise CaConfigError(
            f"istiod-lite cannot listen on {host}:{port}: {exc} (is another istiod-lite running?)"
        ) from exc
    server = ClosingServer(list(services))
    await server.start(sock=sock, ssl=context)
    bound_port = sock.getsockname()[1]
    return RunningCa(server=server, host=host, port=bound_port, root_pem=authority.root_pem)


def server_ssl_context(serving: ServingCertificate) -> ssl.SSLContext:
    """A TLS server context (TLS 1.2+, ALPN h2) presenting `serving`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["h2"])
    # The ssl module loads keys only from files: write them to a private directory briefly.
    with tempfile.TemporaryDirectory(prefix="istiod-ca-") as tmp:
        cert_path, key_path = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        with open(cert_path, "wb") as f:
            f.write(serving.chain_pem)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(serving.key_pem)
        context.load_cert_chain(cert_path, key_path)
    return context
