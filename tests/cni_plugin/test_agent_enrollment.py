"""The node agent's pure enrollment decisions (cni_plugin.agent.enrollment) as case tables."""

from __future__ import annotations

from typing import Any

import pytest

from cni_plugin.agent import enrollment as E
from cni_plugin.agent.enrollment import AgentSettings, KnownPod, PodState
from cni_plugin.redirect.rules import RedirectConfig
from meshcore.model import ClusterModel, parse_object

NODE = "node-1"
SETTINGS = AgentSettings(NODE, exclude_namespaces=frozenset({"kube-system"}))
V4 = RedirectConfig()


def _ns(name: str, mode: str | None = None) -> dict[str, Any]:
    labels = {"istio.io/dataplane-mode": mode} if mode else {}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def _pod(name: str, ns: str = "shop", *, node: str = NODE, labels: dict[str, str] | None = None,
         annotations: dict[str, str] | None = None, host_network: bool = False,
         phase: str = "Running", ips: tuple[str, ...] = ("10.0.0.5",)) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}",
                         "labels": labels or {}, "annotations": annotations or {}},
            "spec": {"nodeName": node, "hostNetwork": host_network,
                     "containers": [{"name": "app"}]},
            "status": {"phase": phase, "podIPs": [{"ip": ip} for ip in ips]}}


def _model(*docs: dict[str, Any]) -> ClusterModel:
    return ClusterModel.from_objects(parse_object(d) for d in docs)


AMBIENT_NS = _ns("shop", "ambient")
PLAIN_NS = _ns("shop")
KEY = ("shop", "web")


def _known(state: PodState, config: RedirectConfig | None = V4) -> KnownPod:
    return KnownPod("uid-web", "/run/netns/web", state, config)


@pytest.mark.parametrize(("docs", "known", "connected", "expected"), [
    pytest.param([AMBIENT_NS, _pod("web")], _known(PodState.UNKNOWN), False, E.Enroll,
                 id="ns-label-unknown-enroll"),
    pytest.param([AMBIENT_NS, _pod("web")], _known(PodState.OUT, None), True, E.Enroll,
                 id="ns-label-out-enroll"),
    pytest.param([AMBIENT_NS, _pod("web")], _known(PodState.ENROLLED), True, E.Keep,
                 id="enrolled-same-config-keep"),
    pytest.param([AMBIENT_NS, _pod("web", ips=("fd00::5",))], _known(PodState.ENROLLED), True,
                 E.Enroll, id="enrolled-config-changed-reinstall"),
    pytest.param([AMBIENT_NS, _pod("web")], _known(PodState.PENDING), False, E.Keep,
                 id="pending-no-ztunnel-keep"),
    pytest.param([AMBIENT_NS, _pod("web")], _known(PodState.PENDING), True, E.Enroll,
                 id="pending-ztunnel-connected-retry"),
    pytest.param([PLAIN_NS, _pod("web", labels={"istio.io/dataplane-mode": "ambient"})],
                 _known(PodState.OUT, None), True, E.Enroll, id="pod-label-ambient-enroll"),
    pytest.param([AMBIENT_NS, _pod("web", labels={"istio.io/dataplane-mode": "none"})],
                 _known(PodState.ENROLLED), True, E.Unenroll, id="pod-opt-out-unenroll"),
    pytest.param([PLAIN_NS, _pod("web")], _known(PodState.ENROLLED), True, E.Unenroll,
                 id="ns-unlabelled-unenroll"),
    pytest.param([PLAIN_NS, _pod("web")], _known(PodState.UNKNOWN), True, E.Unenroll,
                 id="unknown-not-wanted-cleanup"),
    pytest.param([PLAIN_NS, _pod("web")], _known(PodState.OUT, None), True, E.Keep,
                 id="out-not-wanted-keep"),
    pytest.param([AMBIENT_NS, _pod("web", host_network=True)], _known(PodState.OUT, None), True,
                 E.Keep, id="host-network-never"),
    pytest.param([AMBIENT_NS, _pod("web", annotations={"sidecar.istio.io/status": "{}"})],
                 _known(PodState.ENROLLED), True, E.Unenroll, id="sidecar-never"),
    pytest.param([_ns("kube-system", "ambient"), _pod("web", "kube-system")],
                 _known(PodState.ENROLLED), True, E.Unenroll, id="excluded-namespace-unenroll"),
    pytest.param([_ns("istio-system", "ambient"),
                  _pod("web", "istio-system", labels={"app": "ztunnel"})],
                 _known(PodState.OUT, None), True, E.Keep, id="ztunnel-pod-never"),
    pytest.param([AMBIENT_NS, _pod("web", phase="Succeeded")], _known(PodState.ENROLLED), True,
                 E.Unenroll, id="terminal-pod-forget"),
    pytest.param([AMBIENT_NS], _known(PodState.ENROLLED), True, E.Unenroll, id="deleted-forget"),
    pytest.param([AMBIENT_NS, _pod("web", node="node-2")], _known(PodState.ENROLLED), True,
                 E.Unenroll, id="other-node-forget"),
    pytest.param([AMBIENT_NS, _pod("web", node="")], _known(PodState.UNKNOWN), True, E.Enroll,
                 id="unscheduled-but-announced-enroll"),
    pytest.param([AMBIENT_NS, _pod("web")], None, True, None, id="no-netns-no-action"),
])
def test_decide_pod(docs: list[dict[str, Any]], known: KnownPod | None, connected: bool,
                    expected: type | None) -> None:
    """One pod's action follows labels, pod kind, phase, node and the agent's state."""
    pods = [d for d in docs if d["kind"] == "Pod"]
    key = (pods[0]["metadata"]["namespace"], "web") if pods else KEY
    action = E.decide_pod(_model(*docs), key, known, SETTINGS, ztunnel_connected=connected)
    assert (type(action) if action is not None else None) is expected


