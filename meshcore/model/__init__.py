"""The Kubernetes object model shared by istiod_lite and the CNI node agent.

Plain dicts (manifest YAML, Kubernetes API objects) become frozen dataclasses at one gate,
`parse_object`, which raises `InvalidObjectError` naming kind, namespace/name and field.
`ClusterModel` is the immutable snapshot of all objects, with pure lookups (pods by node,
selectors, namespace labels, enrollment). See docs/control-plane-model.md.
"""

from meshcore.model._fields import freeze, thaw
from meshcore.model.core import (
    Container,
    ContainerPort,
    ModelObject,
    Namespace,
    Node,
    ObjectMeta,
    OwnerReference,
    Pod,
    Service,
    ServiceAccount,
    ServicePort,
)
from meshcore.model.discovery import Endpoint, EndpointPort, EndpointSlice, ObjectRef
from meshcore.model.enrollment import (
    DATAPLANE_MODE_LABEL,
    REDIRECTION_ANNOTATION,
    EnrollmentDecision,
    enrollment_decision,
    redirection_enabled,
    selects,
)
from meshcore.model.errors import InvalidObjectError, ModelError
from meshcore.model.gateway import (
    BackendRef,
    Gateway,
    HTTPRoute,
    HTTPRouteFilter,
    HTTPRouteMatch,
    HTTPRouteRule,
    Listener,
    ParentRef,
    PathMatch,
    ValueMatch,
)
from meshcore.model.parse import CLUSTER_SCOPED, KINDS, identify, model_class, parse_object
from meshcore.model.security import (
    AuthorizationPolicy,
    Condition,
    Operation,
    PeerAuthentication,
    PolicyTargetRef,
    Rule,
    Source,
)
from meshcore.model.snapshot import ClusterModel

__all__ = [
    "CLUSTER_SCOPED", "DATAPLANE_MODE_LABEL", "KINDS", "REDIRECTION_ANNOTATION",
    "AuthorizationPolicy", "BackendRef", "ClusterModel", "Condition", "Container",
    "ContainerPort", "Endpoint", "EndpointPort", "EndpointSlice", "EnrollmentDecision",
    "Gateway", "HTTPRoute", "HTTPRouteFilter", "HTTPRouteMatch", "HTTPRouteRule",
    "InvalidObjectError", "Listener", "ModelError", "ModelObject", "Namespace", "Node",
    "ObjectMeta", "ObjectRef", "Operation", "OwnerReference", "ParentRef", "PathMatch",
    "PeerAuthentication", "Pod", "PolicyTargetRef", "Rule", "Service", "ServiceAccount",
    "ServicePort", "Source", "ValueMatch", "enrollment_decision", "freeze", "identify",
    "model_class", "parse_object", "redirection_enabled", "selects", "thaw",
]
