"""The HBONE `baggage` header: a source workload's metadata, for the peer's telemetry labels.

ztunnel sends it on every CONNECT (`src/baggage.rs`, AMBIENT-INTERNALS §2.3): a comma-joined
`key=value` list with `k8s.cluster.name`, `k8s.namespace.name`, `k8s.<kind>.name`
(kind: deployment | cronjob | pod | job), `service.name` (canonical service),
`service.version` (canonical revision), `cloud.region`, `cloud.availability_zone`; empty values
are omitted. Called by ztunnel's outbound path (`format_baggage`) and by the inbound side and
the waypoint (`parse_baggage` -> `PeerMetadata` -> `labels.traffic_labels(peer=...)`).
Pure. Parsing is lenient the way W3C baggage readers are: unknown keys and `;properties` are
ignored, members without `=` are skipped; a header that is not text at all is the peer's fault.
"""

from __future__ import annotations

import urllib.parse

from meshcore.telemetry.labels import PeerMetadata
from meshcore.wds.workload import Workload, WorkloadType

_KINDS = ("deployment", "cronjob", "pod", "job")
MAX_BAGGAGE = 8192  # W3C: at least 8192 bytes must be accepted; we read no more than that


def format_baggage(workload: Workload) -> str:
    """The `baggage` value ztunnel sends for `workload` (empty fields omitted)."""
    kind = WorkloadType(workload.workload_type).name.lower()
    pairs = [
        ("k8s.cluster.name", workload.cluster_id),
        ("k8s.namespace.name", workload.namespace),
        (f"k8s.{kind}.name", workload.workload_name),
        ("service.name", workload.canonical_name),
        ("service.version", workload.canonical_revision),
        ("cloud.region", workload.locality.region),
        ("cloud.availability_zone", workload.locality.zone),
    ]
    return ",".join(f"{k}={urllib.parse.quote(v, safe='')}" for k, v in pairs if v)


def parse_baggage(value: str) -> PeerMetadata:
    """Read the members we know from a `baggage` value; unknown ones are ignored."""
    fields: dict[str, str] = {}
    for member in value[:MAX_BAGGAGE].split(","):
        key, sep, raw = member.split(";", 1)[0].partition("=")
        if not sep:
            continue
        key, val = key.strip(), urllib.parse.unquote(raw.strip())
        if key == "k8s.cluster.name":
            fields["cluster"] = val
        elif key == "k8s.namespace.name":
            fields["namespace"] = val
        elif key.startswith("k8s.") and key.endswith(".name") and key[4:-5] in _KINDS:
            fields["workload_name"] = val
            fields["workload_kind"] = key[4:-5]
        elif key == "service.name":
            fields["canonical_service"] = val
        elif key == "service.version":
            fields["canonical_revision"] = val
        elif key == "cloud.region":
            fields["region"] = val
        elif key == "cloud.availability_zone":
            fields["zone"] = val
    return PeerMetadata(**fields)
