"""The node agent's enrollment decisions (pure): what to do with each pod on this node.

Inputs: the cluster model (`meshcore.model.ClusterModel`, from the config source), this node's
settings, and what the agent knows about pods — `KnownPod` per (namespace, name): the pod's
network namespace (from a CNI ADD or discovered, see `pod_netns`), the uid used with ztunnel and
the redirection state the agent last reached. Output: one action per pod — `Enroll`, `Unenroll`
or `Keep` — plus the pods that should be enrolled but whose netns the agent does not know
(`Plan.unserved`), and the `ambient.istio.io/redirection` value each known pod should carry.

Who calls it: `cni_plugin.agent.reconciler` (on every model snapshot, on CNI ADD, after ztunnel
acks). No I/O, no trio; everything here is frozen dataclasses and functions.

Rules (AMBIENT-INTERNALS §5.6-5.7; the selector itself is `meshcore.model.enrollment_decision`:
namespace label `istio.io/dataplane-mode=ambient`, pod opt-out `=none`, pod label `=ambient`;
never host-network pods, sidecar pods, ztunnel / the agent in the system namespace, excluded
namespaces):
- a pod that should be enrolled and whose netns is known: `Enroll` unless it is already
  ENROLLED with the same `RedirectConfig` (or PENDING with the same config while no ztunnel is
  connected: the next ZDS snapshot carries it);
- a known pod that should not be enrolled: `Unenroll` unless it is already OUT;
- a known pod that left the model, moved to another node or finished (phase Succeeded/Failed):
  `Unenroll` with `forget=True`;
- a pod that should be enrolled but whose netns is unknown: listed in `Plan.unserved`.
A pod being deleted (deletionTimestamp set) keeps its state until it is gone, so traffic keeps
flowing during graceful shutdown. State UNKNOWN (discovered at start, rules may or may not be
there) always leads to `Enroll` or `Unenroll`, both idempotent.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cni_plugin.redirect.rules import RedirectConfig
from meshcore.model import REDIRECTION_ANNOTATION, ClusterModel, Pod, enrollment_decision

PodKey = tuple[str, str]  # (namespace, name)

BYPASS_INBOUND_ANNOTATION = "ambient.istio.io/bypass-inbound-capture"
DNS_CAPTURE_ANNOTATION = "ambient.istio.io/dns-capture"
ENABLED = "enabled"
PENDING_VALUE = "pending"


class PodState(enum.Enum):
    """Where the agent has brought a pod's redirection."""

    UNKNOWN = "unknown"  # netns known, rules may or may not be in it (start, fresh CNI ADD)
    OUT = "out"  # no rules, ztunnel not told
    PENDING = "pending"  # rules in, ztunnel has not acknowledged the pod
    ENROLLED = "enrolled"  # rules in, ztunnel acknowledged


@dataclass(frozen=True)
class AgentSettings:
    """This agent's node and its enablement knobs (Istio's `exclude_namespaces`, DNS capture)."""

    node: str
    system_namespace: str = "istio-system"
    exclude_namespaces: frozenset[str] = frozenset()
    dns_capture: bool = False


@dataclass(frozen=True)
class KnownPod:
    """What the agent knows about one pod: netns path, ZDS uid, state, installed config."""

    uid: str
    netns: str
    state: PodState = PodState.UNKNOWN
    config: RedirectConfig | None = None
    ips: tuple[str, ...] = ()  # addresses from the CNI ADD (the model may not have them yet)


@dataclass(frozen=True)
class Enroll:
    key: PodKey
    uid: str
    netns: str
    config: RedirectConfig
    service_account: str
    reason: str


@dataclass(frozen=True)
class Unenroll:
    key: PodKey
    uid: str
    netns: str
    reason: str
    forget: bool = False  # the pod is gone from this node: drop what the agent knows
    notify_ztunnel: bool = True  # ztunnel may hold it (PENDING / ENROLLED)


@dataclass(frozen=True)
class Keep:
    key: PodKey
    reason: str


Action = Enroll | Unenroll | Keep


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    unserved: tuple[tuple[PodKey, str], ...] = ()

    def changes(self) -> tuple[Enroll | Unenroll, ...]:
        return tuple(a for a in self.actions if not isinstance(a, Keep))


def _key(pod: Pod) -> PodKey:
    return (pod.namespace, pod.name)


def workload_uid(pod: Pod | None, cni_uid: str, key: PodKey) -> str:
    """The uid sent to ztunnel: the pod's Kubernetes UID (model, else CNI_ARGS), else ns/name."""
    if pod is not None and pod.meta.uid:
        return pod.meta.uid
    return cni_uid or f"{key[0]}/{key[1]}"


