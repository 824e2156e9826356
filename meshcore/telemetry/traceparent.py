"""W3C Trace Context `traceparent` values: parse, format, make. Pure.

Called by `tracing` (span parents and the header to send), by ztunnel (the HBONE CONNECT
carries a `traceparent` per outbound connection, AMBIENT-INTERNALS §2.3; the inbound side reuses
it as its span parent and log id) and by the waypoint (incoming HTTP requests; the upstream
request carries the waypoint's own span as parent).

Format (W3C Trace Context level 1): `<version>-<trace-id>-<parent-id>-<flags>`, lower-case hex,
2-32-16-2 digits; version `ff` is invalid; an all-zero trace-id or parent-id is invalid;
version `00` has exactly these four fields; a higher version may append `-<more>` fields,
which we ignore (and we answer in version 00). Surrounding spaces/tabs are allowed. A
malformed value raises `MalformedHeaderError`; the caller then starts a new trace.
"""

from __future__ import annotations

import dataclasses
import random
import re

from meshcore.telemetry.errors import MalformedHeaderError

HEADER = "traceparent"
SAMPLED = 0x01
_HEX = re.compile(r"^[0-9a-f]+$")
_random = random.SystemRandom()


@dataclasses.dataclass(frozen=True, slots=True)
class TraceParent:
    trace_id: int  # 128 bits, non-zero
    span_id: int  # 64 bits, non-zero: the parent span (the sender's span)
    flags: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.trace_id < 1 << 128:
            raise ValueError(f"trace id {self.trace_id:#x} is not a non-zero 128-bit number")
        if not 0 < self.span_id < 1 << 64:
            raise ValueError(f"span id {self.span_id:#x} is not a non-zero 64-bit number")
        if not 0 <= self.flags <= 0xFF:
            raise ValueError(f"trace flags {self.flags:#x} do not fit in a byte")

    @property
    def sampled(self) -> bool:
        return bool(self.flags & SAMPLED)

    @property
    def trace_id_hex(self) -> str:
        return f"{self.trace_id:032x}"

    @property
    def span_id_hex(self) -> str:
        return f"{self.span_id:016x}"

    def format(self) -> str:
        """The header value, version 00."""
        return f"00-{self.trace_id:032x}-{self.span_id:016x}-{self.flags:02x}"

    def child(self) -> TraceParent:
        """Same trace, a new random span id (for a hop that forwards without recording)."""
        return TraceParent(self.trace_id, _nonzero(64), self.flags)

    @classmethod
    def random(cls, *, sampled: bool = False) -> TraceParent:
        """A new trace, as ztunnel makes one per outbound connection (flags 00)."""
        return cls(_nonzero(128), _nonzero(64), SAMPLED if sampled else 0)

    @classmethod
    def parse(cls, value: str) -> TraceParent:
        text = value.strip(" \t")
        parts = text.split("-")
        if len(parts) < 4:
            raise MalformedHeaderError(HEADER, value, "expected version-traceid-parentid-flags")
        version, trace_id, span_id, flags = parts[:4]
        if len(version) != 2 or not _HEX.match(version):
            raise MalformedHeaderError(HEADER, value, "version is not 2 lower-case hex digits")
        if version == "ff":
            raise MalformedHeaderError(HEADER, value, "version ff is forbidden")
        if version == "00" and len(parts) != 4:
            raise MalformedHeaderError(HEADER, value, "version 00 has exactly four fields")
        for name, field, size in (("trace-id", trace_id, 32), ("parent-id", span_id, 16),
                                  ("trace-flags", flags, 2)):
            if len(field) != size or not _HEX.match(field):
                raise MalformedHeaderError(
                    HEADER, value, f"{name} is not {size} lower-case hex digits")
        tid, sid = int(trace_id, 16), int(span_id, 16)
        if tid == 0:
            raise MalformedHeaderError(HEADER, value, "trace-id is all zeros")
        if sid == 0:
            raise MalformedHeaderError(HEADER, value, "parent-id is all zeros")
        return cls(tid, sid, int(flags, 16))


def parse_or_none(value: str | None) -> TraceParent | None:
    """`parse`, but None for an absent or malformed header (W3C: restart the trace)."""
    if value is None:
        return None
    try:
        return TraceParent.parse(value)
    except MalformedHeaderError:
        return None


def _nonzero(bits: int) -> int:
    while True:
        n = _random.getrandbits(bits)
        if n:
            return n
