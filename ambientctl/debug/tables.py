"""Aligned text tables for the sections of a ztunnel `/config_dump`.

Called by `ztunnel_config` with the decoded JSON (the shape `ztunnel.admin.config_dump` writes
from `meshcore.wds` types through `meshcore.admin.jsonable`). Pure: dicts in, text out. Missing
keys render as `-`, so a dump from an older ztunnel still prints. Enum fields may be names or
numbers (`to_jsonable` writes IntEnums as ints); both render as the name. Rows keep the dump's order
(sorted by resource name there).

Columns: workloads NAME NAMESPACE IP NODE IDENTITY PROTOCOL WAYPOINT; services HOSTNAME VIPS
PORTS ENDPOINTS WAYPOINT (PORTS `service:target`, `named` for a named target port; ENDPOINTS
`healthy/total` workloads listing the service); policies NAME SCOPE ACTION RULES (RULES = groups
as ztunnel sees them, one per AuthorizationPolicy rule it kept); certificates IDENTITY STATE
EXPIRY.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any

from meshcore.wds import Action, Scope, TunnelProtocol, WorkloadStatus

SECTIONS = ("workloads", "services", "policies", "certificates")
HEADERS = {
    "workloads": ("NAME", "NAMESPACE", "IP", "NODE", "IDENTITY", "PROTOCOL", "WAYPOINT"),
    "services": ("HOSTNAME", "VIPS", "PORTS", "ENDPOINTS", "WAYPOINT"),
    "policies": ("NAME", "SCOPE", "ACTION", "RULES"),
    "certificates": ("IDENTITY", "STATE", "EXPIRY"),
}


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell, two spaces apart, no trailing spaces."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    lines = []
    for row in (headers, *rows):
        cells = [c.ljust(w) for c, w in zip(row, widths, strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def enum_name(cls: type[enum.IntEnum], value: Any) -> str:
    """An enum field as its name: dumps carry names, or numbers (IntEnums serialize as ints)."""
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return cls(value).name
        except ValueError:
            return str(value)
    return _text(value)


def _text(value: Any) -> str:
    if value is None or value == "" or value == []:
        return "-"
    return str(value)


def waypoint_text(gateway: Mapping[str, Any] | None) -> str:
    """A GatewayAddress dict as `ns/hostname` (or its IP); `-` when there is none."""
    if not gateway:
        return "-"
    dest = gateway.get("destination") or {}
    if "hostname" in dest:
        return f"{dest.get('namespace', '')}/{dest['hostname']}"
    return _text(dest.get("address"))


def workload_rows(dump: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for w in dump.get("workloads", []):
        protocol = enum_name(TunnelProtocol, w.get("tunnel_protocol", 0))
        rows.append([
            _text(w.get("name")), _text(w.get("namespace")),
            _text(",".join(w.get("addresses") or [])), _text(w.get("node")),
            _text(w.get("identity")), "TCP" if protocol == "NONE" else _text(protocol),
            waypoint_text(w.get("waypoint")),
        ])
    return rows


def _endpoint_counts(dump: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    counts: dict[str, tuple[int, int]] = {}
    for w in dump.get("workloads", []):
        healthy = enum_name(WorkloadStatus, w.get("status", 0)) == "HEALTHY"
        for entry in w.get("services") or []:
            key = entry.get("service", "")
            h, t = counts.get(key, (0, 0))
            counts[key] = (h + healthy, t + 1)
    return counts


def _ports_text(ports: Sequence[Mapping[str, Any]]) -> str:
    parts = []
    for p in ports:
        target = p.get("target_port") or "named"
        parts.append(f"{p.get('service_port')}:{target}")
    return _text(",".join(parts))


def service_rows(dump: Mapping[str, Any]) -> list[list[str]]:
    counts = _endpoint_counts(dump)
    rows = []
    for s in dump.get("services", []):
        key = f"{s.get('namespace', '')}/{s.get('hostname', '')}"
        healthy, total = counts.get(key, (0, 0))
        vips = ",".join(str(a.get("address")) for a in s.get("addresses") or [])
        rows.append([_text(s.get("hostname")), _text(vips), _ports_text(s.get("ports") or []),
                     f"{healthy}/{total}", waypoint_text(s.get("waypoint"))])
    return rows


def policy_rows(dump: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for p in dump.get("policies", []):
        action = enum_name(Action, p.get("action"))
        if p.get("dry_run"):
            action += " (dry-run)"
        rows.append([f"{p.get('namespace', '')}/{p.get('name', '')}",
                     enum_name(Scope, p.get("scope")), action, str(len(p.get("groups") or []))])
    return rows


def certificate_rows(dump: Mapping[str, Any]) -> list[list[str]]:
    return [[_text(c.get("identity")), _text(c.get("state")), _text(c.get("expiry"))]
            for c in dump.get("certificates", [])]


_ROWS = {"workloads": workload_rows, "services": service_rows, "policies": policy_rows,
         "certificates": certificate_rows}


def render_section(section: str, dump: Mapping[str, Any]) -> str:
    """The table for one section of a config dump."""
    return render_table(HEADERS[section], _ROWS[section](dump))
