"""Access-log lines: ztunnel's field names and direction rules, JSON and text, on `access`."""

import json
import logging

import pytest

from meshcore.authz import Decision, reason_denied
from meshcore.telemetry.access_log import (
    AccessLog,
    ConnectionEntry,
    RequestEntry,
    format_json,
    format_text,
)
from meshcore.telemetry.labels import traffic_labels

from .test_labels import ECHO, ECHO_SVC, SLEEP

NOW = 1_790_000_000.25  # 2026-09-21T14:13:20.25Z; fixed so lines are exact
MTLS = traffic_labels(reporter="source", source=SLEEP, destination=ECHO,
                      destination_service=ECHO_SVC, source_identity=SLEEP.identity, mtls=True)


def _outbound(**kw: object) -> ConnectionEntry:
    base = dict(labels=MTLS, src_addr="10.0.0.5:41234", dst_addr="10.0.1.7:15008",
                dst_hbone_addr="10.0.1.7:8080", src_workload="sleep-7656cf8794-abcde",
                dst_workload="echo-5d9c-xyz", client_to_server=67, server_to_client=490,
                duration_ms=13.7)
    base.update(kw)
    return ConnectionEntry(**base)  # type: ignore[arg-type]


def test_outbound_json_fields_in_ztunnel_names() -> None:
    """JSON line: level/time/scope/message then ztunnel's fields; outbound sent = c->s."""
    line = format_json("info", "connection complete", _outbound().fields(), NOW)
    obj = json.loads(line)
    assert list(obj) == [
        "level", "time", "scope", "message", "src.addr", "src.workload", "src.namespace",
        "src.identity", "dst.addr", "dst.hbone_addr", "dst.service", "dst.workload",
        "dst.namespace", "dst.identity", "direction", "bytes_sent", "bytes_recv", "duration",
    ]
    assert obj["time"] == "2026-09-21T14:13:20.250000Z"
    assert obj["scope"] == "access"
    assert obj["src.identity"] == "spiffe://cluster.local/ns/shop/sa/sleep"
    assert obj["dst.service"] == "echo.db.svc.cluster.local"
    assert (obj["direction"], obj["bytes_sent"], obj["bytes_recv"], obj["duration"]) == (
        "outbound", 67, 490, "13ms")


def test_inbound_flips_bytes_and_hides_identities_without_mtls() -> None:
    """Inbound: bytes_sent = server->client; no identities on plaintext connections."""
    plain = traffic_labels(reporter="destination", destination=ECHO, source=SLEEP)
    fields = dict(_outbound(labels=plain).fields())
    assert fields["direction"] == "inbound"
    assert (fields["bytes_sent"], fields["bytes_recv"]) == (490, 67)
    assert fields["src.identity"] is None and fields["dst.identity"] is None


def test_text_line_exact_with_decision_flags_and_error() -> None:
    """Text form: tab-separated head, k=v fields; our authz/flags/trace additions included."""
    decision = Decision(allowed=False, reason=reason_denied("db/deny-sleep"),
                        policy="db/deny-sleep")
    entry = _outbound(labels=MTLS.with_outcome("DENY"), decision=decision,
                      error="connection closed due to policy rejection", trace_id="ab" * 16,
                      client_to_server=0, server_to_client=0, duration_ms=0.4)
    assert format_text("error", "connection complete", entry.fields(), NOW) == (
        "2026-09-21T14:13:20.250000Z\terror\taccess\tconnection complete\t"
        'src.addr=10.0.0.5:41234 src.workload="sleep-7656cf8794-abcde" src.namespace="shop" '
        'src.identity="spiffe://cluster.local/ns/shop/sa/sleep" dst.addr=10.0.1.7:15008 '
        'dst.hbone_addr="10.0.1.7:8080" dst.service="echo.db.svc.cluster.local" '
        'dst.workload="echo-5d9c-xyz" dst.namespace="db" '
        'dst.identity="spiffe://cluster.local/ns/db/sa/echo" direction="outbound" '
        'bytes_sent=0 bytes_recv=0 duration="0ms" response_flags="DENY" '
        'authz.decision="deny" authz.policy="db/deny-sleep" '
        'authz.reason="explicitly denied by: db/deny-sleep" '
        f'trace_id="{"ab" * 16}" error="connection closed due to policy rejection"'
    )


def test_unknown_values_are_left_out_and_workload_falls_back() -> None:
    """Fields whose label is unknown are omitted; the workload falls back to canonical name."""
    labels = traffic_labels(reporter="destination", destination=ECHO)
    fields = dict(ConnectionEntry(labels, "1.2.3.4:5", "10.0.1.7:15008").fields())
    assert fields["src.workload"] is None and fields["src.namespace"] is None
    assert fields["dst.workload"] == "echo"
    assert "dst.service" in fields and fields["dst.service"] is None


def test_request_entry_fields() -> None:
    """A waypoint request line carries method, path, authority, status, route and upstream."""
    labels = traffic_labels(reporter="waypoint", source=SLEEP, destination=ECHO,
                            destination_service=ECHO_SVC, source_identity=SLEEP.identity,
                            request_protocol="http", mtls=True).with_outcome("-", 200)
    entry = RequestEntry(labels, "10.0.0.5:41234", "GET", "/get?x=1", "echo.db:8080", 200,
                         duration_ms=2.9, request_bytes=0, response_bytes=321,
                         route="db/echo-route", upstream="10.0.1.7:8080")
    obj = json.loads(format_json("info", "request complete", entry.fields(), NOW))
    assert {k: obj[k] for k in ("method", "path", "authority", "protocol", "status", "route",
                                "upstream", "bytes_recv", "bytes_sent", "duration")} == {
        "method": "GET", "path": "/get?x=1", "authority": "echo.db:8080", "protocol": "http",
        "status": 200, "route": "db/echo-route", "upstream": "10.0.1.7:8080",
        "bytes_recv": 0, "bytes_sent": 321, "duration": "2ms",
    }
    assert "response_flags" not in obj and "error" not in obj


@pytest.mark.parametrize(
    ("error", "level"),
    [pytest.param(None, logging.INFO, id="success-info"),
     pytest.param("connection reset", logging.ERROR, id="error-error")],
)
def test_access_logger_levels(caplog: pytest.LogCaptureFixture, error: str | None,
                              level: int) -> None:
    """Lines go to the `access` logger: complete at INFO, or ERROR when there is an error."""
    caplog.set_level(logging.DEBUG, logger="access")
    log = AccessLog("json")
    log.connection_opened(_outbound(), now=NOW)
    log.connection_complete(_outbound(error=error), now=NOW)
    log.connection_failed("1.2.3.4:5", "10.0.0.1:80", "outbound", "no route", now=NOW)
    records = [r for r in caplog.records if r.name == "access"]
    assert [r.levelno for r in records] == [logging.DEBUG, level, logging.WARNING]
    opened = json.loads(records[0].getMessage())
    assert opened["message"] == "connection opened" and "bytes_sent" not in opened
    assert json.loads(records[1].getMessage()).get("error") == error
    assert json.loads(records[2].getMessage())["level"] == "warn"


def test_disabled_logger_formats_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """With `access` above INFO, completions are not even formatted (the data path pays 0)."""
    caplog.set_level(logging.WARNING, logger="access")
    AccessLog("text").connection_complete(_outbound(), now=NOW)
    assert [r for r in caplog.records if r.name == "access"] == []


def test_bad_format_is_rejected() -> None:
    """Only `text` and `json` are formats."""
    with pytest.raises(ValueError, match="'yaml'"):
        AccessLog("yaml")
