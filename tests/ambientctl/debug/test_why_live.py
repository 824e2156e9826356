"""`ambientctl why` from a live ztunnel: the real admin app serving a real store over loopback,
its /config_dump read back into `meshcore.wds` types, and the same verdicts as the folder mode."""

from __future__ import annotations

import copy
import functools
import io
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from ambientctl.debug import live, main
from ambientctl.debug.errors import NotFoundError, SourceError
from ambientctl.debug.state import MeshState, load_folder
from ambientctl.debug.why import WhyResult, why
from ambientctl.debug.why_l7 import HttpRequest
from ambientctl.debug.why_render import decided_by, render, to_dict
from istiod_lite.translate import MeshConfig
from meshcore.admin import serve_admin
from tests.ambientctl.debug.mesh import Nodes, make_folder, pod
from tests.ambientctl.debug.test_why import (
    ALLOW_CLIENT,
    ALLOW_WAYPOINT,
    DENY_IPBLOCK,
    DENY_OPS_NS,
    L7_POLICY,
    MATRIX,
    USE_WAYPOINT,
    WAYPOINT,
    WAYPOINT_POD,
    ap,
    pa,
)
from ztunnel.admin import AdminView, admin_routes, config_dump

pytestmark = pytest.mark.trio

# Every Match field, every StringMatch kind, a dry-run policy: the dump must carry them all.
EVERY_FIELD = ap("every-field", """  action: DENY
  rules:
  - from: [{source: {principals: ["*", "cluster.local/ns/x/*"], notPrincipals: ["*/sa/evil"],
                     namespaces: [ops], notNamespaces: [kube-system],
                     ipBlocks: [10.2.0.0/16, "fd00::/8"], notIpBlocks: [10.2.9.0/24]}}]
    to: [{operation: {ports: ["8080"], notPorts: ["9090"]}}]
    when: [{key: destination.ip, values: [10.1.0.0/16]},
           {key: destination.ip, notValues: [10.1.0.99]},
           {key: source.principal, values: [cluster.local/ns/ops/sa/tool]}]
""")
DRY_RUN = ap("dry", """  action: DENY
  rules: [{from: [{source: {namespaces: [shop]}}]}]
""").replace("metadata: {name: dry, namespace: shop}",
             "metadata: {name: dry, namespace: shop, annotations: "
             "{istio.io/dry-run: \"true\"}}")
MESH = MeshConfig(enable_dry_run=True)


def _view(state: MeshState) -> AdminView:
    return AdminView(node="node-a", snapshot=lambda: state.snapshot, certificates=list,
                     xds=lambda: {"address": "istiod:15010"})


async def _in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[MeshState], Any]]:
    """Start ztunnel's real admin app on 127.0.0.1 for a state; yields a starter → port."""
    async with trio.open_nursery() as nursery:
        async def start(state: MeshState) -> int:
            port: int = await nursery.start(serve_admin, admin_routes(_view(state)),
                                            "127.0.0.1", 0)
            return port

        yield start
        nursery.cancel_scope.cancel()


def _same(a: WhyResult, b: WhyResult) -> tuple[Any, ...]:
    """What both modes must agree on (the deciding policy, how it got there)."""
    ex_a, ex_b = a.explanation, b.explanation
    return ((a.outcome, a.reason, a.transport, a.enforced_at, a.peer_identity, a.steps,
             a.source, a.destination),
            (b.outcome, b.reason, b.transport, b.enforced_at, b.peer_identity, b.steps,
             b.source, b.destination),
            (ex_a.decision if ex_a else None), (ex_b.decision if ex_b else None),
            (ex_a.render() if ex_a else None), (ex_b.render() if ex_b else None))


