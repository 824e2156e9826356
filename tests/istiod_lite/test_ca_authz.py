"""Who may obtain which identity: token parsing, the static token table and decide()."""

from __future__ import annotations

import datetime as dt

import pytest
from betterproto.lib.google.protobuf import Struct, Value

from istiod_lite.ca import authz
from istiod_lite.ca.authz import (
    Allowed,
    CertificateAsk,
    NodeProxyCaller,
    Refusal,
    RefusalClass,
    RefusalReason,
    StaticPlacement,
    StaticTokenTable,
    TokenGrant,
    WorkloadCaller,
)
from meshcore import pki
from meshcore.identity import SpiffeId
from meshcore.protos.istio.v1.auth import IstioCertificateRequest

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
TD = "cluster.local"
ALICE = SpiffeId(TD, "shop", "alice")
BOB = SpiffeId(TD, "shop", "bob")
FOREIGN = SpiffeId("evil.example", "shop", "alice")
PLACEMENT = StaticPlacement.of([("node-a", ALICE)])
KEY = pki.new_private_key()


def csr(identity: SpiffeId) -> str:
    return pki.build_csr(KEY, identity).decode()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param("Bearer abc", "abc", id="bearer"),
        pytest.param("bearer  abc ", "abc", id="case and spaces"),
        pytest.param(None, RefusalReason.NO_TOKEN, id="absent"),
        pytest.param("", RefusalReason.NO_TOKEN, id="empty"),
        pytest.param("Bearer ", RefusalReason.NO_TOKEN, id="empty token"),
        pytest.param("Basic abc", RefusalReason.NO_TOKEN, id="wrong scheme"),
    ],
)
def test_bearer_token(header: str | None, expected: str | RefusalReason) -> None:
    """Only 'Bearer <token>' yields a token; anything else is NO_TOKEN."""
    got = authz.bearer_token(header)
    if isinstance(expected, str):
        assert got == expected
    else:
        assert isinstance(got, Refusal) and got.reason is expected


def test_static_token_table() -> None:
    """Known tokens map to their caller until they expire; unknown ones are refused."""
    table = StaticTokenTable(
        {
            "w": TokenGrant(WorkloadCaller(ALICE)),
            "n": TokenGrant(NodeProxyCaller("node-a"), expires_at=NOW + dt.timedelta(hours=1)),
        }
    )
    assert table.lookup("w", NOW) == WorkloadCaller(ALICE)
    assert table.lookup("n", NOW) == NodeProxyCaller("node-a")
    expired = table.lookup("n", NOW + dt.timedelta(hours=1))
    assert isinstance(expired, Refusal) and expired.reason is RefusalReason.EXPIRED_TOKEN
    unknown = table.lookup("x", NOW)
    assert isinstance(unknown, Refusal) and unknown.reason is RefusalReason.UNKNOWN_TOKEN


def test_static_placement_is_the_node_seam() -> None:
    """StaticPlacement answers may_node_serve(node, identity) from its pairs only."""
    assert PLACEMENT("node-a", ALICE)
    assert not PLACEMENT("node-b", ALICE)
    assert not PLACEMENT("node-a", BOB)


W_ALICE = WorkloadCaller(ALICE)
NODE_A = NodeProxyCaller("node-a")
NODE_B = NodeProxyCaller("node-b")


