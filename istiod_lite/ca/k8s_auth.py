"""CA caller authentication on Kubernetes: TokenReview of the bearer token (Istio's kubeauth).

Called by `service.CertificateService` through the `authz.TokenAuthenticator` protocol when
istiod-lite runs with `--kubernetes`; hands back a `NodeProxyCaller` or a `WorkloadCaller` (or a
`Refusal`, UNAUTHENTICATED) to `authz.decide`.

Steps (AMBIENT-INTERNALS §3.4; `[is] security/pkg/server/ca/authenticate/kubeauth/kube_jwt.go`,
`node_auth.go`):
1. POST an `authentication.k8s.io/v1` TokenReview with the token and audiences (`istio-ca`);
   not authenticated, or no overlap with our audiences → refused.
2. The username must be `system:serviceaccount:<ns>:<sa>`.
3. `<ns>/<sa>` in the trusted node accounts (default `<istio ns>/ztunnel`): the caller is a node
   proxy; the pod named in the bound token's extra info
   (`authentication.kubernetes.io/pod-name`, `.../pod-uid`) must exist with that UID and service
   account; its `spec.nodeName` is the caller's node → `NodeProxyCaller(node)`. The pod is
   looked up in the current model first and through the API when the model does not have it
   (yet) with that UID.
4. Otherwise → `WorkloadCaller(spiffe://<td>/ns/<ns>/sa/<sa>)`.
The review itself (`interpret_review`) and the node decision (`node_of_pod`) are pure.

Errors: API failures become a refusal naming the failure (the caller retries on its own);
nothing here raises to the service. `cluster_id` is not used: one cluster.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Collection, Mapping
from typing import Any

from istiod_lite.ca.authz import (
    Caller,
    NodeProxyCaller,
    Refusal,
    RefusalReason,
    WorkloadCaller,
)
from meshcore.identity import InvalidIdentityError, SpiffeId
from meshcore.kube import KubeApiError, KubeClient
from meshcore.model import ClusterModel, Pod

log = logging.getLogger("istiod_lite.ca.k8s_auth")

DEFAULT_AUDIENCES = ("istio-ca",)
SA_PREFIX = "system:serviceaccount:"
POD_NAME_EXTRA = "authentication.kubernetes.io/pod-name"
POD_UID_EXTRA = "authentication.kubernetes.io/pod-uid"


@dataclasses.dataclass(frozen=True)
class ReviewedToken:
    """What the API server says about a token: its service account and bound pod (if any)."""

    namespace: str
    service_account: str
    pod_name: str = ""
    pod_uid: str = ""


@dataclasses.dataclass(frozen=True)
class PodFacts:
    """The fields of a pod the node rule needs."""

    uid: str
    service_account: str
    node: str


def parse_account(text: str) -> tuple[str, str]:
    """`ns/sa` → (ns, sa); ValueError otherwise (used for `--trusted-node-account`)."""
    ns, sep, sa = text.partition("/")
    if not sep or not ns or not sa or "/" in sa:
        raise ValueError(f"trusted node account {text!r} must be NAMESPACE/SERVICEACCOUNT")
    return ns, sa


def token_review(token: str, audiences: Collection[str]) -> dict[str, Any]:
    return {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "spec": {"token": token, "audiences": list(audiences)}}


def interpret_review(review: Mapping[str, Any], audiences: Collection[str]
                     ) -> ReviewedToken | Refusal:
    """The TokenReview response → the caller's service account and bound pod, or why not."""
    status = review.get("status") or {}
    if not status.get("authenticated"):
        why = status.get("error") or "the token is invalid, expired or for another audience"
        return Refusal(RefusalReason.UNKNOWN_TOKEN, f"Kubernetes rejected the bearer token: {why}")
    granted = status.get("audiences")
    if granted is not None and not set(granted) & set(audiences):
        return Refusal(RefusalReason.UNKNOWN_TOKEN,
                       f"bearer token audiences {sorted(granted)} do not include any of "
                       f"{sorted(audiences)}; mount a projected token with audience istio-ca")
    user = status.get("user") or {}
    username = str(user.get("username") or "")
    ns, _, sa = username.removeprefix(SA_PREFIX).partition(":")
    if not username.startswith(SA_PREFIX) or not ns or not sa or ":" in sa:
        return Refusal(RefusalReason.UNKNOWN_TOKEN,
                       f"bearer token belongs to {username!r}, not to a service account")
    extra = user.get("extra") or {}
    return ReviewedToken(ns, sa, _first(extra.get(POD_NAME_EXTRA)),
                         _first(extra.get(POD_UID_EXTRA)))


