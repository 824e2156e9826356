"""The sans-IO Delta xDS client protocol: opening requests, ACK/NACK, versions, resume."""

from __future__ import annotations

import betterproto
import pytest
from betterproto.lib.google.protobuf import Any as AnyProto

from meshcore.protos.envoy.config.core.v3 import Node
from meshcore.protos.envoy.service.discovery.v3 import (
    DeltaDiscoveryRequest,
    DeltaDiscoveryResponse,
    Resource,
)
from meshcore.xds.errors import XdsResponseError
from meshcore.xds.protocol import DeltaClientProtocol
from meshcore.xds.types import TYPE_ADDRESS, TYPE_AUTHORIZATION, ZTUNNEL_TYPES, NodeId

NODE = Node(id=str(NodeId("ztunnel", "10.0.0.5", "ztunnel-abc", "istio-system")))


def response(type_url: str, nonce: str, removed: tuple[str, ...] = (), **versions: str) -> (
    DeltaDiscoveryResponse
):
    return DeltaDiscoveryResponse(
        type_url=type_url, nonce=nonce, removed_resources=list(removed),
        resources=[Resource(name=n, version=v, resource=AnyProto(type_url, b"")) for n, v in
                   versions.items()],
    )


def test_first_stream_is_wildcard_with_node_on_the_first_request_only() -> None:
    """One wildcard request per type; the node only in the first; no versions yet."""
    proto = DeltaClientProtocol(NODE, ZTUNNEL_TYPES)
    first, second = proto.start_stream()
    assert first.node.id == NODE.id and first.type_url == TYPE_ADDRESS
    assert second.type_url == TYPE_AUTHORIZATION
    assert not betterproto.serialized_on_wire(DeltaDiscoveryRequest().parse(bytes(second)).node)
    assert first.resource_names_subscribe == [] and first.initial_resource_versions == {}


def test_ack_commits_versions_and_resume_sends_them() -> None:
    """ACKed versions (minus removals) become initial_resource_versions on the next stream."""
    proto = DeltaClientProtocol(NODE, ZTUNNEL_TYPES)
    proto.start_stream()
    ack = proto.ack(proto.receive(response(TYPE_ADDRESS, "n1", a="1", b="1")))
    assert (ack.response_nonce, ack.type_url) == ("n1", TYPE_ADDRESS)
    on_wire = DeltaDiscoveryRequest().parse(bytes(ack))
    assert not betterproto.serialized_on_wire(on_wire.error_detail)  # an ACK, not a NACK
    proto.ack(proto.receive(response(TYPE_ADDRESS, "n2", ("b",), a="2")))
    assert proto.synced_types == {TYPE_ADDRESS}
    first, _ = proto.start_stream()
    assert first.initial_resource_versions == {"a": "2"}
    assert first.node.id == NODE.id


def test_nack_keeps_versions_and_carries_the_message() -> None:
    """A NACK echoes the nonce with error_detail and leaves versions untouched."""
    proto = DeltaClientProtocol(NODE, ZTUNNEL_TYPES)
    proto.ack(proto.receive(response(TYPE_ADDRESS, "n1", a="1")))
    delta = proto.receive(response(TYPE_ADDRESS, "n2", a="2"))
    nack = proto.nack(delta.type_url, delta.nonce, "invalid Workload 'a'")
    assert nack.response_nonce == "n2"
    assert nack.error_detail.code == 3 and nack.error_detail.message == "invalid Workload 'a'"
    assert dict(proto.versions(TYPE_ADDRESS)) == {"a": "1"}


@pytest.mark.parametrize("bad", [
    pytest.param(response("type.googleapis.com/other", "n"), id="unsubscribed type"),
    pytest.param(DeltaDiscoveryResponse(type_url=TYPE_ADDRESS, nonce="n", resources=[
        Resource(name="x", version="1", resource=AnyProto(TYPE_AUTHORIZATION, b""))]),
        id="resource of another type"),
])
def test_protocol_violations_are_rejected(bad: DeltaDiscoveryResponse) -> None:
    """Responses breaking the protocol raise XdsResponseError (which the client NACKs)."""
    with pytest.raises(XdsResponseError):
        DeltaClientProtocol(NODE, ZTUNNEL_TYPES).receive(bad)


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param(
        "ztunnel~10.0.0.5~zt-1.istio-system~istio-system.svc.cluster.local",
        NodeId("ztunnel", "10.0.0.5", "zt-1", "istio-system", "cluster.local"), id="ztunnel",
    ),
    pytest.param("envoy-1", NodeId("envoy-1"), id="foreign id keeps only the role"),
])
def test_node_id_parse(text: str, expected: NodeId) -> None:
    """Node ids parse into role, IP, pod, namespace and domain; str() round-trips."""
    assert NodeId.parse(text) == expected
    if text.count("~") == 3:
        assert str(expected) == text