async def test_dump_reads_back_into_the_same_frozen_state(
        tmp_path: Path, serve: Callable[[MeshState], Any]) -> None:
    """Workloads, services (with a waypoint) and policies with every field come back equal."""
    folder = make_folder(tmp_path / "m", EVERY_FIELD, DRY_RUN, DENY_IPBLOCK, WAYPOINT,
                         WAYPOINT_POD, pa("strict", "STRICT"))
    (Path(folder) / "service.yaml").write_text(USE_WAYPOINT)
    state = load_folder(folder, MESH)
    port = await serve(state)
    got = await _in_thread(live.load_live, "127.0.0.1", port, MESH)
    assert state.snapshot.policies["shop/dry"].dry_run
    assert dict(got.snapshot.workloads) == dict(state.snapshot.workloads)
    assert dict(got.snapshot.services) == dict(state.snapshot.services)
    assert dict(got.snapshot.policies) == dict(state.snapshot.policies)
    assert dict(got.snapshot.endpoints) == dict(state.snapshot.endpoints)
    assert dict(got.snapshot.services_by_vip) == dict(state.snapshot.services_by_vip)
    assert got.model is None
    assert got.source == (f"live: ztunnel on node node-a (admin 127.0.0.1:{port} /config_dump, "
                          f"generation {state.snapshot.generation})")


@pytest.mark.parametrize(("manifests", "src", "dst", "outcome", "policy", "origin"), MATRIX)
async def test_live_and_folder_agree_on_the_matrix(
        tmp_path: Path, serve: Callable[[MeshState], Any], manifests: list[str], src: str,
        dst: str, outcome: str, policy: str | None, origin: str | None) -> None:
    """Every case of the folder matrix gets the same verdict, path and evaluation live."""
    folder_state = load_folder(make_folder(tmp_path / "m", *manifests))
    port = await serve(folder_state)
    live_state = await _in_thread(live.load_live, "127.0.0.1", port, MeshConfig())
    from_folder, from_live = why(folder_state, src, dst), why(live_state, src, dst)
    a_fields, b_fields, a_dec, b_dec, a_ev, b_ev = _same(from_folder, from_live)
    assert a_fields == b_fields, render(live_state, from_live)
    assert (a_dec, a_ev) == (b_dec, b_ev)
    assert from_live.outcome == outcome
    got = from_live.explanation.decision.policy if from_live.explanation else None
    assert got == policy


@pytest.mark.parametrize(("policy", "outcome"), [
    pytest.param(ALLOW_WAYPOINT, "allow", id="allow-waypoint-identity"),
    pytest.param(ALLOW_CLIENT, "deny", id="client-identity-not-seen-after-waypoint"),
])
async def test_waypoint_path_live(tmp_path: Path, serve: Callable[[MeshState], Any],
                                  policy: str, outcome: str) -> None:
    """Through a waypoint the live verdict matches; L7 policies are said to be the waypoint's."""
    folder = make_folder(tmp_path / "m", WAYPOINT, WAYPOINT_POD, L7_POLICY, policy)
    (Path(folder) / "service.yaml").write_text(USE_WAYPOINT)
    folder_state = load_folder(folder)
    live_state = await _in_thread(live.load_live, "127.0.0.1", await serve(folder_state),
                                  MeshConfig())
    from_folder, from_live = why(folder_state, "shop/client", "shop/web:80"), why(
        live_state, "shop/client", "shop/web:80")
    assert from_live.outcome == from_folder.outcome == outcome
    assert from_live.steps == from_folder.steps
    assert from_live.waypoint is not None and from_live.waypoint.gateway == "shop/waypoint"
    assert from_live.waypoint.l7_policies == ()
    assert any("not ztunnel's (-f MANIFEST_DIR lists them)" in n for n in from_live.notes)
    assert to_dict(live_state, from_live)["waypoint"]["l7_policies"] == []


async def test_request_options_live_say_l7_is_not_evaluated(
        tmp_path: Path, serve: Callable[[MeshState], Any]) -> None:
    """With --method/--path in live mode the L7 policies are not guessed: the result says they
    are the waypoint's configuration, while the folder evaluates the same request."""
    deny_get = ap("no-get", """  targetRefs: [{kind: Service, group: "", name: web}]
  action: DENY
  rules: [{to: [{operation: {methods: [GET]}}]}]
""")
    folder = make_folder(tmp_path / "m", WAYPOINT, WAYPOINT_POD, ALLOW_WAYPOINT, deny_get)
    (Path(folder) / "service.yaml").write_text(USE_WAYPOINT)
    folder_state = load_folder(folder)
    live_state = await _in_thread(live.load_live, "127.0.0.1", await serve(folder_state),
                                  MeshConfig())
    request = HttpRequest("GET", "/")
    from_folder = why(folder_state, "shop/client", "shop/web:80", request=request)
    from_live = why(live_state, "shop/client", "shop/web:80", request=request)
    assert from_folder.outcome == "deny" and from_folder.l7 is not None
    assert from_live.l7 is None and from_live.outcome == "allow"  # L4 only, and said so
    assert from_live.l7_skipped is not None and "not ztunnel's" in from_live.l7_skipped
    assert "L4 only" in from_live.reason
    assert to_dict(live_state, from_live)["l7"] == {"evaluated": False,
                                                    "reason": from_live.l7_skipped}


