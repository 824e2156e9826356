"""Structured access-log lines: one per connection (ztunnel) and one per request (waypoint).

Called by ztunnel's handlers when a connection opens, completes or fails early, and by the
waypoint when a request completes; lines go to the stdlib logger named `access` (the
operator turns them on or off with that logger's level, like ztunnel's `RUST_LOG=access=info`).

Field names are ztunnel's (`src/proxy/metrics.rs`, AMBIENT-INTERNALS §8.2): `src.addr`,
`src.workload`, `src.namespace`, `src.identity` (only with mTLS), `dst.addr` (the next-hop
socket), `dst.hbone_addr` (the CONNECT authority), `dst.service`, `dst.workload`,
`dst.namespace`, `dst.identity` (only with mTLS), `direction` (outbound | inbound),
`bytes_sent`, `bytes_recv` (outbound: sent = client->server; inbound: sent = server->client),
`duration` ("<n>ms"), `error`. Our additions: `response_flags` (when not `-`),
`authz.decision` (allow | deny), `authz.policy` (`ns/name`, absent when the default decided),
`authz.reason`, `trace_id`. Waypoint requests add `method`, `path`, `authority`, `protocol`,
`status`, `route`, `upstream`. Fields with no value (or `unknown`) are left out.

Levels and messages as ztunnel: `connection opened` DEBUG; `connection complete` INFO, or
ERROR with `error`; `connection failed` WARN (early failure, only addresses and error);
`request complete` INFO. Two renderings: JSON (one object per line: `level`, `time`, `scope`,
`message`, then the fields) and text (`<time>\t<level>\taccess\t<message>\t<k=v ...>`,
strings quoted, addresses and numbers bare). Formatting is pure; `AccessLog` only emits.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from meshcore.telemetry.labels import UNKNOWN, ResponseFlags, SecurityPolicy, TrafficLabels

LOGGER_NAME = "access"
Fields = Sequence[tuple[str, "str | int | None"]]
_BARE = frozenset({"src.addr", "dst.addr", "upstream"})


class DecisionLike(Protocol):
    """An authorization outcome: `meshcore.authz.Decision` or the waypoint's L7 one."""

    @property
    def allowed(self) -> bool: ...
    @property
    def policy(self) -> str | None: ...
    @property
    def reason(self) -> str: ...


def _known(value: str | None) -> str | None:
    return value if value and value != UNKNOWN else None


def _decision_fields(decision: DecisionLike | None) -> list[tuple[str, str | int | None]]:
    if decision is None:
        return []
    return [
        ("authz.decision", "allow" if decision.allowed else "deny"),
        ("authz.policy", decision.policy),
        ("authz.reason", decision.reason),
    ]


def _peer_fields(tl: TrafficLabels, src_workload: str | None, dst_workload: str | None
                 ) -> tuple[list[tuple[str, str | int | None]], list[tuple[str, str | int | None]]]:
    """(source fields, destination fields) as both line kinds write them; identities only
    under mTLS (what ztunnel and the waypoint know for sure)."""
    mtls = tl.connection_security_policy == SecurityPolicy.MUTUAL_TLS
    src: list[tuple[str, str | int | None]] = [
        ("src.workload", src_workload or _known(tl.source_canonical_service)),
        ("src.namespace", _known(tl.source_workload_namespace)),
        ("src.identity", _known(tl.source_principal) if mtls else None),
    ]
    dst: list[tuple[str, str | int | None]] = [
        ("dst.service", _known(tl.destination_service)),
        ("dst.workload", dst_workload or _known(tl.destination_canonical_service)),
        ("dst.namespace", _known(tl.destination_workload_namespace)),
        ("dst.identity", _known(tl.destination_principal) if mtls else None),
    ]
    return src, dst


@dataclasses.dataclass(frozen=True, slots=True)
class ConnectionEntry:
    """What one connection's access-log line says (built by the proxy at close)."""

    labels: TrafficLabels
    src_addr: str
    dst_addr: str
    dst_hbone_addr: str | None = None
    src_workload: str | None = None  # pod name; falls back to the canonical service
    dst_workload: str | None = None
    client_to_server: int = 0
    server_to_client: int = 0
    duration_ms: float = 0.0
    error: str | None = None
    decision: DecisionLike | None = None
    trace_id: str | None = None

    @property
    def direction(self) -> str:
        return "outbound" if self.labels.reporter == "source" else "inbound"

    def fields(self, *, complete: bool = True) -> list[tuple[str, str | int | None]]:
        """The line's fields in ztunnel's order (bytes and duration only when `complete`)."""
        tl = self.labels
        src, dst = _peer_fields(tl, self.src_workload, self.dst_workload)
        out: list[tuple[str, str | int | None]] = [
            ("src.addr", self.src_addr), *src,
            ("dst.addr", self.dst_addr), ("dst.hbone_addr", self.dst_hbone_addr), *dst,
            ("direction", self.direction),
        ]
        if complete:
            outbound = self.direction == "outbound"
            out += [
                ("bytes_sent", self.client_to_server if outbound else self.server_to_client),
                ("bytes_recv", self.server_to_client if outbound else self.client_to_server),
                ("duration", f"{int(self.duration_ms)}ms"),
            ]
            if tl.response_flags != ResponseFlags.NONE:
                out.append(("response_flags", tl.response_flags))
        out += _decision_fields(self.decision)
        out.append(("trace_id", self.trace_id))
        if complete:
            out.append(("error", self.error))
        return out


