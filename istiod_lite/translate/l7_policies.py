"""AuthorizationPolicy with targetRefs → `ambient.waypoint.v1.L7Authorization` for waypoints.

Called by translator.py (`translate_l7_policies(model, mesh)`); hands `{"<ns>/<name>":
message}` for `L7_AUTHORIZATION_TYPE_URL` plus status messages. Pure and deterministic.
The evaluator is waypoint/policy; docs/waypoint.md states the semantics.

Rules (AMBIENT-INTERNALS §6.4, §7.4; REFERENCE §7):
* only policies with targetRefs (selector policies are ztunnel's: translate/authorization.py);
* targets: `Gateway` (group gateway.networking.k8s.io, same namespace) naming an istio-waypoint
  Gateway ⇒ `waypoints`; `Service` (group "" / core, same namespace) that exists ⇒
  `service_hostnames`; `GatewayClass istio-waypoint` from the root namespace ⇒
  `all_waypoints`. Anything else gets a status message; a policy with no usable target is
  not sent;
* CUSTOM (ext_authz) and AUDIT are not supported: not sent, `UnsupportedValue`;
* `istio.io/dry-run: "true"` ⇒ `dry_run` (the proxy logs what it would do, enforces nothing);
* strings: `*` ⇒ presence, `x*` prefix, `*x` suffix, else exact; paths containing `{*}` or
  `{**}` ⇒ TEMPLATE (validated: only those operators, `{**}` last);
* what the waypoint cannot evaluate (an invalid path template, an unknown `when` key) fails
  closed like ztunnel's L7 split: in ALLOW the rule is dropped (matches nothing), in DENY the
  offending value/condition is replaced by "matches anything" (broader deny); with a status.
"""

from __future__ import annotations

import re

from istiod_lite.translate.authorization import DRY_RUN_ANNOTATION
from istiod_lite.translate.mesh import MeshConfig, StatusMessage, service_hostname
from istiod_lite.translate.waypoints import find_waypoints
from meshcore.model import AuthorizationPolicy, ClusterModel, Service
from meshcore.model.gateway import WAYPOINT_CLASS
from meshcore.model.security import Condition, Operation, Rule, Source
from meshcore.protos.ambient.waypoint import v1 as pb

L7_AUTHORIZATION_TYPE_URL = "type.googleapis.com/ambient.waypoint.v1.L7Authorization"
_GATEWAY_GROUP = "gateway.networking.k8s.io"
_HEADER_KEY = re.compile(r"^request\.headers\[[^\[\]]+\]$")
_AUTH_KEY = re.compile(r"^request\.auth\.(principal|audiences|presenter|claims\[.+\])$")
SUPPORTED_WHEN_KEYS = frozenset({
    "source.ip", "remote.ip", "source.namespace", "source.principal", "destination.ip",
    "destination.port"})


class _Unsupported(Exception):
    """A value the waypoint cannot evaluate (message says why)."""


def string_match(value: str, *, path: bool = False) -> pb.StringMatch:
    """Istio's string forms; `path=True` also recognises `{*}` / `{**}` templates."""
    if path and ("{*}" in value or "{**}" in value):
        validate_template(value)
        return pb.StringMatch(kind=pb.StringMatchKind.MATCH_TEMPLATE, value=value)
    if value == "*":
        return pb.StringMatch(kind=pb.StringMatchKind.MATCH_PRESENCE)
    if value.startswith("*"):
        return pb.StringMatch(kind=pb.StringMatchKind.MATCH_SUFFIX, value=value[1:])
    if value.endswith("*"):
        return pb.StringMatch(kind=pb.StringMatchKind.MATCH_PREFIX, value=value[:-1])
    return pb.StringMatch(kind=pb.StringMatchKind.MATCH_EXACT, value=value)


