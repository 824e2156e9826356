"""Header blocks for HBONE: HPACK (via the `hpack` library) and RFC 9113 §8 field validation.

Called by `connection.py`. Outgoing: `request_fields` / `response_fields` build the field list for
open_connect / respond and reject what HTTP/2 forbids (LocalProtocolError: our caller's fault).
Incoming: `decode_block` HPACK-decodes (CompressionError: a connection error, the shared table is
lost), then `parse_request` / `parse_response` check pseudo-header rules and raise
`MalformedHeaders`, which the connection turns into a stream error PROTOCOL_ERROR (RST_STREAM),
never a connection error.

CONNECT profile (RFC 9113 §8.5): a CONNECT request carries `:method` and `:authority` only. Other
methods must carry `:scheme` and `:path`; we still report them so the adapter can answer 400.
Extended CONNECT (`:protocol`, RFC 8441) is malformed here: we never advertise it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import hpack

from meshcore.hbone.errors import CompressionError, LocalProtocolError

__all__ = [
    "MalformedHeaders",
    "ParsedRequest",
    "decode_block",
    "field_list_size",
    "parse_request",
    "parse_response",
    "request_fields",
    "response_fields",
]

# RFC 9110 token characters, lowercase only (RFC 9113 §8.2.1).
_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9a-z]+$")
# No NUL, CR, LF anywhere; no leading/trailing SP or HTAB (RFC 9113 §8.2.1).
_BAD_VALUE = re.compile(r"[\x00\r\n]|^[ \t]|[ \t]$")
_CONNECTION_SPECIFIC = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}
)
_REQUEST_PSEUDO = frozenset({":method", ":scheme", ":authority", ":path"})

ParsedRequest = tuple[str, str | None, str | None, str | None, tuple[tuple[str, str], ...]]


class MalformedHeaders(Exception):
    """Internal: a received header block breaks RFC 9113 §8; the stream gets RST_STREAM."""


def field_list_size(fields: Iterable[tuple[str, str]]) -> int:
    """SETTINGS_MAX_HEADER_LIST_SIZE accounting: name + value octets + 32 per field."""
    return sum(len(n.encode()) + len(v.encode()) + 32 for n, v in fields)


def _regular_field_problem(name: str, value: str) -> str | None:
    if not _NAME.match(name):
        return f"invalid header name {name!r} (names must be lowercase tokens)"
    if name in _CONNECTION_SPECIFIC:
        return f"connection-specific header {name!r} is not allowed in HTTP/2"
    if name == "te" and value != "trailers":
        return "header 'te' may only be 'trailers'"
    if _BAD_VALUE.search(value):
        return f"invalid value for header {name!r} (CR/LF/NUL or surrounding whitespace)"
    return None


def _checked_extra(headers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    out = []
    for name, value in headers:
        if name.startswith(":"):
            raise LocalProtocolError(f"extra header {name!r}: pseudo-headers are set by the core")
        problem = _regular_field_problem(name, value)
        if problem:
            raise LocalProtocolError(problem)
        out.append((name, value))
    return out


def request_fields(authority: str, headers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The CONNECT request's fields: `:method`, `:authority`, then the caller's headers."""
    if not authority or _BAD_VALUE.search(authority) or " " in authority:
        raise LocalProtocolError(f"invalid CONNECT authority {authority!r}; expected host:port")
    return [(":method", "CONNECT"), (":authority", authority), *_checked_extra(headers)]


def response_fields(status: int, headers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """A final response's fields: `:status`, then the caller's headers."""
    if not 200 <= status <= 599:
        raise LocalProtocolError(f"status {status} is not a final response status (200..599)")
    return [(":status", str(status)), *_checked_extra(headers)]


def decode_block(decoder: hpack.Decoder, block: bytes, stream_id: int) -> list[tuple[str, str]]:
    """HPACK-decode one complete header block, as str pairs."""
    try:
        return [(str(n), str(v)) for n, v in decoder.decode(block)]
    except (hpack.HPACKError, UnicodeDecodeError, ValueError, IndexError) as exc:
        raise CompressionError(f"cannot decode header block: {exc}", stream_id=stream_id) from exc


def _split(fields: list[tuple[str, str]]) -> tuple[dict[str, str], tuple[tuple[str, str], ...]]:
    pseudo: dict[str, str] = {}
    regular: list[tuple[str, str]] = []
    for name, value in fields:
        if name.startswith(":"):
            if regular:
                raise MalformedHeaders(f"pseudo-header {name} after a regular header")
            if name in pseudo:
                raise MalformedHeaders(f"duplicate pseudo-header {name}")
            pseudo[name] = value
            continue
        problem = _regular_field_problem(name, value)
        if problem:
            raise MalformedHeaders(problem)
        regular.append((name, value))
    return pseudo, tuple(regular)


def parse_request(fields: list[tuple[str, str]]) -> ParsedRequest:
    """(method, authority, scheme, path, headers) of a valid request; else MalformedHeaders."""
    pseudo, regular = _split(fields)
    unknown = set(pseudo) - _REQUEST_PSEUDO
    if unknown:
        raise MalformedHeaders(f"pseudo-header(s) {sorted(unknown)} not allowed in a request")
    method = pseudo.get(":method")
    if not method:
        raise MalformedHeaders("request without :method")
    authority = pseudo.get(":authority")
    scheme = pseudo.get(":scheme")
    path = pseudo.get(":path")
    if method == "CONNECT":
        if scheme is not None or path is not None:
            raise MalformedHeaders("CONNECT request with :scheme or :path (RFC 9113 §8.5)")
        if not authority:
            raise MalformedHeaders("CONNECT request without :authority")
    elif not scheme or not path:
        raise MalformedHeaders(f"{method} request without :scheme and :path")
    return method, authority, scheme, path, regular


def parse_response(fields: list[tuple[str, str]]) -> tuple[int, tuple[tuple[str, str], ...]]:
    """(status, headers) of a valid response; else MalformedHeaders."""
    pseudo, regular = _split(fields)
    if set(pseudo) != {":status"}:
        raise MalformedHeaders(f"response pseudo-headers {sorted(pseudo)}; need only :status")
    status = pseudo[":status"]
    if len(status) != 3 or not status.isdigit():
        raise MalformedHeaders(f"invalid :status {status!r}")
    return int(status), regular
