"""CA caller authentication on Kubernetes: TokenReview interpretation (pure) and the
`KubernetesTokenAuthenticator` against kmock serving TokenReview and pods."""

from __future__ import annotations

from typing import Any

import kopf
import pytest
from kmock import resource

from istiod_lite.ca.authz import NodeProxyCaller, Refusal, RefusalReason, WorkloadCaller
from istiod_lite.ca.k8s_auth import (
    KubernetesTokenAuthenticator,
    PodFacts,
    ReviewedToken,
    interpret_review,
    node_of_pod,
    parse_account,
)
from meshcore.identity import SpiffeId
from meshcore.kube import KubeClient
from meshcore.model import ClusterModel, parse_object

TD = "cluster.local"
ZTUNNEL = ("istio-system", "ztunnel")


def review(username: str, *, authenticated: bool = True, pod: str = "", uid: str = "",
           audiences: list[str] | None = None) -> dict[str, Any]:
    user: dict[str, Any] = {"username": username}
    if pod:
        user["extra"] = {"authentication.kubernetes.io/pod-name": [pod],
                         "authentication.kubernetes.io/pod-uid": [uid]}
    status: dict[str, Any] = {"authenticated": authenticated, "user": user}
    if audiences is not None:
        status["audiences"] = audiences
    if not authenticated:
        status = {"authenticated": False, "error": "token expired"}
    return {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": status}


@pytest.mark.parametrize(("body", "expected"), [
    pytest.param(review("system:serviceaccount:shop:web"), ReviewedToken("shop", "web"),
                 id="workload"),
    pytest.param(review("system:serviceaccount:istio-system:ztunnel", pod="zt-1", uid="u1",
                        audiences=["istio-ca"]),
                 ReviewedToken("istio-system", "ztunnel", "zt-1", "u1"), id="bound-pod"),
    pytest.param(review("x", authenticated=False), "token expired", id="not-authenticated"),
    pytest.param(review("system:serviceaccount:shop:web", audiences=["api"]), "audiences",
                 id="wrong-audience"),
    pytest.param(review("alice@example.com"), "not to a service account", id="human-user"),
    pytest.param(review("system:serviceaccount:shop"), "not to a service account",
                 id="malformed-sa"),
])
def test_interpret_review(body, expected):
    """A TokenReview status becomes the caller's SA and bound pod, or an UNAUTHENTICATED refusal."""
    out = interpret_review(body, ("istio-ca",))
    if isinstance(expected, str):
        assert isinstance(out, Refusal) and expected in out.message
        assert out.reason is RefusalReason.UNKNOWN_TOKEN
    else:
        assert out == expected


BOUND = ReviewedToken("istio-system", "ztunnel", "zt-1", "u1")


@pytest.mark.parametrize(("reviewed", "pod", "expected"), [
    pytest.param(BOUND, PodFacts("u1", "ztunnel", "n1"), NodeProxyCaller("n1"), id="ok"),
    pytest.param(BOUND, None, "does not exist", id="no-pod"),
    pytest.param(BOUND, PodFacts("u2", "ztunnel", "n1"), "UID u2", id="uid-mismatch"),
    pytest.param(BOUND, PodFacts("u1", "default", "n1"), "runs as default", id="other-sa"),
    pytest.param(BOUND, PodFacts("u1", "ztunnel", ""), "not scheduled", id="unscheduled"),
    pytest.param(ReviewedToken("istio-system", "ztunnel"), None, "not bound to a pod",
                 id="unbound-token"),
])
def test_node_of_pod(reviewed, pod, expected):
    """A trusted node account's node is its bound pod's node, if UID and SA match."""
    out = node_of_pod(reviewed, pod)
    if isinstance(expected, str):
        assert isinstance(out, Refusal) and expected in out.message
    else:
        assert out == expected


@pytest.mark.parametrize("text", ["ztunnel", "/ztunnel", "ns/", "a/b/c"])
def test_parse_account_rejects_malformed(text):
    """Trusted node accounts are NAMESPACE/SERVICEACCOUNT."""
    with pytest.raises(ValueError, match="NAMESPACE/SERVICEACCOUNT"):
        parse_account(text)


# -- against kmock ---------------------------------------------------------------------------
TOKENS = {
    "zt-token": review("system:serviceaccount:istio-system:ztunnel", pod="ztunnel-abc",
                       uid="uid-zt", audiences=["istio-ca"]),
    "web-token": review("system:serviceaccount:shop:web", audiences=["istio-ca"]),
    "stale-zt-token": review("system:serviceaccount:istio-system:ztunnel", pod="ztunnel-abc",
                             uid="uid-old", audiences=["istio-ca"]),
}
ZT_POD = {"apiVersion": "v1", "kind": "Pod",
          "metadata": {"namespace": "istio-system", "name": "ztunnel-abc", "uid": "uid-zt"},
          "spec": {"nodeName": "worker-1", "serviceAccountName": "ztunnel"}}


@pytest.fixture()
def reviews() -> list[dict[str, Any]]:
    return []


@pytest.fixture()
def api(kmock: Any, reviews: list[dict[str, Any]]) -> Any:
    kmock.resources["v1/pods"] = kmock.ResourceInfo(kind="Pod", namespaced=True,
                                                     verbs={"get", "list"})
    kmock.objects["v1/pods", "istio-system", "ztunnel-abc"] = ZT_POD
    def token_review(request: Any) -> dict[str, Any]:
        reviews.append(request.data)
        # kmock stores every created object; the API server never stores TokenReviews, and a
        # second nameless one would be a 409 in the emulator.
        for key in [k for k in kmock.objects if "tokenreviews" in str(k[0])]:
            del kmock.objects[key]
        return TOKENS.get(request.data["spec"]["token"], review("", authenticated=False))

    kmock["post", resource("authentication.k8s.io", "v1", "tokenreviews")] << token_review
    return kmock


def authenticator(api: Any, **kwargs: Any) -> KubernetesTokenAuthenticator:
    url = str(api.url)
    return KubernetesTokenAuthenticator(KubeClient(lambda: kopf.ConnectionInfo(server=url)),
                                        trust_domain=TD, trusted_node_accounts={ZTUNNEL},
                                        **kwargs)


@pytest.mark.asyncio
async def test_ztunnel_token_is_the_node_proxy_of_its_pods_node(api, reviews):
    """The ztunnel SA's bound token → NodeProxyCaller of the pod's node (pod read via the API)."""
    auth = authenticator(api)
    async with auth.client:
        caller = await auth.authenticate("zt-token", cluster_id="Kubernetes")
    assert caller == NodeProxyCaller("worker-1")
    assert reviews == [{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                            "spec": {"token": "zt-token", "audiences": ["istio-ca"]}}]


@pytest.mark.asyncio
async def test_model_is_consulted_before_the_api(api):
    """A pod in the current model with the token's UID needs no API read."""
    moved = {**ZT_POD, "spec": {"nodeName": "worker-9", "serviceAccountName": "ztunnel"}}
    model = ClusterModel.from_objects([parse_object(moved)])
    auth = authenticator(api, model=lambda: model)
    async with auth.client:
        caller = await auth.authenticate("zt-token", cluster_id=None)
    assert caller == NodeProxyCaller("worker-9")
    assert not [r for r in api["get"]]


@pytest.mark.asyncio
async def test_workload_token_is_its_own_identity(api):
    """Any other SA's token → a WorkloadCaller for that SA's SPIFFE identity."""
    auth = authenticator(api)
    async with auth.client:
        caller = await auth.authenticate("web-token", cluster_id=None)
    assert caller == WorkloadCaller(SpiffeId(TD, "shop", "web"))


@pytest.mark.asyncio
async def test_untrusted_account_list_makes_ztunnel_a_workload(api):
    """With a different trusted node account, ztunnel's token is just a workload."""
    auth = authenticator(api)
    auth.trusted = frozenset({("kube-system", "node-proxy")})
    async with auth.client:
        caller = await auth.authenticate("zt-token", cluster_id=None)
    assert caller == WorkloadCaller(SpiffeId(TD, "istio-system", "ztunnel"))


@pytest.mark.parametrize(("token", "expected"), [
    pytest.param("stale-zt-token", "UID uid-zt", id="recreated-pod"),
    pytest.param("nonsense", "Kubernetes rejected the bearer token", id="unknown-token"),
])
@pytest.mark.asyncio
async def test_refusals(api, token, expected):
    """Unknown tokens and tokens of a deleted ztunnel pod are UNAUTHENTICATED."""
    auth = authenticator(api)
    async with auth.client:
        out = await auth.authenticate(token, cluster_id=None)
    assert isinstance(out, Refusal) and expected in out.message


@pytest.mark.asyncio
async def test_api_failure_is_a_refusal_naming_it(kmock):
    """A failing TokenReview (RBAC) refuses the call with the API error in the message."""
    kmock["post", resource("authentication.k8s.io", "v1", "tokenreviews")] << 403
    auth = authenticator(kmock)
    async with auth.client:
        out = await auth.authenticate("web-token", cluster_id=None)
    assert isinstance(out, Refusal) and "HTTP 403" in out.message


def test_cli_trusted_node_accounts():
    """`--trusted-node-account NS/SA` is repeatable and validated by the parser."""
    from istiod_lite.__main__ import build_parser

    args = build_parser().parse_args(["--kubernetes", "--trusted-node-account", "a/zt",
                                      "--trusted-node-account", "b/node-proxy"])
    assert args.trusted_node_account == [("a", "zt"), ("b", "node-proxy")]
    assert build_parser().parse_args(["--kubernetes"]).trusted_node_account == []
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--trusted-node-account", "ztunnel"])


@pytest.mark.asyncio
async def test_certificate_service_with_tokenreview_and_the_model_node_rule(api):
    """End to end in-process: ztunnel's reviewed token gets a pod identity on its node only."""
    import datetime as dt

    from grpclib import GRPCError
    from grpclib.const import Status
    from grpclib.testing import ChannelFor

    from istiod_lite.app import ModelPlacement
    from istiod_lite.ca.authority import CertificateAuthority
    from istiod_lite.ca.service import CertificateService
    from meshcore import pki
    from meshcore.protos.istio.v1.auth import IstioCertificateServiceStub
    from tests.istiod_lite.test_ca_service import request

    shop_web = SpiffeId(TD, "shop", "web")
    bank_api = SpiffeId(TD, "bank", "api")
    placement = ModelPlacement()
    placement.model = ClusterModel.from_objects([parse_object(m) for m in (
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"namespace": "shop", "name": "web-1"},
         "spec": {"nodeName": "worker-1", "serviceAccountName": "web"}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"namespace": "bank", "name": "api-1"},
         "spec": {"nodeName": "worker-2", "serviceAccountName": "api"}})])
    authority = CertificateAuthority(pki.new_root(TD, lifetime=dt.timedelta(days=1),
                                                  now=dt.datetime.now(dt.UTC)))
    auth = authenticator(api, model=lambda: placement.model)
    service = CertificateService(authority, auth, placement)
    metadata = {"authorization": "Bearer zt-token", "clusterid": "Kubernetes"}
    async with auth.client, ChannelFor([service]) as channel:
        stub = IstioCertificateServiceStub(channel)
        reply = await stub.create_certificate(request(shop_web, impersonate=shop_web),
                                              metadata=metadata)
        assert pki.spiffe_ids_of(pki.load_pem_chain(reply.cert_chain[0])[0]) == [shop_web]
        with pytest.raises(GRPCError) as info:
            await stub.create_certificate(request(bank_api, impersonate=bank_api),
                                          metadata=metadata)
        assert info.value.status == Status.PERMISSION_DENIED
        reply = await stub.create_certificate(
            request(shop_web), metadata={"authorization": "Bearer web-token"})
        assert pki.spiffe_ids_of(pki.load_pem_chain(reply.cert_chain[0])[0]) == [shop_web]