def validate_template(value: str) -> None:
    """Istio/Envoy URI template rules we implement: operators `{*}` and `{**}` only, `{**}`
    at most once and after every other operator, the path starting with `/`."""
    if not value.startswith("/"):
        raise _Unsupported(f'path template "{value}" must start with "/"')
    ops = re.findall(r"\{[^{}]*\}", value)
    rest = re.sub(r"\{[^{}]*\}", "", value)
    if "{" in rest or "}" in rest or any(op not in ("{*}", "{**}") for op in ops):
        raise _Unsupported(f'path template "{value}" uses operators other than {{*}} and {{**}}')
    if "{**}" in ops and ops.index("{**}") != len(ops) - 1:
        raise _Unsupported(f'path template "{value}": {{**}} must be the last operator')


_ANYTHING = pb.StringMatch(kind=pb.StringMatchKind.MATCH_PREFIX, value="")
_NOTHING = pb.StringMatch(kind=pb.StringMatchKind.MATCH_EXACT, value="")  # paths start with /


def _paths(values: tuple[str, ...], stand_in: pb.StringMatch | None, field: str,
           notes: list[str]) -> list[pb.StringMatch]:
    """Path matches; an invalid one is replaced by `stand_in`, or drops the rule if None."""
    out = []
    for v in values:
        try:
            out.append(string_match(v, path=True))
        except _Unsupported as e:
            notes.append(f"{field}: {e}")
            if stand_in is None:
                raise
            out.append(stand_in)
    return out


def _source(src: Source) -> pb.L7Source:
    return pb.L7Source(
        principals=[string_match(v) for v in src.principals],
        not_principals=[string_match(v) for v in src.not_principals],
        namespaces=[string_match(v) for v in src.namespaces],
        not_namespaces=[string_match(v) for v in src.not_namespaces],
        service_accounts=list(src.service_accounts),
        not_service_accounts=list(src.not_service_accounts),
        request_principals=[string_match(v) for v in src.request_principals],
        not_request_principals=[string_match(v) for v in src.not_request_principals],
        ip_blocks=list(src.ip_blocks), not_ip_blocks=list(src.not_ip_blocks),
        remote_ip_blocks=list(src.remote_ip_blocks),
        not_remote_ip_blocks=list(src.not_remote_ip_blocks))


def _operation(op: Operation, deny: bool, field: str, notes: list[str]) -> pb.L7Operation:
    return pb.L7Operation(
        hosts=[string_match(v) for v in op.hosts],
        not_hosts=[string_match(v) for v in op.not_hosts],
        ports=[int(p) for p in op.ports], not_ports=[int(p) for p in op.not_ports],
        methods=[string_match(v) for v in op.methods],
        not_methods=[string_match(v) for v in op.not_methods],
        # DENY fails closed: a bad `paths` value matches anything, a bad `notPaths` value
        # excludes nothing. ALLOW drops the rule.
        paths=_paths(op.paths, _ANYTHING if deny else None, f"{field}.paths", notes),
        not_paths=_paths(op.not_paths, _NOTHING if deny else None, f"{field}.notPaths", notes))


def _condition(cond: Condition, deny: bool, field: str, notes: list[str]) -> pb.L7Condition | None:
    key = cond.key
    if not (key in SUPPORTED_WHEN_KEYS or _HEADER_KEY.match(key) or _AUTH_KEY.match(key)):
        notes.append(f"{field}: when key {key!r} is not supported by ambient-py waypoints")
        if not deny:
            raise _Unsupported(key)
        return None  # DENY: the condition is dropped, the rule denies more
    return pb.L7Condition(key=key, values=[string_match(v) for v in cond.values],
                          not_values=[string_match(v) for v in cond.not_values])


def convert_rule(rule: Rule, index: int, deny: bool, notes: list[str]) -> pb.L7Rule | None:
    """The L7Rule, or None when an ALLOW rule must be dropped."""
    field = f"spec.rules[{index}]"
    try:
        out = pb.L7Rule(from_=[_source(s) for s in rule.from_],
                        to=[_operation(op, deny, f"{field}.to[{j}].operation", notes)
                            for j, op in enumerate(rule.to)])
        for j, cond in enumerate(rule.when):
            if (c := _condition(cond, deny, f"{field}.when[{j}]", notes)) is not None:
                out.when.append(c)
        return out
    except _Unsupported:
        return None


