"""The Delta xDS client protocol as a sans-IO state machine: responses in, requests out.

Who calls it: `meshcore.xds.client.XdsClient` (the asyncio/grpclib adapter) creates one
`DeltaClientProtocol` for its whole life (across reconnects) and, per stream:
`start_stream()` -> requests to send; for each response `receive(response)` -> a
`ReceivedDelta`, which the adapter hands to the proxy's handler, then `ack(delta)` or
`nack(delta, message)` -> the request to send back. No I/O here.

Rules:
* The first request of every stream carries the node; each subscribed type gets one
  initial request: wildcard (no names) with `initial_resource_versions` = the versions the
  client ACKed before, so on reconnect the server sends only the difference.
* Versions are committed only on `ack`: a NACKed response leaves them as they were, matching
  the proxy state, which also stayed as it was.
* A response for a type we did not subscribe to, or whose resources carry another type URL, is
  the server's fault: `receive` raises `XdsResponseError`; the adapter NACKs it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from types import MappingProxyType

from meshcore.protos.envoy.config.core.v3 import Node
from meshcore.protos.envoy.service.discovery.v3 import (
    DeltaDiscoveryRequest,
    DeltaDiscoveryResponse,
)
from meshcore.protos.google.rpc import Status
from meshcore.xds.errors import XdsResponseError

INVALID_ARGUMENT = 3  # google.rpc.Code, what Envoy puts in a NACK's error_detail


@dataclasses.dataclass(frozen=True, slots=True)
class ReceivedResource:
    name: str
    version: str
    value: bytes  # the serialized message inside the Any


@dataclasses.dataclass(frozen=True, slots=True)
class ReceivedDelta:
    """One response, decoded: apply `resources` and drop `removed`, atomically."""

    type_url: str
    nonce: str
    system_version: str
    resources: tuple[ReceivedResource, ...]
    removed: tuple[str, ...]


class DeltaClientProtocol:
    """Client-side Delta xDS bookkeeping for a fixed set of wildcard-subscribed types."""

    def __init__(self, node: Node, type_urls: Sequence[str]) -> None:
        if not type_urls:
            raise ValueError("subscribe to at least one type URL")
        self.node = node
        self.type_urls = tuple(type_urls)
        self._versions: dict[str, dict[str, str]] = {t: {} for t in self.type_urls}
        self._synced: set[str] = set()

    @property
    def synced_types(self) -> frozenset[str]:
        """Types for which at least one response was ACKed (ever, across streams)."""
        return frozenset(self._synced)

    def versions(self, type_url: str) -> Mapping[str, str]:
        """The ACKed resource versions of `type_url` (what initial_resource_versions will say)."""
        return MappingProxyType(self._versions[type_url])

    def start_stream(self) -> list[DeltaDiscoveryRequest]:
        """The requests opening a new stream: one wildcard subscription per type."""
        requests = [
            DeltaDiscoveryRequest(
                type_url=type_url, initial_resource_versions=dict(self._versions[type_url])
            )
            for type_url in self.type_urls
        ]
        requests[0].node = self.node
        return requests

    def receive(self, response: DeltaDiscoveryResponse) -> ReceivedDelta:
        """Decode one response; raise XdsResponseError if it breaks the protocol."""
        type_url = response.type_url
        if type_url not in self._versions:
            raise XdsResponseError(f"response for unsubscribed type {type_url!r}")
        resources = []
        for r in response.resources:
            if r.resource is None or r.resource.type_url != type_url:
                inner = r.resource.type_url if r.resource is not None else "nothing"
                raise XdsResponseError(
                    f"resource {r.name!r} in a {type_url} response carries {inner!r}"
                )
            resources.append(ReceivedResource(r.name, r.version, r.resource.value))
        return ReceivedDelta(
            type_url=type_url,
            nonce=response.nonce,
            system_version=response.system_version_info,
            resources=tuple(resources),
            removed=tuple(response.removed_resources),
        )

    def ack(self, delta: ReceivedDelta) -> DeltaDiscoveryRequest:
        """The delta was applied: commit its versions and return the ACK."""
        versions = self._versions[delta.type_url]
        for name in delta.removed:
            versions.pop(name, None)
        for r in delta.resources:
            versions[r.name] = r.version
        self._synced.add(delta.type_url)
        return DeltaDiscoveryRequest(type_url=delta.type_url, response_nonce=delta.nonce)

    def nack(self, type_url: str, nonce: str, message: str) -> DeltaDiscoveryRequest:
        """The response was rejected: keep the old versions and return the NACK."""
        return DeltaDiscoveryRequest(
            type_url=type_url,
            response_nonce=nonce,
            error_detail=Status(code=INVALID_ARGUMENT, message=message),
        )
