"""`ambientctl sandbox demo`: a scripted tour on a fresh sandbox that proves, with evidence,
what the mesh does, printed as a checklist; exit status 1 if any proof fails.

Who calls it: the CLI (`ambientctl sandbox demo`, `nox -s demo`). It writes its own manifest
folder (below), runs `Sandbox.up`, then each proof in order, each one a function returning its
evidence lines or raising (`ProofFailed` or any error: the proof is FAILED with the message):
1. labelling a namespace enrolls its running pods without restarting them;
2. traffic between two enrolled pods on different nodes is TLS on the underlay (an AF_PACKET
   capture on node1's link: only TLS records to port 15008, never the plaintext marker, which
   the same capture saw in clear before enrollment);
3. the server side sees the client's identity (ztunnel's destination-side metrics) and IP;
4. an AuthorizationPolicy allows one caller and denies another (and `why` agrees);
5. PeerAuthentication STRICT refuses a client outside the mesh that PERMISSIVE let in;
6. a waypoint splits HTTP traffic by weight (a Gateway of class istio-waypoint, an HTTPRoute
   with weights 1:3, 60 requests, all arriving from the waypoint); reported "skipped" only when
   the waypoint program (`waypoint/__main__.py`) is not part of the build.
`down` runs at the end (also on failure) unless `keep=True`.

Invariants: every wait polls a condition with a deadline (`checks.poll_until`); a proof never
passes on missing data (an incomplete capture fails proof 2 instead of proving absence).
"""

from __future__ import annotations

import importlib.util
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ambientctl.sandbox import checks
from ambientctl.sandbox.core import Sandbox
from ambientctl.sandbox.errors import SandboxError
from ambientctl.sandbox.procs import read_pid
from ambientctl.sandbox.wire import Capture, Flow

Say = Callable[[str], None]
TCP_ECHO_VIP = "10.96.0.11"
SHOP_PODS = ["shop/client", "shop/intruder", "shop/echo-1", "shop/echo-2", "shop/tcp-echo"]
CLIENT_ID = "spiffe://cluster.local/ns/shop/sa/client"


def _pod(ns: str, name: str, node: str, sa: str, app: str, label: str, port: int = 0) -> str:
    container = f"{{name: c, ports: [{{containerPort: {port}}}]}}" if port else "{name: c}"
    return (f"---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n"
            f"  labels: {{app: {label}}}\n  annotations: {{sandbox.ambient-py.io/app: {app}}}\n"
            f"spec: {{nodeName: {node}, serviceAccountName: {sa}, containers: [{container}]}}\n")


def _accounts(ns: str, *names: str) -> str:
    return "".join(f"---\napiVersion: v1\nkind: ServiceAccount\n"
                   f"metadata: {{name: {n}, namespace: {ns}}}\n" for n in names)


def _echo_service(labels: str = "") -> str:
    return ("apiVersion: v1\nkind: Service\n"
            f"metadata: {{name: echo, namespace: shop{labels}}}\n"
            "spec: {clusterIP: 10.96.0.10, selector: {app: echo}, ports: [{name: http, port: 80, "
            "targetPort: 8080}]}\n")


def _namespaces(shop_labels: str = "") -> str:
    return "\n---\n".join(f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {n}{lab}}}"
                          for n, lab in (("shop", shop_labels), ("legacy", ""),
                                         ("istio-system", ""))) + "\n"


MANIFESTS = {
    "namespaces.yaml": _namespaces(),
    "shop.yaml": "".join([
        _accounts("shop", "client", "intruder", "echo", "tcp-echo"),
        _pod("shop", "client", "node1", "client", "client", "client"),
        _pod("shop", "intruder", "node1", "intruder", "client", "intruder"),
        _pod("shop", "echo-1", "node1", "echo", "http-echo", "echo, version: v1", 8080),
        _pod("shop", "echo-2", "node2", "echo", "http-echo", "echo, version: v2", 8080),
        _pod("shop", "tcp-echo", "node2", "tcp-echo", "tcp-echo", "tcp-echo", 9000),
        "---\napiVersion: v1\nkind: Service\nmetadata: {name: tcp-echo, namespace: shop}\n"
        f"spec: {{clusterIP: {TCP_ECHO_VIP}, selector: {{app: tcp-echo}}, ports: [{{port: 9000, "
        "targetPort: 9000}]}\n"]),
    "echo-service.yaml": _echo_service(),
    "legacy.yaml": _accounts("legacy", "old") + _pod("legacy", "old", "node1", "old", "client",
                                                     "old"),
}
ALLOW_CLIENT = """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: tcp-echo-allow-client, namespace: shop}
spec:
  selector: {matchLabels: {app: tcp-echo}}
  action: ALLOW
  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/client]}}]}]
"""
STRICT = """apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: shop-strict, namespace: shop}
spec: {mtls: {mode: STRICT}}
"""