async def test_origin_without_manifests(tmp_path: Path,
                                        serve: Callable[[MeshState], Any]) -> None:
    """Live, the deciding policy is named with ztunnel's group, not a guessed spec.rules."""
    state = load_folder(make_folder(tmp_path / "m", DENY_OPS_NS, pa("strict", "STRICT")))
    live_state = await _in_thread(live.load_live, "127.0.0.1", await serve(state), MeshConfig())
    deny = why(live_state, "ops/tool", "shop/web-1:8080")
    assert decided_by(live_state, deny) == (
        "AuthorizationPolicy shop/deny-ops (ztunnel policy group 0; the spec.rules index "
        "needs the manifests: -f)")
    strict = why(live_state, "legacy/old", "shop/web-1:8080")
    assert (decided_by(live_state, strict) or "").startswith(
        "mTLS STRICT (ztunnel policy istio-system/istio_converted_static_strict")


async def test_unknown_names_live(tmp_path: Path, serve: Callable[[MeshState], Any]) -> None:
    """Names are looked up in ztunnel's workloads and services; misses list what is there."""
    extra = pod("shop", "no-ip", "", sa="x")
    state = load_folder(make_folder(tmp_path / "m", extra))
    live_state = await _in_thread(live.load_live, "127.0.0.1", await serve(state), MeshConfig())
    with pytest.raises(NotFoundError, match=r"no workload shop/nope .* \(workloads in shop: "
                       r"client, web-1, web-2\)"):
        why(live_state, "shop/nope", "shop/web:80")
    with pytest.raises(NotFoundError, match="no workload shop/no-ip with an IP"):
        why(live_state, "shop/no-ip", "shop/web:80")
    with pytest.raises(NotFoundError, match="no pod or service shop/nothing"):
        why(live_state, "shop/client", "shop/nothing:80")
    assert why(live_state, "shop/client", "svc/shop/web:80").outcome == "allow"


async def test_cli_names_the_source(tmp_path: Path, serve: Callable[[MeshState], Any]) -> None:
    """`why --ztunnel-admin` / `--node` print where the state came from; -f says the folder."""
    folder = make_folder(tmp_path / "m", ALLOW_CLIENT)
    port = await serve(load_folder(folder))
    out = io.StringIO()
    code = await _in_thread(main, ["why", "ops/tool", "shop/web:80", "--ztunnel-admin",
                                   f"127.0.0.1:{port}"], out=out)
    assert code == 0
    lines = out.getvalue().splitlines()
    assert lines[0] == (f"state:       live: ztunnel on node node-a (admin 127.0.0.1:{port} "
                        "/config_dump, generation 2)")
    assert "verdict:     DENY: allow policies exist, but none allowed" in lines
    out = io.StringIO()
    code = await _in_thread(main, ["why", "shop/client", "shop/web:80", "--node", "node-a",
                                   "-o", "json"], out=out, resolver=Nodes(port))
    data = json.loads(out.getvalue())
    assert code == 0 and (data["allowed"], data["policy"]) == (True, "shop/allow-client")
    assert data["state"].startswith("live: ztunnel on node node-a")
    out = io.StringIO()
    assert await _in_thread(main, ["why", "shop/client", "shop/web:80", "-f", folder],
                            out=out) == 0
    assert out.getvalue().splitlines()[0] == (
        f"state:       manifest folder {folder}, translated as istiod-lite would")
    err = io.StringIO()
    assert await _in_thread(main, ["why", "shop/client", "shop/web:80", "--admin",
                                   f"127.0.0.1:{port}", "--assume-captured"], err=err) == 2
    assert "--assume-captured applies to -f MANIFEST_DIR only" in err.getvalue()


