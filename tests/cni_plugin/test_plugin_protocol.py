"""The CNI protocol layer (sans-IO): config and environment validation, commands, error codes."""

from __future__ import annotations

import json

import pytest

from cni_plugin.agent_protocol import AgentRequest, AgentResponse
from cni_plugin.plugin import (
    SUPPORTED_VERSIONS,
    CniError,
    parse_invocation,
    pod_ips,
    run,
)

PREV = {
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "cni0"}, {"name": "eth0", "sandbox": "/var/run/netns/p"}],
    "ips": [{"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 1}],
    "dns": {},
}
ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/var/run/netns/p",
       "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni",
       "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web;K8S_POD_UID=u1"}


def _conf(**overrides: object) -> bytes:
    conf = {"cniVersion": "1.0.0", "name": "k8s", "type": "ambient-cni", "prevResult": PREV}
    conf.update(overrides)
    return json.dumps({k: v for k, v in conf.items() if v is not None}).encode()


def _code(env: dict[str, str], stdin: bytes) -> int:
    with pytest.raises(CniError) as info:
        parse_invocation(env, stdin)
    json.loads(info.value.to_json())  # always a valid error object
    return info.value.code


@pytest.mark.parametrize("stdin, code", [
    pytest.param(b"{not json", 6, id="not-json"),
    pytest.param(b'"a string"', 6, id="not-an-object"),
    pytest.param(_conf(cniVersion=None), 7, id="no-version"),
    pytest.param(_conf(cniVersion="0.2.0"), 1, id="old-version"),
    pytest.param(_conf(name=""), 7, id="empty-name"),
    pytest.param(_conf(prevResult=None), 7, id="not-chained"),
    pytest.param(_conf(prevResult=[1]), 7, id="prevresult-not-object"),
    pytest.param(_conf(agentTimeoutSeconds=-1), 7, id="bad-timeout"),
    pytest.param(_conf(logLevel="loud"), 7, id="bad-log-level"),
])
def test_bad_config_gives_spec_error_code(stdin: bytes, code: int) -> None:
    """Malformed or invalid config maps to the spec's decode (6), version (1) or config (7) code."""
    assert _code(ENV, stdin) == code


@pytest.mark.parametrize("env", [
    pytest.param({**ENV, "CNI_COMMAND": "FROB"}, id="unknown-command"),
    pytest.param({k: v for k, v in ENV.items() if k != "CNI_NETNS"}, id="no-netns"),
    pytest.param({**ENV, "CNI_ARGS": "justakey"}, id="bad-cni-args"),
])
def test_bad_environment_gives_code_4(env: dict[str, str]) -> None:
    """Missing or malformed CNI_* variables give error 4."""
    assert _code(env, _conf()) == 4


def test_version_lists_required_versions() -> None:
    """VERSION answers with 1.0.0 and 1.1.0 among the supported versions."""
    out = json.loads(run(parse_invocation({"CNI_COMMAND": "VERSION"}, b""), _unreachable))
    assert {"1.0.0", "1.1.0"} <= set(out["supportedVersions"]) == set(SUPPORTED_VERSIONS)


def _unreachable(request: AgentRequest) -> AgentResponse:
    raise ConnectionRefusedError(111, "Connection refused")


def test_add_passes_prev_result_through_and_sends_pod_facts() -> None:
    """ADD prints prevResult unchanged and sends pod name, uid, netns and IPs to the agent."""
    seen: list[AgentRequest] = []

    def agent(request: AgentRequest) -> AgentResponse:
        seen.append(request)
        return AgentResponse(ok=True, enrolled=True)

    assert json.loads(run(parse_invocation(ENV, _conf()), agent)) == PREV
    (request,) = seen
    assert (request.op, request.netns, request.pod.name, request.pod.uid) == (
        "add", "/var/run/netns/p", "web", "u1")
    assert [(ip.interface, ip.address) for ip in request.ips] == [("eth0", "10.1.0.5/24")]


@pytest.mark.parametrize("command, code", [
    pytest.param("ADD", 11, id="add-try-again"),
    pytest.param("STATUS", 50, id="status-not-available"),
])
def test_unreachable_agent(command: str, code: int) -> None:
    """Without an agent ADD says try again later (11) and STATUS says not available (50)."""
    with pytest.raises(CniError) as info:
        run(parse_invocation({**ENV, "CNI_COMMAND": command}, _conf()), _unreachable)
    assert info.value.code == code and "node agent" in info.value.msg


def test_del_succeeds_without_agent_or_netns() -> None:
    """DEL is idempotent: no agent and no netns still succeed with empty output."""
    env = {**ENV, "CNI_COMMAND": "DEL", "CNI_NETNS": ""}
    assert run(parse_invocation(env, _conf(prevResult=None)), _unreachable) == ""


def test_agent_error_is_forwarded() -> None:
    """An agent error response becomes the plugin's error with the same code and message."""
    def agent(request: AgentRequest) -> AgentResponse:
        return AgentResponse(ok=False, code=3, msg="netns gone", details="pod deleted")

    with pytest.raises(CniError) as info:
        run(parse_invocation(ENV, _conf()), agent)
    assert (info.value.code, info.value.msg) == (3, "netns gone")


def test_non_kubernetes_container_passes_through_without_agent() -> None:
    """Without K8S_POD_* args ADD does not call the agent and returns prevResult."""
    env = {**ENV, "CNI_ARGS": ""}
    assert json.loads(run(parse_invocation(env, _conf()), _unreachable)) == PREV


def test_pod_ips_from_0_3_result() -> None:
    """Old-style results (version field, no interface index) still yield addresses."""
    prev = {"ips": [{"version": "4", "address": "10.0.0.2/16"}]}
    assert [ip.address for ip in pod_ips(prev)] == ["10.0.0.2/16"]
