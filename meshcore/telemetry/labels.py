"""Istio's standard traffic labels as one frozen value, and the builders that fill them.

Called by ztunnel's inbound/outbound handlers and by the waypoint when a connection or request
starts; the resulting `TrafficLabels` go to `metrics.TcpRecorder.open` / `RequestRecorder.record`
(as metric attributes) and, through the recorder, to the access log. Pure: no I/O.

Label sources (ztunnel `src/proxy/metrics.rs`, AMBIENT-INTERNALS §8.1):
- source_* from the source Workload: `workload_name` -> source_workload, `canonical_name` ->
  source_canonical_service and source_app, `canonical_revision` -> source_canonical_revision and
  source_version, `namespace`, `cluster_id` -> source_cluster. Where the proxy cannot look the
  source up, the peer's `baggage` (a `PeerMetadata`) fills them first; the Workload wins.
  (ztunnel sets source_app from the baggage's workload name, unlike every other path; we use
  the canonical service there too, so `source_app` means the same thing on every reporter.)
- source_principal only from the mTLS handshake (inbound) or our own identity (outbound HBONE);
  never from the Workload. destination_principal from the destination Workload's identity.
- destination_service* from the destination Service (hostname, name, namespace).
- Principals are full URIs (`spiffe://td/ns/x/sa/y`), as ztunnel writes them.

Invariants: every label is always present with a non-empty value; missing values are the
string `unknown`. `response_code` / `grpc_response_status` exist only on HTTP labels (None on
TCP labels means "no such label"); `grpc_response_status` is "" on non-gRPC requests, as
Envoy writes it, and `response_code` is "0" until the outcome is known. The four locality
labels form one group, present only when a source or destination workload (or the peer's
baggage) has a locality (each label then `unknown` if empty).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator

from meshcore.identity import SpiffeId
from meshcore.wds.workload import Service, Workload

UNKNOWN = "unknown"
OVERFLOW = "overflow"


class Reporter:
    """Values of the `reporter` label."""

    SOURCE = "source"  # the client-side ztunnel (outbound)
    DESTINATION = "destination"  # the server-side ztunnel (inbound)
    WAYPOINT = "waypoint"


class Protocol:
    """Values of the `request_protocol` label."""

    TCP = "tcp"
    HTTP = "http"
    GRPC = "grpc"


class SecurityPolicy:
    """Values of `connection_security_policy`: ztunnel writes `unknown` for plaintext."""

    MUTUAL_TLS = "mutual_tls"
    NONE = UNKNOWN


class ResponseFlags:
    """Values of `response_flags`. Everything but `-` is a failure (counted as failed)."""

    NONE = "-"
    DENY = "DENY"  # authorization policy denied the connection
    CONNECT = "CONNECT"  # upstream connection failed
    TLS_FAILURE = "TLS_FAILURE"
    H2_HANDSHAKE_FAILURE = "H2_HANDSHAKE_FAILURE"
    NETWORK_POLICY = "NETWORK_POLICY"
    IDENTITY_ERROR = "IDENTITY_ERROR"
    CERT_REVOKED = "CERT_REVOKED"
    # Envoy's short flags, for the waypoint's HTTP metrics.
    NO_ROUTE = "NR"
    NO_HEALTHY_UPSTREAM = "UH"
    UPSTREAM_CONNECTION_FAILURE = "UF"
    UPSTREAM_TIMEOUT = "UT"
    UPSTREAM_RETRY_LIMIT_EXCEEDED = "URX"
    DOWNSTREAM_CONNECTION_TERMINATION = "DC"


# Labels whose values come from a small fixed set: kept when a label set overflows the cap.
_BOUNDED = frozenset(
    {"reporter", "request_protocol", "response_code", "grpc_response_status",
     "response_flags", "connection_security_policy"}
)


@dataclasses.dataclass(frozen=True, slots=True)
class PeerMetadata:
    """What a peer says about itself in `baggage` (see `meshcore.telemetry.baggage`)."""

    cluster: str = ""
    namespace: str = ""
    workload_name: str = ""
    workload_kind: str = ""  # deployment | cronjob | pod | job
    canonical_service: str = ""
    canonical_revision: str = ""
    region: str = ""
    zone: str = ""


@dataclasses.dataclass(frozen=True)
class TrafficLabels:
    """Istio's label set for one connection or request. Field order is exposition order."""

    reporter: str
    source_workload: str = UNKNOWN
    source_canonical_service: str = UNKNOWN
    source_canonical_revision: str = UNKNOWN
    source_workload_namespace: str = UNKNOWN
    source_principal: str = UNKNOWN
    source_app: str = UNKNOWN
    source_version: str = UNKNOWN
    source_cluster: str = UNKNOWN
    destination_service: str = UNKNOWN
    destination_service_namespace: str = UNKNOWN
    destination_service_name: str = UNKNOWN
    destination_workload: str = UNKNOWN
    destination_canonical_service: str = UNKNOWN
    destination_canonical_revision: str = UNKNOWN
    destination_workload_namespace: str = UNKNOWN
    destination_principal: str = UNKNOWN
    destination_app: str = UNKNOWN
    destination_version: str = UNKNOWN
    destination_cluster: str = UNKNOWN
    request_protocol: str = Protocol.TCP
    response_code: str | None = None  # HTTP only
    grpc_response_status: str | None = None  # HTTP only ("" for non-gRPC requests)
    response_flags: str = ResponseFlags.NONE
    connection_security_policy: str = SecurityPolicy.NONE
    source_region: str | None = None  # locality group: all four or none
    source_zone: str | None = None
    destination_region: str | None = None
    destination_zone: str | None = None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        """(label, value) pairs in exposition order, skipping labels this set does not have."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                yield f.name, value

    @functools.cached_property
    def attributes(self) -> dict[str, str]:
        """The label set as OpenTelemetry metric attributes (computed once per instance)."""
        return dict(self)

    @property
    def is_failure(self) -> bool:
        return self.response_flags != ResponseFlags.NONE

    def with_outcome(
        self,
        response_flags: str = ResponseFlags.NONE,
        response_code: int | str | None = None,
        grpc_response_status: int | str | None = None,
    ) -> TrafficLabels:
        """A copy carrying the final outcome (flags; for HTTP also the status codes)."""
        return dataclasses.replace(
            self,
            response_flags=response_flags or ResponseFlags.NONE,
            response_code=self.response_code if response_code is None else str(response_code),
            grpc_response_status=(self.grpc_response_status if grpc_response_status is None
                                  else str(grpc_response_status)),
        )

    def overflowed(self) -> TrafficLabels:
        """The overflow label set: bounded labels kept, every other label `overflow`."""
        changes = {
            name: OVERFLOW
            for name, _ in self
            if name not in _BOUNDED
        }
        return dataclasses.replace(self, **changes)


LABEL_ORDER: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(TrafficLabels))


def _v(value: object) -> str:
    text = "" if value is None else str(value)
    return text or UNKNOWN


def traffic_labels(
    *,
    reporter: str,
    source: Workload | None = None,
    destination: Workload | None = None,
    destination_service: Service | None = None,
    source_identity: SpiffeId | None = None,
    peer: PeerMetadata | None = None,
    mtls: bool = False,
    request_protocol: str = Protocol.TCP,
) -> TrafficLabels:
    """Build the label set the way ztunnel does (see the module docstring for each source).

    `source_identity` is the identity proven by mTLS (inbound) or our own (outbound HBONE);
    `peer` is the peer's baggage, used where `source` is None or leaves a field empty;
    `mtls` sets `connection_security_policy`.
    """
    src: dict[str, str] = {}
    locality = False
    if peer is not None:
        src.update(
            source_workload=peer.workload_name,
            source_canonical_service=peer.canonical_service,
            source_canonical_revision=peer.canonical_revision,
            source_workload_namespace=peer.namespace,
            source_app=peer.canonical_service,
            source_version=peer.canonical_revision,
            source_cluster=peer.cluster,
            source_region=peer.region,
            source_zone=peer.zone,
        )
        locality = bool(peer.region or peer.zone)
    if source is not None:
        from_workload = {
            "source_workload": source.workload_name,
            "source_canonical_service": source.canonical_name,
            "source_canonical_revision": source.canonical_revision,
            "source_workload_namespace": source.namespace,
            "source_app": source.canonical_name,
            "source_version": source.canonical_revision,
            "source_cluster": source.cluster_id,
            "source_region": source.locality.region,
            "source_zone": source.locality.zone,
        }
        src.update({k: v for k, v in from_workload.items() if v})
        locality = locality or bool(source.locality.region or source.locality.zone)
    dst: dict[str, str] = {}
    if destination is not None:
        dst.update(
            destination_workload=destination.workload_name,
            destination_canonical_service=destination.canonical_name,
            destination_canonical_revision=destination.canonical_revision,
            destination_workload_namespace=destination.namespace,
            destination_principal=destination.identity.uri,
            destination_app=destination.canonical_name,
            destination_version=destination.canonical_revision,
            destination_cluster=destination.cluster_id,
            destination_region=destination.locality.region,
            destination_zone=destination.locality.zone,
        )
        loc = destination.locality
        locality = locality or bool(loc.region or loc.zone)
    if destination_service is not None:
        dst.update(
            destination_service=destination_service.hostname,
            destination_service_name=destination_service.name,
            destination_service_namespace=destination_service.namespace,
        )
    values = {k: _v(v) for k, v in {**src, **dst}.items()}
    if not locality:
        for name in ("source_region", "source_zone", "destination_region", "destination_zone"):
            values.pop(name, None)
    else:
        for name in ("source_region", "source_zone", "destination_region", "destination_zone"):
            values.setdefault(name, UNKNOWN)
    http = request_protocol != Protocol.TCP
    return TrafficLabels(
        reporter=reporter,
        source_principal=source_identity.uri if source_identity is not None else UNKNOWN,
        request_protocol=request_protocol,
        response_code="0" if http else None,
        grpc_response_status="" if http else None,
        connection_security_policy=SecurityPolicy.MUTUAL_TLS if mtls else SecurityPolicy.NONE,
        **values,
    )