async def test_no_source_asks_the_resolver_for_the_source_node(
        tmp_path: Path, serve: Callable[[MeshState], Any]) -> None:
    """Without -f/--ztunnel-admin/--node the ztunnel of SRC's node is read (sandbox); outside
    the sandbox that is an error saying what to pass; two sources are a usage error."""
    folder = make_folder(tmp_path / "m", ALLOW_CLIENT)
    port = await serve(load_folder(folder))
    out = io.StringIO()
    assert await _in_thread(main, ["why", "shop/client", "shop/web:80", "-o", "json"], out=out,
                            resolver=Nodes(port)) == 0
    assert json.loads(out.getvalue())["state"].startswith("live: ztunnel on node node-a")
    err = io.StringIO()
    assert await _in_thread(main, ["why", "ops/tool", "shop/web:80"], err=err,
                            resolver=Nodes(port)) == 2
    assert "pod 'ops/tool' is not in the sandbox" in err.getvalue()
    err = io.StringIO()
    assert await _in_thread(main, ["why", "shop/client", "shop/web:80"], err=err) == 2
    assert "say where the state comes from: -f MANIFEST_DIR, or --ztunnel-admin" in \
        err.getvalue()
    with pytest.raises(SystemExit) as exc:
        await _in_thread(main, ["why", "a/b", "c/d:80", "-f", folder, "--ztunnel-admin",
                                "127.0.0.1:1"], err=io.StringIO())
    assert exc.value.code == 2


def _dump(tmp_path: Path) -> dict[str, Any]:
    state = load_folder(make_folder(tmp_path / "m", EVERY_FIELD, pa("strict", "STRICT")), MESH)
    return json.loads(json.dumps(config_dump(_view(state))))


@pytest.mark.parametrize(("edit", "message"), [
    pytest.param(lambda d: d.pop("policies"), "no policies section", id="no-section"),
    pytest.param(lambda d: d["workloads"][0].pop("identity"),
                 "workload 'Kubernetes//Pod/legacy/old' lacks identity", id="no-identity"),
    pytest.param(lambda d: d["services"][0]["ports"][0].pop("target_port"),
                 r"service 'shop/web.shop.svc.cluster.local'.ports\[0\] lacks target_port",
                 id="no-target-port"),
    pytest.param(lambda d: d["policies"][0]["groups"][0]["rules"][0]["matches"][0].update(
        principals=[{"kind": "REGEX", "value": "x"}]),
        r"'REGEX' is not a StringMatchKind \(one of EXACT, PREFIX, SUFFIX, PRESENCE\)",
        id="unknown-enum"),
    pytest.param(lambda d: d["workloads"][0].update(addresses=["10.0.0.300"]),
                 "'10.0.0.300' is not an IP address", id="bad-ip"),
    pytest.param(lambda d: d["workloads"][0].update(
        identity="spiffe://cluster.local/ns/other/sa/old"),
        "is not in namespace 'legacy'; the workload API cannot express that",
        id="identity-elsewhere"),
])
async def test_an_incomplete_dump_is_refused_by_name(
        tmp_path: Path, edit: Callable[[dict[str, Any]], Any], message: str) -> None:
    """A dump missing what the rebuild needs is a SourceError naming the entry and field."""
    dump = _dump(tmp_path)
    assert live.state_from_dump(copy.deepcopy(dump), MESH, where="x").snapshot.policies
    edit(dump)
    with pytest.raises(SourceError, match=message):
        live.state_from_dump(dump, MESH, where="x")


async def test_a_dump_the_gates_reject_is_a_source_error(tmp_path: Path) -> None:
    """Values the from_proto gates refuse (a port out of range) surface as SourceError."""
    dump = _dump(tmp_path)
    dump["services"][0]["ports"][0]["service_port"] = 70000
    with pytest.raises(SourceError, match="does not convert back into ztunnel's types"):
        live.state_from_dump(dump, MESH, where="127.0.0.1:15000")
