"""Deterministic plain-data rendering of a ResourceSet (golden tests, config dumps).

Called by tests and by debugging endpoints/CLI dumps. Uses betterproto's proto3-JSON
`to_dict()` (camelCase, default values omitted) and rewrites address bytes as text
(`10.0.0.1`; security CIDRs keep their separate `length`), with resources sorted by name.
"""

from __future__ import annotations

import base64
import ipaddress
from typing import Any

from istiod_lite.translate.mesh import ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL
from istiod_lite.translate.translator import ResourceSet


def _ip_text(b64: str) -> str:
    return str(ipaddress.ip_address(base64.b64decode(b64)))


def _fix(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _fix(v, k) for k, v in sorted(value.items())}
    if isinstance(value, list):
        if key == "addresses" and all(isinstance(v, str) for v in value):
            return [_ip_text(v) for v in value]
        return [_fix(v) for v in value]
    if key == "address" and isinstance(value, str):
        return _ip_text(value)
    return value


# Enum fields whose zero value proto3 JSON would hide; shown because reviewers look for them.
_WORKLOAD_DEFAULTS = {"status": "HEALTHY", "tunnelProtocol": "NONE"}
_AUTHORIZATION_DEFAULTS = {"action": "ALLOW", "scope": "GLOBAL"}


def _address(msg: Any) -> dict[str, Any]:
    out: dict[str, Any] = _fix(msg.to_dict())
    if "workload" in out:
        out["workload"] = dict(sorted({**_WORKLOAD_DEFAULTS, **out["workload"]}.items()))
    return out


def render(resources: ResourceSet) -> dict[str, Any]:
    """{type URL: {resource name: plain dict}}, plus `statuses` as strings."""
    return {
        ADDRESS_TYPE_URL: {n: _address(resources.addresses[n])
                           for n in sorted(resources.addresses)},
        AUTHORIZATION_TYPE_URL: {
            n: dict(sorted({**_AUTHORIZATION_DEFAULTS,
                            **_fix(resources.authorizations[n].to_dict())}.items()))
            for n in sorted(resources.authorizations)},
        "statuses": sorted(str(s) for s in resources.statuses),
    }