WAYPOINT = """apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: shop}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: v1
kind: Service
metadata: {name: echo-v1, namespace: shop}
spec:
  clusterIP: 10.96.0.21
  selector: {app: echo, version: v1}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: echo-v2, namespace: shop}
spec:
  clusterIP: 10.96.0.22
  selector: {app: echo, version: v2}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: echo-split, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 80}]
  rules:
  - backendRefs: [{name: echo-v1, port: 80, weight: 1}, {name: echo-v2, port: 80, weight: 3}]
"""
SPLIT_REQUESTS = 60


class ProofFailed(SandboxError):
    """A proof's check did not hold; the message says what was expected and seen."""


def _require(ok: object, message: str) -> None:
    if not ok:
        raise ProofFailed(message)


class Tour:
    """The running demo: the sandbox and what earlier proofs learned (capture control etc.)."""

    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb
        self.plain_control = ""

    def write(self, name: str, text: str | None) -> None:
        """Change the folder (as `kubectl apply`/`delete`) and wait for the data path."""
        path = self.sb.manifests / name
        if text is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(text)
        checks.wait_converged(self.sb)

    def echo(self, pod: str, host: str, port: int = 9000) -> checks.Exchange:
        payload = f"hello from {pod} {secrets.token_hex(4)}".encode()
        got = checks.tcp_exchange(self.sb, pod, host, port, payload)
        return got if not got.echoed(payload) else checks.Exchange(payload)

    def capture(self, marker: bytes) -> tuple[list[Flow], checks.Exchange, int]:
        client, server = self.sb.pod_ip("shop/client"), self.sb.pod_ip("shop/tcp-echo")
        with Capture(self.sb.node_netns("node1"), "eth0", (client, server)) as cap:
            got = checks.tcp_exchange(self.sb, "shop/client", TCP_ECHO_VIP if self.enrolled
                                      else server, 9000, marker)
        return cap.flows(), got, cap.drops

    @property
    def enrolled(self) -> bool:
        return checks.redirection(self.sb, "shop/client") == "enabled"


# -- the proofs --------------------------------------------------------------------------------
def prove_enrollment(t: Tour) -> list[str]:
    marker = f"PLAINTEXT-{secrets.token_hex(6)}".encode()
    flows, got, _ = t.capture(marker)
    _require(got.echoed(marker), f"tcp-echo did not answer before enrollment: {got}")
    if any(marker in f.data for f in flows if f.dport == 9000):
        t.plain_control = (f"before enrollment the same capture saw {marker.decode()!r} in "
                           "clear on port 9000")
    pids = {p: read_pid(t.sb.state, f"app-{p.replace('/', '-')}") for p in SHOP_PODS}
    started = time.monotonic()
    t.write("namespaces.yaml", _namespaces(", labels: {istio.io/dataplane-mode: ambient}"))
    checks.wait_redirection(t.sb, SHOP_PODS, "enabled")
    took = time.monotonic() - started
    now = {p: read_pid(t.sb.state, f"app-{p.replace('/', '-')}") for p in SHOP_PODS}
    _require(now == pids, f"app processes changed: before {pids}, after {now}")
    return [f"labelled namespace shop istio.io/dataplane-mode=ambient; {len(SHOP_PODS)} running "
            f"pods went to ambient.istio.io/redirection=enabled in {took:.1f}s",
            "app processes unchanged (pid, start time): "
            + ", ".join(f"{p.split('/')[1]} {v[0] if v else '?'}" for p, v in pids.items())]


def prove_tls_on_the_wire(t: Tour) -> list[str]:
    marker = f"PLAINTEXT-{secrets.token_hex(6)}".encode()
    flows, got, drops = t.capture(marker)
    _require(got.echoed(marker), f"client -> tcp-echo VIP did not echo: {got}")
    _require(flows and drops == 0 and all(f.complete for f in flows),
             f"capture incomplete (flows {len(flows)}, drops {drops}): cannot prove absence")
    _require({f.dport for f in flows if f.src == t.sb.pod_ip("shop/client")} == {15008},
             f"client traffic to ports other than 15008: {sorted({f.dport for f in flows})}")
    lines = []
    for f in sorted(flows, key=lambda f: f.src != t.sb.pod_ip("shop/client")):
        records = f.tls_records()
        _require(records, f"{f.src}:{f.sport} -> {f.dst}:{f.dport} is not a TLS record stream")
        _require(marker not in f.data, f"marker in clear in {f.src} -> {f.dst}")
        kinds: dict[str, int] = {}
        for kind, _ in records or []:
            kinds[kind] = kinds.get(kind, 0) + 1
        lines.append(f"{f.src}:{f.sport} -> {f.dst}:{f.dport}: {len(f.data)} bytes, only TLS "
                     "records (" + ", ".join(f"{k} x{n}" for k, n in kinds.items()) + ")")
    total = sum(len(f.data) for f in flows)
    lines.append(f"sent {marker.decode()!r} through the VIP {TCP_ECHO_VIP}:9000; it is in none "
                 f"of the {total} captured bytes on node1's underlay link (eth0)")
    if t.plain_control:
        lines.append(t.plain_control)
    return lines


