"""Turn frozen config types (dataclasses, enums, IPs, identities) into JSON-ready values.

Used by the proxies' `/config_dump` and by `ambientctl -o json`. Pure; never raises for the
types our state is made of. Private fields (leading `_`) and PEM key material are skipped.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import ipaddress
from collections.abc import Mapping
from typing import Any

from meshcore.identity import SpiffeId

_SECRET_FIELDS = frozenset({"key_pem", "private_key"})


def to_jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):  # before int: IntEnums read better by name
        return value.name
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, SpiffeId):
        return value.uri
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address
                  | ipaddress.IPv4Network | ipaddress.IPv6Network):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_jsonable(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if not f.name.startswith("_") and f.name not in _SECRET_FIELDS
        }
    if isinstance(value, Mapping):
        return {str(to_jsonable(k)): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [to_jsonable(v) for v in value]
        return sorted(items, key=str) if isinstance(value, set | frozenset) else items
    return str(value)
