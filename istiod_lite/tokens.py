"""The bootstrap token file: which bearer token stands for which caller (sandbox, tests).

On Kubernetes callers present service-account tokens checked by TokenReview; without a cluster
istiod-lite reads a YAML list instead:

    - token: 3f9c...            # a node proxy: ztunnel of node-1
      node: node-1
    - token: 77ab...            # a workload (e.g. a waypoint) with one identity
      identity: spiffe://cluster.local/ns/shop/sa/waypoint
      expires: 2026-12-01T00:00:00Z   # optional

`load_token_table(path)` turns it into the CA's `StaticTokenTable`; errors name the entry.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import yaml

from istiod_lite.ca.authz import NodeProxyCaller, StaticTokenTable, TokenGrant, WorkloadCaller
from istiod_lite.errors import IstiodLiteError
from meshcore.identity import InvalidIdentityError, SpiffeId


class TokenFileError(IstiodLiteError):
    """The token file cannot be used; the message names the file and the entry."""


def parse_token_entries(entries: Any, *, source: str) -> dict[str, TokenGrant]:
    if not isinstance(entries, list):
        raise TokenFileError(f"{source}: expected a YAML list of {{token, node|identity}} entries")
    grants: dict[str, TokenGrant] = {}
    for i, entry in enumerate(entries):
        where = f"{source}: entry {i}"
        token = entry.get("token") if isinstance(entry, dict) else None
        if not isinstance(token, str) or not token:
            raise TokenFileError(f"{where}: needs a non-empty string 'token'")
        if ("node" in entry) == ("identity" in entry):
            raise TokenFileError(f"{where}: give exactly one of 'node' or 'identity'")
        if "node" in entry:
            caller: NodeProxyCaller | WorkloadCaller = NodeProxyCaller(str(entry["node"]))
        else:
            try:
                caller = WorkloadCaller(SpiffeId.parse(str(entry["identity"])))
            except InvalidIdentityError as exc:
                raise TokenFileError(f"{where}: identity: {exc}") from exc
        expires = entry.get("expires")
        if isinstance(expires, str):
            expires = dt.datetime.fromisoformat(expires.replace("Z", "+00:00"))
        if expires is not None and not isinstance(expires, dt.datetime):
            raise TokenFileError(f"{where}: expires must be an ISO 8601 timestamp")
        if isinstance(expires, dt.datetime) and expires.tzinfo is None:
            expires = expires.replace(tzinfo=dt.UTC)
        if entry["token"] in grants:
            raise TokenFileError(f"{where}: duplicate token")
        grants[entry["token"]] = TokenGrant(caller, expires)
    return grants


def load_token_table(path: Path) -> StaticTokenTable:
    try:
        entries = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise TokenFileError(f"cannot read token file {path}: {exc}") from exc
    return StaticTokenTable(parse_token_entries(entries or [], source=str(path)))