def test_forget_and_notify_flags() -> None:
    """Deleted pods are forgotten; ztunnel is told only about pods it may hold."""
    gone = E.decide_pod(_model(AMBIENT_NS), KEY, _known(PodState.ENROLLED), SETTINGS,
                        ztunnel_connected=True)
    assert isinstance(gone, E.Unenroll) and gone.forget and gone.notify_ztunnel
    stale = E.decide_pod(_model(PLAIN_NS, _pod("web")), KEY, _known(PodState.UNKNOWN), SETTINGS,
                         ztunnel_connected=True)
    assert isinstance(stale, E.Unenroll) and not stale.forget and not stale.notify_ztunnel


@pytest.mark.parametrize(("annotations", "ips", "expected"), [
    pytest.param({}, ("10.0.0.5",), RedirectConfig(), id="v4-defaults"),
    pytest.param({}, ("10.0.0.5", "fd00::5"), RedirectConfig(ipv6=True), id="dual-stack"),
    pytest.param({"ambient.istio.io/dns-capture": "true"}, (), RedirectConfig(dns_capture=True),
                 id="dns-capture-annotation"),
    pytest.param({"ambient.istio.io/bypass-inbound-capture": "true"}, (),
                 RedirectConfig(inbound_capture=False), id="ingress-mode"),
])
def test_redirect_config(annotations: dict[str, str], ips: tuple[str, ...],
                         expected: RedirectConfig) -> None:
    """Rule knobs come from the pod's addresses and annotations."""
    pod = parse_object(_pod("web", annotations=annotations, ips=ips))
    assert E.redirect_config(pod, (), SETTINGS) == expected  # type: ignore[arg-type]


def test_plan_lists_unserved_and_orders_actions() -> None:
    """The plan covers the node's pods and known pods; wanted pods without netns are unserved."""
    model = _model(AMBIENT_NS, _pod("a"), _pod("b"), _pod("c", node="node-2"),
                   _pod("d", labels={"istio.io/dataplane-mode": "none"}))
    known = {("shop", "b"): KnownPod("uid-b", "/run/netns/b"),
             ("shop", "d"): KnownPod("uid-d", "/run/netns/d", PodState.ENROLLED, V4)}
    plan = E.plan(model, known, SETTINGS, ztunnel_connected=True)
    assert [(type(a).__name__, a.key) for a in plan.actions] == [
        ("Enroll", ("shop", "b")), ("Unenroll", ("shop", "d"))]
    assert [key for key, _ in plan.unserved] == [("shop", "a")]


@pytest.mark.parametrize(("state", "annotation", "fix"), [
    pytest.param(PodState.ENROLLED, None, "enabled", id="enrolled-missing"),
    pytest.param(PodState.ENROLLED, "enabled", None, id="enrolled-ok"),
    pytest.param(PodState.PENDING, "enabled", "pending", id="pending-overclaimed"),
    pytest.param(PodState.OUT, "enabled", "remove", id="out-stale"),
    pytest.param(PodState.UNKNOWN, "enabled", None, id="unknown-left-alone"),
])
def test_annotation_fixes(state: PodState, annotation: str | None, fix: str | None) -> None:
    """Known pods whose annotation disagrees with their state get a fix."""
    ann = {"ambient.istio.io/redirection": annotation} if annotation else {}
    model = _model(AMBIENT_NS, _pod("web", annotations=ann))
    fixes = E.annotation_fixes(model, {KEY: _known(state)})
    expected = () if fix is None else ((KEY, None if fix == "remove" else fix),)
    assert fixes == expected


def test_workload_uid_fallbacks() -> None:
    """ztunnel gets the pod UID from the model, else from CNI_ARGS, else namespace/name."""
    with_uid = parse_object(_pod("web"))
    no_uid_doc = _pod("web")
    no_uid_doc["metadata"]["uid"] = ""
    no_uid = parse_object(no_uid_doc)
    assert E.workload_uid(with_uid, "cni", KEY) == "uid-web"  # type: ignore[arg-type]
    assert E.workload_uid(no_uid, "cni", KEY) == "cni"  # type: ignore[arg-type]
    assert E.workload_uid(no_uid, "", KEY) == "shop/web"  # type: ignore[arg-type]
