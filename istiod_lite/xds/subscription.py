"""Per-stream Delta xDS subscription state: requests in, responses and events out. Sans-IO.

Who calls it: `istiod_lite.xds.server` creates one `ClientStream` per gRPC stream and feeds
it every `DeltaDiscoveryRequest` (`receive`) and every cache change (`poll`). It returns the
`DeltaDiscoveryResponse`s to send and `Ack` / `Nack` / `StaleNonce` events to log and count.
No I/O, no clocks, no asyncio: tested by feeding requests (tests/istiod_lite/xds).

Rules, per (stream, type URL):
1. The first request of a stream must carry `node.id`; it is recorded (`NodeInfo`).
2. The first request for a type decides the subscription: no names, or `*` among them, is a
   wildcard subscription; otherwise exactly the names listed. Its `initial_resource_versions`
   (only honoured on that first request) seed what the client already has, so only the
   difference is sent: changed or new resources, plus `removed_resources` for names the client
   has that no longer exist. The first request is always answered, even with an empty response,
   so a client knows it is in sync.
3. Later requests may subscribe / unsubscribe names (`*` toggles wildcard). Unsubscribed names
   are forgotten without a removal (the client drops them itself). An explicitly subscribed
   name that does not exist is reported once in `removed_resources`.
4. At most one response per type is in flight. A request whose `response_nonce` is the
   pending nonce answers it: without `error_detail` it is an ACK (the sent versions become
   what the client has); with `error_detail` it is a NACK (the client kept its old state; each
   rejected (name, version) is remembered and not sent again until the resource changes).
   A request with any other non-empty nonce is stale: its subscription changes apply, its
   ACK/NACK is ignored.
5. While nothing is in flight, `poll` sends whatever differs between the cache (filtered by
   the subscription and the per-client filter) and what the client has. When nothing differs
   the type is settled at the cache generation (`settled_generation`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import betterproto

from istiod_lite.xds.cache import CachedResource, ResourceCache
from istiod_lite.xds.errors import XdsProtocolError
from meshcore.protos.envoy.config.core.v3 import Node
from meshcore.protos.envoy.service.discovery.v3 import (
    DeltaDiscoveryRequest,
    DeltaDiscoveryResponse,
)
from meshcore.xds.types import NodeId

WILDCARD = "*"


@dataclasses.dataclass(frozen=True, slots=True)
class NodeInfo:
    """Who is on the other end of a stream, from its first request."""

    id: str
    parsed: NodeId
    cluster: str = ""
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def role(self) -> str:
        return self.parsed.role

    @property
    def node_name(self) -> str:
        """The Kubernetes node the proxy runs on (metadata NODE_NAME), or ""."""
        return self.metadata.get("NODE_NAME", "")

    @classmethod
    def from_proto(cls, node: Node) -> NodeInfo:
        metadata: dict[str, str] = {}
        if node.metadata is not None:
            for key, value in node.metadata.fields.items():
                kind, inner = betterproto.which_one_of(value, "kind")
                if kind == "string_value" or kind:
                    metadata[key] = str(inner)
        return cls(node.id, NodeId.parse(node.id), node.cluster, metadata)


# Per-client filter: may this node see this resource? (on-demand / scoping hook; None = all)
ResourceFilter = Callable[[NodeInfo, str, CachedResource], bool]


@dataclasses.dataclass(frozen=True, slots=True)
class Ack:
    type_url: str
    nonce: str


@dataclasses.dataclass(frozen=True, slots=True)
class Nack:
    """The client rejected a response; `rejected` maps name -> version ("" = a removal)."""

    type_url: str
    nonce: str
    code: int
    message: str
    rejected: Mapping[str, str]


@dataclasses.dataclass(frozen=True, slots=True)
class StaleNonce:
    type_url: str
    nonce: str


Event = Ack | Nack | StaleNonce


@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    """What to do after one input: send `responses` in order; log/count `events`."""

    responses: tuple[DeltaDiscoveryResponse, ...] = ()
    events: tuple[Event, ...] = ()
    initial: tuple[str, ...] = ()  # type URLs whose first response is among `responses`


@dataclasses.dataclass(slots=True)
class _Pending:
    nonce: str
    sent: dict[str, str | None]  # name -> version, None = removal
    generation: int


@dataclasses.dataclass(slots=True)
class TypeState:
    """What one client has and wants of one type (mutable; owned by its ClientStream)."""

    wildcard: bool = False
    names: set[str] = dataclasses.field(default_factory=set)
    known: dict[str, str] = dataclasses.field(default_factory=dict)
    nacked: dict[str, str | None] = dataclasses.field(default_factory=dict)
    report_absent: set[str] = dataclasses.field(default_factory=set)
    pending: _Pending | None = None
    needs_initial: bool = True
    settled_generation: int = -1

    def interested(self, name: str) -> bool:
        return self.wildcard or name in self.names


class ClientStream:
    """The state of one Delta ADS stream (one client connection)."""

    def __init__(self, stream_id: int, *, resource_filter: ResourceFilter | None = None):
        self.stream_id = stream_id
        self.node: NodeInfo | None = None
        self.types: dict[str, TypeState] = {}
        self._filter = resource_filter
        self._nonces = 0

    def settled(self, generation: int) -> bool:
        """Whether every subscribed type has answered all pushes up to `generation`."""
        return all(ts.settled_generation >= generation for ts in self.types.values())

    def receive(self, request: DeltaDiscoveryRequest, cache: ResourceCache) -> Step:
        """Process one request; raise XdsProtocolError if it breaks the protocol."""
        if self.node is None:
            if request.node is None or not request.node.id:
                raise XdsProtocolError("the first request of a stream must carry node.id")
            self.node = NodeInfo.from_proto(request.node)
        type_url = request.type_url
        if not type_url:
            raise XdsProtocolError("type_url is empty", node_id=self.node.id)
        ts = self.types.get(type_url)
        first = ts is None
        if ts is None:
            ts = self.types[type_url] = TypeState()
        events: list[Event] = []
        if request.response_nonce:
            events.append(self._answer(type_url, ts, request))
        subscribe = list(request.resource_names_subscribe)
        if first:
            ts.wildcard = not subscribe or WILDCARD in subscribe
            ts.known = dict(request.initial_resource_versions)
        elif WILDCARD in subscribe:
            ts.wildcard = True
        for name in subscribe:
            if name != WILDCARD and name not in ts.names:
                ts.names.add(name)
                if name not in ts.known:
                    ts.report_absent.add(name)
        for name in request.resource_names_unsubscribe:
            if name == WILDCARD:
                ts.wildcard = False
                ts.known = {n: v for n, v in ts.known.items() if n in ts.names}
            else:
                ts.names.discard(name)
                ts.report_absent.discard(name)
                if not ts.wildcard:
                    ts.known.pop(name, None)
                    ts.nacked.pop(name, None)
        step = self._poll_type(type_url, ts, cache)
        return dataclasses.replace(step, events=tuple(events))

    def poll(self, cache: ResourceCache) -> Step:
        """After a cache change: the responses for every type with nothing in flight."""
        responses: list[DeltaDiscoveryResponse] = []
        initial: list[str] = []
        for type_url, ts in self.types.items():
            step = self._poll_type(type_url, ts, cache)
            responses.extend(step.responses)
            initial.extend(step.initial)
        return Step(tuple(responses), (), tuple(initial))

    def _answer(self, type_url: str, ts: TypeState, request: DeltaDiscoveryRequest) -> Event:
        nonce = request.response_nonce
        pending = ts.pending
        if pending is None or pending.nonce != nonce:
            return StaleNonce(type_url, nonce)
        ts.pending = None
        detail = request.error_detail
        is_nack = detail is not None and (
            betterproto.serialized_on_wire(detail) or detail.code != 0 or bool(detail.message)
        )
        if not is_nack:
            for name, version in pending.sent.items():
                if version is None:
                    ts.known.pop(name, None)
                else:
                    ts.known[name] = version
                ts.nacked.pop(name, None)
            return Ack(type_url, nonce)
        for name, version in pending.sent.items():
            ts.nacked[name] = version
        rejected = {n: v or "" for n, v in pending.sent.items()}
        assert detail is not None
        return Nack(type_url, nonce, detail.code, detail.message, rejected)

    def _poll_type(self, type_url: str, ts: TypeState, cache: ResourceCache) -> Step:
        if ts.pending is not None:
            return Step()
        generation = cache.generation
        desired = self._desired(type_url, ts, cache.resources(type_url))
        upserts = [
            r for name, r in desired.items()
            if ts.known.get(name) != r.version and (
                name not in ts.nacked or ts.nacked[name] != r.version
            )
        ]
        removed = [
            name for name in ts.known
            if name not in desired and not (name in ts.nacked and ts.nacked[name] is None)
        ]
        absent = sorted(n for n in ts.report_absent if n not in desired and n not in ts.known)
        ts.report_absent.clear()
        if not upserts and not removed and not absent and not ts.needs_initial:
            ts.settled_generation = generation
            return Step()
        initial = (type_url,) if ts.needs_initial else ()
        ts.needs_initial = False
        self._nonces += 1
        nonce = f"{self.stream_id}-{self._nonces}"
        sent: dict[str, str | None] = {r.name: r.version for r in upserts}
        sent.update({name: None for name in removed})
        ts.pending = _Pending(nonce, sent, generation)
        response = DeltaDiscoveryResponse(
            system_version_info=str(generation),
            type_url=type_url,
            nonce=nonce,
            resources=[r.proto for r in upserts],
            removed_resources=removed + absent,
        )
        return Step((response,), (), initial)

    def _desired(
        self, type_url: str, ts: TypeState, resources: Mapping[str, CachedResource]
    ) -> Mapping[str, CachedResource]:
        keep = self._filter
        if ts.wildcard and keep is None:
            return resources
        node = self.node
        assert node is not None
        return {
            name: r for name, r in resources.items()
            if ts.interested(name) and (keep is None or keep(node, type_url, r))
        }
