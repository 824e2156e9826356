"""Looking at a running sandbox from outside: traffic from a pod, ztunnel's admin and metrics,
and waiting until the data path holds what the manifest folder says.

Who calls it: the demo (`ambientctl.sandbox.demo`) and the e2e suite (`e2e/mesh.py`). Traffic
is made from the calling process: a socket created inside the pod's network namespace
(`kernel.socket_in_netns`) goes through that pod's nftables rules exactly like the app's own
sockets, without a subprocess. "Converged" compares every ztunnel's `/config_dump` with what
istiod-lite's translation of the folder gives (`ambientctl.debug.state.load_folder`, the code
`why` uses), so a wait ends when the config reached the data path, not after a guessed delay.

Invariants: nothing here sleeps a fixed time to wait for something; `poll_until` re-checks until
a deadline and raises `WaitTimeout` with the last value seen. Every socket has a timeout.
"""

from __future__ import annotations

import dataclasses
import json
import re
import socket
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from ambientctl.sandbox.errors import SandboxError
from ambientctl.sandbox.kernel import socket_in_netns
from ambientctl.sandbox.probes import http_get

if TYPE_CHECKING:
    from ambientctl.sandbox.core import Sandbox

T = TypeVar("T")
POLL = 0.05
REDIRECTION = "ambient.istio.io/redirection"


class WaitTimeout(SandboxError):
    """A condition did not hold by its deadline; the message names it and the last value."""


class TrafficError(SandboxError):
    """A request from a pod did not get the answer the sample app gives."""


def poll_until(check: Callable[[], T | None], *, timeout: float, what: str,
               last: Callable[[], object] | None = None) -> T:
    """Call `check` until it returns something truthy; WaitTimeout after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            seen = f"; last seen: {last()!r}" if last is not None else ""
            raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {what}{seen}")
        time.sleep(POLL)


# -- traffic -----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Exchange:
    """What a TCP client in a pod got back: the bytes, or the error that ended it."""

    data: bytes
    error: str = ""

    def echoed(self, sent: bytes) -> bool:
        return not self.error and self.data == sent


def tcp_exchange(sb: Sandbox, pod: str, host: str, port: int, payload: bytes, *,
                 timeout: float = 5.0) -> Exchange:
    """Connect from inside `pod`, send `payload`, half-close, read until EOF."""
    sock = socket_in_netns(sb.pod_netns(pod))
    chunks: list[bytes] = []
    with sock:
        sock.settimeout(timeout)
        try:
            sock.connect((host, port))
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            while data := sock.recv(65536):
                chunks.append(data)
        except OSError as exc:
            return Exchange(b"".join(chunks), f"{type(exc).__name__}: {exc}")
    return Exchange(b"".join(chunks))


def http_json(sb: Sandbox, pod: str, host: str, port: int, path: str = "/") -> dict[str, Any]:
    """GET from inside `pod` to the sample http-echo app; its JSON answer (or TrafficError)."""
    request = f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n".encode()
    got = tcp_exchange(sb, pod, host, port, request)
    head, _, body = got.data.partition(b"\r\n\r\n")
    if got.error or not head.startswith(b"HTTP/1.") or b" 200 " not in head.split(b"\r\n")[0]:
        raise TrafficError(f"GET http://{host}:{port}{path} from {pod} failed: "
                           f"{got.error or head[:200]!r}")
    return json.loads(body)  # type: ignore[no-any-return]


# -- state -------------------------------------------------------------------------------------
def redirection(sb: Sandbox, pod: str) -> str:
    """`ambient.istio.io/redirection` of a pod as the node agent wrote it ("" if none)."""
    from meshcore.model.folder import scan_folder

    ns, name = pod.split("/")
    obj = scan_folder(sb.manifests).model.get("Pod", ns, name)
    return obj.meta.annotations.get(REDIRECTION, "") if obj else ""


def config_dump(sb: Sandbox, node: str) -> dict[str, Any]:
    """ztunnel's `/config_dump` on `node` (admin 127.0.0.1:15000 inside the node netns)."""
    got = http_get(sb.node_netns(node), "127.0.0.1", 15000, "/config_dump", timeout=5)
    if got is None or got[0] != 200:
        raise TrafficError(f"ztunnel admin on {node} did not answer /config_dump: {got}")
    return json.loads(got[1])  # type: ignore[no-any-return]


