"""The per-stream subscription state machine, fed requests and cache changes directly (sans-IO)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from istiod_lite.xds import Ack, ClientStream, Nack, ResourceCache, StaleNonce, XdsProtocolError
from meshcore.protos.envoy.config.core.v3 import Node
from meshcore.protos.envoy.service.discovery.v3 import DeltaDiscoveryRequest
from meshcore.protos.google.rpc import Status
from meshcore.xds.types import TYPE_AUTHORIZATION
from tests.meshcore.wds.factories import policy

T = TYPE_AUTHORIZATION
NODE = Node(id="ztunnel~10.0.0.5~ztunnel-abc.istio-system~istio-system.svc.cluster.local")


def pol(name: str, rev: int = 0) -> Any:
    """Policy `shop/<name>`; a different `rev` gives a different content version."""
    return policy(name, principals=(f"cluster.local/ns/shop/sa/rev{rev}",))


def state(**resources: int) -> dict[str, Any]:
    return {f"shop/{n}": pol(n, rev) for n, rev in resources.items()}


class Harness:
    """One cache + one ClientStream; remembers the last response for ACK/NACK steps."""

    def __init__(self) -> None:
        self.cache = ResourceCache()
        self.stream = ClientStream(1)
        self.last_nonce = ""
        self.events: list[Any] = []
        self.first = True

    def request(self, **fields: Any) -> list[tuple[list[str], list[str]]]:
        if self.first:
            fields.setdefault("node", NODE)
            self.first = False
        step = self.stream.receive(DeltaDiscoveryRequest(type_url=T, **fields), self.cache)
        self.events.extend(step.events)
        return self._summarize(step.responses)

    def set(self, resources: dict[str, Any]) -> list[tuple[list[str], list[str]]]:
        self.cache.set_resources(T, resources)
        return self._summarize(self.stream.poll(self.cache).responses)

    def _summarize(self, responses: Any) -> list[tuple[list[str], list[str]]]:
        out = []
        for r in responses:
            self.last_nonce = r.nonce
            out.append((sorted(x.name for x in r.resources), sorted(r.removed_resources)))
        return out

    def version(self, name: str) -> str:
        return self.cache.resources(T)[name].version


@dataclasses.dataclass
class Do:
    """One scripted input and the responses it must produce: [(upserted names, removed)]."""

    action: str  # "set", "subscribe", "ack", "nack", "req"
    arg: Any = None
    expect: list[tuple[list[str], list[str]]] = dataclasses.field(default_factory=list)


def run(h: Harness, step: Do) -> list[tuple[list[str], list[str]]]:
    if step.action == "set":
        return h.set(step.arg)
    if step.action == "ack":
        return h.request(response_nonce=h.last_nonce)
    if step.action == "nack":
        return h.request(response_nonce=h.last_nonce,
                         error_detail=Status(code=3, message=step.arg))
    if step.action == "req":
        return h.request(**step.arg)
    raise AssertionError(step.action)


A, B, C = "shop/a", "shop/b", "shop/c"

CASES = [
    pytest.param([
        Do("set", state(a=0, b=0)),
        Do("req", {}, [([A, B], [])]),
        Do("ack"),
    ], id="wildcard subscribe gets everything"),
    pytest.param([
        Do("req", {}, [([], [])]),
        Do("ack"),
        Do("set", state(a=0), [([A], [])]),
    ], id="wildcard on an empty cache gets an empty first response, then pushes"),
    pytest.param([
        Do("set", state(a=0, b=0)),
        Do("req", {"resource_names_subscribe": [A, C]}, [([A], [C])]),
        Do("ack"),
        Do("set", state(a=0, b=1)),
        Do("set", state(a=0, b=1, c=0), [([C], [])]),
    ], id="explicit names: only those, absent ones reported removed"),
    pytest.param([
        Do("set", state(a=0, b=0)),
        Do("req", {"resource_names_subscribe": [A, B]}, [([A, B], [])]),
        Do("ack"),
        Do("req", {"resource_names_unsubscribe": [B]}),
        Do("set", state(a=0, b=1)),
        Do("set", state(a=1, b=2), [([A], [])]),
    ], id="unsubscribe stops updates without a removal"),
    pytest.param([
        Do("set", state(a=0)),
        Do("req", {}, [([A], [])]),
        Do("set", state(a=1)),
        Do("ack", None, [([A], [])]),
    ], id="one response in flight: a change waits for the ACK"),
    pytest.param([
        Do("set", state(a=0)),
        Do("req", {}, [([A], [])]),
        Do("ack"),
        Do("set", state(a=1), [([A], [])]),
        Do("nack", "bad policy"),
        Do("set", state(a=1, b=0), [([B], [])]),
        Do("ack"),
        Do("set", state(a=2, b=0), [([A], [])]),
    ], id="NACK: same version not resent, a new version is"),
    pytest.param([
        Do("set", state(a=0, b=0)),
        Do("req", {}, [([A, B], [])]),
        Do("ack"),
        Do("set", state(a=0), [([], [B])]),
        Do("ack"),
        Do("set", state(a=0)),
    ], id="removal sent once"),
    pytest.param([
        Do("set", state(a=0, b=0)),
        Do("req", {}, [([A, B], [])]),
        Do("ack"),
        Do("set", state(b=0), [([], [A])]),
        Do("nack", "cannot remove"),
        Do("set", state(b=1), [([B], [])]),
    ], id="NACKed removal not resent"),
    pytest.param([
        Do("set", state(a=0, b=0, c=0)),
        Do("req", {"initial_resource_versions": "VERSIONS"}, [([B], ["shop/gone"])]),
        Do("ack"),
    ], id="reconnect with initial versions: only the difference and removals"),
    pytest.param([
        Do("set", state(a=0)),
        Do("req", {}, [([A], [])]),
        Do("req", {"response_nonce": "1-999"}),
        Do("ack"),
    ], id="stale nonce is ignored"),
    pytest.param([
        Do("set", state(a=0, b=0)),
        Do("req", {"resource_names_subscribe": [A]}, [([A], [])]),
        Do("ack"),
        Do("req", {"resource_names_subscribe": ["*"]}, [([B], [])]),
        Do("ack"),
        Do("req", {"resource_names_unsubscribe": ["*"]}),
        Do("set", state(a=1, b=1), [([A], [])]),
    ], id="subscribing and unsubscribing the wildcard"),
]


@pytest.mark.parametrize("script", CASES)
def test_subscription_cases(script: list[Do]) -> None:
    """Each scripted input yields exactly the expected responses (names sent, names removed)."""
    h = Harness()
    for i, step in enumerate(script):
        if step.arg == {"initial_resource_versions": "VERSIONS"}:
            # a: the client has the current version; b: an old one; c: the current; "gone": removed
            step = Do("req", {"initial_resource_versions": {
                A: h.version(A), B: "old", C: h.version(C), "shop/gone": "x"}}, step.expect)
        assert run(h, step) == step.expect, f"step {i}: {step.action} {step.arg!r}"


def test_ack_and_nack_events_carry_details() -> None:
    """ACK, NACK (with the client's message and rejected versions) and stale nonces are events."""
    h = Harness()
    h.set(state(a=0))
    h.request()
    first_nonce = h.last_nonce
    h.request(response_nonce=first_nonce)
    h.set(state(a=1))
    h.request(response_nonce=h.last_nonce, error_detail=Status(code=3, message="nope"))
    h.request(response_nonce=first_nonce)
    ack, nack, stale = h.events
    assert ack == Ack(T, first_nonce)
    assert isinstance(nack, Nack) and nack.message == "nope" and nack.code == 3
    assert nack.rejected == {A: h.version(A)}
    assert stale == StaleNonce(T, first_nonce)


def test_settled_generation_tracks_acks() -> None:
    """A stream is settled at a generation once it answered everything up to it."""
    h = Harness()
    h.set(state(a=0))
    h.request()
    assert not h.stream.settled(h.cache.generation)
    h.request(response_nonce=h.last_nonce)
    assert h.stream.settled(h.cache.generation)
    h.set(state(a=1))
    assert not h.stream.settled(h.cache.generation)


def test_first_request_must_identify_the_node() -> None:
    """A stream whose first request has no node id is a protocol error."""
    with pytest.raises(XdsProtocolError, match=r"node\.id"):
        ClientStream(1).receive(DeltaDiscoveryRequest(type_url=T), ResourceCache())


def test_node_identity_and_metadata_recorded() -> None:
    """The node id is parsed (role, IP, pod) and NODE_NAME metadata kept."""
    from betterproto.lib.google.protobuf import Struct, Value

    node = Node(id=NODE.id, metadata=Struct(fields={"NODE_NAME": Value(string_value="node-a")}))
    stream = ClientStream(1)
    stream.receive(DeltaDiscoveryRequest(type_url=T, node=node), ResourceCache())
    assert stream.node is not None
    assert (stream.node.role, stream.node.parsed.ip, stream.node.parsed.pod_name) == (
        "ztunnel", "10.0.0.5", "ztunnel-abc")
    assert stream.node.parsed.pod_namespace == "istio-system"
    assert stream.node.node_name == "node-a"


def test_resource_filter_hides_resources_from_a_client() -> None:
    """The per-client filter decides what a client sees."""
    cache = ResourceCache()
    cache.set_resources(T, state(a=0, b=0))
    stream = ClientStream(1, resource_filter=lambda node, t, r: r.name != B)
    step = stream.receive(DeltaDiscoveryRequest(type_url=T, node=NODE), cache)
    assert [r.name for r in step.responses[0].resources] == [A]


def test_versions_are_content_hashes() -> None:
    """Equal content gives equal versions; an unchanged set_resources is not a change."""
    cache = ResourceCache()
    first = cache.set_resources(T, state(a=0, b=0))
    v = cache.resources(T)[A].version
    again = cache.set_resources(T, state(a=0, b=0))
    assert again.empty and again.generation == first.generation
    changed = cache.set_resources(T, state(a=1))
    assert changed.changed == {A} and changed.removed == {B}
    assert cache.resources(T)[A].version != v
    other = ResourceCache()
    other.set_resources(T, state(a=0))
    assert other.resources(T)[A].version == v


@settings(max_examples=200, deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("set"), st.dictionaries(st.sampled_from("abcd"), st.integers(0, 2))),
            st.tuples(st.just("answer"), st.booleans()),
        ),
        max_size=25,
    )
)
def test_client_converges_to_the_cache_except_rejected_versions(ops: list[Any]) -> None:
    """Any mix of changes, ACKs and NACKs: once settled, the client has every current version
    except versions it rejected itself."""
    cache = ResourceCache()
    stream = ClientStream(1)
    client: dict[str, str] = {}
    rejected: set[tuple[str, str | None]] = set()
    inflight: list[Any] = []

    def take(step: Any) -> None:
        inflight.extend(step.responses)

    def answer(accept: bool) -> None:
        r = inflight.pop(0)
        if accept:
            client.update({x.name: x.version for x in r.resources})
            for name in r.removed_resources:
                client.pop(name, None)
            fields: dict[str, Any] = {}
        else:
            rejected.update((x.name, x.version) for x in r.resources)
            rejected.update((name, None) for name in r.removed_resources)
            fields = {"error_detail": Status(code=3, message="no")}
        take(stream.receive(DeltaDiscoveryRequest(type_url=T, response_nonce=r.nonce, **fields),
                            cache))

    take(stream.receive(DeltaDiscoveryRequest(type_url=T, node=NODE), cache))
    for op, arg in ops:
        if op == "set":
            cache.set_resources(T, state(**arg))
            take(stream.poll(cache))
        elif inflight:
            answer(arg)
        assert len(inflight) <= 1  # one response per type in flight
    while inflight:
        answer(True)
    assert stream.settled(cache.generation)
    current = {n: r.version for n, r in cache.resources(T).items()}
    for name, version in current.items():
        assert client.get(name) == version or (name, version) in rejected
    for name in client.keys() - current.keys():
        assert (name, None) in rejected