def prove_peer_identity(t: Tour) -> list[str]:
    def opened() -> float:
        return checks.total(checks.scrape(t.sb, "node2"), "istio_tcp_connections_opened_total",
                            reporter="destination", source_principal=CLIENT_ID,
                            destination_workload="tcp-echo",
                            connection_security_policy="mutual_tls")

    before = opened()
    got = t.echo("shop/client", TCP_ECHO_VIP)
    _require(not got.error, f"client -> tcp-echo failed: {got}")
    checks.poll_until(lambda: opened() > before, timeout=5,
                      what="node2's ztunnel to count the connection")
    doc = checks.http_json(t.sb, "shop/client", t.sb.pod_ip("shop/echo-2"), 8080)
    peer = doc["peer"].split(":")[0]
    _require(peer == t.sb.pod_ip("shop/client"), f"echo-2 saw peer {peer}, not the client IP")
    return [f"node2's ztunnel (reporter=destination) counted istio_tcp_connections_opened_total "
            f"{before:.0f} -> {opened():.0f} with source_principal=\"{CLIENT_ID}\", "
            "destination_workload=\"tcp-echo\", connection_security_policy=\"mutual_tls\"",
            f"echo-2 (node2) saw the connection from {peer}, the client pod's own IP"]


def _why(t: Tour, source: str, dest: str) -> str:
    from ambientctl.debug.state import load_folder
    from ambientctl.debug.why import why

    return why(load_folder(str(t.sb.manifests)), source, dest).outcome


def prove_authorization(t: Tour) -> list[str]:
    dest = f"{t.sb.pod_ip('shop/tcp-echo')}:9000"
    t.write("demo-authorization.yaml", ALLOW_CLIENT)
    try:
        allowed = t.echo("shop/client", TCP_ECHO_VIP)
        denied = t.echo("shop/intruder", TCP_ECHO_VIP)
        why_ok, why_no = _why(t, "shop/client", dest), _why(t, "shop/intruder", dest)
    finally:
        t.write("demo-authorization.yaml", None)
    _require(not allowed.error, f"shop/client was refused: {allowed}")
    _require(denied.error or not denied.data, f"shop/intruder got an answer: {denied}")
    _require((why_ok, why_no) == ("allow", "deny"), f"`why` says {why_ok}/{why_no}")
    return ["AuthorizationPolicy shop/tcp-echo-allow-client: ALLOW principals "
            "cluster.local/ns/shop/sa/client on app=tcp-echo",
            "shop/client (sa client) -> tcp-echo: allowed, the echo came back",
            f"shop/intruder (sa intruder) -> tcp-echo: refused "
            f"({denied.error or 'closed with 0 bytes'})",
            f"ambientctl why agrees: client {why_ok}, intruder {why_no}"]


def prove_strict(t: Tour) -> list[str]:
    dest = t.sb.pod_ip("shop/tcp-echo")
    before = t.echo("legacy/old", dest)
    _require(not before.error, f"legacy/old -> tcp-echo failed under PERMISSIVE: {before}")
    t.write("demo-peer-authentication.yaml", STRICT)
    try:
        refused = t.echo("legacy/old", dest)
        mesh_ok = t.echo("shop/client", TCP_ECHO_VIP)
        verdict = _why(t, "legacy/old", f"{dest}:9000")
    finally:
        t.write("demo-peer-authentication.yaml", None)
    _require(refused.error or not refused.data, f"legacy/old got an answer: {refused}")
    _require(not mesh_ok.error, f"shop/client refused under STRICT: {mesh_ok}")
    _require(verdict == "deny", f"`why` says {verdict} for legacy/old under STRICT")
    return ["legacy/old (not in the mesh, plaintext) -> tcp-echo: allowed under the default "
            "PERMISSIVE",
            f"PeerAuthentication shop/shop-strict mode STRICT: legacy/old refused "
            f"({refused.error or 'closed with 0 bytes'}); shop/client (mTLS) still allowed",
            f"ambientctl why agrees: legacy/old {verdict}"]


