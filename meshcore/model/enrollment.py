"""Enrollment decision: should this pod be captured into the ambient mesh? (pure)

Implements Istio's default CNI enablement selectors (AMBIENT-INTERNALS §5.7): a pod is enrolled
if it carries `istio.io/dataplane-mode=ambient`, or its namespace does and the pod does not opt
out with `istio.io/dataplane-mode=none`. Never enrolled: host-network pods, pods with an
injected sidecar (`sidecar.istio.io/status`), ztunnel and the CNI agent in the system
namespace, excluded namespaces. Called by `ClusterModel.is_enrolled` and by the CNI node agent.
This decides whether redirection *should* be installed; whether it *is* installed is the
`ambient.istio.io/redirection` annotation the agent writes (see `redirection_enabled`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from meshcore.model.core import Pod

DATAPLANE_MODE_LABEL = "istio.io/dataplane-mode"
REDIRECTION_ANNOTATION = "ambient.istio.io/redirection"
SIDECAR_STATUS_ANNOTATION = "sidecar.istio.io/status"
AMBIENT = "ambient"
NONE = "none"


@dataclasses.dataclass(frozen=True, slots=True)
class EnrollmentDecision:
    enrolled: bool
    reason: str

    def __bool__(self) -> bool:
        return self.enrolled


def enrollment_decision(
    pod: Pod,
    namespace_labels: Mapping[str, str],
    *,
    system_namespace: str = "istio-system",
    exclude_namespaces: frozenset[str] = frozenset(),
) -> EnrollmentDecision:
    """Decide from the pod, its namespace's labels and the agent's settings."""
    labels = pod.labels
    if pod.host_network:
        return EnrollmentDecision(False, "host-network pod")
    if SIDECAR_STATUS_ANNOTATION in pod.annotations:
        return EnrollmentDecision(False, "pod has an injected sidecar")
    if pod.namespace == system_namespace and (
        labels.get("app") == "ztunnel" or labels.get("k8s-app") == "istio-cni-node"
    ):
        return EnrollmentDecision(False, "mesh infrastructure pod")
    if pod.namespace in exclude_namespaces:
        return EnrollmentDecision(False, f"namespace {pod.namespace} is excluded")
    mode = labels.get(DATAPLANE_MODE_LABEL)
    if mode == NONE:
        return EnrollmentDecision(False, f"pod label {DATAPLANE_MODE_LABEL}=none")
    if mode == AMBIENT:
        return EnrollmentDecision(True, f"pod label {DATAPLANE_MODE_LABEL}=ambient")
    if namespace_labels.get(DATAPLANE_MODE_LABEL) == AMBIENT:
        return EnrollmentDecision(True, f"namespace label {DATAPLANE_MODE_LABEL}=ambient")
    return EnrollmentDecision(False, "no ambient label on pod or namespace")


def redirection_enabled(pod: Pod) -> bool:
    """True when the node agent reported the pod fully captured (annotation `enabled`)."""
    return pod.annotations.get(REDIRECTION_ANNOTATION) == "enabled"


def selects(selector: Mapping[str, str] | None, labels: Mapping[str, str]) -> bool:
    """Equality-based label selection: every selector pair present in `labels`.
    None selects nothing; an empty selector selects everything."""
    if selector is None:
        return False
    return all(labels.get(k) == v for k, v in selector.items())