@dataclasses.dataclass(frozen=True, slots=True)
class RequestEntry:
    """What one waypoint request's access-log line says."""

    labels: TrafficLabels
    src_addr: str
    method: str
    path: str
    authority: str
    status: int
    duration_ms: float
    request_bytes: int = 0
    response_bytes: int = 0
    route: str | None = None
    upstream: str | None = None  # the endpoint the request went to, `ip:port`
    src_workload: str | None = None
    dst_workload: str | None = None
    error: str | None = None
    decision: DecisionLike | None = None
    trace_id: str | None = None

    def fields(self) -> list[tuple[str, str | int | None]]:
        tl = self.labels
        src, dst = _peer_fields(tl, self.src_workload, self.dst_workload)
        out: list[tuple[str, str | int | None]] = [
            ("src.addr", self.src_addr), *src, *dst,
            ("method", self.method),
            ("path", self.path),
            ("authority", self.authority),
            ("protocol", tl.request_protocol),
            ("status", self.status),
            ("response_flags",
             tl.response_flags if tl.response_flags != ResponseFlags.NONE else None),
            ("route", self.route),
            ("upstream", self.upstream),
            ("bytes_recv", self.request_bytes),
            ("bytes_sent", self.response_bytes),
            ("duration", f"{int(self.duration_ms)}ms"),
            *_decision_fields(self.decision),
            ("trace_id", self.trace_id),
            ("error", self.error),
        ]
        return out


def format_time(now: float) -> str:
    """RFC 3339 UTC with microseconds, as ztunnel writes it."""
    dt = datetime.datetime.fromtimestamp(now, tz=datetime.UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def format_json(level: str, message: str, fields: Fields, now: float) -> str:
    obj: dict[str, str | int] = {
        "level": level, "time": format_time(now), "scope": LOGGER_NAME, "message": message,
    }
    obj.update((k, v) for k, v in fields if v is not None)
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def format_text(level: str, message: str, fields: Fields, now: float) -> str:
    parts = []
    for key, value in fields:
        if value is None:
            continue
        if isinstance(value, int) or key in _BARE:
            parts.append(f"{key}={value}")
        else:
            parts.append(f"{key}={json.dumps(value, ensure_ascii=False)}")
    return f"{format_time(now)}\t{level}\t{LOGGER_NAME}\t{message}\t{' '.join(parts)}"


_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
           "error": logging.ERROR}


class AccessLog:
    """Emits access-log lines to the `access` logger in JSON or text form."""

    def __init__(self, fmt: str = "text", logger: logging.Logger | None = None) -> None:
        if fmt not in ("text", "json"):
            raise ValueError(f"access log format must be 'text' or 'json', not {fmt!r}")
        self.fmt = fmt
        self.logger = logger or logging.getLogger(LOGGER_NAME)

    def _emit(self, level: str, message: str, fields: Fields | Callable[[], Fields],
              now: float | None) -> None:
        lvl = _LEVELS[level]
        if not self.logger.isEnabledFor(lvl):
            return  # before the fields are built: a disabled log costs nothing per request
        if callable(fields):
            fields = fields()
        render = format_json if self.fmt == "json" else format_text
        line = render(level, message, fields, time.time() if now is None else now)
        self.logger.log(lvl, line, extra={"access_fields": dict(fields)})

    def connection_opened(self, entry: ConnectionEntry, now: float | None = None) -> None:
        self._emit("debug", "connection opened", lambda: entry.fields(complete=False), now)

    def connection_complete(self, entry: ConnectionEntry, now: float | None = None) -> None:
        level = "error" if entry.error else "info"
        self._emit(level, "connection complete", entry.fields, now)

    def connection_failed(self, src_addr: str, dst_addr: str, direction: str, error: str,
                          now: float | None = None) -> None:
        fields = [("src.addr", src_addr), ("dst.addr", dst_addr), ("direction", direction),
                  ("error", error)]
        self._emit("warn", "connection failed", fields, now)

    def request_complete(self, entry: RequestEntry, now: float | None = None) -> None:
        self._emit("info", "request complete", entry.fields, now)
