"""Who may obtain which certificate: caller authentication seam and the pure issuing decision.

Called by `service.py` for every CreateCertificate request, in this order:
1. `bearer_token(authorization)`: the token from the `authorization: Bearer <token>` metadata;
2. `TokenAuthenticator.authenticate(token, cluster_id=...)`: who the caller is. The sandbox uses
   `StaticTokenTable`; a Kubernetes TokenReview authenticator (audience `istio-ca`) plugs in
   here later with the same protocol;
3. `ask_from_request(request)`: the one gate from the protobuf request to `CertificateAsk`;
4. `decide(ask, caller, trust_domain=..., may_node_serve=...)`: `Allowed` or `Refusal`.

Each step returns a `Refusal` instead of raising, so the service can count and answer it.

Rules (`decide`): the CSR verifies and names exactly one SPIFFE URI, in our trust domain; the
requested identity is `ImpersonatedIdentity` when present, otherwise the workload caller's own
identity (a node proxy must always name one); the CSR's identity equals the requested one; a
workload caller may only get its own identity; a node proxy (ztunnel) of node N may get identity
I only if `may_node_serve(N, I)`, a callable the control plane injects (its model knows which
pods run where; the sandbox passes `StaticPlacement`). `Allowed.identity` is exactly what gets
signed.

Refusal classes follow gRPC: INVALID_ARGUMENT (the request is malformed), UNAUTHENTICATED (we do
not know who is asking), PERMISSION_DENIED (we know, and the answer is no). Istio answers node
check failures with UNAUTHENTICATED; we use PERMISSION_DENIED, which says what happened.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

import betterproto

from istiod_lite.ca.authority import Clock, utc_now
from meshcore import pki
from meshcore.identity import InvalidIdentityError, SpiffeId
from meshcore.protos.istio.v1.auth import IstioCertificateRequest

IMPERSONATED_IDENTITY = "ImpersonatedIdentity"


class RefusalClass(enum.Enum):
    """The gRPC status a refusal maps to (names are grpclib `Status` member names)."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"


class RefusalReason(enum.Enum):
    """Why a request was refused; `.refusal_class` gives its gRPC status."""

    BAD_CSR = "bad_csr"
    WRONG_TRUST_DOMAIN = "wrong_trust_domain"
    CSR_IDENTITY_MISMATCH = "csr_identity_mismatch"
    BAD_IMPERSONATED_IDENTITY = "bad_impersonated_identity"
    MISSING_IMPERSONATED_IDENTITY = "missing_impersonated_identity"
    NO_TOKEN = "no_token"
    UNKNOWN_TOKEN = "unknown_token"
    EXPIRED_TOKEN = "expired_token"
    IDENTITY_NOT_ALLOWED = "identity_not_allowed"
    NOT_ON_NODE = "not_on_node"

    @property
    def refusal_class(self) -> RefusalClass:
        return _CLASS_OF[self]


_CLASS_OF = {
    RefusalReason.BAD_CSR: RefusalClass.INVALID_ARGUMENT,
    RefusalReason.WRONG_TRUST_DOMAIN: RefusalClass.INVALID_ARGUMENT,
    RefusalReason.CSR_IDENTITY_MISMATCH: RefusalClass.INVALID_ARGUMENT,
    RefusalReason.BAD_IMPERSONATED_IDENTITY: RefusalClass.INVALID_ARGUMENT,
    RefusalReason.MISSING_IMPERSONATED_IDENTITY: RefusalClass.INVALID_ARGUMENT,
    RefusalReason.NO_TOKEN: RefusalClass.UNAUTHENTICATED,
    RefusalReason.UNKNOWN_TOKEN: RefusalClass.UNAUTHENTICATED,
    RefusalReason.EXPIRED_TOKEN: RefusalClass.UNAUTHENTICATED,
    RefusalReason.IDENTITY_NOT_ALLOWED: RefusalClass.PERMISSION_DENIED,
    RefusalReason.NOT_ON_NODE: RefusalClass.PERMISSION_DENIED,
}


@dataclasses.dataclass(frozen=True)
class Refusal:
    """A refused request: the reason (and so the gRPC status) and a message for the caller."""

    reason: RefusalReason
    message: str


@dataclasses.dataclass(frozen=True)
class WorkloadCaller:
    """A workload authenticated as its own identity; it may obtain only that identity."""

    identity: SpiffeId


@dataclasses.dataclass(frozen=True)
class NodeProxyCaller:
    """The node proxy (ztunnel) of one node; it asks for identities of pods on that node."""

    node: str


Caller = WorkloadCaller | NodeProxyCaller


class TokenAuthenticator(Protocol):
    """Turns a bearer token into a caller (the seam for Kubernetes TokenReview).

    `cluster_id` is the request's `clusterid` metadata (None when absent); an authenticator that
    serves several clusters uses it to choose where to review the token.
    """

    async def authenticate(self, token: str, *, cluster_id: str | None) -> Caller | Refusal: ...


@dataclasses.dataclass(frozen=True)
class TokenGrant:
    """What a static token stands for, and until when (None: no expiry)."""

    caller: Caller
    expires_at: dt.datetime | None = None


