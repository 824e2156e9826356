"""The CNI protocol of `ambient-cni` (spec 1.0.0 and 1.1.0, older 0.3/0.4 accepted), sans-IO.

`parse_invocation(env, stdin)` validates the runtime's environment variables and the JSON network
config and returns an `Invocation` or raises `CniError` (a spec error object: code, msg, details).
`run(invocation, call_agent)` executes VERSION/ADD/DEL/CHECK/STATUS/GC and returns the text for
stdout; `call_agent` is the one I/O hook (a request to the node agent, see `agent_protocol`).

Semantics (chained plugin, after the main network plugin in a conflist):
- ADD asks the agent to enrol the pod (it installs the in-pod redirection if the pod is meant to be
  in the mesh) and prints `prevResult` unchanged. No prevResult → error 7 (we must be chained).
  Agent unreachable → error 11 (try again later): the sandbox is not created unredirected.
- DEL is idempotent and never fails because the pod or its netns is gone; an unreachable agent
  is logged, not fatal (the netns, and the rules inside it, die with the pod).
- CHECK asks the agent whether the rules are in place; STATUS (1.1.0) reports 50 if the agent
  is unreachable; GC (1.1.0) has nothing to collect (the agent tracks pods itself).

Who calls it: `cni_plugin.__main__` (stdin/stdout/exit code, logging, the unix socket).
Invariant: this module imports only the standard library and `agent_protocol` (small footprint).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cni_plugin.agent_protocol import (
    DEFAULT_AGENT_SOCKET,
    AgentRequest,
    AgentResponse,
    PodIp,
    PodRef,
)

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LATEST = "1.1.0"
COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")
DEFAULT_LOG_FILE = "/var/log/ambient-cni.log"

# Spec error codes (SPEC.md "Error"): 1-7, 11; STATUS: 50, 51.
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENV = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11
PLUGIN_NOT_AVAILABLE = 50


class CniError(Exception):
    """A CNI error result; `to_json()` is what the plugin prints on stdout before exiting 1."""

    def __init__(self, code: int, msg: str, details: str = "",
                 cni_version: str = LATEST) -> None:
        super().__init__(f"[{code}] {msg}" + (f": {details}" if details else ""))
        self.code = code
        self.msg = msg
        self.details = details
        self.cni_version = cni_version

    def to_json(self) -> str:
        return json.dumps({"cniVersion": self.cni_version, "code": self.code, "msg": self.msg,
                           "details": self.details})


@dataclass(frozen=True)
class PluginConfig:
    cni_version: str
    name: str
    type: str
    prev_result: dict[str, Any] | None
    agent_socket: str = DEFAULT_AGENT_SOCKET
    agent_timeout: float = 5.0
    log_file: str = DEFAULT_LOG_FILE
    log_level: str = "info"


@dataclass(frozen=True)
class Invocation:
    command: str
    container_id: str
    netns: str
    ifname: str
    args: Mapping[str, str]
    config: PluginConfig | None  # None only for VERSION without a config


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def parse_config(stdin: bytes, *, command: str = "ADD") -> PluginConfig:
    """The network config from stdin; raises CniError 6 (not JSON) or 7/1 (invalid)."""
    try:
        raw = json.loads(stdin)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CniError(DECODE_FAILURE, "network config on stdin is not valid JSON",
                       f"{exc}; the runtime must pass the plugin's conflist entry") from None
    if not isinstance(raw, dict):
        raise CniError(DECODE_FAILURE, "network config must be a JSON object",
                       f"got {type(raw).__name__}")
    version = raw.get("cniVersion")
    if not isinstance(version, str):
        raise CniError(INVALID_CONFIG, "network config lacks a string 'cniVersion'",
                       f"set \"cniVersion\" to one of {', '.join(SUPPORTED_VERSIONS)}")
    if version not in SUPPORTED_VERSIONS:
        raise CniError(INCOMPATIBLE_VERSION, f"CNI version {version} is not supported",
                       f"ambient-cni supports {', '.join(SUPPORTED_VERSIONS)}")
    problems = [f"'{key}' must be a non-empty string" for key in ("name", "type")
                if not isinstance(raw.get(key), str) or not raw.get(key)]
    prev = raw.get("prevResult")
    if prev is not None and not isinstance(prev, dict):
        problems.append("'prevResult' must be an object")
    for key in ("agentSocket", "logFile", "logLevel"):
        if key in raw and not isinstance(raw[key], str):
            problems.append(f"'{key}' must be a string")
    timeout = raw.get("agentTimeoutSeconds", 5.0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        problems.append("'agentTimeoutSeconds' must be a positive number")
    if raw.get("logLevel", "info") not in ("debug", "info", "warning", "error"):
        problems.append("'logLevel' must be one of debug, info, warning, error")
    if problems:
        raise CniError(INVALID_CONFIG, "invalid ambient-cni network config", "; ".join(problems),
                       cni_version=version)
    return PluginConfig(
        cni_version=version, name=raw["name"], type=raw["type"], prev_result=prev,
        agent_socket=raw.get("agentSocket", DEFAULT_AGENT_SOCKET), agent_timeout=float(timeout),
        log_file=raw.get("logFile", DEFAULT_LOG_FILE), log_level=raw.get("logLevel", "info"),
    )


def parse_cni_args(value: str) -> dict[str, str]:
    """CNI_ARGS: `K1=V1;K2=V2` (IgnoreUnknown and friends included)."""
    result: dict[str, str] = {}
    for item in filter(None, value.split(";")):
        key, sep, val = item.partition("=")
        if not sep or not key:
            raise CniError(INVALID_ENV, f"CNI_ARGS item {item!r} is not KEY=VALUE",
                           "CNI_ARGS must look like K8S_POD_NAME=web;K8S_POD_NAMESPACE=shop")
        result[key] = val
    return result


def parse_invocation(env: Mapping[str, str], stdin: bytes) -> Invocation:
    """Validate the environment and the config for one plugin call."""
    command = env.get("CNI_COMMAND", "")
    if command not in COMMANDS:
        raise CniError(INVALID_ENV, f"CNI_COMMAND {command!r} is not supported",
                       f"set CNI_COMMAND to one of {', '.join(COMMANDS)}")
    if command == "VERSION":
        return Invocation(command, "", "", "", {}, None)
    config = parse_config(stdin, command=command)
    required = {"ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
                "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
                "DEL": ("CNI_CONTAINERID", "CNI_IFNAME")}.get(command, ())
    missing = [name for name in required if not env.get(name)]
    if missing:
        raise CniError(INVALID_ENV, f"{command} needs {', '.join(missing)}",
                       "the container runtime sets these; is the plugin run by hand?",
                       cni_version=config.cni_version)
    if command in ("ADD", "CHECK") and config.prev_result is None:
        raise CniError(INVALID_CONFIG, "ambient-cni is a chained plugin and got no prevResult",
                       "list it after the main network plugin (e.g. bridge) in a .conflist",
                       cni_version=config.cni_version)
    if command == "CHECK" and _version_tuple(config.cni_version) < (0, 4, 0):
        raise CniError(INCOMPATIBLE_VERSION, "CHECK needs cniVersion 0.4.0 or later",
                       cni_version=config.cni_version)
    return Invocation(command, env.get("CNI_CONTAINERID", ""), env.get("CNI_NETNS", ""),
                      env.get("CNI_IFNAME", ""), parse_cni_args(env.get("CNI_ARGS", "")), config)


def pod_ips(prev_result: Mapping[str, Any] | None) -> tuple[PodIp, ...]:
    """The pod's addresses from a 0.3.x/0.4.0/1.x result (`interface` is an index)."""
    if not prev_result:
        return ()
    interfaces = prev_result.get("interfaces") or []
    ips = []
    for ip in prev_result.get("ips") or []:
        if not isinstance(ip, dict) or not isinstance(ip.get("address"), str):
            continue
        index = ip.get("interface")
        name = ""
        if isinstance(index, int) and 0 <= index < len(interfaces):
            name = str(interfaces[index].get("name", ""))
        ips.append(PodIp(name, ip["address"], str(ip.get("gateway", ""))))
    return tuple(ips)