def node_of_pod(reviewed: ReviewedToken, pod: PodFacts | None) -> NodeProxyCaller | Refusal:
    """A trusted node account's node: the bound pod must exist with the token's UID and SA."""
    who = f"{reviewed.namespace}/{reviewed.service_account}"
    if not reviewed.pod_name or not reviewed.pod_uid:
        return Refusal(RefusalReason.UNKNOWN_TOKEN,
                       f"node proxy token of {who} is not bound to a pod (no pod name/UID in "
                       "the token); use a projected service-account token")
    pod_ref = f"{reviewed.namespace}/{reviewed.pod_name}"
    if pod is None:
        return Refusal(RefusalReason.UNKNOWN_TOKEN,
                       f"the node proxy pod {pod_ref} named by the token does not exist")
    if pod.uid != reviewed.pod_uid:
        return Refusal(RefusalReason.UNKNOWN_TOKEN,
                       f"the node proxy pod {pod_ref} has UID {pod.uid}, the token was issued "
                       f"for UID {reviewed.pod_uid} (a deleted pod's token?)")
    if pod.service_account != reviewed.service_account:
        return Refusal(RefusalReason.UNKNOWN_TOKEN,
                       f"the node proxy pod {pod_ref} runs as {pod.service_account}, "
                       f"not {reviewed.service_account}")
    if not pod.node:
        return Refusal(RefusalReason.UNKNOWN_TOKEN,
                       f"the node proxy pod {pod_ref} is not scheduled on a node yet")
    return NodeProxyCaller(pod.node)


def facts_of_manifest(doc: Mapping[str, Any]) -> PodFacts:
    meta, spec = doc.get("metadata") or {}, doc.get("spec") or {}
    return PodFacts(str(meta.get("uid") or ""),
                    str(spec.get("serviceAccountName") or "default"),
                    str(spec.get("nodeName") or ""))


class KubernetesTokenAuthenticator:
    """`TokenAuthenticator` over TokenReview; node proxies are the trusted node accounts."""

    def __init__(self, client: KubeClient, *, trust_domain: str,
                 trusted_node_accounts: Collection[tuple[str, str]],
                 model: Callable[[], ClusterModel | None] = lambda: None,
                 audiences: Collection[str] = DEFAULT_AUDIENCES) -> None:
        self.client = client
        self.trust_domain = trust_domain
        self.trusted = frozenset(trusted_node_accounts)
        self.model = model
        self.audiences = tuple(audiences)

    async def authenticate(self, token: str, *, cluster_id: str | None) -> Caller | Refusal:
        try:
            review = await self.client.request(
                "POST", self.client.path("TokenReview"), body=token_review(token, self.audiences))
        except KubeApiError as exc:
            log.warning("TokenReview failed: %s", exc)
            return Refusal(RefusalReason.UNKNOWN_TOKEN, f"could not review the token: {exc}")
        reviewed = interpret_review(review, self.audiences)
        if isinstance(reviewed, Refusal):
            return reviewed
        if (reviewed.namespace, reviewed.service_account) in self.trusted:
            try:
                pod = await self._pod(reviewed)
            except KubeApiError as exc:
                return Refusal(RefusalReason.UNKNOWN_TOKEN,
                               f"could not look up the node proxy pod: {exc}")
            return node_of_pod(reviewed, pod)
        try:
            return WorkloadCaller(SpiffeId(self.trust_domain, reviewed.namespace,
                                           reviewed.service_account))
        except InvalidIdentityError as exc:
            return Refusal(RefusalReason.UNKNOWN_TOKEN, f"caller identity: {exc}")

    async def _pod(self, reviewed: ReviewedToken) -> PodFacts | None:
        if not reviewed.pod_name:
            return None
        model = self.model()
        if model is not None:
            obj = model.get("Pod", reviewed.namespace, reviewed.pod_name)
            if isinstance(obj, Pod) and obj.meta.uid == reviewed.pod_uid:
                return PodFacts(obj.meta.uid, obj.service_account, obj.node_name)
        doc = await self.client.get(
            self.client.path("Pod", reviewed.namespace, reviewed.pod_name))
        return None if doc is None else facts_of_manifest(doc)


def _first(value: Any) -> str:
    if isinstance(value, list | tuple):
        return str(value[0]) if value else ""
    return str(value or "")