View = tuple[Mapping[str, tuple[object, ...]], frozenset[str]]


def ztunnel_view(dump: dict[str, Any]) -> View:
    """Per workload uid: (protocol, status, policies, services); and the policy keys."""
    workloads = {w["uid"]: (w["tunnel_protocol"], w["status"],
                            tuple(sorted(w["authorization_policies"])),
                            tuple(sorted(s["service"] for s in w["services"])))
                 for w in dump["workloads"]}
    return workloads, frozenset(f"{p['namespace']}/{p['name']}" for p in dump["policies"])


def expected_view(sb: Sandbox) -> View:
    """What every ztunnel should hold for the folder as it is (istiod-lite's translation)."""
    from ambientctl.debug.state import load_folder

    snap = load_folder(str(sb.manifests)).snapshot
    workloads = {uid: (w.tunnel_protocol.name, w.status.name,
                       tuple(sorted(w.authorization_policies)),
                       tuple(sorted(s.service for s in w.services)))
                 for uid, w in snap.workloads.items()}
    return workloads, frozenset(snap.policies)


def _diff(sb: Sandbox, node: str) -> str:
    have_w, have_p = ztunnel_view(config_dump(sb, node))
    want_w, want_p = expected_view(sb)
    bad = {k: (have_w.get(k), want_w.get(k)) for k in set(have_w) | set(want_w)
           if have_w.get(k) != want_w.get(k)}
    return f"workloads (have, want) {bad}; policies have {sorted(have_p)} want {sorted(want_p)}"


def wait_converged(sb: Sandbox, *, timeout: float = 15.0) -> None:
    """Wait until every ztunnel holds the workloads and policies the folder translates to."""
    for node in (n.name for n in sb.topology.nodes):
        poll_until(partial(_converged, sb, node), timeout=timeout,
                   what=f"ztunnel on {node} to hold the folder's config",
                   last=partial(_diff, sb, node))


def _converged(sb: Sandbox, node: str) -> bool:
    return ztunnel_view(config_dump(sb, node)) == expected_view(sb)


def wait_redirection(sb: Sandbox, pods: list[str], value: str, *, timeout: float = 15.0) -> None:
    """Wait until every pod's redirection annotation is `value` ("" = none), then until the
    ztunnels hold the resulting workload state."""
    poll_until(lambda: all(redirection(sb, p) == value for p in pods), timeout=timeout,
               what=f"{REDIRECTION}={value or '(none)'} on {', '.join(pods)}",
               last=lambda: {p: redirection(sb, p) for p in pods})
    wait_converged(sb)


# -- metrics -----------------------------------------------------------------------------------
_SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclasses.dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def scrape(sb: Sandbox, node: str) -> list[Sample]:
    """ztunnel's /metrics on `node` (port 15020 inside the node netns), parsed."""
    got = http_get(sb.node_netns(node), "127.0.0.1", 15020, "/metrics", timeout=5)
    if got is None or got[0] != 200:
        raise TrafficError(f"ztunnel metrics on {node} did not answer: {got}")
    out = []
    for line in got[1].splitlines():
        if line and not line.startswith("#") and (m := _SAMPLE.match(line)):
            out.append(Sample(m["name"], dict(_LABEL.findall(m["labels"] or "")),
                              float(m["value"])))
    return out


def series(samples: list[Sample], name: str, **labels: str) -> list[Sample]:
    """The series of `name` whose labels include `labels`."""
    return [s for s in samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]


def total(samples: list[Sample], name: str, **labels: str) -> float:
    """Sum of `name` over the series whose labels include `labels`."""
    return sum(s.value for s in series(samples, name, **labels))