def prove_waypoint_split(t: Tour) -> list[str] | str:
    if importlib.util.find_spec("waypoint.__main__") is None:
        return "skipped: waypoints not available (the waypoint program, waypoint/__main__.py, " \
               "is not part of this build)"
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "demo-waypoint.yaml"
        src.write_text(WAYPOINT)
        t.sb.apply(src)  # the Gateway's Service, Pod and `waypoint` process start here
    t.write("echo-service.yaml", _echo_service(", labels: {istio.io/use-waypoint: waypoint}"))
    waypoint_ip = t.sb.pod_ip("shop/waypoint")
    seen: dict[str, int] = {}
    peers = set()
    for _ in range(SPLIT_REQUESTS):
        doc = checks.http_json(t.sb, "shop/client", "10.96.0.10", 80)
        seen[doc["pod"]] = seen.get(doc["pod"], 0) + 1
        peers.add(doc["peer"].split(":")[0])
    v1, v2 = seen.get("shop/echo-1", 0), seen.get("shop/echo-2", 0)
    _require(peers == {waypoint_ip}, f"requests did not all come through the waypoint "
                                     f"{waypoint_ip}: peers {sorted(peers)}")
    _require(v1 + v2 == SPLIT_REQUESTS and v1 > 0, f"split {seen}")
    # weights 1:3 → echo-2 expected 45 of 60 (sd 3.4); 4 sd either side
    _require(31 <= v2 <= 58, f"echo-2 got {v2} of {SPLIT_REQUESTS}, expected ~45 (weight 3 of 4)")
    return [f"Gateway shop/waypoint (class istio-waypoint): the sandbox created its Service and "
            f"Pod ({waypoint_ip}) and runs the waypoint process; Service shop/echo labelled "
            "istio.io/use-waypoint=waypoint",
            "HTTPRoute shop/echo-split: backendRefs echo-v1 weight 1, echo-v2 weight 3",
            f"{SPLIT_REQUESTS} requests to echo 10.96.0.10:80: echo-1 (v1) {v1}, echo-2 (v2) {v2} "
            f"({100 * v2 / SPLIT_REQUESTS:.0f}% for weight 75%); every app saw the waypoint "
            f"{waypoint_ip} as its peer"]


PROOFS: list[tuple[str, Callable[[Tour], list[str] | str]]] = [
    ("labelling a namespace enrolls its running pods without a restart", prove_enrollment),
    ("traffic between two enrolled pods is TLS on the underlay (captured)",
     prove_tls_on_the_wire),
    ("the server side sees the client's identity and IP", prove_peer_identity),
    ("an AuthorizationPolicy allows one caller and denies another", prove_authorization),
    ("PeerAuthentication STRICT refuses a client outside the mesh", prove_strict),
    ("a waypoint splits HTTP traffic by weight", prove_waypoint_split),
]


def run(sb: Sandbox, say: Say, *, keep: bool = False, nodes: int = 2) -> int:
    """Run the tour on a fresh sandbox `sb`; print the checklist; 0 if every proof passed."""
    folder = Path(tempfile.mkdtemp(prefix="ambient-demo-"))
    for name, text in MANIFESTS.items():
        (folder / name).write_text(text)
    results: list[tuple[str, str]] = []
    try:
        say(f"ambient-py demo: a fresh sandbox {sb.name!r} with {nodes} nodes "
            f"(manifests in {folder})")
        sb.up(nodes=nodes, manifests=folder, timeout=90, progress=lambda line: say(f"  {line}"))
        checks.wait_converged(sb)
        tour = Tour(sb)
        say("")
        for title, proof in PROOFS:
            try:
                out = proof(tour)
            except Exception as exc:  # a proof that raises is a failed proof, with its reason
                results.append(("FAIL", title))
                say(f"[FAIL] {title}\n       {type(exc).__name__}: {exc}")
                continue
            if isinstance(out, str):
                results.append(("SKIP", title))
                say(f"[SKIP] {title}\n       {out}")
            else:
                results.append(("PASS", title))
                say(f"[PASS] {title}" + "".join(f"\n       - {line}" for line in out))
    finally:
        if keep:
            say(f"\nthe sandbox stays up: `ambientctl sandbox --name {sb.name} status`; "
                f"`... down` removes it (manifests: {folder})")
        else:
            sb.down()
            shutil.rmtree(folder, ignore_errors=True)
    counts = {k: sum(r == k for r, _ in results) for k in ("PASS", "FAIL", "SKIP")}
    say(f"\n{counts['PASS']} proved, {counts['FAIL']} failed, {counts['SKIP']} skipped"
        + ("" if keep else f"; sandbox {sb.name!r} removed"))
    return 1 if counts["FAIL"] or len(results) < len(PROOFS) else 0
