"""The plugin ⇄ node-agent wire format (sans-IO): one JSON request and one response per connection.

Transport (done by the callers, not here): a unix SOCK_STREAM socket (default
`/var/run/ambient-py/cni-agent.sock`). The plugin connects, writes one request line, reads one
response line, closes. A line is compact UTF-8 JSON terminated by `\\n`, at most `MAX_LINE` bytes.

Request  `{"v": 1, "op": "add"|"del"|"check"|"status", "containerId", "netns", "ifname",
          "pod": {"name", "namespace", "uid"}, "ips": [{"interface", "address", "gateway"}]}`
Response `{"v": 1, "ok": true, "enrolled": bool, "changed": bool}` or
         `{"v": 1, "ok": false, "code": <CNI error code>, "msg": "...", "details": "..."}`

Who uses it: `cni_plugin.plugin` (client side, sync) and `cni_plugin.agent.server` (trio). It
imports nothing heavy: the plugin executable loads it on every invocation.
Invariants: `decode_*(encode_*(x)) == x`; a line that is not valid JSON of the right shape raises
`ProtocolError` naming the field; `LineBuffer` never holds more than `MAX_LINE` bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from cni_plugin.errors import ProtocolError

VERSION = 1
MAX_LINE = 64 * 1024
OPS = ("add", "del", "check", "status")
DEFAULT_AGENT_SOCKET = "/var/run/ambient-py/cni-agent.sock"


@dataclass(frozen=True)
class PodRef:
    """The Kubernetes pod, from CNI_ARGS (K8S_POD_NAME, K8S_POD_NAMESPACE, K8S_POD_UID)."""

    name: str = ""
    namespace: str = ""
    uid: str = ""


@dataclass(frozen=True)
class PodIp:
    """One address of the pod, from the previous plugin's result (`ips[]`)."""

    interface: str
    address: str  # CIDR, e.g. "10.1.0.5/24"
    gateway: str = ""


@dataclass(frozen=True)
class AgentRequest:
    op: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    pod: PodRef = field(default_factory=PodRef)
    ips: tuple[PodIp, ...] = ()


@dataclass(frozen=True)
class AgentResponse:
    ok: bool
    enrolled: bool = False
    changed: bool = False
    code: int = 0  # CNI error code when not ok
    msg: str = ""
    details: str = ""


def _line(obj: dict[str, Any]) -> bytes:
    data = json.dumps(obj, separators=(",", ":")).encode() + b"\n"
    if len(data) > MAX_LINE:
        raise ProtocolError(f"message of {len(data)} bytes exceeds the {MAX_LINE}-byte limit")
    return data


def _parse(line: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"{what} must be a JSON object, got {type(obj).__name__}")
    if obj.get("v") != VERSION:
        raise ProtocolError(f"{what} has protocol version {obj.get('v')!r}; expected {VERSION} "
                            "(plugin and agent from different releases?)")
    return obj


def _str(obj: dict[str, Any], key: str, what: str) -> str:
    value = obj.get(key, "")
    if not isinstance(value, str):
        raise ProtocolError(f"{what}: field {key!r} must be a string")
    return value


def encode_request(req: AgentRequest) -> bytes:
    return _line({
        "v": VERSION, "op": req.op, "containerId": req.container_id, "netns": req.netns,
        "ifname": req.ifname,
        "pod": {"name": req.pod.name, "namespace": req.pod.namespace, "uid": req.pod.uid},
        "ips": [{"interface": ip.interface, "address": ip.address, "gateway": ip.gateway}
                for ip in req.ips],
    })


def decode_request(line: bytes) -> AgentRequest:
    what = "agent request"
    obj = _parse(line, what)
    op = obj.get("op")
    if op not in OPS:
        raise ProtocolError(f"{what}: unknown op {op!r}; expected one of {', '.join(OPS)}")
    pod = obj.get("pod", {})
    ips = obj.get("ips", [])
    if not isinstance(pod, dict) or not isinstance(ips, list):
        raise ProtocolError(f"{what}: 'pod' must be an object and 'ips' a list")
    parsed_ips = []
    for ip in ips:
        if not isinstance(ip, dict):
            raise ProtocolError(f"{what}: every entry of 'ips' must be an object")
        parsed_ips.append(PodIp(_str(ip, "interface", what), _str(ip, "address", what),
                                _str(ip, "gateway", what)))
    return AgentRequest(
        op=op, container_id=_str(obj, "containerId", what), netns=_str(obj, "netns", what),
        ifname=_str(obj, "ifname", what),
        pod=PodRef(_str(pod, "name", what), _str(pod, "namespace", what), _str(pod, "uid", what)),
        ips=tuple(parsed_ips),
    )


def encode_response(resp: AgentResponse) -> bytes:
    if resp.ok:
        return _line({"v": VERSION, "ok": True, "enrolled": resp.enrolled,
                      "changed": resp.changed})
    return _line({"v": VERSION, "ok": False, "code": resp.code, "msg": resp.msg,
                  "details": resp.details})


def decode_response(line: bytes) -> AgentResponse:
    what = "agent response"
    obj = _parse(line, what)
    if obj.get("ok") is True:
        return AgentResponse(ok=True, enrolled=bool(obj.get("enrolled")),
                             changed=bool(obj.get("changed")))
    code = obj.get("code")
    if obj.get("ok") is not False or not isinstance(code, int):
        raise ProtocolError(f"{what}: needs 'ok': true, or 'ok': false with an integer 'code'")
    return AgentResponse(ok=False, code=code, msg=_str(obj, "msg", what),
                         details=_str(obj, "details", what))


class LineBuffer:
    """Accumulates received bytes; `next_line()` returns one complete line or None."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data
        if b"\n" not in self._buf and len(self._buf) > MAX_LINE:
            raise ProtocolError(f"no newline within {MAX_LINE} bytes; peer is not speaking "
                                "the ambient-cni agent protocol")

    def next_line(self) -> bytes | None:
        end = self._buf.find(b"\n")
        if end < 0:
            return None
        line = bytes(self._buf[:end])
        del self._buf[: end + 1]
        return line
