"""Fetch a ztunnel's `/config_dump` over HTTP, from an address or a node name.

Called by `ztunnel_config` (the `ambientctl ztunnel-config` command). A node name becomes an
address through a `Resolver`; the sandbox (`ambientctl sandbox`) provides one that knows its
nodes, and `register(subparsers, resolver=...)` passes it in. Without one, `--admin HOST:PORT`
is required. Synchronous (urllib): a CLI makes one request and exits.
Invariant: every failure is an `AdminUnreachableError` whose message names the address, the
node when known, and what to try next.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, Protocol

from ambientctl.debug.errors import AdminUnreachableError, DebugError
from meshcore.addresses import split_host_port

DEFAULT_ADMIN_PORT = 15000
TIMEOUT = 5.0


class Resolver(Protocol):
    """Maps a node name to the address of that node's ztunnel admin endpoint."""

    def admin_address(self, node: str) -> tuple[str, int]:
        """(host, port); raise `DebugError` naming the known nodes when `node` is unknown."""
        ...

    def node_of(self, pod: str) -> str:
        """The node pod `pod` (NAMESPACE/NAME) runs on (`why` with no source: its ztunnel);
        raise `DebugError` saying what to pass instead when that is not known."""
        ...


class NoNodeResolver:
    """The default: node names are unknown outside the sandbox; `--admin` is needed."""

    def admin_address(self, node: str) -> tuple[str, int]:
        raise DebugError(
            f"cannot resolve node {node!r} to a ztunnel admin address outside the sandbox; "
            f"pass --admin HOST:PORT (ztunnel's admin port is {DEFAULT_ADMIN_PORT})")

    def node_of(self, pod: str) -> str:
        raise DebugError(
            "say where the state comes from: -f MANIFEST_DIR, or --ztunnel-admin HOST:PORT "
            f"(only the sandbox knows which node runs pod {pod!r})")


def parse_address(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `[v6]:PORT` or `HOST` (port 15000) → (host, port)."""
    try:
        return split_host_port(text, DEFAULT_ADMIN_PORT)
    except ValueError as exc:
        raise DebugError(f"--admin {exc}; expected HOST:PORT, e.g. 127.0.0.1:15000") from exc


def admin_address(admin: str | None, node: str | None, resolver: Resolver) -> tuple[str, int]:
    """The address to query: `--admin` wins; else the node through the resolver."""
    if admin:
        return parse_address(admin)
    if node:
        return resolver.admin_address(node)
    raise DebugError("say which ztunnel to ask: --node NODE (in the sandbox) or "
                     f"--admin HOST:PORT (ztunnel's admin port is {DEFAULT_ADMIN_PORT})")


def fetch_config_dump(host: str, port: int, *, node: str | None = None,
                      timeout: float = TIMEOUT) -> dict[str, Any]:
    """GET http://host:port/config_dump and return the decoded JSON object."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    hint = (f"is ztunnel running on node {node}? try `ambientctl sandbox status`" if node
            else "is ztunnel running there, with its admin endpoint on that port?")
    try:
        with urllib.request.urlopen(f"http://{where}/config_dump", timeout=timeout) as resp:
            body = resp.read()
    except urllib.error.HTTPError as e:
        raise AdminUnreachableError(
            f"ztunnel admin at {where} answered /config_dump with HTTP {e.code}; "
            "is that port a ztunnel admin endpoint (15000)?") from e
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise AdminUnreachableError(
            f"cannot reach ztunnel admin at {where} ({reason}): {hint}") from e
    try:
        dump = json.loads(body)
    except ValueError as e:
        raise AdminUnreachableError(
            f"ztunnel admin at {where} sent a /config_dump that is not JSON ({e}); "
            "is that port a ztunnel admin endpoint?") from e
    if not isinstance(dump, dict) or "workloads" not in dump:
        raise AdminUnreachableError(
            f"the /config_dump from {where} has no 'workloads' section; "
            "is that port a ztunnel admin endpoint (not a waypoint's)?")
    return dump
