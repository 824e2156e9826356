"""Text and JSON for a `WhyResult`, naming the AuthorizationPolicy rule (or PeerAuthentication)
behind the deciding ztunnel policy.

Called by the `why` command. Pure. ztunnel's deciding `group` is an index into the converted
policy, which is not always the AuthorizationPolicy's rule index: istiod drops ALLOW rules that
use HTTP attributes. `policy_origin` maps it back with the same conversion
(`istiod_lite.translate.authorization.convert_rule`), and names the PeerAuthentication behind
the synthetic STRICT policies (`istio_converted_static_strict`,
`converted_peer_authentication_<name>`). With live state (no manifests) it names the ztunnel
policy and group only, and says where the state came from (`MeshState.source`). When the
waypoint's L7 evaluation denied (why_l7.py), the deciding L7 policy is what is named; the L7
decision is printed on its own line and under `l7` in JSON (or why it was not evaluated).
"""

from __future__ import annotations

from typing import Any

from ambientctl.debug import why_l7
from ambientctl.debug.state import MeshState, effective_peer_authentication
from ambientctl.debug.why import WhyResult
from istiod_lite.translate.authorization import convert_rule
from istiod_lite.translate.peer_authentication import CONVERTED_PREFIX, STATIC_STRICT_NAME
from meshcore.model import AuthorizationPolicy
from meshcore.protos.istio.security import Action


def rule_index(pol: AuthorizationPolicy, group: int) -> int | None:
    """The `spec.rules` index of converted group `group` (ALLOW rules with HTTP attributes are
    dropped by the conversion, shifting the groups)."""
    action = Action(Action.DENY if pol.action == "DENY" else Action.ALLOW)
    kept = [i for i, rule in enumerate(pol.rules)
            if convert_rule(action, rule, pol.namespace)[0] is not None]
    return kept[group] if 0 <= group < len(kept) else None


def policy_origin(state: MeshState, key: str, group: int | None, destination: tuple[str, str]
                  ) -> str:
    """What the user wrote that became ztunnel policy `key` (group `group`)."""
    ns, _, name = key.partition("/")
    if key == f"{state.mesh.root_namespace}/{STATIC_STRICT_NAME}":
        pa = None if state.model is None else effective_peer_authentication(
            state.model, state.mesh, *destination)
        by = f" from PeerAuthentication {pa.namespace}/{pa.name}" if pa is not None else ""
        return f"mTLS STRICT{by} (ztunnel policy {key}: deny connections without a peer identity)"
    if name.startswith(CONVERTED_PREFIX):
        return (f"PeerAuthentication {ns}/{name.removeprefix(CONVERTED_PREFIX)} portLevelMtls "
                f"(ztunnel policy {key})")
    if state.model is None:  # live: ztunnel holds the converted policy, not spec.rules
        at = f" group {group}" if group is not None else ""
        return (f"AuthorizationPolicy {key} (ztunnel policy{at}; the spec.rules index needs "
                "the manifests: -f)")
    pol = state.model.get("AuthorizationPolicy", ns, name)
    if isinstance(pol, AuthorizationPolicy) and group is not None:
        index = rule_index(pol, group)
        if index is not None:
            return f"AuthorizationPolicy {key} spec.rules[{index}]"
    return f"AuthorizationPolicy {key}"


def decided_by(state: MeshState, result: WhyResult) -> str | None:
    if result.l7 is not None and not result.l7.decision.allowed:
        return result.l7.decided_by()
    if result.explanation is None or result.explanation.decision.policy is None:
        return None
    d = result.explanation.decision
    dst = result.explanation.connection.destination
    return policy_origin(state, d.policy or "", d.group, (dst.namespace, dst.name))


def render(state: MeshState, result: WhyResult) -> str:
    src = result.source
    identity = (f"identity {src.workload.identity}" if src.workload is not None
                else "outside the mesh")
    verdict = {"allow": "ALLOW", "deny": "DENY", "fail": "FAIL"}[result.outcome]
    lines = [f"state:       {state.source or 'given'}",
             f"source:      {src.label} {src.ip}, {identity}"
             f"{', captured' if src.captured else ', not captured'}",
             f"destination: {result.destination}",
             f"verdict:     {verdict}: {result.reason}"]
    if (by := decided_by(state, result)) is not None:
        lines.append(f"decided by:  {by}")
    if result.l7 is not None:
        a = result.l7.attributes
        headers = "".join(f", {n}: {v}" for n, v in a.headers)
        lines.append(f"L7 request:  {a.method} {a.path}, host {a.host}{headers}")
        lines.append(f"L7 verdict:  {result.l7.summary()}")
        applied = ", ".join(f"{p.key} ({p.action.value}{', dry-run' if p.dry_run else ''})"
                            for p in result.l7.applicable)
        lines.append(f"L7 policies: {applied or 'none applies at this waypoint'}")
        lines += [f"L7 dry-run:  {seen}" for seen in result.l7.decision.dry_run]
    lines.append(f"transport:   {result.transport}")
    if result.enforced_at:
        peer = result.peer_identity or "(no peer identity: plaintext)"
        lines.append(f"enforced at: {result.enforced_at}, peer {peer}")
    lines.append("path:")
    lines += [f"  - {step}" for step in result.steps]
    lines += [f"note: {note}" for note in result.notes]
    if result.explanation is not None:
        lines += ["", "ztunnel's evaluation:"]
        lines += ["  " + line for line in result.explanation.render().splitlines()]
    return "\n".join(lines)


def to_dict(state: MeshState, result: WhyResult) -> dict[str, Any]:
    src = result.source
    wp = result.waypoint
    return {
        "state": state.source,
        "source": {"name": src.label, "ip": str(src.ip), "captured": src.captured,
                   "identity": str(src.workload.identity) if src.workload else None},
        "destination": result.destination,
        "outcome": result.outcome,
        "allowed": result.allowed,
        "reason": result.reason,
        "decided_by": decided_by(state, result),
        "policy": result.explanation.decision.policy if result.explanation else None,
        "transport": result.transport,
        "enforced_at": result.enforced_at,
        "peer_identity": str(result.peer_identity) if result.peer_identity else None,
        "path": list(result.steps),
        "notes": list(result.notes),
        "waypoint": None if wp is None else {
            "gateway": wp.gateway, "pod": f"{wp.workload.namespace}/{wp.workload.name}",
            "identity": str(wp.workload.identity), "l7_policies": list(wp.l7_policies)},
        "l7": why_l7.to_dict(result.l7) if result.l7 is not None else (
            {"evaluated": False, "reason": result.l7_skipped} if result.l7_skipped else None),
        "evaluation": result.explanation.to_dict() if result.explanation else None,
    }
