"""Errors of the telemetry library (`meshcore.telemetry`).

Telemetry never fails the data path: recording a metric, writing an access-log line or ending
a span cannot raise on valid inputs. What can fail is configuration (tracing asked for an
OTLP exporter whose package is not installed, a sample ratio out of range) and parsing a
peer's header (`traceparent`, `baggage`). Configuration errors are the operator's to fix and
say how; a malformed header is the peer's fault and the caller ignores the header (W3C says
to start a new trace), so those errors carry the offending value for a debug log.
"""

from __future__ import annotations

from meshcore.errors import MeshCoreError


class TelemetryError(MeshCoreError):
    """Base of the telemetry library's errors."""


class TelemetryConfigError(TelemetryError, ValueError):
    """The telemetry configuration cannot be applied; the message names the setting and fix.

    Attributes:
        setting: the offending setting ("tracing.otlp_endpoint").
    """

    def __init__(self, setting: str, message: str) -> None:
        self.setting = setting
        super().__init__(f"telemetry setting {setting}: {message}")


class MalformedHeaderError(TelemetryError, ValueError):
    """A peer sent a header we cannot parse (the peer's fault); callers drop the header.

    Attributes:
        header: the header name ("traceparent").
        value: the value as received.
    """

    def __init__(self, header: str, value: str, reason: str) -> None:
        self.header = header
        self.value = value
        super().__init__(f"malformed {header} header {value!r}: {reason}")