def agent_request(inv: Invocation) -> AgentRequest:
    assert inv.config is not None
    pod = PodRef(inv.args.get("K8S_POD_NAME", ""), inv.args.get("K8S_POD_NAMESPACE", ""),
                 inv.args.get("K8S_POD_UID", ""))
    return AgentRequest(op=inv.command.lower(), container_id=inv.container_id, netns=inv.netns,
                        ifname=inv.ifname, pod=pod, ips=pod_ips(inv.config.prev_result))


AgentCall = Callable[[AgentRequest], AgentResponse]  # raises OSError when unreachable


def run(inv: Invocation, call_agent: AgentCall) -> str:
    """Execute one invocation; returns stdout text (may be empty) or raises CniError."""
    if inv.command == "VERSION":
        return json.dumps({"cniVersion": LATEST, "supportedVersions": list(SUPPORTED_VERSIONS)})
    config = inv.config
    assert config is not None
    version = config.cni_version
    if inv.command == "GC":
        return ""
    is_pod = bool(inv.args.get("K8S_POD_NAME") and inv.args.get("K8S_POD_NAMESPACE"))
    if inv.command in ("ADD", "CHECK") and not is_pod:
        return _result(config) if inv.command == "ADD" else ""  # not a Kubernetes pod
    try:
        response = call_agent(agent_request(inv))
    except OSError as exc:
        if inv.command == "DEL":
            return ""  # the netns (and our rules in it) go away with the sandbox
        code = PLUGIN_NOT_AVAILABLE if inv.command == "STATUS" else TRY_AGAIN_LATER
        raise CniError(code, f"the ambient-py node agent is not reachable at "
                       f"{config.agent_socket}",
                       f"{exc}; is the CNI node agent running on this node?",
                       cni_version=version) from exc
    if not response.ok:
        if inv.command == "DEL" and response.code == UNKNOWN_CONTAINER:
            return ""
        raise CniError(response.code or IO_FAILURE, response.msg, response.details,
                       cni_version=version)
    return _result(config) if inv.command == "ADD" else ""


def _result(config: PluginConfig) -> str:
    """prevResult unchanged (only `cniVersion` is filled in if the previous plugin left it out)."""
    result = dict(config.prev_result or {})
    result.setdefault("cniVersion", config.cni_version)
    return json.dumps(result)
