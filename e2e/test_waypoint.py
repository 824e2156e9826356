"""A waypoint in the sandbox: the Gateway of class istio-waypoint gets its Service, Pod and a
real `waypoint` process; ztunnels send the bound Service's traffic through it, and its
HTTPRoute splits requests by weight.

Manifest sets `base` + `enrolled` + `waypoint` (Service shop/echo bound to waypoint shop/waypoint,
HTTPRoute echo-split: echo-v1 weight 1, echo-v2 weight 3).
"""

from __future__ import annotations

import importlib.util
import json
import math
import secrets
import socket
import time
from collections.abc import Iterator
from typing import Any

import h11
import pytest

from ambientctl.sandbox import Sandbox
from ambientctl.sandbox.kernel import socket_in_netns
from e2e import mesh
from e2e.conftest import NEEDS_ROOT

pytestmark = [
    pytest.mark.netns, NEEDS_ROOT,
    pytest.mark.skipif(importlib.util.find_spec("waypoint.__main__") is None,
                       reason="the waypoint program is not part of this build"),
]
SANDBOX_SETS = ("base", "enrolled", "waypoint")
ECHO_VIP = "10.96.0.10"
REQUESTS = 80


def test_waypoint_runs_as_the_operator_would_create_it(sandbox: Sandbox):
    """The generated Pod runs the waypoint process (component waypoint-shop-waypoint, ready),
    unenrolled (waypoints are never captured), and ztunnels know its Service."""
    assert "waypoint-shop-waypoint" in sandbox.components()
    comps = {c["name"]: c for c in sandbox.status()["components"]}
    assert comps["waypoint-shop-waypoint"]["ready"], comps["waypoint-shop-waypoint"]
    assert mesh.redirection(sandbox, "shop/waypoint") == ""
    services = {s["hostname"] for s in mesh.config_dump(sandbox, "node1")["services"]}
    assert "waypoint.shop.svc.cluster.local" in services


def test_http_route_splits_by_weight_through_the_waypoint(sandbox: Sandbox):
    """80 requests to the echo VIP all arrive from the waypoint's IP and split about 1:3
    between echo-1 (v1) and echo-2 (v2): echo-2 gets 60 ± 4 sd (sd 3.9), echo-1 at least one."""
    waypoint_ip = sandbox.pod_ip("shop/waypoint")
    docs = [mesh.http_json(sandbox, "shop/client", ECHO_VIP, 80) for _ in range(REQUESTS)]
    assert {d["peer"].split(":")[0] for d in docs} == {waypoint_ip}
    v2 = sum(d["pod"] == "shop/echo-2" for d in docs)
    v1 = sum(d["pod"] == "shop/echo-1" for d in docs)
    print(f"\nsplit through the waypoint: echo-1 {v1}, echo-2 {v2} of {REQUESTS} (weights 1:3)")
    assert v1 + v2 == REQUESTS and v1 >= 1
    assert 45 <= v2 <= 75


# -- issue 6: the L7 list --------------------------------------------------------------------
# Each test below replaces `waypoint.yaml` (the Gateway and the echo-split route) inside
# `mesh.applied`, which restores the original afterwards. `wait_converged` covers ztunnels
# only, so every test first polls for its own effect at the waypoint: each new rule sets a
# request header `x-route-gen: <token>` that the echo app reflects.
BASE_WAYPOINT = (mesh.MANIFESTS / "waypoint" / "waypoint.yaml").read_text()
BASE_RULES = ("  - backendRefs: [{name: echo-v1, port: 80, weight: 1}, "
              "{name: echo-v2, port: 80, weight: 3}]\n")
SPLIT_REQUESTS = 1000


