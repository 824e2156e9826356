"""Small helpers shared by the from_proto gates of `meshcore.wds` (workload, authorization).

Internal: builds `ConversionError`s that name the resource and field, decodes IP bytes and
checks enum values. Pure.
"""

from __future__ import annotations

import enum
import ipaddress
from typing import TypeVar

from meshcore.wds.errors import ConversionError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
E = TypeVar("E", bound=enum.IntEnum)


class Err:
    """Builds ConversionErrors for one resource."""

    __slots__ = ("kind", "resource")

    def __init__(self, kind: str, resource: str) -> None:
        self.kind = kind
        self.resource = resource

    def __call__(self, field: str, reason: str) -> ConversionError:
        return ConversionError(self.kind, self.resource, field, reason)


def ip_from_bytes(raw: bytes, err: Err, field: str) -> IPAddress:
    if len(raw) == 4:
        return ipaddress.IPv4Address(raw)
    if len(raw) == 16:
        return ipaddress.IPv6Address(raw)
    raise err(field, f"an IP address must be 4 or 16 bytes, got {len(raw)}")


def enum_value(cls: type[E], value: object, err: Err, field: str) -> E:
    try:
        return cls(int(value))  # type: ignore[call-overload]
    except (ValueError, TypeError) as e:
        raise err(field, f"unknown {cls.__name__} value {value!r}") from e
