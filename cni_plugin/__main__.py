"""`ambient-cni`: the CNI plugin executable (console script; also `python -m cni_plugin`).

Reads CNI_* from the environment and the network config from stdin, runs `plugin.run`, prints the
result (or a spec error object) on stdout and exits 0 (or 1). Talks to the node agent over its unix
socket with one short request (`agent_protocol`). Logs every invocation with its wall time to the
configured log file (stderr if the file cannot be opened; stdout stays reserved for CNI output).

`ambient-cni agent ...` runs the node agent instead (`cni_plugin.agent.__main__`, imported
only then); `ambient-cni install ...` installs the plugin on the node (`cni_plugin.install`).
CNI runtimes never pass arguments, so the plugin path is unchanged.

Import footprint (plugin path): standard library plus `cni_plugin.plugin`/`agent_protocol` only;
never pyroute2, trio, grpclib or betterproto (the runtime runs this for every pod sandbox).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time

from cni_plugin.agent_protocol import (
    AgentRequest,
    AgentResponse,
    LineBuffer,
    decode_response,
    encode_request,
)
from cni_plugin.errors import ProtocolError
from cni_plugin.plugin import IO_FAILURE, LATEST, CniError, Invocation, parse_invocation, run

log = logging.getLogger("ambient-cni")


def call_agent(path: str, timeout: float, request: AgentRequest) -> AgentResponse:
    """One request/response over the agent's unix socket; OSError if unreachable or slow."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(encode_request(request))
        buffer = LineBuffer()
        while (line := buffer.next_line()) is None:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("the agent closed the connection without answering")
            buffer.feed(chunk)
    return decode_response(line)


def _setup_logging(inv: Invocation | None) -> None:
    level = "info"
    handler: logging.Handler = logging.StreamHandler(sys.stderr)
    if inv is not None and inv.config is not None:
        level = inv.config.log_level
        try:
            os.makedirs(os.path.dirname(inv.config.log_file) or ".", exist_ok=True)
            handler = logging.FileHandler(inv.config.log_file)
        except OSError:
            pass
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(level.upper())


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "agent":
        from cni_plugin.agent.__main__ import main as agent_main  # heavy imports: agent only

        agent_main(sys.argv[2:])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "install":
        from cni_plugin.install import main as install_main

        sys.exit(install_main(sys.argv[2:]))
    started = time.perf_counter()
    env = dict(os.environ)
    inv: Invocation | None = None
    try:
        stdin = b"" if env.get("CNI_COMMAND") == "VERSION" else sys.stdin.buffer.read()
        inv = parse_invocation(env, stdin)
        _setup_logging(inv)
        config = inv.config

        def agent(request: AgentRequest) -> AgentResponse:
            assert config is not None
            try:
                return call_agent(config.agent_socket, config.agent_timeout, request)
            except ProtocolError as exc:
                raise CniError(IO_FAILURE, "the node agent answered something unreadable",
                               f"{exc}; are plugin and agent the same release?",
                               cni_version=config.cni_version) from exc

        output = run(inv, agent)
    except CniError as err:
        if inv is None:
            _setup_logging(None)
        log.error("%s container=%s netns=%s failed: %s (%.1f ms)", env.get("CNI_COMMAND"),
                  env.get("CNI_CONTAINERID", ""), env.get("CNI_NETNS", ""), err,
                  (time.perf_counter() - started) * 1000)
        sys.stdout.write(err.to_json())
        sys.stdout.flush()
        sys.exit(1)
    except Exception as exc:  # last resort: still answer in the spec's format
        log.exception("unexpected failure")
        unexpected = CniError(IO_FAILURE, "ambient-cni failed unexpectedly", repr(exc), LATEST)
        sys.stdout.write(unexpected.to_json())
        sys.stdout.flush()
        sys.exit(1)
    log.info("%s container=%s netns=%s pod=%s/%s ok (%.1f ms)", inv.command, inv.container_id,
             inv.netns, inv.args.get("K8S_POD_NAMESPACE", ""), inv.args.get("K8S_POD_NAME", ""),
             (time.perf_counter() - started) * 1000)
    if output:
        sys.stdout.write(output)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
