"""`ambient-cni agent` (also `python -m cni_plugin.agent`): the CNI node agent.

Decides enrollment from the config source (namespace label `istio.io/dataplane-mode=ambient`,
pod opt-out `=none`; AMBIENT-INTERNALS §5.7), installs the in-pod redirection, hands pods to
ztunnel over ZDS and records `ambient.istio.io/redirection` — see `app.run_agent` and
docs/cni.md ("Agent"). Config source: a manifest folder (`--manifests`, the sandbox) or the
Kubernetes API (`--kubernetes`). With `--uninstall-on-exit` it removes the plugin from the CNI
config and bin dirs when it stops (`cni_plugin.install.uninstall`). Logs to stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import trio

from cni_plugin.agent.app import AgentOptions, run_agent
from cni_plugin.agent.zds_server import DEFAULT_ZDS_SOCKET
from cni_plugin.agent_protocol import DEFAULT_AGENT_SOCKET

HOST_NETNS = "/proc/self/ns/net"  # the agent runs with host networking: its netns is the node's


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
                        help="config source: the Kubernetes API (in-cluster service account "
                             "or $KUBECONFIG; the default without --manifests); the annotation "
                             "goes to pods/status")
    parser.add_argument("--cni-bin-dir", type=Path, default=Path("/opt/cni/bin"),
                        help="where `ambient-cni install` put the launcher (default: %(default)s)")
    parser.add_argument("--cni-conf-dir", type=Path, default=Path("/etc/cni/net.d"),
                        help="where it chained the plugin (default: %(default)s)")
    parser.add_argument("--uninstall-on-exit", action="store_true",
                        help="on exit, remove the plugin from --cni-conf-dir and --cni-bin-dir "
                             "(new pods then start without the mesh instead of failing)")
    parser.add_argument("--health-port", type=int, metavar="PORT",
                        help="serve GET /healthz and /readyz (ready after the first "
                             "reconcile pass) on this port")
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
    parser.add_argument("--no-kubelet-probe-snat", action="store_true",
                        help="do not SNAT the kubelet's probes to enrolled pods to 169.254.7.127 "
                             "(then probes go through ztunnel and fail under STRICT mTLS)")
    parser.add_argument("--kubelet-uid", type=int, metavar="UID",
                        help="the kubelet's user id for the probe SNAT (default: found from the "
                             "kubelet/kubelite/k3s process in /proc, else 0)")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "ambient-cni agent") -> None:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.kubernetes and args.manifests:
        parser.error("give one config source: --manifests DIR or --kubernetes (the default)")
    args.kubernetes = not args.manifests
    if not args.node:
        parser.error("--node NAME is required (or set NODE_NAME)")
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    options = AgentOptions(
        node=args.node, manifests=args.manifests or "", kubernetes=args.kubernetes,
        health_port=args.health_port, agent_socket=args.agent_socket,
        zds_socket=None if args.no_zds else args.zds_socket,
        system_namespace=args.system_namespace,
        exclude_namespaces=frozenset(args.exclude_namespace), dns_capture=args.dns_capture,
        host_probe_netns=None if args.no_kubelet_probe_snat else HOST_NETNS,
        kubelet_uid=args.kubelet_uid)
    if args.kubernetes:
        from meshcore.kube import KubeLoginError, login_from_environment

        try:
            login_from_environment()  # fail fast and plainly; the client logs in again
        except KubeLoginError as exc:
            parser.exit(1, f"{parser.prog}: --kubernetes: {exc}\n")
    try:
        trio.run(_run_until_signal, options)
    except* Exception as group:  # the agent's fatal error (e.g. RBAC): one line, exit 1
        from meshcore.errors import MeshCoreError

        for fatal in _leaves(group):
            logging.getLogger("cni_plugin.agent").error(
                "stopped: %s", fatal, exc_info=not isinstance(fatal, MeshCoreError))
        sys.exit(1)
    finally:
        if args.uninstall_on_exit:
            from cni_plugin.install import uninstall

            uninstall(args.cni_bin_dir, args.cni_conf_dir)
            logging.getLogger("cni_plugin.agent").info(
                "removed the plugin from %s and %s", args.cni_conf_dir, args.cni_bin_dir)
            if options.host_probe_netns is not None:
                from cni_plugin.redirect import host_apply

                if host_apply.remove(options.host_probe_netns):
                    logging.getLogger("cni_plugin.agent").info(
                        "removed the kubelet probe SNAT table from this node")


def _leaves(group: BaseException) -> list[BaseException]:
    if isinstance(group, BaseExceptionGroup):
        return [leaf for exc in group.exceptions for leaf in _leaves(exc)]
    return [group]


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