@pytest.mark.parametrize(
    ("ask", "caller", "expected"),
    [
        pytest.param(CertificateAsk(csr(ALICE)), W_ALICE, ALICE, id="workload own identity"),
        pytest.param(
            CertificateAsk(csr(ALICE), impersonated_identity=ALICE.uri),
            W_ALICE, ALICE, id="workload names itself",
        ),
        pytest.param(
            CertificateAsk(csr(ALICE), impersonated_identity=ALICE.uri),
            NODE_A, ALICE, id="node proxy for pod on its node",
        ),
        pytest.param(
            CertificateAsk("garbage"), W_ALICE, RefusalReason.BAD_CSR, id="csr garbage"
        ),
        pytest.param(
            CertificateAsk(csr(FOREIGN)), W_ALICE, RefusalReason.WRONG_TRUST_DOMAIN,
            id="csr foreign trust domain",
        ),
        pytest.param(
            CertificateAsk(csr(ALICE), impersonated_identity=FOREIGN.uri), NODE_A,
            RefusalReason.WRONG_TRUST_DOMAIN, id="impersonated foreign trust domain",
        ),
        pytest.param(
            CertificateAsk(csr(ALICE), impersonated_identity="spiffe://cluster.local/x"),
            NODE_A, RefusalReason.BAD_IMPERSONATED_IDENTITY, id="impersonated malformed",
        ),
        pytest.param(
            CertificateAsk(csr(ALICE)), NODE_A, RefusalReason.MISSING_IMPERSONATED_IDENTITY,
            id="node proxy without impersonation",
        ),
        pytest.param(
            CertificateAsk(csr(BOB)), W_ALICE, RefusalReason.CSR_IDENTITY_MISMATCH,
            id="workload csr names other",
        ),
        pytest.param(
            CertificateAsk(csr(BOB), impersonated_identity=ALICE.uri), NODE_A,
            RefusalReason.CSR_IDENTITY_MISMATCH, id="node csr differs from impersonated",
        ),
        pytest.param(
            CertificateAsk(csr(BOB), impersonated_identity=BOB.uri), W_ALICE,
            RefusalReason.IDENTITY_NOT_ALLOWED, id="workload asks for another identity",
        ),
        pytest.param(
            CertificateAsk(csr(ALICE), impersonated_identity=ALICE.uri), NODE_B,
            RefusalReason.NOT_ON_NODE, id="node proxy for pod elsewhere",
        ),
        pytest.param(
            CertificateAsk(csr(BOB), impersonated_identity=BOB.uri), NODE_A,
            RefusalReason.NOT_ON_NODE, id="node proxy for identity not on node",
        ),
    ],
)
def test_decide(
    ask: CertificateAsk, caller: authz.Caller, expected: SpiffeId | RefusalReason
) -> None:
    """decide() allows exactly the rules in docs/ca.md, naming the identity it allows."""
    outcome = authz.decide(ask, caller, trust_domain=TD, may_node_serve=PLACEMENT)
    if isinstance(expected, SpiffeId):
        assert isinstance(outcome, Allowed), outcome
        assert outcome.identity == expected == outcome.csr.identity
    else:
        assert isinstance(outcome, Refusal), outcome
        assert outcome.reason is expected


def test_node_rule_receives_node_and_identity() -> None:
    """The injected rule is asked exactly (caller's node, requested identity)."""
    seen: list[tuple[str, SpiffeId]] = []

    def rule(node: str, identity: SpiffeId) -> bool:
        seen.append((node, identity))
        return True

    ask = CertificateAsk(csr(BOB), impersonated_identity=BOB.uri)
    outcome = authz.decide(ask, NODE_B, trust_domain=TD, may_node_serve=rule)
    assert isinstance(outcome, Allowed)
    assert seen == [("node-b", BOB)]


@pytest.mark.parametrize(
    ("reason", "cls"),
    [
        pytest.param(RefusalReason.BAD_CSR, RefusalClass.INVALID_ARGUMENT, id="bad csr"),
        pytest.param(RefusalReason.EXPIRED_TOKEN, RefusalClass.UNAUTHENTICATED, id="expired"),
        pytest.param(RefusalReason.NOT_ON_NODE, RefusalClass.PERMISSION_DENIED, id="node"),
    ],
)
def test_refusal_classes(reason: RefusalReason, cls: RefusalClass) -> None:
    """Each reason maps to its gRPC status class."""
    assert reason.refusal_class is cls


def test_every_reason_has_a_class() -> None:
    """No reason is left without a gRPC status."""
    assert {r.refusal_class for r in RefusalReason} == set(RefusalClass)


def test_ask_from_request_reads_impersonation() -> None:
    """The protobuf gate reads a string ImpersonatedIdentity and refuses other value kinds."""
    request = IstioCertificateRequest(
        csr="pem",
        validity_duration=60,
        metadata=Struct(fields={"ImpersonatedIdentity": Value(string_value=ALICE.uri)}),
    )
    assert authz.ask_from_request(request) == CertificateAsk("pem", 60, ALICE.uri)
    assert authz.ask_from_request(IstioCertificateRequest(csr="pem")) == CertificateAsk("pem")
    bad = IstioCertificateRequest(
        csr="pem", metadata=Struct(fields={"ImpersonatedIdentity": Value(number_value=1.0)})
    )
    refusal = authz.ask_from_request(bad)
    assert isinstance(refusal, Refusal)
    assert refusal.reason is RefusalReason.BAD_IMPERSONATED_IDENTITY
