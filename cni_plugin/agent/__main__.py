"""`ambient-cni agent` (also `python -m cni_plugin.agent`): the CNI node agent.

Decides enrollment from the config source (namespace label `istio.io/dataplane-mode=ambient`,
pod opt-out `=none`; AMBIENT-INTERNALS §5.7), installs the in-pod redirection, hands pods to
ztunnel over ZDS and records `ambient.istio.io/redirection` — see `app.run_agent` and
docs/cni.md ("Agent"). Config source today: a manifest folder (`--manifests`); the Kubernetes
source is not wired yet. Logs to stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence

import trio

from cni_plugin.agent.app import AgentOptions, run_agent
from cni_plugin.agent.zds_server import DEFAULT_ZDS_SOCKET
from cni_plugin.agent_protocol import DEFAULT_AGENT_SOCKET


def build_parser(prog: str = "ambient-cni agent") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="CNI node agent: enrolls this node's pods into the ambient mesh "
        "(in-pod redirection + ZDS hand-off to ztunnel) from namespace/pod labels.")
    parser.add_argument("--node", default=os.environ.get("NODE_NAME", ""),
                        help="this node's name, as in the pods' spec.nodeName "
                             "(default: $NODE_NAME)")
    parser.add_argument("--manifests", metavar="DIR",
                        help="config source: a folder of manifests (the sandbox's); pod status "
                             "is written to DIR/.status/pods/")
    parser.add_argument("--kubernetes", action="store_true",
                        help="config source: the Kubernetes API (not available yet)")
    parser.add_argument("--agent-socket", "--socket", dest="agent_socket",
                        default=DEFAULT_AGENT_SOCKET,
                        help="unix socket the CNI plugin calls (default: %(default)s)")
    parser.add_argument("--zds-socket", default=DEFAULT_ZDS_SOCKET,
                        help="SOCK_SEQPACKET socket ztunnel connects to (default: %(default)s)")
    parser.add_argument("--no-zds", action="store_true",
                        help="do not serve ztunnel (rules only; pods stay 'pending')")
    parser.add_argument("--system-namespace", default="istio-system",
                        help="namespace of ztunnel and the agent, never enrolled "
                             "(default: %(default)s)")
    parser.add_argument("--exclude-namespace", action="append", default=[], metavar="NS",
                        help="never enroll pods of this namespace (repeatable)")
    parser.add_argument("--dns-capture", action="store_true",
                        help="redirect pod DNS to ztunnel (port 15053) unless the pod's "
                             "ambient.istio.io/dns-capture annotation says otherwise")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "ambient-cni agent") -> None:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.kubernetes:
        parser.error("--kubernetes: the Kubernetes config source is not implemented in the node "
                     "agent yet; use --manifests DIR")
    if not args.manifests:
        parser.error("a config source is required: --manifests DIR")
    if not args.node:
        parser.error("--node NAME is required (or set NODE_NAME)")
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    options = AgentOptions(
        node=args.node, manifests=args.manifests, agent_socket=args.agent_socket,
        zds_socket=None if args.no_zds else args.zds_socket,
        system_namespace=args.system_namespace,
        exclude_namespaces=frozenset(args.exclude_namespace), dns_capture=args.dns_capture)
    trio.run(_run_until_signal, options)


async def _run_until_signal(options: AgentOptions) -> None:
    """Run the agent; SIGINT/SIGTERM stop it cleanly (rules stay in the pods)."""
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            nursery.start_soon(run_agent, options)
            async for signum in signals:
                logging.getLogger("cni_plugin.agent").info(
                    "%s: stopping", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break


if __name__ == "__main__":
    main(prog="python -m cni_plugin.agent")