class StaticTokenTable:
    """The sandbox's authenticator: a fixed token → caller table. Ignores `cluster_id`."""

    def __init__(self, grants: Mapping[str, TokenGrant], *, clock: Clock = utc_now) -> None:
        self._grants = dict(grants)
        self._clock = clock

    def lookup(self, token: str, now: dt.datetime) -> Caller | Refusal:
        """Pure lookup: the token's caller, or why it does not authenticate at `now`."""
        grant = self._grants.get(token)
        if grant is None:
            return Refusal(RefusalReason.UNKNOWN_TOKEN, "bearer token is not known to this CA")
        if grant.expires_at is not None and now >= grant.expires_at:
            return Refusal(
                RefusalReason.EXPIRED_TOKEN,
                f"bearer token expired at {grant.expires_at.isoformat()}; request a fresh token",
            )
        return grant.caller

    async def authenticate(self, token: str, *, cluster_id: str | None) -> Caller | Refusal:
        return self.lookup(token, self._clock())


NodeServes = Callable[[str, SpiffeId], bool]
"""`may_node_serve(node, identity)`: does a workload with `identity` run on `node`?"""


@dataclasses.dataclass(frozen=True)
class StaticPlacement:
    """A `NodeServes` rule over a fixed list of (node, identity) pairs (the sandbox's)."""

    pairs: frozenset[tuple[str, SpiffeId]]

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, SpiffeId]]) -> StaticPlacement:
        return cls(frozenset(pairs))

    def __call__(self, node: str, identity: SpiffeId) -> bool:
        return (node, identity) in self.pairs


@dataclasses.dataclass(frozen=True)
class CertificateAsk:
    """A request, off the wire: CSR PEM, asked lifetime, raw `ImpersonatedIdentity` (or None)."""

    csr_pem: str
    validity_seconds: int = 0
    impersonated_identity: str | None = None


@dataclasses.dataclass(frozen=True)
class Allowed:
    """The request may be signed: for exactly `identity`, with the CSR's public key."""

    identity: SpiffeId
    csr: pki.CsrRequest
    caller: Caller


def bearer_token(authorization: str | None) -> str | Refusal:
    """The token of an `authorization: Bearer <token>` header value."""
    if not authorization:
        return Refusal(RefusalReason.NO_TOKEN, "missing 'authorization: Bearer <token>' metadata")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return Refusal(
            RefusalReason.NO_TOKEN,
            "authorization metadata must be 'Bearer <token>' with a non-empty token",
        )
    return token


def ask_from_request(request: IstioCertificateRequest) -> CertificateAsk | Refusal:
    """The one gate from the protobuf request to `CertificateAsk`."""
    impersonated: str | None = None
    value = request.metadata.fields.get(IMPERSONATED_IDENTITY)
    if value is not None:
        kind, _ = betterproto.which_one_of(value, "kind")
        if kind != "string_value":
            return Refusal(
                RefusalReason.BAD_IMPERSONATED_IDENTITY,
                f"metadata {IMPERSONATED_IDENTITY} must be a string SPIFFE ID, "
                f"got {kind or 'null'}",
            )
        impersonated = value.string_value
    return CertificateAsk(request.csr, request.validity_duration, impersonated)


def decide(
    ask: CertificateAsk,
    caller: Caller,
    *,
    trust_domain: str,
    may_node_serve: NodeServes,
) -> Allowed | Refusal:
    """Whether `caller` may have `ask` signed, and for which identity (rules: module doc)."""
    try:
        csr = pki.parse_csr(ask.csr_pem)
    except pki.PkiError as exc:
        return Refusal(RefusalReason.BAD_CSR, f"invalid CSR: {exc}")
    if csr.identity.trust_domain != trust_domain:
        return _foreign(csr.identity, trust_domain, "CSR identity")

    requested: SpiffeId
    if ask.impersonated_identity is not None:
        try:
            requested = SpiffeId.parse(ask.impersonated_identity)
        except InvalidIdentityError as exc:
            return Refusal(
                RefusalReason.BAD_IMPERSONATED_IDENTITY, f"{IMPERSONATED_IDENTITY}: {exc}"
            )
        if requested.trust_domain != trust_domain:
            return _foreign(requested, trust_domain, IMPERSONATED_IDENTITY)
    elif isinstance(caller, WorkloadCaller):
        requested = caller.identity
    else:
        return Refusal(
            RefusalReason.MISSING_IMPERSONATED_IDENTITY,
            f"node proxy of node {caller.node!r} must name the workload identity it wants in "
            f"metadata {IMPERSONATED_IDENTITY}",
        )

    if csr.identity != requested:
        return Refusal(
            RefusalReason.CSR_IDENTITY_MISMATCH,
            f"CSR names {csr.identity} but the request is for {requested}",
        )

    if isinstance(caller, WorkloadCaller):
        if requested != caller.identity:
            return Refusal(
                RefusalReason.IDENTITY_NOT_ALLOWED,
                f"caller {caller.identity} may only obtain its own identity, not {requested}",
            )
    elif not may_node_serve(caller.node, requested):
        return Refusal(
            RefusalReason.NOT_ON_NODE,
            f"no workload with identity {requested} runs on node {caller.node!r}; "
            "a node proxy may only obtain identities of workloads on its node",
        )
    return Allowed(identity=requested, csr=csr, caller=caller)


def _foreign(identity: SpiffeId, trust_domain: str, what: str) -> Refusal:
    return Refusal(
        RefusalReason.WRONG_TRUST_DOMAIN,
        f"{what} {identity} is outside this CA's trust domain {trust_domain!r}",
    )
