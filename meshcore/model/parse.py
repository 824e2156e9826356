"""The single gate from plain dicts to model objects: `parse_object(doc) -> ModelObject`.

Callers: config sources (istiod_lite.config manifest folder, the Kubernetes source) and the
CNI node agent. Hands back a frozen object of one of the kinds in `KINDS`, or raises
`InvalidObjectError(kind, namespace, name, field, message)`. `identify(doc)` extracts the
(kind, namespace, name) key best-effort, so a source can keep the last good version of an
object whose new version is invalid.
Invariant: nothing else in the code base builds model objects from dicts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from meshcore.model import core, discovery, gateway, security
from meshcore.model._fields import Reader
from meshcore.model.core import ModelObject
from meshcore.model.errors import InvalidObjectError

_Parser = Callable[[Mapping[str, Any], Reader], ModelObject]

# kind → (accepted apiVersion groups, model class, parser)
_KINDS: dict[str, tuple[tuple[str, ...], type[ModelObject], _Parser]] = {
    "Namespace": (("v1",), core.Namespace, core.parse_namespace),
    "Node": (("v1",), core.Node, core.parse_node),
    "Pod": (("v1",), core.Pod, core.parse_pod),
    "Service": (("v1",), core.Service, core.parse_service),
    "ServiceAccount": (("v1",), core.ServiceAccount, core.parse_service_account),
    "EndpointSlice": (("discovery.k8s.io",), discovery.EndpointSlice,
                      discovery.parse_endpoint_slice),
    "AuthorizationPolicy": (("security.istio.io",), security.AuthorizationPolicy,
                            security.parse_authorization_policy),
    "PeerAuthentication": (("security.istio.io",), security.PeerAuthentication,
                           security.parse_peer_authentication),
    "Gateway": (("gateway.networking.k8s.io",), gateway.Gateway, gateway.parse_gateway),
    "HTTPRoute": (("gateway.networking.k8s.io",), gateway.HTTPRoute, gateway.parse_http_route),
}

KINDS: tuple[str, ...] = tuple(_KINDS)
CLUSTER_SCOPED: frozenset[str] = frozenset(k for k, v in _KINDS.items() if not v[1].namespaced)


def identify(doc: Any, default_namespace: str = "default") -> tuple[str, str, str]:
    """Best-effort (kind, namespace, name) of a document; "" for parts that are missing."""
    if not isinstance(doc, Mapping):
        return ("", "", "")
    def text(d: Mapping[str, Any], key: str) -> str:
        v = d.get(key)
        return v if isinstance(v, str) else ""

    meta = doc.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    kind, name, ns = text(doc, "kind"), text(meta, "name"), text(meta, "namespace")
    if kind in CLUSTER_SCOPED:
        ns = ""
    elif not ns:
        ns = default_namespace
    return (kind, ns, name)


def parse_object(doc: Any, *, default_namespace: str = "default") -> ModelObject:
    """Parse one object. Namespaced objects without `metadata.namespace` get
    `default_namespace` (as `kubectl apply` would)."""
    kind, ns, name = identify(doc, default_namespace)
    if not isinstance(doc, Mapping):
        raise InvalidObjectError("", "", "", "", "a manifest document must be a mapping")
    if not kind:
        raise InvalidObjectError("", ns, name, "kind", "required field is missing")
    entry = _KINDS.get(kind)
    if entry is None:
        raise InvalidObjectError(kind, ns, name, "kind",
                                 f"unsupported kind (supported: {', '.join(KINDS)})")
    groups, _cls, parser = entry
    api = doc.get("apiVersion")
    if not isinstance(api, str) or not api:
        raise InvalidObjectError(kind, ns, name, "apiVersion", "required field is missing")
    group = api.rsplit("/", 1)[0] if "/" in api else api
    if group not in groups:
        raise InvalidObjectError(kind, ns, name, "apiVersion",
                                 f'unsupported apiVersion "{api}" for {kind}')
    return parser(doc, Reader(kind, ns, name))


def model_class(kind: str) -> type[ModelObject]:
    """The model class for a supported kind (KeyError otherwise)."""
    return _KINDS[kind][1]