def redirect_config(pod: Pod, extra_ips: Iterable[str], settings: AgentSettings) -> RedirectConfig:
    """Per-pod rule knobs: IPv6 when the pod has an IPv6 address; the pod annotations
    `ambient.istio.io/dns-capture` and `ambient.istio.io/bypass-inbound-capture`."""
    ips = (*pod.pod_ips, *extra_ips)
    dns = pod.annotations.get(DNS_CAPTURE_ANNOTATION, "").lower()
    return RedirectConfig(
        ipv6=any(":" in ip for ip in ips),
        dns_capture=settings.dns_capture if dns not in ("true", "false") else dns == "true",
        inbound_capture=pod.annotations.get(BYPASS_INBOUND_ANNOTATION, "").lower() != "true",
    )


def _on_node(pod: Pod, known: KnownPod | None, settings: AgentSettings) -> bool:
    # A pod the model has not scheduled yet but that this node's runtime announced is ours.
    return pod.node_name == settings.node or (not pod.node_name and known is not None)


def desired(model: ClusterModel, pod: Pod, settings: AgentSettings) -> tuple[bool, str]:
    """(should be enrolled, why) from labels, the pod's kind and phase."""
    if pod.terminal:
        return False, f"pod phase {pod.phase}"
    decision = enrollment_decision(
        pod, model.namespace_labels(pod.namespace), system_namespace=settings.system_namespace,
        exclude_namespaces=settings.exclude_namespaces)
    return decision.enrolled, decision.reason


def decide_pod(model: ClusterModel, key: PodKey, known: KnownPod | None,
               settings: AgentSettings, *, ztunnel_connected: bool) -> Action | None:
    """The action for one pod (None: nothing known and nothing to do, or unserved)."""
    pod = model.get("Pod", *key)
    if not isinstance(pod, Pod) or not _on_node(pod, known, settings) or (
            pod.terminal and known is not None):
        if known is None:
            return None
        why = ("pod deleted" if not isinstance(pod, Pod) else
               f"pod phase {pod.phase}" if pod.terminal else f"pod is on node {pod.node_name}")
        return Unenroll(key, known.uid, known.netns, why, forget=True,
                        notify_ztunnel=known.state in (PodState.PENDING, PodState.ENROLLED))
    want, reason = desired(model, pod, settings)
    if known is None:
        return None
    if not want:
        if known.state is PodState.OUT:
            return Keep(key, reason)
        return Unenroll(key, known.uid, known.netns, reason,
                        notify_ztunnel=known.state in (PodState.PENDING, PodState.ENROLLED))
    config = redirect_config(pod, known.ips, settings)
    if known.config == config and (known.state is PodState.ENROLLED or (
            known.state is PodState.PENDING and not ztunnel_connected)):
        return Keep(key, reason if known.state is PodState.ENROLLED
                    else "rules in place; waiting for ztunnel to connect")
    return Enroll(key, known.uid, known.netns, config, pod.service_account, reason)


def plan(model: ClusterModel, known: Mapping[PodKey, KnownPod], settings: AgentSettings, *,
         ztunnel_connected: bool) -> Plan:
    """Actions for every pod on this node and every pod the agent knows, ordered by key."""
    keys = {_key(p) for p in model.pods_on_node(settings.node)} | set(known)
    actions: list[Action] = []
    unserved: list[tuple[PodKey, str]] = []
    for key in sorted(keys):
        action = decide_pod(model, key, known.get(key), settings,
                            ztunnel_connected=ztunnel_connected)
        if action is not None:
            actions.append(action)
            continue
        pod = model.get("Pod", *key)
        if key not in known and isinstance(pod, Pod):
            want, _ = desired(model, pod, settings)
            if want:
                unserved.append((key, "its network namespace is unknown (no CNI ADD since the "
                                      "agent started, not discoverable, or its sandbox was "
                                      "deleted)"))
    return Plan(tuple(actions), tuple(unserved))


def wanted_annotation(state: PodState) -> str | None:
    """The `ambient.istio.io/redirection` value for a state (None: no annotation)."""
    return {PodState.ENROLLED: ENABLED, PodState.PENDING: PENDING_VALUE}.get(state)


def annotation_fixes(model: ClusterModel, known: Mapping[PodKey, KnownPod]
                     ) -> tuple[tuple[PodKey, str | None], ...]:
    """(pod, value) for each known pod whose annotation in the model differs from its state.
    UNKNOWN pods are skipped (the pending action settles them first)."""
    fixes = []
    for key, pod_known in sorted(known.items()):
        pod = model.get("Pod", *key)
        if pod is None or pod_known.state is PodState.UNKNOWN:
            continue
        want = wanted_annotation(pod_known.state)
        if pod.annotations.get(REDIRECTION_ANNOTATION) != want:
            fixes.append((key, want))
    return tuple(fixes)
