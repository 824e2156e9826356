"""Strict field readers used by the per-kind parsers, and deep-freeze helpers.

Every parser in meshcore.model reads a plain dict through a `Reader`, which knows the object
(kind, namespace, name) and the path of the field being read, so any problem becomes an
`InvalidObjectError` naming exactly that field (`spec.rules[0].from[1].source.ipBlocks[2]`).
`freeze` turns nested dicts/lists into read-only mappings/tuples so model objects stay
immutable even where we keep raw sub-documents (Gateway/HTTPRoute specs); `thaw` undoes it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from meshcore.model.errors import InvalidObjectError

EMPTY: Mapping[str, str] = MappingProxyType({})


def freeze(value: Any) -> Any:
    """Deep-copy `value` into read-only containers (MappingProxyType, tuple)."""
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Inverse of `freeze`: plain dicts and lists (for dumping back to YAML/JSON)."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "object", list: "list", str: "string", bool: "boolean", int: "integer",
            float: "number"}.get(type(value), type(value).__name__)


class Reader:
    """Reads fields of one object; every failure names kind, namespace/name and the field."""

    def __init__(self, kind: str, namespace: str, name: str) -> None:
        self.kind = kind
        self.namespace = namespace
        self.name = name

    def fail(self, field: str, message: str) -> InvalidObjectError:
        return InvalidObjectError(self.kind, self.namespace, self.name, field, message)

    # -- containers -------------------------------------------------------------------------
    def obj(self, d: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
        """An optional nested object; missing or null gives {}."""
        v = d.get(key)
        if v is None:
            return {}
        if not isinstance(v, Mapping):
            raise self.fail(path, f"expected an object, got {_type_name(v)}")
        return v

    def items(self, d: Mapping[str, Any], key: str, path: str) -> list[Any]:
        """An optional list; missing or null gives []."""
        v = d.get(key)
        if v is None:
            return []
        if not isinstance(v, list):
            raise self.fail(path, f"expected a list, got {_type_name(v)}")
        return v

    def objs(self, d: Mapping[str, Any], key: str, path: str
             ) -> list[tuple[str, Mapping[str, Any]]]:
        """An optional list of objects, returned with each element's path."""
        out = []
        for i, v in enumerate(self.items(d, key, path)):
            p = f"{path}[{i}]"
            if not isinstance(v, Mapping):
                raise self.fail(p, f"expected an object, got {_type_name(v)}")
            out.append((p, v))
        return out

    def only(self, d: Mapping[str, Any], allowed: frozenset[str] | set[str], path: str) -> None:
        """Reject fields we do not know (for CRDs whose whole schema we implement)."""
        for k in d:
            if k not in allowed:
                where = f"{path}.{k}" if path else str(k)
                known = ", ".join(sorted(allowed))
                raise self.fail(where, f"unknown field (expected one of {known})")

    # -- scalars ----------------------------------------------------------------------------
    def str_(self, d: Mapping[str, Any], key: str, path: str, default: str = "",
             required: bool = False) -> str:
        v = d.get(key)
        if v is None:
            if required:
                raise self.fail(path, "required field is missing")
            return default
        if not isinstance(v, str):
            raise self.fail(path, f"expected a string, got {_type_name(v)}")
        if required and not v:
            raise self.fail(path, "must not be empty")
        return v

    def strs(self, d: Mapping[str, Any], key: str, path: str) -> tuple[str, ...]:
        out = []
        for i, v in enumerate(self.items(d, key, path)):
            if not isinstance(v, str):
                raise self.fail(f"{path}[{i}]", f"expected a string, got {_type_name(v)}")
            out.append(v)
        return tuple(out)

    def int_(self, d: Mapping[str, Any], key: str, path: str, default: int | None = None,
             lo: int | None = None, hi: int | None = None) -> int | None:
        v = d.get(key)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.fail(path, f"expected an integer, got {_type_name(v)}")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise self.fail(path, f"{v} is out of range [{lo}, {hi}]")
        return v

    def bool_(self, d: Mapping[str, Any], key: str, path: str, default: bool = False) -> bool:
        v = d.get(key)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise self.fail(path, f"expected true or false, got {_type_name(v)}")
        return v

    def enum(self, d: Mapping[str, Any], key: str, path: str, allowed: tuple[str, ...],
             default: str) -> str:
        v = self.str_(d, key, path, default=default)
        if v not in allowed:
            raise self.fail(path, f'unknown value "{v}" (expected {", ".join(allowed)})')
        return v

    def labels(self, d: Mapping[str, Any], key: str, path: str) -> Mapping[str, str]:
        """A string→string map (labels, annotations, selectors); values must be strings."""
        m = self.obj(d, key, path)
        out = {}
        for k, v in m.items():
            if not isinstance(v, str):
                raise self.fail(f'{path}["{k}"]', f"expected a string value, got {_type_name(v)}")
            out[str(k)] = v
        return MappingProxyType(out) if out else EMPTY

    def port(self, value: Any, path: str) -> int:
        """A port number given as an integer or a decimal string (AuthorizationPolicy style)."""
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            raise self.fail(path, f"invalid port {value!r} (expected 1-65535)")
        return value

    def ip(self, value: Any, path: str) -> str:
        """An IP address, normalised to its canonical text form."""
        try:
            return str(ipaddress.ip_address(value))
        except (ValueError, TypeError):
            raise self.fail(path, f"invalid IP address {value!r}") from None

    def cidr(self, value: Any, path: str) -> str:
        """An IP or CIDR (`10.0.0.0/8`, `10.1.2.3`); host bits are allowed, as Istio allows."""
        try:
            return str(ipaddress.ip_interface(value)) if "/" in str(value) else str(
                ipaddress.ip_address(value))
        except (ValueError, TypeError):
            raise self.fail(path, f"invalid IP address or CIDR {value!r}") from None


def empty_map() -> Any:
    """A dataclass field defaulting to the shared empty read-only mapping."""
    return dataclasses.field(default_factory=lambda: EMPTY)