class KeepAlive:
    """HTTP/1.1 requests from inside a pod over one keep-alive connection (re-opened only if
    the server closes it), parsed with h11; `reconnects` counts the re-opens."""

    def __init__(self, sb: Sandbox, pod: str, host: str, port: int) -> None:
        self.netns, self.addr = sb.pod_netns(pod), (host, port)
        self.sock: socket.socket | None = None
        self.conn = h11.Connection(h11.CLIENT)
        self.reconnects = -1

    def _open(self) -> socket.socket:
        if self.sock is None or self.conn.our_state is not h11.IDLE:
            self.close()
            self.sock = socket_in_netns(self.netns)
            self.sock.settimeout(10)
            self.sock.connect(self.addr)
            self.conn = h11.Connection(h11.CLIENT)
            self.reconnects += 1
        return self.sock

    def get(self, path: str = "/", **headers: str) -> tuple[int, bytes]:
        sock = self._open()
        hdrs = [("host", f"{self.addr[0]}:{self.addr[1]}"),
                *((k.replace("_", "-"), v) for k, v in headers.items())]
        sock.sendall(self.conn.send(h11.Request(method="GET", target=path, headers=hdrs))
                     + self.conn.send(h11.EndOfMessage()))
        status, body = 0, b""
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(sock.recv(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError(f"{self.addr} closed the connection mid-response")
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        return status, body

    def echo(self, path: str = "/", **headers: str) -> dict[str, Any]:
        status, body = self.get(path, **headers)
        assert status == 200, (path, status, body[:200])
        return json.loads(body)  # type: ignore[no-any-return]

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


@pytest.fixture
def client(sandbox: Sandbox) -> Iterator[KeepAlive]:
    c = KeepAlive(sandbox, "shop/client", ECHO_VIP, 80)
    yield c
    c.close()


def route_yaml(rules: str, *, annotations: str = "") -> str:
    """The base waypoint.yaml with echo-split's rules (and annotations) replaced."""
    assert BASE_RULES in BASE_WAYPOINT
    text = BASE_WAYPOINT.replace(BASE_RULES, rules)
    if annotations:
        text = text.replace("metadata: {name: echo-split, namespace: shop}",
                            f"metadata:\n  name: echo-split\n  namespace: shop\n"
                            f"  annotations:\n{annotations}")
    return text


def gen_filter(token: str) -> str:
    return ("    filters: [{type: RequestHeaderModifier, requestHeaderModifier: "
            f"{{set: [{{name: x-route-gen, value: {token}}}]}}}}]\n")


def route_gen(doc: dict[str, Any]) -> str:
    return next((v for k, v in doc["headers"].items() if k.lower() == "x-route-gen"), "")


def wait_route(client: KeepAlive, token: str, path: str = "/", **headers: str) -> None:
    """Poll until a request is answered by a rule carrying `token`."""
    def seen() -> bool | None:
        status, body = client.get(path, **headers)
        return (status == 200 and route_gen(json.loads(body)) == token) or None
    mesh.poll_until(seen, timeout=15, what=f"the waypoint applying route generation {token}")


def test_split_90_10_over_1000_requests_within_3_sigma(sandbox: Sandbox, client: KeepAlive):
    """1000 requests over one keep-alive connection split 9:1: echo-2 gets 100 ± 3 sd
    (sd = sqrt(1000 * 0.1 * 0.9) = 9.5, so 72..128), all from the waypoint, all by the new rule."""
    rules = ("  - backendRefs: [{name: echo-v1, port: 80, weight: 9}, "
             "{name: echo-v2, port: 80, weight: 1}]\n" + gen_filter("split-90-10"))
    with mesh.applied(sandbox, "waypoint.yaml", route_yaml(rules)):
        wait_route(client, "split-90-10")
        waypoint_ip = sandbox.pod_ip("shop/waypoint")
        started = time.monotonic()
        docs = [client.echo() for _ in range(SPLIT_REQUESTS)]
        took = time.monotonic() - started
    v2 = sum(d["pod"] == "shop/echo-2" for d in docs)
    v1 = sum(d["pod"] == "shop/echo-1" for d in docs)
    print(f"\n90/10 split: echo-1 {v1}, echo-2 {v2} of {SPLIT_REQUESTS} in {took:.2f}s "
          f"({client.reconnects} reconnects)")
    assert {route_gen(d) for d in docs} == {"split-90-10"}
    assert {d["peer"].split(":")[0] for d in docs} == {waypoint_ip}
    assert v1 + v2 == SPLIT_REQUESTS
    sd = math.sqrt(SPLIT_REQUESTS * 0.1 * 0.9)
    assert abs(v2 - SPLIT_REQUESTS * 0.1) <= 3 * sd, (v1, v2)


def test_header_match_routes_to_one_backend(sandbox: Sandbox, client: KeepAlive):
    """`x-version: v2` always reaches echo-2 and `x-version: v1` echo-1 (20 each), although
    the default rule without the header splits between both."""
    rules = ("  - matches: [{headers: [{name: x-version, value: v2}]}]\n"
             "    backendRefs: [{name: echo-v2, port: 80}]\n" + gen_filter("hdr")
             + "  - matches: [{headers: [{name: x-version, value: v1}]}]\n"
             "    backendRefs: [{name: echo-v1, port: 80}]\n" + gen_filter("hdr")
             + "  - backendRefs: [{name: echo, port: 80}]\n")
    with mesh.applied(sandbox, "waypoint.yaml", route_yaml(rules)):
        wait_route(client, "hdr", x_version="v2")
        to_v2 = {client.echo(x_version="v2")["pod"] for _ in range(20)}
        to_v1 = {client.echo(x_version="v1")["pod"] for _ in range(20)}
        unmatched = {route_gen(client.echo()) for _ in range(5)}
    assert to_v2 == {"shop/echo-2"}
    assert to_v1 == {"shop/echo-1"}
    assert unmatched == {""}


DENY_ADMIN = """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: shop}
spec:
  targetRefs: [{group: "", kind: Service, name: echo}]
  action: DENY
  rules: [{to: [{operation: {paths: ["/admin/*"]}}]}]
"""


def test_l7_policy_denies_a_path_with_403(sandbox: Sandbox, client: KeepAlive):
    """A DENY AuthorizationPolicy on Service echo for /admin/* gives 403 `RBAC: access denied`
    at the waypoint while /public is 200; without the policy /admin/x is 200."""
    assert client.get("/admin/x")[0] == 200
    with mesh.applied(sandbox, "deny-admin.yaml", DENY_ADMIN):
        mesh.poll_until(lambda: client.get("/admin/x")[0] == 403 or None, timeout=15,
                        what="the waypoint enforcing deny-admin")
        status, body = client.get("/admin/users")
        public = client.echo("/public")
    assert (status, body.strip()) == (403, b"RBAC: access denied")
    assert public["path"] == "/public"
    mesh.poll_until(lambda: client.get("/admin/x")[0] == 200 or None, timeout=15,
                    what="the waypoint dropping deny-admin")


def test_retries_turn_a_flaky_backends_503s_into_200(sandbox: Sandbox, client: KeepAlive):
    """echo-1 answers 503 to the first 2 requests of a key; the default route retry policy
    (2 retries on 503) makes the client see one 200, and echo-1's log shows 503, 503, 200."""
    rules = "  - backendRefs: [{name: echo-v1, port: 80}]\n" + gen_filter("retry")
    key = secrets.token_hex(4)
    log = sandbox.log_path("app-shop-echo-1")
    with mesh.applied(sandbox, "waypoint.yaml", route_yaml(rules)):
        wait_route(client, "retry")
        doc = client.echo(f"/flaky?fail=2&key={key}")
        assert doc["pod"] == "shop/echo-1"
        def logged() -> list[str] | None:
            codes = [ln.split('"')[2].split()[0] for ln in log.read_text().splitlines()
                     if f"key={key} " in ln]
            return codes if len(codes) >= 3 else None
        codes = mesh.poll_until(logged, timeout=5, what=f"echo-1 logging key {key}")
    assert codes == ["503", "503", "200"]


def test_fault_delay_longer_than_request_timeout_gives_504(sandbox: Sandbox,
                                                          client: KeepAlive):
    """A fault delay of 2 s with `timeouts.request: 300ms` answers 504; the same route without
    the annotation answers 200 (the timeout alone does not fire)."""
    rules = ("  - backendRefs: [{name: echo-v1, port: 80}]\n" + gen_filter("timeout")
             + "    timeouts: {request: 300ms}\n")
    fault = '    waypoint.ambient-py.io/fault: \'{"delay": {"fixedDelay": "2s"}}\'\n'
    with mesh.applied(sandbox, "waypoint.yaml", route_yaml(rules)):
        wait_route(client, "timeout")
    with mesh.applied(sandbox, "waypoint.yaml", route_yaml(rules, annotations=fault)):
        mesh.poll_until(lambda: client.get()[0] == 504 or None, timeout=15,
                        what="the waypoint applying the fault delay")
        status, body = client.get("/again")
    assert status == 504, body[:200]


def _answers_200(sb: Sandbox) -> bool:
    try:
        mesh.http_json(sb, "shop/client", ECHO_VIP, 80)
    except mesh.TrafficError:
        return False
    return True


def test_server_sent_events_stream_through_the_waypoint(sandbox: Sandbox):
    """An event stream through ztunnel + waypoint is streamed, not buffered: the first event
    reaches the client while the backend still holds the rest, which it sends only after a
    release the client issues once it has that first event."""
    key = secrets.token_hex(4)
    # An earlier test's route change may still be leaving the waypoint (`mesh.applied` waits
    # for the ztunnels only): start once plain requests through it succeed again.
    mesh.poll_until(lambda: _answers_200(sandbox), timeout=15,
                    what="the waypoint to route the echo VIP again")
    sock = socket_in_netns(sandbox.pod_netns("shop/client"))
    conn = h11.Connection(h11.CLIENT)
    events: list[dict[str, Any]] = []
    buffered = b""
    with sock:
        sock.settimeout(15)  # a buffering proxy shows nothing until the backend's 30 s gate
        sock.connect((ECHO_VIP, 80))
        sock.sendall(conn.send(h11.Request(
            method="GET", target=f"/events?key={key}&count=3",
            headers=[("host", f"{ECHO_VIP}:80"), ("accept", "text/event-stream")]))
            + conn.send(h11.EndOfMessage()))
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(sock.recv(65536))
            elif isinstance(event, h11.Response):
                assert event.status_code == 200
                assert dict(event.headers)[b"content-type"] == b"text/event-stream"
            elif isinstance(event, h11.Data):
                buffered += bytes(event.data)
                while b"\n\n" in buffered:
                    line, buffered = buffered.split(b"\n\n", 1)
                    events.append(json.loads(line.removeprefix(b"data: ")))
                    if len(events) == 1:  # the backend holds the rest until released
                        pod = events[0]["pod"]
                        released = mesh.tcp_exchange(
                            sandbox, "shop/client", sandbox.pod_ip(pod), 8080,
                            f"GET /release?key={key} HTTP/1.0\r\n\r\n".encode())
                        assert b" 200 " in released.data.split(b"\r\n")[0], released
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
    assert [e["event"] for e in events] == [1, 2, 3]
    assert len({e["pod"] for e in events}) == 1
