"""Our HBONE proxy pair for the benchmark: `python -m bench.hbone_proxy client|server ...`.

Who calls it: `bench.launchers.OursPairLauncher` starts `server` in namespace B and `client` in
namespace A (argv built by `ours_server_argv` / `ours_client_argv`). It is a thin program over
`meshcore.hbone_trio` — the same pool (`open_hbone_client`), server (`serve_hbone`) and relay
ztunnel uses — with no ztunnel control plane: credentials come from PEM files and every
listener tunnels to one fixed `:authority`.

- client: for each `--tunnel LISTEN=AUTHORITY`, accept plain TCP on LISTEN and relay it over a
  CONNECT stream to AUTHORITY through the HBONE server `--server` (pooled connections, server
  SPIFFE ID must be `--expect-server`).
- server: accept HBONE on `--listen` (client certificate required; with `--allow-client`, other
  client IDs get 401), dial each stream's `:authority` over plain TCP (503 if that fails), relay.

One process, one trio loop, one core, like the Envoys measured beside it (`--concurrency 1`).
"""

from __future__ import annotations

import argparse
import functools
import logging
import pathlib
import sys

import trio

log = logging.getLogger("bench.hbone_proxy")


def missing_api() -> str | None:
    """None when `meshcore.hbone_trio` offers what this program uses; else what is missing."""
    try:
        from meshcore.hbone_trio import (  # noqa: F401
            ConnectOutcome,
            open_hbone_client,
            relay,
            serve_hbone,
        )
        from meshcore.tlsconfig import WorkloadCredentials  # noqa: F401
    except ImportError as exc:
        return f"meshcore.hbone_trio/tlsconfig lack what bench/hbone_proxy.py needs: {exc}"
    return None


def _hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not host:port")
    return host.strip("[]"), int(port)


def _tunnel(text: str) -> tuple[tuple[str, int], str]:
    listen, sep, authority = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r} is not LISTEN_HOST:PORT=DEST_IP:PORT")
    _hostport(authority)
    return _hostport(listen), authority


def _credentials(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from meshcore.tlsconfig import WorkloadCredentials

    return WorkloadCredentials.from_pem(
        pathlib.Path(args.cert).read_bytes(),
        pathlib.Path(args.key).read_bytes(),
        pathlib.Path(args.root).read_bytes(),
    )


async def run_client(args: argparse.Namespace) -> None:
    from meshcore.hbone_trio import HboneTrioError, open_hbone_client, relay
    from meshcore.identity import SpiffeId

    creds = _credentials(args)
    expected = [SpiffeId.parse(args.expect_server)]
    server: tuple[str, int] = args.server

    async with open_hbone_client() as client, trio.open_nursery() as nursery:

        async def handle(authority: str, downstream: trio.SocketStream) -> None:
            try:
                tunnel = await client.connect(server, authority, creds, expected)
            except HboneTrioError as exc:
                log.warning("tunnel to %s failed: %s", authority, exc)
                await downstream.aclose()
                return
            await relay(downstream, tunnel)

        for (host, port), authority in args.tunnel:
            listeners = await trio.open_tcp_listeners(port, host=host)
            await nursery.start(trio.serve_listeners, functools.partial(handle, authority),
                                listeners)
            log.info("client: %s:%d -> CONNECT %s via %s:%d", host, port, authority, *server)


async def run_server(args: argparse.Namespace) -> None:
    from meshcore.hbone_trio import ConnectOutcome, ConnectRequest, serve_hbone
    from meshcore.identity import SpiffeId

    creds = _credentials(args)
    allowed = {SpiffeId.parse(uri) for uri in args.allow_client}

    async def handle_connect(request: ConnectRequest) -> ConnectOutcome:
        if allowed and request.peer_identity not in allowed:
            return ConnectOutcome.deny(f"{request.peer_identity} is not allowed")
        try:
            upstream = await trio.open_tcp_stream(request.host, request.port)
        except OSError as exc:
            return ConnectOutcome.unreachable(f"cannot reach {request.authority}: {exc}")
        return ConnectOutcome.accept(upstream)

    host, port = args.listen
    listeners = await trio.open_tcp_listeners(port, host=host)
    log.info("server: HBONE on %s:%d", host, port)
    await serve_hbone(listeners, lambda _addr: creds, handle_connect)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hbone_proxy")
    sub = parser.add_subparsers(dest="role", required=True)
    for role in ("client", "server"):
        p = sub.add_parser(role)
        p.add_argument("--cert", required=True, help="leaf (chain) PEM")
        p.add_argument("--key", required=True, help="private key PEM")
        p.add_argument("--root", required=True, help="trusted root PEM")
        if role == "client":
            p.add_argument("--server", type=_hostport, required=True, help="HBONE server ip:port")
            p.add_argument("--expect-server", required=True, help="server SPIFFE URI")
            p.add_argument("--tunnel", type=_tunnel, action="append", required=True,
                           help="LISTEN_HOST:PORT=DEST_IP:PORT (repeatable)")
        else:
            p.add_argument("--listen", type=_hostport, required=True, help="ip:port (15008)")
            p.add_argument("--allow-client", action="append", default=[],
                           help="client SPIFFE URI allowed (repeatable; default: any)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    missing = missing_api()
    if missing:
        parser.exit(2, f"{missing}\n")
    trio.run(run_client if args.role == "client" else run_server, args)


if __name__ == "__main__":
    main()