def _targets(pol: AuthorizationPolicy, model: ClusterModel, mesh: MeshConfig,
             waypoints: set[tuple[str, str]], out: pb.L7Authorization,
             statuses: list[StatusMessage]) -> None:
    for i, ref in enumerate(pol.target_refs):
        field = f"spec.targetRefs[{i}]"
        ns = ref.namespace or pol.namespace

        def note(reason: str, message: str, field: str = field) -> None:
            statuses.append(StatusMessage("AuthorizationPolicy", pol.namespace, pol.name,
                                          reason, message, field))
        if ns != pol.namespace:
            note("UnsupportedValue", "targetRefs must be in the policy's namespace")
        elif ref.kind == "Gateway" and ref.group == _GATEWAY_GROUP:
            if (ns, ref.name) in waypoints:
                out.waypoints.append(f"{ns}/{ref.name}")
            else:
                note("NotFound", f"waypoint Gateway {ns}/{ref.name} not found")
        elif ref.kind == "Service" and ref.group in ("", "core"):
            if isinstance(model.get("Service", ns, ref.name), Service):
                out.service_hostnames.append(service_hostname(mesh, ns, ref.name))
            else:
                note("NotFound", f"Service {ns}/{ref.name} not found")
        elif ref.kind == "GatewayClass" and ref.group == _GATEWAY_GROUP \
                and ref.name == WAYPOINT_CLASS and pol.namespace == mesh.root_namespace:
            out.all_waypoints = True
        else:
            note("UnsupportedValue", f"target {ref.group or 'core'}/{ref.kind} {ref.name} is "
                 "not supported (Gateway istio-waypoint, Service, or GatewayClass "
                 "istio-waypoint from the root namespace)")


def convert_l7_policy(pol: AuthorizationPolicy, model: ClusterModel, mesh: MeshConfig,
                      waypoints: set[tuple[str, str]],
                      ) -> tuple[pb.L7Authorization | None, list[StatusMessage]]:
    statuses: list[StatusMessage] = []
    if not pol.target_refs:
        return None, statuses
    if pol.action not in ("ALLOW", "DENY"):
        statuses.append(StatusMessage(
            "AuthorizationPolicy", pol.namespace, pol.name, "UnsupportedValue",
            f"ambient-py waypoints do not support the {pol.action} action", "spec.action"))
        return None, statuses
    deny = pol.action == "DENY"
    out = pb.L7Authorization(
        name=pol.name, namespace=pol.namespace,
        action=pb.AuthorizationAction.DENY if deny else pb.AuthorizationAction.ALLOW,
        dry_run=pol.annotations.get(DRY_RUN_ANNOTATION, "").lower() in ("true", "1", "t"))
    _targets(pol, model, mesh, waypoints, out, statuses)
    if not (out.waypoints or out.service_hostnames or out.all_waypoints):
        return None, statuses
    notes: list[str] = []
    for i, rule in enumerate(pol.rules):
        converted = convert_rule(rule, i, deny, notes)
        if converted is not None:
            out.rules.append(converted)
    if notes:
        effect = ("the offending parts match anything, so this DENY is broader than written"
                  if deny else "rules using them are dropped, so this ALLOW is stricter")
        statuses.append(StatusMessage("AuthorizationPolicy", pol.namespace, pol.name,
                                      "UnsupportedValue", "; ".join(notes) + f" ({effect})",
                                      "spec.rules"))
    return out, statuses


def translate_l7_policies(model: ClusterModel, mesh: MeshConfig | None = None,
                          ) -> tuple[dict[str, pb.L7Authorization], list[StatusMessage]]:
    """L7Authorization resources keyed by `<ns>/<name>`, and status messages."""
    mesh = mesh or MeshConfig()
    waypoints = set(find_waypoints(model, mesh))
    out: dict[str, pb.L7Authorization] = {}
    statuses: list[StatusMessage] = []
    for pol in model.sorted("AuthorizationPolicy"):
        assert isinstance(pol, AuthorizationPolicy)
        converted, notes = convert_l7_policy(pol, model, mesh, waypoints)
        statuses.extend(notes)
        if converted is not None:
            out[f"{pol.namespace}/{pol.name}"] = converted
    return out, statuses
